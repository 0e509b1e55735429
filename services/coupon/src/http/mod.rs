//! The coupon service's HTTP API (docs/api.md, "Coupon service").

mod admin;
mod coupons;
mod issue;

use std::sync::Arc;

use axum::Router;
use promo_platform::http::{
    auth::AdminToken,
    idempotency::{with_keys, Idempotency},
    ApiError,
};
use utoipa::OpenApi;

use crate::{domain::CouponError, CouponService};

/// All routes of the service (without `/metrics`, health and docs, which
/// the process adds once).
pub fn router(svc: Arc<CouponService>, admin_token: AdminToken) -> Router {
    let idem =
        Idempotency::new(svc.core.db.clone()).with_lease(svc.core.settings.idempotency_lease);
    let public = issue::router().merge(coupons::router());
    with_keys(idem, admin_token, admin::router(), public).with_state(svc)
}

#[derive(OpenApi)]
#[openapi(
    info(title = "Coupon service", description = "First-come-first-served coupon issuance (V1 database, V2 Redis lock, V3 queued) and redemption."),
    paths(
        admin::put_campaign, admin::get_campaign,
        issue::issue_default, issue::issue_v1, issue::issue_v2, issue::issue_v3, issue::request_status,
        coupons::user_coupons, coupons::redeem, coupons::cancel_redemption,
    ),
    components(schemas(
        crate::domain::CampaignSpec, crate::domain::Discount, crate::domain::DiscountKind, crate::domain::Strategy,
        crate::domain::Coupon, crate::domain::CouponStatus, crate::domain::redeem::Redemption,
        admin::CampaignView, issue::IssueBody, issue::Accepted, issue::RequestStatus,
        coupons::CouponPage, coupons::RedeemBody, coupons::CancelBody,
    )),
    tags((name = "coupon", description = "Coupon campaigns, issuance and redemption"))
)]
pub struct ApiDoc;

pub fn openapi() -> utoipa::openapi::OpenApi {
    let mut doc = ApiDoc::openapi();
    promo_platform::http::idempotency::document(&mut doc);
    doc
}

impl From<CouponError> for ApiError {
    fn from(e: CouponError) -> Self {
        let d = e.to_string();
        match e {
            CouponError::UnknownCampaign(_) => ApiError::not_found("campaign_not_found", d),
            CouponError::UnknownCoupon(_) => ApiError::not_found("coupon_not_found", d),
            CouponError::UnknownRequest(_) => ApiError::not_found("request_not_found", d),
            CouponError::SoldOut => ApiError::gone("sold_out", d),
            CouponError::AlreadyIssued(_) => ApiError::conflict("already_issued", d),
            CouponError::NotActive(_) => ApiError::unprocessable("not_active", d),
            CouponError::InvalidCampaign(_) => ApiError::unprocessable("invalid_campaign", d),
            CouponError::QuotaBelowIssued { .. } => ApiError::conflict("quota_below_issued", d),
            CouponError::WrongUser => ApiError::forbidden("wrong_user", d),
            CouponError::AlreadyRedeemed => ApiError::conflict("already_redeemed", d),
            CouponError::OrderMismatch(_) => ApiError::conflict("order_mismatch", d),
            CouponError::Expired => ApiError::unprocessable("expired", d),
            CouponError::BelowMinimumOrder { .. } => {
                ApiError::unprocessable("below_minimum_order", d)
            }
            CouponError::CountersRebuilding => ApiError::unavailable("counters_unavailable", d, 1),
            CouponError::LockTimeout => ApiError::unavailable("lock_timeout", d, 1),
            CouponError::Stopped(_) => ApiError::unavailable("unavailable", d, 1),
            CouponError::Unsettled => ApiError::conflict("idempotency_in_progress", d),
            CouponError::Sql(e) => e.into(),
            CouponError::Counters(e) => e.into(),
            CouponError::Queue(e) => e.into(),
        }
    }
}
