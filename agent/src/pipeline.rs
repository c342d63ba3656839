//! A config, compiled: route rules, templates and actions, ready to run. `run`, `validate` and
//! `test-route` all build through here, so what `validate` accepts is exactly what `run` runs.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use crate::action::{self, Action, BuildContext};
use crate::config::{Config, Diagnostic, Diagnostics, TemplateSource};
use crate::router::prefilter::RouteIndex;
use crate::router::rego::RouteRule;
use crate::router::template::{Catalog, Template, TemplateText};

/// How long a `url:` template may take to fetch at load.
const TEMPLATE_FETCH_TIMEOUT: Duration = Duration::from_secs(10);

/// Where to find Rego files referenced by the config.
#[derive(Debug, Clone, Default)]
pub struct Paths {
    pub rego_filters: PathBuf,
    pub rego_templates: Option<PathBuf>,
}

/// One compiled route.
#[derive(Clone)]
pub struct Route {
    pub name: Arc<str>,
    pub rule: RouteRule,
    pub template: String,
    /// Names of the route's enabled actions, in config order.
    pub actions: Arc<[String]>,
    pub serialize: bool,
    pub unique_props: Vec<String>,
    pub unique_timeout: Option<Duration>,
    pub aggregate_number: Option<u32>,
    pub aggregate_timeout: Option<Duration>,
    /// Actions that take each message as it comes even though the route aggregates: the relayed
    /// ones in cluster mode, which the responder aggregates once for the cluster.
    pub direct_actions: Arc<[String]>,
}

impl Route {
    pub fn aggregates(&self) -> bool {
        self.aggregate_number.is_some() || self.aggregate_timeout.is_some()
    }
}

/// Everything compiled from one config.
pub struct Pipeline {
    pub routes: Vec<Route>,
    pub templates: BTreeMap<String, Template>,
    pub actions: BTreeMap<String, Arc<dyn Action>>,
    /// Each action's retry, concurrency and circuit-breaker policy.
    pub policies: BTreeMap<String, crate::outbox::DeliveryPolicy>,
    pub server_url: Option<String>,
    pub max_db_size: Option<u64>,
    pub db_verify_interval: Duration,
    pub warnings: Vec<Diagnostic>,
    /// Routes by the literal values they require: an event visits only its candidates.
    pub index: RouteIndex,
}

impl Pipeline {
    /// Compiles `config`; every problem found is reported, not just the first.
    pub async fn build(
        config: &Config,
        paths: &Paths,
        cx: &BuildContext,
    ) -> Result<Pipeline, Diagnostics> {
        let mut diags = Diagnostics::default();
        for warning in &config.warnings {
            diags.warn(warning.clone());
        }
        for error in &config.errors {
            diags.error(error.clone());
        }

        // What a route uses must build; anything else that cannot is a warning, as Postee
        // skips it. A route with no enabled action never renders its template. When some item
        // could not be read, what the routes use is unknown: everything counts as used.
        let all_used = !config.errors.is_empty();
        let used_actions: std::collections::HashSet<&str> = config
            .routes
            .iter()
            .flat_map(|r| r.actions.iter().map(String::as_str))
            .collect();
        let enabled = |name: &str| config.actions.iter().any(|a| a.name == name && a.enable);
        let used: std::collections::HashSet<&str> = config
            .routes
            .iter()
            .filter(|r| r.actions.iter().any(|a| enabled(a)))
            .filter_map(|r| r.template.as_deref())
            .collect();

        let mut actions = BTreeMap::new();
        let mut policies = BTreeMap::new();
        for block in &config.actions {
            if !block.enable {
                continue;
            }
            policies.insert(block.name.clone(), block.policy.clone());
            match crate::cluster::declared_runs_on(block) {
                Err(crate::cluster::RunsOnProblem::NodeLocal(error)) => diags.error(error),
                Err(crate::cluster::RunsOnProblem::Unknown(warning)) => diags.warn(warning),
                Ok(_) => {}
            }
            match action::build(block, cx) {
                Ok(built) => {
                    for warning in built.warnings {
                        diags.warn(warning);
                    }
                    actions.insert(block.name.clone(), built.action);
                }
                Err(error) if all_used || used_actions.contains(block.name.as_str()) => {
                    diags.error(error)
                }
                Err(error) => diags.warn(Diagnostic {
                    message: format!("{} (no route uses this action)", error.message),
                    ..error
                }),
            }
        }

        let catalog = match Catalog::load(paths.rego_templates.as_deref()) {
            Ok(catalog) => catalog,
            Err(errors) => {
                for error in errors {
                    diags.error(Diagnostic::new("templates directory", error));
                }
                Catalog::default()
            }
        };
        let mut templates = BTreeMap::new();
        for block in &config.templates {
            let place = format!("template \"{}\"", block.name);
            let (key, compiled) = match &block.source {
                TemplateSource::RegoPackage(package) => (
                    "rego-package",
                    Template::compile(&block.name, TemplateText::Package(package), &catalog),
                ),
                TemplateSource::Body(body) => (
                    "body",
                    Template::compile(&block.name, TemplateText::Module(body), &catalog),
                ),
                TemplateSource::Url(url) => {
                    let compiled = match fetch_template(url).await {
                        Ok(text) => {
                            Template::compile(&block.name, TemplateText::Module(&text), &catalog)
                        }
                        Err(err) => Err(err),
                    };
                    ("url", compiled)
                }
                TemplateSource::Missing => {
                    let diagnostic = Diagnostic::new(
                        &place,
                        "needs one of `rego-package`, `body`, `url` or `legacy-scan-renderer`",
                    )
                    .line(block.item.line);
                    if all_used || used.contains(block.name.as_str()) {
                        diags.error(diagnostic)
                    } else {
                        diags.warn(Diagnostic {
                            message: format!(
                                "{}; skipped, as Postee does (no route uses this template)",
                                diagnostic.message
                            ),
                            ..diagnostic
                        })
                    }
                    continue;
                }
                TemplateSource::LegacyScanRenderer(kind) => {
                    let diagnostic = Diagnostic::new(
                        &place,
                        format!("legacy-scan-renderer \"{kind}\" (Postee's Go renderer for Aqua scans) is not supported; use a rego-package template"),
                    )
                    .key("legacy-scan-renderer")
                    .line(block.item.line_of("legacy-scan-renderer"));
                    if all_used || used.contains(block.name.as_str()) {
                        diags.error(diagnostic)
                    } else {
                        diags.warn(diagnostic)
                    }
                    continue;
                }
            };
            match compiled {
                Ok(template) => {
                    templates.insert(block.name.clone(), template);
                }
                Err(message) => {
                    let diagnostic = Diagnostic::new(&place, message)
                        .key(key)
                        .line(block.item.line_of(key));
                    if all_used || used.contains(block.name.as_str()) {
                        diags.error(diagnostic);
                    } else {
                        let message =
                            format!("{} (no route uses this template)", diagnostic.message);
                        diags.warn(Diagnostic {
                            message,
                            ..diagnostic
                        });
                    }
                }
            }
        }

        let mut routes = Vec::new();
        for block in &config.routes {
            let place = format!("route \"{}\"", block.name);
            let rule = match RouteRule::compile(
                &block.name,
                block.input.as_deref(),
                &block.input_files,
                &paths.rego_filters,
            ) {
                Ok(rule) => rule,
                Err(err) => {
                    diags.error(
                        Diagnostic::new(&place, err.to_string())
                            .key(err.key())
                            .line(block.item.line_of(err.key())),
                    );
                    continue;
                }
            };
            let route_actions: Vec<String> = block
                .actions
                .iter()
                .filter(|name| actions.contains_key(*name))
                .cloned()
                .collect();
            let template = block.template.clone().unwrap_or_default();
            let plugins = &block.plugins;
            // Postee aggregates only with the template's `aggregation_pkg`; without one it sends
            // each message as usual.
            let mut aggregates = true;
            if (plugins.aggregate_message_number.is_some()
                || plugins.aggregate_message_timeout.is_some())
                && templates.get(&template).is_some_and(|t| !t.aggregates())
            {
                aggregates = false;
                diags.warn(
                    Diagnostic::new(&place, format!("template \"{template}\" names no aggregation_pkg; messages are sent one by one, as in Postee"))
                        .key("plugins")
                        .line(block.item.line_of("plugins")),
                );
            }
            routes.push(Route {
                name: block.name.as_str().into(),
                rule,
                template,
                actions: route_actions.into(),
                serialize: block.serialize_actions,
                unique_props: plugins.unique_message_props.clone(),
                unique_timeout: plugins.unique_message_timeout,
                aggregate_number: plugins
                    .aggregate_message_number
                    .filter(|n| *n > 0 && aggregates),
                // Zero is unset, as `"0"` is (Postee: no timed flush); the aggregator ticks at
                // this period, which must not be zero.
                aggregate_timeout: plugins
                    .aggregate_message_timeout
                    .filter(|t| !t.is_zero() && aggregates),
                direct_actions: Arc::from([]),
            });
        }

        let diags = diags.with_file(config.source.as_deref());
        if diags.has_errors() {
            return Err(diags);
        }
        let index = RouteIndex::build(routes.iter().map(|r| r.rule.checks()));
        for route in &routes {
            tracing::debug!(route = %route.name, native = route.rule.is_native(), "Route rule compiled.");
        }
        Ok(Pipeline {
            index,
            routes,
            templates,
            actions,
            policies,
            server_url: config.server_url.clone(),
            max_db_size: config.max_db_size,
            db_verify_interval: config.db_verify_interval,
            warnings: diags.warnings,
        })
    }

    /// How many routes are decided without Rego (when their values have the expected types).
    pub fn native_routes(&self) -> usize {
        self.routes.iter().filter(|r| r.rule.is_native()).count()
    }

    /// The event as templates see it: Postee adds `input.postee.AquaServer`; Hooker adds `input.hooker`.
    /// Made from the event's Rego value (the one its routes were evaluated on, when they were):
    /// only the top-level object is copied (when the value is shared), the rest is shared.
    pub fn template_input(&self, mut input: regorus::Value, node: &str) -> regorus::Value {
        if let Ok(map) = input.as_object_mut() {
            for (key, value) in self.added_keys(node) {
                let key = regorus::Value::from(key);
                if !map.contains_key(&key) {
                    map.insert(key, regorus::Value::from(value));
                }
            }
        }
        input
    }

    /// The keys [`Pipeline::template_input`] adds to an event that has none of that name:
    /// `postee` (`{"AquaServer": <console URL>}`) and `hooker` (`{"server", "node"}`).
    pub fn added_keys(&self, node: &str) -> serde_json::Map<String, serde_json::Value> {
        let server = self.server_url.clone().unwrap_or_default();
        let console = if server.is_empty() {
            String::new()
        } else {
            format!("{}/#/images/", server.trim_end_matches('/'))
        };
        let mut keys = serde_json::Map::new();
        keys.insert(
            "postee".into(),
            serde_json::json!({ "AquaServer": console }),
        );
        keys.insert(
            "hooker".into(),
            serde_json::json!({ "server": server, "node": node }),
        );
        keys
    }

    /// [`Pipeline::template_input`] for an event not yet converted to Rego.
    pub fn template_input_json(&self, event: &serde_json::Value, node: &str) -> regorus::Value {
        self.template_input(crate::router::rego::to_rego(event), node)
    }
}

async fn fetch_template(url: &str) -> Result<String, String> {
    let client = action::http_client_builder(TEMPLATE_FETCH_TIMEOUT)
        .build()
        .map_err(|e| e.to_string())?;
    let response = client
        .get(url)
        .send()
        .await
        .map_err(|e| format!("cannot fetch template: {}", e.without_url()))?;
    let status = response.status();
    if status.as_u16() > 399 {
        return Err(format!("cannot fetch template: HTTP {}", status.as_u16()));
    }
    response
        .text()
        .await
        .map_err(|e| format!("cannot read template: {}", e.without_url()))
}
