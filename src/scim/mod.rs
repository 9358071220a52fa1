//! SCIM 2.0 core (RFC 7643 schemas, RFC 7644 protocol): pure functions only.
//!
//! No async, no I/O: the HTTP layer and the store call into these modules.
//! Resources are plain JSON objects in canonical attribute case, with extension
//! attributes nested under their schema URN key (RFC 7643 §3, §8).
//!
//! - [`schema`]: the User, EnterpriseUser and Group definitions; discovery
//!   documents; [`schema::resolve`] for attribute paths; [`schema::normalize`]
//!   for POST/PUT bodies; [`schema::project`] for `attributes` /
//!   `excludedAttributes`.
//! - [`filter`]: the §3.4.2.2 grammar. [`filter::parse_for`] returns a
//!   canonical tree ready to compile to SQL: paths carry canonical names, a
//!   URN only for extension attributes, `emails co "x"` already rewritten to
//!   `emails.value co "x"`; value-path filters hold bare sub-attribute names and
//!   never nest; values are type-checked (`Bool` for booleans, `Num` for
//!   numbers, RFC 3339 `Str` for dateTime, `Null` only with `eq`/`ne`).
//!   `caseExact` comes from [`schema::resolve`].
//! - [`path`] and [`patch`]: PATCH paths and operations; [`patch::apply`] on a
//!   resource's JSON, or [`patch::member_changes`] to store member changes as
//!   set operations.
//! - [`bulk_request`]: BulkRequest parsing, limits, `bulkId` planning and the
//!   BulkResponse document (pure; execution is the caller's).
//! - [`error`]: [`ScimError`], the one SCIM error type (RFC 7644 §3.12).
//! - [`anchors`]: this node's page anchors for a deep `startIndex`.

pub mod anchors;
pub mod bulk;
pub mod bulk_request;
pub mod cache;
pub mod clients;
pub mod discovery;
pub mod error;
pub mod filter;
pub mod groups;
pub mod mapping;
pub mod patch;
pub mod path;
pub mod query;
pub mod rendered;
pub mod resource;
pub mod schema;
pub mod search;
pub mod users;

pub use error::{ScimError, ScimType};

/// RFC 7643 §4.1.
pub const USER_SCHEMA: &str = "urn:ietf:params:scim:schemas:core:2.0:User";
/// RFC 7643 §4.3.
pub const ENTERPRISE_USER_SCHEMA: &str =
    "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User";
/// RFC 7643 §4.2.
pub const GROUP_SCHEMA: &str = "urn:ietf:params:scim:schemas:core:2.0:Group";
/// RFC 7644 §3.4.2.
pub const LIST_RESPONSE: &str = "urn:ietf:params:scim:api:messages:2.0:ListResponse";
/// RFC 7644 §3.5.2.
pub const PATCH_OP: &str = "urn:ietf:params:scim:api:messages:2.0:PatchOp";
/// RFC 7644 §3.12.
pub const ERROR_SCHEMA: &str = "urn:ietf:params:scim:api:messages:2.0:Error";
/// RFC 7644 §3.4.3.
pub const SEARCH_REQUEST: &str = "urn:ietf:params:scim:api:messages:2.0:SearchRequest";
/// RFC 7644 §3.7.
pub const BULK_REQUEST: &str = "urn:ietf:params:scim:api:messages:2.0:BulkRequest";
/// RFC 7644 §3.7.
pub const BULK_RESPONSE: &str = "urn:ietf:params:scim:api:messages:2.0:BulkResponse";
/// RFC 7643 §5.
pub const SERVICE_PROVIDER_CONFIG_SCHEMA: &str =
    "urn:ietf:params:scim:schemas:core:2.0:ServiceProviderConfig";
/// RFC 7643 §6.
pub const RESOURCE_TYPE_SCHEMA: &str = "urn:ietf:params:scim:schemas:core:2.0:ResourceType";
/// RFC 7643 §7.
pub const SCHEMA_SCHEMA: &str = "urn:ietf:params:scim:schemas:core:2.0:Schema";

/// The case-folded form used for case-insensitive keys (group → role rules).
pub fn fold(s: &str) -> String {
    s.to_lowercase()
}

/// The SCIM base URL clients are given: the issuer plus `/scim/v2`.
pub fn base_url(config: &crate::config::Config) -> String {
    format!("{}/scim/v2", config.issuer.as_str().trim_end_matches('/'))
}
