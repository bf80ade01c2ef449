//! Planning one event: walk the rule evaluations in (priority, id) order, decide which
//! rules fire (cap, cooldown, `stop`), and write every decision, the jobs of the fired
//! rules, their cooldowns and the event's processed mark in one transaction.

use std::time::Duration;

use serde_json::json;

use super::clock::duration_ms;
use crate::metrics::METRICS;
use crate::rules::{
    ConditionResult, CooldownPer, ReplyContent, RuleEvaluation, SessionFacts, TemplateVars,
    render_replies,
};
use crate::store::StoreError;
use crate::store::dispatch::{NewDecision, NewJob, PlanTx};

/// Conditions about the message itself; a rule failing one of them simply did not match.
const CONTENT_CONDITIONS: &[&str] = &["on", "text_any", "text_regex", "text_none", "message_types"];

/// The limits that hold a matched rule back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PlanLimits {
    pub session_reply_cap: u32,
    pub session_reply_window: Duration,
}

/// One event, decided by the engine, ready to plan.
#[derive(Debug, Clone)]
pub struct PlanInput<'a> {
    pub event_id: i64,
    pub session_id: Option<&'a str>,
    /// The event's stored arrival time: every decision here is made as of it.
    pub arrived_at: i64,
    /// The enabled rules that listen to the event, in snapshot order.
    pub evaluations: &'a [RuleEvaluation],
    pub session: Option<&'a SessionFacts>,
    pub vars: &'a TemplateVars,
    /// When set, no rule may fire and each records this reason (the loop guard).
    pub blocked: Option<&'a str>,
    /// No WTS token: jobs are recorded as `dry_run`.
    pub dry_run: bool,
    /// When deciding happens, for `decided_at` and `created_at`.
    pub now: i64,
}

/// What planning one event did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PlanReport {
    /// Ids of the rules that fired, in order.
    pub fired: Vec<String>,
    /// Jobs written.
    pub jobs: usize,
}

/// Why a rule did or did not fire.
#[derive(Debug, Clone, PartialEq)]
struct Verdict {
    reason: &'static str,
    detail: Option<serde_json::Value>,
}

/// Writes the decisions and jobs of `input` into `tx` (whose event is already marked
/// processed by the caller).
pub async fn plan_event(
    tx: &mut PlanTx,
    input: &PlanInput<'_>,
    limits: PlanLimits,
) -> Result<PlanReport, StoreError> {
    let mut report = PlanReport::default();
    let mut fired_in_window = match input.session_id {
        Some(session_id) => {
            let from = input
                .arrived_at
                .saturating_sub(duration_ms(limits.session_reply_window));
            tx.fired_between(session_id, from, input.arrived_at).await?
        }
        None => 0,
    };
    let mut stopped_by: Option<String> = None;
    for evaluation in input.evaluations {
        let rule = &evaluation.rule;
        let verdict = if let Some(reason) = input.blocked {
            Verdict {
                reason: "loop_guard",
                detail: Some(json!({ "why": reason })),
            }
        } else if !evaluation.matched {
            unmatched(&evaluation.conditions)
        } else if let Some(stopper) = &stopped_by {
            Verdict {
                reason: "stopped",
                detail: Some(json!({ "by": stopper })),
            }
        } else if input.session_id.is_none() {
            Verdict {
                reason: "no_session",
                detail: Some(json!({ "why": "the event names no session to answer in" })),
            }
        } else if fired_in_window >= i64::from(limits.session_reply_cap) {
            Verdict {
                reason: "cap",
                detail: Some(json!({
                    "fired": fired_in_window,
                    "cap": limits.session_reply_cap,
                    "window": humantime::format_duration(limits.session_reply_window).to_string(),
                })),
            }
        } else {
            cooling(tx, evaluation, input).await?.unwrap_or(Verdict {
                reason: "fired",
                detail: None,
            })
        };

        let fired = verdict.reason == "fired";
        let mut verdict = verdict;
        if fired {
            match plan_replies(tx, evaluation, input).await? {
                Ok(jobs) => {
                    report.jobs += jobs;
                    report.fired.push(rule.id.clone());
                    fired_in_window += 1;
                    if let Some(scope) = cooldown_scope(evaluation, input) {
                        tx.upsert_cooldown(&rule.id, &scope, input.arrived_at)
                            .await?;
                    }
                    if rule.stop {
                        stopped_by = Some(rule.id.clone());
                    }
                }
                Err(message) => {
                    verdict = Verdict {
                        reason: "error",
                        detail: Some(json!({ "error": message })),
                    }
                }
            }
        }
        let fired = verdict.reason == "fired";
        tx.insert_decision(&NewDecision {
            event_id: input.event_id,
            session_id: input.session_id,
            rule_id: &rule.id,
            fired,
            reason: verdict.reason,
            detail: verdict.detail.map(|d| d.to_string()),
            decided_at: input.now,
        })
        .await?;
        METRICS
            .rule_decisions
            .with_label_values(&[rule.id.as_str(), verdict.reason])
            .inc();
    }
    Ok(report)
}

/// The reason a rule that did not match stayed quiet: the message did not match
/// (`no_match`), or only an agent or opening-hours condition held it back.
fn unmatched(conditions: &[ConditionResult]) -> Verdict {
    let failing: Vec<&ConditionResult> = conditions.iter().filter(|c| !c.result).collect();
    let fails = |names: &[&str]| {
        failing
            .iter()
            .any(|c| names.contains(&c.condition.as_str()))
    };
    let reason = if fails(CONTENT_CONDITIONS) {
        "no_match"
    } else if fails(&["agent"]) {
        "agent"
    } else if fails(&["hours", "outside_hours"]) {
        "hours"
    } else {
        "no_match"
    };
    let detail = failing
        .iter()
        .map(|c| json!({ "condition": c.condition, "detail": c.detail }))
        .collect::<Vec<_>>();
    Verdict {
        reason,
        detail: Some(json!({ "failed": detail })),
    }
}

/// The cooldown verdict, if the rule fired in its scope too recently before this
/// event's arrival.
async fn cooling(
    tx: &mut PlanTx,
    evaluation: &RuleEvaluation,
    input: &PlanInput<'_>,
) -> Result<Option<Verdict>, StoreError> {
    let (Some(cooldown), Some(scope)) = (evaluation.cooldown(), cooldown_scope(evaluation, input))
    else {
        return Ok(None);
    };
    let Some(fired_at) = tx.cooldown_fired_at(&evaluation.rule.id, &scope).await? else {
        return Ok(None);
    };
    let until = fired_at.saturating_add(duration_ms(cooldown));
    Ok((until > input.arrived_at).then(|| Verdict {
        reason: "cooldown",
        detail: Some(json!({ "scope": scope, "fired_at": fired_at, "until": until })),
    }))
}

/// `session:<id>` or `contact:<id>`. A contact is known only from session data; without
/// it the cooldown falls back to the session.
fn cooldown_scope(evaluation: &RuleEvaluation, input: &PlanInput<'_>) -> Option<String> {
    let session_id = input.session_id?;
    let contact = input
        .session
        .and_then(|s| s.contact_id.as_deref().or(s.contact_phone.as_deref()));
    Some(match (evaluation.rule.cooldown_per, contact) {
        (CooldownPer::Contact, Some(contact)) => format!("contact:{contact}"),
        _ => format!("session:{session_id}"),
    })
}

/// Writes one job per reply step; `Err` carries a rendering problem (the rule then
/// records `error` and plans nothing).
async fn plan_replies(
    tx: &mut PlanTx,
    evaluation: &RuleEvaluation,
    input: &PlanInput<'_>,
) -> Result<Result<usize, String>, StoreError> {
    let session_id = input.session_id.expect("checked before firing");
    let replies = match render_replies(&evaluation.rule, input.vars) {
        Ok(replies) => replies,
        Err(err) => return Ok(Err(err.to_string())),
    };
    let status = if input.dry_run { "dry_run" } else { "planned" };
    let mut planned = 0;
    for reply in &replies {
        let (kind, payload) = match &reply.content {
            ReplyContent::Text(text) => ("text", text.as_str()),
            ReplyContent::File(name) => ("file", name.as_str()),
            ReplyContent::FileUrl(url) => ("file_url", url.as_str()),
        };
        let inserted = tx
            .insert_job(&NewJob {
                event_id: input.event_id,
                rule_id: &evaluation.rule.id,
                step: reply.step as i64,
                session_id,
                kind,
                payload,
                sync: reply.sync,
                status,
                age_from: input.arrived_at,
                now: input.now,
            })
            .await?;
        if inserted {
            planned += 1;
            if input.dry_run {
                METRICS.sends.with_label_values(&["dry_run"]).inc();
                tracing::info!(
                    rule = %evaluation.rule.id, session_id, step = reply.step, kind, payload,
                    "dry run: would send"
                );
            }
        }
    }
    Ok(Ok(planned))
}
