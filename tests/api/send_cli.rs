//! `wtsbot send-file` and `wtsbot send-text` as processes, against the in-process
//! simulator.

use std::io::Write;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use base64::Engine;
use wtsbot::sim::{Fault, FaultKind, SimSession, WtsSim};

use crate::helpers::start_sim;

/// Runs `wtsbot <args>` against `sim` (no token when `sim` is `None`), feeding `stdin`.
async fn wtsbot(sim: Option<&WtsSim>, args: &[&str], stdin: &[u8]) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_wtsbot"));
    for (name, _) in std::env::vars().filter(|(name, _)| name.starts_with("WTSBOT__")) {
        command.env_remove(name);
    }
    command
        .env_remove("RUST_LOG")
        .env("WTSBOT__BOT__RETRY_SCHEDULE", "10ms,10ms,10ms")
        .env("WTSBOT__WTS__TIMEOUT", "1s")
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    match sim {
        Some(sim) => command
            .env("WTSBOT__WTS__BASE_URL", sim.base_url())
            .env("WTSBOT__WTS__API_TOKEN", sim.token()),
        None => command.env("WTSBOT__WTS__BASE_URL", "http://127.0.0.1:9"),
    };
    let stdin = stdin.to_vec();
    // The simulator answers on this runtime: wait for the process on another thread.
    tokio::task::spawn_blocking(move || {
        let mut child = command.spawn().expect("wtsbot starts");
        let mut pipe = child.stdin.take().unwrap();
        pipe.write_all(&stdin).unwrap();
        drop(pipe);
        child.wait_with_output().unwrap()
    })
    .await
    .unwrap()
}

fn stdout(output: &Output) -> serde_json::Value {
    serde_json::from_slice(&output.stdout).unwrap_or_else(|e| {
        panic!(
            "stdout is not JSON ({e}): {}\nstderr: {}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        )
    })
}

/// The one stderr line of a failed run.
fn failure(output: &Output) -> String {
    assert!(
        !output.status.success(),
        "expected a failure; stdout: {}",
        String::from_utf8_lossy(&output.stdout)
    );
    let stderr = String::from_utf8_lossy(&output.stderr)
        .trim_end()
        .to_string();
    assert_eq!(stderr.lines().count(), 1, "one line expected: {stderr}");
    let parts: Vec<&str> = stderr.split(": ").collect();
    assert!(
        parts.windows(2).all(|pair| pair[0] != pair[1]),
        "a cause is repeated: {stderr}"
    );
    stderr
}

#[tokio::test]
async fn send_cli_sends_a_url_and_prints_the_answer() {
    let sim = start_sim().await;
    let session = sim.add_session(SimSession::new());
    let output = wtsbot(
        Some(&sim),
        &[
            "send-file",
            "--session",
            &session,
            "--url",
            "https://cdn.example.com/manual.pdf",
            "--text",
            "Segue o manual",
        ],
        b"",
    )
    .await;
    assert!(output.status.success(), "{output:?}");
    let answer = stdout(&output);
    let messages = sim.messages(&session);
    assert_eq!(messages.len(), 1);
    assert_eq!(answer["id"], messages[0].id.as_str());
    assert_eq!(
        messages[0].file_url.as_deref(),
        Some("https://cdn.example.com/manual.pdf")
    );
    assert_eq!(messages[0].text.as_deref(), Some("Segue o manual"));
}

#[tokio::test]
async fn send_cli_uploads_a_file_intact() {
    let sim = start_sim().await;
    let session = sim.add_session(SimSession::new());
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("manual.pdf");
    let mut content = b"%PDF-1.7\n".to_vec();
    content.extend((0..700_000u32).map(|i| (i * 7 % 253) as u8));
    std::fs::write(&path, &content).unwrap();

    let output = wtsbot(
        Some(&sim),
        &[
            "send-file",
            "--session",
            &session,
            "--file",
            path.to_str().unwrap(),
        ],
        b"",
    )
    .await;
    assert!(output.status.success(), "{output:?}");
    let uploads = sim.uploads();
    assert_eq!(uploads.len(), 1);
    assert!(uploads[0].bytes == content, "the bytes arrived altered");
    assert_eq!(uploads[0].name, "manual.pdf");
    let messages = sim.messages(&session);
    assert_eq!(messages[0].file_id.as_deref(), Some(&*uploads[0].id));
    assert_eq!(stdout(&output)["id"], messages[0].id.as_str());
}

#[tokio::test]
async fn send_cli_uploads_base64_from_stdin_with_a_name() {
    let sim = start_sim().await;
    let session = sim.add_session(SimSession::new());
    let content = b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR\0\0\0\x10 screenshot".to_vec();
    let encoded = base64::engine::general_purpose::STANDARD.encode(&content);
    let output = wtsbot(
        Some(&sim),
        &[
            "send-file",
            "--session",
            &session,
            "--file",
            "-",
            "--base64",
            "--name",
            "tela.png",
            "--sync",
        ],
        format!("{encoded}\n").as_bytes(),
    )
    .await;
    assert!(output.status.success(), "{output:?}");
    let upload = &sim.uploads()[0];
    assert_eq!(&upload.bytes[..], &content[..]);
    assert_eq!(upload.name, "tela.png");
    assert_eq!(upload.file_type, "IMAGE");
    let message = &sim.messages(&session)[0];
    assert!(message.sync);
    assert!(
        sim.requests()
            .iter()
            .any(|r| r.path == format!("/chat/v1/session/{session}/message/sync"))
    );
}

#[tokio::test]
async fn send_cli_sends_text_synchronously() {
    let sim = start_sim().await;
    let session = sim.add_session(SimSession::new());
    let output = wtsbot(
        Some(&sim),
        &[
            "send-text",
            "--session",
            &session,
            "--text",
            "Olá!",
            "--sync",
        ],
        b"",
    )
    .await;
    assert!(output.status.success(), "{output:?}");
    assert_eq!(stdout(&output)["text"], "Olá!");
    let message = &sim.messages(&session)[0];
    assert_eq!(message.text.as_deref(), Some("Olá!"));
    assert!(message.sync);
}

#[tokio::test]
async fn send_cli_refuses_bad_input_before_any_call() {
    let sim = start_sim().await;
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("manual.pdf");
    let missing = missing.to_str().unwrap();
    let url = "https://cdn.example.com/x.pdf";
    let cases: Vec<(Vec<&str>, &[u8], &str)> = vec![
        (
            vec!["send-file", "--session", " ", "--url", url],
            b"",
            "the session id is empty",
        ),
        (
            vec!["send-file", "--session", "s-1"],
            b"",
            "nothing to send: give --url URL or --file PATH",
        ),
        (
            vec![
                "send-file",
                "--session",
                "s-1",
                "--url",
                url,
                "--file",
                missing,
            ],
            b"",
            "either --url or --file, not both",
        ),
        (
            vec!["send-file", "--session", "s-1", "--file", missing],
            b"",
            missing,
        ),
        (
            vec!["send-file", "--session", "s-1", "--file", "-", "--base64"],
            b"this is not base64!",
            "standard input is not valid base64",
        ),
        (
            vec!["send-text", "--session", "", "--text", "oi"],
            b"",
            "the session id is empty",
        ),
    ];
    for (args, stdin, expected) in cases {
        let output = wtsbot(Some(&sim), &args, stdin).await;
        let line = failure(&output);
        assert!(line.starts_with("error: "), "{args:?}: {line}");
        assert!(line.contains(expected), "{args:?}: {line}");
    }
    assert!(sim.requests().is_empty(), "a call reached WTS");
}

#[tokio::test]
async fn send_cli_without_a_token_names_the_variable() {
    let output = wtsbot(
        None,
        &["send-text", "--session", "s-1", "--text", "oi"],
        b"",
    )
    .await;
    let line = failure(&output);
    assert!(line.contains("WTSBOT__WTS__API_TOKEN"), "{line}");
}

#[tokio::test]
async fn send_cli_shows_the_wts_error() {
    let sim = start_sim().await;
    sim.push_fault(
        Fault::new(FaultKind::FormError {
            text: "Contato não encontrado".into(),
        })
        .on("POST", "/chat/"),
    );
    let output = wtsbot(
        Some(&sim),
        &["send-text", "--session", "s-1", "--text", "oi"],
        b"",
    )
    .await;
    let line = failure(&output);
    assert!(
        line.contains("WTS answered 400 FORM_ERROR: Contato não encontrado"),
        "{line}"
    );
    assert_eq!(sim.requests().len(), 1, "a permanent error is not retried");
}

#[tokio::test]
async fn send_cli_retries_a_rate_limit_then_succeeds() {
    let sim = start_sim().await;
    let session = sim.add_session(SimSession::new());
    sim.push_fault(
        Fault::new(FaultKind::TooManyRequests {
            retry_after_secs: 0,
        })
        .on("POST", "/chat/"),
    );
    let output = wtsbot(
        Some(&sim),
        &["send-text", "--session", &session, "--text", "oi"],
        b"",
    )
    .await;
    assert!(output.status.success(), "{output:?}");
    assert_eq!(sim.requests().len(), 2);
    assert_eq!(sim.messages(&session).len(), 1);
}

#[tokio::test]
async fn send_cli_gives_up_after_the_schedule_with_the_last_error() {
    let sim = start_sim().await;
    sim.push_fault(
        Fault::new(FaultKind::ServerError { status: 502 })
            .on("POST", "/chat/")
            .times(100),
    );
    let output = wtsbot(
        Some(&sim),
        &["send-text", "--session", "s-1", "--text", "oi"],
        b"",
    )
    .await;
    let line = failure(&output);
    assert!(line.contains("WTS answered 502 INTERNAL_ERROR"), "{line}");
    assert_eq!(sim.requests().len(), 4, "one attempt and three retries");
}

#[tokio::test]
async fn send_cli_does_not_repeat_a_send_that_may_have_arrived() {
    let sim = start_sim().await;
    let session = sim.add_session(SimSession::new());
    sim.push_fault(Fault::new(FaultKind::DropAfterProcessing).on("POST", "/chat/"));
    let output = wtsbot(
        Some(&sim),
        &["send-text", "--session", &session, "--text", "oi"],
        b"",
    )
    .await;
    let line = failure(&output);
    assert!(line.contains("may have reached the session"), "{line}");
    assert_eq!(sim.messages(&session).len(), 1, "sent once, not twice");
}

#[tokio::test]
async fn send_cli_times_out_without_sending_twice() {
    let sim = start_sim().await;
    let session = sim.add_session(SimSession::new());
    sim.push_fault(
        Fault::new(FaultKind::Latency {
            delay: Duration::from_secs(3),
        })
        .on("POST", "/chat/"),
    );
    let started = Instant::now();
    let output = wtsbot(
        Some(&sim),
        &["send-text", "--session", &session, "--text", "oi"],
        b"",
    )
    .await;
    let line = failure(&output);
    assert!(started.elapsed() < Duration::from_millis(2500));
    assert!(
        line.contains("may have reached the session")
            && line.contains("WTS did not answer in time"),
        "{line}"
    );
    assert_eq!(
        sim.requests().len(),
        1,
        "a send that may have arrived is not repeated"
    );
}

#[tokio::test]
async fn send_cli_fails_when_wts_reports_the_message_failed() {
    let sim = start_sim().await;
    let session = sim.add_session(SimSession::new().with_channel_failure("Janela expirada"));
    let output = wtsbot(
        Some(&sim),
        &["send-text", "--session", &session, "--text", "oi"],
        b"",
    )
    .await;
    let line = failure(&output);
    assert!(line.contains("FAILED: Janela expirada"), "{line}");
    assert_eq!(stdout(&output)["status"], "FAILED");
}
