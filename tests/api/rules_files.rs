//! Rules live in the database; the files of `rules.dir` are synced into it on start and
//! on change, and changes made by other processes reload the running daemon.

use std::path::Path;
use std::process::Output;
use std::time::Duration;

use tokio::process::Command;
use wtsbot::config::{DatabaseSettings, Synchronous};
use wtsbot::rules::Rule;
use wtsbot::rules::sync::{SyncError, sync_dir};
use wtsbot::sim::customers::message_received;
use wtsbot::store::Store;

use crate::helpers::{Backend, ScratchDatabase, TestApp, TestAppBuilder, eventually};
use crate::on_both_backends;

const WAIT: Duration = Duration::from_secs(10);

const HELLO: &str = "id = \"hello\"\n[when]\ntext_any = [\"hello\"]\n[[reply]]\ntext = \"Hi!\"\n";

/// Posts a customer message and returns the ids of the rules that fired on it.
async fn fired(app: &TestApp, text: &str) -> Vec<String> {
    let body = message_received(&uuid::Uuid::new_v4().to_string(), text);
    assert_eq!(app.post_webhook(&body).await.status(), 200);
    let key = format!(
        "MESSAGE_RECEIVED:{}",
        body["content"]["id"].as_str().unwrap()
    );
    let id = app
        .store
        .find_event_by_dedupe_key(&key)
        .await
        .unwrap()
        .expect("the event is stored")
        .id;
    eventually("the event to be decided", WAIT, || async {
        let event = app.store.find_event(id).await.unwrap()?;
        (event.status == "processed").then_some(())
    })
    .await;
    sqlx::query_scalar(
        "SELECT rule_id FROM decisions WHERE event_id = $1 AND fired = 1 ORDER BY rule_id",
    )
    .bind(id)
    .fetch_all(app.store.pool())
    .await
    .unwrap()
}

/// Waits until a message with `text` fires exactly `expected`.
async fn until_fired(app: &TestApp, text: &str, expected: &[&str]) {
    eventually(
        &format!("\"{text}\" to fire {expected:?}"),
        WAIT,
        || async { (fired(app, text).await == expected).then_some(()) },
    )
    .await;
}

fn write(dir: &Path, name: &str, contents: &str) {
    let path = dir.join(name);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, contents).unwrap();
}

fn rule(toml_text: &str) -> Rule {
    toml::from_str(toml_text).unwrap()
}

async fn rules_dir_is_synced_on_start(backend: Backend) {
    let app = TestAppBuilder::new(backend)
        .rules_file("hello.toml", HELLO)
        .rules_file("files/manual.pdf", "%PDF-1.7")
        .spawn()
        .await;
    let row = app
        .store
        .find_rule("hello")
        .await
        .unwrap()
        .expect("in the database");
    assert_eq!(row.source, "file");
    assert_eq!(row.source_path.as_deref(), Some("hello.toml"));
    assert_eq!(
        app.store
            .asset_source("files/manual.pdf")
            .await
            .unwrap()
            .map(|a| a.1),
        Some("rules".to_string())
    );
    let actors: Vec<String> =
        sqlx::query_scalar("SELECT actor FROM rule_revisions WHERE rule_id = 'hello'")
            .fetch_all(app.store.pool())
            .await
            .unwrap();
    assert_eq!(actors, ["rules/hello.toml"]);
    assert_eq!(fired(&app, "hello there").await, ["hello"]);
    assert!(fired(&app, "good morning").await.is_empty());
}

async fn a_changed_file_applies_without_restart(backend: Backend) {
    let app = TestAppBuilder::new(backend)
        .rules_file("hello.toml", HELLO)
        .spawn()
        .await;
    assert_eq!(fired(&app, "hello").await, ["hello"]);
    write(
        &app.rules_dir,
        "hello.toml",
        &HELLO.replace("[\"hello\"]", "[\"hola\"]"),
    );
    write(
        &app.rules_dir,
        "bye.toml",
        "id = \"bye\"\n[when]\ntext_any = [\"bye\"]\n[[reply]]\ntext = \"Bye!\"\n",
    );
    until_fired(&app, "hola, bye", &["bye", "hello"]).await;
    assert!(fired(&app, "hello").await.is_empty());
    assert_eq!(
        app.store
            .find_rule("hello")
            .await
            .unwrap()
            .unwrap()
            .revision,
        2
    );
}

async fn a_broken_file_keeps_the_last_good_rules(backend: Backend) {
    let app = TestAppBuilder::new(backend)
        .rules_file("hello.toml", HELLO)
        .spawn()
        .await;
    write(
        &app.rules_dir,
        "hello.toml",
        "id = \"hello\"\n[when]\ntext_any = [\"hola\"]\ntext_regex = \"(\"\n[[reply]]\ntext = \"Hi!\"\n",
    );
    // A valid file added with a broken one waits for the whole directory to be valid.
    write(
        &app.rules_dir,
        "bye.toml",
        "id = \"bye\"\n[when]\ntext_any = [\"bye\"]\n[[reply]]\ntext = \"Bye!\"\n",
    );
    let Err(SyncError::Invalid(errors)) = sync_dir(&app.store, &app.rules_dir).await else {
        panic!("the broken file must be refused");
    };
    assert_eq!(
        errors.iter().map(ToString::to_string).collect::<Vec<_>>(),
        [format!(
            "{}:4: when.text_regex: unclosed group",
            app.rules_dir.join("hello.toml").display()
        )]
    );
    // Give the watcher its chance to (wrongly) apply something.
    tokio::time::sleep(wtsbot::rules::watch::DEBOUNCE * 3).await;
    assert_eq!(fired(&app, "hello, bye").await, ["hello"]);
    assert!(app.store.find_rule("bye").await.unwrap().is_none());

    write(
        &app.rules_dir,
        "hello.toml",
        &HELLO.replace("[\"hello\"]", "[\"hola\"]"),
    );
    until_fired(&app, "hola, bye", &["bye", "hello"]).await;
}

async fn a_deleted_file_removes_its_rule(backend: Backend) {
    let app = TestAppBuilder::new(backend)
        .rules_file("hello.toml", HELLO)
        .spawn()
        .await;
    assert_eq!(fired(&app, "hello").await, ["hello"]);
    std::fs::remove_file(app.rules_dir.join("hello.toml")).unwrap();
    until_fired(&app, "hello", &[]).await;
    assert!(app.store.find_rule("hello").await.unwrap().is_none());
}

async fn a_file_may_not_take_an_api_rules_id(backend: Backend) {
    let app = TestAppBuilder::new(backend).spawn().await;
    let api = rule("id = \"hello\"\n[when]\ntext_any = [\"hi\"]\n[[reply]]\ntext = \"API\"\n");
    app.store.import_rules(&[api], &[], "test").await.unwrap();
    write(&app.rules_dir, "hello.toml", HELLO);
    let Err(SyncError::Invalid(errors)) = sync_dir(&app.store, &app.rules_dir).await else {
        panic!("the clash must be refused");
    };
    assert_eq!(
        errors[0].to_string(),
        format!(
            "{}:1: id: id \"hello\" is already an API rule's; rename this rule or delete the API rule",
            app.rules_dir.join("hello.toml").display()
        )
    );
    until_fired(&app, "hi", &["hello"]).await;
    assert!(
        fired(&app, "hello").await.is_empty(),
        "the file rule never applies"
    );
    assert_eq!(
        app.store.find_rule("hello").await.unwrap().unwrap().source,
        "api"
    );
}

/// Another process's write (here, an import) reloads the running daemon: through
/// NOTIFY on PostgreSQL, through the revision log on SQLite.
async fn a_write_by_another_process_reloads(backend: Backend) {
    let app = TestAppBuilder::new(backend).spawn().await;
    assert!(fired(&app, "price").await.is_empty());
    let other = app.open_store().await;
    let price = rule("id = \"price\"\n[when]\ntext_any = [\"price\"]\n[[reply]]\ntext = \"$\"\n");
    other.import_rules(&[price], &[], "test").await.unwrap();
    until_fired(&app, "price", &["price"]).await;
}

/// SIGHUP syncs the files and reloads the snapshot from the database even when the sync
/// changed nothing: here a row written behind the daemon's back, which neither the file
/// watcher nor the change announcements see.
async fn sighup_reloads(backend: Backend) {
    let app = TestAppBuilder::new(backend)
        .rules_file("hello.toml", HELLO)
        .spawn()
        .await;
    assert_eq!(fired(&app, "hello").await, ["hello"]);
    sqlx::query(
        "INSERT INTO rules (id, definition, source, revision, created_at, updated_at) \
         VALUES ('quiet', $1, 'api', 1, 0, 0)",
    )
    .bind(r#"{"id":"quiet","when":{"text_any":["hola"]},"reply":[{"text":"Hi!"}]}"#)
    .execute(app.store.pool())
    .await
    .unwrap();
    tokio::time::sleep(wtsbot::rules::watch::POLL_INTERVAL + Duration::from_millis(300)).await;
    assert!(fired(&app, "hola").await.is_empty(), "nothing announced it");
    let status = std::process::Command::new("kill")
        .args(["-HUP", &std::process::id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    until_fired(&app, "hola, hello", &["hello", "quiet"]).await;
}

async fn wtsbot(database_url: &str, args: &[&str]) -> Output {
    let output = Command::new(env!("CARGO_BIN_EXE_wtsbot"))
        .args(args)
        .env("WTSBOT__DATABASE__URL", database_url)
        .env("WTSBOT__LOG__LEVEL", "warn")
        .output()
        .await
        .expect("run wtsbot");
    assert!(
        output.status.success(),
        "wtsbot {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

async fn open(url: &str) -> Store {
    Store::connect(&DatabaseSettings {
        url: url.to_string().into(),
        synchronous: Synchronous::Normal,
        max_connections: 2,
        statement_timeout: std::time::Duration::from_secs(5),
    })
    .await
    .unwrap()
}

async fn export_then_import_round_trips(backend: Backend) {
    let source = tempfile::tempdir().unwrap();
    write(
        source.path(),
        "manual.toml",
        "id = \"manual\"\npriority = 10\ncooldown = \"24h\"\n[when]\ntext_any = [\"manual\", \"instal*\"]\nhours = { tz = \"America/Sao_Paulo\", days = [\"mon\"], periods = [\"08:00-12:00\"] }\n[[reply]]\ntext = \"Olá {{contact.name | \\\"cliente\\\"}}\"\n[[reply]]\nfile = \"files/manual.pdf\"\nsync = true\n",
    );
    write(
        source.path(),
        "off.toml",
        "id = \"off\"\nenabled = false\non = [\"SESSION_NEW\"]\n[[reply]]\nfile_url = \"https://cdn.example.com/a.png\"\n",
    );
    write(source.path(), "files/manual.pdf", "%PDF-1.7 manual");
    let first = ScratchDatabase::create(backend).await;
    let second = ScratchDatabase::create(backend).await;
    let exported = tempfile::tempdir().unwrap();
    let exported_dir = exported.path().join("out");

    let output = wtsbot(
        first.url(),
        &["rules", "import", source.path().to_str().unwrap()],
    )
    .await;
    assert!(String::from_utf8_lossy(&output.stdout).contains("Imported 2 rules"));
    wtsbot(
        first.url(),
        &["rules", "export", exported_dir.to_str().unwrap()],
    )
    .await;
    wtsbot(
        second.url(),
        &["rules", "import", exported_dir.to_str().unwrap()],
    )
    .await;

    let (first, second) = (open(first.url()).await, open(second.url()).await);
    let definitions = |rows: Vec<wtsbot::store::rules::RuleRow>| -> Vec<(Rule, String)> {
        rows.iter()
            .map(|row| (row.rule().unwrap(), row.source.clone()))
            .collect()
    };
    let before = definitions(first.list_rules().await.unwrap());
    let after = definitions(second.list_rules().await.unwrap());
    assert_eq!(before.len(), 2);
    assert_eq!(before, after);
    assert!(after.iter().all(|(_, source)| source == "api"));
    let (sha256, source) = second
        .asset_source("files/manual.pdf")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(source, "upload");
    assert_eq!(
        second.blob(&sha256).await.unwrap().as_deref(),
        Some(&b"%PDF-1.7 manual"[..])
    );
    first.close().await;
    second.close().await;
}

on_both_backends!(
    rules_dir_is_synced_on_start,
    a_changed_file_applies_without_restart,
    a_broken_file_keeps_the_last_good_rules,
    a_deleted_file_removes_its_rule,
    a_file_may_not_take_an_api_rules_id,
    a_write_by_another_process_reloads,
    sighup_reloads,
    export_then_import_round_trips,
);
