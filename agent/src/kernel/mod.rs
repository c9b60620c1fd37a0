//! Pure readers and parsers, one file per kernel source. No metrics, no policy.

pub mod cgroup;
pub mod cni;
pub mod conntrack;
pub mod conntrack_dump;
pub mod ctnetlink;
pub mod diskstats;
pub mod dns;
pub mod ethtool;
pub mod inotify;
pub mod kmsg;
pub mod kubelet_logs;
pub mod limits;
pub mod meminfo;
pub mod mountinfo;
pub mod neigh;
pub mod net_class;
pub mod netlink;
pub mod netns;
pub mod nfnetlink;
pub mod nft_notrack;
pub mod process;
pub mod psi;
pub mod route;
pub mod rtnetlink;
pub mod softnet;
pub mod statfs;
pub mod vmstat;

use std::io;
use std::path::{Path, PathBuf};

/// An I/O error that remembers which file it was reading.
#[derive(Debug, thiserror::Error)]
#[error("{path}: {source}")]
pub struct ReadError {
    pub path: PathBuf,
    #[source]
    pub source: io::Error,
}

impl ReadError {
    /// The file was read but does not say what its format promises.
    pub fn invalid(path: &Path, message: impl Into<String>) -> Self {
        ReadError {
            path: path.to_path_buf(),
            source: io::Error::new(io::ErrorKind::InvalidData, message.into()),
        }
    }

    pub fn is_not_found(&self) -> bool {
        self.source.kind() == io::ErrorKind::NotFound
    }
}

pub fn read_string(path: &Path) -> Result<String, ReadError> {
    std::fs::read_to_string(path).map_err(|source| ReadError {
        path: path.to_path_buf(),
        source,
    })
}

/// The entries of a directory, the error naming it.
pub fn read_dir(path: &Path) -> Result<std::fs::ReadDir, ReadError> {
    std::fs::read_dir(path).map_err(|source| ReadError {
        path: path.to_path_buf(),
        source,
    })
}

/// Reads an optional attribute: a file that is missing, or that the kernel refuses
/// to answer (EINVAL for the speed of a link that is down, EOPNOTSUPP, EPERM), is
/// absent rather than an error.
pub fn read_optional(path: &Path) -> Option<String> {
    match std::fs::read_to_string(path) {
        Ok(s) => Some(s.trim().to_string()),
        Err(_) => None,
    }
}

/// A single integer in a sysfs or procfs file, absent when unreadable or unparsable.
pub fn read_optional_u64(path: &Path) -> Option<u64> {
    read_optional(path)?.parse().ok()
}

/// A single integer in a file that must be there.
pub fn read_u64(path: &Path) -> Result<u64, ReadError> {
    let s = read_string(path)?;
    s.trim().parse().map_err(|e| {
        ReadError::invalid(
            path,
            format!("expected an integer, got {:?}: {e}", s.trim()),
        )
    })
}
