//! The embedded store (redb): analyses with their evidence, and the last counter value of every
//! series per target, written in one transaction per tick so a restart resumes where it was.
//!
//! Records are CBOR (self-describing like JSON, but keeps the infinities an e-process holds).
//! The evidence and the series values are written together: every delta already folded into the
//! stored evidence came from a page whose values are the stored ones, so after a crash the next
//! page gives exactly the deltas not yet counted (or a reset), never one twice.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use redb::{Database, ReadableTable, TableDefinition};
use serde::{Deserialize, Serialize};

use crate::cohort::SeriesSnapshot;
use crate::config::AnalysisConfig;
use crate::judge::Analysis;

/// Exit code when the store cannot be used (sysexits EX_DATAERR).
pub const EXIT_BAD_STORE: u8 = 65;

/// Layout version this build writes and reads.
pub const SCHEMA_VERSION: u64 = 1;

const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
const ANALYSES: TableDefinition<&str, &[u8]> = TableDefinition::new("analyses");
const TARGETS: TableDefinition<&str, &[u8]> = TableDefinition::new("targets");
/// The upgrade plan's namespace labels recorded before each namespace moved (one row).
const PLAN: TableDefinition<&str, &[u8]> = TableDefinition::new("plan");

/// Why the store cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The file could not be opened or is not a redb database.
    #[error("cannot open the store {path}: {message}")]
    Open {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        message: String,
    },
    /// Written by a newer meshgate.
    #[error("the store {path} has layout version {found}, this meshgate reads up to {supported}; use a newer meshgate or another path")]
    NewerVersion {
        /// The file.
        path: PathBuf,
        /// Version in the file.
        found: u64,
        /// Version this build knows.
        supported: u64,
    },
    /// A record does not decode.
    #[error("the store {path} is corrupt: {what}")]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// Which record and why.
        what: String,
    },
    /// A read or write failed.
    #[error("store {path}: {message}")]
    Io {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        message: String,
    },
}

/// One analysis as stored: enough to resume it.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct StoredAnalysis {
    /// The request it was created from.
    pub spec: AnalysisConfig,
    /// Unix time of creation.
    pub created_at: f64,
    /// State, e-process statistics, verdict, evidence, elapsed time.
    pub state: Analysis,
    /// Deltas taken since the last tick, not yet in `state` (per check, per cohort, per slot).
    pub pending: Vec<[Vec<f64>; 2]>,
    /// Targets that contributed to each cohort.
    pub members: [Vec<String>; 2],
    /// Counter resets per cohort.
    pub resets: [u64; 2],
    /// Series left out for matching both cohorts.
    pub overlaps: u64,
}

/// Everything read back at start.
#[derive(Debug, Default)]
pub struct Loaded {
    /// Analyses by id order.
    pub analyses: Vec<StoredAnalysis>,
    /// Series values per target URL.
    pub targets: HashMap<String, SeriesSnapshot>,
    /// The upgrade plan's recorded namespace labels, if any were stored.
    pub plan_labels: Option<crate::istio::plan::RecordedLabels>,
}

/// What one write cost.
#[derive(Clone, Copy, Debug, Default)]
pub struct WriteStats {
    /// Bytes of records written.
    pub bytes: usize,
    /// Series written.
    pub series: usize,
    /// Wall time of encode + commit (fsync included).
    pub seconds: f64,
}

/// An open store.
pub struct Store {
    db: Database,
    path: PathBuf,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store").field("path", &self.path).finish()
    }
}

fn encode<T: Serialize>(v: &T) -> Vec<u8> {
    let mut out = Vec::new();
    ciborium::into_writer(v, &mut out).expect("cbor encoding into a Vec cannot fail");
    out
}

// === impl Store ===

impl Store {
    /// Open (or create) the store at `path` and read everything in it.
    pub fn open(path: &Path) -> Result<(Store, Loaded), StoreError> {
        let path = path.to_path_buf();
        let open_err = |m: String| StoreError::Open {
            path: path.clone(),
            message: m,
        };
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| open_err(e.to_string()))?;
        }
        // redb may panic on some malformed files in older versions; keep a panic from taking the
        // process down without a message.
        let db = std::panic::catch_unwind(|| Database::create(&path))
            .map_err(|_| open_err("not a meshgate store (the file is damaged)".into()))?
            .map_err(|e| open_err(e.to_string()))?;
        let store = Store { db, path };
        store.init_and_check_version()?;
        let loaded = store.load()?;
        Ok((store, loaded))
    }

    /// The file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn io(&self, e: impl std::fmt::Display) -> StoreError {
        StoreError::Io {
            path: self.path.clone(),
            message: e.to_string(),
        }
    }

    fn init_and_check_version(&self) -> Result<(), StoreError> {
        let tx = self.db.begin_write().map_err(|e| self.io(e))?;
        {
            let mut meta = tx.open_table(META).map_err(|e| self.io(e))?;
            let found = meta
                .get("schema_version")
                .map_err(|e| self.io(e))?
                .map(|v| v.value());
            match found {
                Some(v) if v > SCHEMA_VERSION => {
                    return Err(StoreError::NewerVersion {
                        path: self.path.clone(),
                        found: v,
                        supported: SCHEMA_VERSION,
                    })
                }
                Some(_) => {}
                None => {
                    meta.insert("schema_version", SCHEMA_VERSION)
                        .map_err(|e| self.io(e))?;
                }
            }
            tx.open_table(ANALYSES).map_err(|e| self.io(e))?;
            tx.open_table(TARGETS).map_err(|e| self.io(e))?;
            tx.open_table(PLAN).map_err(|e| self.io(e))?;
        }
        tx.commit().map_err(|e| self.io(e))
    }

    fn load(&self) -> Result<Loaded, StoreError> {
        let tx = self.db.begin_read().map_err(|e| self.io(e))?;
        let mut loaded = Loaded::default();
        let corrupt = |what: String| StoreError::Corrupt {
            path: self.path.clone(),
            what,
        };
        let t = tx.open_table(ANALYSES).map_err(|e| self.io(e))?;
        for row in t.iter().map_err(|e| self.io(e))? {
            let (k, v) = row.map_err(|e| self.io(e))?;
            let a: StoredAnalysis = ciborium::from_reader(v.value())
                .map_err(|e| corrupt(format!("analysis {:?}: {e}", k.value())))?;
            loaded.analyses.push(a);
        }
        let t = tx.open_table(TARGETS).map_err(|e| self.io(e))?;
        for row in t.iter().map_err(|e| self.io(e))? {
            let (k, v) = row.map_err(|e| self.io(e))?;
            let s: SeriesSnapshot = ciborium::from_reader(v.value())
                .map_err(|e| corrupt(format!("series of target {:?}: {e}", k.value())))?;
            loaded.targets.insert(k.value().to_owned(), s);
        }
        let t = tx.open_table(PLAN).map_err(|e| self.io(e))?;
        if let Some(v) = t.get("labels").map_err(|e| self.io(e))? {
            let r = ciborium::from_reader(v.value())
                .map_err(|e| corrupt(format!("plan labels: {e}")))?;
            loaded.plan_labels = Some(r);
        }
        Ok(loaded)
    }

    /// Replace the upgrade plan's recorded namespace labels.
    pub fn write_plan_labels(
        &self,
        labels: &crate::istio::plan::RecordedLabels,
    ) -> Result<(), StoreError> {
        let tx = self.db.begin_write().map_err(|e| self.io(e))?;
        tx.open_table(PLAN)
            .map_err(|e| self.io(e))?
            .insert("labels", encode(labels).as_slice())
            .map_err(|e| self.io(e))?;
        tx.commit().map_err(|e| self.io(e))
    }

    /// Replace the whole state in one transaction: these analyses and these targets' series,
    /// nothing else.
    pub fn write<'a>(
        &self,
        analyses: impl IntoIterator<Item = (&'a str, StoredAnalysis)>,
        targets: impl IntoIterator<Item = (&'a str, &'a SeriesSnapshot)>,
    ) -> Result<WriteStats, StoreError> {
        let started = Instant::now();
        let mut stats = WriteStats::default();
        let tx = self.db.begin_write().map_err(|e| self.io(e))?;
        {
            let mut t = tx.open_table(ANALYSES).map_err(|e| self.io(e))?;
            t.retain(|_, _| false).map_err(|e| self.io(e))?;
            for (id, a) in analyses {
                let bytes = encode(&a);
                stats.bytes += bytes.len();
                t.insert(id, bytes.as_slice()).map_err(|e| self.io(e))?;
            }
            let mut t = tx.open_table(TARGETS).map_err(|e| self.io(e))?;
            t.retain(|_, _| false).map_err(|e| self.io(e))?;
            for (url, s) in targets {
                let bytes = encode(s);
                stats.bytes += bytes.len();
                stats.series += s.series.len();
                t.insert(url, bytes.as_slice()).map_err(|e| self.io(e))?;
            }
        }
        tx.commit().map_err(|e| self.io(e))?;
        stats.seconds = started.elapsed().as_secs_f64();
        Ok(stats)
    }

    /// Set the layout version (tests of the newer-version refusal).
    #[doc(hidden)]
    pub fn set_schema_version(&self, v: u64) -> Result<(), StoreError> {
        let tx = self.db.begin_write().map_err(|e| self.io(e))?;
        tx.open_table(META)
            .map_err(|e| self.io(e))?
            .insert("schema_version", v)
            .map_err(|e| self.io(e))?;
        tx.commit().map_err(|e| self.io(e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_replace() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("s.redb");
        let (s, loaded) = Store::open(&p).unwrap();
        assert!(loaded.analyses.is_empty() && loaded.targets.is_empty());
        let snap = SeriesSnapshot {
            series: vec![("m_total".into(), "a=\"1\"".into(), 42.5)],
        };
        let stats = s
            .write(std::iter::empty(), [("http://t/metrics", &snap)])
            .unwrap();
        assert_eq!(stats.series, 1);
        drop(s);
        let (s, loaded) = Store::open(&p).unwrap();
        assert_eq!(loaded.targets["http://t/metrics"], snap);
        s.write(std::iter::empty(), std::iter::empty()).unwrap();
        drop(s);
        let (_, loaded) = Store::open(&p).unwrap();
        assert!(
            loaded.targets.is_empty(),
            "a write replaces the whole state"
        );
    }

    #[test]
    fn garbage_file_and_newer_version_are_clear_errors() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("bad.redb");
        std::fs::write(
            &p,
            b"this is not a database at all, just some text\n".repeat(100),
        )
        .unwrap();
        let e = Store::open(&p).unwrap_err();
        assert!(matches!(e, StoreError::Open { .. }), "{e}");
        assert!(e.to_string().contains("bad.redb"), "{e}");

        let p = dir.path().join("new.redb");
        let (s, _) = Store::open(&p).unwrap();
        s.set_schema_version(SCHEMA_VERSION + 1).unwrap();
        drop(s);
        let e = Store::open(&p).unwrap_err();
        assert!(
            matches!(e, StoreError::NewerVersion { found: 2, .. }),
            "{e}"
        );
    }
}
