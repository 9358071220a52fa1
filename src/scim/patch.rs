//! SCIM PATCH (RFC 7644 §3.5.2): request parsing and application to a
//! resource's JSON, all or nothing.
//!
//! Leniencies for real IdP traffic (each one tested below):
//! - op names in any case (`Replace`, `ADD`), Entra;
//! - booleans as strings (`"False"`), Entra;
//! - `{"op":"remove","path":"members","value":[{"value":"id"}]}` removes only
//!   the listed members, Entra/Okta;
//! - replace without path carrying dotted or URN-prefixed keys
//!   (`"name.givenName"`, `"urn:…:enterprise:2.0:User:department"`), Entra;
//! - `urn:…:enterprise:2.0:User.manager` (dot instead of colon) and a bare id
//!   as the manager value, Entra;
//! - members given as plain id strings;
//! - `add` on `emails[type eq "work"].value` when no work email exists creates
//!   one, Entra;
//! - readOnly attributes inside a path-less value (Okta sends `id`) are ignored.

use serde_json::{Map, Value};

use super::PATCH_OP;
use super::error::ScimError;
use super::filter::{self, CompValue, CompareOp, Filter};
use super::path::{PatchPath, PathTarget, parse_path};
use super::schema::{
    self, Attribute, Mutability, ResourceType, check_primary, coerce_single, coerce_value,
};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PatchOpKind {
    Add,
    Remove,
    Replace,
}

impl PatchOpKind {
    /// Case-insensitive (Entra sends "Replace").
    pub fn parse(s: &str) -> Option<PatchOpKind> {
        match s.to_ascii_lowercase().as_str() {
            "add" => Some(PatchOpKind::Add),
            "remove" => Some(PatchOpKind::Remove),
            "replace" => Some(PatchOpKind::Replace),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            PatchOpKind::Add => "add",
            PatchOpKind::Remove => "remove",
            PatchOpKind::Replace => "replace",
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct PatchOperation {
    pub op: PatchOpKind,
    pub path: Option<PatchPath>,
    pub value: Option<Value>,
}

fn get_ci<'v>(obj: &'v Map<String, Value>, key: &str) -> Option<&'v Value> {
    obj.get(key).or_else(|| {
        obj.iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(key))
            .map(|(_, v)| v)
    })
}

/// Parse a PatchOp request body (RFC 7644 §3.5.2): `schemas` must contain
/// PATCH_OP, `Operations` must be a non-empty array, ops are case-insensitive,
/// paths are parsed and resolved. `remove` without a path → 400 `noTarget`.
pub fn parse_request(rt: &ResourceType, body: &Value) -> Result<Vec<PatchOperation>, ScimError> {
    let Value::Object(obj) = body else {
        return Err(ScimError::invalid_syntax(
            "PATCH body must be a JSON object",
        ));
    };
    let has_schema = get_ci(obj, "schemas")
        .and_then(Value::as_array)
        .is_some_and(|a| {
            a.iter()
                .any(|s| s.as_str().is_some_and(|s| s.eq_ignore_ascii_case(PATCH_OP)))
        });
    if !has_schema {
        return Err(ScimError::invalid_syntax(format!(
            "\"schemas\" must contain \"{PATCH_OP}\""
        )));
    }
    let ops = get_ci(obj, "Operations")
        .and_then(Value::as_array)
        .ok_or_else(|| ScimError::invalid_syntax("\"Operations\" must be an array"))?;
    if ops.is_empty() {
        return Err(ScimError::invalid_syntax(
            "\"Operations\" must not be empty",
        ));
    }
    let mut out = Vec::with_capacity(ops.len());
    for (i, op) in ops.iter().enumerate() {
        let Value::Object(o) = op else {
            return Err(ScimError::invalid_syntax(format!(
                "operation {i} must be an object"
            )));
        };
        let kind = get_ci(o, "op")
            .and_then(Value::as_str)
            .and_then(PatchOpKind::parse)
            .ok_or_else(|| {
                ScimError::invalid_syntax(format!(
                    "operation {i}: \"op\" must be one of add, remove, replace"
                ))
            })?;
        let value = get_ci(o, "value").cloned();
        let path_str = match get_ci(o, "path") {
            None | Some(Value::Null) => None,
            Some(Value::String(s)) if s.trim().is_empty() => None,
            Some(Value::String(s)) => Some(s.trim()),
            Some(_) => {
                return Err(ScimError::invalid_path(format!(
                    "operation {i}: \"path\" must be a string"
                )));
            }
        };
        if kind != PatchOpKind::Remove && value.is_none() {
            return Err(ScimError::invalid_syntax(format!(
                "operation {i}: \"{}\" needs a \"value\"",
                kind.as_str()
            )));
        }
        match path_str {
            None if kind == PatchOpKind::Remove => {
                // RFC 7644 §3.5.2.2
                return Err(ScimError::no_target(format!(
                    "operation {i}: \"remove\" needs a \"path\""
                )));
            }
            None => out.push(PatchOperation {
                op: kind,
                path: None,
                value,
            }),
            Some(p) => {
                if let Some(ext) = rt.extension(p) {
                    // The path names a whole extension.
                    if kind == PatchOpKind::Remove {
                        for a in ext.attributes {
                            if a.mutability == Mutability::ReadOnly {
                                continue;
                            }
                            out.push(PatchOperation {
                                op: kind,
                                path: Some(PatchPath {
                                    attr: filter::AttrPath::new(a.name).with_urn(ext.id),
                                    filter: None,
                                    sub_after_filter: None,
                                }),
                                value: None,
                            });
                        }
                    } else {
                        let mut wrapped = Map::new();
                        wrapped.insert(ext.id.to_string(), value.unwrap_or(Value::Null));
                        out.push(PatchOperation {
                            op: kind,
                            path: None,
                            value: Some(Value::Object(wrapped)),
                        });
                    }
                    continue;
                }
                out.push(PatchOperation {
                    op: kind,
                    path: Some(parse_path(rt, p)?),
                    value,
                });
            }
        }
    }
    Ok(out)
}

/// Apply operations to a resource (RFC 7644 §3.5.2.1–3), all or nothing: the
/// input is never modified; the first failing operation fails the whole request.
pub fn apply(
    rt: &ResourceType,
    resource: &Value,
    ops: &[PatchOperation],
) -> Result<Value, ScimError> {
    let Value::Object(original) = resource else {
        return Err(ScimError::invalid_value("resource must be a JSON object"));
    };
    let mut doc = original.clone();
    for (i, op) in ops.iter().enumerate() {
        apply_one(rt, &mut doc, op).map_err(|mut e| {
            e.detail = format!("operation {i} ({}): {}", op.op.as_str(), e.detail);
            e
        })?;
    }
    check_required_kept(rt, original, &doc)?;
    sync_schemas(rt, &mut doc);
    Ok(Value::Object(doc))
}

/// RFC 7644 §3.5.2.2: a required attribute that becomes unassigned → `mutability`.
fn check_required_kept(
    rt: &ResourceType,
    before: &Map<String, Value>,
    after: &Map<String, Value>,
) -> Result<(), ScimError> {
    let check = |schema: &schema::Schema,
                 b: Option<&Map<String, Value>>,
                 a: Option<&Map<String, Value>>| {
        for attr in schema.attributes.iter().filter(|a| a.required) {
            let had = b
                .and_then(|m| get_ci(m, attr.name))
                .is_some_and(|v| !v.is_null());
            let has = a
                .and_then(|m| get_ci(m, attr.name))
                .is_some_and(|v| !v.is_null());
            if had && !has {
                return Err(ScimError::mutability(format!(
                    "required attribute \"{}\" cannot be removed",
                    attr.name
                )));
            }
        }
        Ok(())
    };
    check(rt.schema, Some(before), Some(after))?;
    for (ext, _) in rt.extensions {
        check(
            ext,
            get_ci(before, ext.id).and_then(Value::as_object),
            get_ci(after, ext.id).and_then(Value::as_object),
        )?;
    }
    Ok(())
}

/// Keep `schemas` in step with the extensions present (RFC 7643 §3).
fn sync_schemas(rt: &ResourceType, doc: &mut Map<String, Value>) {
    let mut schemas = vec![Value::String(rt.schema.id.to_string())];
    for (ext, _) in rt.extensions {
        let key = key_ci(doc, ext.id);
        let present = key
            .as_ref()
            .and_then(|k| doc.get(k))
            .and_then(Value::as_object)
            .is_some_and(|o| !o.is_empty());
        if present {
            schemas.push(Value::String(ext.id.to_string()));
        } else if let Some(k) = key {
            doc.remove(&k);
        }
    }
    let key = key_ci(doc, "schemas").unwrap_or_else(|| "schemas".into());
    doc.remove(&key);
    doc.insert("schemas".into(), Value::Array(schemas));
}

fn key_ci(map: &Map<String, Value>, name: &str) -> Option<String> {
    if map.contains_key(name) {
        return Some(name.to_string());
    }
    map.keys().find(|k| k.eq_ignore_ascii_case(name)).cloned()
}

/// Rename a case variant of `name` to the canonical spelling.
fn canon_key(map: &mut Map<String, Value>, name: &str) {
    if let Some(k) = key_ci(map, name)
        && k != name
        && let Some(v) = map.remove(&k)
    {
        map.insert(name.to_string(), v);
    }
}

fn apply_one(
    rt: &ResourceType,
    doc: &mut Map<String, Value>,
    op: &PatchOperation,
) -> Result<(), ScimError> {
    match &op.path {
        Some(p) => apply_path(rt, doc, op.op, p, op.value.as_ref(), false),
        None => {
            if op.op == PatchOpKind::Remove {
                return Err(ScimError::no_target("\"remove\" needs a \"path\""));
            }
            let Some(Value::Object(v)) = &op.value else {
                return Err(ScimError::invalid_value(
                    "without \"path\", \"value\" must be an object of attributes",
                ));
            };
            apply_pathless(rt, doc, op.op, v)
        }
    }
}

/// Add/replace without a path: each key is an attribute path (RFC 7644
/// §3.5.2.1, §3.5.2.3), including dotted and URN-prefixed keys and extension
/// objects. Unknown and readOnly keys are ignored.
fn apply_pathless(
    rt: &ResourceType,
    doc: &mut Map<String, Value>,
    kind: PatchOpKind,
    value: &Map<String, Value>,
) -> Result<(), ScimError> {
    for (k, v) in value {
        if k.eq_ignore_ascii_case("schemas") {
            continue;
        }
        if let Some(ext) = rt
            .extension(k)
            .or_else(|| rt.schema.id.eq_ignore_ascii_case(k).then_some(rt.schema))
        {
            let Value::Object(inner) = v else {
                if v.is_null() && kind == PatchOpKind::Replace && !std::ptr::eq(ext, rt.schema) {
                    // Replacing an extension with null unassigns it.
                    for a in ext
                        .attributes
                        .iter()
                        .filter(|a| a.mutability != Mutability::ReadOnly)
                    {
                        let p = PatchPath {
                            attr: filter::AttrPath::new(a.name).with_urn(ext.id),
                            filter: None,
                            sub_after_filter: None,
                        };
                        apply_path(rt, doc, PatchOpKind::Remove, &p, None, true)?;
                    }
                    continue;
                }
                return Err(ScimError::invalid_value(format!(
                    "\"{k}\" must be an object"
                )));
            };
            for (ik, iv) in inner {
                let Ok(mut ap) = filter::parse_attr_path(ik) else {
                    continue;
                };
                if !std::ptr::eq(ext, rt.schema) {
                    ap.urn = Some(ext.id.to_string());
                }
                apply_key(rt, doc, kind, &ap, iv)?;
            }
            continue;
        }
        let Ok(ap) = filter::parse_attr_path(k) else {
            continue;
        };
        apply_key(rt, doc, kind, &ap, v)?;
    }
    Ok(())
}

fn apply_key(
    rt: &ResourceType,
    doc: &mut Map<String, Value>,
    kind: PatchOpKind,
    ap: &filter::AttrPath,
    v: &Value,
) -> Result<(), ScimError> {
    let Ok(r) = schema::resolve_static(rt, ap) else {
        return Ok(()); // unknown attributes are ignored, as on create
    };
    let p = PatchPath {
        attr: r.canonical_path(rt),
        filter: None,
        sub_after_filter: None,
    };
    apply_path(rt, doc, kind, &p, Some(v), true)
}

/// The object holding the target's attribute: the resource, or its extension object.
fn container<'d>(
    doc: &'d mut Map<String, Value>,
    t: &PathTarget,
    create: bool,
) -> Option<&'d mut Map<String, Value>> {
    if !t.is_extension {
        canon_key(doc, t.attr.name);
        return Some(doc);
    }
    canon_key(doc, t.schema.id);
    if !matches!(doc.get(t.schema.id), Some(Value::Object(_))) {
        if !create {
            return None;
        }
        doc.insert(t.schema.id.to_string(), Value::Object(Map::new()));
    }
    let c = doc.get_mut(t.schema.id)?.as_object_mut()?;
    canon_key(c, t.attr.name);
    Some(c)
}

fn mutability_err(name: &str, why: &str) -> ScimError {
    ScimError::mutability(format!("attribute \"{name}\" is {why}"))
}

/// RFC 7644 §3.5.2: an immutable attribute may only be added when unassigned.
fn check_immutable(
    attr: &Attribute,
    existing: Option<&Value>,
    new: Option<&Value>,
) -> Result<(), ScimError> {
    if attr.mutability != Mutability::Immutable {
        return Ok(());
    }
    match existing {
        Some(e) if !e.is_null() && Some(e) != new => Err(mutability_err(attr.name, "immutable")),
        _ => Ok(()),
    }
}

fn str_eq(attr: Option<&Attribute>, a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::String(x), Value::String(y)) => {
            if attr.is_some_and(|a| a.case_exact) {
                x == y
            } else {
                x.to_lowercase() == y.to_lowercase()
            }
        }
        _ => a == b,
    }
}

/// Whether two elements of a multi-valued attribute are the same value.
/// Complex values with a "value" sub-attribute compare by value (and by type
/// when both carry one); others compare as JSON.
fn same_element(attr: &Attribute, a: &Value, b: &Value, ignore_type: bool) -> bool {
    if !attr.is_complex() {
        return str_eq(Some(attr), a, b);
    }
    let (Some(ao), Some(bo)) = (a.as_object(), b.as_object()) else {
        return a == b;
    };
    match (ao.get("value"), bo.get("value")) {
        (Some(av), Some(bv)) => {
            if !str_eq(attr.sub("value"), av, bv) {
                return false;
            }
            if ignore_type {
                return true;
            }
            match (ao.get("type"), bo.get("type")) {
                (Some(at), Some(bt)) => str_eq(attr.sub("type"), at, bt),
                _ => true,
            }
        }
        _ => a == b,
    }
}

fn is_primary(v: &Value) -> bool {
    v.get("primary").and_then(Value::as_bool) == Some(true)
}

/// RFC 7643 §2.4: when a value becomes primary, the others stop being primary.
fn settle_primary(attr: &Attribute, items: &mut [Value], newly: &[usize]) -> Result<(), ScimError> {
    if attr.sub("primary").is_none() {
        return Ok(());
    }
    if let Some(&winner) = newly
        .iter()
        .rev()
        .find(|&&i| items.get(i).is_some_and(is_primary))
    {
        for (i, item) in items.iter_mut().enumerate() {
            if i != winner
                && is_primary(item)
                && let Some(o) = item.as_object_mut()
            {
                o.insert("primary".into(), Value::Bool(false));
            }
        }
    }
    check_primary(attr, items)
}

fn apply_path(
    rt: &ResourceType,
    doc: &mut Map<String, Value>,
    kind: PatchOpKind,
    p: &PatchPath,
    value: Option<&Value>,
    lenient_readonly: bool,
) -> Result<(), ScimError> {
    let t = p.target(rt)?;
    let read_only = t.attr.mutability == Mutability::ReadOnly
        || t.sub.is_some_and(|s| s.mutability == Mutability::ReadOnly);
    if read_only {
        if lenient_readonly {
            return Ok(());
        }
        return Err(mutability_err(t.sub.unwrap_or(t.attr).name, "readOnly"));
    }
    if kind != PatchOpKind::Remove && value.is_none() {
        return Err(ScimError::invalid_value("a \"value\" is required"));
    }
    match &p.filter {
        None => apply_plain(doc, kind, &t, value),
        Some(f) => apply_filtered(rt, doc, kind, &t, f, value),
    }
}

fn apply_plain(
    doc: &mut Map<String, Value>,
    kind: PatchOpKind,
    t: &PathTarget,
    value: Option<&Value>,
) -> Result<(), ScimError> {
    let attr = t.attr;
    let Some(cont) = container(doc, t, kind != PatchOpKind::Remove) else {
        return Ok(()); // removing from an absent extension: nothing to do
    };
    let name = attr.name;
    match (attr.multi_valued, t.sub) {
        // Single-valued attribute.
        (false, None) => match kind {
            PatchOpKind::Remove => {
                check_immutable(attr, cont.get(name), None)?;
                cont.remove(name);
            }
            PatchOpKind::Add | PatchOpKind::Replace => {
                let new = coerce_value(attr, value.unwrap_or(&Value::Null))?;
                match new {
                    None => {
                        if kind == PatchOpKind::Replace {
                            check_immutable(attr, cont.get(name), None)?;
                            cont.remove(name);
                        }
                    }
                    Some(Value::Object(nv)) if attr.is_complex() => {
                        // §3.5.2.1/§3.5.2.3: sub-attributes not given are left unchanged.
                        let entry = cont
                            .entry(name.to_string())
                            .or_insert_with(|| Value::Object(Map::new()));
                        if !entry.is_object() {
                            *entry = Value::Object(Map::new());
                        }
                        if let Some(obj) = entry.as_object_mut() {
                            for (k, sv) in nv {
                                if let Some(sub) = attr.sub(&k) {
                                    check_immutable(sub, obj.get(sub.name), Some(&sv))?;
                                }
                                obj.insert(k, sv);
                            }
                        }
                    }
                    Some(nv) => {
                        check_immutable(attr, cont.get(name), Some(&nv))?;
                        cont.insert(name.to_string(), nv);
                    }
                }
            }
        },
        // Sub-attribute of a single-valued complex attribute (name.givenName).
        (false, Some(sub)) => match kind {
            PatchOpKind::Remove => {
                if let Some(Value::Object(obj)) = cont.get_mut(name) {
                    canon_key(obj, sub.name);
                    check_immutable(sub, obj.get(sub.name), None)?;
                    obj.remove(sub.name);
                    if obj.is_empty() {
                        cont.remove(name);
                    }
                }
            }
            PatchOpKind::Add | PatchOpKind::Replace => {
                let new = coerce_value(sub, value.unwrap_or(&Value::Null))?;
                let entry = cont
                    .entry(name.to_string())
                    .or_insert_with(|| Value::Object(Map::new()));
                if !entry.is_object() {
                    *entry = Value::Object(Map::new());
                }
                if let Some(obj) = entry.as_object_mut() {
                    canon_key(obj, sub.name);
                    check_immutable(sub, obj.get(sub.name), new.as_ref())?;
                    match new {
                        Some(nv) => {
                            obj.insert(sub.name.to_string(), nv);
                        }
                        None => {
                            obj.remove(sub.name);
                        }
                    }
                    if obj.is_empty() {
                        cont.remove(name);
                    }
                }
            }
        },
        // Multi-valued attribute as a whole.
        (true, None) => match kind {
            PatchOpKind::Remove => match value {
                // Entra/Okta: remove the listed values only.
                Some(v) if !v.is_null() => {
                    let Some(Value::Array(targets)) = coerce_value(attr, v)? else {
                        return Ok(());
                    };
                    if let Some(Value::Array(items)) = cont.get_mut(name) {
                        items.retain(|it| !targets.iter().any(|t| same_element(attr, it, t, true)));
                        if items.is_empty() {
                            cont.remove(name);
                        }
                    }
                }
                _ => {
                    cont.remove(name);
                }
            },
            PatchOpKind::Replace => match coerce_value(attr, value.unwrap_or(&Value::Null))? {
                None => {
                    cont.remove(name);
                }
                Some(nv) => {
                    cont.insert(name.to_string(), nv);
                }
            },
            PatchOpKind::Add => {
                let Some(Value::Array(new)) = coerce_value(attr, value.unwrap_or(&Value::Null))?
                else {
                    return Ok(());
                };
                let entry = cont
                    .entry(name.to_string())
                    .or_insert_with(|| Value::Array(vec![]));
                if !entry.is_array() {
                    *entry = Value::Array(vec![]);
                }
                if let Value::Array(items) = entry {
                    let mut touched = Vec::new();
                    for nv in new {
                        // §3.5.2.1: a value already present is not added twice.
                        match items
                            .iter()
                            .position(|it| same_element(attr, it, &nv, false))
                        {
                            Some(i) => {
                                if let (Some(obj), Value::Object(nobj)) =
                                    (items[i].as_object_mut(), nv)
                                {
                                    obj.extend(nobj);
                                }
                                touched.push(i);
                            }
                            None => {
                                items.push(nv);
                                touched.push(items.len() - 1);
                            }
                        }
                    }
                    settle_primary(attr, items, &touched)?;
                }
            }
        },
        // A sub-attribute of every value (emails.type without a filter).
        (true, Some(sub)) => {
            let new = match kind {
                PatchOpKind::Remove => None,
                _ => coerce_value(sub, value.unwrap_or(&Value::Null))?,
            };
            let entry = cont
                .entry(name.to_string())
                .or_insert_with(|| Value::Array(vec![]));
            if !entry.is_array() {
                *entry = Value::Array(vec![]);
            }
            if let Value::Array(items) = entry {
                if items.is_empty() && kind != PatchOpKind::Remove {
                    if let Some(nv) = &new {
                        let mut o = Map::new();
                        o.insert(sub.name.to_string(), nv.clone());
                        items.push(Value::Object(o));
                    }
                } else {
                    for it in items.iter_mut() {
                        if let Some(o) = it.as_object_mut() {
                            canon_key(o, sub.name);
                            check_immutable(sub, o.get(sub.name), new.as_ref())?;
                            match &new {
                                Some(nv) => {
                                    o.insert(sub.name.to_string(), nv.clone());
                                }
                                None => {
                                    o.remove(sub.name);
                                }
                            }
                        }
                    }
                    items.retain(|it| it.as_object().is_none_or(|o| !o.is_empty()));
                }
                check_primary(attr, items)?;
                if items.is_empty() {
                    cont.remove(name);
                }
            }
        }
    }
    Ok(())
}

/// Equality conditions of a filter made only of `eq` and `and`
/// (`type eq "work"`), used to create the element an `add` targets.
fn eq_conditions(f: &Filter, out: &mut Vec<(String, Value)>) -> bool {
    match f {
        Filter::And(a, b) => eq_conditions(a, out) && eq_conditions(b, out),
        Filter::Compare {
            path,
            op: CompareOp::Eq,
            value,
        } => {
            let v = match value {
                CompValue::Str(s) => Value::String(s.clone()),
                CompValue::Bool(b) => Value::Bool(*b),
                CompValue::Num(n) => Value::Number(n.clone()),
                CompValue::Null => return false,
            };
            out.push((path.attr.clone(), v));
            true
        }
        _ => false,
    }
}

fn apply_filtered(
    rt: &ResourceType,
    doc: &mut Map<String, Value>,
    kind: PatchOpKind,
    t: &PathTarget,
    f: &Filter,
    value: Option<&Value>,
) -> Result<(), ScimError> {
    let attr = t.attr;
    let name = attr.name;
    let Some(cont) = container(doc, t, kind == PatchOpKind::Add) else {
        return Err(ScimError::no_target(format!(
            "no value of \"{name}\" matches the filter"
        )));
    };
    let mut items: Vec<Value> = match cont.remove(name) {
        Some(Value::Array(a)) => a,
        Some(Value::Null) | None => vec![],
        Some(other) => vec![other],
    };
    let matched: Vec<usize> = items
        .iter()
        .enumerate()
        .filter(|(_, e)| filter::matches_element(rt, attr, f, e))
        .map(|(i, _)| i)
        .collect();
    let result = (|| -> Result<(), ScimError> {
        if matched.is_empty() {
            if kind != PatchOpKind::Add {
                // RFC 7644 §3.5.2.2, §3.5.2.3
                return Err(ScimError::no_target(format!(
                    "no value of \"{name}\" matches the filter"
                )));
            }
            // Entra: add to emails[type eq "work"].value when there is none yet.
            let mut conds = Vec::new();
            if !eq_conditions(f, &mut conds) {
                return Err(ScimError::no_target(format!(
                    "no value of \"{name}\" matches the filter"
                )));
            }
            let mut elem = Map::new();
            for (k, v) in conds {
                elem.insert(k, v);
            }
            match t.sub {
                Some(sub) => {
                    if let Some(nv) = coerce_value(sub, value.unwrap_or(&Value::Null))? {
                        elem.insert(sub.name.to_string(), nv);
                    }
                }
                None => {
                    if let Some(Value::Object(nv)) =
                        coerce_single(attr, value.unwrap_or(&Value::Null))?
                    {
                        elem.extend(nv);
                    }
                }
            }
            let elem = coerce_single(attr, &Value::Object(elem))?.unwrap_or(Value::Null);
            if !elem.is_null() {
                items.push(elem);
                let last = items.len() - 1;
                settle_primary(attr, &mut items, &[last])?;
            }
            return Ok(());
        }
        match (kind, t.sub) {
            (PatchOpKind::Remove, None) => {
                let mut i = 0;
                items.retain(|_| {
                    let keep = !matched.contains(&i);
                    i += 1;
                    keep
                });
            }
            (PatchOpKind::Remove, Some(sub)) => {
                for &i in &matched {
                    if let Some(o) = items[i].as_object_mut() {
                        canon_key(o, sub.name);
                        check_immutable(sub, o.get(sub.name), None)?;
                        o.remove(sub.name);
                    }
                }
                items.retain(|it| it.as_object().is_none_or(|o| !o.is_empty()));
            }
            (_, Some(sub)) => {
                let nv = coerce_value(sub, value.unwrap_or(&Value::Null))?;
                for &i in &matched {
                    if let Some(o) = items[i].as_object_mut() {
                        canon_key(o, sub.name);
                        check_immutable(sub, o.get(sub.name), nv.as_ref())?;
                        match &nv {
                            Some(v) => {
                                o.insert(sub.name.to_string(), v.clone());
                            }
                            None => {
                                o.remove(sub.name);
                            }
                        }
                    }
                }
                items.retain(|it| it.as_object().is_none_or(|o| !o.is_empty()));
                settle_primary(attr, &mut items, &matched)?;
            }
            (_, None) => {
                let nv = coerce_single(attr, value.unwrap_or(&Value::Null))?;
                let Some(Value::Object(nv)) = nv else {
                    return Err(ScimError::invalid_value(format!(
                        "a value of \"{name}\" must be an object"
                    )));
                };
                for &i in &matched {
                    if let Some(o) = items[i].as_object_mut() {
                        for sub in attr.sub_attributes {
                            if sub.mutability == Mutability::Immutable {
                                // replace drops what it does not repeat; add keeps it.
                                let after = match kind {
                                    PatchOpKind::Replace => nv.get(sub.name),
                                    _ => nv.get(sub.name).or(o.get(sub.name)),
                                };
                                check_immutable(sub, o.get(sub.name), after)?;
                            }
                        }
                        if kind == PatchOpKind::Replace {
                            // §3.5.2.3: matching values are replaced.
                            *o = nv.clone();
                        } else {
                            o.extend(nv.clone());
                        }
                    }
                }
                settle_primary(attr, &mut items, &matched)?;
            }
        }
        Ok(())
    })();
    // Put the list back (the whole document is discarded on error anyway).
    if !items.is_empty() {
        cont.insert(name.to_string(), Value::Array(items));
    }
    result
}

/// A change to a group's `members` expressed as a set operation, so the store
/// can apply it with inserts/deletes instead of a read-modify-write of the
/// whole list (concurrent PATCHes then never lose members).
#[derive(Debug, Clone, PartialEq)]
pub enum MemberChange {
    /// Add these members (normalised elements: `value`, optional `$ref`,
    /// `type`); members already present are kept as they are.
    Add(Vec<Value>),
    /// Remove the members with these ids (case-exact). `must_match`: the operation was a
    /// filter (`members[value eq "…"]`), so RFC 7644 §3.5.2.2 requires 400
    /// `noTarget` when none of them is a member; the value-array form (Entra,
    /// Okta) removes whatever is present.
    Remove {
        values: Vec<String>,
        must_match: bool,
    },
    /// `remove` of `members` without value or filter.
    RemoveAll,
    /// `replace` of `members` (Okta group push): the new full list.
    ReplaceAll(Vec<Value>),
}

/// Ids in `members[value eq "a" or value eq "b"]`.
fn member_ids_of_filter(f: &Filter, out: &mut Vec<String>) -> bool {
    match f {
        Filter::Or(a, b) => member_ids_of_filter(a, out) && member_ids_of_filter(b, out),
        Filter::Compare {
            path,
            op: CompareOp::Eq,
            value: CompValue::Str(v),
        } if path.attr == "value" && path.sub_attr.is_none() => {
            out.push(v.clone());
            true
        }
        _ => false,
    }
}

fn member_values(attr: &Attribute, v: Option<&Value>) -> Result<Vec<Value>, ScimError> {
    match coerce_value(attr, v.unwrap_or(&Value::Null))? {
        Some(Value::Array(items)) => Ok(items),
        _ => Ok(vec![]),
    }
}

fn value_strings(items: &[Value]) -> Vec<String> {
    items
        .iter()
        .filter_map(|i| i.get("value").and_then(Value::as_str).map(str::to_string))
        .collect()
}

/// Split PATCH operations on a resource with `members` (Groups) into member
/// set changes, in order, and the remaining operations (for [`apply`]).
/// `Ok(None)` when an operation needs the whole member list (a filter other
/// than `value eq` alternatives, a sub-attribute path such as
/// `members[value eq "x"].type`, …): then use [`apply`] on the full resource.
/// Errors are those [`apply`] would report for the member operations.
#[allow(clippy::type_complexity)]
pub fn member_changes(
    rt: &ResourceType,
    ops: &[PatchOperation],
) -> Result<Option<(Vec<MemberChange>, Vec<PatchOperation>)>, ScimError> {
    let Some(members) = rt.schema.attribute("members") else {
        return Ok(Some((vec![], ops.to_vec())));
    };
    let mut changes = Vec::new();
    let mut rest = Vec::new();
    for op in ops {
        match &op.path {
            Some(p) if p.attr.urn.is_none() && p.attr.attr == "members" => {
                if p.attr.sub_attr.is_some() || p.sub_after_filter.is_some() {
                    return Ok(None);
                }
                match (&p.filter, op.op) {
                    (None, PatchOpKind::Add) => {
                        changes.push(MemberChange::Add(member_values(
                            members,
                            op.value.as_ref(),
                        )?));
                    }
                    (None, PatchOpKind::Replace) => {
                        changes.push(MemberChange::ReplaceAll(member_values(
                            members,
                            op.value.as_ref(),
                        )?));
                    }
                    (None, PatchOpKind::Remove) => match &op.value {
                        Some(v) if !v.is_null() => changes.push(MemberChange::Remove {
                            values: value_strings(&member_values(members, Some(v))?),
                            must_match: false,
                        }),
                        _ => changes.push(MemberChange::RemoveAll),
                    },
                    (Some(f), PatchOpKind::Remove) => {
                        let mut ids = Vec::new();
                        if !member_ids_of_filter(f, &mut ids) {
                            return Ok(None);
                        }
                        changes.push(MemberChange::Remove {
                            values: ids,
                            must_match: true,
                        });
                    }
                    (Some(_), _) => return Ok(None),
                }
            }
            None if op.op != PatchOpKind::Remove => {
                let Some(Value::Object(obj)) = &op.value else {
                    rest.push(op.clone());
                    continue;
                };
                let mut others = Map::new();
                for (k, v) in obj {
                    if k.eq_ignore_ascii_case("members") {
                        let items = member_values(members, Some(v))?;
                        changes.push(match op.op {
                            PatchOpKind::Add => MemberChange::Add(items),
                            _ => MemberChange::ReplaceAll(items),
                        });
                    } else {
                        others.insert(k.clone(), v.clone());
                    }
                }
                if !others.is_empty() {
                    rest.push(PatchOperation {
                        op: op.op,
                        path: None,
                        value: Some(Value::Object(others)),
                    });
                }
            }
            _ => rest.push(op.clone()),
        }
    }
    Ok(Some((changes, rest)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scim::error::ScimType;
    use crate::scim::schema::{GROUP_RESOURCE, USER_RESOURCE};
    use crate::scim::{ENTERPRISE_USER_SCHEMA, GROUP_SCHEMA, USER_SCHEMA};
    use proptest::prelude::*;
    use serde_json::json;

    const EXT: &str = ENTERPRISE_USER_SCHEMA;

    fn body(ops: Value) -> Value {
        json!({"schemas": [PATCH_OP], "Operations": ops})
    }

    fn run(rt: &ResourceType, resource: &Value, ops: Value) -> Result<Value, ScimError> {
        let ops = parse_request(rt, &body(ops))?;
        apply(rt, resource, &ops)
    }

    fn ok(rt: &ResourceType, resource: &Value, ops: Value) -> Value {
        run(rt, resource, ops.clone()).unwrap_or_else(|e| panic!("{ops}: {e}"))
    }

    fn fails(rt: &ResourceType, resource: &Value, ops: Value, t: ScimType) -> ScimError {
        let before = resource.clone();
        let e = run(rt, resource, ops.clone()).expect_err(&ops.to_string());
        assert_eq!((e.status, e.scim_type), (400, Some(t)), "{ops}: {e}");
        assert_eq!(resource, &before);
        e
    }

    fn group() -> Value {
        json!({
            "schemas": [GROUP_SCHEMA],
            "id": "e9e30dba-f08f-4109-8486-d5c6a331660a",
            "displayName": "Tour Guides",
            "members": [
                {"value": "2819c223-7f76-453a-919d-413861904646", "$ref": "https://example.com/v2/Users/2819c223-7f76-453a-919d-413861904646", "type": "User"},
                {"value": "902c246b-6245-4190-8e05-00816be7344a", "type": "User"}
            ],
            "meta": {"resourceType": "Group", "version": "W/\"3694e05e9dff592\""}
        })
    }

    fn user() -> Value {
        json!({
            "schemas": [USER_SCHEMA],
            "id": "2819c223-7f76-453a-919d-413861904646",
            "userName": "bjensen",
            "name": {"givenName": "Barbara", "familyName": "Jensen"},
            "active": true,
            "emails": [
                {"value": "bjensen@example.com", "type": "work", "primary": true},
                {"value": "babs@jensen.org", "type": "home"}
            ],
            "addresses": [
                {"type": "work", "streetAddress": "100 Universal City Plaza", "locality": "Hollywood", "primary": true},
                {"type": "home", "streetAddress": "456 Hollywood Blvd", "locality": "Hollywood"}
            ],
            "meta": {"resourceType": "User"}
        })
    }

    fn member_ids(g: &Value) -> Vec<String> {
        g["members"]
            .as_array()
            .map(|a| {
                a.iter()
                    .map(|m| m["value"].as_str().unwrap().to_string())
                    .collect()
            })
            .unwrap_or_default()
    }

    // ---- parse_request ----

    #[test]
    fn parse_request_accepts_any_op_case() {
        let ops = parse_request(
            &USER_RESOURCE,
            &body(json!([
                {"op": "Replace", "path": "active", "value": "False"},
                {"op": "ADD", "path": "nickName", "value": "B"},
                {"op": "remove", "path": "title"}
            ])),
        )
        .unwrap();
        let kinds: Vec<_> = ops.iter().map(|o| o.op).collect();
        assert_eq!(
            kinds,
            [PatchOpKind::Replace, PatchOpKind::Add, PatchOpKind::Remove]
        );
        assert_eq!(
            ops[0].path.as_ref().unwrap().attr,
            filter::AttrPath::new("active")
        );
        // "operations" in any case too.
        let lower = json!({"schemas": [PATCH_OP], "operations": [{"op": "add", "value": {"nickName": "x"}}]});
        assert_eq!(parse_request(&USER_RESOURCE, &lower).unwrap().len(), 1);
    }

    #[test]
    fn parse_request_errors() {
        let u = &USER_RESOURCE;
        let cases = [
            (json!([1]), ScimType::InvalidSyntax),
            (
                json!({"Operations": [{"op": "add", "value": {}}]}),
                ScimType::InvalidSyntax,
            ),
            (
                json!({"schemas": [USER_SCHEMA], "Operations": [{"op": "add", "value": {}}]}),
                ScimType::InvalidSyntax,
            ),
            (json!({"schemas": [PATCH_OP]}), ScimType::InvalidSyntax),
            (
                json!({"schemas": [PATCH_OP], "Operations": []}),
                ScimType::InvalidSyntax,
            ),
            (
                json!({"schemas": [PATCH_OP], "Operations": {"op": "add"}}),
                ScimType::InvalidSyntax,
            ),
            (body(json!(["add"])), ScimType::InvalidSyntax),
            (
                body(json!([{"op": "move", "path": "title", "value": "x"}])),
                ScimType::InvalidSyntax,
            ),
            (
                body(json!([{"path": "title", "value": "x"}])),
                ScimType::InvalidSyntax,
            ),
            (
                body(json!([{"op": "add", "path": "title"}])),
                ScimType::InvalidSyntax,
            ),
            (body(json!([{"op": "replace"}])), ScimType::InvalidSyntax),
            // RFC 7644 §3.5.2.2: remove without path → noTarget.
            (body(json!([{"op": "remove"}])), ScimType::NoTarget),
            (
                body(json!([{"op": "remove", "path": ""}])),
                ScimType::NoTarget,
            ),
            (
                body(json!([{"op": "add", "path": 5, "value": "x"}])),
                ScimType::InvalidPath,
            ),
            (
                body(json!([{"op": "add", "path": "nosuch", "value": "x"}])),
                ScimType::InvalidPath,
            ),
            (
                body(json!([{"op": "add", "path": "emails[type eq]", "value": "x"}])),
                ScimType::InvalidFilter,
            ),
        ];
        for (b, t) in cases {
            let e = parse_request(u, &b).expect_err(&b.to_string());
            assert_eq!((e.status, e.scim_type), (400, Some(t)), "{b}: {e}");
        }
    }

    // ---- RFC 7644 §3.5.2.1 add ----

    #[test]
    fn rfc_add_member_to_group() {
        let g = ok(
            &GROUP_RESOURCE,
            &group(),
            json!([{"op": "add", "path": "members", "value": [{
                "display": "Babs Jensen",
                "$ref": "https://example.com/v2/Users/08e1d05d-121c-4561-8b96-473d93df9210",
                "value": "08e1d05d-121c-4561-8b96-473d93df9210"
            }]}]),
        );
        assert_eq!(
            member_ids(&g),
            [
                "2819c223-7f76-453a-919d-413861904646",
                "902c246b-6245-4190-8e05-00816be7344a",
                "08e1d05d-121c-4561-8b96-473d93df9210"
            ]
        );
        // display is readOnly: the server fills it in, the input is ignored.
        assert!(g["members"][2].get("display").is_none());
        assert_eq!(
            g["members"][2]["$ref"],
            "https://example.com/v2/Users/08e1d05d-121c-4561-8b96-473d93df9210"
        );
        // Everything else is untouched.
        assert_eq!(g["meta"], group()["meta"]);
        assert_eq!(g["displayName"], "Tour Guides");
    }

    #[test]
    fn rfc_add_without_path() {
        let u = ok(
            &USER_RESOURCE,
            &user(),
            json!([{"op": "add", "value": {
                "emails": [{"value": "babs@jensen.org", "type": "home"}, {"value": "b2@x.org", "type": "other"}],
                "nickName": "Babs"
            }}]),
        );
        assert_eq!(u["nickName"], "Babs");
        // The existing home address is not duplicated; the new one is appended.
        let emails: Vec<_> = u["emails"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["value"].as_str().unwrap())
            .collect();
        assert_eq!(
            emails,
            ["bjensen@example.com", "babs@jensen.org", "b2@x.org"]
        );
    }

    #[test]
    fn add_is_idempotent_for_existing_values() {
        let g = ok(
            &GROUP_RESOURCE,
            &group(),
            json!([{"op": "add", "path": "members", "value": [{"value": "2819c223-7f76-453a-919d-413861904646"}]}]),
        );
        assert_eq!(g, {
            let mut want = group();
            want["schemas"] = json!([GROUP_SCHEMA]);
            want
        });
        // Single-valued and complex adds replace/merge.
        let u = ok(
            &USER_RESOURCE,
            &user(),
            json!([{"op": "add", "path": "name", "value": {"middleName": "Jane"}}, {"op": "add", "path": "userName", "value": "babs"}]),
        );
        assert_eq!(
            u["name"],
            json!({"givenName": "Barbara", "familyName": "Jensen", "middleName": "Jane"})
        );
        assert_eq!(u["userName"], "babs");
    }

    // ---- RFC 7644 §3.5.2.2 remove ----

    #[test]
    fn rfc_remove_single_member() {
        let g = ok(
            &GROUP_RESOURCE,
            &group(),
            json!([{"op": "remove", "path": "members[value eq \"2819c223-7f76-453a-919d-413861904646\"]"}]),
        );
        assert_eq!(member_ids(&g), ["902c246b-6245-4190-8e05-00816be7344a"]);
    }

    #[test]
    fn rfc_remove_all_members_and_multiple() {
        let g = ok(
            &GROUP_RESOURCE,
            &group(),
            json!([{"op": "remove", "path": "members"}]),
        );
        assert!(g.get("members").is_none());
        let g = ok(
            &GROUP_RESOURCE,
            &group(),
            json!([
                {"op": "remove", "path": "members[value eq\"2819c223-7f76-453a-919d-413861904646\"]"},
                {"op": "remove", "path": "members[value eq\"902c246b-6245-4190-8e05-00816be7344a\"]"}
            ]),
        );
        assert!(g.get("members").is_none());
        // RFC: replace all members by removing then adding.
        let g = ok(
            &GROUP_RESOURCE,
            &group(),
            json!([
                {"op": "remove", "path": "members"},
                {"op": "add", "path": "members", "value": [{"value": "a"}, {"value": "b"}]}
            ]),
        );
        assert_eq!(member_ids(&g), ["a", "b"]);
    }

    #[test]
    fn remove_single_valued_and_sub_attributes() {
        let u = ok(
            &USER_RESOURCE,
            &user(),
            json!([
                {"op": "remove", "path": "name.givenName"},
                {"op": "remove", "path": "active"},
                {"op": "remove", "path": "nickName"},
                {"op": "remove", "path": "emails[type eq \"work\"].primary"}
            ]),
        );
        assert_eq!(u["name"], json!({"familyName": "Jensen"}));
        assert!(u.get("active").is_none());
        assert_eq!(
            u["emails"][0],
            json!({"value": "bjensen@example.com", "type": "work"})
        );
        let u = ok(
            &USER_RESOURCE,
            &u,
            json!([{"op": "remove", "path": "name.familyName"}]),
        );
        assert!(
            u.get("name").is_none(),
            "an emptied complex attribute is unassigned"
        );
    }

    // ---- RFC 7644 §3.5.2.3 replace ----

    #[test]
    fn rfc_replace_members() {
        let g = ok(
            &GROUP_RESOURCE,
            &group(),
            json!([{"op": "replace", "path": "members", "value": [
                {"display": "Babs Jensen", "$ref": "https://example.com/v2/Users/2819c223", "value": "2819c223-7f76-453a-919d-413861904646"},
                {"display": "James Smith", "$ref": "https://example.com/v2/Users/08e1d05d", "value": "08e1d05d-121c-4561-8b96-473d93df9210"}
            ]}]),
        );
        assert_eq!(
            member_ids(&g),
            [
                "2819c223-7f76-453a-919d-413861904646",
                "08e1d05d-121c-4561-8b96-473d93df9210"
            ]
        );
    }

    #[test]
    fn rfc_replace_address_by_filter() {
        let u = ok(
            &USER_RESOURCE,
            &user(),
            json!([{"op": "replace", "path": "addresses[type eq \"work\"]", "value": {
                "type": "work",
                "streetAddress": "911 Universal City Plaza",
                "locality": "Hollywood",
                "region": "CA",
                "postalCode": "91608",
                "country": "US",
                "formatted": "911 Universal City Plaza\nHollywood, CA 91608 US",
                "primary": true
            }}]),
        );
        assert_eq!(
            u["addresses"][0]["streetAddress"],
            "911 Universal City Plaza"
        );
        assert_eq!(u["addresses"][0]["postalCode"], "91608");
        assert_eq!(u["addresses"][1], user()["addresses"][1]);
        let u = ok(
            &USER_RESOURCE,
            &user(),
            json!([{"op": "replace", "path": "addresses[type eq \"work\"].streetAddress", "value": "1010 Broadway Ave"}]),
        );
        assert_eq!(
            u["addresses"][0],
            json!({"type": "work", "streetAddress": "1010 Broadway Ave", "locality": "Hollywood", "primary": true})
        );
    }

    #[test]
    fn rfc_replace_without_path() {
        let u = ok(
            &USER_RESOURCE,
            &user(),
            json!([{"op": "replace", "value": {
                "emails": [
                    {"value": "bjensen@example.com", "type": "work", "primary": true},
                    {"value": "babs@jensen.org", "type": "home"},
                    {"value": "new@jensen.org", "type": "other"}
                ],
                "nickName": "Babs"
            }}]),
        );
        assert_eq!(u["emails"].as_array().unwrap().len(), 3);
        assert_eq!(u["nickName"], "Babs");
        // Complex single-valued replace merges sub-attributes (§3.5.2.3).
        let u = ok(
            &USER_RESOURCE,
            &user(),
            json!([{"op": "replace", "path": "name", "value": {"givenName": "Babs"}}]),
        );
        assert_eq!(
            u["name"],
            json!({"givenName": "Babs", "familyName": "Jensen"})
        );
        // Replacing a missing attribute adds it.
        let u = ok(
            &USER_RESOURCE,
            &user(),
            json!([{"op": "replace", "path": "title", "value": "Tour Guide"}]),
        );
        assert_eq!(u["title"], "Tour Guide");
    }

    // ---- IdP quirks ----

    #[test]
    fn entra_string_booleans_and_capitalised_ops() {
        // ../shared/corpora/entra-scim-postman "patch user omalley active with boolean"
        // and Microsoft's documented "Disable user" request.
        let u = ok(
            &USER_RESOURCE,
            &user(),
            json!([{"op": "Replace", "path": "active", "value": "False"}]),
        );
        assert_eq!(u["active"], false);
        let u = ok(
            &USER_RESOURCE,
            &u,
            json!([{"op": "Replace", "path": "active", "value": "True"}]),
        );
        assert_eq!(u["active"], true);
        let u = ok(
            &USER_RESOURCE,
            &user(),
            json!([{"op": "replace", "value": {"active": "false"}}]),
        );
        assert_eq!(u["active"], false);
        let u = ok(
            &USER_RESOURCE,
            &user(),
            json!([{"op": "Replace", "path": "emails[type eq \"work\"].primary", "value": "False"}]),
        );
        assert_eq!(u["emails"][0]["primary"], false);
        fails(
            &USER_RESOURCE,
            &user(),
            json!([{"op": "Replace", "path": "active", "value": "nope"}]),
            ScimType::InvalidValue,
        );
    }

    #[test]
    fn entra_update_user_multi_valued_and_single_valued() {
        // Microsoft Entra "Update User [Multi-valued properties]" and
        // "[Single-valued properties]" requests.
        let u = ok(
            &USER_RESOURCE,
            &user(),
            json!([
                {"op": "Replace", "path": "emails[type eq \"work\"].value", "value": "updatedEmail@microsoft.com"},
                {"op": "Replace", "path": "name.familyName", "value": "updatedFamilyName"},
                {"op": "Replace", "path": "userName", "value": "5b50642d-79fc-4410-9e90-4c077cdd1a59@testuser.com"}
            ]),
        );
        assert_eq!(u["emails"][0]["value"], "updatedEmail@microsoft.com");
        assert_eq!(u["emails"][0]["type"], "work");
        assert_eq!(u["name"]["familyName"], "updatedFamilyName");
        assert_eq!(
            u["userName"],
            "5b50642d-79fc-4410-9e90-4c077cdd1a59@testuser.com"
        );
    }

    #[test]
    fn entra_add_to_a_value_path_without_match_creates_the_value() {
        let mut start = user();
        start.as_object_mut().unwrap().remove("emails");
        let u = ok(
            &USER_RESOURCE,
            &start,
            json!([{"op": "Add", "path": "emails[type eq \"work\"].value", "value": "new@example.com"}]),
        );
        assert_eq!(
            u["emails"],
            json!([{"type": "work", "value": "new@example.com"}])
        );
        let u = ok(
            &USER_RESOURCE,
            &u,
            json!([{"op": "add", "path": "phoneNumbers[type eq \"mobile\"].value", "value": "+1 555"}]),
        );
        assert_eq!(
            u["phoneNumbers"],
            json!([{"type": "mobile", "value": "+1 555"}])
        );
        // With a match, add sets the sub-attribute.
        let u = ok(
            &USER_RESOURCE,
            &u,
            json!([{"op": "add", "path": "emails[type eq \"work\"].display", "value": "Work"}]),
        );
        assert_eq!(
            u["emails"],
            json!([{"type": "work", "value": "new@example.com", "display": "Work"}])
        );
        // A filter that does not say what to create → noTarget.
        fails(
            &USER_RESOURCE,
            &start,
            json!([{"op": "add", "path": "emails[type co \"wo\"].value", "value": "x@y"}]),
            ScimType::NoTarget,
        );
    }

    #[test]
    fn entra_remove_members_by_value_array() {
        // Entra/Okta: {"op":"remove","path":"members","value":[{"value":"id"}]}
        let g = ok(
            &GROUP_RESOURCE,
            &group(),
            json!([{"op": "Remove", "path": "members", "value": [{"value": "2819c223-7f76-453a-919d-413861904646"}]}]),
        );
        assert_eq!(member_ids(&g), ["902c246b-6245-4190-8e05-00816be7344a"]);
        // Unknown ids are a no-op (retries are idempotent); ids are case-exact.
        let same = ok(
            &GROUP_RESOURCE,
            &g,
            json!([{"op": "remove", "path": "members", "value": [{"value": "nope"}, {"value": "902C246B-6245-4190-8E05-00816BE7344A"}]}]),
        );
        assert_eq!(same, g);
        let g2 = ok(
            &GROUP_RESOURCE,
            &g,
            json!([{"op": "remove", "path": "members", "value": [{"value": "nope"}, {"value": "902c246b-6245-4190-8e05-00816be7344a"}]}]),
        );
        assert!(g2.get("members").is_none());
        // A bare id string works too.
        let g3 = ok(
            &GROUP_RESOURCE,
            &group(),
            json!([{"op": "remove", "path": "members", "value": "902c246b-6245-4190-8e05-00816be7344a"}]),
        );
        assert_eq!(member_ids(&g3), ["2819c223-7f76-453a-919d-413861904646"]);
    }

    #[test]
    fn entra_add_and_remove_members_in_one_request() {
        // Microsoft Entra "Update Group [Add Members]" / "[Remove Members]".
        let g = ok(
            &GROUP_RESOURCE,
            &group(),
            json!([
                {"op": "Add", "path": "members", "value": [{"$ref": null, "value": "f648f8d5-ea2f-4fa9-8f0e-2de6c3e6e4b7"}]},
                {"op": "Remove", "path": "members", "value": [{"$ref": null, "value": "902c246b-6245-4190-8e05-00816be7344a"}]}
            ]),
        );
        assert_eq!(
            member_ids(&g),
            [
                "2819c223-7f76-453a-919d-413861904646",
                "f648f8d5-ea2f-4fa9-8f0e-2de6c3e6e4b7"
            ]
        );
        assert_eq!(
            g["members"][1],
            json!({"value": "f648f8d5-ea2f-4fa9-8f0e-2de6c3e6e4b7"})
        );
    }

    #[test]
    fn postman_members_as_plain_strings_and_display_name_key() {
        // ../shared/corpora/entra-scim-postman "Group patch add member" and
        // "Patch add user4 to group1" (with an unknown "displayName" key).
        let g = ok(
            &GROUP_RESOURCE,
            &group(),
            json!([{"op": "add", "path": "members", "value": "string id 1"}]),
        );
        assert_eq!(member_ids(&g).last().unwrap(), "string id 1");
        let g = ok(
            &GROUP_RESOURCE,
            &group(),
            json!([{"name": "addMember", "op": "add", "path": "members", "value": [{"displayName": "new User", "value": "id4"}]}]),
        );
        assert_eq!(g["members"][2], json!({"value": "id4"}));
    }

    #[test]
    fn entra_replace_without_path_with_dotted_and_urn_keys() {
        let u = ok(
            &USER_RESOURCE,
            &user(),
            json!([{"op": "replace", "value": {
                "name.givenName": "Babs",
                "NAME.FAMILYNAME": "J",
                "displayName": "Babs J",
                "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:employeeNumber": "701984",
                "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:manager": "26118915",
                "urn:ietf:params:scim:schemas:core:2.0:User:title": "Guide",
                "emails[type eq \"work\"].value": "ignored: not an attribute path",
                "unknownAttr": 1,
                "active": "False"
            }}]),
        );
        assert_eq!(u["name"], json!({"givenName": "Babs", "familyName": "J"}));
        assert_eq!(u["displayName"], "Babs J");
        assert_eq!(u["title"], "Guide");
        assert_eq!(u["active"], false);
        assert_eq!(
            u[EXT],
            json!({"employeeNumber": "701984", "manager": {"value": "26118915"}})
        );
        assert_eq!(u["schemas"], json!([USER_SCHEMA, EXT]));
        assert!(u.get("unknownAttr").is_none());
        assert_eq!(u["emails"], user()["emails"]);
    }

    #[test]
    fn enterprise_extension_paths() {
        // Entra "Update User [manager]" (dotted form from the Postman collection
        // SCIM_Inbound "Update User (manager)") and the colon form.
        let u = ok(
            &USER_RESOURCE,
            &user(),
            json!([{"op": "replace", "path": "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User.manager", "value": "m-1"}]),
        );
        assert_eq!(u[EXT], json!({"manager": {"value": "m-1"}}));
        assert_eq!(u["schemas"], json!([USER_SCHEMA, EXT]));
        let u = ok(
            &USER_RESOURCE,
            &u,
            json!([
                {"op": "Add", "path": "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:manager", "value": {"value": "m-2", "displayName": "ignored"}},
                {"op": "Add", "path": "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:department", "value": "Tours"}
            ]),
        );
        assert_eq!(
            u[EXT],
            json!({"manager": {"value": "m-2"}, "department": "Tours"})
        );
        // Entra "Remove manager".
        let u = ok(
            &USER_RESOURCE,
            &u,
            json!([{"op": "Remove", "path": "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:manager"}]),
        );
        assert_eq!(u[EXT], json!({"department": "Tours"}));
        // Removing the last extension attribute removes the extension and its schema.
        let u2 = ok(
            &USER_RESOURCE,
            &u,
            json!([{"op": "remove", "path": "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:department"}]),
        );
        assert!(u2.get(EXT).is_none());
        assert_eq!(u2["schemas"], json!([USER_SCHEMA]));
        // The extension URN as a path: add an object, remove everything.
        let u3 = ok(
            &USER_RESOURCE,
            &user(),
            json!([{"op": "add", "path": EXT, "value": {"Department": "Ops", "costCenter": "4130"}}]),
        );
        assert_eq!(u3[EXT], json!({"department": "Ops", "costCenter": "4130"}));
        let u4 = ok(&USER_RESOURCE, &u3, json!([{"op": "remove", "path": EXT}]));
        assert!(u4.get(EXT).is_none());
        // Extension object inside a path-less add; removing from an absent extension is a no-op.
        let u5 = ok(
            &USER_RESOURCE,
            &user(),
            json!([{"op": "add", "value": {EXT: {"division": "D"}}}]),
        );
        assert_eq!(u5[EXT], json!({"division": "D"}));
        let u6 = ok(
            &USER_RESOURCE,
            &user(),
            json!([{"op": "remove", "path": "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:division"}]),
        );
        assert_eq!(u6["schemas"], json!([USER_SCHEMA]));
    }

    #[test]
    fn okta_group_push_and_rename() {
        // Okta "Update Group name" sends id along; "Push group" replaces members.
        let g = ok(
            &GROUP_RESOURCE,
            &group(),
            json!([{"op": "replace", "value": {"id": "e9e30dba-f08f-4109-8486-d5c6a331660a", "displayName": "Test SCIMv2"}}]),
        );
        assert_eq!(g["displayName"], "Test SCIMv2");
        assert_eq!(g["id"], group()["id"]);
        let g = ok(
            &GROUP_RESOURCE,
            &g,
            json!([{"op": "replace", "path": "members", "value": [
                {"value": "23a35c27-23d3-4c03-b4c5-6443c09e7173", "display": "test.user@okta.local"},
                {"value": "89bb1940-b905-4575-9e7f-6f887cfb368e", "display": "test.user2@okta.local"}
            ]}]),
        );
        assert_eq!(
            member_ids(&g),
            [
                "23a35c27-23d3-4c03-b4c5-6443c09e7173",
                "89bb1940-b905-4575-9e7f-6f887cfb368e"
            ]
        );
        // Okta "Remove members" with a filter, and deactivation without a path.
        let g = ok(
            &GROUP_RESOURCE,
            &g,
            json!([{"op": "remove", "path": "members[value eq \"89bb1940-b905-4575-9e7f-6f887cfb368e\"]"}]),
        );
        assert_eq!(member_ids(&g), ["23a35c27-23d3-4c03-b4c5-6443c09e7173"]);
        let u = ok(
            &USER_RESOURCE,
            &user(),
            json!([{"op": "replace", "value": {"active": false}}]),
        );
        assert_eq!(u["active"], false);
        // An empty list empties the group.
        let g = ok(
            &GROUP_RESOURCE,
            &g,
            json!([{"op": "replace", "path": "members", "value": []}]),
        );
        assert!(g.get("members").is_none());
    }

    #[test]
    fn primary_is_unique() {
        // Adding a primary value clears the previous one (RFC 7643 §2.4).
        let u = ok(
            &USER_RESOURCE,
            &user(),
            json!([{"op": "add", "path": "emails", "value": [{"value": "new@x.org", "type": "other", "primary": true}]}]),
        );
        let prim: Vec<_> = u["emails"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["primary"].as_bool().unwrap_or(false))
            .collect();
        assert_eq!(prim, [false, false, true]);
        // Setting primary through a value path.
        let u = ok(
            &USER_RESOURCE,
            &user(),
            json!([{"op": "replace", "path": "emails[type eq \"home\"].primary", "value": true}]),
        );
        assert_eq!(u["emails"][0]["primary"], false);
        assert_eq!(u["emails"][1]["primary"], true);
        // Two primaries in one value → invalidValue.
        fails(
            &USER_RESOURCE,
            &user(),
            json!([{"op": "replace", "path": "emails", "value": [{"value": "a@x", "primary": true}, {"value": "b@x", "primary": true}]}]),
            ScimType::InvalidValue,
        );
        fails(
            &USER_RESOURCE,
            &user(),
            json!([{"op": "replace", "path": "emails.primary", "value": true}]),
            ScimType::InvalidValue,
        );
    }

    #[test]
    fn mutability_errors() {
        let u = &USER_RESOURCE;
        for ops in [
            json!([{"op": "replace", "path": "id", "value": "x"}]),
            json!([{"op": "replace", "path": "meta.created", "value": "2020-01-01T00:00:00Z"}]),
            json!([{"op": "add", "path": "groups", "value": [{"value": "g"}]}]),
            json!([{"op": "remove", "path": "groups"}]),
            json!([{"op": "add", "path": "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:manager.displayName", "value": "x"}]),
            // RFC 7644 §3.5.2.2: a required attribute may not become unassigned.
            json!([{"op": "remove", "path": "userName"}]),
            json!([{"op": "replace", "path": "userName", "value": null}]),
            json!([{"op": "replace", "value": {"userName": null}}]),
        ] {
            fails(u, &user(), ops, ScimType::Mutability);
        }
        let g = &GROUP_RESOURCE;
        for ops in [
            json!([{"op": "remove", "path": "displayName"}]),
            json!([{"op": "replace", "path": "members[value eq \"902c246b-6245-4190-8e05-00816be7344a\"].display", "value": "x"}]),
            // members.value is immutable once set.
            json!([{"op": "replace", "path": "members[value eq \"902c246b-6245-4190-8e05-00816be7344a\"].value", "value": "other"}]),
            json!([{"op": "replace", "path": "members[value eq \"902c246b-6245-4190-8e05-00816be7344a\"]", "value": {"value": "other"}}]),
            json!([{"op": "remove", "path": "members[value eq \"902c246b-6245-4190-8e05-00816be7344a\"].type"}]),
        ] {
            fails(g, &group(), ops, ScimType::Mutability);
        }
        // Removing then re-adding a required attribute within one request is fine.
        let v = ok(
            u,
            &user(),
            json!([{"op": "remove", "path": "userName"}, {"op": "add", "path": "userName", "value": "b2"}]),
        );
        assert_eq!(v["userName"], "b2");
        // An immutable sub-attribute may be set when unassigned.
        let mut g0 = group();
        g0["members"][1].as_object_mut().unwrap().remove("type");
        let v = ok(
            g,
            &g0,
            json!([{"op": "add", "path": "members[value eq \"902c246b-6245-4190-8e05-00816be7344a\"].type", "value": "User"}]),
        );
        assert_eq!(v["members"][1]["type"], "User");
    }

    #[test]
    fn no_target_and_value_errors() {
        let u = &USER_RESOURCE;
        fails(
            u,
            &user(),
            json!([{"op": "replace", "path": "emails[type eq \"other\"].value", "value": "x@y"}]),
            ScimType::NoTarget,
        );
        fails(
            u,
            &user(),
            json!([{"op": "remove", "path": "emails[type eq \"other\"]"}]),
            ScimType::NoTarget,
        );
        fails(
            &GROUP_RESOURCE,
            &group(),
            json!([{"op": "remove", "path": "members[value eq \"nobody\"]"}]),
            ScimType::NoTarget,
        );
        fails(
            u,
            &user(),
            json!([{"op": "replace", "path": "active", "value": {"x": 1}}]),
            ScimType::InvalidValue,
        );
        fails(
            u,
            &user(),
            json!([{"op": "add", "value": "not an object"}]),
            ScimType::InvalidValue,
        );
        fails(
            u,
            &user(),
            json!([{"op": "replace", "path": "name.givenName", "value": true}]),
            ScimType::InvalidValue,
        );
        fails(
            u,
            &user(),
            json!([{"op": "add", "path": "emails", "value": [[1]]}]),
            ScimType::InvalidValue,
        );
        fails(
            u,
            &user(),
            json!([{"op": "replace", "path": "emails[type eq \"work\"]", "value": [1]}]),
            ScimType::InvalidValue,
        );
        let e = fails(
            u,
            &user(),
            json!([{"op": "add", "path": "nickName", "value": "ok"}, {"op": "replace", "path": "emails[type eq \"x\"]", "value": {"value": "v"}}]),
            ScimType::NoTarget,
        );
        assert!(
            e.detail.starts_with("operation 1 (replace)"),
            "{}",
            e.detail
        );
    }

    #[test]
    fn apply_is_all_or_nothing() {
        let start = user();
        let ops = parse_request(
            &USER_RESOURCE,
            &body(json!([
                {"op": "replace", "path": "userName", "value": "changed"},
                {"op": "add", "path": "emails", "value": [{"value": "z@z"}]},
                {"op": "replace", "path": "id", "value": "nope"}
            ])),
        )
        .unwrap();
        assert!(apply(&USER_RESOURCE, &start, &ops).is_err());
        assert_eq!(start, user());
        // The same prefix alone succeeds.
        let v = apply(&USER_RESOURCE, &start, &ops[..2]).unwrap();
        assert_eq!(v["userName"], "changed");
    }

    #[test]
    fn apply_accepts_hand_built_operations() {
        // The lead may build operations directly (e.g. bulk): a pathless remove is noTarget.
        let e = apply(
            &USER_RESOURCE,
            &user(),
            &[PatchOperation {
                op: PatchOpKind::Remove,
                path: None,
                value: None,
            }],
        )
        .unwrap_err();
        assert_eq!(e.scim_type, Some(ScimType::NoTarget));
        let e = apply(&USER_RESOURCE, &json!([]), &[]).unwrap_err();
        assert_eq!(e.status, 400);
    }

    // ---- properties ----

    fn arb_good_op() -> impl Strategy<Value = Value> {
        prop_oneof![
            "[a-z]{1,8}".prop_map(|s| json!({"op": "replace", "path": "nickName", "value": s})),
            "[a-z]{1,8}".prop_map(|s| json!({"op": "add", "path": "emails", "value": [{"value": format!("{s}@x.org"), "type": "other"}]})),
            "[a-z]{1,8}".prop_map(|s| json!({"op": "add", "path": "members", "value": [{"value": s}]})),
            Just(json!({"op": "remove", "path": "title"})),
            any::<bool>().prop_map(|b| json!({"op": "Replace", "path": "active", "value": if b { "True" } else { "False" }})),
            "[a-z]{1,8}".prop_map(|s| json!({"op": "replace", "value": {"name.givenName": s}})),
            "[a-z]{1,8}".prop_map(|s| json!({"op": "add", "path": "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:department", "value": s})),
        ]
    }

    fn arb_bad_op() -> impl Strategy<Value = Value> {
        prop_oneof![
            Just(json!({"op": "replace", "path": "id", "value": "x"})),
            Just(json!({"op": "remove", "path": "userName"})),
            Just(json!({"op": "remove", "path": "emails[type eq \"nope\"]"})),
            Just(json!({"op": "replace", "path": "active", "value": "maybe"})),
            Just(json!({"op": "add", "path": "groups", "value": [{"value": "g"}]})),
            Just(
                json!({"op": "replace", "path": "emails", "value": [{"value": "a", "primary": true}, {"value": "b", "primary": true}]})
            ),
        ]
    }

    proptest! {
        #[test]
        fn failed_patch_leaves_input_unchanged(
            before in prop::collection::vec(arb_good_op(), 0..5),
            bad_op in arb_bad_op(),
            after in prop::collection::vec(arb_good_op(), 0..5),
        ) {
            // Users have no "members": those ops are unknown paths, so use the
            // user-valid subset for the user resource.
            let keep = |v: &Vec<Value>| -> Vec<Value> {
                v.iter().filter(|o| o["path"] != "members").cloned().collect()
            };
            let (before, after) = (keep(&before), keep(&after));
            let start = user();
            let snapshot = start.clone();
            let mut all = before.clone();
            all.push(bad_op);
            all.extend(after);
            let res = run(&USER_RESOURCE, &start, Value::Array(all));
            prop_assert!(res.is_err());
            prop_assert_eq!(&start, &snapshot);
            // The good prefix on its own applies.
            if !before.is_empty() {
                prop_assert!(run(&USER_RESOURCE, &start, Value::Array(before)).is_ok());
            }
        }

        #[test]
        fn member_add_remove_sequences_match_a_set_model(
            steps in prop::collection::vec((any::<bool>(), 0u8..6), 1..20)
        ) {
            let mut model: Vec<String> = member_ids(&group());
            let mut g = group();
            for (add, id) in steps {
                let id = format!("m{id}");
                let op = if add {
                    json!([{"op": "add", "path": "members", "value": [{"value": id}]}])
                } else {
                    json!([{"op": "remove", "path": "members", "value": [{"value": id}]}])
                };
                g = run(&GROUP_RESOURCE, &g, op).unwrap();
                if add {
                    if !model.contains(&id) {
                        model.push(id);
                    }
                } else {
                    model.retain(|m| *m != id);
                }
                prop_assert_eq!(member_ids(&g), model.clone());
            }
        }
    }

    /// Apply member changes to an id list the way a store would.
    fn apply_changes(mut ids: Vec<String>, changes: &[MemberChange]) -> Result<Vec<String>, ()> {
        for c in changes {
            match c {
                MemberChange::Add(items) => {
                    for v in value_strings(items) {
                        if !ids.contains(&v) {
                            ids.push(v);
                        }
                    }
                }
                MemberChange::Remove { values, must_match } => {
                    let before = ids.len();
                    ids.retain(|i| !values.iter().any(|v| v == i));
                    if *must_match && ids.len() == before {
                        return Err(());
                    }
                }
                MemberChange::RemoveAll => ids.clear(),
                MemberChange::ReplaceAll(items) => ids = value_strings(items),
            }
        }
        Ok(ids)
    }

    #[test]
    fn member_changes_split_requests() {
        let ops = parse_request(
            &GROUP_RESOURCE,
            &body(json!([
                {"op": "Replace", "path": "displayName", "value": "New"},
                {"op": "Add", "path": "members", "value": [{"value": "a"}, "b"]},
                {"op": "Remove", "path": "members", "value": [{"value": "c"}]},
                {"op": "remove", "path": "members[value eq \"d\" or value eq \"e\"]"},
                {"op": "replace", "value": {"members": [{"value": "f"}], "externalId": "x"}},
                {"op": "remove", "path": "members"}
            ])),
        )
        .unwrap();
        let (changes, rest) = member_changes(&GROUP_RESOURCE, &ops).unwrap().unwrap();
        assert_eq!(
            changes,
            [
                MemberChange::Add(vec![json!({"value": "a"}), json!({"value": "b"})]),
                MemberChange::Remove {
                    values: vec!["c".into()],
                    must_match: false
                },
                MemberChange::Remove {
                    values: vec!["d".into(), "e".into()],
                    must_match: true
                },
                MemberChange::ReplaceAll(vec![json!({"value": "f"})]),
                MemberChange::RemoveAll,
            ]
        );
        assert_eq!(rest.len(), 2);
        assert_eq!(rest[1].value, Some(json!({"externalId": "x"})));
        // Forms that need the full list.
        for op in [
            json!([{"op": "remove", "path": "members[type eq \"Group\"]"}]),
            json!([{"op": "replace", "path": "members[value eq \"a\"]", "value": {"value": "a"}}]),
            json!([{"op": "remove", "path": "members[value eq \"a\"].type"}]),
        ] {
            let ops = parse_request(&GROUP_RESOURCE, &body(op.clone())).unwrap();
            assert_eq!(member_changes(&GROUP_RESOURCE, &ops).unwrap(), None, "{op}");
        }
        // Users have no members: everything is "rest".
        let ops = parse_request(
            &USER_RESOURCE,
            &body(json!([{"op": "add", "path": "nickName", "value": "x"}])),
        )
        .unwrap();
        assert_eq!(
            member_changes(&USER_RESOURCE, &ops).unwrap(),
            Some((vec![], ops.clone()))
        );
    }

    fn arb_member_op() -> impl Strategy<Value = Value> {
        let id = (0u8..6).prop_map(|i| format!("m{i}"));
        prop_oneof![
            prop::collection::vec(id.clone(), 1..3).prop_map(|ids| json!({"op": "add", "path": "members", "value": ids.iter().map(|i| json!({"value": i})).collect::<Vec<_>>()})),
            prop::collection::vec(id.clone(), 1..3).prop_map(|ids| json!({"op": "Remove", "path": "members", "value": ids.iter().map(|i| json!({"value": i})).collect::<Vec<_>>()})),
            id.clone().prop_map(|i| json!({"op": "remove", "path": format!("members[value eq \"{i}\"]")})),
            prop::collection::vec(id, 0..3).prop_map(|ids| json!({"op": "replace", "path": "members", "value": ids.iter().map(|i| json!({"value": i})).collect::<Vec<_>>()})),
            Just(json!({"op": "remove", "path": "members"})),
        ]
    }

    proptest! {
        #[test]
        fn member_changes_agree_with_apply(ops in prop::collection::vec(arb_member_op(), 1..8)) {
            let start = json!({"schemas": [GROUP_SCHEMA], "id": "g", "displayName": "G",
                               "members": [{"value": "m1"}, {"value": "m2"}]});
            let parsed = parse_request(&GROUP_RESOURCE, &body(Value::Array(ops))).unwrap();
            let via_apply = apply(&GROUP_RESOURCE, &start, &parsed).map(|g| member_ids(&g));
            let (changes, rest) = member_changes(&GROUP_RESOURCE, &parsed).unwrap().unwrap();
            prop_assert!(rest.is_empty());
            let via_set = apply_changes(vec!["m1".into(), "m2".into()], &changes);
            match (via_apply, via_set) {
                (Ok(a), Ok(b)) => {
                    let (mut a, mut b) = (a, b);
                    a.sort();
                    b.sort();
                    prop_assert_eq!(a, b);
                }
                (Err(e), Err(())) => prop_assert_eq!(e.scim_type, Some(ScimType::NoTarget)),
                (a, b) => prop_assert!(false, "apply {:?} vs set {:?}", a, b),
            }
        }
    }

    fn arb_json() -> impl Strategy<Value = Value> {
        let key = prop::sample::select(vec![
            "userName",
            "USERNAME",
            "name",
            "givenName",
            "emails",
            "value",
            "type",
            "primary",
            "active",
            "members",
            "display",
            "op",
            "path",
            "schemas",
            "Operations",
            "id",
            "meta",
            "groups",
            "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User",
            "manager",
            "department",
            "x",
            "name.givenName",
            "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:department",
        ]);
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(|i| json!(i)),
            prop::sample::select(vec![
                "add",
                "Remove",
                "REPLACE",
                "True",
                "false",
                "x",
                "",
                PATCH_OP,
                USER_SCHEMA,
                EXT,
                "members[value eq \"a\"]",
                "emails[type eq \"work\"].value",
                "name.givenName",
                "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:manager",
                "2011-05-13T04:42:34Z",
            ])
            .prop_map(|s| Value::String(s.to_string())),
        ];
        leaf.prop_recursive(4, 40, 5, move |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
                prop::collection::vec((key.clone(), inner), 0..5).prop_map(|kv| Value::Object(
                    kv.into_iter().map(|(k, v)| (k.to_string(), v)).collect()
                )),
            ]
        })
    }

    fn arb_op_json() -> impl Strategy<Value = Value> {
        let op = prop::sample::select(vec!["add", "Remove", "REPLACE", "move"]);
        let path = prop::option::of(prop::sample::select(vec![
            "members",
            "members[value eq \"a\"]",
            "members[value eq \"a\"].display",
            "emails",
            "emails[type eq \"work\"].value",
            "emails[primary eq true]",
            "emails.primary",
            "name",
            "name.givenName",
            "userName",
            "displayName",
            "active",
            "id",
            "groups",
            "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User",
            "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:manager",
            "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User.manager.value",
        ]));
        prop_oneof![
            (op, path, prop::option::of(arb_json())).prop_map(|(op, path, value)| {
                let mut o = Map::new();
                o.insert("op".into(), op.into());
                if let Some(p) = path {
                    o.insert("path".into(), p.into());
                }
                if let Some(v) = value {
                    o.insert("value".into(), v);
                }
                Value::Object(o)
            }),
            arb_json(),
        ]
    }

    proptest! {
        #[test]
        fn arbitrary_json_never_panics(resource in arb_json(), ops in prop::collection::vec(arb_op_json(), 1..4)) {
            for rt in [&USER_RESOURCE, &GROUP_RESOURCE] {
                let _ = schema::normalize(rt, &resource, Some(&resource));
                let _ = schema::project(rt, resource.clone(), &["emails.value".into()], &[]);
                let _ = schema::project(rt, resource.clone(), &[], &["name".into()]);
                let parsed = parse_request(rt, &body(Value::Array(ops.clone())));
                if let Ok(parsed) = parsed {
                    let before = resource.clone();
                    let _ = apply(rt, &resource, &parsed);
                    let _ = member_changes(rt, &parsed);
                    prop_assert_eq!(&resource, &before);
                    // On a valid resource too.
                    let _ = apply(rt, &user(), &parsed);
                    let _ = apply(rt, &group(), &parsed);
                }
            }
        }
    }
}
