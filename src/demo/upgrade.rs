//! The autopilot demo: a whole `meshgate upgrade --execute` run on the simulated mesh, with no
//! cluster. The Kubernetes API is the double the tests use (`sim::kubeapi`, following the real
//! API server's contract), its pods following the namespaces' labels at each restart; when a
//! namespace's rollouts are done the simulated mesh's traffic moves onto the new revision's
//! sidecars (or back, on a rollback), as real pods would take it. The daemon judges each wave's
//! before/after analysis from what it scrapes, so every verdict comes from the autopilot's own
//! move: nothing is scripted but the fault.
//!
//! The plan: wave `w1` moves `shop`, wave `w2` moves `pay`; `ads` never moves and is the
//! control of both. `upgrade`: the new revision changes nothing, both waves GO, the run exits 0.
//! `upgrade-regression`: once wave 1 is GO the new revision serves 4x the 5xx, so wave 2's move
//! makes `pay` worse while the controls stay as they were (shop was on the new revision in both
//! of wave 2's periods): wave 2 NO-GO, its namespace relabelled back and restarted, its traffic
//! back on the old revision, the run exits 1 (rolled back).

use std::net::{IpAddr, Ipv4Addr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use serde_json::{json, Value};
use tokio_util::sync::CancellationToken;

use super::{keep_up, DemoOptions, Scenario};
use crate::config::{Config, StaticTarget};
use crate::judge::Catalog;
use crate::sim::kubeapi::KubeApi;
use crate::sim::{Cohort, Fault, SimConfig, SimMesh};
use crate::upgrade::{RunState, UpgradeAction, UpgradeOptions, EXIT_DONE, EXIT_ROLLED_BACK};

/// Requests per second per sidecar: a few seconds of pre-move window bound each workload's
/// 5xx rate tightly. 2.5x the autopilot's end-to-end test's 200,000: on two busy cores (missed
/// scrapes) 200,000 left a wave INCONCLUSIVE at 60 s now and then.
const RPS: f64 = 500_000.0;
/// The mesh's 5xx rate on both revisions (the regression makes the new one's 4x).
const BASE_ERROR_RATE: f64 = 0.001;
/// The mesh's namespaces and the wave that moves each.
const NAMESPACES: [(&str, &str); 3] = [("shop", "w1"), ("pay", "w2"), ("ads", "never moved")];

/// The staged mesh: every namespace's traffic on the old revision's sidecars until it moves.
fn mesh(seed: u64) -> SimConfig {
    let mut sim = SimConfig::small(seed, 6, RPS);
    sim.namespaces = NAMESPACES.iter().map(|(ns, _)| (*ns).to_owned()).collect();
    sim.error_rate = BASE_ERROR_RATE;
    sim.staged = true;
    sim
}

/// The daemon: 250 ms scrapes and ticks, GO 3 s after a certificate at the earliest, so a
/// wave decides in seconds (the default demo's 30 s minimum would make the run minutes long);
/// INCONCLUSIVE only after 120 s, a margin for slow machines (a wave takes 10-30 s).
fn daemon_config(targets: Vec<StaticTarget>) -> anyhow::Result<Config> {
    let mut cfg = Config::from_toml(
        r#"
        [scrape]
        interval = "250ms"
        timeout = "200ms"
        [judge]
        alpha = 0.05
        min_duration = "3s"
        max_duration = "120s"
        min_exposure = 1000
        "#,
        "demo-upgrade",
    )?;
    cfg.targets = targets;
    // 500,000 req/s per sidecar is above the plausibility ceiling meant for real ones: raised
    // for the simulation only (as the waves demo does).
    cfg.scrape.limits.max_increase_per_second = 5_000_000.0;
    Ok(cfg)
}

/// The autopilot's configuration: the double as its API server, and the plan.
fn plan_toml(api: &str, from: &str, to: &str) -> String {
    format!(
        r#"[discovery.kubernetes]
api_server = "{api}"
cluster = "demo"

[plan]
name = "demo {from} -> {to}"
from_revision = "{from}"
to_revision = "{to}"

[[plan.waves]]
name = "w1"
namespaces = ["shop"]
soak = "1s"
pre_move = "6s"
checks = ["error-rate"]

[[plan.waves]]
name = "w2"
namespaces = ["pay"]
soak = "0s"
pre_move = "6s"
checks = ["error-rate"]
"#
    )
}

/// A directory of its own under the system's temporary directory, removed when dropped.
struct ScratchDir(PathBuf);

impl ScratchDir {
    fn new() -> anyhow::Result<Self> {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        let p = std::env::temp_dir().join(format!(
            "meshgate-demo-upgrade-{}-{nanos}",
            std::process::id()
        ));
        std::fs::create_dir_all(&p).with_context(|| format!("creating {}", p.display()))?;
        Ok(ScratchDir(p))
    }
}

impl Drop for ScratchDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Under `--json`, stdout must hold only the final document, but the autopilot prints each call
/// it makes to stdout (that is its interface): while it runs, file descriptor 1 points at
/// stderr, so its narration stays visible and `demo --json | jq` still works.
struct StdoutToStderr {
    #[cfg(unix)]
    saved: Option<libc::c_int>,
}

impl StdoutToStderr {
    fn new(active: bool) -> Self {
        #[cfg(unix)]
        {
            use std::io::Write;
            let saved = active.then(|| {
                let _ = std::io::stdout().flush();
                // SAFETY: dup and dup2 on the process's own standard descriptors; a failure
                // answers -1 and leaves them as they were.
                unsafe {
                    let saved = libc::dup(1);
                    if saved >= 0 && libc::dup2(2, 1) < 0 {
                        libc::close(saved);
                        return -1;
                    }
                    saved
                }
            });
            StdoutToStderr {
                saved: saved.filter(|s| *s >= 0),
            }
        }
        #[cfg(not(unix))]
        {
            let _ = active;
            StdoutToStderr {}
        }
    }
}

impl Drop for StdoutToStderr {
    fn drop(&mut self) {
        #[cfg(unix)]
        if let Some(saved) = self.saved.take() {
            use std::io::Write;
            let _ = std::io::stdout().flush();
            // SAFETY: restores the descriptor saved by `new`, then closes the copy.
            unsafe {
                libc::dup2(saved, 1);
                libc::close(saved);
            }
        }
    }
}

/// The wave phases a scenario must end with, and the autopilot's exit code.
fn expected(scenario: Scenario) -> ([&'static str; 2], u8) {
    match scenario {
        Scenario::UpgradeRegression => (["go", "rolled_back"], EXIT_ROLLED_BACK),
        _ => (["go", "go"], EXIT_DONE),
    }
}

/// Once wave 1 is GO (the state file says so), the new revision serves 4x the 5xx: before wave
/// 2's analysis starts, so the moved `shop` (a control of wave 2) is 4x over both of its
/// periods and `pay`'s change is its own move.
fn fault_after_wave_1(mesh: Arc<SimMesh>, state: PathBuf, json: bool, stop: CancellationToken) {
    tokio::spawn(async move {
        loop {
            let go = std::fs::read_to_string(&state)
                .ok()
                .and_then(|t| serde_json::from_str::<Value>(&t).ok())
                .is_some_and(|v| v["waves"][0]["phase"] == "go");
            if go {
                mesh.set_fault(
                    Cohort::Canary,
                    Fault {
                        error_rate: Some(4.0 * BASE_ERROR_RATE),
                        latency_factor: 1.0,
                    },
                );
                say!(
                    json,
                    "   [demo] wave w1 is GO: from now on the new revision's sidecars serve 4x the 5xx ({:.1}%)",
                    400.0 * BASE_ERROR_RATE
                );
                return;
            }
            tokio::select! {
                () = stop.cancelled() => return,
                () = tokio::time::sleep(Duration::from_millis(10)) => {}
            }
        }
    });
}

/// Run it; true when the run ended as the scenario expects (its exit code, each wave's phase,
/// where the traffic is and the labels the API server holds).
pub async fn run(opts: DemoOptions) -> anyhow::Result<bool> {
    let started = Instant::now();
    let shutdown = CancellationToken::new();
    let _guard = shutdown.clone().drop_guard();
    let sim = mesh(opts.seed);
    let (from, to) = (sim.baseline.revision.clone(), sim.canary.revision.clone());
    let mesh = Arc::new(
        SimMesh::start(sim, IpAddr::V4(Ipv4Addr::LOCALHOST), shutdown.clone())
            .await
            .context("starting the simulated mesh")?,
    );
    let targets: Vec<StaticTarget> = mesh.targets().into_iter().map(StaticTarget::from).collect();
    let listener = tokio::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .await
        .context("binding the daemon's API on 127.0.0.1")?;
    let daemon = crate::daemon::start(
        daemon_config(targets)?,
        Catalog::builtin(),
        listener,
        shutdown.clone(),
    )
    .await?;
    let base = format!("http://{}", daemon.addr);

    // The cluster: shop on the old revision by label, pay injected the default way, ads on the
    // old revision; the Lease's namespace.
    let api = KubeApi::bind()
        .await
        .context("starting the Kubernetes API double on 127.0.0.1")?;
    api.namespace("shop", json!({"istio.io/rev": from}));
    api.namespace("pay", json!({"istio-injection": "enabled"}));
    api.namespace("ads", json!({"istio.io/rev": from}));
    api.namespace("meshgate", json!({}));
    api.workload("deployments", "shop", "cart", 2);
    api.workload("deployments", "shop", "catalog", 2);
    api.workload("deployments", "pay", "checkout", 2);
    api.workload("daemonsets", "pay", "agent", 0);
    api.workload("deployments", "ads", "banner", 2);
    let (m, new_rev, json_out) = (mesh.clone(), to.clone(), opts.json);
    // The double tells each workload's end of rollout that leaves its namespace with none
    // running, so two ending together tell twice: the mesh moves, and the demo says so, once.
    let told = std::sync::Mutex::new(std::collections::BTreeMap::<String, String>::new());
    api.on_rollout(move |ns, rev| {
        let mut told = told.lock().unwrap_or_else(|e| e.into_inner());
        if told.get(ns).map(String::as_str) == Some(rev) {
            return;
        }
        told.insert(ns.to_owned(), rev.to_owned());
        if rev == new_rev {
            m.move_namespace(ns);
        } else {
            m.move_namespace_back(ns);
        }
        say!(
            json_out,
            "   [mesh] {ns}: rollouts done, pods on revision {rev}: its traffic now on the {} revision's sidecars",
            if rev == new_rev { "new" } else { "old" }
        );
    });

    let scratch = ScratchDir::new()?;
    let config = scratch.0.join("meshgate.toml");
    std::fs::write(&config, plan_toml(&api.url(), &from, &to))
        .with_context(|| format!("writing {}", config.display()))?;
    let state = scratch.0.join("state.json");

    say!(
        opts.json,
        "meshgate demo: the autopilot (`meshgate upgrade --execute`) drives a 2-wave plan {from} -> {to}, {}",
        if opts.scenario == Scenario::UpgradeRegression {
            "and the new revision turns 4x worse after wave 1"
        } else {
            "an upgrade that changes nothing"
        }
    );
    say!(
        opts.json,
        "  simulated mesh: namespaces shop (wave w1), pay (wave w2), ads (never moved, the control), two workloads each, {RPS} req/s per sidecar, {:.1}% 5xx",
        100.0 * BASE_ERROR_RATE
    );
    say!(
        opts.json,
        "  Kubernetes API double on {}; daemon API on {base}; plan {}",
        api.url(),
        config.display()
    );
    say!(
        opts.json,
        "  the autopilot's calls follow, one a line (its messages are prefixed `meshgate upgrade:`)\n"
    );

    if opts.scenario == Scenario::UpgradeRegression {
        fault_after_wave_1(mesh.clone(), state.clone(), opts.json, shutdown.clone());
    }
    let code = {
        let _redirect = StdoutToStderr::new(opts.json);
        crate::upgrade::run(UpgradeOptions {
            action: UpgradeAction::Run,
            by: None,
            why: None,
            config: config.clone(),
            server: base.clone(),
            execute: true,
            state: state.clone(),
            lease_namespace: "meshgate".into(),
            lease_name: "meshgate-upgrade".into(),
            lease_duration: Duration::from_secs(3),
            rollout_timeout: Duration::from_secs(60),
            verdict_timeout: Duration::from_secs(150),
            precheck_timeout: Duration::from_secs(60),
            poll: Duration::from_millis(100),
        })
        .await
    };

    let text = std::fs::read_to_string(&state)
        .with_context(|| format!("reading the run's state {}", state.display()))?;
    let run: RunState = serde_json::from_str(&text)
        .with_context(|| format!("reading the run's state {}", state.display()))?;
    let (phases, want_code) = expected(opts.scenario);
    let mut ok = code == want_code;
    say!(opts.json, "\nsummary ({})", state.display());
    say!(
        opts.json,
        "  autopilot exit code {code} (expected {want_code})"
    );
    for (w, want) in run.waves.iter().zip(phases) {
        let phase = serde_json::to_value(w.phase)?;
        let phase = phase.as_str().unwrap_or("?");
        ok &= phase == want;
        say!(
            opts.json,
            "  wave {}: {phase} (expected {want}); verdict {}",
            w.name,
            w.verdict.as_deref().unwrap_or("none")
        );
    }
    let mut namespaces = serde_json::Map::new();
    for (ns, wave) in NAMESPACES {
        let moved = mesh.is_moved(ns);
        let labels = api.labels(ns);
        // shop's wave is GO in both scenarios; pay's only when nothing changed.
        let want_moved = matches!(
            (ns, opts.scenario),
            ("shop", _) | ("pay", Scenario::Upgrade)
        );
        let want_labels = match (ns, want_moved) {
            (_, true) => json!({"istio.io/rev": to}),
            ("pay", false) => json!({"istio-injection": "enabled"}),
            (_, false) => json!({"istio.io/rev": from}),
        };
        ok &= moved == want_moved && labels == want_labels;
        let traffic = if moved { &to } else { &from };
        say!(
            opts.json,
            "  namespace {ns:<5} ({wave}): traffic on revision {traffic}; labels {labels}{}",
            if moved == want_moved && labels == want_labels {
                ""
            } else {
                "  UNEXPECTED"
            }
        );
        namespaces.insert(
            ns.to_owned(),
            json!({"wave": wave, "traffic_on": traffic, "labels": labels}),
        );
    }
    if opts.json {
        let doc = json!({
            "scenario": clap::ValueEnum::to_possible_value(&opts.scenario)
                .map(|v| v.get_name().to_owned()),
            "autopilot_exit_code": code,
            "expected_exit_code": want_code,
            "ok": ok,
            "namespaces": namespaces,
            "run": run,
        });
        println!("{}", serde_json::to_string_pretty(&doc)?); // the only stdout line under --json
    }
    say!(
        opts.json,
        "\nupgrade run {} in {:.1} s",
        if ok { "as expected" } else { "UNEXPECTED" },
        started.elapsed().as_secs_f64()
    );
    say!(opts.json, "  report: {base}/report");
    keep_up(&opts, &base).await;
    shutdown.cancel();
    daemon.join().await;
    Ok(ok)
}
