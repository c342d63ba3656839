//! Failures after an event is taken: nothing acknowledged is lost, nothing stays broken. A
//! template that fails to render dead-letters the event (replayable once the config is fixed),
//! `validate` refuses a template without `result`, Rego evaluation has a time budget and a bound
//! on `numbers.range`, and reloading survives a config that once panicked it.

use std::time::Duration;

use hooker_tests::{Agent, Sink, TempDir, hooker, wait_until, webhook_config};

/// A route `r` (events with `n`) whose inline template renders `result`, to a webhook.
fn template_config(url: &str, result: &str) -> String {
    format!(
        "routes:\n  - name: r\n    input: input.n\n    template: t\n    actions: [hook]\ntemplates:\n  - name: t\n    body: |\n      package custom\n      title := \"T\"\n      {result}\nactions:\n  - name: hook\n    type: webhook\n    enable: true\n    url: {url}\n"
    )
}

async fn dead_letters(agent: &Agent) -> anyhow::Result<Vec<serde_json::Value>> {
    let (code, out, err) = agent.cli(&["dlq", "list"]).await?;
    anyhow::ensure!(code == 0, "dlq list failed: {err}");
    let listed: serde_json::Value = serde_json::from_str(&out)?;
    Ok(listed
        .get("dead_letters")
        .or(Some(&listed))
        .and_then(|v| v.as_array())
        .cloned()
        .unwrap_or_default())
}

#[tokio::test]
async fn a_template_that_fails_to_render_dead_letters_the_event_and_a_fixed_config_replays_it()
-> anyhow::Result<()> {
    let sink = Sink::start().await?;
    // `result` is defined, but not for an event without `body`: the render fails per event.
    let broken = template_config(&sink.url("/"), "result := input.body");
    let agent = Agent::builder(&broken)
        .env("HOOKER_WATCH_CONFIG", "false")
        .start()
        .await?;
    let (status, _) = agent.post("/", r#"{"n": 7}"#).await?;
    assert_eq!(status, 200);

    let letters = wait_until("a dead letter", Duration::from_secs(20), async || {
        dead_letters(&agent).await.ok().filter(|l| !l.is_empty())
    })
    .await?;
    assert_eq!(letters.len(), 1, "{letters:?}");
    let error = letters[0]["error"].as_str().unwrap_or_default();
    assert!(
        error.contains("template \"t\" failed to render") && error.contains("result"),
        "{error}"
    );
    assert_eq!(letters[0]["route"], "r");
    assert_eq!(letters[0]["action"], "hook");
    assert_eq!(agent.metric("hooker_dead_letters").await?, 1.0);
    assert!(sink.requests().is_empty());

    // Still broken: a replay leaves it where it is.
    agent.cli(&["dlq", "replay", "--all"]).await?;
    assert_eq!(dead_letters(&agent).await?.len(), 1);

    // Fixed: the replay renders the event with the template in force now, and delivers it.
    let fixed = template_config(&sink.url("/"), "result := sprintf(\"n=%v\", [input.n])");
    std::fs::write(agent.dir.join("cfg.yaml"), fixed)?;
    let (status, answer) = agent.post("/reload", "").await?;
    assert_eq!(status, 200, "{answer}");
    let (code, out, err) = agent.cli(&["dlq", "replay", "--all"]).await?;
    assert_eq!(code, 0, "{out}{err}");
    let got = sink.wait_for(1).await?;
    assert_eq!(got[0].body_text(), "n=7");
    wait_until(
        "the dead letter gone",
        Duration::from_secs(10),
        async || dead_letters(&agent).await.ok().filter(|l| l.is_empty()),
    )
    .await?;
    Ok(())
}

#[tokio::test]
async fn validate_refuses_a_used_template_that_defines_no_result() -> anyhow::Result<()> {
    let dir = TempDir::new("validate-no-result");
    let path = dir.join("cfg.yaml");
    let config = template_config("http://127.0.0.1:9/", "summary := \"no result here\"");
    std::fs::write(&path, config)?;
    let (code, out, err) = hooker(&["validate", &path.display().to_string()], &[]).await?;
    assert_eq!(code, 1, "{out}{err}");
    assert!(err.contains("template \"t\""), "{err}");
    assert!(err.contains("has no rule named result"), "{err}");
    Ok(())
}

/// A route whose rule makes `numbers.range` build 2,000,000 numbers, and one that loops for
/// ten billion iterations: `validate` stops both (the loop at its time budget), never hangs.
#[tokio::test]
async fn validate_stops_a_runaway_route_instead_of_hanging() -> anyhow::Result<()> {
    let dir = TempDir::new("validate-runaway");
    let path = dir.join("cfg.yaml");
    let config = "routes:\n  - name: big\n    input: count(numbers.range(1, 2000000)) > 0\n    template: raw\n  - name: slow\n    input: count([1 | some a in numbers.range(1, 100000); some b in numbers.range(1, 100000)]) > 0\n    template: raw\ntemplates:\n  - name: raw\n    rego-package: hooker.rawmessage.json\n";
    std::fs::write(&path, config)?;
    let (code, out, err) = hooker(
        &["validate", &path.display().to_string()],
        &[("HOOKER_REGO_TIMEOUT", "300ms")],
    )
    .await?;
    assert_eq!(code, 1, "{out}{err}");
    assert!(err.contains("route \"big\""), "{err}");
    assert!(
        err.contains("numbers.range would make 2000000 numbers"),
        "{err}"
    );
    assert!(err.contains("route \"slow\""), "{err}");
    assert!(err.contains("HOOKER_REGO_TIMEOUT"), "{err}");
    Ok(())
}

/// A route that runs past its time budget for some events is a no-match for them, counted in
/// `hooker_route_errors_total{stage="evaluate"}`; the router goes on with every other event.
#[tokio::test]
async fn an_over_budget_route_is_a_counted_no_match_and_routing_goes_on() -> anyhow::Result<()> {
    let sink = Sink::start().await?;
    let config = format!(
        "routes:\n  - name: slow\n    input: |\n      input.heavy\n      count([1 | some a in numbers.range(1, 100000); some b in numbers.range(1, 100000)]) > 0\n    template: raw\n    actions: [hook]\n  - name: fast\n    input: input.n\n    template: raw\n    actions: [hook]\ntemplates:\n  - name: raw\n    rego-package: hooker.rawmessage.json\nactions:\n  - name: hook\n    type: webhook\n    enable: true\n    url: {}\n",
        sink.url("/")
    );
    let agent = Agent::builder(&config)
        .env("HOOKER_REGO_TIMEOUT", "300ms")
        .env("HOOKER_WORKERS", "1")
        .start()
        .await?;
    for n in 1..=3 {
        let (status, answer) = agent
            .post("/", format!(r#"{{"n": {n}, "heavy": true}}"#))
            .await?;
        assert_eq!(status, 200, "{answer}");
    }
    let (status, _) = agent.post("/", r#"{"n": 4}"#).await?;
    assert_eq!(status, 200);
    let got = sink.wait_for(4).await?;
    let mut delivered: Vec<i64> = got
        .iter()
        .filter_map(|r| r.body_json()["n"].as_i64())
        .collect();
    delivered.sort();
    assert_eq!(delivered, [1, 2, 3, 4], "each through the fast route only");
    assert_eq!(
        agent
            .metric(r#"hooker_route_errors_total{route="slow",stage="evaluate"}"#)
            .await?,
        3.0
    );
    Ok(())
}

/// A duration too large for any clock (`99999999999999999999s`) is refused by a reload, and
/// reloading keeps working afterwards, with readiness telling the truth all along. Before, the
/// parser panicked and took the reload task with it: every later reload answered "reloading is
/// not available" while `/readyz` said ready. Holds whether the parser refuses the value or
/// panics (the reload task survives a panicking reload).
#[tokio::test]
async fn a_config_with_a_huge_duration_is_refused_and_reloading_keeps_working() -> anyhow::Result<()>
{
    let first = Sink::start().await?;
    let second = Sink::start().await?;
    let agent = Agent::builder(&webhook_config(&first.url("/")))
        .env("HOOKER_WATCH_CONFIG", "false")
        .start()
        .await?;
    let path = agent.dir.join("cfg.yaml");
    let huge = format!(
        "{}    timeout: 99999999999999999999s\n",
        webhook_config(&first.url("/"))
    );
    std::fs::write(&path, huge)?;
    let (status, answer) = agent.post("/reload", "").await?;
    assert_eq!(status, 422, "refused: {answer}");
    let (status, ready) = agent.get("/readyz").await?;
    assert_eq!(status, 200, "the running config still serves: {ready}");
    assert!(ready.contains("\"outcome\":\"failure\""), "{ready}");

    std::fs::write(&path, webhook_config(&second.url("/")))?;
    let (status, answer) = agent.post("/reload", "").await?;
    assert_eq!(status, 200, "reloading still works: {answer}");
    agent.post("/", r#"{"n": 1}"#).await?;
    second.wait_for(1).await?;
    assert!(first.requests().is_empty());
    let (status, ready) = agent.get("/readyz").await?;
    assert_eq!(status, 200, "{ready}");
    Ok(())
}
