//! Label selectors in the string syntax of `kubectl -l` and the API's
//! `labelSelector` (k8s.io/apimachinery/pkg/labels): requirements separated
//! by commas, all of which must hold.
//!
//! - `key=value`, `key==value`, `key!=value` (absent also matches `!=`)
//! - `key in (a,b)`, `key notin (a,b)` (absent also matches `notin`)
//! - `key` (exists), `!key` (does not exist)
//! - `key>5`, `key<5` (the label is an integer greater / less than)
//!
//! Keys are qualified names (`prefix/name`), values label values (at most 63
//! characters, alphanumerics, `-`, `_`, `.`, starting and ending
//! alphanumeric, or empty). The empty selector matches every node.

use crate::names::{check_label_value, check_qualified_name};
use std::collections::BTreeMap;
use std::fmt;

/// A requirement's operator.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    /// `=` / `==`.
    Equals,
    /// `!=`.
    NotEquals,
    /// `in (...)`.
    In,
    /// `notin (...)`.
    NotIn,
    /// `key`.
    Exists,
    /// `!key`.
    DoesNotExist,
    /// `key>N`.
    GreaterThan,
    /// `key<N`.
    LessThan,
}

/// One `key op values` term.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Requirement {
    /// The label key.
    pub key: String,
    /// The operator.
    pub op: Op,
    /// Sorted, de-duplicated values (one for `=`/`!=`/`>`/`<`, none for exists).
    pub values: Vec<String>,
}

/// A parsed label selector: the AND of its requirements.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct LabelSelector {
    requirements: Vec<Requirement>,
}

/// Why a selector does not parse (without the flag's name).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid label selector {selector:?}: {reason}")]
pub struct SelectorError {
    /// The selector given.
    pub selector: String,
    /// What is wrong.
    pub reason: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Tok {
    Ident(String),
    Not,
    Eq,
    DoubleEq,
    NotEq,
    Gt,
    Lt,
    Open,
    Close,
    Comma,
}

fn tokenize(s: &str) -> Result<Vec<Tok>, String> {
    let special = |c: char| "(),=!<>".contains(c) || c.is_whitespace();
    let mut out = Vec::new();
    let mut chars = s.char_indices().peekable();
    while let Some(&(i, c)) = chars.peek() {
        if c.is_whitespace() {
            chars.next();
            continue;
        }
        let two = s.get(i..i + 2);
        let tok = match (c, two) {
            (_, Some("!=")) => Some((Tok::NotEq, 2)),
            (_, Some("==")) => Some((Tok::DoubleEq, 2)),
            ('!', _) => Some((Tok::Not, 1)),
            ('=', _) => Some((Tok::Eq, 1)),
            ('>', _) => Some((Tok::Gt, 1)),
            ('<', _) => Some((Tok::Lt, 1)),
            ('(', _) => Some((Tok::Open, 1)),
            (')', _) => Some((Tok::Close, 1)),
            (',', _) => Some((Tok::Comma, 1)),
            _ => None,
        };
        if let Some((t, n)) = tok {
            out.push(t);
            for _ in 0..n {
                chars.next();
            }
            continue;
        }
        let mut ident = String::new();
        while let Some(&(_, c)) = chars.peek() {
            if special(c) {
                break;
            }
            ident.push(c);
            chars.next();
        }
        out.push(Tok::Ident(ident));
    }
    Ok(out)
}

struct Parser {
    toks: Vec<Tok>,
    pos: usize,
}

impl Parser {
    fn peek(&self) -> Option<&Tok> {
        self.toks.get(self.pos)
    }
    fn next(&mut self) -> Option<Tok> {
        let t = self.toks.get(self.pos).cloned();
        self.pos += 1;
        t
    }
    fn at_end_of_requirement(&self) -> bool {
        matches!(self.peek(), None | Some(Tok::Comma))
    }

    fn key(&mut self) -> Result<String, String> {
        match self.next() {
            Some(Tok::Ident(k)) => {
                check_qualified_name(&k).map_err(|e| format!("invalid key {k:?}: {e}"))?;
                Ok(k)
            }
            other => Err(format!("expected a label key, found {}", describe(other))),
        }
    }

    fn value(&mut self) -> Result<String, String> {
        // An empty value is allowed: `key=` and `key in (a,)`.
        match self.peek() {
            Some(Tok::Ident(_)) => {
                let Some(Tok::Ident(v)) = self.next() else {
                    unreachable!()
                };
                check_label_value(&v).map_err(|e| format!("invalid value {v:?}: {e}"))?;
                Ok(v)
            }
            None | Some(Tok::Comma) | Some(Tok::Close) => Ok(String::new()),
            _ => Err(format!("expected a value, found {}", describe(self.next()))),
        }
    }

    fn requirement(&mut self) -> Result<Requirement, String> {
        if self.peek() == Some(&Tok::Not) {
            self.next();
            let key = self.key()?;
            if !self.at_end_of_requirement() {
                return Err(format!(
                    "unexpected {} after !{key}",
                    describe(self.peek().cloned())
                ));
            }
            return Ok(Requirement {
                key,
                op: Op::DoesNotExist,
                values: vec![],
            });
        }
        let key = self.key()?;
        if self.at_end_of_requirement() {
            return Ok(Requirement {
                key,
                op: Op::Exists,
                values: vec![],
            });
        }
        let (op, values) = match self.next() {
            Some(Tok::Eq) | Some(Tok::DoubleEq) => (Op::Equals, vec![self.value()?]),
            Some(Tok::NotEq) => (Op::NotEquals, vec![self.value()?]),
            Some(t @ (Tok::Gt | Tok::Lt)) => {
                let v = match self.next() {
                    Some(Tok::Ident(v)) if v.parse::<i64>().is_ok() => v,
                    other => {
                        return Err(format!(
                            "expected an integer after '>' or '<', found {}",
                            describe(other)
                        ));
                    }
                };
                let op = if t == Tok::Gt {
                    Op::GreaterThan
                } else {
                    Op::LessThan
                };
                (op, vec![v])
            }
            Some(Tok::Ident(w)) if w == "in" || w == "notin" => {
                if self.next() != Some(Tok::Open) {
                    return Err(format!("expected '(' after {w}"));
                }
                let mut vals = Vec::new();
                loop {
                    vals.push(self.value()?);
                    match self.next() {
                        Some(Tok::Comma) => continue,
                        Some(Tok::Close) => break,
                        other => {
                            return Err(format!(
                                "expected ',' or ')' in the {w} list, found {}",
                                describe(other)
                            ));
                        }
                    }
                }
                vals.sort();
                vals.dedup();
                (if w == "in" { Op::In } else { Op::NotIn }, vals)
            }
            other => {
                return Err(format!(
                    "expected an operator (=, ==, !=, in, notin, >, <) after {key:?}, found {}",
                    describe(other)
                ));
            }
        };
        if !self.at_end_of_requirement() {
            return Err(format!(
                "unexpected {} after the requirement on {key:?}",
                describe(self.peek().cloned())
            ));
        }
        Ok(Requirement { key, op, values })
    }
}

fn describe(t: Option<Tok>) -> String {
    match t {
        None => "the end".into(),
        Some(Tok::Ident(s)) => format!("{s:?}"),
        Some(Tok::Not) => "'!'".into(),
        Some(Tok::Eq) => "'='".into(),
        Some(Tok::DoubleEq) => "'=='".into(),
        Some(Tok::NotEq) => "'!='".into(),
        Some(Tok::Gt) => "'>'".into(),
        Some(Tok::Lt) => "'<'".into(),
        Some(Tok::Open) => "'('".into(),
        Some(Tok::Close) => "')'".into(),
        Some(Tok::Comma) => "','".into(),
    }
}

impl LabelSelector {
    /// Parses the string syntax (see the module docs). Blank means "everything".
    pub fn parse(s: &str) -> Result<LabelSelector, SelectorError> {
        let err = |reason: String| SelectorError {
            selector: s.to_string(),
            reason,
        };
        let toks = tokenize(s).map_err(err)?;
        let mut p = Parser { toks, pos: 0 };
        let mut requirements = Vec::new();
        if p.peek().is_none() {
            return Ok(LabelSelector { requirements });
        }
        loop {
            requirements.push(p.requirement().map_err(err)?);
            match p.next() {
                None => break,
                Some(Tok::Comma) => {
                    if p.peek().is_none() {
                        return Err(err("a trailing ',' needs another requirement".into()));
                    }
                }
                other => return Err(err(format!("unexpected {}", describe(other)))),
            }
        }
        Ok(LabelSelector { requirements })
    }

    /// The requirements, in the order given.
    pub fn requirements(&self) -> &[Requirement] {
        &self.requirements
    }

    /// Whether it selects everything.
    pub fn is_empty(&self) -> bool {
        self.requirements.is_empty()
    }

    /// Whether `labels` satisfy every requirement.
    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        self.requirements.iter().all(|r| {
            let v = labels.get(&r.key);
            let int = |v: Option<&String>| v.and_then(|v| v.parse::<i64>().ok());
            let bound = r.values.first().and_then(|b| b.parse::<i64>().ok());
            match r.op {
                Op::Equals => v.is_some_and(|v| r.values.contains(v)),
                Op::NotEquals => v.is_none_or(|v| !r.values.contains(v)),
                Op::In => v.is_some_and(|v| r.values.contains(v)),
                Op::NotIn => v.is_none_or(|v| !r.values.contains(v)),
                Op::Exists => v.is_some(),
                Op::DoesNotExist => v.is_none(),
                Op::GreaterThan => matches!((int(v), bound), (Some(a), Some(b)) if a > b),
                Op::LessThan => matches!((int(v), bound), (Some(a), Some(b)) if a < b),
            }
        })
    }
}

impl fmt::Display for LabelSelector {
    /// The canonical string form, accepted by the API's `labelSelector`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, r) in self.requirements.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            let one = r.values.first().map(String::as_str).unwrap_or("");
            match r.op {
                Op::Equals => write!(f, "{}={one}", r.key)?,
                Op::NotEquals => write!(f, "{}!={one}", r.key)?,
                Op::In => write!(f, "{} in ({})", r.key, r.values.join(","))?,
                Op::NotIn => write!(f, "{} notin ({})", r.key, r.values.join(","))?,
                Op::Exists => write!(f, "{}", r.key)?,
                Op::DoesNotExist => write!(f, "!{}", r.key)?,
                Op::GreaterThan => write!(f, "{}>{one}", r.key)?,
                Op::LessThan => write!(f, "{}<{one}", r.key)?,
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn sel(s: &str) -> LabelSelector {
        LabelSelector::parse(s).unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn parses_and_matches_every_form() {
        let l = labels(&[("role", "worker"), ("zone", "a"), ("gen", "5"), ("x", "")]);
        let yes = [
            "",
            "  ",
            "role=worker",
            "role==worker",
            "role = worker",
            "role!=master",
            "missing!=x",
            "zone in (a,b)",
            "zone in ( b , a )",
            "zone notin (b,c)",
            "missing notin (b)",
            "role",
            "!missing",
            "gen>4",
            "gen<6",
            "x=",
            "x in (,a)",
            "role=worker,zone in (a),!missing",
            "example.com/key notin (v)",
        ];
        for s in yes {
            assert!(sel(s).matches(&l), "{s:?} should match");
        }
        let no = [
            "role=master",
            "role!=worker",
            "zone in (b)",
            "missing in (a)",
            "zone notin (a)",
            "missing",
            "!role",
            "gen>5",
            "gen<5",
            "role>1",
            "missing<9",
            "role=worker,zone=b",
        ];
        for s in no {
            assert!(!sel(s).matches(&l), "{s:?} should not match");
        }
        assert!(sel("").is_empty());
    }

    #[test]
    fn bad_selectors_are_errors() {
        for bad in [
            "=x",
            "a=b=c",
            "a in b",
            "a in (b",
            "a in (b c)",
            "a,",
            ",a",
            "a b",
            "!a=b",
            "a>b",
            "a>",
            "bad key=x",
            "-a=b",
            "a=-b",
            "a=b)",
            "Example.com/a=b",
            &format!("a={}", "v".repeat(64)),
            "a!",
        ] {
            let e = LabelSelector::parse(bad).unwrap_err();
            assert_eq!(e.selector, bad);
            assert!(e.to_string().contains("invalid label selector"), "{e}");
        }
    }

    #[test]
    fn canonical_form() {
        assert_eq!(
            sel(" b in (y, x ,x), a == 1 ,!c,d,e!=f,g notin (h),i>3,j<-2").to_string(),
            "b in (x,y),a=1,!c,d,e!=f,g notin (h),i>3,j<-2"
        );
    }

    fn any_requirement() -> impl Strategy<Value = String> {
        let key = prop::sample::select(vec!["a", "b", "example.com/c"]);
        let val = prop::sample::select(vec!["", "x", "y", "1", "7"]);
        let vals = prop::collection::vec(val.clone(), 1..3);
        prop_oneof![
            (key.clone(), val.clone()).prop_map(|(k, v)| format!("{k}={v}")),
            (key.clone(), val.clone()).prop_map(|(k, v)| format!("{k} != {v}")),
            (key.clone(), vals.clone()).prop_map(|(k, v)| format!("{k} in ({})", v.join(","))),
            (key.clone(), vals).prop_map(|(k, v)| format!("{k} notin ({})", v.join(", "))),
            key.clone().prop_map(|k| k.to_string()),
            key.clone().prop_map(|k| format!("!{k}")),
            (key.clone(), 0i64..9).prop_map(|(k, n)| format!("{k}>{n}")),
            (key, 0i64..9).prop_map(|(k, n)| format!("{k} < {n}")),
        ]
    }

    proptest! {
        /// The canonical form parses back to the same selector, and every
        /// selector is the AND of its requirements.
        #[test]
        fn roundtrip_and_conjunction(
            reqs in prop::collection::vec(any_requirement(), 1..4),
            a in prop::option::of(prop::sample::select(vec!["", "x", "y", "1", "7"])),
            b in prop::option::of(prop::sample::select(vec!["", "x", "y", "1", "7"])),
        ) {
            let s = sel(&reqs.join(","));
            prop_assert_eq!(&sel(&s.to_string()), &s);
            let mut l = BTreeMap::new();
            if let Some(a) = a { l.insert("a".to_string(), a.to_string()); }
            if let Some(b) = b { l.insert("example.com/c".to_string(), b.to_string()); }
            let each = reqs.iter().all(|r| sel(r).matches(&l));
            prop_assert_eq!(s.matches(&l), each);
        }
    }
}
