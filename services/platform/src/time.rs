//! Wall-clock helpers. Times are stored as epoch milliseconds (BIGINT) so the
//! same SQL works on both dialects; the API speaks RFC 3339 UTC.

use chrono::{DateTime, TimeZone, Utc};

pub fn now_ms() -> i64 {
    Utc::now().timestamp_millis()
}

pub fn to_ms(t: DateTime<Utc>) -> i64 {
    t.timestamp_millis()
}

pub fn from_ms(ms: i64) -> DateTime<Utc> {
    Utc.timestamp_millis_opt(ms)
        .single()
        .unwrap_or(DateTime::<Utc>::MIN_UTC)
}

/// Why a campaign or sale (`what` `id`) does not accept requests at `now`:
/// paused, not started, or ended (the end is exclusive). `None` when open.
pub fn inactive_reason(
    what: &str,
    id: &str,
    starts_at: DateTime<Utc>,
    ends_at: DateTime<Utc>,
    paused: bool,
    now: DateTime<Utc>,
) -> Option<String> {
    if paused {
        Some(format!("{what} {id:?} is paused"))
    } else if now < starts_at {
        Some(format!(
            "{what} {id:?} starts at {}",
            starts_at.to_rfc3339()
        ))
    } else if now >= ends_at {
        Some(format!("{what} {id:?} ended at {}", ends_at.to_rfc3339()))
    } else {
        None
    }
}
