//! a3kv-store
