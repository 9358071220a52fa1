//! SCIM filters (RFC 7644 §3.4.2.2): parser, schema-aware resolution and
//! in-memory evaluation.
//!
//! Grammar (RFC 7644 Figure 1, with errata 4690/7319/7322/8924 applied):
//!
//! ```text
//! FILTER    = attrExp / logExp / valuePath / *1"not" "(" FILTER ")"
//! valuePath = attrPath "[" valFilter "]"
//! valFilter = attrExp / logExp / *1"not" "(" valFilter ")"
//! attrExp   = (attrPath SP "pr") / (attrPath SP compareOp SP compValue)
//! logExp    = FILTER SP ("and" / "or") SP FILTER
//! attrPath  = [URI ":"] ATTRNAME *1subAttr
//! ```
//!
//! Precedence: `or` < `and` < `not` < parentheses. Keywords and operators are
//! case-insensitive. Leniencies for real IdP traffic: any amount of whitespace,
//! `not` without parentheses (`not title pr`), and Entra's
//! `emails[type eq "work"].value eq "x"` (a value path followed by a
//! sub-attribute comparison), which is read as
//! `emails[type eq "work" and value eq "x"]`.

use std::fmt;

use chrono::{DateTime, FixedOffset};
use serde_json::{Number, Value};

use super::error::ScimError;
use super::schema::{self, AttrType, Attribute, ResourceType, lenient_bool};

/// Nesting limit: each `(`, `not` and `[` adds one level.
pub const MAX_DEPTH: usize = 32;

/// `[URI ":"] ATTRNAME ["." subAttr]`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct AttrPath {
    pub urn: Option<String>,
    pub attr: String,
    pub sub_attr: Option<String>,
}

impl AttrPath {
    pub fn new(attr: impl Into<String>) -> Self {
        AttrPath {
            urn: None,
            attr: attr.into(),
            sub_attr: None,
        }
    }

    pub fn sub(attr: impl Into<String>, sub: impl Into<String>) -> Self {
        AttrPath {
            urn: None,
            attr: attr.into(),
            sub_attr: Some(sub.into()),
        }
    }

    pub fn with_urn(mut self, urn: impl Into<String>) -> Self {
        self.urn = Some(urn.into());
        self
    }
}

impl fmt::Display for AttrPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(u) = &self.urn {
            write!(f, "{u}:")?;
        }
        f.write_str(&self.attr)?;
        if let Some(s) = &self.sub_attr {
            write!(f, ".{s}")?;
        }
        Ok(())
    }
}

/// Comparison operators (RFC 7644 Table 3).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CompareOp {
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

impl CompareOp {
    pub const ALL: [CompareOp; 9] = [
        CompareOp::Eq,
        CompareOp::Ne,
        CompareOp::Co,
        CompareOp::Sw,
        CompareOp::Ew,
        CompareOp::Gt,
        CompareOp::Ge,
        CompareOp::Lt,
        CompareOp::Le,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            CompareOp::Eq => "eq",
            CompareOp::Ne => "ne",
            CompareOp::Co => "co",
            CompareOp::Sw => "sw",
            CompareOp::Ew => "ew",
            CompareOp::Gt => "gt",
            CompareOp::Ge => "ge",
            CompareOp::Lt => "lt",
            CompareOp::Le => "le",
        }
    }

    /// Case-insensitive.
    pub fn parse(word: &str) -> Option<CompareOp> {
        CompareOp::ALL
            .into_iter()
            .find(|o| o.as_str().eq_ignore_ascii_case(word))
    }

    fn is_ordering(self) -> bool {
        matches!(
            self,
            CompareOp::Gt | CompareOp::Ge | CompareOp::Lt | CompareOp::Le
        )
    }

    fn is_substring(self) -> bool {
        matches!(self, CompareOp::Co | CompareOp::Sw | CompareOp::Ew)
    }
}

/// `compValue = false / null / true / number / string`.
#[derive(Debug, Clone, PartialEq)]
pub enum CompValue {
    Str(String),
    Bool(bool),
    Num(Number),
    Null,
}

impl fmt::Display for CompValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CompValue::Str(s) => write!(f, "{}", Value::String(s.clone())),
            CompValue::Bool(b) => write!(f, "{b}"),
            CompValue::Num(n) => write!(f, "{n}"),
            CompValue::Null => f.write_str("null"),
        }
    }
}

/// A parsed filter.
#[derive(Debug, Clone, PartialEq)]
pub enum Filter {
    And(Box<Filter>, Box<Filter>),
    Or(Box<Filter>, Box<Filter>),
    Not(Box<Filter>),
    Compare {
        path: AttrPath,
        op: CompareOp,
        value: CompValue,
    },
    Present {
        path: AttrPath,
    },
    /// `attr[valFilter]`: the inner filter's paths are relative to one element
    /// of `attr` (plain sub-attribute names, no URN).
    ValuePath {
        path: AttrPath,
        filter: Box<Filter>,
    },
}

impl Filter {
    pub fn and(a: Filter, b: Filter) -> Filter {
        Filter::And(Box::new(a), Box::new(b))
    }
    pub fn or(a: Filter, b: Filter) -> Filter {
        Filter::Or(Box::new(a), Box::new(b))
    }
    #[allow(clippy::should_implement_trait)]
    pub fn not(a: Filter) -> Filter {
        Filter::Not(Box::new(a))
    }
    pub fn compare(path: AttrPath, op: CompareOp, value: CompValue) -> Filter {
        Filter::Compare { path, op, value }
    }
}

/// Renders a filter that parses back to the same tree.
impl fmt::Display for Filter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Filter::Or(a, b) => {
                write!(f, "{a} or ")?;
                match **b {
                    Filter::Or(..) => write!(f, "({b})"),
                    _ => write!(f, "{b}"),
                }
            }
            Filter::And(a, b) => {
                match **a {
                    Filter::Or(..) => write!(f, "({a})")?,
                    _ => write!(f, "{a}")?,
                }
                f.write_str(" and ")?;
                match **b {
                    Filter::Or(..) | Filter::And(..) => write!(f, "({b})"),
                    _ => write!(f, "{b}"),
                }
            }
            Filter::Not(a) => write!(f, "not ({a})"),
            Filter::Compare { path, op, value } => write!(f, "{path} {} {value}", op.as_str()),
            Filter::Present { path } => write!(f, "{path} pr"),
            Filter::ValuePath { path, filter } => write!(f, "{path}[{filter}]"),
        }
    }
}

// ---------------------------------------------------------------- parser

/// What the parser is reading: a filter, or a PATCH path (whose errors are
/// `invalidPath` outside brackets and `invalidFilter` inside, per RFC 7644 §3.12).
#[derive(Clone, Copy, PartialEq, Eq)]
enum Mode {
    Filter,
    Path,
}

pub(crate) struct Parser<'a> {
    src: &'a str,
    pos: usize,
    depth: usize,
    mode: Mode,
    in_brackets: bool,
}

fn is_path_char(c: u8) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, b'_' | b'-' | b'$' | b':' | b'.')
}

fn is_name(s: &str, allow_dollar: bool) -> bool {
    let mut chars = s.chars();
    match chars.next() {
        Some(c) if c.is_ascii_alphabetic() => {}
        Some('$') if allow_dollar => {}
        _ => return false,
    }
    chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
}

/// Split `urn:…:attr.sub` into an [`AttrPath`] (the URN ends at the last colon).
fn split_attr_path(token: &str) -> Result<AttrPath, String> {
    let (urn, rest) = match token.rfind(':') {
        Some(i) => {
            let urn = &token[..i];
            if urn.len() < 5 || !urn[..4].eq_ignore_ascii_case("urn:") {
                return Err(format!("invalid schema URN in \"{token}\""));
            }
            (Some(urn.to_string()), &token[i + 1..])
        }
        None => (None, token),
    };
    let mut parts = rest.split('.');
    let attr = parts.next().unwrap_or("");
    let sub = parts.next();
    if parts.next().is_some() {
        return Err(format!("too many '.' in attribute path \"{token}\""));
    }
    if !is_name(attr, false) {
        return Err(format!("invalid attribute name in \"{token}\""));
    }
    if let Some(s) = sub
        && !is_name(s, true)
    {
        return Err(format!("invalid sub-attribute name in \"{token}\""));
    }
    Ok(AttrPath {
        urn,
        attr: attr.to_string(),
        sub_attr: sub.map(str::to_string),
    })
}

/// Parse a bare attribute path (`attributes=`, `sortBy=`, projections).
pub fn parse_attr_path(input: &str) -> Result<AttrPath, ScimError> {
    split_attr_path(input.trim()).map_err(ScimError::invalid_path)
}

impl<'a> Parser<'a> {
    fn new(src: &'a str, mode: Mode) -> Self {
        Parser {
            src,
            pos: 0,
            depth: 0,
            mode,
            in_brackets: false,
        }
    }

    fn err_at(&self, pos: usize, msg: impl fmt::Display) -> ScimError {
        let column = self.src[..pos.min(self.src.len())].chars().count() + 1;
        let detail = format!("{msg} at column {column}");
        if self.mode == Mode::Path && !self.in_brackets {
            ScimError::invalid_path(detail)
        } else {
            ScimError::invalid_filter(detail)
        }
    }

    fn err(&self, msg: impl fmt::Display) -> ScimError {
        self.err_at(self.pos, msg)
    }

    fn peek(&self) -> Option<u8> {
        self.src.as_bytes().get(self.pos).copied()
    }

    fn skip_ws(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\t' | b'\n' | b'\r')) {
            self.pos += 1;
        }
    }

    /// A maximal run of path characters (also covers keywords).
    fn token(&self) -> &'a str {
        let bytes = self.src.as_bytes();
        let mut end = self.pos;
        while end < bytes.len() && is_path_char(bytes[end]) {
            end += 1;
        }
        &self.src[self.pos..end]
    }

    fn enter(&mut self) -> Result<(), ScimError> {
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            return Err(self.err(format!("filter nested deeper than {MAX_DEPTH} levels")));
        }
        Ok(())
    }

    fn expect(&mut self, c: u8, what: &str) -> Result<(), ScimError> {
        self.skip_ws();
        if self.peek() == Some(c) {
            self.pos += 1;
            Ok(())
        } else {
            Err(self.err(format!("expected {what}")))
        }
    }

    fn describe_here(&self) -> String {
        match self.src[self.pos..].chars().next() {
            None => "end of input".into(),
            Some(c) => format!("'{c}'"),
        }
    }

    fn parse_full(&mut self) -> Result<Filter, ScimError> {
        let f = self.or_expr()?;
        self.skip_ws();
        if self.pos < self.src.len() {
            return Err(self.err(format!(
                "unexpected {}, expected 'and', 'or' or end of filter",
                self.describe_here()
            )));
        }
        Ok(f)
    }

    /// Try to consume a keyword (case-insensitive, whole word).
    fn keyword(&mut self, kw: &str) -> bool {
        let save = self.pos;
        self.skip_ws();
        if self.token().eq_ignore_ascii_case(kw) {
            self.pos += kw.len();
            true
        } else {
            self.pos = save;
            false
        }
    }

    fn or_expr(&mut self) -> Result<Filter, ScimError> {
        let mut left = self.and_expr()?;
        while self.keyword("or") {
            let right = self.and_expr()?;
            left = Filter::or(left, right);
        }
        Ok(left)
    }

    fn and_expr(&mut self) -> Result<Filter, ScimError> {
        let mut left = self.unary()?;
        while self.keyword("and") {
            let right = self.unary()?;
            left = Filter::and(left, right);
        }
        Ok(left)
    }

    fn unary(&mut self) -> Result<Filter, ScimError> {
        self.skip_ws();
        match self.peek() {
            None => return Err(self.err("unexpected end of filter, expected an expression")),
            Some(b'(') => {
                self.enter()?;
                self.pos += 1;
                let inner = self.or_expr()?;
                self.expect(b')', "')'")?;
                self.depth -= 1;
                return Ok(inner);
            }
            _ => {}
        }
        let tok = self.token();
        if tok.eq_ignore_ascii_case("not") {
            // "not" is a keyword unless an operator follows (an attribute named "not").
            let save = self.pos;
            self.pos += 3;
            self.skip_ws();
            let next = self.token();
            let is_attr_named_not =
                next.eq_ignore_ascii_case("pr") || CompareOp::parse(next).is_some();
            if !is_attr_named_not && self.pos < self.src.len() {
                self.pos = save + 3;
                self.enter()?;
                let inner = self.unary()?;
                self.depth -= 1;
                return Ok(Filter::not(inner));
            }
            self.pos = save;
        }
        self.attr_expr()
    }

    fn attr_path(&mut self) -> Result<AttrPath, ScimError> {
        let start = self.pos;
        let tok = self.token();
        if tok.is_empty() {
            return Err(self.err(format!(
                "unexpected {}, expected an attribute path",
                self.describe_here()
            )));
        }
        self.pos += tok.len();
        split_attr_path(tok).map_err(|m| self.err_at(start, m))
    }

    fn attr_expr(&mut self) -> Result<Filter, ScimError> {
        let start = self.pos;
        let path = self.attr_path()?;
        if self.peek() == Some(b'[') {
            let inner = self.value_filter(&path, start)?;
            if self.peek() == Some(b'.') {
                // Entra: emails[type eq "work"].value eq "x"
                self.pos += 1;
                let sub_start = self.pos;
                let tok = self.token();
                self.pos += tok.len();
                if !is_name(tok, true) {
                    return Err(self.err_at(sub_start, "invalid sub-attribute after ']'"));
                }
                let cmp = self.operator_and_value(AttrPath::new(tok))?;
                return Ok(Filter::ValuePath {
                    path,
                    filter: Box::new(Filter::and(inner, cmp)),
                });
            }
            return Ok(Filter::ValuePath {
                path,
                filter: Box::new(inner),
            });
        }
        self.operator_and_value(path)
    }

    /// `"[" valFilter "]"` after `path`.
    fn value_filter(&mut self, path: &AttrPath, start: usize) -> Result<Filter, ScimError> {
        if self.in_brackets {
            return Err(self.err("value filters cannot be nested"));
        }
        if path.sub_attr.is_some() {
            return Err(self.err_at(
                start,
                "a value filter cannot apply to the sub-attribute of an attribute",
            ));
        }
        self.enter()?;
        self.pos += 1;
        self.in_brackets = true;
        self.skip_ws();
        if self.peek() == Some(b']') {
            return Err(self.err("empty value filter"));
        }
        let inner = self.or_expr()?;
        self.expect(b']', "']'")?;
        self.in_brackets = false;
        self.depth -= 1;
        Ok(inner)
    }

    fn operator_and_value(&mut self, path: AttrPath) -> Result<Filter, ScimError> {
        self.skip_ws();
        let op_start = self.pos;
        let word = self.token();
        if word.eq_ignore_ascii_case("pr") {
            self.pos += 2;
            return Ok(Filter::Present { path });
        }
        let Some(op) = CompareOp::parse(word) else {
            return Err(self.err_at(
                op_start,
                if word.is_empty() {
                    format!("unexpected {}, expected an operator", self.describe_here())
                } else {
                    format!("unknown operator \"{word}\"")
                },
            ));
        };
        self.pos += 2;
        self.skip_ws();
        let value = self.comp_value()?;
        Ok(Filter::Compare { path, op, value })
    }

    fn comp_value(&mut self) -> Result<CompValue, ScimError> {
        let start = self.pos;
        let bytes = self.src.as_bytes();
        match self.peek() {
            None => Err(self.err("unexpected end of filter, expected a value")),
            Some(b'"') => {
                let mut i = self.pos + 1;
                loop {
                    match bytes.get(i) {
                        None => return Err(self.err_at(start, "unterminated string")),
                        Some(b'\\') => i += 2,
                        Some(b'"') => break,
                        Some(_) => i += 1,
                    }
                }
                let lit = &self.src[self.pos..=i];
                let s: String = serde_json::from_str(lit)
                    .map_err(|_| self.err_at(start, "invalid string literal"))?;
                self.pos = i + 1;
                Ok(CompValue::Str(s))
            }
            Some(_) => {
                let mut end = self.pos;
                while end < bytes.len()
                    && (bytes[end].is_ascii_alphanumeric()
                        || matches!(bytes[end], b'.' | b'+' | b'-'))
                {
                    end += 1;
                }
                let tok = &self.src[self.pos..end];
                let v = if tok.eq_ignore_ascii_case("true") {
                    CompValue::Bool(true)
                } else if tok.eq_ignore_ascii_case("false") {
                    CompValue::Bool(false)
                } else if tok.eq_ignore_ascii_case("null") {
                    CompValue::Null
                } else if tok.is_empty() {
                    return Err(self.err(format!(
                        "unexpected {}, expected a value",
                        self.describe_here()
                    )));
                } else {
                    match serde_json::from_str::<Number>(tok) {
                        Ok(n) => CompValue::Num(n),
                        Err(e) if e.to_string().contains("out of range") => {
                            return Err(self.err_at(start, "number out of range"));
                        }
                        Err(_) => {
                            return Err(self.err_at(
                                start,
                                format!("invalid value \"{tok}\" (strings must be quoted)"),
                            ));
                        }
                    }
                };
                self.pos = end;
                Ok(v)
            }
        }
    }
}

/// Parse a filter (syntax only). Errors: 400 `invalidFilter` with the column.
pub fn parse(input: &str) -> Result<Filter, ScimError> {
    Parser::new(input, Mode::Filter).parse_full()
}

/// Parse a PATCH path: `attrPath / valuePath [subAttr]` (RFC 7644 §3.5.2).
pub(crate) fn parse_patch_path_syntax(
    input: &str,
) -> Result<(AttrPath, Option<Filter>, Option<String>), ScimError> {
    let mut p = Parser::new(input, Mode::Path);
    p.skip_ws();
    let start = p.pos;
    let path = p.attr_path()?;
    let mut filter = None;
    let mut sub = None;
    if p.peek() == Some(b'[') {
        filter = Some(p.value_filter(&path, start)?);
        if p.peek() == Some(b'.') {
            p.pos += 1;
            let s = p.pos;
            let tok = p.token();
            p.pos += tok.len();
            if !is_name(tok, true) {
                return Err(p.err_at(s, "invalid sub-attribute after ']'"));
            }
            sub = Some(tok.to_string());
        }
    }
    p.skip_ws();
    if p.pos < input.len() {
        return Err(p.err(format!("unexpected {} in path", p.describe_here())));
    }
    Ok((path, filter, sub))
}

// ---------------------------------------------------------------- resolution

fn to_filter_err(e: ScimError) -> ScimError {
    ScimError::invalid_filter(e.detail)
}

/// Check an operator/value pair against the attribute's type (RFC 7644 §3.4.2.2).
fn check_value(attr: &Attribute, op: CompareOp, value: &CompValue) -> Result<CompValue, ScimError> {
    let bad = |why: &str| {
        Err(ScimError::invalid_filter(format!(
            "\"{} {} {value}\": {why}",
            attr.name,
            op.as_str()
        )))
    };
    if *value == CompValue::Null {
        return if matches!(op, CompareOp::Eq | CompareOp::Ne) {
            Ok(CompValue::Null)
        } else {
            bad("null can only be compared with eq or ne")
        };
    }
    match attr.ty {
        AttrType::Boolean => {
            if !matches!(op, CompareOp::Eq | CompareOp::Ne) {
                return bad("boolean attributes support only eq, ne and pr");
            }
            match value {
                CompValue::Bool(b) => Ok(CompValue::Bool(*b)),
                CompValue::Str(s) => match lenient_bool(&Value::String(s.clone())) {
                    Some(b) => Ok(CompValue::Bool(b)),
                    None => bad("expected true or false"),
                },
                _ => bad("expected true or false"),
            }
        }
        AttrType::Binary => {
            if op.is_ordering() {
                return bad("binary attributes cannot be ordered");
            }
            match value {
                CompValue::Str(_) => Ok(value.clone()),
                _ => bad("expected a string"),
            }
        }
        AttrType::String | AttrType::Reference => match value {
            CompValue::Str(_) => Ok(value.clone()),
            _ => bad("expected a string"),
        },
        AttrType::Integer | AttrType::Decimal => {
            if op.is_substring() {
                return bad("co, sw and ew apply to strings only");
            }
            match value {
                CompValue::Num(_) => Ok(value.clone()),
                CompValue::Str(s) => match serde_json::from_str::<Number>(s.trim()) {
                    Ok(n) => Ok(CompValue::Num(n)),
                    Err(_) => bad("expected a number"),
                },
                _ => bad("expected a number"),
            }
        }
        AttrType::DateTime => {
            if op.is_substring() {
                return bad("co, sw and ew apply to strings only");
            }
            match value {
                CompValue::Str(s) if DateTime::parse_from_rfc3339(s).is_ok() => Ok(value.clone()),
                _ => bad("expected an RFC 3339 date-time string"),
            }
        }
        AttrType::Complex => bad("a complex attribute cannot be compared"),
    }
}

/// Resolve a path inside a value filter: relative to an element of `parent`.
fn resolve_relative(
    parent: &'static Attribute,
    path: &AttrPath,
) -> Result<&'static Attribute, ScimError> {
    if path.urn.is_some() || path.sub_attr.is_some() {
        return Err(ScimError::invalid_filter(format!(
            "\"{path}\" inside \"{}[…]\" must be a sub-attribute name",
            parent.name
        )));
    }
    parent.sub(&path.attr).ok_or_else(|| {
        ScimError::invalid_filter(format!(
            "unknown sub-attribute \"{}\" of \"{}\"",
            path.attr, parent.name
        ))
    })
}

fn resolve_filter(
    rt: &ResourceType,
    f: &Filter,
    parent: Option<&'static Attribute>,
) -> Result<Filter, ScimError> {
    Ok(match f {
        Filter::And(a, b) => Filter::and(
            resolve_filter(rt, a, parent)?,
            resolve_filter(rt, b, parent)?,
        ),
        Filter::Or(a, b) => Filter::or(
            resolve_filter(rt, a, parent)?,
            resolve_filter(rt, b, parent)?,
        ),
        Filter::Not(a) => Filter::not(resolve_filter(rt, a, parent)?),
        Filter::Present { path } => match parent {
            Some(p) => Filter::Present {
                path: AttrPath::new(resolve_relative(p, path)?.name),
            },
            None => {
                let r = schema::resolve_static(rt, path).map_err(to_filter_err)?;
                Filter::Present {
                    path: r.canonical_path(rt),
                }
            }
        },
        Filter::Compare { path, op, value } => {
            let (canonical, target) = match parent {
                Some(p) => {
                    let a = resolve_relative(p, path)?;
                    (AttrPath::new(a.name), a)
                }
                None => {
                    let mut r = schema::resolve_static(rt, path).map_err(to_filter_err)?;
                    if r.sub.is_none() && r.attr.is_complex() {
                        // "emails co "x"" compares the "value" sub-attribute.
                        r.sub = Some(r.attr.sub("value").ok_or_else(|| {
                            ScimError::invalid_filter(format!(
                                "complex attribute \"{}\" needs a sub-attribute",
                                r.attr.name
                            ))
                        })?);
                    }
                    (r.canonical_path(rt), r.target())
                }
            };
            Filter::Compare {
                path: canonical,
                op: *op,
                value: check_value(target, *op, value)?,
            }
        }
        Filter::ValuePath { path, filter } => {
            if parent.is_some() {
                return Err(ScimError::invalid_filter("value filters cannot be nested"));
            }
            let r = schema::resolve_static(rt, path).map_err(to_filter_err)?;
            if r.sub.is_some() || !r.attr.is_complex() {
                return Err(ScimError::invalid_filter(format!(
                    "\"{path}\" is not a complex attribute and cannot take a value filter"
                )));
            }
            Filter::ValuePath {
                path: r.canonical_path(rt),
                filter: Box::new(resolve_filter(rt, filter, Some(r.attr))?),
            }
        }
    })
}

/// Parse and resolve against the schema: canonical names (URN kept only for
/// extension attributes; `emails co "x"` becomes `emails.value co "x"`),
/// unknown attributes and operator/type mismatches → 400 `invalidFilter`.
pub fn parse_for(rt: &ResourceType, input: &str) -> Result<Filter, ScimError> {
    let f = parse(input)?;
    resolve_for(rt, &f)
}

/// Resolve an already parsed filter (see [`parse_for`]).
pub fn resolve_for(rt: &ResourceType, f: &Filter) -> Result<Filter, ScimError> {
    resolve_filter(rt, f, None)
}

/// Resolve the inner filter of a value path relative to `parent`'s sub-attributes.
pub(crate) fn resolve_element_filter(
    rt: &ResourceType,
    parent: &'static Attribute,
    f: &Filter,
) -> Result<Filter, ScimError> {
    resolve_filter(rt, f, Some(parent))
}

// ---------------------------------------------------------------- evaluation

fn get_ci<'v>(obj: &'v Value, key: &str) -> Option<&'v Value> {
    let o = obj.as_object()?;
    o.get(key).or_else(|| {
        o.iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(key))
            .map(|(_, v)| v)
    })
}

/// Values at `path` in `resource`, flattened over multi-valued attributes,
/// with the characteristics of the attribute the path ends on (None when the
/// attribute is not in the schema: evaluated with RFC 7643 §2.2 defaults).
fn values_at<'v>(
    rt: &ResourceType,
    path: &AttrPath,
    resource: &'v Value,
) -> (Vec<&'v Value>, Option<&'static Attribute>) {
    let resolved = schema::resolve_static(rt, path).ok();
    let (base, attr_name, sub_name, target): (
        Option<&Value>,
        String,
        Option<String>,
        Option<&'static Attribute>,
    ) = match resolved {
        Some(r) => {
            let base = if r.is_extension(rt) {
                get_ci(resource, r.schema.id)
            } else {
                Some(resource)
            };
            let mut sub = r.sub;
            if sub.is_none() && r.attr.is_complex() {
                sub = r.attr.sub("value");
            }
            (
                base,
                r.attr.name.to_string(),
                sub.map(|s| s.name.to_string()),
                Some(sub.unwrap_or(r.attr)),
            )
        }
        None => {
            let base = match &path.urn {
                Some(u) => get_ci(resource, u),
                None => Some(resource),
            };
            (base, path.attr.clone(), path.sub_attr.clone(), None)
        }
    };
    let mut out = Vec::new();
    let Some(v) = base.and_then(|b| get_ci(b, &attr_name)) else {
        return (out, target);
    };
    let mut push = |x: &'v Value| match &sub_name {
        None => out.push(x),
        Some(s) => {
            if let Some(y) = get_ci(x, s) {
                match y {
                    Value::Array(items) => out.extend(items.iter()),
                    _ => out.push(y),
                }
            }
        }
    };
    match v {
        Value::Array(items) => items.iter().for_each(&mut push),
        _ => push(v),
    }
    (out, target)
}

fn non_empty(v: &Value) -> bool {
    match v {
        Value::Null => false,
        Value::String(s) => !s.is_empty(),
        Value::Array(a) => a.iter().any(non_empty),
        Value::Object(o) => o.values().any(non_empty),
        _ => true,
    }
}

fn cmp_ord(op: CompareOp, ord: std::cmp::Ordering) -> bool {
    use std::cmp::Ordering::*;
    match op {
        CompareOp::Eq => ord == Equal,
        CompareOp::Ne => ord != Equal,
        CompareOp::Gt => ord == Greater,
        CompareOp::Ge => ord != Less,
        CompareOp::Lt => ord == Less,
        CompareOp::Le => ord != Greater,
        _ => false,
    }
}

fn parse_dt(s: &str) -> Option<DateTime<FixedOffset>> {
    DateTime::parse_from_rfc3339(s).ok()
}

/// Compare one attribute value against the filter value.
fn compare_one(
    attr: Option<&Attribute>,
    actual: &Value,
    op: CompareOp,
    expected: &CompValue,
) -> bool {
    match expected {
        CompValue::Null => match op {
            CompareOp::Eq => !non_empty(actual),
            CompareOp::Ne => non_empty(actual),
            _ => false,
        },
        CompValue::Bool(b) => match lenient_bool(actual) {
            Some(a) => match op {
                CompareOp::Eq => a == *b,
                CompareOp::Ne => a != *b,
                _ => false,
            },
            None => false,
        },
        CompValue::Num(n) => {
            let a = match actual {
                Value::Number(a) => a.as_f64(),
                Value::String(s) => s.trim().parse::<f64>().ok(),
                _ => None,
            };
            match (a, n.as_f64()) {
                (Some(a), Some(e)) => a.partial_cmp(&e).is_some_and(|o| cmp_ord(op, o)),
                _ => false,
            }
        }
        CompValue::Str(e) => {
            let a = match actual {
                Value::String(s) => s.as_str(),
                _ => return false,
            };
            let is_date = attr.map(|x| x.ty == AttrType::DateTime);
            if is_date != Some(false)
                && !op.is_substring()
                && let (Some(ad), Some(ed)) = (parse_dt(a), parse_dt(e))
            {
                return cmp_ord(op, ad.cmp(&ed));
            }
            let case_exact = attr.is_some_and(|x| x.case_exact);
            let (a, e) = if case_exact {
                (a.to_string(), e.clone())
            } else {
                (a.to_lowercase(), e.to_lowercase())
            };
            match op {
                CompareOp::Co => a.contains(&e),
                CompareOp::Sw => a.starts_with(&e),
                CompareOp::Ew => a.ends_with(&e),
                _ => cmp_ord(op, a.cmp(&e)),
            }
        }
    }
}

fn eval_compare(
    values: &[&Value],
    attr: Option<&Attribute>,
    op: CompareOp,
    expected: &CompValue,
) -> bool {
    if *expected == CompValue::Null {
        let any = values.iter().any(|v| non_empty(v));
        return match op {
            CompareOp::Eq => !any,
            CompareOp::Ne => any,
            _ => false,
        };
    }
    if op == CompareOp::Ne {
        // Absent attributes are "not equal"; multi-valued: no value equals.
        return !values
            .iter()
            .any(|v| compare_one(attr, v, CompareOp::Eq, expected));
    }
    values.iter().any(|v| compare_one(attr, v, op, expected))
}

/// In-memory evaluation against a JSON resource (RFC 7644 §3.4.2.2): honours
/// `caseExact`; a multi-valued attribute matches if any value matches; dateTime
/// values compare as instants; `pr` means present and non-empty; `ne` matches
/// when no value is equal (absent included).
pub fn matches(rt: &ResourceType, filter: &Filter, resource: &Value) -> bool {
    match filter {
        Filter::And(a, b) => matches(rt, a, resource) && matches(rt, b, resource),
        Filter::Or(a, b) => matches(rt, a, resource) || matches(rt, b, resource),
        Filter::Not(a) => !matches(rt, a, resource),
        Filter::Present { path } => {
            let (vals, _) = values_at(rt, path, resource);
            vals.iter().any(|v| non_empty(v))
        }
        Filter::Compare { path, op, value } => {
            let (vals, attr) = values_at(rt, path, resource);
            eval_compare(&vals, attr, *op, value)
        }
        Filter::ValuePath { path, filter } => {
            let parent = schema::resolve_static(rt, path).ok();
            let base = match parent {
                Some(r) if r.is_extension(rt) => get_ci(resource, r.schema.id),
                _ => match &path.urn {
                    Some(u) if parent.is_none() => get_ci(resource, u),
                    _ => Some(resource),
                },
            };
            let name = parent.map(|r| r.attr.name).unwrap_or(path.attr.as_str());
            let Some(v) = base.and_then(|b| get_ci(b, name)) else {
                return false;
            };
            let elems: Vec<&Value> = match v {
                Value::Array(a) => a.iter().collect(),
                other => vec![other],
            };
            elems
                .into_iter()
                .any(|e| eval_element(parent.map(|r| r.attr), filter, e))
        }
    }
}

fn eval_element(parent: Option<&Attribute>, filter: &Filter, element: &Value) -> bool {
    match filter {
        Filter::And(a, b) => eval_element(parent, a, element) && eval_element(parent, b, element),
        Filter::Or(a, b) => eval_element(parent, a, element) || eval_element(parent, b, element),
        Filter::Not(a) => !eval_element(parent, a, element),
        Filter::Present { path } => get_ci(element, &path.attr).is_some_and(non_empty),
        Filter::Compare { path, op, value } => {
            let attr = parent.and_then(|p| p.sub(&path.attr));
            let vals: Vec<&Value> = match get_ci(element, &path.attr) {
                Some(Value::Array(a)) => a.iter().collect(),
                Some(v) => vec![v],
                None => vec![],
            };
            eval_compare(&vals, attr, *op, value)
        }
        // Nested value paths are rejected by the parser.
        Filter::ValuePath { .. } => false,
    }
}

/// Evaluate a value filter against one element of the multi-valued complex
/// attribute `parent` (filter paths are sub-attribute names).
pub fn matches_element(
    _rt: &ResourceType,
    parent: &Attribute,
    filter: &Filter,
    element: &Value,
) -> bool {
    eval_element(Some(parent), filter, element)
}
