//! cfg.yaml (`config::Config` and `pipeline::Pipeline::build`, what `validate`, `run` and hot
//! reload do): arbitrary text, and valid configs with any key's value replaced, removed or
//! added, load and build into a pipeline or into diagnostics, never a panic.

mod prop_support;

use std::path::PathBuf;

use hooker::action::BuildContext;
use hooker::config::{Config, TemplateSource};
use hooker::pipeline::{Paths, Pipeline};
use hooker::router::fields::Fields;
use proptest::prelude::*;
use serde_json::{Map, Value, json};

/// What the program builds from `text`: loads it, then compiles it as `validate` does.
struct Builder {
    runtime: tokio::runtime::Runtime,
    cx: BuildContext,
    paths: Paths,
}

impl Builder {
    fn new() -> Builder {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a tokio runtime");
        let cx = BuildContext::new("prop".into()).expect("a build context");
        let paths = Paths {
            // Route `input-files` resolve here: nothing, so they are reported missing.
            rego_filters: PathBuf::from("/nonexistent/hooker-prop-rego-filters"),
            rego_templates: None,
        };
        Builder { runtime, cx, paths }
    }

    fn check(&self, text: &str) {
        let Ok(mut config) = Config::parse_all(text, None) else {
            return;
        };
        // A `url:` template is fetched at build: no network in tests.
        config
            .templates
            .retain(|t| !matches!(t.source, TemplateSource::Url(_)));
        // Built and dropped in the runtime, as `run` does: an email action's connection pool
        // needs one to shut down.
        self.runtime.block_on(async {
            if let Ok(pipeline) = Pipeline::build(&config, &self.paths, &self.cx).await {
                let _ = Fields::of(&pipeline);
            }
        });
    }
}

thread_local! {
    static BUILDER: Builder = Builder::new();
}

fn check(text: &str) {
    BUILDER.with(|builder| builder.check(text));
}

// === A small YAML writer (block style, every scalar quoted as JSON, which YAML reads) ===

fn scalar(value: &Value) -> String {
    match value {
        Value::String(s) => quoted(s),
        other => other.to_string(),
    }
}

/// A double-quoted YAML scalar: JSON's escapes, plus `\u` for what YAML may not hold raw.
fn quoted(text: &str) -> String {
    let mut out = String::from("\"");
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 || (0x7f..=0x9f).contains(&(c as u32)) => {
                out.push_str(&format!("\\u{:04x}", c as u32))
            }
            '\u{fffe}' | '\u{ffff}' => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

fn write_yaml(value: &Value, indent: usize, out: &mut String) {
    let pad = " ".repeat(indent);
    match value {
        Value::Object(members) if !members.is_empty() => {
            for (key, value) in members {
                out.push_str(&format!("{pad}{}:", quoted(key)));
                write_child(value, indent, out);
            }
        }
        Value::Array(items) if !items.is_empty() => {
            for item in items {
                out.push_str(&format!("{pad}-"));
                write_child(item, indent, out);
            }
        }
        Value::Object(_) => out.push_str(&format!("{pad}{{}}\n")),
        Value::Array(_) => out.push_str(&format!("{pad}[]\n")),
        other => out.push_str(&format!("{pad}{}\n", scalar(other))),
    }
}

fn write_child(value: &Value, indent: usize, out: &mut String) {
    match value {
        Value::Object(m) if !m.is_empty() => {
            out.push('\n');
            write_yaml(value, indent + 2, out);
        }
        Value::Array(a) if !a.is_empty() => {
            out.push('\n');
            write_yaml(value, indent + 2, out);
        }
        Value::Object(_) => out.push_str(" {}\n"),
        Value::Array(_) => out.push_str(" []\n"),
        other => out.push_str(&format!(" {}\n", scalar(other))),
    }
}

fn yaml(value: &Value) -> String {
    let mut out = String::new();
    write_yaml(value, 0, &mut out);
    out
}

// === Mutations of a config tree ===

/// Every key Hooker reads somewhere, so that added keys meet code.
const KEYS: &[&str] = &[
    "name",
    "type",
    "enable",
    "runs-on",
    "input",
    "input-files",
    "actions",
    "template",
    "serialize-actions",
    "plugins",
    "aggregate-message-number",
    "aggregate-message-timeout",
    "unique-message-props",
    "unique-message-timeout",
    "rego-package",
    "body",
    "legacy-scan-renderer",
    "db-verify-interval",
    "max-db-size",
    "khulnasoft-server",
    "retry-max-attempts",
    "retry-initial-backoff",
    "retry-max-backoff",
    "retry-max-age",
    "max-concurrency",
    "circuit-breaker-threshold",
    "circuit-breaker-cooldown",
    "timeout",
    "url",
    "path",
    "max-size",
    "max-files",
    "size-limit",
    "memory",
    "cpus",
    "method",
    "headers",
    "body-content",
    "body-file",
    "exec-script",
    "env",
    "docker-image-name",
    "docker-cmd",
    "docker-env",
    "docker-network",
    "docker-volume-mounts",
    "kube-namespace",
    "kube-config-file",
    "kube-label-selector",
    "kube-actions",
    "labels",
    "annotations",
    "recipients",
    "port",
    "host",
    "use-mx",
    "tls-verify",
    "ca-file",
    "token",
    "user",
    "password",
    "project-key",
    "issuetype",
    "unknowns",
    "region",
    "priority",
    "tags",
    "access-key-id",
    "secret-access-key",
    "teams-format",
];

/// Values that have broken parsers before, or plausibly could.
fn odd_values() -> Vec<Value> {
    vec![
        json!(""),
        json!(" "),
        json!("99999999999999999999s"),
        json!("0s"),
        json!("0"),
        json!("-1s"),
        json!("1.5"),
        json!("1e400h"),
        json!("876000h"),
        json!("99999999999999999999MB"),
        json!("10TB"),
        json!("NaN"),
        json!("yes"),
        json!("$HOOKER_PROP_NOT_SET"),
        json!("${file:/nonexistent/secret}"),
        json!("http://127.0.0.1:9/x"),
        json!("unix:///nonexistent.sock"),
        json!("input.x =="),
        json!("package x\nresult := 1"),
        json!("import rego.v1\nresult if { input.a > 1 }"),
        json!("data.hooker.lib.tracee.is_detection"),
        json!("numbers.range(1, 3)"),
        json!("hooker.rawmessage.json"),
        json!("stdout"),
        json!("webhook"),
        json!("log"),
        json!("é\u{0}\u{7f}"),
        json!("x".repeat(2000)),
        json!("a=b"),
        json!("/"),
        json!(0),
        json!(-1),
        json!(1),
        json!(u64::MAX),
        json!(i64::MIN),
        json!(1e300),
        json!(0.5),
        json!(true),
        json!(false),
        Value::Null,
        json!([]),
        json!({}),
        json!([1, "a", null]),
        json!({"a": 1, "timeout": "1s"}),
        json!([{"name": "n", "type": "stdout", "enable": true}]),
    ]
}

#[derive(Debug, Clone)]
enum Change {
    Replace(Value),
    Remove,
    Add(String, Value),
}

fn change() -> impl Strategy<Value = Change> {
    let value = prop_oneof![
        4 => prop::sample::select(odd_values()),
        1 => any::<String>().prop_map(Value::String),
        1 => any::<i64>().prop_map(Value::from),
    ];
    prop_oneof![
        3 => value.clone().prop_map(Change::Replace),
        1 => Just(Change::Remove),
        2 => (prop::sample::select(KEYS), value).prop_map(|(k, v)| Change::Add(k.to_string(), v)),
    ]
}

/// Applies `change` at the node `walk` leads to: each step picks a child, down to a scalar.
fn apply(value: &mut Value, walk: &[usize], change: &Change) {
    let children = match value {
        Value::Object(m) => m.len(),
        Value::Array(a) => a.len(),
        _ => 0,
    };
    if let Some((&step, rest)) = walk.split_first()
        && children > 0
    {
        let index = step % children;
        // Remove is done by the parent, which knows the child's key.
        if rest.is_empty() && matches!(change, Change::Remove) {
            match value {
                Value::Object(m) => {
                    let key = m.keys().nth(index).cloned().unwrap_or_default();
                    m.shift_remove(&key);
                }
                Value::Array(a) => {
                    a.remove(index);
                }
                _ => {}
            }
            return;
        }
        let child = match value {
            Value::Object(m) => m.values_mut().nth(index),
            Value::Array(a) => a.get_mut(index),
            _ => None,
        };
        if let Some(child) = child {
            apply(child, rest, change);
        }
        return;
    }
    match change {
        Change::Replace(new) => *value = new.clone(),
        Change::Add(key, new) => match value {
            Value::Object(m) => {
                m.insert(key.clone(), new.clone());
            }
            Value::Array(a) => a.push(json!({ key.clone(): new.clone() })),
            other => {
                let mut m = Map::new();
                m.insert(key.clone(), new.clone());
                *other = Value::Object(m);
            }
        },
        Change::Remove => *value = Value::Null,
    }
}

/// The corpus configs as trees.
fn trees() -> Vec<(String, Value)> {
    prop_support::corpus("config")
        .into_iter()
        .filter_map(|(name, bytes)| {
            let text = String::from_utf8(bytes).ok()?;
            let tree: Value = serde_saphyr::from_str(&text).ok()?;
            Some((name, tree))
        })
        .collect()
}

#[test]
fn the_corpus_loads_and_builds_without_panicking() {
    let corpus = prop_support::corpus("config");
    for (name, bytes) in &corpus {
        let text = String::from_utf8_lossy(bytes);
        check(&text);
        // Rewritten in block style, it still says the same.
        if let Ok(tree) = serde_saphyr::from_str::<Value>(&text) {
            check(&yaml(&tree));
            let again: Value = serde_saphyr::from_str(&yaml(&tree))
                .unwrap_or_else(|error| panic!("{name}: the YAML writer: {error}"));
            assert_eq!(again, tree, "{name}");
        }
    }
    // The corpus is valid, but for the config about durations, so mutations start from configs
    // that build.
    BUILDER.with(|builder| {
        for (name, bytes) in corpus {
            let text = String::from_utf8_lossy(&bytes);
            let config = Config::parse_all(&text, None).unwrap_or_else(|e| panic!("{name}: {e}"));
            let built = builder.runtime.block_on(async {
                Pipeline::build(&config, &builder.paths, &builder.cx)
                    .await
                    .map(|_| ())
                    .map_err(|d| d.to_string())
            });
            let valid = !name.starts_with("huge_");
            assert_eq!(built.is_ok(), valid, "{name}: {built:?}");
        }
    });
}

/// A zero duration where Hooker ticks at that period (tokio's interval panics on zero: the
/// aggregator or the dedup purge task died at start) is unset, as `"0"` already was.
#[test]
fn zero_periods_are_unset() {
    let text = r#"db-verify-interval: 0s
routes:
  - name: r
    input: input.x == "y"
    template: raw
    actions: [s]
    plugins:
      aggregate-message-timeout: 0s
templates:
  - name: raw
    rego-package: hooker.rawmessage.json
actions:
  - name: s
    type: stdout
    enable: true
"#;
    let config = Config::parse(text, None).expect("a valid config");
    BUILDER.with(|builder| {
        let (timeout, aggregates, interval) = builder.runtime.block_on(async {
            let pipeline = Pipeline::build(&config, &builder.paths, &builder.cx)
                .await
                .expect("it builds");
            let route = &pipeline.routes[0];
            (
                route.aggregate_timeout,
                route.aggregates(),
                pipeline.db_verify_interval,
            )
        });
        assert_eq!(timeout, None);
        assert!(!aggregates);
        assert_eq!(interval, std::time::Duration::from_secs(3600));
    });
}

proptest! {
    #![proptest_config(prop_support::config(256))]

    #[test]
    fn any_text_loads_or_is_refused(text in any::<String>()) {
        check(&text);
    }

    #[test]
    fn yaml_like_text_loads_or_is_refused(
        lines in prop::collection::vec(
            (0usize..4, prop::sample::select(KEYS), prop::sample::select(vec![
                "", " x", " 1", " -1", " [a, b]", " {a: 1}", " 99999999999999999999s", " &a x",
                " *a", " |", " !!binary aGk=", " \"\\ud800\"", " ~", " -", " 0x1F", " .inf",
            ])),
            0..24,
        )
    ) {
        let mut text = String::new();
        for (depth, key, value) in lines {
            let dash = if depth % 2 == 1 { "- " } else { "" };
            text.push_str(&format!("{}{dash}{key}:{value}\n", "  ".repeat(depth)));
        }
        check(&text);
    }

    #[test]
    fn changed_valid_configs_build_or_are_refused(
        (name, tree) in prop::sample::select(trees()),
        changes in prop::collection::vec(
            (prop::collection::vec(any::<usize>(), 1..7), change()),
            1..4,
        ),
    ) {
        let _ = name;
        let mut tree = tree;
        for (walk, change) in &changes {
            apply(&mut tree, walk, change);
        }
        check(&yaml(&tree));
    }

    #[test]
    fn damaged_config_text_loads_or_is_refused(
        (_name, bytes) in prop_support::mutated_seed(prop_support::corpus("config"), 4),
    ) {
        check(&String::from_utf8_lossy(&bytes));
    }
}
