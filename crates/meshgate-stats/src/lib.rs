//! Anytime-valid sequential tests for canary verdicts (pure: data in, numbers out).
//!
//! # Layout
//!
//! [`betabinom`] closed-form Beta-binomial e-values and special functions; [`mixture`] the
//! grid-mixture e-process on the rate ratio (NO-GO test, GO certificate, confidence bounds);
//! [`rate`] the absolute-rate bound; [`robust`] the distribution-free betting e-process;
//! [`spending`] the horizon-aware GO certificate (alpha spent over the analysis' clock);
//! [`explain`] fixed-horizon statistics shown beside the e-values; [`dispersion`] the
//! overdispersion factor measured across pods; [`params`] the parameter ranges and
//! [`ParamsError`]; [`SequentialTest`] the trait the two e-processes share.

pub mod betabinom;
pub mod dispersion;
pub mod explain;
pub mod mixture;
pub mod params;
pub mod rate;
pub mod robust;
mod sequential;
pub mod spending;

pub use params::ParamsError;
pub use sequential::SequentialTest;
