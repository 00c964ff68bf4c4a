//! a3kv-loadgen
