//! Integration tests: the real server on 127.0.0.1 with the default model, real clients
//! (reqwest, the Python `openai` package), `promtool` and a real Prometheus server.
//!
//! Tests share one server where they can and take [`common::lock`] so load-sensitive checks
//! (gauges back to 0, concurrency limits) never overlap.

mod common;
mod concurrency;
mod config;
mod corrupt;
mod errors;
mod logprobs;
mod openai_client;
mod prometheus;
mod shutdown;
