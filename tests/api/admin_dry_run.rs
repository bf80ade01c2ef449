//! `POST /api/v1/rules/test`: what the rules would do with an event, with no side effects.

use std::time::Duration;

use serde_json::{Value, json};
use wtsbot::sim::customers::message_received;

use crate::admin_client::{ADMIN_TOKEN, AdminClient, admin_app};
use crate::helpers::{Backend, eventually};
use crate::on_both_backends;

on_both_backends!(
    a_matching_message_shows_its_replies_and_changes_nothing,
    a_message_that_matches_nothing_says_which_condition_failed,
    a_rule_in_cooldown_would_not_fire,
    opening_hours_are_decided_at_the_given_time,
    disabled_rules_stop_and_overlaps_are_explained,
);

fn rule(id: &str, extra: Value) -> Value {
    let mut rule = json!({
        "id": id,
        "when": {"text_any": ["manual"], "agent": "any"},
        "reply": [{"text": "Olá {{contact.name | \"cliente\"}}"}, {"file_url": "https://cdn.example.com/a.png"}]
    });
    for (key, value) in extra.as_object().unwrap() {
        rule[key] = value.clone();
    }
    rule
}

fn entry<'a>(list: &'a Value, id: &str) -> &'a Value {
    list.as_array()
        .unwrap()
        .iter()
        .find(|e| e["rule"] == id)
        .unwrap_or_else(|| panic!("no {id} in {list}"))
}

async fn client(app: &crate::helpers::TestApp) -> AdminClient {
    AdminClient::new(app, Some(ADMIN_TOKEN)).await
}

async fn a_matching_message_shows_its_replies_and_changes_nothing(backend: Backend) {
    let app = admin_app(backend).spawn().await;
    let admin = client(&app).await;
    admin
        .post("/rules", &rule("manual", json!({})))
        .await
        .expect(201);
    let mut event = message_received("s1", "me manda o MANUAL");
    event["content"]["contactDetails"] = json!({"name": "Ana"});

    let result = admin.post("/rules/test", &event).await.expect(200);
    let matched = entry(&result["matched"], "manual");
    assert_eq!(matched["fires"], true);
    assert_eq!(matched["reason"], "fired");
    assert_eq!(
        matched["replies"][0],
        json!({"step": 0, "kind": "text", "content": "Olá Ana", "sync": false})
    );
    assert_eq!(matched["replies"][1]["kind"], "file_url");
    let evaluated = entry(&result["evaluated"], "manual");
    assert_eq!(evaluated["matched"], true);
    let text_any = &evaluated["conditions"][1];
    assert_eq!(
        (&text_any["condition"], &text_any["result"]),
        (&json!("text_any"), &json!(true))
    );
    assert!(result["warnings"].as_array().unwrap().is_empty());

    // Nothing was stored or planned.
    for table in ["events", "decisions", "jobs", "cooldowns"] {
        let count: i64 = sqlx::query_scalar(&format!("SELECT COUNT(*) FROM {table}"))
            .fetch_one(app.store.pool())
            .await
            .unwrap();
        assert_eq!(count, 0, "{table}");
    }

    let not_an_event = admin
        .post("/rules/test", &json!({"content": {}}))
        .await
        .expect(422);
    assert_eq!(not_an_event["errors"][0]["field"], "eventType");
}

async fn a_message_that_matches_nothing_says_which_condition_failed(backend: Backend) {
    let app = admin_app(backend).spawn().await;
    let admin = client(&app).await;
    admin
        .post("/rules", &rule("manual", json!({})))
        .await
        .expect(201);
    let result = admin
        .post("/rules/test", &message_received("s1", "manualmente não"))
        .await
        .expect(200);
    assert!(result["matched"].as_array().unwrap().is_empty());
    let evaluated = entry(&result["evaluated"], "manual");
    assert_eq!(
        (&evaluated["matched"], &evaluated["reason"]),
        (&json!(false), &json!("no_match"))
    );
    let text_any = evaluated["conditions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["condition"] == "text_any")
        .unwrap();
    assert_eq!(text_any["result"], false);
    assert_eq!(text_any["detail"], "no entry matched");
}

async fn a_rule_in_cooldown_would_not_fire(backend: Backend) {
    let app = admin_app(backend).spawn().await;
    let admin = client(&app).await;
    admin
        .post("/rules", &rule("manual", json!({"cooldown": "1h"})))
        .await
        .expect(201);
    // A real message fires the rule (recorded as a dry run: no WTS token).
    let first = message_received("s1", "manual");
    assert_eq!(app.post_webhook(&first).await.status(), 200);
    eventually("the rule to fire", Duration::from_secs(10), || async {
        let page = admin.get("/deliveries?session=s1").await.expect(200);
        (!page["items"].as_array().unwrap().is_empty()).then_some(())
    })
    .await;

    let again = admin
        .post("/rules/test", &message_received("s1", "manual de novo"))
        .await
        .expect(200);
    let matched = entry(&again["matched"], "manual");
    assert_eq!(
        (&matched["fires"], &matched["reason"]),
        (&json!(false), &json!("cooldown"))
    );
    assert_eq!(matched["detail"]["scope"], "session:s1");
    let elsewhere = admin
        .post("/rules/test", &message_received("s2", "manual"))
        .await
        .expect(200);
    assert_eq!(entry(&elsewhere["matched"], "manual")["reason"], "fired");
}

async fn opening_hours_are_decided_at_the_given_time(backend: Backend) {
    let app = admin_app(backend).spawn().await;
    let admin = client(&app).await;
    let hours = json!({"text_any": ["manual"], "agent": "any",
        "hours": {"tz": "America/Sao_Paulo", "days": ["mon", "tue", "wed", "thu", "fri"], "periods": ["08:00-18:00"]}});
    admin
        .post("/rules", &rule("manual", json!({"when": hours})))
        .await
        .expect(201);
    let event = message_received("s1", "manual");
    // Saturday 10:00 in São Paulo.
    let closed = admin
        .post("/rules/test?at=2026-03-07T13:00:00Z", &event)
        .await
        .expect(200);
    assert!(closed["matched"].as_array().unwrap().is_empty());
    let evaluated = entry(&closed["evaluated"], "manual");
    assert_eq!(evaluated["reason"], "hours");
    // Monday 10:00 in São Paulo.
    let open = admin
        .post("/rules/test?at=2026-03-09T13:00:00Z", &event)
        .await
        .expect(200);
    assert_eq!(entry(&open["matched"], "manual")["reason"], "fired");
    admin
        .post("/rules/test?at=yesterday", &event)
        .await
        .expect(400);
}

async fn disabled_rules_stop_and_overlaps_are_explained(backend: Backend) {
    let app = admin_app(backend).spawn().await;
    let admin = client(&app).await;
    admin
        .post("/rules", &rule("first", json!({"priority": 1})))
        .await
        .expect(201);
    admin
        .post("/rules", &rule("second", json!({"priority": 2})))
        .await
        .expect(201);
    admin
        .post("/rules", &rule("off", json!({"enabled": false})))
        .await
        .expect(201);
    let event = message_received("s1", "manual");

    let both = admin.post("/rules/test", &event).await.expect(200);
    assert_eq!(entry(&both["matched"], "off")["reason"], "disabled");
    assert_eq!(entry(&both["evaluated"], "off")["enabled"], false);
    let warning = both["warnings"][0].as_str().expect("an overlap warning");
    assert!(
        warning.contains("first") && warning.contains("second"),
        "{warning}"
    );

    admin
        .put(
            "/rules/first",
            &rule("first", json!({"priority": 1, "stop": true})),
        )
        .await
        .expect(200);
    let stopped = admin.post("/rules/test", &event).await.expect(200);
    let second = entry(&stopped["matched"], "second");
    assert_eq!(
        (&second["reason"], &second["detail"]["by"]),
        (&json!("stopped"), &json!("first"))
    );
    assert!(stopped["warnings"].as_array().unwrap().is_empty());
}
