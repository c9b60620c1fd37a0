//! Network namespaces: the pins runtimes leave under their netns directories (nsfs
//! bind mounts), the namespace of each process (`/proc/<pid>/ns/net`), and a look
//! inside each namespace over rtnetlink from a thread that enters it with `setns`.

use super::netlink::{NetlinkSocket, NETLINK_ROUTE};
use super::rtnetlink::{self, Addr, Link};
use super::{read_dir, ReadError};
use crate::host::HostRoot;
use nix::sched::{setns, CloneFlags};
use nix::sys::statfs::{statfs, NSFS_MAGIC};
use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

/// A file in a netns directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PinEntry {
    /// An nsfs bind mount: the namespace it keeps alive, and when its nsfs inode was
    /// made (the pin's creation, since the mount holds the inode from then on).
    Namespace {
        path: PathBuf,
        inode: u64,
        pinned_at: SystemTime,
    },
    /// A plain file: the mount is gone (a half-finished `ip netns delete` or CNI DEL)
    /// and only the name is left.
    Stale { path: PathBuf },
}

/// A directory's device and inode. `/var/run` is usually a link to `/run`: the same
/// directory reached twice has the same identity.
pub fn dir_identity(dir: &Path) -> Result<(u64, u64), ReadError> {
    let meta = std::fs::metadata(dir).map_err(|source| ReadError {
        path: dir.to_path_buf(),
        source,
    })?;
    Ok((meta.dev(), meta.ino()))
}

/// Lists the pins of one directory. The directory missing is not found.
pub fn read_pins(dir: &Path) -> Result<Vec<PinEntry>, ReadError> {
    let mut out = Vec::new();
    for entry in read_dir(dir)? {
        let Ok(entry) = entry else { continue };
        let path = entry.path();
        let Ok(meta) = std::fs::metadata(&path) else {
            continue;
        };
        if !meta.is_file() {
            continue;
        }
        if is_nsfs(&path) {
            out.push(PinEntry::Namespace {
                inode: meta.ino(),
                pinned_at: SystemTime::UNIX_EPOCH
                    + Duration::from_secs(u64::try_from(meta.mtime()).unwrap_or(0)),
                path,
            });
        } else {
            out.push(PinEntry::Stale { path });
        }
    }
    out.sort_by(|a, b| pin_path(a).cmp(pin_path(b)));
    Ok(out)
}

fn pin_path(p: &PinEntry) -> &Path {
    match p {
        PinEntry::Namespace { path, .. } | PinEntry::Stale { path } => path,
    }
}

/// A pin that is still a namespace (on nsfs), not a leftover file.
fn is_nsfs(path: &Path) -> bool {
    statfs(path).is_ok_and(|st| st.filesystem_type() == NSFS_MAGIC)
}

/// `net:[4026532186]`, the target of a `/proc/<pid>/ns/net` link, to the inode.
pub fn parse_ns_link(target: &str) -> Option<u64> {
    target
        .trim()
        .strip_prefix("net:[")?
        .strip_suffix(']')?
        .parse()
        .ok()
}

/// procfs held open for a walk over every process: each namespace link is read
/// relative to it, without building and looking up its whole path (at 500 pods, one
/// link per process and round).
pub struct ProcDir {
    dir: OwnedFd,
    shown: PathBuf,
}

impl ProcDir {
    pub fn open(root: &HostRoot) -> Result<Self, ReadError> {
        let shown = root.proc(&[]);
        let dir = nix::fcntl::open(
            &shown,
            nix::fcntl::OFlag::O_RDONLY
                | nix::fcntl::OFlag::O_DIRECTORY
                | nix::fcntl::OFlag::O_CLOEXEC,
            nix::sys::stat::Mode::empty(),
        )
        .map_err(|e| ReadError {
            path: shown.clone(),
            source: e.into(),
        })?;
        Ok(Self { dir, shown })
    }

    /// The network namespace of a process (a pid, or `self`); errors for a process
    /// that exited or that we may not inspect.
    pub fn netns_of(&self, pid: impl std::fmt::Display) -> Result<u64, ReadError> {
        use std::io::Write;
        // `<pid>/ns/net` and its NUL, on the stack: a walk reads one a process.
        const MAX: usize = 40;
        let mut name = [0u8; MAX];
        let written = write!(&mut name[..MAX - 1], "{pid}/ns/net");
        let path = || self.shown.join(format!("{pid}/ns/net"));
        let name = written
            .ok()
            .and_then(|()| std::ffi::CStr::from_bytes_until_nul(&name).ok())
            .ok_or_else(|| ReadError::invalid(&path(), "not a process's directory"))?;
        let mut buf = [0u8; 64];
        let target =
            super::read_link_at(self.dir.as_raw_fd(), name, &mut buf).map_err(|e| ReadError {
                path: path(),
                source: e,
            })?;
        std::str::from_utf8(target)
            .ok()
            .and_then(parse_ns_link)
            .ok_or_else(|| ReadError::invalid(&path(), "not a net:[inode] link"))
    }
}

/// What one namespace holds, from inside it: its links (without counters, which
/// nothing reads inside a pod) and addresses.
#[derive(Debug, Clone, Default)]
pub struct NamespaceView {
    pub links: Vec<Link>,
    pub addrs: Vec<Addr>,
}

/// The host's links and, for each target, its id in the host's nsid table and its
/// own links and addresses (or why they could not be read).
#[derive(Debug, Default)]
pub struct Inspection {
    pub host_links: Vec<Link>,
    pub host_addrs: Vec<Addr>,
    pub targets: Vec<TargetView>,
}

#[derive(Debug)]
pub struct TargetView {
    pub nsid: Option<i32>,
    /// The error names the namespace file that could not be entered or read.
    pub view: Result<NamespaceView, ReadError>,
}

#[derive(Debug, thiserror::Error)]
pub enum InspectError {
    /// The host's namespace could not be entered, or its links read: the path is the
    /// namespace file.
    #[error(transparent)]
    Host(#[from] ReadError),
    /// The thread made to enter namespaces could not start, or died.
    #[error("{0}")]
    Thread(io::Error),
}

/// Enters `host` and then each target namespace (a pin or `/proc/<pid>/ns/net`) on a
/// thread made for it, so `setns` never touches a thread anyone else uses; the
/// thread ends with the call and its namespace with it.
pub fn inspect(host: PathBuf, targets: Vec<PathBuf>) -> Result<Inspection, InspectError> {
    super::thread_cpu::run_charged("netns-inspect", move || {
        inspect_on_this_thread(&host, &targets)
    })
    .map_err(InspectError::Thread)?
}

fn inspect_on_this_thread(host: &Path, targets: &[PathBuf]) -> Result<Inspection, InspectError> {
    let in_host = |source| ReadError {
        path: host.to_path_buf(),
        source,
    };
    let mut host_sock = enter_host(host)?;
    let host_links = rtnetlink::dump_links_on(&mut host_sock).map_err(in_host)?;
    let host_addrs = rtnetlink::dump_addrs_on(&mut host_sock).map_err(in_host)?;
    let targets = targets
        .iter()
        .map(|path| view_of(&mut host_sock, path, None))
        .collect();
    Ok(Inspection {
        host_links,
        host_addrs,
        targets,
    })
}

/// Enters each target namespace on a thread made for it, as [`inspect`] does, without
/// reading the host's links. Each target is a namespace file and the inode the scan
/// found there: a file that is now another namespace (a pin replaced, a pid reused)
/// is an error naming it, not that other namespace's view.
pub fn enter_each(
    host: PathBuf,
    targets: Vec<(PathBuf, u64)>,
) -> Result<Vec<TargetView>, InspectError> {
    super::thread_cpu::run_charged("netns-inspect", move || {
        let mut host_sock = enter_host(&host)?;
        Ok(targets
            .iter()
            .map(|(path, inode)| view_of(&mut host_sock, path, Some(*inode)))
            .collect())
    })
    .map_err(InspectError::Thread)?
}

/// Moves this thread into the host's namespace and opens a socket there, which stays
/// in it whatever the thread enters later.
fn enter_host(host: &Path) -> Result<NetlinkSocket, InspectError> {
    let in_host = |source| ReadError {
        path: host.to_path_buf(),
        source,
    };
    let host_fd = open_ns(host).map_err(in_host)?;
    enter(&host_fd).map_err(in_host)?;
    Ok(NetlinkSocket::open(NETLINK_ROUTE).map_err(in_host)?)
}

/// The host's id for the namespace at `path` and its view from inside, entering it
/// on this thread.
fn view_of(host_sock: &mut NetlinkSocket, path: &Path, inode: Option<u64>) -> TargetView {
    let in_target = |source| ReadError {
        path: path.to_path_buf(),
        source,
    };
    let fd = match open_ns(path) {
        Ok(fd) => fd,
        Err(e) => {
            return TargetView {
                nsid: None,
                view: Err(in_target(e)),
            }
        }
    };
    if let Some(listed) = inode {
        let found = nix::sys::stat::fstat(&fd)
            .map(|st| st.st_ino)
            .map_err(io::Error::from);
        match found {
            Ok(found) if found != listed => {
                return TargetView {
                    nsid: None,
                    view: Err(ReadError::invalid(
                        path,
                        format!(
                        "now net:[{found}], not the net:[{listed}] listed: it changed meanwhile"
                    ),
                    )),
                }
            }
            Ok(_) => {}
            Err(e) => {
                return TargetView {
                    nsid: None,
                    view: Err(in_target(e)),
                }
            }
        }
    }
    let nsid = rtnetlink::nsid_of(host_sock, fd.as_raw_fd()).ok().flatten();
    let view = view_inside(&fd).map_err(in_target);
    TargetView { nsid, view }
}

/// A rtnetlink socket in the host's namespace, for the host's own links, addresses
/// and counters, and the id the host has for itself.
///
/// Other namespaces are entered ([`enter_each`]) rather than read from here by id
/// (IFLA_TARGET_NETNSID): the kernel sizes each link dump over every link of the
/// asking socket's namespace (`rtnl_calcit`), so reading 500 pods from the host's
/// socket cost 84 ms of CPU against 43 ms entering each (`benches/node_scale.rs`).
pub struct HostSocket {
    sock: NetlinkSocket,
    /// The host's namespace, to ask the id it has in its own table.
    host: OwnedFd,
}

/// A rtnetlink socket in the namespace `host` (a namespace file): opened on the
/// calling thread when it is already there, else from a thread made to enter it
/// (the socket keeps the namespace it was opened in; the thread ends at once).
pub fn route_socket_in(host: &Path) -> Result<NetlinkSocket, ReadError> {
    let in_host = |source| ReadError {
        path: host.to_path_buf(),
        source,
    };
    let here = std::fs::metadata(OWN).map_err(in_host)?;
    let there = std::fs::metadata(host).map_err(in_host)?;
    if (here.dev(), here.ino()) == (there.dev(), there.ino()) {
        return NetlinkSocket::open(NETLINK_ROUTE).map_err(in_host);
    }
    let target = host.to_path_buf();
    super::thread_cpu::run_charged("netns-host", move || -> io::Result<_> {
        enter(&open_ns(&target)?)?;
        NetlinkSocket::open(NETLINK_ROUTE)
    })
    .and_then(|opened| opened)
    .map_err(in_host)
}

impl HostSocket {
    /// Opens the socket in `host` (a namespace file), see [`route_socket_in`].
    pub fn open(host: &Path) -> Result<Self, ReadError> {
        let sock = route_socket_in(host)?;
        let host_fd = open_ns(host).map_err(|source| ReadError {
            path: host.to_path_buf(),
            source,
        })?;
        Ok(Self {
            sock,
            host: host_fd,
        })
    }

    /// The id the host's namespace has in its own table, if it has one.
    pub fn own_id(&mut self) -> Option<i32> {
        rtnetlink::nsid_of(&mut self.sock, self.host.as_raw_fd())
            .ok()
            .flatten()
    }

    pub fn addrs(&mut self) -> io::Result<Vec<Addr>> {
        rtnetlink::dump_addrs_on(&mut self.sock)
    }

    /// Every link's counters by ifindex, see [`rtnetlink::dump_link_stats`].
    pub fn link_stats(&mut self) -> io::Result<Vec<(u32, rtnetlink::LinkStats)>> {
        rtnetlink::dump_link_stats(&mut self.sock)
    }

    /// The links without their counters, see [`rtnetlink::dump_links_without_stats`].
    pub fn links_without_stats(&mut self) -> io::Result<Vec<Link>> {
        rtnetlink::dump_links_without_stats(&mut self.sock)
    }
}

fn view_inside(fd: &OwnedFd) -> io::Result<NamespaceView> {
    enter(fd)?;
    let mut sock = NetlinkSocket::open(NETLINK_ROUTE)?;
    Ok(NamespaceView {
        links: rtnetlink::dump_links_without_stats(&mut sock)?,
        addrs: rtnetlink::dump_addrs_on(&mut sock)?,
    })
}

/// The calling thread's own network namespace.
pub const OWN: &str = "/proc/thread-self/ns/net";

pub(crate) fn open_ns(path: &Path) -> io::Result<OwnedFd> {
    Ok(std::fs::File::open(path)?.into())
}

/// Moves the calling thread into the namespace: only a thread made for this (as
/// inspect() makes and discards, or a DNS probe thread) may be moved.
pub(crate) fn enter(fd: &OwnedFd) -> io::Result<()> {
    setns(fd, CloneFlags::CLONE_NEWNET).map_err(io::Error::from)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ns_links_give_the_inode() {
        assert_eq!(parse_ns_link("net:[4026532186]"), Some(4026532186));
        assert_eq!(parse_ns_link("net:[4026532186]\n"), Some(4026532186));
        assert_eq!(parse_ns_link("mnt:[4026531841]"), None);
        assert_eq!(parse_ns_link("net:[abc]"), None);
    }

    #[test]
    fn a_missing_pin_directory_is_not_found() {
        let err = read_pins(Path::new("/nonexistent-nodediag-dir")).unwrap_err();
        assert_eq!(err.source.kind(), io::ErrorKind::NotFound);
        assert_eq!(err.path, Path::new("/nonexistent-nodediag-dir"));
    }

    #[test]
    fn plain_files_in_a_pin_directory_are_stale_pins() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("cni-1234"), "").unwrap();
        let pins = read_pins(dir.path()).unwrap();
        assert_eq!(
            pins,
            vec![PinEntry::Stale {
                path: dir.path().join("cni-1234")
            }]
        );
    }

    #[test]
    fn a_namespace_file_is_nsfs_and_a_plain_file_is_not() {
        assert!(is_nsfs(Path::new("/proc/self/ns/net")));
        let dir = tempfile::tempdir().unwrap();
        let plain = dir.path().join("cni-1");
        std::fs::write(&plain, "").unwrap();
        assert!(!is_nsfs(&plain));
        assert!(!is_nsfs(&dir.path().join("missing")));
    }

    #[test]
    fn a_process_namespace_is_its_link_inode() {
        let root = HostRoot::default();
        let inode = std::fs::metadata("/proc/self/ns/net").unwrap().ino();
        let proc = ProcDir::open(&root).unwrap();
        assert_eq!(proc.netns_of("self").unwrap(), inode);
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("7/ns")).unwrap();
        std::os::unix::fs::symlink("mnt:[4026531841]", dir.path().join("7/ns/net")).unwrap();
        let fake = HostRoot {
            proc: dir.path().to_path_buf(),
            ..HostRoot::default()
        };
        let fake = ProcDir::open(&fake).unwrap();
        let e = fake.netns_of(7).unwrap_err();
        assert_eq!(e.path, dir.path().join("7/ns/net"));
        assert!(e.to_string().contains("not a net:[inode] link"), "{e}");
        assert!(fake.netns_of(8).unwrap_err().is_not_found());
    }

    #[test]
    fn a_directory_reached_through_a_link_is_the_same() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("run")).unwrap();
        std::os::unix::fs::symlink("run", dir.path().join("var-run")).unwrap();
        assert_eq!(
            dir_identity(&dir.path().join("run")).unwrap(),
            dir_identity(&dir.path().join("var-run")).unwrap()
        );
        let e = dir_identity(&dir.path().join("none")).unwrap_err();
        assert_eq!(e.path, dir.path().join("none"));
    }

    #[test]
    fn inspection_errors_name_the_namespace_file() {
        let e = inspect("/nonexistent-nodediag-ns".into(), vec![]).unwrap_err();
        assert!(
            e.to_string().starts_with("/nonexistent-nodediag-ns: "),
            "{e}"
        );
        let got = inspect(
            "/proc/self/ns/net".into(),
            vec!["/nonexistent-nodediag-pin".into()],
        );
        let got = match got {
            // Entering a namespace needs CAP_SYS_ADMIN, which CI has.
            Err(InspectError::Host(e))
                if e.source.kind() == io::ErrorKind::PermissionDenied
                    && std::env::var_os("CI").is_none() =>
            {
                eprintln!("skipped: {e}: entering a namespace needs CAP_SYS_ADMIN");
                return;
            }
            other => other.unwrap(),
        };
        assert!(got.host_links.iter().any(|l| &*l.name == "lo"));
        let target = got.targets[0].view.as_ref().unwrap_err();
        assert_eq!(target.path, Path::new("/nonexistent-nodediag-pin"));
        assert!(target.is_not_found());
    }
}
