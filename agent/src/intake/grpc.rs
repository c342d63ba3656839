//! The gRPC intake (`hooker.v1.Intake`, with server reflection) on loopback TCP (`HOOKER_GRPC`)
//! and a Unix socket (`HOOKER_GRPC_SOCKET`), served by the same accept loop as HTTP
//! (`serve.rs`: connection cap, HTTP/2 stream cap, optional TLS, graceful shutdown).
//!
//! Same guarantee as the HTTP intake: success only once the router has the events and their
//! deliveries are on disk. A full queue or outbox answers RESOURCE_EXHAUSTED, bad JSON
//! INVALID_ARGUMENT with the parser's message. A streamed batch that finds them full is held
//! (up to `HOOKER_GRPC_STREAM_WAIT`) and the stream is not read meanwhile: HTTP/2 flow control
//! slows the producer down, where a refusal would have it send the batch again and again while
//! the agent needs its CPU for the deliveries it holds. Past the wait, the batch is refused with
//! a rejection of that code. On TCP,
//! publishing needs a bearer token when tokens are configured; `Health` and reflection stay open,
//! and the Unix socket relies on its file mode.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use futures_util::stream::FuturesOrdered;
use futures_util::{FutureExt, StreamExt};
use hooker_grpc::hooker::v1 as pb;
use pb::intake_server::{Intake, IntakeServer};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Code, Status};

use super::serve::Peer;
use crate::auth::Tokens;
use crate::event::{Event, IntakeKind, parse_body};
use crate::event_json::EventJson;
use crate::metrics::{ListenerLabels, Metrics};
use crate::router::fields::Pruned;
use crate::router::{Routed, RouterHandle, SubmitError};

/// How long a call waits for its events to be routed and stored before answering UNAVAILABLE.
const ROUTE_TIMEOUT: Duration = Duration::from_secs(30);

/// Batches of one stream submitted but not yet acknowledged; beyond it the stream is not read,
/// so HTTP/2 flow control holds the producer back.
const MAX_BATCHES_IN_FLIGHT: usize = 64;

/// How long a streamed batch waits for the outbox to keep deliveries in memory again (see
/// [`Hold::Disk`]), and how long after such a wait ran out batches go to disk without waiting.
const SPILL_WAIT: Duration = Duration::from_millis(50);
const SPILL_PAUSE: Duration = Duration::from_secs(1);

/// Listener names (metric labels and the auth exemption).
pub const TCP_LISTENER: &str = "grpc";
pub const UNIX_LISTENER: &str = "grpc_unix";

const KIND: IntakeKind = IntakeKind::Grpc;

/// Methods callable without a token: health and discovery.
fn is_open(path: &str) -> bool {
    path == "/hooker.v1.Intake/Health" || path.starts_with("/grpc.reflection.")
}

/// The `hooker.v1.Intake` service.
#[derive(Clone)]
pub struct GrpcIntake {
    pub router: RouterHandle,
    pub metrics: Metrics,
    /// False while starting and once shutdown begins; `Health` reports it.
    pub ready: Arc<AtomicBool>,
    /// How long a streamed batch that finds the outbox full waits for room before it is refused.
    pub stream_wait: Duration,
}

/// What an app needs besides the service.
pub struct AppOptions {
    /// Largest accepted message (a `Publish` request or one streamed batch), in bytes.
    pub max_message: usize,
    /// Bearer tokens required on TCP for publishing.
    pub tokens: Option<Arc<Tokens>>,
}

impl GrpcIntake {
    /// The axum app for a listener: the intake, reflection (v1 and v1alpha), bearer auth.
    pub fn app(self, options: AppOptions) -> Result<axum::Router, tonic_reflection::server::Error> {
        let metrics = self.metrics.clone();
        let intake = IntakeServer::new(self)
            .max_decoding_message_size(options.max_message)
            .max_encoding_message_size(options.max_message);
        let reflection_v1 = tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(pb::FILE_DESCRIPTOR_SET)
            .build_v1()?;
        let reflection_v1alpha = tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(pb::FILE_DESCRIPTOR_SET)
            .build_v1alpha()?;
        let routes = tonic::service::Routes::new(intake)
            .add_service(reflection_v1)
            .add_service(reflection_v1alpha)
            .prepare()
            .into_axum_router();
        let auth = Auth {
            tokens: options.tokens,
            metrics,
        };
        Ok(routes.layer(axum::middleware::from_fn_with_state(auth, authenticate)))
    }

    fn has_route(&self, route: &str) -> bool {
        route.is_empty() || self.router.has_route(route)
    }

    /// Submits and waits until stored; errors are the status to answer and the outcome label.
    /// With `room_until`, a full queue or outbox is waited out until then instead of refused.
    async fn submit(
        &self,
        events: Vec<Event>,
        bytes: usize,
        room_until: Option<tokio::time::Instant>,
    ) -> Result<Routed, (Status, &'static str)> {
        let done = match room_until {
            Some(deadline) => self.router.submit_within(events, bytes, deadline).await,
            None => self.router.try_submit(events, bytes),
        }
        .map_err(submit_status)?;
        match tokio::time::timeout(ROUTE_TIMEOUT, done).await {
            Ok(Ok(Ok(routed))) => Ok(routed),
            Ok(Ok(Err(store_error))) => Err((
                Status::unavailable(format!("events could not be stored: {store_error}")),
                "unavailable",
            )),
            _ => Err((
                Status::unavailable(
                    "events were queued but not stored in time; they may still be delivered",
                ),
                "timeout",
            )),
        }
    }

    /// Validates and submits one streamed batch; the future settles when the router answers.
    fn submit_batch(
        &self,
        batch: pb::PublishBatch,
        peer: &Option<String>,
    ) -> Pin<Box<dyn Future<Output = Settled> + Send>> {
        let seq = batch.seq;
        let mut settled = Settled {
            seq,
            ..Settled::default()
        };
        if let Err(err) = self.router.admits(wire_bytes(&batch)) {
            // Refused before parsing: shedding must cost little while the producer retries.
            let n = batch.events.len() as u64;
            let (status, outcome) = submit_status(err);
            self.metrics.received(KIND.as_str(), outcome, n);
            settled.reject(None, n, status);
            return Box::pin(std::future::ready(settled));
        }
        let mut events = Vec::with_capacity(batch.events.len());
        let mut indexes = Vec::with_capacity(batch.events.len());
        let mut bytes = 0;
        for (index, event) in batch.events.into_iter().enumerate() {
            let index = u32::try_from(index).unwrap_or(u32::MAX);
            match self.stream_event(event, peer) {
                Ok((event, size)) => {
                    bytes += size;
                    events.push(event);
                    indexes.push(index);
                }
                Err((status, outcome)) => {
                    self.metrics.received(KIND.as_str(), outcome, 1);
                    settled.reject(Some(index), 1, status);
                }
            }
        }
        if events.is_empty() {
            return Box::pin(std::future::ready(settled));
        }
        let n = events.len();
        let intake = self.clone();
        Box::pin(async move {
            let room_until = tokio::time::Instant::now() + intake.stream_wait;
            match intake.submit(events, bytes, Some(room_until)).await {
                Ok(routed) => {
                    intake.metrics.received(KIND.as_str(), "accepted", n as u64);
                    settled.accepted += n as u64;
                    settled.matches += routed.matches as u64;
                }
                Err((status, outcome)) => {
                    intake.metrics.received(KIND.as_str(), outcome, n as u64);
                    settled.reject(None, n as u64, status);
                }
            }
            settled
        })
    }

    /// One streamed event: a single JSON object, for a known route.
    fn stream_event(
        &self,
        event: pb::Event,
        peer: &Option<String>,
    ) -> Result<(Event, usize), (Status, &'static str)> {
        if !self.has_route(&event.route) {
            return Err(unknown_route(&event.route));
        }
        if event.payload.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'[') {
            return Err((
                Status::invalid_argument(
                    "a streamed event's payload is one JSON object; send each event as its own Event",
                ),
                "invalid",
            ));
        }
        let size = event.payload.len();
        let mut payloads = parse_body(&event.payload, self.router.fields())
            .map_err(|err| (Status::invalid_argument(err.to_string()), "invalid"))?;
        let payload = payloads.pop().unwrap_or_default();
        Ok((make_event(payload, &event, peer), size))
    }
}

/// What a batch's events take on the wire (what the router's queue and the outbox admit).
fn wire_bytes(batch: &pb::PublishBatch) -> usize {
    batch.events.iter().map(|e| e.payload.len()).sum()
}

fn make_event(
    (payload, pruned): (EventJson, Option<Pruned>),
    event: &pb::Event,
    peer: &Option<String>,
) -> Event {
    let origin = match (peer, event.source.is_empty()) {
        (Some(peer), false) => Some(format!("{peer} ({})", event.source)),
        (None, false) => Some(event.source.clone()),
        (peer, true) => peer.clone(),
    };
    if !event.metadata.is_empty() {
        tracing::debug!(source = %event.source, metadata = ?event.metadata, "gRPC event metadata.");
    }
    let mut made = Event::new(payload, KIND, origin);
    made.pruned = pruned;
    if !event.route.is_empty() {
        made.only_route = Some(event.route.as_str().into());
    }
    made
}

fn unknown_route(route: &str) -> (Status, &'static str) {
    (
        Status::not_found(format!("no route named \"{route}\"")),
        "unknown_route",
    )
}

fn submit_status(err: SubmitError) -> (Status, &'static str) {
    let status = match err {
        SubmitError::Full => {
            Status::resource_exhausted("the event queue or the outbox is full; retry later")
        }
        SubmitError::TooLarge => {
            Status::invalid_argument("the events are larger than the whole event queue")
        }
        SubmitError::Closed => Status::unavailable("Hooker is shutting down"),
    };
    (status, err.outcome())
}

fn peer_of<T>(request: &tonic::Request<T>) -> Option<String> {
    request
        .extensions()
        .get::<Peer>()
        .and_then(|p| p.address.clone())
}

/// What a batch (or several, merged) came to.
#[derive(Default)]
struct Settled {
    seq: u64,
    accepted: u64,
    rejected: u64,
    matches: u64,
    rejections: Vec<pb::Rejection>,
}

impl Settled {
    /// Rejects `n` events: one of the batch (`index`), or all of them (`None`).
    fn reject(&mut self, index: Option<u32>, n: u64, status: Status) {
        self.rejected += n;
        self.rejections.push(pb::Rejection {
            seq: self.seq,
            index,
            code: status.code() as i32,
            reason: status.message().to_string(),
        });
    }

    /// Folds a later batch into this ack.
    fn merge(&mut self, later: Settled) {
        self.seq = later.seq;
        self.accepted += later.accepted;
        self.rejected += later.rejected;
        self.matches += later.matches;
        self.rejections.extend(later.rejections);
    }
}

#[tonic::async_trait]
impl Intake for GrpcIntake {
    async fn publish(
        &self,
        request: tonic::Request<pb::PublishRequest>,
    ) -> Result<tonic::Response<pb::PublishReply>, Status> {
        let peer = peer_of(&request);
        let Some(event) = request.into_inner().event else {
            self.metrics.received(KIND.as_str(), "invalid", 1);
            return Err(Status::invalid_argument("the request has no event"));
        };
        if !self.has_route(&event.route) {
            self.metrics.received(KIND.as_str(), "unknown_route", 1);
            return Err(unknown_route(&event.route).0);
        }
        if let Err(err) = self.router.admits(event.payload.len()) {
            let (status, outcome) = submit_status(err);
            self.metrics.received(KIND.as_str(), outcome, 1);
            return Err(status);
        }
        let payloads = parse_body(&event.payload, self.router.fields()).map_err(|err| {
            self.metrics.received(KIND.as_str(), "invalid", 1);
            Status::invalid_argument(err.to_string())
        })?;
        let n = payloads.len();
        let events = payloads
            .into_iter()
            .map(|payload| make_event(payload, &event, &peer))
            .collect();
        match self.submit(events, event.payload.len(), None).await {
            Ok(routed) => {
                self.metrics.received(KIND.as_str(), "accepted", n as u64);
                Ok(tonic::Response::new(pb::PublishReply {
                    events: u32::try_from(routed.events).unwrap_or(u32::MAX),
                    matches: u32::try_from(routed.matches).unwrap_or(u32::MAX),
                }))
            }
            Err((status, outcome)) => {
                self.metrics.received(KIND.as_str(), outcome, n as u64);
                Err(status)
            }
        }
    }

    type PublishStreamStream = ReceiverStream<Result<pb::PublishAck, Status>>;

    async fn publish_stream(
        &self,
        request: tonic::Request<tonic::Streaming<pb::PublishBatch>>,
    ) -> Result<tonic::Response<Self::PublishStreamStream>, Status> {
        let peer = peer_of(&request);
        let inbound = request.into_inner();
        let (acks, rx) = mpsc::channel(16);
        tokio::spawn(self.clone().stream(inbound, peer, acks));
        Ok(tonic::Response::new(ReceiverStream::new(rx)))
    }

    async fn health(
        &self,
        _request: tonic::Request<pb::HealthRequest>,
    ) -> Result<tonic::Response<pb::HealthReply>, Status> {
        Ok(tonic::Response::new(pb::HealthReply {
            version: env!("CARGO_PKG_VERSION").to_string(),
            ready: self.ready.load(Ordering::Relaxed),
            routes: u32::try_from(self.router.route_count()).unwrap_or(u32::MAX),
        }))
    }
}

/// Why a streamed batch waits before it is submitted, and until when.
#[derive(Clone, Copy)]
enum Hold {
    None,
    /// The router's queue or the outbox is full: wait for room.
    Full(tokio::time::Instant),
    /// The outbox is crowded (`Outbox::crowded`): the batch's deliveries would soon be kept on
    /// disk only, to be read back when they run. Deliveries that are merely busy make room
    /// within milliseconds, and a batch that waits for it costs the agent far less than one
    /// written out and read back; if none comes in time, the batch goes to disk.
    Disk(tokio::time::Instant),
}

impl GrpcIntake {
    /// Waits as `hold` says; false if it ran out of time.
    async fn hold(&self, bytes: usize, hold: Hold) -> bool {
        match hold {
            Hold::None => true,
            Hold::Full(until) => self.router.wait_for_room(bytes, until).await.is_ok(),
            Hold::Disk(until) => self.router.wait_in_memory(until).await,
        }
    }

    /// Reads batches, submits each at once, and acknowledges in order; batches that settled
    /// together are folded into one cumulative ack.
    async fn stream(
        self,
        mut inbound: tonic::Streaming<pb::PublishBatch>,
        peer: Option<String>,
        acks: mpsc::Sender<Result<pb::PublishAck, Status>>,
    ) {
        let mut pending: FuturesOrdered<Pin<Box<dyn Future<Output = Settled> + Send>>> =
            FuturesOrdered::new();
        // A batch waiting for room (see `Hold`): with one held, the stream is not read.
        let mut held: Option<(pb::PublishBatch, usize, Hold)> = None;
        // When a wait to stay in memory last ran out: the deliveries are stalled, not busy, and
        // later batches go to disk without waiting, for a while.
        let mut spilled_at: Option<tokio::time::Instant> = None;
        let mut reading = true;
        let mut last_seq: Option<u64> = None;
        let (mut total_accepted, mut total_rejected) = (0u64, 0u64);
        loop {
            let (held_bytes, hold) = held.as_ref().map_or((0, Hold::None), |(_, b, h)| (*b, *h));
            tokio::select! {
                biased;
                Some(mut settled) = pending.next(), if !pending.is_empty() => {
                    while let Some(Some(later)) = pending.next().now_or_never() {
                        settled.merge(later);
                    }
                    total_accepted += settled.accepted;
                    total_rejected += settled.rejected;
                    let ack = pb::PublishAck {
                        seq: settled.seq,
                        accepted: settled.accepted,
                        rejected: settled.rejected,
                        rejections: settled.rejections,
                        matches: settled.matches,
                        total_accepted,
                        total_rejected,
                    };
                    if acks.send(Ok(ack)).await.is_err() {
                        return;
                    }
                }
                // Admitted, or waited long enough: `submit_batch` checks again and refuses.
                in_time = self.hold(held_bytes, hold), if held.is_some() => {
                    if !in_time && matches!(hold, Hold::Disk(_)) {
                        spilled_at = Some(tokio::time::Instant::now());
                    }
                    if let Some((batch, _, _)) = held.take() {
                        pending.push_back(self.submit_batch(batch, &peer));
                    }
                }
                message = inbound.message(), if reading && held.is_none() && pending.len() < MAX_BATCHES_IN_FLIGHT => {
                    match message {
                        Ok(Some(batch)) => {
                            if last_seq.is_some_and(|last| batch.seq <= last) {
                                let _ = acks.send(Err(Status::invalid_argument(format!(
                                    "batch seq {} does not increase (previous {})",
                                    batch.seq,
                                    last_seq.unwrap_or_default()
                                )))).await;
                                return;
                            }
                            last_seq = Some(batch.seq);
                            let bytes = wire_bytes(&batch);
                            let now = tokio::time::Instant::now();
                            let hold = if self.router.admits(bytes) == Err(SubmitError::Full) {
                                Hold::Full(now + self.stream_wait)
                            } else if self.router.crowded()
                                && spilled_at.is_none_or(|at| now > at + SPILL_PAUSE)
                            {
                                Hold::Disk(now + SPILL_WAIT)
                            } else {
                                Hold::None
                            };
                            if matches!(hold, Hold::None) {
                                pending.push_back(self.submit_batch(batch, &peer));
                            } else {
                                held = Some((batch, bytes, hold));
                            }
                        }
                        Ok(None) => reading = false,
                        Err(status) => {
                            tracing::debug!(%status, "gRPC publish stream ended by the client.");
                            reading = false;
                        }
                    }
                }
                else => return,
            }
        }
    }
}

#[derive(Clone)]
struct Auth {
    tokens: Option<Arc<Tokens>>,
    metrics: Metrics,
}

/// Bearer tokens on TCP (`authorization: Bearer <token>` metadata), before the body is read.
async fn authenticate(State(auth): State<Auth>, request: Request, next: Next) -> Response {
    let Some(tokens) = &auth.tokens else {
        return next.run(request).await;
    };
    let listener = request
        .extensions()
        .get::<Peer>()
        .map(|p| p.listener)
        .unwrap_or(TCP_LISTENER);
    if listener == UNIX_LISTENER || is_open(request.uri().path()) {
        return next.run(request).await;
    }
    let header = request
        .headers()
        .get(http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    if tokens.accepts(header) {
        return next.run(request).await;
    }
    auth.metrics
        .auth_failures
        .get_or_create(&ListenerLabels { listener })
        .inc();
    Status::new(
        Code::Unauthenticated,
        "a valid bearer token is required (authorization: Bearer <token>)",
    )
    .into_http::<axum::body::Body>()
    .into_response()
}
