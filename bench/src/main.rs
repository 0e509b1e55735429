//! `promo-bench`: drives one scenario against a running `promo standalone`
//! (or the services behind one address), then checks the invariants through
//! the API and prints the figures — a table row, and JSON with `--json`.
//!
//! Closed model: `--connections` loops, each sending its next request when
//! the last one answered. Open model: `--rate` arrivals per second on a fixed
//! schedule, latency measured from each request's *intended* send time, so a
//! stalled server shows up as latency instead of being hidden by waiting
//! clients (coordinated omission).

mod check;
mod load;
mod pace;
mod scenario;

use std::{
    collections::BTreeMap,
    path::PathBuf,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

use anyhow::{bail, Context};
use clap::Parser;
use serde::Serialize;

use crate::{check::*, load::*, pace::*, scenario::*};

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
    /// Buckets of the campaign or sale (1–256): its counters and V3 events
    /// spread over this many pools and partitions.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=256))]
    buckets: u32,
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

#[derive(Debug, Serialize)]
struct Report {
    scenario: Scenario,
    label: String,
    buckets: u32,
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
    let key = setup(&client, args.scenario, &run, args.quota, args.buckets)
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
        buckets: args.buckets,
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
