//! `/Bulk` (RFC 7644 §3.7): operations run in order, each in its own transaction;
//! `bulkId:` references in paths and data are replaced by the ids created earlier in the
//! request; `failOnErrors` stops after that many failures; `maxOperations` is enforced
//! (413 `tooLarge`).
use super::resource::Ctx;
use super::{BULK_REQUEST, BULK_RESPONSE, ScimError, groups, users};
use serde_json::{Map, Value, json};
use std::collections::HashMap;

fn get<'a>(o: &'a Map<String, Value>, k: &str) -> Option<&'a Value> {
    o.iter()
        .find(|(key, _)| key.eq_ignore_ascii_case(k))
        .map(|(_, v)| v)
        .filter(|v| !v.is_null())
}

/// Replaces every string `bulkId:<id>` (whole value, or the id part of a path) with the
/// created resource's id; an unknown reference is an error.
fn resolve(v: &Value, ids: &HashMap<String, String>) -> Result<Value, ScimError> {
    Ok(match v {
        Value::String(s) => match s.strip_prefix("bulkId:") {
            Some(b) => Value::String(ids.get(b).cloned().ok_or_else(|| {
                ScimError::invalid_value(format!(
                    "bulkId `{b}` is not defined by an earlier operation"
                ))
            })?),
            None => v.clone(),
        },
        Value::Array(items) => Value::Array(
            items
                .iter()
                .map(|i| resolve(i, ids))
                .collect::<Result<_, _>>()?,
        ),
        Value::Object(o) => Value::Object(
            o.iter()
                .map(|(k, v)| Ok((k.clone(), resolve(v, ids)?)))
                .collect::<Result<_, ScimError>>()?,
        ),
        other => other.clone(),
    })
}

enum Kind {
    Users,
    Groups,
}

/// `/Users`, `/Groups/{id}`, `/Users/bulkId:x` → (kind, resolved id).
fn parse_path(
    path: &str,
    ids: &HashMap<String, String>,
) -> Result<(Kind, Option<String>), ScimError> {
    let trimmed = path.trim().trim_start_matches('/');
    let (kind, rest) = match trimmed.split_once('/') {
        Some((k, r)) => (k, Some(r)),
        None => (trimmed, None),
    };
    let kind = match kind {
        "Users" => Kind::Users,
        "Groups" => Kind::Groups,
        _ => {
            return Err(ScimError::invalid_path(format!(
                "bulk path `{path}`: use /Users or /Groups"
            )));
        }
    };
    let id = match rest {
        None => None,
        Some(r) => Some(match resolve(&Value::String(r.to_string()), ids)? {
            Value::String(s) => s,
            _ => r.to_string(),
        }),
    };
    Ok((kind, id))
}

async fn one(
    ctx: &Ctx,
    method: &str,
    path: &str,
    version: Option<&str>,
    data: Option<&Value>,
    ids: &HashMap<String, String>,
) -> Result<(u16, Option<Value>), ScimError> {
    let (kind, id) = parse_path(path, ids)?;
    let data = match data {
        Some(d) => Some(resolve(d, ids)?),
        None => None,
    };
    let need_data = || {
        data.clone()
            .ok_or_else(|| ScimError::invalid_syntax("this operation needs `data`"))
    };
    let need_id = || {
        id.clone().ok_or_else(|| {
            ScimError::invalid_path("this operation needs a resource id in its path")
        })
    };
    let m = method.to_ascii_uppercase();
    Ok(match (m.as_str(), kind) {
        ("POST", _) if id.is_some() => {
            return Err(ScimError::invalid_path("POST goes to /Users or /Groups"));
        }
        ("POST", Kind::Users) => (201, Some(users::create(ctx, &need_data()?).await?.0)),
        ("POST", Kind::Groups) => (201, Some(groups::create(ctx, &need_data()?).await?.0)),
        ("PUT", Kind::Users) => {
            let uid = users::parse_id(&need_id()?)?;
            (
                200,
                Some(users::replace(ctx, uid, &need_data()?, version).await?.0),
            )
        }
        ("PUT", Kind::Groups) => {
            let gid = groups::parse_id(&need_id()?)?;
            (
                200,
                Some(groups::replace(ctx, gid, &need_data()?, version).await?.0),
            )
        }
        ("PATCH", Kind::Users) => {
            let uid = users::parse_id(&need_id()?)?;
            (
                200,
                Some(users::patch(ctx, uid, &need_data()?, version).await?.0),
            )
        }
        ("PATCH", Kind::Groups) => {
            let gid = groups::parse_id(&need_id()?)?;
            (
                200,
                Some(groups::patch(ctx, gid, &need_data()?, version).await?.0),
            )
        }
        ("DELETE", Kind::Users) => {
            users::delete(ctx, users::parse_id(&need_id()?)?, version).await?;
            (204, None)
        }
        ("DELETE", Kind::Groups) => {
            groups::delete(ctx, groups::parse_id(&need_id()?)?, version).await?;
            (204, None)
        }
        (other, _) => {
            return Err(ScimError::invalid_syntax(format!(
                "bulk method `{other}`: use POST, PUT, PATCH or DELETE"
            )));
        }
    })
}

pub async fn run(ctx: &Ctx, body: &Value) -> Result<Value, ScimError> {
    let Value::Object(o) = body else {
        return Err(ScimError::invalid_syntax("a BulkRequest is a JSON object"));
    };
    let schemas_ok = get(o, "schemas")
        .and_then(Value::as_array)
        .is_some_and(|a| {
            a.iter().any(|s| {
                s.as_str()
                    .is_some_and(|s| s.eq_ignore_ascii_case(BULK_REQUEST))
            })
        });
    if !schemas_ok {
        return Err(ScimError::invalid_syntax(format!(
            "schemas must contain {BULK_REQUEST}"
        )));
    }
    let ops = get(o, "Operations")
        .and_then(Value::as_array)
        .ok_or_else(|| ScimError::invalid_syntax("Operations must be an array"))?;
    let max = ctx.id.config.scim.bulk_max_operations as usize;
    if ops.len() > max {
        return Err(ScimError::too_large(format!(
            "{} operations exceed maxOperations ({max})",
            ops.len()
        )));
    }
    let fail_on_errors =
        match get(o, "failOnErrors") {
            None => None,
            Some(v) => Some(v.as_u64().filter(|n| *n >= 1).ok_or_else(|| {
                ScimError::invalid_value("failOnErrors must be a positive integer")
            })?),
        };
    let mut ids: HashMap<String, String> = HashMap::new();
    let mut results = Vec::with_capacity(ops.len());
    let mut errors = 0u64;
    for op in ops {
        let Value::Object(op) = op else {
            return Err(ScimError::invalid_syntax("each operation is an object"));
        };
        let method = get(op, "method").and_then(Value::as_str).unwrap_or("");
        let path = get(op, "path").and_then(Value::as_str).unwrap_or("");
        let bulk_id = get(op, "bulkId").and_then(Value::as_str);
        let version = get(op, "version").and_then(Value::as_str);
        let mut out = json!({ "method": method });
        if let Some(b) = bulk_id {
            out["bulkId"] = json!(b);
        }
        if method.eq_ignore_ascii_case("POST") && bulk_id.is_none() {
            out["status"] = json!("400");
            out["response"] = ScimError::invalid_syntax("POST operations need a bulkId").to_json();
            errors += 1;
        } else {
            match one(ctx, method, path, version, get(op, "data"), &ids).await {
                Ok((status, resource)) => {
                    out["status"] = json!(status.to_string());
                    if let Some(r) = &resource {
                        if let Some(loc) = r.pointer("/meta/location") {
                            out["location"] = loc.clone();
                        }
                        if let Some(v) = r.pointer("/meta/version") {
                            out["version"] = v.clone();
                        }
                        if let (Some(b), Some(id)) = (bulk_id, r.get("id").and_then(Value::as_str))
                        {
                            ids.insert(b.to_string(), id.to_string());
                        }
                    }
                }
                Err(e) if e.status >= 500 => return Err(e),
                Err(e) => {
                    out["status"] = json!(e.status.to_string());
                    out["response"] = e.to_json();
                    errors += 1;
                }
            }
        }
        results.push(out);
        if fail_on_errors.is_some_and(|n| errors >= n) {
            break;
        }
    }
    Ok(json!({ "schemas": [BULK_RESPONSE], "Operations": results }))
}
