//! The shop's participants killed with SIGKILL at seeded random moments while orders flow,
//! and started again on the same SQLite files: the ledger still balances, each charge and
//! each refund exactly once.
//!
//! Every service runs as a real process: the test re-executes its own binary as a worker
//! (`shop_worker`, ignored when the suite runs normally) that serves one participant on a
//! given port and data directory, as `shop_inventory`, `shop_payment` and `shop_shipping` do,
//! or runs the order service, which places orders at a steady rate. Real processes rather than
//! aborted tasks, because only a killed process loses what a crash loses: its connections, its
//! memory and every write it had not committed (axum would even keep serving the connections
//! an aborted listener task had accepted). The saga log and the participants' files share one
//! directory.
//!
//! The test kills one service at a time, chosen by the seed (payment twice as often as the
//! others, the order service too, since its recovery is what delivers a step's key again
//! after the participant may have acted on it), waits a seeded moment and starts it again on
//! the same port and file. Then it starts the order service once more, in this process, which
//! resumes the unfinished sagas, waits for every saga's outcome, and checks from the files:
//! the story's consistency check (stock, shipments, the payment ledger, no key taking effect
//! twice) and every order against its saga's outcome. Last, it sends every recorded charge,
//! refund and reservation again and checks that each is answered from its record and the
//! ledger does not move.
//!
//! The participants' handlers do not deduplicate by themselves (no unique keys in their
//! tables): only staunch-idempotency's records, written in the handler's transaction, keep a
//! redelivered key from charging, refunding, reserving or shipping twice. Each HTTP worker
//! logs every request it receives (`deliveries-*.log`: key and whether the answer was a
//! replay), so the test also shows that keys did arrive more than once.
//!
//! ```text
//! cargo test -p staunch-tests --test shop_restart -- --nocapture   # prints the figures
//! ```

#[allow(dead_code)]
#[path = "../examples/shop/app/mod.rs"]
mod app;

use std::collections::{BTreeMap, HashMap};
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use app::inventory::Inventory;
use app::order::OrderService;
use app::payment::Payment;
use app::shipping::Shipping;
use app::story::{Config, Report, SKU, consistency, data_dir};
use serde_json::{Value, json};
use staunch::fault::FaultConfig;
use staunch::idempotency::{IDEMPOTENCY_KEY, IdempotencyKey};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};
use tokio::task::JoinSet;

const KILLS: usize = 20;
const ORDERS_PER_SEC: f64 = 30.0;
const STOCK: u64 = 100_000;
const ROLE: &str = "STAUNCH_SHOP_ROLE";
const DIR: &str = "STAUNCH_SHOP_DIR";
const PORT: &str = "STAUNCH_SHOP_PORT";
const PEERS: &str = "STAUNCH_SHOP_PEERS";
/// One charge in four takes this long (and another one in four gets a 503), so that a kill
/// of payment often lands while a charge runs.
const SLOW_CHARGE_MS: u64 = 250;

/// The worker: serves one participant, or runs the order service, until killed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "run by services_killed_at_random_moments_leave_a_balanced_ledger"]
async fn shop_worker() {
    let (Ok(role), Ok(dir), Ok(port)) =
        (std::env::var(ROLE), std::env::var(DIR), std::env::var(PORT))
    else {
        return;
    };
    let dir = PathBuf::from(dir);
    let port: u16 = port.parse().expect("a port");
    let addr = match role.as_str() {
        "inventory" => {
            let inventory = Inventory::open(&dir.join("inventory.db"), &[(SKU, STOCK)])
                .await
                .expect("inventory opens");
            app::serve_at(deliveries(inventory.router(), &dir, "inventory"), port).await
        }
        "payment" => {
            let payment = Payment::open(&dir.join("payment.db"))
                .await
                .expect("payment opens");
            // The intermittent preset with a shorter delay: a quarter of the charges slow,
            // a quarter answered 503.
            let slow = Duration::from_millis(SLOW_CHARGE_MS);
            payment
                .set_faults(
                    FaultConfig::none()
                        .with_latency(0.25, slow, slow)
                        .with_error(0.25, 503),
                )
                .expect("valid faults");
            app::serve_at(deliveries(payment.router(), &dir, "payment"), port).await
        }
        "shipping" => {
            let shipping = Shipping::open(&dir.join("shipping.db"))
                .await
                .expect("shipping opens");
            shipping.serve_at(port).await
        }
        "order" => {
            let peers: Vec<std::net::SocketAddr> = std::env::var(PEERS)
                .expect("the participants' addresses")
                .split(',')
                .map(|a| a.parse().expect("an address"))
                .collect();
            // Resumes what the last run left unfinished, then places new orders.
            let orders = OrderService::start(
                Config::short().tuning,
                peers[0],
                &[peers[1]],
                peers[2],
                dir.join("sagas.db"),
            )
            .await
            .expect("the order service starts");
            println!("listening 127.0.0.1:0");
            place_orders(orders).await;
            return;
        }
        other => panic!("no service {other}"),
    }
    .expect("the participant listens");
    println!("listening {addr}");
    std::future::pending::<()>().await;
}

/// Places orders at [`ORDERS_PER_SEC`] forever (until the process is killed).
async fn place_orders(orders: OrderService) {
    let mut ticker = tokio::time::interval(Duration::from_secs_f64(1.0 / ORDERS_PER_SEC));
    let mut sagas = JoinSet::new();
    for n in 0_u64.. {
        ticker.tick().await;
        let qty = n % 3 + 1;
        let orders = orders.clone();
        sagas.spawn(async move { orders.place(SKU, qty, qty * 1999).await });
        while sagas.try_join_next().is_some() {}
    }
}

/// Logs every request `router` receives (its key, and whether the answer was replayed) to
/// `deliveries-{role}.log` in `dir`, one line each, appended as the answer leaves.
fn deliveries(router: axum::Router, dir: &Path, role: &str) -> axum::Router {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join(format!("deliveries-{role}.log")))
        .expect("a deliveries log");
    let log = Arc::new(Mutex::new(log));
    router.layer(axum::middleware::from_fn(
        move |request: axum::extract::Request, next: axum::middleware::Next| {
            let log = Arc::clone(&log);
            async move {
                let key = request
                    .headers()
                    .get("idempotency-key")
                    .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned());
                let response = next.run(request).await;
                if let Some(key) = key {
                    let replayed = response.headers().contains_key("idempotent-replayed");
                    let line = format!("{key} {replayed}\n");
                    let mut file = log.lock().unwrap_or_else(PoisonError::into_inner);
                    let _ = file.write_all(line.as_bytes());
                }
                response
            }
        },
    ))
}

/// A running participant process.
struct Worker {
    role: &'static str,
    port: u16,
    child: Child,
}

impl Worker {
    /// Starts `role` on `port` (0: any) with its file in `dir`, once it listens (the order
    /// service: once it has resumed its sagas); `peers` are the participants' addresses.
    async fn start(role: &'static str, dir: &Path, port: u16, peers: &str) -> Self {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.join(format!("{role}.log")))
            .expect("a log file");
        let mut child = Command::new(std::env::current_exe().expect("the test binary"))
            .args(["--exact", "shop_worker", "--nocapture", "--ignored"])
            .env(ROLE, role)
            .env(DIR, dir)
            .env(PORT, port.to_string())
            .env(PEERS, peers)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .expect("the worker starts");
        let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
        let addr = loop {
            let line = tokio::time::timeout(Duration::from_secs(20), lines.next_line())
                .await
                .expect("the worker listens within 20 s")
                .expect("stdout readable")
                .unwrap_or_else(|| panic!("{role} exited before listening; see {role}.log"));
            if let Some(addr) = line.strip_prefix("listening ") {
                break addr.parse::<std::net::SocketAddr>().expect("an address");
            }
        };
        // Keep reading, so the worker never blocks on (or fails writing to) a full pipe.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        Self {
            role,
            port: addr.port(),
            child,
        }
    }

    /// SIGKILL, and wait until the process is gone (its port is free then).
    async fn kill(&mut self) {
        self.child.kill().await.expect("SIGKILL");
    }
}

/// splitmix64: seeded, so every run kills at the same moments.
fn next(seed: &mut u64) -> u64 {
    *seed = seed.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *seed;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn services_killed_at_random_moments_leave_a_balanced_ledger() {
    let dir = data_dir().expect("a data directory");
    let run = tokio::time::timeout(Duration::from_secs(150), play(&dir)).await;
    // `STAUNCH_KEEP_SHOP_DIR=1` keeps the files (and the workers' logs) to look at.
    if std::env::var_os("STAUNCH_KEEP_SHOP_DIR").is_none() {
        let _ = std::fs::remove_dir_all(&dir);
    }
    run.unwrap_or_else(|_| panic!("the run finished within 150 s (data in {})", dir.display()));
}

async fn play(dir: &Path) {
    let mut workers = vec![
        Worker::start("inventory", dir, 0, "").await,
        Worker::start("payment", dir, 0, "").await,
        Worker::start("shipping", dir, 0, "").await,
    ];
    let peers = workers
        .iter()
        .map(|w| format!("127.0.0.1:{}", w.port))
        .collect::<Vec<_>>()
        .join(",");
    workers.push(Worker::start("order", dir, 0, &peers).await);

    let mut seed = 0x5EED_5409_u64;
    let mut kills: BTreeMap<&'static str, u32> = BTreeMap::new();
    for _ in 0..KILLS {
        tokio::time::sleep(Duration::from_millis(250 + next(&mut seed) % 500)).await;
        let victim = [0, 1, 1, 2, 3][(next(&mut seed) % 5) as usize];
        let w = &mut workers[victim];
        w.kill().await;
        *kills.entry(w.role).or_default() += 1;
        tokio::time::sleep(Duration::from_millis(next(&mut seed) % 400)).await;
        let (role, port) = (w.role, w.port);
        *w = Worker::start(role, dir, port, &peers).await;
    }
    // The last order service process goes too, mid-run; this process takes over its log,
    // resumes what it left and waits for every saga.
    workers[3].kill().await;
    let addr = |i: usize| std::net::SocketAddr::from(([127, 0, 0, 1], workers[i].port));
    let orders = OrderService::start(
        Config::short().tuning,
        addr(0),
        &[addr(1)],
        addr(2),
        dir.join("sagas.db"),
    )
    .await
    .expect("the order service starts on the same log");
    let (placed, _) = orders.settle().await.expect("every saga ends");

    // What the HTTP participants received during the run (the order service gone, so
    // nothing more comes): keys that came more than once, and replays.
    let mut seen: HashMap<String, u32> = HashMap::new();
    let mut replayed = 0;
    for role in ["inventory", "payment"] {
        let log =
            std::fs::read_to_string(dir.join(format!("deliveries-{role}.log"))).unwrap_or_default();
        for line in log.lines() {
            let (key, was_replay) = line.rsplit_once(' ').unwrap_or((line, "false"));
            *seen.entry(key.to_owned()).or_default() += 1;
            replayed += u32::from(was_replay == "true");
        }
    }
    let again = seen.values().filter(|n| **n > 1).count();

    // Every recorded charge, refund and reservation sent again: answered from its record.
    let payment_addr = addr(1);
    let inventory_addr = addr(0);
    let payment = Payment::open(&dir.join("payment.db"))
        .await
        .expect("payment's file opens");
    let inventory = Inventory::open(&dir.join("inventory.db"), &[(SKU, STOCK)])
        .await
        .expect("inventory's file opens");
    let ledger_before = payment.ledger().await.expect("the ledger");
    let stock_before = inventory.available().await.expect("the stock");
    let client = reqwest::Client::new();
    let mut resent = 0;
    let resend = |url: String, key: String, body: Value| {
        let request = client
            .post(url)
            .header(
                IDEMPOTENCY_KEY,
                IdempotencyKey::new(key.as_str())
                    .expect("a valid key")
                    .header_value(),
            )
            .header("content-type", "application/json")
            .body(body.to_string());
        async move {
            let response = request.send().await.expect("the participant answers");
            let replayed = response.headers().contains_key("idempotent-replayed");
            (response.status().as_u16(), replayed, key)
        }
    };
    for e in &ledger_before {
        let (url, body) = if e.kind == "charge" {
            let body = json!({ "order_id": e.order_id, "amount_cents": e.amount_cents });
            (format!("http://{payment_addr}/charges"), body)
        } else {
            let body = json!({ "charge_key": e.charge_key });
            (format!("http://{payment_addr}/refunds"), body)
        };
        let answer = resend(url, e.key.clone(), body).await;
        assert!(
            answer.1 && answer.0 < 300,
            "{} sent again: {answer:?}",
            e.kind
        );
        resent += 1;
    }
    for r in inventory.reservations().await.expect("the reservations") {
        let order_id = r.key.split(':').next().unwrap_or_default().to_owned();
        let body = json!({ "order_id": order_id, "sku": r.sku, "qty": r.qty });
        let url = format!("http://{inventory_addr}/reservations");
        let answer = resend(url, r.key.clone(), body).await;
        assert!(
            answer.1 && answer.0 < 300,
            "reservation sent again: {answer:?}"
        );
        resent += 1;
    }
    let ledger_after = payment.ledger().await.expect("the ledger");
    assert_eq!(
        ledger_after.len(),
        ledger_before.len(),
        "the ledger did not move"
    );
    assert_eq!(
        inventory.available().await.expect("the stock"),
        stock_before
    );
    for w in &mut workers[..3] {
        w.kill().await;
    }

    // From the files alone.
    let shipping = Shipping::open(&dir.join("shipping.db"))
        .await
        .expect("shipping's file opens");
    let mut report = Report::default();
    consistency(&inventory, &payment, &shipping, STOCK, &mut report)
        .await
        .expect("the files are readable");
    let mut outcomes: BTreeMap<&str, u32> = BTreeMap::new();
    for p in &placed {
        *outcomes.entry(p.outcome).or_default() += 1;
    }
    eprintln!(
        "{} orders {outcomes:?}; kills {kills:?}; {again} keys delivered more than once, {replayed} answered from records; {resent} sent again at the end, all replayed; {}",
        placed.len(),
        report.check.join("; ")
    );
    assert!(
        report.inconsistencies.is_empty(),
        "the ledger does not balance: {:?}",
        report.inconsistencies
    );

    // Every order against its saga's outcome.
    let shipments = shipping.shipments().await.expect("the shipments");
    for p in &placed {
        let id = p.order_id.as_str();
        let count = |kind: &str| {
            ledger_after
                .iter()
                .filter(|e| e.order_id == id && e.kind == kind)
                .count()
        };
        let (charged, refunded) = (count("charge"), count("refund"));
        let shipped = shipments
            .iter()
            .filter(|s| s.order_id == id && !s.cancelled)
            .count();
        match p.outcome {
            "completed" => assert_eq!(
                (charged, refunded, shipped),
                (1, 0, 1),
                "{id} completed: charged once, shipped once"
            ),
            "stuck" => panic!("{id} is stuck: {p:?}"),
            _ => assert!(
                charged == refunded && charged <= 1 && shipped == 0,
                "{id} {}: charged {charged}, refunded {refunded}, shipped {shipped}",
                p.outcome
            ),
        }
    }
    assert!(outcomes.get("completed").copied().unwrap_or(0) > 0);
    assert!(
        ledger_after.iter().any(|e| e.kind == "refund"),
        "some paid orders were refunded"
    );
    assert!(again > 0, "no key was delivered more than once");
    assert_eq!(kills.len(), 4, "every service was killed: {kills:?}");
}
