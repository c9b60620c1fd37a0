//! The kubelet's part, as far as nodediag can see it: the pod cgroup under
//! `/kubepods/<qos>/pod<uid>` (cgroupfs driver, cgroup v1), the sandbox and containers
//! through CRI with the configuration the kubelet derives from a pod spec, the log
//! directory `/var/log/pods/<ns>_<name>_<uid>/<container>/0.log` and its
//! `/var/log/containers/<pod>_<ns>_<container>-<id>.log` link, and on removal the
//! same steps backwards. A `Pod` removes itself on drop.

use super::cri::{self, Cri};
use super::node::Node;
use anyhow::{Context, Result};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Label on every sandbox the test makes, so cleanup finds only ours.
pub const OWNER_LABEL: &str = "nodediag-test/owner";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Qos {
    Guaranteed,
    Burstable,
    BestEffort,
}

impl Qos {
    /// The cgroupfs driver's parent of the pod cgroup.
    fn parent(self) -> &'static str {
        match self {
            Qos::Guaranteed => "/kubepods",
            Qos::Burstable => "/kubepods/burstable",
            Qos::BestEffort => "/kubepods/besteffort",
        }
    }
}

#[derive(Clone, Debug, Default)]
pub struct PodSpec {
    pub namespace: String,
    pub name: String,
    pub uid: String,
    pub host_network: bool,
    pub host_pid: bool,
    /// priorityClassName system-node-critical / system-cluster-critical.
    pub critical: bool,
    /// terminationGracePeriodSeconds (the default: 30).
    pub grace_seconds: Option<i64>,
    pub containers: Vec<ContainerSpec>,
    pub volumes: HashMap<String, HostPath>,
}

#[derive(Clone, Debug, Default)]
pub struct HostPath {
    pub path: String,
    /// `Directory`, `DirectoryOrCreate`, or empty (no check).
    pub kind: String,
}

#[derive(Clone, Debug, Default)]
pub struct ContainerSpec {
    pub name: String,
    pub image: String,
    pub command: Vec<String>,
    pub args: Vec<String>,
    pub env: Vec<(String, String)>,
    /// (containerPort, protocol) for the sandbox's port mappings.
    pub ports: Vec<i32>,
    pub cpu_request_milli: i64,
    pub cpu_limit_milli: i64,
    pub memory_request: i64,
    pub memory_limit: i64,
    pub mounts: Vec<VolumeMount>,
    pub security: Security,
}

#[derive(Clone, Debug, Default)]
pub struct VolumeMount {
    pub volume: String,
    pub mount_path: String,
    pub read_only: bool,
    /// One of the cri::PROPAGATION_* values.
    pub propagation: i32,
}

#[derive(Clone, Debug)]
pub struct Security {
    pub run_as_user: Option<i64>,
    pub run_as_group: Option<i64>,
    pub privileged: bool,
    pub allow_privilege_escalation: bool,
    pub read_only_root: bool,
    pub seccomp: Option<i32>,
    pub apparmor: Option<i32>,
    pub add: Vec<String>,
    pub drop: Vec<String>,
}

impl Default for Security {
    fn default() -> Self {
        Security {
            run_as_user: None,
            run_as_group: None,
            privileged: false,
            allow_privilege_escalation: true,
            read_only_root: false,
            seccomp: None,
            apparmor: None,
            add: Vec::new(),
            drop: Vec::new(),
        }
    }
}

impl ContainerSpec {
    /// Requests default to limits.
    fn cpu_request(&self) -> i64 {
        if self.cpu_request_milli > 0 {
            self.cpu_request_milli
        } else {
            self.cpu_limit_milli
        }
    }

    fn memory_request(&self) -> i64 {
        if self.memory_request > 0 {
            self.memory_request
        } else {
            self.memory_limit
        }
    }

    /// A busybox container running `sh -c SCRIPT`.
    pub fn shell(name: &str, script: &str) -> ContainerSpec {
        ContainerSpec {
            name: name.into(),
            image: super::node::WORKLOAD_IMAGE.into(),
            command: vec!["/bin/sh".into(), "-c".into(), script.into()],
            ..ContainerSpec::default()
        }
    }
}

impl PodSpec {
    /// Kubernetes' QoS class: requests default to limits.
    pub fn qos(&self) -> Qos {
        let req = |c: &ContainerSpec| (c.cpu_request(), c.memory_request());
        if self.containers.iter().all(|c| {
            let (cpu, mem) = req(c);
            cpu == 0 && mem == 0 && c.cpu_limit_milli == 0 && c.memory_limit == 0
        }) {
            return Qos::BestEffort;
        }
        if self.containers.iter().all(|c| {
            let (cpu, mem) = req(c);
            c.cpu_limit_milli > 0
                && c.memory_limit > 0
                && cpu == c.cpu_limit_milli
                && mem == c.memory_limit
        }) {
            return Qos::Guaranteed;
        }
        Qos::Burstable
    }

    pub fn cgroup_parent(&self) -> String {
        format!("{}/pod{}", self.qos().parent(), self.uid)
    }

    /// The pod's cgroup directories that exist, in whichever hierarchies have one.
    pub fn cgroup_dirs(&self) -> Vec<PathBuf> {
        pod_cgroups(&self.cgroup_parent())
            .into_iter()
            .map(|(_, dir)| dir)
            .collect()
    }

    pub fn log_dir(&self) -> PathBuf {
        PathBuf::from(format!(
            "/var/log/pods/{}_{}_{}",
            self.namespace, self.name, self.uid
        ))
    }
}

/// A running pod; removed (cleanly, as the kubelet does) on drop.
pub struct Pod {
    pub spec: PodSpec,
    pub sandbox_id: String,
    /// (container name, container id)
    pub containers: Vec<(String, String)>,
    sandbox_config: cri::PodSandboxConfig,
    cri: Arc<Cri>,
    pod_dir: PathBuf,
    links: Vec<PathBuf>,
    created_host_dirs: Vec<PathBuf>,
    removed: bool,
}

/// The v1 hierarchies' mount points (cpu, cpuacct, memory, pids, ...).
fn cgroup_v1_mounts() -> Vec<(PathBuf, Vec<String>)> {
    cgroup_mounts(&["cgroup"])
}

/// Every hierarchy runc makes a container's cgroup in: the v1 ones, and on a hybrid
/// host the unified (v2) one beside them, where runc leaves the pod's directory
/// behind when it removes the container's.
pub fn pod_cgroup_mounts() -> Vec<PathBuf> {
    cgroup_mounts(&["cgroup", "cgroup2"])
        .into_iter()
        .map(|(mount, _)| mount)
        .collect()
}

/// (mount, the pod's directory under it) for each hierarchy where `rel` exists.
fn pod_cgroups(rel: &str) -> Vec<(PathBuf, PathBuf)> {
    let rel = rel.trim_start_matches('/');
    pod_cgroup_mounts()
        .into_iter()
        .map(|mount| {
            let pod = mount.join(rel);
            (mount, pod)
        })
        .filter(|(_, pod)| pod.exists())
        .collect()
}

/// Mount points of the given filesystem types, with their super options.
fn cgroup_mounts(types: &[&str]) -> Vec<(PathBuf, Vec<String>)> {
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap_or_default()
        .lines()
        .filter_map(|line| {
            let (left, right) = line.split_once(" - ")?;
            let mut r = right.split(' ');
            if !types.contains(&r.next()?) {
                return None;
            }
            let opts: Vec<String> = r.nth(1)?.split(',').map(str::to_string).collect();
            Some((PathBuf::from(left.split(' ').nth(4)?), opts))
        })
        .collect()
}

fn mount_of(controller: &str) -> Option<PathBuf> {
    cgroup_v1_mounts()
        .into_iter()
        .find(|(_, opts)| opts.iter().any(|o| o == controller))
        .map(|(p, _)| p)
}

/// Kubernetes' milliCPU to cpu.shares (min 2), and to a CFS quota per 100 ms period.
fn shares(milli: i64) -> i64 {
    (milli * 1024 / 1000).max(2)
}
fn quota(milli: i64) -> i64 {
    (milli * 100_000 / 1000).max(1000)
}

const MASKED_PATHS: &[&str] = &[
    "/proc/asound",
    "/proc/acpi",
    "/proc/kcore",
    "/proc/keys",
    "/proc/latency_stats",
    "/proc/timer_list",
    "/proc/timer_stats",
    "/proc/sched_debug",
    "/proc/scsi",
    "/sys/firmware",
    "/sys/devices/virtual/powercap",
];
const READONLY_PATHS: &[&str] = &[
    "/proc/bus",
    "/proc/fs",
    "/proc/irq",
    "/proc/sys",
    "/proc/sysrq-trigger",
];

pub fn run_pod(node: &Node, spec: PodSpec) -> Result<Pod> {
    let cri = node.cri().clone();
    let pod_dir = node.kubelet_dir.join("pods").join(&spec.uid);
    let mut pod = Pod {
        sandbox_config: cri::PodSandboxConfig::default(),
        sandbox_id: String::new(),
        containers: Vec::new(),
        cri,
        pod_dir,
        links: Vec::new(),
        created_host_dirs: Vec::new(),
        removed: false,
        spec,
    };
    pod.create_pod_cgroup()?;
    std::fs::create_dir_all(pod.spec.log_dir())?;
    std::fs::create_dir_all(&pod.pod_dir)?;
    pod.sandbox_config = pod.sandbox_config(&node.name);
    pod.sandbox_id = pod
        .cri
        .run_pod_sandbox(&pod.sandbox_config)
        .with_context(|| format!("RunPodSandbox {}/{}", pod.spec.namespace, pod.spec.name))?;
    for c in pod.spec.containers.clone() {
        pod.start_container(&c)?;
    }
    Ok(pod)
}

impl Pod {
    /// What the kubelet's pod container manager does before the sandbox: the pod
    /// cgroup in the v1 controllers it limits, with the pod's summed limits.
    fn create_pod_cgroup(&mut self) -> Result<()> {
        let rel = self.spec.cgroup_parent();
        let cs = &self.spec.containers;
        for controller in ["cpu", "cpuacct", "memory", "pids"] {
            let Some(mount) = mount_of(controller) else {
                continue;
            };
            let dir = mount.join(rel.trim_start_matches('/'));
            std::fs::create_dir_all(&dir).with_context(|| format!("mkdir {}", dir.display()))?;
            if controller == "cpu" {
                let req: i64 = cs.iter().map(ContainerSpec::cpu_request).sum();
                write(&dir.join("cpu.shares"), shares(req))?;
                if cs.iter().all(|c| c.cpu_limit_milli > 0) {
                    write(&dir.join("cpu.cfs_period_us"), 100_000)?;
                    write(
                        &dir.join("cpu.cfs_quota_us"),
                        cs.iter().map(|c| quota(c.cpu_limit_milli)).sum::<i64>(),
                    )?;
                }
            }
            if controller == "memory" && cs.iter().all(|c| c.memory_limit > 0) {
                write(
                    &dir.join("memory.limit_in_bytes"),
                    cs.iter().map(|c| c.memory_limit).sum::<i64>(),
                )?;
            }
        }
        Ok(())
    }

    fn sandbox_config(&self, owner: &str) -> cri::PodSandboxConfig {
        let s = &self.spec;
        let labels: HashMap<String, String> = [
            ("io.kubernetes.pod.name", s.name.as_str()),
            ("io.kubernetes.pod.namespace", s.namespace.as_str()),
            ("io.kubernetes.pod.uid", s.uid.as_str()),
            (OWNER_LABEL, owner),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        cri::PodSandboxConfig {
            metadata: Some(cri::PodSandboxMetadata {
                name: s.name.clone(),
                uid: s.uid.clone(),
                namespace: s.namespace.clone(),
                attempt: 0,
            }),
            hostname: if s.host_network {
                String::new()
            } else {
                s.name.clone()
            },
            log_directory: s.log_dir().to_string_lossy().into_owned(),
            // ClusterFirst: the cluster DNS service and the search path of the namespace.
            dns_config: Some(cri::DnsConfig {
                servers: vec!["10.96.0.10".into()],
                searches: vec![
                    format!("{}.svc.cluster.local", s.namespace),
                    "svc.cluster.local".into(),
                    "cluster.local".into(),
                ],
                options: vec!["ndots:5".into()],
            }),
            port_mappings: s
                .containers
                .iter()
                .flat_map(|c| c.ports.iter())
                .map(|p| cri::PortMapping {
                    protocol: cri::PROTOCOL_TCP,
                    container_port: *p,
                    // hostNetwork pods map each port to itself.
                    host_port: if s.host_network { *p } else { 0 },
                })
                .collect(),
            labels,
            annotations: HashMap::from([(
                "kubernetes.io/config.source".to_string(),
                "api".to_string(),
            )]),
            linux: Some(cri::LinuxPodSandboxConfig {
                cgroup_parent: s.cgroup_parent(),
                security_context: Some(cri::LinuxSandboxSecurityContext {
                    namespace_options: Some(self.namespaces()),
                    seccomp: Some(cri::SecurityProfile {
                        profile_type: cri::PROFILE_UNCONFINED,
                    }),
                    ..Default::default()
                }),
            }),
        }
    }

    fn namespaces(&self) -> cri::NamespaceOption {
        cri::NamespaceOption {
            network: if self.spec.host_network {
                cri::NS_NODE
            } else {
                cri::NS_POD
            },
            pid: if self.spec.host_pid {
                cri::NS_NODE
            } else {
                cri::NS_CONTAINER
            },
            ipc: cri::NS_POD,
        }
    }

    fn start_container(&mut self, c: &ContainerSpec) -> Result<()> {
        let log_rel = format!("{}/0.log", c.name);
        std::fs::create_dir_all(self.spec.log_dir().join(&c.name))?;
        // The files the kubelet mounts into every container.
        let cdir = self.pod_dir.join("containers").join(&c.name);
        std::fs::create_dir_all(&cdir)?;
        let termination = cdir.join("termination-log");
        std::fs::write(&termination, "")?;
        let hosts = self.pod_dir.join("etc-hosts");
        if self.spec.host_network {
            std::fs::copy("/etc/hosts", &hosts)?;
        } else {
            std::fs::write(&hosts, "127.0.0.1\tlocalhost\n::1\tlocalhost\n")?;
        }
        let mut mounts = Vec::new();
        for m in &c.mounts {
            let hp = self
                .spec
                .volumes
                .get(&m.volume)
                .with_context(|| format!("volume {} of {}", m.volume, c.name))?
                .clone();
            let path = Path::new(&hp.path);
            match hp.kind.as_str() {
                "DirectoryOrCreate" if !path.exists() => {
                    std::fs::create_dir_all(path)?;
                    self.created_host_dirs.push(path.to_path_buf());
                }
                "Directory" | "DirectoryOrCreate" => {
                    anyhow::ensure!(path.is_dir(), "hostPath {} is not a directory", hp.path)
                }
                _ => {}
            }
            mounts.push(cri::Mount {
                container_path: m.mount_path.clone(),
                host_path: hp.path.clone(),
                readonly: m.read_only,
                propagation: m.propagation,
            });
        }
        mounts.push(cri::Mount {
            container_path: "/etc/hosts".into(),
            host_path: hosts.to_string_lossy().into_owned(),
            ..Default::default()
        });
        mounts.push(cri::Mount {
            container_path: "/dev/termination-log".into(),
            host_path: termination.to_string_lossy().into_owned(),
            ..Default::default()
        });
        let qos = self.spec.qos();
        let (cpu_req, mem_req) = (c.cpu_request(), c.memory_request());
        // The kubelet's OOM score: critical and guaranteed pods -997, best effort
        // 1000, burstable by their memory request's share of the node (2..=999).
        // containerd raises it to its own (restrict_oom_score_adj).
        let oom_score_adj = if self.spec.critical || qos == Qos::Guaranteed {
            -997
        } else if qos == Qos::BestEffort {
            1000
        } else {
            let total = memtotal();
            (1000 - 1000 * mem_req / total.max(1)).clamp(2, 999)
        };
        let sec = &c.security;
        let config = cri::ContainerConfig {
            metadata: Some(cri::ContainerMetadata {
                name: c.name.clone(),
                attempt: 0,
            }),
            image: Some(cri::ImageSpec {
                image: c.image.clone(),
            }),
            command: c.command.clone(),
            args: c.args.clone(),
            working_dir: String::new(),
            envs: c
                .env
                .iter()
                .map(|(k, v)| cri::KeyValue {
                    key: k.clone(),
                    value: v.clone(),
                })
                .collect(),
            mounts,
            labels: HashMap::from([
                ("io.kubernetes.container.name".into(), c.name.clone()),
                ("io.kubernetes.pod.name".into(), self.spec.name.clone()),
                (
                    "io.kubernetes.pod.namespace".into(),
                    self.spec.namespace.clone(),
                ),
                ("io.kubernetes.pod.uid".into(), self.spec.uid.clone()),
            ]),
            annotations: HashMap::from([
                ("io.kubernetes.container.restartCount".into(), "0".into()),
                (
                    "io.kubernetes.container.terminationMessagePath".into(),
                    "/dev/termination-log".into(),
                ),
            ]),
            log_path: log_rel.clone(),
            linux: Some(cri::LinuxContainerConfig {
                resources: Some(cri::LinuxContainerResources {
                    cpu_period: if c.cpu_limit_milli > 0 { 100_000 } else { 0 },
                    cpu_quota: if c.cpu_limit_milli > 0 {
                        quota(c.cpu_limit_milli)
                    } else {
                        0
                    },
                    cpu_shares: shares(cpu_req),
                    memory_limit_in_bytes: c.memory_limit,
                    oom_score_adj,
                }),
                security_context: Some(cri::LinuxContainerSecurityContext {
                    capabilities: Some(cri::Capability {
                        add_capabilities: sec.add.clone(),
                        drop_capabilities: sec.drop.clone(),
                    }),
                    privileged: sec.privileged,
                    namespace_options: Some(self.namespaces()),
                    run_as_user: sec.run_as_user.map(|value| cri::Int64Value { value }),
                    run_as_group: sec.run_as_group.map(|value| cri::Int64Value { value }),
                    readonly_rootfs: sec.read_only_root,
                    no_new_privs: !sec.allow_privilege_escalation,
                    masked_paths: MASKED_PATHS.iter().map(|s| s.to_string()).collect(),
                    readonly_paths: READONLY_PATHS.iter().map(|s| s.to_string()).collect(),
                    seccomp: Some(cri::SecurityProfile {
                        profile_type: sec.seccomp.unwrap_or(cri::PROFILE_UNCONFINED),
                    }),
                    apparmor: sec
                        .apparmor
                        .map(|profile_type| cri::SecurityProfile { profile_type }),
                }),
            }),
        };
        let id = self
            .cri
            .create_container(&self.sandbox_id, &config, &self.sandbox_config)
            .with_context(|| format!("CreateContainer {}", c.name))?;
        self.containers.push((c.name.clone(), id.clone()));
        let link = PathBuf::from(format!(
            "/var/log/containers/{}_{}_{}-{}.log",
            self.spec.name, self.spec.namespace, c.name, id
        ));
        std::os::unix::fs::symlink(self.spec.log_dir().join(&log_rel), &link)
            .with_context(|| format!("symlink {}", link.display()))?;
        self.links.push(link);
        self.cri
            .start_container(&id)
            .with_context(|| format!("StartContainer {}", c.name))?;
        Ok(())
    }

    pub fn container_id(&self, name: &str) -> &str {
        &self
            .containers
            .iter()
            .find(|(n, _)| n == name)
            .unwrap_or_else(|| panic!("no container {name}"))
            .1
    }

    /// The sandbox's network namespace pin, from containerd's verbose status.
    pub fn netns_path(&self) -> Result<String> {
        let info = self.sandbox_info()?;
        info["runtimeSpec"]["linux"]["namespaces"]
            .as_array()
            .and_then(|ns| {
                ns.iter()
                    .find(|n| n["type"] == "network")
                    .and_then(|n| n["path"].as_str())
            })
            .map(str::to_string)
            .context("no network namespace path in the sandbox's status")
    }

    pub fn ip(&self) -> Result<String> {
        Ok(self
            .cri
            .pod_sandbox_status(&self.sandbox_id)?
            .status
            .and_then(|s| s.network)
            .map(|n| n.ip)
            .unwrap_or_default())
    }

    fn sandbox_info(&self) -> Result<serde_json::Value> {
        let status = self.cri.pod_sandbox_status(&self.sandbox_id)?;
        let info = status.info.get("info").context("no verbose info")?;
        Ok(serde_json::from_str(info)?)
    }

    /// The pids of the sandbox's pause process and of each container's process.
    pub fn pids(&self) -> Result<Vec<i32>> {
        let mut pids = Vec::new();
        for (_, id) in &self.containers {
            let st = self.cri.container_status(id)?;
            if let Some(info) = st.info.get("info") {
                let v: serde_json::Value = serde_json::from_str(info)?;
                if let Some(pid) = v["pid"].as_i64().filter(|p| *p > 0) {
                    pids.push(pid as i32);
                }
            }
        }
        if let Some(pid) = self.sandbox_info()?["pid"].as_i64().filter(|p| *p > 0) {
            pids.push(pid as i32);
        }
        Ok(pids)
    }

    /// Every process of the pod dies at once, and no kubelet reacts: no
    /// StopPodSandbox, so no CNI DEL; the namespace pin, the veth and the IP stay.
    pub fn kill_processes(&self) -> Result<()> {
        let pids = self.pids()?;
        anyhow::ensure!(!pids.is_empty(), "no processes to kill");
        for pid in &pids {
            // SAFETY: kill(2) on a pid the runtime reports for our pod.
            unsafe { libc::kill(*pid, libc::SIGKILL) };
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        while pids
            .iter()
            .any(|p| Path::new(&format!("/proc/{p}")).exists())
        {
            anyhow::ensure!(Instant::now() < deadline, "pids {pids:?} still alive");
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(())
    }

    /// The kubelet's clean removal: stop the containers (after the pod's grace period)
    /// and the sandbox (CNI DEL), remove them, then the log links and directory and
    /// the pod cgroup.
    pub fn remove(&mut self) -> Result<()> {
        if self.removed {
            return Ok(());
        }
        self.removed = true;
        let mut first_error = None;
        let mut note = |r: Result<()>| {
            if let Err(e) = r {
                first_error.get_or_insert(e);
            }
        };
        for (_, id) in &self.containers {
            note(
                self.cri
                    .stop_container(id, self.spec.grace_seconds.unwrap_or(30)),
            );
        }
        if !self.sandbox_id.is_empty() {
            note(self.cri.stop_pod_sandbox(&self.sandbox_id));
        }
        for (_, id) in &self.containers {
            note(self.cri.remove_container(id));
        }
        if !self.sandbox_id.is_empty() {
            note(self.cri.remove_pod_sandbox(&self.sandbox_id));
        }
        for link in &self.links {
            let _ = std::fs::remove_file(link);
        }
        let _ = std::fs::remove_dir_all(self.spec.log_dir());
        let _ = std::fs::remove_dir_all(&self.pod_dir);
        note(remove_pod_cgroups(&self.spec.cgroup_parent()));
        for dir in self.created_host_dirs.iter().rev() {
            // Only if nothing was left in it (a probe file would be a bug to report).
            if let Err(e) = std::fs::remove_dir(dir) {
                note(Err(anyhow::anyhow!("rmdir {}: {e}", dir.display())));
            }
        }
        first_error.map_or(Ok(()), Err)
    }
}

impl Drop for Pod {
    fn drop(&mut self) {
        if let Err(e) = self.remove() {
            eprintln!(
                "cleanup of pod {}/{}: {e:#}",
                self.spec.namespace, self.spec.name
            );
        }
    }
}

/// Removes `/kubepods/<qos>/pod<uid>` and what runc left under it in every
/// hierarchy, deepest first, and the QoS parents once nothing else is in them.
fn remove_pod_cgroups(rel: &str) -> Result<()> {
    for (mount, pod) in pod_cgroups(rel) {
        let mut dirs = Vec::new();
        collect_dirs(&pod, &mut dirs);
        dirs.sort_by_key(|d| std::cmp::Reverse(d.components().count()));
        for d in dirs {
            // A killed task leaves its cgroup a moment after it is reaped.
            let deadline = Instant::now() + Duration::from_secs(10);
            loop {
                match std::fs::remove_dir(&d) {
                    Ok(()) => break,
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => break,
                    Err(e) if Instant::now() > deadline => {
                        return Err(anyhow::anyhow!("rmdir {}: {e}", d.display()))
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(20)),
                }
            }
        }
        // Shared with other pods and other tests: removed only when empty.
        let mut parent = pod.parent().map(Path::to_path_buf);
        while let Some(p) = parent {
            if p == mount || std::fs::remove_dir(&p).is_err() {
                break;
            }
            parent = p.parent().map(Path::to_path_buf);
        }
    }
    Ok(())
}

fn collect_dirs(dir: &Path, out: &mut Vec<PathBuf>) {
    out.push(dir.to_path_buf());
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                collect_dirs(&e.path(), out);
            }
        }
    }
}

fn write(path: &Path, value: i64) -> Result<()> {
    std::fs::write(path, value.to_string()).with_context(|| format!("write {}", path.display()))
}

fn memtotal() -> i64 {
    std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines()
                .find_map(|l| l.strip_prefix("MemTotal:"))
                .and_then(|v| v.split_whitespace().next()?.parse::<i64>().ok())
        })
        .map_or(1 << 30, |kb| kb * 1024)
}
