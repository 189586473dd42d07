//! The five seed services, reproduced: each one's auth surface from one config in
//! `tests/seeds/`, in front of a plain upstream, checked against what its auth.md
//! documents. Every assertion names the seed line it checks.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::print_stderr,
    reason = "tests: a failed step fails the test"
)]

mod anygett;
mod as_written;
mod botvisibility;
mod common;
mod getscaled;
mod jobspipe;
mod toromarket;
