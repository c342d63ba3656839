//! Follows the forensic log and marks events complete as their lines appear (across rotations).

use std::collections::HashMap;
use std::fs::File;
use std::io::{BufRead, BufReader};
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Result;
use hdrhistogram::Histogram;

use crate::Stats;

const MARK: &[u8] = b"hkbseq";

pub struct Tail {
    state: Arc<Mutex<State>>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

struct State {
    /// Latency in µs from when each event was due to when its last line appeared.
    latency: Histogram<u64>,
    measured: bool,
    last: Option<Duration>,
}

impl Tail {
    pub fn start(
        path: PathBuf,
        expect: u32,
        start: Instant,
        due: Option<impl Fn(u64) -> Duration + Send + 'static>,
        stats: Arc<Stats>,
    ) -> Result<Tail> {
        let state = Arc::new(Mutex::new(State {
            latency: Histogram::new_with_bounds(1, 600_000_000, 3)?,
            measured: false,
            last: None,
        }));
        let stop = Arc::new(AtomicBool::new(false));
        // Lines already in the log belong to earlier runs.
        let skip = std::fs::metadata(&path).map(|m| (m.ino(), m.len())).ok();
        let thread = {
            let state = state.clone();
            let stop = stop.clone();
            std::thread::spawn(move || {
                follow(&path, skip, expect, start, due, &stats, &state, &stop);
            })
        };
        Ok(Tail {
            state,
            stop,
            thread: Some(thread),
        })
    }

    pub fn latency(&self) -> Option<Histogram<u64>> {
        let state = self.state.lock().ok()?;
        state.measured.then(|| state.latency.clone())
    }

    /// When the last event completed, from the start.
    pub fn last_completion(&self) -> Option<Duration> {
        self.state.lock().ok()?.last
    }
}

impl Drop for Tail {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

#[allow(clippy::too_many_arguments)]
fn follow(
    path: &PathBuf,
    mut skip: Option<(u64, u64)>,
    expect: u32,
    start: Instant,
    due: Option<impl Fn(u64) -> Duration>,
    stats: &Stats,
    state: &Mutex<State>,
    stop: &AtomicBool,
) {
    let mut seen: HashMap<u64, u32> = HashMap::new();
    let mut line = Vec::new();
    'reopen: while !stop.load(Ordering::Relaxed) {
        let Ok(file) = File::open(path) else {
            std::thread::sleep(Duration::from_millis(1));
            continue;
        };
        let inode = file.metadata().map(|m| m.ino()).unwrap_or_default();
        let mut reader = BufReader::with_capacity(1 << 20, file);
        if let Some((skip_inode, len)) = skip.take()
            && skip_inode == inode
        {
            let _ = std::io::copy(
                &mut std::io::Read::take(&mut reader, len),
                &mut std::io::sink(),
            );
        }
        loop {
            line.clear();
            match reader.read_until(b'\n', &mut line) {
                Ok(0) => {
                    // At the end: was the file rotated away?
                    let rotated = std::fs::metadata(path).map(|m| m.ino()).ok() != Some(inode);
                    if rotated {
                        // Drain what was written before the rename, then follow the new file.
                        while matches!(reader.read_until(b'\n', &mut line), Ok(n) if n > 0) {}
                        complete(&line, expect, start, &due, stats, state, &mut seen);
                        continue 'reopen;
                    }
                    if stop.load(Ordering::Relaxed) {
                        return;
                    }
                    std::thread::sleep(Duration::from_micros(200));
                }
                Ok(_) if line.ends_with(b"\n") => {
                    complete(&line, expect, start, &due, stats, state, &mut seen);
                }
                Ok(_) => {
                    // A partial line: wait for its end.
                    let mut rest = Vec::new();
                    while !rest.ends_with(b"\n") && !stop.load(Ordering::Relaxed) {
                        match reader.read_until(b'\n', &mut rest) {
                            Ok(0) => std::thread::sleep(Duration::from_micros(200)),
                            Ok(_) => {}
                            Err(_) => break,
                        }
                    }
                    line.extend_from_slice(&rest);
                    complete(&line, expect, start, &due, stats, state, &mut seen);
                }
                Err(_) => continue 'reopen,
            }
        }
    }
}

fn complete(
    line: &[u8],
    expect: u32,
    start: Instant,
    due: &Option<impl Fn(u64) -> Duration>,
    stats: &Stats,
    state: &Mutex<State>,
    seen: &mut HashMap<u64, u32>,
) {
    for line in line.split(|b| *b == b'\n').filter(|l| !l.is_empty()) {
        let Some(seq) = sequence(line) else { continue };
        let count = seen.entry(seq).or_default();
        *count += 1;
        if *count < expect {
            continue;
        }
        seen.remove(&seq);
        let now = start.elapsed();
        stats.completed.fetch_add(1, Ordering::Relaxed);
        if let Ok(mut state) = state.lock() {
            state.last = Some(now);
            // Latency only means something when events had a schedule (fixed rate).
            if let Some(due) = due {
                let micros = now.saturating_sub(due(seq)).as_micros().max(1) as u64;
                let _ = state.latency.record(micros);
                state.measured = true;
            }
        }
    }
}

/// The number after the first `hkbseq` in a line (quoted or escaped JSON alike).
fn sequence(line: &[u8]) -> Option<u64> {
    let at = line.windows(MARK.len()).position(|w| w == MARK)? + MARK.len();
    let digits: Vec<u8> = line[at..]
        .iter()
        .skip_while(|b| !b.is_ascii_digit())
        .take_while(|b| b.is_ascii_digit())
        .copied()
        .collect();
    std::str::from_utf8(&digits).ok()?.parse().ok()
}
