//! The `authmd-proxy` command line: `run`, `check`, `health`, `inject`, `injector`,
//! `keys`, `login`, `tokens` and `render`. This file parses it and hands each command to its
//! module in [`cli`].

#![forbid(unsafe_code)]

use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod cli;

/// Agent-ready authentication in front of any HTTP API, from one YAML file.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Serve the proxy.
    Run(cli::run::RunArgs),
    /// Add the authmd-proxy sidecar to every Kubernetes workload annotated
    /// `authmd.dev/inject: enabled`, reading YAML from the files (or standard input)
    /// and writing it to standard output; other documents pass through unchanged.
    Inject(cli::inject::InjectArgs),
    /// Ask a running proxy's admin listener whether it is healthy (`/healthz`) or
    /// ready (`--ready`, `/readyz`): exit 0 if so, 1 if not. The container image's
    /// health check.
    Health(cli::health::HealthArgs),
    /// Serve sidecar injection as a Kubernetes mutating admission webhook:
    /// `AdmissionReview` v1 at `POST /inject` over HTTPS, answered with a JSON Patch;
    /// `GET /healthz` for probes. The certificate is re-read when its files change.
    Injector(cli::inject::InjectorArgs),
    /// Validate a config file: exit 0, or print every problem and exit 64.
    Check(cli::check::CheckArgs),
    /// Mint and hash API keys.
    #[command(subcommand)]
    Keys(cli::keys::KeysCommand),
    /// Helpers for people signing in (`login:`).
    #[command(subcommand)]
    Login(cli::login::LoginCommand),
    /// Manage the keys that sign the proxy's access tokens.
    #[command(subcommand)]
    Tokens(cli::tokens::TokensCommand),
    /// Print a generated document.
    #[command(subcommand)]
    Render(cli::render::RenderCommand),
}

fn main() -> ExitCode {
    match Cli::parse().command {
        Command::Run(args) => cli::run::run(args),
        Command::Inject(args) => cli::inject::inject(args),
        Command::Health(args) => cli::health::health(&args),
        Command::Injector(args) => cli::inject::injector(args),
        Command::Check(args) => cli::check::check(&args),
        Command::Keys(command) => cli::keys::keys(command),
        Command::Login(command) => cli::login::login(&command),
        Command::Tokens(command) => cli::tokens::tokens(command),
        Command::Render(command) => cli::render::render(command),
    }
}
