//! TLS over real sockets: the API served with rustls from PEM files (reload on change, a bad new
//! pair keeps the old one, plain HTTP refused, client certificates), and outbound TLS to an https
//! scrape target with and without `ca_file`. Certificates are generated at test time (rcgen).

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use meshgate::config::Config;
use meshgate::judge::Catalog;
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
use serde_json::Value;
use tokio_util::sync::CancellationToken;

/// A CA that signs leaf certificates.
pub(crate) struct Ca {
    pub(crate) pem: String,
    issuer: Issuer<'static, KeyPair>,
}

impl Ca {
    pub(crate) fn new(name: &str) -> Ca {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        let cert = params.self_signed(&key).unwrap();
        Ca {
            pem: cert.pem(),
            issuer: Issuer::new(params, key),
        }
    }

    /// A leaf for 127.0.0.1 and localhost: (certificate PEM, key PEM, certificate DER).
    pub(crate) fn leaf(&self, cn: &str) -> (String, String, Vec<u8>) {
        let key = KeyPair::generate().unwrap();
        let mut params =
            CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()]).unwrap();
        params.distinguished_name.push(DnType::CommonName, cn);
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        (cert.pem(), key.serialize_pem(), cert.der().to_vec())
    }
}

pub(crate) fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let p = dir.join(name);
    // Write then rename, as certificate managers do, so the poller never reads half a file.
    let tmp = dir.join(format!(".{name}.tmp"));
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, &p).unwrap();
    p
}

pub(crate) async fn start(cfg: Config) -> meshgate::daemon::Running {
    let l = tokio::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .await
        .unwrap();
    meshgate::daemon::start(cfg, Catalog::builtin(), l, CancellationToken::new())
        .await
        .unwrap()
}

pub(crate) fn client(ca_pem: &str) -> reqwest::Client {
    reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(ca_pem.as_bytes()).unwrap())
        .tls_info(true)
        .pool_max_idle_per_host(0)
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap()
}

/// The certificate the server presents on a new connection (DER).
async fn served(c: &reqwest::Client, url: &str) -> Vec<u8> {
    let r = c.get(url).send().await.unwrap();
    assert_eq!(r.status(), 200);
    r.extensions()
        .get::<reqwest::tls::TlsInfo>()
        .expect("tls info")
        .peer_certificate()
        .expect("a peer certificate")
        .to_vec()
}

pub(crate) fn tls_config(cert: &Path, key: &Path, extra: &str) -> Config {
    Config::from_toml(
        &format!(
            "[server]\ntls_cert = {:?}\ntls_key = {:?}\ntls_reload_interval = \"100ms\"\n{extra}",
            cert.display().to_string(),
            key.display().to_string()
        ),
        "tls",
    )
    .unwrap()
}

#[tokio::test]
async fn api_over_tls_reloads_rotated_certificates_and_keeps_the_old_on_a_bad_pair() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new("meshgate test CA");
    let (c1, k1, der1) = ca.leaf("meshgate-1");
    let cert = write(dir.path(), "tls.crt", &c1);
    let key = write(dir.path(), "tls.key", &k1);
    let running = start(tls_config(&cert, &key, "")).await;
    let url = format!("https://127.0.0.1:{}/healthz", running.addr.port());
    let c = client(&ca.pem);
    assert_eq!(served(&c, &url).await, der1);

    // An untrusting client fails on the certificate.
    let e = reqwest::Client::new().get(&url).send().await.unwrap_err();
    let chain = meshgate::tls::error_chain(&e);
    assert!(chain.contains("certificate"), "{chain}");

    // Plain HTTP to the TLS port gets no HTTP answer.
    let plain = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap()
        .get(format!("http://127.0.0.1:{}/healthz", running.addr.port()))
        .send()
        .await;
    assert!(plain.is_err(), "plain HTTP answered: {plain:?}");

    // Rotate: the new certificate is served without a restart.
    let (c2, k2, der2) = ca.leaf("meshgate-2");
    write(dir.path(), "tls.key", &k2);
    write(dir.path(), "tls.crt", &c2);
    let t0 = Instant::now();
    loop {
        if served(&c, &url).await == der2 {
            break;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(20),
            "rotation not picked up"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // A certificate whose key is not in the key file: the second certificate stays in service.
    let (c3, _k3, der3) = ca.leaf("meshgate-3");
    write(dir.path(), "tls.crt", &c3);
    tokio::time::sleep(Duration::from_millis(800)).await;
    for _ in 0..3 {
        let now = served(&c, &url).await;
        assert_eq!(now, der2, "a mismatched pair replaced the good one");
        assert_ne!(now, der3);
    }
    // Garbage in the key file: still the second certificate.
    write(dir.path(), "tls.crt", &c2);
    write(dir.path(), "tls.key", "not a key\n");
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert_eq!(served(&c, &url).await, der2);

    // The API behind TLS is the whole API.
    let v: Value = c
        .get(format!(
            "https://127.0.0.1:{}/v1/checks",
            running.addr.port()
        ))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(v.as_array().is_some_and(|a| !a.is_empty()), "{v}");
    running.shutdown.cancel();
    running.join().await;
}

#[test]
fn a_wrong_pair_or_bad_file_is_a_config_error_naming_the_files() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new("ca");
    let (c1, _k1, _) = ca.leaf("one");
    let (_c2, k2, _) = ca.leaf("two");
    let cert = write(dir.path(), "a.crt", &c1);
    let key = write(dir.path(), "b.key", &k2);
    let text = format!(
        "[server]\ntls_cert = {:?}\ntls_key = {:?}\n",
        cert.display().to_string(),
        key.display().to_string()
    );
    let err = Config::from_toml(&text, "t").unwrap_err();
    let p = &err.problems()[0];
    assert_eq!(p.key, "server.tls_cert", "{err}");
    assert!(
        p.message.contains("a.crt") && p.message.contains("b.key"),
        "{err}"
    );
    assert!(p.message.to_lowercase().contains("match"), "{err}");

    // A key file without a key, a missing file, half a pair.
    let junk = write(dir.path(), "junk.key", "hello\n");
    let text = format!(
        "[server]\ntls_cert = {:?}\ntls_key = {:?}\n",
        cert.display().to_string(),
        junk.display().to_string()
    );
    let err = Config::from_toml(&text, "t").unwrap_err();
    assert_eq!(err.problems()[0].key, "server.tls_key", "{err}");
    assert!(err.to_string().contains("junk.key"), "{err}");
    let err = Config::from_toml(
        "[server]\ntls_cert = \"/nonexistent/x.crt\"\ntls_key = \"/nonexistent/x.key\"\n",
        "t",
    )
    .unwrap_err();
    assert!(err.to_string().contains("/nonexistent/x.crt"), "{err}");
    let err = Config::from_toml("[server]\ntls_cert = \"/x.crt\"\n", "t").unwrap_err();
    assert!(
        err.problems().iter().any(|p| p.key == "server.tls_key"),
        "{err}"
    );
}

#[tokio::test]
async fn the_daemon_refuses_to_start_on_a_wrong_pair() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new("ca");
    let (c1, _, _) = ca.leaf("one");
    let (_, k2, _) = ca.leaf("two");
    let mut cfg = Config::default();
    cfg.server.tls_cert = Some(write(dir.path(), "a.crt", &c1));
    cfg.server.tls_key = Some(write(dir.path(), "b.key", &k2));
    let l = tokio::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .await
        .unwrap();
    let err = meshgate::daemon::start(cfg, Catalog::builtin(), l, CancellationToken::new())
        .await
        .err()
        .expect("started with a mismatched pair");
    assert!(
        matches!(err, meshgate::daemon::StartError::Tls(_)),
        "{err:?}"
    );
    assert!(err.to_string().contains("a.crt"), "{err}");
}

#[tokio::test]
async fn client_certificates_are_required_with_tls_client_ca() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new("server CA");
    let clients = Ca::new("client CA");
    let other = Ca::new("someone else's CA");
    let (c, k, _) = ca.leaf("meshgate");
    let cert = write(dir.path(), "tls.crt", &c);
    let key = write(dir.path(), "tls.key", &k);
    let client_ca = write(dir.path(), "clients.pem", &clients.pem);
    let running = start(tls_config(
        &cert,
        &key,
        &format!("tls_client_ca = {:?}\n", client_ca.display().to_string()),
    ))
    .await;
    let url = format!("https://127.0.0.1:{}/healthz", running.addr.port());
    let with = |id: Option<(String, String)>| {
        let mut b = reqwest::Client::builder()
            .add_root_certificate(reqwest::Certificate::from_pem(ca.pem.as_bytes()).unwrap())
            .timeout(Duration::from_secs(10));
        if let Some((c, k)) = id {
            b = b.identity(reqwest::Identity::from_pem(format!("{c}\n{k}").as_bytes()).unwrap());
        }
        b.build().unwrap()
    };
    assert!(with(None).get(&url).send().await.is_err(), "no client cert");
    let (oc, ok, _) = other.leaf("intruder");
    assert!(
        with(Some((oc, ok))).get(&url).send().await.is_err(),
        "client cert from an untrusted CA"
    );
    let (cc, ck, _) = clients.leaf("gate-client");
    let r = with(Some((cc, ck))).get(&url).send().await.unwrap();
    assert_eq!(r.status(), 200);
    running.shutdown.cancel();
    running.join().await;
}

/// A small https metrics target: rustls (tokio-rustls) and hyper, independent of meshgate's
/// server code. With `client_ca`, clients must present a certificate it signed.
async fn https_target(cert_pem: &str, key_pem: &str, client_ca: Option<&str>) -> u16 {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(cert_pem.as_bytes())
        .collect::<Result<_, _>>()
        .unwrap();
    let key = PrivateKeyDer::from_pem_slice(key_pem.as_bytes()).unwrap();
    let builder = rustls::ServerConfig::builder();
    let cfg = match client_ca {
        None => builder.with_no_client_auth(),
        Some(ca) => {
            let mut roots = rustls::RootCertStore::empty();
            for c in CertificateDer::pem_slice_iter(ca.as_bytes()) {
                roots.add(c.unwrap()).unwrap();
            }
            let v = rustls::server::WebPkiClientVerifier::builder(std::sync::Arc::new(roots))
                .build()
                .unwrap();
            builder.with_client_cert_verifier(v)
        }
    }
    .with_single_cert(certs, key)
    .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(std::sync::Arc::new(cfg));
    let l = tokio::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .await
        .unwrap();
    let port = l.local_addr().unwrap().port();
    tokio::spawn(async move {
        let mut n = 0u64;
        loop {
            let (tcp, _) = l.accept().await.unwrap();
            let acceptor = acceptor.clone();
            n += 1;
            let count = n;
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let svc = hyper::service::service_fn(move |_req| async move {
                    let page = format!(
                        "# TYPE istio_requests_total counter\n\
                         istio_requests_total{{response_code=\"200\"}} {}\n",
                        1000 * count
                    );
                    Ok::<_, std::convert::Infallible>(hyper::Response::new(axum::body::Body::from(
                        page,
                    )))
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(tls), svc)
                    .await;
            });
        }
    });
    port
}

/// Start a daemon scraping `url` with `tls_toml` under `[scrape.tls]`; wait for the target's
/// health to show a scrape (good or failed) and return it.
async fn scrape_once(url: &str, tls_toml: &str) -> Value {
    let cfg = Config::from_toml(
        &format!(
            "[scrape]\ninterval = \"200ms\"\ntimeout = \"200ms\"\n[scrape.tls]\n{tls_toml}\n\
             [[targets]]\nurl = {url:?}\nlabels = {{ role = \"proxy\" }}\n"
        ),
        "scrape-tls",
    )
    .unwrap();
    let running = start(cfg).await;
    let api = format!("http://{}/v1/targets", running.addr);
    let t0 = Instant::now();
    let health = loop {
        let v: Value = reqwest::get(&api).await.unwrap().json().await.unwrap();
        let h = v[0].clone();
        if h["scrapes"].as_u64().unwrap_or(0) >= 2 {
            break h;
        }
        assert!(t0.elapsed() < Duration::from_secs(20), "no scrape: {v}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    running.shutdown.cancel();
    running.join().await;
    health
}

#[tokio::test]
async fn https_targets_are_verified_against_ca_file() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new("target CA");
    let (c, k, _) = ca.leaf("sidecar");
    let port = https_target(&c, &k, None).await;
    let url = format!("https://127.0.0.1:{port}/stats/prometheus");
    let ca_file = write(dir.path(), "ca.pem", &ca.pem);

    // Trusted through ca_file: scraped (the whole page read), no warning.
    let h = scrape_once(
        &url,
        &format!("ca_file = {:?}", ca_file.display().to_string()),
    )
    .await;
    assert_eq!(h["up"], true, "{h}");
    assert!(h["last_bytes"].as_u64().unwrap() > 70, "{h}");
    assert!(h.get("warning").is_none(), "{h}");

    // Without it: down, and the health says it is the certificate.
    let h = scrape_once(&url, "").await;
    assert_eq!(h["up"], false, "{h}");
    assert_eq!(h["last_success"], Value::Null, "{h}");
    let err = h["last_error"].as_str().unwrap();
    assert!(
        err.contains("invalid peer certificate") && err.contains("UnknownIssuer"),
        "{err}"
    );

    // insecure_skip_verify: scraped, and /v1/targets carries the warning.
    let h = scrape_once(&url, "insecure_skip_verify = true").await;
    assert_eq!(h["up"], true, "{h}");
    assert!(
        h["warning"]
            .as_str()
            .is_some_and(|w| w.contains("verification is disabled")),
        "{h}"
    );
}

#[tokio::test]
async fn client_certificates_for_targets_that_require_them() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new("target CA");
    let clients = Ca::new("client CA");
    let (c, k, _) = ca.leaf("prometheus");
    let port = https_target(&c, &k, Some(&clients.pem)).await;
    let url = format!("https://127.0.0.1:{port}/metrics");
    let ca_file = write(dir.path(), "ca.pem", &ca.pem);
    let (cc, ck, _) = clients.leaf("meshgate");
    let cert = write(dir.path(), "client.crt", &cc);
    let key = write(dir.path(), "client.key", &ck);
    let ca_line = format!("ca_file = {:?}", ca_file.display().to_string());

    let h = scrape_once(&url, &ca_line).await;
    assert_eq!(h["up"], false, "refused without a client certificate: {h}");
    let h = scrape_once(
        &url,
        &format!(
            "{ca_line}\ncert_file = {:?}\nkey_file = {:?}",
            cert.display().to_string(),
            key.display().to_string()
        ),
    )
    .await;
    assert_eq!(h["up"], true, "{h}");

    // A client certificate without its key, or with another key, is a config error.
    let (_, other_key, _) = clients.leaf("other");
    let other = write(dir.path(), "other.key", &other_key);
    let err = Config::from_toml(
        &format!(
            "[prometheus]\nurl = \"https://127.0.0.1:9090\"\n[prometheus.tls]\ncert_file = {:?}\nkey_file = {:?}\n",
            cert.display().to_string(),
            other.display().to_string()
        ),
        "t",
    )
    .unwrap_err();
    assert!(
        err.problems()
            .iter()
            .any(|p| p.key == "prometheus.tls.cert_file" && p.message.contains("other.key")),
        "{err}"
    );
    let err = Config::from_toml(
        &format!(
            "[alerts.tls]\ncert_file = {:?}\n",
            cert.display().to_string()
        ),
        "t",
    )
    .unwrap_err();
    assert!(
        err.problems()
            .iter()
            .any(|p| p.key == "alerts.tls.key_file"),
        "{err}"
    );
}

/// Runs `meshgate gate` (the real binary) with `args`: (exit code, stderr).
async fn gate(args: Vec<String>) -> (i32, String) {
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new(env!("CARGO_BIN_EXE_meshgate"))
            .arg("gate")
            .args(args)
            .env_remove("MESHGATE_CA_FILE")
            .env_remove("MESHGATE_TOKEN_FILE")
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gate_reaches_a_tls_daemon_with_auth_through_ca_file_and_token_file() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new("meshgate gate CA");
    let (cert, key, _) = ca.leaf("meshgate");
    let cert = write(dir.path(), "server.crt", &cert);
    let key = write(dir.path(), "server.key", &key);
    let ca_file = write(dir.path(), "ca.pem", &ca.pem);
    let tokens = write(
        dir.path(),
        "tokens",
        "admin gate-admin-0123456789abcdef\nread gate-read-0123456789abcdef\n",
    );
    let admin = write(dir.path(), "admin.token", "gate-admin-0123456789abcdef\n");
    let read = write(dir.path(), "read.token", "gate-read-0123456789abcdef\n");
    let cfg = tls_config(
        &cert,
        &key,
        &format!("[auth]\ntokens_file = {:?}\n", tokens.display().to_string()),
    );
    let running = start(cfg).await;
    let server = format!("https://127.0.0.1:{}", running.addr.port());
    let args = |extra: &[&std::path::Path]| -> Vec<String> {
        let mut v: Vec<String> = [
            "--server",
            &server,
            "--name",
            "tls-gate",
            "--baseline",
            "{revision=\"none-a\"}",
            "--canary",
            "{revision=\"none-b\"}",
            "--min-duration",
            "1s",
            "--max-duration",
            "2s",
            "--poll",
            "200ms",
            "--unreachable-after",
            "1s",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        for (flag, p) in ["--ca-file", "--token-file"].iter().zip(extra) {
            v.push(flag.to_string());
            v.push(p.display().to_string());
        }
        v
    };
    // No CA: the certificate is not trusted, the daemon is unreachable (exit 3).
    let (code, err) = gate(args(&[])).await;
    assert_eq!(code, 3, "{err}");
    assert!(err.contains("certificate"), "{err}");
    // CA but a read-only token: creating the analysis is refused (exit 64, naming the token).
    let (code, err) = gate(args(&[&ca_file, &read])).await;
    assert_eq!(code, 64, "{err}");
    assert!(err.contains("refused"), "{err}");
    // CA and an admin token: the analysis is created and runs to INCONCLUSIVE (no targets).
    let (code, err) = gate(args(&[&ca_file, &admin])).await;
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("analysis tls-gate started"), "{err}");
    // A missing CA file is a usage error naming the flag.
    let (code, err) = gate(args(&[Path::new("/nonexistent/ca.pem")])).await;
    assert_eq!(code, 64, "{err}");
    assert!(err.contains("--ca-file"), "{err}");
}
