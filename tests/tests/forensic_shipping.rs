//! The forensic log's hash chain, its shipping and `hooker log verify`, against the real agent:
//! lines written by a running agent verify, one chain runs across rotation and restarts, and
//! tampering with the files on disk is found at the line it was done; segments shipped to a real
//! S3 API server (moto) arrive whole, verify there, and a store that is down loses nothing.

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use anyhow::Context;
use hooker_tests::{Agent, TempDir, hooker, python, wait_until};

/// Every event to one forensic log at `path`, rotated at 2KB.
fn config(path: &Path) -> String {
    format!(
        r#"
routes:
  - name: r
    input: input
    template: raw
    actions: [forensic]
templates:
  - name: raw
    rego-package: hooker.rawmessage.json
actions:
  - name: forensic
    type: log
    enable: true
    path: {}
    max-size: 2KB
    max-files: 20
"#,
        path.display()
    )
}

/// Starts an agent on `state`, posts events `from..to` and waits until each is in the log.
async fn log_events(path: &Path, state: &Path, from: u32, to: u32) -> anyhow::Result<()> {
    let agent = Agent::builder(&config(path))
        .state_dir(state)
        .start()
        .await?;
    for n in from..to {
        let (status, body) = agent
            .post("/", format!(r#"{{"n":{n},"pad":"{}"}}"#, "p".repeat(200)))
            .await?;
        assert_eq!(status, 200, "{body}");
    }
    let series = r#"hooker_deliveries_total{action="forensic",type="log",outcome="success"}"#;
    wait_until(
        &format!("{} log deliveries", to - from),
        Duration::from_secs(20),
        async || (agent.metric(series).await.ok()? == f64::from(to - from)).then_some(()),
    )
    .await?;
    agent.stop().await?;
    Ok(())
}

async fn verify(target: &Path, extra: &[&str]) -> anyhow::Result<(i32, String)> {
    let target = target.display().to_string();
    let mut args = vec!["log", "verify", target.as_str()];
    args.extend_from_slice(extra);
    let (code, stdout, stderr) = hooker(&args, &[]).await?;
    Ok((code, format!("{stdout}{stderr}")))
}

/// The log's lines, oldest first, as (file name, line) pairs.
fn lines_of(dir: &Path) -> anyhow::Result<Vec<(String, serde_json::Value)>> {
    let mut all = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        let name = path
            .file_name()
            .unwrap_or_default()
            .to_string_lossy()
            .into_owned();
        if !name.starts_with("forensic.jsonl") {
            continue;
        }
        for line in std::fs::read_to_string(&path)?.lines() {
            all.push((
                name.clone(),
                serde_json::from_str::<serde_json::Value>(line)?,
            ));
        }
    }
    all.sort_by_key(|(_, line)| line["seq"].as_u64());
    Ok(all)
}

#[tokio::test]
async fn the_chain_verifies_across_rotation_and_restart_and_edits_are_found() -> anyhow::Result<()>
{
    let dir = TempDir::new("forensic-chain");
    let logs = dir.join("logs");
    let state = dir.join("state");
    let path = logs.join("forensic.jsonl");
    log_events(&path, &state, 0, 10).await?;
    // A restarted agent goes on with the chain it finds on disk.
    log_events(&path, &state, 10, 20).await?;
    assert!(logs.join("forensic.jsonl.2").exists(), "the log rotated");

    let lines = lines_of(&logs)?;
    assert_eq!(lines.len(), 20);
    for (seq, (_, line)) in lines.iter().enumerate() {
        assert_eq!(line["seq"], seq as u64, "{line}");
    }
    let (code, out) = verify(&logs, &[]).await?;
    assert_eq!(code, 0, "{out}");
    let last_hash = lines[19].1["hash"].as_str().unwrap_or_default().to_string();
    assert!(
        out.contains("intact: ") && out.contains(&last_hash),
        "{out}"
    );

    // One line of a rotated segment edited: verify names the file and line.
    let (file, line) = &lines[5];
    let file_path = logs.join(file);
    let text = std::fs::read_to_string(&file_path)?;
    let mut edited: Vec<String> = text.lines().map(|l| format!("{l}\n")).collect();
    let at = edited
        .iter()
        .position(|l| l.contains(&format!("\"seq\":{},", line["seq"])))
        .unwrap_or_default();
    edited[at] = edited[at].replacen(r#""pad":"p"#, r#""pad":"q"#, 1);
    std::fs::write(&file_path, edited.concat())?;
    let number = at + 1;
    let (code, out) = verify(&logs, &[]).await?;
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains(&format!("{file} line {number}: edited")),
        "{out}"
    );
    std::fs::write(&file_path, &text)?;

    // The newest line deleted: found only against the last hash known.
    let newest = std::fs::read_to_string(&path)?;
    let count = newest.lines().count();
    let kept: String = newest
        .lines()
        .take(count - 1)
        .map(|l| format!("{l}\n"))
        .collect();
    std::fs::write(&path, kept)?;
    let (code, out) = verify(&logs, &[]).await?;
    assert_eq!(code, 0, "{out}");
    let (code, out) = verify(&logs, &["--last", &last_hash]).await?;
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("tail deleted"), "{out}");
    Ok(())
}

fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// A moto S3 API server on a loopback port, killed when dropped (moto keeps its buckets in
/// memory: one started again is empty).
struct Moto {
    port: u16,
    child: Option<tokio::process::Child>,
}

impl Moto {
    async fn start(port: u16) -> anyhow::Result<Moto> {
        let child = tokio::process::Command::new("python3")
            .args(["-m", "moto.server", "-H", "127.0.0.1", "-p", &port.to_string()])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .context("cannot start the moto S3 server: install it (python3 -m pip install 'moto[server]'); tests/run.sh does")?;
        let moto = Moto {
            port,
            child: Some(child),
        };
        let client = hooker_tests::client()?;
        let url = format!("{}/", moto.endpoint());
        wait_until("moto to answer", Duration::from_secs(60), async || {
            client.get(&url).send().await.ok().map(|_| ())
        })
        .await
        .context(
            "moto server did not start (is moto[server] installed? tests/run.sh installs it)",
        )?;
        let (code, out, err) = python(
            "s3_objects.py",
            &[&moto.endpoint(), "create-bucket", BUCKET],
        )
        .await?;
        anyhow::ensure!(code == 0, "cannot create the bucket: {out}{err}");
        Ok(moto)
    }

    fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    async fn stop(&mut self) -> anyhow::Result<()> {
        if let Some(mut child) = self.child.take() {
            child.kill().await?;
        }
        Ok(())
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        if let Some(child) = self.child.as_mut() {
            let _ = child.start_kill();
        }
    }
}

const BUCKET: &str = "forensic";
const AWS_ENV: [(&str, &str); 3] = [
    ("AWS_ACCESS_KEY_ID", "testing"),
    ("AWS_SECRET_ACCESS_KEY", "testing"),
    ("AWS_DEFAULT_REGION", "us-east-1"),
];

/// The objects under `prefix`, as `s3_objects.py dump` prints them.
async fn objects(moto: &Moto, prefix: &str) -> anyhow::Result<Vec<serde_json::Value>> {
    let (code, out, err) =
        python("s3_objects.py", &[&moto.endpoint(), "dump", BUCKET, prefix]).await?;
    anyhow::ensure!(code == 0, "cannot list the objects: {out}{err}");
    Ok(serde_json::from_str(&out)?)
}

/// The `n` of every event in the objects, in object order, after checking each object arrived
/// whole: its bytes match its sha256, it holds whole lines, one contiguous run of the chain.
fn shipped_events(objects: &[serde_json::Value]) -> Vec<u64> {
    let mut events = Vec::new();
    for object in objects {
        assert_eq!(object["sha256"], object["actual"], "{object}");
        let text = object["text"].as_str().unwrap_or_default();
        assert!(text.ends_with('\n'), "{object}");
        let mut seq = None;
        for line in text.lines() {
            let line: serde_json::Value = serde_json::from_str(line).unwrap_or_default();
            let this = line["seq"].as_u64();
            if let (Some(before), Some(this)) = (seq, this) {
                assert_eq!(this, before + 1, "{object}");
            }
            seq = this;
            events.extend(line["event"]["n"].as_u64());
        }
    }
    events
}

/// The rotated segments still waiting on the node.
fn waiting(logs: &Path) -> usize {
    std::fs::read_dir(logs)
        .map(|entries| {
            entries
                .filter_map(Result::ok)
                .filter(|e| {
                    e.file_name()
                        .to_string_lossy()
                        .starts_with("forensic.jsonl.20")
                })
                .count()
        })
        .unwrap_or(0)
}

fn ship_config(path: &Path, endpoint: &str) -> String {
    format!(
        "{}    retry-max-backoff: 2s\n    ship:\n      bucket: {BUCKET}\n      prefix: evidence\n      endpoint: {endpoint}\n      region: us-east-1\n      interval: 1s\n",
        config(path)
    )
}

async fn post_events(agent: &Agent, from: u32, to: u32) -> anyhow::Result<()> {
    for n in from..to {
        let (status, body) = agent
            .post("/", format!(r#"{{"n":{n},"pad":"{}"}}"#, "p".repeat(200)))
            .await?;
        assert_eq!(status, 200, "{body}");
    }
    let series = r#"hooker_deliveries_total{action="forensic",type="log",outcome="success"}"#;
    wait_until(
        &format!("{to} log deliveries"),
        Duration::from_secs(20),
        async || (agent.metric(series).await.ok()? == f64::from(to)).then_some(()),
    )
    .await
}

#[tokio::test]
async fn segments_ship_to_s3_whole_verify_there_and_survive_the_store_being_down()
-> anyhow::Result<()> {
    let mut moto = Moto::start(free_port()?).await?;
    let dir = TempDir::new("forensic-ship");
    let logs = dir.join("logs");
    let path = logs.join("forensic.jsonl");
    let mut builder = Agent::builder(&ship_config(&path, &moto.endpoint()))
        .state_dir(&dir.join("state"))
        .env("NODE_NAME", "node-3");
    for (key, value) in AWS_ENV {
        builder = builder.env(key, value);
    }
    let agent = builder.start().await?;
    post_events(&agent, 0, 12).await?;

    // Rotated segments leave the node once uploaded; the open one follows on the interval.
    let prefix = "evidence/node-3/";
    let shipped = wait_until("every line shipped", Duration::from_secs(60), async || {
        let objects = objects(&moto, prefix).await.ok()?;
        (waiting(&logs) == 0 && shipped_events(&objects).len() == 12).then_some(objects)
    })
    .await?;
    assert!(shipped.len() >= 3, "several segments: {shipped:?}");
    let mut events = shipped_events(&shipped);
    events.sort_unstable();
    assert_eq!(events, (0..12).collect::<Vec<u64>>());
    // The open segment's object is the file as it is on the node.
    let open = std::fs::read_to_string(&path)?;
    let last = shipped
        .last()
        .map(|o| o["text"].as_str().unwrap_or_default());
    assert_eq!(last, Some(open.as_str()));
    let date = chrono_date(&open);
    for object in &shipped {
        let key = object["key"].as_str().unwrap_or_default();
        assert!(
            key.starts_with(&format!("{prefix}{date}/")) && key.ends_with(".jsonl.gz"),
            "{key}"
        );
    }
    assert!(
        agent
            .metric(r#"hooker_forensic_uploads_total{action="forensic"}"#)
            .await?
            >= 3.0
    );

    // `log verify` on the store: intact; then one line of a shipped object rewritten.
    let target = format!("s3://{BUCKET}/{prefix}");
    let endpoint = moto.endpoint();
    let store = ["--endpoint", endpoint.as_str()];
    let (code, out) = verify_env(&target, &store).await?;
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("intact: "), "{out}");
    let edited = shipped[1]["key"].as_str().unwrap_or_default();
    let (code, out, err) = python(
        "s3_objects.py",
        &[&moto.endpoint(), "edit", BUCKET, edited, "2"],
    )
    .await?;
    assert_eq!(code, 0, "{out}{err}");
    let (code, out) = verify_env(&target, &store).await?;
    assert_eq!(code, 1, "{out}");
    assert!(out.contains(&format!("{edited} line 2: edited")), "{out}");

    // The store down: segments rotate and wait on the node, nothing is lost.
    moto.stop().await?;
    post_events(&agent, 12, 24).await?;
    wait_until("a failed upload", Duration::from_secs(30), async || {
        let failed = agent
            .metric(r#"hooker_forensic_upload_failures_total{action="forensic"}"#)
            .await
            .ok()?;
        (failed > 0.0 && waiting(&logs) > 0).then_some(())
    })
    .await?;
    assert!(
        agent
            .metric(r#"hooker_forensic_backlog_bytes{action="forensic"}"#)
            .await?
            > 0.0
    );
    // Back (empty: moto keeps nothing): what waited arrives, and the node lets go of it.
    let moto = Moto::start(moto.port).await?;
    let shipped = wait_until("the backlog shipped", Duration::from_secs(60), async || {
        let objects = objects(&moto, prefix).await.ok()?;
        let events = shipped_events(&objects);
        (waiting(&logs) == 0 && (12..24).all(|n| events.contains(&n))).then_some(objects)
    })
    .await?;
    assert!(!shipped.is_empty());
    let endpoint = moto.endpoint();
    let (code, out) = verify_env(&target, &["--endpoint", endpoint.as_str()]).await?;
    assert_eq!(code, 0, "{out}");
    agent.stop().await?;
    Ok(())
}

/// The UTC date of the first line's `time`.
fn chrono_date(text: &str) -> String {
    let first: serde_json::Value =
        serde_json::from_str(text.lines().next().unwrap_or_default()).unwrap_or_default();
    first["time"]
        .as_str()
        .unwrap_or_default()
        .chars()
        .take(10)
        .collect()
}

async fn verify_env(target: &str, extra: &[&str]) -> anyhow::Result<(i32, String)> {
    let mut args = vec!["log", "verify", target];
    args.extend_from_slice(extra);
    let (code, stdout, stderr) = hooker(&args, &AWS_ENV).await?;
    Ok((code, format!("{stdout}{stderr}")))
}
