//! `hooker validate` and `hooker test-route`: the config checked and tried, nothing sent.

use std::path::Path;
use std::sync::Arc;

use serde_json::json;

use crate::action::BuildContext;
use crate::config::ConfigError;
use crate::event::parse_payloads;
use crate::pipeline::{Paths, Pipeline};
use crate::run::load_config;

/// Loads and compiles the config. Prints a summary to stdout and problems to stderr.
/// Returns false when the config has errors.
pub async fn validate(config: Option<&Path>, paths: &Paths) -> anyhow::Result<bool> {
    let pipeline = match compile(config, paths).await? {
        Ok(pipeline) => pipeline,
        Err(report) => {
            eprint!("{report}");
            return Ok(false);
        }
    };
    for warning in crate::config::by_line(&pipeline.warnings) {
        eprintln!("warning: {warning}");
    }
    crate::output::line(format_args!(
        "OK: {} routes, {} templates, {} enabled actions ({} warnings)",
        pipeline.routes.len(),
        pipeline.templates.len(),
        pipeline.actions.len(),
        pipeline.warnings.len()
    ))?;
    Ok(true)
}

/// Compiles a config; `Err(report)` is the text of every problem found.
async fn compile(config: Option<&Path>, paths: &Paths) -> anyhow::Result<Result<Pipeline, String>> {
    let config = match load_config(config) {
        Ok(config) => config,
        Err(ConfigError::Invalid { diagnostics }) => return Ok(Err(diagnostics.to_string())),
        Err(other) => return Ok(Err(format!("error: {other}\n"))),
    };
    let cx = BuildContext::new("test-route".into())?;
    Ok(Pipeline::build(&config, paths, &cx)
        .await
        .map_err(|d| d.to_string()))
}

/// Dry run: which routes match each event in `event_file`, and what each action would send.
pub async fn test_route(
    config: Option<&Path>,
    paths: &Paths,
    event_file: &Path,
    only: Option<&str>,
) -> anyhow::Result<bool> {
    let pipeline = match compile(config, paths).await? {
        Ok(pipeline) => pipeline,
        Err(report) => {
            eprint!("{report}");
            return Ok(false);
        }
    };
    if let Some(name) = only
        && !pipeline.routes.iter().any(|r| &*r.name == name)
    {
        eprintln!("error: no route named \"{name}\"");
        return Ok(false);
    }
    let bytes = std::fs::read(event_file)
        .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", event_file.display()))?;
    let events = match parse_payloads(&bytes) {
        Ok(events) => events,
        Err(err) => {
            eprintln!("error: {}: {err}", event_file.display());
            return Ok(false);
        }
    };
    let mut report = Vec::new();
    for (index, event) in events.into_iter().enumerate() {
        let event = Arc::new(event);
        let input = regorus::Value::from((*event).clone());
        let mut routes = Vec::new();
        for route in pipeline
            .routes
            .iter()
            .filter(|r| only.is_none_or(|o| o == &*r.name))
        {
            let mut rule = route.rule.clone();
            let matched = match rule.evaluate(&input) {
                Ok(matched) => matched,
                Err(error) => {
                    routes.push(json!({ "route": &*route.name, "matched": false, "error": error }));
                    continue;
                }
            };
            if !matched {
                routes.push(json!({ "route": &*route.name, "matched": false }));
                continue;
            }
            let Some(template) = pipeline.templates.get(&route.template) else {
                continue;
            };
            let mut template = template.clone();
            let rendered = template.render(
                || pipeline.template_input_json(&event, "test-route"),
                &route.name,
                "test",
                event.clone(),
            );
            let entry = match rendered {
                Ok(message) => {
                    let deliveries: Vec<_> = route
                        .actions
                        .iter()
                        .filter_map(|name| pipeline.actions.get(name))
                        .map(|a| json!({ "action": a.name(), "type": a.kind(), "would_send": a.preview(&message) }))
                        .collect();
                    json!({
                        "route": &*route.name,
                        "matched": true,
                        "template": route.template,
                        "title": message.title,
                        "url": message.url,
                        "fields": message.fields,
                        "aggregated": route.aggregates(),
                        "deduplicated_by": route.unique_props,
                        "deliveries": deliveries,
                    })
                }
                Err(error) => {
                    json!({ "route": &*route.name, "matched": true, "template": route.template, "error": error })
                }
            };
            routes.push(entry);
        }
        report.push(json!({ "event": index, "routes": routes }));
    }
    crate::output::line(serde_json::to_string_pretty(&report)?)?;
    Ok(true)
}

/// `hooker log verify`: checks the forensic log's hash chain in `target` (a file, a directory
/// of segments, or `s3://bucket/prefix` of shipped segments, reached with `store`'s endpoint,
/// region and addressing) and prints where it breaks; false when it does. `last` is a hash the
/// log must still hold (the last one a shipped copy or an earlier check printed).
pub async fn log_verify(
    target: &str,
    last: Option<&str>,
    store: &crate::forensic::ship::StoreSettings,
) -> anyhow::Result<bool> {
    let anchor = match last {
        Some(hex) => Some(
            crate::forensic::chain::parse_hex(hex.trim().as_bytes())
                .ok_or_else(|| anyhow::anyhow!("--last must be 64 lowercase hex digits"))?,
        ),
        None => None,
    };
    let (segments, altered) = match target.strip_prefix("s3://") {
        Some(location) => {
            let (bucket, prefix) = location.split_once('/').unwrap_or((location, ""));
            let store = crate::forensic::ship::store(&crate::forensic::ship::StoreSettings {
                bucket: bucket.to_string(),
                ..store.clone()
            })?;
            crate::forensic::ship::download(store.as_ref(), prefix).await?
        }
        None => {
            let path = Path::new(target);
            let segments = crate::forensic::verify::read_local(path)
                .map_err(|err| anyhow::anyhow!("cannot read {}: {err}", path.display()))?;
            (segments, Vec::new())
        }
    };
    if segments.is_empty() && altered.is_empty() {
        anyhow::bail!("{target} holds no log segments");
    }
    let mut verified = crate::forensic::verify::verify(segments, anchor);
    let altered = altered
        .into_iter()
        .map(|(segment, detail)| crate::forensic::verify::Finding {
            segment,
            line: 0,
            what: crate::forensic::verify::Break::ObjectAltered,
            detail,
        });
    verified.findings.splice(0..0, altered);
    crate::output::line(&verified)?;
    Ok(verified.intact())
}
