//! `wtsbot demo`: the whole path in one command, without a WTS account. It starts the
//! simulated WTS and the daemon (temporary SQLite, the example `rules/`), registers the
//! webhook, plays three customers and prints what was received, which rules fired or why
//! not, and what was sent. Everything runs in this process, on loopback.

use std::fmt::Write as _;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use secrecy::SecretString;
use serde_json::Value;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::config::{Settings, Synchronous};
use crate::registration::{DesiredSubscription, ensure_subscription, subscription_events};
use crate::rules::{MatchInput, SessionFacts, Snapshot, load_dir};
use crate::sim::{SimConfig, SimSession, WtsSim, customers};
use crate::startup::Application;
use crate::store::Store;
use crate::store::jobs::{JobRow, JobStatus};
use crate::wts::WtsClient;

/// The customers: a name, what they write, and whether the example rules answer it.
const CUSTOMERS: [(&str, &str, bool); 3] = [
    (
        "Maria",
        "Oi! Vocês podem me mandar o manual de instalação?",
        true,
    ),
    ("João", "Quanto custa o plano mensal?", true),
    ("Ana", "Bom dia!", false),
];
/// The longest wait for the replies to be sent and reported delivered.
const DEADLINE: Duration = Duration::from_secs(30);
const POLL: Duration = Duration::from_millis(100);

pub async fn run(settings: &Settings) -> anyhow::Result<()> {
    crate::telemetry::init(settings.log.format, "warn");
    let rules_dir = example_rules_dir()?;
    let sim = WtsSim::start(SimConfig::default())
        .await
        .context("cannot start the simulated WTS")?;
    let workdir = tempfile::tempdir().context("cannot make a temporary directory")?;
    let result = run_with(settings, &sim, &rules_dir, workdir.path()).await;
    sim.shutdown().await;
    let report = result?;
    print!("{}", report.text);
    report.verdict()
}

/// `rules/` in the current directory, made absolute.
fn example_rules_dir() -> anyhow::Result<PathBuf> {
    let dir = std::env::current_dir()
        .context("cannot read the current directory")?
        .join("rules");
    if !dir.is_dir() {
        anyhow::bail!(
            "no rules/ directory in {}: run `wtsbot demo` from the root of the wtsbot \
             repository, whose rules/ holds the example rules the demo answers with",
            dir.parent().unwrap_or(&dir).display()
        );
    }
    Ok(dir)
}

/// The daemon as the demo runs it, and how to stop it.
struct Daemon {
    address: String,
    store: Store,
    webhook_url: String,
    shutdown: CancellationToken,
    running: JoinHandle<anyhow::Result<()>>,
}

impl Daemon {
    async fn start(settings: Settings) -> anyhow::Result<Daemon> {
        let listener = TcpListener::bind("127.0.0.1:0").context("cannot listen on loopback")?;
        let app = Application::build_with_listener(settings, listener).await?;
        let address = format!("http://127.0.0.1:{}", app.port());
        Ok(Daemon {
            webhook_url: format!("{address}{}", app.webhook_path()),
            address,
            store: app.store().clone(),
            shutdown: app.shutdown_token(),
            running: tokio::spawn(app.run_until_stopped()),
        })
    }

    async fn stop(self) -> anyhow::Result<()> {
        self.shutdown.cancel();
        self.running.await.context("the daemon panicked")?
    }
}

async fn run_with(
    settings: &Settings,
    sim: &WtsSim,
    rules_dir: &Path,
    workdir: &Path,
) -> anyhow::Result<Report> {
    let settings = demo_settings(settings, sim, rules_dir, workdir);
    let rules = enabled_rules(rules_dir)?;
    let daemon = Daemon::start(settings.clone()).await?;
    let played = play(&settings, sim, &daemon, &rules).await;
    let stopped = daemon.stop().await;
    let report = played?;
    stopped?;
    Ok(report)
}

/// The user's settings, pointed at the simulator, a temporary database and `rules_dir`,
/// with fresh secrets so that nothing is generated and printed.
fn demo_settings(base: &Settings, sim: &WtsSim, rules_dir: &Path, workdir: &Path) -> Settings {
    let mut settings = base.clone();
    let secret = || SecretString::from(uuid::Uuid::new_v4().simple().to_string());
    settings.server.bind = "127.0.0.1:0".into();
    settings.database.url =
        format!("sqlite://{}?mode=rwc", workdir.join("demo.db").display()).into();
    settings.database.synchronous = Synchronous::Normal;
    settings.rules.dir = rules_dir.to_path_buf();
    settings.wts.base_url = sim.base_url();
    settings.wts.api_token = Some(sim.token().into());
    settings.wts.pacing = false;
    settings.webhook.token = Some(secret());
    settings.webhook.public_url = None;
    settings.admin.token = Some(secret());
    settings
}

fn enabled_rules(dir: &Path) -> anyhow::Result<Snapshot> {
    let loaded = load_dir(dir).map_err(|errors| {
        let lines: Vec<String> = errors.iter().map(ToString::to_string).collect();
        anyhow::anyhow!("the example rules do not load:\n  {}", lines.join("\n  "))
    })?;
    Ok(Snapshot::compile(loaded.rules.into_iter().map(|r| r.rule))?)
}

/// One customer's message and everything that became of it.
struct Customer {
    name: &'static str,
    text: &'static str,
    expect_answer: bool,
    message_id: String,
    /// How the text fares against each enabled rule, in rule order: the dispatcher records
    /// decisions only for rules whose text conditions hold.
    text_checks: Vec<TextCheck>,
}

async fn play(
    settings: &Settings,
    sim: &WtsSim,
    daemon: &Daemon,
    rules: &Snapshot,
) -> anyhow::Result<Report> {
    let mut text = String::new();
    let rule_ids: Vec<&str> = rules.rules().map(|r| r.id.as_str()).collect();
    writeln!(text, "wtsbot demo")?;
    writeln!(text, "  simulated WTS  {}", sim.base_url())?;
    writeln!(
        text,
        "  daemon         {} (temporary SQLite)",
        daemon.address
    )?;
    writeln!(
        text,
        "  rules          {} enabled in rules/: {}",
        rule_ids.len(),
        rule_ids.join(", ")
    )?;

    // MESSAGE_SENT on top of what the daemon needs, so its own replies come back and
    // can be seen being ignored.
    let mut events = subscription_events(rules.listened_events());
    events.push("MESSAGE_SENT".into());
    events.sort();
    let client = WtsClient::from_settings(settings)?;
    let desired = DesiredSubscription {
        name: settings.webhook.name.clone(),
        url: daemon.webhook_url.clone(),
        events,
    };
    let subscription = ensure_subscription(&client, &desired)
        .await
        .context("cannot register the webhook with the simulated WTS")?;
    writeln!(
        text,
        "  webhook        subscription {} for {}\n",
        subscription.subscription().id,
        subscription.subscription().events.join(", ")
    )?;

    let http = reqwest::Client::new();
    let mut customers = Vec::new();
    for (name, message, expect_answer) in CUSTOMERS {
        let session = sim.add_session(SimSession::new().with_contact_name(name));
        let body = customers::message_received(&session, message);
        let message_id = body["content"]["id"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        let answer = http
            .post(&daemon.webhook_url)
            .json(&body)
            .send()
            .await
            .and_then(reqwest::Response::error_for_status)
            .with_context(|| format!("the daemon did not take {name}'s message"))?;
        let status: Value = answer.json().await.unwrap_or(Value::Null);
        tracing::debug!(%name, %status, "webhook answered");
        customers.push(Customer {
            name,
            text: message,
            expect_answer,
            message_id,
            text_checks: text_checks(rules, message),
        });
    }

    let outcomes = wait_for_outcomes(&daemon.store, &customers).await?;
    let mut report = Report {
        text,
        problems: Vec::new(),
    };
    let mut answered = 0;
    let mut sent = 0;
    for (index, (customer, outcome)) in customers.iter().zip(&outcomes).enumerate() {
        report.customer(index + 1, customer, outcome)?;
        let sent_here = outcome.count(JobStatus::Sent);
        sent += sent_here;
        if sent_here > 0 {
            answered += 1;
        }
    }
    report.echoes(&daemon.store).await?;
    writeln!(
        report.text,
        "{} customers, {answered} answered, {sent} replies sent",
        customers.len()
    )?;
    Ok(report)
}

/// How a text fares against one rule's conditions on the message itself.
struct TextCheck {
    rule_id: String,
    matched: bool,
    /// The first failing condition, or else the text condition that held.
    why: Option<String>,
}

/// Content conditions: those the message alone decides.
const CONTENT_CONDITIONS: [&str; 5] =
    ["on", "text_any", "text_regex", "text_none", "message_types"];

fn text_checks(rules: &Snapshot, text: &str) -> Vec<TextCheck> {
    let input = MatchInput {
        event_type: "MESSAGE_RECEIVED",
        text: Some(text),
        message_type: Some("TEXT"),
        arrived_at: chrono::Utc::now(),
    };
    rules
        .evaluate_all(&input, Some(&SessionFacts::default()))
        .into_iter()
        .map(|evaluation| {
            let content = || {
                evaluation
                    .conditions
                    .iter()
                    .filter(|c| CONTENT_CONDITIONS.contains(&c.condition.as_str()))
            };
            let failed = content().find(|c| !c.result);
            let shown = failed.or_else(|| {
                content().find(|c| matches!(c.condition.as_str(), "text_any" | "text_regex"))
            });
            TextCheck {
                rule_id: evaluation.rule.id.clone(),
                matched: failed.is_none(),
                why: shown.map(|c| format!("{}: {}", c.condition, c.detail)),
            }
        })
        .collect()
}

/// What the daemon made of one customer's message.
struct Outcome {
    /// `None` when the event never reached the inbox.
    event_status: Option<String>,
    decisions: Vec<Decision>,
    jobs: Vec<JobRow>,
}

struct Decision {
    rule_id: String,
    fired: bool,
    reason: String,
    detail: Option<String>,
}

impl Outcome {
    fn count(&self, status: JobStatus) -> usize {
        self.jobs
            .iter()
            .filter(|j| j.status == status.as_str())
            .count()
    }

    fn decided(&self) -> bool {
        matches!(self.event_status.as_deref(), Some("processed" | "ignored"))
    }

    fn jobs_finished(&self) -> bool {
        self.jobs.iter().all(|j| {
            !matches!(
                JobStatus::parse(&j.status),
                Some(JobStatus::Planned | JobStatus::Sending)
            )
        })
    }

    /// Every sent reply has its delivery status back from WTS.
    fn delivered(&self) -> bool {
        self.jobs
            .iter()
            .filter(|j| j.status == JobStatus::Sent.as_str())
            .all(|j| j.wts_status.as_deref() == Some("DELIVERED"))
    }
}

/// Polls until every message is decided, every reply finished and reported delivered,
/// or [`DEADLINE`] passes; returns the last look either way.
async fn wait_for_outcomes(store: &Store, customers: &[Customer]) -> anyhow::Result<Vec<Outcome>> {
    let deadline = tokio::time::Instant::now() + DEADLINE;
    loop {
        let mut outcomes = Vec::new();
        for customer in customers {
            outcomes.push(outcome(store, &customer.message_id).await?);
        }
        let settled = outcomes
            .iter()
            .all(|o| o.decided() && o.jobs_finished() && o.delivered());
        if settled || tokio::time::Instant::now() >= deadline {
            return Ok(outcomes);
        }
        tokio::time::sleep(POLL).await;
    }
}

async fn outcome(store: &Store, message_id: &str) -> anyhow::Result<Outcome> {
    let Some(event) = store
        .find_event_by_dedupe_key(&format!("MESSAGE_RECEIVED:{message_id}"))
        .await?
    else {
        return Ok(Outcome {
            event_status: None,
            decisions: Vec::new(),
            jobs: Vec::new(),
        });
    };
    let rows: Vec<(String, i64, String, Option<String>)> = sqlx::query_as(
        "SELECT rule_id, fired, reason, detail FROM decisions WHERE event_id = $1 ORDER BY id",
    )
    .bind(event.id)
    .fetch_all(store.pool())
    .await?;
    let decisions = rows
        .into_iter()
        .map(|(rule_id, fired, reason, detail)| Decision {
            rule_id,
            fired: fired != 0,
            reason,
            detail,
        })
        .collect();
    let mut jobs = store.jobs_of_event(event.id).await?;
    jobs.sort_by(|a, b| (&a.rule_id, a.step).cmp(&(&b.rule_id, b.step)));
    Ok(Outcome {
        event_status: Some(event.status),
        decisions,
        jobs,
    })
}

/// The printed report, and what did not go as the demo expects.
struct Report {
    text: String,
    problems: Vec<String>,
}

impl Report {
    fn customer(
        &mut self,
        number: usize,
        customer: &Customer,
        outcome: &Outcome,
    ) -> anyhow::Result<()> {
        let out = &mut self.text;
        writeln!(
            out,
            "{number}. {} writes: \"{}\"",
            customer.name, customer.text
        )?;
        let Some(status) = &outcome.event_status else {
            writeln!(out, "   not received\n")?;
            self.problems.push(format!(
                "{}'s message never reached the inbox",
                customer.name
            ));
            return Ok(());
        };
        writeln!(out, "   received: MESSAGE_RECEIVED, {status}")?;
        for check in &customer.text_checks {
            let decision = outcome
                .decisions
                .iter()
                .find(|d| d.rule_id == check.rule_id);
            let line = match (decision, &check.why) {
                (Some(d), Some(why)) if d.fired => format!("fired ({why})"),
                (Some(d), _) => decision_text(d),
                (None, _) if check.matched => "matches, but no decision was recorded".into(),
                (None, Some(why)) => format!("did not fire: no match ({why})"),
                (None, None) => "did not fire: no match".into(),
            };
            writeln!(out, "   rule {:<14} {line}", check.rule_id)?;
        }
        if outcome.jobs.is_empty() {
            writeln!(out, "   no reply")?;
        }
        for job in &outcome.jobs {
            writeln!(out, "   reply {}", job_text(job))?;
        }
        writeln!(out)?;

        let sent = outcome.count(JobStatus::Sent);
        if !outcome.decided() {
            self.problems.push(format!(
                "{}'s message was not decided in time",
                customer.name
            ));
        } else if customer.expect_answer && (sent == 0 || sent < outcome.jobs.len()) {
            self.problems.push(format!(
                "{} was not fully answered ({sent} of {} replies sent)",
                customer.name,
                outcome.jobs.len()
            ));
        } else if !customer.expect_answer && !outcome.jobs.is_empty() {
            self.problems.push(format!(
                "{} got a reply the example rules do not give",
                customer.name
            ));
        }
        Ok(())
    }

    /// The webhooks WTS sent back about wtsbot's own replies.
    async fn echoes(&mut self, store: &Store) -> anyhow::Result<()> {
        let rows: Vec<(String, String, i64)> = sqlx::query_as(
            "SELECT event_type, status, COUNT(*) FROM events \
             WHERE event_type IN ('MESSAGE_SENT', 'MESSAGE_UPDATED') \
             GROUP BY event_type, status ORDER BY event_type, status",
        )
        .fetch_all(store.pool())
        .await?;
        if rows.is_empty() {
            return Ok(());
        }
        writeln!(self.text, "Echoes of the replies, from WTS:")?;
        for (event_type, status, count) in rows {
            let why = match event_type.as_str() {
                "MESSAGE_SENT" => "wtsbot never answers its own messages",
                _ => "delivery statuses of the replies",
            };
            writeln!(self.text, "   {count} {event_type}, {status} ({why})")?;
        }
        writeln!(self.text)?;
        Ok(())
    }

    fn verdict(&self) -> anyhow::Result<()> {
        if self.problems.is_empty() {
            return Ok(());
        }
        anyhow::bail!(
            "the demo did not go as expected: {}",
            self.problems.join("; ")
        )
    }
}

fn decision_text(decision: &Decision) -> String {
    if decision.fired {
        return "fired".into();
    }
    let reason = decision.reason.replace('_', " ");
    match decision.detail.as_deref().and_then(first_failed_condition) {
        Some(why) => format!("did not fire: {reason} ({why})"),
        None => format!("did not fire: {reason}"),
    }
}

/// `text_any: no entry matched` from a decision's detail.
fn first_failed_condition(detail: &str) -> Option<String> {
    let detail: Value = serde_json::from_str(detail).ok()?;
    let failed = detail.get("failed")?.as_array()?.first()?;
    Some(format!(
        "{}: {}",
        failed.get("condition")?.as_str()?,
        failed.get("detail")?.as_str()?
    ))
}

fn job_text(job: &JobRow) -> String {
    let content = match job.kind.as_str() {
        "text" => format!("text \"{}\"", job.payload),
        "file" => format!("file {}", job.payload),
        _ => format!("file {}", job.payload),
    };
    let mut line = format!("{}#{} {content}: {}", job.rule_id, job.step + 1, job.status);
    if let Some(id) = &job.wts_message_id {
        let _ = write!(line, ", WTS message {id}");
    }
    if let Some(status) = &job.wts_status {
        let _ = write!(line, ", {status}");
    }
    if let Some(error) = &job.last_error {
        let _ = write!(line, " ({error})");
    }
    line
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_rule_that_did_not_fire_says_which_condition_failed() {
        let decision = Decision {
            rule_id: "manual".into(),
            fired: false,
            reason: "no_match".into(),
            detail: Some(
                r#"{"failed":[{"condition":"text_any","detail":"no entry matched"}]}"#.into(),
            ),
        };
        assert_eq!(
            decision_text(&decision),
            "did not fire: no match (text_any: no entry matched)"
        );
        let cooling = Decision {
            detail: Some(r#"{"scope":"session:s"}"#.into()),
            reason: "cooldown".into(),
            ..decision
        };
        assert_eq!(decision_text(&cooling), "did not fire: cooldown");
    }

    #[test]
    fn the_example_rules_answer_two_of_the_three_customers() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("rules");
        let snapshot = enabled_rules(&dir).expect("the example rules load");
        for (name, text, expect_answer) in CUSTOMERS {
            let checks = text_checks(&snapshot, text);
            assert_eq!(checks.len(), snapshot.len());
            let matched = checks.iter().any(|c| c.matched);
            assert_eq!(matched, expect_answer, "{name}: {text}");
            assert!(
                checks.iter().all(|c| c.why.is_some()),
                "{name}: every rule says why"
            );
        }
    }
}
