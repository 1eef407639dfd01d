//! The deadline layers with paused time: reading the caller's remaining time, the budget,
//! malformed values, and writing the remaining time downstream.

mod support;

use std::time::Duration;

use http::HeaderMap;
use staunch_timeout::{
    BoxError, Deadline, DeadlineLayer, Elapsed, HeaderFormat, PropagateDeadlineLayer,
};
use support::Probe;
use tokio::time::Instant;
use tower::{Layer, Service, ServiceExt, service_fn};

/// A service that returns the deadline its request carries, as time remaining.
fn remaining_seen()
-> impl Service<http::Request<()>, Response = Option<Duration>, Error = BoxError> + Clone {
    service_fn(|req: http::Request<()>| async move {
        Ok::<_, BoxError>(Deadline::of(&req).map(|d| d.remaining()))
    })
}

async fn seen_with(layer: &DeadlineLayer, headers: &[(&str, &str)]) -> Option<Duration> {
    seen_for(layer, request(headers)).await
}

async fn seen_for(layer: &DeadlineLayer, req: http::Request<()>) -> Option<Duration> {
    let mut svc = layer.layer(remaining_seen());
    svc.ready().await.unwrap().call(req).await.unwrap()
}

fn request(headers: &[(&str, &str)]) -> http::Request<()> {
    let mut builder = http::Request::builder();
    for (name, value) in headers {
        builder = builder.header(*name, *value);
    }
    builder.body(()).unwrap()
}

#[tokio::test(start_paused = true)]
async fn reads_the_default_header_and_grpc_timeout() {
    let layer = DeadlineLayer::new();
    assert_eq!(seen_with(&layer, &[]).await, None);
    assert_eq!(
        seen_with(&layer, &[("x-request-timeout", "1500m")]).await,
        Some(Duration::from_millis(1500))
    );
    assert_eq!(
        seen_with(&layer, &[("grpc-timeout", "2S")]).await,
        Some(Duration::from_secs(2))
    );
    // Both present: the earlier wins.
    assert_eq!(
        seen_with(
            &layer,
            &[("grpc-timeout", "2S"), ("x-request-timeout", "700m")]
        )
        .await,
        Some(Duration::from_millis(700))
    );
    assert_eq!(
        seen_with(
            &layer,
            &[("grpc-timeout", "300m"), ("x-request-timeout", "700m")]
        )
        .await,
        Some(Duration::from_millis(300))
    );
}

#[tokio::test(start_paused = true)]
async fn the_budget_caps_the_callers_time_and_applies_alone() {
    let layer = DeadlineLayer::builder()
        .budget(Duration::from_secs(1))
        .build()
        .unwrap();
    assert_eq!(seen_with(&layer, &[]).await, Some(Duration::from_secs(1)));
    assert_eq!(
        seen_with(&layer, &[("x-request-timeout", "5S")]).await,
        Some(Duration::from_secs(1))
    );
    assert_eq!(
        seen_with(&layer, &[("x-request-timeout", "250m")]).await,
        Some(Duration::from_millis(250))
    );
}

#[tokio::test(start_paused = true)]
async fn an_existing_deadline_is_only_ever_made_earlier() {
    let layer = DeadlineLayer::new();
    let mut req = request(&[("x-request-timeout", "5S")]);
    req.extensions_mut()
        .insert(Deadline::after(Duration::from_millis(100)));
    assert_eq!(
        seen_for(&layer, req).await,
        Some(Duration::from_millis(100))
    );

    let mut req = request(&[("x-request-timeout", "50m")]);
    req.extensions_mut()
        .insert(Deadline::after(Duration::from_millis(100)));
    assert_eq!(seen_for(&layer, req).await, Some(Duration::from_millis(50)));
}

#[tokio::test(start_paused = true)]
async fn malformed_values_are_ignored_and_other_bounds_still_apply() {
    let layer = DeadlineLayer::builder()
        .budget(Duration::from_secs(3))
        .build()
        .unwrap();
    for bad in ["", "soon", "10s", "123456789m", "-5S", "1.5S", "0x10S"] {
        assert_eq!(
            seen_with(&layer, &[("x-request-timeout", bad), ("grpc-timeout", bad)]).await,
            Some(Duration::from_secs(3)),
            "{bad:?}"
        );
    }
    // A malformed header next to a valid one: the valid one counts.
    assert_eq!(
        seen_with(
            &layer,
            &[("x-request-timeout", "junk"), ("grpc-timeout", "20m")]
        )
        .await,
        Some(Duration::from_millis(20))
    );
    // A header that is not even UTF-8.
    let mut req = request(&[]);
    req.headers_mut().insert(
        "grpc-timeout",
        http::HeaderValue::from_bytes(b"\xff1S").unwrap(),
    );
    assert_eq!(seen_for(&layer, req).await, Some(Duration::from_secs(3)));
}

#[tokio::test(start_paused = true)]
async fn header_name_format_and_grpc_are_configurable() {
    let layer = DeadlineLayer::builder()
        .header("x-envoy-expected-rq-timeout-ms")
        .header_format(HeaderFormat::Millis)
        .grpc(false)
        .build()
        .unwrap();
    assert_eq!(
        seen_with(&layer, &[("x-envoy-expected-rq-timeout-ms", "250")]).await,
        Some(Duration::from_millis(250))
    );
    // The default header and grpc-timeout are no longer read.
    assert_eq!(
        seen_with(
            &layer,
            &[("x-request-timeout", "1S"), ("grpc-timeout", "1S")]
        )
        .await,
        None
    );
    let layer = DeadlineLayer::builder().no_header().build().unwrap();
    assert_eq!(
        seen_with(&layer, &[("x-request-timeout", "1S")]).await,
        None
    );
}

/// A service that returns the headers of the request it was sent.
fn headers_sent(
    probe: &Probe,
) -> impl Service<http::Request<()>, Response = HeaderMap, Error = BoxError> + Clone {
    let probe = probe.clone();
    service_fn(move |req: http::Request<()>| {
        probe.watch(async move { Ok::<_, BoxError>(req.headers().clone()) })
    })
}

#[tokio::test(start_paused = true)]
async fn propagation_writes_the_remaining_time_rounded_down() {
    let probe = Probe::default();
    let mut client = PropagateDeadlineLayer::builder()
        .grpc(true)
        .build()
        .unwrap()
        .layer(headers_sent(&probe));
    let deadline = Deadline::after(Duration::from_millis(1500));
    tokio::time::advance(Duration::from_nanos(333)).await;
    let mut req = http::Request::new(());
    req.extensions_mut().insert(deadline);
    let sent = client.ready().await.unwrap().call(req).await.unwrap();
    // 1_499_999_667 ns left: written in microseconds, rounded down.
    assert_eq!(sent["x-request-timeout"], "1499999u");
    assert_eq!(sent["grpc-timeout"], "1499999u");

    let mut client = PropagateDeadlineLayer::builder()
        .header("x-timeout-ms")
        .header_format(HeaderFormat::Millis)
        .build()
        .unwrap()
        .layer(headers_sent(&probe));
    let mut req = http::Request::new(());
    req.extensions_mut().insert(deadline);
    let sent = client.ready().await.unwrap().call(req).await.unwrap();
    assert_eq!(sent["x-timeout-ms"], "1499");
    assert!(!sent.contains_key("grpc-timeout"));
}

#[tokio::test(start_paused = true)]
async fn propagation_replaces_a_longer_value_keeps_a_shorter_one_and_leaves_requests_without_deadline_alone()
 {
    let probe = Probe::default();
    let mut client = PropagateDeadlineLayer::grpc().layer(headers_sent(&probe));
    let mut req = request(&[("grpc-timeout", "99H")]);
    req.extensions_mut()
        .insert(Deadline::after(Duration::from_secs(2)));
    let sent = client.ready().await.unwrap().call(req).await.unwrap();
    assert_eq!(sent.get_all("grpc-timeout").iter().count(), 1);
    assert_eq!(sent["grpc-timeout"], "2000000u");
    assert!(!sent.contains_key("x-request-timeout"));

    // A shorter value already on the request (a client's own timeout) is kept.
    let mut req = request(&[("grpc-timeout", "1S")]);
    req.extensions_mut()
        .insert(Deadline::after(Duration::from_secs(2)));
    let sent = client.ready().await.unwrap().call(req).await.unwrap();
    assert_eq!(sent["grpc-timeout"], "1S");

    // A malformed value is replaced.
    let mut req = request(&[("grpc-timeout", "soon")]);
    req.extensions_mut()
        .insert(Deadline::after(Duration::from_secs(2)));
    let sent = client.ready().await.unwrap().call(req).await.unwrap();
    assert_eq!(sent["grpc-timeout"], "2000000u");

    let sent = client
        .ready()
        .await
        .unwrap()
        .call(request(&[("grpc-timeout", "7S")]))
        .await
        .unwrap();
    assert_eq!(sent["grpc-timeout"], "7S");
}

#[tokio::test(start_paused = true)]
async fn an_expired_deadline_is_not_sent() {
    let probe = Probe::default();
    let mut client = PropagateDeadlineLayer::http().layer(headers_sent(&probe));
    let mut req = http::Request::new(());
    req.extensions_mut().insert(Deadline::at(Instant::now()));
    let err = client.ready().await.unwrap().call(req).await.unwrap_err();
    // A rejection, not a timeout: nothing was sent, so nothing was cut off.
    assert!(err.is::<staunch_core::DeadlineExpired>(), "{err:?}");
    assert!(staunch_core::rejection_of(&*err).is_some());
    assert!(!err.is::<Elapsed>());
    assert_eq!(probe.calls(), 0);
}

#[tokio::test(start_paused = true)]
async fn what_one_hop_writes_the_next_hop_reads_no_later() {
    // Client side of hop 1 writes; server side of hop 2 reads; the deadline the server ends up
    // with is never later than the client's.
    let server = DeadlineLayer::new();
    for remaining in [
        Duration::from_nanos(1),
        Duration::from_nanos(123_456_789),
        Duration::from_millis(1500),
        Duration::from_secs(4 * 3600 + 7),
    ] {
        let probe = Probe::default();
        let mut client = PropagateDeadlineLayer::builder()
            .grpc(true)
            .build()
            .unwrap()
            .layer(headers_sent(&probe));
        let deadline = Deadline::after(remaining);
        let mut req = http::Request::new(());
        req.extensions_mut().insert(deadline);
        let sent = client.ready().await.unwrap().call(req).await.unwrap();
        let mut incoming = http::Request::new(());
        *incoming.headers_mut() = sent;
        let seen = seen_for(&server, incoming).await.unwrap();
        assert!(seen <= remaining, "{seen:?} > {remaining:?}");
        // Less than one unit lost; a unit is at most 1/100_000 of the value written.
        assert!(remaining.saturating_sub(seen) < remaining / 100_000 + Duration::from_nanos(1));
    }
}

#[tokio::test(start_paused = true)]
async fn a_margin_is_kept_back_and_a_request_within_it_is_not_sent() {
    let probe = Probe::default();
    let mut client = PropagateDeadlineLayer::builder()
        .margin(Duration::from_millis(20))
        .build()
        .unwrap()
        .layer(headers_sent(&probe));
    let deadline = Deadline::after(Duration::from_millis(500));
    let mut req = http::Request::new(());
    req.extensions_mut().insert(deadline);
    let sent = client.ready().await.unwrap().call(req).await.unwrap();
    assert_eq!(sent["x-request-timeout"], "480000u");

    // 20 ms left: all of it is margin, so the request is not sent.
    tokio::time::advance(Duration::from_millis(480)).await;
    let mut req = http::Request::new(());
    req.extensions_mut().insert(deadline);
    let err = client.ready().await.unwrap().call(req).await.unwrap_err();
    assert!(err.is::<staunch_core::DeadlineExpired>(), "{err:?}");
    assert_eq!(probe.calls(), 1);
}
