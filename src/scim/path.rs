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
