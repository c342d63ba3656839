//! `type: log` (Hooker's own): appends each message, with its event, as one JSON line to a
//! per-node forensic log, rotating by size and keeping `max-files` old files.
//!
//! Every line is sealed into a hash chain as it is written ([`crate::forensic::chain`]): the
//! chain's last link lives with the file, is carried across rotation, and is read back from the
//! file's last line when the agent restarts, so one chain runs through the log's whole life.
//!
//! With `ship:`, a rotated file is renamed `<path>.<date>.<first seq>` (not numbered, and not
//! counted by `max-files`) and left to [`crate::forensic::ship`], which removes it once its upload
//! is confirmed.
//!
//! Lines are written by the senders themselves, one at a time (the file is the writer's turn,
//! see [`Turn`]): a `send` that finds the file free writes its line together with every line that
//! queued meanwhile, in one `write` call, answers their senders, and hands the file to the next
//! sender waiting, if any. So a busy node pays one system call per batch and no thread hand-off:
//! a writer thread cost two context switches and a futex wake per batch, which measured 7 µs of
//! CPU per HTTP request at 23,500 requests/s. The write is a blocking call on a runtime thread;
//! it goes to the page cache, and only one sender writes at a time, so a slow disk holds up at
//! most one runtime thread.

use std::collections::VecDeque;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use async_trait::async_trait;
use serde::Deserialize;

use super::{Action, ActionError, BuildContext, Built, Report};
use crate::config::{ActionConfig, Diagnostic, units};
use crate::forensic::chain::{self, Link};
use crate::forensic::ship;
use crate::message::Message;

const DEFAULT_MAX_SIZE: u64 = 100 << 20;
const DEFAULT_MAX_FILES: u32 = 5;

#[derive(Debug, Deserialize)]
#[serde(rename_all = "kebab-case")]
struct LogConfig {
    path: PathBuf,
    #[serde(default, deserialize_with = "units::de_byte_size")]
    max_size: Option<u64>,
    #[serde(default)]
    max_files: Option<u32>,
    #[serde(default)]
    ship: Option<ShipConfig>,
}

/// `ship:`: where the segments go.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
struct ShipConfig {
    bucket: String,
    #[serde(default = "default_prefix")]
    prefix: String,
    #[serde(default)]
    endpoint: Option<String>,
    #[serde(default)]
    region: Option<String>,
    #[serde(default = "default_path_style")]
    path_style: bool,
    #[serde(default, deserialize_with = "units::de_duration")]
    interval: Option<Duration>,
}

fn default_prefix() -> String {
    "hooker-forensic".into()
}

fn default_path_style() -> bool {
    true
}

const DEFAULT_SHIP_INTERVAL: Duration = Duration::from_secs(300);

pub struct Log {
    name: String,
    node: String,
    path: PathBuf,
    writer: Arc<Mutex<Writer>>,
    /// `s3://bucket/prefix/node/`, when shipped.
    ship_to: Option<String>,
    /// The shipping task of a running agent, stopped with the action.
    _shipper: Option<AbortOnDrop>,
}

struct AbortOnDrop(tokio::task::AbortHandle);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// The file, unless a sender is writing it, and the lines waiting meanwhile.
struct Writer {
    file: Option<LogFile>,
    queue: VecDeque<Append>,
}

/// A line waiting for the file, and where to answer its sender.
struct Append {
    line: Vec<u8>,
    done: tokio::sync::oneshot::Sender<Turn>,
}

/// What a waiting sender is told.
enum Turn {
    /// Its line was written (or failed with the batch it was in).
    Written(Result<(), String>),
    /// The file is its to write, with its line and whatever queued meanwhile.
    Write(Handed, Vec<u8>),
}

/// The file on its way to a waiting sender. Dropped unreceived (the sender's delivery was
/// cancelled after the hand-over), it goes on to the next sender waiting, so it is never lost.
struct Handed {
    file: Option<LogFile>,
    writer: Arc<Mutex<Writer>>,
}

impl Drop for Handed {
    fn drop(&mut self) {
        if let Some(file) = self.file.take() {
            hand_over(&self.writer, file);
        }
    }
}

/// Gives `file` to the first sender still waiting, or puts it back.
fn hand_over(writer: &Arc<Mutex<Writer>>, file: LogFile) {
    let mut file = Some(file);
    let mut state = lock(writer);
    while let Some(free) = file.take() {
        let Some(next) = state.queue.pop_front() else {
            state.file = Some(free);
            break;
        };
        let handed = Handed {
            file: Some(free),
            writer: writer.clone(),
        };
        // A sender that stopped waiting gives the file back.
        if let Err(Turn::Write(mut back, _)) = next.done.send(Turn::Write(handed, next.line)) {
            file = back.file.take();
        }
    }
}

fn lock(writer: &Mutex<Writer>) -> std::sync::MutexGuard<'_, Writer> {
    writer.lock().unwrap_or_else(PoisonError::into_inner)
}

struct LogFile {
    path: PathBuf,
    max_size: u64,
    max_files: u32,
    open: Option<(File, u64)>,
    /// The chain's last line, valid once `recovered`.
    last: Option<Link>,
    /// `last` was read back from the files (false at start and after a failed write, whose
    /// lines may or may not be on disk).
    recovered: bool,
    /// The open file's date and segment name (of its first line), once known.
    segment: Option<(String, String)>,
    /// Shipped: rotation hands segments to the shipper and wakes it.
    ship: Option<Arc<tokio::sync::Notify>>,
}

impl LogFile {
    fn new(path: PathBuf, max_size: u64, max_files: u32) -> LogFile {
        LogFile {
            path,
            max_size,
            max_files,
            open: None,
            last: None,
            recovered: false,
            segment: None,
            ship: None,
        }
    }
}

/// The UTC date of a record's `time` (it comes first), or today's.
fn record_date(record: &[u8]) -> String {
    ship::line_date(record).unwrap_or_else(|| chrono::Utc::now().format("%Y-%m-%d").to_string())
}

pub fn build(config: &ActionConfig, cx: &BuildContext) -> Result<Built, Diagnostic> {
    let (settings, warnings) = super::settings::<LogConfig>(config)?;
    let located = |key: &str, message: &str| {
        Diagnostic::new(config.place(), message)
            .key(key)
            .line(config.item.line_of(key))
    };
    if settings.path.as_os_str().is_empty() {
        return Err(located("path", "must not be empty"));
    }
    let max_size = settings.max_size.unwrap_or(DEFAULT_MAX_SIZE);
    if max_size < 1024 {
        return Err(located("max-size", "must be at least 1KB"));
    }
    let mut file = LogFile::new(
        settings.path.clone(),
        max_size,
        settings.max_files.unwrap_or(DEFAULT_MAX_FILES),
    );
    let (mut ship_to, mut shipper) = (None, None);
    if let Some(ship) = settings.ship {
        let located = |key: &str, message: &str| located(&format!("ship.{key}"), message);
        if ship.bucket.trim().is_empty() {
            return Err(located("bucket", "must not be empty"));
        }
        let interval = ship.interval.unwrap_or(DEFAULT_SHIP_INTERVAL);
        if interval < Duration::from_secs(1) {
            return Err(located("interval", "must be at least 1s"));
        }
        if let Some(endpoint) = &ship.endpoint
            && !reqwest::Url::parse(endpoint)
                .is_ok_and(|url| matches!(url.scheme(), "http" | "https"))
        {
            return Err(located("endpoint", "must be an http:// or https:// URL"));
        }
        let store = ship::store(&ship::StoreSettings {
            bucket: ship.bucket.clone(),
            endpoint: ship.endpoint.clone(),
            region: ship.region.clone(),
            path_style: ship.path_style,
        })
        .map_err(|err| located("bucket", &err.to_string()))?;
        let prefix = ship.prefix.trim_matches('/');
        let root = if prefix.is_empty() {
            cx.node_name.clone()
        } else {
            format!("{prefix}/{}", cx.node_name)
        };
        ship_to = Some(format!("s3://{}/{root}/", ship.bucket));
        let wake = Arc::new(tokio::sync::Notify::new());
        file.ship = Some(wake.clone());
        if cx.background {
            let task = ship::Shipper {
                action: config.name.clone(),
                store,
                root,
                log: settings.path.clone(),
                interval,
                policy: config.policy.clone(),
                wake,
            };
            shipper = Some(AbortOnDrop(tokio::spawn(task.run()).abort_handle()));
        }
    }
    Built::new(
        Log {
            name: config.name.clone(),
            node: cx.node_name.clone(),
            path: settings.path,
            writer: Arc::new(Mutex::new(Writer {
                file: Some(file),
                queue: VecDeque::new(),
            })),
            ship_to,
            _shipper: shipper,
        },
        warnings,
    )
}

impl Log {
    /// Appends `line`: writes it (with whatever queues meanwhile) if the file is free, otherwise
    /// queues it and waits until it is written or the file is handed over.
    async fn append(&self, line: Vec<u8>) -> Result<(), String> {
        let free = {
            let mut writer = self.lock();
            match writer.file.take() {
                Some(file) => Ok((file, line)),
                None => {
                    let (done, turn) = tokio::sync::oneshot::channel();
                    writer.queue.push_back(Append { line, done });
                    Err(turn)
                }
            }
        };
        let (file, line) = match free {
            Ok(free) => free,
            Err(turn) => match turn.await {
                Ok(Turn::Written(result)) => return result,
                Ok(Turn::Write(mut handed, line)) => match handed.file.take() {
                    Some(file) => (file, line),
                    None => return Err("the forensic log was handed over empty".to_string()),
                },
                // Dropped unanswered: only a writer panicking mid-batch does that.
                Err(_) => return Err("the forensic log's writer stopped".to_string()),
            },
        };
        self.write_batch(file, line)
    }

    /// Writes `own` and the queued lines with `file`, answers their senders, then hands the file
    /// over.
    fn write_batch(&self, mut file: LogFile, own: Vec<u8>) -> Result<(), String> {
        let batch = std::mem::take(&mut self.lock().queue);
        let mut lines: Vec<&[u8]> = Vec::with_capacity(batch.len() + 1);
        lines.push(&own);
        lines.extend(batch.iter().map(|a| a.line.as_slice()));
        let result = file
            .append_all(&lines)
            .map_err(|err| format!("cannot append to {}: {err}", file.path.display()));
        for append in batch {
            let _ = append.done.send(Turn::Written(result.clone()));
        }
        hand_over(&self.writer, file);
        result
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Writer> {
        lock(&self.writer)
    }
}

impl LogFile {
    /// Appends `records` (JSON objects) in order, each sealed into the chain as one line,
    /// rotating between two lines when the next would overflow the file, with one write per
    /// file. On an error the whole batch is reported failed (and is retried): a line may then
    /// appear twice, never not at all, and the chain is read back from the file before the next
    /// write, so it goes on from what is on disk.
    fn append_all(&mut self, records: &[&[u8]]) -> std::io::Result<()> {
        let result = self.seal_and_append(records);
        if result.is_err() {
            self.open = None;
            self.recovered = false;
        }
        result
    }

    fn seal_and_append(&mut self, records: &[&[u8]]) -> std::io::Result<()> {
        const SEAL: usize = 180;
        let capacity = records.iter().map(|r| r.len() + SEAL).sum();
        let mut pending: Vec<u8> = Vec::with_capacity(capacity);
        for record in records {
            let start = pending.len();
            // Opened first: at start, that reads the chain back.
            let size = self.opened()?.1 + start as u64;
            let link = chain::seal(record, self.last, &mut pending);
            if size > 0 && size + (pending.len() - start) as u64 > self.max_size {
                let line = pending.split_off(start);
                self.write(&pending)?;
                pending = line;
                self.rotate()?;
                self.segment = None;
            }
            if self.segment.is_none() {
                self.segment = Some((record_date(record), ship::segment_name(link.seq)));
            }
            self.last = Some(link);
        }
        self.write(&pending)
    }

    fn write(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        if bytes.is_empty() {
            return Ok(());
        }
        let (file, size) = self.opened()?;
        file.write_all(bytes)?;
        *size += bytes.len() as u64;
        Ok(())
    }

    /// The open file and its size, opened (and its directory created) on first use.
    fn opened(&mut self) -> std::io::Result<&mut (File, u64)> {
        let open = match self.open.take() {
            Some(open) => open,
            None => {
                if let Some(parent) = self.path.parent().filter(|p| !p.as_os_str().is_empty()) {
                    std::fs::create_dir_all(parent)?;
                }
                let mut file = OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(&self.path)?;
                let mut size = file.metadata()?.len();
                if !self.recovered {
                    let (mut last, torn) = chain::last_link(&self.path)?;
                    if last.is_none() && size == 0 {
                        // Rotated, and stopped before the next line.
                        last = chain::last_link(&self.numbered(1))?.0;
                    }
                    // A line cut short stays a line of its own; the chain skips it.
                    if torn {
                        file.write_all(b"\n")?;
                        size += 1;
                    }
                    self.last = last;
                    self.recovered = true;
                    self.segment = if size > 0 {
                        Some(first_place(&self.path)?)
                    } else {
                        None
                    };
                }
                (file, size)
            }
        };
        Ok(self.open.insert(open))
    }

    /// `path` → `path.1` → … → `path.<max-files>`; the oldest is deleted. Shipped, `path` →
    /// `path.<date>.<first seq>`, kept until the shipper has uploaded it.
    fn rotate(&mut self) -> std::io::Result<()> {
        self.open = None;
        if let Some(wake) = &self.ship {
            let (date, segment) = self.segment.take().unwrap_or_else(legacy_place);
            let mut to = ship::spooled(&self.path, &date, &segment);
            if to.exists() {
                // A chain started over (its files were removed): keep both.
                to = ship::spooled(&self.path, &date, &format!("{segment}-{}", unix_ms()));
            }
            std::fs::rename(&self.path, to)?;
            wake.notify_one();
            return Ok(());
        }
        let numbered = |n: u32| self.numbered(n);
        if self.max_files == 0 {
            return std::fs::remove_file(&self.path);
        }
        let _ = std::fs::remove_file(numbered(self.max_files));
        for n in (1..self.max_files).rev() {
            let from = numbered(n);
            if from.exists() {
                std::fs::rename(&from, numbered(n + 1))?;
            }
        }
        std::fs::rename(&self.path, numbered(1))
    }

    fn numbered(&self, n: u32) -> PathBuf {
        PathBuf::from(format!("{}.{n}", self.path.display()))
    }
}

/// The date and segment name of the file at `path`, from its first line.
fn first_place(path: &std::path::Path) -> std::io::Result<(String, String)> {
    use std::io::BufRead;
    let mut first = Vec::new();
    std::io::BufReader::new(File::open(path)?).read_until(b'\n', &mut first)?;
    Ok(ship::first_line_place(&first).unwrap_or_else(legacy_place))
}

/// The place of a file whose first line has no chain (written before it).
fn legacy_place() -> (String, String) {
    (
        chrono::Utc::now().format("%Y-%m-%d").to_string(),
        format!("legacy-{}", unix_ms()),
    )
}

fn unix_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

#[async_trait]
impl Action for Log {
    fn name(&self) -> &str {
        &self.name
    }

    fn kind(&self) -> &'static str {
        "log"
    }

    fn reads_body(&self) -> bool {
        false
    }

    async fn send(&self, message: &Message) -> Result<Report, ActionError> {
        let record = Record::new(&self.node, message);
        // Sized once: the event's text is most of the line.
        let mut line = Vec::with_capacity(256 + record.event.get().len() + record.title.len());
        serde_json::to_writer(&mut line, &record)
            .map_err(|err| ActionError::permanent(format!("cannot encode record: {err}")))?;
        self.append(line).await.map_err(ActionError::retryable)?;
        Ok(Report::none())
    }

    fn preview(&self, message: &Message) -> serde_json::Value {
        let path = self.path.display().to_string();
        let line = Record::new(&self.node, message);
        match &self.ship_to {
            Some(ship_to) => {
                serde_json::json!({ "append_to": path, "line": line, "ship_to": ship_to })
            }
            None => serde_json::json!({ "append_to": path, "line": line }),
        }
    }
}

/// One line of the forensic log, serialized straight from the message (no copy of the event).
#[derive(serde::Serialize)]
struct Record<'a> {
    time: String,
    node: &'a str,
    route: &'a str,
    event_id: &'a str,
    title: &'a str,
    /// The event's text, serialized once for the outbox record and every line.
    event: &'a serde_json::value::RawValue,
}

impl<'a> Record<'a> {
    fn new(node: &'a str, message: &'a Message) -> Record<'a> {
        Record {
            time: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
            node,
            route: &message.route,
            event_id: &message.event_id,
            title: &message.title,
            event: message.event.text(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn log_at(path: &std::path::Path) -> Log {
        Log {
            name: "forensic".into(),
            node: "node-1".into(),
            path: path.to_path_buf(),
            writer: Arc::new(Mutex::new(Writer {
                file: Some(LogFile::new(
                    path.to_path_buf(),
                    DEFAULT_MAX_SIZE,
                    DEFAULT_MAX_FILES,
                )),
                queue: VecDeque::new(),
            })),
            ship_to: None,
            _shipper: None,
        }
    }

    fn test_dir(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("hooker-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        dir
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn concurrent_senders_each_get_their_line_written_once() {
        let dir = test_dir("log-concurrent");
        let path = dir.join("forensic.jsonl");
        let log = Arc::new(log_at(&path));
        let mut tasks = tokio::task::JoinSet::new();
        for n in 0..400 {
            let log = log.clone();
            tasks.spawn(async move {
                let message = Message {
                    route: "r".into(),
                    event_id: format!("event-{n}"),
                    event: Arc::new(serde_json::json!({ "n": n }).into()),
                    ..Message::default()
                };
                log.send(&message).await.map(|_| ())
            });
        }
        // A sender left waiting would hang here: a lost line or a file nobody holds.
        let all = async {
            while let Some(sent) = tasks.join_next().await {
                sent.unwrap().unwrap();
            }
        };
        tokio::time::timeout(std::time::Duration::from_secs(30), all)
            .await
            .expect("every sender is answered");
        let text = std::fs::read_to_string(&path).unwrap();
        let mut seen: Vec<u64> = text
            .lines()
            .map(|line| {
                let line: serde_json::Value = serde_json::from_str(line).unwrap();
                assert_eq!(line["node"], "node-1");
                line["event"]["n"].as_u64().unwrap()
            })
            .collect();
        seen.sort_unstable();
        assert_eq!(seen, (0..400).collect::<Vec<u64>>());
        // The file is free again once everyone is answered.
        assert!(log.lock().file.is_some() && log.lock().queue.is_empty());
        std::fs::remove_dir_all(dir).unwrap();
    }

    /// A queued line, and the receiver its sender waits on.
    fn queued(log: &Log, line: &str) -> tokio::sync::oneshot::Receiver<Turn> {
        let (done, turn) = tokio::sync::oneshot::channel();
        log.lock().queue.push_back(Append {
            line: line.as_bytes().to_vec(),
            done,
        });
        turn
    }

    #[tokio::test]
    async fn a_writer_writes_what_queued_behind_it_and_answers_it() {
        let dir = test_dir("log-batch");
        let path = dir.join("forensic.jsonl");
        let log = log_at(&path);
        let file = log.lock().file.take().unwrap();
        let waiting = queued(&log, r#"{"q":"queued"}"#);
        log.write_batch(file, br#"{"q":"own"}"#.to_vec()).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        let lines: Vec<serde_json::Value> = text
            .lines()
            .map(|line| serde_json::from_str(line).unwrap())
            .collect();
        assert_eq!(lines.len(), 2);
        assert_eq!(lines[0]["q"], "own");
        assert_eq!(lines[0]["seq"], 0);
        assert_eq!(lines[1]["q"], "queued");
        assert_eq!(lines[1]["seq"], 1);
        assert!(matches!(waiting.await, Ok(Turn::Written(Ok(())))));
        assert!(log.lock().file.is_some());
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[tokio::test]
    async fn the_file_passes_over_a_sender_that_stopped_waiting() {
        let dir = test_dir("log-handover");
        let log = log_at(&dir.join("forensic.jsonl"));
        let file = log.lock().file.take().unwrap();
        drop(queued(&log, "cancelled\n"));
        let waiting = queued(&log, "next\n");
        hand_over(&log.writer, file);
        let turn = tokio::time::timeout(std::time::Duration::from_secs(10), waiting).await;
        let Ok(Ok(Turn::Write(mut handed, line))) = turn else {
            panic!("the waiting sender did not get the file");
        };
        assert_eq!(line, b"next\n");
        assert!(log.lock().queue.is_empty() && log.lock().file.is_none());
        // With nobody waiting, the file is put back.
        drop(queued(&log, "cancelled too\n"));
        hand_over(&log.writer, handed.file.take().unwrap());
        assert!(log.lock().file.is_some() && log.lock().queue.is_empty());
    }

    #[tokio::test]
    async fn a_file_handed_to_a_sender_cancelled_meanwhile_goes_on() {
        let dir = test_dir("log-handed");
        let log = log_at(&dir.join("forensic.jsonl"));
        let file = log.lock().file.take().unwrap();
        // Handed over while the sender still waits; it is cancelled before it looks.
        let cancelled = queued(&log, "cancelled\n");
        let waiting = queued(&log, "next\n");
        hand_over(&log.writer, file);
        assert_eq!(log.lock().queue.len(), 1);
        drop(cancelled);
        let turn = tokio::time::timeout(std::time::Duration::from_secs(10), waiting).await;
        let Ok(Ok(Turn::Write(mut handed, line))) = turn else {
            panic!("the file was lost with the cancelled sender");
        };
        assert_eq!(line, b"next\n");
        // And with nobody waiting, a file dropped on its way is put back.
        drop(handed.file.take().map(|file| Handed {
            file: Some(file),
            writer: log.writer.clone(),
        }));
        assert!(log.lock().file.is_some());
    }

    #[test]
    fn rotation_keeps_max_files() {
        let dir = test_dir("log-rotation");
        let path = dir.join("forensic.jsonl");
        let mut file = LogFile::new(path.clone(), 1000, 2);
        // One sealed line fills more than half the file.
        let line = format!(r#"{{"pad":"{}"}}"#, "x".repeat(400)).into_bytes();
        let line = line.as_slice();
        for _ in 0..5 {
            file.append_all(&[line]).unwrap();
        }
        // A batch rotates between its lines.
        file.append_all(&[line, line]).unwrap();
        assert!(path.exists());
        assert!(dir.join("forensic.jsonl.1").exists());
        assert!(dir.join("forensic.jsonl.2").exists());
        assert!(!dir.join("forensic.jsonl.3").exists());
        assert_eq!(std::fs::read_to_string(&path).unwrap().lines().count(), 1);
        std::fs::remove_dir_all(dir).unwrap();
    }

    /// A `log` action built from its settings (indented YAML lines after `path`).
    fn built(settings: &str) -> Result<Built, Diagnostic> {
        let config = crate::config::Config::parse(
            &format!(
                "routes: []\ntemplates: []\nactions:\n- name: forensic\n  type: log\n  enable: true\n  path: /tmp/hooker-unused.jsonl\n{settings}"
            ),
            None,
        )
        .map_err(|err| Diagnostic::new("test", err.to_string()))?;
        let action = config
            .actions
            .into_iter()
            .next()
            .ok_or_else(|| Diagnostic::new("test", "no action"))?;
        let cx = BuildContext::new("n1".into())
            .map_err(|err| Diagnostic::new("test", err.to_string()))?;
        build(&action, &cx)
    }

    #[test]
    fn ship_settings_are_checked_and_shown_in_the_preview() {
        let error = |settings: &str| match built(settings) {
            Ok(_) => String::new(),
            Err(diagnostic) => diagnostic.to_string(),
        };
        let empty = error("  ship:\n    bucket: \"\"\n");
        assert!(
            empty.contains("ship.bucket") && empty.contains("must not be empty"),
            "{empty}"
        );
        let short = error("  ship:\n    bucket: b\n    interval: 10ms\n");
        assert!(
            short.contains("ship.interval") && short.contains("at least 1s"),
            "{short}"
        );
        let ftp = error("  ship:\n    bucket: b\n    endpoint: ftp://store\n");
        assert!(ftp.contains("ship.endpoint"), "{ftp}");
        let typo = error("  ship:\n    bucket: b\n    regoin: eu-west-1\n");
        assert!(typo.contains("regoin"), "{typo}");
        let Ok(shipped) = built(
            "  ship:\n    bucket: b\n    prefix: /evidence/\n    endpoint: http://127.0.0.1:9\n",
        ) else {
            panic!("a valid ship block is refused");
        };
        let preview = shipped.action.preview(&Message::default());
        assert_eq!(preview["ship_to"], "s3://b/evidence/n1/");
    }

    /// The log's files as `hooker log verify DIR` checks them.
    fn verified(dir: &std::path::Path) -> crate::forensic::verify::Verified {
        let segments = crate::forensic::verify::read_local(dir).unwrap();
        crate::forensic::verify::verify(segments, None)
    }

    #[test]
    fn one_chain_runs_across_rotation_and_restarts() {
        let dir = test_dir("log-chain");
        let path = dir.join("forensic.jsonl");
        let record = |n: usize| format!(r#"{{"n":{n},"pad":"{}"}}"#, "x".repeat(300)).into_bytes();
        let mut n = 0;
        for _restart in 0..3 {
            // A new file each time, as a restarted agent has: the chain is read back.
            let mut file = LogFile::new(path.clone(), 2000, 100);
            for _ in 0..7 {
                file.append_all(&[&record(n), &record(n + 1)]).unwrap();
                n += 2;
            }
        }
        assert!(dir.join("forensic.jsonl.3").exists(), "it rotated");
        let verified = verified(&dir);
        assert!(verified.intact(), "{verified}");
        assert_eq!(verified.lines, n as u64);
        assert_eq!(verified.first_seq, Some(0));
        assert_eq!(verified.last.map(|l| l.seq), Some(n as u64 - 1));
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn a_line_cut_short_by_a_crash_stays_apart_and_the_chain_goes_on() {
        let dir = test_dir("log-torn");
        let path = dir.join("forensic.jsonl");
        let mut file = LogFile::new(path.clone(), DEFAULT_MAX_SIZE, 2);
        file.append_all(&[br#"{"n":0}"#, br#"{"n":1}"#]).unwrap();
        drop(file);
        let mut torn = std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap();
        torn.write_all(br#"{"n":2,"seq":2,"pr"#).unwrap();
        let mut file = LogFile::new(path.clone(), DEFAULT_MAX_SIZE, 2);
        file.append_all(&[br#"{"n":3}"#]).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        let last: serde_json::Value = serde_json::from_str(text.lines().last().unwrap()).unwrap();
        assert_eq!(last["n"], 3);
        assert_eq!(last["seq"], 2);
        let verified = verified(&dir);
        assert_eq!(verified.findings.len(), 1, "{verified}");
        let finding = &verified.findings[0];
        assert_eq!(finding.line, 3);
        assert_eq!(finding.what, crate::forensic::verify::Break::NotSealed);
        std::fs::remove_dir_all(dir).unwrap();
    }
}
