//! History through the admin API: events with their decisions, deliveries, filters and
//! paging, a dead delivery retried, and pruning after `history.retention`.

use std::time::Duration;

use serde_json::{Value, json};
use wtsbot::sim::customers::message_received;
use wtsbot::sim::{Fault, FaultKind, SimSession};

use crate::admin_client::{ADMIN_TOKEN, AdminClient, admin_app};
use crate::helpers::{Backend, eventually, start_sim};
use crate::on_both_backends;

const WAIT: Duration = Duration::from_secs(10);

fn manual_rule() -> Value {
    json!({
        "id": "manual",
        "when": {"text_any": ["manual"]},
        "reply": [{"text": "Segue o manual"}, {"text": "Qualquer dúvida, estamos aqui"}]
    })
}

on_both_backends!(
    events_and_deliveries_are_listed_filtered_and_paged,
    a_dead_delivery_is_retried_and_sent,
    history_older_than_the_retention_is_pruned,
);

async fn events_and_deliveries_are_listed_filtered_and_paged(backend: Backend) {
    let app = admin_app(backend).spawn().await;
    let admin = AdminClient::new(&app, Some(ADMIN_TOKEN)).await;
    admin.post("/rules", &manual_rule()).await.expect(201);
    for (session, text) in [("s1", "manual"), ("s2", "oi"), ("s1", "outra coisa")] {
        assert_eq!(
            app.post_webhook(&message_received(session, text))
                .await
                .status(),
            200
        );
    }
    let all = eventually("three decided events", WAIT, || async {
        let page = admin.get("/events").await.expect(200);
        let items = page["items"].as_array().unwrap().clone();
        (items.len() == 3 && items.iter().all(|e| e["status"] == "processed")).then_some(items)
    })
    .await;
    // Newest first, each with what the rule decided and why.
    assert_eq!(all[0]["body"]["content"]["text"], "outra coisa");
    let decision = &all[2]["decisions"][0];
    assert_eq!(
        (&decision["rule"], &decision["fired"], &decision["reason"]),
        (&json!("manual"), &json!(true), &json!("fired"))
    );
    assert_eq!(all[1]["decisions"][0]["reason"], "no_match");

    let s1 = admin.get("/events?session=s1").await.expect(200);
    assert_eq!(s1["items"].as_array().unwrap().len(), 2);
    let first_page = admin.get("/events?limit=2").await.expect(200);
    assert_eq!(first_page["items"].as_array().unwrap().len(), 2);
    let before = first_page["next_before"].as_i64().expect("a next page");
    let second_page = admin
        .get(&format!("/events?limit=2&before={before}"))
        .await
        .expect(200);
    assert_eq!(second_page["items"].as_array().unwrap().len(), 1);
    assert_eq!(second_page["next_before"], Value::Null);
    let future = admin
        .get("/events?since=2999-01-01T00:00:00Z")
        .await
        .expect(200);
    assert!(future["items"].as_array().unwrap().is_empty());
    let until = admin
        .get("/events?until=2999-01-01T00:00:00Z&status=processed")
        .await
        .expect(200);
    assert_eq!(until["items"].as_array().unwrap().len(), 3);

    // Without a WTS token the steps are recorded as dry runs.
    let deliveries = admin
        .get("/deliveries?rule=manual&status=dry_run")
        .await
        .expect(200);
    let items = deliveries["items"].as_array().unwrap();
    assert_eq!(items.len(), 2);
    assert_eq!(
        (&items[1]["step"], &items[1]["payload"]),
        (&json!(0), &json!("Segue o manual"))
    );
    assert!(
        admin.get("/deliveries?rule=other").await.expect(200)["items"]
            .as_array()
            .unwrap()
            .is_empty()
    );

    let bad = admin
        .get("/deliveries?status=lost&limit=0")
        .await
        .expect(422);
    assert_eq!(bad["errors"].as_array().unwrap().len(), 2);
    admin.get("/events?since=yesterday").await.expect(400);
    admin
        .post("/deliveries/999999/retry", &json!({}))
        .await
        .expect(404);
}

async fn a_dead_delivery_is_retried_and_sent(backend: Backend) {
    let sim = start_sim().await;
    let app = admin_app(backend).sim(&sim).spawn().await;
    let admin = AdminClient::new(&app, Some(ADMIN_TOKEN)).await;
    admin.post("/rules", &manual_rule()).await.expect(201);
    let session = sim.add_session(SimSession::new());
    // The first try and every retry of the schedule fail.
    sim.push_fault(
        Fault::new(FaultKind::ServerError { status: 500 })
            .on("POST", "/chat/v1/session/")
            .times(4),
    );
    app.post_webhook(&message_received(&session, "manual"))
        .await;
    let dead = eventually("the first step to die", WAIT, || async {
        let page = admin
            .get(&format!("/deliveries?session={session}"))
            .await
            .expect(200);
        let items = page["items"].as_array().unwrap().clone();
        (items.len() == 2 && items[1]["status"] == "dead").then_some(items)
    })
    .await;
    assert_eq!(dead[0]["status"], "skipped");
    assert_eq!(dead[1]["attempts"], 4);
    assert_eq!(dead[1]["last_error"]["status"], 500);
    let dead_id = dead[1]["id"].as_i64().unwrap();

    let retried = admin
        .post(&format!("/deliveries/{dead_id}/retry"), &json!({}))
        .await
        .expect(200);
    assert_eq!(retried["replanned_steps"], 1);
    assert_eq!(retried["delivery"]["attempts"], 0);
    let sent = eventually("both steps to be sent", WAIT, || async {
        let page = admin
            .get(&format!("/deliveries?session={session}"))
            .await
            .expect(200);
        let items = page["items"].as_array().unwrap().clone();
        items.iter().all(|d| d["status"] == "sent").then_some(items)
    })
    .await;
    assert!(sent[1]["wts_message_id"].is_string());
    let texts: Vec<Option<String>> = sim.messages(&session).into_iter().map(|m| m.text).collect();
    assert_eq!(
        texts,
        [
            Some("Segue o manual".to_string()),
            Some("Qualquer dúvida, estamos aqui".to_string())
        ]
    );
    let again = admin
        .post(&format!("/deliveries/{dead_id}/retry"), &json!({}))
        .await
        .expect(409);
    assert!(again["message"].as_str().unwrap().contains("sent"));
}

async fn history_older_than_the_retention_is_pruned(backend: Backend) {
    let app = admin_app(backend)
        .setting("history.retention", "1s")
        .spawn()
        .await;
    let admin = AdminClient::new(&app, Some(ADMIN_TOKEN)).await;
    admin.post("/rules", &manual_rule()).await.expect(201);
    app.post_webhook(&message_received("s1", "manual")).await;
    eventually("the event to be recorded", WAIT, || async {
        let page = admin.get("/deliveries").await.expect(200);
        (page["items"].as_array().unwrap().len() == 2).then_some(())
    })
    .await;
    eventually("the history to be pruned", WAIT, || async {
        let events = admin.get("/events").await.expect(200);
        let deliveries = admin.get("/deliveries").await.expect(200);
        (events["items"].as_array().unwrap().is_empty()
            && deliveries["items"].as_array().unwrap().is_empty())
        .then_some(())
    })
    .await;
    let decisions: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM decisions")
        .fetch_one(app.store.pool())
        .await
        .unwrap();
    assert_eq!(decisions, 0);
}
