//! The process's log: text for people or JSON lines for a log collector,
//! on stderr, through `tracing` (the `log` records of weir and its
//! dependencies are bridged in). Each intercepted or accepted connection
//! runs in a span (`conn`, with an id from `proxy::listener::next_connection_id`,
//! the pod, the direction, peer and destination), so a connection's lines share its fields.
//!
//! What is logged is meant for operators: one line per state change (a pod
//! enrolled or un-enrolled, a config reloaded or refused, the API watch
//! lost or back), never one per request; per-request lines are the access
//! log's job (off by default).

use tracing_subscriber::EnvFilter;

/// How lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LogFormat {
    /// `2026-12-05T16:20:00.123Z  INFO conn{id=7 pod=default/a}: weir::...: message`
    #[default]
    Text,
    /// One JSON object per line: `timestamp`, `level`, `target`, `fields`
    /// (`message` and the event's own), `span` (the connection's fields).
    Json,
}

#[derive(Debug, thiserror::Error)]
pub enum LoggingError {
    #[error(
        "log level {directives:?}: {reason} (expected e.g. `info`, `debug`, `warn,weir::proxy=debug`)"
    )]
    Filter { directives: String, reason: String },
    #[error("a logger is already installed: {0}")]
    Installed(String),
}

/// Dependencies that log every retry of something weir reports once
/// itself: kube-client logs each failed request of a watch that is
/// retrying on its own, where the pod source says once that the API is lost
/// and once that it is back.
const QUIET: &str = "kube_client=off";

/// Installs the process's logger. The level is `level` if given, else
/// `RUST_LOG` if set, else `info`.
pub fn init(level: Option<&str>, format: LogFormat) -> Result<(), LoggingError> {
    let env = std::env::var("RUST_LOG")
        .ok()
        .filter(|v| !v.trim().is_empty());
    let directives = filter_directives(level, env.as_deref());
    let filter = EnvFilter::builder()
        .parse(&directives)
        .map_err(|e| LoggingError::Filter {
            directives: level.or(env.as_deref()).unwrap_or("info").to_owned(),
            reason: e.to_string(),
        })?;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(false);
    let installed = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder
            .json()
            .with_current_span(true)
            .with_span_list(false)
            .try_init(),
    };
    installed.map_err(|e| LoggingError::Installed(e.to_string()))
}

/// The filter: what was asked, with the noisy dependencies quieted unless
/// the ask names them.
fn filter_directives(level: Option<&str>, env: Option<&str>) -> String {
    let asked = level.or(env).unwrap_or("info");
    if asked.contains("kube_client") {
        asked.to_owned()
    } else {
        format!("{asked},{QUIET}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_flag_wins_over_rust_log_and_kube_client_stays_quiet() {
        assert_eq!(filter_directives(None, None), "info,kube_client=off");
        assert_eq!(
            filter_directives(Some("debug"), Some("warn")),
            "debug,kube_client=off"
        );
        assert_eq!(
            filter_directives(None, Some("warn,weir=debug")),
            "warn,weir=debug,kube_client=off"
        );
        assert_eq!(
            filter_directives(Some("info,kube_client=debug"), None),
            "info,kube_client=debug"
        );
    }
}
