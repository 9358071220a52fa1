//! SCIM clients (one per IdP connection of an org), their bearer tokens, attribute mappings
//! and group → role rules. Tokens are `lst_<43 chars>` (256 random bits), stored as SHA-256,
//! shown once; a rotation keeps older tokens valid for `scim.token_overlap_secs`.
use crate::config::Secret;
use crate::identity::audit::{self, Actor, ActorKind, Event};
use crate::identity::sessions::{hash_token, new_token};
use crate::identity::{Identity, IdentityError};
use crate::store::scim::{GroupRole, ScimClient, ScimMapping, ScimToken};
use crate::store::{self};
use serde_json::json;
use subtle::ConstantTimeEq;
use uuid::Uuid;

pub const TOKEN_PREFIX: &str = "lst_";

/// The client a request authenticated as; every SCIM operation is scoped to its org.
#[derive(Debug, Clone)]
pub struct ScimPrincipal {
    pub client: ScimClient,
    pub token_id: Uuid,
}

impl ScimPrincipal {
    pub fn org_id(&self) -> Uuid {
        self.client.org_id
    }

    pub fn client_id(&self) -> Uuid {
        self.client.client_id
    }

    /// The identity services acting as this client (its id goes into every audit row).
    pub fn identity(&self, id: &Identity, actor: &Actor) -> Identity {
        id.acting_as(Actor {
            kind: ActorKind::ScimClient {
                client_id: self.client.client_id,
            },
            ..actor.clone()
        })
    }
}

fn new_secret() -> String {
    format!("{TOKEN_PREFIX}{}", new_token())
}

/// Creates a client for `org_id` and its first token (returned once).
pub async fn create(
    id: &Identity,
    org_id: Uuid,
    name: Option<String>,
) -> Result<(ScimClient, ScimToken, Secret<String>), IdentityError> {
    if name.as_ref().is_some_and(|n| n.chars().count() > 200) {
        return Err(IdentityError::invalid(
            "name",
            "must be at most 200 characters",
        ));
    }
    let now = id.clock.now();
    let mut tx = id.db.begin().await?;
    store::orgs::get(&mut tx, org_id)
        .await?
        .ok_or(IdentityError::NotFound {
            what: "organization",
        })?;
    let client = ScimClient {
        client_id: Uuid::now_v7(),
        org_id,
        name,
        created_at: now,
        expires_at: None,
        enabled: true,
    };
    store::scim::insert_client(&mut tx, &client).await?;
    let (token, secret) = insert_token(id, &mut tx, client.client_id).await?;
    audit::record(
        &mut tx,
        id,
        Event::new("scim_client.created", "scim_client", client.client_id)
            .org(org_id)
            .details(json!({ "name": client.name, "token_id": token.token_id })),
    )
    .await?;
    tx.commit().await?;
    Ok((client, token, secret))
}

async fn insert_token(
    id: &Identity,
    tx: &mut store::Tx,
    client_id: Uuid,
) -> Result<(ScimToken, Secret<String>), IdentityError> {
    let now = id.clock.now();
    let secret = new_secret();
    let expires_at = match id.config.scim.token_ttl {
        Some(ttl) => Some(
            now + chrono::Duration::from_std(ttl)
                .map_err(|_| IdentityError::Internal("token ttl out of range".into()))?,
        ),
        None => None,
    };
    let token = ScimToken {
        token_id: Uuid::now_v7(),
        client_id,
        token: hash_token(&secret),
        expires_at,
        created_at: Some(now),
    };
    store::scim::insert_token(tx, &token).await?;
    Ok((token, Secret::new(secret)))
}

/// A new token for the client; older ones expire after the configured overlap.
pub async fn rotate_token(
    id: &Identity,
    client_id: Uuid,
) -> Result<(ScimToken, Secret<String>), IdentityError> {
    let now = id.clock.now();
    let mut tx = id.db.begin().await?;
    let client =
        store::scim::get_client(&mut tx, client_id)
            .await?
            .ok_or(IdentityError::NotFound {
                what: "SCIM client",
            })?;
    let (token, secret) = insert_token(id, &mut tx, client_id).await?;
    let overlap = chrono::Duration::from_std(id.config.scim.token_overlap)
        .map_err(|_| IdentityError::Internal("overlap out of range".into()))?;
    let capped =
        store::scim::expire_other_tokens(&mut tx, client_id, token.token_id, now + overlap).await?;
    audit::record(
        &mut tx,
        id,
        Event::new("scim_token.rotated", "scim_client", client_id)
            .org(client.org_id)
            .details(json!({
                "token_id": token.token_id,
                "older_tokens_expiring": capped,
                "older_tokens_expire_at": now + overlap,
            })),
    )
    .await?;
    tx.commit().await?;
    super::cache::forget_client(client_id);
    Ok((token, secret))
}

/// Revokes one token at once.
pub async fn revoke_token(
    id: &Identity,
    client_id: Uuid,
    token_id: Uuid,
) -> Result<(), IdentityError> {
    let mut tx = id.db.begin().await?;
    let client =
        store::scim::get_client(&mut tx, client_id)
            .await?
            .ok_or(IdentityError::NotFound {
                what: "SCIM client",
            })?;
    if !store::scim::delete_token(&mut tx, client_id, token_id).await? {
        return Err(IdentityError::NotFound { what: "SCIM token" });
    }
    audit::record(
        &mut tx,
        id,
        Event::new("scim_token.revoked", "scim_client", client_id)
            .org(client.org_id)
            .details(json!({ "token_id": token_id })),
    )
    .await?;
    tx.commit().await?;
    super::cache::forget_client(client_id);
    Ok(())
}

/// Resolves a bearer token. Unknown, malformed and revoked tokens, and tokens of a
/// disabled client, are `TokenInvalid`; expired ones `TokenExpired`.
pub async fn authenticate(id: &Identity, presented: &str) -> Result<ScimPrincipal, IdentityError> {
    if !presented.starts_with(TOKEN_PREFIX) || presented.len() != TOKEN_PREFIX.len() + 43 {
        return Err(IdentityError::TokenInvalid);
    }
    let hash = hash_token(presented);
    let (token, client) = match super::cache::tokens().get(&hash) {
        Some(hit) => hit,
        None => {
            let mut c = id.db.conn().await?;
            let Some(found) = store::scim::find_token(&mut c, &hash).await? else {
                return Err(IdentityError::TokenInvalid);
            };
            super::cache::tokens().put(hash.clone(), found.clone());
            found
        }
    };
    if !bool::from(hash.as_bytes().ct_eq(token.token.as_bytes())) || !client.enabled {
        return Err(IdentityError::TokenInvalid);
    }
    let now = id.clock.now();
    if token.expires_at.is_some_and(|t| t <= now) || client.expires_at.is_some_and(|t| t <= now) {
        return Err(IdentityError::TokenExpired);
    }
    Ok(ScimPrincipal {
        token_id: token.token_id,
        client,
    })
}

pub async fn get(id: &Identity, client_id: Uuid) -> Result<ScimClient, IdentityError> {
    let mut c = id.db.conn().await?;
    store::scim::get_client(&mut c, client_id)
        .await?
        .ok_or(IdentityError::NotFound {
            what: "SCIM client",
        })
}

pub async fn list(
    id: &Identity,
    org_id: Option<Uuid>,
    after: Option<Uuid>,
    limit: u32,
) -> Result<Vec<ScimClient>, IdentityError> {
    let mut c = id.db.conn().await?;
    Ok(store::scim::list_clients(&mut c, org_id, after, limit.clamp(1, 1000)).await?)
}

pub async fn tokens(id: &Identity, client_id: Uuid) -> Result<Vec<ScimToken>, IdentityError> {
    let mut c = id.db.conn().await?;
    Ok(store::scim::list_tokens(&mut c, client_id).await?)
}

/// Renames, enables or disables a client.
pub async fn update(
    id: &Identity,
    client_id: Uuid,
    name: Option<Option<String>>,
    enabled: Option<bool>,
) -> Result<ScimClient, IdentityError> {
    let mut tx = id.db.begin().await?;
    let mut client =
        store::scim::get_client(&mut tx, client_id)
            .await?
            .ok_or(IdentityError::NotFound {
                what: "SCIM client",
            })?;
    let before = client.clone();
    if let Some(name) = name {
        if name.as_ref().is_some_and(|n| n.chars().count() > 200) {
            return Err(IdentityError::invalid(
                "name",
                "must be at most 200 characters",
            ));
        }
        client.name = name;
    }
    if let Some(enabled) = enabled {
        client.enabled = enabled;
    }
    store::scim::update_client(&mut tx, &client).await?;
    audit::record(
        &mut tx,
        id,
        Event::new("scim_client.updated", "scim_client", client_id)
            .org(client.org_id)
            .details(audit::diff_of(&before, &client, &[])),
    )
    .await?;
    tx.commit().await?;
    super::cache::forget_client(client_id);
    Ok(client)
}

/// Deletes a client with its tokens, mappings and externalIds; provisioned users stay.
pub async fn delete(id: &Identity, client_id: Uuid) -> Result<(), IdentityError> {
    let mut tx = id.db.begin().await?;
    let client =
        store::scim::get_client(&mut tx, client_id)
            .await?
            .ok_or(IdentityError::NotFound {
                what: "SCIM client",
            })?;
    audit::record(
        &mut tx,
        id,
        Event::new("scim_client.deleted", "scim_client", client_id)
            .org(client.org_id)
            .details(json!({ "name": client.name })),
    )
    .await?;
    store::scim::delete_client(&mut tx, client_id).await?;
    tx.commit().await?;
    super::cache::forget_client(client_id);
    Ok(())
}

/// The client's explicit mapping rows (the defaults apply where none is set).
pub async fn mappings(id: &Identity, client_id: Uuid) -> Result<Vec<ScimMapping>, IdentityError> {
    let mut c = id.db.conn().await?;
    Ok(store::scim::list_mappings(&mut c, client_id).await?)
}

/// Replaces a client's mapping (`(scim_attribute, local_attribute)` pairs), validated by
/// [`super::mapping::validate`].
pub async fn set_mappings(
    id: &Identity,
    client_id: Uuid,
    pairs: Vec<(String, String)>,
) -> Result<Vec<ScimMapping>, IdentityError> {
    let rows =
        super::mapping::validate(&pairs).map_err(|m| IdentityError::invalid("mappings", m))?;
    let rows: Vec<ScimMapping> = rows
        .into_iter()
        .map(|(scim, local)| ScimMapping {
            mapping_id: Uuid::now_v7(),
            client_id,
            local_attribute: local,
            scim_attribute: scim,
        })
        .collect();
    let mut tx = id.db.begin().await?;
    let client =
        store::scim::get_client(&mut tx, client_id)
            .await?
            .ok_or(IdentityError::NotFound {
                what: "SCIM client",
            })?;
    store::scim::replace_mappings(&mut tx, client_id, &rows).await?;
    let shown: Vec<_> = rows
        .iter()
        .map(
            |m| json!({ "scim_attribute": m.scim_attribute, "local_attribute": m.local_attribute }),
        )
        .collect();
    audit::record(
        &mut tx,
        id,
        Event::new("scim_mapping.updated", "scim_client", client_id)
            .org(client.org_id)
            .details(json!({ "mappings": shown })),
    )
    .await?;
    tx.commit().await?;
    super::cache::forget_client(client_id);
    Ok(rows)
}

pub async fn group_roles(id: &Identity, client_id: Uuid) -> Result<Vec<GroupRole>, IdentityError> {
    let mut c = id.db.conn().await?;
    Ok(store::scim::list_group_roles(&mut c, client_id).await?)
}

/// Replaces a client's group → role rules: `(group displayName, role name)` pairs; roles
/// must exist in the client's org.
pub async fn set_group_roles(
    id: &Identity,
    client_id: Uuid,
    pairs: Vec<(String, String)>,
) -> Result<Vec<GroupRole>, IdentityError> {
    let mut tx = id.db.begin().await?;
    let client =
        store::scim::get_client(&mut tx, client_id)
            .await?
            .ok_or(IdentityError::NotFound {
                what: "SCIM client",
            })?;
    let mut rows: Vec<GroupRole> = Vec::with_capacity(pairs.len());
    for (group, role) in &pairs {
        let group = group.trim();
        if group.is_empty() || group.chars().count() > 256 {
            return Err(IdentityError::invalid(
                "group",
                "a group name is 1 to 256 characters",
            ));
        }
        let role = store::roles::find_role_by_name(&mut tx, client.org_id, role)
            .await?
            .ok_or(IdentityError::NotFound { what: "role" })?;
        let folded = super::fold(group);
        if rows.iter().any(|r| r.group_display_name == folded) {
            return Err(IdentityError::invalid(
                "group",
                format!("`{group}` is mapped twice"),
            ));
        }
        rows.push(GroupRole {
            client_id,
            group_display_name: folded,
            role_id: role.role_id,
        });
    }
    store::scim::replace_group_roles(&mut tx, client_id, &rows).await?;
    audit::record(
        &mut tx,
        id,
        Event::new("scim_group_roles.updated", "scim_client", client_id)
            .org(client.org_id)
            .details(json!({ "rules": pairs })),
    )
    .await?;
    tx.commit().await?;
    Ok(rows)
}

/// The client's effective mapping (its rows over the defaults).
pub async fn effective_rules(
    id: &Identity,
    client_id: Uuid,
) -> Result<Vec<super::mapping::Rule>, IdentityError> {
    let rows = mappings(id, client_id).await?;
    let pairs: Vec<(String, String)> = rows
        .into_iter()
        .map(|m| (m.scim_attribute, m.local_attribute))
        .collect();
    Ok(super::mapping::effective(
        super::mapping::defaults(&id.config.scim.user_name_maps_to),
        &pairs,
    ))
}

/// Shows where a sample SCIM User would land under the client's mapping, writing nothing:
/// the normalised document, the local values, and the rules used.
pub async fn dry_run(
    id: &Identity,
    client_id: Uuid,
    payload: &serde_json::Value,
) -> Result<serde_json::Value, IdentityError> {
    get(id, client_id).await?;
    let rules = effective_rules(id, client_id).await?;
    let doc = super::schema::normalize(&super::schema::USER_RESOURCE, payload, None)
        .map_err(|e| IdentityError::invalid("payload", e.detail))?;
    let local = super::mapping::to_local(&rules, &doc);
    Ok(json!({ "normalized": doc, "local": local, "rules": rules }))
}
