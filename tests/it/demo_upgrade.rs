//! `meshgate demo --scenario upgrade` and `upgrade-regression` through the real binary: the
//! autopilot's whole run against the Kubernetes API double and a simulated mesh, in well under
//! two minutes, its exit code saying whether the run ended as the scenario expects.
//!
//! One test runs both scenarios one after the other: each is a daemon scraping 12 sidecars
//! every 250 ms, and two at once beside the autopilot's own end-to-end test (same filter) left
//! that test's wave INCONCLUSIVE on two busy cores.

use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::Value;

fn demo(args: &[&str]) -> (Option<i32>, String, String, Duration) {
    let t = Instant::now();
    let out = Command::new(env!("CARGO_BIN_EXE_meshgate"))
        .arg("demo")
        .args(args)
        .env_remove("MESHGATE_SERVER")
        .output()
        .unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
        t.elapsed(),
    )
}

/// Both scenarios, in turn.
#[test]
fn the_upgrade_demos_end_as_their_scenarios_expect() {
    upgrade_runs_both_waves_to_go();
    upgrade_regression_rolls_wave_2_back_and_json_is_one_document();
}

/// Nothing changes: both waves GO, each relabelled and restarted only after its pre-move
/// window, judged only once its pods run the new sidecar; the traffic ends on the new revision
/// in shop and pay, ads (never in the plan) stays.
fn upgrade_runs_both_waves_to_go() {
    let (code, stdout, stderr, took) = demo(&["--scenario", "upgrade"]);
    assert_eq!(code, Some(0), "{stdout}\n{stderr}");
    let lines: Vec<&str> = stdout.lines().collect();
    let pos = |p: &str| {
        lines
            .iter()
            .position(|l| l.starts_with(p))
            .unwrap_or_else(|| panic!("no line starting {p:?}:\n{stdout}"))
    };
    assert!(pos("WAIT pre-move") < pos("PATCH /api/v1/namespaces/shop"));
    assert!(
        pos("PATCH /api/v1/namespaces/shop")
            < pos("PATCH /apis/apps/v1/namespaces/shop/deployments/cart")
    );
    assert!(
        pos("   [mesh] shop: rollouts done, pods on revision 1-25-0") < pos("WAIT verdict GET")
    );
    assert!(pos("WAIT sidecars pay: revision 1-25-0") > pos("PATCH /api/v1/namespaces/pay"));
    assert!(
        stdout.contains("  autopilot exit code 0 (expected 0)"),
        "{stdout}"
    );
    assert!(
        stdout.contains("  wave w1: go (expected go); verdict GO"),
        "{stdout}"
    );
    assert!(
        stdout.contains("  wave w2: go (expected go); verdict GO"),
        "{stdout}"
    );
    assert!(
        stdout.contains(
            r#"namespace pay   (w2): traffic on revision 1-25-0; labels {"istio.io/rev":"1-25-0"}"#
        ),
        "{stdout}"
    );
    assert!(
        stdout.contains(r#"namespace ads   (never moved): traffic on revision 1-24-2; labels {"istio.io/rev":"1-24-2"}"#),
        "{stdout}"
    );
    assert!(stdout.contains("upgrade run as expected in"), "{stdout}");
    assert!(!stdout.contains("UNEXPECTED"), "{stdout}");
    assert!(
        stderr.contains("meshgate upgrade: every wave GO"),
        "{stderr}"
    );
    assert!(took < Duration::from_secs(120), "{took:?}");
}

/// The new revision turns 4x worse after wave 1: wave 2 NO-GO and rolled back (the autopilot
/// exits 1, which is what this scenario expects, so the demo exits 0). Under `--json` stdout
/// holds only the document, the autopilot's calls going to stderr.
fn upgrade_regression_rolls_wave_2_back_and_json_is_one_document() {
    let (code, stdout, stderr, took) = demo(&["--scenario", "upgrade-regression", "--json"]);
    assert_eq!(code, Some(0), "{stdout}\n{stderr}");
    let doc: Value = serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("{e}: {stdout}"));
    assert_eq!(doc["scenario"], "upgrade-regression", "{doc}");
    assert_eq!(doc["ok"], true, "{doc}");
    assert_eq!(doc["autopilot_exit_code"], 1, "{doc}");
    assert_eq!(doc["run"]["waves"][0]["phase"], "go", "{doc}");
    assert_eq!(doc["run"]["waves"][1]["phase"], "rolled_back", "{doc}");
    let v = doc["run"]["waves"][1]["verdict"].as_str().unwrap();
    assert!(v.starts_with("NO-GO") && v.contains("error-rate"), "{v}");
    assert_eq!(doc["namespaces"]["pay"]["traffic_on"], "1-24-2", "{doc}");
    assert_eq!(
        doc["namespaces"]["pay"]["labels"],
        serde_json::json!({"istio-injection": "enabled"}),
        "{doc}"
    );
    assert_eq!(doc["namespaces"]["shop"]["traffic_on"], "1-25-0", "{doc}");
    assert!(stderr.contains("PATCH /api/v1/namespaces/pay application/merge-patch+json {\"metadata\":{\"labels\":{\"istio-injection\":\"enabled\",\"istio.io/rev\":null}}}"), "{stderr}");
    assert!(
        stderr.contains("[mesh] pay: rollouts done, pods on revision default"),
        "{stderr}"
    );
    assert!(
        stderr.contains("meshgate upgrade: wave w2 NO-GO"),
        "{stderr}"
    );
    assert!(took < Duration::from_secs(120), "{took:?}");
}
