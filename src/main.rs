//! The `meshgate` command: serve, demo, simulate, check-config.

use std::net::IpAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};
use tokio_util::sync::CancellationToken;
use tracing_subscriber::EnvFilter;

use meshgate::config::{Config, EXIT_BAD_CONFIG};
use meshgate::daemon::{Listener, StartError};
use meshgate::demo::{DemoOptions, Scenario};
use meshgate::sim::{Fault, SimConfig, SimMesh};

/// Counts live heap bytes for `meshgate_heap_live_bytes` (two relaxed atomic adds per allocation).
#[global_allocator]
static GLOBAL: meshgate::heap::CountingAlloc = meshgate::heap::CountingAlloc;

#[derive(Parser)]
#[command(
    name = "meshgate",
    version,
    about = "Decides whether an Istio revision upgrade may go on"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
    /// Log format on stderr: `text` (colour only on a terminal without NO_COLOR) or `json` lines.
    #[arg(
        long,
        global = true,
        value_enum,
        default_value_t,
        env = "MESHGATE_LOG_FORMAT"
    )]
    log_format: meshgate::logging::LogFormat,
}

#[derive(Subcommand)]
enum Command {
    /// Run the daemon.
    Serve {
        /// Configuration file (TOML).
        #[arg(short, long, env = "MESHGATE_CONFIG")]
        config: PathBuf,
    },
    /// Validate a configuration file and print what it would run.
    CheckConfig {
        /// Configuration file (TOML).
        file: PathBuf,
        /// Check the file itself only (keys, values, check files), not what it refers to on this
        /// machine (file_sd files and their directories) nor that it has a target source: for a
        /// file checked away from the host that will run it (like `promtool check config
        /// --syntax-only`).
        #[arg(long)]
        syntax_only: bool,
    },
    /// Run the built-in demo: a simulated mesh on loopback and a real analysis against it.
    Demo {
        /// No fault in the canary: the analysis must end in GO.
        #[arg(long)]
        healthy: bool,
        /// Which regression to inject (ignored with --healthy).
        #[arg(long, value_enum, default_value_t = Scenario::Errors)]
        scenario: Scenario,
        /// Seed of the simulated traffic.
        #[arg(long, default_value_t = 7)]
        seed: u64,
        /// Print the final evidence as JSON instead of text.
        #[arg(long)]
        json: bool,
        /// Keep the daemon up after the verdict, until Ctrl-C, to look at its report page.
        #[arg(long)]
        keep: bool,
    },
    /// Wait for an analysis on a running daemon (creating it when --baseline and --canary are
    /// given); exit 0 GO, 1 NO-GO, 2 INCONCLUSIVE or timeout, 3 daemon unreachable, 4 the name
    /// is taken by an analysis with another definition (pass --replace or a fresh --name),
    /// 64 invalid.
    Gate(Box<meshgate::gate::GateOptions>),
    /// Execute the `[plan]` wave by wave through the Kubernetes API: relabel, restart, wait,
    /// gate on the daemon, roll back a NO-GO wave. Dry run unless --execute. Exit 0 done,
    /// 1 NO-GO rolled back, 2 paused, 3 the Lease is held by another, 4 a pre-check failed,
    /// 5 the API server or the daemon failed, 64 invalid. `upgrade resume` (the paused wave
    /// counts as GO) and `upgrade abort` (it is rolled back) are a person's decision on the run
    /// of --state.
    Upgrade(Box<meshgate::upgrade::UpgradeOptions>),
    /// The upgrade plan: `show` it from a configuration, or ask a running daemon its `status`.
    Plan {
        #[command(subcommand)]
        action: PlanAction,
    },
    /// Serve the simulated mesh alone (for Prometheus, load tests or a daemon of your own).
    Simulate {
        /// Address to bind every simulated endpoint on.
        #[arg(long, default_value = "127.0.0.1")]
        bind: IpAddr,
        /// Sidecars per revision.
        #[arg(long, default_value_t = 3)]
        pods: usize,
        /// Requests per second per sidecar.
        #[arg(long, default_value_t = 100.0)]
        rps: f64,
        /// 5xx share injected in the canary.
        #[arg(long)]
        canary_error_rate: Option<f64>,
        /// Latency multiplier injected in the canary.
        #[arg(long, default_value_t = 1.0)]
        canary_latency_factor: f64,
        /// Write the targets as a Prometheus file_sd JSON file.
        #[arg(long)]
        file_sd: Option<PathBuf>,
        /// The label set of the sidecars' histograms: `destination-only` (a Telemetry API
        /// `tagOverrides` that drops the source and response tags: ~55 wanted series and ~120 KB
        /// per page) or `full` (Envoy's default, as a busy real sidecar: ~330 wanted series and
        /// ~0.8 MB per page).
        #[arg(long, value_enum, default_value = "destination-only")]
        histogram_tags: HistogramTagsArg,
    },
}

/// `simulate --histogram-tags`.
#[derive(Clone, Copy, Debug, clap::ValueEnum)]
enum HistogramTagsArg {
    /// One histogram series per reporter and destination.
    DestinationOnly,
    /// Every request series has its histograms, with the same labels (Envoy's default).
    Full,
}

#[derive(Subcommand)]
enum PlanAction {
    /// Print the plan of a configuration file (waves, namespaces, soak, checks).
    Show {
        /// Configuration file (TOML).
        #[arg(short, long, env = "MESHGATE_CONFIG")]
        config: PathBuf,
    },
    /// Ask a running daemon where the plan stands (GET /v1/plan/status).
    Status {
        /// The daemon's API.
        #[arg(long, default_value = "http://127.0.0.1:9400")]
        url: String,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    meshgate::logging::init(
        cli.log_format,
        EnvFilter::try_from_env("MESHGATE_LOG").unwrap_or_else(|_| default_filter(&cli.command)),
    );
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

fn default_filter(cmd: &Command) -> EnvFilter {
    match cmd {
        // The demo draws its own progress line; only warnings from the daemon.
        Command::Demo { .. } | Command::Gate(_) | Command::Upgrade(_) => EnvFilter::new("warn"),
        _ => EnvFilter::new("info"),
    }
}

async fn run(cmd: Command) -> anyhow::Result<ExitCode> {
    match cmd {
        Command::CheckConfig { file, syntax_only } => Ok(check_config(&file, syntax_only)),
        Command::Serve { config } => Ok(serve(&config).await),
        Command::Gate(options) => Ok(ExitCode::from(meshgate::gate::run(*options).await)),
        Command::Upgrade(options) => Ok(ExitCode::from(meshgate::upgrade::run(*options).await)),
        Command::Plan { action } => plan(action).await,
        Command::Demo {
            healthy,
            scenario,
            seed,
            json,
            keep,
        } => {
            let scenario = if healthy { Scenario::Healthy } else { scenario };
            let ok = meshgate::demo::run(DemoOptions {
                scenario,
                seed,
                json,
                keep,
            })
            .await?;
            Ok(if ok {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            })
        }
        Command::Simulate {
            bind,
            pods,
            rps,
            canary_error_rate,
            canary_latency_factor,
            file_sd,
            histogram_tags,
        } => {
            // One open file per simulated pod's listener and per scrape connection to it.
            if let Err(e) = meshgate::fdlimit::raise() {
                eprintln!("cannot raise the open-file limit: {e}");
            }
            let mut cfg = SimConfig {
                rps_per_pod: rps,
                histogram_tags: match histogram_tags {
                    HistogramTagsArg::DestinationOnly => {
                        meshgate::sim::HistogramTags::DestinationOnly
                    }
                    HistogramTagsArg::Full => meshgate::sim::HistogramTags::Full,
                },
                ..SimConfig::default()
            };
            cfg.baseline.pods = pods;
            cfg.canary.pods = pods;
            let shutdown = CancellationToken::new();
            let mesh = SimMesh::start(cfg, bind, shutdown.clone())
                .await
                .context("starting the simulated mesh")?;
            mesh.set_fault(
                meshgate::sim::Cohort::Canary,
                Fault {
                    error_rate: canary_error_rate,
                    latency_factor: canary_latency_factor,
                },
            );
            for t in mesh.targets() {
                let labels: Vec<String> =
                    t.labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
                println!("{}  {}", t.url, labels.join(","));
            }
            if let Some(path) = file_sd {
                std::fs::write(&path, mesh.file_sd_json())
                    .with_context(|| format!("writing {}", path.display()))?;
                eprintln!("file_sd written to {}", path.display());
            }
            let signalled = wait_for_signal();
            eprintln!("serving; Ctrl-C to stop");
            signalled.await;
            shutdown.cancel();
            Ok(ExitCode::SUCCESS)
        }
    }
}

async fn plan(action: PlanAction) -> anyhow::Result<ExitCode> {
    match action {
        PlanAction::Show { config } => {
            let cfg = match Config::load(&config) {
                Ok(c) => c,
                Err(e) => {
                    eprintln!("{e}");
                    return Ok(ExitCode::from(EXIT_BAD_CONFIG as u8));
                }
            };
            let Some(p) = cfg.plan else {
                eprintln!("{}: no [plan] section", config.display());
                return Ok(ExitCode::from(EXIT_BAD_CONFIG as u8));
            };
            println!(
                "plan {:?}: {} -> {}",
                p.name, p.from_revision, p.to_revision
            );
            for (i, w) in p.waves.iter().enumerate() {
                println!(
                    "  wave {} {:?}: namespaces {}; soak {}; checks {}; analysis {}",
                    i + 1,
                    w.name,
                    w.namespaces.join(", "),
                    humantime::format_duration(w.soak),
                    if w.checks.is_empty() {
                        "(default set)".to_string()
                    } else {
                        w.checks.join(", ")
                    },
                    meshgate::istio::plan::Plan::analysis_id(w)
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        PlanAction::Status { url } => {
            use meshgate::client::read_doc;
            use meshgate_core::api::{ErrorDoc, PlanStatus};
            let url = format!("{}/v1/plan/status", url.trim_end_matches('/'));
            let resp = reqwest::Client::builder()
                .timeout(std::time::Duration::from_secs(10))
                .build()?
                .get(&url)
                .send()
                .await
                .with_context(|| format!("asking {url}"))?;
            let (status, endpoint) = (resp.status(), format!("GET {url}"));
            if !status.is_success() {
                let e: ErrorDoc = read_doc(&endpoint, resp).await?;
                eprintln!("{status}: {}", e.error.message);
                return Ok(ExitCode::from(1));
            }
            let plan: PlanStatus = read_doc(&endpoint, resp).await?;
            println!("{}", plan.advice);
            for w in &plan.waves {
                println!(
                    "  {:<16} {:<12} verdict {:<12} {}",
                    w.name,
                    w.phase.as_str(),
                    w.verdict.map_or("-", |v| v.as_str()),
                    w.reason.as_deref().unwrap_or("")
                );
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn check_config(file: &std::path::Path, syntax_only: bool) -> ExitCode {
    use std::fmt::Write as _;
    let checked = Config::load(file)
        .map_err(StartError::from)
        .and_then(|cfg| meshgate::daemon::check(&cfg).map(|catalog| (cfg, catalog)));
    let (cfg, catalog) = match checked {
        Ok(c) => c,
        Err(e) => return refuse(file, &e),
    };
    // Built as a string and written once: `check-config | head` must not panic on a closed pipe.
    let mut out = String::new();
    // What the daemon would tolerate at run time (it waits for files and keeps watching) but a
    // pre-flight check refuses: each is most often a typo that leaves the daemon without targets.
    let mut refused = Vec::new();
    let mut file_targets = 0;
    let mut n_files = 0;
    let file_sd = if syntax_only {
        &[][..]
    } else {
        &cfg.discovery.file_sd[..]
    };
    for (i, pattern) in file_sd.iter().enumerate() {
        let key = format!("discovery.file_sd[{i}]");
        let dir = pattern
            .parent()
            .filter(|d| !d.as_os_str().is_empty())
            .unwrap_or(std::path::Path::new("."));
        if !dir.is_dir() {
            refused.push(format!(
                "{key}: directory {} does not exist (a file_sd file may appear later, its directory must exist)",
                dir.display()
            ));
            continue;
        }
        let is_glob = pattern
            .file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| n.contains('*'));
        let files = meshgate::discovery::expand(pattern);
        if is_glob && files.is_empty() {
            let _ = writeln!(
                out,
                "note: {key} {} matches no file yet (the daemon would watch for them)",
                pattern.display()
            );
        }
        if !is_glob && !pattern.exists() {
            refused.push(format!("{key}: {} does not exist", pattern.display()));
            continue;
        }
        n_files += files.len();
        for p in files {
            match meshgate::discovery::read_file_sd(&p) {
                Ok(t) => file_targets += t.len(),
                Err(e) => refused.push(format!("{key}: {e}")),
            }
        }
    }
    if !syntax_only
        && cfg.targets.is_empty()
        && cfg.discovery.file_sd.is_empty()
        && cfg.discovery.kubernetes.is_none()
        && cfg.prometheus.is_none()
    {
        refused.push(
            "targets: no target source: set [[targets]], discovery.file_sd, [discovery.kubernetes] or [prometheus]"
                .to_owned(),
        );
    }
    if !refused.is_empty() {
        print_problems(file, &refused);
        return ExitCode::from(64);
    }
    let _ = writeln!(out, "{} is valid. It would run:", file.display());
    let _ = writeln!(out, "  api on http://{}", cfg.server.listen);
    let _ = writeln!(
        out,
        "  scrape every {} (timeout {}, jitter {:.0}%, cap {} bytes, {} at once), stale after {}",
        humantime::format_duration(cfg.scrape.interval),
        humantime::format_duration(cfg.scrape.timeout),
        cfg.scrape.jitter * 100.0,
        cfg.scrape.max_body_bytes,
        cfg.scrape.concurrency,
        humantime::format_duration(cfg.scrape.stale_after())
    );
    if syntax_only {
        let _ = writeln!(
            out,
            "  targets: {} static, file_sd {} (not read: --syntax-only)",
            cfg.targets.len(),
            cfg.discovery.file_sd.len()
        );
    } else {
        let _ = writeln!(
            out,
            "  targets: {} static, {} from {} file_sd file(s)",
            cfg.targets.len(),
            file_targets,
            n_files
        );
    }
    if let Some(k) = &cfg.discovery.kubernetes {
        let _ = writeln!(
            out,
            "  kubernetes discovery: cluster {:?} at {} (resync {})",
            k.cluster,
            k.api_server,
            humantime::format_duration(k.resync)
        );
    }
    let defaults = catalog.default_names();
    let _ = writeln!(
        out,
        "  checks an analysis gets when it names none ({} of {} loaded): {}",
        defaults.len(),
        catalog.names().len(),
        defaults.join(", ")
    );
    let others: Vec<String> = catalog
        .names()
        .into_iter()
        .filter(|n| !defaults.contains(n))
        .collect();
    if !others.is_empty() {
        let _ = writeln!(out, "  checks run only when named: {}", others.join(", "));
    }
    let _ = writeln!(
        out,
        "  judge: alpha {}, min {}, max {}, tick {}",
        cfg.judge.alpha,
        humantime::format_duration(cfg.judge.min_duration),
        humantime::format_duration(cfg.judge.max_duration),
        humantime::format_duration(cfg.tick())
    );
    let _ = writeln!(
        out,
        "  alerts: {} alertmanager(s), {} webhook(s)",
        cfg.alerts.alertmanager.len(),
        cfg.alerts.webhooks.len()
    );
    if let Some(plan) = &cfg.plan {
        let _ = writeln!(
            out,
            "  plan {:?}: istio.io/rev {} -> {}, {} wave(s)",
            plan.name,
            plan.from_revision,
            plan.to_revision,
            plan.waves.len()
        );
        for (i, w) in plan.waves.iter().enumerate() {
            let checks = if w.checks.is_empty() {
                "the default checks".to_owned()
            } else {
                w.checks.join(", ")
            };
            let _ = writeln!(
                out,
                "    wave {} {:?}: {} (soak {}; {checks})",
                i + 1,
                w.name,
                w.namespaces.join(", "),
                humantime::format_duration(w.soak)
            );
        }
    }
    for a in &cfg.analyses {
        let _ = writeln!(
            out,
            "  analysis {}: baseline {} vs canary {}",
            a.name, a.baseline, a.canary
        );
    }
    print_ignoring_closed_pipe(&out);
    ExitCode::SUCCESS
}

/// The problems `check-config` and `serve` refuse a config file for, in one format.
fn print_problems(file: &std::path::Path, problems: &[String]) {
    eprintln!("{} problem(s) in {}:", problems.len(), file.display());
    for p in problems {
        eprintln!("  - {p}");
    }
}

/// Writes to stdout; a reader that went away (`| head`) is not an error worth a panic.
fn print_ignoring_closed_pipe(text: &str) {
    use std::io::Write;
    let mut stdout = std::io::stdout().lock();
    match stdout
        .write_all(text.as_bytes())
        .and_then(|()| stdout.flush())
    {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => {}
        Err(e) => eprintln!("error: writing to stdout: {e}"),
    }
}

/// `serve`: the daemon until SIGTERM or Ctrl-C; a start error is printed the way `check-config`
/// prints the same problem and exits with its code (64 bad config, 65 damaged store, 1 other).
async fn serve(path: &std::path::Path) -> ExitCode {
    let shutdown = CancellationToken::new();
    let stop = shutdown.clone();
    let signalled = wait_for_signal();
    tokio::spawn(async move {
        signalled.await;
        stop.cancel();
    });
    let result = match Config::load(path) {
        Ok(cfg) => {
            let listen = Listener::Bind(cfg.server.listen);
            meshgate::daemon::run(cfg, listen, shutdown).await
        }
        Err(e) => Err(StartError::from(e)),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => refuse(path, &e),
    }
}

/// Prints why `file` cannot be used, as `check-config` and `serve` both do, and gives the exit
/// code (64 bad config, 65 damaged store, 1 other).
fn refuse(file: &std::path::Path, e: &StartError) -> ExitCode {
    match e {
        StartError::Analyses(problems) => print_problems(file, problems),
        StartError::Config(_) | StartError::Checks(_) | StartError::Auth(_) => eprintln!("{e}"),
        _ => eprintln!("error: {e}"),
    }
    ExitCode::from(e.exit_code())
}

fn wait_for_signal() -> impl std::future::Future<Output = ()> {
    // The handlers are installed now, not at the first poll: a signal that comes after the
    // caller said "Ctrl-C to stop" must not find the default action (killed by the signal).
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let mut int = signal(SignalKind::interrupt()).expect("SIGINT handler");
        let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
        async move {
            tokio::select! {
                _ = int.recv() => {}
                _ = term.recv() => {}
            }
        }
    }
    #[cfg(not(unix))]
    async {
        let _ = tokio::signal::ctrl_c().await;
    }
}
