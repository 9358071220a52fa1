//! What the `/Users` and `/Groups` services share: the request context, list parameters
//! and responses (RFC 7644 §3.4.2, cursors per RFC 9865), versions as weak ETags
//! (§3.14), and the mapping of identity/store failures onto SCIM errors.
use super::clients::ScimPrincipal;
use super::mapping::{self, Rule};
use super::{LIST_RESPONSE, ScimError};
use crate::identity::audit::Actor;
use crate::identity::{Identity, IdentityError};
use crate::store::{self, StoreError};
use serde::ser::{Serialize, SerializeMap, Serializer};
use serde_json::value::RawValue;
use serde_json::{Map, Value, json};
use std::sync::Arc;
use uuid::Uuid;

/// One authenticated SCIM request: the client, its org, the identity services acting as
/// the client, and the client's effective attribute mapping.
pub struct Ctx {
    pub id: Identity,
    pub principal: ScimPrincipal,
    pub base_url: String,
    pub rules: Arc<Vec<Rule>>,
    /// What renderings depend on besides the row: the rules and the base URL (see
    /// [`super::rendered`]).
    pub fingerprint: u64,
}

impl Ctx {
    pub async fn new(
        id: &Identity,
        principal: ScimPrincipal,
        actor: &Actor,
    ) -> Result<Ctx, ScimError> {
        let key = principal.client_id().to_string();
        let base_url = super::base_url(&id.config);
        let (rules, fingerprint) = match super::cache::mappings().get(&key) {
            Some(kept) => kept,
            None => {
                let mut c = id.db.conn().await?;
                let rows = store::scim::list_mappings(&mut c, principal.client_id()).await?;
                let rows: Vec<(String, String)> = rows
                    .into_iter()
                    .map(|m| (m.scim_attribute, m.local_attribute))
                    .collect();
                let rules =
                    mapping::effective(mapping::defaults(&id.config.scim.user_name_maps_to), &rows);
                let pairs = rules.iter().map(|r| (r.scim.as_str(), r.local.as_str()));
                let fingerprint = super::rendered::fingerprint(&base_url, pairs);
                let kept = (Arc::new(rules), fingerprint);
                super::cache::mappings().put(key, kept.clone());
                kept
            }
        };
        Ok(Ctx {
            id: principal.identity(id, actor),
            base_url,
            principal,
            rules,
            fingerprint,
        })
    }

    pub fn org_id(&self) -> Uuid {
        self.principal.org_id()
    }

    pub fn client_id(&self) -> Uuid {
        self.principal.client_id()
    }

    pub fn location(&self, endpoint: &str, id: Uuid) -> String {
        format!("{}{endpoint}/{id}", self.base_url)
    }
}

/// `W/"<version>"` (RFC 7644 §3.14: a weak validator).
pub fn etag(version: i64) -> String {
    format!("W/\"{version}\"")
}

/// Checks `If-Match` (RFC 7232 §3.1, weak comparison as SCIM uses weak tags): `*` or any
/// listed tag equal to the current one passes; otherwise 412.
pub fn check_if_match(if_match: Option<&str>, version: i64) -> Result<(), ScimError> {
    let Some(header) = if_match else {
        return Ok(());
    };
    let current = version.to_string();
    let ok = header
        .split(',')
        .map(str::trim)
        .any(|t| t == "*" || t.trim_start_matches("W/").trim_matches('"') == current);
    if ok {
        Ok(())
    } else {
        Err(ScimError::precondition_failed(format!(
            "the resource has changed: its version is {}",
            etag(version)
        )))
    }
}

/// `If-None-Match` on GET (RFC 7232 §3.2): true when the client's copy is current.
pub fn not_modified(if_none_match: Option<&str>, version: i64) -> bool {
    let current = version.to_string();
    if_none_match.is_some_and(|h| {
        h.split(',')
            .map(str::trim)
            .any(|t| t == "*" || t.trim_start_matches("W/").trim_matches('"') == current)
    })
}

/// A read's parameters, from a query string or a SearchRequest body (RFC 7644 §3.4.2-3).
#[derive(Debug, Clone, Default)]
pub struct ListParams {
    pub filter: Option<String>,
    pub start_index: Option<i64>,
    pub count: Option<i64>,
    pub sort_by: Option<String>,
    pub sort_order: Option<String>,
    pub attributes: Vec<String>,
    pub excluded_attributes: Vec<String>,
    /// RFC 9865: `Some("")` asks for the first cursor page.
    pub cursor: Option<String>,
}

/// Comma-separated attribute lists (`attributes=userName,name.givenName`).
pub fn split_list(s: &str) -> Vec<String> {
    s.split(',')
        .map(str::trim)
        .filter(|a| !a.is_empty())
        .map(String::from)
        .collect()
}

impl ListParams {
    /// A `POST /.search` body (RFC 7644 §3.4.3). Numbers may arrive as strings.
    pub fn from_search_request(body: &Value) -> Result<ListParams, ScimError> {
        let Value::Object(o) = body else {
            return Err(ScimError::invalid_syntax(
                "a SearchRequest is a JSON object",
            ));
        };
        let get = |k: &str| {
            o.iter()
                .find(|(key, _)| key.eq_ignore_ascii_case(k))
                .map(|(_, v)| v)
                .filter(|v| !v.is_null())
        };
        if let Some(schemas) = get("schemas") {
            let ok = schemas.as_array().is_some_and(|a| {
                a.iter().any(|s| {
                    s.as_str()
                        .is_some_and(|s| s.eq_ignore_ascii_case(super::SEARCH_REQUEST))
                })
            });
            if !ok {
                return Err(ScimError::invalid_syntax(format!(
                    "schemas must contain {}",
                    super::SEARCH_REQUEST
                )));
            }
        }
        let text = |k: &str| -> Result<Option<String>, ScimError> {
            match get(k) {
                None => Ok(None),
                Some(Value::String(s)) => Ok(Some(s.clone())),
                Some(_) => Err(ScimError::invalid_value(format!("{k} must be a string"))),
            }
        };
        let int = |k: &str| -> Result<Option<i64>, ScimError> {
            match get(k) {
                None => Ok(None),
                Some(Value::Number(n)) => n
                    .as_i64()
                    .map(Some)
                    .ok_or_else(|| ScimError::invalid_value(format!("{k} must be an integer"))),
                Some(Value::String(s)) => s
                    .trim()
                    .parse()
                    .map(Some)
                    .map_err(|_| ScimError::invalid_value(format!("{k} must be an integer"))),
                Some(_) => Err(ScimError::invalid_value(format!("{k} must be an integer"))),
            }
        };
        let list = |k: &str| -> Result<Vec<String>, ScimError> {
            match get(k) {
                None => Ok(Vec::new()),
                Some(Value::Array(items)) => items
                    .iter()
                    .map(|i| {
                        i.as_str()
                            .map(String::from)
                            .ok_or_else(|| ScimError::invalid_value(format!("{k} holds strings")))
                    })
                    .collect(),
                Some(Value::String(s)) => Ok(split_list(s)),
                Some(_) => Err(ScimError::invalid_value(format!(
                    "{k} must be an array of strings"
                ))),
            }
        };
        Ok(ListParams {
            filter: text("filter")?,
            start_index: int("startIndex")?,
            count: int("count")?,
            sort_by: text("sortBy")?,
            sort_order: text("sortOrder")?,
            attributes: list("attributes")?,
            excluded_attributes: list("excludedAttributes")?,
            cursor: text("cursor")?,
        })
    }

    pub fn descending(&self) -> Result<bool, ScimError> {
        match self
            .sort_order
            .as_deref()
            .map(str::to_ascii_lowercase)
            .as_deref()
        {
            None | Some("ascending") => Ok(false),
            Some("descending") => Ok(true),
            Some(other) => Err(ScimError::invalid_value(format!(
                "sortOrder `{other}`: use ascending or descending"
            ))),
        }
    }

    /// `(offset, limit)` from startIndex/count: startIndex < 1 is 1, a negative count 0,
    /// and count at most `max` (RFC 7644 §3.4.2.4).
    pub fn window(&self, default_count: u32, max: u32) -> (u64, u32) {
        let start = self.start_index.unwrap_or(1).max(1);
        let count = self
            .count
            .unwrap_or(i64::from(default_count))
            .clamp(0, i64::from(max));
        ((start - 1) as u64, count as u32)
    }

    /// The id after which a cursor page starts (RFC 9865 §2): `None` for the first page.
    pub fn cursor_after(&self) -> Result<Option<Uuid>, ScimError> {
        match self.cursor.as_deref() {
            None | Some("") => Ok(None),
            Some(c) => Uuid::parse_str(c).map(Some).map_err(|_| {
                ScimError::new(
                    400,
                    Some(super::ScimType::InvalidValue),
                    "invalidCursor: the cursor is not one this server issued",
                )
            }),
        }
    }
}

/// A ListResponse whose resources may be kept serialised (see [`super::rendered`]): it is
/// written out without building them again.
#[derive(Debug)]
pub struct ListBody {
    pub total: i64,
    pub start_index: i64,
    pub resources: Vec<Arc<RawValue>>,
    pub next_cursor: Option<String>,
}

impl ListBody {
    /// The same response as a document (for callers that take it apart).
    pub fn into_value(self) -> Value {
        let items = self
            .resources
            .iter()
            .map(|r| serde_json::from_str(r.get()))
            .collect::<Result<Vec<Value>, _>>()
            .unwrap_or_default();
        list_response(self.total, self.start_index, items, self.next_cursor)
    }
}

/// Field for field as [`list_response`] writes it.
impl Serialize for ListBody {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut m = s.serialize_map(None)?;
        m.serialize_entry("schemas", &[LIST_RESPONSE])?;
        m.serialize_entry("totalResults", &self.total)?;
        m.serialize_entry("itemsPerPage", &self.resources.len())?;
        m.serialize_entry("startIndex", &self.start_index)?;
        let items: Vec<&RawValue> = self.resources.iter().map(|r| &**r).collect();
        m.serialize_entry("Resources", &items)?;
        if let Some(c) = &self.next_cursor {
            m.serialize_entry("nextCursor", c)?;
        }
        m.end()
    }
}

/// A ListResponse (RFC 7644 §3.4.2) with RFC 9865's `nextCursor` when cursoring.
pub fn list_response(
    total: i64,
    start_index: i64,
    resources: Vec<Value>,
    next_cursor: Option<String>,
) -> Value {
    let mut out = Map::new();
    out.insert("schemas".into(), json!([LIST_RESPONSE]));
    out.insert("totalResults".into(), json!(total));
    out.insert("itemsPerPage".into(), json!(resources.len()));
    out.insert("startIndex".into(), json!(start_index));
    // Moved in: `json!` would serialise every resource into a copy.
    out.insert("Resources".into(), Value::Array(resources));
    if let Some(c) = next_cursor {
        out.insert("nextCursor".into(), Value::String(c));
    }
    Value::Object(out)
}

impl From<StoreError> for ScimError {
    fn from(e: StoreError) -> Self {
        match &e {
            StoreError::Conflict { .. } => ScimError::conflict_uniqueness(format!(
                "{} is already taken",
                e.conflict_field().unwrap_or("a unique value")
            )),
            _ => internal(e),
        }
    }
}

/// A failure that is ours: status 500; the HTTP layer logs `detail` and answers a bare 500.
pub fn internal(e: impl std::fmt::Display) -> ScimError {
    ScimError::new(500, None, e.to_string())
}

impl From<IdentityError> for ScimError {
    fn from(e: IdentityError) -> Self {
        match e {
            IdentityError::Invalid { field, message } => {
                ScimError::invalid_value(format!("{field}: {message}"))
            }
            IdentityError::Conflict { message, .. } => ScimError::conflict_uniqueness(message),
            IdentityError::NotFound { what } => ScimError::not_found(format!("{what} not found")),
            IdentityError::CrossOrg { what } => {
                ScimError::invalid_value(format!("{what} belongs to another organization"))
            }
            IdentityError::TokenInvalid | IdentityError::TokenExpired => {
                ScimError::new(401, None, "the bearer token is not valid")
            }
            IdentityError::Store(s) => s.into(),
            other => internal(other),
        }
    }
}

/// A list read planned from its parameters (RFC 7644 §3.4.2.2-4, RFC 9865): the compiled
/// filter and the page. Shared by `/Users` and `/Groups`.
pub struct ListPlan {
    pub cond: crate::store::scim::query::Cond,
    pub filtered: bool,
    pub page: crate::store::scim::resources::Page,
    pub cursor: bool,
    offset: u64,
}

impl ListPlan {
    pub fn new(
        ctx: &Ctx,
        kind: super::query::Kind,
        rt: &super::schema::ResourceType,
        params: &ListParams,
    ) -> Result<ListPlan, ScimError> {
        use super::query;
        let cond = match params.filter.as_deref().map(str::trim) {
            None | Some("") => None,
            Some(f) => {
                let parsed = super::filter::parse_for(rt, f)?;
                Some(query::compile(kind, &ctx.rules, &parsed)?)
            }
        };
        let (offset, limit) = params.window(100, ctx.id.config.scim.max_results);
        let sort = match params.sort_by.as_deref() {
            Some(s) if !s.trim().is_empty() => Some(query::sort_col(kind, &ctx.rules, s)?),
            _ => None,
        };
        let cursor = params.cursor.is_some();
        if cursor && (sort.is_some() || params.start_index.is_some()) {
            return Err(ScimError::invalid_value(
                "cursor pagination orders by id: do not combine cursor with sortBy or startIndex",
            ));
        }
        let page = crate::store::scim::resources::Page {
            sort,
            descending: params.descending()?,
            offset: if cursor { 0 } else { offset },
            limit,
            after: params.cursor_after()?,
            anchor: None,
        };
        Ok(ListPlan {
            filtered: cond.is_some(),
            cond: cond.unwrap_or(crate::store::scim::query::Cond::Const(true)),
            page,
            cursor,
            offset,
        })
    }

    /// `totalResults` without a count, for a filtered first page that is not full (it
    /// holds every match).
    pub fn total_from_page(&self, rows: usize) -> Option<i64> {
        let limit = self.page.limit as usize;
        (self.filtered && !self.cursor && self.offset == 0 && limit > 0 && rows < limit)
            .then_some(rows as i64)
    }

    /// RFC 9865 `nextCursor`: the last id of a full cursor page.
    pub fn next_cursor(&self, rows: usize, last: Option<Uuid>) -> Option<String> {
        let limit = self.page.limit as usize;
        (self.cursor && limit > 0 && rows == limit)
            .then(|| last.map(|l| l.to_string()))
            .flatten()
    }

    pub fn start_index(&self) -> i64 {
        if self.cursor {
            1
        } else {
            self.offset as i64 + 1
        }
    }
}
