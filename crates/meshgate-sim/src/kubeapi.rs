//! A double of the Kubernetes API server over real HTTP on 127.0.0.1, for the demo (`meshgate
//! demo --scenario upgrade`, which has no cluster) and the tests: it serves what the autopilot
//! and `kubectl get` use, following the real API server's contract for it, so the autopilot runs
//! against it exactly as against a cluster. Namespaces (get, list, patch), apps/v1 Deployments,
//! StatefulSets and DaemonSets (get, list, patch, put), the pods of a namespace (list, derived
//! from its workloads), coordination.k8s.io/v1 Leases (get, create, update), policy/v1
//! PodDisruptionBudgets (get, list; their status computed from the pods as the disruption
//! controller does),
//! SelfSubjectAccessReviews from an allow-list, and the discovery documents kubectl reads.
//!
//! It follows the real contract for what it serves: JSON merge patches (RFC 7386, null deletes a
//! key) and strategic merge patches on maps (lists in a strategic patch are refused with 415,
//! not guessed), `metadata.resourceVersion` bumped on every write that changes an object,
//! `metadata.generation` on every spec change, a write carrying a stale resourceVersion
//! answered `409 Conflict` with a `Status`, `404 NotFound` and `409 AlreadyExists` `Status`
//! objects, and workload `status` that a restart makes progress over about 600 ms. A restarted
//! workload's pods take the revision its namespace's labels name at the restart (`pods_rev`):
//! listed pods carry it as Istio's injector writes it (label `istio.io/rev`, annotation
//! `sidecar.istio.io/status` with `"revision"`), the updated ones on the new revision and the
//! others still on the old while the rollout progresses. [`KubeApi::on_rollout`] is told when
//! a namespace's rollouts are all done, with the revision its pods now run (to move a simulated
//! mesh's traffic as the new pods take it).
//! Watches are not served (`501 NotImplemented`, a `Status`): the autopilot polls instead.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::Router;
use serde_json::{json, Value};
use tokio_util::sync::CancellationToken;

/// How long a restart's rollout takes in the double.
pub const ROLLOUT: Duration = Duration::from_millis(600);
/// Nodes a DaemonSet runs on.
const NODES: i64 = 2;

/// One request as received.
#[derive(Clone, Debug)]
pub struct Request {
    pub method: String,
    /// Path and query.
    pub uri: String,
    pub content_type: Option<String>,
    pub body: Option<Value>,
    /// The status code answered.
    pub code: u16,
}

impl Request {
    pub fn path(&self) -> &str {
        self.uri.split('?').next().unwrap_or("")
    }
}

struct Workload {
    obj: Value,
    /// Start of the last rollout.
    restarted: Option<Instant>,
    /// The revision the pods run (the namespace's at the last restart).
    pods_rev: Option<String>,
    /// The revision of the pods the last restart replaces (those not yet updated run it).
    old_rev: Option<String>,
}

/// Told (namespace, revision) when a namespace's rollouts are all done.
pub type RolloutHook = Arc<dyn Fn(&str, &str) + Send + Sync>;

#[derive(Default)]
struct Inner {
    rv: u64,
    namespaces: BTreeMap<String, Value>,
    /// (plural, namespace, name)
    workloads: BTreeMap<(String, String, String), Workload>,
    leases: BTreeMap<(String, String), Value>,
    /// policy/v1 PodDisruptionBudgets (namespace, name), without their status (computed).
    pdbs: BTreeMap<(String, String), Value>,
    /// SSAR allow-list (`verb resource[.group]`); `None` allows everything.
    allowed: Option<BTreeSet<String>>,
    /// Namespaces changed by "someone else" right after the n-th next GET of them.
    touch_after_get: BTreeMap<String, usize>,
    on_rollout: Option<RolloutHook>,
    log: Vec<Request>,
}

/// The double. Dropping it stops the server.
pub struct KubeApi {
    pub addr: SocketAddr,
    inner: Arc<Mutex<Inner>>,
    _stop: tokio_util::sync::DropGuard,
}

fn status(code: StatusCode, reason: &str, message: String, details: Value) -> Response {
    let body = json!({
        "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
        "message": message, "reason": reason, "details": details, "code": code.as_u16(),
    });
    (
        code,
        [("content-type", "application/json")],
        body.to_string(),
    )
        .into_response()
}

fn ok(code: StatusCode, v: Value) -> Response {
    (code, [("content-type", "application/json")], v.to_string()).into_response()
}

/// RFC 7386 JSON merge patch: objects merged key by key, null deletes, anything else replaces.
pub fn merge_patch(target: &mut Value, patch: &Value) {
    let Some(p) = patch.as_object() else {
        *target = patch.clone();
        return;
    };
    if !target.is_object() {
        *target = json!({});
    }
    let t = target.as_object_mut().unwrap();
    for (k, v) in p {
        if v.is_null() {
            t.remove(k);
        } else {
            merge_patch(t.entry(k.clone()).or_insert(Value::Null), v);
        }
    }
}

fn has_list(v: &Value) -> bool {
    match v {
        Value::Array(_) => true,
        Value::Object(m) => m.values().any(has_list),
        _ => false,
    }
}

fn group_of(plural: &str) -> &'static str {
    match plural {
        "deployments" | "statefulsets" | "daemonsets" => "apps",
        "leases" => "coordination.k8s.io",
        "poddisruptionbudgets" => "policy",
        _ => "",
    }
}

fn kind_of(plural: &str) -> &'static str {
    match plural {
        "deployments" => "Deployment",
        "statefulsets" => "StatefulSet",
        "daemonsets" => "DaemonSet",
        "leases" => "Lease",
        "poddisruptionbudgets" => "PodDisruptionBudget",
        _ => "Namespace",
    }
}

fn details(plural: &str, name: &str) -> Value {
    let mut d = json!({"name": name, "kind": plural});
    if !group_of(plural).is_empty() {
        d["group"] = json!(group_of(plural));
    }
    d
}

/// `deployments.apps`, or `namespaces` for the core group: how the API server names a resource
/// in its messages.
fn qualified(plural: &str) -> String {
    match group_of(plural) {
        "" => plural.to_owned(),
        g => format!("{plural}.{g}"),
    }
}

fn not_found(plural: &str, name: &str) -> Response {
    let full = qualified(plural);
    status(
        StatusCode::NOT_FOUND,
        "NotFound",
        format!("{full} \"{name}\" not found"),
        details(plural, name),
    )
}

fn conflict(plural: &str, name: &str) -> Response {
    let full = qualified(plural);
    status(
        StatusCode::CONFLICT,
        "Conflict",
        format!("Operation cannot be fulfilled on {full} \"{name}\": the object has been modified; please apply your changes to the latest version and try again"),
        details(plural, name),
    )
}

/// When the rollout started at `at` of workload `key` is done (and no newer restart replaced
/// it), and no other workload of its namespace is still rolling out: the hook, outside the lock.
fn spawn_rollout_hook(
    inner: Arc<Mutex<Inner>>,
    key: (String, String, String),
    at: Instant,
    hook: RolloutHook,
) {
    tokio::spawn(async move {
        tokio::time::sleep(ROLLOUT).await;
        let rev = {
            let i = inner.lock().unwrap();
            let Some(w) = i.workloads.get(&key) else {
                return;
            };
            if w.restarted != Some(at) {
                return; // a newer restart's own task tells
            }
            let busy = i
                .workloads
                .iter()
                .any(|(k, o)| k.1 == key.1 && o.restarted.is_some_and(|t| t.elapsed() < ROLLOUT));
            if busy {
                return; // the last of the namespace's rollouts tells
            }
            w.pods_rev.clone()
        };
        if let Some(rev) = rev {
            hook(&key.1, &rev);
        }
    });
}

// === impl Inner ===

impl Inner {
    fn next_rv(&mut self) -> String {
        self.rv += 1;
        self.rv.to_string()
    }

    fn pods_rev_of(&self, ns: &str) -> Option<String> {
        let l = &self.namespaces.get(ns)?["metadata"]["labels"];
        l["istio.io/rev"]
            .as_str()
            .map(str::to_owned)
            .or_else(|| (l["istio-injection"] == "enabled").then(|| "default".to_owned()))
    }

    /// The pods of namespace `ns` as of now, derived from its workloads: a workload's updated
    /// pods (as its status counts them) run `pods_rev`, the others `old_rev`; pods of a workload
    /// whose namespace had no injection have no sidecar (no `istio.io/rev`, no status annotation).
    fn pods(&self, ns: &str) -> Vec<Value> {
        let mut out = Vec::new();
        for (k, w) in self.workloads.iter().filter(|(k, _)| k.1 == ns) {
            let Some(o) = self.workload_now(k) else {
                continue;
            };
            let generation = o["metadata"]["generation"].as_i64().unwrap_or(1);
            let (want, updated) = if k.0 == "daemonsets" {
                (
                    NODES,
                    o["status"]["updatedNumberScheduled"].as_i64().unwrap_or(0),
                )
            } else {
                (
                    o["spec"]["replicas"].as_i64().unwrap_or(1),
                    o["status"]["updatedReplicas"].as_i64().unwrap_or(0),
                )
            };
            let name = &k.2;
            let uid = o["metadata"]["uid"].as_str().unwrap_or("").to_owned();
            let mut labels = o["spec"]["template"]["metadata"]["labels"].clone();
            // The ReplicaSet of a Deployment's template: a new one per template change.
            let hash = format!(
                "{:08x}",
                (generation as u64).wrapping_mul(2_654_435_761) & 0xffff_ffff
            );
            for p in 0..want {
                let rev = if p < updated || w.restarted.is_none() {
                    &w.pods_rev
                } else {
                    &w.old_rev
                };
                let (pod, owner) = match k.0.as_str() {
                    "deployments" => {
                        labels["pod-template-hash"] = json!(hash);
                        (
                            format!("{name}-{hash}-{p}"),
                            json!({"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": format!("{name}-{hash}"),
                                   "uid": format!("{uid}-rs-{hash}"), "controller": true, "blockOwnerDeletion": true}),
                        )
                    }
                    plural => (
                        format!("{name}-{p}"),
                        json!({"apiVersion": "apps/v1", "kind": kind_of(plural), "name": name,
                               "uid": uid, "controller": true, "blockOwnerDeletion": true}),
                    ),
                };
                let mut l = labels.clone();
                let mut annotations = json!({});
                if let Some(rev) = rev {
                    l["istio.io/rev"] = json!(rev);
                    l["security.istio.io/tlsMode"] = json!("istio");
                    let status = json!({"initContainers": ["istio-init"], "containers": ["istio-proxy"],
                        "volumes": ["istio-envoy", "istio-data", "istio-podinfo", "istio-token", "istiod-ca-cert"],
                        "imagePullSecrets": null, "revision": rev});
                    annotations["sidecar.istio.io/status"] = json!(status.to_string());
                }
                out.push(json!({
                    "metadata": {"name": pod, "namespace": ns, "uid": format!("uid-pod-{ns}-{pod}"),
                                 "resourceVersion": self.rv.to_string(),
                                 "creationTimestamp": "2026-01-01T00:00:00Z",
                                 "labels": l, "annotations": annotations, "ownerReferences": [owner]},
                    "spec": o["spec"]["template"]["spec"].clone(),
                    "status": {"phase": "Running"},
                }));
            }
        }
        out
    }

    /// A PodDisruptionBudget with its status as the disruption controller computes it from the
    /// pods of its namespace its selector matches (all of them running and ready here):
    /// `desiredHealthy` from `minAvailable` or `maxUnavailable` (a percentage of the expected
    /// pods, rounded up), `disruptionsAllowed = max(0, currentHealthy - desiredHealthy)`.
    fn pdb_now(&self, o: &Value) -> Value {
        let ns = o["metadata"]["namespace"].as_str().unwrap_or("");
        let want = &o["spec"]["selector"]["matchLabels"];
        let expected = self
            .pods(ns)
            .iter()
            .filter(|p| {
                want.as_object()
                    .is_some_and(|m| m.iter().all(|(k, v)| &p["metadata"]["labels"][k] == v))
            })
            .count() as i64;
        let of = |v: &Value| -> Option<i64> {
            if let Some(n) = v.as_i64() {
                return Some(n);
            }
            let pct: f64 = v.as_str()?.strip_suffix('%')?.parse().ok()?;
            Some((pct * expected as f64 / 100.0).ceil() as i64)
        };
        let desired = if let Some(m) = of(&o["spec"]["minAvailable"]) {
            m
        } else if let Some(m) = of(&o["spec"]["maxUnavailable"]) {
            (expected - m).max(0)
        } else {
            // Neither set: the API server defaults minAvailable to 1.
            1
        };
        let allowed = (expected - desired).max(0);
        let mut o = o.clone();
        o["status"] = json!({
            "observedGeneration": o["metadata"]["generation"],
            "disruptionsAllowed": allowed,
            "currentHealthy": expected,
            "desiredHealthy": desired,
            "expectedPods": expected,
            "conditions": [{
                "type": "DisruptionAllowed",
                "status": if allowed > 0 { "True" } else { "False" },
                "reason": if allowed > 0 { "SufficientPods" } else { "InsufficientPods" },
                "message": "",
                "observedGeneration": o["metadata"]["generation"],
                "lastTransitionTime": "2026-01-01T00:00:00Z",
            }],
        });
        o
    }

    /// A workload with its status as of now.
    fn workload_now(&self, key: &(String, String, String)) -> Option<Value> {
        let w = self.workloads.get(key)?;
        let mut o = w.obj.clone();
        let generation = o["metadata"]["generation"].as_i64().unwrap_or(1);
        let elapsed = w.restarted.map(|t| t.elapsed());
        let r = if key.0 == "daemonsets" {
            NODES
        } else {
            o["spec"]["replicas"].as_i64().unwrap_or(1)
        };
        let (observed, updated, total) = match elapsed {
            Some(e) if e < ROLLOUT / 6 => (generation - 1, 0, r),
            Some(e) if e < ROLLOUT => {
                let frac = (e - ROLLOUT / 6).as_secs_f64() / (ROLLOUT - ROLLOUT / 6).as_secs_f64();
                (generation, ((r as f64) * frac) as i64, r + 1)
            }
            _ => (generation, r, r),
        };
        o["status"] = if key.0 == "daemonsets" {
            json!({"observedGeneration": observed, "desiredNumberScheduled": r,
                   "currentNumberScheduled": total.min(r), "updatedNumberScheduled": updated,
                   "numberReady": if updated == r { r } else { r - 1 }, "numberAvailable": r})
        } else {
            json!({"observedGeneration": observed, "replicas": total, "updatedReplicas": updated,
                   "readyReplicas": r, "availableReplicas": r})
        };
        Some(o)
    }

    /// Apply a patch or a replacement to `current`; the new object, or the answer to send.
    fn write(
        &mut self,
        plural: &str,
        name: &str,
        current: &Value,
        method: &Method,
        content_type: Option<&str>,
        body: &Value,
    ) -> Result<Value, Box<Response>> {
        let current_rv = current["metadata"]["resourceVersion"]
            .as_str()
            .unwrap_or("");
        if let Some(rv) = body["metadata"]["resourceVersion"].as_str() {
            if rv != current_rv {
                return Err(Box::new(conflict(plural, name)));
            }
        }
        let mut next = if method == Method::PUT {
            let mut n = body.clone();
            for k in ["uid", "creationTimestamp", "name", "namespace"] {
                if !current["metadata"][k].is_null() {
                    n["metadata"][k] = current["metadata"][k].clone();
                }
            }
            n
        } else {
            match content_type {
                Some("application/merge-patch+json") => {}
                Some("application/strategic-merge-patch+json") if !has_list(body) => {}
                Some("application/strategic-merge-patch+json") => {
                    return Err(Box::new(status(
                        StatusCode::UNSUPPORTED_MEDIA_TYPE,
                        "UnsupportedMediaType",
                        "the double applies strategic merge patches to maps only; this one holds a list".into(),
                        details(plural, name),
                    )))
                }
                other => {
                    return Err(Box::new(status(
                        StatusCode::UNSUPPORTED_MEDIA_TYPE,
                        "UnsupportedMediaType",
                        format!("the body of the request was in an unknown format - accepted media types include: application/merge-patch+json, application/strategic-merge-patch+json (got {other:?})"),
                        details(plural, name),
                    )))
                }
            }
            let mut n = current.clone();
            merge_patch(&mut n, body);
            n
        };
        // Not writable by clients: the server's own fields.
        next["metadata"]["resourceVersion"] = json!(current_rv);
        next["metadata"]["generation"] = current["metadata"]["generation"].clone();
        next["status"] = current["status"].clone();
        if next["metadata"]["generation"].is_null() {
            next["metadata"]
                .as_object_mut()
                .unwrap()
                .remove("generation");
        }
        if next["status"].is_null() {
            next.as_object_mut().unwrap().remove("status");
        }
        if &next != current {
            if next["spec"] != current["spec"] && group_of(plural) == "apps" {
                next["metadata"]["generation"] =
                    json!(current["metadata"]["generation"].as_i64().unwrap_or(1) + 1);
            }
            next["metadata"]["resourceVersion"] = json!(self.next_rv());
        }
        Ok(next)
    }
}

impl KubeApi {
    /// Start it on 127.0.0.1 with no objects; everything is allowed.
    ///
    /// # Panics
    /// When no loopback port can be bound (a test helper's shortcut; [`KubeApi::bind`] answers
    /// the error).
    pub async fn start() -> KubeApi {
        KubeApi::bind()
            .await
            .expect("binding the Kubernetes API double on 127.0.0.1")
    }

    /// Start it on a free port of 127.0.0.1 with no objects; everything is allowed. It serves
    /// until dropped.
    pub async fn bind() -> std::io::Result<KubeApi> {
        let inner = Arc::new(Mutex::new(Inner {
            rv: 1000,
            ..Default::default()
        }));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let stop = CancellationToken::new();
        let st = inner.clone();
        let app = Router::new().fallback(
            move |method: Method, uri: Uri, headers: HeaderMap, body: Bytes| {
                let st = st.clone();
                async move { handle(&st, addr, method, uri, headers, body) }
            },
        );
        let s = stop.clone();
        tokio::spawn(async move {
            if let Err(e) = axum::serve(listener, app)
                .with_graceful_shutdown(async move { s.cancelled().await })
                .await
            {
                tracing::error!(%addr, error = %e, "the Kubernetes API double stopped serving");
            }
        });
        Ok(KubeApi {
            addr,
            inner,
            _stop: stop.drop_guard(),
        })
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Add a namespace with labels.
    pub fn namespace(&self, name: &str, labels: Value) {
        let mut i = self.inner.lock().unwrap();
        let rv = i.next_rv();
        let o = json!({"apiVersion": "v1", "kind": "Namespace",
            "metadata": {"name": name, "uid": format!("uid-ns-{name}"), "resourceVersion": rv,
                         "creationTimestamp": "2026-01-01T00:00:00Z", "labels": labels},
            "spec": {"finalizers": ["kubernetes"]}, "status": {"phase": "Active"}});
        i.namespaces.insert(name.into(), o);
    }

    /// Add a workload (`deployments`, `statefulsets`, `daemonsets`), fully rolled out.
    pub fn workload(&self, plural: &str, ns: &str, name: &str, replicas: i64) {
        let mut i = self.inner.lock().unwrap();
        let rv = i.next_rv();
        let mut o = json!({"apiVersion": "apps/v1", "kind": kind_of(plural),
            "metadata": {"name": name, "namespace": ns, "uid": format!("uid-{ns}-{name}"),
                         "resourceVersion": rv, "generation": 1, "labels": {"app": name}},
            "spec": {"selector": {"matchLabels": {"app": name}},
                     "template": {"metadata": {"labels": {"app": name}},
                                  "spec": {"containers": [{"name": "app", "image": "nginx:1.27"}]}}}});
        if plural != "daemonsets" {
            o["spec"]["replicas"] = json!(replicas);
        }
        let pods_rev = i.pods_rev_of(ns);
        i.workloads.insert(
            (plural.into(), ns.into(), name.into()),
            Workload {
                obj: o,
                restarted: None,
                old_rev: pods_rev.clone(),
                pods_rev,
            },
        );
    }

    /// Add a policy/v1 PodDisruptionBudget selecting the pods labelled `app=<app>` (the
    /// double's workloads label their pods `app=<name>`), with `spec` merged in (e.g.
    /// `{"minAvailable": 2}` or `{"maxUnavailable": "0%"}`); its status is computed on each read.
    pub fn pdb(&self, ns: &str, name: &str, app: &str, spec: Value) {
        let mut i = self.inner.lock().unwrap();
        let rv = i.next_rv();
        let mut o = json!({"apiVersion": "policy/v1", "kind": "PodDisruptionBudget",
            "metadata": {"name": name, "namespace": ns, "uid": format!("uid-pdb-{ns}-{name}"),
                         "resourceVersion": rv, "generation": 1,
                         "creationTimestamp": "2026-01-01T00:00:00Z"},
            "spec": {"selector": {"matchLabels": {"app": app}}}});
        merge_patch(&mut o["spec"], &spec);
        i.pdbs.insert((ns.into(), name.into()), o);
    }

    /// Add a Lease.
    pub fn lease(&self, ns: &str, name: &str, holder: &str, renew: &str, seconds: u64) {
        let mut i = self.inner.lock().unwrap();
        let rv = i.next_rv();
        let o = json!({"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
            "metadata": {"name": name, "namespace": ns, "resourceVersion": rv, "uid": "uid-lease"},
            "spec": {"holderIdentity": holder, "leaseDurationSeconds": seconds,
                     "acquireTime": renew, "renewTime": renew, "leaseTransitions": 0}});
        i.leases.insert((ns.into(), name.into()), o);
    }

    /// Allow only these SelfSubjectAccessReviews (`verb resource[.group]`, e.g. `patch
    /// deployments.apps`).
    pub fn allow_only(&self, rules: &[&str]) {
        self.inner.lock().unwrap().allowed = Some(rules.iter().map(|r| r.to_string()).collect());
    }

    /// Pin a workload's pods to revision `rev` with the pod-level `istio.io/rev` label of its
    /// template (it overrides the namespace's at the next restart).
    pub fn pin_revision(&self, plural: &str, ns: &str, name: &str, rev: &str) {
        let mut i = self.inner.lock().unwrap();
        let w = i
            .workloads
            .get_mut(&(plural.to_owned(), ns.to_owned(), name.to_owned()))
            .unwrap();
        w.obj["spec"]["template"]["metadata"]["labels"]["istio.io/rev"] = json!(rev);
    }

    /// Call `hook(namespace, revision)` each time a namespace's rollouts are all done (the last
    /// of them finished `ROLLOUT` after its restart), with the revision its pods now run.
    pub fn on_rollout(&self, hook: impl Fn(&str, &str) + Send + Sync + 'static) {
        self.inner.lock().unwrap().on_rollout = Some(Arc::new(hook));
    }

    /// Right after the `n`-th next GET of namespace `ns`, someone else changes it (a `team`
    /// label): a write carrying the resourceVersion just read is then a 409.
    pub fn touch_after_get(&self, ns: &str, n: usize) {
        self.inner
            .lock()
            .unwrap()
            .touch_after_get
            .insert(ns.into(), n);
    }

    pub fn labels(&self, ns: &str) -> Value {
        self.inner.lock().unwrap().namespaces[ns]["metadata"]["labels"].clone()
    }

    pub fn object(&self, plural: &str, ns: &str, name: &str) -> Value {
        let i = self.inner.lock().unwrap();
        if plural == "leases" {
            return i.leases[&(ns.to_owned(), name.to_owned())].clone();
        }
        i.workload_now(&(plural.into(), ns.into(), name.into()))
            .unwrap()
    }

    /// The revision a workload's pods run.
    pub fn pods_rev(&self, plural: &str, ns: &str, name: &str) -> Option<String> {
        let i = self.inner.lock().unwrap();
        i.workloads[&(plural.to_owned(), ns.to_owned(), name.to_owned())]
            .pods_rev
            .clone()
    }

    pub fn log(&self) -> Vec<Request> {
        self.inner.lock().unwrap().log.clone()
    }

    /// The requests that write (everything but GET and the access reviews, which create nothing).
    pub fn writes(&self) -> Vec<Request> {
        self.log()
            .into_iter()
            .filter(|r| r.method != "GET" && !r.uri.contains("selfsubjectaccessreviews"))
            .collect()
    }
}

fn discovery(path: &str, addr: SocketAddr) -> Option<Value> {
    let res = |name: &str, kind: &str, namespaced: bool, verbs: &[&str], short: &[&str]| {
        json!({"name": name, "singularName": kind.to_lowercase(), "namespaced": namespaced, "kind": kind,
               "verbs": verbs, "shortNames": short})
    };
    let group = |name: &str| {
        json!({"name": name, "versions": [{"groupVersion": format!("{name}/v1"), "version": "v1"}],
               "preferredVersion": {"groupVersion": format!("{name}/v1"), "version": "v1"}})
    };
    Some(match path {
        "/api" => json!({"kind": "APIVersions", "versions": ["v1"],
            "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": addr.to_string()}]}),
        "/apis" => json!({"kind": "APIGroupList", "apiVersion": "v1",
            "groups": [group("apps"), group("coordination.k8s.io"), group("authorization.k8s.io"), group("policy")]}),
        "/api/v1" => json!({"kind": "APIResourceList", "groupVersion": "v1", "resources": [
            res("namespaces", "Namespace", false, &["get", "list", "patch"], &["ns"]),
            res("pods", "Pod", true, &["list"], &["po"])]}),
        "/apis/apps/v1" => {
            json!({"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": "apps/v1", "resources": [
            res("deployments", "Deployment", true, &["get", "list", "patch", "update"], &["deploy"]),
            res("statefulsets", "StatefulSet", true, &["get", "list", "patch", "update"], &["sts"]),
            res("daemonsets", "DaemonSet", true, &["get", "list", "patch", "update"], &["ds"])]})
        }
        "/apis/coordination.k8s.io/v1" => json!({"kind": "APIResourceList", "apiVersion": "v1",
            "groupVersion": "coordination.k8s.io/v1", "resources": [
            res("leases", "Lease", true, &["create", "get", "list", "update"], &[])]}),
        "/apis/policy/v1" => json!({"kind": "APIResourceList", "apiVersion": "v1",
            "groupVersion": "policy/v1", "resources": [
            res("poddisruptionbudgets", "PodDisruptionBudget", true, &["get", "list"], &["pdb"])]}),
        "/apis/authorization.k8s.io/v1" => json!({"kind": "APIResourceList", "apiVersion": "v1",
            "groupVersion": "authorization.k8s.io/v1", "resources": [
            res("selfsubjectaccessreviews", "SelfSubjectAccessReview", false, &["create"], &[])]}),
        "/version" => {
            json!({"major": "1", "minor": "31", "gitVersion": "v1.31.0", "platform": "linux/amd64"})
        }
        _ => return None,
    })
}

fn handle(
    st: &Arc<Mutex<Inner>>,
    addr: SocketAddr,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let content_type = headers
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .map(|v| v.split(';').next().unwrap_or(v).trim().to_owned());
    let parsed: Option<Value> = if body.is_empty() {
        None
    } else {
        match serde_json::from_slice(&body) {
            Ok(v) => Some(v),
            Err(e) => {
                return status(
                    StatusCode::BAD_REQUEST,
                    "BadRequest",
                    format!("the body is not JSON: {e}"),
                    json!({}),
                )
            }
        }
    };
    let mut inner = st.lock().unwrap();
    let resp = route(
        &mut inner,
        st,
        addr,
        &method,
        &uri,
        content_type.as_deref(),
        parsed.as_ref(),
    );
    inner.log.push(Request {
        method: method.to_string(),
        uri: uri.to_string(),
        content_type,
        body: parsed,
        code: resp.status().as_u16(),
    });
    resp
}

/// Whether `labels` match a `labelSelector` (equality-based: `k=v`, `k==v`, `k!=v`, `k`, `!k`,
/// comma-separated; set-based `in`/`notin` are refused by the caller).
fn selects(selector: &str, labels: &Value) -> bool {
    selector.split(',').filter(|t| !t.is_empty()).all(|term| {
        let term = term.trim();
        if let Some((k, v)) = term.split_once("!=") {
            labels[k.trim()].as_str() != Some(v.trim())
        } else if let Some((k, v)) = term.split_once("==").or_else(|| term.split_once('=')) {
            labels[k.trim()].as_str() == Some(v.trim())
        } else if let Some(k) = term.strip_prefix('!') {
            labels[k.trim()].is_null()
        } else {
            !labels[term].is_null()
        }
    })
}

fn query_param(uri: &Uri, name: &str) -> Option<String> {
    uri.query()?.split('&').find_map(|p| {
        let (k, v) = p.split_once('=')?;
        (k == name).then(|| {
            // Percent-decoding of what selectors hold (`=`, `!`, `,`, `/`).
            let mut out = Vec::new();
            let b = v.as_bytes();
            let mut i = 0;
            while i < b.len() {
                if b[i] == b'%' && i + 2 < b.len() {
                    if let Ok(x) = u8::from_str_radix(&v[i + 1..i + 3], 16) {
                        out.push(x);
                        i += 3;
                        continue;
                    }
                }
                out.push(if b[i] == b'+' { b' ' } else { b[i] });
                i += 1;
            }
            String::from_utf8_lossy(&out).into_owned()
        })
    })
}

fn route(
    i: &mut Inner,
    inner: &Arc<Mutex<Inner>>,
    addr: SocketAddr,
    method: &Method,
    uri: &Uri,
    content_type: Option<&str>,
    body: Option<&Value>,
) -> Response {
    let path = uri.path().trim_end_matches('/');
    if method == Method::GET {
        if let Some(d) = discovery(path, addr) {
            return ok(StatusCode::OK, d);
        }
    }
    if uri
        .query()
        .is_some_and(|q| q.split('&').any(|p| p == "watch=1" || p == "watch=true"))
    {
        return status(
            StatusCode::NOT_IMPLEMENTED,
            "NotImplemented",
            "the double does not serve watches".into(),
            json!({}),
        );
    }
    let selector = query_param(uri, "labelSelector").unwrap_or_default();
    if selector.contains(" in ") || selector.contains(" notin ") || selector.contains('(') {
        return status(
            StatusCode::BAD_REQUEST,
            "BadRequest",
            format!("the double serves equality-based label selectors only: {selector:?}"),
            json!({}),
        );
    }
    let seg: Vec<&str> = path.split('/').skip(1).collect();
    let empty = json!({});
    let body = body.unwrap_or(&empty);
    match (method.as_str(), seg.as_slice()) {
        ("GET", ["api", "v1", "namespaces"]) => {
            let items: Vec<Value> = i
                .namespaces
                .values()
                .filter(|n| selects(&selector, &n["metadata"]["labels"]))
                .cloned()
                .collect();
            ok(
                StatusCode::OK,
                json!({"kind": "NamespaceList", "apiVersion": "v1",
                       "metadata": {"resourceVersion": i.rv.to_string()}, "items": items}),
            )
        }
        ("GET", ["api", "v1", "namespaces", ns]) => {
            let Some(o) = i.namespaces.get(*ns).cloned() else {
                return not_found("namespaces", ns);
            };
            let touch = match i.touch_after_get.get_mut(*ns) {
                Some(n) if *n > 1 => {
                    *n -= 1;
                    false
                }
                Some(_) => i.touch_after_get.remove(*ns).is_some(),
                None => false,
            };
            if touch {
                let mut n = o.clone();
                n["metadata"]["labels"]["team"] = json!("payments");
                n["metadata"]["resourceVersion"] = json!(i.next_rv());
                i.namespaces.insert((*ns).to_owned(), n);
            }
            ok(StatusCode::OK, o)
        }
        ("PATCH" | "PUT", ["api", "v1", "namespaces", ns]) => {
            let Some(cur) = i.namespaces.get(*ns).cloned() else {
                return not_found("namespaces", ns);
            };
            match i.write("namespaces", ns, &cur, method, content_type, body) {
                Ok(n) => {
                    i.namespaces.insert((*ns).to_owned(), n.clone());
                    ok(StatusCode::OK, n)
                }
                Err(r) => *r,
            }
        }
        ("GET", ["api", "v1", "namespaces", ns, "pods"]) => {
            // Listing the pods of a namespace that does not exist is an empty list, as the
            // API server answers it.
            let items: Vec<Value> = i
                .pods(ns)
                .into_iter()
                .filter(|p| selects(&selector, &p["metadata"]["labels"]))
                .collect();
            ok(
                StatusCode::OK,
                json!({"kind": "PodList", "apiVersion": "v1",
                       "metadata": {"resourceVersion": i.rv.to_string()}, "items": items}),
            )
        }
        ("GET", ["apis", "apps", "v1", "namespaces", ns, plural]) if group_of(plural) == "apps" => {
            let items: Vec<Value> = i
                .workloads
                .keys()
                .filter(|k| k.0 == *plural && k.1 == *ns)
                .filter_map(|k| i.workload_now(k))
                .filter(|w| selects(&selector, &w["metadata"]["labels"]))
                .collect();
            ok(
                StatusCode::OK,
                json!({"kind": format!("{}List", kind_of(plural)), "apiVersion": "apps/v1",
                       "metadata": {"resourceVersion": i.rv.to_string()}, "items": items}),
            )
        }
        (m, ["apis", "apps", "v1", "namespaces", ns, plural, name])
            if group_of(plural) == "apps" && matches!(m, "GET" | "PATCH" | "PUT") =>
        {
            let key = ((*plural).to_owned(), (*ns).to_owned(), (*name).to_owned());
            let Some(cur) = i.workload_now(&key) else {
                return not_found(plural, name);
            };
            if m == "GET" {
                return ok(StatusCode::OK, cur);
            }
            match i.write(plural, name, &cur, method, content_type, body) {
                Ok(n) => {
                    let restarted = n["spec"]["template"] != cur["spec"]["template"];
                    // A pod's own istio.io/rev label overrides its namespace's, as Istio's
                    // injector webhooks select.
                    let pods_rev = n["spec"]["template"]["metadata"]["labels"]["istio.io/rev"]
                        .as_str()
                        .map(str::to_owned)
                        .or_else(|| i.pods_rev_of(ns));
                    let w = i.workloads.get_mut(&key).unwrap();
                    w.obj = n;
                    if restarted {
                        let at = Instant::now();
                        w.restarted = Some(at);
                        w.old_rev = std::mem::replace(&mut w.pods_rev, pods_rev);
                        if let Some(hook) = i.on_rollout.clone() {
                            spawn_rollout_hook(inner.clone(), key.clone(), at, hook);
                        }
                    }
                    ok(StatusCode::OK, i.workload_now(&key).unwrap())
                }
                Err(r) => *r,
            }
        }
        ("GET", ["apis", "policy", "v1", "namespaces", ns, "poddisruptionbudgets"]) => {
            let items: Vec<Value> = i
                .pdbs
                .iter()
                .filter(|(k, _)| k.0 == *ns)
                .map(|(_, o)| i.pdb_now(o))
                .filter(|o| selects(&selector, &o["metadata"]["labels"]))
                .collect();
            ok(
                StatusCode::OK,
                json!({"kind": "PodDisruptionBudgetList", "apiVersion": "policy/v1",
                       "metadata": {"resourceVersion": i.rv.to_string()}, "items": items}),
            )
        }
        ("GET", ["apis", "policy", "v1", "namespaces", ns, "poddisruptionbudgets", name]) => {
            match i.pdbs.get(&((*ns).to_owned(), (*name).to_owned())) {
                Some(o) => ok(StatusCode::OK, i.pdb_now(o)),
                None => not_found("poddisruptionbudgets", name),
            }
        }
        ("POST", ["apis", "coordination.k8s.io", "v1", "namespaces", ns, "leases"]) => {
            let Some(name) = body["metadata"]["name"].as_str() else {
                return status(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "Invalid",
                    "Lease.coordination.k8s.io \"\" is invalid: metadata.name: Required value"
                        .into(),
                    json!({"kind": "Lease", "group": "coordination.k8s.io"}),
                );
            };
            let key = ((*ns).to_owned(), name.to_owned());
            if i.leases.contains_key(&key) {
                return status(
                    StatusCode::CONFLICT,
                    "AlreadyExists",
                    format!("leases.coordination.k8s.io \"{name}\" already exists"),
                    details("leases", name),
                );
            }
            let mut o = body.clone();
            o["metadata"]["namespace"] = json!(ns);
            o["metadata"]["uid"] = json!(format!("uid-lease-{name}"));
            o["metadata"]["resourceVersion"] = json!(i.next_rv());
            o["metadata"]["creationTimestamp"] = json!("2026-01-01T00:00:00Z");
            i.leases.insert(key, o.clone());
            ok(StatusCode::CREATED, o)
        }
        ("GET", ["apis", "coordination.k8s.io", "v1", "namespaces", ns, "leases", name]) => {
            match i.leases.get(&((*ns).to_owned(), (*name).to_owned())) {
                Some(o) => ok(StatusCode::OK, o.clone()),
                None => not_found("leases", name),
            }
        }
        ("PUT", ["apis", "coordination.k8s.io", "v1", "namespaces", ns, "leases", name]) => {
            let key = ((*ns).to_owned(), (*name).to_owned());
            let Some(cur) = i.leases.get(&key).cloned() else {
                return not_found("leases", name);
            };
            if body["metadata"]["resourceVersion"].as_str().is_none() {
                // Leases are updated under optimistic concurrency: an update must say which
                // version it replaces (as kube-apiserver requires for this resource).
                return status(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "Invalid",
                    format!("Lease.coordination.k8s.io \"{name}\" is invalid: metadata.resourceVersion: Invalid value: 0x0: must be specified for an update"),
                    details("leases", name),
                );
            }
            match i.write("leases", name, &cur, method, content_type, body) {
                Ok(n) => {
                    i.leases.insert(key, n.clone());
                    ok(StatusCode::OK, n)
                }
                Err(r) => *r,
            }
        }
        ("POST", ["apis", "authorization.k8s.io", "v1", "selfsubjectaccessreviews"]) => {
            let a = &body["spec"]["resourceAttributes"];
            let (verb, group, resource) = (
                a["verb"].as_str().unwrap_or(""),
                a["group"].as_str().unwrap_or(""),
                a["resource"].as_str().unwrap_or(""),
            );
            let rule = if group.is_empty() {
                format!("{verb} {resource}")
            } else {
                format!("{verb} {resource}.{group}")
            };
            let allowed = i.allowed.as_ref().is_none_or(|s| s.contains(&rule));
            let mut o = body.clone();
            o["metadata"] = json!({"creationTimestamp": null});
            o["status"] = if allowed {
                json!({"allowed": true, "reason": "RBAC: allowed by ClusterRoleBinding \"meshgate-autopilot\""})
            } else {
                json!({"allowed": false})
            };
            ok(StatusCode::CREATED, o)
        }
        _ => status(
            StatusCode::NOT_FOUND,
            "NotFound",
            "the server could not find the requested resource".into(),
            json!({}),
        ),
    }
}

/// A kubeconfig for kubectl pointing at `server`, written in `dir`.
///
/// # Panics
/// When the file cannot be written (a test helper).
pub fn kubeconfig(dir: &std::path::Path, server: &str) -> std::path::PathBuf {
    let p = dir.join("kubeconfig");
    std::fs::write(
        &p,
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: double\n  cluster:\n    server: {server}\ncontexts:\n- name: double\n  context:\n    cluster: double\n    user: nobody\ncurrent-context: double\nusers:\n- name: nobody\n  user: {{}}\n"
        ),
    )
    .unwrap_or_else(|e| panic!("writing {}: {e}", p.display()));
    p
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The double itself: the contract the autopilot's tests rely on.
    #[tokio::test]
    async fn the_double_follows_the_contract_it_serves() {
        let api = KubeApi::start().await;
        api.namespace("shop", json!({"istio-injection": "enabled"}));
        api.workload("deployments", "shop", "cart", 2);
        let c = reqwest::Client::new();
        let url = api.url();
        let get = |p: &str| c.get(format!("{url}{p}")).send();
        // PodDisruptionBudgets: listed with their status computed from the selected pods.
        api.pdb("shop", "cart", "cart", json!({"maxUnavailable": "50%"}));
        api.pdb(
            "shop",
            "none",
            "nothing-selected",
            json!({"minAvailable": 1}),
        );
        let l: Value = get("/apis/policy/v1/namespaces/shop/poddisruptionbudgets")
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(
            (l["kind"].as_str(), l["apiVersion"].as_str()),
            (Some("PodDisruptionBudgetList"), Some("policy/v1"))
        );
        let st = &l["items"][0]["status"];
        assert_eq!(l["items"][0]["metadata"]["name"], "cart");
        assert_eq!(
            (
                &st["expectedPods"],
                &st["desiredHealthy"],
                &st["disruptionsAllowed"]
            ),
            (&json!(2), &json!(1), &json!(1)),
            "{l}"
        );
        assert_eq!(l["items"][1]["status"]["disruptionsAllowed"], 0, "{l}");
        assert_eq!(
            l["items"][1]["status"]["conditions"][0]["reason"],
            "InsufficientPods"
        );
        let r = get("/apis/policy/v1/namespaces/shop/poddisruptionbudgets/nope")
            .await
            .unwrap();
        assert_eq!(r.status(), 404);
        let r = get("/api/v1/namespaces/nope").await.unwrap();
        assert_eq!(r.status(), 404);
        let s: Value = r.json().await.unwrap();
        assert_eq!(
            (s["kind"].as_str(), s["reason"].as_str(), s["code"].as_u64()),
            (Some("Status"), Some("NotFound"), Some(404))
        );
        let ns: Value = get("/api/v1/namespaces/shop")
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let rv = ns["metadata"]["resourceVersion"]
            .as_str()
            .unwrap()
            .to_owned();
        let patch = |body: Value, ct: &str| {
            c.patch(format!("{url}/api/v1/namespaces/shop"))
                .header("content-type", ct.to_owned())
                .body(body.to_string())
                .send()
        };
        let r = patch(json!({"metadata": {"labels": {"istio-injection": null, "istio.io/rev": "1-25-0"}, "resourceVersion": rv}}), "application/merge-patch+json").await.unwrap();
        assert_eq!(r.status(), 200);
        let n: Value = r.json().await.unwrap();
        assert_eq!(n["metadata"]["labels"], json!({"istio.io/rev": "1-25-0"}));
        assert_ne!(n["metadata"]["resourceVersion"].as_str(), Some(rv.as_str()));
        // The same resourceVersion again is stale now.
        let r = patch(
            json!({"metadata": {"labels": {"a": "b"}, "resourceVersion": rv}}),
            "application/merge-patch+json",
        )
        .await
        .unwrap();
        assert_eq!(r.status(), 409);
        let s: Value = r.json().await.unwrap();
        assert_eq!(
            (s["kind"].as_str(), s["reason"].as_str(), s["code"].as_u64()),
            (Some("Status"), Some("Conflict"), Some(409))
        );
        let r = patch(
            json!({"metadata": {"labels": {"a": "b"}}}),
            "application/json-patch+json",
        )
        .await
        .unwrap();
        assert_eq!(r.status(), 415);
        // A restart bumps generation, and the rollout progresses to done; the hook is told
        // when it is.
        let told = Arc::new(Mutex::new(Vec::<(String, String)>::new()));
        let t = told.clone();
        api.on_rollout(move |ns, rev| t.lock().unwrap().push((ns.into(), rev.into())));
        let r = c
            .patch(format!("{url}/apis/apps/v1/namespaces/shop/deployments/cart"))
            .header("content-type", "application/strategic-merge-patch+json")
            .body(json!({"spec": {"template": {"metadata": {"annotations": {"kubectl.kubernetes.io/restartedAt": "2026-12-07T16:00:00Z"}}}}}).to_string())
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        let d: Value = r.json().await.unwrap();
        assert_eq!(d["metadata"]["generation"], 2);
        assert_eq!(d["status"]["observedGeneration"], 1);
        assert_eq!(
            api.pods_rev("deployments", "shop", "cart").as_deref(),
            Some("1-25-0")
        );
        // Pods as the injector leaves them: before the new ones come up, all on the old
        // revision (the default injector's, as istio-injection=enabled named it).
        let pods = |q: &'static str| {
            let (c, url) = (c.clone(), url.clone());
            async move {
                let l: Value = c
                    .get(format!("{url}/api/v1/namespaces/shop/pods{q}"))
                    .send()
                    .await
                    .unwrap()
                    .json()
                    .await
                    .unwrap();
                assert_eq!(
                    (l["kind"].as_str(), l["apiVersion"].as_str()),
                    (Some("PodList"), Some("v1"))
                );
                assert!(l["metadata"]["resourceVersion"].is_string(), "{l}");
                l["items"].as_array().unwrap().clone()
            }
        };
        let revs = |items: &[Value]| -> Vec<String> {
            items
                .iter()
                .map(|p| {
                    let st: Value = serde_json::from_str(
                        p["metadata"]["annotations"]["sidecar.istio.io/status"]
                            .as_str()
                            .unwrap(),
                    )
                    .unwrap();
                    assert_eq!(
                        st["revision"], p["metadata"]["labels"]["istio.io/rev"],
                        "{p}"
                    );
                    st["revision"].as_str().unwrap().to_owned()
                })
                .collect()
        };
        assert_eq!(revs(&pods("").await), ["default", "default"]);
        assert!(
            told.lock().unwrap().is_empty(),
            "told before the rollout is done"
        );
        tokio::time::sleep(ROLLOUT + Duration::from_millis(50)).await;
        let items = pods("?labelSelector=app%3Dcart").await;
        assert_eq!(revs(&items), ["1-25-0", "1-25-0"]);
        let p = &items[0];
        assert_eq!(p["metadata"]["namespace"], "shop");
        assert_eq!(p["status"]["phase"], "Running");
        assert_eq!(p["metadata"]["ownerReferences"][0]["kind"], "ReplicaSet");
        assert!(
            p["metadata"]["name"].as_str().unwrap().starts_with("cart-"),
            "{p}"
        );
        assert!(pods("?labelSelector=app%3Dother").await.is_empty());
        assert_eq!(
            *told.lock().unwrap(),
            [("shop".to_owned(), "1-25-0".to_owned())]
        );
        let d = api.object("deployments", "shop", "cart");
        assert_eq!(
            d["status"],
            json!({"observedGeneration": 2, "replicas": 2, "updatedReplicas": 2, "readyReplicas": 2, "availableReplicas": 2})
        );
        // Label selectors on lists, percent-encoded as clients send them.
        api.namespace("ads", json!({"istio.io/rev": "1-24-2"}));
        let l: Value = get("/api/v1/namespaces?labelSelector=istio.io%2Frev%3D1-25-0")
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let names: Vec<&str> = l["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|n| n["metadata"]["name"].as_str().unwrap())
            .collect();
        assert_eq!(names, ["shop"]);
        let l: Value = get("/api/v1/namespaces?labelSelector=%21istio.io%2Frev")
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(l["items"].as_array().unwrap().len(), 0);
        let writes = api.writes();
        let codes: Vec<u16> = writes.iter().map(|r| r.code).collect();
        assert_eq!(codes, [200, 409, 415, 200], "{writes:?}");
    }
}
