//! Rules live in the database; the files of `rules.dir` are a second way in.
//!
//! [`sync_dir`] makes the database's file rules and `rules` assets match the directory
//! (all or nothing: a directory with any error changes nothing, so the last good rules
//! stay). [`reload`] builds the live snapshot from the database's enabled rules, API and
//! file rules alike, and swaps it into the engine.

use std::collections::BTreeSet;
use std::path::Path;

use super::engine::{RuleEngine, Snapshot};
use super::loader::{LoadError, LoadedRules, load_dir};
use super::model::{Rule, Validation};
use crate::store::rules::{AssetInfo, Clash, FileRule, FileSyncError, FileSyncOutcome};
use crate::store::{Store, StoreError};

#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    /// The directory has errors; each names its file, line and key.
    #[error("{}", lines(.0))]
    Invalid(Vec<LoadError>),
    #[error("cannot read the rules directory: {0}")]
    Io(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

fn lines(errors: &[LoadError]) -> String {
    errors
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("; ")
}

/// Syncs the rules and assets of `dir` into the database; see the module documentation.
/// A file whose rule id is already an API rule's, or whose asset name is already an
/// upload's, is an error naming that file.
pub async fn sync_dir(store: &Store, dir: &Path) -> Result<FileSyncOutcome, SyncError> {
    let owned_dir = dir.to_path_buf();
    let loaded = tokio::task::spawn_blocking(move || load_dir(&owned_dir))
        .await
        .map_err(|e| SyncError::Io(e.to_string()))?
        .map_err(SyncError::Invalid)?;
    for warning in &loaded.warnings {
        tracing::warn!(%warning, "rule file warning");
    }
    let (rules, assets) = to_records(dir, loaded);
    match store.sync_file_rules(&rules, &assets).await {
        Ok(outcome) => Ok(outcome),
        Err(FileSyncError::Store(err)) => Err(err.into()),
        Err(FileSyncError::Clashes(clashes)) => Err(SyncError::Invalid(
            clashes.iter().map(|c| clash_error(dir, c)).collect(),
        )),
    }
}

/// Syncs `dir`, then reloads the snapshot when the sync changed something (or when
/// `always_reload`). Problems are logged, never returned: the last good rules stay.
pub async fn sync_and_reload(store: &Store, engine: &RuleEngine, dir: &Path, always_reload: bool) {
    let changed = sync_logged(store, dir).await;
    if (changed || always_reload)
        && let Err(err) = rebuild(store, engine).await
    {
        tracing::error!(error = %err, "cannot reload the rules");
    }
}

/// Syncs `dir` and logs the outcome; returns whether the database changed.
async fn sync_logged(store: &Store, dir: &Path) -> bool {
    match sync_dir(store, dir).await {
        Ok(outcome) => {
            if outcome.changed() {
                tracing::info!(
                    dir = %dir.display(),
                    created = ?outcome.created,
                    updated = ?outcome.updated,
                    deleted = ?outcome.deleted,
                    assets_changed = outcome.assets_changed,
                    "rule files synced"
                );
            }
            outcome.changed()
        }
        Err(SyncError::Invalid(errors)) => {
            for error in &errors {
                tracing::error!(
                    file = %error.file.display(),
                    line = error.line,
                    key = error.key.as_deref(),
                    %error,
                    "rule file rejected; the last good rules stay"
                );
            }
            false
        }
        Err(err) => {
            tracing::error!(error = %err, dir = %dir.display(), "cannot sync the rule files");
            false
        }
    }
}

/// Rebuilds the live snapshot from the database and tells every other instance (on
/// PostgreSQL) to do the same. The admin API calls it after each rule write has
/// committed. Returns how many rules are enabled.
pub async fn reload(store: &Store, engine: &RuleEngine) -> Result<usize, StoreError> {
    let enabled = rebuild(store, engine).await?;
    store.notify_rules_changed().await?;
    Ok(enabled)
}

/// Rebuilds this instance's snapshot from the database's enabled rules. A stored rule
/// that no longer parses or validates is logged and left out, so it cannot take the
/// others down.
pub async fn rebuild(store: &Store, engine: &RuleEngine) -> Result<usize, StoreError> {
    let snapshot = snapshot_from_db(store).await?;
    let enabled = snapshot.len();
    engine.swap(snapshot);
    Ok(enabled)
}

/// The engine for a starting daemon: `dir` synced in (problems logged, the database's
/// rules kept), then the snapshot built from the database.
pub async fn start(store: &Store, dir: &Path) -> Result<RuleEngine, StoreError> {
    if dir.is_dir() {
        sync_logged(store, dir).await;
    } else {
        tracing::warn!(dir = %dir.display(), "the rules directory does not exist; only rules made through the API apply");
    }
    Ok(RuleEngine::new(snapshot_from_db(store).await?))
}

async fn snapshot_from_db(store: &Store) -> Result<Snapshot, StoreError> {
    let mut rules = Vec::new();
    for row in store.list_rules().await? {
        let rule = match row.rule() {
            Ok(rule) => rule,
            Err(err) => {
                tracing::error!(rule = %row.id, error = %err, "stored rule does not parse; left out");
                continue;
            }
        };
        let errors = rule.validate(|_| true).errors;
        if !errors.is_empty() {
            let errors: Vec<String> = errors
                .iter()
                .map(|e| format!("{}: {}", e.field, e.message))
                .collect();
            tracing::error!(rule = %row.id, errors = ?errors, "stored rule is invalid; left out");
            continue;
        }
        rules.push(rule);
    }
    match Snapshot::compile(rules) {
        Ok(snapshot) => Ok(snapshot),
        Err(err) => {
            tracing::error!(error = %err, "cannot compile the stored rules; none apply");
            Ok(Snapshot::empty())
        }
    }
}

/// Validates `rule` as the admin API receives it: its `file` steps must name a known
/// asset (a file of `rules.dir` or an upload).
pub async fn validate_rule(store: &Store, rule: &Rule) -> Result<Validation, StoreError> {
    let names: BTreeSet<String> = store.asset_names().await?;
    Ok(rule.validate(|name| names.contains(name)))
}

fn to_records(dir: &Path, loaded: LoadedRules) -> (Vec<FileRule>, Vec<AssetInfo>) {
    let rules = loaded
        .rules
        .into_iter()
        .map(|sourced| FileRule {
            source_path: relative_name(dir, &sourced.source),
            rule: sourced.rule,
        })
        .collect();
    let assets = loaded
        .assets
        .into_iter()
        .map(|asset| AssetInfo {
            mime: mime_guess::from_path(&asset.name)
                .first_or_octet_stream()
                .essence_str()
                .to_string(),
            size: i64::try_from(asset.size).unwrap_or(i64::MAX),
            sha256: asset.sha256,
            name: asset.name,
        })
        .collect();
    (rules, assets)
}

/// `dir/manual.toml` → `manual.toml`, `/`-separated.
fn relative_name(dir: &Path, path: &Path) -> String {
    let relative = path.strip_prefix(dir).unwrap_or(path);
    relative
        .components()
        .map(|c| c.as_os_str().to_string_lossy())
        .collect::<Vec<_>>()
        .join("/")
}

fn clash_error(dir: &Path, clash: &Clash) -> LoadError {
    match clash {
        Clash::RuleId { source_path, id } => {
            let file = dir.join(source_path);
            LoadError {
                line: std::fs::read_to_string(&file)
                    .ok()
                    .and_then(|text| id_line(&text)),
                file,
                key: Some("id".to_string()),
                message: format!(
                    "id \"{id}\" is already an API rule's; rename this rule or delete the API rule"
                ),
            }
        }
        Clash::AssetName { name } => LoadError {
            file: dir.join(name),
            line: None,
            key: None,
            message: format!(
                "asset name \"{name}\" is already an uploaded asset's; rename the file or delete the upload"
            ),
        },
    }
}

/// The line of the top-level `id = ...` key.
fn id_line(text: &str) -> Option<usize> {
    text.lines()
        .take_while(|line| !line.trim_start().starts_with('['))
        .position(|line| {
            line.trim_start()
                .strip_prefix("id")
                .is_some_and(|rest| rest.trim_start().starts_with('='))
        })
        .map(|index| index + 1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::testing::sqlite_store;

    const MANUAL: &str = "id = \"manual\"\n[when]\ntext_any = [\"manual\"]\n[[reply]]\nfile = \"files/manual.pdf\"\n";

    fn write(dir: &Path, name: &str, contents: &str) {
        let path = dir.join(name);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, contents).unwrap();
    }

    fn api_rule(id: &str) -> Rule {
        toml::from_str(&format!("id = \"{id}\"\n[[reply]]\ntext = \"hi\"\n")).unwrap()
    }

    async fn revisions(store: &Store, id: &str) -> Vec<(i64, String, String)> {
        sqlx::query_as(
            "SELECT revision, actor, action FROM rule_revisions WHERE rule_id = $1 ORDER BY revision",
        )
        .bind(id)
        .fetch_all(store.pool())
        .await
        .unwrap()
    }

    #[tokio::test]
    async fn files_are_created_updated_and_deleted_with_revisions() {
        let (_db, store) = sqlite_store().await;
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), "manual.toml", MANUAL);
        write(dir.path(), "files/manual.pdf", "%PDF-1.7");

        let outcome = sync_dir(&store, dir.path()).await.unwrap();
        assert_eq!(outcome.created, ["manual"]);
        assert_eq!(outcome.assets_changed, 1);
        let row = store.find_rule("manual").await.unwrap().unwrap();
        assert_eq!(
            (row.source.as_str(), row.source_path.as_deref()),
            ("file", Some("manual.toml"))
        );
        assert_eq!(
            row.rule().unwrap().replies[0].file.as_deref(),
            Some("files/manual.pdf")
        );
        assert_eq!(
            store.asset_source("files/manual.pdf").await.unwrap(),
            Some((
                hex::encode(<sha2::Sha256 as sha2::Digest>::digest(b"%PDF-1.7")),
                "rules".to_string()
            ))
        );

        assert!(!sync_dir(&store, dir.path()).await.unwrap().changed());

        write(
            dir.path(),
            "manual.toml",
            &MANUAL.replace("\"manual\"]", "\"guide\"]"),
        );
        let outcome = sync_dir(&store, dir.path()).await.unwrap();
        assert_eq!(outcome.updated, ["manual"]);
        let row = store.find_rule("manual").await.unwrap().unwrap();
        assert_eq!(row.revision, 2);
        assert_eq!(row.rule().unwrap().when.text_any, ["guide"]);

        std::fs::remove_file(dir.path().join("manual.toml")).unwrap();
        std::fs::remove_file(dir.path().join("files/manual.pdf")).unwrap();
        let outcome = sync_dir(&store, dir.path()).await.unwrap();
        assert_eq!(outcome.deleted, ["manual"]);
        assert_eq!(outcome.assets_changed, 1);
        assert!(store.find_rule("manual").await.unwrap().is_none());
        assert!(store.asset_names().await.unwrap().is_empty());

        // A file brought back continues the rule's history.
        write(
            dir.path(),
            "manual.toml",
            &MANUAL.replace("file = \"files/manual.pdf\"", "text = \"a\""),
        );
        sync_dir(&store, dir.path()).await.unwrap();
        let actor = "rules/manual.toml".to_string();
        assert_eq!(
            revisions(&store, "manual").await,
            [
                (1, actor.clone(), "create".to_string()),
                (2, actor.clone(), "update".to_string()),
                (3, actor.clone(), "delete".to_string()),
                (4, actor, "create".to_string()),
            ]
        );
    }

    #[tokio::test]
    async fn a_broken_file_changes_nothing_and_names_file_line_and_key() {
        let (_db, store) = sqlite_store().await;
        let dir = tempfile::tempdir().unwrap();
        write(
            dir.path(),
            "hello.toml",
            "id = \"hello\"\n[[reply]]\ntext = \"hi\"\n",
        );
        sync_dir(&store, dir.path()).await.unwrap();
        write(
            dir.path(),
            "hello.toml",
            "id = \"hello\"\n[when]\ntext_regex = \"(\"\n[[reply]]\ntext = \"changed\"\n",
        );
        let Err(SyncError::Invalid(errors)) = sync_dir(&store, dir.path()).await else {
            panic!("a broken file must be refused");
        };
        let file = dir.path().join("hello.toml");
        assert_eq!(errors.len(), 1);
        assert_eq!((errors[0].file.clone(), errors[0].line), (file, Some(3)));
        assert_eq!(errors[0].key.as_deref(), Some("when.text_regex"));
        let rule = store
            .find_rule("hello")
            .await
            .unwrap()
            .unwrap()
            .rule()
            .unwrap();
        assert_eq!(rule.replies[0].text.as_deref(), Some("hi"));
    }

    #[tokio::test]
    async fn a_file_may_not_take_an_api_rules_id() {
        let (_db, store) = sqlite_store().await;
        store
            .import_rules(&[api_rule("hello")], &[], "test")
            .await
            .unwrap();
        let dir = tempfile::tempdir().unwrap();
        write(
            dir.path(),
            "other.toml",
            "id = \"other\"\n[[reply]]\ntext = \"o\"\n",
        );
        write(
            dir.path(),
            "hello.toml",
            "# greeting\n\nid = \"hello\"\n[[reply]]\ntext = \"file\"\n",
        );
        let Err(SyncError::Invalid(errors)) = sync_dir(&store, dir.path()).await else {
            panic!("the clash must be refused");
        };
        assert_eq!(
            errors.iter().map(ToString::to_string).collect::<Vec<_>>(),
            [format!(
                "{}:3: id: id \"hello\" is already an API rule's; rename this rule or delete the API rule",
                dir.path().join("hello.toml").display()
            )]
        );
        let row = store.find_rule("hello").await.unwrap().unwrap();
        assert_eq!(row.source, "api");
        assert!(
            store.find_rule("other").await.unwrap().is_none(),
            "nothing synced"
        );
    }

    #[tokio::test]
    async fn a_file_may_not_take_an_uploads_name() {
        let (_db, store) = sqlite_store().await;
        let upload = crate::store::rules::ImportedAsset {
            asset: AssetInfo {
                name: "files/manual.pdf".into(),
                sha256: "abc".into(),
                size: 3,
                mime: "application/pdf".into(),
            },
            bytes: b"pdf".to_vec(),
        };
        store.import_rules(&[], &[upload], "test").await.unwrap();
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), "files/manual.pdf", "other");
        let Err(SyncError::Invalid(errors)) = sync_dir(&store, dir.path()).await else {
            panic!("the clash must be refused");
        };
        assert!(
            errors[0]
                .to_string()
                .contains("already an uploaded asset's"),
            "{}",
            errors[0]
        );
    }

    #[tokio::test]
    async fn the_snapshot_holds_the_enabled_rules_of_both_sources() {
        let (_db, store) = sqlite_store().await;
        let mut disabled = api_rule("off");
        disabled.enabled = false;
        store
            .import_rules(&[api_rule("from-api"), disabled], &[], "test")
            .await
            .unwrap();
        let dir = tempfile::tempdir().unwrap();
        write(
            dir.path(),
            "file.toml",
            "id = \"from-file\"\n[[reply]]\ntext = \"f\"\n",
        );
        let engine = start(&store, dir.path()).await.unwrap();
        let ids: Vec<String> = engine.current().rules().map(|r| r.id.clone()).collect();
        assert_eq!(ids, ["from-api", "from-file"]);

        // A stored rule that no longer validates is left out, not fatal.
        sqlx::query("UPDATE rules SET definition = $1 WHERE id = 'from-api'")
            .bind(r#"{"id":"from-api","when":{"text_regex":"("},"reply":[{"text":"a"}]}"#)
            .execute(store.pool())
            .await
            .unwrap();
        assert_eq!(reload(&store, &engine).await.unwrap(), 1);
        assert!(engine.current().rule("from-file").is_some());
    }

    #[tokio::test]
    async fn validation_knows_uploads_and_rules_files() {
        let (_db, store) = sqlite_store().await;
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), "files/manual.pdf", "%PDF");
        sync_dir(&store, dir.path()).await.unwrap();
        let mut rule = api_rule("send");
        rule.replies[0] = crate::rules::Reply {
            file: Some("files/manual.pdf".into()),
            ..Default::default()
        };
        assert!(validate_rule(&store, &rule).await.unwrap().is_ok());
        rule.replies[0].file = Some("files/missing.pdf".into());
        let validation = validate_rule(&store, &rule).await.unwrap();
        assert_eq!(validation.errors[0].field, "reply[0].file");
    }

    #[test]
    fn the_id_line_is_found_before_any_table() {
        assert_eq!(id_line("# c\n\nid = \"a\"\n"), Some(3));
        assert_eq!(id_line("idle = 1\nid=\"a\"\n"), Some(2));
        assert_eq!(id_line("[when]\nid = \"a\"\n"), None);
    }
}
