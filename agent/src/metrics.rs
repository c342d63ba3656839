//! Every metric Hooker exposes on `/metrics`, defined in one place.
//!
//! Label values come from closed sets (intake kinds, outcomes) or from the config (route and
//! action names), never from events: pod names or images as labels would grow without bound.

use std::sync::Arc;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

/// Rewrites OpenMetrics text as Prometheus text 0.0.4.
fn openmetrics_to_text(openmetrics: &str) -> String {
    let counters: std::collections::HashSet<&str> = openmetrics
        .lines()
        .filter_map(|line| line.strip_prefix("# TYPE "))
        .filter_map(|rest| rest.strip_suffix(" counter"))
        .collect();
    let mut out = String::with_capacity(openmetrics.len());
    for line in openmetrics.lines() {
        if line == "# EOF" || line.starts_with("# UNIT ") {
            continue;
        }
        let renamed = ["# HELP ", "# TYPE "].iter().find_map(|prefix| {
            let rest = line.strip_prefix(prefix)?;
            let (name, tail) = rest.split_once(' ')?;
            counters
                .contains(name)
                .then(|| format!("{prefix}{name}_total {tail}"))
        });
        out.push_str(renamed.as_deref().unwrap_or(line));
        out.push('\n');
    }
    out
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct IntakeLabels {
    pub intake: &'static str,
    pub outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RouteLabels {
    pub route: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RouteErrorLabels {
    pub route: String,
    pub stage: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DeliveryLabels {
    pub action: String,
    pub r#type: &'static str,
    pub outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ActionLabels {
    pub action: String,
    pub r#type: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct QueueLabels {
    pub queue: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct FlushLabels {
    pub route: String,
    pub reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabels {
    pub outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ListenerLabels {
    pub listener: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ClosedLabels {
    pub listener: &'static str,
    pub reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ActionNameLabels {
    pub action: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct IntakeNameLabels {
    pub intake: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct BuildLabels {
    pub version: &'static str,
}

type HistogramFamily<L> = Family<L, Histogram, fn() -> Histogram>;

fn delivery_histogram() -> Histogram {
    // 1 ms … ~33 s.
    Histogram::new(exponential_buckets(0.001, 2.0, 16))
}

/// The metric handles; cheap to clone into every component (one `Arc`: handlers clone it per
/// request, and twenty families cloned one by one cost as much as parsing a small event).
#[derive(Clone)]
pub struct Metrics(Arc<Handles>);

impl std::ops::Deref for Metrics {
    type Target = Handles;
    fn deref(&self) -> &Handles {
        &self.0
    }
}

/// Every metric family Hooker exports.
pub struct Handles {
    pub events_received: Family<IntakeLabels, Counter>,
    pub route_matches: Family<RouteLabels, Counter>,
    pub route_errors: Family<RouteErrorLabels, Counter>,
    pub deliveries: Family<DeliveryLabels, Counter>,
    pub delivery_duration: HistogramFamily<ActionLabels>,
    pub queue_depth: Family<QueueLabels, Gauge>,
    pub dedup_dropped: Family<RouteLabels, Counter>,
    pub aggregation_flushes: Family<FlushLabels, Counter>,
    pub config_reloads: Family<OutcomeLabels, Counter>,
    pub connections: Family<ListenerLabels, Gauge>,
    /// Connections closed by Hooker, by listener and reason (`intake::connections::Closed`).
    pub connections_closed: Family<ClosedLabels, Counter>,
    pub outbox_pending: Gauge,
    /// 1 while every route and template of the running config is decided without Rego.
    pub routes_native: Gauge,
    pub dead_letters: Gauge,
    pub dead_lettered: Family<ActionNameLabels, Counter>,
    pub delivery_retries: Family<ActionNameLabels, Counter>,
    pub circuit_open: Family<ActionNameLabels, Gauge>,
    pub auth_failures: Family<ListenerLabels, Counter>,
    pub intake_connected: Family<IntakeNameLabels, Gauge>,
    pub intake_connection_attempts: Family<IntakeNameLabels, Counter>,
    pub intake_subscriptions_refused: Family<IntakeNameLabels, Counter>,
    pub intake_shed: Family<IntakeNameLabels, Counter>,
    /// Delivery journal entries found damaged at start, and records that could not be decoded.
    pub outbox_damaged_entries: Counter,
    /// Delivery journal segment files found missing at start.
    pub outbox_missing_segments: Counter,
    /// Cluster mode: JetStream publishes of relayed deliveries, by outcome (`acked`,
    /// `duplicate`, `error`).
    pub relay_published: Family<OutcomeLabels, Counter>,
    /// Cluster mode: relayed deliveries not yet acknowledged by JetStream (waiting for NATS).
    pub relay_backlog: Gauge,
    /// Cluster mode: cluster-wide `unique-message-props` decisions (`new`, `duplicate`,
    /// `fail_open`: the KV bucket could not be asked, delivered anyway).
    pub kv_dedup: Family<OutcomeLabels, Counter>,
    /// Cluster mode: messages the responder took from JetStream, by outcome (`consumed`,
    /// `acked`, `duplicate`, `malformed`, `commit_failed`, `ack_failed`).
    pub responder_messages: Family<OutcomeLabels, Counter>,
    build_info: Family<BuildLabels, Gauge>,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        let metrics = Metrics(Arc::new(Handles {
            events_received: Family::default(),
            route_matches: Family::default(),
            route_errors: Family::default(),
            deliveries: Family::default(),
            delivery_duration: Family::new_with_constructor(delivery_histogram),
            queue_depth: Family::default(),
            dedup_dropped: Family::default(),
            aggregation_flushes: Family::default(),
            config_reloads: Family::default(),
            connections: Family::default(),
            connections_closed: Family::default(),
            outbox_pending: Gauge::default(),
            routes_native: Gauge::default(),
            dead_letters: Gauge::default(),
            dead_lettered: Family::default(),
            delivery_retries: Family::default(),
            circuit_open: Family::default(),
            auth_failures: Family::default(),
            intake_connected: Family::default(),
            intake_connection_attempts: Family::default(),
            intake_subscriptions_refused: Family::default(),
            intake_shed: Family::default(),
            outbox_damaged_entries: Counter::default(),
            outbox_missing_segments: Counter::default(),
            relay_published: Family::default(),
            relay_backlog: Gauge::default(),
            kv_dedup: Family::default(),
            responder_messages: Family::default(),
            build_info: Family::default(),
        }));
        metrics
            .build_info
            .get_or_create(&BuildLabels {
                version: env!("CARGO_PKG_VERSION"),
            })
            .set(1);
        metrics
    }

    /// A registry holding these handles, for encoding. Registering again is cheap (clones `Arc`s).
    pub fn registry(&self) -> Registry {
        let mut r = Registry::with_prefix("hooker");
        r.register(
            "events_received",
            "Events received, by intake and outcome",
            self.events_received.clone(),
        );
        r.register(
            "route_matches",
            "Events that matched a route",
            self.route_matches.clone(),
        );
        r.register(
            "route_errors",
            "Route evaluation or template rendering failures",
            self.route_errors.clone(),
        );
        r.register(
            "deliveries",
            "Action deliveries, by action, type and outcome",
            self.deliveries.clone(),
        );
        r.register(
            "delivery_duration_seconds",
            "Time spent in one action delivery",
            self.delivery_duration.clone(),
        );
        r.register(
            "queue_depth",
            "Items waiting in an internal queue",
            self.queue_depth.clone(),
        );
        r.register(
            "dedup_dropped",
            "Messages dropped as duplicates by unique-message-props",
            self.dedup_dropped.clone(),
        );
        r.register(
            "aggregation_flushes",
            "Aggregated messages sent, by route and trigger",
            self.aggregation_flushes.clone(),
        );
        r.register(
            "config_reloads",
            "Config loads, by outcome",
            self.config_reloads.clone(),
        );
        r.register(
            "connections",
            "Open intake connections, by listener",
            self.connections.clone(),
        );
        r.register(
            "connections_closed",
            "Connections closed by Hooker, by listener and reason (idle, slow, evicted, refused, keepalive)",
            self.connections_closed.clone(),
        );
        r.register(
            "outbox_pending",
            "Deliveries waiting in the durable outbox",
            self.outbox_pending.clone(),
        );
        r.register(
            "routes_native",
            "1 while every route and template of the running config is decided without Rego (events are routed on the intake's thread), else 0",
            self.routes_native.clone(),
        );
        r.register(
            "dead_letters",
            "Dead letters kept in the state store",
            self.dead_letters.clone(),
        );
        r.register(
            "dead_lettered",
            "Deliveries given up on, by action",
            self.dead_lettered.clone(),
        );
        r.register(
            "delivery_retries",
            "Deliveries rescheduled after a retryable failure, by action",
            self.delivery_retries.clone(),
        );
        r.register(
            "circuit_open",
            "1 while an action's circuit breaker is open",
            self.circuit_open.clone(),
        );
        r.register(
            "auth_failures",
            "Requests refused for a missing or wrong token, by listener",
            self.auth_failures.clone(),
        );
        r.register(
            "intake_connected",
            "1 while an intake that dials its source (tracee) is connected and subscribed",
            self.intake_connected.clone(),
        );
        r.register(
            "intake_connection_attempts",
            "Attempts to connect and subscribe, the first included, by intake (tracee)",
            self.intake_connection_attempts.clone(),
        );
        r.register(
            "intake_subscriptions_refused",
            "Subscriptions the source answered with an error (e.g. an unknown Tracee policy), by intake",
            self.intake_subscriptions_refused.clone(),
        );
        r.register(
            "intake_events_shed",
            "Events dropped because the queue or outbox was full and the producer cannot be told to retry, by intake",
            self.intake_shed.clone(),
        );
        r.register(
            "outbox_damaged_entries",
            "Delivery journal entries found damaged at start and skipped, and pending records that could not be decoded: each a pending delivery lost or an ended one sent again",
            self.outbox_damaged_entries.clone(),
        );
        r.register(
            "outbox_missing_segments",
            "Delivery journal segment files found missing at start: the pending deliveries they held are lost",
            self.outbox_missing_segments.clone(),
        );
        r.register(
            "relay_published",
            "Relayed deliveries published to JetStream, by outcome",
            self.relay_published.clone(),
        );
        r.register(
            "relay_backlog",
            "Relayed deliveries waiting for a JetStream acknowledgement",
            self.relay_backlog.clone(),
        );
        r.register(
            "kv_dedup",
            "Cluster-wide unique-message-props decisions, by outcome",
            self.kv_dedup.clone(),
        );
        r.register(
            "responder_messages",
            "Messages the responder took from JetStream, by outcome",
            self.responder_messages.clone(),
        );
        crate::forensic::ship::register(&mut r);
        r.register(
            "build_info",
            "Hooker build information",
            self.build_info.clone(),
        );
        r
    }

    /// The OpenMetrics text exposition.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing to a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry());
        out
    }

    /// The Prometheus text format 0.0.4, for scrapers (and `promtool`) that do not ask for
    /// OpenMetrics: counter families are named with their `_total` suffix and `# EOF` is dropped.
    pub fn encode_prometheus_text(&self) -> String {
        openmetrics_to_text(&self.encode())
    }

    pub fn received(&self, intake: &'static str, outcome: &'static str, n: u64) {
        self.events_received
            .get_or_create(&IntakeLabels { intake, outcome })
            .inc_by(n);
    }

    pub fn queue(&self, queue: &'static str) -> Gauge {
        self.queue_depth
            .get_or_create(&QueueLabels { queue })
            .clone()
    }

    /// Creates, at 0, the counters an alert watches with `increase()` for the label sets known
    /// from the config and the settings: config reload outcomes, dead letters and retries per
    /// action, refused and shed events per running intake (and Tracee's `intake_connected` gauge,
    /// 0 until subscribed). A counter that first appears at 1 has
    /// no earlier sample, so `increase()` would miss the first failure. Called at start and after
    /// every reload (new actions); creating an existing series changes nothing.
    pub fn start_at_zero<'a>(
        &self,
        actions: impl IntoIterator<Item = &'a str>,
        intakes: &[&'static str],
    ) {
        for outcome in ["success", "failure"] {
            let _ = self
                .config_reloads
                .get_or_create(&OutcomeLabels { outcome });
        }
        for action in actions {
            let labels = ActionNameLabels {
                action: action.to_string(),
            };
            let _ = self.dead_lettered.get_or_create(&labels);
            let _ = self.delivery_retries.get_or_create(&labels);
        }
        for &intake in intakes {
            // The outcomes by which each intake refuses or drops events (HookerEventsShed).
            let outcomes: &[&'static str] = match intake {
                "tracee" | "forward" => &["too_large", "shed"],
                _ => &["queue_full", "too_large"],
            };
            for &outcome in outcomes {
                let _ = self
                    .events_received
                    .get_or_create(&IntakeLabels { intake, outcome });
            }
            if outcomes.contains(&"shed") {
                let _ = self.intake_shed.get_or_create(&IntakeNameLabels { intake });
            }
            if intake == "tracee" {
                // 0 until subscribed, from the first scrape on (HookerTraceeDisconnected).
                let _ = self
                    .intake_connected
                    .get_or_create(&IntakeNameLabels { intake });
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_format_names_counters_with_total() {
        let metrics = Metrics::new();
        metrics.received("http", "accepted", 2);
        let text = metrics.encode_prometheus_text();
        assert!(
            text.contains("# TYPE hooker_events_received_total counter\n"),
            "{text}"
        );
        assert!(
            text.contains("hooker_events_received_total{intake=\"http\",outcome=\"accepted\"} 2\n"),
            "{text}"
        );
        assert!(!text.contains("# EOF"));
        assert!(metrics.encode().ends_with("# EOF\n"));
    }

    #[test]
    fn alerting_counters_start_at_zero() {
        let metrics = Metrics::new();
        metrics.start_at_zero(["jira", "slack"], &["http", "tracee"]);
        metrics.start_at_zero(["jira"], &[]);
        let text = metrics.encode_prometheus_text();
        for series in [
            r#"hooker_config_reloads_total{outcome="failure"} 0"#,
            r#"hooker_config_reloads_total{outcome="success"} 0"#,
            r#"hooker_dead_lettered_total{action="jira"} 0"#,
            r#"hooker_dead_lettered_total{action="slack"} 0"#,
            r#"hooker_delivery_retries_total{action="slack"} 0"#,
            r#"hooker_events_received_total{intake="http",outcome="queue_full"} 0"#,
            r#"hooker_events_received_total{intake="http",outcome="too_large"} 0"#,
            r#"hooker_events_received_total{intake="tracee",outcome="shed"} 0"#,
            r#"hooker_intake_events_shed_total{intake="tracee"} 0"#,
            r#"hooker_intake_connected{intake="tracee"} 0"#,
        ] {
            assert!(
                text.contains(&format!("{series}\n")),
                "{series} in:\n{text}"
            );
        }
        assert!(
            !text.contains(r#"intake_events_shed_total{intake="http"}"#),
            "{text}"
        );
    }
}
