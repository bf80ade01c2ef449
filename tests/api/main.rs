//! Integration tests: one test binary, one module per area.

mod delivery;
mod helpers;
mod sim;
mod startup;
mod webhook;
