//! This node's short memory of verified SCIM tokens and of client mappings: each entry is
//! reused for at most [`TTL`], so a SCIM request does not look both up again. A change made
//! on this node (token rotated or revoked, client disabled or deleted, mapping replaced)
//! forgets the client's entries at once; one made on another node is seen here within
//! [`TTL`]. Expiry is still checked on every request against the clock.
use super::mapping::Rule;
use crate::store::scim::{ScimClient, ScimToken};
use std::collections::HashMap;
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};
use uuid::Uuid;

pub const TTL: Duration = Duration::from_secs(1);
/// Entries beyond this are dropped (expired ones first, then all).
const CAPACITY: usize = 10_000;

pub struct Cache<T> {
    map: Mutex<HashMap<String, (Instant, T)>>,
}

impl<T: Clone> Cache<T> {
    fn new() -> Self {
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

    fn retain(&self, keep: impl Fn(&str, &T) -> bool) {
        let mut map = self.map.lock().unwrap_or_else(|e| e.into_inner());
        map.retain(|k, (_, v)| keep(k, v));
    }
}

/// Verified tokens by SHA-256 of the secret.
pub fn tokens() -> &'static Cache<(ScimToken, ScimClient)> {
    static C: OnceLock<Cache<(ScimToken, ScimClient)>> = OnceLock::new();
    C.get_or_init(Cache::new)
}

/// Effective mapping rules by client id.
pub fn mappings() -> &'static Cache<Vec<Rule>> {
    static C: OnceLock<Cache<Vec<Rule>>> = OnceLock::new();
    C.get_or_init(Cache::new)
}

/// Forgets everything remembered about a client (after any change to it on this node).
pub fn forget_client(client_id: Uuid) {
    tokens().retain(|_, (_, c)| c.client_id != client_id);
    let key = client_id.to_string();
    mappings().retain(|k, _| k != key);
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
        assert!(c.map.lock().unwrap().len() <= CAPACITY);
        c.retain(|k, _| k != "k3");
        assert_eq!(c.get("k3"), None);
    }
}
