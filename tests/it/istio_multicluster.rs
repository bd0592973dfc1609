//! The multi-cluster demo end to end over real sockets: primary + remote simulated clusters, the
//! daemon with their topology, one analysis per cluster and one over both.

use meshgate::demo::{DemoOptions, Scenario};

/// The remote's sidecars run the new revision before the primary runs its istiod: every
/// analysis that sees them ends NO-GO and the overall reason names the upgrade-order rule (the
/// demo checks both and returns whether they held).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn remote_before_primary_is_no_go_naming_the_upgrade_order() {
    let ok = meshgate::demo::run(DemoOptions {
        scenario: Scenario::Multicluster,
        seed: 21,
        json: false,
        keep: false,
    })
    .await
    .unwrap();
    assert!(ok, "see the demo output above");
    assert_eq!(Scenario::Multicluster.expected(), "NO-GO");
    assert_eq!(Scenario::MulticlusterHealthy.expected(), "GO");
}

/// Upgraded in order (the primary's new istiod first, then sidecars in both clusters): GO for
/// each cluster's analysis and for the one over both.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn primary_first_is_go_per_cluster_and_overall() {
    let ok = meshgate::demo::run(DemoOptions {
        scenario: Scenario::MulticlusterHealthy,
        seed: 22,
        json: false,
        keep: false,
    })
    .await
    .unwrap();
    assert!(ok, "see the demo output above");
}
