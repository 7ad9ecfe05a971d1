//! Log set-up shared by the standalone resolver and the agent's daemon.
//!
//! Logs go to stderr, coloured only when stderr is a terminal: a file, a pipe or journald gets
//! plain text, never ANSI escape codes (`NO_COLOR` turns colour off on a terminal too).

use std::io::IsTerminal;

/// The filter used when neither `--log` nor `RUST_LOG` gives one.
pub const DEFAULT_FILTER: &str = "info";

/// Install the global subscriber with `filter` (tracing's EnvFilter syntax: `info`,
/// `resolver=debug,attach_agent=trace`, …). An invalid directive is reported on stderr and
/// skipped, as EnvFilter does, rather than leaving the process without logs.
pub fn init(filter: &str) {
    let colour = std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none();
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
        .with_writer(std::io::stderr)
        .with_ansi(colour)
        .init();
}
