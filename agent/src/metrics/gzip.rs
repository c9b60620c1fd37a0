//! `/metrics` in gzip, which Prometheus asks for with every scrape. At 500 pods the
//! exposition is about 900 KB of text and 60 KB compressed.
//!
//! Each signal's encoding is compressed once, when it is encoded (or as it is, by a
//! [`PieceWriter`]), into a [`Piece`]:
//! DEFLATE blocks that refer to nothing before them and end on a byte boundary (a
//! sync flush), so pieces can follow one another in any stream. A response is a gzip
//! header, the pieces in order, an empty final block and the trailer, whose CRC-32 is
//! combined from the pieces' own (RFC 1951 3.2, RFC 1952 2.3). A scrape compresses
//! only the small families that change with every request; any gzip reader sees one
//! ordinary stream, not several members.

use axum::body::Bytes;
use flate2::{Compress, Compression, FlushCompress};
use std::fmt;
use std::sync::{LazyLock, Mutex, MutexGuard, TryLockError};

/// The compressor pieces are made with, kept from one to the next. Making one
/// zeroes its tables (about 230 KB, in pages the allocator handed back after the
/// last round): 120 us, where reusing one costs a reset, 6 us for a small piece.
/// Collections end at about the same time each round and their encodings overlap,
/// so when each took the kept one or made its own, a few a round were made (a
/// third of the exposition's CPU at 0 pods); now encodings ahead of scrapes wait
/// for it, and only a scrape that finds it busy makes its own.
static KEPT: LazyLock<Mutex<Compress>> = LazyLock::new(|| Mutex::new(fresh()));

fn fresh() -> Compress {
    Compress::new(Compression::fast(), false)
}

/// Who compresses, which decides whether it may wait for [`KEPT`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Caller {
    /// Work ahead of scrapes, on a thread of its own: waits for the kept compressor.
    Ahead,
    /// A request, on an async worker: takes the kept compressor if it is free, else
    /// makes one; it never waits behind another encoding.
    Request,
}

/// A writer's compressor: the kept one, locked while the writer lives, or its own.
enum Held {
    Kept(MutexGuard<'static, Compress>),
    Own(Compress),
}

impl Held {
    fn take(caller: Caller) -> Held {
        let kept = match caller {
            // A panic while it was held leaves it mid-stream: the reset below
            // clears that as it clears the last piece.
            Caller::Ahead => Some(KEPT.lock().unwrap_or_else(|e| e.into_inner())),
            Caller::Request => match KEPT.try_lock() {
                Ok(g) => Some(g),
                Err(TryLockError::Poisoned(e)) => Some(e.into_inner()),
                Err(TryLockError::WouldBlock) => None,
            },
        };
        match kept {
            Some(mut g) => {
                g.reset();
                Held::Kept(g)
            }
            None => Held::Own(fresh()),
        }
    }

    fn deflate(&mut self) -> &mut Compress {
        match self {
            Held::Kept(g) => g,
            Held::Own(c) => c,
        }
    }
}

/// One part of the exposition, compressed on its own.
#[derive(Debug, Clone)]
pub struct Piece {
    deflate: Bytes,
    crc: crc32fast::Hasher,
    len: u64,
}

/// gzip's header: DEFLATE, no name or time, from an unknown OS.
const HEADER: [u8; 10] = [0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 0xff];

/// The block that ends the stream: final, fixed codes, only the end-of-block code.
const LAST_BLOCK: [u8; 2] = [0x03, 0x00];

impl Piece {
    /// `data`, compressed on its own.
    pub fn compress(data: &[u8], caller: Caller) -> Result<Piece, flate2::CompressError> {
        let mut w = PieceWriter::new(data.len() / 8, caller);
        w.feed(data, FlushCompress::None)?;
        w.finish()
    }

    /// How long the piece is compressed.
    pub fn compressed_len(&self) -> usize {
        self.deflate.len()
    }

    /// How long the piece is uncompressed.
    pub fn plain_len(&self) -> usize {
        self.len as usize
    }
}

/// A [`Piece`] compressed as it is written: an encoder writes into it directly, so
/// the text is never kept whole (at 500 pods the cgroup families alone are 500 KB,
/// copied once more and faulted in afresh every round).
pub struct PieceWriter {
    deflate: Held,
    /// Zeroed once as it grows; `written` bytes of it are output. flate2 hands
    /// miniz_oxide only initialised memory, so compressing into a `Vec`'s spare
    /// capacity zeroes all of it on every write (each 4 KB of text the encoder
    /// flushes): at 500 pods about 3 MB a round, 2 to 3% of a round's encoding.
    out: Vec<u8>,
    written: usize,
    crc: crc32fast::Hasher,
    len: u64,
    /// Why the last write failed; `fmt::Write` can only say that it did.
    failed: Option<flate2::CompressError>,
}

impl PieceWriter {
    /// A writer whose output is expected to be about `expected` bytes. At level 1:
    /// miniz_oxide's fastest, 0.8 ms for the 918 KB of 500 pods on a 2-core VM
    /// (60 KB), where level 2 took 3.2 ms for 53 KB.
    pub fn new(expected: usize, caller: Caller) -> Self {
        Self {
            deflate: Held::take(caller),
            out: vec![0; expected + 64],
            written: 0,
            crc: crc32fast::Hasher::new(),
            len: 0,
            failed: None,
        }
    }

    fn feed(&mut self, data: &[u8], flush: FlushCompress) -> Result<(), flate2::CompressError> {
        let deflate = self.deflate.deflate();
        let start = deflate.total_in();
        loop {
            let done = (deflate.total_in() - start) as usize;
            let before = deflate.total_out();
            deflate.compress(&data[done..], &mut self.out[self.written..], flush)?;
            self.written += (deflate.total_out() - before) as usize;
            // All input is in, and what the compressor had to write fitted: a sync
            // flush is complete only when it left room unused.
            let all_in = (deflate.total_in() - start) as usize == data.len();
            if all_in && self.written < self.out.len() {
                break;
            }
            self.out.resize(self.out.len() * 2 + 64, 0);
        }
        self.crc.update(data);
        self.len += data.len() as u64;
        Ok(())
    }

    /// The piece, ended on a byte boundary (a sync flush); a kept compressor is free
    /// for the next.
    pub fn finish(mut self) -> Result<Piece, flate2::CompressError> {
        if let Some(e) = self.failed.take() {
            return Err(e);
        }
        self.feed(&[], FlushCompress::Sync)?;
        self.out.truncate(self.written);
        Ok(Piece {
            deflate: Bytes::from(self.out),
            crc: self.crc,
            len: self.len,
        })
    }
}

impl fmt::Write for PieceWriter {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        self.feed(s.as_bytes(), FlushCompress::None).map_err(|e| {
            self.failed = Some(e);
            fmt::Error
        })
    }
}

/// One gzip stream of `pieces`, in order, as the parts a response sends.
pub fn stream<'a>(pieces: impl IntoIterator<Item = &'a Piece>) -> Vec<Bytes> {
    let mut parts = vec![Bytes::from_static(&HEADER)];
    let mut crc = crc32fast::Hasher::new();
    let mut len = 0u64;
    for p in pieces {
        crc.combine(&p.crc);
        len += p.len;
        parts.push(p.deflate.clone());
    }
    let mut trailer = Vec::with_capacity(LAST_BLOCK.len() + 8);
    trailer.extend_from_slice(&LAST_BLOCK);
    trailer.extend_from_slice(&crc.finalize().to_le_bytes());
    // ISIZE is the length modulo 2^32.
    trailer.extend_from_slice(&(len as u32).to_le_bytes());
    parts.push(Bytes::from(trailer));
    parts
}

/// Whether an `Accept-Encoding` header takes gzip: named (or as `x-gzip`) with a
/// q above 0, or through `*` when gzip is not named. Without the header, no.
pub fn accepted(accept_encoding: Option<&str>) -> bool {
    let mut any = false;
    for coding in accept_encoding.unwrap_or("").split(',') {
        let mut parts = coding.split(';').map(str::trim);
        let name = parts.next().unwrap_or("").to_ascii_lowercase();
        let q = parts
            .filter_map(|p| p.split_once('='))
            .find(|(k, _)| k.trim().eq_ignore_ascii_case("q"))
            .map_or(1.0, |(_, v)| v.trim().parse::<f32>().unwrap_or(0.0));
        match name.as_str() {
            "gzip" | "x-gzip" => return q > 0.0,
            "*" => any = q > 0.0,
            _ => {}
        }
    }
    any
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    fn gunzip(parts: &[Bytes]) -> std::io::Result<Vec<u8>> {
        let mut out = Vec::new();
        // A single-member reader: the pieces must make one stream, not several.
        flate2::read::GzDecoder::new(&parts.concat()[..]).read_to_end(&mut out)?;
        Ok(out)
    }

    fn pieces(texts: &[&[u8]]) -> Vec<Piece> {
        texts
            .iter()
            .map(|t| Piece::compress(t, Caller::Request).unwrap())
            .collect()
    }

    #[test]
    fn pieces_compressed_apart_read_back_as_one_stream() {
        let big: Vec<u8> = (0..50_000u32)
            .flat_map(|i| format!("nodediag_x{{pod=\"p{}\"}} {}\n", i % 977, i).into_bytes())
            .collect();
        let texts: [&[u8]; 5] = [b"# own\n", b"", &big, b"tail 1\n", &big[..70_001]];
        let parts = stream(&pieces(&texts));
        assert_eq!(gunzip(&parts).unwrap(), texts.concat());
        let compressed: usize = parts.iter().map(Bytes::len).sum();
        assert!(
            compressed * 5 < texts.concat().len(),
            "{compressed} bytes compressed"
        );
        assert_eq!(gunzip(&stream(&[])).unwrap(), b"");
    }

    #[test]
    fn a_piece_written_in_many_small_writes_reads_back_whole() {
        use std::fmt::Write;
        let mut w = PieceWriter::new(16, Caller::Ahead);
        let mut text = String::new();
        for i in 0..40_000u32 {
            let line = format!("nodediag_y{{n=\"{}\"}} {}\n", i % 613, i);
            w.write_str(&line).unwrap();
            text.push_str(&line);
        }
        let piece = w.finish().unwrap();
        assert_eq!(piece.plain_len(), text.len());
        assert!(piece.compressed_len() * 5 < text.len());
        let parts = stream([&pieces(&[b"# first\n"])[0], &piece]);
        assert_eq!(
            gunzip(&parts).unwrap(),
            [b"# first\n", text.as_bytes()].concat()
        );
    }

    #[test]
    fn a_request_compresses_while_work_ahead_holds_the_kept_compressor() {
        use std::fmt::Write;
        let mut ahead = PieceWriter::new(16, Caller::Ahead);
        ahead.write_str("ahead 1\n").unwrap();
        // Waiting here, on the thread that holds the kept compressor, would never end.
        let request = Piece::compress(b"request 1\n", Caller::Request).unwrap();
        ahead.write_str("ahead 2\n").unwrap();
        let ahead = ahead.finish().unwrap();
        // Then the kept one again, reset: the same text does not refer back to the
        // piece before, which a stream without it could not read.
        let again = Piece::compress(b"ahead 1\nahead 2\n", Caller::Ahead).unwrap();
        assert_eq!(
            gunzip(&stream([&request, &ahead, &again])).unwrap(),
            b"request 1\nahead 1\nahead 2\nahead 1\nahead 2\n"
        );
        assert_eq!(gunzip(&stream([&again])).unwrap(), b"ahead 1\nahead 2\n");
    }

    #[test]
    fn a_wrong_checksum_or_length_is_caught_by_the_reader() {
        let mut parts = stream(&pieces(&[b"a 1\n", b"b 2\n"]));
        let mut trailer = parts.pop().unwrap().to_vec();
        trailer[3] ^= 1;
        parts.push(Bytes::from(trailer.clone()));
        assert!(gunzip(&parts).is_err(), "a corrupt CRC-32 must not read");
        trailer[3] ^= 1;
        trailer[6] ^= 1;
        *parts.last_mut().unwrap() = Bytes::from(trailer);
        assert!(gunzip(&parts).is_err(), "a wrong length must not read");
    }

    #[test]
    fn the_system_gzip_reads_the_stream_too() {
        use std::io::Write;
        use std::process::{Command, Stdio};
        let mut child = Command::new("gzip")
            .arg("-dc")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("gzip, an essential package of every Debian system");
        let body = stream(&pieces(&[b"one 1\n", b"two 2\n", b"three 3\n"])).concat();
        child.stdin.take().unwrap().write_all(&body).unwrap();
        let out = child.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(out.stdout, b"one 1\ntwo 2\nthree 3\n");
    }

    #[test]
    fn accept_encoding_is_read_as_http_says() {
        let a = |h: &str| accepted(Some(h));
        assert!(!accepted(None));
        // Prometheus's scrape and Go's client.
        assert!(a("gzip"));
        assert!(a("deflate, gzip;q=1.0, *;q=0.5"));
        assert!(a("x-gzip"));
        assert!(a("GZIP; Q=0.3"));
        assert!(a("*"));
        assert!(!a("identity"));
        assert!(!a("gzip;q=0"));
        assert!(!a("*, gzip;q=0"));
        assert!(!a("br, deflate"));
        assert!(!a("*;q=0"));
        assert!(!a(""));
    }
}
