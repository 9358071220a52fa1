//! This node's cache of rendered Users, so a list of unchanged users is not decoded,
//! rendered and serialised again on every request.
//!
//! An entry is the serialised default view of one user as one client sees it, kept with
//! what it was built from: the `(version, stamp)` read in the same statement as the row
//! (migration 0009 has the database change the stamp whenever anything a User is built
//! from changes, on any node and by any code path) and a fingerprint of the client's
//! mapping rules and base URL. A list first reads each listed user's `(version, stamp)`
//! from an index and uses an entry only when all three match; it renders the others.
//!
//! Memory is bounded by two generations: new and promoted entries go to the current one;
//! when it holds half the budget it becomes the previous one and the old previous one is
//! dropped. An entry unused for a whole generation is gone; one in use moves forward.
use serde_json::value::RawValue;
use std::collections::HashMap;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::sync::{Arc, Mutex, OnceLock};
use uuid::Uuid;

/// Bytes charged per entry beyond its JSON text (key, map slot, `Arc` header).
const OVERHEAD: usize = 96;

/// `(client, user)`.
type Key = (Uuid, Uuid);

#[derive(Clone)]
struct Entry {
    version: i64,
    stamp: i64,
    fingerprint: u64,
    doc: Arc<RawValue>,
}

impl Entry {
    fn cost(&self) -> usize {
        self.doc.get().len() + OVERHEAD
    }
}

#[derive(Default)]
struct Generations {
    current: HashMap<Key, Entry>,
    current_bytes: usize,
    previous: HashMap<Key, Entry>,
}

pub struct Rendered {
    /// Bytes for both generations; 0 turns the cache off.
    budget: usize,
    gens: Mutex<Generations>,
}

static NODE: OnceLock<Rendered> = OnceLock::new();

/// The `(version, stamp)` this node keeps a user's rendering for, as one client sees it.
pub fn kept(client_id: Uuid, user_id: Uuid) -> Option<(i64, i64)> {
    NODE.get()?.entry(client_id, user_id)
}

/// What a listed user's entry must match.
#[derive(Debug, Clone, Copy)]
pub struct Want {
    pub user_id: Uuid,
    pub version: i64,
    pub stamp: i64,
}

/// The fingerprint of everything a rendering depends on besides the row: the mapping
/// rules in force and the base URL of `location` and `$ref`.
pub fn fingerprint<'a>(base_url: &str, rules: impl IntoIterator<Item = (&'a str, &'a str)>) -> u64 {
    let mut h = DefaultHasher::new();
    base_url.hash(&mut h);
    for (scim, local) in rules {
        scim.hash(&mut h);
        local.hash(&mut h);
    }
    h.finish()
}

impl Want {
    pub fn new(user_id: Uuid, version: i64, stamp: i64) -> Want {
        Want {
            user_id,
            version,
            stamp,
        }
    }
}

impl Rendered {
    pub fn new(budget_bytes: usize) -> Rendered {
        Rendered {
            budget: budget_bytes,
            gens: Mutex::new(Generations::default()),
        }
    }

    /// The node's cache; the budget is taken from the first caller.
    pub fn node(budget_bytes: usize) -> &'static Rendered {
        NODE.get_or_init(|| Rendered::new(budget_bytes))
    }

    pub fn enabled(&self) -> bool {
        self.budget > 0
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Generations> {
        self.gens.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The kept document of each wanted user, where one matches.
    pub fn get_many(
        &self,
        client_id: Uuid,
        fingerprint: u64,
        want: &[Want],
    ) -> Vec<Option<Arc<RawValue>>> {
        if !self.enabled() {
            return vec![None; want.len()];
        }
        let mut g = self.lock();
        let mut out = Vec::with_capacity(want.len());
        for w in want {
            let key = (client_id, w.user_id);
            let matches = |e: &Entry| {
                e.version == w.version && e.stamp == w.stamp && e.fingerprint == fingerprint
            };
            if let Some(e) = g.current.get(&key) {
                out.push(matches(e).then(|| e.doc.clone()));
                continue;
            }
            match g.previous.remove(&key) {
                Some(e) if matches(&e) => {
                    out.push(Some(e.doc.clone()));
                    self.insert(&mut g, key, e);
                }
                _ => out.push(None),
            }
        }
        out
    }

    /// Keeps documents rendered from rows read with these versions and stamps.
    pub fn put_many(
        &self,
        client_id: Uuid,
        fingerprint: u64,
        docs: impl IntoIterator<Item = (Want, Arc<RawValue>)>,
    ) {
        if !self.enabled() {
            return;
        }
        let mut g = self.lock();
        for (w, doc) in docs {
            let e = Entry {
                version: w.version,
                stamp: w.stamp,
                fingerprint,
                doc,
            };
            g.previous.remove(&(client_id, w.user_id));
            self.insert(&mut g, (client_id, w.user_id), e);
        }
    }

    fn insert(&self, g: &mut Generations, key: Key, e: Entry) {
        let cost = e.cost();
        if cost > self.budget / 2 {
            return;
        }
        if let Some(old) = g.current.remove(&key) {
            g.current_bytes -= old.cost();
        }
        if g.current_bytes + cost > self.budget / 2 {
            g.previous = std::mem::take(&mut g.current);
            g.current_bytes = 0;
        }
        g.current_bytes += cost;
        g.current.insert(key, e);
    }

    fn entry(&self, client_id: Uuid, user_id: Uuid) -> Option<(i64, i64)> {
        let g = self.lock();
        let key = (client_id, user_id);
        g.current
            .get(&key)
            .or_else(|| g.previous.get(&key))
            .map(|e| (e.version, e.stamp))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::value::to_raw_value;

    fn doc(n: usize) -> Arc<RawValue> {
        Arc::from(to_raw_value(&"x".repeat(n)).unwrap())
    }

    fn want(i: u128, version: i64, stamp: i64) -> Want {
        Want {
            user_id: Uuid::from_u128(i),
            version,
            stamp,
        }
    }

    const C: Uuid = Uuid::from_u128(7);

    #[test]
    fn an_entry_serves_only_its_version_stamp_and_fingerprint() {
        let r = Rendered::new(1 << 20);
        r.put_many(C, 1, [(want(1, 3, 10), doc(10))]);
        let got = |w: Want, fp: u64| r.get_many(C, fp, &[w])[0].is_some();
        assert!(got(want(1, 3, 10), 1));
        assert!(!got(want(1, 4, 10), 1), "another version");
        assert!(!got(want(1, 3, 11), 1), "another stamp");
        assert!(!got(want(1, 3, 10), 2), "other mapping rules");
        assert!(!got(want(2, 3, 10), 1), "another user");
        assert!(
            r.get_many(Uuid::from_u128(8), 1, &[want(1, 3, 10)])[0].is_none(),
            "another client"
        );
        // A newer rendering replaces the entry.
        r.put_many(C, 1, [(want(1, 4, 10), doc(10))]);
        assert_eq!(r.entry(C, Uuid::from_u128(1)), Some((4, 10)));
    }

    #[test]
    fn memory_stays_within_the_budget_and_used_entries_survive() {
        let each = 100 + OVERHEAD;
        // Room for 10 entries per generation.
        let r = Rendered::new(each * 20);
        r.put_many(C, 0, (0..10).map(|i| (want(i, 1, 0), doc(98))));
        assert_eq!(r.lock().current.len(), 10);
        // Entry 0 is used while twenty more arrive (two generations): it moves forward.
        for i in 10..30 {
            assert!(r.get_many(C, 0, &[want(0, 1, 0)])[0].is_some());
            r.put_many(C, 0, [(want(i, 1, 0), doc(98))]);
        }
        let g = r.lock();
        assert!(g.current.len() + g.previous.len() <= 20);
        assert!(g.current_bytes <= each * 10);
        drop(g);
        assert!(r.entry(C, Uuid::from_u128(0)).is_some(), "used entry kept");
        assert!(
            r.entry(C, Uuid::from_u128(1)).is_none(),
            "unused entry dropped"
        );
    }

    #[test]
    fn a_newer_rendering_replaces_in_place() {
        let each = 100 + OVERHEAD;
        let r = Rendered::new(each * 20);
        r.put_many(C, 0, (0..10).map(|i| (want(i, 1, 0), doc(98))));
        // The generation is full; a replacement frees its old entry's room first.
        r.put_many(C, 0, [(want(3, 2, 0), doc(98))]);
        let g = r.lock();
        assert_eq!((g.current.len(), g.previous.len()), (10, 0));
        assert_eq!(g.current_bytes, each * 10);
    }

    #[test]
    fn a_zero_budget_keeps_nothing() {
        let r = Rendered::new(0);
        r.put_many(C, 0, [(want(1, 1, 0), doc(1))]);
        assert!(r.get_many(C, 0, &[want(1, 1, 0)])[0].is_none());
    }

    #[test]
    fn the_fingerprint_follows_rules_and_base_url() {
        let a = fingerprint("https://a/scim/v2", [("name.givenName", "first_name")]);
        assert_eq!(
            a,
            fingerprint("https://a/scim/v2", [("name.givenName", "first_name")])
        );
        assert_ne!(
            a,
            fingerprint("https://a/scim/v2", [("name.givenName", "last_name")])
        );
        assert_ne!(
            a,
            fingerprint("https://b/scim/v2", [("name.givenName", "first_name")])
        );
    }
}
