//! meshgate's pure core: what is compared with what, and the verdict.
//!
//! No tokio, no network, no file system: the daemon feeds pages and per-tick inputs in and reads
//! verdicts out, so everything here is tested and benchmarked as plain functions.
//!
//! # Layout
//!
//! [`target`] a scrape target; [`problem`] a configuration problem with its key; [`cohort`]
//! selectors, routing of series to analyses, reset-aware deltas; [`judge`] check specs, the
//! analysis and its verdict rules (the statistics come from `meshgate-stats`); [`history`] the
//! bounded per-tick history of an analysis (what the report page draws); [`istio`] the Istio
//! rules: revisions observed on pages, version skew, rollback triggers; [`api`] the documents the
//! HTTP API answers (Serialize + Deserialize), shared by the server and its clients.

pub mod api;
pub mod cohort;
pub mod history;
pub mod istio;
pub mod judge;
pub mod problem;
pub mod target;

pub use problem::ConfigProblem;
pub use target::Target;
