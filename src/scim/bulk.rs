//! `/Bulk` (RFC 7644 §3.7): parsed and planned by [`super::bulk_request`] (limits,
//! `bulkId` ordering so creations run before their references); each operation then runs
//! through the Users/Groups services in its own transaction. `failOnErrors` stops after
//! that many failures; unresolvable references are 409.
use super::bulk_request::{self as br, BulkLimits, BulkMethod, BulkResult};
use super::resource::Ctx;
use super::{ScimError, groups, users};
use serde_json::Value;
use std::collections::HashMap;

async fn one(ctx: &Ctx, op: &br::BulkOperation) -> Result<(u16, Option<Value>), ScimError> {
    let target = br::parse_target(op)?;
    let is_user = std::ptr::eq(target.resource_type, &super::schema::USER_RESOURCE);
    let data = || {
        op.data
            .clone()
            .ok_or_else(|| ScimError::invalid_syntax("this operation needs `data`"))
    };
    let version = op.version.as_deref();
    let id = target.id.as_deref().unwrap_or_default();
    Ok(match (op.method, is_user) {
        (BulkMethod::Post, true) => (201, Some(users::create(ctx, &data()?).await?.0)),
        (BulkMethod::Post, false) => (201, Some(groups::create(ctx, &data()?).await?.0)),
        (BulkMethod::Put, true) => {
            let r = users::replace(ctx, users::parse_id(id)?, &data()?, version).await?;
            (200, Some(r.0))
        }
        (BulkMethod::Put, false) => {
            let r = groups::replace(ctx, groups::parse_id(id)?, &data()?, version).await?;
            (200, Some(r.0))
        }
        (BulkMethod::Patch, true) => {
            let r = users::patch(ctx, users::parse_id(id)?, &data()?, version).await?;
            (200, Some(r.0))
        }
        (BulkMethod::Patch, false) => {
            let r = groups::patch(ctx, groups::parse_id(id)?, &data()?, version).await?;
            (200, Some(r.0))
        }
        (BulkMethod::Delete, true) => {
            users::delete(ctx, users::parse_id(id)?, version).await?;
            (204, None)
        }
        (BulkMethod::Delete, false) => {
            groups::delete(ctx, groups::parse_id(id)?, version).await?;
            (204, None)
        }
    })
}

/// Runs a BulkRequest of `body_len` bytes.
pub async fn run(ctx: &Ctx, body: &Value, body_len: usize) -> Result<Value, ScimError> {
    let s = &ctx.id.config.scim;
    let limits = BulkLimits {
        max_operations: s.bulk_max_operations as usize,
        max_payload_size: s.bulk_max_payload_bytes as usize,
    };
    br::check_payload_size(body_len, &limits)?;
    let req = br::parse_request(body, &limits)?;
    let plan = br::plan(&req.operations);
    let mut created: HashMap<String, String> = HashMap::new();
    let mut results: Vec<BulkResult> = Vec::with_capacity(req.operations.len());
    let mut errors = 0u64;
    let result = |op: &br::BulkOperation, status: u16, error: Option<ScimError>| BulkResult {
        method: op.method,
        bulk_id: op.bulk_id.clone(),
        version: None,
        location: None,
        status,
        error,
    };
    for &i in &plan.order {
        if req.fail_on_errors.is_some_and(|n| errors >= n) {
            break;
        }
        let op = &req.operations[i];
        let op = match br::substitute(op, &created) {
            Ok(op) => op,
            Err(missing) => {
                // The creation it refers to failed.
                errors += 1;
                results.push(result(op, 409, Some(br::unresolved_reference(&missing))));
                continue;
            }
        };
        match one(ctx, &op).await {
            Ok((status, resource)) => {
                let mut r = result(&op, status, None);
                if let Some(res) = &resource {
                    r.location = res
                        .pointer("/meta/location")
                        .and_then(Value::as_str)
                        .map(String::from);
                    r.version = res
                        .pointer("/meta/version")
                        .and_then(Value::as_str)
                        .map(String::from);
                    if let (Some(b), Some(id)) =
                        (&op.bulk_id, res.get("id").and_then(Value::as_str))
                    {
                        created.insert(b.clone(), id.to_string());
                    }
                }
                results.push(r);
            }
            Err(e) if e.status >= 500 => return Err(e),
            Err(e) => {
                errors += 1;
                results.push(result(&op, e.status, Some(e)));
            }
        }
    }
    for &i in &plan.unresolvable {
        if req.fail_on_errors.is_some_and(|n| errors >= n) {
            break;
        }
        let op = &req.operations[i];
        let missing = br::references(op).into_iter().next().unwrap_or_default();
        errors += 1;
        results.push(result(op, 409, Some(br::unresolved_reference(&missing))));
    }
    Ok(br::response_json(&results))
}
