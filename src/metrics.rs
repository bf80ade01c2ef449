//! Prometheus metrics, one registry per process, served as text at `GET /metrics`.

use std::sync::LazyLock;

use prometheus::{
    Encoder, HistogramOpts, HistogramVec, IntCounterVec, IntGauge, Opts, Registry, TextEncoder,
};

pub struct Metrics {
    registry: Registry,
    /// Webhooks by `event_type` and `outcome` (accepted, duplicate, ignored, rejected).
    pub webhooks: IntCounterVec,
    /// Rule decisions by `rule` and `decision` (fired, or the reason it did not).
    pub rule_decisions: IntCounterVec,
    /// Finished sends by `outcome` (sent, failed, dead, expired, skipped, dry_run).
    pub sends: IntCounterVec,
    /// Latency of every WTS call by `endpoint` (a route template, not a raw path).
    pub wts_latency: HistogramVec,
    /// Reply jobs not yet finished.
    pub queue_depth: IntGauge,
    /// Age in seconds of the oldest unfinished job.
    pub oldest_job_age_seconds: IntGauge,
    /// Enabled rules in the live snapshot.
    pub rules_loaded: IntGauge,
}

impl Metrics {
    fn new() -> Self {
        let registry = Registry::new_custom(Some("wtsbot".into()), None)
            .expect("the namespace is a valid metric prefix");
        let counter = |name: &str, help: &str, labels: &[&str]| {
            let c = IntCounterVec::new(Opts::new(name, help), labels)
                .expect("metric definitions are static and valid");
            registry
                .register(Box::new(c.clone()))
                .expect("each metric is registered once");
            c
        };
        let gauge = |name: &str, help: &str| {
            let g = IntGauge::new(name, help).expect("metric definitions are static and valid");
            registry
                .register(Box::new(g.clone()))
                .expect("each metric is registered once");
            g
        };
        let webhooks = counter(
            "webhooks_total",
            "Webhooks received, by event type and outcome",
            &["event_type", "outcome"],
        );
        let rule_decisions = counter(
            "rule_decisions_total",
            "Rule decisions, by rule and decision",
            &["rule", "decision"],
        );
        let sends = counter(
            "sends_total",
            "Finished reply steps, by outcome",
            &["outcome"],
        );
        let wts_latency = HistogramVec::new(
            HistogramOpts::new("wts_request_duration_seconds", "WTS API call latency").buckets(
                vec![
                    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
                    30.0,
                ],
            ),
            &["endpoint"],
        )
        .expect("metric definitions are static and valid");
        registry
            .register(Box::new(wts_latency.clone()))
            .expect("each metric is registered once");
        let queue_depth = gauge("queue_depth", "Reply jobs planned or sending");
        let oldest_job_age_seconds = gauge(
            "queue_oldest_job_age_seconds",
            "Age of the oldest unfinished reply job",
        );
        let rules_loaded = gauge("rules_loaded", "Enabled rules in the live snapshot");
        Self {
            registry,
            webhooks,
            rule_decisions,
            sends,
            wts_latency,
            queue_depth,
            oldest_job_age_seconds,
            rules_loaded,
        }
    }

    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> String {
        let mut buf = Vec::new();
        TextEncoder::new()
            .encode(&self.registry.gather(), &mut buf)
            .expect("text encoding into a Vec cannot fail");
        String::from_utf8(buf).expect("the text format is UTF-8")
    }
}

pub static METRICS: LazyLock<Metrics> = LazyLock::new(Metrics::new);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_show_in_the_text_format() {
        METRICS
            .webhooks
            .with_label_values(&["MESSAGE_RECEIVED", "accepted"])
            .inc();
        let text = METRICS.render();
        assert!(text.contains(
            "wtsbot_webhooks_total{event_type=\"MESSAGE_RECEIVED\",outcome=\"accepted\"}"
        ));
        assert!(text.contains("# TYPE wtsbot_queue_depth gauge"));
    }
}
