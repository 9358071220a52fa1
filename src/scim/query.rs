//! A resolved SCIM filter compiled to the store's condition tree (pure).
//!
//! Indexed columns answer `id`, `userName`, `externalId`, `displayName`, `meta.*`,
//! `active` and group membership; attributes a client maps onto a `users` column (e.g.
//! `name.givenName` → `first_name`) are tested on that column, so a filter sees what a GET
//! shows; everything else is tested inside the stored SCIM document. String comparison
//! follows the attribute's `caseExact` (RFC 7643 §2.2, RFC 7644 §3.4.2.2).
use super::filter::{AttrPath, CompValue, CompareOp, Filter};
use super::mapping::{self, Rule};
use super::schema::{self, AttrType, Attribute, ResourceType};
use super::{ENTERPRISE_USER_SCHEMA, ScimError};
use crate::store::scim::query::{Col, Cond, Doc, Op, UserCol, Value as V};
use chrono::{DateTime, Utc};
use uuid::Uuid;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    User,
    Group,
}

fn op(o: CompareOp) -> Op {
    match o {
        CompareOp::Eq => Op::Eq,
        CompareOp::Ne => Op::Ne,
        CompareOp::Co => Op::Co,
        CompareOp::Sw => Op::Sw,
        CompareOp::Ew => Op::Ew,
        CompareOp::Gt => Op::Gt,
        CompareOp::Ge => Op::Ge,
        CompareOp::Lt => Op::Lt,
        CompareOp::Le => Op::Le,
    }
}

fn rt(kind: Kind) -> &'static ResourceType {
    match kind {
        Kind::User => &schema::USER_RESOURCE,
        Kind::Group => &schema::GROUP_RESOURCE,
    }
}

/// The users column a mapping rule writes, if it is one a filter may use.
fn local_col(local: &str) -> Option<Col> {
    let c = match local {
        "email" => UserCol::Email,
        "username" => UserCol::Username,
        "first_name" => UserCol::FirstName,
        "last_name" => UserCol::LastName,
        "picture_url" => UserCol::PictureUrl,
        other => {
            let key = other.strip_prefix("properties.")?;
            return Some(Col::Json {
                doc: Doc::Properties,
                path: vec![key.to_string()],
            });
        }
    };
    Some(Col::User(c))
}

/// Keys of an attribute inside the stored document.
fn doc_keys(p: &AttrPath) -> Vec<String> {
    let mut keys: Vec<String> = p.urn.iter().cloned().collect();
    keys.push(p.attr.clone());
    keys
}

fn mapping_name(p: &AttrPath) -> String {
    let mut s = match &p.urn {
        Some(u) => format!("{u}:{}", p.attr),
        None => p.attr.clone(),
    };
    if let Some(sub) = &p.sub_attr {
        s.push('.');
        s.push_str(sub);
    }
    s
}

/// Compiles a filter resolved by [`super::filter::parse_for`].
pub fn compile(kind: Kind, rules: &[Rule], f: &Filter) -> Result<Cond, ScimError> {
    Ok(match f {
        Filter::And(a, b) => Cond::And(vec![compile(kind, rules, a)?, compile(kind, rules, b)?]),
        Filter::Or(a, b) => Cond::Or(vec![compile(kind, rules, a)?, compile(kind, rules, b)?]),
        Filter::Not(a) => Cond::Not(Box::new(compile(kind, rules, a)?)),
        Filter::Present { path } => present(kind, rules, path)?,
        Filter::Compare { path, op, value } => compare(kind, rules, path, *op, value)?,
        Filter::ValuePath { path, filter } => value_path(kind, rules, path, filter)?,
    })
}

fn resolved(kind: Kind, path: &AttrPath) -> Result<schema::Resolved<'static>, ScimError> {
    schema::resolve_static(rt(kind), path).map_err(|e| ScimError::invalid_filter(e.detail))
}

/// Where an attribute path is answered.
enum Target {
    Col(Col),
    /// Any element of a multi-valued attribute in the document; `Col::Elem` keys inside.
    Elem {
        array: Vec<String>,
        key: Vec<String>,
    },
    /// Membership tests.
    Member,
    Groups,
    /// `meta.resourceType`: a constant.
    ResourceType,
    /// A column and the document both hold it (a primary email mapped to `users.email`).
    Either(Col, Vec<String>, Vec<String>),
}

fn target(
    kind: Kind,
    rules: &[Rule],
    path: &AttrPath,
) -> Result<(Target, &'static Attribute), ScimError> {
    let r = resolved(kind, path)?;
    let attr = r.target();
    let name = r.attr.name;
    let sub = r.sub.map(|s| s.name);
    let common = schema::common_attribute(name).is_some() && r.schema.id == rt(kind).schema.id
        || matches!(name, "id" | "externalId" | "meta");
    if common && path.urn.is_none() {
        return Ok((
            match (name, sub) {
                ("id", _) => Target::Col(Col::Id),
                ("externalId", _) => Target::Col(Col::ExternalId),
                ("meta", Some("created")) => Target::Col(Col::Created),
                ("meta", Some("lastModified")) => Target::Col(Col::LastModified),
                ("meta", Some("resourceType")) => Target::ResourceType,
                ("meta", _) => {
                    return Err(ScimError::invalid_filter(format!(
                        "filtering on {path} is not supported"
                    )));
                }
                _ => {
                    return Err(ScimError::invalid_filter(format!(
                        "filtering on {path} is not supported"
                    )));
                }
            },
            attr,
        ));
    }
    if kind == Kind::Group {
        return Ok((
            match name {
                "displayName" => Target::Col(Col::DisplayName),
                "members" => Target::Member,
                _ => {
                    return Err(ScimError::invalid_filter(format!(
                        "filtering on {path} is not supported"
                    )));
                }
            },
            attr,
        ));
    }
    let is_core = r.schema.id == schema::USER.id;
    if is_core {
        match name {
            "userName" => return Ok((Target::Col(Col::UserName), attr)),
            "displayName" => return Ok((Target::Col(Col::DisplayName), attr)),
            "active" => return Ok((Target::Col(Col::Active), attr)),
            "groups" => return Ok((Target::Groups, attr)),
            "password" => {
                return Err(ScimError::invalid_filter("password cannot be filtered on"));
            }
            _ => {}
        }
    }
    let canonical = r.canonical_path(rt(kind));
    let full = mapping_name(&canonical);
    let keys = doc_keys(&canonical);
    // A mapped scalar answered by its users column.
    if let Some(rule) = rules
        .iter()
        .rev()
        .find(|rule| rule.scim.eq_ignore_ascii_case(&full) && rule.local != "enabled")
        && let Some(col) = local_col(&rule.local)
    {
        return Ok((Target::Col(col), attr));
    }
    if r.attr.multi_valued {
        let key: Vec<String> = sub.map(|s| vec![s.to_string()]).unwrap_or_default();
        // `emails[primary]` → email: the column holds the primary value, the document all.
        let primary_rule = format!("{name}[primary]");
        if (sub.is_none() || sub == Some("value"))
            && let Some(rule) = rules
                .iter()
                .rev()
                .find(|rule| rule.scim.eq_ignore_ascii_case(&primary_rule))
            && let Some(col) = local_col(&rule.local)
        {
            return Ok((Target::Either(col, keys, key), attr));
        }
        return Ok((Target::Elem { array: keys, key }, attr));
    }
    let mut path_keys = keys;
    if let Some(s) = sub {
        path_keys.push(s.to_string());
    }
    let _ = ENTERPRISE_USER_SCHEMA;
    Ok((
        Target::Col(Col::Json {
            doc: Doc::Attributes,
            path: path_keys,
        }),
        attr,
    ))
}

fn parse_time(s: &str) -> Result<DateTime<Utc>, ScimError> {
    DateTime::parse_from_rfc3339(s)
        .map(|t| t.with_timezone(&Utc))
        .map_err(|_| ScimError::invalid_filter(format!("`{s}` is not an RFC 3339 dateTime")))
}

/// The bound value for a comparison with `attr`; `None` when it can never match
/// (e.g. an `id` that is not a UUID).
fn value_for(col: &Col, attr: &Attribute, v: &CompValue) -> Result<Option<V>, ScimError> {
    Ok(match v {
        CompValue::Str(s) => match col {
            Col::Id => match Uuid::parse_str(s) {
                Ok(u) => Some(V::Uuid(u)),
                Err(_) => None,
            },
            Col::Created | Col::LastModified => Some(V::Time(parse_time(s)?)),
            _ if attr.ty == AttrType::DateTime => Some(V::Time(parse_time(s)?)),
            _ => Some(V::Text(s.clone())),
        },
        CompValue::Bool(b) => Some(V::Bool(*b)),
        CompValue::Num(n) => match n.as_f64() {
            Some(f) => Some(V::Num(f)),
            None => return Err(ScimError::invalid_filter("number out of range")),
        },
        CompValue::Null => None,
    })
}

fn cmp(col: Col, attr: &Attribute, o: CompareOp, v: &CompValue) -> Result<Cond, ScimError> {
    if matches!(v, CompValue::Null) {
        // `eq null` is "not present", `ne null` "present" (RFC 7644 §3.4.2.2).
        let present = Cond::Present(col);
        return Ok(match o {
            CompareOp::Eq => Cond::Not(Box::new(present)),
            CompareOp::Ne => present,
            _ => {
                return Err(ScimError::invalid_filter(
                    "null can only be compared with eq or ne",
                ));
            }
        });
    }
    let Some(value) = value_for(&col, attr, v)? else {
        return Ok(Cond::Const(o == CompareOp::Ne));
    };
    let fold = attr.ty == AttrType::String && !attr.case_exact && matches!(value, V::Text(_));
    Ok(Cond::Cmp {
        col,
        op: op(o),
        value,
        fold,
    })
}

fn compare(
    kind: Kind,
    rules: &[Rule],
    path: &AttrPath,
    o: CompareOp,
    v: &CompValue,
) -> Result<Cond, ScimError> {
    let (t, attr) = target(kind, rules, path)?;
    match t {
        Target::Col(col) => cmp(col, attr, o, v),
        Target::Elem { array, key } => Ok(Cond::AnyElem {
            doc: Doc::Attributes,
            path: array,
            elem: Box::new(cmp(Col::Elem(key), attr, o, v)?),
        }),
        Target::Either(col, array, key) => Ok(Cond::Or(vec![
            cmp(col, attr, o, v)?,
            Cond::AnyElem {
                doc: Doc::Attributes,
                path: array,
                elem: Box::new(cmp(Col::Elem(key), attr, o, v)?),
            },
        ])),
        Target::ResourceType => {
            let want = match kind {
                Kind::User => "User",
                Kind::Group => "Group",
            };
            let hit = matches!(v, CompValue::Str(s) if s.eq_ignore_ascii_case(want));
            Ok(Cond::Const(match o {
                CompareOp::Eq => hit,
                CompareOp::Ne => !hit,
                _ => false,
            }))
        }
        Target::Member | Target::Groups => membership(kind, path, o, v),
    }
}

fn membership(kind: Kind, path: &AttrPath, o: CompareOp, v: &CompValue) -> Result<Cond, ScimError> {
    let sub = path.sub_attr.as_deref().unwrap_or("value");
    if !sub.eq_ignore_ascii_case("value") || !matches!(o, CompareOp::Eq | CompareOp::Ne) {
        return Err(ScimError::invalid_filter(format!(
            "{path} supports only `value eq` and `value ne`"
        )));
    }
    let id = match v {
        CompValue::Str(s) => Uuid::parse_str(s).ok(),
        _ => {
            return Err(ScimError::invalid_filter(format!(
                "{path} compares with an id string"
            )));
        }
    };
    let Some(id) = id else {
        return Ok(Cond::Const(o == CompareOp::Ne));
    };
    let c = match kind {
        Kind::Group => Cond::HasMember(Some(id)),
        Kind::User => Cond::InGroup(Some(id)),
    };
    Ok(if o == CompareOp::Ne {
        Cond::Not(Box::new(c))
    } else {
        c
    })
}

fn present(kind: Kind, rules: &[Rule], path: &AttrPath) -> Result<Cond, ScimError> {
    let (t, _) = target(kind, rules, path)?;
    Ok(match t {
        Target::Col(col) => Cond::Present(col),
        Target::Elem { array, key } => Cond::AnyElem {
            doc: Doc::Attributes,
            path: array,
            elem: Box::new(Cond::Present(Col::Elem(key))),
        },
        Target::Either(col, array, key) => Cond::Or(vec![
            Cond::Present(col),
            Cond::AnyElem {
                doc: Doc::Attributes,
                path: array,
                elem: Box::new(Cond::Present(Col::Elem(key))),
            },
        ]),
        Target::ResourceType => Cond::Const(true),
        Target::Member => Cond::HasMember(None),
        Target::Groups => Cond::InGroup(None),
    })
}

/// `emails[type eq "work" and value co "@example.com"]`: one element satisfies the whole
/// inner filter.
fn value_path(
    kind: Kind,
    rules: &[Rule],
    path: &AttrPath,
    inner: &Filter,
) -> Result<Cond, ScimError> {
    let r = resolved(kind, path)?;
    if !r.attr.multi_valued && r.attr.ty != AttrType::Complex {
        return Err(ScimError::invalid_filter(format!(
            "{path} is not a complex or multi-valued attribute"
        )));
    }
    if kind == Kind::Group && r.attr.name == "members"
        || kind == Kind::User && r.attr.name == "groups"
    {
        // Only `[value eq "id"]` is answerable from the membership table.
        return match inner {
            Filter::Compare {
                path: p,
                op: o,
                value,
            } => {
                let member_path = AttrPath {
                    urn: None,
                    attr: r.attr.name.to_string(),
                    sub_attr: Some(p.attr.clone()),
                };
                membership(kind, &member_path, *o, value)
            }
            Filter::Present { .. } => Ok(match kind {
                Kind::Group => Cond::HasMember(None),
                Kind::User => Cond::InGroup(None),
            }),
            _ => Err(ScimError::invalid_filter(format!(
                "{path}[…] supports only `value eq \"id\"`"
            ))),
        };
    }
    let canonical = r.canonical_path(rt(kind));
    let keys = doc_keys(&canonical);
    let _ = rules;
    if !r.attr.multi_valued {
        // A single complex attribute: its sub-attributes as paths.
        return element(r.attr, inner, &|key| Col::Json {
            doc: Doc::Attributes,
            path: keys.iter().cloned().chain(std::iter::once(key)).collect(),
        });
    }
    Ok(Cond::AnyElem {
        doc: Doc::Attributes,
        path: keys,
        elem: Box::new(element(r.attr, inner, &|key| Col::Elem(vec![key]))?),
    })
}

fn element(
    parent: &'static Attribute,
    f: &Filter,
    col: &dyn Fn(String) -> Col,
) -> Result<Cond, ScimError> {
    let sub = |p: &AttrPath| -> Result<&'static Attribute, ScimError> {
        parent.sub(&p.attr).ok_or_else(|| {
            ScimError::invalid_filter(format!("{} has no sub-attribute {}", parent.name, p.attr))
        })
    };
    Ok(match f {
        Filter::And(a, b) => Cond::And(vec![element(parent, a, col)?, element(parent, b, col)?]),
        Filter::Or(a, b) => Cond::Or(vec![element(parent, a, col)?, element(parent, b, col)?]),
        Filter::Not(a) => Cond::Not(Box::new(element(parent, a, col)?)),
        Filter::Present { path } => {
            let a = sub(path)?;
            Cond::Present(col(a.name.to_string()))
        }
        Filter::Compare { path, op: o, value } => {
            let a = sub(path)?;
            cmp(col(a.name.to_string()), a, *o, value)?
        }
        Filter::ValuePath { .. } => {
            return Err(ScimError::invalid_filter("value paths cannot nest"));
        }
    })
}

/// The sort column for `sortBy` (RFC 7644 §3.4.2.3): `(column, fold)`.
pub fn sort_col(kind: Kind, rules: &[Rule], sort_by: &str) -> Result<(Col, bool), ScimError> {
    let path = super::filter::parse_attr_path(sort_by)
        .map_err(|e| ScimError::invalid_value(format!("sortBy: {}", e.detail)))?;
    let (t, attr) = target(kind, rules, &path)
        .map_err(|e| ScimError::invalid_value(format!("sortBy: {}", e.detail)))?;
    let fold = attr.ty == AttrType::String && !attr.case_exact;
    match t {
        Target::Col(c) => Ok((c, fold)),
        Target::Either(c, _, _) => Ok((c, fold)),
        Target::Elem { .. } | Target::Member | Target::Groups | Target::ResourceType => {
            Err(ScimError::invalid_value(format!(
                "sortBy: {sort_by} is multi-valued and cannot order results"
            )))
        }
    }
}

/// Default rules for tests and callers without a client mapping.
pub fn default_rules() -> Vec<Rule> {
    mapping::defaults("email")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scim::filter::parse_for;

    fn user(f: &str) -> Cond {
        let flt = parse_for(&schema::USER_RESOURCE, f).unwrap();
        compile(Kind::User, &default_rules(), &flt).unwrap()
    }

    #[test]
    fn indexed_attributes_use_columns() {
        assert_eq!(
            user(r#"userName eq "Bjensen""#),
            Cond::Cmp {
                col: Col::UserName,
                op: Op::Eq,
                value: V::Text("Bjensen".into()),
                fold: true
            }
        );
        assert!(matches!(
            user(r#"externalId eq "A1""#),
            Cond::Cmp {
                col: Col::ExternalId,
                fold: false,
                ..
            }
        ));
        assert!(matches!(
            user(r#"meta.lastModified gt "2011-05-13T04:42:34Z""#),
            Cond::Cmp {
                col: Col::LastModified,
                op: Op::Gt,
                value: V::Time(_),
                ..
            }
        ));
        assert_eq!(user(r#"id eq "not-a-uuid""#), Cond::Const(false));
    }

    #[test]
    fn mapped_attributes_use_their_users_column() {
        assert!(matches!(
            user(r#"name.givenName sw "Bar""#),
            Cond::Cmp {
                col: Col::User(UserCol::FirstName),
                op: Op::Sw,
                fold: true,
                ..
            }
        ));
        let c = user(r#"emails.value eq "a@example.com""#);
        let Cond::Or(parts) = c else { panic!("{c:?}") };
        assert!(matches!(
            parts[0],
            Cond::Cmp {
                col: Col::User(UserCol::Email),
                ..
            }
        ));
        assert!(matches!(parts[1], Cond::AnyElem { .. }));
        assert!(matches!(
            user(r#"urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:department eq "X""#),
            Cond::Cmp {
                col: Col::Json {
                    doc: Doc::Properties,
                    ..
                },
                ..
            }
        ));
    }

    #[test]
    fn unmapped_attributes_read_the_document() {
        let c = user(r#"title pr and not (nickName eq null)"#);
        let Cond::And(parts) = c else { panic!() };
        assert!(
            matches!(&parts[0], Cond::Present(Col::Json { doc: Doc::Attributes, path }) if path == &vec!["title".to_string()])
        );
        let c = user(r#"addresses[type eq "work" and postalCode sw "9"]"#);
        assert!(
            matches!(c, Cond::AnyElem { ref path, .. } if path == &vec!["addresses".to_string()])
        );
    }

    #[test]
    fn nulls_and_membership() {
        assert!(matches!(user(r#"title eq null"#), Cond::Not(_)));
        let g = parse_for(
            &schema::GROUP_RESOURCE,
            r#"members[value eq "0190b2d4-0000-7000-8000-000000000001"]"#,
        )
        .unwrap();
        assert!(matches!(
            compile(Kind::Group, &[], &g).unwrap(),
            Cond::HasMember(Some(_))
        ));
        let g = parse_for(&schema::GROUP_RESOURCE, r#"members.value eq "x""#).unwrap();
        assert_eq!(compile(Kind::Group, &[], &g).unwrap(), Cond::Const(false));
    }
}
