//! Client-side pacing under WTS's account limits (200 requests per 5 s and 1,000 per
//! 5 min by default). Every call, upload steps included, waits here first.

use std::num::NonZeroU32;
use std::time::Duration;

use futures::future::BoxFuture;
use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};

/// The refill is spread over the window stretched by a tenth and by
/// [`ARRIVAL_JITTER`]: about 90 % of the limit for WTS's 5 s and 5 min windows.
const WINDOW_MARGIN: f64 = 1.1;
/// How much later than its neighbours a call may reach WTS (a fresh TLS connection
/// against a reused one), bunching calls that left evenly spaced.
const ARRIVAL_JITTER: Duration = Duration::from_millis(100);

/// Waits until one more WTS request fits the budget. A budget shared by several
/// instances (through the database) implements this too.
pub trait Pacer: Send + Sync {
    fn acquire(&self) -> BoxFuture<'_, ()>;
}

/// At most `requests` calls in any window of length `window`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Budget {
    pub requests: NonZeroU32,
    pub window: Duration,
}

impl Budget {
    pub fn new(requests: u32, window: Duration) -> Option<Self> {
        Some(Self {
            requests: NonZeroU32::new(requests)?,
            window: (!window.is_zero()).then_some(window)?,
        })
    }

    /// How many calls may go at once: a tenth of the budget.
    ///
    /// A token bucket of burst `b` refilled every `T` passes at most `b + W/T` calls in
    /// any window `W`, wherever it starts. The rest of the budget refills evenly over
    /// a stretched window ([`Budget::interval`]), so calls that leave on time but
    /// arrive bunched still fit the server's count.
    pub fn burst(&self) -> NonZeroU32 {
        NonZeroU32::new((self.requests.get() / 10).max(1)).expect("the burst is at least one")
    }

    /// The spacing of calls once the burst is spent.
    pub fn interval(&self) -> Duration {
        let refills = (self.requests.get() - self.burst().get()).max(1);
        let stretched = self.window.mul_f64(WINDOW_MARGIN) + ARRIVAL_JITTER;
        (stretched / refills).max(Duration::from_nanos(1))
    }

    fn quota(&self) -> Quota {
        Quota::with_period(self.interval())
            .expect("the interval is above zero")
            .allow_burst(self.burst())
    }
}

/// Token buckets held in this process; a call waits for every one of them.
pub struct TokenBucketPacer {
    limiters: Vec<DefaultDirectRateLimiter>,
}

impl TokenBucketPacer {
    pub fn new(budgets: &[Budget]) -> Self {
        Self {
            limiters: budgets
                .iter()
                .map(|budget| RateLimiter::direct(budget.quota()))
                .collect(),
        }
    }

    /// The two documented account limits: per 5 seconds and per 5 minutes.
    pub fn account_limits(per_5s: NonZeroU32, per_5min: NonZeroU32) -> Self {
        Self::new(&[
            Budget {
                requests: per_5s,
                window: Duration::from_secs(5),
            },
            Budget {
                requests: per_5min,
                window: Duration::from_secs(300),
            },
        ])
    }
}

impl Pacer for TokenBucketPacer {
    fn acquire(&self) -> BoxFuture<'_, ()> {
        Box::pin(async move {
            for limiter in &self.limiters {
                limiter.until_ready().await;
            }
        })
    }
}

/// No client-side limit (`wts.pacing = false`).
pub struct Unpaced;

impl Pacer for Unpaced {
    fn acquire(&self) -> BoxFuture<'_, ()> {
        Box::pin(std::future::ready(()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    /// Largest number of instants inside any window of `window` (half-open).
    fn busiest_window(times: &[Instant], window: Duration) -> usize {
        let mut busiest = 0;
        for (start, first) in times.iter().enumerate() {
            let inside = times[start..]
                .iter()
                .take_while(|t| t.duration_since(*first) < window)
                .count();
            busiest = busiest.max(inside);
        }
        busiest
    }

    #[tokio::test]
    async fn no_window_holds_more_than_the_budget() {
        let window = Duration::from_millis(200);
        let pacer = TokenBucketPacer::new(&[Budget::new(20, window).unwrap()]);
        let started = Instant::now();
        let mut times = Vec::new();
        for _ in 0..60 {
            pacer.acquire().await;
            times.push(Instant::now());
        }
        assert!(busiest_window(&times, window) <= 20);
        // 60 calls at 20 per 200 ms need at least two full windows.
        assert!(started.elapsed() >= Duration::from_millis(400));
    }

    #[tokio::test]
    async fn every_budget_applies() {
        let pacer = TokenBucketPacer::new(&[
            Budget::new(100, Duration::from_millis(100)).unwrap(),
            Budget::new(10, Duration::from_millis(300)).unwrap(),
        ]);
        let mut times = Vec::new();
        for _ in 0..25 {
            pacer.acquire().await;
            times.push(Instant::now());
        }
        assert!(busiest_window(&times, Duration::from_millis(300)) <= 10);
    }

    #[tokio::test]
    async fn a_tenth_of_the_budget_passes_at_once() {
        let pacer = TokenBucketPacer::new(&[Budget::new(50, Duration::from_secs(60)).unwrap()]);
        let started = Instant::now();
        for _ in 0..5 {
            pacer.acquire().await;
        }
        assert!(started.elapsed() < Duration::from_millis(50));
    }

    #[test]
    fn documented_limits_keep_a_margin() {
        let per_5s = Budget::new(200, Duration::from_secs(5)).unwrap();
        assert_eq!(per_5s.burst().get(), 20);
        // 20 at once, then 180 over 5.6 s: at most 20 + 5 s / interval in any 5 s.
        let in_window = 20.0 + 5.0 / per_5s.interval().as_secs_f64();
        assert!((175.0..200.0).contains(&in_window), "{in_window}");
        let per_5min = Budget::new(1000, Duration::from_secs(300)).unwrap();
        let in_window = 100.0 + 300.0 / per_5min.interval().as_secs_f64();
        assert!((900.0..1000.0).contains(&in_window), "{in_window}");
    }

    #[test]
    fn empty_budgets_are_refused() {
        assert!(Budget::new(0, Duration::from_secs(5)).is_none());
        assert!(Budget::new(5, Duration::ZERO).is_none());
    }
}
