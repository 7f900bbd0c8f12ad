//! The open-file limit. A pool of 1,000 droplets means 1,000 health checks
//! at once, each a socket, beside the API's connections: more than the soft
//! limit of 1,024 open files many systems start processes with. The soft
//! limit may be raised up to the hard one without any privilege, so doproxy
//! does that when it starts.

/// The soft limit never goes above this, even when the hard one is
/// unlimited: plenty for any pool, and within what every kernel allows.
const ENOUGH: u64 = 1 << 20;

/// Raises this process's soft limit on open files to its hard limit (at
/// most ENOUGH); returns the limit in force. A refusal leaves the limit as
/// it was: work that needs more files then fails naming the error.
pub fn raise_open_files() -> Option<u64> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes into the struct it is given, nothing else.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        return None;
    }
    let wanted = raised(limit.rlim_cur, limit.rlim_max);
    if wanted == limit.rlim_cur {
        return Some(wanted);
    }
    let raised = libc::rlimit {
        rlim_cur: wanted,
        rlim_max: limit.rlim_max,
    };
    // SAFETY: setrlimit only reads the struct it is given.
    if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } != 0 {
        return Some(limit.rlim_cur);
    }
    Some(wanted)
}

/// The soft limit to ask for, given the current soft and hard ones.
fn raised(soft: u64, hard: u64) -> u64 {
    soft.max(hard.min(ENOUGH))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_soft_limit_rises_to_the_hard_one_within_reason() {
        assert_eq!(raised(1024, 524_288), 524_288);
        assert_eq!(raised(1024, u64::MAX), ENOUGH);
        assert_eq!(raised(4096, 4096), 4096);
        // Never lowered.
        assert_eq!(raised(2 * ENOUGH, u64::MAX), 2 * ENOUGH);
        assert!(raise_open_files().is_some_and(|limit| limit >= 1024));
    }
}
