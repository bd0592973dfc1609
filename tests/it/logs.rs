//! Log output through the real binary (issue 14): no ANSI codes when stderr is not a terminal,
//! and `--log-format json` writes one JSON object a line.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::Value;

/// The first `n` stderr lines of `meshgate serve` on 127.0.0.1:0 with `args` added; then kill it.
fn first_lines(args: &[&str], n: usize) -> Vec<String> {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("meshgate.toml");
    std::fs::write(&cfg, "[server]\nlisten = \"127.0.0.1:0\"\n").unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_meshgate"))
        .arg("serve")
        .arg("--config")
        .arg(&cfg)
        .args(args)
        .env("MESHGATE_LOG", "info")
        .env_remove("NO_COLOR")
        .env_remove("MESHGATE_LOG_FORMAT")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines() {
            let Ok(line) = line else { return };
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut out = Vec::new();
    while out.len() < n {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(l) => out.push(l),
            Err(_) => break,
        }
    }
    child.kill().unwrap();
    let _ = child.wait();
    assert_eq!(out.len(), n, "serve wrote fewer log lines: {out:?}");
    out
}

#[test]
fn logs_to_a_pipe_carry_no_ansi_codes() {
    for line in first_lines(&[], 2) {
        assert!(!line.contains("\x1b["), "{line:?}");
        assert!(
            ["INFO", "WARN", "ERROR"].iter().any(|l| line.contains(l)),
            "{line:?}"
        );
    }
}

#[test]
fn logs_in_json_format_are_one_object_a_line() {
    for args in [&["--log-format", "json"][..], &["--log-format=json"]] {
        for line in first_lines(args, 2) {
            assert!(!line.contains("\x1b["), "{line:?}");
            let v: Value = serde_json::from_str(&line).unwrap_or_else(|e| panic!("{e}: {line}"));
            let level = v["level"].as_str().unwrap_or_default();
            assert!(["INFO", "WARN", "ERROR"].contains(&level), "{line}");
            assert!(!v["message"].as_str().unwrap().is_empty(), "{line}");
            assert!(v["timestamp"].is_string(), "{line}");
        }
    }
}
