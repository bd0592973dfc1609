//! Label texts shared by the series memory of every target.
//!
//! A series is keyed by its label text (`{reporter="destination",...}`, ~640 bytes on an Istio
//! sidecar). Istio's standard metrics carry no pod label (the pod is a target label), so every pod
//! of a workload reports the same texts: one copy per distinct text, shared by all the targets
//! that hold it, instead of one per target. Texts no series holds any more are dropped before
//! the set grows to twice what it held after the last sweep, so memory follows the live series.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};

/// Sweep no set smaller than this (a sweep walks the whole set).
const MIN_SWEEP: usize = 1024;

/// The shared set of label texts.
#[derive(Debug, Default)]
pub struct Interner {
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    set: HashSet<Arc<str>>,
    /// Texts held after the last sweep.
    live_after_sweep: usize,
}

impl Interner {
    /// The shared copy of `text` (made now if there is none). Called only for a series new to a
    /// target: known series are found in the target's own map without the lock.
    pub fn intern(&self, text: &str) -> Arc<str> {
        let mut g = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(a) = g.set.get(text) {
            return a.clone();
        }
        if g.set.len() >= 2 * g.live_after_sweep.max(MIN_SWEEP) {
            // Only the set holds a text whose count is 1: no series can clone it but through
            // this lock, so it can go.
            g.set.retain(|a| Arc::strong_count(a) > 1);
            g.live_after_sweep = g.set.len();
        }
        let a: Arc<str> = Arc::from(text);
        g.set.insert(a.clone());
        a
    }

    /// Distinct texts held (some perhaps no longer used, until the next sweep).
    pub fn len(&self) -> usize {
        self.inner
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .set
            .len()
    }

    /// No text held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_copy_per_text_and_unused_texts_are_swept() {
        let i = Interner::default();
        let a = i.intern("{a=\"1\"}");
        let b = i.intern("{a=\"1\"}");
        assert!(Arc::ptr_eq(&a, &b));
        assert_eq!(i.len(), 1);
        drop((a, b));
        // Fill past the sweep threshold with texts held by no one but the set; the ones still
        // held survive the sweep.
        let kept: Vec<Arc<str>> = (0..10).map(|n| i.intern(&format!("kept{n}"))).collect();
        for n in 0..2 * MIN_SWEEP {
            i.intern(&format!("gone{n}"));
        }
        assert!(i.len() < 2 * MIN_SWEEP, "{}", i.len());
        for k in &kept {
            assert!(Arc::ptr_eq(k, &i.intern(k)));
        }
    }
}
