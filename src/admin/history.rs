//! `GET /api/v1/events` (what came in, and what each rule decided and why),
//! `GET /api/v1/deliveries` (each reply step sent or not) and
//! `POST /api/v1/deliveries/{id}/retry`.

use actix_web::{HttpResponse, web};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::{IntoParams, ToSchema};

use super::auth::{Caller, Role};
use super::time;
use crate::error::{AppError, ErrorBody, FieldError};
use crate::store::history::{DecisionRow, HistoryFilter, RetryOutcome};
use crate::store::inbox::{EventRow, EventStatus};
use crate::store::jobs::{JobRow, JobStatus};
use crate::store::{Store, now_ms};

const DEFAULT_LIMIT: u32 = 50;
const MAX_LIMIT: u32 = 500;

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/events", web::get().to(list_events))
        .route("/deliveries", web::get().to(list_deliveries))
        .route("/deliveries/{id}/retry", web::post().to(retry_delivery));
}

/// Filters and paging of a history listing. Pages go newest first: pass the answer's
/// `next_before` as `before` for the next one.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct HistoryQuery {
    /// A WTS session id.
    pub session: Option<String>,
    /// A rule id: events it decided on, or deliveries it planned.
    pub rule: Option<String>,
    /// Events: `pending`, `processed`, `ignored`. Deliveries: `planned`, `sending`, `sent`,
    /// `failed`, `dead`, `expired`, `skipped`, `dry_run`.
    pub status: Option<String>,
    /// From this time on (RFC 3339), inclusive.
    pub since: Option<DateTime<Utc>>,
    /// Before this time (RFC 3339).
    pub until: Option<DateTime<Utc>>,
    /// Only items with a smaller id.
    pub before: Option<i64>,
    /// At most this many items (1 to 500, default 50).
    pub limit: Option<u32>,
}

impl HistoryQuery {
    fn filter(&self, valid_status: impl Fn(&str) -> bool) -> Result<HistoryFilter, AppError> {
        let mut errors = Vec::new();
        if let Some(status) = &self.status
            && !valid_status(status)
        {
            errors.push(FieldError::new(
                "status",
                format!("unknown status \"{status}\""),
            ));
        }
        let limit = self.limit.unwrap_or(DEFAULT_LIMIT);
        if !(1..=MAX_LIMIT).contains(&limit) {
            errors.push(FieldError::new(
                "limit",
                format!("must be 1 to {MAX_LIMIT}"),
            ));
        }
        if !errors.is_empty() {
            return Err(AppError::Validation(errors));
        }
        Ok(HistoryFilter {
            session_id: self.session.clone(),
            rule_id: self.rule.clone(),
            status: self.status.clone(),
            since: self.since.map(|t| t.timestamp_millis()),
            until: self.until.map(|t| t.timestamp_millis()),
            before: self.before,
            limit: i64::from(limit),
        })
    }
}

/// One rule's decision on one event.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct DecisionView {
    pub rule: String,
    pub fired: bool,
    /// `fired`, or why not: `no_match`, `agent`, `hours`, `cooldown`, `cap`, `stopped`,
    /// `loop_guard`, `no_session`, `error`.
    pub reason: String,
    /// The particulars (failing conditions, the cooldown's end), as JSON.
    pub detail: Option<Value>,
    pub decided_at: DateTime<Utc>,
}

/// One webhook event as received, with every decision made on it.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct EventView {
    pub id: i64,
    pub event_type: String,
    pub session_id: Option<String>,
    pub content_id: Option<String>,
    /// `pending`, `processed` or `ignored`.
    pub status: String,
    pub received_at: DateTime<Utc>,
    pub processed_at: Option<DateTime<Utc>>,
    /// Deferred tries (a session lookup that failed).
    pub attempts: i64,
    pub last_error: Option<String>,
    /// The body exactly as WTS posted it.
    pub body: Value,
    pub decisions: Vec<DecisionView>,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct EventPage {
    pub items: Vec<EventView>,
    /// The `before` of the next page; absent on the last one.
    pub next_before: Option<i64>,
}

/// One reply step.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct DeliveryView {
    pub id: i64,
    pub event_id: i64,
    pub rule: String,
    /// The step's index in the rule's replies.
    pub step: i64,
    pub session_id: String,
    /// `text`, `file` or `file_url`.
    pub kind: String,
    /// The rendered text, the file name or the URL.
    pub payload: String,
    pub sync: bool,
    /// `planned`, `sending`, `sent`, `failed`, `dead`, `expired`, `skipped` or `dry_run`.
    pub status: String,
    pub attempts: i64,
    pub next_attempt_at: Option<DateTime<Utc>>,
    /// When the reply's age is counted from (the event's arrival, or the last retry).
    pub age_from: DateTime<Utc>,
    pub wts_message_id: Option<String>,
    /// WTS's own status of the sent message (`SENT`, `DELIVERED`, `READ`, ...).
    pub wts_status: Option<String>,
    /// The last error: WTS's `key` and `text` where it gave them.
    pub last_error: Option<Value>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub sent_at: Option<DateTime<Utc>>,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct DeliveryPage {
    pub items: Vec<DeliveryView>,
    /// The `before` of the next page; absent on the last one.
    pub next_before: Option<i64>,
}

/// The answer to a retry: the delivery, planned again.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct RetriedDelivery {
    pub delivery: DeliveryView,
    /// Later steps of the same rule that had been skipped and are planned again.
    pub replanned_steps: u64,
}

/// A stored JSON text as JSON, or as a string when it is not JSON.
fn json_or_text(text: String) -> Value {
    serde_json::from_str(&text).unwrap_or(Value::String(text))
}

impl From<DecisionRow> for DecisionView {
    fn from(row: DecisionRow) -> Self {
        DecisionView {
            rule: row.rule_id,
            fired: row.fired != 0,
            reason: row.reason,
            detail: row.detail.map(json_or_text),
            decided_at: time(row.decided_at),
        }
    }
}

fn event_view(row: EventRow, decisions: Vec<DecisionView>) -> EventView {
    EventView {
        id: row.id,
        event_type: row.event_type,
        session_id: row.session_id,
        content_id: row.content_id,
        status: row.status,
        received_at: time(row.received_at),
        processed_at: row.processed_at.map(time),
        attempts: row.attempts,
        last_error: row.last_error,
        body: json_or_text(row.body),
        decisions,
    }
}

impl From<JobRow> for DeliveryView {
    fn from(row: JobRow) -> Self {
        DeliveryView {
            id: row.id,
            event_id: row.event_id,
            rule: row.rule_id,
            step: row.step,
            session_id: row.session_id,
            kind: row.kind,
            payload: row.payload,
            sync: row.sync != 0,
            status: row.status,
            attempts: row.attempts,
            next_attempt_at: row.next_attempt_at.map(time),
            age_from: time(row.age_from),
            wts_message_id: row.wts_message_id,
            wts_status: row.wts_status,
            last_error: row.last_error.map(json_or_text),
            created_at: time(row.created_at),
            updated_at: time(row.updated_at),
            sent_at: row.sent_at.map(time),
        }
    }
}

fn next_before(ids: impl DoubleEndedIterator<Item = i64>, count: usize, limit: i64) -> Option<i64> {
    if i64::try_from(count).is_ok_and(|count| count == limit) {
        ids.last()
    } else {
        None
    }
}

#[utoipa::path(
    get, path = "/api/v1/events", tag = "history",
    params(HistoryQuery),
    responses(
        (status = 200, description = "Events, newest first, with their decisions", body = EventPage),
        (status = 400, description = "An unreadable query string", body = ErrorBody),
        (status = 401, description = "No valid token", body = ErrorBody),
        (status = 422, description = "An unknown status or a limit out of range", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
pub async fn list_events(
    caller: Caller,
    store: web::Data<Store>,
    query: web::Query<HistoryQuery>,
) -> Result<HttpResponse, AppError> {
    caller.require(Role::Viewer)?;
    let filter = query.filter(|s| EventStatus::parse(s).is_some())?;
    let rows = store.list_events(&filter).await?;
    let ids: Vec<i64> = rows.iter().map(|r| r.id).collect();
    let mut decisions = store.decisions_of_events(&ids).await?;
    let items: Vec<EventView> = rows
        .into_iter()
        .map(|row| {
            let (own, rest): (Vec<_>, Vec<_>) =
                decisions.drain(..).partition(|d| d.event_id == row.id);
            decisions = rest;
            event_view(row, own.into_iter().map(DecisionView::from).collect())
        })
        .collect();
    let next_before = next_before(items.iter().map(|e| e.id), items.len(), filter.limit);
    Ok(HttpResponse::Ok().json(EventPage { items, next_before }))
}

#[utoipa::path(
    get, path = "/api/v1/deliveries", tag = "history",
    params(HistoryQuery),
    responses(
        (status = 200, description = "Deliveries, newest first", body = DeliveryPage),
        (status = 400, description = "An unreadable query string", body = ErrorBody),
        (status = 401, description = "No valid token", body = ErrorBody),
        (status = 422, description = "An unknown status or a limit out of range", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
pub async fn list_deliveries(
    caller: Caller,
    store: web::Data<Store>,
    query: web::Query<HistoryQuery>,
) -> Result<HttpResponse, AppError> {
    caller.require(Role::Viewer)?;
    let filter = query.filter(|s| JobStatus::parse(s).is_some())?;
    let items: Vec<DeliveryView> = store
        .list_jobs(&filter)
        .await?
        .into_iter()
        .map(DeliveryView::from)
        .collect();
    let next_before = next_before(items.iter().map(|d| d.id), items.len(), filter.limit);
    Ok(HttpResponse::Ok().json(DeliveryPage { items, next_before }))
}

#[utoipa::path(
    post, path = "/api/v1/deliveries/{id}/retry", tag = "history",
    params(("id" = i64, Path, description = "The delivery's id")),
    responses(
        (status = 200, description = "Planned again, its age counted from now", body = RetriedDelivery),
        (status = 400, description = "The id is not a number", body = ErrorBody),
        (status = 401, description = "No valid token", body = ErrorBody),
        (status = 403, description = "Viewers may not retry", body = ErrorBody),
        (status = 404, description = "No such delivery", body = ErrorBody),
        (status = 409, description = "Only failed, dead and expired deliveries may be retried", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
pub async fn retry_delivery(
    caller: Caller,
    store: web::Data<Store>,
    id: web::Path<i64>,
) -> Result<HttpResponse, AppError> {
    caller.require(Role::Editor)?;
    let id = id.into_inner();
    match store.retry_job(id, now_ms()).await? {
        RetryOutcome::NotFound => Err(AppError::not_found(format!("delivery {id}"))),
        RetryOutcome::NotRetryable(status) => Err(AppError::Conflict(format!(
            "delivery {id} is {status}; only failed, dead and expired deliveries may be retried"
        ))),
        RetryOutcome::Retried { job, replanned } => {
            tracing::info!(delivery = id, replanned, by = %caller.name, "delivery retried");
            Ok(HttpResponse::Ok().json(RetriedDelivery {
                delivery: (*job).into(),
                replanned_steps: replanned,
            }))
        }
    }
}

/// How often pruning runs: a 24th of the retention, between 100 ms and an hour.
fn prune_interval(retention: std::time::Duration) -> std::time::Duration {
    (retention / 24).clamp(
        std::time::Duration::from_millis(100),
        std::time::Duration::from_secs(3600),
    )
}

/// Deletes history older than `retention` (events with their decisions, finished
/// deliveries) now and then, until `stop`.
pub async fn prune_periodically(
    store: Store,
    retention: std::time::Duration,
    stop: tokio_util::sync::CancellationToken,
) -> anyhow::Result<()> {
    let interval = prune_interval(retention);
    let retention_ms = i64::try_from(retention.as_millis()).unwrap_or(i64::MAX);
    loop {
        match store
            .prune_history(now_ms().saturating_sub(retention_ms))
            .await
        {
            Ok((0, 0)) => {}
            Ok((jobs, events)) => tracing::info!(jobs, events, "pruned old history"),
            Err(err) => {
                tracing::warn!(error.cause_chain = ?anyhow::Error::from(err), "cannot prune history")
            }
        }
        tokio::select! {
            _ = stop.cancelled() => return Ok(()),
            _ = tokio::time::sleep(interval) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pruning_runs_often_enough_for_short_retentions_and_rarely_for_long_ones() {
        use std::time::Duration;
        assert_eq!(
            prune_interval(Duration::from_secs(1)),
            Duration::from_millis(100)
        );
        assert_eq!(
            prune_interval(Duration::from_secs(48)),
            Duration::from_secs(2)
        );
        assert_eq!(
            prune_interval(Duration::from_secs(30 * 86400)),
            Duration::from_secs(3600)
        );
    }

    #[test]
    fn a_full_page_points_at_the_next() {
        assert_eq!(next_before([9, 8, 7].into_iter(), 3, 3), Some(7));
        assert_eq!(next_before([9, 8].into_iter(), 2, 3), None);
    }
}
