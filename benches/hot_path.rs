//! Criterion benchmarks for the hot-path steps (filled in below).
fn main() {}
