//! The daemon's life: `kill -9` under load then a restart on the same database, a
//! graceful SIGTERM, and two instances sharing one PostgreSQL database.

use std::collections::{HashMap, HashSet};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use serde_json::Value;
use tokio::process::{Child, Command};
use wtsbot::config::Settings;
use wtsbot::sim::customers::message_received;
use wtsbot::sim::{Fault, FaultKind, WtsSim};
use wtsbot::startup::Application;
use wtsbot::store::Store;

use crate::helpers::{Backend, ScratchDatabase, eventually, start_sim};
use crate::on_both_backends;

const WEBHOOK_TOKEN: &str = "lifecycle-webhook-token-0123456789";
const ADMIN_TOKEN: &str = "lifecycle-admin-token-0123456789";
const ECHO_RULE: &str = "id = \"eco\"\n[when]\nagent = \"any\"\ntext_any = [\"pedido\"]\n[[reply]]\ntext = \"eco: {{message.text}}\"\n";

/// A rules directory with the echo rule: each reply names the message it answers.
fn rules_dir() -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("a temporary directory");
    std::fs::write(dir.path().join("eco.toml"), ECHO_RULE).expect("write the rule");
    dir
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

/// The daemon's configuration as environment variables.
fn daemon_env(
    database_url: &str,
    sim: &WtsSim,
    rules: &std::path::Path,
    bind: &str,
) -> Vec<(String, String)> {
    [
        ("WTSBOT__SERVER__BIND", bind),
        ("WTSBOT__DATABASE__URL", database_url),
        ("WTSBOT__RULES__DIR", &rules.display().to_string()),
        ("WTSBOT__WTS__BASE_URL", &sim.base_url()),
        ("WTSBOT__WTS__API_TOKEN", &sim.token()),
        ("WTSBOT__WTS__PACING", "false"),
        ("WTSBOT__WEBHOOK__TOKEN", WEBHOOK_TOKEN),
        ("WTSBOT__ADMIN__TOKEN", ADMIN_TOKEN),
        ("WTSBOT__BOT__LEASE", "1s"),
        // Many messages per session here are load, not a loop.
        ("WTSBOT__BOT__SESSION_REPLY_CAP", "1000"),
        ("WTSBOT__BOT__RETRY_SCHEDULE", "50ms,100ms,150ms"),
        ("WTSBOT__LOG__LEVEL", "warn"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect()
}

/// `wtsbot serve` as a child process.
struct Daemon {
    child: Child,
    address: String,
}

impl Daemon {
    async fn start(database_url: &str, sim: &WtsSim, rules: &std::path::Path) -> Daemon {
        let address = format!("127.0.0.1:{}", free_port());
        let mut command = Command::new(env!("CARGO_BIN_EXE_wtsbot"));
        command
            .arg("serve")
            .envs(daemon_env(database_url, sim, rules, &address))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .kill_on_drop(true);
        for (key, _) in std::env::vars().filter(|(k, _)| k.starts_with("WTSBOT__")) {
            command.env_remove(key);
        }
        let mut child = command.spawn().expect("start wtsbot serve");
        let client = reqwest::Client::new();
        let health = format!("http://{address}/healthz");
        eventually(
            "the daemon to answer /healthz",
            Duration::from_secs(20),
            || {
                let running = child.try_wait().expect("the child's status").is_none();
                assert!(running, "the daemon exited during start");
                let request = client.get(&health).send();
                async move { request.await.ok().filter(|r| r.status() == 200).map(|_| ()) }
            },
        )
        .await;
        Daemon {
            child,
            address: format!("http://{address}"),
        }
    }

    fn webhook_url(&self) -> String {
        format!("{}/webhooks/wts/{WEBHOOK_TOKEN}", self.address)
    }

    fn signal(&self, name: &str) {
        let pid = self.child.id().expect("the daemon runs").to_string();
        let status = std::process::Command::new("kill")
            .args([&format!("-{name}"), &pid])
            .status()
            .expect("run kill");
        assert!(status.success());
    }
}

/// How many replies each message text got.
fn replies(sim: &WtsSim) -> HashMap<String, usize> {
    let mut counts = HashMap::new();
    for message in sim.all_messages() {
        if let Some(text) = message
            .text
            .as_deref()
            .and_then(|t| t.strip_prefix("eco: "))
        {
            *counts.entry(text.to_string()).or_insert(0) += 1;
        }
    }
    counts
}

/// Posts `count` customer messages over `sessions` sessions, `concurrency` at a time,
/// round robin over `urls`; returns the texts whose webhook was acknowledged.
async fn post_messages(
    urls: Vec<String>,
    count: usize,
    sessions: usize,
    acknowledged: Arc<Mutex<HashSet<String>>>,
) {
    let client = reqwest::Client::new();
    futures::stream::iter(0..count)
        .for_each_concurrent(16, |n| {
            let client = client.clone();
            let url = urls[n % urls.len()].clone();
            let acknowledged = acknowledged.clone();
            async move {
                let text = format!("pedido {n}");
                let body = message_received(&format!("session-{}", n % sessions), &text);
                let answer = client.post(url).json(&body).send().await;
                if let Ok(answer) = answer
                    && answer.status() == 200
                    && answer
                        .json::<Value>()
                        .await
                        .is_ok_and(|a| a["status"] == "accepted")
                {
                    acknowledged.lock().unwrap().insert(text);
                }
            }
        })
        .await;
}

on_both_backends!(
    a_killed_daemon_resumes_every_acknowledged_event_once,
    sigterm_finishes_the_send_in_flight_and_exits_zero,
);

async fn a_killed_daemon_resumes_every_acknowledged_event_once(backend: Backend) {
    let sim = start_sim().await;
    let database = ScratchDatabase::create(backend).await;
    let rules = rules_dir();
    // Slow sends, so a backlog and sends in flight are there when the daemon dies.
    sim.push_fault(
        Fault::new(FaultKind::Latency {
            delay: Duration::from_millis(5),
        })
        .on("POST", "/chat/v1/session/")
        .times(10_000),
    );
    let mut daemon = Daemon::start(database.url(), &sim, rules.path()).await;
    let acknowledged = Arc::new(Mutex::new(HashSet::new()));
    let load = tokio::spawn(post_messages(
        vec![daemon.webhook_url()],
        400,
        40,
        acknowledged.clone(),
    ));
    eventually(
        "half the load acknowledged",
        Duration::from_secs(30),
        || async { (acknowledged.lock().unwrap().len() >= 200).then_some(()) },
    )
    .await;
    daemon.child.start_kill().expect("kill -9");
    daemon.child.wait().await.expect("the daemon dies");
    load.await.unwrap();
    let acknowledged = acknowledged.lock().unwrap().clone();
    let answered_before = replies(&sim).len();
    assert!(
        answered_before < acknowledged.len(),
        "the kill came with work left ({answered_before} of {} answered)",
        acknowledged.len()
    );

    let _daemon = Daemon::start(database.url(), &sim, rules.path()).await;
    eventually(
        "every acknowledged event answered",
        Duration::from_secs(60),
        || async {
            let counts = replies(&sim);
            acknowledged
                .iter()
                .all(|text| counts.contains_key(text))
                .then_some(())
        },
    )
    .await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let twice: Vec<_> = replies(&sim).into_iter().filter(|(_, n)| *n > 1).collect();
    assert!(twice.is_empty(), "answered twice: {twice:?}");
}

async fn sigterm_finishes_the_send_in_flight_and_exits_zero(backend: Backend) {
    let sim = start_sim().await;
    let database = ScratchDatabase::create(backend).await;
    let rules = rules_dir();
    sim.push_fault(
        Fault::new(FaultKind::Latency {
            delay: Duration::from_millis(800),
        })
        .on("POST", "/chat/v1/session/"),
    );
    let mut daemon = Daemon::start(database.url(), &sim, rules.path()).await;
    let body = message_received("session-term", "pedido final");
    let answer = reqwest::Client::new()
        .post(daemon.webhook_url())
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 200);
    eventually("the send to reach WTS", Duration::from_secs(10), || async {
        sim.requests()
            .iter()
            .any(|r| r.method == "POST" && r.path.ends_with("/message"))
            .then_some(())
    })
    .await;
    daemon.signal("TERM");
    let status = tokio::time::timeout(Duration::from_secs(15), daemon.child.wait())
        .await
        .expect("the daemon exits")
        .unwrap();
    assert!(status.success(), "{status:?}");

    assert_eq!(replies(&sim).get("pedido final"), Some(&1));
    let store = Store::connect(&wtsbot::config::DatabaseSettings {
        url: database.url().to_string().into(),
        synchronous: wtsbot::config::Synchronous::Full,
        max_connections: 1,
        statement_timeout: std::time::Duration::from_secs(5),
    })
    .await
    .unwrap();
    let statuses: Vec<String> = sqlx::query_scalar("SELECT status FROM jobs")
        .fetch_all(store.pool())
        .await
        .unwrap();
    assert_eq!(
        statuses,
        ["sent"],
        "the in-flight send was recorded before exit"
    );
    store.close().await;
}

#[tokio::test]
async fn two_instances_on_one_postgresql_send_every_reply_once() {
    let sim = start_sim().await;
    let database = ScratchDatabase::create(Backend::Postgres).await;
    let rules = rules_dir();
    let mut stops = Vec::new();
    let mut servers = Vec::new();
    let mut urls = Vec::new();
    for _ in 0..2 {
        let env = daemon_env(database.url(), &sim, rules.path(), "127.0.0.1:0");
        let settings = Settings::load_with_env(None, env).expect("valid settings");
        let app = Application::build(settings).await.expect("the app builds");
        urls.push(format!(
            "http://127.0.0.1:{}/webhooks/wts/{WEBHOOK_TOKEN}",
            app.port()
        ));
        stops.push(app.shutdown_token());
        servers.push(tokio::spawn(app.run_until_stopped()));
    }
    let acknowledged = Arc::new(Mutex::new(HashSet::new()));
    post_messages(urls, 300, 25, acknowledged.clone()).await;
    let acknowledged = acknowledged.lock().unwrap().clone();
    assert_eq!(acknowledged.len(), 300);
    eventually("every reply sent", Duration::from_secs(60), || async {
        (replies(&sim).len() == 300).then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let counts = replies(&sim);
    assert!(counts.values().all(|n| *n == 1), "{counts:?}");
    for stop in stops {
        stop.cancel();
    }
    for server in servers {
        server.await.unwrap().expect("a clean stop");
    }
}
