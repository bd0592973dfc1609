//! Crash and resume: the real binary is SIGKILLed mid-analysis and started again on the same
//! store; it must continue with its evidence (counting the traffic of the downtime once, from
//! the stored counter values) and end with the same verdict as a daemon that never stopped,
//! both scraping the same simulated mesh (whose counters advance with wall time, so both see the
//! same stream).

use std::net::{IpAddr, Ipv4Addr};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use meshgate::sim::{SimConfig, SimMesh};
use serde_json::Value;
use tokio_util::sync::CancellationToken;

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn config(mesh: &SimMesh, port: u16, store: Option<&Path>) -> String {
    let mut s = format!(
        r#"
[server]
listen = "127.0.0.1:{port}"
[scrape]
interval = "250ms"
timeout = "200ms"
jitter = 0.0
[judge]
# GO by SLO, as these plumbing tests need it fast (the default is off).
slo_go = true
min_duration = "10s"
max_duration = "90s"
min_exposure = 1000
[[analyses]]
name = "upgrade"
baseline = '{{role="proxy", revision="1-24-2"}}'
canary = '{{role="proxy", revision="1-25-0"}}'
"#
    );
    if let Some(p) = store {
        s.push_str(&format!("[store]\npath = {:?}\n", p.display().to_string()));
    }
    for t in mesh.targets() {
        s.push_str(&format!(
            "[[targets]]\nurl = {:?}\n[targets.labels]\n",
            t.url
        ));
        for (k, v) in &t.labels {
            s.push_str(&format!("{k} = {v:?}\n"));
        }
    }
    s
}

fn spawn(cfg: &Path) -> Child {
    Command::new(env!("CARGO_BIN_EXE_meshgate"))
        .args(["serve", "--config"])
        .arg(cfg)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn meshgate")
}

async fn verdict(c: &reqwest::Client, port: u16) -> Option<Value> {
    let r = c
        .get(format!(
            "http://127.0.0.1:{port}/v1/analyses/upgrade/verdict"
        ))
        .timeout(Duration::from_secs(2))
        .send()
        .await
        .ok()?;
    if !r.status().is_success() {
        return None;
    }
    r.json().await.ok()
}

/// Requests counted for the canary by the error-rate check.
fn canary_exposure(v: &Value) -> f64 {
    v["checks"][0]["tests"][0]["canary"]["exposure"]
        .as_f64()
        .unwrap()
}

async fn wait_ready(c: &reqwest::Client, port: u16, child: &mut Child) {
    let t0 = Instant::now();
    loop {
        if let Some(st) = child.try_wait().unwrap() {
            panic!("meshgate exited early: {st}");
        }
        if let Ok(r) = c
            .get(format!("http://127.0.0.1:{port}/readyz"))
            .send()
            .await
        {
            if r.status().is_success() {
                return;
            }
        }
        assert!(t0.elapsed() < Duration::from_secs(30), "not ready in 30s");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_mid_analysis_resumes_with_its_evidence_and_same_verdict() {
    let stop = CancellationToken::new();
    let sim = SimConfig::small(21, 2, 2000.0);
    let mesh = SimMesh::start(sim, IpAddr::V4(Ipv4Addr::LOCALHOST), stop.clone())
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("state").join("meshgate.redb");
    let (pa, pb) = (free_port(), free_port());
    let (ca, cb) = (dir.path().join("a.toml"), dir.path().join("b.toml"));
    std::fs::write(&ca, config(&mesh, pa, None)).unwrap();
    std::fs::write(&cb, config(&mesh, pb, Some(&store))).unwrap();
    let c = reqwest::Client::new();

    let mut a = spawn(&ca);
    let mut b = spawn(&cb);
    wait_ready(&c, pa, &mut a).await;
    wait_ready(&c, pb, &mut b).await;

    // Let B collect for a while, note its evidence a little before the kill, then SIGKILL it.
    let t0 = Instant::now();
    let before = loop {
        tokio::time::sleep(Duration::from_millis(200)).await;
        let v = verdict(&c, pb).await.expect("B answers");
        if v["elapsed_seconds"].as_f64().unwrap() >= 3.0 && canary_exposure(&v) > 0.0 {
            break v;
        }
        assert!(t0.elapsed() < Duration::from_secs(30), "B never collected");
    };
    assert_eq!(before["verdict"], "PENDING", "{before:#}");
    tokio::time::sleep(Duration::from_millis(600)).await;
    b.kill().unwrap(); // SIGKILL: no flush, no shutdown path
    b.wait().unwrap();
    tokio::time::sleep(Duration::from_secs(2)).await;

    let mut b = spawn(&cb);
    wait_ready(&c, pb, &mut b).await;
    let resumed = verdict(&c, pb).await.expect("B answers after restart");
    // Elapsed continues from the stored value (not from zero at the restart).
    let (e0, e1) = (
        before["elapsed_seconds"].as_f64().unwrap(),
        resumed["elapsed_seconds"].as_f64().unwrap(),
    );
    assert!(e1 >= e0, "elapsed went back: {e0} -> {e1}");
    assert!(
        canary_exposure(&resumed) >= canary_exposure(&before),
        "evidence lost: {} -> {}",
        canary_exposure(&before),
        canary_exposure(&resumed)
    );

    // Soon after the restart, B has counted the downtime's requests once (deltas since the
    // stored values): its total matches the daemon that never stopped. Losing the 2+ s of
    // downtime would leave B 14-35% short for the whole window below (its share of 7-18 s of
    // traffic); counting whole counter values would put it far above. "Soon": B's first ticks
    // after a restart can lag on a loaded machine (in one CI run B was 20% short 1.5 s after it
    // was ready, still catching up), so the totals are compared until they agree within 8%, for
    // at most 10 s.
    let t1 = Instant::now();
    let (xa, xb) = loop {
        tokio::time::sleep(Duration::from_millis(250)).await;
        let (va, vb) = (
            verdict(&c, pa).await.unwrap(),
            verdict(&c, pb).await.unwrap(),
        );
        let (xa, xb) = (canary_exposure(&va), canary_exposure(&vb));
        if (xb / xa - 1.0).abs() < 0.08 || t1.elapsed() > Duration::from_secs(10) {
            break (xa, xb);
        }
    };
    eprintln!(
        "elapsed before kill {e0:.2}s, after restart {e1:.2}s; canary requests: uninterrupted {xa}, resumed {xb} ({:.2} s after ready)",
        t1.elapsed().as_secs_f64()
    );
    assert!(
        (xb / xa - 1.0).abs() < 0.08,
        "canary requests: uninterrupted {xa}, resumed {xb}"
    );

    // Both go on to a final verdict, the same one, and no GO came before min_duration.
    let t0 = Instant::now();
    let (fa, fb) = loop {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let (va, vb) = (
            verdict(&c, pa).await.unwrap(),
            verdict(&c, pb).await.unwrap(),
        );
        if va["decided"] == true && vb["decided"] == true {
            break (va, vb);
        }
        assert!(
            t0.elapsed() < Duration::from_secs(120),
            "no verdict: A {} B {}",
            va["reason"],
            vb["reason"]
        );
    };
    assert_eq!(fa["verdict"], fb["verdict"], "A {fa:#}\nB {fb:#}");
    assert_eq!(fb["verdict"], "GO", "{fb:#}");
    assert!(fb["decided_after_seconds"].as_f64().unwrap() >= 10.0);

    // The binary counts its heap: /metrics has the live bytes (a running daemon holds at least
    // its runtime, routes and analyses, and far less than a GiB here) and glibc's view.
    let page = c
        .get(format!("http://127.0.0.1:{pa}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let mut heap = std::collections::HashMap::new();
    meshgate::parse::parse(&page, &meshgate::parse::FamilyFilter::all(), |s| {
        if s.name.starts_with("meshgate_heap_") || s.name.starts_with("meshgate_malloc_") {
            heap.insert(s.name.to_owned(), s.value);
        }
    });
    let live = heap["meshgate_heap_live_bytes"];
    assert!((1e5..1e9).contains(&live), "live heap {live} B");
    assert!(
        heap["meshgate_malloc_mapped_bytes"] >= live,
        "glibc maps at least what is live: {heap:?}"
    );
    assert!(heap.contains_key("meshgate_malloc_free_bytes"), "{heap:?}");

    // SIGTERM: graceful shutdown flushes; the store reopens with the final verdict in it.
    let pid = b.id().to_string();
    let st = Command::new("kill").args(["-TERM", &pid]).status().unwrap();
    assert!(st.success());
    let code = b.wait().unwrap();
    assert!(code.success(), "graceful exit: {code}");
    let (_, loaded) = meshgate::store::Store::open(&store).unwrap();
    assert_eq!(loaded.analyses.len(), 1);
    assert_eq!(
        loaded.analyses[0].state.verdict().as_str(),
        "GO",
        "the final verdict is stored"
    );
    assert!(!loaded.targets.is_empty(), "series values are stored");

    a.kill().unwrap();
    a.wait().unwrap();
    stop.cancel();
}

#[test]
fn corrupt_and_newer_stores_exit_with_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("bad.redb");
    std::fs::write(&store, vec![0xAB; 8192]).unwrap();
    let cfg = dir.path().join("c.toml");
    std::fs::write(
        &cfg,
        format!(
            "[server]\nlisten = \"127.0.0.1:{}\"\n[store]\npath = {:?}\n",
            free_port(),
            store.display().to_string()
        ),
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_meshgate"))
        .args(["serve", "--config"])
        .arg(&cfg)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        out.status.code(),
        Some(meshgate::store::EXIT_BAD_STORE as i32),
        "{err}"
    );
    assert!(
        err.contains("bad.redb") && !err.contains("panicked"),
        "{err}"
    );

    std::fs::remove_file(&store).unwrap();
    let (s, _) = meshgate::store::Store::open(&store).unwrap();
    s.set_schema_version(meshgate::store::SCHEMA_VERSION + 5)
        .unwrap();
    drop(s);
    let out = Command::new(env!("CARGO_BIN_EXE_meshgate"))
        .args(["serve", "--config"])
        .arg(&cfg)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        out.status.code(),
        Some(meshgate::store::EXIT_BAD_STORE as i32),
        "{err}"
    );
    let expected = format!("layout version {}", meshgate::store::SCHEMA_VERSION + 5);
    assert!(err.contains(&expected), "{err}");
}
