//! The sender's queries: leasing reply jobs (one session at a time, in order), recording
//! each outcome, the WTS `fileId` cache, the assets a job sends, and the shared pacing
//! budget.

use super::{Backend, Store, StoreError};

/// Where a reply job stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JobStatus {
    Planned,
    Sending,
    Sent,
    Failed,
    Dead,
    Expired,
    Skipped,
    DryRun,
}

impl JobStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            JobStatus::Planned => "planned",
            JobStatus::Sending => "sending",
            JobStatus::Sent => "sent",
            JobStatus::Failed => "failed",
            JobStatus::Dead => "dead",
            JobStatus::Expired => "expired",
            JobStatus::Skipped => "skipped",
            JobStatus::DryRun => "dry_run",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "planned" => JobStatus::Planned,
            "sending" => JobStatus::Sending,
            "sent" => JobStatus::Sent,
            "failed" => JobStatus::Failed,
            "dead" => JobStatus::Dead,
            "expired" => JobStatus::Expired,
            "skipped" => JobStatus::Skipped,
            "dry_run" => JobStatus::DryRun,
            _ => return None,
        })
    }
}

/// One stored reply job.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct JobRow {
    pub id: i64,
    pub event_id: i64,
    pub rule_id: String,
    pub step: i64,
    pub session_id: String,
    pub kind: String,
    pub payload: String,
    pub sync: i64,
    pub status: String,
    pub attempts: i64,
    pub next_attempt_at: Option<i64>,
    pub attempt_started_at: Option<i64>,
    pub age_from: i64,
    pub wts_message_id: Option<String>,
    pub wts_status: Option<String>,
    pub last_error: Option<String>,
    pub created_at: i64,
    pub updated_at: i64,
    pub sent_at: Option<i64>,
}

const JOB_COLUMNS: &str = "id, event_id, rule_id, step, session_id, kind, payload, sync, \
     status, attempts, next_attempt_at, attempt_started_at, age_from, wts_message_id, \
     wts_status, last_error, created_at, updated_at, sent_at";

/// A job leased for sending, with what its previous attempt left behind.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClaimedJob {
    pub job: JobRow,
    /// `sending` when a worker died mid-attempt and its lease expired.
    pub previous_status: String,
    /// When the previous attempt began, if there was one.
    pub previous_attempt_started_at: Option<i64>,
}

/// A final outcome that is not `sent`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JobEnd {
    Failed,
    Dead,
    Expired,
}

impl JobEnd {
    pub fn status(self) -> JobStatus {
        match self {
            JobEnd::Failed => JobStatus::Failed,
            JobEnd::Dead => JobStatus::Dead,
            JobEnd::Expired => JobStatus::Expired,
        }
    }
}

/// A job to lease: due and planned, or sending with an expired lease; and no earlier
/// unfinished job in its session.
const NEXT_JOB: &str = "SELECT j.id, j.status, j.attempt_started_at FROM jobs j \
     WHERE ((j.status = 'planned' AND (j.next_attempt_at IS NULL OR j.next_attempt_at <= $1)) \
            OR (j.status = 'sending' AND j.lease_until <= $1)) \
       AND NOT EXISTS (SELECT 1 FROM jobs p \
                       WHERE p.session_id = j.session_id AND p.id < j.id \
                         AND p.status IN ('planned', 'sending')) \
     ORDER BY j.id LIMIT 1";

impl Store {
    /// Leases the next job to send for `lease_ms` and marks it `sending`, or `None`.
    pub async fn claim_job(
        &self,
        owner: &str,
        now: i64,
        lease_ms: i64,
    ) -> Result<Option<ClaimedJob>, StoreError> {
        let lock = match self.backend() {
            Backend::Sqlite => "",
            Backend::Postgres => " FOR UPDATE SKIP LOCKED",
        };
        let mut tx = self.begin_write().await?;
        let next: Option<(i64, String, Option<i64>)> = sqlx::query_as(&format!("{NEXT_JOB}{lock}"))
            .bind(now)
            .fetch_optional(&mut *tx)
            .await?;
        let Some((id, previous_status, previous_attempt_started_at)) = next else {
            tx.rollback().await?;
            return Ok(None);
        };
        let job: JobRow = sqlx::query_as(&format!(
            "UPDATE jobs SET status = 'sending', lease_owner = $1, lease_until = $2, \
                 attempt_started_at = $3, updated_at = $3 \
             WHERE id = $4 RETURNING {JOB_COLUMNS}"
        ))
        .bind(owner)
        .bind(now.saturating_add(lease_ms))
        .bind(now)
        .bind(id)
        .fetch_one(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(Some(ClaimedJob {
            job,
            previous_status,
            previous_attempt_started_at,
        }))
    }

    /// Records a leased job as sent. False when the lease was lost.
    pub async fn job_sent(
        &self,
        id: i64,
        owner: &str,
        now: i64,
        wts_message_id: &str,
        wts_status: Option<&str>,
    ) -> Result<bool, StoreError> {
        let done = sqlx::query(
            "UPDATE jobs SET status = 'sent', wts_message_id = $1, wts_status = $2, \
                 sent_at = $3, updated_at = $3, last_error = NULL, \
                 lease_owner = NULL, lease_until = NULL \
             WHERE id = $4 AND status = 'sending' AND lease_owner = $5",
        )
        .bind(wts_message_id)
        .bind(wts_status)
        .bind(now)
        .bind(id)
        .bind(owner)
        .execute(self.pool())
        .await?
        .rows_affected();
        Ok(done == 1)
    }

    /// Puts a leased job back to be tried again at `next_attempt_at`, counting the
    /// attempt. `attempt_started_at` is kept: a later attempt may need to know when this
    /// one began.
    pub async fn job_retry(
        &self,
        id: i64,
        owner: &str,
        now: i64,
        next_attempt_at: i64,
        last_error: &str,
    ) -> Result<bool, StoreError> {
        let done = sqlx::query(
            "UPDATE jobs SET status = 'planned', attempts = attempts + 1, \
                 next_attempt_at = $1, last_error = $2, updated_at = $3, \
                 lease_owner = NULL, lease_until = NULL \
             WHERE id = $4 AND status = 'sending' AND lease_owner = $5",
        )
        .bind(next_attempt_at)
        .bind(last_error)
        .bind(now)
        .bind(id)
        .bind(owner)
        .execute(self.pool())
        .await?
        .rows_affected();
        Ok(done == 1)
    }

    /// Ends a leased job as failed, dead or expired, and skips the same rule's later steps
    /// of the same event, in one transaction. Returns how many steps were skipped, or
    /// `None` when the lease was lost.
    pub async fn job_end(
        &self,
        job: &JobRow,
        owner: &str,
        now: i64,
        end: JobEnd,
        last_error: Option<&str>,
    ) -> Result<Option<u64>, StoreError> {
        let mut tx = self.begin_write().await?;
        let done = sqlx::query(
            "UPDATE jobs SET status = $1, attempts = attempts + $6, last_error = $2, \
                 updated_at = $3, lease_owner = NULL, lease_until = NULL \
             WHERE id = $4 AND status = 'sending' AND lease_owner = $5",
        )
        .bind(end.status().as_str())
        .bind(last_error)
        .bind(now)
        .bind(job.id)
        .bind(owner)
        // An expired step was not attempted.
        .bind(i64::from(end != JobEnd::Expired))
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if done != 1 {
            tx.rollback().await?;
            return Ok(None);
        }
        let skipped = sqlx::query(
            "UPDATE jobs SET status = 'skipped', updated_at = $1 \
             WHERE event_id = $2 AND rule_id = $3 AND step > $4 AND status = 'planned'",
        )
        .bind(now)
        .bind(job.event_id)
        .bind(&job.rule_id)
        .bind(job.step)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        tx.commit().await?;
        Ok(Some(skipped))
    }

    /// Whether some job already recorded WTS message `wts_message_id` as its own.
    pub async fn wts_message_claimed(&self, wts_message_id: &str) -> Result<bool, StoreError> {
        let found: Option<i64> =
            sqlx::query_scalar("SELECT id FROM jobs WHERE wts_message_id = $1 LIMIT 1")
                .bind(wts_message_id)
                .fetch_optional(self.pool())
                .await?;
        Ok(found.is_some())
    }

    pub async fn find_job(&self, id: i64) -> Result<Option<JobRow>, StoreError> {
        let job = sqlx::query_as(&format!("SELECT {JOB_COLUMNS} FROM jobs WHERE id = $1"))
            .bind(id)
            .fetch_optional(self.pool())
            .await?;
        Ok(job)
    }

    /// The jobs planned for one event, in (rule, step) order.
    pub async fn jobs_of_event(&self, event_id: i64) -> Result<Vec<JobRow>, StoreError> {
        let jobs = sqlx::query_as(&format!(
            "SELECT {JOB_COLUMNS} FROM jobs WHERE event_id = $1 ORDER BY rule_id, step"
        ))
        .bind(event_id)
        .fetch_all(self.pool())
        .await?;
        Ok(jobs)
    }

    /// Unfinished jobs (planned or sending), and the age in milliseconds of the oldest.
    pub async fn job_backlog(&self, now: i64) -> Result<(i64, i64), StoreError> {
        let (count, oldest): (i64, Option<i64>) = sqlx::query_as(
            "SELECT COUNT(*), MIN(age_from) FROM jobs WHERE status IN ('planned', 'sending')",
        )
        .fetch_one(self.pool())
        .await?;
        Ok((count, oldest.map_or(0, |t| (now - t).max(0))))
    }

    /// The `fileId` already uploaded to `base_url` for content `sha256`.
    pub async fn cached_file_id(
        &self,
        base_url: &str,
        sha256: &str,
    ) -> Result<Option<String>, StoreError> {
        let id =
            sqlx::query_scalar("SELECT file_id FROM wts_files WHERE base_url = $1 AND sha256 = $2")
                .bind(base_url)
                .bind(sha256)
                .fetch_optional(self.pool())
                .await?;
        Ok(id)
    }

    pub async fn cache_file_id(
        &self,
        base_url: &str,
        sha256: &str,
        file_id: &str,
        now: i64,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO wts_files (base_url, sha256, file_id, uploaded_at) \
             VALUES ($1, $2, $3, $4) \
             ON CONFLICT (base_url, sha256) DO UPDATE \
                 SET file_id = excluded.file_id, uploaded_at = excluded.uploaded_at",
        )
        .bind(base_url)
        .bind(sha256)
        .bind(file_id)
        .bind(now)
        .execute(self.pool())
        .await?;
        Ok(())
    }

    /// An asset's sha256 and source (`upload` or `rules`), by name.
    pub async fn asset_source(&self, name: &str) -> Result<Option<(String, String)>, StoreError> {
        let asset = sqlx::query_as("SELECT sha256, source FROM assets WHERE name = $1")
            .bind(name)
            .fetch_optional(self.pool())
            .await?;
        Ok(asset)
    }

    pub async fn blob(&self, sha256: &str) -> Result<Option<Vec<u8>>, StoreError> {
        let bytes = sqlx::query_scalar("SELECT bytes FROM blobs WHERE sha256 = $1")
            .bind(sha256)
            .fetch_optional(self.pool())
            .await?;
        Ok(bytes)
    }

    /// Reserves one request of the shared budget `name` (GCRA): moves its theoretical
    /// arrival time on by `interval_us` from the later of itself and `now_us`, and
    /// returns the value it had before the move (or `now_us` when it was behind), that
    /// is, the moment this request's slot begins.
    pub async fn reserve_pacing_slot(
        &self,
        name: &str,
        now_us: i64,
        interval_us: i64,
    ) -> Result<i64, StoreError> {
        sqlx::query("INSERT INTO pacing (name, tat) VALUES ($1, $2) ON CONFLICT (name) DO NOTHING")
            .bind(name)
            .bind(now_us)
            .execute(self.pool())
            .await?;
        let tat: i64 = sqlx::query_scalar(
            "UPDATE pacing SET tat = (CASE WHEN tat > $1 THEN tat ELSE $1 END) + $2 \
             WHERE name = $3 RETURNING tat",
        )
        .bind(now_us)
        .bind(interval_us)
        .bind(name)
        .fetch_one(self.pool())
        .await?;
        Ok(tat - interval_us)
    }
}
