//! `promo-bench`: drives one scenario against a running `promo standalone`
//! (or the services behind one address), then checks the invariants through
//! the API and prints the figures — a table row, and JSON with `--json`.
//!
//! Closed model: `--connections` loops, each sending its next request when
//! the last one answered. Open model: `--rate` arrivals per second on a fixed
//! schedule, latency measured from each request's *intended* send time, so a
//! stalled server shows up as latency instead of being hidden by waiting
//! clients (coordinated omission).

use std::{
    collections::BTreeMap,
    path::PathBuf,
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

use anyhow::{bail, Context};
use bytes::Bytes;
use clap::{Parser, ValueEnum};
use hdrhistogram::Histogram;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use serde::Serialize;
use serde_json::{json, Value};

#[derive(Parser, Debug)]
#[command(
    name = "promo-bench",
    version,
    about = "Load generator for the promotion platform"
)]
struct Args {
    /// Base URL of the services (promo standalone).
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    target: String,
    #[arg(long, value_enum)]
    scenario: Scenario,
    #[arg(long, value_enum, default_value = "closed")]
    model: Model,
    /// Connections. Closed model: each sends its next request when the last
    /// answered. Open model: the schedule is spread over them; use enough that
    /// rate × latency fits (a shortfall shows up as latency, not as less load).
    #[arg(long, default_value_t = 64)]
    connections: usize,
    /// Open model: requests per second.
    #[arg(long, default_value_t = 1000)]
    rate: u64,
    /// Length of the measured run, seconds.
    #[arg(long, default_value_t = 10)]
    seconds: u64,
    /// Quota or stock of the campaign or sale the run creates (default: more
    /// than any run can take, so every request is admitted).
    #[arg(long, default_value_t = 100_000_000)]
    quota: i64,
    /// Bearer token for the admin API.
    #[arg(long, env = "PROMO_ADMIN_TOKEN")]
    admin_token: Option<String>,
    /// A label for the backends ("embedded", "real") in the output.
    #[arg(long, default_value = "")]
    label: String,
    /// Write the report as JSON here too.
    #[arg(long)]
    json: Option<PathBuf>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Serialize)]
#[serde(rename_all = "kebab-case")]
enum Scenario {
    /// The cheapest route of the same server (GET /healthz): the box's HTTP limit.
    Ceiling,
    CouponV1,
    CouponV2,
    CouponV3,
    TimesaleV1,
    TimesaleV2,
    TimesaleV3,
    PointsEarn,
    PointsUse,
    PointsBalance,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Serialize)]
#[serde(rename_all = "kebab-case")]
enum Model {
    Closed,
    Open,
}

/// Users the point scenarios spread over.
const POINT_USERS: u64 = 1000;
/// Points each `points-use` user starts with.
const POINT_SEED: i64 = 1_000_000_000;

#[derive(Debug, Serialize)]
struct Report {
    scenario: Scenario,
    label: String,
    model: Model,
    connections: Option<usize>,
    rate: Option<u64>,
    seconds: f64,
    requests: u64,
    achieved_per_sec: f64,
    statuses: BTreeMap<u16, u64>,
    transport_errors: u64,
    p50_ms: f64,
    p99_ms: f64,
    p999_ms: f64,
    max_ms: f64,
    /// V3 only: how fast the consumer stored what was admitted.
    persistence: Option<Persistence>,
    invariants: Vec<Invariant>,
}

/// The V3 consumer's pace, from the campaign's or sale's figures sampled
/// every 250 ms from the start of the load until nothing is pending.
#[derive(Debug, Serialize)]
struct Persistence {
    /// Rows stored per second while at least `BACKLOG` admissions waited —
    /// the consumer was never idle then, so this is its capacity. `None`
    /// when it never fell that far behind (it kept up with admission).
    backlogged_per_sec: Option<f64>,
    backlogged_seconds: f64,
    /// Rows stored per second from the start of the load until drained.
    overall_per_sec: f64,
    max_pending: i64,
    /// From the end of the load until nothing was pending.
    drain_seconds: f64,
    /// Rows stored per second after the load ended while at least `BACKLOG`
    /// still waited: the consumer's pace with the cores to itself. `None`
    /// unless at least `DRAIN_BACKLOG` waited when the load ended.
    drain_per_sec: Option<f64>,
}

/// Pending admissions from which the consumer counts as busy.
const BACKLOG: i64 = 1000;
/// Pending admissions at the end of the load from which its drain is timed.
const DRAIN_BACKLOG: i64 = 10_000;

#[derive(Debug, Serialize)]
struct Invariant {
    name: String,
    ok: bool,
    detail: String,
}

struct Plan {
    scenario: Scenario,
    run: String,
    key: String,
}

/// One request of the load, formatted once and sent as is.
struct Req {
    method: hyper::Method,
    path: String,
    body: Option<String>,
    idempotency_key: Option<String>,
}

impl Plan {
    /// The i-th request. Bodies are formatted directly: the load generator
    /// shares the cores with the server, so every microsecond it spends is
    /// one the server does not get.
    fn request(&self, i: u64) -> Req {
        use hyper::Method;
        let run = &self.run;
        let (method, path, body, idempotency_key) = match self.scenario {
            Scenario::Ceiling => (Method::GET, "/healthz".into(), None, None),
            Scenario::CouponV1 | Scenario::CouponV2 | Scenario::CouponV3 => (
                Method::POST,
                format!("/{}/campaigns/{}/issue", self.scenario_version(), self.key),
                Some(format!(r#"{{"userId":"b{run}-{i}"}}"#)),
                None,
            ),
            Scenario::TimesaleV1 | Scenario::TimesaleV2 | Scenario::TimesaleV3 => (
                Method::POST,
                format!(
                    "/{}/time-sales/{}/orders",
                    self.scenario_version(),
                    self.key
                ),
                Some(format!(r#"{{"userId":"b{run}-{i}","quantity":1}}"#)),
                None,
            ),
            Scenario::PointsEarn | Scenario::PointsUse => {
                let op = if self.scenario == Scenario::PointsEarn {
                    "earn"
                } else {
                    "use"
                };
                (
                    Method::POST,
                    format!("/users/{}/points/{op}", self.point_user(i % POINT_USERS)),
                    Some(r#"{"amount":1,"reason":"bench"}"#.to_string()),
                    Some(format!("{run}-{i}")),
                )
            }
            Scenario::PointsBalance => (
                Method::GET,
                format!("/users/{}/points", self.point_user(0)),
                None,
                None,
            ),
        };
        Req {
            method,
            path,
            body,
            idempotency_key,
        }
    }

    fn is_queued(&self) -> bool {
        matches!(self.scenario, Scenario::CouponV3 | Scenario::TimesaleV3)
    }

    /// Where the campaign's or sale's figures are read, and the field
    /// counting what is stored.
    fn figures(&self) -> (String, &'static str) {
        if self.key_is_campaign() {
            (format!("/admin/campaigns/{}", self.key), "issued")
        } else {
            (format!("/time-sales/{}", self.key), "sold")
        }
    }

    fn key_is_campaign(&self) -> bool {
        matches!(
            self.scenario,
            Scenario::CouponV1 | Scenario::CouponV2 | Scenario::CouponV3
        )
    }

    fn scenario_version(&self) -> &'static str {
        match self.scenario {
            Scenario::CouponV1 | Scenario::TimesaleV1 => "v1",
            Scenario::CouponV2 | Scenario::TimesaleV2 => "v2",
            _ => "v3",
        }
    }

    fn point_user(&self, n: u64) -> String {
        format!("p{}-{n}", self.run)
    }
}

struct Client {
    http: reqwest::Client,
    base: String,
    admin_token: Option<String>,
}

impl Client {
    async fn send(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<&Value>,
        key: Option<&str>,
    ) -> Result<(u16, Value), reqwest::Error> {
        let mut req = self.http.request(method, format!("{}{path}", self.base));
        if let Some(b) = body {
            req = req.json(b);
        }
        if let Some(k) = key {
            req = req.header("Idempotency-Key", k);
        }
        if path.starts_with("/admin/") {
            if let Some(t) = &self.admin_token {
                req = req.bearer_auth(t);
            }
        }
        let res = req.send().await?;
        let status = res.status().as_u16();
        let bytes = res.bytes().await?;
        Ok((
            status,
            serde_json::from_slice(&bytes).unwrap_or(Value::Null),
        ))
    }
}

/// Creates what the scenario needs; returns the campaign or sale id.
async fn setup(c: &Client, scenario: Scenario, run: &str, quota: i64) -> anyhow::Result<String> {
    let (start, end) = (
        "2020-01-01T00:00:00Z".to_string(),
        format!("{}-01-01T00:00:00Z", 2100),
    );
    let strategy = match scenario {
        Scenario::CouponV1 | Scenario::TimesaleV1 => "DATABASE",
        Scenario::CouponV2 | Scenario::TimesaleV2 => "REDIS_LOCK",
        _ => "QUEUED",
    };
    let key = format!("bench-{run}");
    let (path, body) = match scenario {
        Scenario::CouponV1 | Scenario::CouponV2 | Scenario::CouponV3 => (
            format!("/admin/campaigns/{key}"),
            json!({"quota": quota, "perUserLimit": 1, "startsAt": start, "endsAt": end,
                   "strategy": strategy, "discount": {"kind": "FIXED", "value": 1000}}),
        ),
        Scenario::TimesaleV1 | Scenario::TimesaleV2 | Scenario::TimesaleV3 => (
            format!("/admin/time-sales/{key}"),
            json!({"product": {"sku": "BENCH", "name": "Bench", "price": 1000}, "salePrice": 900,
                   "stock": quota, "perUserLimit": 1, "startsAt": start, "endsAt": end, "strategy": strategy}),
        ),
        Scenario::PointsUse | Scenario::PointsBalance => {
            let plan = Plan {
                scenario,
                run: run.into(),
                key: key.clone(),
            };
            let users = if scenario == Scenario::PointsUse {
                POINT_USERS
            } else {
                1
            };
            for n in 0..users {
                let u = plan.point_user(n);
                let (s, b) = c
                    .send(
                        reqwest::Method::POST,
                        &format!("/users/{u}/points/earn"),
                        Some(&json!({"amount": POINT_SEED, "reason": "bench seed"})),
                        Some(&format!("seed-{u}")),
                    )
                    .await?;
                if s != 200 {
                    bail!("seeding {u} answered {s}: {b}");
                }
            }
            return Ok(key);
        }
        Scenario::Ceiling | Scenario::PointsEarn => return Ok(key),
    };
    let (s, b) = c
        .send(reqwest::Method::PUT, &path, Some(&body), None)
        .await?;
    if s != 201 && s != 200 {
        bail!("creating {path} answered {s}: {b}");
    }
    Ok(key)
}

#[derive(Default)]
struct Tally {
    statuses: BTreeMap<u16, u64>,
    transport_errors: u64,
}

impl Tally {
    fn add(&mut self, other: Tally) {
        for (s, n) in other.statuses {
            *self.statuses.entry(s).or_default() += n;
        }
        self.transport_errors += other.transport_errors;
    }
}

/// One keep-alive HTTP/1.1 connection of the load, reopened after an error.
/// Plain hyper rather than a pooled client: a pool, header maps and JSON
/// values per request cost the load generator a third of the machine's
/// `ceiling` (66k/s through reqwest against 103k/s from wrk).
struct Conn {
    authority: Arc<str>,
    send: Option<SendRequest<Full<Bytes>>>,
}

impl Conn {
    fn new(authority: Arc<str>) -> Self {
        Self {
            authority,
            send: None,
        }
    }

    async fn open(&self) -> anyhow::Result<SendRequest<Full<Bytes>>> {
        let tcp = tokio::net::TcpStream::connect(&*self.authority).await?;
        tcp.set_nodelay(true)?;
        let (send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp)).await?;
        tokio::spawn(conn);
        Ok(send)
    }

    /// Sends `r`, reads the whole answer, returns its status.
    async fn send(&mut self, r: Req) -> anyhow::Result<u16> {
        if self.send.is_none() {
            self.send = Some(self.open().await?);
        }
        let result = self.exchange(r).await;
        if result.is_err() {
            self.send = None;
        }
        result
    }

    async fn exchange(&mut self, r: Req) -> anyhow::Result<u16> {
        let send = self.send.as_mut().expect("connection opened");
        send.ready().await?;
        let mut req = hyper::Request::builder()
            .method(r.method)
            .uri(r.path)
            .header(hyper::header::HOST, &*self.authority);
        if r.body.is_some() {
            req = req.header(hyper::header::CONTENT_TYPE, "application/json");
        }
        if let Some(k) = r.idempotency_key {
            req = req.header("Idempotency-Key", k);
        }
        let req = req.body(Full::new(Bytes::from(r.body.unwrap_or_default())))?;
        let res = tokio::time::timeout(Duration::from_secs(30), async {
            let res = send.send_request(req).await?;
            let status = res.status().as_u16();
            res.into_body().collect().await?;
            anyhow::Ok(status)
        })
        .await??;
        Ok(res)
    }
}

/// `http://host:port[/]` → `host:port`.
fn authority(target: &str) -> anyhow::Result<Arc<str>> {
    let rest = target
        .strip_prefix("http://")
        .with_context(|| format!("--target {target}: only http:// URLs are supported"))?;
    Ok(rest.trim_end_matches('/').into())
}

/// Runs the load. Every connection keeps its own histogram and tally,
/// merged at the end, so the hot path shares nothing but two counters.
///
/// Closed model: each connection sends its next request when the last one
/// answered. Open model: request k is due at `k / rate` seconds; a
/// connection takes the next due request and sends it when due, or at once
/// if it is already late; the latency of a late request runs from its due
/// time — so requests delayed because every connection was busy count as
/// slow instead of vanishing (wrk2's method).
async fn run_load(plan: Arc<Plan>, args: &Args) -> anyhow::Result<(Histogram<u64>, Tally, f64)> {
    let authority = authority(&args.target)?;
    let next = Arc::new(AtomicU64::new(0));
    let done = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let started = Instant::now();
    let deadline = started + Duration::from_secs(args.seconds);

    let progress = {
        let (done, stop) = (done.clone(), stop.clone());
        tokio::spawn(async move {
            let mut last = 0;
            while !stop.load(Ordering::Relaxed) {
                tokio::time::sleep(Duration::from_secs(1)).await;
                let n = done.load(Ordering::Relaxed);
                eprint!(
                    "\r  {:>4.0}s  {n:>9} answered  {:>8}/s   ",
                    started.elapsed().as_secs_f64(),
                    n - last
                );
                last = n;
            }
            eprintln!();
        })
    };

    let open_rate = (args.model == Model::Open).then_some(args.rate.max(1) as f64);
    let workers: Vec<_> = (0..args.connections.max(1))
        .map(|_| {
            let (plan, next, done) = (plan.clone(), next.clone(), done.clone());
            let mut conn = Conn::new(authority.clone());
            tokio::spawn(async move {
                let mut hist =
                    Histogram::<u64>::new_with_bounds(1, 120_000_000, 3).expect("bounds");
                let mut tally = Tally::default();
                loop {
                    let k = next.fetch_add(1, Ordering::Relaxed);
                    let since = match open_rate {
                        None => Instant::now(),
                        Some(rate) => {
                            let due = started + Duration::from_secs_f64(k as f64 / rate);
                            if due >= deadline {
                                break;
                            }
                            if Instant::now() < due {
                                // Idle until it is due: latency runs from the
                                // actual send, as the timer's own lateness (up
                                // to a millisecond) is not the server's.
                                tokio::time::sleep_until(due.into()).await;
                                Instant::now()
                            } else {
                                // Busy past it: the wait counts.
                                due
                            }
                        }
                    };
                    if since >= deadline {
                        break;
                    }
                    let result = conn.send(plan.request(k)).await;
                    hist.saturating_record((since.elapsed().as_micros() as u64).max(1));
                    match result {
                        Ok(s) => *tally.statuses.entry(s).or_default() += 1,
                        Err(_) => tally.transport_errors += 1,
                    }
                    done.fetch_add(1, Ordering::Relaxed);
                }
                (hist, tally)
            })
        })
        .collect();
    let mut hist = Histogram::<u64>::new_with_bounds(1, 120_000_000, 3).expect("bounds");
    let mut tally = Tally::default();
    for w in workers {
        let (h, t) = w.await?;
        hist.add(&h)?;
        tally.add(t);
    }
    let elapsed = started.elapsed().as_secs_f64();
    stop.store(true, Ordering::Relaxed);
    let _ = progress.await;
    Ok((hist, tally, elapsed))
}

/// Samples (seconds since start, stored, pending) every 250 ms until it
/// sees nothing pending after `load_done` is set.
async fn sample_figures(
    c: Arc<Client>,
    plan: Arc<Plan>,
    started: Instant,
    load_done: Arc<AtomicBool>,
) -> Vec<(f64, i64, i64)> {
    let (path, field) = plan.figures();
    let mut samples = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(600);
    while Instant::now() < deadline {
        let done = load_done.load(Ordering::Relaxed);
        if let Ok((200, v)) = c.send(reqwest::Method::GET, &path, None, None).await {
            let (stored, pending) = (v[field].as_i64(), v["pending"].as_i64());
            if let (Some(stored), Some(pending)) = (stored, pending) {
                samples.push((started.elapsed().as_secs_f64(), stored, pending));
                if done && pending == 0 {
                    break;
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    samples
}

fn persistence(samples: &[(f64, i64, i64)], load_seconds: f64) -> Option<Persistence> {
    let last = samples.last()?;
    let pace = |busy: Vec<&(f64, i64, i64)>| match (busy.first(), busy.last()) {
        (Some(a), Some(b)) if b.0 > a.0 => (Some((b.1 - a.1) as f64 / (b.0 - a.0)), b.0 - a.0),
        _ => (None, 0.0),
    };
    let (backlogged_per_sec, backlogged_seconds) =
        pace(samples.iter().filter(|s| s.2 >= BACKLOG).collect());
    let after: Vec<_> = samples.iter().filter(|s| s.0 >= load_seconds).collect();
    let (drain_per_sec, _) = match after.first() {
        // A backlog of a few batches drains in a sample or two: too short to time.
        Some(first) if first.2 >= DRAIN_BACKLOG => {
            pace(after.into_iter().filter(|s| s.2 >= BACKLOG).collect())
        }
        _ => (None, 0.0),
    };
    Some(Persistence {
        backlogged_per_sec,
        backlogged_seconds,
        overall_per_sec: last.1 as f64 / last.0.max(0.001),
        max_pending: samples.iter().map(|s| s.2).max().unwrap_or(0),
        drain_seconds: (last.0 - load_seconds).max(0.0),
        drain_per_sec,
    })
}

fn inv(name: &str, ok: bool, detail: String) -> Invariant {
    Invariant {
        name: name.into(),
        ok,
        detail,
    }
}

/// Waits until nothing is pending; returns the final figures.
async fn drained(c: &Client, path: &str) -> anyhow::Result<Value> {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let (s, v) = c.send(reqwest::Method::GET, path, None, None).await?;
        if s != 200 {
            bail!("{path} answered {s}: {v}");
        }
        if v["pending"].as_i64() == Some(0) || Instant::now() > deadline {
            return Ok(v);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn check(
    c: &Client,
    plan: &Plan,
    tally: &Tally,
    quota: i64,
) -> anyhow::Result<Vec<Invariant>> {
    let ok2xx: u64 = tally
        .statuses
        .iter()
        .filter(|(s, _)| (200..300).contains(*s))
        .map(|(_, n)| n)
        .sum();
    let sold_out = tally.statuses.get(&410).copied().unwrap_or(0);
    let server_errors: u64 = tally
        .statuses
        .iter()
        .filter(|(s, _)| **s >= 500)
        .map(|(_, n)| n)
        .sum();
    let mut out = vec![inv(
        "no 5xx, no transport errors",
        server_errors == 0 && tally.transport_errors == 0,
        format!(
            "{server_errors} 5xx, {} transport errors",
            tally.transport_errors
        ),
    )];
    match plan.scenario {
        Scenario::CouponV1
        | Scenario::CouponV2
        | Scenario::CouponV3
        | Scenario::TimesaleV1
        | Scenario::TimesaleV2
        | Scenario::TimesaleV3 => {
            // Coupons say issued of a quota, sales sold of a stock.
            let (path, taken_field) = plan.figures();
            let limit_name = if plan.key_is_campaign() {
                "quota"
            } else {
                "stock"
            };
            let v = drained(c, &path).await?;
            let taken = v[taken_field].as_i64().unwrap_or(-1);
            let remaining = v["remaining"].as_i64().unwrap_or(-1);
            out.push(inv(
                "drained",
                v["pending"] == 0,
                format!("pending {}", v["pending"]),
            ));
            out.push(inv(
                "every 2xx was taken once",
                taken == ok2xx as i64,
                format!("{taken_field} {taken}, 2xx {ok2xx}"),
            ));
            out.push(inv(
                &format!("{taken_field} + remaining = {limit_name}"),
                taken <= quota && taken + remaining == quota,
                format!("{taken_field} {taken} remaining {remaining} {limit_name} {quota}"),
            ));
            if sold_out > 0 {
                out.push(inv(
                    &format!("demand exceeded {limit_name} → all of it taken"),
                    taken == quota,
                    format!("{taken_field} {taken}"),
                ));
            }
        }
        Scenario::PointsEarn | Scenario::PointsUse => {
            let mut moved = 0i64;
            for n in 0..POINT_USERS {
                let u = plan.point_user(n);
                let (s, v) = c
                    .send(
                        reqwest::Method::GET,
                        &format!("/users/{u}/points"),
                        None,
                        None,
                    )
                    .await?;
                if s != 200 {
                    bail!("balance of {u} answered {s}");
                }
                let b = v["balance"].as_i64().unwrap_or(0);
                moved += if plan.scenario == Scenario::PointsEarn {
                    b
                } else {
                    POINT_SEED - b
                };
            }
            out.push(inv(
                "Σ balance change = successful operations",
                moved == ok2xx as i64,
                format!("moved {moved}, 2xx {ok2xx}"),
            ));
        }
        Scenario::Ceiling | Scenario::PointsBalance => {
            let total: u64 = tally.statuses.values().sum();
            out.push(inv(
                "every answer 200",
                tally.statuses.get(&200) == Some(&total),
                format!("{:?}", tally.statuses),
            ));
        }
    }
    Ok(out)
}

fn ms(us: u64) -> f64 {
    us as f64 / 1000.0
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(args.connections.max(64))
        .timeout(Duration::from_secs(30))
        .build()?;
    let client = Arc::new(Client {
        http,
        base: args.target.trim_end_matches('/').to_string(),
        admin_token: args.admin_token.clone(),
    });
    let run = uuid::Uuid::new_v4().simple().to_string()[..10].to_string();
    let key = setup(&client, args.scenario, &run, args.quota)
        .await
        .with_context(|| format!("setting up {:?} against {}", args.scenario, args.target))?;
    let plan = Arc::new(Plan {
        scenario: args.scenario,
        run,
        key,
    });
    eprintln!(
        "{:?} {}: {:?} model, {} for {} s",
        args.scenario,
        args.label,
        args.model,
        match args.model {
            Model::Closed => format!("{} connections", args.connections),
            Model::Open => format!("{}/s", args.rate),
        },
        args.seconds
    );
    let load_done = Arc::new(AtomicBool::new(false));
    let sampler = plan.is_queued().then(|| {
        tokio::spawn(sample_figures(
            client.clone(),
            plan.clone(),
            Instant::now(),
            load_done.clone(),
        ))
    });
    let (hist, tally, elapsed) = run_load(plan.clone(), &args).await?;
    load_done.store(true, Ordering::Relaxed);
    let invariants = check(&client, &plan, &tally, args.quota).await?;
    let persistence = match sampler {
        Some(s) => persistence(&s.await?, elapsed),
        None => None,
    };
    let requests = hist.len();
    let report = Report {
        scenario: args.scenario,
        label: args.label.clone(),
        model: args.model,
        connections: (args.model == Model::Closed).then_some(args.connections),
        rate: (args.model == Model::Open).then_some(args.rate),
        seconds: elapsed,
        requests,
        achieved_per_sec: requests as f64 / elapsed,
        statuses: tally.statuses.clone(),
        transport_errors: tally.transport_errors,
        p50_ms: ms(hist.value_at_quantile(0.5)),
        p99_ms: ms(hist.value_at_quantile(0.99)),
        p999_ms: ms(hist.value_at_quantile(0.999)),
        max_ms: ms(hist.max()),
        persistence,
        invariants,
    };
    println!(
        "{:<15} {:<9} {:>10.0}/s  p50 {:>7.2} ms  p99 {:>7.2} ms  p99.9 {:>7.2} ms  max {:>7.1} ms  {:?}",
        format!("{:?}", report.scenario),
        report.label,
        report.achieved_per_sec,
        report.p50_ms,
        report.p99_ms,
        report.p999_ms,
        report.max_ms,
        report.statuses
    );
    if let Some(p) = &report.persistence {
        println!(
            "    consumer: {} rows/s while ≥{BACKLOG} pending ({:.1} s), {:.0} rows/s overall, max pending {}, drained {:.1} s after the load ({} rows/s alone)",
            p.backlogged_per_sec.map_or("–".into(), |r| format!("{r:.0}")),
            p.backlogged_seconds,
            p.overall_per_sec,
            p.max_pending,
            p.drain_seconds,
            p.drain_per_sec.map_or("–".into(), |r| format!("{r:.0}")),
        );
    }
    for i in &report.invariants {
        println!(
            "    {} {}: {}",
            if i.ok { "ok  " } else { "FAIL" },
            i.name,
            i.detail
        );
    }
    if let Some(path) = &args.json {
        std::fs::write(path, serde_json::to_string_pretty(&report)?)
            .with_context(|| format!("writing {}", path.display()))?;
    }
    if report.invariants.iter().any(|i| !i.ok) {
        bail!("an invariant failed");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn consumer_pace_while_backlogged_and_alone() {
        // (seconds, stored, pending): the load ends at 2.0 s.
        let samples = [
            (0.5, 500, 200),
            (1.0, 1_000, 2_000),
            (2.0, 3_000, 16_000),
            (2.5, 5_000, 14_000),
            (3.0, 8_000, 1_000),
            (3.25, 9_000, 0),
        ];
        let p = persistence(&samples, 2.0).unwrap();
        assert_eq!(p.backlogged_per_sec, Some(7_000.0 / 2.0));
        assert_eq!(p.backlogged_seconds, 2.0);
        assert_eq!(p.drain_per_sec, Some(5_000.0 / 1.0));
        assert_eq!(p.max_pending, 16_000);
        assert_eq!(p.drain_seconds, 1.25);
        assert_eq!(p.overall_per_sec, 9_000.0 / 3.25);
    }

    #[test]
    fn a_short_drain_is_not_timed() {
        let samples = [(1.0, 1_000, 5_000), (1.25, 4_000, 2_000), (1.5, 6_000, 0)];
        let p = persistence(&samples, 1.0).unwrap();
        assert_eq!(p.drain_per_sec, None, "5,000 pending is a batch or two");
        assert!(p.backlogged_per_sec.is_some());
    }

    #[test]
    fn no_pace_without_a_backlog() {
        let p = persistence(&[(0.5, 10, 5), (1.0, 20, 0)], 1.0).unwrap();
        assert_eq!(p.backlogged_per_sec, None);
        assert_eq!(p.drain_per_sec, None);
        assert!(persistence(&[], 1.0).is_none());
    }
}
