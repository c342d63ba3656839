//! Templates: Rego packages that turn an event into a [`Message`] (`title`, `result`, `url`,
//! `aggregation_pkg`, `result_*`), as Postee defines them.
//!
//! A `rego-package` template is looked up in the catalog: the built-in templates compiled into the
//! binary, then the templates directory (`HOOKER_REGO_TEMPLATES`), which may override them. Postee
//! package names (`postee.rawmessage.json`) resolve to Hooker's (`hooker.rawmessage.json`), and so
//! do those of the Go fork also called Hooker (`hooker.tracker.html` → `hooker.tracee.html`).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use regorus::{Engine, Value};

use super::rego::{Module, add_module, eval_error, library, load_needed, new_engine, pretty_json};
use crate::event_json::EventJson;
use crate::message::Message;

mod native;

/// Embeds `agent/templates/<file>` for each file named: `(file, source)` pairs.
macro_rules! builtin {
    ($($file:literal),* $(,)?) => {
        &[$(($file, include_str!(concat!("../../templates/", $file)))),*]
    };
}

/// Built-in templates, compiled into the binary.
pub const BUILTIN: &[(&str, &str)] = builtin![
    "tracee-text.rego",
    "raw-json.rego",
    "raw-html.rego",
    "aggregate-text.rego",
    "vuls-html.rego",
    "vuls-html-aggregation.rego",
    "vuls-slack.rego",
    "vuls-slack-aggregation.rego",
    "vuls-cyclonedx.rego",
    "vuls-opsgenie.rego",
    "servicenow.rego",
    "servicenow-incident.rego",
    "servicenow-insight.rego",
    "postee-common.rego",
    "aggregate-slack.rego",
    "aggregate-html.rego",
    "aggregate-jira.rego",
    "aggregate-alert.rego",
    "tracee-slack.rego",
    "tracee-teams.rego",
    "tracee-jira.rego",
    "tracee-html.rego",
    "tracee-email.rego",
    "tracee-pagerduty.rego",
    "tracee-opsgenie.rego",
    "trivy-text.rego",
    "trivy-slack.rego",
    "trivy-teams.rego",
    "trivy-jira.rego",
    "trivy-html.rego",
    "trivy-email.rego",
    "trivy-pagerduty.rego",
    "trivy-opsgenie.rego",
    "trivyoperator-text.rego",
    "trivyoperator-slack.rego",
    "trivyoperator-teams.rego",
    "trivyoperator-jira.rego",
    "trivyoperator-html.rego",
    "trivyoperator-email.rego",
    "trivyoperator-pagerduty.rego",
    "trivyoperator-opsgenie.rego",
    "trivyoperator-dependencytrack.rego",
    "falco-text.rego",
    "falco-slack.rego",
    "falco-teams.rego",
    "falco-jira.rego",
    "falco-html.rego",
    "falco-email.rego",
    "falco-pagerduty.rego",
    "falco-opsgenie.rego",
];

/// One template module: where it came from and the package it declares.
#[derive(Debug, Clone)]
pub struct CatalogEntry {
    pub origin: String,
    pub package: String,
    pub source: Arc<str>,
}

/// Every template module available to `rego-package`, by package name.
#[derive(Debug, Clone, Default)]
pub struct Catalog {
    entries: BTreeMap<String, CatalogEntry>,
}

impl Catalog {
    /// The built-in templates plus every `*.rego` under `dir`; a module that does not compile is an error.
    pub fn load(dir: Option<&Path>) -> Result<Catalog, Vec<String>> {
        let mut catalog = Catalog::default();
        let mut errors = Vec::new();
        for (name, source) in BUILTIN {
            catalog.insert(format!("built-in {name}"), source, &mut errors);
        }
        if let Some(dir) = dir {
            let mut files = Vec::new();
            collect_rego_files(dir, &mut files, &mut errors);
            files.sort();
            for file in files {
                match std::fs::read_to_string(&file) {
                    Ok(source) => catalog.insert(file.display().to_string(), &source, &mut errors),
                    Err(err) => {
                        errors.push(format!("cannot read template {}: {err}", file.display()))
                    }
                }
            }
        }
        if errors.is_empty() {
            Ok(catalog)
        } else {
            Err(errors)
        }
    }

    fn insert(&mut self, origin: String, source: &str, errors: &mut Vec<String>) {
        let mut engine = Engine::new();
        match add_module(&mut engine, &origin, source) {
            Ok(package) => {
                let package = package.trim_start_matches("data.").to_string();
                self.entries.insert(
                    package.clone(),
                    CatalogEntry {
                        origin,
                        package,
                        source: source.into(),
                    },
                );
            }
            Err(err) => errors.push(format!("template {origin} does not compile: {err}")),
        }
    }

    /// Finds a package, accepting Postee's `postee.*` names for Hooker's `hooker.*` templates, and
    /// the names of the Go fork of Postee also called Hooker (khulnasoft-lab/hooker), whose
    /// templates are Postee's renamed: `hooker.tracker.*` (Tracee), `hooker.tunnel.*` (Trivy),
    /// `hooker.tunneloperator.*` (trivy-operator).
    pub fn find(&self, package: &str) -> Option<&CatalogEntry> {
        self.entries.get(package).or_else(|| {
            let rest = package
                .strip_prefix("postee.")
                .or_else(|| package.strip_prefix("hooker."))?;
            let renamed = match rest {
                // Postee spelled its CycloneDX package without the "e".
                "vuls.cyclondx" => "vuls.cyclonedx".to_string(),
                // Postee's Trivy-report Slack template and its aggregation (and the fork's).
                "vuls.trivy.slack" | "vuls.tunnel.slack" => "trivy.slack".to_string(),
                "vuls.slack.trivy.aggregation" | "vuls.slack.tunnel.aggregation" => {
                    "aggregate.slack".to_string()
                }
                other => {
                    let (family, channel) = other.split_once('.').unwrap_or((other, ""));
                    let family = match family {
                        "tracker" => "tracee",
                        "tunnel" => "trivy",
                        "tunneloperator" => "trivyoperator",
                        family => family,
                    };
                    if channel.is_empty() {
                        family.to_string()
                    } else {
                        format!("{family}.{channel}")
                    }
                }
            };
            self.entries.get(&format!("hooker.{renamed}"))
        })
    }

    pub fn packages(&self) -> impl Iterator<Item = &str> {
        self.entries.keys().map(String::as_str)
    }

    fn all(&self) -> impl Iterator<Item = &CatalogEntry> {
        self.entries.values()
    }
}

fn collect_rego_files(dir: &Path, files: &mut Vec<PathBuf>, errors: &mut Vec<String>) {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(err) => {
            errors.push(format!(
                "cannot read templates directory {}: {err}",
                dir.display()
            ));
            return;
        }
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            if path.file_name().is_some_and(|n| n != "lost+found") {
                collect_rego_files(&path, files, errors);
            }
        } else if path.extension().is_some_and(|e| e == "rego")
            && !path.to_string_lossy().ends_with("_test.rego")
        {
            files.push(path);
        }
    }
}

/// A compiled template, ready to render. Clone it per worker: rendering needs `&mut`.
#[derive(Clone)]
pub struct Template {
    pub name: String,
    engine: Engine,
    /// `data.<package>`.
    package: String,
    /// `data.<package>` of the aggregation template, when the template names one.
    aggregation: Option<String>,
    /// The built-in `hooker.rawmessage.json`, rendered natively (same text, no Rego).
    raw_json: bool,
    /// A simple user template, rendered natively (see [`simple`]), with the keys Hooker adds to
    /// the event for templates once the router gives them ([`Template::set_added_keys`]).
    simple: Option<(Arc<simple::Simple>, Option<Arc<simple::AddedKeys>>)>,
    /// A built-in card template rendered in Rust (see [`native`]).
    native: Option<native::Builtin>,
}

/// The built-in raw-JSON template, which [`Template`] renders natively.
const RAW_JSON: &str = include_str!("../../templates/raw-json.rego");

/// The wrapper package whose rules read the template's package as one value: evaluating a rule
/// skips the query parsing and analysis `eval_query` repeats on every call.
const WRAPPER: &str = "hooker_internal.render";

impl Template {
    /// Compiles a template from a catalog package or from module text (`body`, `url`).
    ///
    /// Like Postee, a template may use any package of the catalog; the engine loads only those
    /// its text (transitively) names, because regorus' evaluation cost grows with every module.
    pub fn compile(
        name: &str,
        source: TemplateText<'_>,
        catalog: &Catalog,
    ) -> Result<Template, String> {
        let mut universe: Vec<Module<'_>> = library().collect();
        universe.extend(catalog.all().map(|entry| Module {
            origin: &entry.origin,
            package: &entry.package,
            source: &entry.source,
        }));
        let mut loaded = vec![false; universe.len()];
        let mut engine = new_engine(&[]).map_err(|e| e.to_string())?;
        let mut native = None;
        let (package, raw_json, origin) = match source {
            TemplateText::Package(package) => {
                let entry = catalog.find(package).ok_or_else(|| {
                    let known: Vec<_> = catalog.packages().collect();
                    format!(
                        "unknown rego-package \"{package}\" (available: {})",
                        known.join(", ")
                    )
                })?;
                native = native::Builtin::find(&entry.package, &entry.source, catalog.packages());
                let root = format!("data.{}", entry.package);
                load_needed(&mut engine, &[&root], &universe, &mut loaded)?;
                (root, &*entry.source == RAW_JSON, entry.origin.clone())
            }
            TemplateText::Module(text) => {
                load_needed(&mut engine, &[text], &universe, &mut loaded)?;
                let origin = format!("template \"{name}\"");
                let package = add_module(&mut engine, &origin, text)?;
                (package, false, origin)
            }
        };
        // Without a `result` rule every render fails: refuse it at load, not per event.
        if !engine
            .has_declared_rule_rooted_at(&origin, "result")
            .map_err(|err| err.to_string())?
        {
            return Err(format!(
                "package {} has no rule named result (the message body a template must define)",
                package.trim_start_matches("data.")
            ));
        }
        // Like Postee, evaluate once on an empty input to find the aggregation package.
        let found = eval_package(&mut engine, &package, Value::new_object())?.and_then(|out| {
            match out.get("aggregation_pkg") {
                Some(serde_json::Value::String(pkg)) if !pkg.is_empty() => Some(pkg.clone()),
                _ => None,
            }
        });
        let aggregation = found.map(|pkg| match catalog.find(&pkg) {
            Some(entry) => format!("data.{}", entry.package),
            None => format!("data.{pkg}"),
        });
        let mut wrapper = format!("package {WRAPPER}\n\nout := {package}\n");
        if let Some(aggregation) = &aggregation {
            load_needed(&mut engine, &[aggregation], &universe, &mut loaded)?;
            wrapper.push_str(&format!("\nagg := {aggregation}\n"));
        }
        add_module(&mut engine, "template wrapper", &wrapper)?;
        let simple = match source {
            TemplateText::Package(package) => catalog.find(package).map(|e| &*e.source),
            TemplateText::Module(text) => Some(text),
        }
        .filter(|_| !raw_json)
        .and_then(simple::Simple::parse)
        .map(|simple| (Arc::new(simple), None));
        Ok(Template {
            name: name.to_string(),
            engine,
            package,
            aggregation,
            raw_json,
            simple,
            native,
        })
    }

    /// Gives a simple template the `postee` and `hooker` keys Hooker adds to the event (see
    /// `Pipeline::added_keys`), so it renders without Rego even when it reads them.
    pub fn set_added_keys(&mut self, keys: Arc<simple::AddedKeys>) {
        if let Some((_, added)) = &mut self.simple {
            *added = Some(keys);
        }
    }

    /// The simple template's output for `event`, when it renders natively.
    fn render_simple(
        &self,
        event: &EventJson,
    ) -> Option<serde_json::Map<String, serde_json::Value>> {
        let (simple, added) = self.simple.as_ref()?;
        let none = simple::AddedKeys::new();
        let added = match added {
            Some(added) => added,
            None if simple.reads_added_keys() => return None,
            None => &none,
        };
        simple.render(event, added)
    }

    /// The same template rendered through its Rego module only (what a native built-in is
    /// checked against).
    #[doc(hidden)]
    pub fn without_native(mut self) -> Template {
        self.native = None;
        self
    }

    pub fn aggregates(&self) -> bool {
        self.aggregation.is_some()
    }

    /// Whether rendering one event runs without Rego: the built-in raw-JSON and card templates,
    /// or a simple template (given the added keys by the router; an event it cannot be sure of
    /// goes to Rego).
    pub fn is_native(&self) -> bool {
        self.raw_json || self.native.is_some() || self.simple.is_some()
    }

    /// Like [`Template::render`] for a route whose actions never read the body: a native
    /// template leaves it [pending](Message::body_pending) (the others render as usual).
    pub fn render_unread_body(
        &mut self,
        input: impl FnOnce() -> Value,
        route: &str,
        event_id: &str,
        event: Arc<EventJson>,
    ) -> Result<Message, String> {
        if !self.raw_json {
            return self.render(input, route, event_id, event);
        }
        let out = raw_json_out(String::new());
        let mut message = message_from(&self.name, out, route, event_id, event)?;
        message.body_pending = true;
        Ok(message)
    }

    /// Renders one event. `input` gives the event with Postee's `postee` key added; it is not
    /// called when the template renders without Rego.
    pub fn render(
        &mut self,
        input: impl FnOnce() -> Value,
        route: &str,
        event_id: &str,
        event: Arc<EventJson>,
    ) -> Result<Message, String> {
        let mut pending = Some(input);
        let mut made = None;
        let native = self.native.and_then(|builtin| {
            let mut node = || {
                let input = made.get_or_insert_with(|| pending.take().map(|f| f()));
                native::node_of(input.as_ref())
            };
            // A large event kept as text is parsed for this render only, not kept parsed.
            if super::rego::stays_text(&event) {
                builtin.render_text(event.text().get(), &mut node)
            } else {
                builtin.render(event.value(), &mut node)
            }
        });
        let out = if self.raw_json {
            raw_json_out(raw_json_body(&event)?)
        } else if let Some(out) = native {
            out
        } else if let Some(out) = self.render_simple(&event) {
            out
        } else {
            let input = made.flatten().or_else(|| pending.take().map(|f| f()));
            self.engine
                .set_input(input.unwrap_or_else(Value::new_object));
            eval_rule(&mut self.engine, &format!("data.{WRAPPER}.out"))?.ok_or_else(|| {
                format!(
                    "template \"{}\": package {} is not defined",
                    self.name, self.package
                )
            })?
        };
        message_from(&self.name, out, route, event_id, event)
    }

    /// Renders several messages as one, with the template's `aggregation_pkg`, or by joining them.
    pub fn render_aggregate(&mut self, messages: &[Message]) -> Result<Message, String> {
        let first = messages.first().ok_or("nothing to aggregate")?;
        let Some(package) = self.aggregation.clone() else {
            return Ok(join(messages));
        };
        let items: Vec<serde_json::Value> = messages.iter().map(aggregation_item).collect();
        self.engine
            .set_input(Value::from(serde_json::Value::Array(items)));
        let out = eval_rule(&mut self.engine, &format!("data.{WRAPPER}.agg"))?
            .ok_or_else(|| format!("aggregation package {package} is not defined"))?;
        message_from(
            &self.name,
            out,
            &first.route,
            &first.event_id,
            first.event.clone(),
        )
    }
}

/// What `raw-json.rego` computes: the event without the `postee` and `hooker` keys Hooker adds,
/// as pretty JSON with a one-space indent and object keys in Rego's (sorted) order.
/// The raw-JSON template's output around its `result`.
fn raw_json_out(body: String) -> serde_json::Map<String, serde_json::Value> {
    let mut map = serde_json::Map::new();
    map.insert("title".into(), "Raw Message Received".into());
    map.insert("result".into(), body.into());
    map
}

/// The raw-JSON template's `result`: the event, keys sorted, pretty-printed, without Postee's
/// and Hooker's additions.
pub fn raw_json_body(event: &serde_json::Value) -> Result<String, String> {
    pretty_json(&Sorted(event, true)).map_err(|err| err.to_string())
}

/// A JSON value serialized with object keys sorted; the top level drops `postee` and `hooker`.
struct Sorted<'a>(&'a serde_json::Value, bool);

impl serde::Serialize for Sorted<'_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::{SerializeMap, SerializeSeq};
        match self.0 {
            serde_json::Value::Object(map) => {
                let mut entries: Vec<_> = map
                    .iter()
                    .filter(|(key, _)| !(self.1 && (key == &"postee" || key == &"hooker")))
                    .collect();
                entries.sort_unstable_by(|a, b| a.0.cmp(b.0));
                let mut out = serializer.serialize_map(Some(entries.len()))?;
                for (key, value) in entries {
                    out.serialize_entry(key, &Sorted(value, false))?;
                }
                out.end()
            }
            serde_json::Value::Array(items) => {
                let mut out = serializer.serialize_seq(Some(items.len()))?;
                for item in items {
                    out.serialize_element(&Sorted(item, false))?;
                }
                out.end()
            }
            other => other.serialize(serializer),
        }
    }
}

/// Where a template's module text comes from.
pub enum TemplateText<'a> {
    Package(&'a str),
    Module(&'a str),
}

fn eval_package(
    engine: &mut Engine,
    package: &str,
    input: Value,
) -> Result<Option<serde_json::Map<String, serde_json::Value>>, String> {
    engine.set_input(input);
    let results = engine
        .eval_query(package.to_string(), false)
        .map_err(eval_error)?;
    let Some(value) = results
        .result
        .into_iter()
        .next()
        .and_then(|r| r.expressions.into_iter().next())
        .map(|e| e.value)
    else {
        return Ok(None);
    };
    match serde_json::to_value(&value).map_err(|err| err.to_string())? {
        serde_json::Value::Object(map) => Ok(Some(map)),
        _ => Ok(None),
    }
}

/// Evaluates one rule; `None` when it is undefined or not an object.
fn eval_rule(
    engine: &mut Engine,
    rule: &str,
) -> Result<Option<serde_json::Map<String, serde_json::Value>>, String> {
    let value = engine.eval_rule(rule.to_string()).map_err(eval_error)?;
    match serde_json::to_value(&value).map_err(|err| err.to_string())? {
        serde_json::Value::Object(map) => Ok(Some(map)),
        _ => Ok(None),
    }
}

fn message_from(
    template: &str,
    mut out: serde_json::Map<String, serde_json::Value>,
    route: &str,
    event_id: &str,
    event: Arc<EventJson>,
) -> Result<Message, String> {
    let body = match out.remove("result") {
        Some(serde_json::Value::String(s)) => s,
        Some(other) => other.to_string(),
        None => {
            return Err(format!(
                "template \"{template}\": property result is not found"
            ));
        }
    };
    let title = match out.remove("title") {
        Some(serde_json::Value::String(s)) => s,
        Some(other) => other.to_string(),
        None => String::new(),
    };
    let url = match out.remove("url") {
        Some(serde_json::Value::String(s)) if !s.is_empty() => Some(s),
        _ => None,
    };
    let fields = out
        .into_iter()
        .filter_map(|(key, value)| key.strip_prefix("result_").map(|k| (k.to_string(), value)))
        .collect();
    // Looked up only when the event may have them: a text-only event stays unparsed.
    const OWNERS: &str = "application_scope_owners";
    let owners = match event.may_have(OWNERS).then(|| event.get(OWNERS)).flatten() {
        Some(serde_json::Value::Array(items)) => items
            .iter()
            .filter_map(|v| v.as_str().map(str::to_string))
            .collect(),
        _ => Vec::new(),
    };
    Ok(Message {
        route: route.to_string(),
        event_id: event_id.to_string(),
        title,
        body,
        body_pending: false,
        url,
        fields,
        owners,
        event,
    })
}

/// The shape Postee hands an aggregation package: one object per message.
fn aggregation_item(message: &Message) -> serde_json::Value {
    let mut item = serde_json::Map::new();
    item.insert("title".into(), message.title.clone().into());
    item.insert(
        "description".into(),
        message
            .body_json()
            .unwrap_or_else(|| message.body.clone().into()),
    );
    item.insert("url".into(), message.url.clone().unwrap_or_default().into());
    for (key, value) in &message.fields {
        item.insert(key.clone(), value.clone());
    }
    serde_json::Value::Object(item)
}

/// Without an aggregation package: titles listed, bodies joined (a JSON array when all are JSON).
fn join(messages: &[Message]) -> Message {
    let mut merged = messages[0].clone();
    if messages.len() > 1 {
        merged.title = format!("{} (and {} more)", messages[0].title, messages.len() - 1);
    }
    let json: Option<Vec<serde_json::Value>> = messages.iter().map(Message::body_json).collect();
    merged.body = match json {
        Some(items) => serde_json::Value::Array(items).to_string(),
        None => messages
            .iter()
            .map(|m| m.body.as_str())
            .collect::<Vec<_>>()
            .join("\n\n"),
    };
    merged.owners = messages
        .iter()
        .flat_map(|m| m.owners.iter().cloned())
        .collect();
    merged.owners.sort();
    merged.owners.dedup();
    merged
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn render(template: &mut Template, event: serde_json::Value) -> Message {
        template
            .render(
                || Value::from(event.clone()),
                "r",
                "e1",
                Arc::new(event.clone().into()),
            )
            .unwrap()
    }

    #[test]
    fn raw_json_template_pretty_prints_the_event() {
        let catalog = Catalog::load(None).unwrap();
        let mut t = Template::compile(
            "raw",
            TemplateText::Package("postee.rawmessage.json"),
            &catalog,
        )
        .unwrap();
        let m = render(&mut t, json!({"a": 1, "postee": {"AquaServer": "x"}}));
        assert_eq!(m.title, "Raw Message Received");
        assert_eq!(m.body, "{\n \"a\": 1\n}");
    }

    #[test]
    fn a_template_without_a_result_rule_does_not_compile() {
        let catalog = Catalog::load(None).unwrap();
        let body = "package custom\ntitle := \"T\"\n";
        let err = Template::compile("c", TemplateText::Module(body), &catalog)
            .err()
            .unwrap();
        assert!(
            err.contains("package custom has no rule named result"),
            "{err}"
        );
        // The same from the templates directory, by `rego-package`.
        let dir = std::env::temp_dir().join(format!("hooker-no-result-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(
            dir.join("t.rego"),
            "package acme.noresult\ntitle := \"T\"\n",
        )
        .unwrap();
        let catalog = Catalog::load(Some(&dir)).unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
        let err = Template::compile("p", TemplateText::Package("acme.noresult"), &catalog)
            .err()
            .unwrap();
        assert!(err.contains("has no rule named result"), "{err}");
        // Defined only under some conditions is defined: a partial or default rule counts.
        for body in [
            "package c\nresult := \"x\" if input.a\n",
            "package c\ndefault result := \"\"\n",
            "package c\nresult contains x if some x in input.a\n",
        ] {
            Template::compile("c", TemplateText::Module(body), &catalog).unwrap();
        }
    }

    /// A custom template written for Postee imports its common helpers (`data.postee.*`) and gets
    /// Postee's answers without shipping Postee's `common.rego`.
    #[test]
    fn postee_common_helpers_are_built_in() {
        let catalog = Catalog::load(None).unwrap();
        let body = r#"package custom
import data.postee.by_flag
import data.postee.clamp
import data.postee.duplicate
import data.postee.flat_array
import data.postee.with_default
title := with_default(input, "name", "no name")
result := {
    "flag": [by_flag("a", "b", true), by_flag("a", "b", false), by_flag("a", "b", "x")],
    "dup": [duplicate("a", "b", 1), duplicate("a", "b", 2)],
    "clamp": [clamp(3, 5), clamp(7, 5)],
    "flat": flat_array([[1, 2], [3]]),
    "default": [with_default(input, "missing", "d"), with_default(input, "off", "d"),
                with_default(input, "empty", "d"), with_default(input, "n", "d")],
}
"#;
        let mut t = Template::compile("c", TemplateText::Module(body), &catalog).unwrap();
        let m = render(&mut t, json!({"off": false, "empty": "", "n": 0}));
        assert_eq!(m.title, "no name");
        assert_eq!(
            m.body_json(),
            Some(json!({
                "flag": ["a", "b", "a"],
                "dup": ["a", "b"],
                "clamp": [3, 5],
                "flat": [1, 2, 3],
                "default": ["d", "d", "", 0],
            }))
        );
    }

    #[test]
    fn a_result_undefined_for_an_event_is_a_render_error() {
        let catalog = Catalog::load(None).unwrap();
        let body = "package custom\ntitle := \"T\"\nresult := input.body\n";
        let mut t = Template::compile("c", TemplateText::Module(body), &catalog).unwrap();
        let err = t
            .render(Value::new_object, "r", "e", Arc::new(json!({}).into()))
            .unwrap_err();
        assert!(err.contains("property result is not found"), "{err}");
    }

    #[test]
    fn result_fields_and_owners_are_carried() {
        let catalog = Catalog::load(None).unwrap();
        let body = "package custom\ntitle := \"T\"\nresult := {\"x\": 1}\nresult_severity := 2\n";
        let mut t = Template::compile("c", TemplateText::Module(body), &catalog).unwrap();
        let m = render(&mut t, json!({"application_scope_owners": ["a@x", "b@x"]}));
        assert_eq!(m.body, r#"{"x":1}"#);
        assert_eq!(m.fields.get("severity"), Some(&json!(2)));
        assert_eq!(m.owners, vec!["a@x", "b@x"]);
    }

    use crate::fixtures::json as fixture;

    #[test]
    fn native_raw_json_renders_what_the_rego_template_renders() {
        let catalog = Catalog::load(None).unwrap();
        let mut native = Template::compile(
            "n",
            TemplateText::Package("hooker.rawmessage.json"),
            &catalog,
        )
        .unwrap();
        let mut rego = Template::compile("r", TemplateText::Module(RAW_JSON), &catalog).unwrap();
        assert!(native.raw_json && !rego.raw_json);
        let dir = crate::fixtures::dir();
        let mut compared = 0;
        for family in ["postee", "tracee", "trivy"] {
            for entry in std::fs::read_dir(dir.join(family)).unwrap() {
                let path = entry.unwrap().path();
                if path.extension().is_none_or(|e| e != "json") {
                    continue;
                }
                let mut event: serde_json::Value =
                    serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
                if let serde_json::Value::Object(map) = &mut event {
                    // Keys Hooker adds to the template input, and a nested one that must stay.
                    map.insert("postee".into(), json!({"AquaServer": ""}));
                    map.insert("nested".into(), json!({"hooker": [1, 2.5, "x"]}));
                }
                let a = render(&mut native, event.clone());
                let b = render(&mut rego, event);
                assert_eq!(a.body, b.body, "{}", path.display());
                assert_eq!(a.title, b.title);
                compared += 1;
            }
        }
        assert!(compared >= 15, "only {compared} fixtures compared");
    }

    #[test]
    fn aggregation_without_a_console_url_passes_an_empty_url_as_postee() {
        // `aqua-server` unset (Postee's default): each message's `url` reaches the aggregation
        // package as "", not null, so `concat` over the urls works.
        let catalog = Catalog::load(None).unwrap();
        let mut event = fixture("postee/aqua-input.json");
        event["postee"] = json!({"AquaServer": ""});
        let mut html =
            Template::compile("h", TemplateText::Package("postee.vuls.html"), &catalog).unwrap();
        let first = render(&mut html, event.clone());
        let second = render(&mut html, event);
        assert_eq!(first.url, None);
        let joined = html.render_aggregate(&[first, second]).unwrap();
        assert!(joined.body.contains("CVE-2019-12904"), "{}", joined.body);
    }

    #[test]
    fn aqua_scan_renders_for_postee_html_and_slack_users() {
        let catalog = Catalog::load(None).unwrap();
        let mut event = fixture("postee/aqua-input.json");
        event["postee"] = json!({"AquaServer": "https://aqua.example/#/images/"});
        let mut html =
            Template::compile("h", TemplateText::Package("postee.vuls.html"), &catalog).unwrap();
        let m = render(&mut html, event.clone());
        assert_eq!(m.title, "all-in-one:3.5.19223 vulnerability scan report");
        assert!(m.body.contains("<td>critical</td><td>1</td>"), "{}", m.body);
        assert!(m.body.contains("CVE-2019-12904"), "{}", m.body);
        assert_eq!(
            m.url.as_deref(),
            Some("https://aqua.example/#/images/Aqua/all-in-one%3A3.5.19223")
        );
        assert_eq!(m.fields.get("severity"), Some(&json!("critical")));
        let mut slack =
            Template::compile("s", TemplateText::Package("postee.vuls.slack"), &catalog).unwrap();
        let m = render(&mut slack, event);
        let blocks: Vec<serde_json::Value> = serde_json::from_str(&m.body).unwrap();
        assert!(blocks.iter().all(|b| b["type"].is_string()));
        assert!(m.body.contains("CVE-2019-12904"));
        let both = slack.render_aggregate(&[m.clone(), m]).unwrap();
        let blocks: Vec<serde_json::Value> = serde_json::from_str(&both.body).unwrap();
        assert_eq!(both.title, "2 vulnerability scan reports");
        assert!(blocks.len() > 4);
    }

    #[test]
    fn unknown_package_lists_what_exists() {
        let catalog = Catalog::load(None).unwrap();
        let err = Template::compile("x", TemplateText::Package("nope.nope"), &catalog)
            .err()
            .unwrap();
        assert!(err.contains("hooker.rawmessage.json"), "{err}");
    }
}

#[cfg(test)]
mod golden;
pub mod simple;
