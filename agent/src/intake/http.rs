//! The HTTP intake and service endpoints, shared by the HTTP, HTTPS and Unix-socket listeners.
//!
//! `POST /` and `POST /scan` take any JSON object (an array is a batch) for every route;
//! `POST /tenant/{route}` for one route. The answer comes once the events are routed and their
//! deliveries are on disk, so a 200 means Hooker has them: 400 for bad JSON (with the parser's
//! position), 413 over the size limit, 429 with `Retry-After` when the queue or the outbox is full,
//! 401 without a valid token when auth is on. Tracee's webhook logs anything but 200 as an error,
//! so success is always 200. `/reload` and `/admin/dlq*` are the operator's endpoints. A
//! cluster responder answers the event endpoints 403 ([`HttpIntake::responder_apps`]).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Path, Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Extension, Json};
use serde::Deserialize;
use serde_json::json;
use tokio::sync::{mpsc, oneshot};

use super::serve::Peer;
use crate::auth::Tokens;
use crate::event::{Event, IntakeKind, parse_body};
use crate::metrics::{ListenerLabels, Metrics};
use crate::outbox::Outbox;
use crate::router::{Reservation, RouterHandle, SubmitError};

/// How long a request waits for its events to be routed and stored before answering 503.
const ROUTE_TIMEOUT: Duration = Duration::from_secs(30);

/// A reload request and where to send its outcome.
pub type ReloadRequest = (&'static str, oneshot::Sender<Result<(), String>>);

/// What the handlers share (behind one `Arc`: axum clones the state for every request, twice).
pub struct HttpIntake {
    pub router: RouterHandle,
    pub metrics: Metrics,
    pub max_body: usize,
    /// False while starting and once shutdown begins; `/readyz` reports it.
    pub ready: Arc<AtomicBool>,
    /// The config's name and how the last reload went, for `/readyz`.
    pub status: Arc<std::sync::Mutex<serde_json::Value>>,
    pub tokens: Option<Arc<Tokens>>,
    pub outbox: Arc<Outbox>,
    pub reload: mpsc::Sender<ReloadRequest>,
}

/// The intake app (every endpoint) and the probes app (`/healthz`, `/readyz`, `/ping`,
/// `/metrics` only, for `HOOKER_PROBES`), sharing one state.
pub struct Apps {
    pub intake: axum::Router,
    pub probes: axum::Router,
}

impl HttpIntake {
    pub fn app(self) -> axum::Router {
        self.apps().intake
    }

    pub fn apps(self) -> Apps {
        self.build(true)
    }

    /// A responder's apps: the same endpoints, but the event ones refuse with 403 (a responder
    /// takes relayed deliveries from JetStream only; events go to node agents).
    pub fn responder_apps(self) -> Apps {
        self.build(false)
    }

    fn build(self, takes_events: bool) -> Apps {
        let shared = Arc::new(self);
        // Probes and metrics need no token (as on the intake listeners). `get` answers HEAD too.
        let probes = axum::Router::new()
            .route("/ping", get(ping))
            .route("/healthz", get(healthz))
            .route("/readyz", get(readyz))
            .route("/metrics", get(metrics))
            .with_state(shared.clone());
        let intake = if takes_events {
            axum::Router::new()
                .route("/", post(receive_all))
                .route("/scan", post(receive_all))
                .route("/tenant/{route}", post(receive_tenant))
        } else {
            axum::Router::new()
                .route("/", post(not_an_intake))
                .route("/scan", post(not_an_intake))
                .route("/tenant/{route}", post(not_an_intake))
        };
        let intake = intake
            .route("/reload", post(reload).get(reload))
            .route("/admin/dlq", get(dlq_list))
            .route("/admin/dlq/replay", post(dlq_replay))
            .route("/admin/dlq/drop", post(dlq_drop))
            .route("/ping", get(ping))
            .route("/healthz", get(healthz))
            .route("/readyz", get(readyz))
            .route("/metrics", get(metrics))
            .layer(axum::middleware::from_fn_with_state(
                shared.clone(),
                authenticate,
            ))
            .with_state(shared);
        Apps { intake, probes }
    }
}

/// Bearer-token check on the TCP listeners for everything but metrics and probes. Runs before
/// the body is read, so a refused request changes nothing.
async fn authenticate(
    State(intake): State<Arc<HttpIntake>>,
    request: Request,
    next: Next,
) -> Response {
    let Some(tokens) = &intake.tokens else {
        return next.run(request).await;
    };
    let listener = request
        .extensions()
        .get::<Peer>()
        .map(|p| p.listener)
        .unwrap_or("http");
    let open = matches!(*request.method(), Method::GET | Method::HEAD)
        && matches!(
            request.uri().path(),
            "/metrics" | "/ping" | "/healthz" | "/readyz"
        );
    if listener == "unix" || open {
        return next.run(request).await;
    }
    let header = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    if tokens.accepts(header) {
        return next.run(request).await;
    }
    intake
        .metrics
        .auth_failures
        .get_or_create(&ListenerLabels { listener })
        .inc();
    let mut response = error(
        StatusCode::UNAUTHORIZED,
        "a valid bearer token is required (Authorization: Bearer <token>)",
    );
    response
        .headers_mut()
        .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    response
}

fn intake_kind(peer: &Peer) -> IntakeKind {
    match peer.listener {
        "https" => IntakeKind::Https,
        "unix" => IntakeKind::Unix,
        _ => IntakeKind::Http,
    }
}

fn error(status: StatusCode, message: impl Into<String>) -> Response {
    (status, Json(json!({ "error": message.into() }))).into_response()
}

/// The event endpoints of a responder: it reads no body and routes nothing.
async fn not_an_intake() -> Response {
    error(
        StatusCode::FORBIDDEN,
        "responders do not take events: send them to a node agent (hooker run --role node)",
    )
}

async fn receive_all(
    State(intake): State<Arc<HttpIntake>>,
    Extension(peer): Extension<Peer>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    receive(intake, peer, None, headers, body).await
}

async fn receive_tenant(
    State(intake): State<Arc<HttpIntake>>,
    Extension(peer): Extension<Peer>,
    Path(route): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    if !intake.router.has_route(&route) {
        intake
            .metrics
            .received(intake_kind(&peer).as_str(), "unknown_route", 1);
        return error(StatusCode::NOT_FOUND, format!("no route named \"{route}\""));
    }
    receive(intake, peer, Some(route), headers, body).await
}

/// The answer to a submission the router refused, counted as `n` events.
fn refused(intake: &HttpIntake, kind: IntakeKind, err: SubmitError, n: usize) -> Response {
    intake
        .metrics
        .received(kind.as_str(), err.outcome(), n as u64);
    match err {
        SubmitError::Full => {
            let mut response = error(
                StatusCode::TOO_MANY_REQUESTS,
                "the event queue or the outbox is full; retry later",
            );
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
            response
        }
        SubmitError::TooLarge => error(
            StatusCode::PAYLOAD_TOO_LARGE,
            "body is larger than the event queue",
        ),
        SubmitError::Closed => unavailable("Hooker is shutting down"),
    }
}

async fn receive(
    intake: Arc<HttpIntake>,
    peer: Peer,
    route: Option<String>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let kind = intake_kind(&peer);
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    if declared.is_some_and(|n| n > intake.max_body) {
        intake.metrics.received(kind.as_str(), "too_large", 1);
        return error(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("body is larger than the limit of {} bytes", intake.max_body),
        );
    }
    let (bytes, reservation) = match read_body(&intake, declared, body).await {
        Ok(read) => read,
        Err(BodyError::TooLarge) => {
            intake.metrics.received(kind.as_str(), "too_large", 1);
            return error(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!("body is larger than the limit of {} bytes", intake.max_body),
            );
        }
        // Refused before (the rest of) the body is read: the request counts as one event.
        Err(BodyError::Refused(err)) => return refused(&intake, kind, err, 1),
        Err(BodyError::Read(err)) => {
            intake.metrics.received(kind.as_str(), "invalid", 1);
            return error(StatusCode::BAD_REQUEST, format!("cannot read body: {err}"));
        }
    };
    let payloads = match parse_body(&bytes, intake.router.fields()) {
        Ok(payloads) => payloads,
        Err(err) => {
            intake.metrics.received(kind.as_str(), "invalid", 1);
            return error(StatusCode::BAD_REQUEST, err.to_string());
        }
    };
    // The events hold what they need of it; its bytes stay reserved until they are stored.
    drop(bytes);
    let n = payloads.len();
    let only_route: Option<Arc<str>> = route.map(Into::into);
    let events = payloads
        .into_iter()
        .map(|(payload, pruned)| {
            let mut event = Event::new(payload, kind, peer.address.clone());
            event.only_route = only_route.clone();
            event.pruned = pruned;
            event
        })
        .collect();
    let routed = match intake.router.try_submit_reserved(events, reservation) {
        Ok(routed) => routed,
        Err(err) => return refused(&intake, kind, err, n),
    };
    match tokio::time::timeout(ROUTE_TIMEOUT, routed).await {
        Ok(Ok(Ok(routed))) => {
            intake.metrics.received(kind.as_str(), "accepted", n as u64);
            // Written out: the answer to every event is on the hot path.
            let body = format!(
                r#"{{"status":"ok","events":{},"matches":{}}}"#,
                routed.events, routed.matches
            );
            (
                StatusCode::OK,
                [(
                    header::CONTENT_TYPE,
                    HeaderValue::from_static("application/json"),
                )],
                body,
            )
                .into_response()
        }
        Ok(Ok(Err(store_error))) => {
            intake
                .metrics
                .received(kind.as_str(), "unavailable", n as u64);
            unavailable(&format!("events could not be stored: {store_error}"))
        }
        _ => {
            intake.metrics.received(kind.as_str(), "timeout", n as u64);
            unavailable("events were queued but not stored in time; they may still be delivered")
        }
    }
}

/// Why a body was not read whole.
enum BodyError {
    /// Over `HOOKER_MAX_BODY` (413).
    TooLarge,
    /// The queue's byte budget cannot take it (429), or Hooker is shutting down.
    Refused(SubmitError),
    Read(axum::Error),
}

/// Reads a request body whose bytes are reserved against the queue's byte budget before they
/// are read: all of `declared` (`Content-Length`) at once, else chunk by chunk as they arrive.
/// So a flood of large bodies is answered 429 as soon as the budget is spent, instead of being
/// read into memory first; the reservation is given back if anything fails (dropped), and
/// becomes the events' accounting once they are submitted.
async fn read_body(
    intake: &HttpIntake,
    declared: Option<usize>,
    mut body: Body,
) -> Result<(Vec<u8>, Reservation), BodyError> {
    use http_body_util::BodyExt;
    let router = &intake.router;
    let mut reservation = router
        .reserve(declared.unwrap_or(0))
        .map_err(BodyError::Refused)?;
    // Declared and reserved, so no more than the budget allows.
    let mut bytes = Vec::with_capacity(declared.unwrap_or(0));
    while let Some(frame) = body.frame().await {
        let Ok(data) = frame.map_err(BodyError::Read)?.into_data() else {
            continue;
        };
        let total = bytes.len().saturating_add(data.len());
        if total > intake.max_body {
            return Err(BodyError::TooLarge);
        }
        if let Some(more) = total.checked_sub(reservation.bytes()).filter(|n| *n > 0) {
            router
                .grow(&mut reservation, more)
                .map_err(BodyError::Refused)?;
        }
        bytes.extend_from_slice(&data);
    }
    Ok((bytes, reservation))
}

fn unavailable(message: &str) -> Response {
    let mut response = error(StatusCode::SERVICE_UNAVAILABLE, message);
    response
        .headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    response
}

async fn reload(State(intake): State<Arc<HttpIntake>>) -> Response {
    let (tx, rx) = oneshot::channel();
    if intake.reload.send(("api", tx)).await.is_err() {
        return unavailable("reloading is not available");
    }
    match rx.await {
        Ok(Ok(())) => Json(json!({ "status": "reloaded" })).into_response(),
        Ok(Err(report)) => error(StatusCode::UNPROCESSABLE_ENTITY, report),
        Err(_) => unavailable("reload was interrupted"),
    }
}

/// Which dead letters an admin call is about.
#[derive(Debug, Deserialize)]
struct Selection {
    #[serde(default)]
    ids: Vec<u64>,
    #[serde(default)]
    all: bool,
}

impl Selection {
    /// `Some(None)` = all, `Some(Some(ids))` = those, `None` = neither was given.
    fn ids(&self) -> Option<Option<&[u64]>> {
        match (self.all, self.ids.is_empty()) {
            (true, _) => Some(None),
            (false, false) => Some(Some(&self.ids)),
            (false, true) => None,
        }
    }
}

fn no_selection() -> Response {
    error(
        StatusCode::BAD_REQUEST,
        "give \"ids\": [..] or \"all\": true",
    )
}

async fn dlq_list(State(intake): State<Arc<HttpIntake>>) -> Response {
    match intake.outbox.dead_letters() {
        Ok(letters) => {
            let items: Vec<_> = letters
                .iter()
                .map(|l| {
                    json!({
                        "id": l.delivery.id,
                        "route": l.delivery.route,
                        "action": l.delivery.actions.first(),
                        "attempts": l.delivery.attempts,
                        "error": l.error,
                        "died_ms": l.died_ms,
                        "title": l.delivery.message.title,
                        "event_id": l.delivery.message.event_id,
                    })
                })
                .collect();
            Json(json!({ "dead_letters": items })).into_response()
        }
        Err(err) => error(StatusCode::INTERNAL_SERVER_ERROR, err.to_string()),
    }
}

async fn dlq_replay(
    State(intake): State<Arc<HttpIntake>>,
    Json(selection): Json<Selection>,
) -> Response {
    let Some(ids) = selection.ids() else {
        return no_selection();
    };
    match intake.outbox.replay(ids).await {
        Ok(n) => Json(json!({ "replayed": n })).into_response(),
        Err(err) => error(StatusCode::INTERNAL_SERVER_ERROR, err),
    }
}

async fn dlq_drop(
    State(intake): State<Arc<HttpIntake>>,
    Json(selection): Json<Selection>,
) -> Response {
    let Some(ids) = selection.ids() else {
        return no_selection();
    };
    match intake.outbox.drop_dead(ids).await {
        Ok(n) => Json(json!({ "dropped": n })).into_response(),
        Err(err) => error(StatusCode::INTERNAL_SERVER_ERROR, err),
    }
}

async fn ping() -> Response {
    Json("Hooker alive!").into_response()
}

async fn healthz() -> Response {
    Json(json!({ "status": "ok" })).into_response()
}

async fn readyz(State(intake): State<Arc<HttpIntake>>) -> Response {
    let mut status = intake.status.lock().map(|s| s.clone()).unwrap_or_default();
    if let serde_json::Value::Object(map) = &mut status {
        map.insert("routes".into(), intake.router.route_count().into());
    }
    if intake.ready.load(Ordering::Relaxed) {
        if let serde_json::Value::Object(map) = &mut status {
            map.insert("status".into(), "ready".into());
        }
        Json(status).into_response()
    } else {
        let mut body = json!({ "status": "not ready" });
        // A part that stopped for good says which (see `crate::supervise::Health`).
        if let Some(failed) = status.get("failed") {
            body["failed"] = failed.clone();
        }
        (StatusCode::SERVICE_UNAVAILABLE, Json(body)).into_response()
    }
}

/// OpenMetrics when the scraper asks for it (Prometheus does), else the classic text format.
async fn metrics(State(intake): State<Arc<HttpIntake>>, headers: HeaderMap) -> Response {
    let accept = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    if accept.contains("application/openmetrics-text") {
        let body = intake.metrics.encode();
        return (
            [(
                header::CONTENT_TYPE,
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
            )],
            body,
        )
            .into_response();
    }
    let body = intake.metrics.encode_prometheus_text();
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        body,
    )
        .into_response()
}
