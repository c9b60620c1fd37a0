//! Where the host's files are. In a DaemonSet the host's `/` is mounted at e.g.
//! `/host`, so every kernel read goes through a root passed in, never a literal.

use std::path::{Path, PathBuf};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostRoot {
    pub proc: PathBuf,
    pub sys: PathBuf,
    pub rootfs: PathBuf,
}

impl Default for HostRoot {
    fn default() -> Self {
        Self {
            proc: "/proc".into(),
            sys: "/sys".into(),
            rootfs: "/".into(),
        }
    }
}

impl HostRoot {
    /// A path under procfs: `proc(&["net", "stat", "nf_conntrack"])`.
    pub fn proc(&self, parts: &[&str]) -> PathBuf {
        join(&self.proc, parts)
    }

    pub fn sys(&self, parts: &[&str]) -> PathBuf {
        join(&self.sys, parts)
    }

    /// A host path such as `/var/lib/etcd` seen through the rootfs mount.
    pub fn host_path(&self, absolute: impl AsRef<Path>) -> PathBuf {
        let rel = absolute
            .as_ref()
            .strip_prefix("/")
            .unwrap_or(absolute.as_ref());
        self.rootfs.join(rel)
    }
}

fn join(base: &Path, parts: &[&str]) -> PathBuf {
    let mut p = base.to_path_buf();
    p.extend(parts);
    p
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_are_built_under_the_given_roots() {
        let root = HostRoot {
            proc: "/host/proc".into(),
            sys: "/host/sys".into(),
            rootfs: "/host".into(),
        };
        assert_eq!(
            root.proc(&["net", "stat", "nf_conntrack"]),
            PathBuf::from("/host/proc/net/stat/nf_conntrack")
        );
        assert_eq!(
            root.sys(&["class", "net"]),
            PathBuf::from("/host/sys/class/net")
        );
        assert_eq!(
            root.host_path("/var/lib/etcd"),
            PathBuf::from("/host/var/lib/etcd")
        );
    }
}
