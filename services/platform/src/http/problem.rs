//! RFC 9457 problem details with a stable machine-readable `code`.

use std::borrow::Cow;

use axum::{
    http::{header, HeaderValue, StatusCode},
    response::{IntoResponse, Response},
};
use serde::Serialize;

#[cfg(feature = "service")]
use crate::ports::SqlError;
use crate::ports::{counters::CountersError, QueueError};

/// An error answer. Internal causes are logged here and never sent.
#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: Cow<'static, str>,
    pub detail: String,
    pub retry_after_secs: Option<u64>,
}

#[derive(Serialize)]
struct Problem<'a> {
    #[serde(rename = "type")]
    kind: String,
    title: &'a str,
    status: u16,
    detail: &'a str,
    code: &'a str,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, detail: impl Into<String>) -> Self {
        Self {
            status,
            code: Cow::Borrowed(code),
            detail: detail.into(),
            retry_after_secs: None,
        }
    }

    pub fn bad_request(code: &'static str, detail: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, code, detail)
    }
    pub fn unprocessable(code: &'static str, detail: impl Into<String>) -> Self {
        Self::new(StatusCode::UNPROCESSABLE_ENTITY, code, detail)
    }
    pub fn not_found(code: &'static str, detail: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, code, detail)
    }
    pub fn conflict(code: &'static str, detail: impl Into<String>) -> Self {
        Self::new(StatusCode::CONFLICT, code, detail)
    }
    pub fn forbidden(code: &'static str, detail: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, code, detail)
    }
    pub fn gone(code: &'static str, detail: impl Into<String>) -> Self {
        Self::new(StatusCode::GONE, code, detail)
    }
    /// 413: the body passed [`super::BODY_LIMIT_BYTES`].
    pub fn body_too_large() -> Self {
        Self::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "body_too_large",
            format!(
                "request bodies are limited to {} bytes",
                super::BODY_LIMIT_BYTES
            ),
        )
    }

    /// 503 with `Retry-After`: the request may succeed later unchanged.
    pub fn unavailable(code: &'static str, detail: impl Into<String>, retry_after: u64) -> Self {
        Self {
            retry_after_secs: Some(retry_after),
            ..Self::new(StatusCode::SERVICE_UNAVAILABLE, code, detail)
        }
    }

    /// A failure that is ours, not the client's: logged in full, answered
    /// with a generic 500.
    pub fn internal(cause: impl std::fmt::Display) -> Self {
        tracing::error!(error = %cause, "internal error");
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "internal error; it was logged",
        )
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = Problem {
            kind: format!("https://promo.dev/problems/{}", self.code),
            title: self.status.canonical_reason().unwrap_or("Error"),
            status: self.status.as_u16(),
            detail: &self.detail,
            code: &self.code,
        };
        let mut res = (
            self.status,
            serde_json::to_string(&body).unwrap_or_default(),
        )
            .into_response();
        res.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/problem+json"),
        );
        if let Some(secs) = self.retry_after_secs {
            res.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        res
    }
}

// Backend failures are transient from the client's point of view: 503 with a
// retry hint, the cause in the log. A database constraint violation that
// reaches this point is a bug in the caller's mapping, hence 500.
#[cfg(feature = "service")]
impl From<SqlError> for ApiError {
    fn from(e: SqlError) -> Self {
        match &e {
            SqlError::Query(sqlx::Error::PoolTimedOut | sqlx::Error::Io(_)) => {
                tracing::warn!(error = %e, "database unavailable");
                Self::unavailable("database_unavailable", "the database is not answering", 1)
            }
            _ => Self::internal(e),
        }
    }
}

#[cfg(feature = "service")]
impl From<sqlx::Error> for ApiError {
    fn from(e: sqlx::Error) -> Self {
        SqlError::Query(e).into()
    }
}

impl From<CountersError> for ApiError {
    fn from(e: CountersError) -> Self {
        tracing::warn!(error = %e, "counters unavailable");
        Self::unavailable(
            "counters_unavailable",
            "the admission counters are not answering",
            1,
        )
    }
}

impl From<QueueError> for ApiError {
    fn from(e: QueueError) -> Self {
        tracing::warn!(error = %e, "queue unavailable");
        Self::unavailable(
            "queue_unavailable",
            "the request queue refused the request",
            1,
        )
    }
}

impl From<crate::ids::IdError> for ApiError {
    fn from(e: crate::ids::IdError) -> Self {
        Self::bad_request("invalid_id", e.to_string())
    }
}
