//! Filesystem capacity (`statvfs(3)`), the device a path lives on (`stat(2)`
//! `st_dev`), and that device's name in sysfs (`/sys/dev/block/MAJ:MIN`).

use super::ReadError;
use crate::host::HostRoot;
use nix::sys::stat::{major, minor};
use serde::Serialize;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

/// What `statvfs` says, in bytes and inodes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct FsUsage {
    pub size_bytes: u64,
    /// Free to unprivileged users (`f_bavail`): what the kubelet's nodefs.available
    /// eviction signal uses, so the root reserve does not count as free.
    pub avail_bytes: u64,
    pub inodes: u64,
    pub inodes_free: u64,
    /// The filesystem as nodediag sees it is read-only (`ST_RDONLY`).
    pub read_only: bool,
}

impl FsUsage {
    pub fn from_raw(
        fragment_size: u64,
        blocks: u64,
        blocks_avail: u64,
        files: u64,
        files_free: u64,
        flags: u64,
    ) -> Self {
        Self {
            size_bytes: blocks.saturating_mul(fragment_size),
            avail_bytes: blocks_avail.saturating_mul(fragment_size),
            inodes: files,
            inodes_free: files_free,
            read_only: flags & libc::ST_RDONLY != 0,
        }
    }

    /// Fraction of the space available; None for a filesystem without a size.
    pub fn avail_ratio(&self) -> Option<f64> {
        ratio(self.avail_bytes, self.size_bytes)
    }

    /// Fraction of inodes free; None where the filesystem has no inode limit
    /// (btrfs reports 0 inodes).
    pub fn inodes_free_ratio(&self) -> Option<f64> {
        ratio(self.inodes_free, self.inodes)
    }
}

fn ratio(part: u64, whole: u64) -> Option<f64> {
    (whole > 0).then(|| (part.min(whole)) as f64 / whole as f64)
}

pub fn statvfs(path: &Path) -> Result<FsUsage, ReadError> {
    let st = nix::sys::statvfs::statvfs(path).map_err(|errno| ReadError {
        path: path.to_path_buf(),
        source: errno.into(),
    })?;
    let frsize = if st.fragment_size() > 0 {
        st.fragment_size()
    } else {
        st.block_size()
    };
    #[allow(clippy::unnecessary_cast)] // the field widths differ between libcs
    Ok(FsUsage::from_raw(
        frsize as u64,
        st.blocks() as u64,
        st.blocks_available() as u64,
        st.files() as u64,
        st.files_free() as u64,
        st.flags().bits() as u64,
    ))
}

/// The (major, minor) of the filesystem a path is on.
pub fn device_of(path: &Path) -> Result<(u32, u32), ReadError> {
    let dev = std::fs::metadata(path)
        .map_err(|source| ReadError {
            path: path.to_path_buf(),
            source,
        })?
        .dev();
    // Linux majors have 12 bits and minors 20: both fit.
    Ok((major(dev) as u32, minor(dev) as u32))
}

/// A block device as sysfs names it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BlockDevice {
    /// `vda1`, `nvme0n1p2`, `dm-0`, `loop3`.
    pub name: String,
    /// The whole disk: the device itself, or the parent of a partition. Its queue is
    /// the one that is slow or busy, and only the whole disk counts flushes.
    pub disk: String,
}

/// None when `major:minor` is not a block device (tmpfs, overlay, NFS and btrfs
/// report anonymous devices).
pub fn block_device(root: &HostRoot, dev: (u32, u32)) -> Option<BlockDevice> {
    let link = root.sys(&["dev", "block", &format!("{}:{}", dev.0, dev.1)]);
    let target = std::fs::read_link(&link).ok()?;
    let name = target.file_name()?.to_string_lossy().into_owned();
    let disk = if link.join("partition").exists() {
        target
            .parent()
            .and_then(|p| p.file_name())
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| name.clone())
    } else {
        name.clone()
    };
    Some(BlockDevice { name, disk })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ratios_use_available_blocks_and_tolerate_empty_filesystems() {
        let u = FsUsage::from_raw(4096, 1000, 80, 500, 25, libc::ST_RDONLY);
        assert_eq!(u.size_bytes, 4_096_000);
        assert_eq!(u.avail_bytes, 327_680);
        assert_eq!(u.avail_ratio(), Some(0.08));
        assert_eq!(u.inodes_free_ratio(), Some(0.05));
        assert!(u.read_only);
        let btrfs = FsUsage::from_raw(4096, 1000, 1000, 0, 0, 0);
        assert_eq!(btrfs.inodes_free_ratio(), None);
        assert_eq!(btrfs.avail_ratio(), Some(1.0));
        assert!(!btrfs.read_only);
        assert_eq!(FsUsage::from_raw(4096, 0, 0, 0, 0, 0).avail_ratio(), None);
    }

    #[test]
    fn statvfs_and_stat_of_a_real_directory() {
        let dir = tempfile::tempdir().unwrap();
        let u = statvfs(dir.path()).unwrap();
        assert!(u.size_bytes > 0 && u.avail_bytes <= u.size_bytes);
        let dev = device_of(dir.path()).unwrap();
        assert_eq!(dev, device_of(&dir.path().join(".")).unwrap());
        // Major and minor put back together are the directory's own st_dev.
        let st_dev = std::fs::metadata(dir.path()).unwrap().dev();
        assert_eq!(
            nix::sys::stat::makedev(dev.0.into(), dev.1.into()),
            st_dev,
            "{dev:?} from {st_dev:#x}"
        );
        let missing = Path::new("/nonexistent/nodediag");
        let e = statvfs(missing).unwrap_err();
        assert!(e.is_not_found(), "{e}");
        assert_eq!(e.path, missing, "the error names the path");
        assert_eq!(device_of(missing).unwrap_err().path, missing);
    }

    #[test]
    fn partitions_resolve_to_their_disk() {
        let sys = tempfile::tempdir().unwrap();
        let devices = sys.path().join("devices/pci0/virtio1/block/vda");
        std::fs::create_dir_all(devices.join("vda1")).unwrap();
        std::fs::write(devices.join("vda1/partition"), "1\n").unwrap();
        let dev_block = sys.path().join("dev/block");
        std::fs::create_dir_all(&dev_block).unwrap();
        std::os::unix::fs::symlink(
            "../../devices/pci0/virtio1/block/vda/vda1",
            dev_block.join("254:1"),
        )
        .unwrap();
        std::os::unix::fs::symlink(
            "../../devices/pci0/virtio1/block/vda",
            dev_block.join("254:0"),
        )
        .unwrap();
        let root = HostRoot {
            sys: sys.path().to_path_buf(),
            ..HostRoot::default()
        };
        let part = block_device(&root, (254, 1)).unwrap();
        assert_eq!((part.name.as_str(), part.disk.as_str()), ("vda1", "vda"));
        let whole = block_device(&root, (254, 0)).unwrap();
        assert_eq!((whole.name.as_str(), whole.disk.as_str()), ("vda", "vda"));
        assert_eq!(block_device(&root, (0, 40)), None);
    }
}
