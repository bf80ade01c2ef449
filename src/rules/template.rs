//! Reply text templates: `Olá {{contact.name | "cliente"}}!`. A variable without a value
//! renders its fallback, or nothing when it has none.

use std::fmt;

/// The variables a reply text may use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Variable {
    ContactName,
    ContactPhone,
    SessionId,
    MessageText,
    AgentName,
}

impl Variable {
    pub const ALL: [Variable; 5] = [
        Variable::ContactName,
        Variable::ContactPhone,
        Variable::SessionId,
        Variable::MessageText,
        Variable::AgentName,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Variable::ContactName => "contact.name",
            Variable::ContactPhone => "contact.phone",
            Variable::SessionId => "session.id",
            Variable::MessageText => "message.text",
            Variable::AgentName => "agent.name",
        }
    }

    fn from_name(name: &str) -> Option<Variable> {
        Variable::ALL.into_iter().find(|v| v.name() == name)
    }

    /// Whether the value comes from the session lookup (contact and agent details).
    pub fn needs_session(self) -> bool {
        matches!(
            self,
            Variable::ContactName | Variable::ContactPhone | Variable::AgentName
        )
    }
}

impl fmt::Display for Variable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The values a template is rendered with; `None` or empty means "no value".
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TemplateVars {
    pub contact_name: Option<String>,
    pub contact_phone: Option<String>,
    pub session_id: Option<String>,
    pub message_text: Option<String>,
    pub agent_name: Option<String>,
}

impl TemplateVars {
    fn get(&self, variable: Variable) -> Option<&str> {
        let value = match variable {
            Variable::ContactName => &self.contact_name,
            Variable::ContactPhone => &self.contact_phone,
            Variable::SessionId => &self.session_id,
            Variable::MessageText => &self.message_text,
            Variable::AgentName => &self.agent_name,
        };
        value.as_deref().filter(|v| !v.trim().is_empty())
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TemplateError {
    #[error("unclosed `{{{{` at character {0}")]
    Unclosed(usize),
    #[error(
        "unknown variable `{0}`; known: contact.name, contact.phone, session.id, message.text, agent.name"
    )]
    UnknownVariable(String),
    #[error(
        "the fallback of `{0}` must be a double-quoted string, as in {{{{{0} | \"cliente\"}}}}"
    )]
    BadFallback(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Part {
    Literal(String),
    Variable {
        variable: Variable,
        fallback: Option<String>,
    },
}

/// A parsed reply text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Template {
    parts: Vec<Part>,
}

impl Template {
    pub fn parse(source: &str) -> Result<Template, TemplateError> {
        let mut parts = Vec::new();
        let mut rest = source;
        while let Some(open) = rest.find("{{") {
            if open > 0 {
                parts.push(Part::Literal(rest[..open].to_string()));
            }
            let after_open = &rest[open + 2..];
            let close = after_open
                .find("}}")
                .ok_or_else(|| TemplateError::Unclosed(source.len() - rest.len() + open))?;
            parts.push(parse_placeholder(&after_open[..close])?);
            rest = &after_open[close + 2..];
        }
        if !rest.is_empty() {
            parts.push(Part::Literal(rest.to_string()));
        }
        Ok(Template { parts })
    }

    pub fn variables(&self) -> impl Iterator<Item = Variable> + '_ {
        self.parts.iter().filter_map(|part| match part {
            Part::Variable { variable, .. } => Some(*variable),
            Part::Literal(_) => None,
        })
    }

    pub fn render(&self, vars: &TemplateVars) -> String {
        let mut out = String::new();
        for part in &self.parts {
            match part {
                Part::Literal(text) => out.push_str(text),
                Part::Variable { variable, fallback } => {
                    if let Some(value) = vars.get(*variable).or(fallback.as_deref()) {
                        out.push_str(value);
                    }
                }
            }
        }
        out
    }
}

/// The inside of `{{ ... }}`: a variable name, then optionally `| "fallback"`.
fn parse_placeholder(inner: &str) -> Result<Part, TemplateError> {
    let (name, fallback) = match inner.split_once('|') {
        Some((name, fallback)) => (name.trim(), Some(fallback.trim())),
        None => (inner.trim(), None),
    };
    let variable = Variable::from_name(name)
        .ok_or_else(|| TemplateError::UnknownVariable(name.to_string()))?;
    let fallback = fallback
        .map(|quoted| parse_quoted(quoted).ok_or_else(|| TemplateError::BadFallback(name.into())))
        .transpose()?;
    Ok(Part::Variable { variable, fallback })
}

/// `"text"` with `\"` and `\\` escapes.
fn parse_quoted(quoted: &str) -> Option<String> {
    let body = quoted.strip_prefix('"')?.strip_suffix('"')?;
    let mut out = String::with_capacity(body.len());
    let mut chars = body.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => out.push(chars.next()?),
            '"' => return None,
            other => out.push(other),
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars_with_name(name: Option<&str>) -> TemplateVars {
        TemplateVars {
            contact_name: name.map(str::to_string),
            session_id: Some("s-1".into()),
            ..TemplateVars::default()
        }
    }

    #[test]
    fn renders_values_and_fallbacks() {
        let template =
            Template::parse("Olá {{contact.name | \"cliente\"}}, sessão {{ session.id }}.")
                .unwrap();
        assert_eq!(
            template.render(&vars_with_name(Some("Ana"))),
            "Olá Ana, sessão s-1."
        );
        assert_eq!(
            template.render(&vars_with_name(None)),
            "Olá cliente, sessão s-1."
        );
        assert_eq!(
            template.render(&vars_with_name(Some("  "))),
            "Olá cliente, sessão s-1."
        );
    }

    #[test]
    fn missing_value_without_fallback_renders_empty() {
        let template = Template::parse("[{{agent.name}}]").unwrap();
        assert_eq!(template.render(&TemplateVars::default()), "[]");
    }

    #[test]
    fn whitespace_and_escapes_are_tolerated() {
        let template = Template::parse("{{contact.name|\"o \\\"cliente\\\"\"}}").unwrap();
        assert_eq!(template.render(&TemplateVars::default()), "o \"cliente\"");
        let template = Template::parse("{{   contact.phone   |   \"-\"   }}").unwrap();
        assert_eq!(template.render(&TemplateVars::default()), "-");
    }

    #[test]
    fn text_without_placeholders_is_literal() {
        let template = Template::parse("Preços: R$ 10 } {").unwrap();
        assert_eq!(
            template.render(&TemplateVars::default()),
            "Preços: R$ 10 } {"
        );
        assert_eq!(template.variables().count(), 0);
    }

    #[test]
    fn lists_variables() {
        let template = Template::parse("{{contact.name}} {{message.text}}").unwrap();
        let vars: Vec<_> = template.variables().collect();
        assert_eq!(vars, [Variable::ContactName, Variable::MessageText]);
        assert!(vars[0].needs_session());
        assert!(!vars[1].needs_session());
    }

    #[test]
    fn rejects_unknown_variables_bad_fallbacks_and_unclosed_braces() {
        assert_eq!(
            Template::parse("Olá {{contact.nome}}"),
            Err(TemplateError::UnknownVariable("contact.nome".into()))
        );
        assert_eq!(
            Template::parse("{{contact.name | cliente}}"),
            Err(TemplateError::BadFallback("contact.name".into()))
        );
        assert_eq!(
            Template::parse("ab {{contact.name"),
            Err(TemplateError::Unclosed(3))
        );
    }
}
