//! Tokens and roles: 401 without a valid token, 403 for a role that may not, tokens
//! created with a role, listed without secrets, and revoked.

use serde_json::json;

use crate::admin_client::{ADMIN_TOKEN, AdminClient, admin_app};
use crate::helpers::Backend;
use crate::on_both_backends;

on_both_backends!(
    requests_without_a_valid_token_are_unauthorized,
    roles_decide_what_a_token_may_do,
    tokens_are_created_listed_and_revoked,
    the_openapi_document_is_public_and_describes_every_admin_route,
);

async fn requests_without_a_valid_token_are_unauthorized(backend: Backend) {
    let app = admin_app(backend).spawn().await;
    let anonymous = AdminClient::new(&app, None).await;
    for path in ["/rules", "/files", "/events", "/deliveries", "/tokens"] {
        anonymous.get(path).await.expect(401);
    }
    anonymous
        .post("/rules", &json!({"id": "r", "reply": [{"text": "oi"}]}))
        .await
        .expect(401);
    anonymous
        .with_token(Some("wrong-token-0123456789"))
        .get("/rules")
        .await
        .expect(401);
    // Not a bearer header at all.
    let basic = app
        .client
        .get(app.url("/api/v1/rules"))
        .header("Authorization", format!("Basic {ADMIN_TOKEN}"))
        .send()
        .await
        .unwrap();
    assert_eq!(basic.status(), 401);
    anonymous
        .with_token(Some(ADMIN_TOKEN))
        .get("/rules")
        .await
        .expect(200);
}

async fn roles_decide_what_a_token_may_do(backend: Backend) {
    let app = admin_app(backend).spawn().await;
    let admin = AdminClient::new(&app, Some(ADMIN_TOKEN)).await;
    let viewer = admin.with_token(Some(&admin.token_with_role("viewer").await));
    let editor = admin.with_token(Some(&admin.token_with_role("editor").await));
    let rule = json!({"id": "hello", "reply": [{"text": "oi"}]});

    viewer.get("/rules").await.expect(200);
    viewer.get("/events").await.expect(200);
    viewer.post("/rules", &rule).await.expect(403);
    viewer
        .upload(Some("a.pdf"), "a.pdf", b"%PDF-1.7")
        .await
        .expect(403);
    viewer
        .post("/rules/test", &json!({"eventType": "MESSAGE_RECEIVED"}))
        .await
        .expect(403);
    viewer
        .post("/deliveries/1/retry", &json!({}))
        .await
        .expect(403);
    viewer.get("/tokens").await.expect(403);

    editor.post("/rules", &rule).await.expect(201);
    editor.put("/rules/hello", &rule).await.expect(200);
    editor.delete("/rules/hello").await.expect(204);
    editor.get("/tokens").await.expect(403);
    editor
        .post("/tokens", &json!({"name": "x", "role": "admin"}))
        .await
        .expect(403);
    editor.delete("/tokens/1").await.expect(403);
}

async fn tokens_are_created_listed_and_revoked(backend: Backend) {
    let app = admin_app(backend).spawn().await;
    let admin = AdminClient::new(&app, Some(ADMIN_TOKEN)).await;
    let created = admin
        .post("/tokens", &json!({"name": "maria", "role": "editor"}))
        .await
        .expect(201);
    let secret = created["secret"].as_str().unwrap().to_string();
    let id = created["id"].as_i64().unwrap();

    // Only a hash is stored.
    let stored: Vec<String> = sqlx::query_scalar("SELECT token_hash FROM tokens")
        .fetch_all(app.store.pool())
        .await
        .unwrap();
    assert!(!stored.contains(&secret));

    let listed = admin.get("/tokens").await.expect(200);
    let maria = listed
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["id"] == id)
        .expect("listed");
    assert_eq!(maria["role"], "editor");
    assert!(maria.get("secret").is_none());

    // The token's name is the actor of the revisions it makes.
    let maria_client = admin.with_token(Some(&secret));
    maria_client
        .post("/rules", &json!({"id": "hello", "reply": [{"text": "oi"}]}))
        .await
        .expect(201);
    let revisions = maria_client.get("/rules/hello/revisions").await.expect(200);
    assert_eq!(revisions[0]["actor"], "maria");

    admin.delete(&format!("/tokens/{id}")).await.expect(204);
    admin.delete(&format!("/tokens/{id}")).await.expect(404);
    admin.delete("/tokens/999999").await.expect(404);
    admin.delete("/tokens/not-a-number").await.expect(400);
    maria_client.get("/rules").await.expect(401);
    let revoked = admin.get("/tokens").await.expect(200);
    assert!(
        revoked
            .as_array()
            .unwrap()
            .iter()
            .any(|t| t["id"] == id && t["revoked_at"].is_string())
    );

    let invalid = admin
        .post("/tokens", &json!({"name": "", "role": "editor"}))
        .await
        .expect(422);
    assert_eq!(invalid["errors"][0]["field"], "name");
    let invalid = admin
        .post("/tokens", &json!({"name": "x", "role": "root"}))
        .await
        .expect(422);
    assert_eq!(invalid["errors"][0]["field"], "role");
}

async fn the_openapi_document_is_public_and_describes_every_admin_route(backend: Backend) {
    let app = admin_app(backend).spawn().await;
    let document: serde_json::Value = app.get("/api/v1/openapi.json").await.json().await.unwrap();
    let paths = document["paths"].as_object().unwrap();
    let expected = [
        ("/api/v1/rules", &["get", "post"][..]),
        ("/api/v1/rules/{id}", &["get", "put", "delete"]),
        ("/api/v1/rules/{id}/revisions", &["get"]),
        ("/api/v1/rules/{id}/revisions/{revision}/restore", &["post"]),
        ("/api/v1/rules/test", &["post"]),
        ("/api/v1/files", &["get", "post"]),
        ("/api/v1/files/{name}", &["get", "delete"]),
        ("/api/v1/events", &["get"]),
        ("/api/v1/deliveries", &["get"]),
        ("/api/v1/deliveries/{id}/retry", &["post"]),
        ("/api/v1/tokens", &["get", "post"]),
        ("/api/v1/tokens/{id}", &["delete"]),
    ];
    assert_eq!(paths.len(), expected.len(), "{:?}", paths.keys());
    for (path, methods) in expected {
        for method in methods {
            let operation = &paths[path][method];
            assert!(operation.is_object(), "{method} {path}");
            assert_eq!(
                operation["security"][0]["bearer"],
                json!([]),
                "{method} {path}"
            );
            assert!(operation["responses"]["401"].is_object(), "{method} {path}");
        }
    }
    assert_eq!(
        document["components"]["securitySchemes"]["bearer"]["scheme"],
        "bearer"
    );
}
