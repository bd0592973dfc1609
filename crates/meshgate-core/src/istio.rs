//! Istio rules: revisions and versions observed on pages, version skew, rollback triggers.

pub mod observe;
pub mod skew;
pub mod trigger;

pub use observe::{Observer, TargetObservation};
pub use skew::{SkewReport, Topology, Version};
