//! Operations endpoints, unauthenticated: `GET /readyz` (the database answers and its
//! schema is current) and `GET /metrics` (Prometheus text). `GET /healthz` lives in the
//! route table itself: it only says the process is alive.

use std::collections::BTreeSet;
use std::time::Duration;

use actix_web::{HttpResponse, web};
use anyhow::Context;
use sqlx::migrate::Migrator;

use crate::error::AppError;
use crate::metrics::METRICS;
use crate::store::{Backend, Store, now_ms};

static SQLITE_MIGRATIONS: Migrator = sqlx::migrate!("migrations/sqlite");
static POSTGRES_MIGRATIONS: Migrator = sqlx::migrate!("migrations/postgres");

/// A readiness probe answers within this, reachable database or not.
const READY_TIMEOUT: Duration = Duration::from_secs(3);
/// The routes whose requests log at DEBUG: probes and scrapes every few seconds.
pub const QUIET_ROUTES: [&str; 3] = ["/healthz", "/readyz", "/metrics"];

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/readyz", web::get().to(readyz))
        .route("/metrics", web::get().to(metrics));
}

async fn readyz(store: web::Data<Store>) -> Result<HttpResponse, AppError> {
    match tokio::time::timeout(READY_TIMEOUT, check_ready(&store)).await {
        Ok(Ok(())) => Ok(HttpResponse::Ok().json(serde_json::json!({"status": "ready"}))),
        Ok(Err(err)) => Err(AppError::Unavailable(err)),
        Err(_) => Err(AppError::Unavailable(anyhow::anyhow!(
            "the database did not answer within {READY_TIMEOUT:?}"
        ))),
    }
}

/// The database answers, and every migration this build knows has been applied.
pub async fn check_ready(store: &Store) -> anyhow::Result<()> {
    store
        .health_check()
        .await
        .context("the database does not answer")?;
    let missing = missing_migrations(store).await?;
    if !missing.is_empty() {
        anyhow::bail!("migrations not applied: {missing:?}");
    }
    Ok(())
}

/// Versions this build would apply that the database has not recorded as applied.
async fn missing_migrations(store: &Store) -> anyhow::Result<Vec<i64>> {
    let migrator = match store.backend() {
        Backend::Sqlite => &SQLITE_MIGRATIONS,
        Backend::Postgres => &POSTGRES_MIGRATIONS,
    };
    let applied: BTreeSet<i64> =
        sqlx::query_scalar("SELECT version FROM _sqlx_migrations WHERE success")
            .fetch_all(store.pool())
            .await
            .context("cannot read the applied migrations")?
            .into_iter()
            .collect();
    Ok(migrator
        .iter()
        .filter(|m| !m.migration_type.is_down_migration())
        .map(|m| m.version)
        .filter(|v| !applied.contains(v))
        .collect())
}

async fn metrics(store: web::Data<Store>) -> HttpResponse {
    refresh_backlog(&store).await;
    HttpResponse::Ok()
        .content_type(prometheus::TEXT_FORMAT)
        .body(METRICS.render())
}

/// Sets the queue gauges from the database; on failure they keep their last values (the
/// scrape still answers, and `/readyz` says what is wrong).
async fn refresh_backlog(store: &Store) {
    match store.job_backlog(now_ms()).await {
        Ok((depth, oldest_ms)) => {
            METRICS.queue_depth.set(depth);
            METRICS.oldest_job_age_seconds.set(oldest_ms / 1000);
        }
        Err(err) => tracing::debug!(error = %err, "cannot measure the job backlog"),
    }
}
