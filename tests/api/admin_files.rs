//! Files through the admin API: sniffed types, the size limit, name clashes, and files in
//! use or from `rules/` that cannot be deleted.

use serde_json::json;

use crate::admin_client::{ADMIN_TOKEN, AdminClient, admin_app, multipart_form};
use crate::helpers::Backend;
use crate::on_both_backends;

const PDF: &[u8] = b"%PDF-1.7\nprice list";
const PNG: &[u8] = b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR\0\0\0\x01\0\0\0\x01";

on_both_backends!(
    files_are_uploaded_listed_read_and_deleted,
    uploads_are_limited_by_size_and_sniffed_type,
    files_in_use_or_from_rules_cannot_be_deleted,
);

async fn files_are_uploaded_listed_read_and_deleted(backend: Backend) {
    let app = admin_app(backend).spawn().await;
    let admin = AdminClient::new(&app, Some(ADMIN_TOKEN)).await;
    let created = admin
        .upload(Some("files/prices.pdf"), "tabela.pdf", PDF)
        .await
        .expect(201);
    assert_eq!(created["name"], "files/prices.pdf");
    assert_eq!(created["mime"], "application/pdf");
    assert_eq!(created["size"], PDF.len());
    assert_eq!(created["source"], "upload");
    // Without a name part, the file name is the name.
    assert_eq!(
        admin.upload(None, "dot.png", PNG).await.expect(201)["mime"],
        "image/png"
    );
    // The same content under another name shares its bytes.
    admin
        .upload(Some("copy.pdf"), "x.pdf", PDF)
        .await
        .expect(201);
    let blobs: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM blobs")
        .fetch_one(app.store.pool())
        .await
        .unwrap();
    assert_eq!(blobs, 2);

    admin
        .upload(Some("files/prices.pdf"), "other.pdf", PDF)
        .await
        .expect(409);
    let bad_name = admin
        .upload(Some("../etc/passwd"), "x.pdf", PDF)
        .await
        .expect(422);
    assert_eq!(bad_name["errors"][0]["field"], "name");

    let listed = admin.get("/files").await.expect(200);
    assert_eq!(listed.as_array().unwrap().len(), 3);
    let read = admin.get("/files/files/prices.pdf").await.expect(200);
    assert_eq!(read["sha256"], created["sha256"]);
    admin.delete("/files/files/prices.pdf").await.expect(204);
    admin.get("/files/files/prices.pdf").await.expect(404);
    admin.delete("/files/files/prices.pdf").await.expect(404);
}

async fn uploads_are_limited_by_size_and_sniffed_type(backend: Backend) {
    let app = admin_app(backend)
        .setting("files.max_size", "1KiB")
        .spawn()
        .await;
    let admin = AdminClient::new(&app, Some(ADMIN_TOKEN)).await;
    let mut big = PDF.to_vec();
    big.resize(1025, b' ');
    admin
        .upload(Some("big.pdf"), "big.pdf", &big)
        .await
        .expect(413);
    big.truncate(1024);
    admin
        .upload(Some("fits.pdf"), "fits.pdf", &big)
        .await
        .expect(201);

    // Declared a PDF (by name and part type) but an executable inside.
    admin
        .upload(Some("fake.pdf"), "fake.pdf", b"MZ\x90\0\x03\0\0\0\x04\0")
        .await
        .expect(415);
    admin
        .upload(Some("prices.csv"), "prices.csv", b"item;price\nA;1\n")
        .await
        .expect(201);
    admin
        .upload(Some("notes.md"), "notes.md", b"# not accepted")
        .await
        .expect(415);

    // Not multipart at all.
    let (_, body) = multipart_form(Some("a.pdf"), "a.pdf", PDF);
    let request = app
        .client
        .post(app.url("/api/v1/files"))
        .header("Content-Type", "application/json")
        .body(body);
    admin
        .send(request, reqwest::Method::POST, "/api/v1/files")
        .await
        .expect(415);
    // Multipart without a file part.
    let request = app
        .client
        .post(app.url("/api/v1/files"))
        .header("Content-Type", "multipart/form-data; boundary=b")
        .body("--b\r\nContent-Disposition: form-data; name=\"name\"\r\n\r\nx.pdf\r\n--b--\r\n");
    admin
        .send(request, reqwest::Method::POST, "/api/v1/files")
        .await
        .expect(400);
}

async fn files_in_use_or_from_rules_cannot_be_deleted(backend: Backend) {
    let app = admin_app(backend)
        .rules_file("files/manual.pdf", PDF)
        .spawn()
        .await;
    let admin = AdminClient::new(&app, Some(ADMIN_TOKEN)).await;
    let from_rules = admin.get("/files/files/manual.pdf").await.expect(200);
    assert_eq!(from_rules["source"], "rules");
    let refused = admin.delete("/files/files/manual.pdf").await.expect(409);
    assert!(refused["message"].as_str().unwrap().contains("manual.pdf"));
    admin
        .upload(Some("files/manual.pdf"), "manual.pdf", PDF)
        .await
        .expect(409);

    admin
        .upload(Some("prices.pdf"), "prices.pdf", PDF)
        .await
        .expect(201);
    admin
        .post(
            "/rules",
            &json!({"id": "prices", "when": {"text_any": ["preço"]}, "reply": [{"file": "prices.pdf"}]}),
        )
        .await
        .expect(201);
    assert_eq!(
        admin.get("/files/prices.pdf").await.expect(200)["used_by"],
        json!(["prices"])
    );
    let in_use = admin.delete("/files/prices.pdf").await.expect(409);
    assert!(in_use["message"].as_str().unwrap().contains("prices"));
    admin.delete("/rules/prices").await.expect(204);
    admin.delete("/files/prices.pdf").await.expect(204);
}
