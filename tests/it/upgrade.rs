//! `meshgate upgrade` (the autopilot), through the real binary, against the Kubernetes API-server
//! double (`meshgate::sim::kubeapi`, re-exported by tests/it/kubeapi.rs) and a real daemon
//! judging a simulated mesh (tests/it/support.rs).
//!
//! The daemon judges each wave's analysis: the tests create `plan-<wave>` on it before the run
//! (the autopilot follows an analysis of that id when it exists, as the daemon's own `[plan]`
//! creates it) with the selectors of the lab's healthy mesh (GO) or of its mesh whose canary
//! returns 1% 5xx (NO-GO): a real verdict of the real judge, not one made up for the test.
//!
//! The last test has no analysis made for it: the autopilot creates each wave's itself on a
//! daemon scraping a staged simulated mesh whose traffic moves when the double's rollouts of a
//! namespace are done, so each verdict comes from the autopilot's own move.

use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use meshgate::config::{Config, StaticTarget};
use meshgate::sim::{Cohort, Fault, SimConfig, SimMesh};

use serde_json::{json, Value};

use crate::kubeapi::{kubeconfig, KubeApi, Request};
use crate::support::{analysis, daemon, lab, Lab, BAD, GOOD};

const NS_PATH: &str = "/api/v1/namespaces/";

/// The plan: wave `w1` moves `shop`, wave `w2` moves `pay` and `ads`.
fn write_config(dir: &Path, api: &str) -> PathBuf {
    let p = dir.join("meshgate.toml");
    std::fs::write(
        &p,
        format!(
            r#"
[discovery.kubernetes]
api_server = "{api}"
cluster = "test"

[plan]
name = "1.24 -> 1.25"
from_revision = "1-24-2"
to_revision = "1-25-0"

[[plan.waves]]
name = "w1"
namespaces = ["shop"]
soak = "300ms"
pre_move = "300ms"

[[plan.waves]]
name = "w2"
namespaces = ["pay", "ads"]
soak = "0s"
pre_move = "0s"
"#
        ),
    )
    .unwrap();
    p
}

/// The cluster before the upgrade: `shop` on the old revision by label, `pay` injected the
/// default way (`istio-injection=enabled`), `ads` on the old revision with a label of its own.
async fn cluster() -> KubeApi {
    let api = KubeApi::start().await;
    api.namespace("shop", json!({"istio.io/rev": "1-24-2"}));
    api.namespace("pay", json!({"istio-injection": "enabled"}));
    api.namespace("ads", json!({"istio.io/rev": "1-24-2", "team": "ads"}));
    api.namespace("meshgate", json!({}));
    api.workload("deployments", "shop", "cart", 2);
    api.workload("statefulsets", "shop", "db", 1);
    api.workload("deployments", "pay", "checkout", 2);
    api.workload("daemonsets", "pay", "agent", 0);
    api.workload("deployments", "ads", "banner", 1);
    api
}

const WORKLOADS: [(&str, &str, &str); 5] = [
    ("deployments", "shop", "cart"),
    ("statefulsets", "shop", "db"),
    ("deployments", "pay", "checkout"),
    ("daemonsets", "pay", "agent"),
    ("deployments", "ads", "banner"),
];

struct Out {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

/// Run `meshgate upgrade` with `args` (off the runtime's threads: the double and the daemon
/// keep serving meanwhile); `--verdict-timeout 60s` unless `args` give one.
async fn upgrade(config: &Path, state: &Path, args: &[&str]) -> Out {
    let mut a: Vec<String> = vec![
        "upgrade".into(),
        "--config".into(),
        config.display().to_string(),
        "--state".into(),
        state.display().to_string(),
        "--poll".into(),
        "100ms".into(),
        "--lease-duration".into(),
        "3s".into(),
    ];
    if !args.contains(&"--verdict-timeout") {
        a.extend(["--verdict-timeout".into(), "60s".into()]);
    }
    a.extend(args.iter().map(|s| s.to_string()));
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new(env!("CARGO_BIN_EXE_meshgate"))
            .args(&a)
            .env_remove("MESHGATE_SERVER")
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    Out {
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

async fn kubectl(kubeconfig: &Path, cache: &Path, args: &[&str]) -> String {
    let mut a: Vec<String> = vec![
        "--kubeconfig".into(),
        kubeconfig.display().to_string(),
        "--cache-dir".into(),
        cache.display().to_string(),
        "--request-timeout".into(),
        "10s".into(),
    ];
    a.extend(args.iter().map(|s| s.to_string()));
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new("/usr/bin/kubectl")
            .args(&a)
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    assert!(
        out.status.success(),
        "kubectl {:?}: {}",
        args,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A lab daemon with the waves' analyses created: `w2` judged on the mesh given.
async fn judged(w2: (&str, &str)) -> Lab {
    let l = lab("").await;
    let c = reqwest::Client::new();
    for (name, revs) in [("plan-w1", GOOD), ("plan-w2", w2)] {
        let r = c
            .post(format!("{}/v1/analyses", l.base))
            .json(&analysis(name, revs))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 201, "{}", r.text().await.unwrap());
    }
    l
}

fn now_micro() -> String {
    humantime::format_rfc3339_micros(SystemTime::now()).to_string()
}

/// The namespace patches, as (namespace, body).
/// No namespace relabelled and no workload restarted in `log`.
fn assert_moves_nothing(log: &[Request]) {
    assert!(
        ns_patches(log).is_empty() && restarts(log).is_empty(),
        "{log:?}"
    );
}

fn ns_patches(log: &[Request]) -> Vec<(String, Value)> {
    log.iter()
        .filter(|r| r.method == "PATCH" && r.path().starts_with(NS_PATH) && r.code == 200)
        .map(|r| {
            (
                r.path()[NS_PATH.len()..].to_owned(),
                r.body.clone().unwrap(),
            )
        })
        .collect()
}

fn restarts(log: &[Request]) -> Vec<&Request> {
    log.iter()
        .filter(|r| r.method == "PATCH" && r.path().starts_with("/apis/apps/v1/"))
        .collect()
}

fn state(path: &Path) -> Value {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dry_run_prints_every_call_in_order_and_writes_nothing() {
    let api = cluster().await;
    let dir = tempfile::tempdir().unwrap();
    let cfg = write_config(dir.path(), &api.url());
    let st = dir.path().join("state.json");
    // No daemon at all: a dry run does not ask it.
    let out = upgrade(&cfg, &st, &["--server", "http://127.0.0.1:9"]).await;
    assert_eq!(out.code, Some(0), "{}\n{}", out.stdout, out.stderr);
    assert!(out.stderr.contains("dry run"), "{}", out.stderr);
    // The daemon cannot be asked: the istiod pre-check is said to be skipped, not passed.
    assert!(
        out.stderr.contains(
            "dry run: the istiod pre-check was skipped: GET http://127.0.0.1:9/v1/targets"
        ) && !out.stderr.contains("scraped and up"),
        "{}",
        out.stderr
    );
    assert!(api.writes().is_empty(), "{:?}", api.writes());
    assert!(!st.exists(), "a dry run writes no state");
    assert_eq!(api.labels("pay"), json!({"istio-injection": "enabled"}));
    // The calls in order: pre-checks, the lease, then per wave the analysis, the relabel, the
    // restarts, the waits.
    let lines: Vec<&str> = out.stdout.lines().collect();
    let pos = |prefix: &str| {
        lines
            .iter()
            .position(|l| l.starts_with(prefix))
            .unwrap_or_else(|| panic!("no line {prefix:?} in\n{}", out.stdout))
    };
    let order = [
        "POST /apis/authorization.k8s.io/v1/selfsubjectaccessreviews",
        "GET /api/v1/namespaces/shop",
        "GET http://127.0.0.1:9/v1/targets",
        "GET http://127.0.0.1:9/v1/skew",
        "GET /apis/coordination.k8s.io/v1/namespaces/meshgate/leases/meshgate-upgrade",
        "POST /apis/coordination.k8s.io/v1/namespaces/meshgate/leases application/json",
        "GET http://127.0.0.1:9/v1/analyses/plan-w1",
        "POST http://127.0.0.1:9/v1/analyses application/json {",
        "WAIT pre-move 300ms",
        r#"PATCH /api/v1/namespaces/shop application/merge-patch+json {"metadata":{"labels":{"istio-injection":null,"istio.io/rev":"1-25-0"},"resourceVersion":""#,
        "PATCH /apis/apps/v1/namespaces/shop/deployments/cart application/strategic-merge-patch+json {\"spec\":{\"template\":{\"metadata\":{\"annotations\":{\"kubectl.kubernetes.io/restartedAt\":\"",
        "PATCH /apis/apps/v1/namespaces/shop/statefulsets/db application/strategic-merge-patch+json",
        "WAIT rollout shop/deployments/cart",
        "WAIT verdict GET http://127.0.0.1:9/v1/analyses/plan-w1/verdict",
        "WAIT soak 300ms",
        "PATCH /api/v1/namespaces/pay application/merge-patch+json",
        "PATCH /api/v1/namespaces/ads application/merge-patch+json",
        "PATCH /apis/apps/v1/namespaces/pay/deployments/checkout",
        "PATCH /apis/apps/v1/namespaces/pay/daemonsets/agent",
        "PATCH /apis/apps/v1/namespaces/ads/deployments/banner",
        "WAIT verdict GET http://127.0.0.1:9/v1/analyses/plan-w2/verdict",
    ];
    let at: Vec<usize> = order.iter().map(|p| pos(p)).collect();
    assert!(at.windows(2).all(|w| w[0] < w[1]), "{at:?}\n{}", out.stdout);
    // The wave's analysis is the plan's before/after one.
    let create = lines[pos("POST http://127.0.0.1:9/v1/analyses application/json {")]
        .split_once("application/json ")
        .unwrap()
        .1;
    let body: Value = serde_json::from_str(create).unwrap();
    assert_eq!(body["design"], "before_after");
    assert_eq!(body["moving"], json!(["shop"]));
    assert!(
        body.get("checks").is_none(),
        "unset checks stay out: {body}"
    );
    // The RBAC manifest grants exactly what the run asked (least privilege, nothing missing).
    let asked: BTreeSet<String> = api
        .log()
        .iter()
        .filter(|r| r.uri.contains("selfsubjectaccessreviews"))
        .map(|r| {
            let a = &r.body.as_ref().unwrap()["spec"]["resourceAttributes"];
            let g = a["group"].as_str().unwrap();
            let res = a["resource"].as_str().unwrap();
            let res = if g.is_empty() {
                res.to_owned()
            } else {
                format!("{res}.{g}")
            };
            format!("{} {res}", a["verb"].as_str().unwrap())
        })
        .collect();
    assert_eq!(
        asked,
        rbac_grants(),
        "deploy/kubernetes/autopilot-rbac.yaml"
    );
}

/// `verb resource[.group]` of every rule of the autopilot's Role and ClusterRole.
fn rbac_grants() -> BTreeSet<String> {
    let text = std::fs::read_to_string(format!(
        "{}/deploy/kubernetes/autopilot-rbac.yaml",
        env!("CARGO_MANIFEST_DIR")
    ))
    .unwrap();
    let mut out = BTreeSet::new();
    let mut kinds = BTreeSet::new();
    for d in serde_yaml::Deserializer::from_str(&text) {
        let d: serde_yaml::Value = serde::Deserialize::deserialize(d).unwrap();
        kinds.insert(d["kind"].as_str().unwrap().to_owned());
        for rule in d["rules"].as_sequence().into_iter().flatten() {
            for g in rule["apiGroups"].as_sequence().unwrap() {
                for r in rule["resources"].as_sequence().unwrap() {
                    for v in rule["verbs"].as_sequence().unwrap() {
                        let (g, r, v) = (
                            g.as_str().unwrap(),
                            r.as_str().unwrap(),
                            v.as_str().unwrap(),
                        );
                        if r == "selfsubjectaccessreviews" {
                            continue; // the reviews themselves, not asked about
                        }
                        let res = if g.is_empty() {
                            r.to_owned()
                        } else {
                            format!("{r}.{g}")
                        };
                        out.insert(format!("{v} {res}"));
                    }
                }
            }
        }
    }
    for k in [
        "ServiceAccount",
        "ClusterRole",
        "ClusterRoleBinding",
        "Role",
        "RoleBinding",
    ] {
        assert!(kinds.contains(k), "{k} missing from autopilot-rbac.yaml");
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn execute_moves_every_wave_restarts_workloads_and_kubectl_reads_the_labels() {
    let api = cluster().await;
    // A crashed autopilot's lease, expired: taken over.
    api.lease(
        "meshgate",
        "meshgate-upgrade",
        "crashed-run",
        "2026-01-01T00:00:00.000000Z",
        15,
    );
    // Someone edits shop between the autopilot's read and its patch (the 2nd GET: the first is
    // the pre-check): its stale resourceVersion is a 409, read again.
    api.touch_after_get("shop", 2);
    // PodDisruptionBudgets: shop's cart (2 pods) may lose none, pay's checkout one of 2.
    api.pdb("shop", "cart", "cart", json!({"minAvailable": 2}));
    api.pdb("pay", "checkout", "checkout", json!({"maxUnavailable": 1}));
    let l = judged(GOOD).await;
    let dir = tempfile::tempdir().unwrap();
    let cfg = write_config(dir.path(), &api.url());
    let st = dir.path().join("state.json");
    let out = upgrade(&cfg, &st, &["--server", &l.base, "--execute"]).await;
    assert_eq!(out.code, Some(0), "{}\n{}", out.stdout, out.stderr);
    assert!(
        out.stderr
            .contains("old control plane (revision 1-24-2) can go"),
        "{}",
        out.stderr
    );
    // The PDB that allows no disruption is warned about (not a refusal), on stderr and in the
    // run's actions; the other is not.
    assert!(
        out.stderr.contains("meshgate upgrade: warning: wave w1: PodDisruptionBudget shop/cart allows no disruption now (disruptionsAllowed 0: currentHealthy 2, desiredHealthy 2)"),
        "{}",
        out.stderr
    );
    assert!(!out.stderr.contains("pay/checkout"), "{}", out.stderr);
    assert!(
        out.stdout
            .contains("GET /apis/policy/v1/namespaces/pay/poddisruptionbudgets"),
        "{}",
        out.stdout
    );
    // The istiod pre-check asked the daemon, before the Lease, and found both revisions.
    assert!(
        out.stderr
            .contains("istiod revisions 1-24-2 and 1-25-0: scraped and up (1-24-2 http://"),
        "{}",
        out.stderr
    );
    let lines: Vec<&str> = out.stdout.lines().collect();
    let line = |p: &str| lines.iter().position(|l| l.starts_with(p)).unwrap();
    assert!(
        line(&format!("GET {}/v1/targets", l.base))
            < line("GET /apis/coordination.k8s.io/v1/namespaces/meshgate/leases/"),
        "{}",
        out.stdout
    );
    assert_eq!(
        api.labels("shop"),
        json!({"istio.io/rev": "1-25-0", "team": "payments"})
    );
    assert_eq!(api.labels("pay"), json!({"istio.io/rev": "1-25-0"}));
    assert_eq!(
        api.labels("ads"),
        json!({"istio.io/rev": "1-25-0", "team": "ads"})
    );
    for (k, ns, n) in WORKLOADS {
        assert_eq!(
            api.pods_rev(k, ns, n).as_deref(),
            Some("1-25-0"),
            "{ns}/{k}/{n}"
        );
        let o = api.object(k, ns, n);
        assert!(
            o["spec"]["template"]["metadata"]["annotations"]["kubectl.kubernetes.io/restartedAt"]
                .is_string(),
            "{o}"
        );
        assert_eq!(o["metadata"]["generation"], 2, "restarted once: {o}");
    }
    let log = api.log();
    // The stale write was a 409, the re-read one went through.
    let shop: Vec<u16> = log
        .iter()
        .filter(|r| r.method == "PATCH" && r.path() == "/api/v1/namespaces/shop")
        .map(|r| r.code)
        .collect();
    assert_eq!(shop, [409, 200]);
    for r in log.iter().filter(|r| r.method == "PATCH") {
        let want = if r.path().starts_with(NS_PATH) {
            "application/merge-patch+json"
        } else {
            "application/strategic-merge-patch+json"
        };
        assert_eq!(r.content_type.as_deref(), Some(want), "{r:?}");
    }
    assert_eq!(restarts(&log).len(), WORKLOADS.len());
    // Wave 2 starts after wave 1's restarts (and after its verdict).
    let first = |p: &str| {
        log.iter()
            .position(|r| r.method == "PATCH" && r.path() == p)
            .unwrap()
    };
    assert!(
        first("/apis/apps/v1/namespaces/shop/statefulsets/db") < first("/api/v1/namespaces/pay")
    );
    // The lease: taken over from the expired holder, renewed, released.
    let lease = api.object("leases", "meshgate", "meshgate-upgrade");
    assert_eq!(lease["spec"]["holderIdentity"], "", "{lease}");
    assert_eq!(lease["spec"]["leaseTransitions"], 1, "{lease}");
    assert!(log.iter().filter(|r| r.method == "PUT").all(|r| {
        r.body.as_ref().unwrap()["metadata"]["resourceVersion"].is_string() && r.code == 200
    }));
    // The state: both waves GO, the labels recorded before the move, the PDB warning kept.
    let s = state(&st);
    assert!(
        s["actions"]
            .as_array()
            .unwrap()
            .iter()
            .any(|a| a["what"].as_str().unwrap().starts_with(
                "warning: wave w1: PodDisruptionBudget shop/cart allows no disruption"
            )),
        "{s}"
    );
    assert_eq!(s["waves"][0]["phase"], "go");
    assert_eq!(s["waves"][1]["phase"], "go");
    assert_eq!(
        s["recorded"]["pay"],
        json!({"istio_injection": "enabled", "rev": null})
    );
    assert_eq!(
        s["recorded"]["shop"],
        json!({"istio_injection": null, "rev": "1-24-2"})
    );
    // kubectl, a real client, reads what the autopilot wrote.
    let before_kubectl = api.log().len();
    let kc = kubeconfig(dir.path(), &api.url());
    let cache = dir.path().join("kube-cache");
    let labels = kubectl(
        &kc,
        &cache,
        &["get", "ns", "shop", "-o", "jsonpath={.metadata.labels}"],
    )
    .await;
    assert_eq!(
        serde_json::from_str::<Value>(&labels).unwrap(),
        api.labels("shop")
    );
    let ann = kubectl(
        &kc,
        &cache,
        &[
            "get",
            "deploy",
            "cart",
            "-n",
            "shop",
            "-o",
            "jsonpath={.spec.template.metadata.annotations}",
        ],
    )
    .await;
    assert!(ann.contains("kubectl.kubernetes.io/restartedAt"), "{ann}");
    // kubectl reads the double's PodDisruptionBudgets as the autopilot did.
    let pdb = kubectl(
        &kc,
        &cache,
        &[
            "get",
            "pdb",
            "-n",
            "shop",
            "-o",
            "jsonpath={.items[0].status.disruptionsAllowed}/{.items[0].status.expectedPods}",
        ],
    )
    .await;
    assert_eq!(pdb, "0/2");
    let ns = kubectl(
        &kc,
        &cache,
        &["get", "ns", "-l", "istio.io/rev=1-25-0", "-o", "name"],
    )
    .await;
    assert_eq!(
        ns.lines().collect::<BTreeSet<_>>(),
        BTreeSet::from(["namespace/ads", "namespace/pay", "namespace/shop"]),
        "{ns}"
    );
    // kubectl found the resources through the discovery documents and only read.
    let asked = &api.log()[before_kubectl..];
    eprintln!(
        "kubectl asked: {:?}",
        asked.iter().map(|r| &r.uri).collect::<Vec<_>>()
    );
    assert!(asked.iter().any(|r| r.path() == "/apis"), "{asked:?}");
    assert!(
        asked.iter().all(|r| r.method == "GET" && r.code == 200),
        "{asked:?}"
    );
    // A second run with the same state continues after the end: nothing relabelled or
    // restarted twice.
    let before = api.log().len();
    let again = upgrade(&cfg, &st, &["--server", &l.base, "--execute"]).await;
    assert_eq!(again.code, Some(0), "{}", again.stderr);
    assert_moves_nothing(&api.log()[before..]);
    l.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_no_go_wave_restores_the_recorded_labels_and_stops() {
    let api = cluster().await;
    let l = judged(BAD).await;
    let dir = tempfile::tempdir().unwrap();
    let cfg = write_config(dir.path(), &api.url());
    let st = dir.path().join("state.json");
    let out = upgrade(&cfg, &st, &["--server", &l.base, "--execute"]).await;
    assert_eq!(out.code, Some(1), "{}\n{}", out.stdout, out.stderr);
    assert!(out.stderr.contains("wave w2 NO-GO"), "{}", out.stderr);
    // Wave 1 stays moved; wave 2 is back exactly as it was: no istio.io/rev left on pay.
    assert_eq!(api.labels("shop"), json!({"istio.io/rev": "1-25-0"}));
    assert_eq!(api.labels("pay"), json!({"istio-injection": "enabled"}));
    assert_eq!(
        api.labels("ads"),
        json!({"istio.io/rev": "1-24-2", "team": "ads"})
    );
    assert_eq!(
        api.pods_rev("deployments", "pay", "checkout").as_deref(),
        Some("default")
    );
    assert_eq!(
        api.pods_rev("daemonsets", "pay", "agent").as_deref(),
        Some("default")
    );
    assert_eq!(
        api.pods_rev("deployments", "ads", "banner").as_deref(),
        Some("1-24-2")
    );
    assert_eq!(
        api.object("deployments", "pay", "checkout")["metadata"]["generation"],
        3,
        "restarted twice"
    );
    let restore = ns_patches(&api.log())
        .into_iter()
        .filter(|(ns, _)| ns == "pay")
        .nth(1)
        .unwrap();
    assert_eq!(
        restore.1,
        json!({"metadata": {"labels": {"istio.io/rev": null, "istio-injection": "enabled"}}})
    );
    let s = state(&st);
    assert_eq!(s["waves"][0]["phase"], "go");
    assert_eq!(s["waves"][1]["phase"], "rolled_back");
    // A second run with this state refuses to go on, and writes nothing but the lease.
    let before = api.log().len();
    let again = upgrade(&cfg, &st, &["--server", &l.base, "--execute"]).await;
    assert_eq!(again.code, Some(1), "{}", again.stderr);
    assert!(
        again.stderr.contains("was rolled back by this run"),
        "{}",
        again.stderr
    );
    assert_moves_nothing(&api.log()[before..]);
    l.shutdown().await;
}

/// A run paused on wave 1: its analysis can only end INCONCLUSIVE (a baseline that never has
/// data); wave 2's is judged on the healthy mesh. Answers the lab, the config, the state file,
/// the run's output, and the directory holding them.
async fn paused_run(api: &KubeApi) -> (Lab, PathBuf, PathBuf, Out, tempfile::TempDir) {
    let l = lab("").await;
    let c = reqwest::Client::new();
    for body in [
        json!({"name": "plan-w1",
               "baseline": "{role=\"proxy\", revision=\"does-not-exist\"}",
               "canary": format!("{{role=\"proxy\", revision=\"{}\"}}", GOOD.1),
               "min_duration": "1s", "max_duration": "3s"}),
        analysis("plan-w2", GOOD),
    ] {
        let r = c
            .post(format!("{}/v1/analyses", l.base))
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 201);
    }
    let dir = tempfile::tempdir().unwrap();
    let cfg = write_config(dir.path(), &api.url());
    let st = dir.path().join("state.json");
    let out = upgrade(&cfg, &st, &["--server", &l.base, "--execute"]).await;
    (l, cfg, st, out, dir)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_inconclusive_wave_pauses_the_run_with_the_wave_moved() {
    let api = cluster().await;
    let (l, cfg, st, out, _dir) = paused_run(&api).await;
    assert_eq!(out.code, Some(2), "{}\n{}", out.stdout, out.stderr);
    assert!(
        out.stderr.contains("wave w1 INCONCLUSIVE"),
        "{}",
        out.stderr
    );
    // Paused, not rolled back: a person decides; wave 2 not started.
    assert_eq!(api.labels("shop"), json!({"istio.io/rev": "1-25-0"}));
    assert_eq!(api.labels("pay"), json!({"istio-injection": "enabled"}));
    let s = state(&st);
    assert_eq!(s["waves"][0]["phase"], "paused");
    assert_eq!(s["waves"][1]["phase"], "not_started");
    let again = upgrade(&cfg, &st, &["--server", &l.base, "--execute"]).await;
    assert_eq!(again.code, Some(2), "{}", again.stderr);
    assert!(
        again.stderr.contains("wave w1 is paused"),
        "{}",
        again.stderr
    );
    l.shutdown().await;
}

/// The last action of the state file that is a person's decision.
fn last_decision(path: &Path) -> Value {
    let s = state(path);
    s["actions"]
        .as_array()
        .unwrap()
        .iter()
        .rev()
        .find(|a| a.get("by").is_some())
        .cloned()
        .unwrap_or_else(|| panic!("no decision in {s}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_wave_resumed_by_a_person_counts_as_go_and_the_plan_finishes() {
    let api = cluster().await;
    let (l, cfg, st, out, _dir) = paused_run(&api).await;
    assert_eq!(out.code, Some(2), "{}\n{}", out.stdout, out.stderr);
    assert!(
        out.stderr.contains("meshgate upgrade resume"),
        "{}",
        out.stderr
    );
    // The dry run says what it would decide and writes nothing.
    let writes_before = api.writes().len();
    let dry = upgrade(&cfg, &st, &["resume", "--server", &l.base, "--by", "alice"]).await;
    assert_eq!(dry.code, Some(0), "{}\n{}", dry.stdout, dry.stderr);
    assert!(
        dry.stdout.contains("DECIDE wave w1 counts as GO") && dry.stdout.contains("by alice"),
        "{}",
        dry.stdout
    );
    let written: Vec<_> = api.writes().split_off(writes_before);
    assert!(written.is_empty(), "{written:?}");
    assert_eq!(state(&st)["waves"][0]["phase"], "paused");
    let out = upgrade(
        &cfg,
        &st,
        &[
            "resume",
            "--server",
            &l.base,
            "--execute",
            "--by",
            "alice",
            "--why",
            "baseline has no data; checked by hand",
        ],
    )
    .await;
    assert_eq!(out.code, Some(0), "{}\n{}", out.stdout, out.stderr);
    assert!(
        out.stderr.contains("wave w1 counts as GO"),
        "{}",
        out.stderr
    );
    assert!(out.stderr.contains("by alice at 20"), "{}", out.stderr);
    // Wave 2 moved by the resumed run; wave 1 not relabelled again.
    assert_eq!(api.labels("shop"), json!({"istio.io/rev": "1-25-0"}));
    assert_eq!(api.labels("pay"), json!({"istio.io/rev": "1-25-0"}));
    assert_eq!(
        api.labels("ads"),
        json!({"istio.io/rev": "1-25-0", "team": "ads"})
    );
    let shop: Vec<_> = ns_patches(&api.log())
        .into_iter()
        .filter(|(ns, _)| ns == "shop")
        .collect();
    assert_eq!(shop.len(), 1, "{shop:?}");
    let s = state(&st);
    assert_eq!(s["waves"][0]["phase"], "go");
    assert_eq!(s["waves"][1]["phase"], "go");
    let d = last_decision(&st);
    assert_eq!(d["by"], "alice");
    assert_eq!(d["why"], "baseline has no data; checked by hand");
    assert!(
        d["what"]
            .as_str()
            .unwrap()
            .contains("wave w1 counts as GO (it was INCONCLUSIVE"),
        "{d}"
    );
    assert!(d["at"].as_str().unwrap().starts_with("20"), "{d}");
    // Nothing is paused any more: a second resume is refused.
    let again = upgrade(&cfg, &st, &["resume", "--server", &l.base, "--execute"]).await;
    assert_eq!(again.code, Some(64), "{}", again.stderr);
    assert!(again.stderr.contains("no paused run"), "{}", again.stderr);
    l.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_wave_aborted_by_a_person_is_rolled_back_to_its_recorded_labels() {
    let api = cluster().await;
    let (l, cfg, st, out, _dir) = paused_run(&api).await;
    assert_eq!(out.code, Some(2), "{}\n{}", out.stdout, out.stderr);
    let out = upgrade(
        &cfg,
        &st,
        &[
            "abort",
            "--server",
            &l.base,
            "--execute",
            "--by",
            "bob",
            "--why",
            "not today",
        ],
    )
    .await;
    assert_eq!(out.code, Some(1), "{}\n{}", out.stdout, out.stderr);
    assert!(
        out.stderr.contains("wave w1 aborted by bob"),
        "{}",
        out.stderr
    );
    // Back exactly as recorded, restarted onto the old revision; wave 2 never touched.
    assert_eq!(api.labels("shop"), json!({"istio.io/rev": "1-24-2"}));
    assert_eq!(
        api.pods_rev("deployments", "shop", "cart").as_deref(),
        Some("1-24-2")
    );
    assert_eq!(
        api.object("statefulsets", "shop", "db")["metadata"]["generation"],
        3,
        "restarted twice"
    );
    assert_eq!(api.labels("pay"), json!({"istio-injection": "enabled"}));
    let s = state(&st);
    assert_eq!(s["waves"][0]["phase"], "rolled_back");
    assert_eq!(s["waves"][1]["phase"], "not_started");
    let d = last_decision(&st);
    assert_eq!(
        (d["by"].as_str(), d["why"].as_str()),
        (Some("bob"), Some("not today"))
    );
    assert!(
        d["what"].as_str().unwrap().starts_with("wave w1 aborted"),
        "{d}"
    );
    // The run has ended: neither resume nor abort goes on.
    for action in ["resume", "abort"] {
        let again = upgrade(&cfg, &st, &[action, "--server", &l.base, "--execute"]).await;
        assert_eq!(again.code, Some(64), "{}", again.stderr);
        assert!(again.stderr.contains("was rolled back"), "{}", again.stderr);
    }
    l.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resume_or_abort_without_a_paused_run_is_refused_with_nothing_written() {
    let api = cluster().await;
    let dir = tempfile::tempdir().unwrap();
    let cfg = write_config(dir.path(), &api.url());
    let st = dir.path().join("state.json");
    for action in ["resume", "abort"] {
        let out = upgrade(&cfg, &st, &[action, "--execute", "--by", "carol"]).await;
        assert_eq!(out.code, Some(64), "{}\n{}", out.stdout, out.stderr);
        assert!(
            out.stderr
                .contains(&format!("{action}: --state {}", st.display()))
                && out.stderr.contains("no paused run"),
            "{}",
            out.stderr
        );
        assert!(!st.exists(), "no state file written");
    }
    // A state whose waves are all GO: nothing paused either.
    killed_state(&st);
    let mut s = state(&st);
    s["waves"][1]["phase"] = json!("go");
    std::fs::write(&st, s.to_string()).unwrap();
    let out = upgrade(&cfg, &st, &["abort", "--execute"]).await;
    assert_eq!(out.code, Some(64), "{}", out.stderr);
    assert!(
        out.stderr.contains("no wave is paused or stopped mid-way"),
        "{}",
        out.stderr
    );
    assert_eq!(state(&st), s, "the state file is not rewritten");
    assert!(api.log().is_empty(), "no call at all: {:?}", api.log());
    // --by on a plain run is bad usage.
    let out = upgrade(&cfg, &st, &["--by", "carol"]).await;
    assert_eq!(out.code, Some(64), "{}", out.stderr);
    assert!(
        out.stderr.contains("--by and --why are for"),
        "{}",
        out.stderr
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_killed_mid_wave_resumes_from_its_state_and_restores_the_first_record() {
    let api = cluster().await;
    // The killed run had finished wave 1 and relabelled pay (not yet restarted), then died
    // holding its lease.
    for ns in ["shop", "pay"] {
        api.namespace(ns, json!({"istio.io/rev": "1-25-0"}));
    }
    api.lease(
        "meshgate",
        "meshgate-upgrade",
        "killed-run",
        &now_micro(),
        60,
    );
    let dir = tempfile::tempdir().unwrap();
    let cfg = write_config(dir.path(), &api.url());
    let st = dir.path().join("state.json");
    killed_state(&st);
    let l = judged(BAD).await;
    let out = upgrade(&cfg, &st, &["--server", &l.base, "--execute"]).await;
    assert_eq!(out.code, Some(1), "{}\n{}", out.stdout, out.stderr);
    // Its own lease taken back; wave 1 not touched; pay not relabelled again; ads moved; the
    // NO-GO restores pay to what was recorded before the first run moved it.
    let patches: Vec<String> = ns_patches(&api.log())
        .into_iter()
        .map(|(ns, _)| ns)
        .collect();
    assert_eq!(patches, ["ads", "pay", "ads"]);
    assert!(restarts(&api.log())
        .iter()
        .all(|r| !r.path().contains("/shop/")));
    assert_eq!(api.labels("pay"), json!({"istio-injection": "enabled"}));
    assert_eq!(
        api.labels("ads"),
        json!({"istio.io/rev": "1-24-2", "team": "ads"})
    );
    assert_eq!(
        state(&st)["recorded"]["pay"],
        json!({"istio_injection": "enabled", "rev": null})
    );
    l.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_killed_in_the_pre_move_wait_resumes_it_from_the_analysis_creation() {
    let api = cluster().await;
    // No analysis on the daemon: the run creates plan-w1 itself, then waits 4 s before the move.
    let l = lab("").await;
    let dir = tempfile::tempdir().unwrap();
    let cfg = write_config(dir.path(), &api.url());
    let text = std::fs::read_to_string(&cfg).unwrap();
    std::fs::write(
        &cfg,
        text.replacen("pre_move = \"300ms\"", "pre_move = \"4s\"", 1),
    )
    .unwrap();
    let st = dir.path().join("state.json");
    let first = run_until(&cfg, &st, &l.base, "WAIT pre-move", 1500).await;
    // Counted from the analysis' creation on the daemon, a moment before the wait began.
    let first_wait = first
        .last()
        .and_then(|l| l.strip_prefix("WAIT pre-move "))
        .map(|d| humantime::parse_duration(d).unwrap())
        .unwrap_or_else(|| panic!("{first:?}"));
    assert!(
        first_wait > std::time::Duration::from_secs(3)
            && first_wait <= std::time::Duration::from_secs(4),
        "{first_wait:?}"
    );
    assert!(ns_patches(&api.log()).is_empty(), "killed before the move");
    let killed = state(&st);
    assert_eq!(killed["waves"][0]["phase"], "moving");
    assert!(
        killed["waves"][0]["analysis_created"].is_string(),
        "{killed}"
    );
    // The next run follows the analysis the first created and waits only what is left of the
    // 4 s counted from its creation (the daemon's created_at), not 4 s again.
    let second = run_until(&cfg, &st, &l.base, "WAIT rollout", 0).await;
    let wait = second
        .iter()
        .find_map(|l| l.strip_prefix("WAIT pre-move "))
        .unwrap_or_else(|| panic!("{second:?}"));
    let left = humantime::parse_duration(wait).unwrap();
    assert!(
        left > std::time::Duration::ZERO && left <= std::time::Duration::from_millis(2600),
        "{wait}"
    );
    assert!(
        !second.iter().any(|l| l.starts_with("POST http")),
        "the analysis is not created twice: {second:?}"
    );
    assert_eq!(
        ns_patches(&api.log())
            .iter()
            .filter(|(ns, _)| ns == "shop")
            .count(),
        1
    );
    assert_eq!(
        state(&st)["waves"][0]["analysis_created"],
        killed["waves"][0]["analysis_created"]
    );
    l.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wave_whose_pods_stay_on_the_old_revision_is_not_judged_and_pauses_naming_them() {
    let api = cluster().await;
    // shop's db pins its pods to the old revision with a pod-level label: the relabel and the
    // restart leave its sidecar on 1-24-2.
    api.pin_revision("statefulsets", "shop", "db", "1-24-2");
    let l = judged(GOOD).await;
    let dir = tempfile::tempdir().unwrap();
    let cfg = write_config(dir.path(), &api.url());
    let st = dir.path().join("state.json");
    let out = upgrade(
        &cfg,
        &st,
        &["--server", &l.base, "--execute", "--rollout-timeout", "2s"],
    )
    .await;
    assert_eq!(out.code, Some(2), "{}\n{}", out.stdout, out.stderr);
    assert!(
        out.stderr.contains("shop/db-0 (revision 1-24-2)")
            && !out.stderr.contains("shop/cart-")
            && out.stderr.contains("not judged"),
        "{}",
        out.stderr
    );
    assert!(
        out.stdout.contains("WAIT sidecars shop: revision 1-25-0"),
        "{}",
        out.stdout
    );
    assert!(!out.stdout.contains("WAIT verdict"), "{}", out.stdout);
    let s = state(&st);
    assert_eq!(
        s["waves"][0]["phase"], "moving",
        "continued by the next run"
    );
    assert!(s["waves"][0]["verdict"].is_null(), "{s}");
    assert_eq!(api.labels("shop"), json!({"istio.io/rev": "1-25-0"}));
    assert!(ns_patches(&api.log()).iter().all(|(ns, _)| ns == "shop"));
    // Listed over real HTTP, read from each pod's sidecar.istio.io/status.
    assert!(api
        .log()
        .iter()
        .any(|r| r.method == "GET" && r.path() == "/api/v1/namespaces/shop/pods" && r.code == 200));
    l.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rollback_whose_pods_stay_on_the_new_revision_says_so_and_still_ends_rolled_back() {
    let api = cluster().await;
    // pay's checkout pins its pods to the new revision: restoring pay's labels does not bring
    // its sidecars back.
    api.pin_revision("deployments", "pay", "checkout", "1-25-0");
    let l = judged(BAD).await;
    let dir = tempfile::tempdir().unwrap();
    let cfg = write_config(dir.path(), &api.url());
    let st = dir.path().join("state.json");
    let out = upgrade(
        &cfg,
        &st,
        &["--server", &l.base, "--execute", "--rollout-timeout", "2s"],
    )
    .await;
    assert_eq!(out.code, Some(1), "{}\n{}", out.stdout, out.stderr);
    let err = &out.stderr;
    assert!(err.contains("wave w2 NO-GO"), "{err}");
    assert!(
        err.contains("still run a sidecar of another revision than the recorded one")
            && err.contains("pay/checkout-")
            && err.contains("(revision 1-25-0)")
            && !err.contains("pay/agent-")
            && !err.contains("ads/banner-"),
        "{err}"
    );
    // Back on a revision other than the new one: the default injector's (pay), the recorded
    // one (ads).
    assert!(
        out.stdout
            .contains("WAIT sidecars pay: not revision 1-25-0")
            && out.stdout.contains("WAIT sidecars ads: revision 1-24-2"),
        "{}",
        out.stdout
    );
    assert_eq!(api.labels("pay"), json!({"istio-injection": "enabled"}));
    assert_eq!(state(&st)["waves"][1]["phase"], "rolled_back");
    l.shutdown().await;
}

/// Run `meshgate upgrade --execute` until it prints a line starting with `prefix`, then
/// `delay_ms` later kill it (SIGKILL: no cleanup, as a node drain or an OOM kill); answers the
/// lines it printed.
async fn run_until(
    cfg: &Path,
    st: &Path,
    server: &str,
    prefix: &str,
    delay_ms: u64,
) -> Vec<String> {
    let (c, s, server, prefix) = (
        cfg.display().to_string(),
        st.display().to_string(),
        server.to_owned(),
        prefix.to_owned(),
    );
    tokio::task::spawn_blocking(move || {
        use std::io::BufRead;
        let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_meshgate"))
            .args([
                "upgrade", "--config", &c, "--state", &s, "--server", &server,
            ])
            .args(["--poll", "100ms", "--lease-duration", "3s", "--execute"])
            .env_remove("MESHGATE_SERVER")
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let mut seen = Vec::new();
        for line in std::io::BufReader::new(child.stdout.take().unwrap()).lines() {
            let line = line.unwrap();
            let found = line.starts_with(&prefix);
            seen.push(line);
            if found {
                std::thread::sleep(std::time::Duration::from_millis(delay_ms));
                break;
            }
        }
        let _ = child.kill();
        child.wait().unwrap();
        seen
    })
    .await
    .unwrap()
}

/// The state of a run killed after wave 1, with `pay` of wave 2 relabelled.
fn killed_state(path: &Path) {
    std::fs::write(
        path,
        json!({
            "plan": "1.24 -> 1.25: 1-24-2 -> 1-25-0",
            "run_id": "killed-run",
            "recorded": {"shop": {"istio_injection": null, "rev": "1-24-2"},
                         "pay": {"istio_injection": "enabled", "rev": null}},
            "waves": [
                {"name": "w1", "phase": "go", "relabelled": ["shop"],
                 "restarted": ["shop/deployments/cart", "shop/statefulsets/db"], "verdict": "GO: ok"},
                {"name": "w2", "phase": "moving", "relabelled": ["pay"], "restarted": [], "verdict": null}
            ],
            "actions": []
        })
        .to_string(),
    )
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resumed_wave_whose_analysis_is_gone_is_not_judged_by_a_late_one() {
    let api = cluster().await;
    api.namespace("pay", json!({"istio.io/rev": "1-25-0"}));
    // A daemon that lost the wave's analysis (no plan-w2 on it).
    let l = lab("").await;
    let dir = tempfile::tempdir().unwrap();
    let cfg = write_config(dir.path(), &api.url());
    let st = dir.path().join("state.json");
    killed_state(&st);
    let out = upgrade(&cfg, &st, &["--server", &l.base, "--execute"]).await;
    assert_eq!(out.code, Some(2), "{}\n{}", out.stdout, out.stderr);
    assert!(
        out.stderr
            .contains("its analysis plan-w2 is gone from the daemon"),
        "{}",
        out.stderr
    );
    assert!(
        !out.stdout.contains("POST http"),
        "no late analysis created: {}",
        out.stdout
    );
    assert!(ns_patches(&api.log()).is_empty() && restarts(&api.log()).is_empty());
    l.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_verdict_awaited_is_shown_on_stderr_with_the_analysis_state_and_stdout_keeps_its_shape() {
    let api = cluster().await;
    let l = lab("").await;
    // Wave 1's analysis stays PENDING (its baseline never has data, and it may run 10 minutes).
    let r = reqwest::Client::new()
        .post(format!("{}/v1/analyses", l.base))
        .json(&json!({"name": "plan-w1",
               "baseline": "{role=\"proxy\", revision=\"does-not-exist\"}",
               "canary": format!("{{role=\"proxy\", revision=\"{}\"}}", GOOD.1),
               "min_duration": "1s", "max_duration": "600s"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let dir = tempfile::tempdir().unwrap();
    let cfg = write_config(dir.path(), &api.url());
    let st = dir.path().join("state.json");
    let started = Instant::now();
    let out = upgrade(
        &cfg,
        &st,
        &["--server", &l.base, "--execute", "--verdict-timeout", "12s"],
    )
    .await;
    let took = started.elapsed();
    assert_eq!(out.code, Some(2), "{}\n{}", out.stdout, out.stderr);
    assert!(
        out.stderr.contains("still no verdict after 12s"),
        "{}",
        out.stderr
    );
    let progress: Vec<&str> = out
        .stderr
        .lines()
        .filter(|l| l.starts_with("meshgate upgrade: wave w1: analysis plan-w1 PENDING after "))
        .collect();
    // One when the wait starts, then at most one every 10 s of the 12 s waited.
    assert!(
        (1..=2).contains(&progress.len()),
        "{progress:?} in {took:?}\n{}",
        out.stderr
    );
    let first = progress[0];
    assert!(
        first.contains(" s (waited ")
            && first.contains(" s), E = ")
            && first.contains(" | error-rate "),
        "{first}"
    );
    // The daemon's reason for PENDING is in it.
    let doc: Value = reqwest::get(format!("{}/v1/analyses/plan-w1/verdict", l.base))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(doc["verdict"], "PENDING", "{doc}");
    // Its words, not its numbers (they move between the first line and this read).
    let reason = doc["reason"].as_str().unwrap();
    let head = reason
        .split(|c: char| c.is_ascii_digit() || c == '(')
        .next()
        .unwrap()
        .trim();
    assert!(head.len() >= 5, "{reason}");
    assert!(
        first.contains(&format!(": {head}")),
        "{head:?} not in {first}"
    );
    // stdout has the call log only: the verdict wait is one line, no progress in it.
    assert_eq!(
        out.stdout
            .lines()
            .filter(|l| l.starts_with("WAIT verdict GET "))
            .count(),
        1,
        "{}",
        out.stdout
    );
    assert!(!out.stdout.contains("PENDING"), "{}", out.stdout);
    l.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lease_held_by_another_autopilot_refuses_the_run_before_any_write() {
    let api = cluster().await;
    api.lease(
        "meshgate",
        "meshgate-upgrade",
        "other-autopilot-7f3",
        &now_micro(),
        60,
    );
    // A daemon for the istiod pre-check, which comes before the Lease.
    let l = lab("").await;
    let dir = tempfile::tempdir().unwrap();
    let cfg = write_config(dir.path(), &api.url());
    let st = dir.path().join("state.json");
    let out = upgrade(&cfg, &st, &["--server", &l.base, "--execute"]).await;
    assert_eq!(out.code, Some(3), "{}\n{}", out.stdout, out.stderr);
    assert!(
        out.stderr.contains("held by \"other-autopilot-7f3\""),
        "{}",
        out.stderr
    );
    assert!(api.writes().is_empty(), "{:?}", api.writes());
    assert_eq!(api.labels("shop"), json!({"istio.io/rev": "1-24-2"}));
    l.shutdown().await;
}

/// A daemon scraping a small simulated mesh of 1-24-2 and 1-25-0 whose new revision runs no
/// istiod, plus `extra` targets; answers once it has scraped the old istiod and judged the skew.
async fn without_new_istiod(
    extra: Vec<StaticTarget>,
    stop: &tokio_util::sync::CancellationToken,
) -> (
    SimMesh,
    meshgate::daemon::Running,
    tokio_util::sync::CancellationToken,
    String,
) {
    let mut sim = SimConfig::small(41, 1, 1000.0);
    sim.canary.istiod = false;
    let mesh = SimMesh::start(sim, IpAddr::V4(Ipv4Addr::LOCALHOST), stop.clone())
        .await
        .unwrap();
    let mut cfg = Config::from_toml(
        "[scrape]\ninterval = \"250ms\"\ntimeout = \"200ms\"\n",
        "no-new-istiod",
    )
    .unwrap();
    cfg.targets = mesh.targets().into_iter().map(StaticTarget::from).collect();
    cfg.targets.extend(extra.iter().cloned());
    let (running, daemon_stop) = daemon(cfg).await;
    let base = format!("http://{}", running.addr);
    let c = reqwest::Client::new();
    let t = Instant::now();
    loop {
        let targets: Value = c
            .get(format!("{base}/v1/targets"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let seen = |pred: &dyn Fn(&Value) -> bool| targets.as_array().unwrap().iter().any(pred);
        let old_up = seen(&|t| {
            t["labels"]["role"] == "istiod"
                && t["labels"]["revision"] == "1-24-2"
                && t["up"] == true
        });
        let extra_failed = extra.iter().all(|e| {
            seen(&|t| t["url"] == e.url.as_str() && t["failures"].as_u64().unwrap_or(0) >= 1)
        });
        let skew = c.get(format!("{base}/v1/skew")).send().await.unwrap();
        if old_up && extra_failed && skew.status() == 200 {
            break;
        }
        assert!(
            t.elapsed() < Duration::from_secs(60),
            "the daemon never scraped the old istiod: {targets}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    (mesh, running, daemon_stop, base)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mesh_whose_new_istiod_is_missing_or_down_is_refused_before_any_write() {
    let stop = tokio_util::sync::CancellationToken::new();
    // The new revision's istiod is not installed: no target of it at all.
    let (_mesh, running, daemon_stop, base) = without_new_istiod(Vec::new(), &stop).await;
    let api = cluster().await;
    let dir = tempfile::tempdir().unwrap();
    let cfg = write_config(dir.path(), &api.url());
    let st = dir.path().join("state.json");
    for args in [
        vec!["--server", base.as_str(), "--precheck-timeout", "2s"],
        vec![
            "--server",
            base.as_str(),
            "--precheck-timeout",
            "2s",
            "--execute",
        ],
    ] {
        let out = upgrade(&cfg, &st, &args).await;
        assert_eq!(
            out.code,
            Some(4),
            "{args:?}\n{}\n{}",
            out.stdout,
            out.stderr
        );
        assert!(
            out.stderr.contains(
                "the istiod pre-check (after 2s): istiod revision 1-25-0: no scraped target"
            ) && !out.stderr.contains("istiod revision 1-24-2:"),
            "{}",
            out.stderr
        );
        // The skew guard objects too: proxies of 1-25-0 and no istiod of it.
        assert!(
            out.stderr.contains("skew guard: ")
                && out.stderr.contains("no istiod of revision 1-25-0"),
            "{}",
            out.stderr
        );
        assert!(
            out.stdout.contains(&format!("GET {base}/v1/skew")),
            "{}",
            out.stdout
        );
    }
    assert!(api.writes().is_empty(), "{:?}", api.writes());
    assert!(
        !api.log().iter().any(|r| r.path().contains("/leases/")),
        "the Lease is not even read: {:?}",
        api.log()
    );
    assert!(!st.exists(), "nothing written, not even the state");
    daemon_stop.cancel();
    running.join().await;
    stop.cancel();

    // Its target is there but down (nothing listens on its port): not ready, named.
    let stop = tokio_util::sync::CancellationToken::new();
    let dead = format!("http://127.0.0.1:{}/metrics", crate::support::free_port());
    let labels = [
        ("role", "istiod"),
        ("revision", "1-25-0"),
        ("cluster", "cluster-1"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect();
    let (_mesh, running, daemon_stop, base) = without_new_istiod(
        vec![StaticTarget {
            url: dead.clone(),
            labels,
        }],
        &stop,
    )
    .await;
    let out = upgrade(
        &cfg,
        &st,
        &["--server", &base, "--precheck-timeout", "2s", "--execute"],
    )
    .await;
    assert_eq!(out.code, Some(4), "{}\n{}", out.stdout, out.stderr);
    assert!(
        out.stderr
            .contains(&format!("istiod revision 1-25-0: not ready: {dead} down (")),
        "{}",
        out.stderr
    );
    assert!(api.writes().is_empty(), "{:?}", api.writes());
    assert!(!st.exists());
    daemon_stop.cancel();
    running.join().await;
    stop.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lease_taken_away_while_running_stops_the_run_before_its_next_write() {
    let api = std::sync::Arc::new(cluster().await);
    let l = judged(GOOD).await;
    let dir = tempfile::tempdir().unwrap();
    let cfg = write_config(dir.path(), &api.url());
    let st = dir.path().join("state.json");
    let base = l.base.clone();
    let (c, s) = (cfg.clone(), st.clone());
    let run = tokio::spawn(async move { upgrade(&c, &s, &["--server", &base, "--execute"]).await });
    // Once wave 1 is relabelled (the run holds the lease and waits for its verdict), another
    // holder takes the lease over.
    let t = std::time::Instant::now();
    while api.labels("shop")["istio.io/rev"] != "1-25-0" {
        assert!(
            t.elapsed() < std::time::Duration::from_secs(20),
            "wave 1 never moved"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    api.lease("meshgate", "meshgate-upgrade", "intruder", &now_micro(), 60);
    let out = run.await.unwrap();
    assert_eq!(out.code, Some(3), "{}\n{}", out.stdout, out.stderr);
    assert!(
        out.stderr.contains("taken by another holder"),
        "{}",
        out.stderr
    );
    // Wave 2 was not touched, and the intruder's lease is left alone (no release over it).
    assert_eq!(api.labels("pay"), json!({"istio-injection": "enabled"}));
    assert_eq!(
        api.object("leases", "meshgate", "meshgate-upgrade")["spec"]["holderIdentity"],
        "intruder"
    );
    l.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_rbac_refusal_names_what_is_missing_and_exits_before_any_write() {
    let api = cluster().await;
    let mut granted: Vec<String> = rbac_grants().into_iter().collect();
    granted.retain(|r| r != "patch deployments.apps" && r != "update leases.coordination.k8s.io");
    api.allow_only(&granted.iter().map(String::as_str).collect::<Vec<_>>());
    let dir = tempfile::tempdir().unwrap();
    let cfg = write_config(dir.path(), &api.url());
    let st = dir.path().join("state.json");
    let out = upgrade(&cfg, &st, &["--server", "http://127.0.0.1:9", "--execute"]).await;
    assert_eq!(out.code, Some(4), "{}\n{}", out.stdout, out.stderr);
    assert!(
        out.stderr.contains("patch deployments.apps, ")
            && out
                .stderr
                .contains("update leases.coordination.k8s.io in namespace meshgate"),
        "{}",
        out.stderr
    );
    assert!(api.writes().is_empty(), "{:?}", api.writes());
    // Nothing but the reviews was asked.
    assert!(api
        .log()
        .iter()
        .all(|r| r.uri.contains("selfsubjectaccessreviews")));
    assert!(!st.exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_is_refused_naming_what_and_where() {
    let api = cluster().await;
    let dir = tempfile::tempdir().unwrap();
    let cfg = write_config(dir.path(), &api.url());
    // A state file of another plan.
    let st = dir.path().join("state.json");
    std::fs::write(
        &st,
        r#"{"plan": "other: 1 -> 2", "run_id": "x", "recorded": {}, "waves": [], "actions": []}"#,
    )
    .unwrap();
    let out = upgrade(&cfg, &st, &[]).await;
    assert_eq!(out.code, Some(64), "{}", out.stderr);
    assert!(
        out.stderr
            .contains("is the state of plan \"other: 1 -> 2\""),
        "{}",
        out.stderr
    );
    // A namespace of the plan that does not exist.
    let missing = KubeApi::start().await;
    missing.namespace("shop", json!({}));
    let dir2 = tempfile::tempdir().unwrap();
    let cfg2 = write_config(dir2.path(), &missing.url());
    let out = upgrade(&cfg2, &dir.path().join("none.json"), &["--execute"]).await;
    assert_eq!(out.code, Some(4), "{}", out.stderr);
    assert!(
        out.stderr
            .contains("pay (plan.waves[1], wave w2), ads (plan.waves[1], wave w2)"),
        "{}",
        out.stderr
    );
    assert!(missing.writes().is_empty());
    // No [plan].
    let bare = dir.path().join("bare.toml");
    std::fs::write(
        &bare,
        format!(
            "[discovery.kubernetes]\napi_server = \"{}\"\ncluster = \"t\"\n",
            api.url()
        ),
    )
    .unwrap();
    let out = upgrade(&bare, &st, &[]).await;
    assert_eq!(out.code, Some(64));
    assert!(
        out.stderr.contains("bare.toml: no [plan] section"),
        "{}",
        out.stderr
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deploy_upgrade_sh_runs_the_autopilot_with_its_arguments() {
    let api = cluster().await;
    let dir = tempfile::tempdir().unwrap();
    let cfg = write_config(dir.path(), &api.url());
    let st = dir.path().join("state.json");
    let bin = Path::new(env!("CARGO_BIN_EXE_meshgate")).parent().unwrap();
    let path = format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/upgrade.sh");
    let run = |args: Vec<String>| {
        let path = path.clone();
        tokio::task::spawn_blocking(move || {
            std::process::Command::new("bash")
                .arg(script)
                .args(&args)
                .env("PATH", path)
                .env("MESHGATE_INSTALL_REVISION", "1-25-0")
                .env_remove("MESHGATE_SERVER")
                .output()
                .unwrap()
        })
    };
    let st_s = st.display().to_string();
    let cfg_s = cfg.display().to_string();
    // A dry run: no install (that needs --execute), the autopilot's calls printed, nothing written.
    let out = run(vec![cfg_s.clone(), "--state".into(), st_s.clone()])
        .await
        .unwrap();
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert_eq!(out.status.code(), Some(0), "{stdout}\n{stderr}");
    assert!(
        stderr.contains(&format!(
            "+ meshgate upgrade --config {cfg_s} --state {st_s}"
        )) && !stderr.contains("istioctl"),
        "{stderr}"
    );
    assert!(
        stdout.contains("PATCH /api/v1/namespaces/shop application/merge-patch+json"),
        "{stdout}"
    );
    assert!(api.writes().is_empty(), "{:?}", api.writes());
    // Its arguments go to meshgate unchanged, and so does its exit code.
    let out = run(vec![cfg_s, "resume".into(), "--state".into(), st_s])
        .await
        .unwrap();
    assert_eq!(out.status.code(), Some(64));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no paused run"));
    // A missing configuration is named.
    let out = run(vec!["/nonexistent.toml".into()]).await.unwrap();
    assert_eq!(out.status.code(), Some(64));
    assert!(String::from_utf8_lossy(&out.stderr).contains("configuration /nonexistent.toml"));
}

// === the verdict from the autopilot's own move ===

/// The simulated sidecars' base 5xx rate.
const BASE_ERROR_RATE: f64 = 0.001;

/// A staged mesh (every namespace's traffic on the old revision's pods until it moves):
/// namespaces shop (wave w1), pay (wave w2) and ads (never moved), two workloads each, one
/// sidecar per workload and revision, 500,000 requests/s each so a few seconds of pre-move
/// window bound each workload's rate tightly (as `meshgate demo --scenario upgrade` does: at
/// 200,000 a wave's bound was limited by its pre-move counts and one CI run in several ended
/// INCONCLUSIVE at 60 s, with the point estimate 1.07).
async fn staged_mesh(stop: &tokio_util::sync::CancellationToken) -> Arc<SimMesh> {
    let mut sim = SimConfig::small(31, 6, 500_000.0);
    sim.namespaces = vec!["shop".into(), "pay".into(), "ads".into()];
    sim.error_rate = BASE_ERROR_RATE;
    sim.staged = true;
    Arc::new(
        SimMesh::start(sim, IpAddr::V4(Ipv4Addr::LOCALHOST), stop.clone())
            .await
            .unwrap(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_autopilot_judges_its_own_move_go_then_no_go_and_moves_the_traffic_back() {
    let started = Instant::now();
    let stop = tokio_util::sync::CancellationToken::new();
    let mesh = staged_mesh(&stop).await;
    let mut cfg = Config::from_toml(
        r#"
        [scrape]
        interval = "250ms"
        timeout = "200ms"
        [judge]
        alpha = 0.05
        min_duration = "3s"
        max_duration = "120s"
        min_exposure = 1000
        "#,
        "upgrade-e2e",
    )
    .unwrap();
    cfg.targets = mesh.targets().into_iter().map(StaticTarget::from).collect();
    // 500,000 req/s per sidecar is above the plausibility ceiling meant for real ones: raised
    // for the simulation only (as the waves demo does).
    cfg.scrape.limits.max_increase_per_second = 1_000_000.0;
    let (running, daemon_stop) = daemon(cfg).await;
    let base = format!("http://{}", running.addr);
    let c = reqwest::Client::new();
    for id in ["plan-w1", "plan-w2"] {
        let r = c
            .get(format!("{base}/v1/analyses/{id}"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 404, "{id} is the autopilot's to create");
    }

    // The cluster: pods follow the namespaces' labels at each restart, and the simulated
    // mesh's traffic follows the pods once a namespace's rollouts are done.
    let api = KubeApi::start().await;
    api.namespace("shop", json!({"istio.io/rev": "1-24-2"}));
    api.namespace("pay", json!({"istio-injection": "enabled"}));
    api.namespace("ads", json!({"istio.io/rev": "1-24-2"}));
    api.namespace("meshgate", json!({}));
    api.workload("deployments", "shop", "cart", 2);
    api.workload("deployments", "pay", "checkout", 2);
    api.workload("daemonsets", "pay", "agent", 0);
    let told = Arc::new(Mutex::new(Vec::<(String, String)>::new()));
    let (m, t) = (mesh.clone(), told.clone());
    api.on_rollout(move |ns, rev| {
        if rev == "1-25-0" {
            m.move_namespace(ns);
        } else {
            m.move_namespace_back(ns);
        }
        let mut t = t.lock().unwrap();
        if t.last().map(|(n, r)| (n.as_str(), r.as_str())) != Some((ns, rev)) {
            t.push((ns.to_owned(), rev.to_owned()));
        }
    });

    let dir = tempfile::tempdir().unwrap();
    let cfg_path = dir.path().join("meshgate.toml");
    std::fs::write(
        &cfg_path,
        format!(
            r#"
[discovery.kubernetes]
api_server = "{}"
cluster = "test"

[plan]
name = "own move"
from_revision = "1-24-2"
to_revision = "1-25-0"

[[plan.waves]]
name = "w1"
namespaces = ["shop"]
soak = "1s"
pre_move = "8s"
checks = ["error-rate"]

[[plan.waves]]
name = "w2"
namespaces = ["pay"]
soak = "0s"
pre_move = "8s"
checks = ["error-rate"]
"#,
            api.url()
        ),
    )
    .unwrap();
    let st = dir.path().join("state.json");

    // The new revision makes 5xx 4x as soon as wave 1 is GO, before wave 2's analysis starts:
    // shop (moved, a control of wave 2) is then 4x over both of wave 2's periods, and pay's
    // change is its move alone.
    let (m, s) = (mesh.clone(), st.clone());
    let faulted = tokio::spawn(async move {
        let t = Instant::now();
        while t.elapsed() < Duration::from_secs(200) {
            if let Ok(text) = std::fs::read_to_string(&s) {
                if let Ok(v) = serde_json::from_str::<Value>(&text) {
                    if v["waves"][0]["phase"] == "go" {
                        m.set_fault(
                            Cohort::Canary,
                            Fault {
                                error_rate: Some(4.0 * BASE_ERROR_RATE),
                                latency_factor: 1.0,
                            },
                        );
                        return Some(t.elapsed());
                    }
                }
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        None
    });
    let run_started = SystemTime::now();
    let out = upgrade(&cfg_path, &st, &["--server", &base, "--execute"]).await;
    let took = started.elapsed();
    eprintln!("the autopilot's own move, GO then NO-GO, in {took:?}");
    assert_eq!(out.code, Some(1), "{}\n{}", out.stdout, out.stderr);
    assert!(faulted.await.unwrap().is_some(), "wave 1 never GO");
    assert!(out.stderr.contains("wave w2 NO-GO"), "{}", out.stderr);

    // Each analysis was created by this run, in the before/after design, moving its wave, and
    // the wave moved only after its pre-move window.
    for (id, moving) in [("plan-w1", "shop"), ("plan-w2", "pay")] {
        let a: Value = c
            .get(format!("{base}/v1/analyses/{id}"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(a["spec"]["design"], "before_after", "{a}");
        assert_eq!(a["spec"]["moving"], json!([moving]), "{a}");
        let created =
            SystemTime::UNIX_EPOCH + Duration::from_secs_f64(a["created_at"].as_f64().unwrap());
        assert!(created >= run_started, "{id} created before the run");
    }
    let s = state(&st);
    assert_eq!(s["waves"][0]["phase"], "go", "{s}");
    assert_eq!(s["waves"][1]["phase"], "rolled_back", "{s}");
    let w1 = s["waves"][0]["verdict"].as_str().unwrap();
    assert!(w1.starts_with("GO"), "{w1}");
    let w2 = s["waves"][1]["verdict"].as_str().unwrap();
    assert!(
        w2.starts_with("NO-GO") && w2.contains("error-rate: moved workloads' 5xx rate"),
        "{w2}"
    );
    assert!(s["waves"][1]["analysis_created"].is_string(), "{s}");

    // Wave 1 stays moved; wave 2 is back: its labels as recorded, its pods restarted onto the
    // default injector, the mesh's traffic back on the old revision's pods.
    assert_eq!(api.labels("shop"), json!({"istio.io/rev": "1-25-0"}));
    assert_eq!(api.labels("pay"), json!({"istio-injection": "enabled"}));
    assert_eq!(api.labels("ads"), json!({"istio.io/rev": "1-24-2"}));
    assert_eq!(
        api.pods_rev("deployments", "shop", "cart").as_deref(),
        Some("1-25-0")
    );
    for (plural, name) in [("deployments", "checkout"), ("daemonsets", "agent")] {
        assert_eq!(
            api.pods_rev(plural, "pay", name).as_deref(),
            Some("default")
        );
        assert_eq!(
            api.object(plural, "pay", name)["metadata"]["generation"],
            3,
            "{name} restarted twice"
        );
    }
    assert!(mesh.is_moved("shop") && !mesh.is_moved("pay") && !mesh.is_moved("ads"));
    assert_eq!(
        *told.lock().unwrap(),
        [
            ("shop".to_owned(), "1-25-0".to_owned()),
            ("pay".to_owned(), "1-25-0".to_owned()),
            ("pay".to_owned(), "default".to_owned()),
        ]
    );
    // The relabel came a pre-move window after the creation, the judging after the sidecars.
    let lines: Vec<&str> = out.stdout.lines().collect();
    let pos = |p: &str| {
        lines
            .iter()
            .position(|l| l.starts_with(p))
            .unwrap_or_else(|| panic!("{p}: {}", out.stdout))
    };
    assert!(pos("WAIT pre-move") < pos("PATCH /api/v1/namespaces/shop"));
    assert!(pos("WAIT sidecars shop: revision 1-25-0") < pos("WAIT verdict"));
    assert!(took < Duration::from_secs(240), "{took:?}");
    daemon_stop.cancel();
    running.join().await;
    stop.cancel();
}
