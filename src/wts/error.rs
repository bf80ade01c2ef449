//! One error for every WTS call: what WTS answered (status, `key`, `text`), or why no
//! answer came, and whether trying again can help.

use std::time::Duration;

use serde::Deserialize;
use serde_json::Value;

/// How much of a non-JSON error body is kept.
const EXCERPT_CHARS: usize = 200;

#[derive(Debug, thiserror::Error)]
pub enum WtsError {
    /// WTS answered with a non-success status.
    #[error("WTS answered {}", describe_answer(*status, key.as_deref(), text.as_deref()))]
    Api {
        status: u16,
        key: Option<String>,
        text: Option<String>,
        retry_after: Option<Duration>,
    },
    /// No complete answer within `wts.timeout` (or `wts.connect_timeout` when
    /// `connecting`).
    #[error("WTS did not answer in time ({})", if *connecting { "connecting" } else { "request sent" })]
    Timeout { connecting: bool },
    /// The connection could not be made (refused, DNS, TLS): nothing was sent.
    #[error("cannot connect to WTS: {0}")]
    Connect(String),
    /// The connection broke after the request started: it may have reached WTS.
    #[error("connection to WTS lost: {0}")]
    Transport(String),
    /// A success status with a body that is not what the endpoint documents.
    #[error("unexpected answer from WTS ({status}): {message}")]
    Decode { status: u16, message: String },
    /// The request could not be built (bad base URL, bad header): nothing was sent.
    #[error("invalid WTS request: {0}")]
    Request(String),
    /// Reading the local file to upload failed.
    #[error("cannot read {path}: {reason}")]
    File {
        path: String,
        reason: std::io::Error,
    },
    /// The client cannot be built from the configuration.
    #[error("{0}")]
    Config(String),
}

fn describe_answer(status: u16, key: Option<&str>, text: Option<&str>) -> String {
    match (key, text) {
        (Some(key), Some(text)) => format!("{status} {key}: {text}"),
        (Some(key), None) => format!("{status} {key}"),
        (None, Some(text)) => format!("{status}: {text}"),
        (None, None) => status.to_string(),
    }
}

impl WtsError {
    /// The HTTP status WTS answered, if it answered.
    pub fn status(&self) -> Option<u16> {
        match self {
            WtsError::Api { status, .. } | WtsError::Decode { status, .. } => Some(*status),
            _ => None,
        }
    }

    /// WTS's stable error code (`FORM_ERROR`, `ERROR_UNAUTHORIZED`).
    pub fn key(&self) -> Option<&str> {
        match self {
            WtsError::Api { key, .. } => key.as_deref(),
            _ => None,
        }
    }

    /// WTS's human-readable message.
    pub fn text(&self) -> Option<&str> {
        match self {
            WtsError::Api { text, .. } => text.as_deref(),
            _ => None,
        }
    }

    /// The wait WTS asked for with `Retry-After`.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            WtsError::Api { retry_after, .. } => *retry_after,
            _ => None,
        }
    }

    /// 429, 5xx, timeouts and connection failures may pass on a later attempt; any other
    /// answer will not.
    pub fn is_retryable(&self) -> bool {
        match self {
            WtsError::Api { status, .. } => *status == 429 || *status >= 500,
            WtsError::Timeout { .. } | WtsError::Connect(_) | WtsError::Transport(_) => true,
            WtsError::Decode { .. }
            | WtsError::Request(_)
            | WtsError::File { .. }
            | WtsError::Config(_) => false,
        }
    }

    /// True when the request may have been carried out although no answer says so: the
    /// connection broke or timed out after the request left, or a gateway timed out
    /// waiting for WTS, or WTS said 2xx in a form that cannot be read. Such a send must
    /// not be repeated blindly.
    pub fn outcome_unknown(&self) -> bool {
        match self {
            WtsError::Timeout { connecting } => !connecting,
            WtsError::Transport(_) | WtsError::Decode { .. } => true,
            WtsError::Api { status, .. } => *status == 504,
            WtsError::Connect(_)
            | WtsError::Request(_)
            | WtsError::File { .. }
            | WtsError::Config(_) => false,
        }
    }

    pub(crate) fn from_transport(err: reqwest::Error) -> Self {
        let message = error_chain(&err);
        if err.is_timeout() {
            WtsError::Timeout {
                connecting: err.is_connect(),
            }
        } else if err.is_connect() {
            WtsError::Connect(message)
        } else if err.is_builder() {
            WtsError::Request(message)
        } else {
            WtsError::Transport(message)
        }
    }

    /// Builds the error for a non-success answer from its status, `Retry-After` header
    /// and body.
    pub(crate) fn from_answer(status: u16, retry_after: Option<&str>, body: &[u8]) -> Self {
        let (key, text) = parse_error_body(body);
        WtsError::Api {
            status,
            key,
            text,
            retry_after: retry_after.and_then(parse_retry_after),
        }
    }
}

/// The error and its sources on one line; reqwest keeps the useful part (the OS error)
/// in the sources.
fn error_chain(err: &dyn std::error::Error) -> String {
    let mut message = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !message.contains(&cause_text) {
            message.push_str(": ");
            message.push_str(&cause_text);
        }
        source = cause.source();
    }
    message
}

/// The WTS error envelope. `httpStatusCode` may be a number or a string
/// ("INTERNALSERVERERROR"), so it is not read at all: the HTTP status is authoritative.
#[derive(Deserialize)]
struct Envelope {
    key: Option<String>,
    text: Option<String>,
}

/// RFC 7807 ProblemDetails, as some 400 validation errors come.
#[derive(Deserialize)]
struct ProblemDetails {
    title: Option<String>,
    detail: Option<String>,
    #[serde(default)]
    errors: Option<Value>,
}

/// `(key, text)` from an error body: the WTS envelope, else ProblemDetails (its title,
/// detail and field errors as the text), else a short excerpt of the body.
fn parse_error_body(body: &[u8]) -> (Option<String>, Option<String>) {
    if let Ok(value) = serde_json::from_slice::<Value>(body) {
        if (value.get("key").is_some() || value.get("text").is_some())
            && let Ok(envelope) = serde_json::from_value::<Envelope>(value.clone())
        {
            return (envelope.key, envelope.text);
        }
        if (value.get("title").is_some() || value.get("detail").is_some())
            && let Ok(problem) = serde_json::from_value::<ProblemDetails>(value)
        {
            return (None, Some(problem_text(&problem)));
        }
    }
    let excerpt = excerpt(body);
    (None, (!excerpt.is_empty()).then_some(excerpt))
}

fn problem_text(problem: &ProblemDetails) -> String {
    let mut parts: Vec<String> = Vec::new();
    parts.extend(problem.title.iter().cloned());
    parts.extend(problem.detail.iter().cloned());
    // `errors` is `{field: [messages]}` in ASP.NET's validation problems.
    if let Some(Value::Object(fields)) = &problem.errors {
        for (field, messages) in fields {
            let messages: Vec<&str> = match messages {
                Value::Array(items) => items.iter().filter_map(Value::as_str).collect(),
                Value::String(message) => vec![message.as_str()],
                _ => Vec::new(),
            };
            parts.push(format!("{field}: {}", messages.join(", ")));
        }
    }
    parts.join("; ")
}

/// The first characters of a body, on one line.
fn excerpt(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(body);
    let one_line = text.split_whitespace().collect::<Vec<_>>().join(" ");
    match one_line.char_indices().nth(EXCERPT_CHARS) {
        Some((cut, _)) => format!("{}…", &one_line[..cut]),
        None => one_line,
    }
}

/// `Retry-After` as delta-seconds or an HTTP date.
pub(crate) fn parse_retry_after(value: &str) -> Option<Duration> {
    let value = value.trim();
    if let Ok(seconds) = value.parse::<u64>() {
        return Some(Duration::from_secs(seconds));
    }
    let date = chrono::DateTime::parse_from_rfc2822(value).ok()?;
    let wait = date.with_timezone(&chrono::Utc) - chrono::Utc::now();
    Some(wait.to_std().unwrap_or(Duration::ZERO))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn envelope_with_string_status_code_keeps_key_and_text() {
        let body = br#"{"id":{"value":"0b6c","shortValue":"0b6c"},"httpStatusCode":"INTERNALSERVERERROR",
            "error":true,"key":"FORM_ERROR","text":"Contato n\u00e3o encontrado","isUnsolvableError":false}"#;
        let err = WtsError::from_answer(500, None, body);
        assert_eq!(err.status(), Some(500));
        assert_eq!(err.key(), Some("FORM_ERROR"));
        assert_eq!(err.text(), Some("Contato não encontrado"));
        assert!(err.is_retryable());
        assert!(!err.outcome_unknown());
    }

    #[test]
    fn display_is_one_line_with_status_key_and_text() {
        let body =
            br#"{"httpStatusCode":400,"key":"FORM_ERROR","text":"Contato n\u00e3o encontrado"}"#;
        let err = WtsError::from_answer(400, None, body);
        assert_eq!(
            err.to_string(),
            "WTS answered 400 FORM_ERROR: Contato não encontrado"
        );
        assert!(!err.is_retryable());
    }

    #[test]
    fn unauthorized_is_permanent() {
        let body = br#"{"httpStatusCode":401,"key":"ERROR_UNAUTHORIZED","text":"Acesso negado"}"#;
        let err = WtsError::from_answer(401, None, body);
        assert_eq!(err.key(), Some("ERROR_UNAUTHORIZED"));
        assert!(!err.is_retryable());
    }

    #[test]
    fn problem_details_become_the_text() {
        let body = br#"{"type":"https://tools.ietf.org/html/rfc7231#section-6.5.1",
            "title":"One or more validation errors occurred.","status":400,
            "errors":{"Name":["The Name field is required."]}}"#;
        let err = WtsError::from_answer(400, None, body);
        assert_eq!(err.key(), None);
        assert_eq!(
            err.text(),
            Some("One or more validation errors occurred.; Name: The Name field is required.")
        );
    }

    #[test]
    fn non_json_body_keeps_a_short_excerpt() {
        let body = format!(
            "<html>\n<body>Bad Gateway {}</body></html>",
            "x".repeat(500)
        );
        let err = WtsError::from_answer(502, None, body.as_bytes());
        let text = err.text().unwrap();
        assert!(text.starts_with("<html> <body>Bad Gateway"), "{text}");
        assert!(text.chars().count() <= EXCERPT_CHARS + 1);
        assert!(!err.to_string().contains('\n'));
    }

    #[test]
    fn empty_body_shows_the_status_only() {
        let err = WtsError::from_answer(503, None, b"");
        assert_eq!(err.to_string(), "WTS answered 503");
    }

    #[test]
    fn rate_limit_keeps_retry_after() {
        let err = WtsError::from_answer(429, Some("7"), b"");
        assert!(err.is_retryable());
        assert_eq!(err.retry_after(), Some(Duration::from_secs(7)));
    }

    #[test]
    fn retry_after_accepts_http_dates() {
        let future = chrono::Utc::now() + chrono::Duration::seconds(30);
        let header = future.format("%a, %d %b %Y %H:%M:%S GMT").to_string();
        let wait = parse_retry_after(&header).unwrap();
        assert!(wait > Duration::from_secs(25) && wait <= Duration::from_secs(30));
        assert_eq!(
            parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT"),
            Some(Duration::ZERO)
        );
        assert_eq!(parse_retry_after("soon"), None);
    }

    #[test]
    fn transport_failures_are_classified() {
        let timeout_after_send = WtsError::Timeout { connecting: false };
        assert!(timeout_after_send.is_retryable() && timeout_after_send.outcome_unknown());
        let connect_timeout = WtsError::Timeout { connecting: true };
        assert!(connect_timeout.is_retryable() && !connect_timeout.outcome_unknown());
        let refused = WtsError::Connect("connection refused".into());
        assert!(refused.is_retryable() && !refused.outcome_unknown());
        let dropped = WtsError::Transport("connection closed before message completed".into());
        assert!(dropped.is_retryable() && dropped.outcome_unknown());
        let gateway = WtsError::from_answer(504, None, b"");
        assert!(gateway.is_retryable() && gateway.outcome_unknown());
    }
}
