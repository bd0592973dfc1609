//! CLI edges through the real binary: `demo --json` writes only the JSON document on stdout
//! (banner and progress on stderr), so `meshgate demo --json | jq` works; `check-config` reads
//! `file_sd` globs as the daemon does.

use std::process::Command;

use serde_json::Value;

#[test]
fn demo_json_writes_only_the_document_on_stdout() {
    let out = Command::new(env!("CARGO_BIN_EXE_meshgate"))
        .args(["demo", "--healthy", "--json"])
        .env("NO_COLOR", "1")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let doc: Value = serde_json::from_str(&stdout)
        .unwrap_or_else(|e| panic!("stdout is not one JSON document ({e}):\n{stdout}"));
    assert_eq!(doc["verdict"], "GO", "{doc}");
    assert!(doc["checks"].as_array().is_some_and(|c| !c.is_empty()));
    // What a person reads went to stderr.
    assert!(stderr.contains("meshgate demo:"), "{stderr}");
    assert!(stderr.contains("expected GO: ok"), "{stderr}");
    assert!(
        stderr.contains("/report/analyses/demo"),
        "the report's URL: {stderr}"
    );
}

/// `demo --keep`: after the verdict the daemon stays up, the printed report URL answers the
/// page with that verdict, and Ctrl-C (SIGINT) ends the demo with its exit code.
#[test]
fn demo_keep_serves_the_report_until_interrupted() {
    use std::io::{BufRead, BufReader};
    let mut child = Command::new(env!("CARGO_BIN_EXE_meshgate"))
        .args(["demo", "--healthy", "--keep"])
        .env("NO_COLOR", "1")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut url = None;
    let mut seen = String::new();
    for line in BufReader::new(child.stdout.take().unwrap()).lines() {
        let line = line.unwrap();
        seen.push_str(&line);
        seen.push('\n');
        if let Some(u) = line.trim().strip_prefix("report: ") {
            url = Some(u.to_owned());
        }
        if line.contains("--keep: the daemon stays up") {
            break;
        }
    }
    let url = url.unwrap_or_else(|| panic!("no report URL printed:\n{seen}"));
    assert!(seen.contains("expected GO: ok"), "{seen}");
    let (status, body) = http_get(&url).unwrap_or_else(|| panic!("{url} does not answer"));
    assert_eq!(status, 200, "{url}: {body}");
    assert!(body.contains(r#"data-verdict="GO""#), "{body}");
    // Ctrl-C: the demo stops the daemon and exits 0 (the verdict was the expected one).
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    let start = std::time::Instant::now();
    let status = loop {
        if let Some(st) = child.try_wait().unwrap() {
            break st;
        }
        assert!(start.elapsed().as_secs() < 15, "demo still up after SIGINT");
        std::thread::sleep(std::time::Duration::from_millis(100));
    };
    assert!(status.success(), "{status:?}");
    assert!(http_get(&url).is_none(), "the daemon is gone after Ctrl-C");
}

/// `GET url` (plain `http://host:port/path`) over a socket: status and body, `None` when
/// nothing listens.
fn http_get(url: &str) -> Option<(u16, String)> {
    use std::io::{Read, Write};
    let rest = url.strip_prefix("http://")?;
    let (host, path) = rest.split_at(rest.find('/')?);
    let mut s = std::net::TcpStream::connect(host).ok()?;
    s.set_read_timeout(Some(std::time::Duration::from_secs(10)))
        .ok()?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut text = String::new();
    s.read_to_string(&mut text).ok()?;
    let status = text.split_whitespace().nth(1)?.parse().ok()?;
    Some((status, text))
}

/// `check-config` expands a `file_sd` glob as the daemon does: the files it matches are read and
/// counted, a bad one is named; a glob matching nothing yet is a note, not a "cannot read *.json".
#[test]
fn check_config_expands_file_sd_globs() {
    let dir = tempfile::tempdir().unwrap();
    let sd = dir.path().join("targets");
    std::fs::create_dir(&sd).unwrap();
    std::fs::write(
        sd.join("a.json"),
        r#"[{"targets": ["10.0.0.1:15020", "10.0.0.2:15020"], "labels": {"role": "proxy"}}]"#,
    )
    .unwrap();
    std::fs::write(
        sd.join("b.json"),
        r#"[{"targets": ["10.0.0.3:15020"], "labels": {}}]"#,
    )
    .unwrap();
    std::fs::write(sd.join("ignored.yaml"), "not json").unwrap();
    let cfg = dir.path().join("m.toml");
    let check = |file_sd: &str| {
        std::fs::write(
            &cfg,
            format!("[discovery]\nfile_sd = [{file_sd:?}]\n[server]\nlisten = \"127.0.0.1:0\"\n"),
        )
        .unwrap();
        let out = meshgate(&["check-config", cfg.to_str().unwrap()]);
        assert!(out.status.success(), "{out:?}");
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let out = check(&format!("{}/*.json", sd.display()));
    assert!(out.contains("3 from 2 file_sd file(s)"), "{out}");
    assert!(!out.contains("cannot read"), "{out}");
    let out = check(&format!("{}/none-*.json", sd.display()));
    assert!(out.contains("matches no file yet"), "{out}");
    assert!(!out.contains("cannot read"), "{out}");
    std::fs::write(sd.join("c.json"), "[{").unwrap();
    let (code, err) = refused(&cfg, &format!("{}/*.json", sd.display()), "");
    assert_eq!(code, Some(64), "{err}");
    assert!(
        err.contains("discovery.file_sd[0]") && err.contains("c.json"),
        "{err}"
    );
}

/// Writes a config with `file_sd` and `extra`, runs `check-config` on it, and returns its exit
/// code and stderr.
fn refused(cfg: &std::path::Path, file_sd: &str, extra: &str) -> (Option<i32>, String) {
    let sd = if file_sd.is_empty() {
        String::new()
    } else {
        format!("[discovery]\nfile_sd = [{file_sd:?}]\n")
    };
    std::fs::write(
        cfg,
        format!("{sd}[server]\nlisten = \"127.0.0.1:0\"\n{extra}"),
    )
    .unwrap();
    let out = meshgate(&["check-config", cfg.to_str().unwrap()]);
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// A pre-flight refuses what would leave the daemon without targets: a file_sd file or directory
/// that does not exist, and no target source at all; `--syntax-only` leaves the machine out.
#[test]
fn check_config_refuses_missing_file_sd_and_no_target_source() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("m.toml");
    let (code, err) = refused(&cfg, "/nonexistent-meshgate/targets/*.json", "");
    assert_eq!(code, Some(64), "{err}");
    assert!(
        err.contains(
            "discovery.file_sd[0]: directory /nonexistent-meshgate/targets does not exist"
        ),
        "{err}"
    );
    let missing = dir.path().join("targets.json");
    let (code, err) = refused(&cfg, missing.to_str().unwrap(), "");
    assert_eq!(code, Some(64), "{err}");
    assert!(
        err.contains(&format!("{} does not exist", missing.display())),
        "{err}"
    );
    let (code, err) = refused(&cfg, "", "");
    assert_eq!(code, Some(64), "{err}");
    assert!(err.contains("targets: no target source"), "{err}");
    // Away from the host: the same file passes with --syntax-only, saying what it did not read.
    std::fs::write(
        &cfg,
        "[discovery]\nfile_sd = [\"/nonexistent-meshgate/targets/*.json\"]\n",
    )
    .unwrap();
    let out = meshgate(&["check-config", "--syntax-only", cfg.to_str().unwrap()]);
    assert!(out.status.success(), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stdout).contains("not read: --syntax-only"));
}

/// `check-config` shows the checks an analysis gets by default apart from those run only when
/// named, and the `[plan]` wave by wave.
#[test]
fn check_config_shows_default_checks_and_the_plan() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("m.toml");
    std::fs::write(
        &cfg,
        r#"
[[targets]]
url = "http://127.0.0.1:1/metrics"
[plan]
name = "1.24 -> 1.25"
from_revision = "1-24-2"
to_revision = "1-25-0"
[[plan.waves]]
name = "staging"
namespaces = ["staging", "tools"]
soak = "10m"
[[plan.waves]]
name = "prod"
namespaces = ["shop"]
soak = "30m"
checks = ["error-rate"]
"#,
    )
    .unwrap();
    let out = meshgate(&["check-config", cfg.to_str().unwrap()]);
    assert!(out.status.success(), "{out:?}");
    let text = String::from_utf8_lossy(&out.stdout);
    let defaults = meshgate::judge::Catalog::builtin().default_names();
    assert!(
        text.contains(&format!("when it names none ({} of", defaults.len()))
            && text.contains(&defaults.join(", ")),
        "{text}"
    );
    assert!(
        text.contains("checks run only when named: istiod-"),
        "{text}"
    );
    assert!(
        text.contains("plan \"1.24 -> 1.25\": istio.io/rev 1-24-2 -> 1-25-0, 2 wave(s)"),
        "{text}"
    );
    assert!(
        text.contains("wave 1 \"staging\": staging, tools (soak 10m; the default checks)"),
        "{text}"
    );
    assert!(
        text.contains("wave 2 \"prod\": shop (soak 30m; error-rate)"),
        "{text}"
    );
}

/// A problem set by a `MESHGATE_*` variable names the variable, and every problem comes at once.
#[test]
fn check_config_names_the_variable_and_every_key() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("m.toml");
    std::fs::write(
        &cfg,
        "[[targets]]\nurl = \"http://127.0.0.1:1/metrics\"\n[judge]\nalpha = \"high\"\nmin_duration = 5\n",
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_meshgate"))
        .args(["check-config", cfg.to_str().unwrap()])
        .env("MESHGATE_SCRAPE__INTERVAL", "fast")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(64), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("3 problem(s)"), "{err}");
    assert!(
        err.contains("judge.alpha: invalid type: string \"high\""),
        "{err}"
    );
    assert!(
        err.contains("judge.min_duration: invalid type: integer `5`"),
        "{err}"
    );
    assert!(
        err.contains("scrape.interval: invalid value: string \"fast\", expected a duration (set by the environment variable MESHGATE_SCRAPE__INTERVAL)"),
        "{err}"
    );
}

/// Runs the `meshgate` binary with `args` and waits for it.
fn meshgate(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_meshgate"))
        .args(args)
        .output()
        .unwrap()
}
