//! wtsbot: WTS Chat webhooks in, rule-matched file and text replies out.

pub mod admin;
pub mod cli;
pub mod commands;
pub mod config;
pub mod error;
pub mod inbox;
pub mod jobs;
pub mod metrics;
pub mod ops;
pub mod registration;
pub mod rules;
pub mod sim;
pub mod startup;
pub mod store;
pub mod telemetry;
pub mod webhook;
pub mod wts;
