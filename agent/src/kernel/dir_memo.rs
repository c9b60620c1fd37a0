//! What was read from a directory's entries, kept while the directory is unchanged:
//! adding, removing or renaming an entry sets a directory's modification time, so
//! one `stat` tells whether hundreds of entries (the kubelet's log directories,
//! host-local IPAM reservations) need reading again.

use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::time::{Duration, SystemTime};

/// A directory changed this recently may change again within the same timestamp
/// (file systems keep them at the clock tick's granularity): what was read then is
/// not kept.
const SETTLED: Duration = Duration::from_secs(1);

/// Which directory, as of which change.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Stamp {
    dev: u64,
    ino: u64,
    mtime: (i64, i64),
}

#[derive(Debug)]
pub struct DirMemo<T> {
    kept: Option<(Stamp, T)>,
}

impl<T> Default for DirMemo<T> {
    fn default() -> Self {
        Self { kept: None }
    }
}

impl<T: Clone> DirMemo<T> {
    /// `read`'s result for `dir`: the one kept from an earlier call while the
    /// directory has not changed since, else a new one. Errors are not kept.
    pub fn read<E>(&mut self, dir: &Path, read: impl FnOnce() -> Result<T, E>) -> Result<T, E> {
        // Stamped before reading: a change while reading leaves an older stamp
        // kept, so the next call reads again.
        let stamp = std::fs::metadata(dir).ok().map(|m| {
            let mtime = (m.mtime(), m.mtime_nsec());
            (
                Stamp {
                    dev: m.dev(),
                    ino: m.ino(),
                    mtime,
                },
                m.modified().ok(),
            )
        });
        if let (Some((s, _)), Some((kept, value))) = (&stamp, &self.kept) {
            if s == kept {
                return Ok(value.clone());
            }
        }
        self.kept = None;
        let value = read()?;
        let settled = |modified: Option<SystemTime>| {
            modified
                .and_then(|m| SystemTime::now().duration_since(m).ok())
                .is_some_and(|age| age >= SETTLED)
        };
        if let Some((s, _)) = stamp.filter(|(_, m)| settled(*m)) {
            self.kept = Some((s, value.clone()));
        }
        Ok(value)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::Cell;

    fn age(dir: &Path, seconds: u64) {
        let when = SystemTime::now() - Duration::from_secs(seconds);
        std::fs::File::open(dir)
            .unwrap()
            .set_modified(when)
            .unwrap();
    }

    #[test]
    fn entries_are_read_again_only_after_the_directory_changes() {
        let t = tempfile::tempdir().unwrap();
        let reads = Cell::new(0);
        let list = || -> Result<Vec<String>, std::io::Error> {
            reads.set(reads.get() + 1);
            let mut names: Vec<String> = std::fs::read_dir(t.path())?
                .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect();
            names.sort();
            Ok(names)
        };
        let mut memo = DirMemo::default();
        std::fs::write(t.path().join("a"), "").unwrap();
        // Just changed: read every time until it settles.
        memo.read(t.path(), list).unwrap();
        memo.read(t.path(), list).unwrap();
        assert_eq!(reads.get(), 2);
        age(t.path(), 10);
        assert_eq!(memo.read(t.path(), list).unwrap(), ["a"]);
        assert_eq!(memo.read(t.path(), list).unwrap(), ["a"]);
        assert_eq!(reads.get(), 3, "kept while unchanged");
        std::fs::write(t.path().join("b"), "").unwrap();
        assert_eq!(memo.read(t.path(), list).unwrap(), ["a", "b"]);
        age(t.path(), 10);
        memo.read(t.path(), list).unwrap();
        std::fs::remove_file(t.path().join("a")).unwrap();
        assert_eq!(memo.read(t.path(), list).unwrap(), ["b"]);
        assert_eq!(reads.get(), 6);
    }

    #[test]
    fn errors_are_not_kept() {
        let t = tempfile::tempdir().unwrap();
        let gone = t.path().join("gone");
        let mut memo: DirMemo<u32> = DirMemo::default();
        assert!(memo.read(&gone, || Err("no such directory")).is_err());
        assert_eq!(memo.read(&gone, || Ok::<_, &str>(7)), Ok(7));
    }
}
