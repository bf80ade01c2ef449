//! `wtsbot rules check [DIR]`: the daemon's own loader, run for people and CI.

use std::path::Path;

use crate::config::Settings;
use crate::rules::{Snapshot, load_dir};

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

#[cfg(test)]
mod tests {
    use super::*;

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
