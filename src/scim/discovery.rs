//! Discovery (RFC 7644 §4, RFC 7643 §5-7): what this server supports, generated from the
//! same configuration and schema tables that drive validation.
use super::schema::{self, RESOURCE_TYPES, SCHEMAS};
use super::{LIST_RESPONSE, SERVICE_PROVIDER_CONFIG_SCHEMA, ScimError};
use crate::config::Config;
use serde_json::{Value, json};

/// `/ServiceProviderConfig` (RFC 7643 §5), with RFC 9865's `pagination`.
pub fn service_provider_config(config: &Config) -> Value {
    let base = super::base_url(config);
    let s = &config.scim;
    let payload = s
        .bulk_max_payload_bytes
        .min(config.http.body_limit_bytes as u64);
    json!({
        "schemas": [SERVICE_PROVIDER_CONFIG_SCHEMA],
        "patch": { "supported": true },
        "bulk": {
            "supported": true,
            "maxOperations": s.bulk_max_operations,
            "maxPayloadSize": payload,
        },
        "filter": { "supported": true, "maxResults": s.max_results },
        "changePassword": { "supported": true },
        "sort": { "supported": true },
        "etag": { "supported": true },
        "pagination": {
            "cursor": true,
            "index": true,
            "defaultPaginationMethod": "index",
            "defaultPageSize": 100,
            "maxPageSize": s.max_results,
        },
        "authenticationSchemes": [{
            "type": "oauthbearertoken",
            "name": "Bearer token",
            "description": "A SCIM client token (lst_…) issued by `lintel scim-client create`.",
            "primary": true,
        }],
        "meta": {
            "resourceType": "ServiceProviderConfig",
            "location": format!("{base}/ServiceProviderConfig"),
        },
    })
}

fn list(items: Vec<Value>) -> Value {
    json!({
        "schemas": [LIST_RESPONSE],
        "totalResults": items.len(),
        "itemsPerPage": items.len(),
        "startIndex": 1,
        "Resources": items,
    })
}

pub fn resource_types(config: &Config) -> Value {
    let base = super::base_url(config);
    list(
        RESOURCE_TYPES
            .iter()
            .map(|r| schema::resource_type_json(r, &base))
            .collect(),
    )
}

pub fn resource_type(config: &Config, id: &str) -> Result<Value, ScimError> {
    let base = super::base_url(config);
    schema::resource_type(id)
        .map(|r| schema::resource_type_json(r, &base))
        .ok_or_else(|| ScimError::not_found(format!("ResourceType {id} not found")))
}

pub fn schemas(config: &Config) -> Value {
    let base = super::base_url(config);
    list(
        SCHEMAS
            .iter()
            .map(|s| schema::schema_json(s, &base))
            .collect(),
    )
}

pub fn schema(config: &Config, id: &str) -> Result<Value, ScimError> {
    let base = super::base_url(config);
    schema::schema_by_id(id)
        .map(|s| schema::schema_json(s, &base))
        .ok_or_else(|| ScimError::not_found(format!("Schema {id} not found")))
}
