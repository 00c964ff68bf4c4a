//! a3kv fusion engine.
