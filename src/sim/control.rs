//! Control routes under `/_sim/`, without authentication, so a script can drive a
//! running simulator: faults, rate limit, sessions, reset, and the request and message logs.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use hyper::{Method, StatusCode};
use serde::Deserialize;
use serde_json::{Value, json};

use super::faults::{Fault, Limiter, RateLimit};
use super::model::{SimAgent, SimDepartment, SimSession};
use super::state::{Shared, lock};
use super::wire::{
    HttpResponse, SessionDetails, json_response, message_dto, ok_json, session_dto, wts_time,
};

pub(crate) fn handle(
    shared: &Arc<Shared>,
    method: &Method,
    path: &str,
    body: &Bytes,
) -> HttpResponse {
    let result = match (method.as_str(), path.trim_end_matches('/')) {
        ("GET", "requests") => Ok(requests(shared)),
        ("DELETE", "requests") => {
            lock(&shared.requests).clear();
            Ok(ok_json(&json!({"cleared": true})))
        }
        ("GET", "messages") => {
            let world = lock(&shared.world);
            let all: Vec<Value> = world
                .all_messages()
                .iter()
                .map(|m| message_dto(m, &shared.base_url))
                .collect();
            Ok(ok_json(&json!(all)))
        }
        ("POST", "faults") => push_faults(shared, body),
        ("DELETE", "faults") => {
            lock(&shared.faults).clear();
            Ok(ok_json(&json!({"cleared": true})))
        }
        ("PUT", "rate-limit") => set_rate_limit(shared, body),
        ("DELETE", "rate-limit") => {
            *lock(&shared.limiter) = None;
            Ok(ok_json(&json!({"rateLimit": null})))
        }
        ("POST", "sessions") => add_session(shared, body),
        ("POST", "reset") => {
            shared.reset();
            Ok(ok_json(&json!({"reset": true})))
        }
        _ => Err((StatusCode::NOT_FOUND, "no such control route".to_owned())),
    };
    result.unwrap_or_else(|(status, message)| json_response(status, &json!({"error": message})))
}

type ControlResult = Result<HttpResponse, (StatusCode, String)>;

fn bad_request(error: impl std::fmt::Display) -> (StatusCode, String) {
    (StatusCode::BAD_REQUEST, error.to_string())
}

fn requests(shared: &Shared) -> HttpResponse {
    let log = lock(&shared.requests);
    let all: Vec<Value> = log
        .iter()
        .map(|r| {
            let is_upload = r.body.is_empty() && r.body_size > 0;
            json!({
                "method": r.method,
                "path": r.path,
                "query": r.query,
                "headers": r.headers.iter().map(|(n, v)| json!([n, v])).collect::<Vec<_>>(),
                "bodySize": r.body_size,
                "body": (!is_upload).then(|| String::from_utf8_lossy(&r.body).into_owned()),
                "receivedAt": wts_time(r.received_at_utc),
            })
        })
        .collect();
    ok_json(&json!(all))
}

/// Accepts one fault or an array of them.
fn push_faults(shared: &Shared, body: &Bytes) -> ControlResult {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum OneOrMany {
        Many(Vec<Fault>),
        One(Fault),
    }
    let faults = match serde_json::from_slice(body).map_err(bad_request)? {
        OneOrMany::Many(faults) => faults,
        OneOrMany::One(fault) => vec![fault],
    };
    let mut queue = lock(&shared.faults);
    let queued = faults.len();
    queue.extend(faults);
    Ok(ok_json(&json!({"queued": queued, "pending": queue.len()})))
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RateLimitBody {
    short_max: u32,
    #[serde(with = "humantime_serde")]
    short_window: Duration,
    long_max: u32,
    #[serde(with = "humantime_serde")]
    long_window: Duration,
}

fn set_rate_limit(shared: &Shared, body: &Bytes) -> ControlResult {
    let limit = if body.is_empty() {
        RateLimit::documented()
    } else {
        let b: RateLimitBody = serde_json::from_slice(body).map_err(bad_request)?;
        RateLimit {
            short_max: b.short_max,
            short_window: b.short_window,
            long_max: b.long_max,
            long_window: b.long_window,
        }
    };
    *lock(&shared.limiter) = Some(Limiter::new(limit));
    Ok(ok_json(&json!({
        "shortMax": limit.short_max,
        "shortWindow": humantime::format_duration(limit.short_window).to_string(),
        "longMax": limit.long_max,
        "longWindow": humantime::format_duration(limit.long_window).to_string(),
    })))
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase", default)]
struct SessionBody {
    id: Option<String>,
    contact_name: Option<String>,
    tags: Vec<String>,
    agent_name: Option<String>,
    channel_id: Option<String>,
    department_name: Option<String>,
    channel_failure: Option<String>,
}

fn add_session(shared: &Shared, body: &Bytes) -> ControlResult {
    let b: SessionBody = if body.is_empty() {
        SessionBody::default()
    } else {
        serde_json::from_slice(body).map_err(bad_request)?
    };
    let mut session = SimSession::new();
    if let Some(id) = b.id {
        session = session.with_id(id);
    }
    if let Some(name) = b.contact_name {
        session = session.with_contact_name(name);
    }
    let tags: Vec<&str> = b.tags.iter().map(String::as_str).collect();
    session = session.with_tags(&tags);
    if let Some(name) = b.agent_name {
        session = session.with_agent(SimAgent::named(name));
    }
    if let Some(channel) = b.channel_id {
        session = session.with_channel(channel);
    }
    if let Some(name) = b.department_name {
        session = session.with_department(SimDepartment::named(name));
    }
    session.channel_failure = b.channel_failure;
    let all = SessionDetails {
        agent: true,
        contact: true,
        channel: true,
        department: true,
    };
    let dto = session_dto(&session, all, true);
    lock(&shared.world)
        .sessions
        .insert(session.id.clone(), session);
    Ok(ok_json(&dto))
}
