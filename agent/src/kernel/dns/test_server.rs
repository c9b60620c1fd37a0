//! A scriptable DNS server on loopback for the probe's unit tests: UDP and TCP on
//! one port, a rule deciding each reply, and a log of every query it received.

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

#[derive(Debug, Clone)]
pub struct Received {
    pub name: String,
    pub qtype: u16,
    pub from: SocketAddr,
    pub at: Instant,
    pub tcp: bool,
}

#[derive(Debug, Clone)]
pub enum Reply {
    /// NOERROR with these IPv4 addresses as A records (none: NODATA).
    Answer(Vec<Ipv4Addr>),
    Rcode(u8),
    /// Say nothing.
    Drop,
    /// The reply, sent this much later.
    Delay(Duration, Box<Reply>),
    /// An empty NOERROR reply with TC set (over UDP; TCP gets the inner reply).
    Truncate(Box<Reply>),
    /// A datagram that is not DNS, then one with another id, then the reply.
    Noise(Box<Reply>),
}

type Rule = dyn Fn(&Received, usize) -> Reply + Send + Sync;

pub struct TestServer {
    pub addr: SocketAddr,
    pub log: Arc<Mutex<Vec<Received>>>,
    stop: Arc<AtomicBool>,
}

impl TestServer {
    /// `rule(query, n)` decides the reply; `n` counts earlier queries of the same
    /// name and type.
    pub fn start(rule: impl Fn(&Received, usize) -> Reply + Send + Sync + 'static) -> TestServer {
        let rule: Arc<Rule> = Arc::new(rule);
        // The kernel picks a free UDP port; the same TCP port may be taken (by any
        // other test's connection), then try another.
        let (udp, addr, tcp) = (0..50)
            .find_map(|_| {
                let udp = UdpSocket::bind("127.0.0.1:0").unwrap();
                let addr = udp.local_addr().unwrap();
                let tcp = TcpListener::bind(addr).ok()?;
                Some((udp, addr, tcp))
            })
            .expect("a port free for both UDP and TCP");
        let log = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        udp.set_read_timeout(Some(Duration::from_millis(20)))
            .unwrap();
        tcp.set_nonblocking(true).unwrap();
        {
            let (rule, log, stop) = (rule.clone(), log.clone(), stop.clone());
            std::thread::spawn(move || serve_udp(udp, &*rule, &log, &stop));
        }
        {
            let (log, stop) = (log.clone(), stop.clone());
            std::thread::spawn(move || serve_tcp(tcp, &*rule, &log, &stop));
        }
        TestServer { addr, log, stop }
    }

    pub fn received(&self) -> Vec<Received> {
        self.log.lock().unwrap().clone()
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

fn note(log: &Mutex<Vec<Received>>, r: &Received) -> usize {
    let mut log = log.lock().unwrap();
    let n = log
        .iter()
        .filter(|o| o.name == r.name && o.qtype == r.qtype)
        .count();
    log.push(r.clone());
    n
}

fn serve_udp(sock: UdpSocket, rule: &Rule, log: &Mutex<Vec<Received>>, stop: &AtomicBool) {
    let mut buf = [0u8; 512];
    while !stop.load(Ordering::Relaxed) {
        let Ok((n, from)) = sock.recv_from(&mut buf) else {
            continue;
        };
        let query = buf[..n].to_vec();
        let Some((name, qtype)) = question(&query) else {
            continue;
        };
        let r = Received {
            name,
            qtype,
            from,
            at: Instant::now(),
            tcp: false,
        };
        let seen = note(log, &r);
        let sock = sock.try_clone().unwrap();
        send_udp(sock, query, from, rule(&r, seen));
    }
}

fn send_udp(sock: UdpSocket, query: Vec<u8>, to: SocketAddr, reply: Reply) {
    match reply {
        Reply::Drop => {}
        Reply::Delay(d, inner) => {
            std::thread::spawn(move || {
                std::thread::sleep(d);
                send_udp(sock, query, to, *inner);
            });
        }
        Reply::Truncate(_) => {
            let mut r = build(&query, &Reply::Answer(vec![]));
            r[2] |= 0x02;
            let _ = sock.send_to(&r, to);
        }
        Reply::Noise(inner) => {
            let _ = sock.send_to(b"\x01\x02\x03", to);
            let mut other = build(&query, &inner);
            other[0] ^= 0xff;
            let _ = sock.send_to(&other, to);
            send_udp(sock, query, to, *inner);
        }
        other => {
            let _ = sock.send_to(&build(&query, &other), to);
        }
    }
}

fn serve_tcp(listener: TcpListener, rule: &Rule, log: &Mutex<Vec<Received>>, stop: &AtomicBool) {
    while !stop.load(Ordering::Relaxed) {
        let Ok((mut conn, from)) = listener.accept() else {
            std::thread::sleep(Duration::from_millis(10));
            continue;
        };
        conn.set_nonblocking(false).unwrap();
        conn.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        loop {
            let mut len = [0u8; 2];
            if conn.read_exact(&mut len).is_err() {
                break;
            }
            let mut query = vec![0u8; usize::from(u16::from_be_bytes(len))];
            if conn.read_exact(&mut query).is_err() {
                break;
            }
            let Some((name, qtype)) = question(&query) else {
                break;
            };
            let r = Received {
                name,
                qtype,
                from,
                at: Instant::now(),
                tcp: true,
            };
            let seen = note(log, &r);
            let mut reply = rule(&r, seen);
            while let Reply::Truncate(inner) | Reply::Delay(_, inner) | Reply::Noise(inner) = reply
            {
                reply = *inner;
            }
            if matches!(reply, Reply::Drop) {
                continue;
            }
            let msg = build(&query, &reply);
            let mut framed = (msg.len() as u16).to_be_bytes().to_vec();
            framed.extend_from_slice(&msg);
            let _ = conn.write_all(&framed);
        }
    }
}

/// The question of a query: its name (dotted) and type.
fn question(q: &[u8]) -> Option<(String, u16)> {
    let mut pos = 12;
    let mut labels = Vec::new();
    loop {
        let len = usize::from(*q.get(pos)?);
        if len == 0 {
            break;
        }
        labels.push(String::from_utf8_lossy(q.get(pos + 1..pos + 1 + len)?).into_owned());
        pos += 1 + len;
    }
    let qtype = u16::from_be_bytes([*q.get(pos + 1)?, *q.get(pos + 2)?]);
    Some((labels.join("."), qtype))
}

/// The reply to `query`: its header and question, QR RA set, and A records that
/// point back at the question's name.
fn build(query: &[u8], reply: &Reply) -> Vec<u8> {
    let mut r = query.to_vec();
    r[2] |= 0x80;
    r[3] = 0x80;
    match reply {
        Reply::Rcode(code) => r[3] |= code & 0x0f,
        Reply::Answer(addrs) => {
            r[6..8].copy_from_slice(&(addrs.len() as u16).to_be_bytes());
            for a in addrs {
                r.extend_from_slice(b"\xc0\x0c\x00\x01\x00\x01\x00\x00\x00\x1e\x00\x04");
                r.extend_from_slice(&a.octets());
            }
        }
        _ => {}
    }
    r
}
