//! SCIM schemas (RFC 7643 §2, §4, §7, §8.7.1): the definitions that drive
//! validation, projection, filters, PATCH and the discovery endpoints.

use serde_json::{Map, Number, Value, json};

use super::error::ScimError;
use super::filter::AttrPath;
use super::{
    ENTERPRISE_USER_SCHEMA, GROUP_SCHEMA, RESOURCE_TYPE_SCHEMA, SCHEMA_SCHEMA, USER_SCHEMA,
};

/// Attribute data types (RFC 7643 §2.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AttrType {
    String,
    Boolean,
    Decimal,
    Integer,
    DateTime,
    Reference,
    Complex,
    Binary,
}

impl AttrType {
    pub fn as_str(self) -> &'static str {
        match self {
            AttrType::String => "string",
            AttrType::Boolean => "boolean",
            AttrType::Decimal => "decimal",
            AttrType::Integer => "integer",
            AttrType::DateTime => "dateTime",
            AttrType::Reference => "reference",
            AttrType::Complex => "complex",
            AttrType::Binary => "binary",
        }
    }
}

/// RFC 7643 §7 "mutability".
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mutability {
    ReadOnly,
    ReadWrite,
    Immutable,
    WriteOnly,
}

impl Mutability {
    pub fn as_str(self) -> &'static str {
        match self {
            Mutability::ReadOnly => "readOnly",
            Mutability::ReadWrite => "readWrite",
            Mutability::Immutable => "immutable",
            Mutability::WriteOnly => "writeOnly",
        }
    }
}

/// RFC 7643 §7 "returned".
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Returned {
    Always,
    Never,
    Default,
    Request,
}

impl Returned {
    pub fn as_str(self) -> &'static str {
        match self {
            Returned::Always => "always",
            Returned::Never => "never",
            Returned::Default => "default",
            Returned::Request => "request",
        }
    }
}

/// RFC 7643 §7 "uniqueness".
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Uniqueness {
    None,
    Server,
    Global,
}

impl Uniqueness {
    pub fn as_str(self) -> &'static str {
        match self {
            Uniqueness::None => "none",
            Uniqueness::Server => "server",
            Uniqueness::Global => "global",
        }
    }
}

/// An attribute definition with its characteristics (RFC 7643 §2.2, §7).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Attribute {
    pub name: &'static str,
    pub ty: AttrType,
    pub multi_valued: bool,
    pub required: bool,
    pub case_exact: bool,
    pub mutability: Mutability,
    pub returned: Returned,
    pub uniqueness: Uniqueness,
    pub canonical_values: &'static [&'static str],
    pub reference_types: &'static [&'static str],
    pub sub_attributes: &'static [Attribute],
    pub description: &'static str,
}

impl Attribute {
    /// The RFC 7643 §2.2 defaults: single-valued, optional, caseExact false
    /// (true for references), readWrite, returned default, uniqueness none.
    pub const fn new(name: &'static str, ty: AttrType, description: &'static str) -> Self {
        Attribute {
            name,
            ty,
            multi_valued: false,
            required: false,
            // §2.3.7 (errata 6001): "A reference is case exact."
            case_exact: matches!(ty, AttrType::Reference),
            mutability: Mutability::ReadWrite,
            returned: Returned::Default,
            uniqueness: Uniqueness::None,
            canonical_values: &[],
            reference_types: &[],
            sub_attributes: &[],
            description,
        }
    }
    const fn string(name: &'static str, description: &'static str) -> Self {
        Self::new(name, AttrType::String, description)
    }
    const fn multi(mut self) -> Self {
        self.multi_valued = true;
        self
    }
    const fn required(mut self) -> Self {
        self.required = true;
        self
    }
    const fn case_exact(mut self) -> Self {
        self.case_exact = true;
        self
    }
    const fn mutability(mut self, m: Mutability) -> Self {
        self.mutability = m;
        self
    }
    const fn returned(mut self, r: Returned) -> Self {
        self.returned = r;
        self
    }
    const fn unique(mut self, u: Uniqueness) -> Self {
        self.uniqueness = u;
        self
    }
    const fn canonical(mut self, v: &'static [&'static str]) -> Self {
        self.canonical_values = v;
        self
    }
    const fn refs(mut self, v: &'static [&'static str]) -> Self {
        self.reference_types = v;
        self
    }
    const fn subs(mut self, v: &'static [Attribute]) -> Self {
        self.sub_attributes = v;
        self
    }

    /// Sub-attribute by name, case-insensitive (RFC 7643 §2.1).
    pub fn sub(&self, name: &str) -> Option<&'static Attribute> {
        self.sub_attributes
            .iter()
            .find(|a| a.name.eq_ignore_ascii_case(name))
    }

    pub fn is_complex(&self) -> bool {
        self.ty == AttrType::Complex
    }
}

/// A schema (RFC 7643 §7).
#[derive(Debug, PartialEq, Eq)]
pub struct Schema {
    pub id: &'static str,
    pub name: &'static str,
    pub description: &'static str,
    pub attributes: &'static [Attribute],
}

impl Schema {
    /// Attribute by name, case-insensitive.
    pub fn attribute(&self, name: &str) -> Option<&'static Attribute> {
        self.attributes
            .iter()
            .find(|a| a.name.eq_ignore_ascii_case(name))
    }
}

/// A resource type (RFC 7643 §6).
#[derive(Debug, PartialEq, Eq)]
pub struct ResourceType {
    pub id: &'static str,
    pub endpoint: &'static str,
    pub schema: &'static Schema,
    /// Schema extensions and whether each is required.
    pub extensions: &'static [(&'static Schema, bool)],
}

impl ResourceType {
    /// The core schema or a declared extension, by URN (case-insensitive).
    pub fn schema_for_urn(&self, urn: &str) -> Option<&'static Schema> {
        if self.schema.id.eq_ignore_ascii_case(urn) {
            return Some(self.schema);
        }
        self.extensions
            .iter()
            .map(|(s, _)| *s)
            .find(|s| s.id.eq_ignore_ascii_case(urn))
    }

    /// An extension schema declared by this resource type.
    pub fn extension(&self, urn: &str) -> Option<&'static Schema> {
        self.extensions
            .iter()
            .map(|(s, _)| *s)
            .find(|s| s.id.eq_ignore_ascii_case(urn))
    }
}

use AttrType as T;
use Mutability as M;

// ---- common attributes (RFC 7643 §3.1) ----

const META_SUBS: &[Attribute] = &[
    Attribute::string(
        "resourceType",
        "The name of the resource type of the resource.",
    )
    .case_exact()
    .mutability(M::ReadOnly),
    Attribute::new(
        "created",
        T::DateTime,
        "The DateTime that the resource was added to the service provider.",
    )
    .mutability(M::ReadOnly),
    Attribute::new(
        "lastModified",
        T::DateTime,
        "The most recent DateTime that the details of this resource were updated.",
    )
    .mutability(M::ReadOnly),
    Attribute::new(
        "location",
        T::Reference,
        "The URI of the resource being returned.",
    )
    .case_exact()
    .mutability(M::ReadOnly)
    .refs(&["uri"]),
    Attribute::string("version", "The version of the resource being returned.")
        .case_exact()
        .mutability(M::ReadOnly),
];

/// `schemas`, `id`, `externalId` and `meta`, shared by every resource (RFC 7643 §3).
/// They belong to no schema and are not listed in `/Schemas`.
pub static COMMON_ATTRIBUTES: &[Attribute] = &[
    Attribute::new("schemas", T::Reference, "The schemas of the resource.")
        .multi()
        .required()
        .case_exact()
        .returned(Returned::Always)
        .refs(&["uri"]),
    Attribute::string("id", "A unique identifier for a SCIM resource.")
        .case_exact()
        .mutability(M::ReadOnly)
        .returned(Returned::Always)
        .unique(Uniqueness::Server),
    Attribute::string(
        "externalId",
        "An identifier for the resource as defined by the provisioning client.",
    )
    .case_exact(),
    Attribute::new(
        "meta",
        T::Complex,
        "A complex attribute containing resource metadata.",
    )
    .mutability(M::ReadOnly)
    .subs(META_SUBS),
];

/// A common attribute by name (case-insensitive).
pub fn common_attribute(name: &str) -> Option<&'static Attribute> {
    COMMON_ATTRIBUTES
        .iter()
        .find(|a| a.name.eq_ignore_ascii_case(name))
}

// ---- User (RFC 7643 §4.1, §8.7.1) ----

const fn value_sub(ty: AttrType, description: &'static str) -> Attribute {
    Attribute::new("value", ty, description)
}
const fn display_sub() -> Attribute {
    Attribute::string(
        "display",
        "A human-readable name, primarily used for display purposes.",
    )
}
const fn primary_sub() -> Attribute {
    Attribute::new(
        "primary",
        T::Boolean,
        "A Boolean value indicating the 'primary' or preferred attribute value.",
    )
}
const fn type_sub(canonical: &'static [&'static str]) -> Attribute {
    Attribute::string("type", "A label indicating the attribute's function.").canonical(canonical)
}

const NAME_SUBS: &[Attribute] = &[
    Attribute::string("formatted", "The full name, formatted for display."),
    Attribute::string("familyName", "The family name of the User."),
    Attribute::string("givenName", "The given name of the User."),
    Attribute::string("middleName", "The middle name(s) of the User."),
    Attribute::string("honorificPrefix", "The honorific prefix(es) of the User."),
    Attribute::string("honorificSuffix", "The honorific suffix(es) of the User."),
];
const EMAIL_SUBS: &[Attribute] = &[
    value_sub(T::String, "Email addresses for the user."),
    display_sub(),
    type_sub(&["work", "home", "other"]),
    primary_sub(),
];
const PHONE_SUBS: &[Attribute] = &[
    value_sub(T::String, "Phone number of the User."),
    display_sub(),
    type_sub(&["work", "home", "mobile", "fax", "pager", "other"]),
    primary_sub(),
];
const IMS_SUBS: &[Attribute] = &[
    value_sub(T::String, "Instant messaging address for the User."),
    display_sub(),
    type_sub(&["aim", "gtalk", "icq", "xmpp", "msn", "skype", "qq", "yahoo"]),
    primary_sub(),
];
const PHOTO_SUBS: &[Attribute] = &[
    value_sub(T::Reference, "URL of a photo of the User.").refs(&["external"]),
    display_sub(),
    type_sub(&["photo", "thumbnail"]),
    primary_sub(),
];
const ADDRESS_SUBS: &[Attribute] = &[
    Attribute::string(
        "formatted",
        "The full mailing address, formatted for display.",
    ),
    Attribute::string("streetAddress", "The full street address component."),
    Attribute::string("locality", "The city or locality component."),
    Attribute::string("region", "The state or region component."),
    Attribute::string("postalCode", "The zip code or postal code component."),
    Attribute::string("country", "The country name component."),
    type_sub(&["work", "home", "other"]),
    primary_sub(),
];
const GROUPS_SUBS: &[Attribute] = &[
    // Resource ids are case-exact (RFC 7643 §3.1, errata 8472).
    value_sub(T::String, "The identifier of the User's group.")
        .case_exact()
        .mutability(M::ReadOnly),
    Attribute::new(
        "$ref",
        T::Reference,
        "The URI of the corresponding 'Group' resource.",
    )
    .mutability(M::ReadOnly)
    .refs(&["User", "Group"]),
    display_sub().mutability(M::ReadOnly),
    type_sub(&["direct", "indirect"]).mutability(M::ReadOnly),
];
const GENERIC_SUBS: &[Attribute] = &[
    value_sub(T::String, "The value of the attribute."),
    display_sub(),
    type_sub(&[]),
    primary_sub(),
];
const X509_SUBS: &[Attribute] = &[
    value_sub(T::Binary, "The value of an X.509 certificate."),
    display_sub(),
    type_sub(&[]),
    primary_sub(),
];

const USER_ATTRIBUTES: &[Attribute] = &[
    Attribute::string(
        "userName",
        "Unique identifier for the User, typically used by the user to directly authenticate.",
    )
    .required()
    .unique(Uniqueness::Server),
    Attribute::new(
        "name",
        T::Complex,
        "The components of the user's real name.",
    )
    .subs(NAME_SUBS),
    Attribute::string(
        "displayName",
        "The name of the User, suitable for display to end-users.",
    ),
    Attribute::string(
        "nickName",
        "The casual way to address the user in real life.",
    ),
    Attribute::new(
        "profileUrl",
        T::Reference,
        "A fully qualified URL pointing to a page representing the User's online profile.",
    )
    .refs(&["external"]),
    Attribute::string("title", "The user's title, such as \"Vice President\"."),
    Attribute::string(
        "userType",
        "Used to identify the relationship between the organization and the user.",
    ),
    Attribute::string(
        "preferredLanguage",
        "Indicates the User's preferred written or spoken language.",
    ),
    Attribute::string(
        "locale",
        "Used to indicate the User's default location for purposes of localizing items.",
    ),
    Attribute::string(
        "timezone",
        "The User's time zone in the 'Olson' time zone database format.",
    ),
    Attribute::new(
        "active",
        T::Boolean,
        "A Boolean value indicating the User's administrative status.",
    ),
    Attribute::string("password", "The User's cleartext password.")
        .mutability(M::WriteOnly)
        .returned(Returned::Never),
    Attribute::new("emails", T::Complex, "Email addresses for the user.")
        .multi()
        .subs(EMAIL_SUBS),
    Attribute::new("phoneNumbers", T::Complex, "Phone numbers for the User.")
        .multi()
        .subs(PHONE_SUBS),
    Attribute::new(
        "ims",
        T::Complex,
        "Instant messaging addresses for the User.",
    )
    .multi()
    .subs(IMS_SUBS),
    Attribute::new("photos", T::Complex, "URLs of photos of the User.")
        .multi()
        .subs(PHOTO_SUBS),
    Attribute::new(
        "addresses",
        T::Complex,
        "A physical mailing address for this User.",
    )
    .multi()
    .subs(ADDRESS_SUBS),
    Attribute::new(
        "groups",
        T::Complex,
        "A list of groups to which the user belongs.",
    )
    .multi()
    .mutability(M::ReadOnly)
    .subs(GROUPS_SUBS),
    Attribute::new(
        "entitlements",
        T::Complex,
        "A list of entitlements for the User.",
    )
    .multi()
    .subs(GENERIC_SUBS),
    Attribute::new("roles", T::Complex, "A list of roles for the User.")
        .multi()
        .subs(GENERIC_SUBS),
    Attribute::new(
        "x509Certificates",
        T::Complex,
        "A list of certificates issued to the User.",
    )
    .multi()
    .subs(X509_SUBS),
];

pub static USER: Schema = Schema {
    id: USER_SCHEMA,
    name: "User",
    description: "User Account",
    attributes: USER_ATTRIBUTES,
};

// ---- Enterprise User extension (RFC 7643 §4.3) ----

const MANAGER_SUBS: &[Attribute] = &[
    value_sub(
        T::String,
        "The id of the SCIM resource representing the User's manager.",
    )
    .case_exact(),
    Attribute::new(
        "$ref",
        T::Reference,
        "The URI of the SCIM resource representing the User's manager.",
    )
    .refs(&["User"]),
    Attribute::string("displayName", "The displayName of the User's manager.")
        .mutability(M::ReadOnly),
];

pub static ENTERPRISE_USER: Schema = Schema {
    id: ENTERPRISE_USER_SCHEMA,
    name: "EnterpriseUser",
    description: "Enterprise User",
    attributes: &[
        Attribute::string(
            "employeeNumber",
            "Numeric or alphanumeric identifier assigned to a person.",
        ),
        Attribute::string("costCenter", "Identifies the name of a cost center."),
        Attribute::string("organization", "Identifies the name of an organization."),
        Attribute::string("division", "Identifies the name of a division."),
        Attribute::string("department", "Identifies the name of a department."),
        Attribute::new("manager", T::Complex, "The User's manager.").subs(MANAGER_SUBS),
    ],
};

// ---- Group (RFC 7643 §4.2, §8.7.1) ----

const MEMBER_SUBS: &[Attribute] = &[
    // Resource ids are case-exact (RFC 7643 §3.1, errata 8472).
    value_sub(T::String, "Identifier of the member of this Group.")
        .case_exact()
        .mutability(M::Immutable),
    Attribute::new(
        "$ref",
        T::Reference,
        "The URI corresponding to a SCIM resource that is a member of this Group.",
    )
    .mutability(M::Immutable)
    .refs(&["User", "Group"]),
    Attribute::string(
        "type",
        "A label indicating the type of resource, e.g., 'User' or 'Group'.",
    )
    .mutability(M::Immutable)
    .canonical(&["User", "Group"]),
    display_sub().mutability(M::ReadOnly),
];

pub static GROUP: Schema = Schema {
    id: GROUP_SCHEMA,
    name: "Group",
    description: "Group",
    attributes: &[
        // §4.2: "displayName ... REQUIRED."
        Attribute::string("displayName", "A human-readable name for the Group.").required(),
        Attribute::new("members", T::Complex, "A list of members of the Group.")
            .multi()
            .subs(MEMBER_SUBS),
    ],
};

pub static USER_RESOURCE: ResourceType = ResourceType {
    id: "User",
    endpoint: "/Users",
    schema: &USER,
    extensions: &[(&ENTERPRISE_USER, false)],
};

pub static GROUP_RESOURCE: ResourceType = ResourceType {
    id: "Group",
    endpoint: "/Groups",
    schema: &GROUP,
    extensions: &[],
};

/// All resource types, in discovery order.
pub static RESOURCE_TYPES: &[&ResourceType] = &[&USER_RESOURCE, &GROUP_RESOURCE];
/// All schemas, in discovery order.
pub static SCHEMAS: &[&Schema] = &[&USER, &ENTERPRISE_USER, &GROUP];

/// Resource type by id ("User", "Group"), case-insensitive.
pub fn resource_type(id: &str) -> Option<&'static ResourceType> {
    RESOURCE_TYPES
        .iter()
        .copied()
        .find(|r| r.id.eq_ignore_ascii_case(id))
}

/// Schema by URN, case-insensitive.
pub fn schema_by_id(id: &str) -> Option<&'static Schema> {
    SCHEMAS
        .iter()
        .copied()
        .find(|s| s.id.eq_ignore_ascii_case(id))
}

fn attribute_json(a: &Attribute) -> Value {
    let mut o = Map::new();
    o.insert("name".into(), a.name.into());
    o.insert("type".into(), a.ty.as_str().into());
    o.insert("multiValued".into(), a.multi_valued.into());
    o.insert("description".into(), a.description.into());
    o.insert("required".into(), a.required.into());
    if !a.is_complex() {
        o.insert("caseExact".into(), a.case_exact.into());
    }
    if !a.canonical_values.is_empty() {
        o.insert("canonicalValues".into(), json!(a.canonical_values));
    }
    if !a.reference_types.is_empty() {
        o.insert("referenceTypes".into(), json!(a.reference_types));
    }
    o.insert("mutability".into(), a.mutability.as_str().into());
    o.insert("returned".into(), a.returned.as_str().into());
    // §8.7.1 lists "uniqueness" for complex attributes too, but not "caseExact".
    o.insert("uniqueness".into(), a.uniqueness.as_str().into());
    if a.is_complex() {
        o.insert(
            "subAttributes".into(),
            Value::Array(a.sub_attributes.iter().map(attribute_json).collect()),
        );
    }
    Value::Object(o)
}

fn trim_base(base_url: &str) -> &str {
    base_url.trim_end_matches('/')
}

/// The `/Schemas/{id}` representation (RFC 7643 §7, §8.7.1).
pub fn schema_json(s: &Schema, base_url: &str) -> Value {
    json!({
        "schemas": [SCHEMA_SCHEMA],
        "id": s.id,
        "name": s.name,
        "description": s.description,
        "attributes": s.attributes.iter().map(attribute_json).collect::<Vec<_>>(),
        "meta": {
            "resourceType": "Schema",
            "location": format!("{}/Schemas/{}", trim_base(base_url), s.id),
        }
    })
}

/// The `/ResourceTypes/{id}` representation (RFC 7643 §6, §8.6).
pub fn resource_type_json(r: &ResourceType, base_url: &str) -> Value {
    let extensions: Vec<Value> = r
        .extensions
        .iter()
        .map(|(s, required)| json!({"schema": s.id, "required": required}))
        .collect();
    let mut v = json!({
        "schemas": [RESOURCE_TYPE_SCHEMA],
        "id": r.id,
        "name": r.id,
        "endpoint": r.endpoint,
        "description": r.schema.description,
        "schema": r.schema.id,
        "meta": {
            "resourceType": "ResourceType",
            "location": format!("{}/ResourceTypes/{}", trim_base(base_url), r.id),
        }
    });
    if !extensions.is_empty()
        && let Some(o) = v.as_object_mut()
    {
        o.insert("schemaExtensions".into(), Value::Array(extensions));
    }
    v
}

// ---- path resolution ----

/// A resolved attribute path: the schema holding the attribute (the core schema
/// for common attributes), the attribute and optional sub-attribute.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Resolved<'a> {
    pub schema: &'a Schema,
    pub attr: &'a Attribute,
    pub sub: Option<&'a Attribute>,
}

impl<'a> Resolved<'a> {
    /// True when the attribute lives in an extension (nested under its URN).
    pub fn is_extension(&self, rt: &ResourceType) -> bool {
        !std::ptr::eq(self.schema, rt.schema)
    }

    /// The canonical path: URN set only for extension attributes.
    pub fn canonical_path(&self, rt: &ResourceType) -> AttrPath {
        AttrPath {
            urn: self.is_extension(rt).then(|| self.schema.id.to_string()),
            attr: self.attr.name.to_string(),
            sub_attr: self.sub.map(|s| s.name.to_string()),
        }
    }

    /// The attribute the path ends on.
    pub fn target(&self) -> &'a Attribute {
        self.sub.unwrap_or(self.attr)
    }
}

/// Resolve an attribute path against a resource type (RFC 7644 §3.10):
/// case-insensitive names and URN prefixes; common attributes included.
/// Unknown attribute → 400 `invalidPath`.
pub fn resolve<'a>(rt: &'a ResourceType, path: &AttrPath) -> Result<Resolved<'a>, ScimError> {
    resolve_static(rt, path)
}

/// [`resolve`] with the `'static` lifetime of the schema tables.
pub fn resolve_static(rt: &ResourceType, path: &AttrPath) -> Result<Resolved<'static>, ScimError> {
    let (schema, attr_name, sub_name): (&'static Schema, &str, Option<&str>) = match &path.urn {
        None => (rt.schema, path.attr.as_str(), path.sub_attr.as_deref()),
        Some(urn) => match rt.schema_for_urn(urn) {
            Some(s) => (s, path.attr.as_str(), path.sub_attr.as_deref()),
            None => {
                // Entra sends "urn:…:enterprise:2.0:User.manager": the last
                // segment before the dot belongs to the URN.
                let joined = format!("{}:{}", urn, path.attr);
                match (rt.schema_for_urn(&joined), &path.sub_attr) {
                    (Some(s), Some(a)) => (s, a.as_str(), None),
                    _ => {
                        return Err(ScimError::invalid_path(format!(
                            "unknown schema \"{urn}\" for resource type {}",
                            rt.id
                        )));
                    }
                }
            }
        },
    };
    let attr = schema
        .attribute(attr_name)
        .or_else(|| {
            std::ptr::eq(schema, rt.schema)
                .then(|| common_attribute(attr_name))
                .flatten()
        })
        .ok_or_else(|| {
            ScimError::invalid_path(format!(
                "unknown attribute \"{attr_name}\" in schema {}",
                schema.id
            ))
        })?;
    let sub = match sub_name {
        None => None,
        Some(s) => Some(attr.sub(s).ok_or_else(|| {
            ScimError::invalid_path(format!(
                "unknown sub-attribute \"{s}\" of \"{}\"",
                attr.name
            ))
        })?),
    };
    Ok(Resolved { schema, attr, sub })
}

// ---- value coercion (shared by normalize and PATCH) ----

fn type_err(attr: &Attribute, what: &str) -> ScimError {
    ScimError::invalid_value(format!(
        "attribute \"{}\" must be {} ({what})",
        attr.name,
        attr.ty.as_str()
    ))
}

/// Parse a dateTime (RFC 7643 §2.3.5, xsd:dateTime): RFC 3339, or without a
/// zone offset, which is read as UTC.
pub fn parse_datetime(s: &str) -> Option<chrono::DateTime<chrono::FixedOffset>> {
    let s = s.trim();
    chrono::DateTime::parse_from_rfc3339(s).ok().or_else(|| {
        chrono::NaiveDateTime::parse_from_str(s, "%Y-%m-%dT%H:%M:%S%.f")
            .ok()
            .map(|n| n.and_utc().fixed_offset())
    })
}

/// Parse a boolean leniently: JSON bools, and "true"/"false" in any case
/// (Entra sends "False").
pub fn lenient_bool(v: &Value) -> Option<bool> {
    match v {
        Value::Bool(b) => Some(*b),
        Value::String(s) if s.eq_ignore_ascii_case("true") => Some(true),
        Value::String(s) if s.eq_ignore_ascii_case("false") => Some(false),
        _ => None,
    }
}

/// Coerce one simple (non-complex) value to the attribute's type.
fn coerce_simple(attr: &Attribute, v: &Value) -> Result<Value, ScimError> {
    match attr.ty {
        T::String | T::Reference | T::Binary => match v {
            Value::String(_) => Ok(v.clone()),
            // Identifiers such as employeeNumber sometimes arrive as numbers.
            Value::Number(n) if attr.ty == T::String => Ok(Value::String(n.to_string())),
            _ => Err(type_err(attr, "got a non-string value")),
        },
        T::Boolean => lenient_bool(v)
            .map(Value::Bool)
            .ok_or_else(|| type_err(attr, "expected true or false")),
        T::Integer => match v {
            Value::Number(n) if n.is_i64() || n.is_u64() => Ok(v.clone()),
            Value::String(s) => s
                .trim()
                .parse::<i64>()
                .map(|i| Value::Number(i.into()))
                .map_err(|_| type_err(attr, "not an integer")),
            _ => Err(type_err(attr, "not an integer")),
        },
        T::Decimal => match v {
            Value::Number(_) => Ok(v.clone()),
            Value::String(s) => s
                .trim()
                .parse::<f64>()
                .ok()
                .and_then(Number::from_f64)
                .map(Value::Number)
                .ok_or_else(|| type_err(attr, "not a number")),
            _ => Err(type_err(attr, "not a number")),
        },
        T::DateTime => match v {
            Value::String(s) if parse_datetime(s).is_some() => Ok(v.clone()),
            _ => Err(type_err(
                attr,
                "expected an xsd:dateTime such as 2011-05-13T04:42:34Z",
            )),
        },
        T::Complex => Err(type_err(attr, "internal: complex")),
    }
}

/// Coerce a single value (one element of a multi-valued attribute, or the
/// value of a single-valued one). `Ok(None)` means unassigned.
pub(crate) fn coerce_single(attr: &Attribute, v: &Value) -> Result<Option<Value>, ScimError> {
    if v.is_null() {
        return Ok(None);
    }
    if !attr.is_complex() {
        return coerce_simple(attr, v).map(Some);
    }
    let obj = match v {
        Value::Object(o) => o,
        // A bare scalar for a complex attribute with a "value" sub-attribute
        // (Entra's manager id, members as plain ids) means {"value": …}.
        Value::String(_) | Value::Number(_) | Value::Bool(_) if attr.sub("value").is_some() => {
            let mut o = Map::new();
            o.insert("value".into(), v.clone());
            return coerce_single(attr, &Value::Object(o));
        }
        _ => return Err(type_err(attr, "expected an object")),
    };
    let mut out = Map::new();
    for (k, sv) in obj {
        let Some(sub) = attr.sub(k) else {
            continue; // unknown sub-attributes are ignored
        };
        if sub.mutability == M::ReadOnly {
            continue;
        }
        if let Some(c) = coerce_value(sub, sv)? {
            out.insert(sub.name.to_string(), c);
        }
    }
    if out.is_empty() {
        return Ok(None);
    }
    for sub in attr.sub_attributes {
        if sub.required && !out.contains_key(sub.name) {
            return Err(ScimError::invalid_value(format!(
                "sub-attribute \"{}.{}\" is required",
                attr.name, sub.name
            )));
        }
    }
    Ok(Some(Value::Object(out)))
}

/// Coerce a value for an attribute, multi-valued or not. Multi-valued values
/// given as a single element are wrapped into an array; empty → unassigned.
/// Enforces at most one `primary: true` (RFC 7643 §2.4).
pub(crate) fn coerce_value(attr: &Attribute, v: &Value) -> Result<Option<Value>, ScimError> {
    if v.is_null() {
        return Ok(None);
    }
    if !attr.multi_valued {
        if v.is_array() {
            return Err(type_err(attr, "single-valued attribute given an array"));
        }
        return coerce_single(attr, v);
    }
    let items: Vec<&Value> = match v {
        Value::Array(a) => a.iter().collect(),
        other => vec![other],
    };
    let mut out = Vec::with_capacity(items.len());
    for item in items {
        if item.is_array() {
            return Err(type_err(attr, "nested arrays are not allowed"));
        }
        if let Some(c) = coerce_single(attr, item)? {
            out.push(c);
        }
    }
    if out.is_empty() {
        return Ok(None);
    }
    check_primary(attr, &out)?;
    Ok(Some(Value::Array(out)))
}

/// RFC 7643 §2.4: "The primary attribute value "true" MUST appear no more than once."
pub(crate) fn check_primary(attr: &Attribute, items: &[Value]) -> Result<(), ScimError> {
    let primaries = items
        .iter()
        .filter(|i| i.get("primary").and_then(Value::as_bool) == Some(true))
        .count();
    if primaries > 1 {
        return Err(ScimError::invalid_value(format!(
            "at most one value of \"{}\" may be primary",
            attr.name
        )));
    }
    Ok(())
}

fn is_urn(key: &str) -> bool {
    key.len() > 4 && key[..4].eq_ignore_ascii_case("urn:")
}

/// Normalise the attributes of one schema from `input` into `out`.
fn normalize_schema_attrs(
    schema: &Schema,
    input: &Map<String, Value>,
    out: &mut Map<String, Value>,
    with_common: bool,
) -> Result<(), ScimError> {
    for (k, v) in input {
        let attr = match schema.attribute(k) {
            Some(a) => a,
            None if with_common => match common_attribute(k) {
                // `schemas` is handled by the caller; id and meta are readOnly.
                Some(a) if a.name == "externalId" => a,
                _ => continue,
            },
            None => continue, // unknown attributes are ignored
        };
        if attr.mutability == M::ReadOnly {
            continue; // RFC 7644 §3.3: readOnly values in requests are ignored
        }
        if let Some(c) = coerce_value(attr, v)? {
            out.insert(attr.name.to_string(), c);
        } else {
            out.remove(attr.name);
        }
    }
    for attr in schema.attributes {
        if attr.required && !out.contains_key(attr.name) {
            return Err(ScimError::invalid_value(format!(
                "required attribute \"{}\" is missing",
                attr.name
            )));
        }
    }
    Ok(())
}

/// RFC 7643 §2.2 immutable: may be set once, never changed afterwards.
fn check_immutable(
    schema: &Schema,
    new: Option<&Map<String, Value>>,
    old: Option<&Map<String, Value>>,
) -> Result<(), ScimError> {
    let (Some(new), Some(old)) = (new, old) else {
        return Ok(());
    };
    for attr in schema.attributes {
        let (nv, ov) = (new.get(attr.name), old.get(attr.name));
        if attr.mutability == M::Immutable
            && let Some(ov) = ov
            && !ov.is_null()
            && nv != Some(ov)
        {
            return Err(ScimError::mutability(format!(
                "attribute \"{}\" is immutable",
                attr.name
            )));
        }
        if attr.is_complex()
            && !attr.multi_valued
            && let (Some(Value::Object(n)), Some(Value::Object(o))) = (nv, ov)
        {
            for sub in attr.sub_attributes {
                if sub.mutability == M::Immutable
                    && let Some(osv) = o.get(sub.name)
                    && n.get(sub.name) != Some(osv)
                {
                    return Err(ScimError::mutability(format!(
                        "attribute \"{}.{}\" is immutable",
                        attr.name, sub.name
                    )));
                }
            }
        }
    }
    Ok(())
}

/// Validate and normalise a resource body for create/replace (RFC 7644 §3.3,
/// §3.5.1). See the module docs of [`crate::scim`] for the resource shape.
///
/// - `schemas` must list only the core schema and declared extensions
///   (`invalidSyntax` otherwise); the core schema is added if missing, and
///   extensions whose attributes are present are added.
/// - Extension objects under a URN key the resource type does not declare →
///   `invalidSyntax`; other unknown attributes are ignored.
/// - Attribute names are case-insensitive; canonical case is restored.
/// - Types are checked with lenient coercions (string booleans, numeric strings
///   for numbers); mismatch → `invalidValue`; required missing → `invalidValue`.
/// - readOnly attributes (id, meta, groups, …) are dropped.
/// - With `existing`, immutable attributes may not change → `mutability`.
pub fn normalize(
    rt: &ResourceType,
    body: &Value,
    existing: Option<&Value>,
) -> Result<Value, ScimError> {
    let Value::Object(input) = body else {
        return Err(ScimError::invalid_syntax(
            "resource body must be a JSON object",
        ));
    };
    // Declared schemas.
    let mut declared: Vec<&'static Schema> = Vec::new();
    if let Some((_, s)) = input
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case("schemas"))
    {
        let list = s
            .as_array()
            .ok_or_else(|| ScimError::invalid_syntax("\"schemas\" must be an array of URNs"))?;
        for item in list {
            let urn = item
                .as_str()
                .ok_or_else(|| ScimError::invalid_syntax("\"schemas\" must be an array of URNs"))?;
            let schema = rt.schema_for_urn(urn).ok_or_else(|| {
                ScimError::invalid_syntax(format!(
                    "schema \"{urn}\" is not supported for resource type {}",
                    rt.id
                ))
            })?;
            if !declared.iter().any(|d| std::ptr::eq(*d, schema)) {
                declared.push(schema);
            }
        }
    }
    let mut out = Map::new();
    normalize_schema_attrs(rt.schema, input, &mut out, true)?;
    let mut present_ext: Vec<&'static Schema> = Vec::new();
    for (k, v) in input {
        if !is_urn(k) {
            continue;
        }
        let Some(ext) = rt.extension(k) else {
            if rt.schema.id.eq_ignore_ascii_case(k) {
                // Core attributes nested under the core URN: accept them too.
                if let Value::Object(inner) = v {
                    let mut extra = out.clone();
                    normalize_schema_attrs(rt.schema, inner, &mut extra, true)?;
                    out = extra;
                }
                continue;
            }
            return Err(ScimError::invalid_syntax(format!(
                "schema extension \"{k}\" is not supported for resource type {}",
                rt.id
            )));
        };
        let Value::Object(inner) = v else {
            if v.is_null() {
                continue;
            }
            return Err(ScimError::invalid_syntax(format!(
                "extension \"{}\" must be an object",
                ext.id
            )));
        };
        let mut ext_out = Map::new();
        normalize_schema_attrs(ext, inner, &mut ext_out, false)?;
        if !ext_out.is_empty() {
            out.insert(ext.id.to_string(), Value::Object(ext_out));
            present_ext.push(ext);
        }
    }
    for (ext, required) in rt.extensions {
        if *required && !out.contains_key(ext.id) {
            return Err(ScimError::invalid_value(format!(
                "required schema extension \"{}\" is missing",
                ext.id
            )));
        }
    }
    if let Some(Value::Object(old)) = existing {
        check_immutable(rt.schema, Some(&out), Some(old))?;
        for (ext, _) in rt.extensions {
            check_immutable(
                ext,
                out.get(ext.id).and_then(Value::as_object),
                old.get(ext.id).and_then(Value::as_object),
            )?;
        }
    }
    let mut schemas = vec![Value::String(rt.schema.id.to_string())];
    for (ext, _) in rt.extensions {
        if declared.iter().any(|d| std::ptr::eq(*d, *ext))
            || present_ext.iter().any(|d| std::ptr::eq(*d, *ext))
        {
            schemas.push(Value::String(ext.id.to_string()));
        }
    }
    out.insert("schemas".into(), Value::Array(schemas));
    Ok(Value::Object(out))
}

// ---- projection (RFC 7644 §3.4.2.5, §3.9) ----

/// A requested attribute: (schema, attribute, optional sub-attribute), or a whole extension.
#[derive(Debug, Clone, Copy)]
enum Sel {
    Attr(
        &'static Schema,
        &'static Attribute,
        Option<&'static Attribute>,
    ),
    Extension(&'static Schema),
}

fn parse_selection(rt: &ResourceType, paths: &[String]) -> Vec<Sel> {
    let mut out = Vec::new();
    for p in paths {
        let p = p.trim();
        if p.is_empty() {
            continue;
        }
        if let Some(ext) = rt.extension(p) {
            out.push(Sel::Extension(ext));
            continue;
        }
        let Ok(ap) = super::filter::parse_attr_path(p) else {
            continue; // unknown or malformed names select nothing
        };
        if let Ok(r) = resolve_static(rt, &ap) {
            out.push(Sel::Attr(r.schema, r.attr, r.sub));
        }
    }
    out
}

/// Project one schema's attributes of `src` into `dst`.
fn project_schema(
    schema: &'static Schema,
    is_core: bool,
    src: Map<String, Value>,
    sels: &[Sel],
    attributes_mode: bool,
    excluded: &[Sel],
    mut urns: Option<&mut Vec<(String, Value)>>,
) -> Map<String, Value> {
    let mut dst = Map::with_capacity(src.len());
    for (k, v) in src {
        if is_core && is_urn(&k) {
            if let Some(u) = urns.as_deref_mut() {
                u.push((k, v));
            }
            continue;
        }
        let attr = schema
            .attribute(&k)
            .or_else(|| if is_core { common_attribute(&k) } else { None });
        let Some(attr) = attr else {
            // Unknown keys (server extras) survive only the default view.
            if !attributes_mode {
                dst.insert(k, v);
            }
            continue;
        };
        if attr.returned == Returned::Never {
            continue;
        }
        if attr.returned == Returned::Always {
            dst.insert(canonical_key(k, attr.name), v);
            continue;
        }
        let matches_attr = |s: &Sel| matches!(s, Sel::Attr(sc, a, _) if std::ptr::eq(*sc, schema) && std::ptr::eq(*a, attr));
        let subs_of = |list: &[Sel]| -> (bool, Vec<&'static Attribute>) {
            let mut whole = false;
            let mut subs = Vec::new();
            for s in list.iter().filter(|s| matches_attr(s)) {
                if let Sel::Attr(_, _, sub) = s {
                    match sub {
                        None => whole = true,
                        Some(sa) => subs.push(*sa),
                    }
                }
            }
            (whole, subs)
        };
        let value = if attributes_mode {
            let (whole, subs) = subs_of(sels);
            if whole {
                Some(strip_never(attr, v))
            } else if !subs.is_empty() {
                keep_subs(attr, &v, |name| subs.iter().any(|s| s.name == name))
            } else {
                None
            }
        } else {
            if attr.returned == Returned::Request {
                continue;
            }
            let (whole, subs) = subs_of(excluded);
            if whole {
                None
            } else if !subs.is_empty() {
                keep_subs(attr, &v, |name| {
                    !subs.iter().any(|s| s.name == name)
                        || attr.sub(name).map(|a| a.returned) == Some(Returned::Always)
                })
            } else {
                Some(strip_never(attr, v))
            }
        };
        if let Some(value) = value {
            dst.insert(canonical_key(k, attr.name), value);
        }
    }
    dst
}

/// The attribute's canonical name, reusing the stored key when it already is that.
fn canonical_key(k: String, name: &str) -> String {
    if k == name { k } else { name.to_string() }
}

fn strip_never(attr: &Attribute, v: Value) -> Value {
    if !attr.is_complex()
        || !attr
            .sub_attributes
            .iter()
            .any(|s| s.returned == Returned::Never)
    {
        return v;
    }
    keep_subs(attr, &v, |name| {
        attr.sub(name).map(|s| s.returned) != Some(Returned::Never)
    })
    .unwrap_or(Value::Null)
}

fn keep_subs(attr: &Attribute, v: &Value, keep: impl Fn(&str) -> bool) -> Option<Value> {
    let filter_obj = |o: &Map<String, Value>| -> Option<Value> {
        let m: Map<String, Value> = o
            .iter()
            .filter(|(k, _)| {
                let canonical = attr.sub(k).map(|s| s.name).unwrap_or(k.as_str());
                keep(canonical) && attr.sub(k).map(|s| s.returned) != Some(Returned::Never)
            })
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        (!m.is_empty()).then_some(Value::Object(m))
    };
    match v {
        Value::Object(o) => filter_obj(o),
        Value::Array(items) => {
            let out: Vec<Value> = items
                .iter()
                .filter_map(|i| i.as_object().and_then(filter_obj))
                .collect();
            (!out.is_empty()).then_some(Value::Array(out))
        }
        _ => None,
    }
}

/// Output projection (RFC 7644 §3.4.2.5, §3.9). Attributes with
/// `returned: never` (password) are dropped; `returned: always` (`schemas`, `id`)
/// are kept. With a non-empty `attributes` list only those attributes are
/// returned (paths such as `name.givenName`, `emails.value`, URN-prefixed
/// names, or an extension URN for the whole extension); otherwise every
/// default attribute minus `excluded`. Names are case-insensitive; unknown
/// names select nothing.
pub fn project(
    rt: &ResourceType,
    resource: Value,
    attributes: &[String],
    excluded: &[String],
) -> Value {
    let Value::Object(src) = resource else {
        return resource;
    };
    let sels = parse_selection(rt, attributes);
    let excl = parse_selection(rt, excluded);
    let attributes_mode = !attributes.iter().all(|a| a.trim().is_empty());
    let mut urns = Vec::new();
    let mut out = project_schema(
        rt.schema,
        true,
        src,
        &sels,
        attributes_mode,
        &excl,
        Some(&mut urns),
    );
    for (ext, _) in rt.extensions {
        let Some(i) = urns
            .iter()
            .position(|(k, v)| k.eq_ignore_ascii_case(ext.id) && v.is_object())
        else {
            continue;
        };
        let Value::Object(inner) = urns.swap_remove(i).1 else {
            continue;
        };
        let whole_sel = sels
            .iter()
            .any(|s| matches!(s, Sel::Extension(e) if std::ptr::eq(*e, *ext)));
        let whole_excl = excl
            .iter()
            .any(|s| matches!(s, Sel::Extension(e) if std::ptr::eq(*e, *ext)));
        let projected = if attributes_mode && whole_sel {
            project_schema(ext, false, inner, &[], false, &[], None)
        } else if !attributes_mode && whole_excl {
            Map::new()
        } else {
            project_schema(ext, false, inner, &sels, attributes_mode, &excl, None)
        };
        if !projected.is_empty() {
            out.insert(ext.id.to_string(), Value::Object(projected));
        }
    }
    Value::Object(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scim::error::ScimType;
    use serde_json::json;

    fn names(s: &Schema) -> Vec<&'static str> {
        s.attributes.iter().map(|a| a.name).collect()
    }

    #[test]
    fn user_schema_has_the_rfc_attribute_set() {
        // RFC 7643 §4.1
        assert_eq!(
            names(&USER),
            [
                "userName",
                "name",
                "displayName",
                "nickName",
                "profileUrl",
                "title",
                "userType",
                "preferredLanguage",
                "locale",
                "timezone",
                "active",
                "password",
                "emails",
                "phoneNumbers",
                "ims",
                "photos",
                "addresses",
                "groups",
                "entitlements",
                "roles",
                "x509Certificates"
            ]
        );
        let name = USER.attribute("name").unwrap();
        let subs: Vec<_> = name.sub_attributes.iter().map(|a| a.name).collect();
        assert_eq!(
            subs,
            [
                "formatted",
                "familyName",
                "givenName",
                "middleName",
                "honorificPrefix",
                "honorificSuffix"
            ]
        );
        let user_name = USER.attribute("username").unwrap();
        assert!(user_name.required && !user_name.case_exact);
        assert_eq!(user_name.uniqueness, Uniqueness::Server);
        let pw = USER.attribute("password").unwrap();
        assert_eq!(
            (pw.mutability, pw.returned),
            (Mutability::WriteOnly, Returned::Never)
        );
        let groups = USER.attribute("groups").unwrap();
        assert_eq!(groups.mutability, Mutability::ReadOnly);
        assert!(groups.multi_valued);
        assert_eq!(USER.attribute("active").unwrap().ty, AttrType::Boolean);
        let emails = USER.attribute("emails").unwrap();
        assert_eq!(
            emails.sub("TYPE").unwrap().canonical_values,
            ["work", "home", "other"]
        );
        assert_eq!(
            USER.attribute("x509Certificates")
                .unwrap()
                .sub("value")
                .unwrap()
                .ty,
            AttrType::Binary
        );
        assert_eq!(
            USER.attribute("photos").unwrap().sub("value").unwrap().ty,
            AttrType::Reference
        );
    }

    #[test]
    fn group_and_enterprise_schemas() {
        // RFC 7643 §4.2, §4.3
        assert_eq!(names(&GROUP), ["displayName", "members"]);
        let members = GROUP.attribute("members").unwrap();
        let subs: Vec<_> = members.sub_attributes.iter().map(|a| a.name).collect();
        assert_eq!(subs, ["value", "$ref", "type", "display"]);
        assert_eq!(
            members.sub("value").unwrap().mutability,
            Mutability::Immutable
        );
        assert!(members.sub("value").unwrap().case_exact);
        assert_eq!(
            names(&ENTERPRISE_USER),
            [
                "employeeNumber",
                "costCenter",
                "organization",
                "division",
                "department",
                "manager"
            ]
        );
        let manager = ENTERPRISE_USER.attribute("manager").unwrap();
        let subs: Vec<_> = manager.sub_attributes.iter().map(|a| a.name).collect();
        assert_eq!(subs, ["value", "$ref", "displayName"]);
        assert_eq!(
            manager.sub("displayName").unwrap().mutability,
            Mutability::ReadOnly
        );
    }

    #[test]
    fn datetimes_follow_xsd() {
        let z = parse_datetime("2011-05-13T04:42:34Z").unwrap();
        assert_eq!(parse_datetime("2011-05-13T06:42:34+02:00"), Some(z));
        assert_eq!(parse_datetime("2011-05-13T04:42:34"), Some(z));
        assert!(parse_datetime("2011-05-13T04:42:34.5").is_some());
        for bad in ["2011-05-13", "yesterday", "2011-13-13T04:42:34Z", ""] {
            assert!(parse_datetime(bad).is_none(), "{bad}");
        }
    }

    #[test]
    fn lookups_are_case_insensitive() {
        assert!(std::ptr::eq(resource_type("user").unwrap(), &USER_RESOURCE));
        assert!(std::ptr::eq(
            resource_type("GROUP").unwrap(),
            &GROUP_RESOURCE
        ));
        assert!(resource_type("Device").is_none());
        assert!(std::ptr::eq(
            schema_by_id(&USER_SCHEMA.to_uppercase()).unwrap(),
            &USER
        ));
        assert!(std::ptr::eq(
            schema_by_id(ENTERPRISE_USER_SCHEMA).unwrap(),
            &ENTERPRISE_USER
        ));
        assert!(std::ptr::eq(schema_by_id(GROUP_SCHEMA).unwrap(), &GROUP));
        assert!(schema_by_id("urn:nope").is_none());
    }

    #[test]
    fn schema_json_follows_rfc_7643_section_7() {
        let v = schema_json(&USER, "https://example.com/scim/v2/");
        assert_eq!(v["id"], USER_SCHEMA);
        assert_eq!(v["schemas"], json!([SCHEMA_SCHEMA]));
        assert_eq!(v["meta"]["resourceType"], "Schema");
        assert_eq!(
            v["meta"]["location"],
            format!("https://example.com/scim/v2/Schemas/{USER_SCHEMA}")
        );
        let attrs = v["attributes"].as_array().unwrap();
        assert_eq!(attrs.len(), USER.attributes.len());
        let user_name = &attrs[0];
        assert_eq!(
            *user_name,
            json!({
                "name": "userName", "type": "string", "multiValued": false,
                "description": USER.attributes[0].description,
                "required": true, "caseExact": false, "mutability": "readWrite",
                "returned": "default", "uniqueness": "server"
            })
        );
        let emails = attrs.iter().find(|a| a["name"] == "emails").unwrap();
        assert_eq!(emails["type"], "complex");
        assert_eq!(emails["multiValued"], true);
        assert!(emails.get("caseExact").is_none());
        assert_eq!(emails["uniqueness"], "none");
        let sub_type = emails["subAttributes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|a| a["name"] == "type")
            .unwrap();
        assert_eq!(
            sub_type["canonicalValues"],
            json!(["work", "home", "other"])
        );
        let password = attrs.iter().find(|a| a["name"] == "password").unwrap();
        assert_eq!(password["mutability"], "writeOnly");
        assert_eq!(password["returned"], "never");
        let profile = attrs.iter().find(|a| a["name"] == "profileUrl").unwrap();
        assert_eq!(profile["referenceTypes"], json!(["external"]));
        assert_eq!(profile["caseExact"], true);
        // Common attributes are not part of schemas.
        assert!(
            attrs
                .iter()
                .all(|a| a["name"] != "id" && a["name"] != "meta")
        );
    }

    #[test]
    fn resource_type_json_follows_rfc_7643_section_6() {
        let v = resource_type_json(&USER_RESOURCE, "https://example.com/scim/v2");
        assert_eq!(
            v,
            json!({
                "schemas": [RESOURCE_TYPE_SCHEMA],
                "id": "User",
                "name": "User",
                "endpoint": "/Users",
                "description": "User Account",
                "schema": USER_SCHEMA,
                "schemaExtensions": [{"schema": ENTERPRISE_USER_SCHEMA, "required": false}],
                "meta": {"resourceType": "ResourceType", "location": "https://example.com/scim/v2/ResourceTypes/User"}
            })
        );
        let g = resource_type_json(&GROUP_RESOURCE, "https://example.com/scim/v2");
        assert_eq!(g["endpoint"], "/Groups");
        assert!(g.get("schemaExtensions").is_none());
    }

    fn ap(s: &str) -> AttrPath {
        crate::scim::filter::parse_attr_path(s).unwrap()
    }

    #[test]
    fn resolve_paths() {
        let r = resolve(&USER_RESOURCE, &ap("NAME.givenname")).unwrap();
        assert_eq!(
            (r.attr.name, r.sub.map(|s| s.name)),
            ("name", Some("givenName"))
        );
        assert_eq!(
            r.canonical_path(&USER_RESOURCE),
            AttrPath::sub("name", "givenName")
        );
        let r = resolve(
            &USER_RESOURCE,
            &ap("urn:ietf:params:scim:schemas:core:2.0:User:userName"),
        )
        .unwrap();
        assert_eq!(r.canonical_path(&USER_RESOURCE), AttrPath::new("userName"));
        let r = resolve(
            &USER_RESOURCE,
            &ap("urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:manager.value"),
        )
        .unwrap();
        assert!(r.is_extension(&USER_RESOURCE));
        assert_eq!(
            r.canonical_path(&USER_RESOURCE),
            AttrPath::sub("manager", "value").with_urn(ENTERPRISE_USER_SCHEMA)
        );
        // Entra's "…:2.0:User.manager".
        let r = resolve(
            &USER_RESOURCE,
            &ap("urn:ietf:params:scim:schemas:extension:enterprise:2.0:User.manager"),
        )
        .unwrap();
        assert_eq!(
            r.canonical_path(&USER_RESOURCE),
            AttrPath::new("manager").with_urn(ENTERPRISE_USER_SCHEMA)
        );
        // Common attributes.
        for (p, want) in [
            ("ID", "id"),
            ("externalid", "externalId"),
            ("meta.version", "meta"),
            ("schemas", "schemas"),
        ] {
            assert_eq!(resolve(&USER_RESOURCE, &ap(p)).unwrap().attr.name, want);
            assert_eq!(resolve(&GROUP_RESOURCE, &ap(p)).unwrap().attr.name, want);
        }
        let r = resolve(&GROUP_RESOURCE, &ap("meta.lastmodified")).unwrap();
        assert_eq!(r.target().name, "lastModified");
        assert_eq!(r.target().ty, AttrType::DateTime);
        // Unknown → invalidPath.
        for p in [
            "nosuch",
            "name.nosuch",
            "urn:example:foo:userName",
            "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:userName",
            "userName.sub",
        ] {
            let e = resolve(&USER_RESOURCE, &ap(p)).unwrap_err();
            assert_eq!(e.scim_type, Some(ScimType::InvalidPath), "{p}");
        }
        assert!(resolve(&GROUP_RESOURCE, &ap("userName")).is_err());
        assert!(
            resolve(
                &GROUP_RESOURCE,
                &ap("urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:department")
            )
            .is_err()
        );
    }

    fn norm(body: Value) -> Result<Value, ScimError> {
        normalize(&USER_RESOURCE, &body, None)
    }

    fn norm_err(body: Value) -> ScimError {
        norm(body).expect_err("should fail")
    }

    #[test]
    fn normalize_restores_case_drops_read_only_and_unknown() {
        let v = norm(json!({
            "SCHEMAS": [USER_SCHEMA],
            "USERNAME": "bjensen",
            "id": "client-chosen",
            "meta": {"created": "2011-05-13T04:42:34Z"},
            "groups": [{"value": "g1"}],
            "nosuch": 1,
            "Name": {"GivenName": "Barbara", "nosuch": "x", "familyName": null},
            "Emails": [{"Value": "b@example.com", "Primary": "True", "TYPE": "work", "display": "B"}],
            "externalID": "ext-1",
            "password": "t1meMachine"
        }))
        .unwrap();
        assert_eq!(
            v,
            json!({
                "schemas": [USER_SCHEMA],
                "userName": "bjensen",
                "name": {"givenName": "Barbara"},
                "emails": [{"value": "b@example.com", "primary": true, "type": "work", "display": "B"}],
                "externalId": "ext-1",
                "password": "t1meMachine"
            })
        );
    }

    #[test]
    fn normalize_lenient_coercions() {
        let v = norm(json!({
            "userName": "u",
            "active": "False",
            "emails": {"value": "single@example.com"},
            USER_SCHEMA: {"displayName": "Nested Core"},
            ENTERPRISE_USER_SCHEMA: {"employeeNumber": 701984, "Manager": "26118915"},
            "phoneNumbers": [],
            "nickName": null
        }))
        .unwrap();
        assert_eq!(v["active"], false);
        assert_eq!(v["emails"], json!([{"value": "single@example.com"}]));
        assert_eq!(v["displayName"], "Nested Core");
        assert_eq!(v[ENTERPRISE_USER_SCHEMA]["employeeNumber"], "701984");
        assert_eq!(
            v[ENTERPRISE_USER_SCHEMA]["manager"],
            json!({"value": "26118915"})
        );
        assert!(v.get("phoneNumbers").is_none() && v.get("nickName").is_none());
        // The extension used is added to schemas even when undeclared.
        assert_eq!(v["schemas"], json!([USER_SCHEMA, ENTERPRISE_USER_SCHEMA]));
        assert!(norm(json!({"userName": "u", "active": "TRUE"})).unwrap()["active"] == true);
    }

    #[test]
    fn normalize_rejects_bad_input() {
        let cases = [
            (json!("not an object"), ScimType::InvalidSyntax),
            (
                json!({"schemas": USER_SCHEMA, "userName": "u"}),
                ScimType::InvalidSyntax,
            ),
            (
                json!({"schemas": ["urn:example:other"], "userName": "u"}),
                ScimType::InvalidSyntax,
            ),
            (
                json!({"schemas": [GROUP_SCHEMA], "userName": "u"}),
                ScimType::InvalidSyntax,
            ),
            (
                json!({"userName": "u", "urn:example:custom:2.0:User": {"x": 1}}),
                ScimType::InvalidSyntax,
            ),
            (
                json!({"userName": "u", ENTERPRISE_USER_SCHEMA: "x"}),
                ScimType::InvalidSyntax,
            ),
            (
                json!({"displayName": "no userName"}),
                ScimType::InvalidValue,
            ),
            (json!({"userName": null}), ScimType::InvalidValue),
            (json!({"userName": ["a"]}), ScimType::InvalidValue),
            (json!({"userName": true}), ScimType::InvalidValue),
            (
                json!({"userName": "u", "active": "yes"}),
                ScimType::InvalidValue,
            ),
            (
                json!({"userName": "u", "active": 1}),
                ScimType::InvalidValue,
            ),
            (
                json!({"userName": "u", "name": "Barbara"}),
                ScimType::InvalidValue,
            ),
            (
                json!({"userName": "u", "emails": [[{"value": "x"}]]}),
                ScimType::InvalidValue,
            ),
            (
                json!({"userName": "u", "profileUrl": 5}),
                ScimType::InvalidValue,
            ),
            (
                json!({"userName": "u", "emails": [
                    {"value": "a@x", "primary": true}, {"value": "b@x", "primary": "true"}
                ]}),
                ScimType::InvalidValue,
            ),
        ];
        for (body, t) in cases {
            let e = norm_err(body.clone());
            assert_eq!((e.status, e.scim_type), (400, Some(t)), "{body}: {e}");
        }
        let e = normalize(&GROUP_RESOURCE, &json!({"schemas": [GROUP_SCHEMA]}), None).unwrap_err();
        assert_eq!(e.scim_type, Some(ScimType::InvalidValue));
        assert!(e.detail.contains("displayName"));
    }

    #[test]
    fn normalize_entra_postman_bodies() {
        // ../shared/corpora/entra-scim-postman/PostmanCollection.json
        // "User tests with garbage/Post user \"OMalley\"" (expects 201).
        let body = json!({
            "userName": "OMalley",
            "active": true,
            "addresses": [
                {"country": "Bermuda", "formatted": "9132 Jennifer Way Suite 040\nSouth Nancy, MI 55645",
                 "locality": "West Mercedes", "postalCode": "99265", "region": "Montana",
                 "streetAddress": "4939 Hess Fork", "type": "work", "primary": false},
                {"country": null, "formatted": "18522 Lisa Unions\nEast Gregory, CT 52311", "locality": null,
                 "postalCode": null, "region": null, "streetAddress": null, "type": "other", "primary": false}
            ],
            "displayName": "Kimberly Baker",
            "emails": [
                {"type": "work", "primary": true, "value": "anna33@example.com"},
                {"type": "other", "primary": false, "value": "anna33@gmail.com"}
            ],
            "meta": {"created": "2019-09-18T18:15:26.5788954+00:00",
                     "lastModified": "2019-09-18T18:15:26.5788976+00:00", "resourceType": "User"},
            "name": {"formatted": "Daniel Mcgee", "familyName": "OMalley", "givenName": "Darl",
                     "honorificPrefix": null, "honorificSuffix": null},
            "phoneNumbers": [
                {"type": "fax", "primary": false, "value": "312-320-0500"},
                {"type": "mobile", "primary": false, "value": "312-320-1707"},
                {"type": "work", "primary": true, "value": "312-320-0932"}
            ],
            "preferredLanguage": "xh",
            "roles": [],
            "title": "Site engineer",
            "externalId": "22fbc523-6032-4c5f-939d-5d4850cf3e52",
            "schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"]
        });
        let v = norm(body).unwrap();
        assert_eq!(v["userName"], "OMalley");
        assert_eq!(v["active"], true);
        assert_eq!(
            v["addresses"][1],
            json!({"formatted": "18522 Lisa Unions\nEast Gregory, CT 52311", "type": "other", "primary": false})
        );
        assert_eq!(
            v["name"],
            json!({"formatted": "Daniel Mcgee", "familyName": "OMalley", "givenName": "Darl"})
        );
        assert!(v.get("meta").is_none() && v.get("roles").is_none());
        // "Post EnterpriseUser": capitalised keys inside the extension.
        let v = norm(json!({
            "userName": "UserName222",
            "schemas": [ENTERPRISE_USER_SCHEMA, USER_SCHEMA],
            "emails": [{"Primary": true, "type": "work", "value": "testing@bob2.com"},
                       {"Primary": false, "type": "home", "value": "testinghome@bob3.com"}],
            ENTERPRISE_USER_SCHEMA: {"Department": "bob", "Manager": {"Value": "SuzzyQ"}}
        }))
        .unwrap();
        assert_eq!(
            v[ENTERPRISE_USER_SCHEMA],
            json!({"department": "bob", "manager": {"value": "SuzzyQ"}})
        );
        assert_eq!(v["emails"][0]["primary"], true);
        assert_eq!(v["schemas"], json!([USER_SCHEMA, ENTERPRISE_USER_SCHEMA]));
        // "Post emp1 with string \"True\"".
        assert_eq!(
            norm(json!({"userName": "emp1", "active": "True"})).unwrap()["active"],
            true
        );
        // "Post no username" → 400.
        assert_eq!(
            norm_err(json!({"active": true, "displayName": "Kimberly Baker"})).status,
            400
        );
        // Groups: "Create filled group 2" — member display is readOnly and dropped.
        let g = normalize(
            &GROUP_RESOURCE,
            &json!({"schemas": [GROUP_SCHEMA], "externalId": "e", "displayName": "G2",
                    "members": [{"value": "u3", "display": "VP"}]}),
            None,
        )
        .unwrap();
        assert_eq!(
            g,
            json!({"schemas": [GROUP_SCHEMA], "externalId": "e", "displayName": "G2", "members": [{"value": "u3"}]})
        );
    }

    static IMMUTABLE_TEST: Schema = Schema {
        id: "urn:example:test:2.0:Thing",
        name: "Thing",
        description: "test",
        attributes: &[
            Attribute::string("name", "n").required(),
            Attribute::string("serial", "s").mutability(Mutability::Immutable),
            Attribute::new("badge", AttrType::Complex, "b").subs(&[
                Attribute::string("number", "n").mutability(Mutability::Immutable),
                Attribute::string("label", "l"),
            ]),
            Attribute::new("count", AttrType::Integer, "c"),
            Attribute::new("ratio", AttrType::Decimal, "r"),
            Attribute::new("since", AttrType::DateTime, "d"),
        ],
    };
    static THING: ResourceType = ResourceType {
        id: "Thing",
        endpoint: "/Things",
        schema: &IMMUTABLE_TEST,
        extensions: &[],
    };

    #[test]
    fn normalize_immutable_and_numeric_types() {
        let old = json!({"name": "a", "serial": "S1", "badge": {"number": "7", "label": "x"}});
        assert!(
            normalize(
                &THING,
                &json!({"name": "b", "serial": "S1", "badge": {"number": "7"}}),
                Some(&old)
            )
            .is_ok()
        );
        // Set once when unassigned.
        assert!(
            normalize(
                &THING,
                &json!({"name": "b", "serial": "S1"}),
                Some(&json!({"name": "a"}))
            )
            .is_ok()
        );
        for body in [
            json!({"name": "b", "serial": "S2"}),
            json!({"name": "b"}),
            json!({"name": "b", "serial": "S1", "badge": {"number": "8"}}),
        ] {
            let e = normalize(&THING, &body, Some(&old)).unwrap_err();
            assert_eq!(e.scim_type, Some(ScimType::Mutability), "{body}");
        }
        let v = normalize(
            &THING,
            &json!({"name": "a", "count": "42", "ratio": "1.5", "since": "2020-01-01T00:00:00Z"}),
            None,
        )
        .unwrap();
        assert_eq!(
            (v["count"].clone(), v["ratio"].clone()),
            (json!(42), json!(1.5))
        );
        for body in [
            json!({"name": "a", "count": 1.5}),
            json!({"name": "a", "count": "x"}),
            json!({"name": "a", "ratio": "x"}),
            json!({"name": "a", "since": "yesterday"}),
            json!({"name": "a", "since": 5}),
        ] {
            let e = normalize(&THING, &body, None).unwrap_err();
            assert_eq!(e.scim_type, Some(ScimType::InvalidValue), "{body}");
        }
    }

    fn full_user() -> Value {
        json!({
            "schemas": [USER_SCHEMA, ENTERPRISE_USER_SCHEMA],
            "id": "2819c223",
            "externalId": "bjensen",
            "userName": "bjensen",
            "password": "secret",
            "name": {"givenName": "Barbara", "familyName": "Jensen"},
            "displayName": "Babs",
            "emails": [{"value": "b@example.com", "type": "work", "primary": true}],
            "meta": {"resourceType": "User", "version": "W/\"1\""},
            ENTERPRISE_USER_SCHEMA: {"department": "Tours", "manager": {"value": "m1", "displayName": "Boss"}}
        })
    }

    fn proj(attrs: &[&str], excl: &[&str]) -> Value {
        let a: Vec<String> = attrs.iter().map(|s| s.to_string()).collect();
        let e: Vec<String> = excl.iter().map(|s| s.to_string()).collect();
        project(&USER_RESOURCE, full_user(), &a, &e)
    }

    #[test]
    fn project_default_drops_never_returned() {
        let mut want = full_user();
        want.as_object_mut().unwrap().remove("password");
        assert_eq!(proj(&[], &[]), want);
    }

    #[test]
    fn project_attributes() {
        // RFC 7644 §3.9 example: attributes=userName → schemas, id, userName.
        assert_eq!(
            proj(&["userName"], &[]),
            json!({"schemas": [USER_SCHEMA, ENTERPRISE_USER_SCHEMA], "id": "2819c223", "userName": "bjensen"})
        );
        assert_eq!(
            proj(&["NAME.GIVENNAME", "emails.value", "password"], &[]),
            json!({"schemas": [USER_SCHEMA, ENTERPRISE_USER_SCHEMA], "id": "2819c223",
                   "name": {"givenName": "Barbara"}, "emails": [{"value": "b@example.com"}]})
        );
        assert_eq!(
            proj(
                &[
                    "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:manager.value",
                    "meta.version"
                ],
                &[]
            ),
            json!({"schemas": [USER_SCHEMA, ENTERPRISE_USER_SCHEMA], "id": "2819c223",
                   "meta": {"version": "W/\"1\""},
                   ENTERPRISE_USER_SCHEMA: {"manager": {"value": "m1"}}})
        );
        assert_eq!(
            proj(
                &[
                    ENTERPRISE_USER_SCHEMA,
                    "urn:ietf:params:scim:schemas:core:2.0:User:displayName"
                ],
                &[]
            ),
            json!({"schemas": [USER_SCHEMA, ENTERPRISE_USER_SCHEMA], "id": "2819c223", "displayName": "Babs",
                   ENTERPRISE_USER_SCHEMA: {"department": "Tours", "manager": {"value": "m1", "displayName": "Boss"}}})
        );
        // Unknown names select nothing.
        assert_eq!(
            proj(&["nosuch", "name..x"], &[]),
            json!({"schemas": [USER_SCHEMA, ENTERPRISE_USER_SCHEMA], "id": "2819c223"})
        );
        // excludedAttributes is ignored when attributes is given (§3.4.2.5 "one or the other").
        assert_eq!(proj(&["userName"], &["userName"])["userName"], "bjensen");
    }

    #[test]
    fn project_excluded_attributes() {
        let v = proj(
            &[],
            &[
                "emails",
                "name.familyName",
                "id",
                "schemas",
                "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:department",
            ],
        );
        assert!(v.get("emails").is_none());
        assert_eq!(v["name"], json!({"givenName": "Barbara"}));
        // returned: always cannot be excluded.
        assert_eq!(v["id"], "2819c223");
        assert!(v.get("schemas").is_some());
        assert_eq!(
            v[ENTERPRISE_USER_SCHEMA],
            json!({"manager": {"value": "m1", "displayName": "Boss"}})
        );
        let v = proj(&[], &[ENTERPRISE_USER_SCHEMA, "META"]);
        assert!(v.get(ENTERPRISE_USER_SCHEMA).is_none() && v.get("meta").is_none());
        assert_eq!(v["userName"], "bjensen");
        // Excluding every sub-attribute leaves nothing.
        let v = proj(&[], &["name.givenName", "name.familyName"]);
        assert!(v.get("name").is_none());
    }

    #[test]
    fn project_group() {
        let g = json!({"schemas": [GROUP_SCHEMA], "id": "g1", "displayName": "Admins",
                       "members": [{"value": "u1", "display": "A"}], "meta": {"resourceType": "Group"}});
        assert_eq!(
            project(&GROUP_RESOURCE, g.clone(), &["displayName".into()], &[]),
            json!({"schemas": [GROUP_SCHEMA], "id": "g1", "displayName": "Admins"})
        );
        assert_eq!(
            project(&GROUP_RESOURCE, g.clone(), &[], &["members".into()]),
            json!({"schemas": [GROUP_SCHEMA], "id": "g1", "displayName": "Admins", "meta": {"resourceType": "Group"}})
        );
        assert_eq!(
            project(&GROUP_RESOURCE, g.clone(), &["members.value".into()], &[]),
            json!({"schemas": [GROUP_SCHEMA], "id": "g1", "members": [{"value": "u1"}]})
        );
    }
}
