//! Built-in card templates: one render of the Tracee TRC-1022 detection per channel, natively
//! (`render/native/<template>`) and through the template's Rego module (`render/rego/<template>`).
//! Issue 20's target is 50 µs or less per native card.
//!
//! Run with `cargo bench -p hooker --bench templates`.

use std::path::Path;
use std::sync::Arc;

use criterion::{Criterion, criterion_group, criterion_main};
use hooker::event_json::EventJson;
use hooker::router::rego::to_rego;
use hooker::router::template::{Catalog, Template, TemplateText};

const EVENT: &str = "tracee/v0.12-era-signature-dropped-executable-TRC-1022.json";

const CHANNELS: &[&str] = &[
    "text",
    "slack",
    "teams",
    "jira",
    "html",
    "email",
    "pagerduty",
    "opsgenie",
];

fn bench(c: &mut Criterion) {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../tests/fixtures")
        .join(EVENT);
    let text = std::fs::read(&path).unwrap_or_else(|err| panic!("{}: {err}", path.display()));
    let value: serde_json::Value =
        serde_json::from_slice(&text).unwrap_or_else(|err| panic!("{err}"));
    let catalog = Catalog::load(None).unwrap_or_else(|errors| panic!("{errors:?}"));
    for channel in CHANNELS {
        let package = format!("hooker.tracee.{channel}");
        let native = Template::compile(&package, TemplateText::Package(&package), &catalog)
            .unwrap_or_else(|err| panic!("{err}"));
        assert!(native.is_native(), "{package} is not native");
        let rego = native.clone().without_native();
        for (path, mut template) in [("native", native), ("rego", rego)] {
            // A parsed event, as an intake hands it on; the Rego input is made per render.
            let payload = Arc::new(EventJson::new(value.clone()));
            c.bench_function(&format!("render/{path}/tracee-{channel}"), |b| {
                b.iter(|| {
                    template.render(
                        || {
                            let mut input = value.clone();
                            if let serde_json::Value::Object(map) = &mut input {
                                map.insert(
                                    "hooker".into(),
                                    serde_json::json!({"server": "", "node": "bench"}),
                                );
                            }
                            to_rego(&input)
                        },
                        "r",
                        "id",
                        payload.clone(),
                    )
                })
            });
        }
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
