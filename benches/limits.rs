//! Placeholder replaced by the limiter benchmark.
fn main() {}
