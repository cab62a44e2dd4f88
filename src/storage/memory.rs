//! In-memory backend on GlueSQL's memory storage engine (`gluesql_memory_storage`), for Node and
//! Cloudflare-style workers. Nothing survives the process; `exportSnapshot` persists.
//!
//! The backend creates its tables through GlueSQL's storage API (`StoreMut::insert_schema`) and
//! then reads and writes the engine's keyed tables (`MemoryStorage::items`, one `BTreeMap` each)
//! directly, not through SQL text: a write searches its table once (a record row twice, its old
//! listing entries being read first), and the map hands back the row it replaced for the undo
//! log. Parsing and planning a statement costs about a hundred microseconds, twenty times a
//! keyed lookup, and every statement here is a keyed lookup or an ordered range;
//! GlueSQL's SQL layer is also two thirds of the engine's size, so a build that never parses SQL
//! ships without it. Eight tables, each keyed so every lookup is one B-tree search:
//!
//! | table          | key                                    | row                                       |
//! |----------------|----------------------------------------|-------------------------------------------|
//! | `records`      | token (its SHA-256's first 128 bits)   | token, id, value, created, updated, expires, soft-deleted, passwordId, the four revisions, seq, dirty mark |
//! | `record_ids`   | id                                     | token                                     |
//! | `record_links` | `(passwordId, id)`                     | none: an index for an identity's records (`records_linked_to`, "is it still linked", `linked_count`) |
//! | `meta`         | `(object_type, object_id, key)`        | the four columns of the meta row, its revision (null for local rows), seq, dirty mark |
//! | `meta_values`  | `(object_type, key, value, object_id)` | none: an index for tag lookups, unique tags and an identity's slots |
//! | `tombstones`   | a row key (below)                      | revision, deletedAt, reason (meta: null or `emptied`), seq, dirty |
//! | `changes`      | seq                                    | the row key of the row (live or tombstone) holding it: the change feed |
//! | `dirty`        | dirty mark                             | the row key of the dirty row                 |
//!
//! Next to the tables, in memory only, the store keeps listing indexes of `records` (module
//! `listing`): each order `recordList` offers, for live and for soft-deleted records, kept by
//! every write and by the undo log. A page costs its offset in index steps plus one keyed read
//! per record of the page; `recordCount` is O(1) but for `expiredOnly` (one step per expired
//! record). The module's docs list every query's cost, including the ones that are not O(page).
//!
//! A **row key** names one replicated row, live or gone: `("r", id)` for a record,
//! `("m", object_type, object_id, key)` for a meta row. Composite keys are order-preserving byte
//! strings (see [`tuple`]), so "every row of one object", "every object holding this value" and
//! "every record of this identity, in id order" are range scans.
//!
//! Sync (schema 2, see [`crate::storage`]): each replicated row stores its revisions, its seq
//! and its dirty mark next to its columns, and has one entry in `changes` (at its seq) and, while
//! dirty, one in `dirty` (at its mark); a write moves both entries, so the feeds are ordered
//! ranges, never scans. A record stores its revisions as given ([`WriteOp::InsertRecord`]
//! included), so rows inserted with synthesized revisions read back with them; a revision is
//! stored as one 128-bit number (no hex to parse per row read). Local meta rows
//! have no revision, seq 0 and no entry in either feed, and are no row's version
//! ([`Storage::versions`] answers `None` for them). A version is read by its row key (the
//! record by id, else its tombstone; the meta row, else its tombstone), which is also how the
//! feeds resolve their entries; `ExpectVersion` compares its seq, and `MarkClean` rewrites the
//! row or tombstone without its mark (same seq: an acknowledgement is not a change) and drops
//! its `dirty` entry. The seq counter is a field of the store
//! (nothing persists, so it needs no row); a store starts with no schema-1 rows, so nothing here
//! migrates.
//!
//! GlueSQL's memory storage has no transactions: [`Storage::apply`] keeps an undo log of
//! before-images (of every table, and of the seq counter) and restores them, newest first, when
//! any op of the batch fails.

use super::{
    Change, MetaKey, MetaRow, OWNER_KEY, Optimistic, Purge, Row, RowKey, Stamp, Storage,
    StorageError, StorageResult, Stored, WriteOp, WriteTransaction, identity_tag_key,
    is_replicated, is_unique_meta, object_type, replaced_key, replaced_value,
};
use crate::query::RecordFilter;
use crate::record::{Record, RecordRevs};
use crate::sorting;
use crate::sync::{MetaVersion, RecordVersion, Rev, Tombstone, TombstoneReason};
use async_trait::async_trait;
use gluesql_core::data::{Key, Schema, Value};
use gluesql_core::store::StoreMut;
use gluesql_memory_storage::MemoryStorage;
use std::ops::Bound;
use std::sync::{Mutex, MutexGuard};

const RECORDS: &str = "records";
const RECORD_IDS: &str = "record_ids";
const RECORD_LINKS: &str = "record_links";
const META: &str = "meta";
const META_VALUES: &str = "meta_values";
const TOMBSTONES: &str = "tombstones";
const CHANGES: &str = "changes";
const DIRTY: &str = "dirty";
const TABLES: [&str; 8] = [
    RECORDS,
    RECORD_IDS,
    RECORD_LINKS,
    META,
    META_VALUES,
    TOMBSTONES,
    CHANGES,
    DIRTY,
];

/// The first element of a record's row key.
const RECORD_ROW: &str = "r";
/// The first element of a meta row's row key.
const META_ROW: &str = "m";

mod listing;

use listing::{JsStr, Listed, Listing};

/// One open database, the store's seq counter (the last seq given out) and the listing indexes
/// of its `records` table.
struct Db {
    engine: MemoryStorage,
    last_seq: u64,
    listing: Listing,
}

/// The GlueSQL in-memory backend. Each instance is its own database: two never share state.
pub struct GlueMemoryStorage {
    db: Mutex<Option<Db>>,
}

impl std::fmt::Debug for GlueMemoryStorage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GlueMemoryStorage").finish_non_exhaustive()
    }
}

fn backend(e: impl std::fmt::Display) -> StorageError {
    StorageError::Backend {
        original: Default::default(),
        name: Some("GlueSQL".to_owned()),
        message: e.to_string(),
    }
}

/// An order-preserving encoding of a tuple of strings: each byte as it is, except 0x00, which
/// becomes `00 FF`; each string ends with `00 01`. Byte order of the encodings is the order of
/// the tuples, and the encoding of a prefix tuple is a byte prefix of every tuple it starts.
fn tuple(parts: &[&str]) -> Vec<u8> {
    let mut out = Vec::with_capacity(parts.iter().map(|p| p.len() + 2).sum());
    for part in parts {
        for &b in part.as_bytes() {
            out.push(b);
            if b == 0 {
                out.push(0xff);
            }
        }
        out.extend_from_slice(&[0, 1]);
    }
    out
}

/// The strings a [`tuple`] encodes.
fn decode_tuple(bytes: &[u8]) -> StorageResult<Vec<String>> {
    let mut parts = Vec::new();
    let mut part = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        match (bytes[i], bytes.get(i + 1)) {
            (0, Some(0xff)) => part.push(0),
            (0, Some(1)) => {
                parts.push(String::from_utf8(std::mem::take(&mut part)).map_err(backend)?);
            }
            (0, _) => return Err(backend("a table holds a malformed key")),
            (b, _) => {
                part.push(b);
                i += 1;
                continue;
            }
        }
        i += 2;
    }
    if part.is_empty() {
        Ok(parts)
    } else {
        Err(backend("a table holds a malformed key"))
    }
}

/// The string a tuple's last element encodes (see [`tuple`]).
fn decode_last(bytes: &[u8]) -> StorageResult<String> {
    match decode_tuple(bytes)?.as_mut_slice() {
        [only] => Ok(std::mem::take(only)),
        _ => Err(backend("a table holds a malformed key")),
    }
}

fn text(v: &Value) -> StorageResult<String> {
    match v {
        Value::Str(s) => Ok(s.clone()),
        other => Err(backend(format!("expected text, found {other:?}"))),
    }
}

fn opt_text(v: &Value) -> StorageResult<Option<String>> {
    match v {
        Value::Null => Ok(None),
        other => text(other).map(Some),
    }
}

fn int(v: &Value) -> StorageResult<i64> {
    match v {
        Value::I64(n) => Ok(*n),
        other => Err(backend(format!("expected an integer, found {other:?}"))),
    }
}

fn opt_int(v: &Value) -> StorageResult<Option<i64>> {
    match v {
        Value::Null => Ok(None),
        other => int(other).map(Some),
    }
}

fn seq_value(v: &Value) -> StorageResult<u64> {
    match v {
        Value::U64(n) => Ok(*n),
        other => Err(backend(format!("expected a seq, found {other:?}"))),
    }
}

fn opt_seq(v: &Value) -> StorageResult<Option<u64>> {
    match v {
        Value::Null => Ok(None),
        other => seq_value(other).map(Some),
    }
}

/// A revision as one 128-bit number, `(wall, counter, node)` from the most significant bits
/// down (the order of its text form): no hex to parse or format per row read or written.
fn rev(v: &Value) -> StorageResult<Rev> {
    match v {
        Value::U128(n) => Rev::new((n >> 80) as u64, (n >> 64) as u16, *n as u64)
            .ok_or_else(|| backend("a stored revision is out of range")),
        other => Err(backend(format!("expected a revision, found {other:?}"))),
    }
}

fn rev_value(rev: Rev) -> Value {
    Value::U128(
        u128::from(rev.wall_ms()) << 80 | u128::from(rev.counter()) << 64 | u128::from(rev.node()),
    )
}

fn opt_value(n: Option<i64>) -> Value {
    n.map_or(Value::Null, Value::I64)
}

fn opt_str(s: Option<&str>) -> Value {
    s.map_or(Value::Null, |s| Value::Str(s.to_owned()))
}

/// Where a replicated row is in the change feed: its seq (0: never written since the store
/// began) and its dirty mark (`None`: clean).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Feed {
    seq: u64,
    dirty: Option<u64>,
}

fn feed_from(seq: &Value, dirty: &Value) -> StorageResult<Feed> {
    Ok(Feed {
        seq: seq_value(seq)?,
        dirty: opt_seq(dirty)?,
    })
}

fn feed_values(feed: Feed) -> [Value; 2] {
    [
        Value::U64(feed.seq),
        feed.dirty.map_or(Value::Null, Value::U64),
    ]
}

fn record_row(r: &Record, feed: Feed) -> Vec<Value> {
    let [seq, dirty] = feed_values(feed);
    vec![
        Value::Str(r.token.clone()),
        Value::Str(r.id.clone()),
        Value::Str(r.value.clone()),
        Value::I64(r.created_at),
        Value::I64(r.updated_at),
        opt_value(r.expires_at),
        opt_value(r.soft_deleted_at),
        opt_str(r.password_id.as_deref()),
        rev_value(r.revs.value),
        rev_value(r.revs.seal),
        rev_value(r.revs.expires),
        rev_value(r.revs.deleted),
        seq,
        dirty,
    ]
}

/// A `records` row's order columns, for the listing indexes.
fn listed_from(row: &[Value]) -> StorageResult<Listed> {
    let [
        token,
        id,
        _,
        created_at,
        updated_at,
        expires_at,
        soft_deleted_at,
        ..,
    ] = row
    else {
        return Err(backend("records row has the wrong number of columns"));
    };
    let js = |v: &Value| match v {
        Value::Str(s) => Ok(JsStr::new(s)),
        other => Err(backend(format!("expected text, found {other:?}"))),
    };
    Ok(Listed {
        id: js(id)?,
        token: js(token)?,
        created_at: int(created_at)?,
        updated_at: int(updated_at)?,
        expires_at: opt_int(expires_at)?.unwrap_or(i64::MAX),
        soft_deleted: !matches!(soft_deleted_at, Value::Null),
    })
}

fn record_from(row: &[Value]) -> StorageResult<(Record, Feed)> {
    let [
        token,
        id,
        value,
        created_at,
        updated_at,
        expires_at,
        soft_deleted_at,
        password_id,
        value_rev,
        seal_rev,
        expires_rev,
        deleted_rev,
        seq,
        dirty,
    ] = row
    else {
        return Err(backend("records row has the wrong number of columns"));
    };
    let record = Record {
        token: text(token)?,
        id: text(id)?,
        value: text(value)?,
        created_at: int(created_at)?,
        updated_at: int(updated_at)?,
        expires_at: opt_int(expires_at)?,
        soft_deleted_at: opt_int(soft_deleted_at)?,
        password_id: opt_text(password_id)?,
        revs: RecordRevs {
            value: rev(value_rev)?,
            seal: rev(seal_rev)?,
            expires: rev(expires_rev)?,
            deleted: rev(deleted_rev)?,
        },
    };
    Ok((record, feed_from(seq, dirty)?))
}

/// A meta row as stored: its value, its revision (`None` for a local row) and its feed entry.
struct StoredMeta {
    row: MetaRow,
    rev: Option<Rev>,
    feed: Feed,
}

fn meta_row(m: &StoredMeta) -> Vec<Value> {
    let [seq, dirty] = feed_values(m.feed);
    vec![
        Value::Str(m.row.key.object_type.clone()),
        Value::Str(m.row.key.object_id.clone()),
        Value::Str(m.row.key.key.clone()),
        Value::Str(m.row.value.clone()),
        m.rev.map_or(Value::Null, rev_value),
        seq,
        dirty,
    ]
}

fn meta_from(row: &[Value]) -> StorageResult<StoredMeta> {
    let [object_type, object_id, key, value, rev_, seq, dirty] = row else {
        return Err(backend("meta row has the wrong number of columns"));
    };
    Ok(StoredMeta {
        row: MetaRow {
            key: MetaKey {
                object_type: text(object_type)?,
                object_id: text(object_id)?,
                key: text(key)?,
            },
            value: text(value)?,
        },
        rev: match rev_ {
            Value::Null => None,
            other => Some(rev(other)?),
        },
        feed: feed_from(seq, dirty)?,
    })
}

fn meta_pk(key: &MetaKey) -> Key {
    Key::Bytea(tuple(&[&key.object_type, &key.object_id, &key.key]))
}

fn value_pk(row: &MetaRow) -> Key {
    Key::Bytea(tuple(&[
        &row.key.object_type,
        &row.key.key,
        &row.value,
        &row.key.object_id,
    ]))
}

fn link_pk(password_id: &str, id: &str) -> Key {
    Key::Bytea(tuple(&[password_id, id]))
}

/// The `records` table's key for `token`: the first 128 bits of its SHA-256, a number. A lookup
/// compares numbers held in the B-tree's nodes; with the token itself as the key, each of its
/// 30-odd comparisons followed a pointer to a string elsewhere in memory, a quarter of a
/// `tokenRead` at 100,000 records. Nothing reads the table in key order (the listings have
/// their own indexes), and the row holds the token, which every lookup checks.
fn token_key(token: &str) -> Key {
    use sha2::Digest;
    let digest = sha2::Sha256::digest(token.as_bytes());
    let mut head = [0u8; 16];
    head.copy_from_slice(&digest[..16]);
    Key::U128(u128::from_be_bytes(head))
}

/// The row key of a record (see the module docs).
fn record_ref(id: &str) -> Vec<u8> {
    tuple(&[RECORD_ROW, id])
}

/// The row key of a meta row.
fn meta_ref(key: &MetaKey) -> Vec<u8> {
    tuple(&[META_ROW, &key.object_type, &key.object_id, &key.key])
}

/// What a tombstone holds: a record's (with its reason), or a meta row's (no reason, or
/// `emptied`: [`MetaVersion::Gone`]).
#[derive(Debug, Clone, Copy)]
struct StoredTombstone {
    rev: Rev,
    deleted_at: i64,
    reason: Option<TombstoneReason>,
    emptied: bool,
    feed: Feed,
}

/// The `reason` column: a record tombstone's reason, `emptied`, or null.
fn reason_value(t: &StoredTombstone) -> Value {
    match t.reason {
        Some(r) => Value::Str(r.as_str().to_owned()),
        None if t.emptied => Value::Str(EMPTIED.to_owned()),
        None => Value::Null,
    }
}

/// The reason column of an emptied identity's row (FORMAT.md "SQL tables", as the SQL backend).
const EMPTIED: &str = "emptied";

fn tombstone_row(t: &StoredTombstone) -> Vec<Value> {
    let [seq, dirty] = feed_values(t.feed);
    vec![
        rev_value(t.rev),
        Value::I64(t.deleted_at),
        reason_value(t),
        seq,
        dirty,
    ]
}

fn tombstone_from(row: &[Value]) -> StorageResult<StoredTombstone> {
    let [rev_, deleted_at, reason, seq, dirty] = row else {
        return Err(backend("tombstones row has the wrong number of columns"));
    };
    let reason_text = opt_text(reason)?;
    let reason = match reason_text.as_deref() {
        None | Some(EMPTIED) => None,
        Some("deleted") => Some(TombstoneReason::Deleted),
        Some("displaced") => Some(TombstoneReason::Displaced),
        Some(_) => return Err(backend("a tombstone holds an unknown reason")),
    };
    Ok(StoredTombstone {
        rev: rev(rev_)?,
        deleted_at: int(deleted_at)?,
        reason,
        emptied: reason_text.as_deref() == Some(EMPTIED),
        feed: feed_from(seq, dirty)?,
    })
}

/// One open database, the undo log of the batch being applied, and the seq counter as it was
/// when the batch began.
struct Tx<'a> {
    db: &'a mut Db,
    undo: Vec<(&'static str, Key, Option<Vec<Value>>)>,
    seq_before: u64,
}

impl Tx<'_> {
    fn rows(&self, table: &str) -> Option<&std::collections::BTreeMap<Key, Vec<Value>>> {
        self.db.engine.items.get(table).map(|item| &item.rows)
    }

    fn get(&self, table: &str, key: &Key) -> Option<&Vec<Value>> {
        self.rows(table).and_then(|rows| rows.get(key))
    }

    /// Rows whose key starts with `prefix`, in key order, without copying the table (GlueSQL's
    /// own `scan_data` clones every row of it).
    fn with_prefix<'s>(
        &'s self,
        table: &str,
        prefix: Vec<u8>,
    ) -> impl Iterator<Item = (&'s Key, &'s Vec<Value>)> + 's {
        self.rows_from(table, Bound::Included(Key::Bytea(prefix.clone())))
            .take_while(move |(k, _)| matches!(k, Key::Bytea(b) if b.starts_with(&prefix)))
    }

    /// Rows from `from` on, in key order.
    fn rows_from<'s>(
        &'s self,
        table: &str,
        from: Bound<Key>,
    ) -> impl Iterator<Item = (&'s Key, &'s Vec<Value>)> + 's {
        self.rows(table)
            .into_iter()
            .flat_map(move |rows| rows.range((from.clone(), Bound::Unbounded)))
    }

    fn all_rows<'s>(&'s self, table: &str) -> impl Iterator<Item = &'s Vec<Value>> + 's {
        self.rows(table).into_iter().flat_map(|rows| rows.values())
    }

    fn record_entry_by_token(&self, token: &str) -> StorageResult<Option<(Record, Feed)>> {
        let Some(row) = self.get(RECORDS, &token_key(token)) else {
            return Ok(None);
        };
        let (record, feed) = record_from(row)?;
        // Another token with the same 128-bit key (never seen: it takes about 2^64 tokens) is
        // an error, not "absent": an insert would otherwise replace that record.
        if record.token != token {
            return Err(backend("two tokens share a key of the records table"));
        }
        Ok(Some((record, feed)))
    }

    fn record_by_token(&self, token: &str) -> StorageResult<Option<Record>> {
        Ok(self.record_entry_by_token(token)?.map(|(record, _)| record))
    }

    fn token_of_id(&self, id: &str) -> StorageResult<Option<String>> {
        self.get(RECORD_IDS, &Key::Str(id.to_owned()))
            .and_then(|row| row.first())
            .map(text)
            .transpose()
    }

    fn record_entry(&self, id: &str) -> StorageResult<Option<(Record, Feed)>> {
        match self.token_of_id(id)? {
            Some(token) => self.record_entry_by_token(&token),
            None => Ok(None),
        }
    }

    fn record_by_id(&self, id: &str) -> StorageResult<Option<Record>> {
        Ok(self.record_entry(id)?.map(|(record, _)| record))
    }

    fn meta_entry(&self, key: &MetaKey) -> StorageResult<Option<StoredMeta>> {
        self.get(META, &meta_pk(key))
            .map(|row| meta_from(row))
            .transpose()
    }

    fn meta(&self, key: &MetaKey) -> StorageResult<Option<String>> {
        Ok(self.meta_entry(key)?.map(|m| m.row.value))
    }

    fn object(&self, object_type: &str, object_id: &str) -> StorageResult<Vec<MetaRow>> {
        self.with_prefix(META, tuple(&[object_type, object_id]))
            .map(|(_, row)| meta_from(row).map(|m| m.row))
            .collect()
    }

    /// Ids of the objects of `object_type` with a row `key` = `value`.
    fn holders(&self, object_type: &str, key: &str, value: &str) -> StorageResult<Vec<String>> {
        let prefix = tuple(&[object_type, key, value]);
        let skip = prefix.len();
        self.with_prefix(META_VALUES, prefix)
            .map(|(k, _)| match k {
                // The rest of the key is the object id, encoded as one tuple element.
                Key::Bytea(b) => decode_last(&b[skip..]),
                _ => Err(backend("meta_values holds a key that is not a tuple")),
            })
            .collect()
    }

    fn tombstone(&self, row_ref: &[u8]) -> StorageResult<Option<StoredTombstone>> {
        self.get(TOMBSTONES, &Key::Bytea(row_ref.to_vec()))
            .map(|row| tombstone_from(row))
            .transpose()
    }

    /// Whether some record's `passwordId` is `identity_id`: one step into `record_links`.
    fn is_linked(&self, identity_id: &str) -> bool {
        self.with_prefix(RECORD_LINKS, tuple(&[identity_id]))
            .next()
            .is_some()
    }

    /// Up to `limit` records linked to `identity_id`, in id order after `after_id`.
    fn linked_to(
        &self,
        identity_id: &str,
        after_id: Option<&str>,
        limit: usize,
    ) -> StorageResult<Vec<Record>> {
        let prefix = tuple(&[identity_id]);
        let skip = prefix.len();
        let from = match after_id {
            Some(after) => Bound::Excluded(link_pk(identity_id, after)),
            None => Bound::Included(Key::Bytea(prefix.clone())),
        };
        self.rows_from(RECORD_LINKS, from)
            .take_while(|(k, _)| matches!(k, Key::Bytea(b) if b.starts_with(&prefix)))
            .take(limit)
            .map(|(k, _)| {
                let Key::Bytea(b) = k else {
                    return Err(backend("record_links holds a key that is not a tuple"));
                };
                let id = decode_last(&b[skip..])?;
                self.record_by_id(&id)?
                    .ok_or_else(|| backend("record_links names a missing record"))
            })
            .collect()
    }

    /// How many records `record_links` links to `identity_id`: the length of its key range.
    fn linked_count_of(&self, identity_id: &str) -> u64 {
        let prefix = tuple(&[identity_id]);
        self.rows_from(RECORD_LINKS, Bound::Included(Key::Bytea(prefix.clone())))
            .take_while(|(k, _)| matches!(k, Key::Bytea(b) if b.starts_with(&prefix)))
            .count() as u64
    }

    /// The store's version of `key` (its live row or its tombstone) and its place in the feed;
    /// `None` when it has neither, and for a local meta row (not a replicated row).
    fn version_of(&self, key: &RowKey) -> StorageResult<Option<(Row, Feed)>> {
        let malformed = || backend("a tombstone or meta row lacks its revision or reason");
        match key {
            RowKey::Record(id) => {
                if let Some((record, feed)) = self.record_entry(id)? {
                    let version = RecordVersion::Live(record.to_live());
                    let row = Row::Record {
                        id: id.clone(),
                        version,
                    };
                    return Ok(Some((row, feed)));
                }
                let Some(t) = self.tombstone(&record_ref(id))? else {
                    return Ok(None);
                };
                let version = RecordVersion::Gone(Tombstone {
                    rev: t.rev,
                    deleted_at: t.deleted_at,
                    reason: t.reason.ok_or_else(malformed)?,
                });
                let row = Row::Record {
                    id: id.clone(),
                    version,
                };
                Ok(Some((row, t.feed)))
            }
            RowKey::Meta(key) if !is_replicated(key) => Ok(None),
            RowKey::Meta(key) => {
                if let Some(m) = self.meta_entry(key)? {
                    let version = MetaVersion::Value {
                        rev: m.rev.ok_or_else(malformed)?,
                        value: m.row.value,
                    };
                    let row = Row::Meta {
                        key: key.clone(),
                        version,
                    };
                    return Ok(Some((row, m.feed)));
                }
                let Some(t) = self.tombstone(&meta_ref(key))? else {
                    return Ok(None);
                };
                let version = MetaVersion::Gone {
                    rev: t.rev,
                    deleted_at: t.deleted_at,
                    emptied: t.emptied,
                };
                let row = Row::Meta {
                    key: key.clone(),
                    version,
                };
                Ok(Some((row, t.feed)))
            }
        }
    }

    /// [`Storage::versions`] of one key.
    fn stored(&self, key: &RowKey) -> StorageResult<Option<Stored>> {
        Ok(self.version_of(key)?.map(|(row, feed)| Stored {
            seq: feed.seq,
            dirty: feed.dirty,
            row,
        }))
    }

    /// The feed entry of the row `row_ref` names, at `seq`.
    fn change(&self, seq: &Key, row_ref: &[Value]) -> StorageResult<Change> {
        let (Key::U64(seq), [Value::Bytea(row_ref)]) = (seq, row_ref) else {
            return Err(backend("the change feed holds a malformed entry"));
        };
        let key = match decode_tuple(row_ref)?.as_mut_slice() {
            [kind, id] if kind == RECORD_ROW => RowKey::Record(std::mem::take(id)),
            [kind, object_type, object_id, key] if kind == META_ROW => {
                RowKey::Meta(MetaKey::new(object_type, object_id, key))
            }
            _ => return Err(backend("the change feed holds a malformed row key")),
        };
        let (row, _) = self
            .version_of(&key)?
            .ok_or_else(|| backend("the change feed names a missing row"))?;
        Ok(Change { seq: *seq, row })
    }

    /// Up to `limit` entries of `table` (`changes` or `dirty`) after `after`, resolved.
    fn feed(&self, table: &str, after: u64, limit: usize) -> StorageResult<Vec<Change>> {
        self.rows_from(table, Bound::Excluded(Key::U64(after)))
            .take(limit)
            .map(|(seq, row_ref)| self.change(seq, row_ref))
            .collect()
    }

    // ---- writes: every one goes through `put`, which remembers the before-image ----

    fn put(&mut self, table: &'static str, key: Key, row: Option<Vec<Value>>) -> StorageResult<()> {
        let before = self.raw_put(table, key.clone(), row)?;
        self.undo.push((table, key, before));
        Ok(())
    }

    /// Write or delete one row and return the row it replaced, in one search of the table (the
    /// before-image is the row the map hands back, not a copy read first). A `records` row moves
    /// its listing index entries along (this is also how a rollback's restores put them back);
    /// that row's old entries are read before the write, so a row that fails to decode changes
    /// nothing.
    fn raw_put(
        &mut self,
        table: &str,
        key: Key,
        row: Option<Vec<Value>>,
    ) -> StorageResult<Option<Vec<Value>>> {
        let listed = if table == RECORDS {
            let old = self
                .get(RECORDS, &key)
                .map(|row| listed_from(row))
                .transpose()?;
            Some((old, row.as_deref().map(listed_from).transpose()?))
        } else {
            None
        };
        let rows = &mut self
            .db
            .engine
            .items
            .get_mut(table)
            .ok_or_else(|| backend("a table of the store is missing"))?
            .rows;
        let before = match row {
            Some(row) => rows.insert(key, row),
            None => rows.remove(&key),
        };
        if let Some((old, new)) = listed {
            self.db.listing.replace(old.as_ref(), new.as_ref());
        }
        Ok(before)
    }

    fn rollback(&mut self) {
        while let Some((table, key, before)) = self.undo.pop() {
            // Restoring a before-image writes a row the engine held a moment ago; the memory
            // engine's insert and delete cannot fail for a table that exists.
            let _ = self.raw_put(table, key, before);
        }
        self.db.last_seq = self.seq_before;
    }

    /// Give the row `row_ref` names the store's next seq, and a dirty mark at it when `dirty`,
    /// moving its feed entries from `old` (its entry before this write, live or tombstone).
    fn next_feed(&mut self, row_ref: &[u8], old: Feed, dirty: bool) -> StorageResult<Feed> {
        if old.seq != 0 {
            self.put(CHANGES, Key::U64(old.seq), None)?;
        }
        if let Some(mark) = old.dirty {
            self.put(DIRTY, Key::U64(mark), None)?;
        }
        let seq = self
            .db
            .last_seq
            .checked_add(1)
            .ok_or_else(|| backend("the store has used every sequence number"))?;
        self.db.last_seq = seq;
        let entry = || Some(vec![Value::Bytea(row_ref.to_vec())]);
        self.put(CHANGES, Key::U64(seq), entry())?;
        if dirty {
            self.put(DIRTY, Key::U64(seq), entry())?;
        }
        Ok(Feed {
            seq,
            dirty: dirty.then_some(seq),
        })
    }

    /// Move record `id`'s entry in `record_links` from `old` to `new`.
    fn relink(&mut self, id: &str, old: Option<&str>, new: Option<&str>) -> StorageResult<()> {
        if old == new {
            return Ok(());
        }
        if let Some(old) = old {
            self.put(RECORD_LINKS, link_pk(old, id), None)?;
        }
        if let Some(new) = new {
            self.put(RECORD_LINKS, link_pk(new, id), Some(vec![]))?;
        }
        Ok(())
    }

    fn write_record(&mut self, record: &Record, feed: Feed) -> StorageResult<()> {
        self.put(
            RECORDS,
            token_key(&record.token),
            Some(record_row(record, feed)),
        )
    }

    fn write_tombstone(&mut self, row_ref: Vec<u8>, t: StoredTombstone) -> StorageResult<()> {
        self.put(TOMBSTONES, Key::Bytea(row_ref), Some(tombstone_row(&t)))
    }

    /// Remove the tombstone of `row_ref`, if any, and say where it was in the feed.
    fn unbury(&mut self, row_ref: &[u8]) -> StorageResult<Feed> {
        match self.tombstone(row_ref)? {
            Some(t) => {
                self.put(TOMBSTONES, Key::Bytea(row_ref.to_vec()), None)?;
                Ok(t.feed)
            }
            None => Ok(Feed::default()),
        }
    }

    /// Store `record` as its id's live version, over whatever the store has for the id (a live
    /// row, a tombstone, nothing), at the next seq. Fails when another id holds its token.
    fn put_record(&mut self, record: &Record, dirty: bool) -> StorageResult<()> {
        // The token's holder, when it is this id, is the version being replaced (`record_ids`
        // names that token for the id): no second lookup through `record_ids`.
        let old = match self.record_entry_by_token(&record.token)? {
            Some((holder, _)) if holder.id != record.id => {
                return Err(StorageError::TokenTaken(record.token.clone()));
            }
            Some(held) => Some(held),
            None => self.record_entry(&record.id)?,
        };
        let row_ref = record_ref(&record.id);
        let (old_feed, old_link) = match old {
            Some((old, feed)) => {
                if old.token != record.token {
                    self.put(RECORDS, token_key(&old.token), None)?;
                }
                (feed, old.password_id)
            }
            None => (self.unbury(&row_ref)?, None),
        };
        self.store_record(record, &row_ref, old_feed, old_link.as_deref(), dirty)
    }

    /// Write `record`'s rows, taking its place in the feeds from `old_feed` and its link from
    /// `old_link` (its id's previous live version or tombstone, which the caller has read).
    fn store_record(
        &mut self,
        record: &Record,
        row_ref: &[u8],
        old_feed: Feed,
        old_link: Option<&str>,
        dirty: bool,
    ) -> StorageResult<()> {
        let feed = self.next_feed(row_ref, old_feed, dirty)?;
        self.put(
            RECORD_IDS,
            Key::Str(record.id.clone()),
            Some(vec![Value::Str(record.token.clone())]),
        )?;
        self.relink(&record.id, old_link, record.password_id.as_deref())?;
        self.write_record(record, feed)
    }

    /// Replace whatever the store has for record `id` with `tombstone`, at the next seq; the
    /// record it removed, if any.
    fn bury_record(
        &mut self,
        id: &str,
        tombstone: Tombstone,
        dirty: bool,
    ) -> StorageResult<Option<Record>> {
        let row_ref = record_ref(id);
        let (old_feed, removed) = match self.record_entry(id)? {
            Some((old, feed)) => {
                self.put(RECORDS, token_key(&old.token), None)?;
                self.put(RECORD_IDS, Key::Str(id.to_owned()), None)?;
                self.relink(id, old.password_id.as_deref(), None)?;
                (feed, Some(old))
            }
            None => (self.tombstone(&row_ref)?.unwrap_or_default_feed(), None),
        };
        let feed = self.next_feed(&row_ref, old_feed, dirty)?;
        self.write_tombstone(
            row_ref,
            StoredTombstone {
                rev: tombstone.rev,
                deleted_at: tombstone.deleted_at,
                reason: Some(tombstone.reason),
                emptied: false,
                feed,
            },
        )?;
        Ok(removed)
    }

    /// Write a meta row over `old` (the row as it is, if any): a local one as it is, a
    /// replicated one at `rev` and the next seq, replacing its tombstone.
    fn write_meta(
        &mut self,
        row: MetaRow,
        old: Option<StoredMeta>,
        rev: Option<Rev>,
        dirty: bool,
    ) -> StorageResult<()> {
        let feed = match rev {
            Some(_) => {
                let row_ref = meta_ref(&row.key);
                let old_feed = match &old {
                    Some(old) => old.feed,
                    None => self.unbury(&row_ref)?,
                };
                self.next_feed(&row_ref, old_feed, dirty)?
            }
            None => Feed::default(),
        };
        let old_value = old.map(|old| old.row);
        if old_value.as_ref().map(|old| &old.value) != Some(&row.value) {
            if let Some(old) = &old_value {
                self.put(META_VALUES, value_pk(old), None)?;
            }
            self.put(META_VALUES, value_pk(&row), Some(vec![]))?;
        }
        let stored = StoredMeta { row, rev, feed };
        self.put(META, meta_pk(&stored.row.key), Some(meta_row(&stored)))
    }

    /// A local [`WriteOp::InsertMeta`] / [`WriteOp::PutMeta`] / [`WriteOp::PutSharedMeta`]
    /// (`unique`: whether [`UNIQUE_META_VALUES`](crate::storage::UNIQUE_META_VALUES) hold).
    fn put_meta(
        &mut self,
        row: MetaRow,
        must_be_new: bool,
        unique: bool,
        stamp: Stamp,
    ) -> StorageResult<()> {
        let old = self.meta_entry(&row.key)?;
        if must_be_new && old.is_some() {
            return Err(StorageError::MetaTaken(row.key));
        }
        let unchanged = old.as_ref().is_some_and(|old| old.row.value == row.value);
        // A row that already holds its value adds no holder of it.
        if !unchanged
            && unique
            && is_unique_meta(&row.key)
            && self
                .holders(&row.key.object_type, &row.key.key, &row.value)?
                .iter()
                .any(|holder| *holder != row.key.object_id)
        {
            return Err(StorageError::UniqueValueTaken(row.key));
        }
        if is_replicated(&row.key) {
            // Stamped even when the value is unchanged: rows written together (an identity's
            // tag and dek) keep one revision, so per-row merges keep them consistent.
            self.write_meta(row, old, Some(stamp.rev), true)
        } else if unchanged {
            Ok(())
        } else {
            self.write_meta(row, old, None, false)
        }
    }

    /// Replace whatever the store has for the replicated meta row `key` with a tombstone.
    fn bury_meta(
        &mut self,
        key: &MetaKey,
        rev: Rev,
        deleted_at: i64,
        emptied: bool,
        dirty: bool,
    ) -> StorageResult<()> {
        let row_ref = meta_ref(key);
        let old_feed = match self.meta_entry(key)? {
            Some(old) => {
                self.put(META_VALUES, value_pk(&old.row), None)?;
                self.put(META, meta_pk(key), None)?;
                old.feed
            }
            None => self.tombstone(&row_ref)?.unwrap_or_default_feed(),
        };
        let feed = self.next_feed(&row_ref, old_feed, dirty)?;
        self.write_tombstone(
            row_ref,
            StoredTombstone {
                rev,
                deleted_at,
                reason: None,
                emptied,
                feed,
            },
        )
    }

    /// A local [`WriteOp::DeleteMeta`] (`emptied`: an identity's row whose last record went).
    fn delete_meta(&mut self, key: &MetaKey, stamp: Stamp, emptied: bool) -> StorageResult<()> {
        let Some(old) = self.meta_entry(key)? else {
            return Ok(());
        };
        if is_replicated(key) {
            self.bury_meta(key, stamp.rev, stamp.at, emptied, true)
        } else {
            self.put(META_VALUES, value_pk(&old.row), None)?;
            self.put(META, meta_pk(key), None)
        }
    }

    /// Clear the dirty mark of `key`'s row or tombstone if it is still `mark`; its seq stays
    /// (being acknowledged is not a change).
    fn mark_clean(&mut self, key: &RowKey, mark: u64) -> StorageResult<()> {
        let clean = |feed: Feed| Feed {
            dirty: None,
            ..feed
        };
        let row_ref = match key {
            RowKey::Record(id) => {
                if let Some((record, feed)) = self.record_entry(id)? {
                    if feed.dirty == Some(mark) {
                        self.put(DIRTY, Key::U64(mark), None)?;
                        self.write_record(&record, clean(feed))?;
                    }
                    return Ok(());
                }
                record_ref(id)
            }
            RowKey::Meta(key) => {
                if let Some(m) = self.meta_entry(key)? {
                    if m.rev.is_some() && m.feed.dirty == Some(mark) {
                        self.put(DIRTY, Key::U64(mark), None)?;
                        let stored = StoredMeta {
                            feed: clean(m.feed),
                            ..m
                        };
                        self.put(META, meta_pk(key), Some(meta_row(&stored)))?;
                    }
                    return Ok(());
                }
                meta_ref(key)
            }
        };
        if let Some(t) = self.tombstone(&row_ref)?
            && t.feed.dirty == Some(mark)
        {
            self.put(DIRTY, Key::U64(mark), None)?;
            let t = StoredTombstone {
                feed: clean(t.feed),
                ..t
            };
            self.write_tombstone(row_ref, t)?;
        }
        Ok(())
    }

    /// Forget `key`'s tombstone while it is still the clean one at `seq`; `last_seq` stays.
    fn drop_tombstone(&mut self, key: &RowKey, seq: u64) -> StorageResult<()> {
        let row_ref = match key {
            RowKey::Record(id) => record_ref(id),
            RowKey::Meta(key) => meta_ref(key),
        };
        if let Some(t) = self.tombstone(&row_ref)?
            && t.feed.seq == seq
            && t.feed.dirty.is_none()
        {
            self.put(TOMBSTONES, Key::Bytea(row_ref), None)?;
            self.put(CHANGES, Key::U64(seq), None)?;
        }
        Ok(())
    }

    /// Remove `identity_id` and its slots unless a record links to it; `emptied` when its last
    /// record was deleted (rather than moved: a rekey retires the key).
    fn delete_identity_if_unlinked(
        &mut self,
        identity_id: &str,
        stamp: Stamp,
        emptied: bool,
    ) -> StorageResult<()> {
        if self.is_linked(identity_id) {
            return Ok(());
        }
        // The identity's dependents (its further secret slots) go with it.
        let mut gone = self.holders(object_type::IDENTITY, OWNER_KEY, identity_id)?;
        gone.push(identity_id.to_owned());
        for id in gone {
            for row in self.object(object_type::IDENTITY, &id)? {
                let rev = self.meta_entry(&row.key)?.and_then(|m| m.rev);
                self.delete_meta(&row.key, stamp, emptied)?;
                // The version an emptied removal replaced stays here, for the sync server.
                if let (true, Some(rev)) = (emptied, rev) {
                    let kept = MetaRow {
                        key: replaced_key(&row.key),
                        value: replaced_value(rev, &row.value),
                    };
                    self.put_meta(kept, false, false, stamp)?;
                }
            }
        }
        Ok(())
    }

    fn apply_op(&mut self, op: WriteOp, stamp: Stamp) -> StorageResult<()> {
        match op {
            WriteOp::InsertRecord(record) => {
                if self.record_entry_by_token(&record.token)?.is_some() {
                    return Err(StorageError::TokenTaken(record.token));
                }
                let row_ref = record_ref(&record.id);
                if self.token_of_id(&record.id)?.is_some() || self.tombstone(&row_ref)?.is_some() {
                    return Err(StorageError::IdTaken(record.id));
                }
                // Neither the token, the id nor a tombstone of it is here: nothing to replace
                // (`put_record` would look each up again).
                self.store_record(&record, &row_ref, Feed::default(), None, true)
            }
            WriteOp::ChangeRecord { id, change, at } => {
                let (mut record, feed) = self
                    .record_entry(&id)?
                    .ok_or(StorageError::RecordMissing(id))?;
                let old_link = record.password_id.clone();
                if change.apply_to(&mut record, at, stamp.rev)? {
                    let feed = self.next_feed(&record_ref(&record.id), feed, true)?;
                    self.relink(
                        &record.id,
                        old_link.as_deref(),
                        record.password_id.as_deref(),
                    )?;
                    self.write_record(&record, feed)?;
                }
                Ok(())
            }
            WriteOp::DeleteRecord { id, if_expired_at } => {
                let Some(record) = self.record_by_id(&id)? else {
                    return Ok(());
                };
                if if_expired_at.is_some_and(|now| !record.is_expired(now)) {
                    return Err(StorageError::Changed(id));
                }
                let tombstone = Tombstone {
                    rev: stamp.rev,
                    deleted_at: stamp.at,
                    reason: TombstoneReason::Deleted,
                };
                self.bury_record(&id, tombstone, true)?;
                match record.password_id {
                    Some(identity) => self.delete_identity_if_unlinked(&identity, stamp, true),
                    None => Ok(()),
                }
            }
            WriteOp::InsertMeta(row) => self.put_meta(row, true, true, stamp),
            WriteOp::PutMeta(row) => self.put_meta(row, false, true, stamp),
            WriteOp::PutSharedMeta(row) => self.put_meta(row, false, false, stamp),
            WriteOp::DeleteMeta(key) => self.delete_meta(&key, stamp, false),
            WriteOp::ExpectMeta { key, value } => {
                if self.meta(&key)? == value {
                    Ok(())
                } else {
                    Err(StorageError::MetaChanged(key))
                }
            }
            WriteOp::DeleteIdentityIfUnlinked {
                identity_id,
                emptied,
            } => self.delete_identity_if_unlinked(&identity_id, stamp, emptied),
            WriteOp::ExpectUnlinked { identity_id } => {
                if self.is_linked(&identity_id) {
                    Err(StorageError::MetaChanged(identity_tag_key(&identity_id)))
                } else {
                    Ok(())
                }
            }
            // A merge's row: stored as it is, at the next seq; it stamps nothing and never
            // prunes (the identity rows a deletion took travel as their own versions).
            WriteOp::PutVersion { row, dirty } => match *row {
                Row::Record {
                    id,
                    version: RecordVersion::Live(live),
                } => self.put_record(&Record::from_live(id, live), dirty),
                Row::Record {
                    id,
                    version: RecordVersion::Gone(tombstone),
                } => self.bury_record(&id, tombstone, dirty).map(drop),
                Row::Meta { key, .. } if !is_replicated(&key) => Err(backend(
                    "a merge tried to store a local meta row; local rows are never replicated",
                )),
                Row::Meta {
                    key,
                    version: MetaVersion::Value { rev, value },
                } => {
                    let old = self.meta_entry(&key)?;
                    self.write_meta(MetaRow { key, value }, old, Some(rev), dirty)
                }
                Row::Meta {
                    key,
                    version:
                        MetaVersion::Gone {
                            rev,
                            deleted_at,
                            emptied,
                        },
                } => self.bury_meta(&key, rev, deleted_at, emptied, dirty),
            },
            WriteOp::ExpectVersion { key, seq } => {
                if self.version_of(&key)?.map(|(_, feed)| feed.seq) == seq {
                    return Ok(());
                }
                Err(match key {
                    RowKey::Record(id) => StorageError::Changed(id),
                    RowKey::Meta(key) => StorageError::MetaChanged(key),
                })
            }
            WriteOp::MarkClean { key, dirty } => self.mark_clean(&key, dirty),
            WriteOp::DropTombstone { key, seq } => self.drop_tombstone(&key, seq),
            WriteOp::ExpectEmpty | WriteOp::ExpectNoData => {
                let has = |table| self.rows(table).is_some_and(|rows| !rows.is_empty());
                let tombstones = matches!(op, WriteOp::ExpectEmpty) && has(TOMBSTONES);
                if has(RECORD_IDS) || tombstones {
                    return Err(StorageError::NotEmpty);
                }
                for row in self.all_rows(META) {
                    let t = &meta_from(row)?.row.key.object_type;
                    if t != object_type::VAULT && t != object_type::SYNC {
                        return Err(StorageError::NotEmpty);
                    }
                }
                Ok(())
            }
            WriteOp::ClearAll => {
                // Sync's own rows stay (meta and meta_values keys start with the object type);
                // they are local, so no feed entry names them.
                let sync = tuple(&[object_type::SYNC]);
                for table in TABLES {
                    let keep = |key: &Key| {
                        (table == META || table == META_VALUES)
                            && matches!(key, Key::Bytea(b) if b.starts_with(&sync))
                    };
                    let keys: Vec<Key> = self
                        .rows(table)
                        .into_iter()
                        .flat_map(|rows| rows.keys())
                        .filter(|key| !keep(key))
                        .cloned()
                        .collect();
                    for key in keys {
                        self.put(table, key, None)?;
                    }
                }
                Ok(())
            }
        }
    }
}

/// The feed entry of a tombstone, or none.
trait FeedOf {
    fn unwrap_or_default_feed(self) -> Feed;
}

impl FeedOf for Option<StoredTombstone> {
    fn unwrap_or_default_feed(self) -> Feed {
        self.map_or(Feed::default(), |t| t.feed)
    }
}

impl GlueMemoryStorage {
    /// A new, empty database.
    pub fn new() -> StorageResult<Self> {
        let mut engine = MemoryStorage::default();
        for table in TABLES {
            // Schemaless tables: the rows' layout is fixed by this module (see the table above).
            engine
                .insert_schema(&Schema {
                    table_name: table.to_owned(),
                    column_defs: None,
                    indexes: vec![],
                    engine: None,
                    foreign_keys: vec![],
                    comment: None,
                })
                .map_err(backend)?;
        }
        Ok(GlueMemoryStorage {
            db: Mutex::new(Some(Db {
                engine,
                last_seq: 0,
                listing: Listing::default(),
            })),
        })
    }

    /// Run `f` on the open database. Every call is synchronous, so holding the lock for its whole
    /// length makes each trait method atomic with respect to every other.
    fn with<T>(&self, f: impl FnOnce(&mut Tx<'_>) -> StorageResult<T>) -> StorageResult<T> {
        let mut guard: MutexGuard<'_, Option<Db>> = self
            .db
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let db = guard.as_mut().ok_or(StorageError::Closed)?;
        let seq_before = db.last_seq;
        let mut tx = Tx {
            db,
            undo: Vec::new(),
            seq_before,
        };
        f(&mut tx)
    }
}

#[cfg_attr(target_arch = "wasm32", async_trait(?Send))]
#[cfg_attr(not(target_arch = "wasm32"), async_trait)]
impl Storage for GlueMemoryStorage {
    async fn records_by_tokens(&self, tokens: &[String]) -> StorageResult<Vec<Option<Record>>> {
        self.with(|tx| tokens.iter().map(|t| tx.record_by_token(t)).collect())
    }

    async fn records_by_ids(&self, ids: &[String]) -> StorageResult<Vec<Option<Record>>> {
        self.with(|tx| ids.iter().map(|id| tx.record_by_id(id)).collect())
    }

    async fn query_records(&self, filter: &RecordFilter, now: i64) -> StorageResult<Vec<Record>> {
        self.with(|tx| {
            if let Some(tokens) = filter.candidate_tokens() {
                let found = tokens.iter().map(|t| tx.record_by_token(t));
                return Ok(filter.apply(collect_found(found)?, now));
            }
            if let Some(ids) = filter.candidate_ids() {
                let found = ids.iter().map(|id| tx.record_by_id(id));
                return Ok(filter.apply(collect_found(found)?, now));
            }
            // The listing indexes give the order; see `listing` for what each query costs.
            let limit = filter.limit.unwrap_or(usize::MAX);
            let listed = |id: &str| {
                tx.record_by_id(id)?
                    .ok_or_else(|| backend("a listing index names a missing record"))
            };
            if Listing::exact(filter) {
                let ids = tx.db.listing.ids(filter, now, filter.offset);
                return ids.take(limit).map(listed).collect();
            }
            let ids = tx.db.listing.ids(filter, now, 0);
            let mut page = Vec::new();
            let mut skip = filter.offset;
            for id in ids {
                if page.len() >= limit {
                    break;
                }
                let record = listed(id)?;
                if !filter.matches(&record, now) {
                    continue;
                }
                if skip > 0 {
                    skip -= 1;
                } else {
                    page.push(record);
                }
            }
            Ok(page)
        })
    }

    async fn count_records(&self, filter: &RecordFilter, now: i64) -> StorageResult<u64> {
        self.with(|tx| {
            let named = match (filter.candidate_tokens(), filter.candidate_ids()) {
                (Some(tokens), _) => collect_found(tokens.iter().map(|t| tx.record_by_token(t)))?,
                (None, Some(ids)) => collect_found(ids.iter().map(|id| tx.record_by_id(id)))?,
                (None, None) => return Ok(tx.db.listing.count(filter, now)),
            };
            Ok(named.iter().filter(|r| filter.matches(r, now)).count() as u64)
        })
    }

    async fn scan_records(
        &self,
        after_id: Option<&str>,
        limit: usize,
    ) -> StorageResult<Vec<Record>> {
        self.with(|tx| {
            let from = match after_id {
                Some(id) => Bound::Excluded(Key::Str(id.to_owned())),
                None => Bound::Unbounded,
            };
            let tokens = tx
                .rows_from(RECORD_IDS, from)
                .take(limit)
                .map(|(_, row)| row.first().map(text).transpose())
                .collect::<StorageResult<Vec<_>>>()?;
            collect_found(tokens.into_iter().flatten().map(|t| tx.record_by_token(&t)))
        })
    }

    async fn meta_get(&self, key: &MetaKey) -> StorageResult<Option<String>> {
        self.with(|tx| tx.meta(key))
    }

    async fn meta_object(&self, object_type: &str, object_id: &str) -> StorageResult<Vec<MetaRow>> {
        self.with(|tx| tx.object(object_type, object_id))
    }

    async fn meta_find(
        &self,
        object_type: &str,
        key: &str,
        value: &str,
    ) -> StorageResult<Vec<MetaRow>> {
        self.with(|tx| {
            let mut rows = Vec::new();
            for holder in tx.holders(object_type, key, value)? {
                rows.extend(tx.object(object_type, &holder)?);
            }
            sorting::sort(&mut rows);
            Ok(rows)
        })
    }

    async fn meta_count(&self, object_type: &str) -> StorageResult<u64> {
        self.with(|tx| Ok(tx.with_prefix(META, tuple(&[object_type])).count() as u64))
    }

    async fn meta_all(&self) -> StorageResult<Vec<MetaRow>> {
        self.with(|tx| {
            let mut rows = tx
                .all_rows(META)
                .map(|row| meta_from(row).map(|m| m.row))
                .collect::<StorageResult<Vec<_>>>()?;
            sorting::sort(&mut rows);
            Ok(rows)
        })
    }

    async fn records_linked_to(
        &self,
        identity_id: &str,
        after_id: Option<&str>,
        limit: usize,
    ) -> StorageResult<Vec<Record>> {
        self.with(|tx| tx.linked_to(identity_id, after_id, limit))
    }

    async fn changes_since(&self, after_seq: u64, limit: usize) -> StorageResult<Vec<Change>> {
        self.with(|tx| tx.feed(CHANGES, after_seq, limit))
    }

    async fn dirty_changes(&self, after: u64, limit: usize) -> StorageResult<Vec<Change>> {
        self.with(|tx| tx.feed(DIRTY, after, limit))
    }

    async fn versions(&self, keys: &[RowKey]) -> StorageResult<Vec<Option<Stored>>> {
        self.with(|tx| keys.iter().map(|key| tx.stored(key)).collect())
    }

    async fn apply(&self, stamp: Stamp, batch: Vec<WriteOp>) -> StorageResult<()> {
        self.with(|tx| {
            for op in batch {
                if let Err(e) = tx.apply_op(op, stamp) {
                    tx.rollback();
                    return Err(e);
                }
            }
            Ok(())
        })
    }

    /// Every call here is synchronous: between a plan's reads and its commit nothing else runs
    /// unless the caller yields, so the optimistic transaction is as good as a held one.
    async fn transaction(&self) -> StorageResult<Box<dyn WriteTransaction + '_>> {
        Ok(Box::new(Optimistic(self)))
    }

    /// GlueSQL's memory store has no index to find expired records by and runs every
    /// statement in the isolate, so a "set-based" purge would read every record anyway: the
    /// vault pages through them instead.
    async fn purge_expired(
        &self,
        _stamp: Stamp,
        _purge: Purge,
        _limit: usize,
        _also: Vec<WriteOp>,
    ) -> StorageResult<Option<u64>> {
        Ok(None)
    }

    /// The size of `record_links` (one entry per linked record), or of an identity's range of
    /// it, counted without reading a record.
    async fn linked_count(&self, identity_id: Option<&str>) -> StorageResult<u64> {
        self.with(|tx| match identity_id {
            None => Ok(tx.rows(RECORD_LINKS).map_or(0, |rows| rows.len() as u64)),
            Some(identity_id) => Ok(tx.linked_count_of(identity_id)),
        })
    }

    async fn close(&self) {
        let mut guard = self.db.lock().unwrap_or_else(|p| p.into_inner());
        *guard = None;
    }
}

fn collect_found(
    found: impl Iterator<Item = StorageResult<Option<Record>>>,
) -> StorageResult<Vec<Record>> {
    let mut out = Vec::new();
    for record in found {
        if let Some(record) = record? {
            out.push(record);
        }
    }
    Ok(out)
}

#[cfg(test)]
#[allow(clippy::disallowed_methods)] // the engine's size rule (clippy.toml) is not the tests'
mod tests {
    use super::*;

    #[test]
    fn tuples_sort_as_their_parts_and_prefixes_are_byte_prefixes() {
        let cases = [
            (vec!["a"], vec!["a", ""]),
            (vec!["a"], vec!["ab"]),
            (vec!["a", "z"], vec!["ab"]),
            (vec!["a\0"], vec!["a\u{1}"]),
            (vec!["a"], vec!["a\0"]),
            (vec!["", "x"], vec!["\0"]),
        ];
        for (lo, hi) in cases {
            assert!(tuple(&lo) < tuple(&hi), "{lo:?} < {hi:?}");
        }
        assert!(tuple(&["t", "k", "v", "id"]).starts_with(&tuple(&["t", "k", "v"])));
        assert!(!tuple(&["t", "k", "vw", "id"]).starts_with(&tuple(&["t", "k", "v"])));
    }

    #[test]
    fn tuples_decode_to_their_parts() {
        for s in ["", "p_0123", "a\0b", "\0", "ünï"] {
            let bytes = tuple(&[s]);
            assert_eq!(decode_last(&bytes).unwrap(), s);
        }
        let parts = ["m", "vault", "a\0", ""];
        assert_eq!(decode_tuple(&tuple(&parts)).unwrap(), parts);
        assert!(decode_last(&[0x61]).is_err());
        assert!(decode_last(&[0, 1, 0x61]).is_err());
        assert!(decode_last(&tuple(&["a", "b"])).is_err());
        assert!(decode_tuple(&[0x61, 0, 7]).is_err());
    }

    /// Link keys sort by identity, then by id in the order of `scan_records` (string order), so
    /// an identity's records page in the backend's id order.
    #[test]
    fn revisions_round_trip_through_their_stored_number() {
        let revs = [
            Rev::ZERO,
            Rev::synthesized(1_700_000_000_000),
            Rev::new(crate::sync::MAX_WALL_MS, u16::MAX, u64::MAX).unwrap(),
            Rev::new(5, 1, 2).unwrap(),
        ];
        for r in revs {
            assert_eq!(rev(&rev_value(r)).unwrap(), r);
        }
        // Stored numbers sort as the revisions do.
        let number = |r: Rev| match rev_value(r) {
            Value::U128(n) => n,
            _ => unreachable!(),
        };
        assert!(number(revs[3]) < number(revs[1]) && number(revs[1]) < number(revs[2]));
        assert!(rev(&Value::Str(Rev::ZERO.to_string())).is_err());
    }

    /// Two tokens under one `records` key (a SHA-256 collision, staged here by moving a row):
    /// a lookup of the other token fails rather than answer "absent", and an insert of it
    /// fails without replacing the record that holds the key.
    #[test]
    fn a_token_whose_key_holds_another_token_is_an_error_not_absent() {
        use futures::executor::block_on;
        let store = GlueMemoryStorage::new().unwrap();
        let record = |id: &str, token: &str| Record {
            id: id.to_owned(),
            token: token.to_owned(),
            value: "vs1:x".to_owned(),
            created_at: 1,
            updated_at: 1,
            expires_at: None,
            soft_deleted_at: None,
            password_id: None,
            revs: RecordRevs::default(),
        };
        let stamp = Stamp {
            rev: Rev::synthesized(1),
            at: 1,
        };
        let insert =
            |r: Record| block_on(store.apply(stamp, vec![WriteOp::InsertRecord(Box::new(r))]));
        insert(record("id-a", "tk_a")).unwrap();
        store
            .with(|tx| {
                let rows = &mut tx.db.engine.items.get_mut(RECORDS).unwrap().rows;
                let row = rows.remove(&token_key("tk_a")).unwrap();
                rows.insert(token_key("tk_b"), row);
                Ok(())
            })
            .unwrap();
        assert!(block_on(store.records_by_tokens(&["tk_b".to_owned()])).is_err());
        assert!(insert(record("id-b", "tk_b")).is_err());
        let held = store.with(|tx| Ok(tx.get(RECORDS, &token_key("tk_b")).cloned()));
        assert_eq!(
            record_from(&held.unwrap().unwrap()).unwrap().0.id,
            "id-a",
            "the record under the key stays"
        );
    }

    #[test]
    fn link_keys_sort_by_identity_then_id_order() {
        let ids = ["", "a", "a\0", "a\u{1}", "ab", "b", "\u{ff5e}", "\u{1f600}"];
        let mut by_string = ids.to_vec();
        by_string.sort();
        let mut by_key = ids.to_vec();
        by_key.sort_by_key(|id| link_pk("p", id));
        assert_eq!(by_key, by_string);
        assert!(link_pk("p", "\u{1f600}") < link_pk("p\0", ""));
    }
}
