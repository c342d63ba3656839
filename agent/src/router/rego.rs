//! Route rules: Postee's `input` bodies and `input-files`, compiled once per config version.
//!
//! An inline `input` is wrapped as Postee does (`package hooker`, `default allow := false`,
//! `allow { <input> }`); `input-files` are modules declaring `allow` in `package hooker` (or
//! Postee's `package postee`), OR-combined. Each route owns one engine, so two routes' `allow`
//! rules never merge. Rego v1 and v0 (what Postee users have) are both accepted, per module.

use std::num::NonZeroU32;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use regorus::utils::limits::ExecutionTimerConfig;
use regorus::{Engine, LimitError, Value};
use serde::Deserialize;

use super::native::Native;
use super::prefilter::{self, Check, Truth};
use crate::event_json::EventJson;

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
    (
        "hooker/lib/falco.rego",
        include_str!("../../templates/lib/falco.rego"),
    ),
];

/// The default of `HOOKER_REGO_TIMEOUT`: the longest one Rego evaluation (a route's rule for one
/// event, one template rendering) may run before it is stopped with an error.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(2);

/// The most elements `numbers.range` and `numbers.range_step` may make in one call: the
/// built-ins allocate the whole array before the time budget is checked again, so
/// `numbers.range(1, 200000000)` would take gigabytes first.
pub const MAX_RANGE: u64 = 1_000_000;

/// `HOOKER_REGO_TIMEOUT` in milliseconds, applied to every engine made after it is set.
static TIMEOUT_MS: AtomicU64 = AtomicU64::new(DEFAULT_TIMEOUT.as_millis() as u64);

/// Sets the time budget of every Rego evaluation of engines compiled from now on (process-wide:
/// `run`, `validate` and `test-route` set it once at start from `HOOKER_REGO_TIMEOUT`).
pub fn set_timeout(timeout: Duration) {
    let ms = u64::try_from(timeout.as_millis())
        .unwrap_or(u64::MAX)
        .max(1);
    TIMEOUT_MS.store(ms, Ordering::Relaxed);
}

/// The time budget of one evaluation.
pub fn timeout() -> Duration {
    Duration::from_millis(TIMEOUT_MS.load(Ordering::Relaxed))
}

/// An evaluation error, said plainly when it was the time budget that stopped it.
pub fn eval_error(err: anyhow::Error) -> String {
    match err.downcast_ref::<LimitError>() {
        Some(LimitError::TimeLimitExceeded { limit, .. }) => format!(
            "Rego evaluation stopped: over its time budget of {limit:?} (HOOKER_REGO_TIMEOUT)"
        ),
        _ => err.to_string(),
    }
}

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
    /// The `input` paths the rule's modules read, when only static ones (see
    /// [`super::input_paths`]): Rego is given an input with only those.
    reads: Option<Arc<[Vec<String>]>>,
}

/// The event as a Rego value, converted without copying the JSON tree first.
pub fn to_rego(event: &serde_json::Value) -> Value {
    Value::deserialize(event).unwrap_or(Value::Undefined)
}

/// Whether `event` is a large one kept as text (see [`crate::event_json::LARGE_EVENT`]), which
/// the router converts to Rego from its text instead of parsing it.
pub fn stays_text(event: &EventJson) -> bool {
    !event.is_parsed() && event.text().get().len() >= crate::event_json::LARGE_EVENT
}

/// The event as a Rego value: from its text when it [stays text](stays_text), else from its value.
pub fn event_to_rego(event: &EventJson) -> Value {
    if stays_text(event) {
        return Value::from_json_str(event.text().get()).unwrap_or(Value::Undefined);
    }
    to_rego(event)
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
        let mut reads = Some(Vec::new());
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
            reads = read_paths(&roots);
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
            reads = read_paths(&[body]);
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
            reads: reads.map(Into::into),
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

    /// The `input` paths Rego reads for this rule, or None when it may read the whole input.
    pub fn rego_paths(&self) -> Option<&[Vec<String>]> {
        self.reads.as_deref()
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
            let value = self.engine.eval_rule(rule.clone()).map_err(eval_error)?;
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

/// An engine with the `jsonformat` built-in, the helper-library modules `roots` need, the time
/// budget ([`timeout`]) and the bounded `numbers.range` ([`MAX_RANGE`]).
pub fn new_engine(roots: &[&str]) -> Result<Engine, RuleError> {
    let mut engine = Engine::new();
    // As OPA (Postee's engine): a built-in given a value of the wrong type
    // (`contains(<object>, "x")`) is undefined, not an error, so `not contains(...)` holds.
    engine.set_strict_builtin_errors(false);
    engine.set_execution_timer_config(ExecutionTimerConfig {
        limit: timeout(),
        // Work units between clock reads: a few microseconds of evaluation.
        check_interval: NonZeroU32::MIN.saturating_add(99),
    });
    let extensions: [(&str, u8, Box<dyn regorus::Extension>); 3] = [
        ("jsonformat", 1, Box::new(jsonformat)),
        ("numbers.range", 2, Box::new(range)),
        ("numbers.range_step", 3, Box::new(range_step)),
    ];
    for (name, args, extension) in extensions {
        engine
            .add_extension(name.into(), args, extension)
            .map_err(|err| RuleError::Compile {
                key: "input",
                message: err.to_string(),
            })?;
    }
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

/// The `input` paths the modules `roots` and the library modules they load read (see
/// [`super::input_paths`]).
fn read_paths(roots: &[&str]) -> Option<Vec<Vec<String>>> {
    let library: Vec<Module<'_>> = library().collect();
    let loaded = needed(roots, &library);
    super::input_paths::input_paths(
        roots
            .iter()
            .copied()
            .chain(loaded.into_iter().map(|index| library[index].source)),
    )
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
    // Printed straight from the Rego value: the same text as through a JSON value first (keys
    // sorted either way), without building that copy.
    Ok(Value::from(pretty_json(&value)?))
}

/// `numbers.range(a, b)`, as regorus' built-in (integers from `a` to `b`, either way), refused
/// past [`MAX_RANGE`] elements.
fn range(args: Vec<Value>) -> anyhow::Result<Value> {
    let [from, to] = args.as_slice() else {
        anyhow::bail!("numbers.range takes 2 arguments");
    };
    let (Some(from), Some(to)) = (integer(from)?, integer(to)?) else {
        return Ok(Value::Undefined);
    };
    stepped("numbers.range", from, to, 1)
}

/// `numbers.range_step(a, b, step)`, as regorus' built-in, refused past [`MAX_RANGE`] elements.
fn range_step(args: Vec<Value>) -> anyhow::Result<Value> {
    let [from, to, step] = args.as_slice() else {
        anyhow::bail!("numbers.range_step takes 3 arguments");
    };
    let (Some(from), Some(to)) = (integer(from)?, integer(to)?) else {
        return Ok(Value::Undefined);
    };
    match integer(step)? {
        Some(step) if step > 0 => stepped("numbers.range_step", from, to, step),
        _ => anyhow::bail!("numbers.range_step: step must be a positive integer"),
    }
}

/// A number argument as an integer; `None` when it is a number but not an integer.
fn integer(value: &Value) -> anyhow::Result<Option<i64>> {
    let Value::Number(number) = value else {
        anyhow::bail!("numbers.range: arguments must be numbers");
    };
    if !number.is_integer() {
        return Ok(None);
    }
    Ok(Some(value.as_i64()?))
}

/// The integers from `from` towards `to` by `step`, `to` included when the step reaches it.
fn stepped(name: &str, from: i64, to: i64, step: i64) -> anyhow::Result<Value> {
    let span = from.abs_diff(to);
    let count = span / step.unsigned_abs() + 1;
    if count > MAX_RANGE {
        anyhow::bail!("{name} would make {count} numbers; Hooker allows {MAX_RANGE} per call");
    }
    let step = if to >= from { step } else { -step };
    let values = (0..count as i64)
        .map(|k| Value::from(from + k * step))
        .collect::<Vec<_>>();
    Ok(Value::from(values))
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

/// Adds a module as Rego v1, else as Rego v0, each with its reads through import aliases made
/// lazy ([`lazy_imports`](super::lazy_imports)) when that text loads, else as written; errors are
/// those of the text its author wrote.
fn add_module_either(
    engine: &mut Engine,
    path: &str,
    v1: &str,
    v0: &str,
) -> Result<String, String> {
    let mut add = |v0_syntax: bool, text: &str| {
        engine.set_rego_v0(v0_syntax);
        let lazy = super::lazy_imports::rewrite(text);
        let added = match lazy.map(|lazy| engine.add_policy(path.to_string(), lazy)) {
            Some(Ok(package)) => Ok(package),
            _ => engine.add_policy(path.to_string(), text.to_string()),
        };
        engine.set_rego_v0(false);
        added.map_err(|err| err.to_string())
    };
    let v1_error = match add(false, v1) {
        Ok(package) => return Ok(package),
        Err(err) => err,
    };
    match add(true, v0) {
        Ok(package) => Ok(package),
        // Report the error of the version the module most likely meant.
        Err(v0_error) if looks_like_v1(v1) => Err(format!(
            "{}\n(also not valid Rego v0: {})",
            v1_error.trim(),
            first_line(&v0_error)
        )),
        Err(v0_error) => Err(format!(
            "{}\n(also not valid Rego v1: {})",
            v0_error.trim(),
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

    /// `jsonformat` prints a Rego value as it printed through a JSON value first.
    #[test]
    fn jsonformat_prints_as_through_a_json_value() {
        let mut values: Vec<Value> = [
            r#"{"b": [1, 1.0, 0.1, 1e300, -0.0, 18446744073709551615, -9223372036854775808], "a": {"é": "\u0001\"\\", "z": null}}"#,
            r#"[true, false, "x", {}, []]"#,
            "12345678901234567890123",
        ]
        .iter()
        .map(|text| Value::from_json_str(text).unwrap())
        .collect();
        let mut set = Value::new_set();
        set.as_set_mut().unwrap().insert(Value::from("s"));
        values.push(set);
        values.push(Value::Undefined);
        for value in values {
            let through_json = serde_json::to_value(&value)
                .map_err(anyhow::Error::from)
                .and_then(|json| pretty_json(&json));
            let direct =
                jsonformat(vec![value.clone()]).map(|v| v.as_string().map(|s| s.to_string()));
            match (through_json, direct) {
                (Ok(a), Ok(Ok(b))) => assert_eq!(a, b, "{value:?}"),
                (a, b) => assert!(a.is_err() && b.is_err(), "{value:?}: {a:?} {b:?}"),
            }
        }
    }

    /// A Rego rule given only the input fields it reads decides as on the whole event, on every
    /// fixture and type-swapped variation; one reading the input otherwise gets no paths.
    #[test]
    fn a_rule_decides_the_same_on_the_fields_it_reads() {
        use crate::router::fields::Fields;
        let bodies = [
            "input.metadata.Properties.signatureID == \"TRC-1022\"",
            "input.metadata.Properties.Severity >= 2\nstartswith(input.podNamespace, \"default\")\nsome a in input.args\na.name == \"path\"\nendswith(a.value, \"-new\")",
            "input[\"eventName\"] == \"security_file_open\"",
            "some a in input.args\nsome v in a\nv == \"pathname\"",
            "count(input.args) >= 1\nlower(input.processName) != \"\"",
            "input.ArtifactName != \"\"\nsome r in input.Results\ncount(r.Vulnerabilities) > 0",
            "input.output_fields[\"container.id\"] != \"\"",
            "is_object(input.metadata)\nnot input.metadata.Properties.Severity == 0",
        ];
        let events = crate::router::prefilter::tests::fixture_events();
        for body in bodies {
            let mut rule = rule(body);
            let paths = rule
                .rego_paths()
                .unwrap_or_else(|| panic!("{body}"))
                .to_vec();
            let fields = Fields::from_paths(paths.iter().map(Vec::as_slice));
            let mut matched = 0;
            for event in &events {
                let whole = rule.evaluate(&to_rego(event));
                assert_eq!(
                    whole,
                    rule.evaluate(&fields.to_rego(event)),
                    "{body}\n{event}"
                );
                matched += usize::from(whole == Ok(true));
            }
            assert!(matched > 0, "no fixture matches {body}");
        }
        for body in [
            "count(object.keys(input)) > 3",
            "data.hooker.lib.tracee.is_detection",
        ] {
            assert!(rule(body).rego_paths().is_none(), "{body}");
        }
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
    fn builtin_type_errors_are_undefined_as_in_opa_on_both_paths() {
        // Postee's Ignore-Image-Name.rego style: the value is an object, not a string.
        let event = json!({"image": {"name": "alpine"}});
        let mut ignore = rule(r#"not contains(input.image, "alpine")"#);
        assert_ne!(ignore.decide_natively(&event), Some(false));
        assert!(eval(&mut ignore, event.clone()));
        let mut take = rule(r#"contains(input.image, "alpine")"#);
        assert_ne!(take.decide_natively(&event), Some(true));
        assert!(!eval(&mut take, event));
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
    fn library_helpers_read_falco_alerts() {
        let dir = crate::fixtures::dir();
        let falco = |file: &str| -> serde_json::Value {
            let text = std::fs::read_to_string(dir.join("falco").join(file)).unwrap();
            serde_json::from_str(&text).unwrap()
        };
        let shell = falco("falco-0.39-terminal-shell-in-container.json");
        let shadow = falco("falco-0.39-read-sensitive-file-untrusted.json");
        let miner = falco("falcosidekick-drop-and-execute-new-binary.json");
        let audit = falco("falco-k8saudit-attach-exec-pod.json");
        let mut is_falco = rule("data.hooker.lib.falco.is_falco");
        for event in [&shell, &shadow, &miner, &audit] {
            assert!(eval(&mut is_falco, event.clone()), "{event}");
        }
        for family in ["tracee", "trivy", "postee"] {
            for entry in std::fs::read_dir(dir.join(family)).unwrap().flatten() {
                let text = std::fs::read_to_string(entry.path()).unwrap_or_default();
                if let Ok(event) = serde_json::from_str::<serde_json::Value>(&text) {
                    assert!(!eval(&mut is_falco, event), "{}", entry.path().display());
                }
            }
        }
        let mut warning_or_worse = rule(r#"data.hooker.lib.falco.priority_at_least("warning")"#);
        assert!(eval(&mut warning_or_worse, shadow.clone()));
        assert!(eval(&mut warning_or_worse, miner.clone()));
        assert!(!eval(&mut warning_or_worse, shell.clone()));
        assert!(!eval(
            &mut warning_or_worse,
            json!({"priority": "Sometimes"})
        ));
        let mut severity = rule("data.hooker.lib.falco.severity == 4");
        assert!(eval(&mut severity, miner.clone()));
        assert!(!eval(&mut severity, shadow.clone()));
        let mut tag = rule(r#"data.hooker.lib.falco.has_tag("mitre_execution")"#);
        assert!(eval(&mut tag, shell.clone()));
        assert!(!eval(&mut tag, miner.clone()));
        let mut pod = rule(
            r#"data.hooker.lib.falco.pod == "shop/checkout-7d9f8c6b5-x2k4p"
data.hooker.lib.falco.user != """#,
        );
        assert!(eval(&mut pod, shell.clone()));
        assert!(eval(&mut pod, audit));
        // Falco's null and "<NA>" for a field without a value are "".
        let mut no_pod = rule(r#"data.hooker.lib.falco.namespace == """#);
        assert!(eval(&mut no_pod, shadow));
        let mut container = rule(r#"data.hooker.lib.falco.container_id == """#);
        assert!(eval(
            &mut container,
            falco("falco-0.39-clear-log-activities-host.json")
        ));
        assert!(!eval(&mut container, shell));
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

    /// The value of `query`, or the error.
    fn query(engine: &mut Engine, query: &str) -> Result<Option<Value>, String> {
        let results = engine
            .eval_query(query.to_string(), false)
            .map_err(eval_error)?;
        Ok(results
            .result
            .into_iter()
            .next()
            .and_then(|r| r.expressions.into_iter().next())
            .map(|e| e.value))
    }

    #[test]
    fn numbers_range_is_the_builtin_below_its_bound_and_refused_past_it() {
        for expression in [
            "numbers.range(1, 5)",
            "numbers.range(5, 1)",
            "numbers.range(-2, 2)",
            "numbers.range(3, 3)",
            "numbers.range_step(1, 10, 3)",
            "numbers.range_step(10, 1, 3)",
            "numbers.range_step(0, 9, 3)",
        ] {
            let ours = query(&mut new_engine(&[]).unwrap(), expression);
            let builtin = query(&mut Engine::new(), expression);
            assert_eq!(ours, builtin, "{expression}");
        }
        // A bound that is not an integer: nothing (the built-in's lenient answer).
        assert_eq!(
            query(&mut new_engine(&[]).unwrap(), "numbers.range(1.5, 3)"),
            Ok(None)
        );
        assert!(
            query(&mut new_engine(&[]).unwrap(), "numbers.range_step(1, 5, 0)").is_err(),
            "a step of 0 is an error, as in OPA"
        );
        let mut engine = new_engine(&[]).unwrap();
        let largest = query(&mut engine, "count(numbers.range(1, 1000000))").unwrap();
        assert_eq!(largest, Some(Value::from(1_000_000i64)));
        let err = query(&mut engine, "count(numbers.range(1, 200000000))").unwrap_err();
        assert!(
            err.contains("numbers.range would make 200000000 numbers; Hooker allows 1000000"),
            "{err}"
        );
        let err = query(&mut engine, "numbers.range_step(0, 20000000, 2)").unwrap_err();
        assert!(err.contains("10000001 numbers"), "{err}");
    }

    #[test]
    fn a_runaway_rule_stops_at_its_time_budget() {
        // Ten billion iterations for an event with `go`: stopped at the default budget (2 s).
        let mut slow = rule(
            "input.go\ncount([1 | some a in numbers.range(1, 100000); some b in numbers.range(1, 100000)]) > 0",
        );
        let err = slow
            .evaluate(&Value::from(json!({"go": true})))
            .unwrap_err();
        assert!(err.contains("over its time budget"), "{err}");
        assert!(err.contains("HOOKER_REGO_TIMEOUT"), "{err}");
        // The same engine evaluates the next event afresh.
        assert!(!eval(&mut slow, json!({"go": false})));
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
