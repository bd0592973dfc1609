//! The version skew guard: which proxy versions connect to which istiod revision, per cluster, and
//! whether that is within Istio's supported skew.
//!
//! Rules (NO-GO, each explained): a proxy newer than the istiod of its revision (data plane ahead
//! of its control plane); a proxy more than one minor version behind it; a version that cannot be
//! parsed; and, with a primary-remote topology, proxies of a remote cluster on a revision that no
//! istiod of its primary serves yet (the primary must be upgraded first). Proxies are matched to
//! istiod by their `revision` target label (`default` when absent) in the cluster that serves their
//! cluster's control plane. istiod's own `pilot_xds{version}` is checked too, so proxies that are
//! not scraped still count; Istio before 1.7 exports `pilot_xds` without a version (noted, not
//! judged).

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

use super::observe::TargetObservation;
use crate::judge::Verdict;

/// An Istio version: major.minor.patch with an optional suffix (`1.25.0-beta.1`, `1.11.4`).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, utoipa::ToSchema)]
pub struct Version {
    /// Major.
    pub major: u32,
    /// Minor.
    pub minor: u32,
    /// Patch (0 when the tag has only major.minor).
    pub patch: u32,
}

impl Version {
    /// Parse a tag such as `1.25.0`, `1.25.0-beta.1`, `1.25-dev`, `v1.24.2`, `1.5.0-distroless`.
    pub fn parse(tag: &str) -> Result<Version, String> {
        let t = tag.trim().trim_start_matches('v');
        let core = t.split(['-', '+', '_']).next().unwrap_or("");
        let parts: Vec<&str> = core.split('.').collect();
        let num = |i: usize| -> Result<u32, String> {
            parts
                .get(i)
                .ok_or_else(|| format!("{tag:?} has no {} number", ["major", "minor"][i.min(1)]))?
                .parse::<u32>()
                .map_err(|_| format!("{tag:?} is not an Istio version (expected MAJOR.MINOR[.PATCH], e.g. 1.25.0)"))
        };
        if !(2..=3).contains(&parts.len()) {
            return Err(format!(
                "{tag:?} is not an Istio version (expected MAJOR.MINOR[.PATCH], e.g. 1.25.0)"
            ));
        }
        Ok(Version {
            major: num(0)?,
            minor: num(1)?,
            patch: if parts.len() == 3 { num(2)? } else { 0 },
        })
    }
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}.{}", self.major, self.minor, self.patch)
    }
}

/// Whether a proxy version may talk to an istiod version; `Err` explains why not.
pub fn supported(proxy: &Version, istiod: &Version) -> Result<(), String> {
    if proxy.major != istiod.major {
        return Err(format!(
            "proxy {proxy} and istiod {istiod} differ in major version"
        ));
    }
    if proxy.minor > istiod.minor {
        return Err(format!(
            "data plane ahead of its control plane: proxy {proxy} is newer than istiod {istiod} (proxies may not be newer than istiod)"
        ));
    }
    if istiod.minor - proxy.minor > 1 {
        return Err(format!(
            "proxy {proxy} is {} minor versions behind istiod {istiod}; Istio supports one",
            istiod.minor - proxy.minor
        ));
    }
    Ok(())
}

/// Multi-cluster topology: which clusters are remotes and which primary runs their control plane.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Topology {
    /// Remote cluster name -> the primary cluster whose istiod serves it.
    #[serde(default)]
    pub remotes: BTreeMap<String, String>,
}

impl Topology {
    /// The cluster whose istiods serve `cluster`.
    pub fn control_plane_of<'a>(&'a self, cluster: &'a str) -> &'a str {
        self.remotes
            .get(cluster)
            .map(String::as_str)
            .unwrap_or(cluster)
    }

    /// Problems with the topology itself.
    pub fn problems(&self) -> Vec<String> {
        let mut out = Vec::new();
        for (r, p) in &self.remotes {
            if r == p {
                out.push(format!(
                    "topology.remotes.{r}: a cluster cannot be its own primary"
                ));
            } else if self.remotes.contains_key(p) {
                out.push(format!(
                    "topology.remotes.{r}: primary {p:?} is itself a remote; remotes must name a primary"
                ));
            }
        }
        out
    }
}

/// One skew finding.
#[derive(Clone, Debug, Serialize, PartialEq, Deserialize, utoipa::ToSchema)]
pub struct SkewProblem {
    /// Cluster of the proxies (or of the istiod).
    pub cluster: String,
    /// Revision concerned.
    pub revision: String,
    /// Whether it makes the verdict NO-GO.
    pub blocking: bool,
    /// Whether it holds GO (PENDING, INCONCLUSIVE at `max_duration`) for the analyses whose
    /// cohorts it concerns: the guard cannot judge a revision the proxies use because no istiod
    /// of it is observed. `[judge] allow_go_without_istiod_skew_check` lifts the hold.
    #[serde(default)]
    pub holds_go: bool,
    /// Explanation.
    pub message: String,
    /// Targets concerned (proxies, or the istiod).
    pub targets: Vec<String>,
}

/// One istiod as observed.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct IstiodView {
    /// Target URL.
    pub url: String,
    /// Pod label.
    pub pod: Option<String>,
    /// Its version (`istio_build{component="pilot"}`, else the target's `version` label).
    pub version: Option<String>,
    /// `pilot_xds` per proxy version (`unlabelled` for Istio < 1.7).
    pub connected: BTreeMap<String, f64>,
}

/// One revision in one cluster.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct RevisionView {
    /// Revision (`istio.io/rev`).
    pub revision: String,
    /// The cluster whose istiod serves it.
    pub control_plane_cluster: String,
    /// The istiods of the revision there.
    pub istiods: Vec<IstiodView>,
    /// Scraped proxies of the revision in this cluster, per proxy version.
    pub proxies: BTreeMap<String, usize>,
}

/// The skew report (`GET /v1/skew`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct SkewReport {
    /// `GO` (every pairing supported), `NO-GO` (see problems) or `PENDING` (nothing to judge yet).
    pub verdict: Verdict,
    /// Summary.
    pub reason: String,
    /// Per cluster, per revision.
    pub clusters: BTreeMap<String, Vec<RevisionView>>,
    /// Findings.
    pub problems: Vec<SkewProblem>,
}

fn cluster_of(o: &TargetObservation) -> String {
    o.label("cluster").unwrap_or("default").to_owned()
}

fn revision_of(o: &TargetObservation) -> String {
    o.label("revision").unwrap_or("default").to_owned()
}

fn is_istiod(o: &TargetObservation) -> bool {
    o.label("role") == Some("istiod") || o.build("pilot").is_some()
}

fn istiod_version(o: &TargetObservation) -> Option<&str> {
    o.build("pilot").or_else(|| o.label("version"))
}

/// Judge the observations of every target.
pub fn report(obs: &[TargetObservation], topo: &Topology) -> SkewReport {
    report_known(obs, topo, None)
}

/// Judge the observations, knowing which istiods discovery lists as (cluster, revision): an
/// istiod that is discovered but not scraped yet keeps the report PENDING rather than NO-GO.
pub fn report_known(
    obs: &[TargetObservation],
    topo: &Topology,
    discovered_istiods: Option<&[(String, String)]>,
) -> SkewReport {
    let mut problems: Vec<SkewProblem> = Vec::new();
    let istiods: Vec<&TargetObservation> = obs.iter().filter(|o| is_istiod(o)).collect();
    let proxies: Vec<&TargetObservation> = obs
        .iter()
        .filter(|o| !is_istiod(o) && o.build("proxy").is_some())
        .collect();
    let unknown: Vec<String> = obs
        .iter()
        .filter(|o| o.label("role") == Some("proxy") && o.build("proxy").is_none())
        .map(|o| o.url.clone())
        .collect();
    if !unknown.is_empty() {
        problems.push(SkewProblem {
            cluster: String::new(),
            revision: String::new(),
            blocking: false,
            holds_go: false,
            message: format!(
                "{} proxy targets have no istio_build{{component=\"proxy\"}} on their page: their version is unknown",
                unknown.len()
            ),
            targets: unknown,
        });
    }
    let mut clusters: BTreeMap<String, BTreeMap<String, RevisionView>> = BTreeMap::new();
    let view = |clusters: &mut BTreeMap<String, BTreeMap<String, RevisionView>>,
                cluster: &str,
                rev: &str| {
        let cp = topo.control_plane_of(cluster).to_owned();
        clusters
            .entry(cluster.to_owned())
            .or_default()
            .entry(rev.to_owned())
            .or_insert_with(|| RevisionView {
                revision: rev.to_owned(),
                istiods: istiods
                    .iter()
                    .filter(|i| cluster_of(i) == cp && revision_of(i) == rev)
                    .map(|i| IstiodView {
                        url: i.url.clone(),
                        pod: i.label("pod").map(str::to_owned),
                        version: istiod_version(i).map(str::to_owned),
                        connected: i
                            .xds
                            .iter()
                            .map(|(v, n)| (v.clone().unwrap_or_else(|| "unlabelled".into()), *n))
                            .collect(),
                    })
                    .collect(),
                control_plane_cluster: cp,
                proxies: BTreeMap::new(),
            });
    };
    // istiod itself: its version, and the versions its pilot_xds says are connected.
    for i in &istiods {
        let (cluster, rev) = (cluster_of(i), revision_of(i));
        view(&mut clusters, &cluster, &rev);
        let Some(tag) = istiod_version(i) else {
            problems.push(SkewProblem {
                cluster,
                revision: rev,
                blocking: false,
                holds_go: false,
                message: format!("istiod {} has no istio_build{{component=\"pilot\"}} and no version label: its version is unknown", i.url),
                targets: vec![i.url.clone()],
            });
            continue;
        };
        let iv = match Version::parse(tag) {
            Ok(v) => v,
            Err(e) => {
                problems.push(SkewProblem {
                    cluster,
                    revision: rev,
                    blocking: true,
                    holds_go: false,
                    message: format!("istiod {}: cannot parse its version: {e}", i.url),
                    targets: vec![i.url.clone()],
                });
                continue;
            }
        };
        for (v, n) in &i.xds {
            let Some(v) = v else {
                continue; // Istio < 1.7: pilot_xds has no version label; proxies judged from their own istio_build.
            };
            if *n <= 0.0 {
                continue;
            }
            let msg = match Version::parse(v) {
                Ok(pv) => supported(&pv, &iv).err(),
                Err(e) => Some(format!("cannot parse a connected proxy version: {e}")),
            };
            if let Some(m) = msg {
                problems.push(SkewProblem {
                    cluster: cluster.clone(),
                    revision: rev.clone(),
                    blocking: true,
                    holds_go: false,
                    message: format!(
                        "istiod {} of revision {rev} reports {n} connected proxies of version {v} (pilot_xds): {m}",
                        i.pod_or_url()
                    ),
                    targets: vec![i.url.clone()],
                });
            }
        }
    }
    // Proxies: grouped by (cluster, revision, version).
    let mut groups: BTreeMap<(String, String, String), Vec<&TargetObservation>> = BTreeMap::new();
    for p in &proxies {
        let tag = p.build("proxy").unwrap_or_default().to_owned();
        groups
            .entry((cluster_of(p), revision_of(p), tag))
            .or_default()
            .push(p);
    }
    for ((cluster, rev, tag), members) in groups {
        view(&mut clusters, &cluster, &rev);
        let rv = clusters
            .get_mut(&cluster)
            .and_then(|m| m.get_mut(&rev))
            .expect("just inserted");
        *rv.proxies.entry(tag.clone()).or_default() += members.len();
        let targets: Vec<String> = members.iter().map(|m| m.url.clone()).collect();
        let cp = rv.control_plane_cluster.clone();
        let mut push_held = |blocking: bool, holds_go: bool, message: String| {
            problems.push(SkewProblem {
                cluster: cluster.clone(),
                revision: rev.clone(),
                blocking,
                holds_go,
                message,
                targets: targets.clone(),
            })
        };
        let mut push = |blocking: bool, message: String| push_held(blocking, false, message);
        let pv = match Version::parse(&tag) {
            Ok(v) => v,
            Err(e) => {
                push(
                    true,
                    format!(
                        "{} proxies of revision {rev} in cluster {cluster}: cannot parse istio_build{{component=\"proxy\"}}: {e}",
                        members.len()
                    ),
                );
                continue;
            }
        };
        if rv.istiods.is_empty() {
            let cp_has_istiod = istiods.iter().any(|i| cluster_of(i) == cp);
            let discovered =
                discovered_istiods.is_some_and(|d| d.iter().any(|(c, r)| *c == cp && *r == rev));
            if discovered {
                push_held(
                    false,
                    true,
                    format!("the istiod of revision {rev} in cluster {cp} is discovered but not scraped yet: the proxies of revision {rev} ({pv}) cannot be judged"),
                );
            } else if cp != cluster {
                push(
                    true,
                    format!(
                        "{} proxies of revision {rev} ({pv}) in remote cluster {cluster}, but its primary {cp} runs no istiod of revision {rev}: upgrade the primary first",
                        members.len()
                    ),
                );
            } else if cp_has_istiod {
                push(
                    true,
                    format!(
                        "{} proxies of revision {rev} ({pv}) in cluster {cluster}, but no istiod of revision {rev} runs there",
                        members.len()
                    ),
                );
            } else {
                push_held(
                    false,
                    true,
                    format!("no istiod observed in cluster {cp}: cannot judge the {} proxies of revision {rev} ({pv}) against their control plane", members.len()),
                );
            }
            continue;
        }
        for i in &rv.istiods {
            let Some(iv) = i.version.as_deref().and_then(|v| Version::parse(v).ok()) else {
                continue; // reported above
            };
            if let Err(m) = supported(&pv, &iv) {
                push(
                    true,
                    format!(
                        "{} proxies of revision {rev} in cluster {cluster} connect to istiod {} in {cp}: {m}",
                        members.len(),
                        i.pod.as_deref().unwrap_or(&i.url)
                    ),
                );
            }
        }
    }
    let clusters: BTreeMap<String, Vec<RevisionView>> = clusters
        .into_iter()
        .map(|(k, v)| (k, v.into_values().collect()))
        .collect();
    let blocking: Vec<&SkewProblem> = problems.iter().filter(|p| p.blocking).collect();
    let (verdict, reason) = if !blocking.is_empty() {
        (
            Verdict::NoGo,
            format!(
                "version skew: {}",
                blocking
                    .iter()
                    .map(|p| p.message.as_str())
                    .collect::<Vec<_>>()
                    .join("; ")
            ),
        )
    } else if proxies.is_empty() || istiods.is_empty() || !problems.is_empty() {
        (
            Verdict::Pending,
            if problems.is_empty() {
                format!(
                    "nothing to judge yet: {} proxies and {} istiods report their build",
                    proxies.len(),
                    istiods.len()
                )
            } else {
                problems
                    .iter()
                    .map(|p| p.message.as_str())
                    .collect::<Vec<_>>()
                    .join("; ")
            },
        )
    } else {
        (
            Verdict::Go,
            format!(
                "{} proxies and {} istiods in {} clusters, every pairing within Istio's supported skew",
                proxies.len(),
                istiods.len(),
                clusters.len()
            ),
        )
    };
    SkewReport {
        verdict,
        reason,
        clusters,
        problems,
    }
}

trait PodOrUrl {
    fn pod_or_url(&self) -> &str;
}

impl PodOrUrl for TargetObservation {
    fn pod_or_url(&self) -> &str {
        self.label("pod").unwrap_or(&self.url)
    }
}
