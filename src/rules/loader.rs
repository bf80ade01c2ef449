//! Loads a rules directory such as `rules/`.
//!
//! - Every `*.toml` file directly in the directory is one rule.
//! - Every other regular file, at any depth, is an asset named by its path relative to the
//!   directory with `/` separators (`files/manual.pdf`). Subdirectories hold assets only: a
//!   `.toml` file below the top level is an asset too, so assets may be of any type.
//! - Hidden entries (a name starting with `.`) and editor backups (ending in `~`) are
//!   skipped; symbolic links to directories are not followed.
//!
//! Loading is all or nothing: either every rule is valid and comes back with its source
//! file, or every error comes back, each naming its file, line and key, so that the caller
//! keeps its last good rules.

use std::collections::{BTreeSet, HashMap};
use std::fmt;
use std::fs;
use std::io::Read;
use std::ops::Range;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};
use toml_edit::{ImDocument, Item, Table, Value};

use super::model::Rule;
use crate::error::FieldError;

/// A rule and the file it came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourcedRule {
    pub rule: Rule,
    pub source: PathBuf,
}

/// A file under the rules directory that a reply may send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Asset {
    /// The path relative to the rules directory, `/`-separated: `files/manual.pdf`.
    pub name: String,
    pub path: PathBuf,
    pub size: u64,
    /// Lower-case hex.
    pub sha256: String,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LoadedRules {
    /// Sorted by file name.
    pub rules: Vec<SourcedRule>,
    /// Sorted by name.
    pub assets: Vec<Asset>,
    pub warnings: Vec<LoadError>,
}

/// One problem in a rules directory; displays as `rules/manual.toml:7: when.text_regex: unclosed group`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct LoadError {
    pub file: PathBuf,
    pub line: Option<usize>,
    pub key: Option<String>,
    pub message: String,
}

impl fmt::Display for LoadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file.display())?;
        if let Some(line) = self.line {
            write!(f, ":{line}")?;
        }
        if let Some(key) = &self.key {
            write!(f, ": {key}")?;
        }
        write!(f, ": {}", self.message)
    }
}

impl LoadError {
    fn file(file: &Path, message: impl Into<String>) -> LoadError {
        LoadError {
            file: file.to_path_buf(),
            line: None,
            key: None,
            message: message.into(),
        }
    }
}

/// Loads every rule and asset under `dir`; see the module documentation.
pub fn load_dir(dir: &Path) -> Result<LoadedRules, Vec<LoadError>> {
    let mut errors = Vec::new();
    let mut rule_files = Vec::new();
    let mut assets = Vec::new();
    walk(dir, dir, &mut rule_files, &mut assets, &mut errors);
    rule_files.sort();
    assets.sort_by(|a: &Asset, b| a.name.cmp(&b.name));
    let asset_names: BTreeSet<&str> = assets.iter().map(|a| a.name.as_str()).collect();

    let mut rules = Vec::new();
    let mut warnings = Vec::new();
    let mut first_file_of_id: HashMap<String, PathBuf> = HashMap::new();
    for file in rule_files {
        let text = match fs::read_to_string(&file) {
            Ok(text) => text,
            Err(e) => {
                errors.push(LoadError::file(&file, format!("cannot read: {e}")));
                continue;
            }
        };
        let parsed = match parse_rule(&file, &text) {
            Ok(parsed) => parsed,
            Err(error) => {
                errors.push(error);
                continue;
            }
        };
        let validation = parsed.rule.validate(|name| asset_names.contains(name));
        errors.extend(validation.errors.iter().map(|e| parsed.error_at(e)));
        warnings.extend(validation.warnings.iter().map(|e| parsed.error_at(e)));
        let id = parsed.rule.id.clone();
        if let Some(first) = first_file_of_id.get(&id) {
            errors.push(parsed.error_at(&FieldError::new(
                "id",
                format!("duplicate id \"{id}\", also in {}", first.display()),
            )));
        } else {
            first_file_of_id.insert(id, file.clone());
        }
        rules.push(SourcedRule {
            rule: parsed.rule,
            source: file,
        });
    }
    if errors.is_empty() {
        Ok(LoadedRules {
            rules,
            assets,
            warnings,
        })
    } else {
        Err(errors)
    }
}

fn walk(
    root: &Path,
    dir: &Path,
    rule_files: &mut Vec<PathBuf>,
    assets: &mut Vec<Asset>,
    errors: &mut Vec<LoadError>,
) {
    let entries = match fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) => {
            errors.push(LoadError::file(dir, format!("cannot read directory: {e}")));
            return;
        }
    };
    for entry in entries {
        let entry = match entry {
            Ok(entry) => entry,
            Err(e) => {
                errors.push(LoadError::file(dir, format!("cannot read directory: {e}")));
                continue;
            }
        };
        let path = entry.path();
        let name = entry.file_name();
        let Some(name) = name.to_str() else {
            errors.push(LoadError::file(&path, "the file name is not UTF-8"));
            continue;
        };
        if name.starts_with('.') || name.ends_with('~') {
            continue;
        }
        let file_type = match entry.file_type() {
            Ok(t) => t,
            Err(e) => {
                errors.push(LoadError::file(&path, format!("cannot stat: {e}")));
                continue;
            }
        };
        if file_type.is_dir() {
            walk(root, &path, rule_files, assets, errors);
        } else if dir == root && name.ends_with(".toml") {
            rule_files.push(path);
        } else if path.is_file() {
            match read_asset(root, &path) {
                Ok(asset) => assets.push(asset),
                Err(e) => errors.push(LoadError::file(&path, format!("cannot read: {e}"))),
            }
        }
    }
}

fn read_asset(root: &Path, path: &Path) -> std::io::Result<Asset> {
    let relative = path.strip_prefix(root).expect("walked from the root");
    let name = relative
        .components()
        .map(|c| c.as_os_str().to_string_lossy())
        .collect::<Vec<_>>()
        .join("/");
    let mut file = fs::File::open(path)?;
    let mut hasher = Sha256::new();
    let mut buffer = [0u8; 64 * 1024];
    let mut size = 0u64;
    loop {
        let read = file.read(&mut buffer)?;
        if read == 0 {
            break;
        }
        hasher.update(&buffer[..read]);
        size += read as u64;
    }
    Ok(Asset {
        name,
        path: path.to_path_buf(),
        size,
        sha256: hex::encode(hasher.finalize()),
    })
}

/// A parsed rule with what is needed to point back into its file.
struct ParsedRule<'a> {
    rule: Rule,
    file: &'a Path,
    text: &'a str,
    document: ImDocument<&'a str>,
}

impl ParsedRule<'_> {
    /// A validation problem, placed on the line of its key (or of its nearest parent key).
    fn error_at(&self, problem: &FieldError) -> LoadError {
        LoadError {
            file: self.file.to_path_buf(),
            line: locate(&self.document, &problem.field).map(|span| line_of(self.text, span.start)),
            key: Some(problem.field.clone()),
            message: problem.message.clone(),
        }
    }
}

fn parse_rule<'a>(file: &'a Path, text: &'a str) -> Result<ParsedRule<'a>, LoadError> {
    let document = ImDocument::parse(text);
    let rule = toml::from_str::<Rule>(text).map_err(|e| {
        let line = e.span().map(|span| line_of(text, span.start));
        let key = missing_field(e.message()).or_else(|| match (&document, e.span()) {
            (Ok(document), Some(span)) => key_at(document, span.start),
            _ => None,
        });
        LoadError {
            file: file.to_path_buf(),
            line,
            key,
            message: one_line(e.message()),
        }
    })?;
    let document = document.map_err(|e| LoadError::file(file, e.message().to_string()))?;
    Ok(ParsedRule {
        rule,
        file,
        text,
        document,
    })
}

/// TOML messages may span lines ("invalid array\nexpected `]`"); a report is one line each.
fn one_line(message: &str) -> String {
    let lines: Vec<&str> = message
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect();
    lines.join(": ")
}

fn line_of(text: &str, offset: usize) -> usize {
    text.as_bytes()[..offset.min(text.len())]
        .iter()
        .filter(|b| **b == b'\n')
        .count()
        + 1
}

/// `missing field `id`` → `id`.
fn missing_field(message: &str) -> Option<String> {
    let rest = message.strip_prefix("missing field `")?;
    Some(rest[..rest.find('`')?].to_string())
}

/// A step into a TOML document.
#[derive(Clone, Copy)]
enum Node<'a> {
    Item(&'a Item),
    Table(&'a Table),
    Value(&'a Value),
}

impl<'a> Node<'a> {
    fn span(self) -> Option<Range<usize>> {
        match self {
            Node::Item(item) => item.span(),
            Node::Table(table) => table.span(),
            Node::Value(value) => value.span(),
        }
    }

    /// Named children with the span of their key.
    fn entries(self) -> Vec<(&'a str, Option<Range<usize>>, Node<'a>)> {
        match self {
            Node::Table(table) | Node::Item(Item::Table(table)) => table
                .iter()
                .filter_map(|(name, _)| {
                    let (key, item) = table.get_key_value(name)?;
                    Some((key.get(), key.span(), Node::Item(item)))
                })
                .collect(),
            Node::Item(Item::Value(Value::InlineTable(table)))
            | Node::Value(Value::InlineTable(table)) => table
                .iter()
                .filter_map(|(name, _)| {
                    let (key, item) = table.get_key_value(name)?;
                    Some((key.get(), key.span(), Node::Item(item)))
                })
                .collect(),
            _ => Vec::new(),
        }
    }

    /// Indexed children.
    fn elements(self) -> Vec<Node<'a>> {
        match self {
            Node::Item(Item::ArrayOfTables(tables)) => tables.iter().map(Node::Table).collect(),
            Node::Item(Item::Value(Value::Array(array))) | Node::Value(Value::Array(array)) => {
                array.iter().map(Node::Value).collect()
            }
            _ => Vec::new(),
        }
    }
}

enum Segment<'p> {
    Key(&'p str),
    Index(usize),
}

/// `reply[1].file` → `reply`, `[1]`, `file`.
fn segments(path: &str) -> Vec<Segment<'_>> {
    let mut out = Vec::new();
    for part in path.split('.') {
        let (key, mut rest) = part.split_at(part.find('[').unwrap_or(part.len()));
        out.push(Segment::Key(key));
        while let Some(inner) = rest.strip_prefix('[') {
            let close = inner.find(']').unwrap_or(inner.len());
            if let Ok(index) = inner[..close].parse() {
                out.push(Segment::Index(index));
            }
            rest = inner.get(close + 1..).unwrap_or("");
        }
    }
    out
}

/// The span of the deepest part of `path` present in the document.
fn locate(document: &ImDocument<&str>, path: &str) -> Option<Range<usize>> {
    let mut node = Node::Table(document.as_table());
    let mut found = None;
    for segment in segments(path) {
        let next = match segment {
            Segment::Key(name) => node
                .entries()
                .into_iter()
                .find(|(key, _, _)| *key == name)
                .map(|(_, key_span, child)| (key_span.or_else(|| child.span()), child)),
            Segment::Index(index) => node
                .elements()
                .get(index)
                .map(|child| (child.span(), *child)),
        };
        let Some((span, child)) = next else { break };
        found = span.or(found);
        node = child;
    }
    found
}

/// The path of the deepest key whose key or value covers `offset`.
fn key_at(document: &ImDocument<&str>, offset: usize) -> Option<String> {
    fn visit(node: Node<'_>, path: &str, offset: usize, best: &mut Option<String>) {
        let covers = |span: Option<Range<usize>>| span.is_some_and(|s| s.contains(&offset));
        for (name, key_span, child) in node.entries() {
            let child_path = if path.is_empty() {
                name.to_string()
            } else {
                format!("{path}.{name}")
            };
            if covers(key_span) || covers(child.span()) {
                *best = Some(child_path.clone());
            }
            visit(child, &child_path, offset, best);
        }
        for (index, child) in node.elements().into_iter().enumerate() {
            let child_path = format!("{path}[{index}]");
            if covers(child.span()) {
                *best = Some(child_path.clone());
            }
            visit(child, &child_path, offset, best);
        }
    }
    let mut best = None;
    visit(Node::Table(document.as_table()), "", offset, &mut best);
    best
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rules::{MatchInput, SessionFacts, Snapshot};

    struct Dir(tempfile::TempDir);

    impl Dir {
        fn new() -> Dir {
            Dir(tempfile::tempdir().unwrap())
        }

        fn write(&self, name: &str, content: &str) -> &Dir {
            let path = self.0.path().join(name);
            fs::create_dir_all(path.parent().unwrap()).unwrap();
            fs::write(path, content).unwrap();
            self
        }

        fn load(&self) -> Result<LoadedRules, Vec<LoadError>> {
            load_dir(self.0.path())
        }

        /// Errors rendered with file names relative to the directory.
        fn errors(&self) -> Vec<String> {
            let prefix = format!("{}/", self.0.path().display());
            self.load()
                .unwrap_err()
                .iter()
                .map(|e| e.to_string().replace(&prefix, ""))
                .collect()
        }
    }

    const MANUAL: &str = r#"# The manual
id = "manual"
priority = 10

[when]
text_any = ["manual"]

[[reply]]
text = "Segue:"
[[reply]]
file = "files/manual.pdf"
"#;

    #[test]
    fn loads_rules_and_assets() {
        let dir = Dir::new();
        dir.write("manual.toml", MANUAL)
            .write("files/manual.pdf", "%PDF-1.4 tiny")
            .write("files/notes.toml", "not a rule")
            .write(".manual.toml.swp", "junk")
            .write("manual.toml~", "junk");
        let loaded = dir.load().unwrap();
        assert_eq!(loaded.rules.len(), 1);
        assert_eq!(loaded.rules[0].rule.id, "manual");
        assert_eq!(loaded.rules[0].source, dir.0.path().join("manual.toml"));
        let names: Vec<_> = loaded.assets.iter().map(|a| a.name.as_str()).collect();
        assert_eq!(names, ["files/manual.pdf", "files/notes.toml"]);
        let pdf = &loaded.assets[0];
        assert_eq!(pdf.size, 13);
        assert_eq!(pdf.sha256, hex::encode(Sha256::digest(b"%PDF-1.4 tiny")));
        assert!(loaded.warnings.is_empty());
    }

    #[test]
    fn an_empty_directory_has_no_rules() {
        assert_eq!(Dir::new().load().unwrap(), LoadedRules::default());
    }

    #[test]
    fn a_missing_directory_is_an_error() {
        let errors = load_dir(Path::new("/nonexistent/rules")).unwrap_err();
        assert!(
            errors[0]
                .to_string()
                .starts_with("/nonexistent/rules: cannot read directory")
        );
    }

    #[test]
    fn validation_errors_point_at_the_line_of_their_key() {
        let dir = Dir::new();
        dir.write(
            "manual.toml",
            "id = \"manual\"\n\n[when]\ntext_any = [\"manual\"]\n\n\ntext_regex = \"segunda(via\"\n\n[[reply]]\ntext = \"a\"\n[[reply]]\nfile = \"files/nope.pdf\"\n",
        );
        assert_eq!(
            dir.errors(),
            [
                "manual.toml:7: when.text_regex: unclosed group",
                "manual.toml:12: reply[1].file: no asset named \"files/nope.pdf\"; put it under the rules directory or upload it",
            ]
        );
    }

    #[test]
    fn nested_paths_find_inline_tables_and_array_elements() {
        let dir = Dir::new();
        dir.write(
            "hours.toml",
            "id = \"hours\"\n[when]\nhours = { tz = \"UTC\", periods = [\"08:00-12:00\", \"bad\"] }\noutside_hours = { tz = \"UTC\", days = [\n  \"mon\",\n  \"funday\",\n] }\n[[reply]]\ntext = \"a\"\n",
        );
        let errors = dir.errors();
        assert_eq!(errors.len(), 2, "{errors:?}");
        assert!(errors[0].starts_with("hours.toml:3: when.hours.periods[1]: invalid period"));
        assert!(errors[1].starts_with("hours.toml:6: when.outside_hours.days[1]: unknown day"));
    }

    #[test]
    fn syntax_and_type_errors_name_file_line_and_key() {
        let dir = Dir::new();
        dir.write(
            "a.toml",
            "id = \"a\"\npriority = \"high\"\n[[reply]]\ntext = \"a\"\n",
        )
        .write(
            "b.toml",
            "id = \"b\"\n[when]\ntext_any = [\"a\"]\ntexto = 1\n",
        )
        .write(
            "c.toml",
            "id = \"c\"\n[[reply]]\ntext = \"a\"\nfile_path = \"x\"\n",
        )
        .write("d.toml", "name = \"no id\"\n")
        .write("e.toml", "id = \"e\"\ntext_any = [\"a\"\n");
        let errors = dir.errors();
        assert_eq!(errors.len(), 5, "{errors:?}");
        assert!(
            errors[0].starts_with("a.toml:2: priority: invalid type"),
            "{}",
            errors[0]
        );
        assert!(
            errors[1].starts_with("b.toml:4: when.texto: unknown field `texto`"),
            "{}",
            errors[1]
        );
        assert!(
            errors[2].starts_with("c.toml:4: reply[0].file_path: unknown field"),
            "{}",
            errors[2]
        );
        assert!(
            errors[3].starts_with("d.toml:1: id: missing field `id`"),
            "{}",
            errors[3]
        );
        assert_eq!(errors[4], "e.toml:3: invalid array: expected `]`");
    }

    #[test]
    fn duplicate_ids_name_both_files() {
        let dir = Dir::new();
        dir.write("a.toml", "id = \"same\"\n[[reply]]\ntext = \"a\"\n")
            .write("b.toml", "\nid = \"same\"\n[[reply]]\ntext = \"b\"\n");
        assert_eq!(
            dir.errors(),
            ["b.toml:2: id: duplicate id \"same\", also in a.toml"]
        );
    }

    #[test]
    fn every_invalid_file_is_reported_and_nothing_is_loaded() {
        let dir = Dir::new();
        dir.write("good.toml", "id = \"good\"\n[[reply]]\ntext = \"a\"\n")
            .write("bad1.toml", "id = \"Bad\"\n[[reply]]\ntext = \"a\"\n")
            .write("bad2.toml", "id = \"bad2\"\n");
        assert_eq!(
            dir.errors(),
            [
                "bad1.toml:1: id: must be a slug: lower-case letters, digits, '-' and '_', starting with a letter or digit",
                "bad2.toml: reply: at least one [[reply]] step is required",
            ]
        );
    }

    #[test]
    fn warnings_come_with_the_rules() {
        let dir = Dir::new();
        dir.write(
            "w.toml",
            "id = \"w\"\n[when]\ntext_regex = \"Manual\"\n[[reply]]\ntext = \"a\"\n",
        );
        let loaded = dir.load().unwrap();
        assert_eq!(loaded.warnings.len(), 1);
        assert_eq!(loaded.warnings[0].line, Some(3));
        assert_eq!(loaded.warnings[0].key.as_deref(), Some("when.text_regex"));
    }

    #[test]
    fn the_repository_rules_load_cleanly() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("rules");
        let loaded = load_dir(&dir).unwrap_or_else(|errors| {
            panic!(
                "{}",
                errors
                    .iter()
                    .map(|e| e.to_string())
                    .collect::<Vec<_>>()
                    .join("\n")
            )
        });
        assert!(loaded.rules.len() >= 3);
        assert!(loaded.warnings.is_empty(), "{:?}", loaded.warnings);
        let snapshot = Snapshot::compile(loaded.rules.into_iter().map(|r| r.rule)).unwrap();
        // The demo's three customers: exactly the manual and the price list answer.
        let matched = |text: &str| -> Vec<String> {
            let input = MatchInput {
                event_type: "MESSAGE_RECEIVED",
                text: Some(text),
                message_type: Some("TEXT"),
                arrived_at: chrono::DateTime::from_timestamp(1_772_463_600, 0).unwrap(),
            };
            snapshot
                .evaluate(&input, Some(&SessionFacts::default()))
                .into_iter()
                .filter(|e| e.matched)
                .map(|e| e.rule.id.clone())
                .collect()
        };
        assert_eq!(matched("Oi, vocês têm o manual de instalação?"), ["manual"]);
        assert_eq!(
            matched("Quanto custa o plano profissional?"),
            ["price-list"]
        );
        assert!(matched("bom dia").is_empty());
    }
}
