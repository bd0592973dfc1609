//! A scrape target: an URL plus labels.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Something to scrape: an URL plus labels.
#[derive(
    Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, utoipa::ToSchema,
)]
pub struct Target {
    /// Full URL of the metrics page; also the target's identity.
    pub url: String,
    /// Labels: `role` (istiod | proxy | gateway), `namespace`, `pod`, `revision`, `cluster`, others.
    pub labels: BTreeMap<String, String>,
}

impl Target {
    /// A label's value.
    pub fn label(&self, name: &str) -> Option<&str> {
        self.labels.get(name).map(String::as_str)
    }
}
