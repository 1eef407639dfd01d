//! With the `http` feature, a permit can be held until the response body has been read.
#![cfg(feature = "http")]

use std::collections::VecDeque;
use std::future::poll_fn;
use std::pin::Pin;
use std::task::{Context, Poll};

use http_body::{Body, Frame};
use staunch_bulkhead::Bulkhead;
use tower::{Layer, ServiceExt, service_fn};

/// A body that yields its chunks one poll at a time.
#[derive(Debug)]
struct Chunks(VecDeque<&'static [u8]>);

impl Body for Chunks {
    type Data = &'static [u8];
    type Error = std::io::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        Poll::Ready(self.0.pop_front().map(|c| Ok(Frame::data(c))))
    }

    fn is_end_stream(&self) -> bool {
        self.0.is_empty()
    }
}

fn downloads(
    chunks: usize,
) -> impl tower::Service<(), Response = http::Response<Chunks>, Error = std::io::Error, Future: Send>
+ Clone {
    service_fn(move |()| async move {
        let body = Chunks((0..chunks).map(|_| &b"chunk"[..]).collect());
        Ok::<_, std::io::Error>(http::Response::new(body))
    })
}

#[tokio::test]
async fn the_permit_is_held_until_the_body_has_been_read() {
    let b = Bulkhead::builder("downloads")
        .max_concurrent(1)
        .build()
        .unwrap();
    let svc = b.layer().hold_until_body_end().layer(downloads(2));
    let response = svc.clone().oneshot(()).await.unwrap();
    assert_eq!(
        b.in_flight(),
        1,
        "the head arrived, the body has not been read"
    );
    assert!(svc.clone().oneshot(()).await.is_err(), "still full");
    let mut body = response.into_body();
    assert!(body.holds_permit());
    let first = poll_fn(|cx| Pin::new(&mut body).poll_frame(cx)).await;
    assert!(first.is_some());
    assert_eq!(b.in_flight(), 1);
    let last = poll_fn(|cx| Pin::new(&mut body).poll_frame(cx)).await;
    assert!(last.is_some());
    assert_eq!(b.in_flight(), 0, "released with the last frame");
    assert!(!body.holds_permit());
}

#[tokio::test]
async fn dropping_the_body_releases_the_permit() {
    let b = Bulkhead::builder("downloads")
        .max_concurrent(1)
        .build()
        .unwrap();
    let svc = b.layer().hold_until_body_end().layer(downloads(3));
    let response = svc.oneshot(()).await.unwrap();
    assert_eq!(b.in_flight(), 1);
    drop(response);
    assert_eq!(b.in_flight(), 0);
}

#[tokio::test]
async fn an_empty_body_releases_at_once() {
    let b = Bulkhead::builder("downloads")
        .max_concurrent(1)
        .build()
        .unwrap();
    let svc = b.layer().hold_until_body_end().layer(downloads(0));
    let response = svc.oneshot(()).await.unwrap();
    assert_eq!(b.in_flight(), 0);
    assert!(!response.body().holds_permit());
}
