//! The Kubernetes API-server double the autopilot's tests run against: the one the demo ships
//! (`meshgate::sim::kubeapi`, crates/meshgate-sim/src/kubeapi.rs, with its own contract test),
//! re-exported so the tests and `meshgate demo --scenario upgrade` share one implementation.

pub use meshgate::sim::kubeapi::*;
