//! The memory backend's listing indexes: for each order `recordList` offers (created, updated,
//! expires, token, id; ties broken on id) one ordered set of the live records and one of the
//! soft-deleted ones, holding only the order columns and the id (no value, no revisions).
//!
//! They are derived from the `records` table and kept by the one place every write to it goes
//! through (`Tx::raw_put`), the undo log's restores included, so a rolled-back batch leaves them
//! as it found them. Nothing else writes them, and nothing here persists (as the store itself).
//!
//! Costs, for a vault of `n` records:
//! - a page in any order of live records, soft-deleted ones, or both, with no filter but
//!   `limit`/`offset`: `offset + limit` steps through one ordered set (two merged, for both),
//!   then one keyed read per record of the page. Skipping `offset` reads keys only, never a record.
//! - `expiredOnly` ordered by `expires_at`: the same, within the range of expired keys.
//! - `expiredOnly` in another order: a walk in that order reading each record to test its
//!   expiry, which stops when the page is full (worst case: every record, when fewer than
//!   `offset + limit` are expired).
//! - `id`/`token` filters: one keyed read per named record, then the shared filter.
//! - `recordCount`: O(1) (the sets' sizes) without `expiredOnly`; with it, one step per expired
//!   record (a range of the expiry set).

use crate::query::{OrderBy, RecordFilter, SoftDeleted};
use std::cmp::Ordering;
use std::collections::BTreeSet;
use std::iter::Peekable;
use std::ops::Bound;
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

/// The five orders of one set of records (live, or soft-deleted).
#[derive(Debug, Default)]
struct Orders {
    created: BTreeSet<(i64, JsStr)>,
    updated: BTreeSet<(i64, JsStr)>,
    expires: BTreeSet<(i64, JsStr)>,
    token: BTreeSet<(JsStr, JsStr)>,
    id: BTreeSet<JsStr>,
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

fn by_int<'a>(set: &'a BTreeSet<(i64, JsStr)>, descending: bool, below: Option<i64>) -> Walk<'a> {
    let upper = match below {
        Some(n) => Bound::Excluded((n, JsStr::least())),
        None => Bound::Unbounded,
    };
    let it = set
        .range((Bound::Unbounded, upper))
        .map(|(n, id)| (Primary::Int(*n), id));
    directed(it, descending)
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
    fn walk(&self, order: OrderBy, descending: bool, expired_before: Option<i64>) -> Walk<'_> {
        match order {
            OrderBy::CreatedAt => by_int(&self.created, descending, None),
            OrderBy::UpdatedAt => by_int(&self.updated, descending, None),
            OrderBy::ExpiresAt => by_int(&self.expires, descending, expired_before),
            OrderBy::Token => directed(
                self.token.iter().map(|(t, id)| (Primary::Text(t), id)),
                descending,
            ),
            OrderBy::Id => directed(self.id.iter().map(|id| (Primary::None, id)), descending),
        }
    }

    /// How many records are expired at `now`: the expiry set's range below it.
    fn expired(&self, now: i64) -> usize {
        self.expires.range(..(now, JsStr::least())).count()
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

    /// The ids of the records `filter`'s soft-deleted state admits, in its order; only the
    /// expired ones when the order is by expiry and the filter asks for expired records at
    /// `now` (see [`Listing::exact`]). Paging is the caller's.
    pub(super) fn ids<'a>(
        &'a self,
        filter: &RecordFilter,
        now: i64,
    ) -> Box<dyn Iterator<Item = &'a str> + 'a> {
        let expired_before = filter.expired_only.then_some(now);
        let walk =
            |orders: &'a Orders| orders.walk(filter.order_by, filter.descending, expired_before);
        let entries: Walk<'a> = match filter.soft_deleted {
            SoftDeleted::Exclude => walk(&self.live),
            SoftDeleted::Only => walk(&self.deleted),
            SoftDeleted::Include => Box::new(Merge {
                a: walk(&self.live).peekable(),
                b: walk(&self.deleted).peekable(),
                descending: filter.descending,
            }),
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
