//! SCIM Users (a `scim_users` row joined to its `users` row) and Groups with members,
//! resource metadata (version, timestamps) and per-client externalIds.
use super::query::{Bound, Col, Cond, Dialect, Resource, Sql, Uses, order_by};
use crate::store::{Access, Exec, Json, StoreError, TextList, with_conn};
use chrono::{DateTime, Utc};
use serde_json::Value;
use uuid::Uuid;

pub fn dialect(a: &mut impl Access) -> Dialect {
    match a.exec() {
        Exec::Sqlite(_) => Dialect::Sqlite,
        Exec::Postgres(_) => Dialect::Postgres,
    }
}

/// Binds rendered values, in order, onto a query.
macro_rules! bind_all {
    ($q:expr, $binds:expr) => {{
        let mut q = $q;
        for b in $binds {
            q = match b {
                Bound::Text(s) => q.bind(s),
                Bound::Bool(v) => q.bind(v),
                Bound::Num(n) => q.bind(n),
                Bound::Time(t) => q.bind(t),
                Bound::Uuid(u) => q.bind(u),
                Bound::Int(n) => q.bind(n),
                Bound::TextArray(v) => q.bind(TextList(v)),
            };
        }
        q
    }};
}

/// Runs `sql` with `$1` the client, `$2` the org and `binds` after them; all rows.
macro_rules! fetch_all {
    ($a:expr, $sql:expr, $client_id:expr, $org_id:expr, $binds:expr) => {
        Ok(with_conn!($a, |c| bind_all!(
            sqlx::query_as(sqlx::AssertSqlSafe($sql))
                .bind($client_id)
                .bind($org_id),
            $binds.clone()
        )
        .fetch_all(&mut *c)
        .await?))
    };
}

/// How a listing is ordered and cut.
#[derive(Debug, Clone, Default)]
pub struct Page {
    pub sort: Option<(Col, bool /* fold */)>,
    pub descending: bool,
    /// Rows to skip (`startIndex - 1`).
    pub offset: u64,
    pub limit: u32,
    /// Keyset cursor: ids after this one (ordered by id; RFC 9865).
    pub after: Option<Uuid>,
    /// Ids from this one on (ordered by id), `offset` counting from it; the statement
    /// returns no rows once the org's change counter has moved past the anchor's.
    pub anchor: Option<Anchor>,
}

/// An id at a known position of an org's id order, valid while the org's change counter
/// for the resource type is `changes` (see [`id_anchors`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Anchor {
    pub id: Uuid,
    pub changes: i64,
}

/// A row type a SCIM list pages through: Users or Groups.
pub trait Listed: Sized + Send {
    const RESOURCE: Resource;

    /// One page of the org's rows matching `cond` (see [`search_users`]).
    fn search(
        a: &mut impl Access,
        client_id: Uuid,
        org_id: Uuid,
        cond: &Cond,
        page: &Page,
    ) -> impl Future<Output = Result<Vec<Self>, StoreError>> + Send;
}

impl Listed for UserRow {
    const RESOURCE: Resource = Resource::User;

    fn search(
        a: &mut impl Access,
        client_id: Uuid,
        org_id: Uuid,
        cond: &Cond,
        page: &Page,
    ) -> impl Future<Output = Result<Vec<Self>, StoreError>> + Send {
        search_users(a, client_id, org_id, cond, page)
    }
}

impl Listed for GroupRow {
    const RESOURCE: Resource = Resource::Group;

    fn search(
        a: &mut impl Access,
        client_id: Uuid,
        org_id: Uuid,
        cond: &Cond,
        page: &Page,
    ) -> impl Future<Output = Result<Vec<Self>, StoreError>> + Send {
        search_groups(a, client_id, org_id, cond, page)
    }
}

/// Appends a page's cursor and anchor conditions to the rendered filter.
fn page_conds(q: &mut Sql, page: &Page, r: Resource) {
    let id = match r {
        Resource::User => "su.user_id",
        Resource::Group => "g.group_id",
    };
    let kind = r.type_name();
    if let Some(after) = page.after {
        let p = q.bind(Bound::Uuid(after));
        q.text.push_str(&format!(" AND {id} > {p}"));
    }
    if let Some(a) = page.anchor {
        let p = q.bind(Bound::Uuid(a.id));
        let n = q.bind(Bound::Int(a.changes));
        q.text.push_str(&format!(
            " AND {id} >= {p} AND (SELECT changes FROM scim_resource_counts \
             WHERE org_id = $2 AND resource_type = '{kind}') = {n}"
        ));
    }
}

#[derive(Debug, Clone, PartialEq, sqlx::FromRow)]
pub struct UserRow {
    pub user_id: Uuid,
    pub org_id: Uuid,
    pub user_name: String,
    pub display_name: Option<String>,
    pub attributes: Json<Value>,
    pub active: bool,
    pub client_id: Option<Uuid>,
    pub email: String,
    pub email_confirmed: bool,
    pub username: Option<String>,
    pub first_name: Option<String>,
    pub last_name: Option<String>,
    pub picture_url: Option<String>,
    pub enabled: bool,
    pub properties: Json<Value>,
    pub version: i64,
    /// Changes with anything the representation is built from (migration 0009).
    pub stamp: i64,
    pub created_at: DateTime<Utc>,
    pub last_modified: DateTime<Utc>,
    pub external_id: Option<String>,
    /// The user's groups in the org as a JSON array of `[group id, displayName]`, read in
    /// the same statement (see [`UserRow::groups`]).
    #[sqlx(rename = "groups")]
    pub groups_json: String,
}

impl UserRow {
    /// The user's groups in the org, by group id.
    pub fn groups(&self) -> Result<Vec<(Uuid, String)>, StoreError> {
        let bad = |e: Box<dyn std::error::Error + Send + Sync>| {
            StoreError::Database(sqlx::Error::Decode(e))
        };
        let raw: Vec<(String, String)> =
            serde_json::from_str(&self.groups_json).map_err(|e| bad(e.into()))?;
        let mut out = raw
            .into_iter()
            .map(|(id, name)| Uuid::parse_str(&id).map(|id| (id, name)))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| bad(e.into()))?;
        out.sort();
        Ok(out)
    }
}

/// `$1` is the requesting client (for its externalIds), `$2` the org.
const USER_FROM: &str = "FROM scim_users su
    JOIN users u ON u.user_id = su.user_id
    JOIN scim_resource_meta m ON m.resource_type = 'User' AND m.resource_id = su.user_id
    LEFT JOIN scim_external_ids x
      ON x.client_id = $1 AND x.resource_type = 'User' AND x.resource_id = su.user_id
    WHERE su.org_id = $2";

const USER_COLUMNS: &str = "su.user_id, su.org_id, su.user_name, su.display_name, su.attributes, \
    su.active, su.client_id, u.email, u.email_confirmed, u.username, u.first_name, u.last_name, \
    u.picture_url, u.enabled, u.properties, m.version, m.stamp, m.created_at, m.last_modified, \
    x.external_id";

/// [`USER_COLUMNS`] plus the user's groups as one JSON text column, so a page of users is
/// one statement (each is a round trip to SQLite's worker thread or to PostgreSQL).
fn user_columns(d: Dialect) -> String {
    let groups = match d {
        Dialect::Sqlite => {
            "SELECT json_group_array(json_array(lower(hex(g.group_id)), g.display_name))"
        }
        Dialect::Postgres => {
            "SELECT COALESCE(json_agg(json_build_array(g.group_id, g.display_name)), '[]')::text"
        }
    };
    format!(
        "{USER_COLUMNS}, ({groups} FROM scim_group_members gm \
         JOIN scim_groups g ON g.group_id = gm.group_id \
         WHERE gm.user_id = su.user_id AND g.org_id = su.org_id) AS groups"
    )
}

pub async fn get_user(
    a: &mut impl Access,
    client_id: Uuid,
    org_id: Uuid,
    user_id: Uuid,
) -> Result<Option<UserRow>, StoreError> {
    let sql = format!(
        "SELECT {} {USER_FROM} AND su.user_id = $3",
        user_columns(dialect(a))
    );
    Ok(with_conn!(a, |c| sqlx::query_as(sqlx::AssertSqlSafe(sql))
        .bind(client_id)
        .bind(org_id)
        .bind(user_id)
        .fetch_optional(&mut *c)
        .await?))
}

/// Locks a provisioned user's row for the rest of the transaction. `false` when there is none.
pub async fn lock_user(
    a: &mut impl Access,
    org_id: Uuid,
    user_id: Uuid,
) -> Result<bool, StoreError> {
    lock_in_org(a, "scim_users", "user_id", org_id, user_id).await
}

/// `SELECT … FOR UPDATE` on PostgreSQL; SQLite's `BEGIN IMMEDIATE` already serializes
/// writers, so a plain read there. `table` and `id` are constants of this module.
async fn lock_in_org(
    a: &mut impl Access,
    table: &'static str,
    id: &'static str,
    org_id: Uuid,
    row_id: Uuid,
) -> Result<bool, StoreError> {
    let select = format!("SELECT {id} FROM {table} WHERE org_id = $1 AND {id} = $2");
    let sql = match a.exec() {
        Exec::Sqlite(_) => select,
        Exec::Postgres(_) => format!("{select} FOR UPDATE"),
    };
    let row: Option<(Uuid,)> = with_conn!(a, |c| sqlx::query_as(sqlx::AssertSqlSafe(sql))
        .bind(org_id)
        .bind(row_id)
        .fetch_optional(&mut *c)
        .await?);
    Ok(row.is_some())
}

/// The joins of [`USER_FROM`] a condition needs (the rest are left out of the inner query
/// that picks the page, so skipping `startIndex` rows costs one index walk).
fn user_joins(uses: Uses) -> String {
    let mut j = String::new();
    if uses.users {
        j.push_str(" JOIN users u ON u.user_id = su.user_id");
    }
    if uses.meta {
        j.push_str(
            " JOIN scim_resource_meta m ON m.resource_type = 'User' AND m.resource_id = su.user_id",
        );
    }
    if uses.external_ids {
        j.push_str(
            " LEFT JOIN scim_external_ids x \
             ON x.client_id = $1 AND x.resource_type = 'User' AND x.resource_id = su.user_id",
        );
    }
    j
}

pub async fn search_users(
    a: &mut impl Access,
    client_id: Uuid,
    org_id: Uuid,
    cond: &Cond,
    page: &Page,
) -> Result<Vec<UserRow>, StoreError> {
    let columns = user_columns(dialect(a));
    let (sql, binds) = user_page(a, cond, page, |_| format!("SELECT {columns} {USER_FROM}"));
    fetch_all!(a, sql, client_id, org_id, binds)
}

/// A page's statement: `select` (given the joins its order needs; it ends in `WHERE
/// su.org_id = $2`) over the ids of the page, which is cut from `scim_users` alone so
/// that skipped rows cost an index step each. Returns the text and the binds after
/// `$1` (the client) and `$2` (the org).
fn user_page(
    a: &mut impl Access,
    cond: &Cond,
    page: &Page,
    select: impl FnOnce(Uses) -> String,
) -> (String, Vec<Bound>) {
    let mut q = Sql::new(dialect(a), Resource::User, 3);
    q.cond(cond);
    page_conds(&mut q, page, Resource::User);
    let where_ = std::mem::take(&mut q.text);
    let sort = page.sort.as_ref();
    let inner_order = order_by(
        &mut q,
        sort.map(|s| &s.0),
        page.descending,
        sort.is_some_and(|s| s.1),
    );
    let joins = user_joins(q.uses);
    let n = q.binds.len();
    let (limit, offset) = (format!("${}", n + 3), format!("${}", n + 4));
    // The outer query repeats the order with its own placeholders.
    let mut outer = Sql::new(dialect(a), Resource::User, n + 5);
    let outer_order = order_by(
        &mut outer,
        sort.map(|s| &s.0),
        page.descending,
        sort.is_some_and(|s| s.1),
    );
    let head = select(outer.uses);
    let sql = format!(
        "{head} AND su.user_id IN (
           SELECT su.user_id FROM scim_users su{joins}
           WHERE su.org_id = $2 AND {where_} ORDER BY {inner_order} LIMIT {limit} OFFSET {offset})
         ORDER BY {outer_order}"
    );
    let mut binds = q.binds;
    binds.push(Bound::Int(i64::from(page.limit)));
    binds.push(Bound::Int(page.offset as i64));
    binds.extend(outer.binds);
    (sql, binds)
}

/// A listed user's id with what its representation is keyed by: `(version, stamp)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, sqlx::FromRow)]
pub struct UserStamp {
    pub user_id: Uuid,
    pub version: i64,
    pub stamp: i64,
}

impl Listed for UserStamp {
    const RESOURCE: Resource = Resource::User;

    fn search(
        a: &mut impl Access,
        client_id: Uuid,
        org_id: Uuid,
        cond: &Cond,
        page: &Page,
    ) -> impl Future<Output = Result<Vec<Self>, StoreError>> + Send {
        search_user_stamps(a, client_id, org_id, cond, page)
    }
}

/// [`search_users`] reading only each user's id, version and stamp (from an index).
pub async fn search_user_stamps(
    a: &mut impl Access,
    client_id: Uuid,
    org_id: Uuid,
    cond: &Cond,
    page: &Page,
) -> Result<Vec<UserStamp>, StoreError> {
    let (sql, binds) = user_page(a, cond, page, |uses| {
        format!(
            "SELECT su.user_id, ms.version, ms.stamp FROM scim_users su \
             JOIN scim_resource_meta ms ON ms.resource_type = 'User' AND ms.resource_id = su.user_id\
             {} WHERE su.org_id = $2",
            user_joins(uses)
        )
    });
    fetch_all!(a, sql, client_id, org_id, binds)
}

/// The org's provisioned users with these ids (in no order; missing ids are left out).
pub async fn users_by_ids(
    a: &mut impl Access,
    client_id: Uuid,
    org_id: Uuid,
    ids: &[Uuid],
) -> Result<Vec<UserRow>, StoreError> {
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    let mut q = Sql::new(dialect(a), Resource::User, 3);
    let marks: Vec<String> = ids.iter().map(|id| q.bind(Bound::Uuid(*id))).collect();
    let sql = format!(
        "SELECT {} {USER_FROM} AND su.user_id IN ({})",
        user_columns(dialect(a)),
        marks.join(", ")
    );
    let binds = q.binds;
    fetch_all!(a, sql, client_id, org_id, binds)
}

pub async fn count_users(
    a: &mut impl Access,
    client_id: Uuid,
    org_id: Uuid,
    cond: &Cond,
) -> Result<i64, StoreError> {
    let mut q = Sql::new(dialect(a), Resource::User, 3);
    q.cond(cond);
    let joins = user_joins(q.uses);
    // `$1` (the client) may go unused here: both drivers send typed parameters.
    let sql = format!(
        "SELECT COUNT(*) FROM scim_users su{joins} WHERE su.org_id = $2 AND {}",
        q.text
    );
    let binds = q.binds;
    let (n,): (i64,) = with_conn!(a, |c| bind_all!(
        sqlx::query_as(sqlx::AssertSqlSafe(sql))
            .bind(client_id)
            .bind(org_id),
        binds.clone()
    )
    .fetch_one(&mut *c)
    .await?);
    Ok(n)
}

/// Resources of a type in an org and its change counter, from the trigger-maintained
/// row (no scan): `(total, changes)`.
pub async fn counts(
    a: &mut impl Access,
    org_id: Uuid,
    resource_type: &str,
) -> Result<(i64, i64), StoreError> {
    let row: Option<(i64, i64)> = with_conn!(a, |c| {
        sqlx::query_as(
        "SELECT total, changes FROM scim_resource_counts WHERE org_id = $1 AND resource_type = $2"
    )
    .bind(org_id)
    .bind(resource_type)
    .fetch_optional(&mut *c)
    .await?
    });
    Ok(row.unwrap_or((0, 0)))
}

/// The ids at positions 0, `step`, 2·`step`, … of an org's id order, with the change
/// counter they hold for, read in one statement (one snapshot).
pub async fn id_anchors(
    a: &mut impl Access,
    r: Resource,
    org_id: Uuid,
    step: u64,
) -> Result<(i64, Vec<Uuid>), StoreError> {
    let (id, table) = match r {
        Resource::User => ("user_id", "scim_users"),
        Resource::Group => ("group_id", "scim_groups"),
    };
    let kind = r.type_name();
    let sql = format!(
        "SELECT t.id, (SELECT changes FROM scim_resource_counts \
           WHERE org_id = $1 AND resource_type = '{kind}') AS changes \
         FROM (SELECT {id} AS id, ROW_NUMBER() OVER (ORDER BY {id}) AS n \
           FROM {table} WHERE org_id = $1) t \
         WHERE (t.n - 1) % $2 = 0 ORDER BY t.id"
    );
    let step = i64::try_from(step.max(1)).unwrap_or(i64::MAX);
    let rows: Vec<(Uuid, Option<i64>)> =
        with_conn!(a, |c| sqlx::query_as(sqlx::AssertSqlSafe(sql))
            .bind(org_id)
            .bind(step)
            .fetch_all(&mut *c)
            .await?);
    let changes = rows.first().and_then(|r| r.1).unwrap_or(0);
    Ok((changes, rows.into_iter().map(|r| r.0).collect()))
}

/// A provisioned user's SCIM-side row.
#[derive(Debug, Clone)]
pub struct ScimUser {
    pub org_id: Uuid,
    pub user_id: Uuid,
    pub user_name: String,
    pub display_name: Option<String>,
    pub attributes: Value,
    pub active: bool,
    pub client_id: Option<Uuid>,
}

pub async fn insert_scim_user(a: &mut impl Access, u: &ScimUser) -> Result<(), StoreError> {
    with_conn!(a, |c| {
        sqlx::query(
        "INSERT INTO scim_users (org_id, user_id, user_name, display_name, attributes, active, client_id, user_name_key)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8)"
    )
    .bind(u.org_id)
    .bind(u.user_id)
    .bind(&u.user_name)
    .bind(&u.display_name)
    .bind(Json(&u.attributes))
    .bind(u.active)
    .bind(u.client_id)
    .bind(crate::store::types::fold_key(&u.user_name))
    .execute(&mut *c)
    .await?
    .rows_affected()
    });
    Ok(())
}

pub async fn update_scim_user(a: &mut impl Access, u: &ScimUser) -> Result<bool, StoreError> {
    let n = with_conn!(a, |c| sqlx::query(
        "UPDATE scim_users SET user_name = $3, display_name = $4, attributes = $5, active = $6,
             user_name_key = $7
         WHERE org_id = $1 AND user_id = $2"
    )
    .bind(u.org_id)
    .bind(u.user_id)
    .bind(&u.user_name)
    .bind(&u.display_name)
    .bind(Json(&u.attributes))
    .bind(u.active)
    .bind(crate::store::types::fold_key(&u.user_name))
    .execute(&mut *c)
    .await?
    .rows_affected());
    Ok(n == 1)
}

pub async fn delete_scim_user(
    a: &mut impl Access,
    org_id: Uuid,
    user_id: Uuid,
) -> Result<bool, StoreError> {
    let n = with_conn!(a, |c| sqlx::query(
        "DELETE FROM scim_users WHERE org_id = $1 AND user_id = $2"
    )
    .bind(org_id)
    .bind(user_id)
    .execute(&mut *c)
    .await?
    .rows_affected());
    Ok(n == 1)
}

/// Orgs other than `org_id` in which the user is provisioned or a member.
pub async fn other_orgs(
    a: &mut impl Access,
    user_id: Uuid,
    org_id: Uuid,
) -> Result<i64, StoreError> {
    let (n,): (i64,) = with_conn!(a, |c| sqlx::query_as(
        "SELECT COUNT(*) FROM user_organization_info WHERE user_id = $1 AND org_id <> $2"
    )
    .bind(user_id)
    .bind(org_id)
    .fetch_one(&mut *c)
    .await?);
    Ok(n)
}

/// Creates the metadata row of a new resource (version 1).
pub async fn insert_meta(
    a: &mut impl Access,
    resource_type: &str,
    resource_id: Uuid,
    org_id: Uuid,
    now: DateTime<Utc>,
) -> Result<(), StoreError> {
    with_conn!(a, |c| {
        sqlx::query(
        "INSERT INTO scim_resource_meta (resource_type, resource_id, org_id, version, created_at, last_modified)
         VALUES ($1, $2, $3, 1, $4, $4)
         ON CONFLICT (resource_type, resource_id) DO UPDATE SET version = scim_resource_meta.version + 1, last_modified = $4"
    )
    .bind(resource_type)
    .bind(resource_id)
    .bind(org_id)
    .bind(now)
    .execute(&mut *c)
    .await?
    .rows_affected()
    });
    Ok(())
}

/// A change: the version goes up by one.
pub async fn bump_meta(
    a: &mut impl Access,
    resource_type: &str,
    resource_id: Uuid,
    now: DateTime<Utc>,
) -> Result<(), StoreError> {
    with_conn!(a, |c| sqlx::query(
        "UPDATE scim_resource_meta SET version = version + 1, last_modified = $3
         WHERE resource_type = $1 AND resource_id = $2"
    )
    .bind(resource_type)
    .bind(resource_id)
    .bind(now)
    .execute(&mut *c)
    .await?
    .rows_affected());
    Ok(())
}

pub async fn delete_meta(
    a: &mut impl Access,
    resource_type: &str,
    resource_id: Uuid,
) -> Result<(), StoreError> {
    with_conn!(a, |c| sqlx::query(
        "DELETE FROM scim_resource_meta WHERE resource_type = $1 AND resource_id = $2"
    )
    .bind(resource_type)
    .bind(resource_id)
    .execute(&mut *c)
    .await?
    .rows_affected());
    Ok(())
}

/// Sets (or with `None` clears) a client's externalId of a resource.
pub async fn set_external_id(
    a: &mut impl Access,
    client_id: Uuid,
    resource_type: &str,
    resource_id: Uuid,
    external_id: Option<&str>,
) -> Result<(), StoreError> {
    with_conn!(a, |c| {
        sqlx::query(
        "DELETE FROM scim_external_ids WHERE client_id = $1 AND resource_type = $2 AND resource_id = $3"
    )
    .bind(client_id)
    .bind(resource_type)
    .bind(resource_id)
    .execute(&mut *c)
    .await?
    .rows_affected()
    });
    if let Some(ext) = external_id {
        with_conn!(a, |c| sqlx::query(
            "INSERT INTO scim_external_ids (client_id, resource_type, resource_id, external_id)
             VALUES ($1, $2, $3, $4)"
        )
        .bind(client_id)
        .bind(resource_type)
        .bind(resource_id)
        .bind(ext)
        .execute(&mut *c)
        .await?
        .rows_affected());
    }
    Ok(())
}

#[derive(Debug, Clone, PartialEq, sqlx::FromRow)]
pub struct GroupRow {
    pub group_id: Uuid,
    pub org_id: Uuid,
    pub display_name: String,
    pub version: i64,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub external_id: Option<String>,
}

const GROUP_FROM: &str = "FROM scim_groups g
    LEFT JOIN scim_external_ids x
      ON x.client_id = $1 AND x.resource_type = 'Group' AND x.resource_id = g.group_id
    WHERE g.org_id = $2";

const GROUP_COLUMNS: &str =
    "g.group_id, g.org_id, g.display_name, g.version, g.created_at, g.updated_at, x.external_id";

pub async fn get_group(
    a: &mut impl Access,
    client_id: Uuid,
    org_id: Uuid,
    group_id: Uuid,
) -> Result<Option<GroupRow>, StoreError> {
    let sql = format!("SELECT {GROUP_COLUMNS} {GROUP_FROM} AND g.group_id = $3");
    Ok(with_conn!(a, |c| sqlx::query_as(sqlx::AssertSqlSafe(sql))
        .bind(client_id)
        .bind(org_id)
        .bind(group_id)
        .fetch_optional(&mut *c)
        .await?))
}

/// Locks a group row for the transaction (see [`lock_user`]).
pub async fn lock_group(
    a: &mut impl Access,
    org_id: Uuid,
    group_id: Uuid,
) -> Result<bool, StoreError> {
    lock_in_org(a, "scim_groups", "group_id", org_id, group_id).await
}

pub async fn search_groups(
    a: &mut impl Access,
    client_id: Uuid,
    org_id: Uuid,
    cond: &Cond,
    page: &Page,
) -> Result<Vec<GroupRow>, StoreError> {
    let mut q = Sql::new(dialect(a), Resource::Group, 3);
    q.cond(cond);
    page_conds(&mut q, page, Resource::Group);
    let where_ = std::mem::take(&mut q.text);
    let order = order_by(
        &mut q,
        page.sort.as_ref().map(|s| &s.0),
        page.descending,
        page.sort.as_ref().is_some_and(|s| s.1),
    );
    let n = q.binds.len();
    let (limit, offset) = (format!("${}", n + 3), format!("${}", n + 4));
    let binds = q.binds;
    let sql = format!(
        "SELECT {GROUP_COLUMNS} {GROUP_FROM} AND {where_} ORDER BY {order} LIMIT {limit} OFFSET {offset}"
    );
    let (lim, off) = (i64::from(page.limit), page.offset as i64);
    Ok(with_conn!(a, |c| bind_all!(
        sqlx::query_as(sqlx::AssertSqlSafe(sql))
            .bind(client_id)
            .bind(org_id),
        binds.clone()
    )
    .bind(lim)
    .bind(off)
    .fetch_all(&mut *c)
    .await?))
}

pub async fn count_groups(
    a: &mut impl Access,
    client_id: Uuid,
    org_id: Uuid,
    cond: &Cond,
) -> Result<i64, StoreError> {
    let mut q = Sql::new(dialect(a), Resource::Group, 3);
    q.cond(cond);
    let sql = format!("SELECT COUNT(*) {GROUP_FROM} AND {}", q.text);
    let binds = q.binds;
    let (n,): (i64,) = with_conn!(a, |c| bind_all!(
        sqlx::query_as(sqlx::AssertSqlSafe(sql))
            .bind(client_id)
            .bind(org_id),
        binds.clone()
    )
    .fetch_one(&mut *c)
    .await?);
    Ok(n)
}

pub async fn insert_group(
    a: &mut impl Access,
    group_id: Uuid,
    org_id: Uuid,
    display_name: &str,
    now: DateTime<Utc>,
) -> Result<(), StoreError> {
    with_conn!(a, |c| sqlx::query(
        "INSERT INTO scim_groups (group_id, org_id, display_name, created_at, updated_at, version)
         VALUES ($1, $2, $3, $4, $4, 1)"
    )
    .bind(group_id)
    .bind(org_id)
    .bind(display_name)
    .bind(now)
    .execute(&mut *c)
    .await?
    .rows_affected());
    Ok(())
}

/// Renames (possibly to the same name) and bumps the version.
pub async fn touch_group(
    a: &mut impl Access,
    group_id: Uuid,
    display_name: &str,
    now: DateTime<Utc>,
) -> Result<(), StoreError> {
    with_conn!(a, |c| sqlx::query(
        "UPDATE scim_groups SET display_name = $2, updated_at = $3, version = version + 1
         WHERE group_id = $1"
    )
    .bind(group_id)
    .bind(display_name)
    .bind(now)
    .execute(&mut *c)
    .await?
    .rows_affected());
    Ok(())
}

pub async fn delete_group(
    a: &mut impl Access,
    org_id: Uuid,
    group_id: Uuid,
) -> Result<bool, StoreError> {
    let n = with_conn!(a, |c| sqlx::query(
        "DELETE FROM scim_groups WHERE org_id = $1 AND group_id = $2"
    )
    .bind(org_id)
    .bind(group_id)
    .execute(&mut *c)
    .await?
    .rows_affected());
    Ok(n == 1)
}

/// Members of a group, ordered by id.
pub async fn members(a: &mut impl Access, group_id: Uuid) -> Result<Vec<Uuid>, StoreError> {
    Ok(with_conn!(a, |c| sqlx::query_scalar(
        "SELECT user_id FROM scim_group_members WHERE group_id = $1 ORDER BY user_id"
    )
    .bind(group_id)
    .fetch_all(&mut *c)
    .await?))
}

pub async fn add_member(
    a: &mut impl Access,
    group_id: Uuid,
    user_id: Uuid,
    now: DateTime<Utc>,
) -> Result<bool, StoreError> {
    let n = with_conn!(a, |c| sqlx::query(
        "INSERT INTO scim_group_members (group_id, user_id, added_at) VALUES ($1, $2, $3)
         ON CONFLICT (group_id, user_id) DO NOTHING"
    )
    .bind(group_id)
    .bind(user_id)
    .bind(now)
    .execute(&mut *c)
    .await?
    .rows_affected());
    Ok(n == 1)
}

pub async fn remove_member(
    a: &mut impl Access,
    group_id: Uuid,
    user_id: Uuid,
) -> Result<bool, StoreError> {
    let n = with_conn!(a, |c| sqlx::query(
        "DELETE FROM scim_group_members WHERE group_id = $1 AND user_id = $2"
    )
    .bind(group_id)
    .bind(user_id)
    .execute(&mut *c)
    .await?
    .rows_affected());
    Ok(n == 1)
}

/// Groups of the org the user belongs to: (id, displayName).
pub async fn groups_of_user(
    a: &mut impl Access,
    org_id: Uuid,
    user_id: Uuid,
) -> Result<Vec<(Uuid, String)>, StoreError> {
    Ok(with_conn!(a, |c| sqlx::query_as(
        "SELECT g.group_id, g.display_name FROM scim_group_members gm
         JOIN scim_groups g ON g.group_id = gm.group_id
         WHERE gm.user_id = $1 AND g.org_id = $2 ORDER BY g.group_id"
    )
    .bind(user_id)
    .bind(org_id)
    .fetch_all(&mut *c)
    .await?))
}

/// Which of `ids` are users provisioned in (or members of) the org.
pub async fn users_in_org(
    a: &mut impl Access,
    org_id: Uuid,
    ids: &[Uuid],
) -> Result<Vec<Uuid>, StoreError> {
    let mut found = Vec::with_capacity(ids.len());
    for chunk in ids.chunks(200) {
        let placeholders: Vec<String> = (0..chunk.len()).map(|i| format!("${}", i + 2)).collect();
        let sql = format!(
            "SELECT user_id FROM user_organization_info WHERE org_id = $1 AND user_id IN ({})",
            placeholders.join(", ")
        );
        let rows: Vec<(Uuid,)> = with_conn!(a, |c| {
            let mut q = sqlx::query_as(sqlx::AssertSqlSafe(sql.clone())).bind(org_id);
            for id in chunk {
                q = q.bind(*id);
            }
            q.fetch_all(&mut *c).await?
        });
        found.extend(rows.into_iter().map(|r| r.0));
    }
    Ok(found)
}

/// Drops the user from every group of the org.
pub async fn remove_from_org_groups(
    a: &mut impl Access,
    org_id: Uuid,
    user_id: Uuid,
) -> Result<u64, StoreError> {
    Ok(with_conn!(a, |c| sqlx::query(
        "DELETE FROM scim_group_members WHERE user_id = $1
           AND group_id IN (SELECT group_id FROM scim_groups WHERE org_id = $2)"
    )
    .bind(user_id)
    .bind(org_id)
    .execute(&mut *c)
    .await?
    .rows_affected()))
}

/// Orgs in which the user is (still) provisioned over SCIM.
pub async fn other_scim_orgs(a: &mut impl Access, user_id: Uuid) -> Result<i64, StoreError> {
    let (n,): (i64,) = with_conn!(a, |c| sqlx::query_as(
        "SELECT COUNT(*) FROM scim_users WHERE user_id = $1"
    )
    .bind(user_id)
    .fetch_one(&mut *c)
    .await?);
    Ok(n)
}

/// Forgets the externalIds the org's clients gave a resource.
pub async fn delete_external_ids(
    a: &mut impl Access,
    resource_type: &str,
    resource_id: Uuid,
    org_id: Uuid,
) -> Result<u64, StoreError> {
    Ok(with_conn!(a, |c| sqlx::query(
        "DELETE FROM scim_external_ids WHERE resource_type = $1 AND resource_id = $2
           AND client_id IN (SELECT client_id FROM scim_clients WHERE org_id = $3)"
    )
    .bind(resource_type)
    .bind(resource_id)
    .bind(org_id)
    .execute(&mut *c)
    .await?
    .rows_affected()))
}

/// False only when the org's IdP set the user `active: false` over SCIM.
pub async fn membership_active(
    a: &mut impl Access,
    org_id: Uuid,
    user_id: Uuid,
) -> Result<bool, StoreError> {
    let row: Option<(bool,)> = with_conn!(a, |c| sqlx::query_as(
        "SELECT active FROM scim_users WHERE org_id = $1 AND user_id = $2"
    )
    .bind(org_id)
    .bind(user_id)
    .fetch_optional(&mut *c)
    .await?);
    Ok(row.is_none_or(|r| r.0))
}
