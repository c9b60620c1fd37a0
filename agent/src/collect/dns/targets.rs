//! Which pods to probe from: every pod network namespace on the node, found the way
//! the netns collector finds them, and a few of them each round, in turn.

use crate::collect::netns::scan::ProcView;
use crate::collect::netns::shared_walk;
use crate::collect::pods::Attribution;
use crate::host::HostRoot;
use crate::kernel::dns::resolv_conf::{self, ResolvConf, ResolvConfError};
use crate::sample::{CollectError, Unavailable};
use std::io;

/// Processes of a pod tried for a readable resolv.conf: the sandbox's pause process
/// may have none, its containers share the same file.
const PIDS_TRIED: usize = 4;

/// A pod's network namespace, and its processes (lowest pid first) to enter it
/// through and to read its resolv.conf through.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodNetns {
    pub inode: u64,
    pub pod: Attribution,
    pub pids: Vec<u32>,
}

/// This round's pods to probe from, `n` of them in turn (see [`Rotation`]), out of
/// every pod network namespace on the node: namespaces other than the host's that
/// hold a process in a pod's cgroup (a pod with no process left has no resolver to
/// speak of, so pins alone are not enough here). One walk of procfs, shared with the
/// netns collector; `namespaces` keeps pods of those Kubernetes namespaces only.
/// Also how many pod namespaces there are, and what the pod index could not read.
pub fn pod_namespaces(
    root: &HostRoot,
    namespaces: &[String],
    rotation: &mut Rotation,
    n: usize,
) -> Result<(usize, Vec<PodNetns>, Vec<Unavailable>), CollectError> {
    let walk = shared_walk::processes(root)?;
    let procs = &walk.procs;
    // Only the picked few are copied out of the walk.
    let mut all: Vec<(u64, &ProcView, &Attribution)> = procs
        .by_ns
        .iter()
        .filter(|(inode, _)| Some(**inode) != procs.host)
        .filter_map(|(&inode, view)| {
            let pod = view.pod.as_ref()?;
            let selected = namespaces.is_empty()
                || pod
                    .namespace
                    .as_ref()
                    .is_some_and(|ns| namespaces.iter().any(|n| **n == **ns));
            selected.then_some((inode, view, pod))
        })
        .collect();
    all.sort_unstable_by_key(|(inode, ..)| *inode);
    let picked = rotation
        .next(&all, |(inode, ..)| *inode, n)
        .into_iter()
        .map(|&(inode, view, pod)| {
            let mut pids = view.pids.clone();
            pids.sort_unstable();
            PodNetns {
                inode,
                pod: pod.clone(),
                pids,
            }
        })
        .collect();
    Ok((all.len(), picked, walk.index_missing.clone()))
}

/// Takes turns through the pod namespaces: each round the next few after the last
/// one probed, by inode, so every pod is probed over time whatever comes and goes.
#[derive(Debug, Default)]
pub struct Rotation {
    last: Option<u64>,
}

impl Rotation {
    /// The next `n` of `sorted` (by `inode`, ascending), none twice.
    pub fn next<'a, T>(
        &mut self,
        sorted: &'a [T],
        inode: impl Fn(&T) -> u64,
        n: usize,
    ) -> Vec<&'a T> {
        if sorted.is_empty() || n == 0 {
            return Vec::new();
        }
        let start = match self.last {
            Some(last) => sorted.partition_point(|p| inode(p) <= last) % sorted.len(),
            None => 0,
        };
        let picked: Vec<&T> = sorted
            .iter()
            .cycle()
            .skip(start)
            .take(n.min(sorted.len()))
            .collect();
        self.last = picked.last().map(|p| inode(p));
        picked
    }
}

/// The pod's `/etc/resolv.conf`, read through the root of one of its processes
/// (`/proc/<pid>/root`), and that process. The error names the file; a file that is
/// missing in one process's root is looked for in the next.
pub fn read_resolv_conf(root: &HostRoot, pids: &[u32]) -> Result<(u32, ResolvConf), String> {
    let mut errors: Vec<ResolvConfError> = Vec::new();
    for &pid in pids.iter().take(PIDS_TRIED) {
        match resolv_conf::read_in_root(&root.proc(&[&pid.to_string(), "root"])) {
            Ok(conf) => return Ok((pid, conf)),
            Err(e) => errors.push(e),
        }
    }
    let not_found = |e: &ResolvConfError| matches!(e, ResolvConfError::Io { source, .. } if source.kind() == io::ErrorKind::NotFound);
    // A refusal (a FIFO, a link out of the root) says more than a missing file.
    let telling = errors
        .iter()
        .find(|e| !not_found(e))
        .or(errors.first())
        .map(|e| e.to_string());
    Err(telling.unwrap_or_else(|| "no process to read it through".into()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::collect::pods::{PodIdentity, Qos};

    fn ns(inode: u64) -> PodNetns {
        PodNetns {
            inode,
            pod: PodIdentity {
                pod_uid: format!("uid-{inode}").into(),
                qos: Qos::Burstable,
                namespace: Some("team-a".into()),
                pod: Some(format!("web-{inode}").into()),
                container: None,
                container_id: None,
            }
            .into(),
            pids: vec![inode as u32],
        }
    }

    fn by_inode(p: &PodNetns) -> u64 {
        p.inode
    }

    fn inodes(v: &[&PodNetns]) -> Vec<u64> {
        v.iter().map(|p| p.inode).collect()
    }

    #[test]
    fn rounds_take_turns_and_wrap() {
        let all: Vec<PodNetns> = [10, 20, 30, 40, 50].map(ns).to_vec();
        let mut r = Rotation::default();
        assert_eq!(inodes(&r.next(&all, by_inode, 3)), [10, 20, 30]);
        assert_eq!(inodes(&r.next(&all, by_inode, 3)), [40, 50, 10]);
        assert_eq!(inodes(&r.next(&all, by_inode, 3)), [20, 30, 40]);
        assert_eq!(
            inodes(&r.next(&all, by_inode, 9)),
            [50, 10, 20, 30, 40],
            "never one twice"
        );
        assert!(r.next(&[], by_inode, 3).is_empty());
    }

    #[test]
    fn a_namespace_that_went_away_does_not_lose_the_place() {
        let mut r = Rotation::default();
        let before: Vec<PodNetns> = [10, 20, 30, 40].map(ns).to_vec();
        assert_eq!(inodes(&r.next(&before, by_inode, 2)), [10, 20]);
        // 20 is gone and 25 is new: the turn goes on after 20.
        let after: Vec<PodNetns> = [10, 25, 30, 40].map(ns).to_vec();
        assert_eq!(inodes(&r.next(&after, by_inode, 2)), [25, 30]);
    }

    #[test]
    fn resolv_conf_errors_name_the_file_and_prefer_a_refusal() {
        let proc = tempfile::tempdir().unwrap();
        let root = HostRoot {
            proc: proc.path().to_path_buf(),
            ..HostRoot::default()
        };
        // pid 1: no /etc/resolv.conf (a pause image); pid 2: a directory there.
        std::fs::create_dir_all(proc.path().join("1/root/etc")).unwrap();
        std::fs::create_dir_all(proc.path().join("2/root/etc/resolv.conf")).unwrap();
        let err = read_resolv_conf(&root, &[1, 2]).unwrap_err();
        assert!(err.contains("2/root/etc/resolv.conf"), "{err}");
        assert!(err.contains("not a regular file"), "{err}");
        // pid 3 has one: it is read after the others failed.
        std::fs::create_dir_all(proc.path().join("3/root/etc")).unwrap();
        std::fs::write(
            proc.path().join("3/root/etc/resolv.conf"),
            "nameserver 10.96.0.10\nsearch a.svc.cluster.local svc.cluster.local cluster.local\n",
        )
        .unwrap();
        let (pid, conf) = read_resolv_conf(&root, &[1, 2, 3]).unwrap();
        assert_eq!(pid, 3);
        assert_eq!(conf.cluster_domain(), Some("cluster.local"));
        let none = read_resolv_conf(&root, &[]).unwrap_err();
        assert!(none.contains("no process"), "{none}");
        let missing = read_resolv_conf(&root, &[1]).unwrap_err();
        assert!(missing.contains("1/root"), "{missing}");
    }
}
