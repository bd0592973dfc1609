//! The fault matrix on real sockets: a raw-TCP fault server misbehaves in one way per path, each
//! fault target joins the canary cohort of its own daemon beside a healthy simulated mesh, and
//! each daemon must keep running, say why in `GET /v1/targets`, and never answer GO while a
//! control daemon on the same healthy mesh (no fault target) does reach GO.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use meshgate::config::{Config, StaticTarget};
use meshgate::judge::Catalog;
use meshgate::sim::{SimConfig, SimMesh};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

const CANARY: &str = "1-25-0";

struct FaultServer {
    addr: SocketAddr,
    hits: AtomicU64,
    /// Set to make `/vanishing` targets refuse from then on.
    vanished: AtomicBool,
    /// Scrapes per full request target (path and query), for counters of their own.
    per_url: std::sync::Mutex<std::collections::HashMap<String, u64>>,
}

fn page(n: u64) -> String {
    format!(
        "# TYPE istio_requests_total counter\n\
         istio_requests_total{{reporter=\"destination\",response_code=\"200\"}} {}\n\
         istio_requests_total{{reporter=\"destination\",response_code=\"503\"}} {}\n",
        1000 * n,
        n
    )
}

async fn read_head(s: &mut TcpStream) -> Option<String> {
    let mut buf = Vec::new();
    let mut b = [0u8; 1024];
    while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = s.read(&mut b).await.ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&b[..n]);
    }
    let head = String::from_utf8_lossy(&buf).to_string();
    head.split_whitespace().nth(1).map(str::to_owned)
}

async fn respond(s: &mut TcpStream, status: &str, body: &[u8]) {
    let head = format!(
        "HTTP/1.1 {status}\r\ncontent-type: text/plain\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
        body.len()
    );
    let _ = s.write_all(head.as_bytes()).await;
    let _ = s.write_all(body).await;
    let _ = s.shutdown().await;
}

async fn serve_one(srv: Arc<FaultServer>, mut s: TcpStream) {
    let Some(path) = read_head(&mut s).await else {
        return;
    };
    let n = srv.hits.fetch_add(1, Ordering::Relaxed) + 1;
    // This URL's own scrape number k (1, 2, ...) for the counters below.
    let k = {
        let mut m = srv.per_url.lock().unwrap();
        let c = m.entry(path.clone()).or_insert(0);
        *c += 1;
        *c
    };
    match path.split('?').next().unwrap_or_default() {
        "/timeout" => {
            // Never answer; hold the connection until the client gives up.
            let mut b = [0u8; 64];
            while matches!(s.read(&mut b).await, Ok(n) if n > 0) {}
        }
        "/5xx" => respond(&mut s, "503 Service Unavailable", b"overloaded\n").await,
        "/reset" => {
            #[allow(deprecated)]
            let _ = s.set_linger(Some(Duration::ZERO));
            drop(s); // RST
        }
        "/trickle" => {
            let body = page(n);
            let head = format!("HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n", body.len());
            let _ = s.write_all(head.as_bytes()).await;
            for b in body.as_bytes() {
                if s.write_all(&[*b]).await.is_err() {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
        "/garbage" => {
            let bytes: Vec<u8> = (0..4096u32)
                .map(|i| (i * 7919 % 251) as u8 | 0x80)
                .collect();
            respond(&mut s, "200 OK", &bytes).await
        }
        "/garbage-text" => {
            let body = "istio_requests_total{reporter=\"destination\" 12 oops\nistio_requests_total{{{ 5\n";
            respond(&mut s, "200 OK", body.as_bytes()).await
        }
        "/truncated" => {
            // No content-length, connection closed mid-number: only the missing newline tells.
            let full = page(n * 1000);
            let cut = &full[..full.len() - 4];
            let _ = s
                .write_all(b"HTTP/1.1 200 OK\r\nconnection: close\r\n\r\n")
                .await;
            let _ = s.write_all(cut.as_bytes()).await;
            let _ = s.shutdown().await;
        }
        "/oversize" => {
            // Announces 5 MB (over the 4 MiB cap); the daemon must refuse before reading it.
            let head = "HTTP/1.1 200 OK\r\ncontent-length: 5000000\r\n\r\n";
            let _ = s.write_all(head.as_bytes()).await;
            let _ = s.write_all(page(n).as_bytes()).await;
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        "/oversize-chunked" => {
            let _ = s
                .write_all(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n")
                .await;
            // 1 MiB chunks, no length announced: the cap must stop the read part-way.
            let chunk =
                "# padding padding padding padding padding padding padding\n".repeat(18_000);
            for _ in 0..16 {
                let c = format!("{:x}\r\n{chunk}\r\n", chunk.len());
                if s.write_all(c.as_bytes()).await.is_err() {
                    return;
                }
            }
            let _ = s.write_all(b"0\r\n\r\n").await;
        }
        // OpenMetrics without its `# EOF`: the format's only truncation signal (issue 13).
        "/no-eof" => {
            let body = page(n);
            let head = format!(
                "HTTP/1.1 200 OK\r\ncontent-type: application/openmetrics-text; version=1.0.0\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
                body.len()
            );
            let _ = s.write_all(head.as_bytes()).await;
            let _ = s.write_all(body.as_bytes()).await;
        }
        // Plausibility limits (issue 13): a u64 wrap on every page, ...
        "/absurd" => {
            let body =
                page(1000 + k).replace(&format!(" {}\n", 1000 + k), " 18446744073709551615\n");
            respond(&mut s, "200 OK", body.as_bytes()).await
        }
        // ... 10^9 more requests per scrape (1 s) than the page before, far past what a pod
        // serves (`max_increase_per_second`), ...
        "/jump" => {
            let body = format!(
                "# TYPE istio_requests_total counter\n\
                 istio_requests_total{{reporter=\"destination\",response_code=\"200\"}} {}\n\
                 istio_requests_total{{reporter=\"destination\",response_code=\"503\"}} {k}\n",
                k * 1_000_000_000
            );
            respond(&mut s, "200 OK", body.as_bytes()).await
        }
        // ... and a label value longer than `label_value_length_limit` (2,048 bytes).
        "/long-label" => {
            let body = format!(
                "{}istio_requests_total{{reporter=\"destination\",response_code=\"503\",x=\"{}\"}} {k}\n",
                page(1000 + k),
                "v".repeat(3000)
            );
            respond(&mut s, "200 OK", body.as_bytes()).await
        }
        "/duplicates" => {
            // Each series twice, the repeat with a value 1000x larger.
            let again = page(n * 1000);
            let body = format!("{}{}", page(n), again.split_once('\n').unwrap().1);
            respond(&mut s, "200 OK", body.as_bytes()).await
        }
        "/backwards" => {
            let body = page(1_000_000_000_000 - n * 1000);
            respond(&mut s, "200 OK", body.as_bytes()).await
        }
        // Counters of a pod up long before (1,000 units at the first scrape), one unit per
        // scrape: `page(u)` is 1,000 x u requests answered 200 and u answered 503.
        "/steady" => respond(&mut s, "200 OK", page(1000 + k).as_bytes()).await,
        // The process restarts before its 6th scrape: counters start again from zero.
        "/restarting" => {
            let u = if k < 6 { 1000 + k } else { k - 5 };
            respond(&mut s, "200 OK", page(u).as_bytes()).await
        }
        // Lower once, without a restart (a broken exporter, two pods behind one address).
        "/dip" => {
            let u = if k == 6 { 1000 + k - 3 } else { 1000 + k };
            respond(&mut s, "200 OK", page(u).as_bytes()).await
        }
        "/vanishing" => {
            if srv.vanished.load(Ordering::Relaxed) {
                #[allow(deprecated)]
                let _ = s.set_linger(Some(Duration::ZERO));
                drop(s);
            } else {
                respond(&mut s, "200 OK", page(n).as_bytes()).await
            }
        }
        _ => respond(&mut s, "404 Not Found", b"").await,
    }
}

/// The fault server runs on a runtime of its own thread, so the daemons under test (many, in
/// this process) cannot starve it into timeouts that would hide the fault being tested.
async fn fault_server(stop: CancellationToken) -> Arc<FaultServer> {
    let l = std::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
    l.set_nonblocking(true).unwrap();
    let srv = Arc::new(FaultServer {
        addr: l.local_addr().unwrap(),
        hits: AtomicU64::new(0),
        vanished: AtomicBool::new(false),
        per_url: Default::default(),
    });
    let s2 = srv.clone();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let l = TcpListener::from_std(l).unwrap();
            loop {
                tokio::select! {
                    _ = stop.cancelled() => return,
                    r = l.accept() => if let Ok((sock, _)) = r {
                        tokio::spawn(serve_one(s2.clone(), sock));
                    },
                }
            }
        });
    });
    srv
}

fn canary_target(url: String, pod: &str) -> StaticTarget {
    StaticTarget {
        url,
        labels: [
            ("role", "proxy"),
            ("revision", CANARY),
            ("pod", pod),
            ("namespace", "faults"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect(),
    }
}

struct Daemon {
    name: String,
    base: String,
    running: meshgate::daemon::Running,
    seen: Vec<String>,
    last: Value,
    fault_url: String,
    /// Every distinct `last_error` of the fault target seen while polling (the machine is
    /// shared: under load a scrape may also time out, so the last one alone could mislead).
    errors: Vec<String>,
}

async fn daemon(name: &str, targets: Vec<StaticTarget>, canary_sel: &str) -> Daemon {
    daemon_with(name, targets, canary_sel, "3s").await
}

/// `min_duration` longer than a fault's onset keeps a GO reached before the fault (which would
/// be right) from ending the run before the fault is seen.
async fn daemon_with(
    name: &str,
    targets: Vec<StaticTarget>,
    canary_sel: &str,
    min_duration: &str,
) -> Daemon {
    let fault_url = targets.last().unwrap().url.clone();
    let mut cfg = Config::from_toml(
        &format!(
            r#"
        [scrape]
        interval = "1s"
        timeout = "900ms"
        jitter = 0.0
        max_body_bytes = 4194304
        [judge]
        # GO by SLO, as these plumbing tests need it fast (the default is off).
        slo_go = true
        min_duration = "{min_duration}"
        max_duration = "120s"
        min_exposure = 1000
        # The matrix scrapes sidecars only (its faults are transport and page faults); without
        # istiod the skew guard would hold every GO (issue 13, tested in edges.rs).
        allow_go_without_istiod_skew_check = true
        "#
        ),
        name,
    )
    .unwrap();
    cfg.targets = targets;
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await.unwrap();
    let stop = CancellationToken::new();
    let running = meshgate::daemon::start(cfg, Catalog::builtin(), listener, stop)
        .await
        .unwrap();
    let base = format!("http://{}", running.addr);
    let r = reqwest::Client::new()
        .post(format!("{base}/v1/analyses"))
        .json(&json!({
            "name": "a",
            "checks": ["error-rate"],
            "baseline": "{role=\"proxy\", revision=\"1-24-2\"}",
            "canary": canary_sel,
        }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    Daemon {
        name: name.to_owned(),
        base,
        running,
        seen: Vec::new(),
        last: Value::Null,
        fault_url,
        errors: Vec::new(),
    }
}

async fn get(url: &str) -> Value {
    reqwest::get(url).await.unwrap().json().await.unwrap()
}

async fn health_of(d: &Daemon, url: &str) -> Value {
    let all = get(&format!("{}/v1/targets", d.base)).await;
    all.as_array()
        .unwrap()
        .iter()
        .find(|t| t["url"] == url)
        .cloned()
        .unwrap_or_else(|| panic!("{url} not in /v1/targets"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fault_matrix_keeps_running_says_why_and_never_goes() {
    let stop = CancellationToken::new();
    let sim = SimConfig::small(5, 2, 2000.0);
    let mesh = SimMesh::start(sim, IpAddr::V4(Ipv4Addr::LOCALHOST), stop.clone())
        .await
        .unwrap();
    let healthy: Vec<StaticTarget> = mesh
        .targets()
        .into_iter()
        .filter(|t| t.labels.get("role").is_some_and(|r| r == "proxy"))
        .map(StaticTarget::from)
        .collect();
    let baseline_only: Vec<StaticTarget> = healthy
        .iter()
        .filter(|t| t.labels["revision"] != CANARY)
        .cloned()
        .collect();
    let fs = fault_server(stop.clone()).await;
    let furl = |p: &str| format!("http://{}{p}", fs.addr);
    let canary_sel = format!("{{role=\"proxy\", revision=\"{CANARY}\"}}");

    // (path, what GET /v1/targets must say: up, and a substring of last_error)
    let transport: &[(&str, &str)] = &[
        ("/timeout", "timed out"),
        ("/5xx", "http status 503"),
        ("/reset", "request failed"),
        ("/trickle", "timed out"),
        ("/garbage", "not valid utf-8"),
        ("/garbage-text", "no valid sample"),
        ("/truncated", "truncated"),
        ("/no-eof", "without a final `# EOF`"),
        ("/oversize", "byte cap"),
        ("/oversize-chunked", "byte cap"),
        ("/nothing-listens", "request failed"),
    ];
    let mut daemons = vec![daemon("control", healthy.clone(), &canary_sel).await];
    for (path, _) in transport {
        let mut t = healthy.clone();
        let url = if *path == "/nothing-listens" {
            // A port with no listener: connection refused.
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            let a = l.local_addr().unwrap();
            drop(l);
            format!("http://{a}/metrics")
        } else {
            furl(path)
        };
        t.push(canary_target(url, path));
        daemons.push(daemon(path, t, &canary_sel).await);
    }
    // Data faults: the target is up, the bad values are handled.
    for path in ["/duplicates", "/backwards"] {
        let mut t = healthy.clone();
        t.push(canary_target(furl(path), path));
        daemons.push(daemon(path, t, &canary_sel).await);
    }
    // A whole canary cohort that vanishes: only fault-server targets, refusing after 2 s.
    let mut t = baseline_only.clone();
    t.push(canary_target(furl("/vanishing"), "v1"));
    t.push(canary_target(furl("/vanishing?2"), "v2"));
    daemons.push(daemon_with("vanishing", t, &canary_sel, "60s").await);
    // Implausible data: the target answers, its pages are quarantined (path, the limit named).
    let implausible: &[(&str, &str)] = &[
        ("/absurd", "max_counter_value"),
        ("/jump", "max_increase_per_second"),
        ("/long-label", "label_value_length_limit"),
    ];
    for (path, _) in implausible {
        let mut t = healthy.clone();
        t.push(canary_target(furl(path), path));
        daemons.push(daemon(path, t, &canary_sel).await);
    }

    let t0 = Instant::now();
    let mut control_go = None;
    loop {
        tokio::time::sleep(Duration::from_millis(500)).await;
        if t0.elapsed() > Duration::from_secs(4) {
            fs.vanished.store(true, Ordering::Relaxed);
        }
        for d in daemons.iter_mut() {
            let v = get(&format!("{}/v1/analyses/a/verdict", d.base)).await;
            d.seen.push(v["verdict"].as_str().unwrap().to_owned());
            d.last = v;
            if d.name != "control" {
                let h = health_of(d, &d.fault_url).await;
                if let Some(e) = h["last_error"].as_str() {
                    if !d.errors.iter().any(|x| x == e) {
                        d.errors.push(e.to_owned());
                    }
                }
            }
        }
        if control_go.is_none() && daemons[0].last["verdict"] == "GO" {
            control_go = Some(t0.elapsed());
        }
        // Observe every faulty daemon a while past the control's GO.
        if control_go.is_some_and(|g| t0.elapsed() > g + Duration::from_secs(3)) {
            break;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(180),
            "the control never reached GO: {:#}",
            daemons[0].last
        );
    }
    eprintln!("control GO after {:?}", control_go.unwrap());

    for (i, (path, says)) in transport.iter().enumerate() {
        let d = &daemons[i + 1];
        assert!(
            !d.seen.iter().any(|v| v == "GO"),
            "{}: GO from bad data: {:#}",
            d.name,
            d.last
        );
        let h = health_of(d, &d.fault_url).await;
        assert_eq!(h["up"], false, "{path}: {h:#}");
        assert!(
            d.errors.iter().any(|e| e.contains(says)),
            "{path}: expected {says:?} in one of {:?}",
            d.errors
        );
        assert!(h["failures"].as_u64().unwrap() >= 2, "{path}: {h:#}");
        assert_eq!(h["series"], 0, "{path}: nothing from a bad page is kept");
        assert_eq!(d.last["verdict"], "PENDING", "{path}: {:#}", d.last);
        assert_eq!(
            d.last["data_quality"]["canary"]["unreachable"], 1,
            "{path}: {:#}",
            d.last
        );
    }
    let n = transport.len();

    // Duplicates: the repeats (1000x the value) are ignored, so the fault target adds about as
    // much as one simulated pod, not 1000 times more.
    let dup = &daemons[n + 1];
    let h = health_of(dup, &furl("/duplicates")).await;
    assert_eq!(h["up"], true, "{h:#}");
    let control_x = daemons[0].last["checks"][0]["tests"][0]["canary"]["exposure"]
        .as_f64()
        .unwrap();
    let dup_x = dup.last["checks"][0]["tests"][0]["canary"]["exposure"]
        .as_f64()
        .unwrap();
    assert!(
        dup_x < 3.0 * control_x,
        "duplicates inflated the evidence: {dup_x} vs control {control_x}"
    );

    // Counters lower on every page (daemons[n + 2]): every page is a reset of both series, the
    // target is up but not fresh, and none of its (huge) values reaches the evidence.
    let back = &daemons[n + 2];
    let h = health_of(back, &furl("/backwards")).await;
    eprintln!("/backwards health: {h:#}");
    assert!(!back.seen.iter().any(|v| v == "GO"), "{:#}", back.last);
    assert_eq!(h["up"], true, "{h:#}");
    assert_eq!(h["last_resets"], 2, "both series went down: {h:#}");
    assert!(h["consecutive_reset_pages"].as_u64().unwrap() >= 3, "{h:#}");
    let back_x = back.last["checks"][0]["tests"][0]["canary"]["exposure"]
        .as_f64()
        .unwrap();
    assert!(
        back_x < 3.0 * control_x,
        "values going down inflated the evidence: {back_x} vs control {control_x}"
    );
    assert_eq!(back.last["verdict"], "PENDING", "{:#}", back.last);
    // The vanished cohort: its targets are down, the canary has no fresh target, no GO.
    let van = &daemons[n + 3];
    assert!(!van.seen.iter().any(|v| v == "GO"), "{:#}", van.last);
    let h = health_of(van, &furl("/vanishing")).await;
    assert_eq!(h["up"], false, "{h:#}");
    assert!(h["last_success"].is_number(), "it was up before: {h:#}");
    let reason = van.last["reason"].as_str().unwrap();
    assert!(
        reason.contains("stale") || reason.contains("no freshly scraped"),
        "{reason}"
    );

    // Quarantined pages: never GO, the limit named in /v1/targets and in the verdict's reason,
    // and the canary's data quality counts the target as quarantined.
    for (i, (path, limit)) in implausible.iter().enumerate() {
        let d = &daemons[n + 4 + i];
        assert!(
            !d.seen.iter().any(|v| v == "GO"),
            "{path}: GO from implausible data: {:#}",
            d.last
        );
        let h = health_of(d, &d.fault_url).await;
        eprintln!("{path} health: {h:#}");
        assert!(
            d.errors
                .iter()
                .any(|e| e.contains("page quarantined") && e.contains(limit)),
            "{path}: expected the quarantine naming {limit:?} in one of {:?}",
            d.errors
        );
        assert!(
            h["quarantined_pages"].as_u64().unwrap() >= 2,
            "{path}: {h:#}"
        );
        assert!(
            h["quarantine"].as_str().is_some_and(|q| q.contains(limit)),
            "{path}: {h:#}"
        );
        assert_eq!(d.last["verdict"], "PENDING", "{path}: {:#}", d.last);
        assert_eq!(
            d.last["data_quality"]["canary"]["quarantined"], 1,
            "{path}: {:#}",
            d.last
        );
        let reason = d.last["reason"].as_str().unwrap();
        assert!(reason.contains("quarantined"), "{path}: {reason}");
    }

    // Every daemon is still serving.
    for d in &daemons {
        let r = reqwest::get(format!("{}/healthz", d.base)).await.unwrap();
        assert!(r.status().is_success(), "{} stopped serving", d.name);
    }
    for d in daemons {
        d.running.shutdown.cancel();
        d.running.join().await;
    }
    stop.cancel();
}

fn fault_target(url: String, revision: &str, pod: &str) -> StaticTarget {
    let mut t = canary_target(url, pod);
    t.labels.insert("revision".into(), revision.into());
    t
}

/// Counters going backwards mid-analysis, on real sockets and one daemon: a pod whose process
/// restarts (counters from zero) and a pod whose counter is lower on one page without a restart,
/// in the canary; two steady pods in the baseline. Every target gains one unit (1,001 requests)
/// per scrape, so each cohort's exposure must stay within its targets' scrapes: no jump (the old
/// rule added a dip's whole value, 1,003 units), never lower than before (no negative delta),
/// and both resets show in `GET /v1/targets` and the reset counter.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn counters_going_backwards_are_reset_aware() {
    const UNIT: f64 = 1001.0;
    let stop = CancellationToken::new();
    let fs = fault_server(stop.clone()).await;
    let furl = |p: &str| format!("http://{}{p}", fs.addr);
    let targets = vec![
        fault_target(furl("/steady?b1"), "1-24-2", "b1"),
        fault_target(furl("/steady?b2"), "1-24-2", "b2"),
        fault_target(furl("/dip"), CANARY, "dip"),
        fault_target(furl("/restarting"), CANARY, "restarting"),
    ];
    let canary_sel = format!("{{role=\"proxy\", revision=\"{CANARY}\"}}");
    let d = daemon_with("backwards", targets, &canary_sel, "60s").await;
    let scrapes = |all: &Value, urls: &[String]| -> f64 {
        all.as_array()
            .unwrap()
            .iter()
            .filter(|t| urls.iter().any(|u| t["url"] == u.as_str()))
            .map(|t| t["scrapes"].as_f64().unwrap())
            .sum()
    };
    let canary_urls = [furl("/dip"), furl("/restarting")];
    let baseline_urls = [furl("/steady?b1"), furl("/steady?b2")];
    let mut resets_seen = std::collections::BTreeMap::<String, u64>::new();
    let mut last_x = [0.0f64; 2];
    let t0 = Instant::now();
    loop {
        // Evidence first, then the scrape counts: the counts can only have grown since.
        let v = get(&format!("{}/v1/analyses/a/verdict", d.base)).await;
        let all = get(&format!("{}/v1/targets", d.base)).await;
        for t in all.as_array().unwrap() {
            let r = t["last_resets"].as_u64().unwrap();
            let e = resets_seen
                .entry(t["url"].as_str().unwrap().to_owned())
                .or_default();
            *e = (*e).max(r);
        }
        assert_ne!(v["verdict"], "GO", "{v:#}");
        let test = &v["checks"][0]["tests"][0];
        for (i, (side, urls)) in [("baseline", &baseline_urls), ("canary", &canary_urls)]
            .into_iter()
            .enumerate()
        {
            let x = test[side]["exposure"].as_f64().unwrap_or(0.0);
            // Each target's first page only sets its starting point.
            let bound = (scrapes(&all, urls) - 2.0).max(0.0) * UNIT;
            assert!(
                x <= bound,
                "{side}: exposure {x} above its scrapes allow ({bound}): {v:#}"
            );
            assert!(
                x >= last_x[i],
                "{side}: exposure went down from {} to {x}",
                last_x[i]
            );
            last_x[i] = x;
        }
        let canary_scrapes = all
            .as_array()
            .unwrap()
            .iter()
            .filter(|t| canary_urls.iter().any(|u| t["url"] == u.as_str()))
            .map(|t| t["scrapes"].as_u64().unwrap())
            .min()
            .unwrap();
        if canary_scrapes >= 10 {
            // Both past their reset by 4 scrapes: the evidence is within a few pages of the
            // full count (ticks lag scrapes by up to a page, the held page adds one).
            let lower = (scrapes(&all, &canary_urls) - 2.0 - 2.0 * 3.0) * UNIT;
            assert!(
                last_x[1] >= lower,
                "canary exposure {} below {lower}: counts were lost at the reset",
                last_x[1]
            );
            let h = health_of(&d, &furl("/restarting")).await;
            assert_eq!(h["consecutive_reset_pages"], 0, "{h:#}");
            assert_eq!(h["up"], true, "{h:#}");
            break;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(90),
            "the canary targets were not scraped 10 times in 90 s: {all:#}"
        );
        tokio::time::sleep(Duration::from_millis(150)).await;
    }
    assert_eq!(resets_seen[&furl("/restarting")], 2, "{resets_seen:?}");
    assert_eq!(resets_seen[&furl("/dip")], 2, "{resets_seen:?}");
    assert_eq!(resets_seen[&furl("/steady?b1")], 0, "{resets_seen:?}");
    let metrics = reqwest::get(format!("{}/metrics", d.base))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let resets: f64 = metrics
        .lines()
        .find(|l| l.starts_with("meshgate_series_resets_total"))
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
        .unwrap_or_else(|| panic!("no meshgate_series_resets_total in\n{metrics}"));
    assert_eq!(resets, 4.0, "two series on each of two targets");
    d.running.shutdown.cancel();
    d.running.join().await;
    stop.cancel();
}

/// A name that does not resolve, without sending a DNS query off the machine (only loopback is
/// allowed here): the client's resolver fails as a real lookup would, and the scrape error names it.
#[tokio::test]
async fn dns_failure_is_a_request_error_naming_the_lookup() {
    struct NoDns;
    impl reqwest::dns::Resolve for NoDns {
        fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
            let n = name.as_str().to_owned();
            Box::pin(async move {
                Err(Box::new(std::io::Error::other(format!(
                    "failed to lookup address information: {n}: Name or service not known"
                )))
                    as Box<dyn std::error::Error + Send + Sync>)
            })
        }
    }
    let client = reqwest::Client::builder()
        .dns_resolver(Arc::new(NoDns))
        .build()
        .unwrap();
    let e = meshgate::scrape::fetch(
        &client,
        "http://istiod.does-not-exist.invalid:15014/metrics",
        Duration::from_secs(2),
        1 << 20,
    )
    .await
    .unwrap_err();
    assert_eq!(e.class(), "request");
    assert!(e.to_string().contains("does-not-exist"), "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fault_server_answers_as_designed() {
    let stop = CancellationToken::new();
    let fs = fault_server(stop.clone()).await;
    let c = reqwest::Client::builder()
        .gzip(true)
        .pool_max_idle_per_host(1)
        .timeout(Duration::from_millis(900))
        .build()
        .unwrap();
    for (path, class) in [
        ("/5xx", "http_status"),
        ("/timeout", "timeout"),
        ("/5xx", "http_status"),
        ("/truncated", "ok"),
        ("/oversize", "too_large"),
        ("/garbage-text", "ok"),
        ("/garbage", "ok"),
    ] {
        let r = meshgate::scrape::fetch(
            &c,
            &format!("http://{}{path}", fs.addr),
            Duration::from_millis(900),
            4 << 20,
        )
        .await;
        let got = match &r {
            Ok(_) => "ok",
            Err(e) => e.class(),
        };
        assert_eq!(got, class, "{path}: {r:?}");
    }
    stop.cancel();
}
