//! The autopilot's Kubernetes client: one call at a time over HTTP(S) with reqwest, the
//! conventions of Kubernetes discovery (the `[discovery.kubernetes]` API server, token file
//! re-read on rotation, CA bundle), and the API's `Status` answers read into [`KubeError`].

use std::time::Duration;

use serde_json::Value;

use crate::discovery::kubernetes::{KubernetesConfig, SERVICE_ACCOUNT_DIR};

/// Largest answer read from the API server (a namespace's workloads fit many times over).
const MAX_BODY: usize = 16 << 20;

/// A call that failed.
#[derive(Debug, thiserror::Error)]
pub enum KubeError {
    /// No answer: connection refused, timeout, cut body.
    #[error("{call}: {message}")]
    Http {
        /// Method and path, e.g. `PATCH /api/v1/namespaces/shop`.
        call: String,
        /// What went wrong.
        message: String,
    },
    /// The API server answered an error (its `Status` object, when it sent one).
    #[error("{call}: {code} {reason}: {message}")]
    Status {
        /// Method and path.
        call: String,
        /// HTTP status code.
        code: u16,
        /// `Status.reason` (`Conflict`, `NotFound`, `Forbidden`, ...), or the HTTP reason.
        reason: String,
        /// `Status.message`, or the body as it came.
        message: String,
    },
}

/// A write not sent: the run's Lease was taken by another holder.
#[derive(Debug, thiserror::Error)]
#[error("{call}: not sent: the Lease was taken by another holder")]
pub struct LeaseLost {
    /// Method and path of the write not sent.
    pub call: String,
}

impl KubeError {
    /// The HTTP status code of an error answer.
    pub fn code(&self) -> Option<u16> {
        match self {
            KubeError::Status { code, .. } => Some(*code),
            KubeError::Http { .. } => None,
        }
    }
}

/// A client of one API server.
pub struct Kube {
    base: String,
    client: reqwest::Client,
    token: Option<crate::secret::TokenFile>,
}

impl Kube {
    /// Build it from `[discovery.kubernetes]`: token and CA from its files, else the pod's
    /// service account when mounted (as discovery does).
    pub fn build(cfg: KubernetesConfig) -> Result<Self, String> {
        let cfg = cfg.with_in_cluster_defaults(std::path::Path::new(SERVICE_ACCOUNT_DIR));
        let b = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            .timeout(Duration::from_secs(30));
        let (b, token) = crate::discovery::kubernetes::ca_and_token(&cfg, b)?;
        reqwest::Url::parse(&cfg.api_server).map_err(|e| {
            format!(
                "discovery.kubernetes.api_server {:?}: not a URL ({e})",
                cfg.api_server
            )
        })?;
        Ok(Self {
            base: cfg.api_server.trim_end_matches('/').to_owned(),
            client: b.build().map_err(|e| e.to_string())?,
            token,
        })
    }

    /// `GET path`: the object, or `None` on 404.
    pub async fn get(&self, path: &str) -> Result<Option<Value>, KubeError> {
        match self.send("GET", path, None, None).await {
            Ok(v) => Ok(Some(v)),
            Err(e) if e.code() == Some(404) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// One call; a 2xx answer's body as JSON, anything else a [`KubeError`].
    pub async fn send(
        &self,
        method: &str,
        path: &str,
        content_type: Option<&str>,
        body: Option<&Value>,
    ) -> Result<Value, KubeError> {
        let call = format!("{method} {path}");
        let http = |message: String| KubeError::Http {
            call: call.clone(),
            message,
        };
        let m = reqwest::Method::from_bytes(method.as_bytes()).map_err(|e| http(e.to_string()))?;
        let mut r = self
            .client
            .request(m, format!("{}{path}", self.base))
            .header("accept", "application/json");
        if let Some(t) = &self.token {
            r = r.bearer_auth(t.token());
        }
        if let Some(b) = body {
            r = r
                .header("content-type", content_type.unwrap_or("application/json"))
                .body(b.to_string());
        }
        let mut resp = r
            .send()
            .await
            .map_err(|e| http(crate::tls::error_chain(&e)))?;
        let status = resp.status();
        let mut bytes = Vec::new();
        while let Some(chunk) = resp
            .chunk()
            .await
            .map_err(|e| http(crate::tls::error_chain(&e)))?
        {
            if bytes.len() + chunk.len() > MAX_BODY {
                return Err(http(format!("the answer is over {MAX_BODY} bytes")));
            }
            bytes.extend_from_slice(&chunk);
        }
        let doc: Option<Value> = serde_json::from_slice(&bytes).ok();
        if !status.is_success() {
            let st = doc.as_ref().filter(|d| d["kind"] == "Status");
            return Err(KubeError::Status {
                call,
                code: status.as_u16(),
                reason: st
                    .and_then(|d| d["reason"].as_str())
                    .unwrap_or(status.canonical_reason().unwrap_or(""))
                    .to_owned(),
                message: st
                    .and_then(|d| d["message"].as_str())
                    .map(str::to_owned)
                    .unwrap_or_else(|| String::from_utf8_lossy(&bytes).into_owned()),
            });
        }
        doc.ok_or_else(|| http("the answer is not JSON".into()))
    }
}
