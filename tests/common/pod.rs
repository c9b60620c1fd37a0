//! What the kubelet leaves on a node for a running pod, as nodediag reads it: a
//! process in the pod's network namespace and in its container cgroup, and the log
//! directories that name the pod (namespace `team-a`, container `app`).

use super::wait_for;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

pub struct PodTraces<'a> {
    pub netns: &'a str,
    pub cgroup: &'a Path,
    pub rootfs: &'a Path,
    pub name: &'a str,
    pub uid: &'a str,
    pub container_id: &'a str,
}

impl PodTraces<'_> {
    /// Starts the pod's process into `slot` (whose owner kills it on drop, also when
    /// this fails half-way), then the cgroup and the log directories.
    pub fn start(&self, slot: &mut Option<Child>) {
        let netns = self.netns;
        let child = Command::new("ip")
            .args(["netns", "exec", netns, "sleep", "600"])
            .stdin(Stdio::null())
            .spawn()
            .expect("start the pod's process");
        let child_pid = child.id();
        *slot = Some(child);
        // `ip netns exec` enters the namespace then execs sleep in the same process.
        wait_for(
            "the pod's process to enter its namespace",
            Duration::from_secs(10),
            || {
                use std::os::unix::fs::MetadataExt;
                let mine = std::fs::read_link(format!("/proc/{child_pid}/ns/net")).ok()?;
                let pinned = std::fs::metadata(format!("/run/netns/{netns}")).ok()?;
                (mine.to_string_lossy() == format!("net:[{}]", pinned.ino())).then_some(())
            },
        );
        std::fs::create_dir_all(self.cgroup).expect("make the pod cgroup");
        std::fs::write(self.cgroup.join("cgroup.procs"), child_pid.to_string())
            .expect("move the process into the pod cgroup");
        let logs = self.rootfs.join("var/log");
        let (name, uid, id) = (self.name, self.uid, self.container_id);
        std::fs::create_dir_all(logs.join(format!("pods/team-a_{name}_{uid}/app"))).unwrap();
        std::fs::create_dir_all(logs.join("containers")).unwrap();
        std::fs::write(
            logs.join(format!("containers/{name}_team-a_app-{id}.log")),
            "",
        )
        .unwrap();
    }
}
