//! `POST /.search` at the root (RFC 7644 §3.4.3): Users and Groups in one list. A filter
//! naming attributes one type lacks simply matches nothing of that type; if it fits
//! neither, it is 400 `invalidFilter`.
use super::ScimError;
use super::resource::{Ctx, ListBody, ListParams, list_response};
use super::{groups, users};
use serde_json::Value;

fn part(v: &Value) -> (i64, Vec<Value>) {
    let total = v.get("totalResults").and_then(Value::as_i64).unwrap_or(0);
    let items = v
        .get("Resources")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    (total, items)
}

pub async fn root(ctx: &Ctx, p: &ListParams) -> Result<Value, ScimError> {
    if p.cursor.is_some() {
        return Err(ScimError::invalid_value(
            "cursor pagination is per resource type: use /Users or /Groups",
        ));
    }
    if p.sort_by.is_some() {
        return Err(ScimError::invalid_value(
            "sortBy is per resource type: use /Users/.search or /Groups/.search",
        ));
    }
    let (offset, limit) = p.window(100, ctx.id.config.scim.max_results);
    let counting = ListParams {
        count: Some(0),
        start_index: None,
        ..p.clone()
    };
    let user_total = match users::list(ctx, &counting).await.map(ListBody::into_value) {
        Ok(v) => Some(part(&v).0),
        Err(e) if e.scim_type == Some(super::ScimType::InvalidFilter) => None,
        Err(e) => return Err(e),
    };
    let group_total = match groups::list(ctx, &counting).await {
        Ok(v) => Some(part(&v).0),
        Err(e) if e.scim_type == Some(super::ScimType::InvalidFilter) => None,
        Err(e) => return Err(e),
    };
    if user_total.is_none() && group_total.is_none() {
        // Report the Users error: the more common target.
        users::list(ctx, &counting).await?;
    }
    let (ut, gt) = (user_total.unwrap_or(0), group_total.unwrap_or(0));
    let mut items = Vec::new();
    let mut want = i64::from(limit);
    let offset = offset as i64;
    if user_total.is_some() && offset < ut && want > 0 {
        let q = ListParams {
            start_index: Some(offset + 1),
            count: Some(want),
            ..p.clone()
        };
        let (_, got) = part(&users::list(ctx, &q).await?.into_value());
        want -= got.len() as i64;
        items.extend(got);
    }
    if group_total.is_some() && want > 0 {
        let start = (offset - ut).max(0);
        let q = ListParams {
            start_index: Some(start + 1),
            count: Some(want),
            ..p.clone()
        };
        let (_, got) = part(&groups::list(ctx, &q).await?);
        items.extend(got);
    }
    Ok(list_response(ut + gt, offset + 1, items, None))
}
