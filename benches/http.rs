//! Loopback HTTP: what each client stack costs per request over a real axum server.
//!
//! `cargo bench -p staunch-benches --bench http` (options: `--runs N`, `--secs S`,
//! `--callers C`). The server runs on a runtime of its own (one worker thread), the clients
//! on another (one worker thread), so the client's CPU time is measured apart from the
//! server's: it is read from the kernel's per-thread counters (`/proc/self/task/*/schedstat`)
//! of the client runtime's threads. Each run sends from `C` concurrent callers (32 by default)
//! for `S` seconds (3) after one second of warm-up, and reports requests per second, latency
//! percentiles and client CPU per request; with several runs each figure is the range
//! (min–max) over the runs. `--requests N` sends a fixed number of requests per run
//! instead (N/4 to warm up), for counting instructions per request with
//! `valgrind --tool=callgrind --separate-threads=yes`, which does not depend on what else
//! the machine runs.
//!
//! Rows, each answering the same `GET /hello` with a 5-byte body that the caller reads:
//! - `reqwest send`: `client.get(url).send()` then `.bytes()`, no tower at all;
//! - `staunch adapter`: `staunch::http::reqwest(client)` as a tower service, bare;
//! - `staunch preset`: `staunch::http::client` (retry, breaker, attempt timeout, bulkhead)
//!   with the default configuration plus a 1 s attempt timeout and room for 1024 calls in
//!   the bulkhead (as the peer's), over the adapter;
//! - `tower-resilience stack`: its retry, circuit breaker, time limiter and bulkhead over
//!   the adapter, in the same order.
#![allow(
    clippy::disallowed_types,
    clippy::disallowed_methods,
    clippy::print_stdout,
    unreachable_pub
)]

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use http_body_util::BodyExt;
use tower::{Layer, Service, ServiceExt};

use staunch::BoxError;
type Call = Pin<Box<dyn Future<Output = Result<(), BoxError>> + Send>>;

/// One client under test: makes one request to `/hello` and reads the body.
trait Client: Clone + Send + 'static {
    fn get(&mut self, url: &str) -> Call;
}

#[derive(Clone)]
struct PlainReqwest(reqwest::Client);

impl Client for PlainReqwest {
    fn get(&mut self, url: &str) -> Call {
        let send = self.0.get(url).send();
        Box::pin(async move {
            let res = send.await?;
            res.error_for_status()?.bytes().await?;
            Ok(())
        })
    }
}

/// Any tower service over `http::Request<String>` answering a body (the adapter, the preset,
/// the peer's stack).
#[derive(Clone)]
struct Tower<S>(S);

impl<S, B> Client for Tower<S>
where
    S: Service<http::Request<String>, Response = http::Response<B>> + Clone + Send + 'static,
    S::Future: Send,
    S::Error: Into<BoxError>,
    B: http_body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<BoxError>,
{
    fn get(&mut self, url: &str) -> Call {
        let req = http::Request::get(url).body(String::new());
        let mut svc = self.0.clone();
        Box::pin(async move {
            let req = req?;
            let res = svc.ready().await.map_err(Into::into)?.call(req).await;
            let res = res.map_err(Into::into)?;
            if !res.status().is_success() {
                return Err(format!("status {}", res.status()).into());
            }
            res.into_body().collect().await.map_err(Into::into)?;
            Ok(())
        })
    }
}

struct Options {
    runs: usize,
    secs: u64,
    /// A fixed number of requests per run instead of a fixed time (`--requests N`; the
    /// warm-up then sends N/4): for counting instructions per request under callgrind.
    requests: Option<u64>,
    callers: usize,
    filter: Option<String>,
}

fn options() -> Options {
    let mut o = Options {
        runs: 3,
        secs: 3,
        requests: None,
        callers: 32,
        filter: None,
    };
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut value = |name: &str| -> usize {
            args.next()
                .and_then(|v| v.parse().ok())
                .unwrap_or_else(|| panic!("{name} takes a number"))
        };
        match arg.as_str() {
            "--runs" => o.runs = value("--runs").max(1),
            "--secs" => o.secs = value("--secs").max(1) as u64,
            "--callers" => o.callers = value("--callers").max(1),
            "--requests" => o.requests = Some(value("--requests").max(1) as u64),
            // cargo bench passes `--bench`; criterion-style filters are a row name part.
            "--bench" => {}
            other if !other.starts_with('-') => o.filter = Some(other.to_owned()),
            _ => {}
        }
    }
    o
}

fn serve() -> SocketAddr {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("server runtime");
        rt.block_on(async move {
            let app = axum::Router::new().route("/hello", axum::routing::get(|| async { "hello" }));
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
                .await
                .expect("bind loopback");
            tx.send(listener.local_addr().expect("local addr"))
                .expect("report address");
            axum::serve(listener, app).await.expect("serve");
        });
    });
    rx.recv().expect("server address")
}

/// The client runtime's threads, by kernel thread id, so their CPU time can be read.
fn client_runtime() -> (tokio::runtime::Runtime, Arc<Mutex<Vec<String>>>) {
    let tids = Arc::new(Mutex::new(Vec::new()));
    let record = Arc::clone(&tids);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .on_thread_start(move || {
            // The first field of /proc/thread-self/stat is the thread id.
            if let Ok(stat) = std::fs::read_to_string("/proc/thread-self/stat")
                && let Some(tid) = stat.split_whitespace().next()
            {
                record.lock().expect("tids").push(tid.to_owned());
            }
        })
        .build()
        .expect("client runtime");
    (rt, tids)
}

/// Nanoseconds the given threads have run on a CPU (0 where the kernel does not say).
fn cpu_ns(tids: &Mutex<Vec<String>>) -> u64 {
    tids.lock()
        .expect("tids")
        .iter()
        .filter_map(|tid| std::fs::read_to_string(format!("/proc/self/task/{tid}/schedstat")).ok())
        .filter_map(|s| s.split_whitespace().next()?.parse::<u64>().ok())
        .sum()
}

struct Figures {
    rps: f64,
    p50_us: f64,
    p99_us: f64,
    cpu_us: f64,
}

/// Sends from `callers` tasks for the warm-up, then for `secs`, and measures the second part.
fn measure<C: Client>(
    rt: &tokio::runtime::Runtime,
    tids: &Mutex<Vec<String>>,
    client: &C,
    url: &str,
    o: &Options,
) -> Figures {
    // A run ends after `secs` seconds or, with `--requests`, after that many requests.
    let run = |secs: f64, requests: Option<u64>, record: bool| {
        let stop = Arc::new(AtomicBool::new(false));
        let left = Arc::new(AtomicU64::new(requests.unwrap_or(u64::MAX)));
        let tasks: Vec<_> = (0..o.callers)
            .map(|_| {
                let mut client = client.clone();
                let url = url.to_owned();
                let (stop, left) = (Arc::clone(&stop), Arc::clone(&left));
                rt.spawn(async move {
                    let mut latencies = Vec::with_capacity(if record { 1 << 16 } else { 0 });
                    while !stop.load(Ordering::Relaxed)
                        && left
                            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| {
                                n.checked_sub(1)
                            })
                            .is_ok()
                    {
                        let start = Instant::now();
                        client.get(&url).await.expect("request failed");
                        if record {
                            latencies.push(start.elapsed().as_nanos() as u64);
                        }
                    }
                    latencies
                })
            })
            .collect();
        let cpu_before = cpu_ns(tids);
        let start = Instant::now();
        if requests.is_none() {
            // The main thread waits outside the runtime: the callers run on its worker.
            std::thread::sleep(Duration::from_secs_f64(secs));
            stop.store(true, Ordering::Relaxed);
        }
        let mut all: Vec<u64> = rt.block_on(async {
            let mut all = Vec::new();
            for task in tasks {
                all.extend(task.await.expect("caller task"));
            }
            all
        });
        let elapsed = start.elapsed().as_secs_f64();
        let cpu = cpu_ns(tids) - cpu_before;
        all.sort_unstable();
        (all, elapsed, cpu)
    };
    run(1.0, o.requests.map(|n| (n / 4).max(1)), false);
    let (latencies, elapsed, cpu) = run(o.secs as f64, o.requests, true);
    let n = latencies.len().max(1);
    let pct = |p: f64| latencies[((n - 1) as f64 * p) as usize] as f64 / 1e3;
    Figures {
        rps: n as f64 / elapsed,
        p50_us: pct(0.50),
        p99_us: pct(0.99),
        cpu_us: cpu as f64 / n as f64 / 1e3,
    }
}

fn range(values: impl Iterator<Item = f64>, digits: usize) -> String {
    let v: Vec<f64> = values.collect();
    let min = v.iter().copied().fold(f64::INFINITY, f64::min);
    let max = v.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    if v.len() == 1 || (max - min).abs() < f64::EPSILON {
        format!("{min:.digits$}")
    } else {
        format!("{min:.digits$}–{max:.digits$}")
    }
}

fn tower_resilience_stack(
    adapter: staunch::http::Reqwest<String>,
) -> impl Service<
    http::Request<String>,
    Response = http::Response<reqwest::Body>,
    Error = BoxError,
    Future: Send,
> + Clone
+ Send
+ 'static {
    let bulkhead = tower_resilience::bulkhead::BulkheadLayer::builder()
        .max_concurrent_calls(1024)
        .reject_when_full()
        .build()
        .expect("valid bulkhead")
        .layer(adapter)
        .map_err(|e| -> BoxError { Box::new(e) });
    let limited = tower_resilience::timelimiter::TimeLimiterLayer::builder()
        .timeout_duration(Duration::from_secs(1))
        .build()
        .layer(bulkhead)
        .map_err(|e| -> BoxError { Box::new(e) });
    let breaker = tower_resilience::circuitbreaker::CircuitBreakerLayer::builder()
        .build()
        .expect("valid breaker")
        .layer(limited)
        .map_err(|e| -> BoxError { Box::new(e) });
    tower_resilience::retry::RetryLayer::<
        http::Request<String>,
        http::Response<reqwest::Body>,
        BoxError,
    >::builder()
    .max_attempts(3)
    .exponential_backoff(Duration::from_millis(100))
    .build()
    .layer(breaker)
}

fn main() {
    let o = options();
    let addr = serve();
    let url = format!("http://{addr}/hello");
    let (rt, tids) = client_runtime();
    let _ctx = rt.enter();
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(1024)
        .build()
        .expect("reqwest client");
    let adapter = staunch::http::reqwest::<String>(client.clone());
    let mut config = staunch::StackConfig::default();
    config.attempt_timeout = Some(Duration::from_secs(1));
    // Like the peer's bulkhead below: room for every caller, so no row refuses calls.
    config.bulkhead.max_concurrent = Some(1024);
    let (preset, _handle) =
        staunch::http::client("bench", adapter.clone(), &config).expect("valid preset");

    type Row<'a> = (&'a str, Box<dyn Fn() -> Figures + 'a>);
    let rows: Vec<Row<'_>> = vec![
        (
            "reqwest send",
            Box::new(|| measure(&rt, &tids, &PlainReqwest(client.clone()), &url, &o)),
        ),
        (
            "staunch adapter",
            Box::new(|| measure(&rt, &tids, &Tower(adapter.clone()), &url, &o)),
        ),
        (
            "staunch preset",
            Box::new(|| measure(&rt, &tids, &Tower(preset.clone()), &url, &o)),
        ),
        (
            "tower-resilience stack",
            Box::new(|| {
                let stack = tower_resilience_stack(adapter.clone());
                measure(&rt, &tids, &Tower(stack), &url, &o)
            }),
        ),
    ];

    println!(
        "loopback HTTP, {} callers, {} s per run, {} run(s); client on 1 worker thread, server on 1",
        o.callers, o.secs, o.runs
    );
    println!(
        "{:<24} {:>16} {:>14} {:>14} {:>18}",
        "row", "requests/s", "p50 µs", "p99 µs", "client CPU µs/req"
    );
    for (name, row) in &rows {
        if o.filter.as_deref().is_some_and(|f| !name.contains(f)) {
            continue;
        }
        let runs: Vec<Figures> = (0..o.runs).map(|_| row()).collect();
        println!(
            "{:<24} {:>16} {:>14} {:>14} {:>18}",
            name,
            range(runs.iter().map(|f| f.rps), 0),
            range(runs.iter().map(|f| f.p50_us), 0),
            range(runs.iter().map(|f| f.p99_us), 0),
            range(runs.iter().map(|f| f.cpu_us), 2),
        );
    }
}
