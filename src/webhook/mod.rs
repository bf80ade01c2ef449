//! Ingress: `POST /webhooks/wts/{token}`. Token, cap, parse, durable insert, answer; the
//! matching happens later, from the inbox.

pub mod envelope;

use actix_web::{HttpRequest, HttpResponse, web};
use futures::StreamExt;
use serde::Serialize;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::error::AppError;
use crate::inbox::InboxWriter;
use crate::metrics::METRICS;
use crate::store::inbox::{EventStatus, InsertOutcome, NewEvent};
use crate::store::now_ms;

/// The route, with the secret token as its last segment.
pub const ROUTE: &str = "/webhooks/wts/{token}";

/// The path WTS must call for `token`.
pub fn path_for(token: &str) -> String {
    format!("/webhooks/wts/{token}")
}

/// The secret path token, kept as its sha256: comparing digests keeps the comparison
/// constant-time even when the lengths differ.
struct WebhookToken([u8; 32]);

impl WebhookToken {
    fn new(token: &str) -> Self {
        Self(Sha256::digest(token.as_bytes()).into())
    }

    fn matches(&self, candidate: &str) -> bool {
        let digest: [u8; 32] = Sha256::digest(candidate.as_bytes()).into();
        digest.ct_eq(&self.0).into()
    }
}

/// What the webhook handler needs, shared by every worker.
pub struct WebhookState {
    token: WebhookToken,
    max_body: usize,
    inbound_direction: String,
    inbox: InboxWriter,
}

impl WebhookState {
    pub fn new(
        token: &str,
        max_body: usize,
        inbound_direction: String,
        inbox: InboxWriter,
    ) -> Self {
        Self {
            token: WebhookToken::new(token),
            max_body,
            inbound_direction,
            inbox,
        }
    }
}

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route(ROUTE, web::post().to(receive));
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Ack {
    Accepted,
    Duplicate,
    Ignored,
}

impl Ack {
    fn as_str(self) -> &'static str {
        match self {
            Ack::Accepted => "accepted",
            Ack::Duplicate => "duplicate",
            Ack::Ignored => "ignored",
        }
    }
}

#[derive(Serialize)]
struct AckBody {
    status: Ack,
}

#[tracing::instrument(
    name = "webhook",
    skip_all,
    fields(event_type = tracing::field::Empty, outcome = tracing::field::Empty)
)]
async fn receive(
    state: web::Data<WebhookState>,
    token: web::Path<String>,
    request: HttpRequest,
    payload: web::Payload,
) -> Result<HttpResponse, AppError> {
    if !state.token.matches(&token) {
        return Err(AppError::not_found("resource"));
    }
    let result = accept(&state, &request, payload).await;
    let span = tracing::Span::current();
    match &result {
        Ok((label, ack)) => {
            span.record("event_type", label.as_str());
            span.record("outcome", ack.as_str());
            METRICS
                .webhooks
                .with_label_values(&[label.as_str(), ack.as_str()])
                .inc();
        }
        Err(err) => {
            span.record("outcome", "rejected");
            if matches!(err, AppError::BadRequest(_) | AppError::PayloadTooLarge(_)) {
                METRICS
                    .webhooks
                    .with_label_values(&["unknown", "rejected"])
                    .inc();
            }
        }
    }
    let (_, ack) = result?;
    Ok(HttpResponse::Ok().json(AckBody { status: ack }))
}

/// Reads, parses and stores one delivery; returns its metric label and answer.
async fn accept(
    state: &WebhookState,
    request: &HttpRequest,
    payload: web::Payload,
) -> Result<(String, Ack), AppError> {
    let received_at = now_ms();
    let body = read_capped(request, payload, state.max_body).await?;
    let body = body.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(&body);
    let envelope = envelope::parse(body).map_err(|e| AppError::BadRequest(e.to_string()))?;
    let status = if envelope.is_ignored(&state.inbound_direction) {
        EventStatus::Ignored
    } else {
        EventStatus::Pending
    };
    let event = NewEvent {
        dedupe_key: envelope.dedupe_key(body),
        session_id: envelope.session_id.clone(),
        content_id: envelope.content_id.clone(),
        // Valid JSON is valid UTF-8.
        body: String::from_utf8_lossy(body).into_owned(),
        received_at,
        status,
        event_type: envelope.event_type.clone(),
    };
    let ack = match state.inbox.submit(event).await? {
        InsertOutcome::Duplicate => Ack::Duplicate,
        InsertOutcome::Inserted { .. } if status == EventStatus::Ignored => Ack::Ignored,
        InsertOutcome::Inserted { .. } => Ack::Accepted,
    };
    Ok((envelope.metric_label().to_string(), ack))
}

/// The whole body, whatever its Content-Type, refused past `max` bytes.
async fn read_capped(
    request: &HttpRequest,
    mut payload: web::Payload,
    max: usize,
) -> Result<web::BytesMut, AppError> {
    let too_large = || AppError::PayloadTooLarge(format!("the body exceeds {max} bytes"));
    let declared = request
        .headers()
        .get(actix_web::http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    if declared.is_some_and(|len| len > max) {
        return Err(too_large());
    }
    let mut body = web::BytesMut::with_capacity(declared.unwrap_or(1024).min(max));
    while let Some(chunk) = payload.next().await {
        let chunk =
            chunk.map_err(|e| AppError::BadRequest(format!("cannot read the body: {e}")))?;
        if body.len() + chunk.len() > max {
            return Err(too_large());
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_exact_token_matches() {
        let token = WebhookToken::new("a-long-secret-token");
        assert!(token.matches("a-long-secret-token"));
        assert!(!token.matches("a-long-secret-tokem"));
        assert!(!token.matches("a-long-secret-token-and-more"));
        assert!(!token.matches("a-long-secret"));
        assert!(!token.matches(""));
    }
}
