//! The multi-cluster demo: a primary and a remote cluster (simulated, on loopback), the daemon
//! configured with their topology, and one data-plane analysis per cluster plus one over both,
//! followed until every one is decided; then the version skew report per cluster.

use std::net::{IpAddr, Ipv4Addr};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use meshgate_core::api::VerdictDoc;
use serde_json::{json, Value};
use tokio_util::sync::CancellationToken;

use super::{demo_config, demo_mesh, get_skew, get_verdict, progress_line, DemoOptions, Scenario};
use crate::config::StaticTarget;
use crate::judge::Catalog;
use crate::sim::multicluster::{MultiClusterConfig, SimMultiCluster, UpgradeOrder};

/// The analyses: `(id, cluster or None for both)`, for each cluster that has canary sidecars.
fn analyses(targets: &[StaticTarget], canary_rev: &str) -> Vec<(String, Option<String>)> {
    let mut clusters: Vec<String> = targets
        .iter()
        .filter(|t| {
            t.labels.get("role").map(String::as_str) == Some("proxy")
                && t.labels.get("revision").map(String::as_str) == Some(canary_rev)
        })
        .filter_map(|t| t.labels.get("cluster").cloned())
        .collect();
    clusters.sort();
    clusters.dedup();
    let mut out: Vec<(String, Option<String>)> = clusters
        .into_iter()
        .map(|c| (format!("demo-mc-{c}"), Some(c)))
        .collect();
    out.push(("demo-mc-overall".into(), None));
    out
}

fn body(id: &str, cluster: Option<&str>, base_rev: &str, canary_rev: &str) -> Value {
    let c = cluster.map_or(String::new(), |c| format!(", cluster=\"{c}\""));
    json!({
        "name": id,
        "baseline": format!("{{role=\"proxy\", revision=\"{base_rev}\"{c}}}"),
        "canary": format!("{{role=\"proxy\", revision=\"{canary_rev}\"{c}}}"),
        "checks": ["error-rate", "latency-tail"],
    })
}

/// Run it; true when every verdict is the expected one (and, for the wrong order, the overall
/// reason names the upgrade-order rule).
pub async fn run(opts: DemoOptions) -> anyhow::Result<bool> {
    let started = Instant::now();
    let shutdown = CancellationToken::new();
    let _guard = shutdown.clone().drop_guard();
    let order = if opts.scenario == Scenario::Multicluster {
        UpgradeOrder::RemoteFirst
    } else {
        UpgradeOrder::PrimaryFirst
    };
    let template = demo_mesh(opts.seed);
    let (base_rev, canary_rev) = (
        template.baseline.revision.clone(),
        template.canary.revision.clone(),
    );
    let mc = SimMultiCluster::start(
        MultiClusterConfig::new(&template, order),
        IpAddr::V4(Ipv4Addr::LOCALHOST),
        shutdown.clone(),
    )
    .await
    .context("starting the simulated clusters")?;
    let targets: Vec<StaticTarget> = mc
        .targets()
        .into_iter()
        .map(|t| StaticTarget {
            url: t.url,
            labels: t.labels,
        })
        .collect();
    let mut cfg = demo_config(targets.clone());
    cfg.topology = mc.topology().clone();
    let listener = tokio::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await?;
    let daemon = crate::daemon::start(cfg, Catalog::builtin(), listener, shutdown.clone()).await?;
    let base = format!("http://{}", daemon.addr);

    say!(opts.json, "meshgate demo: {}", opts.scenario.describe());
    for cluster in ["primary", "remote"] {
        let of = |role: &str, rev: &str| {
            targets
                .iter()
                .filter(|t| {
                    t.labels["cluster"] == cluster
                        && t.labels["role"] == role
                        && t.labels["revision"] == rev
                })
                .count()
        };
        say!(opts.json,
            "  cluster {cluster}: sidecars {base_rev} x{}, {canary_rev} x{}; istiod {base_rev} x{}, {canary_rev} x{}",
            of("proxy", &base_rev),
            of("proxy", &canary_rev),
            of("istiod", &base_rev),
            of("istiod", &canary_rev)
        );
    }
    say!(opts.json, "  topology: remote's control plane is primary's istiod ([topology.remotes] remote = \"primary\"); daemon API on {base}");

    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()?;
    let list = analyses(&targets, &canary_rev);
    for (id, cluster) in &list {
        let resp = client
            .post(format!("{base}/v1/analyses"))
            .json(&body(id, cluster.as_deref(), &base_rev, &canary_rev))
            .send()
            .await?;
        if !resp.status().is_success() {
            bail!(
                "creating analysis {id} failed: {} {}",
                resp.status(),
                resp.text().await.unwrap_or_default()
            );
        }
        say!(
            opts.json,
            "  analysis {id} created ({})",
            cluster
                .as_deref()
                .map_or("both clusters".to_string(), |c| format!("cluster {c}"))
        );
    }
    say!(opts.json);

    let mut last_print = Instant::now() - Duration::from_secs(60);
    let docs: Vec<VerdictDoc> = loop {
        tokio::time::sleep(Duration::from_millis(1000)).await;
        let mut docs = Vec::new();
        for (id, _) in &list {
            docs.push(get_verdict(&client, &base, id).await?);
        }
        let all = docs.iter().all(|d| d.decided);
        if last_print.elapsed() >= Duration::from_secs(5) || all {
            for ((id, _), d) in list.iter().zip(&docs) {
                say!(opts.json, "{id:<18} {}", progress_line(d));
            }
            last_print = Instant::now();
        }
        if all {
            break docs;
        }
        if started.elapsed() > Duration::from_secs(180) {
            bail!("the analyses did not all decide within 180 s");
        }
    };
    if opts.json {
        println!("{}", serde_json::to_string_pretty(&docs)?);
    }
    let expected = opts.scenario.expected();
    let mut ok = true;
    say!(opts.json, "\n  verdicts per cluster and overall:");
    for ((id, _), d) in list.iter().zip(&docs) {
        let v = d.verdict.as_str();
        ok &= v == expected;
        say!(
            opts.json,
            "    {id:<18} {v:<12} after {:>4.0} s: {}",
            d.decided_after_seconds.unwrap_or(f64::NAN),
            d.reason
        );
    }
    let overall = docs.last().map_or("", |d| d.reason.as_str());
    if order == UpgradeOrder::RemoteFirst && !overall.contains("upgrade the primary first") {
        say!(
            opts.json,
            "  the overall reason does not name the upgrade-order rule"
        );
        ok = false;
    }
    let skew = get_skew(&client, &base).await?;
    say!(
        opts.json,
        "\n  version skew (GET /v1/skew): {} - {}",
        skew.verdict.as_str(),
        skew.reason
    );
    for (cluster, revs) in &skew.clusters {
        for r in revs {
            say!(
                opts.json,
                "    cluster {cluster}, revision {}: control plane in {}, {} istiod(s), proxies {}",
                r.revision,
                r.control_plane_cluster,
                r.istiods.len(),
                serde_json::to_string(&r.proxies)?
            );
        }
    }
    say!(
        opts.json,
        "\nexpected {expected} everywhere ({:.1} s in all): {}",
        started.elapsed().as_secs_f64(),
        if ok { "ok" } else { "UNEXPECTED" }
    );
    say!(opts.json, "  report: {base}/report");
    super::keep_up(&opts, &base).await;
    shutdown.cancel();
    daemon.join().await;
    Ok(ok)
}
