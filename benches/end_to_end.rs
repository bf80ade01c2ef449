//! End to end against the in-process simulator, pacing off: the simulator's own send round
//! trip (the floor), webhook → send latency at light load, ingest at 64 concurrent
//! connections, and sustained replies per second until the backlog is drained.
//!
//!     cargo bench --bench end_to_end -- sqlite 5000
//!     cargo bench --bench end_to_end -- postgres 5000   # WTSBOT_TEST_PG or the local server

use std::time::{Duration, Instant};

use secrecy::SecretString;
use sqlx::Connection;
use wtsbot::config::Settings;
use wtsbot::sim::customers::{PlayOptions, generated_sessions, message_received, play};
use wtsbot::sim::{SimConfig, WtsSim};
use wtsbot::startup::Application;
use wtsbot::store::Store;
use wtsbot::wts::{SendBody, Timeouts, Unpaced, WtsClient};

const RULE: &str = "id = \"echo\"\n[when]\nagent = \"any\"\ntext_any = [\"pedido\", \"manual\"]\n[[reply]]\ntext = \"recebido: {{message.text}}\"\n";
const TOKEN: &str = "bench-webhook-token-0123456789abcdef";
const LIGHT_LOAD_EVENTS: usize = 300;

fn percentile(mut samples: Vec<Duration>, q: f64) -> Duration {
    samples.sort();
    samples[((samples.len() as f64 - 1.0) * q).round() as usize]
}

fn sends_at_sim(sim: &WtsSim) -> Vec<Instant> {
    sim.requests()
        .into_iter()
        .filter(|r| r.method == "POST" && r.path.ends_with("/message"))
        .map(|r| r.received_at)
        .collect()
}

async fn database_url(backend: &str, dir: &std::path::Path) -> String {
    if backend != "postgres" {
        return format!("sqlite://{}?mode=rwc", dir.join("bench.db").display());
    }
    let server = std::env::var("WTSBOT_TEST_PG")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into());
    let name = format!("wtsbot_bench_{}", std::process::id());
    let mut admin = sqlx::PgConnection::connect(&server)
        .await
        .expect("PostgreSQL reachable");
    sqlx::query(&format!("DROP DATABASE IF EXISTS {name}"))
        .execute(&mut admin)
        .await
        .expect("drop the old bench database");
    sqlx::query(&format!("CREATE DATABASE {name}"))
        .execute(&mut admin)
        .await
        .expect("create the bench database");
    let base = server
        .rsplit_once('/')
        .map_or(server.as_str(), |(base, _)| base);
    format!("{base}/{name}")
}

async fn sent_jobs(store: &Store) -> usize {
    let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM jobs WHERE status = 'sent'")
        .fetch_one(store.pool())
        .await
        .expect("count sent jobs");
    n as usize
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .collect();
    let backend = args.first().cloned().unwrap_or_else(|| "sqlite".into());
    let total: usize = args.get(1).and_then(|s| s.parse().ok()).unwrap_or(5_000);

    let sim = WtsSim::start(SimConfig {
        delivery_delay: None,
        ..SimConfig::default()
    })
    .await
    .expect("simulator starts");
    let dir = tempfile::tempdir().expect("temp dir");
    std::fs::write(dir.path().join("echo.toml"), RULE).expect("write the rule");
    let env: Vec<(String, String)> = [
        ("WTSBOT__SERVER__BIND", "127.0.0.1:0".to_string()),
        (
            "WTSBOT__DATABASE__URL",
            database_url(&backend, dir.path()).await,
        ),
        ("WTSBOT__RULES__DIR", dir.path().display().to_string()),
        ("WTSBOT__WTS__BASE_URL", sim.base_url()),
        ("WTSBOT__WTS__API_TOKEN", sim.token()),
        ("WTSBOT__WTS__PACING", "false".into()),
        ("WTSBOT__WEBHOOK__TOKEN", TOKEN.into()),
        ("WTSBOT__ADMIN__TOKEN", TOKEN.into()),
        ("WTSBOT__BOT__SESSION_REPLY_CAP", "100000000".into()),
        ("WTSBOT__DATABASE__MAX_CONNECTIONS", "16".into()),
        ("WTSBOT__LOG__LEVEL", "error".into()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    let settings = Settings::load_with_env(None, env).expect("bench settings");
    let app = Application::build(settings).await.expect("daemon starts");
    let hook = format!("http://127.0.0.1:{}/webhooks/wts/{TOKEN}", app.port());
    let stop = app.shutdown_token();
    let store = app.store().clone();
    let server = tokio::spawn(app.run_until_stopped());
    let http = reqwest::Client::new();

    // The floor: the simulator's own send round trip.
    let client = WtsClient::new(
        &sim.base_url(),
        SecretString::from(sim.token()),
        Timeouts {
            connect: Duration::from_secs(2),
            request: Duration::from_secs(5),
        },
        std::sync::Arc::new(Unpaced),
    )
    .expect("client");
    let mut floor = Vec::new();
    for _ in 0..300 {
        let t = Instant::now();
        client
            .send_message("floor-session", &SendBody::text("floor"), false)
            .await
            .expect("floor send");
        floor.push(t.elapsed());
    }
    println!(
        "[{backend}] simulator send round trip (floor): p50 {:?} p99 {:?}",
        percentile(floor.clone(), 0.5),
        percentile(floor, 0.99)
    );
    sim.reset();

    // Light load: one webhook at a time, 20 ms apart; time until its reply reaches the sim.
    let mut latencies = Vec::new();
    for n in 0..LIGHT_LOAD_EVENTS {
        let body = message_received(&format!("light-{}", n % 20), &format!("pedido {n}"));
        let t0 = Instant::now();
        let answer = http.post(&hook).json(&body).send().await.expect("webhook");
        assert_eq!(answer.status(), 200);
        let arrived = loop {
            if let Some(at) = sends_at_sim(&sim).get(n) {
                break *at;
            }
            tokio::time::sleep(Duration::from_micros(200)).await;
        };
        latencies.push(arrived.saturating_duration_since(t0));
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    println!(
        "[{backend}] webhook -> send at the simulator, light load ({LIGHT_LOAD_EVENTS}): p50 {:?} p99 {:?}",
        percentile(latencies.clone(), 0.5),
        percentile(latencies, 0.99)
    );
    sim.reset();

    // Sustained: `total` webhooks, 64 at a time over 1,000 sessions, until all are answered.
    let before = sent_jobs(&store).await;
    let mut options = PlayOptions::new(hook.clone(), total);
    options.concurrency = 64;
    options.sessions = generated_sessions(1000);
    options.text = "pedido de carga".into();
    let started = Instant::now();
    let report = play(options).await.expect("load");
    let ingest = started.elapsed();
    println!(
        "[{backend}] ingest while replying: {} webhooks in {:?} ({:.0}/s), p50 {:?} p99 {:?}, statuses {:?}",
        report.sent(),
        ingest,
        report.sent() as f64 / ingest.as_secs_f64(),
        report.p50(),
        report.p99(),
        report.by_status()
    );
    let deadline = Duration::from_secs(900);
    while sent_jobs(&store).await - before < total && started.elapsed() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let drained = started.elapsed();
    let sent = sent_jobs(&store).await - before;
    println!(
        "[{backend}] sustained: {sent} of {total} replies sent {drained:?} after the first webhook: {:.0} replies/s",
        sent as f64 / drained.as_secs_f64()
    );
    stop.cancel();
    let _ = server.await;
}
