//! DNS as the pods see it: lookups from inside pod network namespaces and from the
//! host, the pattern of glibc's resolver, tied to conntrack.

use super::{Schedule, Signal};
use crate::collect::dns::{DnsCollector, DnsConfig, DnsSample, DEFAULT_ABSENT_NAME};
use crate::collect::{self, Collector};
use crate::diagnose::{dns, FindingDef, RuleSet};
use crate::flags::parse_duration;
use crate::http::Route;
use crate::store::Snapshot;
use prometheus_client::encoding::DescriptorEncoder;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, SystemTime};

pub struct Dns;

#[derive(Debug, Clone, clap::Args)]
#[command(next_help_heading = "DNS")]
pub struct DnsArgs {
    /// Sampling interval of the dns collector; each round keeps to half of it
    /// [default: --interval].
    #[arg(id = "collector.dns.interval", long = "collector.dns.interval", env = "NODEDIAG_COLLECTOR_DNS_INTERVAL", value_parser = parse_duration, value_name = "DURATION")]
    pub interval: Option<Duration>,

    /// Disable the dns collector (lookups from inside pod network namespaces).
    #[arg(
        id = "no-collector.dns",
        long = "no-collector.dns",
        env = "NODEDIAG_NO_COLLECTOR_DNS"
    )]
    pub disabled: bool,

    /// The DNS server to probe (IP or IP:PORT) [default: the kubelet's clusterDNS
    /// from its files under --path.rootfs, else each pod's resolv.conf nameserver].
    #[arg(id = "dns.server", long = "dns.server", env = "NODEDIAG_DNS_SERVER", value_parser = parse_server, value_name = "ADDR")]
    pub server: Option<SocketAddr>,

    /// A name to look up as the pods do (repeatable) [default:
    /// kubernetes.default.svc.<cluster domain>].
    #[arg(
        id = "dns.name", long = "dns.name",
        env = "NODEDIAG_DNS_NAME",
        value_delimiter = ',',
        value_parser = parse_name,
        value_name = "NAME"
    )]
    pub names: Vec<String>,

    /// A name that must not exist, also looked up: its NXDOMAIN is a success, and it
    /// walks the search list to the upstream servers as a pod's external lookups do.
    /// Empty: none.
    #[arg(id = "dns.absent-name", long = "dns.absent-name", env = "NODEDIAG_DNS_ABSENT_NAME", default_value = DEFAULT_ABSENT_NAME, value_name = "NAME")]
    pub absent_name: String,

    /// Pod network namespaces probed per round, taking turns through all of them.
    #[arg(id = "dns.pods", long = "dns.pods", env = "NODEDIAG_DNS_PODS", default_value = "3", value_parser = clap::value_parser!(u32).range(0..=100), value_name = "N")]
    pub pods: u32,

    /// Longest wait per query try (glibc's timeout: is the other cap); shortened so a
    /// dead server still lets every name finish within half the interval.
    #[arg(id = "dns.timeout", long = "dns.timeout", env = "NODEDIAG_DNS_TIMEOUT", default_value = "5s", value_parser = parse_duration, value_name = "DURATION")]
    pub timeout: Duration,

    /// Probe only pods of this Kubernetes namespace (repeatable) [default: all].
    #[arg(
        id = "dns.pod-namespace",
        long = "dns.pod-namespace",
        env = "NODEDIAG_DNS_POD_NAMESPACE",
        value_delimiter = ',',
        value_name = "NAMESPACE"
    )]
    pub pod_namespaces: Vec<String>,

    /// Do not probe from nodediag's own network namespace (the host's in the
    /// DaemonSet), only from pods.
    #[arg(id = "no-dns.host", long = "no-dns.host", env = "NODEDIAG_NO_DNS_HOST")]
    pub no_host: bool,

    #[command(flatten)]
    pub thresholds: dns::Thresholds,
}

fn parse_server(s: &str) -> Result<SocketAddr, String> {
    if let Ok(ip) = s.parse::<IpAddr>() {
        return Ok(SocketAddr::new(ip, 53));
    }
    s.parse()
        .map_err(|_| format!("{s:?}: expected an IP address, optionally with a port (10.96.0.10, 10.96.0.10:53, [fd00::a]:53)"))
}

fn parse_name(s: &str) -> Result<String, String> {
    let n = s.trim();
    let labels_ok = n
        .trim_end_matches('.')
        .split('.')
        .all(|l| !l.is_empty() && l.len() <= 63);
    if n.is_empty() || n.len() > 253 || !labels_ok {
        return Err(format!("{s:?} is not a DNS name"));
    }
    Ok(n.to_string())
}

impl Signal for Dns {
    type Sample = DnsSample;
    type Args = DnsArgs;
    const FINDINGS: &'static [&'static FindingDef] = dns::FINDINGS;

    fn schedule(args: &DnsArgs) -> Schedule {
        Schedule {
            disabled: args.disabled,
            interval: args.interval,
        }
    }

    fn collector(args: &DnsArgs, ctx: &collect::Context) -> impl Collector<Sample = DnsSample> {
        DnsCollector::new(
            ctx.root.clone(),
            DnsConfig {
                server: args.server,
                names: args.names.clone(),
                absent_name: args.absent_name.trim().to_string(),
                pods: args.pods as usize,
                timeout: args.timeout,
                pod_namespaces: args.pod_namespaces.clone(),
                host: !args.no_host,
                interval: args.interval.unwrap_or(ctx.interval),
            },
        )
    }

    fn rules(args: &DnsArgs) -> RuleSet {
        let t = args.thresholds.clone();
        Box::new(move |snap, ctx, out| dns::rules(snap, &t, ctx, out))
    }

    fn summary(sample: &DnsSample) -> String {
        crate::report::dns::summary(sample)
    }

    fn metrics(snap: &Snapshot, e: &mut DescriptorEncoder) -> std::fmt::Result {
        crate::metrics::dns::encode(snap, e)
    }

    fn report(out: &mut String, snap: &Snapshot, now: SystemTime) {
        crate::report::dns::section(out, snap, now)
    }

    fn routes() -> Vec<Route> {
        crate::http::dns::routes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn servers_take_port_53_unless_given() {
        assert_eq!(
            parse_server("10.96.0.10").unwrap(),
            "10.96.0.10:53".parse().unwrap()
        );
        assert_eq!(parse_server("10.96.0.10:5353").unwrap().port(), 5353);
        assert_eq!(parse_server("fd00::a").unwrap().port(), 53);
        assert!(parse_server("kube-dns").unwrap_err().contains("IP address"));
    }

    #[test]
    fn names_are_checked() {
        assert_eq!(
            parse_name("kubernetes.default").unwrap(),
            "kubernetes.default"
        );
        assert_eq!(parse_name("example.com.").unwrap(), "example.com.");
        assert!(parse_name("").is_err());
        assert!(parse_name("a..b").is_err());
        assert!(parse_name(&"x".repeat(64)).is_err());
    }

    #[test]
    fn defaults_are_the_catalogs() {
        let d = crate::config::AgentArgs::defaults().signals.dns;
        assert_eq!(d.pods, 3);
        assert_eq!(d.timeout, Duration::from_secs(5));
        assert_eq!(d.thresholds.failure_critical_ratio, 0.05);
        assert_eq!(d.thresholds.slow, Duration::from_secs(1));
        assert_eq!(d.absent_name, "nodediag-absent.invalid");
        assert!(d.server.is_none() && d.names.is_empty() && !d.no_host && !d.disabled);
    }

    #[test]
    fn flags_repeat_and_refuse_bad_values() {
        use clap::Parser;
        let parse = |args: &[&str]| {
            crate::config::Cli::try_parse_from(["nodediag", "check"].iter().chain(args).copied())
        };
        let cli = parse(&[
            "--dns.server=10.0.0.10:5353",
            "--dns.name=a.example",
            "--dns.name=b.example",
            "--dns.pod-namespace=shop,web",
            "--dns.pods=0",
            "--no-dns.host",
        ])
        .unwrap();
        let crate::config::Command::Check(c) = cli.command else {
            panic!("check")
        };
        let d = c.agent.signals.dns;
        assert_eq!(d.server, Some("10.0.0.10:5353".parse().unwrap()));
        assert_eq!(d.names, ["a.example", "b.example"]);
        assert_eq!(d.pod_namespaces, ["shop", "web"]);
        assert_eq!(d.pods, 0);
        assert!(d.no_host);
        assert!(parse(&["--dns.pods=101"]).is_err());
        assert!(parse(&["--dns.server=kube-dns"]).is_err());
        assert!(parse(&["--dns.failure-critical-ratio=2"]).is_err());
    }
}
