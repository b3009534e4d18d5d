//! Processing-time state TTL (`state_ttl`, see docs/sql.md): when each key of an
//! operator's state was last touched, so the keys untouched for the TTL can be forgotten.

use std::collections::{BTreeSet, HashMap};
use std::hash::Hash;

/// Keys by the time (wall clock, ms) they were last touched.
#[derive(Debug)]
pub struct Recency<K> {
    ttl_ms: i64,
    touched: HashMap<K, i64>,
    /// The same, ordered by time.
    order: BTreeSet<(i64, K)>,
}

impl<K: Ord + Hash + Clone> Recency<K> {
    pub fn new(ttl: std::time::Duration) -> Self {
        Recency {
            ttl_ms: ttl.as_millis() as i64,
            touched: HashMap::new(),
            order: BTreeSet::new(),
        }
    }

    /// `key` was used at `now`: it lives one more TTL.
    pub fn touch(&mut self, key: K, now: i64) {
        if let Some(old) = self.touched.insert(key.clone(), now) {
            self.order.remove(&(old, key.clone()));
        }
        self.order.insert((now, key));
    }

    /// Takes the keys untouched since `now - ttl`.
    pub fn stale(&mut self, now: i64) -> Vec<K> {
        let mut stale = Vec::new();
        while let Some((at, _)) = self.order.first() {
            if at.saturating_add(self.ttl_ms) > now {
                break;
            }
            let (_, key) = self.order.pop_first().expect("checked above");
            self.touched.remove(&key);
            stale.push(key);
        }
        stale
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_goes_stale_one_ttl_after_its_last_touch() {
        let mut recency = Recency::new(std::time::Duration::from_millis(10));
        recency.touch("a", 0);
        recency.touch("b", 5);
        recency.touch("a", 8);
        assert_eq!(recency.stale(15), vec!["b"]);
        assert!(recency.stale(17).is_empty());
        assert_eq!(recency.stale(18), vec!["a"]);
        assert!(recency.stale(100).is_empty());
    }
}
