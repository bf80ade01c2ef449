//! The core path end to end: webhooks into the real app, replies out to the in-process
//! simulator, on SQLite and PostgreSQL.

use std::time::Duration;

use serde_json::{Value, json};
use wtsbot::sim::customers::message_received;
use wtsbot::sim::{Fault, FaultKind, SimMessage, SimSession, WtsSim};
use wtsbot::store::jobs::JobRow;

use crate::helpers::{Backend, TestApp, TestAppBuilder, eventually, start_sim};
use crate::on_both_backends;

const WAIT: Duration = Duration::from_secs(10);
const PDF: &[u8] = b"%PDF-1.7\nwtsbot installation manual";

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

/// The app with the manual rule and its PDF, talking to `sim`.
fn builder(backend: Backend, sim: &WtsSim) -> TestAppBuilder {
    TestAppBuilder::new(backend)
        .sim(sim)
        .rules_file("manual.toml", MANUAL)
        .rules_file("files/manual.pdf", PDF)
}

/// Posts `body` and checks the answer's status field.
async fn post(app: &TestApp, body: &Value, expected: &str) {
    let response = app.post_webhook(body).await;
    assert_eq!(response.status(), 200);
    let answer: Value = response.json().await.unwrap();
    assert_eq!(answer["status"], expected, "{body}");
}

async fn event_id(app: &TestApp, body: &Value) -> i64 {
    let key = format!(
        "{}:{}",
        body["eventType"].as_str().unwrap(),
        body["content"]["id"].as_str().unwrap()
    );
    app.store
        .find_event_by_dedupe_key(&key)
        .await
        .unwrap()
        .expect("the event is stored")
        .id
}

/// The event's jobs once each has reached a final state.
async fn settled_jobs(app: &TestApp, body: &Value) -> Vec<JobRow> {
    let id = event_id(app, body).await;
    eventually("the event's jobs to settle", WAIT, || async {
        let event = app.store.find_event(id).await.unwrap()?;
        let jobs = app.store.jobs_of_event(id).await.unwrap();
        let settled = event.status == "processed"
            && jobs
                .iter()
                .all(|j| !matches!(j.status.as_str(), "planned" | "sending"));
        settled.then_some(jobs)
    })
    .await
}

fn statuses(jobs: &[JobRow]) -> Vec<&str> {
    jobs.iter().map(|j| j.status.as_str()).collect()
}

async fn decisions(app: &TestApp, body: &Value) -> Vec<(String, String, Option<String>)> {
    let id = event_id(app, body).await;
    sqlx::query_as("SELECT rule_id, reason, detail FROM decisions WHERE event_id = $1 ORDER BY id")
        .bind(id)
        .fetch_all(app.store.pool())
        .await
        .unwrap()
}

fn last_error(job: &JobRow) -> Value {
    serde_json::from_str(job.last_error.as_deref().expect("a last error")).unwrap()
}

fn uploads(sim: &WtsSim) -> usize {
    sim.requests()
        .iter()
        .filter(|r| r.method == "POST" && r.path == "/core/v2/file")
        .count()
}

fn texts(messages: &[SimMessage]) -> Vec<Option<&str>> {
    messages.iter().map(|m| m.text.as_deref()).collect()
}

fn send_fault(kind: FaultKind) -> Fault {
    Fault::new(kind).on("POST", "/chat/v1/session/")
}

on_both_backends!(
    a_matching_message_gets_its_replies_in_order_and_the_file_is_uploaded_once,
    accents_and_case_do_not_matter,
    a_message_that_matches_nothing_records_why,
    a_rule_in_cooldown_stays_quiet,
    a_redelivered_webhook_is_answered_once,
    the_bots_own_and_agents_messages_never_trigger,
    the_session_reply_cap_stops_a_loop,
    rate_limited_sends_wait_for_retry_after_then_succeed,
    server_errors_are_retried_then_succeed,
    server_errors_until_the_schedule_ends_leave_the_step_dead,
    a_permanent_refusal_fails_with_the_wts_key_and_skips_later_steps,
    a_failed_status_ends_the_step_as_failed,
    a_step_older_than_max_reply_age_expires_unsent,
    a_dropped_answer_is_reconciled_and_not_sent_twice,
    without_a_token_replies_are_recorded_as_dry_run,
);

async fn a_matching_message_gets_its_replies_in_order_and_the_file_is_uploaded_once(
    backend: Backend,
) {
    let sim = start_sim().await;
    let app = builder(backend, &sim).spawn().await;
    let maria = sim.add_session(SimSession::new().with_contact_name("Maria"));
    let first = message_received(&maria, "Pode me mandar o manual?");
    post(&app, &first, "accepted").await;
    let jobs = settled_jobs(&app, &first).await;
    assert_eq!(statuses(&jobs), ["sent", "sent", "sent"]);

    let sent = sim.messages(&maria);
    assert_eq!(sent.len(), 3, "{sent:?}");
    assert_eq!(sent[0].text.as_deref(), Some("Olá Maria, segue o manual:"));
    let file_id = sent[1].file_id.clone().expect("the manual goes by fileId");
    assert_eq!(
        sent[2].file_url.as_deref(),
        Some("https://cdn.example.com/step1.png")
    );
    assert_eq!(sim.uploads()[0].bytes.as_ref(), PDF);
    for (job, message) in jobs.iter().zip(&sent) {
        assert_eq!(job.wts_message_id.as_deref(), Some(message.id.as_str()));
    }

    // Many more sends of the manual upload nothing more.
    let mut bodies = Vec::new();
    for n in 0..5 {
        let session = sim.add_session(SimSession::new());
        let body = message_received(&session, &format!("manual {n}"));
        post(&app, &body, "accepted").await;
        bodies.push((session, body));
    }
    for (session, body) in &bodies {
        assert_eq!(
            statuses(&settled_jobs(&app, body).await),
            ["sent", "sent", "sent"]
        );
        assert_eq!(sim.messages(session)[1].file_id.as_ref(), Some(&file_id));
    }
    assert_eq!(uploads(&sim), 1);
}

async fn accents_and_case_do_not_matter(backend: Backend) {
    let sim = start_sim().await;
    let app = builder(backend, &sim).spawn().await;
    for text in [
        "INSTRUCOES DE INSTALAÇÃO",
        "Instruções   de instalacao!",
        "MANUAL",
    ] {
        let session = sim.add_session(SimSession::new());
        let body = message_received(&session, text);
        post(&app, &body, "accepted").await;
        assert_eq!(settled_jobs(&app, &body).await.len(), 3, "{text}");
        assert_eq!(sim.messages(&session).len(), 3, "{text}");
    }
}

async fn a_message_that_matches_nothing_records_why(backend: Backend) {
    let sim = start_sim().await;
    let app = builder(backend, &sim).spawn().await;
    let session = sim.add_session(SimSession::new());
    let body = message_received(&session, "manualmente não, obrigado");
    post(&app, &body, "accepted").await;
    assert!(settled_jobs(&app, &body).await.is_empty());
    let decisions = decisions(&app, &body).await;
    assert_eq!(decisions.len(), 1);
    assert_eq!(decisions[0].0, "manual");
    assert_eq!(decisions[0].1, "no_match");
    assert!(decisions[0].2.as_deref().unwrap().contains("text_any"));
    assert!(sim.messages(&session).is_empty());
}

async fn a_rule_in_cooldown_stays_quiet(backend: Backend) {
    let sim = start_sim().await;
    let cooled = MANUAL.replace("id = \"manual\"", "id = \"manual\"\ncooldown = \"24h\"");
    let app = builder(backend, &sim)
        .rules_file("manual.toml", cooled)
        .spawn()
        .await;
    let session = sim.add_session(SimSession::new());
    let first = message_received(&session, "manual");
    post(&app, &first, "accepted").await;
    assert_eq!(settled_jobs(&app, &first).await.len(), 3);
    let again = message_received(&session, "o manual de novo");
    post(&app, &again, "accepted").await;
    assert!(settled_jobs(&app, &again).await.is_empty());
    assert_eq!(decisions(&app, &again).await[0].1, "cooldown");
    let elsewhere = sim.add_session(SimSession::new());
    let other = message_received(&elsewhere, "manual");
    post(&app, &other, "accepted").await;
    assert_eq!(settled_jobs(&app, &other).await.len(), 3, "per session");
    assert_eq!(sim.messages(&session).len(), 3);
}

async fn a_redelivered_webhook_is_answered_once(backend: Backend) {
    let sim = start_sim().await;
    let app = builder(backend, &sim).spawn().await;
    let session = sim.add_session(SimSession::new());
    let body = message_received(&session, "manual");
    post(&app, &body, "accepted").await;
    settled_jobs(&app, &body).await;
    let mut redelivered = body.clone();
    redelivered["content"]["updatedAt"] = json!("2030-01-01T00:00:00.0000000Z");
    post(&app, &redelivered, "duplicate").await;
    post(&app, &body, "duplicate").await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(sim.messages(&session).len(), 3);
}

async fn the_bots_own_and_agents_messages_never_trigger(backend: Backend) {
    let sim = start_sim().await;
    let app = builder(backend, &sim).spawn().await;
    // The simulator echoes every message sent through its API as MESSAGE_SENT to the
    // subscriptions, as WTS does.
    let client = wtsbot::wts::WtsClient::new(
        &sim.base_url(),
        sim.token().into(),
        wtsbot::wts::Timeouts {
            connect: Duration::from_secs(2),
            request: Duration::from_secs(5),
        },
        std::sync::Arc::new(wtsbot::wts::Unpaced),
    )
    .unwrap();
    client
        .create_subscription(&wtsbot::wts::NewSubscription {
            name: "wtsbot".into(),
            url: app.url(&app.webhook_path),
            enabled: true,
            events: vec!["MESSAGE_SENT".into(), "MESSAGE_RECEIVED".into()],
        })
        .await
        .unwrap();
    let session = sim.add_session(SimSession::new());
    let body = message_received(&session, "manual");
    post(&app, &body, "accepted").await;
    settled_jobs(&app, &body).await;
    eventually("three MESSAGE_SENT echoes", WAIT, || async {
        let echoes = sim
            .deliveries()
            .iter()
            .filter(|d| d.event_type == "MESSAGE_SENT" && d.status == Some(200))
            .count();
        (echoes >= 3).then_some(())
    })
    .await;

    let mut outbound = message_received(&session, "manual");
    outbound["content"]["direction"] = json!("TO_HUB");
    post(&app, &outbound, "ignored").await;
    let mut from_api = message_received(&session, "manual");
    from_api["content"]["origin"] = json!("API");
    post(&app, &from_api, "accepted").await;
    let mut from_agent = message_received(&session, "manual");
    from_agent["content"]["userId"] = json!("agent-1");
    post(&app, &from_agent, "accepted").await;
    for body in [&from_api, &from_agent] {
        assert!(settled_jobs(&app, body).await.is_empty());
        assert_eq!(decisions(&app, body).await[0].1, "loop_guard");
    }
    assert_eq!(sim.messages(&session).len(), 3);
}

async fn the_session_reply_cap_stops_a_loop(backend: Backend) {
    let sim = start_sim().await;
    let app = builder(backend, &sim)
        .setting("bot.session_reply_cap", "2")
        .spawn()
        .await;
    let session = sim.add_session(SimSession::new());
    let mut last = Value::Null;
    for n in 0..3 {
        last = message_received(&session, &format!("manual {n}"));
        post(&app, &last, "accepted").await;
        settled_jobs(&app, &last).await;
    }
    assert_eq!(decisions(&app, &last).await[0].1, "cap");
    assert_eq!(sim.messages(&session).len(), 6);
}

async fn rate_limited_sends_wait_for_retry_after_then_succeed(backend: Backend) {
    let sim = start_sim().await;
    let app = builder(backend, &sim).spawn().await;
    let session = sim.add_session(SimSession::new());
    sim.push_fault(send_fault(FaultKind::TooManyRequests {
        retry_after_secs: 1,
    }));
    let body = message_received(&session, "manual");
    post(&app, &body, "accepted").await;
    let jobs = settled_jobs(&app, &body).await;
    assert_eq!(statuses(&jobs), ["sent", "sent", "sent"]);
    assert_eq!(jobs[0].attempts, 1);
    let sends: Vec<_> = sim
        .requests()
        .into_iter()
        .filter(|r| r.method == "POST" && r.path.ends_with("/message"))
        .collect();
    let waited = sends[1].received_at - sends[0].received_at;
    assert!(waited >= Duration::from_millis(990), "{waited:?}");
}

async fn server_errors_are_retried_then_succeed(backend: Backend) {
    let sim = start_sim().await;
    let app = builder(backend, &sim).spawn().await;
    let session = sim.add_session(SimSession::new());
    sim.push_fault(send_fault(FaultKind::ServerError { status: 503 }).times(2));
    let body = message_received(&session, "manual");
    post(&app, &body, "accepted").await;
    let jobs = settled_jobs(&app, &body).await;
    assert_eq!(statuses(&jobs), ["sent", "sent", "sent"]);
    assert_eq!(jobs[0].attempts, 2);
    let contact = sim.session(&session).unwrap().contact.name;
    assert_eq!(
        texts(&sim.messages(&session)),
        [
            Some(format!("Olá {contact}, segue o manual:").as_str()),
            None,
            None
        ]
    );
}

async fn server_errors_until_the_schedule_ends_leave_the_step_dead(backend: Backend) {
    let sim = start_sim().await;
    let app = builder(backend, &sim).spawn().await;
    let session = sim.add_session(SimSession::new());
    sim.push_fault(send_fault(FaultKind::ServerError { status: 500 }).times(4));
    let body = message_received(&session, "manual");
    post(&app, &body, "accepted").await;
    let jobs = settled_jobs(&app, &body).await;
    assert_eq!(statuses(&jobs), ["dead", "skipped", "skipped"]);
    assert_eq!(jobs[0].attempts, 4, "the first try and three retries");
    let error = last_error(&jobs[0]);
    assert_eq!(error["status"], 500);
    assert!(error["text"].is_string());
    assert!(sim.messages(&session).is_empty());
}

async fn a_permanent_refusal_fails_with_the_wts_key_and_skips_later_steps(backend: Backend) {
    let sim = start_sim().await;
    let app = builder(backend, &sim).spawn().await;
    let session = sim.add_session(SimSession::new());
    sim.push_fault(send_fault(FaultKind::FormError {
        text: "Contato não encontrado".into(),
    }));
    let body = message_received(&session, "manual");
    post(&app, &body, "accepted").await;
    let jobs = settled_jobs(&app, &body).await;
    assert_eq!(statuses(&jobs), ["failed", "skipped", "skipped"]);
    let error = last_error(&jobs[0]);
    assert_eq!(error["status"], 400);
    assert_eq!(error["key"], "FORM_ERROR");
    assert_eq!(error["text"], "Contato não encontrado");
}

async fn a_failed_status_ends_the_step_as_failed(backend: Backend) {
    let sim = start_sim().await;
    let app = builder(backend, &sim).spawn().await;
    let session = sim.add_session(SimSession::new().with_channel_failure("window expired"));
    let body = message_received(&session, "manual");
    post(&app, &body, "accepted").await;
    let jobs = settled_jobs(&app, &body).await;
    assert_eq!(statuses(&jobs), ["failed", "skipped", "skipped"]);
    assert_eq!(last_error(&jobs[0])["text"], "window expired");
}

async fn a_step_older_than_max_reply_age_expires_unsent(backend: Backend) {
    let sim = start_sim().await;
    let app = builder(backend, &sim)
        .setting("bot.max_reply_age", "30ms")
        .spawn()
        .await;
    let session = sim.add_session(SimSession::new());
    // The first try fails; the retry comes after the reply's age ran out.
    sim.push_fault(send_fault(FaultKind::ServerError { status: 503 }));
    let body = message_received(&session, "manual");
    post(&app, &body, "accepted").await;
    let jobs = settled_jobs(&app, &body).await;
    assert_eq!(statuses(&jobs), ["expired", "skipped", "skipped"]);
    assert_eq!(last_error(&jobs[0])["key"], "EXPIRED");
    assert!(sim.messages(&session).is_empty());
}

async fn a_dropped_answer_is_reconciled_and_not_sent_twice(backend: Backend) {
    let sim = start_sim().await;
    let app = builder(backend, &sim).spawn().await;
    let session = sim.add_session(SimSession::new());
    sim.push_fault(send_fault(FaultKind::DropAfterProcessing));
    let body = message_received(&session, "manual");
    post(&app, &body, "accepted").await;
    let jobs = settled_jobs(&app, &body).await;
    assert_eq!(statuses(&jobs), ["sent", "sent", "sent"]);
    let sent = sim.messages(&session);
    assert_eq!(sent.len(), 3, "{sent:?}");
    assert_eq!(jobs[0].wts_message_id.as_deref(), Some(sent[0].id.as_str()));
    let listed = sim
        .requests()
        .iter()
        .any(|r| r.method == "GET" && r.path.ends_with("/message"));
    assert!(
        listed,
        "the session's messages were looked at before resending"
    );
}

async fn without_a_token_replies_are_recorded_as_dry_run(backend: Backend) {
    let sim = start_sim().await;
    let app = TestAppBuilder::new(backend)
        .rules_file("manual.toml", MANUAL)
        .rules_file("files/manual.pdf", PDF)
        .spawn()
        .await;
    let body = message_received("s-dry", "manual");
    post(&app, &body, "accepted").await;
    let jobs = settled_jobs(&app, &body).await;
    assert_eq!(statuses(&jobs), ["dry_run", "dry_run", "dry_run"]);
    assert_eq!(jobs[0].payload, "Olá cliente, segue o manual:");
    assert!(sim.requests().is_empty());
}
