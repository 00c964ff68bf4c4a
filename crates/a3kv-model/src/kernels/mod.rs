//! Hand-written compute kernels, one folder per backend. Each fast kernel has a plain-Rust
//! reference twin beside it and a test comparing them (house rule 13).

pub mod cpu;
