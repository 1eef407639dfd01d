//! Streaming request bodies made replayable up to a cap.

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};

use bytes::Bytes;
use http_body_util::{BodyExt, Full, StreamBody};
use staunch_retry::{ReplayBody, RetryLayer, buffer_request};
use support::{BoxError, policy, reasons};
use tower::{Layer, ServiceExt};

type Streamed = StreamBody<
    futures::stream::Iter<std::vec::IntoIter<Result<http_body::Frame<Bytes>, std::io::Error>>>,
>;

fn streamed(chunks: &[&'static str]) -> Streamed {
    let frames: Vec<_> = chunks
        .iter()
        .map(|c| Ok(http_body::Frame::data(Bytes::from_static(c.as_bytes()))))
        .collect();
    StreamBody::new(futures::stream::iter(frames))
}

/// Answers 503 twice, then 200; records every body it received.
fn echo(
    seen: &Arc<std::sync::Mutex<Vec<Bytes>>>,
) -> impl tower::Service<
    http::Request<ReplayBody<Streamed>>,
    Response = http::Response<()>,
    Error = BoxError,
    Future: Send,
> + Clone
+ use<> {
    let seen = Arc::clone(seen);
    let calls = Arc::new(AtomicU32::new(0));
    tower::service_fn(move |req: http::Request<ReplayBody<Streamed>>| {
        let seen = Arc::clone(&seen);
        let n = calls.fetch_add(1, Ordering::SeqCst);
        async move {
            let body = req.into_body().collect().await?.to_bytes();
            seen.lock().unwrap().push(body);
            let status = if n < 2 { 503 } else { 200 };
            Ok::<_, BoxError>(support::response(status, &[]))
        }
    })
}

#[tokio::test(start_paused = true)]
async fn a_small_streaming_body_is_replayed_on_every_attempt() {
    let r = reasons();
    let seen = Arc::default();
    let svc = RetryLayer::new(policy(&r).build().unwrap()).layer(echo(&seen));
    let req = http::Request::put("http://127.0.0.1/items/1")
        .body(streamed(&["hello ", "world"]))
        .unwrap();
    let req = buffer_request(req, 1024).await.unwrap();
    assert_eq!(svc.oneshot(req).await.unwrap().status(), 200);
    let seen = seen.lock().unwrap();
    assert_eq!(seen.len(), 3);
    assert!(seen.iter().all(|b| b == "hello world"), "{seen:?}");
}

#[tokio::test(start_paused = true)]
async fn a_body_over_the_cap_is_sent_once_and_whole() {
    let r = reasons();
    let seen = Arc::default();
    let svc = RetryLayer::new(policy(&r).build().unwrap()).layer(echo(&seen));
    let req = http::Request::put("http://127.0.0.1/items/1")
        .body(streamed(&["0123456789", "abcdefghij", "tail"]))
        .unwrap();
    let req = buffer_request(req, 8).await.unwrap();
    assert!(!req.body().is_replayable());
    let res = svc.oneshot(req).await.unwrap();
    assert_eq!(res.status(), 503);
    // Sent once, never retried: the answer is untouched.
    assert!(res.extensions().get::<staunch_retry::GiveUp>().is_none());
    let seen = seen.lock().unwrap();
    assert_eq!(*seen, [Bytes::from("0123456789abcdefghijtail")]);
    assert_eq!(
        *r.lock().unwrap(),
        [staunch_retry::GiveUpReason::NotReplayable]
    );
}

#[tokio::test]
async fn buffered_bodies_keep_trailers_and_report_their_size() {
    let mut trailers = http::HeaderMap::new();
    trailers.insert("x-checksum", "abc".parse().unwrap());
    let frames: Vec<Result<_, std::io::Error>> = vec![
        Ok(http_body::Frame::data(Bytes::from_static(b"data"))),
        Ok(http_body::Frame::trailers(trailers)),
    ];
    let body = ReplayBody::buffer(StreamBody::new(futures::stream::iter(frames)), 64)
        .await
        .unwrap();
    assert_eq!(http_body::Body::size_hint(&body).exact(), Some(4));
    let copy = body.try_clone().unwrap();
    let collected = copy.collect().await.unwrap();
    assert_eq!(collected.trailers().unwrap()["x-checksum"], "abc");
    assert_eq!(collected.to_bytes(), "data");
    let full: ReplayBody<Full<Bytes>> = ReplayBody::from_bytes("x");
    assert!(full.is_replayable());
}

proptest::proptest! {
    /// Whatever the chunking and the cap, the body sent is the body given, and it is
    /// replayable exactly when it fits under the cap.
    #[test]
    fn buffering_preserves_the_body_and_replays_only_under_the_cap(
        chunks in proptest::collection::vec(proptest::collection::vec(proptest::num::u8::ANY, 0..40), 0..8),
        cap in 0usize..200,
    ) {
        let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
        let whole: Vec<u8> = chunks.concat();
        let frames: Vec<Result<_, std::io::Error>> = chunks
            .into_iter()
            .map(|c| Ok(http_body::Frame::data(Bytes::from(c))))
            .collect();
        let (replayable, sent, copy) = rt.block_on(async move {
            let body = ReplayBody::buffer(StreamBody::new(futures::stream::iter(frames)), cap)
                .await
                .unwrap();
            let replayable = body.is_replayable();
            let copy = match body.try_clone() {
                Some(c) => Some(c.collect().await.unwrap().to_bytes()),
                None => None,
            };
            (replayable, body.collect().await.unwrap().to_bytes(), copy)
        });
        proptest::prop_assert_eq!(&sent[..], &whole[..]);
        proptest::prop_assert_eq!(replayable, whole.len() <= cap);
        if let Some(copy) = copy {
            proptest::prop_assert_eq!(&copy[..], &whole[..]);
        }
    }
}
