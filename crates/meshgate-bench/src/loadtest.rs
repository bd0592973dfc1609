//! The API load and soak harness (`meshgate bench-api`): a simulated mesh in one process,
//! `meshgate serve` scraping it with a few analyses in another, and an open-loop HTTP client in
//! this one driving the verdict endpoints at a fixed rate while the daemon keeps scraping.
//!
//! Open loop: request `i` is due at `start + i / rate` whatever happened to the earlier ones,
//! and its latency is measured from that due time (not from when it was sent), so a stalled
//! server shows as latency instead of silently lowering the rate (no coordinated omission).
//! Besides latency the harness reads what the load did to the analysis: scrapes missed, ticks
//! taken against ticks due, and the scrape-to-verdict delay, from the daemon's own API.
//!
//! The soak mode runs one rate for a long time and samples the daemon's RSS (VmRSS) every few
//! seconds; it prints the series and its least-squares slope.

use std::io::Write;
use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use hdrhistogram::Histogram;
use serde_json::Value;

use crate::selfmetrics::{histogram_buckets, metric_sum, quantile_upper};

use crate::scale::{cpu_seconds, free_port, spawn, status_kb, Proc, TempDir};

/// Harness options.
#[derive(Clone, Debug)]
pub struct LoadOptions {
    /// Request rates (requests/s), one row each per auth mode.
    pub rates: Vec<f64>,
    /// How long each rate runs.
    pub duration: Duration,
    /// Auth modes to run: `false` = open API, `true` = bearer tokens.
    pub auth_modes: Vec<bool>,
    /// Sidecars per revision in the simulated mesh.
    pub pods: usize,
    /// Requests/s per simulated sidecar.
    pub rps: f64,
    /// Scrape interval (= tick) of the daemon.
    pub interval: Duration,
    /// Analyses in the daemon.
    pub analyses: usize,
    /// Settle time after the daemon is ready, before the first row.
    pub warmup: Duration,
    /// Soak: run the first rate this long, sampling the daemon's RSS (replaces the rows).
    pub soak: Option<Duration>,
    /// RSS sampling period in soak mode.
    pub sample: Duration,
    /// Requests allowed in flight at once; a request due while this many are waiting is counted
    /// as an error ("shed") instead of piling up without bound.
    pub max_in_flight: usize,
}

impl Default for LoadOptions {
    fn default() -> Self {
        Self {
            rates: vec![1000.0, 5000.0],
            duration: Duration::from_secs(30),
            auth_modes: vec![false, true],
            pods: 10,
            rps: 100.0,
            interval: Duration::from_secs(5),
            analyses: 3,
            warmup: Duration::from_secs(12),
            soak: None,
            sample: Duration::from_secs(10),
            max_in_flight: 2000,
        }
    }
}

/// One row: one rate, one auth mode.
#[derive(Clone, Debug, Default)]
pub struct LoadRow {
    /// Bearer tokens on.
    pub auth: bool,
    /// Target rate, requests/s.
    pub rate: f64,
    /// Requests due in the window.
    pub sent: u64,
    /// Completed with a 2xx status.
    pub ok: u64,
    /// Non-2xx statuses, transport errors, timeouts and shed requests.
    pub errors: u64,
    /// First error seen, for the log.
    pub first_error: Option<String>,
    /// Completed requests per second of wall time.
    pub achieved: f64,
    /// Latency from the due time, microseconds.
    pub p50_us: u64,
    /// Same, p99.
    pub p99_us: u64,
    /// Same, p99.9.
    pub p999_us: u64,
    /// Same, max.
    pub max_us: u64,
    /// Daemon CPU during the window, cores.
    pub daemon_cores: f64,
    /// Daemon RSS at the end, MB.
    pub daemon_rss_mb: f64,
    /// Scrapes missed or failed in the window.
    pub missed_scrapes: u64,
    /// Analysis ticks taken in the window, per analysis.
    pub ticks: f64,
    /// Ticks due in the window, per analysis.
    pub ticks_due: f64,
    /// Scrape-to-verdict delay over the window, p50 and p99 (upper bucket bounds, s).
    pub delay_p50_s: f64,
    /// Same, p99.
    pub delay_p99_s: f64,
}

impl LoadRow {
    /// True when the API answered every request and the analysis kept pace.
    pub fn healthy(&self) -> bool {
        self.errors == 0 && self.missed_scrapes == 0 && self.ticks + 1.5 >= self.ticks_due
    }
}

/// What a soak run measured.
#[derive(Clone, Debug, Default)]
pub struct SoakReport {
    /// The load over the whole soak.
    pub load: LoadRow,
    /// (seconds since start, RSS MB) samples.
    pub rss: Vec<(f64, f64)>,
    /// Least-squares slope of RSS over all samples, MB per hour.
    pub slope_mb_per_h: f64,
    /// Same over the second half of the samples (after warm-up growth), MB per hour.
    pub slope_second_half_mb_per_h: f64,
    /// (seconds since start, live heap MB) samples (NaN when the daemon does not count).
    pub heap: Vec<(f64, f64)>,
    /// Least-squares slope of the live heap over all samples, MB per hour.
    pub heap_slope_mb_per_h: f64,
    /// Same over the second half of the samples, MB per hour.
    pub heap_slope_second_half_mb_per_h: f64,
}

/// One memory sample of the daemon during a soak.
struct MemSample {
    /// Seconds since the soak began.
    t: f64,
    rss_mb: f64,
    /// `meshgate_heap_live_bytes` in MB.
    heap_mb: f64,
    /// `meshgate_malloc_free_bytes` in MB.
    malloc_free_mb: f64,
    /// `meshgate_malloc_mapped_bytes` in MB.
    malloc_mapped_mb: f64,
    fds: usize,
}

impl MemSample {
    async fn take(
        client: &reqwest::Client,
        api: &str,
        pid: u32,
        since: Duration,
    ) -> anyhow::Result<Self> {
        let metrics = client
            .get(format!("{api}/metrics"))
            .timeout(Duration::from_secs(10))
            .send()
            .await?
            .error_for_status()?
            .text()
            .await?;
        let mb = |name: &str| match metric_sum(&metrics, name) {
            0.0 => f64::NAN,
            v => v / (1024.0 * 1024.0),
        };
        Ok(MemSample {
            t: since.as_secs_f64(),
            rss_mb: status_kb(pid, "VmRSS")? as f64 / 1024.0,
            heap_mb: mb("meshgate_heap_live_bytes"),
            malloc_free_mb: mb("meshgate_malloc_free_bytes"),
            malloc_mapped_mb: mb("meshgate_malloc_mapped_bytes"),
            fds: std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |d| d.count()),
        })
    }

    fn print(&self, in_flight: u64) {
        println!(
            "{:>8.0} {:>9.1} {:>10.2} {:>12.2} {:>13.2} {:>10} {:>6}",
            self.t,
            self.rss_mb,
            self.heap_mb,
            self.malloc_free_mb,
            self.malloc_mapped_mb,
            in_flight,
            self.fds
        );
        let _ = std::io::stdout().flush();
    }
}

/// The daemon under load, with the mesh it scrapes.
struct Bench {
    _dir: TempDir,
    sim: Proc,
    daemon: Proc,
    api: String,
    read_token: Option<String>,
    admin_token: Option<String>,
    ids: Vec<String>,
    interval: Duration,
    auth: bool,
}

/// Daemon-side counters at one instant.
struct Snapshot {
    at: Instant,
    cpu: f64,
    targets: Vec<(String, u64, u64)>,
    ticks: f64,
    delay_buckets: Vec<(f64, f64)>,
}

/// A random token of 32 hex digits.
fn token() -> String {
    use rand::Rng;
    let mut rng = rand::rng();
    (0..32)
        .map(|_| char::from_digit(rng.random_range(0..16), 16).expect("hex digit"))
        .collect()
}

impl Bench {
    async fn start(exe: &Path, opts: &LoadOptions, auth: bool) -> anyhow::Result<Bench> {
        let dir_path = std::env::temp_dir().join(format!(
            "meshgate-bench-api-{}-{}",
            std::process::id(),
            u8::from(auth)
        ));
        std::fs::create_dir_all(&dir_path)?;
        let dir = TempDir(dir_path);
        let sd = dir.0.join("targets.json");
        let mut sim = crate::scale::simulate(
            exe,
            opts.pods,
            opts.rps,
            &sd,
            &dir.0.join("sim.log"),
            "destination-only",
        )
        .await?;

        let port = free_port()?;
        let mut cfg = format!(
            "[server]\nlisten = \"127.0.0.1:{port}\"\n[scrape]\ninterval = \"{}\"\ntimeout = \"{}\"\n[discovery]\nfile_sd = [\"{}\"]\n[judge]\nmin_duration = \"1h\"\nmax_duration = \"2h\"\n",
            humantime::format_duration(opts.interval),
            humantime::format_duration(opts.interval.mul_f64(0.66)),
            sd.display()
        );
        let (mut read_token, mut admin_token) = (None, None);
        if auth {
            let (r, a) = (token(), token());
            let tokens = dir.0.join("tokens");
            std::fs::write(&tokens, format!("read {r}\nadmin {a}\n"))?;
            cfg.push_str(&format!(
                "[auth]\ntokens_file = \"{}\"\nmetrics_public = true\n",
                tokens.display()
            ));
            read_token = Some(r);
            admin_token = Some(a);
        }
        let ids: Vec<String> = (0..opts.analyses.max(1))
            .map(|i| format!("load-{i}"))
            .collect();
        for id in &ids {
            cfg.push_str(&format!(
                "[[analyses]]\nname = \"{id}\"\nbaseline = '{{role=\"proxy\", revision=\"1-24-2\"}}'\ncanary = '{{role=\"proxy\", revision=\"1-25-0\"}}'\n"
            ));
        }
        let cfg_path = dir.0.join("meshgate.toml");
        std::fs::write(&cfg_path, cfg)?;
        let mut daemon = spawn(
            "meshgate serve",
            Command::new(exe)
                .args(["serve", "--config", &cfg_path.display().to_string()])
                .env("MESHGATE_LOG", "warn"),
            &dir.0.join("meshgate.log"),
        )?;
        let api = format!("http://127.0.0.1:{port}");
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .build()?;
        let started = Instant::now();
        loop {
            daemon.alive()?;
            sim.alive()?;
            if client
                .get(format!("{api}/readyz"))
                .send()
                .await
                .is_ok_and(|r| r.status().is_success())
            {
                break;
            }
            if started.elapsed() > Duration::from_secs(60) {
                bail!("meshgate did not become ready within 60 s");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Ok(Bench {
            _dir: dir,
            sim,
            daemon,
            api,
            read_token,
            admin_token,
            ids,
            interval: opts.interval,
            auth,
        })
    }

    fn alive(&mut self) -> anyhow::Result<()> {
        self.daemon.alive()?;
        self.sim.alive()
    }

    async fn get_json(&self, client: &reqwest::Client, path: &str) -> anyhow::Result<Value> {
        let mut req = client.get(format!("{}{path}", self.api));
        if let Some(t) = &self.read_token {
            req = req.bearer_auth(t);
        }
        Ok(req.send().await?.error_for_status()?.json().await?)
    }

    async fn snapshot(&self, client: &reqwest::Client) -> anyhow::Result<Snapshot> {
        let targets = self.get_json(client, "/v1/targets").await?;
        let targets = targets
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
            .collect();
        let metrics = client
            .get(format!("{}/metrics", self.api))
            .send()
            .await?
            .error_for_status()?
            .text()
            .await?;
        Ok(Snapshot {
            at: Instant::now(),
            cpu: cpu_seconds(self.daemon.pid())?,
            targets,
            ticks: metric_sum(&metrics, "meshgate_analysis_ticks_total"),
            delay_buckets: histogram_buckets(&metrics, "meshgate_scrape_to_verdict_seconds"),
        })
    }

    /// The requests of the mix: (method is POST, path, token).
    fn mix(&self) -> Vec<(bool, String, Option<String>)> {
        let mut m = Vec::new();
        for id in &self.ids {
            m.push((false, format!("/v1/analyses/{id}"), self.read_token.clone()));
            m.push((false, format!("/v1/analyses/{id}"), self.read_token.clone()));
            m.push((
                false,
                format!("/v1/analyses/{id}/verdict"),
                self.read_token.clone(),
            ));
            m.push((
                true,
                format!("/argo/v1/analyses/{id}"),
                self.admin_token.clone(),
            ));
        }
        m
    }

    /// Drive the mix at `rate` for `duration`; `tick` is called about once a second with the
    /// time since the start and the most requests in flight at once since the previous call.
    async fn drive(
        &mut self,
        rate: f64,
        duration: Duration,
        max_in_flight: usize,
        mut tick: impl FnMut(&mut Self, Duration, usize) -> anyhow::Result<()>,
    ) -> anyhow::Result<LoadRow> {
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .pool_max_idle_per_host(max_in_flight)
            .build()?;
        let before = self.snapshot(&client).await?;
        let mix: Arc<Vec<(bool, String, Option<String>)>> = Arc::new(
            self.mix()
                .into_iter()
                .map(|(post, path, t)| (post, format!("{}{path}", self.api), t))
                .collect(),
        );
        let hist = Arc::new(Mutex::new(
            Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).expect("histogram bounds"),
        ));
        let ok = Arc::new(AtomicU64::new(0));
        let errors = Arc::new(AtomicU64::new(0));
        let first_error: Arc<Mutex<Option<String>>> = Arc::new(Mutex::new(None));
        let in_flight = Arc::new(tokio::sync::Semaphore::new(max_in_flight));
        let n = (rate * duration.as_secs_f64()).round() as u64;
        let period = Duration::from_secs_f64(1.0 / rate);
        let start = tokio::time::Instant::now();
        let mut tasks = tokio::task::JoinSet::new();
        let mut next_tick = Duration::from_secs(1);
        let mut peak = 0usize;
        for i in 0..n {
            let due = start + period.mul_f64(i as f64);
            tokio::time::sleep_until(due).await;
            let since = start.elapsed();
            peak = peak.max(max_in_flight - in_flight.available_permits());
            if since >= next_tick {
                tick(self, since, std::mem::take(&mut peak))?;
                next_tick += Duration::from_secs(1);
                // Reap finished tasks so the set does not grow for the whole run.
                while tasks.try_join_next().is_some() {}
            }
            let Ok(permit) = in_flight.clone().try_acquire_owned() else {
                errors.fetch_add(1, Ordering::Relaxed);
                first_error
                    .lock()
                    .expect("lock")
                    .get_or_insert_with(|| format!("shed: {max_in_flight} requests in flight"));
                continue;
            };
            let (post, url, token) = mix[(i % mix.len() as u64) as usize].clone();
            let (client, hist, ok, errors, first_error) = (
                client.clone(),
                hist.clone(),
                ok.clone(),
                errors.clone(),
                first_error.clone(),
            );
            tasks.spawn(async move {
                let _permit = permit;
                let mut req = if post {
                    client.post(&url).body("")
                } else {
                    client.get(&url)
                };
                if let Some(t) = &token {
                    req = req.bearer_auth(t);
                }
                let res = match req.send().await {
                    Ok(r) if r.status().is_success() => r.bytes().await.map_err(|e| e.to_string()),
                    Ok(r) => Err(format!("{} from {url}", r.status())),
                    Err(e) => Err(format!("{e} ({url})")),
                };
                let us = due.elapsed().as_micros().max(1) as u64;
                match res {
                    Ok(_) => {
                        ok.fetch_add(1, Ordering::Relaxed);
                        hist.lock().expect("lock").saturating_record(us);
                    }
                    Err(e) => {
                        errors.fetch_add(1, Ordering::Relaxed);
                        first_error.lock().expect("lock").get_or_insert(e);
                    }
                }
            });
        }
        while tasks.join_next().await.is_some() {}
        let wall = start.elapsed();
        self.alive()?;
        let after = self.snapshot(&client).await?;
        let h = hist.lock().expect("lock").clone();
        let window = after.at - before.at;
        let mut missed = 0;
        let cycles = window.as_secs_f64() / self.interval.as_secs_f64();
        for (url, s1, f1) in &after.targets {
            let (s0, f0) = before
                .targets
                .iter()
                .find(|(u, _, _)| u == url)
                .map_or((0, 0), |(_, s, f)| (*s, *f));
            missed += f1 - f0;
            // Every target should be scraped about `cycles` times (one less with jitter).
            let due = (cycles - 1.0).floor().max(0.0) as u64;
            missed += due.saturating_sub(s1 - s0);
        }
        let delay: Vec<(f64, f64)> = after
            .delay_buckets
            .iter()
            .map(|(le, c)| {
                let c0 = before
                    .delay_buckets
                    .iter()
                    .find(|(l, _)| l == le)
                    .map_or(0.0, |b| b.1);
                (*le, c - c0)
            })
            .collect();
        let ok = ok.load(Ordering::Relaxed);
        let first_error = first_error.lock().expect("lock").clone();
        Ok(LoadRow {
            auth: self.auth,
            rate,
            sent: n,
            ok,
            errors: errors.load(Ordering::Relaxed),
            first_error,
            achieved: ok as f64 / wall.as_secs_f64(),
            p50_us: h.value_at_quantile(0.5),
            p99_us: h.value_at_quantile(0.99),
            p999_us: h.value_at_quantile(0.999),
            max_us: h.max(),
            daemon_cores: (after.cpu - before.cpu) / window.as_secs_f64(),
            daemon_rss_mb: status_kb(self.daemon.pid(), "VmRSS")? as f64 / 1024.0,
            missed_scrapes: missed,
            ticks: (after.ticks - before.ticks) / self.ids.len() as f64,
            ticks_due: cycles,
            delay_p50_s: quantile_upper(&delay, 0.5),
            delay_p99_s: quantile_upper(&delay, 0.99),
        })
    }
}

/// Least-squares slope of y over x (NaN with fewer than 2 distinct x).
pub fn slope(points: &[(f64, f64)]) -> f64 {
    let n = points.len() as f64;
    if points.len() < 2 {
        return f64::NAN;
    }
    let mx = points.iter().map(|p| p.0).sum::<f64>() / n;
    let my = points.iter().map(|p| p.1).sum::<f64>() / n;
    let sxy: f64 = points.iter().map(|p| (p.0 - mx) * (p.1 - my)).sum();
    let sxx: f64 = points.iter().map(|p| (p.0 - mx).powi(2)).sum();
    if sxx == 0.0 {
        f64::NAN
    } else {
        sxy / sxx
    }
}

/// Run every auth mode and rate; prints one row each as it finishes.
pub async fn run(opts: &LoadOptions) -> anyhow::Result<Vec<LoadRow>> {
    let exe = crate::meshgate_exe()?;
    let mut rows = Vec::new();
    for &auth in &opts.auth_modes {
        eprintln!(
            "== auth {}: starting the simulated mesh ({} sidecars per revision) and meshgate",
            if auth { "on" } else { "off" },
            opts.pods
        );
        let mut bench = Bench::start(&exe, opts, auth).await?;
        eprintln!(
            "   settling for {}",
            humantime::format_duration(opts.warmup)
        );
        tokio::time::sleep(opts.warmup).await;
        for &rate in &opts.rates {
            eprintln!(
                "   {rate} req/s for {}",
                humantime::format_duration(opts.duration)
            );
            let row = bench
                .drive(rate, opts.duration, opts.max_in_flight, |b, _, _| b.alive())
                .await?;
            print_row(&row);
            rows.push(row);
        }
    }
    Ok(rows)
}

/// Soak: the first rate and auth mode for `opts.soak`, sampling RSS every `opts.sample`.
pub async fn soak(opts: &LoadOptions) -> anyhow::Result<SoakReport> {
    let exe = crate::meshgate_exe()?;
    let total = opts.soak.context("soak duration")?;
    let auth = opts.auth_modes.first().copied().unwrap_or(false);
    let rate = opts.rates.first().copied().unwrap_or(1000.0);
    eprintln!(
        "== soak: {rate} req/s, auth {}, {}; RSS every {}",
        if auth { "on" } else { "off" },
        humantime::format_duration(total),
        humantime::format_duration(opts.sample)
    );
    let mut bench = Bench::start(&exe, opts, auth).await?;
    tokio::time::sleep(opts.warmup).await;
    // Every sample: RSS, the daemon's live heap bytes and what glibc's allocator keeps free
    // (from its /metrics: live bytes flat while RSS grows is allocator retention, not a leak),
    // the most requests in flight in the period (each holds a connection to the daemon), and
    // the daemon's open file descriptors (its sockets). Sampled by a task of its own so that a
    // slow /metrics answer does not hold up the load.
    println!(
        "{:>8} {:>9} {:>10} {:>12} {:>13} {:>10} {:>6}",
        "t s", "RSS MB", "heap MB", "malloc free", "malloc mapped", "in flight", "fds"
    );
    let peak = Arc::new(AtomicU64::new(0));
    let sampler = {
        let (pid, api, peak) = (bench.daemon.pid(), bench.api.clone(), peak.clone());
        let (period, start) = (opts.sample, Instant::now());
        tokio::spawn(async move {
            let client = reqwest::Client::new();
            let mut samples: Vec<MemSample> = Vec::new();
            let mut next = start;
            loop {
                tokio::time::sleep_until(next.into()).await;
                let s = MemSample::take(&client, &api, pid, start.elapsed()).await;
                match s {
                    Ok(s) => {
                        s.print(peak.swap(0, Ordering::Relaxed));
                        samples.push(s);
                    }
                    // The daemon is gone or not answering: `drive` reports why.
                    Err(e) => eprintln!("soak sample failed: {e:#}"),
                }
                next += period;
                if next.duration_since(start) > total {
                    break samples;
                }
            }
        })
    };
    let load = bench
        .drive(rate, total, opts.max_in_flight, |b, _since, p| {
            b.alive()?;
            peak.fetch_max(p as u64, Ordering::Relaxed);
            Ok(())
        })
        .await;
    if load.is_err() {
        sampler.abort();
    }
    let load = load?;
    let mut samples = sampler.await.context("soak sampler")?;
    let last = MemSample::take(
        &reqwest::Client::new(),
        &bench.api,
        bench.daemon.pid(),
        total,
    )
    .await?;
    last.print(0);
    samples.push(last);
    let series = |f: fn(&MemSample) -> f64| -> Vec<(f64, f64)> {
        samples.iter().map(|s| (s.t, f(s))).collect()
    };
    let (rss, heap) = (series(|s| s.rss_mb), series(|s| s.heap_mb));
    let half = |v: &[(f64, f64)]| slope(&v[v.len() / 2..]) * 3600.0;
    Ok(SoakReport {
        slope_mb_per_h: slope(&rss) * 3600.0,
        slope_second_half_mb_per_h: half(&rss),
        heap_slope_mb_per_h: slope(&heap) * 3600.0,
        heap_slope_second_half_mb_per_h: half(&heap),
        rss,
        heap,
        load,
    })
}

/// The table header.
pub fn print_header(opts: &LoadOptions) {
    println!(
        "\nopen loop, latency from each request's due time; mix per analysis: 2x GET /v1/analyses/{{id}}, GET .../verdict, POST /argo/v1/analyses/{{id}}; \
         {} analyses, {} sidecars per revision, scrape interval {}",
        opts.analyses,
        opts.pods,
        humantime::format_duration(opts.interval)
    );
    println!(
        "{:>4} {:>6} {:>8} {:>8} {:>6} {:>8} {:>9} {:>9} {:>9} {:>9} {:>6} {:>7} {:>7} {:>11} {:>14}",
        "auth",
        "rate",
        "sent",
        "ok",
        "errors",
        "achieved",
        "p50 ms",
        "p99 ms",
        "p99.9 ms",
        "max ms",
        "cores",
        "RSS MB",
        "missed",
        "ticks/due",
        "delay p50/p99"
    );
}

/// One line of the table.
pub fn print_row(r: &LoadRow) {
    println!(
        "{:>4} {:>6} {:>8} {:>8} {:>6} {:>8.0} {:>9.2} {:>9.2} {:>9.2} {:>9.2} {:>6.2} {:>7.1} {:>7} {:>11} {:>14}",
        if r.auth { "on" } else { "off" },
        r.rate,
        r.sent,
        r.ok,
        r.errors,
        r.achieved,
        r.p50_us as f64 / 1000.0,
        r.p99_us as f64 / 1000.0,
        r.p999_us as f64 / 1000.0,
        r.max_us as f64 / 1000.0,
        r.daemon_cores,
        r.daemon_rss_mb,
        r.missed_scrapes,
        format!("{:.0}/{:.1}", r.ticks, r.ticks_due),
        format!("<={}s/<={}s", r.delay_p50_s, r.delay_p99_s),
    );
    if let Some(e) = &r.first_error {
        println!("     first error: {e}");
    }
    let _ = std::io::stdout().flush();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slope_of_a_line_and_of_noise() {
        let line: Vec<(f64, f64)> = (0..10).map(|i| (i as f64, 3.0 + 0.5 * i as f64)).collect();
        assert!((slope(&line) - 0.5).abs() < 1e-12);
        let flat = [(0.0, 1.0), (1.0, 2.0), (2.0, 1.0), (3.0, 2.0)];
        assert!((slope(&flat) - 0.2).abs() < 1e-12);
        assert!(slope(&[(1.0, 1.0)]).is_nan());
    }
}
