//! Cursor pagination: `?cursor=&limit=` in, `{items, nextCursor}` out.

use serde::Deserialize;
use utoipa::IntoParams;

use super::ApiError;
use crate::ids::check_id;

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct PageQuery {
    /// `nextCursor` of the previous page.
    #[param(min_length = 1, max_length = 128, pattern = "^[A-Za-z0-9._:@-]+$")]
    pub cursor: Option<String>,
    /// 1..=100, default 20.
    #[param(minimum = 1, maximum = 100)]
    pub limit: Option<i64>,
}

impl PageQuery {
    /// The validated limit and cursor.
    pub fn checked(&self) -> Result<(i64, Option<&str>), ApiError> {
        let limit = self.limit.unwrap_or(20);
        if !(1..=100).contains(&limit) {
            return Err(ApiError::bad_request(
                "invalid_query",
                "limit must be between 1 and 100",
            ));
        }
        if let Some(c) = &self.cursor {
            check_id("cursor", c)?;
        }
        Ok((limit, self.cursor.as_deref()))
    }
}

/// Cuts a `limit + 1` fetch to `limit` items and the cursor of the next
/// page (the last item's), or `None` when this page is the last.
pub fn page<T>(
    mut items: Vec<T>,
    limit: i64,
    cursor_of: impl Fn(&T) -> String,
) -> (Vec<T>, Option<String>) {
    let limit = usize::try_from(limit).unwrap_or(0);
    if items.len() > limit {
        items.truncate(limit);
        let next = items.last().map(cursor_of);
        (items, next)
    } else {
        (items, None)
    }
}
