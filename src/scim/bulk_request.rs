//! SCIM bulk requests (RFC 7644 §3.7): parsing, limits, `bulkId` references
//! and the response document. Executing the operations is the caller's job.

use std::collections::{HashMap, HashSet};

use serde_json::{Map, Value, json};

use super::error::{ScimError, ScimType};
use super::schema::{RESOURCE_TYPES, ResourceType};
use super::{BULK_REQUEST, BULK_RESPONSE};

/// Advertised in `/ServiceProviderConfig` and enforced here (RFC 7644 §3.7.4).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BulkLimits {
    pub max_operations: usize,
    pub max_payload_size: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BulkMethod {
    Post,
    Put,
    Patch,
    Delete,
}

impl BulkMethod {
    /// Case-insensitive.
    pub fn parse(s: &str) -> Option<BulkMethod> {
        match s.to_ascii_uppercase().as_str() {
            "POST" => Some(BulkMethod::Post),
            "PUT" => Some(BulkMethod::Put),
            "PATCH" => Some(BulkMethod::Patch),
            "DELETE" => Some(BulkMethod::Delete),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            BulkMethod::Post => "POST",
            BulkMethod::Put => "PUT",
            BulkMethod::Patch => "PATCH",
            BulkMethod::Delete => "DELETE",
        }
    }
}

/// One operation of a bulk request.
#[derive(Debug, Clone, PartialEq)]
pub struct BulkOperation {
    pub method: BulkMethod,
    pub bulk_id: Option<String>,
    /// `If-Match` for PUT/PATCH/DELETE.
    pub version: Option<String>,
    pub path: String,
    pub data: Option<Value>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct BulkRequest {
    /// Stop after this many errors (`None`: process everything).
    pub fail_on_errors: Option<u64>,
    pub operations: Vec<BulkOperation>,
}

/// 413 `tooLarge` when the body is bigger than `maxPayloadSize`; call it with
/// the raw body length before parsing.
pub fn check_payload_size(len: usize, limits: &BulkLimits) -> Result<(), ScimError> {
    if len > limits.max_payload_size {
        return Err(ScimError::too_large(format!(
            "The size of the bulk operation exceeds the maxPayloadSize ({}).",
            limits.max_payload_size
        )));
    }
    Ok(())
}

fn get_ci<'v>(obj: &'v Map<String, Value>, key: &str) -> Option<&'v Value> {
    obj.get(key).or_else(|| {
        obj.iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(key))
            .map(|(_, v)| v)
    })
}

/// Parse a BulkRequest (RFC 7644 §3.7): `schemas` must contain BULK_REQUEST;
/// more than `maxOperations` operations → 413 `tooLarge`; POST needs a unique
/// `bulkId` and `data`, PUT/PATCH need `data`; methods are case-insensitive.
pub fn parse_request(body: &Value, limits: &BulkLimits) -> Result<BulkRequest, ScimError> {
    let Value::Object(obj) = body else {
        return Err(ScimError::invalid_syntax(
            "bulk request must be a JSON object",
        ));
    };
    let has_schema = get_ci(obj, "schemas")
        .and_then(Value::as_array)
        .is_some_and(|a| {
            a.iter().any(|s| {
                s.as_str()
                    .is_some_and(|s| s.eq_ignore_ascii_case(BULK_REQUEST))
            })
        });
    if !has_schema {
        return Err(ScimError::invalid_syntax(format!(
            "\"schemas\" must contain \"{BULK_REQUEST}\""
        )));
    }
    let fail_on_errors = match get_ci(obj, "failOnErrors") {
        None | Some(Value::Null) => None,
        Some(v) => Some(v.as_u64().filter(|n| *n > 0).ok_or_else(|| {
            ScimError::invalid_value("\"failOnErrors\" must be a positive integer")
        })?),
    };
    let ops = get_ci(obj, "Operations")
        .and_then(Value::as_array)
        .ok_or_else(|| ScimError::invalid_syntax("\"Operations\" must be an array"))?;
    if ops.len() > limits.max_operations {
        return Err(ScimError::too_large(format!(
            "The number of operations ({}) exceeds the maxOperations ({}).",
            ops.len(),
            limits.max_operations
        )));
    }
    let mut seen = HashSet::new();
    let mut out = Vec::with_capacity(ops.len());
    for (i, op) in ops.iter().enumerate() {
        let Value::Object(o) = op else {
            return Err(ScimError::invalid_syntax(format!(
                "operation {i} must be an object"
            )));
        };
        let str_field = |name: &str| -> Result<Option<String>, ScimError> {
            match get_ci(o, name) {
                None | Some(Value::Null) => Ok(None),
                Some(Value::String(s)) => Ok(Some(s.clone())),
                Some(_) => Err(ScimError::invalid_syntax(format!(
                    "operation {i}: \"{name}\" must be a string"
                ))),
            }
        };
        let method = str_field("method")?
            .as_deref()
            .and_then(BulkMethod::parse)
            .ok_or_else(|| {
                ScimError::invalid_syntax(format!(
                    "operation {i}: \"method\" must be POST, PUT, PATCH or DELETE"
                ))
            })?;
        let path = str_field("path")?.ok_or_else(|| {
            ScimError::invalid_syntax(format!("operation {i}: \"path\" is required"))
        })?;
        let bulk_id = str_field("bulkId")?;
        let version = str_field("version")?;
        let data = get_ci(o, "data").filter(|v| !v.is_null()).cloned();
        if method == BulkMethod::Post && bulk_id.as_deref().is_none_or(str::is_empty) {
            return Err(ScimError::invalid_syntax(format!(
                "operation {i}: POST needs a \"bulkId\""
            )));
        }
        if let Some(b) = &bulk_id
            && !seen.insert(b.clone())
        {
            return Err(ScimError::invalid_syntax(format!(
                "operation {i}: duplicate bulkId \"{b}\""
            )));
        }
        if method != BulkMethod::Delete && data.is_none() {
            return Err(ScimError::invalid_syntax(format!(
                "operation {i}: {} needs \"data\"",
                method.as_str()
            )));
        }
        out.push(BulkOperation {
            method,
            bulk_id,
            version,
            path,
            data,
        });
    }
    Ok(BulkRequest {
        fail_on_errors,
        operations: out,
    })
}

/// Where an operation points: a resource type and, except for POST, an id.
#[derive(Debug, Clone, PartialEq)]
pub struct BulkTarget {
    pub resource_type: &'static ResourceType,
    pub id: Option<String>,
}

/// Parse an operation's `path` (`/Users`, `/Groups/{id}`) after references
/// have been substituted. Wrong shape → 400 `invalidPath`.
pub fn parse_target(op: &BulkOperation) -> Result<BulkTarget, ScimError> {
    let path = op.path.trim();
    let rest = path.strip_prefix('/').ok_or_else(|| {
        ScimError::invalid_path(format!("bulk path \"{path}\" must start with '/'"))
    })?;
    let (endpoint, id) = match rest.split_once('/') {
        Some((e, id)) => (e, Some(id)),
        None => (rest, None),
    };
    let rt = RESOURCE_TYPES
        .iter()
        .copied()
        .find(|r| r.endpoint[1..].eq_ignore_ascii_case(endpoint))
        .ok_or_else(|| ScimError::invalid_path(format!("unknown endpoint \"/{endpoint}\"")))?;
    match (op.method, id) {
        (BulkMethod::Post, None) => Ok(BulkTarget {
            resource_type: rt,
            id: None,
        }),
        (BulkMethod::Post, Some(_)) => Err(ScimError::invalid_path(
            "POST must target a resource type endpoint such as /Users",
        )),
        (_, Some(id)) if !id.is_empty() && !id.contains('/') => Ok(BulkTarget {
            resource_type: rt,
            id: Some(id.to_string()),
        }),
        _ => Err(ScimError::invalid_path(format!(
            "{} must target one resource such as /Users/{{id}}",
            op.method.as_str()
        ))),
    }
}

const PREFIX: &str = "bulkId:";

fn reference_of(s: &str) -> Option<&str> {
    if s.len() > PREFIX.len() && s[..PREFIX.len()].eq_ignore_ascii_case(PREFIX) {
        Some(&s[PREFIX.len()..])
    } else {
        None
    }
}

fn collect_refs(v: &Value, out: &mut Vec<String>) {
    match v {
        Value::String(s) => {
            if let Some(r) = reference_of(s) {
                out.push(r.to_string());
            }
        }
        Value::Array(a) => a.iter().for_each(|x| collect_refs(x, out)),
        Value::Object(o) => o.values().for_each(|x| collect_refs(x, out)),
        _ => {}
    }
}

/// The bulkIds an operation refers to (`"bulkId:qwerty"` strings in `data`, or
/// as the id segment of `path`), RFC 7644 §3.7.2.
pub fn references(op: &BulkOperation) -> Vec<String> {
    let mut out = Vec::new();
    if let Some((_, last)) = op.path.rsplit_once('/')
        && let Some(r) = reference_of(last)
    {
        out.push(r.to_string());
    }
    if let Some(d) = &op.data {
        collect_refs(d, &mut out);
    }
    out.sort();
    out.dedup();
    out
}

/// An execution plan: operation indexes in an order where every referenced
/// bulkId is created first, and the operations that can never run (references
/// to unknown bulkIds, or circular references) — answer those with
/// [`unresolved_reference`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    pub order: Vec<usize>,
    pub unresolvable: Vec<usize>,
}

/// Order operations so that creations come before their references, keeping
/// the request order otherwise (RFC 7644 §3.7.2).
pub fn plan(ops: &[BulkOperation]) -> Plan {
    let creators: HashMap<&str, usize> = ops
        .iter()
        .enumerate()
        .filter(|(_, o)| o.method == BulkMethod::Post)
        .filter_map(|(i, o)| o.bulk_id.as_deref().map(|b| (b, i)))
        .collect();
    let deps: Vec<Vec<String>> = ops.iter().map(references).collect();
    let mut done = vec![false; ops.len()];
    let mut order = Vec::with_capacity(ops.len());
    loop {
        let mut progressed = false;
        for i in 0..ops.len() {
            if done[i] {
                continue;
            }
            let ready = deps[i]
                .iter()
                .all(|r| creators.get(r.as_str()).is_some_and(|&c| c != i && done[c]));
            if ready {
                done[i] = true;
                order.push(i);
                progressed = true;
                // Restart so earlier operations keep their priority.
                break;
            }
        }
        if !progressed {
            break;
        }
    }
    let unresolvable = (0..ops.len()).filter(|i| !done[*i]).collect();
    Plan {
        order,
        unresolvable,
    }
}

fn substitute_value(v: &mut Value, created: &HashMap<String, String>) -> Result<(), String> {
    match v {
        Value::String(s) => {
            if let Some(r) = reference_of(s) {
                let id = created.get(r).ok_or_else(|| r.to_string())?;
                *s = id.clone();
            }
            Ok(())
        }
        Value::Array(a) => a.iter_mut().try_for_each(|x| substitute_value(x, created)),
        Value::Object(o) => o
            .values_mut()
            .try_for_each(|x| substitute_value(x, created)),
        _ => Ok(()),
    }
}

/// Replace `bulkId:` references by the ids created so far (`bulkId → id`).
/// `Err(bulkId)` when one is not available (its creation failed or is pending).
pub fn substitute(
    op: &BulkOperation,
    created: &HashMap<String, String>,
) -> Result<BulkOperation, String> {
    let mut out = op.clone();
    if let Some((head, last)) = op.path.rsplit_once('/')
        && let Some(r) = reference_of(last)
    {
        let id = created.get(r).ok_or_else(|| r.to_string())?;
        out.path = format!("{head}/{id}");
    }
    if let Some(d) = &mut out.data {
        substitute_value(d, created)?;
    }
    Ok(out)
}

/// 409 for an operation whose bulkId reference cannot be resolved (RFC 7644 §3.7.2).
pub fn unresolved_reference(bulk_id: &str) -> ScimError {
    ScimError::new(
        409,
        Some(ScimType::InvalidValue),
        format!("bulkId reference \"{bulk_id}\" cannot be resolved"),
    )
}

/// The outcome of one operation, for the response.
#[derive(Debug, Clone, PartialEq)]
pub struct BulkResult {
    pub method: BulkMethod,
    pub bulk_id: Option<String>,
    pub version: Option<String>,
    pub location: Option<String>,
    pub status: u16,
    pub error: Option<ScimError>,
}

/// The BulkResponse document (RFC 7644 §3.7.3): `status` as a string, the
/// error body as `response` for failures.
pub fn response_json(results: &[BulkResult]) -> Value {
    let ops: Vec<Value> = results
        .iter()
        .map(|r| {
            let mut o = Map::new();
            o.insert("method".into(), r.method.as_str().into());
            if let Some(b) = &r.bulk_id {
                o.insert("bulkId".into(), b.clone().into());
            }
            if let Some(v) = &r.version {
                o.insert("version".into(), v.clone().into());
            }
            if let Some(l) = &r.location {
                o.insert("location".into(), l.clone().into());
            }
            o.insert("status".into(), r.status.to_string().into());
            if let Some(e) = &r.error {
                o.insert("response".into(), e.to_json());
            }
            Value::Object(o)
        })
        .collect();
    json!({"schemas": [BULK_RESPONSE], "Operations": ops})
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scim::schema::{GROUP_RESOURCE, USER_RESOURCE};

    const LIMITS: BulkLimits = BulkLimits {
        max_operations: 3,
        max_payload_size: 1000,
    };

    fn req(ops: Value) -> Value {
        json!({"schemas": [BULK_REQUEST], "failOnErrors": 1, "Operations": ops})
    }

    /// RFC 7644 §3.7.2 example: a group whose members refer to users created
    /// in the same request (listed before the users).
    fn rfc_example() -> Value {
        req(json!([
            {"method": "POST", "path": "/Groups", "bulkId": "ytrewq", "data": {
                "schemas": ["urn:ietf:params:scim:schemas:core:2.0:Group"],
                "displayName": "Tour Guides",
                "members": [{"type": "User", "value": "bulkId:qwerty"}, {"type": "User", "value": "bulkId:asdf"}]
            }},
            {"method": "post", "path": "/Users", "bulkId": "qwerty", "data": {"userName": "Alice"}},
            {"method": "POST", "path": "/Users", "bulkId": "asdf", "data": {"userName": "Bob"}}
        ]))
    }

    #[test]
    fn parses_and_orders_references() {
        let r = parse_request(&rfc_example(), &LIMITS).unwrap();
        assert_eq!(r.fail_on_errors, Some(1));
        assert_eq!(r.operations[1].method, BulkMethod::Post);
        assert_eq!(references(&r.operations[0]), ["asdf", "qwerty"]);
        let p = plan(&r.operations);
        assert_eq!(
            p,
            Plan {
                order: vec![1, 2, 0],
                unresolvable: vec![]
            }
        );
        let mut created = HashMap::new();
        created.insert("qwerty".to_string(), "u-1".to_string());
        assert_eq!(
            substitute(&r.operations[0], &created),
            Err("asdf".to_string())
        );
        created.insert("asdf".to_string(), "u-2".to_string());
        let s = substitute(&r.operations[0], &created).unwrap();
        assert_eq!(
            s.data.unwrap()["members"],
            json!([{"type": "User", "value": "u-1"}, {"type": "User", "value": "u-2"}])
        );
        let t = parse_target(&r.operations[0]).unwrap();
        assert!(std::ptr::eq(t.resource_type, &GROUP_RESOURCE) && t.id.is_none());
    }

    #[test]
    fn path_references_and_cycles() {
        let ops = parse_request(
            &req(json!([
                {"method": "PATCH", "path": "/Groups/bulkId:g", "data": {"schemas": [crate::scim::PATCH_OP], "Operations": []}},
                {"method": "POST", "path": "/Groups", "bulkId": "g", "data": {"displayName": "G"}},
                {"method": "POST", "path": "/Groups", "bulkId": "a", "data": {"members": [{"value": "bulkId:b"}]}},
                {"method": "POST", "path": "/Groups", "bulkId": "b", "data": {"members": [{"value": "bulkId:a"}]}},
                {"method": "DELETE", "path": "/Users/bulkId:nobody"},
                {"method": "POST", "path": "/Groups", "bulkId": "self", "data": {"members": [{"value": "bulkId:self"}]}}
            ])),
            &BulkLimits { max_operations: 10, max_payload_size: 10_000 },
        )
        .unwrap()
        .operations;
        let p = plan(&ops);
        assert_eq!(p.order, [1, 0]);
        assert_eq!(p.unresolvable, [2, 3, 4, 5]);
        let mut created = HashMap::new();
        created.insert("g".to_string(), "gid".to_string());
        let s = substitute(&ops[0], &created).unwrap();
        assert_eq!(s.path, "/Groups/gid");
        assert_eq!(parse_target(&s).unwrap().id.as_deref(), Some("gid"));
        let e = unresolved_reference("nobody");
        assert_eq!(
            (e.status, e.to_json()["status"].clone()),
            (409, json!("409"))
        );
    }

    #[test]
    fn limits_and_errors() {
        assert!(check_payload_size(1000, &LIMITS).is_ok());
        let e = check_payload_size(1001, &LIMITS).unwrap_err();
        assert_eq!((e.status, e.scim_type), (413, Some(ScimType::TooLarge)));
        let four = req(json!([
            {"method": "DELETE", "path": "/Users/1"}, {"method": "DELETE", "path": "/Users/2"},
            {"method": "DELETE", "path": "/Users/3"}, {"method": "DELETE", "path": "/Users/4"}
        ]));
        let e = parse_request(&four, &LIMITS).unwrap_err();
        assert_eq!((e.status, e.scim_type), (413, Some(ScimType::TooLarge)));
        for (body, t) in [
            (json!({"Operations": []}), ScimType::InvalidSyntax),
            (json!({"schemas": [BULK_REQUEST]}), ScimType::InvalidSyntax),
            (
                json!({"schemas": [BULK_REQUEST], "failOnErrors": -1, "Operations": []}),
                ScimType::InvalidValue,
            ),
            (
                req(json!([{"method": "GET", "path": "/Users"}])),
                ScimType::InvalidSyntax,
            ),
            (
                req(json!([{"method": "POST", "path": "/Users", "data": {}}])),
                ScimType::InvalidSyntax,
            ),
            (
                req(json!([{"method": "PUT", "path": "/Users/1"}])),
                ScimType::InvalidSyntax,
            ),
            (req(json!([{"method": "DELETE"}])), ScimType::InvalidSyntax),
            (
                req(
                    json!([{"method": "POST", "path": "/Users", "bulkId": "x", "data": {}}, {"method": "POST", "path": "/Users", "bulkId": "x", "data": {}}]),
                ),
                ScimType::InvalidSyntax,
            ),
        ] {
            let e = parse_request(&body, &LIMITS).expect_err(&body.to_string());
            assert_eq!(e.scim_type, Some(t), "{body}");
        }
        let op = |m: BulkMethod, p: &str| BulkOperation {
            method: m,
            bulk_id: None,
            version: None,
            path: p.into(),
            data: None,
        };
        assert!(std::ptr::eq(
            parse_target(&op(BulkMethod::Delete, "/users/abc"))
                .unwrap()
                .resource_type,
            &USER_RESOURCE
        ));
        for (m, p) in [
            (BulkMethod::Post, "/Users/abc"),
            (BulkMethod::Delete, "/Users"),
            (BulkMethod::Put, "/Users/"),
            (BulkMethod::Patch, "/Users/a/b"),
            (BulkMethod::Post, "Users"),
            (BulkMethod::Post, "/Devices"),
        ] {
            let e = parse_target(&op(m, p)).unwrap_err();
            assert_eq!(e.scim_type, Some(ScimType::InvalidPath), "{p}");
        }
    }

    #[test]
    fn response_document() {
        let v = response_json(&[
            BulkResult {
                method: BulkMethod::Post,
                bulk_id: Some("qwerty".into()),
                version: Some("W/\"oY4m4wn58tkVjJxK\"".into()),
                location: Some("https://example.com/v2/Users/92b725cd".into()),
                status: 201,
                error: None,
            },
            BulkResult {
                method: BulkMethod::Post,
                bulk_id: Some("asdf".into()),
                version: None,
                location: None,
                status: 400,
                error: Some(ScimError::invalid_syntax("bad")),
            },
        ]);
        assert_eq!(
            v,
            json!({"schemas": [BULK_RESPONSE], "Operations": [
                {"method": "POST", "bulkId": "qwerty", "version": "W/\"oY4m4wn58tkVjJxK\"",
                 "location": "https://example.com/v2/Users/92b725cd", "status": "201"},
                {"method": "POST", "bulkId": "asdf", "status": "400",
                 "response": {"schemas": [crate::scim::ERROR_SCHEMA], "scimType": "invalidSyntax", "detail": "bad", "status": "400"}}
            ]})
        );
    }
}
