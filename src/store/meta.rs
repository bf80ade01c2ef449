//! Small named values (`meta`) and the secrets generated on first start.

use super::{Store, StoreError, now_ms};

/// The `meta` key holding the generated webhook token.
pub const WEBHOOK_TOKEN_KEY: &str = "webhook_token";
/// The `meta` key set once the bootstrap admin token has been made.
pub const BOOTSTRAP_ADMIN_KEY: &str = "bootstrap_admin_created_at";

/// The outcome of keeping a generated value: either ours was stored, or an earlier one
/// (another start, another instance) already was.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Kept {
    /// This value was stored now: it is new and may be shown once.
    Stored(String),
    /// A value was already there; it is returned and must not be shown again.
    Existing(String),
}

impl Kept {
    pub fn value(&self) -> &str {
        match self {
            Kept::Stored(v) | Kept::Existing(v) => v,
        }
    }
}

impl Store {
    pub async fn meta_get(&self, key: &str) -> Result<Option<String>, StoreError> {
        let value = sqlx::query_scalar("SELECT value FROM meta WHERE key = $1")
            .bind(key)
            .fetch_optional(self.pool())
            .await?;
        Ok(value)
    }

    pub async fn meta_set(&self, key: &str, value: &str) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO meta (key, value) VALUES ($1, $2) \
             ON CONFLICT (key) DO UPDATE SET value = excluded.value",
        )
        .bind(key)
        .bind(value)
        .execute(self.pool())
        .await?;
        Ok(())
    }

    /// Stores `candidate` under `key` unless a value is already there; race-free across
    /// instances.
    pub async fn meta_keep_first(&self, key: &str, candidate: &str) -> Result<Kept, StoreError> {
        let inserted = sqlx::query(
            "INSERT INTO meta (key, value) VALUES ($1, $2) ON CONFLICT (key) DO NOTHING",
        )
        .bind(key)
        .bind(candidate)
        .execute(self.pool())
        .await?
        .rows_affected();
        if inserted == 1 {
            return Ok(Kept::Stored(candidate.to_string()));
        }
        let existing = self.meta_get(key).await?.unwrap_or_default();
        Ok(Kept::Existing(existing))
    }

    /// On the very first start only, records an admin token by its sha256 `token_hash`.
    /// Returns whether it was recorded now (and so may be shown once).
    pub async fn create_bootstrap_admin_token(&self, token_hash: &str) -> Result<bool, StoreError> {
        let now = now_ms();
        let mut tx = self.begin_write().await?;
        let first = sqlx::query(
            "INSERT INTO meta (key, value) VALUES ($1, $2) ON CONFLICT (key) DO NOTHING",
        )
        .bind(BOOTSTRAP_ADMIN_KEY)
        .bind(now.to_string())
        .execute(&mut *tx)
        .await?
        .rows_affected()
            == 1;
        if first {
            sqlx::query(
                "INSERT INTO tokens (name, role, token_hash, created_at) \
                 VALUES ('bootstrap', 'admin', $1, $2)",
            )
            .bind(token_hash)
            .bind(now)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(first)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::testing::sqlite_store;

    #[tokio::test]
    async fn the_first_value_kept_wins() {
        let (_dir, store) = sqlite_store().await;
        assert_eq!(
            store.meta_keep_first("k", "one").await.unwrap(),
            Kept::Stored("one".into())
        );
        assert_eq!(
            store.meta_keep_first("k", "two").await.unwrap(),
            Kept::Existing("one".into())
        );
        store.meta_set("k", "three").await.unwrap();
        assert_eq!(store.meta_get("k").await.unwrap().as_deref(), Some("three"));
        assert_eq!(store.meta_get("missing").await.unwrap(), None);
    }

    #[tokio::test]
    async fn the_bootstrap_admin_token_is_made_once() {
        let (_dir, store) = sqlite_store().await;
        assert!(store.create_bootstrap_admin_token("hash-1").await.unwrap());
        assert!(!store.create_bootstrap_admin_token("hash-2").await.unwrap());
        let hashes: Vec<String> =
            sqlx::query_scalar("SELECT token_hash FROM tokens WHERE role = 'admin'")
                .fetch_all(store.pool())
                .await
                .unwrap();
        assert_eq!(hashes, vec!["hash-1".to_string()]);
    }
}
