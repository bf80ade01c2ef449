//! Settings: the embedded `config/default.toml`, then an optional file, then
//! `WTSBOT__SECTION__KEY` environment variables (later wins).

use std::path::{Path, PathBuf};
use std::time::Duration;

use bytesize::ByteSize;
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Deserializer, Serialize};

/// The documented defaults, compiled in so the binary runs from any directory.
pub const DEFAULT_TOML: &str = include_str!("../config/default.toml");

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot load configuration: {0}")]
    Load(#[from] config::ConfigError),
    #[error("invalid configuration: {key}: {message}")]
    Invalid { key: &'static str, message: String },
}

#[derive(Debug, Clone, Deserialize)]
pub struct Settings {
    pub server: ServerSettings,
    pub database: DatabaseSettings,
    pub wts: WtsSettings,
    pub webhook: WebhookSettings,
    pub admin: AdminSettings,
    pub rules: RulesSettings,
    pub files: FilesSettings,
    pub bot: BotSettings,
    pub history: HistorySettings,
    pub log: LogSettings,
}

#[derive(Debug, Clone, Deserialize)]
pub struct ServerSettings {
    pub bind: String,
    /// The address admins open (`https://bot.example.com`): UI cookies are `Secure` when
    /// it is HTTPS, and the UI's `Origin` check uses it behind a proxy.
    pub public_url: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct DatabaseSettings {
    pub url: SecretString,
    pub synchronous: Synchronous,
    pub max_connections: u32,
    /// A database call that takes longer fails (webhooks answer 503).
    #[serde(with = "humantime_serde")]
    pub statement_timeout: Duration,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Synchronous {
    Full,
    Normal,
}

/// Which database `database.url` points at, from its scheme.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

impl DatabaseSettings {
    pub fn backend(&self) -> Result<Backend, ConfigError> {
        backend_of(self.url.expose_secret())
    }
}

pub fn backend_of(url: &str) -> Result<Backend, ConfigError> {
    if url.starts_with("sqlite:") {
        Ok(Backend::Sqlite)
    } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        Ok(Backend::Postgres)
    } else {
        Err(ConfigError::Invalid {
            key: "database.url",
            message: "must start with sqlite:// or postgres://".into(),
        })
    }
}

#[derive(Debug, Clone, Deserialize)]
pub struct WtsSettings {
    pub base_url: String,
    pub api_token: Option<SecretString>,
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
    #[serde(with = "humantime_serde")]
    pub connect_timeout: Duration,
    pub pacing: bool,
    pub requests_per_5s: u32,
    pub requests_per_5min: u32,
}

#[derive(Debug, Clone, Deserialize)]
pub struct WebhookSettings {
    pub token: Option<SecretString>,
    pub max_body: ByteSize,
    pub public_url: Option<SecretString>,
    pub name: String,
}

#[derive(Debug, Clone, Deserialize)]
pub struct AdminSettings {
    pub token: Option<SecretString>,
    /// How long a UI sign-in lasts.
    #[serde(with = "humantime_serde")]
    pub session_ttl: Duration,
    /// The IANA zone the UI shows times and "today" in.
    pub timezone: chrono_tz::Tz,
}

#[derive(Debug, Clone, Deserialize)]
pub struct RulesSettings {
    pub dir: PathBuf,
    /// Who writes `rules.dir` into the database.
    pub sync: RulesSync,
    /// The compiled size of all regexes together; a write past it is refused.
    pub regex_size_limit: ByteSize,
}

/// `rules.sync`: whether this instance writes its `rules.dir` into the database.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum RulesSync {
    /// At start and when this instance's own files change (watch, SIGHUP).
    Auto,
    /// Never; `wtsbot rules sync [DIR]` does it.
    Manual,
}

#[derive(Debug, Clone, Deserialize)]
pub struct FilesSettings {
    pub max_size: ByteSize,
}

#[derive(Debug, Clone, Deserialize)]
pub struct BotSettings {
    pub direction: String,
    pub session_reply_cap: u32,
    #[serde(with = "humantime_serde")]
    pub session_reply_window: Duration,
    #[serde(with = "humantime_serde")]
    pub max_reply_age: Duration,
    #[serde(deserialize_with = "duration_list")]
    pub retry_schedule: Vec<Duration>,
    #[serde(with = "humantime_serde")]
    pub session_cache_ttl: Duration,
    pub senders: usize,
    /// Sends in flight at once per instance (one per session at a time).
    pub max_in_flight: usize,
    #[serde(with = "humantime_serde")]
    pub lease: Duration,
    /// The longest WTS `Retry-After` honoured; a longer one is cut to it.
    #[serde(with = "humantime_serde")]
    pub max_retry_after: Duration,
}

#[derive(Debug, Clone, Deserialize)]
pub struct HistorySettings {
    #[serde(with = "humantime_serde")]
    pub retention: Duration,
}

#[derive(Debug, Clone, Deserialize)]
pub struct LogSettings {
    pub format: LogFormat,
    pub level: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Pretty,
    Json,
}

impl Settings {
    /// Defaults, then `file` if given, then the process environment.
    pub fn load(file: Option<&Path>) -> Result<Self, ConfigError> {
        Self::load_with_env(file, std::env::vars())
    }

    /// As [`Settings::load`], with the environment given explicitly (tests).
    pub fn load_with_env(
        file: Option<&Path>,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Self, ConfigError> {
        let mut builder = config::Config::builder().add_source(config::File::from_str(
            DEFAULT_TOML,
            config::FileFormat::Toml,
        ));
        if let Some(path) = file {
            builder = builder.add_source(config::File::from(path).required(true));
        }
        // Values stay strings (`00123` is a token, not 123); typed fields parse them.
        let env: config::Map<String, String> = env
            .into_iter()
            .filter(|(k, _)| k.starts_with("WTSBOT__"))
            .collect();
        builder = builder.add_source(
            config::Environment::with_prefix("WTSBOT")
                .prefix_separator("__")
                .separator("__")
                .try_parsing(false)
                .source(Some(env)),
        );
        let settings: Settings = builder.build()?.try_deserialize()?;
        settings.validate()?;
        Ok(settings)
    }

    fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |key, message: &str| {
            Err(ConfigError::Invalid {
                key,
                message: message.to_string(),
            })
        };
        self.database.backend()?;
        if self.wts.requests_per_5s == 0 || self.wts.requests_per_5min == 0 {
            return invalid("wts.requests_per_5s", "request budgets must be above zero");
        }
        if !self.wts.base_url.starts_with("http://") && !self.wts.base_url.starts_with("https://") {
            return invalid("wts.base_url", "must be an http:// or https:// URL");
        }
        if self.bot.retry_schedule.is_empty() {
            return invalid("bot.retry_schedule", "needs at least one wait");
        }
        if self.bot.senders == 0 {
            return invalid("bot.senders", "must be at least 1");
        }
        if self.bot.max_in_flight == 0 {
            return invalid("bot.max_in_flight", "must be at least 1");
        }
        if self.bot.lease < Duration::from_millis(100) {
            return invalid("bot.lease", "must be at least 100ms");
        }
        if self.database.statement_timeout.is_zero() {
            return invalid("database.statement_timeout", "must be above zero");
        }
        if self.rules.regex_size_limit.as_u64() == 0 {
            return invalid("rules.regex_size_limit", "must be above zero");
        }
        if let Some(url) = &self.server.public_url
            && !url.starts_with("http://")
            && !url.starts_with("https://")
        {
            return invalid("server.public_url", "must be an http:// or https:// URL");
        }
        if self.bot.direction.trim().is_empty() {
            return invalid("bot.direction", "must not be empty");
        }
        if let Some(token) = &self.webhook.token
            && token.expose_secret().len() < 16
        {
            return invalid("webhook.token", "must be at least 16 characters");
        }
        if let Some(token) = &self.admin.token
            && token.expose_secret().len() < 16
        {
            return invalid("admin.token", "must be at least 16 characters");
        }
        if self.webhook.max_body.as_u64() == 0 {
            return invalid("webhook.max_body", "must be above zero");
        }
        Ok(())
    }

    /// The effective configuration as TOML, every secret masked.
    pub fn to_masked_toml(&self) -> String {
        let mask = |s: &Option<SecretString>| s.as_ref().map(|_| "********".to_string());
        let url = mask_url_password(self.database.url.expose_secret());
        let public_url = self
            .webhook
            .public_url
            .as_ref()
            .map(|u| mask_webhook_token(u.expose_secret()));
        let durations = |d: &[Duration]| {
            d.iter()
                .map(|d| humantime::format_duration(*d).to_string())
                .collect::<Vec<_>>()
        };
        let h = |d: Duration| humantime::format_duration(d).to_string();
        let value = serde_json::json!({
            "server": { "bind": self.server.bind, "public_url": self.server.public_url },
            "database": {
                "url": url, "synchronous": self.database.synchronous,
                "max_connections": self.database.max_connections,
                "statement_timeout": h(self.database.statement_timeout),
            },
            "wts": {
                "base_url": self.wts.base_url, "api_token": mask(&self.wts.api_token),
                "timeout": h(self.wts.timeout), "connect_timeout": h(self.wts.connect_timeout),
                "pacing": self.wts.pacing, "requests_per_5s": self.wts.requests_per_5s,
                "requests_per_5min": self.wts.requests_per_5min,
            },
            "webhook": {
                "token": mask(&self.webhook.token), "max_body": self.webhook.max_body.to_string(),
                "public_url": public_url, "name": self.webhook.name,
            },
            "admin": {
                "token": mask(&self.admin.token), "session_ttl": h(self.admin.session_ttl),
                "timezone": self.admin.timezone.name(),
            },
            "rules": {
                "dir": self.rules.dir, "sync": self.rules.sync,
                "regex_size_limit": self.rules.regex_size_limit.to_string(),
            },
            "files": { "max_size": self.files.max_size.to_string() },
            "bot": {
                "direction": self.bot.direction, "session_reply_cap": self.bot.session_reply_cap,
                "session_reply_window": h(self.bot.session_reply_window),
                "max_reply_age": h(self.bot.max_reply_age),
                "retry_schedule": durations(&self.bot.retry_schedule),
                "session_cache_ttl": h(self.bot.session_cache_ttl),
                "senders": self.bot.senders, "max_in_flight": self.bot.max_in_flight,
                "lease": h(self.bot.lease), "max_retry_after": h(self.bot.max_retry_after),
            },
            "history": { "retention": h(self.history.retention) },
            "log": { "format": self.log.format, "level": self.log.level },
        });
        toml::to_string_pretty(&without_nulls(value)).unwrap_or_default()
    }
}

fn without_nulls(value: serde_json::Value) -> serde_json::Value {
    match value {
        serde_json::Value::Object(map) => map
            .into_iter()
            .filter(|(_, v)| !v.is_null())
            .map(|(k, v)| (k, without_nulls(v)))
            .collect(),
        other => other,
    }
}

/// `postgres://user:secret@host/db` -> `postgres://user:********@host/db`.
pub fn mask_url_password(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_string();
    };
    let Some((userinfo, host)) = rest.split_once('@') else {
        return url.to_string();
    };
    match userinfo.split_once(':') {
        Some((user, _)) => format!("{scheme}://{user}:********@{host}"),
        None => url.to_string(),
    }
}

/// Masks the last path segment of a webhook URL: that segment is the secret token.
pub fn mask_webhook_token(url: &str) -> String {
    match url.rsplit_once('/') {
        Some((head, tail)) if !tail.is_empty() => format!("{head}/********"),
        _ => url.to_string(),
    }
}

/// A list of humantime durations, or one comma-separated string (as environment
/// variables give it: `1s,5s,30s`).
fn duration_list<'de, D: Deserializer<'de>>(de: D) -> Result<Vec<Duration>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Raw {
        List(Vec<String>),
        One(String),
    }
    let items = match Raw::deserialize(de)? {
        Raw::List(items) => items,
        Raw::One(s) => s.split(',').map(str::to_string).collect(),
    };
    items
        .iter()
        .map(|s| s.trim())
        .filter(|s| !s.is_empty())
        .map(|s| {
            humantime::parse_duration(s)
                .map_err(|e| serde::de::Error::custom(format!("`{s}`: {e}")))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn embedded_defaults_load() {
        let s = Settings::load_with_env(None, env(&[])).unwrap();
        assert_eq!(s.server.bind, "127.0.0.1:8080");
        assert_eq!(s.database.backend().unwrap(), Backend::Sqlite);
        assert_eq!(s.database.synchronous, Synchronous::Full);
        assert_eq!(s.wts.requests_per_5s, 200);
        assert_eq!(s.wts.requests_per_5min, 1000);
        assert!(s.wts.api_token.is_none());
        assert_eq!(s.webhook.max_body.as_u64(), 1024 * 1024);
        assert_eq!(s.bot.retry_schedule.len(), 5);
        assert_eq!(s.bot.max_reply_age, Duration::from_secs(15 * 60));
        assert_eq!(s.history.retention, Duration::from_secs(30 * 86400));
        assert_eq!(s.log.format, LogFormat::Pretty);
        assert_eq!(s.bot.max_retry_after, Duration::from_secs(5 * 60));
        assert_eq!(s.bot.max_in_flight, 32);
        assert_eq!(s.database.statement_timeout, Duration::from_secs(5));
        assert_eq!(s.rules.sync, RulesSync::Auto);
        assert_eq!(s.rules.regex_size_limit.as_u64(), 32 * 1024 * 1024);
        assert_eq!(s.admin.session_ttl, Duration::from_secs(12 * 3600));
        assert_eq!(s.admin.timezone, chrono_tz::America::Sao_Paulo);
        assert!(s.server.public_url.is_none());
    }

    #[test]
    fn environment_overrides_and_keeps_tokens_as_strings() {
        let s = Settings::load_with_env(
            None,
            env(&[
                ("WTSBOT__WTS__REQUESTS_PER_5S", "7"),
                ("WTSBOT__WTS__API_TOKEN", "00123"),
                ("WTSBOT__WTS__PACING", "false"),
                ("WTSBOT__BOT__RETRY_SCHEDULE", "1s,5s, 30s"),
                ("WTSBOT__WEBHOOK__MAX_BODY", "2MiB"),
                ("OTHER__WTS__REQUESTS_PER_5S", "9"),
            ]),
        )
        .unwrap();
        assert_eq!(s.wts.requests_per_5s, 7);
        assert_eq!(s.wts.api_token.unwrap().expose_secret(), "00123");
        assert!(!s.wts.pacing);
        assert_eq!(
            s.bot.retry_schedule,
            vec![
                Duration::from_secs(1),
                Duration::from_secs(5),
                Duration::from_secs(30)
            ]
        );
        assert_eq!(s.webhook.max_body.as_u64(), 2 * 1024 * 1024);
    }

    #[test]
    fn file_then_environment_later_wins() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("wtsbot.toml");
        std::fs::write(
            &path,
            "[server]\nbind = \"0.0.0.0:9000\"\n[bot]\nsession_reply_cap = 9\n",
        )
        .unwrap();
        let s =
            Settings::load_with_env(Some(&path), env(&[("WTSBOT__BOT__SESSION_REPLY_CAP", "3")]))
                .unwrap();
        assert_eq!(s.server.bind, "0.0.0.0:9000");
        assert_eq!(s.bot.session_reply_cap, 3);
    }

    #[test]
    fn unknown_database_scheme_is_refused() {
        let err = Settings::load_with_env(None, env(&[("WTSBOT__DATABASE__URL", "mysql://x")]))
            .unwrap_err();
        assert!(err.to_string().contains("database.url"), "{err}");
    }

    #[test]
    fn masked_output_hides_every_secret() {
        let s = Settings::load_with_env(
            None,
            env(&[
                ("WTSBOT__WTS__API_TOKEN", "pn_supersecret"),
                ("WTSBOT__ADMIN__TOKEN", "admin-token-0123456789"),
                ("WTSBOT__WEBHOOK__TOKEN", "hook-token-0123456789"),
                (
                    "WTSBOT__WEBHOOK__PUBLIC_URL",
                    "https://bot.example.com/webhooks/wts/hook-token-0123456789",
                ),
                ("WTSBOT__DATABASE__URL", "postgres://bot:dbpass@db/wtsbot"),
            ]),
        )
        .unwrap();
        let out = s.to_masked_toml();
        for secret in [
            "pn_supersecret",
            "admin-token-0123456789",
            "hook-token-0123456789",
            "dbpass",
        ] {
            assert!(!out.contains(secret), "{secret} leaked in:\n{out}");
        }
        assert!(out.contains("postgres://bot:********@db/wtsbot"), "{out}");
        assert!(out.contains("https://bot.example.com/webhooks/wts/********"));
    }
}
