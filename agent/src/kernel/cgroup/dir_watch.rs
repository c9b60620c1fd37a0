//! Which listed cgroup directories had a child cgroup made, removed or renamed since
//! the last look: one inotify instance watching them. A cgroup is made with mkdir(2)
//! and removed with rmdir(2) by whoever manages it (the runtime, the kubelet,
//! systemd), and the VFS reports both to a watch on the parent, on cgroupfs as on any
//! file system. One read of the instance a round replaces an `fstat` of every listed
//! directory, held open for it (at 500 pods, 500 system calls and about 3% of the
//! agent's CPU, and 500 descriptors), and it also sees a child removed and another
//! made between two rounds, which leave the link count as it was.
//!
//! An instance of the other kind ([`DirWatch::files`]) tells which cgroup directories
//! had a file written: a limit is set by writing `cpu.cfs_quota_us` or `cpu.max`
//! (the runtime, the kubelet, systemd), and `vfs_write` reports every write to a
//! watch on the directory, on cgroupfs as on any file system. The kernel's own
//! updates of counters are not writes and report nothing.
//!
//! A watch costs the kernel a mark on the directory's inode and counts against the
//! user's `max_user_watches`; the instance counts against `max_user_instances`. When
//! either is spent, directories go unwatched and are checked by their link count, or
//! their limits read again on a timer. Both are counted in nodediag's own inotify
//! figures ([`OWN`]).

use crate::kernel::inotify::OWN;
use foldhash::HashSet;
use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::sync::Arc;

/// Events about the watched directory itself, whatever happens in it.
const SELF_EVENTS: u32 = libc::IN_DELETE_SELF | libc::IN_MOVE_SELF | libc::IN_IGNORED;

/// What an instance watches for: the events it asks for, and which of those it
/// reports as a change.
#[derive(Debug, Clone, Copy)]
struct Kind {
    mask: u32,
    changed: fn(u32) -> bool,
}

/// Child directories made, removed or renamed, and the directory itself removed or
/// renamed. Files are not cgroups (and cgroupfs makes none on request).
const CHILDREN: Kind = Kind {
    mask: libc::IN_CREATE
        | libc::IN_DELETE
        | libc::IN_MOVED_FROM
        | libc::IN_MOVED_TO
        | libc::IN_DELETE_SELF
        | libc::IN_MOVE_SELF
        | libc::IN_ONLYDIR,
    changed: |mask| mask & (libc::IN_ISDIR | SELF_EVENTS) != 0,
};

/// A file in the directory written, and the directory itself removed or renamed.
const FILES: Kind = Kind {
    mask: libc::IN_MODIFY | libc::IN_DELETE_SELF | libc::IN_MOVE_SELF | libc::IN_ONLYDIR,
    changed: |mask| mask & (libc::IN_MODIFY | SELF_EVENTS) != 0,
};

/// The inotify instance, shared by every watch it holds.
#[derive(Debug, Clone)]
pub struct DirWatch(Arc<Instance>);

#[derive(Debug)]
struct Instance(OwnedFd, Kind);

impl Drop for Instance {
    fn drop(&mut self) {
        OWN.closed();
    }
}

/// One directory watched until this is dropped.
#[derive(Debug)]
pub struct Watched {
    watch: DirWatch,
    wd: i32,
}

/// What changed since the last look.
#[derive(Debug)]
pub enum Changes {
    /// The watches these descriptors name saw a change.
    Seen(HashSet<i32>),
    /// Events were lost (the kernel's queue overflowed, or the instance could not
    /// be read): any directory may have changed.
    All,
}

impl Changes {
    pub fn touched(&self, watched: &Watched) -> bool {
        match self {
            Changes::Seen(wds) => wds.contains(&watched.wd),
            Changes::All => true,
        }
    }
}

impl DirWatch {
    /// An instance whose watches report child directories made, removed or renamed.
    pub fn new() -> io::Result<Self> {
        Self::of(CHILDREN)
    }

    /// An instance whose watches report files written in the directory.
    pub fn files() -> io::Result<Self> {
        Self::of(FILES)
    }

    fn of(kind: Kind) -> io::Result<Self> {
        // SAFETY: inotify_init1 takes flags only and returns a new descriptor or -1.
        let fd = unsafe { libc::inotify_init1(libc::IN_NONBLOCK | libc::IN_CLOEXEC) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        OWN.opened();
        // SAFETY: fd was just returned to us and is owned by nothing else.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        Ok(Self(Arc::new(Instance(fd, kind))))
    }

    /// Watches `dir` for what this instance reports. Watch before reading what a
    /// change would change (the listing, the limit): a change in between is then
    /// reported, never missed.
    pub fn watch(&self, dir: &Path) -> io::Result<Watched> {
        let path = CString::new(dir.as_os_str().as_bytes())?;
        // SAFETY: the descriptor is ours and open; path is NUL-terminated.
        let wd = unsafe { libc::inotify_add_watch(self.fd(), path.as_ptr(), self.0 .1.mask) };
        if wd < 0 {
            return Err(io::Error::last_os_error());
        }
        OWN.watched();
        Ok(Watched {
            watch: self.clone(),
            wd,
        })
    }

    fn fd(&self) -> i32 {
        self.0 .0.as_raw_fd()
    }

    /// The changes reported since the last call.
    pub fn changes(&self) -> Changes {
        let mut touched = HashSet::default();
        // Room for a few hundred events a read; a round usually finds none.
        let mut buf = [0u8; 8192];
        loop {
            // SAFETY: the descriptor is ours; buf is writable for its length.
            let n = unsafe { libc::read(self.fd(), buf.as_mut_ptr().cast(), buf.len()) };
            if n < 0 {
                return match io::Error::last_os_error().kind() {
                    io::ErrorKind::WouldBlock => Changes::Seen(touched),
                    io::ErrorKind::Interrupted => continue,
                    _ => Changes::All,
                };
            }
            if n == 0 || !add_events(&buf[..n as usize], self.0 .1, &mut touched) {
                return Changes::All;
            }
        }
    }
}

/// Adds the watches the events in `buf` touch; false when events were lost.
fn add_events(mut buf: &[u8], kind: Kind, touched: &mut HashSet<i32>) -> bool {
    const HEADER: usize = std::mem::size_of::<libc::inotify_event>();
    while buf.len() >= HEADER {
        let field = |at: usize| u32::from_ne_bytes(buf[at..at + 4].try_into().unwrap());
        let (wd, mask, len) = (field(0) as i32, field(4), field(12) as usize);
        if mask & libc::IN_Q_OVERFLOW != 0 {
            return false;
        }
        if (kind.changed)(mask) {
            touched.insert(wd);
        }
        buf = buf.get(HEADER + len..).unwrap_or_default();
    }
    true
}

impl Drop for Watched {
    fn drop(&mut self) {
        // The directory may be gone, its watch with it (EINVAL): nothing to undo then.
        // SAFETY: the descriptor is ours and open while this watch holds it.
        unsafe { libc::inotify_rm_watch(self.watch.fd(), self.wd) };
        OWN.unwatched();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn touched(w: &DirWatch, watched: &Watched) -> bool {
        match w.changes() {
            Changes::Seen(wds) => wds.contains(&watched.wd),
            Changes::All => panic!("no event should be lost here"),
        }
    }

    // inotify reports mkdir and rmdir the same way on every file system; on cgroupfs
    // in the collector's kernel test.
    #[test]
    fn a_child_directory_made_removed_or_renamed_is_reported_and_a_file_is_not() {
        let t = tempfile::tempdir().unwrap();
        let (a, b) = (t.path().join("a"), t.path().join("b"));
        std::fs::create_dir(&a).unwrap();
        std::fs::create_dir(&b).unwrap();
        let w = DirWatch::new().unwrap();
        let (wa, wb) = (w.watch(&a).unwrap(), w.watch(&b).unwrap());
        assert!(
            !touched(&w, &wa) && !touched(&w, &wb),
            "nothing happened yet"
        );
        std::fs::write(a.join("cpu.stat"), "").unwrap();
        assert!(!touched(&w, &wa), "files are not cgroups");
        std::fs::create_dir(a.join("c")).unwrap();
        let changes = w.changes();
        assert!(changes.touched(&wa) && !changes.touched(&wb), "{changes:?}");
        std::fs::rename(a.join("c"), a.join("d")).unwrap();
        assert!(touched(&w, &wa), "renamed");
        std::fs::remove_dir(a.join("d")).unwrap();
        assert!(touched(&w, &wa), "removed");
        assert!(!touched(&w, &wa), "each change is reported once");
        std::fs::remove_dir(&b).unwrap();
        assert!(touched(&w, &wb), "the directory itself removed");
    }

    #[test]
    fn a_file_written_is_reported_by_a_files_watch_and_a_child_made_is_not() {
        let t = tempfile::tempdir().unwrap();
        let (a, b) = (t.path().join("a"), t.path().join("b"));
        std::fs::create_dir(&a).unwrap();
        std::fs::create_dir(&b).unwrap();
        std::fs::write(a.join("cpu.max"), "max 100000\n").unwrap();
        let w = DirWatch::files().unwrap();
        let (wa, wb) = (w.watch(&a).unwrap(), w.watch(&b).unwrap());
        assert!(!touched(&w, &wa), "nothing happened yet");
        let _ = std::fs::read(a.join("cpu.max")).unwrap();
        std::fs::create_dir(a.join("c")).unwrap();
        assert!(!touched(&w, &wa), "read and a child made: not written");
        std::fs::write(a.join("cpu.max"), "50000 100000\n").unwrap();
        let changes = w.changes();
        assert!(changes.touched(&wa) && !changes.touched(&wb), "{changes:?}");
        assert!(!touched(&w, &wa), "each write is reported once");
        std::fs::remove_dir(&b).unwrap();
        assert!(touched(&w, &wb), "the directory itself removed");
    }

    #[test]
    fn a_dropped_watch_is_removed_from_the_instance() {
        let t = tempfile::tempdir().unwrap();
        let w = DirWatch::new().unwrap();
        let watched = w.watch(t.path()).unwrap();
        let wd = watched.wd;
        drop(watched);
        // The kernel confirms the removal with IN_IGNORED, then reports nothing more.
        let _ = w.changes();
        std::fs::create_dir(t.path().join("c")).unwrap();
        match w.changes() {
            Changes::Seen(wds) => assert!(!wds.contains(&wd), "{wds:?}"),
            Changes::All => panic!("no event should be lost here"),
        }
        assert!(w.watch(&t.path().join("gone")).is_err());
    }

    #[test]
    fn a_queue_overflow_means_anything_may_have_changed() {
        let mut event = [0u8; 16];
        event[..4].copy_from_slice(&(-1i32).to_ne_bytes());
        event[4..8].copy_from_slice(&libc::IN_Q_OVERFLOW.to_ne_bytes());
        assert!(!add_events(&event, CHILDREN, &mut HashSet::default()));
        let mut touched = HashSet::default();
        event[..4].copy_from_slice(&7i32.to_ne_bytes());
        event[4..8].copy_from_slice(&(libc::IN_CREATE | libc::IN_ISDIR).to_ne_bytes());
        assert!(add_events(&event, CHILDREN, &mut touched));
        assert!(touched.contains(&7));
    }
}
