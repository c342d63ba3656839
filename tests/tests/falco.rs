//! Falco alerts end to end: Falco's JSON output arrives as Falco's `http_output` POSTs it, and as
//! its `program_output` pipes it through `curl --unix-socket` (the node-local recipe in the
//! README); routes decide on `data.hooker.lib.falco` helpers and the built-in `falco-*` templates
//! render what the sinks receive.

use hooker_tests::{Agent, Sink, fixture};
use serde_json::Value;

const FIXTURES: &[&str] = &[
    "falco/falco-0.39-terminal-shell-in-container.json",
    "falco/falco-0.39-read-sensitive-file-untrusted.json",
    "falco/falco-0.39-clear-log-activities-host.json",
    "falco/falco-k8saudit-attach-exec-pod.json",
    "falco/falcosidekick-drop-and-execute-new-binary.json",
];

fn config(chat: &str, hook: &str) -> String {
    format!(
        r#"routes:
  - name: falco-serious
    input: data.hooker.lib.falco.priority_at_least("Warning")
    template: falco-slack
    actions: [chat]
  - name: falco-shells
    input: |
      data.hooker.lib.falco.is_falco
      data.hooker.lib.falco.has_tag("shell")
    template: falco-text
    actions: [hook]
templates:
  - name: falco-slack
    rego-package: hooker.falco.slack
  - name: falco-text
    rego-package: hooker.falco.text
actions:
  - name: chat
    type: slack
    enable: true
    url: {chat}
  - name: hook
    type: webhook
    enable: true
    url: {hook}
"#
    )
}

fn titles(requests: &[hooker_tests::Recorded]) -> Vec<String> {
    let mut titles: Vec<String> = requests
        .iter()
        .map(|r| {
            let body = r.body_json();
            body["blocks"][0]["text"]["text"]
                .as_str()
                .unwrap_or_default()
                .to_string()
        })
        .collect();
    titles.sort();
    titles
}

#[tokio::test]
async fn falco_http_output_alerts_route_on_priority_and_tags_to_the_falco_templates()
-> anyhow::Result<()> {
    let chat = Sink::start().await?;
    let hook = Sink::start().await?;
    let agent = Agent::start(&config(&chat.url("/slack"), &hook.url("/hook"))).await?;
    let client = hooker_tests::client()?;
    for file in FIXTURES {
        // What Falco's http_output sends: the alert as one JSON body.
        let response = client
            .post(format!("{}/", agent.http_url()))
            .header("content-type", "application/json")
            .header("user-agent", "falcosecurity/falco")
            .body(std::fs::read(fixture(file))?)
            .send()
            .await?;
        assert_eq!(response.status().as_u16(), 200, "{file}");
    }
    // Warning, Warning and Critical reach Slack; the two Notices do not.
    let slack = chat.wait_for(3).await?;
    assert_eq!(
        titles(&slack),
        [
            "*Falco Critical - Drop and execute new binary in container*",
            "*Falco Warning - Clear Log Activities*",
            "*Falco Warning - Read sensitive file untrusted*",
        ],
        "{:?}",
        slack.iter().map(|r| r.body_text()).collect::<Vec<_>>()
    );
    let miner = slack
        .iter()
        .map(|r| r.body_text())
        .find(|b| b.contains("xmrig"))
        .expect("the Critical alert's card");
    assert!(miner.contains("default/web-5c8d7b9f4-qwrt2"), "{miner}");
    assert!(miner.contains("docker.io/library/nginx:1.27"), "{miner}");
    // Only the alert tagged `shell` reaches the webhook, as the falco-text card.
    let shells = hook.wait_for(1).await?;
    let text = shells[0].body_text();
    assert!(
        text.starts_with("Falco Notice - Terminal shell in container\n"),
        "{text}"
    );
    assert!(
        text.contains("Pod: shop/checkout-7d9f8c6b5-x2k4p"),
        "{text}"
    );
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    assert_eq!(chat.requests().len(), 3);
    assert_eq!(hook.requests().len(), 1);
    Ok(())
}

#[tokio::test]
async fn falco_program_output_through_curl_reaches_the_unix_socket() -> anyhow::Result<()> {
    let chat = Sink::start().await?;
    let hook = Sink::start().await?;
    let agent = Agent::start(&config(&chat.url("/slack"), &hook.url("/hook"))).await?;
    // falco.yaml: program_output: {enabled: true, keep_alive: false, program: "curl ..."}: Falco
    // runs the program once per alert with the alert's JSON on its standard input.
    let socket = agent.socket_path();
    let mut curl = tokio::process::Command::new("curl")
        .args([
            "-sS",
            "--fail",
            "--unix-socket",
            &socket.display().to_string(),
            "-H",
            "Content-Type: application/json",
            "--data-binary",
            "@-",
            "http://localhost/",
        ])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| anyhow::anyhow!("curl is needed for this test (apt-get install curl): {e}"))?;
    let mut stdin = curl.stdin.take().expect("piped stdin");
    let alert = std::fs::read(fixture(
        "falco/falcosidekick-drop-and-execute-new-binary.json",
    ))?;
    tokio::io::AsyncWriteExt::write_all(&mut stdin, &alert).await?;
    drop(stdin);
    let output = curl.wait_with_output().await?;
    assert!(
        output.status.success(),
        "curl: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let answer: Value = serde_json::from_slice(&output.stdout)?;
    assert_eq!(answer["events"], 1, "{answer}");
    let slack = chat.wait_for(1).await?;
    assert_eq!(
        titles(&slack),
        ["*Falco Critical - Drop and execute new binary in container*"]
    );
    Ok(())
}
