//! Keeps the live snapshot current while the daemon runs:
//! - a change under `rules.dir` (debounced) or SIGHUP syncs the files into the database;
//! - a change written by anyone (another instance, the admin API, `rules import`) reloads
//!   the snapshot: on PostgreSQL through `LISTEN wtsbot_rules`, on SQLite by polling the
//!   revision log.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use notify::event::{AccessKind, AccessMode};
use notify::{Event, EventKind, RecursiveMode, Watcher};
use secrecy::{ExposeSecret, SecretString};
use sqlx::postgres::PgListener;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::engine::RuleEngine;
use super::sync::{rebuild, sync_and_reload};
use crate::store::rules::RULES_CHANNEL;
use crate::store::{Backend, Store};

/// Quiet time after the last file event before syncing: an editor's save is several
/// events, and a copied directory many more.
pub const DEBOUNCE: Duration = Duration::from_millis(200);
/// How often SQLite checks the revision log for writes by other processes.
pub const POLL_INTERVAL: Duration = Duration::from_secs(1);
/// How long to wait before reconnecting a lost PostgreSQL listener.
const RECONNECT_DELAY: Duration = Duration::from_secs(1);

/// Runs until `stop`: the file watcher, SIGHUP and the reload on others' changes.
/// `seen` is the revision log's fingerprint when `engine` was built, so a write that lands
/// before this task first runs still reloads (`None`: the first look reloads).
pub async fn watch(
    dir: PathBuf,
    store: Store,
    engine: Arc<RuleEngine>,
    seen: Option<(i64, i64)>,
    database_url: SecretString,
    stop: CancellationToken,
) -> anyhow::Result<()> {
    let files = watch_files(&dir, &store, &engine, &stop);
    let others = async {
        match store.backend() {
            Backend::Postgres => listen_postgres(&database_url, &store, &engine, &stop).await,
            Backend::Sqlite => poll_revisions(&store, &engine, seen, &stop).await,
        }
    };
    let (files, others) = tokio::join!(files, others);
    files.and(others)
}

/// Syncs `dir` after each burst of file events and on every SIGHUP.
async fn watch_files(
    dir: &Path,
    store: &Store,
    engine: &RuleEngine,
    stop: &CancellationToken,
) -> anyhow::Result<()> {
    let mut hangup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())?;
    let (events, mut changes) = mpsc::unbounded_channel();
    // Dropping the watcher stops it; it lives as long as this task.
    let _watcher = match file_watcher(dir, events) {
        Ok(watcher) => Some(watcher),
        Err(err) => {
            tracing::warn!(dir = %dir.display(), error = %err, "cannot watch the rules directory; SIGHUP still syncs it");
            None
        }
    };
    loop {
        tokio::select! {
            _ = stop.cancelled() => return Ok(()),
            _ = hangup.recv() => {
                tracing::info!(dir = %dir.display(), "SIGHUP: syncing the rule files");
                sync_and_reload(store, engine, dir, true).await;
            }
            Some(()) = changes.recv() => {
                if !settle(&mut changes, stop).await {
                    return Ok(());
                }
                sync_and_reload(store, engine, dir, false).await;
            }
        }
    }
}

/// Waits until no event came for [`DEBOUNCE`]; false when stopped meanwhile.
async fn settle(changes: &mut mpsc::UnboundedReceiver<()>, stop: &CancellationToken) -> bool {
    loop {
        tokio::select! {
            _ = stop.cancelled() => return false,
            more = changes.recv() => if more.is_none() { return true },
            _ = tokio::time::sleep(DEBOUNCE) => return true,
        }
    }
}

fn file_watcher(
    dir: &Path,
    events: mpsc::UnboundedSender<()>,
) -> notify::Result<notify::RecommendedWatcher> {
    let mut watcher = notify::recommended_watcher(move |event: notify::Result<Event>| {
        let relevant = match &event {
            Ok(event) => changes_content(&event.kind),
            // A lost event (queue overflow) may hide a change: sync to be sure.
            Err(_) => true,
        };
        if relevant {
            let _ = events.send(());
        }
    })?;
    watcher.watch(dir, RecursiveMode::Recursive)?;
    Ok(watcher)
}

/// Reading a file (as the sync itself does) is no change.
fn changes_content(kind: &EventKind) -> bool {
    match kind {
        EventKind::Access(AccessKind::Close(AccessMode::Write)) => true,
        EventKind::Access(_) => false,
        _ => true,
    }
}

/// Reloads on every `NOTIFY wtsbot_rules`, and after each (re)connection, since
/// notifications sent while not listening are lost.
async fn listen_postgres(
    url: &SecretString,
    store: &Store,
    engine: &RuleEngine,
    stop: &CancellationToken,
) -> anyhow::Result<()> {
    while !stop.is_cancelled() {
        match listen_once(url, store, engine, stop).await {
            Ok(()) => return Ok(()),
            Err(err) => {
                tracing::warn!(error = %err, "rules listener lost its connection; reconnecting");
                tokio::select! {
                    _ = stop.cancelled() => {}
                    _ = tokio::time::sleep(RECONNECT_DELAY) => {}
                }
            }
        }
    }
    Ok(())
}

async fn listen_once(
    url: &SecretString,
    store: &Store,
    engine: &RuleEngine,
    stop: &CancellationToken,
) -> Result<(), sqlx::Error> {
    let mut listener = PgListener::connect(url.expose_secret()).await?;
    listener.listen(RULES_CHANNEL).await?;
    reload_logged(store, engine).await;
    loop {
        tokio::select! {
            _ = stop.cancelled() => return Ok(()),
            notification = listener.try_recv() => match notification? {
                Some(_) => reload_logged(store, engine).await,
                None => return Err(sqlx::Error::PoolClosed),
            },
        }
    }
}

/// Reloads whenever the revision log changed since the last look.
async fn poll_revisions(
    store: &Store,
    engine: &RuleEngine,
    mut seen: Option<(i64, i64)>,
    stop: &CancellationToken,
) -> anyhow::Result<()> {
    loop {
        tokio::select! {
            _ = stop.cancelled() => return Ok(()),
            _ = tokio::time::sleep(POLL_INTERVAL) => {}
        }
        match store.rules_fingerprint().await {
            Ok(now) if Some(now) != seen => {
                seen = Some(now);
                reload_logged(store, engine).await;
            }
            Ok(_) => {}
            Err(err) => tracing::warn!(error = %err, "cannot check the rules for changes"),
        }
    }
}

async fn reload_logged(store: &Store, engine: &RuleEngine) {
    if let Err(err) = rebuild(store, engine).await {
        tracing::error!(error = %err, "cannot reload the rules");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_are_not_changes() {
        assert!(!changes_content(&EventKind::Access(AccessKind::Open(
            notify::event::AccessMode::Any
        ))));
        assert!(!changes_content(&EventKind::Access(AccessKind::Close(
            AccessMode::Read
        ))));
        assert!(changes_content(&EventKind::Access(AccessKind::Close(
            AccessMode::Write
        ))));
        assert!(changes_content(&EventKind::Remove(
            notify::event::RemoveKind::File
        )));
    }

    #[tokio::test]
    async fn a_burst_of_events_settles_once() {
        let (events, mut changes) = mpsc::unbounded_channel();
        for _ in 0..5 {
            events.send(()).unwrap();
        }
        let stop = CancellationToken::new();
        let started = tokio::time::Instant::now();
        assert!(settle(&mut changes, &stop).await);
        assert!(started.elapsed() >= DEBOUNCE);
        assert!(changes.try_recv().is_err(), "every queued event was taken");
        stop.cancel();
        assert!(!settle(&mut changes, &stop).await);
    }
}
