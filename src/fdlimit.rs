//! The open-file limit. meshgate keeps one keep-alive connection per scrape target, plus the API's
//! connections, the store and the listeners: at the common default soft limit of 1,024 it would
//! run out of descriptors near 1,000 targets (issue 16). At start the soft limit is raised to the
//! hard limit, which any process may do without privileges, and the result is logged.

use std::io;

/// Descriptors meshgate keeps for itself besides its targets and API connections: listeners,
/// the store, logs, the runtime's own.
pub const RESERVED: u64 = 64;

/// The limit before and after [`raise`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FdLimit {
    /// The soft limit found at start.
    pub before: u64,
    /// The soft limit now.
    pub now: u64,
    /// The hard limit (the most the soft limit may be raised to without privileges).
    pub hard: u64,
}

impl FdLimit {
    /// How many scrape targets fit beside `api_connections` API connections and [`RESERVED`].
    pub fn targets_that_fit(&self, api_connections: usize) -> u64 {
        self.now
            .saturating_sub(api_connections as u64)
            .saturating_sub(RESERVED)
    }
}

/// Raise the soft `RLIMIT_NOFILE` to the hard limit (capped by the kernel's `fs.nr_open` where
/// the hard limit is unlimited). Never lowers it.
// `rlim_t` is u64 on 64-bit Linux and narrower elsewhere: the casts are for those.
#[allow(clippy::unnecessary_cast)]
pub fn raise() -> io::Result<FdLimit> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes one rlimit into the struct we own.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
        return Err(io::Error::last_os_error());
    }
    let before = lim.rlim_cur as u64;
    let hard = lim.rlim_max as u64;
    let mut target = lim.rlim_max;
    if target == libc::RLIM_INFINITY {
        target = nr_open().unwrap_or(1 << 20) as libc::rlim_t;
    }
    if target > lim.rlim_cur {
        let new = libc::rlimit {
            rlim_cur: target,
            rlim_max: lim.rlim_max,
        };
        // SAFETY: setrlimit reads one rlimit from a struct we own.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &new) } != 0 {
            return Err(io::Error::last_os_error());
        }
        lim.rlim_cur = target;
    }
    Ok(FdLimit {
        before,
        now: lim.rlim_cur as u64,
        hard,
    })
}

/// Linux's ceiling on any process' open files (`/proc/sys/fs/nr_open`).
fn nr_open() -> Option<u64> {
    std::fs::read_to_string("/proc/sys/fs/nr_open")
        .ok()?
        .trim()
        .parse()
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    #[allow(clippy::unnecessary_cast)]
    fn raises_the_soft_limit_to_the_hard_one_and_never_lowers_it() {
        let l = raise().expect("getrlimit works");
        assert!(l.now >= l.before, "{l:?}");
        if l.hard != libc::RLIM_INFINITY as u64 {
            assert_eq!(l.now, l.hard, "{l:?}");
        }
        // Idempotent: a second call finds the raised limit.
        let again = raise().unwrap();
        assert_eq!(again.before, l.now);
        assert_eq!(again.now, l.now);
    }

    #[test]
    fn targets_that_fit_leave_room_for_the_api_and_the_reserve() {
        let l = FdLimit {
            before: 1024,
            now: 1024,
            hard: 1024,
        };
        assert_eq!(l.targets_that_fit(1024), 0);
        assert_eq!(l.targets_that_fit(100), 1024 - 100 - RESERVED);
    }
}
