//! How the time-sale service runs as a process: its
//! [`promo_platform::service::Service`], which provides `serve`,
//! `consume`, `migrate` and the pieces `promo standalone` hosts.

promo_platform::queued_service!(
    crate::TimesaleService,
    settings: crate::Settings,
    handler: crate::consumer::OrderConsumer,
    http: crate::http,
    migrations: crate::store::MIGRATIONS,
    name: crate::SERVICE,
    database: crate::DATABASE,
);
