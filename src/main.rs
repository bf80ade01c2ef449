use std::process::ExitCode;

use clap::Parser;
use wtsbot::cli::Cli;

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    match wtsbot::commands::run(cli).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            // One clear line: the error and its causes.
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}
