//! The gRPC Unix socket's `:authority` fix. grpcurl and Python grpcio (1.57 on) send the socket
//! path, `/run/x.sock` or `%2Frun%2Fx.sock`, as the `:authority` of every request on a `unix:`
//! target; the `h2` crate under hyper rejects such a request with PROTOCOL_ERROR and has no option
//! to accept it (hyperium/h2#487). [`Listener`] wraps each accepted connection in an
//! [`AuthorityFix`], which reads the client's HTTP/2 frames before hyper does: every header block
//! (HEADERS and its CONTINUATIONs) is decoded with the client's HPACK state and encoded again with
//! this side's, with an `:authority` that is not a valid URI authority replaced by `localhost`.
//! Everything else (the preface, DATA, SETTINGS, pings, window updates) passes through unchanged,
//! so flow control and padding are untouched, and a connection that does not start with the
//! HTTP/2 preface (HTTP/1.1) passes through whole.
//!
//! Decoding and encoding are `h2`'s own HPACK and framing ([`h2::Codec`]) on in-memory buffers:
//! the decoder's table follows the client's encoder, the encoder's table is the one hyper's
//! decoder follows. Both use the defaults hyper runs with (4096-byte tables, 16 KiB frames),
//! since hyper never advertises other values. A header block the codec cannot decode closes the
//! connection, where hyper would have reset just that stream for some of them.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};

use bytes::{Buf, Bytes, BytesMut};
use futures_util::Stream;
use h2::frame::{Frame, Pseudo};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
const FRAME_HEADER: usize = 9;
const KIND_HEADERS: u8 = 0x1;
const FLAG_END_HEADERS: u8 = 0x4;

/// The largest header block (HEADERS and CONTINUATION frames, with their frame headers) held
/// while it arrives; hyper takes at most 16 KiB of decoded headers per request.
const MAX_BLOCK: usize = 256 * 1024;

/// The largest decoded header list re-encoded as it is; hyper itself answers 431 above 16 KiB,
/// so anything up to this is left for it to judge.
const MAX_HEADER_LIST: usize = 64 * 1024;

/// What replaces an `:authority` that is not a valid authority.
const REPLACEMENT: &str = "http://localhost/";

/// A Unix listener whose connections get their `:authority` fixed.
pub struct Listener(pub tokio::net::UnixListener);

impl super::serve::Accept for Listener {
    type Io = AuthorityFix<tokio::net::UnixStream>;
    async fn accept(&mut self) -> io::Result<(Self::Io, Option<String>)> {
        let (stream, peer) = super::serve::Accept::accept(&mut self.0).await?;
        Ok((AuthorityFix::new(stream), peer))
    }
}

/// The in-memory end `h2`'s codec reads header blocks from and writes them to.
#[derive(Default)]
struct Buffers {
    input: BytesMut,
    output: BytesMut,
}

impl AsyncRead for Buffers {
    fn poll_read(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if self.input.is_empty() {
            // Only whole header blocks are fed in; asking for more is an incomplete one.
            return Poll::Pending;
        }
        let n = buf.remaining().min(self.input.len());
        buf.put_slice(&self.input[..n]);
        self.input.advance(n);
        Poll::Ready(Ok(()))
    }
}

impl AsyncWrite for Buffers {
    fn poll_write(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.output.extend_from_slice(buf);
        Poll::Ready(Ok(buf.len()))
    }
    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

enum Mode {
    /// Reading the first bytes: the HTTP/2 preface or something else.
    Preface,
    /// HTTP/2 frames; `pass` bytes of the current (non-header) frame still go through as they are.
    Frames { pass: usize },
    /// Not HTTP/2: everything passes through.
    Raw,
}

/// A connection whose HTTP/2 header blocks are rewritten on the way in (see the module doc).
pub struct AuthorityFix<I> {
    inner: I,
    mode: Mode,
    /// Bytes read from the client, not yet processed.
    raw: BytesMut,
    /// Processed bytes for hyper.
    ready: BytesMut,
    codec: h2::Codec<Buffers, Bytes>,
    /// Whether a rewrite has been logged on this connection.
    logged: bool,
    eof: bool,
}

impl<I> AuthorityFix<I> {
    pub fn new(inner: I) -> Self {
        let mut codec = h2::Codec::new(Buffers::default());
        codec.set_max_recv_header_list_size(MAX_HEADER_LIST);
        Self {
            inner,
            mode: Mode::Preface,
            raw: BytesMut::new(),
            ready: BytesMut::new(),
            codec,
            logged: false,
            eof: false,
        }
    }

    /// Moves what can be processed from `raw` to `ready`.
    fn process(&mut self) -> io::Result<()> {
        loop {
            match &mut self.mode {
                Mode::Raw => {
                    let all = self.raw.split();
                    self.ready.unsplit(all);
                    return Ok(());
                }
                Mode::Preface => {
                    let n = self.raw.len().min(PREFACE.len());
                    if self.raw[..n] != PREFACE[..n] {
                        self.mode = Mode::Raw;
                        continue;
                    }
                    if n < PREFACE.len() {
                        return Ok(());
                    }
                    let preface = self.raw.split_to(n);
                    self.ready.unsplit(preface);
                    self.mode = Mode::Frames { pass: 0 };
                }
                Mode::Frames { pass } => {
                    if *pass > 0 {
                        let n = (*pass).min(self.raw.len());
                        *pass -= n;
                        let through = self.raw.split_to(n);
                        self.ready.unsplit(through);
                        if *pass > 0 {
                            return Ok(());
                        }
                    }
                    if self.raw.len() < FRAME_HEADER {
                        return Ok(());
                    }
                    if self.raw[3] == KIND_HEADERS {
                        let Some(end) = block_end(&self.raw)? else {
                            return Ok(());
                        };
                        let block = self.raw.split_to(end);
                        let rewritten = self.rewrite(block)?;
                        self.ready.unsplit(rewritten);
                    } else {
                        let length = frame_length(&self.raw);
                        let head = self.raw.split_to(FRAME_HEADER);
                        self.ready.unsplit(head);
                        *pass = length;
                    }
                }
            }
        }
    }

    /// Decodes one whole header block and encodes it again, fixing its `:authority`.
    fn rewrite(&mut self, block: BytesMut) -> io::Result<BytesMut> {
        let mut cx = Context::from_waker(Waker::noop());
        self.codec.get_mut().input.unsplit(block);
        let frame = match Pin::new(&mut self.codec).poll_next(&mut cx) {
            Poll::Ready(Some(Ok(frame))) => frame,
            Poll::Ready(Some(Err(error))) => return Err(invalid(format!("{error}"))),
            Poll::Ready(None) | Poll::Pending => {
                return Err(invalid("an incomplete header block".to_string()));
            }
        };
        let Frame::Headers(mut headers) = frame else {
            return Err(invalid("a header block that is not HEADERS".to_string()));
        };
        if headers.is_over_size() {
            return Err(invalid("a header list over 64 KiB".to_string()));
        }
        let pseudo = headers.pseudo_mut();
        let bad = pseudo
            .authority
            .as_ref()
            .is_some_and(|authority| authority.parse::<http::uri::Authority>().is_err());
        if bad {
            if !self.logged {
                self.logged = true;
                let authority = pseudo.authority.as_deref().unwrap_or_default();
                tracing::debug!(
                    authority,
                    "Replacing a gRPC request's :authority with localhost."
                );
            }
            pseudo.authority = localhost().authority;
        }
        let encoded = match self.codec.poll_ready(&mut cx) {
            Poll::Ready(Ok(())) => self
                .codec
                .buffer(Frame::Headers(headers))
                .map_err(|error| invalid(format!("{error}")))
                .and_then(|()| match self.codec.flush(&mut cx) {
                    Poll::Ready(result) => result,
                    Poll::Pending => Err(invalid("an unfinished encoding".to_string())),
                }),
            Poll::Ready(Err(error)) => Err(error),
            Poll::Pending => Err(invalid("an unfinished encoding".to_string())),
        };
        encoded?;
        Ok(self.codec.get_mut().output.split())
    }
}

/// `:authority: localhost`, in the type `h2` keeps it in.
fn localhost() -> Pseudo {
    Pseudo::request(http::Method::GET, http::Uri::from_static(REPLACEMENT), None)
}

fn invalid(what: String) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        format!("HTTP/2 on the gRPC Unix socket: {what}"),
    )
}

fn frame_length(bytes: &[u8]) -> usize {
    usize::from(bytes[0]) << 16 | usize::from(bytes[1]) << 8 | usize::from(bytes[2])
}

/// Where the header block starting at `bytes` (a HEADERS frame) ends, once its last frame (the
/// one with END_HEADERS) is all there.
fn block_end(bytes: &[u8]) -> io::Result<Option<usize>> {
    let mut at = 0;
    loop {
        if bytes.len() < at + FRAME_HEADER {
            return Ok(None);
        }
        let end = at + FRAME_HEADER + frame_length(&bytes[at..]);
        if end > MAX_BLOCK {
            return Err(invalid("a header block over 256 KiB".to_string()));
        }
        if bytes.len() < end {
            return Ok(None);
        }
        // A frame other than CONTINUATION here is the codec's to refuse.
        if bytes[at + 4] & FLAG_END_HEADERS != 0 || bytes[at + 3] != 0x9 && at > 0 {
            return Ok(Some(end));
        }
        at = end;
    }
}

impl<I: AsyncRead + Unpin> AsyncRead for AuthorityFix<I> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        loop {
            if !this.ready.is_empty() {
                let n = buf.remaining().min(this.ready.len());
                buf.put_slice(&this.ready[..n]);
                this.ready.advance(n);
                return Poll::Ready(Ok(()));
            }
            if this.eof {
                // What is left is an incomplete frame: hyper sees it cut short, as it was.
                let rest = this.raw.split();
                if rest.is_empty() {
                    return Poll::Ready(Ok(()));
                }
                this.ready.unsplit(rest);
                continue;
            }
            // Bytes that pass through unchanged go straight into the caller's buffer.
            let direct = match this.mode {
                Mode::Raw => Some(buf.remaining()),
                Mode::Frames { pass } if pass > 0 && this.raw.is_empty() => {
                    Some(pass.min(buf.remaining()))
                }
                _ => None,
            };
            if let Some(limit) = direct {
                let n = {
                    let mut part = ReadBuf::new(buf.initialize_unfilled_to(limit));
                    std::task::ready!(Pin::new(&mut this.inner).poll_read(cx, &mut part))?;
                    part.filled().len()
                };
                buf.advance(n);
                if let Mode::Frames { pass } = &mut this.mode {
                    *pass -= n;
                }
                return Poll::Ready(Ok(()));
            }
            let mut chunk = [0u8; 16 * 1024];
            let mut part = ReadBuf::new(&mut chunk);
            std::task::ready!(Pin::new(&mut this.inner).poll_read(cx, &mut part))?;
            if part.filled().is_empty() {
                this.eof = true;
            } else {
                this.raw.extend_from_slice(part.filled());
                this.process()?;
            }
        }
    }
}

impl<I: AsyncWrite + Unpin> AsyncWrite for AuthorityFix<I> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }
    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }
    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    const END_STREAM: u8 = 0x1;

    fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
        let length = u32::try_from(payload.len())
            .expect("small frame")
            .to_be_bytes();
        let mut out = vec![length[1], length[2], length[3], kind, flags];
        out.extend_from_slice(&stream.to_be_bytes());
        out.extend_from_slice(payload);
        out
    }

    /// `GET /` over http with the given `:authority` representation (HPACK, RFC 7541).
    fn request_block(authority: &[u8]) -> Vec<u8> {
        let mut block = vec![0x82, 0x86, 0x84];
        block.extend_from_slice(authority);
        block
    }

    /// A literal `:authority` (static name index 1), with incremental indexing or without.
    fn literal(value: &str, indexed: bool) -> Vec<u8> {
        let mut out = vec![if indexed { 0x41 } else { 0x01 }];
        out.push(u8::try_from(value.len()).expect("short value"));
        out.extend_from_slice(value.as_bytes());
        out
    }

    /// What hyper's h2 server sees of the client's `bytes` once they pass through the fix.
    async fn authorities_seen(bytes: Vec<u8>, requests: usize) -> Vec<Option<String>> {
        let (server_end, mut client_end) = tokio::io::duplex(1 << 20);
        let client = tokio::spawn(async move {
            client_end.write_all(&bytes).await.expect("write");
            // Read the server's frames until it closes, so it never blocks on a full pipe.
            let mut sink = Vec::new();
            let _ = client_end.read_to_end(&mut sink).await;
        });
        let mut connection = h2::server::handshake(AuthorityFix::new(server_end))
            .await
            .expect("handshake");
        let mut seen = Vec::new();
        // A request h2 refuses is reset and never accepted: stop waiting for it in time.
        let _ = tokio::time::timeout(Duration::from_secs(10), async {
            while seen.len() < requests {
                let Some(Ok((request, _))) = connection.accept().await else {
                    break;
                };
                seen.push(request.uri().authority().map(|a| a.to_string()));
            }
        })
        .await;
        drop(connection);
        client.abort();
        seen
    }

    #[tokio::test]
    async fn a_socket_path_authority_becomes_localhost_also_from_the_dynamic_table() {
        let mut bytes = PREFACE.to_vec();
        bytes.extend(frame(0x4, 0, 0, &[])); // SETTINGS
        let flags = FLAG_END_HEADERS | END_STREAM;
        // 1: the path, added to the client's dynamic table (index 62).
        bytes.extend(frame(
            KIND_HEADERS,
            flags,
            1,
            &request_block(&literal("/tmp/x.sock", true)),
        ));
        // 3: the same authority by reference to that entry, the block split over a CONTINUATION.
        let block = request_block(&[0xbe]);
        bytes.extend(frame(KIND_HEADERS, END_STREAM, 3, &block[..2]));
        bytes.extend(frame(0x9, FLAG_END_HEADERS, 3, &block[2..]));
        // 5: grpcio's %-encoded path, not indexed.
        bytes.extend(frame(
            KIND_HEADERS,
            flags,
            5,
            &request_block(&literal("tmp%2Fx.sock", false)),
        ));
        // 7: a valid authority is left alone.
        bytes.extend(frame(
            KIND_HEADERS,
            flags,
            7,
            &request_block(&literal("valid.example:1", true)),
        ));
        // 9: DATA-free request referencing the newest entry (62 now: valid.example:1).
        bytes.extend(frame(KIND_HEADERS, flags, 9, &request_block(&[0xbe])));
        let seen = authorities_seen(bytes, 5).await;
        let localhost = Some("localhost".to_string());
        let valid = Some("valid.example:1".to_string());
        assert_eq!(
            seen,
            vec![
                localhost.clone(),
                localhost.clone(),
                localhost,
                valid.clone(),
                valid
            ]
        );
    }

    #[tokio::test]
    async fn data_frames_and_http1_pass_through_unchanged() {
        let mut fix = AuthorityFix::new(&b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"[..]);
        let mut out = Vec::new();
        fix.read_to_end(&mut out).await.expect("read");
        assert_eq!(out, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n");

        let mut bytes = PREFACE.to_vec();
        bytes.extend(frame(0x4, 0, 0, &[]));
        let data = frame(0x0, 0x8, 1, &[3, b'a', b'b', 0, 0, 0]); // padded DATA
        bytes.extend(&data);
        let mut fix = AuthorityFix::new(&bytes[..]);
        let mut out = Vec::new();
        fix.read_to_end(&mut out).await.expect("read");
        assert_eq!(out, bytes);
    }
}
