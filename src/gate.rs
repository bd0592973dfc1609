//! `meshgate gate`: the client side for upgrade scripts. Creates (or follows) an analysis on a
//! running daemon, shows a progress line, and exits with the verdict.
//!
//! Exit codes: 0 GO, 1 NO-GO, 2 INCONCLUSIVE, 3 the daemon cannot be reached (or keeps failing
//! for `--unreachable-after`), 4 the name is taken by an analysis with another definition (its
//! verdict is not this run's: `--replace` or a fresh name), 5 `--timeout` passed while still
//! PENDING (no verdict yet: the analysis goes on), 64 the request is invalid (a `--server` that is
//! not an http(s) URL included) or the daemon refuses the token.
//!
//! With `--baseline` and `--canary` the analysis is created first, always: the same definition
//! again follows the running analysis, another one under the same name is exit 4 (or, with
//! `--replace`, the old analysis is deleted and this one started), so a re-run never reports a
//! verdict about other selectors. `--ca-file` and `--token-file` reach a daemon with TLS and `[auth]`.

use std::io::{IsTerminal, Write};
use std::time::{Duration, Instant};

use meshgate_core::api::{ErrorDoc, VerdictDoc};
use serde_json::json;

use crate::client::read_doc;
use crate::judge::Verdict;

/// Exit code for GO.
pub const EXIT_GO: u8 = 0;
/// Exit code for NO-GO.
pub const EXIT_NO_GO: u8 = 1;
/// Exit code for INCONCLUSIVE or a timeout while PENDING.
pub const EXIT_INCONCLUSIVE: u8 = 2;
/// Exit code when the daemon cannot be reached.
pub const EXIT_UNREACHABLE: u8 = 3;
/// Exit code when the name is taken by an analysis with another definition.
pub const EXIT_NAME_TAKEN: u8 = 4;
/// Exit code for an invalid request.
pub const EXIT_USAGE: u8 = 64;
/// `--timeout` passed while the verdict was still PENDING.
pub const EXIT_TIMEOUT: u8 = 5;

/// The `--server` URL, checked before anything is sent: http or https, with a host.
pub(crate) fn server_base(server: &str) -> Result<String, String> {
    let url = reqwest::Url::parse(server).map_err(|e| {
        format!("--server {server:?} is not a URL ({e}); e.g. http://meshgate:9400")
    })?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(format!(
            "--server {server:?}: scheme {:?}, expected http or https",
            url.scheme()
        ));
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err(format!("--server {server:?} has no host"));
    }
    Ok(server.trim_end_matches('/').to_owned())
}

/// What `meshgate gate` was asked (also its command line).
#[derive(Clone, Debug, clap::Args)]
pub struct GateOptions {
    /// Daemon base URL.
    #[arg(long, env = "MESHGATE_SERVER", default_value = "http://127.0.0.1:9400")]
    pub server: String,
    /// Extra trusted CA certificates (PEM) for an `https://` daemon with a private CA.
    #[arg(long, env = "MESHGATE_CA_FILE")]
    pub ca_file: Option<std::path::PathBuf>,
    /// File holding the bearer token to send (the daemon's `[auth]`); surrounding whitespace
    /// is ignored.
    #[arg(long, env = "MESHGATE_TOKEN_FILE")]
    pub token_file: Option<std::path::PathBuf>,
    /// Analysis name.
    #[arg(long)]
    pub name: String,
    /// Baseline selector (with --canary: create the analysis when missing).
    #[arg(long)]
    pub baseline: Option<String>,
    /// Canary selector.
    #[arg(long)]
    pub canary: Option<String>,
    /// Checks, comma-separated (default: all).
    #[arg(long, value_delimiter = ',')]
    pub checks: Vec<String>,
    /// Per-analysis alpha.
    #[arg(long)]
    pub alpha: Option<f64>,
    /// Per-analysis minimum duration (e.g. 5m).
    #[arg(long)]
    pub min_duration: Option<String>,
    /// Per-analysis maximum duration (e.g. 1h).
    #[arg(long)]
    pub max_duration: Option<String>,
    /// Per-analysis minimum exposure.
    #[arg(long)]
    pub min_exposure: Option<f64>,
    /// Time between polls.
    #[arg(long, default_value = "5s", value_parser = humantime::parse_duration)]
    pub poll: Duration,
    /// Exit 2 if still PENDING after this long.
    #[arg(long, value_parser = humantime::parse_duration)]
    pub timeout: Option<Duration>,
    /// Exit 3 when the daemon keeps failing this long.
    #[arg(long, default_value = "60s", value_parser = humantime::parse_duration)]
    pub unreachable_after: Duration,
    /// Print the final verdict document (evidence) as JSON.
    #[arg(long)]
    pub json: bool,
    /// Delete the analysis after its final verdict.
    #[arg(long)]
    pub delete: bool,
    /// When --name is taken by an analysis with another definition, delete that one and start
    /// this one (without it: exit 4).
    #[arg(long)]
    pub replace: bool,
    /// What is compared with what: `concurrent` (the same workloads on both revisions at once),
    /// or `before-after` for a namespace wave (each moved workload after its move against itself
    /// before it; start the gate before the namespaces move). Default: `before-after` when
    /// --moving is given, else `concurrent`.
    #[arg(long, value_enum)]
    pub design: Option<GateDesign>,
    /// The namespaces that move (before-after), comma-separated.
    #[arg(long, value_delimiter = ',')]
    pub moving: Vec<String>,
}

/// `--design`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum GateDesign {
    /// The same workloads on both revisions at once.
    Concurrent,
    /// A namespace wave: before/after with a concurrent control.
    BeforeAfter,
}

enum Step {
    Done(u8),
    Progress,
    Transient(String),
}

fn exit_for(verdict: Verdict) -> Option<u8> {
    match verdict {
        Verdict::Go => Some(EXIT_GO),
        Verdict::NoGo => Some(EXIT_NO_GO),
        Verdict::Inconclusive => Some(EXIT_INCONCLUSIVE),
        Verdict::Pending => None,
    }
}

/// Run the gate; returns the exit code. Progress goes to stderr, the result to stdout.
pub async fn run(o: GateOptions) -> u8 {
    let base = match server_base(&o.server) {
        Ok(b) => b,
        Err(e) => {
            eprintln!("meshgate gate: {e}");
            return EXIT_USAGE;
        }
    };
    let client = match client(&o) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("meshgate gate: {e}");
            return EXIT_USAGE;
        }
    };
    let started = Instant::now();
    let mut last_ok = Instant::now();
    let mut created = false;
    let tty = std::io::stderr().is_terminal();
    let mut last_line = String::new();
    loop {
        let step = poll_once(
            &client,
            &base,
            &o,
            &mut created,
            &mut last_line,
            tty,
            started,
        )
        .await;
        match step {
            Step::Done(code) => return code,
            Step::Progress => last_ok = Instant::now(),
            Step::Transient(e) => {
                if last_ok.elapsed() >= o.unreachable_after {
                    if tty {
                        eprintln!();
                    }
                    eprintln!("meshgate gate: cannot reach the daemon at {base}: {e}");
                    return EXIT_UNREACHABLE;
                }
                eprintln!("meshgate gate: {e} (retrying)");
            }
        }
        if let Some(t) = o.timeout {
            if started.elapsed() >= t {
                if tty {
                    eprintln!();
                }
                eprintln!(
                    "meshgate gate: still PENDING after {} (the analysis goes on); exiting {EXIT_TIMEOUT}",
                    humantime::format_duration(t)
                );
                return EXIT_TIMEOUT;
            }
        }
        tokio::time::sleep(o.poll).await;
    }
}

/// The HTTP client: 10 s per request, the extra CA and the bearer token when given.
fn client(o: &GateOptions) -> Result<reqwest::Client, String> {
    let mut b = reqwest::Client::builder().timeout(Duration::from_secs(10));
    if o.ca_file.is_some() {
        let tls = crate::tls::ClientTls {
            ca_file: o.ca_file.clone(),
            ..Default::default()
        };
        b = tls
            .apply(b, "gate")
            .map_err(|e| format!("--ca-file: {e}"))?;
    }
    if let Some(path) = &o.token_file {
        let token = std::fs::read_to_string(path)
            .map_err(|e| format!("--token-file {}: {e}", path.display()))?;
        let token = token.trim();
        if token.is_empty() {
            return Err(format!(
                "--token-file {}: the file is empty",
                path.display()
            ));
        }
        let mut value = reqwest::header::HeaderValue::from_str(&format!("Bearer {token}"))
            .map_err(|_| format!("--token-file {}: not a valid token", path.display()))?;
        value.set_sensitive(true);
        let mut headers = reqwest::header::HeaderMap::new();
        headers.insert(reqwest::header::AUTHORIZATION, value);
        b = b.default_headers(headers);
    }
    b.build()
        .map_err(|e| format!("cannot build an http client: {e}"))
}

async fn poll_once(
    client: &reqwest::Client,
    base: &str,
    o: &GateOptions,
    created: &mut bool,
    last_line: &mut String,
    tty: bool,
    started: Instant,
) -> Step {
    if !*created {
        if let (Some(b), Some(c)) = (&o.baseline, &o.canary) {
            return create(client, base, o, b, c, created).await;
        }
    }
    let url = format!("{base}/v1/analyses/{}/verdict", o.name);
    let r = match client.get(&url).send().await {
        Ok(r) => r,
        Err(e) => return Step::Transient(format!("GET {url}: {}", crate::tls::error_chain(&e))),
    };
    let status = r.status();
    if status == reqwest::StatusCode::UNAUTHORIZED || status == reqwest::StatusCode::FORBIDDEN {
        eprintln!(
            "meshgate gate: the daemon refused the token ({status}); pass --token-file with a token of the right scope"
        );
        return Step::Done(EXIT_USAGE);
    }
    if status == reqwest::StatusCode::NOT_FOUND && !*created {
        eprintln!(
            "meshgate gate: no analysis {:?} on {base}; pass --baseline and --canary to create it",
            o.name
        );
        return Step::Done(EXIT_USAGE);
    }
    if !status.is_success() {
        let text = r.text().await.unwrap_or_default();
        return Step::Transient(format!("GET {url}: {status}: {text}"));
    }
    // A document this gate cannot read (another daemon version) is retried like an unreachable
    // daemon, with the serde error naming the field, and never shown as an unknown verdict.
    let doc: VerdictDoc = match read_doc(&format!("GET {url}"), r).await {
        Ok(d) => d,
        Err(e) => return Step::Transient(e.to_string()),
    };
    let verdict = doc.verdict;
    let line = format!(
        "[{:>5.0}s] {:<12} e={:.3}/{:.0}  {}",
        started.elapsed().as_secs_f64(),
        verdict.as_str(),
        doc.e_value,
        doc.threshold,
        doc.reason
    );
    if tty {
        eprint!("\r\x1b[2K{line}");
        let _ = std::io::stderr().flush();
    } else if line.split_once(']').map(|x| x.1) != last_line.split_once(']').map(|x| x.1) {
        eprintln!("{line}");
    }
    *last_line = line;
    let Some(code) = exit_for(verdict) else {
        return Step::Progress;
    };
    if tty {
        eprintln!();
    }
    if o.json {
        println!("{}", serde_json::to_string_pretty(&doc).unwrap_or_default());
    } else {
        println!("{}: {}", verdict.as_str(), doc.reason);
    }
    if o.delete {
        let _ = client
            .delete(format!("{base}/v1/analyses/{}", o.name))
            .send()
            .await;
    }
    Step::Done(code)
}

/// Create the analysis (POST): 201 started, 200 the same definition is running (follow it), 409
/// another definition holds the name (exit 4, or delete it with `--replace` and try again).
async fn create(
    client: &reqwest::Client,
    base: &str,
    o: &GateOptions,
    baseline: &str,
    canary: &str,
    created: &mut bool,
) -> Step {
    let mut body = json!({"name": o.name, "baseline": baseline, "canary": canary});
    // No --check: the field is left out, which means the default set ("checks": [] is a 422).
    if !o.checks.is_empty() {
        body["checks"] = json!(o.checks);
    }
    if let Some(a) = o.alpha {
        body["alpha"] = json!(a);
    }
    if let Some(d) = &o.min_duration {
        body["min_duration"] = json!(d);
    }
    if let Some(d) = &o.max_duration {
        body["max_duration"] = json!(d);
    }
    if let Some(x) = o.min_exposure {
        body["min_exposure"] = json!(x);
    }
    // The design: chosen by --moving unless told (the daemon refuses a before/after analysis
    // without namespaces, and --moving with --design concurrent, naming the key).
    let moving: Vec<&str> = o
        .moving
        .iter()
        .map(|m| m.trim())
        .filter(|m| !m.is_empty())
        .collect();
    let design = o.design.unwrap_or(if moving.is_empty() {
        GateDesign::Concurrent
    } else {
        GateDesign::BeforeAfter
    });
    if design == GateDesign::BeforeAfter || !moving.is_empty() {
        body["design"] = json!(match design {
            GateDesign::Concurrent => "concurrent",
            GateDesign::BeforeAfter => "before_after",
        });
        body["moving"] = json!(moving);
    }
    let post = || async {
        client
            .post(format!("{base}/v1/analyses"))
            .json(&body)
            .send()
            .await
            .map_err(|e| format!("POST {base}/v1/analyses: {}", crate::tls::error_chain(&e)))
    };
    let mut r = match post().await {
        Ok(r) => r,
        Err(e) => return Step::Transient(e),
    };
    if r.status() == reqwest::StatusCode::CONFLICT && o.replace {
        let text = r.text().await.unwrap_or_default();
        eprintln!(
            "meshgate gate: --replace: deleting the analysis {:?} of another definition ({text})",
            o.name
        );
        let url = format!("{base}/v1/analyses/{}", o.name);
        match client.delete(&url).send().await {
            Ok(d) if d.status().is_success() || d.status() == reqwest::StatusCode::NOT_FOUND => {}
            Ok(d) => return Step::Transient(format!("DELETE {url}: {}", d.status())),
            Err(e) => {
                return Step::Transient(format!("DELETE {url}: {}", crate::tls::error_chain(&e)))
            }
        }
        r = match post().await {
            Ok(r) => r,
            Err(e) => return Step::Transient(e),
        };
    }
    let s = r.status();
    if s == reqwest::StatusCode::CREATED {
        *created = true;
        eprintln!("meshgate gate: analysis {} started on {base}", o.name);
        return Step::Progress;
    }
    if s.is_success() {
        *created = true;
        eprintln!(
            "meshgate gate: analysis {} is already running on {base} with this definition; following it",
            o.name
        );
        return Step::Progress;
    }
    let text = r.text().await.unwrap_or_default();
    if s == reqwest::StatusCode::CONFLICT {
        // The error document's message; a body that is not one is shown as it came.
        let msg = serde_json::from_str::<ErrorDoc>(&text).map_or(text, |d| d.error.message);
        eprintln!(
            "meshgate gate: {msg}\nmeshgate gate: pass --replace to delete it and start this one, or use a fresh --name; exiting {EXIT_NAME_TAKEN}"
        );
        return Step::Done(EXIT_NAME_TAKEN);
    }
    if s == reqwest::StatusCode::UNAUTHORIZED || s == reqwest::StatusCode::FORBIDDEN {
        eprintln!(
            "meshgate gate: the daemon refused the token ({s}); pass --token-file with a token of the right scope"
        );
        return Step::Done(EXIT_USAGE);
    }
    if s.is_client_error() {
        eprintln!("meshgate gate: the daemon refused the analysis ({s}): {text}");
        return Step::Done(EXIT_USAGE);
    }
    Step::Transient(format!("POST {base}/v1/analyses: {s}: {text}"))
}
