//! `hooker run`: load and compile the config, open the state store, start router, delivery engine
//! and listeners, reload on demand, and shut down in order on SIGTERM/SIGINT (stop intake, drain
//! the router, flush aggregations, finish or persist deliveries).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::Context;
use tokio::sync::{mpsc, watch};

use crate::action::BuildContext;
use crate::cluster::Nats;
use crate::cluster::aggregate::Aggregator;
use crate::cluster::relay::Relay;
use crate::cluster::responder::Responder;
use crate::config::settings::{
    DEFAULT_CONFIG_PATH, DEFAULT_LOG_DIR, DEFAULT_STATE_DIR, Listen, Role, RunSettings,
};
use crate::config::{Config, ConfigError, DEFAULT_CONFIG};
use crate::intake::connections::Limits;
use crate::intake::forward::ForwardIntake;
use crate::intake::grpc::{self, GrpcIntake};
use crate::intake::http::{HttpIntake, ReloadRequest};
use crate::intake::tracee::{Backoff, TraceeAddress, TraceeSubscriber};
use crate::intake::{serve, unix};
use crate::metrics::{Metrics, OutcomeLabels};
use crate::outbox::{Op, Outbox, OutboxOptions};
use crate::pipeline::{Paths, Pipeline};
use crate::router::dedup::{DedupStore, MemoryDedup};
use crate::router::{Router, RouterOptions};
use crate::supervise::{self, Health};

/// How long shutdown waits for in-flight deliveries.
const DRAIN_DEADLINE: Duration = Duration::from_secs(20);

/// Which config to use: the given file, else `/config/cfg.yaml`, else the embedded default.
pub fn load_config(path: Option<&Path>) -> Result<Config, ConfigError> {
    if let Some(path) = path {
        return Config::load(path);
    }
    let default = Path::new(DEFAULT_CONFIG_PATH);
    if default.exists() {
        return Config::load(default);
    }
    let log_dir = forensic_log_dir();
    Config::parse(
        &DEFAULT_CONFIG.replace("{{LOG_DIR}}", &log_dir.display().to_string()),
        None,
    )
}

/// `HOOKER_LOG_DIR`, else `/var/log/hooker` when writable, else a per-user directory (announced).
fn forensic_log_dir() -> PathBuf {
    let setting = std::env::var_os("HOOKER_LOG_DIR")
        .filter(|d| !d.is_empty())
        .map(PathBuf::from);
    system_or_user_dir(setting, DEFAULT_LOG_DIR, "log", "forensic log")
}

/// The configured directory; else `system` when it can be written; else `<user state>/hooker/<leaf>`
/// (`$XDG_STATE_HOME`, `~/.local/state`), announced, so `hooker run` works without root.
fn system_or_user_dir(setting: Option<PathBuf>, system: &str, leaf: &str, what: &str) -> PathBuf {
    if let Some(dir) = setting {
        return dir;
    }
    let system = PathBuf::from(system);
    if std::fs::create_dir_all(&system).is_ok() && writable(&system) {
        return system;
    }
    let user = std::env::var_os("XDG_STATE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".local/state")))
        .map(|d| d.join("hooker"))
        .unwrap_or_else(unix::user_runtime_dir)
        .join(leaf);
    tracing::warn!(default = %system.display(), fallback = %user.display(), "Cannot write the default {what} directory; using a per-user one.");
    user
}

fn writable(dir: &Path) -> bool {
    let probe = dir.join(format!(".hooker-probe-{}", std::process::id()));
    let ok = std::fs::write(&probe, b"").is_ok();
    let _ = std::fs::remove_file(probe);
    ok
}

pub fn node_name(settings: &RunSettings) -> String {
    settings
        .node_name
        .clone()
        .or_else(|| {
            nix::unistd::gethostname()
                .ok()
                .and_then(|h| h.into_string().ok())
        })
        .unwrap_or_else(|| "unknown".into())
}

pub fn paths(settings: &RunSettings) -> Paths {
    Paths {
        rego_filters: settings.rego_filters.clone(),
        rego_templates: settings.rego_templates.clone(),
    }
}

/// `HOOKER_STATE_DIR`, else `/var/lib/hooker` when writable, else a per-user directory (announced).
fn state_dir(settings: &RunSettings) -> PathBuf {
    system_or_user_dir(
        settings.state_dir.clone(),
        DEFAULT_STATE_DIR,
        "state",
        "state",
    )
}

/// Loads and compiles the config; `Err` is the full report of what is wrong. With a `relay`
/// (cluster mode, node role), the actions that run on the responder are relayed to it.
async fn compile(
    settings: &RunSettings,
    cx: &BuildContext,
    relay: Option<&Arc<Relay>>,
) -> Result<(Config, Pipeline), String> {
    let config = load_config(settings.config.as_deref()).map_err(|e| e.to_string())?;
    let mut pipeline = Pipeline::build(&config, &paths(settings), cx)
        .await
        .map_err(|diagnostics| {
            format!(
                "{} error(s) in config:\n{diagnostics}",
                diagnostics.errors.len()
            )
        })?;
    if let Some(relay) = relay {
        relay.wrap(&config, &mut pipeline);
    }
    Ok((config, pipeline))
}

fn status_of(config: &Config, last_reload: serde_json::Value) -> serde_json::Value {
    let source = config
        .source
        .as_ref()
        .map(|p| p.display().to_string())
        .unwrap_or_else(|| "embedded default".into());
    serde_json::json!({ "config": config.name.clone().unwrap_or_else(|| source.clone()), "source": source, "last_reload": last_reload })
}

/// Sends `true` on its stop channel when dropped, also on an early return.
struct StopOnDrop(watch::Sender<bool>);

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        let _ = self.0.send(true);
    }
}

pub async fn run(settings: RunSettings) -> anyhow::Result<()> {
    crate::router::rego::set_timeout(settings.rego_timeout);
    let metrics = Metrics::new();
    let node = node_name(&settings);
    let cx = BuildContext::new(node.clone())?.running();
    let (settings, nats) = cluster_mode(settings, &node).await?;
    let relay = match (&nats, settings.cluster.role) {
        (Some(nats), Role::Node) => Some(Relay::new(nats.clone(), node.clone(), metrics.clone())),
        _ => None,
    };
    let (config, pipeline) = compile(&settings, &cx, relay.as_ref())
        .await
        .map_err(|report| {
            metrics
                .config_reloads
                .get_or_create(&OutcomeLabels { outcome: "failure" })
                .inc();
            anyhow::anyhow!(report)
        })?;
    for warning in &pipeline.warnings {
        tracing::warn!(%warning, "Config warning.");
    }
    metrics.start_at_zero(
        pipeline.actions.keys().map(String::as_str),
        &intakes_on(&settings),
    );
    metrics
        .config_reloads
        .get_or_create(&OutcomeLabels { outcome: "success" })
        .inc();
    let status = Arc::new(std::sync::Mutex::new(status_of(
        &config,
        serde_json::json!({ "outcome": "success" }),
    )));
    tracing::info!(
        config = status_of(&config, serde_json::Value::Null)["source"]
            .as_str()
            .unwrap_or_default(),
        routes = pipeline.routes.len(),
        native_routes = pipeline.native_routes(),
        templates = pipeline.templates.len(),
        actions = pipeline.actions.len(),
        "Config loaded."
    );
    let tokens = crate::auth::Tokens::load(&crate::auth::TokenSources::new(
        settings.auth_token.as_deref(),
        settings.auth_token_file.as_deref(),
        |name: &str| std::env::var_os(name),
    ))?
    .map(Arc::new);
    warn_if_open(&settings, tokens.is_some());

    let store_path = state_dir(&settings).join("hooker.redb");
    let outbox_options = OutboxOptions {
        path: store_path.clone(),
        max_pending: settings.outbox_max_pending,
        max_pending_bytes: settings.outbox_max_pending_bytes,
        max_bytes: settings.outbox_max_bytes,
    };
    let (outbox, recovered, engine_start) = Outbox::open(outbox_options, metrics.clone())
        .with_context(|| format!("cannot open the state store {}", store_path.display()))?;
    tracing::info!(path = %store_path.display(), "State store open.");

    let dedup_store = Arc::new(MemoryDedup::new(pipeline.max_db_size));
    dedup_store.restore(recovered.dedup);
    let dedup: Arc<dyn DedupStore> = dedup_store;
    let ready = Arc::new(AtomicBool::new(false));
    let health = Health::new(ready.clone(), status.clone());
    let purge = {
        let dedup = dedup.clone();
        let outbox = outbox.clone();
        let every = pipeline.db_verify_interval;
        supervise::spawn("dedup purge", health.clone(), move || {
            let dedup = dedup.clone();
            let outbox = outbox.clone();
            async move {
                let mut ticker =
                    tokio::time::interval_at(tokio::time::Instant::now() + every, every);
                loop {
                    ticker.tick().await;
                    let purged = dedup.purge_expired();
                    tracing::debug!(
                        purged = purged.len(),
                        kept = dedup.len(),
                        "Expired dedup keys purged."
                    );
                    if !purged.is_empty() {
                        outbox
                            .store()
                            .write(purged.into_iter().map(Op::RemoveDedup).collect(), None);
                    }
                }
            }
        })
    };

    let options = RouterOptions {
        workers: settings.workers(),
        queue_capacity: settings.queue_capacity,
        queue_bytes: settings.queue_bytes,
        node_name: node,
    };
    let router = Router::start(
        Arc::new(pipeline),
        options,
        outbox.clone(),
        dedup,
        recovered.aggregate,
        metrics.clone(),
    )
    .context("cannot start router threads")?;
    let (engine_stop_tx, engine_stop_rx) = watch::channel(false);
    // A start that fails after this point (a port in use) is a stop, not a dead engine: the
    // guard says so before the router it drains goes away.
    let engine_stop_tx = StopOnDrop(engine_stop_tx);
    let engine = supervise::spawn_once(
        "delivery engine",
        health.clone(),
        engine_stop_rx.clone(),
        crate::outbox::run_engine(
            outbox.clone(),
            engine_start,
            router.pipeline(),
            settings.max_inflight,
            engine_stop_rx,
            DRAIN_DEADLINE,
        ),
    );

    let (reload_tx, reload_rx) = mpsc::channel::<ReloadRequest>(8);
    let limits = settings
        .connection_limits()
        .map_err(|e| anyhow::anyhow!(e))?;
    let apps = HttpIntake {
        router: router.handle.clone(),
        metrics: metrics.clone(),
        max_body: usize::try_from(settings.max_body).unwrap_or(usize::MAX),
        ready: ready.clone(),
        status: status.clone(),
        tokens: tokens.clone(),
        outbox: outbox.clone(),
        reload: reload_tx.clone(),
    };
    // A responder is not an intake: its listener keeps the admin endpoints and the probes.
    let apps = if nats.is_some() && settings.cluster.role == Role::Responder {
        apps.responder_apps()
    } else {
        apps.apps()
    };
    let app = apps.intake;

    let (stop_tx, stop_rx) = watch::channel(false);
    let mut listeners = tokio::task::JoinSet::new();
    if let Listen::On(addr) = settings.http {
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .with_context(|| format!("cannot listen on {addr} (HOOKER_HTTP)"))?;
        tracing::info!(intake = "http", address = %listener.local_addr()?, "Listening.");
        listeners.spawn(serve::serve(
            listener,
            "http",
            app.clone(),
            None,
            limits,
            metrics.clone(),
            stop_rx.clone(),
        ));
    }
    if let Listen::On(addr) = settings.https {
        let tls = crate::tls::server_config(
            settings.tls_cert.as_deref(),
            settings.tls_key.as_deref(),
            settings.tls_client_ca.as_deref(),
        )?;
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .with_context(|| format!("cannot listen on {addr} (HOOKER_HTTPS)"))?;
        let certificate = if settings.tls_cert.is_some() {
            "configured"
        } else {
            "self-signed"
        };
        tracing::info!(intake = "https", address = %listener.local_addr()?, certificate, client_certificates = settings.tls_client_ca.is_some(), "Listening.");
        let acceptor = tokio_rustls::TlsAcceptor::from(tls);
        listeners.spawn(serve::serve(
            listener,
            "https",
            app.clone(),
            Some(acceptor),
            limits,
            metrics.clone(),
            stop_rx.clone(),
        ));
    }
    let mut socket_guard = None;
    if let Some((path, explicit)) = unix::socket_path(settings.socket.as_deref()) {
        let socket = unix::bind(&path, explicit)?;
        tracing::info!(intake = "unix", path = %socket.path.display(), "Listening.");
        let unix::UnixSocket { listener, path } = socket;
        socket_guard = Some(unix::SocketFile(path));
        listeners.spawn(serve::serve(
            listener,
            "unix",
            app.clone(),
            None,
            limits,
            metrics.clone(),
            stop_rx.clone(),
        ));
    }

    if let Listen::On(addr) = settings.probes {
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .with_context(|| format!("cannot listen on {addr} (HOOKER_PROBES)"))?;
        tracing::info!(intake = "probes", address = %listener.local_addr()?, "Listening.");
        listeners.spawn(serve::serve(
            listener,
            "probes",
            apps.probes,
            None,
            Limits::PROBES,
            metrics.clone(),
            stop_rx.clone(),
        ));
    }

    let mut socket_guards = Vec::new();
    let grpc_intake = GrpcIntake {
        router: router.handle.clone(),
        metrics: metrics.clone(),
        ready: ready.clone(),
        stream_wait: settings.grpc_stream_wait,
    };
    socket_guards.extend(
        start_grpc(
            &settings,
            grpc_intake,
            tokens,
            limits,
            &mut listeners,
            &stop_rx,
        )
        .await?,
    );
    socket_guards.extend(
        start_forward(
            &settings,
            &router,
            &metrics,
            limits,
            &mut listeners,
            &stop_rx,
        )
        .await?,
    );
    start_tracee(&settings, &router, &metrics, &mut listeners, &stop_rx)?;
    if let (Some(nats), Role::Responder) = (nats, settings.cluster.role) {
        let aggregator = Aggregator::new(
            nats.clone(),
            outbox.clone(),
            metrics.clone(),
            router.pipeline(),
        );
        listeners.spawn(aggregator.run(stop_rx.clone()));
        let responder = Responder::new(nats, outbox.clone(), metrics.clone());
        listeners.spawn(responder.run(stop_rx.clone()));
    }

    let router = Arc::new(router);
    let reloader = spawn_reloader(
        Reloader {
            settings: settings.clone(),
            cx: cx.clone(),
            relay,
            router: router.clone(),
            metrics: metrics.clone(),
            status: status.clone(),
            health: health.clone(),
        },
        reload_rx,
    );
    let _watcher = if settings.watch_config {
        config
            .source
            .as_deref()
            .and_then(|path| watch_config(path, reload_tx.clone()))
    } else {
        None
    };
    // Registered before "ready": a SIGHUP's default action would end the process.
    let hangups = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
        .context("cannot handle SIGHUP")?;
    let sighup = tokio::spawn(forward_sighup(hangups, reload_tx.clone()));

    let signals = ShutdownSignals::register().context("cannot handle SIGTERM")?;
    if health.set_ready() {
        tracing::info!(version = env!("CARGO_PKG_VERSION"), "Hooker is ready.");
    }

    signals.wait().await;
    tracing::info!("Shutting down: intake closed, draining.");
    ready.store(false, Ordering::Relaxed);
    let _ = stop_tx.send(true);
    while listeners.join_next().await.is_some() {}
    drop(socket_guard);
    drop(socket_guards);
    sighup.abort();
    reloader.abort();
    let _ = reloader.await;
    purge.abort();
    if let Ok(router) = Arc::try_unwrap(router) {
        router.shutdown().await;
    } else {
        tracing::warn!("Router still referenced at shutdown.");
    }
    // Barrier: once this commits, the aggregators' last deliveries are on disk and with the engine.
    let _ = outbox.store().write_and_wait(Vec::new()).await;
    let _ = engine_stop_tx.0.send(true);
    let _ = engine.await;
    tracing::info!("Stopped; pending deliveries resume at the next start.");
    Ok(())
}

/// Cluster mode (`HOOKER_NATS`): connects to NATS (in the background: the agent starts while
/// NATS is down). A responder takes no events from the node (no socket, gRPC, Forward or
/// Tracee intake); it keeps HTTP for its admin endpoints and the probes.
async fn cluster_mode(
    mut settings: RunSettings,
    node: &str,
) -> anyhow::Result<(RunSettings, Option<Nats>)> {
    let role = settings.cluster.role;
    if !settings.cluster.enabled() {
        if role == Role::Responder {
            anyhow::bail!(
                "HOOKER_ROLE=responder needs HOOKER_NATS (the NATS servers to consume from)"
            );
        }
        return Ok((settings, None));
    }
    let nats = Nats::connect(&settings.cluster, &format!("hooker-{node}")).await?;
    tracing::info!(role = ?role, servers = %settings.cluster.nats.join(","), stream = %settings.cluster.nats_stream, "Cluster mode.");
    if role == Role::Responder {
        settings.socket = Some("off".into());
        settings.grpc = Listen::Off;
        settings.grpc_socket = None;
        settings.forward = Listen::Off;
        settings.forward_socket = None;
        settings.tracee = None;
    }
    Ok((settings, Some(nats)))
}

/// What a reload needs; cloned into each start of the reload task.
#[derive(Clone)]
struct Reloader {
    settings: RunSettings,
    cx: BuildContext,
    relay: Option<Arc<Relay>>,
    router: Arc<Router>,
    metrics: Metrics,
    status: Arc<std::sync::Mutex<serde_json::Value>>,
    health: Health,
}

/// Starts the reload task under supervision: should it ever panic, it starts again on the same
/// request queue, so reloading is never lost for the rest of the process's life.
fn spawn_reloader(
    reloader: Reloader,
    requests: mpsc::Receiver<ReloadRequest>,
) -> tokio::task::JoinHandle<()> {
    let requests = Arc::new(tokio::sync::Mutex::new(requests));
    let health = reloader.health.clone();
    supervise::spawn("reload", health, move || {
        reload_loop(reloader.clone(), requests.clone())
    })
}

/// Serialises reloads from every trigger (file watch, SIGHUP, `POST /reload`): validate first,
/// swap atomically; a bad config keeps the running one and is reported. A reload that panics
/// (a bug meeting an unexpected config) is reported as a failed reload, and the loop goes on.
async fn reload_loop(
    reloader: Reloader,
    requests: Arc<tokio::sync::Mutex<mpsc::Receiver<ReloadRequest>>>,
) {
    let mut requests = requests.lock().await;
    while let Some((trigger, reply)) = requests.recv().await {
        // Coalesce a burst (an editor's save, a ConfigMap swap) into one reload.
        let mut replies = vec![reply];
        tokio::time::sleep(Duration::from_millis(200)).await;
        while let Ok((_, reply)) = requests.try_recv() {
            replies.push(reply);
        }
        let attempt = std::panic::AssertUnwindSafe(reloader.reload(trigger));
        let outcome = match futures_util::FutureExt::catch_unwind(attempt).await {
            Ok(outcome) => outcome,
            Err(panic) => {
                let report = format!(
                    "reloading panicked: {}",
                    supervise::panic_message(panic.as_ref())
                );
                reloader.failed(trigger, &report);
                Err(report)
            }
        };
        for reply in replies {
            let _ = reply.send(outcome.clone());
        }
    }
}

impl Reloader {
    /// One reload: compile, swap, report.
    async fn reload(&self, trigger: &'static str) -> Result<(), String> {
        match compile(&self.settings, &self.cx, self.relay.as_ref()).await {
            Ok((config, pipeline)) => {
                for warning in &pipeline.warnings {
                    tracing::warn!(%warning, "Config warning.");
                }
                tracing::info!(
                    trigger,
                    routes = pipeline.routes.len(),
                    actions = pipeline.actions.len(),
                    "Config reloaded."
                );
                self.metrics
                    .start_at_zero(pipeline.actions.keys().map(String::as_str), &[]);
                self.router.reload(Arc::new(pipeline));
                self.metrics
                    .config_reloads
                    .get_or_create(&OutcomeLabels { outcome: "success" })
                    .inc();
                if let Ok(mut status) = self.status.lock() {
                    *status = status_of(
                        &config,
                        serde_json::json!({ "outcome": "success", "trigger": trigger }),
                    );
                }
                self.health.publish();
                Ok(())
            }
            Err(report) => {
                self.failed(trigger, &report);
                Err(report)
            }
        }
    }

    /// Reports a failed reload: the running config stays.
    fn failed(&self, trigger: &'static str, report: &str) {
        tracing::error!(trigger, error = %report, "Config reload failed; the running config stays.");
        self.metrics
            .config_reloads
            .get_or_create(&OutcomeLabels { outcome: "failure" })
            .inc();
        if let Ok(mut status) = self.status.lock()
            && let serde_json::Value::Object(map) = &mut *status
        {
            map.insert(
                "last_reload".into(),
                serde_json::json!({ "outcome": "failure", "trigger": trigger, "error": report }),
            );
        }
    }
}

/// Watches the config file's directory: Kubernetes ConfigMap mounts replace the file by
/// swapping a `..data` symlink, which a watch on the file itself would miss. Changes to other
/// files in that directory are ignored.
fn watch_config(
    path: &Path,
    reload: mpsc::Sender<ReloadRequest>,
) -> Option<notify::RecommendedWatcher> {
    use notify::Watcher;
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."))
        .to_path_buf();
    let name = path.file_name().map(|n| n.to_os_string());
    let handler = move |event: notify::Result<notify::Event>| {
        let Ok(event) = event else { return };
        if matches!(event.kind, notify::EventKind::Access(_)) {
            return;
        }
        // Only the config file itself, or a ConfigMap's `..data` swap: other files in the same
        // directory (a forensic log, say) must not cost a reload per write.
        let concerns_config = event.paths.is_empty()
            || event.paths.iter().any(|changed| {
                let changed = changed.file_name();
                changed == name.as_deref()
                    || changed.is_some_and(|n| n.to_string_lossy().starts_with(".."))
            });
        if !concerns_config {
            return;
        }
        let (tx, _) = tokio::sync::oneshot::channel();
        // A full queue means a reload is already pending, which will read the new file.
        let _ = reload.try_send(("file", tx));
    };
    match notify::recommended_watcher(handler).and_then(|mut w| {
        w.watch(&dir, notify::RecursiveMode::NonRecursive)
            .map(|()| w)
    }) {
        Ok(watcher) => {
            tracing::info!(dir = %dir.display(), "Watching the config for changes.");
            Some(watcher)
        }
        Err(error) => {
            tracing::warn!(dir = %dir.display(), %error, "Cannot watch the config; reload with SIGHUP or POST /reload.");
            None
        }
    }
}

async fn forward_sighup(
    mut hangups: tokio::signal::unix::Signal,
    reload: mpsc::Sender<ReloadRequest>,
) {
    while hangups.recv().await.is_some() {
        let (tx, _) = tokio::sync::oneshot::channel();
        if reload.send(("sighup", tx)).await.is_err() {
            return;
        }
    }
}

/// SIGTERM or SIGINT, registered up front so a signal right after "ready" is never lost.
struct ShutdownSignals {
    terminate: tokio::signal::unix::Signal,
    interrupt: tokio::signal::unix::Signal,
}

impl ShutdownSignals {
    fn register() -> std::io::Result<ShutdownSignals> {
        use tokio::signal::unix::{SignalKind, signal};
        Ok(ShutdownSignals {
            terminate: signal(SignalKind::terminate())?,
            interrupt: signal(SignalKind::interrupt())?,
        })
    }

    async fn wait(mut self) {
        tokio::select! {
            _ = self.terminate.recv() => {}
            _ = self.interrupt.recv() => {}
        }
    }
}

/// The intakes these settings start, by their `intake` metric label.
fn intakes_on(settings: &RunSettings) -> Vec<&'static str> {
    let on = |listen: Listen| matches!(listen, Listen::On(_));
    let set =
        |path: &Option<String>| unix::socket_path(Some(path.as_deref().unwrap_or("off"))).is_some();
    [
        ("http", on(settings.http)),
        ("https", on(settings.https)),
        (
            "unix",
            unix::socket_path(settings.socket.as_deref()).is_some(),
        ),
        ("grpc", on(settings.grpc) || set(&settings.grpc_socket)),
        (
            "forward",
            on(settings.forward) || set(&settings.forward_socket),
        ),
        (
            "tracee",
            matches!(
                TraceeAddress::parse(settings.tracee.as_deref().unwrap_or("off")),
                Ok(Some(_))
            ),
        ),
    ]
    .into_iter()
    .filter_map(|(intake, started)| started.then_some(intake))
    .collect()
}

/// Warns when a TCP listener that takes tokens (HTTP, HTTPS, gRPC) runs without one: anyone
/// who reaches it can post events, reload the config and manage the dead letters.
fn warn_if_open(settings: &RunSettings, has_tokens: bool) {
    let open: Vec<&str> = [
        ("http", settings.http),
        ("https", settings.https),
        ("grpc", settings.grpc),
    ]
    .into_iter()
    .filter_map(|(name, listen)| matches!(listen, Listen::On(_)).then_some(name))
    .collect();
    if !has_tokens && !open.is_empty() {
        tracing::warn!(
            listeners = %open.join(","),
            "No bearer token is set (HOOKER_AUTH_TOKEN or HOOKER_AUTH_TOKEN_FILE): anyone who can reach these TCP listeners can post events, reload the config and manage dead letters."
        );
    }
}

/// The gRPC intake on TCP (`HOOKER_GRPC`, TLS with `HOOKER_GRPC_TLS`) and on a Unix socket
/// (`HOOKER_GRPC_SOCKET`); returns the socket file to remove at shutdown.
async fn start_grpc(
    settings: &RunSettings,
    intake: GrpcIntake,
    tokens: Option<Arc<crate::auth::Tokens>>,
    limits: Limits,
    listeners: &mut tokio::task::JoinSet<()>,
    stop: &watch::Receiver<bool>,
) -> anyhow::Result<Option<unix::SocketFile>> {
    let metrics = intake.metrics.clone();
    let max_message = usize::try_from(settings.max_body).unwrap_or(usize::MAX);
    let app = intake
        .app(grpc::AppOptions {
            max_message,
            tokens,
        })
        .context("cannot build the gRPC reflection service")?;
    if let Listen::On(addr) = settings.grpc {
        let tls = if settings.grpc_tls {
            let config = crate::tls::server_config(
                settings.tls_cert.as_deref(),
                settings.tls_key.as_deref(),
                settings.tls_client_ca.as_deref(),
            )?;
            Some(tokio_rustls::TlsAcceptor::from(config))
        } else {
            None
        };
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .with_context(|| format!("cannot listen on {addr} (HOOKER_GRPC)"))?;
        let client_certificates = settings.grpc_tls && settings.tls_client_ca.is_some();
        tracing::info!(intake = grpc::TCP_LISTENER, address = %listener.local_addr()?, tls = settings.grpc_tls, client_certificates, "Listening.");
        listeners.spawn(serve::serve(
            listener,
            grpc::TCP_LISTENER,
            app.clone(),
            tls,
            limits,
            metrics.clone(),
            stop.clone(),
        ));
    }
    let Some((path, _)) = unix::socket_path(Some(settings.grpc_socket.as_deref().unwrap_or("off")))
    else {
        return Ok(None);
    };
    let socket = unix::bind(&path, true)?;
    tracing::info!(intake = grpc::UNIX_LISTENER, path = %socket.path.display(), "Listening.");
    // grpcurl and grpcio send the socket path as `:authority`: see intake/h2_authority.rs.
    listeners.spawn(serve::serve(
        crate::intake::h2_authority::Listener(socket.listener),
        grpc::UNIX_LISTENER,
        app,
        None,
        limits,
        metrics,
        stop.clone(),
    ));
    Ok(Some(unix::SocketFile(socket.path)))
}

/// The Fluent Forward intake on TCP (`HOOKER_FORWARD`) and a Unix socket
/// (`HOOKER_FORWARD_SOCKET`); returns the socket file to remove at shutdown.
async fn start_forward(
    settings: &RunSettings,
    router: &Router,
    metrics: &Metrics,
    limits: Limits,
    listeners: &mut tokio::task::JoinSet<()>,
    stop: &watch::Receiver<bool>,
) -> anyhow::Result<Option<unix::SocketFile>> {
    let intake = Arc::new(ForwardIntake {
        router: router.handle.clone(),
        metrics: metrics.clone(),
        max_frame: usize::try_from(settings.max_body).unwrap_or(usize::MAX),
        shed_log: Default::default(),
    });
    if let Listen::On(addr) = settings.forward {
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .with_context(|| format!("cannot listen on {addr} (HOOKER_FORWARD)"))?;
        tracing::info!(intake = "forward", address = %listener.local_addr()?, "Listening.");
        listeners.spawn(
            intake
                .clone()
                .serve(listener, "forward", limits, stop.clone()),
        );
    }
    let Some((path, _)) =
        unix::socket_path(Some(settings.forward_socket.as_deref().unwrap_or("off")))
    else {
        return Ok(None);
    };
    let socket = unix::bind(&path, true)?;
    tracing::info!(intake = "forward_unix", path = %socket.path.display(), "Listening.");
    listeners.spawn(intake.serve(socket.listener, "forward_unix", limits, stop.clone()));
    Ok(Some(unix::SocketFile(socket.path)))
}

/// The Tracee subscriber (`HOOKER_TRACEE`), when configured.
fn start_tracee(
    settings: &RunSettings,
    router: &Router,
    metrics: &Metrics,
    listeners: &mut tokio::task::JoinSet<()>,
    stop: &watch::Receiver<bool>,
) -> anyhow::Result<()> {
    let Some(address) = TraceeAddress::parse(settings.tracee.as_deref().unwrap_or("off"))
        .map_err(|e| anyhow::anyhow!("HOOKER_TRACEE: {e}"))?
    else {
        return Ok(());
    };
    let policies: Vec<String> = settings
        .tracee_policies
        .iter()
        .map(|p| p.trim().to_string())
        .filter(|p| !p.is_empty())
        .collect();
    tracing::info!(intake = "tracee", %address, ?policies, "Subscribing to Tracee.");
    let subscriber = TraceeSubscriber {
        address,
        policies,
        router: router.handle.clone(),
        metrics: metrics.clone(),
        max_message: usize::try_from(settings.max_body).unwrap_or(usize::MAX),
        backoff: Backoff::new(Duration::from_millis(250), Duration::from_secs(30)),
    };
    listeners.spawn(subscriber.run(stop.clone()));
    Ok(())
}
