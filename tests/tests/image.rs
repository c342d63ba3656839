//! The runtime image: `daemonset/build-image.sh` assembles it from the binary under test with
//! `docker import` (the same file system the Dockerfile builds), and it must start as the
//! non-root user, answer `/healthz` and `/readyz` on a published port, and write its forensic log.
//! Needs a real Docker daemon; the container and the image are removed afterwards.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use hooker_tests::{fixture, hooker_bin, wait_until};

fn docker(args: &[&str]) -> std::process::Output {
    Command::new("docker")
        .args(args)
        .output()
        .unwrap_or_else(|err| {
            panic!("cannot run the docker CLI ({err}); install docker.io (tests/run.sh does)")
        })
}

fn stdout(output: &std::process::Output) -> String {
    String::from_utf8_lossy(&output.stdout).trim().to_string()
}

/// Removes the container and the image however the test ends.
struct Cleanup {
    container: String,
    image: String,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        docker(&["rm", "-f", &self.container]);
        docker(&["rmi", "-f", &self.image]);
    }
}

#[tokio::test]
async fn image_starts_non_root_and_answers_healthz() -> anyhow::Result<()> {
    let version = docker(&["version", "--format", "{{.Server.APIVersion}}"]);
    assert!(
        version.status.success(),
        "the Docker daemon is unreachable (start dockerd; tests/run.sh does): {}",
        String::from_utf8_lossy(&version.stderr)
    );
    let id = std::process::id();
    let cleanup = Cleanup {
        container: format!("hooker-image-test-{id}"),
        image: format!("hooker-image-test:{id}"),
    };
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../daemonset/build-image.sh");
    let built = Command::new("sh")
        .arg(&script)
        .arg(hooker_bin())
        .arg(&cleanup.image)
        .output()?;
    assert!(
        built.status.success(),
        "build-image.sh failed: {}",
        String::from_utf8_lossy(&built.stderr)
    );
    let user = docker(&[
        "image",
        "inspect",
        "--format",
        "{{.Config.User}}",
        &cleanup.image,
    ]);
    assert_eq!(stdout(&user), "10001:10001");

    let run = docker(&[
        "run",
        "-d",
        "--name",
        &cleanup.container,
        "-p",
        "127.0.0.1::8082",
        "-e",
        "HOOKER_HTTPS=off",
        "-e",
        "HOOKER_LOG_FORMAT=json",
        &cleanup.image,
    ]);
    assert!(
        run.status.success(),
        "docker run failed: {}",
        String::from_utf8_lossy(&run.stderr)
    );
    let port = stdout(&docker(&["port", &cleanup.container, "8082/tcp"]));
    let base = format!("http://{}", port.lines().next().unwrap_or_default());
    let client = hooker_tests::client()?;
    let ready = wait_until(
        "the container to answer /readyz",
        Duration::from_secs(30),
        async || {
            let response = client.get(format!("{base}/readyz")).send().await.ok()?;
            (response.status() == 200).then_some(())
        },
    )
    .await;
    if ready.is_err() {
        let logs = docker(&["logs", &cleanup.container]);
        panic!(
            "not ready; container log:\n{}",
            String::from_utf8_lossy(&logs.stderr)
        );
    }
    let health = client.get(format!("{base}/healthz")).send().await?;
    assert_eq!(health.status(), 200);

    let whoami = docker(&["exec", &cleanup.container, "/bin/sh", "-c", "id -u"]);
    assert_eq!(stdout(&whoami), "10001");
    // The embedded default config writes Tracee detections to the forensic log: the non-root
    // user can write its directories.
    let event = std::fs::read_to_string(fixture(
        "tracee/v0.12-era-signature-anti-debugging-TRC-102.json",
    ))?;
    let posted = client.post(format!("{base}/")).body(event).send().await?;
    assert_eq!(posted.status(), 200);
    let logged = wait_until(
        "the forensic log line",
        Duration::from_secs(20),
        async || {
            let out = docker(&[
                "exec",
                &cleanup.container,
                "cat",
                "/var/log/hooker/forensic.jsonl",
            ]);
            let text = stdout(&out);
            (!text.is_empty()).then_some(text)
        },
    )
    .await?;
    let line: serde_json::Value = serde_json::from_str(logged.lines().next().unwrap_or_default())?;
    assert_eq!(line["route"], "tracee-detections", "{line}");
    drop(cleanup);
    Ok(())
}
