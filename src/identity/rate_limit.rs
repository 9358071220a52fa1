//! Rate limiting: named policies (`limit_count` requests per fixed `window_sec` window,
//! counted per `scope` subject), assigned to API keys, users or orgs, with one default
//! policy per endpoint family from `config.toml` (`default.login`, …).
//!
//! **Counting.** Every count that lets a request through comes from the database: one
//! upsert adds to the counter of (policy, subject, window) and returns the new count; the
//! request is allowed iff its count ≤ the limit. Concurrent requests on any number of nodes
//! sharing the database get distinct counts, so at most `limit_count` requests are allowed
//! per window — never more, on any number of nodes.
//!
//! **Reservations.** While a counter is far below its limit (at least 64 counts of
//! headroom) a node adds up to [`MAX_RESERVATION`] at once and hands the counts out from
//! memory, one per request, so most requests cost no statement. A node holds at most
//! `MAX_RESERVATION - 1` unused counts, which no other node can use: the documented margin
//! is that near a window's limit up to that many requests per node may be **denied early**;
//! none is ever admitted over the limit. Within 64 of the limit, counts are taken one at a
//! time again. One reservation is in flight per counter and node; requests that run out of
//! counts meanwhile wait for it (at most 500 ms) instead of each queueing a count of one on
//! the same row.
//!
//! **Fast path.** Once a node has seen a key denied in a window, it denies that key from
//! memory until the window ends, without touching the database. It only ever denies what the
//! database already denied (counts never go down within a window), so it adds no allowed
//! requests; it saves the policy read and the counter write for every further request of
//! a caller that keeps going over its limit (the flooding case). Its one staleness: if a
//! policy is raised, removed or unassigned mid-window on *another* node, a node that cached
//! a denial keeps denying that key until the window ends (at most `window_sec`).
//!
//! **Policy cache.** Which policy applies to a (family, API key, user, org) is also kept
//! per node for [`POLICY_CACHE_TTL_MS`], so a request under its limit costs one statement
//! (the upsert). A change made on this node clears both caches at once; a change made on
//! another node is seen here within that TTL, during which this node counts (exactly) under
//! the policy it had. A cached policy deleted meanwhile is looked up again.
use super::audit::{self, Event};
use super::{Identity, IdentityError};
use crate::config::{RateLimitConfig, RateSpec};
use crate::store::rate_limits::{Assignment, Candidate, CounterKey, NewPolicy, Policy};
use crate::store::{self, StoreError};
use chrono::{DateTime, TimeZone, Utc};
use serde::Serialize;
use serde_json::json;
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use uuid::Uuid;

/// Names of the config-managed default policies start with this; only `config.toml`
/// changes them.
pub const DEFAULT_PREFIX: &str = "default.";
pub const MAX_NAME_LEN: usize = 100;
pub const MAX_DESCRIPTION_LEN: usize = 1000;
pub const MAX_LIMIT: u32 = 1_000_000_000;
/// One year.
pub const MAX_WINDOW_SECS: u32 = 31_536_000;
pub const MAX_CLIENT_ID_LEN: usize = 255;
/// Counters are kept this long after their window ended, so a node whose clock is behind
/// never recreates (and so restarts) a window another node has purged.
pub const PURGE_GRACE_SECS: i64 = 300;
/// How often [`spawn_purger`]'s task runs by default.
pub const PURGE_INTERVAL: std::time::Duration = std::time::Duration::from_secs(300);
const PURGE_BATCH: i64 = 10_000;
/// Most denials a node remembers; beyond it (after dropping expired ones) it stops adding
/// and those keys go to the database.
pub const FAST_PATH_CAPACITY: usize = 65_536;
/// How long a node reuses the policy a lookup resolved to. A change made on another node
/// takes effect here within this time; changes made on this node at once.
pub const POLICY_CACHE_TTL_MS: i64 = 1000;

/// What one counter counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Scope {
    /// The client IP (IPv6 by /64, the usual allocation to one host or site).
    Ip,
    User,
    /// Every request of the org together.
    Org,
    ApiKey,
    /// An OIDC or SCIM client id.
    Client,
}

impl Scope {
    pub const ALL: [Scope; 5] = [
        Scope::Ip,
        Scope::User,
        Scope::Org,
        Scope::ApiKey,
        Scope::Client,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Ip => "ip",
            Scope::User => "user",
            Scope::Org => "org",
            Scope::ApiKey => "api_key",
            Scope::Client => "client",
        }
    }

    pub fn parse(s: &str) -> Result<Scope, IdentityError> {
        Scope::ALL
            .into_iter()
            .find(|x| x.as_str() == s)
            .ok_or_else(|| {
                IdentityError::invalid("scope", "must be one of ip, user, org, api_key, client")
            })
    }
}

/// An endpoint family with a default policy in `config.toml` `[rate_limits]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Family {
    /// Password logins, per client IP.
    Login,
    /// The OIDC token endpoint, per client.
    Token,
    /// SCIM, per SCIM client.
    Scim,
    /// The management API, per API key.
    Management,
    /// Public waitlist sign-ups, per client IP.
    Waitlist,
}

impl Family {
    pub const ALL: [Family; 5] = [
        Family::Login,
        Family::Token,
        Family::Scim,
        Family::Management,
        Family::Waitlist,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Family::Login => "login",
            Family::Token => "token",
            Family::Scim => "scim",
            Family::Management => "management",
            Family::Waitlist => "waitlist",
        }
    }

    /// The name of its default policy, e.g. `default.login`.
    pub fn policy_name(self) -> &'static str {
        match self {
            Family::Login => "default.login",
            Family::Token => "default.token",
            Family::Scim => "default.scim",
            Family::Management => "default.management",
            Family::Waitlist => "default.waitlist",
        }
    }

    /// What its default policy counts.
    pub fn scope(self) -> Scope {
        match self {
            Family::Login | Family::Waitlist => Scope::Ip,
            Family::Token | Family::Scim => Scope::Client,
            Family::Management => Scope::ApiKey,
        }
    }

    pub fn spec(self, c: &RateLimitConfig) -> RateSpec {
        match self {
            Family::Login => c.login,
            Family::Token => c.token,
            Family::Scim => c.scim,
            Family::Management => c.management,
            Family::Waitlist => c.waitlist,
        }
    }
}

/// Who a request comes from, as far as the caller knows. Which of these is counted depends
/// on the policy that applies (its scope); `api_key_id`, `user_id` and `org_id` also select
/// assigned policies.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct Subjects {
    pub ip: Option<IpAddr>,
    pub user_id: Option<Uuid>,
    pub org_id: Option<Uuid>,
    pub api_key_id: Option<Uuid>,
    pub client_id: Option<String>,
}

/// What [`check`] counts a request under: its endpoint family and who sent it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct RateKey {
    pub family: Family,
    pub subjects: Subjects,
}

impl RateKey {
    pub fn new(family: Family) -> Self {
        RateKey {
            family,
            subjects: Subjects::default(),
        }
    }
    pub fn ip(mut self, ip: IpAddr) -> Self {
        self.subjects.ip = Some(ip);
        self
    }
    pub fn user(mut self, user_id: Uuid) -> Self {
        self.subjects.user_id = Some(user_id);
        self
    }
    pub fn org(mut self, org_id: Uuid) -> Self {
        self.subjects.org_id = Some(org_id);
        self
    }
    pub fn api_key(mut self, api_key_id: Uuid) -> Self {
        self.subjects.api_key_id = Some(api_key_id);
        self
    }
    pub fn client(mut self, client_id: impl Into<String>) -> Self {
        self.subjects.client_id = Some(client_id.into());
        self
    }
}

/// The answer for one request, with what the `RateLimit-*` headers report.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Decision {
    pub allowed: bool,
    pub limit: u32,
    /// Requests left in this window after this one.
    pub remaining: u32,
    /// Seconds until the window ends (at least 1).
    pub reset_after_secs: u64,
    /// When denied: seconds until a request can succeed (the window's end).
    pub retry_after_secs: Option<u64>,
    /// The applied policy.
    pub policy_id: i32,
    pub window_secs: u32,
}

// ---------------------------------------------------------------------------------------
// Pure rules

/// The fixed window holding `now`: `[floor(now / w) * w, that + w)` in Unix seconds.
pub fn window_bounds(now: DateTime<Utc>, window_secs: u32) -> (DateTime<Utc>, DateTime<Utc>) {
    let w = i64::from(window_secs.max(1));
    let start = now.timestamp().div_euclid(w) * w;
    let at = |s: i64| Utc.timestamp_opt(s, 0).single().unwrap_or(now);
    (at(start), at(start + w))
}

/// Whole seconds from `now` until `end`, rounded up, at least 1.
pub fn secs_until(now: DateTime<Utc>, end: DateTime<Utc>) -> u64 {
    let micros = (end - now).num_microseconds().unwrap_or(i64::MAX).max(1);
    u64::try_from(micros)
        .unwrap_or(1)
        .div_ceil(1_000_000)
        .max(1)
}

/// The decision for the request that brought the counter to `count`.
pub fn decide(
    count: i64,
    limit: u32,
    window_secs: u32,
    policy_id: i32,
    now: DateTime<Utc>,
    window_end: DateTime<Utc>,
) -> Decision {
    let allowed = count <= i64::from(limit);
    let reset = secs_until(now, window_end);
    Decision {
        allowed,
        limit,
        remaining: u32::try_from((i64::from(limit) - count).max(0)).unwrap_or(0),
        reset_after_secs: reset,
        retry_after_secs: (!allowed).then_some(reset),
        policy_id,
        window_secs,
    }
}

/// The counted form of an IP: IPv4 (also when IPv4-mapped) as is, IPv6 as its /64.
pub fn ip_subject(ip: IpAddr) -> String {
    match ip.to_canonical() {
        IpAddr::V4(v4) => v4.to_string(),
        IpAddr::V6(v6) => {
            let s = v6.segments();
            let net = std::net::Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0);
            format!("{net}/64")
        }
    }
}

/// The counter subject for `scope`, with the user / org it belongs to (for the
/// `user_id` / `org_id` columns). Fails when the request does not carry that subject.
pub fn subject_for(
    scope: Scope,
    s: &Subjects,
    policy: &str,
) -> Result<(String, Option<Uuid>, Option<Uuid>), IdentityError> {
    let missing = || {
        IdentityError::invalid(
            "scope",
            format!(
                "policy {policy} counts per {} but the request carries none",
                scope.as_str()
            ),
        )
    };
    Ok(match scope {
        Scope::Ip => (ip_subject(s.ip.ok_or_else(missing)?), None, None),
        Scope::User => {
            let u = s.user_id.ok_or_else(missing)?;
            (u.to_string(), Some(u), None)
        }
        Scope::Org => {
            let o = s.org_id.ok_or_else(missing)?;
            (o.to_string(), None, Some(o))
        }
        Scope::ApiKey => (s.api_key_id.ok_or_else(missing)?.to_string(), None, None),
        Scope::Client => (s.client_id.clone().ok_or_else(missing)?, None, None),
    })
}

/// The policy that applies: the most specific assignment (API key, then user, then org),
/// else the family default. Among several at one level, the strictest sustained rate
/// (`limit_count / window_sec`), then the lowest id.
pub fn pick(candidates: Vec<Candidate>) -> Option<Policy> {
    candidates
        .into_iter()
        .min_by(|a, b| {
            let (p, q) = (&a.policy, &b.policy);
            let rate_p = i64::from(p.limit_count) * i64::from(q.window_sec);
            let rate_q = i64::from(q.limit_count) * i64::from(p.window_sec);
            a.level
                .cmp(&b.level)
                .then(rate_p.cmp(&rate_q))
                .then(p.policy_id.cmp(&q.policy_id))
        })
        .map(|c| c.policy)
}

fn check_name(name: &str, config_managed: bool) -> Result<String, IdentityError> {
    let name = name.trim();
    if name.is_empty()
        || name.chars().count() > MAX_NAME_LEN
        || name.chars().any(|c| c.is_control())
    {
        return Err(IdentityError::invalid(
            "name",
            format!("must be 1 to {MAX_NAME_LEN} printable characters"),
        ));
    }
    if !config_managed && name.starts_with(DEFAULT_PREFIX) {
        return Err(IdentityError::invalid(
            "name",
            "names starting with `default.` are reserved for the config.toml defaults",
        ));
    }
    Ok(name.to_string())
}

fn check_limit(limit_count: u32) -> Result<i32, IdentityError> {
    if !(1..=MAX_LIMIT).contains(&limit_count) {
        return Err(IdentityError::invalid(
            "limit_count",
            format!("must be between 1 and {MAX_LIMIT}"),
        ));
    }
    i32::try_from(limit_count).map_err(|_| IdentityError::invalid("limit_count", "too large"))
}

fn check_window(window_sec: u32) -> Result<i32, IdentityError> {
    if !(1..=MAX_WINDOW_SECS).contains(&window_sec) {
        return Err(IdentityError::invalid(
            "window_sec",
            format!("must be between 1 and {MAX_WINDOW_SECS} seconds"),
        ));
    }
    i32::try_from(window_sec).map_err(|_| IdentityError::invalid("window_sec", "too large"))
}

fn check_description(d: Option<&str>) -> Result<Option<String>, IdentityError> {
    match d.map(str::trim) {
        None | Some("") => Ok(None),
        Some(d) if d.chars().count() > MAX_DESCRIPTION_LEN => Err(IdentityError::invalid(
            "description",
            format!("must be at most {MAX_DESCRIPTION_LEN} characters"),
        )),
        Some(d) => Ok(Some(d.to_string())),
    }
}

fn check_key(key: &RateKey) -> Result<(), IdentityError> {
    if let Some(c) = &key.subjects.client_id
        && (c.is_empty() || c.len() > MAX_CLIENT_ID_LEN || c.chars().any(|c| c.is_control()))
    {
        return Err(IdentityError::invalid(
            "client_id",
            format!("must be 1 to {MAX_CLIENT_ID_LEN} printable bytes"),
        ));
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------
// Fast path (per node)

#[derive(Debug, Clone, Copy)]
struct Denial {
    until: DateTime<Utc>,
    limit: u32,
    window_secs: u32,
    policy_id: i32,
}

/// What selects a policy (the counted subject does not).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct Lookup {
    family: Family,
    api_key_id: Option<Uuid>,
    user_id: Option<Uuid>,
    org_id: Option<Uuid>,
}

impl Lookup {
    fn of(key: &RateKey) -> Self {
        Lookup {
            family: key.family,
            api_key_id: key.subjects.api_key_id,
            user_id: key.subjects.user_id,
            org_id: key.subjects.org_id,
        }
    }
}

type CachedPolicy = (Arc<Policy>, DateTime<Utc>);

/// One node's memory: keys it has seen denied (until their window ends) and the policy
/// each lookup resolved to (for [`POLICY_CACHE_TTL_MS`]).
#[derive(Debug)]
pub struct FastPath {
    denied: Mutex<HashMap<RateKey, Denial>>,
    /// The policy and when it was read.
    policies: Mutex<HashMap<Lookup, CachedPolicy>>,
    /// Counts this node reserved in the shared counter and has not handed out yet.
    reserved: Mutex<HashMap<SlotKey, Slots>>,
    /// Woken whenever a reservation of several counts ends (with or without counts).
    reservation_ended: tokio::sync::Notify,
    capacity: usize,
}

/// What a request that found no reserved count does next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Next {
    /// Add this many counts to the shared counter (several: a reservation).
    Reserve(i64),
    /// Another request of this node is reserving counts of the same counter: wait for it
    /// instead of queueing on the same row with a count of one.
    Wait,
}

/// Ends a reservation of several counts if the request is dropped while it is in flight
/// (a client that disconnects), so waiters are never left behind.
struct Reserving<'a> {
    node: &'a FastPath,
    key: &'a SlotKey,
    armed: bool,
}

impl Drop for Reserving<'_> {
    fn drop(&mut self) {
        if self.armed {
            self.node.abort_reservation(self.key);
        }
    }
}

/// A counter: (policy, subject, window start).
type SlotKey = (i32, String, i64);

/// Reserved counts `next..=end` of a counter (empty when `next > end`; `end` is then the
/// last count this node saw).
#[derive(Debug, Clone, Copy)]
struct Slots {
    next: i64,
    end: i64,
    window_end: DateTime<Utc>,
    /// A reservation of several counts is in flight (one at a time per counter and node,
    /// so concurrent requests do not each reserve a batch they cannot use).
    reserving: bool,
}

/// Counts a node reserves at once at most, and the headroom below which it reserves one at
/// a time. A node holds at most `MAX_RESERVATION - 1` unused counts of a window, so near a
/// window's end requests may be denied up to that many per node early — never admitted
/// over the limit.
pub const MAX_RESERVATION: i64 = 32;
const RESERVE_HEADROOM: i64 = 64;
/// How long a request waits for another's reservation before counting on its own.
const RESERVATION_WAIT: std::time::Duration = std::time::Duration::from_millis(500);

impl FastPath {
    pub fn new(capacity: usize) -> Self {
        FastPath {
            denied: Mutex::new(HashMap::new()),
            policies: Mutex::new(HashMap::new()),
            reserved: Mutex::new(HashMap::new()),
            reservation_ended: tokio::sync::Notify::new(),
            capacity,
        }
    }

    /// The remembered denial of `key` at `now`, if its window has not ended.
    pub fn denied(&self, key: &RateKey, now: DateTime<Utc>) -> Option<Decision> {
        let mut map = self.denied.lock().unwrap_or_else(|e| e.into_inner());
        let d = *map.get(key)?;
        if now >= d.until {
            map.remove(key);
            return None;
        }
        let reset = secs_until(now, d.until);
        Some(Decision {
            allowed: false,
            limit: d.limit,
            remaining: 0,
            reset_after_secs: reset,
            retry_after_secs: Some(reset),
            policy_id: d.policy_id,
            window_secs: d.window_secs,
        })
    }

    /// Remembers a denial the database gave, until `until` (the window's end).
    fn remember(&self, key: &RateKey, d: Denial, now: DateTime<Utc>) {
        let mut map = self.denied.lock().unwrap_or_else(|e| e.into_inner());
        if map.len() >= self.capacity {
            map.retain(|_, v| v.until > now);
            if map.len() >= self.capacity {
                return;
            }
        }
        map.insert(key.clone(), d);
    }

    fn policy(&self, l: &Lookup, now: DateTime<Utc>) -> Option<Arc<Policy>> {
        let map = self.policies.lock().unwrap_or_else(|e| e.into_inner());
        let (p, at) = map.get(l)?;
        let age = (now - *at).num_milliseconds();
        (0..POLICY_CACHE_TTL_MS)
            .contains(&age)
            .then(|| Arc::clone(p))
    }

    fn remember_policy(&self, l: Lookup, p: Arc<Policy>, now: DateTime<Utc>) {
        let mut map = self.policies.lock().unwrap_or_else(|e| e.into_inner());
        if map.len() >= self.capacity {
            map.clear();
        }
        map.insert(l, (p, now));
    }

    /// The next reserved count of `k`, if this node holds one.
    fn take_slot(&self, k: &SlotKey) -> Option<i64> {
        let mut map = self.reserved.lock().unwrap_or_else(|e| e.into_inner());
        let e = map.get_mut(k)?;
        (e.next <= e.end).then(|| {
            e.next += 1;
            e.next - 1
        })
    }

    /// What to do for `k` when no reserved count is left: one count at a time until this
    /// node has seen the counter, and while fewer than `RESERVE_HEADROOM` remain under
    /// `limit`; else a thirty-second of what remains, at most [`MAX_RESERVATION`]; or wait
    /// while such a reservation is in flight.
    fn next(&self, k: &SlotKey, limit: u32) -> Next {
        let mut map = self.reserved.lock().unwrap_or_else(|e| e.into_inner());
        match map.get_mut(k) {
            Some(e) if e.reserving && e.next > e.end => Next::Wait,
            // Not while counts are held: a batch that arrived meanwhile would go unused.
            Some(e) if e.next > e.end && i64::from(limit) - e.end >= RESERVE_HEADROOM => {
                e.reserving = true;
                Next::Reserve(((i64::from(limit) - e.end) / 32).clamp(1, MAX_RESERVATION))
            }
            _ => Next::Reserve(1),
        }
    }

    /// Whether a reservation of several counts of `k` is in flight.
    fn reserving(&self, k: &SlotKey) -> bool {
        let map = self.reserved.lock().unwrap_or_else(|e| e.into_inner());
        map.get(k).is_some_and(|e| e.reserving)
    }

    /// Ends a reservation of several counts that failed.
    fn abort_reservation(&self, k: &SlotKey) {
        let mut map = self.reserved.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(e) = map.get_mut(k) {
            e.reserving = false;
        }
        drop(map);
        self.reservation_ended.notify_waiters();
    }

    /// Keeps the counts `next..=end` reserved for `k` (unless unused ones are still held).
    /// `batch`: these are the counts of a reservation of several (which ends).
    fn keep_slots(&self, k: SlotKey, slots: Slots, batch: bool, now: DateTime<Utc>) {
        let mut map = self.reserved.lock().unwrap_or_else(|e| e.into_inner());
        if map.len() >= self.capacity {
            map.retain(|_, v| v.window_end > now);
            if map.len() >= self.capacity {
                map.clear();
            }
        }
        match map.get_mut(&k) {
            // Unused counts are still held: keep them (the new ones go unused, which can
            // only deny early, never admit over the limit).
            Some(e) if e.next <= e.end => {
                e.reserving &= !batch;
            }
            Some(e) => {
                let reserving = e.reserving && !batch;
                *e = Slots { reserving, ..slots };
            }
            None => {
                map.insert(k, slots);
            }
        }
        drop(map);
        if batch {
            self.reservation_ended.notify_waiters();
        }
    }

    /// Drops everything remembered (after this node changed a policy or assignment).
    pub fn forget(&self) {
        self.reserved
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clear();
        self.denied
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clear();
        self.policies
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clear();
    }

    /// How many denials are remembered.
    pub fn len(&self) -> usize {
        self.denied.lock().unwrap_or_else(|e| e.into_inner()).len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// This node's fast path (one per `Identity` built by `app::identity`; clones and
/// `acting_as` handles share it).
pub fn fast_path(id: &Identity) -> Arc<FastPath> {
    Arc::clone(&id.rate_limits)
}

// ---------------------------------------------------------------------------------------
// Checking

/// Counts one request under `key` and says whether it may proceed (see the module
/// comment for the guarantees). Denials are remembered by this node until the window ends.
pub async fn check(id: &Identity, key: &RateKey) -> Result<Decision, IdentityError> {
    check_key(key)?;
    let now = id.clock.now();
    let node = fast_path(id);
    if let Some(d) = node.denied(key, now) {
        return Ok(d);
    }
    let lookup = Lookup::of(key);
    let (mut policy, mut cached) = match node.policy(&lookup, now) {
        Some(p) => (p, true),
        None => (fetch_policy(id, &node, lookup, key, now).await?, false),
    };
    loop {
        let scope = Scope::parse(&policy.scope)?;
        let (subject, user_id, org_id) = subject_for(scope, &key.subjects, &policy.name)?;
        let limit = u32::try_from(policy.limit_count).unwrap_or(1);
        let window_secs = u32::try_from(policy.window_sec).unwrap_or(1);
        let (window_start, window_end) = window_bounds(now, window_secs);
        let counter = CounterKey {
            policy_id: policy.policy_id,
            subject: &subject,
            user_id,
            org_id,
            window_start,
            window_end,
        };
        let slot_key: SlotKey = (policy.policy_id, subject.clone(), window_start.timestamp());
        // A count this node already reserved costs no database work.
        let count = loop {
            if let Some(count) = node.take_slot(&slot_key) {
                break Ok(count);
            }
            let n = match node.next(&slot_key, limit) {
                Next::Reserve(n) => n,
                Next::Wait => {
                    // Registered, then checked again, so the end is never missed; the wait
                    // is bounded in case the reserving request stalls: then count alone.
                    let ended = node.reservation_ended.notified();
                    tokio::pin!(ended);
                    ended.as_mut().enable();
                    if !node.reserving(&slot_key) {
                        continue;
                    }
                    match tokio::time::timeout(RESERVATION_WAIT, ended).await {
                        Ok(()) => continue,
                        Err(_) => 1,
                    }
                }
            };
            let mut guard = Reserving {
                node: &node,
                key: &slot_key,
                armed: n > 1,
            };
            let mut c = id.db.conn().await?;
            let reserved = store::rate_limits::increment_by(&mut c, &counter, n as i32, now).await;
            drop(c);
            match reserved {
                Ok(end) => {
                    guard.armed = false;
                    // This request takes the first count of the reservation; the node
                    // keeps the rest (or just remembers where the counter stands).
                    let end = i64::from(end);
                    let first = end - n + 1;
                    let slots = Slots {
                        next: first + 1,
                        end,
                        window_end,
                        reserving: false,
                    };
                    node.keep_slots(slot_key.clone(), slots, n > 1, now);
                    break Ok(first);
                }
                Err(e) => break Err(e),
            }
        };
        let count = match count {
            Ok(c) => c,
            // A cached policy deleted by another node: look again.
            Err(StoreError::ForeignKey) if cached => {
                node.forget();
                policy = fetch_policy(id, &node, lookup, key, now).await?;
                cached = false;
                continue;
            }
            Err(StoreError::ForeignKey) => {
                return Err(IdentityError::NotFound {
                    what: match scope {
                        Scope::User => "user",
                        Scope::Org => "organization",
                        _ => "rate-limit policy",
                    },
                });
            }
            Err(e) => return Err(e.into()),
        };
        let d = decide(count, limit, window_secs, policy.policy_id, now, window_end);
        if !d.allowed {
            let denial = Denial {
                until: window_end,
                limit,
                window_secs,
                policy_id: policy.policy_id,
            };
            node.remember(key, denial, now);
        }
        return Ok(d);
    }
}

/// Reads the policy that applies from the database (recreating a missing family default)
/// and caches it on this node.
async fn fetch_policy(
    id: &Identity,
    node: &FastPath,
    lookup: Lookup,
    key: &RateKey,
    now: DateTime<Utc>,
) -> Result<Arc<Policy>, IdentityError> {
    let found = resolve(id, key).await?;
    let p = match found {
        Some(p) => p,
        None => {
            // The default was deleted behind our back (or this node never ran
            // `ensure_default_policies`): recreate it from the config.
            ensure_default(id, key.family).await?;
            resolve(id, key).await?.ok_or(IdentityError::NotFound {
                what: "rate-limit policy",
            })?
        }
    };
    let p = Arc::new(p);
    node.remember_policy(lookup, Arc::clone(&p), now);
    Ok(p)
}

async fn resolve(id: &Identity, key: &RateKey) -> Result<Option<Policy>, IdentityError> {
    let s = &key.subjects;
    let mut c = id.db.conn().await?;
    let found = store::rate_limits::candidates(
        &mut c,
        s.api_key_id,
        s.user_id,
        s.org_id,
        key.family.policy_name(),
    )
    .await?;
    Ok(pick(found))
}

// ---------------------------------------------------------------------------------------
// Default policies

/// Makes the table's `default.*` policies match `config.toml` `[rate_limits]`: creates the
/// missing ones and updates changed ones (each change audited). Idempotent; safe to run on
/// several nodes at once.
pub async fn ensure_default_policies(id: &Identity) -> Result<Vec<Policy>, IdentityError> {
    let mut out = Vec::with_capacity(Family::ALL.len());
    for f in Family::ALL {
        out.push(ensure_default(id, f).await?);
    }
    Ok(out)
}

fn default_description(f: Family) -> String {
    format!(
        "Default for {} requests, per {} (config.toml rate_limits.{})",
        f.as_str(),
        f.scope().as_str(),
        f.as_str()
    )
}

async fn ensure_default(id: &Identity, f: Family) -> Result<Policy, IdentityError> {
    let spec = f.spec(&id.config.rate_limits);
    let (limit, window) = (check_limit(spec.limit)?, check_window(spec.window_secs)?);
    let description = default_description(f);
    let mut tx = id.db.begin().await?;
    let fresh = NewPolicy {
        name: f.policy_name(),
        scope: f.scope().as_str(),
        limit_count: limit,
        window_sec: window,
        description: Some(&description),
        created_at: id.clock.now(),
    };
    if let Some(p) = store::rate_limits::insert_policy_if_absent(&mut tx, &fresh).await? {
        audit_policy(&mut tx, id, "rate_limit_policy.created", &p, to_json(&p)).await?;
        tx.commit().await?;
        fast_path(id).forget();
        return Ok(p);
    }
    let before = store::rate_limits::get_policy_by_name(&mut tx, f.policy_name())
        .await?
        .ok_or(IdentityError::NotFound {
            what: "rate-limit policy",
        })?;
    let after = Policy {
        scope: f.scope().as_str().to_string(),
        limit_count: limit,
        window_sec: window,
        description: Some(description),
        ..before.clone()
    };
    if after == before {
        return Ok(before);
    }
    store::rate_limits::update_policy(&mut tx, &after).await?;
    let details = audit::diff(&to_json(&before), &to_json(&after), &[]);
    audit_policy(&mut tx, id, "rate_limit_policy.updated", &after, details).await?;
    tx.commit().await?;
    fast_path(id).forget();
    Ok(after)
}

// ---------------------------------------------------------------------------------------
// Policies

fn to_json(p: &Policy) -> serde_json::Value {
    serde_json::to_value(p).unwrap_or_default()
}

async fn audit_policy(
    tx: &mut store::Tx,
    id: &Identity,
    action: &str,
    p: &Policy,
    details: serde_json::Value,
) -> Result<(), IdentityError> {
    audit::record(
        tx,
        id,
        Event {
            org_id: None,
            action,
            object_type: "rate_limit_policy",
            object_id: p.policy_id.to_string(),
            details,
        },
    )
    .await
}

fn policy_conflict(e: StoreError, name: &str) -> IdentityError {
    IdentityError::from_store_conflict(e, |_| {
        format!("a rate-limit policy named {name} already exists")
    })
}

fn not_found() -> IdentityError {
    IdentityError::NotFound {
        what: "rate-limit policy",
    }
}

fn config_managed(p: &Policy) -> Result<(), IdentityError> {
    if p.name.starts_with(DEFAULT_PREFIX) {
        return Err(IdentityError::Forbidden {
            reason: format!("{} follows config.toml [rate_limits]", p.name),
        });
    }
    Ok(())
}

/// Creates a policy: at most `limit_count` requests per `window_sec` seconds per `scope`
/// subject. Names are unique; `default.*` is reserved.
pub async fn create_policy(
    id: &Identity,
    name: &str,
    scope: Scope,
    limit_count: u32,
    window_sec: u32,
    description: Option<&str>,
) -> Result<Policy, IdentityError> {
    let name = check_name(name, false)?;
    let limit_count = check_limit(limit_count)?;
    let window_sec = check_window(window_sec)?;
    let description = check_description(description)?;
    let mut tx = id.db.begin().await?;
    let p = store::rate_limits::insert_policy(
        &mut tx,
        &NewPolicy {
            name: &name,
            scope: scope.as_str(),
            limit_count,
            window_sec,
            description: description.as_deref(),
            created_at: id.clock.now(),
        },
    )
    .await
    .map_err(|e| policy_conflict(e, &name))?;
    audit_policy(&mut tx, id, "rate_limit_policy.created", &p, to_json(&p)).await?;
    tx.commit().await?;
    fast_path(id).forget();
    Ok(p)
}

/// Changes to a policy; `None` keeps a field (`description: Some(None)` clears it).
#[derive(Debug, Clone, Default)]
pub struct PolicyUpdate {
    pub name: Option<String>,
    pub scope: Option<Scope>,
    pub limit_count: Option<u32>,
    pub window_sec: Option<u32>,
    pub description: Option<Option<String>>,
}

/// Updates a policy (not a `default.*` one: `Forbidden`). Counters of the current window
/// carry on under the new limit.
pub async fn update_policy(
    id: &Identity,
    policy_id: i32,
    u: PolicyUpdate,
) -> Result<Policy, IdentityError> {
    let name = u
        .name
        .as_deref()
        .map(|n| check_name(n, false))
        .transpose()?;
    let limit = u.limit_count.map(check_limit).transpose()?;
    let window = u.window_sec.map(check_window).transpose()?;
    let description = u
        .description
        .as_ref()
        .map(|d| check_description(d.as_deref()))
        .transpose()?;
    let mut tx = id.db.begin().await?;
    let before = store::rate_limits::get_policy(&mut tx, policy_id)
        .await?
        .ok_or_else(not_found)?;
    config_managed(&before)?;
    let after = Policy {
        name: name.unwrap_or_else(|| before.name.clone()),
        scope: u
            .scope
            .map_or_else(|| before.scope.clone(), |s| s.as_str().to_string()),
        limit_count: limit.unwrap_or(before.limit_count),
        window_sec: window.unwrap_or(before.window_sec),
        description: description.unwrap_or_else(|| before.description.clone()),
        ..before.clone()
    };
    if after == before {
        return Ok(before);
    }
    store::rate_limits::update_policy(&mut tx, &after)
        .await
        .map_err(|e| policy_conflict(e, &after.name))?;
    let details = audit::diff(&to_json(&before), &to_json(&after), &[]);
    audit_policy(&mut tx, id, "rate_limit_policy.updated", &after, details).await?;
    tx.commit().await?;
    fast_path(id).forget();
    Ok(after)
}

/// Deletes a policy with its assignments and counters (not a `default.*` one).
pub async fn delete_policy(id: &Identity, policy_id: i32) -> Result<(), IdentityError> {
    let mut tx = id.db.begin().await?;
    let p = store::rate_limits::get_policy(&mut tx, policy_id)
        .await?
        .ok_or_else(not_found)?;
    config_managed(&p)?;
    store::rate_limits::delete_policy(&mut tx, policy_id).await?;
    audit_policy(&mut tx, id, "rate_limit_policy.deleted", &p, to_json(&p)).await?;
    tx.commit().await?;
    fast_path(id).forget();
    Ok(())
}

pub async fn get_policy(id: &Identity, policy_id: i32) -> Result<Policy, IdentityError> {
    let mut c = id.db.conn().await?;
    store::rate_limits::get_policy(&mut c, policy_id)
        .await?
        .ok_or_else(not_found)
}

/// Every policy, defaults included, by id.
pub async fn list_policies(id: &Identity) -> Result<Vec<Policy>, IdentityError> {
    let mut c = id.db.conn().await?;
    Ok(store::rate_limits::list_policies(&mut c).await?)
}

// ---------------------------------------------------------------------------------------
// Assignments

/// Whom a policy is assigned to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    User(Uuid),
    Org(Uuid),
    ApiKey(Uuid),
}

impl Target {
    /// `user`, `org` or `api_key`.
    pub fn kind(self) -> &'static str {
        match self {
            Target::User(_) => "user",
            Target::Org(_) => "org",
            Target::ApiKey(_) => "api_key",
        }
    }

    pub fn target_id(self) -> Uuid {
        match self {
            Target::User(u) | Target::Org(u) | Target::ApiKey(u) => u,
        }
    }

    /// The inverse of ([`Target::kind`], [`Target::target_id`]).
    pub fn parse(kind: &str, target_id: Uuid) -> Result<Target, IdentityError> {
        match kind {
            "user" => Ok(Target::User(target_id)),
            "org" => Ok(Target::Org(target_id)),
            "api_key" => Ok(Target::ApiKey(target_id)),
            _ => Err(IdentityError::invalid(
                "target_type",
                "must be one of user, org, api_key",
            )),
        }
    }

    fn what(self) -> &'static str {
        match self {
            Target::User(_) => "user",
            Target::Org(_) => "organization",
            Target::ApiKey(_) => "API key",
        }
    }

    fn details(self, p: &Policy) -> serde_json::Value {
        let (k, v) = match self {
            Target::User(u) => ("user_id", u),
            Target::Org(o) => ("org_id", o),
            Target::ApiKey(k) => ("api_key_id", k),
        };
        json!({ "policy": p.name, k: v })
    }

    fn org(self) -> Option<Uuid> {
        match self {
            Target::Org(o) => Some(o),
            _ => None,
        }
    }
}

/// Assigns a policy to a user, an org or an API key; for requests that carry that key,
/// user or org it replaces the family default (see [`pick`]). Assigning twice is a
/// `Conflict` (field `assignment`).
pub async fn assign(id: &Identity, policy_id: i32, target: Target) -> Result<(), IdentityError> {
    let mut tx = id.db.begin().await?;
    let p = store::rate_limits::get_policy(&mut tx, policy_id)
        .await?
        .ok_or_else(not_found)?;
    let written = match target {
        Target::User(u) => {
            store::rate_limits::insert_assignment(
                &mut tx,
                &Assignment {
                    assignment_id: Uuid::now_v7(),
                    policy_id,
                    user_id: Some(u),
                    org_id: None,
                },
            )
            .await
        }
        Target::Org(o) => {
            store::rate_limits::insert_assignment(
                &mut tx,
                &Assignment {
                    assignment_id: Uuid::now_v7(),
                    policy_id,
                    user_id: None,
                    org_id: Some(o),
                },
            )
            .await
        }
        Target::ApiKey(k) => store::rate_limits::insert_api_key_policy(&mut tx, k, policy_id).await,
    };
    written.map_err(|e| match e {
        StoreError::ForeignKey => IdentityError::NotFound {
            what: target.what(),
        },
        e => IdentityError::from_store_conflict(e, |_| {
            format!("{} is already assigned to this {}", p.name, target.what())
        }),
    })?;
    audit::record(
        &mut tx,
        id,
        Event {
            org_id: target.org(),
            action: "rate_limit_policy.assigned",
            object_type: "rate_limit_policy",
            object_id: policy_id.to_string(),
            details: target.details(&p),
        },
    )
    .await?;
    tx.commit().await?;
    fast_path(id).forget();
    Ok(())
}

pub async fn assign_to_user(
    id: &Identity,
    policy_id: i32,
    user_id: Uuid,
) -> Result<(), IdentityError> {
    assign(id, policy_id, Target::User(user_id)).await
}

pub async fn assign_to_org(
    id: &Identity,
    policy_id: i32,
    org_id: Uuid,
) -> Result<(), IdentityError> {
    assign(id, policy_id, Target::Org(org_id)).await
}

pub async fn assign_to_api_key(
    id: &Identity,
    policy_id: i32,
    api_key_id: Uuid,
) -> Result<(), IdentityError> {
    assign(id, policy_id, Target::ApiKey(api_key_id)).await
}

/// Removes an assignment; `NotFound` when there was none.
pub async fn unassign(id: &Identity, policy_id: i32, target: Target) -> Result<(), IdentityError> {
    let mut tx = id.db.begin().await?;
    let p = store::rate_limits::get_policy(&mut tx, policy_id)
        .await?
        .ok_or_else(not_found)?;
    let removed = match target {
        Target::User(u) => {
            store::rate_limits::delete_assignment(&mut tx, policy_id, Some(u), None).await?
        }
        Target::Org(o) => {
            store::rate_limits::delete_assignment(&mut tx, policy_id, None, Some(o)).await?
        }
        Target::ApiKey(k) => {
            store::rate_limits::delete_api_key_policy(&mut tx, k, policy_id).await?
        }
    };
    if !removed {
        return Err(IdentityError::NotFound {
            what: "rate-limit assignment",
        });
    }
    audit::record(
        &mut tx,
        id,
        Event {
            org_id: target.org(),
            action: "rate_limit_policy.unassigned",
            object_type: "rate_limit_policy",
            object_id: policy_id.to_string(),
            details: target.details(&p),
        },
    )
    .await?;
    tx.commit().await?;
    fast_path(id).forget();
    Ok(())
}

/// The user and org assignments of a policy.
pub async fn list_assignments(
    id: &Identity,
    policy_id: i32,
) -> Result<Vec<Assignment>, IdentityError> {
    let mut c = id.db.conn().await?;
    Ok(store::rate_limits::list_assignments(&mut c, policy_id).await?)
}

/// A page of everyone a policy is assigned to (users, orgs and API keys), by target id
/// after `after`. An unknown policy is `NotFound`.
pub async fn list_targets(
    id: &Identity,
    policy_id: i32,
    after: Option<Uuid>,
    limit: u32,
) -> Result<Vec<Target>, IdentityError> {
    let mut c = id.db.conn().await?;
    store::rate_limits::get_policy(&mut c, policy_id)
        .await?
        .ok_or_else(not_found)?;
    let rows = store::rate_limits::list_targets(&mut c, policy_id, after, limit).await?;
    rows.into_iter()
        .map(|r| Target::parse(&r.kind, r.target_id))
        .collect()
}

/// The policies assigned to an API key.
pub async fn api_key_policies(
    id: &Identity,
    api_key_id: Uuid,
) -> Result<Vec<Policy>, IdentityError> {
    let mut c = id.db.conn().await?;
    Ok(store::rate_limits::list_api_key_policies(&mut c, api_key_id).await?)
}

// ---------------------------------------------------------------------------------------
// Purge

/// Deletes counters whose window ended more than `older_than` ago; returns how many.
/// Not audited: counters are operational state, not configuration.
pub async fn purge_old_counters(
    id: &Identity,
    older_than: chrono::Duration,
) -> Result<u64, IdentityError> {
    let cutoff = id.clock.now() - older_than;
    let mut total = 0;
    loop {
        let mut c = id.db.conn().await?;
        let n = store::rate_limits::purge_ended(&mut c, cutoff, PURGE_BATCH).await?;
        total += n;
        if n < PURGE_BATCH.unsigned_abs() {
            return Ok(total);
        }
    }
}

/// Runs [`purge_old_counters`] (keeping [`PURGE_GRACE_SECS`]) every `every` (first run at
/// once) until the task is aborted; failures are logged and retried next time.
pub fn spawn_purger(id: Identity, every: std::time::Duration) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            match purge_old_counters(&id, chrono::Duration::seconds(PURGE_GRACE_SECS)).await {
                Ok(0) => {}
                Ok(n) => tracing::debug!(purged = n, "rate-limit counters purged"),
                Err(e) => tracing::warn!(error = %e, "purging rate-limit counters failed"),
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reservations_grow_with_headroom_and_are_handed_out_once() {
        let fp = FastPath::new(100);
        let now = Utc::now();
        let k: SlotKey = (1, "key".into(), 0);
        let w = now + chrono::Duration::seconds(60);
        // Unseen counter: one count at a time.
        assert_eq!(fp.next(&k, 10_000), Next::Reserve(1));
        assert_eq!(fp.take_slot(&k), None);
        // After the first count (1 of 10,000): a full reservation.
        fp.keep_slots(
            k.clone(),
            Slots {
                next: 2,
                end: 1,
                window_end: w,
                reserving: false,
            },
            true,
            now,
        );
        assert_eq!(fp.next(&k, 10_000), Next::Reserve(MAX_RESERVATION));
        // Reserved 2..=32 (the request took 1): handed out in order, once each.
        fp.keep_slots(
            k.clone(),
            Slots {
                next: 3,
                end: 33,
                window_end: w,
                reserving: false,
            },
            true,
            now,
        );
        let got: Vec<i64> = std::iter::from_fn(|| fp.take_slot(&k)).collect();
        assert_eq!(got, (3..=33).collect::<Vec<_>>());
        // Unused counts are kept over a newer reservation (which goes unused).
        fp.keep_slots(
            k.clone(),
            Slots {
                next: 40,
                end: 41,
                window_end: w,
                reserving: false,
            },
            true,
            now,
        );
        fp.keep_slots(
            k.clone(),
            Slots {
                next: 50,
                end: 60,
                window_end: w,
                reserving: false,
            },
            true,
            now,
        );
        assert_eq!(fp.take_slot(&k), Some(40));
        assert_eq!(fp.take_slot(&k), Some(41));
        assert_eq!(fp.take_slot(&k), None);
        // Close to the limit (51 left): one at a time again; small limits never reserve.
        let k2: SlotKey = (2, "key".into(), 0);
        fp.keep_slots(
            k2.clone(),
            Slots {
                next: 9_950,
                end: 9_949,
                window_end: w,
                reserving: false,
            },
            true,
            now,
        );
        assert_eq!(fp.next(&k2, 10_000), Next::Reserve(1));
        assert_eq!(fp.next(&k2, 50), Next::Reserve(1));
        assert_eq!(fp.next(&k2, 20_000), Next::Reserve(MAX_RESERVATION));
        // One reservation of several at a time per counter: concurrent misses wait for it.
        assert_eq!(
            fp.next(&k2, 20_000),
            Next::Wait,
            "a reservation is already in flight"
        );
        fp.abort_reservation(&k2);
        assert_eq!(fp.next(&k2, 20_000), Next::Reserve(MAX_RESERVATION));
        fp.forget();
        assert_eq!(
            fp.next(&k2, 10_000),
            Next::Reserve(1),
            "forget drops reservations"
        );
    }

    #[tokio::test]
    async fn waiters_wake_when_a_reservation_ends_or_its_request_is_dropped() {
        let fp = FastPath::new(100);
        let now = Utc::now();
        let w = now + chrono::Duration::seconds(60);
        let k: SlotKey = (3, "key".into(), 0);
        let seen = |next, end| Slots {
            next,
            end,
            window_end: w,
            reserving: false,
        };
        fp.keep_slots(k.clone(), seen(2, 1), true, now);
        assert_eq!(fp.next(&k, 10_000), Next::Reserve(MAX_RESERVATION));
        let ended = fp.reservation_ended.notified();
        tokio::pin!(ended);
        ended.as_mut().enable();
        assert_eq!(fp.next(&k, 10_000), Next::Wait);
        fp.keep_slots(k.clone(), seen(3, 33), true, now);
        tokio::time::timeout(std::time::Duration::from_secs(1), ended)
            .await
            .expect("the end of the reservation wakes the waiter");
        assert_eq!(fp.take_slot(&k), Some(3));
        while fp.take_slot(&k).is_some() {}
        // The reserving request is dropped mid-flight: its guard ends the reservation.
        assert_eq!(fp.next(&k, 10_000), Next::Reserve(MAX_RESERVATION));
        let ended = fp.reservation_ended.notified();
        tokio::pin!(ended);
        ended.as_mut().enable();
        drop(Reserving {
            node: &fp,
            key: &k,
            armed: true,
        });
        tokio::time::timeout(std::time::Duration::from_secs(1), ended)
            .await
            .expect("a dropped reservation wakes the waiter");
        assert_eq!(fp.next(&k, 10_000), Next::Reserve(MAX_RESERVATION));
    }

    #[test]
    fn targets_round_trip_through_kind_and_id() {
        let u = Uuid::now_v7();
        for t in [Target::User(u), Target::Org(u), Target::ApiKey(u)] {
            assert_eq!(Target::parse(t.kind(), t.target_id()).unwrap(), t);
        }
        assert!(matches!(
            Target::parse("team", u),
            Err(IdentityError::Invalid {
                field: "target_type",
                ..
            })
        ));
    }

    fn at(s: i64) -> DateTime<Utc> {
        Utc.timestamp_opt(s, 0).unwrap()
    }

    fn policy(id: i32, limit: i32, window: i32) -> Policy {
        Policy {
            policy_id: id,
            name: format!("p{id}"),
            scope: "user".into(),
            limit_count: limit,
            window_sec: window,
            description: None,
            created_at: at(0),
        }
    }

    fn cand(level: i32, p: Policy) -> Candidate {
        Candidate { level, policy: p }
    }

    #[test]
    fn windows_are_aligned_to_their_length() {
        assert_eq!(window_bounds(at(125), 60), (at(120), at(180)));
        assert_eq!(window_bounds(at(120), 60), (at(120), at(180)));
        assert_eq!(window_bounds(at(179), 60), (at(120), at(180)));
        let now = at(1_000_000) + chrono::Duration::microseconds(999_999);
        assert_eq!(window_bounds(now, 3600).0, at(997_200));
        assert_eq!(window_bounds(at(7), 1), (at(7), at(8)));
    }

    #[test]
    fn reset_is_rounded_up_and_never_zero() {
        assert_eq!(secs_until(at(120), at(180)), 60);
        let now = at(179) + chrono::Duration::microseconds(1);
        assert_eq!(secs_until(now, at(180)), 1);
        assert_eq!(secs_until(at(180), at(180)), 1);
        assert_eq!(
            secs_until(at(120) + chrono::Duration::milliseconds(500), at(180)),
            60
        );
    }

    #[test]
    fn allowed_up_to_and_including_the_limit() {
        let d = decide(1, 50, 60, 7, at(130), at(180));
        assert!(d.allowed);
        assert_eq!((d.limit, d.remaining, d.reset_after_secs), (50, 49, 50));
        assert_eq!(d.retry_after_secs, None);
        let d = decide(50, 50, 60, 7, at(130), at(180));
        assert!(d.allowed);
        assert_eq!(d.remaining, 0);
        let d = decide(51, 50, 60, 7, at(130), at(180));
        assert!(!d.allowed);
        assert_eq!((d.remaining, d.retry_after_secs), (0, Some(50)));
    }

    #[test]
    fn ipv6_is_counted_per_64_and_mapped_ipv4_as_ipv4() {
        let v6a: IpAddr = "2001:db8:1:2:aaaa::1".parse().unwrap();
        let v6b: IpAddr = "2001:db8:1:2:bbbb::9".parse().unwrap();
        let v6c: IpAddr = "2001:db8:1:3::1".parse().unwrap();
        assert_eq!(ip_subject(v6a), "2001:db8:1:2::/64");
        assert_eq!(ip_subject(v6a), ip_subject(v6b));
        assert_ne!(ip_subject(v6a), ip_subject(v6c));
        let mapped: IpAddr = "::ffff:192.0.2.7".parse().unwrap();
        assert_eq!(ip_subject(mapped), "192.0.2.7");
        assert_eq!(ip_subject("192.0.2.7".parse().unwrap()), "192.0.2.7");
    }

    #[test]
    fn subject_follows_the_scope_and_must_be_present() {
        let u = Uuid::now_v7();
        let o = Uuid::now_v7();
        let s = Subjects {
            user_id: Some(u),
            org_id: Some(o),
            ..Default::default()
        };
        assert_eq!(
            subject_for(Scope::User, &s, "p").unwrap(),
            (u.to_string(), Some(u), None)
        );
        assert_eq!(
            subject_for(Scope::Org, &s, "p").unwrap(),
            (o.to_string(), None, Some(o))
        );
        let err = subject_for(Scope::Ip, &s, "gold").unwrap_err();
        assert!(
            matches!(&err, IdentityError::Invalid { field: "scope", message } if message.contains("gold") && message.contains("ip")),
            "{err:?}"
        );
        assert!(subject_for(Scope::ApiKey, &s, "p").is_err());
        assert!(subject_for(Scope::Client, &s, "p").is_err());
    }

    #[test]
    fn most_specific_level_wins_then_strictest_rate_then_lowest_id() {
        let picked = pick(vec![
            cand(4, policy(1, 1, 60)),
            cand(3, policy(2, 1000, 60)),
            cand(2, policy(3, 5000, 60)),
        ])
        .unwrap();
        assert_eq!(picked.policy_id, 3, "user beats org beats default");
        let picked = pick(vec![
            cand(2, policy(3, 10, 60)),
            cand(1, policy(4, 9999, 1)),
        ])
        .unwrap();
        assert_eq!(picked.policy_id, 4, "api key beats user");
        // 100/60s (1.67/s) is stricter than 10/1s (10/s).
        let picked = pick(vec![cand(2, policy(5, 10, 1)), cand(2, policy(6, 100, 60))]).unwrap();
        assert_eq!(picked.policy_id, 6);
        let picked = pick(vec![cand(2, policy(9, 60, 60)), cand(2, policy(8, 1, 1))]).unwrap();
        assert_eq!(picked.policy_id, 8, "same rate: lowest id");
        assert_eq!(pick(vec![]), None);
    }

    #[test]
    fn names_and_numbers_are_checked() {
        assert!(check_name("gold", false).is_ok());
        assert_eq!(check_name("  gold ", false).unwrap(), "gold");
        assert!(check_name("", false).is_err());
        assert!(check_name("a\nb", false).is_err());
        assert!(check_name(&"x".repeat(MAX_NAME_LEN + 1), false).is_err());
        assert!(check_name("default.login", false).is_err());
        assert!(check_name("default.login", true).is_ok());
        assert!(check_limit(0).is_err());
        assert!(check_limit(MAX_LIMIT + 1).is_err());
        assert_eq!(check_limit(50).unwrap(), 50);
        assert!(check_window(0).is_err());
        assert!(check_window(MAX_WINDOW_SECS + 1).is_err());
        assert_eq!(check_description(Some("  ")).unwrap(), None);
        assert!(check_description(Some(&"d".repeat(MAX_DESCRIPTION_LEN + 1))).is_err());
        assert!(check_key(&RateKey::new(Family::Token).client("")).is_err());
        assert!(check_key(&RateKey::new(Family::Token).client("c".repeat(256))).is_err());
        assert!(check_key(&RateKey::new(Family::Token).client("app-1")).is_ok());
    }

    #[test]
    fn fast_path_denies_until_the_window_ends_then_forgets() {
        let f = FastPath::new(10);
        let k = RateKey::new(Family::Login).ip("192.0.2.1".parse().unwrap());
        assert_eq!(f.denied(&k, at(130)), None);
        let d = Denial {
            until: at(180),
            limit: 5,
            window_secs: 60,
            policy_id: 1,
        };
        f.remember(&k, d, at(130));
        let got = f.denied(&k, at(150)).unwrap();
        assert!(!got.allowed);
        assert_eq!(
            (got.limit, got.remaining, got.retry_after_secs),
            (5, 0, Some(30))
        );
        let other = RateKey::new(Family::Login).ip("192.0.2.2".parse().unwrap());
        assert_eq!(f.denied(&other, at(150)), None);
        assert_eq!(f.denied(&k, at(180)), None);
        assert!(f.is_empty(), "expired entries are dropped on lookup");
    }

    #[test]
    fn fast_path_is_bounded() {
        let f = FastPath::new(2);
        let key = |i: u8| RateKey::new(Family::Login).ip(IpAddr::from([192, 0, 2, i]));
        let d = |until| Denial {
            until: at(until),
            limit: 1,
            window_secs: 60,
            policy_id: 1,
        };
        f.remember(&key(1), d(100), at(10));
        f.remember(&key(2), d(200), at(10));
        f.remember(&key(3), d(200), at(10));
        assert_eq!(f.len(), 2, "full: not added");
        assert!(f.denied(&key(3), at(10)).is_none());
        // Once key 1's window ended, room is made.
        f.remember(&key(3), d(200), at(150));
        assert!(f.denied(&key(3), at(150)).is_some());
        assert_eq!(f.len(), 2);
    }

    #[test]
    fn policies_are_cached_for_the_ttl_and_forgotten_on_demand() {
        let f = FastPath::new(2);
        let key = RateKey::new(Family::Management).user(Uuid::now_v7());
        let l = Lookup::of(&key);
        assert_eq!(l, Lookup::of(&key.clone().ip("192.0.2.1".parse().unwrap())));
        let p = Arc::new(policy(1, 5, 60));
        f.remember_policy(l, Arc::clone(&p), at(100));
        assert_eq!(f.policy(&l, at(100)).as_deref(), Some(&*p));
        let almost = at(100) + chrono::Duration::milliseconds(POLICY_CACHE_TTL_MS - 1);
        assert!(f.policy(&l, almost).is_some());
        let expired = at(100) + chrono::Duration::milliseconds(POLICY_CACHE_TTL_MS);
        assert!(f.policy(&l, expired).is_none());
        assert!(
            f.policy(&l, at(99)).is_none(),
            "clock went back: not trusted"
        );
        let other = Lookup::of(&RateKey::new(Family::Login));
        assert!(f.policy(&other, at(100)).is_none());
        f.remember(
            &key,
            Denial {
                until: at(160),
                limit: 5,
                window_secs: 60,
                policy_id: 1,
            },
            at(100),
        );
        f.forget();
        assert!(f.policy(&l, at(100)).is_none());
        assert!(f.denied(&key, at(100)).is_none());
    }

    #[test]
    fn scopes_and_families_round_trip() {
        for s in Scope::ALL {
            assert_eq!(Scope::parse(s.as_str()).unwrap(), s);
        }
        assert!(Scope::parse("tenant").is_err());
        for f in Family::ALL {
            assert_eq!(f.policy_name(), format!("{DEFAULT_PREFIX}{}", f.as_str()));
        }
    }
}
