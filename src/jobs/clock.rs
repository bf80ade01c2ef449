//! The source of "now" for leases, retries and expiry. Decisions about a reply (cooldown,
//! hours, cap) never use it: they use the event's stored arrival time.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

/// Epoch milliseconds, from the system or from a clock tests move by hand.
#[derive(Clone, Debug, Default)]
pub enum Clock {
    #[default]
    System,
    Manual(ManualClock),
}

impl Clock {
    /// Now, in the epoch milliseconds every timestamp column holds.
    pub fn now_ms(&self) -> i64 {
        match self {
            Clock::System => crate::store::now_ms(),
            Clock::Manual(manual) => manual.now_ms(),
        }
    }
}

/// A clock that stands still until advanced; clones share the same time.
#[derive(Clone, Debug)]
pub struct ManualClock(Arc<AtomicI64>);

impl ManualClock {
    pub fn starting_at(epoch_ms: i64) -> ManualClock {
        ManualClock(Arc::new(AtomicI64::new(epoch_ms)))
    }

    pub fn now_ms(&self) -> i64 {
        self.0.load(Ordering::SeqCst)
    }

    pub fn advance(&self, by: Duration) {
        self.0.fetch_add(duration_ms(by), Ordering::SeqCst);
    }
}

/// A duration in whole milliseconds, saturating.
pub fn duration_ms(duration: Duration) -> i64 {
    i64::try_from(duration.as_millis()).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_manual_clock_moves_only_when_advanced_and_clones_share_it() {
        let manual = ManualClock::starting_at(1_000);
        let clock = Clock::Manual(manual.clone());
        assert_eq!(clock.now_ms(), 1_000);
        manual.advance(Duration::from_secs(2));
        assert_eq!(clock.now_ms(), 3_000);
    }

    #[test]
    fn the_system_clock_is_epoch_milliseconds() {
        let now = Clock::System.now_ms();
        assert!(now > 1_700_000_000_000, "{now}");
    }
}
