//! Pure readers and parsers, one file per kernel source. No metrics, no policy.

pub mod cgroup;
pub mod cni;
pub mod conntrack;
pub mod conntrack_dump;
pub mod ctnetlink;
pub mod dir_memo;
pub mod diskstats;
pub mod dns;
pub mod ethtool;
pub mod held_files;
pub mod inotify;
pub mod kmsg;
pub mod kubelet_logs;
pub mod limits;
pub mod link_events;
pub mod meminfo;
pub mod mountinfo;
pub mod neigh;
pub mod net_class;
pub mod netlink;
pub mod netns;
pub mod nfnetlink;
pub mod nft_notrack;
pub mod process;
pub mod psi;
pub mod release;
pub mod route;
pub mod rtnetlink;
pub mod softnet;
pub mod statfs;
#[cfg(test)]
pub mod testing;
pub mod thread_cpu;
pub mod thread_nice;
pub mod vmstat;

use std::io;
use std::path::{Path, PathBuf};

/// An I/O error that remembers which file it was reading.
#[derive(Debug, thiserror::Error)]
#[error("{path}: {source}")]
pub struct ReadError {
    pub path: PathBuf,
    #[source]
    pub source: io::Error,
}

impl ReadError {
    /// The file was read but does not say what its format promises.
    pub fn invalid(path: &Path, message: impl Into<String>) -> Self {
        ReadError {
            path: path.to_path_buf(),
            source: io::Error::new(io::ErrorKind::InvalidData, message.into()),
        }
    }

    pub fn is_not_found(&self) -> bool {
        self.source.kind() == io::ErrorKind::NotFound
    }
}

/// The most any kernel file nodediag reads may hold. The largest real ones are the
/// mount table and `/proc/net/*` tables of a big node, around a MiB; a file past this
/// is not the kernel's (a corrupt mount, a bind-mounted log), and reading it whole
/// would cost its size in memory on every collection.
pub const MAX_FILE_BYTES: u64 = 16 << 20;

/// The most a single-value file (a sysctl, a sysfs attribute) may hold: one page.
pub const MAX_VALUE_BYTES: u64 = 4096;

/// What the first read of a file asks for.
const FIRST_READ: usize = 4096;

/// Larger than any file read through a held descriptor (`cpu.stat`, a dozen short
/// lines, is the longest).
const HELD_READ_BYTES: usize = 1024;

/// A file held open, read again from its start: kernel files (cgroupfs, sysctls)
/// are regenerated on each read from offset 0, so this is as fresh as a new open
/// without the path walk. A file that fills the buffer, or is not text, is an error:
/// callers then read it by path, which says what is wrong. The text is parsed where
/// it was read, on the stack: at 500 pods a round reads about 2,000 counter files
/// this way, and copied out each was an allocation.
pub fn read_from_start<T>(f: &std::fs::File, parse: impl FnOnce(&str) -> T) -> io::Result<T> {
    use std::os::unix::fs::FileExt;
    let invalid = |m: String| io::Error::new(io::ErrorKind::InvalidData, m);
    let mut buf = [0u8; HELD_READ_BYTES];
    let n = f.read_at(&mut buf, 0)?;
    if n == HELD_READ_BYTES {
        return Err(invalid(format!("more than {HELD_READ_BYTES} bytes")));
    }
    let text = std::str::from_utf8(&buf[..n]).map_err(|e| invalid(e.to_string()))?;
    Ok(parse(text))
}

/// The target of the symbolic link `name` in the directory open as `dir`, read into
/// `buf`. A target that fills `buf` may be cut short and is an error. Links read a
/// round number in the thousands on a big node (a namespace per process, a
/// descriptor per open file), and a read that allocates takes a buffer of PATH_MAX
/// (4 KiB) each time, too big for the allocator's per-thread cache: every one took
/// the lock of the arena the collector threads share.
pub fn read_link_at<'b>(
    dir: std::os::fd::RawFd,
    name: &std::ffi::CStr,
    buf: &'b mut [u8],
) -> io::Result<&'b [u8]> {
    // SAFETY: `name` is NUL-terminated, and readlinkat writes at most `buf.len()`
    // bytes into `buf`, which outlives the call.
    let n = unsafe { libc::readlinkat(dir, name.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
    let n = usize::try_from(n).map_err(|_| io::Error::last_os_error())?;
    if n == buf.len() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("link target longer than {} bytes", buf.len() - 1),
        ));
    }
    Ok(&buf[..n])
}

/// What the files in `held` read, opened first (when there is `room`) if not held.
/// Files that do not read (a cgroup removed and made again, a file grown past the
/// buffer) are closed, and None sends the caller to the path, which says what is
/// wrong.
pub fn read_held<F, T>(
    held: &mut Option<F>,
    room: bool,
    open: impl FnOnce() -> std::io::Result<F>,
    read: impl FnOnce(&F) -> std::io::Result<T>,
) -> Option<T> {
    if held.is_none() && room {
        *held = open().ok();
    }
    let value = held.as_ref().and_then(|f| read(f).ok());
    if value.is_none() {
        *held = None;
    }
    value
}

pub fn read_string(path: &Path) -> Result<String, ReadError> {
    read_capped(path, MAX_FILE_BYTES)
}

/// Reads a text file of at most `max` bytes; a larger one is an error that says so,
/// after reading no more than `max + 1` bytes.
pub fn read_capped(path: &Path, max: u64) -> Result<String, ReadError> {
    read_text_at_start(&open_file(path)?, path, max)
}

/// `path` opened for reading, the error naming it.
fn open_file(path: &Path) -> Result<std::fs::File, ReadError> {
    std::fs::File::open(path).map_err(|source| ReadError {
        path: path.to_path_buf(),
        source,
    })
}

/// The text of the open file `path`, read from its start ([`read_capped`]'s limits):
/// a kernel file held open reads as fresh as a new open.
fn read_text_at_start(file: &std::fs::File, path: &Path, max: u64) -> Result<String, ReadError> {
    use std::os::unix::fs::FileExt;
    let err = |source| ReadError {
        path: path.to_path_buf(),
        source,
    };
    // Room for a whole page up front: procfs, sysfs and cgroupfs files report no
    // size, and a page holds most of them: two reads, the data then end of file.
    let mut bytes = vec![0u8; FIRST_READ.min(max as usize + 1)];
    let mut len = 0;
    loop {
        if len == bytes.len() {
            if len as u64 > max {
                return Err(ReadError::invalid(
                    path,
                    format!("larger than {max} bytes: not a file of the kind expected here"),
                ));
            }
            bytes.resize((len * 2).min(max as usize + 1), 0);
        }
        match file.read_at(&mut bytes[len..], len as u64) {
            Ok(0) => break,
            Ok(n) => len += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(err(e)),
        }
    }
    bytes.truncate(len);
    bytes.shrink_to_fit();
    String::from_utf8(bytes).map_err(|e| {
        ReadError::invalid(
            path,
            format!(
                "not text: invalid UTF-8 at byte {}",
                e.utf8_error().valid_up_to()
            ),
        )
    })
}

/// The entries of a directory, the error naming it.
pub fn read_dir(path: &Path) -> Result<std::fs::ReadDir, ReadError> {
    std::fs::read_dir(path).map_err(|source| ReadError {
        path: path.to_path_buf(),
        source,
    })
}

/// Reads an optional attribute: a file that is missing, or that the kernel refuses
/// to answer (EINVAL for the speed of a link that is down, EOPNOTSUPP, EPERM), is
/// absent rather than an error.
pub fn read_optional(path: &Path) -> Option<String> {
    read_capped(path, MAX_VALUE_BYTES)
        .ok()
        .map(|s| s.trim().to_string())
}

/// A file that may rightly be missing (a module not loaded, an older kernel): None
/// then. One that exists but cannot be read is an error naming it, never "absent".
pub fn read_if_present(path: &Path) -> Result<Option<String>, ReadError> {
    if_present(read_capped(path, MAX_FILE_BYTES))
}

/// A read whose file may rightly be missing: None then.
fn if_present<T>(read: Result<T, ReadError>) -> Result<Option<T>, ReadError> {
    match read {
        Ok(v) => Ok(Some(v)),
        Err(e) if e.is_not_found() => Ok(None),
        Err(e) => Err(e),
    }
}

/// An integer in a file that may rightly be missing: None then; an error when the
/// file exists but holds no integer.
pub fn read_u64_if_present(path: &Path) -> Result<Option<u64>, ReadError> {
    if_present(read_u64(path))
}

/// A single integer in a sysfs or procfs file, absent when unreadable or unparsable.
pub fn read_optional_u64(path: &Path) -> Option<u64> {
    read_optional(path)?.parse().ok()
}

/// A single integer in a file that must be there.
pub fn read_u64(path: &Path) -> Result<u64, ReadError> {
    parse_u64(path, &read_capped(path, MAX_VALUE_BYTES)?)
}

fn parse_u64(path: &Path, s: &str) -> Result<u64, ReadError> {
    s.trim().parse().map_err(|e| {
        ReadError::invalid(
            path,
            format!(
                "expected an integer, got {}: {e}",
                crate::text::quote(s.trim())
            ),
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn oversized_files_are_refused_after_reading_past_the_cap_only() {
        let dir = tempfile::tempdir().unwrap();
        let big = dir.path().join("nf_conntrack_count");
        std::fs::write(&big, "7".repeat(10 << 20)).unwrap();
        let err = read_u64(&big).unwrap_err().to_string();
        assert!(err.contains("larger than 4096 bytes"), "{err}");
        assert!(
            err.len() < 200,
            "the message quotes nothing of the file: {err}"
        );
        assert_eq!(read_optional(&big), None);
        assert!(read_string(&big).is_ok(), "10 MiB is under the general cap");

        let junk = dir.path().join("nf_conntrack_max");
        std::fs::write(&junk, format!("12{}", "x".repeat(1000))).unwrap();
        let err = read_u64(&junk).unwrap_err().to_string();
        assert!(err.contains("(1002 bytes)"), "a short prefix only: {err}");
        assert!(err.len() < 300, "{err}");
    }

    #[test]
    fn present_but_unreadable_is_an_error_missing_is_absent() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("bridge-nf-call-iptables");
        assert_eq!(read_u64_if_present(&missing).unwrap(), None);
        let junk = dir.path().join("ip_forward");
        std::fs::write(&junk, "x!#@\n").unwrap();
        let err = read_u64_if_present(&junk).unwrap_err();
        assert_eq!(err.path, junk);
        assert!(err.to_string().contains("expected an integer"), "{err}");
        std::fs::write(&junk, "1\n").unwrap();
        assert_eq!(read_u64_if_present(&junk).unwrap(), Some(1));
        assert_eq!(read_if_present(&missing).unwrap(), None);
    }

    #[test]
    fn binary_content_is_an_error_not_a_panic() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("meminfo");
        std::fs::write(&f, [b'M', 0xff, 0xfe, b'\n']).unwrap();
        let err = read_string(&f).unwrap_err().to_string();
        assert!(err.contains("invalid UTF-8 at byte 1"), "{err}");
    }
}
