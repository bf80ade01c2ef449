//! Sender workers: lease the next due job, upload its file once, send it into the
//! session, and record the outcome: sent, retried later, or ended (failed, dead,
//! expired) with the rule's later steps skipped.

use std::path::{Component, Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde_json::json;
use sha2::{Digest, Sha256};
use tokio_util::sync::CancellationToken;

use super::backoff::retry_wait;
use super::clock::{Clock, duration_ms};
use super::{JobSignal, Step};
use crate::config::Settings;
use crate::metrics::METRICS;
use crate::store::jobs::{ClaimedJob, JobEnd, JobRow};
use crate::store::{Store, StoreError};
use crate::wts::{SendBody, SentMessage, SessionMessage, UploadSource, WtsClient, WtsError};

/// The longest wait for a wake-up before looking for due jobs anyway (retries come due
/// without one).
const POLL_INTERVAL: Duration = Duration::from_millis(200);
const ERROR_PAUSE: Duration = Duration::from_secs(1);
/// How far before an attempt's start its message may be dated (clocks differ).
const RECONCILE_MARGIN: Duration = Duration::from_secs(5);
/// The error key WTS answers when a `fileId` is not (or no longer) usable.
const FORM_ERROR: &str = "FORM_ERROR";

#[derive(Debug, thiserror::Error)]
pub enum SendError {
    #[error("the sender's database work failed")]
    Store(#[from] StoreError),
}

/// What a sender reads from the configuration.
#[derive(Debug, Clone)]
pub struct SenderSettings {
    pub lease: Duration,
    pub max_reply_age: Duration,
    pub retry_schedule: Vec<Duration>,
    pub rules_dir: PathBuf,
    /// The inbound `direction`; the bot's own messages carry another.
    pub inbound_direction: String,
}

impl SenderSettings {
    pub fn from_settings(settings: &Settings) -> SenderSettings {
        SenderSettings {
            lease: settings.bot.lease,
            max_reply_age: settings.bot.max_reply_age,
            retry_schedule: settings.bot.retry_schedule.clone(),
            rules_dir: settings.rules.dir.clone(),
            inbound_direction: settings.bot.direction.clone(),
        }
    }
}

/// Why a step could not go out.
#[derive(Debug)]
enum Failure {
    /// WTS refused or did not answer.
    Wts(WtsError),
    /// WTS took the request and reported the message `FAILED`.
    Rejected(SentMessage),
    /// The file to send cannot be found or read.
    Asset(String),
}

impl Failure {
    /// `{status, key, text}`, as kept in `last_error`.
    fn to_json(&self) -> serde_json::Value {
        match self {
            Failure::Wts(err) => json!({
                "status": err.status(),
                "key": err.key(),
                "text": err.text().map(str::to_string).unwrap_or_else(|| err.to_string()),
                "outcome_unknown": err.outcome_unknown(),
            }),
            Failure::Rejected(sent) => json!({
                "status": 200,
                "key": "FAILED",
                "text": sent.failure_reason.clone().unwrap_or_else(|| "WTS reported the message FAILED".into()),
                "wts_message_id": sent.id,
            }),
            Failure::Asset(text) => {
                json!({ "status": null, "key": "ASSET_UNAVAILABLE", "text": text })
            }
        }
    }
}

/// A file resolved to its bytes and digest.
struct AssetBytes {
    name: String,
    bytes: Vec<u8>,
    sha256: String,
}

pub struct Sender {
    store: Store,
    wts: Arc<WtsClient>,
    settings: SenderSettings,
    clock: Clock,
    jobs: JobSignal,
    owner: String,
}

impl Sender {
    pub fn new(
        store: Store,
        wts: Arc<WtsClient>,
        settings: SenderSettings,
        clock: Clock,
        jobs: JobSignal,
    ) -> Sender {
        Sender {
            owner: format!("sender-{}", uuid::Uuid::new_v4().simple()),
            store,
            wts,
            settings,
            clock,
            jobs,
        }
    }

    /// Sends the next due job, if any.
    pub async fn run_once(&self) -> Result<Step, SendError> {
        let now = self.clock.now_ms();
        let lease = duration_ms(self.settings.lease);
        let Some(claimed) = self.store.claim_job(&self.owner, now, lease).await? else {
            return Ok(Step::Idle);
        };
        // More may be due: let an idle peer look too.
        self.jobs.notify();
        self.deliver(claimed).await?;
        Ok(Step::Processed)
    }

    /// Sends jobs until `stop`. A send in flight when `stop` comes is finished and
    /// recorded; no new job is taken after it.
    pub async fn run(self, stop: CancellationToken) -> anyhow::Result<()> {
        while !stop.is_cancelled() {
            let pause = match self.run_once().await {
                Ok(Step::Processed) => continue,
                Ok(Step::Idle) => POLL_INTERVAL,
                Err(err) => {
                    tracing::error!(error.cause_chain = ?anyhow::Error::from(err), "sending failed");
                    ERROR_PAUSE
                }
            };
            tokio::select! {
                _ = stop.cancelled() => break,
                _ = self.jobs.wait(pause) => {}
            }
        }
        tracing::debug!(owner = %self.owner, "sender stopped");
        Ok(())
    }

    #[tracing::instrument(name = "send", skip_all, fields(job_id = claimed.job.id, rule = %claimed.job.rule_id, step = claimed.job.step))]
    async fn deliver(&self, claimed: ClaimedJob) -> Result<(), SendError> {
        let job = &claimed.job;
        let now = self.clock.now_ms();
        if now.saturating_sub(job.age_from) > duration_ms(self.settings.max_reply_age) {
            let error = json!({
                "status": null, "key": "EXPIRED",
                "text": format!("not sent within bot.max_reply_age ({}) of the event's arrival",
                    humantime::format_duration(self.settings.max_reply_age)),
            });
            return self.end(job, JobEnd::Expired, &error).await;
        }

        let interrupted = claimed.previous_status == "sending";
        let unknown_outcome = interrupted || last_outcome_unknown(job.last_error.as_deref());
        if unknown_outcome {
            let since = claimed
                .previous_attempt_started_at
                .unwrap_or(job.created_at);
            match self.reconcile(job, since).await {
                Ok(Some(message)) => {
                    tracing::info!(message_id = %message.id, "an earlier attempt went through; recorded, not resent");
                    let status = message.status.as_ref().map(|s| s.as_str().to_string());
                    return self.sent(job, &message.id, status.as_deref()).await;
                }
                Ok(None) => tracing::warn!(
                    interrupted,
                    "an earlier attempt's outcome is unknown and no message of it was found; sending again"
                ),
                Err(err) => return self.failed_attempt(job, Failure::Wts(err)).await,
            }
        }

        match self.send(job).await {
            Ok(sent) if sent.failed() => {
                self.end(job, JobEnd::Failed, &Failure::Rejected(sent).to_json())
                    .await
            }
            Ok(sent) => {
                let status = sent.status.as_ref().map(|s| s.as_str().to_string());
                self.sent(job, &sent.id, status.as_deref()).await
            }
            Err(failure) => self.failed_attempt(job, failure).await,
        }
    }

    /// One attempt: the body built (the file uploaded if need be), then sent.
    async fn send(&self, job: &JobRow) -> Result<SentMessage, Failure> {
        let sync = job.sync != 0;
        match job.kind.as_str() {
            "text" => {
                self.send_body(job, &SendBody::text(&job.payload), sync)
                    .await
            }
            "file_url" => {
                self.send_body(job, &SendBody::file_url(&job.payload, None), sync)
                    .await
            }
            "file" => self.send_file(job, sync).await,
            other => Err(Failure::Asset(format!("unknown job kind `{other}`"))),
        }
    }

    async fn send_body(
        &self,
        job: &JobRow,
        body: &SendBody,
        sync: bool,
    ) -> Result<SentMessage, Failure> {
        self.wts
            .send_message(&job.session_id, body, sync)
            .await
            .map_err(Failure::Wts)
    }

    /// Sends a stored file by its cached `fileId`, uploading it only when none is cached;
    /// a `FORM_ERROR` for a cached id uploads again, once.
    async fn send_file(&self, job: &JobRow, sync: bool) -> Result<SentMessage, Failure> {
        let asset = self.read_asset(&job.payload).await?;
        let base_url = self.wts.base_url();
        let cached = self
            .store
            .cached_file_id(base_url, &asset.sha256)
            .await
            .map_err(|e| Failure::Asset(format!("cannot read the file cache: {e}")))?;
        let file_id = match cached {
            Some(file_id) => {
                match self
                    .send_body(job, &SendBody::file_id(&file_id, None), sync)
                    .await
                {
                    Err(Failure::Wts(err)) if err.key() == Some(FORM_ERROR) => {
                        tracing::info!(%file_id, "WTS refused the cached fileId; uploading again");
                        self.upload(&asset).await?
                    }
                    other => return other,
                }
            }
            None => self.upload(&asset).await?,
        };
        self.send_body(job, &SendBody::file_id(file_id, None), sync)
            .await
    }

    async fn upload(&self, asset: &AssetBytes) -> Result<String, Failure> {
        let file_name = Path::new(&asset.name)
            .file_name()
            .map(|n| n.to_string_lossy().into_owned());
        let source = UploadSource::memory(asset.bytes.clone(), file_name);
        let uploaded = self.wts.upload(&source).await.map_err(Failure::Wts)?;
        let now = self.clock.now_ms();
        if let Err(err) = self
            .store
            .cache_file_id(self.wts.base_url(), &asset.sha256, &uploaded.id, now)
            .await
        {
            // The send can go ahead; the next one uploads again.
            tracing::warn!(error = %err, "cannot cache the uploaded fileId");
        }
        Ok(uploaded.id)
    }

    /// An asset's bytes: an admin's upload from the database, or a file under `rules.dir`.
    async fn read_asset(&self, name: &str) -> Result<AssetBytes, Failure> {
        let stored = self
            .store
            .asset_source(name)
            .await
            .map_err(|e| Failure::Asset(format!("cannot look up asset `{name}`: {e}")))?;
        let bytes = match stored {
            Some((sha256, source)) if source == "upload" => self
                .store
                .blob(&sha256)
                .await
                .map_err(|e| Failure::Asset(format!("cannot read asset `{name}`: {e}")))?
                .ok_or_else(|| Failure::Asset(format!("asset `{name}` has no stored bytes")))?,
            _ => {
                let path = asset_path(&self.settings.rules_dir, name)
                    .ok_or_else(|| Failure::Asset(format!("`{name}` is not an asset name")))?;
                tokio::fs::read(&path).await.map_err(|e| {
                    Failure::Asset(format!(
                        "cannot read asset `{name}` ({}): {e}",
                        path.display()
                    ))
                })?
            }
        };
        Ok(AssetBytes {
            name: name.to_string(),
            sha256: hex::encode(Sha256::digest(&bytes)),
            bytes,
        })
    }

    /// Looks in the session for the message an attempt of unknown outcome made.
    async fn reconcile(
        &self,
        job: &JobRow,
        attempt_started_at: i64,
    ) -> Result<Option<SessionMessage>, WtsError> {
        let since_ms = attempt_started_at.saturating_sub(duration_ms(RECONCILE_MARGIN));
        let since = DateTime::<Utc>::from_timestamp_millis(since_ms).unwrap_or_default();
        let messages = self
            .wts
            .list_session_messages(&job.session_id, Some(since))
            .await?;
        let file_id = match job.kind.as_str() {
            "file" => match self.read_asset(&job.payload).await {
                Ok(asset) => self
                    .store
                    .cached_file_id(self.wts.base_url(), &asset.sha256)
                    .await
                    .ok()
                    .flatten(),
                Err(_) => None,
            },
            _ => None,
        };
        let mut candidates = Vec::new();
        for message in messages {
            if !self.is_own_outbound(&message, since) || !same_kind(job, &message) {
                continue;
            }
            if self
                .store
                .wts_message_claimed(&message.id)
                .await
                .unwrap_or(true)
            {
                continue;
            }
            candidates.push(message);
        }
        let exact: Vec<&SessionMessage> = candidates
            .iter()
            .filter(|m| match job.kind.as_str() {
                "text" => m.text.as_deref() == Some(job.payload.as_str()),
                _ => file_id.is_some() && m.file_id == file_id,
            })
            .collect();
        let found = match (exact.as_slice(), candidates.as_slice()) {
            ([one], _) => Some((*one).clone()),
            ([], [one]) => Some(one.clone()),
            _ => None,
        };
        if found.is_none() && !candidates.is_empty() {
            tracing::warn!(
                candidates = candidates.len(),
                "cannot tell which message an earlier attempt made"
            );
        }
        Ok(found)
    }

    /// An outbound message made through the API, no earlier than `since`.
    fn is_own_outbound(&self, message: &SessionMessage, since: DateTime<Utc>) -> bool {
        let from_api = message
            .origin
            .as_deref()
            .is_some_and(|o| o.eq_ignore_ascii_case("API"));
        let outbound =
            message.direction.as_deref() != Some(self.settings.inbound_direction.as_str());
        let in_window = message.created_at.is_none_or(|t| t >= since);
        from_api && outbound && in_window
    }

    async fn sent(
        &self,
        job: &JobRow,
        message_id: &str,
        status: Option<&str>,
    ) -> Result<(), SendError> {
        let now = self.clock.now_ms();
        if self
            .store
            .job_sent(job.id, &self.owner, now, message_id, status)
            .await?
        {
            METRICS.sends.with_label_values(&["sent"]).inc();
        } else {
            tracing::warn!(%message_id, "sent, but the job's lease was lost meanwhile");
        }
        Ok(())
    }

    /// A failed attempt: retried on the schedule when it may pass later, else ended.
    async fn failed_attempt(&self, job: &JobRow, failure: Failure) -> Result<(), SendError> {
        let error = failure.to_json();
        let retryable = match &failure {
            Failure::Wts(err) => err.is_retryable(),
            Failure::Rejected(_) | Failure::Asset(_) => false,
        };
        if !retryable {
            tracing::warn!(%error, "step failed for good");
            return self.end(job, JobEnd::Failed, &error).await;
        }
        let retry_after = match &failure {
            Failure::Wts(err) => err.retry_after(),
            _ => None,
        };
        let retry = usize::try_from(job.attempts).unwrap_or(usize::MAX);
        let Some(wait) = retry_wait(&self.settings.retry_schedule, retry, retry_after) else {
            tracing::warn!(%error, attempts = job.attempts + 1, "retries exhausted");
            return self.end(job, JobEnd::Dead, &error).await;
        };
        tracing::info!(%error, wait = ?wait, "attempt failed; retrying later");
        let now = self.clock.now_ms();
        let next = now.saturating_add(duration_ms(wait));
        if !self
            .store
            .job_retry(job.id, &self.owner, now, next, &error.to_string())
            .await?
        {
            tracing::warn!("the job's lease was lost before its retry was recorded");
        }
        Ok(())
    }

    async fn end(
        &self,
        job: &JobRow,
        end: JobEnd,
        error: &serde_json::Value,
    ) -> Result<(), SendError> {
        let now = self.clock.now_ms();
        let error = error.to_string();
        match self
            .store
            .job_end(job, &self.owner, now, end, Some(&error))
            .await?
        {
            Some(skipped) => {
                let outcome = end.status().as_str();
                METRICS.sends.with_label_values(&[outcome]).inc();
                if skipped > 0 {
                    METRICS
                        .sends
                        .with_label_values(&["skipped"])
                        .inc_by(skipped);
                }
                tracing::warn!(outcome, skipped, %error, "step ended unsent");
            }
            None => tracing::warn!("the job's lease was lost before its end was recorded"),
        }
        Ok(())
    }
}

/// Whether the last attempt ended without knowing if WTS took the message.
fn last_outcome_unknown(last_error: Option<&str>) -> bool {
    last_error
        .and_then(|e| serde_json::from_str::<serde_json::Value>(e).ok())
        .and_then(|e| {
            e.get("outcome_unknown")
                .and_then(serde_json::Value::as_bool)
        })
        .unwrap_or(false)
}

/// Text jobs make `TEXT` messages; file jobs make anything else.
fn same_kind(job: &JobRow, message: &SessionMessage) -> bool {
    let is_text = message
        .message_type
        .as_deref()
        .is_some_and(|t| t.eq_ignore_ascii_case("TEXT"));
    (job.kind == "text") == is_text
}

/// `rules_dir/name`, for a relative name that stays inside the directory.
fn asset_path(rules_dir: &Path, name: &str) -> Option<PathBuf> {
    let relative = Path::new(name);
    let inside = !name.is_empty()
        && relative
            .components()
            .all(|c| matches!(c, Component::Normal(_)));
    inside.then(|| rules_dir.join(relative))
}

/// Keeps `wtsbot_queue_depth` and `wtsbot_queue_oldest_job_age_seconds` current until
/// `stop`.
pub async fn report_backlog(
    store: Store,
    clock: Clock,
    stop: CancellationToken,
) -> anyhow::Result<()> {
    const EVERY: Duration = Duration::from_secs(1);
    while !stop.is_cancelled() {
        match store.job_backlog(clock.now_ms()).await {
            Ok((depth, oldest_ms)) => {
                METRICS.queue_depth.set(depth);
                METRICS.oldest_job_age_seconds.set(oldest_ms / 1000);
            }
            Err(err) => tracing::debug!(error = %err, "cannot measure the job backlog"),
        }
        tokio::select! {
            _ = stop.cancelled() => break,
            _ = tokio::time::sleep(EVERY) => {}
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn asset_names_stay_inside_the_rules_directory() {
        let dir = Path::new("/srv/rules");
        assert_eq!(
            asset_path(dir, "files/manual.pdf"),
            Some(PathBuf::from("/srv/rules/files/manual.pdf"))
        );
        for bad in ["", "../secret", "/etc/passwd", "files/../../x", "./x"] {
            assert_eq!(asset_path(dir, bad), None, "{bad}");
        }
    }

    #[test]
    fn an_unknown_outcome_is_read_back_from_the_last_error() {
        assert!(last_outcome_unknown(Some(
            r#"{"status":null,"outcome_unknown":true}"#
        )));
        assert!(!last_outcome_unknown(Some(
            r#"{"status":503,"outcome_unknown":false}"#
        )));
        assert!(!last_outcome_unknown(Some("not json")));
        assert!(!last_outcome_unknown(None));
    }
}
