//! Istio upgrade intelligence: what meshgate knows about revisions beyond two sets of numbers.
//!
//! The rules ([`observe`], [`skew`], [`trigger`]) live in `meshgate-core`; this module adds the
//! plan and the routes.
//!
//! - [`observe`]: the gauges of each scraped page that say which versions run where
//!   (`istio_build`, istiod's `pilot_xds{version}`) and what istiod costs (CPU, memory).
//! - [`skew`]: the version skew guard, per cluster, with the primary-remote topology.
//! - [`trigger`]: rollback triggers decided before the upgrade, evaluated on every tick.
//! - [`plan`]: the upgrade plan (waves of namespaces) and its status (the top-level `plan`
//!   module, below the engine's state, re-exported here).
//! - [`api`]: their HTTP routes.

pub mod api;

pub use crate::plan;

pub use meshgate_core::istio::{observe, skew, trigger};
pub use meshgate_core::istio::{Observer, SkewReport, TargetObservation, Topology, Version};
