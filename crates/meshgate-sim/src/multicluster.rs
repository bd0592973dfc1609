//! Two simulated clusters in a primary-remote topology: the primary runs the istiods of both
//! revisions (when installed) and its own sidecars; the remote runs only sidecars, served by the
//! primary's control plane (Istio's "primary-remote" model). Every target carries its `cluster`.

use std::io;
use std::net::IpAddr;

use tokio_util::sync::CancellationToken;

use super::{Cohort, SimConfig, SimMesh, SimTarget};
use meshgate_core::istio::Topology;

/// The order the upgrade was done in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UpgradeOrder {
    /// The primary's canary istiod is installed, then sidecars move in both clusters.
    PrimaryFirst,
    /// The remote's sidecars already run the canary revision, but the primary's canary istiod
    /// is not installed yet (the primary must be upgraded first).
    RemoteFirst,
}

/// Configuration of the two clusters.
#[derive(Clone, Debug)]
pub struct MultiClusterConfig {
    /// The primary cluster's mesh (istiods and sidecars); its `cluster` is the primary's name.
    pub primary: SimConfig,
    /// The remote cluster's mesh (sidecars only); its `cluster` is the remote's name.
    pub remote: SimConfig,
}

impl MultiClusterConfig {
    /// Two clusters `primary` and `remote` from one per-cluster template (pods per revision,
    /// traffic); seeds differ per cluster. Each istiod of the primary serves its revision's
    /// proxies in both clusters.
    pub fn new(template: &SimConfig, order: UpgradeOrder) -> MultiClusterConfig {
        let mut primary = template.clone();
        primary.cluster = "primary".into();
        let mut remote = template.clone();
        remote.cluster = "remote".into();
        remote.seed = template.seed.wrapping_add(0x5EED);
        remote.baseline.istiod = false;
        remote.canary.istiod = false;
        for (p, r) in [
            (&mut primary.baseline, &remote.baseline),
            (&mut primary.canary, &remote.canary),
        ] {
            p.connected_proxies = Some(
                p.connected_proxies.unwrap_or(p.pods as u64)
                    + r.connected_proxies.unwrap_or(r.pods as u64),
            );
        }
        if order == UpgradeOrder::RemoteFirst {
            // Nothing of the new revision in the primary yet: no istiod, no sidecars.
            primary.canary.istiod = false;
            primary.canary.pods = 0;
            primary.canary.connected_proxies = Some(0);
        }
        MultiClusterConfig { primary, remote }
    }

    /// The topology to configure meshgate with: `remote` served by `primary`.
    pub fn topology(&self) -> Topology {
        Topology {
            remotes: [(self.remote.cluster.clone(), self.primary.cluster.clone())].into(),
        }
    }
}

/// The two running clusters.
pub struct SimMultiCluster {
    /// The primary's mesh.
    pub primary: SimMesh,
    /// The remote's mesh.
    pub remote: SimMesh,
    topology: Topology,
}

impl SimMultiCluster {
    /// Start both clusters' endpoints on `bind`.
    pub async fn start(
        cfg: MultiClusterConfig,
        bind: IpAddr,
        shutdown: CancellationToken,
    ) -> io::Result<SimMultiCluster> {
        let topology = cfg.topology();
        let primary = SimMesh::start(cfg.primary, bind, shutdown.clone()).await?;
        let remote = SimMesh::start(cfg.remote, bind, shutdown).await?;
        Ok(SimMultiCluster {
            primary,
            remote,
            topology,
        })
    }

    /// Every target of both clusters (each labelled with its `cluster`).
    pub fn targets(&self) -> Vec<SimTarget> {
        let mut v = self.primary.targets();
        v.extend(self.remote.targets());
        v
    }

    /// The topology (remote -> primary).
    pub fn topology(&self) -> &Topology {
        &self.topology
    }

    /// Apply a sidecar fault to one cohort in both clusters.
    pub fn set_fault(&self, cohort: Cohort, fault: super::Fault) {
        self.primary.set_fault(cohort, fault);
        self.remote.set_fault(cohort, fault);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    fn template() -> SimConfig {
        let mut s = SimConfig::default();
        s.baseline.pods = 2;
        s.canary.pods = 2;
        s
    }

    fn count(ts: &[SimTarget], cluster: &str, role: &str, rev: &str) -> usize {
        ts.iter()
            .filter(|t| {
                t.labels["cluster"] == cluster
                    && t.labels["role"] == role
                    && t.labels["revision"] == rev
            })
            .count()
    }

    #[tokio::test]
    async fn primary_serves_the_remote_and_the_order_decides_what_runs() {
        let stop = CancellationToken::new();
        let lo = IpAddr::V4(Ipv4Addr::LOCALHOST);
        let mc = SimMultiCluster::start(
            MultiClusterConfig::new(&template(), UpgradeOrder::PrimaryFirst),
            lo,
            stop.clone(),
        )
        .await
        .unwrap();
        let ts = mc.targets();
        for rev in ["1-24-2", "1-25-0"] {
            assert_eq!(count(&ts, "primary", "istiod", rev), 1);
            assert_eq!(count(&ts, "remote", "istiod", rev), 0);
            assert_eq!(count(&ts, "primary", "proxy", rev), 2);
            assert_eq!(count(&ts, "remote", "proxy", rev), 2);
        }
        let names: std::collections::HashSet<&str> =
            ts.iter().map(|t| t.labels["pod"].as_str()).collect();
        assert_eq!(names.len(), ts.len(), "pod names unique across clusters");
        assert_eq!(mc.topology().control_plane_of("remote"), "primary");
        // The primary's canary istiod counts the proxies of both clusters.
        let i = mc
            .primary
            .targets()
            .iter()
            .position(|t| t.labels["role"] == "istiod" && t.labels["revision"] == "1-25-0")
            .unwrap();
        let page = String::from_utf8(mc.primary.render(i).unwrap()).unwrap();
        assert!(
            page.contains("pilot_xds{version=\"1.25.0\"} 4\n"),
            "{}",
            &page[..200]
        );
        // A remote sidecar's page names its cluster.
        let r = String::from_utf8(mc.remote.render(0).unwrap()).unwrap();
        assert!(r.contains("destination_cluster=\"remote\""));

        let bad = SimMultiCluster::start(
            MultiClusterConfig::new(&template(), UpgradeOrder::RemoteFirst),
            lo,
            stop.clone(),
        )
        .await
        .unwrap();
        let ts = bad.targets();
        assert_eq!(count(&ts, "primary", "istiod", "1-25-0"), 0);
        assert_eq!(count(&ts, "primary", "proxy", "1-25-0"), 0);
        assert_eq!(count(&ts, "primary", "istiod", "1-24-2"), 1);
        assert_eq!(count(&ts, "remote", "proxy", "1-25-0"), 2);
        stop.cancel();
    }
}
