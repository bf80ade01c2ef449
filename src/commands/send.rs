//! `wtsbot send-file` and `wtsbot send-text`: one send into a session. The input is
//! checked before any network call; the API's JSON answer goes to stdout.

use std::path::{Path, PathBuf};

use anyhow::Context;
use base64::Engine;
use base64::engine::DecodePaddingMode;
use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig};
use tokio::io::AsyncReadExt;

use crate::cli::{SendFileArgs, SendTextArgs};
use crate::config::Settings;
use crate::wts::{
    RetryPolicy, SendBody, SentMessage, UploadSource, WtsClient, WtsError, retrying, retrying_when,
};

/// Base64 as n8n and most tools write it: padded or not, standard alphabet.
const BASE64: GeneralPurpose = GeneralPurpose::new(
    &base64::alphabet::STANDARD,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

#[derive(Debug, thiserror::Error)]
pub enum InputError {
    #[error("the session id is empty (--session)")]
    EmptySession,
    #[error("nothing to send: give --url URL or --file PATH (`-` for standard input)")]
    NoFile,
    #[error("give either --url or --file, not both")]
    FileAndUrl,
    #[error("--{0} applies to --file only")]
    FileOnlyFlag(&'static str),
    #[error("the text is empty (--text)")]
    EmptyText,
    #[error("cannot read {}: {reason}", path.display())]
    Unreadable {
        path: PathBuf,
        reason: std::io::Error,
    },
    #[error("{0} is empty")]
    EmptyInput(String),
    #[error("{what} is not valid base64: {reason}")]
    InvalidBase64 {
        what: String,
        reason: base64::DecodeError,
    },
}

/// A checked `send-file` request.
#[derive(Debug)]
struct FileRequest {
    session: String,
    input: FileInput,
    caption: Option<String>,
    sync: bool,
}

#[derive(Debug)]
enum FileInput {
    Url(String),
    Upload(UploadSource),
}

pub async fn send_file(settings: &Settings, args: SendFileArgs) -> anyhow::Result<()> {
    let request = file_request(args).await?;
    let client = client(settings)?;
    let policy = RetryPolicy::schedule(settings.bot.retry_schedule.clone());
    let body = match request.input {
        FileInput::Url(url) => SendBody::file_url(url, request.caption),
        FileInput::Upload(source) => {
            // A repeated upload is harmless: every retryable failure is retried.
            let file = retrying(&policy, || client.upload(&source))
                .await
                .context("upload failed")?;
            SendBody::file_id(file.id, request.caption)
        }
    };
    let sent = send(&client, &policy, &request.session, &body, request.sync).await?;
    print_answer(&sent)
}

pub async fn send_text(settings: &Settings, args: SendTextArgs) -> anyhow::Result<()> {
    let session = session_id(&args.session)?;
    if args.text.trim().is_empty() {
        return Err(InputError::EmptyText.into());
    }
    let client = client(settings)?;
    let policy = RetryPolicy::schedule(settings.bot.retry_schedule.clone());
    let sent = send(
        &client,
        &policy,
        &session,
        &SendBody::text(args.text),
        args.sync,
    )
    .await?;
    print_answer(&sent)
}

fn client(settings: &Settings) -> anyhow::Result<WtsClient> {
    if std::env::var_os("RUST_LOG").is_some() {
        crate::telemetry::init(settings.log.format, &settings.log.level);
    }
    Ok(WtsClient::from_settings(settings)?)
}

/// Sends, retrying only failures that certainly did not deliver: WTS takes no
/// idempotency key, so a send that may have arrived is reported, not repeated.
async fn send(
    client: &WtsClient,
    policy: &RetryPolicy,
    session: &str,
    body: &SendBody,
    sync: bool,
) -> anyhow::Result<SentMessage> {
    let result = retrying_when(
        policy,
        |e: &WtsError| e.is_retryable() && !e.outcome_unknown(),
        || client.send_message(session, body, sync),
    )
    .await;
    match result {
        Ok(sent) => Ok(sent),
        Err(e) if e.outcome_unknown() => Err(anyhow::Error::new(e)
            .context("the message may have reached the session; check it before sending again")),
        Err(e) => Err(e.into()),
    }
}

/// Prints WTS's answer; a message WTS reports as `FAILED` also fails the command.
fn print_answer(sent: &SentMessage) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string_pretty(&sent.raw)?);
    if sent.failed() {
        anyhow::bail!(
            "WTS took the message but reports it FAILED: {}",
            sent.failure_reason.as_deref().unwrap_or("no reason given")
        );
    }
    Ok(())
}

fn session_id(raw: &str) -> Result<String, InputError> {
    let session = raw.trim();
    if session.is_empty() {
        return Err(InputError::EmptySession);
    }
    Ok(session.to_string())
}

/// Checks the flags and the input, reading it when it is standard input or base64.
async fn file_request(args: SendFileArgs) -> Result<FileRequest, InputError> {
    let session = session_id(&args.session)?;
    let caption = args.text.filter(|text| !text.trim().is_empty());
    let input = match (args.url, args.file) {
        (None, None) => return Err(InputError::NoFile),
        (Some(_), Some(_)) => return Err(InputError::FileAndUrl),
        (Some(url), None) => {
            if args.base64 {
                return Err(InputError::FileOnlyFlag("base64"));
            }
            if args.name.is_some() {
                return Err(InputError::FileOnlyFlag("name"));
            }
            if url.trim().is_empty() {
                return Err(InputError::NoFile);
            }
            FileInput::Url(url.trim().to_string())
        }
        (None, Some(file)) => {
            FileInput::Upload(upload_source(&file, args.base64, args.name).await?)
        }
    };
    Ok(FileRequest {
        session,
        input,
        caption,
        sync: args.sync,
    })
}

async fn upload_source(
    file: &str,
    base64: bool,
    name: Option<String>,
) -> Result<UploadSource, InputError> {
    if file == "-" {
        let mut data = Vec::new();
        tokio::io::stdin()
            .read_to_end(&mut data)
            .await
            .map_err(|reason| InputError::Unreadable {
                path: "standard input".into(),
                reason,
            })?;
        let data = decoded(data, base64, "standard input")?;
        return Ok(UploadSource::memory(data, name));
    }
    let path = Path::new(file);
    let unreadable = |reason| InputError::Unreadable {
        path: path.to_path_buf(),
        reason,
    };
    let opened = std::fs::File::open(path).map_err(unreadable)?;
    let metadata = opened.metadata().map_err(unreadable)?;
    if !metadata.is_file() {
        return Err(unreadable(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            "not a regular file",
        )));
    }
    if metadata.len() == 0 {
        return Err(InputError::EmptyInput(path.display().to_string()));
    }
    if base64 {
        let text = tokio::fs::read(path).await.map_err(unreadable)?;
        let data = decoded(text, true, &path.display().to_string())?;
        return Ok(UploadSource::memory(data, name));
    }
    Ok(UploadSource::File {
        path: path.to_path_buf(),
        name,
    })
}

/// The bytes to upload: `input` itself, or decoded when it is base64 (whitespace and
/// line breaks ignored).
fn decoded(input: Vec<u8>, base64: bool, what: &str) -> Result<Vec<u8>, InputError> {
    let data = if base64 {
        let compact: Vec<u8> = input
            .into_iter()
            .filter(|b| !b.is_ascii_whitespace())
            .collect();
        BASE64
            .decode(&compact)
            .map_err(|reason| InputError::InvalidBase64 {
                what: what.to_string(),
                reason,
            })?
    } else {
        input
    };
    if data.is_empty() {
        return Err(InputError::EmptyInput(what.to_string()));
    }
    Ok(data)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(session: &str) -> SendFileArgs {
        SendFileArgs {
            session: session.into(),
            url: None,
            file: None,
            base64: false,
            name: None,
            sync: false,
            text: None,
        }
    }

    #[tokio::test]
    async fn session_must_not_be_empty() {
        let mut a = args("  ");
        a.url = Some("https://cdn.example.com/x.pdf".into());
        let err = file_request(a).await.unwrap_err();
        assert!(matches!(err, InputError::EmptySession), "{err}");
    }

    #[tokio::test]
    async fn exactly_one_of_url_and_file() {
        let err = file_request(args("s")).await.unwrap_err();
        assert!(matches!(err, InputError::NoFile), "{err}");
        let mut both = args("s");
        both.url = Some("https://cdn.example.com/x.pdf".into());
        both.file = Some("/etc/hostname".into());
        let err = file_request(both).await.unwrap_err();
        assert!(matches!(err, InputError::FileAndUrl), "{err}");
    }

    #[tokio::test]
    async fn base64_and_name_need_a_file() {
        let mut a = args("s");
        a.url = Some("https://cdn.example.com/x.pdf".into());
        a.base64 = true;
        let err = file_request(a).await.unwrap_err();
        assert_eq!(err.to_string(), "--base64 applies to --file only");
    }

    #[tokio::test]
    async fn url_request_keeps_caption_and_sync() {
        let mut a = args(" s-1 ");
        a.url = Some("https://cdn.example.com/x.pdf".into());
        a.text = Some("manual".into());
        a.sync = true;
        let request = file_request(a).await.unwrap();
        assert_eq!(request.session, "s-1");
        assert!(
            matches!(request.input, FileInput::Url(ref u) if u == "https://cdn.example.com/x.pdf")
        );
        assert_eq!(request.caption.as_deref(), Some("manual"));
        assert!(request.sync);
    }

    #[tokio::test]
    async fn missing_and_empty_files_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("manual.pdf");
        let err = upload_source(missing.to_str().unwrap(), false, None)
            .await
            .unwrap_err();
        assert!(err.to_string().contains("manual.pdf"), "{err}");
        let empty = dir.path().join("empty.pdf");
        std::fs::write(&empty, b"").unwrap();
        let err = upload_source(empty.to_str().unwrap(), false, None)
            .await
            .unwrap_err();
        assert!(matches!(err, InputError::EmptyInput(_)), "{err}");
        let err = upload_source(dir.path().to_str().unwrap(), false, None)
            .await
            .unwrap_err();
        assert!(err.to_string().contains("not a regular file"), "{err}");
    }

    #[tokio::test]
    async fn a_base64_file_is_decoded_into_memory() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("manual.b64");
        std::fs::write(&path, "JVBERi0x\nLjc=\n").unwrap();
        let source = upload_source(path.to_str().unwrap(), true, Some("m.pdf".into()))
            .await
            .unwrap();
        match source {
            UploadSource::Memory { data, name } => {
                assert_eq!(&data[..], b"%PDF-1.7");
                assert_eq!(name.as_deref(), Some("m.pdf"));
            }
            other => panic!("expected bytes in memory, got {other:?}"),
        }
    }

    #[test]
    fn base64_is_lenient_about_padding_and_strict_about_letters() {
        assert_eq!(decoded(b"aGk".to_vec(), true, "x").unwrap(), b"hi");
        assert_eq!(decoded(b"aGk=\r\n".to_vec(), true, "x").unwrap(), b"hi");
        let err = decoded(b"not base64!".to_vec(), true, "standard input").unwrap_err();
        assert!(
            err.to_string()
                .starts_with("standard input is not valid base64"),
            "{err}"
        );
        let err = decoded(b"   ".to_vec(), true, "standard input").unwrap_err();
        assert!(matches!(err, InputError::EmptyInput(_)), "{err}");
    }
}
