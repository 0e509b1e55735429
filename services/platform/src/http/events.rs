//! `GET /admin/events?after=&limit=`: the published CloudEvents of every
//! service this process serves, oldest first, paged by a cursor that holds
//! one position per service (`<service>-<publishedAt>-<seq>-<index>`: after
//! event `index` of outbox row `seq`; joined by `.`). Each service's events come in the order its relay published them;
//! the services' streams are interleaved by publication time.

use std::{collections::BTreeMap, sync::Arc};

use axum::{extract::State, middleware::from_fn_with_state, routing::get, Json, Router};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::{IntoParams, OpenApi, ToSchema};

use super::{auth::AdminToken, ApiError, ApiQuery};
use crate::outbox::{Outbox, Position};

/// Default and largest page.
const LIMIT: usize = 100;
const MAX_LIMIT: usize = 500;

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct EventsQuery {
    /// `nextCursor` of the previous page; absent: from the oldest kept
    /// event. Each position has at most 18 digits, so a cursor that fits
    /// the pattern fits in 64 bits.
    #[param(
        min_length = 1,
        max_length = 512,
        pattern = "^[a-z]+-[0-9]{1,18}-[0-9]{1,18}-[0-9]{1,18}(\\.[a-z]+-[0-9]{1,18}-[0-9]{1,18}-[0-9]{1,18})*$"
    )]
    pub after: Option<String>,
    /// 1..=500, default 100.
    #[param(minimum = 1, maximum = 500)]
    pub limit: Option<i64>,
}

/// A page of the event feed.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct EventPage {
    /// CloudEvents 1.0 (structured JSON), oldest first.
    pub items: Vec<Value>,
    /// Where the next page starts: pass it as `after` (also when this page
    /// is empty, to wait for newer events).
    pub next_cursor: String,
}

type Positions = BTreeMap<String, Position>;

fn parse(cursor: &str) -> Result<Positions, ApiError> {
    let bad = || ApiError::bad_request("invalid_cursor", "after is not a cursor of this feed");
    let mut out = Positions::new();
    for part in cursor.split('.') {
        let mut it = part.split('-');
        let (Some(service), Some(at), Some(seq), Some(index), None) =
            (it.next(), it.next(), it.next(), it.next(), it.next())
        else {
            return Err(bad());
        };
        let position = Position {
            published_at: at.parse().map_err(|_| bad())?,
            seq: seq.parse().map_err(|_| bad())?,
            index: index.parse().map_err(|_| bad())?,
        };
        if service.is_empty() {
            return Err(bad());
        }
        // A service named twice: the later position counts.
        out.insert(service.to_string(), position);
    }
    Ok(out)
}

fn render(positions: &Positions) -> String {
    positions
        .iter()
        .map(|(s, p)| format!("{s}-{}-{}-{}", p.published_at, p.seq, p.index))
        .collect::<Vec<_>>()
        .join(".")
}

/// Published events of every service served here.
#[utoipa::path(get, path = "/admin/events", tag = "events", params(EventsQuery),
    responses((status = 200, body = EventPage), (status = 400, description = "invalid_cursor / invalid_query")),
    security(("admin_token" = [])))]
pub async fn list_events(
    State(outboxes): State<Arc<Vec<Arc<Outbox>>>>,
    ApiQuery(q): ApiQuery<EventsQuery>,
) -> Result<Json<EventPage>, ApiError> {
    let limit = q.limit.unwrap_or(LIMIT as i64);
    if !(1..=MAX_LIMIT as i64).contains(&limit) {
        return Err(ApiError::bad_request(
            "invalid_query",
            format!("limit must be between 1 and {MAX_LIMIT}"),
        ));
    }
    let limit = limit as usize;
    let mut positions = match &q.after {
        Some(c) => parse(c)?,
        None => Positions::new(),
    };
    // Each service's next `limit`, merged by publication time.
    let mut all = Vec::new();
    for o in outboxes.iter() {
        let after = positions.get(o.service()).copied().unwrap_or_default();
        let rows = o
            .page(after, limit)
            .await
            .map_err(|e| ApiError::unavailable("events_unavailable", e.to_string(), 1))?;
        all.extend(
            rows.into_iter()
                .map(|(p, e)| (p.published_at, o.service(), p, e)),
        );
    }
    all.sort_by(|a, b| (a.0, a.1, a.2).cmp(&(b.0, b.1, b.2)));
    all.truncate(limit);
    let mut items = Vec::with_capacity(all.len());
    for (_, service, p, e) in all {
        positions.insert(service.to_string(), p);
        items.push(e);
    }
    Ok(Json(EventPage {
        items,
        next_cursor: render(&positions),
    }))
}

#[derive(OpenApi)]
#[openapi(
    paths(list_events),
    components(schemas(EventPage)),
    tags((name = "events", description = "The CloudEvents every service publishes, as a feed"))
)]
pub struct EventsDoc;

/// The feed's route over `outboxes`, behind the admin token.
pub fn router(outboxes: Vec<Arc<Outbox>>, token: AdminToken) -> Router {
    Router::new()
        .route("/admin/events", get(list_events))
        .route_layer(from_fn_with_state(token, super::auth::require_admin))
        .with_state(Arc::new(outboxes))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_round_trip_and_refuse_garbage() {
        let c = "coupon-17-3-0.timesale-18-9-199";
        assert_eq!(render(&parse(c).unwrap()), c);
        assert_eq!(render(&parse("a-1-2-0.a-3-4-5").unwrap()), "a-3-4-5");
        let widest = "a-999999999999999999-999999999999999999-999999999999999999";
        assert_eq!(render(&parse(widest).unwrap()), widest);
        for bad in [
            "",
            "coupon",
            "coupon-1-2",
            "coupon-1-x-0",
            "-1-2-0",
            "a-1-2-3-4",
        ] {
            assert!(parse(bad).is_err(), "{bad:?}");
        }
    }
}
