//! The daemon's core path after the inbox: the dispatcher decides events and plans reply
//! jobs; sender workers deliver them to WTS.

pub mod backoff;
pub mod clock;
pub mod dispatcher;
pub mod pacing;
pub mod plan;
pub mod sender;
pub mod session_cache;

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Notify;

pub use clock::{Clock, ManualClock};
pub use dispatcher::{DispatchError, DispatchSettings, Dispatcher};
pub use sender::{SendError, Sender, SenderSettings};

/// What one `run_once` did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// It took one item (an event, a job) and finished with it.
    Processed,
    /// Nothing was due.
    Idle,
}

/// Wakes an idle sender when jobs were planned. A wake-up sent while every sender is busy
/// is kept for the next one that waits.
#[derive(Clone, Debug, Default)]
pub struct JobSignal(Arc<Notify>);

impl JobSignal {
    pub fn notify(&self) {
        self.0.notify_one();
    }

    /// Returns on a wake-up, or after `at_most`.
    pub async fn wait(&self, at_most: Duration) {
        let _ = tokio::time::timeout(at_most, self.0.notified()).await;
    }
}

#[cfg(test)]
mod tests;
