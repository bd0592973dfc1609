//! The integration tests of the `meshgate` crate, in one binary (one link of the whole crate).

mod support;

mod alerts;
mod api;
mod argo;
mod auth;
mod deploy;
mod e2e;
mod edges;
mod faults;
mod fdlimit;
mod fuzz_regressions;
mod gate;
mod handlers;
mod identity;
mod istio_e2e;
mod istio_multicluster;
mod istio_rollback;
mod istio_skew;
mod kayenta_scopes;
mod kube_discovery;
mod limits;
mod logs;
mod openapi;
mod parse_captures;
mod peers;
mod prometheus;
mod quality;
mod reference_betabinom;
mod reference_distribution;
mod reference_explain;
mod reference_robust;
mod restart;
mod scrape;
mod store_faults;
mod tls;
