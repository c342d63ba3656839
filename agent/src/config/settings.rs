//! Process settings: listeners, paths and limits, from `HOOKER_*` variables or the matching flags.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Args, ValueEnum};

/// Where Postee's image mounts its config; Hooker looks there too so a Postee user can switch.
pub const DEFAULT_CONFIG_PATH: &str = "/config/cfg.yaml";
pub const DEFAULT_SOCKET_PATH: &str = "/var/run/hooker/hooker.sock";
pub const DEFAULT_LOG_DIR: &str = "/var/log/hooker";
pub const DEFAULT_STATE_DIR: &str = "/var/lib/hooker";

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Default)]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

/// Settings for `hooker run` (and, in part, `send`). Every flag has a `HOOKER_*` twin.
#[derive(Debug, Clone, Args)]
pub struct RunSettings {
    /// Config file (Postee cfg.yaml format). Without it, /config/cfg.yaml, else the embedded default.
    #[arg(long = "cfgfile", visible_alias = "config", env = "HOOKER_CFG", value_parser = parse_path)]
    pub config: Option<PathBuf>,

    /// HTTP listen address (`off` to disable). `--url` is Postee's spelling.
    #[arg(
        long = "http",
        visible_alias = "url",
        env = "HOOKER_HTTP",
        default_value = "0.0.0.0:8082"
    )]
    pub http: Listen,

    /// HTTPS listen address (`off` to disable). Uses a self-signed certificate unless one is given.
    #[arg(
        long = "tls",
        visible_alias = "https",
        env = "HOOKER_HTTPS",
        default_value = "0.0.0.0:8445"
    )]
    pub https: Listen,

    /// PEM certificate chain for HTTPS.
    #[arg(long, env = "HOOKER_TLS_CERT", requires = "tls_key", value_parser = parse_path)]
    pub tls_cert: Option<PathBuf>,

    /// PEM private key for HTTPS.
    #[arg(long, env = "HOOKER_TLS_KEY", requires = "tls_cert", value_parser = parse_path)]
    pub tls_key: Option<PathBuf>,

    /// Unix socket for local producers (`off` to disable).
    #[arg(long, env = "HOOKER_SOCKET")]
    pub socket: Option<String>,

    /// Debug logging (any non-empty value but `0`/`false`).
    #[arg(long, env = "HOOKER_DEBUG", value_parser = parse_flag, default_value = "false", num_args = 0..=1, default_missing_value = "true")]
    pub debug: bool,

    /// Log format.
    #[arg(long, env = "HOOKER_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,

    /// Directory of extra Rego templates (`rego-package` looks here after the built-in ones).
    #[arg(long, env = "HOOKER_REGO_TEMPLATES", value_parser = parse_path)]
    pub rego_templates: Option<PathBuf>,

    /// Directory that route `input-files` are relative to.
    #[arg(long, env = "HOOKER_REGO_FILTERS", default_value = DEFAULT_REGO_FILTERS, value_parser = parse_path)]
    pub rego_filters: PathBuf,

    /// Time budget of one Rego evaluation (a route's rule for one event, one template
    /// rendering); past it the evaluation stops with an error.
    #[arg(long, env = "HOOKER_REGO_TIMEOUT", default_value = "2s", value_parser = crate::config::units::parse_duration)]
    pub rego_timeout: std::time::Duration,

    /// Largest accepted request body, e.g. `16MB`.
    #[arg(long, env = "HOOKER_MAX_BODY", default_value = "16MB", value_parser = parse_size)]
    pub max_body: u64,

    /// Events waiting for the router; a full queue answers 429.
    #[arg(long, env = "HOOKER_QUEUE_CAPACITY", default_value_t = 4096)]
    pub queue_capacity: usize,

    /// Bytes of event bodies waiting for the router; beyond it intake answers 429.
    #[arg(long, env = "HOOKER_QUEUE_BYTES", default_value = "16MB", value_parser = parse_size)]
    pub queue_bytes: u64,

    /// Router worker threads (0 = one per core, at most 8).
    #[arg(long, env = "HOOKER_WORKERS", default_value_t = 0)]
    pub workers: usize,

    /// Concurrent connections per listener. When full, the longest-idle connection is closed
    /// to make room (then one stalled on its client); only when all are busy is a new one refused.
    #[arg(long, env = "HOOKER_MAX_CONNECTIONS", default_value_t = 1024)]
    pub max_connections: usize,

    /// Time for a connection's first bytes, a TLS handshake, and HTTP/1.1 request headers (also
    /// between requests on a kept-alive HTTP/1.1 connection).
    #[arg(long, env = "HOOKER_HEADER_TIMEOUT", default_value = "10s", value_parser = crate::config::units::parse_duration)]
    pub header_timeout: std::time::Duration,

    /// Longest pause in a request body (or a gRPC or Forward message) that has started.
    #[arg(long, env = "HOOKER_READ_TIMEOUT", default_value = "10s", value_parser = crate::config::units::parse_duration)]
    pub read_timeout: std::time::Duration,

    /// Time for a whole request body (a gRPC message, a Forward message), from its first byte.
    #[arg(long, env = "HOOKER_BODY_TIMEOUT", default_value = "60s", value_parser = crate::config::units::parse_duration)]
    pub body_timeout: std::time::Duration,

    /// A connection with no request in progress (HTTP/2 and gRPC without open streams, Forward
    /// between messages) is closed after this long.
    #[arg(long, env = "HOOKER_IDLE_TIMEOUT", default_value = "2m", value_parser = crate::config::units::parse_duration)]
    pub idle_timeout: std::time::Duration,

    /// HTTP/2 and gRPC keep-alive: a ping this often, and a connection that does not answer one
    /// within the same time is closed. `0` turns pings off.
    #[arg(long, env = "HOOKER_H2_KEEPALIVE", default_value = "30s", value_parser = crate::config::units::parse_duration)]
    pub h2_keepalive: std::time::Duration,

    /// Probes and metrics listener (`/healthz`, `/readyz`, `/ping`, `/metrics`), apart from the
    /// intake so a flood of intake connections cannot fail the liveness probe; `off` to disable.
    #[arg(long, env = "HOOKER_PROBES", default_value = "0.0.0.0:8081")]
    pub probes: Listen,

    /// Deliveries running at once across all actions.
    #[arg(long, env = "HOOKER_MAX_INFLIGHT", default_value_t = 256)]
    pub max_inflight: usize,

    /// Directory of the durable state store (outbox, dead letters, dedup, aggregation).
    #[arg(long, env = "HOOKER_STATE_DIR", value_parser = parse_path)]
    pub state_dir: Option<PathBuf>,

    /// Deliveries that may wait in the outbox; beyond it intake answers 429.
    #[arg(long, env = "HOOKER_OUTBOX_MAX_PENDING", default_value_t = 20_000)]
    pub outbox_max_pending: usize,

    /// Total size of the deliveries waiting in the outbox (their stored records); beyond it
    /// intake answers 429. The delivery engine holds pending deliveries in memory, so this is
    /// what bounds the agent's memory under a backlog.
    #[arg(long, env = "HOOKER_OUTBOX_MAX_PENDING_BYTES", default_value = "32MB", value_parser = parse_size)]
    pub outbox_max_pending_bytes: u64,

    /// Size cap of the state store file; beyond it intake answers 429.
    #[arg(long, env = "HOOKER_OUTBOX_MAX_BYTES", default_value = "1GB", value_parser = parse_size)]
    pub outbox_max_bytes: u64,

    /// Bearer token(s) required on the TCP listeners' POST, reload and admin endpoints
    /// (comma-separated). The Unix socket is protected by its file mode instead.
    #[arg(long, env = "HOOKER_AUTH_TOKEN", hide_env_values = true)]
    pub auth_token: Option<String>,

    /// File with accepted bearer tokens, one per line (e.g. a mounted Kubernetes Secret).
    #[arg(long, env = "HOOKER_AUTH_TOKEN_FILE", value_parser = parse_path)]
    pub auth_token_file: Option<PathBuf>,

    /// PEM CA bundle: HTTPS clients must present a certificate it signed (mutual TLS).
    #[arg(long, env = "HOOKER_TLS_CLIENT_CA", value_parser = parse_path)]
    pub tls_client_ca: Option<PathBuf>,

    /// Reload when the config file (or its directory, as a ConfigMap mount swaps it) changes.
    #[arg(long, env = "HOOKER_WATCH_CONFIG", value_parser = parse_flag, default_value = "true", num_args = 0..=1, default_missing_value = "true", value_name = "BOOL")]
    pub watch_config: bool,

    /// gRPC intake (`hooker.v1.Intake`) on TCP; `off` to disable. Keep it on loopback.
    #[arg(long = "grpc", env = "HOOKER_GRPC", default_value = "127.0.0.1:50051")]
    pub grpc: Listen,

    /// gRPC intake on a Unix socket (mode 0660, no token needed); off unless set.
    #[arg(long, env = "HOOKER_GRPC_SOCKET")]
    pub grpc_socket: Option<String>,

    /// TLS on the gRPC TCP listener: HOOKER_TLS_CERT/KEY (else a self-signed certificate), and
    /// HOOKER_TLS_CLIENT_CA to require client certificates (mutual TLS).
    #[arg(long, env = "HOOKER_GRPC_TLS", value_parser = parse_flag, default_value = "false", num_args = 0..=1, default_missing_value = "true")]
    pub grpc_tls: bool,

    /// How long a streamed gRPC batch that finds the outbox full waits for room before it is
    /// refused (RESOURCE_EXHAUSTED). The stream is not read meanwhile, so HTTP/2 flow control
    /// holds the producer back instead of it resending the batch.
    #[arg(long, env = "HOOKER_GRPC_STREAM_WAIT", default_value = "10s", value_parser = crate::config::units::parse_duration)]
    pub grpc_stream_wait: std::time::Duration,

    /// Tracee gRPC server to subscribe to: `unix:/var/run/tracee.sock`, `tcp:127.0.0.1:4466`,
    /// or `on` for Tracee's default socket. Off unless set.
    #[arg(long, env = "HOOKER_TRACEE")]
    pub tracee: Option<String>,

    /// Tracee policies to subscribe to (comma-separated); empty means every event.
    #[arg(long, env = "HOOKER_TRACEE_POLICIES", value_delimiter = ',')]
    pub tracee_policies: Vec<String>,

    /// Fluent Forward intake on TCP (Tracee's `--output forward:tcp://…`); off unless set.
    #[arg(long, env = "HOOKER_FORWARD", default_value = "off")]
    pub forward: Listen,

    /// Fluent Forward intake on a Unix socket (mode 0660); off unless set.
    #[arg(long, env = "HOOKER_FORWARD_SOCKET")]
    pub forward_socket: Option<String>,

    /// Node name recorded in forensic logs (Kubernetes: set from spec.nodeName).
    #[arg(long, env = "NODE_NAME")]
    pub node_name: Option<String>,

    /// Cluster mode: role and NATS JetStream connection (`agent/src/cluster/`).
    #[command(flatten)]
    pub cluster: ClusterSettings,
}

/// Which part of a cluster this process plays.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Default)]
pub enum Role {
    /// The node agent (the DaemonSet): intakes, routing, node-local actions; relays the
    /// deliveries of `runs-on: responder` actions to JetStream when `HOOKER_NATS` is set.
    #[default]
    Node,
    /// The responder (a Deployment): runs the deliveries node agents relay.
    Responder,
}

/// Cluster mode settings. Without `HOOKER_NATS`, Hooker is a single-node agent and none of the
/// others matter.
#[derive(Debug, Clone, Args)]
pub struct ClusterSettings {
    /// Role: `node` (the agent on every node) or `responder` (runs relayed deliveries).
    #[arg(long, env = "HOOKER_ROLE", value_enum, default_value_t = Role::Node)]
    pub role: Role,

    /// NATS server URLs, comma-separated (`nats://nats-0:4222,nats://nats-1:4222`). Unset: no
    /// cluster mode, every action runs on this node.
    #[arg(long, env = "HOOKER_NATS", value_delimiter = ',')]
    pub nats: Vec<String>,

    /// NATS credentials file (`.creds`: user JWT and NKey seed).
    #[arg(long, env = "HOOKER_NATS_CREDS", value_parser = parse_path)]
    pub nats_creds: Option<PathBuf>,

    /// NATS token.
    #[arg(long, env = "HOOKER_NATS_TOKEN", hide_env_values = true)]
    pub nats_token: Option<String>,

    /// PEM CA bundle to verify the NATS servers with (turns TLS on).
    #[arg(long, env = "HOOKER_NATS_TLS_CA", value_parser = parse_path)]
    pub nats_tls_ca: Option<PathBuf>,

    /// PEM client certificate for NATS (mutual TLS); needs HOOKER_NATS_TLS_KEY.
    #[arg(long, env = "HOOKER_NATS_TLS_CERT", requires = "nats_tls_key", value_parser = parse_path)]
    pub nats_tls_cert: Option<PathBuf>,

    /// PEM private key of HOOKER_NATS_TLS_CERT.
    #[arg(long, env = "HOOKER_NATS_TLS_KEY", requires = "nats_tls_cert", value_parser = parse_path)]
    pub nats_tls_key: Option<PathBuf>,

    /// JetStream stream that carries relayed deliveries (work-queue retention, file storage).
    #[arg(long, env = "HOOKER_NATS_STREAM", default_value = "HOOKER_DELIVERIES")]
    pub nats_stream: String,

    /// Subject prefix of relayed deliveries; the stream takes `<prefix>.>`.
    #[arg(long, env = "HOOKER_NATS_SUBJECT", default_value = "hooker.deliveries")]
    pub nats_subject: String,

    /// Durable consumer shared by every responder replica.
    #[arg(
        long,
        env = "HOOKER_NATS_CONSUMER",
        default_value = "hooker-responders"
    )]
    pub nats_consumer: String,

    /// KV bucket (name prefix) of cluster-wide `unique-message-props` keys.
    #[arg(long, env = "HOOKER_NATS_KV_BUCKET", default_value = "hooker-dedup")]
    pub nats_kv_bucket: String,

    /// Replicas of the stream and KV buckets Hooker creates; 0 = min(3, servers in the cluster).
    #[arg(long, env = "HOOKER_NATS_REPLICAS", default_value_t = 0)]
    pub nats_replicas: usize,

    /// How long JetStream waits for a responder's ack before redelivering a message.
    #[arg(long, env = "HOOKER_NATS_ACK_WAIT", default_value = "30s", value_parser = crate::config::units::parse_duration)]
    pub nats_ack_wait: std::time::Duration,
}

impl ClusterSettings {
    /// Whether cluster mode is on (`HOOKER_NATS` names at least one server).
    pub fn enabled(&self) -> bool {
        self.nats.iter().any(|url| !url.trim().is_empty())
    }
}

/// A listen address, or `off`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Listen {
    Off,
    On(SocketAddr),
}

impl std::str::FromStr for Listen {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim() {
            "" | "off" | "none" | "disabled" | "false" => Ok(Listen::Off),
            addr => {
                let addr = addr
                    .strip_prefix("http://")
                    .or_else(|| addr.strip_prefix("https://"))
                    .unwrap_or(addr);
                let addr = if addr.starts_with(':') {
                    format!("0.0.0.0{addr}")
                } else {
                    addr.to_string()
                };
                addr.parse()
                    .map(Listen::On)
                    .map_err(|_| format!("`{s}` is not host:port (e.g. 0.0.0.0:8082) or `off`"))
            }
        }
    }
}

fn parse_flag(s: &str) -> Result<bool, String> {
    Ok(!matches!(
        s.trim().to_ascii_lowercase().as_str(),
        "" | "0" | "false" | "no" | "off"
    ))
}

/// `HOOKER_REGO_FILTERS`' default, also when it is set empty.
pub const DEFAULT_REGO_FILTERS: &str = "./rego-filters";

/// A path setting that may be empty (`HOOKER_CFG=`): clap's own path parser refuses an empty
/// value, which broke every subcommand, even `hooker version`. Empty means the default; see
/// [`RunSettings::without_empty_paths`] and [`non_empty`].
pub fn parse_path(s: &str) -> Result<PathBuf, String> {
    Ok(PathBuf::from(s))
}

/// `None` for an empty path (an empty `HOOKER_*` path variable means the default).
pub fn non_empty(path: Option<PathBuf>) -> Option<PathBuf> {
    path.filter(|p| !p.as_os_str().is_empty())
}

fn parse_size(s: &str) -> Result<u64, String> {
    super::units::parse_byte_size(s)
}

impl RunSettings {
    /// The settings with every empty path setting replaced by its default.
    pub fn without_empty_paths(mut self) -> Self {
        self.config = non_empty(self.config);
        self.tls_cert = non_empty(self.tls_cert);
        self.tls_key = non_empty(self.tls_key);
        self.rego_templates = non_empty(self.rego_templates);
        self.rego_filters =
            non_empty(Some(self.rego_filters)).unwrap_or_else(|| DEFAULT_REGO_FILTERS.into());
        self.state_dir = non_empty(self.state_dir);
        self.auth_token_file = non_empty(self.auth_token_file);
        self.tls_client_ca = non_empty(self.tls_client_ca);
        self.cluster.nats_creds = non_empty(self.cluster.nats_creds);
        self.cluster.nats_tls_ca = non_empty(self.cluster.nats_tls_ca);
        self.cluster.nats_tls_cert = non_empty(self.cluster.nats_tls_cert);
        self.cluster.nats_tls_key = non_empty(self.cluster.nats_tls_key);
        self
    }

    /// The connection cap and deadlines of the intake listeners; a zero deadline is an error.
    pub fn connection_limits(&self) -> Result<crate::intake::connections::Limits, String> {
        for (name, value) in [
            ("HOOKER_HEADER_TIMEOUT", self.header_timeout),
            ("HOOKER_READ_TIMEOUT", self.read_timeout),
            ("HOOKER_BODY_TIMEOUT", self.body_timeout),
            ("HOOKER_IDLE_TIMEOUT", self.idle_timeout),
        ] {
            if value.is_zero() {
                return Err(format!("{name} must be longer than 0"));
            }
        }
        Ok(crate::intake::connections::Limits {
            max_connections: self.max_connections,
            header_timeout: self.header_timeout,
            read_timeout: self.read_timeout,
            body_timeout: self.body_timeout,
            idle_timeout: self.idle_timeout,
            h2_keepalive: Some(self.h2_keepalive).filter(|d| !d.is_zero()),
        })
    }

    pub fn workers(&self) -> usize {
        if self.workers > 0 {
            return self.workers;
        }
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(2)
            .min(8)
    }
}
