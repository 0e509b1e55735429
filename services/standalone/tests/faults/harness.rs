//! The fault suite's tools: start and kill real processes, drive a storm of
//! admissions at one campaign or sale, and check the promises afterwards
//! through the HTTP API alone.

use std::{
    collections::HashMap,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::{
        atomic::{AtomicBool, AtomicUsize, Ordering},
        Mutex,
    },
    time::{Duration, Instant},
};

use futures::StreamExt;
use serde_json::{json, Value};

/// A process of ours, started for a fault experiment.
pub struct Proc {
    child: Child,
    pub base: String,
    pub log: PathBuf,
}

impl Proc {
    /// Starts `bin args…` with its output in `log`.
    pub fn start(
        bin: &Path,
        args: &[String],
        env: &[(&str, String)],
        port: u16,
        log: &Path,
    ) -> Proc {
        Self::start_in(bin, args, env, None, port, log)
    }

    /// [`Proc::start`] in the working folder `cwd`.
    pub fn start_in(
        bin: &Path,
        args: &[String],
        env: &[(&str, String)],
        cwd: Option<&Path>,
        port: u16,
        log: &Path,
    ) -> Proc {
        let out = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .expect("log file");
        let mut cmd = Command::new(bin);
        cmd.args(args)
            .stdin(Stdio::null())
            .stdout(out.try_clone().expect("log"))
            .stderr(out)
            .env("RUST_LOG", "info");
        for (k, v) in env {
            cmd.env(k, v);
        }
        if let Some(dir) = cwd {
            cmd.current_dir(dir);
        }
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("start {}: {e}", bin.display()));
        Proc {
            child,
            base: format!("http://127.0.0.1:{port}"),
            log: log.to_path_buf(),
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// kill -9, and waits until it is gone.
    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGTERM, and waits (up to `within`) for it to finish shutting down.
    pub fn terminate(&mut self, within: Duration) -> bool {
        let _ = Command::new("kill")
            .args(["-TERM", &self.pid().to_string()])
            .status();
        let deadline = Instant::now() + within;
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        self.kill9();
        false
    }

    /// Waits until `/healthz` answers.
    pub async fn ready(&mut self, client: &reqwest::Client, within: Duration) {
        let deadline = Instant::now() + within;
        loop {
            if let Ok(r) = client.get(format!("{}/healthz", self.base)).send().await {
                if r.status().is_success() {
                    return;
                }
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("{} exited ({status}); log: {}", self.base, tail(&self.log));
            }
            assert!(
                Instant::now() < deadline,
                "not healthy in time; log: {}",
                tail(&self.log)
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// The last lines of a log, for failure messages.
pub fn tail(log: &Path) -> String {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(30)..].join("\n")
}

/// A loopback port nobody listens on now.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .pool_max_idle_per_host(64)
        .build()
        .expect("client")
}

/// What is being bought: coupons from a campaign or units of a sale.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Coupon,
    TimeSale,
}

/// One acknowledged request: its id, user and units.
#[derive(Debug, Clone)]
pub struct Ack {
    pub id: String,
    pub user: String,
    pub units: i64,
}

impl Kind {
    pub fn label(self) -> &'static str {
        match self {
            Kind::Coupon => "coupon V3",
            Kind::TimeSale => "time-sale V3",
        }
    }

    /// Units user `i` asks for (time sales: 1–3).
    pub fn units(self, i: usize) -> i64 {
        match self {
            Kind::Coupon => 1,
            Kind::TimeSale => 1 + (i % 3) as i64,
        }
    }

    /// Creates campaign or sale `id` with `limit` units over `buckets`
    /// buckets, open now, queued.
    pub async fn create(
        self,
        client: &reqwest::Client,
        base: &str,
        id: &str,
        (limit, per_user, buckets): (i64, i64, u32),
    ) {
        let now = open_window();
        let (path, body) = match self {
            Kind::Coupon => (
                format!("{base}/admin/campaigns/{id}"),
                json!({"quota": limit, "perUserLimit": per_user, "startsAt": now.0, "endsAt": now.1,
                       "strategy": "QUEUED", "discount": {"kind": "FIXED", "value": 1000},
                       "buckets": buckets}),
            ),
            Kind::TimeSale => (
                format!("{base}/admin/time-sales/{id}"),
                json!({"product": {"sku": "SKU-F", "name": "Fault", "price": 1000}, "salePrice": 500,
                       "stock": limit, "perUserLimit": per_user, "startsAt": now.0, "endsAt": now.1,
                       "strategy": "QUEUED", "buckets": buckets}),
            ),
        };
        let r = client.put(path).json(&body).send().await.expect("create");
        assert!(r.status().is_success(), "create {id}: {}", r.status());
    }

    fn attempt_path(self, base: &str, id: &str) -> String {
        match self {
            Kind::Coupon => format!("{base}/v3/campaigns/{id}/issue"),
            Kind::TimeSale => format!("{base}/v3/time-sales/{id}/orders"),
        }
    }

    /// (persisted, remaining, pending) of campaign or sale `id`.
    pub async fn figures(self, client: &reqwest::Client, base: &str, id: &str) -> (i64, i64, i64) {
        let (url, persisted) = match self {
            Kind::Coupon => (format!("{base}/admin/campaigns/{id}"), "issued"),
            Kind::TimeSale => (format!("{base}/time-sales/{id}"), "sold"),
        };
        let v: Value = client
            .get(url)
            .send()
            .await
            .expect("figures")
            .json()
            .await
            .expect("json");
        let n = |k: &str| v[k].as_i64().unwrap_or_else(|| panic!("{k} in {v}"));
        (n(persisted), n("remaining"), n("pending"))
    }

    /// The final status of acknowledged request `id`: `Some((granted, units))`
    /// once decided (granted = ISSUED / CONFIRMED), `None` while PENDING or
    /// unreadable; a 404 (an acknowledged request the service does not
    /// know) is counted in `not_found`.
    async fn decided(
        self,
        client: &reqwest::Client,
        base: &str,
        id: &str,
        not_found: &AtomicUsize,
    ) -> Option<(bool, i64)> {
        let url = match self {
            Kind::Coupon => format!("{base}/issue-requests/{id}"),
            Kind::TimeSale => format!("{base}/orders/{id}"),
        };
        let r = client.get(url).send().await.ok()?;
        if r.status().as_u16() == 404 {
            not_found.fetch_add(1, Ordering::Relaxed);
        }
        if !r.status().is_success() {
            return None;
        }
        let v: Value = r.json().await.ok()?;
        match v["status"].as_str()? {
            "ISSUED" => Some((true, 1)),
            "CONFIRMED" => Some((true, v["quantity"].as_i64().unwrap_or(0))),
            "REJECTED" => Some((false, 0)),
            _ => None,
        }
    }
}

/// RFC 3339 start and end of a window open from an hour ago for a day.
fn open_window() -> (String, String) {
    let now = chrono::Utc::now();
    (
        (now - chrono::Duration::hours(1)).to_rfc3339(),
        (now + chrono::Duration::days(1)).to_rfc3339(),
    )
}

/// What a storm saw.
#[derive(Default)]
pub struct Seen {
    pub acks: Vec<Ack>,
    /// Users whose request got no answer (the process died under it).
    pub unanswered: Vec<usize>,
    pub refused: usize,
    /// Refusals because the user already holds what they may
    /// (`already_issued`, `limit_exceeded`). Every user sends one request,
    /// retried with its Idempotency-Key, so each of these is a retry that
    /// was taken for a second request.
    pub duplicates: usize,
    /// Requests that met the claim of a run that died unanswered (409
    /// `idempotency_in_progress`) before their answer.
    pub waited_for_lease: usize,
    /// When the first request was acknowledged.
    pub first_ack: Option<Instant>,
    /// When each request was acknowledged.
    pub ack_times: Vec<Instant>,
}

/// Sends one admission per user in `users` (`concurrency` at a time), each
/// with an Idempotency-Key of its own (the same in every phase), retrying
/// 503s and 409 `idempotency_in_progress` (a claim of a run that died, until
/// its lease ends); stops sending once a connection fails (the process is
/// down) and lists the users left. `on_ack` sees the running count of
/// acknowledgements.
pub async fn storm(
    kind: Kind,
    client: &reqwest::Client,
    base: &str,
    id: &str,
    users: Vec<usize>,
    concurrency: usize,
    on_ack: impl Fn(usize) + Send + Sync,
) -> Seen {
    let seen = Mutex::new(Seen::default());
    let down = AtomicBool::new(false);
    let acked = AtomicUsize::new(0);
    let url = kind.attempt_path(base, id);
    futures::stream::iter(users)
        .for_each_concurrent(concurrency, |i| {
            let (seen, down, acked, url, on_ack) = (&seen, &down, &acked, &url, &on_ack);
            async move {
                let user = format!("user-{i}");
                let body = match kind {
                    Kind::Coupon => json!({"userId": user}),
                    Kind::TimeSale => json!({"userId": user, "quantity": kind.units(i)}),
                };
                let key = format!("{id}-{user}");
                let deadline = Instant::now() + Duration::from_secs(60);
                let mut waited = false;
                loop {
                    if down.load(Ordering::Relaxed) {
                        lock(seen).unanswered.push(i);
                        return;
                    }
                    let answer = client
                        .post(url)
                        .header("Idempotency-Key", &key)
                        .json(&body)
                        .send()
                        .await;
                    let r = match answer {
                        Ok(r) => r,
                        Err(_) => {
                            down.store(true, Ordering::Relaxed);
                            lock(seen).unanswered.push(i);
                            return;
                        }
                    };
                    let status = r.status().as_u16();
                    if status == 503 && Instant::now() < deadline {
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                    let v: Value = match r.json().await {
                        Ok(v) => v,
                        Err(_) => {
                            // The answer was cut off: not an acknowledgement.
                            down.store(true, Ordering::Relaxed);
                            lock(seen).unanswered.push(i);
                            return;
                        }
                    };
                    let code = v["code"].as_str().unwrap_or_default();
                    if code == "idempotency_in_progress" && Instant::now() < deadline {
                        if !std::mem::replace(&mut waited, true) {
                            lock(seen).waited_for_lease += 1;
                        }
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                    let mut s = lock(seen);
                    if status == 202 {
                        let ack_id = v["requestId"].as_str().or(v["orderId"].as_str());
                        s.acks.push(Ack {
                            id: ack_id.expect("202 names its request").to_string(),
                            user,
                            units: kind.units(i),
                        });
                        s.first_ack.get_or_insert_with(Instant::now);
                        s.ack_times.push(Instant::now());
                        drop(s);
                        on_ack(acked.fetch_add(1, Ordering::Relaxed) + 1);
                    } else {
                        assert!(
                            matches!(status, 409 | 410),
                            "unexpected answer {status}: {v}"
                        );
                        s.refused += 1;
                        if matches!(code, "already_issued" | "limit_exceeded") {
                            s.duplicates += 1;
                        }
                    }
                    return;
                }
            }
        })
        .await;
    seen.into_inner().unwrap_or_else(|p| p.into_inner())
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Waits (up to `within`) until every acknowledged request is decided;
/// returns (granted units per user, acknowledged requests never decided).
pub async fn settle(
    kind: Kind,
    client: &reqwest::Client,
    base: &str,
    acks: &[Ack],
    within: Duration,
) -> (HashMap<String, i64>, Vec<Ack>) {
    let not_found = AtomicUsize::new(0);
    settle_counting(kind, client, base, acks, within, &not_found).await
}

/// [`settle`], counting the reads that answered 404 in `not_found`.
pub async fn settle_counting(
    kind: Kind,
    client: &reqwest::Client,
    base: &str,
    acks: &[Ack],
    within: Duration,
    not_found: &AtomicUsize,
) -> (HashMap<String, i64>, Vec<Ack>) {
    let deadline = Instant::now() + within;
    let mut open: Vec<Ack> = acks.to_vec();
    let mut granted: HashMap<String, i64> = HashMap::new();
    while !open.is_empty() {
        let checks: Vec<Option<(bool, i64)>> = futures::stream::iter(open.iter())
            .map(|a| kind.decided(client, base, &a.id, not_found))
            .buffered(32)
            .collect()
            .await;
        let mut still = Vec::new();
        for (a, d) in open.into_iter().zip(checks) {
            match d {
                Some((true, units)) => {
                    assert_eq!(units, a.units, "{} granted other units", a.id);
                    *granted.entry(a.user.clone()).or_default() += units;
                }
                Some((false, _)) => {}
                None => still.push(a),
            }
        }
        open = still;
        if open.is_empty() || Instant::now() >= deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    (granted, open)
}

/// One line of the fault table.
pub struct Row {
    pub scenario: String,
    pub acknowledged: usize,
    pub lost: usize,
    pub persisted: i64,
    pub limit: i64,
    pub over_limit: usize,
    pub admits_again_after: Duration,
    pub all_decided_after: Duration,
}

impl Row {
    pub fn print(&self) {
        println!(
            "| {:<56} | {:>6} | {:>4} | {:>6} / {:<6} | {:>4} | {:>6.1} s | {:>6.1} s |",
            self.scenario,
            self.acknowledged,
            self.lost,
            self.persisted,
            self.limit,
            self.over_limit,
            self.admits_again_after.as_secs_f64(),
            self.all_decided_after.as_secs_f64(),
        );
    }

    pub fn header() {
        println!(
            "| {:<56} | {:>6} | {:>4} | {:^15} | {:>4} | {:>8} | {:>8} |",
            "fault", "acked", "lost", "persisted/limit", "over", "admits", "decided"
        );
        println!(
            "|{:-<58}|{:-<8}|{:-<6}|{:-<17}|{:-<6}|{:-<10}|{:-<10}|",
            "", "", "", "", "", "", ""
        );
    }
}

/// Shared by every scenario's end: nothing lost, nobody over their limit,
/// exactly the limit persisted (demand exceeded it), nothing left pending.
pub fn assert_exact(row: &Row, remaining: i64, pending: i64, undecided: &[Ack]) {
    row.print();
    assert!(
        undecided.is_empty(),
        "{}: {} acknowledged requests never decided, e.g. {:?}",
        row.scenario,
        undecided.len(),
        &undecided[..undecided.len().min(5)]
    );
    assert_eq!(
        row.over_limit, 0,
        "{}: users over their limit",
        row.scenario
    );
    assert_eq!(
        (row.persisted, remaining, pending),
        (row.limit, 0, 0),
        "{}: persisted/remaining/pending",
        row.scenario
    );
}
