//! `wtsbot webhook register|list|unregister`: wtsbot's subscription with WTS, by hand.

use std::collections::BTreeSet;

use anyhow::Context;

use crate::cli::WebhookCommand;
use crate::config::{Settings, mask_webhook_token};
use crate::registration::{self, DesiredSubscription, Ensured, parse_events, subscription_events};
use crate::rules::load_dir;
use crate::store::Store;
use crate::wts::{WebhookSubscription, WtsClient};

pub async fn run(settings: &Settings, command: WebhookCommand) -> anyhow::Result<()> {
    match command {
        WebhookCommand::Register { url, events } => register(settings, &url, &events).await,
        WebhookCommand::List => list(settings).await,
        WebhookCommand::Unregister { url } => unregister(settings, &url).await,
    }
}

async fn register(settings: &Settings, url: &str, events: &[String]) -> anyhow::Result<()> {
    check_url(url)?;
    let events = if events.is_empty() {
        subscription_events(enabled_rule_events(settings).await?)
    } else {
        parse_events(events)?
    };
    let client = WtsClient::from_settings(settings)?;
    let desired = DesiredSubscription {
        name: settings.webhook.name.clone(),
        url: url.to_string(),
        events,
    };
    let ensured = registration::ensure_subscription(&client, &desired).await?;
    let subscription = ensured.subscription();
    match &ensured {
        Ensured::Created(_) => println!("Created webhook subscription {}.", subscription.id),
        Ensured::Updated { fields, .. } => println!(
            "Updated webhook subscription {} ({}).",
            subscription.id,
            fields.join(", ")
        ),
        Ensured::Unchanged(_) => println!(
            "Webhook subscription {} is up to date; nothing changed.",
            subscription.id
        ),
    }
    print_subscription(subscription);
    Ok(())
}

async fn list(settings: &Settings) -> anyhow::Result<()> {
    let client = WtsClient::from_settings(settings)?;
    let subscriptions = client
        .list_subscriptions()
        .await
        .context("cannot list the webhook subscriptions")?;
    if subscriptions.is_empty() {
        println!("No webhook subscriptions.");
    }
    for (index, subscription) in subscriptions.iter().enumerate() {
        if index > 0 {
            println!();
        }
        println!("{}", subscription.id);
        print_subscription(subscription);
    }
    Ok(())
}

async fn unregister(settings: &Settings, url: &str) -> anyhow::Result<()> {
    let client = WtsClient::from_settings(settings)?;
    let deleted = registration::unregister(&client, url).await?;
    if deleted.is_empty() {
        anyhow::bail!(
            "no webhook subscription has the URL {}; `wtsbot webhook list` shows them",
            mask_webhook_token(url)
        );
    }
    for subscription in deleted {
        println!(
            "Deleted webhook subscription {} ({}).",
            subscription.id, subscription.name
        );
    }
    Ok(())
}

/// Name, URL (its token masked), state and events, indented under the id.
fn print_subscription(subscription: &WebhookSubscription) {
    println!("  name:    {}", subscription.name);
    println!("  url:     {}", mask_webhook_token(&subscription.url));
    println!(
        "  enabled: {}",
        if subscription.enabled { "yes" } else { "no" }
    );
    println!("  events:  {}", subscription.events.join(", "));
}

fn check_url(url: &str) -> anyhow::Result<()> {
    let parsed = url::Url::parse(url).with_context(|| format!("`{url}` is not a URL"))?;
    if !matches!(parsed.scheme(), "http" | "https") {
        anyhow::bail!("the webhook URL must start with https:// (or http://)");
    }
    Ok(())
}

/// The events the enabled rules listen to: the rule files in `rules.dir` (when it exists)
/// and the rules kept in the database. Where the directory exists it is the truth for
/// file rules, whose database copies may predate the last sync.
async fn enabled_rule_events(settings: &Settings) -> anyhow::Result<BTreeSet<String>> {
    let mut rules = Vec::new();
    let dir = &settings.rules.dir;
    let read_dir = dir.is_dir();
    if read_dir {
        let loaded = load_dir(dir).map_err(|errors| {
            let lines: Vec<String> = errors.iter().map(ToString::to_string).collect();
            anyhow::anyhow!(
                "cannot read the rules in {}:\n  {}",
                dir.display(),
                lines.join("\n  ")
            )
        })?;
        rules.extend(loaded.rules.into_iter().map(|sourced| sourced.rule));
    }
    let store = Store::connect(&settings.database)
        .await
        .context("cannot open the database")?;
    store
        .migrate()
        .await
        .context("cannot migrate the database")?;
    let rows = store
        .list_rules()
        .await
        .context("cannot read the rules in the database")?;
    store.close().await;
    for row in rows.iter().filter(|row| !(read_dir && row.is_from_file())) {
        let rule = row
            .rule()
            .with_context(|| format!("rule `{}` in the database cannot be read", row.id))?;
        rules.push(rule);
    }
    Ok(rules
        .into_iter()
        .filter(|rule| rule.enabled)
        .flat_map(|rule| rule.on)
        .collect())
}
