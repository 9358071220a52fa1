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
                        // serde_json's float parsing is not exact without its
                        // float_roundtrip feature: re-read fractions with std.
                        Ok(n) if n.is_f64() => {
                            match tok.parse::<f64>().ok().and_then(Number::from_f64) {
                                Some(f) => CompValue::Num(f),
                                None => return Err(self.err_at(start, "number out of range")),
                            }
                        }
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
    // RFC 7643 §4.1.1: a password can only be filtered for equality.
    if attr.mutability == schema::Mutability::WriteOnly
        && !matches!(op, CompareOp::Eq | CompareOp::Ne)
    {
        return bad("write-only attributes support only eq, ne and pr");
    }
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
                CompValue::Str(s) if schema::parse_datetime(s).is_some() => Ok(value.clone()),
                _ => bad("expected a dateTime string such as \"2011-05-13T04:42:34Z\""),
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
            if r.sub.is_some() || !r.attr.is_complex() || !r.attr.multi_valued {
                return Err(ScimError::invalid_filter(format!(
                    "\"{path}\" is not a multi-valued complex attribute and cannot take a value filter"
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
    schema::parse_datetime(s)
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scim::error::ScimType;
    use crate::scim::schema::{GROUP_RESOURCE, USER_RESOURCE};
    use crate::scim::{ENTERPRISE_USER_SCHEMA, USER_SCHEMA};
    use proptest::prelude::*;
    use serde_json::json;

    fn p(s: &str) -> Filter {
        parse(s).unwrap_or_else(|e| panic!("{s:?} should parse: {e}"))
    }
    fn bad(s: &str) -> ScimError {
        let e = parse(s).expect_err(s);
        assert_eq!(e.status, 400, "{s}");
        assert_eq!(e.scim_type, Some(ScimType::InvalidFilter), "{s}: {e}");
        e
    }
    fn path(s: &str) -> AttrPath {
        split_attr_path(s).unwrap()
    }
    fn cmp(a: &str, op: CompareOp, v: CompValue) -> Filter {
        Filter::compare(path(a), op, v)
    }
    fn st(s: &str) -> CompValue {
        CompValue::Str(s.into())
    }
    fn num(s: &str) -> CompValue {
        CompValue::Num(serde_json::from_str(s).unwrap())
    }
    fn pr(a: &str) -> Filter {
        Filter::Present { path: path(a) }
    }
    fn vp(a: &str, f: Filter) -> Filter {
        Filter::ValuePath {
            path: path(a),
            filter: Box::new(f),
        }
    }
    fn pf(s: &str) -> Filter {
        parse_for(&USER_RESOURCE, s).unwrap_or_else(|e| panic!("{s:?} should resolve: {e}"))
    }
    fn bad_for(rt: &ResourceType, s: &str) -> ScimError {
        let e = parse_for(rt, s).expect_err(s);
        assert_eq!(e.scim_type, Some(ScimType::InvalidFilter), "{s}: {e}");
        e
    }

    // ---- grammar productions ----

    #[test]
    fn attr_exp_with_every_operator() {
        for op in CompareOp::ALL {
            let f = p(&format!("userName {} \"bjensen\"", op.as_str()));
            assert_eq!(f, cmp("userName", op, st("bjensen")));
            // Operators are case-insensitive (§3.4.2.2).
            let f = p(&format!(
                "userName {} \"bjensen\"",
                op.as_str().to_uppercase()
            ));
            assert_eq!(f, cmp("userName", op, st("bjensen")));
        }
        assert_eq!(p("title pr"), pr("title"));
        assert_eq!(p("title PR"), pr("title"));
    }

    #[test]
    fn attr_paths_with_sub_attributes_and_urns() {
        assert_eq!(p("name.familyName pr"), pr("name.familyName"));
        let f = p("urn:ietf:params:scim:schemas:core:2.0:User:userName sw \"J\"");
        assert_eq!(
            f,
            Filter::compare(
                AttrPath::new("userName").with_urn(USER_SCHEMA),
                CompareOp::Sw,
                st("J")
            )
        );
        // The URN ends at the last colon, even with dots inside it.
        let f = p("urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:manager.value pr");
        assert_eq!(
            f,
            Filter::Present {
                path: AttrPath::sub("manager", "value").with_urn(ENTERPRISE_USER_SCHEMA)
            }
        );
        // errata 8924: "$ref" as a sub-attribute.
        assert_eq!(p("groups.$ref pr"), pr("groups.$ref"));
    }

    #[test]
    fn comp_values_follow_json() {
        // Transcribed from python-scim/scim2-models tests/test_filter_grammar.py
        // (test_comparison_values_follow_json_syntax).
        let cases: &[(&str, CompValue)] = &[
            (r#"x eq "text""#, st("text")),
            ("x eq true", CompValue::Bool(true)),
            ("x eq false", CompValue::Bool(false)),
            ("x eq null", CompValue::Null),
            ("x eq 42", num("42")),
            ("x eq -42", num("-42")),
            ("x eq 4.5", num("4.5")),
            ("x eq -2.5e3", num("-2.5e3")),
            ("x eq 0", num("0")),
            (r#"x eq "with \" quote""#, st("with \" quote")),
            (r#"x eq "with \\ backslash""#, st("with \\ backslash")),
            (r#"x eq "tab\there""#, st("tab\there")),
            (r#"x eq "caf\u00e9""#, st("café")),
            (r#"x eq "O'Malley""#, st("O'Malley")),
        ];
        for (src, want) in cases {
            assert_eq!(p(src), cmp("x", CompareOp::Eq, want.clone()), "{src}");
        }
        // Lenient: literals in any case.
        assert_eq!(
            p("x eq True"),
            cmp("x", CompareOp::Eq, CompValue::Bool(true))
        );
        assert_eq!(p("x eq NULL"), cmp("x", CompareOp::Eq, CompValue::Null));
    }

    #[test]
    fn logical_operators_and_precedence() {
        let a = || pr("a");
        let b = || pr("b");
        let c = || pr("c");
        // `and` binds tighter than `or`.
        assert_eq!(
            p("a pr or b pr and c pr"),
            Filter::or(a(), Filter::and(b(), c()))
        );
        assert_eq!(
            p("a pr and b pr or c pr"),
            Filter::or(Filter::and(a(), b()), c())
        );
        // Left-associative chains.
        assert_eq!(
            p("a pr and b pr and c pr"),
            Filter::and(Filter::and(a(), b()), c())
        );
        assert_eq!(
            p("a pr or b pr or c pr"),
            Filter::or(Filter::or(a(), b()), c())
        );
        // Parentheses override precedence.
        assert_eq!(
            p("(a pr or b pr) and c pr"),
            Filter::and(Filter::or(a(), b()), c())
        );
        assert_eq!(
            p("a pr and (b pr or c pr)"),
            Filter::and(a(), Filter::or(b(), c()))
        );
        // `not` binds tighter than `and`/`or`.
        assert_eq!(p("not (a pr) and b pr"), Filter::and(Filter::not(a()), b()));
        assert_eq!(p("not (a pr) or b pr"), Filter::or(Filter::not(a()), b()));
        assert_eq!(
            p("b pr or not (a pr and c pr)"),
            Filter::or(b(), Filter::not(Filter::and(a(), c())))
        );
        // Keywords are case-insensitive.
        assert_eq!(
            p("a pr AND b pr Or c pr"),
            Filter::or(Filter::and(a(), b()), c())
        );
        assert_eq!(p("NOT (a pr)"), Filter::not(a()));
    }

    #[test]
    fn not_with_and_without_space_and_without_parentheses() {
        // errata 7319
        assert_eq!(p("not (title pr)"), Filter::not(pr("title")));
        assert_eq!(p("not(title pr)"), Filter::not(pr("title")));
        // Lenient: `not attrExp` (scimmy's "email.value ew … and not userName eq …").
        assert_eq!(
            p(r#"email.value ew "@example.com" and not userName eq "Test""#),
            Filter::and(
                cmp("email.value", CompareOp::Ew, st("@example.com")),
                Filter::not(cmp("userName", CompareOp::Eq, st("Test")))
            )
        );
        // An attribute named "not" is still an attribute.
        assert_eq!(p(r#"not eq "x""#), cmp("not", CompareOp::Eq, st("x")));
        assert_eq!(p("not pr"), pr("not"));
        assert_eq!(p("not not pr"), Filter::not(pr("not")));
    }

    #[test]
    fn attribute_names_starting_like_keywords() {
        // Transcribed from scim2-models tests/test_filter_grammar.py
        // (test_attribute_names_starting_like_a_keyword).
        for name in [
            "never",
            "prime",
            "nullable",
            "organization",
            "andrew",
            "equipment",
            "lease",
            "greatest",
            "coworker",
            "swimming",
            "network",
            "notation",
            "trueValue",
            "presence",
        ] {
            assert_eq!(
                p(&format!("{name} eq \"x\"")),
                cmp(name, CompareOp::Eq, st("x")),
                "{name}"
            );
        }
    }

    #[test]
    fn value_paths() {
        assert_eq!(
            p(r#"emails[type eq "work"]"#),
            vp("emails", cmp("type", CompareOp::Eq, st("work")))
        );
        assert_eq!(
            p(r#"emails[type eq "work" and value co "@example.com"]"#),
            vp(
                "emails",
                Filter::and(
                    cmp("type", CompareOp::Eq, st("work")),
                    cmp("value", CompareOp::Co, st("@example.com"))
                )
            )
        );
        // errata 7322: full boolean expressions inside brackets.
        assert_eq!(
            p(r#"emails[type eq "work" or (type eq "home" and primary pr)]"#),
            vp(
                "emails",
                Filter::or(
                    cmp("type", CompareOp::Eq, st("work")),
                    Filter::and(cmp("type", CompareOp::Eq, st("home")), pr("primary"))
                )
            )
        );
        assert_eq!(
            p(r#"emails[not (type eq "work")]"#),
            vp(
                "emails",
                Filter::not(cmp("type", CompareOp::Eq, st("work")))
            )
        );
        assert_eq!(
            p(r#"emails[ type eq "work" ]"#),
            vp("emails", cmp("type", CompareOp::Eq, st("work")))
        );
        // A value path combines with other expressions.
        assert_eq!(
            p(r#"userType eq "Employee" and emails[type eq "work"]"#),
            Filter::and(
                cmp("userType", CompareOp::Eq, st("Employee")),
                vp("emails", cmp("type", CompareOp::Eq, st("work")))
            )
        );
        // URN-prefixed value path.
        assert_eq!(
            p(r#"urn:ietf:params:scim:schemas:core:2.0:User:emails[type eq "work"]"#),
            Filter::ValuePath {
                path: AttrPath::new("emails").with_urn(USER_SCHEMA),
                filter: Box::new(cmp("type", CompareOp::Eq, st("work")))
            }
        );
    }

    #[test]
    fn entra_value_path_with_sub_attribute_is_a_conjunction() {
        // scim2-filter-parser tests/test_transpiler.py AzureQueries:
        // emails[type eq "Primary"].value eq "…" → type = … AND value = …
        assert_eq!(
            p(r#"emails[type eq "Primary"].value eq "001750ca-8202-47cd-b553-c63f4f245940""#),
            vp(
                "emails",
                Filter::and(
                    cmp("type", CompareOp::Eq, st("Primary")),
                    cmp(
                        "value",
                        CompareOp::Eq,
                        st("001750ca-8202-47cd-b553-c63f4f245940")
                    )
                )
            )
        );
        // A bare `valuePath.sub` without a comparison is still an error.
        bad(r#"emails[type eq "work"].value"#);
    }

    #[test]
    fn nested_and_misplaced_value_paths_are_rejected() {
        // scim2-models test_nested_value_path_is_rejected and
        // test_sub_attribute_before_value_path_is_rejected.
        bad(r#"emails[type eq "work" and emails[type eq "home"]]"#);
        bad(r#"emails[emails[type eq "work"].value co "x"]"#);
        let e = bad(r#"emails.type[type eq "work"]"#);
        assert!(e.detail.contains("sub-attribute"), "{}", e.detail);
        bad(r#"urn:ietf:params:scim:schemas:core:2.0:User:emails.type[type eq "work"]"#);
        bad(r#"emails.type[type eq "work"] and userName pr"#);
    }

    #[test]
    fn whitespace_is_tolerated() {
        // scim2-models test_surrounding_whitespace_is_tolerated
        for s in [
            r#"userName    eq     "x""#,
            r#"userName eq"x""#,
            r#"  userName eq "x"  "#,
            "\tuserName\teq\t\"x\"\n",
        ] {
            assert_eq!(p(s), cmp("userName", CompareOp::Eq, st("x")), "{s:?}");
        }
    }

    #[test]
    fn malformed_filters_are_invalid_filter() {
        // scim2-models test_malformed_filters_are_rejected, plus our own.
        for s in [
            "",
            "   ",
            "userName",
            "userName eq",
            r#"eq "x""#,
            "emails[]",
            "a eq 1 and",
            "and a eq 1",
            "a eq 1)",
            "(a eq 1",
            r#"a eq "unterminated"#,
            "a @ 1",
            "1a eq 2",
            "a..b eq 1",
            "a.b.c eq 1",
            "a eq bjensen",
            "a eq 'single'",
            "a xx 1",
            "a eq 01",
            "a eq +1",
            "a eq 1and b pr",
            "a pr b pr",
            "a pr or",
            "not",
            "not ()",
            "()",
            "a pr and or b pr",
            "emails[type eq \"work\"",
            "emails[type eq \"work\"]]",
            "emails[type eq \"work\"] eq \"x\"",
            "a eq \"x\" \"y\"",
            "nourn:userName eq \"x\"",
            ":userName eq \"x\"",
            "urn:x: eq 1",
            "name.$ref.x pr",
            "$ref pr",
            "a-b.c_d eq 1 ]",
            "a eq [1]",
            "a eq {}",
        ] {
            bad(s);
        }
    }

    #[test]
    fn errors_carry_the_column() {
        // scim2-models test_a_string_with_an_invalid_escape_is_rejected: column 13.
        let e = bad(r#"userName eq "a\q""#);
        assert!(e.detail.ends_with("at column 13"), "{}", e.detail);
        let e = bad(r#"userName eq "x" and"#);
        assert!(e.detail.contains("column 20"), "{}", e.detail);
        let e = bad("title pr xx");
        assert!(e.detail.contains("column 10"), "{}", e.detail);
        let e = bad("title zz 1");
        assert!(
            e.detail.contains("unknown operator \"zz\" at column 7"),
            "{}",
            e.detail
        );
    }

    #[test]
    fn number_range() {
        // scim2-models test_a_number_out_of_range_is_rejected
        let e = bad("userName eq 1e400");
        assert!(e.detail.contains("out of range"), "{}", e.detail);
        assert_eq!(
            p("userName eq 1e300"),
            cmp("userName", CompareOp::Eq, num("1e300"))
        );
    }

    fn nest_parens(depth: usize) -> String {
        format!("{}title pr{}", "(".repeat(depth), ")".repeat(depth))
    }

    #[test]
    fn nesting_limit() {
        assert_eq!(p(&nest_parens(MAX_DEPTH)), pr("title"));
        let e = bad(&nest_parens(MAX_DEPTH + 1));
        assert!(e.detail.contains("nested deeper"), "{}", e.detail);
        // `not` counts as a level too.
        let nots = |n: usize| format!("{}title pr", "not ".repeat(n));
        assert!(parse(&nots(MAX_DEPTH)).is_ok());
        bad(&nots(MAX_DEPTH + 1));
        // A value path adds one level.
        let deep_vp = format!(
            "{}emails[type pr]{}",
            "(".repeat(MAX_DEPTH - 1),
            ")".repeat(MAX_DEPTH - 1)
        );
        assert!(parse(&deep_vp).is_ok());
        let too_deep_vp = format!(
            "{}emails[type pr]{}",
            "(".repeat(MAX_DEPTH),
            ")".repeat(MAX_DEPTH)
        );
        bad(&too_deep_vp);
        // Thousands of parentheses fail cleanly, without overflowing the stack.
        bad(&nest_parens(100_000));
        bad(&"not ".repeat(100_000));
    }

    #[test]
    fn rfc_7644_figure_2_examples_parse() {
        // RFC 7644 §3.4.2.2 Figure 2 (also in scim2-models and
        // scim2-filter-parser tests/test_lexer.py RFCExamples).
        let examples = [
            r#"userName eq "bjensen""#,
            r#"name.familyName co "O'Malley""#,
            r#"userName sw "J""#,
            r#"urn:ietf:params:scim:schemas:core:2.0:User:userName sw "J""#,
            "title pr",
            r#"meta.lastModified gt "2011-05-13T04:42:34Z""#,
            r#"meta.lastModified ge "2011-05-13T04:42:34Z""#,
            r#"meta.lastModified lt "2011-05-13T04:42:34Z""#,
            r#"meta.lastModified le "2011-05-13T04:42:34Z""#,
            r#"title pr and userType eq "Employee""#,
            r#"title pr or userType eq "Intern""#,
            r#"schemas eq "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User""#,
            r#"userType eq "Employee" and (emails co "example.com" or emails.value co "example.org")"#,
            r#"userType ne "Employee" and not (emails co "example.com" or emails.value co "example.org")"#,
            r#"userType eq "Employee" and (emails.type eq "work")"#,
            r#"userType eq "Employee" and emails[type eq "work" and value co "@example.com"]"#,
            r#"emails[type eq "work" and value co "@example.com"] or ims[type eq "xmpp" and value co "@foo.com"]"#,
        ];
        for e in examples {
            let f = p(e);
            // And every one resolves against the User schema.
            let r = pf(e);
            // Display round-trips.
            assert_eq!(p(&f.to_string()), f, "{e}");
            assert_eq!(pf(&r.to_string()), r, "{e}");
        }
        assert_eq!(
            p(
                r#"userType ne "Employee" and not (emails co "example.com" or emails.value co "example.org")"#
            ),
            Filter::and(
                cmp("userType", CompareOp::Ne, st("Employee")),
                Filter::not(Filter::or(
                    cmp("emails", CompareOp::Co, st("example.com")),
                    cmp("emails.value", CompareOp::Co, st("example.org"))
                ))
            )
        );
    }

    #[test]
    fn scimmy_parse_vectors() {
        // Transcribed from scimmyjs/scimmy test/lib/types/filter.json ("parse":
        // simple, logical, grouping, complex). scimmy flattens expressions into
        // disjunctive normal form; we check the tree shape where it matters and
        // that the rest parses.
        assert_eq!(p("id pr"), pr("id"));
        assert_eq!(
            p(r#"userName eq "Test""#),
            cmp("userName", CompareOp::Eq, st("Test"))
        );
        assert_eq!(
            p(r#"displayName co "Bob""#),
            cmp("displayName", CompareOp::Co, st("Bob"))
        );
        assert_eq!(
            p(r#"name.formatted sw "Bob""#),
            cmp("name.formatted", CompareOp::Sw, st("Bob"))
        );
        assert_eq!(p("quota gt 1.5"), cmp("quota", CompareOp::Gt, num("1.5")));
        assert_eq!(
            p("UserType eq null"),
            cmp("UserType", CompareOp::Eq, CompValue::Null)
        );
        assert_eq!(
            p("active eq false"),
            cmp("active", CompareOp::Eq, CompValue::Bool(false))
        );
        assert_eq!(
            p("emails.primary eq true"),
            cmp("emails.primary", CompareOp::Eq, CompValue::Bool(true))
        );
        assert_eq!(
            p(r#"email.type eq "work" or not userName ne "Test""#),
            Filter::or(
                cmp("email.type", CompareOp::Eq, st("work")),
                Filter::not(cmp("userName", CompareOp::Ne, st("Test")))
            )
        );
        for s in [
            r#"id pr and userName eq "Test""#,
            r#"userName eq "Test" or displayName co "Bob""#,
            r#"email.type eq "work" and not email.value ew "@example.com""#,
            r#"name.formatted sw "Bob" and name.honoraryPrefix eq "Mr""#,
            r#"emails[type eq "work"]"#,
            r#"emails[type eq "work"].value ew "@example.org""#,
            r#"emails[type eq "work" or type eq "home"].value ew "@example.org""#,
            r#"userType ne "Employee" and not (emails co "example.com" or emails.value co "example.org")"#,
            r#"emails[type eq "work" and value co "@example.com"] or ims[type eq "xmpp" and value co "@foo.com"]"#,
            r#"(name.FamilyName eq "Employee" or name.FamilyName eq "Manager") and (emails.Value co "example.com" or emails.Value co "example.org")"#,
            r#"userType eq "Employee" and emails[type eq "work" or (primary eq true and value co "@example.com")]"#,
            r#"emails[type eq "work" or (primary eq true and value co "@example.com")] and userType eq "Employee""#,
            r#"userType eq "Employee" and emails[type eq "work" or (primary eq true and value co "@example.com")].display co "Work""#,
            r#"userType eq "Employee" or emails[type eq "work" or (primary eq true and value co "@example.com")].display co "Work""#,
            r#"userType eq "Employee" or emails[type eq "work" and (primary eq false and value co "@example.com")].display co "Work""#,
        ] {
            let f = p(s);
            assert_eq!(p(&f.to_string()), f, "{s}");
        }
        // scimmy's "emails[…].values[…]" chains nest value filters, which
        // RFC 7644 (errata 4690) does not allow: rejected here.
        for s in [
            r#"emails[type eq "work" or type eq "home"].values[domain ew "@example.org"]"#,
            r#"emails[type eq "work"].values[domain ew "@example.org" or domain ew "@example.com"].recipient pr"#,
        ] {
            bad(s);
        }
    }

    #[test]
    fn scimmy_match_vectors() {
        // Transcribed from scimmyjs/scimmy test/lib/types/filter.json ("match").
        let source = [
            json!({"id": 1, "userName": "AdeleV", "name": {"formatted": "Adele Vance"}, "date": "2021-07-25T12:37:58.132Z", "number": 4}),
            json!({"id": 2, "userName": "GradyA", "name": {"formatted": "Grady Archie"}, "date": "2021-09-22T02:32:12.026Z", "number": 6}),
            json!({"id": 3, "userName": "LynneR", "name": {"formatted": "Lynne Robbins"}, "date": "2021-08-05T10:11:57.910Z", "number": 14}),
            json!({"id": 4, "userName": "MeganB", "name": {"formatted": "Megan Bowen"}, "date": "2021-09-08T23:02:28.986Z", "number": 9}),
        ];
        let targets: &[(&str, &[i64])] = &[
            // scimmy expects [1, 2] for the next two: it compares case-sensitively,
            // whereas userName is caseExact false (RFC 7643 §4.1.1), so "MeganB"
            // contains "A" too.
            (r#"userName co "A""#, &[1, 2, 4]),
            (r#"username sw "A""#, &[1]),
            (r#"name.formatted co "a""#, &[1, 2, 4]),
            (r#"Name.fOrmaTTed co "a""#, &[1, 2, 4]),
            (r#"userName co "A" and name.formatted co "a""#, &[1, 2, 4]),
            (r#"userName co "e" and name.formatted co "E""#, &[1, 3, 4]),
            (r#"date gt "2021-08-05""#, &[2, 3, 4]),
            (r#"date lt "2021-09""#, &[1, 3]),
            (r#"date co "2021-09""#, &[2, 4]),
            (r#"not (date co "2021-09")"#, &[1, 3]),
            (r#"date gt "2021-08-05T12:00:00Z""#, &[2, 4]),
            (r#"date ge "2021-09-08T23:02:28.986Z""#, &[2, 4]),
            (r#"date le "2021-09-08T23:02:28.986Z""#, &[1, 3, 4]),
            // Our additions on the same data.
            ("number gt 6", &[3, 4]),
            ("number le 6", &[1, 2]),
            (r#"date eq "2021-09-09T01:02:28.986+02:00""#, &[4]),
        ];
        for (src, want) in targets {
            let f = p(src);
            let got: Vec<i64> = source
                .iter()
                .filter(|r| matches(&USER_RESOURCE, &f, r))
                .map(|r| r["id"].as_i64().unwrap())
                .collect();
            assert_eq!(&got, want, "{src}");
        }
    }

    #[test]
    fn scim2_filter_parser_lexer_vectors() {
        // Transcribed from 15five/scim2-filter-parser tests/test_lexer.py.
        assert_eq!(
            p(r#"userType eq "Employee" and (emails.type eq "work")"#),
            Filter::and(
                cmp("userType", CompareOp::Eq, st("Employee")),
                cmp("emails.type", CompareOp::Eq, st("work"))
            )
        );
        assert_eq!(
            p(r#"externalId eq "4d32ab19-ae09-4236-82fa-15768bc48a08""#),
            cmp(
                "externalId",
                CompareOp::Eq,
                st("4d32ab19-ae09-4236-82fa-15768bc48a08")
            )
        );
        assert_eq!(
            p(r#"emails.value eq "001750ca-8202-47cd-b553-c63f4f245940""#),
            cmp(
                "emails.value",
                CompareOp::Eq,
                st("001750ca-8202-47cd-b553-c63f4f245940")
            )
        );
        assert_eq!(
            p(r#"schemas eq "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User""#),
            cmp("schemas", CompareOp::Eq, st(ENTERPRISE_USER_SCHEMA))
        );
    }

    // ---- resolution ----

    #[test]
    fn parse_for_restores_canonical_names() {
        assert_eq!(
            pf(r#"USERNAME eq "x""#),
            cmp("userName", CompareOp::Eq, st("x"))
        );
        assert_eq!(
            pf(r#"name.FAMILYNAME eq "x""#),
            cmp("name.familyName", CompareOp::Eq, st("x"))
        );
        // Core URN dropped, extension URN canonicalised.
        assert_eq!(
            pf(r#"URN:IETF:PARAMS:SCIM:SCHEMAS:CORE:2.0:USER:userName eq "x""#),
            cmp("userName", CompareOp::Eq, st("x"))
        );
        assert_eq!(
            pf(r#"urn:ietf:params:scim:schemas:extension:enterprise:2.0:user:DEPARTMENT eq "x""#),
            Filter::compare(
                AttrPath::new("department").with_urn(ENTERPRISE_USER_SCHEMA),
                CompareOp::Eq,
                st("x")
            )
        );
        // Complex multi-valued attribute without a sub-attribute → .value.
        assert_eq!(
            pf(r#"emails co "example.com""#),
            cmp("emails.value", CompareOp::Co, st("example.com"))
        );
        assert_eq!(pf("emails pr"), pr("emails"));
        // Common attributes.
        assert_eq!(pf(r#"ID eq "x""#), cmp("id", CompareOp::Eq, st("x")));
        assert_eq!(
            pf(r#"externalid eq "x""#),
            cmp("externalId", CompareOp::Eq, st("x"))
        );
        assert_eq!(
            pf(r#"meta.LASTMODIFIED gt "2011-05-13T04:42:34Z""#),
            cmp(
                "meta.lastModified",
                CompareOp::Gt,
                st("2011-05-13T04:42:34Z")
            )
        );
        // Value filter paths become sub-attribute names.
        assert_eq!(
            pf(r#"EMAILS[TYPE eq "work" and Value co "@x"]"#),
            vp(
                "emails",
                Filter::and(
                    cmp("type", CompareOp::Eq, st("work")),
                    cmp("value", CompareOp::Co, st("@x"))
                )
            )
        );
        // dateTime without an offset is UTC (xsd:dateTime).
        assert_eq!(
            pf(r#"meta.lastModified gt "2011-05-13T04:42:34""#),
            cmp(
                "meta.lastModified",
                CompareOp::Gt,
                st("2011-05-13T04:42:34")
            )
        );
        assert_eq!(
            pf(r#"password eq "x""#),
            cmp("password", CompareOp::Eq, st("x"))
        );
        // Lenient boolean strings become booleans.
        assert_eq!(
            pf(r#"active eq "True""#),
            cmp("active", CompareOp::Eq, CompValue::Bool(true))
        );
        // Groups.
        assert_eq!(
            parse_for(&GROUP_RESOURCE, r#"DisplayName eq "Admins""#).unwrap(),
            cmp("displayName", CompareOp::Eq, st("Admins"))
        );
        assert_eq!(
            parse_for(&GROUP_RESOURCE, r#"members[value eq "u1"]"#).unwrap(),
            vp("members", cmp("value", CompareOp::Eq, st("u1")))
        );
    }

    #[test]
    fn parse_for_rejects_unknown_attributes_and_type_mismatches() {
        let u = &USER_RESOURCE;
        for s in [
            r#"nosuch eq "x""#,
            r#"name.nosuch eq "x""#,
            r#"urn:example:unknown:2.0:User:userName eq "x""#,
            // Extension attributes need their URN.
            r#"department eq "x""#,
            // gt/ge/lt/le on booleans (RFC 7644 §3.4.2.2) and co/sw/ew on non-strings.
            "active gt true",
            "active co true",
            "active eq 1",
            r#"active eq "maybe""#,
            r#"meta.lastModified co "2011""#,
            r#"meta.lastModified gt "yesterday""#,
            "meta.lastModified gt 5",
            "userName eq 5",
            "userName eq true",
            "userName gt null",
            // Complex without value sub-attribute.
            r#"name eq "x""#,
            // Value filters only on complex attributes, relative sub-attributes only.
            r#"userName[value eq "x"]"#,
            r#"emails[nosuch eq "x"]"#,
            r#"emails[emails.value eq "x"]"#,
            r#"emails[urn:ietf:params:scim:schemas:core:2.0:User:type eq "x"]"#,
            // Value selection needs a multi-valued complex attribute.
            r#"name[familyName eq "Jensen"]"#,
            r#"schemas[value eq "urn:x"]"#,
            // Binary values cannot be ordered.
            r#"x509Certificates.value gt "AAAA""#,
            // Write-only: equality only (RFC 7643 §4.1.1).
            r#"password co "x""#,
            r#"password gt "x""#,
        ] {
            bad_for(u, s);
        }
        bad_for(&GROUP_RESOURCE, r#"userName eq "x""#);
        bad_for(
            &GROUP_RESOURCE,
            r#"urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:department eq "x""#,
        );
    }

    // ---- evaluation ----

    fn bjensen() -> Value {
        json!({
            "schemas": [USER_SCHEMA, ENTERPRISE_USER_SCHEMA],
            "id": "2819c223-7f76-453a-919d-413861904646",
            "externalId": "BJensen",
            "userName": "bjensen@example.com",
            "name": {"familyName": "Jensen", "givenName": "Barbara"},
            "title": "",
            "userType": "Employee",
            "active": true,
            "emails": [
                {"value": "bjensen@example.com", "type": "work", "primary": true},
                {"value": "babs@jensen.org", "type": "home"}
            ],
            "meta": {"lastModified": "2011-05-13T04:42:34Z"},
            ENTERPRISE_USER_SCHEMA: {"department": "Tour Operations", "manager": {"value": "26118915"}}
        })
    }

    fn m(s: &str) -> bool {
        matches(&USER_RESOURCE, &pf(s), &bjensen())
    }

    #[test]
    fn matches_follows_case_exactness() {
        // userName: caseExact false; externalId and id: caseExact true.
        assert!(m(r#"userName eq "BJENSEN@example.com""#));
        assert!(m(r#"externalId eq "BJensen""#));
        assert!(!m(r#"externalId eq "bjensen""#));
        assert!(!m(r#"id eq "2819C223-7F76-453A-919D-413861904646""#));
        assert!(m(r#"name.familyName co "ENS""#));
        assert!(m(r#"userName sw "BJ""#));
        assert!(m(r#"userName ew "EXAMPLE.COM""#));
        assert!(m(r#"userName gt "a""#));
        assert!(!m(r#"userName lt "a""#));
    }

    #[test]
    fn matches_multi_valued_any_and_value_paths() {
        assert!(m(r#"emails co "jensen.org""#));
        assert!(m(r#"emails.type eq "home""#));
        assert!(m(r#"emails[type eq "work" and value co "@example.com"]"#));
        assert!(!m(r#"emails[type eq "home" and value co "@example.com"]"#));
        assert!(m(
            r#"emails[type eq "work"].value eq "bjensen@example.com""#
        ));
        assert!(!m(
            r#"emails[type eq "home"].value eq "bjensen@example.com""#
        ));
        assert!(m(r#"emails[primary eq true]"#));
        assert!(m(r#"emails[not (primary pr)]"#));
        // ne: no value equal.
        assert!(m(r#"emails.type ne "other""#));
        assert!(!m(r#"emails.type ne "work""#));
    }

    #[test]
    fn matches_presence_dates_booleans_null_and_extensions() {
        assert!(m("userName pr"));
        assert!(!m("title pr"), "empty string is not present");
        assert!(!m("nickName pr"));
        assert!(m("emails pr"));
        assert!(m("active eq true"));
        assert!(!m("active eq false"));
        assert!(m("nickName eq null"));
        assert!(!m("userName eq null"));
        assert!(m("userName ne null"));
        // Instants, not strings.
        assert!(m(r#"meta.lastModified eq "2011-05-13T06:42:34+02:00""#));
        assert!(m(r#"meta.lastModified gt "2011-05-13T05:42:34+02:00""#));
        assert!(!m(r#"meta.lastModified gt "2011-05-13T04:42:34Z""#));
        assert!(m(r#"meta.lastModified ge "2011-05-13T04:42:34Z""#));
        assert!(m(r#"meta.lastModified lt "2011-05-13T04:42:34.001Z""#));
        assert!(m(r#"meta.lastModified eq "2011-05-13T04:42:34""#));
        // References are case-exact (RFC 7643 §2.3.7).
        assert!(m(
            r#"schemas eq "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User""#
        ));
        assert!(!m(
            r#"schemas eq "URN:IETF:PARAMS:SCIM:SCHEMAS:EXTENSION:ENTERPRISE:2.0:USER""#
        ));
        // Extension attributes.
        assert!(m(
            r#"urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:department eq "tour operations""#
        ));
        assert!(m(
            r#"urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:manager.value eq "26118915""#
        ));
        assert!(m(
            r#"urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:manager pr"#
        ));
        assert!(!m(
            r#"urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:costCenter pr"#
        ));
        // Boolean logic.
        assert!(m(
            r#"userType eq "Employee" and (emails co "example.com" or emails.value co "example.org")"#
        ));
        assert!(!m(
            r#"userType ne "Employee" and not (emails co "example.com" or emails.value co "example.org")"#
        ));
        assert!(m(r#"not (userType eq "Intern") and active eq true"#));
        assert!(m(
            r#"schemas eq "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User""#
        ));
    }

    #[test]
    fn matches_element_uses_sub_attribute_characteristics() {
        let emails = USER_RESOURCE.schema.attribute("emails").unwrap();
        let f = parse_for(&USER_RESOURCE, r#"emails[type eq "WORK"]"#).unwrap();
        let Filter::ValuePath { filter, .. } = f else {
            panic!("value path expected")
        };
        assert!(matches_element(
            &USER_RESOURCE,
            emails,
            &filter,
            &json!({"type": "work"})
        ));
        assert!(!matches_element(
            &USER_RESOURCE,
            emails,
            &filter,
            &json!({"type": "home"})
        ));
        let members = GROUP_RESOURCE.schema.attribute("members").unwrap();
        let f = parse(r#"value eq "ABC""#).unwrap();
        // members.value holds ids: case-exact (errata 8472).
        assert!(!matches_element(
            &GROUP_RESOURCE,
            members,
            &f,
            &json!({"value": "abc"})
        ));
        assert!(matches_element(
            &GROUP_RESOURCE,
            members,
            &f,
            &json!({"value": "ABC"})
        ));
    }

    // ---- Display round-trip ----

    #[test]
    fn display_round_trips() {
        // scim2-models test_rendering_a_filter_yields_an_equivalent_filter
        for s in [
            r#"userName eq "bjensen""#,
            "title pr",
            r#"emails[type eq "work" or (type eq "home" and value ew "@example.com")]"#,
            r#"title pr or userType eq "Intern" and active eq true"#,
            "(a eq 1 or b eq 2) and c eq 3",
            "a eq 1 and (b eq 2 or c eq 3)",
            "a pr or (b pr or c pr)",
            "a pr and (b pr and c pr)",
            "not (a eq 1) and b pr",
            "not (not (a pr))",
            "x eq null",
            "y eq false",
            "z eq -2.5",
            r#"display eq "with \" quote""#,
            r#"urn:ietf:params:scim:schemas:core:2.0:User:userName eq "x""#,
        ] {
            let f = p(s);
            assert_eq!(p(&f.to_string()), f, "{s} → {f}");
        }
        assert_eq!(
            p("a pr or b pr and c pr").to_string(),
            "a pr or b pr and c pr"
        );
        assert_eq!(
            p("(a pr or b pr) and c pr").to_string(),
            "(a pr or b pr) and c pr"
        );
    }

    fn arb_value() -> impl Strategy<Value = CompValue> {
        prop_oneof![
            any::<String>().prop_map(CompValue::Str),
            any::<bool>().prop_map(CompValue::Bool),
            any::<i64>().prop_map(|i| CompValue::Num(i.into())),
            (-1.0e12f64..1.0e12).prop_map(|f| CompValue::Num(Number::from_f64(f).unwrap())),
            Just(CompValue::Null),
        ]
    }

    fn arb_op() -> impl Strategy<Value = CompareOp> {
        prop::sample::select(CompareOp::ALL.to_vec())
    }

    fn arb_path() -> impl Strategy<Value = AttrPath> {
        (
            prop::sample::select(vec![
                "userName", "title", "emails", "name", "x-y_z1", "not", "and",
            ]),
            prop::option::of(prop::sample::select(vec!["value", "givenName", "$ref"])),
            prop::option::of(prop::sample::select(vec![
                USER_SCHEMA,
                ENTERPRISE_USER_SCHEMA,
            ])),
        )
            .prop_map(|(a, s, u)| AttrPath {
                urn: u.map(str::to_string),
                attr: a.to_string(),
                sub_attr: s.map(str::to_string),
            })
    }

    fn arb_rel_leaf() -> impl Strategy<Value = Filter> {
        let name = prop::sample::select(vec!["type", "value", "primary", "display"]);
        prop_oneof![
            (name.clone(), arb_op(), arb_value()).prop_map(|(n, op, value)| Filter::Compare {
                path: AttrPath::new(n),
                op,
                value
            }),
            name.prop_map(|n| Filter::Present {
                path: AttrPath::new(n)
            }),
        ]
    }

    fn arb_filter() -> impl Strategy<Value = Filter> {
        let rel = arb_rel_leaf().prop_recursive(3, 12, 2, |inner| {
            prop_oneof![
                (inner.clone(), inner.clone()).prop_map(|(a, b)| Filter::and(a, b)),
                (inner.clone(), inner.clone()).prop_map(|(a, b)| Filter::or(a, b)),
                inner.prop_map(Filter::not),
            ]
        });
        let leaf = prop_oneof![
            (arb_path(), arb_op(), arb_value()).prop_map(|(path, op, value)| Filter::Compare {
                path,
                op,
                value
            }),
            arb_path().prop_map(|path| Filter::Present { path }),
            (prop::sample::select(vec!["emails", "members"]), rel).prop_map(|(a, f)| {
                Filter::ValuePath {
                    path: AttrPath::new(a),
                    filter: Box::new(f),
                }
            }),
        ];
        leaf.prop_recursive(5, 48, 2, |inner| {
            prop_oneof![
                (inner.clone(), inner.clone()).prop_map(|(a, b)| Filter::and(a, b)),
                (inner.clone(), inner.clone()).prop_map(|(a, b)| Filter::or(a, b)),
                inner.prop_map(Filter::not),
            ]
        })
    }

    proptest! {
        #[test]
        fn display_then_parse_is_identity(f in arb_filter()) {
            let text = f.to_string();
            let back = parse(&text);
            prop_assert_eq!(back, Ok(f), "{}", text);
        }

        #[test]
        fn parse_never_panics(s in "\\PC{0,64}") {
            let _ = parse(&s);
        }

        #[test]
        fn parse_never_panics_on_filter_like_text(s in "[a-z\\[\\]().\" :$0-9-]{0,48}") {
            if let Err(e) = parse(&s) {
                prop_assert_eq!(e.scim_type, Some(ScimType::InvalidFilter));
            }
        }
    }
}
