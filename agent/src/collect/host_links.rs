//! The host's links and addresses, kept between collections and read again only when
//! the kernel announces a change. Dumping a link's attributes costs the kernel about
//! 10 µs (`benches/node_scale.rs`), so reading 500 veths every interval would cost
//! 5 ms for what rarely changes; their counters, which change all the time, come
//! from `RTM_GETSTATS`, about 0.4 µs a link.
//!
//! The announcements are subscribed before the first dump, so a change is either in
//! a dump or announced after it, and read at the next collection.

use crate::kernel::link_events::{Changes, LinkEvents};
use crate::kernel::netns::{route_socket_in, HostSocket};
use crate::kernel::rtnetlink::{Addr, Link};
use crate::kernel::ReadError;
use std::collections::HashMap;
use std::io;
use std::path::Path;

pub struct HostLinks {
    events: LinkEvents,
    sock: HostSocket,
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
        let events =
            LinkEvents::subscribe(route_socket_in(host)?, other_namespaces).map_err(in_host)?;
        Ok(Self {
            events,
            sock: HostSocket::open(host)?,
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
    /// the last call. A link the counters dump no longer lists was removed meanwhile
    /// and is left out.
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
        let cached = self.links.as_deref().unwrap_or_default();
        let stats: HashMap<u32, _> = self.sock.link_stats()?.into_iter().collect();
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

    /// The host's addresses, as of the last [`Self::links`].
    pub fn addrs(&mut self) -> io::Result<&[Addr]> {
        if self.addrs.is_none() {
            self.addrs = Some(self.sock.addrs()?);
        }
        Ok(self.addrs.as_deref().unwrap_or_default())
    }
}
