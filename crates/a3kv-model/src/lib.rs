//! a3kv model core.
