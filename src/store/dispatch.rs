//! The dispatcher's queries: leasing inbox events in arrival order (one session at a
//! time), and the planning transaction that records decisions, jobs and cooldowns and
//! marks the event processed, all or nothing.

use sqlx::{Any, Transaction};

use super::{Backend, Store, StoreError};

/// An inbox event leased for deciding.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct ClaimedEvent {
    pub id: i64,
    pub event_type: String,
    pub session_id: Option<String>,
    pub body: String,
    pub received_at: i64,
    /// Earlier tries that were deferred (a session lookup that failed).
    pub attempts: i64,
}

/// One rule decision to record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewDecision<'a> {
    pub event_id: i64,
    pub session_id: Option<&'a str>,
    pub rule_id: &'a str,
    pub fired: bool,
    /// `fired`, or why not: `no_match`, `agent`, `hours`, `cooldown`, `cap`, `stopped`, ...
    pub reason: &'a str,
    /// JSON with the particulars (the failing conditions, the cooldown's end).
    pub detail: Option<String>,
    pub decided_at: i64,
}

/// A reply step to plan.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewJob<'a> {
    pub event_id: i64,
    pub rule_id: &'a str,
    pub step: i64,
    pub session_id: &'a str,
    /// `text`, `file` or `file_url`.
    pub kind: &'a str,
    /// The rendered text, the asset name or the URL.
    pub payload: &'a str,
    pub sync: bool,
    /// `planned`, or `dry_run` when nothing will be sent.
    pub status: &'a str,
    /// When the reply's age starts: the event's arrival.
    pub age_from: i64,
    pub now: i64,
}

/// The eligible event with the lowest id: pending, due, its lease free or expired, and no
/// earlier pending event in its session.
const NEXT_EVENT: &str = "SELECT e.id FROM events e \
     WHERE e.status = 'pending' \
       AND (e.next_attempt_at IS NULL OR e.next_attempt_at <= $1) \
       AND (e.lease_until IS NULL OR e.lease_until <= $1) \
       AND NOT EXISTS (SELECT 1 FROM events p \
                       WHERE p.session_id = e.session_id AND p.status = 'pending' AND p.id < e.id) \
     ORDER BY e.id LIMIT 1";

impl Store {
    /// Leases the next event to decide for `lease_ms`, or `None` when none is due.
    pub async fn claim_event(
        &self,
        owner: &str,
        now: i64,
        lease_ms: i64,
    ) -> Result<Option<ClaimedEvent>, StoreError> {
        let lock = match self.backend() {
            Backend::Sqlite => "",
            Backend::Postgres => " FOR UPDATE SKIP LOCKED",
        };
        let mut tx = self.begin_write().await?;
        let id: Option<i64> = sqlx::query_scalar(&format!("{NEXT_EVENT}{lock}"))
            .bind(now)
            .fetch_optional(&mut *tx)
            .await?;
        let Some(id) = id else {
            tx.rollback().await?;
            return Ok(None);
        };
        let event = sqlx::query_as(
            "UPDATE events SET lease_owner = $1, lease_until = $2 WHERE id = $3 \
             RETURNING id, event_type, session_id, body, received_at, attempts",
        )
        .bind(owner)
        .bind(now.saturating_add(lease_ms))
        .bind(id)
        .fetch_one(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(Some(event))
    }

    /// Gives a leased event back to try again at `next_attempt_at`. False when the lease
    /// was lost meanwhile.
    pub async fn defer_event(
        &self,
        id: i64,
        owner: &str,
        next_attempt_at: i64,
        error: &str,
    ) -> Result<bool, StoreError> {
        let done = sqlx::query(
            "UPDATE events SET attempts = attempts + 1, next_attempt_at = $1, last_error = $2, \
                 lease_owner = NULL, lease_until = NULL \
             WHERE id = $3 AND status = 'pending' AND lease_owner = $4",
        )
        .bind(next_attempt_at)
        .bind(error)
        .bind(id)
        .bind(owner)
        .execute(self.pool())
        .await?
        .rows_affected();
        Ok(done == 1)
    }

    /// Opens the transaction that plans one event.
    pub async fn begin_plan(&self) -> Result<PlanTx, StoreError> {
        Ok(PlanTx {
            tx: self.begin_write().await?,
        })
    }

    /// `wts_status` of the jobs that sent WTS message `wts_message_id`; how many changed.
    pub async fn update_wts_status(
        &self,
        wts_message_id: &str,
        wts_status: &str,
        now: i64,
    ) -> Result<u64, StoreError> {
        let changed = sqlx::query(
            "UPDATE jobs SET wts_status = $1, updated_at = $2 WHERE wts_message_id = $3",
        )
        .bind(wts_status)
        .bind(now)
        .bind(wts_message_id)
        .execute(self.pool())
        .await?
        .rows_affected();
        Ok(changed)
    }
}

/// The planning transaction of one event: nothing of it is visible until
/// [`PlanTx::commit`], and dropping it undoes everything.
pub struct PlanTx {
    tx: Transaction<'static, Any>,
}

impl PlanTx {
    /// Marks the event processed (with `error` if deciding it failed). False when this
    /// owner no longer holds its lease: the caller must drop the transaction.
    pub async fn mark_processed(
        &mut self,
        event_id: i64,
        owner: &str,
        now: i64,
        error: Option<&str>,
    ) -> Result<bool, StoreError> {
        let done = sqlx::query(
            "UPDATE events SET status = 'processed', processed_at = $1, last_error = $2, \
                 lease_owner = NULL, lease_until = NULL \
             WHERE id = $3 AND status = 'pending' AND lease_owner = $4",
        )
        .bind(now)
        .bind(error)
        .bind(event_id)
        .bind(owner)
        .execute(&mut *self.tx)
        .await?
        .rows_affected();
        Ok(done == 1)
    }

    /// Rules fired in `session_id` by events that arrived in `(from, to]`.
    pub async fn fired_between(
        &mut self,
        session_id: &str,
        from: i64,
        to: i64,
    ) -> Result<i64, StoreError> {
        let count = sqlx::query_scalar(
            "SELECT COUNT(*) FROM decisions d JOIN events e ON e.id = d.event_id \
             WHERE d.session_id = $1 AND d.fired = 1 \
               AND e.received_at > $2 AND e.received_at <= $3",
        )
        .bind(session_id)
        .bind(from)
        .bind(to)
        .fetch_one(&mut *self.tx)
        .await?;
        Ok(count)
    }

    /// The arrival time of the event that last fired `rule_id` in `scope`.
    pub async fn cooldown_fired_at(
        &mut self,
        rule_id: &str,
        scope: &str,
    ) -> Result<Option<i64>, StoreError> {
        let fired_at =
            sqlx::query_scalar("SELECT fired_at FROM cooldowns WHERE rule_id = $1 AND scope = $2")
                .bind(rule_id)
                .bind(scope)
                .fetch_optional(&mut *self.tx)
                .await?;
        Ok(fired_at)
    }

    pub async fn upsert_cooldown(
        &mut self,
        rule_id: &str,
        scope: &str,
        fired_at: i64,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO cooldowns (rule_id, scope, fired_at) VALUES ($1, $2, $3) \
             ON CONFLICT (rule_id, scope) DO UPDATE SET fired_at = \
                 CASE WHEN cooldowns.fired_at > excluded.fired_at \
                      THEN cooldowns.fired_at ELSE excluded.fired_at END",
        )
        .bind(rule_id)
        .bind(scope)
        .bind(fired_at)
        .execute(&mut *self.tx)
        .await?;
        Ok(())
    }

    pub async fn insert_decision(&mut self, decision: &NewDecision<'_>) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO decisions \
             (event_id, session_id, rule_id, fired, reason, detail, decided_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(decision.event_id)
        .bind(decision.session_id)
        .bind(decision.rule_id)
        .bind(i64::from(decision.fired))
        .bind(decision.reason)
        .bind(decision.detail.as_deref())
        .bind(decision.decided_at)
        .execute(&mut *self.tx)
        .await?;
        Ok(())
    }

    /// Plans one step; false when (event, rule, step) was already planned.
    pub async fn insert_job(&mut self, job: &NewJob<'_>) -> Result<bool, StoreError> {
        let inserted = sqlx::query(
            "INSERT INTO jobs \
             (event_id, rule_id, step, session_id, kind, payload, sync, status, age_from, \
              created_at, updated_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $10) \
             ON CONFLICT (event_id, rule_id, step) DO NOTHING",
        )
        .bind(job.event_id)
        .bind(job.rule_id)
        .bind(job.step)
        .bind(job.session_id)
        .bind(job.kind)
        .bind(job.payload)
        .bind(i64::from(job.sync))
        .bind(job.status)
        .bind(job.age_from)
        .bind(job.now)
        .execute(&mut *self.tx)
        .await?
        .rows_affected();
        Ok(inserted == 1)
    }

    pub async fn commit(self) -> Result<(), StoreError> {
        self.tx.commit().await?;
        Ok(())
    }
}
