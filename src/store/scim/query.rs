//! A SCIM filter as a condition tree over named columns, rendered to SQL text with `$N`
//! placeholders and a list of bound values (RFC 7644 §3.4.2.2 semantics; the scim module
//! builds the tree). No value ever becomes SQL text: strings, numbers, times and even JSON
//! paths are bound. The two dialects differ only in JSON access and substring search, and
//! those are the named branches of [`Dialect`].
use chrono::{DateTime, Utc};
use uuid::Uuid;

/// A column a condition may test, in the query over one resource type.
#[derive(Debug, Clone, PartialEq)]
pub enum Col {
    /// The resource id.
    Id,
    /// `scim_users.user_name`.
    UserName,
    /// `scim_users.display_name` / `scim_groups.display_name`.
    DisplayName,
    /// The requesting client's externalId.
    ExternalId,
    Created,
    LastModified,
    /// `scim_users.active`.
    Active,
    /// A `users` column: email, username, first_name, last_name, picture_url, enabled.
    User(UserCol),
    /// A value inside a JSON document column, by object keys.
    Json {
        doc: Doc,
        path: Vec<String>,
    },
    /// Inside [`Cond::AnyElem`]: a key of the current array element (empty = the element).
    Elem(Vec<String>),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UserCol {
    Email,
    Username,
    FirstName,
    LastName,
    PictureUrl,
    Enabled,
}

impl UserCol {
    fn sql(self) -> &'static str {
        match self {
            UserCol::Email => "u.email",
            UserCol::Username => "u.username",
            UserCol::FirstName => "u.first_name",
            UserCol::LastName => "u.last_name",
            UserCol::PictureUrl => "u.picture_url",
            UserCol::Enabled => "u.enabled",
        }
    }
}

/// JSON document columns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Doc {
    /// `scim_users.attributes`: the stored SCIM document.
    Attributes,
    /// `users.properties`.
    Properties,
}

impl Doc {
    fn sql(self) -> &'static str {
        match self {
            Doc::Attributes => "su.attributes",
            Doc::Properties => "u.properties",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    Eq,
    Ne,
    Co,
    Sw,
    Ew,
    Gt,
    Ge,
    Lt,
    Le,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Text(String),
    Bool(bool),
    Num(f64),
    Time(DateTime<Utc>),
    Uuid(Uuid),
}

#[derive(Debug, Clone, PartialEq)]
pub enum Cond {
    Const(bool),
    And(Vec<Cond>),
    Or(Vec<Cond>),
    Not(Box<Cond>),
    /// `fold`: compare case-insensitively (caseExact false).
    Cmp {
        col: Col,
        op: Op,
        value: Value,
        fold: bool,
    },
    /// Present and not null (for JSON: not null and not an empty string/array).
    Present(Col),
    /// Some element of the JSON array at `path` satisfies `elem` (which uses [`Col::Elem`]).
    AnyElem {
        doc: Doc,
        path: Vec<String>,
        elem: Box<Cond>,
    },
    /// The group has this member (`None`: any member).
    HasMember(Option<Uuid>),
    /// The user is a member of this group (`None`: of any group).
    InGroup(Option<Uuid>),
}

/// Which query a condition is rendered into.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Resource {
    User,
    Group,
}

impl Resource {
    /// The SCIM resource type name (`resource_type` in the metadata and count tables).
    pub fn type_name(self) -> &'static str {
        match self {
            Resource::User => "User",
            Resource::Group => "Group",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    Sqlite,
    Postgres,
}

/// A bound value of the rendered statement.
#[derive(Debug, Clone, PartialEq)]
pub enum Bound {
    Text(String),
    Bool(bool),
    Num(f64),
    Time(DateTime<Utc>),
    Uuid(Uuid),
    Int(i64),
    /// A PostgreSQL `text[]` (JSON path for `#>`/`#>>`).
    TextArray(Vec<String>),
}

/// SQL text under construction plus its bound values; placeholders continue from `first`.
pub struct Sql {
    pub text: String,
    pub binds: Vec<Bound>,
    first: usize,
    dialect: Dialect,
    resource: Resource,
    /// The document of the enclosing [`Cond::AnyElem`].
    elem_doc: Option<Doc>,
    /// Which joined tables the rendered text refers to (`users u`, metadata `m`,
    /// externalIds `x`), so a query can leave out joins it does not need.
    pub uses: Uses,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Uses {
    pub users: bool,
    pub meta: bool,
    pub external_ids: bool,
}

impl Sql {
    pub fn new(dialect: Dialect, resource: Resource, first_placeholder: usize) -> Self {
        Sql {
            text: String::new(),
            binds: Vec::new(),
            first: first_placeholder,
            dialect,
            resource,
            elem_doc: None,
            uses: Uses::default(),
        }
    }

    /// Adds a bound value and returns its placeholder.
    pub fn bind(&mut self, b: Bound) -> String {
        self.binds.push(b);
        format!("${}", self.first + self.binds.len() - 1)
    }

    fn json_path(&mut self, path: &[String]) -> String {
        self.json_path_from("$", path)
    }

    fn json_path_from(&mut self, root: &str, path: &[String]) -> String {
        match self.dialect {
            Dialect::Sqlite => {
                let mut p = String::from(root);
                for k in path {
                    p.push_str(".\"");
                    p.push_str(&k.replace('"', "\\\""));
                    p.push('"');
                }
                self.bind(Bound::Text(p))
            }
            Dialect::Postgres => self.bind(Bound::TextArray(path.to_vec())),
        }
    }

    /// SQL for a JSON value as text (`None` keys: the whole value).
    fn json_text(&mut self, base: &str, path: &[String]) -> String {
        if path.is_empty() {
            return match self.dialect {
                // json_each's `value` column is already the SQL value.
                Dialect::Sqlite => base.to_string(),
                Dialect::Postgres => format!("({base} #>> '{{}}')"),
            };
        }
        let p = self.json_path(path);
        match self.dialect {
            Dialect::Sqlite => format!("json_extract({base}, {p})"),
            Dialect::Postgres => format!("({base} #>> {p})"),
        }
    }

    fn json_typeof(&mut self, base: &str, path: &[String]) -> String {
        if path.is_empty() {
            return match self.dialect {
                Dialect::Sqlite => format!("json_type({base})"),
                Dialect::Postgres => format!("jsonb_typeof({base})"),
            };
        }
        let p = self.json_path(path);
        match self.dialect {
            Dialect::Sqlite => format!("json_type({base}, {p})"),
            Dialect::Postgres => format!("jsonb_typeof({base} #> {p})"),
        }
    }

    /// An element key inside [`Cond::AnyElem`]. SQLite's `json_each.value` is not JSON text
    /// for scalars, so keys are read from the document at the element's `fullkey`.
    fn elem_text(&mut self, path: &[String]) -> String {
        match self.dialect {
            Dialect::Sqlite if path.is_empty() => "e.value".into(),
            Dialect::Sqlite => {
                let doc = self.elem_doc.unwrap_or(Doc::Attributes).sql();
                let p = self.json_path_from("", path);
                format!("json_extract({doc}, e.fullkey || {p})")
            }
            Dialect::Postgres => self.json_text("e.value", path),
        }
    }

    fn elem_type(&mut self, path: &[String]) -> String {
        match self.dialect {
            Dialect::Sqlite if path.is_empty() => "e.type".into(),
            Dialect::Sqlite => {
                let doc = self.elem_doc.unwrap_or(Doc::Attributes).sql();
                let p = self.json_path_from("", path);
                format!("json_type({doc}, e.fullkey || {p})")
            }
            Dialect::Postgres => self.json_typeof("e.value", path),
        }
    }

    fn column(&mut self, col: &Col) -> (String, ColKind) {
        match col {
            Col::User(_)
            | Col::Json {
                doc: Doc::Properties,
                ..
            } => self.uses.users = true,
            Col::Elem(_) if self.elem_doc == Some(Doc::Properties) => self.uses.users = true,
            Col::Created | Col::LastModified if self.resource == Resource::User => {
                self.uses.meta = true
            }
            Col::ExternalId => self.uses.external_ids = true,
            _ => {}
        }
        let (id, name, created, modified) = match self.resource {
            Resource::User => (
                "su.user_id",
                "su.display_name",
                "m.created_at",
                "m.last_modified",
            ),
            Resource::Group => (
                "g.group_id",
                "g.display_name",
                "g.created_at",
                "g.updated_at",
            ),
        };
        match col {
            Col::Id => (id.into(), ColKind::Plain),
            Col::UserName => ("su.user_name".into(), ColKind::Plain),
            Col::DisplayName => (name.into(), ColKind::Plain),
            Col::ExternalId => ("x.external_id".into(), ColKind::Plain),
            Col::Created => (created.into(), ColKind::Plain),
            Col::LastModified => (modified.into(), ColKind::Plain),
            Col::Active => ("su.active".into(), ColKind::Plain),
            Col::User(u) => (u.sql().into(), ColKind::Plain),
            Col::Json { doc, path } => (
                self.json_text(doc.sql(), path),
                ColKind::Json {
                    base: doc.sql().into(),
                    path: path.clone(),
                },
            ),
            Col::Elem(path) => (self.elem_text(path), ColKind::Elem(path.clone())),
        }
    }

    /// `col op value` for a plain text column without case folding.
    fn plain_compare(&mut self, col: &str, op: Op, value: &Value) -> String {
        let bound = match value {
            Value::Text(s) => Bound::Text(s.clone()),
            Value::Bool(b) => Bound::Bool(*b),
            Value::Num(n) => Bound::Num(*n),
            Value::Time(t) => Bound::Time(*t),
            Value::Uuid(u) => Bound::Uuid(*u),
        };
        let p = self.bind(bound);
        match op {
            Op::Eq => format!("({col} = {p})"),
            Op::Ne => format!("({col} IS NULL OR {col} <> {p})"),
            Op::Gt => format!("({col} > {p})"),
            Op::Ge => format!("({col} >= {p})"),
            Op::Lt => format!("({col} < {p})"),
            Op::Le => format!("({col} <= {p})"),
            Op::Co => match self.dialect {
                Dialect::Sqlite => format!("(instr({col}, {p}) > 0)"),
                Dialect::Postgres => format!("(strpos({col}, {p}) > 0)"),
            },
            Op::Sw => format!("(substr({col}, 1, length({p})) = {p})"),
            Op::Ew => format!(
                "(length({col}) >= length({p}) AND \
                 substr({col}, length({col}) - length({p}) + 1) = {p})"
            ),
        }
    }

    /// Renders `cond` into `self.text`.
    pub fn cond(&mut self, cond: &Cond) {
        match cond {
            Cond::Const(true) => self.text.push_str("(1 = 1)"),
            Cond::Const(false) => self.text.push_str("(1 = 0)"),
            Cond::And(parts) | Cond::Or(parts) => {
                if parts.is_empty() {
                    let empty_is_true = matches!(cond, Cond::And(_));
                    return self.cond(&Cond::Const(empty_is_true));
                }
                let joiner = if matches!(cond, Cond::And(_)) {
                    " AND "
                } else {
                    " OR "
                };
                self.text.push('(');
                for (i, p) in parts.iter().enumerate() {
                    if i > 0 {
                        self.text.push_str(joiner);
                    }
                    self.cond(p);
                }
                self.text.push(')');
            }
            Cond::Not(inner) => {
                // Unknown (NULL) counts as false before negation.
                self.text.push_str("(NOT COALESCE(");
                self.cond(inner);
                self.text.push_str(", FALSE))");
            }
            Cond::Present(col) => {
                let (sql, kind) = self.column(col);
                match kind {
                    ColKind::Plain => self.text.push_str(&format!("({sql} IS NOT NULL)")),
                    kind @ (ColKind::Json { .. } | ColKind::Elem(_)) => {
                        let (ty, text) = match &kind {
                            ColKind::Json { base, path } => {
                                (self.json_typeof(base, path), self.json_text(base, path))
                            }
                            ColKind::Elem(path) => (self.elem_type(path), self.elem_text(path)),
                            ColKind::Plain => (String::new(), String::new()),
                        };
                        // RFC 7644 §3.4.2.2 `pr`: non-empty, non-null.
                        self.text.push_str(&format!(
                            "({ty} IS NOT NULL AND {ty} <> 'null' AND \
                             ({ty} <> 'array' OR {text} <> '[]') AND \
                             ({ty} NOT IN ('text', 'string') OR {text} <> ''))"
                        ));
                    }
                }
            }
            Cond::Cmp {
                col,
                op,
                value,
                fold,
            } => self.compare(col, *op, value, *fold),
            Cond::AnyElem { doc, path, elem } => {
                if *doc == Doc::Properties {
                    self.uses.users = true;
                }
                let p = self.json_path(path);
                let source = match self.dialect {
                    Dialect::Sqlite => format!("json_each({}, {p})", doc.sql()),
                    Dialect::Postgres => format!(
                        "jsonb_array_elements(CASE WHEN jsonb_typeof({d} #> {p}) = 'array' \
                         THEN {d} #> {p} ELSE '[]'::jsonb END)",
                        d = doc.sql()
                    ),
                };
                self.text
                    .push_str(&format!("EXISTS (SELECT 1 FROM {source} AS e WHERE "));
                let outer = self.elem_doc.replace(*doc);
                self.cond(elem);
                self.elem_doc = outer;
                self.text.push(')');
            }
            Cond::HasMember(member) => {
                let filter = match member {
                    Some(u) => format!(" AND gm.user_id = {}", self.bind(Bound::Uuid(*u))),
                    None => String::new(),
                };
                self.text.push_str(&format!(
                    "EXISTS (SELECT 1 FROM scim_group_members gm \
                     WHERE gm.group_id = g.group_id{filter})"
                ));
            }
            Cond::InGroup(group) => {
                let filter = match group {
                    Some(g) => format!(" AND gm.group_id = {}", self.bind(Bound::Uuid(*g))),
                    None => String::new(),
                };
                self.text.push_str(&format!(
                    "EXISTS (SELECT 1 FROM scim_group_members gm \
                     WHERE gm.user_id = su.user_id{filter})"
                ));
            }
        }
    }

    fn compare(&mut self, col: &Col, op: Op, value: &Value, fold: bool) {
        // externalId equality goes through its unique index rather than the outer join.
        if *col == Col::ExternalId
            && op == Op::Eq
            && let Value::Text(v) = value
        {
            let (id, kind) = match self.resource {
                Resource::User => ("su.user_id", "User"),
                Resource::Group => ("g.group_id", "Group"),
            };
            let p = self.bind(Bound::Text(v.clone()));
            self.text.push_str(&format!(
                "({id} IN (SELECT xe.resource_id FROM scim_external_ids xe \
                 WHERE xe.client_id = $1 AND xe.resource_type = '{kind}' \
                 AND xe.external_id = {p}))"
            ));
            return;
        }
        // userName compares on its folded key column (the unique index), with the value
        // folded the same way in Rust.
        if *col == Col::UserName
            && fold
            && let Value::Text(v) = value
        {
            let folded = Value::Text(super::super::types::fold_key(v));
            let op_sql = self.plain_compare("su.user_name_key", op, &folded);
            self.text.push_str(&op_sql);
            return;
        }
        let (sql, kind) = self.column(col);
        let is_json = !matches!(kind, ColKind::Plain);
        let bound = match value {
            Value::Text(s) => Bound::Text(s.clone()),
            Value::Bool(b) if is_json && self.dialect == Dialect::Postgres => {
                Bound::Text(b.to_string())
            }
            Value::Bool(b) => Bool(*b),
            Value::Num(n) => Bound::Num(*n),
            Value::Time(t) if is_json => {
                Bound::Text(t.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true))
            }
            Value::Time(t) => Bound::Time(*t),
            Value::Uuid(u) => Bound::Uuid(*u),
        };
        let numeric = matches!(value, Value::Num(_));
        let lhs = match (&kind, numeric, self.dialect) {
            (ColKind::Json { base, path }, true, Dialect::Postgres) => {
                let ty = self.json_typeof(base, path);
                format!("(CASE WHEN {ty} = 'number' THEN ({sql})::float8 END)")
            }
            (ColKind::Elem(path), true, Dialect::Postgres) => {
                let ty = self.elem_type(path);
                format!("(CASE WHEN {ty} = 'number' THEN ({sql})::float8 END)")
            }
            _ if fold => format!("lower({sql})"),
            _ => sql.clone(),
        };
        let text_value = matches!(value, Value::Text(_));
        let p = if fold && text_value {
            let p = self.bind(bound);
            format!("lower({p})")
        } else {
            self.bind(bound)
        };
        let expr = match op {
            Op::Eq => format!("({lhs} = {p})"),
            Op::Ne => format!("({sql} IS NULL OR {lhs} <> {p})"),
            Op::Gt => format!("({lhs} > {p})"),
            Op::Ge => format!("({lhs} >= {p})"),
            Op::Lt => format!("({lhs} < {p})"),
            Op::Le => format!("({lhs} <= {p})"),
            // Substring tests without LIKE, so `%` and `_` in values are literal.
            Op::Co => match self.dialect {
                Dialect::Sqlite => format!("(instr({lhs}, {p}) > 0)"),
                Dialect::Postgres => format!("(strpos({lhs}, {p}) > 0)"),
            },
            Op::Sw => format!("(substr({lhs}, 1, length({p})) = {p})"),
            Op::Ew => format!(
                "(length({lhs}) >= length({p}) AND \
                 substr({lhs}, length({lhs}) - length({p}) + 1) = {p})"
            ),
        };
        self.text.push_str(&expr);
    }
}

use Bound::Bool;

enum ColKind {
    Plain,
    Json { base: String, path: Vec<String> },
    Elem(Vec<String>),
}

/// `ORDER BY` for a sort column (missing values last when ascending, RFC 7644 §3.4.2.3).
pub fn order_by(sql: &mut Sql, col: Option<&Col>, descending: bool, fold: bool) -> String {
    let id = match sql.resource {
        Resource::User => "su.user_id",
        Resource::Group => "g.group_id",
    };
    let Some(col) = col else {
        return format!("{id} ASC");
    };
    let (expr, _) = sql.column(col);
    let expr = match (col, fold) {
        (Col::UserName, true) => "su.user_name_key".to_string(),
        (_, true) => format!("lower({expr})"),
        (_, false) => expr,
    };
    let dir = if descending { "DESC" } else { "ASC" };
    let nulls = if descending {
        format!("({expr} IS NULL) DESC")
    } else {
        format!("({expr} IS NULL) ASC")
    };
    format!("{nulls}, {expr} {dir}, {id} ASC")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn render(d: Dialect, c: &Cond) -> Sql {
        let mut s = Sql::new(d, Resource::User, 3);
        s.cond(c);
        s
    }

    #[test]
    fn values_are_bound_never_inlined() {
        let evil = "x' OR 1=1 --";
        let c = Cond::And(vec![
            Cond::Cmp {
                col: Col::UserName,
                op: Op::Eq,
                value: Value::Text(evil.into()),
                fold: true,
            },
            Cond::AnyElem {
                doc: Doc::Attributes,
                path: vec!["emails".into()],
                elem: Box::new(Cond::Cmp {
                    col: Col::Elem(vec!["type".into()]),
                    op: Op::Co,
                    value: Value::Text(evil.into()),
                    fold: false,
                }),
            },
        ]);
        for d in [Dialect::Sqlite, Dialect::Postgres] {
            let s = render(d, &c);
            assert!(!s.text.contains(evil), "{}", s.text);
            assert!(!s.text.contains("emails"), "path is bound: {}", s.text);
            assert!(s.text.starts_with("((su.user_name_key = $3)"), "{}", s.text);
            assert_eq!(s.binds.len(), 4, "{:?}", s.binds);
        }
    }

    #[test]
    fn sqlite_paths_quote_keys() {
        let c = Cond::Present(Col::Json {
            doc: Doc::Attributes,
            path: vec![
                "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User".into(),
                "department".into(),
            ],
        });
        let s = render(Dialect::Sqlite, &c);
        assert_eq!(
            s.binds[0],
            Bound::Text(
                "$.\"urn:ietf:params:scim:schemas:extension:enterprise:2.0:User\".\"department\""
                    .into()
            )
        );
        let s = render(Dialect::Postgres, &c);
        assert!(matches!(&s.binds[0], Bound::TextArray(p) if p.len() == 2));
    }

    #[test]
    fn not_treats_unknown_as_false() {
        let c = Cond::Not(Box::new(Cond::Cmp {
            col: Col::DisplayName,
            op: Op::Eq,
            value: Value::Text("a".into()),
            fold: false,
        }));
        let s = render(Dialect::Sqlite, &c);
        assert_eq!(s.text, "(NOT COALESCE((su.display_name = $3), FALSE))");
    }

    #[test]
    fn ne_matches_missing_values() {
        let c = Cond::Cmp {
            col: Col::DisplayName,
            op: Op::Ne,
            value: Value::Text("a".into()),
            fold: true,
        };
        let s = render(Dialect::Postgres, &c);
        assert_eq!(
            s.text,
            "(su.display_name IS NULL OR lower(su.display_name) <> lower($3))"
        );
    }
}
