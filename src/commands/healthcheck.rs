//! `wtsbot healthcheck [--url]`: exits 0 when the daemon answers `GET /readyz` with 200,
//! 1 otherwise. It is the container's HEALTHCHECK, so it is quick and says why it failed.

use std::time::Duration;

use anyhow::Context;

use crate::config::Settings;

/// The whole check, connection included, ends within this.
const TIMEOUT: Duration = Duration::from_secs(3);

pub async fn run(settings: &Settings, url: Option<&str>) -> anyhow::Result<()> {
    let base = match url {
        Some(url) => url.trim_end_matches('/').to_string(),
        None => local_base_url(&settings.server.bind),
    };
    let readyz = format!("{base}/readyz");
    let client = reqwest::Client::builder()
        .timeout(TIMEOUT)
        .build()
        .context("cannot build the HTTP client")?;
    let response = client
        .get(&readyz)
        .send()
        .await
        .with_context(|| format!("{readyz} does not answer"))?;
    let status = response.status();
    if !status.is_success() {
        let body = response.text().await.unwrap_or_default();
        anyhow::bail!("{readyz} answered {status}: {}", body.trim());
    }
    println!("ready");
    Ok(())
}

/// `http://{server.bind}`, with a wildcard address replaced by loopback.
fn local_base_url(bind: &str) -> String {
    let local = match bind.rsplit_once(':') {
        Some(("0.0.0.0", port)) => format!("127.0.0.1:{port}"),
        Some(("[::]", port)) => format!("[::1]:{port}"),
        _ => bind.to_string(),
    };
    format!("http://{local}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_wildcard_bind_address_is_checked_on_loopback() {
        assert_eq!(local_base_url("0.0.0.0:8080"), "http://127.0.0.1:8080");
        assert_eq!(local_base_url("[::]:8080"), "http://[::1]:8080");
        assert_eq!(local_base_url("127.0.0.1:9000"), "http://127.0.0.1:9000");
        assert_eq!(local_base_url("bot.internal:80"), "http://bot.internal:80");
    }
}
