//! The agent's resource use, read from /proc.

use anyhow::{Context, Result};

pub struct Usage {
    /// User + system CPU time.
    pub cpu_ms: u64,
    pub rss_kb: u64,
}

impl Usage {
    pub fn read(pid: u32) -> Result<Usage> {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .with_context(|| format!("agent pid {pid}"))?;
        // Fields after the command name (which may contain spaces) start after ')'.
        let fields: Vec<&str> = stat
            .rsplit_once(')')
            .map(|(_, rest)| rest.split_whitespace().collect())
            .unwrap_or_default();
        let ticks = |i: usize| {
            fields
                .get(i)
                .and_then(|f| f.parse::<u64>().ok())
                .unwrap_or(0)
        };
        // utime and stime are fields 14 and 15 of the whole line: 11 and 12 after ')'.
        let hz = 100; // USER_HZ on Linux
        let cpu_ms = (ticks(11) + ticks(12)) * 1000 / hz;
        let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
        let rss_kb = status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        Ok(Usage { cpu_ms, rss_kb })
    }
}
