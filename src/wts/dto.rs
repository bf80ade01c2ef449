//! Wire types of the WTS API, read leniently: unknown enum values, missing optional
//! fields, extra fields and .NET timestamps (7 fractional digits, sometimes no offset)
//! all parse.

use chrono::{DateTime, NaiveDateTime, Utc};
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::Value;

/// Body of `POST /chat/v1/session/{id}/message[/sync]`; absent fields are omitted.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SendBody {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub file_url: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub file_id: Option<String>,
}

impl SendBody {
    pub fn text(text: impl Into<String>) -> Self {
        Self {
            text: Some(text.into()),
            ..Self::default()
        }
    }

    pub fn file_url(url: impl Into<String>, caption: Option<String>) -> Self {
        Self {
            text: caption,
            file_url: Some(url.into()),
            file_id: None,
        }
    }

    pub fn file_id(id: impl Into<String>, caption: Option<String>) -> Self {
        Self {
            text: caption,
            file_url: None,
            file_id: Some(id.into()),
        }
    }
}

/// A message `status`; values WTS adds later are kept as `Other`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MessageStatus {
    Processing,
    Saved,
    Queued,
    Sent,
    Delivered,
    Read,
    Failed,
    Deleted,
    WaitReply,
    Other(String),
}

impl MessageStatus {
    pub fn parse(value: &str) -> Self {
        match value {
            "PROCESSING" => Self::Processing,
            "SAVED" => Self::Saved,
            "QUEUED" => Self::Queued,
            "SENT" => Self::Sent,
            "DELIVERED" => Self::Delivered,
            "READ" => Self::Read,
            "FAILED" => Self::Failed,
            "DELETED" => Self::Deleted,
            "WAIT_REPLY" => Self::WaitReply,
            other => Self::Other(other.to_string()),
        }
    }

    pub fn as_str(&self) -> &str {
        match self {
            Self::Processing => "PROCESSING",
            Self::Saved => "SAVED",
            Self::Queued => "QUEUED",
            Self::Sent => "SENT",
            Self::Delivered => "DELIVERED",
            Self::Read => "READ",
            Self::Failed => "FAILED",
            Self::Deleted => "DELETED",
            Self::WaitReply => "WAIT_REPLY",
            Self::Other(other) => other,
        }
    }
}

impl<'de> Deserialize<'de> for MessageStatus {
    fn deserialize<D: Deserializer<'de>>(de: D) -> Result<Self, D::Error> {
        Ok(Self::parse(&String::deserialize(de)?))
    }
}

/// The answer to a send in session. The async path answers `PublicQuickMessageDTO`
/// (`failureReason`), the sync path `PublicMessageDTO` (`failedReason`); both end here.
#[derive(Debug, Clone, PartialEq)]
pub struct SentMessage {
    pub id: String,
    /// `None` when WTS gave no status.
    pub status: Option<MessageStatus>,
    pub failure_reason: Option<String>,
    /// The answer as WTS sent it.
    pub raw: Value,
}

impl SentMessage {
    /// Reads either answer shape; `None` when it carries no message id.
    pub fn from_answer(raw: Value) -> Option<Self> {
        let id = raw.get("id")?.as_str()?.to_string();
        let status = raw
            .get("status")
            .and_then(Value::as_str)
            .map(MessageStatus::parse);
        let failure_reason = ["failureReason", "failedReason"]
            .iter()
            .filter_map(|field| raw.get(*field).and_then(Value::as_str))
            .find(|reason| !reason.is_empty())
            .map(str::to_string);
        Some(Self {
            id,
            status,
            failure_reason,
            raw,
        })
    }

    /// WTS took the request but reports the message as not sent.
    pub fn failed(&self) -> bool {
        self.status == Some(MessageStatus::Failed)
    }
}

/// `Type` of an upload (`GET /core/v2/file`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum FileType {
    Pdf,
    Excel,
    Word,
    Image,
    Audio,
    Video,
    Document,
}

impl FileType {
    pub fn as_str(self) -> &'static str {
        match self {
            FileType::Pdf => "PDF",
            FileType::Excel => "EXCEL",
            FileType::Word => "WORD",
            FileType::Image => "IMAGE",
            FileType::Audio => "AUDIO",
            FileType::Video => "VIDEO",
            FileType::Document => "DOCUMENT",
        }
    }
}

/// Answer of `GET /core/v2/file`: where to PUT the bytes, and what to confirm.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct UploadTicket {
    pub temp_file_id: String,
    pub url_upload: String,
}

/// Body of `POST /core/v2/file`.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct ConfirmUpload<'a> {
    pub temp_file_id: &'a str,
}

/// `PublicFileV2DTO`: the confirmed upload. Its `id` is the reusable `fileId`.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct UploadedFile {
    pub id: String,
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub extension: Option<String>,
    #[serde(default)]
    pub mime_type: Option<String>,
    #[serde(default, rename = "type")]
    pub file_type: Option<String>,
    #[serde(default)]
    pub size: Option<u64>,
}

/// A session with the details wtsbot's rules look at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionDetails {
    pub id: String,
    /// The agent holding the session, if any.
    pub agent: Option<Agent>,
    pub user_id: Option<String>,
    pub channel_id: Option<String>,
    pub department_id: Option<String>,
    pub contact_name: Option<String>,
    pub contact_phone: Option<String>,
    /// Tag names.
    pub contact_tags: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Agent {
    pub id: String,
    pub name: Option<String>,
}

/// `PublicSessionDTOV2`, the parts read.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct SessionDto {
    id: String,
    #[serde(default)]
    user_id: Option<String>,
    #[serde(default)]
    channel_id: Option<String>,
    #[serde(default)]
    department_id: Option<String>,
    #[serde(default)]
    agent_details: Option<AgentDetailsDto>,
    #[serde(default)]
    contact_details: Option<ContactDetailsDto>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct AgentDetailsDto {
    #[serde(default)]
    id: Option<String>,
    #[serde(default)]
    user_id: Option<String>,
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    short_name: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct ContactDetailsDto {
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    phonenumber: Option<String>,
    #[serde(default)]
    phonenumber_formatted: Option<String>,
    #[serde(default)]
    tags_name: Option<Vec<String>>,
}

impl From<SessionDto> for SessionDetails {
    fn from(dto: SessionDto) -> Self {
        let agent_details = dto.agent_details;
        // The session's `userId` says who holds it; the details only add a name.
        let agent_id = dto.user_id.clone().or_else(|| {
            agent_details
                .as_ref()
                .and_then(|a| a.user_id.clone().or_else(|| a.id.clone()))
        });
        let agent = agent_id.map(|id| Agent {
            id,
            name: agent_details
                .as_ref()
                .and_then(|a| a.name.clone().or_else(|| a.short_name.clone()))
                .filter(|name| !name.is_empty()),
        });
        let contact = dto.contact_details;
        let contact_phone = contact.as_ref().and_then(|c| {
            c.phonenumber_formatted
                .clone()
                .filter(|p| !p.is_empty())
                // `+55|11999990000`: country code, pipe, number.
                .or_else(|| c.phonenumber.as_ref().map(|p| p.replace('|', "")))
        });
        Self {
            id: dto.id,
            agent,
            user_id: dto.user_id,
            channel_id: dto.channel_id,
            department_id: dto.department_id,
            contact_name: contact
                .as_ref()
                .and_then(|c| c.name.clone())
                .filter(|n| !n.is_empty()),
            contact_phone,
            contact_tags: contact.and_then(|c| c.tags_name).unwrap_or_default(),
        }
    }
}

/// One message of a session (`GET /chat/v1/session/{id}/message`), as needed to find
/// out whether a send whose answer was lost went through.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SessionMessage {
    pub id: String,
    #[serde(default, deserialize_with = "lenient_timestamp")]
    pub created_at: Option<DateTime<Utc>>,
    #[serde(default)]
    pub direction: Option<String>,
    #[serde(default)]
    pub origin: Option<String>,
    /// `TEXT`, `IMAGE`, `DOCUMENT`, ...
    #[serde(default, rename = "type")]
    pub message_type: Option<String>,
    #[serde(default)]
    pub text: Option<String>,
    #[serde(default)]
    pub file_id: Option<String>,
    #[serde(default)]
    pub status: Option<MessageStatus>,
}

/// The paging envelope of list endpoints.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Page<T> {
    #[serde(default = "Vec::new")]
    pub items: Vec<T>,
    #[serde(default)]
    pub has_more_pages: bool,
}

/// An event WTS can send (`GET /core/v1/webhook/event`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct WebhookEventInfo {
    pub event: String,
    #[serde(default)]
    pub description: Option<String>,
}

/// `PublicWebhookSubscriptionDTO`. `events` holds the event names (WTS answers objects).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WebhookSubscription {
    pub id: String,
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub url: String,
    #[serde(default = "default_true")]
    pub enabled: bool,
    #[serde(default, deserialize_with = "event_names")]
    pub events: Vec<String>,
}

fn default_true() -> bool {
    true
}

/// Body of `POST /core/v1/webhook/subscription`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct NewSubscription {
    pub name: String,
    pub url: String,
    pub enabled: bool,
    pub events: Vec<String>,
}

/// Body of `PUT /core/v1/webhook/subscription/{id}`: `fields` names what changes and is
/// derived from the values that are set.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SubscriptionUpdate {
    pub name: Option<String>,
    pub url: Option<String>,
    pub enabled: Option<bool>,
    pub events: Option<Vec<String>>,
}

impl Serialize for SubscriptionUpdate {
    fn serialize<S: serde::Serializer>(&self, ser: S) -> Result<S::Ok, S::Error> {
        let mut fields = Vec::new();
        let mut body = serde_json::Map::new();
        if let Some(name) = &self.name {
            fields.push("Name");
            body.insert("name".into(), name.clone().into());
        }
        if let Some(url) = &self.url {
            fields.push("Url");
            body.insert("url".into(), url.clone().into());
        }
        if let Some(events) = &self.events {
            fields.push("Events");
            body.insert("events".into(), events.clone().into());
        }
        if let Some(enabled) = self.enabled {
            fields.push("Enabled");
            body.insert("enabled".into(), enabled.into());
        }
        body.insert("fields".into(), fields.into());
        body.serialize(ser)
    }
}

/// Event names from `[{event, description}]`, or from plain strings.
fn event_names<'de, D: Deserializer<'de>>(de: D) -> Result<Vec<String>, D::Error> {
    let items = Option::<Vec<Value>>::deserialize(de)?.unwrap_or_default();
    Ok(items
        .into_iter()
        .filter_map(|item| match item {
            Value::String(name) => Some(name),
            Value::Object(mut map) => match map.remove("event") {
                Some(Value::String(name)) => Some(name),
                _ => None,
            },
            _ => None,
        })
        .collect())
}

/// RFC 3339 with any number of fractional digits, or the same without an offset (read as
/// UTC); anything else is `None` rather than an error.
pub(crate) fn lenient_timestamp<'de, D: Deserializer<'de>>(
    de: D,
) -> Result<Option<DateTime<Utc>>, D::Error> {
    let value = Option::<Value>::deserialize(de)?;
    Ok(value
        .as_ref()
        .and_then(Value::as_str)
        .and_then(parse_timestamp))
}

pub(crate) fn parse_timestamp(text: &str) -> Option<DateTime<Utc>> {
    if let Ok(time) = DateTime::parse_from_rfc3339(text) {
        return Some(time.with_timezone(&Utc));
    }
    NaiveDateTime::parse_from_str(text, "%Y-%m-%dT%H:%M:%S%.f")
        .ok()
        .map(|naive| naive.and_utc())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn send_body_omits_absent_fields() {
        let body = serde_json::to_value(SendBody::file_id("f-1", None)).unwrap();
        assert_eq!(body, json!({"fileId": "f-1"}));
        let body =
            serde_json::to_value(SendBody::file_url("https://x/y.pdf", Some("oi".into()))).unwrap();
        assert_eq!(body, json!({"fileUrl": "https://x/y.pdf", "text": "oi"}));
        assert_eq!(
            serde_json::to_value(SendBody::text("olá")).unwrap(),
            json!({"text": "olá"})
        );
    }

    #[test]
    fn async_answer_reads_failure_reason() {
        let sent = SentMessage::from_answer(json!({
            "id": "m-1", "createdAt": "2025-06-25T14:03:12.1234567Z", "sessionId": "s-1",
            "status": "FAILED", "failureReason": "window expired", "statusUrl": "x"
        }))
        .unwrap();
        assert_eq!(sent.id, "m-1");
        assert!(sent.failed());
        assert_eq!(sent.failure_reason.as_deref(), Some("window expired"));
    }

    #[test]
    fn sync_answer_reads_failed_reason_and_keeps_extra_fields() {
        let sent = SentMessage::from_answer(json!({
            "id": "m-2", "status": "SENT", "failedReason": null, "fileId": "f-1",
            "details": {"file": null}, "somethingNew": 1
        }))
        .unwrap();
        assert_eq!(sent.status, Some(MessageStatus::Sent));
        assert!(!sent.failed());
        assert_eq!(sent.failure_reason, None);
        assert_eq!(sent.raw["somethingNew"], 1);

        let failed =
            SentMessage::from_answer(json!({"id": "m-3", "status": "FAILED", "failedReason": "x"}))
                .unwrap();
        assert_eq!(failed.failure_reason.as_deref(), Some("x"));
    }

    #[test]
    fn unknown_status_is_kept_and_missing_id_is_refused() {
        let sent = SentMessage::from_answer(json!({"id": "m", "status": "SCHEDULED"})).unwrap();
        assert_eq!(sent.status, Some(MessageStatus::Other("SCHEDULED".into())));
        assert_eq!(sent.status.unwrap().as_str(), "SCHEDULED");
        assert!(SentMessage::from_answer(json!({"status": "SENT"})).is_none());
    }

    #[test]
    fn session_details_map_agent_contact_and_tags() {
        let dto: SessionDto = serde_json::from_value(json!({
            "id": "s-1", "userId": "u-9", "channelId": "c-1", "departmentId": "d-1",
            "status": "IN_PROGRESS", "windowStatus": "SOMETHING_NEW",
            "agentDetails": {"id": "a-1", "userId": "u-9", "name": "Ana", "email": "a@x"},
            "contactDetails": {"name": "Maria", "phonenumber": "+55|11999990000",
                "tagsId": ["t1"], "tagsName": ["vip", "lead"]}
        }))
        .unwrap();
        let session = SessionDetails::from(dto);
        assert_eq!(
            session.agent,
            Some(Agent {
                id: "u-9".into(),
                name: Some("Ana".into())
            })
        );
        assert_eq!(session.contact_phone.as_deref(), Some("+5511999990000"));
        assert_eq!(session.contact_tags, vec!["vip", "lead"]);
        assert_eq!(session.department_id.as_deref(), Some("d-1"));
    }

    #[test]
    fn session_without_agent_or_details() {
        let dto: SessionDto =
            serde_json::from_value(json!({"id": "s-2", "userId": null, "contactDetails": null}))
                .unwrap();
        let session = SessionDetails::from(dto);
        assert_eq!(session.agent, None);
        assert_eq!(session.contact_name, None);
        assert!(session.contact_tags.is_empty());
    }

    #[test]
    fn timestamps_parse_leniently() {
        let seven = parse_timestamp("2025-06-25T14:03:12.1234567Z").unwrap();
        assert_eq!(seven.timestamp_subsec_nanos(), 123_456_700);
        let naive = parse_timestamp("2025-06-25T14:03:12.1234567").unwrap();
        assert_eq!(naive, seven);
        assert!(parse_timestamp("2025-06-25T11:03:12-03:00").is_some());
        let message: SessionMessage = serde_json::from_value(json!({
            "id": "m", "createdAt": "yesterday", "type": "NEW_KIND", "status": "READ"
        }))
        .unwrap();
        assert_eq!(message.created_at, None);
        assert_eq!(message.message_type.as_deref(), Some("NEW_KIND"));
    }

    #[test]
    fn subscription_events_are_names_and_update_lists_fields() {
        let sub: WebhookSubscription = serde_json::from_value(json!({
            "id": "w-1", "name": "wtsbot", "url": "https://b/x", "enabled": false,
            "events": [{"event": "MESSAGE_RECEIVED", "description": "..."}, "SESSION_NEW"],
            "companyId": "c"
        }))
        .unwrap();
        assert_eq!(sub.events, vec!["MESSAGE_RECEIVED", "SESSION_NEW"]);
        assert!(!sub.enabled);

        let update = SubscriptionUpdate {
            events: Some(vec!["MESSAGE_RECEIVED".into()]),
            enabled: Some(true),
            ..Default::default()
        };
        assert_eq!(
            serde_json::to_value(update).unwrap(),
            json!({"fields": ["Events", "Enabled"], "events": ["MESSAGE_RECEIVED"], "enabled": true})
        );
    }
}
