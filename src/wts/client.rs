//! `WtsClient`: built once, shared by the CLI and the daemon. Every call is paced,
//! timed into `wtsbot_wts_request_duration_seconds` and makes one attempt; retrying is
//! the caller's choice (`retry::retrying`, or the daemon's own schedule).

use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, SecondsFormat, Utc};
use reqwest::header::{ACCEPT, RETRY_AFTER};
use reqwest::{Method, RequestBuilder, Response, Url};
use secrecy::{ExposeSecret, SecretString};
use serde::de::DeserializeOwned;
use serde_json::Value;

use super::WtsError;
use super::dto::{
    NewSubscription, Page, SendBody, SentMessage, SessionDetails, SessionDto, SessionMessage,
    SubscriptionUpdate, WebhookEventInfo, WebhookSubscription,
};
use super::pacing::{Pacer, TokenBucketPacer, Unpaced};
use crate::config::Settings;
use crate::metrics::METRICS;

/// Largest page WTS serves.
const PAGE_SIZE: u32 = 100;
/// A bound on paging, in case a server keeps saying `hasMorePages`.
const MAX_PAGES: u32 = 1000;
/// The details a session lookup asks for.
const SESSION_DETAILS: [&str; 4] = [
    "AgentDetails",
    "ContactDetails",
    "ChannelDetails",
    "DepartmentsDetails",
];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    /// Making the connection.
    pub connect: Duration,
    /// The whole request, answer included.
    pub request: Duration,
}

pub struct WtsClient {
    pub(super) http: reqwest::Client,
    base_url: Url,
    /// Sent per request, never a default header: the pre-signed upload must not carry it.
    token: SecretString,
    pub(super) timeout: Duration,
    pacer: Arc<dyn Pacer>,
}

impl std::fmt::Debug for WtsClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WtsClient")
            .field("base_url", &self.base_url.as_str())
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

impl WtsClient {
    pub fn new(
        base_url: &str,
        token: SecretString,
        timeouts: Timeouts,
        pacer: Arc<dyn Pacer>,
    ) -> Result<Self, WtsError> {
        let base_url = Url::parse(base_url)
            .ok()
            .filter(|url| !url.cannot_be_a_base() && url.scheme().starts_with("http"))
            .ok_or_else(|| WtsError::Config(format!("invalid WTS base URL `{base_url}`")))?;
        let http = reqwest::Client::builder()
            .connect_timeout(timeouts.connect)
            .timeout(timeouts.request)
            .user_agent(concat!("wtsbot/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| WtsError::Config(format!("cannot build the HTTP client: {e}")))?;
        Ok(Self {
            http,
            base_url,
            token,
            timeout: timeouts.request,
            pacer,
        })
    }

    /// The client `wts.*` describes, paced under the account limits unless
    /// `wts.pacing = false`. Fails when no API token is configured.
    pub fn from_settings(settings: &Settings) -> Result<Self, WtsError> {
        let wts = &settings.wts;
        let token = wts.api_token.clone().ok_or_else(|| {
            WtsError::Config(
                "no WTS API token: set wts.api_token (environment: WTSBOT__WTS__API_TOKEN)".into(),
            )
        })?;
        let pacer: Arc<dyn Pacer> = match (
            wts.pacing,
            NonZeroU32::new(wts.requests_per_5s),
            NonZeroU32::new(wts.requests_per_5min),
        ) {
            (true, Some(per_5s), Some(per_5min)) => {
                Arc::new(TokenBucketPacer::account_limits(per_5s, per_5min))
            }
            (true, _, _) => {
                return Err(WtsError::Config(
                    "wts.requests_per_5s and wts.requests_per_5min must be above zero".into(),
                ));
            }
            (false, _, _) => Arc::new(Unpaced),
        };
        let timeouts = Timeouts {
            connect: wts.connect_timeout,
            request: wts.timeout,
        };
        Self::new(&wts.base_url, token, timeouts, pacer)
    }

    /// Replaces the pacer (for a budget shared with other instances).
    pub fn with_pacer(mut self, pacer: Arc<dyn Pacer>) -> Self {
        self.pacer = pacer;
        self
    }

    pub fn base_url(&self) -> &str {
        self.base_url.as_str()
    }

    /// `POST /chat/v1/session/{id}/message`, or `/message/sync` which waits (up to 25 s)
    /// for the channel's status.
    #[tracing::instrument(skip_all, fields(session_id = %session_id, sync))]
    pub async fn send_message(
        &self,
        session_id: &str,
        body: &SendBody,
        sync: bool,
    ) -> Result<SentMessage, WtsError> {
        let (endpoint, path): (_, &[&str]) = if sync {
            (
                "POST /chat/v1/session/{id}/message/sync",
                &["chat", "v1", "session", session_id, "message", "sync"],
            )
        } else {
            (
                "POST /chat/v1/session/{id}/message",
                &["chat", "v1", "session", session_id, "message"],
            )
        };
        let response = self
            .execute(endpoint, self.authed(Method::POST, path).json(body))
            .await?;
        let status = response.status().as_u16();
        let answer: Value = read_json(response).await?;
        let sent = SentMessage::from_answer(answer).ok_or_else(|| WtsError::Decode {
            status,
            message: "the answer carries no message id".into(),
        })?;
        tracing::info!(message_id = %sent.id, status = ?sent.status, "message sent");
        Ok(sent)
    }

    /// `GET /chat/v2/session/{id}` with agent, contact, channel and department details.
    #[tracing::instrument(skip_all, fields(session_id = %session_id))]
    pub async fn get_session(&self, session_id: &str) -> Result<SessionDetails, WtsError> {
        let details: Vec<_> = SESSION_DETAILS
            .iter()
            .map(|detail| ("includeDetails", *detail))
            .collect();
        let request = self
            .authed(Method::GET, &["chat", "v2", "session", session_id])
            .query(&details);
        let response = self.execute("GET /chat/v2/session/{id}", request).await?;
        let session: SessionDto = read_json(response).await?;
        Ok(session.into())
    }

    /// Every message of a session (all pages), optionally only those created after a
    /// moment.
    #[tracing::instrument(skip_all, fields(session_id = %session_id))]
    pub async fn list_session_messages(
        &self,
        session_id: &str,
        created_after: Option<DateTime<Utc>>,
    ) -> Result<Vec<SessionMessage>, WtsError> {
        let after = created_after.map(|t| t.to_rfc3339_opts(SecondsFormat::Millis, true));
        let mut messages = Vec::new();
        for page_number in 1..=MAX_PAGES {
            let mut query = vec![
                ("pageNumber", page_number.to_string()),
                ("pageSize", PAGE_SIZE.to_string()),
            ];
            if let Some(after) = &after {
                query.push(("CreatedAt.After", after.clone()));
            }
            let request = self
                .authed(
                    Method::GET,
                    &["chat", "v1", "session", session_id, "message"],
                )
                .query(&query);
            let response = self
                .execute("GET /chat/v1/session/{id}/message", request)
                .await?;
            let page: Page<SessionMessage> = read_json(response).await?;
            let last = !page.has_more_pages || page.items.is_empty();
            messages.extend(page.items);
            if last {
                break;
            }
        }
        Ok(messages)
    }

    /// `GET /core/v1/webhook/event`: the events WTS can send.
    #[tracing::instrument(skip_all)]
    pub async fn list_webhook_events(&self) -> Result<Vec<WebhookEventInfo>, WtsError> {
        let request = self.authed(Method::GET, &["core", "v1", "webhook", "event"]);
        let response = self.execute("GET /core/v1/webhook/event", request).await?;
        read_json(response).await
    }

    #[tracing::instrument(skip_all)]
    pub async fn list_subscriptions(&self) -> Result<Vec<WebhookSubscription>, WtsError> {
        let request = self.authed(Method::GET, &["core", "v1", "webhook", "subscription"]);
        let response = self
            .execute("GET /core/v1/webhook/subscription", request)
            .await?;
        read_json(response).await
    }

    #[tracing::instrument(skip_all, fields(name = %subscription.name))]
    pub async fn create_subscription(
        &self,
        subscription: &NewSubscription,
    ) -> Result<WebhookSubscription, WtsError> {
        let request = self
            .authed(Method::POST, &["core", "v1", "webhook", "subscription"])
            .json(subscription);
        let response = self
            .execute("POST /core/v1/webhook/subscription", request)
            .await?;
        read_json(response).await
    }

    #[tracing::instrument(skip_all, fields(subscription_id = %id))]
    pub async fn update_subscription(
        &self,
        id: &str,
        update: &SubscriptionUpdate,
    ) -> Result<WebhookSubscription, WtsError> {
        let request = self
            .authed(Method::PUT, &["core", "v1", "webhook", "subscription", id])
            .json(update);
        let response = self
            .execute("PUT /core/v1/webhook/subscription/{id}", request)
            .await?;
        read_json(response).await
    }

    #[tracing::instrument(skip_all, fields(subscription_id = %id))]
    pub async fn delete_subscription(&self, id: &str) -> Result<(), WtsError> {
        let request = self.authed(
            Method::DELETE,
            &["core", "v1", "webhook", "subscription", id],
        );
        self.execute("DELETE /core/v1/webhook/subscription/{id}", request)
            .await?;
        Ok(())
    }

    /// A request to the API: base URL plus `segments` (each percent-encoded), bearer
    /// token, JSON accepted.
    pub(super) fn authed(&self, method: Method, segments: &[&str]) -> RequestBuilder {
        let mut url = self.base_url.clone();
        url.path_segments_mut()
            .expect("the base URL was checked to be a base")
            .pop_if_empty()
            .extend(segments);
        self.http
            .request(method, url)
            .bearer_auth(self.token.expose_secret())
            .header(ACCEPT, "application/json")
    }

    /// Waits for the pacer, sends, records the latency under `endpoint` (a route
    /// template), and turns a non-success answer into `WtsError::Api`.
    pub(super) async fn execute(
        &self,
        endpoint: &'static str,
        request: RequestBuilder,
    ) -> Result<Response, WtsError> {
        self.pacer.acquire().await;
        let timer = METRICS
            .wts_latency
            .with_label_values(&[endpoint])
            .start_timer();
        let result = request.send().await;
        timer.observe_duration();
        let response = result.map_err(WtsError::from_transport)?;
        let status = response.status();
        if status.is_success() {
            return Ok(response);
        }
        let retry_after = response
            .headers()
            .get(RETRY_AFTER)
            .and_then(|value| value.to_str().ok())
            .map(str::to_string);
        // An unreadable error body still leaves the status to report.
        let body = response.bytes().await.unwrap_or_default();
        let error = WtsError::from_answer(status.as_u16(), retry_after.as_deref(), &body);
        tracing::debug!(endpoint, %error, "WTS refused the request");
        Err(error)
    }
}

/// The JSON body of a success answer.
pub(super) async fn read_json<T: DeserializeOwned>(response: Response) -> Result<T, WtsError> {
    let status = response.status().as_u16();
    let body = response.bytes().await.map_err(WtsError::from_transport)?;
    serde_json::from_slice(&body).map_err(|e| WtsError::Decode {
        status,
        message: format!(
            "{e} in `{}`",
            String::from_utf8_lossy(&body[..body.len().min(120)])
        ),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(env: &[(&str, &str)]) -> Settings {
        Settings::load_with_env(
            None,
            env.iter().map(|(k, v)| (k.to_string(), v.to_string())),
        )
        .unwrap()
    }

    #[test]
    fn settings_without_a_token_name_the_variable() {
        let err = WtsClient::from_settings(&settings(&[])).unwrap_err();
        assert!(err.to_string().contains("WTSBOT__WTS__API_TOKEN"), "{err}");
    }

    #[test]
    fn settings_build_a_client_without_leaking_the_token() {
        let client = WtsClient::from_settings(&settings(&[
            ("WTSBOT__WTS__API_TOKEN", "pn_secret"),
            ("WTSBOT__WTS__BASE_URL", "http://127.0.0.1:9/"),
        ]))
        .unwrap();
        assert_eq!(client.base_url(), "http://127.0.0.1:9/");
        assert!(!format!("{client:?}").contains("pn_secret"));
    }

    #[test]
    fn paths_are_joined_and_segments_encoded() {
        let client = WtsClient::new(
            "http://127.0.0.1:9/prefix/",
            SecretString::from("t"),
            Timeouts {
                connect: Duration::from_secs(1),
                request: Duration::from_secs(1),
            },
            Arc::new(Unpaced),
        )
        .unwrap();
        let request = client
            .authed(Method::GET, &["chat", "v1", "session", "a/b c", "message"])
            .build()
            .unwrap();
        assert_eq!(
            request.url().as_str(),
            "http://127.0.0.1:9/prefix/chat/v1/session/a%2Fb%20c/message"
        );
        assert_eq!(request.headers()["authorization"], "Bearer t");
    }

    #[test]
    fn a_base_url_that_is_not_http_is_refused() {
        let timeouts = Timeouts {
            connect: Duration::from_secs(1),
            request: Duration::from_secs(1),
        };
        for bad in ["mailto:x@y", "not a url", "ftp://host/"] {
            let result = WtsClient::new(bad, SecretString::from("t"), timeouts, Arc::new(Unpaced));
            assert!(result.is_err(), "{bad}");
        }
    }

    #[tokio::test]
    async fn a_refused_connection_is_retryable_and_certainly_not_sent() {
        // Bind then drop: the port is very likely closed for the moment of the test.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let client = WtsClient::new(
            &format!("http://127.0.0.1:{port}"),
            SecretString::from("t"),
            Timeouts {
                connect: Duration::from_secs(1),
                request: Duration::from_secs(2),
            },
            Arc::new(Unpaced),
        )
        .unwrap();
        let err = client
            .send_message("s", &SendBody::text("oi"), false)
            .await
            .unwrap_err();
        assert!(matches!(err, WtsError::Connect(_)), "{err:?}");
        assert!(err.is_retryable() && !err.outcome_unknown());
    }
}
