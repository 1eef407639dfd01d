//! A real axum server on loopback where `/payment` hangs and `/inventory` answers at once, and
//! a caller with a fixed capacity (8 concurrent requests) that calls both through reqwest.
//! Without a bulkhead, hanging payment calls take the whole capacity and inventory calls
//! starve; with a bulkhead on the payment client, inventory calls keep completing.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use axum::Router;
use axum::routing::get;
use staunch_bulkhead::{BoxError, Bulkhead, BulkheadFull};
use tokio::sync::Semaphore;
use tokio::time::timeout;
use tower::util::BoxCloneSyncService;
use tower::{Layer, ServiceExt};

const CALLER_CAPACITY: usize = 8;

struct Server {
    base: String,
    payment_calls: Arc<AtomicUsize>,
}

async fn start_server() -> Server {
    let payment_calls = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&payment_calls);
    let app = Router::new()
        .route(
            "/payment",
            get(move || {
                counter.fetch_add(1, Ordering::SeqCst);
                // The payment service hangs.
                std::future::pending::<&'static str>()
            }),
        )
        .route("/inventory", get(|| async { "42 in stock" }));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    Server {
        base: format!("http://{addr}"),
        payment_calls,
    }
}

type Client = BoxCloneSyncService<reqwest::Request, reqwest::Response, BoxError>;

fn plain(client: &reqwest::Client) -> Client {
    BoxCloneSyncService::new(client.clone().map_err(BoxError::from))
}

/// What the caller saw: inventory calls that completed in time, payment calls rejected.
#[derive(Debug, Default)]
struct Seen {
    inventory_ok: usize,
    inventory_starved: usize,
    payment_rejected: usize,
}

/// The caller handles 30 payment requests and then 20 inventory requests, each holding one of
/// its `CALLER_CAPACITY` slots while it calls downstream. A caller gives up on an inventory
/// request that has not completed within `patience`. `hanging` payment calls are expected to
/// stay stuck in the server.
async fn run_caller(
    server: &Server,
    payment: Client,
    inventory: Client,
    patience: Duration,
    hanging: usize,
) -> Seen {
    let http = reqwest::Client::new();
    let capacity = Arc::new(Semaphore::new(CALLER_CAPACITY));
    let mut payment_tasks = Vec::new();
    for _ in 0..30 {
        // A caller whose every slot is stuck stops taking payment requests.
        let Ok(slot) = timeout(
            Duration::from_secs(2),
            Arc::clone(&capacity).acquire_owned(),
        )
        .await
        else {
            break;
        };
        let slot = slot.unwrap();
        let req = http
            .get(format!("{}/payment", server.base))
            .build()
            .unwrap();
        let svc = payment.clone();
        payment_tasks.push(tokio::spawn(async move {
            let result = svc.oneshot(req).await;
            drop(slot);
            result.err().is_some_and(|e| e.is::<BulkheadFull>())
        }));
    }
    // Wait (bounded) until every payment call that is not stuck has finished.
    let settled = async {
        while payment_tasks.iter().filter(|t| !t.is_finished()).count() > hanging {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    };
    timeout(Duration::from_secs(10), settled).await.unwrap();
    let mut seen = Seen::default();
    for t in payment_tasks.iter_mut().filter(|t| t.is_finished()) {
        if t.await.unwrap() {
            seen.payment_rejected += 1;
        }
    }
    for _ in 0..20 {
        let req = http
            .get(format!("{}/inventory", server.base))
            .build()
            .unwrap();
        let call = async {
            let _slot = capacity.acquire().await.unwrap();
            inventory.clone().oneshot(req).await
        };
        match timeout(patience, call).await {
            Ok(Ok(resp)) => {
                assert_eq!(resp.text().await.unwrap(), "42 in stock");
                seen.inventory_ok += 1;
            }
            Ok(Err(e)) => panic!("inventory call failed: {e}"),
            Err(_) => seen.inventory_starved += 1,
        }
    }
    for t in payment_tasks {
        t.abort();
    }
    seen
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_bulkhead_a_hanging_dependency_starves_the_healthy_one() {
    let server = start_server().await;
    let http = reqwest::Client::new();
    let seen = run_caller(
        &server,
        plain(&http),
        plain(&http),
        Duration::from_millis(100),
        CALLER_CAPACITY,
    )
    .await;
    // The control case: every slot of the caller hangs on payment.
    assert_eq!(server.payment_calls.load(Ordering::SeqCst), CALLER_CAPACITY);
    assert_eq!(seen.inventory_ok, 0, "{seen:?}");
    assert_eq!(seen.inventory_starved, 20);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_a_bulkhead_on_payment_inventory_calls_keep_flowing() {
    let server = start_server().await;
    let http = reqwest::Client::new();
    let payment_bulkhead = Bulkhead::builder("payment")
        .max_concurrent(3)
        .build()
        .unwrap();
    let inventory_bulkhead = Bulkhead::builder("inventory")
        .max_concurrent(3)
        .build()
        .unwrap();
    let payment = BoxCloneSyncService::new(payment_bulkhead.layer().layer(http.clone()));
    let inventory = BoxCloneSyncService::new(inventory_bulkhead.layer().layer(http.clone()));

    // Generous patience: it bounds the test, it does not measure speed.
    let seen = run_caller(&server, payment, inventory, Duration::from_secs(10), 3).await;
    // Only 3 calls ever reached the hanging payment service; the rest were shed at once.
    assert_eq!(server.payment_calls.load(Ordering::SeqCst), 3);
    assert_eq!(seen.payment_rejected, 27, "{seen:?}");
    // The caller gave up on the stuck calls at the end: their permits came back.
    timeout(Duration::from_secs(10), async {
        while payment_bulkhead.in_flight() > 0 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await
    .expect("cancelled calls release their permits");
    assert_eq!(
        payment_bulkhead.metrics().rejections() as usize,
        seen.payment_rejected
    );
    // Every inventory call completed, and none was rejected by its own bulkhead.
    assert_eq!(seen.inventory_ok, 20, "{seen:?}");
    assert_eq!(seen.inventory_starved, 0);
    assert_eq!(inventory_bulkhead.metrics().rejections(), 0);
}
