//! The agent's image, built by `deploy/build-image.sh` and run on the node with the
//! container spec of the rendered DaemonSet: host network and PID namespaces, the
//! capability set, read-only root, no privilege escalation, RuntimeDefault seccomp,
//! the hostPath mounts with their propagation. Each collector must work there as on
//! the bare host, the pods must be named, `nodediag check` must keep the
//! node-problem-detector exit codes, and every capability must be needed.

use super::kubelet::{run_pod, ContainerSpec, Pod};
use super::node::{repo_root, run};
use super::{findings, named_veth, Api, Ctx, Remote, INTERVAL, SLACK};
use crate::common::wait_for;
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

pub fn daemonset_image_on_the_node(cx: &Ctx, named: &[Pod], fillers: &mut Vec<Pod>) {
    assert!(
        !named.is_empty(),
        "the pods of the first scenario are needed here"
    );
    let archive = cx.node.dir.join("nodediag-image.tar");
    let t = Instant::now();
    run(Command::new(repo_root().join("deploy/build-image.sh")).arg(&archive))
        .unwrap_or_else(|e| panic!("{e:#}"));
    eprintln!("image built in {:.1?}", t.elapsed());
    check_image_files(cx, &archive);
    cx.node.import(&archive).unwrap();

    let manifest = super::manifest::render().unwrap_or_else(|e| panic!("{e:#}"));
    let image = manifest.pod.containers[0].image.clone();
    assert!(
        cx.node.cri().image_id(&image).unwrap().is_some(),
        "{image}, the DaemonSet's image, is not the one imported"
    );
    let caps = manifest.capabilities.clone();
    let run_agent = |suffix: &str, without: Option<&str>| -> (Pod, Remote) {
        let mut spec = manifest.pod.clone();
        spec.name = format!("{}-{suffix}{}", spec.name, cx.pid);
        spec.uid = format!(
            "{:08x}-da05-4000-8000-{:012x}",
            cx.pid,
            cx.pods_made.get() + 1
        );
        cx.pods_made.set(cx.pods_made.get() + 1);
        let port = free_port();
        let c = &mut spec.containers[0];
        // Loopback and a free port: other runs share this host. The rest of the
        // arguments are the manifest's; the test's node adds its CNI directory.
        c.args.retain(|a| !a.starts_with("--listen"));
        c.args.extend([
            format!("--listen=127.0.0.1:{port}"),
            format!("--interval={}s", INTERVAL.as_secs()),
            format!("--path.cni-conf=/host{}", cx.node.cni_conf_dir.display()),
        ]);
        if let Some(cap) = without {
            c.security.add.retain(|a| a != cap);
        }
        let pod = run_pod(&cx.node, spec).unwrap_or_else(|e| panic!("{e:#}"));
        let remote = Remote {
            addr: format!("127.0.0.1:{port}"),
        };
        wait_for(
            "the agent container to be ready",
            Duration::from_secs(60),
            || {
                let status = cx
                    .node
                    .cri()
                    .container_status(&pod.containers[0].1)
                    .ok()?
                    .status?;
                assert_ne!(
                    status.state,
                    super::cri::CONTAINER_EXITED,
                    "the agent container exited: {status:?}"
                );
                std::net::TcpStream::connect(&remote.addr).ok()?;
                (remote.get("/readyz").0 == 200).then_some(())
            },
        );
        settle(&remote);
        (pod, remote)
    };

    let (mut agent_pod, agent) = run_agent("", None);
    let host = cx.agent.get_json("/api/v1/snapshot");
    let inside = agent.get_json("/api/v1/snapshot");
    for (name, c) in host["collectors"].as_object().unwrap() {
        let state = &inside["collectors"][name]["status"];
        assert_eq!(
            state["state"], "ok",
            "collector {name} in the container: {state}"
        );
        let extra: BTreeSet<String> = unavailable(&inside, name)
            .difference(&unavailable(&host, name))
            .cloned()
            .collect();
        assert!(
            extra.is_empty(),
            "{name} in the container lacks what the host run has: {extra:?}\n{}",
            c["sample"]["unavailable"]
        );
    }

    for pod in named {
        wait_for(
            "a pod named from inside the container",
            INTERVAL * 2 + SLACK,
            || named_veth(&agent, &cx.node, pod),
        );
    }
    // A pod started after the agent: its pin is a mount made on the host later,
    // seen only through HostToContainer propagation.
    drop(fillers.pop());
    let late = cx.run(cx.spec(
        &cx.ns_a,
        "late-0",
        vec![ContainerSpec::shell("app", "exec sleep 3600")],
    ));
    let started = Instant::now();
    cx.answer(
        "a pod started after the agent container, named",
        started,
        || named_veth(&agent, &cx.node, &late),
    );
    fillers.push(late);
    cx.answer("cni_ipam_exhausted from the container", started, || {
        findings(&agent, "cni_ipam_exhausted").into_iter().next()
    });

    // nodediag check inside the container, as node-problem-detector runs it.
    let cid = agent_pod.containers[0].1.clone();
    let check = |extra: &[&str]| -> (i32, String) {
        let conf = format!("--path.cni-conf=/host{}", cx.node.cni_conf_dir.display());
        let mut cmd = vec![
            "/nodediag",
            "check",
            "--path.rootfs=/host",
            "--path.procfs=/host/proc",
            "--path.sysfs=/host/sys",
            conf.as_str(),
            "--format=summary",
        ];
        cmd.extend_from_slice(extra);
        let r = cx.node.cri().exec_sync(&cid, &cmd, 120).unwrap();
        let out = String::from_utf8_lossy(&r.stdout).into_owned();
        eprintln!("check {extra:?}: exit {}: {}", r.exit_code, out.trim());
        (r.exit_code, out)
    };
    let (code, out) = check(&["--finding=cni_ipam_exhausted"]);
    assert_eq!(code, 1, "{out}");
    assert!(out.starts_with("CRITICAL: cni_ipam_exhausted"), "{out}");
    let (code, out) = check(&["--finding=conntrack_table_full"]);
    assert_eq!(code, 0, "{out}");
    let (code, out) = check(&["--path.procfs=/nonexistent"]);
    assert_eq!(code, 2, "{out}");

    // Every added capability, taken away in turn: what stops working is its reason.
    let full = view(&agent, cx, named);
    let agent_pid = agent_pod.pids().unwrap()[0];
    agent_pod.remove().unwrap_or_else(|e| panic!("{e:#}"));
    assert_no_probe_files(agent_pid);
    let mut unneeded = Vec::new();
    for cap in &caps {
        let (mut pod, without) = run_agent("no-cap-", Some(cap));
        let reduced = view(&without, cx, named);
        let pid = pod.pids().unwrap()[0];
        pod.remove().unwrap_or_else(|e| panic!("{e:#}"));
        assert_no_probe_files(pid);
        let lost: Vec<String> = full
            .iter()
            .filter(|(k, v)| reduced.get(*k) != Some(v))
            .map(|(k, v)| format!("{k}: {v} -> {}", reduced.get(k).map_or("-", |s| s.as_str())))
            .collect();
        eprintln!("without {cap}: {lost:#?}");
        if lost.is_empty() {
            unneeded.push(cap.clone());
        }
    }
    assert!(
        unneeded.is_empty(),
        "nothing needs {unneeded:?}: remove them from the DaemonSet"
    );
}

/// The image holds exactly what stage-rootfs.sh lays out for the binary (the files
/// the Dockerfile's final stage copies) and runs what the Dockerfile says.
fn check_image_files(cx: &Ctx, archive: &Path) {
    let dir = cx.node.dir.join("image-layout");
    std::fs::create_dir_all(&dir).unwrap();
    run(Command::new("tar")
        .arg("-xf")
        .arg(archive)
        .arg("-C")
        .arg(&dir))
    .unwrap();
    let blob = |digest: &str| {
        dir.join("blobs/sha256")
            .join(digest.trim_start_matches("sha256:"))
    };
    let read = |p: &Path| -> Value { serde_json::from_slice(&std::fs::read(p).unwrap()).unwrap() };
    let index = read(&dir.join("index.json"));
    let manifest = read(&blob(index["manifests"][0]["digest"].as_str().unwrap()));
    let config = read(&blob(manifest["config"]["digest"].as_str().unwrap()));
    let layer = blob(manifest["layers"][0]["digest"].as_str().unwrap());
    // Regular files only (`tar -tv` lines starting with "-"), without the "./" prefix.
    let files: BTreeSet<String> = run(Command::new("tar").arg("-tvf").arg(&layer))
        .unwrap()
        .lines()
        .filter(|l| l.starts_with('-'))
        .filter_map(|l| l.split_whitespace().last())
        .map(|p| p.trim_start_matches("./").to_string())
        .collect();
    // The binary build-image.sh shipped: deploy/build-release.sh says where it is
    // (static on glibc, so ldd lists nothing and the image holds the binary alone).
    // It was just built, so this only asks cargo.
    let bin = std::env::var("NODEDIAG_BIN").unwrap_or_else(|_| {
        let built = run(Command::new(repo_root().join("deploy/build-release.sh")).arg("--quiet"));
        built.unwrap_or_else(|e| panic!("{e:#}")).trim().to_string()
    });
    let ldd = run(Command::new("ldd").arg(&bin)).unwrap();
    let mut want: BTreeSet<String> = ldd
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            match f.as_slice() {
                [_, "=>", path, ..] if path.starts_with('/') => Some(path.to_string()),
                [path, ..] if path.starts_with('/') => Some(path.to_string()),
                _ => None,
            }
        })
        .map(|p| p.trim_start_matches('/').to_string())
        .collect();
    want.insert("nodediag".into());
    assert_eq!(files, want, "the image's files");
    let dockerfile = std::fs::read_to_string(repo_root().join("deploy/Dockerfile")).unwrap();
    let instruction = |name: &str| -> String {
        dockerfile
            .lines()
            .filter_map(|l| l.strip_prefix(&format!("{name} ")))
            .next_back()
            .unwrap_or_else(|| panic!("no {name} in the Dockerfile"))
            .trim()
            .to_string()
    };
    let run_config = &config["config"];
    let json = |v: &Value| serde_json::to_string(v).unwrap().replace(',', ", ");
    assert_eq!(json(&run_config["Entrypoint"]), instruction("ENTRYPOINT"));
    assert_eq!(json(&run_config["Cmd"]), instruction("CMD"));
    assert_eq!(run_config["User"], instruction("USER").as_str());
    assert!(
        run_config["ExposedPorts"]
            .get(format!("{}/tcp", instruction("EXPOSE")))
            .is_some(),
        "{config}"
    );
}

/// What a collector reports it could not read, by the name it gives it.
fn unavailable(snapshot: &Value, collector: &str) -> BTreeSet<String> {
    snapshot["collectors"][collector]["sample"]["unavailable"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|u| {
            u["what"]
                .as_str()
                .map_or_else(|| u.to_string(), str::to_string)
        })
        .collect()
}

/// Waits until every collector has sampled twice.
fn settle(agent: &dyn Api) {
    wait_for(
        "two samples of every collector",
        Duration::from_secs(30),
        || {
            let snap = agent.get_json("/api/v1/snapshot");
            snap["collectors"]
                .as_object()?
                .values()
                .all(|c| c["runs_total"].as_u64().unwrap_or(0) >= 2)
                .then_some(())
        },
    );
}

/// What the agent can see, as facts that a missing capability would change.
fn view(agent: &dyn Api, cx: &Ctx, named: &[Pod]) -> BTreeMap<String, String> {
    let snap = agent.get_json("/api/v1/snapshot");
    let mut v = BTreeMap::new();
    for (name, c) in snap["collectors"].as_object().unwrap() {
        v.insert(format!("{name}: state"), c["status"]["state"].to_string());
        for u in c["sample"]["unavailable"].as_array().into_iter().flatten() {
            v.insert(
                format!("{name}: unavailable {}", u["what"].as_str().unwrap_or("?")),
                u["hint"].as_str().unwrap_or("").chars().take(120).collect(),
            );
        }
    }
    let c = &snap["collectors"];
    v.insert(
        "conntrack: source".into(),
        c["conntrack"]["sample"]["stats_source"].to_string(),
    );
    v.insert(
        "kmsg: source".into(),
        c["kmsg"]["sample"]["source"].to_string(),
    );
    v.insert(
        "notrack: state".into(),
        snap["setup"]["notrack"]["state"].to_string(),
    );
    let ns = agent.get_json("/api/v1/netns");
    let pods_seen = named.iter().all(|p| {
        ns["namespaces"]
            .as_array()
            .unwrap()
            .iter()
            .any(|n| n["pod"]["pod_uid"] == p.spec.uid.as_str())
    });
    v.insert(
        "netns: every pod's namespace named".into(),
        pods_seen.to_string(),
    );
    let interfaces = named
        .iter()
        .all(|p| named_veth(agent, &cx.node, p).is_some());
    v.insert(
        "netns: every pod's veth and peer read".into(),
        interfaces.to_string(),
    );
    let ipam_read = c["netns"]["sample"]["ipam"]
        .as_array()
        .into_iter()
        .flatten()
        .any(|n| {
            n["name"] == cx.node.name.as_str() && n["allocated"] == super::node::IPAM_CAPACITY
        });
    v.insert(
        "netns: the node's IPAM reservations read".into(),
        ipam_read.to_string(),
    );
    let probes_ok = c["disk"]["sample"]["dirs"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|d| d["probed"] == true)
        .all(|d| d["probe"]["error"].is_null() && d["space_error"].is_null());
    v.insert(
        "disk: every probe and statfs succeeded".into(),
        probes_ok.to_string(),
    );
    v
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The fsync probe removes its file when the agent stops (SIGTERM from the runtime).
fn assert_no_probe_files(pid: i32) {
    for dir in ["/var/lib/etcd", "/var/lib/kubelet", "/var/lib/containerd"] {
        let file = Path::new(dir).join(format!(".nodediag-fsync-probe.{pid}"));
        assert!(!file.exists(), "{} left behind", file.display());
    }
}
