//! Group commit: one task owns every inbox insert. Requests queue their event; the task
//! takes everything waiting, inserts it in one transaction, commits (one fsync for the
//! whole batch), then answers each request. The next batch gathers in the queue while
//! one commits.

use std::sync::Arc;

use sqlx::Any;
use sqlx::pool::PoolConnection;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::InboxSignal;
use crate::error::AppError;
use crate::store::inbox::{EventStatus, InsertOutcome, NewEvent};
use crate::store::{Store, StoreError};

/// Requests that may wait for the writer before new ones wait for room.
const QUEUE_CAPACITY: usize = 4096;
/// Upper bounds of one batch: rows, and bytes of bodies.
const MAX_BATCH_ROWS: usize = 2048;
const MAX_BATCH_BYTES: usize = 16 * 1024 * 1024;
/// Attempts of a batch that lost a deadlock or lock race to another instance.
const MAX_ATTEMPTS: u32 = 3;

#[derive(Debug, thiserror::Error)]
pub enum InboxError {
    #[error("the inbox writer has stopped")]
    Stopped,
    #[error("the inbox write failed")]
    Store(#[from] StoreError),
}

impl From<InboxError> for AppError {
    fn from(err: InboxError) -> Self {
        match err {
            InboxError::Stopped => AppError::Unavailable(err.into()),
            InboxError::Store(err) => err.into(),
        }
    }
}

struct Submission {
    event: NewEvent,
    reply: oneshot::Sender<Result<InsertOutcome, InboxError>>,
}

/// The handle requests use to store an event; cheap to clone.
#[derive(Clone, Debug)]
pub struct InboxWriter {
    queue: mpsc::Sender<Submission>,
}

impl InboxWriter {
    /// Starts the writer task. After `stop` it refuses new events, commits and answers
    /// every event already queued, then ends.
    pub fn start(
        store: Store,
        signal: InboxSignal,
        stop: CancellationToken,
    ) -> (InboxWriter, JoinHandle<()>) {
        let (queue, receiver) = mpsc::channel(QUEUE_CAPACITY);
        let task = tokio::spawn(run(store, signal, receiver, stop));
        (InboxWriter { queue }, task)
    }

    /// Stores `event` durably; returns once its transaction has committed.
    pub async fn submit(&self, event: NewEvent) -> Result<InsertOutcome, InboxError> {
        let (reply, answer) = oneshot::channel();
        self.queue
            .send(Submission { event, reply })
            .await
            .map_err(|_| InboxError::Stopped)?;
        answer.await.map_err(|_| InboxError::Stopped)?
    }
}

async fn run(
    store: Store,
    signal: InboxSignal,
    mut queue: mpsc::Receiver<Submission>,
    stop: CancellationToken,
) {
    let mut stopping = false;
    // Held across batches; dropped after a failure so the next batch reconnects, and when
    // the pool closes, since closing waits for every connection.
    let mut connection = None;
    let mut pool_closed = std::pin::pin!(store.pool().close_event());
    loop {
        let first = tokio::select! {
            received = queue.recv() => received,
            _ = stop.cancelled(), if !stopping => {
                // Refuse new events; the queued ones are still received below.
                queue.close();
                stopping = true;
                continue;
            }
            _ = &mut pool_closed, if connection.is_some() => {
                connection = None;
                continue;
            }
        };
        let Some(first) = first else { break };
        let batch = gather(first, &mut queue);
        commit(&store, &signal, &mut connection, batch).await;
        if store.pool().is_closed() {
            connection = None;
        }
    }
    tracing::debug!("inbox writer stopped");
}

/// Inserts on the held connection, acquiring one first if needed.
async fn insert(
    store: &Store,
    connection: &mut Option<PoolConnection<Any>>,
    events: &[NewEvent],
) -> Result<Vec<InsertOutcome>, StoreError> {
    let conn = match connection {
        Some(conn) => conn,
        None => connection.insert(store.pool().acquire().await?),
    };
    let result = store.insert_events_on(conn, events).await;
    if result.is_err() {
        *connection = None;
    }
    result
}

/// `first` and whatever else is already waiting, within the batch bounds.
fn gather(first: Submission, queue: &mut mpsc::Receiver<Submission>) -> Vec<Submission> {
    let mut bytes = first.event.body.len();
    let mut batch = vec![first];
    while batch.len() < MAX_BATCH_ROWS && bytes < MAX_BATCH_BYTES {
        match queue.try_recv() {
            Ok(next) => {
                bytes += next.event.body.len();
                batch.push(next);
            }
            Err(_) => break,
        }
    }
    batch
}

#[tracing::instrument(name = "inbox commit", skip_all, fields(rows = batch.len()))]
async fn commit(
    store: &Store,
    signal: &InboxSignal,
    connection: &mut Option<PoolConnection<Any>>,
    batch: Vec<Submission>,
) {
    let (events, replies): (Vec<NewEvent>, Vec<_>) =
        batch.into_iter().map(|s| (s.event, s.reply)).unzip();
    let mut attempt = 1;
    let result = loop {
        match insert(store, connection, &events).await {
            Err(err) if err.is_retryable_conflict() && attempt < MAX_ATTEMPTS => {
                tracing::debug!(error = %err, attempt, "inbox batch conflicted; retrying");
                attempt += 1;
            }
            other => break other,
        }
    };
    match result {
        Ok(outcomes) => {
            let woke = events.iter().zip(&outcomes).any(|(e, o)| {
                e.status == EventStatus::Pending && matches!(o, InsertOutcome::Inserted { .. })
            });
            if woke {
                signal.notify();
            }
            for (reply, outcome) in replies.into_iter().zip(outcomes) {
                // A requester that gave up has nothing left to answer.
                let _ = reply.send(Ok(outcome));
            }
        }
        Err(err) => {
            tracing::error!(error.cause_chain = ?err, "inbox batch failed");
            let shared = Arc::new(err);
            for reply in replies {
                let _ = reply.send(Err(StoreError::Shared(shared.clone()).into()));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::inbox::tests::event;
    use crate::store::testing::sqlite_store;

    #[tokio::test]
    async fn concurrent_submissions_are_answered_after_commit() {
        let (_dir, store) = sqlite_store().await;
        let signal = InboxSignal::default();
        let stop = CancellationToken::new();
        let (writer, task) = InboxWriter::start(store.clone(), signal.clone(), stop.clone());

        let submissions = (0..200).map(|i| {
            let writer = writer.clone();
            let key = format!("k{}", i % 150);
            tokio::spawn(async move { writer.submit(event(&key, EventStatus::Pending)).await })
        });
        let outcomes: Vec<InsertOutcome> = futures::future::join_all(submissions)
            .await
            .into_iter()
            .map(|joined| joined.unwrap().unwrap())
            .collect();
        let inserted = outcomes
            .iter()
            .filter(|o| matches!(o, InsertOutcome::Inserted { .. }))
            .count();
        assert_eq!(inserted, 150);
        assert_eq!(store.count_events().await.unwrap(), 150);
        signal.wait(std::time::Duration::from_secs(5)).await;

        stop.cancel();
        task.await.unwrap();
        let refused = writer.submit(event("late", EventStatus::Pending)).await;
        assert!(matches!(refused, Err(InboxError::Stopped)));
    }

    #[tokio::test]
    async fn a_closed_database_is_reported_as_unavailable() {
        let (_dir, store) = sqlite_store().await;
        let (writer, _task) = InboxWriter::start(
            store.clone(),
            InboxSignal::default(),
            CancellationToken::new(),
        );
        store.close().await;
        let err = writer
            .submit(event("x", EventStatus::Pending))
            .await
            .unwrap_err();
        assert!(matches!(AppError::from(err), AppError::Unavailable(_)));
    }
}
