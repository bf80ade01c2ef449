//! The OpenAPI document of the admin API, generated from the handlers' annotations and
//! the DTOs' schemas, and served unauthenticated at `GET /api/v1/openapi.json`.

use actix_web::HttpResponse;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

use super::{files, history, rules, test, tokens};

#[derive(OpenApi)]
#[openapi(
    info(
        title = "wtsbot admin API",
        description = "Rules with revisions and dry runs, files, history, deliveries and tokens. \
            Every request but this document's needs `Authorization: Bearer <token>`; errors are \
            `{code, message, errors}`."
    ),
    paths(
        rules::list_rules,
        rules::create_rule,
        rules::get_rule,
        rules::update_rule,
        rules::delete_rule,
        rules::list_revisions,
        rules::restore_revision,
        test::dry_run,
        files::list_files,
        files::upload_file,
        files::get_file,
        files::delete_file,
        history::list_events,
        history::list_deliveries,
        history::retry_delivery,
        tokens::list_tokens,
        tokens::create_token,
        tokens::revoke_token,
    ),
    modifiers(&BearerSecurity),
    tags(
        (name = "rules", description = "Rules, their revisions, and dry runs"),
        (name = "files", description = "Files replies send"),
        (name = "history", description = "Events, decisions and deliveries"),
        (name = "tokens", description = "API tokens and roles (admin only)"),
    )
)]
pub struct AdminApi;

struct BearerSecurity;

impl Modify for BearerSecurity {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    }
}

/// The document, built once per request: it is small and rarely fetched.
pub async fn openapi_json() -> HttpResponse {
    HttpResponse::Ok().json(AdminApi::openapi())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_operation_declares_its_statuses_and_the_bearer_scheme() {
        let doc = serde_json::to_value(AdminApi::openapi()).unwrap();
        assert!(doc["components"]["securitySchemes"]["bearer"].is_object());
        let paths = doc["paths"].as_object().unwrap();
        assert!(paths.contains_key("/api/v1/rules/test"));
        assert!(paths.contains_key("/api/v1/rules/{id}/revisions/{revision}/restore"));
        for (path, item) in paths {
            for (method, operation) in item.as_object().unwrap() {
                let responses = operation["responses"].as_object().unwrap();
                assert!(responses.contains_key("401"), "{method} {path} lacks 401");
                assert!(
                    responses.keys().any(|s| s.starts_with('2')),
                    "{method} {path} lacks a success status"
                );
            }
        }
    }
}
