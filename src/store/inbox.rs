//! The inbox table (`events`): webhooks as received, deduplicated by key.

use std::collections::HashMap;

use sqlx::{AnyConnection, Connection, Row};

use super::{Backend, Store, StoreError};

/// The in-process and PostgreSQL channel that announces new pending events.
pub const INBOX_CHANNEL: &str = "wtsbot_inbox";

/// How many rows one INSERT statement carries (7 parameters each keeps it far below
/// SQLite's and PostgreSQL's parameter limits).
const ROWS_PER_STATEMENT: usize = 500;

/// Where an inbox event stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventStatus {
    /// Waiting for the dispatcher.
    Pending,
    /// Decided by the dispatcher.
    Processed,
    /// Stored for history and deduplication only; never matched.
    Ignored,
}

impl EventStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            EventStatus::Pending => "pending",
            EventStatus::Processed => "processed",
            EventStatus::Ignored => "ignored",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "pending" => Some(EventStatus::Pending),
            "processed" => Some(EventStatus::Processed),
            "ignored" => Some(EventStatus::Ignored),
            _ => None,
        }
    }
}

/// An event to insert: the raw body and what ingress read from it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewEvent {
    pub dedupe_key: String,
    pub event_type: String,
    pub session_id: Option<String>,
    pub content_id: Option<String>,
    /// The JSON body exactly as received.
    pub body: String,
    pub received_at: i64,
    pub status: EventStatus,
}

/// What became of one event handed to [`Store::insert_events`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InsertOutcome {
    Inserted {
        id: i64,
    },
    /// An event with the same dedupe key was already stored (or came earlier in the
    /// same batch).
    Duplicate,
}

/// One stored inbox event.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct EventRow {
    pub id: i64,
    pub dedupe_key: String,
    pub event_type: String,
    pub session_id: Option<String>,
    pub content_id: Option<String>,
    pub body: String,
    pub received_at: i64,
    pub status: String,
    pub attempts: i64,
    pub next_attempt_at: Option<i64>,
    pub processed_at: Option<i64>,
    pub last_error: Option<String>,
}

/// A multi-row insert. PostgreSQL needs `$n` placeholders (which is also why the `Any`
/// driver's `QueryBuilder`, writing `?`, is not used); SQLite gets plain `?`, since it
/// looks each `$n` up by name, a linear scan per parameter.
fn insert_statement(backend: Backend, rows: usize) -> String {
    const COLUMNS: usize = 7;
    let mut sql = String::from(
        "INSERT INTO events \
         (dedupe_key, event_type, session_id, content_id, body, received_at, status) VALUES ",
    );
    for row in 0..rows {
        if row > 0 {
            sql.push_str(", ");
        }
        let placeholders: Vec<String> = (1..=COLUMNS)
            .map(|column| match backend {
                Backend::Postgres => format!("${}", row * COLUMNS + column),
                Backend::Sqlite => "?".to_string(),
            })
            .collect();
        sql.push('(');
        sql.push_str(&placeholders.join(", "));
        sql.push(')');
    }
    sql.push_str(" ON CONFLICT (dedupe_key) DO NOTHING RETURNING id, dedupe_key");
    sql
}

const EVENT_COLUMNS: &str = "id, dedupe_key, event_type, session_id, content_id, body, \
     received_at, status, attempts, next_attempt_at, processed_at, last_error";

impl Store {
    /// Inserts `events` in one transaction, in order, skipping every dedupe key already
    /// stored or seen earlier in the slice. On PostgreSQL the commit also notifies
    /// [`INBOX_CHANNEL`] when a pending event was added. The outcomes line up with
    /// `events`.
    pub async fn insert_events(
        &self,
        events: &[NewEvent],
    ) -> Result<Vec<InsertOutcome>, StoreError> {
        let mut conn = self.pool().acquire().await?;
        self.insert_events_on(&mut conn, events).await
    }

    /// As [`Store::insert_events`], on a connection the caller holds (the inbox writer
    /// keeps one, so SQLite's page cache stays warm between batches).
    pub async fn insert_events_on(
        &self,
        conn: &mut AnyConnection,
        events: &[NewEvent],
    ) -> Result<Vec<InsertOutcome>, StoreError> {
        let mut first_of_key: HashMap<&str, usize> = HashMap::with_capacity(events.len());
        let unique: Vec<&NewEvent> = events
            .iter()
            .enumerate()
            .filter(|(i, e)| *first_of_key.entry(e.dedupe_key.as_str()).or_insert(*i) == *i)
            .map(|(_, e)| e)
            .collect();

        let mut ids: HashMap<String, i64> = HashMap::with_capacity(unique.len());
        let mut tx = match self.backend() {
            Backend::Sqlite => conn.begin_with("BEGIN IMMEDIATE").await?,
            Backend::Postgres => conn.begin().await?,
        };
        for chunk in unique.chunks(ROWS_PER_STATEMENT) {
            let sql = insert_statement(self.backend(), chunk.len());
            let mut insert = sqlx::query(&sql);
            for e in chunk {
                insert = insert
                    .bind(e.dedupe_key.as_str())
                    .bind(e.event_type.as_str())
                    .bind(e.session_id.as_deref())
                    .bind(e.content_id.as_deref())
                    .bind(e.body.as_str())
                    .bind(e.received_at)
                    .bind(e.status.as_str());
            }
            for row in insert.fetch_all(&mut *tx).await? {
                ids.insert(row.try_get("dedupe_key")?, row.try_get("id")?);
            }
        }
        let any_pending = unique
            .iter()
            .any(|e| e.status == EventStatus::Pending && ids.contains_key(e.dedupe_key.as_str()));
        if any_pending && self.backend() == Backend::Postgres {
            // Delivered to listeners on commit, never before.
            sqlx::query("SELECT pg_notify($1, '')")
                .bind(INBOX_CHANNEL)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;

        Ok(events
            .iter()
            .enumerate()
            .map(|(i, e)| match ids.get(e.dedupe_key.as_str()) {
                Some(&id) if first_of_key[e.dedupe_key.as_str()] == i => {
                    InsertOutcome::Inserted { id }
                }
                _ => InsertOutcome::Duplicate,
            })
            .collect())
    }

    pub async fn find_event(&self, id: i64) -> Result<Option<EventRow>, StoreError> {
        let row = sqlx::query_as(&format!("SELECT {EVENT_COLUMNS} FROM events WHERE id = $1"))
            .bind(id)
            .fetch_optional(self.pool())
            .await?;
        Ok(row)
    }

    pub async fn find_event_by_dedupe_key(
        &self,
        dedupe_key: &str,
    ) -> Result<Option<EventRow>, StoreError> {
        let row = sqlx::query_as(&format!(
            "SELECT {EVENT_COLUMNS} FROM events WHERE dedupe_key = $1"
        ))
        .bind(dedupe_key)
        .fetch_optional(self.pool())
        .await?;
        Ok(row)
    }

    /// How many events the inbox holds, in any status.
    pub async fn count_events(&self) -> Result<i64, StoreError> {
        let count = sqlx::query_scalar("SELECT COUNT(*) FROM events")
            .fetch_one(self.pool())
            .await?;
        Ok(count)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::store::testing::sqlite_store;

    pub(crate) fn event(key: &str, status: EventStatus) -> NewEvent {
        NewEvent {
            dedupe_key: key.to_string(),
            event_type: "MESSAGE_RECEIVED".to_string(),
            session_id: Some("s-1".to_string()),
            content_id: Some(key.to_string()),
            body: format!(r#"{{"eventType":"MESSAGE_RECEIVED","content":{{"id":"{key}"}}}}"#),
            received_at: 1_700_000_000_000,
            status,
        }
    }

    #[tokio::test]
    async fn a_batch_keeps_order_and_drops_repeated_keys() {
        let (_dir, store) = sqlite_store().await;
        let batch = [
            event("a", EventStatus::Pending),
            event("b", EventStatus::Ignored),
            event("a", EventStatus::Pending),
            event("c", EventStatus::Pending),
        ];
        let outcomes = store.insert_events(&batch).await.unwrap();
        let ids: Vec<i64> = outcomes
            .iter()
            .filter_map(|o| match o {
                InsertOutcome::Inserted { id } => Some(*id),
                InsertOutcome::Duplicate => None,
            })
            .collect();
        assert_eq!(outcomes[2], InsertOutcome::Duplicate);
        assert_eq!(ids.len(), 3);
        assert!(
            ids.windows(2).all(|w| w[0] < w[1]),
            "arrival order: {ids:?}"
        );

        let again = store
            .insert_events(&[
                event("c", EventStatus::Pending),
                event("d", EventStatus::Pending),
            ])
            .await
            .unwrap();
        assert_eq!(again[0], InsertOutcome::Duplicate);
        assert!(matches!(again[1], InsertOutcome::Inserted { .. }));
        assert_eq!(store.count_events().await.unwrap(), 4);

        let b = store.find_event_by_dedupe_key("b").await.unwrap().unwrap();
        assert_eq!(b.status, "ignored");
        assert_eq!(b.session_id.as_deref(), Some("s-1"));
        assert_eq!(b.received_at, 1_700_000_000_000);
        assert_eq!(store.find_event(b.id).await.unwrap(), Some(b));
    }

    #[test]
    fn insert_statements_number_every_placeholder() {
        let sql = insert_statement(Backend::Postgres, 2);
        assert!(
            sql.contains(
                "VALUES ($1, $2, $3, $4, $5, $6, $7), ($8, $9, $10, $11, $12, $13, $14) ON CONFLICT"
            ),
            "{sql}"
        );
        let sql = insert_statement(Backend::Sqlite, 2);
        assert!(
            sql.contains("VALUES (?, ?, ?, ?, ?, ?, ?), (?, ?, ?, ?, ?, ?, ?) ON CONFLICT"),
            "{sql}"
        );
    }

    #[tokio::test]
    async fn an_empty_batch_is_a_no_op() {
        let (_dir, store) = sqlite_store().await;
        assert!(store.insert_events(&[]).await.unwrap().is_empty());
        assert_eq!(store.count_events().await.unwrap(), 0);
    }
}
