//! A cluster's DNS path in network namespaces, for the DNS probe's real-resolver
//! tests:
//!
//! ```text
//!  pod0 (eth0 10.55.0.2) ──veth── node (10.55.0.1)            server (10.53.0.2)
//!  pod1 (eth0 10.55.1.2) ──veth── node (10.55.1.1)  ──veth──  dnsmasq on :53
//!                                 node (10.53.0.1)
//!  node: nft DNAT 10.96.0.10:53 (udp, tcp) -> 10.53.0.2:53, as kube-proxy does,
//!        for forwarded packets and for the node's own (a route to 10.96.0.0/12)
//! ```
//!
//! Every query a pod sends to the service address crosses the node namespace's
//! conntrack, which DNATs it to the server and un-NATs the reply. The server is
//! Debian's dnsmasq with only the records given here. Namespaces are named
//! `nddns-<pid>-<tag>-<role>`; all of them, dnsmasq and the files go on drop.
//!
//! A slow server is a relay in the server namespace that holds every reply of
//! dnsmasq for a while: kernels built without sch_netem (such as this project's
//! test VMs) cannot delay packets with `tc qdisc ... netem`.

use super::conntrack::{have, is_root};
use super::{sh, skip, wait_for};
use nodediag::kernel::dns::probe::ProbeSpec;
use nodediag::kernel::dns::probe_threads::ProbeThreads;
use nodediag::kernel::dns::resolv_conf;
use nodediag::kernel::dns::search::Verdict;
use std::net::{SocketAddr, UdpSocket};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

pub const SERVICE_IP: &str = "10.96.0.10";
pub const SERVER_IP: &str = "10.53.0.2";
pub const CLUSTER_IP: &str = "10.96.0.1";
pub const SERVICE_NAME: &str = "kubernetes.default.svc.cluster.local";
pub const ABSENT_NAME: &str = "nodediag-absent.invalid";
/// The server's end of its veth.
const SERVER_IFACE: &str = "srv0";
/// What the kubelet writes for a pod in namespace `default`.
pub const POD_RESOLV_CONF: &str = "nameserver 10.96.0.10\n\
    search default.svc.cluster.local svc.cluster.local cluster.local\n\
    options ndots:5\n";

pub struct DnsLab {
    pub server_ns: String,
    pub node_ns: String,
    pub pod_ns: Vec<String>,
    pub dir: tempfile::TempDir,
    dnsmasq: Option<Child>,
    created: Vec<String>,
    relay_stop: Arc<AtomicBool>,
}

impl DnsLab {
    /// Builds the namespaces and starts dnsmasq; None (after `skip`) without root,
    /// iproute2, nft or dnsmasq.
    pub fn new(tag: &str, pods: usize) -> Option<DnsLab> {
        if !is_root() {
            skip("needs root to create network namespaces");
            return None;
        }
        for tool in ["ip", "nft", "dnsmasq", "conntrack"] {
            if !have(tool) {
                skip(&format!(
                    "{tool} is not installed (tests/run.sh installs it)"
                ));
                return None;
            }
        }
        let prefix = format!("nddns-{}-{tag}", std::process::id());
        let mut lab = DnsLab {
            server_ns: format!("{prefix}-srv"),
            node_ns: format!("{prefix}-node"),
            pod_ns: (0..pods).map(|i| format!("{prefix}-pod{i}")).collect(),
            dir: tempfile::tempdir().expect("temp dir"),
            dnsmasq: None,
            created: Vec::new(),
            relay_stop: Arc::new(AtomicBool::new(false)),
        };
        lab.build();
        lab.start_dnsmasq(53);
        Some(lab)
    }

    fn add_ns(&mut self, name: &str) {
        sh("ip", &["netns", "add", name]);
        self.created.push(name.to_string());
        sh("ip", &["-n", name, "link", "set", "lo", "up"]);
    }

    fn build(&mut self) {
        let (srv, node) = (self.server_ns.clone(), self.node_ns.clone());
        self.add_ns(&srv);
        self.add_ns(&node);
        veth(
            &node,
            "tosrv",
            "10.53.0.1/24",
            &srv,
            SERVER_IFACE,
            "10.53.0.2/24",
        );
        sh(
            "ip",
            &["-n", &srv, "route", "add", "default", "via", "10.53.0.1"],
        );
        for (i, pod) in self.pod_ns.clone().iter().enumerate() {
            self.add_ns(pod);
            let node_addr = format!("10.55.{i}.1/24");
            let pod_addr = format!("10.55.{i}.2/24");
            veth(
                &node,
                &format!("topod{i}"),
                &node_addr,
                pod,
                "eth0",
                &pod_addr,
            );
            let gw = format!("10.55.{i}.1");
            sh("ip", &["-n", pod, "route", "add", "default", "via", &gw]);
            std::fs::write(self.resolv_conf(i), POD_RESOLV_CONF).unwrap();
        }
        self.node_exec(&["sysctl", "-qw", "net.ipv4.ip_forward=1"]);
        // kube-proxy's nftables mode DNATs a service address in a prerouting chain
        // at dstnat priority, and in an output chain for the node's own packets;
        // conntrack un-NATs the replies. The node's packets need a route to the
        // service range before the output chain sees them.
        self.node_nft(&format!(
            "table ip nddns_nat {{\n\
               chain prerouting {{\n\
                 type nat hook prerouting priority dstnat;\n\
                 ip daddr {SERVICE_IP} udp dport 53 dnat to {SERVER_IP}:53\n\
                 ip daddr {SERVICE_IP} tcp dport 53 dnat to {SERVER_IP}:53\n\
               }}\n\
               chain output {{\n\
                 type nat hook output priority -100;\n\
                 ip daddr {SERVICE_IP} udp dport 53 dnat to {SERVER_IP}:53\n\
                 ip daddr {SERVICE_IP} tcp dport 53 dnat to {SERVER_IP}:53\n\
               }}\n\
             }}\n"
        ));
        sh(
            "ip",
            &[
                "-n",
                &node,
                "route",
                "add",
                "10.96.0.0/12",
                "via",
                "10.53.0.2",
            ],
        );
    }

    /// The resolv.conf of pod `i`, as the probe will read it.
    pub fn resolv_conf(&self, i: usize) -> PathBuf {
        self.dir.path().join(format!("pod{i}-resolv.conf"))
    }

    /// The pin of pod `i`'s network namespace, which the probe enters.
    pub fn pod_netns(&self, i: usize) -> PathBuf {
        PathBuf::from("/run/netns").join(&self.pod_ns[i])
    }

    /// Starts dnsmasq on SERVER_IP:`port` and waits until it answers.
    pub fn start_dnsmasq(&mut self, port: u16) {
        assert!(self.dnsmasq.is_none(), "dnsmasq is already running");
        let hosts = self.dir.path().join("hosts");
        std::fs::write(&hosts, format!("{CLUSTER_IP} {SERVICE_NAME}\n")).unwrap();
        let log = std::fs::File::create(self.dir.path().join("dnsmasq.log")).unwrap();
        let pid_file = self.dir.path().join("dnsmasq.pid");
        let child = Command::new("ip")
            .args(["netns", "exec", &self.server_ns, "dnsmasq"])
            .args([
                "--keep-in-foreground",
                "--conf-file=/dev/null",
                "--no-resolv",
                "--no-hosts",
                "--user=root",
                "--bind-interfaces",
                "--log-facility=-",
                "--log-queries",
            ])
            .arg(format!("--listen-address={SERVER_IP}"))
            .arg(format!("--port={port}"))
            .arg(format!("--addn-hosts={}", hosts.display()))
            .arg(format!("--pid-file={}", pid_file.display()))
            // Names under these are answered from the hosts file or not at all
            // (NXDOMAIN), never forwarded: there is no upstream.
            .args(["--local=/cluster.local/", "--local=/invalid/"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start dnsmasq");
        self.dnsmasq = Some(child);
        wait_for("dnsmasq to answer", Duration::from_secs(10), || {
            if let Some(status) = self
                .dnsmasq
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                panic!("dnsmasq exited with {status}: {}", self.dnsmasq_log());
            }
            (self.probe_from_server(port) == Verdict::Answered).then_some(())
        });
    }

    /// Kills dnsmasq (by its PID) and waits for it to be gone.
    pub fn stop_dnsmasq(&mut self) {
        if let Some(mut child) = self.dnsmasq.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    pub fn dnsmasq_log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("dnsmasq.log")).unwrap_or_default()
    }

    /// Moves dnsmasq to port 5353 and puts in its place on port 53 a relay that
    /// holds each of its replies for `delay`.
    pub fn slow_down(&mut self, delay: Duration) {
        self.stop_dnsmasq();
        self.start_dnsmasq(5353);
        let stop = self.relay_stop.clone();
        let netns = self.server_ns.clone();
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            super::enter_netns(&netns);
            let listener = UdpSocket::bind((SERVER_IP, 53)).expect("bind the relay");
            listener
                .set_read_timeout(Some(Duration::from_millis(50)))
                .unwrap();
            ready_tx.send(()).unwrap();
            let mut buf = [0u8; 1500];
            while !stop.load(Ordering::Relaxed) {
                let Ok((n, client)) = listener.recv_from(&mut buf) else {
                    continue;
                };
                let query = buf[..n].to_vec();
                let reply_to = listener.try_clone().unwrap();
                // Threads inherit the namespace of the thread that makes them.
                std::thread::spawn(move || relay_one(&query, client, &reply_to, delay));
            }
        });
        ready_rx
            .recv_timeout(Duration::from_secs(5))
            .expect("the relay to start");
    }

    /// One lookup of SERVICE_NAME straight at the server, from its own namespace.
    fn probe_from_server(&self, port: u16) -> Verdict {
        let mut spec = self.spec_for_server(&format!("{SERVER_IP}:{port}"));
        spec.names = vec![format!("{SERVICE_NAME}.")];
        spec.per_try = Duration::from_millis(200);
        let netns = PathBuf::from("/run/netns").join(&self.server_ns);
        let deadline = Instant::now() + Duration::from_secs(1);
        let probed = ProbeThreads::default().spawn(spec, Some(netns), deadline);
        match probed.and_then(|p| p.wait()) {
            Ok(r) => r.lookups[0].verdict.clone(),
            Err(e) => Verdict::Error(e.to_string()),
        }
    }

    fn spec_for_server(&self, server: &str) -> ProbeSpec {
        let conf = resolv_conf::parse(POD_RESOLV_CONF);
        ProbeSpec::like_glibc(server.parse().unwrap(), vec![], conf.search, &conf.options)
    }

    /// The probe pod `i` makes, from its resolv.conf, for `names`.
    pub fn pod_spec(&self, i: usize, names: &[&str], per_try: Duration) -> ProbeSpec {
        let conf = resolv_conf::read(&self.resolv_conf(i)).expect("read the pod's resolv.conf");
        let server = conf.effective_nameservers()[0];
        let mut spec = ProbeSpec::like_glibc(
            (server, 53).into(),
            names.iter().map(|n| n.to_string()).collect(),
            conf.search.clone(),
            &conf.options,
        );
        spec.per_try = per_try;
        spec
    }

    pub fn node_exec(&self, cmd: &[&str]) -> String {
        let mut args = vec!["netns", "exec", &self.node_ns];
        args.extend_from_slice(cmd);
        sh("ip", &args)
    }

    /// Loads an nft script into the node namespace.
    pub fn node_nft(&self, script: &str) {
        use std::io::Write;
        let mut child = Command::new("ip")
            .args(["netns", "exec", &self.node_ns, "nft", "-f", "-"])
            .stdin(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run nft");
        child
            .stdin
            .take()
            .unwrap()
            .write_all(script.as_bytes())
            .unwrap();
        let out = child.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "nft -f: {}\n{script}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

/// Asks dnsmasq (port 5353) and hands its reply back to the client `delay` later.
fn relay_one(query: &[u8], client: SocketAddr, reply_to: &UdpSocket, delay: Duration) {
    let upstream = UdpSocket::bind((SERVER_IP, 0)).unwrap();
    upstream.connect((SERVER_IP, 5353)).unwrap();
    upstream
        .set_read_timeout(Some(Duration::from_secs(2)))
        .unwrap();
    let mut buf = [0u8; 1500];
    if upstream.send(query).is_err() {
        return;
    }
    let Ok(n) = upstream.recv(&mut buf) else {
        return;
    };
    std::thread::sleep(delay);
    let _ = reply_to.send_to(&buf[..n], client);
}

/// A veth pair between two namespaces, both ends addressed and up; never in the
/// test's own namespace.
fn veth(ns_a: &str, a: &str, addr_a: &str, ns_b: &str, b: &str, addr_b: &str) {
    sh(
        "ip",
        &[
            "-n", ns_a, "link", "add", a, "type", "veth", "peer", "name", b, "netns", ns_b,
        ],
    );
    sh("ip", &["-n", ns_a, "addr", "add", addr_a, "dev", a]);
    sh("ip", &["-n", ns_b, "addr", "add", addr_b, "dev", b]);
    sh("ip", &["-n", ns_a, "link", "set", a, "up"]);
    sh("ip", &["-n", ns_b, "link", "set", b, "up"]);
}

impl Drop for DnsLab {
    fn drop(&mut self) {
        self.relay_stop.store(true, Ordering::Relaxed);
        self.stop_dnsmasq();
        // Deleting a namespace takes its veths, qdiscs and nft tables with it.
        for ns in self.created.drain(..).rev() {
            let _ = Command::new("ip")
                .args(["netns", "delete", &ns])
                .stderr(Stdio::null())
                .status();
        }
    }
}
