//! CLI edges through the real binary: `demo --json` writes only the JSON document on stdout
//! (banner and progress on stderr), so `meshgate demo --json | jq` works.

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
