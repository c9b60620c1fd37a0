//! The cluster DNS service the kubelet writes into every ClusterFirst pod's
//! resolv.conf: `clusterDNS` and `clusterDomain` of its KubeletConfiguration file, or
//! the `--cluster-dns` / `--cluster-domain` flags, which win over the file as they do
//! in the kubelet.

use crate::host::HostRoot;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use std::net::IpAddr;
use std::path::{Path, PathBuf};

/// Where installers put the KubeletConfiguration: kubeadm, kubespray, EKS (JSON),
/// GKE. The first that exists is read, unless a flags file names another.
pub const CONFIG_PATHS: [&str; 4] = [
    "/var/lib/kubelet/config.yaml",
    "/etc/kubernetes/kubelet-config.yaml",
    "/etc/kubernetes/kubelet/kubelet-config.json",
    "/home/kubernetes/kubelet-config.yaml",
];

/// Environment files the kubelet's systemd unit reads its extra flags from
/// (kubeadm, Debian, RPM packaging).
pub const FLAGS_PATHS: [&str; 3] = [
    "/var/lib/kubelet/kubeadm-flags.env",
    "/etc/default/kubelet",
    "/etc/sysconfig/kubelet",
];

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ClusterDns {
    /// In the kubelet's order; the first is what pods' resolv.conf lists first.
    pub servers: Vec<IpAddr>,
    pub domain: Option<String>,
    /// The files the values came from, flags files first.
    pub sources: Vec<PathBuf>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KubeletFlags {
    pub config: Option<PathBuf>,
    pub cluster_dns: Vec<IpAddr>,
    pub cluster_domain: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
struct DnsFields {
    #[serde(default, rename = "clusterDNS")]
    cluster_dns: Option<Vec<String>>,
    #[serde(default)]
    cluster_domain: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum KubeletDnsError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    Malformed { path: PathBuf, message: String },
}

/// The one place that knows which YAML crate we use.
fn from_yaml<T: DeserializeOwned>(text: &str) -> Result<T, String> {
    yaml_serde::from_str(text).map_err(|e| e.to_string())
}

/// `clusterDNS` and `clusterDomain` of a KubeletConfiguration (YAML or JSON).
pub fn parse_config(text: &str) -> Result<(Vec<IpAddr>, Option<String>), String> {
    if text.trim().is_empty() {
        return Ok((Vec::new(), None));
    }
    let fields: DnsFields = from_yaml(text)?;
    let servers = fields
        .cluster_dns
        .unwrap_or_default()
        .iter()
        .map(|s| parse_ip(s, "clusterDNS"))
        .collect::<Result<_, _>>()?;
    let domain = fields
        .cluster_domain
        .map(|d| d.trim().trim_end_matches('.').to_string())
        .filter(|d| !d.is_empty());
    Ok((servers, domain))
}

fn parse_ip(s: &str, what: &str) -> Result<IpAddr, String> {
    s.trim()
        .parse()
        .map_err(|_| format!("{what}: {:?} is not an IP address", truncate(s)))
}

fn truncate(s: &str) -> String {
    s.chars().take(60).collect()
}

/// Kubelet flags in a command line (`/proc/<pid>/cmdline` split at NULs, or the
/// words of a flags file): `--flag=value` and `--flag value`, one or two dashes.
pub fn parse_args<'a>(args: impl IntoIterator<Item = &'a str>) -> Result<KubeletFlags, String> {
    let mut flags = KubeletFlags::default();
    let mut it = args.into_iter().peekable();
    while let Some(arg) = it.next() {
        let Some(body) = arg.strip_prefix("--").or_else(|| arg.strip_prefix('-')) else {
            continue;
        };
        let (name, inline) = match body.split_once('=') {
            Some((n, v)) => (n, Some(v)),
            None => (body, None),
        };
        if !matches!(name, "cluster-dns" | "cluster-domain" | "config") {
            continue;
        }
        let value = match inline {
            Some(v) => v,
            None => match it.next_if(|next| !next.starts_with('-')) {
                Some(v) => v,
                None => return Err(format!("--{name} without a value")),
            },
        };
        match name {
            "cluster-dns" => {
                // A repeated flag replaces, a comma separates a list, as pflag does.
                flags.cluster_dns = value
                    .split(',')
                    .filter(|s| !s.trim().is_empty())
                    .map(|s| parse_ip(s, "--cluster-dns"))
                    .collect::<Result<_, _>>()?;
            }
            "cluster-domain" => {
                let d = value.trim().trim_end_matches('.');
                flags.cluster_domain = (!d.is_empty()).then(|| d.to_string());
            }
            _ => flags.config = Some(PathBuf::from(value)),
        }
    }
    Ok(flags)
}

/// A systemd environment file (`KUBELET_KUBEADM_ARGS="--a=b --c=d"`): the flags in
/// every assignment's value.
pub fn parse_flags_file(text: &str) -> Result<KubeletFlags, String> {
    let mut words = Vec::new();
    for line in text.lines() {
        let line = line.trim();
        if line.starts_with('#') {
            continue;
        }
        let Some((_, value)) = line.split_once('=') else {
            continue;
        };
        let value = value.trim();
        let value = value
            .strip_prefix('"')
            .and_then(|v| v.strip_suffix('"'))
            .or_else(|| value.strip_prefix('\'').and_then(|v| v.strip_suffix('\'')))
            .unwrap_or(value);
        words.extend(value.split_whitespace().map(str::to_string));
    }
    parse_args(words.iter().map(String::as_str))
}

/// The kubelet's cluster DNS on this host, or None when no kubelet file says.
/// A file that exists but cannot be read or parsed is an error naming it.
pub fn read(root: &HostRoot) -> Result<Option<ClusterDns>, KubeletDnsError> {
    let mut flags = KubeletFlags::default();
    let mut sources = Vec::new();
    for path in FLAGS_PATHS {
        let host_path = root.host_path(path);
        let Some(text) = read_optional(&host_path)? else {
            continue;
        };
        let f = parse_flags_file(&text).map_err(|message| KubeletDnsError::Malformed {
            path: host_path.clone(),
            message,
        })?;
        if f == KubeletFlags::default() {
            continue;
        }
        sources.push(host_path);
        flags.config = f.config.or(flags.config);
        if !f.cluster_dns.is_empty() {
            flags.cluster_dns = f.cluster_dns;
        }
        flags.cluster_domain = f.cluster_domain.or(flags.cluster_domain);
    }
    let config_paths: Vec<PathBuf> = match &flags.config {
        Some(p) => vec![root.host_path(p)],
        None => CONFIG_PATHS.iter().map(|p| root.host_path(p)).collect(),
    };
    let (mut servers, mut domain) = (Vec::new(), None);
    for path in config_paths {
        let Some(text) = read_optional(&path)? else {
            continue;
        };
        (servers, domain) = parse_config(&text).map_err(|message| KubeletDnsError::Malformed {
            path: path.clone(),
            message,
        })?;
        sources.push(path);
        break;
    }
    if !flags.cluster_dns.is_empty() {
        servers = flags.cluster_dns;
    }
    domain = flags.cluster_domain.or(domain);
    if servers.is_empty() && domain.is_none() {
        return Ok(None);
    }
    Ok(Some(ClusterDns {
        servers,
        domain,
        sources,
    }))
}

fn read_optional(path: &Path) -> Result<Option<String>, KubeletDnsError> {
    match std::fs::read(path) {
        Ok(bytes) => Ok(Some(String::from_utf8_lossy(&bytes).into_owned())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(KubeletDnsError::Io {
            path: path.to_path_buf(),
            source,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KUBEADM_CONFIG: &str = "apiVersion: kubelet.config.k8s.io/v1beta1\n\
        authentication:\n  anonymous:\n    enabled: false\n\
        cgroupDriver: systemd\n\
        clusterDNS:\n- 10.96.0.10\n\
        clusterDomain: cluster.local\n\
        kind: KubeletConfiguration\n";

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn a_kubeadm_config() {
        assert_eq!(
            parse_config(KUBEADM_CONFIG).unwrap(),
            (vec![ip("10.96.0.10")], Some("cluster.local".into()))
        );
    }

    #[test]
    fn an_eks_json_config_and_dual_stack() {
        let json = r#"{"kind":"KubeletConfiguration","clusterDNS":["172.20.0.10","fd00::a"],"clusterDomain":"cluster.local."}"#;
        assert_eq!(
            parse_config(json).unwrap(),
            (
                vec![ip("172.20.0.10"), ip("fd00::a")],
                Some("cluster.local".into())
            )
        );
    }

    #[test]
    fn a_config_without_dns_fields_or_empty() {
        assert_eq!(
            parse_config("kind: KubeletConfiguration\n").unwrap(),
            (vec![], None)
        );
        assert_eq!(parse_config("").unwrap(), (vec![], None));
    }

    #[test]
    fn malformed_configs_say_why() {
        let err = parse_config("clusterDNS: [10.96.0.10\n").unwrap_err();
        assert!(!err.is_empty());
        let err = parse_config("clusterDNS:\n- kube-dns\n").unwrap_err();
        assert_eq!(err, "clusterDNS: \"kube-dns\" is not an IP address");
        assert!(
            parse_config("clusterDNS: 10.96.0.10\n").is_err(),
            "not a list"
        );
        assert!(parse_config("- just\n- a list\n").is_err());
    }

    #[test]
    fn flags_in_both_spellings() {
        let f = parse_args([
            "/usr/bin/kubelet",
            "--config=/etc/k/config.yaml",
            "--cluster-dns",
            "169.254.20.10,10.96.0.10",
            "-cluster-domain=corp.example.",
            "--v=2",
        ])
        .unwrap();
        assert_eq!(f.config, Some(PathBuf::from("/etc/k/config.yaml")));
        assert_eq!(f.cluster_dns, vec![ip("169.254.20.10"), ip("10.96.0.10")]);
        assert_eq!(f.cluster_domain.as_deref(), Some("corp.example"));
        assert_eq!(
            parse_args(["--cluster-dns", "--v=2"]).unwrap_err(),
            "--cluster-dns without a value"
        );
        assert!(parse_args(["--cluster-dns=dns.local"]).is_err());
    }

    #[test]
    fn a_kubeadm_flags_file_and_a_debian_default_file() {
        let kubeadm = "KUBELET_KUBEADM_ARGS=\"--container-runtime-endpoint=unix:///run/containerd/containerd.sock --pod-infra-container-image=registry.k8s.io/pause:3.9\"\n";
        assert_eq!(parse_flags_file(kubeadm).unwrap(), KubeletFlags::default());
        let debian = "# extra flags\nKUBELET_EXTRA_ARGS='--cluster-dns=169.254.20.10 --cluster-domain=cluster.local'\n";
        let f = parse_flags_file(debian).unwrap();
        assert_eq!(f.cluster_dns, vec![ip("169.254.20.10")]);
        assert_eq!(f.cluster_domain.as_deref(), Some("cluster.local"));
    }

    fn rootfs(files: &[(&str, &str)]) -> (tempfile::TempDir, HostRoot) {
        let dir = tempfile::tempdir().unwrap();
        for (path, text) in files {
            let p = dir.path().join(path.trim_start_matches('/'));
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, text).unwrap();
        }
        let root = HostRoot {
            rootfs: dir.path().to_path_buf(),
            ..HostRoot::default()
        };
        (dir, root)
    }

    #[test]
    fn read_takes_the_config_and_lets_flags_win() {
        let (_d, root) = rootfs(&[]);
        assert_eq!(read(&root).unwrap(), None);

        let (d, root) = rootfs(&[("/var/lib/kubelet/config.yaml", KUBEADM_CONFIG)]);
        let dns = read(&root).unwrap().unwrap();
        assert_eq!(dns.servers, vec![ip("10.96.0.10")]);
        assert_eq!(dns.domain.as_deref(), Some("cluster.local"));
        assert_eq!(
            dns.sources,
            vec![d.path().join("var/lib/kubelet/config.yaml")]
        );

        let (_d, root) = rootfs(&[
            ("/var/lib/kubelet/config.yaml", KUBEADM_CONFIG),
            (
                "/etc/default/kubelet",
                "KUBELET_EXTRA_ARGS=--cluster-dns=169.254.20.10\n",
            ),
        ]);
        let dns = read(&root).unwrap().unwrap();
        assert_eq!(dns.servers, vec![ip("169.254.20.10")], "the flag wins");
        assert_eq!(dns.domain.as_deref(), Some("cluster.local"));
        assert_eq!(dns.sources.len(), 2);

        let (_d, root) = rootfs(&[
            (
                "/var/lib/kubelet/kubeadm-flags.env",
                "KUBELET_KUBEADM_ARGS=\"--config=/opt/kubelet.yaml\"\n",
            ),
            ("/opt/kubelet.yaml", "clusterDNS: [\"10.0.0.10\"]\n"),
            ("/var/lib/kubelet/config.yaml", KUBEADM_CONFIG),
        ]);
        let dns = read(&root).unwrap().unwrap();
        assert_eq!(
            dns.servers,
            vec![ip("10.0.0.10")],
            "--config names the file"
        );
        assert_eq!(dns.domain, None);
    }

    #[test]
    fn a_malformed_file_is_an_error_naming_it() {
        let (d, root) = rootfs(&[("/var/lib/kubelet/config.yaml", "clusterDNS: [oops\n")]);
        let err = read(&root).unwrap_err().to_string();
        assert!(
            err.starts_with(
                &d.path()
                    .join("var/lib/kubelet/config.yaml")
                    .display()
                    .to_string()
            ),
            "{err}"
        );
        let (_d, root) = rootfs(&[(
            "/etc/sysconfig/kubelet",
            "KUBELET_EXTRA_ARGS=--cluster-dns=x\n",
        )]);
        let err = read(&root).unwrap_err().to_string();
        assert!(
            err.contains("etc/sysconfig/kubelet") && err.contains("\"x\""),
            "{err}"
        );
    }
}
