//! The fsync probe: etcd's WAL write pattern, measured.
//!
//! etcd appends records to a preallocated WAL segment and `fdatasync`s each one; its
//! documented disk check is `fio --rw=write --ioengine=sync --fdatasync=1 --bs=2300`.
//! The probe does the same in a small file of its own: sequential 2300-byte writes,
//! each followed by `fdatasync`, into extents preallocated with `fallocate` (so each
//! sync also commits the unwritten-to-written extent change, as etcd's and fio's do).
//! When the file is full it is preallocated again from the start, like etcd moving to
//! a fresh segment: the file never grows past its size.

use nix::errno::Errno;
use nix::fcntl::{fallocate, FallocateFlags, Flock, FlockArg};
use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// etcd's WAL-like record size, from its fio recipe.
pub const RECORD_SIZE: usize = 2300;

/// Probe files start with this, so an SRE who finds one knows what it is and a
/// restarted agent can remove those a killed one left behind.
pub const FILE_PREFIX: &str = ".nodediag-fsync-probe.";

pub struct ProbeFile {
    path: PathBuf,
    /// Locked for as long as it is open, so a restarted agent knows it is in use.
    file: Flock<File>,
    size: u64,
    offset: u64,
    record: [u8; RECORD_SIZE],
    seed: u64,
    /// fallocate works here; otherwise the file is written with zeros once and
    /// overwritten in place.
    preallocates: bool,
}

impl ProbeFile {
    /// Creates (or truncates) the probe file, locks it, and preallocates `size` bytes.
    pub fn create(path: &Path, size: u64) -> io::Result<Self> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .custom_flags(libc::O_CLOEXEC)
            .open(path)?;
        let file =
            Flock::lock(file, FlockArg::LockExclusiveNonblock).map_err(|(_, errno)| errno)?;
        let mut p = Self {
            path: path.to_path_buf(),
            file,
            size,
            offset: 0,
            record: [0; RECORD_SIZE],
            seed: u64::from(std::process::id()) << 32 | 0x9e37_79b9,
            preallocates: true,
        };
        if let Err(e) = p.preallocate() {
            let _ = std::fs::remove_file(path);
            return Err(e);
        }
        Ok(p)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn preallocate(&mut self) -> io::Result<()> {
        let len = self.size as libc::off_t;
        if self.preallocates {
            // Drop the written blocks first so the next pass writes into unwritten
            // extents again; a filesystem without hole punching just overwrites.
            let punch = FallocateFlags::FALLOC_FL_PUNCH_HOLE | FallocateFlags::FALLOC_FL_KEEP_SIZE;
            let allocated = fallocate(&*self.file, punch, 0, len)
                .and_then(|()| fallocate(&*self.file, FallocateFlags::empty(), 0, len));
            match allocated {
                Ok(()) => {}
                Err(Errno::EOPNOTSUPP | Errno::ENOSYS) => self.preallocates = false,
                Err(errno) => return Err(errno.into()),
            }
        }
        if !self.preallocates && self.file.metadata()?.len() < self.size {
            let zeros = vec![0u8; 1 << 20];
            let mut at = 0;
            while at < self.size {
                let n = (self.size - at).min(zeros.len() as u64) as usize;
                self.file.write_all_at(&zeros[..n], at)?;
                at += n as u64;
            }
        }
        // The preallocation itself must be on disk before the first timed sync, or
        // that sync pays for it.
        self.file.sync_all()
    }

    /// One record written and made durable; returns the time the write plus
    /// `fdatasync` took.
    pub fn probe_once(&mut self) -> io::Result<Duration> {
        if self.offset + RECORD_SIZE as u64 > self.size {
            self.preallocate()?;
            self.offset = 0;
        }
        self.fill_record();
        let started = Instant::now();
        self.file.write_all_at(&self.record, self.offset)?;
        self.file.sync_data()?;
        let took = started.elapsed();
        self.offset += RECORD_SIZE as u64;
        Ok(took)
    }

    /// Fresh bytes each record (xorshift), so compressing or deduplicating storage
    /// cannot make the probe look faster than real writes.
    fn fill_record(&mut self) {
        for chunk in self.record.chunks_mut(8) {
            self.seed ^= self.seed << 13;
            self.seed ^= self.seed >> 7;
            self.seed ^= self.seed << 17;
            let bytes = self.seed.to_le_bytes();
            chunk.copy_from_slice(&bytes[..chunk.len()]);
        }
    }

    /// Closes and removes the file.
    pub fn remove(self) -> io::Result<()> {
        let path = self.path.clone();
        drop(self.file);
        std::fs::remove_file(path)
    }
}

/// The probe file's name for this process in `dir`.
pub fn file_name(dir: &Path) -> PathBuf {
    dir.join(format!("{FILE_PREFIX}{}", std::process::id()))
}

/// Removes probe files a killed agent left in `dir`: nobody holds their lock.
/// Returns the paths removed.
pub fn remove_stale(dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut removed = Vec::new();
    for e in entries.flatten() {
        if !e.file_name().to_string_lossy().starts_with(FILE_PREFIX) {
            continue;
        }
        let path = e.path();
        let Ok(f) = File::open(&path) else { continue };
        // Removed while locked; the lock goes with the descriptor at the end of the turn.
        let Ok(_free) = Flock::lock(f, FlockArg::LockExclusiveNonblock) else {
            continue;
        };
        if std::fs::remove_file(&path).is_ok() {
            removed.push(path);
        }
    }
    removed
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    #[test]
    fn latencies_on_a_real_disk_are_positive_and_plausible() {
        let dir = tempfile::tempdir().unwrap();
        let mut p = ProbeFile::create(&file_name(dir.path()), 64 * 1024).unwrap();
        for _ in 0..20 {
            let d = p.probe_once().unwrap();
            assert!(d > Duration::ZERO);
            assert!(d < Duration::from_secs(5), "{d:?} for 2300 bytes");
        }
    }

    #[test]
    fn the_file_wraps_and_never_grows_past_its_size() {
        let dir = tempfile::tempdir().unwrap();
        let size = 10 * RECORD_SIZE as u64 + 100;
        let path = file_name(dir.path());
        let mut p = ProbeFile::create(&path, size).unwrap();
        for _ in 0..35 {
            p.probe_once().unwrap();
            let m = std::fs::metadata(&path).unwrap();
            assert_eq!(m.len(), size);
            // Allocation is rounded up to whole filesystem blocks, never more.
            assert!(
                m.blocks() * 512 <= size.next_multiple_of(m.blksize()),
                "{m:?}"
            );
        }
        p.remove().unwrap();
        assert!(!path.exists());
    }

    #[test]
    fn stale_files_are_removed_but_locked_ones_are_kept() {
        let dir = tempfile::tempdir().unwrap();
        let stale = dir.path().join(format!("{FILE_PREFIX}1"));
        std::fs::write(&stale, b"left by a killed agent").unwrap();
        let other = dir.path().join("member");
        std::fs::write(&other, b"etcd's").unwrap();
        let live = ProbeFile::create(&file_name(dir.path()), 64 * 1024).unwrap();
        assert_eq!(remove_stale(dir.path()), vec![stale.clone()]);
        assert!(!stale.exists());
        assert!(other.exists(), "only probe files are touched");
        assert!(
            live.path().exists(),
            "a locked probe file belongs to a live agent"
        );
    }
}
