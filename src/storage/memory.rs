//! In-memory backend on GlueSQL's memory storage engine (`gluesql_memory_storage`), for Node and
//! Cloudflare-style workers. Nothing survives the process; `exportSnapshot` persists.
//!
//! The backend talks to GlueSQL through its storage API (`Store::fetch_data`,
//! `StoreMut::insert_data` / `delete_data`, and ordered ranges over the engine's keyed tables),
//! not through SQL text. Parsing and planning a statement costs about a hundred microseconds,
//! twenty times a keyed lookup, and every statement here is a keyed lookup or an ordered range;
//! GlueSQL's SQL layer is also two thirds of the engine's size, so a build that never parses SQL
//! ships without it. Four tables, each keyed so every lookup is one B-tree search:
//!
//! | table         | key                                | row                                       |
//! |---------------|------------------------------------|-------------------------------------------|
//! | `records`     | token                              | token, id, value, created, updated, expires, soft-deleted |
//! | `record_ids`  | id                                 | token                                     |
//! | `meta`        | `(object_type, object_id, key)`    | the four columns of the meta row          |
//! | `meta_values` | `(object_type, key, value, object_id)` | none: an index for tag lookups, unique tags and "is this identity still linked" |
//!
//! Composite keys are order-preserving byte strings (see [`tuple`]), so "every row of one
//! object" and "every object holding this value" are range scans. GlueSQL's memory storage has
//! no transactions: [`Storage::apply`] keeps an undo log of before-images and restores them,
//! newest first, when any op of the batch fails.

use super::{
    MetaKey, MetaRow, OWNER_KEY, Optimistic, Purge, Storage, StorageError, StorageResult, WriteOp,
    WriteTransaction, is_unique_meta, link_key, object_type,
};
use crate::query::RecordFilter;
use crate::record::Record;
use crate::sorting;
use async_trait::async_trait;
use gluesql_core::data::{Key, Schema, Value};
use gluesql_core::store::StoreMut;
use gluesql_memory_storage::MemoryStorage;
use std::ops::Bound;
use std::sync::{Mutex, MutexGuard};

const RECORDS: &str = "records";
const RECORD_IDS: &str = "record_ids";
const META: &str = "meta";
const META_VALUES: &str = "meta_values";
const TABLES: [&str; 4] = [RECORDS, RECORD_IDS, META, META_VALUES];

/// The GlueSQL in-memory backend. Each instance is its own database: two never share state.
pub struct GlueMemoryStorage {
    db: Mutex<Option<MemoryStorage>>,
}

impl std::fmt::Debug for GlueMemoryStorage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GlueMemoryStorage").finish_non_exhaustive()
    }
}

fn backend(e: impl std::fmt::Display) -> StorageError {
    StorageError::Backend {
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

fn text(v: &Value) -> StorageResult<String> {
    match v {
        Value::Str(s) => Ok(s.clone()),
        other => Err(backend(format!("expected text, found {other:?}"))),
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

fn opt_value(n: Option<i64>) -> Value {
    n.map_or(Value::Null, Value::I64)
}

fn record_row(r: &Record) -> Vec<Value> {
    vec![
        Value::Str(r.token.clone()),
        Value::Str(r.id.clone()),
        Value::Str(r.value.clone()),
        Value::I64(r.created_at),
        Value::I64(r.updated_at),
        opt_value(r.expires_at),
        opt_value(r.soft_deleted_at),
    ]
}

fn record_from(row: &[Value]) -> StorageResult<Record> {
    let [
        token,
        id,
        value,
        created_at,
        updated_at,
        expires_at,
        soft_deleted_at,
    ] = row
    else {
        return Err(backend("records row has the wrong number of columns"));
    };
    Ok(Record {
        token: text(token)?,
        id: text(id)?,
        value: text(value)?,
        created_at: int(created_at)?,
        updated_at: int(updated_at)?,
        expires_at: opt_int(expires_at)?,
        soft_deleted_at: opt_int(soft_deleted_at)?,
    })
}

fn meta_row(row: &MetaRow) -> Vec<Value> {
    vec![
        Value::Str(row.key.object_type.clone()),
        Value::Str(row.key.object_id.clone()),
        Value::Str(row.key.key.clone()),
        Value::Str(row.value.clone()),
    ]
}

fn meta_from(row: &[Value]) -> StorageResult<MetaRow> {
    let [object_type, object_id, key, value] = row else {
        return Err(backend("meta row has the wrong number of columns"));
    };
    Ok(MetaRow {
        key: MetaKey {
            object_type: text(object_type)?,
            object_id: text(object_id)?,
            key: text(key)?,
        },
        value: text(value)?,
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

/// One open database and the undo log of the batch being applied.
struct Tx<'a> {
    db: &'a mut MemoryStorage,
    undo: Vec<(&'static str, Key, Option<Vec<Value>>)>,
}

impl Tx<'_> {
    fn get(&self, table: &str, key: &Key) -> Option<&Vec<Value>> {
        self.db.items.get(table).and_then(|item| item.rows.get(key))
    }

    /// Rows whose key starts with `prefix`, in key order, without copying the table (GlueSQL's
    /// own `scan_data` clones every row of it).
    fn with_prefix<'s>(
        &'s self,
        table: &str,
        prefix: Vec<u8>,
    ) -> impl Iterator<Item = (&'s Key, &'s Vec<Value>)> + 's {
        let rows = self.db.items.get(table).map(|item| &item.rows);
        rows.into_iter().flat_map(move |rows| {
            let from = Key::Bytea(prefix.clone());
            let prefix = prefix.clone();
            rows.range((Bound::Included(from), Bound::Unbounded))
                .take_while(move |(k, _)| matches!(k, Key::Bytea(b) if b.starts_with(&prefix)))
        })
    }

    fn all_rows<'s>(&'s self, table: &str) -> impl Iterator<Item = &'s Vec<Value>> + 's {
        self.db
            .items
            .get(table)
            .into_iter()
            .flat_map(|item| item.rows.values())
    }

    fn record_by_token(&self, token: &str) -> StorageResult<Option<Record>> {
        self.get(RECORDS, &Key::Str(token.to_owned()))
            .map(|row| record_from(row))
            .transpose()
    }

    fn token_of_id(&self, id: &str) -> StorageResult<Option<String>> {
        self.get(RECORD_IDS, &Key::Str(id.to_owned()))
            .and_then(|row| row.first())
            .map(text)
            .transpose()
    }

    fn record_by_id(&self, id: &str) -> StorageResult<Option<Record>> {
        match self.token_of_id(id)? {
            Some(token) => self.record_by_token(&token),
            None => Ok(None),
        }
    }

    fn meta(&self, key: &MetaKey) -> StorageResult<Option<String>> {
        self.get(META, &meta_pk(key))
            .map(|row| meta_from(row).map(|m| m.value))
            .transpose()
    }

    fn object(&self, object_type: &str, object_id: &str) -> StorageResult<Vec<MetaRow>> {
        self.with_prefix(META, tuple(&[object_type, object_id]))
            .map(|(_, row)| meta_from(row))
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

    // ---- writes: every one goes through `put`, which remembers the before-image ----

    fn put(&mut self, table: &'static str, key: Key, row: Option<Vec<Value>>) -> StorageResult<()> {
        let before = self.get(table, &key).cloned();
        self.undo.push((table, key.clone(), before));
        self.raw_put(table, key, row)
    }

    fn raw_put(&mut self, table: &str, key: Key, row: Option<Vec<Value>>) -> StorageResult<()> {
        match row {
            Some(row) => self.db.insert_data(table, vec![(key, row)]),
            None => self.db.delete_data(table, vec![key]),
        }
        .map_err(backend)
    }

    fn rollback(&mut self) {
        while let Some((table, key, before)) = self.undo.pop() {
            // Restoring a before-image writes a row the engine held a moment ago; the memory
            // engine's insert and delete cannot fail for a table that exists.
            let _ = self.raw_put(table, key, before);
        }
    }

    fn write_record(&mut self, record: &Record) -> StorageResult<()> {
        self.put(
            RECORDS,
            Key::Str(record.token.clone()),
            Some(record_row(record)),
        )
    }

    fn put_meta(&mut self, row: MetaRow, must_be_new: bool) -> StorageResult<()> {
        let old = self.meta(&row.key)?;
        if must_be_new && old.is_some() {
            return Err(StorageError::MetaTaken(row.key));
        }
        if old.as_deref() == Some(row.value.as_str()) {
            return Ok(());
        }
        if is_unique_meta(&row.key)
            && self
                .holders(&row.key.object_type, &row.key.key, &row.value)?
                .iter()
                .any(|holder| *holder != row.key.object_id)
        {
            return Err(StorageError::UniqueValueTaken(row.key));
        }
        if let Some(value) = old {
            let stale = MetaRow {
                key: row.key.clone(),
                value,
            };
            self.put(META_VALUES, value_pk(&stale), None)?;
        }
        self.put(META_VALUES, value_pk(&row), Some(vec![]))?;
        self.put(META, meta_pk(&row.key), Some(meta_row(&row)))
    }

    fn delete_meta(&mut self, key: &MetaKey) -> StorageResult<()> {
        if let Some(value) = self.meta(key)? {
            let row = MetaRow {
                key: key.clone(),
                value,
            };
            self.put(META_VALUES, value_pk(&row), None)?;
            self.put(META, meta_pk(key), None)?;
        }
        Ok(())
    }

    fn delete_object_if_unreferenced(
        &mut self,
        object_type: &str,
        object_id: &str,
        referrer_type: &str,
        referrer_key: &str,
    ) -> StorageResult<()> {
        if !self
            .holders(referrer_type, referrer_key, object_id)?
            .is_empty()
        {
            return Ok(());
        }
        // The object's dependents (an identity's further secret slots) go with it.
        let mut gone = self.holders(object_type, OWNER_KEY, object_id)?;
        gone.push(object_id.to_owned());
        for id in gone {
            for row in self.object(object_type, &id)? {
                self.delete_meta(&row.key)?;
            }
        }
        Ok(())
    }

    fn apply_op(&mut self, op: WriteOp) -> StorageResult<()> {
        match op {
            WriteOp::InsertRecord(record) => {
                if self.get(RECORDS, &Key::Str(record.token.clone())).is_some() {
                    return Err(StorageError::TokenTaken(record.token));
                }
                if self.token_of_id(&record.id)?.is_some() {
                    return Err(StorageError::IdTaken(record.id));
                }
                self.put(
                    RECORD_IDS,
                    Key::Str(record.id.clone()),
                    Some(vec![Value::Str(record.token.clone())]),
                )?;
                self.write_record(&record)
            }
            WriteOp::ChangeRecord { id, change, at } => {
                let mut record = self
                    .record_by_id(&id)?
                    .ok_or(StorageError::RecordMissing(id))?;
                if change.apply_to(&mut record, at)? {
                    self.write_record(&record)?;
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
                self.put(RECORDS, Key::Str(record.token), None)?;
                self.put(RECORD_IDS, Key::Str(id.clone()), None)?;
                let link = link_key(&id);
                if let Some(identity) = self.meta(&link)? {
                    self.delete_meta(&link)?;
                    self.delete_object_if_unreferenced(
                        object_type::IDENTITY,
                        &identity,
                        &link.object_type,
                        &link.key,
                    )?;
                }
                Ok(())
            }
            WriteOp::InsertMeta(row) => self.put_meta(row, true),
            WriteOp::PutMeta(row) => self.put_meta(row, false),
            WriteOp::DeleteMeta(key) => self.delete_meta(&key),
            WriteOp::ExpectMeta { key, value } => {
                if self.meta(&key)? == value {
                    Ok(())
                } else {
                    Err(StorageError::MetaChanged(key))
                }
            }
            WriteOp::DeleteObjectIfUnreferenced {
                object_type,
                object_id,
                referrer_type,
                referrer_key,
            } => self.delete_object_if_unreferenced(
                &object_type,
                &object_id,
                &referrer_type,
                &referrer_key,
            ),
            WriteOp::ExpectEmpty => {
                let has_records = self.all_rows(RECORD_IDS).next().is_some();
                let has_meta = self
                    .all_rows(META)
                    .map(|row| meta_from(row))
                    .any(|m| m.is_ok_and(|m| m.key.object_type != object_type::VAULT));
                if has_records || has_meta {
                    Err(StorageError::NotEmpty)
                } else {
                    Ok(())
                }
            }
            WriteOp::ClearAll => {
                for table in TABLES {
                    let keys: Vec<Key> = self
                        .db
                        .items
                        .get(table)
                        .map(|item| item.rows.keys().cloned().collect())
                        .unwrap_or_default();
                    for key in keys {
                        self.put(table, key, None)?;
                    }
                }
                Ok(())
            }
        }
    }
}

/// The string a tuple's last element encodes (see [`tuple`]).
fn decode_last(bytes: &[u8]) -> StorageResult<String> {
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match (bytes[i], bytes.get(i + 1)) {
            (0, Some(0xff)) => out.push(0),
            (0, Some(1)) if i + 2 == bytes.len() => {
                return String::from_utf8(out).map_err(backend);
            }
            (0, _) => break,
            (b, _) => {
                out.push(b);
                i += 1;
                continue;
            }
        }
        i += 2;
    }
    Err(backend("meta_values holds a malformed key"))
}

impl GlueMemoryStorage {
    /// A new, empty database.
    pub fn new() -> StorageResult<Self> {
        let mut db = MemoryStorage::default();
        for table in TABLES {
            // Schemaless tables: the rows' layout is fixed by this module (see the table above).
            db.insert_schema(&Schema {
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
            db: Mutex::new(Some(db)),
        })
    }

    /// Run `f` on the open database. Every call is synchronous, so holding the lock for its whole
    /// length makes each trait method atomic with respect to every other.
    fn with<T>(&self, f: impl FnOnce(&mut Tx<'_>) -> StorageResult<T>) -> StorageResult<T> {
        let mut guard: MutexGuard<'_, Option<MemoryStorage>> = self
            .db
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let db = guard.as_mut().ok_or(StorageError::Closed)?;
        let mut tx = Tx {
            db,
            undo: Vec::new(),
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
            let records = tx
                .all_rows(RECORDS)
                .map(|row| record_from(row))
                .collect::<StorageResult<Vec<_>>>()?;
            Ok(filter.apply(records, now))
        })
    }

    async fn count_records(&self, filter: &RecordFilter, now: i64) -> StorageResult<u64> {
        self.with(|tx| {
            let mut n = 0u64;
            for row in tx.all_rows(RECORDS) {
                if filter.matches(&record_from(row)?, now) {
                    n += 1;
                }
            }
            Ok(n)
        })
    }

    async fn scan_records(
        &self,
        after_id: Option<&str>,
        limit: usize,
    ) -> StorageResult<Vec<Record>> {
        self.with(|tx| {
            let Some(ids) = tx.db.items.get(RECORD_IDS) else {
                return Ok(vec![]);
            };
            let from = match after_id {
                Some(id) => Bound::Excluded(Key::Str(id.to_owned())),
                None => Bound::Unbounded,
            };
            let tokens = ids
                .rows
                .range((from, Bound::Unbounded))
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
                .map(|row| meta_from(row))
                .collect::<StorageResult<Vec<_>>>()?;
            sorting::sort(&mut rows);
            Ok(rows)
        })
    }

    async fn apply(&self, batch: Vec<WriteOp>) -> StorageResult<()> {
        self.with(|tx| {
            for op in batch {
                if let Err(e) = tx.apply_op(op) {
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
        _at: i64,
        _purge: Purge,
        _limit: usize,
        _also: Vec<WriteOp>,
    ) -> StorageResult<Option<u64>> {
        Ok(None)
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
    fn the_last_element_of_a_tuple_decodes() {
        for s in ["", "p_0123", "a\0b", "\0", "ünï"] {
            let bytes = tuple(&[s]);
            assert_eq!(decode_last(&bytes).unwrap(), s);
        }
        assert!(decode_last(&[0x61]).is_err());
        assert!(decode_last(&[0, 1, 0x61]).is_err());
    }

    #[test]
    fn link_key_is_the_documented_row() {
        let k = link_key("abc");
        assert_eq!(
            (k.object_type.as_str(), k.object_id.as_str(), k.key.as_str()),
            ("record", "r_abc", "password_id")
        );
    }
}
