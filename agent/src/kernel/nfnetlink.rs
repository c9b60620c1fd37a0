//! nfnetlink transactions: several messages of one subsystem (nf_tables) sent as one
//! batch between `NFNL_MSG_BATCH_BEGIN` and `NFNL_MSG_BATCH_END`, which the kernel
//! applies all together or not at all.

use super::netlink::{self, NetlinkSocket, NLMSG_ERROR, NLM_F_ACK, NLM_F_REQUEST, RECV_BUFFER};
use std::collections::BTreeMap;
use std::io;

const NFNL_MSG_BATCH_BEGIN: u16 = 0x10;
const NFNL_MSG_BATCH_END: u16 = 0x11;
pub const NFGENMSG_LEN: usize = 4;

/// `struct nfgenmsg`: address family, version 0, resource id (big-endian).
pub fn nfgenmsg(family: u8, res_id: u16) -> [u8; NFGENMSG_LEN] {
    let id = res_id.to_be_bytes();
    [family, 0, id[0], id[1]]
}

/// One message of a batch: its type (`subsystem << 8 | message`), flags beyond
/// REQUEST and ACK, and its payload (nfgenmsg, then attributes).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BatchMessage {
    pub kind: u16,
    pub flags: u16,
    pub payload: Vec<u8>,
}

/// Why a batch was refused: the errno and, when the kernel named one, the position of
/// the message that failed (None: the batch as a whole, e.g. no such subsystem).
#[derive(Debug)]
pub struct BatchError {
    pub index: Option<usize>,
    pub source: io::Error,
}

impl std::fmt::Display for BatchError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.index {
            Some(i) => write!(f, "message {i} of the batch: {}", self.source),
            None => write!(f, "the batch: {}", self.source),
        }
    }
}

impl std::error::Error for BatchError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.source)
    }
}

/// Encodes a batch for `subsystem` whose messages are numbered from `first_seq`:
/// BEGIN takes `first_seq`, message i takes `first_seq + 1 + i`, END the next one.
pub fn encode_batch(subsystem: u16, messages: &[BatchMessage], first_seq: u32) -> Vec<u8> {
    let mut buf = Vec::new();
    let header = nfgenmsg(libc::AF_UNSPEC as u8, subsystem);
    netlink::push_message(
        &mut buf,
        NFNL_MSG_BATCH_BEGIN,
        NLM_F_REQUEST,
        first_seq,
        &header,
    );
    let mut seq = first_seq;
    for m in messages {
        seq = seq.wrapping_add(1);
        let flags = m.flags | NLM_F_REQUEST | NLM_F_ACK;
        netlink::push_message(&mut buf, m.kind, flags, seq, &m.payload);
    }
    netlink::push_message(
        &mut buf,
        NFNL_MSG_BATCH_END,
        NLM_F_REQUEST,
        seq.wrapping_add(1),
        &header,
    );
    buf
}

/// Sends the batch in one datagram and waits for the kernel's answer to each
/// message (every message asks for an ACK, so success is positive, not silence).
/// The kernel reports every failing message, then rolls the whole batch back; the
/// first failure is returned.
pub fn transact(
    sock: &mut NetlinkSocket,
    subsystem: u16,
    messages: &[BatchMessage],
) -> Result<(), BatchError> {
    let whole = |source| BatchError {
        index: None,
        source,
    };
    let begin = sock.next_seq();
    for _ in 0..=messages.len() {
        sock.next_seq();
    }
    sock.send(&encode_batch(subsystem, messages, begin))
        .map_err(whole)?;
    let mut pending: BTreeMap<u32, usize> = (0..messages.len())
        .map(|i| (begin.wrapping_add(1 + i as u32), i))
        .collect();
    let mut first_error: Option<BatchError> = None;
    let mut rx = vec![0u8; RECV_BUFFER];
    while !pending.is_empty() {
        let n = sock.recv(&mut rx).map_err(whole)?;
        for m in netlink::messages(&rx[..n]) {
            let m = m.map_err(whole)?;
            if m.kind != NLMSG_ERROR {
                continue;
            }
            let errno = netlink::error_code(m.payload).map_err(whole)?;
            if m.seq == begin {
                // The batch itself was refused (unknown subsystem, out of memory):
                // no per-message answers follow.
                return Err(whole(io::Error::from_raw_os_error(errno.max(1))));
            }
            let Some(index) = pending.remove(&m.seq) else {
                continue;
            };
            if errno != 0 && first_error.as_ref().is_none_or(|e| e.index > Some(index)) {
                first_error = Some(BatchError {
                    index: Some(index),
                    source: io::Error::from_raw_os_error(errno),
                });
            }
        }
    }
    match first_error {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernel::netlink::messages;

    #[test]
    fn a_batch_is_framed_by_begin_and_end_with_acks_on_each_message() {
        let msgs = vec![
            BatchMessage {
                kind: 10 << 8, // NFT_MSG_NEWTABLE
                flags: 0x400,
                payload: vec![1, 0, 0, 0],
            },
            BatchMessage {
                kind: (10 << 8) | 2,
                flags: 0,
                payload: vec![1, 0, 0, 0, 9],
            },
        ];
        let buf = encode_batch(10, &msgs, 41);
        let got: Vec<_> = messages(&buf).map(|m| m.unwrap()).collect();
        assert_eq!(got.len(), 4);
        assert_eq!(got[0].kind, NFNL_MSG_BATCH_BEGIN);
        assert_eq!(got[0].seq, 41);
        assert_eq!(
            got[0].payload,
            &[0, 0, 0, 10],
            "res_id is the subsystem, big-endian"
        );
        assert_eq!(got[1].kind, 10 << 8);
        assert_eq!(got[1].flags, 0x400 | NLM_F_REQUEST | NLM_F_ACK);
        assert_eq!(
            got[2].payload,
            &[1, 0, 0, 0, 9],
            "payload kept, padding not counted"
        );
        assert_eq!(got[3].kind, NFNL_MSG_BATCH_END);
        assert_eq!(got[3].flags & NLM_F_ACK, 0, "END asks for no ACK");
        let seqs: Vec<u32> = got.iter().map(|m| m.seq).collect();
        assert_eq!(seqs, vec![41, 42, 43, 44]);
    }
}
