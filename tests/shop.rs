//! Plays the shop example's story (its short version) against the real services on loopback,
//! and checks what the example claims: no unit of stock and no charge goes astray, the payment
//! breaker opens under errors, the payment bulkhead rejects the excess while payment is slow and
//! the slow answers keep the breaker open, and the breaker goes half-open then closes after
//! recovery; and that the participants, behind staunch-idempotency with SQLite files, answer
//! a repeated key once, also after a restart on the same file (`shop_restart.rs` kills them
//! for real).

#[allow(dead_code)]
#[path = "../examples/shop/app/mod.rs"]
mod app;

use std::time::Duration;

use app::story::{Config, SKU, Shop, play};
use serde_json::{Value, json};
use staunch::circuit_breaker::State;
use staunch::fault::FaultConfig;

/// POSTs JSON; the status, the JSON body (null if none) and whether the answer was replayed.
async fn post(url: String, key: Option<&str>, body: &Value) -> (u16, Value, bool) {
    let mut request = reqwest::Client::new()
        .post(url)
        .header("content-type", "application/json")
        .body(body.to_string());
    if let Some(key) = key {
        request = request.header("idempotency-key", key);
    }
    let response = request.send().await.expect("the service answers");
    let status = response.status().as_u16();
    let replayed = response.headers().get("idempotent-replayed").is_some();
    let bytes = response.bytes().await.expect("a body");
    (
        status,
        serde_json::from_slice(&bytes).unwrap_or(Value::Null),
        replayed,
    )
}

/// Units of [`SKU`] available.
async fn available(inventory: &app::inventory::Inventory) -> u64 {
    inventory.available().await.expect("the stock is readable")[SKU]
}

/// The payment ledger's (charges, refunds).
async fn ledger(
    payment: &app::payment::Payment,
) -> (Vec<app::payment::Entry>, Vec<app::payment::Entry>) {
    payment
        .ledger()
        .await
        .expect("the ledger is readable")
        .into_iter()
        .partition(|e| e.kind == "charge")
}

async fn get(url: String) -> (u16, Value) {
    let response = reqwest::get(url).await.expect("the service answers");
    let status = response.status().as_u16();
    let bytes = response.bytes().await.expect("a body");
    (
        status,
        serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn short_story_is_consistent_and_shows_the_breaker_and_the_bulkhead() {
    let config = Config::short();
    let shop = Shop::start(&config).await.expect("the shop starts");
    let report = play(&shop, &config).await;
    let payment = shop
        .orders
        .guards()
        .iter()
        .find(|g| g.name == "payment")
        .expect("a payment dependency")
        .clone();
    shop.cleanup();
    let report = report.expect("the story plays to the end");

    assert!(
        report.inconsistencies.is_empty(),
        "consistency check failed: {:?}",
        report.inconsistencies
    );
    let [normal, errors, slow, recovery, down, back, replica] = &report.phases[..] else {
        panic!("seven phases, got {}", report.phases.len());
    };
    for phase in &report.phases {
        assert_eq!(phase.count("stuck") + phase.count("error"), 0, "{phase:?}");
    }
    for phase in [normal, errors, slow, recovery] {
        // Each payment bulkhead rejection is one order rejected: a call refused by the open
        // breaker never queues for (or is counted by) the bulkhead below it. (From phase 5
        // on, later charges call payment too.)
        assert_eq!(
            phase.bulkhead_rejections,
            phase.count("rejected"),
            "{phase:?}"
        );
        assert_eq!(phase.count("payment_pending"), 0, "{phase:?}");
    }

    // (1) Healthy: every order completes.
    assert!(normal.count("completed") > 0);
    assert_eq!(normal.count("completed"), normal.latencies.len() as u64);

    // (2) Errors: sagas compensate, the breaker opens, later orders fail fast.
    assert!(errors.count("compensated") > 0, "{errors:?}");
    assert!(errors.count("failed_fast") > 0, "{errors:?}");
    assert!(errors.breaker_rejections > 0);
    assert!(
        errors
            .transitions
            .iter()
            .any(|(b, from, to, _)| b == "payment" && *from == "closed" && *to == "open"),
        "the payment breaker opened: {:?}",
        errors.transitions
    );

    // (3) Slow: the bulkhead rejects the excess payment calls.
    let payment_moves =
        |p: &app::story::PhaseReport| -> Vec<(&'static str, &'static str, &'static str)> {
            p.transitions
                .iter()
                .filter(|(b, ..)| b == "payment")
                .map(|(_, from, to, reason)| (*from, *to, *reason))
                .collect()
        };

    // Payment slow: the bulkhead fills and rejects the excess; the breaker counts the slow
    // answers (never the bulkhead's rejections) and opens on them, so later orders fail fast;
    // its probes are slow, so it never closes while payment is slow.
    let moves = payment_moves(slow);
    assert!(slow.bulkhead_rejections > 0, "{slow:?}");
    assert!(slow.count("rejected") > 0, "{slow:?}");
    assert!(slow.count("failed_fast") > 0, "{slow:?}");
    assert!(slow.breaker_rejections > 0, "{slow:?}");
    assert!(
        moves.iter().any(|(_, to, reason)| *to == "open"
            && matches!(*reason, "slow_call_rate" | "probes_failed")),
        "slow answers opened the payment breaker: {moves:?}"
    );
    assert!(
        !moves.iter().any(|(_, _, reason)| *reason == "failure_rate"),
        "bulkhead rejections or slow successes counted as failures: {moves:?}"
    );
    assert!(
        !moves.iter().any(|(_, to, _)| *to == "closed"),
        "the breaker closed while payment was slow: {moves:?}"
    );

    // Recovery: the open breaker goes half-open, its probes pass, it closes.
    let moves = payment_moves(recovery);
    let half_open = moves
        .iter()
        .position(|(from, to, _)| *from == "open" && *to == "half_open");
    let closed = moves
        .iter()
        .position(|(from, to, _)| *from == "half_open" && *to == "closed");
    assert!(
        matches!((half_open, closed), (Some(h), Some(c)) if h < c),
        "the payment breaker went half-open, then closed, during recovery: {moves:?}"
    );
    assert_eq!(payment.breaker.state(), State::Closed);
    assert!(recovery.count("completed") > 0);
    assert_eq!(recovery.count("compensated"), 0, "{recovery:?}");

    // Payment down with the fallback on: once the breaker opens, orders are accepted as
    // payment pending instead of failing fast or being rejected.
    assert!(down.count("payment_pending") > 0, "{down:?}");
    assert_eq!(
        down.count("failed_fast") + down.count("rejected"),
        0,
        "{down:?}"
    );
    assert!(down.breaker_rejections > 0, "{down:?}");
    // Payment back: every pending order was charged later (and shipped: the consistency
    // check above finds every charged order shipped).
    assert!(back.count("completed") > 0, "{back:?}");
    let (pending, charged) = report.pending;
    assert!(pending > 0);
    assert_eq!(charged, pending, "every pending order charged later");

    // One replica down: the balancer ejects it, its calls are retried on the other, and the
    // payment breaker (which judges payment as a whole) does not open.
    let sent = |name: &str| {
        replica
            .replicas
            .iter()
            .find(|(n, ..)| n == name)
            .unwrap_or_else(|| panic!("replica {name} in {:?}", replica.replicas))
            .clone()
    };
    let (_, healthy, _) = sent("payment");
    let (_, failing, ejected) = sent("payment-b");
    assert!(ejected >= 1, "payment-b ejected: {replica:?}");
    assert!(
        failing * 5 < healthy,
        "payment-b got under a sixth of the attempts: {failing} vs {healthy}"
    );
    assert!(
        !payment_moves(replica)
            .iter()
            .any(|(_, to, _)| *to == "open"),
        "the payment breaker stayed closed: {replica:?}"
    );
    let placed = replica.latencies.len() as u64;
    assert!(
        replica.count("completed") * 100 >= placed * 98,
        "98 % of the orders complete with one replica down: {replica:?}"
    );
    assert_eq!(replica.count("failed_fast") + replica.count("rejected"), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn participants_honour_idempotency_keys_and_the_order_service_explains_itself() {
    let config = Config::short();
    let shop = Shop::start(&config).await.expect("the shop starts");
    let inventory = shop.addrs["inventory"];
    let payment = shop.addrs["payment"];
    let order = shop.order_addr();

    // A repeated key returns the first answer and changes nothing.
    let reserve = json!({ "order_id": "o-1", "sku": SKU, "qty": 5 });
    let first = post(
        format!("http://{inventory}/reservations"),
        Some("k-1"),
        &reserve,
    )
    .await;
    let again = post(
        format!("http://{inventory}/reservations"),
        Some("k-1"),
        &reserve,
    )
    .await;
    assert_eq!((first.0, first.2), (201, false));
    assert_eq!((&again.0, &again.1, again.2), (&first.0, &first.1, true));
    assert_eq!(available(&shop.inventory).await, config.stock - 5);
    let missing = post(format!("http://{inventory}/reservations"), None, &reserve).await;
    assert_eq!(missing.0, 400);
    // The same key for another request: refused by the layer, nothing reserved.
    let other = json!({ "order_id": "o-1", "sku": SKU, "qty": 6 });
    let reused = post(
        format!("http://{inventory}/reservations"),
        Some("k-1"),
        &other,
    )
    .await;
    assert_eq!(reused.0, 422);
    assert_eq!(available(&shop.inventory).await, config.stock - 5);

    // A release for a reservation that never landed voids its key.
    let release = json!({ "reservation_key": "k-never" });
    let (status, ..) = post(
        format!("http://{inventory}/releases"),
        Some("r-1"),
        &release,
    )
    .await;
    assert_eq!(status, 200);
    let late = post(
        format!("http://{inventory}/reservations"),
        Some("k-never"),
        &reserve,
    )
    .await;
    assert_eq!(late.0, 409);
    assert_eq!(available(&shop.inventory).await, config.stock - 5);

    let charge = json!({ "order_id": "o-1", "amount_cents": 500 });
    let first = post(format!("http://{payment}/charges"), Some("c-1"), &charge).await;
    let again = post(format!("http://{payment}/charges"), Some("c-1"), &charge).await;
    assert_eq!((first.0, first.2), (201, false));
    assert_eq!((&again.0, &again.1, again.2), (&first.0, &first.1, true));
    assert_eq!(ledger(&shop.payment).await.0.len(), 1);
    let refund = json!({ "charge_key": "c-1" });
    let first = post(format!("http://{payment}/refunds"), Some("rf-1"), &refund).await;
    let again = post(format!("http://{payment}/refunds"), Some("rf-1"), &refund).await;
    assert_eq!((&again.0, &again.1, again.2), (&first.0, &first.1, true));
    assert_eq!(first.1["refunded"], 500);
    let (charges, refunds) = ledger(&shop.payment).await;
    assert_eq!(
        (charges.len(), refunds.len()),
        (1, 1),
        "charged and refunded once"
    );

    // A payment service started again on the same file (the first one's process gone, as
    // far as the file is concerned) replays both answers and writes nothing.
    let file = shop.orders.db().with_file_name("payment.db");
    let restarted = app::payment::Payment::open(&file).await.expect("reopens");
    let again_at = app::serve(restarted.router()).await.expect("serves");
    let charged = post(format!("http://{again_at}/charges"), Some("c-1"), &charge).await;
    assert_eq!((charged.0, charged.2), (201, true));
    let refunded = post(format!("http://{again_at}/refunds"), Some("rf-1"), &refund).await;
    assert_eq!(
        (refunded.0, &refunded.1["refunded"], refunded.2),
        (200, &json!(500), true)
    );
    let (charges, refunds) = ledger(&restarted).await;
    assert_eq!((charges.len(), refunds.len()), (1, 1));

    // An order whose charge fails is compensated; its saga's timeline says so.
    shop.set_payment_mode(FaultConfig::none().with_error(1.0, 500))
        .await
        .expect("mode switched");
    let (status, placed, _) = post(
        format!("http://{order}/orders"),
        None,
        &json!({ "sku": SKU, "qty": 2, "amount_cents": 3998 }),
    )
    .await;
    assert_eq!(status, 422, "{placed}");
    assert_eq!(placed["outcome"], "compensated", "{placed}");
    assert_eq!(placed["failed_step"], "charge");
    let id = placed["order_id"].as_str().expect("an order id");
    let (status, saga) = get(format!("http://{order}/sagas/{id}")).await;
    assert_eq!(status, 200);
    assert_eq!(saga["status"], "compensated", "{saga}");
    let log = saga["log"].to_string();
    assert!(log.contains("compensation_completed"), "{log}");
    let steps: Vec<&str> = saga["trace"]["steps"]
        .as_array()
        .expect("timed steps")
        .iter()
        .map(|s| s["step"].as_str().unwrap_or_default())
        .collect();
    assert_eq!(
        steps,
        ["reserve", "charge", "reserve"],
        "reserve, charge, then release"
    );
    assert_eq!(available(&shop.inventory).await, config.stock - 5);
    let (status, _) = get(format!("http://{order}/sagas/no-such-order")).await;
    assert_eq!(status, 404);
    // The saga engine's operator endpoint is mounted under /ops.
    let (status, compensated) = get(format!("http://{order}/ops/sagas?status=compensated")).await;
    assert_eq!(status, 200, "{compensated}");
    assert!(
        compensated
            .as_array()
            .expect("summaries")
            .iter()
            .any(|s| s["saga_id"] == id),
        "{compensated}"
    );
    let (status, timeline) = get(format!("http://{order}/ops/sagas/{id}")).await;
    assert_eq!(
        (status, &timeline["summary"]["status"]),
        (200, &json!("compensated"))
    );
    let (status, refused, _) = post(
        format!("http://{order}/ops/sagas/{id}/cancel"),
        None,
        &json!({ "actor": "test", "reason": "too late" }),
    )
    .await;
    assert_eq!(
        status, 409,
        "a finished saga cannot be cancelled: {refused:?}"
    );

    let (status, circuits) = get(format!("http://{order}/circuit-status")).await;
    assert_eq!(status, 200);
    let names: Vec<&str> = circuits["dependencies"]
        .as_array()
        .expect("dependencies")
        .iter()
        .map(|d| d["name"].as_str().unwrap_or_default())
        .collect();
    assert_eq!(
        names,
        ["inventory", "payment", "payment-refunds", "shipping"]
    );
    assert!(circuits["dependencies"][1]["breaker"]["failed_calls"].as_u64() >= Some(1));
    shop.cleanup();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_charge_in_doubt_is_refunded_by_its_key_and_never_lands_later() {
    let config = Config::short();
    let shop = Shop::start(&config).await.expect("the shop starts");
    // Every charge takes longer than the client's per-attempt timeout: each attempt times out,
    // the client cannot know whether the charge landed, and the saga compensates it too.
    let delay = config.tuning.attempt_timeout + config.tuning.attempt_timeout / 2;
    shop.set_payment_mode(FaultConfig::none().with_latency(1.0, delay, delay))
        .await
        .expect("mode switched");
    let order = shop.order_addr();
    let (status, placed, _) = post(
        format!("http://{order}/orders"),
        None,
        &json!({ "sku": SKU, "qty": 1, "amount_cents": 1999 }),
    )
    .await;
    assert_eq!(status, 422, "{placed}");
    assert_eq!(placed["outcome"], "compensated", "{placed}");
    assert_eq!(placed["failed_step"], "charge");
    let id = placed["order_id"].as_str().expect("an order id").to_owned();
    let (_, saga) = get(format!("http://{order}/sagas/{id}")).await;
    let steps: Vec<(String, String)> = saga["trace"]["steps"]
        .as_array()
        .expect("timed steps")
        .iter()
        .map(|s| {
            (
                s["step"].as_str().unwrap_or_default().to_owned(),
                s["phase"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect();
    // The charge was in doubt, so it is compensated (refunded by key) before the release.
    let expected = [
        ("reserve", "action"),
        ("charge", "action"),
        ("charge", "compensate"),
        ("reserve", "compensate"),
    ]
    .map(|(a, b)| (a.to_owned(), b.to_owned()));
    assert_eq!(steps, expected, "{saga}");

    // Let any charge handler still sleeping finish: it finds its key voided.
    tokio::time::sleep(delay + Duration::from_millis(300)).await;
    let (charges, refunds) = ledger(&shop.payment).await;
    assert_eq!(
        charges.len(),
        refunds.len(),
        "no charge stays without an order: {charges:?} {refunds:?}"
    );
    assert!(charges.len() <= 1, "{charges:?}");
    assert_eq!(available(&shop.inventory).await, config.stock);
    shop.cleanup();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shipping_over_grpc_runs_a_key_once_also_after_a_restart() {
    use app::shipping::{
        CancelShipment, ChannelError, CreateShipment, REPLAYED, Shipping, ShippingClient,
    };
    use staunch::idempotency::{IdempotencyKey, IdempotencyKeyLayer};
    use tonic::Code;
    use tower::ServiceBuilder;
    use tower::util::BoxCloneSyncService;

    let client = |addr: std::net::SocketAddr| {
        let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
            .expect("an endpoint")
            .connect_lazy();
        ShippingClient::new(BoxCloneSyncService::new(
            ServiceBuilder::new()
                .map_err(|e: tonic::transport::Error| ChannelError(e.into()))
                .layer(IdempotencyKeyLayer)
                .service(channel),
        ))
    };
    let config = Config::short();
    let shop = Shop::start(&config).await.expect("the shop starts");
    let shipping = client(shop.addrs["shipping (gRPC)"]);
    let key = IdempotencyKey::new("o-9:ship:action").expect("a key");
    let create = CreateShipment {
        order_id: "o-9".into(),
        sku: SKU.into(),
        qty: 2,
    };
    let first = shipping
        .create(create.clone(), &key)
        .await
        .expect("shipped");
    assert!(!first.metadata().contains_key(REPLAYED));
    let again = shipping
        .create(create.clone(), &key)
        .await
        .expect("replayed");
    assert!(again.metadata().contains_key(REPLAYED));
    assert_eq!(again.get_ref(), first.get_ref());
    let other = CreateShipment {
        qty: 3,
        ..create.clone()
    };
    let reused = shipping.create(other, &key).await.expect_err("refused");
    assert_eq!(reused.code(), Code::InvalidArgument, "{reused:?}");

    // A cancel for a create that never landed voids its key: the late create is refused.
    let never = IdempotencyKey::new("o-10:ship:action").expect("a key");
    let cancel = CancelShipment {
        shipment_key: never.as_str().to_owned(),
    };
    let cancel_key = IdempotencyKey::new("o-10:ship:compensate").expect("a key");
    shipping
        .cancel(cancel, &cancel_key)
        .await
        .expect("cancelled");
    let late = CreateShipment {
        order_id: "o-10".into(),
        ..create.clone()
    };
    let refused = shipping.create(late, &never).await.expect_err("voided");
    assert_eq!(refused.code(), Code::FailedPrecondition, "{refused:?}");

    // Started again on the same file: the create is replayed, nothing ships twice.
    let file = shop.orders.db().with_file_name("shipping.db");
    let restarted = Shipping::open(&file).await.expect("reopens");
    let again_at = restarted.serve().await.expect("serves");
    let replayed = client(again_at)
        .create(create, &key)
        .await
        .expect("replayed after a restart");
    assert!(replayed.metadata().contains_key(REPLAYED));
    assert_eq!(replayed.get_ref(), first.get_ref());
    let shipments = restarted.shipments().await.expect("readable");
    assert_eq!(shipments.len(), 1, "{shipments:?}");
    assert_eq!((shipments[0].qty, shipments[0].cancelled), (2, false));
    shop.cleanup();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn payment_faults_switch_by_preset_through_the_admin_route_and_bad_values_are_refused_by_name()
 {
    let dir = std::env::temp_dir().join(format!("staunch-shop-faults-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let payment = app::payment::Payment::open(&dir.join("payment.db"))
        .await
        .expect("payment opens");
    let at = app::serve(payment.router()).await.expect("serves");
    let admin = format!("http://{at}/admin/mode");
    let (status, now, _) = post(admin.clone(), None, &json!({ "preset": "error" })).await;
    assert_eq!(status, 200, "{now}");
    assert_eq!(now["now"]["error"]["rate"], json!(0.7), "{now}");
    assert_eq!(now["now"]["error"]["status"], json!(500), "{now}");
    // Seeded: about 70 % of charges answer 500, none is written to the ledger.
    let mut failed = 0;
    for n in 0..100 {
        let (status, _, _) = post(
            format!("http://{at}/charges"),
            Some(&format!("k-{n}")),
            &json!({ "order_id": format!("o-{n}"), "amount_cents": 100 }),
        )
        .await;
        assert!(status == 201 || status == 500, "{status}");
        failed += usize::from(status == 500);
    }
    assert!((55..=85).contains(&failed), "{failed} of 100 failed");
    let (charges, _) = ledger(&payment).await;
    assert_eq!(charges.len(), 100 - failed);
    // A value out of range is a 400 naming it; the faults in force stay.
    let (status, body) = {
        let (status, body, _) =
            post(admin.clone(), None, &json!({ "error": { "rate": 2.0 } })).await;
        (status, body)
    };
    assert_eq!(status, 400, "{body}");
    assert!(body.to_string().contains("error.rate"), "{body}");
    let (status, unknown, _) = post(admin.clone(), None, &json!({ "preset": "flaky" })).await;
    assert!(status == 400 || status == 422, "{status} {unknown}");
    let (_, shown) = get(admin.clone()).await;
    assert_eq!(shown["error"]["rate"], json!(0.7), "{shown}");
    let (status, _, _) = post(admin.clone(), None, &json!({ "preset": "none" })).await;
    assert_eq!(status, 200);
    let (_, shown) = get(admin).await;
    assert!(shown.get("error").is_none(), "{shown}");
    drop(payment);
    let _ = std::fs::remove_dir_all(&dir);
}
