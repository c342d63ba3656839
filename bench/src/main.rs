//! `hooker-load`: drives a running Hooker over one intake and reports throughput, latency from
//! send to action completion, and the agent's CPU and memory.
//!
//! Every event is the `--event` file with a sequence number added (`"hkbseq": N`). Completion is
//! observed in the forensic log the benchmark routes write to (`--log`): an event is complete
//! when `--expect` lines carrying its number have been appended.
//!
//! - `--rate R`: fixed rate. Event N is *due* at `N / R` seconds; latency is measured from when it
//!   was due, not from when it was sent, so a stalled agent cannot hide its stall (no
//!   coordinated omission). A thread of its own releases each event at its due time: Tokio's
//!   timer wakes on whole milliseconds, which would send events up to a millisecond late and
//!   count that against the agent.
//! - no `--rate`: max rate, `--connections` senders as fast as the agent accepts.

mod agent;
mod forward;
mod grpc;
mod http;
mod tail;

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use clap::Parser;

#[derive(Parser, Debug, Clone)]
#[command(name = "hooker-load", about = "Load generator for Hooker's intakes")]
pub struct Args {
    /// Where to send: http://HOST:PORT, unix:/PATH (HTTP over a Unix socket),
    /// forward://HOST:PORT or forward+unix:/PATH (Fluent Forward), grpc://HOST:PORT.
    #[arg(long)]
    target: String,
    /// The event to send (JSON object).
    #[arg(long)]
    event: PathBuf,
    /// The forensic log the routes append to; completions are read from it.
    #[arg(long)]
    log: PathBuf,
    /// Log lines per completed event (the number of routes the event matches). 0: the event
    /// matches no route, so only intake is measured (nothing is waited for).
    #[arg(long, default_value_t = 1)]
    expect: u32,
    /// Events per second (fixed-rate mode); without it, max-rate mode.
    #[arg(long)]
    rate: Option<u64>,
    /// How long to send.
    #[arg(long, default_value = "10", value_parser = parse_secs)]
    duration: Duration,
    /// Concurrent connections.
    #[arg(long, default_value_t = 4)]
    connections: usize,
    /// Events per request (HTTP: a JSON array; gRPC: a stream batch).
    #[arg(long, default_value_t = 1)]
    batch: usize,
    /// Bearer token for the HTTP intake.
    #[arg(long, env = "HOOKER_AUTH_TOKEN")]
    token: Option<String>,
    /// The agent's pid, to report its CPU time and RSS.
    #[arg(long)]
    pid: Option<u32>,
    /// A label for the summary (e.g. "http 10 routes").
    #[arg(long, default_value = "")]
    label: String,
    /// How long to wait for deliveries to catch up after sending stops.
    #[arg(long, default_value = "60", value_parser = parse_secs)]
    drain: Duration,
    /// No progress bar.
    #[arg(long)]
    quiet: bool,
}

fn parse_secs(text: &str) -> Result<Duration, String> {
    let text = text.trim_end_matches('s');
    text.parse::<f64>()
        .map(Duration::from_secs_f64)
        .map_err(|e| format!("{text}: {e}"))
}

/// Counters shared by senders, the log tail and the reporter.
#[derive(Default)]
pub struct Stats {
    pub sent: AtomicU64,
    pub accepted: AtomicU64,
    pub rejected: AtomicU64,
    pub errors: AtomicU64,
    pub completed: AtomicU64,
}

/// Builds event bodies: the template with `"hkbseq": N` as its first key.
#[derive(Clone)]
pub struct Events {
    rest: Arc<str>,
}

impl Events {
    fn load(path: &PathBuf) -> Result<Events> {
        let text = std::fs::read_to_string(path).with_context(|| path.display().to_string())?;
        let value: serde_json::Value =
            serde_json::from_str(&text).with_context(|| path.display().to_string())?;
        if !value.is_object() {
            bail!("{}: the event must be a JSON object", path.display());
        }
        let compact = serde_json::to_string(&value)?;
        Ok(Events {
            rest: compact[1..].into(),
        })
    }

    pub fn one(&self, seq: u64, out: &mut Vec<u8>) {
        out.extend_from_slice(b"{\"hkbseq\":");
        out.extend_from_slice(seq.to_string().as_bytes());
        if self.rest.len() > 1 {
            out.push(b',');
        }
        out.extend_from_slice(self.rest.as_bytes());
    }

    pub fn batch(&self, first: u64, n: usize) -> Vec<u8> {
        let mut out = Vec::with_capacity((self.rest.len() + 24) * n + 2);
        if n == 1 {
            self.one(first, &mut out);
            return out;
        }
        out.push(b'[');
        for i in 0..n as u64 {
            if i > 0 {
                out.push(b',');
            }
            self.one(first + i, &mut out);
        }
        out.push(b']');
        out
    }
}

/// A TCP or Unix connection.
pub trait Stream: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send {}
impl<T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send> Stream for T {}

/// What a sender answers for one request.
pub enum Outcome {
    Accepted(usize),
    Rejected(usize),
}

/// One connection to the agent's intake.
pub trait Sender: Send {
    fn send(
        &mut self,
        first: u64,
        n: usize,
    ) -> impl std::future::Future<Output = Result<Outcome>> + Send;
}

#[tokio::main(flavor = "multi_thread", worker_threads = 1)]
async fn main() -> Result<()> {
    let args = Args::parse();
    let events = Events::load(&args.event)?;
    let stats = Arc::new(Stats::default());
    let start = Instant::now();
    let rate = args.rate;
    let due = rate.map(|rate| move |seq: u64| Duration::from_secs_f64(seq as f64 / rate as f64));
    let tail = tail::Tail::start(args.log.clone(), args.expect, start, due, stats.clone())?;
    let usage_before = args.pid.map(agent::Usage::read).transpose()?;
    let own_before = agent::Usage::read(std::process::id())?;
    let rss_peak = Arc::new(AtomicU64::new(0));

    let next = Arc::new(AtomicU64::new(0));
    let deadline = start + args.duration;
    let pacer = rate.map(|rate| {
        pace(
            rate,
            args.batch.max(1),
            args.connections.max(1),
            start,
            deadline,
        )
    });
    let mut tasks = Vec::new();
    for _ in 0..args.connections.max(1) {
        let target = args.target.clone();
        let events = events.clone();
        let stats = stats.clone();
        let next = next.clone();
        let args = args.clone();
        let pacer = pacer.clone();
        tasks.push(tokio::spawn(async move {
            let pacer = pacer.as_deref();
            match target.split_once(':').map(|(scheme, _)| scheme) {
                Some("http") | Some("unix") => {
                    let sender =
                        http::HttpSender::connect(&target, events, args.token.clone()).await?;
                    drive(sender, &args, &stats, &next, pacer, start, deadline).await
                }
                Some("forward") | Some("forward+unix") => {
                    let sender = forward::ForwardSender::connect(&target, events).await?;
                    drive(sender, &args, &stats, &next, pacer, start, deadline).await
                }
                Some("grpc") => {
                    let sender = grpc::GrpcSender::connect(&target, events).await?;
                    drive(sender, &args, &stats, &next, pacer, start, deadline).await
                }
                _ => bail!("unsupported target {target}"),
            }
        }));
    }

    let bar = progress(&args);
    let reporter = {
        let stats = stats.clone();
        let rss_peak = rss_peak.clone();
        let pid = args.pid;
        let bar = bar.clone();
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_millis(250)).await;
                if let Some(pid) = pid
                    && let Ok(usage) = agent::Usage::read(pid)
                {
                    rss_peak.fetch_max(usage.rss_kb, Ordering::Relaxed);
                }
                let elapsed = start.elapsed().as_secs_f64();
                bar.set_position(elapsed as u64);
                bar.set_message(format!(
                    "sent {} accepted {} rejected {} completed {}",
                    stats.sent.load(Ordering::Relaxed),
                    stats.accepted.load(Ordering::Relaxed),
                    stats.rejected.load(Ordering::Relaxed),
                    stats.completed.load(Ordering::Relaxed),
                ));
            }
        })
    };
    for task in tasks {
        task.await??;
    }
    let send_time = start.elapsed();
    // Wait for every accepted event's deliveries, as long as progress is being made.
    let mut last = (stats.completed.load(Ordering::Relaxed), Instant::now());
    while args.expect > 0
        && stats.completed.load(Ordering::Relaxed) < stats.accepted.load(Ordering::Relaxed)
    {
        tokio::time::sleep(Duration::from_millis(20)).await;
        let now = stats.completed.load(Ordering::Relaxed);
        if now != last.0 {
            last = (now, Instant::now());
        } else if last.1.elapsed() > args.drain {
            break;
        }
    }
    let total_time = tail.last_completion().unwrap_or(send_time);
    reporter.abort();
    bar.finish_and_clear();
    let usage_after = args.pid.map(agent::Usage::read).transpose()?;
    let own_after = agent::Usage::read(std::process::id())?;
    let latency = tail.latency();

    let accepted = stats.accepted.load(Ordering::Relaxed);
    let completed = stats.completed.load(Ordering::Relaxed);
    // CPU is per event handled: completed, or accepted when nothing is delivered.
    let handled = if args.expect == 0 {
        accepted
    } else {
        completed
    };
    let summary = serde_json::json!({
        "label": args.label,
        "target": args.target.split(':').next().unwrap_or_default(),
        "mode": match args.rate { Some(r) => format!("fixed {r}/s"), None => "max".into() },
        "batch": args.batch,
        "connections": args.connections,
        "seconds": send_time.as_secs_f64(),
        "sent": stats.sent.load(Ordering::Relaxed),
        "accepted": accepted,
        "rejected": stats.rejected.load(Ordering::Relaxed),
        "errors": stats.errors.load(Ordering::Relaxed),
        "completed": completed,
        "accepted_per_s": accepted as f64 / send_time.as_secs_f64(),
        "completed_per_s": completed as f64 / total_time.as_secs_f64().max(1e-9),
        "p50_ms": latency.as_ref().map(|h| h.value_at_quantile(0.5) as f64 / 1000.0),
        "p99_ms": latency.as_ref().map(|h| h.value_at_quantile(0.99) as f64 / 1000.0),
        "p999_ms": latency.as_ref().map(|h| h.value_at_quantile(0.999) as f64 / 1000.0),
        "max_ms": latency.as_ref().map(|h| h.max() as f64 / 1000.0),
        "cpu_ms_per_1k": match (&usage_before, &usage_after) {
            (Some(b), Some(a)) if handled > 0 => Some((a.cpu_ms - b.cpu_ms) as f64 * 1000.0 / handled as f64),
            _ => None,
        },
        // The load generator's own CPU (sending, and reading the log back): on a machine it
        // shares with the agent, what it uses the agent cannot.
        "load_cpu_ms_per_1k": (handled > 0).then(|| (own_after.cpu_ms - own_before.cpu_ms) as f64 * 1000.0 / handled as f64),
        "rss_peak_mb": args.pid.map(|_| rss_peak.load(Ordering::Relaxed) as f64 / 1024.0),
    });
    print_summary(&summary);
    println!("RESULT {summary}");
    if args.expect > 0 && completed < accepted {
        bail!(
            "{} accepted events were not delivered within the drain time",
            accepted - completed
        );
    }
    Ok(())
}

/// Releases one permit per batch at the batch's due time, then one per connection past the
/// deadline so that every sender wakes to see it. A thread, not a Tokio timer, so that events go
/// out on time to within the kernel's timer slack (tens of µs), not Tokio's millisecond tick.
fn pace(
    rate: u64,
    batch: usize,
    connections: usize,
    start: Instant,
    deadline: Instant,
) -> Arc<tokio::sync::Semaphore> {
    let permits = Arc::new(tokio::sync::Semaphore::new(0));
    let released = permits.clone();
    std::thread::spawn(move || {
        for n in 0u64.. {
            let due = start + Duration::from_secs_f64((n * batch as u64) as f64 / rate as f64);
            if due >= deadline {
                break;
            }
            if let Some(wait) = due.checked_duration_since(Instant::now()) {
                std::thread::sleep(wait);
            }
            released.add_permits(1);
        }
        released.add_permits(connections);
    });
    permits
}

/// Sends until the deadline: on schedule in fixed-rate mode (a permit from the pacer per
/// batch), as fast as accepted otherwise.
async fn drive(
    mut sender: impl Sender,
    args: &Args,
    stats: &Stats,
    next: &AtomicU64,
    pacer: Option<&tokio::sync::Semaphore>,
    start: Instant,
    deadline: Instant,
) -> Result<()> {
    let batch = args.batch.max(1);
    loop {
        if let Some(pacer) = pacer {
            pacer.acquire().await?.forget();
        }
        let first = next.fetch_add(batch as u64, Ordering::Relaxed);
        if let Some(rate) = args.rate {
            let due = start + Duration::from_secs_f64(first as f64 / rate as f64);
            if due >= deadline {
                return Ok(());
            }
        } else if Instant::now() >= deadline {
            return Ok(());
        }
        stats.sent.fetch_add(batch as u64, Ordering::Relaxed);
        match sender.send(first, batch).await {
            Ok(Outcome::Accepted(n)) => {
                stats.accepted.fetch_add(n as u64, Ordering::Relaxed);
            }
            Ok(Outcome::Rejected(n)) => {
                stats.rejected.fetch_add(n as u64, Ordering::Relaxed);
                // Back-pressure: the agent asked us to slow down.
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
            Err(err) => {
                stats.errors.fetch_add(batch as u64, Ordering::Relaxed);
                if stats.errors.load(Ordering::Relaxed) < 5 {
                    eprintln!("send failed: {err:#}");
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    }
}

fn progress(args: &Args) -> indicatif::ProgressBar {
    if args.quiet {
        return indicatif::ProgressBar::hidden();
    }
    let bar = indicatif::ProgressBar::new(args.duration.as_secs());
    let style =
        indicatif::ProgressStyle::with_template("{elapsed:>4} [{bar:30}] {pos}/{len}s {msg}")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar());
    bar.set_style(style);
    bar
}

fn print_summary(s: &serde_json::Value) {
    let num = |key: &str| {
        s[key]
            .as_f64()
            .map_or("-".to_string(), |v| format!("{v:.2}"))
    };
    let int = |key: &str| s[key].as_u64().map_or("-".to_string(), |v| v.to_string());
    println!(
        "\n| {:<20} | {:<10} | {:>5} | {:>9} | {:>9} | {:>8} | {:>10} | {:>11} | {:>7} | {:>7} | {:>8} | {:>8} | {:>8} | {:>7} |",
        "run",
        "mode",
        "batch",
        "accepted",
        "rejected",
        "errors",
        "accepted/s",
        "completed/s",
        "p50 ms",
        "p99 ms",
        "p99.9 ms",
        "CPU ms/1k",
        "load CPU",
        "RSS MB"
    );
    println!(
        "| {:<20} | {:<10} | {:>5} | {:>9} | {:>9} | {:>8} | {:>10} | {:>11} | {:>7} | {:>7} | {:>8} | {:>8} | {:>8} | {:>7} |",
        s["label"].as_str().unwrap_or_default(),
        s["mode"].as_str().unwrap_or_default(),
        int("batch"),
        int("accepted"),
        int("rejected"),
        int("errors"),
        num("accepted_per_s"),
        num("completed_per_s"),
        num("p50_ms"),
        num("p99_ms"),
        num("p999_ms"),
        num("cpu_ms_per_1k"),
        num("load_cpu_ms_per_1k"),
        num("rss_peak_mb"),
    );
}
