//! What the simulator keeps: sessions, sent messages, uploaded files, webhook
//! subscriptions and the log of requests, as plain values tests can inspect.

use std::time::Instant;

use bytes::Bytes;
use chrono::{DateTime, Utc};
use uuid::Uuid;

/// The channel every session is on unless a test says otherwise.
pub const DEFAULT_CHANNEL_ID: &str = "5d1c3a8e-2f4b-4c6d-9e0a-7b8c9d0e1f2a";

pub(crate) fn new_id() -> String {
    Uuid::new_v4().to_string()
}

/// A chat session between a contact and the company, optionally held by an agent.
#[derive(Clone, Debug, PartialEq)]
pub struct SimSession {
    pub id: String,
    pub contact: SimContact,
    pub agent: Option<SimAgent>,
    pub channel_id: String,
    pub department: Option<SimDepartment>,
    /// `UNDEFINED | STARTED | PENDING | IN_PROGRESS | COMPLETED | HIDDEN`.
    pub status: String,
    /// `ACTIVE | EXPIRED | NOT_STARTED`.
    pub window_status: String,
    /// When set, every send into this session answers 200 with status `FAILED` and this reason.
    pub channel_failure: Option<String>,
    pub created_at: DateTime<Utc>,
}

impl SimSession {
    /// A session with a generated id and contact, no agent, on the default channel.
    pub fn new() -> Self {
        Self::with_generated_contact(new_id())
    }

    pub(crate) fn with_generated_contact(id: String) -> Self {
        let contact_id = new_id();
        let suffix: String = contact_id
            .chars()
            .filter(char::is_ascii_digit)
            .take(8)
            .collect();
        SimSession {
            id,
            contact: SimContact {
                name: format!("Cliente {}", &contact_id[..4]),
                phonenumber: format!("+55|119{suffix:0<8}"),
                id: contact_id,
                tags: Vec::new(),
            },
            agent: None,
            channel_id: DEFAULT_CHANNEL_ID.to_owned(),
            department: None,
            status: "IN_PROGRESS".to_owned(),
            window_status: "ACTIVE".to_owned(),
            channel_failure: None,
            created_at: Utc::now(),
        }
    }

    pub fn with_id(mut self, id: impl Into<String>) -> Self {
        self.id = id.into();
        self
    }

    pub fn with_contact_name(mut self, name: impl Into<String>) -> Self {
        self.contact.name = name.into();
        self
    }

    /// Tags by name; each gets a generated id.
    pub fn with_tags(mut self, names: &[&str]) -> Self {
        self.contact.tags = names.iter().map(|name| SimTag::named(*name)).collect();
        self
    }

    pub fn with_agent(mut self, agent: SimAgent) -> Self {
        self.agent = Some(agent);
        self
    }

    pub fn with_channel(mut self, channel_id: impl Into<String>) -> Self {
        self.channel_id = channel_id.into();
        self
    }

    pub fn with_department(mut self, department: SimDepartment) -> Self {
        self.department = Some(department);
        self
    }

    pub fn with_channel_failure(mut self, reason: impl Into<String>) -> Self {
        self.channel_failure = Some(reason.into());
        self
    }
}

impl Default for SimSession {
    fn default() -> Self {
        Self::new()
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct SimContact {
    pub id: String,
    pub name: String,
    /// WTS form: country code, pipe, number (`+55|11999999999`).
    pub phonenumber: String,
    pub tags: Vec<SimTag>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct SimTag {
    pub id: String,
    pub name: String,
}

impl SimTag {
    pub fn named(name: impl Into<String>) -> Self {
        SimTag {
            id: new_id(),
            name: name.into(),
        }
    }
}

/// A human agent: `id` is the agent record, `user_id` the WTS user behind it.
#[derive(Clone, Debug, PartialEq)]
pub struct SimAgent {
    pub id: String,
    pub user_id: String,
    pub name: String,
}

impl SimAgent {
    pub fn named(name: impl Into<String>) -> Self {
        SimAgent {
            id: new_id(),
            user_id: new_id(),
            name: name.into(),
        }
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct SimDepartment {
    pub id: String,
    pub name: String,
}

impl SimDepartment {
    pub fn named(name: impl Into<String>) -> Self {
        SimDepartment {
            id: new_id(),
            name: name.into(),
        }
    }
}

/// A message sent through the API (`origin` API, `direction` TO_HUB).
#[derive(Clone, Debug, PartialEq)]
pub struct SimMessage {
    pub id: String,
    pub session_id: String,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    /// `TEXT | IMAGE | VIDEO | AUDIO | DOCUMENT`.
    pub message_type: String,
    pub text: Option<String>,
    pub file_id: Option<String>,
    pub file_url: Option<String>,
    pub template_id: Option<String>,
    pub ref_id: Option<String>,
    /// Sent through `/message/sync`.
    pub sync: bool,
    /// `QUEUED`, `SENT`, `DELIVERED` or `FAILED`.
    pub status: String,
    pub failure_reason: Option<String>,
}

/// Which upload flow produced a file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UploadFlow {
    /// `GET /core/v2/file`, PUT, `POST /core/v2/file`.
    V2,
    /// `POST /core/v1/file/upload`, PUT, `PUT /core/v1/file`.
    V1,
}

/// A confirmed file: its id is a valid `fileId` for sends.
#[derive(Clone, Debug, PartialEq)]
pub struct SimUpload {
    pub id: String,
    pub flow: UploadFlow,
    pub name: String,
    pub extension: String,
    pub mime_type: String,
    /// `PDF | EXCEL | WORD | IMAGE | AUDIO | VIDEO | DOCUMENT | UNDEFINED`.
    pub file_type: String,
    /// The S3 object key.
    pub key: String,
    /// The `Content-Type` the PUT carried, if any.
    pub put_content_type: Option<String>,
    pub bytes: Bytes,
}

#[derive(Clone, Debug, PartialEq)]
pub struct SimSubscription {
    pub id: String,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub name: String,
    pub url: String,
    pub enabled: bool,
    pub events: Vec<String>,
}

/// One webhook POST the simulator made to a subscription.
#[derive(Clone, Debug, PartialEq)]
pub struct SimDelivery {
    pub subscription_id: String,
    pub url: String,
    pub event_type: String,
    pub message_id: String,
    /// The receiver's HTTP status, or `None` when the request itself failed.
    pub status: Option<u16>,
    pub error: Option<String>,
}

/// One request as the simulator received it (control routes under `/_sim/` are not logged).
#[derive(Clone, Debug)]
pub struct RecordedRequest {
    pub method: String,
    pub path: String,
    pub query: Option<String>,
    /// Lower-case names, in arrival order.
    pub headers: Vec<(String, String)>,
    /// The body; empty for uploads, whose size alone is kept.
    pub body: Bytes,
    pub body_size: usize,
    pub received_at: Instant,
    pub received_at_utc: DateTime<Utc>,
}

impl RecordedRequest {
    /// The first value of a header, by case-insensitive name.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The body parsed as JSON, if it is JSON.
    pub fn json(&self) -> Option<serde_json::Value> {
        serde_json::from_slice(&self.body).ok()
    }

    /// Every value of a query parameter, by exact name.
    pub fn query_values(&self, name: &str) -> Vec<String> {
        crate::sim::wire::query_pairs(self.query.as_deref())
            .into_iter()
            .filter(|(k, _)| k == name)
            .map(|(_, v)| v)
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_sessions_are_distinct_and_unassigned() {
        let a = SimSession::new();
        let b = SimSession::new();
        assert_ne!(a.id, b.id);
        assert_ne!(a.contact.id, b.contact.id);
        assert!(a.agent.is_none());
        assert!(a.contact.phonenumber.starts_with("+55|119"));
        assert_eq!(a.contact.phonenumber.len(), "+55|11999999999".len());
    }

    #[test]
    fn builders_set_what_they_name() {
        let session = SimSession::new()
            .with_id("s-1")
            .with_contact_name("Maria")
            .with_tags(&["vip", "b2b"])
            .with_agent(SimAgent::named("Ana"))
            .with_channel_failure("janela expirada");
        assert_eq!(session.id, "s-1");
        assert_eq!(session.contact.name, "Maria");
        let tags: Vec<_> = session
            .contact
            .tags
            .iter()
            .map(|t| t.name.as_str())
            .collect();
        assert_eq!(tags, ["vip", "b2b"]);
        assert_eq!(session.agent.unwrap().name, "Ana");
        assert_eq!(session.channel_failure.as_deref(), Some("janela expirada"));
    }
}
