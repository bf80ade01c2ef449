//! The WTS webhook envelope, read leniently: only what ingress needs (the event type, the
//! ids, `updatedAt`, `direction`) is taken from the body, which is stored as received.

use serde_json::Value;
use sha2::{Digest, Sha256};

/// The documented event types (16, plus the two of the newer documentation). Anything
/// else is stored and ignored.
pub const KNOWN_EVENT_TYPES: [&str; 18] = [
    "SESSION_NEW",
    "SESSION_UPDATE",
    "SESSION_COMPLETE",
    "MESSAGE_RECEIVED",
    "MESSAGE_UPDATED",
    "MESSAGE_SENT",
    "CONTACT_NEW",
    "CONTACT_UPDATE",
    "CONTACT_TAG_UPDATE",
    "PAYMENT_NEW",
    "PAYMENT_UPDATE",
    "PANEL_CARD_NEW",
    "PANEL_CARD_UPDATE",
    "PANEL_CARD_STEP_CHANGE",
    "PANEL_CARD_NOTE_NEW",
    "PANEL_CARD_NOTE_UPDATE",
    "TEMPLATE_NEW",
    "TEMPLATE_UPDATE",
];

/// Longer dedupe keys are replaced by their sha256, so the unique index stays small.
const MAX_DEDUPE_KEY_LEN: usize = 256;

/// Why a body is refused with 400.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EnvelopeError {
    #[error("the body is not valid JSON: {0}")]
    NotJson(String),
    #[error("the body must be a JSON object, not {0}")]
    NotAnObject(&'static str),
    #[error("the body has no string field `eventType`")]
    NoEventType,
}

/// What ingress reads from a webhook body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Envelope {
    pub event_type: String,
    /// `content.id`: the message, session or contact the event is about.
    pub content_id: Option<String>,
    /// `content.updatedAt`, verbatim.
    pub updated_at: Option<String>,
    /// The chat session: `content.id` for session events, else `content.sessionId`.
    pub session_id: Option<String>,
    /// `content.direction` of message events.
    pub direction: Option<String>,
}

/// Parses a body: 400-worthy only when it is not JSON, not an object, or has no string
/// `eventType`; every other field is optional and may have any type.
pub fn parse(body: &[u8]) -> Result<Envelope, EnvelopeError> {
    let value: Value =
        serde_json::from_slice(body).map_err(|e| EnvelopeError::NotJson(e.to_string()))?;
    let Value::Object(root) = value else {
        return Err(EnvelopeError::NotAnObject(json_kind(&value)));
    };
    let event_type = match root.get("eventType") {
        Some(Value::String(s)) if !s.is_empty() => s.clone(),
        _ => return Err(EnvelopeError::NoEventType),
    };
    let content = root.get("content").and_then(Value::as_object);
    let field = |name: &str| content.and_then(|c| c.get(name)).and_then(scalar_text);
    let content_id = field("id");
    let session_id = if event_type.starts_with("SESSION_") {
        content_id.clone()
    } else {
        field("sessionId")
    };
    Ok(Envelope {
        content_id,
        updated_at: field("updatedAt"),
        session_id,
        direction: field("direction"),
        event_type,
    })
}

impl Envelope {
    pub fn is_known_type(&self) -> bool {
        KNOWN_EVENT_TYPES.contains(&self.event_type.as_str())
    }

    /// `eventType` + `content.id` for MESSAGE_RECEIVED, MESSAGE_SENT and every `*_NEW`;
    /// `content.updatedAt` joins it for every other type. Without `content.id` (or
    /// without the `updatedAt` such a type needs) the key is the sha256 of the body.
    pub fn dedupe_key(&self, body: &[u8]) -> String {
        let by_id_only = matches!(
            self.event_type.as_str(),
            "MESSAGE_RECEIVED" | "MESSAGE_SENT"
        ) || self.event_type.ends_with("_NEW");
        let key = match (&self.content_id, &self.updated_at) {
            (Some(id), _) if by_id_only => format!("{}:{id}", self.event_type),
            (Some(id), Some(updated_at)) => format!("{}:{id}@{updated_at}", self.event_type),
            _ => format!("{}:sha256:{}", self.event_type, sha256_hex(body)),
        };
        if key.len() > MAX_DEDUPE_KEY_LEN {
            format!("sha256:{}", sha256_hex(key.as_bytes()))
        } else {
            key
        }
    }

    /// Stored for history and deduplication but never matched: an unknown type,
    /// `MESSAGE_SENT`, or a received message whose `direction` is not the inbound one.
    pub fn is_ignored(&self, inbound_direction: &str) -> bool {
        match self.event_type.as_str() {
            "MESSAGE_SENT" => true,
            "MESSAGE_RECEIVED" => self.direction.as_deref() != Some(inbound_direction),
            _ => !self.is_known_type(),
        }
    }

    /// The `event_type` metric label: unknown types share one label, so a sender cannot
    /// grow the metric without bound.
    pub fn metric_label(&self) -> &str {
        if self.is_known_type() {
            &self.event_type
        } else {
            "unknown"
        }
    }
}

/// A string as is; a number or boolean as its JSON text; anything else is absent.
fn scalar_text(value: &Value) -> Option<String> {
    match value {
        Value::String(s) if !s.is_empty() => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

fn json_kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const CAPTURED: &[u8] =
        include_bytes!("../../tests/fixtures/wts-message-received-captured.json");

    fn envelope(body: &str) -> Envelope {
        parse(body.as_bytes()).unwrap()
    }

    #[test]
    fn the_captured_message_parses_as_it_is() {
        let e = parse(CAPTURED).unwrap();
        assert_eq!(e.event_type, "MESSAGE_RECEIVED");
        assert_eq!(
            e.content_id.as_deref(),
            Some("facbd59c-5415-4c1c-a46c-26c4d4576863")
        );
        assert_eq!(
            e.session_id.as_deref(),
            Some("8917bc7b-ab53-4e1c-940d-1fbd309bdabd")
        );
        assert_eq!(e.direction.as_deref(), Some("FROM_HUB"));
        assert_eq!(
            e.updated_at.as_deref(),
            Some("2025-07-27T23:46:00.1040498Z")
        );
        assert!(!e.is_ignored("FROM_HUB"));
        assert_eq!(
            e.dedupe_key(CAPTURED),
            "MESSAGE_RECEIVED:facbd59c-5415-4c1c-a46c-26c4d4576863"
        );
    }

    #[test]
    fn malformed_bodies_say_what_is_wrong() {
        assert!(matches!(
            parse(b"{not json"),
            Err(EnvelopeError::NotJson(_))
        ));
        assert!(matches!(parse(b""), Err(EnvelopeError::NotJson(_))));
        assert_eq!(parse(b"[1,2]"), Err(EnvelopeError::NotAnObject("an array")));
        assert_eq!(parse(b"\"x\""), Err(EnvelopeError::NotAnObject("a string")));
        assert_eq!(parse(b"{}"), Err(EnvelopeError::NoEventType));
        assert_eq!(
            parse(br#"{"eventType": 7}"#),
            Err(EnvelopeError::NoEventType)
        );
        assert_eq!(
            parse(br#"{"eventType": ""}"#),
            Err(EnvelopeError::NoEventType)
        );
    }

    #[test]
    fn odd_fields_are_accepted() {
        let e = envelope(
            r#"{"eventType":"MESSAGE_RECEIVED","content":{"id":42,"sessionId":null,"direction":"SIDEWAYS"}}"#,
        );
        assert_eq!(e.content_id.as_deref(), Some("42"));
        assert_eq!(e.session_id, None);
        assert!(e.is_ignored("FROM_HUB"));
        let e = envelope(r#"{"eventType":"MESSAGE_RECEIVED","content":"weird"}"#);
        assert_eq!(e.content_id, None);
    }

    #[test]
    fn message_received_and_sent_and_new_events_dedupe_by_id() {
        for event_type in [
            "MESSAGE_RECEIVED",
            "MESSAGE_SENT",
            "SESSION_NEW",
            "CONTACT_NEW",
        ] {
            let first = format!(
                r#"{{"eventType":"{event_type}","content":{{"id":"m1","updatedAt":"2025-01-01T00:00:00Z"}}}}"#
            );
            let again = first.replace("2025-01-01", "2025-01-02");
            assert_eq!(
                envelope(&first).dedupe_key(first.as_bytes()),
                envelope(&again).dedupe_key(again.as_bytes()),
                "{event_type}"
            );
        }
    }

    #[test]
    fn update_events_dedupe_by_id_and_updated_at() {
        for event_type in [
            "SESSION_UPDATE",
            "MESSAGE_UPDATED",
            "CONTACT_UPDATE",
            "SOMETHING_ELSE",
        ] {
            let first = format!(
                r#"{{"eventType":"{event_type}","content":{{"id":"s1","updatedAt":"2025-01-01T00:00:00Z"}}}}"#
            );
            let later = first.replace("2025-01-01", "2025-01-02");
            let key = envelope(&first).dedupe_key(first.as_bytes());
            assert_eq!(key, format!("{event_type}:s1@2025-01-01T00:00:00Z"));
            assert_ne!(key, envelope(&later).dedupe_key(later.as_bytes()));
        }
    }

    #[test]
    fn without_an_id_the_body_hash_is_the_key() {
        let a = r#"{"eventType":"MESSAGE_RECEIVED","content":{"text":"a"}}"#;
        let b = r#"{"eventType":"MESSAGE_RECEIVED","content":{"text":"b"}}"#;
        let key_a = envelope(a).dedupe_key(a.as_bytes());
        assert!(key_a.starts_with("MESSAGE_RECEIVED:sha256:"), "{key_a}");
        assert_eq!(key_a, envelope(a).dedupe_key(a.as_bytes()));
        assert_ne!(key_a, envelope(b).dedupe_key(b.as_bytes()));
    }

    #[test]
    fn session_events_name_their_session_by_content_id() {
        let e = envelope(r#"{"eventType":"SESSION_UPDATE","content":{"id":"s9","updatedAt":"x"}}"#);
        assert_eq!(e.session_id.as_deref(), Some("s9"));
        assert!(!e.is_ignored("FROM_HUB"));
    }

    #[test]
    fn ignored_events() {
        let sent = envelope(r#"{"eventType":"MESSAGE_SENT","content":{"direction":"FROM_HUB"}}"#);
        assert!(sent.is_ignored("FROM_HUB"));
        let outbound =
            envelope(r#"{"eventType":"MESSAGE_RECEIVED","content":{"direction":"TO_HUB"}}"#);
        assert!(outbound.is_ignored("FROM_HUB"));
        assert!(!outbound.is_ignored("TO_HUB"));
        let unknown = envelope(r#"{"eventType":"BRAND_NEW_THING"}"#);
        assert!(unknown.is_ignored("FROM_HUB"));
        assert_eq!(unknown.metric_label(), "unknown");
        let update =
            envelope(r#"{"eventType":"MESSAGE_UPDATED","content":{"direction":"TO_HUB"}}"#);
        assert!(
            !update.is_ignored("FROM_HUB"),
            "delivery updates of our own messages"
        );
    }

    proptest! {
        #[test]
        fn keys_are_bounded_and_stable(event_type in "[A-Z_]{1,400}", id in ".{0,400}", updated in ".{0,50}") {
            let body = serde_json::json!({
                "eventType": event_type,
                "content": {"id": id, "updatedAt": updated},
            })
            .to_string();
            let e = parse(body.as_bytes()).unwrap();
            let key = e.dedupe_key(body.as_bytes());
            prop_assert!(key.len() <= MAX_DEDUPE_KEY_LEN);
            prop_assert_eq!(key, e.dedupe_key(body.as_bytes()));
        }

        #[test]
        fn any_object_with_a_string_event_type_is_accepted(
            event_type in ".{1,40}",
            extra in proptest::collection::hash_map("[a-zA-Z]{1,8}", any::<i64>(), 0..5),
        ) {
            let mut body = serde_json::json!(extra);
            body["eventType"] = serde_json::Value::String(event_type.clone());
            let e = parse(body.to_string().as_bytes()).unwrap();
            prop_assert_eq!(e.event_type, event_type);
        }
    }
}
