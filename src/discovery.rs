//! Target discovery: static targets from the config and Prometheus `file_sd` JSON files, watched.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

pub mod kubernetes;

pub use meshgate_core::Target;

/// The current target set, shared cheaply.
pub type TargetSet = Arc<Vec<Arc<Target>>>;

/// A `file_sd` file or entry that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum DiscoveryError {
    /// The file cannot be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// File.
        path: String,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// The JSON is malformed.
    #[error("{path}: invalid file_sd JSON: {source}")]
    Json {
        /// File.
        path: String,
        /// Cause.
        #[source]
        source: serde_json::Error,
    },
    /// An entry is wrong.
    #[error("{path}: group {group}: {message}")]
    Entry {
        /// File.
        path: String,
        /// Index of the group in the file.
        group: usize,
        /// What is wrong.
        message: String,
    },
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FileSdGroup {
    targets: Vec<String>,
    #[serde(default)]
    labels: BTreeMap<String, String>,
}

/// Whether `s` is a valid Prometheus label name.
pub fn valid_label_name(s: &str) -> bool {
    let mut c = s.chars();
    matches!(c.next(), Some(x) if x.is_ascii_alphabetic() || x == '_')
        && c.all(|x| x.is_ascii_alphanumeric() || x == '_')
}

/// Check that an URL is an absolute http(s) URL with a host.
pub fn check_url(url: &str) -> Result<(), String> {
    let parsed = reqwest::Url::parse(url).map_err(|e| format!("{url:?} is not an URL: {e}"))?;
    if !matches!(parsed.scheme(), "http" | "https") {
        return Err(format!("{url:?}: scheme must be http or https"));
    }
    if parsed.host_str().is_none_or(str::is_empty) {
        return Err(format!("{url:?} has no host"));
    }
    Ok(())
}

/// Parse a `file_sd` JSON document into targets. Prometheus' meta labels `__scheme__` and
/// `__metrics_path__` build the URL (defaults `http` and `/metrics`); other `__` labels are dropped.
pub fn parse_file_sd(text: &str, path: &str) -> Result<Vec<Target>, DiscoveryError> {
    let groups: Vec<FileSdGroup> =
        serde_json::from_str(text).map_err(|source| DiscoveryError::Json {
            path: path.to_owned(),
            source,
        })?;
    let mut out = Vec::new();
    for (i, g) in groups.into_iter().enumerate() {
        let entry = |message: String| DiscoveryError::Entry {
            path: path.to_owned(),
            group: i,
            message,
        };
        let scheme = g
            .labels
            .get("__scheme__")
            .map(String::as_str)
            .unwrap_or("http");
        let metrics_path = g
            .labels
            .get("__metrics_path__")
            .map(String::as_str)
            .unwrap_or("/metrics");
        if !metrics_path.starts_with('/') {
            return Err(entry(format!(
                "__metrics_path__ {metrics_path:?} must start with '/'"
            )));
        }
        let mut labels = BTreeMap::new();
        for (k, v) in &g.labels {
            if k.starts_with("__") {
                continue;
            }
            if !valid_label_name(k) {
                return Err(entry(format!("invalid label name {k:?}")));
            }
            labels.insert(k.clone(), v.clone());
        }
        for t in &g.targets {
            if t.is_empty() || t.contains('/') {
                return Err(entry(format!("target {t:?} must be host:port")));
            }
            let url = format!("{scheme}://{t}{metrics_path}");
            check_url(&url).map_err(entry)?;
            out.push(Target {
                url,
                labels: labels.clone(),
            });
        }
    }
    Ok(out)
}

/// Keeps the target set current and publishes it on a `watch` channel.
pub struct Discovery {
    static_targets: Vec<Target>,
    files: Vec<PathBuf>,
    refresh: Duration,
}

struct FileState {
    path: PathBuf,
    modified: Option<SystemTime>,
    targets: Vec<Target>,
}

// === impl Discovery ===

impl Discovery {
    /// Build from config.
    pub fn new(static_targets: &[StaticTarget], cfg: &DiscoveryConfig) -> Self {
        Self {
            static_targets: static_targets
                .iter()
                .map(|t| Target {
                    url: t.url.clone(),
                    labels: t.labels.clone(),
                })
                .collect(),
            files: cfg.file_sd.clone(),
            refresh: cfg.refresh,
        }
    }

    /// Read everything once; errors in files are returned (the daemon logs them and goes on).
    pub fn initial(&self) -> (TargetSet, Vec<DiscoveryError>) {
        let mut states = Vec::new();
        self.sync_files(&mut states);
        let errors = states.iter_mut().filter_map(|s| reload(s).err()).collect();
        (self.assemble(&states), errors)
    }

    /// Make `states` follow the files the patterns match now (a `*` in the file name matches
    /// like Prometheus' file_sd globs). Returns true when a file appeared or went away.
    fn sync_files(&self, states: &mut Vec<FileState>) -> bool {
        let mut paths: Vec<PathBuf> = self.files.iter().flat_map(|p| expand(p)).collect();
        paths.sort();
        paths.dedup();
        let before = states.len();
        states.retain(|s| paths.contains(&s.path));
        let mut changed = states.len() != before;
        for p in paths {
            if !states.iter().any(|s| s.path == p) {
                states.push(FileState {
                    path: p,
                    modified: None,
                    targets: Vec::new(),
                });
                changed = true;
            }
        }
        changed
    }

    fn assemble(&self, files: &[FileState]) -> TargetSet {
        let mut all: BTreeMap<String, Target> = BTreeMap::new();
        for t in self
            .static_targets
            .iter()
            .chain(files.iter().flat_map(|f| f.targets.iter()))
        {
            // The first definition of an URL wins: static targets, then files in order.
            all.entry(t.url.clone()).or_insert_with(|| t.clone());
        }
        Arc::new(all.into_values().map(Arc::new).collect())
    }

    /// Poll the files every `refresh` and publish a new set when it changes. A file that turns bad
    /// keeps its last good targets, so a half-written file never drops targets.
    pub async fn run(self, tx: watch::Sender<TargetSet>, shutdown: CancellationToken) {
        let mut states = Vec::new();
        self.sync_files(&mut states);
        for s in &mut states {
            if let Err(e) = reload(s) {
                warn!(error = %e, "file_sd");
            }
        }
        tx.send_if_modified(|cur| replace_if_changed(cur, self.assemble(&states)));
        if self.files.is_empty() {
            shutdown.cancelled().await;
            return;
        }
        let mut tick = tokio::time::interval(self.refresh);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tick.tick() => {}
            }
            let mut changed = self.sync_files(&mut states);
            for s in &mut states {
                let m = std::fs::metadata(&s.path).and_then(|m| m.modified()).ok();
                if m != s.modified {
                    match reload(s) {
                        Ok(()) => {
                            info!(path = %s.path.display(), targets = s.targets.len(), "file_sd reloaded");
                            changed = true;
                        }
                        Err(e) => {
                            warn!(error = %e, "file_sd reload failed, keeping previous targets")
                        }
                    }
                }
            }
            if changed {
                let next = self.assemble(&states);
                tx.send_if_modified(|cur| replace_if_changed(cur, next));
            }
        }
    }
}

/// The files a pattern names: itself, or with a `*` in the file name, the matching files.
/// The files a `file_sd` entry names now: itself, or, with a `*` in the file name, the files of
/// its directory that match (none when the directory is missing).
pub fn expand(pattern: &Path) -> Vec<PathBuf> {
    let Some(name) = pattern.file_name().and_then(|n| n.to_str()) else {
        return vec![pattern.to_path_buf()];
    };
    if !name.contains('*') {
        return vec![pattern.to_path_buf()];
    }
    let dir = pattern
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    entries
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_str().is_some_and(|f| wildcard(name, f)))
        .map(|e| e.path())
        .collect()
}

/// `*` matches any run of characters; everything else matches itself.
fn wildcard(pattern: &str, text: &str) -> bool {
    let parts: Vec<&str> = pattern.split('*').collect();
    let (first, last) = (parts[0], parts[parts.len() - 1]);
    if !text.starts_with(first) || text.len() < first.len() + last.len() || !text.ends_with(last) {
        return false;
    }
    let mut rest = &text[first.len()..text.len() - last.len()];
    for mid in &parts[1..parts.len() - 1] {
        match rest.find(mid) {
            Some(i) => rest = &rest[i + mid.len()..],
            None => return false,
        }
    }
    true
}

fn replace_if_changed(cur: &mut TargetSet, next: TargetSet) -> bool {
    if **cur == *next {
        false
    } else {
        *cur = next;
        true
    }
}

fn reload(s: &mut FileState) -> Result<(), DiscoveryError> {
    let path = s.path.display().to_string();
    let modified = std::fs::metadata(&s.path).and_then(|m| m.modified()).ok();
    s.modified = modified;
    let text = std::fs::read_to_string(&s.path).map_err(|source| DiscoveryError::Read {
        path: path.clone(),
        source,
    })?;
    s.targets = parse_file_sd(&text, &path)?;
    Ok(())
}

/// Write targets as a `file_sd` JSON document (used by `meshgate simulate`).
pub fn render_file_sd(targets: &[Target]) -> String {
    let groups: Vec<serde_json::Value> = targets
        .iter()
        .filter_map(|t| {
            let u = reqwest::Url::parse(&t.url).ok()?;
            let mut labels = serde_json::Map::new();
            labels.insert("__scheme__".into(), u.scheme().into());
            labels.insert("__metrics_path__".into(), u.path().into());
            for (k, v) in &t.labels {
                labels.insert(k.clone(), v.clone().into());
            }
            let hostport = format!("{}:{}", u.host_str()?, u.port_or_known_default()?);
            Some(serde_json::json!({ "targets": [hostport], "labels": labels }))
        })
        .collect();
    serde_json::to_string_pretty(&groups).expect("json")
}

/// Read a file_sd file once (for `check-config`).
pub fn read_file_sd(path: &Path) -> Result<Vec<Target>, DiscoveryError> {
    let shown = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|source| DiscoveryError::Read {
        path: shown.clone(),
        source,
    })?;
    parse_file_sd(&text, &shown)
}

// === impl DiscoveryConfig ===

/// One `[[targets]]` entry.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct StaticTarget {
    /// Full URL of the metrics page.
    pub url: String,
    /// Target labels (`role`, `namespace`, `pod`, `revision`, `cluster`, any other).
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
}

/// `[discovery]`
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct DiscoveryConfig {
    /// Prometheus `file_sd` JSON files, re-read when they change.
    #[serde(default)]
    pub file_sd: Vec<PathBuf>,
    /// How often the files are checked for changes.
    #[serde(default = "default_refresh", with = "humantime_serde")]
    pub refresh: Duration,
    /// Kubernetes discovery (`[discovery.kubernetes]`), off when absent.
    #[serde(default)]
    pub kubernetes: Option<crate::discovery::kubernetes::KubernetesConfig>,
}

fn default_refresh() -> Duration {
    Duration::from_secs(5)
}

impl Default for DiscoveryConfig {
    fn default() -> Self {
        Self {
            file_sd: Vec::new(),
            refresh: default_refresh(),
            kubernetes: None,
        }
    }
}

impl From<meshgate_sim::SimTarget> for StaticTarget {
    fn from(t: meshgate_sim::SimTarget) -> Self {
        StaticTarget {
            url: t.url,
            labels: t.labels,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_sd_builds_urls_and_drops_meta_labels() {
        let t = parse_file_sd(
            r#"[{"targets": ["10.0.0.1:15020", "10.0.0.2:15020"],
                 "labels": {"__metrics_path__": "/stats/prometheus", "role": "proxy", "revision": "1-25-0"}},
                {"targets": ["istiod.istio-system:15014"], "labels": {"role": "istiod"}}]"#,
            "sd.json",
        )
        .unwrap();
        assert_eq!(t.len(), 3);
        assert_eq!(t[0].url, "http://10.0.0.1:15020/stats/prometheus");
        assert_eq!(t[0].label("revision"), Some("1-25-0"));
        assert!(!t[0].labels.contains_key("__metrics_path__"));
        assert_eq!(t[2].url, "http://istiod.istio-system:15014/metrics");
    }

    #[test]
    fn file_sd_errors_name_file_and_group() {
        let e = parse_file_sd(
            r#"[{"targets": ["a:1"]}, {"targets": ["b:2/x"]}]"#,
            "f.json",
        )
        .unwrap_err();
        assert_eq!(
            e.to_string(),
            r#"f.json: group 1: target "b:2/x" must be host:port"#
        );
        let e = parse_file_sd(r#"[{"targets": "a:1"}]"#, "f.json").unwrap_err();
        assert!(
            e.to_string().starts_with("f.json: invalid file_sd JSON"),
            "{e}"
        );
        let e = parse_file_sd(
            r#"[{"targets": ["a:1"], "labels": {"bad-label": "x"}}]"#,
            "f.json",
        )
        .unwrap_err();
        assert!(e.to_string().contains("bad-label"));
    }

    #[test]
    fn render_then_parse_round_trips() {
        let targets = vec![Target {
            url: "http://127.0.0.1:4000/stats/prometheus".into(),
            labels: [("role".to_string(), "proxy".to_string())].into(),
        }];
        assert_eq!(
            parse_file_sd(&render_file_sd(&targets), "x").unwrap(),
            targets
        );
    }

    #[test]
    fn wildcards_match_like_globs() {
        assert!(wildcard("*.json", "a.json"));
        assert!(wildcard("mesh-*-sd.json", "mesh-eu1-sd.json"));
        assert!(!wildcard("*.json", "a.yaml"));
        assert!(!wildcard("a*b*c", "acb"));
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("x.json"), "[]").unwrap();
        std::fs::write(dir.path().join("y.txt"), "").unwrap();
        assert_eq!(
            expand(&dir.path().join("*.json")),
            vec![dir.path().join("x.json")]
        );
    }

    #[tokio::test]
    async fn watched_file_is_reloaded_and_bad_rewrite_keeps_targets() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sd.json");
        std::fs::write(&path, r#"[{"targets": ["a:1"]}]"#).unwrap();
        let d = Discovery::new(
            &[],
            &DiscoveryConfig {
                file_sd: vec![path.clone()],
                refresh: Duration::from_millis(20),
                ..Default::default()
            },
        );
        let (tx, mut rx) = watch::channel(Arc::new(Vec::new()));
        let stop = CancellationToken::new();
        let task = tokio::spawn(d.run(tx, stop.clone()));
        rx.changed().await.unwrap();
        assert_eq!(rx.borrow_and_update().len(), 1);
        // mtime resolution can be coarse: make sure the next write is seen as a change.
        tokio::time::sleep(Duration::from_millis(30)).await;
        std::fs::write(&path, r#"[{"targets": ["a:1", "b:2"]}]"#).unwrap();
        let set_mtime_later = std::fs::File::options().write(true).open(&path).unwrap();
        set_mtime_later
            .set_modified(SystemTime::now() + Duration::from_secs(1))
            .unwrap();
        tokio::time::timeout(Duration::from_secs(5), rx.changed())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(rx.borrow_and_update().len(), 2);
        std::fs::write(&path, "[{not json").unwrap();
        set_mtime_later
            .set_modified(SystemTime::now() + Duration::from_secs(2))
            .unwrap();
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(
            !rx.has_changed().unwrap(),
            "a bad file must not change the target set"
        );
        assert_eq!(rx.borrow().len(), 2);
        stop.cancel();
        task.await.unwrap();
    }
}
