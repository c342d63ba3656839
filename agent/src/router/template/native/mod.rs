//! Built-in templates rendered in Rust, without Rego: the `hooker.tracee.*` and `hooker.trivy.*`
//! cards. The Rego modules in `agent/templates/` stay the reference: a native built-in renders
//! exactly what its module renders (title, url, result, every `result_*`), which
//! `template::golden` checks on every fixture and golden input. An input the Rust code does not
//! copy exactly (a fractional number where the module prints one) renders through Rego:
//! [`Builtin::render`] answers `None`.
//!
//! A template is native only when its package is the unmodified built-in and the templates
//! directory overrides none of the helper libraries ([`Builtin::find`]).

mod render;
mod tracee;
mod trivy;

use serde_json::{Map, Value};

use render::Card;

/// A channel of the built-in card templates (`hooker.<family>.<channel>`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Channel {
    Text,
    Slack,
    Teams,
    Jira,
    Html,
    Email,
    PagerDuty,
    OpsGenie,
}

/// A built-in template with a native renderer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Builtin {
    Tracee(Channel),
    Trivy(Channel),
}

impl Channel {
    /// How many vulnerabilities the channel's built-in templates show.
    fn limit(self) -> usize {
        match self {
            Channel::Text | Channel::Jira => 50,
            Channel::Slack | Channel::PagerDuty | Channel::OpsGenie => 20,
            Channel::Teams => 30,
            Channel::Html | Channel::Email => 100,
        }
    }
}

/// `hooker.<family>.<channel>` and its module, for each family and channel of [`NATIVE`].
macro_rules! family {
    ($family:literal, $variant:ident) => {
        [
            family!(@one $family, $variant, "text", Text),
            family!(@one $family, $variant, "slack", Slack),
            family!(@one $family, $variant, "teams", Teams),
            family!(@one $family, $variant, "jira", Jira),
            family!(@one $family, $variant, "html", Html),
            family!(@one $family, $variant, "email", Email),
            family!(@one $family, $variant, "pagerduty", PagerDuty),
            family!(@one $family, $variant, "opsgenie", OpsGenie),
        ]
    };
    (@one $family:literal, $variant:ident, $channel:literal, $kind:ident) => {
        (
            concat!("hooker.", $family, ".", $channel),
            include_str!(concat!("../../../../templates/", $family, "-", $channel, ".rego")),
            Builtin::$variant(Channel::$kind),
        )
    };
}

const TRACEE: [(&str, &str, Builtin); 8] = family!("tracee", Tracee);
const TRIVY: [(&str, &str, Builtin); 8] = family!("trivy", Trivy);

/// Every natively rendered built-in: package, the module text it copies, renderer.
pub const NATIVE: &[[(&str, &str, Builtin); 8]] = &[TRACEE, TRIVY];

impl Builtin {
    /// The native renderer of `package` when `source` is its built-in module, unmodified, and
    /// `packages` (every package the catalog holds) overrides no helper library.
    pub fn find<'a>(
        package: &str,
        source: &str,
        mut packages: impl Iterator<Item = &'a str>,
    ) -> Option<Builtin> {
        let (_, _, builtin) = NATIVE
            .iter()
            .flatten()
            .find(|(name, text, _)| *name == package && *text == source)?;
        // The libraries are not catalog entries: one there is the templates directory's own.
        if packages.any(|p| p == "hooker.lib" || p.starts_with("hooker.lib.")) {
            return None;
        }
        Some(*builtin)
    }

    /// [`Builtin::render`] for an event kept as JSON text (a large one): a Trivy report is
    /// parsed into only what its card reads; any other event is parsed whole for this render.
    pub fn render_text(
        self,
        text: &str,
        node: &mut dyn FnMut() -> String,
    ) -> Option<Map<String, Value>> {
        let value = match self {
            Builtin::Trivy(_) => trivy::pruned(text).ok()?,
            Builtin::Tracee(_) => serde_json::from_str(text).ok()?,
        };
        self.render(&value, node)
    }

    /// Renders `event` as the template's rules would: `title`, `result` and the `result_*` keys.
    /// `node` gives `input.hooker.node`. `None`: render through Rego.
    pub fn render(
        self,
        event: &Value,
        node: &mut dyn FnMut() -> String,
    ) -> Option<Map<String, Value>> {
        let out = match self {
            Builtin::Tracee(channel) => tracee::card(event, node).and_then(|(card, facts)| {
                rules(
                    channel,
                    &card,
                    facts.title,
                    facts.level,
                    facts.finding,
                    event,
                )
            }),
            Builtin::Trivy(channel) => trivy::card(event, channel.limit()).and_then(|card| {
                let title = card.title.clone();
                let finding = card.finding.clone();
                let level = card.severity;
                rules(channel, &card, title, level, finding, event)
            }),
        };
        out.ok()
    }
}

/// `input.hooker.node` when it is a string, else "" (what `lib/tracee.rego`'s `node_name` reads).
pub fn node_of(input: Option<&regorus::Value>) -> String {
    input
        .and_then(|input| {
            input["hooker"]["node"]
                .as_string()
                .ok()
                .map(|s| s.to_string())
        })
        .unwrap_or_default()
}

/// The template's rules: `title`, `url` (the card's), `result` for the channel, and `result_*`.
fn rules(
    channel: Channel,
    card: &Card,
    title: String,
    level: &str,
    finding: String,
    event: &Value,
) -> render::R<Map<String, Value>> {
    let mut out = Map::new();
    out.insert("title".into(), Value::String(title));
    if !card.url.is_empty() {
        out.insert("url".into(), card.url.clone().into());
    }
    out.insert("result".into(), result(channel, card));
    out.insert("result_severity".into(), level.into());
    out.insert("result_finding".into(), finding.clone().into());
    out.insert("result_dedup_key".into(), finding.into());
    if matches!(channel, Channel::PagerDuty | Channel::OpsGenie) {
        for (key, value) in [
            ("result_source", &card.source),
            ("result_component", &card.component),
            ("result_group", &card.group),
            ("result_class", &card.class),
        ] {
            if !value.is_empty() {
                out.insert(key.into(), value.clone().into());
            }
        }
    }
    if let Some(owners @ Value::Array(_)) = event.get("application_scope_owners") {
        out.insert("result_owners".into(), through_rego(owners)?);
    }
    Ok(out)
}

fn result(channel: Channel, card: &Card) -> Value {
    match channel {
        Channel::Text => render::plain(card).into(),
        Channel::Slack => render::slack_blocks(card),
        Channel::Teams => render::teams_body(card).into(),
        Channel::Jira => render::jira_body(card).into(),
        Channel::Html | Channel::Email => render::html_body(card).into(),
        Channel::PagerDuty | Channel::OpsGenie => render::alert(card),
    }
}

/// A value of the input as it comes out of Rego: objects with their keys sorted (integers only;
/// anything else is left to Rego).
fn through_rego(value: &Value) -> render::R<Value> {
    Ok(match value {
        Value::Number(n) => {
            render::integer(n)?;
            value.clone()
        }
        Value::Array(items) => {
            Value::Array(items.iter().map(through_rego).collect::<Result<_, _>>()?)
        }
        Value::Object(map) => {
            let mut entries: Vec<_> = map.iter().collect();
            entries.sort_unstable_by(|a, b| a.0.cmp(b.0));
            let mut sorted = Map::new();
            for (key, item) in entries {
                sorted.insert(key.clone(), through_rego(item)?);
            }
            Value::Object(sorted)
        }
        other => other.clone(),
    })
}
