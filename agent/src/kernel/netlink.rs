//! A minimal synchronous netlink socket and attribute walker, enough for the few
//! dumps nodediag makes (ctnetlink statistics, rtnetlink links, ethtool link modes).
//! It runs on blocking threads only.

use nix::sys::socket::{self, sockopt, AddressFamily, MsgFlags, NetlinkAddr, SockFlag, SockType};
use nix::sys::time::TimeVal;
use std::io;
use std::ops::ControlFlow;
use std::os::fd::{AsRawFd, OwnedFd};

pub use nix::sys::socket::SockProtocol;
pub const NETLINK_ROUTE: SockProtocol = SockProtocol::NetlinkRoute;
pub const NETLINK_NETFILTER: SockProtocol = SockProtocol::NetlinkNetFilter;
pub const NETLINK_GENERIC: SockProtocol = SockProtocol::NetlinkGeneric;

pub const NLM_F_REQUEST: u16 = 0x1;
pub const NLM_F_ACK: u16 = 0x4;
pub const NLM_F_DUMP: u16 = 0x300;
pub const NLM_F_CREATE: u16 = 0x400;
pub const NLMSG_ERROR: u16 = 0x2;
pub const NLMSG_DONE: u16 = 0x3;
pub const NLMSG_HDRLEN: usize = 16;
const NETLINK_LISTEN_ALL_NSID: libc::c_int = 8;
const NLA_HDRLEN: usize = 4;
pub const NLA_F_NESTED: u16 = 0x8000;
const NLA_TYPE_MASK: u16 = 0x3fff;

pub struct NetlinkSocket {
    fd: OwnedFd,
    seq: u32,
    /// A dump was stopped before its end: the kernel is still dumping into this socket.
    interrupted: bool,
    /// The receive buffer, kept between requests: a socket making many small requests
    /// (one namespace after another) would otherwise zero 64 KiB for each.
    rx: Vec<u8>,
}

/// One message of a reply: its type, header flags and the payload after the header.
pub struct Message {
    pub kind: u16,
    pub payload: Vec<u8>,
}

impl NetlinkSocket {
    pub fn open(protocol: SockProtocol) -> io::Result<Self> {
        let fd: OwnedFd = socket::socket(
            AddressFamily::Netlink,
            SockType::Raw,
            SockFlag::SOCK_CLOEXEC,
            protocol,
        )?;
        // A kernel that never answers must not hang a collector thread forever.
        socket::setsockopt(&fd, sockopt::ReceiveTimeout, &TimeVal::new(5, 0))?;
        Ok(Self {
            fd,
            seq: 1,
            interrupted: false,
            rx: Vec::new(),
        })
    }

    /// Subscribes to multicast groups (a bit each: 1 << (RTNLGRP_LINK - 1), ...): the
    /// kernel then queues a message on this socket for every change it announces
    /// there. Binding also gives the socket a port of its own: unbound, it has port
    /// 0, the kernel's, and the kernel sends announcements to all but their sender.
    pub fn subscribe(&self, groups: u32) -> io::Result<()> {
        socket::bind(self.fd.as_raw_fd(), &NetlinkAddr::new(0, groups))?;
        Ok(())
    }

    /// Also receives the groups' messages from every other namespace this socket's
    /// namespace has given an id, each tagged with that id (NETLINK_LISTEN_ALL_NSID,
    /// Linux 4.7+; needs CAP_NET_BROADCAST).
    pub fn listen_all_nsid(&self) -> io::Result<()> {
        let on: libc::c_int = 1;
        // SAFETY: valid fd, pointer and length of an int (nix has no such option).
        let rc = unsafe {
            libc::setsockopt(
                self.fd.as_raw_fd(),
                libc::SOL_NETLINK,
                NETLINK_LISTEN_ALL_NSID,
                &on as *const libc::c_int as *const libc::c_void,
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        if rc < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    /// Asks for a receive buffer of `bytes`, beyond net.core.rmem_max when allowed
    /// (SO_RCVBUFFORCE needs CAP_NET_ADMIN), so bursts of announcements fit.
    pub fn grow_receive_buffer(&self, bytes: usize) -> io::Result<()> {
        socket::setsockopt(&self.fd, sockopt::RcvBufForce, &bytes)
            .or_else(|_| socket::setsockopt(&self.fd, sockopt::RcvBuf, &bytes))?;
        Ok(())
    }

    /// Reads every announcement already queued on a subscribed socket, without
    /// waiting, handing `each` the id of the namespace it came from (None: this
    /// socket's own), its type and payload. The answer says whether the kernel
    /// dropped announcements since the last call (the buffer overflowed, ENOBUFS):
    /// anything may then have changed unseen.
    pub fn drain_announcements(
        &mut self,
        mut each: impl FnMut(Option<i32>, u16, &[u8]),
    ) -> io::Result<bool> {
        let mut buf = std::mem::take(&mut self.rx);
        buf.resize(RECV_BUFFER, 0);
        let mut lost = false;
        let result = loop {
            match self.recv_tagged(&mut buf) {
                Ok(Some((n, nsid))) => {
                    for m in messages(&buf[..n]).map_while(Result::ok) {
                        each(nsid, m.kind, m.payload);
                    }
                }
                Ok(None) => break Ok(lost),
                Err(e) if e.raw_os_error() == Some(libc::ENOBUFS) => lost = true,
                Err(e) => break Err(e),
            }
        };
        self.rx = buf;
        result
    }

    /// One datagram without waiting, with the namespace id the kernel tags it with;
    /// None when nothing is queued.
    fn recv_tagged(&self, buf: &mut [u8]) -> io::Result<Option<(usize, Option<i32>)>> {
        let mut iov = [std::io::IoSliceMut::new(buf)];
        let mut control = nix::cmsg_space!(libc::c_int);
        let msg = match socket::recvmsg::<NetlinkAddr>(
            self.fd.as_raw_fd(),
            &mut iov,
            Some(&mut control),
            MsgFlags::MSG_DONTWAIT,
        ) {
            Ok(m) => m,
            Err(nix::errno::Errno::EAGAIN) => return Ok(None),
            Err(e) => return Err(e.into()),
        };
        let mut nsid = None;
        for c in msg.cmsgs()? {
            if let socket::ControlMessageOwned::Unknown(u) = c {
                if u.cmsg_header.cmsg_level == libc::SOL_NETLINK
                    && u.cmsg_header.cmsg_type == NETLINK_LISTEN_ALL_NSID
                {
                    nsid = u
                        .data_bytes
                        .get(..4)
                        .map(|b| i32::from_ne_bytes(b.try_into().unwrap_or_default()));
                }
            }
        }
        Ok(Some((msg.bytes, nsid)))
    }

    /// Sends one request and collects every reply message until the kernel says it is
    /// done (a dump) or acknowledges (a plain request). A netlink error is returned as
    /// the errno it carries, so EPERM reads as "permission denied".
    pub fn request(&mut self, kind: u16, flags: u16, payload: &[u8]) -> io::Result<Vec<Message>> {
        let mut out = Vec::new();
        // Never stops early, so the answer is always Continue.
        let _ = self.request_each(kind, flags, payload, |mkind, body| {
            out.push(Message {
                kind: mkind,
                payload: body.to_vec(),
            });
            ControlFlow::Continue(())
        })?;
        Ok(out)
    }

    /// Like `request`, but hands each reply message (type, payload) to `each` as it
    /// arrives instead of keeping them, so a dump of any size costs one receive
    /// buffer. `each` may stop early: the answer is then `Break`, the rest of the
    /// dump is left unread, and this socket refuses further requests (the kernel
    /// would still be dumping into it): drop it and open another.
    pub fn request_each(
        &mut self,
        kind: u16,
        flags: u16,
        payload: &[u8],
        mut each: impl FnMut(u16, &[u8]) -> ControlFlow<()>,
    ) -> io::Result<ControlFlow<()>> {
        if self.interrupted {
            return Err(io::Error::other(
                "this netlink socket holds the rest of an interrupted dump; open a new one",
            ));
        }
        let seq = self.next_seq();
        let mut msg = Vec::with_capacity(NLMSG_HDRLEN + payload.len());
        push_message(
            &mut msg,
            kind,
            flags | NLM_F_REQUEST | NLM_F_ACK,
            seq,
            payload,
        );
        self.send(&msg)?;
        let is_dump = flags & NLM_F_DUMP == NLM_F_DUMP;
        let mut buf = std::mem::take(&mut self.rx);
        buf.resize(RECV_BUFFER, 0);
        let answer = self.receive_replies(seq, is_dump, &mut buf, &mut each);
        self.rx = buf;
        if answer.as_ref().is_ok_and(|a| a.is_break()) {
            self.interrupted = true;
        }
        answer
    }

    fn receive_replies(
        &mut self,
        seq: u32,
        is_dump: bool,
        buf: &mut [u8],
        each: &mut impl FnMut(u16, &[u8]) -> ControlFlow<()>,
    ) -> io::Result<ControlFlow<()>> {
        loop {
            let n = self.recv(buf)?;
            for m in messages(&buf[..n]) {
                let m = m?;
                if m.seq != seq {
                    continue;
                }
                match m.kind {
                    NLMSG_DONE => return Ok(ControlFlow::Continue(())),
                    NLMSG_ERROR => match error_code(m.payload)? {
                        // The ACK that ends a non-dump request.
                        0 if !is_dump => return Ok(ControlFlow::Continue(())),
                        0 => continue,
                        errno => return Err(io::Error::from_raw_os_error(errno)),
                    },
                    _ => {
                        if each(m.kind, m.payload).is_break() {
                            return Ok(ControlFlow::Break(()));
                        }
                    }
                }
            }
        }
    }

    /// The sequence number for the next message this socket sends.
    pub fn next_seq(&mut self) -> u32 {
        self.seq = self.seq.wrapping_add(1);
        self.seq
    }

    /// Sends one buffer of whole messages to the kernel (nl_pid 0).
    pub fn send(&self, msg: &[u8]) -> io::Result<()> {
        let kernel = NetlinkAddr::new(0, 0);
        socket::sendto(self.fd.as_raw_fd(), msg, &kernel, MsgFlags::empty())?;
        Ok(())
    }

    /// Receives one datagram (one or more messages); walk it with `messages`.
    pub fn recv(&self, buf: &mut [u8]) -> io::Result<usize> {
        Ok(socket::recv(self.fd.as_raw_fd(), buf, MsgFlags::empty())?)
    }
}

/// Large enough for the biggest datagram a dump sends (the kernel fills up to 32 KiB).
pub const RECV_BUFFER: usize = 64 * 1024;

/// One message of a received datagram, borrowed from the receive buffer.
pub struct RawMessage<'a> {
    pub kind: u16,
    pub flags: u16,
    pub seq: u32,
    pub payload: &'a [u8],
}

/// Walks the messages of one received datagram; a length that does not fit is an
/// error, after which the walk ends.
pub fn messages(buf: &[u8]) -> impl Iterator<Item = io::Result<RawMessage<'_>>> {
    let mut rest = buf;
    std::iter::from_fn(move || {
        if rest.len() < NLMSG_HDRLEN {
            return None;
        }
        let mlen = u32::from_ne_bytes(rest[0..4].try_into().unwrap()) as usize;
        if mlen < NLMSG_HDRLEN || mlen > rest.len() {
            rest = &[];
            return Some(Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "truncated netlink message",
            )));
        }
        let m = RawMessage {
            kind: u16::from_ne_bytes(rest[4..6].try_into().unwrap()),
            flags: u16::from_ne_bytes(rest[6..8].try_into().unwrap()),
            seq: u32::from_ne_bytes(rest[8..12].try_into().unwrap()),
            payload: &rest[NLMSG_HDRLEN..mlen],
        };
        rest = &rest[align(mlen).min(rest.len())..];
        Some(Ok(m))
    })
}

/// The (positive) errno of an NLMSG_ERROR payload; 0 is an acknowledgement.
pub fn error_code(payload: &[u8]) -> io::Result<i32> {
    let code = payload
        .get(0..4)
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "short netlink error"))?;
    Ok(-i32::from_ne_bytes(code.try_into().unwrap()))
}

/// Appends one message (header and payload) to a buffer being sent.
pub fn push_message(buf: &mut Vec<u8>, kind: u16, flags: u16, seq: u32, payload: &[u8]) {
    let len = NLMSG_HDRLEN + payload.len();
    buf.extend_from_slice(&(len as u32).to_ne_bytes());
    buf.extend_from_slice(&kind.to_ne_bytes());
    buf.extend_from_slice(&flags.to_ne_bytes());
    buf.extend_from_slice(&seq.to_ne_bytes());
    buf.extend_from_slice(&0u32.to_ne_bytes());
    buf.extend_from_slice(payload);
    buf.resize(align(buf.len()), 0);
}

fn align(len: usize) -> usize {
    (len + 3) & !3
}

/// Walks the attributes in `buf`: yields (type without flags, payload).
pub fn attrs(buf: &[u8]) -> impl Iterator<Item = (u16, &[u8])> {
    let mut rest = buf;
    std::iter::from_fn(move || {
        if rest.len() < NLA_HDRLEN {
            return None;
        }
        let len = u16::from_ne_bytes([rest[0], rest[1]]) as usize;
        let kind = u16::from_ne_bytes([rest[2], rest[3]]) & NLA_TYPE_MASK;
        if len < NLA_HDRLEN || len > rest.len() {
            return None;
        }
        let payload = &rest[NLA_HDRLEN..len];
        rest = &rest[align(len).min(rest.len())..];
        Some((kind, payload))
    })
}

/// Appends an attribute to a request being built.
pub fn push_attr(buf: &mut Vec<u8>, kind: u16, payload: &[u8]) {
    let len = NLA_HDRLEN + payload.len();
    buf.extend_from_slice(&(len as u16).to_ne_bytes());
    buf.extend_from_slice(&kind.to_ne_bytes());
    buf.extend_from_slice(payload);
    buf.resize(align(buf.len()), 0);
}

/// Appends a nested attribute whose payload `fill` writes.
pub fn push_nested(buf: &mut Vec<u8>, kind: u16, fill: impl FnOnce(&mut Vec<u8>)) {
    let start = buf.len();
    buf.extend_from_slice(&[0, 0]);
    buf.extend_from_slice(&(kind | NLA_F_NESTED).to_ne_bytes());
    fill(buf);
    let len = (buf.len() - start) as u16;
    buf[start..start + 2].copy_from_slice(&len.to_ne_bytes());
    buf.resize(align(buf.len()), 0);
}

pub fn u32_ne(b: &[u8]) -> Option<u32> {
    Some(u32::from_ne_bytes(b.get(..4)?.try_into().ok()?))
}

pub fn u32_be(b: &[u8]) -> Option<u32> {
    Some(u32::from_be_bytes(b.get(..4)?.try_into().ok()?))
}

pub fn u16_ne(b: &[u8]) -> Option<u16> {
    Some(u16::from_ne_bytes(b.get(..2)?.try_into().ok()?))
}

/// A NUL-terminated string attribute.
pub fn string(b: &[u8]) -> String {
    let end = b.iter().position(|&c| c == 0).unwrap_or(b.len());
    String::from_utf8_lossy(&b[..end]).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attributes_round_trip_with_padding() {
        let mut buf = Vec::new();
        push_attr(&mut buf, 2, b"eth0\0");
        push_attr(&mut buf, 5 | NLA_F_NESTED, &7u32.to_ne_bytes());
        let got: Vec<(u16, Vec<u8>)> = attrs(&buf).map(|(k, v)| (k, v.to_vec())).collect();
        assert_eq!(got.len(), 2);
        assert_eq!(got[0].0, 2);
        assert_eq!(string(&got[0].1), "eth0");
        assert_eq!(got[1].0, 5, "the nested flag is masked off");
        assert_eq!(u32_ne(&got[1].1), Some(7));
    }

    #[test]
    fn truncated_attributes_stop_the_walk() {
        let mut buf = Vec::new();
        push_attr(&mut buf, 1, &[1, 2, 3, 4]);
        buf.extend_from_slice(&[200, 0, 1, 0]);
        assert_eq!(attrs(&buf).count(), 1);
    }

    #[test]
    fn messages_round_trip_and_a_bad_length_ends_the_walk() {
        let mut buf = Vec::new();
        push_message(&mut buf, 0x10, NLM_F_REQUEST, 7, &[1, 2, 3]);
        push_message(&mut buf, 0x11, 0, 8, &[]);
        let got: Vec<(u16, u16, u32, Vec<u8>)> = messages(&buf)
            .map(|m| m.map(|m| (m.kind, m.flags, m.seq, m.payload.to_vec())))
            .collect::<io::Result<_>>()
            .unwrap();
        assert_eq!(
            got,
            vec![
                (0x10, NLM_F_REQUEST, 7, vec![1, 2, 3]),
                (0x11, 0, 8, vec![])
            ]
        );
        buf[0] = 200; // the first message now claims more bytes than there are
        let mut walk = messages(&buf);
        assert!(walk.next().unwrap().is_err());
        assert!(walk.next().is_none());
    }

    #[test]
    fn nested_attributes_carry_their_length_and_flag() {
        let mut buf = Vec::new();
        push_nested(&mut buf, 4, |inner| {
            push_attr(inner, 1, &[9, 9]);
            push_attr(inner, 2, b"x\0");
        });
        assert_eq!(u16::from_ne_bytes([buf[2], buf[3]]), 4 | NLA_F_NESTED);
        let (kind, payload) = attrs(&buf).next().unwrap();
        assert_eq!(kind, 4);
        let inner: Vec<u16> = attrs(payload).map(|(k, _)| k).collect();
        assert_eq!(inner, vec![1, 2]);
        assert_eq!(error_code(&(-1i32).to_ne_bytes()).unwrap(), 1);
        assert!(error_code(&[0, 0]).is_err());
    }

    #[test]
    fn a_dump_stopped_early_leaves_the_socket_refusing_requests() {
        const RTM_GETLINK: u16 = 18;
        let mut sock = NetlinkSocket::open(NETLINK_ROUTE).unwrap();
        let request = [0u8; 16]; // struct ifinfomsg, all families
        let mut seen = 0;
        let flow = sock
            .request_each(RTM_GETLINK, NLM_F_DUMP, &request, |_, _| {
                seen += 1;
                ControlFlow::Break(())
            })
            .unwrap();
        assert!(flow.is_break());
        assert_eq!(seen, 1, "nothing handed over after the stop");
        let Err(err) = sock.request(RTM_GETLINK, NLM_F_DUMP, &request) else {
            panic!("a socket with an interrupted dump must refuse another request");
        };
        assert!(err.to_string().contains("interrupted dump"), "{err}");
        // A fresh socket dumps the whole list, loopback at least.
        let mut fresh = NetlinkSocket::open(NETLINK_ROUTE).unwrap();
        assert!(!fresh
            .request(RTM_GETLINK, NLM_F_DUMP, &request)
            .unwrap()
            .is_empty());
    }
}
