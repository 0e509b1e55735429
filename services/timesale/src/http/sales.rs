//! `GET /time-sales`, `GET /time-sales/{sale}`.

use std::sync::Arc;

use axum::{extract::State, routing::get, Json, Router};
use chrono::Utc;
use promo_platform::{
    http::{ApiError, ApiPath},
    time::to_ms,
};
use serde::Serialize;
use utoipa::ToSchema;

use crate::{
    domain::{Sale, SaleSpec, TimesaleError},
    store, TimesaleService,
};

pub fn router() -> Router<Arc<TimesaleService>> {
    Router::new()
        .route("/time-sales", get(list_sales))
        .route("/time-sales/{sale}", get(get_sale))
}

/// A sale's specification with its live figures.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct SaleView {
    pub sale: String,
    #[serde(flatten)]
    pub spec: SaleSpec,
    /// Units sold (confirmed or held), persisted.
    pub sold: i64,
    /// The part of `sold` held for payment.
    pub held: i64,
    /// Units still available.
    pub remaining: i64,
    /// Units admitted (V3), not yet persisted.
    pub pending: i64,
}

pub(crate) async fn view(svc: &TimesaleService, s: Sale) -> Result<SaleView, ApiError> {
    let (remaining, pending) = svc.core.figures(&s).await?;
    Ok(SaleView {
        sale: s.id,
        spec: s.spec,
        sold: s.sold,
        held: s.held,
        remaining,
        pending,
    })
}

/// Active and upcoming sales (not yet ended), by start, with remaining.
#[utoipa::path(get, path = "/time-sales", tag = "timesale",
    responses((status = 200, body = [SaleView])))]
pub async fn list_sales(
    State(svc): State<Arc<TimesaleService>>,
) -> Result<Json<Vec<SaleView>>, ApiError> {
    let mut out = Vec::new();
    for s in store::list_sales(svc.core.db.pool(), Some(to_ms(Utc::now()))).await? {
        out.push(view(&svc, s).await?);
    }
    Ok(Json(out))
}

/// A sale with sold, remaining and pending.
#[utoipa::path(get, path = "/time-sales/{sale}", tag = "timesale",
    params(("sale" = String, Path, description = "Sale id")),
    responses((status = 200, body = SaleView), (status = 404, description = "sale_not_found")))]
pub async fn get_sale(
    State(svc): State<Arc<TimesaleService>>,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<SaleView>, ApiError> {
    let s = store::get_sale(svc.core.db.pool(), &id)
        .await?
        .ok_or_else(|| TimesaleError::UnknownSale(id.clone()))?;
    Ok(Json(view(&svc, s).await?))
}
