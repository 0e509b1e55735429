//! `PUT|GET /admin/campaigns/{campaign}`.

use std::sync::Arc;

use axum::{extract::State, http::StatusCode, routing::put, Json, Router};
use promo_platform::http::{ApiError, ApiJson, ApiPath};
use serde::Serialize;
use utoipa::ToSchema;

use crate::{
    domain::{Campaign, CampaignSpec},
    CouponService,
};

pub fn router() -> Router<Arc<CouponService>> {
    Router::new().route(
        "/admin/campaigns/{campaign}",
        put(put_campaign).get(get_campaign),
    )
}

/// A campaign's specification with its live figures.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct CampaignView {
    pub campaign: String,
    #[serde(flatten)]
    pub spec: CampaignSpec,
    /// Coupons persisted.
    pub issued: i64,
    /// Coupons still available.
    pub remaining: i64,
    /// Admitted (V3), not yet persisted.
    pub pending: i64,
}

async fn view(svc: &CouponService, c: Campaign) -> Result<CampaignView, ApiError> {
    let (remaining, pending) = svc.core.figures(&c).await?;
    Ok(CampaignView {
        campaign: c.id,
        spec: c.spec,
        issued: c.issued,
        remaining,
        pending,
    })
}

/// Create or update a campaign.
#[utoipa::path(put, path = "/admin/campaigns/{campaign}", tag = "coupon",
    params(("campaign" = String, Path, description = "Campaign id")),
    request_body = CampaignSpec,
    responses(
        (status = 201, description = "Created", body = CampaignView),
        (status = 200, description = "Updated", body = CampaignView),
        (status = 409, description = "quota_below_issued"),
        (status = 422, description = "invalid_campaign"),
    ),
    security(("admin_token" = [])))]
pub async fn put_campaign(
    State(svc): State<Arc<CouponService>>,
    ApiPath(id): ApiPath<String>,
    ApiJson(spec): ApiJson<CampaignSpec>,
) -> Result<(StatusCode, Json<CampaignView>), ApiError> {
    let (stored, created) = svc.core.upsert(&id, &spec).await?;
    let status = if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((status, Json(view(&svc, stored).await?)))
}

/// A campaign with issued, remaining and pending.
#[utoipa::path(get, path = "/admin/campaigns/{campaign}", tag = "coupon",
    params(("campaign" = String, Path, description = "Campaign id")),
    responses((status = 200, body = CampaignView), (status = 404, description = "campaign_not_found")),
    security(("admin_token" = [])))]
pub async fn get_campaign(
    State(svc): State<Arc<CouponService>>,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<CampaignView>, ApiError> {
    let c = crate::store::get_campaign(svc.core.db.pool(), &id)
        .await?
        .ok_or_else(|| crate::domain::CouponError::UnknownCampaign(id.clone()))?;
    Ok(Json(view(&svc, c).await?))
}
