//! The webhook subscription: `wtsbot webhook register|list|unregister` as processes, and
//! the daemon keeping it in step with its rules, against the in-process simulator.

use std::process::{Command, Output};
use std::sync::Arc;
use std::time::Duration;

use wtsbot::registration::SubscriptionKeeper;
use wtsbot::rules::{Rule, RuleEngine, Snapshot};
use wtsbot::sim::{Fault, FaultKind, SimSubscription, WtsSim};
use wtsbot::wts::{NewSubscription, RetryPolicy, Timeouts, Unpaced, WtsClient};

use crate::helpers::{Backend, TestAppBuilder, start_sim};

const URL: &str = "https://bot.example.com/webhooks/wts/0123456789abcdef0123";
const SUBSCRIPTIONS: &str = "/core/v1/webhook/subscription";
const BUILT_IN: [&str; 4] = [
    "CONTACT_TAG_UPDATE",
    "MESSAGE_UPDATED",
    "SESSION_COMPLETE",
    "SESSION_UPDATE",
];

/// A temporary rules directory and database for CLI runs.
struct Workspace {
    dir: tempfile::TempDir,
}

impl Workspace {
    fn new() -> Workspace {
        let dir = tempfile::tempdir().expect("a temporary directory");
        std::fs::create_dir(dir.path().join("rules")).unwrap();
        Workspace { dir }
    }

    fn rules(&self) -> std::path::PathBuf {
        self.dir.path().join("rules")
    }

    fn write_rule(&self, file: &str, toml: &str) {
        std::fs::write(self.rules().join(file), toml).unwrap();
    }

    /// Runs `wtsbot <args>` against `sim` with `token`, on this workspace.
    async fn wtsbot(&self, sim: &WtsSim, token: &str, args: &[&str]) -> Output {
        let mut command = Command::new(env!("CARGO_BIN_EXE_wtsbot"));
        for (name, _) in std::env::vars().filter(|(name, _)| name.starts_with("WTSBOT__")) {
            command.env_remove(name);
        }
        let database = format!(
            "sqlite://{}?mode=rwc",
            self.dir.path().join("wtsbot.db").display()
        );
        command
            .env_remove("RUST_LOG")
            .env("WTSBOT__WTS__BASE_URL", sim.base_url())
            .env("WTSBOT__WTS__API_TOKEN", token)
            .env("WTSBOT__DATABASE__URL", database)
            .env("WTSBOT__RULES__DIR", self.rules())
            .args(args);
        // The simulator answers on this runtime: wait for the process on another thread.
        tokio::task::spawn_blocking(move || command.output().expect("wtsbot runs"))
            .await
            .unwrap()
    }
}

fn success(output: &Output) -> String {
    let stdout = String::from_utf8_lossy(&output.stdout).to_string();
    assert!(
        output.status.success(),
        "expected success; stdout: {stdout}\nstderr: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    stdout
}

fn failure(output: &Output) -> String {
    assert!(
        !output.status.success(),
        "expected a failure; stdout: {}",
        String::from_utf8_lossy(&output.stdout)
    );
    String::from_utf8_lossy(&output.stderr)
        .trim_end()
        .to_string()
}

/// Write calls (POST, PUT, DELETE) the simulator received on subscriptions.
fn subscription_writes(sim: &WtsSim) -> Vec<(String, Option<serde_json::Value>)> {
    sim.requests()
        .into_iter()
        .filter(|r| r.path.starts_with(SUBSCRIPTIONS) && r.method != "GET")
        .map(|r| (r.method.clone(), r.json()))
        .collect()
}

fn sorted(events: &[String]) -> Vec<String> {
    let mut events = events.to_vec();
    events.sort();
    events
}

fn with_built_in(events: &[&str]) -> Vec<String> {
    let mut all: Vec<String> = events
        .iter()
        .chain(&BUILT_IN)
        .map(|e| e.to_string())
        .collect();
    all.sort();
    all
}

const MANUAL_RULE: &str = r#"
id = "manual"
[when]
text_any = ["manual"]
[[reply]]
text = "Segue o manual"
"#;

const WELCOME_RULE: &str = r#"
id = "welcome"
on = ["SESSION_NEW"]
[[reply]]
text = "Bem-vindo!"
"#;

fn only_subscription(sim: &WtsSim) -> SimSubscription {
    let subscriptions = sim.subscriptions();
    assert_eq!(subscriptions.len(), 1, "{subscriptions:?}");
    subscriptions.into_iter().next().unwrap()
}

#[tokio::test]
async fn registration_register_is_idempotent_and_follows_the_rules_events() {
    let sim = start_sim().await;
    let workspace = Workspace::new();
    workspace.write_rule("manual.toml", MANUAL_RULE);
    let register = ["webhook", "register", "--url", URL];

    let stdout = success(&workspace.wtsbot(&sim, &sim.token(), &register).await);
    assert!(
        stdout.starts_with("Created webhook subscription"),
        "{stdout}"
    );
    assert!(
        !stdout.contains("0123456789abcdef0123"),
        "the token is masked: {stdout}"
    );
    let created = only_subscription(&sim);
    assert_eq!(created.url, URL);
    assert_eq!(created.name, "wtsbot");
    assert!(created.enabled);
    assert_eq!(
        sorted(&created.events),
        with_built_in(&["MESSAGE_RECEIVED"])
    );
    assert_eq!(subscription_writes(&sim).len(), 1);

    let stdout = success(&workspace.wtsbot(&sim, &sim.token(), &register).await);
    assert!(stdout.contains("up to date; nothing changed"), "{stdout}");
    assert_eq!(
        subscription_writes(&sim).len(),
        1,
        "a second run writes nothing"
    );
    assert_eq!(only_subscription(&sim), created);

    workspace.write_rule("welcome.toml", WELCOME_RULE);
    let stdout = success(&workspace.wtsbot(&sim, &sim.token(), &register).await);
    assert!(stdout.contains("(Events)"), "{stdout}");
    let writes = subscription_writes(&sim);
    assert_eq!(writes.len(), 2);
    let (method, body) = &writes[1];
    assert_eq!(method, "PUT");
    let body = body.clone().expect("a JSON body");
    assert_eq!(body["fields"], serde_json::json!(["Events"]));
    let updated = only_subscription(&sim);
    assert_eq!(updated.id, created.id);
    assert_eq!(
        sorted(&updated.events),
        with_built_in(&["MESSAGE_RECEIVED", "SESSION_NEW"])
    );
}

#[tokio::test]
async fn registration_without_rules_listens_to_customer_messages_and_explicit_events_win() {
    let sim = start_sim().await;
    let workspace = Workspace::new();
    success(
        &workspace
            .wtsbot(&sim, &sim.token(), &["webhook", "register", "--url", URL])
            .await,
    );
    assert_eq!(
        sorted(&only_subscription(&sim).events),
        with_built_in(&["MESSAGE_RECEIVED"])
    );

    let args = [
        "webhook",
        "register",
        "--url",
        URL,
        "--events",
        "session_new,MESSAGE_RECEIVED",
    ];
    let stdout = success(&workspace.wtsbot(&sim, &sim.token(), &args).await);
    assert!(stdout.contains("Updated"), "{stdout}");
    assert_eq!(
        sorted(&only_subscription(&sim).events),
        ["MESSAGE_RECEIVED", "SESSION_NEW"]
    );

    let typo = [
        "webhook",
        "register",
        "--url",
        URL,
        "--events",
        "MESSAGE_RECIEVED",
    ];
    let stderr = failure(&workspace.wtsbot(&sim, &sim.token(), &typo).await);
    assert!(
        stderr.contains("unknown WTS event `MESSAGE_RECIEVED`"),
        "{stderr}"
    );
}

#[tokio::test]
async fn registration_matches_by_name_then_updates_url_and_enables() {
    let sim = start_sim().await;
    let client = sim_client(&sim);
    let old = client
        .create_subscription(&NewSubscription {
            name: "wtsbot".into(),
            url: "https://old.example.com/webhooks/wts/old-token-0000000000".into(),
            enabled: false,
            events: with_built_in(&["MESSAGE_RECEIVED"]),
        })
        .await
        .unwrap();
    client
        .create_subscription(&NewSubscription {
            name: "crm".into(),
            url: "https://crm.example.com/hook".into(),
            enabled: true,
            events: vec!["CONTACT_NEW".into()],
        })
        .await
        .unwrap();
    let workspace = Workspace::new();
    let stdout = success(
        &workspace
            .wtsbot(&sim, &sim.token(), &["webhook", "register", "--url", URL])
            .await,
    );
    assert!(stdout.contains("(Url, Enabled)"), "{stdout}");
    let ours = sim
        .subscriptions()
        .into_iter()
        .find(|s| s.id == old.id)
        .unwrap();
    assert_eq!(ours.url, URL);
    assert!(ours.enabled);
    assert_eq!(
        sim.subscriptions().len(),
        2,
        "the other subscription is left alone"
    );
}

#[tokio::test]
async fn registration_list_and_unregister() {
    let sim = start_sim().await;
    let workspace = Workspace::new();
    let token = sim.token();
    let stdout = success(&workspace.wtsbot(&sim, &token, &["webhook", "list"]).await);
    assert_eq!(stdout.trim(), "No webhook subscriptions.");

    success(
        &workspace
            .wtsbot(&sim, &token, &["webhook", "register", "--url", URL])
            .await,
    );
    let id = only_subscription(&sim).id;
    let stdout = success(&workspace.wtsbot(&sim, &token, &["webhook", "list"]).await);
    assert!(stdout.contains(&id), "{stdout}");
    assert!(
        stdout.contains("https://bot.example.com/webhooks/wts/********"),
        "{stdout}"
    );
    assert!(!stdout.contains("0123456789abcdef0123"), "{stdout}");
    assert!(stdout.contains("MESSAGE_RECEIVED"), "{stdout}");

    let unregister = ["webhook", "unregister", "--url", URL];
    let stdout = success(&workspace.wtsbot(&sim, &token, &unregister).await);
    assert!(
        stdout.contains(&format!("Deleted webhook subscription {id}")),
        "{stdout}"
    );
    assert!(sim.subscriptions().is_empty());

    let stderr = failure(&workspace.wtsbot(&sim, &token, &unregister).await);
    assert!(
        stderr.contains(
            "no webhook subscription has the URL https://bot.example.com/webhooks/wts/********"
        ),
        "{stderr}"
    );
}

#[tokio::test]
async fn registration_surfaces_wts_errors_with_key_and_text() {
    let sim = start_sim().await;
    let workspace = Workspace::new();
    let register = ["webhook", "register", "--url", URL];

    let stderr = failure(&workspace.wtsbot(&sim, "wrong-token", &register).await);
    assert!(
        stderr.contains("cannot list the webhook subscriptions"),
        "{stderr}"
    );
    assert!(stderr.contains("401 ERROR_UNAUTHORIZED"), "{stderr}");

    sim.push_fault(
        Fault::new(FaultKind::FormError {
            text: "url inválida".into(),
        })
        .on("POST", SUBSCRIPTIONS),
    );
    let stderr = failure(&workspace.wtsbot(&sim, &sim.token(), &register).await);
    assert!(
        stderr.contains("cannot create the webhook subscription"),
        "{stderr}"
    );
    assert!(stderr.contains("400 FORM_ERROR: url inválida"), "{stderr}");
    assert!(sim.subscriptions().is_empty());

    let stderr = failure(
        &workspace
            .wtsbot(
                &sim,
                &sim.token(),
                &["webhook", "register", "--url", "not a url"],
            )
            .await,
    );
    assert!(stderr.contains("`not a url` is not a URL"), "{stderr}");
}

fn sim_client(sim: &WtsSim) -> WtsClient {
    WtsClient::new(
        &sim.base_url(),
        sim.token().into(),
        Timeouts {
            connect: Duration::from_secs(2),
            request: Duration::from_secs(5),
        },
        Arc::new(Unpaced),
    )
    .unwrap()
}

fn rule(toml: &str) -> Rule {
    toml::from_str(toml).unwrap()
}

/// Polls `check` every 20 ms for up to 10 s.
async fn eventually(what: &str, check: impl Fn() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !check() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting: {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn registration_keeper_retries_outages_and_follows_snapshot_changes() {
    let sim = start_sim().await;
    sim.push_fault(
        Fault::new(FaultKind::ServerError { status: 503 })
            .on("GET", SUBSCRIPTIONS)
            .times(2),
    );
    let engine = Arc::new(RuleEngine::new(
        Snapshot::compile([rule(MANUAL_RULE)]).unwrap(),
    ));
    let keeper = SubscriptionKeeper {
        client: Arc::new(sim_client(&sim)),
        engine: engine.clone(),
        name: "wtsbot".into(),
        url: URL.into(),
        retry: RetryPolicy::exponential(
            Duration::from_millis(10),
            Duration::from_millis(50),
            u32::MAX,
        ),
        check_every: Duration::from_millis(20),
    };
    let stop = tokio_util::sync::CancellationToken::new();
    let running = tokio::spawn(keeper.run(stop.clone()));

    eventually("the subscription is created after the outage", || {
        sim.subscriptions().len() == 1
    })
    .await;
    let gets = sim
        .requests()
        .iter()
        .filter(|r| r.method == "GET" && r.path == SUBSCRIPTIONS)
        .count();
    assert_eq!(gets, 3, "two failed lists, then one that worked");
    assert_eq!(
        sorted(&only_subscription(&sim).events),
        with_built_in(&["MESSAGE_RECEIVED"])
    );

    // A new snapshot with the same events changes nothing at WTS.
    engine.swap(Snapshot::compile([rule(MANUAL_RULE)]).unwrap());
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(subscription_writes(&sim).len(), 1);

    engine.swap(Snapshot::compile([rule(MANUAL_RULE), rule(WELCOME_RULE)]).unwrap());
    let want = with_built_in(&["MESSAGE_RECEIVED", "SESSION_NEW"]);
    eventually("the events follow the rules", || {
        sorted(&only_subscription(&sim).events) == want
    })
    .await;
    assert_eq!(subscription_writes(&sim).len(), 2, "one create, one update");

    stop.cancel();
    running.await.unwrap().expect("the keeper stops cleanly");
}

async fn serve_ensures_the_subscription_at_start(backend: Backend) {
    let sim = start_sim().await;
    let app = TestAppBuilder::new(backend)
        .wts(&sim.base_url(), &sim.token())
        .setting("webhook.public_url", URL)
        .spawn()
        .await;
    eventually("serve registers its webhook", || {
        sim.subscriptions().len() == 1
    })
    .await;
    let subscription = only_subscription(&sim);
    assert_eq!(subscription.url, URL);
    assert_eq!(
        sorted(&subscription.events),
        with_built_in(&["MESSAGE_RECEIVED"])
    );
    // Taking webhooks does not wait for WTS.
    assert_eq!(app.get("/healthz").await.status(), reqwest::StatusCode::OK);
}

async fn serve_takes_webhooks_while_wts_is_down(backend: Backend) {
    let app = TestAppBuilder::new(backend)
        .setting("wts.api_token", "unreachable-wts-token")
        .setting("webhook.public_url", URL)
        .spawn()
        .await;
    let body = serde_json::json!({
        "eventType": "MESSAGE_RECEIVED",
        "content": {"id": "m-1", "sessionId": "s-1", "direction": "FROM_HUB", "text": "oi"}
    });
    let answer = app.post_webhook(&body).await;
    assert_eq!(answer.status(), reqwest::StatusCode::OK);
}

crate::on_both_backends!(
    serve_ensures_the_subscription_at_start,
    serve_takes_webhooks_while_wts_is_down
);

#[tokio::test]
async fn registration_reads_enabled_api_rules_from_the_database() {
    let sim = start_sim().await;
    let workspace = Workspace::new();
    let store = wtsbot::store::Store::connect(&wtsbot::config::DatabaseSettings {
        url: format!(
            "sqlite://{}?mode=rwc",
            workspace.dir.path().join("wtsbot.db").display()
        )
        .into(),
        synchronous: wtsbot::config::Synchronous::Normal,
        max_connections: 1,
        statement_timeout: std::time::Duration::from_secs(5),
    })
    .await
    .unwrap();
    store.migrate().await.unwrap();
    let rows = [
        (
            "welcome",
            r#"{"id":"welcome","on":["SESSION_NEW"],"reply":[{"text":"Oi"}]}"#,
            "api",
        ),
        (
            "paused",
            r#"{"id":"paused","enabled":false,"on":["CONTACT_NEW"],"reply":[{"text":"Oi"}]}"#,
            "api",
        ),
        // A file rule whose file is gone: rules/ is the truth for file rules.
        (
            "stale",
            r#"{"id":"stale","on":["PAYMENT_NEW"],"reply":[{"text":"Oi"}]}"#,
            "file",
        ),
    ];
    for (id, definition, source) in rows {
        sqlx::query(
            "INSERT INTO rules (id, definition, source, revision, created_at, updated_at) \
             VALUES ($1, $2, $3, 1, 0, 0)",
        )
        .bind(id)
        .bind(definition)
        .bind(source)
        .execute(store.pool())
        .await
        .unwrap();
    }
    store.close().await;
    workspace.write_rule("manual.toml", MANUAL_RULE);

    success(
        &workspace
            .wtsbot(&sim, &sim.token(), &["webhook", "register", "--url", URL])
            .await,
    );
    assert_eq!(
        sorted(&only_subscription(&sim).events),
        with_built_in(&["MESSAGE_RECEIVED", "SESSION_NEW"])
    );
}
