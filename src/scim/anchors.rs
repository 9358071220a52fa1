//! Page anchors for a deep `startIndex` (RFC 7644 §3.4.2.4) on an unfiltered list in id
//! order. SQL has no order statistics: `OFFSET 99900` walks 99,900 index entries on every
//! request. This node keeps, per org and resource type, the ids at every `step`-th
//! position (`scim.page_anchor_step`), tagged with the org's change counter (bumped by
//! every insert and delete, migration 0008). While the counter is unchanged the positions
//! hold, so a page starts at the nearest anchor and skips fewer than `step` rows. The page
//! statement itself checks the counter (one snapshot), so a change in between yields no
//! rows and the caller falls back to the plain `OFFSET` ([`Anchored::holds`]).
use super::ScimError;
use super::resource::{Ctx, ListPlan};
use crate::store::Access;
use crate::store::scim::query::Resource;
use crate::store::scim::resources::{self as res, Anchor, Listed, Page};
use chrono::{DateTime, Duration, Utc};
use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};
use uuid::Uuid;

/// Stale anchors of one org are rebuilt at most this often (a provisioning burst must not
/// turn every deep read into a full index scan); meanwhile lists use the plain `OFFSET`.
pub const REBUILD_EVERY: Duration = Duration::seconds(1);
/// Orgs kept; beyond this the memory is cleared.
const CAPACITY: usize = 10_000;

struct Entry {
    changes: i64,
    ids: Arc<Vec<Uuid>>,
    /// When this node last started building this org's anchors.
    tried_at: DateTime<Utc>,
}

/// Org, resource type, step.
type Key = (Uuid, Resource, u64);

#[derive(Default)]
struct Anchors {
    map: Mutex<HashMap<Key, Entry>>,
}

/// The anchor at or before `offset` (0-based) in `ids` (the ids at positions 0, `step`,
/// 2·`step`, …): its position and id.
pub fn nearest(ids: &[Uuid], step: u64, offset: u64) -> Option<(u64, Uuid)> {
    let last = ids.len().checked_sub(1)?;
    let i = usize::try_from(offset / step.max(1)).map_or(last, |i| i.min(last));
    Some((i as u64 * step, ids[i]))
}

impl Anchors {
    fn node() -> &'static Anchors {
        static A: OnceLock<Anchors> = OnceLock::new();
        A.get_or_init(Anchors::default)
    }

    /// The kept ids for `changes`, or whether this caller should build them now (it then
    /// holds the org's build slot until [`REBUILD_EVERY`] has passed).
    fn lookup(&self, key: Key, changes: i64, now: DateTime<Utc>) -> Lookup {
        let mut map = self.map.lock().unwrap_or_else(|e| e.into_inner());
        match map.get_mut(&key) {
            Some(e) if e.changes == changes => Lookup::Hit(e.ids.clone()),
            Some(e) if now - e.tried_at < REBUILD_EVERY => Lookup::Wait,
            Some(e) => {
                e.tried_at = now;
                Lookup::Build
            }
            None => {
                if map.len() >= CAPACITY {
                    map.clear();
                }
                map.insert(
                    key,
                    Entry {
                        changes: -1,
                        ids: Arc::default(),
                        tried_at: now,
                    },
                );
                Lookup::Build
            }
        }
    }

    fn keep(&self, key: Key, changes: i64, ids: Arc<Vec<Uuid>>) {
        let mut map = self.map.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(e) = map.get_mut(&key) {
            e.changes = changes;
            e.ids = ids;
        }
    }
}

/// What this node keeps for an org: the change counter and the number of anchors.
pub fn kept(org_id: Uuid, r: Resource, step: u64) -> Option<(i64, usize)> {
    let map = Anchors::node()
        .map
        .lock()
        .unwrap_or_else(|e| e.into_inner());
    map.get(&(org_id, r, step))
        .map(|e| (e.changes, e.ids.len()))
}

enum Lookup {
    Hit(Arc<Vec<Uuid>>),
    Build,
    Wait,
}

/// A page planned from an anchor, with what it must return if the anchor still held.
struct Anchored {
    page: Page,
    /// `totalResults`, read with the counter the anchor was checked against.
    total: i64,
    expect: usize,
}

impl Anchored {
    /// Whether the page statement saw the anchor's snapshot: it returned every row the
    /// page must hold. Otherwise the counter moved and the caller reads with `OFFSET`.
    fn holds(&self, rows: usize) -> bool {
        rows >= self.expect
    }
}

/// A list's rows: from an anchored page when [`plan`] finds one and it holds, else from
/// the plan's own page; with `totalResults` when the anchor read it.
pub async fn rows<R: Listed>(
    ctx: &Ctx,
    a: &mut impl Access,
    list: &ListPlan,
) -> Result<(Vec<R>, Option<i64>), ScimError> {
    if list.page.limit == 0 {
        return Ok((Vec::new(), None));
    }
    let (client, org) = (ctx.client_id(), ctx.org_id());
    if let Some(anchored) = plan(ctx, a, R::RESOURCE, list).await? {
        let rows = R::search(a, client, org, &list.cond, &anchored.page).await?;
        if anchored.holds(rows.len()) {
            return Ok((rows, Some(anchored.total)));
        }
    }
    Ok((
        R::search(a, client, org, &list.cond, &list.page).await?,
        None,
    ))
}

/// Plans an anchored page for an unfiltered, unsorted, offset-paged list whose
/// `startIndex` is at least one step deep; `None`: use the plan's page as it is.
async fn plan(
    ctx: &Ctx,
    a: &mut impl Access,
    r: Resource,
    plan: &ListPlan,
) -> Result<Option<Anchored>, ScimError> {
    let p = &plan.page;
    let step = ctx.id.config.scim.page_anchor_step;
    // Different steps (nodes or restarts) never share an entry: the key holds the step.
    if plan.filtered || plan.cursor || p.sort.is_some() || p.after.is_some() || p.offset < step {
        return Ok(None);
    }
    let (total, changes) = res::counts(a, ctx.org_id(), r.type_name()).await?;
    if p.offset >= total as u64 {
        return Ok(None);
    }
    let key = (ctx.org_id(), r, step);
    let node = Anchors::node();
    let ids = match node.lookup(key, changes, ctx.id.clock.now()) {
        Lookup::Hit(ids) => ids,
        Lookup::Wait => return Ok(None),
        Lookup::Build => {
            let (seen, ids) = res::id_anchors(a, r, ctx.org_id(), step).await?;
            let ids = Arc::new(ids);
            node.keep(key, seen, ids.clone());
            if seen != changes {
                return Ok(None);
            }
            ids
        }
    };
    let Some((pos, id)) = nearest(&ids, step, p.offset) else {
        return Ok(None);
    };
    let left = (total as u64 - p.offset).min(u64::from(p.limit));
    Ok(Some(Anchored {
        page: Page {
            offset: p.offset - pos,
            anchor: Some(Anchor { id, changes }),
            ..p.clone()
        },
        total,
        expect: left as usize,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids(n: usize) -> Vec<Uuid> {
        (0..n).map(|i| Uuid::from_u128(i as u128 + 1)).collect()
    }

    #[test]
    fn nearest_is_the_anchor_at_or_before_the_offset() {
        let a = ids(3); // positions 0, 500, 1000
        assert_eq!(nearest(&a, 500, 0), Some((0, a[0])));
        assert_eq!(nearest(&a, 500, 499), Some((0, a[0])));
        assert_eq!(nearest(&a, 500, 500), Some((500, a[1])));
        assert_eq!(nearest(&a, 500, 1499), Some((1000, a[2])));
        // Past the last anchor: the last one (the page walks from there).
        assert_eq!(nearest(&a, 500, 9999), Some((1000, a[2])));
        assert_eq!(nearest(&a, 4, 9), Some((8, a[2])));
        assert_eq!(nearest(&[], 500, 10), None);
    }

    #[test]
    fn a_stale_org_is_rebuilt_by_one_caller_at_most_once_a_second() {
        let node = Anchors::default();
        let key = (Uuid::from_u128(7), Resource::User, 500);
        let t0 = DateTime::<Utc>::from_timestamp(1_000_000, 0).unwrap();
        assert!(matches!(node.lookup(key, 5, t0), Lookup::Build));
        // Another request while the first builds: plain OFFSET.
        assert!(matches!(node.lookup(key, 5, t0), Lookup::Wait));
        node.keep(key, 5, Arc::new(ids(2)));
        assert!(matches!(node.lookup(key, 5, t0), Lookup::Hit(v) if v.len() == 2));
        // The counter moved: wait out the rest of the second, then one rebuild.
        assert!(matches!(
            node.lookup(key, 6, t0 + Duration::milliseconds(500)),
            Lookup::Wait
        ));
        let t1 = t0 + Duration::milliseconds(1000);
        assert!(matches!(node.lookup(key, 6, t1), Lookup::Build));
        assert!(matches!(node.lookup(key, 6, t1), Lookup::Wait));
        node.keep(key, 6, Arc::new(ids(3)));
        assert!(matches!(node.lookup(key, 6, t1), Lookup::Hit(v) if v.len() == 3));
    }

    #[test]
    fn an_anchored_page_holds_only_when_every_row_came_back() {
        let a = Anchored {
            page: Page::default(),
            total: 1000,
            expect: 100,
        };
        assert!(a.holds(100));
        assert!(!a.holds(99));
        assert!(!a.holds(0));
    }
}
