//! The daemon as one value: `Application::build` opens the store, binds the listener and
//! starts the background tasks; `run_until_stopped` serves until the shutdown token is
//! cancelled, then stops intake first and lets the tasks finish their in-flight work.

use std::net::TcpListener;
use std::sync::Arc;

use actix_web::body::MessageBody;
use actix_web::dev::{Server, ServiceRequest, ServiceResponse};
use actix_web::{App, HttpResponse, HttpServer, web};
use anyhow::Context;
use rand::RngCore;
use secrecy::ExposeSecret;
use sha2::{Digest, Sha256};
use tokio::task::{JoinHandle, JoinSet};
use tokio_util::sync::CancellationToken;
use tracing::Span;
use tracing_actix_web::{DefaultRootSpanBuilder, RootSpanBuilder, TracingLogger};

use crate::config::Settings;
use crate::error::AppError;
use crate::inbox::{InboxSignal, InboxWriter};
use crate::registration::SubscriptionKeeper;
use crate::rules::RuleEngine;
use crate::store::meta::{Kept, WEBHOOK_TOKEN_KEY};
use crate::store::{Backend, Store};
use crate::webhook::{self, WebhookState};

/// How long in-flight requests may take to finish once intake stops.
const HTTP_SHUTDOWN_TIMEOUT_SECS: u64 = 10;
/// Size limit of JSON bodies on the admin API.
const JSON_LIMIT: usize = 1024 * 1024;

/// What every background task is given.
#[derive(Clone)]
pub struct TaskContext {
    pub settings: Arc<Settings>,
    pub store: Store,
    /// Woken after each inbox commit that added pending events.
    pub inbox_signal: InboxSignal,
    /// Cancelled when the daemon stops: claim no new work, finish what is in flight.
    pub shutdown: CancellationToken,
    /// The live rule snapshot events are matched against.
    pub rules: Arc<RuleEngine>,
    /// The rule revision log's fingerprint once `rules` was built.
    pub rules_fingerprint: Option<(i64, i64)>,
}

/// The background tasks, each named so the log says which one ended and why.
struct BackgroundTasks(JoinSet<(&'static str, anyhow::Result<()>)>);

impl BackgroundTasks {
    fn spawn(
        &mut self,
        name: &'static str,
        task: impl Future<Output = anyhow::Result<()>> + Send + 'static,
    ) {
        self.0.spawn(async move { (name, task.await) });
    }
}

/// Every long-running task of the daemon, one line each.
fn spawn_background_tasks(ctx: &TaskContext, tasks: &mut BackgroundTasks) {
    for (name, task) in crate::jobs::background_tasks(
        &ctx.settings,
        &ctx.store,
        ctx.rules.clone(),
        ctx.inbox_signal.clone(),
        ctx.shutdown.clone(),
    ) {
        tasks.spawn(name, task);
    }
    tasks.spawn(
        "rules watcher",
        crate::rules::watch::watch(
            ctx.settings.rules.dir.clone(),
            ctx.store.clone(),
            ctx.rules.clone(),
            ctx.rules_fingerprint,
            ctx.settings.database.url.clone(),
            ctx.shutdown.clone(),
        ),
    );
    if ctx.store.backend() == Backend::Postgres {
        tasks.spawn(
            "inbox listener",
            crate::inbox::listen_postgres(
                ctx.settings.database.url.clone(),
                ctx.inbox_signal.clone(),
                ctx.shutdown.clone(),
            ),
        );
    }
    if let Some(keeper) = SubscriptionKeeper::for_daemon(&ctx.settings, ctx.rules.clone()) {
        tasks.spawn("webhook subscription", keeper.run(ctx.shutdown.clone()));
    }
    tasks.spawn(
        "history pruning",
        crate::admin::history::prune_periodically(
            ctx.store.clone(),
            ctx.settings.history.retention,
            ctx.shutdown.clone(),
        ),
    );
}

/// The state handlers extract with `web::Data<...>`.
#[derive(Clone)]
struct AppState {
    settings: web::Data<Settings>,
    store: web::Data<Store>,
    webhook: web::Data<WebhookState>,
    rules: web::Data<RuleEngine>,
}

/// The route table: every route of the main listener.
fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/healthz", web::get().to(healthz));
    crate::ops::configure(cfg);
    webhook::configure(cfg);
    crate::admin::configure(cfg);
}

/// Extractor settings whose errors use the JSON error envelope.
pub fn extractor_configs(cfg: &mut web::ServiceConfig) {
    cfg.app_data(
        web::JsonConfig::default()
            .limit(JSON_LIMIT)
            .error_handler(|err, _req| {
                use actix_web::error::JsonPayloadError;
                let app_error = match &err {
                    JsonPayloadError::OverflowKnownLength { .. }
                    | JsonPayloadError::Overflow { .. } => {
                        AppError::PayloadTooLarge(err.to_string())
                    }
                    JsonPayloadError::ContentType => AppError::UnsupportedMediaType(
                        "the body must be application/json".to_string(),
                    ),
                    _ => AppError::BadRequest(format!("invalid JSON body: {err}")),
                };
                app_error.into()
            }),
    )
    .app_data(web::QueryConfig::default().error_handler(|err, _req| {
        AppError::BadRequest(format!("invalid query string: {err}")).into()
    }))
    .app_data(
        web::PathConfig::default()
            .error_handler(|err, _req| AppError::BadRequest(format!("invalid path: {err}")).into()),
    );
}

async fn healthz() -> HttpResponse {
    HttpResponse::Ok().json(serde_json::json!({"status": "ok"}))
}

async fn not_found() -> Result<HttpResponse, AppError> {
    Err(AppError::not_found("resource"))
}

pub struct Application {
    port: u16,
    server: Server,
    store: Store,
    settings: Arc<Settings>,
    webhook_path: String,
    inbox_signal: InboxSignal,
    shutdown: CancellationToken,
    inbox_stop: CancellationToken,
    inbox_writer: JoinHandle<()>,
    tasks: BackgroundTasks,
}

impl Application {
    /// Binds `server.bind` (port 0 picks a free port), then as [`Application::build_with_listener`].
    pub async fn build(settings: Settings) -> anyhow::Result<Application> {
        let listener = TcpListener::bind(&settings.server.bind)
            .with_context(|| format!("cannot listen on {}", settings.server.bind))?;
        Self::build_with_listener(settings, listener).await
    }

    /// Opens and migrates the store, makes the first-start secrets, starts the inbox
    /// writer and the background tasks, and serves on `listener`.
    pub async fn build_with_listener(
        settings: Settings,
        listener: TcpListener,
    ) -> anyhow::Result<Application> {
        let settings = Arc::new(settings);
        let store = Store::connect(&settings.database)
            .await
            .context("cannot open the database")?;
        store
            .migrate()
            .await
            .context("cannot migrate the database")?;
        let webhook_token = webhook_token(&settings, &store).await?;
        ensure_admin_token(&settings, &store).await?;

        let shutdown = CancellationToken::new();
        let inbox_signal = InboxSignal::default();
        let inbox_stop = CancellationToken::new();
        let (inbox, inbox_writer) =
            InboxWriter::start(store.clone(), inbox_signal.clone(), inbox_stop.clone());

        let mut tasks = BackgroundTasks(JoinSet::new());
        let rules = crate::rules::sync::start(&store, &settings.rules.dir)
            .await
            .context("cannot load the rules from the database")?;
        let ctx = TaskContext {
            settings: settings.clone(),
            store: store.clone(),
            inbox_signal: inbox_signal.clone(),
            shutdown: shutdown.clone(),
            rules: Arc::new(rules),
            rules_fingerprint: store.rules_fingerprint().await.ok(),
        };
        spawn_background_tasks(&ctx, &mut tasks);

        let max_body = usize::try_from(settings.webhook.max_body.as_u64()).unwrap_or(usize::MAX);
        let state = AppState {
            settings: web::Data::from(settings.clone()),
            store: web::Data::new(store.clone()),
            rules: web::Data::from(ctx.rules.clone()),
            webhook: web::Data::new(WebhookState::new(
                &webhook_token,
                max_body,
                settings.bot.direction.clone(),
                inbox,
            )),
        };
        let port = listener.local_addr()?.port();
        let server = HttpServer::new(move || {
            App::new()
                .wrap(TracingLogger::<RouteSpan>::new())
                .configure(extractor_configs)
                .app_data(state.settings.clone())
                .app_data(state.store.clone())
                .app_data(state.webhook.clone())
                .app_data(state.rules.clone())
                .configure(routes)
                .default_service(web::to(not_found))
        })
        .disable_signals()
        .shutdown_timeout(HTTP_SHUTDOWN_TIMEOUT_SECS)
        .listen(listener)?
        .run();
        tracing::info!(port, backend = ?store.backend(), "listening");

        Ok(Application {
            port,
            server,
            store,
            settings,
            webhook_path: webhook::path_for(&webhook_token),
            inbox_signal,
            shutdown,
            inbox_stop,
            inbox_writer,
            tasks,
        })
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    /// The webhook path, secret token included.
    pub fn webhook_path(&self) -> &str {
        &self.webhook_path
    }

    pub fn inbox_signal(&self) -> &InboxSignal {
        &self.inbox_signal
    }

    /// Cancel it to stop the daemon gracefully.
    pub fn shutdown_token(&self) -> CancellationToken {
        self.shutdown.clone()
    }

    /// Serves until the shutdown token is cancelled or a background task ends. Then:
    /// intake stops, in-flight requests finish, the inbox commits what it holds, and the
    /// background tasks finish their in-flight work. An error says which task failed.
    pub async fn run_until_stopped(self) -> anyhow::Result<()> {
        let Application {
            server,
            shutdown,
            inbox_stop,
            inbox_writer,
            mut tasks,
            ..
        } = self;
        let server_handle = server.handle();
        let mut server = tokio::spawn(server);
        let mut server_done = false;
        let mut failure = None;
        tokio::select! {
            // A task that ends because shutdown was asked for is not a failure.
            biased;
            _ = shutdown.cancelled() => tracing::info!("shutting down"),
            result = &mut server => {
                server_done = true;
                failure = server_failure(result);
            }
            Some(joined) = tasks.0.join_next() => failure = task_ended(joined, false),
        }
        shutdown.cancel();
        server_handle.stop(true).await;
        if !server_done && let Some(err) = server_failure(server.await) {
            failure.get_or_insert(err);
        }
        inbox_stop.cancel();
        if inbox_writer.await.is_err() {
            failure.get_or_insert(anyhow::anyhow!("the inbox writer panicked"));
        }
        while let Some(joined) = tasks.0.join_next().await {
            if let Some(err) = task_ended(joined, true) {
                failure.get_or_insert(err);
            }
        }
        match failure {
            Some(err) => Err(err),
            None => {
                tracing::info!("stopped");
                Ok(())
            }
        }
    }
}

fn server_failure(
    result: Result<std::io::Result<()>, tokio::task::JoinError>,
) -> Option<anyhow::Error> {
    match result {
        Ok(Ok(())) => None,
        Ok(Err(err)) => Some(anyhow::Error::new(err).context("the HTTP server failed")),
        Err(err) => Some(anyhow::Error::new(err).context("the HTTP server panicked")),
    }
}

/// Logs a finished background task; returns an error unless it ended cleanly while
/// stopping.
fn task_ended(
    joined: Result<(&'static str, anyhow::Result<()>), tokio::task::JoinError>,
    stopping: bool,
) -> Option<anyhow::Error> {
    match joined {
        Ok((name, Ok(()))) if stopping => {
            tracing::debug!(task = name, "background task stopped");
            None
        }
        Ok((name, Ok(()))) => {
            tracing::error!(task = name, "background task ended unexpectedly");
            Some(anyhow::anyhow!(
                "background task `{name}` ended unexpectedly"
            ))
        }
        Ok((name, Err(err))) => {
            tracing::error!(task = name, error.cause_chain = ?err, "background task failed");
            Some(err.context(format!("background task `{name}` failed")))
        }
        Err(err) => {
            tracing::error!(error = %err, "background task panicked");
            Some(anyhow::Error::new(err).context("a background task panicked"))
        }
    }
}

/// The configured webhook token, or the one generated on the first start (shown once).
async fn webhook_token(settings: &Settings, store: &Store) -> anyhow::Result<String> {
    if let Some(token) = &settings.webhook.token {
        return Ok(token.expose_secret().to_string());
    }
    let kept = store
        .meta_keep_first(WEBHOOK_TOKEN_KEY, &random_token())
        .await
        .context("cannot keep the generated webhook token")?;
    if let Kept::Stored(token) = &kept {
        println!(
            "Generated a webhook token. Point WTS at this path on your public address \
             (shown once; set webhook.token to choose your own):\n  {}",
            webhook::path_for(token)
        );
    }
    Ok(kept.value().to_string())
}

/// Without `admin.token`, the first start makes a bootstrap admin token, shows it once
/// and keeps only its hash.
async fn ensure_admin_token(settings: &Settings, store: &Store) -> anyhow::Result<()> {
    if settings.admin.token.is_some() {
        return Ok(());
    }
    let token = random_token();
    let hash = hex::encode(Sha256::digest(token.as_bytes()));
    let created = store
        .create_bootstrap_admin_token(&hash)
        .await
        .context("cannot keep the bootstrap admin token")?;
    if created {
        println!(
            "Generated a bootstrap admin token (shown once; only its hash is kept):\n  {token}"
        );
    }
    Ok(())
}

/// 32 random bytes as 64 hex characters.
fn random_token() -> String {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    hex::encode(bytes)
}

/// The request span, named by route template: the raw path would put the webhook token
/// in the log. Health checks log at DEBUG.
struct RouteSpan;

impl RootSpanBuilder for RouteSpan {
    fn on_request_start(request: &ServiceRequest) -> Span {
        let route = request
            .match_pattern()
            .unwrap_or_else(|| "unmatched".to_string());
        let method = request.method().as_str().to_string();
        if crate::ops::QUIET_ROUTES.contains(&route.as_str()) {
            tracing::debug_span!("HTTP request", http.method = %method, http.route = %route,
                http.status_code = tracing::field::Empty, otel.status_code = tracing::field::Empty,
                exception.message = tracing::field::Empty, exception.details = tracing::field::Empty)
        } else {
            tracing::info_span!("HTTP request", http.method = %method, http.route = %route,
                http.status_code = tracing::field::Empty, otel.status_code = tracing::field::Empty,
                exception.message = tracing::field::Empty, exception.details = tracing::field::Empty)
        }
    }

    fn on_request_end<B: MessageBody>(
        span: Span,
        outcome: &Result<ServiceResponse<B>, actix_web::Error>,
    ) {
        DefaultRootSpanBuilder::on_request_end(span, outcome);
    }
}
