//! `type: log` (Hooker's own): appends each message, with its event, as one JSON line to a
//! per-node forensic log, rotating by size and keeping `max-files` old files.
//!
//! One writer thread per action owns the file: `send` hands it the encoded line and waits for the
//! answer. The thread writes every line that has queued meanwhile with one `write` call, so a
//! busy node pays one system call per batch instead of a blocking-pool hand-off and a write per
//! line.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::PathBuf;
use std::sync::mpsc;

use async_trait::async_trait;
use serde::Deserialize;

use super::{Action, ActionError, BuildContext, Built, Report};
use crate::config::{ActionConfig, Diagnostic, units};
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
}

pub struct Log {
    name: String,
    node: String,
    path: PathBuf,
    writer: mpsc::Sender<Append>,
}

/// A line for the writer thread, and where to answer once it is written.
struct Append {
    line: Vec<u8>,
    done: tokio::sync::oneshot::Sender<Result<(), String>>,
}

struct LogFile {
    path: PathBuf,
    max_size: u64,
    max_files: u32,
    open: Option<(File, u64)>,
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
    let file = LogFile {
        path: settings.path.clone(),
        max_size,
        max_files: settings.max_files.unwrap_or(DEFAULT_MAX_FILES),
        open: None,
    };
    // The thread ends when the action is dropped (a reload that no longer has it).
    let (writer, rx) = mpsc::channel();
    std::thread::Builder::new()
        .name("hooker-log".into())
        .spawn(move || write_loop(file, rx))
        .map_err(|err| {
            Diagnostic::new(
                config.place(),
                format!("cannot start the log writer thread: {err}"),
            )
        })?;
    Built::new(
        Log {
            name: config.name.clone(),
            node: cx.node_name.clone(),
            path: settings.path,
            writer,
        },
        warnings,
    )
}

/// The writer thread: everything queued is written together, then every sender is answered.
fn write_loop(mut file: LogFile, rx: mpsc::Receiver<Append>) {
    const MAX_BATCH: usize = 1024;
    while let Some(batch) = crate::batch::recv_batch(&rx, MAX_BATCH) {
        let lines: Vec<&[u8]> = batch.iter().map(|a| a.line.as_slice()).collect();
        let result = file
            .append_all(&lines)
            .map_err(|err| format!("cannot append to {}: {err}", file.path.display()));
        for append in batch {
            let _ = append.done.send(result.clone());
        }
    }
}

impl LogFile {
    /// Appends `lines` in order, rotating between two lines when the next would overflow the
    /// file, with one write per file. On an error the whole batch is reported failed (and is
    /// retried): a line may then appear twice, never not at all.
    fn append_all(&mut self, lines: &[&[u8]]) -> std::io::Result<()> {
        let mut pending: Vec<u8> = Vec::with_capacity(lines.iter().map(|l| l.len()).sum());
        for line in lines {
            let size = self.opened()?.1 + pending.len() as u64;
            if size > 0 && size + line.len() as u64 > self.max_size {
                self.write(&pending)?;
                pending.clear();
                self.rotate()?;
            }
            pending.extend_from_slice(line);
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
                let file = OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(&self.path)?;
                let size = file.metadata()?.len();
                (file, size)
            }
        };
        Ok(self.open.insert(open))
    }

    /// `path` → `path.1` → … → `path.<max-files>`; the oldest is deleted.
    fn rotate(&mut self) -> std::io::Result<()> {
        self.open = None;
        let numbered = |n: u32| PathBuf::from(format!("{}.{n}", self.path.display()));
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
        line.push(b'\n');
        let (done, written) = tokio::sync::oneshot::channel();
        self.writer
            .send(Append { line, done })
            .map_err(|_| ActionError::retryable("the log writer thread has stopped"))?;
        written
            .await
            .map_err(|_| ActionError::retryable("the log writer thread has stopped"))?
            .map_err(ActionError::retryable)?;
        Ok(Report::none())
    }

    fn preview(&self, message: &Message) -> serde_json::Value {
        let path = self.path.display().to_string();
        serde_json::json!({ "append_to": path, "line": Record::new(&self.node, message) })
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

    #[test]
    fn rotation_keeps_max_files() {
        let dir = std::env::temp_dir().join(format!("hooker-log-test-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let path = dir.join("forensic.jsonl");
        let mut file = LogFile {
            path: path.clone(),
            max_size: 100,
            max_files: 2,
            open: None,
        };
        let line = vec![b'x'; 60];
        for _ in 0..5 {
            file.append_all(&[&line]).unwrap();
        }
        // A batch rotates between its lines.
        file.append_all(&[&line, &line]).unwrap();
        assert!(path.exists());
        assert!(dir.join("forensic.jsonl.1").exists());
        assert!(dir.join("forensic.jsonl.2").exists());
        assert!(!dir.join("forensic.jsonl.3").exists());
        assert_eq!(std::fs::metadata(&path).unwrap().len(), 60);
        std::fs::remove_dir_all(dir).unwrap();
    }
}
