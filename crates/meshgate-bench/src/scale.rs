//! The scale harness (`meshgate bench-scale`): a simulated mesh of N sidecars in one process,
//! meshgate scraping all of them in another (and a real Prometheus server in a third, scraping
//! the same targets), each measured from /proc so the simulator's CPU is kept apart.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use serde_json::Value;

use crate::selfmetrics::{histogram_buckets, metric_sum, quantile_upper};

/// Harness options.
#[derive(Clone, Debug)]
pub struct ScaleOptions {
    /// Sidecar counts to run, one row each.
    pub sizes: Vec<usize>,
    /// Scrape interval (meshgate and Prometheus).
    pub interval: Duration,
    /// Cycles measured per size.
    pub cycles: u32,
    /// Cycles left out before measuring.
    pub warmup_cycles: u32,
    /// Analyses running in the daemon.
    pub analyses: usize,
    /// Also run a Prometheus server on the same targets, when its binary exists.
    pub prometheus: bool,
    /// `meshgate simulate --histogram-tags`.
    pub histogram_tags: String,
}

/// One row of the table.
#[derive(Clone, Debug, Default)]
pub struct Row {
    /// Sidecars.
    pub sidecars: usize,
    /// Targets scraped (sidecars plus istiods).
    pub targets: usize,
    /// Page bytes read per cycle, after decompression.
    pub bytes_per_cycle: f64,
    /// meshgate CPU seconds per cycle.
    pub cpu_per_cycle: f64,
    /// meshgate peak RSS, MB.
    pub peak_rss_mb: f64,
    /// Series tracked in all.
    pub series: u64,
    /// Scrape duration percentiles over targets (their last scrape), ms.
    pub scrape_p50_ms: f64,
    /// Same, p99.
    pub scrape_p99_ms: f64,
    /// Scrapes that failed or did not happen in the window.
    pub missed: u64,
    /// Scrape-to-verdict delay, p50 and p99 upper bucket bounds, s.
    pub delay_p50_s: f64,
    /// Same, p99.
    pub delay_p99_s: f64,
    /// The Prometheus servers on the same targets, when they ran.
    pub prometheus: Vec<PromRow>,
    /// Simulator CPU seconds per cycle (kept apart, for reference).
    pub sim_cpu_per_cycle: f64,
}

/// The families meshgate's default pack and Istio observer read: what the same-families
/// Prometheus keeps.
pub const SAME_FAMILIES: &str =
    "istio_requests_total|istio_request_duration_milliseconds_(bucket|count|sum)|istio_build|pilot_.*|citadel_.*";

/// Which Prometheus.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PromKind {
    /// `metric_relabel_configs` keeps only [`SAME_FAMILIES`].
    SameFamilies,
    /// Stores every series it scrapes.
    Everything,
}

impl PromKind {
    fn name(self) -> &'static str {
        match self {
            PromKind::SameFamilies => "same-families",
            PromKind::Everything => "everything",
        }
    }
}

/// One Prometheus server's figures.
#[derive(Clone, Debug)]
pub struct PromRow {
    /// Which one.
    pub kind: PromKind,
    /// CPU seconds per cycle.
    pub cpu_per_cycle: f64,
    /// Peak RSS, MB.
    pub peak_rss_mb: f64,
    /// Its targets whose `up` is 1 at the end, and all its targets.
    pub targets_up: u64,
    /// All its targets.
    pub targets: u64,
    /// Samples its last scrapes kept, summed over its targets (its series, for counters).
    pub series: u64,
}

/// One number from Prometheus' query API (an instant vector of one sample, or nothing: 0).
async fn prom_scalar(client: &reqwest::Client, base: &str, query: &str) -> anyhow::Result<f64> {
    let v = client
        .get(format!("{base}/api/v1/query"))
        .query(&[("query", query)])
        .send()
        .await?
        .error_for_status()?
        .json::<Value>()
        .await?;
    let x = v["data"]["result"]
        .get(0)
        .and_then(|r| r["value"][1].as_str())
        .map_or(Ok(0.0), str::parse)
        .with_context(|| format!("prometheus answered {v} to {query}"))?;
    Ok(x)
}

/// A child process (simulator, daemon, Prometheus) killed on drop; its stderr goes to `log`.
pub(crate) struct Proc {
    child: Child,
    name: &'static str,
    log: PathBuf,
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Proc {
    pub(crate) fn pid(&self) -> u32 {
        self.child.id()
    }

    pub(crate) fn alive(&mut self) -> anyhow::Result<()> {
        if let Some(status) = self.child.try_wait()? {
            let log = std::fs::read_to_string(&self.log).unwrap_or_default();
            let tail: Vec<&str> = log.lines().rev().take(10).collect();
            bail!(
                "{} exited early: {status}; its last lines:\n{}",
                self.name,
                tail.into_iter().rev().collect::<Vec<_>>().join("\n")
            );
        }
        Ok(())
    }
}

/// CPU seconds (user + system) of a process, from /proc/PID/stat (USER_HZ = 100 on Linux).
pub fn cpu_seconds(pid: u32) -> anyhow::Result<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // The command name may hold spaces: fields start after the closing parenthesis.
    let rest = &stat[stat.rfind(')').context("bad /proc stat")? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let utime: f64 = f[11].parse()?;
    let stime: f64 = f[12].parse()?;
    Ok((utime + stime) / 100.0)
}

/// A field of /proc/PID/status in kB (VmRSS, VmHWM).
pub fn status_kb(pid: u32, field: &str) -> anyhow::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    status
        .lines()
        .find(|l| l.starts_with(field))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .with_context(|| format!("no {field} in /proc/{pid}/status"))
}

pub(crate) fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind(("127.0.0.1", 0))?
        .local_addr()?
        .port())
}

pub(crate) fn spawn(name: &'static str, cmd: &mut Command, log: &Path) -> anyhow::Result<Proc> {
    let out = std::fs::File::create(log)?;
    let child = cmd
        .stdout(Stdio::null())
        .stderr(out)
        .spawn()
        .with_context(|| format!("starting {name}"))?;
    Ok(Proc {
        child,
        name,
        log: log.to_path_buf(),
    })
}

async fn get_json(client: &reqwest::Client, url: &str) -> anyhow::Result<Value> {
    Ok(client
        .get(url)
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?)
}

fn percentile(v: &mut [f64], q: f64) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(f64::total_cmp);
    v[((v.len() - 1) as f64 * q).round() as usize]
}

/// Run every size and return the rows.
pub async fn run(opts: &ScaleOptions) -> anyhow::Result<Vec<Row>> {
    let exe = crate::meshgate_exe()?;
    let mut rows = Vec::new();
    for &n in &opts.sizes {
        let row = run_one(&exe, n, opts)
            .await
            .with_context(|| format!("size {n}"))?;
        print_row(&row, opts.interval);
        rows.push(row);
    }
    Ok(rows)
}

async fn run_one(exe: &Path, n: usize, opts: &ScaleOptions) -> anyhow::Result<Row> {
    let dir_path = std::env::temp_dir().join(format!("meshgate-scale-{}-{n}", std::process::id()));
    std::fs::create_dir_all(&dir_path)?;
    let dir = TempDir(dir_path);
    let sd = dir.path().join("targets.json");
    eprintln!("== {n} sidecars: starting the simulated mesh");
    let mut sim = simulate(
        exe,
        n / 2,
        20.0,
        &sd,
        &dir.path().join("sim.log"),
        &opts.histogram_tags,
    )
    .await?;
    let targets = meshgate::discovery::read_file_sd(&sd)?.len();

    let port = free_port()?;
    let cfg_path = dir.path().join("meshgate.toml");
    let mut cfg = format!(
        "[server]\nlisten = \"127.0.0.1:{port}\"\n[scrape]\ninterval = \"{}\"\ntimeout = \"{}\"\nconcurrency = 64\n[discovery]\nfile_sd = [\"{}\"]\n[judge]\nmin_duration = \"1h\"\nmax_duration = \"2h\"\n",
        humantime::format_duration(opts.interval),
        humantime::format_duration(opts.interval.mul_f64(0.66)),
        sd.display()
    );
    for i in 0..opts.analyses {
        cfg.push_str(&format!(
            "[[analyses]]\nname = \"scale-{i}\"\nbaseline = '{{role=\"proxy\", revision=\"1-24-2\"}}'\ncanary = '{{role=\"proxy\", revision=\"1-25-0\"}}'\n"
        ));
    }
    std::fs::write(&cfg_path, cfg)?;
    eprintln!(
        "   starting meshgate ({targets} targets, {} analyses)",
        opts.analyses
    );
    let mut daemon = spawn(
        "meshgate serve",
        Command::new(exe)
            .args(["serve", "--config", &cfg_path.display().to_string()])
            .env("MESHGATE_LOG", "warn"),
        &dir.path().join("meshgate.log"),
    )?;

    let prom_bin = Path::new("/usr/bin/prometheus");
    // Two Prometheus servers on the same targets when asked for: one keeping only the families
    // meshgate reads (metric_relabel_configs keep, the fair comparison), one storing everything.
    let mut proms: Vec<(PromKind, u16, Proc)> = Vec::new();
    if opts.prometheus && prom_bin.exists() {
        for kind in [PromKind::SameFamilies, PromKind::Everything] {
            let pport = free_port()?;
            let name = kind.name();
            let pcfg = dir.path().join(format!("prometheus-{name}.yml"));
            let keep = match kind {
                PromKind::SameFamilies => format!(
                    "    metric_relabel_configs:\n      - source_labels: [__name__]\n        regex: '{SAME_FAMILIES}'\n        action: keep\n"
                ),
                PromKind::Everything => String::new(),
            };
            std::fs::write(
                &pcfg,
                format!(
                    "global:\n  scrape_interval: {}ms\n  scrape_timeout: {}ms\nscrape_configs:\n  - job_name: mesh\n    file_sd_configs:\n      - files: [\"{}\"]\n{keep}",
                    opts.interval.as_millis(),
                    opts.interval.mul_f64(0.66).as_millis(),
                    sd.display()
                ),
            )?;
            eprintln!("   starting prometheus ({name})");
            let proc = spawn(
                "prometheus",
                Command::new(prom_bin).args([
                    format!("--config.file={}", pcfg.display()),
                    format!(
                        "--storage.tsdb.path={}",
                        dir.path().join(format!("tsdb-{name}")).display()
                    ),
                    format!("--web.listen-address=127.0.0.1:{pport}"),
                ]),
                &dir.path().join(format!("prometheus-{name}.log")),
            )?;
            proms.push((kind, pport, proc));
        }
    }

    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()?;
    let api = format!("http://127.0.0.1:{port}");
    wait_ready(&client, &api, &mut daemon).await?;
    eprintln!("   warming up for {} cycle(s)", opts.warmup_cycles);
    tokio::time::sleep(opts.interval * opts.warmup_cycles).await;

    let snapshot = |targets: &Value| -> Vec<(String, u64, u64)> {
        targets
            .as_array()
            .into_iter()
            .flatten()
            .map(|t| {
                (
                    t["url"].as_str().unwrap_or("").to_owned(),
                    t["scrapes"].as_u64().unwrap_or(0),
                    t["failures"].as_u64().unwrap_or(0),
                )
            })
            .collect()
    };
    let cpu0 = cpu_seconds(daemon.pid())?;
    let sim_cpu0 = cpu_seconds(sim.pid())?;
    let prom_cpu0 = proms
        .iter()
        .map(|(_, _, p)| cpu_seconds(p.pid()))
        .collect::<anyhow::Result<Vec<f64>>>()?;
    let m0 = client
        .get(format!("{api}/metrics"))
        .send()
        .await?
        .text()
        .await?;
    let t0 = snapshot(&get_json(&client, &format!("{api}/v1/targets")).await?);
    let window = opts.interval * opts.cycles;
    eprintln!(
        "   measuring {} cycle(s) ({})",
        opts.cycles,
        humantime::format_duration(window)
    );
    let mut peak_rss = 0u64;
    let mut prom_peak = vec![0u64; proms.len()];
    let end = Instant::now() + window;
    while Instant::now() < end {
        daemon.alive()?;
        peak_rss = peak_rss.max(status_kb(daemon.pid(), "VmRSS")?);
        sim.alive()?;
        for ((_, _, p), peak) in proms.iter_mut().zip(&mut prom_peak) {
            p.alive()?;
            *peak = (*peak).max(status_kb(p.pid(), "VmRSS")?);
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let cpu1 = cpu_seconds(daemon.pid())?;
    let sim_cpu1 = cpu_seconds(sim.pid())?;
    let prom_cpu1 = proms
        .iter()
        .map(|(_, _, p)| cpu_seconds(p.pid()))
        .collect::<anyhow::Result<Vec<f64>>>()?;
    peak_rss = peak_rss.max(status_kb(daemon.pid(), "VmHWM")?);
    let mut prom_rows = Vec::new();
    for (i, (kind, pport, p)) in proms.iter_mut().enumerate() {
        p.alive()?;
        prom_peak[i] = prom_peak[i].max(status_kb(p.pid(), "VmHWM")?);
        // Prometheus' own view of its scrapes: how many of its targets are up, and the series
        // each scrape keeps (its samples after metric_relabel_configs, summed over its targets).
        let base = format!("http://127.0.0.1:{pport}");
        let up = prom_scalar(&client, &base, "count(up == 1)").await?;
        let all = prom_scalar(&client, &base, "count(up)").await?;
        let series =
            prom_scalar(&client, &base, "sum(scrape_samples_post_metric_relabeling)").await?;
        prom_rows.push(PromRow {
            kind: *kind,
            cpu_per_cycle: (prom_cpu1[i] - prom_cpu0[i]) / opts.cycles as f64,
            peak_rss_mb: prom_peak[i] as f64 / 1024.0,
            targets_up: up as u64,
            targets: all as u64,
            series: series as u64,
        });
    }
    let m1 = client
        .get(format!("{api}/metrics"))
        .send()
        .await?
        .text()
        .await?;
    let m1_delay = histogram_buckets(&m1, "meshgate_scrape_to_verdict_seconds");
    let targets1 = get_json(&client, &format!("{api}/v1/targets")).await?;
    let t1 = snapshot(&targets1);

    let cycles = opts.cycles as f64;
    let mut durations: Vec<f64> = targets1
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|t| t["last_duration_ms"].as_f64())
        .collect();
    let series: u64 = targets1
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|t| t["series"].as_u64())
        .sum();
    // A target should be scraped `cycles` times in the window (one more or less with jitter).
    let mut missed = 0;
    for (url, s1, f1) in &t1 {
        let (s0, f0) = t0
            .iter()
            .find(|(u, _, _)| u == url)
            .map_or((0, 0), |(_, s, f)| (*s, *f));
        missed += f1 - f0;
        let done = s1 - s0;
        if (done as f64) < cycles - 1.0 {
            missed += (cycles - 1.0) as u64 - done;
        }
    }
    let bytes = metric_sum(&m1, "meshgate_scrape_bytes_total")
        - metric_sum(&m0, "meshgate_scrape_bytes_total");
    let row = Row {
        sidecars: n,
        targets,
        bytes_per_cycle: bytes / cycles,
        cpu_per_cycle: (cpu1 - cpu0) / cycles,
        peak_rss_mb: peak_rss as f64 / 1024.0,
        series,
        scrape_p50_ms: percentile(&mut durations, 0.5),
        scrape_p99_ms: percentile(&mut durations, 0.99),
        missed,
        delay_p50_s: quantile_upper(&m1_delay, 0.5),
        delay_p99_s: quantile_upper(&m1_delay, 0.99),
        prometheus: prom_rows,
        sim_cpu_per_cycle: (sim_cpu1 - sim_cpu0) / cycles,
    };
    drop(proms);
    drop(daemon);
    drop(sim);
    Ok(row)
}

/// The table header.
pub fn print_header(interval: Duration) {
    println!(
        "\nscrape interval {}; CPU s per cycle from /proc (user+sys); RSS peak from VmHWM and 2 Hz VmRSS samples; \
         each Prometheus on its own line below its row (up: its targets with up == 1 at the end, from its own query API)",
        humantime::format_duration(interval)
    );
    println!(
        "{:>6} {:>7} {:>9} {:>10} {:>9} {:>8} {:>9} {:>8} {:>8} {:>7} {:>14} {:>9}",
        "N",
        "targets",
        "series",
        "MB/cycle",
        "cpu s/cy",
        "cores",
        "RSS MB",
        "p50 ms",
        "p99 ms",
        "missed",
        "delay p50/p99",
        "sim cpu"
    );
}

/// One line of the table, and a line per Prometheus with its ratios to meshgate.
pub fn print_row(r: &Row, interval: Duration) {
    println!(
        "{:>6} {:>7} {:>9} {:>10.1} {:>9.3} {:>8.3} {:>9.1} {:>8.2} {:>8.2} {:>7} {:>14} {:>9.3}",
        r.sidecars,
        r.targets,
        r.series,
        r.bytes_per_cycle / 1e6,
        r.cpu_per_cycle,
        r.cpu_per_cycle / interval.as_secs_f64(),
        r.peak_rss_mb,
        r.scrape_p50_ms,
        r.scrape_p99_ms,
        r.missed,
        format!("<={}s/<={}s", r.delay_p50_s, r.delay_p99_s),
        r.sim_cpu_per_cycle
    );
    for p in &r.prometheus {
        println!(
            "       prometheus {:<13} cpu {:.3} s/cycle ({:.1}x meshgate), RSS {:.0} MB ({:.1}x), up {}/{}, series {}",
            p.kind.name(),
            p.cpu_per_cycle,
            p.cpu_per_cycle / r.cpu_per_cycle,
            p.peak_rss_mb,
            p.peak_rss_mb / r.peak_rss_mb,
            p.targets_up,
            p.targets,
            p.series
        );
    }
    let _ = std::io::stdout().flush();
}

/// Start `meshgate simulate` with `per_revision` sidecars per revision (`rps` req/s each), and
/// wait until it has written its targets to `file_sd`.
pub(crate) async fn simulate(
    exe: &Path,
    per_revision: usize,
    rps: f64,
    file_sd: &Path,
    log: &Path,
    histogram_tags: &str,
) -> anyhow::Result<Proc> {
    let mut sim = spawn(
        "simulate",
        Command::new(exe).args([
            "simulate",
            "--pods",
            &per_revision.max(1).to_string(),
            "--rps",
            &rps.to_string(),
            "--file-sd",
            &file_sd.display().to_string(),
            "--histogram-tags",
            histogram_tags,
        ]),
        log,
    )?;
    let started = Instant::now();
    while !file_sd.exists() {
        sim.alive()?;
        if started.elapsed() > Duration::from_secs(120) {
            bail!("the simulator did not write its targets within 120 s");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    Ok(sim)
}

/// Wait (60 s at most) until the daemon at `api` answers `/readyz` with 200.
pub(crate) async fn wait_ready(
    client: &reqwest::Client,
    api: &str,
    daemon: &mut Proc,
) -> anyhow::Result<()> {
    let started = Instant::now();
    loop {
        daemon.alive()?;
        if client
            .get(format!("{api}/readyz"))
            .send()
            .await
            .is_ok_and(|r| r.status().is_success())
        {
            return Ok(());
        }
        if started.elapsed() > Duration::from_secs(60) {
            bail!("meshgate did not become ready");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// A directory removed on drop.
pub(crate) struct TempDir(pub(crate) PathBuf);

impl TempDir {
    fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
