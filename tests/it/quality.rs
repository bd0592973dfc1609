//! Data-quality thresholds over real HTTP: a simulated mesh with four sidecars per cohort, the
//! canary ones behind TCP relays that the test shuts down (connection refused from then on, like
//! a pod that went away). `max_stale_fraction` and `min_fresh_targets` decide whether GO is still
//! possible, and the verdict's `data_quality.blocked_by` names the threshold that blocks it.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use meshgate::config::{Config, StaticTarget};
use meshgate::judge::Catalog;
use meshgate::sim::{RevisionSpec, SimConfig, SimMesh};
use serde_json::{json, Value};
use tokio_util::sync::CancellationToken;

use crate::support::{selectors, GOOD};

/// A TCP relay to `to`; cancelling `stop` closes the port and every relayed connection.
async fn relay(to: SocketAddr, stop: CancellationToken) -> SocketAddr {
    let l = tokio::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .await
        .unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let (mut inbound, _) = tokio::select! {
                _ = stop.cancelled() => return, // drops the listener: refused from now on
                r = l.accept() => r.unwrap(),
            };
            let stop = stop.clone();
            tokio::spawn(async move {
                let Ok(mut out) = tokio::net::TcpStream::connect(to).await else {
                    return;
                };
                tokio::select! {
                    _ = stop.cancelled() => {}
                    _ = tokio::io::copy_bidirectional(&mut inbound, &mut out) => {}
                }
            });
        }
    });
    addr
}

struct Setup {
    base: String,
    relays: Vec<CancellationToken>,
    stop: CancellationToken,
    running: meshgate::daemon::Running,
    _mesh: SimMesh,
}

async fn setup() -> Setup {
    let stop = CancellationToken::new();
    let mut sim = SimConfig {
        rps_per_pod: 2000.0,
        error_rate: 0.001,
        seed: 31,
        ..SimConfig::default()
    };
    sim.baseline = RevisionSpec::new(GOOD.0, &GOOD.0.replace('-', "."), 4);
    sim.canary = RevisionSpec::new(GOOD.1, &GOOD.1.replace('-', "."), 4);
    let mesh = SimMesh::start(sim, IpAddr::V4(Ipv4Addr::LOCALHOST), stop.clone())
        .await
        .unwrap();
    let mut cfg = Config::from_toml(
        r#"
        [scrape]
        interval = "250ms"
        timeout = "200ms"
        [judge]
        # GO by SLO, as these plumbing tests need it fast (the default is off).
        slo_go = true
        min_duration = "4s"
        max_duration = "120s"
        min_exposure = 1000
        "#,
        "quality",
    )
    .unwrap();
    let mut relays = Vec::new();
    for t in mesh.targets() {
        let canary_proxy = t.labels["role"] == "proxy" && t.labels["revision"] == GOOD.1;
        let url = if canary_proxy {
            let u = reqwest::Url::parse(&t.url).unwrap();
            let to: SocketAddr = format!("{}:{}", u.host_str().unwrap(), u.port().unwrap())
                .parse()
                .unwrap();
            let token = stop.child_token();
            let via = relay(to, token.clone()).await;
            relays.push(token);
            format!("http://{via}{}", u.path())
        } else {
            t.url
        };
        cfg.targets.push(StaticTarget {
            url,
            labels: t.labels,
        });
    }
    assert_eq!(relays.len(), 4);
    let listener = tokio::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .await
        .unwrap();
    let running = meshgate::daemon::start(cfg, Catalog::builtin(), listener, stop.clone())
        .await
        .unwrap();
    Setup {
        base: format!("http://{}", running.addr),
        relays,
        stop,
        running,
        _mesh: mesh,
    }
}

async fn create(s: &Setup, name: &str, extra: Value) {
    let (b, c) = selectors(GOOD);
    let mut body = json!({"name": name, "baseline": b, "canary": c, "checks": ["error-rate"]});
    for (k, v) in extra.as_object().unwrap() {
        body[k] = v.clone();
    }
    let r = reqwest::Client::new()
        .post(format!("{}/v1/analyses", s.base))
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201, "{}", r.text().await.unwrap());
}

async fn verdict(s: &Setup, id: &str) -> Value {
    reqwest::get(format!("{}/v1/analyses/{id}/verdict", s.base))
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thresholds_decide_whether_missing_targets_block_go() {
    let s = setup().await;
    // A minimum duration well past the moment the relay goes away: no analysis can be GO on the
    // complete data from before.
    let min = json!("10s");
    create(
        &s,
        "tolerant",
        json!({"max_stale_fraction": 0.3, "min_fresh_targets": 2, "min_duration": min}),
    )
    .await;
    create(&s, "strict", json!({"min_duration": min})).await;
    create(
        &s,
        "quorum",
        json!({"max_stale_fraction": 0.5, "min_fresh_targets": 4, "min_duration": min}),
    )
    .await;

    // Every canary sidecar sends data, then one goes away mid-analysis.
    let t0 = Instant::now();
    loop {
        let v = verdict(&s, "strict").await;
        if v["data_quality"]["canary"]["fresh"] == 4 && v["data_quality"]["baseline"]["fresh"] == 4
        {
            break;
        }
        assert!(t0.elapsed() < Duration::from_secs(30), "{v:#}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    s.relays[0].cancel();
    let at = verdict(&s, "strict").await["elapsed_seconds"]
        .as_f64()
        .unwrap();
    assert!(
        at < 8.0,
        "the machine is too slow for this test: {at} s to see every target"
    );

    // `tolerant` (1 of 4 missing is 25%, at most 30% allowed; 3 fresh, 2 needed) goes on to GO;
    // the others never do, and say which threshold holds them back.
    let mut seen_strict = Vec::new();
    let t0 = Instant::now();
    let tolerant = loop {
        let v = verdict(&s, "tolerant").await;
        let st = verdict(&s, "strict").await;
        let q = verdict(&s, "quorum").await;
        assert_ne!(
            st["verdict"], "GO",
            "{:#} {}",
            st["data_quality"], st["reason"]
        );
        assert_ne!(
            q["verdict"], "GO",
            "{:#} {}",
            q["data_quality"], q["reason"]
        );
        seen_strict.push(st);
        if v["decided"] == true {
            break v;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(100),
            "tolerant undecided: {v:#}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(tolerant["verdict"], "GO", "{tolerant:#}");
    let dq = &tolerant["data_quality"];
    assert_eq!(dq["canary"]["fresh"], 3, "{dq:#}");
    assert_eq!(dq["canary"]["stale"], 1, "{dq:#}");
    assert_eq!(dq["thresholds"]["max_stale_fraction"], 0.3, "{dq:#}");
    assert_eq!(dq["thresholds"]["min_fresh_targets"], 2, "{dq:#}");
    assert!(dq.get("blocked_by").is_none(), "{dq:#}");

    let st = verdict(&s, "strict").await;
    assert_eq!(st["verdict"], "PENDING", "{st:#}");
    let b = &st["data_quality"]["blocked_by"];
    assert_eq!(b["threshold"], "max_stale_fraction", "{st:#}");
    assert_eq!(b["cohort"], "canary", "{st:#}");
    assert_eq!(b["value"], 0.25, "{st:#}");
    assert_eq!(b["limit"], 0.0, "{st:#}");
    assert!(
        st["reason"]
            .as_str()
            .unwrap()
            .contains("max_stale_fraction"),
        "{st:#}"
    );
    // Before the relay went away, strict was held back by time or evidence, not by data.
    assert!(
        seen_strict
            .iter()
            .any(|v| v["data_quality"].get("blocked_by").is_none()),
        "strict was never without a data block"
    );

    let q = verdict(&s, "quorum").await;
    assert_eq!(q["verdict"], "PENDING", "{q:#}");
    let b = &q["data_quality"]["blocked_by"];
    assert_eq!(b["threshold"], "min_fresh_targets", "{q:#}");
    assert_eq!(b["value"], 3.0, "{q:#}");
    assert_eq!(b["limit"], 4.0, "{q:#}");

    // Two more go away. A new analysis never saw them send data: they still count (as
    // unreachable), 3 of 4 missing is above 30%.
    s.relays[1].cancel();
    s.relays[2].cancel();
    tokio::time::sleep(Duration::from_secs(2)).await;
    create(&s, "late", json!({"max_stale_fraction": 0.3})).await;
    let t0 = Instant::now();
    let late = loop {
        let v = verdict(&s, "late").await;
        if v["data_quality"]["baseline"]["fresh"] == 4 && v["data_quality"]["canary"]["fresh"] == 1
        {
            break v;
        }
        assert!(t0.elapsed() < Duration::from_secs(20), "{v:#}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let dq = &late["data_quality"];
    assert_eq!(dq["canary"]["fresh"], 1, "{dq:#}");
    assert_eq!(dq["canary"]["unreachable"], 3, "{dq:#}");
    assert_eq!(
        dq["blocked_by"]["threshold"], "max_stale_fraction",
        "{dq:#}"
    );
    assert_eq!(dq["blocked_by"]["value"], 0.75, "{dq:#}");
    // And it stays so: no GO while most of the canary is dark.
    tokio::time::sleep(Duration::from_secs(6)).await;
    let late = verdict(&s, "late").await;
    assert_eq!(late["verdict"], "PENDING", "{late:#}");
    assert_eq!(
        late["data_quality"]["blocked_by"]["threshold"],
        "max_stale_fraction"
    );

    s.stop.cancel();
    s.running.join().await;
}

#[test]
fn thresholds_are_validated() {
    let err = Config::from_toml(
        "[judge]\nmax_stale_fraction = 1.0\nmin_fresh_targets = 0\n[[analyses]]\nname = \"a\"\n\
         baseline = '{revision=\"1\"}'\ncanary = '{revision=\"2\"}'\nmax_stale_fraction = -0.1\n",
        "t",
    )
    .unwrap_err();
    let keys: Vec<&str> = err.problems().iter().map(|p| p.key.as_str()).collect();
    for k in [
        "judge.max_stale_fraction",
        "judge.min_fresh_targets",
        "analyses[0].max_stale_fraction",
    ] {
        assert!(keys.contains(&k), "{k} missing: {err}");
    }
    let cfg = Config::from_toml(
        "[judge]\nmax_stale_fraction = 0.2\nmin_fresh_targets = 3\n",
        "t",
    )
    .unwrap();
    assert_eq!(cfg.judge.max_stale_fraction, 0.2);
    assert_eq!(cfg.judge.min_fresh_targets, 3);
}
