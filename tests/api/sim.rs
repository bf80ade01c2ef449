//! The WTS simulator's HTTP surface, driven with plain reqwest.

use std::convert::Infallible;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use reqwest::StatusCode;
use serde_json::{Value, json};
use tokio::sync::mpsc;
use wtsbot::sim::customers::{self, CustomerEvent, PlayOptions};
use wtsbot::sim::{
    Fault, FaultKind, RateLimit, SimAgent, SimConfig, SimDepartment, SimSession, UploadFlow, WtsSim,
};

async fn start() -> WtsSim {
    start_with(SimConfig::default()).await
}

async fn start_with(config: SimConfig) -> WtsSim {
    WtsSim::start(config)
        .await
        .expect("the simulator binds 127.0.0.1:0")
}

fn client() -> reqwest::Client {
    reqwest::Client::new()
}

async fn get(sim: &WtsSim, path: &str) -> reqwest::Response {
    client()
        .get(format!("{}{path}", sim.base_url()))
        .bearer_auth(sim.token())
        .send()
        .await
        .unwrap()
}

async fn send_json(
    sim: &WtsSim,
    method: reqwest::Method,
    path: &str,
    body: &Value,
) -> reqwest::Response {
    client()
        .request(method, format!("{}{path}", sim.base_url()))
        .bearer_auth(sim.token())
        .json(body)
        .send()
        .await
        .unwrap()
}

async fn post(sim: &WtsSim, path: &str, body: &Value) -> reqwest::Response {
    send_json(sim, reqwest::Method::POST, path, body).await
}

async fn json_of(response: reqwest::Response) -> Value {
    response.json().await.expect("a JSON body")
}

fn is_wts_time(value: &Value) -> bool {
    let text = value.as_str().unwrap_or_default();
    regex::Regex::new(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{7}Z$")
        .unwrap()
        .is_match(text)
}

fn assert_envelope(body: &Value, status: Value, key: &str) {
    assert_eq!(body["httpStatusCode"], status, "{body}");
    assert_eq!(body["key"], key, "{body}");
    assert_eq!(body["error"], true);
    assert_eq!(body["isUnsolvableError"], false);
    assert!(body["version"].is_null() && body["environment"].is_null());
    assert!(body["customData"].is_null());
    assert!(is_wts_time(&body["date"]), "{body}");
    let value = body["id"]["value"].as_str().unwrap();
    assert!(uuid::Uuid::parse_str(value).is_ok());
    assert_eq!(body["id"]["shortValue"].as_str().unwrap(), &value[..8]);
}

#[tokio::test]
async fn authentication_runs_before_routing() {
    let sim = start().await;
    let base = sim.base_url();
    for (path, token) in [
        ("/chat/v1/message/x", None),
        ("/chat/v1/message/x", Some("wrong")),
        ("/no/such/route", Some("wrong")),
    ] {
        let mut request = client().get(format!("{base}{path}"));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        let response = request.send().await.unwrap();
        assert_eq!(
            response.status(),
            StatusCode::UNAUTHORIZED,
            "{path} {token:?}"
        );
        let body = json_of(response).await;
        assert_envelope(&body, json!(401), "ERROR_UNAUTHORIZED");
        assert_eq!(body["text"], "Acesso negado");
    }
    assert_eq!(
        get(&sim, "/no/such/route").await.status(),
        StatusCode::NOT_FOUND
    );
    sim.shutdown().await;
}

#[tokio::test]
async fn session_reads_fill_the_requested_details() {
    let sim = start().await;
    let agent = SimAgent::named("Ana Souza");
    let department = SimDepartment::named("Suporte");
    let id = sim.add_session(
        SimSession::new()
            .with_contact_name("Maria")
            .with_tags(&["vip"])
            .with_agent(agent.clone())
            .with_department(department.clone()),
    );
    let session = sim.session(&id).unwrap();
    let query = "includeDetails=AgentDetails&includeDetails=ContactDetails\
                 &includeDetails=ChannelDetails&includeDetails=DepartmentsDetails";
    let body = json_of(get(&sim, &format!("/chat/v2/session/{id}?{query}")).await).await;
    assert_eq!(body["id"], id);
    assert_eq!(body["userId"], agent.user_id.as_str());
    assert_eq!(body["departmentId"], department.id.as_str());
    assert_eq!(body["channelId"], session.channel_id.as_str());
    assert_eq!(body["contactDetails"]["name"], "Maria");
    assert_eq!(body["contactDetails"]["tagsName"], json!(["vip"]));
    assert_eq!(
        body["contactDetails"]["tagsId"],
        json!([session.contact.tags[0].id])
    );
    assert_eq!(
        body["contactDetails"]["phonenumber"],
        session.contact.phonenumber.as_str()
    );
    assert_eq!(body["agentDetails"]["userId"], agent.user_id.as_str());
    assert_eq!(body["agentDetails"]["name"], "Ana Souza");
    assert_eq!(body["departmentDetails"]["name"], "Suporte");
    assert!(body["channelDetails"].is_object());
    assert_eq!(body["type"], "INDIVIDUAL");

    let bare = json_of(get(&sim, &format!("/chat/v1/session/{id}")).await).await;
    assert!(bare["contactDetails"].is_null() && bare["agentDetails"].is_null());
    assert_eq!(bare["userId"], agent.user_id.as_str());

    let auto = json_of(
        get(
            &sim,
            "/chat/v2/session/any-id?includeDetails=AgentDetails&includeDetails=ContactDetails",
        )
        .await,
    )
    .await;
    assert_eq!(auto["id"], "any-id");
    assert!(auto["agentDetails"].is_null() && auto["userId"].is_null());
    assert!(
        auto["contactDetails"]["name"]
            .as_str()
            .is_some_and(|n| !n.is_empty())
    );
    sim.shutdown().await;
}

#[tokio::test]
async fn unknown_sessions_fail_like_wts_without_auto_sessions() {
    let sim = start_with(SimConfig {
        auto_sessions: false,
        ..SimConfig::default()
    })
    .await;
    let response = post(
        &sim,
        "/chat/v1/session/nope/message",
        &json!({"text": "oi"}),
    )
    .await;
    assert_eq!(response.status(), StatusCode::INTERNAL_SERVER_ERROR);
    let body = json_of(response).await;
    assert_envelope(&body, json!("INTERNALSERVERERROR"), "FORM_ERROR");
    assert_eq!(body["text"], "Sessão não encontrada");
    assert_eq!(
        get(&sim, "/chat/v2/session/nope").await.status(),
        StatusCode::INTERNAL_SERVER_ERROR
    );
    assert!(sim.all_messages().is_empty());
    sim.shutdown().await;
}

#[tokio::test]
async fn sends_answer_the_documented_dtos_and_are_stored() {
    let sim = start().await;
    let session = sim.add_session(SimSession::new());
    let quick = json_of(
        post(
            &sim,
            &format!("/chat/v1/session/{session}/message"),
            &json!({"text": "Olá"}),
        )
        .await,
    )
    .await;
    assert_eq!(quick["sessionId"], session.as_str());
    assert_eq!(quick["status"], "QUEUED");
    assert!(quick.as_object().unwrap().contains_key("failureReason"));
    assert!(!quick.as_object().unwrap().contains_key("failedReason"));
    assert!(is_wts_time(&quick["createdAt"]));

    let full = json_of(
        post(
            &sim,
            &format!("/chat/v1/session/{session}/message/sync"),
            &json!({"text": "segue", "fileUrl": "https://cdn.example.com/a.png", "fileId": null, "templateId": null, "refId": null}),
        )
        .await,
    )
    .await;
    assert_eq!(full["direction"], "TO_HUB");
    assert_eq!(full["origin"], "API");
    assert_eq!(full["type"], "IMAGE");
    assert_eq!(full["status"], "SENT");
    assert!(full.as_object().unwrap().contains_key("failedReason"));
    assert!(full["userId"].is_null());

    let stored = sim.messages(&session);
    assert_eq!(stored.len(), 2);
    assert_eq!(stored[0].id, quick["id"].as_str().unwrap());
    assert_eq!(stored[0].text.as_deref(), Some("Olá"));
    assert!(!stored[0].sync && stored[1].sync);
    assert_eq!(
        stored[1].file_url.as_deref(),
        Some("https://cdn.example.com/a.png")
    );

    let id = stored[0].id.clone();
    let one = json_of(get(&sim, &format!("/chat/v1/message/{id}")).await).await;
    assert_eq!(one["text"], "Olá");
    let status = json_of(get(&sim, &format!("/chat/v1/message/{id}/status")).await).await;
    assert_eq!(status["id"], id.as_str());
    assert!(status.as_object().unwrap().contains_key("failureReason"));
    assert_eq!(
        get(&sim, "/chat/v1/message/missing").await.status(),
        StatusCode::INTERNAL_SERVER_ERROR
    );
    sim.shutdown().await;
}

#[tokio::test]
async fn invalid_sends_are_form_errors() {
    let sim = start().await;
    let url = format!("{}/chat/v1/session/s-1/message", sim.base_url());
    let empty = client()
        .post(&url)
        .bearer_auth(sim.token())
        .send()
        .await
        .unwrap();
    assert_eq!(empty.status(), StatusCode::BAD_REQUEST);
    assert_envelope(&json_of(empty).await, json!(400), "FORM_ERROR");
    for body in [
        json!({}),
        json!({"text": null, "fileUrl": null}),
        json!({"fileId": "not-uploaded"}),
    ] {
        let response = post(&sim, "/chat/v1/session/s-1/message", &body).await;
        assert_eq!(response.status(), StatusCode::BAD_REQUEST, "{body}");
        assert_eq!(json_of(response).await["key"], "FORM_ERROR");
    }
    assert!(sim.all_messages().is_empty());
    sim.shutdown().await;
}

#[tokio::test]
async fn a_failing_channel_answers_200_failed_with_a_reason() {
    let sim = start().await;
    let session = sim.add_session(SimSession::new().with_channel_failure("Janela de 24h expirada"));
    let quick = json_of(
        post(
            &sim,
            &format!("/chat/v1/session/{session}/message"),
            &json!({"text": "oi"}),
        )
        .await,
    )
    .await;
    assert_eq!(quick["status"], "FAILED");
    assert_eq!(quick["failureReason"], "Janela de 24h expirada");
    let full = json_of(
        post(
            &sim,
            &format!("/chat/v1/session/{session}/message/sync"),
            &json!({"text": "oi"}),
        )
        .await,
    )
    .await;
    assert_eq!(full["failedReason"], "Janela de 24h expirada");
    assert!(sim.set_channel_failure(&session, None));
    let ok = json_of(
        post(
            &sim,
            &format!("/chat/v1/session/{session}/message"),
            &json!({"text": "oi"}),
        )
        .await,
    )
    .await;
    assert_eq!(ok["status"], "QUEUED");
    sim.shutdown().await;
}

#[tokio::test]
async fn messages_are_listed_in_pages_and_by_date() {
    let sim = start().await;
    let session = sim.add_session(SimSession::new());
    for i in 0..5 {
        post(
            &sim,
            &format!("/chat/v1/session/{session}/message"),
            &json!({"text": format!("m{i}")}),
        )
        .await;
    }
    let path = format!("/chat/v1/session/{session}/message");
    let page = json_of(get(&sim, &format!("{path}?pageNumber=2&pageSize=2")).await).await;
    assert_eq!(page["totalItems"], 5);
    assert_eq!(page["totalPages"], 3);
    assert_eq!(page["hasMorePages"], true);
    let texts: Vec<_> = page["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["text"].clone())
        .collect();
    assert_eq!(texts, [json!("m2"), json!("m3")]);
    let last = json_of(get(&sim, &format!("{path}?PageNumber=3&PageSize=2")).await).await;
    assert_eq!(last["hasMorePages"], false);
    assert_eq!(last["items"].as_array().unwrap().len(), 1);

    let third = sim.messages(&session)[2].created_at;
    let after = wtsbot::sim::wts_time(third);
    let since = json_of(
        get(
            &sim,
            &format!("{path}?CreatedAt.After={after}&pageSize=100"),
        )
        .await,
    )
    .await;
    assert_eq!(since["totalItems"], 3, "After is inclusive");
    let before = json_of(get(&sim, &format!("{path}?createdAt.before={after}")).await).await;
    assert_eq!(before["totalItems"], 2, "Before is exclusive");
    let too_big = get(&sim, &format!("{path}?pageSize=101")).await;
    assert_eq!(too_big.status(), StatusCode::BAD_REQUEST);
    sim.shutdown().await;
}

async fn upload_v2(sim: &WtsSim, name: &str, file_type: &str, bytes: Vec<u8>) -> Value {
    let ticket =
        json_of(get(sim, &format!("/core/v2/file?Type={file_type}&Name={name}")).await).await;
    let url = ticket["urlUpload"].as_str().unwrap();
    assert!(url.starts_with(&sim.base_url()));
    let put = client().put(url).body(bytes).send().await.unwrap();
    assert_eq!(put.status(), StatusCode::OK);
    json_of(
        post(
            sim,
            "/core/v2/file",
            &json!({"tempFileId": ticket["tempFileId"]}),
        )
        .await,
    )
    .await
}

#[tokio::test]
async fn v2_uploads_keep_the_bytes_and_yield_a_file_id() {
    let sim = start().await;
    let pdf = b"%PDF-1.4 manual".to_vec();
    let file = upload_v2(&sim, "manual.pdf", "PDF", pdf.clone()).await;
    assert_eq!(file["name"], "manual.pdf");
    assert_eq!(file["extension"], "pdf");
    assert_eq!(file["mimeType"], "application/pdf");
    assert_eq!(file["type"], "PDF");
    assert_eq!(file["size"], pdf.len());
    for field in ["id", "companyId", "key"] {
        assert!(file[field].is_string(), "{field}");
    }
    let uploads = sim.uploads();
    assert_eq!(uploads.len(), 1);
    assert_eq!(uploads[0].bytes.as_ref(), pdf.as_slice());
    assert_eq!(uploads[0].flow, UploadFlow::V2);

    let png = [
        &[0x89, b'P', b'N', b'G', 0x0D, 0x0A, 0x1A, 0x0A][..],
        &[0; 32],
    ]
    .concat();
    let image = upload_v2(&sim, "shot.bin", "UNDEFINED", png).await;
    assert_eq!(
        image["type"], "IMAGE",
        "UNDEFINED is detected from the bytes"
    );

    let sent = json_of(
        post(
            &sim,
            "/chat/v1/session/s-1/message/sync",
            &json!({"fileId": file["id"], "fileUrl": null}),
        )
        .await,
    )
    .await;
    assert_eq!(sent["type"], "DOCUMENT");
    assert_eq!(sent["fileId"], file["id"]);
    sim.shutdown().await;
}

#[tokio::test]
async fn the_presigned_put_behaves_like_s3() {
    let sim = start().await;
    let ticket = json_of(
        get(
            &sim,
            "/core/v2/file?Type=DOCUMENT&Name=a.txt&MimeType=text/plain",
        )
        .await,
    )
    .await;
    let url = ticket["urlUpload"].as_str().unwrap().to_owned();
    let with_auth = client()
        .put(&url)
        .bearer_auth(sim.token())
        .body("x")
        .send()
        .await
        .unwrap();
    assert_eq!(with_auth.status(), StatusCode::BAD_REQUEST);
    let forged = url.replace("X-Amz-Signature=", "X-Amz-Signature=0");
    assert_eq!(
        client()
            .put(&forged)
            .body("x")
            .send()
            .await
            .unwrap()
            .status(),
        StatusCode::FORBIDDEN
    );

    let chunks = futures::stream::iter([Ok::<_, std::io::Error>(Bytes::from_static(b"x"))]);
    let chunked = client()
        .put(&url)
        .body(reqwest::Body::wrap_stream(chunks))
        .send()
        .await
        .unwrap();
    assert_eq!(chunked.status(), StatusCode::LENGTH_REQUIRED);

    let early = post(
        &sim,
        "/core/v2/file",
        &json!({"tempFileId": ticket["tempFileId"]}),
    )
    .await;
    assert_eq!(
        early.status(),
        StatusCode::BAD_REQUEST,
        "nothing uploaded yet"
    );
    let put = client()
        .put(&url)
        .header("content-type", "text/plain")
        .body("hello")
        .send()
        .await
        .unwrap();
    assert_eq!(put.status(), StatusCode::OK);
    assert!(put.headers().contains_key("etag"));
    let confirm = json!({"tempFileId": ticket["tempFileId"]});
    assert_eq!(
        post(&sim, "/core/v2/file", &confirm).await.status(),
        StatusCode::OK
    );
    let again = post(&sim, "/core/v2/file", &confirm).await;
    assert_eq!(
        again.status(),
        StatusCode::BAD_REQUEST,
        "a tempFileId confirms once"
    );
    assert_eq!(json_of(again).await["key"], "FORM_ERROR");
    assert_eq!(
        sim.uploads()[0].put_content_type.as_deref(),
        Some("text/plain")
    );
    let missing_type = get(&sim, "/core/v2/file?Name=a.txt").await;
    assert_eq!(missing_type.status(), StatusCode::BAD_REQUEST);
    sim.shutdown().await;
}

#[tokio::test]
async fn large_uploads_arrive_intact_and_are_logged_by_size_only() {
    let sim = start().await;
    let big: Vec<u8> = (0..16 * 1024 * 1024u32).map(|i| (i % 251) as u8).collect();
    let file = upload_v2(&sim, "video.mp4", "VIDEO", big.clone()).await;
    assert_eq!(file["size"], big.len());
    assert!(sim.uploads()[0].bytes.as_ref() == big.as_slice());
    let put = sim
        .requests()
        .into_iter()
        .find(|r| r.method == "PUT")
        .unwrap();
    assert_eq!(put.body_size, big.len());
    assert!(put.body.is_empty());
    sim.shutdown().await;
}

#[tokio::test]
async fn v1_uploads_follow_the_legacy_flow() {
    let sim = start().await;
    let ticket = json_of(
        post(
            &sim,
            "/core/v1/file/upload",
            &json!({"mimeType": "application/pdf", "name": "m.pdf"}),
        )
        .await,
    )
    .await;
    let url = ticket["urlUpload"].as_str().unwrap();
    let put = client()
        .put(url)
        .header("content-type", "application/pdf")
        .body(b"%PDF-1.7".to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(put.status(), StatusCode::OK);
    let body = json!({"name": "m.pdf", "keyS3": ticket["keyS3"], "mimeType": "application/pdf", "generateThumb": false});
    let file = json_of(send_json(&sim, reqwest::Method::PUT, "/core/v1/file", &body).await).await;
    assert!(file["id"].is_string());
    let uploads = sim.uploads();
    assert_eq!(uploads[0].flow, UploadFlow::V1);
    assert_eq!(uploads[0].bytes.as_ref(), b"%PDF-1.7");
    let sent = post(
        &sim,
        "/chat/v1/session/s/message",
        &json!({"fileId": file["id"]}),
    )
    .await;
    assert_eq!(sent.status(), StatusCode::OK);
    sim.shutdown().await;
}

#[tokio::test]
async fn subscriptions_follow_the_documented_contract() {
    let sim = start().await;
    let events = json_of(get(&sim, "/core/v1/webhook/event").await).await;
    assert_eq!(events.as_array().unwrap().len(), 16);
    assert!(events[0]["event"].is_string() && events[0]["description"].is_string());

    for bad in [
        json!({"name": "", "url": "http://x", "events": ["MESSAGE_RECEIVED"]}),
        json!({"name": "n", "url": "u".repeat(501), "events": ["MESSAGE_RECEIVED"]}),
        json!({"name": "n", "url": "http://x", "events": []}),
        json!({"name": "n", "url": "http://x", "events": ["NOT_AN_EVENT"]}),
    ] {
        let response = post(&sim, "/core/v1/webhook/subscription", &bad).await;
        assert_eq!(response.status(), StatusCode::BAD_REQUEST, "{bad}");
        assert_eq!(json_of(response).await["key"], "FORM_ERROR");
    }
    let created = json_of(
        post(&sim, "/core/v1/webhook/subscription", &json!({"name": "wtsbot", "url": "http://127.0.0.1:9/hook", "events": ["MESSAGE_RECEIVED"]})).await,
    )
    .await;
    assert_eq!(created["enabled"], true);
    assert_eq!(
        created["events"],
        json!([{"event": "MESSAGE_RECEIVED", "description": events[3]["description"]}])
    );
    let id = created["id"].as_str().unwrap().to_owned();
    let path = format!("/core/v1/webhook/subscription/{id}");

    let list = json_of(get(&sim, "/core/v1/webhook/subscription").await).await;
    assert_eq!(list.as_array().unwrap().len(), 1, "a bare array");

    let no_fields = send_json(
        &sim,
        reqwest::Method::PUT,
        &path,
        &json!({"enabled": false}),
    )
    .await;
    assert_eq!(no_fields.status(), StatusCode::BAD_REQUEST);
    let update = json!({"fields": ["Enabled", "Events"], "enabled": false, "events": ["MESSAGE_RECEIVED", "SESSION_NEW"], "name": "ignored"});
    let updated = json_of(send_json(&sim, reqwest::Method::PUT, &path, &update).await).await;
    assert_eq!(updated["enabled"], false);
    assert_eq!(updated["name"], "wtsbot", "only the listed fields change");
    assert_eq!(updated["events"].as_array().unwrap().len(), 2);
    assert_eq!(json_of(get(&sim, &path).await).await["enabled"], false);
    assert_eq!(
        sim.subscriptions()[0].events,
        ["MESSAGE_RECEIVED", "SESSION_NEW"]
    );

    let deleted = send_json(&sim, reqwest::Method::DELETE, &path, &json!(null)).await;
    assert_eq!(deleted.status(), StatusCode::OK);
    assert!(deleted.bytes().await.unwrap().is_empty());
    assert!(sim.subscriptions().is_empty());
    assert_eq!(
        get(&sim, &path).await.status(),
        StatusCode::INTERNAL_SERVER_ERROR
    );
    sim.shutdown().await;
}

/// A webhook receiver on 127.0.0.1 that answers `status` after `delay` and hands over each body.
async fn receiver(delay: Duration, status: u16) -> (String, mpsc::UnboundedReceiver<Value>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            let tx = tx.clone();
            tokio::spawn(async move {
                let service = service_fn(move |request: hyper::Request<hyper::body::Incoming>| {
                    let tx = tx.clone();
                    async move {
                        let body = request.into_body().collect().await.unwrap().to_bytes();
                        let _ = tx.send(serde_json::from_slice(&body).unwrap_or(Value::Null));
                        tokio::time::sleep(delay).await;
                        let mut response = hyper::Response::new(Full::new(Bytes::new()));
                        *response.status_mut() = hyper::StatusCode::from_u16(status).unwrap();
                        Ok::<_, Infallible>(response)
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    (url, rx)
}

async fn next_event(rx: &mut mpsc::UnboundedReceiver<Value>) -> Value {
    tokio::time::timeout(Duration::from_secs(5), rx.recv())
        .await
        .expect("a webhook arrives")
        .unwrap()
}

#[tokio::test]
async fn api_sends_are_echoed_as_message_sent_then_updated() {
    let sim = start_with(SimConfig {
        delivery_delay: Some(Duration::from_millis(50)),
        ..SimConfig::default()
    })
    .await;
    let (url, mut events) = receiver(Duration::ZERO, 200).await;
    let (paused_url, mut paused_events) = receiver(Duration::ZERO, 200).await;
    post(
        &sim,
        "/core/v1/webhook/subscription",
        &json!({"name": "echo", "url": url, "events": ["MESSAGE_SENT", "MESSAGE_UPDATED"]}),
    )
    .await;
    post(
        &sim,
        "/core/v1/webhook/subscription",
        &json!({"name": "paused", "url": paused_url, "enabled": false, "events": ["MESSAGE_SENT"]}),
    )
    .await;

    let answer = json_of(
        post(
            &sim,
            "/chat/v1/session/s-9/message",
            &json!({"text": "eco"}),
        )
        .await,
    )
    .await;
    let sent = next_event(&mut events).await;
    assert_eq!(sent["eventType"], "MESSAGE_SENT");
    assert!(is_wts_time(&sent["date"]));
    assert!(sent["changeMetadata"].is_null());
    assert_eq!(sent["content"]["id"], answer["id"]);
    assert_eq!(sent["content"]["direction"], "TO_HUB");
    assert_eq!(sent["content"]["origin"], "API");
    assert_eq!(sent["content"]["text"], "eco");
    let updated = next_event(&mut events).await;
    assert_eq!(updated["eventType"], "MESSAGE_UPDATED");
    assert_eq!(updated["content"]["status"], "DELIVERED");
    assert_eq!(sim.messages("s-9")[0].status, "DELIVERED");
    assert!(
        paused_events.try_recv().is_err(),
        "a disabled subscription gets nothing"
    );
    let deliveries = sim.deliveries();
    assert!(deliveries.iter().all(|d| d.status == Some(200)));
    sim.shutdown().await;
}

#[tokio::test]
async fn slow_webhook_receivers_never_delay_the_api_answer() {
    let sim = start().await;
    let (url, mut events) = receiver(Duration::from_millis(600), 200).await;
    post(
        &sim,
        "/core/v1/webhook/subscription",
        &json!({"name": "slow", "url": url, "events": ["MESSAGE_SENT"]}),
    )
    .await;
    let started = Instant::now();
    let response = post(
        &sim,
        "/chat/v1/session/s/message",
        &json!({"text": "rápido"}),
    )
    .await;
    assert_eq!(response.status(), StatusCode::OK);
    assert!(
        started.elapsed() < Duration::from_millis(400),
        "{:?}",
        started.elapsed()
    );
    next_event(&mut events).await;
    sim.shutdown().await;
}

#[tokio::test]
async fn status_faults_answer_with_the_envelope() {
    let sim = start().await;
    sim.push_fault(
        Fault::new(FaultKind::TooManyRequests {
            retry_after_secs: 7,
        })
        .on("POST", "/chat/"),
    );
    sim.push_fault(Fault::new(FaultKind::ServerError { status: 503 }).on("POST", "/chat/"));
    sim.push_fault(
        Fault::new(FaultKind::FormError {
            text: "Canal desconectado".into(),
        })
        .on("POST", "/chat/"),
    );
    let path = "/chat/v1/session/s/message";
    let throttled = post(&sim, path, &json!({"text": "a"})).await;
    assert_eq!(throttled.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(throttled.headers()["retry-after"], "7");
    assert_envelope(&json_of(throttled).await, json!(429), "TOO_MANY_REQUESTS");
    let unavailable = post(&sim, path, &json!({"text": "a"})).await;
    assert_eq!(unavailable.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_envelope(&json_of(unavailable).await, json!(503), "INTERNAL_ERROR");
    let form = post(&sim, path, &json!({"text": "a"})).await;
    assert_eq!(form.status(), StatusCode::BAD_REQUEST);
    assert_eq!(json_of(form).await["text"], "Canal desconectado");
    assert_eq!(
        post(&sim, path, &json!({"text": "a"})).await.status(),
        StatusCode::OK
    );
    assert_eq!(
        sim.all_messages().len(),
        1,
        "faulted requests store nothing"
    );
    sim.shutdown().await;
}

#[tokio::test]
async fn latency_faults_delay_the_answer() {
    let sim = start().await;
    sim.push_fault(
        Fault::new(FaultKind::Latency {
            delay: Duration::from_millis(150),
        })
        .on("GET", "/chat/v2/session/"),
    );
    let started = Instant::now();
    assert_eq!(
        get(&sim, "/chat/v2/session/s").await.status(),
        StatusCode::OK
    );
    assert!(started.elapsed() >= Duration::from_millis(150));
    let started = Instant::now();
    get(&sim, "/chat/v2/session/s").await;
    assert!(
        started.elapsed() < Duration::from_millis(150),
        "the fault applied once"
    );
    sim.shutdown().await;
}

#[tokio::test]
async fn dropped_connections_get_no_answer_before_or_after_processing() {
    let sim = start().await;
    let path = "/chat/v1/session/s/message";
    sim.push_fault(Fault::new(FaultKind::DropBeforeProcessing).on("POST", path));
    let error = client()
        .post(format!("{}{path}", sim.base_url()))
        .bearer_auth(sim.token())
        .json(&json!({"text": "lost"}))
        .send()
        .await
        .expect_err("the connection closes without an answer");
    assert!(!error.is_timeout() && !error.is_status(), "{error:?}");
    assert!(sim.all_messages().is_empty(), "nothing was processed");

    sim.push_fault(Fault::new(FaultKind::DropAfterProcessing).on("POST", path));
    let error = client()
        .post(format!("{}{path}", sim.base_url()))
        .bearer_auth(sim.token())
        .json(&json!({"text": "unknown outcome"}))
        .send()
        .await
        .expect_err("the connection closes without an answer");
    assert!(!error.is_timeout(), "{error:?}");
    let stored = sim.messages("s");
    assert_eq!(stored.len(), 1, "the message was stored");
    assert_eq!(stored[0].text.as_deref(), Some("unknown outcome"));
    assert_eq!(
        post(&sim, path, &json!({"text": "next"})).await.status(),
        StatusCode::OK
    );
    sim.shutdown().await;
}

#[tokio::test]
async fn control_routes_drive_a_running_simulator_without_auth() {
    let sim = start().await;
    let base = sim.base_url();
    let faults = json!([
        {"method": "GET", "pathPrefix": "/chat/v1/message/", "times": 2, "kind": "server_error", "status": 502},
    ]);
    let queued = client()
        .post(format!("{base}/_sim/faults"))
        .json(&faults)
        .send()
        .await
        .unwrap();
    assert_eq!(queued.status(), StatusCode::OK);
    assert_eq!(
        get(&sim, "/chat/v1/message/x").await.status(),
        StatusCode::BAD_GATEWAY
    );
    let cleared = client()
        .delete(format!("{base}/_sim/faults"))
        .send()
        .await
        .unwrap();
    assert_eq!(cleared.status(), StatusCode::OK);
    assert_eq!(
        get(&sim, "/chat/v1/message/x").await.status(),
        StatusCode::INTERNAL_SERVER_ERROR
    );

    post(
        &sim,
        "/chat/v1/session/s/message",
        &json!({"text": "logged"}),
    )
    .await;
    let log: Value = client()
        .get(format!("{base}/_sim/requests"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let last = log.as_array().unwrap().last().unwrap();
    assert_eq!(last["method"], "POST");
    assert_eq!(last["path"], "/chat/v1/session/s/message");
    assert_eq!(
        serde_json::from_str::<Value>(last["body"].as_str().unwrap()).unwrap(),
        json!({"text": "logged"})
    );
    let messages: Value = client()
        .get(format!("{base}/_sim/messages"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(messages[0]["text"], "logged");

    let session: Value = client()
        .post(format!("{base}/_sim/sessions"))
        .json(&json!({"id": "held", "agentName": "Ana", "tags": ["vip"]}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(session["agentDetails"]["name"], "Ana");
    assert_eq!(sim.session("held").unwrap().agent.unwrap().name, "Ana");

    client()
        .post(format!("{base}/_sim/reset"))
        .send()
        .await
        .unwrap();
    assert!(sim.all_messages().is_empty() && sim.requests().is_empty());
    sim.shutdown().await;
}

#[tokio::test]
async fn the_request_log_keeps_headers_query_and_body() {
    let sim = start().await;
    get(
        &sim,
        "/chat/v2/session/s?includeDetails=AgentDetails&includeDetails=ContactDetails",
    )
    .await;
    post(&sim, "/chat/v1/session/s/message", &json!({"text": "oi"})).await;
    let log = sim.requests();
    assert_eq!(log.len(), 2);
    assert_eq!(
        log[0].query_values("includeDetails"),
        ["AgentDetails", "ContactDetails"]
    );
    assert_eq!(log[0].header("authorization"), Some("Bearer sim-token"));
    assert_eq!(log[1].json().unwrap(), json!({"text": "oi"}));
    assert!(log[0].received_at <= log[1].received_at);
    sim.shutdown().await;
}

#[tokio::test]
async fn the_rate_limit_answers_429_over_either_window() {
    let sim = start().await;
    sim.set_rate_limit(Some(RateLimit {
        short_max: 5,
        short_window: Duration::from_millis(300),
        long_max: 100,
        long_window: Duration::from_secs(60),
    }));
    let mut statuses = Vec::new();
    for _ in 0..6 {
        statuses.push(get(&sim, "/chat/v2/session/s").await.status());
    }
    assert!(
        statuses[..5].iter().all(|s| *s == StatusCode::OK),
        "{statuses:?}"
    );
    assert_eq!(statuses[5], StatusCode::TOO_MANY_REQUESTS);
    tokio::time::sleep(Duration::from_millis(320)).await;
    assert_eq!(
        get(&sim, "/chat/v2/session/s").await.status(),
        StatusCode::OK
    );
    sim.set_rate_limit(None);
    for _ in 0..10 {
        assert_eq!(
            get(&sim, "/chat/v2/session/s").await.status(),
            StatusCode::OK
        );
    }
    sim.shutdown().await;
}

#[tokio::test]
async fn customers_post_captured_shaped_events_and_report_them() {
    let (url, mut events) = receiver(Duration::ZERO, 200).await;
    let sessions = customers::generated_sessions(3);
    let options = PlayOptions {
        rate: 400.0,
        concurrency: 4,
        text: "quero o manual".into(),
        sessions: sessions.clone(),
        ..PlayOptions::new(url.clone(), 40)
    };
    let report = customers::play(options).await.unwrap();
    assert_eq!(report.sent(), 40);
    assert_eq!(report.by_status()["200"], 40);
    assert!(report.p50().unwrap() <= report.p99().unwrap());
    assert!(
        report.elapsed >= Duration::from_millis(95),
        "39 gaps of 2.5 ms: {:?}",
        report.elapsed
    );
    let mut seen_sessions = std::collections::HashSet::new();
    for _ in 0..40 {
        let event = next_event(&mut events).await;
        assert_eq!(event["eventType"], "MESSAGE_RECEIVED");
        assert_eq!(event["content"]["direction"], "FROM_HUB");
        assert_eq!(event["content"]["origin"], "GATEWAY");
        assert_eq!(event["content"]["text"], "quero o manual");
        seen_sessions.insert(event["content"]["sessionId"].as_str().unwrap().to_owned());
    }
    assert_eq!(seen_sessions.len(), 3);

    let (failing_url, mut failing) = receiver(Duration::ZERO, 503).await;
    let report = customers::play(PlayOptions {
        event: CustomerEvent::SessionNew,
        ..PlayOptions::new(failing_url, 3)
    })
    .await
    .unwrap();
    assert_eq!(report.by_status()["503"], 3);
    let event = next_event(&mut failing).await;
    assert_eq!(event["eventType"], "SESSION_NEW");
    assert!(event["content"]["contactDetails"]["name"].is_string());
}
