//! The Tracee subscriber (`HOOKER_TRACEE`): dials Tracee's own gRPC server and reads
//! `tracee.v1beta1.TraceeService/StreamEvents` (optionally only some policies), turning each event
//! into the JSON Tracee prints (`tracee_event.rs`) and handing it to the router.
//!
//! Tracee blocks its pipeline on a slow subscriber, so the stream is drained promptly: events are
//! submitted without waiting and shed (counted) when the queue or outbox is full. When Tracee is
//! absent or restarts, the subscriber reconnects forever with capped exponential backoff and
//! jitter, starting over only after a healthy session. An event over the size limit is skipped
//! and counted without ending the stream (`StreamCodec`). No HTTP/2 keepalive pings: Tracee's server pings idle clients itself and punishes
//! clients that ping too often.

use std::path::PathBuf;
use std::time::Duration;

use futures_util::FutureExt;
use hooker_grpc::tracee::v1beta1 as pb;
use pb::tracee_service_client::TraceeServiceClient;
use prost::Message;
use tokio::sync::watch;
use tonic::transport::{Channel, Endpoint};

use super::submit::{ShedLog, Submitted, submit_or_shed};
use super::tracee_event;
use crate::event::{Event, IntakeKind};
use crate::metrics::{IntakeLabels, IntakeNameLabels, Metrics};
use crate::router::RouterHandle;

/// Tracee's default gRPC socket (`--server grpc`, v0.24+).
pub const DEFAULT_SOCKET: &str = "/var/run/tracee.sock";

/// Tracee's conventional gRPC TCP port.
const DEFAULT_PORT: u16 = 4466;

/// Events gathered from the stream into one router submission, at most.
const MAX_BATCH: usize = 256;

const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// A subscription that stayed up this long was healthy: the backoff starts over after it ends.
/// Shorter ones (Tracee accepts, sends a little, then drops us) keep backing off.
pub const HEALTHY_SESSION: Duration = Duration::from_secs(30);
const INTAKE: &str = "tracee";

/// Where Tracee's gRPC server listens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TraceeAddress {
    Unix(PathBuf),
    /// `host:port`
    Tcp(String),
}

impl TraceeAddress {
    /// `HOOKER_TRACEE`: `unix:/path` (or a bare absolute path), `tcp:host:port`, `tcp:port`,
    /// `host:port`, `http://host:port`, or `on` for Tracee's default socket. `None` when off.
    pub fn parse(setting: &str) -> Result<Option<TraceeAddress>, String> {
        let setting = setting.trim();
        let address = match setting {
            "" | "off" | "none" | "false" | "disabled" => return Ok(None),
            "on" | "true" | "default" | "unix" => TraceeAddress::Unix(DEFAULT_SOCKET.into()),
            _ => {
                if let Some(path) = setting
                    .strip_prefix("unix://")
                    .or_else(|| setting.strip_prefix("unix:"))
                {
                    if path.is_empty() {
                        return Err(format!("`{setting}` names no socket path"));
                    }
                    TraceeAddress::Unix(path.into())
                } else if setting.starts_with('/') {
                    TraceeAddress::Unix(setting.into())
                } else {
                    let rest = setting
                        .strip_prefix("tcp:")
                        .or_else(|| setting.strip_prefix("http://"))
                        .unwrap_or(setting)
                        .trim_start_matches("//")
                        .trim_end_matches('/');
                    let host_port = if rest.parse::<u16>().is_ok() {
                        format!("127.0.0.1:{rest}")
                    } else if rest.is_empty() {
                        format!("127.0.0.1:{DEFAULT_PORT}")
                    } else {
                        rest.to_string()
                    };
                    if !host_port.contains(':') {
                        return Err(format!(
                            "`{setting}` is not unix:/path, tcp:host:port or host:port"
                        ));
                    }
                    TraceeAddress::Tcp(host_port)
                }
            }
        };
        Ok(Some(address))
    }

    fn endpoint(&self) -> Result<Endpoint, tonic::transport::Error> {
        let uri = match self {
            TraceeAddress::Unix(path) => format!("unix:{}", path.display()),
            TraceeAddress::Tcp(host_port) => format!("http://{host_port}"),
        };
        Ok(Endpoint::from_shared(uri)?.connect_timeout(CONNECT_TIMEOUT))
    }
}

impl std::fmt::Display for TraceeAddress {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TraceeAddress::Unix(path) => write!(f, "unix:{}", path.display()),
            TraceeAddress::Tcp(host_port) => write!(f, "tcp:{host_port}"),
        }
    }
}

/// Capped exponential backoff with jitter (each delay is drawn from [d/2, d]).
#[derive(Debug, Clone)]
pub struct Backoff {
    pub initial: Duration,
    pub max: Duration,
    current: Duration,
}

impl Backoff {
    pub fn new(initial: Duration, max: Duration) -> Backoff {
        Backoff {
            initial,
            max,
            current: initial,
        }
    }

    pub fn next_delay(&mut self) -> Duration {
        use rand::Rng;
        let ceiling = self.current;
        self.current = (self.current * 2).min(self.max);
        ceiling.mul_f64(rand::rng().random_range(0.5..=1.0))
    }

    pub fn reset(&mut self) {
        self.current = self.initial;
    }

    /// After a session: start over only if it stayed subscribed for [`HEALTHY_SESSION`], so a
    /// Tracee that drops every stream soon after accepting it is not hammered.
    pub fn session_ended(&mut self, subscribed_for: Duration) {
        if subscribed_for >= HEALTHY_SESSION {
            self.reset();
        }
    }
}

/// A running subscription to one Tracee.
pub struct TraceeSubscriber {
    pub address: TraceeAddress,
    /// Policy names to subscribe to; empty means every event.
    pub policies: Vec<String>,
    pub router: RouterHandle,
    pub metrics: Metrics,
    /// Largest accepted streamed message, in bytes.
    pub max_message: usize,
    pub backoff: Backoff,
}

/// How one connection ended.
struct SessionEnd {
    /// The subscription was established (Tracee answered).
    subscribed: bool,
    /// Tracee answered but refused the subscription (e.g. an unknown policy): a configuration
    /// error, not an absence.
    refused: bool,
    /// How long the subscription stayed up (zero when it never was).
    subscribed_for: Duration,
    received: u64,
    reason: String,
}

impl TraceeSubscriber {
    /// Subscribes, and re-subscribes whenever the stream ends, until `shutdown`.
    pub async fn run(mut self, mut shutdown: watch::Receiver<bool>) {
        let labels = IntakeNameLabels { intake: INTAKE };
        let connected = self.metrics.intake_connected.get_or_create(&labels).clone();
        let attempts = self
            .metrics
            .intake_connection_attempts
            .get_or_create(&labels)
            .clone();
        let refusals = self
            .metrics
            .intake_subscriptions_refused
            .get_or_create(&labels)
            .clone();
        let shed_log = ShedLog::default();
        let mut announced_absence = false;
        loop {
            attempts.inc();
            let end = tokio::select! {
                end = self.session(&shed_log, &connected) => end,
                _ = stopped(&mut shutdown) => {
                    connected.set(0);
                    return;
                }
            };
            connected.set(0);
            if end.refused {
                // Every time, at error level: a mistyped HOOKER_TRACEE_POLICIES never fixes itself.
                refusals.inc();
                tracing::error!(address = %self.address, policies = ?self.policies, reason = %end.reason, "Tracee refused the subscription; check HOOKER_TRACEE_POLICIES. Retrying with backoff.");
            } else if end.subscribed {
                announced_absence = false;
                tracing::warn!(address = %self.address, events = end.received, reason = %end.reason, "Tracee stream ended; reconnecting.");
            } else if !announced_absence {
                announced_absence = true;
                tracing::warn!(address = %self.address, reason = %end.reason, "Cannot subscribe to Tracee; retrying with backoff.");
            } else {
                tracing::debug!(address = %self.address, reason = %end.reason, "Tracee still unreachable.");
            }
            self.backoff.session_ended(end.subscribed_for);
            let delay = self.backoff.next_delay();
            tokio::select! {
                _ = tokio::time::sleep(delay) => {}
                _ = stopped(&mut shutdown) => return,
            }
        }
    }

    async fn connect(&self) -> Result<Channel, String> {
        let endpoint = self
            .address
            .endpoint()
            .map_err(|e| format!("invalid address: {e}"))?;
        endpoint.connect().await.map_err(|e| error_chain(&e))
    }

    /// `StreamEvents` with [`StreamCodec`]: an event over `max_message` is skipped, not fatal.
    /// Only one over [`TRANSPORT_FACTOR`] times that ends the stream (tonic cannot resync).
    async fn stream_events(
        &self,
        channel: Channel,
        request: pb::StreamEventsRequest,
    ) -> Result<tonic::Streaming<Streamed>, tonic::Status> {
        let mut grpc = tonic::client::Grpc::new(channel)
            .max_decoding_message_size(self.max_message.saturating_mul(TRANSPORT_FACTOR));
        grpc.ready()
            .await
            .map_err(|e| tonic::Status::unavailable(e.to_string()))?;
        let path = tonic::codegen::http::uri::PathAndQuery::from_static(
            "/tracee.v1beta1.TraceeService/StreamEvents",
        );
        let codec = StreamCodec {
            max_message: self.max_message,
        };
        grpc.server_streaming(tonic::Request::new(request), path, codec)
            .await
            .map(tonic::Response::into_inner)
    }

    /// One connection: subscribe and drain until the stream ends.
    async fn session(
        &self,
        shed_log: &ShedLog,
        connected: &prometheus_client::metrics::gauge::Gauge,
    ) -> SessionEnd {
        let mut end = SessionEnd {
            subscribed: false,
            refused: false,
            subscribed_for: Duration::ZERO,
            received: 0,
            reason: String::new(),
        };
        let channel = match self.connect().await {
            Ok(channel) => channel,
            Err(reason) => {
                end.reason = reason;
                return end;
            }
        };
        let mut client = TraceeServiceClient::new(channel.clone());
        let version = tokio::time::timeout(
            CONNECT_TIMEOUT,
            client.get_version(pb::GetVersionRequest {}),
        )
        .await;
        let version = match version {
            Ok(Ok(reply)) => reply.into_inner().version,
            _ => "unknown".into(),
        };
        let request = pb::StreamEventsRequest {
            policies: self.policies.clone(),
            mask: None,
        };
        let mut stream = match self.stream_events(channel, request).await {
            Ok(stream) => stream,
            Err(status) => {
                end.refused = true;
                end.reason = format!("StreamEvents refused: {status}");
                return end;
            }
        };
        end.subscribed = true;
        let since = tokio::time::Instant::now();
        connected.set(1);
        tracing::info!(address = %self.address, tracee_version = %version, policies = ?self.policies, "Subscribed to Tracee events.");
        loop {
            let first = stream.message().await;
            let mut batch = Batch::default();
            let mut finished = match first {
                Ok(Some(response)) => {
                    batch.add(response, &self.metrics);
                    None
                }
                Ok(None) => Some("Tracee closed the stream".to_string()),
                Err(status) => Some(format!("stream error: {status}")),
            };
            // Take whatever else has already arrived, so a burst is one submission.
            while finished.is_none() && batch.events.len() < MAX_BATCH {
                match stream.message().now_or_never() {
                    Some(Ok(Some(response))) => batch.add(response, &self.metrics),
                    Some(Ok(None)) => finished = Some("Tracee closed the stream".into()),
                    Some(Err(status)) => finished = Some(format!("stream error: {status}")),
                    None => break,
                }
            }
            end.received += batch.events.len() as u64;
            end.subscribed_for = since.elapsed();
            let submitted = submit_or_shed(
                &self.router,
                &self.metrics,
                shed_log,
                INTAKE,
                batch.events,
                batch.bytes,
            );
            if submitted == Submitted::Closed {
                end.reason = "Hooker is shutting down".into();
                return end;
            }
            if let Some(reason) = finished {
                end.reason = reason;
                return end;
            }
        }
    }
}

/// Converted events waiting for one submission.
#[derive(Default)]
struct Batch {
    events: Vec<Event>,
    bytes: usize,
}

impl Batch {
    fn add(&mut self, streamed: Streamed, metrics: &Metrics) {
        let response = match streamed {
            Streamed::Event(response) => *response,
            Streamed::Oversized(len) => {
                metrics
                    .events_received
                    .get_or_create(&IntakeLabels {
                        intake: INTAKE,
                        outcome: "too_large",
                    })
                    .inc();
                tracing::warn!(
                    bytes = len,
                    "Skipped a Tracee event over the message size limit (HOOKER_MAX_BODY); the stream goes on."
                );
                return;
            }
        };
        let Some(event) = response.event else {
            return;
        };
        self.bytes += event.encoded_len();
        let payload = tracee_event::to_json(&event);
        self.events
            .push(Event::new(payload, IntakeKind::Tracee, None));
    }
}

/// The stream's message size ceiling, as a multiple of the largest accepted event: between the
/// two an event is skipped and counted; above it tonic ends the stream.
const TRANSPORT_FACTOR: usize = 4;

/// One message of the event stream: an event, or one over the size limit, skipped unread.
enum Streamed {
    Event(Box<pb::StreamEventsResponse>),
    Oversized(usize),
}

/// `StreamEvents`' codec: the request as protobuf; each response decoded, or skipped (counted by
/// the caller) when it is over `max_message`, so one huge event does not end the subscription.
struct StreamCodec {
    max_message: usize,
}

impl tonic::codec::Codec for StreamCodec {
    type Encode = pb::StreamEventsRequest;
    type Decode = Streamed;
    type Encoder = RequestEncoder;
    type Decoder = SkippingDecoder;

    fn encoder(&mut self) -> RequestEncoder {
        RequestEncoder
    }

    fn decoder(&mut self) -> SkippingDecoder {
        SkippingDecoder {
            max_message: self.max_message,
        }
    }
}

struct RequestEncoder;

impl tonic::codec::Encoder for RequestEncoder {
    type Item = pb::StreamEventsRequest;
    type Error = tonic::Status;

    fn encode(
        &mut self,
        item: pb::StreamEventsRequest,
        dst: &mut tonic::codec::EncodeBuf<'_>,
    ) -> Result<(), tonic::Status> {
        item.encode(dst)
            .map_err(|e| tonic::Status::internal(e.to_string()))
    }
}

struct SkippingDecoder {
    max_message: usize,
}

impl tonic::codec::Decoder for SkippingDecoder {
    type Item = Streamed;
    type Error = tonic::Status;

    fn decode(
        &mut self,
        src: &mut tonic::codec::DecodeBuf<'_>,
    ) -> Result<Option<Streamed>, tonic::Status> {
        use bytes::Buf;
        let len = src.remaining();
        if len > self.max_message {
            src.advance(len);
            return Ok(Some(Streamed::Oversized(len)));
        }
        pb::StreamEventsResponse::decode(src)
            .map(|response| Some(Streamed::Event(Box::new(response))))
            .map_err(|e| tonic::Status::internal(e.to_string()))
    }
}

/// An error with its causes, e.g. "transport error: No such file or directory".
fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// Resolves once shutdown is signalled (the guard `wait_for` returns must not be held).
async fn stopped(shutdown: &mut watch::Receiver<bool>) {
    let _ = shutdown.wait_for(|stop| *stop).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_parse() {
        let parse = |s: &str| TraceeAddress::parse(s).unwrap();
        assert_eq!(parse("off"), None);
        assert_eq!(parse(""), None);
        assert_eq!(
            parse("on"),
            Some(TraceeAddress::Unix(DEFAULT_SOCKET.into()))
        );
        assert_eq!(
            parse("unix:/tmp/t.sock"),
            Some(TraceeAddress::Unix("/tmp/t.sock".into()))
        );
        assert_eq!(
            parse("unix:///tmp/t.sock"),
            Some(TraceeAddress::Unix("/tmp/t.sock".into()))
        );
        assert_eq!(
            parse("/tmp/t.sock"),
            Some(TraceeAddress::Unix("/tmp/t.sock".into()))
        );
        assert_eq!(
            parse("tcp:4466"),
            Some(TraceeAddress::Tcp("127.0.0.1:4466".into()))
        );
        assert_eq!(
            parse("tcp:10.0.0.1:4466"),
            Some(TraceeAddress::Tcp("10.0.0.1:4466".into()))
        );
        assert_eq!(
            parse("http://localhost:4466"),
            Some(TraceeAddress::Tcp("localhost:4466".into()))
        );
        assert!(TraceeAddress::parse("unix:").is_err());
        assert!(TraceeAddress::parse("tracee").is_err());
    }

    #[test]
    fn backoff_doubles_to_the_cap_with_jitter() {
        let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_millis(800));
        let delays: Vec<Duration> = (0..6).map(|_| backoff.next_delay()).collect();
        let ceilings = [100, 200, 400, 800, 800, 800];
        for (delay, ceiling) in delays.iter().zip(ceilings) {
            let ceiling = Duration::from_millis(ceiling);
            assert!(
                *delay <= ceiling && *delay >= ceiling / 2,
                "{delay:?} vs {ceiling:?}"
            );
        }
        backoff.reset();
        assert!(backoff.next_delay() <= Duration::from_millis(100));
    }

    /// Sessions that receive something and drop soon after do not reset the backoff (107
    /// reconnects in 40 s otherwise); one that stayed up a while does.
    #[test]
    fn only_a_healthy_session_resets_the_backoff() {
        let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(30));
        for _ in 0..5 {
            backoff.next_delay();
            backoff.session_ended(Duration::from_secs(1));
        }
        assert!(
            backoff.next_delay() >= Duration::from_millis(1600),
            "short sessions keep backing off"
        );
        backoff.session_ended(HEALTHY_SESSION);
        assert!(backoff.next_delay() <= Duration::from_millis(100));
    }
}
