//! `wtsbot rules check [DIR]`: the daemon's own loader, run for people and CI.
//! `wtsbot rules export DIR` and `wtsbot rules import DIR`: the database's rules as files
//! and back.

use std::collections::BTreeSet;
use std::path::{Component, Path, PathBuf};

use anyhow::Context;

use crate::config::Settings;
use crate::rules::{Rule, Snapshot, load_dir};
use crate::store::Store;
use crate::store::rules::{AssetInfo, ImportedAsset};

/// The revision actor of rules made by `rules import`.
const IMPORT_ACTOR: &str = "rules import";

/// What a check found: one line per problem, and how many of them are errors.
#[derive(Debug, PartialEq, Eq)]
struct CheckReport {
    lines: Vec<String>,
    errors: usize,
    summary: String,
}

pub fn check(settings: &Settings, dir: Option<&Path>) -> anyhow::Result<()> {
    let dir = dir.unwrap_or(&settings.rules.dir);
    let report = check_dir(dir);
    for line in &report.lines {
        eprintln!("{line}");
    }
    if report.errors > 0 {
        anyhow::bail!("{}", report.summary);
    }
    println!("{}", report.summary);
    Ok(())
}

fn check_dir(dir: &Path) -> CheckReport {
    let loaded = match load_dir(dir) {
        Ok(loaded) => loaded,
        Err(errors) => {
            return CheckReport {
                lines: errors.iter().map(ToString::to_string).collect(),
                errors: errors.len(),
                summary: format!("{} in {}", count(errors.len(), "error"), dir.display()),
            };
        }
    };
    let mut lines: Vec<String> = loaded
        .warnings
        .iter()
        .map(|w| format!("warning: {w}"))
        .collect();
    let (rules, assets) = (loaded.rules.len(), loaded.assets.len());
    // The loader validated each rule; compiling proves they also fit together in one snapshot.
    if let Err(e) = Snapshot::compile(loaded.rules.into_iter().map(|r| r.rule)) {
        lines.push(format!("{}: {e}", dir.display()));
        return CheckReport {
            lines,
            errors: 1,
            summary: format!("1 error in {}", dir.display()),
        };
    }
    CheckReport {
        lines,
        errors: 0,
        summary: format!("{}, {}: OK", count(rules, "rule"), count(assets, "asset")),
    }
}

fn count(n: usize, noun: &str) -> String {
    if n == 1 {
        format!("1 {noun}")
    } else {
        format!("{n} {noun}s")
    }
}

/// What an export wrote.
#[derive(Debug, Default, PartialEq, Eq)]
struct ExportReport {
    rules: usize,
    assets: usize,
    /// Assets a rule sends that could not be written, with why.
    missing: Vec<String>,
}

pub async fn export(settings: &Settings, dir: &Path) -> anyhow::Result<()> {
    let store = open_store(settings).await?;
    let report = export_to(&store, &settings.rules.dir, dir).await?;
    for missing in &report.missing {
        eprintln!("warning: {missing}");
    }
    println!(
        "Exported {} and {} to {}",
        count(report.rules, "rule"),
        count(report.assets, "asset"),
        dir.display()
    );
    Ok(())
}

pub async fn import(settings: &Settings, dir: &Path) -> anyhow::Result<()> {
    let store = open_store(settings).await?;
    let (rules, assets) = import_from(&store, dir).await?;
    println!(
        "Imported {} as API rules ({} new) from {}",
        count(rules, "rule"),
        count(assets, "asset"),
        dir.display()
    );
    Ok(())
}

async fn open_store(settings: &Settings) -> anyhow::Result<Store> {
    let store = Store::connect(&settings.database)
        .await
        .context("cannot open the database")?;
    store
        .migrate()
        .await
        .context("cannot migrate the database")?;
    Ok(store)
}

/// Writes every rule as `<id>.toml` and every asset a rule sends under its own name, so
/// that the directory loads (`rules check`, `rules import`) as it is.
async fn export_to(store: &Store, rules_dir: &Path, out: &Path) -> anyhow::Result<ExportReport> {
    let rows = store.list_rules().await?;
    let mut report = ExportReport::default();
    let mut sent_assets = BTreeSet::new();
    for row in &rows {
        let rule = row
            .rule()
            .with_context(|| format!("the stored rule `{}` does not parse", row.id))?;
        sent_assets.extend(rule.replies.iter().filter_map(|r| r.file.clone()));
        let origin = match &row.source_path {
            Some(path) => format!("from rules/{path}"),
            None => "made through the API".to_string(),
        };
        let text = format!(
            "# Rule `{}`, revision {}, {origin}.\n{}",
            row.id,
            row.revision,
            toml::to_string(&rule).context("cannot write a rule as TOML")?
        );
        write_file(&out.join(format!("{}.toml", row.id)), text.as_bytes())?;
        report.rules += 1;
    }
    for name in sent_assets {
        match asset_bytes(store, rules_dir, &name).await {
            Ok(bytes) => {
                let path = safe_join(out, &name).context("unreachable: checked by asset_bytes")?;
                write_file(&path, &bytes)?;
                report.assets += 1;
            }
            Err(why) => report
                .missing
                .push(format!("asset `{name}` not exported: {why}")),
        }
    }
    Ok(report)
}

/// An asset's bytes: an upload from the database, or a file under `rules_dir`.
async fn asset_bytes(store: &Store, rules_dir: &Path, name: &str) -> Result<Vec<u8>, String> {
    let path = safe_join(rules_dir, name).ok_or("not a relative path")?;
    match store.asset_source(name).await.map_err(|e| e.to_string())? {
        Some((sha256, source)) if source == "upload" => store
            .blob(&sha256)
            .await
            .map_err(|e| e.to_string())?
            .ok_or_else(|| "its bytes are missing from the database".to_string()),
        Some(_) => std::fs::read(&path).map_err(|e| format!("{}: {e}", path.display())),
        None => Err("no such asset".to_string()),
    }
}

/// `dir/name` for a relative name that stays inside `dir`.
fn safe_join(dir: &Path, name: &str) -> Option<PathBuf> {
    let relative = Path::new(name);
    let inside = !name.is_empty()
        && relative
            .components()
            .all(|c| matches!(c, Component::Normal(_)));
    inside.then(|| dir.join(relative))
}

fn write_file(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)
            .with_context(|| format!("cannot create {}", parent.display()))?;
    }
    std::fs::write(path, bytes).with_context(|| format!("cannot write {}", path.display()))
}

/// Loads `dir` as `rules check` does and stores its rules as editable API rules, and its
/// other files as uploaded assets. Returns how many rules and new assets were stored.
async fn import_from(store: &Store, dir: &Path) -> anyhow::Result<(usize, usize)> {
    let loaded = load_dir(dir).map_err(|errors| {
        let lines: Vec<String> = errors.iter().map(ToString::to_string).collect();
        anyhow::anyhow!(
            "nothing imported; fix these first:\n  {}",
            lines.join("\n  ")
        )
    })?;
    let rules: Vec<Rule> = loaded.rules.into_iter().map(|r| r.rule).collect();
    // The loader validated each rule; compiling proves they also fit together.
    Snapshot::compile(rules.clone()).context("nothing imported")?;
    let mut assets = Vec::with_capacity(loaded.assets.len());
    for asset in loaded.assets {
        let bytes = std::fs::read(&asset.path)
            .with_context(|| format!("cannot read {}", asset.path.display()))?;
        assets.push(ImportedAsset {
            asset: AssetInfo {
                mime: mime_guess::from_path(&asset.name)
                    .first_or_octet_stream()
                    .essence_str()
                    .to_string(),
                size: i64::try_from(asset.size).unwrap_or(i64::MAX),
                sha256: asset.sha256,
                name: asset.name,
            },
            bytes,
        });
    }
    let outcome = store
        .import_rules(&rules, &assets, IMPORT_ACTOR)
        .await
        .context("nothing imported")?;
    Ok((outcome.rules, outcome.assets))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::testing::sqlite_store;

    const RICH: &str = r#"id = "manual"
name = "Send the installation manual"
priority = 10
on = ["MESSAGE_RECEIVED", "MESSAGE_UPDATED"]
stop = true
cooldown = "24h"
cooldown_per = "contact"

[when]
text_any = ["manual", "instruções de instalação", "instal*"]
text_regex = "segunda\\s+via"
text_none = ["cancelar"]
message_types = ["TEXT"]
agent = "any"
channel_ids = ["c1"]
contact_tags = ["vip"]
hours = { tz = "America/Sao_Paulo", days = ["mon", "fri"], periods = ["08:00-12:00"], holidays = ["2026-12-25"] }

[[reply]]
text = "Olá {{contact.name | \"cliente\"}}, segue o manual:"
[[reply]]
file = "files/manual.pdf"
sync = true
[[reply]]
file_url = "https://cdn.example.com/step1.png"
"#;

    fn write(dir: &Path, name: &str, contents: &[u8]) {
        let path = dir.join(name);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, contents).unwrap();
    }

    async fn stored_rules(store: &Store) -> Vec<(Rule, String)> {
        let rows = store.list_rules().await.unwrap();
        rows.iter()
            .map(|row| (row.rule().unwrap(), row.source.clone()))
            .collect()
    }

    #[tokio::test]
    async fn export_then_import_round_trips() {
        let source = tempfile::tempdir().unwrap();
        write(source.path(), "manual.toml", RICH.as_bytes());
        write(
            source.path(),
            "closed.toml",
            b"id = \"closed\"\nenabled = false\n[when]\noutside_hours = { tz = \"UTC\", periods = [\"22:00-06:00\"] }\n[[reply]]\ntext = \"closed\"\n",
        );
        write(source.path(), "files/manual.pdf", b"%PDF-1.7 manual");
        let (_db1, first) = sqlite_store().await;
        assert_eq!(import_from(&first, source.path()).await.unwrap(), (2, 1));

        let exported = tempfile::tempdir().unwrap();
        let report = export_to(&first, Path::new("/nonexistent"), exported.path())
            .await
            .unwrap();
        assert_eq!((report.rules, report.assets), (2, 1), "{report:?}");
        assert!(report.missing.is_empty());
        assert_eq!(
            std::fs::read(exported.path().join("files/manual.pdf")).unwrap(),
            b"%PDF-1.7 manual"
        );
        assert_eq!(check_dir(exported.path()).errors, 0);

        let (_db2, second) = sqlite_store().await;
        assert_eq!(import_from(&second, exported.path()).await.unwrap(), (2, 1));
        let (before, after) = (stored_rules(&first).await, stored_rules(&second).await);
        assert_eq!(before, after);
        assert!(after.iter().all(|(_, source)| source == "api"));
        let original: Rule = toml::from_str(RICH).unwrap();
        assert_eq!(after[1].0, original);
    }

    #[tokio::test]
    async fn export_reads_rules_directory_assets_from_disk() {
        let rules_dir = tempfile::tempdir().unwrap();
        write(
            rules_dir.path(),
            "send.toml",
            b"id = \"send\"\n[[reply]]\nfile = \"files/a.png\"\n",
        );
        write(rules_dir.path(), "files/a.png", b"png bytes");
        let (_db, store) = sqlite_store().await;
        crate::rules::sync::sync_dir(&store, rules_dir.path())
            .await
            .unwrap();
        let out = tempfile::tempdir().unwrap();
        let report = export_to(&store, rules_dir.path(), out.path())
            .await
            .unwrap();
        assert_eq!((report.rules, report.assets), (1, 1));
        let text = std::fs::read_to_string(out.path().join("send.toml")).unwrap();
        assert!(
            text.starts_with("# Rule `send`, revision 1, from rules/send.toml.\n"),
            "{text}"
        );
        assert_eq!(
            std::fs::read(out.path().join("files/a.png")).unwrap(),
            b"png bytes"
        );
    }

    #[tokio::test]
    async fn import_refuses_existing_ids_and_broken_files() {
        let dir = tempfile::tempdir().unwrap();
        write(
            dir.path(),
            "a.toml",
            b"id = \"a\"\n[[reply]]\ntext = \"a\"\n",
        );
        let (_db, store) = sqlite_store().await;
        import_from(&store, dir.path()).await.unwrap();
        let err = import_from(&store, dir.path()).await.unwrap_err();
        assert_eq!(
            format!("{err:#}"),
            "nothing imported: rules with these ids already exist: a"
        );

        write(dir.path(), "b.toml", b"id = \"b\"\npriority = \"high\"\n");
        let err = import_from(&store, dir.path())
            .await
            .unwrap_err()
            .to_string();
        let file = dir.path().join("b.toml");
        assert!(
            err.contains(&format!("{}:2: priority: invalid type", file.display())),
            "{err}"
        );
        assert_eq!(store.list_rules().await.unwrap().len(), 1);
    }

    #[test]
    fn asset_names_stay_inside_the_directory() {
        let dir = Path::new("/out");
        assert_eq!(
            safe_join(dir, "files/a.pdf"),
            Some(PathBuf::from("/out/files/a.pdf"))
        );
        for bad in ["", "../a.pdf", "/etc/passwd", "files/../../a"] {
            assert_eq!(safe_join(dir, bad), None, "{bad}");
        }
    }

    #[test]
    fn reports_errors_with_file_line_and_key() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("manual.toml"),
            "id = \"manual\"\n[when]\ntext_regex = \"(\"\n",
        )
        .unwrap();
        let report = check_dir(dir.path());
        let file = dir.path().join("manual.toml");
        assert_eq!(
            report.lines,
            [
                format!("{}:3: when.text_regex: unclosed group", file.display()),
                format!(
                    "{}: reply: at least one [[reply]] step is required",
                    file.display()
                ),
            ]
        );
        assert_eq!(report.errors, 2);
        assert_eq!(
            report.summary,
            format!("2 errors in {}", dir.path().display())
        );
    }

    #[test]
    fn prints_warnings_and_counts_on_success() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("w.toml"),
            "id = \"w\"\n[when]\ntext_regex = \"Manual\"\n[[reply]]\nfile = \"a.png\"\n",
        )
        .unwrap();
        std::fs::write(dir.path().join("a.png"), b"png").unwrap();
        let report = check_dir(dir.path());
        assert_eq!(report.errors, 0);
        assert_eq!(report.lines.len(), 1);
        assert!(
            report.lines[0].starts_with("warning: "),
            "{}",
            report.lines[0]
        );
        assert!(report.lines[0].contains("w.toml:3: when.text_regex: "));
        assert_eq!(report.summary, "1 rule, 1 asset: OK");
    }

    #[test]
    fn the_repository_rules_pass() {
        let report = check_dir(&Path::new(env!("CARGO_MANIFEST_DIR")).join("rules"));
        assert_eq!(report.errors, 0, "{:?}", report.lines);
        assert_eq!(report.summary, "4 rules, 2 assets: OK");
    }
}
