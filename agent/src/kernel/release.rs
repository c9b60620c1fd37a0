//! The running kernel's release, `/proc/sys/kernel/osrelease` (`uname -r`).

use super::read_optional;
use crate::host::HostRoot;

/// The release string, absent when procfs does not have it (a fixture tree).
pub fn read(root: &HostRoot) -> Option<String> {
    read_optional(&root.proc(&["sys", "kernel", "osrelease"]))
}

/// `major.minor.patch` of a release such as `5.15.0-91-generic` or
/// `4.19.84-microsoft-standard`; a missing patch reads as 0.
pub fn parse_version(release: &str) -> Option<(u32, u32, u32)> {
    let numeric: String = release
        .trim()
        .chars()
        .take_while(|c| c.is_ascii_digit() || *c == '.')
        .collect();
    let mut it = numeric.split('.').filter(|p| !p.is_empty());
    let major = it.next()?.parse().ok()?;
    let minor = it.next()?.parse().ok()?;
    let patch = it.next().and_then(|p| p.parse().ok()).unwrap_or(0);
    Some((major, minor, patch))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_of_distribution_and_vendor_releases() {
        assert_eq!(parse_version("5.15.0-91-generic"), Some((5, 15, 0)));
        assert_eq!(
            parse_version("4.19.84-microsoft-standard\n"),
            Some((4, 19, 84))
        );
        assert_eq!(parse_version("3.10.0-1160.el7.x86_64"), Some((3, 10, 0)));
        assert_eq!(parse_version("6.1"), Some((6, 1, 0)));
        assert_eq!(parse_version("garbage"), None);
        assert_eq!(parse_version(""), None);
        assert_eq!(parse_version("6"), None, "a minor is needed");
        assert_eq!(parse_version("99999999999.1"), None, "not a u32");
    }

    #[test]
    fn read_from_procfs_or_absent() {
        let t = tempfile::tempdir().unwrap();
        let root = HostRoot {
            proc: t.path().to_path_buf(),
            ..HostRoot::default()
        };
        assert_eq!(read(&root), None);
        std::fs::create_dir_all(t.path().join("sys/kernel")).unwrap();
        std::fs::write(t.path().join("sys/kernel/osrelease"), "6.1.0-18-amd64\n").unwrap();
        assert_eq!(read(&root).as_deref(), Some("6.1.0-18-amd64"));
    }
}
