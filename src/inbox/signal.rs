use std::sync::Arc;
use std::time::Duration;

use secrecy::{ExposeSecret, SecretString};
use sqlx::postgres::PgListener;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::store::inbox::INBOX_CHANNEL;

/// How long to wait before reconnecting a lost PostgreSQL listener.
const RECONNECT_DELAY: Duration = Duration::from_secs(1);

/// Announces that pending events were committed to the inbox. Meant for one waiter (the
/// dispatcher): a wake-up sent while it is busy is kept until it next waits.
#[derive(Clone, Debug, Default)]
pub struct InboxSignal(Arc<Notify>);

impl InboxSignal {
    pub fn notify(&self) {
        self.0.notify_one();
    }

    /// Returns on the next wake-up, or after `at_most` (a poll floor, so a lost wake-up
    /// only delays work).
    pub async fn wait(&self, at_most: Duration) {
        let _ = tokio::time::timeout(at_most, self.0.notified()).await;
    }
}

/// Forwards `NOTIFY wtsbot_inbox` from every instance sharing the PostgreSQL database to
/// `signal`, reconnecting when the connection drops, until `stop`.
pub async fn listen_postgres(
    url: SecretString,
    signal: InboxSignal,
    stop: CancellationToken,
) -> anyhow::Result<()> {
    while !stop.is_cancelled() {
        match listen_once(&url, &signal, &stop).await {
            Ok(()) => return Ok(()),
            Err(err) => {
                tracing::warn!(error = %err, "inbox listener lost its connection; reconnecting");
                // Something may have been committed while we were not listening.
                signal.notify();
                tokio::select! {
                    _ = stop.cancelled() => {}
                    _ = tokio::time::sleep(RECONNECT_DELAY) => {}
                }
            }
        }
    }
    Ok(())
}

async fn listen_once(
    url: &SecretString,
    signal: &InboxSignal,
    stop: &CancellationToken,
) -> Result<(), sqlx::Error> {
    let mut listener = PgListener::connect(url.expose_secret()).await?;
    listener.listen(INBOX_CHANNEL).await?;
    signal.notify();
    loop {
        tokio::select! {
            _ = stop.cancelled() => return Ok(()),
            notification = listener.try_recv() => match notification? {
                Some(_) => signal.notify(),
                // The connection dropped; notifications sent meanwhile are lost.
                None => return Err(sqlx::Error::PoolClosed),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_wake_up_sent_before_waiting_is_kept() {
        let signal = InboxSignal::default();
        signal.notify();
        let started = std::time::Instant::now();
        signal.wait(Duration::from_secs(5)).await;
        assert!(started.elapsed() < Duration::from_secs(1));
    }

    #[tokio::test]
    async fn waiting_ends_at_the_poll_floor() {
        let signal = InboxSignal::default();
        let started = std::time::Instant::now();
        signal.wait(Duration::from_millis(20)).await;
        assert!(started.elapsed() >= Duration::from_millis(20));
    }
}
