//! wtsbot's webhook subscription with WTS: which events it needs, and an idempotent
//! "ensure" that creates the subscription, updates only what changed, or does nothing.
//! `wtsbot webhook register` runs it once; `serve` keeps it in step with the rules.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use secrecy::ExposeSecret;
use tokio_util::sync::CancellationToken;

use crate::config::Settings;
use crate::rules::RuleEngine;
use crate::rules::model::DEFAULT_EVENT;
use crate::webhook::envelope::KNOWN_EVENT_TYPES;
use crate::wts::{
    NewSubscription, RetryPolicy, SubscriptionUpdate, WebhookSubscription, WtsClient, WtsError,
};

/// Events wtsbot listens to whatever the rules say: delivery statuses of its own
/// replies, and the session and tag changes that invalidate its session cache.
pub const BUILT_IN_EVENTS: [&str; 4] = [
    "MESSAGE_UPDATED",
    "SESSION_UPDATE",
    "SESSION_COMPLETE",
    "CONTACT_TAG_UPDATE",
];

/// The subscription's events: those the enabled rules listen to (`MESSAGE_RECEIVED` when
/// there are none) plus [`BUILT_IN_EVENTS`], sorted and without repeats.
pub fn subscription_events<S: AsRef<str>>(rule_events: impl IntoIterator<Item = S>) -> Vec<String> {
    let mut events: BTreeSet<String> = rule_events
        .into_iter()
        .map(|e| e.as_ref().to_string())
        .collect();
    if events.is_empty() {
        events.insert(DEFAULT_EVENT.to_string());
    }
    events.extend(BUILT_IN_EVENTS.iter().map(|e| e.to_string()));
    events.into_iter().collect()
}

/// Events named on the command line: trimmed, upper-cased, known to WTS, sorted and
/// without repeats.
pub fn parse_events<S: AsRef<str>>(
    names: impl IntoIterator<Item = S>,
) -> Result<Vec<String>, RegistrationError> {
    let mut events = BTreeSet::new();
    for name in names {
        let name = name.as_ref().trim().to_ascii_uppercase();
        if name.is_empty() {
            continue;
        }
        if !KNOWN_EVENT_TYPES.contains(&name.as_str()) {
            return Err(RegistrationError::UnknownEvent(name));
        }
        events.insert(name);
    }
    if events.is_empty() {
        return Err(RegistrationError::NoEvents);
    }
    Ok(events.into_iter().collect())
}

/// What the subscription should look like.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DesiredSubscription {
    /// `webhook.name`.
    pub name: String,
    /// The full public webhook URL, token included.
    pub url: String,
    /// Sorted, without repeats.
    pub events: Vec<String>,
}

/// The one call that brings WTS in line with a [`DesiredSubscription`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    Create(NewSubscription),
    /// Only the fields that differ are set.
    Update {
        id: String,
        update: SubscriptionUpdate,
    },
    Unchanged(WebhookSubscription),
}

/// Decides the change: the subscription with the desired URL, else the one with the
/// desired name, is updated where its URL, events or enabled flag differ; with neither,
/// one is created. The name of a subscription found by URL is left as it is.
pub fn plan_change(existing: &[WebhookSubscription], desired: &DesiredSubscription) -> Change {
    let found = existing
        .iter()
        .find(|s| s.url == desired.url)
        .or_else(|| existing.iter().find(|s| s.name == desired.name));
    let Some(current) = found else {
        return Change::Create(NewSubscription {
            name: desired.name.clone(),
            url: desired.url.clone(),
            enabled: true,
            events: desired.events.clone(),
        });
    };
    let current_events: BTreeSet<&str> = current.events.iter().map(String::as_str).collect();
    let desired_events: BTreeSet<&str> = desired.events.iter().map(String::as_str).collect();
    let update = SubscriptionUpdate {
        name: None,
        url: (current.url != desired.url).then(|| desired.url.clone()),
        enabled: (!current.enabled).then_some(true),
        events: (current_events != desired_events).then(|| desired.events.clone()),
    };
    if update == SubscriptionUpdate::default() {
        Change::Unchanged(current.clone())
    } else {
        Change::Update {
            id: current.id.clone(),
            update,
        }
    }
}

/// What [`ensure_subscription`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ensured {
    Created(WebhookSubscription),
    /// `fields` as sent to WTS (`Url`, `Events`, `Enabled`).
    Updated {
        subscription: WebhookSubscription,
        fields: Vec<&'static str>,
    },
    Unchanged(WebhookSubscription),
}

impl Ensured {
    pub fn subscription(&self) -> &WebhookSubscription {
        match self {
            Ensured::Created(s) | Ensured::Unchanged(s) => s,
            Ensured::Updated { subscription, .. } => subscription,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum RegistrationError {
    #[error("unknown WTS event `{0}`; known events: {known}", known = KNOWN_EVENT_TYPES.join(", "))]
    UnknownEvent(String),
    #[error("no events to subscribe to")]
    NoEvents,
    #[error("cannot list the webhook subscriptions")]
    List(#[source] WtsError),
    #[error("cannot create the webhook subscription")]
    Create(#[source] WtsError),
    #[error("cannot update webhook subscription {id}")]
    Update {
        id: String,
        #[source]
        source: WtsError,
    },
    #[error("cannot delete webhook subscription {id}")]
    Delete {
        id: String,
        #[source]
        source: WtsError,
    },
}

impl RegistrationError {
    /// The WTS failure behind this error, if any.
    pub fn wts_error(&self) -> Option<&WtsError> {
        match self {
            RegistrationError::List(e) | RegistrationError::Create(e) => Some(e),
            RegistrationError::Update { source, .. } | RegistrationError::Delete { source, .. } => {
                Some(source)
            }
            RegistrationError::UnknownEvent(_) | RegistrationError::NoEvents => None,
        }
    }

    /// A later attempt may pass (429, 5xx, timeouts, connection failures).
    pub fn is_retryable(&self) -> bool {
        self.wts_error().is_some_and(WtsError::is_retryable)
    }
}

/// Lists the subscriptions and makes the one change [`plan_change`] decides, if any:
/// a second run with nothing changed makes no write call.
pub async fn ensure_subscription(
    client: &WtsClient,
    desired: &DesiredSubscription,
) -> Result<Ensured, RegistrationError> {
    let existing = client
        .list_subscriptions()
        .await
        .map_err(RegistrationError::List)?;
    match plan_change(&existing, desired) {
        Change::Unchanged(subscription) => Ok(Ensured::Unchanged(subscription)),
        Change::Create(new) => client
            .create_subscription(&new)
            .await
            .map(Ensured::Created)
            .map_err(RegistrationError::Create),
        Change::Update { id, update } => {
            let fields = update_fields(&update);
            match client.update_subscription(&id, &update).await {
                Ok(subscription) => Ok(Ensured::Updated {
                    subscription,
                    fields,
                }),
                Err(source) => Err(RegistrationError::Update { id, source }),
            }
        }
    }
}

/// The `fields` names of an update, in the order WTS is sent them.
fn update_fields(update: &SubscriptionUpdate) -> Vec<&'static str> {
    [
        ("Name", update.name.is_some()),
        ("Url", update.url.is_some()),
        ("Events", update.events.is_some()),
        ("Enabled", update.enabled.is_some()),
    ]
    .into_iter()
    .filter_map(|(field, set)| set.then_some(field))
    .collect()
}

/// Deletes every subscription whose URL is `url`; returns those deleted (none: no
/// subscription had that URL).
pub async fn unregister(
    client: &WtsClient,
    url: &str,
) -> Result<Vec<WebhookSubscription>, RegistrationError> {
    let existing = client
        .list_subscriptions()
        .await
        .map_err(RegistrationError::List)?;
    let mut deleted = Vec::new();
    for subscription in existing.into_iter().filter(|s| s.url == url) {
        client
            .delete_subscription(&subscription.id)
            .await
            .map_err(|source| RegistrationError::Delete {
                id: subscription.id.clone(),
                source,
            })?;
        deleted.push(subscription);
    }
    Ok(deleted)
}

/// Keeps the subscription in step with the live rules while the daemon runs: ensures it
/// at start and whenever the snapshot's event set changes. Transient WTS failures are
/// retried with backoff in the background; a permanent one is logged and waits for the
/// next change of events.
pub struct SubscriptionKeeper {
    pub client: Arc<WtsClient>,
    pub engine: Arc<RuleEngine>,
    pub name: String,
    pub url: String,
    /// Backoff between attempts after a transient failure.
    pub retry: RetryPolicy,
    /// How often the snapshot is looked at for a change of events.
    pub check_every: Duration,
}

impl SubscriptionKeeper {
    /// The keeper `serve` runs: only with `webhook.public_url` and `wts.api_token` set.
    pub fn for_daemon(settings: &Settings, engine: Arc<RuleEngine>) -> Option<SubscriptionKeeper> {
        let url = settings
            .webhook
            .public_url
            .as_ref()?
            .expose_secret()
            .to_string();
        settings.wts.api_token.as_ref()?;
        let client = match WtsClient::from_settings(settings) {
            Ok(client) => client,
            Err(err) => {
                tracing::error!(error = %err, "cannot keep the webhook subscription");
                return None;
            }
        };
        Some(SubscriptionKeeper {
            client: Arc::new(client),
            engine,
            name: settings.webhook.name.clone(),
            url,
            retry: Self::default_retry(),
            check_every: Duration::from_secs(1),
        })
    }

    /// The retry policy of the daemon: 1 s doubling to 5 min, with no end.
    pub fn default_retry() -> RetryPolicy {
        RetryPolicy::exponential(Duration::from_secs(1), Duration::from_secs(300), u32::MAX)
    }

    /// Runs until `stop`; never fails, so a WTS outage cannot stop the daemon.
    pub async fn run(self, stop: CancellationToken) -> anyhow::Result<()> {
        let mut settled: Option<Vec<String>> = None;
        let mut retry = 0usize;
        while !stop.is_cancelled() {
            let events = subscription_events(self.engine.current().listened_events());
            let mut wait = self.check_every;
            if settled.as_ref() != Some(&events) {
                let desired = DesiredSubscription {
                    name: self.name.clone(),
                    url: self.url.clone(),
                    events: events.clone(),
                };
                match ensure_subscription(&self.client, &desired).await {
                    Ok(ensured) => {
                        log_ensured(&ensured);
                        settled = Some(events);
                        retry = 0;
                    }
                    Err(err) if err.is_retryable() => {
                        let error = err.wts_error().expect("a retryable error comes from WTS");
                        wait = self
                            .retry
                            .wait_before(retry, error)
                            .unwrap_or(self.check_every);
                        retry = retry.saturating_add(1);
                        tracing::warn!(
                            error.cause_chain = ?anyhow::Error::from(err), wait = ?wait,
                            "cannot ensure the webhook subscription; retrying"
                        );
                    }
                    Err(err) => {
                        tracing::error!(
                            error.cause_chain = ?anyhow::Error::from(err),
                            "cannot ensure the webhook subscription; trying again when the \
                             rules' events change"
                        );
                        settled = Some(events);
                        retry = 0;
                    }
                }
            }
            tokio::select! {
                _ = stop.cancelled() => break,
                _ = tokio::time::sleep(wait) => {}
            }
        }
        Ok(())
    }
}

fn log_ensured(ensured: &Ensured) {
    let subscription = ensured.subscription();
    let events = subscription.events.join(",");
    match ensured {
        Ensured::Created(_) => tracing::info!(
            subscription_id = %subscription.id, events, "webhook subscription created"
        ),
        Ensured::Updated { fields, .. } => tracing::info!(
            subscription_id = %subscription.id, events, fields = fields.join(","),
            "webhook subscription updated"
        ),
        Ensured::Unchanged(_) => tracing::info!(
            subscription_id = %subscription.id, events, "webhook subscription up to date"
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn existing(
        id: &str,
        name: &str,
        url: &str,
        enabled: bool,
        events: &[&str],
    ) -> WebhookSubscription {
        WebhookSubscription {
            id: id.into(),
            name: name.into(),
            url: url.into(),
            enabled,
            events: events.iter().map(|e| e.to_string()).collect(),
        }
    }

    fn desired(events: &[&str]) -> DesiredSubscription {
        DesiredSubscription {
            name: "wtsbot".into(),
            url: "https://bot.example.com/webhooks/wts/secret".into(),
            events: events.iter().map(|e| e.to_string()).collect(),
        }
    }

    #[test]
    fn events_are_the_rules_events_plus_the_built_in_listeners() {
        assert_eq!(
            subscription_events(["SESSION_NEW", "MESSAGE_RECEIVED", "SESSION_NEW"]),
            [
                "CONTACT_TAG_UPDATE",
                "MESSAGE_RECEIVED",
                "MESSAGE_UPDATED",
                "SESSION_COMPLETE",
                "SESSION_NEW",
                "SESSION_UPDATE"
            ]
        );
    }

    #[test]
    fn without_rules_the_subscription_still_hears_customer_messages() {
        assert_eq!(
            subscription_events(Vec::<String>::new()),
            [
                "CONTACT_TAG_UPDATE",
                "MESSAGE_RECEIVED",
                "MESSAGE_UPDATED",
                "SESSION_COMPLETE",
                "SESSION_UPDATE"
            ]
        );
    }

    #[test]
    fn command_line_events_are_checked_and_tidied() {
        assert_eq!(
            parse_events([" session_new", "MESSAGE_RECEIVED", "SESSION_NEW"]).unwrap(),
            ["MESSAGE_RECEIVED", "SESSION_NEW"]
        );
        let err = parse_events(["MESSAGE_RECIEVED"]).unwrap_err();
        assert!(
            err.to_string()
                .contains("unknown WTS event `MESSAGE_RECIEVED`"),
            "{err}"
        );
        assert!(matches!(
            parse_events([" "]),
            Err(RegistrationError::NoEvents)
        ));
    }

    #[test]
    fn nothing_matching_creates_an_enabled_subscription() {
        let others = [existing(
            "1",
            "crm",
            "https://crm.example.com/hook",
            true,
            &["CONTACT_NEW"],
        )];
        let change = plan_change(&others, &desired(&["MESSAGE_RECEIVED"]));
        assert_eq!(
            change,
            Change::Create(NewSubscription {
                name: "wtsbot".into(),
                url: "https://bot.example.com/webhooks/wts/secret".into(),
                enabled: true,
                events: vec!["MESSAGE_RECEIVED".into()],
            })
        );
    }

    #[test]
    fn the_same_events_in_another_order_change_nothing() {
        let want = desired(&["MESSAGE_RECEIVED", "SESSION_UPDATE"]);
        let current = existing(
            "1",
            "renamed",
            &want.url,
            true,
            &["SESSION_UPDATE", "MESSAGE_RECEIVED"],
        );
        assert_eq!(
            plan_change(std::slice::from_ref(&current), &want),
            Change::Unchanged(current)
        );
    }

    #[test]
    fn only_the_fields_that_differ_are_updated() {
        let want = desired(&["MESSAGE_RECEIVED", "SESSION_NEW"]);
        let current = existing("7", "wtsbot", &want.url, false, &["MESSAGE_RECEIVED"]);
        let Change::Update { id, update } = plan_change(&[current], &want) else {
            panic!("an update");
        };
        assert_eq!(id, "7");
        assert_eq!(
            update,
            SubscriptionUpdate {
                name: None,
                url: None,
                enabled: Some(true),
                events: Some(want.events.clone()),
            }
        );
        assert_eq!(update_fields(&update), ["Events", "Enabled"]);
    }

    #[test]
    fn the_url_is_matched_before_the_name() {
        let want = desired(&["MESSAGE_RECEIVED"]);
        let subscriptions = [
            existing(
                "by-name",
                "wtsbot",
                "https://old.example.com/webhooks/wts/x",
                true,
                &["MESSAGE_RECEIVED"],
            ),
            existing("by-url", "other", &want.url, true, &["MESSAGE_RECEIVED"]),
        ];
        let Change::Unchanged(found) = plan_change(&subscriptions, &want) else {
            panic!("unchanged");
        };
        assert_eq!(found.id, "by-url");
    }

    #[test]
    fn a_subscription_found_by_name_gets_the_new_url() {
        let want = desired(&["MESSAGE_RECEIVED"]);
        let old = existing(
            "3",
            "wtsbot",
            "https://old.example.com/webhooks/wts/x",
            true,
            &["MESSAGE_RECEIVED"],
        );
        let Change::Update { id, update } = plan_change(&[old], &want) else {
            panic!("an update");
        };
        assert_eq!(id, "3");
        assert_eq!(update.url.as_deref(), Some(want.url.as_str()));
        assert_eq!(update_fields(&update), ["Url"]);
    }

    #[test]
    fn only_wts_failures_that_may_pass_are_retryable() {
        let api = |status| WtsError::Api {
            status,
            key: Some("X".into()),
            text: None,
            retry_after: None,
        };
        assert!(RegistrationError::List(api(503)).is_retryable());
        assert!(RegistrationError::Create(WtsError::Connect("refused".into())).is_retryable());
        assert!(!RegistrationError::Create(api(400)).is_retryable());
        assert!(!RegistrationError::NoEvents.is_retryable());
    }
}
