//! `POST/GET /api/v1/files`, `GET/DELETE /api/v1/files/{name}`: the files replies send.
//!
//! Uploads share one namespace with the assets of `rules.dir` (`files/manual.pdf`). The
//! content decides the type, never the declared Content-Type; the bytes are stored once
//! per sha256, so the WTS `fileId` cache (keyed by sha256) serves uploads and rule files
//! alike.

use actix_multipart::{Field, Multipart, MultipartError};
use actix_web::{HttpResponse, web};
use chrono::{DateTime, Utc};
use futures::StreamExt;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use utoipa::ToSchema;

use super::auth::{Caller, Role};
use super::time;
use crate::config::Settings;
use crate::error::{AppError, ErrorBody, FieldError};
use crate::store::admin::{AssetRow, NewAsset};
use crate::store::{Store, now_ms};

const MAX_NAME_LEN: usize = 200;
/// The longest `name` form field read.
const MAX_NAME_FIELD: usize = 1024;

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/files", web::get().to(list_files))
        .route("/files", web::post().to(upload_file))
        .route("/files/{name:.+}", web::get().to(get_file))
        .route("/files/{name:.+}", web::delete().to(delete_file));
}

/// A stored file.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct FileView {
    /// The name rules use in `file`: `files/manual.pdf`.
    pub name: String,
    /// Lower-case hex sha256 of the content.
    pub sha256: String,
    pub size: i64,
    /// The type sniffed from the content.
    pub mime: String,
    /// `upload` (through this API) or `rules` (a file under `rules.dir`, read-only here).
    pub source: String,
    pub created_at: DateTime<Utc>,
    /// Ids of the rules that send it.
    pub used_by: Vec<String>,
}

/// The multipart form of an upload.
#[derive(Debug, ToSchema)]
#[allow(
    dead_code,
    reason = "describes the multipart form in the OpenAPI document"
)]
pub struct UploadForm {
    /// The asset name rules will use (`files/price-list.pdf`); defaults to the file name.
    name: Option<String>,
    /// The content.
    #[schema(value_type = String, format = Binary)]
    file: Vec<u8>,
}

/// The accepted types, as sniffed from the content.
const ALLOWED_TYPES: &[&str] = &[
    "application/pdf",
    "image/png",
    "image/jpeg",
    "image/gif",
    "image/webp",
    "video/mp4",
    "audio/mpeg",
    "audio/ogg",
    "audio/opus",
    "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
    "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
];

/// The type of `bytes`, from their content; text types (which have no signature) from the
/// name's extension once the content is known to be text. `None`: not accepted.
pub fn sniff_type(name: &str, bytes: &[u8]) -> Option<&'static str> {
    if let Some(kind) = infer::get(bytes) {
        return ALLOWED_TYPES
            .iter()
            .find(|allowed| **allowed == kind.mime_type())
            .copied();
    }
    let is_text = !bytes.is_empty() && !bytes.contains(&0) && std::str::from_utf8(bytes).is_ok();
    let extension = name
        .rsplit_once('.')
        .map(|(_, ext)| ext.to_ascii_lowercase());
    match (is_text, extension.as_deref()) {
        (true, Some("csv")) => Some("text/csv"),
        (true, Some("txt")) => Some("text/plain"),
        _ => None,
    }
}

/// Why an asset name is refused, if it is.
pub fn invalid_name(name: &str) -> Option<String> {
    if name.is_empty() || name.len() > MAX_NAME_LEN {
        return Some(format!("must be 1 to {MAX_NAME_LEN} characters"));
    }
    if name.contains('\\') || name.chars().any(char::is_control) {
        return Some("must not contain backslashes or control characters".into());
    }
    let bad_segment = name
        .split('/')
        .any(|segment| segment.is_empty() || segment.starts_with('.'));
    bad_segment.then(|| {
        "must be a relative path of /-separated names, none empty or starting with '.'".into()
    })
}

async fn views(store: &Store, assets: Vec<AssetRow>) -> Result<Vec<FileView>, AppError> {
    let rules = store.list_rules().await?;
    let users = |name: &str| -> Vec<String> {
        rules
            .iter()
            .filter(|row| {
                row.rule()
                    .is_ok_and(|rule| rule.replies.iter().any(|r| r.file.as_deref() == Some(name)))
            })
            .map(|row| row.id.clone())
            .collect()
    };
    Ok(assets
        .into_iter()
        .map(|asset| FileView {
            used_by: users(&asset.name),
            name: asset.name,
            sha256: asset.sha256,
            size: asset.size,
            mime: asset.mime,
            source: asset.source,
            created_at: time(asset.created_at),
        })
        .collect())
}

#[utoipa::path(
    get, path = "/api/v1/files", tag = "files",
    responses(
        (status = 200, description = "Every file, uploaded or from rules.dir", body = Vec<FileView>),
        (status = 401, description = "No valid token", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
pub async fn list_files(caller: Caller, store: web::Data<Store>) -> Result<HttpResponse, AppError> {
    caller.require(Role::Viewer)?;
    let assets = store.list_assets().await?;
    Ok(HttpResponse::Ok().json(views(&store, assets).await?))
}

#[utoipa::path(
    get, path = "/api/v1/files/{name}", tag = "files",
    params(("name" = String, Path, description = "The file's name, slashes included")),
    responses(
        (status = 200, description = "The file", body = FileView),
        (status = 401, description = "No valid token", body = ErrorBody),
        (status = 404, description = "No such file", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
pub async fn get_file(
    caller: Caller,
    store: web::Data<Store>,
    name: web::Path<String>,
) -> Result<HttpResponse, AppError> {
    caller.require(Role::Viewer)?;
    let asset = store
        .find_asset(&name)
        .await?
        .ok_or_else(|| AppError::not_found(format!("file \"{name}\"")))?;
    let view = views(&store, vec![asset]).await?.remove(0);
    Ok(HttpResponse::Ok().json(view))
}

#[utoipa::path(
    post, path = "/api/v1/files", tag = "files",
    request_body(content = UploadForm, content_type = "multipart/form-data"),
    responses(
        (status = 201, description = "Stored", body = FileView),
        (status = 400, description = "Not a readable multipart form, or no `file` part", body = ErrorBody),
        (status = 401, description = "No valid token", body = ErrorBody),
        (status = 403, description = "Viewers may not upload", body = ErrorBody),
        (status = 409, description = "The name is taken", body = ErrorBody),
        (status = 413, description = "Larger than files.max_size", body = ErrorBody),
        (status = 415, description = "Not multipart, or a type that is not accepted", body = ErrorBody),
        (status = 422, description = "Invalid name", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
pub async fn upload_file(
    caller: Caller,
    store: web::Data<Store>,
    settings: web::Data<Settings>,
    mut form: Multipart,
) -> Result<HttpResponse, AppError> {
    caller.require(Role::Editor)?;
    let max_size = usize::try_from(settings.files.max_size.as_u64()).unwrap_or(usize::MAX);
    let mut name: Option<String> = None;
    let mut file: Option<(Option<String>, Vec<u8>)> = None;
    while let Some(field) = form.next().await {
        let field = field.map_err(multipart_error)?;
        match field.name() {
            Some("name") => {
                let bytes = read_field(field, MAX_NAME_FIELD, "the name field").await?;
                let text = String::from_utf8(bytes).map_err(|_| {
                    AppError::Validation(vec![FieldError::new("name", "must be UTF-8 text")])
                })?;
                name = Some(text.trim().to_string());
            }
            Some("file") => {
                let filename = field
                    .content_disposition()
                    .and_then(|d| d.get_filename())
                    .map(str::to_string);
                let bytes = read_field(
                    field,
                    max_size,
                    &format!("the file (limit {})", settings.files.max_size),
                )
                .await?;
                file = Some((filename, bytes));
            }
            // Unknown parts are drained and ignored.
            _ => drop(read_field(field, max_size, "a form part").await?),
        }
    }
    let (filename, bytes) =
        file.ok_or_else(|| AppError::BadRequest("the form has no `file` part".into()))?;
    let name = name
        .filter(|n| !n.is_empty())
        .or(filename)
        .unwrap_or_default();
    if let Some(problem) = invalid_name(&name) {
        return Err(AppError::Validation(vec![FieldError::new("name", problem)]));
    }
    let mime = sniff_type(&name, &bytes).ok_or_else(|| {
        AppError::UnsupportedMediaType(
            "accepted: pdf, png, jpeg, gif, webp, mp4, mp3, ogg, docx, xlsx, csv and txt \
             (the content decides, not the declared type)"
                .into(),
        )
    })?;
    let sha256 = hex::encode(Sha256::digest(&bytes));
    let asset = NewAsset {
        name: &name,
        sha256: &sha256,
        mime,
        bytes: &bytes,
        now: now_ms(),
    };
    let Some(row) = store.insert_uploaded_asset(&asset).await? else {
        return Err(AppError::Conflict(format!(
            "a file named \"{name}\" already exists; delete it first or choose another name"
        )));
    };
    tracing::info!(name, sha256, size = bytes.len(), mime, by = %caller.name, "file uploaded");
    let view = views(&store, vec![row]).await?.remove(0);
    Ok(HttpResponse::Created().json(view))
}

#[utoipa::path(
    delete, path = "/api/v1/files/{name}", tag = "files",
    params(("name" = String, Path, description = "The file's name, slashes included")),
    responses(
        (status = 204, description = "Deleted"),
        (status = 401, description = "No valid token", body = ErrorBody),
        (status = 403, description = "Viewers may not delete", body = ErrorBody),
        (status = 404, description = "No such file", body = ErrorBody),
        (status = 409, description = "A rule uses it, or it comes from rules.dir", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
pub async fn delete_file(
    caller: Caller,
    store: web::Data<Store>,
    settings: web::Data<Settings>,
    name: web::Path<String>,
) -> Result<HttpResponse, AppError> {
    caller.require(Role::Editor)?;
    let asset = store
        .find_asset(&name)
        .await?
        .ok_or_else(|| AppError::not_found(format!("file \"{name}\"")))?;
    if asset.source != "upload" {
        return Err(AppError::Conflict(format!(
            "\"{name}\" comes from the rules directory: delete {} instead",
            settings.rules.dir.join(name.as_str()).display()
        )));
    }
    let view = views(&store, vec![asset]).await?.remove(0);
    if !view.used_by.is_empty() {
        return Err(AppError::Conflict(format!(
            "\"{name}\" is used by the rules {}; change them first",
            view.used_by.join(", ")
        )));
    }
    if !store.delete_uploaded_asset(&name).await? {
        return Err(AppError::not_found(format!("file \"{name}\"")));
    }
    tracing::info!(name = %name, by = %caller.name, "file deleted");
    Ok(HttpResponse::NoContent().finish())
}

/// The whole part, or 413 once it passes `limit` bytes.
async fn read_field(mut field: Field, limit: usize, what: &str) -> Result<Vec<u8>, AppError> {
    let mut bytes = Vec::new();
    while let Some(chunk) = field.next().await {
        let chunk = chunk.map_err(multipart_error)?;
        if bytes.len() + chunk.len() > limit {
            return Err(AppError::PayloadTooLarge(format!("{what} is too large")));
        }
        bytes.extend_from_slice(&chunk);
    }
    Ok(bytes)
}

fn multipart_error(err: MultipartError) -> AppError {
    match err {
        MultipartError::ContentTypeMissing
        | MultipartError::ContentTypeParse
        | MultipartError::ContentTypeIncompatible => {
            AppError::UnsupportedMediaType("the body must be multipart/form-data".into())
        }
        other => AppError::BadRequest(format!("cannot read the multipart form: {other}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_content_decides_the_type() {
        assert_eq!(
            sniff_type("a.pdf", b"%PDF-1.7\nmanual"),
            Some("application/pdf")
        );
        assert_eq!(
            sniff_type("a.txt", b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR"),
            Some("image/png")
        );
        // A PDF name on an executable is still an executable.
        assert_eq!(sniff_type("a.pdf", b"MZ\x90\0\x03\0\0\0"), None);
        assert_eq!(
            sniff_type("prices.csv", b"item;price\nA;1"),
            Some("text/csv")
        );
        assert_eq!(
            sniff_type("notes.txt", "olá".as_bytes()),
            Some("text/plain")
        );
        assert_eq!(sniff_type("notes.md", b"# title"), None);
        assert_eq!(sniff_type("bin.txt", b"a\0b"), None);
    }

    #[test]
    fn names_are_relative_paths() {
        for good in ["manual.pdf", "files/manual.pdf", "a/b/c d.png"] {
            assert_eq!(invalid_name(good), None, "{good}");
        }
        for bad in [
            "",
            "/etc/passwd",
            "files//a.pdf",
            "../a.pdf",
            "files/.hidden",
            "a\\b.pdf",
            "a\nb",
        ] {
            assert!(invalid_name(bad).is_some(), "{bad:?}");
        }
        assert!(invalid_name(&"a".repeat(201)).is_some());
    }
}
