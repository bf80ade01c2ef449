//! `POST /api/v1/rules/test`: a dry run. It takes a webhook event exactly as WTS posts it
//! and answers, with no side effects, which rules would fire with which replies, how every
//! enabled rule fared condition by condition, and why a matching rule would still stay
//! quiet (disabled, cooldown, hours, the per-session cap, an earlier `stop`).
//!
//! Cooldowns and the cap are read from the database through the planner's own queries,
//! in a transaction that is rolled back. No session lookup is made: as in the daemon
//! without a WTS token, no agent is assumed.

use actix_web::{HttpResponse, web};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use utoipa::{IntoParams, ToSchema};

use super::auth::{Caller, Role};
use crate::config::Settings;
use crate::error::{AppError, ErrorBody, FieldError};
use crate::jobs::clock::duration_ms;
use crate::rules::{
    ConditionResult, MatchInput, ReplyContent, Rule, RuleEngine, RuleEvaluation, Snapshot,
    TemplateVars, render_replies,
};
use crate::store::Store;
use crate::store::dispatch::PlanTx;
use crate::webhook::envelope;

/// Conditions about the message itself: failing one means the rule did not match at all.
const CONTENT_CONDITIONS: &[&str] = &["on", "text_any", "text_regex", "text_none", "message_types"];

#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct DryRunQuery {
    /// Decide as if the event arrived at this time (RFC 3339); default now.
    pub at: Option<DateTime<Utc>>,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ConditionView {
    /// The `[when]` key (`text_any`, `hours`, ...) or `on`.
    pub condition: String,
    pub result: bool,
    pub detail: String,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ReplyView {
    pub step: usize,
    /// `text`, `file` or `file_url`.
    pub kind: String,
    /// The rendered text, the file name or the URL.
    pub content: String,
    pub sync: bool,
}

/// A rule whose conditions all hold.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct MatchedRule {
    pub rule: String,
    pub replies: Vec<ReplyView>,
    /// Whether it would fire; if not, `reason` says why.
    pub fires: bool,
    /// `fired`, `disabled`, `cooldown`, `cap`, `stopped`, `no_session`, `loop_guard` or `error`.
    pub reason: String,
    pub detail: Option<Value>,
}

/// One rule evaluated against the event.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct EvaluatedRule {
    pub rule: String,
    /// Every condition holds.
    pub matched: bool,
    pub enabled: bool,
    /// `fired`, or why not: `no_match`, `agent`, `hours`, `disabled`, `cooldown`, `cap`,
    /// `stopped`, `no_session`, `loop_guard`, `error`.
    pub reason: String,
    pub conditions: Vec<ConditionView>,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct DryRunResult {
    /// The rules whose conditions hold, in evaluation order.
    pub matched: Vec<MatchedRule>,
    /// Every rule that listens to the event type, enabled or not.
    pub evaluated: Vec<EvaluatedRule>,
    /// Such as two enabled rules that would both answer the message.
    pub warnings: Vec<String>,
}

/// What the dry run reads from the event.
struct EventFacts {
    envelope: envelope::Envelope,
    text: Option<String>,
    message_type: Option<String>,
    contact_name: Option<String>,
}

fn facts(body: &Value) -> Result<EventFacts, AppError> {
    let bytes = serde_json::to_vec(body).map_err(anyhow::Error::from)?;
    let envelope = envelope::parse(&bytes)
        .map_err(|e| AppError::Validation(vec![FieldError::new("eventType", e.to_string())]))?;
    let content = body.get("content");
    let text = |value: Option<&Value>| {
        value
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
            .map(str::to_string)
    };
    Ok(EventFacts {
        text: text(content.and_then(|c| c.get("text"))),
        message_type: text(content.and_then(|c| c.get("type"))),
        contact_name: text(
            content
                .and_then(|c| c.get("contactDetails"))
                .and_then(|c| c.get("name")),
        ),
        envelope,
    })
}

/// A rule's verdict: `fired`, or why not, with particulars.
struct Verdict {
    reason: &'static str,
    detail: Option<Value>,
}

impl Verdict {
    fn fires() -> Verdict {
        Verdict {
            reason: "fired",
            detail: None,
        }
    }
}

fn unmatched(conditions: &[ConditionResult]) -> &'static str {
    let fails = |names: &[&str]| {
        conditions
            .iter()
            .any(|c| !c.result && names.contains(&c.condition.as_str()))
    };
    if fails(CONTENT_CONDITIONS) {
        "no_match"
    } else if fails(&["agent"]) {
        "agent"
    } else if fails(&["hours", "outside_hours"]) {
        "hours"
    } else {
        "no_match"
    }
}

#[utoipa::path(
    post, path = "/api/v1/rules/test", tag = "rules",
    params(DryRunQuery),
    request_body(content = Object, description = "A WTS webhook event, as WTS posts it"),
    responses(
        (status = 200, description = "What the rules would do, changing nothing", body = DryRunResult),
        (status = 400, description = "The body is not JSON", body = ErrorBody),
        (status = 401, description = "No valid token", body = ErrorBody),
        (status = 403, description = "Viewers may not run dry runs", body = ErrorBody),
        (status = 415, description = "The body is not application/json", body = ErrorBody),
        (status = 422, description = "Not a webhook event (no `eventType`)", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
pub async fn dry_run(
    caller: Caller,
    store: web::Data<Store>,
    settings: web::Data<Settings>,
    engine: web::Data<RuleEngine>,
    query: web::Query<DryRunQuery>,
    body: web::Json<Value>,
) -> Result<HttpResponse, AppError> {
    caller.require(Role::Editor)?;
    let event = facts(&body)?;
    let arrived_at = query.at.unwrap_or_else(Utc::now);
    let input = MatchInput {
        event_type: &event.envelope.event_type,
        text: event.text.as_deref(),
        message_type: event.message_type.as_deref(),
        arrived_at,
    };
    let listens = |rule: &Rule| rule.on.contains(&event.envelope.event_type);
    let enabled: Vec<RuleEvaluation> = engine
        .current()
        .evaluate_all(&input, None)
        .into_iter()
        .filter(|e| listens(&e.rule))
        .collect();
    let disabled = disabled_rules(&store).await?;
    let disabled: Vec<RuleEvaluation> = disabled
        .evaluate_all(&input, None)
        .into_iter()
        .filter(|e| listens(&e.rule))
        .collect();

    let session_id = event.envelope.session_id.as_deref();
    let blocked = event.envelope.is_ignored(&settings.bot.direction).then(|| {
        format!(
            "{} events with this direction are ignored",
            event.envelope.event_type
        )
    });
    let mut vars = TemplateVars::for_event(session_id, event.text.as_deref(), None);
    vars.contact_name = event.contact_name.clone();

    let mut tx = store.begin_plan().await?;
    let mut fired_in_window = match session_id {
        Some(session) => {
            let to = arrived_at.timestamp_millis();
            let from = to.saturating_sub(duration_ms(settings.bot.session_reply_window));
            tx.fired_between(session, from, to).await?
        }
        None => 0,
    };
    let mut stopped_by: Option<String> = None;
    let mut result = DryRunResult {
        matched: Vec::new(),
        evaluated: Vec::new(),
        warnings: Vec::new(),
    };
    for evaluation in &enabled {
        let verdict = if let Some(why) = &blocked {
            Verdict {
                reason: "loop_guard",
                detail: Some(json!({ "why": why })),
            }
        } else if !evaluation.matched {
            Verdict {
                reason: unmatched(&evaluation.conditions),
                detail: None,
            }
        } else if let Some(stopper) = &stopped_by {
            Verdict {
                reason: "stopped",
                detail: Some(json!({ "by": stopper })),
            }
        } else if session_id.is_none() {
            Verdict {
                reason: "no_session",
                detail: Some(json!({ "why": "the event names no session to answer in" })),
            }
        } else if fired_in_window >= i64::from(settings.bot.session_reply_cap) {
            Verdict {
                reason: "cap",
                detail: Some(json!({
                    "fired": fired_in_window,
                    "cap": settings.bot.session_reply_cap,
                })),
            }
        } else {
            cooling(
                &mut tx,
                evaluation,
                session_id,
                arrived_at.timestamp_millis(),
            )
            .await?
            .unwrap_or_else(Verdict::fires)
        };
        let fires = verdict.reason == "fired";
        if fires {
            fired_in_window += 1;
            if evaluation.rule.stop {
                stopped_by = Some(evaluation.rule.id.clone());
            }
        }
        record(&mut result, evaluation, true, verdict, &vars);
    }
    drop(tx);
    for evaluation in &disabled {
        let verdict = Verdict {
            reason: if evaluation.matched {
                "disabled"
            } else {
                unmatched(&evaluation.conditions)
            },
            detail: None,
        };
        record(&mut result, evaluation, false, verdict, &vars);
    }
    let firing: Vec<&str> = result
        .matched
        .iter()
        .filter(|m| m.fires)
        .map(|m| m.rule.as_str())
        .collect();
    if firing.len() > 1 {
        result.warnings.push(format!(
            "{} enabled rules would all answer this message: {}; give the first `stop = true` if one answer is enough",
            firing.len(),
            firing.join(", ")
        ));
    }
    Ok(HttpResponse::Ok().json(result))
}

/// The cooldown verdict, when the rule fired in the event's session too recently. Without
/// session data a per-contact cooldown is kept per session, as the planner does.
async fn cooling(
    tx: &mut PlanTx,
    evaluation: &RuleEvaluation,
    session_id: Option<&str>,
    arrived_at: i64,
) -> Result<Option<Verdict>, AppError> {
    let (Some(cooldown), Some(session)) = (evaluation.cooldown(), session_id) else {
        return Ok(None);
    };
    let scope = format!("session:{session}");
    let Some(fired_at) = tx.cooldown_fired_at(&evaluation.rule.id, &scope).await? else {
        return Ok(None);
    };
    let until = fired_at.saturating_add(duration_ms(cooldown));
    Ok((until > arrived_at).then(|| Verdict {
        reason: "cooldown",
        detail: Some(json!({
            "scope": scope,
            "fired_at": super::time(fired_at),
            "until": super::time(until),
        })),
    }))
}

fn record(
    result: &mut DryRunResult,
    evaluation: &RuleEvaluation,
    enabled: bool,
    verdict: Verdict,
    vars: &TemplateVars,
) {
    let rule = &evaluation.rule;
    if evaluation.matched {
        let (replies, verdict) = match render_replies(rule, vars) {
            Ok(replies) => (replies, verdict),
            Err(err) => (
                Vec::new(),
                Verdict {
                    reason: "error",
                    detail: Some(json!({ "error": err.to_string() })),
                },
            ),
        };
        result.matched.push(MatchedRule {
            rule: rule.id.clone(),
            replies: replies
                .into_iter()
                .map(|reply| {
                    let (kind, content) = match reply.content {
                        ReplyContent::Text(text) => ("text", text),
                        ReplyContent::File(name) => ("file", name),
                        ReplyContent::FileUrl(url) => ("file_url", url),
                    };
                    ReplyView {
                        step: reply.step,
                        kind: kind.to_string(),
                        content,
                        sync: reply.sync,
                    }
                })
                .collect(),
            fires: verdict.reason == "fired",
            reason: verdict.reason.to_string(),
            detail: verdict.detail,
        });
        let last = result.matched.last().expect("just pushed");
        result
            .evaluated
            .push(evaluated(evaluation, enabled, &last.reason));
    } else {
        result
            .evaluated
            .push(evaluated(evaluation, enabled, verdict.reason));
    }
}

fn evaluated(evaluation: &RuleEvaluation, enabled: bool, reason: &str) -> EvaluatedRule {
    EvaluatedRule {
        rule: evaluation.rule.id.clone(),
        matched: evaluation.matched,
        enabled,
        reason: reason.to_string(),
        conditions: evaluation
            .conditions
            .iter()
            .map(|c| ConditionView {
                condition: c.condition.clone(),
                result: c.result,
                detail: c.detail.clone(),
            })
            .collect(),
    }
}

/// The disabled rules, compiled as if enabled, so the dry run can say they would match.
async fn disabled_rules(store: &Store) -> Result<Snapshot, AppError> {
    let rows = store.list_rules().await?;
    let rules = rows
        .iter()
        .filter_map(|row| row.rule().ok())
        .filter(|rule| !rule.enabled)
        .map(|rule| Rule {
            enabled: true,
            ..rule
        });
    Snapshot::compile(rules).map_err(|e| {
        AppError::Unexpected(anyhow::anyhow!("cannot compile the disabled rules: {e}"))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn condition(name: &str, result: bool) -> ConditionResult {
        ConditionResult {
            condition: name.into(),
            result,
            detail: String::new(),
        }
    }

    #[test]
    fn a_content_failure_outranks_agent_and_hours() {
        assert_eq!(
            unmatched(&[condition("text_any", false), condition("hours", false)]),
            "no_match"
        );
        assert_eq!(
            unmatched(&[condition("text_any", true), condition("agent", false)]),
            "agent"
        );
        assert_eq!(
            unmatched(&[
                condition("text_any", true),
                condition("outside_hours", false)
            ]),
            "hours"
        );
    }

    #[test]
    fn the_event_needs_an_event_type() {
        assert!(facts(&json!({"content": {}})).is_err());
        let event = facts(&json!({
            "eventType": "MESSAGE_RECEIVED",
            "content": {"sessionId": "s1", "text": "manual", "type": "TEXT",
                        "contactDetails": {"name": "Ana"}}
        }))
        .unwrap();
        assert_eq!(event.envelope.session_id.as_deref(), Some("s1"));
        assert_eq!(event.text.as_deref(), Some("manual"));
        assert_eq!(event.contact_name.as_deref(), Some("Ana"));
    }
}
