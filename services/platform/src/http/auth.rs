//! Bearer-token guard for `/admin/...` routes.

use std::sync::Arc;

use axum::{
    extract::{Request, State},
    http::{header, StatusCode},
    middleware::Next,
    response::{IntoResponse, Response},
};

use super::ApiError;

/// The configured admin token; `None` leaves admin routes open (standalone only).
#[derive(Clone, Default)]
pub struct AdminToken(pub Option<Arc<str>>);

pub async fn require_admin(State(token): State<AdminToken>, req: Request, next: Next) -> Response {
    let Some(expected) = token.0.as_deref() else {
        return next.run(req).await;
    };
    let given = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(bearer_token);
    match given {
        Some(t) if constant_time_eq(t.as_bytes(), expected.as_bytes()) => next.run(req).await,
        Some(_) => ApiError::forbidden("invalid_admin_token", "the admin token does not match")
            .into_response(),
        None => {
            let mut res = ApiError::new(
                StatusCode::UNAUTHORIZED,
                "admin_token_required",
                "send Authorization: Bearer <admin token>",
            )
            .into_response();
            res.headers_mut()
                .insert(header::WWW_AUTHENTICATE, "Bearer".parse().expect("static"));
            res
        }
    }
}

/// The token of an `Authorization: Bearer <token>` value; the scheme is
/// matched without regard to case (RFC 9110 §11.1).
fn bearer_token(value: &str) -> Option<&str> {
    let (scheme, token) = value.trim().split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then_some(token.trim_start())
}

/// Compares without an early exit, so response time does not leak how much
/// of a guessed token was right.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    #[test]
    fn compares_tokens() {
        assert!(super::constant_time_eq(b"abc", b"abc"));
        assert!(!super::constant_time_eq(b"abc", b"abd"));
        assert!(!super::constant_time_eq(b"abc", b"abcd"));
    }

    #[test]
    fn the_scheme_is_case_insensitive() {
        use super::bearer_token;
        for v in ["Bearer t0k", "bearer t0k", "BEARER  t0k", " Bearer t0k "] {
            assert_eq!(bearer_token(v), Some("t0k"), "{v:?}");
        }
        assert_eq!(bearer_token("Basic t0k"), None);
        assert_eq!(bearer_token("Bearer"), None);
    }
}
