//! `type: exec`: runs a shell script on the node with the message in `HOOKER_EVENT` and on stdin.
//!
//! The event is never put on a command line: the script is config (`exec-script` or
//! `input-file`), the event travels in the environment and on standard input only. Standard
//! input carries the body byte for byte; the environment, which cannot hold NUL, carries each
//! NUL as `\u0000`.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use async_trait::async_trait;
use serde::Deserialize;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};

use super::escape::env_value;
use super::{Action, ActionError, BuildContext, Built, Report};
use crate::config::{ActionConfig, Diagnostic, units};
use crate::message::Message;

const DEFAULT_TIMEOUT: Duration = Duration::from_secs(60);
/// Output kept per stream; the rest is read and discarded so the script never blocks on a pipe.
const OUTPUT_LIMIT: usize = 64 * 1024;
/// Linux refuses an environment string over 128 KiB (MAX_ARG_STRLEN); larger events go on stdin only.
const ENV_EVENT_LIMIT: usize = 120 * 1024;
/// `EX_TEMPFAIL` from sysexits.h: the script asks to be retried later.
const EXIT_TEMPFAIL: i32 = 75;

#[derive(Debug, Deserialize)]
#[serde(rename_all = "kebab-case")]
struct ExecConfig {
    #[serde(default)]
    input_file: Option<PathBuf>,
    #[serde(default)]
    exec_script: Option<String>,
    #[serde(default, deserialize_with = "units::de_string_list")]
    env: Vec<String>,
    #[serde(default, deserialize_with = "units::de_duration")]
    timeout: Option<Duration>,
    #[serde(default)]
    shell: Option<PathBuf>,
}

enum Script {
    File(PathBuf),
    Inline(String),
}

pub struct Exec {
    name: String,
    script: Script,
    env: Vec<(String, String)>,
    timeout: Duration,
    shell: PathBuf,
}

pub fn build(config: &ActionConfig, _cx: &BuildContext) -> Result<Built, Diagnostic> {
    let (settings, warnings) = super::settings::<ExecConfig>(config)?;
    let located = |key: &str, message: String| {
        Diagnostic::new(config.place(), message)
            .key(key)
            .line(config.item.line_of(key))
    };
    // Postee's UI writes `input-file: ''` beside an `exec-script`: empty means absent.
    let input_file = settings.input_file.filter(|f| !f.as_os_str().is_empty());
    let exec_script = settings.exec_script.filter(|s| !s.trim().is_empty());
    let script = match (input_file, exec_script) {
        (Some(file), None) => Script::File(file),
        (None, Some(script)) => Script::Inline(script),
        (Some(_), Some(_)) => {
            return Err(located(
                "input-file",
                "set either `input-file` or `exec-script`, not both".into(),
            ));
        }
        _ => {
            return Err(located(
                "exec-script",
                "one of `input-file` or `exec-script` is required".into(),
            ));
        }
    };
    let mut env = Vec::new();
    for entry in settings.env {
        match entry.split_once('=') {
            Some((key, value)) if !key.is_empty() => env.push((key.to_string(), value.to_string())),
            _ => return Err(located("env", format!("`{entry}` is not KEY=VALUE"))),
        }
    }
    Built::new(
        Exec {
            name: config.name.clone(),
            script,
            env,
            timeout: settings.timeout.unwrap_or(DEFAULT_TIMEOUT),
            shell: settings.shell.unwrap_or_else(|| PathBuf::from("/bin/sh")),
        },
        warnings,
    )
}

impl Exec {
    fn command(&self, message: &Message) -> tokio::process::Command {
        let mut command = tokio::process::Command::new(&self.shell);
        match &self.script {
            Script::File(path) => command.arg(path),
            Script::Inline(script) => command.arg("-c").arg(script),
        };
        command.envs(self.env.iter().map(|(k, v)| (k, env_value(v).into_owned())));
        // The environment cannot hold NUL: those values carry it escaped, stdin as it is.
        let event = env_value(&message.body);
        if event.len() <= ENV_EVENT_LIMIT {
            // POSTEE_EVENT too, so scripts written for Postee keep working.
            command
                .env("HOOKER_EVENT", event.as_ref())
                .env("POSTEE_EVENT", event.as_ref());
        }
        command
            .env("HOOKER_ROUTE", env_value(&message.route).as_ref())
            .env("HOOKER_TITLE", env_value(&message.title).as_ref())
            .env("HOOKER_EVENT_ID", env_value(&message.event_id).as_ref())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            // Its own process group, so a timeout kills the script's children too.
            .process_group(0);
        command
    }
}

#[async_trait]
impl Action for Exec {
    fn name(&self) -> &str {
        &self.name
    }

    fn kind(&self) -> &'static str {
        "exec"
    }

    async fn send(&self, message: &Message) -> Result<Report, ActionError> {
        let mut child = self.command(message).spawn().map_err(|err| {
            ActionError::permanent(format!("cannot start {}: {err}", self.shell.display()))
        })?;
        let pid = child.id();
        let stdin = child.stdin.take();
        let body = message.body.clone().into_bytes();
        let feed = async move {
            if let Some(mut stdin) = stdin {
                // A script that does not read stdin closes the pipe; that is not an error.
                let _ = stdin.write_all(&body).await;
                let _ = stdin.shutdown().await;
            }
        };
        let stdout = read_bounded(child.stdout.take());
        let stderr = read_bounded(child.stderr.take());
        let run = async {
            let ((), out, err, status) = tokio::join!(feed, stdout, stderr, child.wait());
            (out, err, status)
        };
        let (out, err, status) = match tokio::time::timeout(self.timeout, run).await {
            Ok(result) => result,
            Err(_) => {
                if let Some(pid) = pid.and_then(|p| i32::try_from(p).ok()) {
                    let _ = nix::sys::signal::killpg(
                        nix::unistd::Pid::from_raw(pid),
                        nix::sys::signal::Signal::SIGKILL,
                    );
                }
                return Err(ActionError::retryable(format!(
                    "script timed out after {:?} and was killed",
                    self.timeout
                )));
            }
        };
        let status = status
            .map_err(|e| ActionError::retryable(format!("waiting for the script failed: {e}")))?;
        let output = combine(&out, &err);
        match status.code() {
            Some(0) => Ok(Report::detail(format!("exit 0; output: {output}"))),
            Some(EXIT_TEMPFAIL) => Err(ActionError::retryable(format!(
                "exit {EXIT_TEMPFAIL} (try again later); output: {output}"
            ))),
            Some(code) => Err(ActionError::permanent(format!(
                "exit {code}; output: {output}"
            ))),
            None => Err(ActionError::retryable(format!(
                "killed by a signal; output: {output}"
            ))),
        }
    }

    fn preview(&self, message: &Message) -> serde_json::Value {
        let script = match &self.script {
            Script::File(path) => format!("{} {}", self.shell.display(), path.display()),
            Script::Inline(_) => format!("{} -c <exec-script>", self.shell.display()),
        };
        serde_json::json!({ "run": script, "HOOKER_EVENT": message.body, "timeout_seconds": self.timeout.as_secs_f64() })
    }
}

async fn read_bounded(stream: Option<impl AsyncRead + Unpin>) -> Vec<u8> {
    let Some(mut stream) = stream else {
        return Vec::new();
    };
    let mut kept = Vec::new();
    let mut chunk = [0u8; 8192];
    loop {
        match stream.read(&mut chunk).await {
            Ok(0) | Err(_) => return kept,
            Ok(n) => {
                let room = OUTPUT_LIMIT.saturating_sub(kept.len());
                kept.extend_from_slice(&chunk[..n.min(room)]);
            }
        }
    }
}

fn combine(stdout: &[u8], stderr: &[u8]) -> String {
    let out = super::excerpt(stdout, 2048);
    let err = super::excerpt(stderr, 2048);
    match (out.is_empty(), err.is_empty()) {
        (_, true) => format!("{out:?}"),
        (true, false) => format!("stderr {err:?}"),
        (false, false) => format!("{out:?}, stderr {err:?}"),
    }
}
