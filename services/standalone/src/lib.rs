//! `promo standalone`: every service built so far in one process on one
//! address, with their consumers in-process, and Promotion manifests loaded
//! from a folder through the same admin request the operator sends.

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    sync::Arc,
};

use clap::Args;
use coupon_service::{config::CouponArgs, domain::CampaignSpec, CouponService};
use point_service::{config::PointArgs, PointService};
use promo_platform::{
    config::{BackendArgs, Backends},
    http::{auth::AdminToken, server},
    metrics::Metrics,
    service::{self, Service, ServiceArgs},
};
use promotion_crd::{parse_manifests, PromotionType};
use timesale_service::{config::TimesaleArgs, domain::SaleSpec, TimesaleService};
use tokio_util::sync::CancellationToken;

#[derive(Args, Debug, Clone)]
pub struct StandaloneArgs {
    /// Address to serve every service on.
    #[arg(long, env = "PROMO_LISTEN", default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,
    /// Bearer token for /admin routes. Unset: admin routes are open (local use).
    #[arg(long, env = "PROMO_ADMIN_TOKEN")]
    pub admin_token: Option<String>,
    /// Generate an admin token and print it at start-up.
    #[arg(long, conflicts_with = "admin_token")]
    pub generate_admin_token: bool,
    /// Folder of Promotion manifests (*.yaml) to register at start-up.
    #[arg(long, env = "PROMO_PROMOTIONS", default_value = "examples/promotions")]
    pub promotions: PathBuf,
    #[command(flatten)]
    pub backends: BackendArgs,
    #[command(flatten)]
    pub http: server::HttpArgs,
    #[command(flatten)]
    pub coupon: CouponArgs,
    #[command(flatten)]
    pub timesale: TimesaleArgs,
    #[command(flatten)]
    pub point: PointArgs,
}

/// The services this process hosts.
pub struct Hosted {
    pub coupons: Arc<CouponService>,
    pub timesales: Arc<TimesaleService>,
}

impl Hosted {
    /// Registers one checked Promotion with its service, as the operator's
    /// admin PUT would; returns whether it was created.
    async fn register(&self, checked: &promotion_crd::Checked) -> Result<bool, String> {
        let request = checked.admin_request();
        match request.service {
            PromotionType::Coupon => {
                let spec: CampaignSpec =
                    serde_json::from_value(request.body).map_err(|e| e.to_string())?;
                let (_, created) = self
                    .coupons
                    .core
                    .upsert(&checked.name, &spec)
                    .await
                    .map_err(|e| e.to_string())?;
                Ok(created)
            }
            PromotionType::TimeSale => {
                let spec: SaleSpec =
                    serde_json::from_value(request.body).map_err(|e| e.to_string())?;
                let (_, created) = self
                    .timesales
                    .core
                    .upsert(&checked.name, &spec)
                    .await
                    .map_err(|e| e.to_string())?;
                Ok(created)
            }
        }
    }
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// What loading a folder of manifests did.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Loaded {
    pub registered: Vec<String>,
    pub failed: Vec<String>,
}

/// Registers every Promotion under `dir`. A bad manifest is reported and
/// skipped, as the operator marks it Failed, so one typo does not keep the
/// rest from loading.
pub async fn load_promotions(dir: &Path, hosted: &Hosted) -> Result<Loaded, BoxError> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| {
            format!(
                "cannot read promotions folder {}: {e} (set --promotions)",
                dir.display()
            )
        })?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| matches!(p.extension().and_then(|e| e.to_str()), Some("yaml" | "yml")))
        .collect();
    files.sort();
    let mut loaded = Loaded::default();
    for file in files {
        let text = std::fs::read_to_string(&file)?;
        let promotions = match parse_manifests(&text) {
            Ok(p) => p,
            Err(e) => {
                tracing::error!(file = %file.display(), error = %e, "not a valid Promotion manifest");
                loaded.failed.push(file.display().to_string());
                continue;
            }
        };
        for p in promotions {
            let label = format!(
                "{}:{}",
                file.display(),
                p.metadata.name.as_deref().unwrap_or("?")
            );
            let checked = match p.validate() {
                Ok(c) => c,
                Err(e) => {
                    tracing::error!(promotion = %label, error = %e, "invalid Promotion");
                    loaded.failed.push(label);
                    continue;
                }
            };
            match hosted.register(&checked).await {
                Ok(created) => {
                    tracing::info!(promotion = %checked.name, kind = ?checked.spec.kind, created, "promotion registered");
                    loaded.registered.push(checked.name);
                }
                Err(e) => {
                    tracing::error!(promotion = %label, error = %e, "registration refused");
                    loaded.failed.push(label);
                }
            }
        }
    }
    Ok(loaded)
}

pub async fn standalone(args: StandaloneArgs) -> Result<(), BoxError> {
    let backends = Backends::connect(&args.backends).await?;
    tracing::info!(backends = %backends.describe(), "promo standalone starting");
    let metrics = Metrics::new();
    let hosted = Hosted {
        coupons: CouponService::start(&backends, metrics.clone(), args.coupon.settings()).await?,
        timesales: TimesaleService::start(&backends, metrics.clone(), args.timesale.settings())
            .await?,
    };
    let points = PointService::start(&backends, metrics.clone(), args.point.settings()).await?;

    let token = match (&args.admin_token, args.generate_admin_token) {
        (Some(t), _) => Some(t.clone()),
        (None, true) => {
            let t = uuid::Uuid::new_v4().simple().to_string();
            println!("admin token (send as Authorization: Bearer …): {t}");
            Some(t)
        }
        (None, false) => None,
    };
    if token.is_none() {
        tracing::warn!(
            "no admin token: /admin routes are open (use --admin-token or --generate-admin-token)"
        );
    }

    if args.promotions.is_dir() {
        let loaded = load_promotions(&args.promotions, &hosted).await?;
        tracing::info!(
            folder = %args.promotions.display(),
            registered = loaded.registered.len(),
            failed = loaded.failed.len(),
            "promotions loaded"
        );
    } else {
        tracing::warn!(folder = %args.promotions.display(), "no promotions folder; starting with none");
    }

    let shutdown = CancellationToken::new();
    server::cancel_on_signal(shutdown.clone());
    service::spawn_background(&hosted.coupons, true, shutdown.clone());
    service::spawn_background(&hosted.timesales, true, shutdown.clone());
    service::spawn_background(&points, true, shutdown.clone());
    let token = AdminToken(token.map(Into::into));
    let app = server::assemble(
        vec![
            service::parts(&hosted.coupons, token.clone(), true),
            service::parts(&hosted.timesales, token.clone(), true),
            service::parts(&points, token, true),
        ],
        metrics,
    );
    let listener = server::bind(args.listen).await?;
    println!(
        "promo standalone serving on http://{} — Swagger UI: http://{}/api/docs",
        args.listen, args.listen
    );
    server::serve_with(listener, app, shutdown, args.http.limits()).await?;
    Ok(())
}
