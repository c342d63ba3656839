//! Route plugins: dedup by `unique-message-props` and aggregation by count or time, per route.

use std::time::Duration;

use hooker_tests::{Agent, Sink, wait_until};

#[tokio::test]
async fn dedup_is_per_route_and_every_action_of_a_route_delivers() -> anyhow::Result<()> {
    let first = Sink::start().await?;
    let second = Sink::start().await?;
    let config = format!(
        r#"
routes:
  - name: images
    input: input.image
    template: raw
    actions: [one, two]
    plugins:
      unique-message-props: ["image", "vulnerabilities.id"]
      unique-message-timeout: 1h
  - name: audit
    input: input.image
    template: raw
    actions: [one]
    plugins:
      unique-message-props: ["image"]
templates:
  - name: raw
    rego-package: hooker.rawmessage.json
actions:
  - name: one
    type: webhook
    enable: true
    url: {}
  - name: two
    type: webhook
    enable: true
    url: {}
"#,
        first.url("/"),
        second.url("/")
    );
    let agent = Agent::start(&config).await?;
    let event = r#"{"image":"alpine:3.10","vulnerabilities":[{"id":"CVE-1"},{"id":"CVE-2"}]}"#;
    for _ in 0..3 {
        assert_eq!(agent.post("/", event).await?.0, 200);
    }
    agent
        .post(
            "/",
            r#"{"image":"alpine:3.10","vulnerabilities":[{"id":"CVE-9"}]}"#,
        )
        .await?;
    // `images`: two distinct keys → two messages, each to both actions. `audit`: one key → one.
    first.wait_for(3).await?;
    second.wait_for(2).await?;
    assert_eq!(
        agent
            .metric(r#"hooker_dedup_dropped_total{route="images"}"#)
            .await?,
        2.0
    );
    assert_eq!(
        agent
            .metric(r#"hooker_dedup_dropped_total{route="audit"}"#)
            .await?,
        3.0
    );
    assert_eq!(first.requests().len(), 3);
    assert_eq!(second.requests().len(), 2);
    Ok(())
}

#[tokio::test]
async fn aggregation_by_count_sends_one_message_to_every_action() -> anyhow::Result<()> {
    let first = Sink::start().await?;
    let second = Sink::start().await?;
    let config = format!(
        r#"
routes:
  - name: batch
    input: input.n
    template: text
    actions: [one, two]
    plugins:
      aggregate-message-number: 3
templates:
  - name: text
    body: |
      package custom
      import rego.v1
      title := sprintf("event %d", [input.n])
      result := sprintf("n=%d", [input.n])
      aggregation_pkg := "hooker.aggregate.text"
actions:
  - name: one
    type: webhook
    enable: true
    url: {}
  - name: two
    type: webhook
    enable: true
    url: {}
"#,
        first.url("/"),
        second.url("/")
    );
    let agent = Agent::start(&config).await?;
    for n in 1..=4 {
        agent.post("/", format!(r#"{{"n":{n}}}"#)).await?;
    }
    let received = first.wait_for(1).await?;
    second.wait_for(1).await?;
    let body = received[0].body_text();
    assert!(
        body.contains("event 1\nn=1") && body.contains("event 3\nn=3") && !body.contains("n=4"),
        "{body}"
    );
    assert_eq!(
        agent
            .metric(r#"hooker_aggregation_flushes_total{route="batch",reason="count"}"#)
            .await?,
        1.0
    );
    // The fourth message is flushed at shutdown, not lost.
    assert!(agent.stop().await?.success());
    assert_eq!(first.requests().len(), 2);
    assert!(first.requests()[1].body_text().contains("n=4"));
    Ok(())
}

#[tokio::test]
async fn aggregation_by_timeout_flushes_what_gathered() -> anyhow::Result<()> {
    let sink = Sink::start().await?;
    let config = format!(
        r#"
routes:
  - name: windowed
    input: input.n
    template: raw
    actions: [one]
    plugins:
      aggregate-message-timeout: 1s
templates:
  - name: raw
    body: |
      package custom
      import rego.v1
      title := sprintf("event %d", [input.n])
      result := sprintf("n=%d", [input.n])
      aggregation_pkg := "hooker.aggregate.text"
actions:
  - name: one
    type: webhook
    enable: true
    url: {}
"#,
        sink.url("/")
    );
    let agent = Agent::start(&config).await?;
    agent.post("/", r#"{"n":1}"#).await?;
    agent.post("/", r#"{"n":2}"#).await?;
    let received = sink.wait_for(1).await?;
    let body = received[0].body_text();
    assert!(body.contains("n=1") && body.contains("n=2"), "{body}");
    wait_until("the flush counted", Duration::from_secs(10), async || {
        let n = agent
            .metric(r#"hooker_aggregation_flushes_total{route="windowed",reason="timeout"}"#)
            .await
            .ok()?;
        (n == 1.0).then_some(())
    })
    .await?;
    Ok(())
}

#[tokio::test]
async fn aggregation_without_an_aggregation_package_sends_each_message_as_postee()
-> anyhow::Result<()> {
    let sink = Sink::start().await?;
    let config = format!(
        r#"
routes:
  - name: counted
    input: input.n
    template: raw
    actions: [one]
    plugins:
      aggregate-message-number: 2
templates:
  - name: raw
    rego-package: hooker.rawmessage.json
actions:
  - name: one
    type: webhook
    enable: true
    url: {}
"#,
        sink.url("/")
    );
    let agent = Agent::start(&config).await?;
    agent.post("/", r#"{"n":1}"#).await?;
    agent.post("/", r#"{"n":2}"#).await?;
    let received = sink.wait_for(2).await?;
    let mut bodies: Vec<_> = received.iter().map(|r| r.body_json()).collect();
    bodies.sort_by_key(|b| b["n"].as_i64());
    // Postee aggregates only through the template's `aggregation_pkg`; without one, it sends
    // each message as usual instead of joining them.
    assert_eq!(
        bodies,
        vec![serde_json::json!({"n": 1}), serde_json::json!({"n": 2})]
    );
    Ok(())
}
