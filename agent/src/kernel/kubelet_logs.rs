//! The kubelet's log directories, which name pods and containers on a node without
//! an API server: `/var/log/pods/<namespace>_<pod>_<uid>/` and
//! `/var/log/containers/<pod>_<namespace>_<container>-<id>.log`.

use super::{read_dir, ReadError};
use crate::host::HostRoot;
use std::path::Path;

pub const POD_LOG_DIR: &str = "/var/log/pods";
pub const CONTAINER_LOG_DIR: &str = "/var/log/containers";

/// The names under `/var/log/pods`, one directory per pod.
pub fn pod_log_dirs(root: &HostRoot) -> Result<Vec<String>, ReadError> {
    names(&root.host_path(POD_LOG_DIR))
}

/// The names under `/var/log/containers`, one link per container.
pub fn container_logs(root: &HostRoot) -> Result<Vec<String>, ReadError> {
    names(&root.host_path(CONTAINER_LOG_DIR))
}

fn names(dir: &Path) -> Result<Vec<String>, ReadError> {
    Ok(read_dir(dir)?
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_are_listed_and_a_missing_directory_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let root = HostRoot {
            rootfs: dir.path().to_path_buf(),
            ..HostRoot::default()
        };
        let e = pod_log_dirs(&root).unwrap_err();
        assert_eq!(e.path, dir.path().join("var/log/pods"));
        assert!(e.is_not_found());
        std::fs::create_dir_all(dir.path().join("var/log/containers")).unwrap();
        std::fs::write(dir.path().join("var/log/containers/a_b_c-0123.log"), "").unwrap();
        assert_eq!(container_logs(&root).unwrap(), ["a_b_c-0123.log"]);
    }
}
