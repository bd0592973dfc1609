//! Store faults through the real daemon: a real full filesystem (a small tmpfs this test mounts)
//! under the store, damaged and empty store files given to the real binary, and retention (the
//! TTL of finished analyses, the cap on analyses held, a scope's limit), all over real sockets.

use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use meshgate::sim::{SimConfig, SimMesh};
use serde_json::{json, Value};
use tokio_util::sync::CancellationToken;

use crate::support::{free_port, lab, GOOD};

fn config(mesh: &SimMesh, port: u16, store: &Path) -> String {
    let mut s = format!(
        r#"
[server]
listen = "127.0.0.1:{port}"
[scrape]
interval = "250ms"
timeout = "200ms"
[judge]
min_duration = "30s"
max_duration = "1h"
[store]
path = {:?}
"#,
        store.display().to_string()
    );
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

fn spawn(cfg: &Path, log: &Path) -> Child {
    Command::new(env!("CARGO_BIN_EXE_meshgate"))
        .args(["serve", "--config"])
        .arg(cfg)
        .env("MESHGATE_LOG", "info")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(log).unwrap())
        .spawn()
        .expect("spawn meshgate")
}

async fn wait_ready(c: &reqwest::Client, base: &str, child: &mut Child) {
    let t0 = Instant::now();
    loop {
        if let Some(st) = child.try_wait().unwrap() {
            panic!("meshgate exited early: {st}");
        }
        if let Ok(r) = c.get(format!("{base}/readyz")).send().await {
            if r.status().is_success() {
                return;
            }
        }
        assert!(t0.elapsed() < Duration::from_secs(30), "not ready in 30s");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A simulated mesh and the real daemon scraping it with its store at `store`.
struct Daemon {
    base: String,
    cfg: PathBuf,
    log: PathBuf,
    child: Child,
    stop: CancellationToken,
    _mesh: SimMesh,
}

async fn daemon(dir: &Path, store: &Path, seed: u64, c: &reqwest::Client) -> Daemon {
    let stop = CancellationToken::new();
    let mesh = SimMesh::start(
        SimConfig::small(seed, 2, 500.0),
        IpAddr::V4(Ipv4Addr::LOCALHOST),
        stop.clone(),
    )
    .await
    .unwrap();
    let port = free_port();
    let base = format!("http://127.0.0.1:{port}");
    let cfg = dir.join(format!("m{seed}.toml"));
    std::fs::write(&cfg, config(&mesh, port, store)).unwrap();
    let log = dir.join(format!("meshgate{seed}.log"));
    let mut child = spawn(&cfg, &log);
    wait_ready(c, &base, &mut child).await;
    Daemon {
        base,
        cfg,
        log,
        child,
        stop,
        _mesh: mesh,
    }
}

fn body(name: &str) -> Value {
    json!({"name": name, "baseline": "{role=\"proxy\", revision=\"1-24-2\"}", "canary": "{role=\"proxy\", revision=\"1-25-0\"}"})
}

async fn post(c: &reqwest::Client, base: &str, b: &Value) -> (u16, Value) {
    let r = c
        .post(format!("{base}/v1/analyses"))
        .json(b)
        .timeout(Duration::from_secs(10))
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

/// The value of an unlabelled sample on a `/metrics` page.
fn sample(page: &str, name: &str) -> Option<f64> {
    page.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
}

async fn metrics(c: &reqwest::Client, base: &str) -> String {
    c.get(format!("{base}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

/// A tmpfs mounted for the test, unmounted when dropped.
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(dir: &Path, size: &str) -> Option<Tmpfs> {
        std::fs::create_dir_all(dir).unwrap();
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir)
            .output();
        match out {
            Ok(o) if o.status.success() => Some(Tmpfs(dir.to_path_buf())),
            Ok(o) => {
                eprintln!(
                    "SKIPPED: cannot mount a tmpfs ({}): the full-filesystem test needs root",
                    String::from_utf8_lossy(&o.stderr).trim()
                );
                None
            }
            Err(e) => {
                eprintln!("SKIPPED: cannot run mount ({e}): the full-filesystem test needs it");
                None
            }
        }
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

/// Write `path` until the file system has no space left; the bytes written.
fn fill(path: &Path) -> u64 {
    use std::io::Write;
    let mut f = std::fs::File::create(path).unwrap();
    let chunk = vec![0x5a; 64 * 1024];
    let mut n = 0u64;
    loop {
        match f.write(&chunk) {
            Ok(0) => break,
            Ok(k) => n += k as u64,
            Err(e) => {
                assert_eq!(e.raw_os_error(), Some(libc::ENOSPC), "{e}");
                break;
            }
        }
    }
    // Smaller writes take the last partial blocks.
    for size in [4096usize, 512, 1] {
        while f.write(&chunk[..size]).is_ok_and(|k| k > 0) {
            n += size as u64;
        }
    }
    let _ = f.sync_all();
    n
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_filesystem_refuses_changes_recovers_by_itself_and_loses_nothing_acknowledged() {
    let dir = tempfile::tempdir().unwrap();
    let Some(fs) = Tmpfs::mount(&dir.path().join("mnt"), "24m") else {
        return;
    };
    let store = fs.0.join("state.redb");
    let c = reqwest::Client::new();
    let Daemon {
        base,
        cfg,
        log,
        child: mut d,
        stop,
        _mesh,
    } = daemon(dir.path(), &store, 31, &c).await;

    // Acknowledged while the disk has room: 201 each.
    let mut acknowledged = Vec::new();
    for i in 0..5 {
        let name = format!("before-{i}");
        let (st, v) = post(&c, &base, &body(&name)).await;
        assert_eq!(st, 201, "{v}");
        acknowledged.push(name);
    }

    // Fill the file system, then keep creating: once redb needs a page it has not got, the write
    // fails, and from then on no change is acknowledged.
    let filler = fs.0.join("filler");
    let filled = fill(&filler);
    eprintln!("filled {filled} bytes");
    let mut refused = None;
    for i in 0..400 {
        let name = format!("during-{i}");
        let (st, v) = post(&c, &base, &body(&name)).await;
        match st {
            201 => acknowledged.push(name),
            503 => {
                assert_eq!(v["error"]["code"], "store_unavailable", "{v}");
                let msg = v["error"]["message"].as_str().unwrap();
                assert!(msg.contains("state.redb"), "{msg}");
                refused = Some(name);
                break;
            }
            other => panic!("create {name}: {other} {v}"),
        }
    }
    let refused = refused.expect("no create was refused on a full file system");
    // Refused from now on, at once, with the store's reason: create, delete, a retry.
    let (st, v) = post(&c, &base, &body("during-more")).await;
    assert_eq!(st, 503, "{v}");
    let (st, v) = post(&c, &base, &body(&refused)).await;
    assert_eq!(
        st, 503,
        "a retry of the refused create before the store works: {v}"
    );
    let r = c
        .delete(format!("{base}/v1/analyses/{}", acknowledged[0]))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 503);
    let (st, _) = get(&c, &format!("{base}/v1/analyses/{}", acknowledged[0])).await;
    assert_eq!(st, 200, "a refused delete changed nothing");
    // Reads of stored analyses answer as usual, the same create of a stored one too (200).
    let (st, v) = post(&c, &base, &body(&acknowledged[1])).await;
    assert_eq!(st, 200, "{v}");
    let r = c.get(format!("{base}/readyz")).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 503);
    let ready: Value = r.json().await.unwrap();
    assert!(
        ready["reason"].as_str().unwrap().contains("state.redb"),
        "{ready}"
    );
    let page = metrics(&c, &base).await;
    let errors = sample(&page, "meshgate_store_errors_total").unwrap();
    assert!(errors >= 1.0, "{page}");
    assert_eq!(sample(&page, "meshgate_store_healthy"), Some(0.0), "{page}");
    // Ticks go on while the disk refuses: the engine does not wait on it.
    let ticks0 = sample(&page, "meshgate_analysis_ticks_total").unwrap();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let page = metrics(&c, &base).await;
    assert!(sample(&page, "meshgate_analysis_ticks_total").unwrap() > ticks0);
    assert!(
        sample(&page, "meshgate_store_errors_total").unwrap() > errors,
        "the writer retries: {page}"
    );

    // Space returns: the writer reopens the database and writes the latest state by itself.
    std::fs::remove_file(&filler).unwrap();
    let t0 = Instant::now();
    loop {
        let r = c.get(format!("{base}/readyz")).send().await.unwrap();
        if r.status().is_success() {
            break;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(20),
            "the store did not recover"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let page = metrics(&c, &base).await;
    assert_eq!(sample(&page, "meshgate_store_healthy"), Some(1.0), "{page}");
    // The refused create was held in memory; the same request now answers 200 (it is stored).
    let (st, v) = post(&c, &base, &body(&refused)).await;
    assert_eq!(st, 200, "{v}");
    acknowledged.push(refused);
    let (st, v) = post(&c, &base, &body("after-0")).await;
    assert_eq!(st, 201, "{v}");
    acknowledged.push("after-0".into());
    let log_text = std::fs::read_to_string(&log).unwrap();
    assert!(
        log_text.contains("store write failed") && log_text.contains("state.redb"),
        "the log names the failure and the file:\n{log_text}"
    );
    assert!(log_text.contains("store writes work again"), "{log_text}");

    // SIGKILL: no shutdown path. Every acknowledged analysis is in the store.
    d.kill().unwrap();
    d.wait().unwrap();
    let mut d = spawn(&cfg, &log);
    wait_ready(&c, &base, &mut d).await;
    let list: Value = c
        .get(format!("{base}/v1/analyses"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let ids: Vec<&str> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["id"].as_str().unwrap())
        .collect();
    let missing: Vec<&String> = acknowledged
        .iter()
        .filter(|a| !ids.contains(&a.as_str()))
        .collect();
    eprintln!(
        "{} acknowledged, {} after the restart",
        acknowledged.len(),
        ids.len()
    );
    assert!(missing.is_empty(), "lost after restart: {missing:?}");
    d.kill().unwrap();
    d.wait().unwrap();
    stop.cancel();
}

/// A real store file, written by the daemon and closed by SIGTERM.
async fn real_store(dir: &Path) -> Vec<u8> {
    let store = dir.join("real.redb");
    let c = reqwest::Client::new();
    let Daemon {
        base,
        child: mut d,
        stop,
        _mesh,
        ..
    } = daemon(dir, &store, 32, &c).await;
    for i in 0..3 {
        assert_eq!(post(&c, &base, &body(&format!("a{i}"))).await.0, 201);
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let st = Command::new("kill")
        .args(["-TERM", &d.id().to_string()])
        .status()
        .unwrap();
    assert!(st.success());
    assert!(d.wait().unwrap().success());
    stop.cancel();
    std::fs::read(&store).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn damaged_and_empty_store_files_exit_65_naming_the_file_the_same_way_every_time() {
    let dir = tempfile::tempdir().unwrap();
    let good = real_store(dir.path()).await;
    assert!(good.len() > 4096);
    let mut flipped = good.clone();
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    for _ in 0..200 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let at = (x % (flipped.len() as u64 * 8)) as usize;
        flipped[at / 8] ^= 1 << (at % 8);
    }
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("empty", Vec::new()),
        ("truncated-half", good[..good.len() / 2].to_vec()),
        ("truncated-4k", good[..4096].to_vec()),
        ("truncated-100", good[..100].to_vec()),
        ("flipped-200", flipped),
    ];
    for (what, bytes) in &cases {
        let store = dir.path().join(format!("{what}.redb"));
        std::fs::write(&store, bytes).unwrap();
        let cfg = dir.path().join(format!("{what}.toml"));
        std::fs::write(
            &cfg,
            format!(
                "[server]\nlisten = \"127.0.0.1:{}\"\n[store]\npath = {:?}\n",
                free_port(),
                store.display().to_string()
            ),
        )
        .unwrap();
        let mut first: Option<String> = None;
        for run in 0..2 {
            let out = Command::new(env!("CARGO_BIN_EXE_meshgate"))
                .args(["serve", "--config"])
                .arg(&cfg)
                .env("RUST_BACKTRACE", "1")
                .output()
                .unwrap();
            let err = String::from_utf8_lossy(&out.stderr).to_string();
            assert_eq!(out.status.code(), Some(65), "{what} run {run}: {err}");
            assert!(
                err.contains(&store.display().to_string()),
                "{what}: names the file: {err}"
            );
            assert!(err.contains("move the file aside"), "{what}: {err}");
            assert!(
                !err.contains("panicked") && !err.contains("backtrace"),
                "{what}: {err}"
            );
            assert_eq!(
                &std::fs::read(&store).unwrap(),
                bytes,
                "{what}: a refused file is left as it was"
            );
            match &first {
                None => first = Some(err),
                Some(f) => assert_eq!(f, &err, "{what}: the second run differs"),
            }
        }
        eprintln!("{what}: {}", first.unwrap().trim());
    }

    // The undamaged copy starts (so the refusals above are about the damage).
    let store = dir.path().join("copy.redb");
    std::fs::write(&store, &good).unwrap();
    let port = free_port();
    let cfg = dir.path().join("copy.toml");
    std::fs::write(
        &cfg,
        format!(
            "[server]\nlisten = \"127.0.0.1:{port}\"\n[store]\npath = {:?}\n",
            store.display().to_string()
        ),
    )
    .unwrap();
    let c = reqwest::Client::new();
    let mut d = spawn(&cfg, &dir.path().join("copy.log"));
    wait_ready(&c, &format!("http://127.0.0.1:{port}"), &mut d).await;
    let list: Value = c
        .get(format!("http://127.0.0.1:{port}/v1/analyses"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(list.as_array().unwrap().len(), 3, "{list}");
    d.kill().unwrap();
    d.wait().unwrap();
}

async fn get(c: &reqwest::Client, url: &str) -> (u16, Value) {
    let r = c.get(url).send().await.unwrap();
    let st = r.status().as_u16();
    (st, r.json().await.unwrap_or(Value::Null))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn finished_analyses_expire_after_the_ttl_from_memory_and_store() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("ttl.redb");
    let lab = lab(&format!(
        "[retention]\nfinished_ttl = \"3s\"\n[store]\npath = {:?}\n",
        store.display().to_string()
    ))
    .await;
    let c = reqwest::Client::new();
    let mut short = crate::support::analysis("short", GOOD);
    short["min_duration"] = json!("1s");
    short["max_duration"] = json!("2s");
    let long = crate::support::analysis("long", GOOD);
    for b in [&short, &long] {
        let r = c
            .post(format!("{}/v1/analyses", lab.base))
            .json(b)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 201);
    }
    let v = lab.wait_final("short", Duration::from_secs(20)).await;
    let decided = Instant::now();
    assert!(v["decided"] == true, "{v}");
    // Still there right after its verdict: the TTL counts from the verdict.
    let url = format!("{}/v1/analyses/short", lab.base);
    assert_eq!(get(&c, &url).await.0, 200);
    let gone = loop {
        if get(&c, &url).await.0 == 404 {
            break decided.elapsed();
        }
        assert!(
            decided.elapsed() < Duration::from_secs(15),
            "not removed after its TTL"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(
        gone >= Duration::from_millis(2500),
        "removed after {gone:?}"
    );
    let (st, _) = get(&c, &format!("{}/v1/analyses/long", lab.base)).await;
    assert_eq!(st, 200, "a running analysis stays");
    lab.shutdown().await;
    let (_, loaded) = meshgate::store::Store::open(&store).unwrap();
    let ids: Vec<&str> = loaded
        .analyses
        .iter()
        .map(|a| a.spec.name.as_str())
        .collect();
    assert_eq!(ids, vec!["long"], "removed from the store too");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cap_on_analyses_is_a_429_when_all_run_and_makes_room_from_finished_ones() {
    let lab = lab("[retention]\nmax_analyses = 2\n").await;
    let c = reqwest::Client::new();
    let create = |b: Value| {
        let c = c.clone();
        let url = format!("{}/v1/analyses", lab.base);
        async move {
            let r = c.post(url).json(&b).send().await.unwrap();
            let st = r.status().as_u16();
            (st, r.json::<Value>().await.unwrap())
        }
    };
    let mut short = crate::support::analysis("short", GOOD);
    short["min_duration"] = json!("1s");
    short["max_duration"] = json!("2s");
    assert_eq!(create(short.clone()).await.0, 201);
    assert_eq!(
        create(crate::support::analysis("long-1", GOOD)).await.0,
        201
    );
    // Both running: the third is refused.
    let (st, v) = create(crate::support::analysis("long-2", GOOD)).await;
    assert_eq!(st, 429, "{v}");
    assert_eq!(v["error"]["code"], "too_many_analyses", "{v}");
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("max_analyses = 2"),
        "{v}"
    );
    // The same name again is not a new analysis: no 429 for it.
    assert_eq!(create(short.clone()).await.0, 200);
    // Once one is finished it makes room: the oldest finished one goes.
    lab.wait_final("short", Duration::from_secs(20)).await;
    let (st, v) = create(crate::support::analysis("long-2", GOOD)).await;
    assert_eq!(st, 201, "{v}");
    let (st, _) = get(&c, &format!("{}/v1/analyses/short", lab.base)).await;
    assert_eq!(st, 404, "the finished one made room");
    let (st, _) = create(crate::support::analysis("long-3", GOOD)).await;
    assert_eq!(st, 429);
    lab.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_integration_scope_is_limited_to_its_max_analyses() {
    let dir = tempfile::tempdir().unwrap();
    let tokens = dir.path().join("tokens");
    std::fs::write(
        &tokens,
        "admin admin-token-0123456789\nintegrations integ-token-0123456789\n",
    )
    .unwrap();
    let lab = lab(&format!(
        "[auth]\ntokens_file = {:?}\n[[auth.scopes]]\nscope = \"integrations\"\nprefixes = [\"/argo/\"]\nmax_analyses = 2\n",
        tokens.display().to_string()
    ))
    .await;
    let c = reqwest::Client::new();
    let (b, cn) = crate::support::selectors(GOOD);
    let argo = |name: &str| {
        c.post(format!("{}/argo/v1/analyses/{name}", lab.base))
            .bearer_auth("integ-token-0123456789")
            .json(&json!({"baseline": b, "canary": cn}))
            .send()
    };
    assert_eq!(argo("rollout-1").await.unwrap().status().as_u16(), 200);
    assert_eq!(argo("rollout-2").await.unwrap().status().as_u16(), 200);
    let r = argo("rollout-3").await.unwrap();
    assert_eq!(r.status().as_u16(), 429);
    let v: Value = r.json().await.unwrap();
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("\"integrations\" scope"),
        "{v}"
    );
    // An admin token is not held to the scope's limit.
    let r = c
        .post(format!("{}/v1/analyses", lab.base))
        .bearer_auth("admin-token-0123456789")
        .json(&crate::support::analysis("by-admin", GOOD))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 201);
    lab.shutdown().await;
}
