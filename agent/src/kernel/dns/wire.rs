//! DNS messages on the wire (RFC 1035 section 4): the A and AAAA queries a pod's
//! resolver sends for one name, and as much of a response as it takes to say what
//! the pod gets back. Our own few hundred lines rather than a resolver crate, so the
//! probe controls the socket, the ids and the timing of every query it sends.

use serde::Serialize;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

pub const HEADER_LEN: usize = 12;
const CLASS_IN: u16 = 1;
/// RFC 1035 2.3.4: a name is at most 255 bytes on the wire, a label at most 63.
const MAX_NAME_LEN: usize = 255;
const MAX_LABEL_LEN: usize = 63;
const FLAG_QR: u16 = 0x8000;
const FLAG_AA: u16 = 0x0400;
const FLAG_TC: u16 = 0x0200;
const FLAG_RD: u16 = 0x0100;
const FLAG_RA: u16 = 0x0080;

/// The two record types getaddrinfo(AF_UNSPEC) asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub enum QType {
    A,
    #[serde(rename = "AAAA")]
    Aaaa,
}

impl QType {
    pub fn code(self) -> u16 {
        match self {
            QType::A => 1,
            QType::Aaaa => 28,
        }
    }
}

impl fmt::Display for QType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            QType::A => "A",
            QType::Aaaa => "AAAA",
        })
    }
}

/// RFC 1035 4.1.1 response codes, the ones a stub resolver acts on named.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Rcode {
    NoError,
    FormErr,
    ServFail,
    NxDomain,
    NotImp,
    Refused,
    Other(u8),
}

impl Rcode {
    pub fn from_code(code: u8) -> Rcode {
        match code {
            0 => Rcode::NoError,
            1 => Rcode::FormErr,
            2 => Rcode::ServFail,
            3 => Rcode::NxDomain,
            4 => Rcode::NotImp,
            5 => Rcode::Refused,
            other => Rcode::Other(other),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    #[error("{0:?}: empty label")]
    EmptyLabel(String),
    #[error("{0:?}: a label longer than 63 bytes")]
    LabelTooLong(String),
    #[error("{0:?}: longer than 255 bytes on the wire")]
    NameTooLong(String),
    #[error("{0} bytes: shorter than a DNS header")]
    Short(usize),
    #[error("ends inside a record at byte {0}")]
    Truncated(usize),
    #[error("bad name compression pointer at byte {0}")]
    BadPointer(usize),
    #[error("a query, not a response (QR bit clear)")]
    NotResponse,
}

/// A standard query (opcode 0) with recursion desired and one question of class IN,
/// no EDNS: what glibc sends unless `options edns0` is set.
pub fn encode_query(id: u16, name: &str, qtype: QType) -> Result<Vec<u8>, WireError> {
    let mut msg = Vec::with_capacity(HEADER_LEN + name.len() + 6);
    msg.extend_from_slice(&id.to_be_bytes());
    msg.extend_from_slice(&FLAG_RD.to_be_bytes());
    msg.extend_from_slice(&1u16.to_be_bytes()); // QDCOUNT
    msg.extend_from_slice(&[0; 6]); // ANCOUNT, NSCOUNT, ARCOUNT
    encode_name(name, &mut msg)?;
    msg.extend_from_slice(&qtype.code().to_be_bytes());
    msg.extend_from_slice(&CLASS_IN.to_be_bytes());
    Ok(msg)
}

fn encode_name(name: &str, out: &mut Vec<u8>) -> Result<(), WireError> {
    let start = out.len();
    let relative = name.strip_suffix('.').unwrap_or(name);
    if !relative.is_empty() {
        for label in relative.split('.') {
            if label.is_empty() {
                return Err(WireError::EmptyLabel(name.to_string()));
            }
            if label.len() > MAX_LABEL_LEN {
                return Err(WireError::LabelTooLong(name.to_string()));
            }
            out.push(label.len() as u8);
            out.extend_from_slice(label.as_bytes());
        }
    }
    out.push(0);
    if out.len() - start > MAX_NAME_LEN {
        return Err(WireError::NameTooLong(name.to_string()));
    }
    Ok(())
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Question {
    /// Dotted, without the trailing dot; bytes outside printable ASCII as `\DDD`.
    pub name: String,
    pub qtype: u16,
    pub qclass: u16,
}

/// The parts of a response a stub resolver looks at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    pub id: u16,
    pub rcode: Rcode,
    pub truncated: bool,
    pub authoritative: bool,
    pub recursion_available: bool,
    pub questions: Vec<Question>,
    /// ANCOUNT as the header says: glibc's res_query calls any non-zero count an answer.
    pub answer_count: u16,
    /// A and AAAA records of the answer section (a CNAME chain's targets included).
    pub addresses: Vec<IpAddr>,
}

impl Response {
    /// Whether this is the reply to our query: same id and, as res_queriesmatch
    /// requires, exactly that one question (names compare case-insensitively).
    pub fn answers(&self, id: u16, name: &str, qtype: QType) -> bool {
        self.id == id
            && self.questions.len() == 1
            && self.questions[0].qtype == qtype.code()
            && self.questions[0].qclass == CLASS_IN
            && same_name(&self.questions[0].name, name)
    }
}

/// Case-insensitive comparison of two dotted names, a trailing dot ignored.
pub fn same_name(a: &str, b: &str) -> bool {
    let a = a.strip_suffix('.').unwrap_or(a);
    let b = b.strip_suffix('.').unwrap_or(b);
    a.eq_ignore_ascii_case(b)
}

/// Reads a response. A message cut short by the TC bit may end inside its answer
/// section: what was read is kept. Any other short or malformed message is an error.
pub fn decode_response(msg: &[u8]) -> Result<Response, WireError> {
    if msg.len() < HEADER_LEN {
        return Err(WireError::Short(msg.len()));
    }
    let u16_at = |i: usize| u16::from_be_bytes([msg[i], msg[i + 1]]);
    let flags = u16_at(2);
    if flags & FLAG_QR == 0 {
        return Err(WireError::NotResponse);
    }
    let truncated = flags & FLAG_TC != 0;
    let (qdcount, ancount) = (u16_at(4), u16_at(6));
    let mut pos = HEADER_LEN;
    let mut questions = Vec::with_capacity(usize::from(qdcount.min(4)));
    for _ in 0..qdcount {
        let (name, next) = read_name(msg, pos)?;
        let fixed = take(msg, next, 4)?;
        questions.push(Question {
            name,
            qtype: u16::from_be_bytes([fixed[0], fixed[1]]),
            qclass: u16::from_be_bytes([fixed[2], fixed[3]]),
        });
        pos = next + 4;
    }
    let mut addresses = Vec::new();
    for _ in 0..ancount {
        match read_record(msg, pos) {
            Ok((addr, next)) => {
                addresses.extend(addr);
                pos = next;
            }
            Err(_) if truncated => break,
            Err(e) => return Err(e),
        }
    }
    Ok(Response {
        id: u16_at(0),
        rcode: Rcode::from_code((flags & 0x000f) as u8),
        truncated,
        authoritative: flags & FLAG_AA != 0,
        recursion_available: flags & FLAG_RA != 0,
        questions,
        answer_count: ancount,
        addresses,
    })
}

/// One resource record: its address if it is an A or AAAA of class IN.
fn read_record(msg: &[u8], pos: usize) -> Result<(Option<IpAddr>, usize), WireError> {
    let (_, next) = read_name(msg, pos)?;
    let fixed = take(msg, next, 10)?;
    let rtype = u16::from_be_bytes([fixed[0], fixed[1]]);
    let class = u16::from_be_bytes([fixed[2], fixed[3]]);
    let rdlen = usize::from(u16::from_be_bytes([fixed[8], fixed[9]]));
    let rdata = take(msg, next + 10, rdlen)?;
    let addr = match (rtype, class, rdata.len()) {
        (1, CLASS_IN, 4) => Some(IpAddr::V4(Ipv4Addr::new(
            rdata[0], rdata[1], rdata[2], rdata[3],
        ))),
        (28, CLASS_IN, 16) => {
            let mut b = [0u8; 16];
            b.copy_from_slice(rdata);
            Some(IpAddr::V6(Ipv6Addr::from(b)))
        }
        _ => None,
    };
    Ok((addr, next + 10 + rdlen))
}

fn take(msg: &[u8], pos: usize, len: usize) -> Result<&[u8], WireError> {
    msg.get(pos..pos + len).ok_or(WireError::Truncated(pos))
}

/// A possibly compressed name at `pos`: the dotted name and the position after it
/// in the message. Pointers must point backwards, which also rules out loops.
fn read_name(msg: &[u8], pos: usize) -> Result<(String, usize), WireError> {
    let mut name = String::new();
    let mut wire_len = 0usize;
    let mut at = pos;
    let mut resume = None;
    loop {
        let len = *msg.get(at).ok_or(WireError::Truncated(at))?;
        match len & 0xc0 {
            0x00 if len == 0 => {
                let end = resume.unwrap_or(at + 1);
                return Ok((name, end));
            }
            0x00 => {
                let label = take(msg, at + 1, usize::from(len))?;
                wire_len += 1 + label.len();
                if wire_len + 1 > MAX_NAME_LEN {
                    return Err(WireError::NameTooLong(name));
                }
                if !name.is_empty() {
                    name.push('.');
                }
                push_label(&mut name, label);
                at += 1 + usize::from(len);
            }
            0xc0 => {
                let low = *msg.get(at + 1).ok_or(WireError::Truncated(at + 1))?;
                let target = usize::from(u16::from_be_bytes([len & 0x3f, low]));
                if target >= at {
                    return Err(WireError::BadPointer(at));
                }
                resume.get_or_insert(at + 2);
                at = target;
            }
            // 0x40 and 0x80: extended label types (RFC 6891 deprecated them).
            _ => return Err(WireError::BadPointer(at)),
        }
    }
}

fn push_label(name: &mut String, label: &[u8]) {
    for &b in label {
        if b.is_ascii_graphic() && b != b'.' && b != b'\\' {
            name.push(char::from(b));
        } else {
            name.push_str(&format!("\\{b:03}"));
        }
    }
}

/// A query id from the kernel's random pool, so an off-path packet cannot guess it
/// (glibc draws its ids the same way, from getrandom).
pub fn random_id() -> u16 {
    let mut b = [0u8; 2];
    // SAFETY: getrandom writes at most two bytes into the buffer we own. nix has no
    // wrapper for getrandom(2), and a crate for two bytes is not worth its weight.
    let n = unsafe { libc::getrandom(b.as_mut_ptr().cast(), b.len(), libc::GRND_NONBLOCK) };
    if n == 2 {
        return u16::from_ne_bytes(b);
    }
    // Only before the pool is seeded at early boot: the clock is good enough for ids
    // that need to differ, not to be secret.
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    (nanos ^ (nanos >> 16)) as u16
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `dig +noedns kubernetes.default.svc.cluster.local A` as sent, id 0xbeef.
    const QUERY_A: &[u8] = b"\xbe\xef\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00\
        \x0akubernetes\x07default\x03svc\x07cluster\x05local\x00\x00\x01\x00\x01";

    #[test]
    fn a_query_has_rd_one_question_and_no_edns() {
        let q = encode_query(0xbeef, "kubernetes.default.svc.cluster.local", QType::A).unwrap();
        assert_eq!(q, QUERY_A);
        let absolute =
            encode_query(0xbeef, "kubernetes.default.svc.cluster.local.", QType::A).unwrap();
        assert_eq!(
            absolute, QUERY_A,
            "a trailing dot changes nothing on the wire"
        );
        let aaaa = encode_query(7, "a.b", QType::Aaaa).unwrap();
        assert_eq!(
            aaaa,
            b"\x00\x07\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00\x01a\x01b\x00\x00\x1c\x00\x01"
        );
        assert_eq!(
            encode_query(1, ".", QType::A).unwrap()[HEADER_LEN..],
            [0, 0, 1, 0, 1],
            "the root"
        );
    }

    #[test]
    fn names_that_cannot_be_sent_are_errors() {
        assert!(matches!(
            encode_query(1, "a..b", QType::A),
            Err(WireError::EmptyLabel(_))
        ));
        assert!(matches!(
            encode_query(1, ".a", QType::A),
            Err(WireError::EmptyLabel(_))
        ));
        let long_label = format!("{}.com", "x".repeat(64));
        assert!(matches!(
            encode_query(1, &long_label, QType::A),
            Err(WireError::LabelTooLong(_))
        ));
        let long_name = vec!["y".repeat(63); 4].join(".");
        assert!(matches!(
            encode_query(1, &long_name, QType::A),
            Err(WireError::NameTooLong(_))
        ));
        let just_fits = [vec!["y".repeat(63); 3], vec!["z".repeat(61)]]
            .concat()
            .join(".");
        assert!(encode_query(1, &just_fits, QType::A).is_ok(), "255 bytes");
    }

    /// The reply dnsmasq gives to QUERY_A: QR AA RD RA, one A record through a
    /// compression pointer to the question (0xc00c).
    fn answer_a() -> Vec<u8> {
        let mut r = QUERY_A.to_vec();
        r[2..4].copy_from_slice(&[0x85, 0x80]);
        r[6..8].copy_from_slice(&[0, 1]);
        r.extend_from_slice(b"\xc0\x0c\x00\x01\x00\x01\x00\x00\x00\x05\x00\x04\x0a\x60\x00\x01");
        r
    }

    #[test]
    fn an_answer_gives_its_rcode_flags_question_and_address() {
        let r = decode_response(&answer_a()).unwrap();
        assert_eq!(r.id, 0xbeef);
        assert_eq!(r.rcode, Rcode::NoError);
        assert!(r.authoritative && r.recursion_available && !r.truncated);
        assert_eq!(r.answer_count, 1);
        assert_eq!(r.addresses, vec!["10.96.0.1".parse::<IpAddr>().unwrap()]);
        assert!(r.answers(0xbeef, "KUBERNETES.default.svc.cluster.local.", QType::A));
        assert!(!r.answers(0xbeee, "kubernetes.default.svc.cluster.local", QType::A));
        assert!(!r.answers(0xbeef, "kubernetes.default.svc.cluster.local", QType::Aaaa));
        assert!(!r.answers(0xbeef, "kubernetes.default.svc", QType::A));
    }

    #[test]
    fn nxdomain_servfail_and_nodata_are_read_from_the_header() {
        let mut nx = QUERY_A.to_vec();
        nx[2..4].copy_from_slice(&[0x81, 0x83]);
        let r = decode_response(&nx).unwrap();
        assert_eq!((r.rcode, r.answer_count), (Rcode::NxDomain, 0));
        nx[3] = 0x82;
        assert_eq!(decode_response(&nx).unwrap().rcode, Rcode::ServFail);
        nx[3] = 0x85;
        assert_eq!(decode_response(&nx).unwrap().rcode, Rcode::Refused);
        nx[3] = 0x8b;
        assert_eq!(decode_response(&nx).unwrap().rcode, Rcode::Other(11));
        nx[3] = 0x80;
        let nodata = decode_response(&nx).unwrap();
        assert_eq!((nodata.rcode, nodata.answer_count), (Rcode::NoError, 0));
        assert!(nodata.addresses.is_empty());
    }

    #[test]
    fn aaaa_and_cname_records_are_read() {
        // www.a -> CNAME b.a (pointer into the rdata's own name), b.a AAAA 2001:db8::1
        let mut r = b"\x00\x09\x81\x80\x00\x01\x00\x02\x00\x00\x00\x00\
            \x03www\x01a\x00\x00\x1c\x00\x01"
            .to_vec();
        r.extend_from_slice(b"\xc0\x0c\x00\x05\x00\x01\x00\x00\x00\x3c\x00\x04\x01b\xc0\x10");
        r.extend_from_slice(b"\x01b\xc0\x10\x00\x1c\x00\x01\x00\x00\x00\x3c\x00\x10");
        r.extend_from_slice(&"2001:db8::1".parse::<Ipv6Addr>().unwrap().octets());
        let resp = decode_response(&r).unwrap();
        assert_eq!(resp.answer_count, 2);
        assert_eq!(
            resp.addresses,
            vec!["2001:db8::1".parse::<IpAddr>().unwrap()]
        );
        assert!(resp.answers(9, "www.a", QType::Aaaa));
    }

    #[test]
    fn a_truncated_reply_keeps_what_it_has() {
        let mut r = answer_a();
        r[2] |= 0x02; // TC
        r[7] = 3; // claims three answers, carries one
        let resp = decode_response(&r).unwrap();
        assert!(resp.truncated);
        assert_eq!(resp.answer_count, 3);
        assert_eq!(resp.addresses.len(), 1);
        r[2] &= !0x02;
        assert_eq!(
            decode_response(&r),
            Err(WireError::Truncated(r.len())),
            "without TC, missing records are an error"
        );
    }

    #[test]
    fn malformed_messages_are_errors_not_panics() {
        assert_eq!(decode_response(b""), Err(WireError::Short(0)));
        assert_eq!(decode_response(&QUERY_A[..11]), Err(WireError::Short(11)));
        assert_eq!(decode_response(QUERY_A), Err(WireError::NotResponse));
        let a = answer_a();
        for cut in HEADER_LEN..a.len() {
            assert!(decode_response(&a[..cut]).is_err(), "cut at {cut}");
        }
        // A pointer to itself, a forward pointer, and a label past the end.
        let mut looped = a[..HEADER_LEN].to_vec();
        looped.extend_from_slice(b"\xc0\x0c\x00\x01\x00\x01");
        assert_eq!(decode_response(&looped), Err(WireError::BadPointer(12)));
        let mut forward = a[..HEADER_LEN].to_vec();
        forward.extend_from_slice(b"\xc0\x20\x00\x01\x00\x01");
        assert_eq!(decode_response(&forward), Err(WireError::BadPointer(12)));
        let mut overrun = a[..HEADER_LEN].to_vec();
        overrun.extend_from_slice(b"\x3fabc");
        assert_eq!(decode_response(&overrun), Err(WireError::Truncated(13)));
        let mut extended = a[..HEADER_LEN].to_vec();
        extended.extend_from_slice(b"\x41abc\x00\x00\x01\x00\x01");
        assert_eq!(decode_response(&extended), Err(WireError::BadPointer(12)));
        // A name that grows past 255 bytes through pointers chained backwards.
        let mut long = a[..HEADER_LEN].to_vec();
        long[4..6].copy_from_slice(&[0, 2]);
        long.push(63);
        long.extend_from_slice(&[b'x'; 63]);
        long.push(63);
        long.extend_from_slice(&[b'y'; 63]);
        long.push(63);
        long.extend_from_slice(&[b'z'; 63]);
        long.extend_from_slice(b"\x00\x00\x01\x00\x01");
        long.push(63);
        long.extend_from_slice(&[b'w'; 63]);
        long.extend_from_slice(b"\xc0\x0c\x00\x01\x00\x01");
        assert!(matches!(
            decode_response(&long),
            Err(WireError::NameTooLong(_))
        ));
    }

    #[test]
    fn odd_bytes_in_names_are_escaped() {
        let mut r = b"\x00\x01\x81\x80\x00\x01\x00\x00\x00\x00\x00\x00".to_vec();
        r.extend_from_slice(b"\x03a.\xff\x00\x00\x01\x00\x01");
        let resp = decode_response(&r).unwrap();
        assert_eq!(resp.questions[0].name, "a\\046\\255");
    }

    #[test]
    fn random_ids_vary() {
        let ids: std::collections::HashSet<u16> = (0..64).map(|_| random_id()).collect();
        assert!(ids.len() > 32, "{} distinct ids of 64", ids.len());
    }
}
