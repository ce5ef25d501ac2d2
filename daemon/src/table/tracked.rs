//! A map that tells the journal what changed.

use std::collections::{BTreeMap, BTreeSet};

/// A map that remembers which keys changed since the journal's last record: reads go through
/// `Deref`, every change through its own methods, so none can be missed.
#[derive(Debug)]
pub(crate) struct Tracked<V> {
    map: BTreeMap<String, V>,
    changed: BTreeSet<String>,
}

impl<V> Default for Tracked<V> {
    fn default() -> Self {
        Tracked {
            map: BTreeMap::new(),
            changed: BTreeSet::new(),
        }
    }
}

impl<V> std::ops::Deref for Tracked<V> {
    type Target = BTreeMap<String, V>;

    fn deref(&self) -> &Self::Target {
        &self.map
    }
}

impl<V> Tracked<V> {
    pub(super) fn insert(&mut self, key: String, value: V) -> Option<V> {
        self.changed.insert(key.clone());
        self.map.insert(key, value)
    }

    pub(super) fn remove(&mut self, key: &str) -> Option<V> {
        let removed = self.map.remove(key);
        if removed.is_some() {
            self.changed.insert(key.to_owned());
        }
        removed
    }

    pub(super) fn get_mut(&mut self, key: &str) -> Option<&mut V> {
        let value = self.map.get_mut(key);
        if value.is_some() {
            self.changed.insert(key.to_owned());
        }
        value
    }

    /// The keys changed since the last call.
    pub(super) fn take_changes(&mut self) -> BTreeSet<String> {
        std::mem::take(&mut self.changed)
    }
}
