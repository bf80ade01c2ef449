//! `wts-sim`: the WTS Chat API simulator as a process, and its customer load generator.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::Context;
use clap::{Args, Parser, Subcommand, ValueEnum};
use wtsbot::config::LogFormat;
use wtsbot::sim::customers::{self, CustomerEvent, PlayOptions};
use wtsbot::sim::{RateLimit, SimConfig, WtsSim};

#[derive(Debug, Parser)]
#[command(
    name = "wts-sim",
    version,
    about = "A simulated WTS Chat API and simulated customers"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Serve the simulated API until SIGTERM or ctrl-c. Prints the base URL on the first
    /// line of stdout and the API token on the second.
    Serve(ServeArgs),
    /// Post customer webhooks to a URL and print a summary (sent, by status, p50/p99, rate).
    Customers(CustomersArgs),
}

#[derive(Debug, Args)]
struct ServeArgs {
    #[arg(long, default_value = "127.0.0.1:0")]
    bind: SocketAddr,
    /// The token every API call must carry as `Authorization: Bearer`.
    #[arg(long, default_value = "sim-token")]
    token: String,
    /// Enforce the documented account limits (200 per 5 s, 1,000 per 5 min).
    #[arg(long)]
    rate_limit: bool,
    /// Answer unknown session ids like WTS instead of creating them.
    #[arg(long)]
    no_auto_sessions: bool,
    /// After this, sent messages turn DELIVERED and MESSAGE_UPDATED is posted.
    #[arg(long, default_value = "200ms", value_parser = humantime::parse_duration)]
    delivery_delay: Duration,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum EventArg {
    MessageReceived,
    SessionNew,
}

#[derive(Debug, Args)]
struct CustomersArgs {
    /// Where to post, e.g. the daemon's `http://127.0.0.1:8080/webhooks/wts/TOKEN`.
    #[arg(long)]
    url: String,
    #[arg(long, default_value_t = 100)]
    count: usize,
    /// Requests started per second; 0 for as fast as the concurrency allows.
    #[arg(long, default_value_t = 0.0)]
    rate: f64,
    #[arg(long, default_value_t = 16)]
    concurrency: usize,
    #[arg(long, default_value = "Olá, preciso do manual de instalação")]
    text: String,
    /// Distinct sessions the messages come from, round robin.
    #[arg(long, default_value_t = 10)]
    sessions: usize,
    #[arg(long, value_enum, default_value = "message-received")]
    event: EventArg,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    wtsbot::telemetry::init(LogFormat::Pretty, "warn");
    match Cli::parse().command {
        Command::Serve(args) => serve(args).await,
        Command::Customers(args) => play(args).await,
    }
}

async fn serve(args: ServeArgs) -> anyhow::Result<()> {
    let sim = WtsSim::start(SimConfig {
        token: args.token,
        bind: args.bind,
        auto_sessions: !args.no_auto_sessions,
        delivery_delay: Some(args.delivery_delay),
        rate_limit: args.rate_limit.then(RateLimit::documented),
    })
    .await
    .with_context(|| format!("binding {}", args.bind))?;
    println!("{}", sim.base_url());
    println!("{}", sim.token());
    shutdown_signal().await?;
    sim.shutdown().await;
    Ok(())
}

async fn shutdown_signal() -> anyhow::Result<()> {
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .context("installing the SIGTERM handler")?;
    tokio::select! {
        result = tokio::signal::ctrl_c() => result.context("waiting for ctrl-c")?,
        _ = terminate.recv() => {}
    }
    Ok(())
}

async fn play(args: CustomersArgs) -> anyhow::Result<()> {
    let options = PlayOptions {
        rate: args.rate,
        concurrency: args.concurrency,
        text: args.text,
        sessions: customers::generated_sessions(args.sessions),
        event: match args.event {
            EventArg::MessageReceived => CustomerEvent::MessageReceived,
            EventArg::SessionNew => CustomerEvent::SessionNew,
        },
        ..PlayOptions::new(args.url, args.count)
    };
    let report = customers::play(options).await?;
    println!("{report}");
    if let Some(error) = report.outcomes.iter().find_map(|o| o.error.as_deref()) {
        eprintln!("first error: {error}");
    }
    Ok(())
}
