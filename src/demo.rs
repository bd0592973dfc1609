//! The built-in demo: a simulated mesh on loopback, the daemon against it over real HTTP, and an
//! analysis followed through the API until its verdict.

use std::io::{IsTerminal, Write};
use std::net::{IpAddr, Ipv4Addr};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use meshgate_core::api::{SkewReport, VerdictDoc};
use serde_json::{json, Value};
use tokio_util::sync::CancellationToken;

use crate::client::read_doc;
use crate::config::{Config, StaticTarget};
use crate::judge::{Catalog, Counts};
use crate::sim::{Cohort, Fault, IstiodFault, SimConfig, SimMesh};

/// A progress or banner line: on stdout, or on stderr under `--json` (stdout then holds only the
/// JSON document, for `demo --json | jq`).
macro_rules! say {
    ($json:expr) => {
        if $json { eprintln!() } else { println!() }
    };
    ($json:expr, $($arg:tt)*) => {
        if $json { eprintln!($($arg)*) } else { println!($($arg)*) }
    };
}

mod multicluster;
mod upgrade;
mod waves;

/// Which regression the demo injects into the canary.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Scenario {
    /// 5xx share 0.1% -> 0.6% on the canary.
    Errors,
    /// Canary latency x1.6.
    Latency,
    /// No fault: must end in GO.
    Healthy,
    /// The canary istiod is sick: xDS rejects and slow convergence (istiod against istiod).
    ControlPlane,
    /// The canary sidecars run 1.26.0 while their istiod runs 1.25.0: data plane ahead.
    Skew,
    /// Primary-remote clusters; the remote's sidecars run the new revision before the primary
    /// serves it: NO-GO naming the upgrade-order rule.
    Multicluster,
    /// Primary-remote clusters upgraded in order (primary's istiod first): GO per cluster and
    /// overall.
    MulticlusterHealthy,
    /// Namespaces with different inherent 5xx rates moved wave by wave, an upgrade that changes
    /// nothing: every wave GO (the before/after design).
    Waves,
    /// The new revision makes a low-error namespace 4x worse: its wave NO-GO, naming it.
    WaveRegression,
    /// The autopilot (`meshgate upgrade --execute`) drives a 2-wave plan through a Kubernetes
    /// API double, an upgrade that changes nothing: both waves GO, exit 0.
    Upgrade,
    /// The autopilot's run where the new revision turns 4x worse after wave 1: wave 2 NO-GO,
    /// rolled back (labels restored, workloads restarted, traffic back), the run exits 1.
    UpgradeRegression,
}

impl Scenario {
    /// The verdict the demo must reach.
    pub fn expected(self) -> &'static str {
        match self {
            Scenario::Healthy
            | Scenario::MulticlusterHealthy
            | Scenario::Waves
            | Scenario::Upgrade => "GO",
            _ => "NO-GO",
        }
    }

    fn fault(self) -> Fault {
        match self {
            Scenario::Errors => Fault {
                error_rate: Some(0.006),
                latency_factor: 1.0,
            },
            Scenario::Latency => Fault {
                error_rate: None,
                latency_factor: 1.6,
            },
            Scenario::Healthy
            | Scenario::ControlPlane
            | Scenario::Skew
            | Scenario::Multicluster
            | Scenario::MulticlusterHealthy
            | Scenario::Waves
            | Scenario::WaveRegression
            | Scenario::Upgrade
            | Scenario::UpgradeRegression => Fault {
                error_rate: None,
                latency_factor: 1.0,
            },
        }
    }

    /// The control-plane fault of the canary istiod.
    fn istiod_fault(self) -> IstiodFault {
        match self {
            Scenario::ControlPlane => IstiodFault {
                rejects_per_min: 60.0,
                convergence_factor: 4.0,
                ..Default::default()
            },
            _ => IstiodFault::default(),
        }
    }

    /// The analysis request: data-plane checks on the sidecars, or control-plane checks on istiod.
    fn analysis(self, base_rev: &str, canary_rev: &str) -> Value {
        let id = format!("demo-{}", format!("{self:?}").to_lowercase());
        match self {
            Scenario::ControlPlane => json!({
                "name": id,
                "baseline": format!("{{role=\"istiod\", revision=\"{base_rev}\"}}"),
                "canary": format!("{{role=\"istiod\", revision=\"{canary_rev}\"}}"),
                "checks": ["istiod-xds-rejects", "istiod-convergence", "istiod-push-errors", "istiod-internal-errors"],
            }),
            _ => json!({
                "name": id,
                "baseline": format!("{{role=\"proxy\", revision=\"{base_rev}\"}}"),
                "canary": format!("{{role=\"proxy\", revision=\"{canary_rev}\"}}"),
                "checks": ["error-rate", "latency-tail"],
                // Decided before the upgrade: p99 latency above 1.5 x the baseline's rolls back.
                "rollback": [{"name": "p99-latency-1.5x", "check": "latency-tail", "when": "quantile_ratio", "quantile": 0.99, "factor": 1.5}],
            }),
        }
    }

    fn describe(self) -> &'static str {
        match self {
            Scenario::Errors => "canary 5xx share raised from 0.10% to 0.60%",
            Scenario::Latency => "canary latency multiplied by 1.6",
            Scenario::Healthy => "no fault injected",
            Scenario::ControlPlane => {
                "canary istiod: 60 xDS rejects/min and convergence 4x slower (istiod against istiod)"
            }
            Scenario::Skew => "canary sidecars run 1.26.0 while their istiod runs 1.25.0 (data plane ahead)",
            Scenario::Multicluster => "primary-remote clusters: the remote's sidecars run 1-25-0 before the primary runs its istiod",
            Scenario::MulticlusterHealthy => "primary-remote clusters upgraded in order: the primary's 1-25-0 istiod first, then sidecars in both",
            Scenario::Waves => "namespaces with different 5xx rates moved wave by wave, nothing changed",
            Scenario::WaveRegression => "a wave whose low-error namespace the new revision makes 4x worse",
            Scenario::Upgrade => "the autopilot drives a 2-wave plan through a Kubernetes API double, nothing changed",
            Scenario::UpgradeRegression => "the autopilot's wave 2 turns 4x worse and is rolled back",
        }
    }
}

/// Demo options.
#[derive(Clone, Debug)]
pub struct DemoOptions {
    /// Scenario.
    pub scenario: Scenario,
    /// Traffic seed.
    pub seed: u64,
    /// Print the final verdict document as JSON.
    pub json: bool,
    /// Keep the daemon up after the verdict, until Ctrl-C, so a person can look at the report.
    pub keep: bool,
}

/// With `--keep`, wait for Ctrl-C (or SIGTERM) before the daemon stops, saying where the report is.
async fn keep_up(opts: &DemoOptions, base: &str) {
    if !opts.keep {
        return;
    }
    // The handlers are in place before the line that says Ctrl-C stops the demo: a Ctrl-C
    // right after it must not find the default action (the process killed by the signal).
    #[cfg(unix)]
    let handlers = {
        use tokio::signal::unix::{signal, SignalKind};
        (
            signal(SignalKind::interrupt()),
            signal(SignalKind::terminate()),
        )
    };
    say!(
        opts.json,
        "
  --keep: the daemon stays up; report at {base}/report (Ctrl-C to stop)"
    );
    #[cfg(unix)]
    match handlers {
        (Ok(mut int), Ok(mut term)) => {
            tokio::select! {
                _ = int.recv() => {}
                _ = term.recv() => {}
            }
        }
        (Ok(mut int), Err(_)) => {
            int.recv().await;
        }
        (Err(_), _) => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
    #[cfg(not(unix))]
    let _ = tokio::signal::ctrl_c().await;
}

/// The daemon configuration the demo runs with: 1 s scrapes and ticks, GO after 30 s at the
/// earliest, INCONCLUSIVE at 150 s.
pub fn demo_config(targets: Vec<StaticTarget>) -> Config {
    let mut cfg = Config::from_toml(
        r#"
        [scrape]
        interval = "1s"
        timeout = "900ms"
        jitter = 0.05
        [judge]
        alpha = 0.05
        min_duration = "30s"
        max_duration = "150s"
        min_exposure = 1000
        "#,
        "demo",
    )
    .expect("the demo config is valid");
    cfg.targets = targets;
    cfg
}

/// The simulated mesh of the demo: 3 sidecars per revision, 10,000 requests/s each (enough 5xx
/// for every workload to be certified on its own within the demo's 150 s).
pub fn demo_mesh(seed: u64) -> SimConfig {
    let mut sim = SimConfig::small(seed, 3, 10_000.0);
    // Each istiod serves 200 proxies (the scraped sidecars among them), as a real one serves
    // far more proxies than one scrapes: ~100 pushes/s and ~25 convergences/s to compare.
    sim.baseline.connected_proxies = Some(200);
    sim.canary.connected_proxies = Some(200);
    sim
}

/// Run the demo; true when the verdict is the expected one.
pub async fn run(opts: DemoOptions) -> anyhow::Result<bool> {
    if matches!(
        opts.scenario,
        Scenario::Multicluster | Scenario::MulticlusterHealthy
    ) {
        return multicluster::run(opts).await;
    }
    if matches!(opts.scenario, Scenario::Waves | Scenario::WaveRegression) {
        return waves::run(opts).await;
    }
    if matches!(
        opts.scenario,
        Scenario::Upgrade | Scenario::UpgradeRegression
    ) {
        return upgrade::run(opts).await;
    }
    let started = Instant::now();
    let shutdown = CancellationToken::new();
    let _guard = shutdown.clone().drop_guard();
    let mut sim_cfg = demo_mesh(opts.seed);
    if opts.scenario == Scenario::Skew {
        sim_cfg.canary.proxy_version = Some("1.26.0".into());
    }
    let (base_rev, canary_rev) = (
        sim_cfg.baseline.revision.clone(),
        sim_cfg.canary.revision.clone(),
    );
    let mesh = SimMesh::start(sim_cfg, IpAddr::V4(Ipv4Addr::LOCALHOST), shutdown.clone())
        .await
        .context("starting the simulated mesh")?;
    mesh.set_fault(Cohort::Canary, opts.scenario.fault());
    mesh.set_istiod_fault(Cohort::Canary, opts.scenario.istiod_fault());
    let targets: Vec<StaticTarget> = mesh.targets().into_iter().map(StaticTarget::from).collect();
    let proxies = targets
        .iter()
        .filter(|t| t.labels.get("role").map(String::as_str) == Some("proxy"))
        .count();
    let n_targets = targets.len();
    let cfg = demo_config(targets);
    let listener = tokio::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await?;
    let daemon = crate::daemon::start(cfg, Catalog::builtin(), listener, shutdown.clone()).await?;
    let base = format!("http://{}", daemon.addr);

    say!(opts.json, "meshgate demo: {}", opts.scenario.describe());
    say!(opts.json,
        "  simulated mesh: {} sidecars ({} per revision, 10,000 req/s each) and {} istiod, on 127.0.0.1",
        proxies,
        proxies / 2,
        n_targets - proxies
    );
    say!(
        opts.json,
        "  baseline revision {base_rev}, canary revision {canary_rev}; daemon API on {base}"
    );

    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()?;
    let body = opts.scenario.analysis(&base_rev, &canary_rev);
    let id = body["name"].as_str().unwrap_or_default().to_owned();
    let resp = client
        .post(format!("{base}/v1/analyses"))
        .json(&body)
        .send()
        .await?;
    if !resp.status().is_success() {
        bail!(
            "creating the analysis failed: {} {}",
            resp.status(),
            resp.text().await.unwrap_or_default()
        );
    }
    say!(opts.json, "  analysis {id} created: POST {base}/v1/analyses; following GET {base}/v1/analyses/{id}/verdict");
    say!(
        opts.json,
        "  report (in a browser): {base}/report/analyses/{id}\n"
    );

    let tty = !opts.json && std::io::stdout().is_terminal();
    let mut last_print = Instant::now() - Duration::from_secs(60);
    let doc: VerdictDoc = loop {
        tokio::time::sleep(Duration::from_millis(1000)).await;
        let doc = get_verdict(&client, &base, &id).await?;
        let line = progress_line(&doc);
        if tty {
            print!("\r\x1b[2K{line}");
            std::io::stdout().flush().ok();
        } else if last_print.elapsed() >= Duration::from_secs(5) || doc.decided {
            say!(opts.json, "{line}");
            last_print = Instant::now();
        }
        if doc.decided {
            if tty {
                say!(opts.json);
            }
            break doc;
        }
        if started.elapsed() > Duration::from_secs(180) {
            bail!("the analysis did not decide within 180 s");
        }
    };
    say!(opts.json);
    if opts.json {
        println!("{}", serde_json::to_string_pretty(&doc)?); // the only stdout line under --json
    } else {
        print_evidence(&doc);
    }
    let skew = get_skew(&client, &base).await?;
    say!(
        opts.json,
        "\n  version skew (GET /v1/skew): {} - {}",
        skew.verdict.as_str(),
        skew.reason
    );
    let verdict = doc.verdict.as_str();
    let ok = verdict == opts.scenario.expected();
    say!(
        opts.json,
        "\nverdict {verdict} after {:.0} s of analysis ({:.1} s in all); expected {}: {}",
        doc.decided_after_seconds.unwrap_or(f64::NAN),
        started.elapsed().as_secs_f64(),
        opts.scenario.expected(),
        if ok { "ok" } else { "UNEXPECTED" }
    );
    say!(opts.json, "  report: {base}/report/analyses/{id}");
    keep_up(&opts, &base).await;
    shutdown.cancel();
    daemon.join().await;
    Ok(ok)
}

fn fmt_count(x: f64) -> String {
    if x >= 1e6 {
        format!("{:.2}M", x / 1e6)
    } else if x >= 1e4 {
        format!("{:.0}k", x / 1e3)
    } else {
        format!("{x:.0}")
    }
}

/// `GET {base}/v1/analyses/{id}/verdict`, read as the verdict document.
pub(crate) async fn get_verdict(
    client: &reqwest::Client,
    base: &str,
    id: &str,
) -> anyhow::Result<VerdictDoc> {
    let url = format!("{base}/v1/analyses/{id}/verdict");
    let r = client.get(&url).send().await?;
    Ok(read_doc(&format!("GET {url}"), r).await?)
}

/// `GET {base}/v1/skew`, read as the skew report.
pub(crate) async fn get_skew(client: &reqwest::Client, base: &str) -> anyhow::Result<SkewReport> {
    let url = format!("{base}/v1/skew");
    let r = client.get(&url).send().await?;
    Ok(read_doc(&format!("GET {url}"), r).await?)
}

/// One status line from a verdict document.
pub fn progress_line(doc: &VerdictDoc) -> String {
    let mut s = format!(
        "[{:>4.0}s] {:<12} E = {:>8.2} / {:.0}",
        doc.elapsed_seconds,
        doc.verdict.as_str(),
        doc.e_value,
        doc.threshold,
    );
    let none = Counts::default();
    for c in &doc.checks {
        let (b, k) = c
            .tests
            .first()
            .map_or((&none, &none), |t| (&t.baseline, &t.canary));
        s.push_str(&format!(
            " | {} e={:.2} {} base {}/{} canary {}/{}",
            c.name,
            c.e_value,
            c.status.as_str(),
            fmt_count(b.events),
            fmt_count(b.exposure),
            fmt_count(k.events),
            fmt_count(k.exposure),
        ));
    }
    let q = &doc.data_quality;
    s.push_str(&format!(
        " | targets fresh {}/{}",
        q.baseline.fresh + q.canary.fresh,
        q.baseline.targets + q.canary.targets
    ));
    s
}

fn print_evidence(doc: &VerdictDoc) {
    println!("verdict: {}", doc.verdict.as_str());
    println!("reason:  {}", doc.reason);
    println!(
        "combined e-value {:.3} (NO-GO at {:.0}, alpha {})",
        doc.e_value, doc.threshold, doc.alpha
    );
    for c in &doc.checks {
        println!(
            "\n  check {} ({}, critical {}, weight {:.2}): e = {:.3}, status {}",
            c.name,
            c.kind.as_str(),
            c.critical,
            c.weight,
            c.e_value,
            c.status.as_str()
        );
        println!("    {}", c.reason);
        println!(
            "    {:<10} {:>12} {:>12} {:>9} {:>12} {:>9} {:>11} {:>10} {:>10}",
            "test",
            "base events",
            "base n",
            "base %",
            "canary ev",
            "canary %",
            "e-value",
            "ratio",
            "bound"
        );
        for t in &c.tests {
            let name = match t.boundary {
                Some(b) if c.name.starts_with("istiod-") => format!("> {b} s"),
                Some(b) => format!("> {b} ms"),
                None => "rate".into(),
            };
            // The lower bound is always there; the upper one is null when unbounded.
            let bound = match t.ratio_upper_bound {
                Some(u) => format!("{:.2}..{u:.2}", t.ratio_lower_bound),
                None => format!("{:.2}..inf", t.ratio_lower_bound),
            };
            println!(
                "    {:<10} {:>12} {:>12} {:>8.3}% {:>12} {:>8.3}% {:>11.3} {:>10} {:>10} {}",
                name,
                fmt_count(t.baseline.events),
                fmt_count(t.baseline.exposure),
                t.baseline.rate.unwrap_or(0.0) * 100.0,
                fmt_count(t.canary.events),
                t.canary.rate.unwrap_or(0.0) * 100.0,
                t.e_value,
                t.ratio_estimate.map_or("-".into(), |r| format!("{r:.2}")),
                bound,
                t.certified_by
                    .map_or(String::new(), |c| format!("certified by {}", c.as_str())),
            );
        }
        if let Some(r) = &c.resolution {
            println!("    resolution: {r}");
        }
    }
    let (b, k) = (&doc.data_quality.baseline, &doc.data_quality.canary);
    println!(
        "\n  data quality: baseline {} targets ({} fresh, {} stale, {} unreachable, {} resets); canary {} targets ({} fresh, {} stale, {} unreachable, {} resets)",
        b.targets, b.fresh, b.stale, b.unreachable, b.resets,
        k.targets, k.fresh, k.stale, k.unreachable, k.resets
    );
}
