//! Rules, their revisions, and the asset catalogue.
//!
//! A rule row holds the rule as JSON (`definition`), where it came from (`api` or `file`,
//! with the file's path relative to `rules.dir`) and its current revision. Every change
//! also writes a `rule_revisions` row (who, when, what it was before and after), kept
//! after the rule is deleted.

use std::collections::{BTreeSet, HashMap};

use sqlx::{Any, Transaction};

use super::{Backend, Store, StoreError, now_ms};
use crate::rules::Rule;

/// The PostgreSQL channel announcing that the rules changed: every instance reloads.
pub const RULES_CHANNEL: &str = "wtsbot_rules";
/// PostgreSQL advisory lock key serialising rule writes of the file sync and imports
/// across instances (SQLite's `BEGIN IMMEDIATE` already does).
const RULES_WRITE_LOCK: i64 = 0x7774_7362_6f74_5f72;

/// Where a rule came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RuleSource {
    /// Made through the admin API or `rules import`: editable there.
    Api,
    /// Synced from a file under `rules.dir`: edited in the file.
    File,
}

impl RuleSource {
    pub fn as_str(self) -> &'static str {
        match self {
            RuleSource::Api => "api",
            RuleSource::File => "file",
        }
    }
}

/// One stored rule.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct RuleRow {
    pub id: String,
    /// The rule as JSON.
    pub definition: String,
    /// `api` or `file`.
    pub source: String,
    /// For file rules: the file's path relative to `rules.dir` (`manual.toml`).
    pub source_path: Option<String>,
    pub revision: i64,
    pub created_at: i64,
    pub updated_at: i64,
}

impl RuleRow {
    pub fn rule(&self) -> Result<Rule, serde_json::Error> {
        serde_json::from_str(&self.definition)
    }

    pub fn is_from_file(&self) -> bool {
        self.source == RuleSource::File.as_str()
    }
}

const RULE_COLUMNS: &str = "id, definition, source, source_path, revision, created_at, updated_at";

/// An asset row as the sync compares it.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
struct StoredAsset {
    name: String,
    sha256: String,
    size: i64,
    mime: String,
    /// `upload` or `rules`.
    source: String,
}

/// An asset as found on disk or in an import, before it is catalogued.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AssetInfo {
    pub name: String,
    pub sha256: String,
    pub size: i64,
    pub mime: String,
}

/// A rule read from a file of `rules.dir`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileRule {
    pub rule: Rule,
    /// Relative to `rules.dir`: `manual.toml`.
    pub source_path: String,
}

/// What a file sync changed; empty when the database already matched the files.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FileSyncOutcome {
    pub created: Vec<String>,
    pub updated: Vec<String>,
    pub deleted: Vec<String>,
    /// Assets added, changed or removed.
    pub assets_changed: usize,
}

impl FileSyncOutcome {
    pub fn changed(&self) -> bool {
        !self.created.is_empty()
            || !self.updated.is_empty()
            || !self.deleted.is_empty()
            || self.assets_changed > 0
    }
}

/// Something in `rules.dir` that collides with what the admin API owns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Clash {
    /// The file's rule id is already an API rule's.
    RuleId { source_path: String, id: String },
    /// The file's asset name is already an uploaded asset's.
    AssetName { name: String },
}

#[derive(Debug, thiserror::Error)]
pub enum FileSyncError {
    #[error("the rules directory collides with rules or assets made through the API")]
    Clashes(Vec<Clash>),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// An asset to import, with its bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImportedAsset {
    pub asset: AssetInfo,
    pub bytes: Vec<u8>,
}

#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    #[error("rules with these ids already exist: {}", .0.join(", "))]
    ExistingRules(Vec<String>),
    #[error("assets with these names already exist with other content: {}", .0.join(", "))]
    ExistingAssets(Vec<String>),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// What an import stored.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ImportOutcome {
    pub rules: usize,
    /// Assets newly stored; those already present with the same content are reused.
    pub assets: usize,
}

impl Store {
    /// Every rule, by id.
    pub async fn list_rules(&self) -> Result<Vec<RuleRow>, StoreError> {
        let rows = sqlx::query_as(&format!("SELECT {RULE_COLUMNS} FROM rules ORDER BY id"))
            .fetch_all(self.pool())
            .await?;
        Ok(rows)
    }

    pub async fn find_rule(&self, id: &str) -> Result<Option<RuleRow>, StoreError> {
        let row = sqlx::query_as(&format!("SELECT {RULE_COLUMNS} FROM rules WHERE id = $1"))
            .bind(id)
            .fetch_optional(self.pool())
            .await?;
        Ok(row)
    }

    /// The names a rule's `file` step may use: the `rules.dir` files and the uploads.
    pub async fn asset_names(&self) -> Result<BTreeSet<String>, StoreError> {
        let names: Vec<String> = sqlx::query_scalar("SELECT name FROM assets")
            .fetch_all(self.pool())
            .await?;
        Ok(names.into_iter().collect())
    }

    /// Changes whenever a rule is written (each write adds a revision row): a cheap way
    /// to notice another process's writes without LISTEN.
    pub async fn rules_fingerprint(&self) -> Result<(i64, i64), StoreError> {
        let fingerprint =
            sqlx::query_as("SELECT COUNT(*), COALESCE(MAX(at), 0) FROM rule_revisions")
                .fetch_one(self.pool())
                .await?;
        Ok(fingerprint)
    }

    /// Announces on PostgreSQL that the rules changed, so every instance reloads.
    pub async fn notify_rules_changed(&self) -> Result<(), StoreError> {
        if self.backend() == Backend::Postgres {
            sqlx::query("SELECT pg_notify($1, '')")
                .bind(RULES_CHANNEL)
                .execute(self.pool())
                .await?;
        }
        Ok(())
    }

    /// Makes the file rules and `rules` assets in the database exactly `rules` and
    /// `assets`, in one transaction: creates, updates (only what differs) and deletes,
    /// each with a revision row whose actor is `rules/<file>`. A clash with an API rule
    /// or an uploaded asset changes nothing. On PostgreSQL a sync that changed something
    /// notifies [`RULES_CHANNEL`] on commit.
    pub async fn sync_file_rules(
        &self,
        rules: &[FileRule],
        assets: &[AssetInfo],
    ) -> Result<FileSyncOutcome, FileSyncError> {
        let now = now_ms();
        let mut tx = self.begin_rules_write().await?;
        let existing: HashMap<String, RuleRow> = fetch_rules(&mut tx)
            .await?
            .into_iter()
            .map(|row| (row.id.clone(), row))
            .collect();
        let existing_assets: HashMap<String, StoredAsset> = fetch_assets(&mut tx)
            .await?
            .into_iter()
            .map(|row| (row.name.clone(), row))
            .collect();

        let clashes = clashes(rules, assets, &existing, &existing_assets);
        if !clashes.is_empty() {
            return Err(FileSyncError::Clashes(clashes));
        }

        let mut outcome = FileSyncOutcome::default();
        for file_rule in rules {
            let actor = format!("rules/{}", file_rule.source_path);
            let definition = definition_json(&file_rule.rule);
            match existing.get(&file_rule.rule.id) {
                None => {
                    insert_rule(
                        &mut tx,
                        &file_rule.rule.id,
                        &definition,
                        RuleSource::File,
                        Some(&file_rule.source_path),
                        &actor,
                        now,
                    )
                    .await?;
                    outcome.created.push(file_rule.rule.id.clone());
                }
                Some(row) => {
                    let same = row.rule().is_ok_and(|rule| rule == file_rule.rule)
                        && row.source_path.as_deref() == Some(file_rule.source_path.as_str());
                    if !same {
                        update_file_rule(&mut tx, row, &definition, &file_rule.source_path, now)
                            .await?;
                        outcome.updated.push(row.id.clone());
                    }
                }
            }
        }
        let kept: BTreeSet<&str> = rules.iter().map(|r| r.rule.id.as_str()).collect();
        for row in existing.values() {
            if row.is_from_file() && !kept.contains(row.id.as_str()) {
                delete_file_rule(&mut tx, row, now).await?;
                outcome.deleted.push(row.id.clone());
            }
        }
        outcome.assets_changed = sync_rules_assets(&mut tx, assets, &existing_assets, now).await?;
        outcome.created.sort();
        outcome.updated.sort();
        outcome.deleted.sort();

        if outcome.changed() && self.backend() == Backend::Postgres {
            notify_in(&mut tx).await?;
        }
        tx.commit().await.map_err(StoreError::from)?;
        Ok(outcome)
    }

    /// Creates API rules (revision 1 each, by `actor`) and stores the assets they bring as
    /// uploads, in one transaction. An existing rule id, or an existing asset name with
    /// other content, refuses the whole import; an asset already present with the same
    /// content is reused.
    pub async fn import_rules(
        &self,
        rules: &[Rule],
        assets: &[ImportedAsset],
        actor: &str,
    ) -> Result<ImportOutcome, ImportError> {
        let now = now_ms();
        let mut tx = self.begin_rules_write().await?;
        let existing: BTreeSet<String> = fetch_rules(&mut tx)
            .await?
            .into_iter()
            .map(|row| row.id)
            .collect();
        let taken: Vec<String> = rules
            .iter()
            .filter(|r| existing.contains(&r.id))
            .map(|r| r.id.clone())
            .collect();
        if !taken.is_empty() {
            return Err(ImportError::ExistingRules(taken));
        }
        let existing_assets: HashMap<String, StoredAsset> = fetch_assets(&mut tx)
            .await?
            .into_iter()
            .map(|row| (row.name.clone(), row))
            .collect();
        let different: Vec<String> = assets
            .iter()
            .filter(|a| {
                existing_assets
                    .get(&a.asset.name)
                    .is_some_and(|row| row.sha256 != a.asset.sha256)
            })
            .map(|a| a.asset.name.clone())
            .collect();
        if !different.is_empty() {
            return Err(ImportError::ExistingAssets(different));
        }

        let mut outcome = ImportOutcome::default();
        for imported in assets {
            if existing_assets.contains_key(&imported.asset.name) {
                continue;
            }
            sqlx::query(
                "INSERT INTO blobs (sha256, bytes) VALUES ($1, $2) ON CONFLICT (sha256) DO NOTHING",
            )
            .bind(&imported.asset.sha256)
            .bind(&imported.bytes)
            .execute(&mut *tx)
            .await
            .map_err(StoreError::from)?;
            insert_asset(&mut tx, &imported.asset, "upload", now).await?;
            outcome.assets += 1;
        }
        for rule in rules {
            let definition = definition_json(rule);
            insert_rule(
                &mut tx,
                &rule.id,
                &definition,
                RuleSource::Api,
                None,
                actor,
                now,
            )
            .await?;
            outcome.rules += 1;
        }
        if self.backend() == Backend::Postgres && (outcome.rules > 0 || outcome.assets > 0) {
            notify_in(&mut tx).await?;
        }
        tx.commit().await.map_err(StoreError::from)?;
        Ok(outcome)
    }

    /// A write transaction that also holds the rules write lock on PostgreSQL.
    async fn begin_rules_write(&self) -> Result<Transaction<'static, Any>, StoreError> {
        let mut tx = self.begin_write().await?;
        if self.backend() == Backend::Postgres {
            sqlx::query("SELECT pg_advisory_xact_lock($1)")
                .bind(RULES_WRITE_LOCK)
                .execute(&mut *tx)
                .await?;
        }
        Ok(tx)
    }
}

/// The rule as stored: compact JSON, with defaults left out.
fn definition_json(rule: &Rule) -> String {
    serde_json::to_string(rule).expect("a rule always serialises")
}

fn clashes(
    rules: &[FileRule],
    assets: &[AssetInfo],
    existing: &HashMap<String, RuleRow>,
    existing_assets: &HashMap<String, StoredAsset>,
) -> Vec<Clash> {
    let rule_clashes = rules.iter().filter_map(|file_rule| {
        let row = existing.get(&file_rule.rule.id)?;
        (!row.is_from_file()).then(|| Clash::RuleId {
            source_path: file_rule.source_path.clone(),
            id: file_rule.rule.id.clone(),
        })
    });
    let asset_clashes = assets.iter().filter_map(|asset| {
        let row = existing_assets.get(&asset.name)?;
        (row.source != "rules").then(|| Clash::AssetName {
            name: asset.name.clone(),
        })
    });
    rule_clashes.chain(asset_clashes).collect()
}

async fn fetch_rules(tx: &mut Transaction<'static, Any>) -> Result<Vec<RuleRow>, StoreError> {
    let rows = sqlx::query_as(&format!("SELECT {RULE_COLUMNS} FROM rules"))
        .fetch_all(&mut **tx)
        .await?;
    Ok(rows)
}

async fn fetch_assets(tx: &mut Transaction<'static, Any>) -> Result<Vec<StoredAsset>, StoreError> {
    let rows = sqlx::query_as("SELECT name, sha256, size, mime, source FROM assets")
        .fetch_all(&mut **tx)
        .await?;
    Ok(rows)
}

async fn notify_in(tx: &mut Transaction<'static, Any>) -> Result<(), StoreError> {
    // Delivered to listeners on commit, never before.
    sqlx::query("SELECT pg_notify($1, '')")
        .bind(RULES_CHANNEL)
        .execute(&mut **tx)
        .await?;
    Ok(())
}

/// The revision after the highest one the rule ever had, deleted incarnations included.
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

struct Revision<'a> {
    rule_id: &'a str,
    revision: i64,
    actor: &'a str,
    action: &'a str,
    before: Option<&'a str>,
    after: Option<&'a str>,
    at: i64,
}

async fn insert_revision(
    tx: &mut Transaction<'static, Any>,
    revision: Revision<'_>,
) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO rule_revisions (rule_id, revision, actor, at, action, before, after) \
         VALUES ($1, $2, $3, $4, $5, $6, $7)",
    )
    .bind(revision.rule_id)
    .bind(revision.revision)
    .bind(revision.actor)
    .bind(revision.at)
    .bind(revision.action)
    .bind(revision.before)
    .bind(revision.after)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

async fn insert_rule(
    tx: &mut Transaction<'static, Any>,
    id: &str,
    definition: &str,
    source: RuleSource,
    source_path: Option<&str>,
    actor: &str,
    now: i64,
) -> Result<(), StoreError> {
    let revision = next_revision(tx, id).await?;
    sqlx::query(
        "INSERT INTO rules (id, definition, source, source_path, revision, created_at, updated_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $6)",
    )
    .bind(id)
    .bind(definition)
    .bind(source.as_str())
    .bind(source_path)
    .bind(revision)
    .bind(now)
    .execute(&mut **tx)
    .await?;
    insert_revision(
        tx,
        Revision {
            rule_id: id,
            revision,
            actor,
            action: "create",
            before: None,
            after: Some(definition),
            at: now,
        },
    )
    .await
}

async fn update_file_rule(
    tx: &mut Transaction<'static, Any>,
    row: &RuleRow,
    definition: &str,
    source_path: &str,
    now: i64,
) -> Result<(), StoreError> {
    let revision = next_revision(tx, &row.id).await?.max(row.revision + 1);
    sqlx::query(
        "UPDATE rules SET definition = $1, source_path = $2, revision = $3, updated_at = $4 \
         WHERE id = $5",
    )
    .bind(definition)
    .bind(source_path)
    .bind(revision)
    .bind(now)
    .bind(&row.id)
    .execute(&mut **tx)
    .await?;
    insert_revision(
        tx,
        Revision {
            rule_id: &row.id,
            revision,
            actor: &format!("rules/{source_path}"),
            action: "update",
            before: Some(&row.definition),
            after: Some(definition),
            at: now,
        },
    )
    .await
}

async fn delete_file_rule(
    tx: &mut Transaction<'static, Any>,
    row: &RuleRow,
    now: i64,
) -> Result<(), StoreError> {
    let revision = next_revision(tx, &row.id).await?.max(row.revision + 1);
    sqlx::query("DELETE FROM rules WHERE id = $1")
        .bind(&row.id)
        .execute(&mut **tx)
        .await?;
    let actor = format!("rules/{}", row.source_path.as_deref().unwrap_or_default());
    insert_revision(
        tx,
        Revision {
            rule_id: &row.id,
            revision,
            actor: &actor,
            action: "delete",
            before: Some(&row.definition),
            after: None,
            at: now,
        },
    )
    .await
}

async fn insert_asset(
    tx: &mut Transaction<'static, Any>,
    asset: &AssetInfo,
    source: &str,
    now: i64,
) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO assets (name, sha256, size, mime, source, created_at) \
         VALUES ($1, $2, $3, $4, $5, $6)",
    )
    .bind(&asset.name)
    .bind(&asset.sha256)
    .bind(asset.size)
    .bind(&asset.mime)
    .bind(source)
    .bind(now)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// Makes the `rules` assets exactly `assets`; returns how many rows changed.
async fn sync_rules_assets(
    tx: &mut Transaction<'static, Any>,
    assets: &[AssetInfo],
    existing: &HashMap<String, StoredAsset>,
    now: i64,
) -> Result<usize, StoreError> {
    let mut changed = 0;
    for asset in assets {
        match existing.get(&asset.name) {
            None => {
                insert_asset(tx, asset, "rules", now).await?;
                changed += 1;
            }
            Some(row)
                if row.sha256 != asset.sha256
                    || row.size != asset.size
                    || row.mime != asset.mime =>
            {
                sqlx::query("UPDATE assets SET sha256 = $1, size = $2, mime = $3 WHERE name = $4")
                    .bind(&asset.sha256)
                    .bind(asset.size)
                    .bind(&asset.mime)
                    .bind(&asset.name)
                    .execute(&mut **tx)
                    .await?;
                changed += 1;
            }
            Some(_) => {}
        }
    }
    let present: BTreeSet<&str> = assets.iter().map(|a| a.name.as_str()).collect();
    for row in existing.values() {
        if row.source == "rules" && !present.contains(row.name.as_str()) {
            sqlx::query("DELETE FROM assets WHERE name = $1")
                .bind(&row.name)
                .execute(&mut **tx)
                .await?;
            changed += 1;
        }
    }
    Ok(changed)
}
