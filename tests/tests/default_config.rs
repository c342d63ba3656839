//! The embedded default config on a node: Tracee detections land in the forensic log and on
//! stdout, everything else on stdout, and the counters on /metrics move.

use std::time::Duration;

use hooker_tests::{Agent, fixture, wait_until};

const TRACEE_FIXTURES: &[&str] = &[
    "tracee/v0.8-syscall-openat.json",
    "tracee/v0.12-era-signature-anti-debugging-TRC-102.json",
    "tracee/v0.12-era-signature-dropped-executable-TRC-1022.json",
    "tracee/v0.13-security_file_open.json",
    "tracee/v0.13-signature-custom-golang.json",
    "tracee/v0.16-syscall-execve-matchedPolicies.json",
    "tracee/v0.20-net_packet_dns_request.json",
];

#[tokio::test]
async fn tracee_detections_go_to_the_forensic_log_and_everything_to_stdout() -> anyhow::Result<()> {
    let agent = Agent::default_config().start().await?;
    for name in TRACEE_FIXTURES {
        let (status, answer) = agent.post("/", std::fs::read(fixture(name))?).await?;
        assert_eq!(status, 200, "{name}: {answer}");
        assert_eq!(answer["events"], 1);
    }
    let log = agent.dir.join("log/forensic.jsonl");
    let lines = wait_until(
        "three detections in the forensic log",
        Duration::from_secs(10),
        async || {
            let text = std::fs::read_to_string(&log).ok()?;
            let lines: Vec<serde_json::Value> = text
                .lines()
                .filter_map(|l| serde_json::from_str(l).ok())
                .collect();
            (lines.len() >= 3).then_some(lines)
        },
    )
    .await?;
    assert_eq!(
        lines.len(),
        3,
        "only the three signature events are detections"
    );
    let ids: Vec<&str> = lines
        .iter()
        .filter_map(|l| l["event"]["metadata"]["Properties"]["signatureID"].as_str())
        .collect();
    assert!(
        ids.contains(&"TRC-102") && ids.contains(&"TRC-1022") && ids.contains(&"Mine-0.1.0"),
        "{ids:?}"
    );
    for line in &lines {
        assert_eq!(line["route"], "tracee-detections");
        assert!(
            line["title"]
                .as_str()
                .unwrap_or_default()
                .starts_with("Tracee Detection - "),
            "{line}"
        );
        assert!(line["node"].as_str().is_some_and(|n| !n.is_empty()));
    }
    wait_until(
        "all seven events on stdout",
        Duration::from_secs(10),
        async || {
            let out = agent.stdout();
            (out.matches("Tracee Detection - ").count() == 3
                && out.matches("\"eventName\"").count() == 4)
                .then_some(())
        },
    )
    .await?;
    let accepted = agent
        .metric(r#"hooker_events_received_total{intake="http",outcome="accepted"}"#)
        .await?;
    assert_eq!(accepted, 7.0);
    assert_eq!(
        agent
            .metric(r#"hooker_route_matches_total{route="tracee-detections"}"#)
            .await?,
        3.0
    );
    assert_eq!(
        agent
            .metric(r#"hooker_route_matches_total{route="everything-else"}"#)
            .await?,
        4.0
    );
    wait_until("log deliveries counted", Duration::from_secs(10), async || {
        let n = agent.metric(r#"hooker_deliveries_total{action="forensic-log",type="log",outcome="success"}"#).await.ok()?;
        (n == 3.0).then_some(())
    })
    .await?;
    let status = agent.stop().await?;
    assert!(status.success(), "graceful shutdown exits 0: {status:?}");
    Ok(())
}
