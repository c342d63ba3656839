//! `type: stdout`: prints each message body on Hooker's standard output, one per line.

use std::io::Write;

use async_trait::async_trait;
use serde::Deserialize;

use super::{Action, ActionError, BuildContext, Built, Report};
use crate::config::{ActionConfig, Diagnostic};
use crate::message::Message;

#[derive(Debug, Deserialize)]
#[serde(rename_all = "kebab-case")]
struct StdoutConfig {}

pub struct Stdout {
    name: String,
}

pub fn build(config: &ActionConfig, _cx: &BuildContext) -> Result<Built, Diagnostic> {
    let (StdoutConfig {}, warnings) = super::settings(config)?;
    Built::new(
        Stdout {
            name: config.name.clone(),
        },
        warnings,
    )
}

#[async_trait]
impl Action for Stdout {
    fn name(&self) -> &str {
        &self.name
    }

    fn kind(&self) -> &'static str {
        "stdout"
    }

    async fn send(&self, message: &Message) -> Result<Report, ActionError> {
        let mut line = message.body.clone();
        line.push('\n');
        // The lock keeps concurrent deliveries from interleaving; the write may block on a slow pipe.
        tokio::task::spawn_blocking(move || {
            let mut out = std::io::stdout().lock();
            out.write_all(line.as_bytes()).and_then(|()| out.flush())
        })
        .await
        .map_err(|err| ActionError::permanent(format!("stdout writer failed: {err}")))?
        .map_err(|err| ActionError::retryable(format!("cannot write to stdout: {err}")))?;
        Ok(Report::none())
    }
}
