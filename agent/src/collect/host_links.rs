//! The host's links and addresses, kept between collections and read again only when
//! the kernel announces a change. Dumping a link's attributes costs the kernel about
//! 10 µs (`benches/node_scale.rs`), so reading 500 veths every interval would cost
//! 5 ms for what rarely changes; their counters, which change all the time, come
//! from `RTM_GETSTATS`, about 0.4 µs a link.
//!
//! The announcements are subscribed before the first dump, so a change is either in
//! a dump or announced after it, and read at the next collection.
//!
//! The nic and netns collectors both read the host's links on the same tick; the
//! counters dump is the part that costs (the kernel sums each veth's per-CPU
//! counters: 2.4 ms a round for both at 500 pods), so the first of them dumps and
//! the other, moments later, takes that dump.

use super::SAME_TICK;
use crate::kernel::link_events::{Changes, LinkEvents};
use crate::kernel::netns::{route_socket_in, HostSocket};
use crate::kernel::rtnetlink::{Addr, Link, LinkStats};
use crate::kernel::ReadError;
use foldhash::HashMap;
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Link counters by ifindex.
type Counters = HashMap<u32, LinkStats>;

/// A namespace's device and inode: which namespace a dump was taken in.
type NamespaceId = (u64, u64);

/// The last counters dump of each namespace dumped (on a node, the host's alone).
static LAST_COUNTERS: Mutex<Vec<(NamespaceId, Instant, Arc<Counters>)>> = Mutex::new(Vec::new());

pub struct HostLinks {
    events: LinkEvents,
    sock: HostSocket,
    namespace: NamespaceId,
    /// Links without counters as last dumped; None until dumped again.
    links: Option<Vec<Link>>,
    addrs: Option<Vec<Addr>>,
}

impl HostLinks {
    /// Opens both sockets in `host` (a namespace file). With `other_namespaces`,
    /// changes inside the namespaces the host has ids for are heard too (see
    /// [`LinkEvents::subscribe`]).
    pub fn open(host: &Path, other_namespaces: bool) -> Result<Self, ReadError> {
        let in_host = |source| ReadError {
            path: host.to_path_buf(),
            source,
        };
        let namespace = std::fs::metadata(host)
            .map(|m| (m.dev(), m.ino()))
            .map_err(in_host)?;
        let events =
            LinkEvents::subscribe(route_socket_in(host)?, other_namespaces).map_err(in_host)?;
        Ok(Self {
            events,
            sock: HostSocket::open(host)?,
            namespace,
            links: None,
            addrs: None,
        })
    }

    /// Whether [`Changes::namespaces`] can be trusted: false when changes inside other
    /// namespaces are not announced here (no CAP_NET_BROADCAST).
    pub fn hears_other_namespaces(&self) -> bool {
        self.events.hears_other_namespaces()
    }

    /// The host's links with their current counters, and what was announced since
    /// the last call. A link the counters dump does not list was removed meanwhile,
    /// or made after the other collector's dump moments before: it is left out, and
    /// the next round has the one made.
    pub fn links(&mut self) -> io::Result<(Vec<Link>, Changes)> {
        let sock = &mut self.sock;
        let changes = self.events.changes(|| sock.own_id())?;
        if changes.lost || changes.host_links {
            self.links = None;
        }
        if changes.lost || changes.host_addrs {
            self.addrs = None;
        }
        if self.links.is_none() {
            self.links = Some(self.sock.links_without_stats()?);
        }
        let stats = self.counters(SAME_TICK)?;
        let cached = self.links.as_deref().unwrap_or_default();
        let links = cached
            .iter()
            .filter_map(|l| {
                let s = stats.get(&l.index)?;
                Some(Link {
                    stats: Some(*s),
                    ..l.clone()
                })
            })
            .collect();
        Ok((links, changes))
    }

    /// Every link's counters: the dump of this namespace taken less than `fresh` ago,
    /// else a new one. The lock is held while dumping, so a collector that asks
    /// meanwhile waits for that dump instead of making its own.
    fn counters(&mut self, fresh: Duration) -> io::Result<Arc<Counters>> {
        let mut last = LAST_COUNTERS.lock().unwrap_or_else(|e| e.into_inner());
        let kept = last.iter().position(|(ns, _, _)| *ns == self.namespace);
        if let Some((_, taken, counters)) = kept.map(|i| &last[i]) {
            if taken.elapsed() < fresh {
                return Ok(counters.clone());
            }
        }
        let taken = Instant::now();
        let counters = Arc::new(self.sock.link_stats()?.into_iter().collect());
        let entry = (self.namespace, taken, Arc::clone(&counters));
        match kept {
            Some(i) => last[i] = entry,
            None => last.push(entry),
        }
        Ok(counters)
    }

    /// The host's addresses, as of the last [`Self::links`].
    pub fn addrs(&mut self) -> io::Result<&[Addr]> {
        if self.addrs.is_none() {
            self.addrs = Some(self.sock.addrs()?);
        }
        Ok(self.addrs.as_deref().unwrap_or_default())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernel::netns::OWN;
    use nix::sched::{unshare, CloneFlags};

    const LONG: Duration = Duration::from_secs(3600);

    /// `f` on a thread in a network namespace of its own, which no other test's
    /// dump can be taken in; None where one cannot be made.
    fn in_new_namespace<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> Option<T> {
        let ran = std::thread::spawn(move || unshare(CloneFlags::CLONE_NEWNET).map(|()| f()))
            .join()
            .unwrap();
        if let Err(e) = &ran {
            eprintln!("skipped: a new network namespace: {e} (needs CAP_SYS_ADMIN)");
        }
        ran.ok()
    }

    #[test]
    fn collectors_in_one_namespace_share_a_fresh_counters_dump() {
        in_new_namespace(|| {
            let mut nic = HostLinks::open(Path::new(OWN), false).unwrap();
            let mut netns = HostLinks::open(Path::new(OWN), false).unwrap();
            let first = nic.counters(LONG).unwrap();
            // A new namespace has lo and nothing else.
            assert_eq!(first.keys().copied().collect::<Vec<_>>(), [1]);
            let taken = netns.counters(LONG).unwrap();
            assert!(
                Arc::ptr_eq(&first, &taken),
                "the second took the first's dump"
            );
            let own = netns.counters(Duration::ZERO).unwrap();
            assert!(
                !Arc::ptr_eq(&first, &own),
                "a dump no longer fresh is made again"
            );
        });
    }

    #[test]
    fn another_namespace_never_takes_the_hosts_counters() {
        let mut host = HostLinks::open(Path::new(OWN), false).unwrap();
        let host_counters = host.counters(LONG).unwrap();
        let Some(inside) = in_new_namespace(|| {
            let mut links = HostLinks::open(Path::new(OWN), false).unwrap();
            links.counters(LONG).unwrap()
        }) else {
            return;
        };
        assert!(!Arc::ptr_eq(&host_counters, &inside));
        assert_eq!(inside.keys().copied().collect::<Vec<_>>(), [1]);
    }
}
