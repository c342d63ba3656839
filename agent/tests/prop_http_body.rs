//! An HTTP (or gRPC) body into events (`event::parse_body`): the pruned parse of a one-line
//! object (`router::fields`) holds, at every path it keeps, what the full serde_json parse holds,
//! and refuses exactly what the full parse refuses; any bytes are events or an error, never a
//! panic.

mod prop_support;

use std::sync::Arc;

use hooker::event::{parse_body, parse_payloads};
use hooker::router::fields::Fields;
use proptest::prelude::*;
use serde_json::{Map, Value};

/// Keys the generated events and paths share, so paths meet values; with odd ones.
const KEYS: &[&str] = &[
    "a",
    "b",
    "metadata",
    "Properties",
    "signatureID",
    "args",
    "",
    "é",
    "a\"b",
    "a\\b",
];

/// A path tree node: the paths to keep, as `Fields::from_paths` reads them.
fn fields_of(paths: &[Vec<String>]) -> Arc<Fields> {
    Arc::new(Fields::from_paths(paths.iter().map(Vec::as_slice)))
}

/// What the pruned value must be: `full` cut down to `paths`. An object keeps the members on a
/// path; any other value (an array, a scalar) is kept whole, as is the value at a path's end.
fn project(full: &Value, paths: &[Vec<String>]) -> Value {
    if paths.iter().any(Vec::is_empty) {
        return full.clone();
    }
    let Value::Object(members) = full else {
        return full.clone();
    };
    let mut out = Map::new();
    for (key, value) in members {
        let below: Vec<Vec<String>> = paths
            .iter()
            .filter(|path| path[0] == *key)
            .map(|path| path[1..].to_vec())
            .collect();
        if !below.is_empty() {
            out.insert(key.clone(), project(value, &below));
        }
    }
    Value::Object(out)
}

/// The checks every body goes through, with `paths` as the routes' fields.
fn check(body: &[u8], paths: &[Vec<String>]) -> Result<(), TestCaseError> {
    let fields = fields_of(paths);
    let full = serde_json::from_slice::<Value>(body);

    // The pruned parse accepts exactly what the full parse accepts.
    let pruned = fields.prune(body);
    prop_assert_eq!(
        pruned.is_ok(),
        full.is_ok(),
        "pruned {:?}, full {:?}",
        pruned.as_ref().err(),
        full.as_ref().err()
    );
    if let (Ok(pruned), Ok(full)) = (&pruned, &full) {
        let kept = pruned.for_fields(Some(&fields));
        prop_assert_eq!(kept, Some(&project(full, paths)));
    }

    // The intake's parse answers as the full parse does, with the same events.
    let with_fields = parse_body(body, Some(fields.clone()));
    let plain = parse_payloads(body);
    match (&with_fields, &plain) {
        (Ok(events), Ok(expected)) => {
            prop_assert_eq!(events.len(), expected.len());
            for ((event, pruned), expected) in events.iter().zip(expected) {
                prop_assert_eq!(&**event, &**expected);
                // The text kept for the outbox reads back as the same event.
                let text: Value = serde_json::from_str(event.text().get())
                    .map_err(|e| TestCaseError::fail(format!("event text unreadable: {e}")))?;
                prop_assert_eq!(&text, &**expected);
                if let Some(pruned) = pruned {
                    prop_assert_eq!(
                        pruned.for_fields(Some(&fields)),
                        Some(&project(expected, paths))
                    );
                }
            }
        }
        (Err(error), Err(expected)) => prop_assert_eq!(error, expected),
        _ => prop_assert!(
            false,
            "with fields {:?}, without {:?}",
            with_fields.as_ref().map(Vec::len),
            plain.as_ref().map(Vec::len)
        ),
    }
    Ok(())
}

/// Paths over [`KEYS`] and a few arbitrary keys.
fn paths() -> impl Strategy<Value = Vec<Vec<String>>> {
    let key = prop_oneof![
        4 => prop::sample::select(KEYS).prop_map(str::to_owned),
        1 => "[a-c]{0,2}",
    ];
    prop::collection::vec(prop::collection::vec(key, 1..4), 0..5)
}

fn json_string() -> impl Strategy<Value = String> {
    prop_oneof![
        prop::sample::select(KEYS).prop_map(str::to_owned),
        any::<String>(),
        // What JSON must escape, and characters around the edges of UTF-8.
        prop::collection::vec(
            prop::sample::select(vec![
                '\\',
                '"',
                '\u{0}',
                '\n',
                '\u{1f}',
                '\u{7f}',
                '\u{2028}',
                '\u{fffd}',
                '\u{10000}',
                'a'
            ]),
            0..6,
        )
        .prop_map(|chars| chars.into_iter().collect()),
    ]
}

fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>().prop_filter_map("finite", |f| serde_json::Number::from_f64(f)
            .map(Value::Number)),
        json_string().prop_map(Value::String),
    ];
    leaf.prop_recursive(5, 48, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::vec((json_string(), inner), 0..6)
                .prop_map(|members| Value::Object(members.into_iter().collect())),
        ]
    })
}

/// A top-level object, as an event is.
fn json_object() -> impl Strategy<Value = Value> {
    prop::collection::vec((json_string(), json_value()), 0..8)
        .prop_map(|members| Value::Object(members.into_iter().collect()))
}

/// Text of `value`: compact (one line, the pruned path), with whitespace around it, or pretty
/// (several lines, the full path).
fn written(value: &Value, style: u8) -> Vec<u8> {
    match style % 3 {
        0 => serde_json::to_vec(value).unwrap_or_default(),
        1 => format!(" \t{value} \r\n").into_bytes(),
        _ => serde_json::to_vec_pretty(value).unwrap_or_default(),
    }
}

/// An object nested `depth` deep inside member `x`, beside `a` (serde_json refuses past 128).
fn nested(depth: usize, open: &str, close: &str) -> Vec<u8> {
    format!(
        "{{\"a\":1,\"x\":{}0{}}}",
        open.repeat(depth),
        close.repeat(depth)
    )
    .into_bytes()
}

#[test]
fn the_corpus_parses_alike_with_and_without_fields() {
    let realistic: Vec<Vec<String>> = [
        &["metadata", "Properties", "signatureID"][..],
        &["args"],
        &["podNamespace"],
        &["eventName"],
        &["x"],
        &["a", "b"],
    ]
    .iter()
    .map(|path| path.iter().map(|k| k.to_string()).collect())
    .collect();
    for (name, body) in prop_support::corpus("http_body") {
        for paths in [&realistic[..], &realistic[..1], &[]] {
            if let Err(error) = check(&body, paths) {
                panic!("corpus file {name}: {error}");
            }
        }
    }
}

proptest! {
    #![proptest_config(prop_support::config(2000))]

    #[test]
    fn pruned_and_full_parses_agree_on_any_object(
        value in json_object(),
        style in any::<u8>(),
        paths in paths(),
    ) {
        check(&written(&value, style), &paths)?;
    }

    #[test]
    fn pruned_and_full_parses_refuse_the_same_damaged_bodies(
        value in json_object(),
        changes in prop_support::mutations(4),
        paths in paths(),
    ) {
        let body = prop_support::mutate(&written(&value, 0), &changes);
        check(&body, &paths)?;
    }

    #[test]
    fn any_bytes_are_events_or_an_error(body in prop::collection::vec(any::<u8>(), 0..256), paths in paths()) {
        check(&body, &paths)?;
    }

    #[test]
    fn mutated_corpus_bodies_parse_alike(
        (_name, body) in prop_support::mutated_seed(prop_support::corpus("http_body"), 6),
        paths in paths(),
    ) {
        check(&body, &paths)?;
    }

    #[test]
    fn nesting_is_refused_at_the_same_depth(
        depth in 100usize..140,
        kind in prop::sample::select(vec![("[", "]"), ("{\"a\":", "}"), ("{\"x\":", "}")]),
        paths in paths(),
    ) {
        let (open, close) = kind;
        check(&nested(depth, open, close), &paths)?;
    }
}
