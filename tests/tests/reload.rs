//! Hot reload: file changes (including a ConfigMap-style symlink swap), SIGHUP and `POST /reload`
//! validate first and swap atomically; a broken config keeps the running one and is reported.

use std::path::Path;
use std::time::Duration;

use hooker_tests::{Agent, Sink, TempDir, wait_until, webhook_config};

async fn reloads(agent: &Agent, outcome: &str) -> f64 {
    agent
        .metric(&format!(
            r#"hooker_config_reloads_total{{outcome="{outcome}"}}"#
        ))
        .await
        .unwrap_or(0.0)
}

async fn wait_reloads(agent: &Agent, outcome: &str, n: f64) -> anyhow::Result<()> {
    wait_until(
        &format!("{n} {outcome} reload(s)"),
        Duration::from_secs(20),
        async || (reloads(agent, outcome).await >= n).then_some(()),
    )
    .await
}

/// Writes a file atomically (write + rename), as editors and config tools do.
fn replace(path: &Path, text: &str) -> anyhow::Result<()> {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text)?;
    std::fs::rename(&tmp, path)?;
    Ok(())
}

#[tokio::test]
async fn editing_the_file_reloads_and_a_broken_file_keeps_the_running_config() -> anyhow::Result<()>
{
    let first = Sink::start().await?;
    let second = Sink::start().await?;
    let dir = TempDir::new("reload-file");
    let path = dir.join("cfg.yaml");
    std::fs::write(&path, webhook_config(&first.url("/")))?;
    let agent = Agent::default_config()
        .env("HOOKER_CFG", path.display().to_string())
        .start()
        .await?;
    agent.post("/", r#"{"n":1}"#).await?;
    first.wait_for(1).await?;

    replace(&path, &webhook_config(&second.url("/")))?;
    wait_reloads(&agent, "success", 2.0).await?;
    agent.post("/", r#"{"n":2}"#).await?;
    second.wait_for(1).await?;

    replace(&path, "routes:\n  - name: r\n    input: input.n ==\n")?;
    wait_reloads(&agent, "failure", 1.0).await?;
    let (status, ready) = agent.get("/readyz").await?;
    assert_eq!(status, 200, "still serving on the previous config");
    assert!(ready.contains("\"outcome\":\"failure\""), "{ready}");
    assert!(
        ready.contains("Rego does not compile") || ready.contains("error"),
        "{ready}"
    );
    agent.post("/", r#"{"n":3}"#).await?;
    let got = second.wait_for(2).await?;
    assert_eq!(
        got[1].body_json()["n"],
        3,
        "the last good config keeps delivering"
    );
    assert_eq!(first.requests().len(), 1);
    Ok(())
}

#[tokio::test]
async fn configmap_symlink_swap_reloads() -> anyhow::Result<()> {
    let first = Sink::start().await?;
    let second = Sink::start().await?;
    let dir = TempDir::new("reload-configmap");
    // What the kubelet builds: ..<timestamp>/cfg.yaml, ..data -> ..<timestamp>, cfg.yaml -> ..data/cfg.yaml.
    let v1 = dir.join("..2026_11_22_v1");
    std::fs::create_dir(&v1)?;
    std::fs::write(v1.join("cfg.yaml"), webhook_config(&first.url("/")))?;
    std::os::unix::fs::symlink("..2026_11_22_v1", dir.join("..data"))?;
    std::os::unix::fs::symlink("..data/cfg.yaml", dir.join("cfg.yaml"))?;
    let agent = Agent::default_config()
        .env("HOOKER_CFG", dir.join("cfg.yaml").display().to_string())
        .start()
        .await?;
    agent.post("/", r#"{"n":1}"#).await?;
    first.wait_for(1).await?;

    let v2 = dir.join("..2026_11_22_v2");
    std::fs::create_dir(&v2)?;
    std::fs::write(v2.join("cfg.yaml"), webhook_config(&second.url("/")))?;
    std::os::unix::fs::symlink("..2026_11_22_v2", dir.join("..data_tmp"))?;
    std::fs::rename(dir.join("..data_tmp"), dir.join("..data"))?;
    std::fs::remove_dir_all(&v1)?;
    wait_reloads(&agent, "success", 2.0).await?;
    agent.post("/", r#"{"n":2}"#).await?;
    second.wait_for(1).await?;
    Ok(())
}

#[tokio::test]
async fn sighup_and_post_reload_apply_a_changed_file() -> anyhow::Result<()> {
    let first = Sink::start().await?;
    let second = Sink::start().await?;
    let third = Sink::start().await?;
    let dir = TempDir::new("reload-signal");
    let path = dir.join("cfg.yaml");
    std::fs::write(&path, webhook_config(&first.url("/")))?;
    let agent = Agent::default_config()
        .env("HOOKER_CFG", path.display().to_string())
        .env("HOOKER_WATCH_CONFIG", "false")
        .start()
        .await?;
    std::fs::write(&path, webhook_config(&second.url("/")))?;
    agent.signal(nix::sys::signal::Signal::SIGHUP)?;
    wait_reloads(&agent, "success", 2.0).await?;
    agent.post("/", r#"{"n":1}"#).await?;
    second.wait_for(1).await?;

    std::fs::write(&path, webhook_config(&third.url("/")))?;
    let (code, answer, stderr) = agent.cli(&["reload"]).await?;
    assert_eq!(code, 0, "{answer}{stderr}");
    assert!(answer.contains("reloaded"), "{answer}");
    agent.post("/", r#"{"n":2}"#).await?;
    third.wait_for(1).await?;

    std::fs::write(&path, "routes: [\n")?;
    let (code, answer, _) = agent.cli(&["reload"]).await?;
    assert_eq!(code, 1, "a broken config is refused: {answer}");
    assert!(answer.contains("invalid YAML"), "{answer}");
    assert!(first.requests().is_empty());
    Ok(())
}

#[tokio::test]
async fn deliveries_of_a_removed_action_are_dead_lettered_not_lost() -> anyhow::Result<()> {
    let down = Sink::scripted(vec![hooker_tests::Reply::status(503)]).await?;
    let dir = TempDir::new("reload-removed");
    let path = dir.join("cfg.yaml");
    let cfg = webhook_config(&down.url("/"))
        .replace("    url:", "    retry-initial-backoff: 1s\n    url:");
    std::fs::write(&path, &cfg)?;
    let agent = Agent::default_config()
        .env("HOOKER_CFG", path.display().to_string())
        .start()
        .await?;
    agent.post("/", r#"{"n":1}"#).await?;
    down.wait_for(1).await?;
    // The action disappears while its delivery waits for a retry.
    std::fs::write(
        &path,
        cfg.replace("actions: [hook]", "actions: []").replace(
            "  - name: hook\n    type: webhook\n    enable: true\n",
            "  - name: other\n    type: stdout\n    enable: true\n",
        ),
    )?;
    let (code, answer, _) = agent.cli(&["reload"]).await?;
    assert_eq!(code, 0, "{answer}");
    wait_until(
        "the orphaned delivery dead-lettered",
        Duration::from_secs(20),
        async || (agent.metric("hooker_dead_letters").await.ok()? == 1.0).then_some(()),
    )
    .await?;
    let (_, listing, _) = agent.cli(&["dlq", "list"]).await?;
    assert!(listing.contains("no longer configured"), "{listing}");
    Ok(())
}

/// Native routes are routed on the intake's thread (`hooker_routes_native` 1); a route only Rego
/// can decide sends every event to the router threads (0). Both paths deliver, and a reload moves
/// between them.
#[tokio::test]
async fn a_reload_moves_routing_between_the_native_path_and_the_router_threads()
-> anyhow::Result<()> {
    let sink = Sink::start().await?;
    let dir = TempDir::new("reload-native");
    let path = dir.join("cfg.yaml");
    let native =
        webhook_config(&sink.url("/")).replace("input: input.n\n", "input: input.n >= 1\n");
    std::fs::write(&path, &native)?;
    let agent = Agent::default_config()
        .env("HOOKER_CFG", path.display().to_string())
        .start()
        .await?;
    assert_eq!(agent.metric("hooker_routes_native").await?, 1.0);
    agent.post("/", r#"{"n":1,"items":[1,2]}"#).await?;
    // Routing read `n` only; the delivered body is made from the whole event.
    let first = sink.wait_for(1).await?;
    assert_eq!(first[0].body_json()["items"], serde_json::json!([1, 2]));

    let rego_only = native.replace("input: input.n >= 1\n", "input: count(input.items) > 1\n");
    replace(&path, &rego_only)?;
    wait_reloads(&agent, "success", 2.0).await?;
    assert_eq!(agent.metric("hooker_routes_native").await?, 0.0);
    agent.post("/", r#"{"n":2,"items":[1,2]}"#).await?;
    agent.post("/", r#"{"n":3,"items":[1]}"#).await?;
    sink.wait_for(2).await?;

    replace(&path, &native)?;
    wait_reloads(&agent, "success", 3.0).await?;
    assert_eq!(agent.metric("hooker_routes_native").await?, 1.0);
    agent.post("/", r#"{"n":4}"#).await?;
    let delivered = sink.wait_for(3).await?;
    let numbers: Vec<_> = delivered
        .iter()
        .map(|r| r.body_json()["n"].clone())
        .collect();
    assert_eq!(
        numbers,
        [1, 2, 4],
        "n=3 has one item: no match under the Rego route"
    );
    Ok(())
}
