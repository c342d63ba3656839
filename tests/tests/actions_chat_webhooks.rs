//! The chat webhooks beyond Slack and Teams — `mattermost`, `rocketchat`, `googlechat`, `discord` —
//! against local servers that check the exact documented request: path and query, content type,
//! the JSON body with event markup kept literal, and long bodies split without loss.

use hooker_tests::{Agent, Recorded, Sink};
use serde_json::json;

/// One route taking every event, template `t`, action `chat` of `kind` posting to `url`.
fn config(kind: &str, url: &str, extra: &str, template: &str) -> String {
    format!(
        "routes:\n  - name: r\n    input: input\n    template: t\n    actions: [chat]\ntemplates:\n  - name: t\n{template}actions:\n  - name: chat\n    type: {kind}\n    enable: true\n    url: {url}\n{extra}"
    )
}

/// An inline template with a hostile title and body.
const HOSTILE: &str = r#"    body: |
      package chat.t
      import rego.v1
      title := "*Alert* <@everyone> [x](http://evil)"
      result := "```\n@here <b>bold</b>"
      result_finding := "falco:Terminal_shell:pod:shop/app"
"#;

const FALCO_TEXT: &str = "    rego-package: hooker.falco.text\n";

fn falco_event() -> String {
    std::fs::read_to_string(hooker_tests::fixture(
        "falco/falcosidekick-drop-and-execute-new-binary.json",
    ))
    .expect("fixture")
}

async fn one(kind: &str, path: &str, extra: &str) -> anyhow::Result<Recorded> {
    let sink = Sink::start().await?;
    let agent = Agent::start(&config(kind, &sink.url(path), extra, HOSTILE)).await?;
    agent.post("/", r#"{"n":1}"#).await?;
    let request = sink.wait_for(1).await?.remove(0);
    assert_eq!(request.method, "POST");
    assert_eq!(request.header("content-type"), Some("application/json"));
    Ok(request)
}

const ZW: &str = "\u{200b}";

#[tokio::test]
async fn mattermost_posts_escaped_markdown_with_the_identity_keys() -> anyhow::Result<()> {
    let request = one(
        "mattermost",
        "/hooks/xoxkey",
        "    username: hooker\n    icon-url: https://example.com/h.png\n    channel: town-square\n",
    )
    .await?;
    assert_eq!(request.path, "/hooks/xoxkey");
    assert_eq!(
        request.body_json(),
        json!({
            "text": format!("**\\*Alert\\* \\<\\@everyone\\> \\[x\\]\\(http\\:\\/\\/evil\\)**\n```\n`{ZW}`{ZW}`\n@here <b>bold</b>\n```"),
            "username": "hooker",
            "icon_url": "https://example.com/h.png",
            "channel": "town-square",
        })
    );
    Ok(())
}

#[tokio::test]
async fn rocketchat_puts_the_title_in_the_code_block_and_names_its_keys() -> anyhow::Result<()> {
    let request = one(
        "rocketchat",
        "/hooks/abc/def",
        "    username: hooker\n    icon-url: https://example.com/h.png\n",
    )
    .await?;
    assert_eq!(request.path, "/hooks/abc/def");
    assert_eq!(
        request.body_json(),
        json!({
            "text": format!("```\n*Alert* <@everyone> [x](http://evil)\n\n`{ZW}`{ZW}`\n@here <b>bold</b>\n```"),
            "alias": "hooker",
            "avatar": "https://example.com/h.png",
        })
    );
    Ok(())
}

#[tokio::test]
async fn googlechat_threads_by_finding_and_keeps_the_key_and_token() -> anyhow::Result<()> {
    let request = one("googlechat", "/v1/spaces/AAAA/messages?key=k1&token=t1", "").await?;
    assert_eq!(request.path, "/v1/spaces/AAAA/messages");
    assert_eq!(
        request.query.as_deref(),
        Some(
            "key=k1&token=t1&threadKey=falco%3ATerminal_shell%3Apod%3Ashop%2Fapp&messageReplyOption=REPLY_MESSAGE_FALLBACK_TO_NEW_THREAD"
        )
    );
    assert_eq!(
        request.body_json(),
        json!({"text": format!("```\n*Alert* <@everyone> [x](http://evil)\n\n`{ZW}`{ZW}`\n@here <b>bold</b>\n```")})
    );
    Ok(())
}

#[tokio::test]
async fn discord_waits_for_the_message_and_allows_no_mentions() -> anyhow::Result<()> {
    let request = one(
        "discord",
        "/api/webhooks/123/tok",
        "    username: hooker\n    icon-url: https://example.com/h.png\n",
    )
    .await?;
    assert_eq!(request.path, "/api/webhooks/123/tok");
    assert_eq!(request.query.as_deref(), Some("wait=true"));
    assert_eq!(
        request.body_json(),
        json!({
            "content": format!("**\\*Alert\\* \\<\\@everyone\\> \\[x\\]\\(http\\:\\/\\/evil\\)**\n```\n`{ZW}`{ZW}`\n@here <b>bold</b>\n```"),
            "allowed_mentions": {"parse": []},
            "username": "hooker",
            "avatar_url": "https://example.com/h.png",
        })
    );
    Ok(())
}

/// A built-in `text` card longer than Discord's 2,000 characters arrives as numbered parts, each
/// within the limit, that together hold the whole card.
#[tokio::test]
async fn a_long_builtin_card_is_split_over_messages_without_loss() -> anyhow::Result<()> {
    let sink = Sink::start().await?;
    let agent = Agent::start(&config(
        "discord",
        &sink.url("/api/webhooks/1/t"),
        "",
        FALCO_TEXT,
    ))
    .await?;
    let (code, _) = agent.post("/", falco_event()).await?;
    assert_eq!(code, 200);
    let first = sink.wait_for(1).await?;
    let content = |r: &Recorded| -> String {
        r.body_json()["content"]
            .as_str()
            .unwrap_or_default()
            .to_string()
    };
    let head = content(&first[0]);
    let parts: usize = head
        .split_once(" of ")
        .and_then(|(_, rest)| rest.split_once("\\)"))
        .and_then(|(n, _)| n.parse().ok())
        .unwrap_or_else(|| panic!("a numbered part: {head}"));
    assert!(parts >= 2, "{head}");
    let all = sink.wait_for(parts).await?;
    let mut body = String::new();
    for (i, request) in all.iter().enumerate() {
        let text = content(request);
        assert!(text.chars().count() <= 2000, "part {i}: {}", text.len());
        assert!(
            text.starts_with(&format!(
                "**Falco Critical \\- Drop and execute new binary in container \\(part {} of {parts}\\)**\n```\n",
                i + 1
            )),
            "{text}"
        );
        let inner = text
            .split_once("```\n")
            .and_then(|(_, rest)| rest.strip_suffix("\n```"))
            .unwrap_or_else(|| panic!("a code block: {text}"));
        body.push_str(inner);
        body.push('\n');
    }
    assert!(body.starts_with("Falco Critical - Drop and execute new binary in container\n"));
    assert!(
        body.contains("proc.cmdline: xmrig --donate-level 1 -o pool.example.net:3333"),
        "{body}"
    );
    assert!(body.contains("user.uid: 33"), "{body}");
    Ok(())
}
