//! The HTTP layer: hyper, so that a fault can close a connection without an answer
//! (a service future that fails makes hyper drop the connection unanswered).

use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use chrono::Utc;
use http_body_util::BodyExt;
use hyper::body::{Body, Incoming};
use hyper::header::HeaderMap;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;

use super::faults::{FaultKind, take_fault};
use super::model::RecordedRequest;
use super::state::{Shared, lock};
use super::wire::{HttpResponse, WtsError, query_pairs};
use super::{control, files, sessions, webhooks};

/// Bodies of API calls above this size are refused by closing the connection.
const MAX_API_BODY: usize = 32 * 1024 * 1024;

/// The service's error: hyper closes the connection without writing an answer.
#[derive(Debug, thiserror::Error)]
#[error("connection dropped by the simulator")]
pub(crate) struct ConnectionDropped;

/// What a route handler sees of a request.
pub(crate) struct Call<'a> {
    pub method: &'a Method,
    pub segments: Vec<&'a str>,
    pub query: Vec<(String, String)>,
    pub headers: &'a HeaderMap,
    pub body: &'a Bytes,
}

pub(crate) type RouteResult = Result<HttpResponse, WtsError>;

pub(crate) async fn accept_loop(listener: TcpListener, shared: Arc<Shared>) {
    loop {
        let stream = tokio::select! {
            _ = shared.cancel.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(error) => {
                    tracing::warn!(%error, "wts-sim accept failed");
                    continue;
                }
            },
        };
        let _ = stream.set_nodelay(true);
        let connection_shared = shared.clone();
        let service = service_fn(move |request| handle(connection_shared.clone(), request));
        let connection = http1::Builder::new()
            .timer(TokioTimer::new())
            .serve_connection(TokioIo::new(stream), service);
        let cancel = shared.cancel.clone();
        shared.tasks.spawn(async move {
            tokio::select! {
                _ = cancel.cancelled() => {}
                result = connection => {
                    if let Err(error) = result {
                        tracing::debug!(%error, "wts-sim connection ended");
                    }
                }
            }
        });
    }
}

async fn handle(
    shared: Arc<Shared>,
    request: Request<Incoming>,
) -> Result<HttpResponse, ConnectionDropped> {
    let received_at = Instant::now();
    let received_at_utc = Utc::now();
    let (parts, body) = request.into_parts();
    let path = parts.uri.path().to_owned();
    if let Some(control_path) = path.strip_prefix("/_sim/") {
        let body = read_body(body, MAX_API_BODY).await?;
        return Ok(control::handle(&shared, &parts.method, control_path, &body));
    }
    let is_upload = parts.method == Method::PUT && path.starts_with("/_upload/");
    let body = read_body(body, if is_upload { usize::MAX } else { MAX_API_BODY }).await?;
    shared.record(RecordedRequest {
        method: parts.method.to_string(),
        path: path.clone(),
        query: parts.uri.query().map(str::to_owned),
        headers: parts
            .headers
            .iter()
            .map(|(name, value)| {
                (
                    name.as_str().to_owned(),
                    String::from_utf8_lossy(value.as_bytes()).into_owned(),
                )
            })
            .collect(),
        body: if is_upload {
            Bytes::new()
        } else {
            body.clone()
        },
        body_size: body.len(),
        received_at,
        received_at_utc,
    });

    let fault = take_fault(&mut lock(&shared.faults), parts.method.as_str(), &path);
    let mut drop_after = false;
    match fault {
        Some(FaultKind::TooManyRequests { retry_after_secs }) => {
            return Ok(WtsError::too_many_requests(Some(retry_after_secs)).into_response());
        }
        Some(FaultKind::ServerError { status }) => {
            let status = StatusCode::from_u16(status)
                .ok()
                .filter(StatusCode::is_server_error)
                .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            return Ok(WtsError::new(status, "INTERNAL_ERROR", "Erro interno").into_response());
        }
        Some(FaultKind::FormError { text }) => return Ok(WtsError::form(text).into_response()),
        Some(FaultKind::Latency { delay }) => tokio::time::sleep(delay).await,
        Some(FaultKind::DropBeforeProcessing) => return Err(ConnectionDropped),
        Some(FaultKind::DropAfterProcessing) => drop_after = true,
        None => {}
    }

    let call = Call {
        method: &parts.method,
        segments: path.trim_start_matches('/').split('/').collect(),
        query: query_pairs(parts.uri.query()),
        headers: &parts.headers,
        body: &body,
    };
    let response = match call.segments.first() {
        Some(&"_upload") | Some(&"_files") => files::public_route(&shared, &call),
        _ => authenticated(&shared, &call),
    }
    .unwrap_or_else(WtsError::into_response);
    if drop_after {
        Err(ConnectionDropped)
    } else {
        Ok(response)
    }
}

/// Authentication runs before routing (an unknown route with a bad token is a 401),
/// then the account rate limit, then the route.
fn authenticated(shared: &Arc<Shared>, call: &Call<'_>) -> RouteResult {
    let authorized = call
        .headers
        .get(hyper::header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.split_once(' '))
        .is_some_and(|(scheme, token)| {
            scheme.eq_ignore_ascii_case("bearer") && token.trim() == shared.token
        });
    if !authorized {
        return Err(WtsError::unauthorized());
    }
    if let Some(limiter) = lock(&shared.limiter).as_mut()
        && !limiter.admit(Instant::now())
    {
        return Err(WtsError::too_many_requests(None));
    }
    route(shared, call)
}

fn route(shared: &Arc<Shared>, call: &Call<'_>) -> RouteResult {
    let get = call.method == Method::GET;
    let post = call.method == Method::POST;
    let put = call.method == Method::PUT;
    let delete = call.method == Method::DELETE;
    match call.segments.as_slice() {
        ["chat", version @ ("v1" | "v2"), "session", id] if get => {
            sessions::get_session(shared, id, &call.query, *version == "v2")
        }
        ["chat", "v1", "session", id, "message"] if post => {
            sessions::send(shared, id, false, call.body)
        }
        ["chat", "v1", "session", id, "message", "sync"] if post => {
            sessions::send(shared, id, true, call.body)
        }
        ["chat", "v1", "session", id, "message"] if get => {
            sessions::list_messages(shared, id, &call.query)
        }
        ["chat", "v1", "message", id] if get => sessions::get_message(shared, id),
        ["chat", "v1", "message", id, "status"] if get => sessions::get_message_status(shared, id),
        ["core", "v2", "file"] if get => files::request_upload_v2(shared, &call.query),
        ["core", "v2", "file"] if post => files::confirm_v2(shared, call.body),
        ["core", "v1", "file", "upload"] if post => files::request_upload_v1(shared, call.body),
        ["core", "v1", "file"] if put => files::confirm_v1(shared, call.body),
        ["core", "v1", "webhook", "event"] if get => Ok(webhooks::list_events()),
        ["core", "v1", "webhook", "subscription"] if get => {
            Ok(webhooks::list_subscriptions(shared))
        }
        ["core", "v1", "webhook", "subscription"] if post => {
            webhooks::create_subscription(shared, call.body)
        }
        ["core", "v1", "webhook", "subscription", id] if get => {
            webhooks::get_subscription(shared, id)
        }
        ["core", "v1", "webhook", "subscription", id] if put => {
            webhooks::update_subscription(shared, id, call.body)
        }
        ["core", "v1", "webhook", "subscription", id] if delete => {
            webhooks::delete_subscription(shared, id)
        }
        _ => Err(WtsError::route_not_found()),
    }
}

/// Reads a body frame by frame into one buffer (an upload is held once, never twice).
async fn read_body(mut body: Incoming, limit: usize) -> Result<Bytes, ConnectionDropped> {
    let hint = body.size_hint().exact().unwrap_or(0) as usize;
    let mut buffer = Vec::with_capacity(hint.min(limit).min(512 * 1024 * 1024));
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|_| ConnectionDropped)?;
        if let Ok(data) = frame.into_data() {
            if buffer.len() + data.len() > limit {
                return Err(ConnectionDropped);
            }
            buffer.extend_from_slice(&data);
        }
    }
    Ok(Bytes::from(buffer))
}
