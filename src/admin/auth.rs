//! The bearer guard: every admin request names a token; its role decides what it may do.
//!
//! Tokens are compared by their sha256 digests in constant time, so neither the length nor
//! the content of a secret leaks through timing.

use std::future::Future;
use std::pin::Pin;

use actix_web::{FromRequest, HttpRequest, dev::Payload, http::header, web};
use secrecy::ExposeSecret;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::config::Settings;
use crate::error::AppError;
use crate::store::Store;

/// The actor name of the configured `admin.token`.
pub const BOOTSTRAP_NAME: &str = "bootstrap";

/// What a token may do; each role may do everything the one before it may.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, utoipa::ToSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Reads everything but tokens.
    Viewer,
    /// Also edits rules and files, runs dry-runs and retries deliveries.
    Editor,
    /// Also manages tokens.
    Admin,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Viewer => "viewer",
            Role::Editor => "editor",
            Role::Admin => "admin",
        }
    }

    pub fn parse(s: &str) -> Option<Role> {
        match s {
            "viewer" => Some(Role::Viewer),
            "editor" => Some(Role::Editor),
            "admin" => Some(Role::Admin),
            _ => None,
        }
    }
}

/// The authenticated caller of one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    /// The token's name: the actor recorded in rule revisions.
    pub name: String,
    pub role: Role,
}

impl Caller {
    /// 403 unless the caller's role is at least `role`.
    pub fn require(&self, role: Role) -> Result<(), AppError> {
        if self.role >= role {
            Ok(())
        } else {
            Err(AppError::Forbidden(format!(
                "the {} role may not do this; it needs {}",
                self.role.as_str(),
                role.as_str()
            )))
        }
    }
}

/// The lower-case hex sha256 of a token secret, as the `tokens` table keeps it.
pub fn token_hash(secret: &str) -> String {
    hex::encode(Sha256::digest(secret.as_bytes()))
}

fn digests_equal(a: &str, b: &str) -> bool {
    let a: [u8; 32] = Sha256::digest(a.as_bytes()).into();
    let b: [u8; 32] = Sha256::digest(b.as_bytes()).into();
    a.ct_eq(&b).into()
}

/// The caller a bearer secret stands for: the configured `admin.token`, or an unrevoked
/// token from the database.
pub async fn authenticate(
    settings: &Settings,
    store: &Store,
    secret: &str,
) -> Result<Caller, AppError> {
    if let Some(bootstrap) = &settings.admin.token
        && digests_equal(bootstrap.expose_secret(), secret)
    {
        return Ok(Caller {
            name: BOOTSTRAP_NAME.to_string(),
            role: Role::Admin,
        });
    }
    let hash = token_hash(secret);
    let token = store
        .active_token_by_hash(&hash)
        .await?
        .ok_or(AppError::Unauthorized)?;
    // The lookup found it by hash; the comparison itself stays constant-time too.
    if !bool::from(token.token_hash.as_bytes().ct_eq(hash.as_bytes())) {
        return Err(AppError::Unauthorized);
    }
    let role = Role::parse(&token.role)
        .ok_or_else(|| anyhow::anyhow!("token {} has an unknown role {}", token.id, token.role))?;
    Ok(Caller {
        name: token.name,
        role,
    })
}

fn bearer(request: &HttpRequest) -> Option<String> {
    let value = request
        .headers()
        .get(header::AUTHORIZATION)?
        .to_str()
        .ok()?;
    let (scheme, secret) = value.split_once(' ')?;
    let secret = secret.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !secret.is_empty()).then(|| secret.to_string())
}

impl FromRequest for Caller {
    type Error = AppError;
    type Future = Pin<Box<dyn Future<Output = Result<Caller, AppError>>>>;

    fn from_request(request: &HttpRequest, _payload: &mut Payload) -> Self::Future {
        let secret = bearer(request);
        let settings = request.app_data::<web::Data<Settings>>().cloned();
        let store = request.app_data::<web::Data<Store>>().cloned();
        Box::pin(async move {
            let (Some(settings), Some(store)) = (settings, store) else {
                return Err(anyhow::anyhow!("the admin API is mounted without its state").into());
            };
            let secret = secret.ok_or(AppError::Unauthorized)?;
            authenticate(&settings, &store, &secret).await
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roles_are_ordered_by_what_they_may_do() {
        let editor = Caller {
            name: "ci".into(),
            role: Role::Editor,
        };
        assert!(editor.require(Role::Viewer).is_ok());
        assert!(editor.require(Role::Editor).is_ok());
        assert!(matches!(
            editor.require(Role::Admin),
            Err(AppError::Forbidden(_))
        ));
        for role in [Role::Viewer, Role::Editor, Role::Admin] {
            assert_eq!(Role::parse(role.as_str()), Some(role));
        }
        assert_eq!(Role::parse("root"), None);
    }

    #[test]
    fn only_a_bearer_header_carries_a_token() {
        let request = |value: &str| {
            actix_web::test::TestRequest::default()
                .insert_header((header::AUTHORIZATION, value))
                .to_http_request()
        };
        assert_eq!(bearer(&request("Bearer abc")).as_deref(), Some("abc"));
        assert_eq!(bearer(&request("bearer  abc ")).as_deref(), Some("abc"));
        assert_eq!(bearer(&request("Basic abc")), None);
        assert_eq!(bearer(&request("Bearer ")), None);
        assert_eq!(
            bearer(&actix_web::test::TestRequest::default().to_http_request()),
            None
        );
    }

    #[test]
    fn digests_compare_whatever_the_lengths() {
        assert!(digests_equal("secret-token", "secret-token"));
        assert!(!digests_equal("secret-token", "secret-token-longer"));
        assert_eq!(token_hash("a").len(), 64);
    }
}
