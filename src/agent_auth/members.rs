//! The members of a lifecycle request body (register, claim, key creation,
//! revocation), read as RFC 7591 section 2 reads client metadata: a member this
//! server does not know is ignored, its value skipped and never kept, and its name
//! reported back in the answer's `ignored_members`. A member it knows is checked
//! strictly: a refusal names the member and says what was wrong with it, and never
//! repeats a value the client sent (only one of the member's own listed choices).
//!
//! A member may have several names (`type` and `identity_type`, from the two
//! auth.md generations): sent under more than one, or more than once under one,
//! its values must agree. `null` is a member not sent.

use std::collections::BTreeSet;
use std::fmt;

use serde::de::{DeserializeSeed, IgnoredAny, MapAccess, Visitor};
use serde_json::Value;

use super::{Failure, ScopeNames};
use crate::rejection::LifecycleError;

/// The names of one member: its name, then its aliases.
pub(super) type Names = &'static [&'static str];

/// A member as a body read it, for the fuzz targets' view of a body
/// ([`super::ParsedBody`]).
#[doc(hidden)]
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Understood {
    /// A text member's value.
    Text(String),
    /// The scope names a scope member asks for, in order.
    Scopes(Vec<String>),
}

/// A request body that reads its members through [`Members`].
pub(super) trait JsonBody: Sized {
    /// The members it knows, each by its names.
    const MEMBERS: &'static [Names];

    /// Reads the body from its members, checking each.
    fn read(members: &Members) -> Result<Self, Failure>;

    /// The names of the members it ignored, sorted, each once.
    fn ignored(&self) -> &[String];

    /// What it understood, each member under its first name (for the fuzz targets).
    fn understood(&self) -> Vec<(&'static str, Understood)>;
}

/// The members of one body.
#[derive(Debug)]
pub(super) struct Members {
    /// Every known member sent, in order: the name it came under and its value.
    sent: Vec<(&'static str, Value)>,
    /// The names of the members not known, sorted, each once.
    ignored: Vec<String>,
}

/// A refusal of the body, saying what is wrong.
pub(super) fn invalid(detail: impl Into<String>) -> Failure {
    Failure::with(LifecycleError::InvalidBody, detail)
}

impl Members {
    /// Reads one JSON object whose known members are `known`. Only an object: serde
    /// would fill a struct from an array of its fields in order (`["ak_live_..."]` as
    /// a revocation), a form no client is told of.
    pub(super) fn parse(bytes: &[u8], known: &[Names]) -> Result<Members, Failure> {
        if bytes.trim_ascii_start().first() != Some(&b'{') {
            return Err(invalid("the body must be a JSON object"));
        }
        // JSON is UTF-8 (RFC 8259 section 8.1), in the members skipped too (whose
        // strings serde_json skips without looking at their bytes).
        let text = std::str::from_utf8(bytes).map_err(|error| {
            invalid(format!(
                "the body is not valid JSON: it is not UTF-8 (at byte {})",
                error.valid_up_to()
            ))
        })?;
        let mut deserializer = serde_json::Deserializer::from_str(text);
        let members = Schema(known)
            .deserialize(&mut deserializer)
            .map_err(|error| not_json(&error))?;
        deserializer.end().map_err(|error| not_json(&error))?;
        Ok(members)
    }

    /// The names of the members not known, sorted, each once.
    pub(super) fn ignored(&self) -> Vec<String> {
        self.ignored.clone()
    }

    /// The values sent for the member `names` (not `null`), with the name of each.
    fn values(&self, names: Names) -> impl Iterator<Item = (&'static str, &Value)> {
        self.sent
            .iter()
            .filter(move |(name, value)| names.contains(name) && !value.is_null())
            .map(|(name, value)| (*name, value))
    }

    /// A text member. A disagreement does not show the values: they may be secrets.
    pub(super) fn text(&self, names: Names) -> Result<Option<String>, Failure> {
        let mut texts = Vec::new();
        for (name, value) in self.values(names) {
            match value {
                Value::String(text) => texts.push((name, text)),
                other => {
                    return Err(invalid(format!(
                        "`{name}`: expected a string, got {}",
                        kind(other)
                    )));
                }
            }
        }
        agree(&texts, |_| None).map(|text| text.map(|t| (*t).clone()))
    }

    /// A text member that passes `valid`, which `expected` describes.
    pub(super) fn checked_text(
        &self,
        names: Names,
        valid: fn(&str) -> bool,
        expected: &str,
    ) -> Result<Option<String>, Failure> {
        for (name, value) in self.values(names) {
            if let Value::String(text) = value {
                if !valid(text) {
                    return Err(invalid(format!("`{name}`: expected {expected}")));
                }
            }
        }
        self.text(names)
    }

    /// A member whose value is one of `choices` (its wire name, and what it means);
    /// the values are shown, being the server's own words.
    pub(super) fn choice<T: Copy + PartialEq>(
        &self,
        names: Names,
        choices: &[(&'static str, T)],
    ) -> Result<Option<T>, Failure> {
        let mut chosen = Vec::new();
        for (name, value) in self.values(names) {
            let found = value
                .as_str()
                .and_then(|text| choices.iter().find(|(wire, _)| *wire == text));
            match found {
                Some(choice) => chosen.push((name, choice)),
                None => {
                    let listed: Vec<String> = choices
                        .iter()
                        .map(|(wire, _)| format!("`{wire}`"))
                        .collect();
                    let got = match value {
                        Value::String(_) => "another string",
                        other => kind(other),
                    };
                    let expected = match listed.split_last() {
                        Some((last, [])) => last.clone(),
                        Some((last, rest)) => format!("{} or {last}", rest.join(", ")),
                        None => "nothing".to_owned(),
                    };
                    return Err(invalid(format!("`{name}`: expected {expected}, got {got}")));
                }
            }
        }
        let shown = |choice: &&(&'static str, T)| Some(format!("`{}`", choice.0));
        agree(&chosen, shown).map(|choice| choice.map(|(_, meaning)| *meaning))
    }

    /// A scope member: a list of scope names, or an OAuth space-separated string.
    /// Two names of it agree when they ask for the same scopes.
    pub(super) fn scopes(&self, names: Names) -> Result<Option<ScopeNames>, Failure> {
        let mut asked = Vec::new();
        for (name, value) in self.values(names) {
            let scopes = match value {
                Value::String(text) => ScopeNames::Text(text.clone()),
                Value::Array(items) => {
                    let mut list = Vec::with_capacity(items.len());
                    for (index, item) in items.iter().enumerate() {
                        match item {
                            Value::String(scope) => list.push(scope.clone()),
                            other => {
                                return Err(invalid(format!(
                                    "`{name}[{index}]`: expected a scope name (a string), got {}",
                                    kind(other)
                                )));
                            }
                        }
                    }
                    ScopeNames::List(list)
                }
                other => {
                    return Err(invalid(format!(
                        "`{name}`: expected a list of strings or a space-separated string, got {}",
                        kind(other)
                    )));
                }
            };
            asked.push((name, scopes));
        }
        let sets: Vec<(&'static str, BTreeSet<&str>)> = asked
            .iter()
            .map(|(name, scopes)| (*name, scopes.names().into_iter().collect()))
            .collect();
        agree(&sets, |_| None)?;
        Ok(asked.into_iter().next().map(|(_, scopes)| scopes))
    }
}

/// The first value, when every other equals it; otherwise the refusal naming the
/// first two names that disagree, with their values when `show` shows them.
fn agree<'v, T: PartialEq>(
    found: &'v [(&'static str, T)],
    show: impl Fn(&T) -> Option<String>,
) -> Result<Option<&'v T>, Failure> {
    let Some((first_name, first)) = found.first() else {
        return Ok(None);
    };
    let Some((name, other)) = found.iter().find(|(_, value)| value != first) else {
        return Ok(Some(first));
    };
    let same = first_name == name;
    let detail = match (show(first), show(other)) {
        (Some(a), Some(b)) if same => {
            format!("`{name}` is sent twice, as {a} and as {b}; send it once")
        }
        (Some(a), Some(b)) => format!(
            "`{first_name}` is {a} but `{name}` is {b}; both name the same member: send one, or the same value in both"
        ),
        _ if same => format!("`{name}` is sent twice, with different values; send it once"),
        _ => format!(
            "`{first_name}` and `{name}` differ; both name the same member: send one, or the same value in both"
        ),
    };
    Err(invalid(detail))
}

/// What kind of JSON value `value` is, in words.
fn kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "an object",
    }
}

/// A body that is no JSON: where and why. serde_json's syntax messages are its own
/// fixed words and a position, never a piece of the input.
fn not_json(error: &serde_json::Error) -> Failure {
    use serde_json::error::Category;
    match error.classify() {
        Category::Syntax | Category::Eof => invalid(format!("the body is not valid JSON: {error}")),
        Category::Io => invalid("the body could not be read"),
        // The visitor makes no error of its own: a data error is a body that is no
        // object, said without serde's words (which would quote the value).
        Category::Data => invalid("the body must be a JSON object"),
    }
}

/// The visitor of a body's object: known members kept with their values, unknown
/// ones skipped and named.
struct Schema<'a>(&'a [Names]);

impl<'de> DeserializeSeed<'de> for Schema<'_> {
    type Value = Members;

    fn deserialize<D: serde::Deserializer<'de>>(
        self,
        deserializer: D,
    ) -> Result<Members, D::Error> {
        deserializer.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for Schema<'_> {
    type Value = Members;

    fn expecting(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str("a JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Members, A::Error> {
        let mut sent = Vec::new();
        let mut ignored = BTreeSet::new();
        while let Some(name) = map.next_key::<String>()? {
            let known = self
                .0
                .iter()
                .flat_map(|names| names.iter())
                .find(|known| **known == name);
            match known {
                Some(known) => sent.push((*known, map.next_value::<Value>()?)),
                None => {
                    map.next_value::<IgnoredAny>()?;
                    ignored.insert(name);
                }
            }
        }
        Ok(Members {
            sent,
            ignored: ignored.into_iter().collect(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TYPE: Names = &["type", "identity_type"];
    const SECRET: Names = &["assertion", "identity_assertion"];
    const SCOPES: Names = &["scopes", "requested_scopes", "scope"];
    const KNOWN: &[Names] = &[TYPE, SECRET, SCOPES];
    const TYPES: &[(&str, u8)] = &[("anonymous", 0), ("identity_assertion", 1)];

    fn members(body: &str) -> Members {
        Members::parse(body.as_bytes(), KNOWN).unwrap()
    }

    fn refusal(result: Result<impl std::fmt::Debug, Failure>) -> String {
        result.unwrap_err().detail.unwrap()
    }

    #[test]
    fn unknown_members_are_skipped_and_named_once_in_order() {
        let body = members(r#"{"zeta": {"a": [1]}, "type": "anonymous", "alpha": 1, "zeta": 2}"#);
        assert_eq!(body.ignored(), ["alpha", "zeta"]);
        assert_eq!(body.choice(TYPE, TYPES).unwrap(), Some(0));
    }

    #[test]
    fn names_of_one_member_agree_or_are_refused_naming_both() {
        let both = members(r#"{"type": "anonymous", "identity_type": "anonymous"}"#);
        assert_eq!(both.choice(TYPE, TYPES).unwrap(), Some(0));
        let apart = members(r#"{"type": "anonymous", "identity_type": "identity_assertion"}"#);
        assert_eq!(
            refusal(apart.choice(TYPE, TYPES)),
            "`type` is `anonymous` but `identity_type` is `identity_assertion`; both name the same member: send one, or the same value in both"
        );
        let twice = members(r#"{"type": "anonymous", "type": "identity_assertion"}"#);
        assert!(refusal(twice.choice(TYPE, TYPES)).starts_with("`type` is sent twice"));
        let secret = members(r#"{"assertion": "eyJ.one", "identity_assertion": "eyJ.two"}"#);
        let message = refusal(secret.text(SECRET));
        assert!(
            message.starts_with("`assertion` and `identity_assertion` differ"),
            "{message}"
        );
        assert!(!message.contains("eyJ"), "{message}");
        let null = members(r#"{"assertion": null, "identity_assertion": "eyJ.x"}"#);
        assert_eq!(null.text(SECRET).unwrap().as_deref(), Some("eyJ.x"));
    }

    #[test]
    fn scope_members_agree_when_they_ask_for_the_same_scopes() {
        let same = members(r#"{"scopes": ["a", "b"], "scope": "b  a"}"#);
        assert_eq!(same.scopes(SCOPES).unwrap().unwrap().names(), ["a", "b"]);
        let apart = members(r#"{"scopes": ["a"], "requested_scopes": ["a", "b"]}"#);
        assert!(
            refusal(apart.scopes(SCOPES)).starts_with("`scopes` and `requested_scopes` differ")
        );
        assert_eq!(
            refusal(members(r#"{"scopes": 3}"#).scopes(SCOPES)),
            "`scopes`: expected a list of strings or a space-separated string, got a number"
        );
        assert_eq!(
            refusal(members(r#"{"scope": ["a", {}]}"#).scopes(SCOPES)),
            "`scope[1]`: expected a scope name (a string), got an object"
        );
    }

    #[test]
    fn a_refusal_names_the_member_and_never_the_value() {
        assert_eq!(
            refusal(members(r#"{"type": "ak_live_s3cret"}"#).choice(TYPE, TYPES)),
            "`type`: expected `anonymous` or `identity_assertion`, got another string"
        );
        assert_eq!(
            refusal(members(r#"{"identity_type": ["x"]}"#).choice(TYPE, TYPES)),
            "`identity_type`: expected `anonymous` or `identity_assertion`, got a list"
        );
        assert_eq!(
            refusal(members(r#"{"assertion": 1}"#).text(SECRET)),
            "`assertion`: expected a string, got a number"
        );
        let long = members(r#"{"assertion": "ak_live_s3cret"}"#);
        assert_eq!(
            refusal(long.checked_text(SECRET, |t| t.len() < 4, "a short text")),
            "`assertion`: expected a short text"
        );
    }

    #[test]
    fn only_one_json_object_is_a_body() {
        for body in [&br#"["x"]"#[..], b"  \"x\"", b"null", b"", b"1"] {
            assert_eq!(
                refusal(Members::parse(body, KNOWN)),
                "the body must be a JSON object"
            );
        }
        let cut = refusal(Members::parse(br#"{"type": "#, KNOWN));
        assert!(cut.starts_with("the body is not valid JSON: EOF"), "{cut}");
        let trailing = refusal(Members::parse(br#"{} x"#, KNOWN));
        assert!(
            trailing.contains("trailing characters at line 1 column 4"),
            "{trailing}"
        );
        let secret = refusal(Members::parse(br#"{"assertion": "s3cret" "#, KNOWN));
        assert!(!secret.contains("s3cret"), "{secret}");
        // Found by the fuzz target `agent_register_body`: the bytes of a skipped
        // member's string were not checked.
        let latin1 = refusal(Members::parse(b"{\"password\": \"caf\xe9\"}", KNOWN));
        assert_eq!(
            latin1,
            "the body is not valid JSON: it is not UTF-8 (at byte 17)"
        );
    }
}
