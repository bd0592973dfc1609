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
        let out = Command::new(env!("CARGO_BIN_EXE_meshgate"))
            .args(["check-config", cfg.to_str().unwrap()])
            .output()
            .unwrap();
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
    let out = check(&format!("{}/*.json", sd.display()));
    assert!(
        out.contains("warning: discovery.file_sd") && out.contains("c.json"),
        "{out}"
    );
}
