//! A hash map split into shards that are shared between its copies and
//! copied only when written: a copy of a million-entry map costs 64 pointer
//! copies, and a delta that changes one entry copies one shard (1/64th of the
//! entries, each a key and an `Arc`), so a config delta is applied in
//! microseconds while readers go on reading the previous map. Reads are a
//! plain `HashMap` lookup, one indirection deeper.
//!
//! (A persistent map, `imbl`'s HAMT, shares more finely, but every lookup
//! then walks several nodes; lookups are on the request path, writes are not.)

use foldhash::fast::RandomState;
use foldhash::HashMap;
use std::borrow::Borrow;
use std::hash::{BuildHasher, Hash};
use std::sync::Arc;

const SHARDS: usize = 64;

#[derive(Clone, Debug)]
pub struct CowMap<K, V> {
    shards: Vec<Arc<HashMap<K, V>>>,
    /// Picks the shard; each shard hashes with its own state again.
    hasher: RandomState,
    len: usize,
}

impl<K, V> Default for CowMap<K, V> {
    fn default() -> Self {
        CowMap {
            shards: (0..SHARDS).map(|_| Arc::new(HashMap::default())).collect(),
            hasher: RandomState::default(),
            len: 0,
        }
    }
}

impl<K: Hash + Eq + Clone, V: Clone> CowMap<K, V> {
    fn shard<Q: Hash + ?Sized>(&self, key: &Q) -> usize {
        (self.hasher.hash_one(key) as usize) % SHARDS
    }

    pub fn get<Q>(&self, key: &Q) -> Option<&V>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        self.shards[self.shard(key)].get(key)
    }

    /// Room for `additional` more entries, spread over the shards: a map
    /// built from a large snapshot does not grow (and rehash) step by step.
    pub fn reserve(&mut self, additional: usize) {
        let each = additional.div_ceil(SHARDS);
        for shard in &mut self.shards {
            Arc::make_mut(shard).reserve(each);
        }
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Copies the shard first if another copy of the map still shares it.
    fn shard_mut<Q: Hash + ?Sized>(&mut self, key: &Q) -> &mut HashMap<K, V> {
        let index = self.shard(key);
        Arc::make_mut(&mut self.shards[index])
    }

    pub fn insert(&mut self, key: K, value: V) -> Option<V> {
        let previous = self.shard_mut(&key).insert(key, value);
        if previous.is_none() {
            self.len += 1;
        }
        previous
    }

    pub fn remove<Q>(&mut self, key: &Q) -> Option<V>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        // Reading first: a key that is absent copies no shard.
        self.get(key)?;
        let removed = self.shard_mut(key).remove(key);
        if removed.is_some() {
            self.len -= 1;
        }
        removed
    }

    pub fn iter(&self) -> impl Iterator<Item = (&K, &V)> {
        self.shards.iter().flat_map(|shard| shard.iter())
    }

    pub fn values(&self) -> impl Iterator<Item = &V> {
        self.iter().map(|(_, v)| v)
    }
}

impl<K: Hash + Eq + Clone, V: Clone> FromIterator<(K, V)> for CowMap<K, V> {
    fn from_iter<I: IntoIterator<Item = (K, V)>>(entries: I) -> Self {
        let mut map = CowMap::default();
        for (key, value) in entries {
            map.insert(key, value);
        }
        map
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn copies_share_shards_until_written() {
        let mut a: CowMap<u32, u32> = (0..1000).map(|i| (i, i)).collect();
        assert_eq!(a.len(), 1000);
        let mut b = a.clone();
        b.insert(7, 70);
        b.remove(&8);
        b.insert(5000, 1);
        assert_eq!((a.get(&7), b.get(&7)), (Some(&7), Some(&70)));
        assert_eq!((a.get(&8), b.get(&8)), (Some(&8), None));
        assert_eq!((a.len(), b.len()), (1000, 1000));
        let shared = a
            .shards
            .iter()
            .zip(b.shards.iter())
            .filter(|(x, y)| Arc::ptr_eq(x, y))
            .count();
        assert!(shared >= SHARDS - 3, "only the written shards are copied");
        a.remove(&9999);
        assert_eq!(a.len(), 1000);
        assert_eq!(b.iter().count(), 1000);
    }
}
