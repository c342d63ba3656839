//! The delivery guarantee: an acknowledged event is delivered or visibly dead-lettered, across
//! `kill -9`, restarts and outages.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::time::Duration;

use hooker_tests::{Agent, Reply, Sink, TempDir, assert_arrived_whole, big_pad, wait_until};

/// One route, one webhook action with fast retries, pointed at `url`.
fn config(url: &str, extra: &str) -> String {
    format!(
        r#"
routes:
  - name: r
    input: input.n
    template: raw
    actions: [hook]
templates:
  - name: raw
    rego-package: hooker.rawmessage.json
actions:
  - name: hook
    type: webhook
    enable: true
    url: {url}
    timeout: 2s
    retry-initial-backoff: 50ms
    retry-max-backoff: 200ms
    circuit-breaker-cooldown: 100ms
{extra}"#
    )
}

/// A sink that answers `status` until the flag is set, then 200.
async fn failing_until_fixed(status: u16) -> anyhow::Result<(Arc<AtomicBool>, Sink)> {
    let fixed = Arc::new(AtomicBool::new(false));
    let flag = fixed.clone();
    let sink = Sink::with(move |_| {
        if flag.load(Ordering::Relaxed) {
            Reply::status(200)
        } else {
            Reply::status(status)
        }
    })
    .await?;
    Ok((fixed, sink))
}

/// Starts an agent on `state` (after a stop or crash) with a destination that works; both stay
/// up while they are held.
async fn restart(state: &TempDir) -> anyhow::Result<(Sink, Agent)> {
    let up = Sink::start().await?;
    let agent = Agent::builder(&config(&up.url("/"), ""))
        .state_dir(state.path())
        .start()
        .await?;
    Ok((up, agent))
}

/// Six events of 200 KB each (`n` 1 to 6): their records (event and rendered body, ~400 KB
/// each) go past the engine's 1 MB memory limit from the third on.
const BIG_EVENTS: u64 = 6;

async fn post_big_events(agent: &Agent, pad: &str) -> anyhow::Result<()> {
    for n in 1..=BIG_EVENTS {
        let event = serde_json::json!({"n": n, "pad": pad}).to_string();
        let (status, answer) = agent.post("/", event).await?;
        assert_eq!(status, 200, "{answer}");
    }
    Ok(())
}

fn numbers(sink: &Sink) -> BTreeSet<u64> {
    sink.requests()
        .iter()
        .filter_map(|r| r.body_json()["n"].as_u64())
        .collect()
}

#[tokio::test]
async fn acknowledged_events_survive_kill_9() -> anyhow::Result<()> {
    let state = TempDir::new("crash-state");
    // Phase 1: the destination is failing, so everything acknowledged is still pending.
    let down = Sink::scripted(vec![Reply::status(503)]).await?;
    let agent = Agent::builder(&config(&down.url("/"), ""))
        .state_dir(state.path())
        .start()
        .await?;
    let url = format!("{}/", agent.http_url());
    let acked = Arc::new(std::sync::Mutex::new(BTreeSet::new()));
    let sent = Arc::new(AtomicU32::new(0));
    let mut producers = tokio::task::JoinSet::new();
    for worker in 0..4u64 {
        let client = agent.client.clone();
        let url = url.clone();
        let acked = acked.clone();
        let sent = sent.clone();
        producers.spawn(async move {
            for i in 0..100u64 {
                let n = worker * 1000 + i;
                sent.fetch_add(1, Ordering::Relaxed);
                match client
                    .post(&url)
                    .body(format!(r#"{{"n":{n}}}"#))
                    .send()
                    .await
                {
                    Ok(r) if r.status().as_u16() == 200 => {
                        acked.lock().expect("lock").insert(n);
                    }
                    // Refused or cut off by the kill: not acknowledged, not promised.
                    _ => {}
                }
            }
        });
    }
    wait_until(
        "a good part of the load acknowledged",
        Duration::from_secs(30),
        async || (acked.lock().ok()?.len() >= 100).then_some(()),
    )
    .await?;
    agent.kill9().await?;
    while producers.join_next().await.is_some() {}
    let acked: BTreeSet<u64> = acked.lock().expect("lock").clone();
    assert!(acked.len() >= 100);

    // Phase 2: same state directory, the destination works again.
    let (up, agent) = restart(&state).await?;
    let delivered = wait_until(
        "every acknowledged event delivered",
        Duration::from_secs(60),
        async || {
            let got = numbers(&up);
            acked.is_subset(&got).then_some(got)
        },
    )
    .await?;
    assert!(delivered.len() >= acked.len());
    // Only events in flight at the kill may arrive twice; nothing is invented.
    let total = up.requests().len();
    assert!(
        total <= sent.load(Ordering::Relaxed) as usize + 8,
        "{total} deliveries for {} sent",
        sent.load(Ordering::Relaxed)
    );
    wait_until("outbox drained", Duration::from_secs(20), async || {
        (agent.metric("hooker_outbox_pending").await.ok()? == 0.0).then_some(())
    })
    .await?;
    Ok(())
}

#[tokio::test]
async fn an_outage_is_ridden_out_with_retries() -> anyhow::Result<()> {
    let mut replies = vec![Reply::status(503); 8];
    replies.push(Reply::status(429).header("retry-after", "0"));
    replies.push(Reply::status(200));
    let sink = Sink::scripted(replies).await?;
    let agent = Agent::start(&config(&sink.url("/"), "")).await?;
    for n in 0..5 {
        assert_eq!(agent.post("/", format!(r#"{{"n":{n}}}"#)).await?.0, 200);
    }
    wait_until("all five delivered", Duration::from_secs(30), async || {
        (numbers(&sink).len() == 5 && sink.requests().len() >= 14).then_some(())
    })
    .await?;
    let retries = agent
        .metric(r#"hooker_delivery_retries_total{action="hook"}"#)
        .await?;
    assert!(retries >= 9.0, "retries visible in metrics: {retries}");
    wait_until("outbox empty", Duration::from_secs(10), async || {
        (agent.metric("hooker_outbox_pending").await.ok()? == 0.0).then_some(())
    })
    .await?;
    assert_eq!(agent.metric("hooker_dead_letters").await?, 0.0);
    Ok(())
}

#[tokio::test]
async fn permanent_failures_are_dead_lettered_and_replay_delivers_them() -> anyhow::Result<()> {
    let (fixed, sink) = failing_until_fixed(400).await?;
    let extra = "  - name: flaky\n    type: webhook\n    enable: true\n    url: URL\n    retry-max-attempts: 2\n    retry-initial-backoff: 10ms\n";
    let agent = Agent::start(&config(
        &sink.url("/"),
        &extra.replace("URL", &sink.url("/flaky")),
    ))
    .await?;
    assert_eq!(agent.post("/", r#"{"n":7}"#).await?.0, 200);
    wait_until("dead-lettered", Duration::from_secs(20), async || {
        (agent.metric("hooker_dead_letters").await.ok()? == 1.0).then_some(())
    })
    .await?;
    assert_eq!(
        agent
            .metric(r#"hooker_dead_lettered_total{action="hook"}"#)
            .await?,
        1.0
    );
    // The gauge moves when the engine dead-letters; the store has it once the writer's next
    // commit lands, which `dlq list` (another process) reads.
    let (listing, letters) = wait_until(
        "the dead letter in the store",
        Duration::from_secs(10),
        async || {
            let (code, listing, _) = agent.cli(&["dlq", "list"]).await.ok()?;
            let listing: serde_json::Value = serde_json::from_str(&listing).ok()?;
            let letters = listing["dead_letters"]
                .as_array()
                .cloned()
                .unwrap_or_default();
            (code == 0 && !letters.is_empty()).then_some((listing, letters))
        },
    )
    .await?;
    assert_eq!(letters.len(), 1, "{listing}");
    assert_eq!(letters[0]["action"], "hook");
    assert_eq!(letters[0]["route"], "r");
    assert!(
        letters[0]["error"]
            .as_str()
            .unwrap_or_default()
            .contains("HTTP 400"),
        "{listing}"
    );

    fixed.store(true, Ordering::Relaxed);
    let (code, answer, _) = agent.cli(&["dlq", "replay", "--all"]).await?;
    assert_eq!(code, 0);
    assert!(answer.contains("\"replayed\":1"), "{answer}");
    wait_until(
        "the replay delivered",
        Duration::from_secs(20),
        async || {
            sink.requests()
                .iter()
                .any(|r| r.path == "/" && r.body_json()["n"] == 7)
                .then_some(())
        },
    )
    .await?;
    wait_until("dead letters gone", Duration::from_secs(10), async || {
        (agent.metric("hooker_dead_letters").await.ok()? == 0.0).then_some(())
    })
    .await?;
    let (_, listing, _) = agent.cli(&["dlq", "list"]).await?;
    assert!(listing.contains("\"dead_letters\":[]"), "{listing}");
    let (code, _, stderr) = agent.cli(&["dlq", "replay"]).await?;
    assert_eq!(code, 1, "replay without ids or --all is refused");
    assert!(stderr.contains("--all"), "{stderr}");
    Ok(())
}

#[tokio::test]
async fn retryable_failures_give_up_after_max_attempts() -> anyhow::Result<()> {
    let sink = Sink::scripted(vec![Reply::status(503)]).await?;
    let agent = Agent::start(&config(&sink.url("/"), "").replace(
        "    timeout: 2s\n",
        "    timeout: 2s\n    retry-max-attempts: 3\n",
    ))
    .await?;
    agent.post("/", r#"{"n":1}"#).await?;
    wait_until(
        "dead-lettered after three attempts",
        Duration::from_secs(20),
        async || (agent.metric("hooker_dead_letters").await.ok()? == 1.0).then_some(()),
    )
    .await?;
    assert_eq!(sink.requests().len(), 3);
    let (_, listing, _) = agent.cli(&["dlq", "list"]).await?;
    assert!(listing.contains("gave up after 3 attempts"), "{listing}");
    Ok(())
}

#[tokio::test]
async fn a_full_outbox_answers_429_and_pending_work_resumes_after_restart() -> anyhow::Result<()> {
    let state = TempDir::new("full-state");
    let down = Sink::scripted(vec![Reply::status(503)]).await?;
    let agent = Agent::builder(&config(&down.url("/"), ""))
        .state_dir(state.path())
        .env("HOOKER_OUTBOX_MAX_PENDING", "2")
        .start()
        .await?;
    assert_eq!(agent.post("/", r#"{"n":1}"#).await?.0, 200);
    assert_eq!(agent.post("/", r#"{"n":2}"#).await?.0, 200);
    let (status, answer) = agent.post("/", r#"{"n":3}"#).await?;
    assert_eq!(status, 429, "{answer}");
    // Shedding happens before parsing: a full agent does not spend CPU on bodies it refuses.
    let (status, answer) = agent.post("/", "{not json").await?;
    assert_eq!(status, 429, "refused before it is parsed: {answer}");
    assert!(
        agent.stop().await?.success(),
        "graceful stop with pending work"
    );
    let (up, _agent) = restart(&state).await?;
    wait_until(
        "both pending events delivered after the restart",
        Duration::from_secs(20),
        async || (numbers(&up) == BTreeSet::from([1, 2])).then_some(()),
    )
    .await?;
    Ok(())
}

#[tokio::test]
async fn pending_bytes_bound_intake_and_free_up_on_delivery() -> anyhow::Result<()> {
    // Deliveries held for retry count their stored size; past the bound intake answers 429, and
    // once they are delivered there is room again.
    let (up, sink) = failing_until_fixed(503).await?;
    let agent = Agent::builder(&config(&sink.url("/"), ""))
        .env("HOOKER_OUTBOX_MAX_PENDING_BYTES", "1KB")
        .start()
        .await?;
    let pad = "p".repeat(1200);
    assert_eq!(
        agent
            .post("/", format!(r#"{{"n":1,"pad":"{pad}"}}"#))
            .await?
            .0,
        200,
        "the first event fits: nothing is pending yet"
    );
    let (status, answer) = agent.post("/", r#"{"n":2}"#).await?;
    assert_eq!(status, 429, "over 1KB pending, intake refuses: {answer}");
    up.store(true, Ordering::Relaxed);
    wait_until(
        "the retried delivery succeeds and frees its bytes",
        Duration::from_secs(10),
        async || numbers(&sink).contains(&1).then_some(()),
    )
    .await?;
    wait_until(
        "intake accepts again",
        Duration::from_secs(10),
        async || (agent.post("/", r#"{"n":3}"#).await.ok()?.0 == 200).then_some(()),
    )
    .await?;
    Ok(())
}

#[tokio::test]
async fn dedup_state_survives_a_restart() -> anyhow::Result<()> {
    let state = TempDir::new("dedup-state");
    let sink = Sink::start().await?;
    let cfg = config(&sink.url("/"), "").replace(
        "    actions: [hook]\n",
        "    actions: [hook]\n    plugins:\n      unique-message-props: [\"n\"]\n      unique-message-timeout: 1h\n",
    );
    let agent = Agent::builder(&cfg).state_dir(state.path()).start().await?;
    agent.post("/", r#"{"n":42}"#).await?;
    sink.wait_for(1).await?;
    assert!(agent.stop().await?.success());
    let agent = Agent::builder(&cfg).state_dir(state.path()).start().await?;
    agent.post("/", r#"{"n":42}"#).await?;
    agent.post("/", r#"{"n":43}"#).await?;
    sink.wait_for(2).await?;
    assert_eq!(numbers(&sink), BTreeSet::from([42, 43]));
    assert_eq!(
        sink.requests().len(),
        2,
        "the repeat of 42 after the restart was a duplicate"
    );
    assert_eq!(
        agent
            .metric(r#"hooker_dedup_dropped_total{route="r"}"#)
            .await?,
        1.0
    );
    Ok(())
}

/// A backlog past what the engine keeps in memory (1 MB of records) waits on disk and is read
/// back for every attempt: each event arrives whole, on every attempt and once the destination
/// recovers.
#[tokio::test]
async fn a_backlog_past_memory_is_read_back_whole_for_every_attempt() -> anyhow::Result<()> {
    // Failing until fixed; it counts each event's failed attempts and notes the events it
    // accepted (decided with the reply, so a failed attempt never counts as a delivery).
    let fixed = Arc::new(AtomicBool::new(false));
    let failed = Arc::new(std::sync::Mutex::new(std::collections::BTreeMap::new()));
    let accepted = Arc::new(std::sync::Mutex::new(BTreeSet::new()));
    let sink = Sink::with({
        let fixed = fixed.clone();
        let failed = failed.clone();
        let accepted = accepted.clone();
        move |request| {
            let n = request.body_json()["n"].as_u64().unwrap_or(0);
            if !fixed.load(Ordering::Relaxed) {
                *failed.lock().expect("lock").entry(n).or_insert(0u32) += 1;
                return Reply::status(503);
            }
            accepted.lock().expect("lock").insert(n);
            Reply::status(200)
        }
    })
    .await?;
    // No circuit breaker in the way: every event is retried on its own backoff.
    let cfg = config(&sink.url("/"), "    circuit-breaker-threshold: 1000\n");
    let agent = Agent::builder(&cfg).start().await?;
    let pad = big_pad();
    post_big_events(&agent, &pad).await?;
    // Every event fails at least twice (retries of records that wait on disk), then it recovers.
    wait_until(
        "two failed attempts of every event",
        Duration::from_secs(20),
        async || {
            let failed = failed.lock().expect("lock");
            let all = (1..=BIG_EVENTS).all(|n| failed.get(&n).is_some_and(|&c| c >= 2));
            all.then_some(())
        },
    )
    .await?;
    fixed.store(true, Ordering::Relaxed);
    wait_until("all six delivered", Duration::from_secs(20), async || {
        (*accepted.lock().expect("lock") == (1..=BIG_EVENTS).collect()).then_some(())
    })
    .await?;
    assert_arrived_whole(&sink, &pad);
    Ok(())
}

/// A backlog past the engine's memory limit survives a restart: the restarted agent decodes
/// only part of it and reads the rest back from disk, and every event arrives whole.
#[tokio::test]
async fn a_backlog_past_memory_survives_a_restart_whole() -> anyhow::Result<()> {
    let state = TempDir::new("backlog-state");
    let down = Sink::scripted(vec![Reply::status(503)]).await?;
    let agent = Agent::builder(&config(&down.url("/"), ""))
        .state_dir(state.path())
        .start()
        .await?;
    let pad = big_pad();
    post_big_events(&agent, &pad).await?;
    assert!(
        agent.stop().await?.success(),
        "graceful stop with a backlog"
    );
    let (up, _agent) = restart(&state).await?;
    wait_until(
        "all six delivered after the restart",
        Duration::from_secs(20),
        async || (numbers(&up) == (1..=BIG_EVENTS).collect()).then_some(()),
    )
    .await?;
    assert_arrived_whole(&up, &pad);
    Ok(())
}
