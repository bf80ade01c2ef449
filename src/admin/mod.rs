//! The admin API under `/api/v1`: rules (with revisions and dry-run), files, history,
//! deliveries and tokens, each behind the bearer guard of [`auth`], plus the OpenAPI
//! document that describes them, served without a token.

pub mod auth;
pub mod files;
pub mod history;
pub mod openapi;
pub mod rules;
pub mod test;
pub mod tokens;

use actix_web::web;
use chrono::{DateTime, Utc};
use serde::de::DeserializeOwned;

use crate::error::{AppError, FieldError};

/// The prefix of every admin route.
pub const PREFIX: &str = "/api/v1";

/// Mounts the admin API; `rules/test` is routed before `rules/{id}`.
pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(
        web::scope(PREFIX)
            .route("/openapi.json", web::get().to(openapi::openapi_json))
            .configure(files::configure)
            .configure(history::configure)
            .route("/rules/test", web::post().to(test::dry_run))
            .configure(rules::configure)
            .configure(tokens::configure),
    );
}

/// A request body read as `T`; a field of the wrong type or an unknown key is a 422 that
/// names its path (`when.text_any[0]`, `reply[1].sync`).
pub fn parse_body<T: DeserializeOwned>(body: serde_json::Value) -> Result<T, AppError> {
    serde_path_to_error::deserialize(body).map_err(|err| {
        let path = err.path().to_string();
        let field = if path == "." { String::new() } else { path };
        AppError::Validation(vec![FieldError::new(field, err.inner().to_string())])
    })
}

/// An epoch-milliseconds column as a timestamp.
pub fn time(ms: i64) -> DateTime<Utc> {
    DateTime::from_timestamp_millis(ms).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rules::Rule;

    #[test]
    fn body_errors_name_their_path() {
        let err = parse_body::<Rule>(serde_json::json!({
            "id": "r", "reply": [{"text": "a"}, {"text": "b", "sync": "yes"}]
        }))
        .unwrap_err();
        let AppError::Validation(errors) = err else {
            panic!("{err:?}")
        };
        assert_eq!(errors[0].field, "reply[1].sync");
        let err = parse_body::<Rule>(serde_json::json!({"reply": []})).unwrap_err();
        let AppError::Validation(errors) = err else {
            panic!("{err:?}")
        };
        assert!(errors[0].message.contains("id"), "{errors:?}");
    }
}
