//! The simulator's own rendering of WTS JSON: timestamps, the error envelope and the DTOs.
//! Deliberately independent of the client's types.

use bytes::Bytes;
use chrono::{DateTime, NaiveDateTime, Utc};
use http_body_util::Full;
use hyper::{Response, StatusCode, header};
use serde_json::{Value, json};

use super::model::{SimMessage, SimSession, SimSubscription, SimUpload, new_id};

pub type HttpResponse = Response<Full<Bytes>>;

/// The fixed company every simulated entity belongs to.
pub const COMPANY_ID: &str = "b7a3c1d2-4e5f-4a6b-8c7d-9e0f1a2b3c4d";

/// WTS timestamps: .NET style, seven fractional digits and `Z`.
pub fn wts_time(t: DateTime<Utc>) -> String {
    let ticks = (t.timestamp_subsec_nanos() / 100).min(9_999_999);
    format!("{}.{ticks:07}Z", t.format("%Y-%m-%dT%H:%M:%S"))
}

/// Parses a timestamp from a query: RFC 3339, or a naive date-time taken as UTC.
pub fn parse_time(text: &str) -> Option<DateTime<Utc>> {
    if let Ok(t) = DateTime::parse_from_rfc3339(text) {
        return Some(t.with_timezone(&Utc));
    }
    ["%Y-%m-%dT%H:%M:%S%.f", "%Y-%m-%d %H:%M:%S%.f", "%Y-%m-%d"]
        .iter()
        .find_map(|format| {
            NaiveDateTime::parse_from_str(text, format)
                .ok()
                .or_else(|| {
                    chrono::NaiveDate::parse_from_str(text, format)
                        .ok()
                        .and_then(|d| d.and_hms_opt(0, 0, 0))
                })
        })
        .map(|naive| naive.and_utc())
}

pub fn query_pairs(query: Option<&str>) -> Vec<(String, String)> {
    query
        .map(|q| {
            url::form_urlencoded::parse(q.as_bytes())
                .into_owned()
                .collect()
        })
        .unwrap_or_default()
}

/// Values of a query parameter whose name matches case-insensitively
/// (WTS documents PascalCase, clients send camelCase).
pub fn query_all<'a>(pairs: &'a [(String, String)], name: &str) -> Vec<&'a str> {
    pairs
        .iter()
        .filter(|(k, _)| k.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
        .collect()
}

pub fn query_one<'a>(pairs: &'a [(String, String)], name: &str) -> Option<&'a str> {
    query_all(pairs, name).into_iter().next()
}

/// A WTS error answer: an HTTP status and the envelope it carries.
#[derive(Debug, Clone, PartialEq)]
pub struct WtsError {
    pub status: StatusCode,
    /// Usually the numeric status; a string such as `"INTERNALSERVERERROR"` where WTS sends one.
    pub status_value: Value,
    pub key: &'static str,
    pub text: String,
    pub retry_after_secs: Option<u64>,
}

impl WtsError {
    pub fn new(status: StatusCode, key: &'static str, text: impl Into<String>) -> Self {
        WtsError {
            status,
            status_value: json!(status.as_u16()),
            key,
            text: text.into(),
            retry_after_secs: None,
        }
    }

    pub fn unauthorized() -> Self {
        Self::new(
            StatusCode::UNAUTHORIZED,
            "ERROR_UNAUTHORIZED",
            "Acesso negado",
        )
    }

    pub fn form(text: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "FORM_ERROR", text)
    }

    /// A missing entity, as WTS answers it: HTTP 500, `httpStatusCode` a string, `FORM_ERROR`.
    pub fn not_found(text: impl Into<String>) -> Self {
        WtsError {
            status_value: json!("INTERNALSERVERERROR"),
            ..Self::new(StatusCode::INTERNAL_SERVER_ERROR, "FORM_ERROR", text)
        }
    }

    pub fn route_not_found() -> Self {
        Self::new(StatusCode::NOT_FOUND, "NOT_FOUND", "Recurso não encontrado")
    }

    pub fn too_many_requests(retry_after_secs: Option<u64>) -> Self {
        WtsError {
            retry_after_secs,
            ..Self::new(
                StatusCode::TOO_MANY_REQUESTS,
                "TOO_MANY_REQUESTS",
                "Limite de requisições excedido",
            )
        }
    }

    pub fn envelope(&self) -> Value {
        let id = new_id();
        json!({
            "id": {"value": id, "shortValue": &id[..8]},
            "httpStatusCode": self.status_value,
            "version": null,
            "environment": null,
            "error": true,
            "date": wts_time(Utc::now()),
            "key": self.key,
            "text": self.text,
            "isUnsolvableError": false,
            "customData": null,
        })
    }

    pub fn into_response(self) -> HttpResponse {
        let mut response = json_response(self.status, &self.envelope());
        if let Some(secs) = self.retry_after_secs {
            response.headers_mut().insert(
                header::RETRY_AFTER,
                secs.to_string().parse().expect("digits"),
            );
        }
        response
    }
}

pub fn json_response(status: StatusCode, body: &Value) -> HttpResponse {
    let bytes = serde_json::to_vec(body).expect("a JSON value always serialises");
    Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, "application/json; charset=utf-8")
        .body(Full::new(Bytes::from(bytes)))
        .expect("static parts form a valid response")
}

pub fn ok_json(body: &Value) -> HttpResponse {
    json_response(StatusCode::OK, body)
}

pub fn empty_response(status: StatusCode) -> HttpResponse {
    Response::builder()
        .status(status)
        .body(Full::new(Bytes::new()))
        .expect("static parts form a valid response")
}

/// The full `PublicMessageDTO` (note `failedReason`).
pub fn message_dto(message: &SimMessage, base_url: &str) -> Value {
    let file = match (&message.file_id, &message.file_url) {
        (Some(id), _) => json!({"id": id, "publicUrl": format!("{base_url}/_files/{id}")}),
        (None, Some(url)) => json!({"id": null, "publicUrl": url}),
        (None, None) => Value::Null,
    };
    json!({
        "id": message.id,
        "createdAt": wts_time(message.created_at),
        "updatedAt": wts_time(message.updated_at),
        "editedAt": null,
        "timestamp": wts_time(message.created_at),
        "type": message.message_type,
        "active": true,
        "senderId": null,
        "sessionId": message.session_id,
        "templateId": message.template_id,
        "userId": null,
        "direction": "TO_HUB",
        "status": message.status,
        "origin": "API",
        "text": message.text,
        "fileId": message.file_id,
        "refId": message.ref_id,
        "readContactAt": null,
        "waitingOptIn": false,
        "details": {"file": file, "location": null, "contact": null, "errors": null, "transcription": null},
        "failedReason": message.failure_reason,
        "filesIds": message.file_id.iter().collect::<Vec<_>>(),
    })
}

/// `PublicQuickMessageDTO`, the answer of the asynchronous send (note `failureReason`).
pub fn quick_message_dto(message: &SimMessage, base_url: &str) -> Value {
    json!({
        "id": message.id,
        "createdAt": wts_time(message.created_at),
        "updatedAt": wts_time(message.updated_at),
        "sessionId": message.session_id,
        "senderId": null,
        "status": message.status,
        "statusUrl": format!("{base_url}/chat/v1/message/{}/status", message.id),
        "failureReason": message.failure_reason,
    })
}

pub fn message_status_dto(message: &SimMessage) -> Value {
    json!({
        "id": message.id,
        "createdAt": wts_time(message.created_at),
        "updatedAt": wts_time(message.updated_at),
        "sessionId": message.session_id,
        "status": message.status,
        "failureReason": message.failure_reason,
    })
}

/// Which `includeDetails` a session read asked for.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct SessionDetails {
    pub agent: bool,
    pub contact: bool,
    pub channel: bool,
    pub department: bool,
}

impl SessionDetails {
    pub fn from_values<'a>(values: impl IntoIterator<Item = &'a str>) -> Self {
        let mut details = SessionDetails::default();
        for value in values.into_iter().flat_map(|v| v.split(',')) {
            match value.trim().to_ascii_lowercase().as_str() {
                "agentdetails" => details.agent = true,
                "contactdetails" => details.contact = true,
                "channeldetails" | "channeltypedetails" => details.channel = true,
                "departmentsdetails" | "departmentdetails" => details.department = true,
                _ => {}
            }
        }
        details
    }
}

/// `PublicSessionDTO` (V2 adds `type`), with the requested details filled and the others null.
pub fn session_dto(session: &SimSession, details: SessionDetails, v2: bool) -> Value {
    let contact = &session.contact;
    let contact_details = details.contact.then(|| {
        json!({
            "id": contact.id,
            "name": contact.name,
            "pictureUrl": null,
            "phonenumber": contact.phonenumber,
            "instagram": null,
            "phonenumberFormatted": contact.phonenumber.replace('|', " "),
            "tagsId": contact.tags.iter().map(|t| &t.id).collect::<Vec<_>>(),
            "tagsName": contact.tags.iter().map(|t| &t.name).collect::<Vec<_>>(),
            "status": "ACTIVE",
        })
    });
    let agent_details = session
        .agent
        .as_ref()
        .filter(|_| details.agent)
        .map(|agent| {
            json!({
                "id": agent.id,
                "userId": agent.user_id,
                "name": agent.name,
                "shortName": agent.name.split_whitespace().next().unwrap_or_default(),
                "phoneNumber": null,
                "email": null,
                "pictureFileId": null,
                "pictureUrl": null,
            })
        });
    let channel_details = details.channel.then(|| {
        json!({
            "id": session.channel_id,
            "humanId": "5511999990000",
            "platform": "WHATSAPP",
            "provider": "CLOUDAPI",
            "providerVariable": null,
            "pictureUrl": null,
            "displayName": "Atendimento",
        })
    });
    let department_details = session
        .department
        .as_ref()
        .filter(|_| details.department)
        .map(|department| {
            json!({
                "id": department.id,
                "companyId": COMPANY_ID,
                "name": department.name,
                "description": null,
                "isDefault": false,
                "isSupervisor": false,
            })
        });
    let created = wts_time(session.created_at);
    let mut dto = json!({
        "id": session.id,
        "createdAt": created,
        "updatedAt": created,
        "startAt": created,
        "endAt": null,
        "status": session.status,
        "companyId": COMPANY_ID,
        "contactId": contact.id,
        "channelId": session.channel_id,
        "departmentId": session.department.as_ref().map(|d| &d.id),
        "userId": session.agent.as_ref().map(|a| &a.user_id),
        "previewUrl": null,
        "title": null,
        "number": null,
        "utm": null,
        "origin": null,
        "contactDetails": contact_details,
        "agentDetails": agent_details,
        "channelDetails": channel_details,
        "departmentDetails": department_details,
        "classification": null,
        "botId": null,
        "unreadCount": 0,
        "windowStatus": session.window_status,
        "metadata": null,
        "channelType": "CLOUDAPI_WHATSAPP",
    });
    if v2 {
        dto["type"] = json!("INDIVIDUAL");
    }
    dto
}

/// `PublicFileV2DTO`.
pub fn file_dto(file: &SimUpload) -> Value {
    json!({
        "id": file.id,
        "companyId": COMPANY_ID,
        "userId": null,
        "name": file.name,
        "extension": file.extension,
        "mimeType": file.mime_type,
        "type": file.file_type,
        "key": file.key,
        "size": file.bytes.len(),
    })
}

pub fn subscription_dto(subscription: &SimSubscription) -> Value {
    json!({
        "id": subscription.id,
        "createdAt": wts_time(subscription.created_at),
        "updatedAt": wts_time(subscription.updated_at),
        "companyId": COMPANY_ID,
        "name": subscription.name,
        "url": subscription.url,
        "enabled": subscription.enabled,
        "events": subscription.events.iter().map(|event| json!({
            "event": event,
            "description": super::webhooks::event_description(event).unwrap_or_default(),
        })).collect::<Vec<_>>(),
    })
}

/// The webhook envelope WTS posts: `{eventType, date, content, changeMetadata}`.
pub fn event_envelope(event_type: &str, content: Value) -> Value {
    json!({
        "eventType": event_type,
        "date": wts_time(Utc::now()),
        "content": content,
        "changeMetadata": null,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn timestamps_have_seven_fractional_digits_and_z() {
        let t = Utc.with_ymd_and_hms(2025, 7, 27, 23, 46, 0).unwrap()
            + chrono::Duration::nanoseconds(126_043_500);
        assert_eq!(wts_time(t), "2025-07-27T23:46:00.1260435Z");
        let whole = Utc.with_ymd_and_hms(2025, 1, 2, 3, 4, 5).unwrap();
        assert_eq!(wts_time(whole), "2025-01-02T03:04:05.0000000Z");
    }

    #[test]
    fn query_times_parse_in_utc() {
        let expected = Utc.with_ymd_and_hms(2025, 7, 27, 23, 46, 0).unwrap();
        assert_eq!(parse_time("2025-07-27T23:46:00Z"), Some(expected));
        assert_eq!(parse_time("2025-07-27T20:46:00-03:00"), Some(expected));
        assert_eq!(parse_time("2025-07-27T23:46:00"), Some(expected));
        assert_eq!(parse_time("2025-07-27T23:46:00.0000000Z"), Some(expected));
        assert!(parse_time("yesterday").is_none());
    }

    #[test]
    fn envelope_has_the_documented_shape() {
        let envelope = WtsError::unauthorized().envelope();
        assert_eq!(envelope["httpStatusCode"], 401);
        assert_eq!(envelope["key"], "ERROR_UNAUTHORIZED");
        assert_eq!(envelope["text"], "Acesso negado");
        assert_eq!(envelope["error"], true);
        let short = envelope["id"]["shortValue"].as_str().unwrap();
        assert_eq!(short.len(), 8);
        assert!(envelope["id"]["value"].as_str().unwrap().starts_with(short));
        let missing = WtsError::not_found("Sessão não encontrada");
        assert_eq!(missing.status, StatusCode::INTERNAL_SERVER_ERROR);
        assert_eq!(missing.envelope()["httpStatusCode"], "INTERNALSERVERERROR");
    }

    #[test]
    fn query_names_match_in_either_case() {
        let pairs = query_pairs(Some(
            "PageNumber=2&pageSize=10&CreatedAt.After=2025-01-01T00%3A00%3A00Z",
        ));
        assert_eq!(query_one(&pairs, "pagenumber"), Some("2"));
        assert_eq!(query_one(&pairs, "PageSize"), Some("10"));
        assert_eq!(
            query_one(&pairs, "createdAt.after"),
            Some("2025-01-01T00:00:00Z")
        );
    }

    #[test]
    fn details_are_parsed_from_repeated_or_joined_values() {
        let details =
            SessionDetails::from_values(["AgentDetails", "ContactDetails,DepartmentsDetails"]);
        assert!(details.agent && details.contact && details.department && !details.channel);
    }
}
