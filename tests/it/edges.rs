//! The edge holes of issue 13, each through the real HTTP API over real sockets or the real
//! binary: idle and slow connections (TLS and plain), the skew guard without istiod, check/cohort
//! mismatches, selectors that match no target, `"checks": []`, `serve` against `check-config`,
//! and the JSON shape of 404/405/413/414.

use std::net::Ipv4Addr;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use meshgate::config::{Config, StaticTarget};
use meshgate::sim::{Fault, SimMesh};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;

use crate::support::{analysis, daemon, follow_verdicts, free_port, lab, mesh, selectors, GOOD};
use crate::tls::{client, tls_config, write, Ca};

/// Whether the server closed `s` within `wait` (EOF or reset), reading and discarding anything
/// it sends first.
async fn closed_within(s: &mut TcpStream, wait: Duration) -> bool {
    let deadline = tokio::time::Instant::now() + wait;
    let mut buf = [0u8; 1024];
    loop {
        match tokio::time::timeout_at(deadline, s.read(&mut buf)).await {
            Err(_) => return false,
            Ok(Ok(0)) | Ok(Err(_)) => return true,
            Ok(Ok(_)) => continue,
        }
    }
}

async fn idle_connections(port: u16, n: usize) -> Vec<TcpStream> {
    let mut v = Vec::with_capacity(n);
    for _ in 0..n {
        v.push(
            TcpStream::connect((Ipv4Addr::LOCALHOST, port))
                .await
                .unwrap(),
        );
    }
    v
}

/// How many of `conns` the server closed within `wait` (all waited on at once).
async fn count_closed(conns: &mut [TcpStream], wait: Duration) -> usize {
    let waits = conns.iter_mut().map(|s| closed_within(s, wait));
    futures_util::future::join_all(waits)
        .await
        .into_iter()
        .filter(|c| *c)
        .count()
}

// ---- 1. idle and slow connections ----

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_connections_that_never_start_tls_never_delay_a_real_https_request() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new("meshgate edges CA");
    let (c, k, _) = ca.leaf("meshgate");
    let cert = write(dir.path(), "tls.crt", &c);
    let key = write(dir.path(), "tls.key", &k);
    let running = crate::tls::start(tls_config(&cert, &key, "handshake_timeout = \"3s\"\n")).await;
    let port = running.addr.port();
    // 300 connections that never send a byte (the old accept loop had 256 handshake slots and
    // each idle connection held one for 10 s).
    let mut idle = idle_connections(port, 300).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let url = format!("https://127.0.0.1:{port}/healthz");
    let https = client(&ca.pem);
    for _ in 0..3 {
        let t = Instant::now();
        let r = https.get(&url).send().await.unwrap();
        assert_eq!(r.status(), 200);
        assert!(
            t.elapsed() < Duration::from_secs(2),
            "a real HTTPS request took {:?} with 300 idle connections open",
            t.elapsed()
        );
    }
    // One peer keeps at most max_pending_per_peer (64) connections pending: the older idle
    // ones were closed as newer ones came (the three requests above displaced three more).
    let closed_early = count_closed(&mut idle, Duration::from_millis(500)).await;
    assert!(
        closed_early >= 300 - 64,
        "only {closed_early} of 300 idle connections were closed by the per-peer cap"
    );
    assert!(
        closed_early < 300,
        "the newest pending ones wait for their timeout"
    );
    // The rest are closed by the handshake timeout (3 s here).
    let closed = count_closed(&mut idle, Duration::from_secs(5)).await;
    assert_eq!(closed, 300, "an idle connection outlived handshake_timeout");
}

async fn plain_daemon(extra_server_toml: &str) -> (meshgate::daemon::Running, CancellationToken) {
    daemon(Config::from_toml(&format!("[server]\n{extra_server_toml}"), "edges").unwrap()).await
}

/// Send a request head one byte every 200 ms, forever; returns when the server closes.
async fn slow_head(mut s: TcpStream) -> (Duration, String) {
    let t = Instant::now();
    let head = b"GET /healthz HTTP/1.1\r\nHost: meshgate\r\nX-Slow: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
    let mut got = Vec::new();
    for b in head.iter().cycle() {
        if s.write_all(&[*b]).await.is_err() {
            break;
        }
        let mut buf = [0u8; 512];
        match tokio::time::timeout(Duration::from_millis(200), s.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => break,
            Ok(Ok(n)) => got.extend_from_slice(&buf[..n]),
            Err(_) => {}
        }
        if t.elapsed() > Duration::from_secs(20) {
            break;
        }
    }
    (t.elapsed(), String::from_utf8_lossy(&got).into_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_request_heads_are_cut_off_at_header_read_timeout_and_delay_no_one() {
    let (running, stop) = plain_daemon("header_read_timeout = \"1s\"\n").await;
    let port = running.addr.port();
    // One slow client alone: disconnected after the timeout, never answered 200.
    let s = TcpStream::connect((Ipv4Addr::LOCALHOST, port))
        .await
        .unwrap();
    let (took, got) = slow_head(s).await;
    assert!(
        took >= Duration::from_millis(900) && took < Duration::from_secs(3),
        "a slow-header client was held for {took:?}"
    );
    assert!(!got.contains("200 OK"), "{got}");

    // 200 slow clients at once: a real request still answers at once, and every slow one is
    // gone soon after the timeout (the old server held 500 of them for 60 s).
    let mut slow = Vec::new();
    for _ in 0..200 {
        let s = TcpStream::connect((Ipv4Addr::LOCALHOST, port))
            .await
            .unwrap();
        slow.push(tokio::spawn(slow_head(s)));
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let c = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    let t = Instant::now();
    let r = c
        .get(format!("http://127.0.0.1:{port}/healthz"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(t.elapsed() < Duration::from_secs(2), "{:?}", t.elapsed());
    for h in slow {
        let (took, got) = h.await.unwrap();
        assert!(took < Duration::from_secs(3), "held {took:?}");
        assert!(!got.contains("200 OK"), "{got}");
    }

    // A kept-alive connection idle after its answer is closed after the same timeout.
    let mut s = TcpStream::connect((Ipv4Addr::LOCALHOST, port))
        .await
        .unwrap();
    s.write_all(b"GET /healthz HTTP/1.1\r\nHost: meshgate\r\n\r\n")
        .await
        .unwrap();
    let mut buf = [0u8; 1024];
    let n = s.read(&mut buf).await.unwrap();
    assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"));
    let t = Instant::now();
    assert!(closed_within(&mut s, Duration::from_secs(3)).await);
    assert!(
        t.elapsed() >= Duration::from_millis(800),
        "{:?}",
        t.elapsed()
    );
    stop.cancel();
    running.join().await;
}

/// A request whose body never arrives (a POST announcing 200 bytes, sending 20), or arrives one
/// byte a second: answered 408 in the JSON error shape at `body_read_timeout`, the connection
/// closed; meanwhile a real create answers at once, and a whole body still creates.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bodies_that_do_not_arrive_are_408s_at_body_read_timeout() {
    let (running, stop) = plain_daemon("body_read_timeout = \"1s\"\n").await;
    let port = running.addr.port();
    let held_body = |trickle: bool| async move {
        let mut s = TcpStream::connect((Ipv4Addr::LOCALHOST, port))
            .await
            .unwrap();
        let t = Instant::now();
        s.write_all(
            b"POST /v1/analyses HTTP/1.1\r\nHost: meshgate\r\nContent-Type: application/json\r\nContent-Length: 200\r\n\r\n{\"name\": \"held\", \"",
        )
        .await
        .unwrap();
        let mut got = Vec::new();
        let mut buf = [0u8; 2048];
        loop {
            if trickle && s.write_all(b"x").await.is_err() {
                break;
            }
            match tokio::time::timeout(Duration::from_millis(250), s.read(&mut buf)).await {
                Ok(Ok(0)) | Ok(Err(_)) => break,
                Ok(Ok(n)) => got.extend_from_slice(&buf[..n]),
                Err(_) => {}
            }
            if t.elapsed() > Duration::from_secs(10) {
                break;
            }
        }
        (t.elapsed(), String::from_utf8_lossy(&got).into_owned())
    };
    let stalled = tokio::spawn(held_body(false));
    let trickling = tokio::spawn(held_body(true));
    tokio::time::sleep(Duration::from_millis(200)).await;
    // A whole request meanwhile: answered at once (the selector matches nothing yet: 201).
    let c = reqwest::Client::new();
    let t = Instant::now();
    let r = c
        .post(format!("http://127.0.0.1:{port}/v1/analyses"))
        .json(&serde_json::json!({
            "name": "whole",
            "baseline": "{revision=\"a\"}",
            "canary": "{revision=\"b\"}"
        }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201, "{}", r.text().await.unwrap());
    assert!(t.elapsed() < Duration::from_secs(1), "{:?}", t.elapsed());
    for h in [stalled, trickling] {
        let (took, got) = h.await.unwrap();
        assert!(
            took >= Duration::from_millis(900) && took < Duration::from_secs(4),
            "held {took:?}: {got}"
        );
        assert!(got.starts_with("HTTP/1.1 408"), "{got}");
        assert!(
            got.to_ascii_lowercase().contains("connection: close"),
            "{got}"
        );
        let body = got.split("\r\n\r\n").nth(1).unwrap_or_default();
        let v: Value = serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {got}"));
        assert_eq!(v["error"]["code"], "request_timeout", "{v}");
        let msg = v["error"]["message"].as_str().unwrap();
        assert!(
            msg.contains("server.body_read_timeout (1s)") && msg.contains("of 200 bytes"),
            "{msg}"
        );
    }
    // Neither half-sent analysis exists.
    let r = c
        .get(format!("http://127.0.0.1:{port}/v1/analyses/held"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    stop.cancel();
    running.join().await;
}

// ---- 2. the skew guard without istiod ----

async fn proxies_only_mesh(stop: &CancellationToken) -> (SimMesh, Vec<StaticTarget>) {
    let healthy = Fault {
        error_rate: None,
        latency_factor: 1.0,
    };
    let m = mesh(131, GOOD, healthy, stop).await;
    // What the shipped Kubernetes manifests scrape: sidecars, no istiod.
    let targets = m
        .targets()
        .into_iter()
        .filter(|t| t.labels.get("role").map(String::as_str) == Some("proxy"))
        .map(|t| StaticTarget {
            url: t.url,
            labels: t.labels,
        })
        .collect();
    (m, targets)
}

async fn daemon_with(
    judge_toml: &str,
    targets: &[StaticTarget],
) -> (meshgate::daemon::Running, CancellationToken) {
    let mut cfg = Config::from_toml(
        &format!(
            "[scrape]\ninterval = \"250ms\"\ntimeout = \"200ms\"\n[judge]\nslo_go = true\nmin_exposure = 1000\n{judge_toml}"
        ),
        "edges",
    )
    .unwrap();
    cfg.targets = targets.to_vec();
    daemon(cfg).await
}

async fn create(base: &str, body: &Value) -> reqwest::Response {
    reqwest::Client::new()
        .post(format!("{base}/v1/analyses"))
        .json(body)
        .send()
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_istiod_observed_holds_go_naming_the_revision_unless_the_risk_is_accepted() {
    let stop = CancellationToken::new();
    let (_mesh, targets) = proxies_only_mesh(&stop).await;
    let (held, stop_held) =
        daemon_with("min_duration = \"3s\"\nmax_duration = \"9s\"\n", &targets).await;
    let (open, stop_open) = daemon_with(
        "min_duration = \"3s\"\nmax_duration = \"60s\"\nallow_go_without_istiod_skew_check = true\n",
        &targets,
    )
    .await;
    let (hb, ob) = (
        format!("http://{}", held.addr),
        format!("http://{}", open.addr),
    );
    for b in [&hb, &ob] {
        assert_eq!(create(b, &analysis("skew", GOOD)).await.status(), 201);
    }
    let ((seen_h, vh), (seen_o, vo)) = tokio::join!(
        follow_verdicts(&hb, "skew", Duration::from_secs(30)),
        follow_verdicts(&ob, "skew", Duration::from_secs(45))
    );
    // Without istiod: never GO; the reason names the revision and the way to accept the risk;
    // at max_duration, INCONCLUSIVE saying why.
    assert!(!seen_h.iter().any(|v| v == "GO"), "{seen_h:?} {vh:#}");
    assert_eq!(vh["verdict"], "INCONCLUSIVE", "{vh:#}");
    let reason = vh["reason"].as_str().unwrap();
    assert!(
        reason.contains("version skew guard cannot judge revision")
            && reason.contains("no istiod observed")
            && reason.contains("allow_go_without_istiod_skew_check"),
        "{reason}"
    );
    assert!(
        reason.contains(GOOD.0) || reason.contains(GOOD.1),
        "{reason}"
    );
    // /v1/skew says the same problem holds GO.
    let skew: Value = reqwest::get(format!("{hb}/v1/skew"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let problems = skew["problems"].as_array().unwrap();
    assert!(
        problems.iter().any(|p| p["holds_go"] == true
            && p["blocking"] == false
            && p["message"]
                .as_str()
                .unwrap()
                .contains("no istiod observed")),
        "{skew:#}"
    );
    // With the opt-out, the same mesh and analysis can GO.
    assert_eq!(vo["verdict"], "GO", "{seen_o:?} {vo:#}");
    for s in [stop, stop_held, stop_open] {
        s.cancel();
    }
    held.join().await;
    open.join().await;
}

// ---- 3. checks and cohorts of different roles; 5. "checks": [] ----

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mismatched_checks_and_cohorts_and_empty_checks_are_422s_naming_them() {
    let l = lab("").await;
    let (pb, pc) = selectors(GOOD);
    let ib = format!("{{role=\"istiod\", revision=\"{}\"}}", GOOD.0);
    let ic = format!("{{role=\"istiod\", revision=\"{}\"}}", GOOD.1);
    let base = l.base.as_str();
    let error = |body: Value| async move {
        let r = create(base, &body).await;
        let status = r.status().as_u16();
        let v: Value = r.json().await.unwrap();
        (status, v)
    };
    // A control-plane check over sidecar cohorts.
    let (s, v) = error(
        json!({"name": "cp-on-proxies", "baseline": pb, "canary": pc,
        "checks": ["istiod-push-errors"]}),
    )
    .await;
    assert_eq!(s, 422, "{v}");
    assert_eq!(v["error"]["code"], "invalid_analysis");
    let m = v["error"]["message"].as_str().unwrap();
    assert!(
        m.contains("analysis.checks")
            && m.contains("istiod-push-errors")
            && m.contains("pilot_xds_pushes")
            && m.contains("control-plane (istiod)")
            && m.contains("selects only role=\"proxy\" targets"),
        "{m}"
    );
    // The default checks over istiod cohorts.
    let (s, v) = error(json!({"name": "default-on-istiod", "baseline": ib, "canary": ic})).await;
    assert_eq!(s, 422, "{v}");
    let m = v["error"]["message"].as_str().unwrap();
    assert!(
        m.contains("istio_requests_total")
            && m.contains("data-plane (sidecar)")
            && m.contains("role=\"istiod\"")
            && m.contains("default set"),
        "{m}"
    );
    // `"checks": []` is not the default set.
    let (s, v) = error(json!({"name": "empty", "baseline": pb, "canary": pc, "checks": []})).await;
    assert_eq!(s, 422, "{v}");
    let m = v["error"]["message"].as_str().unwrap();
    assert!(m.contains("analysis.checks") && m.contains("empty"), "{m}");
    // None of them was created.
    for id in ["cp-on-proxies", "default-on-istiod", "empty"] {
        let r = reqwest::get(format!("{}/v1/analyses/{id}", l.base))
            .await
            .unwrap();
        assert_eq!(r.status(), 404, "{id}");
    }
    // The right pairs are accepted: control-plane checks on istiod cohorts, and no `checks`
    // field at all means the default set.
    let r = create(
        &l.base,
        &json!({"name": "cp-on-istiod", "baseline": ib, "canary": ic,
            "checks": ["istiod-push-errors", "istiod-xds-rejects"]}),
    )
    .await;
    assert_eq!(r.status(), 201, "{}", r.text().await.unwrap());
    let r = create(&l.base, &analysis("omitted", GOOD)).await;
    assert_eq!(r.status(), 201);
    let v: Value = reqwest::get(format!("{}/v1/analyses/omitted/verdict", l.base))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let names: Vec<&str> = v["checks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert!(
        names.contains(&"error-rate") && names.contains(&"latency-tail"),
        "{names:?}"
    );
    l.shutdown().await;
}

// ---- 4. a selector that matches no target ----

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_selector_matching_no_target_is_pending_saying_so_then_inconclusive() {
    let l = lab("no_target_grace = \"3s\"\n").await;
    let (b, _) = selectors(GOOD);
    // A typo: the letter O for the digit 0.
    let typo = "{role=\"proxy\", revision=\"1-25-O\"}";
    let r = create(
        &l.base,
        &json!({"name": "typo", "baseline": b, "canary": typo}),
    )
    .await;
    assert_eq!(r.status(), 201);
    // Within the grace period: PENDING, saying that nothing matches.
    let (seen, v) = follow_verdicts(&l.base, "typo", Duration::from_millis(1500)).await;
    assert_eq!(v["verdict"], "PENDING", "{seen:?} {v:#}");
    assert_eq!(
        v["data_quality"]["blocked_by"]["threshold"], "no_matching_target",
        "{v:#}"
    );
    let pending = v["reason"].as_str().unwrap().to_owned();
    // After it: INCONCLUSIVE, saying so.
    let (more, last) = follow_verdicts(&l.base, "typo", Duration::from_secs(20)).await;
    let seen: Vec<String> = seen.into_iter().chain(more).collect();
    assert!(
        pending.contains("no scraped target matches the canary selector")
            && pending.contains("1-25-O")
            && pending.contains(GOOD.1),
        "the reason names the selector and what the targets have: {pending}"
    );
    assert!(!seen.iter().any(|v| v == "GO"), "{seen:?}");
    assert_eq!(last["verdict"], "INCONCLUSIVE", "{last:#}");
    let reason = last["reason"].as_str().unwrap();
    assert!(
        reason.contains("no scraped target matches the canary selector")
            && reason.contains("no_target_grace"),
        "{reason}"
    );
    let after = last["decided_after_seconds"].as_f64().unwrap();
    assert!(
        (2.5..10.0).contains(&after),
        "INCONCLUSIVE after the 3 s grace, not at max_duration (120 s): {after}"
    );
    l.shutdown().await;
}

// ---- 7. serve refuses what check-config rejects ----

fn run_binary(args: &[&str], limit: Duration) -> (Option<i32>, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_meshgate"))
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let t = Instant::now();
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            let mut err = String::new();
            std::io::Read::read_to_string(child.stderr.as_mut().unwrap(), &mut err).unwrap();
            return (status.code(), err);
        }
        if t.elapsed() > limit {
            child.kill().unwrap();
            let _ = child.wait();
            return (None, String::new());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn serve_refuses_with_exit_64_a_config_that_check_config_rejects_with_the_same_message() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let (b, c) = selectors(GOOD);
    let bad = dir.path().join("bad.toml");
    std::fs::write(
        &bad,
        format!(
            "[server]\nlisten = \"127.0.0.1:{port}\"\n\
             [[targets]]\nurl = \"http://127.0.0.1:1/metrics\"\n\
             [[analyses]]\nname = \"wave-1\"\nbaseline = '{b}'\ncanary = '{c}'\nchecks = [\"error-rat\"]\n\
             [[analyses]]\nname = \"cp\"\nbaseline = '{b}'\ncanary = '{c}'\nchecks = [\"istiod-push-errors\"]\n"
        ),
    )
    .unwrap();
    let bad_s = bad.to_str().unwrap();
    let (code, checked) = run_binary(&["check-config", bad_s], Duration::from_secs(30));
    assert_eq!(code, Some(64), "{checked}");
    assert!(
        checked.contains("analyses[0].checks: unknown check \"error-rat\"")
            && checked.contains("analyses[1].checks: check \"istiod-push-errors\""),
        "{checked}"
    );
    let (code, served) = run_binary(&["serve", "--config", bad_s], Duration::from_secs(30));
    assert_eq!(
        code,
        Some(64),
        "serve must refuse the config check-config rejects (None: it kept running)"
    );
    assert!(
        served.contains(checked.trim()),
        "same message:\ncheck-config:\n{checked}\nserve:\n{served}"
    );
    // The same file without the two mistakes: check-config accepts it and serve runs.
    let good = dir.path().join("good.toml");
    std::fs::write(
        &good,
        format!(
            "[server]\nlisten = \"127.0.0.1:{port}\"\n\
             [[targets]]\nurl = \"http://127.0.0.1:1/metrics\"\n\
             [[analyses]]\nname = \"wave-1\"\nbaseline = '{b}'\ncanary = '{c}'\nchecks = [\"error-rate\"]\n"
        ),
    )
    .unwrap();
    let good_s = good.to_str().unwrap();
    let (code, out) = run_binary(&["check-config", good_s], Duration::from_secs(30));
    assert_eq!(code, Some(0), "{out}");
    let (code, _) = run_binary(&["serve", "--config", good_s], Duration::from_secs(2));
    assert_eq!(code, None, "a valid config keeps serve running");
}

// ---- 8. 404 / 405 / 413 / 414 in the JSON error shape ----

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_routes_big_bodies_and_long_uris_answer_the_json_error_shape() {
    let (running, stop) = plain_daemon("").await;
    let base = format!("http://{}", running.addr);
    let c = reqwest::Client::new();
    let check = |r: reqwest::Response, status: u16, code: &'static str, says: String| async move {
        assert_eq!(r.status().as_u16(), status, "{code}");
        assert!(
            r.headers()["content-type"]
                .to_str()
                .unwrap()
                .starts_with("application/json"),
            "{code}"
        );
        let v: Value = r.json().await.unwrap();
        assert_eq!(v["error"]["code"], code, "{v}");
        let m = v["error"]["message"].as_str().unwrap();
        assert!(m.contains(&says), "{m} should say {says}");
        assert!(!m.contains("no analysis with id"), "{m}");
    };
    for path in ["/v1/nope", "/v1/analyses/x/unknown", "/elsewhere", "/v1/"] {
        let r = c.get(format!("{base}{path}")).send().await.unwrap();
        check(r, 404, "no_route", format!("no such route: GET {path}")).await;
    }
    let r = c
        .delete(format!("{base}/v1/analyses/x/unknown"))
        .send()
        .await
        .unwrap();
    check(r, 404, "no_route", "DELETE /v1/analyses/x/unknown".into()).await;
    // A real missing analysis still says so.
    let r = c
        .get(format!("{base}/v1/analyses/missing"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["error"]["code"], "not_found");
    // A known path with another method.
    let r = c.put(format!("{base}/v1/analyses")).send().await.unwrap();
    assert!(r.headers().get("allow").is_some());
    check(
        r,
        405,
        "method_not_allowed",
        "PUT is not allowed on /v1/analyses".into(),
    )
    .await;
    // A body over max_body_bytes (64 KiB by default), on the API and on Argo's route.
    let big = format!(
        "{{\"name\": \"big\", \"baseline\": \"{{a=\\\"b\\\"}}\", \"canary\": \"{}\"}}",
        "x".repeat(70_000)
    );
    for path in ["/v1/analyses", "/argo/v1/analyses/big"] {
        let r = c
            .post(format!("{base}{path}"))
            .header("content-type", "application/json")
            .body(big.clone())
            .send()
            .await
            .unwrap();
        check(
            r,
            413,
            "body_too_large",
            "max_body_bytes (65536 bytes)".into(),
        )
        .await;
    }
    // A URI over 8 KiB.
    let r = c
        .get(format!("{base}/v1/analyses?q={}", "a".repeat(9000)))
        .send()
        .await
        .unwrap();
    check(r, 414, "uri_too_long", "longer than the 8192 bytes".into()).await;
    // The daemon still answers.
    let r = c.get(format!("{base}/healthz")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    stop.cancel();
    running.join().await;
}
