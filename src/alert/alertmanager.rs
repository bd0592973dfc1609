//! Alertmanager API v2: `POST {base}/api/v2/alerts` with a JSON array of alerts.

use super::Alert;

/// Deliver one batch; any non-2xx answer or transport error is an error (retried by the caller).
pub(super) async fn post(
    client: &reqwest::Client,
    base: &str,
    batch: &[Alert],
) -> Result<(), String> {
    let url = format!("{}/api/v2/alerts", base.trim_end_matches('/'));
    let r = client
        .post(&url)
        .json(batch)
        .send()
        .await
        .map_err(|e| format!("POST {url}: {e}"))?;
    let status = r.status();
    if status.is_success() {
        return Ok(());
    }
    let mut body = r.text().await.unwrap_or_default();
    body.truncate(512);
    Err(format!("POST {url}: status {status}: {body}"))
}
