//! Hooker: a security alert router and responder for Kubernetes nodes.
//!
//! Data flows one way: [`intake`] → [`router`] → [`outbox`] → [`action`]. See ARCHITECTURE.md.

#![forbid(unsafe_code)]

pub mod action;
pub mod auth;
pub mod batch;
pub mod commands;
pub mod config;
pub mod event;
pub mod event_json;
#[cfg(test)]
mod fixtures;
pub mod image_ref;
pub mod intake;
pub mod message;
pub mod metrics;
pub mod outbox;
pub mod pipeline;
pub mod router;
pub mod run;
pub mod send;
pub mod supervise;
pub mod tls;

/// Sets up logging to stderr (stdout belongs to the `stdout` action).
pub fn init_logging(debug: bool, format: config::settings::LogFormat) {
    use tracing_subscriber::EnvFilter;
    let default = if debug { "hooker=debug,info" } else { "info" };
    let filter = EnvFilter::try_from_env("HOOKER_LOG").unwrap_or_else(|_| EnvFilter::new(default));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false);
    match format {
        config::settings::LogFormat::Json => builder.json().flatten_event(true).init(),
        config::settings::LogFormat::Text => builder.init(),
    }
}
