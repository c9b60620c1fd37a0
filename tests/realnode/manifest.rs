//! The DaemonSet as users install it (`kubectl kustomize deploy/kubernetes`), turned
//! into the pod spec the kubelet stand-in runs: image, args, env, ports, resources,
//! security context, host namespaces, hostPath volumes and their mounts.

use super::cri;
use super::kubelet::{ContainerSpec, HostPath, PodSpec, Security, VolumeMount};
use super::node::{repo_root, run};
use anyhow::{bail, Context, Result};
use serde::Deserialize;
use std::collections::HashMap;
use std::process::Command;
use yaml_serde::Value;

/// The rendered DaemonSet's pod template and its single container.
pub struct AgentManifest {
    pub pod: PodSpec,
    pub capabilities: Vec<String>,
}

pub fn render() -> Result<AgentManifest> {
    let text = run(Command::new("kubectl")
        .arg("kustomize")
        .arg(repo_root().join("deploy/kubernetes")))?;
    let ds = yaml_serde::Deserializer::from_str(&text)
        .filter_map(|d| Value::deserialize(d).ok())
        .find(|v| v["kind"] == "DaemonSet")
        .context("no DaemonSet in the rendered manifests")?;
    let meta = &ds["metadata"];
    let tmpl = &ds["spec"]["template"]["spec"];
    let containers = tmpl["containers"].as_sequence().context("containers")?;
    if containers.len() != 1 {
        bail!("expected one container, found {}", containers.len());
    }
    let c = &containers[0];
    let s = &c["securityContext"];
    let caps = &s["capabilities"];
    let strings = |v: &Value| -> Vec<String> {
        v.as_sequence()
            .map(|s| {
                s.iter()
                    .filter_map(|x| x.as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default()
    };
    let node_name = hostname();
    let env = c["env"]
        .as_sequence()
        .into_iter()
        .flatten()
        .map(|e| {
            let name = e["name"].as_str().unwrap_or_default().to_string();
            let value = match e["valueFrom"]["fieldRef"]["fieldPath"].as_str() {
                Some("spec.nodeName") => node_name.clone(),
                Some(other) => panic!("downward API field {other} is not handled"),
                None => e["value"].as_str().unwrap_or_default().to_string(),
            };
            (name, value)
        })
        .collect();
    let profile = |v: &Value| match v["type"].as_str() {
        Some("RuntimeDefault") => Some(cri::PROFILE_RUNTIME_DEFAULT),
        Some("Unconfined") => Some(cri::PROFILE_UNCONFINED),
        Some(other) => panic!("profile type {other} is not handled"),
        None => None,
    };
    let security = Security {
        run_as_user: s["runAsUser"].as_i64(),
        run_as_group: s["runAsGroup"].as_i64(),
        privileged: s["privileged"].as_bool().unwrap_or(false),
        allow_privilege_escalation: s["allowPrivilegeEscalation"].as_bool().unwrap_or(true),
        read_only_root: s["readOnlyRootFilesystem"].as_bool().unwrap_or(false),
        seccomp: profile(&s["seccompProfile"]),
        apparmor: profile(&s["appArmorProfile"]),
        add: strings(&caps["add"]),
        drop: strings(&caps["drop"]),
    };
    let res = &c["resources"];
    let mounts = c["volumeMounts"]
        .as_sequence()
        .into_iter()
        .flatten()
        .map(|m| VolumeMount {
            volume: m["name"].as_str().unwrap_or_default().into(),
            mount_path: m["mountPath"].as_str().unwrap_or_default().into(),
            read_only: m["readOnly"].as_bool().unwrap_or(false),
            propagation: match m["mountPropagation"].as_str() {
                Some("HostToContainer") => cri::PROPAGATION_HOST_TO_CONTAINER,
                Some("Bidirectional") => cri::PROPAGATION_BIDIRECTIONAL,
                _ => cri::PROPAGATION_PRIVATE,
            },
        })
        .collect();
    let volumes: HashMap<String, HostPath> = tmpl["volumes"]
        .as_sequence()
        .into_iter()
        .flatten()
        .filter_map(|v| {
            let hp = &v["hostPath"];
            Some((
                v["name"].as_str()?.to_string(),
                HostPath {
                    path: hp["path"].as_str()?.to_string(),
                    kind: hp["type"].as_str().unwrap_or_default().to_string(),
                },
            ))
        })
        .collect();
    let container = ContainerSpec {
        name: c["name"].as_str().context("container name")?.into(),
        image: c["image"].as_str().context("image")?.into(),
        command: strings(&c["command"]),
        args: strings(&c["args"]),
        env,
        ports: c["ports"]
            .as_sequence()
            .into_iter()
            .flatten()
            .filter_map(|p| p["containerPort"].as_i64().map(|p| p as i32))
            .collect(),
        cpu_request_milli: cpu_milli(&res["requests"]["cpu"])?,
        cpu_limit_milli: cpu_milli(&res["limits"]["cpu"])?,
        memory_request: bytes(&res["requests"]["memory"])?,
        memory_limit: bytes(&res["limits"]["memory"])?,
        mounts,
        security: security.clone(),
    };
    let priority = tmpl["priorityClassName"].as_str().unwrap_or_default();
    Ok(AgentManifest {
        capabilities: security.add,
        pod: PodSpec {
            namespace: meta["namespace"].as_str().unwrap_or("default").into(),
            name: meta["name"].as_str().context("name")?.into(),
            uid: String::new(),
            host_network: tmpl["hostNetwork"].as_bool().unwrap_or(false),
            host_pid: tmpl["hostPID"].as_bool().unwrap_or(false),
            grace_seconds: tmpl["terminationGracePeriodSeconds"].as_i64(),
            critical: priority == "system-node-critical" || priority == "system-cluster-critical",
            containers: vec![container],
            volumes,
        },
    })
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .unwrap_or_default()
}

/// A Kubernetes CPU quantity ("200m", "1", "0.5") in millicores; absent is 0.
fn cpu_milli(v: &Value) -> Result<i64> {
    let s = match v {
        Value::Null => return Ok(0),
        Value::String(s) => s.clone(),
        Value::Number(n) => n.to_string(),
        other => bail!("cpu quantity {other:?}"),
    };
    if let Some(m) = s.strip_suffix('m') {
        return Ok(m.parse()?);
    }
    Ok((s.parse::<f64>()? * 1000.0).round() as i64)
}

/// A Kubernetes memory quantity ("32Mi", "1G", "1048576") in bytes; absent is 0.
fn bytes(v: &Value) -> Result<i64> {
    let s = match v {
        Value::Null => return Ok(0),
        Value::String(s) => s.clone(),
        Value::Number(n) => n.to_string(),
        other => bail!("memory quantity {other:?}"),
    };
    for (suffix, mult) in [
        ("Ki", 1i64 << 10),
        ("Mi", 1 << 20),
        ("Gi", 1 << 30),
        ("k", 1000),
        ("M", 1_000_000),
        ("G", 1_000_000_000),
    ] {
        if let Some(n) = s.strip_suffix(suffix) {
            return Ok(n.parse::<i64>()? * mult);
        }
    }
    Ok(s.parse()?)
}
