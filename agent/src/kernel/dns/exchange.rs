//! One candidate name's exchange with one server, as glibc's res_send does it
//! (resolv/res_send.c, `send_dg` and `send_vc`), with every query recorded:
//!
//! - A and AAAA go out together from one UDP socket (sendmmsg), the pattern that
//!   loses the conntrack insert race: both packets are new flows with the same
//!   5-tuple and one of them can be dropped (kubernetes#56903).
//! - A try waits `timeout` for both replies. With one nameserver, glibc makes
//!   `attempts` tries on the same socket, the same query ids each time.
//! - A try that ends with one reply and not the other switches the resolver to
//!   single-request for good (send A, wait, send AAAA) and repeats at once; if that
//!   also loses a reply, to single-request-reopen (a new socket for the AAAA); after
//!   that the one reply is used. These repeats cost a full timeout each but no
//!   attempt: the classic 5 s stall of a lost AAAA.
//! - SERVFAIL, NOTIMP and REFUSED replies are set aside: if the other reply is a
//!   real answer it alone counts, if both are rejections the try is repeated.
//! - A truncated reply moves the exchange to TCP, as does `options use-vc`; TCP
//!   gets one try.
//!
//! One simplification: in single-request mode glibc sends nothing more after a
//! rejected A reply and waits out the try; we send the AAAA anyway.

use super::search::Verdict;
use super::wire::{self, QType, Rcode, Response};
use serde::Serialize;
use std::io::{self, Read, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpStream, UdpSocket};
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

/// How the two queries of a candidate are sent; sticky once glibc switches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum SendMode {
    Parallel,
    SingleRequest,
    SingleRequestReopen,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Transport {
    Udp,
    Tcp,
}

/// What became of one query sent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum QueryOutcome {
    /// NOERROR with this many records in the answer section.
    Answer {
        records: u16,
    },
    NxDomain,
    /// NOERROR with an empty answer section.
    NoData,
    ServFail,
    Refused,
    /// FORMERR, NOTIMP or a code without a name here.
    OtherRcode {
        rcode: u8,
    },
    /// The UDP reply had TC set; the exchange went on over TCP.
    Truncated,
    /// No reply within the try's timeout.
    Timeout,
    /// The probe's own deadline came before the try's timeout did.
    Cancelled,
    /// The socket said why: ECONNREFUSED (ICMP port unreachable), ENETUNREACH...
    NetworkError {
        error: String,
    },
}

impl QueryOutcome {
    fn of(resp: &Response) -> QueryOutcome {
        if resp.truncated {
            return QueryOutcome::Truncated;
        }
        match resp.rcode {
            Rcode::NoError if resp.answer_count > 0 => QueryOutcome::Answer {
                records: resp.answer_count,
            },
            Rcode::NoError => QueryOutcome::NoData,
            Rcode::NxDomain => QueryOutcome::NxDomain,
            Rcode::ServFail => QueryOutcome::ServFail,
            Rcode::Refused => QueryOutcome::Refused,
            Rcode::FormErr => QueryOutcome::OtherRcode { rcode: 1 },
            Rcode::NotImp => QueryOutcome::OtherRcode { rcode: 4 },
            Rcode::Other(c) => QueryOutcome::OtherRcode { rcode: c },
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct QueryRecord {
    /// The candidate name asked, without a trailing dot.
    pub name: String,
    pub qtype: QType,
    /// 0 for the first try; fallback repeats keep the try's number.
    pub attempt: u8,
    pub mode: SendMode,
    pub transport: Transport,
    pub outcome: QueryOutcome,
    /// From the send to the reply, or to giving up on it.
    pub latency: Duration,
}

/// What glibc would take from resolv.conf and the probe's own budget.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExchangeSettings {
    pub server: SocketAddr,
    /// Wait per try (glibc's `timeout:`, 5 s by default, usually shortened to fit
    /// the probe's interval).
    pub per_try: Duration,
    pub attempts: u8,
    pub mode: SendMode,
    pub use_tcp: bool,
    pub no_aaaa: bool,
}

/// Runs exchanges for one probe thread: the send mode it switches to stays for
/// the next candidates, as glibc's per-thread resolver state does.
pub struct Exchanger {
    settings: ExchangeSettings,
    deadline: Instant,
    mode: SendMode,
    buf: Vec<u8>,
    pub records: Vec<QueryRecord>,
    /// Replies that did not parse or did not match a query in flight.
    pub ignored_replies: u32,
}

/// A query in flight.
struct Pending {
    qtype: QType,
    id: u16,
    msg: Vec<u8>,
    sent: Instant,
}

/// How one try ended.
#[derive(Default)]
struct TryEnd {
    /// Replies that are not rejections, in arrival order.
    usable: Vec<Response>,
    rejected: Vec<Response>,
    unanswered: usize,
    truncated: bool,
    network_error: bool,
    cancelled: bool,
}

/// The answer a candidate gets, with the addresses of its answer sections.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Exchanged {
    pub verdict: Verdict,
    pub addresses: Vec<IpAddr>,
}

impl Exchanger {
    pub fn new(settings: ExchangeSettings, deadline: Instant) -> Exchanger {
        Exchanger {
            mode: settings.mode,
            settings,
            deadline,
            buf: vec![0; 65_536],
            records: Vec::new(),
            ignored_replies: 0,
        }
    }

    /// The send mode now: later than the configured one if a lost reply made glibc
    /// switch.
    pub fn mode(&self) -> SendMode {
        self.mode
    }

    pub fn exchange(&mut self, name: &str) -> Exchanged {
        let types: &[QType] = if self.settings.no_aaaa {
            &[QType::A]
        } else {
            &[QType::A, QType::Aaaa]
        };
        let mut queries = Vec::with_capacity(types.len());
        for &qtype in types {
            let mut id = wire::random_id();
            while queries.iter().any(|q: &Pending| q.id == id) {
                id = wire::random_id();
            }
            match wire::encode_query(id, name, qtype) {
                Ok(msg) => queries.push(Pending {
                    qtype,
                    id,
                    msg,
                    sent: Instant::now(),
                }),
                Err(e) => return failed(Verdict::Error(e.to_string())),
            }
        }
        if self.settings.use_tcp {
            return self.over_tcp(name, &mut queries, 0);
        }
        self.over_udp(name, &mut queries)
    }

    fn over_udp(&mut self, name: &str, queries: &mut [Pending]) -> Exchanged {
        let mut socket = None;
        // glibc's gotsomewhere: a reply or a timeout; only when no try got that far
        // did every try fail on the network (ECONNREFUSED for the caller).
        let mut got_somewhere = false;
        let mut last_rejected = None;
        let mut attempt = 0u8;
        while attempt < self.settings.attempts.max(1) {
            if Instant::now() >= self.deadline {
                return failed(Verdict::Unfinished);
            }
            let sock = match socket.take() {
                Some(s) => s,
                None => match connect_udp(self.settings.server) {
                    Ok(s) => s,
                    Err(e) => {
                        self.record_all(name, queries, attempt, Transport::Udp, net_error(&e));
                        attempt += 1;
                        continue;
                    }
                },
            };
            let (end, sock) = self.udp_try(name, queries, attempt, sock);
            if end.cancelled {
                return failed(Verdict::Unfinished);
            }
            if end.truncated {
                return self.over_tcp(name, queries, attempt);
            }
            if end.network_error {
                attempt += 1;
                continue;
            }
            got_somewhere = true;
            socket = sock;
            if end.unanswered == 0 && !end.usable.is_empty() {
                return classify(&end.usable);
            }
            if end.unanswered > 0 && !end.usable.is_empty() {
                match self.mode {
                    SendMode::Parallel => self.mode = SendMode::SingleRequest,
                    SendMode::SingleRequest => {
                        self.mode = SendMode::SingleRequestReopen;
                        socket = None;
                    }
                    SendMode::SingleRequestReopen => return classify(&end.usable),
                }
                continue;
            }
            if let Some(r) = end.rejected.first() {
                last_rejected = Some(r.rcode);
            }
            attempt += 1;
        }
        let verdict = match last_rejected {
            Some(Rcode::ServFail) => Verdict::ServFail,
            Some(_) => Verdict::Refused,
            None if !got_somewhere => Verdict::Unreachable,
            None => Verdict::Timeout,
        };
        failed(verdict)
    }

    /// One try: sends per the current mode and waits for the replies. Returns the
    /// socket to keep for the next try, if any.
    fn udp_try(
        &mut self,
        name: &str,
        queries: &mut [Pending],
        attempt: u8,
        mut sock: UdpSocket,
    ) -> (TryEnd, Option<UdpSocket>) {
        let try_end = Instant::now() + self.settings.per_try;
        let finish = try_end.min(self.deadline);
        let mode = self.mode;
        let mut end = TryEnd::default();
        let batches: Vec<Vec<usize>> = if mode == SendMode::Parallel {
            vec![(0..queries.len()).collect()]
        } else {
            (0..queries.len()).map(|i| vec![i]).collect()
        };
        for (b, batch) in batches.iter().enumerate() {
            let sent = if b > 0 && mode == SendMode::SingleRequestReopen {
                connect_udp(self.settings.server).map(|s| sock = s)
            } else {
                Ok(())
            }
            .and_then(|()| {
                let now = Instant::now();
                for &i in batch {
                    queries[i].sent = now;
                }
                send_batch(&sock, queries, batch)
            });
            if let Err(e) = sent {
                self.record_some(name, queries, batch, attempt, Transport::Udp, net_error(&e));
                end.network_error = true;
                return (end, None);
            }
            // In single-request mode the next query waits for this one's reply.
            let mut inflight = batch.clone();
            if let Err(e) = self.await_replies(
                &sock,
                name,
                queries,
                &mut inflight,
                finish,
                attempt,
                &mut end,
            ) {
                self.record_some(
                    name,
                    queries,
                    &inflight,
                    attempt,
                    Transport::Udp,
                    net_error(&e),
                );
                end.network_error = true;
                return (end, None);
            }
            if end.truncated {
                break;
            }
            if !inflight.is_empty() {
                // Timed out: in single-request mode the rest is never sent.
                end.cancelled = finish < try_end;
                let outcome = if end.cancelled {
                    QueryOutcome::Cancelled
                } else {
                    QueryOutcome::Timeout
                };
                self.record_some(name, queries, &inflight, attempt, Transport::Udp, outcome);
                end.unanswered = queries.len() - end.usable.len() - end.rejected.len();
                break;
            }
        }
        (end, Some(sock))
    }

    /// Receives until every query in `inflight` has its reply (each is taken out
    /// of it), `finish` passes, or a reply is truncated. A socket error (an ICMP
    /// error on a connected socket) ends the wait.
    #[allow(clippy::too_many_arguments)]
    fn await_replies(
        &mut self,
        sock: &UdpSocket,
        name: &str,
        queries: &[Pending],
        inflight: &mut Vec<usize>,
        finish: Instant,
        attempt: u8,
        end: &mut TryEnd,
    ) -> io::Result<()> {
        while !inflight.is_empty() && !end.truncated {
            let now = Instant::now();
            if now >= finish {
                break;
            }
            sock.set_read_timeout(Some((finish - now).max(Duration::from_millis(1))))?;
            let n = match sock.recv(&mut self.buf) {
                Ok(n) => n,
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock
                            | io::ErrorKind::TimedOut
                            | io::ErrorKind::Interrupted
                    ) =>
                {
                    continue
                }
                Err(e) => return Err(e),
            };
            let Some((i, resp)) = self.match_reply(n, name, queries, inflight) else {
                continue;
            };
            inflight.retain(|&j| j != i);
            self.push_record(
                name,
                &queries[i],
                attempt,
                Transport::Udp,
                QueryOutcome::of(&resp),
            );
            if resp.truncated {
                end.truncated = true;
            } else if is_rejection(resp.rcode) {
                end.rejected.push(resp);
            } else {
                end.usable.push(resp);
            }
        }
        Ok(())
    }

    /// Reads the datagram in `buf[..n]`: which in-flight query it answers, if any.
    fn match_reply(
        &mut self,
        n: usize,
        name: &str,
        queries: &[Pending],
        inflight: &[usize],
    ) -> Option<(usize, Response)> {
        let Ok(resp) = wire::decode_response(&self.buf[..n]) else {
            self.ignored_replies += 1;
            return None;
        };
        let hit = inflight
            .iter()
            .copied()
            .find(|&i| resp.answers(queries[i].id, name, queries[i].qtype));
        match hit {
            Some(i) => Some((i, resp)),
            None => {
                self.ignored_replies += 1;
                None
            }
        }
    }

    /// Both queries over one TCP connection, length-prefixed, one try (glibc's
    /// send_vc makes one attempt per server).
    fn over_tcp(&mut self, name: &str, queries: &mut [Pending], attempt: u8) -> Exchanged {
        let try_end = Instant::now() + self.settings.per_try;
        let finish = try_end.min(self.deadline);
        let all: Vec<usize> = (0..queries.len()).collect();
        let now = Instant::now();
        if now >= finish {
            return failed(Verdict::Unfinished);
        }
        for q in queries.iter_mut() {
            q.sent = now;
        }
        let mut stream = match TcpStream::connect_timeout(&self.settings.server, finish - now) {
            Ok(s) => s,
            Err(e) => return self.tcp_failed(name, queries, &all, attempt, e, finish < try_end),
        };
        let mut out = Vec::new();
        for q in queries.iter() {
            out.extend_from_slice(&(q.msg.len() as u16).to_be_bytes());
            out.extend_from_slice(&q.msg);
        }
        let _ = stream.set_write_timeout(Some(
            finish
                .saturating_duration_since(Instant::now())
                .max(Duration::from_millis(1)),
        ));
        if let Err(e) = stream.write_all(&out) {
            return self.tcp_failed(name, queries, &all, attempt, e, finish < try_end);
        }
        let mut inflight = all.clone();
        let mut usable = Vec::new();
        let mut rejected = None;
        while !inflight.is_empty() {
            let msg = match read_framed(&mut stream, finish) {
                Ok(m) => m,
                Err(e) => {
                    return self.tcp_failed(name, queries, &inflight, attempt, e, finish < try_end);
                }
            };
            let n = msg.len();
            self.buf[..n].copy_from_slice(&msg);
            let Some((i, resp)) = self.match_reply(n, name, queries, &inflight) else {
                continue;
            };
            inflight.retain(|&j| j != i);
            self.push_record(
                name,
                &queries[i],
                attempt,
                Transport::Tcp,
                QueryOutcome::of(&resp),
            );
            if is_rejection(resp.rcode) {
                rejected = Some(resp.rcode);
            } else {
                usable.push(resp);
            }
        }
        if !usable.is_empty() {
            return classify(&usable);
        }
        failed(match rejected {
            Some(Rcode::ServFail) => Verdict::ServFail,
            _ => Verdict::Refused,
        })
    }

    fn tcp_failed(
        &mut self,
        name: &str,
        queries: &[Pending],
        which: &[usize],
        attempt: u8,
        e: io::Error,
        cut: bool,
    ) -> Exchanged {
        let timed_out = matches!(
            e.kind(),
            io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
        );
        let (outcome, verdict) = match (timed_out, cut) {
            (true, true) => (QueryOutcome::Cancelled, Verdict::Unfinished),
            (true, false) => (QueryOutcome::Timeout, Verdict::Timeout),
            (false, _) => (net_error(&e), Verdict::Unreachable),
        };
        self.record_some(name, queries, which, attempt, Transport::Tcp, outcome);
        failed(verdict)
    }

    fn push_record(
        &mut self,
        name: &str,
        q: &Pending,
        attempt: u8,
        transport: Transport,
        outcome: QueryOutcome,
    ) {
        self.records.push(QueryRecord {
            name: name.strip_suffix('.').unwrap_or(name).to_string(),
            qtype: q.qtype,
            attempt,
            mode: self.mode,
            transport,
            outcome,
            latency: q.sent.elapsed(),
        });
    }

    fn record_some(
        &mut self,
        name: &str,
        queries: &[Pending],
        which: &[usize],
        attempt: u8,
        transport: Transport,
        outcome: QueryOutcome,
    ) {
        for &i in which {
            self.push_record(name, &queries[i], attempt, transport, outcome.clone());
        }
    }

    fn record_all(
        &mut self,
        name: &str,
        queries: &[Pending],
        attempt: u8,
        transport: Transport,
        outcome: QueryOutcome,
    ) {
        let all: Vec<usize> = (0..queries.len()).collect();
        self.record_some(name, queries, &all, attempt, transport, outcome);
    }
}

/// The rcodes send_dg sets aside, hoping the other reply or the next try is better.
fn is_rejection(rcode: Rcode) -> bool {
    matches!(rcode, Rcode::ServFail | Rcode::NotImp | Rcode::Refused)
}

fn failed(verdict: Verdict) -> Exchanged {
    Exchanged {
        verdict,
        addresses: Vec::new(),
    }
}

fn net_error(e: &io::Error) -> QueryOutcome {
    QueryOutcome::NetworkError {
        error: e.to_string(),
    }
}

/// glibc's reading of a pair of replies: answered when either is NOERROR with
/// records; otherwise the first reply's rcode, or the second's when the first is
/// NOERROR, decides.
fn classify(usable: &[Response]) -> Exchanged {
    let addresses: Vec<IpAddr> = usable
        .iter()
        .flat_map(|r| r.addresses.iter().copied())
        .collect();
    if usable
        .iter()
        .any(|r| r.rcode == Rcode::NoError && r.answer_count > 0)
    {
        return Exchanged {
            verdict: Verdict::Answered,
            addresses,
        };
    }
    let first = usable[0].rcode;
    let decisive = match (first, usable.get(1)) {
        (Rcode::NoError, Some(second)) => second.rcode,
        _ => first,
    };
    failed(match decisive {
        Rcode::NxDomain => Verdict::NxDomain,
        Rcode::NoError => Verdict::NoData,
        Rcode::ServFail => Verdict::ServFail,
        _ => Verdict::Refused,
    })
}

fn connect_udp(server: SocketAddr) -> io::Result<UdpSocket> {
    let local: SocketAddr = match server {
        SocketAddr::V4(_) => (Ipv4Addr::UNSPECIFIED, 0).into(),
        SocketAddr::V6(_) => (Ipv6Addr::UNSPECIFIED, 0).into(),
    };
    let sock = UdpSocket::bind(local)?;
    // Connected, so the kernel hands us ICMP errors (ECONNREFUSED) and drops
    // datagrams from anyone else, as glibc's connected socket does.
    sock.connect(server)?;
    Ok(sock)
}

/// Sends the batch's queries: one sendmmsg for two, as glibc does.
fn send_batch(sock: &UdpSocket, queries: &[Pending], batch: &[usize]) -> io::Result<()> {
    use nix::sys::socket::{sendmmsg, MsgFlags, MultiHeaders, SockaddrStorage};
    let mut sent = 0usize;
    while sent < batch.len() {
        let rest = &batch[sent..];
        let slices: Vec<[io::IoSlice; 1]> = rest
            .iter()
            .map(|&i| [io::IoSlice::new(&queries[i].msg)])
            .collect();
        // The socket is connected: no address per message, no control data.
        let addrs: Vec<Option<SockaddrStorage>> = vec![None; rest.len()];
        let mut headers = MultiHeaders::<SockaddrStorage>::preallocate(rest.len(), None);
        match sendmmsg(
            sock.as_raw_fd(),
            &mut headers,
            &slices,
            &addrs,
            [],
            MsgFlags::MSG_NOSIGNAL,
        ) {
            Ok(results) => sent += results.count(),
            Err(nix::errno::Errno::EINTR) => continue,
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

/// One length-prefixed DNS message from a TCP stream, before `finish`.
fn read_framed(stream: &mut TcpStream, finish: Instant) -> io::Result<Vec<u8>> {
    let mut read_exact = |buf: &mut [u8]| -> io::Result<()> {
        let mut got = 0;
        while got < buf.len() {
            let left = finish.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(io::ErrorKind::TimedOut.into());
            }
            stream.set_read_timeout(Some(left))?;
            match stream.read(&mut buf[got..]) {
                Ok(0) => return Err(io::ErrorKind::UnexpectedEof.into()),
                Ok(n) => got += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    };
    let mut len = [0u8; 2];
    read_exact(&mut len)?;
    let mut msg = vec![0u8; usize::from(u16::from_be_bytes(len))];
    read_exact(&mut msg)?;
    Ok(msg)
}
