//! Standard error while the agent runs: the log's own writer, and a route that turns whatever a
//! library prints there itself into log events.
//!
//! regorus writes to stderr with `eprintln!` ("could not schedule all statements [0]" on every
//! render of some Postee templates, parser warnings, Rego `print()`), which bypasses the logger
//! and breaks `HOOKER_LOG_FORMAT=json`. [`route_to_log`] points file descriptor 2 at a pipe whose
//! reader thread logs each line, and the logger writes to a copy of the original descriptor
//! ([`LogWriter`]). Dropping the returned [`Routed`] puts the original descriptor back, so a
//! fatal error printed after the agent stopped goes straight to the terminal again.

use std::fs::File;
use std::io::{BufRead, BufReader, PipeReader, Write};
use std::os::fd::AsFd;
use std::sync::OnceLock;
use std::sync::mpsc;
use std::time::Duration;

/// A copy of the process's original stderr, once [`route_to_log`] has redirected descriptor 2.
static ORIGINAL: OnceLock<File> = OnceLock::new();

/// The longest line logged whole; the rest of a longer line is cut.
const MAX_LINE: usize = 16 * 1024;

/// How long dropping [`Routed`] waits for the reader to log what is left in the pipe (a child
/// process that inherited the descriptor may keep the pipe open longer).
const DRAIN_WAIT: Duration = Duration::from_secs(1);

/// Where the logger writes: the original stderr, even while descriptor 2 is routed to the log.
#[derive(Debug, Clone, Copy, Default)]
pub struct LogWriter;

impl Write for LogWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        match ORIGINAL.get() {
            Some(mut original) => original.write(buf),
            None => std::io::stderr().write(buf),
        }
    }

    fn write_all(&mut self, buf: &[u8]) -> std::io::Result<()> {
        match ORIGINAL.get() {
            Some(mut original) => original.write_all(buf),
            None => std::io::stderr().write_all(buf),
        }
    }

    fn flush(&mut self) -> std::io::Result<()> {
        match ORIGINAL.get() {
            Some(mut original) => original.flush(),
            None => std::io::stderr().flush(),
        }
    }
}

/// Descriptor 2 routed to the log; dropping it restores the original stderr.
#[must_use = "stderr is restored when this is dropped"]
pub struct Routed {
    done: mpsc::Receiver<()>,
}

/// Routes descriptor 2 to the log (see the module doc). `None`, with a warning, when the pipe
/// cannot be set up; stderr then stays as it was.
pub fn route_to_log() -> Option<Routed> {
    match try_route() {
        Ok(routed) => Some(routed),
        Err(error) => {
            tracing::warn!(%error, "Cannot route library output on stderr to the log.");
            None
        }
    }
}

fn try_route() -> std::io::Result<Routed> {
    // Both the copy and the pipe are close-on-exec: a child process (an `exec` action) inherits
    // neither, only descriptor 2 itself.
    let original = File::from(std::io::stderr().as_fd().try_clone_to_owned()?);
    if ORIGINAL.set(original).is_err() {
        return Err(std::io::Error::other("stderr is already routed"));
    }
    let (read, write) = std::io::pipe()?;
    let (done_tx, done) = mpsc::channel();
    std::thread::Builder::new()
        .name("stderr-log".into())
        .spawn(move || {
            forward(read);
            let _ = done_tx.send(());
        })?;
    nix::unistd::dup2_stderr(&write)?;
    Ok(Routed { done })
}

/// Logs each line read from `read` until every writer has closed the pipe.
fn forward(read: PipeReader) {
    let mut reader = BufReader::new(read);
    let mut line = Vec::new();
    loop {
        line.clear();
        match reader.read_until(b'\n', &mut line) {
            Ok(0) | Err(_) => return,
            Ok(_) => log_line(&line),
        }
    }
}

/// One line a library printed, as a log event: debug for regorus' known scheduling notice (it
/// says nothing a user can act on), a warning for anything else.
fn log_line(line: &[u8]) {
    let text = String::from_utf8_lossy(&line[..line.len().min(MAX_LINE)]);
    let text = text.trim_end();
    if text.is_empty() {
        return;
    }
    if text.starts_with("could not schedule all statements") {
        tracing::debug!(output = %text, "Rego engine notice on stderr.");
    } else {
        tracing::warn!(output = %text, "Output on stderr.");
    }
}

impl Drop for Routed {
    fn drop(&mut self) {
        if let Some(original) = ORIGINAL.get() {
            // Closes this process's last write end of the pipe, so the reader sees its end.
            let _ = nix::unistd::dup2_stderr(original);
        }
        let _ = self.done.recv_timeout(DRAIN_WAIT);
    }
}
