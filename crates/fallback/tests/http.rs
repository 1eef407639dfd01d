//! Over a real HTTP server on loopback (axum) through reqwest: a 5xx is answered by the
//! fallback, with the `Fallback` extension, and the other answers pass untouched; a refused
//! connection is an error the error rule can answer.
#![cfg(feature = "http")]

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use axum::Router;
use axum::http::StatusCode;
use axum::routing::get;
use staunch_fallback::{Answer, Fallback, FallbackLayer, FallbackPolicy, Reason, Rejections};
use tower::{Layer, Service, ServiceBuilder, ServiceExt, service_fn};

/// The client's body type once read.
type Body = String;

/// A server whose `/status/{code}` answers that status, counting hits.
async fn server(hits: Arc<AtomicUsize>) -> String {
    let app = Router::new().route(
        "/status/{code}",
        get(move |axum::extract::Path(code): axum::extract::Path<u16>| {
            let hits = Arc::clone(&hits);
            async move {
                hits.fetch_add(1, Ordering::SeqCst);
                (StatusCode::from_u16(code).unwrap(), format!("real {code}"))
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    format!("http://{addr}")
}

/// reqwest as a tower service answering `http::Response<String>`.
fn client()
-> impl Service<reqwest::Request, Response = http::Response<Body>, Error = reqwest::Error, Future: Send>
+ Clone {
    let client = reqwest::Client::new();
    service_fn(move |req: reqwest::Request| {
        let client = client.clone();
        async move {
            let res = client.execute(req).await?;
            let status = res.status();
            let body = res.text().await?;
            Ok(http::Response::builder()
                .status(status.as_u16())
                .body(body)
                .unwrap())
        }
    })
}

#[tokio::test]
async fn a_5xx_from_a_real_server_is_answered_and_marked() {
    let hits = Arc::new(AtomicUsize::new(0));
    let base = server(Arc::clone(&hits)).await;
    let policy = FallbackPolicy::<http::Response<Body>>::http("catalog")
        .rejections(Rejections::NONE)
        .on_status(500..=599)
        .build()
        .unwrap();
    let answer = Answer::function(|reason: Reason, _| {
        http::Response::builder()
            .status(200)
            .body(format!("cached ({reason})"))
            .unwrap()
    });
    let mut svc = ServiceBuilder::new()
        .layer(FallbackLayer::new(policy.clone(), answer))
        .service(client());
    let get = |code: u16| {
        reqwest::Request::new(
            reqwest::Method::GET,
            format!("{base}/status/{code}").parse().unwrap(),
        )
    };
    for code in [200, 404, 429] {
        let res = svc.ready().await.unwrap().call(get(code)).await.unwrap();
        assert_eq!(res.status(), code);
        assert_eq!(res.body(), &format!("real {code}"));
        assert!(res.extensions().get::<Fallback>().is_none());
    }
    for code in [500, 503] {
        let res = svc.ready().await.unwrap().call(get(code)).await.unwrap();
        assert_eq!(res.status(), 200);
        assert_eq!(res.body(), &format!("cached (status {code})"));
        assert_eq!(
            res.extensions().get::<Fallback>().unwrap().reason,
            Reason::Status(code)
        );
    }
    assert_eq!(
        hits.load(Ordering::SeqCst),
        5,
        "every call reached the server"
    );
    assert_eq!(policy.metrics().statuses, 2);
    assert_eq!(policy.metrics().total(), 2);
}

#[tokio::test]
async fn a_refused_connection_is_answered_by_the_error_rule() {
    // A port nothing listens on: bind, note the port, close.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    let policy = FallbackPolicy::<http::Response<Body>>::http("catalog")
        .on_error(|e| {
            e.downcast_ref::<reqwest::Error>()
                .is_some_and(reqwest::Error::is_connect)
        })
        .build()
        .unwrap();
    let stale = http::Response::new(String::from("stale"));
    let mut svc = FallbackLayer::new(policy.clone(), Answer::value(stale)).layer(client());
    let req = reqwest::Request::new(
        reqwest::Method::GET,
        format!("http://{addr}/status/200").parse().unwrap(),
    );
    let res = svc.ready().await.unwrap().call(req).await.unwrap();
    assert_eq!(res.body(), "stale");
    assert_eq!(
        res.extensions().get::<Fallback>().map(|f| f.reason),
        Some(Reason::Error)
    );
    assert_eq!(policy.metrics().errors, 1);
}
