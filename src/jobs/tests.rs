//! The dispatcher and the senders together, against a SQLite store and the in-process
//! simulator, with a manual clock: every step drained by `run_once`.

use std::sync::Arc;
use std::time::Duration;

use secrecy::SecretString;
use serde_json::json;

use super::*;
use crate::rules::{Rule, RuleEngine, Snapshot};
use crate::sim::{Fault, FaultKind, SimAgent, SimConfig, SimSession, WtsSim};
use crate::store::Store;
use crate::store::inbox::{EventStatus, NewEvent};
use crate::store::jobs::JobRow;
use crate::store::testing::sqlite_store;
use crate::wts::{Timeouts, Unpaced, WtsClient};

const MANUAL: &str = r#"
id = "manual"
[when]
text_any = ["manual", "instruções de instalação"]
[[reply]]
text = "Olá {{contact.name | \"cliente\"}}, segue o manual:"
[[reply]]
file = "files/manual.pdf"
[[reply]]
file_url = "https://cdn.example.com/step1.png"
"#;

fn rule(toml_text: &str) -> Rule {
    toml::from_str(toml_text).unwrap_or_else(|e| panic!("{e}"))
}

struct Harness {
    _dir: tempfile::TempDir,
    store: Store,
    sim: WtsSim,
    clock: ManualClock,
    dispatcher: Dispatcher,
    sender: Sender,
}

struct Options {
    rules: Vec<Rule>,
    dry_run: bool,
    cap: u32,
    max_reply_age: Duration,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            rules: vec![rule(MANUAL)],
            dry_run: false,
            cap: 5,
            max_reply_age: Duration::from_secs(15 * 60),
        }
    }
}

const SCHEDULE: [Duration; 2] = [Duration::from_secs(1), Duration::from_secs(5)];

async fn harness(options: Options) -> Harness {
    crate::telemetry::init_for_tests();
    let (dir, store) = sqlite_store().await;
    let rules_dir = dir.path().join("rules");
    std::fs::create_dir_all(rules_dir.join("files")).unwrap();
    std::fs::write(rules_dir.join("files/manual.pdf"), b"%PDF-1.7\nmanual").unwrap();
    let sim = WtsSim::start(SimConfig {
        delivery_delay: None,
        ..SimConfig::default()
    })
    .await
    .unwrap();
    let client = WtsClient::new(
        &sim.base_url(),
        SecretString::from(sim.token()),
        Timeouts {
            connect: Duration::from_secs(2),
            request: Duration::from_secs(5),
        },
        Arc::new(Unpaced),
    )
    .unwrap();
    let wts = Arc::new(client);
    let clock = ManualClock::starting_at(crate::store::now_ms());
    let engine = Arc::new(RuleEngine::new(Snapshot::compile(options.rules).unwrap()));
    let jobs = JobSignal::default();
    let dispatch_settings = DispatchSettings {
        direction: "FROM_HUB".into(),
        limits: plan::PlanLimits {
            session_reply_cap: options.cap,
            session_reply_window: Duration::from_secs(600),
        },
        session_cache_ttl: Duration::from_secs(300),
        retry_schedule: SCHEDULE.to_vec(),
        lease: Duration::from_secs(60),
    };
    let dispatcher = Dispatcher::new(
        store.clone(),
        engine,
        (!options.dry_run).then(|| wts.clone()),
        dispatch_settings,
        Clock::Manual(clock.clone()),
        jobs.clone(),
    );
    let sender = Sender::new(
        store.clone(),
        wts,
        SenderSettings {
            lease: Duration::from_secs(60),
            max_reply_age: options.max_reply_age,
            retry_schedule: SCHEDULE.to_vec(),
            rules_dir,
            inbound_direction: "FROM_HUB".into(),
        },
        Clock::Manual(clock.clone()),
        jobs,
    );
    Harness {
        _dir: dir,
        store,
        sim,
        clock,
        dispatcher,
        sender,
    }
}

impl Harness {
    /// Stores an event as ingress would, arriving now (by the manual clock).
    async fn receive(&self, body: serde_json::Value) -> i64 {
        let content = &body["content"];
        let event_type = body["eventType"].as_str().unwrap().to_string();
        let id = content["id"].as_str().map(str::to_string);
        let session_id = if event_type.starts_with("SESSION_") {
            id.clone()
        } else {
            content["sessionId"].as_str().map(str::to_string)
        };
        let event = NewEvent {
            dedupe_key: format!("{event_type}:{}", id.clone().unwrap_or_default()),
            event_type,
            session_id,
            content_id: id,
            body: body.to_string(),
            received_at: self.clock.now_ms(),
            status: EventStatus::Pending,
        };
        match self.store.insert_events(&[event]).await.unwrap()[0] {
            crate::store::inbox::InsertOutcome::Inserted { id } => id,
            other => panic!("{other:?}"),
        }
    }

    async fn message(&self, session_id: &str, text: &str) -> i64 {
        self.receive(crate::sim::customers::message_received(session_id, text))
            .await
    }

    async fn dispatch_all(&self) {
        while self.dispatcher.run_once().await.unwrap() == Step::Processed {}
    }

    async fn send_all(&self) {
        while self.sender.run_once().await.unwrap() == Step::Processed {}
    }

    async fn drain(&self) {
        self.dispatch_all().await;
        self.send_all().await;
    }

    async fn jobs(&self, event_id: i64) -> Vec<JobRow> {
        self.store.jobs_of_event(event_id).await.unwrap()
    }

    async fn statuses(&self, event_id: i64) -> Vec<String> {
        self.jobs(event_id)
            .await
            .into_iter()
            .map(|j| j.status)
            .collect()
    }

    async fn decisions(&self, event_id: i64) -> Vec<(String, String, Option<String>)> {
        sqlx::query_as(
            "SELECT rule_id, reason, detail FROM decisions WHERE event_id = $1 ORDER BY id",
        )
        .bind(event_id)
        .fetch_all(self.store.pool())
        .await
        .unwrap()
    }

    fn uploads(&self) -> usize {
        self.sim
            .requests()
            .iter()
            .filter(|r| r.method == "POST" && r.path == "/core/v2/file")
            .count()
    }
}

#[tokio::test]
async fn a_matching_message_gets_its_steps_in_order_and_the_file_is_uploaded_once() {
    let h = harness(Options::default()).await;
    let maria = h
        .sim
        .add_session(SimSession::new().with_contact_name("Maria"));
    let other = h.sim.add_session(SimSession::new());
    let first = h.message(&maria, "Pode me mandar o MANUAL?").await;
    let second = h.message(&other, "instrucoes de instalacao").await;
    h.drain().await;

    let sent = h.sim.messages(&maria);
    assert_eq!(sent.len(), 3, "{sent:?}");
    assert_eq!(sent[0].text.as_deref(), Some("Olá Maria, segue o manual:"));
    assert!(sent[1].file_id.is_some());
    assert_eq!(
        sent[2].file_url.as_deref(),
        Some("https://cdn.example.com/step1.png")
    );
    let again = h.sim.messages(&other);
    assert_eq!(again.len(), 3);
    assert_eq!(again[1].file_id, sent[1].file_id, "the cached fileId");
    assert_eq!(h.uploads(), 1);
    for event in [first, second] {
        let jobs = h.jobs(event).await;
        assert!(jobs.iter().all(|j| j.status == "sent"), "{jobs:?}");
        assert!(jobs.iter().all(|j| j.wts_message_id.is_some()));
        assert_eq!(h.decisions(event).await[0].1, "fired");
    }
}

#[tokio::test]
async fn no_match_agent_and_loop_guard_are_recorded_with_their_reason() {
    let h = harness(Options::default()).await;
    let plain = h.sim.add_session(SimSession::new());
    let held = h
        .sim
        .add_session(SimSession::new().with_agent(SimAgent::named("Ana")));
    let nothing = h.message(&plain, "bom dia").await;
    let agent = h.message(&held, "manual").await;
    let mut echo = crate::sim::customers::message_received(&plain, "manual");
    echo["content"]["origin"] = json!("API");
    let from_api = h.receive(echo).await;
    h.drain().await;

    let decision = &h.decisions(nothing).await[0];
    assert_eq!(decision.1, "no_match");
    assert!(decision.2.as_deref().unwrap().contains("text_any"));
    let decision = &h.decisions(agent).await[0];
    assert_eq!(decision.1, "agent");
    assert!(
        decision.2.as_deref().unwrap().contains("Ana"),
        "{decision:?}"
    );
    assert_eq!(h.decisions(from_api).await[0].1, "loop_guard");
    assert!(h.sim.all_messages().is_empty());
}

#[tokio::test]
async fn cooldown_and_cap_follow_the_arrival_times() {
    let cooled = rule(
        "id = \"cooled\"\ncooldown = \"1h\"\n[when]\nagent = \"any\"\ntext_any = [\"preço\"]\n[[reply]]\ntext = \"R$ 10\"",
    );
    let h = harness(Options {
        rules: vec![cooled, rule(MANUAL)],
        cap: 2,
        ..Options::default()
    })
    .await;
    let session = h.sim.add_session(SimSession::new());
    let first = h.message(&session, "qual o preço?").await;
    h.clock.advance(Duration::from_secs(60));
    let cooling = h.message(&session, "e o preço?").await;
    h.clock.advance(Duration::from_secs(60));
    let second_fired = h.message(&session, "o manual").await;
    h.clock.advance(Duration::from_secs(60));
    let capped = h.message(&session, "o manual de novo").await;
    h.drain().await;
    h.clock.advance(Duration::from_secs(3600));
    let after = h.message(&session, "preço de novo").await;
    h.drain().await;

    assert_eq!(h.decisions(first).await[0].1, "fired");
    let cooling = h.decisions(cooling).await;
    assert_eq!(cooling[0].1, "cooldown", "{cooling:?}");
    assert_eq!(h.decisions(second_fired).await[1].1, "fired");
    let capped = h.decisions(capped).await;
    assert_eq!(capped[1].1, "cap", "{capped:?}");
    assert_eq!(
        h.decisions(after).await[0].1,
        "fired",
        "the window and the cooldown passed"
    );
    assert_eq!(h.sim.messages(&session).len(), 1 + 3 + 1);
}

#[tokio::test]
async fn a_rule_with_stop_holds_back_the_later_rules() {
    let first = rule(
        "id = \"a\"\npriority = 1\nstop = true\n[when]\nagent = \"any\"\ntext_any = [\"oi\"]\n[[reply]]\ntext = \"a\"",
    );
    let second =
        rule("id = \"b\"\n[when]\nagent = \"any\"\ntext_any = [\"oi\"]\n[[reply]]\ntext = \"b\"");
    let h = harness(Options {
        rules: vec![second, first],
        ..Options::default()
    })
    .await;
    let session = h.sim.add_session(SimSession::new());
    let event = h.message(&session, "oi").await;
    h.drain().await;
    let decisions = h.decisions(event).await;
    assert_eq!(decisions[0].0, "a");
    assert_eq!(decisions[0].1, "fired");
    assert_eq!(decisions[1].1, "stopped");
    assert_eq!(h.sim.messages(&session).len(), 1);
}

#[tokio::test]
async fn server_errors_are_retried_on_the_schedule_then_sent() {
    let h = harness(Options::default()).await;
    let session = h.sim.add_session(SimSession::new());
    h.sim.push_fault(
        Fault::new(FaultKind::ServerError { status: 503 })
            .on("POST", "/chat/v1/session/")
            .times(1),
    );
    let event = h.message(&session, "manual").await;
    h.drain().await;
    let jobs = h.jobs(event).await;
    assert_eq!(jobs[0].status, "planned");
    assert_eq!(jobs[0].attempts, 1);
    assert!(jobs[0].last_error.as_deref().unwrap().contains("503"));
    assert!(h.sim.messages(&session).is_empty(), "later steps wait");

    h.clock.advance(Duration::from_millis(700));
    assert_eq!(
        h.sender.run_once().await.unwrap(),
        Step::Idle,
        "not due yet"
    );
    h.clock.advance(Duration::from_millis(600));
    h.send_all().await;
    assert_eq!(h.statuses(event).await, ["sent", "sent", "sent"]);
    assert_eq!(h.sim.messages(&session).len(), 3);
}

#[tokio::test]
async fn retry_after_is_honoured_when_longer_than_the_schedule() {
    let h = harness(Options::default()).await;
    let session = h.sim.add_session(SimSession::new());
    h.sim.push_fault(
        Fault::new(FaultKind::TooManyRequests {
            retry_after_secs: 30,
        })
        .on("POST", "/chat/v1/session/"),
    );
    let event = h.message(&session, "manual").await;
    h.drain().await;
    let job = &h.jobs(event).await[0];
    let wait = job.next_attempt_at.unwrap() - h.clock.now_ms();
    assert_eq!(wait, 30_000);
    h.clock.advance(Duration::from_secs(29));
    assert_eq!(h.sender.run_once().await.unwrap(), Step::Idle);
    h.clock.advance(Duration::from_secs(1));
    h.send_all().await;
    assert_eq!(h.statuses(event).await, ["sent", "sent", "sent"]);
}

#[tokio::test]
async fn retries_end_dead_with_the_last_error_and_later_steps_skipped() {
    let h = harness(Options::default()).await;
    let session = h.sim.add_session(SimSession::new());
    h.sim.push_fault(
        Fault::new(FaultKind::ServerError { status: 502 })
            .on("POST", "/chat/v1/session/")
            .times(10),
    );
    let event = h.message(&session, "manual").await;
    h.dispatch_all().await;
    for _ in 0..3 {
        h.send_all().await;
        h.clock.advance(Duration::from_secs(10));
    }
    let jobs = h.jobs(event).await;
    assert_eq!(jobs[0].status, "dead");
    assert_eq!(jobs[0].attempts, 3);
    let error: serde_json::Value =
        serde_json::from_str(jobs[0].last_error.as_deref().unwrap()).unwrap();
    assert_eq!(error["status"], 502);
    assert_eq!(
        h.statuses(event).await[1..],
        ["skipped".to_string(), "skipped".to_string()]
    );
}

#[tokio::test]
async fn a_permanent_refusal_fails_with_the_wts_key_and_skips_later_steps() {
    let h = harness(Options::default()).await;
    let session = h.sim.add_session(SimSession::new());
    h.sim.push_fault(
        Fault::new(FaultKind::FormError {
            text: "Contato não encontrado".into(),
        })
        .on("POST", "/chat/v1/session/"),
    );
    let event = h.message(&session, "manual").await;
    h.drain().await;
    let jobs = h.jobs(event).await;
    assert_eq!(jobs[0].status, "failed");
    let error: serde_json::Value =
        serde_json::from_str(jobs[0].last_error.as_deref().unwrap()).unwrap();
    assert_eq!(error["key"], "FORM_ERROR");
    assert_eq!(error["text"], "Contato não encontrado");
    assert_eq!(jobs[1].status, "skipped");
    assert_eq!(jobs[2].status, "skipped");
}

#[tokio::test]
async fn a_failed_status_ends_the_step_as_failed() {
    let h = harness(Options::default()).await;
    let session = h
        .sim
        .add_session(SimSession::new().with_channel_failure("window expired"));
    let event = h.message(&session, "manual").await;
    h.drain().await;
    let jobs = h.jobs(event).await;
    assert_eq!(jobs[0].status, "failed");
    assert!(
        jobs[0]
            .last_error
            .as_deref()
            .unwrap()
            .contains("window expired")
    );
    assert_eq!(jobs[1].status, "skipped");
}

#[tokio::test]
async fn steps_not_sent_within_the_max_reply_age_expire() {
    let h = harness(Options {
        max_reply_age: Duration::from_secs(60),
        ..Options::default()
    })
    .await;
    let session = h.sim.add_session(SimSession::new());
    let event = h.message(&session, "manual").await;
    h.dispatch_all().await;
    h.clock.advance(Duration::from_secs(61));
    h.send_all().await;
    assert_eq!(h.statuses(event).await, ["expired", "skipped", "skipped"]);
    assert!(h.sim.messages(&session).is_empty());
}

#[tokio::test]
async fn a_send_whose_answer_was_lost_is_found_and_not_sent_twice() {
    let h = harness(Options::default()).await;
    let session = h.sim.add_session(SimSession::new());
    h.sim
        .push_fault(Fault::new(FaultKind::DropAfterProcessing).on("POST", "/chat/v1/session/"));
    let event = h.message(&session, "manual").await;
    h.drain().await;
    let jobs = h.jobs(event).await;
    assert_eq!(jobs[0].status, "planned", "{jobs:?}");
    h.clock.advance(Duration::from_secs(2));
    h.send_all().await;
    let sent = h.sim.messages(&session);
    assert_eq!(sent.len(), 3, "{sent:?}");
    let jobs = h.jobs(event).await;
    assert_eq!(jobs[0].status, "sent");
    assert_eq!(jobs[0].wts_message_id.as_deref(), Some(sent[0].id.as_str()));
}

#[tokio::test]
async fn a_job_whose_worker_died_mid_send_is_reconciled_after_its_lease() {
    let h = harness(Options::default()).await;
    let session = h.sim.add_session(SimSession::new());
    let event = h.message(&session, "manual").await;
    h.dispatch_all().await;
    // A worker leases the first step, sends it, and dies before recording anything.
    let owner = "dead-worker";
    let claimed = h
        .store
        .claim_job(owner, h.clock.now_ms(), 60_000)
        .await
        .unwrap()
        .unwrap();
    let client = WtsClient::new(
        &h.sim.base_url(),
        SecretString::from(h.sim.token()),
        Timeouts {
            connect: Duration::from_secs(2),
            request: Duration::from_secs(5),
        },
        Arc::new(Unpaced),
    )
    .unwrap();
    client
        .send_message(
            &session,
            &crate::wts::SendBody::text(&claimed.job.payload),
            false,
        )
        .await
        .unwrap();
    assert_eq!(h.sender.run_once().await.unwrap(), Step::Idle, "leased");
    h.clock.advance(Duration::from_secs(61));
    h.send_all().await;
    assert_eq!(
        h.sim.messages(&session).len(),
        3,
        "the text was not sent again"
    );
    assert_eq!(h.statuses(event).await, ["sent", "sent", "sent"]);
}

#[tokio::test]
async fn without_a_token_replies_are_recorded_as_dry_run() {
    let h = harness(Options {
        dry_run: true,
        ..Options::default()
    })
    .await;
    let session = h.sim.add_session(SimSession::new());
    let event = h.message(&session, "manual").await;
    h.drain().await;
    assert_eq!(h.statuses(event).await, ["dry_run", "dry_run", "dry_run"]);
    assert_eq!(
        h.jobs(event).await[0].payload,
        "Olá cliente, segue o manual:"
    );
    assert!(h.sim.requests().is_empty(), "no WTS call at all");
}

#[tokio::test]
async fn a_failed_session_lookup_defers_the_event_and_never_answers_blind() {
    let h = harness(Options::default()).await;
    let session = h.sim.add_session(SimSession::new());
    h.sim.push_fault(
        Fault::new(FaultKind::ServerError { status: 500 }).on("GET", "/chat/v2/session/"),
    );
    let event = h.message(&session, "manual").await;
    h.drain().await;
    assert!(h.jobs(event).await.is_empty());
    let stored = h.store.find_event(event).await.unwrap().unwrap();
    assert_eq!(stored.status, "pending");
    assert_eq!(stored.attempts, 1);
    h.clock.advance(Duration::from_secs(2));
    h.drain().await;
    assert_eq!(h.statuses(event).await, ["sent", "sent", "sent"]);
}

#[tokio::test]
async fn events_of_one_session_are_decided_in_order_one_at_a_time() {
    let h = harness(Options::default()).await;
    let first = h.message("s-1", "um").await;
    let second = h.message("s-1", "dois").await;
    let other = h.message("s-2", "três").await;
    let now = h.clock.now_ms();
    let a = h
        .store
        .claim_event("a", now, 60_000)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(a.id, first);
    let b = h
        .store
        .claim_event("b", now, 60_000)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(b.id, other, "s-1's second event waits for its first");
    assert!(
        h.store
            .claim_event("c", now, 60_000)
            .await
            .unwrap()
            .is_none()
    );
    let later = h
        .store
        .claim_event("c", now + 60_000, 60_000)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(later.id, first, "an expired lease is taken over");
    let _ = second;
}

#[tokio::test]
async fn message_updated_for_a_sent_reply_updates_its_delivery_status() {
    let h = harness(Options::default()).await;
    let session = h.sim.add_session(SimSession::new());
    let event = h.message(&session, "manual").await;
    h.drain().await;
    let job = h.jobs(event).await.remove(0);
    let message_id = job.wts_message_id.clone().unwrap();
    let update = json!({
        "eventType": "MESSAGE_UPDATED",
        "content": {"id": message_id, "sessionId": session, "status": "READ",
                    "direction": "TO_HUB", "origin": "API", "updatedAt": "2026-01-01T00:00:00Z"}
    });
    h.receive(update).await;
    h.drain().await;
    let job = h.store.find_job(job.id).await.unwrap().unwrap();
    assert_eq!(job.wts_status.as_deref(), Some("READ"));
}
