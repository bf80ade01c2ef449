//! The admin API's queries: API tokens, uploaded assets, and rule writes with their
//! revisions.

use sqlx::{Any, Transaction};

use super::rules::{RuleRow, RuleSource};
use super::{Store, StoreError};

/// One API token; the secret itself is never stored, only its sha256.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct TokenRow {
    pub id: i64,
    pub name: String,
    /// `admin`, `editor` or `viewer`.
    pub role: String,
    pub token_hash: String,
    pub created_at: i64,
    pub revoked_at: Option<i64>,
}

/// One asset: a file a reply may send, uploaded or from the rules directory.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct AssetRow {
    pub name: String,
    pub sha256: String,
    pub size: i64,
    pub mime: String,
    /// `upload` or `rules`.
    pub source: String,
    pub created_at: i64,
}

/// An asset to record with its bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NewAsset<'a> {
    pub name: &'a str,
    pub sha256: &'a str,
    pub mime: &'a str,
    pub bytes: &'a [u8],
    pub now: i64,
}

/// One recorded change of a rule.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct RevisionRow {
    pub rule_id: String,
    pub revision: i64,
    /// The token name, or `rules/<file>` for a file sync.
    pub actor: String,
    pub at: i64,
    /// `create`, `update`, `delete` or `restore`.
    pub action: String,
    /// The rule as JSON before and after the change; `None` where it did not exist.
    pub before: Option<String>,
    pub after: Option<String>,
}

/// A change of an API rule, made by `actor` at `now`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RuleWrite<'a> {
    pub id: &'a str,
    /// The rule as JSON.
    pub definition: &'a str,
    pub actor: &'a str,
    /// The revision's action: `create`, `update` or `restore`.
    pub action: &'a str,
    pub now: i64,
}

const RULE_COLUMNS: &str = "id, definition, source, source_path, revision, created_at, updated_at";
const REVISION_COLUMNS: &str = "rule_id, revision, actor, at, action, before, after";
const TOKEN_COLUMNS: &str = "id, name, role, token_hash, created_at, revoked_at";
const ASSET_COLUMNS: &str = "name, sha256, size, mime, source, created_at";

impl Store {
    /// The unrevoked token whose secret hashes to `token_hash`.
    pub async fn active_token_by_hash(
        &self,
        token_hash: &str,
    ) -> Result<Option<TokenRow>, StoreError> {
        let token = sqlx::query_as(&format!(
            "SELECT {TOKEN_COLUMNS} FROM tokens WHERE token_hash = $1 AND revoked_at IS NULL"
        ))
        .bind(token_hash)
        .fetch_optional(self.pool())
        .await?;
        Ok(token)
    }

    /// Every token, revoked ones included, oldest first.
    pub async fn list_tokens(&self) -> Result<Vec<TokenRow>, StoreError> {
        let tokens = sqlx::query_as(&format!("SELECT {TOKEN_COLUMNS} FROM tokens ORDER BY id"))
            .fetch_all(self.pool())
            .await?;
        Ok(tokens)
    }

    pub async fn insert_token(
        &self,
        name: &str,
        role: &str,
        token_hash: &str,
        now: i64,
    ) -> Result<TokenRow, StoreError> {
        let token = sqlx::query_as(&format!(
            "INSERT INTO tokens (name, role, token_hash, created_at) VALUES ($1, $2, $3, $4) \
             RETURNING {TOKEN_COLUMNS}"
        ))
        .bind(name)
        .bind(role)
        .bind(token_hash)
        .bind(now)
        .fetch_one(self.pool())
        .await?;
        Ok(token)
    }

    /// Marks a token revoked; false when there is no such unrevoked token.
    pub async fn revoke_token(&self, id: i64, now: i64) -> Result<bool, StoreError> {
        let done =
            sqlx::query("UPDATE tokens SET revoked_at = $1 WHERE id = $2 AND revoked_at IS NULL")
                .bind(now)
                .bind(id)
                .execute(self.pool())
                .await?
                .rows_affected();
        Ok(done == 1)
    }

    /// Every asset, by name.
    pub async fn list_assets(&self) -> Result<Vec<AssetRow>, StoreError> {
        let assets = sqlx::query_as(&format!("SELECT {ASSET_COLUMNS} FROM assets ORDER BY name"))
            .fetch_all(self.pool())
            .await?;
        Ok(assets)
    }

    pub async fn find_asset(&self, name: &str) -> Result<Option<AssetRow>, StoreError> {
        let asset = sqlx::query_as(&format!(
            "SELECT {ASSET_COLUMNS} FROM assets WHERE name = $1"
        ))
        .bind(name)
        .fetch_optional(self.pool())
        .await?;
        Ok(asset)
    }

    /// Records an uploaded asset and its bytes (stored once per sha256). `None` when the
    /// name is taken.
    pub async fn insert_uploaded_asset(
        &self,
        asset: &NewAsset<'_>,
    ) -> Result<Option<AssetRow>, StoreError> {
        let mut tx = self.begin_write().await?;
        sqlx::query(
            "INSERT INTO blobs (sha256, bytes) VALUES ($1, $2) ON CONFLICT (sha256) DO NOTHING",
        )
        .bind(asset.sha256)
        .bind(asset.bytes)
        .execute(&mut *tx)
        .await?;
        let size = i64::try_from(asset.bytes.len()).unwrap_or(i64::MAX);
        let row: Option<AssetRow> = sqlx::query_as(&format!(
            "INSERT INTO assets (name, sha256, size, mime, source, created_at) \
             VALUES ($1, $2, $3, $4, 'upload', $5) ON CONFLICT (name) DO NOTHING \
             RETURNING {ASSET_COLUMNS}"
        ))
        .bind(asset.name)
        .bind(asset.sha256)
        .bind(size)
        .bind(asset.mime)
        .bind(asset.now)
        .fetch_optional(&mut *tx)
        .await?;
        if row.is_none() {
            tx.rollback().await?;
            return Ok(None);
        }
        tx.commit().await?;
        Ok(row)
    }

    /// Deletes an uploaded asset, and its bytes when no other asset shares them. False
    /// when there is no uploaded asset of that name.
    pub async fn delete_uploaded_asset(&self, name: &str) -> Result<bool, StoreError> {
        let mut tx = self.begin_write().await?;
        let sha256: Option<String> = sqlx::query_scalar(
            "DELETE FROM assets WHERE name = $1 AND source = 'upload' RETURNING sha256",
        )
        .bind(name)
        .fetch_optional(&mut *tx)
        .await?;
        let Some(sha256) = sha256 else {
            tx.rollback().await?;
            return Ok(false);
        };
        sqlx::query(
            "DELETE FROM blobs WHERE sha256 = $1 \
             AND NOT EXISTS (SELECT 1 FROM assets WHERE sha256 = $1)",
        )
        .bind(&sha256)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(true)
    }
}

impl Store {
    /// Creates an API rule with its first revision of this incarnation. A taken id fails
    /// as a unique violation.
    pub async fn create_api_rule(&self, write: &RuleWrite<'_>) -> Result<RuleRow, StoreError> {
        let mut tx = self.begin_write().await?;
        let revision = next_revision(&mut tx, write.id).await?;
        let row = sqlx::query_as(&format!(
            "INSERT INTO rules (id, definition, source, source_path, revision, created_at, updated_at) \
             VALUES ($1, $2, $3, NULL, $4, $5, $5) RETURNING {RULE_COLUMNS}"
        ))
        .bind(write.id)
        .bind(write.definition)
        .bind(RuleSource::Api.as_str())
        .bind(revision)
        .bind(write.now)
        .fetch_one(&mut *tx)
        .await?;
        insert_revision(&mut tx, write, revision, None).await?;
        tx.commit().await?;
        Ok(row)
    }

    /// Replaces an API rule that is still at revision `expected`; `None` when it is gone,
    /// comes from a file, or was changed meanwhile.
    pub async fn update_api_rule(
        &self,
        write: &RuleWrite<'_>,
        expected: &RuleRow,
    ) -> Result<Option<RuleRow>, StoreError> {
        let mut tx = self.begin_write().await?;
        let revision = next_revision(&mut tx, write.id).await?;
        let row: Option<RuleRow> = sqlx::query_as(&format!(
            "UPDATE rules SET definition = $1, revision = $2, updated_at = $3 \
             WHERE id = $4 AND source = 'api' AND revision = $5 RETURNING {RULE_COLUMNS}"
        ))
        .bind(write.definition)
        .bind(revision)
        .bind(write.now)
        .bind(write.id)
        .bind(expected.revision)
        .fetch_optional(&mut *tx)
        .await?;
        if row.is_none() {
            tx.rollback().await?;
            return Ok(None);
        }
        insert_revision(&mut tx, write, revision, Some(&expected.definition)).await?;
        tx.commit().await?;
        Ok(row)
    }

    /// Deletes an API rule still at revision `expected`, recording a `delete` revision;
    /// false when it is gone, comes from a file, or was changed meanwhile.
    pub async fn delete_api_rule(
        &self,
        expected: &RuleRow,
        actor: &str,
        now: i64,
    ) -> Result<bool, StoreError> {
        let mut tx = self.begin_write().await?;
        let deleted =
            sqlx::query("DELETE FROM rules WHERE id = $1 AND source = 'api' AND revision = $2")
                .bind(&expected.id)
                .bind(expected.revision)
                .execute(&mut *tx)
                .await?
                .rows_affected();
        if deleted != 1 {
            tx.rollback().await?;
            return Ok(false);
        }
        let revision = next_revision(&mut tx, &expected.id).await?;
        sqlx::query(
            "INSERT INTO rule_revisions (rule_id, revision, actor, at, action, before, after) \
             VALUES ($1, $2, $3, $4, 'delete', $5, NULL)",
        )
        .bind(&expected.id)
        .bind(revision)
        .bind(actor)
        .bind(now)
        .bind(&expected.definition)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(true)
    }

    /// Every revision of a rule, deleted incarnations included, newest first.
    pub async fn rule_revisions(&self, rule_id: &str) -> Result<Vec<RevisionRow>, StoreError> {
        let rows = sqlx::query_as(&format!(
            "SELECT {REVISION_COLUMNS} FROM rule_revisions WHERE rule_id = $1 \
             ORDER BY revision DESC"
        ))
        .bind(rule_id)
        .fetch_all(self.pool())
        .await?;
        Ok(rows)
    }

    pub async fn rule_revision(
        &self,
        rule_id: &str,
        revision: i64,
    ) -> Result<Option<RevisionRow>, StoreError> {
        let row = sqlx::query_as(&format!(
            "SELECT {REVISION_COLUMNS} FROM rule_revisions WHERE rule_id = $1 AND revision = $2"
        ))
        .bind(rule_id)
        .bind(revision)
        .fetch_optional(self.pool())
        .await?;
        Ok(row)
    }
}

/// The revision after the highest the rule ever had, deleted incarnations included.
async fn next_revision(
    tx: &mut Transaction<'static, Any>,
    rule_id: &str,
) -> Result<i64, StoreError> {
    let last: i64 = sqlx::query_scalar(
        "SELECT COALESCE(MAX(revision), 0) FROM rule_revisions WHERE rule_id = $1",
    )
    .bind(rule_id)
    .fetch_one(&mut **tx)
    .await?;
    Ok(last + 1)
}

async fn insert_revision(
    tx: &mut Transaction<'static, Any>,
    write: &RuleWrite<'_>,
    revision: i64,
    before: Option<&str>,
) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO rule_revisions (rule_id, revision, actor, at, action, before, after) \
         VALUES ($1, $2, $3, $4, $5, $6, $7)",
    )
    .bind(write.id)
    .bind(revision)
    .bind(write.actor)
    .bind(write.now)
    .bind(write.action)
    .bind(before)
    .bind(write.definition)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::testing::sqlite_store;

    #[tokio::test]
    async fn a_revoked_token_no_longer_authenticates() {
        let (_dir, store) = sqlite_store().await;
        let token = store.insert_token("ci", "editor", "h1", 1).await.unwrap();
        assert_eq!(
            store
                .active_token_by_hash("h1")
                .await
                .unwrap()
                .unwrap()
                .role,
            "editor"
        );
        assert!(store.revoke_token(token.id, 2).await.unwrap());
        assert!(!store.revoke_token(token.id, 3).await.unwrap());
        assert!(store.active_token_by_hash("h1").await.unwrap().is_none());
        assert_eq!(store.list_tokens().await.unwrap()[0].revoked_at, Some(2));
    }

    #[tokio::test]
    async fn every_rule_write_is_a_revision_and_ids_outlive_deletion() {
        let (_dir, store) = sqlite_store().await;
        let write = |definition, action, now| RuleWrite {
            id: "manual",
            definition,
            actor: "maria",
            action,
            now,
        };
        let created = store
            .create_api_rule(&write("{\"v\":1}", "create", 1))
            .await
            .unwrap();
        assert_eq!(created.revision, 1);
        assert!(
            store
                .create_api_rule(&write("{}", "create", 2))
                .await
                .unwrap_err()
                .is_unique_violation()
        );
        let updated = store
            .update_api_rule(&write("{\"v\":2}", "update", 3), &created)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(updated.revision, 2);
        // A stale revision changes nothing.
        assert!(
            store
                .update_api_rule(&write("{}", "update", 4), &created)
                .await
                .unwrap()
                .is_none()
        );
        assert!(!store.delete_api_rule(&created, "maria", 5).await.unwrap());
        assert!(store.delete_api_rule(&updated, "maria", 5).await.unwrap());
        let again = store
            .create_api_rule(&write("{\"v\":1}", "restore", 6))
            .await
            .unwrap();
        assert_eq!(again.revision, 4);

        let revisions = store.rule_revisions("manual").await.unwrap();
        let actions: Vec<(i64, &str)> = revisions
            .iter()
            .map(|r| (r.revision, r.action.as_str()))
            .collect();
        assert_eq!(
            actions,
            [(4, "restore"), (3, "delete"), (2, "update"), (1, "create")]
        );
        let delete = store.rule_revision("manual", 3).await.unwrap().unwrap();
        assert_eq!(
            (delete.before.as_deref(), delete.after),
            (Some("{\"v\":2}"), None)
        );
        assert!(store.rule_revision("manual", 9).await.unwrap().is_none());
    }

    #[tokio::test]
    async fn shared_bytes_outlive_one_of_their_assets() {
        let (_dir, store) = sqlite_store().await;
        let asset = |name| NewAsset {
            name,
            sha256: "abc",
            mime: "application/pdf",
            bytes: b"%PDF-1.7",
            now: 1,
        };
        assert!(
            store
                .insert_uploaded_asset(&asset("a.pdf"))
                .await
                .unwrap()
                .is_some()
        );
        assert!(
            store
                .insert_uploaded_asset(&asset("b.pdf"))
                .await
                .unwrap()
                .is_some()
        );
        assert!(
            store
                .insert_uploaded_asset(&asset("a.pdf"))
                .await
                .unwrap()
                .is_none()
        );
        assert!(store.delete_uploaded_asset("a.pdf").await.unwrap());
        assert_eq!(
            store.blob("abc").await.unwrap().as_deref(),
            Some(&b"%PDF-1.7"[..])
        );
        assert!(store.delete_uploaded_asset("b.pdf").await.unwrap());
        assert!(store.blob("abc").await.unwrap().is_none());
        assert!(!store.delete_uploaded_asset("b.pdf").await.unwrap());
    }
}
