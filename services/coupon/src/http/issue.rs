//! Issuance routes: the campaign's own strategy, or V1/V2/V3 explicitly,
//! and the status of a queued request.

use std::sync::Arc;

use axum::{
    extract::{Extension, State},
    http::StatusCode,
    response::{IntoResponse, Response},
    routing::{get, post},
    Json, Router,
};
use chrono::{DateTime, Utc};
use promo_platform::{
    http::{
        idempotency::{self, Keyed},
        ApiError, ApiJson, ApiPath,
    },
    ids::check_id,
    time::from_ms,
};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::{
    domain::{
        issue::{self, Issued},
        Coupon, CouponError, Strategy,
    },
    store, CouponService,
};

pub fn router() -> Router<Arc<CouponService>> {
    Router::new()
        .route("/campaigns/{campaign}/issue", post(issue_default))
        .route("/v1/campaigns/{campaign}/issue", post(issue_v1))
        .route("/v2/campaigns/{campaign}/issue", post(issue_v2))
        .route("/v3/campaigns/{campaign}/issue", post(issue_v3))
        .route("/issue-requests/{requestId}", get(request_status))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct IssueBody {
    pub user_id: String,
}

/// A queued request, accepted.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Accepted {
    pub request_id: String,
    /// Always `PENDING`.
    pub status: &'static str,
}

async fn run(
    svc: Arc<CouponService>,
    strategy: Option<Strategy>,
    campaign: String,
    body: IssueBody,
    keyed: Option<Extension<Keyed>>,
) -> Result<Response, ApiError> {
    check_id("userId", &body.user_id)?;
    let keyed = keyed.map(|Extension(k)| k);
    Ok(
        match issue::issue(&svc, strategy, &campaign, &body.user_id, keyed).await {
            Err(CouponError::Unsettled) => idempotency::unsettled(),
            answer => match answer? {
                Issued::Coupon(c) => (StatusCode::CREATED, Json(c)).into_response(),
                Issued::Pending { request_id } => (
                    StatusCode::ACCEPTED,
                    Json(Accepted {
                        request_id,
                        status: "PENDING",
                    }),
                )
                    .into_response(),
            },
        },
    )
}

/// Issue with the campaign's own strategy (201 coupon, or 202 for QUEUED).
#[utoipa::path(post, path = "/campaigns/{campaign}/issue", tag = "coupon",
    params(("campaign" = String, Path)), request_body = IssueBody,
    responses(
        (status = 201, body = Coupon), (status = 202, body = Accepted),
        (status = 404, description = "campaign_not_found"), (status = 409, description = "already_issued"),
        (status = 410, description = "sold_out"), (status = 422, description = "not_active"),
        (status = 503, description = "counters_unavailable / lock_timeout; see Retry-After"),
    ))]
pub async fn issue_default(
    State(svc): State<Arc<CouponService>>,
    ApiPath(campaign): ApiPath<String>,
    keyed: Option<Extension<Keyed>>,
    ApiJson(body): ApiJson<IssueBody>,
) -> Result<Response, ApiError> {
    run(svc, None, campaign, body, keyed).await
}

/// V1 Database: one transaction with the campaign row lock.
#[utoipa::path(post, path = "/v1/campaigns/{campaign}/issue", tag = "coupon",
    params(("campaign" = String, Path)), request_body = IssueBody,
    responses((status = 201, body = Coupon), (status = 409), (status = 410), (status = 422), (status = 404)))]
pub async fn issue_v1(
    State(svc): State<Arc<CouponService>>,
    ApiPath(campaign): ApiPath<String>,
    keyed: Option<Extension<Keyed>>,
    ApiJson(body): ApiJson<IssueBody>,
) -> Result<Response, ApiError> {
    run(svc, Some(Strategy::Database), campaign, body, keyed).await
}

/// V2 RedisLock: a per-user Redis lock around the transaction.
#[utoipa::path(post, path = "/v2/campaigns/{campaign}/issue", tag = "coupon",
    params(("campaign" = String, Path)), request_body = IssueBody,
    responses((status = 201, body = Coupon), (status = 409), (status = 410), (status = 422), (status = 404), (status = 503)))]
pub async fn issue_v2(
    State(svc): State<Arc<CouponService>>,
    ApiPath(campaign): ApiPath<String>,
    keyed: Option<Extension<Keyed>>,
    ApiJson(body): ApiJson<IssueBody>,
) -> Result<Response, ApiError> {
    run(svc, Some(Strategy::RedisLock), campaign, body, keyed).await
}

/// V3 Queued: atomic admission, 202 with a request id.
#[utoipa::path(post, path = "/v3/campaigns/{campaign}/issue", tag = "coupon",
    params(("campaign" = String, Path)), request_body = IssueBody,
    responses((status = 202, body = Accepted), (status = 409), (status = 410), (status = 422), (status = 404), (status = 503)))]
pub async fn issue_v3(
    State(svc): State<Arc<CouponService>>,
    ApiPath(campaign): ApiPath<String>,
    keyed: Option<Extension<Keyed>>,
    ApiJson(body): ApiJson<IssueBody>,
) -> Result<Response, ApiError> {
    run(svc, Some(Strategy::Queued), campaign, body, keyed).await
}

/// The state of a queued issue request.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct RequestStatus {
    pub request_id: String,
    /// PENDING | ISSUED | REJECTED
    pub status: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub coupon: Option<Coupon>,
    /// Why it was rejected: sold_out, already_issued, unknown_campaign.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub admitted_at: Option<DateTime<Utc>>,
}

/// Status of a V3 request: PENDING until the consumer decided it.
#[utoipa::path(get, path = "/issue-requests/{requestId}", tag = "coupon",
    params(("requestId" = String, Path)),
    responses((status = 200, body = RequestStatus), (status = 404, description = "request_not_found")))]
pub async fn request_status(
    State(svc): State<Arc<CouponService>>,
    ApiPath(request_id): ApiPath<String>,
) -> Result<Json<RequestStatus>, ApiError> {
    let pool = svc.core.db.pool();
    let decided = match store::get_request(pool, &request_id).await? {
        Some(o) => Some(o),
        None if svc.core.counters.ticket_pending(&request_id).await? => {
            return Ok(Json(RequestStatus {
                request_id,
                status: "PENDING",
                coupon: None,
                reason: None,
                admitted_at: None,
            }));
        }
        // The consumer clears a ticket only after its commit: a request
        // decided between the two reads is in the database now.
        None => store::get_request(pool, &request_id).await?,
    };
    if let Some(o) = decided {
        let coupon = match &o.coupon_id {
            Some(id) => store::get_coupon(svc.core.db.pool(), id)
                .await?
                .map(|c| c.status_at(Utc::now())),
            None => None,
        };
        return Ok(Json(RequestStatus {
            request_id: o.request_id,
            status: if o.coupon_id.is_some() {
                "ISSUED"
            } else {
                "REJECTED"
            },
            coupon,
            reason: o.reason,
            admitted_at: Some(from_ms(o.admitted_at)),
        }));
    }
    Err(CouponError::UnknownRequest(request_id).into())
}
