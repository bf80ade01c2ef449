//! Faults on demand and the documented account rate limits.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use serde::Deserialize;

/// What a matching request gets instead of (or on top of) its normal answer.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum FaultKind {
    /// 429 with `Retry-After: <secs>` and the envelope.
    TooManyRequests { retry_after_secs: u64 },
    /// 500, 502 or 503 with the envelope.
    ServerError { status: u16 },
    /// 400 `FORM_ERROR` with this text.
    FormError { text: String },
    /// Waits this long, then answers normally.
    Latency {
        #[serde(with = "humantime_serde")]
        delay: Duration,
    },
    /// Closes the connection without processing the request or answering.
    DropBeforeProcessing,
    /// Processes the request (a send is stored), then closes the connection without answering.
    DropAfterProcessing,
}

/// A fault for requests whose method and path match, applied `times` times. Faults are
/// checked before authentication and routing, and also apply to the pre-signed upload PUT.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Fault {
    /// `None` matches any method.
    #[serde(default)]
    pub method: Option<String>,
    /// Matches paths starting with this; empty matches every path.
    #[serde(default)]
    pub path_prefix: String,
    #[serde(default = "one")]
    pub times: u32,
    #[serde(flatten)]
    pub kind: FaultKind,
}

fn one() -> u32 {
    1
}

impl Fault {
    /// A fault for every request, once.
    pub fn new(kind: FaultKind) -> Self {
        Fault {
            method: None,
            path_prefix: String::new(),
            times: 1,
            kind,
        }
    }

    /// Restricts the fault to `method` and paths starting with `path_prefix`.
    pub fn on(mut self, method: &str, path_prefix: &str) -> Self {
        self.method = Some(method.to_ascii_uppercase());
        self.path_prefix = path_prefix.to_owned();
        self
    }

    pub fn times(mut self, times: u32) -> Self {
        self.times = times;
        self
    }

    fn matches(&self, method: &str, path: &str) -> bool {
        self.method
            .as_deref()
            .is_none_or(|m| m.eq_ignore_ascii_case(method))
            && path.starts_with(&self.path_prefix)
    }
}

/// Takes one use of the first queued fault that matches, dropping it once used up.
pub(crate) fn take_fault(
    queue: &mut VecDeque<Fault>,
    method: &str,
    path: &str,
) -> Option<FaultKind> {
    let index = queue.iter().position(|f| f.matches(method, path))?;
    let fault = &mut queue[index];
    fault.times = fault.times.saturating_sub(1);
    let kind = fault.kind.clone();
    if fault.times == 0 {
        queue.remove(index);
    }
    Some(kind)
}

/// The account limits: more than `short_max` requests in any `short_window`, or more than
/// `long_max` in any `long_window`, answer 429 (without `Retry-After`, which WTS does not
/// document). Refused requests do not count against the windows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RateLimit {
    pub short_max: u32,
    pub short_window: Duration,
    pub long_max: u32,
    pub long_window: Duration,
}

impl RateLimit {
    /// The documented limits: 200 per 5 s and 1,000 per 5 min.
    pub fn documented() -> Self {
        RateLimit {
            short_max: 200,
            short_window: Duration::from_secs(5),
            long_max: 1000,
            long_window: Duration::from_secs(300),
        }
    }
}

/// Sliding-window counter over the accepted requests.
#[derive(Debug)]
pub(crate) struct Limiter {
    limit: RateLimit,
    accepted: VecDeque<Instant>,
}

impl Limiter {
    pub fn new(limit: RateLimit) -> Self {
        Limiter {
            limit,
            accepted: VecDeque::new(),
        }
    }

    pub fn limit(&self) -> RateLimit {
        self.limit
    }

    /// Counts the request and says whether it is within both windows.
    pub fn admit(&mut self, now: Instant) -> bool {
        let longest = self.limit.long_window.max(self.limit.short_window);
        while self
            .accepted
            .front()
            .is_some_and(|t| now.duration_since(*t) >= longest)
        {
            self.accepted.pop_front();
        }
        let in_window = |window: Duration| {
            self.accepted
                .iter()
                .rev()
                .take_while(|t| now.duration_since(**t) < window)
                .count()
        };
        if in_window(self.limit.short_window) >= self.limit.short_max as usize
            || in_window(self.limit.long_window) >= self.limit.long_max as usize
        {
            return false;
        }
        self.accepted.push_back(now);
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn faults_match_method_and_prefix_and_wear_out() {
        let mut queue = VecDeque::from([
            Fault::new(FaultKind::ServerError { status: 503 })
                .on("post", "/chat/")
                .times(2),
            Fault::new(FaultKind::DropBeforeProcessing),
        ]);
        assert_eq!(
            take_fault(&mut queue, "GET", "/chat/v1/message/x"),
            Some(FaultKind::DropBeforeProcessing)
        );
        assert_eq!(
            take_fault(&mut queue, "POST", "/chat/v1/session/x/message"),
            Some(FaultKind::ServerError { status: 503 })
        );
        assert_eq!(
            take_fault(&mut queue, "POST", "/chat/v1/session/x/message"),
            Some(FaultKind::ServerError { status: 503 })
        );
        assert_eq!(
            take_fault(&mut queue, "POST", "/chat/v1/session/x/message"),
            None
        );
        assert!(queue.is_empty());
    }

    #[test]
    fn faults_deserialise_from_control_json() {
        let fault: Fault = serde_json::from_str(
            r#"{"method":"POST","pathPrefix":"/chat/","times":3,"kind":"too_many_requests","retry_after_secs":2}"#,
        )
        .unwrap();
        assert_eq!(fault.times, 3);
        assert_eq!(
            fault.kind,
            FaultKind::TooManyRequests {
                retry_after_secs: 2
            }
        );
        let latency: Fault = serde_json::from_str(r#"{"kind":"latency","delay":"150ms"}"#).unwrap();
        assert_eq!(latency.times, 1);
        assert_eq!(
            latency.kind,
            FaultKind::Latency {
                delay: Duration::from_millis(150)
            }
        );
    }

    #[test]
    fn limiter_enforces_both_windows() {
        let limit = RateLimit {
            short_max: 3,
            short_window: Duration::from_millis(100),
            long_max: 5,
            long_window: Duration::from_secs(1),
        };
        let mut limiter = Limiter::new(limit);
        let start = Instant::now();
        assert!((0..3).all(|_| limiter.admit(start)));
        assert!(!limiter.admit(start));
        let later = start + Duration::from_millis(150);
        assert!(limiter.admit(later));
        assert!(limiter.admit(later));
        assert!(!limiter.admit(later), "the long window is full at five");
        assert!(limiter.admit(start + Duration::from_millis(1001)));
    }
}
