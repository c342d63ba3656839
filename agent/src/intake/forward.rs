//! The Fluent Forward intake (`HOOKER_FORWARD`, `HOOKER_FORWARD_SOCKET`), for Tracee's
//! `--output forward:tcp://…` and other Forward producers. Message, Forward and (uncompressed)
//! PackedForward modes; a record `{"event": "<JSON text>"}` (Tracee) is that event, any other
//! record map is routed as it is.
//!
//! An entry sent with the `chunk` option is acknowledged (`{"ack": chunk}`) only once the router
//! has stored it; when the queue is full it is not acknowledged and the producer resends. Entries
//! without `chunk` are never waited for: a full queue sheds them (counted). No shared-key
//! handshake: listen on loopback or a Unix socket.
//!
//! A message is bounded twice by `HOOKER_MAX_BODY`: its size on the wire, and what it decodes to
//! (a [`msgpack::Budget`] of that size, charged for every value, its JSON text and each record's
//! event), so a small frame that would expand into a huge one is refused like a large one.

use std::sync::Arc;
use std::time::Duration;

use bytes::{Buf, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::watch;
use tokio::time::Instant;

use super::connections::{Closed, Connections, Limits, RequestGuard, Slot, WaitingGuard, later};
use super::msgpack::{self, Budget, DecodeError, Value};
use super::serve::Accept;
use super::submit::{ShedLog, submit_or_shed};
use crate::event::{Event, IntakeKind};
use crate::metrics::Metrics;
use crate::router::RouterHandle;

/// What each record is charged beside its values: the event it becomes (its id, metadata and
/// shared JSON), so that a message of many empty records is bounded too.
const RECORD_COST: usize = 256;

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
    #[error("a Forward message was refused: {0} (HOOKER_MAX_BODY)")]
    Expands(DecodeError),
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
                let mut budget = Budget::new(self.max_frame);
                match msgpack::decode(&buf, &mut budget) {
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
                        self.message(value, budget, &mut io, &peer).await?;
                        drop(request);
                    }
                    Err(error @ DecodeError::TooLarge { .. }) => {
                        self.metrics.received(INTAKE, "too_large", 1);
                        return Err(ConnectionError::Expands(error));
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
        mut budget: Budget,
        io: &mut S,
        peer: &Option<String>,
    ) -> Result<(), ConnectionError>
    where
        S: AsyncWrite + Unpin,
    {
        let message = match parse_message(value, &mut budget) {
            Ok(message) => message,
            Err(error) => {
                self.metrics.received(INTAKE, "too_large", 1);
                return Err(ConnectionError::Expands(error));
            }
        };
        let Some(message) = message else {
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
                    bytes += json_len(&payload);
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

/// The length of `value` as compact JSON text, counted without making the text.
fn json_len(value: &serde_json::Value) -> usize {
    struct Count(usize);
    impl std::io::Write for Count {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0 += buf.len();
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut count = Count(0);
    let _ = serde_json::to_writer(&mut count, value);
    count.0
}

/// Like [`parse_message_shape`], charging `budget` for the entries unpacked from a PackedForward
/// stream and for every record; over budget is an error.
fn parse_message(value: Value, budget: &mut Budget) -> Result<Option<Message>, DecodeError> {
    let Some(message) = parse_message_shape(value, budget)? else {
        return Ok(None);
    };
    budget.charge(message.records.len().saturating_mul(RECORD_COST))?;
    Ok(Some(message))
}

/// `[tag, time, record, option?]` (Message), `[tag, [[time, record]…], option?]` (Forward) or
/// `[tag, <packed entries>, option?]` (PackedForward, uncompressed).
fn parse_message_shape(value: Value, budget: &mut Budget) -> Result<Option<Message>, DecodeError> {
    let Value::Array(items) = value else {
        return Ok(None);
    };
    let mut items = items.into_iter();
    let Some(tag) = items.next().and_then(|tag| tag.as_text()) else {
        return Ok(None);
    };
    let Some(second) = items.next() else {
        return Ok(None);
    };
    // What a PackedForward stream was charged, given back once its entries are decoded.
    let stream_cost = msgpack::text_cost(&second);
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
                return Ok(None);
            }
            let records = unpack_entries(&packed, budget)?;
            budget.refund(stream_cost);
            (records, option)
        }
        _time => match items.next() {
            Some(record) => (vec![record], items.next()),
            None => return Ok(None),
        },
    };
    let chunk = option
        .as_ref()
        .and_then(|o| o.get("chunk"))
        .and_then(Value::as_text);
    Ok(Some(Message {
        tag,
        records,
        chunk,
    }))
}

/// The record of a `[time, record]` entry.
fn entry_record(entry: Value) -> Option<Value> {
    match entry {
        Value::Array(pair) => pair.into_iter().nth(1),
        _ => None,
    }
}

/// The records of a PackedForward stream of `[time, record]` entries (up to the first that
/// does not decode), charged to `budget`.
fn unpack_entries(mut packed: &[u8], budget: &mut Budget) -> Result<Vec<Value>, DecodeError> {
    let mut records = Vec::new();
    while !packed.is_empty() {
        match msgpack::decode(packed, budget) {
            Ok((entry, used)) => {
                packed = &packed[used..];
                records.extend(entry_record(entry));
            }
            Err(error @ DecodeError::TooLarge { .. }) => return Err(error),
            Err(_) => break,
        }
    }
    Ok(records)
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
    let message = parse_message(value, &mut Budget::new(usize::MAX)).ok()??;
    Some(message.records.into_iter().map(record_to_event).collect())
}

/// Resolves once shutdown is signalled (the guard `wait_for` returns must not be held).
async fn stopped(shutdown: &mut watch::Receiver<bool>) {
    let _ = shutdown.wait_for(|stop| *stop).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unlimited() -> Budget {
        Budget::new(usize::MAX)
    }

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
        let message = parse_message(value, &mut unlimited()).unwrap().unwrap();
        assert_eq!(message.tag, "tracee");
        assert_eq!(message.chunk.as_deref(), Some("c1"));
        let event = record_to_event(message.records[0].clone()).unwrap();
        assert_eq!(event, serde_json::json!({"eventName": "openat"}));
    }

    #[test]
    fn forward_and_packed_modes() {
        let entry = |n: u64| Value::Array(vec![Value::UInt(n), map(&[("n", Value::UInt(n))])]);
        let forward = Value::Array(vec![s("t"), Value::Array(vec![entry(1), entry(2)])]);
        assert_eq!(
            parse_message(forward, &mut unlimited())
                .unwrap()
                .unwrap()
                .records
                .len(),
            2
        );
        // PackedForward: the entries' bytes back to back. [1, {"n": 1}] twice.
        let packed = vec![
            0x92, 0x01, 0x81, 0xa1, b'n', 0x01, 0x92, 0x02, 0x81, 0xa1, b'n', 0x02,
        ];
        let message = parse_message(
            Value::Array(vec![s("t"), Value::Bin(packed)]),
            &mut unlimited(),
        )
        .unwrap()
        .unwrap();
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
        assert!(
            parse_message(Value::UInt(3), &mut unlimited())
                .unwrap()
                .is_none()
        );
    }

    #[test]
    fn packed_entries_and_records_are_charged_to_the_message_budget() {
        // PackedForward of 1,000 `[1, {}]` entries: 3 bytes each on the wire, a record each.
        // ["t", bin16(packed)], decoded and parsed as the connection does.
        let mut frame = vec![0x92, 0xa1, b't', 0xc5, 0x0b, 0xb8];
        frame.extend([0x92, 0x01, 0x80].repeat(1000));
        let parse = |limit: usize| {
            let mut budget = Budget::new(limit);
            let (value, _) = msgpack::decode(&frame, &mut budget)?;
            parse_message(value, &mut budget)
        };
        // The message's 3 values and "t"; the stream's own cost is given back once unpacked.
        let enough = 3 * msgpack::SLOT + 3 + 1000 * (3 * msgpack::SLOT + RECORD_COST);
        assert_eq!(parse(enough).unwrap().unwrap().records.len(), 1000);
        assert!(matches!(
            parse(enough - 1),
            Err(DecodeError::TooLarge { .. })
        ));
        // Forward mode: the records alone.
        let entries = vec![Value::Array(vec![Value::UInt(1), map(&[])]); 1000];
        let forward = || Value::Array(vec![s("t"), Value::Array(entries.clone())]);
        assert!(parse_message(forward(), &mut Budget::new(1000 * RECORD_COST)).is_ok());
        assert!(parse_message(forward(), &mut Budget::new(1000 * RECORD_COST - 1)).is_err());
    }
}
