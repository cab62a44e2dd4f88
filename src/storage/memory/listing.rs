//! The memory backend's listing indexes: for each order `recordList` offers (created, updated,
//! expires, token, id; ties broken on id) one ordered set of the live records and one of the
//! soft-deleted ones, holding only the order columns and the id (no value, no revisions).
//!
//! They are derived from the `records` table and kept by the one place every write to it goes
//! through (`Tx::raw_put`), the undo log's restores included, so a rolled-back batch leaves them
//! as it found them. Nothing else writes them, and nothing here persists (as the store itself).
//!
//! Each set is an order-statistic B-tree (`indexset`: sorted nodes under a Fenwick tree of their
//! sizes), so a position in an order is found without stepping over the keys before it.
//!
//! Costs, for a vault of `n` records:
//! - a page in any order of live records, soft-deleted ones, or both, with no filter but
//!   `limit`/`offset`: O(log n) to find the offset's place in one ordered set (O(log² n) in two,
//!   for both: how many of the first `offset` come from each), `limit` steps from there, then
//!   one keyed read per record of the page. No key before the offset is visited.
//! - `expiredOnly` ordered by `expires_at`: the same, within the range of expired keys (found by
//!   rank).
//! - `expiredOnly` in another order: a walk in that order reading each record to test its
//!   expiry, which stops when the page is full (worst case: every record, when fewer than
//!   `offset + limit` are expired).
//! - `id`/`token` filters: one keyed read per named record, then the shared filter.
//! - `recordCount`: O(1) (the sets' sizes) without `expiredOnly`; with it, O(log n) (the rank
//!   of `now` in the expiry sets).

use crate::query::{OrderBy, RecordFilter, SoftDeleted};
use indexset::BTreeSet;
use std::cmp::Ordering;
use std::iter::Peekable;
use std::ops::Range;
use std::sync::Arc;

/// A string ordered as JavaScript orders strings (by UTF-16 code units), cheap to clone: one
/// record's entries in every set share it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct JsStr {
    /// The first four UTF-16 code units, zero-padded, as one number: strings that differ there
    /// (random ids and tokens nearly always do) compare in one step. In wasm a comparison of
    /// the strings themselves is several times dearer, and bulk writes make a lot of them.
    head: u64,
    /// ASCII strings compare as bytes: no UTF-16 encoding per comparison.
    ascii: bool,
    text: Arc<str>,
}

impl JsStr {
    pub(super) fn new(text: &str) -> Self {
        let head = text
            .encode_utf16()
            .chain(std::iter::repeat(0))
            .take(4)
            .fold(0u64, |head, unit| head << 16 | u64::from(unit));
        JsStr {
            head,
            ascii: text.is_ascii(),
            text: Arc::from(text),
        }
    }

    pub(super) fn as_str(&self) -> &str {
        &self.text
    }

    /// The least string: the lower end of every key with a given first column.
    fn least() -> Self {
        JsStr::new("")
    }
}

impl Ord for JsStr {
    fn cmp(&self, other: &Self) -> Ordering {
        // Zero-padding keeps the heads' order the strings' order: a string that is a prefix of
        // another has a head no greater than the other's; equal heads decide nothing.
        if self.head != other.head {
            return self.head.cmp(&other.head);
        }
        if self.ascii && other.ascii {
            self.text.as_bytes().cmp(other.text.as_bytes())
        } else {
            self.text.encode_utf16().cmp(other.text.encode_utf16())
        }
    }
}

impl PartialOrd for JsStr {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

/// One record's order columns, as its `records` row holds them.
#[derive(Debug, Clone)]
pub(super) struct Listed {
    pub(super) id: JsStr,
    pub(super) token: JsStr,
    pub(super) created_at: i64,
    pub(super) updated_at: i64,
    /// No expiry sorts as +infinity (as [`RecordFilter::compare`] orders it).
    pub(super) expires_at: i64,
    pub(super) soft_deleted: bool,
}

/// Keys per node of each order's set: an insert moves up to this many keys within its node (40
/// bytes each for the time orders), and a node split recounts the tree's node sizes, so a
/// small node keeps inserts at random places (ids, tokens) cheap.
const NODE_KEYS: usize = 128;

/// The five orders of one set of records (live, or soft-deleted).
#[derive(Debug)]
struct Orders {
    created: BTreeSet<(i64, JsStr)>,
    updated: BTreeSet<(i64, JsStr)>,
    expires: BTreeSet<(i64, JsStr)>,
    token: BTreeSet<(JsStr, JsStr)>,
    id: BTreeSet<JsStr>,
}

impl Default for Orders {
    fn default() -> Self {
        Orders {
            created: BTreeSet::with_maximum_node_size(NODE_KEYS),
            updated: BTreeSet::with_maximum_node_size(NODE_KEYS),
            expires: BTreeSet::with_maximum_node_size(NODE_KEYS),
            token: BTreeSet::with_maximum_node_size(NODE_KEYS),
            id: BTreeSet::with_maximum_node_size(NODE_KEYS),
        }
    }
}

/// A key of one order, comparable with the other keys of the same order (never across orders).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Primary<'a> {
    Int(i64),
    Text(&'a JsStr),
    None,
}

type Entry<'a> = (Primary<'a>, &'a JsStr);
type Walk<'a> = Box<dyn Iterator<Item = Entry<'a>> + 'a>;

fn directed<'a>(it: impl DoubleEndedIterator<Item = Entry<'a>> + 'a, descending: bool) -> Walk<'a> {
    if descending {
        Box::new(it.rev())
    } else {
        Box::new(it)
    }
}

/// One order's set of keys, cut at `end` (the expired ones, for the expiry order): what a
/// listing walks, addressed by position in ascending order.
#[derive(Clone, Copy)]
enum Span<'a> {
    Int(&'a BTreeSet<(i64, JsStr)>, usize),
    Text(&'a BTreeSet<(JsStr, JsStr)>, usize),
    Id(&'a BTreeSet<JsStr>, usize),
}

impl<'a> Span<'a> {
    fn len(self) -> usize {
        match self {
            Span::Int(_, end) | Span::Text(_, end) | Span::Id(_, end) => end,
        }
    }

    /// The key at ascending position `i` (below `len`).
    fn get(self, i: usize) -> Option<Entry<'a>> {
        match self {
            Span::Int(set, _) => set.get_index(i).map(|(n, id)| (Primary::Int(*n), id)),
            Span::Text(set, _) => set.get_index(i).map(|(t, id)| (Primary::Text(t), id)),
            Span::Id(set, _) => set.get_index(i).map(|id| (Primary::None, id)),
        }
    }

    /// The keys at ascending positions `at`, in the listing's direction.
    fn walk(self, at: Range<usize>, descending: bool) -> Walk<'a> {
        match self {
            Span::Int(set, _) => directed(
                set.range_idx(at).map(|(n, id)| (Primary::Int(*n), id)),
                descending,
            ),
            Span::Text(set, _) => directed(
                set.range_idx(at).map(|(t, id)| (Primary::Text(t), id)),
                descending,
            ),
            Span::Id(set, _) => {
                directed(set.range_idx(at).map(|id| (Primary::None, id)), descending)
            }
        }
    }

    /// The keys of the listing after its first `skip`, in its direction.
    fn walk_from(self, skip: usize, descending: bool) -> Walk<'a> {
        let len = self.len();
        let at = if descending {
            0..len.saturating_sub(skip)
        } else {
            skip.min(len)..len
        };
        self.walk(at, descending)
    }
}

/// How many of the first `k` keys of two disjoint spans of one order, merged in ascending order,
/// are `a`'s: the largest `i` for which `a`'s key before `i` sorts below `b`'s key at `k - i`
/// (a binary search over `i`, each step two positional reads).
fn split(a: Span<'_>, b: Span<'_>, k: usize) -> usize {
    let (mut lo, mut hi) = (k.saturating_sub(b.len()), k.min(a.len()));
    // Invariant: the answer is in lo..=hi, and `lo` qualifies.
    while lo < hi {
        let i = lo + (hi - lo).div_ceil(2);
        // a[i - 1] is among the first k exactly when it sorts below b[k - i] (or b has no
        // key there).
        let qualifies = match (a.get(i - 1), b.get(k - i).filter(|_| k - i < b.len())) {
            (Some(x), Some(y)) => x < y,
            _ => true,
        };
        if qualifies {
            lo = i;
        } else {
            hi = i - 1;
        }
    }
    lo
}

impl Orders {
    fn insert(&mut self, r: &Listed) {
        self.created.insert((r.created_at, r.id.clone()));
        self.updated.insert((r.updated_at, r.id.clone()));
        self.expires.insert((r.expires_at, r.id.clone()));
        self.token.insert((r.token.clone(), r.id.clone()));
        self.id.insert(r.id.clone());
    }

    fn remove(&mut self, r: &Listed) {
        self.created.remove(&(r.created_at, r.id.clone()));
        self.updated.remove(&(r.updated_at, r.id.clone()));
        self.expires.remove(&(r.expires_at, r.id.clone()));
        self.token.remove(&(r.token.clone(), r.id.clone()));
        self.id.remove(&r.id);
    }

    /// Every key in `order`; with `expired_before`, only those of records expired at that time
    /// (for the expiry order only: the other orders cannot express it).
    fn span(&self, order: OrderBy, expired_before: Option<i64>) -> Span<'_> {
        match order {
            OrderBy::CreatedAt => Span::Int(&self.created, self.created.len()),
            OrderBy::UpdatedAt => Span::Int(&self.updated, self.updated.len()),
            OrderBy::ExpiresAt => Span::Int(
                &self.expires,
                match expired_before {
                    Some(now) => self.expired(now),
                    None => self.expires.len(),
                },
            ),
            OrderBy::Token => Span::Text(&self.token, self.token.len()),
            OrderBy::Id => Span::Id(&self.id, self.id.len()),
        }
    }

    /// How many records are expired at `now`: the rank of the least key at `now` in the expiry
    /// set (expired means now > expiresAt).
    fn expired(&self, now: i64) -> usize {
        self.expires.rank(&(now, JsStr::least()))
    }
}

/// Two walks of the same order merged into one (live and soft-deleted records: no key is in
/// both).
struct Merge<'a> {
    a: Peekable<Walk<'a>>,
    b: Peekable<Walk<'a>>,
    descending: bool,
}

impl<'a> Iterator for Merge<'a> {
    type Item = Entry<'a>;

    fn next(&mut self) -> Option<Entry<'a>> {
        let take_a = match (self.a.peek(), self.b.peek()) {
            (Some(a), Some(b)) => (a < b) != self.descending,
            (Some(_), None) => true,
            (None, _) => false,
        };
        if take_a { self.a.next() } else { self.b.next() }
    }
}

/// The listing indexes of one store.
#[derive(Debug, Default)]
pub(super) struct Listing {
    live: Orders,
    deleted: Orders,
}

impl Listing {
    fn orders(&mut self, r: &Listed) -> &mut Orders {
        if r.soft_deleted {
            &mut self.deleted
        } else {
            &mut self.live
        }
    }

    /// A `records` row goes from `old` to `new` (either may be absent).
    pub(super) fn replace(&mut self, old: Option<&Listed>, new: Option<&Listed>) {
        if let Some(old) = old {
            self.orders(old).remove(old);
        }
        if let Some(new) = new {
            self.orders(new).insert(new);
        }
    }

    /// Whether the indexes alone give `filter`'s records in order (no record need be read to
    /// test it). Filters naming ids or tokens are not asked here: they read their records.
    pub(super) fn exact(filter: &RecordFilter) -> bool {
        !filter.expired_only || filter.order_by == OrderBy::ExpiresAt
    }

    /// The ids of the records `filter`'s soft-deleted state admits, in its order, after the
    /// first `skip` of them; only the expired ones when the order is by expiry and the filter
    /// asks for expired records at `now` (see [`Listing::exact`]). The limit is the caller's.
    pub(super) fn ids<'a>(
        &'a self,
        filter: &RecordFilter,
        now: i64,
        skip: usize,
    ) -> Box<dyn Iterator<Item = &'a str> + 'a> {
        let expired_before = filter.expired_only.then_some(now);
        let span = |orders: &'a Orders| orders.span(filter.order_by, expired_before);
        let descending = filter.descending;
        let entries: Walk<'a> = match filter.soft_deleted {
            SoftDeleted::Exclude => span(&self.live).walk_from(skip, descending),
            SoftDeleted::Only => span(&self.deleted).walk_from(skip, descending),
            SoftDeleted::Include => {
                let (a, b) = (span(&self.live), span(&self.deleted));
                // Where the listing starts in each: ascending, after the first `skip` of the
                // merged order; descending, at the end of its first `total - skip`.
                let total = a.len() + b.len();
                let k = if descending {
                    total.saturating_sub(skip)
                } else {
                    skip.min(total)
                };
                let i = split(a, b, k);
                let (a, b) = if descending {
                    (a.walk(0..i, true), b.walk(0..k - i, true))
                } else {
                    (a.walk(i..a.len(), false), b.walk(k - i..b.len(), false))
                };
                Box::new(Merge {
                    a: a.peekable(),
                    b: b.peekable(),
                    descending,
                })
            }
        };
        Box::new(entries.map(|(_, id)| id.as_str()))
    }

    /// How many records `filter`'s soft-deleted state and expiry admit at `now` (filters naming
    /// ids or tokens are not asked here).
    pub(super) fn count(&self, filter: &RecordFilter, now: i64) -> u64 {
        let sets: &[&Orders] = match filter.soft_deleted {
            SoftDeleted::Exclude => &[&self.live],
            SoftDeleted::Only => &[&self.deleted],
            SoftDeleted::Include => &[&self.live, &self.deleted],
        };
        sets.iter()
            .map(|o| {
                if filter.expired_only {
                    o.expired(now)
                } else {
                    o.id.len()
                }
            })
            .sum::<usize>() as u64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The ids `filter` lists at `now`, from the records themselves: sorted by its order's key,
    /// as a shared reference for the sets.
    fn reference<'a>(records: &'a [Listed], filter: &RecordFilter, now: i64) -> Vec<&'a str> {
        let mut kept: Vec<&Listed> = records
            .iter()
            .filter(|r| match filter.soft_deleted {
                SoftDeleted::Exclude => !r.soft_deleted,
                SoftDeleted::Only => r.soft_deleted,
                SoftDeleted::Include => true,
            })
            .filter(|r| !filter.expired_only || r.expires_at < now)
            .collect();
        crate::sorting::sort_by(&mut kept, |a, b| {
            let key = |r: &Listed| match filter.order_by {
                OrderBy::CreatedAt => (Some(r.created_at), None),
                OrderBy::UpdatedAt => (Some(r.updated_at), None),
                OrderBy::ExpiresAt => (Some(r.expires_at), None),
                OrderBy::Token => (None, Some(r.token.clone())),
                OrderBy::Id => (None, None),
            };
            key(a).cmp(&key(b)).then_with(|| a.id.cmp(&b.id))
        });
        if filter.descending {
            kept.reverse();
        }
        kept.into_iter().map(|r| r.id.as_str()).collect()
    }

    /// A page found by position (two spans split by rank, for both states) is the page found by
    /// walking the whole listing from its start, which is the records sorted: in every order,
    /// direction, soft-deleted state and expiry cut, at every 7th offset, in a vault big enough
    /// for many nodes per set, after inserts and again after removals that empty whole nodes.
    #[test]
    fn a_listing_from_an_offset_is_the_listing_after_that_many() {
        let mut listing = Listing::default();
        let mut seed = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        let mut records = Vec::new();
        for i in 0..700 {
            let r = next();
            let record = Listed {
                id: JsStr::new(&format!("id{:016x}", next())),
                token: JsStr::new(&format!("tk_{:x}", next())),
                // Ties on the time orders, broken by id.
                created_at: (r % 50) as i64,
                updated_at: i,
                expires_at: if r % 3 == 0 {
                    i64::MAX
                } else {
                    (r % 97) as i64
                },
                soft_deleted: r % 4 == 0 || (200..260).contains(&i),
            };
            listing.replace(None, Some(&record));
            records.push(record);
        }
        let check = |listing: &Listing, records: &[Listed], step: &str| {
            for order_by in OrderBy::ALL {
                for descending in [false, true] {
                    for soft_deleted in [
                        SoftDeleted::Exclude,
                        SoftDeleted::Include,
                        SoftDeleted::Only,
                    ] {
                        for expired_only in [false, order_by == OrderBy::ExpiresAt] {
                            let filter = RecordFilter {
                                order_by,
                                descending,
                                soft_deleted,
                                expired_only,
                                ..Default::default()
                            };
                            let now = 40;
                            let all: Vec<&str> = listing.ids(&filter, now, 0).collect();
                            assert_eq!(all, reference(records, &filter, now), "{step}: {filter:?}");
                            assert_eq!(all.len() as u64, listing.count(&filter, now));
                            let last = all.len().saturating_sub(1);
                            for skip in (0..=all.len() + 2).step_by(7).chain([last]) {
                                let from: Vec<&str> = listing.ids(&filter, now, skip).collect();
                                let expected = all.get(skip..).unwrap_or_default();
                                assert_eq!(from, expected, "{step}: {filter:?} from {skip}");
                            }
                        }
                    }
                }
            }
        };
        check(&listing, &records, "inserted");
        // Remove the records updated in 100..400 (every node of the update order there empties)
        // and every third of the rest, and soft-delete or restore a few of those left.
        let mut kept = Vec::new();
        for (i, mut record) in records.into_iter().enumerate() {
            if (100..400).contains(&i) || i % 3 == 0 {
                listing.replace(Some(&record), None);
            } else {
                if i % 5 == 1 {
                    let old = record.clone();
                    record.soft_deleted = !record.soft_deleted;
                    listing.replace(Some(&old), Some(&record));
                }
                kept.push(record);
            }
        }
        check(&listing, &kept, "removed");
    }

    #[test]
    fn js_strings_order_by_utf16_code_units() {
        let (a, b) = (JsStr::new("\u{ff5e}"), JsStr::new("\u{1f600}"));
        assert_eq!(a.cmp(&b), Ordering::Greater);
        assert_eq!(JsStr::new("a").cmp(&JsStr::new("ab")), Ordering::Less);
        assert_eq!(JsStr::least().cmp(&JsStr::new("\0")), Ordering::Less);
        // Heads (the first four code units) agree with the order of the strings they start.
        let strings = [
            "",
            "\0",
            "a",
            "a\0",
            "a\0\0\0\0",
            "abcd",
            "abcd\0",
            "abcde",
            "abce",
            "b",
            "\u{ff5e}",
            "\u{1f600}",
            "a\u{1f600}",
            "a\u{ff5e}z",
            "zzzz\u{1f600}",
        ];
        for a in strings {
            for b in strings {
                let expected = a.encode_utf16().cmp(b.encode_utf16());
                assert_eq!(
                    JsStr::new(a).cmp(&JsStr::new(b)),
                    expected,
                    "{a:?} vs {b:?}"
                );
            }
        }
    }
}
