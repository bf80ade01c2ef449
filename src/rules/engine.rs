//! The matching engine: an immutable [`Snapshot`] compiled from the enabled rules, and the
//! [`RuleEngine`] that holds the live one and swaps it atomically.
//!
//! Every keyword of every rule sits in one Aho-Corasick automaton and every regex in one
//! `RegexSet`, so a message is normalised and scanned once, whatever the number of rules.
//! Only the rules the scan points at (plus the few with no text condition) are evaluated.
//!
//! Matching is pure: the arrival time comes in with the event, and session data is passed in
//! by the caller. Cooldowns, the per-session cap and `stop` depend on stored state and are the
//! planner's; evaluations come in snapshot order with the rule attached so it can walk them.
//!
//! Without session data (`session = None`, the dry-run mode without a WTS token), no agent is
//! assumed: `agent = "none"` holds and `agent = "assigned"` does not; channel, department and
//! tag conditions do not hold and say "no session data".

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Duration;

use aho_corasick::{AhoCorasick, MatchKind};
use arc_swap::ArcSwap;
use chrono::{DateTime, Utc};
use regex::{Regex, RegexSet};
use serde::{Deserialize, Serialize};

use super::hours::OpeningHours;
use super::model::{AgentCondition, Rule};
use super::normalize::{Keyword, is_word_char, normalize};
use super::template::{Template, TemplateError, TemplateVars};
use crate::error::FieldError;
use crate::metrics::METRICS;

/// What the engine sees of one event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MatchInput<'a> {
    pub event_type: &'a str,
    /// The message text; `None` for media messages and non-message events.
    pub text: Option<&'a str>,
    /// The WTS message `type` (`TEXT`, `IMAGE`, ...).
    pub message_type: Option<&'a str>,
    /// When the event reached wtsbot: every time-based decision uses it.
    pub arrived_at: DateTime<Utc>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentFacts {
    pub id: String,
    pub name: Option<String>,
}

/// Session details from `GET /chat/v2/session/{id}`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionFacts {
    /// The human agent holding the session, if any.
    pub agent: Option<AgentFacts>,
    pub channel_id: Option<String>,
    pub department_id: Option<String>,
    pub contact_id: Option<String>,
    pub contact_name: Option<String>,
    pub contact_phone: Option<String>,
    pub contact_tags: Vec<String>,
}

/// One condition of one rule, decided.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConditionResult {
    /// The key in `[when]` (`text_any`, `hours`, ...) or `on`.
    pub condition: String,
    pub result: bool,
    /// Why, for people: `matched "manual"`, `sat 2026-03-07 10:00 America/Sao_Paulo: closed`.
    pub detail: String,
}

/// How one rule fared against one event.
#[derive(Debug, Clone)]
pub struct RuleEvaluation {
    pub rule: Arc<Rule>,
    pub conditions: Vec<ConditionResult>,
    /// Every condition holds.
    pub matched: bool,
}

impl RuleEvaluation {
    pub fn cooldown(&self) -> Option<Duration> {
        self.rule.cooldown_duration()
    }
}

/// One reply step with its text rendered, ready to be planned as a job.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlannedReply {
    /// The step's index in the rule's `[[reply]]` list.
    pub step: usize,
    pub content: ReplyContent,
    pub sync: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ReplyContent {
    Text(String),
    /// An asset name, such as `files/manual.pdf`.
    File(String),
    FileUrl(String),
}

#[derive(Debug, thiserror::Error)]
pub enum CompileError {
    #[error("invalid rules: {}", describe_invalid(.0))]
    InvalidRules(Vec<(String, Vec<FieldError>)>),
    #[error("duplicate rule id \"{0}\"")]
    DuplicateId(String),
    #[error("cannot build the keyword automaton: {0}")]
    Keywords(#[from] aho_corasick::BuildError),
    #[error("cannot build the regex set: {0}")]
    Regexes(#[from] regex::Error),
}

fn describe_invalid(rules: &[(String, Vec<FieldError>)]) -> String {
    rules
        .iter()
        .flat_map(|(id, errors)| {
            errors
                .iter()
                .map(move |e| format!("{id}: {}: {}", e.field, e.message))
        })
        .collect::<Vec<_>>()
        .join("; ")
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum KeywordList {
    Any,
    None,
}

/// Where one automaton pattern is used: rule, list, entry, and whether it is a prefix.
#[derive(Debug, Clone, Copy)]
struct KeywordUse {
    rule: u32,
    list: KeywordList,
    entry: u32,
    prefix: bool,
}

#[derive(Debug)]
struct CompiledRule {
    rule: Arc<Rule>,
    regex: Option<Regex>,
    hours: Option<OpeningHours>,
    outside_hours: Option<OpeningHours>,
    /// Normalised tag names.
    contact_tags: Vec<String>,
    /// Has `text_any` or `text_regex`: it can only match when the scan points at it.
    has_text_condition: bool,
    needs_session: bool,
}

/// An immutable, compiled set of enabled rules in order of (priority, id).
#[derive(Debug)]
pub struct Snapshot {
    rules: Vec<CompiledRule>,
    keywords: AhoCorasick,
    /// By automaton pattern id.
    keyword_uses: Vec<Vec<KeywordUse>>,
    regexes: RegexSet,
    /// By regex set index: the rule it belongs to.
    regex_rules: Vec<u32>,
    /// Rules without `text_any` and `text_regex`, evaluated for every event.
    textless_rules: Vec<u32>,
}

/// What the scan of one message found.
struct TextScan {
    normalized: Option<String>,
    /// Sorted by (rule, list, entry).
    keyword_hits: Vec<(u32, KeywordList, u32)>,
    /// Sorted rule indices whose regex matched.
    regex_hits: Vec<u32>,
}

impl TextScan {
    fn first_keyword_hit(&self, rule: u32, list: KeywordList) -> Option<u32> {
        let start = self
            .keyword_hits
            .partition_point(|h| (h.0, h.1) < (rule, list));
        self.keyword_hits
            .get(start)
            .filter(|h| h.0 == rule && h.1 == list)
            .map(|h| h.2)
    }

    fn regex_hit(&self, rule: u32) -> bool {
        self.regex_hits.binary_search(&rule).is_ok()
    }
}

impl Snapshot {
    pub fn empty() -> Snapshot {
        Snapshot::compile(Vec::new()).expect("an empty rule set always compiles")
    }

    /// Compiles the enabled rules. Every rule is validated (assets aside); any invalid rule
    /// or duplicate id fails the whole snapshot, so the caller keeps its last good one.
    pub fn compile(rules: impl IntoIterator<Item = Rule>) -> Result<Snapshot, CompileError> {
        let mut rules: Vec<Rule> = rules.into_iter().filter(|r| r.enabled).collect();
        let invalid: Vec<(String, Vec<FieldError>)> = rules
            .iter()
            .map(|r| (r.id.clone(), r.validate(|_| true).errors))
            .filter(|(_, errors)| !errors.is_empty())
            .collect();
        if !invalid.is_empty() {
            return Err(CompileError::InvalidRules(invalid));
        }
        rules.sort_by(|a, b| (a.priority, &a.id).cmp(&(b.priority, &b.id)));
        if let Some(pair) = rules.windows(2).find(|w| w[0].id == w[1].id) {
            return Err(CompileError::DuplicateId(pair[0].id.clone()));
        }

        let mut patterns: Vec<String> = Vec::new();
        let mut pattern_ids: HashMap<String, usize> = HashMap::new();
        let mut keyword_uses: Vec<Vec<KeywordUse>> = Vec::new();
        let mut regex_sources = Vec::new();
        let mut regex_rules = Vec::new();
        let mut textless_rules = Vec::new();
        let mut compiled = Vec::with_capacity(rules.len());
        for (index, rule) in rules.into_iter().enumerate() {
            let index = u32::try_from(index).expect("fewer than 2^32 rules");
            let lists = [
                (KeywordList::Any, &rule.when.text_any),
                (KeywordList::None, &rule.when.text_none),
            ];
            for (list, entries) in lists {
                for (entry, keyword) in entries.iter().enumerate() {
                    let Some(Keyword { text, prefix }) = Keyword::parse(keyword) else {
                        continue;
                    };
                    let id = *pattern_ids.entry(text.clone()).or_insert_with(|| {
                        patterns.push(text);
                        keyword_uses.push(Vec::new());
                        patterns.len() - 1
                    });
                    keyword_uses[id].push(KeywordUse {
                        rule: index,
                        list,
                        entry: u32::try_from(entry).expect("fewer than 2^32 entries"),
                        prefix,
                    });
                }
            }
            let regex = match &rule.when.text_regex {
                Some(source) => {
                    regex_sources.push(source.clone());
                    regex_rules.push(index);
                    Some(Regex::new(source)?)
                }
                None => None,
            };
            let has_text_condition = !rule.when.text_any.is_empty() || regex.is_some();
            if !has_text_condition {
                textless_rules.push(index);
            }
            compiled.push(CompiledRule {
                regex,
                hours: parsed_hours(&rule.when.hours),
                outside_hours: parsed_hours(&rule.when.outside_hours),
                contact_tags: rule
                    .when
                    .contact_tags
                    .iter()
                    .map(|t| normalize(t))
                    .collect(),
                has_text_condition,
                needs_session: needs_session(&rule),
                rule: Arc::new(rule),
            });
        }
        let keywords = AhoCorasick::builder()
            .match_kind(MatchKind::Standard)
            .build(&patterns)?;
        Ok(Snapshot {
            rules: compiled,
            keywords,
            keyword_uses,
            regexes: RegexSet::new(&regex_sources)?,
            regex_rules,
            textless_rules,
        })
    }

    /// Enabled rules.
    pub fn len(&self) -> usize {
        self.rules.len()
    }

    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    /// Enabled rules in evaluation order.
    pub fn rules(&self) -> impl Iterator<Item = &Arc<Rule>> {
        self.rules.iter().map(|c| &c.rule)
    }

    pub fn rule(&self, id: &str) -> Option<&Arc<Rule>> {
        self.rules().find(|r| r.id == id)
    }

    /// The event names the enabled rules listen to.
    pub fn listened_events(&self) -> BTreeSet<&str> {
        self.rules()
            .flat_map(|r| r.on.iter().map(String::as_str))
            .collect()
    }

    /// Whether some rule passes its cheap conditions (event, text, message type, hours) and
    /// still needs session data: a session condition, or a reply using `contact.*`/`agent.*`.
    pub fn needs_session(&self, input: &MatchInput<'_>) -> bool {
        let scan = self.scan(input.text);
        self.candidates(input, &scan).into_iter().any(|index| {
            let rule = &self.rules[index as usize];
            rule.needs_session && {
                let mut conditions = Vec::new();
                self.cheap_conditions(index, &scan, input, &mut conditions);
                conditions.iter().all(|c| c.result)
            }
        })
    }

    /// The rules that listen to the event and whose `text_any` and `text_regex` (where
    /// present) hold, in snapshot order, each with every condition decided. Rules left out
    /// could not match; leaving them out keeps the cost independent of the number of rules.
    pub fn evaluate(
        &self,
        input: &MatchInput<'_>,
        session: Option<&SessionFacts>,
    ) -> Vec<RuleEvaluation> {
        let scan = self.scan(input.text);
        self.candidates(input, &scan)
            .into_iter()
            .map(|index| self.evaluate_rule(index, &scan, input, session))
            .collect()
    }

    /// Every enabled rule, matching or not, with each condition decided: for dry runs that
    /// explain why a rule stayed quiet.
    pub fn evaluate_all(
        &self,
        input: &MatchInput<'_>,
        session: Option<&SessionFacts>,
    ) -> Vec<RuleEvaluation> {
        let scan = self.scan(input.text);
        (0..self.rules.len() as u32)
            .map(|index| self.evaluate_rule(index, &scan, input, session))
            .collect()
    }

    fn scan(&self, text: Option<&str>) -> TextScan {
        let Some(normalized) = text.map(normalize) else {
            return TextScan {
                normalized: None,
                keyword_hits: Vec::new(),
                regex_hits: Vec::new(),
            };
        };
        let mut keyword_hits = Vec::new();
        // Overlapping matches: "manual" inside "manualmente" must not hide a later "manual".
        for found in self.keywords.find_overlapping_iter(&normalized) {
            let edges = boundaries(&normalized, found.span());
            if !edges.starts_clean {
                continue;
            }
            for usage in &self.keyword_uses[found.pattern().as_usize()] {
                if usage.prefix || edges.ends_clean {
                    keyword_hits.push((usage.rule, usage.list, usage.entry));
                }
            }
        }
        keyword_hits.sort_unstable();
        keyword_hits.dedup();
        let mut regex_hits: Vec<u32> = if self.regex_rules.is_empty() {
            Vec::new()
        } else {
            self.regexes
                .matches(&normalized)
                .into_iter()
                .map(|i| self.regex_rules[i])
                .collect()
        };
        regex_hits.sort_unstable();
        TextScan {
            normalized: Some(normalized),
            keyword_hits,
            regex_hits,
        }
    }

    /// Rule indices, sorted, that listen to the event and pass their positive text conditions.
    fn candidates(&self, input: &MatchInput<'_>, scan: &TextScan) -> Vec<u32> {
        let mut candidates: Vec<u32> = scan
            .keyword_hits
            .iter()
            .filter(|h| h.1 == KeywordList::Any)
            .map(|h| h.0)
            .chain(scan.regex_hits.iter().copied())
            .chain(self.textless_rules.iter().copied())
            .collect();
        candidates.sort_unstable();
        candidates.dedup();
        candidates.retain(|&index| {
            let compiled = &self.rules[index as usize];
            let when = &compiled.rule.when;
            compiled.rule.on.iter().any(|e| e == input.event_type)
                && (!compiled.has_text_condition
                    || ((when.text_any.is_empty()
                        || scan.first_keyword_hit(index, KeywordList::Any).is_some())
                        && (compiled.regex.is_none() || scan.regex_hit(index))))
        });
        candidates
    }

    fn evaluate_rule(
        &self,
        index: u32,
        scan: &TextScan,
        input: &MatchInput<'_>,
        session: Option<&SessionFacts>,
    ) -> RuleEvaluation {
        let mut conditions = Vec::new();
        self.cheap_conditions(index, scan, input, &mut conditions);
        let compiled = &self.rules[index as usize];
        session_conditions(compiled, session, &mut conditions);
        RuleEvaluation {
            rule: Arc::clone(&compiled.rule),
            matched: conditions.iter().all(|c| c.result),
            conditions,
        }
    }

    /// The conditions decided without session data.
    fn cheap_conditions(
        &self,
        index: u32,
        scan: &TextScan,
        input: &MatchInput<'_>,
        out: &mut Vec<ConditionResult>,
    ) {
        let compiled = &self.rules[index as usize];
        let when = &compiled.rule.when;
        let listens = compiled.rule.on.iter().any(|e| e == input.event_type);
        out.push(condition(
            "on",
            listens,
            if listens {
                format!("event {}", input.event_type)
            } else {
                format!("event {} is not listed", input.event_type)
            },
        ));
        if !when.text_any.is_empty() {
            out.push(match scan.first_keyword_hit(index, KeywordList::Any) {
                Some(entry) => condition(
                    "text_any",
                    true,
                    format!("matched \"{}\"", when.text_any[entry as usize]),
                ),
                None if scan.normalized.is_none() => condition("text_any", false, "no text"),
                None => condition("text_any", false, "no entry matched"),
            });
        }
        if let Some(regex) = &compiled.regex {
            out.push(match &scan.normalized {
                None => condition("text_regex", false, "no text"),
                Some(text) => match regex.find(text) {
                    Some(m) => condition("text_regex", true, format!("matched \"{}\"", m.as_str())),
                    None => condition("text_regex", false, "no match"),
                },
            });
        }
        if !when.text_none.is_empty() {
            out.push(match scan.first_keyword_hit(index, KeywordList::None) {
                Some(entry) => condition(
                    "text_none",
                    false,
                    format!("found \"{}\"", when.text_none[entry as usize]),
                ),
                None if scan.normalized.is_none() => condition("text_none", true, "no text"),
                None => condition("text_none", true, "none found"),
            });
        }
        if !when.message_types.is_empty() {
            out.push(match input.message_type {
                Some(kind)
                    if when
                        .message_types
                        .iter()
                        .any(|t| t.eq_ignore_ascii_case(kind)) =>
                {
                    condition("message_types", true, format!("type {kind}"))
                }
                Some(kind) => {
                    condition("message_types", false, format!("type {kind} is not listed"))
                }
                None => condition("message_types", false, "no message type"),
            });
        }
        if let Some(hours) = &compiled.hours {
            let decision = hours.decide(input.arrived_at);
            out.push(condition("hours", decision.open, decision.detail));
        }
        if let Some(hours) = &compiled.outside_hours {
            let decision = hours.decide(input.arrived_at);
            out.push(condition("outside_hours", !decision.open, decision.detail));
        }
    }
}

struct Boundaries {
    starts_clean: bool,
    ends_clean: bool,
}

/// Whether a keyword match sits on word boundaries at its start and at its end. A side
/// that is not a word character itself ("r$", "?") needs no boundary there.
fn boundaries(text: &str, span: aho_corasick::Span) -> Boundaries {
    let found = &text[span.start..span.end];
    let before = text[..span.start].chars().next_back();
    let after = text[span.end..].chars().next();
    let clean = |edge: Option<char>, outside: Option<char>| {
        !edge.is_some_and(is_word_char) || !outside.is_some_and(is_word_char)
    };
    Boundaries {
        starts_clean: clean(found.chars().next(), before),
        ends_clean: clean(found.chars().next_back(), after),
    }
}

fn condition(name: &str, result: bool, detail: impl Into<String>) -> ConditionResult {
    ConditionResult {
        condition: name.to_string(),
        result,
        detail: detail.into(),
    }
}

fn parsed_hours(hours: &Option<super::model::Hours>) -> Option<OpeningHours> {
    hours
        .as_ref()
        .map(|h| OpeningHours::parse(h, "").expect("validated before compiling"))
}

fn needs_session(rule: &Rule) -> bool {
    let when = &rule.when;
    let templates_need_it = rule
        .replies
        .iter()
        .filter_map(|r| r.text.as_deref())
        .any(|text| Template::parse(text).is_ok_and(|t| t.variables().any(|v| v.needs_session())));
    when.agent != AgentCondition::Any
        || !when.channel_ids.is_empty()
        || !when.department_ids.is_empty()
        || !when.contact_tags.is_empty()
        || templates_need_it
}

/// The conditions that need session data; see the module documentation for `None`.
fn session_conditions(
    compiled: &CompiledRule,
    session: Option<&SessionFacts>,
    out: &mut Vec<ConditionResult>,
) {
    const NO_DATA: &str = "no session data";
    let when = &compiled.rule.when;
    match (when.agent, session) {
        (AgentCondition::Any, _) => {}
        (AgentCondition::None, None) => out.push(condition(
            "agent",
            true,
            "no session data: no agent assumed",
        )),
        (AgentCondition::Assigned, None) => out.push(condition("agent", false, NO_DATA)),
        (wanted, Some(facts)) => {
            let detail = match &facts.agent {
                Some(agent) => format!(
                    "agent \"{}\" holds the session",
                    agent.name.as_deref().unwrap_or(&agent.id)
                ),
                None => "no agent holds the session".to_string(),
            };
            let holds = facts.agent.is_some() == (wanted == AgentCondition::Assigned);
            out.push(condition("agent", holds, detail));
        }
    }
    let id_lists = [
        (
            "channel_ids",
            "channel",
            &when.channel_ids,
            session.map(|s| &s.channel_id),
        ),
        (
            "department_ids",
            "department",
            &when.department_ids,
            session.map(|s| &s.department_id),
        ),
    ];
    for (key, what, wanted, actual) in id_lists {
        if wanted.is_empty() {
            continue;
        }
        out.push(match actual {
            None => condition(key, false, NO_DATA),
            Some(None) => condition(key, false, format!("the session has no {what}")),
            Some(Some(id)) if wanted.contains(id) => {
                condition(key, true, format!("{what} \"{id}\""))
            }
            Some(Some(id)) => condition(key, false, format!("{what} \"{id}\" is not listed")),
        });
    }
    if !compiled.contact_tags.is_empty() {
        out.push(match session {
            None => condition("contact_tags", false, NO_DATA),
            Some(facts) => match facts
                .contact_tags
                .iter()
                .find(|tag| compiled.contact_tags.contains(&normalize(tag)))
            {
                Some(tag) => condition("contact_tags", true, format!("tag \"{tag}\"")),
                None if facts.contact_tags.is_empty() => {
                    condition("contact_tags", false, "the contact has no tags")
                }
                None => condition(
                    "contact_tags",
                    false,
                    format!(
                        "none of the contact's tags ({}) is listed",
                        facts.contact_tags.join(", ")
                    ),
                ),
            },
        });
    }
}

impl TemplateVars {
    /// The template values of one event: the session id, the message text, and contact and
    /// agent details when session data is at hand.
    pub fn for_event(
        session_id: Option<&str>,
        message_text: Option<&str>,
        session: Option<&SessionFacts>,
    ) -> TemplateVars {
        TemplateVars {
            contact_name: session.and_then(|s| s.contact_name.clone()),
            contact_phone: session.and_then(|s| s.contact_phone.clone()),
            session_id: session_id.map(str::to_string),
            message_text: message_text.map(str::to_string),
            agent_name: session.and_then(|s| s.agent.as_ref()?.name.clone()),
        }
    }
}

/// The rule's reply steps, in order, with texts rendered.
pub fn render_replies(
    rule: &Rule,
    vars: &TemplateVars,
) -> Result<Vec<PlannedReply>, TemplateError> {
    let mut planned = Vec::with_capacity(rule.replies.len());
    for (step, reply) in rule.replies.iter().enumerate() {
        let content = match (&reply.text, &reply.file, &reply.file_url) {
            (Some(text), _, _) => ReplyContent::Text(Template::parse(text)?.render(vars)),
            (None, Some(file), _) => ReplyContent::File(file.clone()),
            (None, None, Some(url)) => ReplyContent::FileUrl(url.clone()),
            (None, None, None) => continue,
        };
        planned.push(PlannedReply {
            step,
            content,
            sync: reply.sync,
        });
    }
    Ok(planned)
}

/// Holds the live snapshot; readers never wait, and a swap is atomic.
pub struct RuleEngine {
    current: ArcSwap<Snapshot>,
}

impl RuleEngine {
    pub fn new(snapshot: Snapshot) -> RuleEngine {
        METRICS.rules_loaded.set(snapshot.len() as i64);
        RuleEngine {
            current: ArcSwap::from_pointee(snapshot),
        }
    }

    pub fn current(&self) -> Arc<Snapshot> {
        self.current.load_full()
    }

    pub fn swap(&self, snapshot: Snapshot) {
        METRICS.rules_loaded.set(snapshot.len() as i64);
        tracing::info!(rules = snapshot.len(), "rule snapshot swapped");
        self.current.store(Arc::new(snapshot));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(toml_text: &str) -> Rule {
        toml::from_str(toml_text).unwrap_or_else(|e| panic!("{e}"))
    }

    fn keyword_rule(id: &str, keywords: &[&str]) -> Rule {
        rule(&format!(
            "id = \"{id}\"\n[when]\nagent = \"any\"\ntext_any = {keywords:?}\n[[reply]]\ntext = \"ok\""
        ))
    }

    fn at(rfc3339: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(rfc3339)
            .unwrap()
            .with_timezone(&Utc)
    }

    fn message(text: &str) -> MatchInput<'_> {
        MatchInput {
            event_type: "MESSAGE_RECEIVED",
            text: Some(text),
            message_type: Some("TEXT"),
            arrived_at: at("2026-03-02T15:00:00Z"),
        }
    }

    fn matched_ids(snapshot: &Snapshot, input: &MatchInput<'_>) -> Vec<String> {
        snapshot
            .evaluate(input, Some(&SessionFacts::default()))
            .into_iter()
            .filter(|e| e.matched)
            .map(|e| e.rule.id.clone())
            .collect()
    }

    fn matches(keywords: &[&str], text: &str) -> bool {
        let snapshot = Snapshot::compile([keyword_rule("r", keywords)]).unwrap();
        !matched_ids(&snapshot, &message(text)).is_empty()
    }

    fn detail<'a>(evaluation: &'a RuleEvaluation, name: &str) -> (&'a str, bool) {
        let c = evaluation
            .conditions
            .iter()
            .find(|c| c.condition == name)
            .unwrap_or_else(|| panic!("no {name} in {:?}", evaluation.conditions));
        (c.detail.as_str(), c.result)
    }

    #[test]
    fn whole_words_only() {
        assert!(matches(&["manual"], "MANUAL?"));
        assert!(matches(&["manual"], "me manda o manual, por favor"));
        assert!(!matches(&["manual"], "manualmente"));
        assert!(!matches(&["manual"], "o emanual"));
        assert!(matches(&["manual"], "manualmente não, quero o manual"));
    }

    #[test]
    fn trailing_star_matches_a_prefix_at_a_word_start() {
        assert!(matches(&["instal*"], "como faço a instalação?"));
        assert!(matches(&["instal*"], "INSTALAR"));
        assert!(matches(&["instal*"], "instal"));
        assert!(!matches(&["instal*"], "reinstalar"));
    }

    #[test]
    fn case_and_accents_fold_both_ways() {
        assert!(matches(&["Instruções"], "instrucoes"));
        assert!(matches(&["instrucoes"], "INSTRUÇÕES!"));
        assert!(matches(&["preço"], "qual o PRECO"));
    }

    #[test]
    fn phrases_match_across_collapsed_whitespace() {
        assert!(matches(
            &["instruções de instalação"],
            "Quero as instruções   de\ninstalação"
        ));
        assert!(!matches(
            &["instruções de instalação"],
            "instruções da instalação"
        ));
        assert!(matches(&["bom dia"], "Bom dia!"));
    }

    #[test]
    fn edges_that_are_not_word_characters_need_no_boundary() {
        assert!(matches(&["r$"], "custa r$10?"));
        assert!(matches(&["2ª via"], "quero a 2a via"));
    }

    #[test]
    fn one_keyword_shared_by_several_rules_reaches_each() {
        let snapshot = Snapshot::compile([
            keyword_rule("a", &["manual"]),
            keyword_rule("b", &["manual*"]),
            keyword_rule("c", &["manual"]),
        ])
        .unwrap();
        assert_eq!(matched_ids(&snapshot, &message("manual")), ["a", "b", "c"]);
        assert_eq!(matched_ids(&snapshot, &message("manualmente")), ["b"]);
    }

    #[test]
    fn regex_runs_on_normalised_text() {
        let snapshot = Snapshot::compile([rule(
            "id = \"boleto\"\n[when]\nagent = \"any\"\ntext_regex = \"segunda\\\\s+via|2a via\"\n[[reply]]\ntext = \"ok\"",
        )])
        .unwrap();
        let evaluations = snapshot.evaluate(&message("Preciso da SEGUNDA   Vía do boleto"), None);
        assert_eq!(evaluations.len(), 1);
        assert_eq!(
            detail(&evaluations[0], "text_regex"),
            ("matched \"segunda via\"", true)
        );
        assert!(snapshot.evaluate(&message("segundavia"), None).is_empty());
    }

    #[test]
    fn text_any_and_text_regex_must_both_hold() {
        let snapshot = Snapshot::compile([rule(
            "id = \"both\"\n[when]\nagent = \"any\"\ntext_any = [\"boleto\"]\ntext_regex = \"segunda\"\n[[reply]]\ntext = \"ok\"",
        )])
        .unwrap();
        assert_eq!(
            matched_ids(&snapshot, &message("segunda via do boleto")),
            ["both"]
        );
        assert!(matched_ids(&snapshot, &message("boleto")).is_empty());
        assert!(matched_ids(&snapshot, &message("segunda")).is_empty());
    }

    #[test]
    fn null_text_fails_text_any_and_passes_text_none() {
        let snapshot = Snapshot::compile([
            keyword_rule("any", &["manual"]),
            rule("id = \"none\"\n[when]\nagent = \"any\"\ntext_none = [\"cancelar\"]\n[[reply]]\ntext = \"ok\""),
        ])
        .unwrap();
        let image = MatchInput {
            text: None,
            message_type: Some("IMAGE"),
            ..message("")
        };
        let all = snapshot.evaluate_all(&image, None);
        assert_eq!(detail(&all[0], "text_any"), ("no text", false));
        assert_eq!(detail(&all[1], "text_none"), ("no text", true));
        assert_eq!(matched_ids(&snapshot, &image), ["none"]);
        assert!(matched_ids(&snapshot, &message("quero CANCELAR")).is_empty());
        let evaluation = &snapshot.evaluate(&message("quero cancelar"), None)[0];
        assert_eq!(
            detail(evaluation, "text_none"),
            ("found \"cancelar\"", false)
        );
    }

    #[test]
    fn message_types_filter() {
        let snapshot = Snapshot::compile([rule(
            "id = \"img\"\n[when]\nagent = \"any\"\nmessage_types = [\"IMAGE\", \"DOCUMENT\"]\n[[reply]]\ntext = \"recebido\"",
        )])
        .unwrap();
        let image = MatchInput {
            text: None,
            message_type: Some("IMAGE"),
            ..message("")
        };
        assert_eq!(matched_ids(&snapshot, &image), ["img"]);
        let evaluation = &snapshot.evaluate(&message("oi"), None)[0];
        assert_eq!(
            detail(evaluation, "message_types"),
            ("type TEXT is not listed", false)
        );
    }

    #[test]
    fn only_listed_events_are_considered() {
        let welcome = rule(
            "id = \"welcome\"\non = [\"SESSION_NEW\"]\n[when]\nagent = \"any\"\n[[reply]]\ntext = \"Bem-vindo!\"",
        );
        let snapshot = Snapshot::compile([welcome, keyword_rule("manual", &["manual"])]).unwrap();
        let session_new = MatchInput {
            event_type: "SESSION_NEW",
            text: None,
            message_type: None,
            arrived_at: at("2026-03-02T15:00:00Z"),
        };
        assert_eq!(matched_ids(&snapshot, &session_new), ["welcome"]);
        assert!(matched_ids(&snapshot, &message("oi")).is_empty());
        let all = snapshot.evaluate_all(&message("oi"), None);
        let welcome = all.iter().find(|e| e.rule.id == "welcome").unwrap();
        assert_eq!(
            detail(welcome, "on"),
            ("event MESSAGE_RECEIVED is not listed", false)
        );
        assert_eq!(
            snapshot.listened_events().into_iter().collect::<Vec<_>>(),
            ["MESSAGE_RECEIVED", "SESSION_NEW"]
        );
    }

    #[test]
    fn snapshot_order_is_priority_then_id_and_disabled_rules_are_left_out() {
        let mut disabled = keyword_rule("disabled", &["oi"]);
        disabled.enabled = false;
        let mut first = keyword_rule("zeta", &["oi"]);
        first.priority = 1;
        let snapshot = Snapshot::compile([
            keyword_rule("beta", &["oi"]),
            disabled,
            keyword_rule("alpha", &["oi"]),
            first,
        ])
        .unwrap();
        assert_eq!(
            matched_ids(&snapshot, &message("oi")),
            ["zeta", "alpha", "beta"]
        );
        assert_eq!(snapshot.len(), 3);
        assert!(snapshot.rule("disabled").is_none());
    }

    #[test]
    fn outside_hours_is_the_exact_complement_of_hours() {
        let hours = "{ tz = \"America/Sao_Paulo\", days = [\"mon\",\"tue\",\"wed\",\"thu\",\"fri\",\"sat\"], periods = [\"08:00-12:00\", \"22:00-02:00\"], holidays = [\"2026-03-04\"] }";
        let open = rule(&format!(
            "id = \"open\"\n[when]\nagent = \"any\"\nhours = {hours}\n[[reply]]\ntext = \"a\""
        ));
        let closed = rule(&format!(
            "id = \"closed\"\n[when]\nagent = \"any\"\noutside_hours = {hours}\n[[reply]]\ntext = \"b\""
        ));
        let snapshot = Snapshot::compile([open, closed]).unwrap();
        let start = at("2026-03-01T00:00:00Z");
        let mut open_count = 0;
        // Every 15 minutes over nine days: one and only one of the two rules matches.
        for step in 0..(9 * 24 * 4) {
            let input = MatchInput {
                arrived_at: start + chrono::Duration::minutes(15 * step),
                ..message("oi")
            };
            let matched = matched_ids(&snapshot, &input);
            assert_eq!(matched.len(), 1, "at {}: {matched:?}", input.arrived_at);
            open_count += usize::from(matched[0] == "open");
        }
        // Six days a week, 4 h + 4 h; the holiday (a wednesday) loses 08:00-12:00 and 22:00-02:00.
        assert!(open_count > 0 && open_count < 9 * 24 * 4);
    }

    #[test]
    fn hours_detail_names_local_time() {
        let snapshot = Snapshot::compile([rule(
            "id = \"h\"\n[when]\nagent = \"any\"\nhours = { tz = \"America/Sao_Paulo\", days = [\"mon\"], periods = [\"08:00-18:00\"] }\n[[reply]]\ntext = \"a\"",
        )])
        .unwrap();
        let evaluation = &snapshot.evaluate(&message("oi"), None)[0];
        assert_eq!(
            detail(evaluation, "hours"),
            ("mon 2026-03-02 12:00 America/Sao_Paulo: open", true)
        );
    }

    #[test]
    fn agent_conditions_with_and_without_session_data() {
        let by_agent = |agent: &str| {
            rule(&format!(
                "id = \"{agent}\"\n[when]\nagent = \"{agent}\"\ntext_any = [\"oi\"]\n[[reply]]\ntext = \"a\""
            ))
        };
        let snapshot =
            Snapshot::compile([by_agent("none"), by_agent("assigned"), by_agent("any")]).unwrap();
        let held = SessionFacts {
            agent: Some(AgentFacts {
                id: "u1".into(),
                name: Some("Ana".into()),
            }),
            ..SessionFacts::default()
        };
        let ids = |session: Option<&SessionFacts>| -> Vec<String> {
            snapshot
                .evaluate(&message("oi"), session)
                .into_iter()
                .filter(|e| e.matched)
                .map(|e| e.rule.id.clone())
                .collect()
        };
        assert_eq!(ids(Some(&held)), ["any", "assigned"]);
        assert_eq!(ids(Some(&SessionFacts::default())), ["any", "none"]);
        assert_eq!(ids(None), ["any", "none"]);
        let evaluation = &snapshot.evaluate(&message("oi"), Some(&held))[2];
        assert_eq!(
            detail(evaluation, "agent"),
            ("agent \"Ana\" holds the session", false)
        );
    }

    #[test]
    fn channel_department_and_tag_conditions() {
        let snapshot = Snapshot::compile([rule(
            "id = \"vip\"\n[when]\nagent = \"any\"\nchannel_ids = [\"c1\"]\ndepartment_ids = [\"d1\", \"d2\"]\ncontact_tags = [\"Clientes VIP\"]\n[[reply]]\ntext = \"a\"",
        )])
        .unwrap();
        let facts = SessionFacts {
            channel_id: Some("c1".into()),
            department_id: Some("d2".into()),
            contact_tags: vec!["novo".into(), "clientes vip".into()],
            ..SessionFacts::default()
        };
        assert!(snapshot.evaluate(&message("oi"), Some(&facts))[0].matched);
        let other_channel = SessionFacts {
            channel_id: Some("c2".into()),
            ..facts.clone()
        };
        let evaluation = &snapshot.evaluate(&message("oi"), Some(&other_channel))[0];
        assert!(!evaluation.matched);
        assert_eq!(
            detail(evaluation, "channel_ids"),
            ("channel \"c2\" is not listed", false)
        );
        let untagged = SessionFacts {
            contact_tags: vec![],
            ..facts.clone()
        };
        assert!(!snapshot.evaluate(&message("oi"), Some(&untagged))[0].matched);
        let blind = &snapshot.evaluate(&message("oi"), None)[0];
        assert!(!blind.matched);
        assert_eq!(detail(blind, "contact_tags"), ("no session data", false));
    }

    #[test]
    fn session_is_needed_only_when_cheap_conditions_hold() {
        let snapshot = Snapshot::compile([
            rule("id = \"manual\"\n[when]\ntext_any = [\"manual\"]\n[[reply]]\ntext = \"a\""),
            keyword_rule("blind", &["preço"]),
            rule(
                "id = \"greet\"\n[when]\nagent = \"any\"\ntext_any = [\"ola\"]\n[[reply]]\ntext = \"Olá {{contact.name}}\"",
            ),
        ])
        .unwrap();
        assert!(
            snapshot.needs_session(&message("o manual")),
            "agent = none needs the session"
        );
        assert!(
            !snapshot.needs_session(&message("o preço")),
            "agent = any and a plain text"
        );
        assert!(
            snapshot.needs_session(&message("olá")),
            "the reply names the contact"
        );
        assert!(!snapshot.needs_session(&message("nada a ver")));
        let sunday = MatchInput {
            arrived_at: at("2026-03-01T15:00:00Z"),
            ..message("o manual")
        };
        let closed_on_sunday = Snapshot::compile([rule(
            "id = \"m\"\n[when]\ntext_any = [\"manual\"]\nhours = { tz = \"UTC\", days = [\"mon\"] }\n[[reply]]\ntext = \"a\"",
        )])
        .unwrap();
        assert!(!closed_on_sunday.needs_session(&sunday));
        assert!(closed_on_sunday.needs_session(&message("o manual")));
    }

    #[test]
    fn renders_replies_in_order() {
        let manual = rule(
            "id = \"manual\"\n[[reply]]\ntext = \"Olá {{contact.name | \\\"cliente\\\"}}, segue:\"\n[[reply]]\nfile = \"files/manual.pdf\"\nsync = true\n[[reply]]\nfile_url = \"https://cdn.example.com/a.png\"",
        );
        let facts = SessionFacts {
            contact_name: Some("Maria".into()),
            ..SessionFacts::default()
        };
        let vars = TemplateVars::for_event(Some("s1"), Some("manual"), Some(&facts));
        let planned = render_replies(&manual, &vars).unwrap();
        assert_eq!(
            planned,
            [
                PlannedReply {
                    step: 0,
                    content: ReplyContent::Text("Olá Maria, segue:".into()),
                    sync: false
                },
                PlannedReply {
                    step: 1,
                    content: ReplyContent::File("files/manual.pdf".into()),
                    sync: true
                },
                PlannedReply {
                    step: 2,
                    content: ReplyContent::FileUrl("https://cdn.example.com/a.png".into()),
                    sync: false
                },
            ]
        );
        let anonymous = TemplateVars::for_event(Some("s1"), None, None);
        assert_eq!(
            render_replies(&manual, &anonymous).unwrap()[0].content,
            ReplyContent::Text("Olá cliente, segue:".into())
        );
    }

    #[test]
    fn compile_refuses_invalid_rules_and_duplicate_ids() {
        let broken = rule("id = \"broken\"\n[when]\ntext_regex = \"(\"\n[[reply]]\ntext = \"a\"");
        let error = Snapshot::compile([broken]).unwrap_err();
        assert!(
            error
                .to_string()
                .contains("broken: when.text_regex: unclosed group"),
            "{error}"
        );
        let error = Snapshot::compile([keyword_rule("same", &["a"]), keyword_rule("same", &["b"])])
            .unwrap_err();
        assert!(matches!(error, CompileError::DuplicateId(id) if id == "same"));
    }

    #[test]
    fn engine_swaps_snapshots_atomically() {
        let engine = RuleEngine::new(Snapshot::empty());
        let before = engine.current();
        engine.swap(Snapshot::compile([keyword_rule("manual", &["manual"])]).unwrap());
        assert!(before.is_empty(), "a reader keeps the snapshot it loaded");
        assert_eq!(engine.current().len(), 1);
    }
}
