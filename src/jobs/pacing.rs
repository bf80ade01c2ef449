//! The account budget shared by every instance on one PostgreSQL database: GCRA with one
//! theoretical arrival time (`tat`) per budget in the `pacing` table, moved on atomically
//! by each request, so that together the instances stay under the limits.

use std::time::Duration;

use futures::future::BoxFuture;

use crate::store::Store;
use crate::wts::{Budget, Pacer};

/// One budget as GCRA sees it, in microseconds.
#[derive(Debug, Clone, PartialEq, Eq)]
struct SharedBudget {
    name: String,
    /// The spacing of requests at the sustained rate.
    interval_us: i64,
    /// How far ahead of its slot a request may go: the burst.
    tolerance_us: i64,
}

impl SharedBudget {
    /// Like the in-process pacer: a tenth of the budget may pass at once and the rest is
    /// spread evenly, so no window of the budget's length sees more than its requests.
    fn new(budget: &Budget) -> SharedBudget {
        let total = i64::from(budget.requests.get());
        let burst = (total / 10).max(1);
        let window_us = i64::try_from(budget.window.as_micros()).unwrap_or(i64::MAX);
        let interval_us = (window_us / (total - burst).max(1)).max(1);
        SharedBudget {
            name: format!("{}/{}ms", total, budget.window.as_millis()),
            interval_us,
            tolerance_us: interval_us * (burst - 1),
        }
    }
}

/// A [`Pacer`] whose budgets live in the database.
pub struct SharedPacer {
    store: Store,
    budgets: Vec<SharedBudget>,
}

impl SharedPacer {
    pub fn new(store: Store, budgets: &[Budget]) -> SharedPacer {
        SharedPacer {
            store,
            budgets: budgets.iter().map(SharedBudget::new).collect(),
        }
    }

    /// `wts.requests_per_5s` and `wts.requests_per_5min`.
    pub fn account_limits(store: Store, per_5s: u32, per_5min: u32) -> Option<SharedPacer> {
        let budgets = [
            Budget::new(per_5s, Duration::from_secs(5))?,
            Budget::new(per_5min, Duration::from_secs(300))?,
        ];
        Some(SharedPacer::new(store, &budgets))
    }

    async fn acquire_all(&self) {
        for budget in &self.budgets {
            let now_us = now_us();
            match self
                .store
                .reserve_pacing_slot(&budget.name, now_us, budget.interval_us)
                .await
            {
                Ok(slot) => {
                    let go_at = slot - budget.tolerance_us;
                    if go_at > now_us {
                        let wait =
                            Duration::from_micros(u64::try_from(go_at - now_us).unwrap_or(0));
                        tokio::time::sleep(wait).await;
                    }
                }
                // Without the database no job can be leased or recorded either; waiting one
                // interval keeps this request within the rate.
                Err(err) => {
                    tracing::warn!(error = %err, "cannot reserve from the shared WTS budget");
                    let wait = u64::try_from(budget.interval_us).unwrap_or(0);
                    tokio::time::sleep(Duration::from_micros(wait)).await;
                }
            }
        }
    }
}

impl Pacer for SharedPacer {
    fn acquire(&self) -> BoxFuture<'_, ()> {
        Box::pin(self.acquire_all())
    }
}

fn now_us() -> i64 {
    chrono::Utc::now().timestamp_micros()
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use super::*;
    use crate::store::testing::sqlite_store;

    #[test]
    fn a_budget_becomes_an_interval_and_a_burst() {
        let budget = SharedBudget::new(&Budget::new(200, Duration::from_secs(5)).unwrap());
        assert_eq!(budget.interval_us, 5_000_000 / 180);
        assert_eq!(budget.tolerance_us, budget.interval_us * 19);
        assert_eq!(budget.name, "200/5000ms");
    }

    /// Largest number of instants inside any window of `window`.
    fn busiest_window(times: &[Instant], window: Duration) -> usize {
        (0..times.len())
            .map(|start| {
                times[start..]
                    .iter()
                    .take_while(|t| t.duration_since(times[start]) < window)
                    .count()
            })
            .max()
            .unwrap_or(0)
    }

    #[tokio::test]
    async fn two_pacers_on_one_database_share_the_budget() {
        let (_dir, store) = sqlite_store().await;
        let window = Duration::from_millis(300);
        let budget = [Budget::new(20, window).unwrap()];
        let pacers = [
            std::sync::Arc::new(SharedPacer::new(store.clone(), &budget)),
            std::sync::Arc::new(SharedPacer::new(store.clone(), &budget)),
        ];
        let started = Instant::now();
        let times = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let mut tasks = Vec::new();
        for pacer in pacers {
            let times = times.clone();
            tasks.push(tokio::spawn(async move {
                for _ in 0..20 {
                    pacer.acquire().await;
                    times.lock().unwrap().push(Instant::now());
                }
            }));
        }
        for task in tasks {
            task.await.unwrap();
        }
        let mut times = times.lock().unwrap().clone();
        times.sort();
        assert!(busiest_window(&times, window) <= 20, "{times:?}");
        // 40 requests at 20 per 300 ms take at least one full window.
        assert!(started.elapsed() >= window);
    }
}
