//! Sessions and messages: read a session, send in it, list and read messages.

use std::sync::Arc;

use bytes::Bytes;
use chrono::{DateTime, Utc};
use serde::Deserialize;
use serde_json::{Value, json};

use super::model::{SimMessage, new_id};
use super::server::RouteResult;
use super::state::{Shared, World, lock};
use super::webhooks;
use super::wire::{
    SessionDetails, WtsError, message_dto, message_status_dto, ok_json, parse_time, query_all,
    query_one, quick_message_dto, session_dto,
};

const SESSION_NOT_FOUND: &str = "Sessão não encontrada";
const MAX_PAGE_SIZE: usize = 100;
const DEFAULT_PAGE_SIZE: usize = 15;

pub(crate) fn get_session(
    shared: &Arc<Shared>,
    id: &str,
    query: &[(String, String)],
    v2: bool,
) -> RouteResult {
    let details = SessionDetails::from_values(query_all(query, "includeDetails"));
    let mut world = lock(&shared.world);
    let session = world
        .session(id, shared.auto_sessions)
        .ok_or_else(|| WtsError::not_found(SESSION_NOT_FOUND))?;
    Ok(ok_json(&session_dto(session, details, v2)))
}

/// `PublicQuickSendBodyDTO`; every field optional, explicit nulls accepted.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct SendBody {
    text: Option<String>,
    file_url: Option<String>,
    file_id: Option<String>,
    template_id: Option<String>,
    #[allow(dead_code)] // accepted like WTS does; templates are not rendered
    parameters: Option<Value>,
    ref_id: Option<String>,
}

fn non_empty(value: Option<String>) -> Option<String> {
    value.filter(|v| !v.trim().is_empty())
}

fn parse_send_body(body: &Bytes) -> Result<SendBody, WtsError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Err(WtsError::form("O corpo da requisição é obrigatório"));
    }
    let parsed: SendBody =
        serde_json::from_slice(body).map_err(|e| WtsError::form(format!("Corpo inválido: {e}")))?;
    let parsed = SendBody {
        text: non_empty(parsed.text),
        file_url: non_empty(parsed.file_url),
        file_id: non_empty(parsed.file_id),
        template_id: non_empty(parsed.template_id),
        ..parsed
    };
    if parsed.text.is_none()
        && parsed.file_url.is_none()
        && parsed.file_id.is_none()
        && parsed.template_id.is_none()
    {
        return Err(WtsError::form(
            "Informe ao menos um dos campos: text, fileUrl, fileId ou templateId",
        ));
    }
    Ok(parsed)
}

/// The WTS message `type` of a file, from its upload type or MIME type.
fn message_type_for(file_type: Option<&str>, mime_type: &str) -> &'static str {
    match (file_type, mime_type.split('/').next()) {
        (Some("IMAGE"), _) | (_, Some("image")) => "IMAGE",
        (Some("VIDEO"), _) | (_, Some("video")) => "VIDEO",
        (Some("AUDIO"), _) | (_, Some("audio")) => "AUDIO",
        _ => "DOCUMENT",
    }
}

pub(crate) fn send(
    shared: &Arc<Shared>,
    session_id: &str,
    sync: bool,
    body: &Bytes,
) -> RouteResult {
    let request = parse_send_body(body)?;
    let message = {
        let mut world = lock(&shared.world);
        let channel_failure = world
            .session(session_id, shared.auto_sessions)
            .ok_or_else(|| WtsError::not_found(SESSION_NOT_FOUND))?
            .channel_failure
            .clone();
        let message_type = match (&request.file_id, &request.file_url) {
            (Some(file_id), _) => {
                let file = world
                    .file(file_id)
                    .ok_or_else(|| WtsError::form("Arquivo não encontrado"))?;
                message_type_for(Some(&file.file_type), &file.mime_type)
            }
            (None, Some(url)) => {
                let path = url.split(['?', '#']).next().unwrap_or_default();
                let mime = mime_guess::from_path(path).first_or_octet_stream();
                message_type_for(None, mime.essence_str())
            }
            (None, None) => "TEXT",
        };
        let now = Utc::now();
        let (status, failure_reason) = match channel_failure {
            Some(reason) => ("FAILED", Some(reason)),
            None if sync => ("SENT", None),
            None => ("QUEUED", None),
        };
        let message = SimMessage {
            id: new_id(),
            session_id: session_id.to_owned(),
            created_at: now,
            updated_at: now,
            message_type: message_type.to_owned(),
            text: request.text,
            file_id: request.file_id,
            file_url: request.file_url,
            template_id: request.template_id,
            ref_id: request.ref_id,
            sync,
            status: status.to_owned(),
            failure_reason,
        };
        world.insert_message(message.clone());
        message
    };
    webhooks::spawn_echo(shared, message.id.clone());
    let answer = if sync {
        message_dto(&message, &shared.base_url)
    } else {
        quick_message_dto(&message, &shared.base_url)
    };
    Ok(ok_json(&answer))
}

/// Pagination and date filters of a message listing.
#[derive(Debug, PartialEq)]
struct MessageQuery {
    page_number: usize,
    page_size: usize,
    descending: bool,
    created_after: Option<DateTime<Utc>>,
    created_before: Option<DateTime<Utc>>,
}

fn parse_message_query(query: &[(String, String)]) -> Result<MessageQuery, WtsError> {
    let number = |name: &str, default: usize| -> Result<usize, WtsError> {
        query_one(query, name).map_or(Ok(default), |v| {
            v.trim()
                .parse()
                .map_err(|_| WtsError::form(format!("{name} inválido: {v}")))
        })
    };
    let time = |name: &str| -> Result<Option<DateTime<Utc>>, WtsError> {
        query_one(query, name)
            .map(|v| parse_time(v).ok_or_else(|| WtsError::form(format!("{name} inválido: {v}"))))
            .transpose()
    };
    let page_number = number("pageNumber", 1)?;
    let page_size = number("pageSize", DEFAULT_PAGE_SIZE)?;
    if page_number < 1 {
        return Err(WtsError::form("pageNumber deve ser maior que zero"));
    }
    if !(1..=MAX_PAGE_SIZE).contains(&page_size) {
        return Err(WtsError::form(format!(
            "pageSize deve estar entre 1 e {MAX_PAGE_SIZE}"
        )));
    }
    let descending =
        query_one(query, "orderDirection").is_some_and(|d| d.eq_ignore_ascii_case("DESCENDING"));
    Ok(MessageQuery {
        page_number,
        page_size,
        descending,
        created_after: time("CreatedAt.After")?,
        created_before: time("CreatedAt.Before")?,
    })
}

/// `CreatedAt.After` is inclusive, `CreatedAt.Before` exclusive.
fn page_of_messages(
    world: &World,
    session_id: &str,
    query: &MessageQuery,
    base_url: &str,
) -> Value {
    let mut matching: Vec<&SimMessage> = world
        .session_messages(session_id)
        .filter(|m| {
            query
                .created_after
                .is_none_or(|after| m.created_at >= after)
        })
        .filter(|m| {
            query
                .created_before
                .is_none_or(|before| m.created_at < before)
        })
        .collect();
    if query.descending {
        matching.reverse();
    }
    let total_items = matching.len();
    let total_pages = total_items.div_ceil(query.page_size);
    let items: Vec<Value> = matching
        .into_iter()
        .skip((query.page_number - 1) * query.page_size)
        .take(query.page_size)
        .map(|m| message_dto(m, base_url))
        .collect();
    json!({
        "pageNumber": query.page_number,
        "pageSize": query.page_size,
        "orderBy": "CreatedAt",
        "orderDirection": if query.descending { "DESCENDING" } else { "ASCENDING" },
        "totalPages": total_pages,
        "totalItems": total_items,
        "hasMorePages": query.page_number < total_pages,
        "items": items,
    })
}

pub(crate) fn list_messages(
    shared: &Arc<Shared>,
    session_id: &str,
    query: &[(String, String)],
) -> RouteResult {
    let query = parse_message_query(query)?;
    let mut world = lock(&shared.world);
    world
        .session(session_id, shared.auto_sessions)
        .ok_or_else(|| WtsError::not_found(SESSION_NOT_FOUND))?;
    Ok(ok_json(&page_of_messages(
        &world,
        session_id,
        &query,
        &shared.base_url,
    )))
}

const MESSAGE_NOT_FOUND: &str = "Mensagem não encontrada";

pub(crate) fn get_message(shared: &Arc<Shared>, id: &str) -> RouteResult {
    let world = lock(&shared.world);
    let message = world
        .message(id)
        .ok_or_else(|| WtsError::not_found(MESSAGE_NOT_FOUND))?;
    Ok(ok_json(&message_dto(message, &shared.base_url)))
}

pub(crate) fn get_message_status(shared: &Arc<Shared>, id: &str) -> RouteResult {
    let world = lock(&shared.world);
    let message = world
        .message(id)
        .ok_or_else(|| WtsError::not_found(MESSAGE_NOT_FOUND))?;
    Ok(ok_json(&message_status_dto(message)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sim::wire::query_pairs;

    #[test]
    fn send_bodies_need_some_content() {
        assert!(parse_send_body(&Bytes::new()).is_err());
        assert!(parse_send_body(&Bytes::from_static(b"{}")).is_err());
        assert!(parse_send_body(&Bytes::from_static(b"{\"text\":\"  \"}")).is_err());
        assert!(parse_send_body(&Bytes::from_static(b"[1]")).is_err());
        let file = parse_send_body(&Bytes::from_static(
            b"{\"fileUrl\":null,\"fileId\":\"f-1\",\"text\":null}",
        ))
        .unwrap();
        assert_eq!(file.file_id.as_deref(), Some("f-1"));
        assert!(file.text.is_none());
    }

    #[test]
    fn files_map_to_message_types() {
        assert_eq!(
            message_type_for(Some("IMAGE"), "application/octet-stream"),
            "IMAGE"
        );
        assert_eq!(message_type_for(Some("PDF"), "application/pdf"), "DOCUMENT");
        assert_eq!(message_type_for(None, "image/png"), "IMAGE");
        assert_eq!(message_type_for(None, "video/mp4"), "VIDEO");
    }

    #[test]
    fn message_queries_validate_pages() {
        let q = |s: &str| parse_message_query(&query_pairs(Some(s)));
        let parsed = q("PageNumber=2&pageSize=100&orderDirection=DESCENDING").unwrap();
        assert_eq!((parsed.page_number, parsed.page_size), (2, 100));
        assert!(parsed.descending);
        assert!(q("pageSize=101").is_err());
        assert!(q("pageNumber=0").is_err());
        assert!(q("createdAt.after=soon").is_err());
        assert_eq!(q("").unwrap().page_size, DEFAULT_PAGE_SIZE);
    }
}
