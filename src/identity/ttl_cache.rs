//! A node's short memory: entries reused for at most [`TTL`], bounded in size. Protocol
//! caches (verified SCIM tokens, API keys) use it so a request does not repeat lookups;
//! changes made on this node forget entries at once, changes on other nodes are seen
//! within [`TTL`].
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

pub const TTL: Duration = Duration::from_secs(1);
/// Entries beyond this are dropped (expired ones first, then all).
pub const CAPACITY: usize = 10_000;

pub struct Cache<T> {
    map: Mutex<HashMap<String, (Instant, T)>>,
}

impl<T: Clone> Default for Cache<T> {
    fn default() -> Self {
        Self::new()
    }
}

impl<T: Clone> Cache<T> {
    pub fn new() -> Self {
        Cache {
            map: Mutex::new(HashMap::new()),
        }
    }

    pub fn get(&self, key: &str) -> Option<T> {
        let map = self.map.lock().unwrap_or_else(|e| e.into_inner());
        map.get(key)
            .filter(|(at, _)| at.elapsed() < TTL)
            .map(|(_, v)| v.clone())
    }

    pub fn put(&self, key: String, value: T) {
        let mut map = self.map.lock().unwrap_or_else(|e| e.into_inner());
        if map.len() >= CAPACITY {
            map.retain(|_, (at, _)| at.elapsed() < TTL);
            if map.len() >= CAPACITY {
                map.clear();
            }
        }
        map.insert(key, (Instant::now(), value));
    }

    /// Keeps only the entries `keep` accepts.
    pub fn retain(&self, keep: impl Fn(&str, &T) -> bool) {
        let mut map = self.map.lock().unwrap_or_else(|e| e.into_inner());
        map.retain(|k, (_, v)| keep(k, v));
    }

    pub fn len(&self) -> usize {
        self.map.lock().unwrap_or_else(|e| e.into_inner()).len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_expire_and_capacity_is_bounded() {
        let c: Cache<u32> = Cache::new();
        c.put("a".into(), 1);
        assert_eq!(c.get("a"), Some(1));
        assert_eq!(c.get("b"), None);
        for i in 0..(CAPACITY as u32 + 5) {
            c.put(format!("k{i}"), i);
        }
        assert!(c.len() <= CAPACITY);
        c.retain(|k, _| k != "k3");
        assert_eq!(c.get("k3"), None);
        let short: Cache<u32> = Cache::new();
        short.put("x".into(), 1);
        std::thread::sleep(TTL + Duration::from_millis(50));
        assert_eq!(short.get("x"), None, "entries expire after the TTL");
    }
}
