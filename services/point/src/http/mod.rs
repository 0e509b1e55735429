//! The point service's HTTP API (docs/api.md, "Point service").

mod points;

use std::{borrow::Cow, sync::Arc};

use axum::{http::StatusCode, Router};
use promo_platform::http::{auth::AdminToken, ApiError};
use utoipa::OpenApi;

use crate::{domain::PointError, PointService};

/// All routes (the service has no admin routes; the token is unused).
pub fn router(svc: Arc<PointService>, _admin_token: AdminToken) -> Router {
    points::router().with_state(svc)
}

#[derive(OpenApi)]
#[openapi(
    info(title = "Point service", description = "Points ledger: earn, use, refund, expiry, balance and history. Mutations need an Idempotency-Key."),
    paths(points::earn, points::spend, points::refund, points::balance, points::history),
    components(schemas(
        crate::domain::Entry, crate::domain::Kind,
        crate::domain::ledger::Applied, crate::domain::view::Points, crate::domain::view::Expiring,
        points::EarnBody, points::UseBody, points::RefundBody, points::HistoryPage,
    )),
    tags((name = "point", description = "Point ledger"))
)]
pub struct ApiDoc;

pub fn openapi() -> utoipa::openapi::OpenApi {
    ApiDoc::openapi()
}

impl From<PointError> for ApiError {
    fn from(e: PointError) -> Self {
        let d = e.to_string();
        match e {
            PointError::InsufficientBalance { .. } => ApiError::conflict("insufficient_balance", d),
            PointError::EntryNotFound(_) => ApiError::not_found("entry_not_found", d),
            PointError::NotRefundable(_) => ApiError::conflict("not_refundable", d),
            PointError::AlreadyRefunded(_) => ApiError::conflict("already_refunded", d),
            PointError::Invalid(_) => ApiError::unprocessable("invalid_request", d),
            PointError::IdempotencyKeyRequired => {
                ApiError::bad_request("idempotency_key_required", d)
            }
            PointError::IdempotencyKeyReused => {
                ApiError::unprocessable("idempotency_key_reused", d)
            }
            PointError::Conflict | PointError::Stale => ApiError::conflict("conflict", d),
            PointError::Replayed {
                status,
                code,
                detail,
            } => ApiError {
                status: StatusCode::from_u16(status).unwrap_or(StatusCode::CONFLICT),
                code: Cow::Owned(code),
                detail,
                retry_after_secs: None,
            },
            PointError::Sql(e) => e.into(),
        }
    }
}
