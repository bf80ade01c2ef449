//! Integration tests: one test binary, one module per area.

mod client;
mod delivery;
mod helpers;
mod send_cli;
mod sim;
mod startup;
mod webhook;
