//! The `docker` action against the real Docker daemon: a tiny local image made with
//! `docker import` from busybox-static (no registry), success, exit codes, timeout, environment,
//! mounts and limits. Every test checks that no container labelled with its action is left.

use std::time::Duration;

use hooker_tests::{Agent, TempDir, wait_until};

const IMAGE: &str = "hooker-test-busybox:latest";

/// Fails with a clear message when there is no daemon: these tests need a real one.
fn docker(args: &[&str]) -> std::process::Output {
    let output = std::process::Command::new("docker").args(args).output();
    match output {
        Ok(output) => output,
        Err(err) => panic!(
            "cannot run the docker CLI ({err}); install docker.io (tests/run.sh does) and start dockerd"
        ),
    }
}

/// Makes sure the daemon answers and the test image exists (imported once, idempotently).
fn prepare() {
    static READY: std::sync::Mutex<bool> = std::sync::Mutex::new(false);
    let mut ready = READY.lock().unwrap_or_else(|e| e.into_inner());
    if *ready {
        return;
    }
    let version = docker(&["version", "--format", "{{.Server.APIVersion}}"]);
    assert!(
        version.status.success(),
        "the Docker daemon is unreachable (start dockerd; tests/run.sh does): {}",
        String::from_utf8_lossy(&version.stderr)
    );
    if !docker(&["image", "inspect", IMAGE]).status.success() {
        let root = TempDir::new("busybox-root");
        let bin = root.join("bin");
        std::fs::create_dir_all(&bin).expect("create rootfs");
        std::fs::copy("/bin/busybox", bin.join("busybox"))
            .expect("/bin/busybox (Debian busybox-static) is needed to build the test image");
        for applet in ["sh", "echo", "cat", "sleep", "printf", "ls", "touch"] {
            std::os::unix::fs::symlink("busybox", bin.join(applet)).expect("applet link");
        }
        let tar = std::process::Command::new("tar")
            .args(["-C", &root.path().display().to_string(), "-cf", "-", "."])
            .output()
            .expect("tar");
        let mut import = std::process::Command::new("docker")
            .args(["import", "-", IMAGE])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::null())
            .spawn()
            .expect("docker import");
        {
            use std::io::Write;
            let mut stdin = import.stdin.take().expect("stdin");
            stdin.write_all(&tar.stdout).expect("feed docker import");
        }
        assert!(
            import.wait().expect("docker import").success(),
            "docker import failed"
        );
    }
    *ready = true;
}

/// Containers labelled with this action, running or not.
fn containers_of(action: &str) -> Vec<String> {
    let filter = format!("label=hooker.action={action}");
    let output = docker(&["ps", "-a", "-q", "--filter", &filter]);
    String::from_utf8_lossy(&output.stdout)
        .split_whitespace()
        .map(str::to_string)
        .collect()
}

fn assert_none_left(action: &str) {
    let left = containers_of(action);
    if !left.is_empty() {
        let mut args = vec!["rm", "-f"];
        args.extend(left.iter().map(String::as_str));
        docker(&args);
    }
    assert!(
        left.is_empty(),
        "containers left behind for {action}: {left:?}"
    );
}

/// A unique action name per test run, so parallel runs and leftovers never mix.
fn action_name(test: &str) -> String {
    format!("docker-{test}-{}", std::process::id())
}

/// One route taking every event, rendering `input.payload` as the body, into `action`.
fn config(action: &str, keys: &str) -> String {
    format!(
        r#"
routes:
  - name: r
    input: input.payload
    template: payload
    actions: [{action}]
templates:
  - name: payload
    body: |
      package payload
      title := "payload"
      result := input.payload
actions:
  - name: {action}
    type: docker
    enable: true
    retry-max-attempts: 1
    docker-image-name: {IMAGE}
{keys}
"#
    )
}

async fn log_line(agent: &Agent, message: &str, action: &str) -> anyhow::Result<serde_json::Value> {
    wait_until(
        &format!("log {message:?}"),
        Duration::from_secs(60),
        async || {
            agent
                .logs()
                .into_iter()
                .find(|l| l["message"] == message && l["action"] == action)
        },
    )
    .await
}

#[tokio::test]
async fn docker_runs_a_container_and_records_exit_code_and_logs() -> anyhow::Result<()> {
    prepare();
    let action = action_name("ok");
    let keys = r#"    docker-cmd: ["sh", "-c", "echo hello-from-container; echo to-stderr >&2"]"#;
    let agent = Agent::start(&config(&action, keys)).await?;
    agent.post("/", r#"{"payload":"x"}"#).await?;
    let finished = log_line(&agent, "Container finished.", &action).await?;
    assert_eq!(finished["exit_code"], 0, "{finished}");
    assert_eq!(finished["image"], IMAGE);
    let logs = finished["logs"].as_str().unwrap_or_default();
    assert!(
        logs.contains("hello-from-container") && logs.contains("to-stderr"),
        "{finished}"
    );
    let series =
        format!(r#"hooker_deliveries_total{{action="{action}",type="docker",outcome="success"}}"#);
    wait_until("success counted", Duration::from_secs(10), async || {
        (agent.metric(&series).await.ok()? == 1.0).then_some(())
    })
    .await?;
    assert_none_left(&action);
    Ok(())
}

#[tokio::test]
async fn docker_non_zero_exit_is_a_permanent_failure_with_the_logs() -> anyhow::Result<()> {
    prepare();
    let action = action_name("exit");
    let keys = r#"    docker-cmd: ["sh", "-c", "echo going-down; exit 3"]"#;
    let agent = Agent::start(&config(&action, keys)).await?;
    agent.post("/", r#"{"payload":"x"}"#).await?;
    let failed = log_line(&agent, "Delivery failed.", &action).await?;
    let error = failed["error"].as_str().unwrap_or_default();
    assert!(
        error.contains("exit 3") && error.contains("going-down"),
        "{failed}"
    );
    assert_eq!(failed["retryable"], false, "{failed}");
    let finished = log_line(&agent, "Container finished.", &action).await?;
    assert_eq!(finished["exit_code"], 3);
    assert_none_left(&action);
    Ok(())
}

#[tokio::test]
async fn docker_kills_and_removes_a_container_past_its_timeout() -> anyhow::Result<()> {
    prepare();
    let action = action_name("timeout");
    let keys = "    docker-cmd: [sleep, \"600\"]\n    timeout: 2s";
    let agent = Agent::start(&config(&action, keys)).await?;
    agent.post("/", r#"{"payload":"x"}"#).await?;
    let failed = log_line(&agent, "Delivery failed.", &action).await?;
    let error = failed["error"].as_str().unwrap_or_default();
    assert!(error.contains("did not finish within"), "{failed}");
    assert_eq!(failed["retryable"], true, "{failed}");
    assert_none_left(&action);
    Ok(())
}

#[tokio::test]
async fn docker_passes_the_message_exactly_and_event_values_as_arguments() -> anyhow::Result<()> {
    prepare();
    let action = action_name("env");
    let work = TempDir::new("docker-env");
    let input = work.join("in");
    let output = work.join("out");
    std::fs::create_dir_all(&input)?;
    std::fs::create_dir_all(&output)?;
    std::fs::write(input.join("greeting"), "read-only hello")?;
    let keys = format!(
        r#"    docker-env: ["STATIC=fixed value"]
    docker-network: none
    docker-volume-mounts:
      {input}: /in:ro
      {output}: /out
    docker-cmd:
      - sh
      - -c
      - 'printf "%s" "$HOOKER_EVENT" > /out/event; printf "%s" "$POSTEE_EVENT" > /out/postee; printf "%s" "$1" > /out/arg; printf "%s" "$STATIC" > /out/static; cat /in/greeting > /out/greeting; touch /in/nope 2>/dev/null || echo denied > /out/ro'
      - sh
      - event.input.image"#,
        input = input.display(),
        output = output.display()
    );
    let agent = Agent::start(&config(&action, &keys)).await?;
    // Quotes, a newline, shell syntax and non-ASCII: it must arrive byte for byte. The body is
    // JSON, so `event.input.image` is read from it.
    let payload = "{\"image\": \"alpine:3.10; rm -rf /\", \"a\": \"it's \\\"quoted\\\"\",\n \"cmd\": \"$(touch /out/PWNED) `id`\", \"é\": \"ü\"}";
    let event = serde_json::json!({"payload": payload});
    agent.post("/", event.to_string()).await?;
    log_line(&agent, "Container finished.", &action).await?;
    assert_eq!(std::fs::read_to_string(output.join("event"))?, payload);
    assert_eq!(std::fs::read_to_string(output.join("postee"))?, payload);
    assert_eq!(
        std::fs::read_to_string(output.join("arg"))?,
        "alpine:3.10; rm -rf /"
    );
    assert_eq!(
        std::fs::read_to_string(output.join("static"))?,
        "fixed value"
    );
    assert_eq!(
        std::fs::read_to_string(output.join("greeting"))?,
        "read-only hello"
    );
    assert_eq!(std::fs::read_to_string(output.join("ro"))?.trim(), "denied");
    assert!(!output.join("PWNED").exists());
    assert!(!input.join("nope").exists());
    assert_none_left(&action);
    Ok(())
}

#[tokio::test]
async fn docker_applies_limits_and_keeps_the_container_without_auto_remove() -> anyhow::Result<()> {
    prepare();
    let action = action_name("keep");
    let keys = "    docker-cmd: [echo, kept]\n    memory: 64MB\n    cpus: 0.5\n    auto-remove: false\n    pull-policy: never";
    let agent = Agent::start(&config(&action, keys)).await?;
    agent.post("/", r#"{"payload":"x"}"#).await?;
    log_line(&agent, "Container finished.", &action).await?;
    let kept = containers_of(&action);
    assert_eq!(
        kept.len(),
        1,
        "exactly the one finished container is kept: {kept:?}"
    );
    let inspect = docker(&[
        "inspect",
        "--format",
        "{{.HostConfig.Memory}} {{.HostConfig.NanoCpus}} {{.State.ExitCode}}",
        &kept[0],
    ]);
    let removed = docker(&["rm", "-f", &kept[0]]);
    assert!(removed.status.success());
    assert_eq!(
        String::from_utf8_lossy(&inspect.stdout).trim(),
        format!("{} 500000000 0", 64 << 20)
    );
    assert_none_left(&action);
    Ok(())
}

#[tokio::test]
async fn docker_never_pulls_with_pull_policy_never() -> anyhow::Result<()> {
    prepare();
    let action = action_name("never");
    let config =
        config(&action, "    pull-policy: never").replace(IMAGE, "hooker-test-absent-image:nope");
    let agent = Agent::start(&config).await?;
    agent.post("/", r#"{"payload":"x"}"#).await?;
    let failed = log_line(&agent, "Delivery failed.", &action).await?;
    let error = failed["error"].as_str().unwrap_or_default();
    assert!(
        error.contains("is not present and pull-policy is never"),
        "{failed}"
    );
    assert_eq!(failed["retryable"], false);
    assert_none_left(&action);
    Ok(())
}

#[tokio::test]
async fn docker_config_errors_are_located() -> anyhow::Result<()> {
    let work = TempDir::new("docker-validate");
    let path = work.join("cfg.yaml");
    let keys = "    docker-cmd: [sh, -c, 'echo event.input.image']\n    cpus: -1";
    std::fs::write(&path, config("bad", keys))?;
    let (code, _, stderr) =
        hooker_tests::hooker(&["validate", &path.display().to_string()], &[]).await?;
    assert_eq!(code, 1, "{stderr}");
    assert!(
        stderr.contains("action \"bad\", key `docker-cmd`") && stderr.contains("separate argument"),
        "{stderr}"
    );
    Ok(())
}

#[tokio::test]
async fn docker_unreachable_daemon_is_a_retryable_failure() -> anyhow::Result<()> {
    let action = action_name("nodaemon");
    let keys = "    docker-host: unix:///nonexistent/docker.sock";
    let agent = Agent::start(&config(&action, keys)).await?;
    agent.post("/", r#"{"payload":"x"}"#).await?;
    let failed = log_line(&agent, "Delivery failed.", &action).await?;
    let error = failed["error"].as_str().unwrap_or_default();
    assert!(
        error.contains("cannot reach the Docker daemon at unix:///nonexistent/docker.sock"),
        "{failed}"
    );
    assert_eq!(failed["retryable"], true);
    Ok(())
}
