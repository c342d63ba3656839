//! Memory is bounded by the documented limits, not by what a client sends: Fluent Forward
//! frames that would expand past `HOOKER_MAX_BODY` keep the agent's peak resident memory
//! (VmHWM, read from /proc) under 128 MB. No timing is asserted.

use std::time::Duration;

use hooker_tests::{Agent, Sink, wait_until};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// The peak every case must stay under.
const PEAK_LIMIT_KB: u64 = 128 * 1024;

/// The agent's peak resident set (VmHWM), in kB.
fn peak_kb(agent: &Agent) -> u64 {
    let pid = agent.pid().expect("the agent is running");
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .expect("/proc/<pid>/status is readable (Linux)");
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmHWM:"))
        .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmHWM in /proc/<pid>/status")
}

fn assert_peak_under_limit(agent: &Agent, case: &str) {
    let peak = peak_kb(agent);
    eprintln!("{case}: agent peak RSS {} MB", peak / 1024);
    assert!(
        peak < PEAK_LIMIT_KB,
        "{case}: the agent's peak RSS was {} MB, over {} MB",
        peak / 1024,
        PEAK_LIMIT_KB / 1024
    );
}

/// msgpack `["nils", 1, {"n": <items>}]` (Message mode), with `items` already encoded.
fn message_frame(items: &[u8]) -> Vec<u8> {
    let mut frame = vec![0x93, 0xa4, b'n', b'i', b'l', b's', 0x01, 0x81, 0xa1, b'n'];
    frame.extend_from_slice(items);
    frame
}

/// An array32 of `n` nils.
fn nils(n: usize) -> Vec<u8> {
    let mut bytes = vec![0xdd];
    bytes.extend((n as u32).to_be_bytes());
    bytes.resize(5 + n, 0xc0);
    bytes
}

/// About `bytes` of nils whose containers are all small: arrays of 65,535 fixarrays of 15
/// nils, so that no length prefix alone gives the size away.
fn nested_nils(bytes: usize) -> Vec<u8> {
    let inner_len = 65_535 * 16 + 3;
    let outer = bytes / inner_len;
    let mut out = vec![0xdc];
    out.extend((outer as u16).to_be_bytes());
    for _ in 0..outer {
        out.push(0xdc);
        out.extend(65_535u16.to_be_bytes());
        for _ in 0..65_535 {
            out.push(0x9f);
            out.extend([0xc0; 15]);
        }
    }
    out
}

/// Sends `frame` on a new connection and reads until the agent closes it (or 60 s pass); a
/// refused write is the agent closing early.
async fn send_frame(address: &str, frame: &[u8]) -> anyhow::Result<()> {
    let mut stream = TcpStream::connect(address).await?;
    let (mut read, mut write) = stream.split();
    let writing = async {
        for chunk in frame.chunks(64 * 1024) {
            if write.write_all(chunk).await.is_err() {
                return;
            }
        }
        let _ = write.shutdown().await;
    };
    let reading = async {
        let mut sink = vec![0u8; 4096];
        loop {
            match read.read(&mut sink).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    };
    let _ = tokio::time::timeout(Duration::from_secs(60), async {
        tokio::join!(writing, reading)
    })
    .await;
    Ok(())
}

#[tokio::test]
async fn forward_frames_of_nils_are_refused_before_they_expand() -> anyhow::Result<()> {
    let sink = Sink::start().await?;
    let agent = Agent::builder(&hooker_tests::webhook_config(&sink.url("/forward")))
        .env("HOOKER_FORWARD", "127.0.0.1:0")
        .start()
        .await?;
    let address = agent
        .address("forward")
        .expect("forward listener")
        .to_string();
    let frames = [
        ("2 MB of nils", message_frame(&nils(2 << 20))),
        ("15 MB of nils", message_frame(&nils(15 << 20))),
        (
            "15 MB of nils in small arrays",
            message_frame(&nested_nils(15 << 20)),
        ),
    ];
    for (case, frame) in &frames {
        send_frame(&address, frame).await?;
        assert_peak_under_limit(&agent, case);
    }
    let series = r#"hooker_events_received_total{intake="forward",outcome="too_large"}"#;
    let refused = wait_until(
        "three refusals counted",
        Duration::from_secs(30),
        async || {
            let n = agent.metric(series).await.ok()?;
            (n >= 3.0).then_some(n)
        },
    )
    .await?;
    assert_eq!(refused, 3.0);
    assert!(
        agent.logs().iter().any(|line| line
            .to_string()
            .contains("MessagePack decodes to more than the limit of")),
        "the refusal says why"
    );
    // A frame within the limit still goes through.
    let record = b"\x81\xa1n\x01";
    let mut small = vec![0x93, 0xa1, b't', 0x01];
    small.extend_from_slice(record);
    send_frame(&address, &small).await?;
    sink.wait_for(1).await?;
    assert_peak_under_limit(&agent, "after the Forward frames");
    Ok(())
}
