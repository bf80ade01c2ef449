//! Rules: the model admins write, the `rules/` directory loader, and the matching engine.

pub mod engine;
pub mod hours;
pub mod loader;
pub mod model;
pub mod normalize;
pub mod sync;
pub mod template;
pub mod watch;

pub use engine::{
    AgentFacts, CompileError, ConditionResult, MatchInput, PlannedReply, ReplyContent, RuleEngine,
    RuleEvaluation, SessionFacts, Snapshot, render_replies,
};
pub use loader::{Asset, LoadError, LoadedRules, SourcedRule, load_dir};
pub use model::{AgentCondition, CooldownPer, Hours, Reply, Rule, Validation, When};
pub use template::TemplateVars;
