//! The scripted story: seven phases against the running shop and a consistency check, with
//! the numbers.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde_json::{Value, json};
use tokio::task::JoinSet;
use tokio::time::Instant;

use super::dashboard::Dashboard;
use super::inventory::Inventory;
use super::order::{BoxError, OrderService, Tuning};
use super::payment::Payment;
use super::shipping::Shipping;
use staunch::fault::FaultConfig;

/// The SKU every order is for.
pub(crate) const SKU: &str = "widget";

/// How the story plays: the phase lengths and the failure settings.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Config {
    /// Orders placed per second, in every phase.
    pub(crate) rate: f64,
    /// Phase lengths: normal, payment error, payment slow, recovery, payment down with
    /// orders accepted as payment pending, payment back, one payment replica down.
    pub(crate) phases: [Duration; 7],
    /// Share of failed charges in the error phase.
    pub(crate) error_share: f64,
    /// Delay of every charge in the slow phase.
    pub(crate) slow_delay: Duration,
    /// Starting stock of [`SKU`].
    pub(crate) stock: u64,
    /// The client stacks' settings.
    pub(crate) tuning: Tuning,
}

impl Config {
    /// The full story: about a minute.
    pub(crate) fn full() -> Self {
        Self {
            rate: 20.0,
            phases: [
                Duration::from_secs(6),
                Duration::from_secs(10),
                Duration::from_secs(12),
                Duration::from_secs(9),
                Duration::from_secs(8),
                Duration::from_secs(8),
                Duration::from_secs(8),
            ],
            error_share: 0.8,
            slow_delay: Duration::from_millis(800),
            stock: 10_000,
            tuning: Tuning {
                attempt_timeout: Duration::from_millis(1500),
                open_duration: Duration::from_secs(3),
                slow_call_duration: Duration::from_millis(300),
                payment_concurrency: 4,
                payment_wait: Duration::from_millis(100),
            },
        }
    }

    /// A short version for tests: a few seconds.
    pub(crate) fn short() -> Self {
        Self {
            rate: 40.0,
            phases: [
                Duration::from_secs(1),
                Duration::from_secs(2),
                Duration::from_millis(2500),
                Duration::from_millis(2500),
                Duration::from_millis(1500),
                Duration::from_millis(2500),
                Duration::from_millis(2500),
            ],
            error_share: 0.8,
            slow_delay: Duration::from_millis(400),
            stock: 10_000,
            tuning: Tuning {
                attempt_timeout: Duration::from_secs(1),
                open_duration: Duration::from_millis(600),
                slow_call_duration: Duration::from_millis(200),
                payment_concurrency: 4,
                payment_wait: Duration::from_millis(50),
            },
        }
    }
}

/// The four services of the shop, running on loopback ports in this process, each with its
/// SQLite file in one data directory.
#[derive(Debug)]
pub(crate) struct Shop {
    /// The inventory service (`inventory.db`).
    pub(crate) inventory: Inventory,
    /// The payment service (`payment.db`).
    pub(crate) payment: Payment,
    /// The shipping service (`shipping.db`).
    pub(crate) shipping: Shipping,
    /// The order service.
    pub(crate) orders: OrderService,
    /// Its dashboard, `/metrics` and order driver (stopped until given a rate).
    pub(crate) dashboard: Dashboard,
    /// Where each service listens.
    pub(crate) addrs: BTreeMap<&'static str, SocketAddr>,
    dir: PathBuf,
}

impl Shop {
    /// Starts every service in a fresh temporary data directory: the participants' files
    /// (their business tables and their idempotency records) beside the saga log.
    pub(crate) async fn start(config: &Config) -> Result<Self, BoxError> {
        // Before any engine is built: they register their metrics when built.
        super::dashboard::prometheus();
        let dir = data_dir()?;
        let inventory = Inventory::open(
            &dir.join("inventory.db"),
            &super::load::SKUS.map(|sku| (sku, config.stock)),
        )
        .await?;
        let payment = Payment::open(&dir.join("payment.db")).await?;
        let payment_b = payment.replica("payment-b")?;
        let shipping = Shipping::open(&dir.join("shipping.db")).await?;
        let inventory_addr = super::serve(inventory.router()).await?;
        let payment_addr = super::serve(payment.router()).await?;
        let payment_b_addr = super::serve(payment_b.router()).await?;
        let shipping_addr = shipping.serve().await?;
        let orders = OrderService::start(
            config.tuning,
            inventory_addr,
            &[payment_addr, payment_b_addr],
            shipping_addr,
            dir.join("sagas.db"),
        )
        .await?;
        let dashboard = Dashboard::start(
            &orders,
            vec![
                format!("http://{payment_addr}"),
                format!("http://{payment_b_addr}"),
            ],
        );
        let order_addr = super::serve(orders.router().merge(dashboard.router())).await?;
        let addrs = BTreeMap::from([
            ("order", order_addr),
            ("inventory", inventory_addr),
            ("payment", payment_addr),
            ("payment-b", payment_b_addr),
            ("shipping (gRPC)", shipping_addr),
        ]);
        Ok(Self {
            inventory,
            payment,
            shipping,
            orders,
            dashboard,
            addrs,
            dir,
        })
    }

    /// The order service's address.
    pub(crate) fn order_addr(&self) -> SocketAddr {
        self.addrs["order"]
    }

    /// Switches the faults injected into the charges of both payment replicas through their
    /// admin routes.
    pub(crate) async fn set_payment_mode(&self, mode: FaultConfig) -> Result<(), BoxError> {
        for replica in ["payment", "payment-b"] {
            self.set_replica_mode(replica, &mode).await?;
        }
        Ok(())
    }

    /// Switches the faults of one payment replica (`payment` or `payment-b`).
    pub(crate) async fn set_replica_mode(
        &self,
        replica: &str,
        mode: &FaultConfig,
    ) -> Result<(), BoxError> {
        let addr = self.addrs.get(replica).ok_or("no such replica")?;
        let response = reqwest::Client::new()
            .post(format!("http://{addr}/admin/mode"))
            .header("content-type", "application/json")
            .body(serde_json::to_string(mode)?)
            .send()
            .await?;
        if !response.status().is_success() {
            return Err(format!("{replica} admin answered {}", response.status()).into());
        }
        Ok(())
    }

    /// Removes the data directory.
    pub(crate) fn cleanup(&self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A fresh directory under the system's temporary directory.
pub(crate) fn data_dir() -> std::io::Result<PathBuf> {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    let dir = std::env::temp_dir().join(format!("staunch-shop-{}-{nanos}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}

/// What one phase came to.
#[derive(Debug, Clone, Default)]
pub(crate) struct PhaseReport {
    /// The phase's name.
    pub(crate) name: &'static str,
    /// Orders by outcome (`completed`, `payment_pending`, `compensated`, `failed_fast`,
    /// `rejected`, `stuck`, `error`).
    pub(crate) outcomes: BTreeMap<String, u64>,
    /// End-to-end order latencies.
    pub(crate) latencies: Vec<Duration>,
    /// Latencies of the successful inventory reservations.
    pub(crate) reserve_latencies: Vec<Duration>,
    /// Breaker transitions during the phase: (breaker, from, to, reason).
    pub(crate) transitions: Vec<(String, &'static str, &'static str, &'static str)>,
    /// Retries by the clients during the phase.
    pub(crate) retries: u64,
    /// Payment bulkhead rejections during the phase.
    pub(crate) bulkhead_rejections: u64,
    /// Payment breaker rejections during the phase.
    pub(crate) breaker_rejections: u64,
    /// Per payment replica: its address, the attempts sent to it during the phase, and the
    /// times it was ejected during the phase.
    pub(crate) replicas: Vec<(String, u64, u32)>,
}

impl PhaseReport {
    /// Orders with this outcome.
    pub(crate) fn count(&self, outcome: &str) -> u64 {
        self.outcomes.get(outcome).copied().unwrap_or(0)
    }
}

/// The whole story.
#[derive(Debug, Clone, Default)]
pub(crate) struct Report {
    /// One entry per phase.
    pub(crate) phases: Vec<PhaseReport>,
    /// Problems found by the consistency check (empty: consistent).
    pub(crate) inconsistencies: Vec<String>,
    /// The consistency check's figures, for the printout.
    pub(crate) check: Vec<String>,
    /// Orders accepted as payment pending, and how many of their later charges completed.
    pub(crate) pending: (usize, usize),
}

fn percentile(sorted: &[Duration], p: f64) -> Option<Duration> {
    if sorted.is_empty() {
        return None;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    Some(sorted[rank.clamp(1, sorted.len()) - 1])
}

fn ms(d: Option<Duration>) -> String {
    d.map_or_else(
        || "-".to_owned(),
        |d| format!("{:.1}", d.as_secs_f64() * 1000.0),
    )
}

struct Counters {
    retries: u64,
    bulkhead_rejections: u64,
    breaker_rejections: u64,
    at_ms: u64,
    replicas: Vec<super::order::ReplicaStatus>,
}

fn counters(orders: &OrderService) -> Counters {
    let guards = orders.guards();
    let payment = guards.iter().find(|g| g.name == "payment");
    Counters {
        retries: guards.iter().map(|g| g.retry.metrics().retries).sum(),
        bulkhead_rejections: payment.map_or(0, |g| g.bulkhead.metrics().rejections()),
        breaker_rejections: payment.map_or(0, |g| g.breaker.snapshot().rejected_calls),
        at_ms: orders.now_ms(),
        replicas: orders.replicas(),
    }
}

/// Places orders at `rate` for `length` through the order service's HTTP API.
async fn phase(
    shop: &Shop,
    name: &'static str,
    rate: f64,
    length: Duration,
) -> Result<PhaseReport, BoxError> {
    let before = counters(&shop.orders);
    shop.orders.take_reserve_latencies();
    let client = reqwest::Client::new();
    let url = format!("http://{}/orders", shop.order_addr());
    let mut tasks = JoinSet::new();
    let start = Instant::now();
    let mut ticker = tokio::time::interval(Duration::from_secs_f64(1.0 / rate));
    let mut n: u64 = 0;
    while start.elapsed() < length {
        ticker.tick().await;
        n += 1;
        let qty = n % 3 + 1;
        let body = json!({ "sku": SKU, "qty": qty, "amount_cents": qty * 1999 }).to_string();
        let request = client
            .post(&url)
            .header("content-type", "application/json")
            .body(body);
        tasks.spawn(async move {
            let sent = Instant::now();
            let outcome = match request.send().await {
                Ok(response) => {
                    let body: Value = response.json_or_null().await;
                    body["outcome"].as_str().unwrap_or("error").to_owned()
                }
                Err(_) => "error".to_owned(),
            };
            (outcome, sent.elapsed())
        });
    }
    let mut report = PhaseReport {
        name,
        ..PhaseReport::default()
    };
    while let Some(done) = tasks.join_next().await {
        let (outcome, latency) = done?;
        *report.outcomes.entry(outcome).or_default() += 1;
        report.latencies.push(latency);
    }
    let after = counters(&shop.orders);
    report.latencies.sort();
    report.reserve_latencies = shop.orders.take_reserve_latencies();
    report.reserve_latencies.sort();
    report.retries = after.retries - before.retries;
    report.bulkhead_rejections = after.bulkhead_rejections - before.bulkhead_rejections;
    report.breaker_rejections = after.breaker_rejections - before.breaker_rejections;
    report.replicas = after
        .replicas
        .iter()
        .zip(&before.replicas)
        .map(|(a, b)| {
            // Named as the shop names the replica, when it is one of the shop's.
            let name = shop
                .addrs
                .iter()
                .find(|(_, addr)| addr.to_string() == a.addr)
                .map_or_else(|| a.addr.clone(), |(name, _)| (*name).to_owned());
            (name, a.sent - b.sent, a.times_ejected - b.times_ejected)
        })
        .collect();
    report.transitions = shop
        .orders
        .transitions()
        .into_iter()
        .filter(|t| t.at_ms >= before.at_ms && t.at_ms < after.at_ms)
        .map(|t| (t.breaker, t.from, t.to, t.reason))
        .collect();
    Ok(report)
}

trait JsonOrNull {
    async fn json_or_null(self) -> Value;
}

impl JsonOrNull for reqwest::Response {
    async fn json_or_null(self) -> Value {
        match self.bytes().await {
            Ok(bytes) => serde_json::from_slice(&bytes).unwrap_or(Value::Null),
            Err(_) => Value::Null,
        }
    }
}

fn print_phase(p: &PhaseReport) {
    println!(
        "    orders: {} ok, {} payment pending, {} compensated, {} failed fast (breaker open), {} rejected (bulkhead full){}",
        p.count("completed"),
        p.count("payment_pending"),
        p.count("compensated"),
        p.count("failed_fast"),
        p.count("rejected"),
        match p.count("stuck") + p.count("error") {
            0 => String::new(),
            n => format!(", {n} stuck or errored"),
        }
    );
    println!(
        "    order latency p50 {} ms, p99 {} ms; inventory reserve p50 {} ms, p99 {} ms",
        ms(percentile(&p.latencies, 50.0)),
        ms(percentile(&p.latencies, 99.0)),
        ms(percentile(&p.reserve_latencies, 50.0)),
        ms(percentile(&p.reserve_latencies, 99.0)),
    );
    println!(
        "    retries {}, payment breaker rejections {}, payment bulkhead rejections {}",
        p.retries, p.breaker_rejections, p.bulkhead_rejections
    );
    let replicas: Vec<String> = p
        .replicas
        .iter()
        .map(|(addr, sent, ejected)| match ejected {
            0 => format!("{addr} {sent}"),
            n => format!("{addr} {sent} (ejected {n}x)"),
        })
        .collect();
    println!("    payment attempts per replica: {}", replicas.join(", "));
    for (breaker, from, to, reason) in &p.transitions {
        println!("    breaker {breaker}: {from} -> {to} ({reason})");
    }
}

/// Checks that no unit and no cent went astray: stock plus shipped equals the starting
/// stock, every order's money is charged once and kept only if shipped (else refunded once),
/// and no key took effect twice (the ledgers have no unique keys, so a repeat that ran again
/// would show as a second row).
pub(crate) async fn consistency(
    inventory: &Inventory,
    payment: &Payment,
    shipping: &Shipping,
    stock: u64,
    report: &mut Report,
) -> Result<(), BoxError> {
    let problems = &mut report.inconsistencies;
    let available = inventory.available().await?.get(SKU).copied().unwrap_or(0);
    let shipments = shipping.shipments().await?;
    let live: Vec<_> = shipments.iter().filter(|s| !s.cancelled).collect();
    let shipped: u64 = live.iter().filter(|s| s.sku == SKU).map(|s| s.qty).sum();
    let reservations = inventory.reservations().await?;
    report.check.push(format!(
        "stock {available} + shipped {shipped} = {} (started with {stock}); {} reservations, {} shipments, {} cancelled",
        available + shipped,
        reservations.len(),
        shipments.len(),
        shipments.len() - live.len(),
    ));
    if available + shipped != stock {
        problems.push(format!(
            "stock {available} + shipped {shipped} != starting stock {stock}"
        ));
    }
    let mut twice = |what: &str, keys: Vec<&str>| {
        let mut seen: HashMap<&str, u32> = HashMap::new();
        for key in keys {
            *seen.entry(key).or_default() += 1;
        }
        for (key, n) in seen.into_iter().filter(|(_, n)| *n > 1) {
            problems.push(format!("{key}: {what} {n} times"));
        }
    };
    twice(
        "reserved",
        reservations.iter().map(|r| r.key.as_str()).collect(),
    );
    twice(
        "shipped",
        shipments.iter().map(|s| s.key.as_str()).collect(),
    );
    let ledger = payment.ledger().await?;
    let charges: Vec<_> = ledger.iter().filter(|e| e.kind == "charge").collect();
    let refunds: Vec<_> = ledger.iter().filter(|e| e.kind == "refund").collect();
    twice("charged", charges.iter().map(|e| e.key.as_str()).collect());
    twice(
        "refunded",
        refunds.iter().map(|e| e.charge_key.as_str()).collect(),
    );
    twice(
        "refund request run",
        refunds.iter().map(|e| e.key.as_str()).collect(),
    );
    // Per order: cents charged minus refunded, and units shipped.
    let mut kept: HashMap<&str, i64> = HashMap::new();
    for e in &ledger {
        let cents = i64::try_from(e.amount_cents).unwrap_or(i64::MAX);
        *kept.entry(e.order_id.as_str()).or_default() +=
            if e.kind == "charge" { cents } else { -cents };
    }
    let shipped_orders: HashMap<&str, u64> =
        live.iter().map(|s| (s.order_id.as_str(), s.qty)).collect();
    for (order, cents) in &kept {
        let ships = shipped_orders.contains_key(order);
        if *cents < 0 {
            problems.push(format!("{order}: refunded more than charged"));
        } else if *cents > 0 && !ships {
            problems.push(format!("{order}: charged but not shipped nor refunded"));
        }
    }
    for order in shipped_orders.keys() {
        if kept.get(order).copied().unwrap_or(0) <= 0 {
            problems.push(format!("{order}: shipped but not charged"));
        }
    }
    // A reservation is released unless its order shipped (its key starts with the order).
    let unshipped_holds = reservations
        .iter()
        .filter(|r| !r.released)
        .filter(|r| !shipped_orders.contains_key(r.key.split(':').next().unwrap_or_default()))
        .count();
    if unshipped_holds > 0 {
        problems.push(format!(
            "{unshipped_holds} reservations held for orders never shipped"
        ));
    }
    let held: u64 = reservations
        .iter()
        .filter(|r| !r.released && r.sku == SKU)
        .map(|r| r.qty)
        .sum();
    if held != shipped {
        problems.push(format!("{held} units held, {shipped} shipped"));
    }
    report.check.push(format!(
        "{} charges, {} refunds: {} orders paid and shipped, none charged or refunded twice",
        charges.len(),
        refunds.len(),
        shipped_orders.len()
    ));
    Ok(())
}

/// Plays the story on a running shop and prints it. The report's `inconsistencies` say
/// whether the final check passed.
pub(crate) async fn play(shop: &Shop, config: &Config) -> Result<Report, BoxError> {
    let [normal, error, slow, recovery, down, back, replica] = config.phases;
    let mut report = Report::default();
    println!(
        "staunch shop: order -> inventory (HTTP), payment (HTTP, two replicas), shipping (gRPC)"
    );
    for (name, addr) in &shop.addrs {
        println!("  {name:<16} http://{addr}");
    }
    println!("  saga log         {}", shop.orders.db().display());
    println!(
        "  participants     inventory.db, payment.db, shipping.db beside it: their tables and their Idempotency-Key records, written in one transaction"
    );
    println!(
        "  {} orders/s; payment bulkhead {} calls, waits at most {:?}; payment breaker: a charge slower than {:?} is slow, half the window failed or slow trips it, opens for {:?}; attempt timeout {:?}\n",
        config.rate,
        config.tuning.payment_concurrency,
        config.tuning.payment_wait,
        config.tuning.slow_call_duration,
        config.tuning.open_duration,
        config.tuning.attempt_timeout
    );

    println!("(1) normal: every dependency healthy, for {normal:?}");
    let p = phase(shop, "1 normal", config.rate, normal).await?;
    print_phase(&p);
    report.phases.push(p);

    println!(
        "\n(2) payment fails {:.0}% of charges (500), for {error:?}: sagas release the stock, the breaker opens, later orders fail fast",
        config.error_share * 100.0
    );
    shop.set_payment_mode(FaultConfig::none().with_error(config.error_share, 500))
        .await?;
    let p = phase(shop, "2 payment errors", config.rate, error).await?;
    print_phase(&p);
    report.phases.push(p);

    println!(
        "\n(3) payment slow ({:?} per charge, slower than the breaker's {:?}), for {slow:?}: the payment bulkhead caps calls in flight and rejects the excess; inventory stays fast",
        config.slow_delay, config.tuning.slow_call_duration
    );
    println!(
        "    (slow answers count against the breaker: a closed one trips on the slow-call rate; still open from (2), it lets more probes through than the bulkhead has permits, the bulkhead rejects the excess, the probes are slow and re-open it: later orders fail fast)"
    );
    shop.set_payment_mode(FaultConfig::none().with_latency(
        1.0,
        config.slow_delay,
        config.slow_delay,
    ))
    .await?;
    let p = phase(shop, "3 payment slow", config.rate, slow).await?;
    print_phase(&p);
    report.phases.push(p);

    println!(
        "\n(4) recovery: payment healthy again, for {recovery:?}: once the open duration has passed, the breaker's probes are fast and it closes; orders succeed"
    );
    shop.set_payment_mode(FaultConfig::none()).await?;
    let p = phase(shop, "4 recovery", config.rate, recovery).await?;
    print_phase(&p);
    report.phases.push(p);

    println!(
        "\n(5) payment down (every charge fails), for {down:?}, with orders accepted as payment pending: once the breaker opens, an order whose charge it refuses is accepted and a saga of its own charges it later"
    );
    shop.set_payment_mode(FaultConfig::none().with_error(1.0, 500))
        .await?;
    shop.orders.accept_pending(true);
    let p = phase(shop, "5 payment down", config.rate, down).await?;
    print_phase(&p);
    report.phases.push(p);

    println!(
        "\n(6) payment back, for {back:?}: the breaker closes, the pending charges go through and those orders ship"
    );
    shop.set_payment_mode(FaultConfig::none()).await?;
    let p = phase(shop, "6 payment back", config.rate, back).await?;
    print_phase(&p);
    report.phases.push(p);
    shop.orders.accept_pending(false);

    println!(
        "\n(7) one payment replica down (payment-b answers every charge 503), for {replica:?}: the balancer ejects it after 3 failures in a row, its calls are retried on the other replica, orders complete and the payment breaker stays closed; let back in after {:?}, it fails again and stays out longer each time",
        config.tuning.open_duration
    );
    let down = FaultConfig::none().with_error(1.0, 503);
    shop.set_replica_mode("payment-b", &down).await?;
    let p = phase(shop, "7 one replica down", config.rate, replica).await?;
    print_phase(&p);
    report.phases.push(p);
    shop.set_replica_mode("payment-b", &FaultConfig::none())
        .await?;

    // A charge handler the client gave up on may still be sleeping: let it finish (it finds
    // its key voided by the refund and charges nothing).
    tokio::time::sleep(config.slow_delay + Duration::from_millis(200)).await;
    // Every saga ends first: the later charges of the pending orders too.
    let (sagas, later) = shop.orders.settle().await?;
    println!("\n(8) consistency check");
    consistency(
        &shop.inventory,
        &shop.payment,
        &shop.shipping,
        config.stock,
        &mut report,
    )
    .await?;
    let mut ended: BTreeMap<&str, usize> = BTreeMap::new();
    for saga in &sagas {
        *ended.entry(saga.outcome).or_default() += 1;
    }
    let mut charged_later: BTreeMap<&str, usize> = BTreeMap::new();
    for saga in &later {
        *charged_later.entry(saga.outcome).or_default() += 1;
    }
    report.pending = (
        ended.get("payment_pending").copied().unwrap_or(0),
        charged_later.get("completed").copied().unwrap_or(0),
    );
    if later.len() != report.pending.0 {
        report.inconsistencies.push(format!(
            "{} orders payment pending, {} later charges",
            report.pending.0,
            later.len()
        ));
    }
    if let Some(stuck) = charged_later.get("stuck") {
        report
            .inconsistencies
            .push(format!("{stuck} later charges stuck for an operator"));
    }
    let charged_later: Vec<String> = charged_later
        .iter()
        .map(|(k, n)| format!("{n} {k}"))
        .collect();
    report.check.push(format!(
        "{} orders accepted as payment pending; their later charges: {}",
        report.pending.0,
        if charged_later.is_empty() {
            "none".to_owned()
        } else {
            charged_later.join(", ")
        }
    ));
    if let Some(stuck) = ended.get("stuck") {
        report
            .inconsistencies
            .push(format!("{stuck} sagas stuck for an operator"));
    }
    let ended: Vec<String> = ended.iter().map(|(k, n)| format!("{n} {k}")).collect();
    report.check.push(format!(
        "{} sagas in the log, every one ended: {}",
        sagas.len(),
        ended.join(", ")
    ));
    let (replayed, in_flight) = shop.orders.repeats();
    report.check.push(format!(
        "keys delivered again and not run again: {replayed} answered from the participants' records, {in_flight} refused while held (tests/shop_restart.rs kills services to see many)"
    ));
    for line in &report.check {
        println!("    {line}");
    }
    if report.inconsistencies.is_empty() {
        println!("    OK: no unit and no cent went astray");
    } else {
        for problem in &report.inconsistencies {
            println!("    FAILED: {problem}");
        }
    }
    println!("\n{}", summary(&report));
    Ok(report)
}

/// The summary table.
pub(crate) fn summary(report: &Report) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:<18} {:>5} {:>8} {:>12} {:>12} {:>9} {:>9} {:>9} {:>9} {:>12} {:>8} {:>10}",
        "phase",
        "ok",
        "pending",
        "compensated",
        "failed fast",
        "rejected",
        "p50 ms",
        "p99 ms",
        "inv p99",
        "transitions",
        "retries",
        "bulkhead"
    );
    for p in &report.phases {
        let _ = writeln!(
            out,
            "{:<18} {:>5} {:>8} {:>12} {:>12} {:>9} {:>9} {:>9} {:>9} {:>12} {:>8} {:>10}",
            p.name,
            p.count("completed"),
            p.count("payment_pending"),
            p.count("compensated"),
            p.count("failed_fast"),
            p.count("rejected"),
            ms(percentile(&p.latencies, 50.0)),
            ms(percentile(&p.latencies, 99.0)),
            ms(percentile(&p.reserve_latencies, 99.0)),
            p.transitions.len(),
            p.retries,
            p.bulkhead_rejections,
        );
    }
    let _ = writeln!(
        out,
        "(pending: accepted as payment pending, charged later; failed fast: refused by the open payment breaker;\n rejected: refused by the full payment bulkhead; inv p99: inventory reservation latency;\n bulkhead: payment bulkhead rejections)"
    );
    let _ = write!(out, "payment breaker:");
    for p in &report.phases {
        // Each kind of transition once, in order of first appearance, with its count.
        let mut kinds: Vec<((&str, &str, &str), u32)> = Vec::new();
        for (_, from, to, reason) in p.transitions.iter().filter(|t| t.0 == "payment") {
            match kinds.iter_mut().find(|(k, _)| *k == (*from, *to, *reason)) {
                Some((_, n)) => *n += 1,
                None => kinds.push(((from, to, reason), 1)),
            }
        }
        let moves: Vec<String> = kinds
            .iter()
            .map(|((from, to, reason), n)| match n {
                1 => format!("{from} -> {to} ({reason})"),
                n => format!("{from} -> {to} ({reason}) x{n}"),
            })
            .collect();
        let moves = if moves.is_empty() {
            "no change".to_owned()
        } else {
            moves.join("; ")
        };
        let _ = write!(out, "\n  {:<18} {moves}", p.name);
    }
    out
}
