//! Filesystems a test mounts for itself: a tmpfs, or an ext4 on a loop device over a
//! file on the machine's disk. Unmounted (and the loop device detached) on drop, even
//! when the test fails.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};

static SEQ: AtomicUsize = AtomicUsize::new(0);

fn unique(what: &str) -> String {
    format!(
        "nodediag-test-{what}-{}-{}",
        std::process::id(),
        SEQ.fetch_add(1, Ordering::SeqCst)
    )
}

/// The command's trimmed output, or what it said on stderr.
pub fn run(cmd: &str, args: &[&str]) -> Result<String, String> {
    let out = Command::new(cmd)
        .args(args)
        .output()
        .map_err(|e| format!("{cmd}: {e}"))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
    } else {
        Err(format!(
            "{cmd} {args:?}: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

fn path(p: &Path) -> &str {
    p.to_str().expect("utf-8 path")
}

/// A mount point in a temporary directory, unmounted (and its loop device detached)
/// on drop.
pub struct Mount {
    /// Removed (with the image file) after the unmount in drop: fields drop last.
    _dir: tempfile::TempDir,
    point: PathBuf,
    pub loop_dev: Option<String>,
}

impl Mount {
    pub fn tmpfs(options: &str) -> Result<Mount, String> {
        let dir = tempfile::Builder::new()
            .prefix(&unique("tmpfs"))
            .tempdir()
            .map_err(|e| e.to_string())?;
        let point = dir.path().join("mnt");
        std::fs::create_dir(&point).map_err(|e| e.to_string())?;
        run(
            "mount",
            &["-t", "tmpfs", "-o", options, "nodediag-test", path(&point)],
        )?;
        Ok(Mount {
            _dir: dir,
            point,
            loop_dev: None,
        })
    }

    /// An ext4 filesystem on a loop device over a file on the machine's disk.
    pub fn loop_ext4(size: &str) -> Result<Mount, String> {
        Self::loop_ext4_with(size, "defaults")
    }

    /// [`Mount::loop_ext4`] mounted with `options` (`mount -o`).
    pub fn loop_ext4_with(size: &str, options: &str) -> Result<Mount, String> {
        let dir = tempfile::Builder::new()
            .prefix(&unique("loop"))
            .tempdir_in("/var/tmp")
            .map_err(|e| e.to_string())?;
        let image = dir.path().join("disk.img");
        let point = dir.path().join("mnt");
        std::fs::create_dir(&point).map_err(|e| e.to_string())?;
        run("truncate", &["-s", size, path(&image)])?;
        run("mkfs.ext4", &["-q", "-F", path(&image)])?;
        let loop_dev = run("losetup", &["--find", "--show", path(&image)])?;
        let mut m = Mount {
            _dir: dir,
            point,
            loop_dev: Some(loop_dev.clone()),
        };
        run("mount", &["-o", options, &loop_dev, path(&m.point)]).inspect_err(|_| {
            let _ = run("losetup", &["-d", &loop_dev]);
            m.loop_dev = None;
        })?;
        Ok(m)
    }

    pub fn path(&self) -> &str {
        path(&self.point)
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        if run("umount", &[path(&self.point)]).is_err() {
            let _ = run("umount", &["-l", path(&self.point)]);
        }
        if let Some(dev) = &self.loop_dev {
            let _ = run("losetup", &["-d", dev]);
        }
    }
}
