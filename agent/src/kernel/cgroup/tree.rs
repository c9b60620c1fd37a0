//! Where the kubelet's cgroups are in a hierarchy, and walking them.

use std::path::{Path, PathBuf};

/// Finds the kubelet's top cgroup (`kubepods` with the cgroupfs driver,
/// `kubepods.slice` with systemd) at the root of a hierarchy or one level below (a
/// kubelet `--cgroup-root` other than `/`). Returns its path relative to the root.
pub fn find_kubepods(root: &Path) -> Option<String> {
    let is_kubepods = |n: &str| n == "kubepods" || n == "kubepods.slice";
    for name in ["kubepods", "kubepods.slice"] {
        if root.join(name).is_dir() {
            return Some(format!("/{name}"));
        }
    }
    for e in std::fs::read_dir(root).ok()?.flatten() {
        if !e.file_type().is_ok_and(|t| t.is_dir()) {
            continue;
        }
        let parent = e.file_name().to_string_lossy().into_owned();
        let Ok(inner) = std::fs::read_dir(e.path()) else {
            continue;
        };
        for inner in inner.flatten() {
            let n = inner.file_name().to_string_lossy().into_owned();
            if is_kubepods(&n) && inner.file_type().is_ok_and(|t| t.is_dir()) {
                return Some(format!("/{parent}/{n}"));
            }
        }
    }
    None
}

/// Subdirectories of a cgroup directory, names only; a cgroup removed meanwhile has none.
pub fn child_cgroups(dir: &Path) -> Vec<String> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut out: Vec<String> = entries
        .flatten()
        .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    out.sort();
    out
}

/// A cgroup path (`/kubepods/burstable/pod.../<id>`) under a hierarchy's directory.
pub fn cgroup_dir(hierarchy: &Path, cgroup_path: &str) -> PathBuf {
    hierarchy.join(cgroup_path.trim_start_matches('/'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kubepods_at_the_top_or_under_a_cgroup_root() {
        let t = tempfile::tempdir().unwrap();
        assert_eq!(find_kubepods(t.path()), None);
        std::fs::create_dir_all(t.path().join("system.slice/containerd.service")).unwrap();
        std::fs::write(t.path().join("cpu.stat"), "").unwrap();
        assert_eq!(
            find_kubepods(t.path()),
            None,
            "files and other slices are not it"
        );
        std::fs::create_dir_all(t.path().join("kubelet.slice/kubepods.slice")).unwrap();
        assert_eq!(
            find_kubepods(t.path()).as_deref(),
            Some("/kubelet.slice/kubepods.slice")
        );
        std::fs::create_dir(t.path().join("kubepods")).unwrap();
        assert_eq!(find_kubepods(t.path()).as_deref(), Some("/kubepods"));
        assert_eq!(find_kubepods(&t.path().join("absent")), None);
    }

    #[test]
    fn children_are_sorted_directories_and_paths_join_under_the_hierarchy() {
        let t = tempfile::tempdir().unwrap();
        for d in ["b", "a"] {
            std::fs::create_dir(t.path().join(d)).unwrap();
        }
        std::fs::write(t.path().join("cpu.stat"), "").unwrap();
        assert_eq!(child_cgroups(t.path()), ["a", "b"]);
        assert!(child_cgroups(&t.path().join("gone")).is_empty());
        assert_eq!(
            cgroup_dir(Path::new("/sys/fs/cgroup/cpu"), "/kubepods/pod1"),
            Path::new("/sys/fs/cgroup/cpu/kubepods/pod1")
        );
    }
}
