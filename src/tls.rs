//! TLS: the API served over rustls with certificate reload, and the outbound TLS settings of
//! scrapes, the Prometheus backend, Alertmanager and webhooks.
//!
//! The server side loads a PEM certificate chain and key (and optionally a client CA, which then
//! requires every client to present a certificate it signed). A poller re-reads the files when
//! their modification time or size changes; a new pair that does not load or does not match keeps
//! the old one in service and logs the error with the file name. The handshakes themselves run in
//! `server.rs`, one task per connection, bounded in time (`server.handshake_timeout`).

use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

use meshgate_core::ConfigProblem;

/// Why a certificate, key or CA file cannot be used. Every variant names the file.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// The file cannot be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: io::Error,
    },
    /// The file holds no usable PEM block of the expected kind.
    #[error("{path}: {message}")]
    Pem {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// The key does not belong to the certificate, or rustls refuses the pair.
    #[error("certificate {cert} and key {key} cannot be used together: {message}")]
    Pair {
        /// The certificate file.
        cert: PathBuf,
        /// The key file.
        key: PathBuf,
        /// What rustls says.
        message: String,
    },
}

fn read(path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read {
        path: path.to_owned(),
        source,
    })
}

/// Every certificate in a PEM file; an error when there is none.
pub fn load_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let bytes = read(path)?;
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&bytes)
        .collect::<Result<_, _>>()
        .map_err(|e| TlsError::Pem {
            path: path.to_owned(),
            message: format!("not a valid PEM certificate file: {e}"),
        })?;
    if certs.is_empty() {
        return Err(TlsError::Pem {
            path: path.to_owned(),
            message: "holds no CERTIFICATE block".into(),
        });
    }
    Ok(certs)
}

/// The first private key (PKCS#8, PKCS#1 or SEC1) in a PEM file.
pub fn load_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    let bytes = read(path)?;
    PrivateKeyDer::from_pem_slice(&bytes).map_err(|e| TlsError::Pem {
        path: path.to_owned(),
        message: format!("holds no usable PRIVATE KEY block: {e}"),
    })
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Where the API's TLS material lives (from `[server]`).
#[derive(Clone, Debug, PartialEq)]
pub struct ServerTlsFiles {
    /// PEM certificate chain, leaf first.
    pub cert: PathBuf,
    /// PEM private key.
    pub key: PathBuf,
    /// PEM CA bundle; clients must present a certificate it signed.
    pub client_ca: Option<PathBuf>,
}

impl ServerTlsFiles {
    /// Load and check the files into a rustls server configuration (HTTP/1.1 over ALPN).
    pub fn load(&self) -> Result<rustls::ServerConfig, TlsError> {
        let certs = load_certs(&self.cert)?;
        let key = load_key(&self.key)?;
        let builder = rustls::ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .expect("ring supports the default protocol versions");
        let builder = match &self.client_ca {
            None => builder.with_no_client_auth(),
            Some(ca) => {
                let mut roots = rustls::RootCertStore::empty();
                for c in load_certs(ca)? {
                    roots.add(c).map_err(|e| TlsError::Pem {
                        path: ca.clone(),
                        message: format!("not a usable CA certificate: {e}"),
                    })?;
                }
                let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
                    Arc::new(roots),
                    provider(),
                )
                .build()
                .map_err(|e| TlsError::Pem {
                    path: ca.clone(),
                    message: format!("cannot verify clients with it: {e}"),
                })?;
                builder.with_client_cert_verifier(verifier)
            }
        };
        // with_single_cert checks that the key's public half is the certificate's.
        let mut cfg = builder
            .with_single_cert(certs, key)
            .map_err(|e| TlsError::Pair {
                cert: self.cert.clone(),
                key: self.key.clone(),
                message: e.to_string(),
            })?;
        cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(cfg)
    }

    fn stamp(&self) -> Vec<Option<(SystemTime, u64)>> {
        std::iter::once(&self.cert)
            .chain(std::iter::once(&self.key))
            .chain(self.client_ca.iter())
            .map(|p| {
                std::fs::metadata(p)
                    .ok()
                    .and_then(|m| Some((m.modified().ok()?, m.len())))
            })
            .collect()
    }
}

/// The API's TLS configuration in force, swapped on reload.
#[derive(Clone)]
pub struct ServerTls {
    files: ServerTlsFiles,
    current: Arc<RwLock<Arc<rustls::ServerConfig>>>,
}

impl ServerTls {
    /// Load the files once; an error here is a start-up error.
    pub fn new(files: ServerTlsFiles) -> Result<Self, TlsError> {
        let cfg = files.load()?;
        Ok(Self {
            files,
            current: Arc::new(RwLock::new(Arc::new(cfg))),
        })
    }

    /// An acceptor with the configuration in force (the connections of `server.rs` take one each).
    pub(crate) fn acceptor(&self) -> tokio_rustls::TlsAcceptor {
        tokio_rustls::TlsAcceptor::from(self.current.read().expect("tls lock").clone())
    }

    /// Re-read the files now. On error the configuration in force stays.
    pub fn reload(&self) -> Result<(), TlsError> {
        let cfg = self.files.load()?;
        *self.current.write().expect("tls lock") = Arc::new(cfg);
        Ok(())
    }

    /// Poll the files every `every` and reload when one changed, until `stop`.
    pub async fn watch(self, every: Duration, stop: CancellationToken) {
        let mut seen = self.files.stamp();
        let mut ticker = tokio::time::interval(every);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = ticker.tick() => {}
            }
            let now = self.files.stamp();
            if now == seen {
                continue;
            }
            seen = now;
            match self.reload() {
                Ok(()) => info!(
                    cert = %self.files.cert.display(),
                    key = %self.files.key.display(),
                    "API TLS certificate reloaded"
                ),
                Err(e) => error!(
                    error = %e,
                    "API TLS files changed but cannot be used; the previous certificate stays in service"
                ),
            }
        }
    }
}

/// `tls` sub-table of an outbound client (`[scrape.tls]`, `[prometheus.tls]`, `[alerts.tls]`).
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ClientTls {
    /// Extra trusted roots (PEM), on top of the built-in web PKI roots.
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// Client certificate chain (PEM) for mutual TLS; needs `key_file`.
    #[serde(default)]
    pub cert_file: Option<PathBuf>,
    /// Client private key (PEM) for mutual TLS; needs `cert_file`.
    #[serde(default)]
    pub key_file: Option<PathBuf>,
    /// Accept any server certificate. For tests only: anyone on the path can read and change
    /// the traffic. Logged as a warning at start and shown on `/v1/targets`.
    #[serde(default)]
    pub insecure_skip_verify: bool,
}

/// What `/v1/targets` and the logs say when verification is off.
pub const INSECURE_WARNING: &str =
    "TLS certificate verification is disabled (insecure_skip_verify): this target's identity is not checked";

impl ClientTls {
    /// Problems of this table at `prefix` (e.g. `scrape.tls`), including unreadable files.
    pub fn problems(&self, prefix: &str) -> Vec<ConfigProblem> {
        let mut out = Vec::new();
        if let Some(ca) = &self.ca_file {
            if let Err(e) = load_certs(ca) {
                out.push(ConfigProblem::new(
                    format!("{prefix}.ca_file"),
                    e.to_string(),
                ));
            }
        }
        match (&self.cert_file, &self.key_file) {
            (None, None) => {}
            (Some(_), None) => out.push(ConfigProblem::new(
                format!("{prefix}.key_file"),
                "is missing: cert_file needs its key",
            )),
            (None, Some(_)) => out.push(ConfigProblem::new(
                format!("{prefix}.cert_file"),
                "is missing: key_file needs its certificate",
            )),
            (Some(c), Some(k)) => {
                if let Err(e) = self.identity_pem(c, k) {
                    out.push(ConfigProblem::new(
                        format!("{prefix}.cert_file"),
                        e.to_string(),
                    ));
                }
            }
        }
        out
    }

    fn identity_pem(&self, cert: &Path, key: &Path) -> Result<Vec<u8>, TlsError> {
        // Parse both (clear errors, and the pair must match) before handing reqwest the PEM.
        let files = ServerTlsFiles {
            cert: cert.to_owned(),
            key: key.to_owned(),
            client_ca: None,
        };
        files.load()?;
        let mut pem = read(cert)?;
        pem.push(b'\n');
        pem.extend(read(key)?);
        Ok(pem)
    }

    /// Apply to a reqwest client builder. `what` names the client in the insecure warning.
    pub fn apply(
        &self,
        mut b: reqwest::ClientBuilder,
        what: &str,
    ) -> Result<reqwest::ClientBuilder, String> {
        if let Some(ca) = &self.ca_file {
            for c in load_certs(ca).map_err(|e| e.to_string())? {
                let cert = reqwest::Certificate::from_der(c.as_ref())
                    .map_err(|e| format!("{}: {e}", ca.display()))?;
                b = b.add_root_certificate(cert);
            }
        }
        if let (Some(c), Some(k)) = (&self.cert_file, &self.key_file) {
            let pem = self.identity_pem(c, k).map_err(|e| e.to_string())?;
            let id = reqwest::Identity::from_pem(&pem)
                .map_err(|e| format!("{} / {}: {e}", c.display(), k.display()))?;
            b = b.identity(id);
        }
        if self.insecure_skip_verify {
            warn!(client = what, "{INSECURE_WARNING}");
            b = b.danger_accept_invalid_certs(true);
        }
        Ok(b)
    }
}

/// The message of an error and all its sources, e.g. `error sending request: ... invalid peer
/// certificate: UnknownIssuer`, so a certificate problem is visible where reqwest hides it.
pub fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = e.to_string();
    let mut src = e.source();
    while let Some(s) = src {
        let m = s.to_string();
        if !out.contains(&m) {
            out.push_str(": ");
            out.push_str(&m);
        }
        src = s.source();
    }
    out
}
