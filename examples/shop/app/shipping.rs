//! The shipping service, over gRPC with tonic, with no `protoc`: the messages are prost
//! structs written by hand (what `prost-build` would generate from the `.proto` below), and
//! the client and server are the few lines tonic's code generator would write.
//!
//! ```proto
//! package shop;
//! service Shipping {
//!   rpc Create(CreateShipment) returns (Shipment);   // metadata: idempotency-key
//!   rpc Cancel(CancelShipment) returns (Shipment);   // metadata: idempotency-key
//! }
//! message CreateShipment { string order_id = 1; string sku = 2; uint64 qty = 3; }
//! message CancelShipment { string shipment_key = 1; }
//! message Shipment { string shipment_id = 1; bool cancelled = 2; }
//! ```
//!
//! A cancel for a key with no shipment voids the key, so a late create with it is refused.
//!
//! Shipments live in a SQLite file, behind staunch-idempotency's tower layer on the tonic
//! server ([`Db::layer`], with tonic's request body rebuilt by `rebuild_body`): the layer
//! reads the key from the `idempotency-key` metadata, replays a finished call's reply
//! (message or status, marked with the metadata `idempotent-replayed: true`), refuses a call
//! still in flight with `ABORTED` and a key reused for another call with `INVALID_ARGUMENT`.
//! A call the layer lets through records its reply in its own transaction
//! (`SqliteStore::finish_in` with [`StoredResponse::grpc`] or [`StoredResponse::grpc_error`]),
//! in the same file as the shipments.

use std::convert::Infallible;
use std::marker::PhantomData;
use std::net::SocketAddr;
use std::path::Path;
use std::task::{Context, Poll};

use staunch::idempotency::sqlx::{self, Row};
use staunch::idempotency::{
    Claim, IDEMPOTENCY_KEY, IdempotencyKey, StoreError, StoredResponse, parse_key,
};
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::codegen::{Body, BoxFuture, StdError, http};
use tonic::server::{Grpc, NamedService, UnaryService};
use tonic::{Code, Request, Response, Status};
use tower::util::BoxCloneSyncService;

use super::db::{Db, Tx};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

const SCHEMA: &[&str] = &[
    // No unique key: the idempotency record is what keeps a key from shipping twice.
    "CREATE TABLE IF NOT EXISTS shipments (id INTEGER PRIMARY KEY AUTOINCREMENT,
        key TEXT NOT NULL, order_id TEXT NOT NULL, sku TEXT NOT NULL, qty INTEGER NOT NULL,
        cancelled INTEGER NOT NULL DEFAULT 0)",
    "CREATE INDEX IF NOT EXISTS shipments_key ON shipments (key)",
    "CREATE TABLE IF NOT EXISTS voided (key TEXT PRIMARY KEY NOT NULL)",
];

/// `CreateShipment`.
#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct CreateShipment {
    /// The order.
    #[prost(string, tag = "1")]
    pub(crate) order_id: String,
    /// What to ship.
    #[prost(string, tag = "2")]
    pub(crate) sku: String,
    /// How many.
    #[prost(uint64, tag = "3")]
    pub(crate) qty: u64,
}

/// `CancelShipment`.
#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct CancelShipment {
    /// The idempotency key of the create call.
    #[prost(string, tag = "1")]
    pub(crate) shipment_key: String,
}

/// `Shipment`.
#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct Shipment {
    /// The shipment (its create key).
    #[prost(string, tag = "1")]
    pub(crate) shipment_id: String,
    /// Whether it was cancelled.
    #[prost(bool, tag = "2")]
    pub(crate) cancelled: bool,
}

/// The prost codec (what the `tonic-prost` crate provides), for messages `E` out and `D` in.
#[derive(Debug)]
pub(crate) struct Prost<E, D>(PhantomData<fn(E) -> D>);

impl<E, D> Default for Prost<E, D> {
    fn default() -> Self {
        Self(PhantomData)
    }
}

impl<E, D> Codec for Prost<E, D>
where
    E: prost::Message + Send + 'static,
    D: prost::Message + Default + Send + 'static,
{
    type Encode = E;
    type Decode = D;
    type Encoder = Prost<E, D>;
    type Decoder = Prost<E, D>;

    fn encoder(&mut self) -> Self::Encoder {
        Self::default()
    }

    fn decoder(&mut self) -> Self::Decoder {
        Self::default()
    }
}

impl<E: prost::Message, D> Encoder for Prost<E, D> {
    type Item = E;
    type Error = Status;

    fn encode(&mut self, item: E, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        item.encode(dst)
            .map_err(|e| Status::internal(format!("encode: {e}")))
    }
}

impl<E, D: prost::Message + Default> Decoder for Prost<E, D> {
    type Item = D;
    type Error = Status;

    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<D>, Status> {
        D::decode(src)
            .map(Some)
            .map_err(|e| Status::internal(format!("decode: {e}")))
    }
}

/// The shipping service: its database.
#[derive(Debug, Clone)]
pub(crate) struct Shipping {
    db: Db,
}

/// One shipment row, as the consistency check sees it.
#[derive(Debug, Clone)]
pub(crate) struct ShipmentRow {
    /// The create call's idempotency key.
    pub(crate) key: String,
    /// The order.
    pub(crate) order_id: String,
    /// What was shipped.
    pub(crate) sku: String,
    /// How many.
    pub(crate) qty: u64,
    /// Whether it was cancelled.
    pub(crate) cancelled: bool,
}

/// A call to run once per key.
enum Call {
    Create(CreateShipment),
    Cancel(CancelShipment),
}

/// The metadata the layer sets on a replayed reply.
pub(crate) const REPLAYED: &str = "idempotent-replayed";

impl Shipping {
    /// The depot in the SQLite file at `path` (created if missing, kept if there).
    pub(crate) async fn open(path: &Path) -> Result<Self, BoxError> {
        Ok(Self {
            db: Db::open(path, SCHEMA).await?,
        })
    }

    /// Every shipment made.
    pub(crate) async fn shipments(&self) -> Result<Vec<ShipmentRow>, BoxError> {
        let rows = sqlx::query("SELECT key, order_id, sku, qty, cancelled FROM shipments")
            .fetch_all(&self.db.pool)
            .await?;
        rows.iter()
            .map(|row| {
                Ok(ShipmentRow {
                    key: row.try_get(0)?,
                    order_id: row.try_get(1)?,
                    sku: row.try_get(2)?,
                    qty: u64::try_from(row.try_get::<i64, _>(3)?)?,
                    cancelled: row.try_get::<i64, _>(4)? != 0,
                })
            })
            .collect()
    }

    /// Runs a call the layer let through (it holds the key's [`Claim`]): its effect and its
    /// recorded reply commit in one transaction. A refusal (a voided shipment) is recorded
    /// and answered as `FAILED_PRECONDITION`; a failure that committed nothing is
    /// `UNAVAILABLE` or `INTERNAL`, which the layer does not keep, so a retry runs again.
    async fn once(
        &self,
        metadata: &tonic::metadata::MetadataMap,
        claim: Option<&Claim>,
        call: Call,
    ) -> Result<Response<Shipment>, Status> {
        // The layer in front requires and checks the key; it scopes it in the claim.
        let (Some(claim), Some(key)) = (
            claim,
            metadata
                .get(IDEMPOTENCY_KEY.as_str())
                .and_then(|value| parse_key(value.as_bytes(), usize::MAX).ok()),
        ) else {
            return Err(Status::invalid_argument(
                "the idempotency-key metadata is required",
            ));
        };
        let db_error = |err: sqlx::Error| Status::internal(format!("shipping database: {err}"));
        let mut tx = self.db.begin().await.map_err(db_error)?;
        let reply = apply(&mut tx, &key, &call).await.map_err(db_error)?;
        let stored = match &reply {
            Ok(shipment) => StoredResponse::grpc(prost::Message::encode_to_vec(shipment)),
            Err(refusal) => StoredResponse::grpc_error(Code::FailedPrecondition as i32, refusal),
        };
        match self.db.store.finish_in(&mut tx, claim, &stored).await {
            Ok(()) => {}
            // Dropping `tx` rolls the effect back.
            Err(StoreError::LeaseLost { .. }) => {
                return Err(Status::unavailable("the key's lease ran out; retry"));
            }
            Err(err) => return Err(Status::internal(err.to_string())),
        }
        tx.commit().await.map_err(db_error)?;
        reply
            .map(Response::new)
            .map_err(Status::failed_precondition)
    }

    /// Serves the gRPC service on a fresh loopback port.
    pub(crate) async fn serve(&self) -> std::io::Result<SocketAddr> {
        self.serve_at(0).await
    }

    /// Serves the gRPC service on `127.0.0.1:port` (0: any free port).
    pub(crate) async fn serve_at(&self, port: u16) -> std::io::Result<SocketAddr> {
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await?;
        let addr = listener.local_addr()?;
        let incoming = futures::stream::unfold(listener, |listener| async move {
            let conn = listener.accept().await.map(|(stream, _)| stream);
            Some((conn, listener))
        });
        let server = ShippingServer {
            shipping: self.clone(),
        };
        let layer = self
            .db
            .layer()
            .rebuild_body(|bytes| tonic::body::Body::new(http_body_util::Full::new(bytes)));
        tokio::spawn(async move {
            let served = tonic::transport::Server::builder()
                .layer(layer)
                .add_service(server)
                .serve_with_incoming(incoming)
                .await;
            if let Err(err) = served {
                eprintln!("shipping server stopped: {err}");
            }
        });
        Ok(addr)
    }
}

/// The call's effect, in `tx`: the reply, or the refusal's message. No check for an earlier
/// shipment with the same key: the idempotency record is what keeps a key from shipping twice.
async fn apply(
    tx: &mut Tx,
    key: &str,
    call: &Call,
) -> Result<Result<Shipment, String>, sqlx::Error> {
    match call {
        Call::Create(req) => {
            let voided = sqlx::query("SELECT 1 FROM voided WHERE key = ?")
                .bind(key)
                .fetch_optional(&mut **tx)
                .await?
                .is_some();
            if voided {
                return Ok(Err("shipment voided by an earlier cancel".to_owned()));
            }
            sqlx::query("INSERT INTO shipments (key, order_id, sku, qty) VALUES (?, ?, ?, ?)")
                .bind(key)
                .bind(&req.order_id)
                .bind(&req.sku)
                .bind(i64::try_from(req.qty).unwrap_or(i64::MAX))
                .execute(&mut **tx)
                .await?;
            Ok(Ok(Shipment {
                shipment_id: key.to_owned(),
                cancelled: false,
            }))
        }
        Call::Cancel(req) => {
            let done = sqlx::query("UPDATE shipments SET cancelled = 1 WHERE key = ?")
                .bind(&req.shipment_key)
                .execute(&mut **tx)
                .await?;
            if done.rows_affected() == 0 {
                sqlx::query("INSERT OR IGNORE INTO voided (key) VALUES (?)")
                    .bind(&req.shipment_key)
                    .execute(&mut **tx)
                    .await?;
            }
            Ok(Ok(Shipment {
                shipment_id: req.shipment_key.clone(),
                cancelled: true,
            }))
        }
    }
}

/// The hand-written tonic server for `shop.Shipping`.
#[derive(Debug, Clone)]
struct ShippingServer {
    shipping: Shipping,
}

impl NamedService for ShippingServer {
    const NAME: &'static str = "shop.Shipping";
}

struct CreateCall(Shipping);

impl UnaryService<CreateShipment> for CreateCall {
    type Response = Shipment;
    type Future = BoxFuture<Response<Shipment>, Status>;

    fn call(&mut self, request: Request<CreateShipment>) -> Self::Future {
        let shipping = self.0.clone();
        Box::pin(async move {
            let (metadata, extensions, message) = request.into_parts();
            shipping
                .once(&metadata, extensions.get::<Claim>(), Call::Create(message))
                .await
        })
    }
}

struct CancelCall(Shipping);

impl UnaryService<CancelShipment> for CancelCall {
    type Response = Shipment;
    type Future = BoxFuture<Response<Shipment>, Status>;

    fn call(&mut self, request: Request<CancelShipment>) -> Self::Future {
        let shipping = self.0.clone();
        Box::pin(async move {
            let (metadata, extensions, message) = request.into_parts();
            shipping
                .once(&metadata, extensions.get::<Claim>(), Call::Cancel(message))
                .await
        })
    }
}

impl<B> tower::Service<http::Request<B>> for ShippingServer
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
        let shipping = self.shipping.clone();
        match req.uri().path() {
            "/shop.Shipping/Create" => Box::pin(async move {
                let mut grpc = Grpc::new(Prost::<Shipment, CreateShipment>::default());
                Ok(grpc.unary(CreateCall(shipping), req).await)
            }),
            "/shop.Shipping/Cancel" => Box::pin(async move {
                let mut grpc = Grpc::new(Prost::<Shipment, CancelShipment>::default());
                Ok(grpc.unary(CancelCall(shipping), req).await)
            }),
            _ => Box::pin(async { Ok(Status::unimplemented("no such method").into_http()) }),
        }
    }
}

/// A gRPC channel wrapped in staunch layers, as the client sees it.
pub(crate) type Channel = BoxCloneSyncService<
    http::Request<tonic::body::Body>,
    http::Response<tonic::body::Body>,
    ChannelError,
>;

/// The error of the wrapped channel: a concrete type rather than a boxed one, which keeps
/// rustc's `Send` check of the async call paths simple (with a `Box<dyn Error>` error type it
/// reports "implementation of `From` is not general enough"). Its source is the boxed error,
/// so `rejection_of` still finds a breaker or bulkhead rejection in a `Status`'s chain.
#[derive(Debug)]
pub(crate) struct ChannelError(pub(crate) StdError);

impl std::fmt::Display for ChannelError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

impl std::error::Error for ChannelError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&*self.0)
    }
}

/// The hand-written client for `shop.Shipping`.
#[derive(Debug, Clone)]
pub(crate) struct ShippingClient {
    grpc: tonic::client::Grpc<Channel>,
}

impl ShippingClient {
    /// A client over `channel`.
    pub(crate) fn new(channel: Channel) -> Self {
        Self {
            grpc: tonic::client::Grpc::new(channel),
        }
    }

    /// One unary call. Boxed, and over owned values, so the future is `Send + 'static`
    /// without the compiler having to prove it through tonic's generic bounds at every call
    /// site.
    fn unary<M1, M2>(
        &self,
        path: &'static str,
        message: M1,
        key: &IdempotencyKey,
    ) -> BoxFuture<Response<M2>, Status>
    where
        M1: prost::Message + Send + Sync + 'static,
        M2: prost::Message + Default + Send + Sync + 'static,
    {
        let mut grpc = self.grpc.clone();
        let key = key.clone();
        Box::pin(async move {
            grpc.ready()
                .await
                .map_err(|err| Status::from_error(Box::new(err)))?;
            let mut request = Request::new(message);
            // The channel's `IdempotencyKeyLayer` sends it as the `idempotency-key` metadata.
            request.extensions_mut().insert(key);
            let path = http::uri::PathAndQuery::from_static(path);
            grpc.unary(request, path, Prost::<M1, M2>::default()).await
        })
    }

    /// `Create`.
    pub(crate) fn create(
        &self,
        message: CreateShipment,
        key: &IdempotencyKey,
    ) -> BoxFuture<Response<Shipment>, Status> {
        self.unary("/shop.Shipping/Create", message, key)
    }

    /// `Cancel`.
    pub(crate) fn cancel(
        &self,
        message: CancelShipment,
        key: &IdempotencyKey,
    ) -> BoxFuture<Response<Shipment>, Status> {
        self.unary("/shop.Shipping/Cancel", message, key)
    }
}
