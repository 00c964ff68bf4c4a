//! Subcommands.

pub mod bench;
pub mod bench_decode;
pub mod eval;
pub mod generate;
pub mod llamacpp;
pub mod precompute;
