//! The rule as admins write it: one TOML file in `rules/`, or the same shape as JSON in the
//! admin API. Values that need parsing (regex, hours, cooldown, templates) stay as written
//! here; [`Rule::validate`] reports every problem at once, and the engine compiles them.

use std::time::Duration;

use regex_syntax::ast::{self, Ast, ClassSetItem, Visitor};
use serde::{Deserialize, Serialize};

use super::hours::OpeningHours;
use super::normalize::{Keyword, normalize};
use super::template::Template;
use crate::error::FieldError;
use crate::webhook::envelope::KNOWN_EVENT_TYPES;

/// The events whose content is a message with a text and a type.
pub const MESSAGE_EVENTS: &[&str] = &["MESSAGE_RECEIVED", "MESSAGE_UPDATED"];

pub const DEFAULT_PRIORITY: i32 = 100;
pub const DEFAULT_EVENT: &str = "MESSAGE_RECEIVED";
/// Reserved for `POST /api/v1/rules/test`.
pub const RESERVED_ID: &str = "test";
pub const MAX_ID_LEN: usize = 64;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Rule {
    /// Stable slug: `[a-z0-9][a-z0-9_-]*`, at most 64 characters; `test` is reserved.
    pub id: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub name: String,
    #[serde(default = "default_true", skip_serializing_if = "is_true")]
    pub enabled: bool,
    /// Lower runs first; ties by id.
    #[serde(
        default = "default_priority",
        skip_serializing_if = "is_default_priority"
    )]
    pub priority: i32,
    /// WTS event names the rule listens to; never `MESSAGE_SENT`.
    #[serde(default = "default_on", skip_serializing_if = "is_default_on")]
    pub on: Vec<String>,
    /// Once this rule fires, no later rule fires for the same event.
    #[serde(default, skip_serializing_if = "is_false")]
    pub stop: bool,
    /// A humantime duration (`"24h"`): the rule stays quiet this long after it fired.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cooldown: Option<String>,
    #[serde(default, skip_serializing_if = "is_default")]
    pub cooldown_per: CooldownPer,
    #[serde(default, skip_serializing_if = "is_default")]
    pub when: When,
    /// Ordered reply steps.
    #[serde(default, rename = "reply", skip_serializing_if = "Vec::is_empty")]
    pub replies: Vec<Reply>,
}

/// Conditions; every present one must hold, and an empty list is no condition.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct When {
    /// Whole words or phrases, case- and accent-insensitive; a trailing `*` matches a prefix.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub text_any: Vec<String>,
    /// One regex, run on the normalised text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text_regex: Option<String>,
    /// Holds when no entry appears.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub text_none: Vec<String>,
    /// WTS message types (`TEXT`, `IMAGE`, ...), compared without regard to case; a message
    /// without a type fails this condition.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub message_types: Vec<String>,
    #[serde(default, skip_serializing_if = "is_default")]
    pub agent: AgentCondition,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub channel_ids: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub department_ids: Vec<String>,
    /// Tag names; any of them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub contact_tags: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hours: Option<Hours>,
    /// Holds exactly when the same `hours` would not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outside_hours: Option<Hours>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Hours {
    /// IANA time zone name, such as `America/Sao_Paulo`.
    pub tz: String,
    /// `mon`..`sun`; empty means every day.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub days: Vec<String>,
    /// `HH:MM-HH:MM`; an end before its start wraps past midnight; empty means all day.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub periods: Vec<String>,
    /// `YYYY-MM-DD` dates, always closed.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub holidays: Vec<String>,
}

/// Who may hold the session for the rule to fire.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum AgentCondition {
    /// Only while no human agent holds the session.
    #[default]
    None,
    /// Only while one does.
    Assigned,
    /// Either.
    Any,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum CooldownPer {
    #[default]
    Session,
    Contact,
}

/// One reply step: exactly one of `text`, `file` and `file_url`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Reply {
    /// A template: `Olá {{contact.name | "cliente"}}`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
    /// An asset name, such as `files/manual.pdf`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file_url: Option<String>,
    /// Send through `/message/sync`.
    #[serde(default, skip_serializing_if = "is_false")]
    pub sync: bool,
}

/// The outcome of [`Rule::validate`]: errors refuse the rule, warnings do not.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Validation {
    pub errors: Vec<FieldError>,
    pub warnings: Vec<FieldError>,
}

impl Validation {
    pub fn is_ok(&self) -> bool {
        self.errors.is_empty()
    }

    fn error(&mut self, field: impl Into<String>, message: impl Into<String>) {
        self.errors.push(FieldError::new(field, message));
    }

    fn warning(&mut self, field: impl Into<String>, message: impl Into<String>) {
        self.warnings.push(FieldError::new(field, message));
    }
}

impl Rule {
    /// The parsed `cooldown`; `None` when absent or invalid (validation reports the latter).
    pub fn cooldown_duration(&self) -> Option<Duration> {
        self.cooldown
            .as_deref()
            .and_then(|c| humantime::parse_duration(c).ok())
    }

    /// Whether the rule listens to any event that carries a message.
    pub fn listens_to_messages(&self) -> bool {
        self.on.iter().any(|e| MESSAGE_EVENTS.contains(&e.as_str()))
    }

    /// Every problem with the rule. `asset_exists` tells whether a `file` names a known asset.
    pub fn validate(&self, asset_exists: impl Fn(&str) -> bool) -> Validation {
        let mut v = Validation::default();
        validate_id(&self.id, &mut v);
        self.validate_events(&mut v);
        if let Some(cooldown) = &self.cooldown
            && let Err(e) = humantime::parse_duration(cooldown)
        {
            v.error(
                "cooldown",
                format!("invalid duration \"{cooldown}\": {e}; use e.g. \"30m\" or \"24h\""),
            );
        }
        self.when.validate(self.listens_to_messages(), &mut v);
        if self.replies.is_empty() {
            v.error("reply", "at least one [[reply]] step is required");
        }
        for (i, reply) in self.replies.iter().enumerate() {
            reply.validate(&format!("reply[{i}]"), &asset_exists, &mut v);
        }
        v
    }

    fn validate_events(&self, v: &mut Validation) {
        if self.on.is_empty() {
            v.error(
                "on",
                "at least one event is required, such as \"MESSAGE_RECEIVED\"",
            );
        }
        for (i, event) in self.on.iter().enumerate() {
            if event == "MESSAGE_SENT" {
                v.error(
                    format!("on[{i}]"),
                    "MESSAGE_SENT is refused: it reports wtsbot's own and agents' messages and would loop",
                );
            } else if !KNOWN_EVENT_TYPES.contains(&event.as_str()) {
                v.error(
                    format!("on[{i}]"),
                    format!(
                        "unknown event \"{event}\"; known: {}",
                        KNOWN_EVENT_TYPES.join(", ")
                    ),
                );
            }
        }
    }
}

fn validate_id(id: &str, v: &mut Validation) {
    let mut chars = id.chars();
    let slug = chars
        .next()
        .is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-');
    if !slug {
        v.error(
            "id",
            "must be a slug: lower-case letters, digits, '-' and '_', starting with a letter or digit",
        );
    } else if id.len() > MAX_ID_LEN {
        v.error("id", format!("must be at most {MAX_ID_LEN} characters"));
    } else if id == RESERVED_ID {
        v.error("id", "\"test\" is reserved");
    }
}

impl When {
    fn validate(&self, listens_to_messages: bool, v: &mut Validation) {
        for (key, entries) in [("text_any", &self.text_any), ("text_none", &self.text_none)] {
            for (i, entry) in entries.iter().enumerate() {
                if Keyword::parse(entry).is_none() {
                    v.warning(format!("when.{key}[{i}]"), "empty entry: it never matches");
                }
            }
        }
        if let Some(pattern) = &self.text_regex {
            validate_regex(pattern, v);
        }
        for (key, hours) in [
            ("hours", &self.hours),
            ("outside_hours", &self.outside_hours),
        ] {
            if let Some(hours) = hours
                && let Err(errors) = OpeningHours::parse(hours, &format!("when.{key}"))
            {
                v.errors.extend(errors);
            }
        }
        if !listens_to_messages {
            let text_conditions = [
                ("text_any", !self.text_any.is_empty()),
                ("text_regex", self.text_regex.is_some()),
                ("text_none", !self.text_none.is_empty()),
                ("message_types", !self.message_types.is_empty()),
            ];
            for (key, present) in text_conditions {
                if present {
                    v.warning(
                        format!("when.{key}"),
                        "the rule listens to no message event, so there is no message to test",
                    );
                }
            }
        }
    }
}

fn validate_regex(pattern: &str, v: &mut Validation) {
    if pattern.is_empty() {
        v.error(
            "when.text_regex",
            "an empty regex matches every message; remove the key instead",
        );
        return;
    }
    if let Err(e) = regex::Regex::new(pattern) {
        v.error("when.text_regex", regex_error_message(&e));
        return;
    }
    let literals = ast::parse::Parser::new()
        .parse(pattern)
        .ok()
        .and_then(|parsed| ast::visit(&parsed, LiteralCollector::default()).ok())
        .unwrap_or_default();
    let unmatchable: String = literals
        .into_iter()
        .filter(|c| c.is_alphabetic() && normalize(&c.to_string()) != c.to_string())
        .collect();
    if !unmatchable.is_empty() {
        v.warning(
            "when.text_regex",
            format!(
                "the literal characters \"{unmatchable}\" have upper case or accents and never match: \
                 the regex runs on lower-case text without accents"
            ),
        );
    }
}

/// The one-line cause of a regex error (`unclosed group`), without the caret diagram.
pub fn regex_error_message(error: &regex::Error) -> String {
    let full = error.to_string();
    full.lines()
        .find_map(|line| line.strip_prefix("error: "))
        .unwrap_or(&full)
        .to_string()
}

/// The literal characters of a regex, outside and inside bracketed classes.
#[derive(Default)]
struct LiteralCollector(Vec<char>);

impl Visitor for LiteralCollector {
    type Output = Vec<char>;
    type Err = std::convert::Infallible;

    fn finish(self) -> Result<Vec<char>, Self::Err> {
        Ok(self.0)
    }

    fn visit_pre(&mut self, ast: &Ast) -> Result<(), Self::Err> {
        if let Ast::Literal(literal) = ast {
            self.0.push(literal.c);
        }
        Ok(())
    }

    fn visit_class_set_item_pre(&mut self, item: &ClassSetItem) -> Result<(), Self::Err> {
        if let ClassSetItem::Literal(literal) = item {
            self.0.push(literal.c);
        }
        Ok(())
    }
}

impl Reply {
    fn validate(&self, path: &str, asset_exists: &impl Fn(&str) -> bool, v: &mut Validation) {
        let kinds = [
            self.text.is_some(),
            self.file.is_some(),
            self.file_url.is_some(),
        ];
        if kinds.iter().filter(|k| **k).count() != 1 {
            v.error(
                path,
                "each step needs exactly one of text, file and file_url",
            );
        }
        if let Some(text) = &self.text {
            if text.trim().is_empty() {
                v.error(format!("{path}.text"), "empty text");
            } else if let Err(e) = Template::parse(text) {
                v.error(format!("{path}.text"), e.to_string());
            }
        }
        if let Some(file) = &self.file
            && !asset_exists(file)
        {
            v.error(
                format!("{path}.file"),
                format!("no asset named \"{file}\"; put it under the rules directory or upload it"),
            );
        }
        if let Some(url) = &self.file_url {
            let valid = reqwest::Url::parse(url)
                .is_ok_and(|u| matches!(u.scheme(), "http" | "https") && u.host().is_some());
            if !valid {
                v.error(
                    format!("{path}.file_url"),
                    format!("\"{url}\" is not an http(s) URL"),
                );
            }
        }
    }
}

fn default_true() -> bool {
    true
}

fn is_true(value: &bool) -> bool {
    *value
}

fn is_false(value: &bool) -> bool {
    !*value
}

fn default_priority() -> i32 {
    DEFAULT_PRIORITY
}

fn is_default_priority(priority: &i32) -> bool {
    *priority == DEFAULT_PRIORITY
}

fn default_on() -> Vec<String> {
    vec![DEFAULT_EVENT.to_string()]
}

fn is_default_on(on: &[String]) -> bool {
    on.len() == 1 && on[0] == DEFAULT_EVENT
}

fn is_default<T: Default + PartialEq>(value: &T) -> bool {
    *value == T::default()
}

#[cfg(test)]
mod tests {
    use super::*;

    const FULL: &str = r#"
id = "manual"
name = "Send the installation manual"
priority = 10
cooldown = "24h"
cooldown_per = "contact"

[when]
text_any = ["manual", "instruções de instalação", "instal*"]
text_regex = "segunda\\s+via"
text_none = ["cancelar"]
message_types = ["TEXT"]
agent = "any"
hours = { tz = "America/Sao_Paulo", days = ["mon","tue"], periods = ["08:00-12:00", "22:00-02:00"], holidays = ["2026-12-25"] }

[[reply]]
text = "Olá {{contact.name | \"cliente\"}}, segue o manual:"
[[reply]]
file = "files/manual.pdf"
sync = true
[[reply]]
file_url = "https://cdn.example.com/step1.png"
"#;

    fn parse(text: &str) -> Rule {
        toml::from_str(text).unwrap_or_else(|e| panic!("{e}"))
    }

    fn minimal() -> Rule {
        parse("id = \"r\"\n[[reply]]\ntext = \"oi\"")
    }

    fn errors_of(rule: &Rule) -> Vec<(String, String)> {
        rule.validate(|name| name == "files/manual.pdf")
            .errors
            .into_iter()
            .map(|e| (e.field, e.message))
            .collect()
    }

    fn error_fields(rule: &Rule) -> Vec<String> {
        errors_of(rule).into_iter().map(|(f, _)| f).collect()
    }

    fn warning_fields(rule: &Rule) -> Vec<String> {
        rule.validate(|_| true)
            .warnings
            .into_iter()
            .map(|e| e.field)
            .collect()
    }

    #[test]
    fn full_example_is_valid() {
        let rule = parse(FULL);
        let validation = rule.validate(|name| name == "files/manual.pdf");
        assert_eq!(validation, Validation::default());
        assert_eq!(
            rule.cooldown_duration(),
            Some(Duration::from_secs(24 * 3600))
        );
        assert_eq!(rule.when.agent, AgentCondition::Any);
        assert!(rule.replies[1].sync);
    }

    #[test]
    fn defaults() {
        let rule = minimal();
        assert!(rule.enabled);
        assert_eq!(rule.priority, 100);
        assert_eq!(rule.on, ["MESSAGE_RECEIVED"]);
        assert!(!rule.stop);
        assert_eq!(rule.cooldown_duration(), None);
        assert_eq!(rule.cooldown_per, CooldownPer::Session);
        assert_eq!(rule.when.agent, AgentCondition::None);
    }

    #[test]
    fn serializes_back_without_defaults_in_toml_and_json() {
        assert_eq!(
            toml::to_string(&minimal()).unwrap(),
            "id = \"r\"\n\n[[reply]]\ntext = \"oi\"\n"
        );
        let full = parse(FULL);
        assert_eq!(parse(&toml::to_string(&full).unwrap()), full);
        let json = serde_json::to_value(&full).unwrap();
        assert_eq!(json["reply"][1]["file"], "files/manual.pdf");
        assert!(json.get("enabled").is_none());
        assert_eq!(serde_json::from_value::<Rule>(json).unwrap(), full);
    }

    #[test]
    fn unknown_keys_are_refused() {
        assert!(toml::from_str::<Rule>("id = \"r\"\ntexto = 1").is_err());
        assert!(toml::from_str::<Rule>("id = \"r\"\n[when]\ntext = [\"a\"]").is_err());
        assert!(serde_json::from_str::<Rule>(r#"{"id":"r","reply":[{"txt":"a"}]}"#).is_err());
        assert!(toml::from_str::<Rule>("id = \"r\"\n[when]\nagent = \"someone\"").is_err());
    }

    #[test]
    fn id_must_be_a_short_unreserved_slug() {
        for bad in ["", "Manual", "-manual", "manual price", "ação"] {
            let rule = Rule {
                id: bad.into(),
                ..minimal()
            };
            assert_eq!(error_fields(&rule), ["id"], "{bad:?}");
        }
        let long = Rule {
            id: "a".repeat(65),
            ..minimal()
        };
        assert_eq!(error_fields(&long), ["id"]);
        let reserved = Rule {
            id: "test".into(),
            ..minimal()
        };
        assert_eq!(
            errors_of(&reserved),
            [("id".into(), "\"test\" is reserved".into())]
        );
        for good in ["manual", "0-price_list", &"a".repeat(64)] {
            let rule = Rule {
                id: good.to_string(),
                ..minimal()
            };
            assert!(errors_of(&rule).is_empty(), "{good:?}");
        }
    }

    #[test]
    fn events_must_be_known_and_never_message_sent() {
        let rule = Rule {
            on: vec![
                "SESSION_NEW".into(),
                "MESSAGE_SENT".into(),
                "MESSAGE_RECIEVED".into(),
            ],
            ..minimal()
        };
        assert_eq!(error_fields(&rule), ["on[1]", "on[2]"]);
        let none = Rule {
            on: vec![],
            ..minimal()
        };
        assert_eq!(error_fields(&none), ["on"]);
    }

    #[test]
    fn regex_must_compile_and_not_be_empty() {
        let mut rule = minimal();
        rule.when.text_regex = Some("segunda(\\s+via".into());
        assert_eq!(
            errors_of(&rule),
            [("when.text_regex".into(), "unclosed group".into())]
        );
        rule.when.text_regex = Some(String::new());
        assert_eq!(error_fields(&rule), ["when.text_regex"]);
    }

    #[test]
    fn hours_errors_carry_their_paths() {
        let mut rule = minimal();
        rule.when.hours = Some(Hours {
            tz: "America/Sao_Paulo".into(),
            periods: vec!["08:00-12:00".into(), "8-12".into()],
            ..Hours::default()
        });
        rule.when.outside_hours = Some(Hours {
            tz: "Nowhere/City".into(),
            days: vec!["sab".into()],
            holidays: vec!["25/12/2026".into()],
            ..Hours::default()
        });
        assert_eq!(
            error_fields(&rule),
            [
                "when.hours.periods[1]",
                "when.outside_hours.tz",
                "when.outside_hours.days[0]",
                "when.outside_hours.holidays[0]"
            ]
        );
    }

    #[test]
    fn replies_are_required_and_each_has_exactly_one_kind() {
        let mut rule = minimal();
        rule.replies.clear();
        assert_eq!(error_fields(&rule), ["reply"]);
        rule.replies = vec![
            Reply::default(),
            Reply {
                text: Some("a".into()),
                file: Some("files/manual.pdf".into()),
                ..Reply::default()
            },
        ];
        assert_eq!(error_fields(&rule), ["reply[0]", "reply[1]"]);
    }

    #[test]
    fn reply_contents_are_checked() {
        let mut rule = minimal();
        rule.replies = vec![
            Reply {
                text: Some("Olá {{contact.nome}}".into()),
                ..Reply::default()
            },
            Reply {
                file: Some("files/missing.pdf".into()),
                ..Reply::default()
            },
            Reply {
                file_url: Some("ftp://example.com/a.pdf".into()),
                ..Reply::default()
            },
            Reply {
                file_url: Some("not a url".into()),
                ..Reply::default()
            },
            Reply {
                text: Some("  ".into()),
                ..Reply::default()
            },
            Reply {
                file: Some("files/manual.pdf".into()),
                ..Reply::default()
            },
        ];
        assert_eq!(
            error_fields(&rule),
            [
                "reply[0].text",
                "reply[1].file",
                "reply[2].file_url",
                "reply[3].file_url",
                "reply[4].text"
            ]
        );
        assert!(
            errors_of(&rule)[0]
                .1
                .contains("unknown variable `contact.nome`")
        );
    }

    #[test]
    fn cooldown_must_parse() {
        let rule = Rule {
            cooldown: Some("one day".into()),
            ..minimal()
        };
        assert_eq!(error_fields(&rule), ["cooldown"]);
    }

    #[test]
    fn every_problem_is_reported_at_once() {
        let rule = parse(
            "id = \"Bad Id\"\non = [\"MESSAGE_SENT\"]\ncooldown = \"x\"\n[when]\ntext_regex = \"(\"\n",
        );
        assert_eq!(
            error_fields(&rule),
            ["id", "on[0]", "cooldown", "when.text_regex", "reply"]
        );
    }

    #[test]
    fn warnings() {
        let mut rule = minimal();
        rule.when.text_regex = Some("Segunda via|instalação|[Á]|\\S+|[A-Z]".into());
        rule.when.text_any = vec!["manual".into(), " ".into()];
        assert_eq!(
            warning_fields(&rule),
            ["when.text_any[1]", "when.text_regex"]
        );
        let message = &rule.validate(|_| true).warnings[1].message;
        assert!(message.contains("\"SçãÁ\""), "{message}");
        assert!(rule.validate(|_| true).is_ok());

        let mut welcome = minimal();
        welcome.on = vec!["SESSION_NEW".into()];
        welcome.when.text_any = vec!["oi".into()];
        welcome.when.message_types = vec!["TEXT".into()];
        assert_eq!(
            warning_fields(&welcome),
            ["when.text_any", "when.message_types"]
        );
    }
}
