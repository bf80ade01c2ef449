//! Retrying WTS calls: waits from a schedule or exponential backoff, each with ±20 %
//! jitter so that many clients do not retry in step, and `Retry-After` honoured.

use std::future::Future;
use std::time::Duration;

use rand::Rng;

use super::WtsError;

/// Fraction by which each wait is moved up or down at random.
const JITTER: f64 = 0.2;

#[derive(Debug, Clone, PartialEq)]
pub struct RetryPolicy {
    backoff: Backoff,
    /// The longest `Retry-After` obeyed; a longer one is cut to this.
    max_retry_after: Duration,
}

#[derive(Debug, Clone, PartialEq)]
enum Backoff {
    /// The wait before retry `n` is `waits[n]`; there are `waits.len()` retries.
    Schedule(Vec<Duration>),
    /// `initial`, doubled each time up to `max`, for `retries` retries.
    Exponential {
        initial: Duration,
        max: Duration,
        retries: u32,
    },
}

impl RetryPolicy {
    /// One retry per wait, in order (`bot.retry_schedule`).
    pub fn schedule(waits: Vec<Duration>) -> Self {
        Self {
            backoff: Backoff::Schedule(waits),
            max_retry_after: Duration::from_secs(600),
        }
    }

    pub fn exponential(initial: Duration, max: Duration, retries: u32) -> Self {
        Self {
            backoff: Backoff::Exponential {
                initial,
                max,
                retries,
            },
            max_retry_after: Duration::from_secs(600),
        }
    }

    pub fn with_max_retry_after(mut self, max: Duration) -> Self {
        self.max_retry_after = max;
        self
    }

    /// How many retries follow the first attempt.
    pub fn retries(&self) -> usize {
        match &self.backoff {
            Backoff::Schedule(waits) => waits.len(),
            Backoff::Exponential { retries, .. } => *retries as usize,
        }
    }

    /// The wait before retry number `retry` (0-based) without jitter, or `None` when
    /// retries are exhausted.
    pub fn base_wait(&self, retry: usize) -> Option<Duration> {
        match &self.backoff {
            Backoff::Schedule(waits) => waits.get(retry).copied(),
            Backoff::Exponential {
                initial,
                max,
                retries,
            } => (retry < *retries as usize).then(|| {
                let factor = 2u32.saturating_pow(retry.min(31) as u32);
                initial.saturating_mul(factor).min(*max)
            }),
        }
    }

    /// The wait before retry number `retry` after `error`: WTS's `Retry-After` (clamped)
    /// when it sent one, else the jittered backoff. `None`: give up.
    pub fn wait_before(&self, retry: usize, error: &WtsError) -> Option<Duration> {
        let base = self.base_wait(retry)?;
        Some(match error.retry_after() {
            Some(asked) => asked.min(self.max_retry_after),
            None => jittered(base),
        })
    }
}

fn jittered(wait: Duration) -> Duration {
    let factor = rand::rng().random_range((1.0 - JITTER)..=(1.0 + JITTER));
    wait.mul_f64(factor)
}

/// Runs `op` until it succeeds, fails permanently, or the policy's retries are spent;
/// the error returned is the last one.
pub async fn retrying<T, F, Fut>(policy: &RetryPolicy, op: F) -> Result<T, WtsError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, WtsError>>,
{
    retrying_when(policy, WtsError::is_retryable, op).await
}

/// As [`retrying`], retrying only the errors for which `retry_if` holds (for example,
/// not a send whose outcome is unknown).
pub async fn retrying_when<T, F, Fut>(
    policy: &RetryPolicy,
    retry_if: impl Fn(&WtsError) -> bool,
    mut op: F,
) -> Result<T, WtsError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, WtsError>>,
{
    let mut retry = 0;
    loop {
        let error = match op().await {
            Ok(value) => return Ok(value),
            Err(error) => error,
        };
        let wait = match policy.wait_before(retry, &error) {
            Some(wait) if retry_if(&error) => wait,
            _ => return Err(error),
        };
        retry += 1;
        tracing::warn!(%error, retry, wait = ?wait, "WTS call failed; retrying");
        tokio::time::sleep(wait).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    fn server_error() -> WtsError {
        WtsError::from_answer(503, None, b"")
    }

    #[test]
    fn schedule_waits_are_jittered_within_twenty_percent() {
        let policy = RetryPolicy::schedule(vec![Duration::from_secs(1), Duration::from_secs(5)]);
        for _ in 0..200 {
            let wait = policy.wait_before(1, &server_error()).unwrap();
            assert!(wait >= Duration::from_secs(4) && wait <= Duration::from_secs(6));
        }
        assert_eq!(policy.wait_before(2, &server_error()), None);
        assert_eq!(policy.retries(), 2);
    }

    #[test]
    fn exponential_doubles_up_to_the_maximum() {
        let policy =
            RetryPolicy::exponential(Duration::from_millis(100), Duration::from_millis(500), 5);
        let waits: Vec<_> = (0..6).map(|n| policy.base_wait(n)).collect();
        assert_eq!(
            waits,
            vec![
                Some(Duration::from_millis(100)),
                Some(Duration::from_millis(200)),
                Some(Duration::from_millis(400)),
                Some(Duration::from_millis(500)),
                Some(Duration::from_millis(500)),
                None,
            ]
        );
    }

    #[test]
    fn retry_after_wins_but_is_clamped() {
        let policy = RetryPolicy::schedule(vec![Duration::from_secs(1)])
            .with_max_retry_after(Duration::from_secs(30));
        let asked = WtsError::from_answer(429, Some("12"), b"");
        assert_eq!(policy.wait_before(0, &asked), Some(Duration::from_secs(12)));
        let too_long = WtsError::from_answer(429, Some("3600"), b"");
        assert_eq!(
            policy.wait_before(0, &too_long),
            Some(Duration::from_secs(30))
        );
    }

    #[tokio::test]
    async fn retries_until_success() {
        let calls = AtomicUsize::new(0);
        let policy = RetryPolicy::schedule(vec![Duration::from_millis(1); 3]);
        let result = retrying(&policy, || async {
            match calls.fetch_add(1, Ordering::SeqCst) {
                0 | 1 => Err(server_error()),
                _ => Ok("sent"),
            }
        })
        .await;
        assert_eq!(result.unwrap(), "sent");
        assert_eq!(calls.load(Ordering::SeqCst), 3);
    }

    #[tokio::test]
    async fn gives_up_with_the_last_error() {
        let calls = AtomicUsize::new(0);
        let policy = RetryPolicy::schedule(vec![Duration::from_millis(1); 2]);
        let result: Result<(), _> = retrying(&policy, || async {
            let n = calls.fetch_add(1, Ordering::SeqCst);
            Err(WtsError::from_answer(
                500,
                None,
                format!(r#"{{"key":"E{n}","text":"x"}}"#).as_bytes(),
            ))
        })
        .await;
        assert_eq!(calls.load(Ordering::SeqCst), 3);
        assert_eq!(result.unwrap_err().key(), Some("E2"));
    }

    #[tokio::test]
    async fn permanent_errors_are_not_retried() {
        let calls = AtomicUsize::new(0);
        let policy = RetryPolicy::schedule(vec![Duration::from_millis(1); 3]);
        let result: Result<(), _> = retrying(&policy, || async {
            calls.fetch_add(1, Ordering::SeqCst);
            Err(WtsError::from_answer(400, None, b""))
        })
        .await;
        assert_eq!(result.unwrap_err().status(), Some(400));
        assert_eq!(calls.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn retry_if_can_refuse_retryable_errors() {
        let calls = AtomicUsize::new(0);
        let policy = RetryPolicy::schedule(vec![Duration::from_millis(1); 3]);
        let result: Result<(), _> = retrying_when(
            &policy,
            |e| e.is_retryable() && !e.outcome_unknown(),
            || async {
                calls.fetch_add(1, Ordering::SeqCst);
                Err(WtsError::Timeout { connecting: false })
            },
        )
        .await;
        assert!(result.unwrap_err().outcome_unknown());
        assert_eq!(calls.load(Ordering::SeqCst), 1);
    }
}
