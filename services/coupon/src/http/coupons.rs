//! A user's coupons, redemption and its cancellation.

use std::sync::Arc;

use axum::{
    extract::State,
    routing::{get, post},
    Json, Router,
};
use chrono::Utc;
use promo_platform::{
    http::{
        page::{page, PageQuery},
        ApiError, ApiJson, ApiPath, ApiQuery,
    },
    ids::check_id,
};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::{
    domain::{discount::MAX_AMOUNT, redeem::Redemption, Coupon},
    store, CouponService,
};

pub fn router() -> Router<Arc<CouponService>> {
    Router::new()
        .route("/users/{userId}/coupons", get(user_coupons))
        .route("/coupons/{code}/redeem", post(redeem))
        .route("/coupons/{code}/cancel-redemption", post(cancel_redemption))
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct CouponPage {
    pub items: Vec<Coupon>,
    /// Pass as `cursor` for the next page; absent on the last page.
    pub next_cursor: Option<String>,
}

/// A user's coupons, newest first.
#[utoipa::path(get, path = "/users/{userId}/coupons", tag = "coupon",
    params(("userId" = String, Path), PageQuery),
    responses((status = 200, body = CouponPage), (status = 400, description = "invalid_query")))]
pub async fn user_coupons(
    State(svc): State<Arc<CouponService>>,
    ApiPath(user_id): ApiPath<String>,
    ApiQuery(q): ApiQuery<PageQuery>,
) -> Result<Json<CouponPage>, ApiError> {
    let (limit, cursor) = q.checked()?;
    let fetched = store::user_coupons(svc.core.db.pool(), &user_id, cursor, limit + 1).await?;
    let (items, next_cursor) = page(fetched, limit, |c| c.coupon_id.clone());
    let now = Utc::now();
    let items = items.into_iter().map(|c| c.status_at(now)).collect();
    Ok(Json(CouponPage { items, next_cursor }))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RedeemBody {
    pub user_id: String,
    pub order_id: String,
    /// Order total in minor units (> 0).
    pub order_amount: i64,
}

/// Apply a coupon to an order; the same order again answers the same.
#[utoipa::path(post, path = "/coupons/{code}/redeem", tag = "coupon",
    params(("code" = String, Path)), request_body = RedeemBody,
    responses(
        (status = 200, body = Redemption), (status = 403, description = "wrong_user"),
        (status = 404, description = "coupon_not_found"), (status = 409, description = "already_redeemed"),
        (status = 422, description = "expired / below_minimum_order / invalid_amount"),
    ))]
pub async fn redeem(
    State(svc): State<Arc<CouponService>>,
    ApiPath(code): ApiPath<String>,
    ApiJson(body): ApiJson<RedeemBody>,
) -> Result<Json<Redemption>, ApiError> {
    check_id("userId", &body.user_id)?;
    check_id("orderId", &body.order_id)?;
    if !(1..=MAX_AMOUNT).contains(&body.order_amount) {
        return Err(ApiError::unprocessable(
            "invalid_amount",
            "orderAmount must be a positive amount",
        ));
    }
    Ok(Json(
        svc.redeem(&code, &body.user_id, &body.order_id, body.order_amount)
            .await?,
    ))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CancelBody {
    pub order_id: String,
}

/// Undo a redemption; the coupon is usable again.
#[utoipa::path(post, path = "/coupons/{code}/cancel-redemption", tag = "coupon",
    params(("code" = String, Path)), request_body = CancelBody,
    responses((status = 200, body = Coupon), (status = 404), (status = 409, description = "order_mismatch")))]
pub async fn cancel_redemption(
    State(svc): State<Arc<CouponService>>,
    ApiPath(code): ApiPath<String>,
    ApiJson(body): ApiJson<CancelBody>,
) -> Result<Json<Coupon>, ApiError> {
    check_id("orderId", &body.order_id)?;
    Ok(Json(svc.cancel_redemption(&code, &body.order_id).await?))
}
