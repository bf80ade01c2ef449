//! Simulated customers: WTS-shaped `MESSAGE_RECEIVED` and `SESSION_NEW` webhooks posted to
//! a URL at a given rate and concurrency, with per-request status and latency. This is also
//! the load generator of the ingest benchmark, so it reuses connections and builds little.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use chrono::Utc;
use serde_json::{Value, json};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio::time::Instant;

use super::model::{SimSession, new_id};
use super::wire::{COMPANY_ID, event_envelope, wts_time};

/// A customer's message, shaped exactly like the captured `MESSAGE_RECEIVED` webhook:
/// `FROM_HUB`, origin `GATEWAY`, type `TEXT`, `userId` null, a fresh message id.
pub fn message_received(session_id: &str, text: &str) -> Value {
    let now = wts_time(Utc::now());
    let content = json!({
        "id": new_id(),
        "senderId": null,
        "createdAt": now,
        "updatedAt": now,
        "editedAt": null,
        "type": "TEXT",
        "active": true,
        "sessionId": session_id,
        "templateId": null,
        "userId": null,
        "timestamp": now,
        "text": text,
        "direction": "FROM_HUB",
        "status": "DELIVERED",
        "origin": "GATEWAY",
        "readContactAt": null,
        "fileId": null,
        "refId": null,
        "waitingOptIn": false,
        "details": {"file": null, "location": null, "contact": null, "errors": null, "transcription": null},
    });
    event_envelope("MESSAGE_RECEIVED", content)
}

/// A new session opened by a customer, shaped like the documented session events.
pub fn session_new(session: &SimSession) -> Value {
    let created = wts_time(session.created_at);
    let contact = &session.contact;
    let content = json!({
        "id": session.id,
        "createdAt": created,
        "updatedAt": created,
        "active": true,
        "startAt": created,
        "endAt": null,
        "firstUserInteractionAt": created,
        "firstAgentMessageAt": null,
        "status": "STARTED",
        "companyId": COMPANY_ID,
        "contactId": contact.id,
        "contactDetails": {
            "id": contact.id,
            "name": contact.name,
            "pictureUrl": null,
            "phonenumber": contact.phonenumber,
            "instagram": null,
            "tagsId": contact.tags.iter().map(|t| &t.id).collect::<Vec<_>>(),
        },
        "channelId": session.channel_id,
        "channelType": "CLOUDAPI_WHATSAPP",
        "departmentId": session.department.as_ref().map(|d| &d.id),
        "userId": session.agent.as_ref().map(|a| &a.user_id),
        "number": null,
        "utm": null,
        "metadata": null,
        "botId": null,
        "windowStatus": session.window_status,
    });
    event_envelope("SESSION_NEW", content)
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CustomerEvent {
    MessageReceived,
    SessionNew,
}

#[derive(Clone, Debug)]
pub struct PlayOptions {
    pub url: String,
    pub count: usize,
    /// Requests started per second; 0 starts them as fast as the concurrency allows.
    pub rate: f64,
    /// Requests in flight at most.
    pub concurrency: usize,
    pub text: String,
    /// Session ids, used round robin.
    pub sessions: Vec<String>,
    pub event: CustomerEvent,
    pub timeout: Duration,
}

impl PlayOptions {
    /// `count` customer messages to `url`, unpaced, 16 at a time, over 10 generated sessions.
    pub fn new(url: impl Into<String>, count: usize) -> Self {
        PlayOptions {
            url: url.into(),
            count,
            rate: 0.0,
            concurrency: 16,
            text: "Olá, preciso do manual de instalação".to_owned(),
            sessions: generated_sessions(10),
            event: CustomerEvent::MessageReceived,
            timeout: Duration::from_secs(30),
        }
    }
}

pub fn generated_sessions(count: usize) -> Vec<String> {
    (0..count.max(1)).map(|_| new_id()).collect()
}

/// One posted event and what came back.
#[derive(Clone, Debug)]
pub struct RequestOutcome {
    pub session_id: String,
    /// `content.id` of the posted event.
    pub event_id: String,
    /// The HTTP status, or `None` when the request failed.
    pub status: Option<u16>,
    pub error: Option<String>,
    /// From sending the request to reading the whole answer.
    pub latency: Duration,
}

#[derive(Clone, Debug)]
pub struct PlayReport {
    /// In completion order.
    pub outcomes: Vec<RequestOutcome>,
    pub elapsed: Duration,
}

impl PlayReport {
    pub fn sent(&self) -> usize {
        self.outcomes.len()
    }

    /// Counts by HTTP status, with `"error"` for requests that got no answer.
    pub fn by_status(&self) -> BTreeMap<String, usize> {
        let mut counts = BTreeMap::new();
        for outcome in &self.outcomes {
            let key = outcome
                .status
                .map_or_else(|| "error".to_owned(), |s| s.to_string());
            *counts.entry(key).or_insert(0) += 1;
        }
        counts
    }

    /// Nearest-rank percentile (`0.0..=1.0`) of the latencies of answered requests.
    pub fn latency_percentile(&self, quantile: f64) -> Option<Duration> {
        let mut latencies: Vec<Duration> = self
            .outcomes
            .iter()
            .filter(|o| o.status.is_some())
            .map(|o| o.latency)
            .collect();
        if latencies.is_empty() {
            return None;
        }
        latencies.sort_unstable();
        let rank = (quantile.clamp(0.0, 1.0) * latencies.len() as f64).ceil() as usize;
        Some(latencies[rank.saturating_sub(1)])
    }

    pub fn p50(&self) -> Option<Duration> {
        self.latency_percentile(0.50)
    }

    pub fn p99(&self) -> Option<Duration> {
        self.latency_percentile(0.99)
    }

    /// Requests completed per second of wall time.
    pub fn achieved_rate(&self) -> f64 {
        let secs = self.elapsed.as_secs_f64();
        if secs > 0.0 {
            self.sent() as f64 / secs
        } else {
            0.0
        }
    }
}

impl fmt::Display for PlayReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "sent {} in {:.3}s ({:.1}/s)",
            self.sent(),
            self.elapsed.as_secs_f64(),
            self.achieved_rate()
        )?;
        for (status, count) in self.by_status() {
            writeln!(f, "status {status}: {count}")?;
        }
        let ms = |d: Option<Duration>| {
            d.map_or("-".to_owned(), |d| {
                format!("{:.3}ms", d.as_secs_f64() * 1000.0)
            })
        };
        write!(f, "latency p50 {} p99 {}", ms(self.p50()), ms(self.p99()))
    }
}

#[derive(Debug, thiserror::Error)]
pub enum PlayError {
    #[error("building the HTTP client: {0}")]
    Client(#[from] reqwest::Error),
    #[error("no session to send as")]
    NoSessions,
}

fn event_body(event: CustomerEvent, session_id: &str, text: &str) -> (Bytes, String) {
    let value = match event {
        CustomerEvent::MessageReceived => message_received(session_id, text),
        CustomerEvent::SessionNew => {
            session_new(&SimSession::with_generated_contact(session_id.to_owned()))
        }
    };
    let event_id = value["content"]["id"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let body = serde_json::to_vec(&value).expect("JSON always serialises");
    (Bytes::from(body), event_id)
}

/// Posts `options.count` events and reports each one.
pub async fn play(options: PlayOptions) -> Result<PlayReport, PlayError> {
    if options.sessions.is_empty() {
        return Err(PlayError::NoSessions);
    }
    let concurrency = options.concurrency.max(1);
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(concurrency)
        .tcp_nodelay(true)
        .timeout(options.timeout)
        .build()?;
    let url = Arc::new(options.url);
    let slots = Arc::new(Semaphore::new(concurrency));
    let mut tasks = JoinSet::new();
    let mut outcomes = Vec::with_capacity(options.count);
    let start = Instant::now();
    for i in 0..options.count {
        if options.rate > 0.0 {
            tokio::time::sleep_until(start + Duration::from_secs_f64(i as f64 / options.rate))
                .await;
        }
        let slot = slots
            .clone()
            .acquire_owned()
            .await
            .expect("the semaphore is never closed");
        let session_id = options.sessions[i % options.sessions.len()].clone();
        let (body, event_id) = event_body(options.event, &session_id, &options.text);
        let (client, url) = (client.clone(), url.clone());
        tasks.spawn(async move {
            let _slot = slot;
            let sent_at = Instant::now();
            let result = client
                .post(url.as_str())
                .header(reqwest::header::CONTENT_TYPE, "application/json")
                .body(body)
                .send()
                .await;
            let (status, error) = match result {
                Ok(response) => {
                    let status = response.status().as_u16();
                    match response.bytes().await {
                        Ok(_) => (Some(status), None),
                        Err(e) => (None, Some(e.to_string())),
                    }
                }
                Err(e) => (None, Some(e.to_string())),
            };
            RequestOutcome {
                session_id,
                event_id,
                status,
                error,
                latency: sent_at.elapsed(),
            }
        });
        while let Some(done) = tasks.try_join_next() {
            outcomes.push(unwrap_task(done));
        }
    }
    while let Some(done) = tasks.join_next().await {
        outcomes.push(unwrap_task(done));
    }
    Ok(PlayReport {
        outcomes,
        elapsed: start.elapsed(),
    })
}

fn unwrap_task(done: Result<RequestOutcome, tokio::task::JoinError>) -> RequestOutcome {
    match done {
        Ok(outcome) => outcome,
        Err(error) => std::panic::resume_unwind(error.into_panic()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys(value: &Value) -> Vec<String> {
        let mut keys: Vec<String> = value.as_object().unwrap().keys().cloned().collect();
        keys.sort();
        keys
    }

    #[test]
    fn message_received_has_the_captured_shape() {
        let captured: Value = serde_json::from_str(include_str!(
            "../../tests/fixtures/wts-message-received-captured.json"
        ))
        .unwrap();
        let ours = message_received("8917bc7b-ab53-4e1c-940d-1fbd309bdabd", "oi");
        assert_eq!(keys(&ours), keys(&captured));
        assert_eq!(keys(&ours["content"]), keys(&captured["content"]));
        assert_eq!(
            keys(&ours["content"]["details"]),
            keys(&captured["content"]["details"])
        );
        for field in ["direction", "origin", "type", "userId", "status"] {
            assert_eq!(
                ours["content"][field], captured["content"][field],
                "{field}"
            );
        }
        let date = ours["date"].as_str().unwrap();
        assert_eq!(date.len(), captured["date"].as_str().unwrap().len());
        assert_eq!(ours["content"]["text"], "oi");
    }

    #[test]
    fn percentiles_use_nearest_rank_over_answered_requests() {
        let outcome = |ms: u64, status: Option<u16>| RequestOutcome {
            session_id: String::new(),
            event_id: String::new(),
            status,
            error: None,
            latency: Duration::from_millis(ms),
        };
        let mut outcomes: Vec<_> = (1..=100).map(|ms| outcome(ms, Some(200))).collect();
        outcomes.push(outcome(10_000, None));
        let report = PlayReport {
            outcomes,
            elapsed: Duration::from_secs(2),
        };
        assert_eq!(report.p50(), Some(Duration::from_millis(50)));
        assert_eq!(report.p99(), Some(Duration::from_millis(99)));
        assert_eq!(report.by_status()["200"], 100);
        assert_eq!(report.by_status()["error"], 1);
        assert!((report.achieved_rate() - 50.5).abs() < 1e-9);
    }
}
