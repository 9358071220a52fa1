//! `/Users` (RFC 7644 §3.3-3.6): provisioning a client's org through the identity core.
//!
//! A SCIM User is a Lintel user with a membership in the client's org and a `scim_users`
//! row holding the document the IdP wrote. Mapped attributes land in `users` columns (and
//! are read back from them); `active: false` disables the membership and ends the user's
//! sessions in the org; DELETE removes the membership, and the user too when nothing else
//! (another org, a password) keeps them. Every change is one transaction with its audit
//! row, the SCIM client as actor.
use super::ScimError;
use super::anchors;
use super::mapping::{self, LocalRow};
use super::query::Kind;
use super::rendered::{Rendered, Want};
use super::resource::{Ctx, ListBody, ListParams, ListPlan, check_if_match, etag, internal};
use super::schema::{self, USER_RESOURCE, lenient_bool};
use super::{ENTERPRISE_USER_SCHEMA, USER_SCHEMA, patch};
use crate::identity::IdentityError;
use crate::identity::audit::{self, Event};
use crate::identity::metrics::{ScimOperation, ScimResource, record_scim_provisioning};
use crate::identity::users::{DEFAULT_MEMBER_ROLE, check_username, normalize_email};
use crate::store::scim::resources::{self as res, ScimUser, UserRow, UserStamp};
use crate::store::{self, Json, Tx};
use serde_json::value::{RawValue, to_raw_value};
use serde_json::{Map, Value, json};
use std::collections::HashMap;
use std::sync::Arc;
use uuid::Uuid;

const RESOURCE: &str = "User";

/// The representation of a provisioned user (before `attributes` projection) from its
/// row and stored document (`row.attributes`, passed apart so a caller may move it).
pub fn render(ctx: &Ctx, row: &UserRow, attributes: Value, groups: &[(Uuid, String)]) -> Value {
    let mut doc = attributes;
    if !doc.is_object() {
        doc = json!({});
    }
    let props = row.properties.0.as_object();
    let email = if row.email.ends_with(PLACEHOLDER_DOMAIN) {
        None
    } else {
        Some(row.email.as_str())
    };
    mapping::overlay(
        &ctx.rules,
        &mut doc,
        &LocalRow {
            email,
            username: row.username.as_deref(),
            first_name: row.first_name.as_deref(),
            last_name: row.last_name.as_deref(),
            picture_url: row.picture_url.as_deref(),
            properties: props,
        },
    );
    let Value::Object(obj) = &mut doc else {
        return doc;
    };
    let mut schemas = vec![json!(USER_SCHEMA)];
    if obj.contains_key(ENTERPRISE_USER_SCHEMA) {
        schemas.push(json!(ENTERPRISE_USER_SCHEMA));
    }
    obj.insert("schemas".into(), Value::Array(schemas));
    obj.insert("id".into(), json!(row.user_id));
    obj.insert("userName".into(), json!(row.user_name));
    // `active` is shown when the client set it (a PATCH may remove it: it is then true).
    if obj.contains_key("active") {
        obj.insert("active".into(), json!(row.active));
    }
    if let Some(ext) = &row.external_id {
        obj.insert("externalId".into(), json!(ext));
    }
    if !groups.is_empty() {
        let gs: Vec<Value> = groups
            .iter()
            .map(|(id, name)| {
                json!({
                    "value": id,
                    "$ref": ctx.location("/Groups", *id),
                    "display": name,
                    "type": "direct",
                })
            })
            .collect();
        obj.insert("groups".into(), Value::Array(gs));
    }
    obj.insert(
        "meta".into(),
        json!({
            "resourceType": RESOURCE,
            "created": row.created_at,
            "lastModified": row.last_modified,
            "location": ctx.location("/Users", row.user_id),
            "version": etag(row.version),
        }),
    );
    doc
}

async fn load(
    ctx: &Ctx,
    a: &mut impl store::Access,
    user_id: Uuid,
) -> Result<(UserRow, Value), ScimError> {
    let row = res::get_user(a, ctx.client_id(), ctx.org_id(), user_id)
        .await?
        .ok_or_else(|| not_found(user_id))?;
    let doc = render(ctx, &row, row.attributes.0.clone(), &row.groups()?);
    Ok((row, doc))
}

/// The stand-in address of a user provisioned without an email.
pub fn placeholder_email(user_id: Uuid) -> String {
    format!("{}{}", user_id.simple(), PLACEHOLDER_DOMAIN)
}

pub const PLACEHOLDER_DOMAIN: &str = "@scim.lintel.invalid";

fn not_found(id: impl std::fmt::Display) -> ScimError {
    ScimError::not_found(format!("User {id} not found"))
}

/// Parses a resource id from a path: anything that is not one of ours is a 404.
pub fn parse_id(raw: &str) -> Result<Uuid, ScimError> {
    Uuid::parse_str(raw).map_err(|_| not_found(raw))
}

/// GET /Users/{id}: the resource and its version.
pub async fn get(ctx: &Ctx, user_id: Uuid, params: &ListParams) -> Result<(Value, i64), ScimError> {
    let mut c = ctx.id.db.conn().await?;
    let (row, doc) = load(ctx, &mut c, user_id).await?;
    let out = schema::project(
        &USER_RESOURCE,
        doc,
        &params.attributes,
        &params.excluded_attributes,
    );
    Ok((out, row.version))
}

/// GET /Users, POST /Users/.search.
///
/// An unfiltered list in the default view first reads each listed user's `(version,
/// stamp)` from an index and renders only those this node has not kept (see
/// [`rendered`]); other lists read whole rows and still reuse kept renderings.
pub async fn list(ctx: &Ctx, params: &ListParams) -> Result<ListBody, ScimError> {
    let plan = ListPlan::new(ctx, Kind::User, &USER_RESOURCE, params)?;
    let mut c = ctx.id.db.conn().await?;
    let view = View::new(ctx, params);
    let (resources, n, last, anchored_total) = match view.cache {
        Some(cache) if !plan.filtered => {
            let (stamps, anchored) = anchors::rows::<UserStamp>(ctx, &mut c, &plan).await?;
            let docs = view.by_stamps(&mut c, cache, &stamps).await?;
            (
                docs,
                stamps.len(),
                stamps.last().map(|s| s.user_id),
                anchored,
            )
        }
        _ => {
            let (rows, anchored) = anchors::rows::<UserRow>(ctx, &mut c, &plan).await?;
            let (n, last) = (rows.len(), rows.last().map(|r| r.user_id));
            (view.rows(rows)?, n, last, anchored)
        }
    };
    let total = if let Some(n) = anchored_total {
        n
    } else if !plan.filtered {
        res::counts(&mut c, ctx.org_id(), RESOURCE).await?.0
    } else if let Some(n) = plan.total_from_page(n) {
        n
    } else {
        res::count_users(&mut c, ctx.client_id(), ctx.org_id(), &plan.cond).await?
    };
    Ok(ListBody {
        total,
        start_index: plan.start_index(),
        resources,
        next_cursor: plan.next_cursor(n, last),
    })
}

/// How one list renders its users: with this node's kept renderings when it asks for the
/// default view (the cache holds no projections).
struct View<'a> {
    ctx: &'a Ctx,
    params: &'a ListParams,
    cache: Option<(&'static Rendered, u64)>,
}

impl<'a> View<'a> {
    fn new(ctx: &'a Ctx, params: &'a ListParams) -> View<'a> {
        let cache = Rendered::node(ctx.id.config.scim.render_cache_mib as usize * (1 << 20));
        let default_view = params.attributes.is_empty() && params.excluded_attributes.is_empty();
        let cache = (cache.enabled() && default_view).then_some((cache, ctx.fingerprint));
        View { ctx, params, cache }
    }

    fn render(&self, mut row: UserRow) -> Result<Arc<RawValue>, ScimError> {
        let attributes = std::mem::take(&mut row.attributes.0);
        let doc = render(self.ctx, &row, attributes, &row.groups()?);
        let doc = schema::project(
            &USER_RESOURCE,
            doc,
            &self.params.attributes,
            &self.params.excluded_attributes,
        );
        Ok(Arc::from(to_raw_value(&doc).map_err(internal)?))
    }

    /// Each row's document: kept, or rendered (and kept).
    fn rows(&self, rows: Vec<UserRow>) -> Result<Vec<Arc<RawValue>>, ScimError> {
        let Some((cache, fp)) = self.cache else {
            return rows.into_iter().map(|r| self.render(r)).collect();
        };
        let want: Vec<Want> = rows
            .iter()
            .map(|r| Want::new(r.user_id, r.version, r.stamp))
            .collect();
        let kept = cache.get_many(self.ctx.client_id(), fp, &want);
        let mut out = Vec::with_capacity(rows.len());
        let mut fresh = Vec::new();
        for ((row, w), k) in rows.into_iter().zip(want).zip(kept) {
            let doc = match k {
                Some(doc) => doc,
                None => {
                    let doc = self.render(row)?;
                    fresh.push((w, doc.clone()));
                    doc
                }
            };
            out.push(doc);
        }
        cache.put_many(self.ctx.client_id(), fp, fresh);
        Ok(out)
    }

    /// The listed users' documents in list order: kept ones where the stamps match, the
    /// rest read and rendered. A user gone since the stamps were read is left out.
    async fn by_stamps(
        &self,
        a: &mut impl store::Access,
        (cache, fp): (&'static Rendered, u64),
        stamps: &[UserStamp],
    ) -> Result<Vec<Arc<RawValue>>, ScimError> {
        let want: Vec<Want> = stamps
            .iter()
            .map(|s| Want::new(s.user_id, s.version, s.stamp))
            .collect();
        let mut docs = cache.get_many(self.ctx.client_id(), fp, &want);
        let missing: Vec<Uuid> = want
            .iter()
            .zip(&docs)
            .filter(|(_, d)| d.is_none())
            .map(|(w, _)| w.user_id)
            .collect();
        if !missing.is_empty() {
            let rows =
                res::users_by_ids(a, self.ctx.client_id(), self.ctx.org_id(), &missing).await?;
            let ids: Vec<Uuid> = rows.iter().map(|r| r.user_id).collect();
            let read: HashMap<Uuid, Arc<RawValue>> =
                ids.into_iter().zip(self.rows(rows)?).collect();
            for (w, d) in want.iter().zip(docs.iter_mut()) {
                if d.is_none() {
                    *d = read.get(&w.user_id).cloned();
                }
            }
        }
        Ok(docs.into_iter().flatten().collect())
    }
}

/// What a normalised document says about the local user and the membership.
struct Incoming {
    user_name: String,
    display_name: Option<String>,
    external_id: Option<String>,
    active: bool,
    local: mapping::LocalValues,
    /// The document to store: without id, meta, schemas, userName, active, externalId,
    /// groups and password.
    stored: Value,
    password: Option<String>,
}

fn incoming(ctx: &Ctx, doc: &Value) -> Result<Incoming, ScimError> {
    let obj = doc
        .as_object()
        .ok_or_else(|| ScimError::invalid_syntax("a User is a JSON object"))?;
    let user_name = obj
        .get("userName")
        .and_then(Value::as_str)
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .ok_or_else(|| ScimError::invalid_value("userName is required"))?
        .to_string();
    if user_name.chars().count() > 256 {
        return Err(ScimError::invalid_value(
            "userName must be at most 256 characters",
        ));
    }
    let active = match obj.get("active") {
        None | Some(Value::Null) => true,
        Some(v) => {
            lenient_bool(v).ok_or_else(|| ScimError::invalid_value("active must be a boolean"))?
        }
    };
    let external_id = match obj.get("externalId") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) if s.chars().count() <= 256 => Some(s.clone()),
        Some(_) => {
            return Err(ScimError::invalid_value(
                "externalId must be a string of at most 256 characters",
            ));
        }
    };
    let password = match obj.get("password") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(s.clone()),
        Some(_) => return Err(ScimError::invalid_value("password must be a string")),
    };
    let display_name = obj
        .get("displayName")
        .and_then(Value::as_str)
        .map(String::from);
    let local = mapping::to_local(&ctx.rules, doc);
    let mut stored: Map<String, Value> = obj.clone();
    for k in [
        "id",
        "meta",
        "schemas",
        "userName",
        "externalId",
        "groups",
        "password",
    ] {
        stored.remove(k);
    }
    Ok(Incoming {
        user_name,
        display_name,
        external_id,
        active,
        local,
        stored: Value::Object(stored),
        password,
    })
}

fn maps_to(ctx: &Ctx, local: &str) -> bool {
    ctx.rules.iter().any(|r| r.local == local)
}

/// Writes mapped values onto the users row; `Ok(changed fields)`.
fn apply_local(ctx: &Ctx, user: &mut store::users::User, inc: &Incoming) -> Result<(), ScimError> {
    let l = &inc.local;
    if let Some(email) = &l.email {
        let email = normalize_email(email)?;
        if email != user.email {
            user.email = email;
            user.email_confirmed = false;
        }
    }
    if maps_to(ctx, "username") {
        if let Some(u) = &l.username {
            check_username(u)?;
        }
        user.username = l.username.clone();
    }
    if maps_to(ctx, "first_name") {
        user.first_name = l.first_name.clone();
    }
    if maps_to(ctx, "last_name") {
        user.last_name = l.last_name.clone();
    }
    if maps_to(ctx, "picture_url") {
        user.picture_url = l.picture_url.clone();
    }
    if !l.properties.is_empty() {
        let mut props = user.properties.0.as_object().cloned().unwrap_or_default();
        for (k, v) in &l.properties {
            if v.is_null() {
                props.remove(k);
            } else {
                props.insert(k.clone(), v.clone());
            }
        }
        user.properties = Json(Value::Object(props));
    }
    Ok(())
}

fn conflict(e: store::StoreError) -> ScimError {
    match e.conflict_field() {
        Some("email") => ScimError::conflict_uniqueness("another user has this email"),
        Some("username") => ScimError::conflict_uniqueness("another user has this username"),
        Some("scim_user_name") => {
            ScimError::conflict_uniqueness("userName is already taken in this organization")
        }
        _ => e.into(),
    }
}

/// POST /Users: creates the user (or links the existing user with this verified email)
/// and the membership. Returns the resource and its version.
pub async fn create(ctx: &Ctx, body: &Value) -> Result<(Value, i64), ScimError> {
    let doc = schema::normalize(&USER_RESOURCE, body, None)?;
    let inc = incoming(ctx, &doc)?;
    let user_id = uuid::Uuid::now_v7();
    // `users.email` is required; a user provisioned without one gets an address under the
    // reserved `.invalid` TLD (RFC 2606 §2) that can never receive mail or match a login.
    let email = match &inc.local.email {
        Some(e) => normalize_email(e)?,
        None => placeholder_email(user_id),
    };
    let hash = match &inc.password {
        Some(pw) => {
            let pw = crate::config::Secret::new(pw.clone());
            Some(
                ctx.id
                    .passwords
                    .hash(&pw)
                    .await
                    .map_err(IdentityError::from)?,
            )
        }
        None => None,
    };
    let now = ctx.id.clock.now();
    let org_id = ctx.org_id();
    let mut tx = ctx.id.db.begin().await?;
    let org = crate::identity::roles::lock_org(&mut tx, org_id).await?;
    let existing = store::users::find_by_email(&mut tx, &email).await?;
    let (user_id, linked) = match existing {
        Some(u) => {
            if res::lock_user(&mut tx, org_id, u.user_id).await? {
                return Err(ScimError::conflict_uniqueness(
                    "this user is already provisioned in the organization",
                ));
            }
            if !u.email_confirmed {
                // Linking an unverified address would hand the account to whoever typed it.
                return Err(ScimError::conflict_uniqueness(
                    "a user with this email exists and has not verified it; it cannot be linked",
                ));
            }
            if store::memberships::get(&mut tx, u.user_id, org_id)
                .await?
                .is_none()
            {
                crate::identity::memberships::add_in(
                    &mut tx,
                    &org,
                    u.user_id,
                    DEFAULT_MEMBER_ROLE,
                    now,
                )
                .await?;
            }
            (u.user_id, true)
        }
        None => {
            let mut user = crate::identity::users::fresh(email.clone(), now);
            user.user_id = user_id;
            apply_local(ctx, &mut user, &inc)?;
            user.email = email.clone();
            user.enabled = inc.active;
            store::users::insert(&mut tx, &user)
                .await
                .map_err(conflict)?;
            if let Some(hash) = &hash {
                store::users::set_password_hash(&mut tx, user.user_id, hash, now).await?;
            }
            crate::identity::memberships::add_in(
                &mut tx,
                &org,
                user.user_id,
                DEFAULT_MEMBER_ROLE,
                now,
            )
            .await?;
            (user.user_id, false)
        }
    };
    res::insert_scim_user(
        &mut tx,
        &ScimUser {
            org_id,
            user_id,
            user_name: inc.user_name.clone(),
            display_name: inc.display_name.clone(),
            attributes: inc.stored.clone(),
            active: inc.active,
            client_id: Some(ctx.client_id()),
        },
    )
    .await
    .map_err(conflict)?;
    res::insert_meta(&mut tx, RESOURCE, user_id, org_id, now).await?;
    res::set_external_id(
        &mut tx,
        ctx.client_id(),
        RESOURCE,
        user_id,
        inc.external_id.as_deref(),
    )
    .await
    .map_err(conflict)?;
    let action = if linked {
        "scim_user.linked"
    } else {
        "scim_user.created"
    };
    audit::record(
        &mut tx,
        &ctx.id,
        Event::new(action, "user", user_id)
            .org(org_id)
            .details(json!({
                "user_name": inc.user_name,
                "email": email,
                "external_id": inc.external_id,
                "active": inc.active,
            })),
    )
    .await?;
    if !linked {
        crate::identity::metrics::record_signup(&mut tx, &ctx.id, user_id, Some(org_id)).await?;
    }
    record_scim_provisioning(
        &mut tx,
        &ctx.id,
        org_id,
        ctx.client_id(),
        ScimResource::User,
        ScimOperation::Create,
    )
    .await?;
    let (row, doc) = load(ctx, &mut tx, user_id).await?;
    tx.commit().await?;
    Ok((doc, row.version))
}

/// Saves a complete new document for an existing user (PUT and PATCH).
async fn save(
    ctx: &Ctx,
    tx: &mut Tx,
    row: &UserRow,
    doc: &Value,
    op: ScimOperation,
) -> Result<(), ScimError> {
    let inc = incoming(ctx, doc)?;
    if let Some(pw) = &inc.password {
        let pw = crate::config::Secret::new(pw.clone());
        let hash = ctx
            .id
            .passwords
            .hash(&pw)
            .await
            .map_err(IdentityError::from)?;
        store::users::set_password_hash(tx, row.user_id, &hash, ctx.id.clock.now()).await?;
    }
    let now = ctx.id.clock.now();
    let org_id = ctx.org_id();
    let mut user = store::users::get(tx, row.user_id)
        .await?
        .ok_or_else(|| not_found(row.user_id))?;
    let before = user.clone();
    apply_local(ctx, &mut user, &inc)?;
    // The user's own switch follows `active` only where this org is all they belong to.
    if inc.active != row.active && res::other_orgs(tx, row.user_id, org_id).await? == 0 {
        user.enabled = inc.active;
    }
    if user != before {
        store::users::update(tx, &user).await.map_err(conflict)?;
    }
    res::update_scim_user(
        tx,
        &ScimUser {
            org_id,
            user_id: row.user_id,
            user_name: inc.user_name.clone(),
            display_name: inc.display_name.clone(),
            attributes: inc.stored.clone(),
            active: inc.active,
            client_id: row.client_id,
        },
    )
    .await
    .map_err(conflict)?;
    res::bump_meta(tx, RESOURCE, row.user_id, now).await?;
    if inc.external_id != row.external_id {
        res::set_external_id(
            tx,
            ctx.client_id(),
            RESOURCE,
            row.user_id,
            inc.external_id.as_deref(),
        )
        .await
        .map_err(conflict)?;
    }
    let mut details = audit::diff_of(&before, &user, &[]);
    if row.user_name != inc.user_name {
        details["user_name"] = json!({ "before": row.user_name, "after": inc.user_name });
    }
    if row.active != inc.active {
        details["active"] = json!({ "before": row.active, "after": inc.active });
        if !inc.active {
            let n = store::sessions::revoke_for_member(tx, row.user_id, org_id).await?;
            details["sessions_revoked"] = json!(n);
        }
    }
    if row.attributes.0 != inc.stored {
        details["attributes_changed"] = json!(true);
    }
    audit::record(
        tx,
        &ctx.id,
        Event::new("scim_user.updated", "user", row.user_id)
            .org(org_id)
            .details(details),
    )
    .await?;
    record_scim_provisioning(tx, &ctx.id, org_id, ctx.client_id(), ScimResource::User, op).await?;
    Ok(())
}

/// PUT /Users/{id} (RFC 7644 §3.5.1).
pub async fn replace(
    ctx: &Ctx,
    user_id: Uuid,
    body: &Value,
    if_match: Option<&str>,
) -> Result<(Value, i64), ScimError> {
    let mut tx = ctx.id.db.begin().await?;
    if !res::lock_user(&mut tx, ctx.org_id(), user_id).await? {
        return Err(not_found(user_id));
    }
    let (row, current) = load(ctx, &mut tx, user_id).await?;
    check_if_match(if_match, row.version)?;
    let doc = schema::normalize(&USER_RESOURCE, body, Some(&current))?;
    save(ctx, &mut tx, &row, &doc, ScimOperation::Replace).await?;
    let (row, doc) = load(ctx, &mut tx, user_id).await?;
    tx.commit().await?;
    Ok((doc, row.version))
}

/// PATCH /Users/{id} (RFC 7644 §3.5.2): all operations or none.
pub async fn patch(
    ctx: &Ctx,
    user_id: Uuid,
    body: &Value,
    if_match: Option<&str>,
) -> Result<(Value, i64), ScimError> {
    let ops = patch::parse_request(&USER_RESOURCE, body)?;
    let mut tx = ctx.id.db.begin().await?;
    if !res::lock_user(&mut tx, ctx.org_id(), user_id).await? {
        return Err(not_found(user_id));
    }
    let (row, current) = load(ctx, &mut tx, user_id).await?;
    check_if_match(if_match, row.version)?;
    let patched = patch::apply(&USER_RESOURCE, &current, &ops)?;
    let doc = schema::normalize(&USER_RESOURCE, &patched, Some(&current))?;
    save(ctx, &mut tx, &row, &doc, ScimOperation::Patch).await?;
    let (row, doc) = load(ctx, &mut tx, user_id).await?;
    tx.commit().await?;
    Ok((doc, row.version))
}

/// DELETE /Users/{id} (RFC 7644 §3.6): the membership ends; the user is deleted too when
/// `scim.delete_orphan_users` and no other org or password remains.
pub async fn delete(ctx: &Ctx, user_id: Uuid, if_match: Option<&str>) -> Result<(), ScimError> {
    let org_id = ctx.org_id();
    let mut tx = ctx.id.db.begin().await?;
    crate::identity::roles::lock_org(&mut tx, org_id).await?;
    if !res::lock_user(&mut tx, org_id, user_id).await? {
        return Err(not_found(user_id));
    }
    let row = res::get_user(&mut tx, ctx.client_id(), org_id, user_id)
        .await?
        .ok_or_else(|| not_found(user_id))?;
    check_if_match(if_match, row.version)?;
    res::delete_scim_user(&mut tx, org_id, user_id).await?;
    res::remove_from_org_groups(&mut tx, org_id, user_id).await?;
    let sessions = crate::identity::memberships::remove_in(&mut tx, org_id, user_id).await?;
    let user = store::users::get(&mut tx, user_id).await?;
    let orphan = res::other_orgs(&mut tx, user_id, org_id).await? == 0
        && user.as_ref().is_some_and(|u| !u.has_password);
    let delete_user = orphan && ctx.id.config.scim.delete_orphan_users;
    audit::record(
        &mut tx,
        &ctx.id,
        Event::new("scim_user.deleted", "user", user_id)
            .org(org_id)
            .details(json!({
                "user_name": row.user_name,
                "email": row.email,
                "sessions_revoked": sessions,
                "user_deleted": delete_user,
            })),
    )
    .await?;
    if delete_user {
        store::users::delete(&mut tx, user_id).await?;
    }
    if res::other_scim_orgs(&mut tx, user_id).await? == 0 {
        res::delete_meta(&mut tx, RESOURCE, user_id).await?;
    }
    res::delete_external_ids(&mut tx, RESOURCE, user_id, org_id).await?;
    record_scim_provisioning(
        &mut tx,
        &ctx.id,
        org_id,
        ctx.client_id(),
        ScimResource::User,
        ScimOperation::Delete,
    )
    .await?;
    tx.commit().await?;
    Ok(())
}
