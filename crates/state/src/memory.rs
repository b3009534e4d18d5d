//! The in-memory state backend: ordered maps per key group behind a lock.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use parking_lot::{Mutex, RwLock};

use crate::{StateBackend, StateTable, StateTableId, StateWrite};

/// Keeps every state table in memory. Nothing survives a restart.
#[derive(Debug, Default)]
pub struct MemoryStateBackend {
    tables: Mutex<HashMap<StateTableId, Arc<MemoryStateTable>>>,
}

impl MemoryStateBackend {
    pub fn new() -> Self {
        Self::default()
    }
}

impl StateBackend for MemoryStateBackend {
    fn table(&self, id: &str) -> Arc<dyn StateTable> {
        self.tables
            .lock()
            .entry(id.to_string())
            .or_default()
            .clone()
    }

    fn drop_table(&self, id: &str) {
        self.tables.lock().remove(id);
    }

    fn table_ids(&self) -> Vec<StateTableId> {
        let mut ids: Vec<_> = self.tables.lock().keys().cloned().collect();
        ids.sort();
        ids
    }
}

/// The entries of one key group, in key order.
type KeyGroupEntries = BTreeMap<Vec<u8>, Vec<u8>>;

#[derive(Debug, Default)]
struct MemoryStateTable {
    groups: RwLock<BTreeMap<u16, KeyGroupEntries>>,
}

impl StateTable for MemoryStateTable {
    fn get(&self, key_group: u16, key: &[u8]) -> Option<Vec<u8>> {
        self.groups.read().get(&key_group)?.get(key).cloned()
    }

    fn write(&self, writes: Vec<StateWrite>) {
        let mut groups = self.groups.write();
        for w in writes {
            match w {
                StateWrite::Put {
                    key_group,
                    key,
                    value,
                } => {
                    groups.entry(key_group).or_default().insert(key, value);
                }
                StateWrite::Delete { key_group, key } => {
                    if let Some(g) = groups.get_mut(&key_group) {
                        g.remove(&key);
                        if g.is_empty() {
                            groups.remove(&key_group);
                        }
                    }
                }
            }
        }
    }

    fn scan(&self, key_groups: Option<&[u16]>) -> Vec<(u16, Vec<u8>, Vec<u8>)> {
        let groups = self.groups.read();
        let mut out = Vec::new();
        for (kg, entries) in groups.iter() {
            if key_groups.is_some_and(|wanted| !wanted.contains(kg)) {
                continue;
            }
            out.extend(entries.iter().map(|(k, v)| (*kg, k.clone(), v.clone())));
        }
        out
    }

    fn len(&self) -> usize {
        self.groups.read().values().map(BTreeMap::len).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::MemoryStateBackend;
    use crate::conformance::state_backend_conformance_tests;

    state_backend_conformance_tests!(Box::new(MemoryStateBackend::new()));
}
