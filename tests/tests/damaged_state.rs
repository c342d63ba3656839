//! Damaged state and full disks: a damaged journal loses only what the damage hit, and says how
//! much; a missing segment is reported; a damaged redb file says what to do; a full disk refuses
//! (503) without losing anything and recovers by itself once there is room again.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use hooker_tests::{Agent, Reply, Sink, TempDir, wait_until};

/// One route, one webhook action pointed at `url`; a failed delivery waits an hour (one record
/// per event in the journal, no reschedules meanwhile).
fn config(url: &str, plugins: &str) -> String {
    format!(
        r#"
routes:
  - name: r
    input: input.n
    template: raw
    actions: [hook]
{plugins}
templates:
  - name: raw
    rego-package: hooker.rawmessage.json
actions:
  - name: hook
    type: webhook
    enable: true
    url: {url}
    timeout: 2s
    retry-initial-backoff: 50ms
    retry-max-backoff: 200ms
    circuit-breaker-cooldown: 100ms
"#
    )
}

/// A sink that answers 503 until the flag is set, then 200.
async fn failing_until_fixed() -> anyhow::Result<(Arc<AtomicBool>, Sink)> {
    let fixed = Arc::new(AtomicBool::new(false));
    let flag = fixed.clone();
    let sink = Sink::with(move |_| {
        if flag.load(Ordering::Relaxed) {
            Reply::status(200)
        } else {
            Reply::status(503)
        }
    })
    .await?;
    Ok((fixed, sink))
}

fn numbers(sink: &Sink) -> BTreeSet<u64> {
    sink.requests()
        .iter()
        .filter_map(|r| r.body_json()["n"].as_u64())
        .collect()
}

fn journal(state: &Path) -> PathBuf {
    state.join("hooker.journal")
}

/// The journal's segment files, oldest first.
fn segments(state: &Path) -> Vec<PathBuf> {
    let mut found: Vec<PathBuf> = std::fs::read_dir(journal(state))
        .map(|entries| {
            entries
                .filter_map(|e| e.ok())
                .map(|e| e.path())
                .filter(|p| p.extension().is_some_and(|e| e == "log"))
                .collect()
        })
        .unwrap_or_default();
    found.sort();
    found
}

/// Where the written part of a segment ends (a reused or prepared file is zeros after it).
fn written(bytes: &[u8]) -> usize {
    bytes.iter().rposition(|&b| b != 0).map_or(0, |p| p + 1)
}

async fn post_events(agent: &Agent, range: std::ops::RangeInclusive<u64>, pad: &str) {
    for n in range {
        let (status, answer) = agent
            .post("/", format!(r#"{{"n":{n},"pad":"{pad}"}}"#))
            .await
            .expect("post");
        assert_eq!(status, 200, "{answer}");
    }
}

#[tokio::test]
async fn a_damaged_journal_segment_loses_only_the_damaged_entries_and_counts_them()
-> anyhow::Result<()> {
    let state = TempDir::new("damaged-journal");
    let (_, down) = failing_until_fixed().await?;
    let agent = Agent::builder(&config(&down.url("/"), ""))
        .state_dir(state.path())
        .start()
        .await?;
    post_events(&agent, 1..=300, &"p".repeat(200)).await;
    assert!(agent.stop().await?.success());
    // 16 bytes flipped in the middle of the segment holding most of them.
    let (path, mut bytes) = segments(state.path())
        .into_iter()
        .filter_map(|p| Some((p.clone(), std::fs::read(&p).ok()?)))
        .max_by_key(|(_, bytes)| written(bytes))
        .expect("a journal segment");
    let at = written(&bytes) / 2;
    bytes[at..at + 16].iter_mut().for_each(|b| *b ^= 0x5A);
    std::fs::write(&path, &bytes)?;

    let up = Sink::start().await?;
    let agent = Agent::builder(&config(&up.url("/"), ""))
        .state_dir(state.path())
        .start()
        .await?;
    let damaged = agent.metric("hooker_outbox_damaged_entries_total").await?;
    assert!((1.0..=2.0).contains(&damaged), "{damaged} damaged entries");
    // Everything the damage did not hit is delivered: at most one event per damaged entry is
    // missing (a damaged entry may also be a record a later one replaced).
    wait_until(
        "every event the damage did not hit delivered",
        Duration::from_secs(60),
        async || (300 - numbers(&up).len() as u64 <= damaged as u64).then_some(()),
    )
    .await?;
    let warned = agent.logs().into_iter().any(|l| {
        l["message"]
            .as_str()
            .is_some_and(|m| m.starts_with("Delivery journal damaged"))
            && l["offset"].as_u64().is_some()
            && l["entries"].as_u64().is_some()
            && l["segment"].as_str() == Some(&path.display().to_string())
    });
    assert!(warned, "a warning with segment, offset and entries");
    Ok(())
}

#[tokio::test]
async fn a_deleted_journal_segment_is_reported_and_counted() -> anyhow::Result<()> {
    let state = TempDir::new("missing-segment");
    let (_, down) = failing_until_fixed().await?;
    let agent = Agent::builder(&config(&down.url("/"), ""))
        .state_dir(state.path())
        .start()
        .await?;
    // The journal moves from its first (growing) segment to a prepared one as soon as that is
    // ready: events keep coming until two segments hold some.
    let mut n = 0;
    wait_until(
        "events in two journal segments",
        Duration::from_secs(30),
        async || {
            n += 1;
            post_events(&agent, n..=n, "p").await;
            (segments(state.path()).len() >= 2).then_some(())
        },
    )
    .await?;
    post_events(&agent, n + 1..=n + 10, "p").await;
    let posted = n + 10;
    assert!(agent.stop().await?.success());
    let oldest = segments(state.path())[0].clone();
    std::fs::remove_file(&oldest)?;

    let up = Sink::start().await?;
    let agent = Agent::builder(&config(&up.url("/"), ""))
        .state_dir(state.path())
        .start()
        .await?;
    assert_eq!(
        agent.metric("hooker_outbox_missing_segments_total").await?,
        1.0
    );
    let reported = agent.logs().into_iter().any(|l| {
        l["message"]
            .as_str()
            .is_some_and(|m| m.starts_with("Delivery journal segment missing"))
            && l["segment"].as_str() == Some(&oldest.display().to_string())
    });
    assert!(reported, "the missing segment is named");
    // The events in the other segment are still delivered.
    wait_until(
        "the last events delivered",
        Duration::from_secs(30),
        async || numbers(&up).contains(&posted).then_some(()),
    )
    .await?;
    Ok(())
}

#[tokio::test]
async fn a_damaged_state_file_says_what_to_do_and_doing_it_recovers_every_pending_delivery()
-> anyhow::Result<()> {
    let state = TempDir::new("damaged-redb");
    let (_, down) = failing_until_fixed().await?;
    let agent = Agent::builder(&config(&down.url("/"), ""))
        .state_dir(state.path())
        .start()
        .await?;
    post_events(&agent, 1..=20, "p").await;
    assert!(agent.stop().await?.success());
    let redb = state.join("hooker.redb");
    let mut bytes = std::fs::read(&redb)?;
    bytes[..512].iter_mut().for_each(|b| *b ^= 0xA5);
    std::fs::write(&redb, &bytes)?;

    let up = Sink::start().await?;
    let refused = Agent::builder(&config(&up.url("/"), ""))
        .state_dir(state.path())
        .start()
        .await
        .err()
        .map(|e| e.to_string())
        .expect("a damaged state file is refused");
    let aside = format!("{}.damaged", redb.display());
    assert!(
        refused.contains(&format!("mv {} {aside}", redb.display())),
        "{refused}"
    );
    assert!(
        refused.contains("pending deliveries are in the journal"),
        "{refused}"
    );
    std::fs::rename(&redb, &aside)?;
    let _agent = Agent::builder(&config(&up.url("/"), ""))
        .state_dir(state.path())
        .start()
        .await?;
    wait_until(
        "every pending delivery recovered",
        Duration::from_secs(30),
        async || (numbers(&up) == (1..=20).collect()).then_some(()),
    )
    .await?;
    Ok(())
}

/// A tmpfs mounted for one test, unmounted when dropped (after the agent using it is gone).
struct Mount(PathBuf);

impl Mount {
    fn tmpfs(path: &Path, size: &str) -> anyhow::Result<Mount> {
        std::fs::create_dir_all(path)?;
        let status = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(path)
            .status();
        anyhow::ensure!(
            status.as_ref().is_ok_and(|s| s.success()),
            "this test needs to mount a small tmpfs (as root, with mount(8)): {status:?}"
        );
        Ok(Mount(path.to_path_buf()))
    }

    fn free(&self) -> u64 {
        nix::sys::statvfs::statvfs(&self.0)
            .map(|s| s.blocks_available() * s.fragment_size())
            .unwrap_or(0)
    }

    /// Writes `path` until at most `leave` bytes are free.
    fn fill(&self, path: &Path, leave: u64) -> anyhow::Result<()> {
        use std::io::Write;
        let mut file = std::fs::File::create(path)?;
        let chunk = vec![1u8; 256 << 10];
        while self.free() > leave {
            let want = (self.free() - leave).min(chunk.len() as u64) as usize;
            if file.write_all(&chunk[..want]).is_err() {
                break;
            }
        }
        Ok(())
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        let unmounted = std::process::Command::new("umount")
            .arg(&self.0)
            .status()
            .is_ok_and(|s| s.success());
        if !unmounted {
            // Still busy (an agent being killed): detached now, gone once it is closed.
            let _ = std::process::Command::new("umount")
                .arg("-l")
                .arg(&self.0)
                .status();
        }
    }
}

/// Posts events from `*n` on until one is refused with 503 (at most `max`); notes those accepted.
async fn post_until_refused(
    agent: &Agent,
    n: &mut u64,
    max: u64,
    pad: &str,
    acked: &mut BTreeSet<u64>,
) -> anyhow::Result<()> {
    for _ in 0..max {
        *n += 1;
        let (status, answer) = agent
            .post("/", format!(r#"{{"n":{n},"pad":"{pad}"}}"#))
            .await?;
        match status {
            200 => {
                acked.insert(*n);
            }
            503 => return Ok(()),
            other => anyhow::bail!("{other}: {answer}"),
        }
    }
    anyhow::bail!("no 503 after {max} events: the disk never filled")
}

#[tokio::test]
async fn a_full_disk_refuses_loses_nothing_and_recovers_by_itself() -> anyhow::Result<()> {
    let base = TempDir::new("disk-full");
    let mount = Mount::tmpfs(&base.join("state"), "48m")?;
    let (fixed, sink) = failing_until_fixed().await?;
    // Dedup keys go to redb with every event: the redb file meets the full disk too.
    let plugins =
        "    plugins:\n      unique-message-props: [\"n\"]\n      unique-message-timeout: 1h";
    let agent = Agent::builder(&config(&sink.url("/"), plugins))
        .state_dir(&mount.0)
        .env("HOOKER_OUTBOX_MAX_PENDING_BYTES", "1GB")
        .start()
        .await?;
    let pad = "p".repeat(64 << 10);
    let mut acked = BTreeSet::new();
    let mut n = 0;
    // The disk fills while the destination is down: refused with 503.
    let filler = mount.0.join("filler");
    mount.fill(&filler, 12 << 20)?;
    post_until_refused(&agent, &mut n, 1000, &pad, &mut acked).await?;
    assert!(!acked.is_empty());
    wait_until(
        "no partly written spare segment left",
        Duration::from_secs(10),
        async || {
            let left = std::fs::read_dir(journal(&mount.0))
                .ok()?
                .filter_map(|e| e.ok())
                .any(|e| e.file_name().to_string_lossy().ends_with(".preparing"));
            (!left).then_some(())
        },
    )
    .await?;
    // Room again: intake accepts again, without a restart.
    std::fs::remove_file(&filler)?;
    wait_until(
        "intake accepts again",
        Duration::from_secs(20),
        async || {
            n += 1;
            let (status, _) = agent
                .post("/", format!(r#"{{"n":{n},"pad":"{pad}"}}"#))
                .await
                .ok()?;
            (status == 200).then(|| acked.insert(n))
        },
    )
    .await?;
    // Full again, now for good: once the backlog drains, the journal makes room by itself.
    mount.fill(&filler, 0)?;
    post_until_refused(&agent, &mut n, 1000, &pad, &mut acked).await?;
    fixed.store(true, Ordering::Relaxed);
    wait_until(
        "every acknowledged event delivered",
        Duration::from_secs(60),
        async || acked.is_subset(&numbers(&sink)).then_some(()),
    )
    .await?;
    wait_until(
        "intake accepts again on the still full disk",
        Duration::from_secs(30),
        async || {
            n += 1;
            let (status, _) = agent
                .post("/", format!(r#"{{"n":{n},"pad":"p"}}"#))
                .await
                .ok()?;
            (status == 200).then(|| acked.insert(n))
        },
    )
    .await?;
    wait_until(
        "every acknowledged event delivered",
        Duration::from_secs(30),
        async || acked.is_subset(&numbers(&sink)).then_some(()),
    )
    .await?;
    assert!(agent.stop().await?.success());
    drop(mount);
    Ok(())
}
