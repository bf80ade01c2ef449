//! The command line: `wtsbot [--config PATH] <command>`.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    name = "wtsbot",
    version,
    about = "Auto-reply daemon for WTS Chat support teams"
)]
pub struct Cli {
    /// Configuration file, read after the built-in defaults and before WTSBOT__* variables.
    #[arg(long, global = true, value_name = "PATH")]
    pub config: Option<PathBuf>,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the daemon: webhook receiver, rule engine, senders and admin API.
    Serve,
    /// Send a file into an existing chat session, by URL or by uploading a local file.
    SendFile(SendFileArgs),
    /// Send a text into an existing chat session.
    SendText(SendTextArgs),
    /// Check, export or import rule files.
    #[command(subcommand)]
    Rules(RulesCommand),
    /// Manage wtsbot's webhook subscription with WTS.
    #[command(subcommand)]
    Webhook(WebhookCommand),
    /// Run a self-contained demo: a simulated WTS, the daemon and a few customers.
    Demo,
    /// Show the effective configuration.
    #[command(subcommand)]
    Config(ConfigCommand),
    /// Exit 0 when the local daemon answers /readyz (for container health checks).
    Healthcheck(HealthcheckArgs),
}

#[derive(Debug, Args)]
pub struct SendFileArgs {
    /// The WTS chat session id.
    #[arg(long, value_name = "ID")]
    pub session: String,
    /// A public URL of the file.
    #[arg(long, value_name = "URL")]
    pub url: Option<String>,
    /// A local file to upload, or `-` for standard input.
    #[arg(long, value_name = "PATH")]
    pub file: Option<String>,
    /// The input is base64 text rather than raw bytes.
    #[arg(long)]
    pub base64: bool,
    /// File name to give WTS when reading standard input.
    #[arg(long, value_name = "NAME")]
    pub name: Option<String>,
    /// Send through /message/sync and wait for the channel's status.
    #[arg(long)]
    pub sync: bool,
    /// Text sent along with the file.
    #[arg(long, value_name = "CAPTION")]
    pub text: Option<String>,
}

#[derive(Debug, Args)]
pub struct SendTextArgs {
    /// The WTS chat session id.
    #[arg(long, value_name = "ID")]
    pub session: String,
    #[arg(long)]
    pub text: String,
    /// Send through /message/sync and wait for the channel's status.
    #[arg(long)]
    pub sync: bool,
}

#[derive(Debug, Subcommand)]
pub enum RulesCommand {
    /// Validate rule files; every error names its file, line and key.
    Check {
        /// Defaults to `rules.dir`.
        dir: Option<PathBuf>,
    },
    /// Write every rule in the database as one TOML file each.
    Export { dir: PathBuf },
    /// Create editable API rules from the TOML files of a directory.
    Import { dir: PathBuf },
}

#[derive(Debug, Subcommand)]
pub enum WebhookCommand {
    /// Create or update wtsbot's subscription (idempotent).
    Register {
        /// The public webhook URL, token included.
        #[arg(long)]
        url: String,
        /// Events to subscribe to; default: those the enabled rules listen to.
        #[arg(long, num_args = 1.., value_delimiter = ',')]
        events: Vec<String>,
    },
    /// List the account's webhook subscriptions.
    List,
    /// Delete the subscription with this URL.
    Unregister {
        #[arg(long)]
        url: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum ConfigCommand {
    /// Print the effective configuration, secrets masked.
    Print,
}

#[derive(Debug, Args)]
pub struct HealthcheckArgs {
    /// Base URL of the daemon; defaults to http://{server.bind}.
    #[arg(long)]
    pub url: Option<String>,
}
