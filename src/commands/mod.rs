//! One function per subcommand; each loads what it needs and reports one clear error.

mod config;
mod demo;
mod healthcheck;
mod rules;
mod send;
mod serve;
mod webhook;

use crate::cli::{Cli, Command, ConfigCommand, RulesCommand};
use crate::config::Settings;

pub async fn run(cli: Cli) -> anyhow::Result<()> {
    let settings = Settings::load(cli.config.as_deref())?;
    match cli.command {
        Command::Config(ConfigCommand::Print) => config::print(&settings),
        Command::Rules(RulesCommand::Check { dir }) => rules::check(&settings, dir.as_deref()),
        Command::Rules(RulesCommand::Export { dir }) => rules::export(&settings, &dir).await,
        Command::Rules(RulesCommand::Import { dir }) => rules::import(&settings, &dir).await,
        Command::SendFile(args) => send::send_file(&settings, args).await,
        Command::SendText(args) => send::send_text(&settings, args).await,
        Command::Serve => serve::serve(settings).await,
        Command::Webhook(command) => webhook::run(&settings, command).await,
        Command::Demo => demo::run(&settings).await,
        Command::Healthcheck(args) => healthcheck::run(&settings, args.url.as_deref()).await,
    }
}
