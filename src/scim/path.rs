//! PATCH paths (RFC 7644 §3.5.2): `PATH = attrPath / valuePath [subAttr]`.

use std::fmt;

use super::error::ScimError;
use super::filter::{self, AttrPath, Filter};
use super::schema::{self, Attribute, ResourceType, Schema};

/// A resolved PATCH path with canonical names.
///
/// - `attr`: the attribute (URN set only for extension attributes), with
///   `sub_attr` for `name.givenName`-style paths;
/// - `filter`: the value filter of `emails[type eq "work"]`, its paths relative
///   to one element;
/// - `sub_after_filter`: `value` in `emails[type eq "work"].value`.
#[derive(Debug, Clone, PartialEq)]
pub struct PatchPath {
    pub attr: AttrPath,
    pub filter: Option<Filter>,
    pub sub_after_filter: Option<String>,
}

impl fmt::Display for PatchPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.attr)?;
        if let Some(flt) = &self.filter {
            write!(f, "[{flt}]")?;
        }
        if let Some(s) = &self.sub_after_filter {
            write!(f, ".{s}")?;
        }
        Ok(())
    }
}

/// The schema objects a path resolves to.
#[derive(Debug, Clone, Copy)]
pub struct PathTarget {
    pub schema: &'static Schema,
    pub attr: &'static Attribute,
    /// The sub-attribute: from `attr.sub` or from after the filter.
    pub sub: Option<&'static Attribute>,
    pub is_extension: bool,
}

impl PatchPath {
    /// Resolve the (already canonical) path again to reach the schema objects.
    pub fn target(&self, rt: &ResourceType) -> Result<PathTarget, ScimError> {
        let r = schema::resolve_static(rt, &self.attr)?;
        let sub = match (&r.sub, &self.sub_after_filter) {
            (Some(s), _) => Some(*s),
            (None, Some(name)) => r.attr.sub(name),
            (None, None) => None,
        };
        Ok(PathTarget {
            schema: r.schema,
            attr: r.attr,
            sub,
            is_extension: r.is_extension(rt),
        })
    }
}

/// Parse and resolve a PATCH path. Syntax errors and unknown attributes →
/// 400 `invalidPath`; errors inside the brackets → 400 `invalidFilter`
/// (RFC 7644 §3.12 lists `invalidFilter` for PATCH path filters).
pub fn parse_path(rt: &ResourceType, input: &str) -> Result<PatchPath, ScimError> {
    let (path, flt, sub_after) = filter::parse_patch_path_syntax(input)?;
    let r = schema::resolve_static(rt, &path)?;
    let canonical = r.canonical_path(rt);
    let Some(flt) = flt else {
        return Ok(PatchPath {
            attr: canonical,
            filter: None,
            sub_after_filter: None,
        });
    };
    if !r.attr.is_complex() || !r.attr.multi_valued {
        return Err(ScimError::invalid_path(format!(
            "\"{}\" is not a multi-valued complex attribute and cannot take a value filter",
            r.attr.name
        )));
    }
    let resolved_filter = filter::resolve_element_filter(rt, r.attr, &flt)?;
    let sub_after_filter = match sub_after {
        None => None,
        Some(s) => Some(
            r.attr
                .sub(&s)
                .ok_or_else(|| {
                    ScimError::invalid_path(format!(
                        "unknown sub-attribute \"{s}\" of \"{}\"",
                        r.attr.name
                    ))
                })?
                .name
                .to_string(),
        ),
    };
    Ok(PatchPath {
        attr: canonical,
        filter: Some(resolved_filter),
        sub_after_filter,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scim::ENTERPRISE_USER_SCHEMA;
    use crate::scim::error::ScimType;
    use crate::scim::filter::{CompValue, CompareOp};
    use crate::scim::schema::{GROUP_RESOURCE, USER_RESOURCE};

    fn pp(s: &str) -> PatchPath {
        parse_path(&USER_RESOURCE, s).unwrap_or_else(|e| panic!("{s}: {e}"))
    }
    fn eq(a: &str, v: &str) -> Filter {
        Filter::compare(AttrPath::new(a), CompareOp::Eq, CompValue::Str(v.into()))
    }

    #[test]
    fn attribute_paths() {
        // Transcribed from scim2-models tests/test_filter_grammar.py
        // (test_attribute_paths_are_valid_patch_paths).
        let g = parse_path(&GROUP_RESOURCE, "members").unwrap();
        assert_eq!(
            g,
            PatchPath {
                attr: AttrPath::new("members"),
                filter: None,
                sub_after_filter: None
            }
        );
        assert_eq!(
            pp("name.familyName").attr,
            AttrPath::sub("name", "familyName")
        );
        assert_eq!(
            pp("urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:employeeNumber").attr,
            AttrPath::new("employeeNumber").with_urn(ENTERPRISE_USER_SCHEMA)
        );
        // Case-insensitive, canonical output; core URN dropped.
        assert_eq!(
            pp("NAME.GIVENNAME").attr,
            AttrPath::sub("name", "givenName")
        );
        assert_eq!(
            pp("urn:ietf:params:scim:schemas:core:2.0:User:USERNAME").attr,
            AttrPath::new("userName")
        );
        // Entra's dotted extension form.
        assert_eq!(
            pp("urn:ietf:params:scim:schemas:extension:enterprise:2.0:User.manager").attr,
            AttrPath::new("manager").with_urn(ENTERPRISE_USER_SCHEMA)
        );
        assert_eq!(pp("  externalId ").attr, AttrPath::new("externalId"));
    }

    #[test]
    fn value_paths_with_and_without_sub_attribute() {
        let p = parse_path(&GROUP_RESOURCE, r#"members[value eq "2819c223"].display"#).unwrap();
        assert_eq!(p.attr, AttrPath::new("members"));
        assert_eq!(p.filter, Some(eq("value", "2819c223")));
        assert_eq!(p.sub_after_filter.as_deref(), Some("display"));
        let p = pp(r#"addresses[type eq "work"]"#);
        assert_eq!(
            (p.filter, p.sub_after_filter),
            (Some(eq("type", "work")), None)
        );
        let p = pp(r#"EMAILS[TYPE eq "work" and Primary eq TRUE].VALUE"#);
        assert_eq!(p.attr, AttrPath::new("emails"));
        assert_eq!(
            p.filter,
            Some(Filter::and(
                eq("type", "work"),
                Filter::compare(
                    AttrPath::new("primary"),
                    CompareOp::Eq,
                    CompValue::Bool(true)
                )
            ))
        );
        assert_eq!(p.sub_after_filter.as_deref(), Some("value"));
        // RFC 7644 §3.5.2.2 example has no space before the quote.
        let p = parse_path(
            &GROUP_RESOURCE,
            r#"members[value eq"2819c223-7f76-453a-919d-413861904646"]"#,
        )
        .unwrap();
        assert_eq!(
            p.filter,
            Some(eq("value", "2819c223-7f76-453a-919d-413861904646"))
        );
        let t = p.target(&GROUP_RESOURCE).unwrap();
        assert_eq!(
            (t.attr.name, t.sub.map(|s| s.name), t.is_extension),
            ("members", None, false)
        );
    }

    #[test]
    fn display_round_trips() {
        for s in [
            "emails",
            "name.familyName",
            r#"emails[type eq "work"].value"#,
            r#"addresses[type eq "work" or not (primary eq true)]"#,
            "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:manager.value",
        ] {
            let p = pp(s);
            assert_eq!(p.to_string(), s);
            assert_eq!(pp(&p.to_string()), p);
        }
    }

    #[test]
    fn malformed_paths() {
        // scim2-models test_malformed_patch_paths_are_rejected, plus our own.
        for s in [
            "",
            r#"emails[type eq "work"] and active eq true"#,
            r#"not (emails[type eq "work"])"#,
            r#"(emails[type eq "work"])"#,
            "name..familyName",
            "a.b.c",
            "123invalid",
            "invalid@path",
            "nosuch",
            "name.nosuch",
            r#"emails.type[type eq "work"].value"#,
            r#"userName[value eq "x"]"#,
            r#"name[givenName eq "x"]"#,
            r#"emails[type eq "work"].nosuch"#,
            r#"emails[type eq "work"]x"#,
            r#"emails[type eq "work"]."#,
            r#"title pr"#,
            "urn:example:other:2.0:User:userName",
        ] {
            let e = parse_path(&USER_RESOURCE, s).expect_err(s);
            assert_eq!(e.scim_type, Some(ScimType::InvalidPath), "{s}: {e}");
        }
        // Errors inside the brackets are filter errors (RFC 7644 §3.12).
        for s in [
            r#"emails[nosuch eq "x"]"#,
            "emails[type eq]",
            "emails[]",
            r#"emails[type eq "x""#,
            "emails[primary gt true]",
        ] {
            let e = parse_path(&USER_RESOURCE, s).expect_err(s);
            assert_eq!(e.scim_type, Some(ScimType::InvalidFilter), "{s}: {e}");
        }
    }
}
