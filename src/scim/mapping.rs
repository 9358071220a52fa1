//! Per-client attribute mappings between a SCIM User and Lintel's `users` columns (pure).
//!
//! A mapping row says which SCIM attribute feeds which local attribute. SCIM attributes are
//! written as paths: `userName`, `name.givenName`, an extension path
//! (`urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:department`), or a
//! multi-valued attribute's primary value (`emails[primary]`: the `value` of the element
//! with `primary: true`, else of the first). Local attributes are the columns `email`,
//! `username`, `first_name`, `last_name`, `picture_url`, `enabled`, or
//! `properties.<key>`.
//!
//! The effective mapping of a client is [`defaults`] overridden by its own rows: a client
//! row replaces every default with the same SCIM attribute or the same local attribute.
use serde::Serialize;
use serde_json::{Map, Value};

pub const ENTERPRISE: &str = "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User";

/// Columns a mapping may write.
pub const LOCAL_COLUMNS: &[&str] = &[
    "email",
    "username",
    "first_name",
    "last_name",
    "picture_url",
    "enabled",
];

/// One effective rule.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Rule {
    pub scim: String,
    pub local: String,
    /// `scim` parsed once (`None`: not a path this module reads or writes).
    #[serde(skip)]
    source: Option<Source>,
}

impl Rule {
    pub fn new(scim: String, local: String) -> Rule {
        let source = parse_source(&scim);
        Rule {
            scim,
            local,
            source,
        }
    }
}

/// The built-in mapping. `user_name_to` is `email` or `username` (`scim.user_name_maps_to`).
pub fn defaults(user_name_to: &str) -> Vec<Rule> {
    // userName first: where both give an email, `emails[primary]` (later) wins.
    let user_name = if user_name_to == "username" {
        "username"
    } else {
        "email"
    };
    let core = [
        ("userName", user_name),
        ("emails[primary]", "email"),
        ("name.givenName", "first_name"),
        ("name.familyName", "last_name"),
        ("active", "enabled"),
        ("photos[primary]", "picture_url"),
    ];
    let enterprise = [
        ("employeeNumber", "properties.employeeNumber"),
        ("costCenter", "properties.costCenter"),
        ("organization", "properties.organization"),
        ("division", "properties.division"),
        ("department", "properties.department"),
        ("manager.value", "properties.manager"),
    ];
    let rule = |scim: String, local: &str| Rule::new(scim, local.into());
    core.iter()
        .map(|(s, l)| rule((*s).into(), l))
        .chain(
            enterprise
                .iter()
                .map(|(s, l)| rule(format!("{ENTERPRISE}:{s}"), l)),
        )
        .collect()
}

/// A client's rows over the defaults.
pub fn effective(defaults: Vec<Rule>, client_rows: &[(String, String)]) -> Vec<Rule> {
    let mut out: Vec<Rule> = defaults
        .into_iter()
        .filter(|d| {
            !client_rows
                .iter()
                .any(|(s, l)| s.eq_ignore_ascii_case(&d.scim) || (l == &d.local && l != "email"))
        })
        .collect();
    out.extend(
        client_rows
            .iter()
            .map(|(s, l)| Rule::new(s.clone(), l.clone())),
    );
    out
}

/// Checks admin-supplied rows; returns them normalised (trimmed, local lower-cased).
pub fn validate(rows: &[(String, String)]) -> Result<Vec<(String, String)>, String> {
    let mut out: Vec<(String, String)> = Vec::with_capacity(rows.len());
    for (scim, local) in rows {
        let scim = scim.trim().to_string();
        let local = local.trim().to_string();
        parse_source(&scim).ok_or_else(|| format!("`{scim}` is not a SCIM attribute path"))?;
        check_local(&local)?;
        if out.iter().any(|(s, _)| s.eq_ignore_ascii_case(&scim)) {
            return Err(format!("`{scim}` is mapped twice"));
        }
        out.push((scim, local));
    }
    Ok(out)
}

fn check_local(local: &str) -> Result<(), String> {
    if LOCAL_COLUMNS.contains(&local) {
        return Ok(());
    }
    match local.strip_prefix("properties.") {
        Some(key)
            if !key.is_empty()
                && key.len() <= 64
                && key
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-') =>
        {
            Ok(())
        }
        _ => Err(format!(
            "`{local}` is not a local attribute (one of {} or properties.<key>)",
            LOCAL_COLUMNS.join(", ")
        )),
    }
}

/// A parsed SCIM source path: object keys to follow, and whether the last key is a
/// multi-valued attribute whose primary `value` is meant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Source {
    pub keys: Vec<String>,
    pub primary_of: bool,
}

/// `userName`, `name.givenName`, `urn:…:User:department`, `urn:…:User:manager.value`,
/// `emails[primary]`.
pub fn parse_source(s: &str) -> Option<Source> {
    let (urn, rest) = match s.rfind(':') {
        Some(i) if s[..i].to_ascii_lowercase().starts_with("urn:") => {
            (Some(s[..i].to_string()), &s[i + 1..])
        }
        _ => (None, s),
    };
    let (rest, primary_of) = match rest.strip_suffix("[primary]") {
        Some(r) => (r, true),
        None => (rest, false),
    };
    let parts: Vec<&str> = rest.split('.').collect();
    let ok = |p: &&str| {
        !p.is_empty()
            && p.chars().next().is_some_and(|c| c.is_ascii_alphabetic())
            && p.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-' || c == '$')
    };
    if parts.is_empty()
        || parts.len() > 2
        || !parts.iter().all(ok)
        || (primary_of && parts.len() != 1)
    {
        return None;
    }
    let mut keys: Vec<String> = urn.into_iter().collect();
    keys.extend(parts.iter().map(|p| p.to_string()));
    Some(Source { keys, primary_of })
}

fn get_ci<'a>(obj: &'a Map<String, Value>, key: &str) -> Option<&'a Value> {
    obj.get(key).or_else(|| {
        obj.iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(key))
            .map(|(_, v)| v)
    })
}

/// The value a source path selects in a SCIM document (`None`: absent or null).
pub fn read<'a>(doc: &'a Value, src: &Source) -> Option<&'a Value> {
    let mut cur = doc;
    for k in &src.keys {
        cur = get_ci(cur.as_object()?, k)?;
    }
    if src.primary_of {
        let items = cur.as_array()?;
        let chosen = items
            .iter()
            .find(|e| e.get("primary").and_then(Value::as_bool) == Some(true))
            .or_else(|| items.first())?;
        cur = match chosen {
            Value::Object(o) => get_ci(o, "value")?,
            other => other,
        };
    }
    (!cur.is_null()).then_some(cur)
}

/// Where a mapped SCIM document lands in Lintel (a dry run shows exactly this).
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct LocalValues {
    pub email: Option<String>,
    pub username: Option<String>,
    pub first_name: Option<String>,
    pub last_name: Option<String>,
    pub picture_url: Option<String>,
    pub enabled: Option<bool>,
    /// Keys set from SCIM attributes (`properties.<key>` targets); `null` clears a key.
    pub properties: Map<String, Value>,
}

fn as_text(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

/// Applies the rules to a (normalised) SCIM User. Rules later in `rules` win for the same
/// local attribute when both give a value.
pub fn to_local(rules: &[Rule], doc: &Value) -> LocalValues {
    let mut out = LocalValues::default();
    for r in rules {
        let Some(src) = &r.source else {
            continue;
        };
        let value = read(doc, src);
        let text = value.and_then(as_text);
        match r.local.as_str() {
            "email" => {
                if let Some(t) = text.filter(|t| t.contains('@')) {
                    out.email = Some(t);
                }
            }
            "username" => out.username = text.or(out.username.take()),
            "first_name" => out.first_name = text.or(out.first_name.take()),
            "last_name" => out.last_name = text.or(out.last_name.take()),
            "picture_url" => out.picture_url = text.or(out.picture_url.take()),
            "enabled" => {
                let b = match value {
                    Some(Value::Bool(b)) => Some(*b),
                    Some(Value::String(s)) if s.eq_ignore_ascii_case("true") => Some(true),
                    Some(Value::String(s)) if s.eq_ignore_ascii_case("false") => Some(false),
                    _ => None,
                };
                out.enabled = b.or(out.enabled);
            }
            other => {
                if let Some(key) = other.strip_prefix("properties.") {
                    let v = value.cloned().unwrap_or(Value::Null);
                    let v = match v {
                        // A complex value (e.g. manager) keeps its `value`.
                        Value::Object(o) => get_ci(&o, "value").cloned().unwrap_or(Value::Null),
                        v => v,
                    };
                    out.properties.insert(key.to_string(), v);
                }
            }
        }
    }
    out
}

/// Local column values as they are now (read from the user row) for output overlay.
#[derive(Debug, Clone, Default)]
pub struct LocalRow<'a> {
    /// `None`: the user has no real address (nothing to show).
    pub email: Option<&'a str>,
    pub username: Option<&'a str>,
    pub first_name: Option<&'a str>,
    pub last_name: Option<&'a str>,
    pub picture_url: Option<&'a str>,
    pub properties: Option<&'a Map<String, Value>>,
}

/// Writes the current local values into the SCIM document for output, so a change made in
/// Lintel shows in SCIM. Only attributes the document holds are overwritten (what the IdP
/// removed stays removed); `userName` and `active` are not overlaid (the SCIM side keeps
/// them), nor are values that already agree case-insensitively.
pub fn overlay(rules: &[Rule], doc: &mut Value, row: &LocalRow<'_>) {
    for r in rules {
        let Some(src) = &r.source else {
            continue;
        };
        if src.keys.len() == 1
            && (src.keys[0].eq_ignore_ascii_case("userName")
                || src.keys[0].eq_ignore_ascii_case("active"))
        {
            continue;
        }
        let local: Option<Value> = match r.local.as_str() {
            "email" => row.email.map(|e| Value::String(e.to_string())),
            "username" => row.username.map(|s| Value::String(s.into())),
            "first_name" => row.first_name.map(|s| Value::String(s.into())),
            "last_name" => row.last_name.map(|s| Value::String(s.into())),
            "picture_url" => row.picture_url.map(|s| Value::String(s.into())),
            "enabled" => continue,
            other => match other.strip_prefix("properties.") {
                Some(key) => row
                    .properties
                    .and_then(|p| p.get(key))
                    .filter(|v| !v.is_null())
                    .cloned(),
                None => continue,
            },
        };
        let Some(local) = local else {
            continue;
        };
        let Some(cur) = read(doc, src) else {
            continue;
        };
        if cur == &local
            || matches!((cur, &local), (Value::String(a), Value::String(b)) if a.eq_ignore_ascii_case(b))
        {
            continue;
        }
        write(doc, src, local);
    }
}

fn write(doc: &mut Value, src: &Source, v: Value) {
    let Some(obj) = doc.as_object_mut() else {
        return;
    };
    let (last, parents) = match src.keys.split_last() {
        Some(x) => x,
        None => return,
    };
    let mut cur = obj;
    for k in parents {
        let key = existing_key(cur, k);
        let entry = cur.entry(key).or_insert_with(|| Value::Object(Map::new()));
        if !entry.is_object() {
            *entry = Value::Object(Map::new());
        }
        let Value::Object(next) = entry else {
            return;
        };
        cur = next;
    }
    let key = existing_key(cur, last);
    if !src.primary_of {
        // A complex target such as manager keeps its shape.
        match cur.get_mut(&key) {
            Some(Value::Object(o)) => {
                o.insert("value".into(), v);
            }
            _ => {
                cur.insert(key, v);
            }
        }
        return;
    }
    let items = cur.entry(key).or_insert_with(|| Value::Array(Vec::new()));
    if !items.is_array() {
        *items = Value::Array(Vec::new());
    }
    let Value::Array(items) = items else {
        return;
    };
    let idx = items
        .iter()
        .position(|e| e.get("primary").and_then(Value::as_bool) == Some(true))
        .or(if items.is_empty() { None } else { Some(0) });
    match idx {
        Some(i) => match &mut items[i] {
            Value::Object(o) => {
                o.insert("value".into(), v);
            }
            other => *other = v,
        },
        None => items.push(serde_json::json!({ "value": v, "primary": true })),
    }
}

fn existing_key(obj: &Map<String, Value>, key: &str) -> String {
    obj.keys()
        .find(|k| k.eq_ignore_ascii_case(key))
        .cloned()
        .unwrap_or_else(|| key.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn user() -> Value {
        json!({
            "userName": "Alice@Example.com",
            "name": { "givenName": "Alice", "familyName": "Liddell" },
            "emails": [
                { "value": "alice.home@example.org", "type": "home" },
                { "value": "alice@example.com", "type": "work", "primary": true }
            ],
            "active": "False",
            ENTERPRISE: { "department": "Wonderland", "manager": { "value": "42" } }
        })
    }

    #[test]
    fn defaults_map_the_core_attributes() {
        let l = to_local(&defaults("email"), &user());
        assert_eq!(l.email.as_deref(), Some("alice@example.com"));
        assert_eq!(l.first_name.as_deref(), Some("Alice"));
        assert_eq!(l.last_name.as_deref(), Some("Liddell"));
        assert_eq!(l.enabled, Some(false), "string boolean");
        assert_eq!(l.properties["department"], json!("Wonderland"));
        assert_eq!(l.properties["manager"], json!("42"));
        assert_eq!(l.username, None);
    }

    #[test]
    fn user_name_is_the_email_when_no_emails_are_sent() {
        let doc = json!({ "userName": "bob@example.com" });
        let l = to_local(&defaults("email"), &doc);
        assert_eq!(l.email.as_deref(), Some("bob@example.com"));
        let l = to_local(&defaults("username"), &doc);
        assert_eq!(l.email, None);
        assert_eq!(l.username.as_deref(), Some("bob@example.com"));
    }

    #[test]
    fn client_rows_replace_defaults() {
        let rows = validate(&[
            ("title".into(), "properties.title".into()),
            ("name.givenName".into(), "properties.given".into()),
            ("nickName".into(), "first_name".into()),
        ])
        .unwrap();
        let rules = effective(defaults("email"), &rows);
        let doc = json!({ "userName": "c@example.com", "title": "CTO", "nickName": "Cee",
                          "name": { "givenName": "Carol" } });
        let l = to_local(&rules, &doc);
        assert_eq!(l.first_name.as_deref(), Some("Cee"));
        assert_eq!(l.properties["title"], json!("CTO"));
        assert_eq!(l.properties["given"], json!("Carol"));
    }

    #[test]
    fn validation_rejects_bad_rows() {
        for (s, l) in [
            ("userName", "password_hash"),
            ("userName", "properties."),
            ("userName", "properties.a b"),
            ("emails[0]", "email"),
            ("", "email"),
            ("a.b.c", "email"),
        ] {
            assert!(validate(&[(s.into(), l.into())]).is_err(), "{s} → {l}");
        }
        assert!(
            validate(&[
                ("title".into(), "email".into()),
                ("TITLE".into(), "username".into())
            ])
            .is_err()
        );
    }

    #[test]
    fn overlay_shows_local_changes() {
        let mut doc = user();
        let props = json!({ "department": "Looking Glass" });
        let row = LocalRow {
            email: Some("alice.new@example.com"),
            first_name: Some("Alicia"),
            last_name: Some("Liddell"),
            properties: props.as_object(),
            ..LocalRow::default()
        };
        overlay(&defaults("email"), &mut doc, &row);
        assert_eq!(doc["name"]["givenName"], json!("Alicia"));
        assert_eq!(doc["emails"][1]["value"], json!("alice.new@example.com"));
        assert_eq!(doc["emails"][0]["value"], json!("alice.home@example.org"));
        assert_eq!(
            doc["userName"],
            json!("Alice@Example.com"),
            "userName is the IdP's"
        );
        assert_eq!(doc[ENTERPRISE]["department"], json!("Looking Glass"));
        assert_eq!(doc[ENTERPRISE]["manager"], json!({ "value": "42" }));
    }

    #[test]
    fn overlay_never_adds_what_the_idp_did_not_send() {
        let mut doc = json!({ "userName": "x" });
        overlay(
            &defaults("email"),
            &mut doc,
            &LocalRow {
                email: Some("x@example.com"),
                first_name: Some("X"),
                ..LocalRow::default()
            },
        );
        assert_eq!(doc, json!({ "userName": "x" }));
    }
}
