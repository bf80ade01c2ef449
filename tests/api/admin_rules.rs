//! Rules through the admin API: validation with field paths, live changes without a
//! restart, file rules read-only, revisions and restore.

use std::time::Duration;

use serde_json::{Value, json};
use wtsbot::sim::customers::message_received;
use wtsbot::sim::{SimSession, WtsSim};

use crate::admin_client::{ADMIN_TOKEN, AdminClient, admin_app};
use crate::helpers::{Backend, TestApp, eventually, start_sim};
use crate::on_both_backends;

const WAIT: Duration = Duration::from_secs(10);

const FILE_RULE: &str = r#"
id = "from-file"
[when]
text_any = ["boleto"]
[[reply]]
text = "Segue o boleto"
"#;

on_both_backends!(
    rules_are_created_read_updated_and_deleted,
    invalid_rules_list_every_error_with_its_path,
    rules_from_files_are_read_only,
    every_change_is_a_revision_and_old_ones_can_be_restored,
    a_rule_created_through_the_api_answers_without_a_restart,
);

fn price_rule() -> Value {
    json!({
        "id": "price",
        "name": "Price list",
        "priority": 20,
        "cooldown": "1h",
        "when": {"text_any": ["preço", "price*"]},
        "reply": [{"text": "Olá {{contact.name | \"cliente\"}}, segue a tabela"}]
    })
}

async fn admin(app: &TestApp) -> AdminClient {
    AdminClient::new(app, Some(ADMIN_TOKEN)).await
}

async fn rules_are_created_read_updated_and_deleted(backend: Backend) {
    let app = admin_app(backend).spawn().await;
    let admin = admin(&app).await;
    let created = admin.post("/rules", &price_rule()).await.expect(201);
    assert_eq!(created["rule"], price_rule());
    assert_eq!(
        (created["source"].as_str(), created["revision"].as_i64()),
        (Some("api"), Some(1))
    );
    admin.post("/rules", &price_rule()).await.expect(409);

    let read = admin.get("/rules/price").await.expect(200);
    assert_eq!(read["rule"], price_rule());
    assert_eq!(
        read["counters"]["fired"],
        json!({"hour": 0, "day": 0, "week": 0})
    );
    let listed = admin.get("/rules").await.expect(200);
    assert_eq!(listed.as_array().unwrap().len(), 1);

    let mut changed = price_rule();
    changed["enabled"] = json!(false);
    let updated = admin.put("/rules/price", &changed).await.expect(200);
    assert_eq!(updated["revision"], 2);
    assert_eq!(updated["rule"]["enabled"], false);
    // An unchanged body is no new revision.
    assert_eq!(
        admin.put("/rules/price", &changed).await.expect(200)["revision"],
        2
    );

    let mut renamed = price_rule();
    renamed["id"] = json!("other");
    let refused = admin.put("/rules/price", &renamed).await.expect(422);
    assert_eq!(refused["errors"][0]["field"], "id");
    admin.put("/rules/missing", &price_rule()).await.expect(404);

    admin.delete("/rules/price").await.expect(204);
    admin.get("/rules/price").await.expect(404);
    admin.delete("/rules/price").await.expect(404);
    // `test` is the dry-run route, never a rule.
    admin.get("/rules/test").await.expect(404);
    let reserved = admin
        .post("/rules", &json!({"id": "test", "reply": [{"text": "oi"}]}))
        .await
        .expect(422);
    assert_eq!(reserved["errors"][0]["field"], "id");
}

async fn invalid_rules_list_every_error_with_its_path(backend: Backend) {
    let app = admin_app(backend).spawn().await;
    let admin = admin(&app).await;
    let answer = admin
        .post(
            "/rules",
            &json!({
                "id": "broken",
                "on": ["MESSAGE_SENT"],
                "when": {"text_regex": "segunda(\\s+via"},
                "reply": [{"text": "ok"}, {"file": "files/missing.pdf"}]
            }),
        )
        .await
        .expect(422);
    let fields: Vec<&str> = answer["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["field"].as_str().unwrap())
        .collect();
    assert_eq!(fields, ["on[0]", "when.text_regex", "reply[1].file"]);

    let wrong_type = admin
        .post(
            "/rules",
            &json!({"id": "r", "reply": [{"text": "a", "sync": "yes"}]}),
        )
        .await
        .expect(422);
    assert_eq!(wrong_type["errors"][0]["field"], "reply[0].sync");
    let unknown = admin
        .post(
            "/rules",
            &json!({"id": "r", "when": {"texto": ["a"]}, "reply": [{"text": "a"}]}),
        )
        .await
        .expect(422);
    assert_eq!(unknown["errors"][0]["field"], "when.texto");

    let not_json = app
        .client
        .post(app.url("/api/v1/rules"))
        .bearer_auth(ADMIN_TOKEN)
        .header("Content-Type", "application/json")
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(not_json.status(), 400);
    let body: Value = not_json.json().await.unwrap();
    assert_eq!(body["code"], "bad_request");
}

async fn rules_from_files_are_read_only(backend: Backend) {
    let app = admin_app(backend)
        .rules_file("from-file.toml", FILE_RULE)
        .spawn()
        .await;
    let admin = admin(&app).await;
    let read = admin.get("/rules/from-file").await.expect(200);
    assert_eq!(read["source"], "file");
    assert!(read["file"].as_str().unwrap().ends_with("from-file.toml"));

    let rule = json!({"id": "from-file", "reply": [{"text": "x"}]});
    for answer in [
        admin.put("/rules/from-file", &rule).await,
        admin.delete("/rules/from-file").await,
        admin.post("/rules", &rule).await,
    ] {
        let body = answer.expect(409);
        assert!(
            body["message"].as_str().unwrap().contains("from-file.toml"),
            "{body}"
        );
    }
}

async fn every_change_is_a_revision_and_old_ones_can_be_restored(backend: Backend) {
    let app = admin_app(backend).spawn().await;
    let admin = admin(&app).await;
    admin.post("/rules", &price_rule()).await.expect(201);
    let mut second = price_rule();
    second["reply"] = json!([{"text": "Nova tabela"}]);
    admin.put("/rules/price", &second).await.expect(200);
    admin.delete("/rules/price").await.expect(204);

    let revisions = admin.get("/rules/price/revisions").await.expect(200);
    let actions: Vec<(i64, &str)> = revisions
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["revision"].as_i64().unwrap(),
                r["action"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(actions, [(3, "delete"), (2, "update"), (1, "create")]);
    assert_eq!(revisions[1]["before"], price_rule());
    assert_eq!(revisions[1]["after"], second);
    assert_eq!(revisions[0]["after"], Value::Null);
    assert_eq!(revisions[0]["actor"], "bootstrap");

    // Restoring revision 1 brings the deleted rule back as it first was.
    let restored = admin
        .post("/rules/price/revisions/1/restore", &json!({}))
        .await
        .expect(200);
    assert_eq!(restored["rule"], price_rule());
    assert_eq!(restored["revision"], 4);
    let restored = admin
        .post("/rules/price/revisions/2/restore", &json!({}))
        .await
        .expect(200);
    assert_eq!(restored["rule"], second);
    assert_eq!(
        admin.get("/rules/price/revisions").await.expect(200)[0]["action"],
        "restore"
    );

    admin
        .post("/rules/price/revisions/9/restore", &json!({}))
        .await
        .expect(404);
    admin.get("/rules/never/revisions").await.expect(404);
    admin
        .post("/rules/price/revisions/x/restore", &json!({}))
        .await
        .expect(400);
}

/// The app with the simulator, and a message that matches `price`.
async fn post_price_question(app: &TestApp, sim: &WtsSim) -> String {
    let session = sim.add_session(SimSession::new().with_contact_name("Ana"));
    let response = app
        .post_webhook(&message_received(&session, "Qual o preço?"))
        .await;
    assert_eq!(response.status(), 200);
    session
}

async fn a_rule_created_through_the_api_answers_without_a_restart(backend: Backend) {
    let sim = start_sim().await;
    let app = admin_app(backend).sim(&sim).spawn().await;
    let admin = admin(&app).await;
    let mut rule = price_rule();
    rule.as_object_mut().unwrap().remove("cooldown");
    admin.post("/rules", &rule).await.expect(201);

    let session = post_price_question(&app, &sim).await;
    let sent = eventually("the reply", WAIT, || async {
        let messages = sim.messages(&session);
        (!messages.is_empty()).then_some(messages)
    })
    .await;
    assert_eq!(sent[0].text.as_deref(), Some("Olá Ana, segue a tabela"));
    let counters = eventually("the counters", WAIT, || async {
        let read = admin.get("/rules/price").await.expect(200);
        (read["counters"]["sent"]["hour"] == 1).then_some(read["counters"].clone())
    })
    .await;
    assert_eq!(counters["fired"], json!({"hour": 1, "day": 1, "week": 1}));

    // Disabled, it answers no more; the decision says it was not evaluated as enabled.
    rule["enabled"] = json!(false);
    admin.put("/rules/price", &rule).await.expect(200);
    let quiet = post_price_question(&app, &sim).await;
    let events = eventually("the event to be decided", WAIT, || async {
        let page = admin
            .get(&format!("/events?session={quiet}"))
            .await
            .expect(200);
        (page["items"][0]["status"] == "processed").then_some(page)
    })
    .await;
    assert!(
        events["items"][0]["decisions"]
            .as_array()
            .unwrap()
            .is_empty()
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(sim.messages(&quiet).is_empty());
}
