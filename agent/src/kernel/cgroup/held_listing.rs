//! A cgroup directory's child cgroups, listed again only when their number changes.
//! Listing every pod's directory each round (open, read two dozen entries, close) was
//! the largest part of the cgroup collector's CPU at 500 pods, while containers are
//! added and removed far less often than rounds run. cgroupfs (kernfs) gives a
//! directory a link count of two plus its subdirectories, kept exact as cgroups are
//! made and removed, so `fstat` on the directory held open says whether the set may
//! have changed. A child removed and another made between two rounds leaves the count
//! as it was: the caller sees the removed one gone when it reads it and drops the
//! listing (see `Reader::read` in the collector).
//!
//! Only for cgroupfs: other file systems (fixture trees) need not count links so.

use super::child_cgroups;
use std::fs::File;
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

#[derive(Debug)]
pub struct HeldListing {
    dir: File,
    links: u64,
}

impl HeldListing {
    /// Opens and lists `dir`: the held directory and its child cgroups, sorted. The
    /// link count is taken before the listing: a cgroup made between the two is
    /// listed and counted again next time, never missed.
    pub fn read(dir: &Path) -> io::Result<(Self, Vec<String>)> {
        let file = File::open(dir)?;
        let links = file.metadata()?.nlink();
        Ok((Self { dir: file, links }, child_cgroups(dir)))
    }

    /// Still the same number of child cgroups as when listed.
    pub fn unchanged(&self) -> bool {
        self.dir.metadata().is_ok_and(|m| m.nlink() == self.links)
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
        let (held, children) = HeldListing::read(t.path()).unwrap();
        assert_eq!(children, ["a"]);
        assert!(held.unchanged());
        std::fs::write(t.path().join("cpu.stat"), "").unwrap();
        assert!(held.unchanged(), "files are not cgroups");
        std::fs::create_dir(t.path().join("b")).unwrap();
        assert!(!held.unchanged());
        std::fs::remove_dir(t.path().join("b")).unwrap();
        assert!(held.unchanged());
        std::fs::remove_dir(t.path().join("a")).unwrap();
        assert!(!held.unchanged());
        assert!(HeldListing::read(&t.path().join("gone")).is_err());
    }
}
