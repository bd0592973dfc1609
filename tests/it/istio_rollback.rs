//! An upgrade plan's rollback restores the namespace labels recorded before the wave moved,
//! through the daemon with Kubernetes discovery against an HTTP server on 127.0.0.1 that serves
//! recorded-style API responses (lists with resourceVersion, watch streams with MODIFIED /
//! DELETED / ADDED events), and across a restart with the store. The pods' IPs are 127.0.0.1
//! with closed ports: only the plan is under test here, not the scrapes.
//!
//! The story: namespace `shop` injects the old way (`istio-injection=enabled`, its pods carry
//! `istio.io/rev=1-24-2`); the operator relabels it to `istio.io/rev=1-25-0` (and drops
//! `istio-injection`), then restarts the pods onto 1-25-0. The rollback must put back
//! `istio-injection=enabled` and remove `istio.io/rev`, not just set `istio.io/rev=1-24-2`.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Query, State};
use axum::response::Response;
use axum::routing::get;
use axum::Router;
use futures_util::StreamExt;
use meshgate::config::Config;
use meshgate::judge::Catalog;
use serde_json::{json, Value};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

/// The API server's world: phase 0 = before, 1 = namespace relabelled, 2 = pods restarted.
struct Api {
    phase: watch::Sender<u64>,
}

fn rv(phase: u64) -> String {
    format!("{}", (phase + 1) * 100)
}

fn phase_of(rv: &str) -> u64 {
    rv.parse::<u64>().map_or(0, |v| (v / 100).saturating_sub(1))
}

fn namespace(phase: u64) -> Value {
    let labels = if phase == 0 {
        json!({"istio-injection": "enabled", "kubernetes.io/metadata.name": "shop"})
    } else {
        json!({"istio.io/rev": "1-25-0", "kubernetes.io/metadata.name": "shop"})
    };
    json!({"kind": "Namespace", "apiVersion": "v1",
           "metadata": {"name": "shop", "resourceVersion": rv(phase), "labels": labels}})
}

fn pod(phase: u64) -> Value {
    let (name, rev, version, port) = if phase < 2 {
        ("cart-v1-7c9d-abcde", "1-24-2", "1.24.2", "1")
    } else {
        ("cart-v1-5b8f-fghij", "1-25-0", "1.25.0", "2")
    };
    json!({"kind": "Pod", "apiVersion": "v1",
        "metadata": {"name": name, "namespace": "shop", "uid": format!("uid-{name}"),
                     "resourceVersion": rv(phase),
                     "labels": {"app": "cart", "istio.io/rev": rev, "service.istio.io/canonical-name": "cart"},
                     "annotations": {"prometheus.io/port": port, "prometheus.io/path": "/stats/prometheus"}},
        "spec": {"containers": [
            {"name": "cart", "image": "docker.io/library/nginx:1.27"},
            {"name": "istio-proxy", "image": format!("docker.io/istio/proxyv2:{version}")}
        ]},
        "status": {"phase": "Running", "podIP": "127.0.0.1"}
    })
}

fn json_resp(v: Value) -> Response {
    Response::builder()
        .header("content-type", "application/json")
        .body(Body::from(v.to_string()))
        .unwrap()
}

/// A watch from `from`: the events of every later phase as they happen, one JSON per line;
/// the stream ends after a quiet second (as a server-side timeout would) and is resumed.
fn watch_stream(api: Arc<Api>, from: u64, events: fn(u64) -> Vec<Value>) -> Response {
    let mut rx = api.phase.subscribe();
    let s = async_stream(move |tx: tokio::sync::mpsc::Sender<String>| async move {
        let mut seen = from;
        loop {
            let now = *rx.borrow_and_update();
            while seen < now {
                seen += 1;
                for e in events(seen) {
                    if tx.send(format!("{e}\n")).await.is_err() {
                        return;
                    }
                }
            }
            if tokio::time::timeout(Duration::from_secs(1), rx.changed())
                .await
                .is_err()
            {
                return;
            }
        }
    });
    Response::builder()
        .header("content-type", "application/json")
        .body(Body::from_stream(s))
        .unwrap()
}

fn async_stream<F, Fut>(f: F) -> impl futures_util::Stream<Item = Result<String, std::io::Error>>
where
    F: FnOnce(tokio::sync::mpsc::Sender<String>) -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let (tx, rx) = tokio::sync::mpsc::channel(16);
    tokio::spawn(f(tx));
    tokio_stream_from(rx).map(Ok)
}

fn tokio_stream_from(
    mut rx: tokio::sync::mpsc::Receiver<String>,
) -> impl futures_util::Stream<Item = String> {
    futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx))
}

async fn pods(State(api): State<Arc<Api>>, Query(q): Query<BTreeMap<String, String>>) -> Response {
    let phase = *api.phase.borrow();
    if q.get("watch").map(String::as_str) != Some("1") {
        return json_resp(json!({"kind": "PodList", "apiVersion": "v1",
            "metadata": {"resourceVersion": rv(phase)}, "items": [pod(phase)]}));
    }
    let from = phase_of(q.get("resourceVersion").map_or("", String::as_str));
    watch_stream(api.clone(), from, |p| {
        if p == 2 {
            vec![
                json!({"type": "DELETED", "object": pod(1)}),
                json!({"type": "ADDED", "object": pod(2)}),
            ]
        } else {
            vec![
                json!({"type": "BOOKMARK", "object": {"kind": "Pod", "apiVersion": "v1",
                "metadata": {"resourceVersion": rv(p)}}}),
            ]
        }
    })
}

async fn namespaces(
    State(api): State<Arc<Api>>,
    Query(q): Query<BTreeMap<String, String>>,
) -> Response {
    let phase = *api.phase.borrow();
    if q.get("watch").map(String::as_str) != Some("1") {
        return json_resp(json!({"kind": "NamespaceList", "apiVersion": "v1",
            "metadata": {"resourceVersion": rv(phase)}, "items": [namespace(phase)]}));
    }
    let from = phase_of(q.get("resourceVersion").map_or("", String::as_str));
    watch_stream(api.clone(), from, |p| {
        if p == 1 {
            vec![json!({"type": "MODIFIED", "object": namespace(1)})]
        } else {
            vec![
                json!({"type": "BOOKMARK", "object": {"kind": "Namespace", "apiVersion": "v1",
                "metadata": {"resourceVersion": rv(p)}}}),
            ]
        }
    })
}

async fn webhooks(Query(q): Query<BTreeMap<String, String>>) -> Response {
    if q.get("watch").map(String::as_str) == Some("1") {
        return Response::builder()
            .header("content-type", "application/json")
            .body(Body::from_stream(futures_util::stream::pending::<
                Result<String, std::io::Error>,
            >()))
            .unwrap();
    }
    json_resp(json!({"kind": "MutatingWebhookConfigurationList",
        "apiVersion": "admissionregistration.k8s.io/v1",
        "metadata": {"resourceVersion": "100"}, "items": []}))
}

async fn api_server(api: Arc<Api>, stop: CancellationToken) -> String {
    let app = Router::new()
        .route("/api/v1/pods", get(pods))
        .route("/api/v1/namespaces", get(namespaces))
        .route(
            "/apis/admissionregistration.k8s.io/v1/mutatingwebhookconfigurations",
            get(webhooks),
        )
        .with_state(api);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        axum::serve(listener, app)
            .with_graceful_shutdown(async move { stop.cancelled().await })
            .await
            .unwrap();
    });
    format!("http://{addr}")
}

async fn daemon(api: &str, store: &std::path::Path) -> (meshgate::daemon::Running, String) {
    let toml = format!(
        r#"
        [scrape]
        interval = "250ms"
        timeout = "200ms"
        [store]
        path = {:?}
        [discovery.kubernetes]
        api_server = "{api}"
        cluster = "east"
        resync = "1h"
        watch_timeout = "5s"
        [plan]
        name = "1.24 -> 1.25"
        from_revision = "1-24-2"
        to_revision = "1-25-0"
        [[plan.waves]]
        name = "shop"
        namespaces = ["shop"]
        soak = "10m"
        "#,
        store.display().to_string()
    );
    let cfg = Config::from_toml(&toml, "istio-rollback").unwrap();
    let listener = tokio::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .await
        .unwrap();
    let running =
        meshgate::daemon::start(cfg, Catalog::builtin(), listener, CancellationToken::new())
            .await
            .unwrap();
    let base = format!("http://{}", running.addr);
    (running, base)
}

/// Poll the plan status until `ok` holds (or fail with the last status after 20 s).
async fn wait_status(base: &str, what: &str, ok: impl Fn(&Value) -> bool) -> Value {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    let mut last = Value::Null;
    while tokio::time::Instant::now() < deadline {
        if let Ok(r) = reqwest::get(format!("{base}/v1/plan/status")).await {
            if r.status().is_success() {
                last = r.json().await.unwrap();
                if ok(&last) {
                    return last;
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("{what}: not reached in 20 s; last status {last:#}");
}

fn shop(s: &Value) -> &Value {
    &s["waves"][0]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rollback_restores_recorded_namespace_labels_across_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("state.redb");
    let stop = CancellationToken::new();
    let api = Arc::new(Api {
        phase: watch::channel(0).0,
    });
    let url = api_server(api.clone(), stop.clone()).await;
    let restore = "kubectl label namespace shop istio-injection=enabled istio.io/rev- --overwrite";

    let (running, base) = daemon(&url, &store).await;
    // Before the move: the namespace's labels are recorded as discovered.
    let s = wait_status(&base, "labels recorded", |s| {
        shop(s)["rollback_labels"]["shop"]["istio_injection"] == "enabled"
    })
    .await;
    assert_eq!(shop(&s)["phase"], "not_started", "{s:#}");
    assert_eq!(shop(&s)["rollback"][0], restore, "{s:#}");
    assert!(shop(&s)["rollback_labels"]["shop"]["rev"].is_null());

    // The operator relabels the namespace (watch MODIFIED): the record keeps the old labels.
    api.phase.send_replace(1);
    tokio::time::sleep(Duration::from_secs(2)).await;
    // Then restarts the pods onto the new revision (watch DELETED + ADDED): the wave moves.
    api.phase.send_replace(2);
    let s = wait_status(&base, "wave moved", |s| shop(s)["phase"] != "not_started").await;
    assert_eq!(shop(&s)["namespaces"]["shop"][0], "moved", "{s:#}");
    assert_eq!(shop(&s)["rollback"][0], restore, "{s:#}");
    assert_eq!(
        shop(&s)["rollback"][1],
        "kubectl rollout restart deployment -n shop"
    );

    // Restart the daemon: discovery now only ever sees the relabelled namespace; the store
    // still knows what to restore.
    running.shutdown.cancel();
    running.join().await;
    let (running, base) = daemon(&url, &store).await;
    let s = wait_status(&base, "wave seen moved after restart", |s| {
        shop(s)["namespaces"]["shop"][0] == "moved"
    })
    .await;
    assert_eq!(shop(&s)["rollback"][0], restore, "{s:#}");
    assert_eq!(
        shop(&s)["rollback_labels"]["shop"],
        json!({"istio_injection": "enabled", "rev": null})
    );
    running.shutdown.cancel();
    running.join().await;

    // Without the store, a daemon started after the relabel cannot know the old labels: it says
    // so (null) and falls back to the plan's from_revision.
    let (running, base) = daemon(&url, &dir.path().join("fresh.redb")).await;
    let s = wait_status(&base, "fresh daemon sees the moved wave", |s| {
        shop(s)["namespaces"]["shop"][0] == "moved"
    })
    .await;
    assert!(shop(&s)["rollback_labels"]["shop"].is_null(), "{s:#}");
    assert_eq!(
        shop(&s)["rollback"][0],
        "kubectl label namespace shop istio.io/rev=1-24-2 --overwrite"
    );
    running.shutdown.cancel();
    running.join().await;
    stop.cancel();
}
