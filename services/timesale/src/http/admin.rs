//! `PUT /admin/time-sales/{sale}`.

use std::sync::Arc;

use axum::{extract::State, http::StatusCode, routing::put, Json, Router};
use promo_platform::http::{ApiError, ApiJson, ApiPath};

use super::sales::{view, SaleView};
use crate::{domain::SaleSpec, TimesaleService};

pub fn router() -> Router<Arc<TimesaleService>> {
    Router::new().route("/admin/time-sales/{sale}", put(put_sale))
}

/// Create or update a sale (its product, price, stock, limit, window, strategy).
#[utoipa::path(put, path = "/admin/time-sales/{sale}", tag = "timesale",
    params(("sale" = String, Path, description = "Sale id")),
    request_body = SaleSpec,
    responses(
        (status = 201, description = "Created", body = SaleView),
        (status = 200, description = "Updated", body = SaleView),
        (status = 409, description = "stock_below_sold"),
        (status = 422, description = "invalid_sale"),
    ),
    security(("admin_token" = [])))]
pub async fn put_sale(
    State(svc): State<Arc<TimesaleService>>,
    ApiPath(id): ApiPath<String>,
    ApiJson(spec): ApiJson<SaleSpec>,
) -> Result<(StatusCode, Json<SaleView>), ApiError> {
    let (stored, created) = svc.core.upsert(&id, &spec).await?;
    let status = if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((status, Json(view(&svc, stored).await?)))
}
