//! Rules: the model admins write, the `rules/` directory loader, and the matching engine.

pub mod hours;
pub mod model;
pub mod normalize;
pub mod template;

pub use model::{AgentCondition, CooldownPer, Hours, Reply, Rule, Validation, When};
