//! Operations endpoints on both backends: `/readyz`, `/metrics`, and `wtsbot healthcheck`.

use std::process::Command;
use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{Value, json};
use wtsbot::sim::SimSession;

use crate::helpers::{Backend, TestAppBuilder, eventually, spawn_app, start_sim};

async fn readyz_answers_ready(backend: Backend) {
    let app = spawn_app(backend).await;
    let response = app.get("/readyz").await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(
        response.json::<Value>().await.unwrap(),
        json!({"status": "ready"})
    );
}

async fn readyz_fails_when_the_database_is_gone(backend: Backend) {
    let app = spawn_app(backend).await;
    app.take_database_down().await;
    let response = app.get("/readyz").await;
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["code"], "unavailable");
    assert_eq!(
        app.get("/healthz").await.status(),
        StatusCode::OK,
        "the process itself is alive"
    );
}

async fn readyz_fails_when_a_migration_is_missing(backend: Backend) {
    let app = spawn_app(backend).await;
    let latest: i64 = sqlx::query_scalar("SELECT MAX(version) FROM _sqlx_migrations")
        .fetch_one(app.store.pool())
        .await
        .unwrap();
    sqlx::query(&format!(
        "DELETE FROM _sqlx_migrations WHERE version = {latest}"
    ))
    .execute(app.store.pool())
    .await
    .unwrap();
    let response = app.get("/readyz").await;
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
}

/// The value of one sample line of the text format, 0 when absent.
fn sample(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|line| line.strip_prefix(series)?.strip_prefix(' '))
        .map_or(0.0, |v| v.trim().parse().expect("a number"))
}

async fn scrape(app: &crate::helpers::TestApp) -> String {
    let response = app.get("/metrics").await;
    assert_eq!(response.status(), StatusCode::OK);
    let content_type = response.headers()["content-type"]
        .to_str()
        .unwrap()
        .to_string();
    assert!(content_type.starts_with("text/plain"), "{content_type}");
    response.text().await.unwrap()
}

async fn metrics_move_as_webhooks_arrive(backend: Backend) {
    let app = spawn_app(backend).await;
    // Unknown event types share the label `unknown`; a fresh type per run keeps the
    // events new. Other tests may move the same series, never down: deltas are minimums.
    let event_type = format!("OPS_TEST_{}", uuid::Uuid::new_v4().simple());
    let ignored = "wtsbot_webhooks_total{event_type=\"unknown\",outcome=\"ignored\"}";
    let duplicates = "wtsbot_webhooks_total{event_type=\"unknown\",outcome=\"duplicate\"}";
    let before = scrape(&app).await;
    for id in ["a", "b"] {
        let body = json!({"eventType": event_type, "content": {"id": id}});
        assert_eq!(app.post_webhook(&body).await.status(), StatusCode::OK);
    }
    let duplicate = json!({"eventType": event_type, "content": {"id": "a"}});
    app.post_webhook(&duplicate).await;
    let after = scrape(&app).await;
    assert!(
        sample(&after, ignored) >= sample(&before, ignored) + 2.0,
        "{after}"
    );
    assert!(sample(&after, duplicates) >= sample(&before, duplicates) + 1.0);
    for gauge in [
        "wtsbot_queue_depth",
        "wtsbot_queue_oldest_job_age_seconds",
        "wtsbot_rules_loaded",
    ] {
        assert!(after.contains(&format!("# TYPE {gauge} gauge")), "{gauge}");
    }
}

async fn metrics_move_as_rules_fire_and_replies_are_sent(backend: Backend) {
    let sim = start_sim().await;
    // A rule id of this test alone, so its decision counter is this test's.
    let rule_id = format!("ops-{}", &uuid::Uuid::new_v4().simple().to_string()[..12]);
    let rule = format!(
        "id = \"{rule_id}\"\n[when]\ntext_any = [\"horário\"]\n[[reply]]\ntext = \"Das 8h às 18h.\"\n"
    );
    let app = TestAppBuilder::new(backend)
        .sim(&sim)
        .rules_file("hours.toml", rule)
        .spawn()
        .await;
    let before = scrape(&app).await;
    let sent = "wtsbot_sends_total{outcome=\"sent\"}";
    let fired = format!("wtsbot_rule_decisions_total{{decision=\"fired\",rule=\"{rule_id}\"}}");
    assert_eq!(sample(&before, &fired), 0.0);
    let latency = "wtsbot_wts_request_duration_seconds_count{endpoint=\"POST /chat/v1/session/{id}/message\"}";

    let session = sim.add_session(SimSession::new());
    let body = wtsbot::sim::customers::message_received(&session, "Qual o horário?");
    assert_eq!(app.post_webhook(&body).await.status(), StatusCode::OK);
    eventually("the reply is sent", Duration::from_secs(10), || async {
        (sim.messages(&session).len() == 1).then_some(())
    })
    .await;
    let after = eventually("the counters move", Duration::from_secs(5), || async {
        let text = scrape(&app).await;
        (sample(&text, &fired) == 1.0 && sample(&text, sent) > sample(&before, sent))
            .then_some(text)
    })
    .await;
    assert!(
        sample(&after, latency) > sample(&before, latency),
        "{after}"
    );
    assert!(sample(&after, "wtsbot_rules_loaded") >= 1.0);
}

crate::on_both_backends!(
    readyz_answers_ready,
    readyz_fails_when_the_database_is_gone,
    readyz_fails_when_a_migration_is_missing,
    metrics_move_as_webhooks_arrive,
    metrics_move_as_rules_fire_and_replies_are_sent,
);

async fn healthcheck(args: &[&str]) -> std::process::Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_wtsbot"));
    for (name, _) in std::env::vars().filter(|(name, _)| name.starts_with("WTSBOT__")) {
        command.env_remove(name);
    }
    command.arg("healthcheck").args(args);
    tokio::task::spawn_blocking(move || command.output().expect("wtsbot runs"))
        .await
        .unwrap()
}

#[tokio::test]
async fn healthcheck_exits_zero_when_ready_and_one_when_not() {
    let app = spawn_app(Backend::Sqlite).await;
    let ready = healthcheck(&["--url", &app.address]).await;
    assert!(ready.status.success(), "{ready:?}");

    app.take_database_down().await;
    let down = healthcheck(&["--url", &app.address]).await;
    assert_eq!(down.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&down.stderr);
    assert!(stderr.contains("/readyz answered 503"), "{stderr}");

    let nobody = healthcheck(&["--url", "http://127.0.0.1:9"]).await;
    assert_eq!(nobody.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&nobody.stderr);
    assert!(stderr.contains("does not answer"), "{stderr}");
}
