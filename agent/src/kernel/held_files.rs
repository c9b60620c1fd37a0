//! Kernel files a collector reads every round, held open from one round to the next.

use super::{
    if_present, open_file, parse_u64, read_text_at_start, ReadError, MAX_FILE_BYTES,
    MAX_VALUE_BYTES,
};
use std::collections::HashMap;
use std::fs::File;
use std::path::{Path, PathBuf};

/// The files read so far, open. Opening walks the path (for a sysctl, down
/// `/proc/sys` to its table) and closing is a syscall of its own: for the pressure
/// collector's twenty files a round, more than a third of its reading on a node
/// without pods. Each read starts at the file's start, so a kernel file reads as
/// fresh as when newly opened. A held file that no longer reads is closed and its
/// path opened again, whose error names what is wrong; a missing file is looked for
/// again at the next read.
#[derive(Debug, Default)]
pub struct HeldFiles {
    files: HashMap<PathBuf, File>,
}

impl HeldFiles {
    /// [`super::read_capped`], through the held file when there is one.
    pub fn read_capped(&mut self, path: &Path, max: u64) -> Result<String, ReadError> {
        if let Some(file) = self.files.get(path) {
            match read_text_at_start(file, path, max) {
                Ok(text) => return Ok(text),
                Err(_) => {
                    self.files.remove(path);
                }
            }
        }
        let file = open_file(path)?;
        let text = read_text_at_start(&file, path, max)?;
        self.files.insert(path.to_path_buf(), file);
        Ok(text)
    }

    pub fn read_string(&mut self, path: &Path) -> Result<String, ReadError> {
        self.read_capped(path, MAX_FILE_BYTES)
    }

    /// [`super::read_if_present`].
    pub fn read_if_present(&mut self, path: &Path) -> Result<Option<String>, ReadError> {
        if_present(self.read_string(path))
    }

    /// [`super::read_u64_if_present`].
    pub fn read_u64_if_present(&mut self, path: &Path) -> Result<Option<u64>, ReadError> {
        let text = if_present(self.read_capped(path, MAX_VALUE_BYTES))?;
        text.map(|t| parse_u64(path, &t)).transpose()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_held_file_reads_what_it_holds_now_and_a_missing_one_is_not_held() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("value");
        let mut held = HeldFiles::default();
        assert!(held.read_u64_if_present(&path).unwrap().is_none());
        assert!(held.files.is_empty(), "a missing file is not held");

        std::fs::write(&path, "7\n").unwrap();
        assert_eq!(held.read_u64_if_present(&path).unwrap(), Some(7));
        assert_eq!(held.files.len(), 1);
        // Rewritten in place, as the kernel regenerates its files: read from the start.
        std::fs::write(&path, "12345\n").unwrap();
        assert_eq!(held.read_u64_if_present(&path).unwrap(), Some(12345));
        std::fs::write(&path, "8\n").unwrap();
        assert_eq!(
            held.read_string(&path).unwrap(),
            "8\n",
            "a shorter text whole"
        );

        std::fs::write(&path, "many\n").unwrap();
        let e = held.read_u64_if_present(&path).unwrap_err();
        assert!(e.to_string().contains("expected an integer"), "{e}");

        // Larger than the cap: an error naming it; past a page, whole.
        let big = "x".repeat(5000);
        std::fs::write(&path, &big).unwrap();
        let e = held.read_capped(&path, 4096).unwrap_err();
        assert!(e.to_string().contains("larger than 4096 bytes"), "{e}");
        assert_eq!(held.read_string(&path).unwrap(), big);
    }

    #[test]
    fn kernel_files_read_through_held_descriptors_as_by_path() {
        let mut held = HeldFiles::default();
        for p in ["/proc/sys/kernel/pid_max", "/proc/loadavg", "/proc/meminfo"] {
            let p = Path::new(p);
            let first = held.read_string(p).unwrap();
            let again = held.read_string(p).unwrap();
            // Both whole: the same lines, each ending where a new open's does.
            assert_eq!(first.lines().count(), again.lines().count(), "{p:?}");
            assert_eq!(
                again.lines().count(),
                super::super::read_string(p).unwrap().lines().count()
            );
        }
        assert_eq!(held.files.len(), 3);
    }
}
