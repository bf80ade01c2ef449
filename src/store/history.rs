//! History for the admin API: events with their decisions, deliveries (reply jobs),
//! per-rule counters, the manual retry of a finished delivery, and pruning after
//! `history.retention`.

use sqlx::any::AnyArguments;
use sqlx::query::QueryAs;
use sqlx::{Any, FromRow};

use super::inbox::EventRow;
use super::jobs::JobRow;
use super::{Store, StoreError};

/// Filters and a page of a history listing; every field is optional.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HistoryFilter {
    pub session_id: Option<String>,
    pub rule_id: Option<String>,
    pub status: Option<String>,
    /// Epoch ms, inclusive.
    pub since: Option<i64>,
    /// Epoch ms, exclusive.
    pub until: Option<i64>,
    /// Only ids below this one (the cursor of the next page).
    pub before: Option<i64>,
    pub limit: i64,
}

/// One recorded rule decision.
#[derive(Debug, Clone, PartialEq, Eq, FromRow)]
pub struct DecisionRow {
    pub id: i64,
    pub event_id: i64,
    pub rule_id: String,
    pub fired: i64,
    pub reason: String,
    pub detail: Option<String>,
    pub decided_at: i64,
}

/// How a rule fared over the last hour, day and week.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RuleCounts {
    pub fired: [i64; 3],
    pub not_fired: [i64; 3],
    pub sent: [i64; 3],
    /// Failed, dead or expired.
    pub failed: [i64; 3],
}

/// What a manual retry did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RetryOutcome {
    NotFound,
    /// Only `failed`, `dead` and `expired` deliveries may be retried.
    NotRetryable(String),
    /// The job, planned again, and how many skipped later steps were planned with it.
    Retried {
        job: Box<JobRow>,
        replanned: u64,
    },
}

/// The statuses an admin may retry.
pub const RETRYABLE: [&str; 3] = ["failed", "dead", "expired"];

const EVENT_COLUMNS: &str = "e.id, e.dedupe_key, e.event_type, e.session_id, e.content_id, \
     e.body, e.received_at, e.status, e.attempts, e.next_attempt_at, e.processed_at, e.last_error";
const JOB_COLUMNS: &str = "j.id, j.event_id, j.rule_id, j.step, j.session_id, j.kind, j.payload, \
     j.sync, j.status, j.attempts, j.next_attempt_at, j.attempt_started_at, j.age_from, \
     j.wts_message_id, j.wts_status, j.last_error, j.created_at, j.updated_at, j.sent_at";

/// A value bound to a numbered placeholder.
enum Param {
    Text(String),
    Int(i64),
}

/// `WHERE` clauses with their parameters, numbered in order.
#[derive(Default)]
struct Conditions {
    clauses: Vec<String>,
    params: Vec<Param>,
}

impl Conditions {
    /// Adds `clause`, whose `{}` is replaced by the next placeholder.
    fn push(&mut self, clause: &str, param: Param) {
        self.params.push(param);
        self.clauses
            .push(clause.replace("{}", &format!("${}", self.params.len())));
    }

    fn sql(&self) -> String {
        if self.clauses.is_empty() {
            String::new()
        } else {
            format!(" WHERE {}", self.clauses.join(" AND "))
        }
    }

    fn bind<'q, T>(
        self,
        mut query: QueryAs<'q, Any, T, AnyArguments<'q>>,
    ) -> QueryAs<'q, Any, T, AnyArguments<'q>> {
        for param in self.params {
            query = match param {
                Param::Text(text) => query.bind(text),
                Param::Int(int) => query.bind(int),
            };
        }
        query
    }
}

/// The filters common to events and jobs; `time` is the column the window applies to.
fn common_conditions(alias: &str, time: &str, filter: &HistoryFilter) -> Conditions {
    let mut conditions = Conditions::default();
    if let Some(session) = &filter.session_id {
        conditions.push(
            &format!("{alias}.session_id = {{}}"),
            Param::Text(session.clone()),
        );
    }
    if let Some(status) = &filter.status {
        conditions.push(
            &format!("{alias}.status = {{}}"),
            Param::Text(status.clone()),
        );
    }
    if let Some(since) = filter.since {
        conditions.push(&format!("{alias}.{time} >= {{}}"), Param::Int(since));
    }
    if let Some(until) = filter.until {
        conditions.push(&format!("{alias}.{time} < {{}}"), Param::Int(until));
    }
    if let Some(before) = filter.before {
        conditions.push(&format!("{alias}.id < {{}}"), Param::Int(before));
    }
    conditions
}

impl Store {
    /// Events, newest first.
    pub async fn list_events(&self, filter: &HistoryFilter) -> Result<Vec<EventRow>, StoreError> {
        let mut conditions = common_conditions("e", "received_at", filter);
        if let Some(rule) = &filter.rule_id {
            conditions.push(
                "EXISTS (SELECT 1 FROM decisions d WHERE d.event_id = e.id AND d.rule_id = {})",
                Param::Text(rule.clone()),
            );
        }
        let sql = format!(
            "SELECT {EVENT_COLUMNS} FROM events e{} ORDER BY e.id DESC LIMIT {}",
            conditions.sql(),
            filter.limit.max(1)
        );
        let rows = conditions
            .bind(sqlx::query_as(&sql))
            .fetch_all(self.pool())
            .await?;
        Ok(rows)
    }

    /// The decisions of `event_ids`, in the order they were made.
    pub async fn decisions_of_events(
        &self,
        event_ids: &[i64],
    ) -> Result<Vec<DecisionRow>, StoreError> {
        if event_ids.is_empty() {
            return Ok(Vec::new());
        }
        let placeholders: Vec<String> = (1..=event_ids.len()).map(|i| format!("${i}")).collect();
        let sql = format!(
            "SELECT id, event_id, rule_id, fired, reason, detail, decided_at FROM decisions \
             WHERE event_id IN ({}) ORDER BY id",
            placeholders.join(", ")
        );
        let mut query = sqlx::query_as(&sql);
        for id in event_ids {
            query = query.bind(*id);
        }
        Ok(query.fetch_all(self.pool()).await?)
    }

    /// Deliveries, newest first.
    pub async fn list_jobs(&self, filter: &HistoryFilter) -> Result<Vec<JobRow>, StoreError> {
        let mut conditions = common_conditions("j", "created_at", filter);
        if let Some(rule) = &filter.rule_id {
            conditions.push("j.rule_id = {}", Param::Text(rule.clone()));
        }
        let sql = format!(
            "SELECT {JOB_COLUMNS} FROM jobs j{} ORDER BY j.id DESC LIMIT {}",
            conditions.sql(),
            filter.limit.max(1)
        );
        let rows = conditions
            .bind(sqlx::query_as(&sql))
            .fetch_all(self.pool())
            .await?;
        Ok(rows)
    }

    /// Decisions and deliveries of `rule_id` since each of `since` (hour, day, week ago).
    pub async fn rule_counts(
        &self,
        rule_id: &str,
        since: [i64; 3],
    ) -> Result<RuleCounts, StoreError> {
        let decisions: (i64, i64, i64, i64, i64, i64) = sqlx::query_as(
            "SELECT \
               COUNT(*) FILTER (WHERE fired = 1 AND decided_at >= $2), \
               COUNT(*) FILTER (WHERE fired = 1 AND decided_at >= $3), \
               COUNT(*) FILTER (WHERE fired = 1), \
               COUNT(*) FILTER (WHERE fired = 0 AND decided_at >= $2), \
               COUNT(*) FILTER (WHERE fired = 0 AND decided_at >= $3), \
               COUNT(*) FILTER (WHERE fired = 0) \
             FROM decisions WHERE rule_id = $1 AND decided_at >= $4",
        )
        .bind(rule_id)
        .bind(since[0])
        .bind(since[1])
        .bind(since[2])
        .fetch_one(self.pool())
        .await?;
        let failed = "status IN ('failed', 'dead', 'expired')";
        let jobs: (i64, i64, i64, i64, i64, i64) = sqlx::query_as(&format!(
            "SELECT \
               COUNT(*) FILTER (WHERE status = 'sent' AND updated_at >= $2), \
               COUNT(*) FILTER (WHERE status = 'sent' AND updated_at >= $3), \
               COUNT(*) FILTER (WHERE status = 'sent'), \
               COUNT(*) FILTER (WHERE {failed} AND updated_at >= $2), \
               COUNT(*) FILTER (WHERE {failed} AND updated_at >= $3), \
               COUNT(*) FILTER (WHERE {failed}) \
             FROM jobs WHERE rule_id = $1 AND updated_at >= $4"
        ))
        .bind(rule_id)
        .bind(since[0])
        .bind(since[1])
        .bind(since[2])
        .fetch_one(self.pool())
        .await?;
        Ok(RuleCounts {
            fired: [decisions.0, decisions.1, decisions.2],
            not_fired: [decisions.3, decisions.4, decisions.5],
            sent: [jobs.0, jobs.1, jobs.2],
            failed: [jobs.3, jobs.4, jobs.5],
        })
    }

    /// Plans a `failed`, `dead` or `expired` job again: no attempts yet, its age counted
    /// from `now`, and the same rule's skipped steps of the event planned with it.
    pub async fn retry_job(&self, id: i64, now: i64) -> Result<RetryOutcome, StoreError> {
        let mut tx = self.begin_write().await?;
        let current: Option<(i64, String, String)> =
            sqlx::query_as("SELECT event_id, rule_id, status FROM jobs WHERE id = $1")
                .bind(id)
                .fetch_optional(&mut *tx)
                .await?;
        let Some((event_id, rule_id, status)) = current else {
            tx.rollback().await?;
            return Ok(RetryOutcome::NotFound);
        };
        if !RETRYABLE.contains(&status.as_str()) {
            tx.rollback().await?;
            return Ok(RetryOutcome::NotRetryable(status));
        }
        let replan = "status = 'planned', attempts = 0, next_attempt_at = NULL, \
             lease_owner = NULL, lease_until = NULL, attempt_started_at = NULL, \
             age_from = $1, updated_at = $1";
        let job: JobRow = sqlx::query_as(&format!(
            "UPDATE jobs SET {replan} WHERE id = $2 RETURNING {}",
            JOB_COLUMNS.replace("j.", "")
        ))
        .bind(now)
        .bind(id)
        .fetch_one(&mut *tx)
        .await?;
        let replanned = sqlx::query(&format!(
            "UPDATE jobs SET {replan} \
             WHERE event_id = $2 AND rule_id = $3 AND status = 'skipped'"
        ))
        .bind(now)
        .bind(event_id)
        .bind(rule_id)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        tx.commit().await?;
        Ok(RetryOutcome::Retried {
            job: Box::new(job),
            replanned,
        })
    }

    /// Deletes what is older than `cutoff`: finished jobs, then decided events with no job
    /// left (their decisions with them). Returns (jobs, events) deleted.
    pub async fn prune_history(&self, cutoff: i64) -> Result<(u64, u64), StoreError> {
        let mut tx = self.begin_write().await?;
        let jobs = sqlx::query(
            "DELETE FROM jobs WHERE updated_at < $1 AND status NOT IN ('planned', 'sending')",
        )
        .bind(cutoff)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        let old_events = "SELECT e.id FROM events e WHERE e.received_at < $1 \
             AND e.status <> 'pending' AND NOT EXISTS (SELECT 1 FROM jobs j WHERE j.event_id = e.id)";
        sqlx::query(&format!(
            "DELETE FROM decisions WHERE event_id IN ({old_events})"
        ))
        .bind(cutoff)
        .execute(&mut *tx)
        .await?;
        let events = sqlx::query(&format!("DELETE FROM events WHERE id IN ({old_events})"))
            .bind(cutoff)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        tx.commit().await?;
        Ok((jobs, events))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::testing::sqlite_store;

    async fn event(store: &Store, key: &str, session: &str, at: i64, status: &str) -> i64 {
        sqlx::query_scalar(
            "INSERT INTO events (dedupe_key, event_type, session_id, body, received_at, status) \
             VALUES ($1, 'MESSAGE_RECEIVED', $2, '{}', $3, $4) RETURNING id",
        )
        .bind(key)
        .bind(session)
        .bind(at)
        .bind(status)
        .fetch_one(store.pool())
        .await
        .unwrap()
    }

    async fn job(store: &Store, event_id: i64, step: i64, status: &str, at: i64) -> i64 {
        sqlx::query_scalar(
            "INSERT INTO jobs (event_id, rule_id, step, session_id, kind, payload, status, \
                 attempts, age_from, created_at, updated_at) \
             VALUES ($1, 'manual', $2, 's1', 'text', 'oi', $3, 5, $4, $4, $4) RETURNING id",
        )
        .bind(event_id)
        .bind(step)
        .bind(status)
        .bind(at)
        .fetch_one(store.pool())
        .await
        .unwrap()
    }

    async fn decision(store: &Store, event_id: i64, rule: &str, fired: bool, at: i64) {
        sqlx::query(
            "INSERT INTO decisions (event_id, session_id, rule_id, fired, reason, decided_at) \
             VALUES ($1, 's1', $2, $3, $4, $5)",
        )
        .bind(event_id)
        .bind(rule)
        .bind(i64::from(fired))
        .bind(if fired { "fired" } else { "no_match" })
        .bind(at)
        .execute(store.pool())
        .await
        .unwrap();
    }

    fn page(limit: i64) -> HistoryFilter {
        HistoryFilter {
            limit,
            ..HistoryFilter::default()
        }
    }

    #[tokio::test]
    async fn events_filter_and_page_newest_first() {
        let (_dir, store) = sqlite_store().await;
        let a = event(&store, "a", "s1", 1_000, "processed").await;
        let b = event(&store, "b", "s2", 2_000, "ignored").await;
        let c = event(&store, "c", "s1", 3_000, "processed").await;
        decision(&store, a, "manual", true, 1_000).await;
        decision(&store, c, "price", false, 3_000).await;
        let ids = |rows: Vec<EventRow>| rows.into_iter().map(|r| r.id).collect::<Vec<_>>();

        assert_eq!(ids(store.list_events(&page(2)).await.unwrap()), [c, b]);
        let next = HistoryFilter {
            before: Some(b),
            ..page(2)
        };
        assert_eq!(ids(store.list_events(&next).await.unwrap()), [a]);
        let session = HistoryFilter {
            session_id: Some("s1".into()),
            ..page(10)
        };
        assert_eq!(ids(store.list_events(&session).await.unwrap()), [c, a]);
        let rule = HistoryFilter {
            rule_id: Some("manual".into()),
            ..page(10)
        };
        assert_eq!(ids(store.list_events(&rule).await.unwrap()), [a]);
        let window = HistoryFilter {
            since: Some(2_000),
            until: Some(3_000),
            status: Some("ignored".into()),
            ..page(10)
        };
        assert_eq!(ids(store.list_events(&window).await.unwrap()), [b]);
        let decisions = store.decisions_of_events(&[a, c]).await.unwrap();
        assert_eq!(decisions.len(), 2);
        assert_eq!(decisions[0].rule_id, "manual");
    }

    #[tokio::test]
    async fn a_dead_delivery_is_planned_again_with_its_skipped_steps() {
        let (_dir, store) = sqlite_store().await;
        let e = event(&store, "a", "s1", 1_000, "processed").await;
        let sent = job(&store, e, 0, "sent", 1_000).await;
        let dead = job(&store, e, 1, "dead", 1_000).await;
        let skipped = job(&store, e, 2, "skipped", 1_000).await;

        assert_eq!(
            store.retry_job(sent, 5_000).await.unwrap(),
            RetryOutcome::NotRetryable("sent".into())
        );
        assert_eq!(
            store.retry_job(999, 5_000).await.unwrap(),
            RetryOutcome::NotFound
        );
        let RetryOutcome::Retried {
            job: retried,
            replanned,
        } = store.retry_job(dead, 5_000).await.unwrap()
        else {
            panic!("not retried")
        };
        assert_eq!(replanned, 1);
        assert_eq!(
            (retried.status.as_str(), retried.attempts, retried.age_from),
            ("planned", 0, 5_000)
        );
        let later = store.find_job(skipped).await.unwrap().unwrap();
        assert_eq!((later.status.as_str(), later.age_from), ("planned", 5_000));
        assert_eq!(
            store.retry_job(dead, 6_000).await.unwrap(),
            RetryOutcome::NotRetryable("planned".into())
        );
    }

    #[tokio::test]
    async fn counts_cover_the_hour_day_and_week() {
        let (_dir, store) = sqlite_store().await;
        let e = event(&store, "a", "s1", 1_000, "processed").await;
        decision(&store, e, "manual", true, 100).await;
        decision(&store, e, "manual", true, 500).await;
        decision(&store, e, "manual", false, 900).await;
        decision(&store, e, "other", true, 900).await;
        job(&store, e, 0, "sent", 900).await;
        job(&store, e, 1, "dead", 400).await;
        let counts = store.rule_counts("manual", [800, 400, 50]).await.unwrap();
        assert_eq!(counts.fired, [0, 1, 2]);
        assert_eq!(counts.not_fired, [1, 1, 1]);
        assert_eq!(counts.sent, [1, 1, 1]);
        assert_eq!(counts.failed, [0, 1, 1]);
    }

    #[tokio::test]
    async fn pruning_keeps_recent_and_unfinished_work() {
        let (_dir, store) = sqlite_store().await;
        let old = event(&store, "old", "s1", 1_000, "processed").await;
        decision(&store, old, "manual", true, 1_000).await;
        job(&store, old, 0, "sent", 1_000).await;
        let old_pending_job = event(&store, "busy", "s1", 1_000, "processed").await;
        job(&store, old_pending_job, 0, "planned", 1_000).await;
        let recent = event(&store, "new", "s1", 9_000, "processed").await;
        job(&store, recent, 0, "sent", 9_000).await;

        assert_eq!(store.prune_history(5_000).await.unwrap(), (1, 1));
        assert!(store.find_event(old).await.unwrap().is_none());
        assert!(store.decisions_of_events(&[old]).await.unwrap().is_empty());
        assert!(store.find_event(old_pending_job).await.unwrap().is_some());
        assert!(store.find_event(recent).await.unwrap().is_some());
        assert_eq!(store.prune_history(5_000).await.unwrap(), (0, 0));
    }
}
