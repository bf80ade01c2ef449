//! The application on both backends: health, first-start secrets, restart, stop.

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::{Backend, TestAppBuilder, spawn_app};

fn received(id: &str) -> Value {
    json!({"eventType": "MESSAGE_RECEIVED", "content": {"id": id, "sessionId": "s", "direction": "FROM_HUB"}})
}

async fn healthz_answers_ok(backend: Backend) {
    let app = spawn_app(backend).await;
    let response = app.get("/healthz").await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(
        response.json::<Value>().await.unwrap(),
        json!({"status": "ok"})
    );
    app.store.health_check().await.unwrap();
}

async fn unknown_routes_answer_the_error_envelope(backend: Backend) {
    let app = spawn_app(backend).await;
    let response = app.get("/no/such/route").await;
    assert_eq!(response.status(), StatusCode::NOT_FOUND);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["code"], "not_found");
}

async fn generated_secrets_are_made_once_and_survive_a_restart(backend: Backend) {
    let app = spawn_app(backend).await;
    let path = app.webhook_path.clone();
    let token = path.rsplit('/').next().unwrap().to_string();
    assert_eq!(token.len(), 64, "a long random token");
    let admin_hashes = |store: wtsbot::store::Store| async move {
        sqlx::query_scalar::<_, String>("SELECT token_hash FROM tokens WHERE role = 'admin'")
            .fetch_all(store.pool())
            .await
            .unwrap()
    };
    let hashes = admin_hashes(app.store.clone()).await;
    assert_eq!(hashes.len(), 1);
    assert_eq!(hashes[0].len(), 64, "only a sha256 is kept");
    assert_ne!(hashes[0], token);
    let post = app.post_webhook(&received("m1")).await;
    assert_eq!(post.status(), StatusCode::OK);

    let app = app.restart().await;
    assert_eq!(app.webhook_path, path, "the webhook path is kept");
    assert_eq!(
        admin_hashes(app.store.clone()).await,
        hashes,
        "no second bootstrap token"
    );
    let again: Value = app
        .post_webhook(&received("m1"))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(
        again["status"], "duplicate",
        "the inbox survived the restart"
    );
}

async fn a_configured_admin_token_makes_no_bootstrap_token(backend: Backend) {
    let app = TestAppBuilder::new(backend)
        .setting("admin.token", "configured-admin-0123456789")
        .spawn()
        .await;
    let count: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM tokens")
        .fetch_one(app.store.pool())
        .await
        .unwrap();
    assert_eq!(count, 0);
}

async fn a_graceful_stop_ends_cleanly_and_stops_intake(backend: Backend) {
    let mut app = spawn_app(backend).await;
    let post = app.post_webhook(&received("m1")).await;
    assert_eq!(post.status(), StatusCode::OK);
    app.stop().await.expect("a clean stop");
    let refused = app
        .client
        .post(app.url(&app.webhook_path))
        .body(received("m2").to_string())
        .send()
        .await;
    assert!(refused.is_err(), "no intake after the stop");
    assert_eq!(app.open_store().await.count_events().await.unwrap(), 1);
}

crate::on_both_backends!(
    healthz_answers_ok,
    unknown_routes_answer_the_error_envelope,
    generated_secrets_are_made_once_and_survive_a_restart,
    a_configured_admin_token_makes_no_bootstrap_token,
    a_graceful_stop_ends_cleanly_and_stops_intake,
);
