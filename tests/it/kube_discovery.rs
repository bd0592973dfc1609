//! Kubernetes discovery against an HTTP server on 127.0.0.1 that serves recorded-style API
//! responses: lists with resourceVersion, watch streams with ADDED / MODIFIED / DELETED /
//! BOOKMARK events, and an ERROR event with 410 "too old resource version" that forces a re-list.
//! (No real cluster here: this is the API contract, not a kube-apiserver.)

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Query, State};
use axum::response::Response;
use axum::routing::get;
use axum::Router;
use futures_util::StreamExt;
use meshgate::discovery::kubernetes::{KubeDiscovery, KubernetesConfig};
use meshgate::discovery::Target;
use serde_json::{json, Value};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

#[derive(Default)]
struct Api {
    /// (path, query) of every request.
    log: Mutex<Vec<(String, BTreeMap<String, String>)>>,
    pod_lists: Mutex<u32>,
}

fn pod(
    ns: &str,
    name: &str,
    ip: &str,
    labels: Value,
    annotations: Value,
    image: &str,
    rv: &str,
) -> Value {
    json!({
        "metadata": {"name": name, "namespace": ns, "uid": format!("uid-{name}"), "resourceVersion": rv,
                     "labels": labels, "annotations": annotations},
        "spec": {"containers": [
            {"name": "app", "image": "docker.io/library/nginx:1.27"},
            {"name": "istio-proxy", "image": image, "ports": [{"containerPort": 15090, "name": "http-envoy-prom", "protocol": "TCP"}]}
        ]},
        "status": {"phase": "Running", "podIP": ip}
    })
}

fn istiod(rev: &str, ip: &str, version: &str, rv: &str) -> Value {
    json!({
        "metadata": {"name": format!("istiod-{rev}-6d8f9c7b5d-x2k4q"), "namespace": "istio-system", "resourceVersion": rv,
                     "labels": {"app": "istiod", "istio.io/rev": rev, "istio": "pilot"}},
        "spec": {"containers": [{"name": "discovery", "image": format!("docker.io/istio/pilot:{version}")}]},
        "status": {"phase": "Running", "podIP": ip}
    })
}

fn with_kind(mut o: Value, kind: &str, api: &str) -> Value {
    o["kind"] = json!(kind);
    o["apiVersion"] = json!(api);
    o
}

fn list(kind: &str, api: &str, rv: &str, items: Vec<Value>) -> Value {
    json!({"kind": kind, "apiVersion": api, "metadata": {"resourceVersion": rv}, "items": items})
}

fn stream(lines: Vec<Value>, then_hang: bool) -> Response {
    let chunks: Vec<Result<String, std::io::Error>> =
        lines.into_iter().map(|l| Ok(format!("{l}\n"))).collect();
    // The events come a little after the watch opens, so the other kinds' lists are in first
    // (the discovery publishes once every kind is listed).
    let s = futures_util::stream::once(async {
        tokio::time::sleep(Duration::from_millis(1000)).await;
        Ok::<String, std::io::Error>(String::new())
    })
    .chain(futures_util::stream::iter(chunks));
    let body = if then_hang {
        Body::from_stream(s.chain(futures_util::stream::pending()))
    } else {
        Body::from_stream(s)
    };
    Response::builder()
        .header("content-type", "application/json")
        .body(body)
        .unwrap()
}

fn json_resp(v: Value) -> Response {
    Response::builder()
        .header("content-type", "application/json")
        .body(Body::from(v.to_string()))
        .unwrap()
}

fn shop_pod() -> Value {
    pod(
        "shop",
        "cart-v1-7c9d-abcde",
        "10.0.0.5",
        json!({"app": "cart", "istio.io/rev": "1-24-2"}),
        json!({"prometheus.io/port": "15020", "prometheus.io/path": "/stats/prometheus"}),
        "docker.io/istio/proxyv2:1.24.2",
        "90",
    )
}

async fn pods(State(api): State<Arc<Api>>, Query(q): Query<BTreeMap<String, String>>) -> Response {
    api.log
        .lock()
        .unwrap()
        .push(("/api/v1/pods".into(), q.clone()));
    if q.get("watch").map(String::as_str) != Some("1") {
        let mut n = api.pod_lists.lock().unwrap();
        *n += 1;
        return if *n == 1 {
            json_resp(list(
                "PodList",
                "v1",
                "100",
                vec![shop_pod(), istiod("1-24-2", "10.0.9.1", "1.24.2", "95")],
            ))
        } else {
            // After the 410: the world moved on while the watch was broken.
            let mut web = pod(
                "web",
                "front-v2-5f6g-zzzzz",
                "10.0.1.9",
                json!({"app": "front"}),
                json!({}),
                "docker.io/istio/proxyv2:1.25.0",
                "280",
            );
            web["metadata"]
                .as_object_mut()
                .unwrap()
                .remove("annotations");
            json_resp(list(
                "PodList",
                "v1",
                "300",
                vec![
                    web,
                    istiod("1-24-2", "10.0.9.1", "1.24.2", "95"),
                    istiod("1-25-0", "10.0.9.2", "1.25.0", "290"),
                ],
            ))
        };
    }
    match q.get("resourceVersion").map(String::as_str) {
        Some("100") => {
            let mut web = pod(
                "web",
                "front-v2-5f6g-zzzzz",
                "10.0.1.9",
                json!({"app": "front"}),
                json!({}),
                "docker.io/istio/proxyv2:1.25.0",
                "120",
            );
            let mut pending = web.clone();
            pending["status"] = json!({"phase": "Pending"});
            pending["metadata"]["resourceVersion"] = json!("110");
            web = with_kind(web, "Pod", "v1");
            let mut moved = shop_pod();
            moved["metadata"]["labels"]["istio.io/rev"] = json!("1-25-0");
            moved["metadata"]["resourceVersion"] = json!("140");
            stream(
                vec![
                    json!({"type": "ADDED", "object": with_kind(pending, "Pod", "v1")}),
                    json!({"type": "MODIFIED", "object": web}),
                    json!({"type": "BOOKMARK", "object": {"kind": "Pod", "apiVersion": "v1", "metadata": {"resourceVersion": "130"}}}),
                    json!({"type": "MODIFIED", "object": with_kind(moved.clone(), "Pod", "v1")}),
                    json!({"type": "DELETED", "object": with_kind(moved, "Pod", "v1")}),
                    json!({"type": "ERROR", "object": {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                        "message": "too old resource version: 100 (250)", "reason": "Expired", "code": 410}}),
                ],
                false,
            )
        }
        _ => stream(vec![], true),
    }
}

async fn namespaces(
    State(api): State<Arc<Api>>,
    Query(q): Query<BTreeMap<String, String>>,
) -> Response {
    api.log
        .lock()
        .unwrap()
        .push(("/api/v1/namespaces".into(), q.clone()));
    if q.get("watch").map(String::as_str) == Some("1") {
        return stream(vec![], true);
    }
    json_resp(list(
        "NamespaceList",
        "v1",
        "100",
        vec![
            json!({"metadata": {"name": "shop", "resourceVersion": "5", "labels": {"istio-injection": "enabled", "kubernetes.io/metadata.name": "shop"}}}),
            json!({"metadata": {"name": "web", "resourceVersion": "6", "labels": {"istio.io/rev": "canary", "kubernetes.io/metadata.name": "web"}}}),
        ],
    ))
}

async fn webhooks(
    State(api): State<Arc<Api>>,
    Query(q): Query<BTreeMap<String, String>>,
) -> Response {
    api.log.lock().unwrap().push(("mwc".into(), q.clone()));
    if q.get("watch").map(String::as_str) == Some("1") {
        return stream(vec![], true);
    }
    json_resp(list(
        "MutatingWebhookConfigurationList",
        "admissionregistration.k8s.io/v1",
        "100",
        vec![
            json!({"metadata": {"name": "istio-revision-tag-canary", "resourceVersion": "7",
               "labels": {"istio.io/tag": "canary", "istio.io/rev": "1-25-0", "app": "sidecar-injector"}},
               "webhooks": []}),
        ],
    ))
}

fn find<'a>(ts: &'a [Target], pod: &str) -> Option<&'a Target> {
    ts.iter().find(|t| t.label("pod") == Some(pod))
}

/// The API double on a free loopback port, until the returned token is cancelled.
async fn serve(app: Router) -> (std::net::SocketAddr, CancellationToken) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let stop = CancellationToken::new();
    let s2 = stop.clone();
    tokio::spawn(async move {
        axum::serve(listener, app)
            .with_graceful_shutdown(async move { s2.cancelled().await })
            .await
            .unwrap();
    });
    (addr, stop)
}

/// The three routes discovery reads, all served by `pods`, `namespaces` and `webhooks`.
fn routes<S: Clone + Send + Sync + 'static, H1, H2, H3, T1, T2, T3>(
    pods: H1,
    namespaces: H2,
    webhooks: H3,
) -> Router<S>
where
    H1: axum::handler::Handler<T1, S>,
    H2: axum::handler::Handler<T2, S>,
    H3: axum::handler::Handler<T3, S>,
    T1: 'static,
    T2: 'static,
    T3: 'static,
{
    Router::new()
        .route("/api/v1/pods", get(pods))
        .route("/api/v1/namespaces", get(namespaces))
        .route(
            "/apis/admissionregistration.k8s.io/v1/mutatingwebhookconfigurations",
            get(webhooks),
        )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_watch_bookmark_gone_relist() {
    let api = Arc::new(Api::default());
    let app = routes(pods, namespaces, webhooks).with_state(api.clone());
    let (addr, stop) = serve(app).await;
    let cfg: KubernetesConfig = serde_json::from_value(json!({
        "api_server": format!("http://{addr}"), "cluster": "east", "resync": "1h", "watch_timeout": "30s"
    }))
    .unwrap();
    let kube = KubeDiscovery::build(cfg).unwrap();
    let (tx, mut rx) = watch::channel(Vec::new());
    tokio::spawn(kube.run(tx, stop.clone()));
    let mut seen: Vec<Vec<Target>> = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let r = tokio::time::timeout_at(deadline, rx.changed()).await;
        assert!(r.is_ok(), "no final state; seen {seen:#?}");
        let ts = rx.borrow_and_update().clone();
        seen.push(ts.clone());
        if find(&ts, "istiod-1-25-0-6d8f9c7b5d-x2k4q").is_some()
            && find(&ts, "front-v2-5f6g-zzzzz").is_some()
        {
            break;
        }
    }
    // At some point the first list was served: the sidecar on the merged port, with its revision.
    let first = seen
        .iter()
        .find(|ts| find(ts, "cart-v1-7c9d-abcde").is_some())
        .expect("first list seen");
    let cart = find(first, "cart-v1-7c9d-abcde").unwrap();
    assert_eq!(cart.url, "http://10.0.0.5:15020/stats/prometheus");
    assert_eq!(cart.label("role"), Some("proxy"));
    assert_eq!(cart.label("revision"), Some("1-24-2"));
    assert_eq!(cart.label("version"), Some("1.24.2"));
    assert_eq!(cart.label("cluster"), Some("east"));
    assert_eq!(cart.label("namespace_istio_injection"), Some("enabled"));
    // No state ever showed the Pending pod.
    for ts in &seen {
        if let Some(f) = find(ts, "front-v2-5f6g-zzzzz") {
            assert_eq!(
                f.url, "http://10.0.1.9:15090/stats/prometheus",
                "no annotation: Envoy's 15090"
            );
        }
    }
    // Final state, from the re-list after the 410: cart deleted; the web pod's revision is its
    // namespace's tag `canary`, resolved through the tag webhook to 1-25-0.
    let last = seen.last().unwrap();
    assert!(find(last, "cart-v1-7c9d-abcde").is_none(), "{last:#?}");
    let front = find(last, "front-v2-5f6g-zzzzz").unwrap();
    assert_eq!(front.label("revision"), Some("1-25-0"));
    assert_eq!(front.label("namespace_rev"), Some("1-25-0"));
    let i = find(last, "istiod-1-25-0-6d8f9c7b5d-x2k4q").unwrap();
    assert_eq!(i.url, "http://10.0.9.2:15014/metrics");
    assert_eq!(i.label("role"), Some("istiod"));
    assert_eq!(i.label("version"), Some("1.25.0"));
    // The protocol: list, watch from the list's resourceVersion with bookmarks, 410, re-list,
    // watch from the new list's resourceVersion.
    let wait = tokio::time::Instant::now() + Duration::from_secs(10);
    while api
        .log
        .lock()
        .unwrap()
        .iter()
        .filter(|(p, _)| p == "/api/v1/pods")
        .count()
        < 4
        && tokio::time::Instant::now() < wait
    {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let log = api.log.lock().unwrap().clone();
    let pods: Vec<&BTreeMap<String, String>> = log
        .iter()
        .filter(|(p, _)| p == "/api/v1/pods")
        .map(|(_, q)| q)
        .collect();
    assert!(pods.len() >= 4, "{pods:?}");
    assert_eq!(pods[0].get("watch"), None);
    assert_eq!(pods[1]["watch"], "1");
    assert_eq!(pods[1]["resourceVersion"], "100");
    assert_eq!(pods[1]["allowWatchBookmarks"], "true");
    assert_eq!(pods[2].get("watch"), None, "410 -> re-list");
    assert_eq!(pods[3]["resourceVersion"], "300");
    let mwc = log.iter().find(|(p, _)| p == "mwc").unwrap();
    assert_eq!(mwc.1["labelSelector"], "istio.io/tag");
    stop.cancel();
}

/// The second API double: pods come in two pages (`limit` / `continue`), every request's bearer
/// token is recorded, watches end after a short while (as `timeoutSeconds` makes them end).
/// (path, continue token, Authorization header) of one request.
type Request = (String, Option<String>, Option<String>);

#[derive(Default)]
struct PagedApi {
    log: Mutex<Vec<Request>>,
}

async fn paged(
    State(api): State<Arc<PagedApi>>,
    uri: axum::http::Uri,
    headers: axum::http::HeaderMap,
    Query(q): Query<BTreeMap<String, String>>,
) -> Response {
    let auth = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    api.log
        .lock()
        .unwrap()
        .push((uri.path().to_owned(), q.get("continue").cloned(), auth));
    if q.get("watch").map(String::as_str) == Some("1") {
        tokio::time::sleep(Duration::from_millis(200)).await;
        return stream(vec![], false);
    }
    match uri.path() {
        "/api/v1/pods" => {
            assert_eq!(q.get("limit").map(String::as_str), Some("500"));
            let mut second = shop_pod();
            second["metadata"]["name"] = json!("cart-v1-7c9d-fghij");
            second["status"]["podIP"] = json!("10.0.0.6");
            match q.get("continue").map(String::as_str) {
                None => {
                    let mut l = list("PodList", "v1", "", vec![shop_pod()]);
                    l["metadata"]["continue"] = json!("page-2");
                    json_resp(l)
                }
                Some("page-2") => json_resp(list("PodList", "v1", "100", vec![second])),
                Some(other) => panic!("unknown continue token {other}"),
            }
        }
        "/api/v1/namespaces" => json_resp(list(
            "NamespaceList",
            "v1",
            "100",
            vec![
                json!({"metadata": {"name": "shop", "resourceVersion": "5", "labels": {"istio-injection": "enabled"}}}),
            ],
        )),
        _ => json_resp(list(
            "MutatingWebhookConfigurationList",
            "admissionregistration.k8s.io/v1",
            "100",
            vec![],
        )),
    }
}

/// In a pod: with no token_file configured, the mounted service account's token is used; when
/// kubelet rotates it (the file is replaced), the next requests carry the new token. Lists follow
/// `continue` to the last page.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn service_account_token_is_used_and_reread_when_rotated_and_lists_are_paged() {
    let api = Arc::new(PagedApi::default());
    let app = routes(paged, paged, paged).with_state(api.clone());
    let (addr, stop) = serve(app).await;
    let sa = tempfile::tempdir().unwrap();
    std::fs::write(sa.path().join("token"), "first-token\n").unwrap();
    let cfg: KubernetesConfig = serde_json::from_value(json!({
        "api_server": format!("http://{addr}"), "cluster": "east", "resync": "1h", "watch_timeout": "1s"
    }))
    .unwrap();
    let kube = KubeDiscovery::build_in(cfg, sa.path()).unwrap();
    let (tx, mut rx) = watch::channel(Vec::new());
    tokio::spawn(kube.run(tx, stop.clone()));
    tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            rx.changed().await.unwrap();
            let ts = rx.borrow_and_update().clone();
            if find(&ts, "cart-v1-7c9d-fghij").is_some() {
                assert!(find(&ts, "cart-v1-7c9d-abcde").is_some(), "page 1 kept");
                break;
            }
        }
    })
    .await
    .expect("both pages of pods published");
    {
        let log = api.log.lock().unwrap();
        assert!(log
            .iter()
            .any(|(p, c, _)| p == "/api/v1/pods" && c.as_deref() == Some("page-2")));
        assert!(
            log.iter()
                .all(|(_, _, a)| a.as_deref() == Some("Bearer first-token")),
            "every request carries the mounted token: {log:?}"
        );
    }
    // kubelet swaps the projected token: write-then-rename, as its atomic writer does.
    let tmp = sa.path().join("..token.tmp");
    std::fs::write(&tmp, "second-token-longer\n").unwrap();
    std::fs::rename(&tmp, sa.path().join("token")).unwrap();
    let mark = api.log.lock().unwrap().len();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        {
            let log = api.log.lock().unwrap();
            if log[mark..]
                .iter()
                .any(|(_, _, a)| a.as_deref() == Some("Bearer second-token-longer"))
            {
                break;
            }
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the rotated token was never sent"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    stop.cancel();
}
