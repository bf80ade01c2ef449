//! Waits between attempts: `bot.retry_schedule[attempt]` moved ±20 % at random, so many
//! jobs that failed together do not retry together, or WTS's `Retry-After` when longer.

use std::time::Duration;

use rand::Rng;

const JITTER: f64 = 0.2;

/// The wait before retry number `retry` (0-based), or `None` once the schedule is spent.
pub fn retry_wait(
    schedule: &[Duration],
    retry: usize,
    retry_after: Option<Duration>,
) -> Option<Duration> {
    let base = *schedule.get(retry)?;
    let factor = rand::rng().random_range((1.0 - JITTER)..=(1.0 + JITTER));
    let jittered = base.mul_f64(factor);
    Some(match retry_after {
        Some(asked) if asked > jittered => asked,
        _ => jittered,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const SCHEDULE: [Duration; 2] = [Duration::from_secs(1), Duration::from_secs(5)];

    #[test]
    fn waits_follow_the_schedule_within_twenty_percent() {
        for _ in 0..200 {
            let first = retry_wait(&SCHEDULE, 0, None).unwrap();
            assert!(first >= Duration::from_millis(800) && first <= Duration::from_millis(1200));
            let second = retry_wait(&SCHEDULE, 1, None).unwrap();
            assert!(second >= Duration::from_secs(4) && second <= Duration::from_secs(6));
        }
    }

    #[test]
    fn the_schedule_runs_out() {
        assert_eq!(retry_wait(&SCHEDULE, 2, None), None);
        assert_eq!(retry_wait(&SCHEDULE, 2, Some(Duration::from_secs(1))), None);
    }

    #[test]
    fn a_longer_retry_after_wins_and_a_shorter_one_does_not() {
        let asked = Duration::from_secs(30);
        assert_eq!(retry_wait(&SCHEDULE, 0, Some(asked)), Some(asked));
        let short = retry_wait(&SCHEDULE, 1, Some(Duration::from_millis(10))).unwrap();
        assert!(short >= Duration::from_secs(4));
    }
}
