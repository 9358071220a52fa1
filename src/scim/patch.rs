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
                                check_immutable(
                                    sub,
                                    o.get(sub.name),
                                    nv.get(sub.name).or(o.get(sub.name)),
                                )?;
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
