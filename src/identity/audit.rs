//! The audit log. Every mutation writes one row **in its own transaction** through
//! [`record`]: who acted (the [`Actor`] the `Identity` handle carries), on which org and
//! object, and what changed (never a secret).
use super::{Identity, IdentityError};
use crate::store::audit::{AuditLog, Filter};
use crate::store::{self, Access, Inet, Json};
use serde_json::{Map, Value};
use std::net::IpAddr;
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

/// Reads the log (filters narrow; keyset pagination after `after`).
pub async fn list(
    id: &Identity,
    filter: &Filter,
    after: Option<Uuid>,
    limit: u32,
) -> Result<Vec<AuditLog>, IdentityError> {
    let mut c = id.db.conn().await?;
    Ok(store::audit::list(&mut c, filter, after, limit.clamp(1, 1000)).await?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

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
