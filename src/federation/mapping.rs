//! What a federated login asserted, and the pure rules turning it into Lintel's user fields:
//! the provider's attribute mapping (with well-known defaults per attribute), the group →
//! role mapping and the JIT settings every provider shares.
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};

/// The identity an upstream provider vouched for: its stable subject (SAML NameID, OIDC
/// `sub`) and every attribute or claim, each as a list of strings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Asserted {
    pub subject: String,
    pub attributes: BTreeMap<String, Vec<String>>,
    /// OIDC `email_verified`; SAML says nothing (`None`).
    #[serde(default)]
    pub email_verified: Option<bool>,
}

/// Which attribute (SAML `Name` or OIDC claim) carries each user field. Unset fields use the
/// well-known names in [`DEFAULTS`].
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AttributeMapping {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub first_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub groups: Option<String>,
}

/// Well-known names, tried in order: OIDC Core §5.1 claims, the LDAP/eduPerson OIDs, and the
/// claim URIs ADFS and Entra ID send.
pub const DEFAULTS: [(&str, &[&str]); 4] = [
    (
        "email",
        &[
            "email",
            "mail",
            "emailAddress",
            "urn:oid:0.9.2342.19200300.100.1.3",
            "http://schemas.xmlsoap.org/ws/2005/05/identity/claims/emailaddress",
            "http://schemas.xmlsoap.org/claims/EmailAddress",
        ],
    ),
    (
        "first_name",
        &[
            "given_name",
            "firstName",
            "givenName",
            "first_name",
            "urn:oid:2.5.4.42",
            "http://schemas.xmlsoap.org/ws/2005/05/identity/claims/givenname",
        ],
    ),
    (
        "last_name",
        &[
            "family_name",
            "lastName",
            "sn",
            "surname",
            "last_name",
            "urn:oid:2.5.4.4",
            "http://schemas.xmlsoap.org/ws/2005/05/identity/claims/surname",
        ],
    ),
    (
        "groups",
        &[
            "groups",
            "memberOf",
            "http://schemas.microsoft.com/ws/2008/06/identity/claims/groups",
            "urn:oid:1.3.6.1.4.1.5923.1.5.1.1",
        ],
    ),
];

/// How a provider's logins become users and memberships (shared by SAML and OIDC).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JitSettings {
    #[serde(default)]
    pub attribute_mapping: AttributeMapping,
    /// IdP group name → role name in the org. Roles named here are managed by the IdP: a
    /// member holds exactly those its groups map to.
    #[serde(default)]
    pub group_roles: BTreeMap<String, String>,
    /// The role of a new member whose groups map to no role.
    #[serde(default = "default_role")]
    pub default_role: String,
    /// Trust the emails this IdP asserts for the org's verified domains: a user who already
    /// has that email is linked (not refused), and new users start with it confirmed.
    #[serde(default)]
    pub trust_email: bool,
}

fn default_role() -> String {
    crate::identity::users::DEFAULT_MEMBER_ROLE.to_string()
}

impl Default for JitSettings {
    fn default() -> Self {
        JitSettings {
            attribute_mapping: AttributeMapping::default(),
            group_roles: BTreeMap::new(),
            default_role: default_role(),
            trust_email: false,
        }
    }
}

/// Lintel's fields out of an assertion.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Mapped {
    pub email: Option<String>,
    pub first_name: Option<String>,
    pub last_name: Option<String>,
    pub groups: Vec<String>,
}

fn lookup<'a>(a: &'a Asserted, configured: Option<&str>, field: &str) -> Option<&'a Vec<String>> {
    if let Some(name) = configured {
        return a.attributes.get(name);
    }
    let names = DEFAULTS.iter().find(|(f, _)| *f == field)?.1;
    names.iter().find_map(|n| {
        a.attributes.get(*n).or_else(|| {
            // Attribute names from IdPs vary in case (`Email`, `EmailAddress`).
            a.attributes
                .iter()
                .find(|(k, _)| k.eq_ignore_ascii_case(n))
                .map(|(_, v)| v)
        })
    })
}

fn first_text(v: Option<&Vec<String>>) -> Option<String> {
    v.and_then(|v| v.iter().map(|s| s.trim()).find(|s| !s.is_empty()))
        .map(|s| s.chars().take(256).collect())
}

/// Applies the mapping. The email falls back to the subject when it looks like an address
/// (SAML `emailAddress` NameIDs).
pub fn map(a: &Asserted, m: &AttributeMapping) -> Mapped {
    let email = first_text(lookup(a, m.email.as_deref(), "email")).or_else(|| {
        let s = a.subject.trim();
        (s.contains('@') && !s.contains(char::is_whitespace)).then(|| s.to_string())
    });
    let groups: BTreeSet<String> = lookup(a, m.groups.as_deref(), "groups")
        .into_iter()
        .flatten()
        .map(|g| g.trim().to_string())
        .filter(|g| !g.is_empty())
        .collect();
    Mapped {
        email,
        first_name: first_text(lookup(a, m.first_name.as_deref(), "first_name")),
        last_name: first_text(lookup(a, m.last_name.as_deref(), "last_name")),
        groups: groups.into_iter().collect(),
    }
}

/// The role names the member's groups map to (sorted, distinct), and every role the
/// mapping manages.
pub fn roles_for(settings: &JitSettings, groups: &[String]) -> (Vec<String>, Vec<String>) {
    let desired: BTreeSet<&String> = groups
        .iter()
        .filter_map(|g| settings.group_roles.get(g))
        .collect();
    let managed: BTreeSet<&String> = settings.group_roles.values().collect();
    (
        desired.into_iter().cloned().collect(),
        managed.into_iter().cloned().collect(),
    )
}

/// OIDC claims as attributes: strings as they are, numbers and booleans as text, arrays
/// element by element; objects are skipped.
pub fn claims_as_attributes(
    claims: &serde_json::Map<String, serde_json::Value>,
) -> BTreeMap<String, Vec<String>> {
    use serde_json::Value;
    let scalar = |v: &Value| match v {
        Value::String(s) => Some(s.clone()),
        Value::Bool(b) => Some(b.to_string()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    };
    claims
        .iter()
        .filter_map(|(k, v)| {
            let values: Vec<String> = match v {
                Value::Array(items) => items.iter().filter_map(scalar).collect(),
                other => scalar(other).into_iter().collect(),
            };
            (!values.is_empty()).then(|| (k.clone(), values))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn asserted(subject: &str, attrs: &[(&str, &[&str])]) -> Asserted {
        Asserted {
            subject: subject.into(),
            attributes: attrs
                .iter()
                .map(|(k, v)| (k.to_string(), v.iter().map(|s| s.to_string()).collect()))
                .collect(),
            email_verified: None,
        }
    }

    #[test]
    fn defaults_find_entra_claim_uris() {
        let a = asserted(
            "0a1b2c",
            &[
                (
                    "http://schemas.xmlsoap.org/ws/2005/05/identity/claims/emailaddress",
                    &["Ada@Example.com"],
                ),
                (
                    "http://schemas.xmlsoap.org/ws/2005/05/identity/claims/givenname",
                    &["Ada"],
                ),
                ("urn:oid:2.5.4.4", &["Lovelace"]),
                (
                    "http://schemas.microsoft.com/ws/2008/06/identity/claims/groups",
                    &["eng", "ops", "eng", " "],
                ),
            ],
        );
        let m = map(&a, &AttributeMapping::default());
        assert_eq!(m.email.as_deref(), Some("Ada@Example.com"));
        assert_eq!(m.first_name.as_deref(), Some("Ada"));
        assert_eq!(m.last_name.as_deref(), Some("Lovelace"));
        assert_eq!(m.groups, vec!["eng", "ops"]);
    }

    #[test]
    fn configured_names_win_and_do_not_fall_back() {
        let a = asserted(
            "x",
            &[
                ("email", &["default@example.com"]),
                ("upn", &["upn@example.com"]),
            ],
        );
        let m = map(
            &a,
            &AttributeMapping {
                email: Some("upn".into()),
                first_name: Some("nick".into()),
                ..Default::default()
            },
        );
        assert_eq!(m.email.as_deref(), Some("upn@example.com"));
        assert_eq!(m.first_name, None);
    }

    #[test]
    fn email_falls_back_to_an_address_like_subject_only() {
        assert_eq!(
            map(
                &asserted("ada@example.com", &[]),
                &AttributeMapping::default()
            )
            .email,
            Some("ada@example.com".into())
        );
        assert_eq!(
            map(&asserted("00u1abc", &[]), &AttributeMapping::default()).email,
            None
        );
        assert_eq!(
            map(
                &asserted("a b@example.com", &[]),
                &AttributeMapping::default()
            )
            .email,
            None
        );
    }

    #[test]
    fn attribute_names_match_case_insensitively() {
        let m = map(
            &asserted("s", &[("EmailAddress", &["e@example.com"])]),
            &AttributeMapping::default(),
        );
        assert_eq!(m.email.as_deref(), Some("e@example.com"));
    }

    #[test]
    fn group_roles() {
        let s = JitSettings {
            group_roles: [
                ("Admins".to_string(), "admin".to_string()),
                ("Owners".to_string(), "owner".to_string()),
                ("Eng".to_string(), "admin".to_string()),
            ]
            .into(),
            ..Default::default()
        };
        let (desired, managed) = roles_for(&s, &["Eng".into(), "Admins".into(), "x".into()]);
        assert_eq!(desired, vec!["admin"]);
        assert_eq!(managed, vec!["admin", "owner"]);
        assert_eq!(roles_for(&s, &[]).0, Vec::<String>::new());
    }

    #[test]
    fn claims_flatten() {
        let claims = serde_json::json!({
            "sub": "123", "email_verified": true, "groups": ["a", "b", {"x": 1}],
            "address": {"country": "NL"}, "n": 5
        });
        let attrs = claims_as_attributes(claims.as_object().unwrap());
        assert_eq!(attrs["groups"], vec!["a", "b"]);
        assert_eq!(attrs["email_verified"], vec!["true"]);
        assert_eq!(attrs["n"], vec!["5"]);
        assert!(!attrs.contains_key("address"));
    }

    #[test]
    fn settings_defaults_from_empty_json() {
        let s: JitSettings = serde_json::from_str("{}").unwrap();
        assert_eq!(s.default_role, "member");
        assert!(!s.trust_email);
        assert!(
            serde_json::from_str::<AttributeMapping>(r#"{"mail": "x"}"#).is_err(),
            "unknown mapping keys are refused"
        );
    }
}
