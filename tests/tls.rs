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
struct Ca {
    pem: String,
    issuer: Issuer<'static, KeyPair>,
}

impl Ca {
    fn new(name: &str) -> Ca {
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
    fn leaf(&self, cn: &str) -> (String, String, Vec<u8>) {
        let key = KeyPair::generate().unwrap();
        let mut params =
            CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()]).unwrap();
        params.distinguished_name.push(DnType::CommonName, cn);
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        (cert.pem(), key.serialize_pem(), cert.der().to_vec())
    }
}

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let p = dir.join(name);
    // Write then rename, as certificate managers do, so the poller never reads half a file.
    let tmp = dir.join(format!(".{name}.tmp"));
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, &p).unwrap();
    p
}

async fn start(cfg: Config) -> meshgate::daemon::Running {
    let l = tokio::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .await
        .unwrap();
    meshgate::daemon::start(cfg, Catalog::builtin(), l, CancellationToken::new())
        .await
        .unwrap()
}

fn client(ca_pem: &str) -> reqwest::Client {
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

fn tls_config(cert: &Path, key: &Path, extra: &str) -> Config {
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
    assert_eq!(err.kind(), std::io::ErrorKind::InvalidInput);
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
