//! A per-process cache kept honest by NOTIFY ([`crate::invalidation`]):
//! an entry lives at most its TTL, nothing is trusted while the LISTEN
//! connection is down, and a value read before an invalidation is never
//! stored after it (the reader takes the epoch before reading).

use std::{
    collections::HashMap,
    hash::Hash,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use parking_lot::Mutex;

use super::placement::Directory;

pub struct NotifiedCache<K, V> {
    ttl: Duration,
    /// Whose LISTEN connection vouches for the cache.
    directory: Arc<Directory>,
    entries: Mutex<HashMap<K, (V, Instant)>>,
    /// Entries kept at most; past it the cache starts over.
    max_entries: usize,
    /// Bumped by every invalidation.
    epoch: AtomicU64,
}

impl<K: Eq + Hash, V: Clone> NotifiedCache<K, V> {
    pub fn new(ttl: Duration, directory: Arc<Directory>, max_entries: usize) -> Self {
        NotifiedCache {
            ttl,
            directory,
            entries: Mutex::new(HashMap::new()),
            max_entries,
            epoch: AtomicU64::new(0),
        }
    }

    /// The cached value, if fresh and the LISTEN connection is up. No I/O.
    pub fn cached(&self, key: &K) -> Option<V> {
        if !self.directory.listening() {
            return None;
        }
        self.entries
            .lock()
            .get(key)
            .filter(|(_, at)| at.elapsed() < self.ttl)
            .map(|(v, _)| v.clone())
    }

    /// The epoch to pass to [`NotifiedCache::store`], taken before reading.
    pub fn epoch(&self) -> u64 {
        self.epoch.load(Ordering::SeqCst)
    }

    /// Caches `value`, read after [`NotifiedCache::epoch`] answered
    /// `epoch`, unless an invalidation came in between.
    pub fn store(&self, epoch: u64, key: K, value: V) {
        let mut entries = self.entries.lock();
        if self.epoch.load(Ordering::SeqCst) != epoch {
            return;
        }
        if entries.len() >= self.max_entries {
            entries.clear();
        }
        entries.insert(key, (value, Instant::now()));
    }

    pub fn invalidate(&self, key: &K) {
        let mut entries = self.entries.lock();
        self.epoch.fetch_add(1, Ordering::SeqCst);
        entries.remove(key);
    }

    pub fn invalidate_all(&self) {
        let mut entries = self.entries.lock();
        self.epoch.fetch_add(1, Ordering::SeqCst);
        entries.clear();
    }
}
