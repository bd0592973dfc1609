//! The store writer: a thread of its own that writes the latest state the engine hands it, so the
//! engine never waits on the disk. States are coalesced (a newer one replaces one not yet
//! written); a reply waiting for its change to be stored is released once a state at least as new
//! has committed. A failed write marks the store unhealthy, releases every waiting reply with the
//! cause, and is retried with backoff on a reopened database (redb refuses every write after an
//! I/O error until it is reopened) with the latest state, until one succeeds.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use tracing::{info, warn};

use super::{Store, StoreState};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

use crate::telemetry::metric;

/// The store writer's metrics, registered when a store is configured.
#[derive(Clone, Debug)]
pub struct StoreMetrics {
    /// Failed store writes (each try counts).
    pub errors: Counter,
    /// 1 while the store takes writes, 0 from a failed write until one succeeds.
    pub healthy: Gauge,
    /// Time of each successful write (encode and commit, both fsyncs included).
    pub write_seconds: Histogram,
}

impl StoreMetrics {
    /// Create and register them.
    pub fn register(reg: &mut Registry) -> Self {
        StoreMetrics {
            errors: metric(
                reg,
                "store_errors",
                "Failed store writes, each try counted",
                Counter::default(),
            ),
            healthy: metric(
                reg,
                "store_healthy",
                "1 while the store takes writes, 0 from a failed write until one succeeds",
                Gauge::default(),
            ),
            write_seconds: metric(
                reg,
                "store_write_duration_seconds",
                "Time of each successful store write, encode and commit with fsync",
                Histogram::new(exponential_buckets(0.0005, 2.0, 16)),
            ),
        }
    }
}

/// Called once with `Ok` when the state it waited for is on disk, or with the store's fault.
pub type Ack = Box<dyn FnOnce(Result<(), String>) + Send>;

/// First retry delay after a failed write; doubled per failure up to [`MAX_BACKOFF`].
const MIN_BACKOFF: Duration = Duration::from_millis(100);
/// Longest delay between two tries.
const MAX_BACKOFF: Duration = Duration::from_secs(5);

struct Slot {
    /// The newest state not yet taken by the writer, with its sequence number.
    next: Option<(u64, StoreState)>,
    /// Replies waiting for the state of their sequence number to commit.
    waiting: Vec<(u64, Ack)>,
    /// Sequence number of the newest committed state.
    committed: u64,
    /// Why the last write failed, while no write has succeeded since.
    fault: Option<String>,
    stop: bool,
}

struct Inner {
    path: PathBuf,
    slot: Mutex<Slot>,
    wake: Condvar,
}

impl Inner {
    fn lock(&self) -> MutexGuard<'_, Slot> {
        self.slot.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// What the engine and the API hold: hand states over, wait for them, read the store's health.
#[derive(Clone)]
pub struct StoreHandle {
    inner: Arc<Inner>,
}

/// The writer thread; [`Writer::finish`] writes what is left and waits for it.
pub struct Writer {
    handle: StoreHandle,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl std::fmt::Debug for StoreHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoreHandle")
            .field("path", &self.inner.path)
            .finish()
    }
}

// === impl Writer ===

impl Writer {
    /// Start the writer thread over an open store.
    pub fn spawn(store: Store, metrics: StoreMetrics) -> std::io::Result<Writer> {
        let inner = Arc::new(Inner {
            path: store.path().to_path_buf(),
            slot: Mutex::new(Slot {
                next: None,
                waiting: Vec::new(),
                committed: 0,
                fault: None,
                stop: false,
            }),
            wake: Condvar::new(),
        });
        metrics.healthy.set(1);
        let run = inner.clone();
        let thread = std::thread::Builder::new()
            .name("meshgate-store".into())
            .spawn(move || write_loop(&run, store, &metrics))?;
        Ok(Writer {
            handle: StoreHandle { inner },
            thread: Some(thread),
        })
    }

    /// The handle to hand states over.
    pub fn handle(&self) -> &StoreHandle {
        &self.handle
    }

    /// Write the last state handed over (one more try if the store is failing), then stop.
    /// Blocks until the thread has ended.
    pub fn finish(mut self) {
        self.handle.inner.lock().stop = true;
        self.handle.inner.wake.notify_all();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

// === impl StoreHandle ===

impl StoreHandle {
    /// Hand over the whole state numbered `seq` (increasing); replaces a state not yet written.
    pub fn submit(&self, seq: u64, state: StoreState) {
        self.inner.lock().next = Some((seq, state));
        self.inner.wake.notify_all();
    }

    /// Call `ack` once the state numbered `seq` (or a newer one) is on disk: at once when it
    /// already is; at once with the fault while the store cannot be written; else after the next
    /// commit (or failure).
    pub fn when_stored(&self, seq: u64, ack: Ack) {
        let now = {
            let mut g = self.inner.lock();
            if g.committed >= seq {
                Some(Ok(()))
            } else if let Some(f) = &g.fault {
                Some(Err(f.clone()))
            } else {
                g.waiting.push((seq, ack));
                return;
            }
        };
        if let Some(r) = now {
            ack(r);
        }
    }

    /// Sequence number of the newest state on disk.
    pub fn committed(&self) -> u64 {
        self.inner.lock().committed
    }

    /// `Err(why)` while the store cannot be written (from a failed write until one succeeds).
    pub fn health(&self) -> Result<(), String> {
        match &self.inner.lock().fault {
            None => Ok(()),
            Some(f) => Err(f.clone()),
        }
    }

    /// The store file.
    pub fn path(&self) -> &Path {
        &self.inner.path
    }
}

fn write_loop(inner: &Inner, store: Store, metrics: &StoreMetrics) {
    let mut store = Some(store);
    // A state whose write failed, retried until a newer one replaces it.
    let mut retry: Option<(u64, StoreState)> = None;
    let mut backoff = MIN_BACKOFF;
    let mut failures = 0u64;
    loop {
        let (job, stopping) = {
            let mut g = inner.lock();
            while g.next.is_none() && retry.is_none() && !g.stop {
                g = inner.wake.wait(g).unwrap_or_else(|p| p.into_inner());
            }
            (g.next.take().or_else(|| retry.take()), g.stop)
        };
        let Some((seq, state)) = job else {
            return; // stopping, nothing left to write
        };
        let started = Instant::now();
        let result = match store.take() {
            Some(s) => Ok(s),
            None => Store::reopen(&inner.path),
        }
        .and_then(|s| {
            let r = s.write_state(&state);
            store = Some(s);
            r
        });
        match result {
            Ok(_) => {
                metrics
                    .write_seconds
                    .observe(started.elapsed().as_secs_f64());
                let (acks, recovered) = {
                    let mut g = inner.lock();
                    g.committed = seq;
                    let recovered = g.fault.take().is_some();
                    let (done, left): (Vec<_>, Vec<_>) =
                        g.waiting.drain(..).partition(|(need, _)| *need <= seq);
                    g.waiting = left;
                    (done, recovered)
                };
                for (_, ack) in acks {
                    ack(Ok(()));
                }
                if recovered {
                    metrics.healthy.set(1);
                    info!(file = %inner.path.display(), failures, "store writes work again; the latest state is stored");
                }
                backoff = MIN_BACKOFF;
                failures = 0;
                retry = None;
            }
            Err(e) => {
                failures += 1;
                metrics.errors.inc();
                metrics.healthy.set(0);
                // redb refuses every write after an I/O error until the database is reopened.
                store = None;
                let why = format!("the store {} cannot be written: {e}", inner.path.display());
                warn!(file = %inner.path.display(), error = %e, failures, retry_in = ?backoff, "store write failed; creates and deletes answer 503 until a write succeeds");
                let acks = {
                    let mut g = inner.lock();
                    g.fault = Some(why.clone());
                    std::mem::take(&mut g.waiting)
                };
                for (_, ack) in acks {
                    ack(Err(why.clone()));
                }
                if stopping {
                    tracing::error!(file = %inner.path.display(), error = %e, "state not stored at shutdown: the changes since the last stored state are lost");
                    return;
                }
                retry = Some((seq, state));
                let deadline = Instant::now() + backoff;
                let mut g = inner.lock();
                while !g.stop {
                    let left = deadline.saturating_duration_since(Instant::now());
                    if left.is_zero() {
                        break;
                    }
                    g = inner
                        .wake
                        .wait_timeout(g, left)
                        .unwrap_or_else(|p| p.into_inner())
                        .0;
                }
                backoff = (backoff * 2).min(MAX_BACKOFF);
            }
        }
    }
}
