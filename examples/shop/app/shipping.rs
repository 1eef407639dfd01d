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

use std::collections::{HashMap, HashSet};
use std::convert::Infallible;
use std::marker::PhantomData;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll};

use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::codegen::{Body, BoxFuture, StdError, http};
use tonic::server::{Grpc, NamedService, UnaryService};
use tonic::{Request, Response, Status};
use tower::util::BoxCloneSyncService;

use super::idempotency::HEADER;

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

/// The shipping service's state.
#[derive(Debug, Clone, Default)]
pub(crate) struct Shipping {
    inner: Arc<Mutex<Depot>>,
}

#[derive(Debug, Default)]
struct Depot {
    /// Shipments by create key: (order, sku, qty, cancelled).
    shipments: HashMap<String, (String, String, u64, bool)>,
    voided: HashSet<String>,
    cancels: HashMap<String, Shipment>,
}

impl Shipping {
    fn lock(&self) -> MutexGuard<'_, Depot> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Units shipped (not cancelled) per SKU, with the orders they went to.
    pub(crate) fn shipped(&self) -> Vec<(String, String, u64)> {
        self.lock()
            .shipments
            .values()
            .filter(|(_, _, _, cancelled)| !cancelled)
            .map(|(order, sku, qty, _)| (order.clone(), sku.clone(), *qty))
            .collect()
    }

    fn create(&self, key: &str, req: &CreateShipment) -> Result<Shipment, Status> {
        let mut st = self.lock();
        if st.voided.contains(key) {
            return Err(Status::failed_precondition(
                "shipment voided by an earlier cancel",
            ));
        }
        st.shipments
            .entry(key.to_owned())
            .or_insert_with(|| (req.order_id.clone(), req.sku.clone(), req.qty, false));
        let cancelled = st.shipments[key].3;
        Ok(Shipment {
            shipment_id: key.to_owned(),
            cancelled,
        })
    }

    fn cancel(&self, key: &str, req: &CancelShipment) -> Shipment {
        let mut guard = self.lock();
        let st = &mut *guard;
        if let Some(reply) = st.cancels.get(key) {
            return reply.clone();
        }
        match st.shipments.get_mut(&req.shipment_key) {
            Some(shipment) => shipment.3 = true,
            None => {
                st.voided.insert(req.shipment_key.clone());
            }
        }
        let reply = Shipment {
            shipment_id: req.shipment_key.clone(),
            cancelled: true,
        };
        st.cancels.insert(key.to_owned(), reply.clone());
        reply
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
        tokio::spawn(async move {
            let served = tonic::transport::Server::builder()
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

fn key_of<T>(req: &Request<T>) -> Result<String, Status> {
    req.metadata()
        .get(HEADER)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
        .ok_or_else(|| Status::invalid_argument("the idempotency-key metadata is required"))
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
            let key = key_of(&request)?;
            shipping.create(&key, request.get_ref()).map(Response::new)
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
            let key = key_of(&request)?;
            Ok(Response::new(shipping.cancel(&key, request.get_ref())))
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
        key: &str,
    ) -> BoxFuture<Response<M2>, Status>
    where
        M1: prost::Message + Send + Sync + 'static,
        M2: prost::Message + Default + Send + Sync + 'static,
    {
        let mut grpc = self.grpc.clone();
        let key = key.parse::<tonic::metadata::MetadataValue<tonic::metadata::Ascii>>();
        Box::pin(async move {
            grpc.ready()
                .await
                .map_err(|err| Status::from_error(Box::new(err)))?;
            let mut request = Request::new(message);
            let key = key.map_err(|_| Status::invalid_argument("idempotency key is not ASCII"))?;
            request.metadata_mut().insert(HEADER, key);
            let path = http::uri::PathAndQuery::from_static(path);
            grpc.unary(request, path, Prost::<M1, M2>::default()).await
        })
    }

    /// `Create`.
    pub(crate) fn create(
        &self,
        message: CreateShipment,
        key: &str,
    ) -> BoxFuture<Response<Shipment>, Status> {
        self.unary("/shop.Shipping/Create", message, key)
    }

    /// `Cancel`.
    pub(crate) fn cancel(
        &self,
        message: CancelShipment,
        key: &str,
    ) -> BoxFuture<Response<Shipment>, Status> {
        self.unary("/shop.Shipping/Cancel", message, key)
    }
}
