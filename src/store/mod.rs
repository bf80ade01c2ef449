//! The database: one `Store` over sqlx's `Any` driver, so each query is written once for
//! SQLite and PostgreSQL.
//!
//! Conventions every query follows:
//! - placeholders are `$1, $2, ...` (SQLite accepts them too);
//! - timestamps are `i64` epoch milliseconds ([`now_ms`]), JSON is TEXT, bytes are
//!   `Vec<u8>`;
//! - booleans are integers 0/1: bind `i64::from(flag)`, read an `i64` and compare with 0
//!   (the `Any` driver cannot decode a SQLite BOOLEAN);
//! - writes that read first go through [`Store::begin_write`], which takes SQLite's write
//!   lock up front instead of failing on a lock upgrade;
//! - where the backends must differ (`FOR UPDATE SKIP LOCKED`, LISTEN/NOTIFY, advisory
//!   locks) branch on [`Store::backend`].
//!
//! Methods are grouped per concern, one file each (`inbox.rs`, `meta.rs`, ...), each an
//! `impl Store` block.

pub mod admin;
pub mod dispatch;
mod error;
pub mod history;
pub mod inbox;
pub mod jobs;
pub mod meta;
pub mod rules;

use std::str::FromStr;
use std::time::Duration;

use secrecy::ExposeSecret;
use sqlx::any::{AnyConnectOptions, AnyPoolOptions};
use sqlx::{Any, AnyPool, Connection, Executor, Transaction};

pub use crate::config::Backend;
use crate::config::{DatabaseSettings, Synchronous};
pub use error::StoreError;

static SQLITE_MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("migrations/sqlite");
static POSTGRES_MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("migrations/postgres");

/// How long a request may wait for a pooled connection before the database counts as
/// unreachable.
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(5);
/// How long SQLite waits on another writer's lock before giving up.
const SQLITE_BUSY_TIMEOUT_MS: u32 = 5_000;

/// A handle on the database; clones share one pool.
#[derive(Clone, Debug)]
pub struct Store {
    pool: AnyPool,
    backend: Backend,
}

impl Store {
    /// Opens the pool for `database.url`. SQLite gets WAL, the configured `synchronous`,
    /// a busy timeout and foreign keys on every connection.
    pub async fn connect(settings: &DatabaseSettings) -> Result<Store, StoreError> {
        sqlx::any::install_default_drivers();
        let url = settings.url.expose_secret();
        let backend =
            crate::config::backend_of(url).map_err(|e| StoreError::Config(e.to_string()))?;
        let options = AnyConnectOptions::from_str(url)?;
        let synchronous = settings.synchronous;
        let mut pool_options = AnyPoolOptions::new()
            .max_connections(settings.max_connections.max(1))
            .acquire_timeout(ACQUIRE_TIMEOUT);
        if backend == Backend::Sqlite {
            pool_options = pool_options.after_connect(move |conn, _meta| {
                Box::pin(async move {
                    conn.execute(sqlite_pragmas(synchronous).as_str()).await?;
                    Ok(())
                })
            });
        }
        let pool = pool_options.connect_with(options).await?;
        Ok(Store { pool, backend })
    }

    /// Brings the schema up to date; safe to run from several instances at once.
    pub async fn migrate(&self) -> Result<(), StoreError> {
        let migrator = match self.backend {
            Backend::Sqlite => &SQLITE_MIGRATIONS,
            Backend::Postgres => &POSTGRES_MIGRATIONS,
        };
        migrator.run(&self.pool).await?;
        Ok(())
    }

    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// The pool, for queries in the per-concern files.
    pub fn pool(&self) -> &AnyPool {
        &self.pool
    }

    /// A transaction that will write. On SQLite it starts with `BEGIN IMMEDIATE`, so it
    /// holds the write lock from the start and never fails upgrading a read lock.
    pub async fn begin_write(&self) -> Result<Transaction<'static, Any>, StoreError> {
        let tx = match self.backend {
            Backend::Sqlite => self.pool.begin_with("BEGIN IMMEDIATE").await?,
            Backend::Postgres => self.pool.begin().await?,
        };
        Ok(tx)
    }

    /// One round trip to the database.
    pub async fn health_check(&self) -> Result<(), StoreError> {
        let mut conn = self.pool.acquire().await?;
        conn.ping().await?;
        Ok(())
    }

    /// Closes every connection; later queries fail as unavailable.
    pub async fn close(&self) {
        self.pool.close().await;
    }
}

fn sqlite_pragmas(synchronous: Synchronous) -> String {
    let synchronous = match synchronous {
        Synchronous::Full => "FULL",
        Synchronous::Normal => "NORMAL",
    };
    format!(
        "PRAGMA busy_timeout = {SQLITE_BUSY_TIMEOUT_MS}; \
         PRAGMA journal_mode = WAL; \
         PRAGMA synchronous = {synchronous}; \
         PRAGMA foreign_keys = ON;"
    )
}

/// The current time as the epoch milliseconds every timestamp column holds.
pub fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

/// A fresh, migrated SQLite store in a temporary directory, for unit tests.
#[cfg(test)]
pub(crate) mod testing {
    use super::*;

    pub(crate) async fn sqlite_store() -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().expect("temp dir");
        let url = format!("sqlite://{}?mode=rwc", dir.path().join("test.db").display());
        let settings = DatabaseSettings {
            url: url.into(),
            synchronous: Synchronous::Normal,
            max_connections: 2,
            statement_timeout: std::time::Duration::from_secs(5),
        };
        let store = Store::connect(&settings).await.expect("open SQLite");
        store.migrate().await.expect("migrate");
        (dir, store)
    }
}
