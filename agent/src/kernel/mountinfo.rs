//! Mounts as `/proc/<pid>/mountinfo` lists them (proc(5)): which mount a directory is
//! on, its filesystem type, and whether it is read-only.

use std::path::{Component, Path};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mount {
    pub major: u32,
    pub minor: u32,
    pub mount_point: String,
    /// Per-mount options (`ro`/`rw` first).
    pub mount_options: String,
    pub fstype: String,
    pub source: String,
    /// Superblock options: a filesystem remounted read-only after I/O errors says
    /// `ro` here.
    pub super_options: String,
}

impl Mount {
    pub fn read_only(&self) -> bool {
        let has_ro = |opts: &str| opts.split(',').any(|o| o == "ro");
        has_ro(&self.mount_options) || has_ro(&self.super_options)
    }

    pub fn dev(&self) -> (u32, u32) {
        (self.major, self.minor)
    }
}

/// Parses every well-formed line; malformed ones are skipped (the caller still gets
/// every other mount).
pub fn parse(text: &str) -> Vec<Mount> {
    text.lines().filter_map(parse_line).collect()
}

fn parse_line(line: &str) -> Option<Mount> {
    // id parent major:minor root mount_point options [optional...] - fstype source super
    let (left, right) = line.split_once(" - ")?;
    let l: Vec<&str> = left.split(' ').collect();
    let r: Vec<&str> = right.split(' ').collect();
    if l.len() < 6 || r.len() < 3 {
        return None;
    }
    let (major, minor) = l[2].split_once(':')?;
    Some(Mount {
        major: major.parse().ok()?,
        minor: minor.parse().ok()?,
        mount_point: unescape(l[4]),
        mount_options: l[5].to_string(),
        fstype: r[0].to_string(),
        source: unescape(r[1]),
        super_options: r[2].to_string(),
    })
}

/// The kernel writes space, tab, newline and backslash as `\ooo` octal.
fn unescape(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let oct = b
            .get(i + 1..i + 4)
            .filter(|o| o.iter().all(|c| (b'0'..=b'7').contains(c)));
        match (b[i], oct) {
            (b'\\', Some(o)) => {
                let v = o.iter().fold(0u32, |acc, c| acc * 8 + u32::from(c - b'0'));
                out.push(v as u8);
                i += 4;
            }
            (c, _) => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The mount a host path is on: the longest mount point that contains it, the last
/// one listed when several are stacked on the same point. When `dev` is known, mounts
/// of that device are preferred, so a view that differs from the mount table (a path
/// seen through a bind mount) still finds its filesystem.
pub fn find<'a>(mounts: &'a [Mount], path: &Path, dev: Option<(u32, u32)>) -> Option<&'a Mount> {
    let best = |want_dev: bool| {
        let mut best: Option<(usize, &Mount)> = None;
        for m in mounts {
            if want_dev && Some(m.dev()) != dev {
                continue;
            }
            let mp = Path::new(&m.mount_point);
            if !path.starts_with(mp) {
                continue;
            }
            let depth = mp
                .components()
                .filter(|c| matches!(c, Component::Normal(_)))
                .count();
            if best.is_none_or(|(d, _)| depth >= d) {
                best = Some((depth, m));
            }
        }
        best.map(|(_, m)| m)
    };
    dev.and_then(|_| best(true)).or_else(|| best(false))
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = "\
22 27 0:21 / /proc rw,relatime - proc proc rw
27 1 254:0 / / rw,relatime - ext4 /dev/vda rw,discard
30 27 254:1 / /var/lib/etcd rw,noatime shared:5 master:1 - xfs /dev/vdb rw,attr2
31 27 0:40 / /mnt/with\\040space ro,relatime - tmpfs none rw,size=4096k
32 27 7:0 / /var/log rw,relatime - ext4 /dev/loop0 ro,errors=remount-ro
33 27 0:41 / /var/log rw,relatime - tmpfs none rw
garbage line
";

    #[test]
    fn lines_with_optional_fields_and_escapes_parse() {
        let m = parse(TEXT);
        assert_eq!(m.len(), 6, "the garbage line is skipped");
        assert_eq!(m[2].mount_point, "/var/lib/etcd");
        assert_eq!(m[2].fstype, "xfs");
        assert_eq!(m[2].dev(), (254, 1));
        assert_eq!(m[3].mount_point, "/mnt/with space");
    }

    #[test]
    fn read_only_from_mount_or_superblock_options() {
        let m = parse(TEXT);
        assert!(!m[1].read_only());
        assert!(m[3].read_only(), "mounted ro");
        assert!(m[4].read_only(), "superblock went ro after errors");
        assert!(!m[2].read_only(), "relatime is not ro");
    }

    #[test]
    fn the_longest_and_last_mount_point_wins() {
        let m = parse(TEXT);
        let at = |p: &str, dev| find(&m, Path::new(p), dev).map(|m| m.mount_point.clone());
        assert_eq!(
            at("/var/lib/etcd/member", None).as_deref(),
            Some("/var/lib/etcd")
        );
        assert_eq!(
            at("/var/lib/etcd2", None).as_deref(),
            Some("/"),
            "not a prefix by component"
        );
        assert_eq!(
            find(&m, Path::new("/var/log/pods"), None).unwrap().fstype,
            "tmpfs"
        );
        assert_eq!(
            find(&m, Path::new("/var/log/pods"), Some((7, 0)))
                .unwrap()
                .fstype,
            "ext4",
            "the device picks the mount"
        );
        assert_eq!(at("/srv", Some((9, 9))).as_deref(), Some("/"));
    }
}
