//! The dispatcher: leases inbox events in arrival order (one session at a time, across
//! instances too), runs them through the live rule snapshot, and plans the replies.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde_json::Value;
use tokio_util::sync::CancellationToken;

use super::backoff::retry_wait;
use super::clock::{Clock, duration_ms};
use super::plan::{PlanInput, PlanLimits, PlanReport, plan_event};
use super::session_cache::{SessionCache, session_facts};
use super::{JobSignal, Step};
use crate::config::BotSettings;
use crate::inbox::InboxSignal;
use crate::rules::model::MESSAGE_EVENTS;
use crate::rules::{MatchInput, RuleEngine, RuleEvaluation, SessionFacts, TemplateVars};
use crate::store::dispatch::ClaimedEvent;
use crate::store::{Store, StoreError};
use crate::wts::WtsClient;

/// The longest wait for a wake-up before looking at the inbox anyway.
const POLL_INTERVAL: Duration = Duration::from_millis(500);
/// The pause after a database error before trying again.
const ERROR_PAUSE: Duration = Duration::from_secs(1);
/// Attempts at a planning transaction that lost a lock race.
const PLAN_ATTEMPTS: u32 = 3;

#[derive(Debug, thiserror::Error)]
pub enum DispatchError {
    #[error("the dispatcher's database work failed")]
    Store(#[from] StoreError),
}

/// What the dispatcher reads from `bot.*`.
#[derive(Debug, Clone)]
pub struct DispatchSettings {
    pub direction: String,
    pub limits: PlanLimits,
    pub session_cache_ttl: Duration,
    pub retry_schedule: Vec<Duration>,
    pub lease: Duration,
}

impl DispatchSettings {
    pub fn from_bot(bot: &BotSettings) -> DispatchSettings {
        DispatchSettings {
            direction: bot.direction.clone(),
            limits: PlanLimits {
                session_reply_cap: bot.session_reply_cap,
                session_reply_window: bot.session_reply_window,
            },
            session_cache_ttl: bot.session_cache_ttl,
            retry_schedule: bot.retry_schedule.clone(),
            lease: bot.lease,
        }
    }
}

pub struct Dispatcher {
    store: Store,
    engine: Arc<RuleEngine>,
    /// `None` without `wts.api_token`: no session lookups, jobs are `dry_run`.
    wts: Option<Arc<WtsClient>>,
    settings: DispatchSettings,
    clock: Clock,
    sessions: SessionCache,
    jobs: JobSignal,
    owner: String,
}

/// The parts of a stored event the dispatcher reads.
#[derive(Debug, Default)]
struct EventFacts {
    content_id: Option<String>,
    text: Option<String>,
    message_type: Option<String>,
    direction: Option<String>,
    origin: Option<String>,
    user_id: Option<String>,
    status: Option<String>,
    contact_name: Option<String>,
    contact_phone: Option<String>,
}

impl EventFacts {
    /// Reads leniently: a field of an unexpected type is absent.
    fn parse(body: &str) -> EventFacts {
        let root: Value = serde_json::from_str(body).unwrap_or(Value::Null);
        let content = root.get("content");
        let text = |value: Option<&Value>| {
            value
                .and_then(Value::as_str)
                .filter(|s| !s.is_empty())
                .map(str::to_string)
        };
        let field = |name: &str| text(content.and_then(|c| c.get(name)));
        let contact = content.and_then(|c| c.get("contactDetails"));
        EventFacts {
            content_id: field("id"),
            text: field("text"),
            message_type: field("type"),
            direction: field("direction"),
            origin: field("origin"),
            user_id: field("userId"),
            status: field("status"),
            contact_name: text(contact.and_then(|c| c.get("name"))),
            contact_phone: text(contact.and_then(|c| c.get("phonenumber")))
                .map(|p| p.replace('|', "")),
        }
    }

    /// Why a message event may not trigger rules: only a customer's inbound message
    /// may, never one from the API, a bot or an agent.
    fn loop_guard(&self, event_type: &str, inbound: &str) -> Option<String> {
        if event_type == "MESSAGE_SENT" {
            return Some("MESSAGE_SENT never triggers rules".into());
        }
        if !MESSAGE_EVENTS.contains(&event_type) {
            return None;
        }
        if event_type == "MESSAGE_RECEIVED" && self.direction.as_deref() != Some(inbound) {
            return Some(format!(
                "direction {} is not {inbound}",
                self.direction.as_deref().unwrap_or("(none)")
            ));
        }
        if event_type != "MESSAGE_RECEIVED" && self.direction.as_deref() != Some(inbound) {
            return Some("not an inbound message".into());
        }
        if let Some(origin) = self
            .origin
            .as_deref()
            .filter(|o| o.eq_ignore_ascii_case("BOT") || o.eq_ignore_ascii_case("API"))
        {
            return Some(format!("origin {origin}"));
        }
        if self.user_id.is_some() {
            return Some("written by an agent".into());
        }
        None
    }
}

/// What became of an event after the session lookup.
enum Lookup {
    Found(Option<SessionFacts>),
    /// Try the event again later.
    Defer(String, Option<Duration>),
    /// Give up on the event with this error.
    Fail(String),
}

impl Dispatcher {
    pub fn new(
        store: Store,
        engine: Arc<RuleEngine>,
        wts: Option<Arc<WtsClient>>,
        settings: DispatchSettings,
        clock: Clock,
        jobs: JobSignal,
    ) -> Dispatcher {
        Dispatcher {
            sessions: SessionCache::new(duration_ms(settings.session_cache_ttl)),
            owner: format!("dispatcher-{}", uuid::Uuid::new_v4().simple()),
            store,
            engine,
            wts,
            settings,
            clock,
            jobs,
        }
    }

    /// Decides the next due event, if any.
    pub async fn run_once(&self) -> Result<Step, DispatchError> {
        let now = self.clock.now_ms();
        let lease = duration_ms(self.settings.lease);
        let Some(event) = self.store.claim_event(&self.owner, now, lease).await? else {
            return Ok(Step::Idle);
        };
        self.decide(&event).await?;
        Ok(Step::Processed)
    }

    /// Decides events until `stop`, waiting on the inbox signal (with a poll floor) when
    /// there are none.
    pub async fn run(self, inbox: InboxSignal, stop: CancellationToken) -> anyhow::Result<()> {
        tracing::info!(dry_run = self.wts.is_none(), "dispatcher started");
        while !stop.is_cancelled() {
            let pause = match self.run_once().await {
                Ok(Step::Processed) => continue,
                Ok(Step::Idle) => None,
                Err(err) => {
                    tracing::error!(error.cause_chain = ?anyhow::Error::from(err), "dispatching failed");
                    Some(ERROR_PAUSE)
                }
            };
            tokio::select! {
                _ = stop.cancelled() => break,
                _ = inbox.wait(POLL_INTERVAL), if pause.is_none() => {}
                _ = tokio::time::sleep(pause.unwrap_or_default()), if pause.is_some() => {}
            }
        }
        tracing::info!("dispatcher stopped");
        Ok(())
    }

    #[tracing::instrument(name = "dispatch", skip_all, fields(event_id = event.id, event_type = %event.event_type))]
    async fn decide(&self, event: &ClaimedEvent) -> Result<(), DispatchError> {
        let facts = EventFacts::parse(&event.body);
        self.observe(event, &facts).await?;

        let snapshot = self.engine.current();
        let arrived_at =
            DateTime::<Utc>::from_timestamp_millis(event.received_at).unwrap_or_default();
        let input = MatchInput {
            event_type: &event.event_type,
            text: facts.text.as_deref(),
            message_type: facts.message_type.as_deref(),
            arrived_at,
        };
        let blocked = facts.loop_guard(&event.event_type, &self.settings.direction);
        let listening = snapshot
            .rules()
            .any(|rule| rule.on.contains(&event.event_type));
        if !listening {
            return self.close(event, None).await;
        }

        let session = if blocked.is_none() && snapshot.needs_session(&input) {
            match self.lookup(event).await {
                Lookup::Found(session) => session,
                Lookup::Defer(error, retry_after) => {
                    return self.defer(event, &error, retry_after).await;
                }
                Lookup::Fail(error) => return self.close(event, Some(&error)).await,
            }
        } else {
            None
        };
        let evaluations: Vec<RuleEvaluation> = snapshot
            .evaluate_all(&input, session.as_ref())
            .into_iter()
            .filter(|e| e.rule.on.contains(&event.event_type))
            .collect();
        let mut vars = TemplateVars::for_event(
            event.session_id.as_deref(),
            facts.text.as_deref(),
            session.as_ref(),
        );
        vars.contact_name = vars.contact_name.or(facts.contact_name);
        vars.contact_phone = vars.contact_phone.or(facts.contact_phone);
        let input = PlanInput {
            event_id: event.id,
            session_id: event.session_id.as_deref(),
            arrived_at: event.received_at,
            evaluations: &evaluations,
            session: session.as_ref(),
            vars: &vars,
            blocked: blocked.as_deref(),
            dry_run: self.wts.is_none(),
            now: self.clock.now_ms(),
        };
        self.commit_plan(event, Some(&input), None).await
    }

    /// What an event says about state wtsbot keeps: cached sessions, delivery statuses.
    async fn observe(&self, event: &ClaimedEvent, facts: &EventFacts) -> Result<(), DispatchError> {
        match event.event_type.as_str() {
            "SESSION_UPDATE" | "SESSION_COMPLETE" => {
                if let Some(session_id) = &event.session_id {
                    self.sessions.forget(session_id);
                }
            }
            "CONTACT_TAG_UPDATE" => self.sessions.clear(),
            "MESSAGE_UPDATED" => {
                if let (Some(id), Some(status)) = (&facts.content_id, &facts.status) {
                    let now = self.clock.now_ms();
                    let changed = self.store.update_wts_status(id, status, now).await?;
                    if changed > 0 {
                        tracing::debug!(message_id = %id, %status, "delivery status updated");
                    }
                }
            }
            _ => {}
        }
        Ok(())
    }

    /// The session's details, from the cache or WTS.
    async fn lookup(&self, event: &ClaimedEvent) -> Lookup {
        let (Some(wts), Some(session_id)) = (&self.wts, &event.session_id) else {
            return Lookup::Found(None);
        };
        let now = self.clock.now_ms();
        if let Some(cached) = self.sessions.get(session_id, now) {
            return Lookup::Found(Some(cached));
        }
        match wts.get_session(session_id).await {
            Ok(details) => {
                let facts = session_facts(details);
                self.sessions.put(session_id, facts.clone(), now);
                Lookup::Found(Some(facts))
            }
            Err(err) if err.is_retryable() => Lookup::Defer(err.to_string(), err.retry_after()),
            Err(err) => Lookup::Fail(format!("session lookup failed: {err}")),
        }
    }

    /// Leaves the event pending, to be tried again after a backoff; once the schedule is
    /// spent, it is processed with the error instead (never answered blind).
    async fn defer(
        &self,
        event: &ClaimedEvent,
        error: &str,
        retry_after: Option<Duration>,
    ) -> Result<(), DispatchError> {
        let retry = usize::try_from(event.attempts).unwrap_or(usize::MAX);
        let Some(wait) = retry_wait(&self.settings.retry_schedule, retry, retry_after) else {
            let error = format!(
                "session lookup failed {} times: {error}",
                event.attempts + 1
            );
            tracing::warn!(%error, "giving up on the event");
            return self.close(event, Some(&error)).await;
        };
        tracing::warn!(%error, wait = ?wait, "session lookup failed; the event waits");
        let next = self.clock.now_ms().saturating_add(duration_ms(wait));
        if !self
            .store
            .defer_event(event.id, &self.owner, next, error)
            .await?
        {
            tracing::warn!("lost the event's lease before deferring it");
        }
        Ok(())
    }

    /// Marks the event processed, with `error` when it could not be decided.
    async fn close(&self, event: &ClaimedEvent, error: Option<&str>) -> Result<(), DispatchError> {
        self.commit_plan(event, None, error).await
    }

    /// One transaction: the event marked processed and, with `input`, its decisions and
    /// jobs. Retried when it loses a lock race; dropped when another dispatcher took the
    /// event over.
    async fn commit_plan(
        &self,
        event: &ClaimedEvent,
        input: Option<&PlanInput<'_>>,
        error: Option<&str>,
    ) -> Result<(), DispatchError> {
        let mut attempt = 1;
        loop {
            match self.try_commit_plan(event, input, error).await {
                Ok(Some(report)) => {
                    if report.jobs > 0 && self.wts.is_some() {
                        self.jobs.notify();
                    }
                    tracing::debug!(fired = ?report.fired, jobs = report.jobs, "event decided");
                    return Ok(());
                }
                Ok(None) => {
                    tracing::warn!(
                        "lost the event's lease before planning it; another dispatcher has it"
                    );
                    return Ok(());
                }
                Err(err) if err.is_retryable_conflict() && attempt < PLAN_ATTEMPTS => {
                    tracing::debug!(error = %err, attempt, "planning conflicted; retrying");
                    attempt += 1;
                }
                Err(err) => return Err(err.into()),
            }
        }
    }

    async fn try_commit_plan(
        &self,
        event: &ClaimedEvent,
        input: Option<&PlanInput<'_>>,
        error: Option<&str>,
    ) -> Result<Option<PlanReport>, StoreError> {
        let now = self.clock.now_ms();
        let mut tx = self.store.begin_plan().await?;
        if !tx.mark_processed(event.id, &self.owner, now, error).await? {
            return Ok(None);
        }
        let report = match input {
            Some(input) => plan_event(&mut tx, input, self.settings.limits).await?,
            None => PlanReport::default(),
        };
        tx.commit().await?;
        Ok(Some(report))
    }
}
