//! `POST /webhooks/wts/{token}` on both backends.

use reqwest::StatusCode;
use serde_json::{Value, json};
use wtsbot::metrics::METRICS;

use crate::helpers::{Backend, TestApp, TestAppBuilder, spawn_app};

const CAPTURED: &str = include_str!("../fixtures/wts-message-received-captured.json");

fn message(event_type: &str, id: &str, direction: &str, updated_at: &str) -> Value {
    json!({
        "eventType": event_type,
        "date": "2025-07-27T23:46:00.1260435Z",
        "content": {
            "id": id,
            "sessionId": "session-1",
            "updatedAt": updated_at,
            "type": "TEXT",
            "text": "manual please",
            "direction": direction,
        },
        "changeMetadata": null,
    })
}

fn received(id: &str) -> Value {
    message(
        "MESSAGE_RECEIVED",
        id,
        "FROM_HUB",
        "2025-07-27T23:46:00.1040498Z",
    )
}

async fn status_of(response: reqwest::Response) -> (StatusCode, Value) {
    let status = response.status();
    let body = response.json().await.expect("a JSON body");
    (status, body)
}

async fn assert_ack(app: &TestApp, body: &Value, expected: &str) {
    let (status, answer) = status_of(app.post_webhook(body).await).await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    assert_eq!(answer, json!({"status": expected}));
}

async fn wrong_token_is_404_and_stores_nothing(backend: Backend) {
    let app = spawn_app(backend).await;
    for path in [
        "/webhooks/wts/not-the-token".to_string(),
        format!("{}x", app.webhook_path),
        "/webhooks/wts/".to_string(),
    ] {
        let response = app
            .post_raw(&path, received("m1").to_string(), Some("application/json"))
            .await;
        let (status, body) = status_of(response).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{path}");
        assert_eq!(body["code"], "not_found");
    }
    assert_eq!(app.store.count_events().await.unwrap(), 0);
}

async fn an_oversize_body_is_413(backend: Backend) {
    let app = TestAppBuilder::new(backend)
        .setting("webhook.max_body", "1KiB")
        .spawn()
        .await;
    let mut big = received("m1");
    big["content"]["text"] = Value::String("x".repeat(2048));
    let (status, body) = status_of(app.post_webhook(&big).await).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(body["code"], "payload_too_large");

    // Without a Content-Length the cap holds while reading.
    let chunks = vec![Ok::<_, std::io::Error>(big.to_string().into_bytes())];
    let streamed = reqwest::Body::wrap_stream(futures::stream::iter(chunks));
    let (status, _) = status_of(app.post_webhook_raw(streamed, None).await).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);

    assert_eq!(app.store.count_events().await.unwrap(), 0);
    // A body under the cap still goes in.
    assert_ack(&app, &received("m2"), "accepted").await;
}

async fn malformed_bodies_are_400_with_a_clear_message(backend: Backend) {
    let app = spawn_app(backend).await;
    let cases = [
        ("{\"eventType\": ", "not valid JSON"),
        ("", "not valid JSON"),
        (
            "[{\"eventType\":\"MESSAGE_RECEIVED\"}]",
            "must be a JSON object, not an array",
        ),
        (
            "\"MESSAGE_RECEIVED\"",
            "must be a JSON object, not a string",
        ),
        ("{\"content\":{}}", "no string field `eventType`"),
        ("{\"eventType\":42}", "no string field `eventType`"),
    ];
    for (body, expected) in cases {
        let (status, answer) =
            status_of(app.post_webhook_raw(body, Some("application/json")).await).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body:?}");
        assert_eq!(answer["code"], "bad_request");
        let message = answer["message"].as_str().unwrap();
        assert!(message.contains(expected), "{body:?}: {message}");
    }
    assert_eq!(app.store.count_events().await.unwrap(), 0);
}

async fn an_unknown_event_type_is_stored_and_ignored(backend: Backend) {
    let app = spawn_app(backend).await;
    let before = METRICS
        .webhooks
        .with_label_values(&["unknown", "ignored"])
        .get();
    let event = json!({"eventType": "BRAND_NEW_EVENT", "content": {"id": "x1", "updatedAt": "t1", "odd": [1, {"a": null}]}});
    assert_ack(&app, &event, "ignored").await;
    let stored = app
        .store
        .find_event_by_dedupe_key("BRAND_NEW_EVENT:x1@t1")
        .await
        .unwrap()
        .expect("stored");
    assert_eq!(stored.status, "ignored");
    assert_eq!(stored.event_type, "BRAND_NEW_EVENT");
    assert_eq!(serde_json::from_str::<Value>(&stored.body).unwrap(), event);
    assert_ack(&app, &event, "duplicate").await;
    let after = METRICS
        .webhooks
        .with_label_values(&["unknown", "ignored"])
        .get();
    assert!(after > before);
}

async fn message_sent_is_ignored(backend: Backend) {
    let app = spawn_app(backend).await;
    let sent = message("MESSAGE_SENT", "out-1", "TO_HUB", "t");
    assert_ack(&app, &sent, "ignored").await;
    assert_ack(&app, &sent, "duplicate").await;
    let stored = app
        .store
        .find_event_by_dedupe_key("MESSAGE_SENT:out-1")
        .await
        .unwrap()
        .expect("stored");
    assert_eq!(stored.status, "ignored");
}

async fn an_outbound_message_is_ignored(backend: Backend) {
    let app = spawn_app(backend).await;
    let outbound = message("MESSAGE_RECEIVED", "m-out", "TO_HUB", "t");
    assert_ack(&app, &outbound, "ignored").await;
    let stored = app
        .store
        .find_event_by_dedupe_key("MESSAGE_RECEIVED:m-out")
        .await
        .unwrap()
        .expect("stored");
    assert_eq!(stored.status, "ignored");
}

async fn the_configured_direction_decides_what_is_inbound(backend: Backend) {
    let app = TestAppBuilder::new(backend)
        .setting("bot.direction", "TO_HUB")
        .spawn()
        .await;
    assert_ack(
        &app,
        &message("MESSAGE_RECEIVED", "a", "TO_HUB", "t"),
        "accepted",
    )
    .await;
    assert_ack(
        &app,
        &message("MESSAGE_RECEIVED", "b", "FROM_HUB", "t"),
        "ignored",
    )
    .await;
}

async fn the_captured_message_is_accepted_as_sent(backend: Backend) {
    let app = spawn_app(backend).await;
    let before = METRICS
        .webhooks
        .with_label_values(&["MESSAGE_RECEIVED", "accepted"])
        .get();
    let (status, answer) = status_of(
        app.post_webhook_raw(CAPTURED, Some("application/json"))
            .await,
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(answer, json!({"status": "accepted"}));
    let stored = app
        .store
        .find_event_by_dedupe_key("MESSAGE_RECEIVED:facbd59c-5415-4c1c-a46c-26c4d4576863")
        .await
        .unwrap()
        .expect("stored");
    assert_eq!(stored.body, CAPTURED, "the body is kept byte for byte");
    // The dispatcher may already have taken it.
    assert!(
        ["pending", "processed"].contains(&stored.status.as_str()),
        "{}",
        stored.status
    );
    assert_eq!(
        stored.session_id.as_deref(),
        Some("8917bc7b-ab53-4e1c-940d-1fbd309bdabd")
    );
    assert_eq!(
        stored.content_id.as_deref(),
        Some("facbd59c-5415-4c1c-a46c-26c4d4576863")
    );
    let now = chrono::Utc::now().timestamp_millis();
    assert!(
        (now - stored.received_at).abs() < 60_000,
        "arrival time is ours, not WTS's"
    );
    let after = METRICS
        .webhooks
        .with_label_values(&["MESSAGE_RECEIVED", "accepted"])
        .get();
    assert!(after > before);
}

async fn a_redelivered_message_is_a_duplicate(backend: Backend) {
    let app = spawn_app(backend).await;
    assert_ack(&app, &received("m1"), "accepted").await;
    assert_ack(&app, &received("m1"), "duplicate").await;
    // A new updatedAt does not make a received message new.
    let edited = message("MESSAGE_RECEIVED", "m1", "FROM_HUB", "2025-07-28T00:00:00Z");
    assert_ack(&app, &edited, "duplicate").await;
    assert_ack(&app, &received("m2"), "accepted").await;
    assert_eq!(app.store.count_events().await.unwrap(), 2);
}

async fn a_session_update_with_a_new_updated_at_is_new(backend: Backend) {
    let app = spawn_app(backend).await;
    let update = |updated_at: &str| json!({"eventType": "SESSION_UPDATE", "content": {"id": "s1", "updatedAt": updated_at, "status": "IN_PROGRESS"}});
    assert_ack(&app, &update("2025-07-27T23:46:00Z"), "accepted").await;
    assert_ack(&app, &update("2025-07-27T23:46:00Z"), "duplicate").await;
    assert_ack(&app, &update("2025-07-27T23:47:00Z"), "accepted").await;
    let stored = app
        .store
        .find_event_by_dedupe_key("SESSION_UPDATE:s1@2025-07-27T23:47:00Z")
        .await
        .unwrap()
        .expect("stored");
    assert_eq!(stored.session_id.as_deref(), Some("s1"));
}

async fn the_content_type_is_ignored(backend: Backend) {
    let app = spawn_app(backend).await;
    for (i, content_type) in [
        None,
        Some("text/plain"),
        Some("application/x-www-form-urlencoded"),
        Some("application/json; charset=utf-8"),
    ]
    .into_iter()
    .enumerate()
    {
        let body = received(&format!("m{i}")).to_string();
        let (status, answer) = status_of(app.post_webhook_raw(body, content_type).await).await;
        assert_eq!(status, StatusCode::OK, "{content_type:?}");
        assert_eq!(answer["status"], "accepted");
    }
}

async fn an_unreachable_database_is_503(backend: Backend) {
    let app = spawn_app(backend).await;
    assert_ack(&app, &received("m1"), "accepted").await;
    app.take_database_down().await;
    let (status, body) = status_of(app.post_webhook(&received("m2")).await).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(body["code"], "unavailable");
    assert_eq!(
        body["message"], "service unavailable",
        "5xx bodies are opaque"
    );
}

async fn an_acknowledged_event_is_already_committed(backend: Backend) {
    let app = spawn_app(backend).await;
    let observer = app.open_store().await;
    for i in 0..5 {
        let id = format!("durable-{i}");
        assert_ack(&app, &received(&id), "accepted").await;
        let seen = observer
            .find_event_by_dedupe_key(&format!("MESSAGE_RECEIVED:{id}"))
            .await
            .unwrap();
        assert!(
            seen.is_some(),
            "{id} visible to another connection at the ack"
        );
    }
}

async fn concurrent_deliveries_are_each_stored_once(backend: Backend) {
    let app = spawn_app(backend).await;
    // 40 distinct messages, each delivered three times at once.
    let posts = (0..120).map(|i| {
        let body = received(&format!("c{}", i % 40));
        let app = &app;
        async move { status_of(app.post_webhook(&body).await).await }
    });
    let answers = futures::future::join_all(posts).await;
    let mut accepted = 0;
    for (status, body) in answers {
        assert_eq!(status, StatusCode::OK);
        match body["status"].as_str() {
            Some("accepted") => accepted += 1,
            Some("duplicate") => {}
            other => panic!("unexpected answer {other:?}"),
        }
    }
    assert_eq!(accepted, 40);
    assert_eq!(app.store.count_events().await.unwrap(), 40);
    // Arrival order is id order.
    let ids: Vec<i64> = sqlx::query_scalar("SELECT id FROM events ORDER BY id")
        .fetch_all(app.store.pool())
        .await
        .unwrap();
    assert_eq!(ids.len(), 40);
}

async fn a_configured_token_is_the_path(backend: Backend) {
    let app = TestAppBuilder::new(backend)
        .setting("webhook.token", "configured-token-0123456789")
        .spawn()
        .await;
    assert_eq!(
        app.webhook_path,
        "/webhooks/wts/configured-token-0123456789"
    );
    assert_ack(&app, &received("m1"), "accepted").await;
}

crate::on_both_backends!(
    wrong_token_is_404_and_stores_nothing,
    an_oversize_body_is_413,
    malformed_bodies_are_400_with_a_clear_message,
    an_unknown_event_type_is_stored_and_ignored,
    message_sent_is_ignored,
    an_outbound_message_is_ignored,
    the_configured_direction_decides_what_is_inbound,
    the_captured_message_is_accepted_as_sent,
    a_redelivered_message_is_a_duplicate,
    a_session_update_with_a_new_updated_at_is_new,
    the_content_type_is_ignored,
    an_unreachable_database_is_503,
    an_acknowledged_event_is_already_committed,
    concurrent_deliveries_are_each_stored_once,
    a_configured_token_is_the_path,
);
