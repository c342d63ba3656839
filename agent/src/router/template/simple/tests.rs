//! Simple templates: the shapes recognised, and native rendering byte-equal to Rego's.

use std::sync::Arc;

use regorus::Value;
use serde_json::{Value as Json, json};

use super::{AddedKeys, Simple};
use crate::message::Message;
use crate::router::template::{Catalog, Template, TemplateText};

/// Templates of every simple shape.
const BODIES: &[&str] = &[
    "package custom.raw\n\ntitle := \"Event received\"\nresult := input\n",
    "package custom.raw\n\ntitle = \"Event received\"\n\nresult = input\n",
    r#"package custom.card
import rego.v1

# A card of a few fields.
title := sprintf("%s on %s (%v%%)", [input.eventName, input.hostName, input.processId])
result := {
    "event": input.eventName,
    "args": input.args,
    "signature": input.metadata.Properties.signatureID,
    "n": 3,
    "list": [input.processId, "x", true, null, -2],
}
url := "https://console.example/events"
result_severity := input.metadata.Properties.Severity
result_node := input.hooker.node
"#,
    r#"package custom.trivy
title := input.ArtifactName
result := sprintf("%v: %s, schema %d", [input.ArtifactName, input.ArtifactType, input.SchemaVersion])
url := input.Metadata.ImageID
"#,
    "package custom.meta\nresult := input.postee\ntitle := input[\"hooker\"]\n",
    "package custom.odd\nresult := [input.Results, input[\"ArtifactName\"], {}]\ntitle := input.nothing\n",
    "package custom.raw_string\nresult := `raw ${x} \\n`\ntitle := 3\n",
];

fn added() -> AddedKeys {
    let Json::Object(map) = json!({
        "postee": {"AquaServer": "https://aqua.example/#/images/"},
        "hooker": {"server": "https://aqua.example", "node": "node-1"},
    }) else {
        unreachable!()
    };
    map
}

/// The template input as the router makes it for Rego.
fn rego_input(event: &Json, added: &AddedKeys) -> Value {
    let mut input = crate::router::rego::to_rego(event);
    if let Ok(map) = input.as_object_mut() {
        for (key, value) in added {
            let key = Value::from(key.as_str());
            if !map.contains_key(&key) {
                map.insert(key, Value::from(value.clone()));
            }
        }
    }
    input
}

fn render(template: &mut Template, event: &Json, added: &AddedKeys) -> Result<Message, String> {
    template.render(
        || rego_input(event, added),
        "r",
        "e",
        Arc::new(event.clone().into()),
    )
}

/// The same, for an event the intake kept as text (not parsed).
fn render_from_text(
    template: &mut Template,
    event: &Json,
    added: &AddedKeys,
) -> Result<Message, String> {
    let text = crate::event_json::EventJson::from_text(event.to_string().as_bytes()).unwrap();
    template.render(|| rego_input(event, added), "r", "e", Arc::new(text))
}

#[test]
fn recognises_simple_shapes_and_nothing_more() {
    for body in BODIES {
        assert!(Simple::parse(body).is_some(), "{body}");
    }
    for body in [
        // Conditions, other rules, functions, helpers, sets, comprehensions, operators.
        "package t\nresult := input if input.a\n",
        "package t\nresult := input\ntitle := x\nx := \"a\"\n",
        "package t\nresult := input {\n input.a\n}\n",
        "package t\nresult := upper(input.a)\n",
        "package t\nimport data.hooker.lib.tracee\nresult := tracee.title\n",
        "package t\nresult := {input.a}\n",
        "package t\nresult := [x | x := input.a[_]]\n",
        "package t\nresult := input.a + 1\n",
        "package t\nresult := input.a[0]\n",
        "package t\nresult := 1.5\n",
        "package t\ndefault result := \"x\"\n",
        "package t\nresult := input\nresult := \"x\"\n",
        "package t\nresult := sprintf(\"%x\", [input.a])\n",
        "package t\nresult := {\"a\": 1, \"a\": 2}\n",
        "package t\nresult contains input.a\n",
        // No result.
        "package t\ntitle := \"x\"\n",
        // The built-in raw JSON template calls `jsonformat`.
        include_str!("../../../../templates/raw-json.rego"),
    ] {
        assert_eq!(Simple::parse(body), None, "{body}");
    }
}

/// A simple template renders without converting the event for Rego.
#[test]
fn a_simple_template_renders_without_rego() {
    let catalog = Catalog::load(None).unwrap();
    let mut template = Template::compile("t", TemplateText::Module(BODIES[0]), &catalog).unwrap();
    assert!(template.is_native());
    template.set_added_keys(Arc::new(added()));
    let event = json!({"b": [1, {"z": 1, "a": "x"}], "a": null});
    let message = template
        .render(
            || panic!("converted for Rego"),
            "r",
            "e",
            Arc::new(event.into()),
        )
        .unwrap();
    assert_eq!(message.title, "Event received");
    assert_eq!(
        message.body,
        r#"{"a":null,"b":[1,{"a":"x","z":1}],"hooker":{"node":"node-1","server":"https://aqua.example"},"postee":{"AquaServer":"https://aqua.example/#/images/"}}"#
    );
}

/// Every simple template renders byte for byte what Rego renders, on every fixture, golden input
/// and variations of them; events it cannot be sure of go to Rego.
#[test]
fn native_rendering_equals_rego_on_fixtures_and_golden_inputs() {
    let catalog = Catalog::load(None).unwrap();
    let mut events = crate::router::prefilter::tests::fixture_events();
    // Keys the event already has win over the added ones, as in the router's input.
    events.push(json!({"postee": 1, "hooker": {"node": "own"}, "eventName": "x"}));
    events
        .push(json!({"n": 18446744073709551615u64, "m": -9223372036854775808i64, "s": "é\u{1}\""}));
    events.push(json!([1, 2]));
    events.push(
        serde_json::from_str(
            r#"{"f": [1.0, 0.1, 1e21, 1.5e300, -0.0, 2.5, 100000000000000000000000]}"#,
        )
        .unwrap(),
    );
    let added = Arc::new(added());
    let (mut native, mut total) = (0, 0);
    for body in BODIES {
        let mut rego = Template::compile("t", TemplateText::Module(body), &catalog).unwrap();
        rego.simple = None;
        let mut simple = rego.clone();
        simple.simple = Some((Arc::new(Simple::parse(body).unwrap()), Some(added.clone())));
        for event in &events {
            total += 1;
            if simple.render_simple(&event.clone().into()).is_some() {
                native += 1;
            }
            let theirs = render(&mut rego, event, &added);
            for ours in [
                render(&mut simple, event, &added),
                render_from_text(&mut simple, event, &added),
            ] {
                match (ours, theirs.clone()) {
                    (Ok(a), Ok(b)) => {
                        assert_eq!(a.body, b.body, "{body}\n{event}");
                        assert_eq!(a.title, b.title, "{body}\n{event}");
                        assert_eq!(a.url, b.url, "{body}\n{event}");
                        assert_eq!(a.fields, b.fields, "{body}\n{event}");
                    }
                    (Err(a), Err(b)) => assert_eq!(a, b, "{body}\n{event}"),
                    (a, b) => panic!("{body}\n{event}\nnative {a:?}\nRego {b:?}"),
                }
            }
        }
    }
    assert!(
        native * 10 > total * 6,
        "{native} of {total} rendered natively"
    );
}
