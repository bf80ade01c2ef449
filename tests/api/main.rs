//! Integration tests: one test binary, one module per area.

mod admin_auth;
mod admin_client;
mod admin_dry_run;
mod admin_files;
mod admin_history;
mod admin_rules;
mod client;
mod delivery;
mod demo;
mod helpers;
mod lifecycle;
mod ops;
mod registration;
mod rules_files;
mod send_cli;
mod sim;
mod startup;
mod webhook;
