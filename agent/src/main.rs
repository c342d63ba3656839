//! The `hooker` command line. Everything it runs lives in the library.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use hooker::config::settings::{
    DEFAULT_REGO_FILTERS, LogFormat, RunSettings, non_empty, parse_path,
};

/// jemalloc, with one arena and small thread caches (`.cargo/config.toml` builds that setting in;
/// `_RJEM_MALLOC_CONF` overrides it at run time). An event is parsed into a tree of small
/// allocations on an intake thread and freed on the delivery engine's: glibc's allocator spent a
/// quarter of the agent's CPU time on that traffic (BENCHMARKS.md has the before and after).
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

#[derive(Parser)]
#[command(
    name = "hooker",
    version,
    about = "Security alert router and responder for Kubernetes nodes (Postee-compatible)"
)]
#[command(args_conflicts_with_subcommands = true)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    run: RunSettings,
}

#[derive(Subcommand)]
enum Command {
    /// Run the agent (the default).
    Run(Box<RunSettings>),
    /// Check a config: exit 0 when valid (warnings on stderr), 1 with every error otherwise.
    Validate {
        /// Config file (default: HOOKER_CFG, /config/cfg.yaml, or the embedded default).
        cfg: Option<PathBuf>,
        #[command(flatten)]
        rego: RegoDirs,
    },
    /// Dry run: which routes match an event and what each action would send. Nothing is sent.
    TestRoute {
        /// A JSON event (or an array of events).
        #[arg(long)]
        event: PathBuf,
        /// Only this route.
        #[arg(long)]
        route: Option<String>,
        #[arg(long = "cfgfile", visible_alias = "config", env = "HOOKER_CFG", value_parser = parse_path)]
        cfg: Option<PathBuf>,
        #[command(flatten)]
        rego: RegoDirs,
    },
    /// Post event files to a running agent (Unix socket by default).
    Send {
        /// Event files: each a JSON event or a JSON array of events, posted as one request (with
        /// --grpc, its events are streamed).
        #[arg(value_name = "FILES")]
        files: Vec<PathBuf>,
        /// Agent to call over HTTP(S) instead of the Unix socket, e.g. http://127.0.0.1:8082
        /// (`--url` is the old spelling).
        #[arg(long = "agent", alias = "url", value_name = "URL")]
        agent: Option<String>,
        /// The agent's Unix socket (default: the one `run` would use).
        #[arg(long, env = "HOOKER_SOCKET")]
        socket: Option<String>,
        /// Only this route (POST /tenant/{route}).
        #[arg(long)]
        tenant: Option<String>,
        /// Publish over gRPC instead (host:port or unix:/path), streaming batches.
        #[arg(long, conflicts_with = "agent")]
        grpc: Option<String>,
        /// Send the files this many times (a quick load test; with --grpc).
        #[arg(long, default_value_t = 1, requires = "grpc")]
        repeat: usize,
        /// Bearer token, when the agent requires one on TCP.
        #[arg(long, env = "HOOKER_AUTH_TOKEN", hide_env_values = true)]
        token: Option<String>,
    },
    /// Dead letters of a running agent: list, replay into the outbox, or drop.
    Dlq {
        #[command(subcommand)]
        command: DlqCommand,
        /// Agent to call over HTTP(S) instead of the Unix socket, e.g. http://127.0.0.1:8082
        /// (`--url` is the old spelling).
        #[arg(long = "agent", alias = "url", value_name = "URL", global = true)]
        agent: Option<String>,
        /// The agent's Unix socket (default: the one `run` would use).
        #[arg(long, global = true, env = "HOOKER_SOCKET")]
        socket: Option<String>,
        /// Bearer token, when the agent requires one on TCP.
        #[arg(long, global = true, env = "HOOKER_AUTH_TOKEN", hide_env_values = true)]
        token: Option<String>,
    },
    /// Ask a running agent to reload its config (it validates first and keeps the old on error).
    Reload {
        /// Agent to call over HTTP(S) instead of the Unix socket, e.g. http://127.0.0.1:8082
        /// (`--url` is the old spelling).
        #[arg(long = "agent", alias = "url", value_name = "URL")]
        agent: Option<String>,
        /// The agent's Unix socket (default: the one `run` would use).
        #[arg(long, env = "HOOKER_SOCKET")]
        socket: Option<String>,
        /// Bearer token, when the agent requires one on TCP.
        #[arg(long, env = "HOOKER_AUTH_TOKEN", hide_env_values = true)]
        token: Option<String>,
    },
    /// The forensic log (`type: log`): check its hash chain.
    Log {
        #[command(subcommand)]
        command: LogCommand,
    },
    /// Print the version.
    Version,
}

#[derive(Subcommand)]
enum LogCommand {
    /// Check the hash chain of a forensic log and say where it breaks (exit 1 when it does).
    Verify {
        /// A log file, a directory of its segments (rotated files, downloaded objects), or
        /// s3://bucket/prefix/node/ of shipped segments (credentials: the AWS chain).
        target: String,
        /// S3-compatible endpoint, e.g. http://minio:9000 (default: AWS, or AWS_ENDPOINT_URL).
        #[arg(long)]
        endpoint: Option<String>,
        /// S3 region (default: AWS_DEFAULT_REGION, AWS_REGION, or us-east-1).
        #[arg(long)]
        region: Option<String>,
        /// Address buckets as bucket.endpoint rather than endpoint/bucket.
        #[arg(long)]
        virtual_hosted: bool,
        /// A hash the log must still hold, e.g. the last hash of a shipped copy or of an
        /// earlier check: without it, lines deleted from the end cannot be told.
        #[arg(long, value_name = "HASH")]
        last: Option<String>,
    },
}

#[derive(Subcommand)]
enum DlqCommand {
    /// List dead letters as JSON.
    List,
    /// Put dead letters back into the outbox for delivery.
    Replay {
        /// Dead-letter ids, as `dlq list` prints them.
        ids: Vec<u64>,
        /// Every dead letter (instead of ids).
        #[arg(long)]
        all: bool,
    },
    /// Delete dead letters.
    Drop {
        /// Dead-letter ids, as `dlq list` prints them.
        ids: Vec<u64>,
        /// Every dead letter (instead of ids).
        #[arg(long)]
        all: bool,
    },
}

/// Runs an operator call and prints its answer; false on a non-2xx answer.
async fn admin_call(
    target: hooker::send::Target,
    method: &str,
    path: &str,
    body: Option<serde_json::Value>,
    token: Option<&str>,
) -> anyhow::Result<bool> {
    let (status, answer) = hooker::send::admin(&target, method, path, body, token).await?;
    hooker::output::line(answer.trim())?;
    if !(200..300).contains(&status) {
        eprintln!("error: the agent answered {status}");
        return Ok(false);
    }
    Ok(true)
}

/// The request body naming which dead letters: some ids, or all of them.
fn selection(ids: Vec<u64>, all: bool) -> anyhow::Result<serde_json::Value> {
    match (ids.is_empty(), all) {
        (true, true) => Ok(serde_json::json!({ "all": true })),
        (false, false) => Ok(serde_json::json!({ "ids": ids })),
        (true, false) => anyhow::bail!("give dead-letter ids or --all"),
        (false, true) => anyhow::bail!("give either dead-letter ids or --all, not both"),
    }
}

#[derive(clap::Args)]
struct RegoDirs {
    #[arg(long, env = "HOOKER_REGO_FILTERS", default_value = DEFAULT_REGO_FILTERS, value_parser = parse_path)]
    rego_filters: PathBuf,
    #[arg(long, env = "HOOKER_REGO_TEMPLATES", value_parser = parse_path)]
    rego_templates: Option<PathBuf>,
    /// Time budget of one Rego evaluation (as `hooker run`'s `HOOKER_REGO_TIMEOUT`).
    #[arg(long, env = "HOOKER_REGO_TIMEOUT", default_value = "2s", value_parser = hooker::config::units::parse_duration)]
    rego_timeout: std::time::Duration,
}

impl RegoDirs {
    /// The directories, with the Rego time budget set for the engines compiled from them.
    fn paths(self) -> hooker::pipeline::Paths {
        hooker::router::rego::set_timeout(self.rego_timeout);
        hooker::pipeline::Paths {
            rego_filters: non_empty(Some(self.rego_filters))
                .unwrap_or_else(|| PathBuf::from(DEFAULT_REGO_FILTERS)),
            rego_templates: non_empty(self.rego_templates),
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let (debug, format) = match &cli.command {
        Some(Command::Run(run)) => (run.debug, run.log_format),
        None => (cli.run.debug, cli.run.log_format),
        _ => (false, LogFormat::Text),
    };
    hooker::init_logging(debug, format);
    // While the agent runs, what libraries print on stderr themselves (regorus) is logged too.
    let running = matches!(cli.command, None | Some(Command::Run(_)));
    let stderr_to_log = running.then(hooker::stderr::route_to_log).flatten();
    // A fatal error (an invalid config refused by `run`) is logged in the format asked for.
    let json_logs = format == LogFormat::Json;
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("error: cannot start the async runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async move {
        match cli.command {
            None => hooker::run::run(cli.run.without_empty_paths())
                .await
                .map(|()| true),
            Some(Command::Run(run)) => hooker::run::run(run.without_empty_paths())
                .await
                .map(|()| true),
            Some(Command::Validate { cfg, rego }) => {
                let cfg =
                    non_empty(cfg.or_else(|| std::env::var_os("HOOKER_CFG").map(PathBuf::from)));
                hooker::commands::validate(cfg.as_deref(), &rego.paths()).await
            }
            Some(Command::TestRoute {
                event,
                route,
                cfg,
                rego,
            }) => {
                hooker::commands::test_route(
                    non_empty(cfg).as_deref(),
                    &rego.paths(),
                    &event,
                    route.as_deref(),
                )
                .await
            }
            Some(Command::Send {
                files,
                agent,
                socket,
                tenant,
                grpc,
                repeat,
                token,
            }) => {
                if files.is_empty() {
                    return Err(anyhow::anyhow!("give at least one event file"));
                }
                if let Some(address) = grpc {
                    return hooker::send::send_grpc(
                        &address,
                        &files,
                        tenant.as_deref(),
                        repeat,
                        token.as_deref(),
                    )
                    .await;
                }
                let target = hooker::send::Target::resolve(agent, socket.as_deref())?;
                hooker::send::send(&target, &files, tenant.as_deref(), token.as_deref()).await
            }
            Some(Command::Dlq {
                command,
                agent,
                socket,
                token,
            }) => {
                let target = hooker::send::Target::resolve(agent, socket.as_deref())?;
                match command {
                    DlqCommand::List => {
                        admin_call(target, "GET", "/admin/dlq", None, token.as_deref()).await
                    }
                    DlqCommand::Replay { ids, all } => {
                        admin_call(
                            target,
                            "POST",
                            "/admin/dlq/replay",
                            Some(selection(ids, all)?),
                            token.as_deref(),
                        )
                        .await
                    }
                    DlqCommand::Drop { ids, all } => {
                        admin_call(
                            target,
                            "POST",
                            "/admin/dlq/drop",
                            Some(selection(ids, all)?),
                            token.as_deref(),
                        )
                        .await
                    }
                }
            }
            Some(Command::Reload {
                agent,
                socket,
                token,
            }) => {
                let target = hooker::send::Target::resolve(agent, socket.as_deref())?;
                admin_call(target, "POST", "/reload", None, token.as_deref()).await
            }
            Some(Command::Log {
                command:
                    LogCommand::Verify {
                        target,
                        last,
                        endpoint,
                        region,
                        virtual_hosted,
                    },
            }) => {
                let store = hooker::forensic::ship::StoreSettings {
                    bucket: String::new(),
                    endpoint,
                    region,
                    path_style: !virtual_hosted,
                };
                hooker::commands::log_verify(&target, last.as_deref(), &store).await
            }
            Some(Command::Version) => {
                hooker::output::line(format_args!("hooker {}", env!("CARGO_PKG_VERSION")))?;
                Ok(true)
            }
        }
    });
    drop(stderr_to_log);
    match result {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        // The reader of our standard output went away (`hooker dlq list | head -c 100`): it has
        // what it wanted, so stop quietly, as `cat` would.
        Err(err) if hooker::output::is_broken_pipe(&err) => ExitCode::SUCCESS,
        Err(err) if json_logs => {
            tracing::error!(error = %format!("{err:#}"), "Hooker stopped.");
            ExitCode::FAILURE
        }
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}
