//! `/etc/resolv.conf` read the way glibc's resolver reads it (resolv/res_init.c):
//! what a pod's getaddrinfo will ask, of whom, and how patiently.
//!
//! glibc never rejects the file: unknown keywords, unparsable addresses and bad
//! option values are skipped. We keep its results and also list what it skipped,
//! since a skipped line is often why a pod resolves differently from the node.

use nix::errno::Errno;
use nix::fcntl::{self, OFlag, OpenHow, ResolveFlag};
use nix::sys::stat::Mode;
use serde::Serialize;
use std::io::{self, Read};
use std::net::IpAddr;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// glibc's MAXNS: nameservers after the third are ignored.
pub const MAX_NAMESERVERS: usize = 3;
/// glibc before 2.26 (MAXDNSRCH) used at most 6 search domains (and 256 bytes of
/// them); 2.26 and later use them all.
pub const LEGACY_MAX_SEARCH: usize = 6;
/// RES_MAXNDOTS, RES_MAXRETRANS (seconds), RES_MAXRETRY: larger values are capped.
pub const MAX_NDOTS: u8 = 15;
pub const MAX_TIMEOUT_SECS: u8 = 30;
pub const MAX_ATTEMPTS: u8 = 5;
/// A resolv.conf is a few hundred bytes; a pod controls its own, so we read at most
/// this much of it.
const MAX_FILE_BYTES: u64 = 64 * 1024;

/// `options` as glibc keeps them; defaults are RES_TIMEOUT 5 s, RES_DFLRETRY 2, ndots 1.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ResolverOptions {
    pub ndots: u8,
    /// Seconds per try with one nameserver (`timeout:N`).
    pub timeout_secs: u8,
    /// Tries per nameserver (`attempts:N`).
    pub attempts: u8,
    /// Send A, wait for its reply, then AAAA, from the same socket.
    pub single_request: bool,
    /// As single-request, with a new socket (a new source port) for the AAAA.
    pub single_request_reopen: bool,
    /// TCP instead of UDP.
    pub use_vc: bool,
    pub rotate: bool,
    pub edns0: bool,
    /// Never query a single-label name as-is.
    pub no_tld_query: bool,
    /// glibc 2.36+: no AAAA queries at all.
    pub no_aaaa: bool,
}

impl Default for ResolverOptions {
    fn default() -> Self {
        ResolverOptions {
            ndots: 1,
            timeout_secs: 5,
            attempts: 2,
            single_request: false,
            single_request_reopen: false,
            use_vc: false,
            rotate: false,
            edns0: false,
            no_tld_query: false,
            no_aaaa: false,
        }
    }
}

impl ResolverOptions {
    pub fn timeout(&self) -> Duration {
        Duration::from_secs(u64::from(self.timeout_secs))
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ResolvConf {
    /// The nameservers glibc uses, in order (at most three).
    pub nameservers: Vec<IpAddr>,
    /// The last `search` or `domain` line, split into domains.
    pub search: Vec<String>,
    pub options: ResolverOptions,
    /// What glibc skipped or capped, one line each, naming the line number.
    pub ignored: Vec<String>,
}

impl ResolvConf {
    /// Where glibc sends queries: the listed nameservers, or 127.0.0.1 when there
    /// are none (inside a pod, usually nothing listens there).
    pub fn effective_nameservers(&self) -> Vec<IpAddr> {
        if self.nameservers.is_empty() {
            vec![IpAddr::from([127, 0, 0, 1])]
        } else {
            self.nameservers.clone()
        }
    }

    /// The cluster domain a kubelet-written search list ends with
    /// (`<ns>.svc.<domain> svc.<domain> <domain>`): the domain after the first `svc.`
    /// entry.
    pub fn cluster_domain(&self) -> Option<&str> {
        self.search.iter().find_map(|d| {
            d.strip_prefix("svc.")
                .filter(|rest| !rest.is_empty())
                .map(|rest| rest.trim_end_matches('.'))
        })
    }
}

/// Parses the text of a resolv.conf. Never fails, as glibc never does.
pub fn parse(text: &str) -> ResolvConf {
    let mut conf = ResolvConf {
        nameservers: Vec::new(),
        search: Vec::new(),
        options: ResolverOptions::default(),
        ignored: Vec::new(),
    };
    for (i, line) in text.lines().enumerate() {
        let n = i + 1;
        if line.starts_with(['#', ';']) || line.trim().is_empty() {
            continue;
        }
        // glibc matches a keyword only when a space or tab follows it.
        let Some((keyword, rest)) = line.split_once([' ', '\t']) else {
            conf.ignored
                .push(format!("line {n}: not a keyword and value"));
            continue;
        };
        let values = || rest.split([' ', '\t']).filter(|v| !v.is_empty());
        match keyword {
            "nameserver" => match values().next().and_then(parse_nameserver) {
                Some(_) if conf.nameservers.len() >= MAX_NAMESERVERS => conf.ignored.push(format!(
                    "line {n}: nameserver beyond the first {MAX_NAMESERVERS}"
                )),
                Some(ip) => conf.nameservers.push(ip),
                None => conf
                    .ignored
                    .push(format!("line {n}: nameserver is not an IP address")),
            },
            // The last of `domain` and `search` wins; `domain` takes only its first word.
            "domain" | "search" => {
                let domains: Vec<String> = if keyword == "domain" {
                    values().take(1).map(str::to_string).collect()
                } else {
                    values().map(str::to_string).collect()
                };
                if !domains.is_empty() {
                    conf.search = domains;
                }
            }
            "options" => {
                for opt in values() {
                    set_option(&mut conf.options, opt, n, &mut conf.ignored);
                }
            }
            "sortlist" => {}
            "" => conf
                .ignored
                .push(format!("line {n}: starts with a blank, so it is not read")),
            _ => conf
                .ignored
                .push(format!("line {n}: unknown keyword {:?}", clip(keyword))),
        }
    }
    if conf.search.len() > LEGACY_MAX_SEARCH {
        conf.ignored.push(format!(
            "{} search domains: glibc before 2.26 uses only the first {LEGACY_MAX_SEARCH}",
            conf.search.len()
        ));
    }
    conf
}

/// An IPv4 address as inet_aton reads the usual dotted quad, or an IPv6 address
/// with an optional `%scope` (the scope does not matter to us).
fn parse_nameserver(v: &str) -> Option<IpAddr> {
    let addr = v.split('%').next()?;
    addr.parse().ok()
}

fn set_option(o: &mut ResolverOptions, opt: &str, line: usize, ignored: &mut Vec<String>) {
    let capped = |value: &str, max: u8, ignored: &mut Vec<String>| -> Option<u8> {
        match atoi(value) {
            Some(v) if v < 0 => {
                ignored.push(format!("line {line}: {} is negative", clip(opt)));
                None
            }
            Some(v) => {
                if v > i64::from(max) {
                    ignored.push(format!("line {line}: {} capped at {max}", clip(opt)));
                }
                Some(v.min(i64::from(max)) as u8)
            }
            None => {
                ignored.push(format!("line {line}: {} is not a number", clip(opt)));
                // atoi("") is 0, and glibc stores it.
                Some(0)
            }
        }
    };
    // glibc compares prefixes: `single-request-reopen` is tested before
    // `single-request`, and trailing characters after a flag name are not checked.
    if let Some(v) = opt.strip_prefix("ndots:") {
        if let Some(v) = capped(v, MAX_NDOTS, ignored) {
            o.ndots = v;
        }
    } else if let Some(v) = opt.strip_prefix("timeout:") {
        if let Some(v) = capped(v, MAX_TIMEOUT_SECS, ignored) {
            o.timeout_secs = v;
        }
    } else if let Some(v) = opt.strip_prefix("attempts:") {
        if let Some(v) = capped(v, MAX_ATTEMPTS, ignored) {
            o.attempts = v;
        }
    } else if opt.starts_with("single-request-reopen") {
        o.single_request_reopen = true;
    } else if opt.starts_with("single-request") {
        o.single_request = true;
    } else if opt.starts_with("use-vc") {
        o.use_vc = true;
    } else if opt.starts_with("rotate") {
        o.rotate = true;
    } else if opt.starts_with("edns0") {
        o.edns0 = true;
    } else if opt.starts_with("no-tld-query") || opt.starts_with("no_tld_query") {
        o.no_tld_query = true;
    } else if opt.starts_with("no-aaaa") {
        o.no_aaaa = true;
    } else if !KNOWN_FLAGS.iter().any(|f| opt.starts_with(f)) {
        ignored.push(format!("line {line}: unknown option {:?}", clip(opt)));
    }
}

/// Options glibc accepts that change nothing the probe does.
const KNOWN_FLAGS: [&str; 7] = [
    "debug",
    "inet6",
    "ip6-bytestring",
    "ip6-dotint",
    "no-ip6-dotint",
    "no-check-names",
    "no-reload",
];

/// C's atoi on the leading digits, except that no digits at all is None.
fn atoi(s: &str) -> Option<i64> {
    let (sign, digits) = match s.strip_prefix('-') {
        Some(rest) => (-1, rest),
        None => (1, s.strip_prefix('+').unwrap_or(s)),
    };
    let end = digits
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(digits.len());
    let value: i64 = digits[..end.min(9)].parse().ok()?;
    Some(sign * value)
}

/// Pod-controlled text quoted in a message: bounded, so a hostile file cannot
/// flood the agent's output.
fn clip(s: &str) -> String {
    s.chars().take(40).collect()
}

#[derive(Debug, thiserror::Error)]
pub enum ResolvConfError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{path}: not a regular file")]
    NotAFile { path: PathBuf },
}

/// Reads a resolv.conf from a path of the agent's own filesystem (a test, the host).
pub fn read(path: &Path) -> Result<ResolvConf, ResolvConfError> {
    let file = open_no_block(path, None)?;
    read_bounded(file, path)
}

/// Reads `/etc/resolv.conf` of another mount namespace through its root, such as
/// `/proc/<pid>/root`, resolving symlinks inside that root (openat2 RESOLVE_IN_ROOT,
/// Linux 5.6+). Without that, an absolute symlink the pod planted would be followed
/// in the agent's own filesystem; on older kernels a symlink is refused instead.
/// FIFOs and devices are refused without blocking.
pub fn read_in_root(root: &Path) -> Result<ResolvConf, ResolvConfError> {
    let path = root.join("etc/resolv.conf");
    let dir = open_dir(root).map_err(|source| ResolvConfError::Io {
        path: root.to_path_buf(),
        source,
    })?;
    let file = open_no_block(&path, Some((&dir, "etc/resolv.conf")))?;
    read_bounded(file, &path)
}

fn read_bounded(file: std::fs::File, path: &Path) -> Result<ResolvConf, ResolvConfError> {
    let io_err = |source| ResolvConfError::Io {
        path: path.to_path_buf(),
        source,
    };
    if !file.metadata().map_err(io_err)?.is_file() {
        return Err(ResolvConfError::NotAFile {
            path: path.to_path_buf(),
        });
    }
    let mut bytes = Vec::new();
    file.take(MAX_FILE_BYTES)
        .read_to_end(&mut bytes)
        .map_err(io_err)?;
    Ok(parse(&String::from_utf8_lossy(&bytes)))
}

fn open_dir(path: &Path) -> io::Result<OwnedFd> {
    let flags = OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC;
    Ok(fcntl::open(path, flags, Mode::empty())?)
}

/// Opens for reading with O_NONBLOCK (a FIFO must not hang the probe). With a root
/// directory, `rel` is resolved inside it.
fn open_no_block(
    path: &Path,
    in_root: Option<(&OwnedFd, &str)>,
) -> Result<std::fs::File, ResolvConfError> {
    let io_err = |source| ResolvConfError::Io {
        path: path.to_path_buf(),
        source,
    };
    let flags = OFlag::O_RDONLY | OFlag::O_NONBLOCK | OFlag::O_CLOEXEC | OFlag::O_NOCTTY;
    let fd = match in_root {
        None => fcntl::open(path, flags, Mode::empty()),
        Some((dir, rel)) => {
            let how = OpenHow::new()
                .flags(flags)
                .resolve(ResolveFlag::RESOLVE_IN_ROOT | ResolveFlag::RESOLVE_NO_MAGICLINKS);
            match fcntl::openat2(dir, rel, how) {
                // Kernels before 5.6: no openat2; at least refuse a symlink at the end.
                Err(Errno::ENOSYS) => {
                    fcntl::openat(dir, rel, flags | OFlag::O_NOFOLLOW, Mode::empty())
                }
                other => other,
            }
        }
    };
    Ok(std::fs::File::from(fd.map_err(|e| io_err(e.into()))?))
}

#[cfg(test)]
mod tests {
    use super::*;

    const KUBELET_WRITTEN: &str =
        "search default.svc.cluster.local svc.cluster.local cluster.local\n\
        nameserver 10.96.0.10\n\
        options ndots:5\n";

    #[test]
    fn a_kubelet_written_file() {
        let c = parse(KUBELET_WRITTEN);
        assert_eq!(c.nameservers, vec!["10.96.0.10".parse::<IpAddr>().unwrap()]);
        assert_eq!(
            c.search,
            [
                "default.svc.cluster.local",
                "svc.cluster.local",
                "cluster.local"
            ]
        );
        assert_eq!(c.options.ndots, 5);
        assert_eq!(c.options.timeout_secs, 5);
        assert_eq!(c.options.attempts, 2);
        assert!(c.ignored.is_empty(), "{:?}", c.ignored);
        assert_eq!(c.cluster_domain(), Some("cluster.local"));
    }

    #[test]
    fn glibc_defaults_with_an_empty_file() {
        let c = parse("");
        assert_eq!(c.options, ResolverOptions::default());
        assert!(c.nameservers.is_empty());
        assert_eq!(
            c.effective_nameservers(),
            vec!["127.0.0.1".parse::<IpAddr>().unwrap()]
        );
        assert_eq!(c.cluster_domain(), None);
    }

    #[test]
    fn only_three_nameservers_and_bad_ones_are_skipped() {
        let c = parse(
            "nameserver 10.0.0.1\nnameserver not-an-ip\nnameserver fe80::1%eth0\n\
             nameserver\t10.0.0.3 trailing words\nnameserver 10.0.0.4\n",
        );
        assert_eq!(
            c.nameservers,
            ["10.0.0.1", "fe80::1", "10.0.0.3"]
                .map(|s| s.parse::<IpAddr>().unwrap())
                .to_vec()
        );
        assert_eq!(
            c.ignored,
            [
                "line 2: nameserver is not an IP address",
                "line 5: nameserver beyond the first 3"
            ]
        );
    }

    #[test]
    fn the_last_search_or_domain_line_wins() {
        assert_eq!(parse("search a b\ndomain c d\n").search, ["c"]);
        assert_eq!(parse("domain c\nsearch a\tb \n").search, ["a", "b"]);
        assert_eq!(
            parse("search a b\nsearch   \n").search,
            ["a", "b"],
            "an empty line leaves the list"
        );
        let seven = parse("search a b c d e f g\n");
        assert_eq!(seven.search.len(), 7, "glibc 2.26+ keeps them all");
        assert_eq!(seven.ignored.len(), 1);
    }

    #[test]
    fn options_and_their_caps() {
        let o = parse(
            "options ndots:20 timeout:1 attempts:9 single-request-reopen use-vc rotate edns0 \
             no-tld-query no-aaaa trust-ad\n",
        );
        let opts = &o.options;
        assert_eq!(
            (opts.ndots, opts.timeout_secs, opts.attempts),
            (15, 1, 5),
            "ndots and attempts capped"
        );
        assert!(opts.single_request_reopen && !opts.single_request);
        assert!(opts.use_vc && opts.rotate && opts.edns0 && opts.no_tld_query && opts.no_aaaa);
        assert_eq!(
            o.ignored,
            [
                "line 1: ndots:20 capped at 15",
                "line 1: attempts:9 capped at 5",
                "line 1: unknown option \"trust-ad\""
            ]
        );
        let s = parse("options single-request\noptions timeout:45\n");
        assert!(s.options.single_request && !s.options.single_request_reopen);
        assert_eq!(s.options.timeout_secs, 30, "options lines accumulate");
    }

    #[test]
    fn malformed_values_do_what_glibc_does() {
        // atoi("x") is 0: glibc sets ndots to 0, so every name is tried as-is first.
        let c = parse("options ndots:x timeout:3s attempts:-1\n");
        assert_eq!(c.options.ndots, 0);
        assert_eq!(
            c.options.timeout_secs, 3,
            "atoi stops at the first non-digit"
        );
        assert_eq!(c.options.attempts, 2, "a negative value is not applied");
        assert_eq!(c.ignored.len(), 2, "{:?}", c.ignored);
    }

    #[test]
    fn comments_unknown_keywords_and_garbage() {
        let c = parse(
            "# generated\n; also a comment\nnameserver 1.1.1.1 # trailing\n\
             nameserver# no space\nsortlist 10.0.0.0\nbogus value\n\u{0}\u{1}garbage\n  \n \
             nameserver 9.9.9.9\n",
        );
        assert_eq!(c.nameservers, vec!["1.1.1.1".parse::<IpAddr>().unwrap()]);
        assert_eq!(
            c.ignored,
            [
                "line 4: unknown keyword \"nameserver#\"",
                "line 6: unknown keyword \"bogus\"",
                "line 7: not a keyword and value",
                "line 9: starts with a blank, so it is not read"
            ]
        );
    }

    #[test]
    fn cluster_domain_comes_from_the_svc_entry() {
        let c = parse("search team-a.svc.corp.example svc.corp.example corp.example\n");
        assert_eq!(c.cluster_domain(), Some("corp.example"));
        assert_eq!(parse("search example.com\n").cluster_domain(), None);
    }

    #[test]
    fn read_names_the_file_and_refuses_fifos() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("nope");
        let err = read(&missing).unwrap_err().to_string();
        assert!(err.starts_with(&missing.display().to_string()), "{err}");
        let fifo = dir.path().join("fifo");
        nix::unistd::mkfifo(&fifo, Mode::from_bits_truncate(0o600)).unwrap();
        assert!(matches!(read(&fifo), Err(ResolvConfError::NotAFile { .. })));
        let file = dir.path().join("resolv.conf");
        std::fs::write(&file, KUBELET_WRITTEN).unwrap();
        assert_eq!(read(&file).unwrap().options.ndots, 5);
    }

    #[test]
    fn read_in_root_stays_inside_the_root() {
        let outside = tempfile::tempdir().unwrap();
        std::fs::write(outside.path().join("secret"), "nameserver 6.6.6.6\n").unwrap();
        let root = tempfile::tempdir().unwrap();
        std::fs::create_dir(root.path().join("etc")).unwrap();
        let link = root.path().join("etc/resolv.conf");
        // An absolute symlink: inside the root it names a file that does not exist.
        std::os::unix::fs::symlink(outside.path().join("secret"), &link).unwrap();
        let err = read_in_root(root.path()).unwrap_err().to_string();
        assert!(err.contains("etc/resolv.conf"), "{err}");
        std::fs::remove_file(&link).unwrap();
        std::fs::write(&link, KUBELET_WRITTEN).unwrap();
        assert_eq!(
            read_in_root(root.path()).unwrap().search[0],
            "default.svc.cluster.local"
        );
    }
}
