//! Generic JSON webhook: `POST url` with `{"version": "1", "alerts": [...]}`, each alert with a
//! `status` of `firing` or `resolved`; with a secret, `X-Meshgate-Signature: sha256=<hex>` is the
//! HMAC-SHA256 of the exact body bytes.

use hmac::{Hmac, Mac};
use serde_json::json;
use sha2::Sha256;

use super::Alert;

/// The signature header.
pub const SIGNATURE_HEADER: &str = "X-Meshgate-Signature";

/// `sha256=<lowercase hex of HMAC-SHA256(secret, body)>`.
pub fn signature(secret: &str, body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("any key length");
    mac.update(body);
    let bytes = mac.finalize().into_bytes();
    let mut out = String::with_capacity(7 + 64);
    out.push_str("sha256=");
    for b in bytes {
        out.push_str(&format!("{b:02x}"));
    }
    out
}

/// The body for one batch.
pub fn body(batch: &[Alert]) -> Vec<u8> {
    let alerts: Vec<serde_json::Value> = batch
        .iter()
        .map(|a| {
            let mut v = serde_json::to_value(a).expect("alert serializes");
            v["status"] = json!(if a.firing { "firing" } else { "resolved" });
            v
        })
        .collect();
    serde_json::to_vec(&json!({"version": "1", "alerts": alerts})).expect("body serializes")
}

/// Deliver one batch; non-2xx or a transport error is an error (retried by the caller).
pub(super) async fn post(
    client: &reqwest::Client,
    url: &str,
    secret: Option<&str>,
    batch: &[Alert],
) -> Result<(), String> {
    let body = body(batch);
    let mut req = client
        .post(url)
        .header(reqwest::header::CONTENT_TYPE, "application/json");
    if let Some(s) = secret {
        req = req.header(SIGNATURE_HEADER, signature(s, &body));
    }
    let r = req
        .body(body)
        .send()
        .await
        .map_err(|e| format!("POST {url}: {e}"))?;
    if r.status().is_success() {
        Ok(())
    } else {
        Err(format!("POST {url}: status {}", r.status()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signature_matches_rfc4231_case_2() {
        // RFC 4231 test case 2: key "Jefe", data "what do ya want for nothing?".
        assert_eq!(
            signature("Jefe", b"what do ya want for nothing?"),
            "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }
}
