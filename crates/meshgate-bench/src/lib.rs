//! meshgate's benchmark harnesses (not part of the shipped daemon binary).
//!
//! # Layout
//!
//! [`selfmetrics`] reads a daemon's /metrics with the production parser;
//! [`scale`] N simulated sidecars scraped by meshgate and by Prometheus, side by side;
//! [`loadtest`] the API load and soak harness; [`storebench`] engine command latency while the
//! store commits; [`judge`] the decision benchmark; [`waves`] namespace
//! waves on a heterogeneous mesh.

pub mod judge;
pub mod loadtest;
pub mod scale;
pub mod selfmetrics;
pub mod storebench;
pub mod waves;

use std::path::PathBuf;

/// The `meshgate` binary the harnesses start: `MESHGATE_BIN`, else the one next to this program.
pub fn meshgate_exe() -> std::io::Result<PathBuf> {
    if let Some(p) = std::env::var_os("MESHGATE_BIN") {
        return Ok(PathBuf::from(p));
    }
    let me = std::env::current_exe()?;
    let dir = me
        .parent()
        .ok_or_else(|| std::io::Error::other("no directory"))?;
    // Test and bench executables live one level down, in deps/.
    for d in [dir, dir.parent().unwrap_or(dir)] {
        let p = d.join(format!("meshgate{}", std::env::consts::EXE_SUFFIX));
        if p.is_file() {
            return Ok(p);
        }
    }
    Err(std::io::Error::new(
        std::io::ErrorKind::NotFound,
        format!(
            "no meshgate binary next to {} (build it with `cargo build --release -p meshgate`, or set MESHGATE_BIN)",
            me.display()
        ),
    ))
}
