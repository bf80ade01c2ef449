//! `wtsbot serve`: the daemon, until SIGTERM or ctrl-c.

use crate::config::Settings;
use crate::startup::Application;

pub async fn serve(settings: Settings) -> anyhow::Result<()> {
    crate::telemetry::init(settings.log.format, &settings.log.level);
    if settings.wts.api_token.is_none() {
        tracing::warn!(
            "no wts.api_token configured: running dry, each reply is recorded as dry_run \
             instead of being sent"
        );
    }
    let app = Application::build(settings).await?;
    let shutdown = app.shutdown_token();
    tokio::spawn(async move {
        match stop_signal().await {
            Ok(signal) => tracing::info!(signal, "stop requested"),
            Err(err) => tracing::error!(error = %err, "cannot listen for stop signals; stopping"),
        }
        shutdown.cancel();
    });
    app.run_until_stopped().await
}

/// Waits for SIGTERM or ctrl-c; returns which one came.
async fn stop_signal() -> std::io::Result<&'static str> {
    #[cfg(unix)]
    {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        tokio::select! {
            _ = term.recv() => Ok("SIGTERM"),
            result = tokio::signal::ctrl_c() => result.map(|()| "SIGINT"),
        }
    }
    #[cfg(not(unix))]
    {
        tokio::signal::ctrl_c().await.map(|()| "ctrl-c")
    }
}
