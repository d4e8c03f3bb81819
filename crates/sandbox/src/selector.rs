//! Label and field selectors, parsed and matched the way kube-apiserver does
//! (k8s.io/apimachinery/pkg/labels/selector.go, pkg/fields/selector.go,
//! metav1.LabelSelectorAsSelector). Error texts follow the real server's.

use serde_json::{Map, Value};
use std::fmt;

/// A label-requirement operator (k8s.io/apimachinery/pkg/selection).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    Equals,
    DoubleEquals,
    NotEquals,
    In,
    NotIn,
    Exists,
    DoesNotExist,
    GreaterThan,
    LessThan,
}

/// One `key op values` term; a selector is the AND of its requirements.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Requirement {
    pub key: String,
    pub op: Op,
    /// Sorted and de-duplicated, as the parser's string set yields them.
    pub values: Vec<String>,
}

impl Requirement {
    /// Builds a validated requirement (labels.NewRequirement).
    pub fn new(key: &str, op: Op, mut values: Vec<String>) -> Result<Requirement, String> {
        let mut errs = Vec::new();
        if let Err(e) = validate_label_key(key) {
            errs.push(format!("key: Invalid value: {key:?}: {e}"));
        }
        let bad_count =
            |msg: &str, v: &[String]| format!("values: Invalid value: {}: {msg}", go_slice(v));
        match op {
            Op::In | Op::NotIn if values.is_empty() => errs.push(bad_count(
                "for 'in', 'notin' operators, values set can't be empty",
                &values,
            )),
            Op::Equals | Op::DoubleEquals | Op::NotEquals if values.len() != 1 => {
                errs.push(bad_count(
                    "exact-match compatibility requires one single value",
                    &values,
                ))
            }
            Op::Exists | Op::DoesNotExist if !values.is_empty() => errs.push(bad_count(
                "values set must be empty for exists and does not exist",
                &values,
            )),
            Op::GreaterThan | Op::LessThan => {
                if values.len() != 1 {
                    errs.push(bad_count(
                        "for 'Gt', 'Lt' operators, exactly one value is required",
                        &values,
                    ));
                }
                for (i, v) in values.iter().enumerate() {
                    if v.parse::<i64>().is_err() {
                        errs.push(format!(
                            "values[{i}]: Invalid value: {v:?}: for 'Gt', 'Lt' operators, the value must be an integer"
                        ));
                    }
                }
            }
            _ => {}
        }
        for (i, v) in values.iter().enumerate() {
            if let Err(e) = validate_label_value(v) {
                errs.push(format!("values[{i}][{key}]: Invalid value: {v:?}: {e}"));
            }
        }
        errs.dedup();
        match errs.len() {
            0 => {}
            1 => return Err(errs.remove(0)),
            _ => return Err(format!("[{}]", errs.join(", "))),
        }
        values.sort();
        values.dedup();
        Ok(Requirement {
            key: key.to_string(),
            op,
            values,
        })
    }

    fn matches(&self, labels: Option<&Map<String, Value>>) -> bool {
        let val = labels.and_then(|l| l.get(&self.key)).map(label_str);
        let has = |v: &str| self.values.iter().any(|x| x == v);
        match self.op {
            Op::In | Op::Equals | Op::DoubleEquals => val.is_some_and(|v| has(&v)),
            Op::NotIn | Op::NotEquals => val.is_none_or(|v| !has(&v)),
            Op::Exists => val.is_some(),
            Op::DoesNotExist => val.is_none(),
            Op::GreaterThan | Op::LessThan => {
                let (Some(Ok(l)), Some(Ok(r))) = (
                    val.map(|v| v.parse::<i64>()),
                    self.values.first().map(|v| v.parse::<i64>()),
                ) else {
                    return false;
                };
                if self.op == Op::GreaterThan {
                    l > r
                } else {
                    l < r
                }
            }
        }
    }
}

impl fmt::Display for Requirement {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let vals = self.values.join(",");
        match self.op {
            Op::DoesNotExist => write!(f, "!{}", self.key),
            Op::Exists => write!(f, "{}", self.key),
            Op::Equals => write!(f, "{}={vals}", self.key),
            Op::DoubleEquals => write!(f, "{}=={vals}", self.key),
            Op::NotEquals => write!(f, "{}!={vals}", self.key),
            Op::GreaterThan => write!(f, "{}>{vals}", self.key),
            Op::LessThan => write!(f, "{}<{vals}", self.key),
            Op::In => write!(f, "{} in ({vals})", self.key),
            Op::NotIn => write!(f, "{} notin ({vals})", self.key),
        }
    }
}

/// A parsed label selector. `Display` gives the canonical string form.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LabelSelector {
    reqs: Vec<Requirement>,
    /// labels.Nothing(): what a nil metav1.LabelSelector means.
    nothing: bool,
}

impl LabelSelector {
    /// Matches every object (empty string, or `{}` as a selector object).
    pub fn everything() -> Self {
        LabelSelector {
            reqs: Vec::new(),
            nothing: false,
        }
    }

    /// Matches no object (a missing/null selector object, e.g. on a PDB).
    pub fn nothing() -> Self {
        LabelSelector {
            reqs: Vec::new(),
            nothing: true,
        }
    }

    /// True when the selector places no restriction (matches everything).
    pub fn is_everything(&self) -> bool {
        !self.nothing && self.reqs.is_empty()
    }

    /// True for the match-nothing selector.
    pub fn is_nothing(&self) -> bool {
        self.nothing
    }

    pub fn requirements(&self) -> &[Requirement] {
        &self.reqs
    }

    /// Parses `?labelSelector=` syntax (labels.Parse).
    pub fn parse(s: &str) -> Result<LabelSelector, String> {
        let mut p = Parser {
            toks: lex(s),
            pos: 0,
        };
        let mut reqs = p.parse()?;
        reqs.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(LabelSelector {
            reqs,
            nothing: false,
        })
    }

    /// Converts a metav1.LabelSelector JSON object (metav1.LabelSelectorAsSelector).
    /// `null` gives [`LabelSelector::nothing`]; `{}` gives [`LabelSelector::everything`].
    /// Pass `Value::Null` when the field is absent.
    pub fn from_label_selector_object(sel: &Value) -> Result<LabelSelector, String> {
        let obj = match sel {
            Value::Null => return Ok(Self::nothing()),
            Value::Object(o) => o,
            _ => return Err("label selector must be an object".into()),
        };
        let mut reqs = Vec::new();
        if let Some(ml) = obj.get("matchLabels").and_then(Value::as_object) {
            for (k, v) in ml {
                reqs.push(Requirement::new(k, Op::Equals, vec![label_str(v)])?);
            }
        }
        for e in obj
            .get("matchExpressions")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            let key = e.get("key").and_then(Value::as_str).unwrap_or("");
            let op_s = e.get("operator").and_then(Value::as_str).unwrap_or("");
            let op = match op_s {
                "In" => Op::In,
                "NotIn" => Op::NotIn,
                "Exists" => Op::Exists,
                "DoesNotExist" => Op::DoesNotExist,
                _ => return Err(format!("{op_s:?} is not a valid label selector operator")),
            };
            let vals = e.get("values").and_then(Value::as_array);
            let vals = vals.into_iter().flatten().map(label_str).collect();
            reqs.push(Requirement::new(key, op, vals)?);
        }
        reqs.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(LabelSelector {
            reqs,
            nothing: false,
        })
    }

    /// Matches an object's `metadata.labels` (None = no labels).
    pub fn matches(&self, labels: Option<&Map<String, Value>>) -> bool {
        !self.nothing && self.reqs.iter().all(|r| r.matches(labels))
    }
}

impl fmt::Display for LabelSelector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let parts: Vec<String> = self.reqs.iter().map(ToString::to_string).collect();
        f.write_str(&parts.join(","))
    }
}

fn label_str(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

/// Go's `%#v` of a []string, used in field.Invalid messages.
fn go_slice(v: &[String]) -> String {
    let items: Vec<String> = v.iter().map(|s| format!("{s:?}")).collect();
    format!("[]string{{{}}}", items.join(", "))
}

// ---- lexer / parser (a port of labels.Lexer and labels.Parser) ----

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    End,
    ClosedPar,
    Comma,
    DoesNotExist,
    DoubleEquals,
    Equals,
    GreaterThan,
    Ident(String),
    In,
    LessThan,
    NotEquals,
    NotIn,
    OpenPar,
}

impl Tok {
    fn literal(&self) -> &str {
        match self {
            Tok::End => "",
            Tok::ClosedPar => ")",
            Tok::Comma => ",",
            Tok::DoesNotExist => "!",
            Tok::DoubleEquals => "==",
            Tok::Equals => "=",
            Tok::GreaterThan => ">",
            Tok::Ident(s) => s,
            Tok::In => "in",
            Tok::LessThan => "<",
            Tok::NotEquals => "!=",
            Tok::NotIn => "notin",
            Tok::OpenPar => "(",
        }
    }

    /// In value position the keywords `in`/`notin` are plain identifiers.
    fn into_value(self) -> Tok {
        match self {
            Tok::In => Tok::Ident("in".into()),
            Tok::NotIn => Tok::Ident("notin".into()),
            t => t,
        }
    }
}

fn keyword(s: &str) -> Option<Tok> {
    Some(match s {
        ")" => Tok::ClosedPar,
        "," => Tok::Comma,
        "!" => Tok::DoesNotExist,
        "==" => Tok::DoubleEquals,
        "=" => Tok::Equals,
        ">" => Tok::GreaterThan,
        "in" => Tok::In,
        "<" => Tok::LessThan,
        "!=" => Tok::NotEquals,
        "notin" => Tok::NotIn,
        "(" => Tok::OpenPar,
        _ => return None,
    })
}

fn is_special(c: u8) -> bool {
    matches!(c, b'=' | b'!' | b'(' | b')' | b',' | b'>' | b'<')
}

fn is_ws(c: u8) -> bool {
    matches!(c, b' ' | b'\t' | b'\r' | b'\n')
}

fn lex(s: &str) -> Vec<Tok> {
    let b = s.as_bytes();
    let mut i = 0;
    let mut out = Vec::new();
    loop {
        while i < b.len() && is_ws(b[i]) {
            i += 1;
        }
        if i >= b.len() {
            out.push(Tok::End);
            return out;
        }
        let start = i;
        if is_special(b[i]) {
            // Longest run of symbols that still forms an operator ("!=", "==").
            let mut best = None;
            while i < b.len() && is_special(b[i]) {
                match keyword(&s[start..=i]) {
                    Some(t) => best = Some((t, i + 1)),
                    None if best.is_some() => break,
                    None => {}
                }
                i += 1;
            }
            let (t, end) = best.expect("every single special symbol is a token");
            out.push(t);
            i = end;
        } else {
            while i < b.len() && !is_special(b[i]) && !is_ws(b[i]) {
                i += 1;
            }
            let lit = &s[start..i];
            out.push(keyword(lit).unwrap_or_else(|| Tok::Ident(lit.to_string())));
        }
    }
}

struct Parser {
    toks: Vec<Tok>,
    pos: usize,
}

const BINARY_OPS: &str = "in, notin, =, ==, !=, gt, lt";

impl Parser {
    fn peek(&self) -> Tok {
        self.toks[self.pos].clone().into_value()
    }

    fn next_raw(&mut self) -> Tok {
        self.pos += 1;
        self.toks[self.pos - 1].clone()
    }

    fn next(&mut self) -> Tok {
        self.next_raw().into_value()
    }

    fn parse(&mut self) -> Result<Vec<Requirement>, String> {
        let mut reqs = Vec::new();
        loop {
            match self.peek() {
                Tok::Ident(_) | Tok::DoesNotExist => {
                    let r = self
                        .requirement()
                        .map_err(|e| format!("unable to parse requirement: {e}"))?;
                    reqs.push(r);
                    match self.next() {
                        Tok::End => return Ok(reqs),
                        Tok::Comma => {
                            let t = self.peek();
                            if !matches!(t, Tok::Ident(_) | Tok::DoesNotExist) {
                                return Err(format!(
                                    "found '{}', expected: identifier after ','",
                                    t.literal()
                                ));
                            }
                        }
                        t => {
                            return Err(format!(
                                "found '{}', expected: ',' or 'end of string'",
                                t.literal()
                            ));
                        }
                    }
                }
                Tok::End => return Ok(reqs),
                t => {
                    return Err(format!(
                        "found '{}', expected: !, identifier, or 'end of string'",
                        t.literal()
                    ));
                }
            }
        }
    }

    fn requirement(&mut self) -> Result<Requirement, String> {
        let mut op = None;
        let mut t = self.next();
        if t == Tok::DoesNotExist {
            op = Some(Op::DoesNotExist);
            t = self.next();
        }
        let Tok::Ident(key) = t else {
            return Err(format!("found '{}', expected: identifier", t.literal()));
        };
        // The parser reports bad keys with a nil field path, hence "<nil>".
        validate_label_key(&key).map_err(|e| format!("<nil>: Invalid value: {key:?}: {e}"))?;
        if matches!(self.peek(), Tok::End | Tok::Comma) && op.is_none() {
            op = Some(Op::Exists);
        }
        if let Some(op) = op {
            return Requirement::new(&key, op, Vec::new());
        }
        let op = match self.next_raw() {
            Tok::In => Op::In,
            Tok::Equals => Op::Equals,
            Tok::DoubleEquals => Op::DoubleEquals,
            Tok::GreaterThan => Op::GreaterThan,
            Tok::LessThan => Op::LessThan,
            Tok::NotIn => Op::NotIn,
            Tok::NotEquals => Op::NotEquals,
            t => return Err(format!("found '{}', expected: {BINARY_OPS}", t.literal())),
        };
        let values = if matches!(op, Op::In | Op::NotIn) {
            self.set_values()?
        } else {
            self.exact_value()?
        };
        Requirement::new(&key, op, values)
    }

    fn set_values(&mut self) -> Result<Vec<String>, String> {
        let t = self.next();
        if t != Tok::OpenPar {
            return Err(format!("found '{}' expected: '('", t.literal()));
        }
        match self.peek() {
            Tok::Ident(_) | Tok::Comma => {
                let lit = self.peek();
                let vals = self.identifiers()?;
                if self.next() != Tok::ClosedPar {
                    return Err(format!("found '{}', expected: ')'", lit.literal()));
                }
                Ok(vals)
            }
            Tok::ClosedPar => {
                self.next();
                Ok(vec![String::new()])
            }
            t => Err(format!(
                "found '{}', expected: ',', ')' or identifier",
                t.literal()
            )),
        }
    }

    /// A comma separated list of possibly empty identifiers, e.g. `(a,,b)`.
    fn identifiers(&mut self) -> Result<Vec<String>, String> {
        let mut vals: Vec<String> = Vec::new();
        loop {
            match self.next() {
                Tok::Ident(v) => {
                    vals.push(v);
                    match self.peek() {
                        Tok::Comma => continue,
                        Tok::ClosedPar => return Ok(vals),
                        t => return Err(format!("found '{}', expected: ',' or ')'", t.literal())),
                    }
                }
                Tok::Comma => {
                    if vals.is_empty() {
                        vals.push(String::new());
                    }
                    match self.peek() {
                        Tok::ClosedPar => {
                            vals.push(String::new());
                            return Ok(vals);
                        }
                        Tok::Comma => vals.push(String::new()),
                        _ => {}
                    }
                }
                t => {
                    return Err(format!(
                        "found '{}', expected: ',', or identifier",
                        t.literal()
                    ));
                }
            }
        }
    }

    fn exact_value(&mut self) -> Result<Vec<String>, String> {
        if matches!(self.peek(), Tok::End | Tok::Comma) {
            return Ok(vec![String::new()]);
        }
        match self.next() {
            Tok::Ident(v) => Ok(vec![v]),
            t => Err(format!("found '{}', expected: identifier", t.literal())),
        }
    }
}

// ---- validation (k8s.io/apimachinery/pkg/util/validation) ----

fn regex_error(msg: &str, fmt: &str, examples: &[&str]) -> String {
    let ex: Vec<String> = examples.iter().map(|e| format!("'{e}', ")).collect();
    format!(
        "{msg} (e.g. {}regex used for validation is '{fmt}')",
        ex.join(" or ")
    )
}

const QNAME_FMT: &str = "([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]";
const QNAME_MSG: &str = "must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character";

fn is_qualified_name_part(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b[0].is_ascii_alphanumeric()
        && b[b.len() - 1].is_ascii_alphanumeric()
        && b.iter()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.'))
}

fn is_dns1123_subdomain(s: &str) -> bool {
    s.split('.').all(|l| {
        let b = l.as_bytes();
        !b.is_empty()
            && b.iter()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
            && b[0] != b'-'
            && b[b.len() - 1] != b'-'
    })
}

/// validation.IsQualifiedName, errors joined with "; " as validateLabelKey does.
pub fn validate_label_key(key: &str) -> Result<(), String> {
    let parts: Vec<&str> = key.split('/').collect();
    let mut errs = Vec::new();
    let name = match parts.as_slice() {
        [name] => *name,
        [prefix, name] => {
            if prefix.is_empty() {
                errs.push("prefix part must be non-empty".to_string());
            } else {
                if prefix.len() > 253 {
                    errs.push("prefix part must be no more than 253 characters".to_string());
                }
                if !is_dns1123_subdomain(prefix) {
                    errs.push(format!("prefix part {}", regex_error(
                        "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character",
                        r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*",
                        &["example.com"],
                    )));
                }
            }
            *name
        }
        _ => {
            return Err(format!(
                "a qualified name {} with an optional DNS subdomain prefix and '/' (e.g. 'example.com/MyName')",
                regex_error(QNAME_MSG, QNAME_FMT, &["MyName", "my.name", "123-abc"])
            ));
        }
    };
    if name.is_empty() {
        errs.push("name part must be non-empty".into());
    } else if name.len() > 63 {
        errs.push("name part must be no more than 63 characters".into());
    }
    if !is_qualified_name_part(name) {
        errs.push(format!(
            "name part {}",
            regex_error(QNAME_MSG, QNAME_FMT, &["MyName", "my.name", "123-abc"])
        ));
    }
    if errs.is_empty() {
        Ok(())
    } else {
        Err(errs.join("; "))
    }
}

/// validation.IsValidLabelValue.
pub fn validate_label_value(v: &str) -> Result<(), String> {
    let mut errs = Vec::new();
    if v.len() > 63 {
        errs.push("must be no more than 63 characters".to_string());
    }
    if !v.is_empty() && !is_qualified_name_part(v) {
        errs.push(regex_error(
            "a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character",
            "(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?",
            &["MyValue", "my_value", "12345"],
        ));
    }
    if errs.is_empty() {
        Ok(())
    } else {
        Err(errs.join("; "))
    }
}

// ---- field selectors ----

/// One `field op value` term of a field selector.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldTerm {
    pub field: String,
    /// `false` for `!=`.
    pub equals: bool,
    pub value: String,
}

/// A parsed `?fieldSelector=`; terms are ANDed.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct FieldSelector {
    terms: Vec<FieldTerm>,
}

/// Fields whose Go type is a plain bool, so an absent field reads "false".
const BOOL_FIELDS: &[&str] = &["spec.unschedulable", "spec.hostNetwork"];

impl FieldSelector {
    /// fields.ParseSelector: comma separated terms (`\,` escapes), `!=`, `==`, `=`.
    pub fn parse(s: &str) -> Result<FieldSelector, String> {
        let mut terms = Vec::new();
        let mut parts = split_terms(s);
        parts.sort();
        for part in parts.into_iter().filter(|p| !p.is_empty()) {
            let (lhs, op, rhs) = split_term(&part)
                .ok_or_else(|| format!("invalid selector: '{s}'; can't understand '{part}'"))?;
            terms.push(FieldTerm {
                field: lhs.to_string(),
                equals: op != "!=",
                value: unescape(rhs)?,
            });
        }
        Ok(FieldSelector { terms })
    }

    pub fn terms(&self) -> &[FieldTerm] {
        &self.terms
    }

    pub fn is_everything(&self) -> bool {
        self.terms.is_empty()
    }

    /// The value a term requires for `field` with `=`/`==`, if any (e.g. spec.nodeName).
    pub fn requires_exact_match(&self, field: &str) -> Option<&str> {
        self.terms
            .iter()
            .find(|t| t.equals && t.field == field)
            .map(|t| t.value.as_str())
    }

    pub fn matches(&self, obj: &Value) -> bool {
        self.terms
            .iter()
            .all(|t| (field_value(obj, &t.field) == t.value) == t.equals)
    }
}

impl fmt::Display for FieldSelector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let parts: Vec<String> = self
            .terms
            .iter()
            .map(|t| {
                let v = t
                    .value
                    .replace('\\', r"\\")
                    .replace(',', r"\,")
                    .replace('=', r"\=");
                format!("{}{}{v}", t.field, if t.equals { "=" } else { "!=" })
            })
            .collect();
        f.write_str(&parts.join(","))
    }
}

/// The string the server compares for `path` (dotted) in `obj`.
pub fn field_value(obj: &Value, path: &str) -> String {
    let mut cur = Some(obj);
    for seg in path.split('.') {
        cur = cur.and_then(|v| v.get(seg));
    }
    // core/v1 Event's "source" field selector means source.component.
    if path == "source" {
        cur = cur.and_then(|v| v.get("component"));
    }
    match cur {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Bool(b)) => b.to_string(),
        Some(Value::Number(n)) => n.to_string(),
        None | Some(Value::Null) if BOOL_FIELDS.contains(&path) => "false".into(),
        _ => String::new(),
    }
}

fn split_terms(s: &str) -> Vec<String> {
    if s.is_empty() {
        return Vec::new();
    }
    let mut terms = Vec::new();
    let mut cur = String::new();
    let mut in_slash = false;
    for c in s.chars() {
        if in_slash {
            in_slash = false;
        } else if c == '\\' {
            in_slash = true;
        } else if c == ',' {
            terms.push(std::mem::take(&mut cur));
            continue;
        }
        cur.push(c);
    }
    terms.push(cur);
    terms
}

fn split_term(term: &str) -> Option<(&str, &str, &str)> {
    for (i, _) in term.char_indices() {
        for op in ["!=", "==", "="] {
            if term[i..].starts_with(op) {
                return Some((&term[..i], op, &term[i + op.len()..]));
            }
        }
    }
    None
}

fn unescape(s: &str) -> Result<String, String> {
    let mut out = String::new();
    let mut in_slash = false;
    for c in s.chars() {
        if in_slash {
            if !matches!(c, '\\' | ',' | '=') {
                return Err(format!(
                    "invalid field selector: invalid escape sequence: {s}"
                ));
            }
            out.push(c);
            in_slash = false;
        } else if c == '\\' {
            in_slash = true;
        } else if c == ',' || c == '=' {
            return Err(format!(
                "invalid field selector: unescaped character in value: {s}"
            ));
        } else {
            out.push(c);
        }
    }
    if in_slash {
        return Err(format!(
            "invalid field selector: invalid escape sequence: {s}"
        ));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn labels(v: Value) -> Map<String, Value> {
        v.as_object().unwrap().clone()
    }

    fn m(sel: &str, l: Value) -> bool {
        LabelSelector::parse(sel).unwrap().matches(Some(&labels(l)))
    }

    #[test]
    fn empty_selector_matches_everything() {
        let s = LabelSelector::parse("").unwrap();
        assert!(s.is_everything());
        assert!(s.matches(None));
        assert!(
            LabelSelector::parse("   ")
                .unwrap()
                .matches(Some(&labels(json!({"a": "b"}))))
        );
    }

    #[test]
    fn equality_operators() {
        let l = json!({"app": "web", "tier": "fe"});
        assert!(m("app=web", l.clone()));
        assert!(m("app==web", l.clone()));
        assert!(!m("app=db", l.clone()));
        assert!(m("app!=db", l.clone()));
        assert!(!m("app!=web", l.clone()));
        assert!(m("missing!=x", l.clone()), "!= matches when key absent");
        assert!(m(" app = web , tier=fe ", l.clone()));
        assert!(!m("app=web,tier=be", l));
    }

    #[test]
    fn set_operators() {
        let l = json!({"env": "prod"});
        assert!(m("env in (prod, dev)", l.clone()));
        assert!(m("env in(prod)", l.clone()));
        assert!(!m("env in (dev,qa)", l.clone()));
        assert!(m("env notin (dev,qa)", l.clone()));
        assert!(!m("env notin (prod)", l.clone()));
        assert!(m("other notin (x)", l.clone()));
        assert!(!m("other in (x)", l));
    }

    #[test]
    fn exists_and_not_exists() {
        let l = json!({"node-role.kubernetes.io/control-plane": ""});
        assert!(m("node-role.kubernetes.io/control-plane", l.clone()));
        assert!(!m("!node-role.kubernetes.io/control-plane", l.clone()));
        assert!(m("!foo", l.clone()));
        assert!(!m("foo", l.clone()));
        assert!(
            m("node-role.kubernetes.io/control-plane=", l),
            "empty value"
        );
        assert!(!LabelSelector::parse("a").unwrap().matches(None));
        assert!(LabelSelector::parse("!a").unwrap().matches(None));
    }

    #[test]
    fn gt_lt() {
        let l = json!({"n": "5"});
        assert!(m("n>3", l.clone()));
        assert!(!m("n<3", l.clone()));
        assert!(m("n<6", l));
        assert!(!m("n>3", json!({"n": "x"})));
        assert!(LabelSelector::parse("n>x").is_err());
    }

    #[test]
    fn keywords_are_values_in_value_position() {
        assert!(m("in=in", json!({"in": "in"})));
        assert!(m("a in (in,notin)", json!({"a": "notin"})));
    }

    #[test]
    fn empty_values_in_sets() {
        let s = LabelSelector::parse("x in (foo,,baz),y,z notin ()").unwrap();
        assert_eq!(s.to_string(), "x in (,baz,foo),y,z notin ()");
        assert!(s.matches(Some(&labels(json!({"x": "", "y": "1"})))));
    }

    #[test]
    fn canonical_string_sorted_by_key() {
        let s = LabelSelector::parse("b in (z,y),a=1,!c").unwrap();
        assert_eq!(s.to_string(), "a=1,b in (y,z),!c");
    }

    #[test]
    fn parse_errors_match_server_text() {
        assert_eq!(
            LabelSelector::parse("a=b c").unwrap_err(),
            "found 'c', expected: ',' or 'end of string'"
        );
        assert_eq!(
            LabelSelector::parse("a=b,").unwrap_err(),
            "found '', expected: identifier after ','"
        );
        assert_eq!(
            LabelSelector::parse("=a").unwrap_err(),
            "found '=', expected: !, identifier, or 'end of string'"
        );
        assert_eq!(
            LabelSelector::parse("a in b").unwrap_err(),
            "unable to parse requirement: found 'b' expected: '('"
        );
        assert_eq!(
            LabelSelector::parse("a b").unwrap_err(),
            "unable to parse requirement: found 'b', expected: in, notin, =, ==, !=, gt, lt"
        );
        assert_eq!(
            LabelSelector::parse("a@b=c").unwrap_err(),
            "unable to parse requirement: <nil>: Invalid value: \"a@b\": name part must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyName',  or 'my.name',  or '123-abc', regex used for validation is '([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]')"
        );
        assert_eq!(
            LabelSelector::parse("app=a@b").unwrap_err(),
            "unable to parse requirement: values[0][app]: Invalid value: \"a@b\": a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyValue',  or 'my_value',  or '12345', regex used for validation is '(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?')"
        );
        assert!(
            LabelSelector::parse("Example.com/a=b")
                .unwrap_err()
                .contains("prefix part a lowercase RFC 1123")
        );
        assert!(
            LabelSelector::parse("a/b/c")
                .unwrap_err()
                .contains("a qualified name must consist")
        );
        assert!(
            LabelSelector::parse(&format!("{}=x", "k".repeat(64)))
                .unwrap_err()
                .contains("no more than 63")
        );
        assert!(LabelSelector::parse("a in (x").is_err());
        assert!(LabelSelector::parse("!a=b").is_err());
    }

    #[test]
    fn label_selector_object() {
        let s = LabelSelector::from_label_selector_object(&json!({
            "matchLabels": {"app": "web"},
            "matchExpressions": [
                {"key": "tier", "operator": "In", "values": ["fe", "be"]},
                {"key": "canary", "operator": "DoesNotExist"}
            ]
        }))
        .unwrap();
        assert_eq!(s.to_string(), "app=web,!canary,tier in (be,fe)");
        assert!(s.matches(Some(&labels(json!({"app": "web", "tier": "fe"})))));
        assert!(!s.matches(Some(&labels(
            json!({"app": "web", "tier": "fe", "canary": "1"})
        ))));
        assert!(!s.matches(None));
    }

    #[test]
    fn empty_object_is_everything_null_is_nothing() {
        let all = LabelSelector::from_label_selector_object(&json!({})).unwrap();
        assert!(all.is_everything() && all.matches(None));
        let all = LabelSelector::from_label_selector_object(&json!({"matchLabels": {}})).unwrap();
        assert!(all.matches(Some(&labels(json!({"a": "b"})))));
        let none = LabelSelector::from_label_selector_object(&Value::Null).unwrap();
        assert!(none.is_nothing());
        assert!(!none.matches(None));
        assert!(!none.matches(Some(&labels(json!({"a": "b"})))));
    }

    #[test]
    fn label_selector_object_errors() {
        assert_eq!(
            LabelSelector::from_label_selector_object(
                &json!({"matchExpressions": [{"key": "a", "operator": "Foo"}]})
            )
            .unwrap_err(),
            "\"Foo\" is not a valid label selector operator"
        );
        assert_eq!(
            LabelSelector::from_label_selector_object(
                &json!({"matchExpressions": [{"key": "a", "operator": "In", "values": []}]})
            )
            .unwrap_err(),
            "values: Invalid value: []string{}: for 'in', 'notin' operators, values set can't be empty"
        );
        assert!(
            LabelSelector::from_label_selector_object(
                &json!({"matchExpressions": [{"key": "a", "operator": "Exists", "values": ["x"]}]})
            )
            .unwrap_err()
            .contains("values set must be empty")
        );
        assert!(
            LabelSelector::from_label_selector_object(&json!({"matchLabels": {"a": "b c"}}))
                .is_err()
        );
    }

    #[test]
    fn field_selector_basic() {
        let pod = json!({"metadata": {"name": "p1", "namespace": "default"},
                         "spec": {"nodeName": "n1"}, "status": {"phase": "Running"}});
        let fs = |s: &str| FieldSelector::parse(s).unwrap().matches(&pod);
        assert!(fs(""));
        assert!(fs("metadata.name=p1"));
        assert!(fs("metadata.name==p1,metadata.namespace=default"));
        assert!(fs("spec.nodeName!=n2"));
        assert!(!fs("spec.nodeName=n2"));
        assert!(fs("status.phase!=Failed,status.phase!=Succeeded"));
        assert!(fs("status.nominatedNodeName="), "missing compares as empty");
        assert!(!fs("status.nominatedNodeName!="));
        assert_eq!(
            FieldSelector::parse("spec.nodeName=n1")
                .unwrap()
                .requires_exact_match("spec.nodeName"),
            Some("n1")
        );
    }

    #[test]
    fn field_selector_bools_and_events() {
        let node = json!({"metadata": {"name": "n"}, "spec": {}});
        assert!(
            FieldSelector::parse("spec.unschedulable=false")
                .unwrap()
                .matches(&node)
        );
        let cordoned = json!({"spec": {"unschedulable": true}});
        assert!(
            FieldSelector::parse("spec.unschedulable=true")
                .unwrap()
                .matches(&cordoned)
        );
        let ev = json!({"involvedObject": {"kind": "Pod", "name": "p"}, "source": {"component": "kubelet"}, "count": 3});
        assert!(
            FieldSelector::parse("involvedObject.kind=Pod,involvedObject.name=p")
                .unwrap()
                .matches(&ev)
        );
        assert!(FieldSelector::parse("source=kubelet").unwrap().matches(&ev));
        assert!(FieldSelector::parse("count=3").unwrap().matches(&ev));
    }

    #[test]
    fn field_selector_escapes_and_errors() {
        let fs = FieldSelector::parse(r"metadata.name=a\,b\=c").unwrap();
        assert_eq!(fs.terms()[0].value, "a,b=c");
        assert!(fs.matches(&json!({"metadata": {"name": "a,b=c"}})));
        assert_eq!(fs.to_string(), r"metadata.name=a\,b\=c");
        assert_eq!(
            FieldSelector::parse("foo").unwrap_err(),
            "invalid selector: 'foo'; can't understand 'foo'"
        );
        assert!(
            FieldSelector::parse(r"a=b\x")
                .unwrap_err()
                .contains("invalid escape sequence")
        );
        assert!(
            FieldSelector::parse("a==b=c")
                .unwrap_err()
                .contains("unescaped character")
        );
        let fs = FieldSelector::parse("a!=b").unwrap();
        let t = &fs.terms()[0];
        assert!(!t.equals && t.field == "a" && t.value == "b");
    }
}
