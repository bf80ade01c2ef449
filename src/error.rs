//! The one HTTP error type: every admin and webhook failure becomes
//! `{"code", "message", "errors"}` here, and nowhere else.

use actix_web::http::StatusCode;
use actix_web::{HttpResponse, ResponseError};
use serde::Serialize;

/// One invalid field of a request, named by its path (`when.text_regex`, `reply[1].file`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct FieldError {
    pub field: String,
    pub message: String,
}

impl FieldError {
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            message: message.into(),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum AppError {
    #[error("{0}")]
    BadRequest(String),
    #[error("missing or invalid bearer token")]
    Unauthorized,
    #[error("{0}")]
    Forbidden(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    PayloadTooLarge(String),
    #[error("{0}")]
    UnsupportedMediaType(String),
    #[error("validation failed")]
    Validation(Vec<FieldError>),
    #[error("service unavailable")]
    Unavailable(#[source] anyhow::Error),
    #[error("internal error")]
    Unexpected(#[from] anyhow::Error),
}

/// The JSON body of every error answer.
#[derive(Debug, Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct ErrorBody {
    pub code: String,
    pub message: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<FieldError>,
}

impl AppError {
    pub fn code(&self) -> &'static str {
        match self {
            AppError::BadRequest(_) => "bad_request",
            AppError::Unauthorized => "unauthorized",
            AppError::Forbidden(_) => "forbidden",
            AppError::NotFound(_) => "not_found",
            AppError::Conflict(_) => "conflict",
            AppError::PayloadTooLarge(_) => "payload_too_large",
            AppError::UnsupportedMediaType(_) => "unsupported_media_type",
            AppError::Validation(_) => "validation_failed",
            AppError::Unavailable(_) => "unavailable",
            AppError::Unexpected(_) => "internal",
        }
    }

    pub fn not_found(what: impl std::fmt::Display) -> Self {
        AppError::NotFound(format!("{what} not found"))
    }
}

impl ResponseError for AppError {
    fn status_code(&self) -> StatusCode {
        match self {
            AppError::BadRequest(_) => StatusCode::BAD_REQUEST,
            AppError::Unauthorized => StatusCode::UNAUTHORIZED,
            AppError::Forbidden(_) => StatusCode::FORBIDDEN,
            AppError::NotFound(_) => StatusCode::NOT_FOUND,
            AppError::Conflict(_) => StatusCode::CONFLICT,
            AppError::PayloadTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            AppError::UnsupportedMediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            AppError::Validation(_) => StatusCode::UNPROCESSABLE_ENTITY,
            AppError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            AppError::Unexpected(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn error_response(&self) -> HttpResponse {
        let status = self.status_code();
        // A 5xx body is opaque: the cause chain goes to the log only.
        if let AppError::Unavailable(cause) | AppError::Unexpected(cause) = self {
            tracing::error!(error.cause_chain = ?cause, error.message = %cause, "request failed");
        }
        let errors = match self {
            AppError::Validation(errors) => errors.clone(),
            _ => Vec::new(),
        };
        HttpResponse::build(status).json(ErrorBody {
            code: self.code().to_string(),
            message: self.to_string(),
            errors,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use actix_web::body::to_bytes;

    async fn body_of(err: AppError) -> (StatusCode, serde_json::Value) {
        let resp = err.error_response();
        let status = resp.status();
        let bytes = to_bytes(resp.into_body()).await.unwrap();
        (status, serde_json::from_slice(&bytes).unwrap())
    }

    #[actix_web::test]
    async fn validation_lists_every_field() {
        let (status, body) = body_of(AppError::Validation(vec![
            FieldError::new("when.text_regex", "unclosed group"),
            FieldError::new("reply[1].file", "no such asset"),
        ]))
        .await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
        assert_eq!(body["code"], "validation_failed");
        assert_eq!(body["errors"][1]["field"], "reply[1].file");
    }

    #[actix_web::test]
    async fn server_errors_are_opaque() {
        let (status, body) = body_of(AppError::Unexpected(anyhow::anyhow!(
            "password=hunter2 leaked"
        )))
        .await;
        assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
        assert_eq!(body["message"], "internal error");
        assert!(!body.to_string().contains("hunter2"));
        assert!(body.get("errors").is_none());
    }
}
