//! The command line: `validate`, `test-route`, `run` refusing bad configs, `version`.

use hooker_tests::{Agent, TempDir, fixture, hooker, hooker_bin};

fn repo(path: &str) -> String {
    format!("{}/{path}", env!("CARGO_MANIFEST_DIR"))
}

const SECRETS: &[(&str, &str)] = &[
    ("JIRA_TOKEN", "x"),
    ("SMTP_PASSWORD", "x"),
    ("SPLUNK_TOKEN", "x"),
    ("SN_PASSWORD", "x"),
    ("NEXUS_PASSWORD", "x"),
    ("DT_API_KEY", "x"),
    ("OPSGENIE_TOKEN", "x"),
    ("PD_TOKEN", "x"),
    ("PD_ROUTING_KEY", "x"),
];

#[tokio::test]
async fn validate_accepts_a_postee_v2_config_using_every_key() -> anyhow::Result<()> {
    let cfg = repo("configs/postee-v2-full.yaml");
    let filters = repo("configs/rego-filters");
    let (code, stdout, stderr) =
        hooker(&["validate", &cfg, "--rego-filters", &filters], SECRETS).await?;
    assert_eq!(code, 0, "{stdout}\n{stderr}");
    assert!(stdout.starts_with("OK: 4 routes, "), "{stdout}");
    assert!(!stderr.contains("error:"), "{stderr}");
    // Postee's Go renderers are recognised and reported, never silently dropped.
    assert!(stderr.contains("legacy-scan-renderer \"html\""), "{stderr}");
    Ok(())
}

#[tokio::test]
async fn validate_reports_every_error_with_file_line_and_key() -> anyhow::Result<()> {
    let dir = TempDir::new("invalid");
    let cfg = dir.join("cfg.yaml");
    std::fs::write(
        &cfg,
        r#"routes:
  - name: r1
    input: input.x ==
    template: nope
    actions: [ghost]
    plugins:
      aggregate-message-timeout: soon
templates:
  - name: t
    body: "package x\nresult := "
actions:
  - name: a
    type: carrier-pigeon
    enable: true
  - name: w
    type: webhook
    enable: true
"#,
    )?;
    let path = cfg.display().to_string();
    let (code, stdout, stderr) = hooker(&["validate", &path], &[]).await?;
    assert_eq!(code, 1, "{stdout}{stderr}");
    let expect = [
        format!("{path}:7: route \"r1\", key `plugins.aggregate-message-timeout`"),
        format!("{path}:13: action \"a\", key `type`: unknown action type \"carrier-pigeon\""),
        format!("{path}:15: action \"w\""),
    ];
    for line in &expect {
        assert!(
            stderr.contains(line.as_str()),
            "missing `{line}` in:\n{stderr}"
        );
    }
    assert!(
        stderr.contains("required key \"url\" is missing"),
        "{stderr}"
    );
    // Fix the YAML-level errors; the cross-references and Rego are reported next.
    std::fs::write(
        &cfg,
        r#"routes:
  - name: r1
    input: input.x ==
    template: nope
    actions: [ghost]
templates:
  - name: t
    body: "package x\nresult := "
actions: []
"#,
    )?;
    let (code, _, stderr) = hooker(&["validate", &path], &[]).await?;
    assert_eq!(code, 1);
    assert!(
        stderr.contains(&format!(
            "{path}:4: route \"r1\", key `template`: unknown template \"nope\""
        )),
        "{stderr}"
    );
    assert!(
        stderr.contains(&format!(
            "{path}:5: route \"r1\", key `actions`: unknown action \"ghost\""
        )),
        "{stderr}"
    );
    Ok(())
}

#[tokio::test]
async fn run_refuses_an_invalid_config() -> anyhow::Result<()> {
    let dir = TempDir::new("refuse");
    let cfg = dir.join("cfg.yaml");
    std::fs::write(
        &cfg,
        "routes:\n  - name: r\n    input: input.x ==\n    template: t\n    actions: []\ntemplates:\n  - name: t\n    rego-package: hooker.rawmessage.json\nactions: []\n",
    )?;
    let path = cfg.display().to_string();
    let (code, _, stderr) = hooker(
        &["run", "--cfgfile", &path],
        &[
            ("HOOKER_HTTP", "127.0.0.1:0"),
            ("HOOKER_HTTPS", "off"),
            ("HOOKER_SOCKET", "off"),
        ],
    )
    .await?;
    assert_ne!(code, 0);
    assert!(
        stderr.contains(&format!(
            "{path}:3: route \"r\", key `input`: Rego does not compile"
        )),
        "{stderr}"
    );
    let (code, _, stderr) = hooker(&["run", "--cfgfile", "/nonexistent/cfg.yaml"], &[]).await?;
    assert_ne!(code, 0);
    assert!(
        stderr.contains("cannot read config file /nonexistent/cfg.yaml"),
        "{stderr}"
    );
    Ok(())
}

#[tokio::test]
async fn postee_v1_configs_get_a_precise_message() -> anyhow::Result<()> {
    let dir = TempDir::new("v1");
    let cfg = dir.join("cfg.yaml");
    std::fs::write(
        &cfg,
        "---\n- type: common\n  AquaServer: https://x\n- name: my-slack\n  type: slack\n",
    )?;
    let (code, _, stderr) = hooker(&["validate", &cfg.display().to_string()], &[]).await?;
    assert_eq!(code, 1);
    assert!(stderr.contains("Postee V1 config"), "{stderr}");
    Ok(())
}

#[tokio::test]
async fn secrets_come_from_env_or_files_and_never_print() -> anyhow::Result<()> {
    let dir = TempDir::new("secrets");
    std::fs::write(dir.join("token"), "file-s3cret\n")?;
    let cfg = dir.join("cfg.yaml");
    std::fs::write(
        &cfg,
        format!(
            "routes:\n  - name: r\n    input: 'true'\n    template: raw\n    actions: [a, b]\ntemplates:\n  - name: raw\n    rego-package: hooker.rawmessage.json\nactions:\n  - name: a\n    type: webhook\n    enable: true\n    url: ${{file:{}}}\n  - name: b\n    type: webhook\n    enable: true\n    url: $HOOKER_TEST_UNSET_SECRET\n",
            dir.join("token").display()
        ),
    )?;
    let (code, stdout, stderr) = hooker(&["validate", &cfg.display().to_string()], &[]).await?;
    assert_eq!(code, 1, "{stdout}{stderr}");
    assert!(
        stderr.contains("environment variable `HOOKER_TEST_UNSET_SECRET` is not set"),
        "{stderr}"
    );
    assert!(
        stderr.contains("not a valid URL"),
        "the file secret was read and checked: {stderr}"
    );
    assert!(
        !stderr.contains("file-s3cret"),
        "a secret leaked into an error: {stderr}"
    );
    Ok(())
}

#[tokio::test]
async fn test_route_shows_matches_and_what_each_action_would_send() -> anyhow::Result<()> {
    let dir = TempDir::new("testroute");
    let cfg = dir.join("cfg.yaml");
    std::fs::write(
        &cfg,
        r#"routes:
  - name: detections
    input: data.hooker.lib.tracee.is_detection
    template: text
    actions: [hook, script]
  - name: alpine-images
    input: contains(input.image, "alpine")
    template: raw
    actions: [hook]
templates:
  - name: text
    rego-package: hooker.tracee.text
  - name: raw
    rego-package: postee.rawmessage.json
actions:
  - name: hook
    type: webhook
    enable: true
    url: https://hooks.example.com/secret-token
  - name: script
    type: exec
    enable: true
    exec-script: echo hi
"#,
    )?;
    let event = fixture("tracee/v0.12-era-signature-dropped-executable-TRC-1022.json")
        .display()
        .to_string();
    let (code, stdout, stderr) = hooker(
        &[
            "test-route",
            "--cfgfile",
            &cfg.display().to_string(),
            "--event",
            &event,
        ],
        &[],
    )
    .await?;
    assert_eq!(code, 0, "{stderr}");
    let report: serde_json::Value = serde_json::from_str(&stdout)?;
    let routes = &report[0]["routes"];
    assert_eq!(routes[0]["route"], "detections");
    assert_eq!(routes[0]["matched"], true);
    assert_eq!(
        routes[0]["title"],
        "Tracee Detection - New executable dropped"
    );
    assert_eq!(routes[0]["deliveries"][0]["type"], "webhook");
    assert_eq!(
        routes[0]["deliveries"][0]["would_send"]["host"],
        "hooks.example.com"
    );
    assert!(
        routes[0]["deliveries"][0]["would_send"]["body"]
            .as_str()
            .unwrap_or_default()
            .contains("TRC-1022")
    );
    assert_eq!(routes[0]["deliveries"][1]["type"], "exec");
    assert_eq!(
        routes[1],
        serde_json::json!({"route": "alpine-images", "matched": false})
    );
    assert!(
        !stdout.contains("secret-token"),
        "previews never show full webhook URLs"
    );
    Ok(())
}

#[tokio::test]
async fn version_prints_the_version() -> anyhow::Result<()> {
    let (code, stdout, _) = hooker(&["version"], &[]).await?;
    assert_eq!(code, 0);
    assert_eq!(
        stdout.trim(),
        format!("hooker {}", env!("CARGO_PKG_VERSION"))
    );
    Ok(())
}

#[tokio::test]
async fn empty_path_variables_mean_the_default() -> anyhow::Result<()> {
    let empty = [
        ("HOOKER_CFG", ""),
        ("HOOKER_REGO_TEMPLATES", ""),
        ("HOOKER_REGO_FILTERS", ""),
        ("HOOKER_STATE_DIR", ""),
    ];
    let (code, stdout, stderr) = hooker(&["version"], &empty).await?;
    assert_eq!(code, 0, "{stdout}{stderr}");
    assert!(stdout.starts_with("hooker "), "{stdout}");
    // Empty is the default: /config/cfg.yaml, else the embedded config, which is valid.
    let (code, stdout, stderr) = hooker(&["validate"], &empty).await?;
    assert_eq!(code, 0, "{stdout}{stderr}");
    assert!(stdout.starts_with("OK: "), "{stdout}");
    Ok(())
}

/// Runs the `hooker` binary with its standard output a pipe whose reader is already gone.
fn with_closed_stdout(args: &[&str]) -> anyhow::Result<std::process::Output> {
    let (reader, writer) = std::io::pipe()?;
    drop(reader);
    Ok(std::process::Command::new(hooker_bin())
        .args(args)
        .env_remove("HOOKER_CFG")
        .stdin(std::process::Stdio::null())
        .stdout(writer)
        .stderr(std::process::Stdio::piped())
        .output()?)
}

#[tokio::test]
async fn a_closed_standard_output_ends_quietly() -> anyhow::Result<()> {
    let agent = Agent::default_config().start().await?;
    let url = agent.http_url();
    for args in [
        vec!["version"],
        vec!["validate"],
        vec!["dlq", "list", "--url", &url],
        vec!["reload", "--url", &url],
        vec!["dlq", "list", "--agent", &url],
        vec!["reload", "--agent", &url],
    ] {
        let output = with_closed_stdout(&args)?;
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(!stderr.contains("panicked"), "{args:?}: {stderr}");
        assert_eq!(output.status.code(), Some(0), "{args:?}: {stderr}");
    }
    Ok(())
}

#[tokio::test]
async fn send_to_a_url_passes_the_token() -> anyhow::Result<()> {
    let agent = Agent::default_config()
        .env("HOOKER_AUTH_TOKEN", "s3cret-token")
        .start()
        .await?;
    let event = fixture("trivy/trivy-image-alpine-310.json")
        .display()
        .to_string();
    let url = agent.http_url();
    let (code, stdout, stderr) = hooker(
        &["send", "--agent", &url, "--token", "s3cret-token", &event],
        &[],
    )
    .await?;
    assert_eq!(code, 0, "{stdout}{stderr}");
    assert!(stdout.contains(": 2"), "{stdout}");
    // `--url`, the old spelling, still works.
    let (code, stdout, _) = hooker(&["send", "--url", &url, &event], &[]).await?;
    assert_ne!(code, 0, "without the token the agent refuses: {stdout}");
    assert!(stdout.contains(": 401"), "{stdout}");
    Ok(())
}

/// `hooker run` on a valid config whose HTTP port is taken: it logs "Config loaded." and then
/// stops on a fatal error. Returns the exit code and stderr.
async fn run_until_fatal(format: &str, extra: &[(&str, &str)]) -> anyhow::Result<(i32, String)> {
    let taken = std::net::TcpListener::bind("127.0.0.1:0")?;
    let port = taken.local_addr()?.to_string();
    let dir = TempDir::new("fatal");
    let cfg = dir.join("cfg.yaml");
    std::fs::write(&cfg, "routes: []\ntemplates: []\nactions: []\n")?;
    let cfg = cfg.display().to_string();
    let state = dir.join("state").display().to_string();
    let log = dir.join("log").display().to_string();
    let mut env = vec![
        ("HOOKER_CFG", cfg.as_str()),
        ("HOOKER_LOG_FORMAT", format),
        ("HOOKER_HTTP", port.as_str()),
        ("HOOKER_HTTPS", "off"),
        ("HOOKER_GRPC", "off"),
        ("HOOKER_PROBES", "off"),
        ("HOOKER_SOCKET", "off"),
        ("HOOKER_STATE_DIR", state.as_str()),
        ("HOOKER_LOG_DIR", log.as_str()),
    ];
    env.extend_from_slice(extra);
    let (code, _, stderr) = hooker(&["run"], &env).await?;
    drop(taken);
    Ok((code, stderr))
}

#[tokio::test]
async fn json_logs_stay_json_to_the_fatal_error() -> anyhow::Result<()> {
    let (code, stderr) = run_until_fatal("json", &[]).await?;
    assert_ne!(code, 0, "{stderr}");
    let lines: Vec<serde_json::Value> = stderr
        .lines()
        .map(serde_json::from_str)
        .collect::<Result<_, _>>()
        .map_err(|err| anyhow::anyhow!("a stderr line is not JSON ({err}):\n{stderr}"))?;
    let loaded = lines
        .iter()
        .find(|l| l["message"] == "Config loaded.")
        .ok_or_else(|| anyhow::anyhow!("no \"Config loaded.\" in:\n{stderr}"))?;
    let config = loaded["config"].as_str().unwrap_or_default();
    assert!(
        config.ends_with("cfg.yaml") && !config.contains('"'),
        "the config field is the plain path: {loaded}"
    );
    let fatal = lines.last().cloned().unwrap_or_default();
    assert_eq!(fatal["level"], "ERROR", "{stderr}");
    assert!(
        fatal["error"]
            .as_str()
            .unwrap_or_default()
            .contains("cannot listen"),
        "{stderr}"
    );
    Ok(())
}

#[tokio::test]
async fn text_logs_into_a_pipe_have_no_colour_codes() -> anyhow::Result<()> {
    let (code, stderr) = run_until_fatal("text", &[]).await?;
    assert_ne!(code, 0, "{stderr}");
    assert!(stderr.contains("Config loaded."), "{stderr}");
    assert!(
        !stderr.contains('\u{1b}'),
        "colour codes in a pipe: {stderr:?}"
    );
    Ok(())
}

/// The help line of `flag` in `hooker ARGS --help`, with its description (clap puts a long one on
/// the next line).
async fn help_line(args: &[&str], flag: &str) -> anyhow::Result<String> {
    let mut all = args.to_vec();
    all.push("--help");
    let (code, stdout, stderr) = hooker(&all, &[]).await?;
    assert_eq!(code, 0, "{args:?}: {stderr}");
    let lines: Vec<&str> = stdout.lines().collect();
    let at = lines
        .iter()
        .position(|l| l.trim_start().starts_with(flag))
        .ok_or_else(|| anyhow::anyhow!("{args:?} --help has no {flag}:\n{stdout}"))?;
    // The flag's line and its description below it (clap's long help puts the description,
    // `[env: …]` and `[default: …]` on lines of their own, blank lines between).
    let mut line = lines[at].trim().to_string();
    for next in lines[at + 1..]
        .iter()
        .take_while(|l| l.trim().is_empty() || l.starts_with("          "))
        .filter(|l| !l.trim().is_empty())
    {
        line.push(' ');
        line.push_str(next.trim());
    }
    Ok(line)
}

#[tokio::test]
async fn help_describes_every_argument_and_names_the_agent_and_listen_flags_apart()
-> anyhow::Result<()> {
    let files = help_line(&["send"], "[FILES]...").await?;
    assert!(files.contains("JSON event"), "{files}");
    for args in [&["dlq", "replay"][..], &["dlq", "drop"]] {
        let all = help_line(args, "--all").await?;
        assert!(all.contains("Every dead letter"), "{all}");
        let ids = help_line(args, "[IDS]...").await?;
        assert!(ids.contains("ids"), "{ids}");
    }
    // The agent to talk to is `--agent` (old `--url` still accepted), described everywhere.
    for args in [&["send"][..], &["dlq", "list"], &["reload"]] {
        let agent = help_line(args, "--agent <URL>").await?;
        assert!(
            agent.contains("instead of the Unix socket"),
            "{args:?}: {agent}"
        );
        let socket = help_line(args, "--socket").await?;
        assert!(socket.contains("Unix socket"), "{args:?}: {socket}");
    }
    let token = help_line(&["reload"], "--token").await?;
    assert!(token.contains("Bearer token"), "{token}");
    // `run`'s listen address is `--http` (Postee's `--url` an alias), and defaults show.
    let http = help_line(&["run"], "--http <HTTP>").await?;
    assert!(
        http.contains("listen address") && http.contains("--url"),
        "{http}"
    );
    let watch = help_line(&["run"], "--watch-config").await?;
    assert!(watch.contains("[default: true]"), "{watch}");
    Ok(())
}

#[tokio::test]
async fn validate_sorts_errors_by_line_and_suggests_what_was_meant() -> anyhow::Result<()> {
    let dir = TempDir::new("misspelled");
    let cfg = dir.join("cfg.yaml");
    std::fs::write(
        &cfg,
        r#"routes:
  - name: r1
    input: input.x == 1
    tempalte: raw
    actions: [hook]
  - name: r2
    input: input.x == 2
    template: raww
    actions: [hok]
    plugins:
      aggregate-mesage-number: 3
templates:
  - name: raw
    rego-pakage: hooker.rawmessage.json
actions:
  - name: hook
    type: webhok
    enable: true
  - name: w
    type: webhook
    enable: true
    url: http://127.0.0.1:1/
    retry-max-attemps: 3
"#,
    )?;
    let path = cfg.display().to_string();
    let (code, stdout, stderr) = hooker(&["validate", &path], &[]).await?;
    assert_eq!(code, 1, "{stdout}{stderr}");
    // Errors, then warnings, each in the file's order.
    for kind in ["error: ", "warning: "] {
        let lines: Vec<u64> = stderr
            .lines()
            .filter_map(|l| l.strip_prefix(kind))
            .filter_map(|l| l.strip_prefix(&format!("{path}:")))
            .filter_map(|l| l.split(':').next()?.parse().ok())
            .collect();
        assert!(lines.len() >= 3, "{stderr}");
        assert!(
            lines.is_sorted(),
            "{kind}lines out of order {lines:?}:\n{stderr}"
        );
    }
    for expected in [
        format!(
            "{path}:2: route \"r1\": required key \"template\" is missing (`tempalte` on line 4"
        ),
        format!(
            "{path}:4: route \"r1\", key `tempalte`: unknown key, ignored; did you mean `template`?"
        ),
        format!(
            "{path}:8: route \"r2\", key `template`: unknown template \"raww\"; did you mean \"raw\"?"
        ),
        format!(
            "{path}:9: route \"r2\", key `actions`: unknown action \"hok\"; did you mean \"hook\"?"
        ),
        format!(
            "{path}:11: route \"r2\", key `plugins.aggregate-mesage-number`: unknown key, ignored; did you mean `aggregate-message-number`?"
        ),
        format!(
            "{path}:14: template \"raw\", key `rego-pakage`: unknown key, ignored; did you mean `rego-package`?"
        ),
        format!(
            "{path}:17: action \"hook\", key `type`: unknown action type \"webhok\"; did you mean \"webhook\"?"
        ),
        format!(
            "{path}:23: action \"w\", key `retry-max-attemps`: unknown key, ignored; did you mean `retry-max-attempts`?"
        ),
    ] {
        assert!(
            stderr.contains(&expected),
            "missing `{expected}` in:\n{stderr}"
        );
    }
    Ok(())
}
