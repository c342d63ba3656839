//! Cluster mode: node agents relay the deliveries of `runs-on: responder` actions to a NATS
//! JetStream stream, and responders run them. Without `HOOKER_NATS` none of this runs and every
//! action runs on the node, as in single-node Hooker.
//!
//! ```text
//!  node agent ── outbox ── relay (JetStream publish, acked) ──► stream HOOKER_DELIVERIES
//!                                                                   │ durable pull consumer
//!  responder ◄── its own outbox; ack once delivered ◄────────────────┘ (shared by replicas)
//!      └── KV bucket hooker-dedup*: unique-message-props decided once for the cluster
//!  node agent ── (aggregating route) ──► stream HOOKER_DELIVERIES_AGGREGATE
//!  lease holder (one responder) ◄── windows for the cluster; acks once the aggregate is delivered
//! ```
//!
//! `mod.rs` owns the connection and what both roles share (where each action runs, names);
//! `envelope.rs` the message on the wire, `relay.rs` the node side, `responder.rs` the
//! responder's consumer, `kv_dedup.rs` the cluster-wide dedup, `aggregate.rs` the cluster-wide
//! aggregation.
//!
//! - **Invariant:** a relayed delivery leaves the node's outbox only after JetStream acknowledged
//!   it; a message leaves the stream only after the delivery made of it left the responder's
//!   outbox (delivered or dead-lettered): a responder's disk is never its only copy.

pub mod aggregate;
pub mod envelope;
pub mod kv_dedup;
pub mod relay;
pub mod responder;

use std::collections::HashSet;
use std::future::Future;
use std::pin::Pin;
use std::sync::Mutex;
use std::time::Duration;

use async_nats::jetstream;
use futures_util::StreamExt;
use futures_util::stream::FuturesUnordered;

use crate::config::settings::ClusterSettings;
use crate::config::{ActionConfig, Diagnostic};
use crate::outbox::Outbox;

/// Action types that act on the node itself: they always run on the node agent.
pub const NODE_LOCAL_TYPES: &[&str] = &["exec", "docker", "log", "stdout"];

/// How long one JetStream request (publish ack, KV operation, stream look-up) may take.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

/// Where an action's deliveries run (`runs-on`, Postee's key).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunsOn {
    Node,
    Responder,
}

#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    #[error("HOOKER_NATS: {0}")]
    Options(String),
    #[error("cannot read the NATS credentials file {path}: {error}")]
    Credentials { path: String, error: std::io::Error },
    #[error("cannot connect to NATS: {0}")]
    Connect(String),
}

/// What is wrong with an action's `runs-on`.
#[derive(Debug)]
pub enum RunsOnProblem {
    /// Neither `node` nor `responder` (Postee named runners here): a warning, the default applies.
    Unknown(Diagnostic),
    /// `responder` on a node-local type: an error.
    NodeLocal(Diagnostic),
}

impl RunsOnProblem {
    pub fn diagnostic(self) -> Diagnostic {
        match self {
            RunsOnProblem::Unknown(d) | RunsOnProblem::NodeLocal(d) => d,
        }
    }
}

/// The `runs-on` an action block asks for, checked: `None` when unset.
pub fn declared_runs_on(config: &ActionConfig) -> Result<Option<RunsOn>, RunsOnProblem> {
    let Some(value) = config.runs_on.as_deref() else {
        return Ok(None);
    };
    let runs_on = match value.trim().to_ascii_lowercase().as_str() {
        "node" => RunsOn::Node,
        "responder" => RunsOn::Responder,
        _ => {
            return Err(RunsOnProblem::Unknown(
                Diagnostic::new(
                    config.place(),
                    format!(
                        "runs-on \"{value}\" is neither `node` nor `responder`; the default applies"
                    ),
                )
                .key("runs-on")
                .line(config.item.line_of("runs-on")),
            ));
        }
    };
    if runs_on == RunsOn::Responder && NODE_LOCAL_TYPES.contains(&config.kind.as_str()) {
        return Err(RunsOnProblem::NodeLocal(
            Diagnostic::new(
                config.place(),
                format!(
                    "runs-on: responder is not possible for a `{}` action: it acts on the node itself (exec, docker, log and stdout always run on the node)",
                    config.kind
                ),
            )
            .key("runs-on")
            .line(config.item.line_of("runs-on")),
        ));
    }
    Ok(Some(runs_on))
}

/// Where an action runs. Without cluster mode, everywhere is the node. With it, node-local types
/// run on the node and the others default to the responder.
pub fn runs_on(config: &ActionConfig, cluster: bool) -> RunsOn {
    if !cluster || NODE_LOCAL_TYPES.contains(&config.kind.as_str()) {
        return RunsOn::Node;
    }
    declared_runs_on(config)
        .ok()
        .flatten()
        .unwrap_or(RunsOn::Responder)
}

/// A connection to the NATS cluster and its JetStream context.
#[derive(Clone)]
pub struct Nats {
    pub client: async_nats::Client,
    pub jetstream: jetstream::Context,
    pub settings: ClusterSettings,
}

impl Nats {
    /// Connects in the background: the returned client reconnects by itself, forever, so a node
    /// agent starts (and keeps its outbox) while NATS is down.
    pub async fn connect(settings: &ClusterSettings, name: &str) -> Result<Nats, ClusterError> {
        let urls: Vec<async_nats::ServerAddr> = settings
            .nats
            .iter()
            .map(|url| url.trim())
            .filter(|url| !url.is_empty())
            .map(|url| {
                url.parse::<async_nats::ServerAddr>()
                    .map_err(|error| ClusterError::Options(format!("`{url}`: {error}")))
            })
            .collect::<Result<_, _>>()?;
        let mut options = async_nats::ConnectOptions::new()
            .name(name)
            .retry_on_initial_connect()
            .max_reconnects(None)
            .connection_timeout(REQUEST_TIMEOUT)
            .event_callback(|event| async move {
                match event {
                    async_nats::Event::Connected => tracing::info!("Connected to NATS."),
                    async_nats::Event::Disconnected => {
                        tracing::warn!("Disconnected from NATS; reconnecting.")
                    }
                    other => tracing::debug!(event = %other, "NATS connection event."),
                }
            });
        if let Some(path) = &settings.nats_creds {
            options = options.credentials_file(path).await.map_err(|error| {
                ClusterError::Credentials {
                    path: path.display().to_string(),
                    error,
                }
            })?;
        }
        if let Some(token) = settings.nats_token.as_deref().filter(|t| !t.is_empty()) {
            options = options.token(token.to_string());
        }
        if let Some(ca) = &settings.nats_tls_ca {
            options = options.add_root_certificates(ca.clone()).require_tls(true);
        }
        if let (Some(cert), Some(key)) = (&settings.nats_tls_cert, &settings.nats_tls_key) {
            options = options
                .add_client_certificate(cert.clone(), key.clone())
                .require_tls(true);
        }
        crate::tls::install_crypto_provider();
        let client = options
            .connect(urls)
            .await
            .map_err(|error| ClusterError::Connect(error.to_string()))?;
        let mut jetstream = jetstream::new(client.clone());
        jetstream.set_timeout(REQUEST_TIMEOUT);
        Ok(Nats {
            client,
            jetstream,
            settings: settings.clone(),
        })
    }

    pub fn connected(&self) -> bool {
        self.client.connection_state() == async_nats::connection::State::Connected
    }

    /// Replicas for the stream and buckets Hooker creates: the setting, else min(3, the servers
    /// the connected server knows of).
    pub fn replicas(&self) -> usize {
        if self.settings.nats_replicas > 0 {
            return self.settings.nats_replicas;
        }
        let info = self.client.server_info();
        info.connect_urls.len().clamp(1, 3)
    }

    /// The relay stream, created when absent (work-queue retention, file storage).
    pub async fn stream(&self) -> Result<jetstream::stream::Stream, String> {
        self.work_queue(&self.settings.nats_stream, &self.settings.nats_subject)
            .await
    }

    /// The stream of single messages of aggregating routes, which one responder at a time
    /// aggregates for the cluster (`HOOKER_NATS_STREAM` + `_AGGREGATE`, subjects
    /// `HOOKER_NATS_SUBJECT` + `-aggregate.>`), created when absent.
    pub async fn aggregate_stream(&self) -> Result<jetstream::stream::Stream, String> {
        self.work_queue(&self.aggregate_stream_name(), &self.aggregate_subject())
            .await
    }

    pub fn aggregate_stream_name(&self) -> String {
        format!("{}_AGGREGATE", self.settings.nats_stream)
    }

    /// The aggregate stream's subject prefix (a token of its own: the relay stream's
    /// `HOOKER_NATS_SUBJECT.>` does not match it).
    pub fn aggregate_subject(&self) -> String {
        format!("{}-aggregate", self.settings.nats_subject)
    }

    async fn work_queue(
        &self,
        name: &str,
        subject: &str,
    ) -> Result<jetstream::stream::Stream, String> {
        let config = jetstream::stream::Config {
            name: name.to_string(),
            subjects: vec![format!("{subject}.>")],
            retention: jetstream::stream::RetentionPolicy::WorkQueue,
            storage: jetstream::stream::StorageType::File,
            num_replicas: self.replicas(),
            // Republishes of one delivery (a lost ack, a node restarted mid-publish) within
            // this window are dropped by JetStream (`Nats-Msg-Id`).
            duplicate_window: Duration::from_secs(600),
            ..Default::default()
        };
        self.jetstream
            .get_or_create_stream(config)
            .await
            .map_err(|error| format!("cannot find or create stream {name}: {error}"))
    }
}

/// Hex SHA-256 of `parts` joined with a separator that cannot occur in them unescaped: a stable,
/// NATS-safe id (message ids, KV keys).
pub fn digest(parts: &[&str]) -> String {
    let mut context = ring::digest::Context::new(&ring::digest::SHA256);
    for part in parts {
        context.update(&(part.len() as u64).to_be_bytes());
        context.update(part.as_bytes());
    }
    context
        .finish()
        .as_ref()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// How long a stopping responder waits for the work it holds to be handed back or finish; what is
/// left then comes back after the ack wait.
const HANDOVER_DEADLINE: Duration = Duration::from_secs(10);

/// Work a responder has in flight, one future per JetStream message (or aggregate) it holds.
pub type InFlight<'a> = FuturesUnordered<Pin<Box<dyn Future<Output = ()> + Send + 'a>>>;

/// The outbox deliveries of the JetStream messages a responder holds, not yet acknowledged.
#[derive(Debug, Default)]
pub struct Held(Mutex<HashSet<u64>>);

impl Held {
    pub fn ids(&self) -> Vec<u64> {
        self.0
            .lock()
            .map(|held| held.iter().copied().collect())
            .unwrap_or_default()
    }

    /// Marks `ids` as held (`hold`) or no longer held.
    pub fn hold(&self, ids: &[u64], hold: bool) {
        if let Ok(mut held) = self.0.lock() {
            for id in ids {
                if hold {
                    held.insert(*id);
                } else {
                    held.remove(id);
                }
            }
        }
    }
}

/// Stopping: withdraws the `held` deliveries from the outbox (again every half second, for one
/// committed meanwhile or running now) until every future of `in_flight` ended (its message
/// acknowledged or handed back) or the deadline, then flushes the naks the client buffered, so
/// they are out before the connection closes. `what` names the work in the deadline's warning.
pub async fn hand_over(
    in_flight: &mut InFlight<'_>,
    outbox: &Outbox,
    held: &Held,
    client: &async_nats::Client,
    what: &str,
) {
    let deadline = tokio::time::Instant::now() + HANDOVER_DEADLINE;
    let mut again = tokio::time::interval(Duration::from_millis(500));
    loop {
        tokio::select! {
            next = in_flight.next() => if next.is_none() { break },
            _ = again.tick() => outbox.withdraw(held.ids()),
            _ = tokio::time::sleep_until(deadline) => {
                tracing::warn!(left = in_flight.len(), what, "Still in flight at the handover deadline; JetStream offers their messages again after the ack wait.");
                break;
            }
        }
    }
    if let Err(error) = client.flush().await {
        tracing::warn!(%error, "Cannot flush the hand-back to NATS; JetStream offers the messages again after the ack wait.");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn action(yaml: &str) -> ActionConfig {
        let config = crate::config::Config::parse(
            &format!("routes: []\ntemplates: []\nactions:\n{yaml}"),
            None,
        )
        .unwrap();
        config.actions.into_iter().next().unwrap()
    }

    #[test]
    fn remote_actions_default_to_the_responder_only_in_cluster_mode() {
        let webhook = action("- name: w\n  type: webhook\n  enable: true\n  url: http://x\n");
        assert_eq!(runs_on(&webhook, false), RunsOn::Node);
        assert_eq!(runs_on(&webhook, true), RunsOn::Responder);
        let pinned = action(
            "- name: w\n  type: webhook\n  enable: true\n  url: http://x\n  runs-on: node\n",
        );
        assert_eq!(runs_on(&pinned, true), RunsOn::Node);
        let exec = action("- name: e\n  type: exec\n  enable: true\n  exec-script: echo\n");
        assert_eq!(runs_on(&exec, true), RunsOn::Node);
    }

    #[test]
    fn node_local_actions_refuse_the_responder() {
        for kind in NODE_LOCAL_TYPES {
            let block = action(&format!(
                "- name: a\n  type: {kind}\n  enable: true\n  runs-on: responder\n"
            ));
            let Err(RunsOnProblem::NodeLocal(error)) = declared_runs_on(&block) else {
                panic!("{kind}: runs-on: responder accepted");
            };
            assert!(error.message.contains("always run on the node"), "{error}");
        }
        let runner = action("- name: w\n  type: webhook\n  enable: true\n  runs-on: cloud\n");
        assert!(matches!(
            declared_runs_on(&runner),
            Err(RunsOnProblem::Unknown(_))
        ));
        assert_eq!(runs_on(&runner, true), RunsOn::Responder);
    }

    #[test]
    fn digests_are_stable_and_unambiguous() {
        assert_eq!(digest(&["a", "b"]), digest(&["a", "b"]));
        assert_ne!(digest(&["ab", ""]), digest(&["a", "b"]));
        assert_eq!(digest(&["x"]).len(), 64);
    }
}
