//! The `a3kv` binary.
fn main() {}
