//! `meshgate-bench`: the benchmark harnesses, outside the shipped daemon binary.
//!
//! `scale` and `api` start the `meshgate` binary (next to this one, or `MESHGATE_BIN`) and measure
//! it from outside; `judge` runs the decision benchmark in process.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "meshgate-bench",
    version,
    about = "meshgate's benchmark harnesses"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Measure meshgate scraping N simulated sidecars (and Prometheus on the same targets).
    Scale {
        /// Sidecar counts, one table row each.
        #[arg(long, value_delimiter = ',', default_value = "500,2000,5000")]
        sizes: Vec<usize>,
        /// Scrape interval.
        #[arg(long, default_value = "15s", value_parser = humantime::parse_duration)]
        interval: std::time::Duration,
        /// Cycles measured per size.
        #[arg(long, default_value_t = 4)]
        cycles: u32,
        /// Cycles skipped before measuring.
        #[arg(long, default_value_t = 2)]
        warmup_cycles: u32,
        /// Analyses running in the daemon.
        #[arg(long, default_value_t = 3)]
        analyses: usize,
        /// Do not run Prometheus beside meshgate.
        #[arg(long)]
        no_prometheus: bool,
        /// The simulated sidecars' histogram labels (`meshgate simulate --histogram-tags`):
        /// `destination-only` (~55 wanted series per sidecar) or `full` (~330, as a busy real
        /// sidecar with Envoy's default tags).
        #[arg(long, default_value = "destination-only")]
        histogram_tags: String,
    },
    /// Load-test the verdict API at fixed open-loop rates while the daemon scrapes (or soak it).
    Api {
        /// Request rates, requests/s (a soak uses the first).
        #[arg(long, value_delimiter = ',', default_value = "1000,5000")]
        rates: Vec<f64>,
        /// How long each rate runs.
        #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
        duration: std::time::Duration,
        /// Auth modes: off, on, or both.
        #[arg(long, default_value = "both")]
        auth: String,
        /// Sidecars per revision in the simulated mesh.
        #[arg(long, default_value_t = 10)]
        pods: usize,
        /// Scrape interval (= analysis tick).
        #[arg(long, default_value = "5s", value_parser = humantime::parse_duration)]
        interval: std::time::Duration,
        /// Analyses in the daemon.
        #[arg(long, default_value_t = 3)]
        analyses: usize,
        /// Soak: run the first rate this long and sample the daemon's RSS.
        #[arg(long, value_parser = humantime::parse_duration)]
        soak: Option<std::time::Duration>,
        /// RSS sampling period of the soak.
        #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
        sample: std::time::Duration,
    },
    /// Engine command latency while the daemon's store commits (N simulated targets).
    Store {
        /// Sidecars in the simulated mesh.
        #[arg(long, default_value_t = 1000)]
        sidecars: usize,
        /// Scrape interval (= tick, = one store write per tick).
        #[arg(long, default_value = "1s", value_parser = humantime::parse_duration)]
        interval: std::time::Duration,
        /// Measuring time.
        #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
        duration: std::time::Duration,
        /// Probes per second of each kind.
        #[arg(long, default_value_t = 20.0)]
        rate: f64,
        /// Directory for the store file (default: the temporary directory).
        #[arg(long)]
        dir: Option<std::path::PathBuf>,
    },
    /// Benchmark the judge's decisions against Kayenta- and Flagger-style judges on simulated streams.
    Judge {
        /// Runs per A/A scenario.
        #[arg(long, default_value_t = 10_000)]
        aa_runs: usize,
        /// Runs per regression scenario.
        #[arg(long, default_value_t = 1_000)]
        runs: usize,
        /// Seed of the simulated streams.
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// Comma-separated scenario names (default: all).
        #[arg(long, value_delimiter = ',')]
        scenarios: Vec<String>,
        /// Worker threads.
        #[arg(long, default_value_t = 2)]
        threads: usize,
        /// Exit 1 when meshgate's A/A false-alarm rate at 2 h (plain Poisson) is clearly above
        /// this: the lower end of its Wilson 95% interval exceeds it.
        #[arg(long)]
        fail_above: Option<f64>,
        /// The shipped judge's GO certificate: anytime (the default) or horizon.
        #[arg(long, default_value = "anytime", value_parser = parse_go_certificate)]
        go_certificate: meshgate_core::judge::GoCertificate,
    },
    /// Namespace waves on a heterogeneous mesh through the shipped tick (before/after design).
    Waves {
        /// Runs per A/A scenario.
        #[arg(long, default_value_t = 10_000)]
        aa_runs: usize,
        /// Runs per regression scenario.
        #[arg(long, default_value_t = 1_000)]
        runs: usize,
        /// Seed.
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// Comma-separated scenario names (default: all).
        #[arg(long, value_delimiter = ',')]
        scenarios: Vec<String>,
        /// Worker threads.
        #[arg(long, default_value_t = 2)]
        threads: usize,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return ExitCode::from(1);
        }
    };
    match runtime.block_on(run(cli.command)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(1)
        }
    }
}

async fn run(cmd: Command) -> anyhow::Result<ExitCode> {
    match cmd {
        Command::Store {
            sidecars,
            interval,
            duration,
            rate,
            dir,
        } => {
            meshgate_bench::storebench::run(&meshgate_bench::storebench::StoreOptions {
                sidecars,
                interval,
                duration,
                rate,
                dir,
            })
            .await?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Waves {
            aa_runs,
            runs,
            seed,
            scenarios,
            threads,
        } => {
            let started = std::time::Instant::now();
            println!(
                "{}",
                meshgate_bench::waves::run(&meshgate_bench::waves::WaveOptions {
                    aa_runs,
                    runs,
                    seed,
                    scenarios,
                    threads,
                })
            );
            eprintln!("waves: {:.0} s", started.elapsed().as_secs_f64());
            Ok(ExitCode::SUCCESS)
        }
        Command::Judge {
            aa_runs,
            runs,
            seed,
            scenarios,
            threads,
            fail_above,
            go_certificate,
        } => {
            let report = meshgate_bench::judge::run(&meshgate_bench::judge::Options {
                aa_runs,
                runs,
                seed,
                scenarios,
                threads,
                go_certificate,
            });
            println!("{report}");
            let (fa, n) = report
                .aa_false_alarms("aa-poisson", "meshgate")
                .unwrap_or((0, 0));
            let lower = meshgate_bench::judge::wilson(fa, n).0;
            Ok(match fail_above {
                Some(limit) if lower > limit => {
                    eprintln!("error: meshgate A/A false alarms {fa}/{n}: Wilson lower bound {lower:.4} > {limit}");
                    ExitCode::from(1)
                }
                _ => ExitCode::SUCCESS,
            })
        }
        Command::Scale {
            sizes,
            interval,
            cycles,
            warmup_cycles,
            analyses,
            no_prometheus,
            histogram_tags,
        } => {
            let opts = meshgate_bench::scale::ScaleOptions {
                sizes,
                interval,
                cycles,
                warmup_cycles,
                analyses,
                prometheus: !no_prometheus,
                histogram_tags,
            };
            meshgate_bench::scale::print_header(interval);
            let rows = meshgate_bench::scale::run(&opts).await?;
            let missed: u64 = rows.iter().map(|r| r.missed).sum();
            Ok(if missed == 0 {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            })
        }
        Command::Api {
            rates,
            duration,
            auth,
            pods,
            interval,
            analyses,
            soak,
            sample,
        } => {
            let auth_modes = match auth.as_str() {
                "off" => vec![false],
                "on" => vec![true],
                "both" => vec![false, true],
                other => anyhow::bail!("--auth {other:?}: expected off, on or both"),
            };
            let opts = meshgate_bench::loadtest::LoadOptions {
                rates,
                duration,
                auth_modes,
                pods,
                interval,
                analyses,
                soak,
                sample,
                ..Default::default()
            };
            if opts.soak.is_some() {
                let r = meshgate_bench::loadtest::soak(&opts).await?;
                let first = r.rss.first().map_or(f64::NAN, |p| p.1);
                let last = r.rss.last().map_or(f64::NAN, |p| p.1);
                meshgate_bench::loadtest::print_header(&opts);
                meshgate_bench::loadtest::print_row(&r.load);
                println!(
                    "soak RSS: start {first:.1} MB, end {last:.1} MB, slope {:.2} MB/h (second half {:.2} MB/h), {} samples",
                    r.slope_mb_per_h,
                    r.slope_second_half_mb_per_h,
                    r.rss.len()
                );
                let h0 = r.heap.first().map_or(f64::NAN, |p| p.1);
                let h1 = r.heap.last().map_or(f64::NAN, |p| p.1);
                println!(
                    "soak live heap: start {h0:.2} MB, end {h1:.2} MB, slope {:.2} MB/h (second half {:.2} MB/h)",
                    r.heap_slope_mb_per_h, r.heap_slope_second_half_mb_per_h,
                );
                return Ok(if r.load.healthy() {
                    ExitCode::SUCCESS
                } else {
                    ExitCode::from(1)
                });
            }
            meshgate_bench::loadtest::print_header(&opts);
            let rows = meshgate_bench::loadtest::run(&opts).await?;
            Ok(if rows.iter().all(|r| r.healthy()) {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            })
        }
    }
}

/// `--go-certificate`: the names `[judge] go_certificate` takes.
fn parse_go_certificate(s: &str) -> Result<meshgate_core::judge::GoCertificate, String> {
    use meshgate_core::judge::GoCertificate;
    [GoCertificate::Anytime, GoCertificate::Horizon]
        .into_iter()
        .find(|g| g.as_str() == s)
        .ok_or_else(|| format!("{s:?}: expected anytime or horizon"))
}
