use std::sync::Arc;

use crate::error::AppError;

/// A storage failure. `Unavailable` (the database cannot be reached or is locked) is told
/// apart from every other failure, so callers can answer 503 instead of 500.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database unreachable")]
    Unavailable(#[source] sqlx::Error),
    #[error("database query failed")]
    Query(#[source] sqlx::Error),
    #[error("database migration failed")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("invalid database configuration: {0}")]
    Config(String),
    /// A failure reported to several callers at once (a group commit).
    #[error(transparent)]
    Shared(Arc<StoreError>),
}

impl StoreError {
    pub fn is_unavailable(&self) -> bool {
        match self {
            StoreError::Unavailable(_) => true,
            StoreError::Shared(inner) => inner.is_unavailable(),
            _ => false,
        }
    }

    /// A UNIQUE or PRIMARY KEY constraint refused the write; callers map it to their own
    /// answer (a 409, a duplicate).
    pub fn is_unique_violation(&self) -> bool {
        match self {
            StoreError::Query(sqlx::Error::Database(db)) => db.is_unique_violation(),
            StoreError::Shared(inner) => inner.is_unique_violation(),
            _ => false,
        }
    }

    /// A conflict between concurrent transactions (PostgreSQL deadlock or serialization
    /// failure, SQLite busy): the same transaction may succeed if run again.
    pub fn is_retryable_conflict(&self) -> bool {
        match self {
            StoreError::Query(sqlx::Error::Database(db))
            | StoreError::Unavailable(sqlx::Error::Database(db)) => db
                .code()
                .is_some_and(|code| matches!(&*code, "40P01" | "40001") || sqlite_busy(&code)),
            StoreError::Shared(inner) => inner.is_retryable_conflict(),
            _ => false,
        }
    }
}

impl From<sqlx::Error> for StoreError {
    fn from(err: sqlx::Error) -> Self {
        if is_unavailable(&err) {
            StoreError::Unavailable(err)
        } else {
            StoreError::Query(err)
        }
    }
}

impl From<StoreError> for AppError {
    fn from(err: StoreError) -> Self {
        if err.is_unavailable() {
            AppError::Unavailable(err.into())
        } else {
            AppError::Unexpected(err.into())
        }
    }
}

fn is_unavailable(err: &sqlx::Error) -> bool {
    match err {
        sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::WorkerCrashed => true,
        sqlx::Error::Database(db) => db.code().is_some_and(|code| unavailable_code(&code)),
        _ => false,
    }
}

/// PostgreSQL: connection exceptions (class 08), shutdowns (57P01-57P03), a missing
/// database (3D000), too many connections (53300). SQLite: busy, locked, I/O errors,
/// cannot open, disk full.
fn unavailable_code(code: &str) -> bool {
    if code.starts_with("08") || matches!(code, "57P01" | "57P02" | "57P03" | "3D000" | "53300") {
        return true;
    }
    match sqlite_primary_code(code) {
        Some(primary) => matches!(primary, 5 | 6 | 10 | 13 | 14),
        None => false,
    }
}

fn sqlite_busy(code: &str) -> bool {
    matches!(sqlite_primary_code(code), Some(5 | 6))
}

/// SQLite reports its extended result code as a number; the low byte is the primary code.
fn sqlite_primary_code(code: &str) -> Option<i64> {
    code.parse::<i64>().ok().map(|extended| extended & 0xff)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unavailable_codes() {
        for code in ["08006", "08001", "57P01", "3D000", "5", "517", "14", "10"] {
            assert!(unavailable_code(code), "{code}");
        }
        for code in ["23505", "42P01", "2067", "1555", "19", "1"] {
            assert!(!unavailable_code(code), "{code}");
        }
    }

    #[test]
    fn pool_errors_are_unavailable_and_map_to_503() {
        let err = StoreError::from(sqlx::Error::PoolClosed);
        assert!(err.is_unavailable());
        let app: AppError = err.into();
        assert!(matches!(app, AppError::Unavailable(_)));
        let err = StoreError::from(sqlx::Error::RowNotFound);
        assert!(!err.is_unavailable());
        assert!(matches!(AppError::from(err), AppError::Unexpected(_)));
    }

    #[test]
    fn shared_errors_keep_their_kind() {
        let shared = StoreError::Shared(Arc::new(StoreError::from(sqlx::Error::PoolTimedOut)));
        assert!(shared.is_unavailable());
    }
}
