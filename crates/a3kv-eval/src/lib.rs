//! a3kv-eval
