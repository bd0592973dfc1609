//! The store harness (`meshgate-bench store`): the daemon with a `[store]` scraping N simulated
//! targets, measured from outside while it commits: the round trip of engine commands (a create
//! the engine refuses, 422, which waits for nothing but the engine; and a create then delete,
//! 201 and 204, whose replies wait for their state to be stored) and the store writes per second.

use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use serde_json::json;

use crate::scale::{free_port, simulate, spawn, wait_ready, TempDir};
use crate::selfmetrics::metric_sum;

/// Harness options.
#[derive(Clone, Debug)]
pub struct StoreOptions {
    /// Sidecars in the simulated mesh (half per revision).
    pub sidecars: usize,
    /// Scrape interval (= analysis tick, = one store write per tick).
    pub interval: Duration,
    /// Measuring time.
    pub duration: Duration,
    /// Command probes per second (each kind).
    pub rate: f64,
    /// Directory for the store file (its disk is what is measured).
    pub dir: Option<std::path::PathBuf>,
}

/// Latency percentiles of one kind of probe, ms.
#[derive(Clone, Debug, Default)]
pub struct Latency {
    /// Probes sent.
    pub n: usize,
    /// Median.
    pub p50: f64,
    /// 99th percentile.
    pub p99: f64,
    /// Largest.
    pub max: f64,
}

fn latency(mut v: Vec<f64>) -> Latency {
    v.sort_by(f64::total_cmp);
    let q = |q: f64| v[((v.len() as f64 - 1.0) * q).round() as usize];
    Latency {
        n: v.len(),
        p50: q(0.5),
        p99: q(0.99),
        max: *v.last().unwrap_or(&0.0),
    }
}

/// Run once; prints and returns (refused create, create + delete, store writes per second).
pub async fn run(opts: &StoreOptions) -> anyhow::Result<(Latency, Latency, f64)> {
    let exe = crate::meshgate_exe()?;
    let base_dir = opts.dir.clone().unwrap_or_else(std::env::temp_dir);
    let dir = TempDir(base_dir.join(format!("meshgate-storebench-{}", std::process::id())));
    std::fs::create_dir_all(&dir.0)?;
    let sd = dir.0.join("targets.json");
    let sim = simulate(
        &exe,
        opts.sidecars / 2,
        20.0,
        &sd,
        &dir.0.join("sim.log"),
        "destination-only",
    )
    .await?;
    let port = free_port()?;
    let cfg = dir.0.join("meshgate.toml");
    let store = dir.0.join("state.redb");
    let mut text = format!(
        "[server]\nlisten = \"127.0.0.1:{port}\"\n[scrape]\ninterval = \"{}\"\ntimeout = \"{}\"\nconcurrency = 64\n[discovery]\nfile_sd = [\"{}\"]\n[judge]\nmin_duration = \"1h\"\nmax_duration = \"2h\"\n[store]\npath = {:?}\n",
        humantime::format_duration(opts.interval),
        humantime::format_duration(opts.interval.mul_f64(0.66)),
        sd.display(),
        store.display().to_string()
    );
    for i in 0..3 {
        text.push_str(&format!(
            "[[analyses]]\nname = \"store-{i}\"\nbaseline = '{{role=\"proxy\", revision=\"1-24-2\"}}'\ncanary = '{{role=\"proxy\", revision=\"1-25-0\"}}'\n"
        ));
    }
    std::fs::write(&cfg, text)?;
    let mut daemon = spawn(
        "meshgate serve",
        Command::new(&exe)
            .args(["serve", "--config", &cfg.display().to_string()])
            .env("MESHGATE_LOG", "warn"),
        &dir.0.join("meshgate.log"),
    )?;
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()?;
    let api = format!("http://127.0.0.1:{port}");
    wait_ready(&client, &api, &mut daemon).await?;
    // Three cycles, so every target's series keys are stored and writes are steady.
    tokio::time::sleep(opts.interval * 3).await;
    let m0 = client
        .get(format!("{api}/metrics"))
        .send()
        .await?
        .text()
        .await?;
    let (mut refused, mut created) = (Vec::new(), Vec::new());
    let period = Duration::from_secs_f64(1.0 / opts.rate);
    let end = Instant::now() + opts.duration;
    let mut i = 0u64;
    let sel = |r: &str| format!("{{role=\"proxy\", revision=\"{r}\"}}");
    while Instant::now() < end {
        let next = Instant::now() + period;
        daemon.alive()?;
        let bad = json!({"name": format!("bad-{i}"), "baseline": sel("1-24-2"), "canary": sel("1-25-0"), "checks": ["no-such-check"]});
        let t = Instant::now();
        let r = client
            .post(format!("{api}/v1/analyses"))
            .json(&bad)
            .send()
            .await?;
        refused.push(t.elapsed().as_secs_f64() * 1e3);
        if r.status().as_u16() != 422 {
            bail!("the refused create answered {}", r.status());
        }
        let good = json!({"name": format!("probe-{i}"), "baseline": sel("1-24-2"), "canary": sel("1-25-0")});
        let t = Instant::now();
        let r = client
            .post(format!("{api}/v1/analyses"))
            .json(&good)
            .send()
            .await?;
        let st = r.status().as_u16();
        let r2 = client
            .delete(format!("{api}/v1/analyses/probe-{i}"))
            .send()
            .await?;
        created.push(t.elapsed().as_secs_f64() * 1e3);
        if st != 201 || r2.status().as_u16() != 204 {
            bail!("create/delete answered {st} / {}", r2.status());
        }
        i += 1;
        tokio::time::sleep_until(next.into()).await;
    }
    let m1 = client
        .get(format!("{api}/metrics"))
        .send()
        .await?
        .text()
        .await?;
    let ticks = metric_sum(&m1, "meshgate_analysis_ticks_total")
        - metric_sum(&m0, "meshgate_analysis_ticks_total");
    let writes = metric_sum(&m1, "meshgate_store_write_duration_seconds_count")
        - metric_sum(&m0, "meshgate_store_write_duration_seconds_count");
    let write_s = metric_sum(&m1, "meshgate_store_write_duration_seconds_sum")
        - metric_sum(&m0, "meshgate_store_write_duration_seconds_sum");
    let secs = opts.duration.as_secs_f64();
    let targets = meshgate::discovery::read_file_sd(&sd)
        .context("reading the targets")?
        .len();
    let (a, b) = (latency(refused), latency(created));
    println!(
        "{} targets, tick {}, store on {}: {:.1} analysis ticks/s",
        targets,
        humantime::format_duration(opts.interval),
        dir.0.display(),
        ticks / secs
    );
    println!(
        "  refused create (422, engine only): n {} p50 {:.2} ms  p99 {:.2} ms  max {:.2} ms",
        a.n, a.p50, a.p99, a.max
    );
    println!(
        "  create + delete (201 + 204):       n {} p50 {:.2} ms  p99 {:.2} ms  max {:.2} ms",
        b.n, b.p50, b.p99, b.max
    );
    if writes > 0.0 {
        println!(
            "  store writes: {:.1}/s, mean {:.1} ms (meshgate_store_write_duration_seconds)",
            writes / secs,
            write_s / writes * 1e3
        );
    } else {
        println!("  store writes: not reported by this build");
    }
    drop(daemon);
    drop(sim);
    Ok((a, b, writes / secs))
}
