//! Which listed cgroup directories had a child cgroup made, removed or renamed since
//! the last look: one inotify instance watching them. A cgroup is made with mkdir(2)
//! and removed with rmdir(2) by whoever manages it (the runtime, the kubelet,
//! systemd), and the VFS reports both to a watch on the parent, on cgroupfs as on any
//! file system. One read of the instance a round replaces an `fstat` of every listed
//! directory, held open for it (at 500 pods, 500 system calls and about 3% of the
//! agent's CPU, and 500 descriptors), and it also sees a child removed and another
//! made between two rounds, which leave the link count as it was.
//!
//! A watch costs the kernel a mark on the directory's inode and counts against the
//! user's `max_user_watches`; the instance counts against `max_user_instances`. When
//! either is spent, directories go unwatched and are checked by their link count.
//! Both are counted in nodediag's own inotify figures ([`OWN`]).

use crate::kernel::inotify::OWN;
use foldhash::HashSet;
use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::sync::Arc;

/// Child directories made, removed or renamed, and the directory itself removed or
/// renamed. Files are not cgroups (and cgroupfs makes none on request).
const MASK: u32 = libc::IN_CREATE
    | libc::IN_DELETE
    | libc::IN_MOVED_FROM
    | libc::IN_MOVED_TO
    | libc::IN_DELETE_SELF
    | libc::IN_MOVE_SELF
    | libc::IN_ONLYDIR;

/// Events about the watched directory itself, whatever its children are.
const SELF_EVENTS: u32 = libc::IN_DELETE_SELF | libc::IN_MOVE_SELF | libc::IN_IGNORED;

/// The inotify instance, shared by every watch it holds.
#[derive(Debug, Clone)]
pub struct DirWatch(Arc<Instance>);

#[derive(Debug)]
struct Instance(OwnedFd);

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
    pub fn new() -> io::Result<Self> {
        // SAFETY: inotify_init1 takes flags only and returns a new descriptor or -1.
        let fd = unsafe { libc::inotify_init1(libc::IN_NONBLOCK | libc::IN_CLOEXEC) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        OWN.opened();
        // SAFETY: fd was just returned to us and is owned by nothing else.
        Ok(Self(Arc::new(Instance(unsafe {
            OwnedFd::from_raw_fd(fd)
        }))))
    }

    /// Watches `dir` for child directories made, removed or renamed. Watch before
    /// listing: a child made in between is then reported, never missed.
    pub fn watch(&self, dir: &Path) -> io::Result<Watched> {
        let path = CString::new(dir.as_os_str().as_bytes())?;
        // SAFETY: the descriptor is ours and open; path is NUL-terminated.
        let wd = unsafe { libc::inotify_add_watch(self.fd(), path.as_ptr(), MASK) };
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
            if n == 0 || !add_events(&buf[..n as usize], &mut touched) {
                return Changes::All;
            }
        }
    }
}

/// Adds the watches the events in `buf` touch; false when events were lost.
fn add_events(mut buf: &[u8], touched: &mut HashSet<i32>) -> bool {
    const HEADER: usize = std::mem::size_of::<libc::inotify_event>();
    while buf.len() >= HEADER {
        let field = |at: usize| u32::from_ne_bytes(buf[at..at + 4].try_into().unwrap());
        let (wd, mask, len) = (field(0) as i32, field(4), field(12) as usize);
        if mask & libc::IN_Q_OVERFLOW != 0 {
            return false;
        }
        if mask & (libc::IN_ISDIR | SELF_EVENTS) != 0 {
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
        assert!(!add_events(&event, &mut HashSet::default()));
        let mut touched = HashSet::default();
        event[..4].copy_from_slice(&7i32.to_ne_bytes());
        event[4..8].copy_from_slice(&(libc::IN_CREATE | libc::IN_ISDIR).to_ne_bytes());
        assert!(add_events(&event, &mut touched));
        assert!(touched.contains(&7));
    }
}
