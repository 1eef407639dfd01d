//! Deadline propagation over gRPC: the caller has 300 ms; the tonic client's channel, wrapped in
//! staunch's `TimeoutLayer` and `PropagateDeadlineLayer::grpc()`, sends what is left as
//! `grpc-timeout` (less a 10 ms margin for the trip); the tonic server turns it back into a `Deadline` (`DeadlineLayer`) and its
//! two-second carrier booking stops when the caller stops waiting. The server's deadline is never
//! later than the client's, and the client never waits past its own.
//!
//! ```text
//! cargo run --example timeout_grpc
//! ```

#[allow(dead_code)] // the shipping service's SQLite file, unused here
#[path = "shop/app/db.rs"]
mod db;
#[allow(dead_code)] // the shop's hand-written prost messages and codec (no `protoc` needed)
#[path = "shop/app/shipping.rs"]
mod shipping;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use shipping::{CreateShipment, Prost, Shipment};
use staunch::timeout::{Deadline, DeadlineLayer, PropagateDeadlineLayer, TimeoutLayer};
use tokio::time::Instant;
use tonic::codegen::{BoxFuture, http};
use tonic::server::{Grpc, NamedService, UnaryService};
use tonic::{Request, Response, Status};
use tower::ServiceBuilder;

type Seen = Arc<Mutex<Option<(String, Deadline)>>>;

/// The server side of `shop.Shipping/Create`: a booking that takes 2 s, cut short by the deadline.
#[derive(Debug, Clone)]
struct Booking(Seen);

impl UnaryService<CreateShipment> for Booking {
    type Response = Shipment;
    type Future = BoxFuture<Response<Shipment>, Status>;

    fn call(&mut self, request: Request<CreateShipment>) -> Self::Future {
        let header = request
            .metadata()
            .get("grpc-timeout")
            .map(|v| format!("{v:?}"));
        // Set by `DeadlineLayer` from `grpc-timeout` when the request arrived.
        let deadline = request.extensions().get::<Deadline>().copied();
        let seen = Arc::clone(&self.0);
        Box::pin(async move {
            let deadline = deadline.ok_or_else(|| Status::invalid_argument("no deadline"))?;
            *seen.lock().expect("seen") = Some((header.unwrap_or_default(), deadline));
            let booking = tokio::time::sleep(Duration::from_secs(2));
            match tokio::time::timeout(deadline.remaining(), booking).await {
                Ok(()) => Ok(Response::new(Shipment::default())),
                Err(_) => Err(Status::deadline_exceeded("booking stopped at the deadline")),
            }
        })
    }
}

impl NamedService for Booking {
    const NAME: &'static str = "shop.Shipping";
}

impl<B: tonic::codegen::Body + Send + 'static> tower::Service<http::Request<B>> for Booking
where
    B::Error: Into<tonic::codegen::StdError> + Send + 'static,
{
    type Response = http::Response<tonic::body::Body>;
    type Error = std::convert::Infallible;
    type Future = BoxFuture<Self::Response, Self::Error>;

    fn poll_ready(
        &mut self,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Self::Error>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        let booking = self.clone();
        Box::pin(async move {
            let mut grpc = Grpc::new(Prost::<Shipment, CreateShipment>::default());
            Ok(grpc.unary(booking, req).await)
        })
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    // The server: tonic enforces `grpc-timeout` itself; `DeadlineLayer` also hands it to the
    // handler as a `Deadline`, so the work it starts stops on time too.
    let seen = Seen::default();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let incoming = tonic::transport::server::TcpIncoming::from(listener);
    let server = tonic::transport::Server::builder()
        .layer(DeadlineLayer::new())
        .add_service(Booking(Arc::clone(&seen)));
    tokio::spawn(server.serve_with_incoming(incoming));

    // The client: a 5 s limit per call, never past the request's deadline, which it propagates.
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))?
        .connect()
        .await?;
    let stack = ServiceBuilder::new()
        // `PropagateDeadlineLayer::grpc()` sends the time left as it is; the server counts
        // from the moment the request arrives, so a margin keeps back time for the trip.
        .layer(
            PropagateDeadlineLayer::builder()
                .no_header()
                .grpc(true)
                .margin(Duration::from_millis(10))
                .build()?,
        )
        .layer(TimeoutLayer::new(Duration::from_secs(5))?)
        .service(channel);
    let mut client = tonic::client::Grpc::new(stack);

    // A caller with 300 ms left.
    let deadline = Deadline::after(Duration::from_millis(300));
    let mut request = Request::new(CreateShipment::default());
    request.extensions_mut().insert(deadline);
    let started = Instant::now();
    client.ready().await.map_err(|e| e.to_string())?;
    let path = http::uri::PathAndQuery::from_static("/shop.Shipping/Create");
    let codec = Prost::<CreateShipment, Shipment>::default();
    let result = client.unary(request, path, codec).await;
    let waited = started.elapsed();
    let answer = result.map_or_else(
        |s| format!("{:?}: {}", s.code(), s.message()),
        |_| "OK".into(),
    );
    // Whichever stops first answers: tonic's own enforcement of `grpc-timeout` ("Cancelled:
    // Timeout expired") or the handler at its `Deadline` ("DeadlineExceeded").
    println!("client: deadline in 300 ms; answer after {waited:?}: {answer}");

    let (header, server_deadline) = seen.lock().expect("seen").clone().ok_or("no call seen")?;
    let earlier = deadline
        .instant()
        .saturating_duration_since(server_deadline.instant());
    println!(
        "server: received grpc-timeout {header}: its deadline is {earlier:?} before the client's"
    );
    // What propagation promises: the callee never has more time than the caller (checked),
    // and the caller never waits past its own deadline (the `TimeoutLayer` sees to that).
    assert!(
        server_deadline <= deadline,
        "the server's deadline is later"
    );
    Ok(())
}
