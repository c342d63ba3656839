//! Route rules: Postee's `input` bodies and `input-files`, compiled once per config version.
//!
//! An inline `input` is wrapped as Postee does (`package hooker`, `default allow := false`,
//! `allow { <input> }`); `input-files` are modules declaring `allow` in `package hooker` (or
//! Postee's `package postee`), OR-combined. Each route owns one engine, so two routes' `allow`
//! rules never merge. Rego v1 and v0 (what Postee users have) are both accepted, per module.

use std::path::Path;
use std::sync::Arc;

use regorus::{Engine, Value};
use serde::Deserialize;

use super::native::Native;
use super::prefilter::{self, Check, Truth};

/// Modules loaded into every engine: helpers routes and templates may call.
pub const LIBRARY: &[(&str, &str)] = &[
    (
        "hooker/lib/tracee.rego",
        include_str!("../../templates/lib/tracee.rego"),
    ),
    (
        "hooker/lib/common.rego",
        include_str!("../../templates/lib/common.rego"),
    ),
    (
        "hooker/lib/render.rego",
        include_str!("../../templates/lib/render.rego"),
    ),
    (
        "hooker/lib/trivy.rego",
        include_str!("../../templates/lib/trivy.rego"),
    ),
    (
        "hooker/lib/trivyoperator.rego",
        include_str!("../../templates/lib/trivyoperator.rego"),
    ),
];

/// A route's compiled rule: an engine holding its modules and the rule paths to OR.
#[derive(Clone)]
pub struct RouteRule {
    engine: Engine,
    /// `data.<package>.allow` for each package the route's modules declare; empty = match all.
    rules: Vec<String>,
    /// Conditions the rule certainly requires, checked natively before Rego runs.
    checks: Arc<[Check]>,
    /// The whole rule, when native code can decide it (see [`super::native`]).
    native: Option<Arc<Native>>,
}

/// The event as a Rego value, converted without copying the JSON tree first.
pub fn to_rego(event: &serde_json::Value) -> Value {
    Value::deserialize(event).unwrap_or(Value::Undefined)
}

impl RouteRule {
    /// Compiles a route from its inline body or its files (files win, as in Postee).
    pub fn compile(
        route: &str,
        input: Option<&str>,
        files: &[String],
        filters_dir: &Path,
    ) -> Result<RouteRule, RuleError> {
        let mut rules = Vec::new();
        let mut checks = Vec::new();
        let mut native = None;
        let engine = if !files.is_empty() {
            let mut sources = Vec::new();
            for file in files {
                let path = if Path::new(file).is_absolute() {
                    Path::new(file).to_path_buf()
                } else {
                    filters_dir.join(file)
                };
                let source = std::fs::read_to_string(&path).map_err(|err| RuleError::File {
                    key: "input-files",
                    message: format!("cannot read {}: {err}", path.display()),
                })?;
                sources.push((path, source));
            }
            let roots: Vec<&str> = sources.iter().map(|(_, s)| s.as_str()).collect();
            let mut engine = new_engine(&roots)?;
            for (path, source) in &sources {
                let package = add_module(&mut engine, &path.display().to_string(), source)
                    .map_err(|message| RuleError::Compile {
                        key: "input-files",
                        message,
                    })?;
                let rule = format!("{package}.allow");
                if !rules.contains(&rule) {
                    rules.push(rule);
                }
            }
            engine
        } else if let Some(body) = input.map(str::trim).filter(|b| !b.is_empty()) {
            let mut engine = new_engine(&[body])?;
            let v1 =
                format!("package hooker\n\ndefault allow := false\n\nallow if {{\n{body}\n}}\n");
            let v0 = format!(
                "package hooker\n\nimport future.keywords.in\n\ndefault allow = false\n\nallow {{\n{body}\n}}\n"
            );
            let name = format!("route \"{route}\" input");
            add_module_either(&mut engine, &name, &v1, &v0).map_err(|message| {
                RuleError::Compile {
                    key: "input",
                    message,
                }
            })?;
            rules.push("data.hooker.allow".to_string());
            checks = prefilter::checks(body);
            native = Native::parse(body).map(Arc::new);
            engine
        } else {
            new_engine(&[])?
        };
        let mut rule = RouteRule {
            engine,
            rules,
            checks: checks.into(),
            native,
        };
        // Evaluate once on an empty input so errors that only show at evaluation surface at load.
        rule.evaluate(&Value::new_object())
            .map_err(|message| RuleError::Compile {
                key: "input",
                message,
            })?;
        Ok(rule)
    }

    /// The conditions checked before Rego (see [`prefilter`]).
    pub fn checks(&self) -> &[Check] {
        &self.checks
    }

    /// False when the event certainly fails the rule; true means "ask Rego".
    pub fn may_match(&self, event: &serde_json::Value) -> bool {
        self.checks.iter().all(|check| check.may_hold(event))
    }

    /// The rule's outcome for `event` decided without Rego — by its native form, its pre-checks,
    /// or because it matches everything — or None when Rego must evaluate it.
    pub fn decide_natively(&self, event: &serde_json::Value) -> Option<bool> {
        if self.matches_everything() {
            return Some(true);
        }
        if let Some(native) = &self.native {
            return match native.decide(event) {
                Truth::True => Some(true),
                Truth::False => Some(false),
                Truth::Unknown => None,
            };
        }
        if !self.may_match(event) {
            return Some(false);
        }
        None
    }

    /// The paths of `input` a native decision reads (none for a route that takes everything),
    /// or None when Rego decides.
    pub fn native_paths(&self) -> Option<Vec<&super::prefilter::Path>> {
        if self.matches_everything() {
            return Some(Vec::new());
        }
        self.native.as_ref().map(|native| native.paths().collect())
    }

    /// Whether the rule is decided natively whenever its values have the expected types.
    pub fn is_native(&self) -> bool {
        self.native.is_some() || self.matches_everything()
    }

    pub fn matches_everything(&self) -> bool {
        self.rules.is_empty()
    }

    /// True when any of the route's `allow` rules holds for `input`.
    pub fn evaluate(&mut self, input: &Value) -> Result<bool, String> {
        if self.rules.is_empty() {
            return Ok(true);
        }
        self.engine.set_input(input.clone());
        for rule in &self.rules {
            let value = self
                .engine
                .eval_rule(rule.clone())
                .map_err(|err| err.to_string())?;
            if value == Value::from(true) {
                return Ok(true);
            }
        }
        Ok(false)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum RuleError {
    #[error("{message}")]
    File { key: &'static str, message: String },
    #[error("Rego does not compile: {message}")]
    Compile { key: &'static str, message: String },
}

impl RuleError {
    pub fn key(&self) -> &'static str {
        match self {
            RuleError::File { key, .. } | RuleError::Compile { key, .. } => key,
        }
    }
}

/// An engine with the `jsonformat` built-in and the helper-library modules `roots` need.
pub fn new_engine(roots: &[&str]) -> Result<Engine, RuleError> {
    let mut engine = Engine::new();
    engine
        .add_extension("jsonformat".into(), 1, Box::new(jsonformat))
        .map_err(|err| RuleError::Compile {
            key: "input",
            message: err.to_string(),
        })?;
    let library: Vec<Module<'_>> = library().collect();
    let mut loaded = vec![false; library.len()];
    load_needed(&mut engine, roots, &library, &mut loaded).map_err(|message| {
        RuleError::Compile {
            key: "input",
            message,
        }
    })?;
    Ok(engine)
}

/// The helper library as loadable modules.
pub fn library() -> impl Iterator<Item = Module<'static>> {
    LIBRARY
        .iter()
        .map(|(origin, source)| Module::new(origin, source))
}

/// Adds to `engine` the modules of `universe` that `roots` need (see [`needed`]) and that
/// `loaded` does not mark as added yet; marks them.
pub fn load_needed(
    engine: &mut Engine,
    roots: &[&str],
    universe: &[Module<'_>],
    loaded: &mut [bool],
) -> Result<(), String> {
    for index in needed(roots, universe) {
        if !std::mem::replace(&mut loaded[index], true) {
            add_module(engine, universe[index].origin, universe[index].source)?;
        }
    }
    Ok(())
}

/// A module an engine may load: where it came from, its package (without `data.`), its text.
#[derive(Debug, Clone, Copy)]
pub struct Module<'a> {
    pub origin: &'a str,
    pub package: &'a str,
    pub source: &'a str,
}

impl<'a> Module<'a> {
    /// Reads the package off the module's `package` line.
    pub fn new(origin: &'a str, source: &'a str) -> Module<'a> {
        let package = source
            .lines()
            .find_map(|line| line.trim().strip_prefix("package "))
            .map(str::trim)
            .unwrap_or_default();
        Module {
            origin,
            package,
            source,
        }
    }
}

/// Which of `available` the `roots` need, transitively: a module is needed when a needed text
/// names its package (`data.a.b` needs packages `a.b`, `a.b.*` and `a`). Evaluation cost in
/// regorus grows with every module an engine holds, so engines load only these. A dynamic
/// `data[...]` reference needs everything.
pub fn needed(roots: &[&str], available: &[Module<'_>]) -> Vec<usize> {
    let mut taken = vec![false; available.len()];
    let mut queue: Vec<&str> = roots.to_vec();
    while let Some(text) = queue.pop() {
        let refs = data_refs(text);
        for (index, module) in available.iter().enumerate() {
            if taken[index] {
                continue;
            }
            let wanted = match &refs {
                None => true,
                Some(refs) => refs.iter().any(|r| names_package(r, module.package)),
            };
            if wanted {
                taken[index] = true;
                queue.push(module.source);
            }
        }
    }
    (0..available.len()).filter(|i| taken[*i]).collect()
}

/// Whether reference `r` (`a.b.c`, without `data.`) may read package `package`.
fn names_package(r: &str, package: &str) -> bool {
    let under = |long: &str, short: &str| {
        long.strip_prefix(short)
            .is_some_and(|rest| rest.is_empty() || rest.starts_with('.'))
    };
    !package.is_empty() && (under(r, package) || under(package, r))
}

/// The paths a module text reads as `data.<path>`; `None` for a dynamic `data[...]`.
fn data_refs(text: &str) -> Option<Vec<&str>> {
    let is_ident = |c: char| c.is_ascii_alphanumeric() || c == '_';
    let mut refs = Vec::new();
    for (at, _) in text.match_indices("data") {
        if text[..at].chars().next_back().is_some_and(is_ident) {
            continue;
        }
        let rest = &text[at + 4..];
        if rest.starts_with('[') {
            return None;
        }
        let Some(path) = rest.strip_prefix('.') else {
            continue;
        };
        let end = path
            .find(|c: char| !(is_ident(c) || c == '.'))
            .unwrap_or(path.len());
        let path = path[..end].trim_end_matches('.');
        if !path.is_empty() {
            refs.push(path);
        }
    }
    Some(refs)
}

/// Postee's `jsonformat(x)`: pretty JSON text with a one-space indent.
fn jsonformat(args: Vec<Value>) -> anyhow::Result<Value> {
    let value = args.into_iter().next().unwrap_or(Value::Null);
    let json = serde_json::to_value(&value)?;
    Ok(Value::from(pretty_json(&json)?))
}

/// JSON text the way `jsonformat` writes it: pretty, with a one-space indent.
pub fn pretty_json(value: &impl serde::Serialize) -> anyhow::Result<String> {
    let mut out = Vec::with_capacity(1024);
    let formatter = serde_json::ser::PrettyFormatter::with_indent(b" ");
    let mut serializer = serde_json::Serializer::with_formatter(&mut out, formatter);
    value.serialize(&mut serializer)?;
    Ok(String::from_utf8(out)?)
}

/// Adds a module written in either Rego version; returns its package path (`data.x.y`).
pub fn add_module(engine: &mut Engine, path: &str, source: &str) -> Result<String, String> {
    add_module_either(engine, path, source, source)
}

fn add_module_either(
    engine: &mut Engine,
    path: &str,
    v1: &str,
    v0: &str,
) -> Result<String, String> {
    engine.set_rego_v0(false);
    let v1_error = match engine.add_policy(path.to_string(), v1.to_string()) {
        Ok(package) => return Ok(package),
        Err(err) => err.to_string(),
    };
    engine.set_rego_v0(true);
    let v0_result = engine.add_policy(path.to_string(), v0.to_string());
    engine.set_rego_v0(false);
    match v0_result {
        Ok(package) => Ok(package),
        // Report the error of the version the module most likely meant.
        Err(v0_error) if looks_like_v1(v1) => Err(v1_error.trim().to_string()).map_err(|e| {
            format!(
                "{e}\n(also not valid Rego v0: {})",
                first_line(&v0_error.to_string())
            )
        }),
        Err(v0_error) => Err(format!(
            "{}\n(also not valid Rego v1: {})",
            v0_error.to_string().trim(),
            first_line(&v1_error)
        )),
    }
}

fn looks_like_v1(source: &str) -> bool {
    source.contains("import rego.v1")
        || source.contains(" if ")
        || source.contains(" if{")
        || source.contains(":=")
}

fn first_line(text: &str) -> &str {
    text.trim().lines().next().unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn rule(input: &str) -> RouteRule {
        RouteRule::compile("t", Some(input), &[], Path::new(".")).unwrap()
    }

    fn eval(rule: &mut RouteRule, event: serde_json::Value) -> bool {
        rule.evaluate(&Value::from(event)).unwrap()
    }

    #[test]
    fn postee_v0_and_v1_bodies_both_compile() {
        let mut v0 = rule(r#"contains(input.image, "alpine")"#);
        assert!(eval(&mut v0, json!({"image": "alpine:3.10"})));
        assert!(!eval(&mut v0, json!({"image": "debian"})));
        let mut some_in = rule("some a in input.args\na.name == \"pathname\"");
        assert!(eval(&mut some_in, json!({"args": [{"name": "pathname"}]})));
    }

    #[test]
    fn empty_input_matches_everything() {
        let mut all = RouteRule::compile("t", None, &[], Path::new(".")).unwrap();
        assert!(all.matches_everything());
        assert!(eval(&mut all, json!({})));
    }

    #[test]
    fn broken_rego_is_a_compile_error() {
        let err = RouteRule::compile("t", Some("input.x == "), &[], Path::new("."))
            .err()
            .unwrap();
        assert_eq!(err.key(), "input");
        assert!(err.to_string().contains("does not compile"), "{err}");
    }

    #[test]
    fn library_helpers_recognise_all_tracee_shapes() {
        let mut r = rule("data.hooker.lib.tracee.is_detection");
        assert!(eval(&mut r, json!({"SigMetadata": {"ID": "TRC-2"}})));
        assert!(eval(
            &mut r,
            json!({"eventName": "x", "metadata": {"Properties": {"signatureID": "TRC-102"}}})
        ));
        assert!(eval(
            &mut r,
            json!({"name": "x", "threat": {"severity": 2}})
        ));
        assert!(!eval(&mut r, json!({"eventName": "openat"})));
    }

    #[test]
    fn engines_load_only_the_modules_a_text_needs() {
        let lib = [
            Module::new(
                "a",
                "package hooker.lib.tracee\nx := data.hooker.lib.common.y",
            ),
            Module::new("b", "package hooker.lib.common\ny := 1"),
            Module::new("c", "package hooker.lib.trivy\nz := 2"),
        ];
        // Transitive, and `input.metadata.x` is not a data reference.
        assert_eq!(
            needed(&["input.metadata.a == data.hooker.lib.tracee.x"], &lib),
            vec![0, 1]
        );
        // A prefix reference takes every package under it.
        assert_eq!(needed(&["import data.hooker.lib"], &lib), vec![0, 1, 2]);
        assert_eq!(needed(&["input.a == 1"], &lib), Vec::<usize>::new());
        // A dynamic reference takes everything.
        assert_eq!(needed(&["data[x].y"], &lib), vec![0, 1, 2]);
    }

    #[test]
    fn input_files_are_or_combined() {
        let dir = std::env::temp_dir().join(format!("hooker-rego-files-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(
            dir.join("a.rego"),
            "package postee\nallow { input.a == 1 }\n",
        )
        .unwrap();
        std::fs::write(
            dir.join("b.rego"),
            "package postee\nallow { input.b == 2 }\n",
        )
        .unwrap();
        let files = vec!["a.rego".to_string(), "b.rego".to_string()];
        let mut r = RouteRule::compile("t", None, &files, &dir).unwrap();
        assert!(eval(&mut r, json!({"a": 1})));
        assert!(eval(&mut r, json!({"b": 2})));
        assert!(!eval(&mut r, json!({"c": 3})));
        std::fs::remove_dir_all(dir).unwrap();
    }
}
