//! `hooker run`: load and compile the config, start router, dispatcher and listeners, and shut
//! down in order on SIGTERM/SIGINT (stop intake, drain the router, flush aggregations, finish
//! deliveries).

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::Context;
use tokio::sync::{mpsc, watch};

use crate::action::BuildContext;
use crate::config::settings::{DEFAULT_CONFIG_PATH, DEFAULT_LOG_DIR, Listen, RunSettings};
use crate::config::{Config, ConfigError, DEFAULT_CONFIG};
use crate::intake::{http::HttpIntake, serve, unix};
use crate::metrics::{Metrics, OutcomeLabels};
use crate::pipeline::{Paths, Pipeline};
use crate::router::dedup::{DedupStore, MemoryDedup};
use crate::router::{self, RouterOptions};

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
    if let Some(dir) = std::env::var_os("HOOKER_LOG_DIR").filter(|d| !d.is_empty()) {
        return PathBuf::from(dir);
    }
    let system = PathBuf::from(DEFAULT_LOG_DIR);
    if std::fs::create_dir_all(&system).is_ok() && writable(&system) {
        return system;
    }
    let user = std::env::var_os("XDG_STATE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".local/state")))
        .map(|d| d.join("hooker"))
        .unwrap_or_else(|| unix::user_runtime_dir().join("log"));
    tracing::warn!(default = %system.display(), fallback = %user.display(), "Cannot write the default forensic log directory; using a per-user one.");
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

pub async fn run(settings: RunSettings) -> anyhow::Result<()> {
    let metrics = Metrics::new();
    let config = load_config(settings.config.as_deref()).inspect_err(|_| {
        metrics
            .config_reloads
            .get_or_create(&OutcomeLabels { outcome: "failure" })
            .inc();
    })?;
    let source = config
        .source
        .as_ref()
        .map(|p| p.display().to_string())
        .unwrap_or_else(|| "embedded default".into());
    let node = node_name(&settings);
    let cx = BuildContext::new(node.clone())?;
    let pipeline = Pipeline::build(&config, &paths(&settings), &cx)
        .await
        .map_err(|diagnostics| {
            anyhow::anyhow!(
                "{} error(s) in config:\n{diagnostics}",
                diagnostics.errors.len()
            )
        })?;
    for warning in &pipeline.warnings {
        tracing::warn!(%warning, "Config warning.");
    }
    metrics
        .config_reloads
        .get_or_create(&OutcomeLabels { outcome: "success" })
        .inc();
    tracing::info!(config = %source, routes = pipeline.routes.len(), templates = pipeline.templates.len(), actions = pipeline.actions.len(), "Config loaded.");
    let route_names: HashSet<String> = pipeline.routes.iter().map(|r| r.name.to_string()).collect();
    let pipeline = Arc::new(pipeline);

    let dedup: Arc<dyn DedupStore> = Arc::new(MemoryDedup::new(pipeline.max_db_size));
    let purge = {
        let dedup = dedup.clone();
        let every = pipeline.db_verify_interval;
        tokio::spawn(async move {
            let mut ticker = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
            loop {
                ticker.tick().await;
                let purged = dedup.purge_expired();
                tracing::debug!(purged, kept = dedup.len(), "Expired dedup keys purged.");
            }
        })
    };

    let (dispatch_tx, dispatch_rx) = mpsc::channel(1024);
    let dispatcher = tokio::spawn(crate::dispatch::run(
        dispatch_rx,
        settings.max_inflight,
        metrics.clone(),
    ));
    let options = RouterOptions {
        workers: settings.workers(),
        queue_capacity: settings.queue_capacity,
        queue_bytes: settings.queue_bytes,
        node_name: node,
    };
    let router = router::start(
        pipeline.clone(),
        options,
        dispatch_tx,
        dedup,
        metrics.clone(),
    )
    .context("cannot start router threads")?;

    let ready = Arc::new(AtomicBool::new(false));
    let app = HttpIntake {
        router: router.handle.clone(),
        metrics: metrics.clone(),
        routes: Arc::new(route_names),
        max_body: usize::try_from(settings.max_body).unwrap_or(usize::MAX),
        ready: ready.clone(),
        config_name: config.name.clone().unwrap_or_else(|| source.clone()).into(),
    }
    .app();

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
            settings.max_connections,
            metrics.clone(),
            stop_rx.clone(),
        ));
    }
    if let Listen::On(addr) = settings.https {
        let tls =
            crate::tls::server_config(settings.tls_cert.as_deref(), settings.tls_key.as_deref())?;
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .with_context(|| format!("cannot listen on {addr} (HOOKER_HTTPS)"))?;
        let certificate = if settings.tls_cert.is_some() {
            "configured"
        } else {
            "self-signed"
        };
        tracing::info!(intake = "https", address = %listener.local_addr()?, certificate, "Listening.");
        let acceptor = tokio_rustls::TlsAcceptor::from(tls);
        listeners.spawn(serve::serve(
            listener,
            "https",
            app.clone(),
            Some(acceptor),
            settings.max_connections,
            metrics.clone(),
            stop_rx.clone(),
        ));
    }
    let mut socket_guard = None;
    if let Some((path, explicit)) = unix::socket_path(settings.socket.as_deref()) {
        let socket = unix::bind(&path, explicit)?;
        tracing::info!(intake = "unix", path = %socket.path.display(), "Listening.");
        let unix::UnixSocket { listener, path } = socket;
        let guard = unix::SocketFile(path);
        listeners.spawn(serve::serve(
            listener,
            "unix",
            app.clone(),
            None,
            settings.max_connections,
            metrics.clone(),
            stop_rx.clone(),
        ));
        socket_guard = Some(guard);
    }
    ready.store(true, Ordering::Relaxed);
    tracing::info!(version = env!("CARGO_PKG_VERSION"), "Hooker is ready.");

    shutdown_signal().await;
    tracing::info!("Shutting down: intake closed, draining.");
    ready.store(false, Ordering::Relaxed);
    let _ = stop_tx.send(true);
    while listeners.join_next().await.is_some() {}
    drop(socket_guard);
    router.handle.close();
    router.join().await;
    purge.abort();
    match tokio::time::timeout(DRAIN_DEADLINE, dispatcher).await {
        Ok(_) => tracing::info!("All deliveries finished."),
        Err(_) => {
            tracing::warn!(deadline = ?DRAIN_DEADLINE, "Deliveries still running at the shutdown deadline were abandoned.")
        }
    }
    Ok(())
}

async fn shutdown_signal() {
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = terminate => {}
    }
}
