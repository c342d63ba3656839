//! Config loading: Postee's format loads, mistakes are reported with file, line, item and key.

use super::*;

fn errors(yaml: &str) -> Vec<String> {
    match Config::parse(yaml, Some(Path::new("cfg.yaml"))) {
        Err(ConfigError::Invalid { diagnostics }) => {
            diagnostics.errors.iter().map(ToString::to_string).collect()
        }
        Err(other) => vec![other.to_string()],
        Ok(_) => vec![],
    }
}

const MINIMAL: &str = "
routes:
- name: r1
  input: contains(input.image, \"alpine\")
  template: raw
  actions: [out]
templates:
- name: raw
  rego-package: postee.rawmessage.json
actions:
- name: out
  type: stdout
  enable: true
";

#[test]
fn minimal_postee_config_loads() {
    let config = Config::parse(MINIMAL, None).unwrap();
    assert_eq!(config.routes[0].name, "r1");
    assert_eq!(config.actions[0].kind, "stdout");
    assert!(config.warnings.is_empty(), "{:?}", config.warnings);
}

#[test]
fn unknown_action_is_an_error_with_line_and_key() {
    let yaml = MINIMAL.replace("actions: [out]", "actions: [nope]");
    let errors = errors(&yaml);
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert!(
        errors[0].starts_with("cfg.yaml:6: route \"r1\", key `actions`: unknown action \"nope\""),
        "{}",
        errors[0]
    );
}

#[test]
fn unknown_template_and_missing_template_key_are_errors() {
    let yaml = MINIMAL.replace("template: raw", "template: missing");
    assert!(errors(&yaml)[0].contains("unknown template \"missing\""));
    let yaml = MINIMAL.replace("  template: raw\n", "");
    assert!(
        errors(&yaml)[0].contains("required key \"template\" is missing"),
        "{:?}",
        errors(&yaml)
    );
}

#[test]
fn bad_duration_names_the_key() {
    let yaml = MINIMAL.replace(
        "  actions: [out]\n",
        "  actions: [out]\n  plugins:\n    unique-message-timeout: 3 fortnights\n",
    );
    let errors = errors(&yaml);
    assert!(
        errors[0].contains("key `plugins.unique-message-timeout`"),
        "{errors:?}"
    );
    assert!(errors[0].contains("not a duration"), "{errors:?}");
}

#[test]
fn missing_required_key_is_reported() {
    let yaml = MINIMAL.replace("  type: stdout\n", "");
    let errors = errors(&yaml);
    assert!(
        errors[0].contains("action \"out\"") && errors[0].contains("\"type\" is missing"),
        "{errors:?}"
    );
}

#[test]
fn duplicate_names_are_errors() {
    let yaml = format!("{MINIMAL}- name: out\n  type: stdout\n");
    assert!(
        errors(&yaml)[0].contains("duplicate name (first defined on line"),
        "{:?}",
        errors(&yaml)
    );
}

#[test]
fn unknown_keys_are_warnings() {
    let yaml = MINIMAL
        .replace("  template: raw\n", "  template: raw\n  colour: blue\n")
        .replace("name: r1", "name: r1\n");
    let config = Config::parse(&format!("surprise: 1\n{yaml}"), None).unwrap();
    let warnings: Vec<String> = config.warnings.iter().map(ToString::to_string).collect();
    assert!(
        warnings.iter().any(|w| w.contains("key `surprise`")),
        "{warnings:?}"
    );
    assert!(
        warnings
            .iter()
            .any(|w| w.contains("route \"r1\", key `colour`")),
        "{warnings:?}"
    );
}

#[test]
fn action_types_are_case_insensitive() {
    let yaml = MINIMAL.replace("type: stdout", "type: serviceNow");
    let config = Config::parse(&yaml, None).unwrap();
    assert_eq!(config.actions[0].kind, "servicenow");
}

#[test]
fn aqua_server_is_an_alias() {
    let config = Config::parse(
        &format!("aqua-server: https://aqua.example\n{MINIMAL}"),
        None,
    )
    .unwrap();
    assert_eq!(config.server_url.as_deref(), Some("https://aqua.example"));
}

#[test]
fn yaml_syntax_errors_are_located() {
    match Config::parse("routes:\n  - name: [\n", Some(Path::new("cfg.yaml"))) {
        Err(ConfigError::Yaml { message, .. }) => assert!(
            message.contains("line") || message.contains('2'),
            "{message}"
        ),
        other => panic!("expected a YAML error, got {other:?}"),
    }
}

#[test]
fn embedded_default_parses() {
    let config = Config::parse(&DEFAULT_CONFIG.replace("{{LOG_DIR}}", "/tmp"), None).unwrap();
    assert_eq!(config.routes.len(), 2);
}

#[test]
fn an_action_indented_under_another_actions_key_is_reported() {
    let yaml = format!(
        "{MINIMAL}  params:\n    name: slack\n    type: slack\n    url: https://hooks.example\n"
    );
    let errors = errors(&yaml);
    assert!(
        errors
            .iter()
            .any(|e| e.contains("cfg.yaml:15: action \"out\", key `params`")
                && e.contains("indented")),
        "{errors:?}"
    );
}

#[test]
fn closest_suggests_only_near_misses() {
    let keys = ["template", "actions", "input", "input-files", "name"];
    assert_eq!(closest("tempalte", keys), Some("template"));
    assert_eq!(closest("Template", keys), Some("template"));
    assert_eq!(closest("action", keys), Some("actions"));
    assert_eq!(closest("input-file", keys), Some("input-files"));
    assert_eq!(closest("plugins", keys), None);
    assert_eq!(closest("x", keys), None);
    assert_eq!(
        closest("rego-pakage", ["rego-package", "body", "url"]),
        Some("rego-package")
    );
}

#[test]
fn fields_of_lists_the_keys_serde_reads() {
    let route = fields_of::<RouteConfig>();
    for key in [
        "name",
        "input",
        "input-files",
        "actions",
        "template",
        "plugins",
    ] {
        assert!(route.contains(&key), "{key} in {route:?}");
    }
    assert!(fields_of::<Plugins>().contains(&"aggregate-message-number"));
    assert!(fields_of::<String>().is_empty());
}

#[test]
fn errors_print_in_line_order() {
    let mut diagnostics = Diagnostics::default();
    for line in [Some(9), None, Some(2), Some(5)] {
        diagnostics.error(Diagnostic::new("x", "y").line(line));
    }
    let text = diagnostics.to_string();
    assert!(
        text.starts_with(
            "error: line 2: x: y\nerror: line 5: x: y\nerror: line 9: x: y\nerror: x: y"
        ),
        "{text}"
    );
}
