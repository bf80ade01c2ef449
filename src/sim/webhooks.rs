//! Webhook events and subscriptions, and the `MESSAGE_SENT` / `MESSAGE_UPDATED` echoes
//! of messages sent through the API.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use chrono::Utc;
use hyper::StatusCode;
use serde::Deserialize;
use serde_json::{Value, json};

use super::model::{SimDelivery, SimSubscription, new_id};
use super::server::RouteResult;
use super::state::{Shared, lock};
use super::wire::{
    WtsError, empty_response, event_envelope, message_dto, ok_json, subscription_dto,
};

/// The 16 events of `GET /core/v1/webhook/event`.
pub const EVENTS: [(&str, &str); 16] = [
    ("SESSION_NEW", "Uma nova conversa foi criada"),
    ("SESSION_UPDATE", "Uma conversa foi atualizada"),
    ("SESSION_COMPLETE", "Uma conversa foi concluída"),
    ("MESSAGE_RECEIVED", "Uma mensagem foi recebida"),
    ("MESSAGE_UPDATED", "Uma mensagem foi atualizada"),
    ("MESSAGE_SENT", "Uma mensagem foi enviada"),
    ("CONTACT_NEW", "Um novo contato foi criado"),
    ("CONTACT_UPDATE", "Um contato foi atualizado"),
    (
        "CONTACT_TAG_UPDATE",
        "As etiquetas de um contato foram atualizadas",
    ),
    ("PAYMENT_NEW", "Um novo pagamento foi criado"),
    ("PAYMENT_UPDATE", "Um pagamento foi atualizado"),
    ("PANEL_CARD_NEW", "Um novo card foi criado"),
    ("PANEL_CARD_UPDATE", "Um card foi atualizado"),
    ("PANEL_CARD_STEP_CHANGE", "Um card mudou de etapa"),
    (
        "PANEL_CARD_NOTE_NEW",
        "Uma nova anotação foi criada em um card",
    ),
    (
        "PANEL_CARD_NOTE_UPDATE",
        "Uma anotação de um card foi atualizada",
    ),
];

const DELIVERY_TIMEOUT: Duration = Duration::from_secs(10);
const SUBSCRIPTION_NOT_FOUND: &str = "Webhook não encontrado";

pub fn event_description(event: &str) -> Option<&'static str> {
    EVENTS.iter().find(|(e, _)| *e == event).map(|(_, d)| *d)
}

pub(crate) fn list_events() -> super::wire::HttpResponse {
    let events: Vec<Value> = EVENTS
        .iter()
        .map(|(event, description)| json!({"event": event, "description": description}))
        .collect();
    ok_json(&json!(events))
}

pub(crate) fn list_subscriptions(shared: &Arc<Shared>) -> super::wire::HttpResponse {
    let world = lock(&shared.world);
    let all: Vec<Value> = world.subscriptions.iter().map(subscription_dto).collect();
    ok_json(&json!(all))
}

fn validate_name(name: &str) -> Result<(), WtsError> {
    match name.chars().count() {
        1..=100 => Ok(()),
        _ => Err(WtsError::form("name deve ter entre 1 e 100 caracteres")),
    }
}

fn validate_url(url: &str) -> Result<(), WtsError> {
    match url.chars().count() {
        1..=500 => Ok(()),
        _ => Err(WtsError::form("url deve ter entre 1 e 500 caracteres")),
    }
}

fn validate_events(events: &[String]) -> Result<(), WtsError> {
    if events.is_empty() {
        return Err(WtsError::form("Informe ao menos um evento"));
    }
    match events.iter().find(|e| event_description(e).is_none()) {
        Some(unknown) => Err(WtsError::form(format!("Evento inválido: {unknown}"))),
        None => Ok(()),
    }
}

fn parse<'a, T: Deserialize<'a>>(body: &'a Bytes) -> Result<T, WtsError> {
    serde_json::from_slice(body).map_err(|e| WtsError::form(format!("Corpo inválido: {e}")))
}

#[derive(Deserialize)]
struct CreateSubscription {
    name: Option<String>,
    url: Option<String>,
    enabled: Option<bool>,
    events: Option<Vec<String>>,
}

pub(crate) fn create_subscription(shared: &Arc<Shared>, body: &Bytes) -> RouteResult {
    let request: CreateSubscription = parse(body)?;
    let name = request.name.unwrap_or_default();
    let url = request.url.unwrap_or_default();
    let events = request.events.unwrap_or_default();
    validate_name(&name)?;
    validate_url(&url)?;
    validate_events(&events)?;
    let now = Utc::now();
    let subscription = SimSubscription {
        id: new_id(),
        created_at: now,
        updated_at: now,
        name,
        url,
        enabled: request.enabled.unwrap_or(true),
        events,
    };
    let dto = subscription_dto(&subscription);
    lock(&shared.world).subscriptions.push(subscription);
    Ok(ok_json(&dto))
}

pub(crate) fn get_subscription(shared: &Arc<Shared>, id: &str) -> RouteResult {
    let world = lock(&shared.world);
    let subscription = world
        .subscriptions
        .iter()
        .find(|s| s.id == id)
        .ok_or_else(|| WtsError::not_found(SUBSCRIPTION_NOT_FOUND))?;
    Ok(ok_json(&subscription_dto(subscription)))
}

#[derive(Deserialize)]
struct UpdateSubscription {
    fields: Option<Vec<String>>,
    name: Option<String>,
    url: Option<String>,
    enabled: Option<bool>,
    events: Option<Vec<String>>,
}

/// `PUT` changes exactly the attributes named in `fields`.
pub(crate) fn update_subscription(shared: &Arc<Shared>, id: &str, body: &Bytes) -> RouteResult {
    let request: UpdateSubscription = parse(body)?;
    let fields = request
        .fields
        .filter(|f| !f.is_empty())
        .ok_or_else(|| WtsError::form("fields é obrigatório"))?;
    let mut world = lock(&shared.world);
    let mut updated = world
        .subscriptions
        .iter()
        .find(|s| s.id == id)
        .cloned()
        .ok_or_else(|| WtsError::not_found(SUBSCRIPTION_NOT_FOUND))?;
    let missing =
        |field: &str| WtsError::form(format!("{field} é obrigatório quando listado em fields"));
    for field in &fields {
        match field.as_str() {
            "Name" => {
                let name = request.name.clone().ok_or_else(|| missing("name"))?;
                validate_name(&name)?;
                updated.name = name;
            }
            "Url" => {
                let url = request.url.clone().ok_or_else(|| missing("url"))?;
                validate_url(&url)?;
                updated.url = url;
            }
            "Events" => {
                let events = request.events.clone().ok_or_else(|| missing("events"))?;
                validate_events(&events)?;
                updated.events = events;
            }
            "Enabled" => updated.enabled = request.enabled.ok_or_else(|| missing("enabled"))?,
            other => {
                return Err(WtsError::form(format!(
                    "Campo inválido em fields: {other} (use Name, Url, Events ou Enabled)"
                )));
            }
        }
    }
    updated.updated_at = Utc::now();
    let dto = subscription_dto(&updated);
    if let Some(slot) = world.subscriptions.iter_mut().find(|s| s.id == id) {
        *slot = updated;
    }
    Ok(ok_json(&dto))
}

/// WTS answers a delete with 200 and an empty body.
pub(crate) fn delete_subscription(shared: &Arc<Shared>, id: &str) -> RouteResult {
    let mut world = lock(&shared.world);
    let before = world.subscriptions.len();
    world.subscriptions.retain(|s| s.id != id);
    if world.subscriptions.len() == before {
        return Err(WtsError::not_found(SUBSCRIPTION_NOT_FOUND));
    }
    Ok(empty_response(StatusCode::OK))
}

/// Posts `MESSAGE_SENT` for a new message, then, after the delivery delay, marks it
/// `DELIVERED` and posts `MESSAGE_UPDATED`. Runs in the background, off the answer's path.
pub(crate) fn spawn_echo(shared: &Arc<Shared>, message_id: String) {
    let shared = shared.clone();
    let cancel = shared.cancel.clone();
    let tracker = shared.tasks.clone();
    tracker.spawn(async move {
        tokio::select! {
            _ = cancel.cancelled() => {}
            _ = echo(&shared, &message_id) => {}
        }
    });
}

async fn echo(shared: &Arc<Shared>, message_id: &str) {
    let delivered_at = shared
        .delivery_delay
        .map(|delay| tokio::time::Instant::now() + delay);
    let Some((content, failed)) = message_content(shared, message_id) else {
        return;
    };
    deliver(shared, "MESSAGE_SENT", message_id, content).await;
    let Some(delivered_at) = delivered_at.filter(|_| !failed) else {
        return;
    };
    tokio::time::sleep_until(delivered_at).await;
    {
        let mut world = lock(&shared.world);
        let Some(message) = world.message_mut(message_id) else {
            return;
        };
        message.status = "DELIVERED".to_owned();
        message.updated_at = Utc::now();
    }
    if let Some((content, _)) = message_content(shared, message_id) {
        deliver(shared, "MESSAGE_UPDATED", message_id, content).await;
    }
}

fn message_content(shared: &Shared, message_id: &str) -> Option<(Value, bool)> {
    let world = lock(&shared.world);
    let message = world.message(message_id)?;
    Some((
        message_dto(message, &shared.base_url),
        message.status == "FAILED",
    ))
}

/// Posts one event to every enabled subscription listening to it, concurrently.
async fn deliver(shared: &Shared, event_type: &str, message_id: &str, content: Value) {
    let targets: Vec<(String, String)> = lock(&shared.world)
        .subscriptions
        .iter()
        .filter(|s| s.enabled && s.events.iter().any(|e| e == event_type))
        .map(|s| (s.id.clone(), s.url.clone()))
        .collect();
    if targets.is_empty() {
        return;
    }
    let body = Bytes::from(
        serde_json::to_vec(&event_envelope(event_type, content)).expect("JSON always serialises"),
    );
    let posts = targets.into_iter().map(|(subscription_id, url)| {
        let body = body.clone();
        async move {
            let result = shared
                .webhook_client
                .post(&url)
                .header(hyper::header::CONTENT_TYPE, "application/json")
                .timeout(DELIVERY_TIMEOUT)
                .body(body)
                .send()
                .await;
            let (status, error) = match result {
                Ok(response) => (Some(response.status().as_u16()), None),
                Err(e) => {
                    tracing::debug!(error = %e, %url, "wts-sim webhook delivery failed");
                    (None, Some(e.to_string()))
                }
            };
            SimDelivery {
                subscription_id,
                url,
                event_type: event_type.to_owned(),
                message_id: message_id.to_owned(),
                status,
                error,
            }
        }
    });
    let done = futures::future::join_all(posts).await;
    lock(&shared.deliveries).extend(done);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sixteen_distinct_events_with_descriptions() {
        let mut names: Vec<_> = EVENTS.iter().map(|(e, _)| *e).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), 16);
        assert!(EVENTS.iter().all(|(_, d)| !d.is_empty()));
    }

    #[test]
    fn subscription_fields_are_validated() {
        assert!(validate_name("").is_err());
        assert!(validate_name(&"n".repeat(101)).is_err());
        assert!(validate_name(&"ã".repeat(100)).is_ok());
        assert!(validate_url(&"u".repeat(501)).is_err());
        assert!(validate_events(&[]).is_err());
        assert!(validate_events(&["MESSAGE_RECEIVED".into(), "NOPE".into()]).is_err());
        assert!(validate_events(&["MESSAGE_RECEIVED".into()]).is_ok());
    }
}
