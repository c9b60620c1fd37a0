//! The two ways to read the kernel log: following `/dev/kmsg`, and the whole ring
//! buffer through syslog(2) where the device is refused.

use crate::kernel::ReadError;
use std::fs::File;
use std::io::{self, Seek, SeekFrom};
use std::path::Path;

/// Opens the kernel log and moves to its end, so only what is logged from now on is
/// read. A FIFO (tests) cannot seek and is read from where it is.
pub fn open_at_end(path: &Path) -> Result<File, ReadError> {
    let err = |source| ReadError {
        path: path.to_path_buf(),
        source,
    };
    let mut f = File::open(path).map_err(err)?;
    if f.metadata().map_err(err)?.is_dir() {
        return Err(err(io::Error::from_raw_os_error(libc::EISDIR)));
    }
    match f.seek(SeekFrom::End(0)) {
        Ok(_) => Ok(f),
        Err(e) if e.raw_os_error() == Some(libc::ESPIPE) => Ok(f),
        Err(e) => Err(err(e)),
    }
}

/// The whole kernel ring buffer through syslog(2) (`dmesg`'s fallback): needs only
/// CAP_SYSLOG, not access to the /dev/kmsg device. A system call, not a file: its
/// errors have no path to carry.
///
/// nix wraps syslog(3), the client of the syslog daemon, but not the kernel's
/// syslog(2) (glibc's `klogctl`), so the two calls stay `unsafe`.
pub fn read_syslog_buffer() -> io::Result<String> {
    const SYSLOG_ACTION_READ_ALL: libc::c_int = 3;
    const SYSLOG_ACTION_SIZE_BUFFER: libc::c_int = 10;
    // SAFETY: SIZE_BUFFER reads no buffer and writes none; the null pointer and zero
    // length are what syslog(2) documents for it.
    let size = unsafe { libc::klogctl(SYSLOG_ACTION_SIZE_BUFFER, std::ptr::null_mut(), 0) };
    if size < 0 {
        return Err(io::Error::last_os_error());
    }
    let mut buf = vec![0u8; (size as usize).max(4096)];
    let len = libc::c_int::try_from(buf.len()).unwrap_or(libc::c_int::MAX);
    // SAFETY: the kernel writes at most `len` bytes, and `buf` owns at least that
    // many; it stays borrowed mutably for the whole call.
    let n = unsafe { libc::klogctl(SYSLOG_ACTION_READ_ALL, buf.as_mut_ptr().cast(), len) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    buf.truncate(n as usize);
    Ok(String::from_utf8_lossy(&buf).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn open_errors_name_the_path() {
        let t = tempfile::tempdir().unwrap();
        let missing = t.path().join("kmsg");
        let e = open_at_end(&missing).unwrap_err();
        assert!(e.is_not_found());
        assert_eq!(e.path, missing);
        let e = open_at_end(t.path()).unwrap_err();
        assert_eq!(e.source.raw_os_error(), Some(libc::EISDIR));
        assert!(e.to_string().starts_with(&t.path().display().to_string()));
    }

    #[test]
    fn a_regular_file_is_read_from_its_end() {
        use std::io::Read;
        let t = tempfile::tempdir().unwrap();
        let p = t.path().join("log");
        std::fs::write(&p, "6,1,1,-;old\n").unwrap();
        let mut f = open_at_end(&p).unwrap();
        let mut rest = String::new();
        f.read_to_string(&mut rest).unwrap();
        assert_eq!(rest, "", "what was there before is skipped");
    }
}
