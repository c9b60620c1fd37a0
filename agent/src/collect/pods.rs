//! Pod attribution without an API server: a cgroup path names the pod UID and the
//! container id (both kubelet cgroup drivers), and the kubelet's log directories map
//! those to namespace, pod and container names. Shared by every collector that needs
//! to say which pod a thing belongs to.

use crate::host::HostRoot;
use crate::kernel::dir_memo::DirMemo;
use crate::kernel::kubelet_logs;
use crate::kernel::process::CgroupFile;
use crate::kernel::ReadError;
use crate::sample::Unavailable;
// Every cgroup and process attributed a round looks up a pod UID and a container id
// here: SipHash (std's default) on them was a third of attributing at 500 pods.
use foldhash::HashMap;
use serde::Serialize;
use std::sync::Arc;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Qos {
    Guaranteed,
    Burstable,
    BestEffort,
}

/// A pod's or container's name or id, shared by every sample and round that names
/// it: at 500 pods each round attributed about 1,500 processes and cgroups, and
/// copying their names was most of what attributing cost.
pub type Name = Arc<str>;

/// What a cgroup path alone says.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CgroupRef {
    /// Pod UID with dashes, as the API server spells it.
    pub pod_uid: Name,
    pub qos: Qos,
    /// Present for a container's cgroup, absent for the pod-level one.
    pub container_id: Option<Name>,
    /// containerd, crio or docker when the systemd driver's scope name says so.
    pub runtime: Option<&'static str>,
}

/// Reads a kubelet cgroup path in either driver's spelling:
/// - cgroupfs: `/kubepods/burstable/pod<uid>/<container-id>`
/// - systemd: `/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod<uid_with_underscores>.slice/cri-containerd-<id>.scope`
///
/// Guaranteed pods sit directly under `kubepods`. Anything else is None.
pub fn parse_cgroup_path(path: &str) -> Option<CgroupRef> {
    let parts: Vec<&str> = path.split('/').filter(|p| !p.is_empty()).collect();
    let start = parts
        .iter()
        .position(|p| *p == "kubepods" || *p == "kubepods.slice")?;
    let rest = &parts[start + 1..];
    let (qos, rest) = match rest.first().map(|p| qos_of(p)) {
        Some(Some(q)) => (q, &rest[1..]),
        _ => (Qos::Guaranteed, rest),
    };
    let pod_uid = rest.first().and_then(|p| pod_uid_of(p))?;
    let (container_id, runtime) = match rest.get(1) {
        Some(c) => {
            let (id, rt) = container_of(c)?;
            (Some(id), rt)
        }
        None => (None, None),
    };
    Some(CgroupRef {
        pod_uid,
        qos,
        container_id,
        runtime,
    })
}

/// The cgroup path of a process that names its pod: the v2 line or a v1 line of a
/// controller every kubelet sets up (cpu, memory, pids, name=systemd), whichever
/// contains `kubepods`, else any other line that does. None for a process outside
/// any pod.
pub fn pod_cgroup(file: &CgroupFile) -> Option<&str> {
    let pod_lines = || file.entries().filter(|e| e.path.contains("kubepods"));
    let preferred = |e: &crate::kernel::process::CgroupEntry| {
        e.controllers().next().is_none()
            || e.controllers()
                .any(|c| matches!(c, "cpu" | "memory" | "pids" | "name=systemd"))
    };
    pod_lines()
        .find(preferred)
        .or_else(|| pod_lines().next())
        .map(|e| e.path)
}

fn qos_of(part: &str) -> Option<Qos> {
    let name = part.strip_suffix(".slice").unwrap_or(part);
    let name = name.strip_prefix("kubepods-").unwrap_or(name);
    match name {
        "burstable" => Some(Qos::Burstable),
        "besteffort" => Some(Qos::BestEffort),
        _ => None,
    }
}

fn pod_uid_of(part: &str) -> Option<Name> {
    let uid = if let Some(slice) = part.strip_suffix(".slice") {
        // kubepods-burstable-pod<uid_>.slice or kubepods-pod<uid_>.slice
        let idx = slice.rfind("-pod")?;
        slice[idx + 4..].replace('_', "-")
    } else {
        part.strip_prefix("pod")?.to_string()
    };
    let valid = uid.len() >= 32 && uid.chars().all(|c| c.is_ascii_hexdigit() || c == '-');
    valid.then(|| uid.into())
}

/// `cri-containerd-<id>.scope`, `crio-<id>.scope`, `docker-<id>.scope`, or a bare id
/// (cgroupfs driver). conmon scopes and other non-container cgroups are None.
fn container_of(part: &str) -> Option<(Name, Option<&'static str>)> {
    if let Some(scope) = part.strip_suffix(".scope") {
        for (prefix, runtime) in [
            ("cri-containerd-", "containerd"),
            ("crio-", "crio"),
            ("docker-", "docker"),
        ] {
            if let Some(id) = scope.strip_prefix(prefix) {
                return is_container_id(id).then(|| (id.into(), Some(runtime)));
            }
        }
        return None;
    }
    is_container_id(part).then(|| (part.into(), None))
}

fn is_container_id(s: &str) -> bool {
    s.len() >= 12 && s.chars().all(|c| c.is_ascii_hexdigit())
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PodName {
    pub namespace: Name,
    pub pod: Name,
}

/// Names from the kubelet's log directories under the host rootfs.
#[derive(Debug, Clone, Default)]
pub struct PodIndex {
    pods: Arc<HashMap<String, PodName>>,
    /// container id -> (pod uid when known, container name)
    containers: Arc<HashMap<String, (PodName, Name)>>,
}

/// A cgroup's pod, named as far as the node knows, shared by every process,
/// namespace, veth and address that belongs to it: a clone is one count, where a
/// copy of the names was five (at 500 pods, attributing and dropping copies of the
/// names was 3% of the agent's CPU, each name a count on a line of its own).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct Attribution(Arc<PodIdentity>);

/// What [`Attribution`] says of a pod.
#[derive(Debug, PartialEq, Eq, Serialize)]
pub struct PodIdentity {
    pub pod_uid: Name,
    pub qos: Qos,
    pub namespace: Option<Name>,
    pub pod: Option<Name>,
    pub container: Option<Name>,
    pub container_id: Option<Name>,
}

impl From<PodIdentity> for Attribution {
    fn from(identity: PodIdentity) -> Self {
        Attribution(Arc::new(identity))
    }
}

impl std::ops::Deref for Attribution {
    type Target = PodIdentity;

    fn deref(&self) -> &PodIdentity {
        &self.0
    }
}

impl PodIdentity {
    /// `namespace/pod` when the kubelet's directories name it, else `pod <uid>`.
    pub fn name(&self) -> String {
        pod_name(
            self.namespace.as_deref(),
            self.pod.as_deref(),
            &self.pod_uid,
        )
    }
}

/// How every report, finding and label names a pod: `namespace/pod`, or `pod <uid>`
/// when the kubelet's directories do not name it.
pub fn pod_name(namespace: Option<&str>, pod: Option<&str>, uid: &str) -> String {
    match (namespace, pod) {
        (Some(ns), Some(pod)) => format!("{ns}/{pod}"),
        _ => format!("pod {uid}"),
    }
}

/// The kubelet's log directories as last listed and parsed, for
/// [`PodIndex::read_with`]: at 500 pods, listing both every round was a few percent
/// of the agent's CPU, and parsing the names again a few more.
#[derive(Debug, Default)]
pub struct PodLogsMemo {
    pods: DirMemo<Arc<HashMap<String, PodName>>>,
    containers: DirMemo<Arc<HashMap<String, (PodName, Name)>>>,
}

impl PodIndex {
    /// Reads `/var/log/pods/<namespace>_<pod>_<uid>/` and
    /// `/var/log/containers/<pod>_<namespace>_<container>-<id>.log`. A missing
    /// directory (not a kubelet node) is reported, not an error.
    pub fn read(root: &HostRoot) -> (PodIndex, Vec<Unavailable>) {
        Self::read_with(root, &mut PodLogsMemo::default())
    }

    /// [`PodIndex::read`], listing each directory again only when it changed since
    /// `memo` last saw it.
    pub fn read_with(root: &HostRoot, memo: &mut PodLogsMemo) -> (PodIndex, Vec<Unavailable>) {
        let mut index = PodIndex::default();
        let mut missing = Vec::new();
        let pods_dir = root.host_path(kubelet_logs::POD_LOG_DIR);
        let pods = memo.pods.read(&pods_dir, || {
            let names = kubelet_logs::pod_log_dirs(root)?;
            Ok::<_, ReadError>(Arc::new(
                names.iter().filter_map(|n| parse_pod_log_dir(n)).collect(),
            ))
        });
        match pods {
            Ok(pods) => index.pods = pods,
            Err(e) => missing.push(Unavailable::new(
                "kubelet pod log directories",
                format!("{e}: pods are named by UID only"),
            )),
        }
        let containers_dir = root.host_path(kubelet_logs::CONTAINER_LOG_DIR);
        let containers = memo.containers.read(&containers_dir, || {
            let names = kubelet_logs::container_logs(root)?;
            Ok::<_, ReadError>(Arc::new(
                names
                    .iter()
                    .filter_map(|n| parse_container_log_name(n))
                    .map(|(id, pod, container)| (id, (pod, container)))
                    .collect(),
            ))
        });
        match containers {
            Ok(containers) => index.containers = containers,
            Err(e) => missing.push(Unavailable::new(
                "kubelet container log links",
                format!("{e}: containers are named by id only"),
            )),
        }
        (index, missing)
    }

    pub fn pod(&self, uid: &str) -> Option<&PodName> {
        self.pods.get(uid)
    }

    /// Attributes a cgroup path (from `/proc/<pid>/cgroup` or a cgroupfs walk).
    pub fn attribute(&self, cgroup_path: &str) -> Option<Attribution> {
        parse_cgroup_path(cgroup_path).map(|r| self.attribute_ref(&r))
    }

    /// The name of a container, by its id.
    pub fn container(&self, id: &str) -> Option<Name> {
        self.containers.get(id).map(|(_, c)| c.clone())
    }

    /// Attributes a cgroup path already parsed.
    pub fn attribute_ref(&self, r: &CgroupRef) -> Attribution {
        let container = r
            .container_id
            .as_deref()
            .and_then(|id| self.containers.get(id));
        let pod = self
            .pods
            .get(&*r.pod_uid)
            .or_else(|| container.map(|(p, _)| p));
        PodIdentity {
            namespace: pod.map(|p| p.namespace.clone()),
            pod: pod.map(|p| p.pod.clone()),
            container: container.map(|(_, c)| c.clone()),
            container_id: r.container_id.clone(),
            pod_uid: r.pod_uid.clone(),
            qos: r.qos,
        }
        .into()
    }

    /// Whether `other` was read from the same listings: an attribution made with one
    /// holds for the other.
    pub fn same_as(&self, other: &PodIndex) -> bool {
        Arc::ptr_eq(&self.pods, &other.pods) && Arc::ptr_eq(&self.containers, &other.containers)
    }
}

/// `<namespace>_<pod>_<uid>`: namespaces and pod names cannot contain `_`.
pub fn parse_pod_log_dir(name: &str) -> Option<(String, PodName)> {
    let mut it = name.splitn(3, '_');
    let (ns, pod, uid) = (it.next()?, it.next()?, it.next()?);
    if ns.is_empty() || pod.is_empty() || uid.len() < 32 {
        return None;
    }
    Some((
        uid.to_string(),
        PodName {
            namespace: ns.into(),
            pod: pod.into(),
        },
    ))
}

/// `<pod>_<namespace>_<container>-<id>.log` -> (id, pod, container).
pub fn parse_container_log_name(file: &str) -> Option<(String, PodName, Name)> {
    let stem = file.strip_suffix(".log")?;
    let (prefix, id) = stem.rsplit_once('-')?;
    if !is_container_id(id) {
        return None;
    }
    let mut it = prefix.splitn(3, '_');
    let (pod, ns, container) = (it.next()?, it.next()?, it.next()?);
    Some((
        id.to_string(),
        PodName {
            namespace: ns.into(),
            pod: pod.into(),
        },
        container.into(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    const UID: &str = "0f3b2a1c-9d8e-4f7a-b6c5-d4e3f2a1b0c9";
    const CID: &str = "4c5d6e7f8a9b0c1d2e3f4a5b6c7d8e9f0a1b2c3d4e5f6a7b8c9d0e1f2a3b4c5d";

    #[test]
    fn cgroupfs_driver_paths() {
        let r = parse_cgroup_path(&format!("/kubepods/burstable/pod{UID}/{CID}")).unwrap();
        assert_eq!(&*r.pod_uid, UID);
        assert_eq!(r.qos, Qos::Burstable);
        assert_eq!(r.container_id.as_deref(), Some(CID));
        let g = parse_cgroup_path(&format!("/kubepods/pod{UID}")).unwrap();
        assert_eq!(g.qos, Qos::Guaranteed);
        assert_eq!(g.container_id, None);
        let b = parse_cgroup_path(&format!("/kubepods/besteffort/pod{UID}/{CID}")).unwrap();
        assert_eq!(b.qos, Qos::BestEffort);
    }

    #[test]
    fn systemd_driver_paths_for_each_runtime() {
        let u = UID.replace('-', "_");
        for (scope, runtime) in [
            (format!("cri-containerd-{CID}.scope"), "containerd"),
            (format!("crio-{CID}.scope"), "crio"),
            (format!("docker-{CID}.scope"), "docker"),
        ] {
            let path = format!(
                "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{u}.slice/{scope}"
            );
            let r = parse_cgroup_path(&path).unwrap();
            assert_eq!(&*r.pod_uid, UID);
            assert_eq!(r.qos, Qos::Burstable);
            assert_eq!(r.container_id.as_deref(), Some(CID));
            assert_eq!(r.runtime, Some(runtime));
        }
        let g = parse_cgroup_path(&format!("/kubepods.slice/kubepods-pod{u}.slice")).unwrap();
        assert_eq!(g.qos, Qos::Guaranteed);
        let be = parse_cgroup_path(&format!(
            "/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod{u}.slice"
        ))
        .unwrap();
        assert_eq!(be.qos, Qos::BestEffort);
    }

    #[test]
    fn non_pod_cgroups_are_none() {
        assert_eq!(parse_cgroup_path("/system.slice/containerd.service"), None);
        assert_eq!(parse_cgroup_path("/kubepods/burstable"), None);
        assert_eq!(parse_cgroup_path("/"), None);
        let u = UID.replace('-', "_");
        assert_eq!(
            parse_cgroup_path(&format!(
                "/kubepods.slice/kubepods-pod{u}.slice/crio-conmon-{CID}.scope"
            )),
            None,
            "conmon is not a container"
        );
    }

    #[test]
    fn pod_cgroup_takes_v2_or_a_known_v1_controller() {
        let pod_cgroup = |text: &str| pod_cgroup(&CgroupFile(text.into())).map(str::to_string);
        let v1 = "12:pids:/kubepods/burstable/pod0f3b2a1c-9d8e-4f7a-b6c5-d4e3f2a1b0c9/abc\n\
                  4:memory:/kubepods/burstable/pod0f3b2a1c-9d8e-4f7a-b6c5-d4e3f2a1b0c9/abc\n\
                  1:name=systemd:/\n0::/\n";
        assert_eq!(
            pod_cgroup(v1).as_deref(),
            Some("/kubepods/burstable/pod0f3b2a1c-9d8e-4f7a-b6c5-d4e3f2a1b0c9/abc")
        );
        let v2 = "0::/kubepods.slice/kubepods-pod0f3b2a1c_9d8e.slice/cri-containerd-abc.scope\n";
        assert!(pod_cgroup(v2).unwrap().starts_with("/kubepods.slice/"));
        // The usual controllers win over others; another one alone still names the pod.
        let mixed = "5:devices:/kubepods/podA/x\n2:cpu,cpuacct:/kubepods/podB/y\n0::/\n";
        assert_eq!(pod_cgroup(mixed).as_deref(), Some("/kubepods/podB/y"));
        assert_eq!(
            pod_cgroup("5:devices:/kubepods/podA/x\n0::/\n").as_deref(),
            Some("/kubepods/podA/x")
        );
        assert_eq!(pod_cgroup("garbage without colons\n"), None);
        assert_eq!(pod_cgroup("0::/system.slice/sshd.service\n"), None);
        assert_eq!(pod_cgroup(""), None);
    }

    #[test]
    fn log_names_give_namespace_pod_and_container() {
        let (uid, p) =
            parse_pod_log_dir(&format!("kube-system_coredns-7db6d8ff4d-abcde_{UID}")).unwrap();
        assert_eq!(uid, UID);
        assert_eq!(&*p.namespace, "kube-system");
        assert_eq!(&*p.pod, "coredns-7db6d8ff4d-abcde");
        let (id, p, c) = parse_container_log_name(&format!(
            "coredns-7db6d8ff4d-abcde_kube-system_my-side-car-{CID}.log"
        ))
        .unwrap();
        assert_eq!(id, CID);
        assert_eq!(&*p.pod, "coredns-7db6d8ff4d-abcde");
        assert_eq!(&*c, "my-side-car");
        assert_eq!(parse_container_log_name("notalog.txt"), None);
    }
}
