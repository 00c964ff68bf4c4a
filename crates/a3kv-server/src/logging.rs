//! Structured logs: `tracing` to stderr as text or JSON (`log.format`), filtered by
//! `log.level`. Text carries ANSI colours only when stderr is a terminal, so a log file or
//! pipe gets plain lines.

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;

use crate::config::LogSection;

/// Installs the subscriber; a no-op when one is already installed (tests, embedding).
pub fn init(cfg: &LogSection) {
    let filter = EnvFilter::try_new(&cfg.level).unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal());
    // `try_init` fails only when a global subscriber exists; keeping that one is right.
    let _ = if cfg.format == "json" {
        builder.json().with_current_span(true).try_init()
    } else {
        builder.try_init()
    };
}
