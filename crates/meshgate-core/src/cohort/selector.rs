//! Label selectors with Prometheus semantics: `{a="x", b!="y", c=~"re", d!~"re"}`.

use std::fmt;

use regex::Regex;

/// How one matcher compares.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MatchOp {
    /// `=`
    Eq,
    /// `!=`
    Ne,
    /// `=~` (fully anchored regex)
    Re,
    /// `!~` (fully anchored regex)
    NotRe,
}

/// One `name op "value"` matcher.
#[derive(Clone, Debug)]
pub struct Matcher {
    /// Label name.
    pub name: String,
    /// Comparison.
    pub op: MatchOp,
    /// Value or regex source.
    pub value: String,
    re: Option<Regex>,
}

impl PartialEq for Matcher {
    fn eq(&self, other: &Self) -> bool {
        self.name == other.name && self.op == other.op && self.value == other.value
    }
}

// === impl Matcher ===

impl Matcher {
    /// A validated matcher (the regex compiled, anchored like Prometheus).
    pub fn try_new(name: &str, op: MatchOp, value: &str) -> Result<Self, SelectorError> {
        let re = match op {
            MatchOp::Re | MatchOp::NotRe => Some(
                Regex::new(&format!("^(?:{value})$"))
                    .map_err(|e| SelectorError::new(0, format!("bad regex for {name}: {e}")))?,
            ),
            _ => None,
        };
        Ok(Self {
            name: name.to_owned(),
            op,
            value: value.to_owned(),
            re,
        })
    }

    /// Whether a label value (None when the label is absent, which Prometheus treats as "") matches.
    pub fn matches(&self, value: Option<&str>) -> bool {
        let v = value.unwrap_or("");
        match self.op {
            MatchOp::Eq => v == self.value,
            MatchOp::Ne => v != self.value,
            MatchOp::Re => self.re.as_ref().is_some_and(|r| r.is_match(v)),
            MatchOp::NotRe => !self.re.as_ref().is_some_and(|r| r.is_match(v)),
        }
    }
}

impl fmt::Display for Matcher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let op = match self.op {
            MatchOp::Eq => "=",
            MatchOp::Ne => "!=",
            MatchOp::Re => "=~",
            MatchOp::NotRe => "!~",
        };
        write!(f, "{}{}{:?}", self.name, op, self.value)
    }
}

/// A conjunction of matchers.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Selector {
    matchers: Vec<Matcher>,
}

/// A selector that does not parse.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("selector column {column}: {message}")]
pub struct SelectorError {
    /// 1-based byte column.
    pub column: usize,
    /// What is wrong.
    pub message: String,
}

impl SelectorError {
    fn new(pos: usize, message: impl Into<String>) -> Self {
        Self {
            column: pos + 1,
            message: message.into(),
        }
    }
}

// === impl Selector ===

impl Selector {
    /// Parse `{name="v", ...}`; the braces are optional, an empty text selects everything.
    pub fn parse(text: &str) -> Result<Self, SelectorError> {
        let b = text.as_bytes();
        let mut i = 0;
        let skip_ws = |i: &mut usize| {
            while *i < b.len() && b[*i].is_ascii_whitespace() {
                *i += 1;
            }
        };
        skip_ws(&mut i);
        let braced = i < b.len() && b[i] == b'{';
        if braced {
            i += 1;
        }
        let mut matchers = Vec::new();
        loop {
            skip_ws(&mut i);
            if i >= b.len() {
                if braced {
                    return Err(SelectorError::new(i, "missing closing '}'"));
                }
                break;
            }
            if b[i] == b'}' {
                if !braced {
                    return Err(SelectorError::new(i, "unexpected '}'"));
                }
                i += 1;
                skip_ws(&mut i);
                if i < b.len() {
                    return Err(SelectorError::new(i, "unexpected text after '}'"));
                }
                break;
            }
            let start = i;
            while i < b.len() && (b[i].is_ascii_alphanumeric() || b[i] == b'_') {
                i += 1;
            }
            if start == i || b[start].is_ascii_digit() {
                return Err(SelectorError::new(start, "expected a label name"));
            }
            let name = &text[start..i];
            skip_ws(&mut i);
            let op = match (b.get(i), b.get(i + 1)) {
                (Some(b'='), Some(b'~')) => (MatchOp::Re, 2),
                (Some(b'!'), Some(b'~')) => (MatchOp::NotRe, 2),
                (Some(b'!'), Some(b'=')) => (MatchOp::Ne, 2),
                (Some(b'='), _) => (MatchOp::Eq, 1),
                _ => {
                    return Err(SelectorError::new(
                        i,
                        format!("expected =, !=, =~ or !~ after {name}"),
                    ))
                }
            };
            i += op.1;
            skip_ws(&mut i);
            let quote = match b.get(i) {
                Some(q @ (b'"' | b'\'')) => *q,
                _ => {
                    return Err(SelectorError::new(
                        i,
                        format!("expected a quoted value for {name}"),
                    ))
                }
            };
            i += 1;
            let mut value = String::new();
            loop {
                match b.get(i) {
                    None => {
                        return Err(SelectorError::new(
                            i,
                            format!("unterminated value for {name}"),
                        ))
                    }
                    Some(c) if *c == quote => {
                        i += 1;
                        break;
                    }
                    Some(b'\\') => {
                        let esc = match b.get(i + 1) {
                            Some(b'n') => '\n',
                            Some(b'\\') => '\\',
                            Some(b'"') => '"',
                            Some(b'\'') => '\'',
                            _ => return Err(SelectorError::new(i, "invalid escape")),
                        };
                        value.push(esc);
                        i += 2;
                    }
                    Some(_) => {
                        // Copy one UTF-8 character.
                        let ch = text[i..].chars().next().expect("in bounds");
                        value.push(ch);
                        i += ch.len_utf8();
                    }
                }
            }
            matchers.push(
                Matcher::try_new(name, op.0, &value)
                    .map_err(|e| SelectorError::new(start, e.message))?,
            );
            skip_ws(&mut i);
            match b.get(i) {
                Some(b',') => i += 1,
                Some(b'}') | None => {}
                Some(_) => return Err(SelectorError::new(i, "expected ',' or '}'")),
            }
        }
        Ok(Self { matchers })
    }

    /// True when there are no matchers.
    pub fn is_empty(&self) -> bool {
        self.matchers.is_empty()
    }

    /// The matchers.
    pub fn matchers(&self) -> &[Matcher] {
        &self.matchers
    }

    /// Whether every matcher accepts the labels given by `get`.
    pub fn matches<'a>(&self, get: impl Fn(&str) -> Option<&'a str>) -> bool {
        self.matchers.iter().all(|m| m.matches(get(&m.name)))
    }

    /// Whether no matcher that concerns one of `known`'s labels rejects it: used to decide which
    /// targets could belong to a cohort before their series are seen.
    pub fn may_match<'a>(&self, known: impl Fn(&str) -> Option<&'a str>) -> bool {
        self.matchers.iter().all(|m| match known(&m.name) {
            Some(v) => m.matches(Some(v)),
            None => true,
        })
    }

    /// Render as PromQL label matchers (without braces).
    pub fn to_promql_matchers(&self) -> String {
        self.matchers
            .iter()
            .map(|m| m.to_string())
            .collect::<Vec<_>>()
            .join(", ")
    }
}

impl fmt::Display for Selector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{{{}}}", self.to_promql_matchers())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn labels(pairs: &[(&'static str, &'static str)]) -> HashMap<&'static str, &'static str> {
        pairs.iter().copied().collect()
    }

    #[test]
    fn parses_all_operators() {
        let s = Selector::parse(r#"{a="x", b!="y", c=~"1-2.*", d!~'z|w',}"#).unwrap();
        let ops: Vec<MatchOp> = s.matchers().iter().map(|m| m.op).collect();
        assert_eq!(
            ops,
            vec![MatchOp::Eq, MatchOp::Ne, MatchOp::Re, MatchOp::NotRe]
        );
        let l = labels(&[("a", "x"), ("b", "q"), ("c", "1-25-0"), ("d", "v")]);
        assert!(s.matches(|n| l.get(n).copied()));
        let l2 = labels(&[("a", "x"), ("b", "q"), ("c", "0-1-25-0"), ("d", "v")]);
        assert!(!s.matches(|n| l2.get(n).copied()), "regex must be anchored");
    }

    #[test]
    fn missing_label_is_empty_string() {
        let s = Selector::parse(r#"{a=""}"#).unwrap();
        assert!(s.matches(|_| None));
        let s = Selector::parse(r#"{a!=""}"#).unwrap();
        assert!(!s.matches(|_| None));
    }

    #[test]
    fn values_with_commas_braces_and_escapes() {
        let s = Selector::parse(r#"response_flags="UF,URX", x="a}b", y="q\"q""#).unwrap();
        assert_eq!(s.matchers()[0].value, "UF,URX");
        assert_eq!(s.matchers()[1].value, "a}b");
        assert_eq!(s.matchers()[2].value, "q\"q");
    }

    #[test]
    fn errors_name_the_column() {
        let e = Selector::parse(r#"{a="x" b="y"}"#).unwrap_err();
        assert_eq!(e.column, 8);
        assert!(Selector::parse(r#"{a="x""#)
            .unwrap_err()
            .message
            .contains("closing"));
        assert!(Selector::parse(r#"{a=~"("}"#)
            .unwrap_err()
            .message
            .contains("bad regex"));
        assert!(Selector::parse(r#"{1a="x"}"#)
            .unwrap_err()
            .message
            .contains("label name"));
        assert!(Selector::parse(r#"{a>"x"}"#).is_err());
    }

    #[test]
    fn may_match_ignores_unknown_labels() {
        let s = Selector::parse(r#"{revision="2", response_code=~"5.."}"#).unwrap();
        let t = labels(&[("revision", "2")]);
        assert!(s.may_match(|n| t.get(n).copied()));
        let t = labels(&[("revision", "1")]);
        assert!(!s.may_match(|n| t.get(n).copied()));
    }

    #[test]
    fn display_round_trips() {
        let s = Selector::parse(r#"{a="x", c=~"5.."}"#).unwrap();
        assert_eq!(Selector::parse(&s.to_string()).unwrap(), s);
    }
}
