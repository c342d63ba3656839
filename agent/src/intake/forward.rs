//! The Fluent Forward intake (`HOOKER_FORWARD`, `HOOKER_FORWARD_SOCKET`), for Tracee's
//! `--output forward:tcp://…` and other Forward producers. Message, Forward and (uncompressed)
//! PackedForward modes; a record `{"event": "<JSON text>"}` (Tracee) is that event, any other
//! record map is routed as it is.
//!
//! An entry sent with the `chunk` option is acknowledged (`{"ack": chunk}`) only once the router
//! has stored it; when the queue is full it is not acknowledged and the producer resends. Entries
//! without `chunk` are never waited for: a full queue sheds them (counted). No shared-key
//! handshake: listen on loopback or a Unix socket.

use std::sync::Arc;
use std::time::Duration;

use bytes::{Buf, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::watch;
use tokio::time::Instant;

use super::connections::{Closed, Connections, Limits, RequestGuard, Slot, WaitingGuard, later};
use super::msgpack::{self, DecodeError, Value};
use super::serve::Accept;
use super::submit::{ShedLog, submit_or_shed};
use crate::event::{Event, IntakeKind};
use crate::metrics::Metrics;
use crate::router::RouterHandle;

/// How long an acknowledged entry may wait to be routed and stored.
const ROUTE_TIMEOUT: Duration = Duration::from_secs(30);

const INTAKE: &str = "forward";

/// What the connections share.
pub struct ForwardIntake {
    pub router: RouterHandle,
    pub metrics: Metrics,
    /// Largest accepted Forward message (bytes).
    pub max_frame: usize,
    pub shed_log: ShedLog,
}

#[derive(Debug, thiserror::Error)]
enum ConnectionError {
    #[error("a Forward message is larger than the limit of {0} bytes")]
    TooLarge(usize),
    #[error(transparent)]
    Decode(#[from] DecodeError),
    #[error(transparent)]
    Io(#[from] std::io::Error),
    #[error("a deadline passed ({})", .0.as_str())]
    TimedOut(Closed),
}

/// The entries of one Forward message and its options.
struct Message {
    tag: String,
    records: Vec<Value>,
    chunk: Option<String>,
}

impl ForwardIntake {
    /// Accepts connections on `listener` until `shutdown`, within `limits`: at most
    /// `max_connections` at once (a full cap evicts the longest-idle one), deadlines for the
    /// first bytes, for each message and each read of it, and for idle connections.
    pub async fn serve<L: Accept>(
        self: Arc<Self>,
        mut listener: L,
        name: &'static str,
        limits: Limits,
        mut shutdown: watch::Receiver<bool>,
    ) {
        let connections = Connections::new(name, limits, &self.metrics);
        let mut tasks = tokio::task::JoinSet::new();
        loop {
            // Finished connections' tasks are reaped here: a JoinSet keeps them until joined.
            while tasks.try_join_next().is_some() {}
            let (io, peer) = tokio::select! {
                accepted = listener.accept() => match accepted {
                    Ok(accepted) => accepted,
                    Err(error) => {
                        tracing::warn!(listener = name, %error, "Accept failed.");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                },
                _ = stopped(&mut shutdown) => break,
            };
            let Some(slot) = connections.admit() else {
                drop(io);
                continue;
            };
            let intake = self.clone();
            let shutdown = shutdown.clone();
            tasks.spawn(async move {
                match intake.connection(io, peer.clone(), &slot, shutdown).await {
                    Ok(()) => {}
                    Err(ConnectionError::TimedOut(reason)) => {
                        slot.connections().count(reason);
                        tracing::debug!(listener = name, peer = peer.as_deref().unwrap_or("-"), reason = reason.as_str(), "Forward connection closed.");
                    }
                    Err(error) => {
                        tracing::warn!(listener = name, peer = peer.as_deref().unwrap_or("-"), %error, "Forward connection closed.");
                    }
                }
            });
        }
        // Connections stop at their next message boundary once shutdown is signalled.
        while tasks.join_next().await.is_some() {}
    }

    async fn connection<S>(
        &self,
        mut io: S,
        peer: Option<String>,
        slot: &Slot,
        mut shutdown: watch::Receiver<bool>,
    ) -> Result<(), ConnectionError>
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        let limits = *slot.connections().limits();
        let state = slot.state();
        let mut buf = BytesMut::with_capacity(64 * 1024);
        // Bytes the value at the front needs before decoding is worth trying again.
        let mut needed = 0usize;
        // While part of a message is buffered: it counts as a request stalled on the client,
        // and it must be complete by `message_deadline`.
        let mut partial: Option<(RequestGuard, WaitingGuard)> = None;
        let mut message_deadline = Instant::now();
        let mut last_read = Instant::now();
        loop {
            while !buf.is_empty() && buf.len() >= needed {
                match msgpack::decode(&buf) {
                    Ok((_, used)) if used > self.max_frame => {
                        self.metrics.received(INTAKE, "too_large", 1);
                        return Err(ConnectionError::TooLarge(self.max_frame));
                    }
                    Ok((value, used)) => {
                        buf.advance(used);
                        needed = 0;
                        // Routing: Hooker is busy with this connection, not waiting on it.
                        let request = match partial.take() {
                            Some((request, _waiting)) => request,
                            None => state.request(),
                        };
                        self.message(value, &mut io, &peer).await?;
                        drop(request);
                    }
                    Err(DecodeError::Incomplete { needed: n }) => {
                        if n > self.max_frame {
                            self.metrics.received(INTAKE, "too_large", 1);
                            return Err(ConnectionError::TooLarge(self.max_frame));
                        }
                        needed = n;
                        break;
                    }
                    Err(other) => {
                        self.metrics.received(INTAKE, "invalid", 1);
                        return Err(other.into());
                    }
                }
            }
            let now = Instant::now();
            if buf.is_empty() {
                partial = None;
            } else if partial.is_none() {
                // The rest of a message is owed from now.
                partial = Some((state.request(), state.waiting()));
                message_deadline = later(now, limits.body_timeout);
                last_read = now;
            }
            let (deadline, reason) = if partial.is_some() {
                (
                    message_deadline.min(later(last_read, limits.read_timeout)),
                    Closed::Slow,
                )
            } else if state.is_opened() {
                (later(now, limits.idle_timeout), Closed::Idle)
            } else {
                (later(now, limits.header_timeout), Closed::Slow)
            };
            let read = tokio::select! {
                read = io.read_buf(&mut buf) => read?,
                _ = tokio::time::sleep_until(deadline) => return Err(ConnectionError::TimedOut(reason)),
                _ = slot.evicted() => {
                    tracing::debug!(peer = peer.as_deref().unwrap_or("-"), "Forward connection evicted to make room.");
                    return Ok(());
                }
                _ = stopped(&mut shutdown) => return Ok(()),
            };
            if read == 0 {
                return Ok(());
            }
            state.opened();
            state.touch();
            last_read = Instant::now();
        }
    }

    /// Routes one Forward message; acknowledges it when asked to and it was stored.
    async fn message<S>(
        &self,
        value: Value,
        io: &mut S,
        peer: &Option<String>,
    ) -> Result<(), ConnectionError>
    where
        S: AsyncWrite + Unpin,
    {
        let Some(message) = parse_message(value) else {
            self.metrics.received(INTAKE, "invalid", 1);
            tracing::debug!(
                "Ignored a Forward value that is not [tag, time, record] / [tag, entries]."
            );
            return Ok(());
        };
        let mut events = Vec::with_capacity(message.records.len());
        let mut bytes = 0;
        for record in message.records {
            match record_to_event(record) {
                Ok(payload) => {
                    bytes += payload.to_string().len();
                    events.push(Event::new(payload, IntakeKind::Forward, peer.clone()));
                }
                Err(reason) => {
                    self.metrics.received(INTAKE, "invalid", 1);
                    tracing::debug!(tag = %message.tag, %reason, "Ignored a Forward record.");
                }
            }
        }
        let Some(chunk) = message.chunk else {
            submit_or_shed(
                &self.router,
                &self.metrics,
                &self.shed_log,
                INTAKE,
                events,
                bytes,
            );
            return Ok(());
        };
        let n = events.len() as u64;
        if n > 0 {
            let outcome = match self.router.try_submit(events, bytes) {
                Ok(done) => match tokio::time::timeout(ROUTE_TIMEOUT, done).await {
                    Ok(Ok(Ok(_))) => "accepted",
                    Ok(Ok(Err(_))) => "unavailable",
                    _ => "timeout",
                },
                Err(err) => err.outcome(),
            };
            self.metrics.received(INTAKE, outcome, n);
            if outcome != "accepted" {
                // No ack: the producer resends the chunk.
                tracing::debug!(%chunk, outcome, "Forward chunk not acknowledged.");
                return Ok(());
            }
        }
        io.write_all(&msgpack::encode_ack(&chunk)).await?;
        io.flush().await?;
        Ok(())
    }
}

/// `[tag, time, record, option?]` (Message), `[tag, [[time, record]…], option?]` (Forward) or
/// `[tag, <packed entries>, option?]` (PackedForward, uncompressed).
fn parse_message(value: Value) -> Option<Message> {
    let Value::Array(items) = value else {
        return None;
    };
    let mut items = items.into_iter();
    let tag = items.next()?.as_text()?;
    let second = items.next()?;
    let (records, option) = match second {
        Value::Array(entries) => (
            entries.into_iter().filter_map(entry_record).collect(),
            items.next(),
        ),
        Value::Str(packed) | Value::Bin(packed) => {
            let option = items.next();
            if option
                .as_ref()
                .and_then(|o| o.get("compressed"))
                .and_then(Value::as_text)
                .is_some_and(|c| c != "text")
            {
                tracing::warn!(%tag, "Compressed PackedForward is not supported; send uncompressed.");
                return None;
            }
            (unpack_entries(&packed), option)
        }
        _time => (vec![items.next()?], items.next()),
    };
    let chunk = option
        .as_ref()
        .and_then(|o| o.get("chunk"))
        .and_then(Value::as_text);
    Some(Message {
        tag,
        records,
        chunk,
    })
}

/// The record of a `[time, record]` entry.
fn entry_record(entry: Value) -> Option<Value> {
    match entry {
        Value::Array(pair) => pair.into_iter().nth(1),
        _ => None,
    }
}

/// The records of a PackedForward stream of `[time, record]` entries.
fn unpack_entries(mut packed: &[u8]) -> Vec<Value> {
    let mut records = Vec::new();
    while !packed.is_empty() {
        match msgpack::decode(packed) {
            Ok((entry, used)) => {
                packed = &packed[used..];
                records.extend(entry_record(entry));
            }
            Err(_) => break,
        }
    }
    records
}

/// Tracee's `{"event": "<JSON>"}` is the event; another map is routed as it is.
fn record_to_event(record: Value) -> Result<serde_json::Value, String> {
    match record.get("event") {
        Some(Value::Str(text) | Value::Bin(text)) => {
            match serde_json::from_slice::<serde_json::Value>(text) {
                Ok(event @ serde_json::Value::Object(_)) => Ok(event),
                Ok(_) => Err("the \"event\" text is JSON but not an object".into()),
                Err(err) => Err(format!("the \"event\" text is not JSON: {err}")),
            }
        }
        Some(map @ Value::Map(_)) => Ok(map.to_json()),
        _ => match record {
            Value::Map(_) => Ok(record.to_json()),
            _ => Err("a record is not a map".into()),
        },
    }
}

/// The events of one decoded Forward value, each record's or why it was refused; `None` when
/// the value is not a Forward message. What the intake routes, for the property tests.
#[doc(hidden)]
pub fn message_events(value: Value) -> Option<Vec<Result<serde_json::Value, String>>> {
    let message = parse_message(value)?;
    Some(message.records.into_iter().map(record_to_event).collect())
}

/// Resolves once shutdown is signalled (the guard `wait_for` returns must not be held).
async fn stopped(shutdown: &mut watch::Receiver<bool>) {
    let _ = shutdown.wait_for(|stop| *stop).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(text: &str) -> Value {
        Value::Str(text.as_bytes().to_vec())
    }

    fn map(pairs: &[(&str, Value)]) -> Value {
        Value::Map(pairs.iter().map(|(k, v)| (s(k), v.clone())).collect())
    }

    #[test]
    fn message_mode_with_chunk() {
        let record = map(&[("event", s(r#"{"eventName":"openat"}"#))]);
        let value = Value::Array(vec![
            s("tracee"),
            Value::UInt(1),
            record,
            map(&[("chunk", s("c1"))]),
        ]);
        let message = parse_message(value).unwrap();
        assert_eq!(message.tag, "tracee");
        assert_eq!(message.chunk.as_deref(), Some("c1"));
        let event = record_to_event(message.records[0].clone()).unwrap();
        assert_eq!(event, serde_json::json!({"eventName": "openat"}));
    }

    #[test]
    fn forward_and_packed_modes() {
        let entry = |n: u64| Value::Array(vec![Value::UInt(n), map(&[("n", Value::UInt(n))])]);
        let forward = Value::Array(vec![s("t"), Value::Array(vec![entry(1), entry(2)])]);
        assert_eq!(parse_message(forward).unwrap().records.len(), 2);
        // PackedForward: the entries' bytes back to back. [1, {"n": 1}] twice.
        let packed = vec![
            0x92, 0x01, 0x81, 0xa1, b'n', 0x01, 0x92, 0x02, 0x81, 0xa1, b'n', 0x02,
        ];
        let message = parse_message(Value::Array(vec![s("t"), Value::Bin(packed)])).unwrap();
        assert_eq!(message.records.len(), 2);
        assert_eq!(
            record_to_event(message.records[1].clone()).unwrap(),
            serde_json::json!({"n": 2})
        );
    }

    #[test]
    fn bad_records_say_why() {
        assert!(
            record_to_event(map(&[("event", s("{not json"))]))
                .unwrap_err()
                .contains("not JSON")
        );
        assert!(record_to_event(Value::UInt(3)).is_err());
        assert!(parse_message(Value::UInt(3)).is_none());
    }
}
