//! The daemon in process for tests: `spawn_app(backend)` serves on 127.0.0.1:0 with a
//! fresh database (a temporary SQLite file, or a new PostgreSQL database on the server in
//! `WTSBOT_TEST_PG`) and a temporary rules directory.

use std::path::PathBuf;

use sqlx::Connection;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use wtsbot::config::{DatabaseSettings, Settings, Synchronous};
use wtsbot::startup::Application;
use wtsbot::store::Store;

pub use wtsbot::config::Backend;

/// The PostgreSQL server for tests, unless `WTSBOT_TEST_PG` names another.
const DEFAULT_TEST_PG: &str = "postgres://postgres@127.0.0.1:5432/postgres";

/// Runs each listed `async fn(Backend)` twice, as the tests `<name>::sqlite` and
/// `<name>::postgres`.
#[macro_export]
macro_rules! on_both_backends {
    ($($name:ident),+ $(,)?) => {$(
        mod $name {
            #[tokio::test]
            async fn sqlite() {
                super::$name($crate::helpers::Backend::Sqlite).await
            }

            #[tokio::test]
            async fn postgres() {
                super::$name($crate::helpers::Backend::Postgres).await
            }
        }
    )+};
}

/// A test's own database, dropped with the test.
#[derive(Debug)]
enum TestDatabase {
    Sqlite {
        url: String,
    },
    Postgres {
        admin_url: String,
        name: String,
        url: String,
    },
}

impl TestDatabase {
    async fn create(backend: Backend, dir: &std::path::Path) -> TestDatabase {
        match backend {
            Backend::Sqlite => TestDatabase::Sqlite {
                url: format!("sqlite://{}?mode=rwc", dir.join("wtsbot.db").display()),
            },
            Backend::Postgres => {
                let admin_url =
                    std::env::var("WTSBOT_TEST_PG").unwrap_or_else(|_| DEFAULT_TEST_PG.into());
                let name = format!("wtsbot_test_{}", uuid::Uuid::new_v4().simple());
                let mut admin = sqlx::PgConnection::connect(&admin_url)
                    .await
                    .unwrap_or_else(|e| {
                        panic!(
                            "PostgreSQL at {admin_url} is unreachable ({e}); start it or point \
                         WTSBOT_TEST_PG at a server where tests may create databases"
                        )
                    });
                sqlx::query(&format!(r#"CREATE DATABASE "{name}""#))
                    .execute(&mut admin)
                    .await
                    .expect("create the test database");
                let mut url = url::Url::parse(&admin_url).expect("WTSBOT_TEST_PG is a URL");
                url.set_path(&format!("/{name}"));
                TestDatabase::Postgres {
                    admin_url,
                    name,
                    url: url.to_string(),
                }
            }
        }
    }

    fn url(&self) -> &str {
        match self {
            TestDatabase::Sqlite { url } | TestDatabase::Postgres { url, .. } => url,
        }
    }

    /// Drops the PostgreSQL database, cutting every connection to it.
    async fn drop_postgres(admin_url: &str, name: &str) {
        if let Ok(mut admin) = sqlx::PgConnection::connect(admin_url).await {
            let _ = sqlx::query(&format!(r#"DROP DATABASE IF EXISTS "{name}" WITH (FORCE)"#))
                .execute(&mut admin)
                .await;
        }
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        if let TestDatabase::Postgres {
            admin_url, name, ..
        } = self
        {
            let (admin_url, name) = (admin_url.clone(), name.clone());
            // Drop runs inside the test's runtime, which cannot be blocked on; a short-lived
            // thread with its own runtime does the clean-up.
            let cleanup = std::thread::spawn(move || {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("a runtime for clean-up");
                runtime.block_on(TestDatabase::drop_postgres(&admin_url, &name));
            });
            let _ = cleanup.join();
        }
    }
}

/// Settings and environment for one test app; `spawn` starts it.
pub struct TestAppBuilder {
    backend: Backend,
    env: Vec<(String, String)>,
    /// Files written under the rules directory before the app starts.
    rules_files: Vec<(String, Vec<u8>)>,
}

impl TestAppBuilder {
    pub fn new(backend: Backend) -> Self {
        Self {
            backend,
            env: Vec::new(),
            rules_files: Vec::new(),
        }
    }

    /// Points the app at the in-process simulator with client pacing off and retries a
    /// few milliseconds apart, so delivery tests run fast.
    pub fn sim(self, sim: &wtsbot::sim::WtsSim) -> Self {
        self.wts(&sim.base_url(), &sim.token())
            .setting("wts.pacing", "false")
            .setting("wts.timeout", "5s")
            .setting("bot.retry_schedule", "50ms,100ms,150ms")
    }

    /// Writes a rule (`manual.toml`) or an asset (`files/manual.pdf`) into the rules
    /// directory before the app starts.
    pub fn rules_file(mut self, name: &str, contents: impl Into<Vec<u8>>) -> Self {
        self.rules_files.push((name.to_string(), contents.into()));
        self
    }

    /// Overrides one configuration key, as its environment variable would
    /// (`webhook.max_body` -> `WTSBOT__WEBHOOK__MAX_BODY`).
    pub fn setting(mut self, key: &str, value: &str) -> Self {
        let var = format!("WTSBOT__{}", key.replace('.', "__").to_uppercase());
        self.env.push((var, value.to_string()));
        self
    }

    /// Points the app at a WTS server, such as the in-process simulator
    /// (`wtsbot::sim::WtsSim`): its `base_url()` and `token()`.
    #[allow(dead_code, reason = "the entry point for tests that deliver replies")]
    pub fn wts(self, base_url: &str, api_token: &str) -> Self {
        self.setting("wts.base_url", base_url)
            .setting("wts.api_token", api_token)
    }

    pub async fn spawn(self) -> TestApp {
        wtsbot::telemetry::init_for_tests();
        let dir = tempfile::tempdir().expect("a temporary directory");
        let database = TestDatabase::create(self.backend, dir.path()).await;
        let rules_dir = dir.path().join("rules");
        std::fs::create_dir_all(&rules_dir).expect("create the rules directory");
        for (name, contents) in &self.rules_files {
            let path = rules_dir.join(name);
            std::fs::create_dir_all(path.parent().expect("under the rules directory"))
                .expect("create the file's directory");
            std::fs::write(&path, contents).expect("write the rules file");
        }
        start(self.backend, self.env, database, rules_dir, dir).await
    }
}

async fn start(
    backend: Backend,
    overrides: Vec<(String, String)>,
    database: TestDatabase,
    rules_dir: PathBuf,
    dir: tempfile::TempDir,
) -> TestApp {
    let mut env = vec![
        (
            "WTSBOT__SERVER__BIND".to_string(),
            "127.0.0.1:0".to_string(),
        ),
        (
            "WTSBOT__DATABASE__URL".to_string(),
            database.url().to_string(),
        ),
        (
            "WTSBOT__RULES__DIR".to_string(),
            rules_dir.display().to_string(),
        ),
        // Nothing in a test may reach the internet: WTS is unreachable unless a test
        // points it at a simulator.
        (
            "WTSBOT__WTS__BASE_URL".to_string(),
            "http://127.0.0.1:9".to_string(),
        ),
    ];
    env.extend(overrides.iter().cloned());
    let settings = Settings::load_with_env(None, env).expect("valid test settings");
    let app = Application::build(settings)
        .await
        .expect("the application builds");
    let port = app.port();
    let store = app.store().clone();
    let webhook_path = app.webhook_path().to_string();
    let shutdown = app.shutdown_token();
    let server = tokio::spawn(app.run_until_stopped());
    TestApp {
        address: format!("http://127.0.0.1:{port}"),
        backend,
        store,
        webhook_path,
        rules_dir,
        client: reqwest::Client::new(),
        shutdown,
        server: Some(server),
        kept: Some(Kept {
            overrides,
            database,
            dir,
        }),
    }
}

pub struct TestApp {
    /// `http://127.0.0.1:<port>`.
    pub address: String,
    pub backend: Backend,
    /// The app's own store (same pool).
    pub store: Store,
    /// The webhook path, token included.
    pub webhook_path: String,
    pub rules_dir: PathBuf,
    pub client: reqwest::Client,
    shutdown: CancellationToken,
    server: Option<JoinHandle<anyhow::Result<()>>>,
    /// What a restart reuses; taken by [`TestApp::restart`].
    kept: Option<Kept>,
}

/// The parts of a test app that outlive one run of it.
struct Kept {
    overrides: Vec<(String, String)>,
    database: TestDatabase,
    dir: tempfile::TempDir,
}

pub async fn spawn_app(backend: Backend) -> TestApp {
    TestAppBuilder::new(backend).spawn().await
}

impl TestApp {
    fn database(&self) -> &TestDatabase {
        &self.kept.as_ref().expect("not restarted").database
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.address)
    }

    /// Posts a JSON webhook to the app's own webhook path.
    pub async fn post_webhook(&self, body: &serde_json::Value) -> reqwest::Response {
        self.post_webhook_raw(body.to_string(), Some("application/json"))
            .await
    }

    /// Posts raw bytes to the app's own webhook path, with the given Content-Type if any.
    pub async fn post_webhook_raw(
        &self,
        body: impl Into<reqwest::Body>,
        content_type: Option<&str>,
    ) -> reqwest::Response {
        self.post_raw(&self.webhook_path, body, content_type).await
    }

    /// Posts raw bytes to any path of the app.
    pub async fn post_raw(
        &self,
        path: &str,
        body: impl Into<reqwest::Body>,
        content_type: Option<&str>,
    ) -> reqwest::Response {
        let mut request = self.client.post(self.url(path)).body(body);
        if let Some(content_type) = content_type {
            request = request.header(reqwest::header::CONTENT_TYPE, content_type);
        }
        request.send().await.expect("the app answers")
    }

    pub async fn get(&self, path: &str) -> reqwest::Response {
        self.client
            .get(self.url(path))
            .send()
            .await
            .expect("the app answers")
    }

    /// A second, independent connection to the app's database: what it shows was
    /// committed, not merely held by the app.
    pub async fn open_store(&self) -> Store {
        let settings = DatabaseSettings {
            url: self.database().url().to_string().into(),
            synchronous: Synchronous::Full,
            max_connections: 2,
            statement_timeout: std::time::Duration::from_secs(5),
        };
        Store::connect(&settings)
            .await
            .expect("open the test database")
    }

    /// Makes the database unreachable for the app: PostgreSQL drops it (cutting every
    /// connection), SQLite closes the app's pool.
    pub async fn take_database_down(&self) {
        match self.database() {
            TestDatabase::Sqlite { .. } => self.store.close().await,
            TestDatabase::Postgres {
                admin_url, name, ..
            } => TestDatabase::drop_postgres(admin_url, name).await,
        }
    }

    /// Stops the app gracefully and returns how `run_until_stopped` ended.
    pub async fn stop(&mut self) -> anyhow::Result<()> {
        self.shutdown.cancel();
        match self.server.take() {
            Some(server) => server.await.expect("the app does not panic"),
            None => Ok(()),
        }
    }

    /// Stops the app and starts it again on the same database, settings and rules.
    pub async fn restart(mut self) -> TestApp {
        self.stop().await.expect("a clean stop");
        let Kept {
            overrides,
            database,
            dir,
        } = self.kept.take().expect("not restarted");
        start(
            self.backend,
            overrides,
            database,
            self.rules_dir.clone(),
            dir,
        )
        .await
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

/// Polls `check` every 10 ms until it returns `Some`, for at most `limit`; panics naming
/// `what` when time runs out.
pub async fn eventually<T, F, Fut>(what: &str, limit: std::time::Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out after {limit:?} waiting for {what}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
}

/// A fresh database for apps a test starts itself (the `wtsbot` binary as a child
/// process, several instances on one database); dropped with the value.
pub struct ScratchDatabase {
    database: TestDatabase,
    _dir: tempfile::TempDir,
}

impl ScratchDatabase {
    pub async fn create(backend: Backend) -> ScratchDatabase {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let database = TestDatabase::create(backend, dir.path()).await;
        ScratchDatabase {
            database,
            _dir: dir,
        }
    }

    pub fn url(&self) -> &str {
        self.database.url()
    }
}

/// The simulated WTS, in process, with message statuses delivered at once.
pub async fn start_sim() -> wtsbot::sim::WtsSim {
    wtsbot::telemetry::init_for_tests();
    wtsbot::sim::WtsSim::start(wtsbot::sim::SimConfig {
        delivery_delay: None,
        ..wtsbot::sim::SimConfig::default()
    })
    .await
    .expect("the simulator starts")
}
