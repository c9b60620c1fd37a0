//! A container-runtime node of the test's own: a containerd with its own root, state,
//! socket, runc root and CNI configuration (bridge + host-local on a small range),
//! images built from busybox-static, and everything removed again on drop, by PID and
//! by name. Global state the node needs (a shared `/` for HostToContainer mounts,
//! `net.ipv4.ip_forward` that the bridge plugin turns on) is restored on drop.

use super::cri::Cri;
use crate::common::{wait_for, CrossProcessLock};
use anyhow::{bail, Context, Result};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The image every sandbox runs, named in containerd's CRI configuration.
pub const PAUSE_IMAGE: &str = "docker.io/nodediag-test/pause:1";
/// busybox with the applets the workloads use.
pub const WORKLOAD_IMAGE: &str = "docker.io/nodediag-test/busybox:1";
const APPLETS: &[&str] = &["sh", "sleep", "head", "tr", "cat", "ls", "true"];
/// Addresses host-local may hand out: the range the IPAM scenario fills.
pub const IPAM_CAPACITY: u32 = 8;

pub struct Node {
    /// Prefix of every name this node gives (bridge, CNI network, pod namespaces).
    pub name: String,
    pub dir: PathBuf,
    pub socket: PathBuf,
    pub cni_conf_dir: PathBuf,
    pub ipam_dir: PathBuf,
    pub bridge: String,
    pub subnet: String,
    /// Per-pod files the kubelet keeps (etc-hosts, termination-log).
    pub kubelet_dir: PathBuf,
    cri: Option<Arc<Cri>>,
    containerd: Option<Child>,
    restore: Vec<Restore>,
    _lock: CrossProcessLock,
    _dir: tempfile::TempDir,
}

/// Global state changed for the node, undone in reverse order on drop.
enum Restore {
    Sysctl(&'static str, String),
    MakePrivate(&'static str),
    RemoveDirIfEmpty(PathBuf),
}

pub fn skip_reason() -> Option<String> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Some("not root".into());
    }
    for (tool, package) in [
        ("containerd", "containerd"),
        ("ctr", "containerd"),
        ("runc", "runc"),
        ("ip", "iproute2"),
        ("kubectl", "kubectl"),
        ("python3", "python3"),
    ] {
        if which(tool).is_none() {
            return Some(format!("{tool} is not installed ({package})"));
        }
    }
    for path in [
        "/usr/lib/cni/bridge",
        "/usr/lib/cni/host-local",
        "/usr/lib/cni/loopback",
    ] {
        if !Path::new(path).exists() {
            return Some(format!("{path} is missing (containernetworking-plugins)"));
        }
    }
    if busybox().is_none() {
        return Some("no static busybox (busybox-static)".into());
    }
    if !Path::new("/sys/fs/cgroup/cpu/cpu.cfs_quota_us").exists() {
        return Some("no cgroup v1 cpu controller with CFS bandwidth".into());
    }
    None
}

fn which(tool: &str) -> Option<PathBuf> {
    std::env::var_os("PATH")?
        .to_str()?
        .split(':')
        .chain(["/usr/sbin", "/sbin"])
        .map(|d| Path::new(d).join(tool))
        .find(|p| p.is_file())
}

/// busybox-static installs /bin/busybox; a dynamic busybox would not run in an
/// image without libraries.
fn busybox() -> Option<PathBuf> {
    let path = which("busybox")?;
    let out = Command::new("ldd").arg(&path).output().ok()?;
    let text =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    (text.contains("not a dynamic executable") || text.contains("statically linked"))
        .then_some(path)
}

pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Runs a command, failing with its stderr.
pub fn run(cmd: &mut Command) -> Result<String> {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("run {cmd:?}"))?;
    if !out.status.success() {
        bail!(
            "{cmd:?}: {}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

impl Node {
    pub fn cri(&self) -> &Arc<Cri> {
        self.cri.as_ref().expect("containerd is running")
    }

    pub fn start() -> Result<Node> {
        // One real node at a time on a machine: the shared `/` and ip_forward are
        // global, and two runs restoring them would undo each other.
        let lock = CrossProcessLock::acquire("realnode");
        // With the lock held no other run is alive: whatever a killed one left can go.
        super::leftovers::sweep();
        let pid = std::process::id();
        let name = format!("ndrn{pid}");
        let tmp = tempfile::Builder::new()
            .prefix(&format!("{name}-"))
            .tempdir()
            .context("make the node's directory")?;
        let dir = tmp.path().to_path_buf();
        let third = free_subnet_octet(pid)?;
        let subnet = format!("10.215.{third}.0/24");
        let mut node = Node {
            bridge: name.clone(),
            socket: dir.join("containerd.sock"),
            cni_conf_dir: dir.join("cni/net.d"),
            ipam_dir: dir.join("cni/networks"),
            kubelet_dir: dir.join("kubelet"),
            name,
            subnet,
            dir,
            cri: None,
            containerd: None,
            restore: Vec::new(),
            _lock: lock,
            _dir: tmp,
        };
        node.write_configs(third)?;
        node.prepare_host()?;
        node.start_containerd()?;
        node.import_images()?;
        Ok(node)
    }

    fn write_configs(&self, third: u32) -> Result<()> {
        let d = &self.dir;
        std::fs::create_dir_all(&self.cni_conf_dir)?;
        std::fs::create_dir_all(&self.ipam_dir)?;
        std::fs::create_dir_all(&self.kubelet_dir)?;
        // Everything containerd and runc keep goes under the node's directory; the
        // CRI plugin's sandbox image is ours, so nothing is ever pulled.
        let config = format!(
            r#"version = 2
root = "{d}/root"
state = "{d}/state"
disabled_plugins = ["io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.zfs", "io.containerd.snapshotter.v1.devmapper"]

[grpc]
  address = "{sock}"

[ttrpc]
  address = "{sock}.ttrpc"

[plugins."io.containerd.internal.v1.opt"]
  path = "{d}/opt"

[plugins."io.containerd.runtime.v1.linux"]
  runtime_root = "{d}/runc-v1"

[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "{PAUSE_IMAGE}"
  # runc cannot lower oom_score_adj below its caller's without CAP_SYS_RESOURCE,
  # which this machine's sandbox lacks: clamp instead of failing the container.
  restrict_oom_score_adj = true
  disable_tcp_service = true
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "{conf}"
    max_conf_num = 1
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        Root = "{d}/runc"
        SystemdCgroup = false
"#,
            d = d.display(),
            sock = self.socket.display(),
            conf = self.cni_conf_dir.display(),
        );
        std::fs::write(d.join("containerd.toml"), config)?;
        // The bridge plugin as a kubelet node's CNI would configure it, on a range of
        // IPAM_CAPACITY addresses. No ipMasq or portmap: they need iptables rules.
        let cni = serde_json::json!({
            "cniVersion": "0.4.0",
            "name": self.name,
            "plugins": [{
                "type": "bridge",
                "bridge": self.bridge,
                "isGateway": true,
                // A node's CNI sets the pod MTU to the uplink's (no overlay here).
                "mtu": uplink_mtu()?,
                "ipMasq": false,
                "hairpinMode": false,
                "ipam": {
                    "type": "host-local",
                    "dataDir": self.ipam_dir,
                    "ranges": [[{
                        "subnet": self.subnet,
                        "rangeStart": format!("10.215.{third}.10"),
                        "rangeEnd": format!("10.215.{third}.{}", 9 + IPAM_CAPACITY),
                        "gateway": format!("10.215.{third}.1"),
                    }]],
                },
            }],
        });
        std::fs::write(
            self.cni_conf_dir.join("10-nodediag-test.conflist"),
            serde_json::to_string_pretty(&cni)?,
        )?;
        Ok(())
    }

    /// What a kubelet node has and this machine may not: a shared `/` (systemd makes
    /// it so; HostToContainer mounts need it) and the kubelet's log directories.
    fn prepare_host(&mut self) -> Result<()> {
        let propagation = run(Command::new("findmnt").args(["-n", "-o", "PROPAGATION", "/"]))?;
        if propagation.trim() == "private" {
            run(Command::new("mount").args(["--make-shared", "/"]))?;
            self.restore.push(Restore::MakePrivate("/"));
        }
        // The bridge plugin turns forwarding on for a gateway bridge, as a node needs.
        let forward = std::fs::read_to_string("/proc/sys/net/ipv4/ip_forward")?;
        self.restore.push(Restore::Sysctl(
            "/proc/sys/net/ipv4/ip_forward",
            forward.trim().to_string(),
        ));
        // The last two: containerd's CNI library caches results there, always.
        for dir in [
            "/var/log/pods",
            "/var/log/containers",
            "/var/lib/cni",
            "/var/lib/cni/results",
        ] {
            if !Path::new(dir).exists() {
                std::fs::create_dir_all(dir)?;
                self.restore.push(Restore::RemoveDirIfEmpty(dir.into()));
            }
        }
        self.journal_global_state()?;
        Ok(())
    }

    /// What drop will restore, written where a later run's sweep finds it if this
    /// one is killed before its drop runs: else that run would take a shared `/` and
    /// forwarding on for the machine's own settings.
    fn journal_global_state(&self) -> Result<()> {
        let lines: Vec<String> = self
            .restore
            .iter()
            .filter_map(|r| match r {
                Restore::Sysctl(path, value) => Some(format!("sysctl {path} {value}")),
                Restore::MakePrivate(path) => Some(format!("make-private {path}")),
                Restore::RemoveDirIfEmpty(_) => None,
            })
            .collect();
        std::fs::write(
            self.dir.join(super::leftovers::GLOBAL_STATE),
            lines.join("\n"),
        )?;
        Ok(())
    }

    fn start_containerd(&mut self) -> Result<()> {
        let log = std::fs::File::create(self.dir.join("containerd.log"))?;
        let child = Command::new("containerd")
            .arg("--config")
            .arg(self.dir.join("containerd.toml"))
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .context("start containerd")?;
        self.containerd = Some(child);
        let socket = self.socket.clone();
        wait_for("containerd's socket", Duration::from_secs(30), || {
            socket.exists().then_some(())
        });
        self.cri = Some(Arc::new(Cri::connect(&self.socket)?));
        let v = self.cri().version()?;
        eprintln!(
            "node {}: {} {} (CRI {}), {}",
            self.name,
            v.runtime_name,
            v.runtime_version,
            v.runtime_api_version,
            self.dir.display()
        );
        // NetworkReady once the CRI plugin has loaded our CNI configuration.
        let cri = self.cri().clone();
        let mut last;
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let conds = cri.conditions()?;
            if conds.iter().all(|c| c.status) && !conds.is_empty() {
                break;
            }
            last = format!("{conds:?}");
            if Instant::now() > deadline {
                bail!("containerd not ready: {last}");
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        Ok(())
    }

    /// Builds the pause and workload images from busybox-static and imports them.
    fn import_images(&self) -> Result<()> {
        let busybox = busybox().context("busybox-static")?;
        let rootfs = self.dir.join("images/busybox");
        std::fs::create_dir_all(rootfs.join("bin"))?;
        std::fs::copy(&busybox, rootfs.join("bin/busybox"))?;
        for applet in APPLETS {
            std::os::unix::fs::symlink("busybox", rootfs.join("bin").join(applet))?;
        }
        for (image, config) in [
            // The pause container only holds the sandbox's namespaces; it never exits.
            (
                PAUSE_IMAGE,
                r#"{"Entrypoint": ["/bin/busybox", "sleep", "2147483647"]}"#,
            ),
            (
                WORKLOAD_IMAGE,
                r#"{"Cmd": ["/bin/sh"], "Env": ["PATH=/bin"]}"#,
            ),
        ] {
            let archive = self.dir.join(format!(
                "images/{}.tar",
                image.rsplit('/').next().unwrap().replace(':', "-")
            ));
            run(Command::new(repo_root().join("deploy/oci-archive.sh"))
                .arg(&rootfs)
                .arg(image)
                .arg(config)
                .arg(&archive))?;
            self.import(&archive)?;
            anyhow::ensure!(
                self.cri().image_id(image)?.is_some(),
                "the CRI does not see {image} after the import"
            );
        }
        Ok(())
    }

    /// `ctr images import` into the namespace the CRI plugin uses.
    pub fn import(&self, archive: &Path) -> Result<()> {
        run(Command::new("ctr")
            .arg("--address")
            .arg(&self.socket)
            .args(["--namespace", "k8s.io", "images", "import"])
            .arg(archive))?;
        Ok(())
    }

    /// Processes of this node's containerd shims: `containerd-shim-runc-v2 ... -address SOCKET`.
    fn shim_pids(&self) -> Vec<i32> {
        let sock = self.socket.to_string_lossy().to_string();
        let Ok(entries) = std::fs::read_dir("/proc") else {
            return Vec::new();
        };
        entries
            .flatten()
            .filter_map(|e| {
                let pid: i32 = e.file_name().to_str()?.parse().ok()?;
                let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
                let args: Vec<String> = cmdline
                    .split(|b| *b == 0)
                    .map(|a| String::from_utf8_lossy(a).into_owned())
                    .collect();
                (args.first()?.contains("containerd-shim") && args.contains(&sock)).then_some(pid)
            })
            .collect()
    }

    fn stop(&mut self) {
        if let Some(mut child) = self.containerd.take() {
            // SAFETY: kill(2) on the pid of our own unreaped child.
            unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGTERM) };
            let deadline = Instant::now() + Duration::from_secs(10);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = child.try_wait() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        // Shims outlive containerd by design; ours must not outlive the test.
        for pid in self.shim_pids() {
            eprintln!("cleanup: killing leftover shim {pid}");
            // SAFETY: kill(2) on a pid whose command line names our socket.
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
        // Mounts under the node's directory (rootfs overlays, shm) go before the
        // directory does, deepest first.
        let dir = self.dir.to_string_lossy().to_string();
        let mut mounts: Vec<String> = std::fs::read_to_string("/proc/self/mountinfo")
            .unwrap_or_default()
            .lines()
            .filter_map(|l| l.split(' ').nth(4).map(str::to_string))
            .filter(|m| m.starts_with(&dir))
            .collect();
        mounts.sort_by_key(|m| std::cmp::Reverse(m.len()));
        for m in mounts {
            let _ = Command::new("umount").args(["-l", &m]).status();
        }
        let _ = Command::new("ip")
            .args(["link", "delete", &self.bridge])
            .stderr(Stdio::null())
            .status();
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        // Sandboxes a failed scenario left: the kubelet would remove them too.
        if let Some(cri) = &self.cri {
            for sb in cri
                .list_pod_sandboxes(Default::default())
                .unwrap_or_default()
            {
                let _ = cri.stop_pod_sandbox(&sb.id);
                let _ = cri.remove_pod_sandbox(&sb.id);
            }
        }
        self.stop();
        for r in self.restore.drain(..).rev() {
            let outcome = match &r {
                Restore::Sysctl(path, value) => std::fs::write(path, value).map(|_| ()),
                Restore::MakePrivate(path) => Command::new("mount")
                    .args(["--make-private", path])
                    .status()
                    .map(|_| ()),
                Restore::RemoveDirIfEmpty(dir) => match std::fs::remove_dir(dir) {
                    Err(e) if e.raw_os_error() == Some(libc::ENOTEMPTY) => Ok(()),
                    other => other,
                },
            };
            if let Err(e) = outcome {
                eprintln!("cleanup: restoring global state: {e}");
            }
        }
    }
}

/// The MTU of the default route's interface.
fn uplink_mtu() -> Result<u32> {
    let route = std::fs::read_to_string("/proc/net/route")?;
    let iface = route
        .lines()
        .skip(1)
        .find_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f.get(1) == Some(&"00000000") && f.get(7) == Some(&"00000000"))
                .then(|| f[0].to_string())
        })
        .context("no default route")?;
    Ok(
        std::fs::read_to_string(format!("/sys/class/net/{iface}/mtu"))?
            .trim()
            .parse()?,
    )
}

/// A third octet for 10.215.X.0/24 that no address or route of the host uses.
fn free_subnet_octet(pid: u32) -> Result<u32> {
    let used = run(Command::new("ip").args(["-4", "route", "show", "table", "all"]))?
        + &run(Command::new("ip").args(["-4", "addr"]))?;
    (0..256)
        .map(|i| (pid + i) % 256)
        .find(|x| !used.contains(&format!("10.215.{x}.")))
        .context("no free 10.215.X.0/24")
}
