//! The forensic log's hash chain and `hooker log verify`, against the real agent: lines written
//! by a running agent verify, one chain runs across rotation and restarts, and tampering with
//! the files on disk is found at the line it was done.

use std::path::Path;
use std::time::Duration;

use hooker_tests::{Agent, TempDir, hooker, wait_until};

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
