//! Values that come back round after round (a pod's name, its resolver settings, the
//! names looked up and those that answered), held once and shared by every probe in
//! the rule window that has them. At `--interval 1s` the window keeps 300 rounds of
//! probes, and copies of these were most of what those probes held.

use std::borrow::Borrow;
use std::collections::HashSet;
use std::hash::Hash;
use std::sync::Arc;

#[derive(Debug)]
pub struct Shared<T: ?Sized + Eq + Hash> {
    kept: HashSet<Arc<T>>,
}

impl<T: ?Sized + Eq + Hash> Default for Shared<T> {
    fn default() -> Self {
        Self {
            kept: HashSet::new(),
        }
    }
}

impl<T: ?Sized + Eq + Hash> Shared<T> {
    /// The one copy of `value`, made from it if none is held.
    pub fn get<V: Borrow<T> + Into<Arc<T>>>(&mut self, value: V) -> Arc<T> {
        if let Some(kept) = self.kept.get(value.borrow()) {
            return kept.clone();
        }
        let kept: Arc<T> = value.into();
        self.kept.insert(kept.clone());
        kept
    }

    /// Lets go of the values no sample holds any more (they left the window).
    pub fn forget_unused(&mut self) {
        self.kept.retain(|v| Arc::strong_count(v) > 1);
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.kept.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn equal_values_are_one_allocation_until_unused() {
        let mut names: Shared<str> = Shared::default();
        let a = names.get("kubernetes.default.svc.cluster.local");
        let b = names.get(String::from("kubernetes.default.svc.cluster.local"));
        assert!(Arc::ptr_eq(&a, &b));
        let other = names.get("default/web-0");
        assert!(!Arc::ptr_eq(&a, &other));
        assert_eq!(names.len(), 2);

        drop(other);
        names.forget_unused();
        assert_eq!(names.len(), 1, "only the value still held is kept");
        drop((a, b));
        names.forget_unused();
        assert_eq!(names.len(), 0);
    }

    #[test]
    fn sized_values_share_too() {
        let mut lists: Shared<Vec<u8>> = Shared::default();
        let a = lists.get(vec![1, 2]);
        let b = lists.get(vec![1, 2]);
        assert!(Arc::ptr_eq(&a, &b));
        assert!(!Arc::ptr_eq(&a, &lists.get(vec![2, 1])));
    }
}
