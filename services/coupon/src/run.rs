//! How the coupon service runs as a process: its
//! [`promo_platform::service::Service`], which provides `serve`,
//! `consume`, `migrate` and the pieces `promo standalone` hosts.

promo_platform::queued_service!(
    crate::CouponService,
    settings: crate::Settings,
    handler: crate::consumer::IssueConsumer,
    http: crate::http,
    migrations: crate::store::MIGRATIONS,
    name: crate::SERVICE,
    database: crate::DATABASE,
);
