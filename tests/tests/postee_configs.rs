//! Postee's own configs run unchanged: its stock `cfg.yaml`, its Helm chart's and its Kubernetes
//! manifest's, and the Postee spellings and habits they (and Postee's UI) contain.

use hooker_tests::{Agent, TempDir, hooker};

fn repo(path: &str) -> String {
    format!("{}/{path}", env!("CARGO_MANIFEST_DIR"))
}

async fn validate(path: &str) -> anyhow::Result<(i32, String, String)> {
    hooker(&["validate", path], &[]).await
}

async fn validate_text(text: &str) -> anyhow::Result<(i32, String, String)> {
    let dir = TempDir::new("postee-cfg");
    let cfg = dir.join("cfg.yaml");
    std::fs::write(&cfg, text)?;
    validate(&cfg.display().to_string()).await
}

#[tokio::test]
async fn postee_stock_configs_validate() -> anyhow::Result<()> {
    for file in [
        "cfg.yaml",
        "helm-values-cfg.yaml",
        "deploy-configmap-cfg.yaml",
    ] {
        let path = repo(&format!("fixtures/postee/configs/{file}"));
        let (code, stdout, stderr) = validate(&path).await?;
        assert_eq!(code, 0, "{file}:\n{stdout}\n{stderr}");
        assert!(!stderr.contains("error:"), "{file}: {stderr}");
    }
    Ok(())
}

#[tokio::test]
async fn an_empty_template_or_a_broken_action_is_an_error_only_when_a_route_uses_it()
-> anyhow::Result<()> {
    let unused = "routes:\n- name: r\n  input: 'true'\n  template: raw\n  actions: [out]\ntemplates:\n- name: raw\n  rego-package: postee.rawmessage.json\n- name: custom-email\n  url:\nactions:\n- name: out\n  type: stdout\n  enable: true\n- name: broken\n  type: webhook\n  enable: true\n";
    let (code, stdout, stderr) = validate_text(unused).await?;
    assert_eq!(code, 0, "{stdout}\n{stderr}");
    assert!(
        stderr.contains("template \"custom-email\"")
            && stderr.contains("no route uses this template"),
        "{stderr}"
    );
    assert!(
        stderr.contains("action \"broken\"") && stderr.contains("no route uses this action"),
        "{stderr}"
    );

    let used = unused
        .replace("template: raw", "template: custom-email")
        .replace("actions: [out]", "actions: [out, broken]");
    let (code, _, stderr) = validate_text(&used).await?;
    assert_eq!(code, 1, "{stderr}");
    assert!(
        stderr.contains("error:") && stderr.contains("template \"custom-email\""),
        "{stderr}"
    );
    assert!(
        stderr.contains("error:") && stderr.contains("action \"broken\""),
        "{stderr}"
    );
    Ok(())
}

#[tokio::test]
async fn postee_ui_habits_are_accepted() -> anyhow::Result<()> {
    // Postee's UI writes `input-file: ''` beside `exec-script`, and an empty `plugins:`.
    let cfg = "routes:\n- name: r\n  input: 'true'\n  template: raw\n  actions: [run]\n  plugins:\ntemplates:\n- name: raw\n  rego-package: postee.rawmessage.json\nactions:\n- name: run\n  type: exec\n  enable: true\n  input-file: ''\n  exec-script: |\n    #!/bin/sh\n    true\n";
    let (code, stdout, stderr) = validate_text(cfg).await?;
    assert_eq!(code, 0, "{stdout}\n{stderr}");
    assert!(!stderr.contains("not both"), "{stderr}");
    Ok(())
}

#[tokio::test]
async fn capitalised_keys_are_read_as_postee_reads_them() -> anyhow::Result<()> {
    let cfg = "Routes:\n- Name: r\n  Input: 'true'\n  Template: raw\n  Actions: [out]\nTemplates:\n- Name: raw\n  Rego-Package: postee.rawmessage.json\nActions:\n- Name: out\n  Type: stdout\n  Enable: true\n";
    let (code, stdout, stderr) = validate_text(cfg).await?;
    assert_eq!(code, 0, "{stdout}\n{stderr}");
    // The action's `Enable: true` is kept: the action is enabled, not skipped.
    assert!(
        stdout.starts_with("OK: 1 routes, 1 templates, 1 enabled actions"),
        "{stdout}"
    );
    assert!(!stderr.contains("disabled"), "{stderr}");
    Ok(())
}

#[tokio::test]
async fn postee_template_names_are_built_in() -> anyhow::Result<()> {
    for package in ["postee.vuls.cyclondx", "postee.vuls.opsgenie"] {
        let cfg = format!(
            "routes:\n- name: r\n  input: 'true'\n  template: t\n  actions: [out]\ntemplates:\n- name: t\n  rego-package: {package}\nactions:\n- name: out\n  type: stdout\n  enable: true\n"
        );
        let (code, stdout, stderr) = validate_text(&cfg).await?;
        assert_eq!(code, 0, "{package}: {stdout}\n{stderr}");
        assert!(
            !stderr.contains("unknown rego-package"),
            "{package}: {stderr}"
        );
    }
    Ok(())
}

#[tokio::test]
async fn reload_answers_get_as_postee_ui_calls_it() -> anyhow::Result<()> {
    let agent = Agent::default_config().start().await?;
    let (status, body) = agent.get("/reload").await?;
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("reloaded"), "{body}");
    agent.stop().await?;
    Ok(())
}

#[tokio::test]
async fn the_example_rego_filters_compile_and_the_image_ships_them() -> anyhow::Result<()> {
    let filters = repo("../examples/rego-filters");
    let mut names: Vec<String> = std::fs::read_dir(&filters)?
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| n.ends_with(".rego"))
        .collect();
    names.sort();
    assert!(names.len() >= 6, "{names:?}");
    let mut cfg = String::from("routes:\n");
    for (i, name) in names.iter().enumerate() {
        cfg.push_str(&format!(
            "- name: r{i}\n  input-files: [{name}]\n  template: raw\n  actions: [out]\n"
        ));
    }
    cfg.push_str("templates:\n- name: raw\n  rego-package: postee.rawmessage.json\nactions:\n- name: out\n  type: stdout\n  enable: true\n");
    let dir = TempDir::new("filters");
    let path = dir.join("cfg.yaml");
    std::fs::write(&path, cfg)?;
    let (code, stdout, stderr) = hooker(
        &[
            "validate",
            &path.display().to_string(),
            "--rego-filters",
            &filters,
        ],
        &[],
    )
    .await?;
    assert_eq!(code, 0, "{stdout}\n{stderr}");
    let dockerfile = std::fs::read_to_string(repo("../Dockerfile"))?;
    assert!(
        dockerfile.contains("examples/rego-filters /var/lib/hooker/rego-filters")
            && dockerfile.contains("agent/templates /usr/share/hooker/rego-templates"),
        "the image ships the templates' sources and the example filters"
    );
    Ok(())
}
