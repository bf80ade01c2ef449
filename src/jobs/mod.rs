//! The daemon's core path after the inbox: the dispatcher decides events and plans reply
//! jobs; sender workers deliver them to WTS.

pub mod backoff;
pub mod clock;
pub mod dispatcher;
pub mod pacing;
pub mod plan;
pub mod sender;
pub mod session_cache;

use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::config::{Backend, Settings};
use crate::inbox::InboxSignal;
use crate::rules::RuleEngine;
use crate::store::Store;
use crate::wts::{Pacer, WtsClient};

pub use clock::{Clock, ManualClock};
pub use dispatcher::{DispatchError, DispatchSettings, Dispatcher};
pub use sender::{SendError, Sender, SenderSettings};

/// What one `run_once` did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// It took one item (an event, a job) and finished with it.
    Processed,
    /// Nothing was due.
    Idle,
}

/// Wakes an idle sender when jobs were planned. A wake-up sent while every sender is busy
/// is kept for the next one that waits.
#[derive(Clone, Debug, Default)]
pub struct JobSignal(Arc<Notify>);

impl JobSignal {
    pub fn notify(&self) {
        self.0.notify_one();
    }

    /// Returns on a wake-up, or after `at_most`.
    pub async fn wait(&self, at_most: Duration) {
        let _ = tokio::time::timeout(at_most, self.0.notified()).await;
    }
}

/// A named long-running task.
pub type Task = (&'static str, BoxFuture<'static, anyhow::Result<()>>);

/// The dispatcher, `bot.senders` sender workers and the backlog gauge, each running until
/// `stop`. Without `wts.api_token` there are no senders: jobs are planned as `dry_run`.
pub fn background_tasks(
    settings: &Settings,
    store: &Store,
    rules: Arc<RuleEngine>,
    inbox: InboxSignal,
    stop: CancellationToken,
) -> Vec<Task> {
    let wts = match wts_client(settings, store) {
        Ok(wts) => wts,
        Err(err) => {
            let err = anyhow::Error::new(err).context("cannot build the WTS client");
            return vec![("dispatcher", Box::pin(async move { Err(err) }))];
        }
    };
    let jobs = JobSignal::default();
    let dispatcher = Dispatcher::new(
        store.clone(),
        rules,
        wts.clone(),
        DispatchSettings::from_bot(&settings.bot),
        Clock::System,
        jobs.clone(),
    );
    let mut tasks: Vec<Task> = vec![
        ("dispatcher", Box::pin(dispatcher.run(inbox, stop.clone()))),
        (
            "job backlog gauge",
            Box::pin(sender::report_backlog(
                store.clone(),
                Clock::System,
                stop.clone(),
            )),
        ),
    ];
    if let Some(wts) = wts {
        for _ in 0..settings.bot.senders {
            let sender = Sender::new(
                store.clone(),
                wts.clone(),
                SenderSettings::from_settings(settings),
                Clock::System,
                jobs.clone(),
            );
            tasks.push(("sender", Box::pin(sender.run(stop.clone()))));
        }
    }
    tasks
}

/// The WTS client, if a token is configured. On PostgreSQL with pacing on, its budget is
/// the one shared through the database, so that instances together stay under it.
fn wts_client(
    settings: &Settings,
    store: &Store,
) -> Result<Option<Arc<WtsClient>>, crate::wts::WtsError> {
    if settings.wts.api_token.is_none() {
        return Ok(None);
    }
    let mut client = WtsClient::from_settings(settings)?;
    if settings.wts.pacing && store.backend() == Backend::Postgres {
        let shared = pacing::SharedPacer::account_limits(
            store.clone(),
            settings.wts.requests_per_5s,
            settings.wts.requests_per_5min,
        );
        if let Some(shared) = shared {
            client = client.with_pacer(Arc::new(shared) as Arc<dyn Pacer>);
        }
    }
    Ok(Some(Arc::new(client)))
}

#[cfg(test)]
mod tests;
