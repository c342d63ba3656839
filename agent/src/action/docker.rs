//! `type: docker`: runs a container per message through the Docker Engine API (bollard), with the
//! message in `HOOKER_EVENT`, and records its exit code and logs.
//!
//! Owns the container's whole life: pull (by policy), create, start, wait, logs, remove; a
//! container that outlives `timeout`, or whose delivery is cancelled, is killed and removed.
//! Invariant: every container it creates carries the label `hooker.action=<name>`.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use async_trait::async_trait;
use bollard::Docker as Engine;
use bollard::errors::Error as EngineError;
use bollard::models::{ContainerCreateBody, HostConfig, Mount, MountType};
use bollard::query_parameters::{
    CreateContainerOptions, CreateImageOptions, KillContainerOptions, LogsOptions,
    RemoveContainerOptions, WaitContainerOptions,
};
use futures_util::StreamExt;
use serde::Deserialize;
use tokio::sync::OnceCell;

use super::escape::env_value;
use super::{Action, ActionError, BuildContext, Built, Report};
use crate::config::{ActionConfig, Diagnostic, units};
use crate::image_ref::ImageRef;
use crate::message::Message;

const DEFAULT_TIMEOUT: Duration = Duration::from_secs(300);
/// Log lines asked of the daemon, and bytes kept of them; the report shows an excerpt.
const LOG_TAIL_LINES: &str = "500";
const LOG_LIMIT: usize = 64 * 1024;
const LOG_EXCERPT: usize = 2048;
/// Linux refuses an environment string over 128 KiB (MAX_ARG_STRLEN) when the container starts.
const ENV_EVENT_LIMIT: usize = 120 * 1024;
/// `EX_TEMPFAIL` from sysexits.h: the container asks to be retried later (as for `exec`).
const EXIT_TEMPFAIL: i64 = 75;
/// The label every container Hooker creates carries, with the action's name as value.
pub const ACTION_LABEL: &str = "hooker.action";
const DEFAULT_DOCKER_HOST: &str = "unix:///var/run/docker.sock";
const SHELLS: &[&str] = &["sh", "bash", "ash", "dash", "zsh", "ksh", "busybox"];

#[derive(Debug, Deserialize)]
#[serde(rename_all = "kebab-case")]
struct DockerConfig {
    /// The image to run (required).
    docker_image_name: String,
    /// The command (exec form, no shell); items may hold `event.input.<path>`.
    #[serde(default, deserialize_with = "units::de_string_list")]
    docker_cmd: Vec<String>,
    /// `KEY=VALUE` entries added to the container's environment.
    #[serde(default, deserialize_with = "units::de_string_list")]
    docker_env: Vec<String>,
    /// Network mode (`bridge`, `host`, `none`, or a network's name); the daemon's default if unset.
    #[serde(default)]
    docker_network: Option<String>,
    /// Bind mounts, host path → container path (append `:ro` for read-only).
    #[serde(default)]
    docker_volume_mounts: BTreeMap<String, String>,
    /// Limit for pull + run; the container is killed and removed past it. Default 5 minutes.
    #[serde(default, deserialize_with = "units::de_duration")]
    timeout: Option<Duration>,
    /// `if-not-present` (default), `always` or `never`.
    #[serde(default)]
    pull_policy: Option<PullPolicy>,
    /// Memory limit, e.g. `256MB`.
    #[serde(default, deserialize_with = "units::de_byte_size")]
    memory: Option<u64>,
    /// CPU limit in cores, e.g. `0.5`.
    #[serde(default)]
    cpus: Option<f64>,
    /// Remove the container once it has finished (default true). Timed-out containers are
    /// always removed.
    #[serde(default)]
    auto_remove: Option<bool>,
    /// Engine address; defaults to `DOCKER_HOST`, else the local socket.
    #[serde(default)]
    docker_host: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
enum PullPolicy {
    IfNotPresent,
    Always,
    Never,
}

pub struct Docker {
    name: String,
    image: String,
    pull_ref: String,
    cmd: Vec<String>,
    env: Vec<String>,
    network: Option<String>,
    mounts: Vec<Mount>,
    timeout: Duration,
    pull_policy: PullPolicy,
    memory: Option<i64>,
    nano_cpus: Option<i64>,
    auto_remove: bool,
    host: String,
    /// Connected and version-negotiated on first use; a failed attempt is retried next time.
    engine: OnceCell<Engine>,
}

/// How a container ended.
struct Finished {
    exit_code: i64,
    oom_killed: bool,
    logs: String,
}

/// Removes a container when dropped unless disarmed, so a cancelled delivery leaves nothing.
struct Cleanup {
    engine: Engine,
    id: String,
    armed: bool,
}

pub fn build(config: &ActionConfig, _cx: &BuildContext) -> Result<Built, Diagnostic> {
    let (settings, warnings) = super::settings::<DockerConfig>(config)?;
    let located = |key: &str, message: String| {
        Diagnostic::new(config.place(), message)
            .key(key)
            .line(config.item.line_of(key))
    };
    let image = settings.docker_image_name.trim().to_string();
    let pull_ref = ImageRef::parse(&image)
        .ok_or_else(|| {
            located(
                "docker-image-name",
                format!("`{image}` is not an image reference"),
            )
        })?
        .pullable();
    check_no_event_in_shell_script(&settings.docker_cmd)
        .map_err(|message| located("docker-cmd", message))?;
    for entry in &settings.docker_env {
        if !matches!(entry.split_once('='), Some((key, _)) if !key.is_empty()) {
            return Err(located("docker-env", format!("`{entry}` is not KEY=VALUE")));
        }
    }
    let mut mounts = Vec::new();
    for (host, target) in &settings.docker_volume_mounts {
        let (target, read_only) = match target.strip_suffix(":ro") {
            Some(target) => (target, true),
            None => (target.strip_suffix(":rw").unwrap_or(target), false),
        };
        if !host.starts_with('/') || !target.starts_with('/') {
            return Err(located(
                "docker-volume-mounts",
                format!("`{host}: {target}`: both paths must be absolute"),
            ));
        }
        mounts.push(Mount {
            source: Some(host.clone()),
            target: Some(target.to_string()),
            typ: Some(MountType::BIND),
            read_only: Some(read_only),
            ..Default::default()
        });
    }
    let memory = match settings.memory {
        Some(bytes) if bytes < 6 << 20 => {
            return Err(located(
                "memory",
                "must be at least 6MB (Docker's minimum)".into(),
            ));
        }
        Some(bytes) => {
            Some(i64::try_from(bytes).map_err(|_| located("memory", "too large".into()))?)
        }
        None => None,
    };
    let nano_cpus = match settings.cpus {
        Some(cpus) if !(cpus.is_finite() && cpus > 0.0 && cpus <= 1024.0) => {
            return Err(located(
                "cpus",
                format!("`{cpus}` is not a number of cores such as 0.5"),
            ));
        }
        Some(cpus) => Some((cpus * 1e9) as i64),
        None => None,
    };
    let host = settings
        .docker_host
        .filter(|h| !h.trim().is_empty())
        .or_else(|| {
            std::env::var("DOCKER_HOST")
                .ok()
                .filter(|h| !h.trim().is_empty())
        })
        .unwrap_or_else(|| DEFAULT_DOCKER_HOST.to_string());
    if !(host.starts_with("unix://") || host.starts_with("tcp://") || host.starts_with("http://")) {
        return Err(located(
            "docker-host",
            format!(
                "`{host}`: use unix:///path or tcp://host:port (TLS daemons are not supported)"
            ),
        ));
    }
    Built::new(
        Docker {
            name: config.name.clone(),
            image,
            pull_ref,
            cmd: settings.docker_cmd,
            env: settings.docker_env,
            network: settings.docker_network.filter(|n| !n.trim().is_empty()),
            mounts,
            timeout: settings.timeout.unwrap_or(DEFAULT_TIMEOUT),
            pull_policy: settings.pull_policy.unwrap_or(PullPolicy::IfNotPresent),
            memory,
            nano_cpus,
            auto_remove: settings.auto_remove.unwrap_or(true),
            host,
            engine: OnceCell::new(),
        },
        warnings,
    )
}

/// A shell's `-c` script is a command line: event data there could run as code. Event values
/// belong in separate arguments (`[sh, -c, 'echo "$1"', sh, event.input.x]`).
fn check_no_event_in_shell_script(cmd: &[String]) -> Result<(), String> {
    let Some(program) = cmd.first() else {
        return Ok(());
    };
    let base = program.rsplit('/').next().unwrap_or(program);
    if !SHELLS.contains(&base) {
        return Ok(());
    }
    let mut items = cmd.iter().skip(1);
    while let Some(item) = items.next() {
        let is_c = item.starts_with('-') && !item.starts_with("--") && item.contains('c');
        if is_c {
            if let Some(script) = items.next()
                && script.contains("event.input")
            {
                return Err(format!(
                    "`event.input` inside a `{base} -c` script would put event data on a shell command line; pass it as a separate argument instead: [{base}, -c, 'echo \"$1\"', {base}, event.input.<path>]"
                ));
            }
            return Ok(());
        }
    }
    Ok(())
}

impl Docker {
    async fn engine(&self) -> Result<&Engine, ActionError> {
        self.engine
            .get_or_try_init(|| async {
                // The client's own per-request limit; `timeout` bounds the whole delivery.
                let request_timeout = self.timeout.as_secs().saturating_add(30);
                let engine = if let Some(path) = self.host.strip_prefix("unix://") {
                    Engine::connect_with_unix(path, request_timeout, bollard::API_DEFAULT_VERSION)
                } else {
                    Engine::connect_with_http(
                        &self.host,
                        request_timeout,
                        bollard::API_DEFAULT_VERSION,
                    )
                }
                .map_err(|err| {
                    ActionError::retryable(format!(
                        "cannot reach the Docker daemon at {}: {err}",
                        self.host
                    ))
                })?;
                // bollard speaks the newest API by default; an older daemon (20.10 = 1.41)
                // rejects every versioned call unless the client steps down.
                engine.negotiate_version().await.map_err(|err| {
                    ActionError::retryable(format!(
                        "cannot reach the Docker daemon at {}: {err}",
                        self.host
                    ))
                })
            })
            .await
    }

    /// Makes the image present as `pull-policy` says; never pulls an image that is present
    /// unless the policy is `always`.
    async fn ensure_image(&self, engine: &Engine) -> Result<(), ActionError> {
        if self.pull_policy != PullPolicy::Always {
            match engine.inspect_image(&self.pull_ref).await {
                Ok(_) => return Ok(()),
                Err(EngineError::DockerResponseServerError {
                    status_code: 404, ..
                }) => {}
                Err(err) => return Err(engine_error("inspecting the image", err)),
            }
            if self.pull_policy == PullPolicy::Never {
                return Err(ActionError::permanent(format!(
                    "image {} is not present and pull-policy is never",
                    self.image
                )));
            }
        }
        let options = CreateImageOptions {
            from_image: Some(self.pull_ref.clone()),
            ..Default::default()
        };
        let mut progress = engine.create_image(Some(options), None, None);
        while let Some(step) = progress.next().await {
            step.map_err(|err| engine_error(&format!("pulling {}", self.image), err))?;
        }
        Ok(())
    }

    fn container_body(&self, message: &Message) -> Result<ContainerCreateBody, ActionError> {
        if message.body.len() > ENV_EVENT_LIMIT {
            return Err(ActionError::permanent(format!(
                "the message is {} bytes; HOOKER_EVENT holds at most {ENV_EVENT_LIMIT} (a Linux limit on one environment string)",
                message.body.len()
            )));
        }
        let mut env = self.env.clone();
        env.extend(message_env(message));
        let cmd = command(&self.cmd, message);
        let labels = HashMap::from([
            (ACTION_LABEL.to_string(), self.name.clone()),
            ("hooker.route".to_string(), message.route.clone()),
        ]);
        Ok(ContainerCreateBody {
            image: Some(self.image.clone()),
            cmd: (!cmd.is_empty()).then_some(cmd),
            env: Some(env),
            labels: Some(labels),
            attach_stdin: Some(false),
            tty: Some(false),
            host_config: Some(HostConfig {
                network_mode: self.network.clone(),
                mounts: (!self.mounts.is_empty()).then(|| self.mounts.clone()),
                memory: self.memory,
                nano_cpus: self.nano_cpus,
                ..Default::default()
            }),
            ..Default::default()
        })
    }

    /// Start, wait, read the logs. Runs under the delivery's timeout.
    async fn run(&self, engine: &Engine, id: &str) -> Result<Finished, ActionError> {
        engine
            .start_container(id, None)
            .await
            .map_err(|err| engine_error("starting the container", err))?;
        let mut wait = engine.wait_container(id, None::<WaitContainerOptions>);
        let exit_code = match wait.next().await {
            Some(Ok(done)) => done.status_code,
            Some(Err(EngineError::DockerContainerWaitError { code, .. })) => code,
            Some(Err(err)) => return Err(engine_error("waiting for the container", err)),
            None => {
                return Err(ActionError::retryable(
                    "the daemon ended the wait without an exit code",
                ));
            }
        };
        let oom_killed = exit_code != 0
            && engine
                .inspect_container(id, None)
                .await
                .ok()
                .and_then(|c| c.state)
                .and_then(|s| s.oom_killed)
                .unwrap_or(false);
        let logs = self.logs(engine, id).await;
        Ok(Finished {
            exit_code,
            oom_killed,
            logs,
        })
    }

    async fn logs(&self, engine: &Engine, id: &str) -> String {
        let options = LogsOptions {
            stdout: true,
            stderr: true,
            tail: LOG_TAIL_LINES.to_string(),
            ..Default::default()
        };
        let mut stream = engine.logs(id, Some(options));
        let mut kept = Vec::new();
        while let Some(Ok(chunk)) = stream.next().await {
            let bytes = chunk.into_bytes();
            let room = LOG_LIMIT.saturating_sub(kept.len());
            kept.extend_from_slice(&bytes[..bytes.len().min(room)]);
        }
        super::excerpt(&kept, LOG_EXCERPT)
    }

    fn container_name(&self) -> String {
        let safe: String = self
            .name
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-') {
                    c
                } else {
                    '-'
                }
            })
            .take(40)
            .collect();
        format!("hooker-{safe}-{:08x}", rand::random::<u32>())
    }
}

#[async_trait]
impl Action for Docker {
    fn name(&self) -> &str {
        &self.name
    }

    fn kind(&self) -> &'static str {
        "docker"
    }

    async fn send(&self, message: &Message) -> Result<Report, ActionError> {
        let body = self.container_body(message)?;
        let engine = self.engine().await?.clone();
        let deadline = tokio::time::Instant::now() + self.timeout;
        let timed_out = || {
            ActionError::retryable(format!(
                "container did not finish within {:?}; killed and removed",
                self.timeout
            ))
        };
        tokio::time::timeout_at(deadline, self.ensure_image(&engine))
            .await
            .map_err(|_| timed_out())??;
        let name = self.container_name();
        let options = CreateContainerOptions {
            name: Some(name.clone()),
            ..Default::default()
        };
        let created = engine
            .create_container(Some(options), body)
            .await
            .map_err(|err| engine_error("creating the container", err))?;
        let mut cleanup = Cleanup {
            engine: engine.clone(),
            id: created.id.clone(),
            armed: true,
        };
        let finished = match tokio::time::timeout_at(deadline, self.run(&engine, &created.id)).await
        {
            Ok(result) => result,
            Err(_) => {
                let kill = KillContainerOptions {
                    signal: "SIGKILL".into(),
                };
                let _ = engine.kill_container(&created.id, Some(kill)).await;
                cleanup.remove().await;
                tracing::warn!(action = %self.name, container = %name, timeout = ?self.timeout, "Container timed out; killed and removed.");
                return Err(timed_out());
            }
        };
        let finished = match finished {
            Ok(finished) => finished,
            Err(err) => {
                cleanup.remove().await;
                return Err(err);
            }
        };
        if self.auto_remove {
            cleanup.remove().await;
        } else {
            cleanup.armed = false;
        }
        tracing::info!(action = %self.name, container = %name, image = %self.image, exit_code = finished.exit_code, oom_killed = finished.oom_killed, logs = %finished.logs, "Container finished.");
        outcome(&finished)
    }

    fn preview(&self, message: &Message) -> serde_json::Value {
        let cmd = command(&self.cmd, message);
        serde_json::json!({
            "image": self.image,
            "cmd": cmd,
            "HOOKER_EVENT": message.body,
            "network": self.network,
            "timeout_seconds": self.timeout.as_secs_f64(),
        })
    }
}

/// Exit 0 is success; 75 asks for a retry; an out-of-memory kill and any other exit code are
/// permanent (the same container would fail the same way).
fn outcome(finished: &Finished) -> Result<Report, ActionError> {
    let logs = &finished.logs;
    match finished.exit_code {
        0 => Ok(Report::detail(format!("exit 0; logs: {logs:?}"))),
        EXIT_TEMPFAIL => Err(ActionError::retryable(format!(
            "exit {EXIT_TEMPFAIL} (try again later); logs: {logs:?}"
        ))),
        code if finished.oom_killed => Err(ActionError::permanent(format!(
            "exit {code}: killed for exceeding its memory limit; logs: {logs:?}"
        ))),
        code => Err(ActionError::permanent(format!(
            "exit {code}; logs: {logs:?}"
        ))),
    }
}

/// Engine errors: the daemon's 4xx answers (no such image, network or mount; bad config) are
/// permanent; 5xx, transport errors and timeouts are retryable.
fn engine_error(doing: &str, err: EngineError) -> ActionError {
    let message = format!("Docker: {doing} failed: {err}");
    match err {
        EngineError::DockerResponseServerError { status_code, .. }
            if (400..500).contains(&status_code) =>
        {
            ActionError::permanent(message)
        }
        _ => ActionError::retryable(message),
    }
}

// === impl Cleanup ===

impl Cleanup {
    async fn remove(&mut self) {
        self.armed = false;
        remove(&self.engine, &self.id).await;
    }
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            let engine = self.engine.clone();
            let id = std::mem::take(&mut self.id);
            runtime.spawn(async move { remove(&engine, &id).await });
        }
    }
}

async fn remove(engine: &Engine, id: &str) {
    let options = RemoveContainerOptions {
        force: true,
        ..Default::default()
    };
    if let Err(err) = engine.remove_container(id, Some(options)).await {
        tracing::warn!(container = %id, error = %err, "Cannot remove container.");
    }
}

/// The message in the container's environment (`KEY=value`). The environment cannot hold NUL
/// (the container would not start): a NUL travels as `\u0000`.
fn message_env(message: &Message) -> Vec<String> {
    [
        ("HOOKER_EVENT", message.body.as_str()),
        // For containers written for Postee (which quoted it; Hooker passes it as is).
        ("POSTEE_EVENT", message.body.as_str()),
        ("HOOKER_ROUTE", message.route.as_str()),
        ("HOOKER_TITLE", message.title.as_str()),
        ("HOOKER_EVENT_ID", message.event_id.as_str()),
    ]
    .into_iter()
    .map(|(key, value)| format!("{key}={}", env_value(value)))
    .collect()
}

/// The command, placeholders substituted; like the environment, an argument cannot hold NUL.
fn command(cmd: &[String], message: &Message) -> Vec<String> {
    cmd.iter()
        .map(|item| env_value(&message.substitute(item)).into_owned())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nul_in_event_values_reaches_the_container_escaped() {
        let message = Message {
            route: "r".into(),
            title: "ti\u{0}tle".into(),
            body: "{\"k\":\"a\u{0}b\"}".into(),
            event: std::sync::Arc::new(serde_json::json!({"v": "x\u{0}y"}).into()),
            ..Message::default()
        };
        let env = message_env(&message);
        assert!(env.iter().all(|entry| !entry.contains('\0')), "{env:?}");
        assert!(
            env.contains(&"HOOKER_EVENT={\"k\":\"a\\u0000b\"}".to_string()),
            "{env:?}"
        );
        assert!(
            env.contains(&"HOOKER_TITLE=ti\\u0000tle".to_string()),
            "{env:?}"
        );
        let cmd = command(&cmd(&["scan", "event.input.v"]), &message);
        assert_eq!(cmd, ["scan", "x\\u0000y"]);
    }

    fn cmd(items: &[&str]) -> Vec<String> {
        items.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn event_values_may_be_arguments_but_not_shell_scripts() {
        assert!(check_no_event_in_shell_script(&cmd(&["scan", "event.input.image"])).is_ok());
        assert!(
            check_no_event_in_shell_script(&cmd(&[
                "sh",
                "-c",
                "echo \"$1\"",
                "sh",
                "event.input.image"
            ]))
            .is_ok()
        );
        let err =
            check_no_event_in_shell_script(&cmd(&["/bin/sh", "-c", "echo event.input.image"]))
                .unwrap_err();
        assert!(err.contains("separate argument"), "{err}");
        assert!(check_no_event_in_shell_script(&cmd(&["bash", "-ec", "x=event.input.a"])).is_err());
    }

    #[test]
    fn exit_codes_decide_the_outcome() {
        let finished = |exit_code, oom_killed| Finished {
            exit_code,
            oom_killed,
            logs: "out".into(),
        };
        assert!(outcome(&finished(0, false)).is_ok());
        let kind = |f: Finished| outcome(&f).unwrap_err().kind;
        assert_eq!(
            kind(finished(75, false)),
            super::super::ErrorKind::Retryable
        );
        assert_eq!(kind(finished(3, false)), super::super::ErrorKind::Permanent);
        assert_eq!(
            kind(finished(137, true)),
            super::super::ErrorKind::Permanent
        );
    }
}
