//! Kubernetes discovery: pods with an Istio sidecar, istiod pods per revision, namespace labels and
//! revision tags, followed with list + watch (bookmarks, `410 Gone` re-list, periodic resync)
//! against the API server over plain HTTPS/HTTP with reqwest.
//!
//! kube-rs was not tried (README, "Kubernetes discovery"); this module speaks the API server's
//! list/watch protocol (`?watch=1&resourceVersion=..&allowWatchBookmarks=true`, one JSON
//! event per line) and reads only the fields it needs.

use std::collections::BTreeMap;
use std::time::Duration;

use futures_util::StreamExt;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use super::Target;

/// `[discovery.kubernetes]`
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KubernetesConfig {
    /// API server URL; in a pod: `https://kubernetes.default.svc`.
    #[serde(default = "default_api")]
    pub api_server: String,
    /// Bearer token file. Unset: the service account's (`SERVICE_ACCOUNT_DIR/token`) when that
    /// file exists, as in a pod. Re-read whenever the file changes (projected tokens rotate).
    #[serde(default)]
    pub token_file: Option<std::path::PathBuf>,
    /// CA bundle for the API server. Unset: the service account's (`SERVICE_ACCOUNT_DIR/ca.crt`)
    /// when that file exists.
    #[serde(default)]
    pub ca_file: Option<std::path::PathBuf>,
    /// Cluster name put on every target (`cluster` label).
    pub cluster: String,
    /// Full re-list period (on top of watches), as informers resync.
    #[serde(default = "default_resync", with = "humantime_serde")]
    pub resync: Duration,
    /// Server-side timeout of one watch request (the watch is then resumed).
    #[serde(default = "default_watch_timeout", with = "humantime_serde")]
    pub watch_timeout: Duration,
}

/// Where a pod's service account token and CA are mounted.
pub const SERVICE_ACCOUNT_DIR: &str = "/var/run/secrets/kubernetes.io/serviceaccount";

impl KubernetesConfig {
    /// The in-cluster defaults: the token and CA of the service account mounted at `dir`, for
    /// whichever of the two is unset and present there.
    pub fn with_in_cluster_defaults(mut self, dir: &std::path::Path) -> Self {
        if self.token_file.is_none() && dir.join("token").is_file() {
            self.token_file = Some(dir.join("token"));
        }
        if self.ca_file.is_none() && dir.join("ca.crt").is_file() {
            self.ca_file = Some(dir.join("ca.crt"));
        }
        self
    }
}

/// The next pause after a failure: "equal jitter" over an exponential backoff (half the current
/// step plus a random part of the other half, so clients that failed together do not retry
/// together), and the following step (doubled, at most 30 s). `unit` is a random number in
/// [0, 1).
pub fn backoff_step(current: Duration, unit: f64) -> (Duration, Duration) {
    let unit = unit.clamp(0.0, 1.0);
    let pause = current / 2 + current.mul_f64(unit / 2.0);
    (pause, (current * 2).min(MAX_BACKOFF))
}

/// The first pause step after a success.
pub const MIN_BACKOFF: Duration = Duration::from_millis(200);
/// The longest pause step.
pub const MAX_BACKOFF: Duration = Duration::from_secs(30);

fn default_api() -> String {
    "https://kubernetes.default.svc".into()
}
fn default_resync() -> Duration {
    Duration::from_secs(300)
}
fn default_watch_timeout() -> Duration {
    Duration::from_secs(290)
}

/// The three kinds followed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Kind {
    /// `/api/v1/pods`
    Pods,
    /// `/api/v1/namespaces`
    Namespaces,
    /// `/apis/admissionregistration.k8s.io/v1/mutatingwebhookconfigurations?labelSelector=istio.io/tag`
    Webhooks,
}

impl Kind {
    fn path(self) -> &'static str {
        match self {
            Kind::Pods => "/api/v1/pods",
            Kind::Namespaces => "/api/v1/namespaces",
            Kind::Webhooks => "/apis/admissionregistration.k8s.io/v1/mutatingwebhookconfigurations",
        }
    }

    fn selector(self) -> Option<&'static str> {
        match self {
            Kind::Webhooks => Some("istio.io/tag"),
            _ => None,
        }
    }
}

/// What happened to an object.
#[derive(Debug)]
pub enum Change {
    /// A full list replaced everything of a kind.
    Relist(Kind, Vec<Value>),
    /// Added or modified.
    Upsert(Kind, Value),
    /// Deleted.
    Delete(Kind, Value),
}

/// The objects known, by kind and `namespace/name`.
#[derive(Debug, Default)]
pub struct KubeState {
    objects: BTreeMap<Kind, BTreeMap<String, Value>>,
}

fn key(o: &Value) -> String {
    let m = &o["metadata"];
    format!(
        "{}/{}",
        m["namespace"].as_str().unwrap_or(""),
        m["name"].as_str().unwrap_or("")
    )
}

fn label<'a>(o: &'a Value, k: &str) -> Option<&'a str> {
    o["metadata"]["labels"][k].as_str()
}

fn annotation<'a>(o: &'a Value, k: &str) -> Option<&'a str> {
    o["metadata"]["annotations"][k].as_str()
}

/// The version in an image reference's tag (`docker.io/istio/proxyv2:1.25.0` -> `1.25.0`).
fn image_version(image: &str) -> Option<String> {
    let name = image.split('@').next().unwrap_or(image);
    let tag = name.rsplit_once(':')?.1;
    (!tag.contains('/')).then(|| tag.to_owned())
}

// === impl KubeState ===

impl KubeState {
    /// Apply a change.
    pub fn apply(&mut self, c: Change) {
        match c {
            Change::Relist(k, items) => {
                self.objects
                    .insert(k, items.into_iter().map(|o| (key(&o), o)).collect());
            }
            Change::Upsert(k, o) => {
                self.objects.entry(k).or_default().insert(key(&o), o);
            }
            Change::Delete(k, o) => {
                self.objects.entry(k).or_default().remove(&key(&o));
            }
        }
    }

    fn of(&self, k: Kind) -> impl Iterator<Item = &Value> {
        self.objects.get(&k).into_iter().flat_map(|m| m.values())
    }

    /// Revision tags: tag -> revision (from webhooks labelled `istio.io/tag` and `istio.io/rev`).
    pub fn tags(&self) -> BTreeMap<String, String> {
        self.of(Kind::Webhooks)
            .filter_map(|w| {
                Some((
                    label(w, "istio.io/tag")?.to_owned(),
                    label(w, "istio.io/rev")?.to_owned(),
                ))
            })
            .collect()
    }

    /// The targets: sidecar pods and istiod pods that are running with an IP.
    pub fn targets(&self, cluster: &str) -> Vec<Target> {
        let tags = self.tags();
        let resolve = |r: &str| tags.get(r).cloned().unwrap_or_else(|| r.to_owned());
        let namespaces: BTreeMap<&str, &Value> = self
            .of(Kind::Namespaces)
            .filter_map(|n| Some((n["metadata"]["name"].as_str()?, n)))
            .collect();
        let mut out = Vec::new();
        for p in self.of(Kind::Pods) {
            let (Some(ns), Some(name), Some(ip)) = (
                p["metadata"]["namespace"].as_str(),
                p["metadata"]["name"].as_str(),
                p["status"]["podIP"].as_str(),
            ) else {
                continue;
            };
            if p["status"]["phase"].as_str() != Some("Running")
                || p["metadata"]["deletionTimestamp"].is_string()
            {
                continue;
            }
            let containers = p["spec"]["containers"]
                .as_array()
                .into_iter()
                .flatten()
                .chain(p["spec"]["initContainers"].as_array().into_iter().flatten());
            let mut proxy_image = None;
            let mut istiod_image = None;
            for c in containers {
                match c["name"].as_str() {
                    Some("istio-proxy") => proxy_image = c["image"].as_str(),
                    Some("discovery") => istiod_image = c["image"].as_str(),
                    _ => {}
                }
            }
            let ns_obj = namespaces.get(ns);
            let mut labels = BTreeMap::from([
                ("namespace".to_string(), ns.to_string()),
                ("pod".to_string(), name.to_string()),
                ("cluster".to_string(), cluster.to_string()),
            ]);
            if let Some(n) = ns_obj {
                // The namespace's Istio labels as written (tags unresolved), present whenever the
                // namespace is known: what an upgrade plan restores on rollback.
                labels.insert(
                    "namespace_labels".into(),
                    crate::plan::NamespaceLabels {
                        istio_injection: label(n, "istio-injection").map(str::to_owned),
                        rev: label(n, "istio.io/rev").map(str::to_owned),
                    }
                    .to_string(),
                );
                if let Some(v) = label(n, "istio-injection") {
                    labels.insert("namespace_istio_injection".into(), v.into());
                }
                if let Some(v) = label(n, "istio.io/rev") {
                    labels.insert("namespace_rev".into(), resolve(v));
                }
            }
            if label(p, "app") == Some("istiod") {
                labels.insert("role".into(), "istiod".into());
                labels.insert(
                    "revision".into(),
                    label(p, "istio.io/rev").unwrap_or("default").into(),
                );
                if let Some(v) = istiod_image.and_then(image_version) {
                    labels.insert("version".into(), v);
                }
                out.push(Target {
                    url: format!("http://{}/metrics", join_host_port(ip, 15014)),
                    labels,
                });
                continue;
            }
            let Some(image) = proxy_image else {
                continue;
            };
            // The pod's own revision label, else its namespace's (tags resolved), else the
            // default revision when the namespace uses istio-injection=enabled.
            let revision = label(p, "istio.io/rev")
                .map(resolve)
                .or_else(|| ns_obj.and_then(|n| label(n, "istio.io/rev")).map(resolve))
                .unwrap_or_else(|| "default".into());
            labels.insert("role".into(), "proxy".into());
            labels.insert("revision".into(), revision);
            if let Some(v) = image_version(image) {
                labels.insert("version".into(), v);
            }
            // Metrics merging rewrites prometheus.io/port to the agent's 15020; without it, 15090.
            let port = annotation(p, "prometheus.io/port")
                .and_then(|v| v.parse::<u16>().ok())
                .unwrap_or(15090);
            let path = annotation(p, "prometheus.io/path").unwrap_or("/stats/prometheus");
            out.push(Target {
                url: format!("http://{}{path}", join_host_port(ip, port)),
                labels,
            });
        }
        out.sort();
        out
    }
}

fn join_host_port(ip: &str, port: u16) -> String {
    if ip.contains(':') {
        format!("[{ip}]:{port}")
    } else {
        format!("{ip}:{port}")
    }
}

/// A list/watch failure.
#[derive(Debug, thiserror::Error)]
pub enum KubeError {
    /// HTTP or transport.
    #[error("{kind:?}: {message}")]
    Http {
        /// Kind.
        kind: Kind,
        /// What.
        message: String,
    },
    /// The resource version is too old (410 Gone): re-list.
    #[error("{0:?}: resource version too old (410 Gone), re-listing")]
    Gone(Kind),
}

/// Follows the API server and publishes the targets.
pub struct KubeDiscovery {
    cfg: KubernetesConfig,
    client: reqwest::Client,
    token: Option<crate::secret::TokenFile>,
}

/// The API server's CA added to `b`, and the token file opened, from `[discovery.kubernetes]`
/// (with the in-cluster defaults already applied): shared by discovery and the autopilot.
pub(crate) fn ca_and_token(
    cfg: &KubernetesConfig,
    mut b: reqwest::ClientBuilder,
) -> Result<(reqwest::ClientBuilder, Option<crate::secret::TokenFile>), String> {
    if let Some(ca) = &cfg.ca_file {
        let pem = std::fs::read(ca)
            .map_err(|e| format!("discovery.kubernetes.ca_file {}: {e}", ca.display()))?;
        let cert = reqwest::Certificate::from_pem(&pem)
            .map_err(|e| format!("discovery.kubernetes.ca_file {}: {e}", ca.display()))?;
        b = b.add_root_certificate(cert);
    }
    let token = match &cfg.token_file {
        Some(p) => Some(crate::secret::TokenFile::open(
            "discovery.kubernetes.token_file",
            p,
        )?),
        None => None,
    };
    Ok((b, token))
}

impl KubeDiscovery {
    /// Build the client: token and CA from the configured files, else from the pod's service
    /// account when mounted ([`SERVICE_ACCOUNT_DIR`]).
    pub fn build(cfg: KubernetesConfig) -> Result<Self, String> {
        Self::build_in(cfg, std::path::Path::new(SERVICE_ACCOUNT_DIR))
    }

    /// [`Self::build`] with the service account mounted at `sa_dir`.
    pub fn build_in(cfg: KubernetesConfig, sa_dir: &std::path::Path) -> Result<Self, String> {
        let cfg = cfg.with_in_cluster_defaults(sa_dir);
        let b = reqwest::Client::builder().connect_timeout(Duration::from_secs(10));
        let (b, token) = ca_and_token(&cfg, b)?;
        let client = b.build().map_err(|e| e.to_string())?;
        Ok(Self { cfg, client, token })
    }

    fn get(&self, url: String) -> reqwest::RequestBuilder {
        let r = self.client.get(url);
        match &self.token {
            Some(t) => r.bearer_auth(t.token()),
            None => r,
        }
    }

    /// List a kind: its items and the list's resourceVersion.
    pub async fn list(&self, kind: Kind) -> Result<(Vec<Value>, String), KubeError> {
        let err = |message: String| KubeError::Http { kind, message };
        let mut url = format!("{}{}?limit=500", self.cfg.api_server, kind.path());
        if let Some(s) = kind.selector() {
            url.push_str(&format!("&labelSelector={s}"));
        }
        let mut items = Vec::new();
        let mut cont: Option<String> = None;
        loop {
            let u = match &cont {
                Some(c) => format!("{url}&continue={c}"),
                None => url.clone(),
            };
            let resp = self
                .get(u)
                .timeout(Duration::from_secs(60))
                .send()
                .await
                .map_err(|e| err(e.to_string()))?;
            if resp.status() == reqwest::StatusCode::GONE {
                return Err(KubeError::Gone(kind));
            }
            if !resp.status().is_success() {
                return Err(err(format!("list: HTTP {}", resp.status())));
            }
            let v: Value = resp.json().await.map_err(|e| err(format!("list: {e}")))?;
            items.extend(v["items"].as_array().cloned().unwrap_or_default());
            match v["metadata"]["continue"].as_str().filter(|c| !c.is_empty()) {
                Some(c) => cont = Some(c.to_owned()),
                None => {
                    let rv = v["metadata"]["resourceVersion"]
                        .as_str()
                        .unwrap_or("")
                        .to_owned();
                    return Ok((items, rv));
                }
            }
        }
    }

    /// Watch a kind from `rv`, sending changes; returns the last resourceVersion seen when the
    /// server ends the watch, or `Gone` when it must re-list.
    pub async fn watch(
        &self,
        kind: Kind,
        mut rv: String,
        tx: &mpsc::Sender<Change>,
    ) -> Result<String, KubeError> {
        let err = |message: String| KubeError::Http { kind, message };
        let mut url = format!(
            "{}{}?watch=1&allowWatchBookmarks=true&resourceVersion={rv}&timeoutSeconds={}",
            self.cfg.api_server,
            kind.path(),
            self.cfg.watch_timeout.as_secs().max(1)
        );
        if let Some(s) = kind.selector() {
            url.push_str(&format!("&labelSelector={s}"));
        }
        let resp = self.get(url).send().await.map_err(|e| err(e.to_string()))?;
        if resp.status() == reqwest::StatusCode::GONE {
            return Err(KubeError::Gone(kind));
        }
        if !resp.status().is_success() {
            return Err(err(format!("watch: HTTP {}", resp.status())));
        }
        let mut body = resp.bytes_stream();
        let mut buf: Vec<u8> = Vec::new();
        let idle = self.cfg.watch_timeout + Duration::from_secs(30);
        loop {
            let chunk = match tokio::time::timeout(idle, body.next()).await {
                Err(_) => return Err(err("watch: no data within the watch timeout".into())),
                Ok(None) => return Ok(rv),
                Ok(Some(Err(e))) => return Err(err(format!("watch: {e}"))),
                Ok(Some(Ok(c))) => c,
            };
            buf.extend_from_slice(&chunk);
            if buf.len() > 16 << 20 {
                return Err(err("watch: an event larger than 16 MiB".into()));
            }
            while let Some(i) = buf.iter().position(|b| *b == b'\n') {
                let line: Vec<u8> = buf.drain(..=i).collect();
                if line.iter().all(u8::is_ascii_whitespace) {
                    continue;
                }
                let ev: Value =
                    serde_json::from_slice(&line).map_err(|e| err(format!("watch event: {e}")))?;
                let obj = ev["object"].clone();
                if let Some(v) = obj["metadata"]["resourceVersion"].as_str() {
                    rv = v.to_owned();
                }
                let change = match ev["type"].as_str() {
                    Some("ADDED") | Some("MODIFIED") => Change::Upsert(kind, obj),
                    Some("DELETED") => Change::Delete(kind, obj),
                    Some("BOOKMARK") => continue,
                    Some("ERROR") => {
                        if obj["code"].as_i64() == Some(410) {
                            return Err(KubeError::Gone(kind));
                        }
                        return Err(err(format!(
                            "watch error: {}",
                            obj["message"].as_str().unwrap_or("?")
                        )));
                    }
                    other => return Err(err(format!("unknown watch event type {other:?}"))),
                };
                if tx.send(change).await.is_err() {
                    return Ok(rv);
                }
            }
        }
    }

    /// List then watch one kind forever: re-list on 410 Gone, on errors (after a pause) and every
    /// `resync`.
    async fn follow(
        self: std::sync::Arc<Self>,
        kind: Kind,
        tx: mpsc::Sender<Change>,
        stop: CancellationToken,
    ) {
        let mut backoff = MIN_BACKOFF;
        let pause = |backoff: &mut Duration| {
            let (p, next) = backoff_step(*backoff, rand::random::<f64>());
            *backoff = next;
            p
        };
        'relist: loop {
            let (items, mut rv) = match self.list(kind).await {
                Ok(x) => x,
                Err(e) => {
                    let p = pause(&mut backoff);
                    warn!(error = %e, retry_in = ?p, "kubernetes list failed");
                    tokio::select! { _ = stop.cancelled() => return, _ = tokio::time::sleep(p) => {} }
                    continue;
                }
            };
            debug!(?kind, items = items.len(), %rv, "kubernetes listed");
            if tx.send(Change::Relist(kind, items)).await.is_err() {
                return;
            }
            let resync_at = tokio::time::Instant::now() + self.cfg.resync;
            loop {
                let r = tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = tokio::time::sleep_until(resync_at) => continue 'relist,
                    r = self.watch(kind, rv.clone(), &tx) => r,
                };
                match r {
                    Ok(v) => {
                        // A watch that ended normally: the server is well, start over small.
                        backoff = MIN_BACKOFF;
                        rv = v;
                    }
                    Err(KubeError::Gone(_)) => {
                        info!(
                            ?kind,
                            "kubernetes watch: resource version too old, re-listing"
                        );
                        continue 'relist;
                    }
                    Err(e) => {
                        let p = pause(&mut backoff);
                        warn!(error = %e, retry_in = ?p, "kubernetes watch failed, re-listing");
                        tokio::select! { _ = stop.cancelled() => return, _ = tokio::time::sleep(p) => {} }
                        continue 'relist;
                    }
                }
            }
        }
    }

    /// Follow pods, namespaces and revision tags; publish the targets on every change.
    pub async fn run(self, tx: watch::Sender<Vec<Target>>, stop: CancellationToken) {
        let me = std::sync::Arc::new(self);
        let (ctx, mut crx) = mpsc::channel(256);
        for kind in [Kind::Pods, Kind::Namespaces, Kind::Webhooks] {
            tokio::spawn(me.clone().follow(kind, ctx.clone(), stop.clone()));
        }
        drop(ctx);
        let mut state = KubeState::default();
        // Publish only once every kind was listed (as informers wait for their caches to sync):
        // a pod seen before its namespace would get a wrong revision.
        let mut synced = std::collections::BTreeSet::new();
        loop {
            let c = tokio::select! {
                _ = stop.cancelled() => return,
                c = crx.recv() => match c { Some(c) => c, None => return },
            };
            let mut apply = |c: Change| {
                if let Change::Relist(k, _) = &c {
                    synced.insert(*k);
                }
                state.apply(c);
            };
            apply(c);
            while let Ok(c) = crx.try_recv() {
                apply(c);
            }
            if synced.len() < 3 {
                continue;
            }
            let targets = state.targets(&me.cfg.cluster);
            tx.send_if_modified(|cur| {
                let changed = *cur != targets;
                if changed {
                    *cur = targets;
                }
                changed
            });
        }
    }
}

/// Publish the union of the static/file_sd targets and the Kubernetes targets (a URL listed in
/// both keeps the configured labels).
pub async fn merge(
    mut files: watch::Receiver<super::TargetSet>,
    mut kube: watch::Receiver<Vec<Target>>,
    out: watch::Sender<super::TargetSet>,
    stop: CancellationToken,
) {
    loop {
        let mut all: BTreeMap<String, std::sync::Arc<Target>> = kube
            .borrow_and_update()
            .iter()
            .map(|t| (t.url.clone(), std::sync::Arc::new(t.clone())))
            .collect();
        for t in files.borrow_and_update().iter() {
            all.insert(t.url.clone(), t.clone());
        }
        let set: super::TargetSet = std::sync::Arc::new(all.into_values().collect());
        out.send_if_modified(|cur| {
            let changed = **cur != *set;
            if changed {
                *cur = set;
            }
            changed
        });
        tokio::select! {
            _ = stop.cancelled() => return,
            r = files.changed() => if r.is_err() { return },
            r = kube.changed() => if r.is_err() { return },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn backoff_is_jittered_within_half_to_full_step_and_doubles_to_the_cap() {
        let mut step = MIN_BACKOFF;
        let mut steps = Vec::new();
        for unit in [
            0.0, 0.999, 0.5, 0.25, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.999,
        ] {
            let (p, next) = backoff_step(step, unit);
            assert!(
                p >= step / 2 && p < step,
                "{p:?} outside [{:?}, {step:?})",
                step / 2
            );
            steps.push(step);
            step = next;
        }
        assert_eq!(steps[..4], [200, 400, 800, 1600].map(Duration::from_millis));
        assert_eq!(step, MAX_BACKOFF, "capped at 30 s");
        assert_eq!(backoff_step(MAX_BACKOFF, 0.0).1, MAX_BACKOFF);
        // Two clients that failed together at 1.6 s retry apart when their draws differ.
        assert_ne!(
            backoff_step(Duration::from_millis(1600), 0.1).0,
            backoff_step(Duration::from_millis(1600), 0.9).0
        );
    }

    #[test]
    fn in_cluster_defaults_take_the_mounted_service_account_only_where_unset() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = |token: Option<&str>| KubernetesConfig {
            api_server: default_api(),
            token_file: token.map(Into::into),
            ca_file: None,
            cluster: "c".into(),
            resync: default_resync(),
            watch_timeout: default_watch_timeout(),
        };
        // Nothing mounted: nothing set.
        let c = cfg(None).with_in_cluster_defaults(dir.path());
        assert_eq!((c.token_file, c.ca_file), (None, None));
        std::fs::write(dir.path().join("token"), "t").unwrap();
        std::fs::write(dir.path().join("ca.crt"), "pem").unwrap();
        let c = cfg(None).with_in_cluster_defaults(dir.path());
        assert_eq!(c.token_file, Some(dir.path().join("token")));
        assert_eq!(c.ca_file, Some(dir.path().join("ca.crt")));
        // A configured file wins.
        let c = cfg(Some("/etc/other")).with_in_cluster_defaults(dir.path());
        assert_eq!(c.token_file, Some("/etc/other".into()));
    }

    #[test]
    fn watch_events_update_the_targets() {
        let mut s = KubeState::default();
        let p = |phase: &str, rev: &str| {
            json!({"metadata": {"name": "a", "namespace": "n", "labels": {"istio.io/rev": rev}},
                   "spec": {"initContainers": [{"name": "istio-proxy", "image": "istio/proxyv2:1.25.1@sha256:ab"}]},
                   "status": {"phase": phase, "podIP": "fd00::5"}})
        };
        s.apply(Change::Upsert(Kind::Pods, p("Pending", "r1")));
        assert!(s.targets("c").is_empty(), "pending pods are not scraped");
        s.apply(Change::Upsert(Kind::Pods, p("Running", "r1")));
        let t = s.targets("c");
        assert_eq!(t[0].url, "http://[fd00::5]:15090/stats/prometheus");
        assert_eq!(
            t[0].label("version"),
            Some("1.25.1"),
            "native sidecar, digest stripped"
        );
        s.apply(Change::Upsert(Kind::Pods, p("Running", "r2")));
        assert_eq!(s.targets("c")[0].label("revision"), Some("r2"));
        s.apply(Change::Delete(Kind::Pods, p("Running", "r2")));
        assert!(s.targets("c").is_empty());
        assert_eq!(image_version("registry:5000/istio/proxyv2"), None);
    }
}
