//! The audit log. Every mutation writes one row **in its own transaction** through
//! [`record`]: who acted (the [`Actor`] the `Identity` handle carries), on which org and
//! object, and what changed (never a secret).
use super::{Identity, IdentityError};
use crate::store::audit::{AuditLog, Filter};
use crate::store::{self, Access, Inet, Json};
use serde_json::{Map, Value};
use std::net::IpAddr;
use tokio::io::{AsyncWrite, AsyncWriteExt};
use uuid::Uuid;

/// Who performs an operation.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum ActorKind {
    /// The CLI, background tasks, and protocol flows acting for the user themselves.
    #[default]
    System,
    User(Uuid),
    /// An API key; `owner` is the user it belongs to (none for a service key).
    ApiKey {
        key_id: Uuid,
        owner: Option<Uuid>,
    },
    ScimClient {
        client_id: Uuid,
    },
}

/// The acting party and where the request came from.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Actor {
    pub kind: ActorKind,
    /// Set while an admin impersonates `kind`'s user.
    pub impersonator: Option<Uuid>,
    pub ip: Option<IpAddr>,
    pub user_agent: Option<String>,
}

impl Actor {
    pub fn system() -> Self {
        Actor::default()
    }

    pub fn user(user_id: Uuid) -> Self {
        Actor {
            kind: ActorKind::User(user_id),
            ..Actor::default()
        }
    }

    fn columns(&self) -> (&'static str, Option<String>, Option<Uuid>) {
        match &self.kind {
            ActorKind::System => ("system", None, None),
            ActorKind::User(u) => ("user", Some(u.to_string()), Some(*u)),
            ActorKind::ApiKey { key_id, owner } => ("api_key", Some(key_id.to_string()), *owner),
            ActorKind::ScimClient { client_id } => {
                ("scim_client", Some(client_id.to_string()), None)
            }
        }
    }
}

/// What an audit row says about the change.
pub struct Event<'a> {
    pub org_id: Option<Uuid>,
    /// `noun.verb`, e.g. `user.created`, `role.granted`.
    pub action: &'a str,
    pub object_type: &'a str,
    pub object_id: String,
    /// Before/after of changed fields, or other context; never a secret.
    pub details: Value,
}

impl<'a> Event<'a> {
    /// An event about `object_type` `object_id`, with no org and empty details.
    pub fn new(action: &'a str, object_type: &'a str, object_id: impl ToString) -> Self {
        Event {
            org_id: None,
            action,
            object_type,
            object_id: object_id.to_string(),
            details: Value::Object(Map::new()),
        }
    }

    /// The org the change belongs to.
    pub fn org(self, org_id: Uuid) -> Self {
        Event {
            org_id: Some(org_id),
            ..self
        }
    }

    pub fn details(self, details: Value) -> Self {
        Event { details, ..self }
    }
}

/// The `object_id` of a row keyed by two ids: `a:b`.
pub fn pair(a: impl std::fmt::Display, b: impl std::fmt::Display) -> String {
    format!("{a}:{b}")
}

/// Writes one audit row with `a` — which must be the mutation's own transaction.
pub async fn record(a: &mut impl Access, id: &Identity, e: Event<'_>) -> Result<(), IdentityError> {
    let actor = &id.actor;
    let (actor_type, actor_id, user_id) = actor.columns();
    let row = AuditLog {
        log_id: Uuid::now_v7(),
        user_id,
        org_id: e.org_id,
        action: e.action.to_string(),
        object_type: Some(e.object_type.to_string()),
        object_id: Some(e.object_id),
        ip_address: actor.ip.map(Inet),
        user_agent: actor
            .user_agent
            .as_ref()
            .map(|ua| ua.chars().take(512).collect()),
        timestamp: id.clock.now(),
        details: Json(e.details),
        actor_type: actor_type.to_string(),
        actor_id,
        impersonator_id: actor.impersonator,
    };
    store::audit::insert(a, &row).await?;
    Ok(())
}

/// `{"field": {"before": …, "after": …}}` for every top-level field that differs between
/// two serializations, skipping `secret_fields`.
pub fn diff(before: &Value, after: &Value, secret_fields: &[&str]) -> Value {
    let empty = Map::new();
    let b = before.as_object().unwrap_or(&empty);
    let a = after.as_object().unwrap_or(&empty);
    let mut out = Map::new();
    let keys: std::collections::BTreeSet<&String> = b.keys().chain(a.keys()).collect();
    for k in keys {
        if secret_fields.contains(&k.as_str()) {
            continue;
        }
        let (x, y) = (
            b.get(k).unwrap_or(&Value::Null),
            a.get(k).unwrap_or(&Value::Null),
        );
        if x != y {
            out.insert(k.clone(), serde_json::json!({ "before": x, "after": y }));
        }
    }
    Value::Object(out)
}

/// [`diff`] of two values' serializations (e.g. a row before and after an update).
pub fn diff_of<T: serde::Serialize>(before: &T, after: &T, secret_fields: &[&str]) -> Value {
    let ser = |v: &T| serde_json::to_value(v).unwrap_or(Value::Null);
    diff(&ser(before), &ser(after), secret_fields)
}

/// Reads the log (filters narrow; keyset pagination after `after`).
pub async fn list(
    id: &Identity,
    filter: &Filter,
    after: Option<Uuid>,
    limit: u32,
) -> Result<Vec<AuditLog>, IdentityError> {
    let mut c = id.db.conn().await?;
    Ok(store::audit::list(&mut c, filter, after, limit.clamp(1, MAX_PAGE)).await?)
}

/// The largest page [`list`] returns.
pub const MAX_PAGE: u32 = 1000;
/// Rows read per keyset page while exporting.
pub const EXPORT_PAGE: u32 = 500;

/// One row as a line of JSON Lines (a JSON object and `\n`).
pub fn json_line(row: &AuditLog) -> Result<String, IdentityError> {
    let mut line =
        serde_json::to_string(row).map_err(|e| IdentityError::Internal(e.to_string()))?;
    line.push('\n');
    Ok(line)
}

/// Streams every row matching `filter`, in log order, to `out` as JSON Lines, reading
/// keyset pages of [`EXPORT_PAGE`] (never the whole log at once). Returns how many rows
/// were written. Rows added while exporting after the last page read are not included.
pub async fn export_jsonl<W: AsyncWrite + Unpin + Send>(
    id: &Identity,
    filter: &Filter,
    out: &mut W,
) -> Result<u64, IdentityError> {
    export_jsonl_pages(id, filter, EXPORT_PAGE, out).await
}

/// [`export_jsonl`] reading pages of `page_size` rows (clamped to 1..=[`MAX_PAGE`]).
pub async fn export_jsonl_pages<W: AsyncWrite + Unpin + Send>(
    id: &Identity,
    filter: &Filter,
    page_size: u32,
    out: &mut W,
) -> Result<u64, IdentityError> {
    let page_size = page_size.clamp(1, MAX_PAGE);
    let mut after = None;
    let mut n = 0u64;
    loop {
        let page = list(id, filter, after, page_size).await?;
        for row in &page {
            out.write_all(json_line(row)?.as_bytes())
                .await
                .map_err(|e| IdentityError::Internal(format!("audit export: {e}")))?;
            n += 1;
        }
        match page.last() {
            Some(last) if page.len() == page_size as usize => after = Some(last.log_id),
            _ => break,
        }
    }
    out.flush()
        .await
        .map_err(|e| IdentityError::Internal(format!("audit export: {e}")))?;
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_json_line_is_one_object_and_a_newline() {
        let row = AuditLog {
            log_id: Uuid::nil(),
            user_id: None,
            org_id: None,
            action: "user.created".into(),
            object_type: Some("user".into()),
            object_id: Some("u1".into()),
            ip_address: Some(Inet("192.0.2.7".parse().unwrap())),
            user_agent: Some("line\nbreak".into()),
            timestamp: chrono::DateTime::from_timestamp(0, 0).unwrap(),
            details: Json(json!({"a": 1})),
            actor_type: "system".into(),
            actor_id: None,
            impersonator_id: None,
        };
        let line = json_line(&row).unwrap();
        assert!(line.ends_with('\n'));
        assert_eq!(
            line.matches('\n').count(),
            1,
            "embedded newlines are escaped"
        );
        let v: Value = serde_json::from_str(line.trim_end()).unwrap();
        assert_eq!(v["action"], "user.created");
        assert_eq!(v["ip_address"], "192.0.2.7");
        assert_eq!(v["details"], json!({"a": 1}));
        assert_eq!(v["timestamp"], "1970-01-01T00:00:00Z");
    }

    #[test]
    fn events_and_pairs() {
        let org = Uuid::nil();
        let e = Event::new("role.created", "role", 7).org(org);
        assert_eq!((e.org_id, e.object_id.as_str()), (Some(org), "7"));
        assert_eq!(e.details, json!({}));
        assert_eq!(pair("a", 1), "a:1");
        let actor = Actor {
            kind: ActorKind::ApiKey {
                key_id: Uuid::nil(),
                owner: None,
            },
            ..Actor::default()
        };
        assert_eq!(
            actor.columns(),
            ("api_key", Some(Uuid::nil().to_string()), None)
        );
    }

    #[test]
    fn diff_lists_changed_fields_only_and_never_secrets() {
        let before = json!({"email": "a@x.co", "enabled": true, "password_hash": "h1", "n": 1});
        let after = json!({"email": "b@x.co", "enabled": true, "password_hash": "h2", "m": 2});
        let d = diff(&before, &after, &["password_hash"]);
        assert_eq!(
            d,
            json!({
                "email": {"before": "a@x.co", "after": "b@x.co"},
                "m": {"before": null, "after": 2},
                "n": {"before": 1, "after": null}
            })
        );
    }
}
