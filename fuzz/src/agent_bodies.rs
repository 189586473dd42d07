//! The oracle of the lifecycle body targets (`agent_register_body`,
//! `agent_claim_body`, `agent_key_body`, and `lifecycle_body` with its selector
//! byte): a reference reading of each endpoint's body, written here from what
//! auth.md promises and independent of the proxy's reader, against which
//! `agent_auth::parse_body` (the endpoints' own parsing) is held.
//!
//! The reference reads the body's top-level members in order, repeats included
//! (serde_json's `Value` would keep only the last), and for each member of the
//! endpoint's schema (its names, and the rule its values follow):
//!
//! - the body is accepted exactly when it is one JSON object whose every known
//!   member is of its kind (a string; one of its choices; a valid name or e-mail
//!   address; a list of strings or a string for scopes) under each name it was
//!   sent under, all of them agreeing (the same text, the same choice, the same set
//!   of scope names), with `null` as not sent, and a required member present;
//! - an accepted body understood exactly the known members sent, each with the
//!   value it was sent with (by its first name, in the schema's order), and ignored
//!   exactly the other names, sorted, each once: no unknown member's value (a
//!   `password`) is kept;
//! - a refused object's message starts by naming (in backticks) a member the
//!   reference finds wrong; a refusal of anything else starts `the body`;
//! - a refusal never quotes a value the client sent: the same body with every
//!   string value replaced by a canary is refused without the canary in the
//!   message.

use std::collections::BTreeSet;
use std::fmt;

use authmd_proxy::agent_auth::{BodyKind, ParsedBody, Understood, parse_body};
use serde::de::{DeserializeSeed, MapAccess, Visitor};
use serde_json::Value;
use serde_json::value::RawValue;

/// The canary that replaces every string value.
pub const CANARY: &str = "zq-canary-value";

/// What a member's values must be.
#[derive(Debug, Clone, Copy)]
enum Rule {
    /// Any string.
    Text,
    /// A string that passes the check.
    Checked(fn(&str) -> bool),
    /// One of these strings.
    Choice(&'static [&'static str]),
    /// A list of strings, or a string of space-separated names.
    Scopes,
}

/// One member of a body: its names (the first is its name), its rule, and whether
/// the body needs it.
#[derive(Debug, Clone, Copy)]
struct Member {
    names: &'static [&'static str],
    rule: Rule,
    required: bool,
}

const fn member(names: &'static [&'static str], rule: Rule) -> Member {
    Member {
        names,
        rule,
        required: false,
    }
}

/// 1 to 128 characters, not only white space, none of them a control character.
fn name(text: &str) -> bool {
    !text.trim().is_empty() && text.chars().count() <= 128 && !text.chars().any(char::is_control)
}

/// `local@domain.tld`: one `@`, a local part of 1 to 64 bytes, a domain with an inner
/// dot, at most 254 bytes in all, no white space or control character.
fn email(text: &str) -> bool {
    let mut parts = text.split('@');
    let (Some(local), Some(domain), None) = (parts.next(), parts.next(), parts.next()) else {
        return false;
    };
    let dot = domain
        .char_indices()
        .any(|(i, c)| c == '.' && i > 0 && i + 1 < domain.len());
    text.len() <= 254
        && (1..=64).contains(&local.len())
        && dot
        && !domain.ends_with('.')
        && !text.chars().any(|c| c.is_whitespace() || c.is_control())
}

fn schema(kind: BodyKind) -> &'static [Member] {
    const REGISTER: &[Member] = &[
        member(
            &["type", "identity_type"],
            Rule::Choice(&["anonymous", "identity_assertion", "verified_email"]),
        ),
        member(&["client_name"], Rule::Checked(name)),
        member(&["scopes", "requested_scopes", "scope"], Rule::Scopes),
        member(&["requested_credential_type"], Rule::Text),
        member(&["assertion_type"], Rule::Text),
        member(&["assertion", "identity_assertion"], Rule::Text),
        member(&["email"], Rule::Checked(email)),
        member(&["username"], Rule::Checked(name)),
    ];
    const CLAIM: &[Member] = &[
        member(&["claim_token"], Rule::Text),
        member(&["registration_id"], Rule::Text),
        member(&["identity_assertion", "assertion"], Rule::Text),
        member(&["assertion_type"], Rule::Text),
        member(&["user_code"], Rule::Text),
    ];
    const CREATE_KEY: &[Member] = &[
        member(&["name"], Rule::Checked(name)),
        member(&["scopes"], Rule::Scopes),
    ];
    const REVOKE: &[Member] = &[Member {
        names: &["credential", "key"],
        rule: Rule::Text,
        required: true,
    }];
    match kind {
        BodyKind::Register => REGISTER,
        BodyKind::Claim => CLAIM,
        BodyKind::CreateKey => CREATE_KEY,
        BodyKind::Revoke => REVOKE,
    }
}

/// A value as a member takes it, or `None` when the rule refuses it.
fn taken(rule: Rule, value: &Value) -> Option<Understood> {
    match (rule, value) {
        (Rule::Text, Value::String(text)) => Some(Understood::Text(text.clone())),
        (Rule::Checked(check), Value::String(text)) if check(text) => {
            Some(Understood::Text(text.clone()))
        }
        (Rule::Choice(choices), Value::String(text)) if choices.contains(&text.as_str()) => {
            Some(Understood::Text(text.clone()))
        }
        (Rule::Scopes, Value::String(text)) => Some(Understood::Scopes(
            text.split_whitespace().map(str::to_owned).collect(),
        )),
        (Rule::Scopes, Value::Array(items)) => items
            .iter()
            .map(|item| item.as_str().map(str::to_owned))
            .collect::<Option<Vec<_>>>()
            .map(Understood::Scopes),
        _ => None,
    }
}

/// Two values of one member agree: the same text, or the same set of scope names.
fn same(a: &Understood, b: &Understood) -> bool {
    match (a, b) {
        (Understood::Scopes(a), Understood::Scopes(b)) => {
            a.iter().collect::<BTreeSet<_>>() == b.iter().collect::<BTreeSet<_>>()
        }
        _ => a == b,
    }
}

/// The top-level members of a JSON object, in order, repeats kept, each value as
/// its raw text (skipped as a member the endpoint does not know is: checked for
/// JSON, not interpreted).
struct Entries;

type Raw = Vec<(String, Box<RawValue>)>;

impl<'de> DeserializeSeed<'de> for Entries {
    type Value = Raw;

    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<Raw, D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for Entries {
    type Value = Raw;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Raw, A::Error> {
        let mut entries = Vec::new();
        while let Some(entry) = map.next_entry::<String, Box<RawValue>>()? {
            entries.push(entry);
        }
        Ok(entries)
    }
}

/// The body's top-level members, when it is exactly one JSON object.
fn entries(body: &[u8]) -> Option<Raw> {
    let mut deserializer = serde_json::Deserializer::from_slice(body);
    let entries = Entries.deserialize(&mut deserializer).ok()?;
    deserializer.end().ok()?;
    Some(entries)
}

/// What the reference makes of a body's members: what it understood and ignored,
/// or the names of the members it finds wrong.
fn reference(
    kind: BodyKind,
    entries: &[(String, Option<Value>)],
) -> Result<ParsedBody, Vec<&'static str>> {
    let mut understood = Vec::new();
    let mut wrong = Vec::new();
    for member in schema(kind) {
        let values: Vec<Option<Understood>> = entries
            .iter()
            .filter(|(name, _)| member.names.contains(&name.as_str()))
            .filter_map(|(_, value)| value.as_ref().filter(|v| !v.is_null()))
            .map(|value| taken(member.rule, value))
            .collect();
        let all_taken: Option<Vec<Understood>> = values.into_iter().collect();
        match all_taken {
            None => wrong.extend(member.names),
            Some(values) if values.iter().any(|v| !same(v, &values[0])) => {
                wrong.extend(member.names);
            }
            Some(values) => match values.into_iter().next() {
                Some(first) => understood.push((member.names[0], first)),
                None if member.required => wrong.extend(member.names),
                None => {}
            },
        }
    }
    if !wrong.is_empty() {
        return Err(wrong);
    }
    let known: Vec<&str> = schema(kind).iter().flat_map(|m| m.names).copied().collect();
    let ignored: BTreeSet<String> = entries
        .iter()
        .map(|(name, _)| name)
        .filter(|name| !known.contains(&name.as_str()))
        .cloned()
        .collect();
    Ok(ParsedBody {
        members: understood,
        ignored: ignored.into_iter().collect(),
    })
}

/// `value` with every string (not object keys) replaced by the canary.
fn canaried(value: &Value) -> Value {
    match value {
        Value::String(_) => Value::String(CANARY.to_owned()),
        Value::Array(items) => Value::Array(items.iter().map(canaried).collect()),
        Value::Object(map) => Value::Object(
            map.iter()
                .map(|(k, v)| (k.clone(), canaried(v)))
                .collect(),
        ),
        other => other.clone(),
    }
}

/// The first name a message quotes: `` `scopes[2]` `` is `scopes`.
fn first_quoted(message: &str) -> Option<&str> {
    let rest = message.strip_prefix('`')?;
    let quoted = &rest[..rest.find('`')?];
    Some(quoted.split('[').next().unwrap_or(quoted))
}

fn known(kind: BodyKind) -> impl Iterator<Item = &'static str> {
    schema(kind).iter().flat_map(|m| m.names).copied()
}

/// Feeds `body` to the endpoint of `kind` and checks what it makes of it.
pub fn check(kind: BodyKind, body: &[u8]) {
    let outcome = parse_body(kind, body);
    let not_a_body = |outcome: &Result<ParsedBody, String>| {
        let message = outcome.as_ref().expect_err("only one JSON object is a body");
        assert!(message.starts_with("the body "), "{kind:?}: {message:?}");
    };
    // Nesting past serde_json's limit inside a known member counts from the body,
    // not from the member as the reference reads it alone: not compared.
    if outcome
        .as_ref()
        .is_err_and(|m| m.contains("recursion limit exceeded"))
    {
        return;
    }
    let Some(raw) = entries(body) else {
        return not_a_body(&outcome);
    };
    // The known members' values, read; the others' are never read.
    let mut entries = Vec::with_capacity(raw.len());
    for (name, value) in &raw {
        if known(kind).any(|k| k == name) {
            let Ok(value) = serde_json::from_str::<Value>(value.get()) else {
                return not_a_body(&outcome);
            };
            entries.push((name.clone(), Some(value)));
        } else {
            entries.push((name.clone(), None));
        }
    }
    match (reference(kind, &entries), &outcome) {
        (Ok(expected), Ok(parsed)) => assert_eq!(parsed, &expected, "{kind:?}"),
        (Err(wrong), Err(message)) => {
            assert!(message.len() <= 1024, "{kind:?}: {message:?}");
            let named = first_quoted(message);
            assert!(
                named.is_some_and(|name| wrong.contains(&name)),
                "{kind:?}: {message:?} names none of the wrong members {wrong:?}"
            );
        }
        (expected, _) => panic!("{kind:?}: expected {expected:?}, got {outcome:?}"),
    }
    // libFuzzer learns the canary from the check below and writes it into inputs,
    // as a member's name say.
    if raw.iter().any(|(name, _)| name.contains(CANARY)) {
        return;
    }
    // Every string value replaced by the canary (an unknown member's value too, when
    // it reads as JSON on its own).
    let rewritten: Vec<String> = raw
        .iter()
        .map(|(name, value)| {
            let name = serde_json::to_string(name).expect("a string serialises");
            let value = serde_json::from_str::<Value>(value.get())
                .map_or_else(|_| value.get().to_owned(), |v| canaried(&v).to_string());
            format!("{name}:{value}")
        })
        .collect();
    let canary_body = format!("{{{}}}", rewritten.join(","));
    if let Err(message) = parse_body(kind, canary_body.as_bytes()) {
        assert!(
            !message.contains(CANARY),
            "{kind:?} quoted a client value in its refusal: {message:?}"
        );
    }
}
