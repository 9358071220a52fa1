//! SCIM persistence: clients, their bearer tokens and attribute mappings, provisioned users
//! (`scim_users` + `users`), groups and members, resource metadata and per-client externalIds.
//! Filters arrive as a [`query::Cond`] tree and are rendered here with bound values only.
use super::{Access, StoreError, with_conn};
use chrono::{DateTime, Utc};
use serde::Serialize;
use uuid::Uuid;

pub mod query;
pub mod resources;

#[derive(Debug, Clone, PartialEq, sqlx::FromRow, Serialize)]
pub struct ScimClient {
    pub client_id: Uuid,
    pub org_id: Uuid,
    pub name: Option<String>,
    pub created_at: DateTime<Utc>,
    pub expires_at: Option<DateTime<Utc>>,
    pub enabled: bool,
}

const CLIENT_COLUMNS: &str = "client_id, org_id, name, created_at, expires_at, enabled";

pub async fn insert_client(a: &mut impl Access, c: &ScimClient) -> Result<(), StoreError> {
    let sql =
        format!("INSERT INTO scim_clients ({CLIENT_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6)");
    with_conn!(a, |conn| sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(c.client_id)
        .bind(c.org_id)
        .bind(&c.name)
        .bind(c.created_at)
        .bind(c.expires_at)
        .bind(c.enabled)
        .execute(&mut *conn)
        .await?
        .rows_affected());
    Ok(())
}

pub async fn get_client(
    a: &mut impl Access,
    client_id: Uuid,
) -> Result<Option<ScimClient>, StoreError> {
    let sql = format!("SELECT {CLIENT_COLUMNS} FROM scim_clients WHERE client_id = $1");
    Ok(with_conn!(a, |c| sqlx::query_as(sqlx::AssertSqlSafe(sql))
        .bind(client_id)
        .fetch_optional(&mut *c)
        .await?))
}

/// Clients of one org (or all), keyset-paged by id.
pub async fn list_clients(
    a: &mut impl Access,
    org_id: Option<Uuid>,
    after: Option<Uuid>,
    limit: u32,
) -> Result<Vec<ScimClient>, StoreError> {
    let sql = format!(
        "SELECT {CLIENT_COLUMNS} FROM scim_clients
         WHERE ($1 IS NULL OR org_id = $1) AND ($2 IS NULL OR client_id > $2)
         ORDER BY client_id LIMIT $3"
    );
    Ok(with_conn!(a, |c| sqlx::query_as(sqlx::AssertSqlSafe(sql))
        .bind(org_id)
        .bind(after)
        .bind(i64::from(limit))
        .fetch_all(&mut *c)
        .await?))
}

pub async fn update_client(a: &mut impl Access, c: &ScimClient) -> Result<bool, StoreError> {
    let n = with_conn!(a, |conn| sqlx::query(
        "UPDATE scim_clients SET name = $2, expires_at = $3, enabled = $4 WHERE client_id = $1"
    )
    .bind(c.client_id)
    .bind(&c.name)
    .bind(c.expires_at)
    .bind(c.enabled)
    .execute(&mut *conn)
    .await?
    .rows_affected());
    Ok(n == 1)
}

pub async fn delete_client(a: &mut impl Access, client_id: Uuid) -> Result<bool, StoreError> {
    let n = with_conn!(a, |c| sqlx::query(
        "DELETE FROM scim_clients WHERE client_id = $1"
    )
    .bind(client_id)
    .execute(&mut *c)
    .await?
    .rows_affected());
    Ok(n == 1)
}

/// A bearer token of a client; `token` holds the SHA-256 of the secret, never the secret.
#[derive(Debug, Clone, PartialEq, sqlx::FromRow, Serialize)]
pub struct ScimToken {
    pub token_id: Uuid,
    pub client_id: Uuid,
    #[serde(skip)]
    pub token: String,
    pub expires_at: Option<DateTime<Utc>>,
    pub created_at: Option<DateTime<Utc>>,
}

const TOKEN_COLUMNS: &str = "token_id, client_id, token, expires_at, created_at";

pub async fn insert_token(a: &mut impl Access, t: &ScimToken) -> Result<(), StoreError> {
    let sql = format!("INSERT INTO scim_tokens ({TOKEN_COLUMNS}) VALUES ($1, $2, $3, $4, $5)");
    with_conn!(a, |c| sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(t.token_id)
        .bind(t.client_id)
        .bind(&t.token)
        .bind(t.expires_at)
        .bind(t.created_at)
        .execute(&mut *c)
        .await?
        .rows_affected());
    Ok(())
}

/// The token with this hash and its client.
pub async fn find_token(
    a: &mut impl Access,
    token_hash: &str,
) -> Result<Option<(ScimToken, ScimClient)>, StoreError> {
    #[derive(sqlx::FromRow)]
    struct Row {
        token_id: Uuid,
        client_id: Uuid,
        token: String,
        token_expires_at: Option<DateTime<Utc>>,
        token_created_at: Option<DateTime<Utc>>,
        org_id: Uuid,
        name: Option<String>,
        created_at: DateTime<Utc>,
        expires_at: Option<DateTime<Utc>>,
        enabled: bool,
    }
    let row: Option<Row> = with_conn!(a, |c| sqlx::query_as(
        "SELECT t.token_id, t.client_id, t.token, t.expires_at AS token_expires_at,
                t.created_at AS token_created_at, c.org_id, c.name, c.created_at, c.expires_at,
                c.enabled
         FROM scim_tokens t JOIN scim_clients c ON c.client_id = t.client_id
         WHERE t.token = $1"
    )
    .bind(token_hash)
    .fetch_optional(&mut *c)
    .await?);
    Ok(row.map(|r| {
        (
            ScimToken {
                token_id: r.token_id,
                client_id: r.client_id,
                token: r.token,
                expires_at: r.token_expires_at,
                created_at: r.token_created_at,
            },
            ScimClient {
                client_id: r.client_id,
                org_id: r.org_id,
                name: r.name,
                created_at: r.created_at,
                expires_at: r.expires_at,
                enabled: r.enabled,
            },
        )
    }))
}

pub async fn list_tokens(
    a: &mut impl Access,
    client_id: Uuid,
) -> Result<Vec<ScimToken>, StoreError> {
    let sql =
        format!("SELECT {TOKEN_COLUMNS} FROM scim_tokens WHERE client_id = $1 ORDER BY token_id");
    Ok(with_conn!(a, |c| sqlx::query_as(sqlx::AssertSqlSafe(sql))
        .bind(client_id)
        .fetch_all(&mut *c)
        .await?))
}

/// Caps the expiry of every token of `client_id` but `keep` at `until` (rotation overlap).
pub async fn expire_other_tokens(
    a: &mut impl Access,
    client_id: Uuid,
    keep: Uuid,
    until: DateTime<Utc>,
) -> Result<u64, StoreError> {
    Ok(with_conn!(a, |c| sqlx::query(
        "UPDATE scim_tokens SET expires_at = $3
         WHERE client_id = $1 AND token_id <> $2 AND (expires_at IS NULL OR expires_at > $3)"
    )
    .bind(client_id)
    .bind(keep)
    .bind(until)
    .execute(&mut *c)
    .await?
    .rows_affected()))
}

pub async fn delete_token(
    a: &mut impl Access,
    client_id: Uuid,
    token_id: Uuid,
) -> Result<bool, StoreError> {
    let n = with_conn!(a, |c| sqlx::query(
        "DELETE FROM scim_tokens WHERE client_id = $1 AND token_id = $2"
    )
    .bind(client_id)
    .bind(token_id)
    .execute(&mut *c)
    .await?
    .rows_affected());
    Ok(n == 1)
}

/// One row of a client's attribute mapping.
#[derive(Debug, Clone, PartialEq, sqlx::FromRow, Serialize)]
pub struct ScimMapping {
    pub mapping_id: Uuid,
    pub client_id: Uuid,
    pub local_attribute: String,
    pub scim_attribute: String,
}

pub async fn list_mappings(
    a: &mut impl Access,
    client_id: Uuid,
) -> Result<Vec<ScimMapping>, StoreError> {
    Ok(with_conn!(a, |c| sqlx::query_as(
        "SELECT mapping_id, client_id, local_attribute, scim_attribute FROM scim_mappings
         WHERE client_id = $1 ORDER BY scim_attribute"
    )
    .bind(client_id)
    .fetch_all(&mut *c)
    .await?))
}

/// Replaces a client's whole mapping.
pub async fn replace_mappings(
    a: &mut impl Access,
    client_id: Uuid,
    rows: &[ScimMapping],
) -> Result<(), StoreError> {
    with_conn!(a, |c| sqlx::query(
        "DELETE FROM scim_mappings WHERE client_id = $1"
    )
    .bind(client_id)
    .execute(&mut *c)
    .await?
    .rows_affected());
    for m in rows {
        with_conn!(a, |c| sqlx::query(
            "INSERT INTO scim_mappings (mapping_id, client_id, local_attribute, scim_attribute)
             VALUES ($1, $2, $3, $4)"
        )
        .bind(m.mapping_id)
        .bind(client_id)
        .bind(&m.local_attribute)
        .bind(&m.scim_attribute)
        .execute(&mut *c)
        .await?
        .rows_affected());
    }
    Ok(())
}

/// A group → role rule of a client (`group_display_name` stored case-folded).
#[derive(Debug, Clone, PartialEq, sqlx::FromRow, Serialize)]
pub struct GroupRole {
    pub client_id: Uuid,
    pub group_display_name: String,
    pub role_id: Uuid,
}

pub async fn list_group_roles(
    a: &mut impl Access,
    client_id: Uuid,
) -> Result<Vec<GroupRole>, StoreError> {
    Ok(with_conn!(a, |c| sqlx::query_as(
        "SELECT client_id, group_display_name, role_id FROM scim_group_roles
         WHERE client_id = $1 ORDER BY group_display_name"
    )
    .bind(client_id)
    .fetch_all(&mut *c)
    .await?))
}

pub async fn replace_group_roles(
    a: &mut impl Access,
    client_id: Uuid,
    rows: &[GroupRole],
) -> Result<(), StoreError> {
    with_conn!(a, |c| sqlx::query(
        "DELETE FROM scim_group_roles WHERE client_id = $1"
    )
    .bind(client_id)
    .execute(&mut *c)
    .await?
    .rows_affected());
    for g in rows {
        with_conn!(a, |c| sqlx::query(
            "INSERT INTO scim_group_roles (client_id, group_display_name, role_id)
             VALUES ($1, $2, $3)"
        )
        .bind(client_id)
        .bind(&g.group_display_name)
        .bind(g.role_id)
        .execute(&mut *c)
        .await?
        .rows_affected());
    }
    Ok(())
}

/// Every group → role rule of the org's clients: (folded group name, role id).
pub async fn org_group_roles(
    a: &mut impl Access,
    org_id: Uuid,
) -> Result<Vec<(String, Uuid)>, StoreError> {
    Ok(with_conn!(a, |c| sqlx::query_as(
        "SELECT r.group_display_name, r.role_id FROM scim_group_roles r
         JOIN scim_clients c ON c.client_id = r.client_id
         WHERE c.org_id = $1"
    )
    .bind(org_id)
    .fetch_all(&mut *c)
    .await?))
}
