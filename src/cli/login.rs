//! `authmd-proxy login`: helpers for `login:`, such as the password hash of a
//! static account.

use std::io::Read;
use std::process::ExitCode;

use authmd_proxy::login::hash_password;
use clap::Subcommand;
use zeroize::Zeroizing;

use super::{EX_USAGE, fail, out};

/// The longest password taken (the proxy looks at no longer one).
const MAX_PASSWORD: usize = 1024;

/// The `login` commands.
#[derive(Debug, Subcommand)]
pub(crate) enum LoginCommand {
    /// Print the argon2id hash of a password read from standard input (one line;
    /// its line ending is not part of it), for a static account's `password_hash`.
    HashPassword,
}

/// Runs a `login` command.
pub(crate) fn login(command: &LoginCommand) -> ExitCode {
    match command {
        LoginCommand::HashPassword => hash_from_stdin(),
    }
}

fn hash_from_stdin() -> ExitCode {
    let mut input = Zeroizing::new(String::new());
    if std::io::stdin()
        .take(MAX_PASSWORD as u64 + 2)
        .read_to_string(&mut input)
        .is_err()
    {
        return fail("standard input is not UTF-8 text", EX_USAGE);
    }
    let password = input
        .strip_suffix('\n')
        .map_or(input.as_str(), |p| p.strip_suffix('\r').unwrap_or(p));
    if password.is_empty() {
        return fail("no password on standard input", EX_USAGE);
    }
    if password.len() > MAX_PASSWORD || password.contains('\n') {
        return fail(
            &format!("the password must be one line of at most {MAX_PASSWORD} bytes"),
            EX_USAGE,
        );
    }
    match hash_password(password) {
        Some(hash) => out(&format!("{hash}\n")),
        None => fail("the OS random source failed", 1),
    }
}
