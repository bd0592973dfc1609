//! One problem in a configuration or a check file, with the key it concerns.

use std::fmt;

use serde::Serialize;

/// One problem in a configuration, with the key it concerns.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ConfigProblem {
    /// Dotted key path, e.g. `scrape.interval` or `targets[2].url`.
    pub key: String,
    /// What is wrong, lowercase.
    pub message: String,
    /// Where the value came from when it is not the file: the environment variable that set it
    /// (e.g. `MESHGATE_JUDGE__TICK`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
}

impl ConfigProblem {
    /// A problem at `key`.
    pub fn new(key: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            key: key.into(),
            message: message.into(),
            source: None,
        }
    }
}

impl fmt::Display for ConfigProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.key, self.message)?;
        match &self.source {
            Some(var) => write!(f, " (set by the environment variable {var})"),
            None => Ok(()),
        }
    }
}
