//! The open-file limit through the real binary (issue 16): `meshgate serve` started with a low
//! soft limit raises it to the hard one and says so, with how many targets fit.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// `Max open files` soft and hard limits of a running process, from /proc.
fn open_files(pid: u32) -> (u64, u64) {
    let text = std::fs::read_to_string(format!("/proc/{pid}/limits")).unwrap();
    let line = text
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .unwrap()
        .to_owned();
    // "Max open files  <soft>  <hard>  files"; "unlimited" reads as u64::MAX.
    let v: Vec<u64> = line
        .split_whitespace()
        .skip(3)
        .take(2)
        .map(|w| w.parse().unwrap_or(u64::MAX))
        .collect();
    (v[0], v[1])
}

#[test]
fn serve_raises_a_low_soft_open_file_limit_to_the_hard_one_and_logs_it() {
    let hard = {
        let me = std::process::id();
        open_files(me).1
    };
    if hard <= 512 || hard == u64::MAX {
        eprintln!("skipped: the hard open-file limit here is {hard}, not a number to raise to");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("meshgate.toml");
    std::fs::write(&cfg, "[server]\nlisten = \"127.0.0.1:0\"\n").unwrap();
    // The shell lowers only the soft limit, then becomes meshgate.
    let mut child = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "ulimit -Sn 512 && exec {} serve --config {}",
            env!("CARGO_BIN_EXE_meshgate"),
            cfg.display()
        ))
        .env("MESHGATE_LOG", "info")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let t = Instant::now();
    let mut said = None;
    while t.elapsed() < Duration::from_secs(20) {
        let Some(Ok(line)) = lines.next() else { break };
        if line.contains("open-file limit") {
            said = Some(line);
            break;
        }
    }
    let (soft, now_hard) = open_files(child.id());
    child.kill().unwrap();
    let _ = child.wait();
    let said = said.expect("serve logs its open-file limit");
    assert!(
        said.contains(&format!("raised from 512 to {hard} (hard {hard})")),
        "{said}"
    );
    assert!(said.contains("scrape targets"), "{said}");
    assert_eq!((soft, now_hard), (hard, hard));
}
