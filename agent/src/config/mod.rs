//! `cfg.yaml`: the Postee V2 schema (routes / templates / actions), loaded with every item located.
//!
//! Loading is pure: it reads one file and the environment (for `$SECRET` references) and touches
//! nothing else. Compiling Rego and building actions happens in `crate::pipeline`, which `run`,
//! `validate` and `test-route` share so that a config `validate` accepts is a config `run` accepts.

mod diagnostic;
mod raw;
mod secret;
pub mod settings;
pub mod units;

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use serde::de::DeserializeOwned;

pub use diagnostic::{ConfigError, Diagnostic, Diagnostics, by_line, closest, fields_of};
pub use raw::RawItem;
pub use secret::Secret;

/// The embedded default: Tracee detections to the forensic log and stdout, everything else to stdout.
pub const DEFAULT_CONFIG: &str = include_str!("default.yaml");

/// A loaded config: what the user wrote, typed, plus the warnings found while reading it.
#[derive(Debug, Clone)]
pub struct Config {
    pub source: Option<PathBuf>,
    pub name: Option<String>,
    /// `khulnasoft-server` (alias `aqua-server`): console URL used for links in templates.
    pub server_url: Option<String>,
    /// `max-db-size`: cap on the router's dedup/aggregation state, in bytes.
    pub max_db_size: Option<u64>,
    /// `db-verify-interval`: how often expired router state is purged.
    pub db_verify_interval: Duration,
    pub routes: Vec<RouteConfig>,
    pub templates: Vec<TemplateConfig>,
    pub actions: Vec<ActionConfig>,
    /// `rules`: carried for Postee compatibility; Postee's router never used it either.
    pub rules: Vec<serde_json::Value>,
    pub warnings: Vec<Diagnostic>,
    /// Problems found while reading; a config with any cannot run.
    pub errors: Vec<Diagnostic>,
}

/// One route: a Rego rule deciding which events it takes, a template and the actions to run.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct RouteConfig {
    pub name: String,
    #[serde(default)]
    pub input: Option<String>,
    #[serde(default, deserialize_with = "units::de_string_list")]
    pub input_files: Vec<String>,
    #[serde(default, deserialize_with = "units::de_string_list")]
    pub actions: Vec<String>,
    #[serde(default)]
    pub template: Option<String>,
    #[serde(default, deserialize_with = "units::de_lenient_bool")]
    pub serialize_actions: bool,
    /// `plugins:` with nothing under it (null) is no plugins, as in Postee.
    #[serde(default, deserialize_with = "units::de_null_default")]
    pub plugins: Plugins,
    #[serde(skip)]
    pub item: RawItem,
}

/// Route plugins: dedup by event properties and aggregation by count or time.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct Plugins {
    #[serde(default)]
    pub aggregate_message_number: Option<u32>,
    #[serde(default, deserialize_with = "units::de_duration")]
    pub aggregate_message_timeout: Option<Duration>,
    #[serde(default, deserialize_with = "units::de_string_list")]
    pub unique_message_props: Vec<String>,
    #[serde(default, deserialize_with = "units::de_duration")]
    pub unique_message_timeout: Option<Duration>,
    /// Postee's computed fields; accepted and ignored.
    #[serde(default, rename = "aggregate-timeout-seconds")]
    pub _aggregate_timeout_seconds: Option<serde_json::Value>,
    #[serde(default, rename = "unique-message-timeout-seconds")]
    pub _unique_message_timeout_seconds: Option<serde_json::Value>,
}

/// Where a template's Rego comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TemplateSource {
    /// A built-in package (`hooker.tracee.text`, or Postee's `postee.*` names) or one from the
    /// templates directory.
    RegoPackage(String),
    /// An inline Rego module.
    Body(String),
    /// A Rego module fetched once at load.
    Url(String),
    /// Postee's Go renderers for Aqua scans (`html`, `slack`, `jira`).
    LegacyScanRenderer(String),
    /// None of the above set (Postee's stock `custom-email` has `url:` empty): Postee skips
    /// such a template; it is an error only when a route uses it.
    Missing,
}

#[derive(Debug, Clone)]
pub struct TemplateConfig {
    pub name: String,
    pub source: TemplateSource,
    pub item: RawItem,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "kebab-case")]
struct TemplateKeys {
    name: String,
    #[serde(default)]
    rego_package: Option<String>,
    #[serde(default)]
    body: Option<String>,
    #[serde(default)]
    url: Option<String>,
    #[serde(default)]
    legacy_scan_renderer: Option<String>,
}

/// One action block: the common keys, plus the type's own keys left for the action to read.
#[derive(Debug, Clone)]
pub struct ActionConfig {
    pub name: String,
    /// Lower-cased `type`.
    pub kind: String,
    pub enable: bool,
    pub runs_on: Option<String>,
    /// Retry, concurrency and circuit-breaker keys, common to every action.
    pub policy: crate::outbox::DeliveryPolicy,
    pub item: RawItem,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "kebab-case")]
struct ActionKeys {
    name: String,
    #[serde(rename = "type")]
    kind: String,
    #[serde(default, deserialize_with = "units::de_lenient_bool")]
    enable: bool,
    #[serde(default)]
    runs_on: Option<String>,
}

const ACTION_COMMON_KEYS: &[&str] = &["name", "type", "enable", "runs-on"];

impl ActionConfig {
    pub fn place(&self) -> String {
        format!("action \"{}\"", self.name)
    }

    /// A diagnostic about one key of this action, located at that key's line.
    pub fn error_at(&self, key: &str, message: impl Into<String>) -> Diagnostic {
        Diagnostic::new(self.place(), message.into())
            .key(key)
            .line(self.item.line_of(key))
    }

    /// Reads the type's own keys into `T`; unknown keys become warnings, not errors.
    pub fn settings<T: DeserializeOwned>(&self) -> Result<(T, Vec<Diagnostic>), Diagnostic> {
        let mut object = self.item.to_object();
        for key in ACTION_COMMON_KEYS
            .iter()
            .chain(crate::outbox::retry::POLICY_KEYS)
        {
            object.remove(*key);
        }
        let common = ACTION_COMMON_KEYS
            .iter()
            .chain(crate::outbox::retry::POLICY_KEYS)
            .copied();
        let known: Vec<&str> = fields_of::<T>().iter().copied().chain(common).collect();
        parse_object(&self.item, &self.place(), object, &known, &[])
    }
}

impl Config {
    /// Reads and parses a config file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Config::parse_all(&text, Some(path))
    }

    /// Parses config text; `source` is only used in messages. Any error fails the load.
    pub fn parse(text: &str, source: Option<&Path>) -> Result<Config, ConfigError> {
        let config = Config::parse_all(text, source)?;
        if config.errors.is_empty() {
            return Ok(config);
        }
        let diagnostics = Diagnostics {
            errors: config.errors,
            warnings: config.warnings,
        };
        Err(ConfigError::Invalid { diagnostics })
    }

    /// Parses as much as it can: only unreadable YAML fails; every other problem is in `errors`,
    /// so `validate` can report the config's problems and the actions' problems in one pass.
    pub fn parse_all(text: &str, source: Option<&Path>) -> Result<Config, ConfigError> {
        let doc = raw::RawDoc::parse(text).map_err(|message| ConfigError::Yaml {
            path: source.map(Path::to_path_buf),
            message,
        })?;
        let mut diags = Diagnostics::default();
        let mut config = Config::from_raw(doc, source, &mut diags);
        let diags = diags.with_file(source);
        config.errors = diags.errors;
        config.warnings = diags.warnings;
        Ok(config)
    }

    fn from_raw(doc: raw::RawDoc, source: Option<&Path>, diags: &mut Diagnostics) -> Config {
        let top = "top level";
        let string_at = |key: &str, diags: &mut Diagnostics| -> Option<String> {
            let (value, line) = doc.top(key)?;
            match value {
                serde_json::Value::String(s) => Some(s.clone()),
                serde_json::Value::Null => None,
                other => {
                    diags.error(
                        Diagnostic::new(top, format!("expected a string, got {other}"))
                            .key(key)
                            .line(Some(line)),
                    );
                    None
                }
            }
        };
        let name = string_at("name", diags);
        let server_url =
            string_at("khulnasoft-server", diags).or_else(|| string_at("aqua-server", diags));
        let max_db_size = doc.top("max-db-size").and_then(|(value, line)| {
            units::de_byte_size(value.clone())
                .map_err(|err| {
                    diags.error(
                        Diagnostic::new(top, err.to_string())
                            .key("max-db-size")
                            .line(Some(line)),
                    )
                })
                .ok()
                .flatten()
        });
        let db_verify_interval = doc
            .top("db-verify-interval")
            .and_then(|(value, line)| {
                let interval = match value {
                    // Postee's unit is hours.
                    serde_json::Value::Number(n) => match n.as_u64() {
                        Some(hours) => {
                            units::parse_duration(&format!("{}h", hours.max(1))).map(Some)
                        }
                        None => Err(format!("`{n}` is not a whole number of hours")),
                    },
                    other => units::de_duration(other.clone()).map_err(|err| err.to_string()),
                };
                interval
                    .map_err(|err| {
                        diags.error(
                            Diagnostic::new(top, err)
                                .key("db-verify-interval")
                                .line(Some(line)),
                        )
                    })
                    .ok()
                    .flatten()
            })
            // Zero is unset, as `"0"` is: the purge ticks at this period, which must not be zero.
            .filter(|interval| !interval.is_zero())
            .unwrap_or(Duration::from_secs(3600));
        let rules = match doc.top("rules") {
            Some((serde_json::Value::Array(items), _)) => items.clone(),
            _ => Vec::new(),
        };
        for (key, _, line) in &doc.top {
            if !KNOWN_TOP_KEYS.contains(&key.as_str()) {
                let hint = diagnostic::suggest_key(key, KNOWN_TOP_KEYS.iter().copied());
                diags.warn(
                    Diagnostic::new(top, format!("unknown key, ignored{hint}"))
                        .key(key)
                        .line(Some(*line)),
                );
            }
        }

        let routes = parse_list(&doc.routes, "route", diags, |item, place| {
            let nested = [("plugins", fields_of::<Plugins>())];
            let (mut route, warnings) = parse_object::<RouteConfig>(
                item,
                place,
                item.to_object(),
                fields_of::<RouteConfig>(),
                &nested,
            )?;
            route.item = item.clone();
            Ok((route, warnings))
        });
        let templates = parse_list(&doc.templates, "template", diags, parse_template);
        let actions = parse_list(&doc.actions, "action", diags, |item, place| {
            // An action indented under another action's key reads as that key's value: say so
            // rather than let it vanish.
            if let Some((key, _, line)) = item.entries.iter().find(|(_, value, _)| {
                value
                    .as_object()
                    .is_some_and(|m| m.contains_key("name") && m.contains_key("type"))
            }) {
                return Err(Diagnostic::new(
                    place,
                    "holds a mapping with `name` and `type`: an action indented under this key? \
                     Each action must be its own `- name: ...` item under `actions`",
                )
                .key(key)
                .line(Some(*line)));
            }
            let mut object = serde_json::Map::new();
            for key in ACTION_COMMON_KEYS {
                if let Some(value) = item.get(key) {
                    object.insert((*key).to_string(), value.clone());
                }
            }
            let (keys, _) = parse_object::<ActionKeys>(item, place, object, &[], &[])?;
            let mut policy_keys = serde_json::Map::new();
            for key in crate::outbox::retry::POLICY_KEYS {
                if let Some(value) = item.get(key) {
                    policy_keys.insert((*key).to_string(), value.clone());
                }
            }
            let (mut policy, _) =
                parse_object::<crate::outbox::DeliveryPolicy>(item, place, policy_keys, &[], &[])?;
            if item.get("max-concurrency").is_none() && keys.kind.eq_ignore_ascii_case("log") {
                policy.max_concurrency = crate::outbox::retry::LOCAL_CONCURRENCY;
            }
            Ok((
                ActionConfig {
                    name: keys.name,
                    kind: keys.kind.to_ascii_lowercase(),
                    enable: keys.enable,
                    runs_on: keys.runs_on.filter(|r| !r.is_empty()),
                    policy,
                    item: item.clone(),
                },
                Vec::new(),
            ))
        });

        check_unique(
            routes.iter().map(|r| (r.name.as_str(), r.item.line)),
            "route",
            diags,
        );
        check_unique(
            templates.iter().map(|t| (t.name.as_str(), t.item.line)),
            "template",
            diags,
        );
        check_unique(
            actions.iter().map(|a| (a.name.as_str(), a.item.line)),
            "action",
            diags,
        );
        check_references(&routes, &templates, &actions, diags);

        Config {
            source: source.map(Path::to_path_buf),
            name,
            server_url,
            max_db_size,
            db_verify_interval,
            routes,
            templates,
            actions,
            rules,
            warnings: Vec::new(),
            errors: Vec::new(),
        }
    }

    pub fn route(&self, name: &str) -> Option<&RouteConfig> {
        self.routes.iter().find(|r| r.name == name)
    }
}

const KNOWN_TOP_KEYS: &[&str] = &[
    "name",
    "khulnasoft-server",
    "aqua-server",
    "max-db-size",
    "db-verify-interval",
    "delete-old-data",
    "routes",
    "templates",
    "actions",
    "rules",
];

fn parse_list<T>(
    items: &[RawItem],
    what: &str,
    diags: &mut Diagnostics,
    parse: impl Fn(&RawItem, &str) -> Result<(T, Vec<Diagnostic>), Diagnostic>,
) -> Vec<T> {
    let mut out = Vec::new();
    for (index, item) in items.iter().enumerate() {
        let place = match item.get("name") {
            Some(serde_json::Value::String(name)) => format!("{what} \"{name}\""),
            _ => format!("{what} #{}", index + 1),
        };
        match parse(item, &place) {
            Ok((value, warnings)) => {
                out.push(value);
                for w in warnings {
                    diags.warn(w);
                }
            }
            Err(err) => diags.error(err),
        }
    }
    out
}

/// Deserializes one item, reporting unknown keys as warnings (with the `known` key, or the key
/// of a `nested` mapping, each is likely a misspelling of) and errors with the key's line.
fn parse_object<T: DeserializeOwned>(
    item: &RawItem,
    place: &str,
    object: serde_json::Map<String, serde_json::Value>,
    known: &[&str],
    nested: &[(&str, &[&str])],
) -> Result<(T, Vec<Diagnostic>), Diagnostic> {
    let value = serde_json::Value::Object(object);
    let mut unknown = Vec::new();
    let mut on_unknown = |path: serde_ignored::Path<'_>| unknown.push(path.to_string());
    let deserializer = serde_ignored::Deserializer::new(&value, &mut on_unknown);
    let parsed: Result<T, _> = serde_path_to_error::deserialize(deserializer);
    let parsed = parsed.map_err(|err| {
        let path = err.path().to_string();
        let first = path
            .split(['.', '['])
            .next()
            .unwrap_or_default()
            .to_string();
        let inner = err.into_inner().to_string();
        let message = match inner.strip_prefix("missing field ") {
            Some(field) => format!("required key {} is missing", field.replace('`', "\"")),
            None => inner,
        };
        let diagnostic = Diagnostic::new(place, message).line(item.line_of(&first).or(item.line));
        if path == "." || path.is_empty() {
            diagnostic
        } else {
            diagnostic.key(path)
        }
    })?;
    let warnings = unknown
        .into_iter()
        .map(|path| {
            let first = path
                .split(['.', '['])
                .next()
                .unwrap_or_default()
                .to_string();
            // serde_ignored writes `?` for the Option around a nested mapping.
            let path = path.replace(".?.", ".");
            let hint = match path.split_once('.') {
                None => diagnostic::suggest_key(&path, known.iter().copied()),
                Some((parent, rest)) => nested
                    .iter()
                    .find(|(name, _)| *name == parent)
                    .map(|(_, keys)| {
                        let key = rest.rsplit('.').next().unwrap_or(rest);
                        diagnostic::suggest_key(key, keys.iter().copied())
                    })
                    .unwrap_or_default(),
            };
            Diagnostic::new(place, format!("unknown key, ignored{hint}"))
                .key(path)
                .line(item.line_of(&first))
        })
        .collect();
    Ok((parsed, warnings))
}

fn parse_template(
    item: &RawItem,
    place: &str,
) -> Result<(TemplateConfig, Vec<Diagnostic>), Diagnostic> {
    let (keys, mut warnings) = parse_object::<TemplateKeys>(
        item,
        place,
        item.to_object(),
        fields_of::<TemplateKeys>(),
        &[],
    )?;
    // Postee's precedence: legacy, rego-package, url, body; the last one set wins.
    let mut candidates = Vec::new();
    if let Some(v) = keys.legacy_scan_renderer.filter(|v| !v.is_empty()) {
        candidates.push((
            "legacy-scan-renderer",
            TemplateSource::LegacyScanRenderer(v),
        ));
    }
    if let Some(v) = keys.rego_package.filter(|v| !v.is_empty()) {
        candidates.push(("rego-package", TemplateSource::RegoPackage(v)));
    }
    if let Some(v) = keys.url.filter(|v| !v.is_empty()) {
        candidates.push(("url", TemplateSource::Url(v)));
    }
    if let Some(v) = keys.body.filter(|v| !v.trim().is_empty()) {
        candidates.push(("body", TemplateSource::Body(v)));
    }
    let Some((chosen, source)) = candidates.pop() else {
        return Ok((
            TemplateConfig {
                name: keys.name,
                source: TemplateSource::Missing,
                item: item.clone(),
            },
            warnings,
        ));
    };
    for (ignored, _) in candidates {
        warnings.push(
            Diagnostic::new(
                place,
                format!("`{ignored}` is ignored because `{chosen}` is also set (as in Postee)"),
            )
            .key(ignored)
            .line(item.line_of(ignored)),
        );
    }
    Ok((
        TemplateConfig {
            name: keys.name,
            source,
            item: item.clone(),
        },
        warnings,
    ))
}

fn check_unique<'a>(
    names: impl Iterator<Item = (&'a str, Option<u64>)>,
    what: &str,
    diags: &mut Diagnostics,
) {
    let mut seen = std::collections::HashMap::new();
    for (name, line) in names {
        if name.is_empty() {
            diags.error(
                Diagnostic::new(
                    format!("{what} with an empty name"),
                    "`name` must not be empty",
                )
                .line(line),
            );
        } else if let Some(first) = seen.insert(name.to_string(), line) {
            let first = first
                .map(|l| format!(" (first defined on line {l})"))
                .unwrap_or_default();
            diags.error(
                Diagnostic::new(
                    format!("{what} \"{name}\""),
                    format!("duplicate name{first}"),
                )
                .line(line),
            );
        }
    }
}

fn check_references(
    routes: &[RouteConfig],
    templates: &[TemplateConfig],
    actions: &[ActionConfig],
    diags: &mut Diagnostics,
) {
    for route in routes {
        let place = format!("route \"{}\"", route.name);
        match &route.template {
            None => {
                // A misspelled `template:` is also warned about; say so here, where it bites.
                let misspelled = route
                    .item
                    .entries
                    .iter()
                    .find(|(key, _, _)| closest(key, ["template"]).is_some())
                    .map(|(key, _, line)| format!(" (`{key}` on line {line} is not it)"))
                    .unwrap_or_default();
                diags.error(
                    Diagnostic::new(
                        &place,
                        format!("required key \"template\" is missing{misspelled}"),
                    )
                    .line(route.item.line),
                )
            }
            Some(name) if !templates.iter().any(|t| &t.name == name) => diags.error(
                Diagnostic::new(
                    &place,
                    format!(
                        "unknown template \"{name}\"{} (defined: {})",
                        suggest_name(name, templates.iter().map(|t| t.name.as_str())),
                        list(templates.iter().map(|t| &t.name))
                    ),
                )
                .key("template")
                .line(route.item.line_of("template")),
            ),
            Some(_) => {}
        }
        if route.actions.is_empty() {
            diags.warn(
                Diagnostic::new(
                    &place,
                    "route has no actions; matching events will not be delivered anywhere",
                )
                .key("actions")
                .line(route.item.line_of("actions")),
            );
        }
        for name in &route.actions {
            match actions.iter().find(|a| &a.name == name) {
                None => diags.error(
                    Diagnostic::new(
                        &place,
                        format!(
                            "unknown action \"{name}\"{} (defined: {})",
                            suggest_name(name, actions.iter().map(|a| a.name.as_str())),
                            list(actions.iter().map(|a| &a.name))
                        ),
                    )
                    .key("actions")
                    .line(route.item.line_of("actions")),
                ),
                Some(action) if !action.enable => diags.warn(
                    Diagnostic::new(
                        &place,
                        format!(
                            "action \"{name}\" is disabled (`enable: false`); the route skips it"
                        ),
                    )
                    .key("actions")
                    .line(route.item.line_of("actions")),
                ),
                Some(_) => {}
            }
        }
        if let (Some(n), Some(_)) = (
            route.plugins.aggregate_message_number,
            route.plugins.aggregate_message_timeout,
        ) && n == 0
        {
            diags.error(
                Diagnostic::new(&place, "`aggregate-message-number` must be at least 1")
                    .key("plugins.aggregate-message-number")
                    .line(route.item.line_of("plugins")),
            );
        }
    }
}

/// `; did you mean "x"?` for a name that is likely a misspelling of a defined one, or nothing.
fn suggest_name<'a>(name: &str, defined: impl IntoIterator<Item = &'a str>) -> String {
    closest(name, defined)
        .map(|defined| format!("; did you mean \"{defined}\"?"))
        .unwrap_or_default()
}

fn list<'a>(names: impl Iterator<Item = &'a String>) -> String {
    let names: Vec<_> = names.map(|n| format!("\"{n}\"")).collect();
    if names.is_empty() {
        "none".into()
    } else {
        names.join(", ")
    }
}

#[cfg(test)]
mod tests;
