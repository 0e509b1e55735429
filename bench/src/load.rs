//! The load: keep-alive HTTP/1.1 connections driven in the closed or the
//! open model, latencies into a histogram, answers tallied by status.

use std::{
    collections::BTreeMap,
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

use anyhow::Context;
use bytes::Bytes;
use hdrhistogram::Histogram;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;

use crate::{scenario::*, Args};

#[derive(Default)]
pub(crate) struct Tally {
    pub(crate) statuses: BTreeMap<u16, u64>,
    pub(crate) transport_errors: u64,
}

impl Tally {
    pub(crate) fn add(&mut self, other: Tally) {
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
pub(crate) struct Conn {
    pub(crate) authority: Arc<str>,
    pub(crate) send: Option<SendRequest<Full<Bytes>>>,
}

impl Conn {
    pub(crate) fn new(authority: Arc<str>) -> Self {
        Self {
            authority,
            send: None,
        }
    }

    pub(crate) async fn open(&self) -> anyhow::Result<SendRequest<Full<Bytes>>> {
        let tcp = tokio::net::TcpStream::connect(&*self.authority).await?;
        tcp.set_nodelay(true)?;
        let (send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp)).await?;
        tokio::spawn(conn);
        Ok(send)
    }

    /// Sends `r`, reads the whole answer, returns its status.
    pub(crate) async fn send(&mut self, r: Req) -> anyhow::Result<u16> {
        if self.send.is_none() {
            self.send = Some(self.open().await?);
        }
        let result = self.exchange(r).await;
        if result.is_err() {
            self.send = None;
        }
        result
    }

    pub(crate) async fn exchange(&mut self, r: Req) -> anyhow::Result<u16> {
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
pub(crate) fn authority(target: &str) -> anyhow::Result<Arc<str>> {
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
pub(crate) async fn run_load(
    plan: Arc<Plan>,
    args: &Args,
) -> anyhow::Result<(Histogram<u64>, Tally, f64)> {
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
