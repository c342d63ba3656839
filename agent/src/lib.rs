//! Hooker: a security alert router and responder for Kubernetes nodes.
//!
//! Data flows one way: [`intake`] → [`router`] → [`outbox`] → [`action`]. See ARCHITECTURE.md.

#![forbid(unsafe_code)]

pub mod action;
pub mod auth;
pub mod aws;
pub mod batch;
pub mod cluster;
pub mod commands;
pub mod config;
pub mod event;
pub mod event_json;
#[cfg(test)]
mod fixtures;
pub mod forensic;
pub mod image_ref;
pub mod intake;
pub mod message;
pub mod metrics;
pub mod outbox;
pub mod output;
pub mod pipeline;
pub mod router;
pub mod run;
pub mod send;
pub mod stderr;
pub mod supervise;
pub mod tls;

/// Colour codes in text logs: only on a terminal, and not when `NO_COLOR` is set to anything
/// but the empty string (<https://no-color.org>).
pub fn colour(terminal: bool, no_color: Option<std::ffi::OsString>) -> bool {
    terminal && no_color.is_none_or(|value| value.is_empty())
}

/// Sets up logging to stderr (stdout belongs to the `stdout` action), through
/// [`stderr::LogWriter`] so it still reaches it when [`stderr::route_to_log`] is on.
pub fn init_logging(debug: bool, format: config::settings::LogFormat) {
    use tracing_subscriber::EnvFilter;
    let default = if debug { "hooker=debug,info" } else { "info" };
    let mut filter =
        EnvFilter::try_from_env("HOOKER_LOG").unwrap_or_else(|_| EnvFilter::new(default));
    // aws-sigv4 traces the canonical request, session token included: never logged, whatever
    // HOOKER_LOG asks for.
    if let Ok(quiet) = "aws_sigv4=off".parse() {
        filter = filter.add_directive(quiet);
    }
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(|| stderr::LogWriter)
        .with_ansi(colour(
            std::io::IsTerminal::is_terminal(&std::io::stderr()),
            std::env::var_os("NO_COLOR"),
        ))
        .with_target(false);
    match format {
        config::settings::LogFormat::Json => builder.json().flatten_event(true).init(),
        config::settings::LogFormat::Text => builder.init(),
    }
}

#[cfg(test)]
mod tests {
    use super::colour;

    #[test]
    fn colour_only_on_a_terminal_without_no_color() {
        assert!(colour(true, None));
        assert!(colour(true, Some("".into())), "an empty NO_COLOR is unset");
        assert!(!colour(true, Some("1".into())));
        assert!(
            !colour(false, None),
            "a pipe or a file gets no colour codes"
        );
    }
}
