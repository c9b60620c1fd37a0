//! A cgroup directory's child cgroups, listed again only when they change. Listing
//! every pod's directory each round (open, read two dozen entries, close) was the
//! largest part of the cgroup collector's CPU at 500 pods, while containers are added
//! and removed far less often than rounds run. A directory watched by [`DirWatch`]
//! says so itself. Unwatched (no inotify instance or watch to spare), `fstat` on the
//! directory held open tells: cgroupfs (kernfs) gives a directory a link count of two
//! plus its subdirectories, kept exact as cgroups are made and removed. A child
//! removed and another made between two rounds leaves that count as it was: the
//! caller sees the removed one gone when it reads it and drops the listing (see
//! `Reader::read` in the collector).
//!
//! Only for cgroupfs: other file systems (fixture trees) need not count links so.

use super::child_cgroups;
use super::dir_watch::{Changes, DirWatch, Watched};
use std::fs::File;
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

#[derive(Debug)]
pub struct HeldListing(Check);

/// How a listing learns that its directory's children changed.
#[derive(Debug)]
enum Check {
    /// The watch reports it.
    Watched(Watched),
    /// The directory, held open, counts a different number of links.
    Links { dir: File, links: u64 },
}

impl HeldListing {
    /// Lists `dir`, its child cgroups sorted, and keeps what tells of a change: a
    /// watch from `watch` when it has one to spare, else the directory held open
    /// and its link count. Either is taken before the listing: a cgroup made
    /// between the two is listed and seen as a change next time, never missed.
    pub fn read(dir: &Path, watch: Option<&DirWatch>) -> io::Result<(Self, Vec<String>)> {
        let check = match watch.and_then(|w| w.watch(dir).ok()) {
            Some(watched) => Check::Watched(watched),
            None => {
                let dir = File::open(dir)?;
                let links = dir.metadata()?.nlink();
                Check::Links { dir, links }
            }
        };
        Ok((Self(check), child_cgroups(dir)))
    }

    /// The same child cgroups as when listed, as far as `changes` (from the watch
    /// passed to [`HeldListing::read`]) or the link count tell.
    pub fn unchanged(&self, changes: &Changes) -> bool {
        match &self.0 {
            Check::Watched(w) => !changes.touched(w),
            Check::Links { dir, links } => dir.metadata().is_ok_and(|m| m.nlink() == *links),
        }
    }

    /// How many descriptors it holds: none when watched.
    pub fn descriptors(&self) -> u64 {
        u64::from(matches!(self.0, Check::Links { .. }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // tmpfs and ext4 count a directory's links the way kernfs does, so the rule is
    // checked here on the test's own directory; on cgroupfs in tests/cgroup_kernel.rs.
    #[test]
    fn a_child_made_or_removed_changes_it_and_a_file_does_not() {
        let t = tempfile::tempdir().unwrap();
        std::fs::create_dir(t.path().join("a")).unwrap();
        let (held, children) = HeldListing::read(t.path(), None).unwrap();
        let unchanged = || held.unchanged(&Changes::All);
        assert_eq!(children, ["a"]);
        assert_eq!(held.descriptors(), 1, "held open");
        assert!(unchanged());
        std::fs::write(t.path().join("cpu.stat"), "").unwrap();
        assert!(unchanged(), "files are not cgroups");
        std::fs::create_dir(t.path().join("b")).unwrap();
        assert!(!unchanged());
        std::fs::remove_dir(t.path().join("b")).unwrap();
        assert!(unchanged());
        std::fs::remove_dir(t.path().join("a")).unwrap();
        assert!(!unchanged());
        assert!(HeldListing::read(&t.path().join("gone"), None).is_err());
    }

    #[test]
    fn a_watched_listing_goes_by_its_watch_not_its_links() {
        let t = tempfile::tempdir().unwrap();
        let watch = DirWatch::new().unwrap();
        let (held, _) = HeldListing::read(t.path(), Some(&watch)).unwrap();
        assert_eq!(held.descriptors(), 0, "watched, not held open");
        assert!(held.unchanged(&watch.changes()));
        std::fs::create_dir(t.path().join("b")).unwrap();
        std::fs::remove_dir(t.path().join("b")).unwrap();
        // The same link count as listed, yet a child came and went.
        assert!(!held.unchanged(&watch.changes()));
        assert!(held.unchanged(&watch.changes()), "reported once");
    }
}
