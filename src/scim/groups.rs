//! `/Groups` (RFC 7643 §4.2, RFC 7644 §3.3-3.6). Members are users provisioned in (or
//! members of) the client's org; nested groups are refused. A PATCH loads the member
//! list under the group's row lock (PostgreSQL `FOR UPDATE`, SQLite's single writer),
//! applies every operation, and writes the difference, so concurrent PATCHes never lose
//! an update. Group → role rules of the org's clients grant and revoke roles in the same
//! transaction.
use super::ScimError;
use super::anchors;
use super::query::Kind;
use super::resource::{Ctx, ListParams, ListPlan, check_if_match, etag, list_response};
use super::schema::{self, GROUP_RESOURCE};
use super::{GROUP_SCHEMA, patch};
use crate::identity::audit::{self, Event};
use crate::identity::metrics::{ScimOperation, ScimResource, record_scim_provisioning};
use crate::store::scim::resources::{self as res, GroupRow};
use crate::store::{self, Tx};
use serde_json::{Map, Value, json};
use std::collections::BTreeSet;
use uuid::Uuid;

const RESOURCE: &str = "Group";

fn not_found(id: impl std::fmt::Display) -> ScimError {
    ScimError::not_found(format!("Group {id} not found"))
}

pub fn parse_id(raw: &str) -> Result<Uuid, ScimError> {
    Uuid::parse_str(raw).map_err(|_| not_found(raw))
}

pub fn render(ctx: &Ctx, row: &GroupRow, members: Option<&[Uuid]>) -> Value {
    let mut obj = Map::new();
    obj.insert("schemas".into(), json!([GROUP_SCHEMA]));
    obj.insert("id".into(), json!(row.group_id));
    if let Some(ext) = &row.external_id {
        obj.insert("externalId".into(), json!(ext));
    }
    obj.insert("displayName".into(), json!(row.display_name));
    if let Some(members) = members {
        let ms: Vec<Value> = members
            .iter()
            // `display` is left out: RFC 7643 §8.7.1 lists value, $ref and type, and a
            // client comparing what it wrote with what it reads back expects no more.
            .map(|id| {
                json!({
                    "value": id,
                    "$ref": ctx.location("/Users", *id),
                    "type": "User",
                })
            })
            .collect();
        obj.insert("members".into(), Value::Array(ms));
    }
    obj.insert(
        "meta".into(),
        json!({
            "resourceType": RESOURCE,
            "created": row.created_at,
            "lastModified": row.updated_at,
            "location": ctx.location("/Groups", row.group_id),
            "version": etag(row.version),
        }),
    );
    Value::Object(obj)
}

/// Whether a read's projection shows `members` (Entra lists groups with
/// `excludedAttributes=members`; the member list is then never loaded).
fn wants_members(p: &ListParams) -> bool {
    let named = |list: &[String]| {
        list.iter().any(|a| {
            let a = a.trim().to_ascii_lowercase();
            a == "members" || a.starts_with("members.") || a.ends_with(":group:members")
        })
    };
    if named(&p.excluded_attributes) {
        return false;
    }
    p.attributes.is_empty() || named(&p.attributes)
}

async fn load(
    ctx: &Ctx,
    a: &mut impl store::Access,
    group_id: Uuid,
    with_members: bool,
) -> Result<(GroupRow, Value, Vec<Uuid>), ScimError> {
    let row = res::get_group(a, ctx.client_id(), ctx.org_id(), group_id)
        .await?
        .ok_or_else(|| not_found(group_id))?;
    if !with_members {
        let doc = render(ctx, &row, None);
        return Ok((row, doc, Vec::new()));
    }
    let members = res::members(a, group_id).await?;
    let doc = render(ctx, &row, Some(&members));
    Ok((row, doc, members))
}

pub async fn get(
    ctx: &Ctx,
    group_id: Uuid,
    params: &ListParams,
) -> Result<(Value, i64), ScimError> {
    let mut c = ctx.id.db.conn().await?;
    let (row, doc, _) = load(ctx, &mut c, group_id, wants_members(params)).await?;
    let out = schema::project(
        &GROUP_RESOURCE,
        doc,
        &params.attributes,
        &params.excluded_attributes,
    );
    Ok((out, row.version))
}

pub async fn list(ctx: &Ctx, params: &ListParams) -> Result<Value, ScimError> {
    let plan = ListPlan::new(ctx, Kind::Group, &GROUP_RESOURCE, params)?;
    let mut c = ctx.id.db.conn().await?;
    let (rows, anchored_total) = anchors::rows::<GroupRow>(ctx, &mut c, &plan).await?;
    let total = if let Some(n) = anchored_total {
        n
    } else if !plan.filtered {
        res::counts(&mut c, ctx.org_id(), RESOURCE).await?.0
    } else if let Some(n) = plan.total_from_page(rows.len()) {
        n
    } else {
        res::count_groups(&mut c, ctx.client_id(), ctx.org_id(), &plan.cond).await?
    };
    let next = plan.next_cursor(rows.len(), rows.last().map(|r| r.group_id));
    let with_members = wants_members(params);
    let mut items = Vec::with_capacity(rows.len());
    for row in &rows {
        let doc = if with_members {
            let members = res::members(&mut c, row.group_id).await?;
            render(ctx, row, Some(&members))
        } else {
            render(ctx, row, None)
        };
        items.push(schema::project(
            &GROUP_RESOURCE,
            doc,
            &params.attributes,
            &params.excluded_attributes,
        ));
    }
    Ok(list_response(total, plan.start_index(), items, next))
}

struct Incoming {
    display_name: String,
    external_id: Option<String>,
    members: BTreeSet<Uuid>,
}

fn incoming(doc: &Value) -> Result<Incoming, ScimError> {
    let obj = doc
        .as_object()
        .ok_or_else(|| ScimError::invalid_syntax("a Group is a JSON object"))?;
    let display_name = obj
        .get("displayName")
        .and_then(Value::as_str)
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .ok_or_else(|| ScimError::invalid_value("displayName is required"))?
        .to_string();
    if display_name.chars().count() > 256 {
        return Err(ScimError::invalid_value(
            "displayName must be at most 256 characters",
        ));
    }
    let external_id = match obj.get("externalId") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) if s.chars().count() <= 256 => Some(s.clone()),
        Some(_) => {
            return Err(ScimError::invalid_value(
                "externalId must be a string of at most 256 characters",
            ));
        }
    };
    let mut members = BTreeSet::new();
    if let Some(list) = obj.get("members").filter(|v| !v.is_null()) {
        let list = list
            .as_array()
            .ok_or_else(|| ScimError::invalid_value("members must be an array"))?;
        for m in list {
            let value = match m {
                Value::Object(o) => o.get("value").and_then(Value::as_str),
                Value::String(s) => Some(s.as_str()),
                _ => None,
            }
            .ok_or_else(|| ScimError::invalid_value("each member needs a value (a User id)"))?;
            if let Some(t) = m.get("type").and_then(Value::as_str)
                && t.eq_ignore_ascii_case("Group")
            {
                return Err(ScimError::invalid_value("nested groups are not supported"));
            }
            let id = Uuid::parse_str(value).map_err(|_| {
                ScimError::invalid_value(format!(
                    "member `{value}` is not a User of this organization"
                ))
            })?;
            members.insert(id);
        }
    }
    Ok(Incoming {
        display_name,
        external_id,
        members,
    })
}

/// Every member must be a user of the org.
async fn check_members(ctx: &Ctx, tx: &mut Tx, ids: &BTreeSet<Uuid>) -> Result<(), ScimError> {
    if ids.is_empty() {
        return Ok(());
    }
    let wanted: Vec<Uuid> = ids.iter().copied().collect();
    let found: BTreeSet<Uuid> = res::users_in_org(tx, ctx.org_id(), &wanted)
        .await?
        .into_iter()
        .collect();
    if let Some(missing) = wanted.iter().find(|id| !found.contains(id)) {
        return Err(ScimError::invalid_value(format!(
            "member `{missing}` is not a User of this organization"
        )));
    }
    Ok(())
}

/// Applies group → role rules to the given members (inside the transaction); returns how
/// many memberships changed.
async fn sync_roles(ctx: &Ctx, tx: &mut Tx, users: &BTreeSet<Uuid>) -> Result<usize, ScimError> {
    if users.is_empty() {
        return Ok(0);
    }
    let rules = store::scim::org_group_roles(tx, ctx.org_id()).await?;
    if rules.is_empty() {
        return Ok(0);
    }
    let org = store::orgs::get(tx, ctx.org_id())
        .await?
        .ok_or_else(|| super::resource::internal("org vanished"))?;
    let mut managed: Vec<Uuid> = rules.iter().map(|r| r.1).collect();
    managed.sort();
    managed.dedup();
    let now = ctx.id.clock.now();
    let mut changed = 0;
    for user in users {
        let names: BTreeSet<String> = res::groups_of_user(tx, ctx.org_id(), *user)
            .await?
            .into_iter()
            .map(|(_, n)| super::fold(&n))
            .collect();
        let desired: Vec<Uuid> = rules
            .iter()
            .filter(|(g, _)| names.contains(g))
            .map(|r| r.1)
            .collect();
        if let Some((before, after)) =
            crate::identity::roles::sync_managed_roles(tx, &org, *user, &managed, &desired, now)
                .await?
        {
            changed += 1;
            audit::record(
                tx,
                &ctx.id,
                Event::new(
                    "user_role.synced",
                    "membership",
                    audit::pair(user, ctx.org_id()),
                )
                .org(ctx.org_id())
                .details(json!({
                    "source": "scim_group",
                    "roles": {
                        "before": before.inherited_user_roles_plus_current_role,
                        "after": after.inherited_user_roles_plus_current_role,
                    },
                })),
            )
            .await?;
        }
    }
    Ok(changed)
}

pub async fn create(ctx: &Ctx, body: &Value) -> Result<(Value, i64), ScimError> {
    let doc = schema::normalize(&GROUP_RESOURCE, body, None)?;
    let inc = incoming(&doc)?;
    let now = ctx.id.clock.now();
    let org_id = ctx.org_id();
    let group_id = Uuid::now_v7();
    let mut tx = ctx.id.db.begin().await?;
    check_members(ctx, &mut tx, &inc.members).await?;
    res::insert_group(&mut tx, group_id, org_id, &inc.display_name, now).await?;
    res::set_external_id(
        &mut tx,
        ctx.client_id(),
        RESOURCE,
        group_id,
        inc.external_id.as_deref(),
    )
    .await
    .map_err(ScimError::from)?;
    for m in &inc.members {
        res::add_member(&mut tx, group_id, *m, now).await?;
    }
    audit::record(
        &mut tx,
        &ctx.id,
        Event::new("scim_group.created", "scim_group", group_id)
            .org(org_id)
            .details(json!({
                "display_name": inc.display_name,
                "external_id": inc.external_id,
                "members_added": inc.members.len(),
            })),
    )
    .await?;
    sync_roles(ctx, &mut tx, &inc.members).await?;
    record_scim_provisioning(
        &mut tx,
        &ctx.id,
        org_id,
        ctx.client_id(),
        ScimResource::Group,
        ScimOperation::Create,
    )
    .await?;
    let (row, doc, _) = load(ctx, &mut tx, group_id, true).await?;
    tx.commit().await?;
    Ok((doc, row.version))
}

/// Writes a new complete group document over `row` (PUT and PATCH).
async fn save(
    ctx: &Ctx,
    tx: &mut Tx,
    row: &GroupRow,
    before_members: &[Uuid],
    doc: &Value,
    op: ScimOperation,
) -> Result<(), ScimError> {
    let inc = incoming(doc)?;
    let now = ctx.id.clock.now();
    let before: BTreeSet<Uuid> = before_members.iter().copied().collect();
    let added: BTreeSet<Uuid> = inc.members.difference(&before).copied().collect();
    let removed: BTreeSet<Uuid> = before.difference(&inc.members).copied().collect();
    check_members(ctx, tx, &added).await?;
    // One ascending pass over adds and removes: the member triggers lock each user's
    // metadata row (migration 0009), so concurrent saves take those locks in one order.
    for m in added.union(&removed) {
        if added.contains(m) {
            res::add_member(tx, row.group_id, *m, now).await?;
        } else {
            res::remove_member(tx, row.group_id, *m).await?;
        }
    }
    res::touch_group(tx, row.group_id, &inc.display_name, now).await?;
    if inc.external_id != row.external_id {
        res::set_external_id(
            tx,
            ctx.client_id(),
            RESOURCE,
            row.group_id,
            inc.external_id.as_deref(),
        )
        .await
        .map_err(ScimError::from)?;
    }
    let mut details = json!({
        "members_added": added.iter().collect::<Vec<_>>(),
        "members_removed": removed.iter().collect::<Vec<_>>(),
    });
    if row.display_name != inc.display_name {
        details["display_name"] = json!({ "before": row.display_name, "after": inc.display_name });
    }
    audit::record(
        tx,
        &ctx.id,
        Event::new("scim_group.updated", "scim_group", row.group_id)
            .org(ctx.org_id())
            .details(details),
    )
    .await?;
    // A rename changes which rule applies to every member.
    let affected: BTreeSet<Uuid> = if row.display_name != inc.display_name {
        inc.members.union(&removed).copied().collect()
    } else {
        added.union(&removed).copied().collect()
    };
    sync_roles(ctx, tx, &affected).await?;
    record_scim_provisioning(
        tx,
        &ctx.id,
        ctx.org_id(),
        ctx.client_id(),
        ScimResource::Group,
        op,
    )
    .await?;
    Ok(())
}

pub async fn replace(
    ctx: &Ctx,
    group_id: Uuid,
    body: &Value,
    if_match: Option<&str>,
) -> Result<(Value, i64), ScimError> {
    let mut tx = ctx.id.db.begin().await?;
    if !res::lock_group(&mut tx, ctx.org_id(), group_id).await? {
        return Err(not_found(group_id));
    }
    let (row, current, members) = load(ctx, &mut tx, group_id, true).await?;
    check_if_match(if_match, row.version)?;
    let doc = schema::normalize(&GROUP_RESOURCE, body, Some(&current))?;
    save(ctx, &mut tx, &row, &members, &doc, ScimOperation::Replace).await?;
    let (row, doc, _) = load(ctx, &mut tx, group_id, true).await?;
    tx.commit().await?;
    Ok((doc, row.version))
}

/// PATCH /Groups/{id}. Answers the resource, or `None` when the client asked for no body
/// (`204` is then what Entra expects; see the HTTP layer).
pub async fn patch(
    ctx: &Ctx,
    group_id: Uuid,
    body: &Value,
    if_match: Option<&str>,
) -> Result<(Value, i64), ScimError> {
    let ops = patch::parse_request(&GROUP_RESOURCE, body)?;
    let mut tx = ctx.id.db.begin().await?;
    if !res::lock_group(&mut tx, ctx.org_id(), group_id).await? {
        return Err(not_found(group_id));
    }
    let (row, current, members) = load(ctx, &mut tx, group_id, true).await?;
    check_if_match(if_match, row.version)?;
    let patched = patch::apply(&GROUP_RESOURCE, &current, &ops)?;
    let doc = schema::normalize(&GROUP_RESOURCE, &patched, Some(&current))?;
    save(ctx, &mut tx, &row, &members, &doc, ScimOperation::Patch).await?;
    let (row, doc, _) = load(ctx, &mut tx, group_id, true).await?;
    tx.commit().await?;
    Ok((doc, row.version))
}

pub async fn delete(ctx: &Ctx, group_id: Uuid, if_match: Option<&str>) -> Result<(), ScimError> {
    let org_id = ctx.org_id();
    let mut tx = ctx.id.db.begin().await?;
    if !res::lock_group(&mut tx, org_id, group_id).await? {
        return Err(not_found(group_id));
    }
    let (row, _, members) = load(ctx, &mut tx, group_id, true).await?;
    check_if_match(if_match, row.version)?;
    res::delete_group(&mut tx, org_id, group_id).await?;
    res::delete_external_ids(&mut tx, RESOURCE, group_id, org_id).await?;
    audit::record(
        &mut tx,
        &ctx.id,
        Event::new("scim_group.deleted", "scim_group", group_id)
            .org(org_id)
            .details(json!({ "display_name": row.display_name, "members": members.len() })),
    )
    .await?;
    sync_roles(ctx, &mut tx, &members.iter().copied().collect()).await?;
    record_scim_provisioning(
        &mut tx,
        &ctx.id,
        org_id,
        ctx.client_id(),
        ScimResource::Group,
        ScimOperation::Delete,
    )
    .await?;
    tx.commit().await?;
    Ok(())
}
