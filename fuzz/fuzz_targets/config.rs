//! The config loader.
//!
//! Feeds any UTF-8 text to `Config::from_yaml_str` twice: with no environment
//! (every `${VAR}` unset) and with every `${VAR}` set to a canary value. Checks
//! that it never panics, and that when it refuses the text:
//!
//! - there is at least one error, and every error has a message (so also "a
//!   non-empty path or message"); a position, when given, is 1-based and within
//!   the text (lines counted as YAML counts them: a bare `\r` ends a line too;
//!   the end of a text without a final line break is on the line after it);
//! - the rendered errors never contain the canary: values that came from the
//!   environment are never printed in errors, as `config.example.yaml` promises
//!   (skipped when the text itself contains the canary). Set
//!   `AUTHMD_FUZZ_SKIP_SECRET_CHECK=1` to turn this check off, e.g. to keep
//!   fuzzing for panics while a known leak is open.
//!
//! Files the text names (`auth_md_file`, card files, TLS and key files) are
//! resolved against the current directory, as for a config in it.
#![no_main]

use std::sync::OnceLock;

use authmd_proxy::config::{Config, ConfigErrors, Overrides};
use libfuzzer_sys::fuzz_target;

/// Lowercase letters and digits: a valid name for a tier, scope, route or key, so a
/// leak through any of them (e.g. a "did you mean" suggestion) shows.
const CANARY: &str = "canary7secret9zq";

/// The last line a position may name: lines counted as YAML counts them (`\r\n`, a
/// bare `\r` and `\n` each end a line, and libyaml also breaks at NEL, LS and PS),
/// plus one, where libyaml puts the end of a stream that has no final line break.
fn last_line(text: &str) -> usize {
    let mut breaks = 0;
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\r' => {
                if chars.peek() == Some(&'\n') {
                    chars.next();
                }
                breaks += 1;
            }
            '\n' | '\u{85}' | '\u{2028}' | '\u{2029}' => breaks += 1,
            _ => {}
        }
    }
    breaks + 2
}

fn check(text: &str, errors: &ConfigErrors) {
    assert!(!errors.errors.is_empty(), "refused without an error");
    let lines = last_line(text);
    for e in &errors.errors {
        assert!(
            !e.message.is_empty(),
            "an error without a message at `{}`",
            e.path
        );
        if let Some((line, column)) = e.position {
            assert!(
                (1..=lines).contains(&line) && column >= 1,
                "position {line}:{column} past the text (last line {lines}) for `{}`: {}",
                e.path,
                e.message
            );
        }
    }
}

fn secret_check_on() -> bool {
    static ON: OnceLock<bool> = OnceLock::new();
    *ON.get_or_init(|| std::env::var_os("AUTHMD_FUZZ_SKIP_SECRET_CHECK").is_none())
}

fuzz_target!(|text: &str| {
    let overrides = Overrides::default();
    if let Err(errors) = Config::from_yaml_str(text, "fuzz.yaml", &overrides, &|_| None) {
        check(text, &errors);
        let _ = errors.to_string();
    }
    if !text.contains("${") {
        return;
    }
    let env = |_: &str| Some(CANARY.to_owned());
    if let Err(errors) = Config::from_yaml_str(text, "fuzz.yaml", &overrides, &env) {
        check(text, &errors);
        let rendered = errors.to_string();
        if secret_check_on() && !text.contains(CANARY) {
            assert!(
                !rendered.contains(CANARY),
                "a value from the environment is printed in an error:\n{rendered}"
            );
        }
    }
});
