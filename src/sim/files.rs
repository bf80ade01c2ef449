//! Uploads: the pre-signed v2 flow, the legacy v1 flow, and the S3-like PUT both share.

use std::sync::Arc;

use bytes::Bytes;
use hyper::{Method, Response, StatusCode, header};
use serde::Deserialize;
use serde_json::json;
use sha2::{Digest, Sha256};

use super::model::{SimUpload, UploadFlow, new_id};
use super::server::{Call, RouteResult};
use super::state::{PendingUpload, Shared, lock};
use super::wire::{COMPANY_ID, WtsError, file_dto, ok_json, query_one};

const FILE_TYPES: [&str; 8] = [
    "UNDEFINED",
    "PDF",
    "EXCEL",
    "WORD",
    "IMAGE",
    "AUDIO",
    "VIDEO",
    "DOCUMENT",
];

fn extension_of(name: &str) -> String {
    name.rsplit_once('.')
        .map(|(_, ext)| ext.to_ascii_lowercase())
        .unwrap_or_default()
}

/// The WTS file type a MIME type falls under.
fn file_type_for_mime(mime: &str) -> &'static str {
    match mime {
        "application/pdf" => "PDF",
        m if m.contains("spreadsheet") || m.contains("excel") || m == "text/csv" => "EXCEL",
        m if m.contains("word") => "WORD",
        m if m.starts_with("image/") => "IMAGE",
        m if m.starts_with("audio/") => "AUDIO",
        m if m.starts_with("video/") => "VIDEO",
        _ => "DOCUMENT",
    }
}

fn announce(
    shared: &Shared,
    flow: UploadFlow,
    name: &str,
    mime: &str,
    declared: &str,
) -> (String, String, String) {
    let temp_id = new_id();
    let signature = hex::encode(Sha256::digest(new_id().as_bytes()));
    let key = format!("{COMPANY_ID}/{temp_id}.{}", extension_of(name));
    let url = format!(
        "{}/_upload/{temp_id}?X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Expires=3600\
         &X-Amz-SignedHeaders=host&X-Amz-Signature={signature}",
        shared.base_url
    );
    lock(&shared.world).pending_uploads.insert(
        temp_id.clone(),
        PendingUpload {
            flow,
            name: name.to_owned(),
            mime_type: mime.to_owned(),
            declared_type: declared.to_owned(),
            signature,
            key: key.clone(),
            content: None,
            confirmed: false,
        },
    );
    (temp_id, url, key)
}

/// `GET /core/v2/file?Type=&Name=&MimeType=`.
pub(crate) fn request_upload_v2(shared: &Arc<Shared>, query: &[(String, String)]) -> RouteResult {
    let file_type = query_one(query, "Type")
        .map(str::to_ascii_uppercase)
        .filter(|t| FILE_TYPES.contains(&t.as_str()))
        .ok_or_else(|| WtsError::form(format!("Type deve ser um de {}", FILE_TYPES.join(", "))))?;
    let name = query_one(query, "Name")
        .filter(|n| !n.trim().is_empty())
        .ok_or_else(|| WtsError::form("Name é obrigatório"))?;
    let mime = query_one(query, "MimeType")
        .filter(|m| !m.trim().is_empty())
        .map(str::to_owned)
        .unwrap_or_else(|| {
            mime_guess::from_path(name)
                .first_or_octet_stream()
                .to_string()
        });
    let (temp_id, url, _) = announce(shared, UploadFlow::V2, name, &mime, &file_type);
    Ok(ok_json(&json!({"tempFileId": temp_id, "urlUpload": url})))
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ConfirmV2 {
    temp_file_id: Option<String>,
}

/// Turns an uploaded pending file into a confirmed one, once.
fn confirm(shared: &Shared, temp_id: &str, flow: UploadFlow) -> Result<SimUpload, WtsError> {
    let mut world = lock(&shared.world);
    let pending = world
        .pending_uploads
        .get_mut(temp_id)
        .filter(|p| p.flow == flow)
        .ok_or_else(|| WtsError::form("Arquivo temporário não encontrado"))?;
    if pending.confirmed {
        return Err(WtsError::form("Arquivo temporário já confirmado"));
    }
    let (bytes, put_content_type) = pending
        .content
        .clone()
        .ok_or_else(|| WtsError::form("O arquivo ainda não foi enviado"))?;
    pending.confirmed = true;
    let file_type = if pending.declared_type == "UNDEFINED" {
        let detected = infer::get(&bytes).map_or(pending.mime_type.as_str(), |t| t.mime_type());
        file_type_for_mime(detected).to_owned()
    } else {
        pending.declared_type.clone()
    };
    let file = SimUpload {
        id: new_id(),
        flow,
        extension: extension_of(&pending.name),
        name: pending.name.clone(),
        mime_type: pending.mime_type.clone(),
        file_type,
        key: pending.key.clone(),
        put_content_type,
        bytes,
    };
    world.insert_file(file.clone());
    Ok(file)
}

/// `POST /core/v2/file {tempFileId}` → `PublicFileV2DTO`.
pub(crate) fn confirm_v2(shared: &Arc<Shared>, body: &Bytes) -> RouteResult {
    let request: ConfirmV2 =
        serde_json::from_slice(body).map_err(|e| WtsError::form(format!("Corpo inválido: {e}")))?;
    let temp_id = request
        .temp_file_id
        .ok_or_else(|| WtsError::form("tempFileId é obrigatório"))?;
    let file = confirm(shared, &temp_id, UploadFlow::V2)?;
    Ok(ok_json(&file_dto(&file)))
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct UploadV1 {
    mime_type: Option<String>,
    name: Option<String>,
}

/// `POST /core/v1/file/upload {mimeType, name}` → `{urlUpload, keyS3}`.
pub(crate) fn request_upload_v1(shared: &Arc<Shared>, body: &Bytes) -> RouteResult {
    let request: UploadV1 =
        serde_json::from_slice(body).map_err(|e| WtsError::form(format!("Corpo inválido: {e}")))?;
    let (Some(mime), Some(name)) = (request.mime_type, request.name) else {
        return Err(WtsError::form("mimeType e name são obrigatórios"));
    };
    let (temp_id, url, key) = announce(shared, UploadFlow::V1, &name, &mime, "UNDEFINED");
    lock(&shared.world).v1_keys.insert(key.clone(), temp_id);
    Ok(ok_json(&json!({"urlUpload": url, "keyS3": key})))
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ConfirmV1 {
    key_s3: Option<String>,
}

/// `PUT /core/v1/file {name, keyS3, mimeType, generateThumb}` → the file, whose `id` is a fileId.
pub(crate) fn confirm_v1(shared: &Arc<Shared>, body: &Bytes) -> RouteResult {
    let request: ConfirmV1 =
        serde_json::from_slice(body).map_err(|e| WtsError::form(format!("Corpo inválido: {e}")))?;
    let key = request
        .key_s3
        .ok_or_else(|| WtsError::form("keyS3 é obrigatório"))?;
    let temp_id = lock(&shared.world)
        .v1_keys
        .get(&key)
        .cloned()
        .ok_or_else(|| WtsError::form("Arquivo temporário não encontrado"))?;
    let file = confirm(shared, &temp_id, UploadFlow::V1)?;
    let mut dto = file_dto(&file);
    dto["publicUrl"] = json!(format!("{}/_files/{}", shared.base_url, file.id));
    Ok(ok_json(&dto))
}

/// Routes that play S3: the pre-signed PUT and the public download of a confirmed file.
pub(crate) fn public_route(shared: &Arc<Shared>, call: &Call<'_>) -> RouteResult {
    match call.segments.as_slice() {
        ["_upload", temp_id] if call.method == Method::PUT => Ok(put_upload(shared, temp_id, call)),
        ["_files", file_id] if call.method == Method::GET => {
            let world = lock(&shared.world);
            let file = world.file(file_id).ok_or_else(WtsError::route_not_found)?;
            Ok(Response::builder()
                .header(header::CONTENT_TYPE, &file.mime_type)
                .body(http_body_util::Full::new(file.bytes.clone()))
                .expect("a stored MIME type is a valid header value"))
        }
        _ => Err(WtsError::route_not_found()),
    }
}

fn s3_error(status: StatusCode, code: &str, message: &str) -> super::wire::HttpResponse {
    let body = format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>{code}</Code>\
         <Message>{message}</Message><RequestId>{}</RequestId></Error>",
        new_id()
    );
    Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, "application/xml")
        .body(http_body_util::Full::new(Bytes::from(body)))
        .expect("static parts form a valid response")
}

/// The pre-signed PUT, checked the way S3 would.
fn put_upload(shared: &Shared, temp_id: &str, call: &Call<'_>) -> super::wire::HttpResponse {
    if call.headers.contains_key(header::AUTHORIZATION) {
        return s3_error(
            StatusCode::BAD_REQUEST,
            "InvalidArgument",
            "Only one auth mechanism allowed; only the X-Amz-Algorithm query parameter, \
             Signature query string parameter or the Authorization header should be specified",
        );
    }
    if !call.headers.contains_key(header::CONTENT_LENGTH) {
        return s3_error(
            StatusCode::LENGTH_REQUIRED,
            "MissingContentLength",
            "You must provide the Content-Length HTTP header.",
        );
    }
    let signature = query_one(&call.query, "X-Amz-Signature").unwrap_or_default();
    let mut world = lock(&shared.world);
    let Some(pending) = world
        .pending_uploads
        .get_mut(temp_id)
        .filter(|p| p.signature == signature)
    else {
        return s3_error(
            StatusCode::FORBIDDEN,
            "SignatureDoesNotMatch",
            "The request signature we calculated does not match the signature you provided.",
        );
    };
    let content_type = call
        .headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let etag = format!("\"{}\"", hex::encode(&Sha256::digest(call.body)[..16]));
    pending.content = Some((call.body.clone(), content_type));
    Response::builder()
        .header(header::ETAG, etag)
        .body(http_body_util::Full::new(Bytes::new()))
        .expect("static parts form a valid response")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mime_types_map_to_file_types() {
        assert_eq!(file_type_for_mime("application/pdf"), "PDF");
        assert_eq!(file_type_for_mime("image/png"), "IMAGE");
        assert_eq!(
            file_type_for_mime("application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"),
            "EXCEL"
        );
        assert_eq!(file_type_for_mime("application/msword"), "WORD");
        assert_eq!(file_type_for_mime("application/zip"), "DOCUMENT");
    }

    #[test]
    fn extensions_are_lower_case_and_may_be_missing() {
        assert_eq!(extension_of("Manual.PDF"), "pdf");
        assert_eq!(extension_of("README"), "");
    }
}
