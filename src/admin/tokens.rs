//! `GET/POST /api/v1/tokens`, `DELETE /api/v1/tokens/{id}`: API tokens with a role, kept
//! only as hashes. The secret is shown once, in the answer that creates it.

use actix_web::{HttpResponse, web};
use chrono::{DateTime, Utc};
use rand::RngCore;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::auth::{Caller, Role, token_hash};
use super::{parse_body, time};
use crate::error::{AppError, ErrorBody, FieldError};
use crate::store::admin::TokenRow;
use crate::store::{Store, now_ms};

const MAX_NAME_LEN: usize = 100;

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/tokens", web::get().to(list_tokens))
        .route("/tokens", web::post().to(create_token))
        .route("/tokens/{id}", web::delete().to(revoke_token));
}

/// A token as listed: never its secret.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct TokenView {
    pub id: i64,
    pub name: String,
    pub role: Role,
    pub created_at: DateTime<Utc>,
    /// Set once the token is revoked; it then authenticates nothing.
    pub revoked_at: Option<DateTime<Utc>>,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewToken {
    /// Who uses it (`ci`, `maria`): recorded as the actor of rule revisions.
    pub name: String,
    pub role: Role,
}

/// The created token, with its secret: shown this once only.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct CreatedToken {
    #[serde(flatten)]
    pub token: TokenView,
    /// The bearer secret.
    pub secret: String,
}

impl TryFrom<TokenRow> for TokenView {
    type Error = AppError;

    fn try_from(row: TokenRow) -> Result<Self, AppError> {
        let role = Role::parse(&row.role)
            .ok_or_else(|| anyhow::anyhow!("token {} has an unknown role {}", row.id, row.role))?;
        Ok(TokenView {
            id: row.id,
            name: row.name,
            role,
            created_at: time(row.created_at),
            revoked_at: row.revoked_at.map(time),
        })
    }
}

#[utoipa::path(
    get, path = "/api/v1/tokens", tag = "tokens",
    responses(
        (status = 200, description = "Every token, revoked ones included", body = Vec<TokenView>),
        (status = 401, description = "No valid token", body = ErrorBody),
        (status = 403, description = "Only admins manage tokens", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
pub async fn list_tokens(
    caller: Caller,
    store: web::Data<Store>,
) -> Result<HttpResponse, AppError> {
    caller.require(Role::Admin)?;
    let tokens = store
        .list_tokens()
        .await?
        .into_iter()
        .map(TokenView::try_from)
        .collect::<Result<Vec<_>, _>>()?;
    Ok(HttpResponse::Ok().json(tokens))
}

#[utoipa::path(
    post, path = "/api/v1/tokens", tag = "tokens",
    request_body = NewToken,
    responses(
        (status = 201, description = "The token, with its secret shown once", body = CreatedToken),
        (status = 400, description = "The body is not JSON", body = ErrorBody),
        (status = 401, description = "No valid token", body = ErrorBody),
        (status = 403, description = "Only admins manage tokens", body = ErrorBody),
        (status = 415, description = "The body is not application/json", body = ErrorBody),
        (status = 422, description = "Invalid name or role", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
pub async fn create_token(
    caller: Caller,
    store: web::Data<Store>,
    body: web::Json<serde_json::Value>,
) -> Result<HttpResponse, AppError> {
    caller.require(Role::Admin)?;
    let new: NewToken = parse_body(body.into_inner())?;
    let name = new.name.trim();
    if name.is_empty() || name.len() > MAX_NAME_LEN {
        return Err(AppError::Validation(vec![FieldError::new(
            "name",
            format!("must be 1 to {MAX_NAME_LEN} characters"),
        )]));
    }
    let secret = random_secret();
    let row = store
        .insert_token(name, new.role.as_str(), &token_hash(&secret), now_ms())
        .await?;
    tracing::info!(token_id = row.id, name, role = new.role.as_str(), by = %caller.name, "token created");
    Ok(HttpResponse::Created().json(CreatedToken {
        token: row.try_into()?,
        secret,
    }))
}

#[utoipa::path(
    delete, path = "/api/v1/tokens/{id}", tag = "tokens",
    params(("id" = i64, Path, description = "The token's id")),
    responses(
        (status = 204, description = "Revoked"),
        (status = 400, description = "The id is not a number", body = ErrorBody),
        (status = 401, description = "No valid token", body = ErrorBody),
        (status = 403, description = "Only admins manage tokens", body = ErrorBody),
        (status = 404, description = "No such unrevoked token", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
pub async fn revoke_token(
    caller: Caller,
    store: web::Data<Store>,
    id: web::Path<i64>,
) -> Result<HttpResponse, AppError> {
    caller.require(Role::Admin)?;
    let id = id.into_inner();
    if !store.revoke_token(id, now_ms()).await? {
        return Err(AppError::not_found(format!("token {id}")));
    }
    tracing::info!(token_id = id, by = %caller.name, "token revoked");
    Ok(HttpResponse::NoContent().finish())
}

/// 32 random bytes as 64 hex characters.
fn random_secret() -> String {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    hex::encode(bytes)
}
