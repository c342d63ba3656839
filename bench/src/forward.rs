//! Fluent Forward sender (TCP or Unix): Message mode `[tag, time, {"event": json}, {"chunk": id}]`,
//! waiting for each chunk's `{"ack": id}` as Tracee's forward output would with acks on.

use anyhow::{Context, Result, bail};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::{Events, Outcome, Sender, Stream};

pub struct ForwardSender {
    stream: Box<dyn Stream>,
    events: Events,
    buffer: Vec<u8>,
}

impl ForwardSender {
    pub async fn connect(target: &str, events: Events) -> Result<Self> {
        let stream: Box<dyn Stream> = if let Some(path) = target.strip_prefix("forward+unix:") {
            Box::new(
                tokio::net::UnixStream::connect(path)
                    .await
                    .with_context(|| format!("connect {path}"))?,
            )
        } else if let Some(address) = target.strip_prefix("forward://") {
            let stream = tokio::net::TcpStream::connect(address)
                .await
                .with_context(|| format!("connect {address}"))?;
            stream.set_nodelay(true)?;
            Box::new(stream)
        } else {
            bail!("{target}: expected forward://HOST:PORT or forward+unix:/PATH");
        };
        Ok(ForwardSender {
            stream,
            events,
            buffer: Vec::new(),
        })
    }
}

impl Sender for ForwardSender {
    async fn send(&mut self, first: u64, n: usize) -> Result<Outcome> {
        self.buffer.clear();
        let mut json = Vec::new();
        for seq in first..first + n as u64 {
            json.clear();
            self.events.one(seq, &mut json);
            let chunk = seq.to_string();
            encode_message(&mut self.buffer, &json, &chunk);
        }
        self.stream.write_all(&self.buffer).await?;
        for seq in first..first + n as u64 {
            let ack = read_ack(&mut self.stream).await?;
            if ack != seq.to_string() {
                bail!("ack {ack} for chunk {seq}");
            }
        }
        Ok(Outcome::Accepted(n))
    }
}

fn encode_message(out: &mut Vec<u8>, json: &[u8], chunk: &str) {
    out.push(0x94); // array of 4
    str(out, b"hooker.bench");
    out.push(0xce); // uint32 time
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as u32)
        .unwrap_or(0);
    out.extend_from_slice(&now.to_be_bytes());
    out.push(0x81); // {"event": json}
    str(out, b"event");
    str(out, json);
    out.push(0x81); // {"chunk": id}
    str(out, b"chunk");
    str(out, chunk.as_bytes());
}

fn str(out: &mut Vec<u8>, bytes: &[u8]) {
    match bytes.len() {
        n if n < 32 => out.push(0xa0 | n as u8),
        n if n < 256 => out.extend_from_slice(&[0xd9, n as u8]),
        n if n < 65536 => {
            out.push(0xda);
            out.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            out.push(0xdb);
            out.extend_from_slice(&(n as u32).to_be_bytes());
        }
    }
    out.extend_from_slice(bytes);
}

/// Reads `{"ack": "<id>"}`.
async fn read_ack(stream: &mut Box<dyn Stream>) -> Result<String> {
    let mut head = [0u8; 5];
    stream.read_exact(&mut head).await?;
    if head != [0x81, 0xa3, b'a', b'c', b'k'] {
        bail!("unexpected reply {head:02x?}");
    }
    let len = match stream.read_u8().await? {
        b if b & 0xe0 == 0xa0 => (b & 0x1f) as usize,
        0xd9 => stream.read_u8().await? as usize,
        other => bail!("unexpected ack type {other:#x}"),
    };
    let mut id = vec![0u8; len];
    stream.read_exact(&mut id).await?;
    Ok(String::from_utf8_lossy(&id).into_owned())
}
