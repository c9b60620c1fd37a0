//! The open-file limit. Container runtimes often start processes with a soft limit
//! of 1024 under a much higher hard one; every connection and every file a
//! collector reads takes a descriptor, so the agent raises the soft limit to the
//! hard one at start (as Go does since 1.19) and sizes its connection cap from the
//! result, leaving half for the collectors.

use nix::sys::resource::{getrlimit, setrlimit, Resource, RLIM_INFINITY};

/// The connection cap never exceeds this: far above what a node's scrapers and
/// probes need, and it bounds memory.
pub const MAX_DEFAULT_CONNECTIONS: u64 = 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FdLimit {
    /// The soft limit in force after the attempt.
    pub soft: u64,
    pub hard: u64,
    /// The soft limit before, when it was raised.
    pub raised_from: Option<u64>,
}

/// Raises the soft RLIMIT_NOFILE to the hard one. An unlimited hard limit is not a
/// valid soft value for file descriptors on Linux (it is capped by fs.nr_open), so
/// then the soft limit is left alone.
pub fn raise_to_hard() -> nix::Result<FdLimit> {
    let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE)?;
    if soft >= hard || hard == RLIM_INFINITY {
        return Ok(FdLimit {
            soft,
            hard,
            raised_from: None,
        });
    }
    setrlimit(Resource::RLIMIT_NOFILE, hard, hard)?;
    Ok(FdLimit {
        soft: hard,
        hard,
        raised_from: Some(soft),
    })
}

/// Half the descriptors for connections, the rest for collectors and the listener,
/// at most [`MAX_DEFAULT_CONNECTIONS`].
pub fn default_max_connections(soft_limit: u64) -> usize {
    (soft_limit / 2).clamp(1, MAX_DEFAULT_CONNECTIONS) as usize
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cap_leaves_half_for_collectors() {
        assert_eq!(default_max_connections(1024), 512);
        assert_eq!(default_max_connections(1 << 20), 1024);
        assert_eq!(default_max_connections(1), 1);
    }

    #[test]
    fn raising_ends_at_the_hard_limit() {
        let l = raise_to_hard().unwrap();
        let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE).unwrap();
        assert_eq!((l.soft, l.hard), (soft, hard));
        assert!(hard == RLIM_INFINITY || soft == hard, "{l:?}");
    }
}
