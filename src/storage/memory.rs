//! In-memory backend on GlueSQL (`gluesql-core` + `gluesql_memory_storage`), for Node and
//! Cloudflare-style workers. Nothing survives the process; `exportSnapshot` persists.
//!
//! Every statement is a constant SQL text with `$n` parameters bound by GlueSQL: no caller
//! string is ever pasted into SQL. Tables are keyed so lookups take GlueSQL's primary-key path:
//!
//! | table        | primary key                   | purpose                                   |
//! |--------------|-------------------------------|-------------------------------------------|
//! | `records`    | `token`                       | the records; token lookups are the hot path |
//! | `record_ids` | `id`                          | id → token, so id lookups do not scan      |
//! | `meta_objects` | `o` = JSON `[type, id]`     | one row per meta object; its rows as a JSON map `key → value` |
//! | `meta_index` | `v` = JSON `[type, key, value]` | how many rows hold this value, and (exact when only one does) the object holding it: tag lookups, unique tags and "is this identity still linked" without scanning |
//!
//! GlueSQL's memory storage has no transactions, so [`Storage::apply`] keeps an undo log of
//! before-images and restores them, newest first, when any op of the batch fails.

use super::{
    MetaKey, MetaRow, Storage, StorageError, StorageResult, StoredRecord, WriteOp, is_unique_meta,
    link_key, object_type,
};
use crate::query::{RecordFilter, SoftDeleted};
use crate::record::Record;
use async_trait::async_trait;
use gluesql_core::data::{Key, Value};
use gluesql_core::executor::Payload;
use gluesql_core::prelude::Glue;
use gluesql_core::store::StoreMut;
use gluesql_core::translate::{IntoParamLiteral, ParamLiteral};
use gluesql_memory_storage::MemoryStorage;
use std::collections::BTreeMap;
use std::sync::{Mutex, MutexGuard};

const SCHEMA: &str = "
    CREATE TABLE records (
        token TEXT PRIMARY KEY, id TEXT NOT NULL, value TEXT NOT NULL,
        created_at INT NOT NULL, updated_at INT NOT NULL, expires_at INT NULL, soft_deleted_at INT NULL
    );
    CREATE TABLE record_ids (id TEXT PRIMARY KEY, token TEXT NOT NULL);
    CREATE TABLE meta_objects (o TEXT PRIMARY KEY, object_type TEXT NOT NULL, object_id TEXT NOT NULL, fields TEXT NOT NULL);
    CREATE TABLE meta_index (v TEXT PRIMARY KEY, n INT NOT NULL, o TEXT NOT NULL);
";

const RECORD_COLUMNS: &str =
    "token, id, value, created_at, updated_at, expires_at, soft_deleted_at";

/// The rows of one meta object, `key → value`.
type Fields = BTreeMap<String, String>;

/// A table row as the undo log remembers it.
#[derive(Debug, Clone)]
enum Row {
    Record(Record),
    RecordId {
        id: String,
        token: String,
    },
    MetaObject {
        object_type: String,
        object_id: String,
        fields: Fields,
    },
    MetaIndex {
        v: String,
        n: i64,
        o: String,
    },
}

/// Where a row lives: its table and primary key.
#[derive(Debug, Clone, PartialEq, Eq)]
enum RowKey {
    Record(String),
    RecordId(String),
    MetaObject(String),
    MetaIndex(String),
}

/// The GlueSQL in-memory backend. Each instance is its own database: two never share state.
pub struct GlueMemoryStorage {
    glue: Mutex<Option<Glue<MemoryStorage>>>,
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

// JSON arrays of strings cannot fail to serialize and are unambiguous whatever the strings hold.
fn object_pk(object_type: &str, object_id: &str) -> String {
    serde_json::to_string(&[object_type, object_id]).unwrap_or_default()
}

fn index_pk(object_type: &str, key: &str, value: &str) -> String {
    serde_json::to_string(&[object_type, key, value]).unwrap_or_default()
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

fn first_text(row: &[Value]) -> StorageResult<String> {
    text(row.first().ok_or_else(|| backend("empty row"))?)
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

/// A `meta_objects` row: `(object_type, object_id, fields)`.
fn object_from(row: &[Value]) -> StorageResult<(String, String, Fields)> {
    let [object_type, object_id, fields] = row else {
        return Err(backend("meta_objects row has the wrong number of columns"));
    };
    let fields = serde_json::from_str(&text(fields)?).map_err(backend)?;
    Ok((text(object_type)?, text(object_id)?, fields))
}

fn rows_of(object_type: &str, object_id: &str, fields: Fields) -> impl Iterator<Item = MetaRow> {
    let (object_type, object_id) = (object_type.to_owned(), object_id.to_owned());
    fields.into_iter().map(move |(key, value)| MetaRow {
        key: MetaKey {
            object_type: object_type.clone(),
            object_id: object_id.clone(),
            key,
        },
        value,
    })
}

/// One open database and the undo log of the batch being applied.
struct Tx<'a> {
    glue: &'a mut Glue<MemoryStorage>,
    undo: Vec<(RowKey, Option<Row>)>,
}

impl Tx<'_> {
    fn run(&mut self, sql: &str, params: Vec<ParamLiteral>) -> StorageResult<Payload> {
        let mut payloads = self
            .glue
            .execute_with_params(sql, params)
            .map_err(backend)?;
        payloads
            .pop()
            .ok_or_else(|| backend("GlueSQL returned no result"))
    }

    fn select(&mut self, sql: &str, params: Vec<ParamLiteral>) -> StorageResult<Vec<Vec<Value>>> {
        match self.run(sql, params)? {
            Payload::Select { rows, .. } => Ok(rows),
            other => Err(backend(format!("expected rows, got {other:?}"))),
        }
    }

    fn record_by_token(&mut self, token: &str) -> StorageResult<Option<Record>> {
        let rows = self.select(
            &format!("SELECT {RECORD_COLUMNS} FROM records WHERE token = $1"),
            vec![token.into_param_literal()],
        )?;
        rows.first().map(|r| record_from(r)).transpose()
    }

    fn token_of_id(&mut self, id: &str) -> StorageResult<Option<String>> {
        let rows = self.select(
            "SELECT token FROM record_ids WHERE id = $1",
            vec![id.into_param_literal()],
        )?;
        rows.first().map(|r| first_text(r)).transpose()
    }

    fn record_by_id(&mut self, id: &str) -> StorageResult<Option<Record>> {
        match self.token_of_id(id)? {
            Some(token) => self.record_by_token(&token),
            None => Ok(None),
        }
    }

    /// The records with these keys (tokens or ids, by `lookup`), each once, missing ones left out.
    fn records_by(
        &mut self,
        keys: &[String],
        lookup: fn(&mut Self, &str) -> StorageResult<Option<Record>>,
    ) -> StorageResult<Vec<Record>> {
        let mut out: Vec<Record> = Vec::with_capacity(keys.len());
        for key in keys {
            if let Some(record) = lookup(self, key)?
                && !out.iter().any(|r| r.id == record.id)
            {
                out.push(record);
            }
        }
        Ok(out)
    }

    /// `records_by`, each record with its identity link.
    fn stored_by(
        &mut self,
        keys: &[String],
        lookup: fn(&mut Self, &str) -> StorageResult<Option<Record>>,
    ) -> StorageResult<Vec<StoredRecord>> {
        let records = self.records_by(keys, lookup)?;
        records.into_iter().map(|r| self.with_link(r)).collect()
    }

    fn object(&mut self, o: &str) -> StorageResult<Option<(String, String, Fields)>> {
        let rows = self.select(
            "SELECT object_type, object_id, fields FROM meta_objects WHERE o = $1",
            vec![o.into_param_literal()],
        )?;
        rows.first().map(|r| object_from(r)).transpose()
    }

    fn fields(&mut self, object_type: &str, object_id: &str) -> StorageResult<Fields> {
        Ok(self
            .object(&object_pk(object_type, object_id))?
            .map(|(_, _, f)| f)
            .unwrap_or_default())
    }

    fn objects_of_type(
        &mut self,
        object_type: &str,
    ) -> StorageResult<Vec<(String, String, Fields)>> {
        let rows = self.select(
            "SELECT object_type, object_id, fields FROM meta_objects WHERE object_type = $1",
            vec![object_type.into_param_literal()],
        )?;
        rows.iter().map(|r| object_from(r)).collect()
    }

    fn index_entry(&mut self, v: &str) -> StorageResult<Option<(i64, String)>> {
        let rows = self.select(
            "SELECT n, o FROM meta_index WHERE v = $1",
            vec![v.into_param_literal()],
        )?;
        match rows.first().map(Vec::as_slice) {
            Some([n, o]) => Ok(Some((int(n)?, text(o)?))),
            Some(_) => Err(backend("meta_index row has the wrong number of columns")),
            None => Ok(None),
        }
    }

    fn with_link(&mut self, record: Record) -> StorageResult<StoredRecord> {
        let link = link_key(&record.id);
        let identity_id = self
            .fields(&link.object_type, &link.object_id)?
            .remove(&link.key);
        Ok(StoredRecord {
            record,
            identity_id,
        })
    }

    /// Records the filter names by token or id, or else the records its soft-delete and expiry
    /// conditions select (evaluated by GlueSQL, so only matching rows are copied out). Either way
    /// the caller applies the shared filter to the candidates.
    fn candidates(&mut self, filter: &RecordFilter, now: i64) -> StorageResult<Vec<Record>> {
        if let Some(tokens) = filter.candidate_tokens() {
            return self.records_by(&tokens, Self::record_by_token);
        }
        if let Some(ids) = filter.candidate_ids() {
            return self.records_by(&ids, Self::record_by_id);
        }
        let deleted = match filter.soft_deleted {
            SoftDeleted::Exclude => "soft_deleted_at IS NULL",
            SoftDeleted::Only => "soft_deleted_at IS NOT NULL",
            SoftDeleted::Include => "TRUE",
        };
        // Expired means now > expires_at (API.md); a NULL expiry never is.
        let expired = if filter.expired_only {
            "expires_at IS NOT NULL AND expires_at < $1"
        } else {
            "$1 = $1"
        };
        let rows = self.select(
            &format!("SELECT {RECORD_COLUMNS} FROM records WHERE {deleted} AND {expired}"),
            vec![now.into_param_literal()],
        )?;
        rows.iter().map(|r| record_from(r)).collect()
    }

    /// Objects of `object_type` with a row `key` = `value`, found through `meta_index`.
    fn find_objects(
        &mut self,
        object_type: &str,
        key: &str,
        value: &str,
    ) -> StorageResult<Vec<(String, String, Fields)>> {
        match self.index_entry(&index_pk(object_type, key, value))? {
            None => Ok(vec![]),
            Some((1, o)) => Ok(self.object(&o)?.into_iter().collect()),
            // Many holders (the links of one identity): one scan of that object type.
            Some(_) => Ok(self
                .objects_of_type(object_type)?
                .into_iter()
                .filter(|(_, _, f)| f.get(key).is_some_and(|v| v == value))
                .collect()),
        }
    }

    // ---- writes: every one goes through `write_row`, which remembers the before-image ----

    fn current(&mut self, key: &RowKey) -> StorageResult<Option<Row>> {
        Ok(match key {
            RowKey::Record(token) => self.record_by_token(token)?.map(Row::Record),
            RowKey::RecordId(id) => self.token_of_id(id)?.map(|token| Row::RecordId {
                id: id.clone(),
                token,
            }),
            RowKey::MetaObject(o) => {
                self.object(o)?
                    .map(|(object_type, object_id, fields)| Row::MetaObject {
                        object_type,
                        object_id,
                        fields,
                    })
            }
            RowKey::MetaIndex(v) => {
                self.index_entry(v)?
                    .map(|(n, o)| Row::MetaIndex { v: v.clone(), n, o })
            }
        })
    }

    fn write_row(&mut self, key: RowKey, row: Option<Row>) -> StorageResult<()> {
        let before = self.current(&key)?;
        self.undo.push((key.clone(), before));
        self.raw_write(&key, row)
    }

    /// Replace (or remove) one row, without touching the undo log.
    fn raw_write(&mut self, key: &RowKey, row: Option<Row>) -> StorageResult<()> {
        let (table, pk) = match key {
            RowKey::Record(t) => ("records", t),
            RowKey::RecordId(id) => ("record_ids", id),
            RowKey::MetaObject(o) => ("meta_objects", o),
            RowKey::MetaIndex(v) => ("meta_index", v),
        };
        // GlueSQL 0.20 runs every DELETE through a scan that clones the whole table, so a point
        // delete goes through its keyed storage API instead (O(log n); rows of a table with a
        // PRIMARY KEY are keyed by that column's value).
        self.glue
            .storage
            .delete_data(table, vec![Key::Str(pk.clone())])
            .map_err(backend)?;
        // INSERTs name no columns: with a column list GlueSQL checks uniqueness by scanning the
        // table; without one it checks the primary key by lookup. Values follow SCHEMA's order.
        let (sql, params) = match row {
            None => return Ok(()),
            Some(Row::Record(r)) => (
                "INSERT INTO records VALUES ($1, $2, $3, $4, $5, $6, $7)".to_owned(),
                vec![
                    r.token.into_param_literal(),
                    r.id.into_param_literal(),
                    r.value.into_param_literal(),
                    r.created_at.into_param_literal(),
                    r.updated_at.into_param_literal(),
                    r.expires_at.into_param_literal(),
                    r.soft_deleted_at.into_param_literal(),
                ],
            ),
            Some(Row::RecordId { id, token }) => (
                "INSERT INTO record_ids VALUES ($1, $2)".to_owned(),
                vec![id.into_param_literal(), token.into_param_literal()],
            ),
            Some(Row::MetaObject {
                object_type,
                object_id,
                fields,
            }) => (
                "INSERT INTO meta_objects VALUES ($1, $2, $3, $4)".to_owned(),
                vec![
                    object_pk(&object_type, &object_id).into_param_literal(),
                    object_type.into_param_literal(),
                    object_id.into_param_literal(),
                    serde_json::to_string(&fields)
                        .map_err(backend)?
                        .into_param_literal(),
                ],
            ),
            Some(Row::MetaIndex { v, n, o }) => (
                "INSERT INTO meta_index VALUES ($1, $2, $3)".to_owned(),
                vec![
                    v.into_param_literal(),
                    n.into_param_literal(),
                    o.into_param_literal(),
                ],
            ),
        };
        self.run(&sql, params).map(drop)
    }

    fn rollback(&mut self) {
        while let Some((key, before)) = self.undo.pop() {
            // Restoring a before-image repeats statements that already succeeded on these very
            // rows; if GlueSQL failed here the database would be unusable anyway.
            let _ = self.raw_write(&key, before);
        }
    }

    fn write_object(
        &mut self,
        object_type: &str,
        object_id: &str,
        fields: Fields,
    ) -> StorageResult<()> {
        let row = (!fields.is_empty()).then(|| Row::MetaObject {
            object_type: object_type.to_owned(),
            object_id: object_id.to_owned(),
            fields,
        });
        self.write_row(RowKey::MetaObject(object_pk(object_type, object_id)), row)
    }

    fn put_meta(&mut self, row: MetaRow, must_be_new: bool) -> StorageResult<()> {
        let MetaKey {
            object_type,
            object_id,
            key,
        } = &row.key;
        let mut fields = self.fields(object_type, object_id)?;
        let old = fields.get(key).cloned();
        if must_be_new && old.is_some() {
            return Err(StorageError::MetaTaken(row.key));
        }
        if old.as_deref() == Some(row.value.as_str()) {
            return Ok(());
        }
        let v = index_pk(object_type, key, &row.value);
        let n = self.index_entry(&v)?.map_or(0, |(n, _)| n);
        if n > 0 && is_unique_meta(&row.key) {
            return Err(StorageError::UniqueValueTaken(row.key));
        }
        if let Some(old) = old {
            self.unindex(object_type, object_id, key, &old)?;
        }
        let o = object_pk(object_type, object_id);
        self.write_row(
            RowKey::MetaIndex(v.clone()),
            Some(Row::MetaIndex { v, n: n + 1, o }),
        )?;
        fields.insert(key.clone(), row.value.clone());
        self.write_object(object_type, object_id, fields)
    }

    fn delete_meta(&mut self, key: &MetaKey) -> StorageResult<()> {
        let mut fields = self.fields(&key.object_type, &key.object_id)?;
        if let Some(old) = fields.remove(&key.key) {
            self.unindex(&key.object_type, &key.object_id, &key.key, &old)?;
            self.write_object(&key.object_type, &key.object_id, fields)?;
        }
        Ok(())
    }

    fn unindex(
        &mut self,
        object_type: &str,
        object_id: &str,
        key: &str,
        value: &str,
    ) -> StorageResult<()> {
        let v = index_pk(object_type, key, value);
        let this = object_pk(object_type, object_id);
        let next = match self.index_entry(&v)? {
            Some((n, o)) if n > 1 => {
                // `o` is read only when a single row holds the value (`find_objects`), so it must
                // be exact when the count drops to one; while several rows hold it, a stale `o`
                // is harmless and saves a scan per change (a relink of k records stays O(k)).
                let o = if n == 2 {
                    self.find_objects(object_type, key, value)?
                        .into_iter()
                        .map(|(t, id, _)| object_pk(&t, &id))
                        .find(|other| *other != this)
                        .unwrap_or_default()
                } else {
                    o
                };
                Some(Row::MetaIndex {
                    v: v.clone(),
                    n: n - 1,
                    o,
                })
            }
            _ => None,
        };
        self.write_row(RowKey::MetaIndex(v), next)
    }

    fn apply_op(&mut self, op: WriteOp) -> StorageResult<()> {
        match op {
            WriteOp::InsertRecord(record) => {
                if self.record_by_token(&record.token)?.is_some() {
                    return Err(StorageError::TokenTaken(record.token));
                }
                if self.token_of_id(&record.id)?.is_some() {
                    return Err(StorageError::IdTaken(record.id));
                }
                let (id, token) = (record.id.clone(), record.token.clone());
                self.write_row(
                    RowKey::RecordId(id.clone()),
                    Some(Row::RecordId {
                        id,
                        token: token.clone(),
                    }),
                )?;
                self.write_row(RowKey::Record(token), Some(Row::Record(record)))
            }
            WriteOp::UpdateRecord {
                record,
                expect_value,
            } => {
                let current = self
                    .record_by_id(&record.id)?
                    .ok_or_else(|| StorageError::RecordMissing(record.id.clone()))?;
                if current.token != record.token {
                    return Err(backend("a record's token cannot change"));
                }
                if expect_value.is_some_and(|v| v != current.value) {
                    return Err(StorageError::Changed(record.id));
                }
                self.write_row(
                    RowKey::Record(record.token.clone()),
                    Some(Row::Record(record)),
                )
            }
            WriteOp::DeleteRecord { id } => match self.token_of_id(&id)? {
                Some(token) => {
                    self.write_row(RowKey::Record(token), None)?;
                    self.write_row(RowKey::RecordId(id), None)
                }
                None => Ok(()),
            },
            WriteOp::InsertMeta(row) => self.put_meta(row, true),
            WriteOp::PutMeta(row) => self.put_meta(row, false),
            WriteOp::DeleteMeta(key) => self.delete_meta(&key),
            WriteOp::DeleteObjectIfUnreferenced {
                object_type,
                object_id,
                referrer_type,
                referrer_key,
            } => {
                let referrers = index_pk(&referrer_type, &referrer_key, &object_id);
                if self.index_entry(&referrers)?.is_none_or(|(n, _)| n == 0) {
                    for key in self.fields(&object_type, &object_id)?.into_keys() {
                        self.delete_meta(&MetaKey {
                            object_type: object_type.clone(),
                            object_id: object_id.clone(),
                            key,
                        })?;
                    }
                }
                Ok(())
            }
            WriteOp::ExpectEmpty => {
                let records = self.select("SELECT id FROM record_ids LIMIT 1", vec![])?;
                let meta = self.select(
                    "SELECT o FROM meta_objects WHERE object_type <> $1 LIMIT 1",
                    vec![object_type::VAULT.into_param_literal()],
                )?;
                if records.is_empty() && meta.is_empty() {
                    Ok(())
                } else {
                    Err(StorageError::NotEmpty)
                }
            }
            WriteOp::ClearAll => {
                for key in self.all_keys()? {
                    self.write_row(key, None)?;
                }
                Ok(())
            }
        }
    }

    fn all_keys(&mut self) -> StorageResult<Vec<RowKey>> {
        let mut keys = Vec::new();
        for (sql, make) in [
            (
                "SELECT token FROM records",
                RowKey::Record as fn(String) -> RowKey,
            ),
            ("SELECT id FROM record_ids", RowKey::RecordId),
            ("SELECT o FROM meta_objects", RowKey::MetaObject),
            ("SELECT v FROM meta_index", RowKey::MetaIndex),
        ] {
            for row in self.select(sql, vec![])? {
                keys.push(make(first_text(&row)?));
            }
        }
        Ok(keys)
    }
}

impl GlueMemoryStorage {
    /// A new, empty database.
    pub fn new() -> StorageResult<Self> {
        let mut glue = Glue::new(MemoryStorage::default());
        glue.execute(SCHEMA).map_err(backend)?;
        Ok(GlueMemoryStorage {
            glue: Mutex::new(Some(glue)),
        })
    }

    /// Run `f` on the open database. Every call is synchronous, so holding the lock for its whole
    /// length makes each trait method atomic with respect to every other.
    fn with<T>(&self, f: impl FnOnce(&mut Tx<'_>) -> StorageResult<T>) -> StorageResult<T> {
        let mut guard: MutexGuard<'_, Option<Glue<MemoryStorage>>> = self
            .glue
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let glue = guard.as_mut().ok_or(StorageError::Closed)?;
        let mut tx = Tx {
            glue,
            undo: Vec::new(),
        };
        f(&mut tx)
    }

    /// The plan GlueSQL makes for a token lookup; a test checks it takes the primary-key path.
    #[doc(hidden)]
    pub fn explain_token_lookup(&self) -> StorageResult<String> {
        self.with(|tx| {
            let plans = tx
                .glue
                .plan_with_params(
                    format!("SELECT {RECORD_COLUMNS} FROM records WHERE token = $1"),
                    vec!["tk_x".into_param_literal()],
                )
                .map_err(backend)?;
            Ok(format!("{plans:?}"))
        })
    }
}

#[cfg_attr(target_arch = "wasm32", async_trait(?Send))]
#[cfg_attr(not(target_arch = "wasm32"), async_trait)]
impl Storage for GlueMemoryStorage {
    async fn records_by_tokens(&self, tokens: &[String]) -> StorageResult<Vec<StoredRecord>> {
        self.with(|tx| tx.stored_by(tokens, Tx::record_by_token))
    }

    async fn records_by_ids(&self, ids: &[String]) -> StorageResult<Vec<StoredRecord>> {
        self.with(|tx| tx.stored_by(ids, Tx::record_by_id))
    }

    async fn query_records(&self, filter: &RecordFilter, now: i64) -> StorageResult<Vec<Record>> {
        self.with(|tx| Ok(filter.apply(tx.candidates(filter, now)?, now)))
    }

    async fn count_records(&self, filter: &RecordFilter, now: i64) -> StorageResult<u64> {
        self.with(|tx| {
            Ok(tx
                .candidates(filter, now)?
                .iter()
                .filter(|r| filter.matches(r, now))
                .count() as u64)
        })
    }

    async fn scan_records(
        &self,
        after_id: Option<&str>,
        limit: usize,
    ) -> StorageResult<Vec<StoredRecord>> {
        self.with(|tx| {
            // Ids are compared by GlueSQL's own text order in both the WHERE and the ORDER BY,
            // so paging never skips or repeats a record whatever characters the ids hold.
            let rows = tx.select(
                "SELECT id FROM record_ids WHERE id > $1 ORDER BY id LIMIT $2",
                vec![
                    after_id.unwrap_or("").into_param_literal(),
                    (limit as u64).into_param_literal(),
                ],
            )?;
            let ids = rows
                .iter()
                .map(|row| first_text(row))
                .collect::<StorageResult<Vec<_>>>()?;
            tx.stored_by(&ids, Tx::record_by_id)
        })
    }

    async fn meta_get(&self, key: &MetaKey) -> StorageResult<Option<String>> {
        self.with(|tx| {
            Ok(tx
                .fields(&key.object_type, &key.object_id)?
                .remove(&key.key))
        })
    }

    async fn meta_object(&self, object_type: &str, object_id: &str) -> StorageResult<Vec<MetaRow>> {
        self.with(|tx| {
            Ok(rows_of(object_type, object_id, tx.fields(object_type, object_id)?).collect())
        })
    }

    async fn meta_find(
        &self,
        object_type: &str,
        key: &str,
        value: &str,
    ) -> StorageResult<Vec<MetaRow>> {
        self.with(|tx| {
            let mut rows: Vec<MetaRow> = tx
                .find_objects(object_type, key, value)?
                .into_iter()
                .flat_map(|(t, id, fields)| rows_of(&t, &id, fields).collect::<Vec<_>>())
                .collect();
            rows.sort();
            Ok(rows)
        })
    }

    async fn meta_all(&self) -> StorageResult<Vec<MetaRow>> {
        self.with(|tx| {
            let objects = tx.select(
                "SELECT object_type, object_id, fields FROM meta_objects",
                vec![],
            )?;
            let mut rows = Vec::new();
            for object in objects {
                let (t, id, fields) = object_from(&object)?;
                rows.extend(rows_of(&t, &id, fields));
            }
            rows.sort();
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

    async fn close(&self) {
        let mut guard = self.glue.lock().unwrap_or_else(|p| p.into_inner());
        *guard = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_lookups_take_the_primary_key_path() {
        let storage = GlueMemoryStorage::new().unwrap();
        let plan = storage.explain_token_lookup().unwrap();
        assert!(
            plan.contains("PrimaryKey"),
            "token lookups must not scan: {plan}"
        );
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
