//! Routes, one file per API group.

pub mod chunks;
pub mod completions;
pub mod health;
pub mod metrics;
