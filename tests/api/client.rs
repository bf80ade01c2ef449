//! The WTS client against the in-process simulator: sends, uploads, lookups,
//! subscriptions, error mapping, retries, timeouts and pacing.

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use secrecy::SecretString;
use wtsbot::sim::{Fault, FaultKind, RateLimit, SimAgent, SimDepartment, SimSession, WtsSim};
use wtsbot::wts::{
    Budget, MessageStatus, NewSubscription, Pacer, RetryPolicy, SendBody, SubscriptionUpdate,
    Timeouts, TokenBucketPacer, Unpaced, UploadSource, WtsClient, WtsError, retrying,
};

use crate::helpers::start_sim;

fn client_with(sim: &WtsSim, request_timeout: Duration, pacer: Arc<dyn Pacer>) -> WtsClient {
    WtsClient::new(
        &sim.base_url(),
        SecretString::from(sim.token()),
        Timeouts {
            connect: Duration::from_secs(2),
            request: request_timeout,
        },
        pacer,
    )
    .expect("the client builds")
}

fn client(sim: &WtsSim) -> WtsClient {
    client_with(sim, Duration::from_secs(5), Arc::new(Unpaced))
}

fn quick_retries(retries: usize) -> RetryPolicy {
    RetryPolicy::schedule(vec![Duration::from_millis(5); retries])
}

/// Bytes that start like a PDF and are not all alike, so a shifted or truncated copy
/// shows.
fn pdf_bytes(len: usize) -> Vec<u8> {
    let mut data = b"%PDF-1.7\n".to_vec();
    data.extend((0..len.saturating_sub(data.len())).map(|i| (i * 31 % 251) as u8));
    data
}

#[tokio::test]
async fn client_sends_a_file_url_with_the_bearer_token() {
    let sim = start_sim().await;
    let session = sim.add_session(SimSession::new());
    let sent = client(&sim)
        .send_message(
            &session,
            &SendBody::file_url("https://cdn.example.com/manual.pdf", Some("Manual".into())),
            false,
        )
        .await
        .unwrap();

    let messages = sim.messages(&session);
    assert_eq!(messages.len(), 1);
    assert_eq!(messages[0].id, sent.id);
    assert_eq!(
        messages[0].file_url.as_deref(),
        Some("https://cdn.example.com/manual.pdf")
    );
    assert_eq!(messages[0].text.as_deref(), Some("Manual"));
    assert!(!messages[0].sync);
    assert!(!sent.failed());
    let request = &sim.requests()[0];
    assert_eq!(request.path, format!("/chat/v1/session/{session}/message"));
    assert_eq!(
        request.header("authorization"),
        Some(format!("Bearer {}", sim.token()).as_str())
    );
    assert_eq!(
        request.json().unwrap(),
        serde_json::json!({"fileUrl": "https://cdn.example.com/manual.pdf", "text": "Manual"})
    );
}

#[tokio::test]
async fn client_uploads_a_file_intact_and_sends_its_id() {
    let sim = start_sim().await;
    let session = sim.add_session(SimSession::new());
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("manual.pdf");
    let content = pdf_bytes(3 * 1024 * 1024 + 17);
    std::fs::write(&path, &content).unwrap();
    let client = client(&sim);

    let file = client.upload(&UploadSource::file(&path)).await.unwrap();
    let sent = client
        .send_message(&session, &SendBody::file_id(&file.id, None), false)
        .await
        .unwrap();

    let uploads = sim.uploads();
    assert_eq!(uploads.len(), 1);
    assert_eq!(uploads[0].id, file.id);
    assert_eq!(uploads[0].bytes.len(), content.len());
    assert!(uploads[0].bytes == content, "the bytes arrived altered");
    assert_eq!(uploads[0].name, "manual.pdf");
    assert_eq!(uploads[0].file_type, "PDF");
    assert_eq!(
        uploads[0].put_content_type.as_deref(),
        Some("application/pdf")
    );
    assert_eq!(
        sim.messages(&session)[0].file_id.as_deref(),
        Some(&*file.id)
    );
    assert_eq!(sim.messages(&session)[0].id, sent.id);

    let requests = sim.requests();
    let ask = &requests[0];
    assert_eq!(
        (ask.method.as_str(), ask.path.as_str()),
        ("GET", "/core/v2/file")
    );
    assert_eq!(ask.query_values("Type"), ["PDF"]);
    assert_eq!(ask.query_values("Name"), ["manual.pdf"]);
    assert_eq!(ask.query_values("MimeType"), ["application/pdf"]);
    let put = &requests[1];
    assert_eq!(put.method, "PUT");
    assert_eq!(put.header("authorization"), None);
    assert_eq!(
        put.header("content-length"),
        Some(content.len().to_string().as_str())
    );
    assert_eq!(put.header("transfer-encoding"), None);
    let confirm = &requests[2];
    assert_eq!(
        (confirm.method.as_str(), confirm.path.as_str()),
        ("POST", "/core/v2/file")
    );
}

#[tokio::test]
async fn client_uploads_bytes_from_memory_with_a_sniffed_name() {
    let sim = start_sim().await;
    let png = b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR\0\0\0\x01".to_vec();
    let file = client(&sim)
        .upload(&UploadSource::memory(png.clone(), None))
        .await
        .unwrap();
    let upload = &sim.uploads()[0];
    assert_eq!(upload.id, file.id);
    assert_eq!(upload.name, "file.png");
    assert_eq!(upload.file_type, "IMAGE");
    assert_eq!(&upload.bytes[..], &png[..]);
}

#[tokio::test]
async fn client_sync_send_uses_the_sync_path_and_reads_the_full_answer() {
    let sim = start_sim().await;
    let session = sim.add_session(SimSession::new());
    let sent = client(&sim)
        .send_message(&session, &SendBody::text("olá"), true)
        .await
        .unwrap();
    let request = &sim.requests()[0];
    assert_eq!(
        request.path,
        format!("/chat/v1/session/{session}/message/sync")
    );
    assert!(sim.messages(&session)[0].sync);
    assert_eq!(sent.raw["text"], "olá");
    assert!(sent.status.is_some());
}

#[tokio::test]
async fn client_reports_a_failed_channel_in_both_answer_shapes() {
    let sim = start_sim().await;
    let session = sim.add_session(SimSession::new().with_channel_failure("Janela de 24h expirada"));
    let client = client(&sim);
    for sync in [false, true] {
        let sent = client
            .send_message(&session, &SendBody::text("oi"), sync)
            .await
            .unwrap();
        assert!(sent.failed(), "sync={sync}: {:?}", sent.raw);
        assert_eq!(sent.status, Some(MessageStatus::Failed));
        assert_eq!(
            sent.failure_reason.as_deref(),
            Some("Janela de 24h expirada"),
            "sync={sync}: {:?}",
            sent.raw
        );
    }
}

#[tokio::test]
async fn client_error_keeps_status_key_and_text() {
    let sim = start_sim().await;
    sim.push_fault(
        Fault::new(FaultKind::FormError {
            text: "Contato não encontrado".into(),
        })
        .on("POST", "/chat/"),
    );
    let err = client(&sim)
        .send_message("s-1", &SendBody::text("oi"), false)
        .await
        .unwrap_err();
    assert_eq!(err.status(), Some(400));
    assert_eq!(err.key(), Some("FORM_ERROR"));
    assert_eq!(err.text(), Some("Contato não encontrado"));
    assert!(!err.is_retryable());
    assert_eq!(
        err.to_string(),
        "WTS answered 400 FORM_ERROR: Contato não encontrado"
    );
}

#[tokio::test]
async fn client_with_a_wrong_token_is_unauthorized() {
    let sim = start_sim().await;
    let client = WtsClient::new(
        &sim.base_url(),
        SecretString::from("wrong"),
        Timeouts {
            connect: Duration::from_secs(1),
            request: Duration::from_secs(2),
        },
        Arc::new(Unpaced),
    )
    .unwrap();
    let err = client.get_session("s-1").await.unwrap_err();
    assert_eq!(err.status(), Some(401));
    assert_eq!(err.key(), Some("ERROR_UNAUTHORIZED"));
    assert!(!err.is_retryable());
}

#[tokio::test]
async fn client_retries_a_rate_limit_then_succeeds() {
    let sim = start_sim().await;
    let session = sim.add_session(SimSession::new());
    sim.push_fault(
        Fault::new(FaultKind::TooManyRequests {
            retry_after_secs: 1,
        })
        .on("POST", "/chat/")
        .times(1),
    );
    let client = client(&sim);
    let body = SendBody::text("oi");
    let started = Instant::now();
    let sent = retrying(&quick_retries(3), || {
        client.send_message(&session, &body, false)
    })
    .await
    .unwrap();
    // The schedule says 5 ms; WTS said one second, and that wins.
    assert!(started.elapsed() >= Duration::from_secs(1));
    assert_eq!(sim.requests().len(), 2);
    assert_eq!(sim.messages(&session).len(), 1);
    assert_eq!(sim.messages(&session)[0].id, sent.id);
}

#[tokio::test]
async fn client_gives_up_on_persistent_server_errors_with_the_last_error() {
    let sim = start_sim().await;
    sim.push_fault(
        Fault::new(FaultKind::ServerError { status: 503 })
            .on("POST", "/chat/")
            .times(100),
    );
    let client = client(&sim);
    let body = SendBody::text("oi");
    let err = retrying(&quick_retries(3), || {
        client.send_message("s-1", &body, false)
    })
    .await
    .unwrap_err();
    assert_eq!(sim.requests().len(), 4, "one attempt and three retries");
    assert_eq!(err.status(), Some(503));
    assert_eq!(err.key(), Some("INTERNAL_ERROR"));
    assert!(err.is_retryable());
    assert!(sim.all_messages().is_empty());
}

#[tokio::test]
async fn client_times_out_and_says_the_outcome_is_unknown() {
    let sim = start_sim().await;
    sim.push_fault(
        Fault::new(FaultKind::Latency {
            delay: Duration::from_secs(3),
        })
        .on("POST", "/chat/"),
    );
    let client = client_with(&sim, Duration::from_millis(300), Arc::new(Unpaced));
    let started = Instant::now();
    let err = client
        .send_message("s-1", &SendBody::text("oi"), false)
        .await
        .unwrap_err();
    assert!(started.elapsed() < Duration::from_secs(2));
    assert!(
        matches!(err, WtsError::Timeout { connecting: false }),
        "{err:?}"
    );
    assert!(err.is_retryable());
    assert!(err.outcome_unknown());
}

#[tokio::test]
async fn client_connection_dropped_after_processing_is_an_unknown_outcome() {
    let sim = start_sim().await;
    let session = sim.add_session(SimSession::new());
    sim.push_fault(Fault::new(FaultKind::DropAfterProcessing).on("POST", "/chat/"));
    let err = client(&sim)
        .send_message(&session, &SendBody::text("oi"), false)
        .await
        .unwrap_err();
    assert!(matches!(err, WtsError::Transport(_)), "{err:?}");
    assert!(err.is_retryable() && err.outcome_unknown());
    // WTS did store it: this is why such a send must not be repeated blindly.
    assert_eq!(sim.messages(&session).len(), 1);
}

#[tokio::test]
async fn client_session_lookup_maps_agent_contact_and_tags() {
    let sim = start_sim().await;
    let agent = SimAgent::named("Ana");
    let department = SimDepartment::named("Suporte");
    let session = sim.add_session(
        SimSession::new()
            .with_contact_name("Maria")
            .with_tags(&["vip", "b2b"])
            .with_agent(agent.clone())
            .with_department(department.clone())
            .with_channel("chan-1"),
    );
    let details = client(&sim).get_session(&session).await.unwrap();
    assert_eq!(details.id, session);
    let found = details.agent.expect("the session has an agent");
    assert_eq!(found.id, agent.user_id);
    assert_eq!(found.name.as_deref(), Some("Ana"));
    assert_eq!(details.contact_name.as_deref(), Some("Maria"));
    assert_eq!(details.contact_tags, ["vip", "b2b"]);
    assert_eq!(details.department_id.as_deref(), Some(&*department.id));
    assert_eq!(details.channel_id.as_deref(), Some("chan-1"));
    assert!(details.contact_phone.unwrap().starts_with("+55"));

    let request = &sim.requests()[0];
    assert_eq!(request.path, format!("/chat/v2/session/{session}"));
    let mut included = request.query_values("includeDetails");
    included.sort();
    assert_eq!(
        included,
        [
            "AgentDetails",
            "ChannelDetails",
            "ContactDetails",
            "DepartmentsDetails"
        ]
    );
}

#[tokio::test]
async fn client_lists_every_page_of_session_messages() {
    let sim = start_sim().await;
    let session = sim.add_session(SimSession::new());
    let client = client(&sim);
    for n in 0..130 {
        client
            .send_message(&session, &SendBody::text(format!("m{n}")), false)
            .await
            .unwrap();
    }
    let listed = client.list_session_messages(&session, None).await.unwrap();
    assert_eq!(listed.len(), 130);
    assert_eq!(listed[0].text.as_deref(), Some("m0"));
    assert_eq!(listed[129].text.as_deref(), Some("m129"));
    assert!(listed[0].created_at.is_some());

    let list_requests: Vec<_> = sim
        .requests()
        .into_iter()
        .filter(|r| r.method == "GET")
        .collect();
    assert_eq!(list_requests.len(), 2);
    assert_eq!(list_requests[1].query_values("pageNumber"), ["2"]);
    assert_eq!(list_requests[1].query_values("pageSize"), ["100"]);

    let later = chrono::Utc::now() + chrono::Duration::seconds(60);
    let none = client
        .list_session_messages(&session, Some(later))
        .await
        .unwrap();
    assert!(none.is_empty());
}

#[tokio::test]
async fn client_manages_webhook_subscriptions() {
    let sim = start_sim().await;
    let client = client(&sim);
    let events = client.list_webhook_events().await.unwrap();
    assert!(events.iter().any(|e| e.event == "MESSAGE_RECEIVED"));

    let created = client
        .create_subscription(&NewSubscription {
            name: "wtsbot".into(),
            url: "http://127.0.0.1:9/webhooks/wts/token".into(),
            enabled: true,
            events: vec!["MESSAGE_RECEIVED".into()],
        })
        .await
        .unwrap();
    assert_eq!(created.events, ["MESSAGE_RECEIVED"]);

    let updated = client
        .update_subscription(
            &created.id,
            &SubscriptionUpdate {
                events: Some(vec!["MESSAGE_RECEIVED".into(), "SESSION_UPDATE".into()]),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(updated.events, ["MESSAGE_RECEIVED", "SESSION_UPDATE"]);
    assert_eq!(updated.name, "wtsbot");
    let put = sim
        .requests()
        .into_iter()
        .find(|r| r.method == "PUT")
        .unwrap();
    assert_eq!(put.json().unwrap()["fields"], serde_json::json!(["Events"]));

    assert_eq!(client.list_subscriptions().await.unwrap(), vec![updated]);
    client.delete_subscription(&created.id).await.unwrap();
    assert!(client.list_subscriptions().await.unwrap().is_empty());
}

/// Sends `count` texts, `concurrency` at a time, in single attempts; returns the errors.
async fn burst(
    client: &WtsClient,
    session: &str,
    count: usize,
    concurrency: usize,
) -> Vec<WtsError> {
    futures::stream::iter(0..count)
        .map(|n| async move {
            let body = SendBody::text(format!("m{n}"));
            client.send_message(session, &body, false).await
        })
        .buffer_unordered(concurrency)
        .filter_map(|result| async move { result.err() })
        .collect()
        .await
}

/// The most requests the simulator received within any `window`.
fn busiest_window(sim: &WtsSim, window: Duration) -> usize {
    let times: Vec<Instant> = sim.requests().iter().map(|r| r.received_at).collect();
    (0..times.len())
        .map(|start| {
            times[start..]
                .iter()
                .take_while(|t| t.duration_since(times[start]) < window)
                .count()
        })
        .max()
        .unwrap_or(0)
}

#[tokio::test]
async fn client_pacing_holds_a_burst_of_500_under_the_rate() {
    let short = Duration::from_millis(250);
    let long = Duration::from_secs(5);
    let limit = RateLimit {
        short_max: 100,
        short_window: short,
        long_max: 1000,
        long_window: long,
    };
    let sim = start_sim().await;
    sim.set_rate_limit(Some(limit));
    let session = sim.add_session(SimSession::new());
    let pacer = TokenBucketPacer::new(&[
        Budget::new(100, short).unwrap(),
        Budget::new(1000, long).unwrap(),
    ]);
    let client = client_with(&sim, Duration::from_secs(5), Arc::new(pacer));

    let started = Instant::now();
    let errors = burst(&client, &session, 500, 16).await;
    let elapsed = started.elapsed();

    assert!(
        errors.is_empty(),
        "{} errors, first: {}",
        errors.len(),
        errors[0]
    );
    assert_eq!(sim.messages(&session).len(), 500);
    assert!(busiest_window(&sim, short) <= 100);
    // 500 calls at 100 per 250 ms cannot take less than about four windows.
    assert!(elapsed >= Duration::from_millis(1000), "{elapsed:?}");
}

#[tokio::test]
async fn client_without_pacing_trips_the_same_limit() {
    let sim = start_sim().await;
    sim.set_rate_limit(Some(RateLimit {
        short_max: 100,
        short_window: Duration::from_secs(5),
        long_max: 1000,
        long_window: Duration::from_secs(5),
    }));
    let session = sim.add_session(SimSession::new());
    let errors = burst(&client(&sim), &session, 150, 16).await;
    assert_eq!(errors.len(), 50);
    assert!(errors.iter().all(|e| e.status() == Some(429)));
}
