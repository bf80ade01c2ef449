//! Uploading a binary to get a reusable `fileId`: the documented v2 pre-signed flow.
//! `GET /core/v2/file` names the file and gets an upload URL, the bytes go to that URL
//! with a plain `PUT` (no Authorization: it is a pre-signed storage URL), and
//! `POST /core/v2/file` confirms the upload and answers the file's `id`.

use std::path::{Path, PathBuf};
use std::time::Duration;

use bytes::Bytes;
use reqwest::header::{CONTENT_LENGTH, CONTENT_TYPE};
use reqwest::{Body, Method};
use tokio::io::{AsyncReadExt, AsyncSeekExt};
use tokio_util::io::ReaderStream;

use super::WtsError;
use super::client::WtsClient;
use super::dto::{ConfirmUpload, FileType, UploadTicket, UploadedFile};

/// Bytes read from the start of a file to recognise its type.
const SNIFF_LEN: usize = 8192;
/// The upload may take longer than `wts.timeout` by the time this throughput (bytes per
/// second) needs for the file, so a large file on a slow link is not cut off.
const SLOWEST_UPLOAD_BYTES_PER_SEC: f64 = 512.0 * 1024.0;

/// What to upload.
#[derive(Debug, Clone)]
pub enum UploadSource {
    /// A file on disk, streamed; `name` overrides the file's own name.
    File { path: PathBuf, name: Option<String> },
    /// Bytes already in memory (standard input, decoded base64); without a name, one is
    /// made from the detected type (`file.pdf`).
    Memory { data: Bytes, name: Option<String> },
}

impl UploadSource {
    pub fn file(path: impl Into<PathBuf>) -> Self {
        UploadSource::File {
            path: path.into(),
            name: None,
        }
    }

    pub fn memory(data: impl Into<Bytes>, name: Option<String>) -> Self {
        UploadSource::Memory {
            data: data.into(),
            name,
        }
    }
}

/// What WTS is told about the file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileFacts {
    pub name: String,
    pub mime_type: String,
    pub file_type: FileType,
    pub len: u64,
}

impl FileFacts {
    /// Facts from the file's first bytes and its name (if any): the MIME type is
    /// sniffed from the content, then guessed from the extension.
    pub fn detect(head: &[u8], name: Option<&str>, len: u64) -> Self {
        let sniffed = infer::get(head);
        let mime_type = mime_type_of(sniffed.map(|kind| kind.mime_type()), name);
        let name = match name {
            Some(name) => name.to_string(),
            None => {
                let extension = sniffed.map_or("bin", |kind| kind.extension());
                format!("file.{extension}")
            }
        };
        Self {
            file_type: file_type_of(&mime_type),
            name,
            mime_type,
            len,
        }
    }
}

/// The sniffed type wins, except a generic container (a zip or OLE file) when the
/// extension says which document it is (`.xlsx`, `.doc`).
fn mime_type_of(sniffed: Option<&str>, name: Option<&str>) -> String {
    let guessed = name.and_then(|name| mime_guess::from_path(name).first_raw());
    let generic = |mime: &str| {
        matches!(
            mime,
            "application/zip" | "application/x-ole-storage" | "application/x-cfb"
        )
    };
    match (sniffed, guessed) {
        (Some(sniffed), Some(guessed)) if generic(sniffed) => guessed,
        (Some(sniffed), _) => sniffed,
        (None, Some(guessed)) => guessed,
        (None, None) => "application/octet-stream",
    }
    .to_string()
}

fn file_type_of(mime_type: &str) -> FileType {
    match mime_type {
        "application/pdf" => FileType::Pdf,
        "application/vnd.ms-excel"
        | "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"
        | "application/vnd.oasis.opendocument.spreadsheet"
        | "text/csv" => FileType::Excel,
        "application/msword"
        | "application/vnd.openxmlformats-officedocument.wordprocessingml.document"
        | "application/vnd.oasis.opendocument.text"
        | "application/rtf" => FileType::Word,
        _ if mime_type.starts_with("image/") => FileType::Image,
        _ if mime_type.starts_with("video/") => FileType::Video,
        _ if mime_type.starts_with("audio/") => FileType::Audio,
        _ => FileType::Document,
    }
}

impl WtsClient {
    /// Uploads a file and answers its reusable `fileId` (`UploadedFile::id`). A file on
    /// disk is streamed, never held in memory whole.
    #[tracing::instrument(skip_all, fields(name, size))]
    pub async fn upload(&self, source: &UploadSource) -> Result<UploadedFile, WtsError> {
        let (facts, body) = match source {
            UploadSource::File { path, name } => open_file(path, name.as_deref()).await?,
            UploadSource::Memory { data, name } => {
                let head = &data[..data.len().min(SNIFF_LEN)];
                let facts = FileFacts::detect(head, name.as_deref(), data.len() as u64);
                (facts, Body::from(data.clone()))
            }
        };
        let span = tracing::Span::current();
        span.record("name", facts.name.as_str());
        span.record("size", facts.len);
        let ticket = self.request_upload(&facts).await?;
        self.put_upload(&ticket, &facts, body).await?;
        let file = self.confirm_upload(&ticket.temp_file_id).await?;
        tracing::info!(file_id = %file.id, "file uploaded");
        Ok(file)
    }

    /// `GET /core/v2/file`: announces the file, answers where to put it.
    async fn request_upload(&self, facts: &FileFacts) -> Result<UploadTicket, WtsError> {
        let request = self.authed(Method::GET, &["core", "v2", "file"]).query(&[
            ("Type", facts.file_type.as_str()),
            ("Name", facts.name.as_str()),
            ("MimeType", facts.mime_type.as_str()),
        ]);
        let response = self.execute("GET /core/v2/file", request).await?;
        super::client::read_json(response).await
    }

    /// `PUT <urlUpload>`: the raw bytes, with their type and exact length, unauthenticated.
    async fn put_upload(
        &self,
        ticket: &UploadTicket,
        facts: &FileFacts,
        body: Body,
    ) -> Result<(), WtsError> {
        let transfer = Duration::from_secs_f64(facts.len as f64 / SLOWEST_UPLOAD_BYTES_PER_SEC);
        let request = self
            .http
            .put(&ticket.url_upload)
            .header(CONTENT_TYPE, &facts.mime_type)
            .header(CONTENT_LENGTH, facts.len)
            .timeout(self.timeout + transfer)
            .body(body);
        self.execute("PUT {urlUpload}", request).await?;
        Ok(())
    }

    /// `POST /core/v2/file`: makes the temporary upload a file.
    async fn confirm_upload(&self, temp_file_id: &str) -> Result<UploadedFile, WtsError> {
        let request = self
            .authed(Method::POST, &["core", "v2", "file"])
            .json(&ConfirmUpload { temp_file_id });
        let response = self.execute("POST /core/v2/file", request).await?;
        super::client::read_json(response).await
    }
}

/// Opens a file for streaming: its facts from the metadata and first bytes, and a body
/// that reads it from the start.
async fn open_file(path: &Path, name: Option<&str>) -> Result<(FileFacts, Body), WtsError> {
    let file_error = |reason| WtsError::File {
        path: path.display().to_string(),
        reason,
    };
    let mut file = tokio::fs::File::open(path).await.map_err(file_error)?;
    let metadata = file.metadata().await.map_err(file_error)?;
    if !metadata.is_file() {
        return Err(file_error(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            "not a regular file",
        )));
    }
    let mut head = Vec::with_capacity(SNIFF_LEN);
    (&mut file)
        .take(SNIFF_LEN as u64)
        .read_to_end(&mut head)
        .await
        .map_err(file_error)?;
    file.rewind().await.map_err(file_error)?;
    let name = name
        .map(str::to_string)
        .or_else(|| path.file_name().map(|n| n.to_string_lossy().into_owned()));
    let facts = FileFacts::detect(&head, name.as_deref(), metadata.len());
    Ok((facts, Body::wrap_stream(ReaderStream::new(file))))
}

#[cfg(test)]
mod tests {
    use super::*;

    const PDF: &[u8] = b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n1 0 obj\n";
    const PNG: &[u8] = b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR";

    #[test]
    fn content_decides_over_a_wrong_extension() {
        let facts = FileFacts::detect(PDF, Some("manual.bin"), 10);
        assert_eq!(facts.mime_type, "application/pdf");
        assert_eq!(facts.file_type, FileType::Pdf);
        assert_eq!(facts.name, "manual.bin");
    }

    #[test]
    fn extension_decides_when_content_says_nothing() {
        let facts = FileFacts::detect(b"name;price\nx;1\n", Some("prices.csv"), 15);
        assert_eq!(facts.mime_type, "text/csv");
        assert_eq!(facts.file_type, FileType::Excel);
        let facts = FileFacts::detect(b"hello", Some("notes.txt"), 5);
        assert_eq!(facts.file_type, FileType::Document);
        let facts = FileFacts::detect(b"\0\x01", Some("blob"), 2);
        assert_eq!(facts.mime_type, "application/octet-stream");
        assert_eq!(facts.file_type, FileType::Document);
    }

    #[test]
    fn zip_container_defers_to_the_office_extension() {
        let zip = b"PK\x03\x04\x14\0\0\0\x08\0";
        let facts = FileFacts::detect(zip, Some("report.xlsx"), 10);
        assert_eq!(facts.file_type, FileType::Excel);
        let facts = FileFacts::detect(zip, Some("letter.docx"), 10);
        assert_eq!(facts.file_type, FileType::Word);
    }

    #[test]
    fn nameless_input_is_named_after_its_type() {
        let facts = FileFacts::detect(PNG, None, 16);
        assert_eq!(facts.name, "file.png");
        assert_eq!(facts.file_type, FileType::Image);
        let facts = FileFacts::detect(b"\0\x01", None, 2);
        assert_eq!(facts.name, "file.bin");
    }

    #[test]
    fn media_types_map_to_their_wts_type() {
        assert_eq!(file_type_of("video/mp4"), FileType::Video);
        assert_eq!(file_type_of("audio/ogg"), FileType::Audio);
        assert_eq!(file_type_of("image/webp"), FileType::Image);
        assert_eq!(file_type_of("application/msword"), FileType::Word);
    }

    #[tokio::test]
    async fn opening_a_file_reads_facts_and_keeps_the_whole_body() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("manual.pdf");
        let mut content = PDF.to_vec();
        content.resize(SNIFF_LEN * 3 + 7, b'x');
        std::fs::write(&path, &content).unwrap();
        let (facts, body) = open_file(&path, None).await.unwrap();
        assert_eq!(facts.name, "manual.pdf");
        assert_eq!(facts.len, content.len() as u64);
        assert_eq!(facts.file_type, FileType::Pdf);
        let read = http_body_util::BodyExt::collect(body).await.unwrap();
        assert_eq!(read.to_bytes(), content);
    }

    #[tokio::test]
    async fn a_missing_file_is_named_in_the_error() {
        let err = open_file(Path::new("/nonexistent/manual.pdf"), None)
            .await
            .unwrap_err();
        assert!(err.to_string().contains("/nonexistent/manual.pdf"), "{err}");
        assert!(!err.is_retryable());
    }
}
