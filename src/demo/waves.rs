//! The namespace-wave demo: a mesh of three namespaces whose services have different inherent
//! 5xx rates, moved to the new revision one wave at a time, each wave judged by the before/after
//! design (docs/statistics.md, section 3b) exactly as `[plan]` and `deploy/upgrade.sh` run it:
//! the wave's analysis is created while its namespace is still on the old revision, the
//! namespace moves after a pre-move window, and the analysis decides.
//!
//! `waves`: the upgrade changes nothing; the high-error namespace (1% 5xx) and then the low-error
//! one (0.05%) must each end GO. `wave-regression`: the new revision makes the low-error
//! namespace's 5xx rate 4x; its wave must end NO-GO, naming its workloads.

use std::net::{IpAddr, Ipv4Addr};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use meshgate_core::api::VerdictDoc;
use serde_json::json;
use tokio_util::sync::CancellationToken;

use super::{demo_config, get_verdict, progress_line, DemoOptions, Scenario};
use crate::config::StaticTarget;
use crate::judge::Catalog;
use crate::sim::{Cohort, Fault, SimConfig, SimMesh};

/// Seconds each wave's analysis watches its namespace on the old revision before the move.
const PRE_MOVE_S: u64 = 45;
/// Requests per second per sidecar: enough 5xx at 0.05% for a tight pre-move bound in 45 s.
const RPS: f64 = 200_000.0;
/// The mesh's base 5xx rate (namespace factors below multiply it).
const BASE_ERROR_RATE: f64 = 0.001;

/// The mesh: namespaces `shop` (0.1% 5xx), `pay` (1%) and `ads` (0.05%), two workloads each,
/// one sidecar per workload and revision; the canary revision's pods idle until their namespace
/// moves.
fn mesh(seed: u64) -> SimConfig {
    let mut sim = SimConfig::small(seed, 6, RPS);
    sim.namespaces = vec!["shop".into(), "pay".into(), "ads".into()];
    sim.error_rate = BASE_ERROR_RATE;
    sim.namespace_error_factors = [("pay".to_string(), 10.0), ("ads".to_string(), 0.5)].into();
    sim.staged = true;
    sim
}

/// The waves and the verdict each must reach.
fn waves(scenario: Scenario) -> Vec<(&'static str, &'static str)> {
    match scenario {
        Scenario::WaveRegression => vec![("ads", "NO-GO")],
        _ => vec![("pay", "GO"), ("ads", "GO")],
    }
}

/// Run it; true when every wave's verdict is the expected one.
pub async fn run(opts: DemoOptions) -> anyhow::Result<bool> {
    let started = Instant::now();
    let shutdown = CancellationToken::new();
    let _guard = shutdown.clone().drop_guard();
    let sim = mesh(opts.seed);
    let (base_rev, canary_rev) = (sim.baseline.revision.clone(), sim.canary.revision.clone());
    let mesh = SimMesh::start(sim, IpAddr::V4(Ipv4Addr::LOCALHOST), shutdown.clone())
        .await
        .context("starting the simulated mesh")?;
    if opts.scenario == Scenario::WaveRegression {
        // The new revision's sidecars serve 4x the 5xx of the old (only moved namespaces' pods
        // serve on it).
        mesh.set_fault(
            Cohort::Canary,
            Fault {
                error_rate: Some(4.0 * BASE_ERROR_RATE),
                latency_factor: 1.0,
            },
        );
    }
    let targets: Vec<StaticTarget> = mesh.targets().into_iter().map(StaticTarget::from).collect();
    let mut cfg = demo_config(targets);
    // The simulated sidecars serve 200,000 req/s each (about 300,000 series increments a second
    // with the outbound side), above the plausibility ceiling meant for real ones: raised here,
    // for the simulation only, so the pre-move windows fill in seconds.
    cfg.scrape.limits.max_increase_per_second = 1_000_000.0;
    let listener = tokio::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await?;
    let daemon = crate::daemon::start(cfg, Catalog::builtin(), listener, shutdown.clone()).await?;
    let base = format!("http://{}", daemon.addr);
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()?;
    say!(
        opts.json,
        "meshgate demo: namespace waves, {}",
        if opts.scenario == Scenario::WaveRegression {
            "the new revision makes the low-error namespace ads 4x worse"
        } else {
            "an upgrade that changes nothing"
        }
    );
    say!(opts.json,
        "  simulated mesh: namespaces shop (0.10% 5xx), pay (1.00%), ads (0.05%), two workloads each, {} req/s per sidecar; revisions {base_rev} -> {canary_rev}; daemon API on {base}",
        RPS
    );
    let mut all_ok = true;
    let mut docs: Vec<VerdictDoc> = Vec::new();
    for (i, (ns, expected)) in waves(opts.scenario).into_iter().enumerate() {
        let id = format!("demo-wave-{}-{ns}", i + 1);
        let body = json!({
            "name": id,
            "baseline": format!("{{role=\"proxy\", revision=\"{base_rev}\"}}"),
            "canary": format!("{{role=\"proxy\", revision=\"{canary_rev}\"}}"),
            "checks": ["error-rate", "latency-tail"],
            "design": "before_after",
            "moving": [ns],
            "max_duration": "300s",
        });
        let resp = client
            .post(format!("{base}/v1/analyses"))
            .json(&body)
            .send()
            .await?;
        if !resp.status().is_success() {
            bail!(
                "creating {id} failed: {} {}",
                resp.status(),
                resp.text().await.unwrap_or_default()
            );
        }
        say!(opts.json,
            "\n== wave {}: namespace {ns}; analysis {id} (design before_after) created while {ns} is still on {base_rev}; moving it in {PRE_MOVE_S} s",
            i + 1
        );
        tokio::time::sleep(Duration::from_secs(PRE_MOVE_S)).await;
        mesh.move_namespace(ns);
        say!(
            opts.json,
            "   {ns} moved to {canary_rev} (its pods restarted onto the new sidecar)"
        );
        let wave_started = Instant::now();
        let mut last_print = Instant::now();
        let doc: VerdictDoc = loop {
            tokio::time::sleep(Duration::from_millis(1000)).await;
            let doc = get_verdict(&client, &base, &id).await?;
            if doc.decided {
                break doc;
            }
            if last_print.elapsed() >= Duration::from_secs(10) {
                say!(opts.json, "   {}", progress_line(&doc));
                say!(opts.json, "   {}", doc.reason);
                last_print = Instant::now();
            }
            if wave_started.elapsed() > Duration::from_secs(300) {
                bail!("wave {} did not decide within 300 s", i + 1);
            }
        };
        let verdict = doc.verdict.as_str();
        let ok = verdict == expected;
        all_ok &= ok;
        say!(opts.json, "   verdict {verdict}: {}", doc.reason);
        for s in doc.checks.first().into_iter().flat_map(|c| &c.strata) {
            say!(
                opts.json,
                "     {:<16} {:<18} before {:>7.3}%  after {:>7.3}%  after/before vs the others {}",
                s.name,
                s.status.as_str(),
                100.0 * s.baseline.rate.unwrap_or(0.0),
                100.0 * s.canary.rate.unwrap_or(0.0),
                s.ratio.map_or("-".into(), |r| format!("{r:.2}")),
            );
        }
        say!(
            opts.json,
            "   expected {expected}: {}",
            if ok { "ok" } else { "UNEXPECTED" }
        );
        let stop = !ok || verdict != "GO";
        docs.push(doc);
        if stop {
            break;
        }
    }
    if opts.json {
        // One document on stdout: every wave's verdict, in order.
        println!("{}", serde_json::to_string_pretty(&docs)?);
    }
    say!(
        opts.json,
        "\nwaves {} in {:.0} s",
        if all_ok { "as expected" } else { "UNEXPECTED" },
        started.elapsed().as_secs_f64()
    );
    say!(opts.json, "  report: {base}/report");
    super::keep_up(&opts, &base).await;
    shutdown.cancel();
    daemon.join().await;
    Ok(all_ok)
}
