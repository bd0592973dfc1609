//! The judge: check definitions, the sequential tests, and the verdict of each analysis.
//!
//! Pure statistics and rules, no tokio: the daemon feeds per-tick deltas in and reads verdicts out.

mod analysis;
mod before_after;
mod check;
#[cfg(test)]
mod overdispersion;
#[cfg(test)]
mod testkit;

pub use meshgate_stats::{
    betabinom, dispersion, explain, mixture, params, rate, robust, spending, ParamsError,
    SequentialTest,
};

pub use analysis::{
    distribution_ln_e, log_sum_exp, Analysis, BucketEvidence, Certificate, CheckEvidence,
    CheckState, CheckStatus, CohortQuality, Counts, DataQuality, EvidenceKind, FixedHorizon,
    GoCertificate, PodGroup, QualityBlock, QualityThresholds, RobustEvidence, Settings, Sided,
    Stratum, StratumEvidence, StratumStatus, TestEvidence, TickInput, Verdict, MAX_STRATA_SHOWN,
};
pub use before_after::{BeforeAfterCheck, BeforeAfterTest, Design, MovedStratum};
pub use check::{
    admitted_roles, Catalog, CheckInfo, CheckKind, CheckSpec, Component, DispersionMode,
    RECENT_WINDOW,
};
