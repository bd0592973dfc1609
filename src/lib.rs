//! meshgate decides whether an Istio revision upgrade may go on.
//!
//! It scrapes istiod and sidecar metrics, splits them into a baseline and a canary cohort, runs
//! anytime-valid sequential tests on every scrape and answers GO / NO-GO / PENDING / INCONCLUSIVE
//! with the evidence behind the answer.
//!
//! # Layout
//!
//! - [`config`]: the TOML configuration with environment overrides, validated all at once; each
//!   section's type lives with its component (`scrape::ScrapeConfig`, `alert::AlertsConfig`, ...).
//! - [`analysis`]: the definition of an analysis (`[[analyses]]`, `POST /v1/analyses`).
//! - [`discovery`]: static and `file_sd` targets, published on a watch channel.
//! - [`scrape`]: per-target scrape loops, health, and the ingest of each page.
//! - [`parse`]: the zero-copy Prometheus / OpenMetrics text parser (pure).
//! - [`cohort`]: label selectors, routing of series to analyses, reset-aware deltas (pure).
//! - [`judge`]: checks from `queries/`, the e-processes, and verdict rules (pure).
//! - [`promsource`]: a Prometheus-compatible backend as the data source (exact per-series counts).
//! - [`daemon`]: the engine task that owns the analyses, the wiring of all tasks, and
//!   [`daemon::run`], the one entry of `meshgate serve`.
//! - [`state`]: what the engine publishes and the API reads (views, snapshot, events, handles).
//! - [`api`]: the HTTP API (axum).
//! - `report`: the report page for people: HTML with inline SVG curves of each analysis' history.
//! - `server`: the API's connections: TLS handshakes, HTTP/1.1, timeouts and connection caps.
//! - [`integrations`]: Argo Rollouts, Kayenta-compatible, Flagger and query routes, OpenAPI.
//! - [`alert`]: Alertmanager and webhook sinks for NO-GO and INCONCLUSIVE verdicts.
//! - [`gate`]: the `meshgate gate` client for upgrade scripts.
//! - [`client`]: what the CLI clients share: an API answer read as its `meshgate_core::api` document.
//! - [`auth`]: bearer tokens and scopes for the API.
//! - [`store`]: the embedded store that lets analyses survive restarts.
//! - [`telemetry`]: meshgate's own metrics.
//! - [`logging`]: log output on stderr, text or JSON lines.
//! - [`heap`]: heap accounting behind the memory metrics (the binary's counting allocator).
//! - [`tls`]: the API over TLS (rustls, certificate reload) and outbound TLS settings.
//! - [`istio`]: revisions, version skew, rollback triggers, multi-cluster topology, their routes.
//! - [`plan`]: the upgrade plan (waves of namespaces) and its status.
//! - [`upgrade`]: the autopilot (`meshgate upgrade`) that executes the plan through the Kubernetes API.
//! - [`sim`]: the simulated Istio mesh used by the demo, the tests and benchmarks.
//! - [`demo`]: the built-in demo: a simulated mesh and a real analysis against it.

pub mod alert;
pub mod analysis;
pub mod api;
pub mod auth;
pub mod client;
pub mod config;
pub mod daemon;
pub mod demo;
pub mod discovery;
pub mod fdlimit;
#[doc(hidden)]
pub mod fuzzing;
pub mod gate;
pub mod heap;
mod html;
pub mod integrations;
pub mod istio;
pub mod logging;
pub mod plan;
pub mod promsource;
mod report;
pub mod scrape;
pub mod secret;
mod server;
pub mod state;
pub mod store;
pub mod telemetry;
pub mod tls;
pub mod upgrade;

// The pure stages and the simulator live in crates of their own (a DAG: expo, stats <- core <-
// sim <- this crate <- bench); their modules are re-exported under the names they had here.
pub use meshgate_core::{cohort, judge};
pub use meshgate_expo as parse;
pub use meshgate_sim as sim;
