//! The time-sale service's HTTP API (docs/api.md, "Time-sale service").

mod admin;
mod orders;
mod sales;

use std::sync::Arc;

use axum::Router;
use promo_platform::http::{
    auth::AdminToken,
    idempotency::{with_keys, Idempotency},
    ApiError,
};
use utoipa::OpenApi;

use crate::{domain::TimesaleError, TimesaleService};

pub use sales::SaleView;

/// All routes of the service (without `/metrics`, health and docs, which
/// the process adds once).
pub fn router(svc: Arc<TimesaleService>, admin_token: AdminToken) -> Router {
    let idem =
        Idempotency::new(svc.core.db.clone()).with_lease(svc.core.settings.idempotency_lease);
    let public = sales::router().merge(orders::router());
    with_keys(idem, admin_token, admin::router(), public).with_state(svc)
}

#[derive(OpenApi)]
#[openapi(
    info(title = "Time-sale service", description = "Flash-sale ordering (V1 optimistic database, V2 Redis stock, V3 queued), order status, holds confirmed by payment or expiring, and cancel with restock."),
    paths(
        admin::put_sale,
        sales::list_sales, sales::get_sale,
        orders::order_default, orders::order_v1, orders::order_v2, orders::order_v3,
        orders::get_order, orders::cancel_order, orders::confirm_order,
    ),
    components(schemas(
        crate::domain::SaleSpec, crate::domain::Product, crate::domain::Strategy,
        crate::domain::Order, crate::domain::OrderStatus,
        sales::SaleView, orders::OrderBody, orders::Accepted, orders::ConfirmBody,
    )),
    tags((name = "timesale", description = "Time sales, orders and cancellation"))
)]
pub struct ApiDoc;

pub fn openapi() -> utoipa::openapi::OpenApi {
    let mut doc = ApiDoc::openapi();
    promo_platform::http::idempotency::document(&mut doc);
    doc
}

impl From<TimesaleError> for ApiError {
    fn from(e: TimesaleError) -> Self {
        let d = e.to_string();
        match e {
            TimesaleError::UnknownSale(_) => ApiError::not_found("sale_not_found", d),
            TimesaleError::UnknownOrder(_) => ApiError::not_found("order_not_found", d),
            TimesaleError::SoldOut(_) => ApiError::gone("sold_out", d),
            TimesaleError::LimitExceeded(_) => ApiError::conflict("limit_exceeded", d),
            TimesaleError::NotActive(_) => ApiError::unprocessable("not_active", d),
            TimesaleError::InvalidQuantity(_) => ApiError::unprocessable("invalid_quantity", d),
            TimesaleError::InvalidSale(_) => ApiError::unprocessable("invalid_sale", d),
            TimesaleError::StockBelowSold { .. } => ApiError::conflict("stock_below_sold", d),
            TimesaleError::NotCancellable(_) => ApiError::conflict("not_cancellable", d),
            TimesaleError::NotHeld(_) => ApiError::conflict("not_held", d),
            TimesaleError::AlreadyConfirmed(_) => ApiError::conflict("already_confirmed", d),
            TimesaleError::HoldExpired(_) => ApiError::conflict("hold_expired", d),
            TimesaleError::InvalidPaymentRef(_) => {
                ApiError::unprocessable("invalid_payment_ref", d)
            }
            TimesaleError::CountersRebuilding => {
                ApiError::unavailable("counters_unavailable", d, 1)
            }
            TimesaleError::Stopped(_) => ApiError::unavailable("unavailable", d, 1),
            TimesaleError::Unsettled => ApiError::conflict("idempotency_in_progress", d),
            TimesaleError::Sql(e) => e.into(),
            TimesaleError::Counters(e) => e.into(),
            TimesaleError::Queue(e) => e.into(),
        }
    }
}
