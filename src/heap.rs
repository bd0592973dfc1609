//! Heap accounting for meshgate's own metrics.
//!
//! The `meshgate` binary installs [`CountingAlloc`] as its global allocator: it forwards to the
//! system allocator and keeps two relaxed atomic counters, the bytes currently allocated and the
//! allocations made. Together with what glibc's allocator holds ([`malloc_info`]) this tells a
//! leak (live bytes grow) from allocator retention (live bytes flat, free bytes inside the
//! allocator grow), which RSS alone cannot.
//!
//! A program that links the library without installing the allocator reads `None` from
//! [`stats`].

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

static LIVE: AtomicUsize = AtomicUsize::new(0);
static ALLOCATIONS: AtomicU64 = AtomicU64::new(0);

/// The system allocator, counted.
pub struct CountingAlloc;

// SAFETY: every call is forwarded unchanged to `System`; the counters only observe sizes.
unsafe impl GlobalAlloc for CountingAlloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let p = System.alloc(layout);
        if !p.is_null() {
            LIVE.fetch_add(layout.size(), Ordering::Relaxed);
            ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        }
        p
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        let p = System.alloc_zeroed(layout);
        if !p.is_null() {
            LIVE.fetch_add(layout.size(), Ordering::Relaxed);
            ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        }
        p
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        System.dealloc(ptr, layout);
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let p = System.realloc(ptr, layout, new_size);
        if !p.is_null() {
            // On failure the old block is untouched and still counted.
            LIVE.fetch_add(new_size, Ordering::Relaxed);
            LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
            ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        }
        p
    }
}

/// What [`CountingAlloc`] counted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HeapStats {
    /// Bytes currently allocated (requested sizes, without the allocator's overhead).
    pub live_bytes: u64,
    /// Allocations and reallocations since start.
    pub allocations: u64,
}

/// The counters, or `None` when [`CountingAlloc`] is not the global allocator.
pub fn stats() -> Option<HeapStats> {
    let allocations = ALLOCATIONS.load(Ordering::Relaxed);
    // A Rust program allocates before main (args, the runtime), so zero means not installed.
    (allocations > 0).then(|| HeapStats {
        live_bytes: LIVE.load(Ordering::Relaxed) as u64,
        allocations,
    })
}

/// What the C allocator holds, from glibc's `mallinfo2` (summed over all arenas).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MallocInfo {
    /// Bytes obtained from the system: the arenas plus separately mmapped blocks.
    pub mapped_bytes: u64,
    /// Bytes in chunks handed out (Rust's live bytes plus the allocator's per-chunk overhead).
    pub in_use_bytes: u64,
    /// Bytes in free chunks the allocator keeps for reuse: retention, not a leak.
    pub free_bytes: u64,
}

/// glibc's view of the heap; `None` on other C libraries.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
pub fn malloc_info() -> Option<MallocInfo> {
    // SAFETY: mallinfo2 takes no arguments, only reads allocator state under its locks, and
    // returns a plain struct by value (glibc >= 2.33).
    let m = unsafe { libc::mallinfo2() };
    Some(MallocInfo {
        mapped_bytes: (m.arena + m.hblkhd) as u64,
        in_use_bytes: (m.uordblks + m.hblkhd) as u64,
        free_bytes: m.fordblks as u64,
    })
}

/// glibc's view of the heap; `None` on other C libraries.
#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
pub fn malloc_info() -> Option<MallocInfo> {
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn malloc_info_sees_a_large_block_come_and_go() {
        let Some(before) = malloc_info() else { return };
        // 64 MiB is above glibc's mmap threshold: mapped and in use while held, gone after.
        let block = vec![1u8; 64 << 20];
        let during = malloc_info().expect("glibc");
        assert!(during.in_use_bytes >= before.in_use_bytes + (60 << 20));
        assert!(during.mapped_bytes >= during.in_use_bytes);
        drop(block);
        let after = malloc_info().expect("glibc");
        assert!(after.in_use_bytes + (60 << 20) <= during.in_use_bytes);
    }

    #[test]
    fn unit_tests_do_not_install_the_counting_allocator() {
        // The library's test binary uses the system allocator, so nothing is counted; the
        // binary's counting is tested through `/metrics` in tests/api.rs.
        assert_eq!(stats(), None);
    }
}
