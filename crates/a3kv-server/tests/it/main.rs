//! Integration tests: the real server on 127.0.0.1 with the default model, real clients
//! (reqwest, the Python `openai` package), `promtool`, a real Prometheus server and a real
//! `redis-server` (the shared chunk tier).
//!
//! Tests share one server where they can and take [`common::lock`] so load-sensitive checks
//! (gauges back to 0, concurrency limits) never overlap.

mod common;
mod concurrency;
mod config;
mod corrupt;
mod errors;
mod fidelity;
mod gate;
mod logprobs;
mod openai_client;
mod prometheus;
mod remote;
mod shadow;
mod shutdown;
