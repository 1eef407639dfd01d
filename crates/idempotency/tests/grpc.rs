//! gRPC through the layer: a tonic server behind it and a tonic client, over loopback.

mod support;

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use staunch_idempotency::{Idempotency, IdempotencyLayer, IdempotencyStore, MemoryStore};
use tonic::codegen::{Body, BoxFuture, StdError, http};
use tonic::server::{Grpc, NamedService, UnaryService};
use tonic::{Code, Request, Response, Status};
use tonic_prost::ProstCodec;

#[derive(Clone, PartialEq, prost::Message)]
struct Charge {
    #[prost(string, tag = "1")]
    account: String,
    #[prost(uint64, tag = "2")]
    amount: u64,
}

#[derive(Clone, PartialEq, prost::Message)]
struct Receipt {
    #[prost(string, tag = "1")]
    id: String,
    #[prost(uint64, tag = "2")]
    call: u64,
}

/// `bank.Bank/Charge`: answers by account, numbering its calls.
/// - `ok`: a receipt; `missing`: `NOT_FOUND` (stored); `down`: `UNAVAILABLE` (not stored);
/// - `slow`: waits for a permit of `gate`, then a receipt.
#[derive(Debug, Clone)]
struct Bank {
    calls: Arc<AtomicU64>,
    gate: Arc<tokio::sync::Semaphore>,
}

impl NamedService for Bank {
    const NAME: &'static str = "bank.Bank";
}

struct ChargeCall(Bank);

impl UnaryService<Charge> for ChargeCall {
    type Response = Receipt;
    type Future = BoxFuture<Response<Receipt>, Status>;

    fn call(&mut self, request: Request<Charge>) -> Self::Future {
        let bank = self.0.clone();
        Box::pin(async move {
            let n = bank.calls.fetch_add(1, Ordering::SeqCst) + 1;
            let charge = request.into_inner();
            match charge.account.as_str() {
                "missing" => return Err(Status::not_found(format!("no such account (call {n})"))),
                "down" => return Err(Status::unavailable(format!("ledger down (call {n})"))),
                "slow" => drop(bank.gate.acquire().await.unwrap()),
                _ => {}
            }
            Ok(Response::new(Receipt {
                id: format!("{}:{}", charge.account, charge.amount),
                call: n,
            }))
        })
    }
}

impl<B> tower::Service<http::Request<B>> for Bank
where
    B: Body + Send + 'static,
    B::Error: Into<StdError> + Send + 'static,
{
    type Response = http::Response<tonic::body::Body>;
    type Error = Infallible;
    type Future = BoxFuture<Self::Response, Infallible>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        let bank = self.clone();
        Box::pin(async move {
            let mut grpc = Grpc::new(ProstCodec::<Receipt, Charge>::default());
            Ok(grpc.unary(ChargeCall(bank), req).await)
        })
    }
}

/// Serves `Bank` behind the layer on `store` on a loopback port; a client to it.
async fn serve<St: IdempotencyStore>(
    bank: Bank,
    store: St,
) -> tonic::client::Grpc<tonic::transport::Channel> {
    let layer = IdempotencyLayer::new(store, Idempotency::default())
        .rebuild_body(|bytes: Bytes| tonic::body::Body::new(http_body_util::Full::new(bytes)));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let incoming = tonic::transport::server::TcpIncoming::from(listener);
    tokio::spawn(
        tonic::transport::Server::builder()
            .layer(layer)
            .add_service(bank)
            .serve_with_incoming(incoming),
    );
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    tonic::client::Grpc::new(channel)
}

/// One `Charge` call with `key` as the `idempotency-key` metadata (none if `None`).
async fn charge(
    client: &tonic::client::Grpc<tonic::transport::Channel>,
    key: Option<&str>,
    account: &str,
    amount: u64,
) -> Result<Response<Receipt>, Status> {
    let mut client = client.clone();
    client.ready().await.unwrap();
    let mut request = Request::new(Charge {
        account: account.into(),
        amount,
    });
    if let Some(key) = key {
        request
            .metadata_mut()
            .insert("idempotency-key", key.parse().unwrap());
    }
    let path = http::uri::PathAndQuery::from_static("/bank.Bank/Charge");
    client
        .unary(request, path, ProstCodec::<Charge, Receipt>::default())
        .await
}

fn replayed(metadata: &tonic::metadata::MetadataMap) -> bool {
    metadata.get("idempotent-replayed").is_some()
}

#[tokio::test]
async fn a_repeated_call_is_replayed_with_its_message_and_status() {
    replays(MemoryStore::new()).await;
}

/// The same through SQLite: the reply's trailers go through a row and back.
#[cfg(feature = "sqlite")]
#[tokio::test]
async fn a_repeated_call_is_replayed_from_sqlite() {
    let (pool, _file) = support::sqlite_pool("grpc").await;
    replays(staunch_idempotency::SqliteStore::open(pool).await.unwrap()).await;
}

async fn replays<St: IdempotencyStore>(store: St) {
    let bank = Bank {
        calls: Arc::default(),
        gate: Arc::new(tokio::sync::Semaphore::new(0)),
    };
    let client = serve(bank.clone(), store).await;

    // First call processed; the repeat gets the same message, marked, without a second run.
    let first = charge(&client, Some("k1"), "ok", 250).await.unwrap();
    assert!(!replayed(first.metadata()));
    let expected = Receipt {
        id: "ok:250".into(),
        call: 1,
    };
    assert_eq!(first.get_ref(), &expected);
    let again = charge(&client, Some("\"k1\""), "ok", 250).await.unwrap();
    assert!(replayed(again.metadata()));
    assert_eq!(again.into_inner(), expected);
    assert_eq!(bank.calls.load(Ordering::SeqCst), 1);

    // A refusal the policy stores (NOT_FOUND) replays with its code and message.
    let refused = charge(&client, Some("k2"), "missing", 1).await.unwrap_err();
    assert_eq!(refused.code(), Code::NotFound);
    assert_eq!(refused.message(), "no such account (call 2)");
    let again = charge(&client, Some("k2"), "missing", 1).await.unwrap_err();
    assert_eq!(
        (again.code(), again.message()),
        (Code::NotFound, "no such account (call 2)")
    );
    assert!(replayed(again.metadata()));
    assert_eq!(bank.calls.load(Ordering::SeqCst), 2);

    // A transient failure (UNAVAILABLE) is not stored: the retry runs again.
    let down = charge(&client, Some("k3"), "down", 1).await.unwrap_err();
    assert_eq!(
        (down.code(), down.message()),
        (Code::Unavailable, "ledger down (call 3)")
    );
    let retried = charge(&client, Some("k3"), "down", 1).await.unwrap_err();
    assert_eq!(retried.message(), "ledger down (call 4)");
    assert!(!replayed(retried.metadata()));

    // Another message under a used key: INVALID_ARGUMENT, in a trailers-only reply.
    let other = charge(&client, Some("k1"), "ok", 251).await.unwrap_err();
    assert_eq!(other.code(), Code::InvalidArgument);
    assert!(other.message().contains("different request"), "{other:?}");
    // A bad key is INVALID_ARGUMENT too, with the reason.
    let bad = charge(&client, Some("\"open"), "ok", 1).await.unwrap_err();
    assert_eq!(bad.code(), Code::InvalidArgument);
    assert!(bad.message().contains("quoted string"), "{bad:?}");
    // No key (not required): straight through, every time.
    charge(&client, None, "ok", 1).await.unwrap();
    charge(&client, None, "ok", 1).await.unwrap();
    assert_eq!(bank.calls.load(Ordering::SeqCst), 6);
}

#[tokio::test]
async fn a_duplicate_in_flight_is_aborted() {
    let bank = Bank {
        calls: Arc::default(),
        gate: Arc::new(tokio::sync::Semaphore::new(0)),
    };
    let client = serve(bank.clone(), MemoryStore::new()).await;
    let first = tokio::spawn({
        let client = client.clone();
        async move { charge(&client, Some("k"), "slow", 5).await }
    });
    // The slow call holds the key once the handler has been reached.
    while bank.calls.load(Ordering::SeqCst) == 0 {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let duplicate = charge(&client, Some("k"), "slow", 5).await.unwrap_err();
    assert_eq!(duplicate.code(), Code::Aborted);
    assert!(duplicate.message().contains("still being processed"));
    bank.gate.add_permits(1);
    let first = first.await.unwrap().unwrap();
    assert_eq!(first.get_ref().call, 1);
    // Once it has finished, the repeat is replayed.
    let again = charge(&client, Some("k"), "slow", 5).await.unwrap();
    assert!(replayed(again.metadata()));
    assert_eq!(again.into_inner(), first.into_inner());
    assert_eq!(bank.calls.load(Ordering::SeqCst), 1);
}

/// A store whose every call fails.
#[derive(Debug, Clone)]
struct Down;

fn down() -> staunch_idempotency::StoreError {
    staunch_idempotency::StoreError::Database("connection refused".into())
}

impl IdempotencyStore for Down {
    async fn begin(
        &self,
        _: &staunch_idempotency::Claim,
        _: Duration,
    ) -> Result<staunch_idempotency::Begin, staunch_idempotency::StoreError> {
        Err(down())
    }
    async fn finish(
        &self,
        _: &staunch_idempotency::Claim,
        _: &staunch_idempotency::Outcome,
        _: Duration,
    ) -> Result<(), staunch_idempotency::StoreError> {
        Err(down())
    }
    async fn release(
        &self,
        _: &staunch_idempotency::Claim,
    ) -> Result<(), staunch_idempotency::StoreError> {
        Err(down())
    }
    async fn purge(&self) -> Result<u64, staunch_idempotency::StoreError> {
        Err(down())
    }
}

#[tokio::test]
async fn a_failing_store_is_unavailable_with_a_pushback_and_never_runs_the_call() {
    let bank = Bank {
        calls: Arc::default(),
        gate: Arc::new(tokio::sync::Semaphore::new(0)),
    };
    let client = serve(bank.clone(), Down).await;
    let refused = charge(&client, Some("k"), "ok", 1).await.unwrap_err();
    assert_eq!(refused.code(), Code::Unavailable);
    assert!(refused.message().contains("retry later"), "{refused:?}");
    // Default `retry_after` is 1 s: staunch's retry (and gRPC clients) read the pushback.
    assert_eq!(
        refused.metadata().get("grpc-retry-pushback-ms").unwrap(),
        "1000"
    );
    assert_eq!(bank.calls.load(Ordering::SeqCst), 0);
}
