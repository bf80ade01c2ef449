//! Integration tests: one test binary, one module per area.

mod client;
mod delivery;
mod demo;
mod helpers;
mod lifecycle;
mod ops;
mod registration;
mod send_cli;
mod sim;
mod startup;
mod webhook;
