//! Router micro-benchmark: the cost of each step for one event, on the benchmark route sets.
//!
//! - `parse`: JSON bytes → `serde_json::Value` (every intake does this);
//! - `convert`: event → Rego input (`to_rego`, and the naive clone-then-convert it replaced);
//! - `route/<name>`: one route's Rego rule alone, on an already converted event;
//! - `bound`: parse + convert + the Rego rules of the routes that match — work no router can skip;
//! - `naive`: parse + convert + every route's rule (what one engine per route costs unindexed);
//! - `router`: what a router worker does (index, native pre-checks, Rego, template render);
//! - `render/<template>`: one template render of the event (built-in raw JSON natively and through
//!   its Rego module, the rich Tracee templates, and a simple inline `result := input` template
//!   natively and through Rego);
//! - `split/*`: where a Rego template's cost goes — `convert` (event → Rego input, with the keys
//!   Hooker adds), `eval/<template>` (evaluation alone, on a converted input; `…/as-written`: the
//!   module loaded without making its import-alias reads lazy, see `router/lazy_imports.rs`),
//!   `output/<template>` (the Rego result → JSON), and `convert/from_json_str` (the input made
//!   from the event's text);
//! - `split/route/whole-input` and `split/route/fields`: a Rego route's rule for one event with
//!   the whole event converted, and with only the fields the routes' rules read (what the router
//!   gives Rego routes, `router/input_paths.rs`);
//! - `router/<config>/match` for the configs users write (issue 20): the embedded default config,
//!   Postee-style `data.hooker.lib.*` routes to rich templates, the inline simple template.
//!
//! Run with `cargo bench -p hooker --bench router` (`bench/run.sh` runs it and records the table).

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use criterion::{Criterion, criterion_group, criterion_main};
use hooker::action::BuildContext;
use hooker::config::Config;
use hooker::event_json::EventJson;
use hooker::pipeline::{Paths, Pipeline};
use hooker::router::fields::Fields;
use hooker::router::rego::to_rego;
use hooker::router::template::{Catalog, Template, TemplateText};

const EVENT: &str = "tracee/v0.12-era-signature-dropped-executable-TRC-1022.json";
/// The inline template of bench/configs/inline-template.yaml.
const SIMPLE: &str = "package custom.event\ntitle := \"Event received\"\nresult := input\n";
/// A user template reading helper rules through an import alias.
const USER_ALIAS: &str = "package custom.alias\nimport data.hooker.lib.tracee\nimport rego.v1\n\ntitle := tracee.signature_name\n\nresult := sprintf(\"%s in %s/%s\", [tracee.signature_name, tracee.pod_namespace, tracee.pod_name])\n";
const MISS: &str = "tracee/v0.13-security_file_open.json";

fn fixture(name: &str) -> Vec<u8> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../tests/fixtures")
        .join(name);
    std::fs::read(&path).unwrap_or_else(|err| panic!("{}: {err}", path.display()))
}

fn pipeline(set: &str) -> Pipeline {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("../bench/configs/{set}.yaml"));
    let text = if set == "default" {
        hooker::config::DEFAULT_CONFIG
            .replace("{{LOG_DIR}}", &std::env::temp_dir().display().to_string())
    } else {
        std::fs::read_to_string(&path)
            .unwrap_or_else(|err| panic!("{}: {err}", path.display()))
            .replace("@LOG@", "/dev/null")
    };
    let config = Config::parse(&text, Some(&path)).unwrap_or_else(|err| panic!("{err}"));
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap_or_else(|err| panic!("{err}"));
    let cx = BuildContext::new("bench".into()).unwrap_or_else(|err| panic!("{err}"));
    runtime
        .block_on(Pipeline::build(&config, &Paths::default(), &cx))
        .unwrap_or_else(|err| panic!("{err}"))
}

/// A router worker's steps, as `router::Worker::route` takes them (without dedup and storage).
struct Worker<'a> {
    pipeline: &'a Pipeline,
    routes: Vec<hooker::pipeline::Route>,
    templates: BTreeMap<String, Template>,
    candidates: Vec<usize>,
}

impl Worker<'_> {
    fn route(&mut self, bytes: &[u8]) -> usize {
        let payload: Arc<EventJson> = Arc::new(EventJson::new(
            serde_json::from_slice(bytes).unwrap_or_default(),
        ));
        self.pipeline
            .index
            .candidates(&payload, &mut self.candidates);
        let mut input = None;
        let mut rendered = 0;
        let mut messages: Vec<(String, hooker::message::Message)> = Vec::new();
        for &index in &self.candidates {
            let route = &mut self.routes[index];
            let decided = match route.rule.decide_natively(&payload) {
                Some(decided) => decided,
                None => {
                    let input = input.get_or_insert_with(|| to_rego(&payload));
                    route.rule.evaluate(input) == Ok(true)
                }
            };
            if !decided {
                continue;
            }
            // Routes sharing a template share one rendering of the event.
            if let Some((_, done)) = messages.iter().find(|(t, _)| *t == route.template) {
                let mut message = done.clone();
                message.route = route.name.to_string();
                std::hint::black_box(message);
                rendered += 1;
                continue;
            }
            let pipeline = self.pipeline;
            let mut template_input = None;
            if let Some(template) = self.templates.get_mut(&route.template)
                && let Ok(message) = template.render(
                    || {
                        template_input
                            .get_or_insert_with(|| pipeline.template_input_json(&payload, "bench"))
                            .clone()
                    },
                    &route.name,
                    "id",
                    payload.clone(),
                )
            {
                messages.push((route.template.clone(), message));
                rendered += 1;
            }
        }
        rendered
    }
}

fn bench(c: &mut Criterion) {
    let event = fixture(EVENT);
    let miss = fixture(MISS);
    let value: serde_json::Value = serde_json::from_slice(&event).unwrap_or_default();
    let input = to_rego(&value);

    c.bench_function("parse", |b| {
        b.iter(|| serde_json::from_slice::<serde_json::Value>(&event).map(|v| v.is_object()))
    });
    c.bench_function("convert/to_rego", |b| b.iter(|| to_rego(&value)));
    c.bench_function("convert/clone_then_from", |b| {
        b.iter(|| regorus::Value::from(value.clone()))
    });

    let catalog = Catalog::load(None).unwrap_or_else(|errors| panic!("{errors:?}"));
    let raw_json = include_str!("../templates/raw-json.rego");
    let payload = Arc::new(EventJson::new(value.clone()));
    let base = pipeline("routes-10");
    for (name, text) in [
        ("raw-json", TemplateText::Package("hooker.rawmessage.json")),
        ("raw-json-rego", TemplateText::Module(raw_json)),
        ("tracee-text", TemplateText::Package("hooker.tracee.text")),
        ("tracee-slack", TemplateText::Package("hooker.tracee.slack")),
        ("inline-simple", TemplateText::Module(SIMPLE)),
        ("inline-simple-rego", TemplateText::Module(SIMPLE)),
    ] {
        let mut template =
            Template::compile(name, text, &catalog).unwrap_or_else(|err| panic!("{err}"));
        if name == "inline-simple" {
            template.set_added_keys(Arc::new(base.added_keys("bench")));
        }
        c.bench_function(&format!("render/{name}"), |b| {
            b.iter(|| {
                template.render(
                    || base.template_input_json(&payload, "bench"),
                    "r",
                    "id",
                    payload.clone(),
                )
            })
        });
    }

    // Where a Rego template's cost goes, step by step.
    c.bench_function("split/convert", |b| {
        b.iter(|| base.template_input_json(&value, "bench"))
    });
    c.bench_function("split/convert/from_json_str", |b| {
        let text = String::from_utf8_lossy(&event).into_owned();
        b.iter(|| regorus::Value::from_json_str(&text).map(|v| base.template_input(v, "bench")))
    });
    let template_input = base.template_input_json(&value, "bench");
    for (name, package, source) in [
        (
            "tracee-text",
            "hooker.tracee.text",
            include_str!("../templates/tracee-text.rego"),
        ),
        ("user-alias", "custom.alias", USER_ALIAS),
        ("raw-json-rego", "hooker.rawmessage.json", raw_json),
    ] {
        // Loaded as Hooker loads it (`add_module`: reads through import aliases made lazy), and
        // as written (what it cost before).
        let load = |written: bool| {
            let mut engine =
                hooker::router::rego::new_engine(&[source]).unwrap_or_else(|err| panic!("{err}"));
            let added = if written {
                engine
                    .add_policy(name.to_string(), source.to_string())
                    .map_err(|err| err.to_string())
            } else {
                hooker::router::rego::add_module(&mut engine, name, source)
            };
            added.unwrap_or_else(|err| panic!("{err}"));
            hooker::router::rego::add_module(
                &mut engine,
                "wrapper",
                &format!("package w\nout := data.{package}\n"),
            )
            .unwrap_or_else(|err| panic!("{err}"));
            engine
        };
        let mut engine = load(false);
        for (id, engine) in [
            (format!("split/eval/{name}"), &mut engine),
            (format!("split/eval/{name}/as-written"), &mut load(true)),
        ] {
            c.bench_function(&id, |b| {
                b.iter(|| {
                    engine.set_input(template_input.clone());
                    engine.eval_rule("data.w.out".to_string())
                })
            });
        }
        engine.set_input(template_input.clone());
        let out = engine
            .eval_rule("data.w.out".to_string())
            .unwrap_or_else(|err| panic!("{err}"));
        c.bench_function(&format!("split/output/{name}"), |b| {
            b.iter(|| serde_json::to_value(&out).map(|v| v.is_object()))
        });
    }

    for set in [
        "routes-10",
        "routes-100",
        "default",
        "postee-helpers",
        "inline-template",
    ] {
        let pipeline = pipeline(set);
        let mut routes = pipeline.routes.clone();
        let matching: Vec<usize> = (0..routes.len())
            .filter(|&i| routes[i].rule.evaluate(&input) == Ok(true))
            .collect();
        assert!(!matching.is_empty(), "the bench event matches no route");
        if set == "routes-10" {
            for route in routes.iter_mut() {
                let name = format!("route/{}", route.name);
                c.bench_function(&name, |b| b.iter(|| route.rule.evaluate(&input)));
            }
            // A Rego route's whole cost for one event: the conversion (the whole event, or only
            // the fields the rules read, as the router does) and the evaluation.
            let fields = Fields::from_paths(
                routes
                    .iter()
                    .flat_map(|r| r.rule.rego_paths().unwrap_or_default())
                    .map(Vec::as_slice),
            );
            let route = &mut routes[0];
            c.bench_function("split/route/whole-input", |b| {
                b.iter(|| route.rule.evaluate(&to_rego(&value)))
            });
            c.bench_function("split/route/fields", |b| {
                b.iter(|| route.rule.evaluate(&fields.to_rego(&value)))
            });
        }
        c.bench_function(&format!("bound/{set}"), |b| {
            b.iter(|| {
                let value: serde_json::Value = serde_json::from_slice(&event).unwrap_or_default();
                let input = to_rego(&value);
                matching
                    .iter()
                    .filter(|&&i| routes[i].rule.evaluate(&input) == Ok(true))
                    .count()
            })
        });
        c.bench_function(&format!("naive/{set}"), |b| {
            b.iter(|| {
                let value: serde_json::Value = serde_json::from_slice(&event).unwrap_or_default();
                let input = regorus::Value::from(value);
                let mut matched = 0;
                for route in routes.iter_mut() {
                    if route.rule.evaluate(&input) == Ok(true) {
                        matched += 1;
                    }
                }
                matched
            })
        });
        // As a router worker holds them: given the keys Hooker adds to template inputs.
        let added = Arc::new(pipeline.added_keys("bench"));
        let mut templates = pipeline.templates.clone();
        for template in templates.values_mut() {
            template.set_added_keys(added.clone());
        }
        let mut worker = Worker {
            pipeline: &pipeline,
            routes: pipeline.routes.clone(),
            templates,
            candidates: Vec::new(),
        };
        assert_eq!(worker.route(&event), matching.len());
        c.bench_function(&format!("router/{set}/match"), |b| {
            b.iter(|| worker.route(&event))
        });
        c.bench_function(&format!("router/{set}/miss"), |b| {
            b.iter(|| worker.route(&miss))
        });
    }
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .sample_size(30)
        .warm_up_time(std::time::Duration::from_millis(500))
        .measurement_time(std::time::Duration::from_secs(2));
    targets = bench
}
criterion_main!(benches);
