//! The HTTP intake and service endpoints, shared by the HTTP, HTTPS and Unix-socket listeners.
//!
//! `POST /` and `POST /scan` take any JSON object (an array is a batch) for every route;
//! `POST /tenant/{route}` for one route. The answer comes once the events are routed, so a 200
//! means Hooker has them: 400 for bad JSON (with the parser's position), 413 over the size limit,
//! 429 with `Retry-After` when the queue is full. Tracee's webhook logs anything but 200 as an
//! error, so success is always 200.

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Extension, Json};
use serde_json::json;

use super::serve::Peer;
use crate::event::{Event, IntakeKind, parse_payloads};
use crate::metrics::Metrics;
use crate::router::{RouterHandle, SubmitError};

/// How long a request waits for its events to be routed before answering 503.
const ROUTE_TIMEOUT: Duration = Duration::from_secs(30);

/// What the handlers share.
#[derive(Clone)]
pub struct HttpIntake {
    pub router: RouterHandle,
    pub metrics: Metrics,
    pub routes: Arc<HashSet<String>>,
    pub max_body: usize,
    /// False while starting and once shutdown begins; `/readyz` reports it.
    pub ready: Arc<AtomicBool>,
    pub config_name: Arc<str>,
}

impl HttpIntake {
    pub fn app(self) -> axum::Router {
        axum::Router::new()
            .route("/", post(receive_all))
            .route("/scan", post(receive_all))
            .route("/tenant/{route}", post(receive_tenant))
            .route("/ping", get(ping))
            .route("/healthz", get(healthz))
            .route("/readyz", get(readyz))
            .route("/metrics", get(metrics))
            .with_state(self)
    }
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

async fn receive_all(
    State(intake): State<HttpIntake>,
    Extension(peer): Extension<Peer>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    receive(intake, peer, None, headers, body).await
}

async fn receive_tenant(
    State(intake): State<HttpIntake>,
    Extension(peer): Extension<Peer>,
    Path(route): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    if !intake.routes.contains(&route) {
        intake
            .metrics
            .received(intake_kind(&peer).as_str(), "unknown_route", 1);
        return error(StatusCode::NOT_FOUND, format!("no route named \"{route}\""));
    }
    receive(intake, peer, Some(route), headers, body).await
}

async fn receive(
    intake: HttpIntake,
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
    let bytes = match axum::body::to_bytes(body, intake.max_body).await {
        Ok(bytes) => bytes,
        Err(err) => {
            let too_large = std::error::Error::source(&err)
                .is_some_and(|source| source.is::<http_body_util::LengthLimitError>())
                || err.to_string().contains("length limit");
            if too_large {
                intake.metrics.received(kind.as_str(), "too_large", 1);
                return error(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    format!("body is larger than the limit of {} bytes", intake.max_body),
                );
            }
            intake.metrics.received(kind.as_str(), "invalid", 1);
            return error(StatusCode::BAD_REQUEST, format!("cannot read body: {err}"));
        }
    };
    let payloads = match parse_payloads(&bytes) {
        Ok(payloads) => payloads,
        Err(err) => {
            intake.metrics.received(kind.as_str(), "invalid", 1);
            return error(StatusCode::BAD_REQUEST, err.to_string());
        }
    };
    let n = payloads.len();
    let only_route: Option<Arc<str>> = route.map(Into::into);
    let events = payloads
        .into_iter()
        .map(|payload| {
            let mut event = Event::new(payload, kind, peer.address.clone());
            event.only_route = only_route.clone();
            event
        })
        .collect();
    let routed = match intake.router.try_submit(events, bytes.len()) {
        Ok(routed) => routed,
        Err(SubmitError::Full) => {
            intake
                .metrics
                .received(kind.as_str(), "queue_full", n as u64);
            let mut response = error(
                StatusCode::TOO_MANY_REQUESTS,
                "the event queue is full; retry later",
            );
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
            return response;
        }
        Err(SubmitError::TooLarge) => {
            intake
                .metrics
                .received(kind.as_str(), "too_large", n as u64);
            return error(
                StatusCode::PAYLOAD_TOO_LARGE,
                "body is larger than the event queue",
            );
        }
        Err(SubmitError::Closed) => {
            intake
                .metrics
                .received(kind.as_str(), "unavailable", n as u64);
            return unavailable("Hooker is shutting down");
        }
    };
    match tokio::time::timeout(ROUTE_TIMEOUT, routed).await {
        Ok(Ok(routed)) => {
            intake.metrics.received(kind.as_str(), "accepted", n as u64);
            (
                StatusCode::OK,
                Json(json!({ "status": "ok", "events": routed.events, "matches": routed.matches })),
            )
                .into_response()
        }
        _ => {
            intake.metrics.received(kind.as_str(), "timeout", n as u64);
            unavailable("events were queued but not routed in time; they may still be delivered")
        }
    }
}

fn unavailable(message: &str) -> Response {
    let mut response = error(StatusCode::SERVICE_UNAVAILABLE, message);
    response
        .headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    response
}

async fn ping() -> Response {
    Json("Hooker alive!").into_response()
}

async fn healthz() -> Response {
    Json(json!({ "status": "ok" })).into_response()
}

async fn readyz(State(intake): State<HttpIntake>) -> Response {
    if intake.ready.load(Ordering::Relaxed) {
        Json(json!({ "status": "ready", "config": &*intake.config_name, "routes": intake.routes.len() })).into_response()
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({ "status": "not ready" })),
        )
            .into_response()
    }
}

/// OpenMetrics when the scraper asks for it (Prometheus does), else the classic text format.
async fn metrics(State(intake): State<HttpIntake>, headers: HeaderMap) -> Response {
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
