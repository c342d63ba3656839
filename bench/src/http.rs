//! HTTP/1.1 intake sender over TCP or a Unix socket: `POST /`, one keep-alive connection each.
//!
//! It writes each request with one `write` and reads the answer on the same task, with no HTTP
//! client library: the generator shares the machine's cores with the agent, and a client that
//! hands every request to a connection task (two task wake-ups per request) cost the agent
//! about a fifth of the CPU it could have had. Only what Hooker answers is understood: a status
//! line, headers and a `Content-Length` body.

use anyhow::{Context, Result, bail};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::{Events, Outcome, Sender, Stream};

/// Larger answers are an error (Hooker's are under 200 bytes).
const MAX_RESPONSE: usize = 64 * 1024;

pub struct HttpSender {
    stream: Box<dyn Stream>,
    /// The request line and every header but `Content-Length`.
    head: Vec<u8>,
    request: Vec<u8>,
    response: Vec<u8>,
    events: Events,
}

impl HttpSender {
    pub async fn connect(target: &str, events: Events, token: Option<String>) -> Result<Self> {
        let (stream, authority): (Box<dyn Stream>, String) =
            if let Some(path) = target.strip_prefix("unix:") {
                let stream = tokio::net::UnixStream::connect(path)
                    .await
                    .with_context(|| format!("connect {path}"))?;
                (Box::new(stream), "localhost".to_string())
            } else if let Some(address) = target.strip_prefix("http://") {
                let address = address.trim_end_matches('/');
                let stream = tokio::net::TcpStream::connect(address)
                    .await
                    .with_context(|| format!("connect {address}"))?;
                stream.set_nodelay(true)?;
                (Box::new(stream), address.to_string())
            } else {
                bail!("{target}: expected http://HOST:PORT or unix:/PATH");
            };
        let mut head =
            format!("POST / HTTP/1.1\r\nhost: {authority}\r\ncontent-type: application/json\r\n");
        if let Some(token) = token {
            head.push_str(&format!("authorization: Bearer {token}\r\n"));
        }
        Ok(HttpSender {
            stream,
            head: head.into_bytes(),
            request: Vec::new(),
            response: Vec::new(),
            events,
        })
    }

    /// Reads one answer and returns its status; leaves nothing of it in the buffer.
    async fn read_response(&mut self) -> Result<u16> {
        self.response.clear();
        let (head_len, body_len) = loop {
            if let Some(end) = find(&self.response, b"\r\n\r\n") {
                let head = std::str::from_utf8(&self.response[..end])
                    .context("the response head is not UTF-8")?;
                break (end + 4, content_length(head)?);
            }
            self.fill().await?;
        };
        while self.response.len() < head_len + body_len {
            self.fill().await?;
        }
        if self.response.len() > head_len + body_len {
            bail!("the agent answered more than was asked");
        }
        let status = self
            .response
            .get(9..12)
            .and_then(|code| std::str::from_utf8(code).ok())
            .and_then(|code| code.parse().ok())
            .context("no status code in the response")?;
        Ok(status)
    }

    async fn fill(&mut self) -> Result<()> {
        if self.response.len() >= MAX_RESPONSE {
            bail!("response larger than {MAX_RESPONSE} bytes");
        }
        let mut chunk = [0u8; 4096];
        let n = self.stream.read(&mut chunk).await?;
        if n == 0 {
            bail!("the agent closed the connection");
        }
        self.response.extend_from_slice(&chunk[..n]);
        Ok(())
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// The body length an answer declares (Hooker's are never chunked).
fn content_length(head: &str) -> Result<usize> {
    for line in head.split("\r\n").skip(1) {
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        if name.eq_ignore_ascii_case("content-length") {
            return value.trim().parse().context("bad content-length");
        }
        if name.eq_ignore_ascii_case("transfer-encoding") {
            bail!("chunked answers are not understood");
        }
    }
    Ok(0)
}

impl Sender for HttpSender {
    async fn send(&mut self, first: u64, n: usize) -> Result<Outcome> {
        let body = self.events.batch(first, n);
        self.request.clear();
        self.request.extend_from_slice(&self.head);
        self.request
            .extend_from_slice(format!("content-length: {}\r\n\r\n", body.len()).as_bytes());
        self.request.extend_from_slice(&body);
        self.stream.write_all(&self.request).await?;
        match self.read_response().await? {
            200..=299 => Ok(Outcome::Accepted(n)),
            429 | 503 => Ok(Outcome::Rejected(n)),
            other => bail!("HTTP {other}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_length_is_read_from_any_case() {
        let head = "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 42";
        assert_eq!(content_length(head).ok(), Some(42));
        assert_eq!(content_length("HTTP/1.1 204 No Content").ok(), Some(0));
        assert!(content_length("HTTP/1.1 200 OK\r\ntransfer-encoding: chunked").is_err());
    }
}
