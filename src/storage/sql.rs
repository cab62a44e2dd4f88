//! SQL backend (feature `sql`): the vault in any SQLite-dialect database the host can reach
//! (Cloudflare D1, Durable Object SQLite storage, libSQL/Turso, better-sqlite3, ...), through a
//! small executor the host supplies ([`SqlExecutor`]). FORMAT.md "SQL tables" is the schema.
//!
//! Every trait method is one statement (reads) or one atomic batch (writes). Each op's
//! precondition is a statement of that batch, so it is checked inside the transaction that
//! applies it, which is what D1 needs (it has no interactive transactions): a failed check
//! inserts a row that a named CHECK constraint of `vaultstore_guard` refuses, the error aborts
//! the batch, and [`classify`] maps the constraint's name (or the UNIQUE index that refused a
//! taken token or id) to the same [`StorageError`] the other backends return.
//!
//! Schema 2 (storage.rs "What a store keeps for sync"): every statement that writes a replicated
//! row stamps its revisions, a seq and a dirty mark in the same statement (`sql/write.rs`); the
//! next seq is one above the greatest of the tables' `(ns, seq)` indexes, or the floor
//! `vaultstore_seq` keeps across `ClearAll`. Tombstones live in `vaultstore_tombstones`.
//!
//! Runs of ops of one kind become one statement over a JSON array (`json_each(?)`), so a batch
//! of 10,000 records is a few statements and never more than a handful of bound parameters
//! (D1 allows 100 per statement, and 2 MB per string: arrays are cut at [`MAX_JSON_PARAM`]).
//! Caller strings only ever travel as bound parameters, never in SQL text.
//!
//! Strings sort by UTF-16 code units (API.md) while SQLite compares UTF-8 bytes. The two orders
//! differ only between U+E000..U+FFFF and the supplementary planes, so the `id_key` and
//! `token_key` columns hold the string with those two ranges swapped ([`sort_key`]): valid
//! UTF-8 whose byte order is the UTF-16 order, equal to the string itself when it has no
//! character at or above U+E000 (every generated token and id).

use super::{
    Change, MetaFind, MetaKey, MetaRow, Optimistic, Purge, RecordChange, Row, RowKey, Stamp,
    Storage, StorageError, StorageResult, Stored, WriteOp, WriteTransaction, is_replicated,
    is_unique_meta,
};
use crate::query::{OrderBy, RecordFilter, SoftDeleted};
use crate::record::{Record, RecordRevs};
use crate::sync::{MetaVersion, RecordVersion, Rev, Tombstone, TombstoneReason};
use async_trait::async_trait;
use serde_json::{Value as Json, json};
use std::borrow::Cow;
use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};

// How a batch becomes statements, and the statements themselves.
mod write;
use write::*;

/// A value bound to, or read from, a statement. Times are integer milliseconds (all below 2^53,
/// so JavaScript numbers carry them exactly).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SqlValue {
    Null,
    Integer(i64),
    Text(String),
    Blob(Vec<u8>),
}

impl From<&str> for SqlValue {
    fn from(s: &str) -> Self {
        SqlValue::Text(s.to_owned())
    }
}

impl From<String> for SqlValue {
    fn from(s: String) -> Self {
        SqlValue::Text(s)
    }
}

impl From<i64> for SqlValue {
    fn from(n: i64) -> Self {
        SqlValue::Integer(n)
    }
}

/// One statement of a batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Statement {
    pub sql: String,
    pub params: Vec<SqlValue>,
}

impl Statement {
    fn new(sql: &str, params: Vec<SqlValue>) -> Self {
        Statement {
            sql: sql.to_owned(),
            params,
        }
    }
}

/// What the database (or the executor) threw: its error name when it has one (`"Error"`,
/// `"LibsqlError"`, ...) and its message, in which SQLite names a failed constraint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SqlError {
    pub name: Option<String>,
    pub message: String,
    /// What the executor threw, kept for JavaScript's `error.cause`.
    pub original: crate::error::Original,
}

/// How the backend reaches a database: the host supplies it (API.md "The SQL backend").
#[cfg_attr(target_arch = "wasm32", async_trait(?Send))]
#[cfg_attr(not(target_arch = "wasm32"), async_trait)]
pub trait SqlExecutor: super::MaybeSendSync {
    /// Run one statement and return its rows, each a list of column values in select order.
    async fn all(&self, sql: &str, params: &[SqlValue]) -> Result<Vec<Vec<SqlValue>>, SqlError>;
    /// Run every statement in order in one transaction: all of them, or (on any error) none.
    async fn batch(&self, statements: Vec<Statement>) -> Result<(), SqlError>;
}

#[cfg_attr(target_arch = "wasm32", async_trait(?Send))]
#[cfg_attr(not(target_arch = "wasm32"), async_trait)]
impl<E: SqlExecutor + ?Sized> SqlExecutor for Box<E> {
    async fn all(&self, sql: &str, params: &[SqlValue]) -> Result<Vec<Vec<SqlValue>>, SqlError> {
        (**self).all(sql, params).await
    }
    async fn batch(&self, statements: Vec<Statement>) -> Result<(), SqlError> {
        (**self).batch(statements).await
    }
}

#[cfg_attr(target_arch = "wasm32", async_trait(?Send))]
#[cfg_attr(not(target_arch = "wasm32"), async_trait)]
impl<E: SqlExecutor + ?Sized> SqlExecutor for std::sync::Arc<E> {
    async fn all(&self, sql: &str, params: &[SqlValue]) -> Result<Vec<Vec<SqlValue>>, SqlError> {
        (**self).all(sql, params).await
    }
    async fn batch(&self, statements: Vec<Statement>) -> Result<(), SqlError> {
        (**self).batch(statements).await
    }
}

/// The default namespace (API.md: `name` defaults to `"vaultstore"`).
pub const DEFAULT_NAMESPACE: &str = "vaultstore";

/// The schema version this release writes. `vaultstore_schema` holds the database's.
pub const SCHEMA_VERSION: i64 = 2;

/// The largest JSON array bound to one statement, in bytes (D1 refuses strings over 2 MB).
pub const MAX_JSON_PARAM: usize = 1_000_000;

/// "Never expires", as `expires_key` stores it: above every time a JavaScript `Date` can hold,
/// and exact as a JavaScript number.
pub const NEVER: i64 = 9_007_199_254_740_991;

/// The schema history: `MIGRATIONS[n]` takes a database from version `n` to `n + 1`, in one
/// batch with the version row. Never edit a released entry; append one.
pub const MIGRATIONS: &[&[&str]] = &[&[
    "CREATE TABLE IF NOT EXISTS vaultstore_records (
        ns TEXT NOT NULL,
        id TEXT NOT NULL,
        token TEXT NOT NULL,
        value TEXT NOT NULL,
        created_at INTEGER NOT NULL,
        updated_at INTEGER NOT NULL,
        expires_at INTEGER,
        soft_deleted_at INTEGER,
        id_key TEXT NOT NULL,
        token_key TEXT NOT NULL,
        expires_key INTEGER NOT NULL GENERATED ALWAYS AS (coalesce(expires_at, 9007199254740991)) VIRTUAL,
        CONSTRAINT vaultstore_records_id UNIQUE (ns, id_key),
        CONSTRAINT vaultstore_records_token UNIQUE (ns, token_key)
    )",
    "CREATE INDEX IF NOT EXISTS vaultstore_records_created ON vaultstore_records (ns, created_at, id_key)",
    "CREATE INDEX IF NOT EXISTS vaultstore_records_updated ON vaultstore_records (ns, updated_at, id_key)",
    "CREATE INDEX IF NOT EXISTS vaultstore_records_expires ON vaultstore_records (ns, expires_key, id_key)",
    "CREATE INDEX IF NOT EXISTS vaultstore_records_deleted ON vaultstore_records (ns, soft_deleted_at) WHERE soft_deleted_at IS NOT NULL",
    "CREATE TABLE IF NOT EXISTS vaultstore_meta (
        ns TEXT NOT NULL,
        object_type TEXT NOT NULL,
        object_id TEXT NOT NULL,
        key TEXT NOT NULL,
        value TEXT NOT NULL,
        PRIMARY KEY (ns, object_type, object_id, key)
    )",
    "CREATE INDEX IF NOT EXISTS vaultstore_meta_value ON vaultstore_meta (ns, object_type, key, value)",
    // `UNIQUE_META_VALUES`: an identity tag is unique in a vault (FORMAT.md).
    "CREATE UNIQUE INDEX IF NOT EXISTS vaultstore_meta_unique_tag ON vaultstore_meta (ns, object_type, key, value)
        WHERE object_type = 'password_identity' AND key = 'tag'",
    // Never holds a row: inserting one is how a batch fails a precondition (module docs).
    "CREATE TABLE IF NOT EXISTS vaultstore_guard (
        failed TEXT,
        CONSTRAINT vaultstore_record_missing CHECK (failed IS NOT 'record_missing'),
        CONSTRAINT vaultstore_record_changed CHECK (failed IS NOT 'record_changed'),
        CONSTRAINT vaultstore_meta_changed CHECK (failed IS NOT 'meta_changed'),
        CONSTRAINT vaultstore_not_empty CHECK (failed IS NOT 'not_empty')
    )",
    "CREATE TABLE IF NOT EXISTS vaultstore_schema (
        id INTEGER PRIMARY KEY CHECK (id = 1),
        version INTEGER NOT NULL
    )",
], &[
    // Schema 2 (storage.rs "What a store keeps for sync"). Rows written before keep `''`
    // revisions (read as synthesized); the link move and the seq backfill below write them.
    "ALTER TABLE vaultstore_records ADD COLUMN password_id TEXT",
    "ALTER TABLE vaultstore_records ADD COLUMN value_rev TEXT NOT NULL DEFAULT ''",
    "ALTER TABLE vaultstore_records ADD COLUMN seal_rev TEXT NOT NULL DEFAULT ''",
    "ALTER TABLE vaultstore_records ADD COLUMN expires_rev TEXT NOT NULL DEFAULT ''",
    "ALTER TABLE vaultstore_records ADD COLUMN deleted_rev TEXT NOT NULL DEFAULT ''",
    "ALTER TABLE vaultstore_records ADD COLUMN seq INTEGER NOT NULL DEFAULT 0",
    "ALTER TABLE vaultstore_records ADD COLUMN dirty INTEGER",
    "ALTER TABLE vaultstore_meta ADD COLUMN rev TEXT NOT NULL DEFAULT ''",
    "ALTER TABLE vaultstore_meta ADD COLUMN seq INTEGER NOT NULL DEFAULT 0",
    "ALTER TABLE vaultstore_meta ADD COLUMN dirty INTEGER",
    // A record's tombstone: kind 'record', k1 its id. A meta row's: kind 'meta', k1..k3 its
    // object type, object id and key.
    "CREATE TABLE vaultstore_tombstones (
        ns TEXT NOT NULL,
        kind TEXT NOT NULL,
        k1 TEXT NOT NULL,
        k2 TEXT NOT NULL,
        k3 TEXT NOT NULL,
        rev TEXT NOT NULL,
        deleted_at INTEGER NOT NULL,
        reason TEXT,
        seq INTEGER NOT NULL,
        dirty INTEGER,
        PRIMARY KEY (ns, kind, k1, k2, k3)
    )",
    // The floor of a namespace's seqs, kept when `ClearAll` removes the rows holding them (the
    // next seq is otherwise one above the greatest any row holds; `sql/write.rs` `seq_base!`).
    "CREATE TABLE vaultstore_seq (
        ns TEXT PRIMARY KEY,
        floor INTEGER NOT NULL
    )",
    // The link move, driven by the link rows, so only linked records are rewritten (the
    // upsert of `APPLY_CHANGES`, which every planner runs link first). `id_key` is the id
    // itself unless the id holds a character at or above U+E000 (`sort_key`); links to such
    // ids (never generated; a snapshot may carry one) are matched on `id` instead.
    "INSERT INTO vaultstore_records
        (ns, id, token, value, created_at, updated_at, id_key, token_key, password_id)
    SELECT r.ns, r.id, r.token, r.value, r.created_at, r.updated_at, r.id_key, r.token_key, l.value
    FROM vaultstore_meta AS l
    CROSS JOIN vaultstore_records AS r ON r.ns = l.ns AND r.id_key = substr(l.object_id, 3)
    WHERE l.object_type = 'record' AND l.key = 'password_id' AND l.object_id GLOB 'r_*'
        AND l.object_id NOT GLOB '*[\u{e000}-\u{10ffff}]*'
    ON CONFLICT (ns, id_key) DO UPDATE SET password_id = excluded.password_id",
    "INSERT INTO vaultstore_records
        (ns, id, token, value, created_at, updated_at, id_key, token_key, password_id)
    SELECT r.ns, r.id, r.token, r.value, r.created_at, r.updated_at, r.id_key, r.token_key, l.value
    FROM vaultstore_meta AS l
    CROSS JOIN vaultstore_records AS r ON r.ns = l.ns AND r.id = substr(l.object_id, 3)
    WHERE l.object_type = 'record' AND l.key = 'password_id' AND l.object_id GLOB 'r_*'
        AND l.object_id GLOB '*[\u{e000}-\u{10ffff}]*'
    ON CONFLICT (ns, id_key) DO UPDATE SET password_id = excluded.password_id",
    "DELETE FROM vaultstore_meta WHERE object_type = 'record' AND key = 'password_id'",
    // The seq backfill: every replicated row gets a distinct seq of at least 1, so a full push
    // and a first pull (`changes_since(0, …)`, seqs above 0) see it. Records take their rowid
    // (unique in the table, so in each namespace; SQLite gives every inserted row a positive
    // one), replicated meta rows theirs above every record's; local rows (`is_replicated`: the
    // vault state, the `kdf` setting, `sync/*`) keep seq 0. Not dirty: nothing was written here
    // since. The next seq is one above the greatest (`sql/write.rs` `seq_base!`), and both
    // happen before the indexes on `seq` exist.
    "UPDATE vaultstore_records SET seq = rowid",
    "UPDATE vaultstore_meta SET seq = rowid + (SELECT coalesce(max(rowid), 0) FROM vaultstore_records)
    WHERE object_type <> 'sync' AND NOT (object_type = 'vault'
        AND (object_id = 'state' OR (object_id = 'settings' AND key = 'kdf')))",
    // Unique tags are checked by local writes now (`UNIQUE_META_VALUES`): a merge may store two.
    "DROP INDEX IF EXISTS vaultstore_meta_unique_tag",
    // SQLite cannot add a CHECK to a table: the guard (never holding a row) is made again.
    "DROP TABLE vaultstore_guard",
    "CREATE TABLE vaultstore_guard (
        failed TEXT,
        CONSTRAINT vaultstore_record_missing CHECK (failed IS NOT 'record_missing'),
        CONSTRAINT vaultstore_record_changed CHECK (failed IS NOT 'record_changed'),
        CONSTRAINT vaultstore_meta_changed CHECK (failed IS NOT 'meta_changed'),
        CONSTRAINT vaultstore_not_empty CHECK (failed IS NOT 'not_empty'),
        CONSTRAINT vaultstore_id_taken CHECK (failed IS NOT 'id_taken'),
        CONSTRAINT vaultstore_unique_taken CHECK (failed IS NOT 'unique_taken')
    )",
    // The created and updated orders' indexes end with the soft-delete state, so a page that
    // leaves the trash out (or reads only it) steps over its offset in the index alone instead
    // of reading the row of every record it passes (`deferred_rowids`).
    "DROP INDEX vaultstore_records_created",
    "CREATE INDEX vaultstore_records_created
        ON vaultstore_records (ns, created_at, id_key, soft_deleted_at)",
    "DROP INDEX vaultstore_records_updated",
    "CREATE INDEX vaultstore_records_updated
        ON vaultstore_records (ns, updated_at, id_key, soft_deleted_at)",
    "CREATE INDEX vaultstore_records_seq ON vaultstore_records (ns, seq)",
    "CREATE INDEX vaultstore_records_identity ON vaultstore_records (ns, password_id, id_key)
        WHERE password_id IS NOT NULL",
    "CREATE INDEX vaultstore_records_dirty ON vaultstore_records (ns, dirty)
        WHERE dirty IS NOT NULL",
    "CREATE INDEX vaultstore_meta_seq ON vaultstore_meta (ns, seq)",
    "CREATE INDEX vaultstore_meta_dirty ON vaultstore_meta (ns, dirty) WHERE dirty IS NOT NULL",
    "CREATE INDEX vaultstore_tombstones_seq ON vaultstore_tombstones (ns, seq)",
    "CREATE INDEX vaultstore_tombstones_dirty ON vaultstore_tombstones (ns, dirty)
        WHERE dirty IS NOT NULL",
    // How many records a namespace holds, live (deleted 0) and soft-deleted (1): `recordCount`
    // reads one or two rows instead of counting an index. Counted once here, then kept by
    // triggers, so every statement that inserts, deletes or soft-deletes/restores a record
    // (whatever `sql/write.rs` sends, upserts included) moves the count in the same statement.
    "CREATE TABLE vaultstore_counts (
        ns TEXT NOT NULL,
        deleted INTEGER NOT NULL,
        n INTEGER NOT NULL,
        PRIMARY KEY (ns, deleted)
    )",
    "INSERT INTO vaultstore_counts (ns, deleted, n)
    SELECT ns, soft_deleted_at IS NOT NULL, count(*) FROM vaultstore_records GROUP BY 1, 2",
    "CREATE TRIGGER vaultstore_counts_insert AFTER INSERT ON vaultstore_records BEGIN
        INSERT INTO vaultstore_counts (ns, deleted, n)
        VALUES (NEW.ns, NEW.soft_deleted_at IS NOT NULL, 1)
        ON CONFLICT (ns, deleted) DO UPDATE SET n = n + 1;
    END",
    "CREATE TRIGGER vaultstore_counts_delete AFTER DELETE ON vaultstore_records BEGIN
        UPDATE vaultstore_counts SET n = n - 1
        WHERE ns = OLD.ns AND deleted = (OLD.soft_deleted_at IS NOT NULL);
    END",
    "CREATE TRIGGER vaultstore_counts_update AFTER UPDATE OF ns, soft_deleted_at ON vaultstore_records
    WHEN OLD.ns IS NOT NEW.ns OR (OLD.soft_deleted_at IS NULL) <> (NEW.soft_deleted_at IS NULL)
    BEGIN
        UPDATE vaultstore_counts SET n = n - 1
        WHERE ns = OLD.ns AND deleted = (OLD.soft_deleted_at IS NOT NULL);
        INSERT INTO vaultstore_counts (ns, deleted, n)
        VALUES (NEW.ns, NEW.soft_deleted_at IS NOT NULL, 1)
        ON CONFLICT (ns, deleted) DO UPDATE SET n = n + 1;
    END",
]];

const SET_VERSION: &str = "INSERT INTO vaultstore_schema (id, version) VALUES (1, ?1)
    ON CONFLICT (id) DO UPDATE SET version = excluded.version WHERE version < excluded.version";

/// The 12 columns [`record_from`] reads, of a record `r`.
macro_rules! record_column_list {
    () => {
        "r.id, r.token, r.value, r.created_at, r.updated_at, r.expires_at,
    r.soft_deleted_at, r.password_id, r.value_rev, r.seal_rev, r.expires_rev, r.deleted_rev"
    };
}
const RECORD_COLUMNS: &str = record_column_list!();

/// `s` with U+E000..U+FFFF and the supplementary planes swapped, so that SQLite's byte order of
/// the result is JavaScript's UTF-16 order of `s` (module docs). A bijection onto valid strings.
pub fn sort_key(s: &str) -> Cow<'_, str> {
    if !s.chars().any(|c| c >= '\u{e000}') {
        return Cow::Borrowed(s);
    }
    s.chars()
        .map(|c| {
            let cp = c as u32;
            let mapped = match cp {
                0x1_0000.. => cp - 0x1_0000 + 0xe000,
                0xe000..=0xffff => cp + 0x10_0000,
                _ => cp,
            };
            char::from_u32(mapped).unwrap_or(c)
        })
        .collect()
}

// ---------------------------------------------------------------- errors

/// What a failed batch's error message says went wrong.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Failure {
    TokenTaken,
    IdTaken,
    MetaTaken,
    UniqueValueTaken,
    RecordMissing,
    RecordChanged,
    MetaChanged,
    NotEmpty,
}

/// The precondition a database error reports, from the constraint it names. Every engine
/// (SQLite, D1, libSQL, Durable Objects) keeps SQLite's wording inside its own message.
fn classify(message: &str) -> Option<Failure> {
    if let Some(at) = message.find("CHECK constraint failed: ") {
        let rest = &message[at + "CHECK constraint failed: ".len()..];
        let name: &str = rest
            .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .next()
            .unwrap_or("");
        return match name {
            "vaultstore_record_missing" => Some(Failure::RecordMissing),
            "vaultstore_record_changed" => Some(Failure::RecordChanged),
            "vaultstore_meta_changed" => Some(Failure::MetaChanged),
            "vaultstore_not_empty" => Some(Failure::NotEmpty),
            "vaultstore_id_taken" => Some(Failure::IdTaken),
            "vaultstore_unique_taken" => Some(Failure::UniqueValueTaken),
            _ => None,
        };
    }
    if message.contains("UNIQUE constraint failed") {
        if message.contains("vaultstore_records.token_key") {
            return Some(Failure::TokenTaken);
        }
        if message.contains("vaultstore_records.id_key") {
            return Some(Failure::IdTaken);
        }
        if message.contains("vaultstore_meta.value") {
            return Some(Failure::UniqueValueTaken);
        }
        if message.contains("vaultstore_meta.") {
            return Some(Failure::MetaTaken);
        }
    }
    None
}

fn backend(doing: &str, e: SqlError) -> StorageError {
    StorageError::Backend {
        original: e.original,
        name: Some(e.name.unwrap_or_else(|| "SqlError".to_owned())),
        message: format!("the SQL database refused to {doing}: {}", e.message),
    }
}

fn not_ours(what: &str) -> StorageError {
    StorageError::Backend {
        original: Default::default(),
        name: Some("DataError".to_owned()),
        message: format!("the SQL database holds {what} that vaultstore did not write"),
    }
}

// ---------------------------------------------------------------- rows

fn text(v: SqlValue, what: &str) -> StorageResult<String> {
    match v {
        SqlValue::Text(s) => Ok(s),
        _ => Err(not_ours(&format!("a {what} that is not text"))),
    }
}

fn int(v: SqlValue, what: &str) -> StorageResult<i64> {
    match v {
        SqlValue::Integer(n) => Ok(n),
        _ => Err(not_ours(&format!("a {what} that is not an integer"))),
    }
}

fn opt_int(v: SqlValue, what: &str) -> StorageResult<Option<i64>> {
    match v {
        SqlValue::Null => Ok(None),
        v => int(v, what).map(Some),
    }
}

fn opt_text(v: SqlValue, what: &str) -> StorageResult<Option<String>> {
    match v {
        SqlValue::Null => Ok(None),
        v => text(v, what).map(Some),
    }
}

/// A stored revision; `''` (a row written before schema 2) reads as `unset`.
fn rev(v: SqlValue, unset: Rev) -> StorageResult<Rev> {
    let s = text(v, "revision")?;
    if s.is_empty() {
        return Ok(unset);
    }
    Rev::parse(&s).map_err(|_| not_ours("a revision that is not 32 lowercase hex digits"))
}

fn seq(v: SqlValue) -> StorageResult<u64> {
    u64::try_from(int(v, "sequence number")?).map_err(|_| not_ours("a negative sequence number"))
}

/// A record from the 12 columns of [`RECORD_COLUMNS`].
fn record_from(row: Vec<SqlValue>) -> StorageResult<Record> {
    let Ok::<[SqlValue; 12], _>(
        [
            id,
            token,
            value,
            created,
            updated,
            expires,
            deleted,
            password_id,
            value_rev,
            seal_rev,
            expires_rev,
            deleted_rev,
        ],
    ) = row.try_into()
    else {
        return Err(not_ours("a record row with the wrong number of columns"));
    };
    let created_at = int(created, "creation time")?;
    let synthesized = RecordRevs::synthesized(created_at);
    Ok(Record {
        id: text(id, "record id")?,
        token: text(token, "token")?,
        value: text(value, "record value")?,
        created_at,
        updated_at: int(updated, "update time")?,
        expires_at: opt_int(expires, "expiry time")?,
        soft_deleted_at: opt_int(deleted, "soft-delete time")?,
        password_id: opt_text(password_id, "identity link")?,
        revs: RecordRevs {
            value: rev(value_rev, synthesized.value)?,
            seal: rev(seal_rev, synthesized.seal)?,
            expires: rev(expires_rev, synthesized.expires)?,
            deleted: rev(deleted_rev, synthesized.deleted)?,
        },
    })
}

/// One row of the change feeds ([`feed_statement`]): its kind, seq (or dirty mark), then the
/// row's columns.
fn change_from(row: Vec<SqlValue>) -> StorageResult<Change> {
    let mut columns = row.into_iter();
    let (Some(kind), Some(n)) = (columns.next(), columns.next()) else {
        return Err(not_ours("a change row with the wrong number of columns"));
    };
    let rest: Vec<SqlValue> = columns.collect();
    let seq = seq(n)?;
    let kind = text(kind, "change kind")?;
    let row = match kind.as_str() {
        "record" => {
            let record = record_from(rest)?;
            Row::Record {
                id: record.id.clone(),
                version: RecordVersion::Live(record.to_live()),
            }
        }
        _ => {
            let Ok::<[SqlValue; 6], _>([k1, k2, k3, value, deleted_at, rev_text]) =
                rest.into_iter().take(6).collect::<Vec<_>>().try_into()
            else {
                return Err(not_ours("a change row with the wrong number of columns"));
            };
            match kind.as_str() {
                "meta" => Row::Meta {
                    key: MetaKey {
                        object_type: text(k1, "meta object type")?,
                        object_id: text(k2, "meta object id")?,
                        key: text(k3, "meta key")?,
                    },
                    version: MetaVersion::Value {
                        rev: rev(rev_text, Rev::ZERO)?,
                        value: text(value, "meta value")?,
                    },
                },
                "gone_meta" => Row::Meta {
                    key: MetaKey {
                        object_type: text(k1, "meta object type")?,
                        object_id: text(k2, "meta object id")?,
                        key: text(k3, "meta key")?,
                    },
                    version: MetaVersion::Gone {
                        rev: rev(rev_text, Rev::ZERO)?,
                        deleted_at: int(deleted_at, "deletion time")?,
                        emptied: opt_text(value, "tombstone reason")?.as_deref() == Some("emptied"),
                    },
                },
                "gone_record" => {
                    let reason = match text(value, "tombstone reason")?.as_str() {
                        "deleted" => TombstoneReason::Deleted,
                        "displaced" => TombstoneReason::Displaced,
                        _ => return Err(not_ours("a tombstone with an unknown reason")),
                    };
                    Row::Record {
                        id: text(k1, "record id")?,
                        version: RecordVersion::Gone(Tombstone {
                            rev: rev(rev_text, Rev::ZERO)?,
                            deleted_at: int(deleted_at, "deletion time")?,
                            reason,
                        }),
                    }
                }
                _ => return Err(not_ours("a tombstone of an unknown kind")),
            }
        }
    };
    Ok(Change { seq, row })
}

fn meta_from(row: Vec<SqlValue>) -> StorageResult<MetaRow> {
    let Ok::<[SqlValue; 4], _>([object_type, object_id, key, value]) = row.try_into() else {
        return Err(not_ours("a meta row with the wrong number of columns"));
    };
    Ok(MetaRow {
        key: MetaKey {
            object_type: text(object_type, "meta object type")?,
            object_id: text(object_id, "meta object id")?,
            key: text(key, "meta key")?,
        },
        value: text(value, "meta value")?,
    })
}

fn count_from(rows: Vec<Vec<SqlValue>>) -> StorageResult<u64> {
    let n = rows
        .into_iter()
        .next()
        .and_then(|row| row.into_iter().next())
        .map_or(Ok(0), |v| int(v, "count"))?;
    Ok(u64::try_from(n).unwrap_or(0))
}

/// JSON arrays of `items`, each at most [`MAX_JSON_PARAM`] bytes (an item larger than that
/// goes alone), in order.
fn json_chunks(items: impl IntoIterator<Item = Json>) -> Vec<String> {
    json_chunk_pairs(items.into_iter().map(|item| (item, Json::Null)))
        .into_iter()
        .map(|(chunk, _)| chunk)
        .collect()
}

/// `keys` without duplicates, in order, as the JSON arrays of [`KeyColumn::driven_by`].
fn key_chunks(keys: &[String]) -> Vec<String> {
    let mut unique: Vec<&String> = keys.iter().collect();
    crate::sorting::sort(&mut unique);
    unique.dedup();
    json_chunks(unique.into_iter().map(|k| Json::from(sort_key(k))))
}

/// The record of each of `keys` (by `column`) among `found`, in the order of `keys`.
fn in_order_of(column: KeyColumn, keys: &[String], found: Vec<Record>) -> Vec<Option<Record>> {
    let by_key: HashMap<&str, &Record> = found
        .iter()
        .map(|r| match column {
            KeyColumn::Token => (r.token.as_str(), r),
            KeyColumn::Id => (r.id.as_str(), r),
        })
        .collect();
    keys.iter()
        .map(|k| by_key.get(k.as_str()).map(|r| (*r).clone()))
        .collect()
}

/// Two JSON arrays built in step, for a check and the write it guards: item `i` of each chunk's
/// first array and of its second describe the same op, and a chunk is cut when either array
/// would outgrow [`MAX_JSON_PARAM`]. Each statement gets only the fields it reads, instead of
/// both statements binding one array of every field (a rotation's batch held, and sent, each
/// value and the value it replaces twice). `Json::Null` items leave the second array empty.
fn json_chunk_pairs(items: impl IntoIterator<Item = (Json, Json)>) -> Vec<(String, String)> {
    fn push(array: &mut String, encoded: &str) {
        array.push(if array.is_empty() { '[' } else { ',' });
        array.push_str(encoded);
    }
    fn close(array: &mut String) -> String {
        if !array.is_empty() {
            array.push(']');
        }
        // A string grown a push at a time has up to twice its length in capacity, and a batch
        // holds every chunk until it is sent.
        array.shrink_to_fit();
        std::mem::take(array)
    }
    let mut chunks = Vec::new();
    let (mut first, mut second) = (String::new(), String::new());
    for (a, b) in items {
        let a = a.to_string();
        let b = (!b.is_null()).then(|| b.to_string());
        let over = |array: &String, len: usize| array.len() + len + 2 > MAX_JSON_PARAM;
        if !first.is_empty()
            && (over(&first, a.len()) || over(&second, b.as_ref().map_or(0, String::len)))
        {
            chunks.push((close(&mut first), close(&mut second)));
        }
        push(&mut first, &a);
        if let Some(b) = b {
            push(&mut second, &b);
        }
    }
    if !first.is_empty() {
        chunks.push((close(&mut first), close(&mut second)));
    }
    chunks
}

fn meta_json(row: &MetaRow) -> Json {
    json!({
        "type": row.key.object_type, "id": row.key.object_id, "key": row.key.key,
        "value": row.value, "rep": is_replicated(&row.key),
    })
}

fn meta_key_json(key: &MetaKey, value: Option<&str>) -> Json {
    json!({ "type": key.object_type, "id": key.object_id, "key": key.key, "value": value })
}

// ---------------------------------------------------------------- the backend

/// The SQL backend over one executor, in one namespace of its database.
pub struct SqlStorage<E: SqlExecutor> {
    executor: E,
    ns: String,
    closed: AtomicBool,
}

impl<E: SqlExecutor> std::fmt::Debug for SqlStorage<E> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqlStorage")
            .field("ns", &self.ns)
            .finish_non_exhaustive()
    }
}

impl<E: SqlExecutor> SqlStorage<E> {
    /// Open the namespace `namespace` of the executor's database, creating or upgrading the
    /// tables first when they are missing or older (idempotent: any number of isolates may open
    /// a new database at once).
    pub async fn open(executor: E, namespace: &str) -> StorageResult<Self> {
        let storage = SqlStorage {
            executor,
            ns: namespace.to_owned(),
            closed: AtomicBool::new(false),
        };
        storage.migrate().await?;
        Ok(storage)
    }

    /// The database's schema version (0: no tables yet).
    pub async fn schema_version(&self) -> StorageResult<i64> {
        // A missing table is an error in every engine; any other failure shows again, named,
        // when the migration batch runs.
        match self
            .executor
            .all("SELECT version FROM vaultstore_schema WHERE id = 1", &[])
            .await
        {
            Ok(rows) => match rows.into_iter().next().and_then(|r| r.into_iter().next()) {
                Some(v) => int(v, "schema version"),
                None => Ok(0),
            },
            Err(_) => Ok(0),
        }
    }

    async fn migrate(&self) -> StorageResult<()> {
        let version = self.schema_version().await?;
        let latest = MIGRATIONS.len() as i64;
        if version > latest {
            return Err(StorageError::Backend {
                original: Default::default(),
                name: Some("VersionError".to_owned()),
                message: format!(
                    "the SQL database holds vaultstore tables of schema version {version}, written by a newer release; this release knows versions up to {latest}. Upgrade vaultstore-wasm"
                ),
            });
        }
        if version == latest {
            return Ok(());
        }
        let mut statements = Vec::new();
        for step in &MIGRATIONS[usize::try_from(version).unwrap_or(0)..] {
            statements.extend(step.iter().map(|sql| Statement::new(sql, vec![])));
        }
        statements.push(Statement::new(SET_VERSION, vec![SqlValue::Integer(latest)]));
        match self.executor.batch(statements).await {
            Ok(()) => Ok(()),
            // Another isolate migrated first: steps that cannot run twice (`ALTER TABLE … ADD
            // COLUMN`) failed here and rolled this batch back, and the database is current.
            Err(_) if self.schema_version().await? == latest => Ok(()),
            Err(e) => Err(backend(
                if version == 0 {
                    "create the vaultstore tables"
                } else {
                    "upgrade the vaultstore tables"
                },
                e,
            )),
        }
    }

    fn ensure_open(&self) -> StorageResult<()> {
        if self.closed.load(Ordering::SeqCst) {
            Err(StorageError::Closed)
        } else {
            Ok(())
        }
    }

    async fn all(
        &self,
        doing: &str,
        sql: &str,
        params: Vec<SqlValue>,
    ) -> StorageResult<Vec<Vec<SqlValue>>> {
        self.ensure_open()?;
        self.executor
            .all(sql, &params)
            .await
            .map_err(|e| backend(doing, e))
    }

    /// Records whose token or id is one of `keys`, each looked up through its unique index
    /// (one statement per [`MAX_JSON_PARAM`] of keys).
    async fn records_where_in(
        &self,
        column: KeyColumn,
        keys: &[String],
    ) -> StorageResult<Vec<Record>> {
        let sql = format!("SELECT {RECORD_COLUMNS}{}", column.driven_by(2));
        let mut found = Vec::new();
        for chunk in key_chunks(keys) {
            for row in self
                .all(
                    "read records",
                    &sql,
                    vec![self.ns.as_str().into(), chunk.into()],
                )
                .await?
            {
                found.push(record_from(row)?);
            }
        }
        Ok(found)
    }

    async fn lookup(
        &self,
        column: KeyColumn,
        keys: &[String],
    ) -> StorageResult<Vec<Option<Record>>> {
        if keys.is_empty() {
            self.ensure_open()?;
            return Ok(vec![]);
        }
        let found = self.records_where_in(column, keys).await?;
        Ok(in_order_of(column, keys, found))
    }

    /// A filter naming more tokens or ids than one parameter holds: its records looked up in
    /// chunks, then filtered, ordered and paged by the shared filter.
    async fn named_in_chunks(&self, filter: &RecordFilter) -> StorageResult<Vec<Record>> {
        let (column, keys) = match (filter.candidate_tokens(), filter.candidate_ids()) {
            (Some(tokens), _) => (KeyColumn::Token, tokens),
            (None, Some(ids)) => (KeyColumn::Id, ids),
            (None, None) => return Ok(vec![]),
        };
        self.records_where_in(column, &keys).await
    }

    /// Up to `limit` changes whose `column` (`seq`, or `dirty` for the dirty marks) is above
    /// `after`, in its order: each table's first `limit` through its `(ns, column)` index,
    /// merged.
    async fn feed(
        &self,
        doing: &str,
        column: &str,
        after: u64,
        limit: usize,
    ) -> StorageResult<Vec<Change>> {
        if limit == 0 {
            self.ensure_open()?;
            return Ok(vec![]);
        }
        self.all(
            doing,
            &feed_statement(column),
            vec![
                self.ns.as_str().into(),
                SqlValue::Integer(i64::try_from(after).unwrap_or(i64::MAX)),
                SqlValue::Integer(i64::try_from(limit).unwrap_or(i64::MAX)),
            ],
        )
        .await?
        .into_iter()
        .map(change_from)
        .collect()
    }
}

/// The change feed over `column` (`seq` or `dirty`): `?1` the namespace, `?2` the mark to read
/// after, `?3` the limit. Every row has 14 columns: its kind, its mark, then a record's
/// [`RECORD_COLUMNS`], or a meta row's or tombstone's keys, value (a tombstone's reason),
/// `deletedAt` and revision.
fn feed_statement(column: &str) -> String {
    format!(
        "SELECT * FROM (SELECT 'record', r.{column}, {RECORD_COLUMNS}
            FROM vaultstore_records AS r WHERE r.ns = ?1 AND r.{column} > ?2
            ORDER BY r.{column} LIMIT ?3)
        UNION ALL
        SELECT * FROM (SELECT 'meta', m.{column}, m.object_type, m.object_id, m.key, m.value,
                NULL, m.rev, NULL, NULL, NULL, NULL, NULL, NULL
            FROM vaultstore_meta AS m WHERE m.ns = ?1 AND m.{column} > ?2
            ORDER BY m.{column} LIMIT ?3)
        UNION ALL
        SELECT * FROM (SELECT 'gone_' || t.kind, t.{column}, t.k1, t.k2, t.k3, t.reason,
                t.deleted_at, t.rev, NULL, NULL, NULL, NULL, NULL, NULL
            FROM vaultstore_tombstones AS t WHERE t.ns = ?1 AND t.{column} > ?2
            ORDER BY t.{column} LIMIT ?3)
        ORDER BY 2 LIMIT ?3"
    )
}

/// The records of the tokens in the JSON array `?2` (as [`KeyColumn::driven_by`]), then every
/// row of the meta objects of type `?3` with a row `?4` = `?5` (as `meta_find`), in one
/// statement: 13 columns, `'record'` or `'meta'` first, then a record's [`RECORD_COLUMNS`] or
/// a meta row's four columns and NULLs.
fn records_and_meta_statement() -> String {
    format!(
        "SELECT 'record', {RECORD_COLUMNS}{}
        UNION ALL
        SELECT 'meta', m.object_type, m.object_id, m.key, m.value,
                NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL
            FROM vaultstore_meta AS m WHERE m.ns = ?1 AND m.object_type = ?3 AND m.object_id IN (
                SELECT object_id FROM vaultstore_meta
                WHERE ns = ?1 AND object_type = ?3 AND key = ?4 AND value = ?5)",
        KeyColumn::Token.driven_by(2)
    )
}

/// How many records of namespace `?1` are linked to an identity, and how many to identity `?2`:
/// both counted in the partial index `vaultstore_records_identity`.
const LINKED_COUNT: &str =
    "SELECT count(*) FROM vaultstore_records WHERE ns = ?1 AND password_id IS NOT NULL";
const IDENTITY_COUNT: &str =
    "SELECT count(*) FROM vaultstore_records WHERE ns = ?1 AND password_id = ?2";

/// The versions of the keys in the JSON array `?2` (each `{i, kind, key, k1, k2, k3}`, from
/// [`row_key_json`]), each through its table's unique index: rows of 16 columns, the key's
/// place `i`, the dirty mark, then a [`feed_statement`] row (kind, seq, columns).
const VERSIONS: &str = concat!(
    "SELECT k.value->>'i', r.dirty, 'record', r.seq, ",
    record_column_list!(),
    "
    FROM json_each(?2) AS k
    CROSS JOIN vaultstore_records AS r ON r.ns = ?1 AND r.id_key = k.value->>'key'
    WHERE k.value->>'kind' = 'record'
UNION ALL
SELECT k.value->>'i', m.dirty, 'meta', m.seq, m.object_type, m.object_id, m.key, m.value,
        NULL, m.rev, NULL, NULL, NULL, NULL, NULL, NULL
    FROM json_each(?2) AS k
    CROSS JOIN vaultstore_meta AS m ON m.ns = ?1 AND m.object_type = k.value->>'k1'
        AND m.object_id = k.value->>'k2' AND m.key = k.value->>'k3'
    WHERE k.value->>'kind' = 'meta'
UNION ALL
SELECT k.value->>'i', t.dirty, 'gone_' || t.kind, t.seq, t.k1, t.k2, t.k3, t.reason,
        t.deleted_at, t.rev, NULL, NULL, NULL, NULL, NULL, NULL
    FROM json_each(?2) AS k
    CROSS JOIN vaultstore_tombstones AS t ON t.ns = ?1 AND t.kind = k.value->>'kind'
        AND t.k1 = k.value->>'k1' AND t.k2 = k.value->>'k2' AND t.k3 = k.value->>'k3'"
);

/// A row key as the version statements read it: `kind` (`record` or `meta`, the tombstone's
/// kind too), a record's `key` (its `id_key`), and the tombstone's `k1`..`k3`.
fn row_key_json(key: &RowKey) -> Json {
    match key {
        RowKey::Record(id) => {
            json!({ "kind": "record", "key": sort_key(id), "k1": id, "k2": "", "k3": "" })
        }
        RowKey::Meta(key) => json!({
            "kind": "meta", "k1": key.object_type, "k2": key.object_id, "k3": key.key,
        }),
    }
}

#[derive(Clone, Copy)]
enum KeyColumn {
    Token,
    Id,
}

impl KeyColumn {
    /// `FROM` the records named by the JSON array `?n` of keys, each found through its unique
    /// index: the array drives the join (`CROSS JOIN` fixes the order), so a query naming ten
    /// tokens reads ten rows, never the namespace.
    fn driven_by(self, n: usize) -> String {
        let column = match self {
            KeyColumn::Token => "token_key",
            KeyColumn::Id => "id_key",
        };
        format!(
            " FROM json_each(?{n}) AS k CROSS JOIN vaultstore_records AS r ON r.ns = ?1 AND r.{column} = k.value"
        )
    }
}

/// The `FROM` and `WHERE` of a query for `filter` at `now`, with its parameters (`?1` is the
/// namespace), or `None` when a list it names does not fit one parameter.
fn select_from(ns: &str, filter: &RecordFilter, now: i64) -> Option<(String, Vec<SqlValue>)> {
    let mut params: Vec<SqlValue> = vec![ns.into()];
    let array = |params: &mut Vec<SqlValue>, keys: &[String]| -> Option<usize> {
        let mut chunks = json_chunks(keys.iter().map(|k| Json::from(sort_key(k))));
        if chunks.len() > 1 {
            return None;
        }
        params.push(chunks.pop().unwrap_or_else(|| "[]".to_owned()).into());
        Some(params.len())
    };
    let mut sql = match (filter.candidate_tokens(), filter.candidate_ids()) {
        (Some(tokens), _) => KeyColumn::Token.driven_by(array(&mut params, &tokens)?),
        (None, Some(ids)) => KeyColumn::Id.driven_by(array(&mut params, &ids)?),
        (None, None) => " FROM vaultstore_records AS r".to_owned(),
    };
    sql.push_str(" WHERE r.ns = ?1");
    let lists = [
        ("token_key", &filter.token, &filter.token_in),
        ("id_key", &filter.id, &filter.id_in),
    ];
    for (column, one, many) in lists {
        if let Some(v) = one {
            params.push(sort_key(v).into_owned().into());
            sql.push_str(&format!(" AND r.{column} = ?{}", params.len()));
        }
        if let Some(vs) = many {
            let n = array(&mut params, vs)?;
            sql.push_str(&format!(
                " AND r.{column} IN (SELECT value FROM json_each(?{n}))"
            ));
        }
    }
    match filter.soft_deleted {
        SoftDeleted::Exclude => sql.push_str(" AND r.soft_deleted_at IS NULL"),
        SoftDeleted::Include => {}
        SoftDeleted::Only => sql.push_str(" AND r.soft_deleted_at IS NOT NULL"),
    }
    if filter.expired_only {
        // Expired is `now > expiresAt`; "never" is NEVER, above every `now`.
        params.push(SqlValue::Integer(now));
        sql.push_str(&format!(" AND r.expires_key < ?{}", params.len()));
    }
    Some((sql, params))
}

fn order_clause(filter: &RecordFilter) -> String {
    let dir = if filter.descending { "DESC" } else { "ASC" };
    match filter.order_by {
        OrderBy::CreatedAt => format!(" ORDER BY r.created_at {dir}, r.id_key {dir}"),
        OrderBy::UpdatedAt => format!(" ORDER BY r.updated_at {dir}, r.id_key {dir}"),
        OrderBy::ExpiresAt => format!(" ORDER BY r.expires_key {dir}, r.id_key {dir}"),
        // Tokens are unique: no tie to break.
        OrderBy::Token => format!(" ORDER BY r.token_key {dir}"),
        OrderBy::Id => format!(" ORDER BY r.id_key {dir}"),
    }
}

/// The statement of [`Storage::query_records`] for `filter` at `now`.
fn query_statement(ns: &str, filter: &RecordFilter, now: i64) -> Option<(String, Vec<SqlValue>)> {
    if let Some(page) = trash_page(ns, filter, now).or_else(|| deferred_page(ns, filter, now)) {
        return Some(page);
    }
    let (from, mut params) = select_from(ns, filter, now)?;
    let limit = filter
        .limit
        .map_or(-1, |l| i64::try_from(l).unwrap_or(i64::MAX));
    let offset = i64::try_from(filter.offset).unwrap_or(i64::MAX);
    params.push(SqlValue::Integer(limit));
    params.push(SqlValue::Integer(offset));
    let n = params.len();
    let sql = format!(
        "SELECT {RECORD_COLUMNS}{from}{} LIMIT ?{} OFFSET ?{n}",
        order_clause(filter),
        n - 1
    );
    Some((sql, params))
}

/// How many records of namespace `?1` are in `state`, from the per-state counts the triggers
/// keep in `vaultstore_counts` (no record or index entry read).
fn counted(state: SoftDeleted) -> String {
    let deleted = match state {
        SoftDeleted::Exclude => "deleted = 0",
        SoftDeleted::Only => "deleted = 1",
        SoftDeleted::Include => "deleted IN (0, 1)",
    };
    format!("SELECT coalesce(sum(n), 0) FROM vaultstore_counts WHERE ns = ?1 AND {deleted}")
}

/// Whether `order`'s index ends with `soft_deleted_at` (schema 2), so that a walk of it tests
/// the soft-delete state on the index entry, reading no row: the creation and update orders'.
/// The token and id orders' are the keys' unique indexes, which cannot take the column.
fn index_holds_state(order: OrderBy) -> bool {
    matches!(order, OrderBy::CreatedAt | OrderBy::UpdatedAt)
}

/// A page past the start of a listing that only the soft-delete state filters, found in the order's
/// index alone (a deferred join): the offset is stepped over in index entries, and only the page's
/// rows are read (the plain statement reads the row of every record it steps over: a page at offset
/// 500,000 of a million records took 476 ms). The created and updated orders' indexes end with
/// `soft_deleted_at` (schema 2), so they answer the filter themselves, trash or none. (Testing the
/// state costs each entry stepped over about a third more: a middle page of 100,000 live records,
/// 2.2 → 3.1 ms. Choosing the unfiltered walk by the counts when there is no trash, as below, took
/// that back but made every page's statement longer to prepare: the last page 0.23 → 0.33 ms,
/// against 0.18 ms with the filter alone.) The token and id orders' are the keys' unique indexes,
/// which do not hold it: their index alone gives the right page when the namespace holds no record
/// of the state the filter leaves out, which [`counted`] tells; when it holds some, the plain
/// statement's page is taken instead. Both arms are one statement, each with its limit set to 0 by
/// the counts when it is not the one that applies (SQLite evaluates a LIMIT once, before its loop),
/// so the choice and the page are one read on every SQL backend, D1 included. A page past the
/// middle of the index is stepped to from its far end (the index walked the other way, the counts
/// giving the listing's length), again chosen by the counts inside the statement. `None` for any
/// other listing, for the first page (the plain statement reads only its own rows) and without a
/// limit (the page is the rest of the vault).
fn deferred_page(ns: &str, filter: &RecordFilter, now: i64) -> Option<(String, Vec<SqlValue>)> {
    let limit = filter.limit?;
    let page = deferred_rowids(ns, filter, now, "?2")?;
    Some(page_of_rowids(&page, filter, ns, limit))
}

/// The rowids of [`deferred_page`]'s page, at most `limit` (an SQL expression) of them.
fn deferred_rowids(ns: &str, filter: &RecordFilter, now: i64, limit: &str) -> Option<String> {
    // The expiry index is on a virtual generated column, which SQLite reads from the row even
    // when an index holds it: that index never covers, so its pages are left to the plain
    // statement.
    if filter.names_records()
        || filter.expired_only
        || filter.offset == 0
        || filter.order_by == OrderBy::ExpiresAt
    {
        return None;
    }
    let order = order_clause(filter);
    let rowids = |from: &str, limit: &str| rowids_page(from, &order, limit);
    // Only the namespace is a parameter of this filter's `FROM`: it is `?1` here too.
    let (plain, _) = select_from(ns, filter, now)?;
    let state_indexed = index_holds_state(filter.order_by);
    let whole = if state_indexed {
        plain.as_str()
    } else {
        " FROM vaultstore_records AS r WHERE r.ns = ?1"
    };
    // A page past the middle of the index is stepped to from its far end: the index walked the
    // other way, past the records after the page (`n`, the listing's length, from the counts;
    // the outer statement puts the page back in order).
    let n = format!("({})", counted(filter.soft_deleted));
    let from_start = format!("?3 * 2 <= {n}");
    let reversed = order_clause(&RecordFilter {
        descending: !filter.descending,
        ..filter.clone()
    });
    let index_page = |limit: &str| {
        format!(
            "SELECT rowid FROM ({}) UNION ALL SELECT rowid FROM (SELECT r.rowid{whole}{reversed} \
             LIMIT CASE WHEN {from_start} THEN 0 ELSE max(0, min({limit}, {n} - ?3)) END \
             OFFSET max(0, {n} - ?3 - ({limit})))",
            rowids(
                whole,
                &format!("CASE WHEN {from_start} THEN {limit} ELSE 0 END")
            ),
        )
    };
    let left_out = match filter.soft_deleted {
        _ if state_indexed => None,
        SoftDeleted::Include => None,
        SoftDeleted::Exclude => Some(SoftDeleted::Only),
        SoftDeleted::Only => Some(SoftDeleted::Exclude),
    };
    Some(match left_out {
        None => index_page(limit),
        Some(left_out) => {
            let none_left_out = format!("({}) = 0", counted(left_out));
            format!(
                "{} UNION ALL SELECT rowid FROM ({})",
                index_page(&format!(
                    "CASE WHEN {none_left_out} THEN {limit} ELSE 0 END"
                )),
                rowids(
                    &plain,
                    &format!("CASE WHEN {none_left_out} THEN 0 ELSE {limit} END")
                ),
            )
        }
    })
}

/// The rowids of a page of the records `from` (a `FROM … WHERE …` of alias `r`) in `order`:
/// at most `limit` (an SQL expression) after the first `?3`.
fn rowids_page(from: &str, order: &str, limit: &str) -> String {
    format!("SELECT r.rowid{from}{order} LIMIT {limit} OFFSET ?3")
}

/// The records whose rowids `page` (a statement with `?1` the namespace, `?2` the limit and
/// `?3` the offset) selects, in `filter`'s order.
fn page_of_rowids(
    page: &str,
    filter: &RecordFilter,
    ns: &str,
    limit: usize,
) -> (String, Vec<SqlValue>) {
    let order = order_clause(filter);
    let sql = format!(
        "SELECT {RECORD_COLUMNS} FROM vaultstore_records AS r WHERE r.rowid IN ({page}){order}"
    );
    let params = vec![
        ns.into(),
        SqlValue::Integer(i64::try_from(limit).unwrap_or(i64::MAX)),
        SqlValue::Integer(i64::try_from(filter.offset).unwrap_or(i64::MAX)),
    ];
    (sql, params)
}

/// A page of soft-deleted records (`softDeletedOnly`) read through the partial index that
/// holds only them, then sorted, when that reads fewer rows than walking the order: SQLite
/// plans the walk down the order's index (it needs no sort), which reads the row of every
/// record it passes to test it, so the trash view of a vault with a few soft-deleted records
/// read nearly every row (in a 200,000-record SQLite file with 20 of them soft-deleted, its
/// first page: 87 ms, against 0.4 ms through the partial index; on D1, rows read are billed).
/// Walking to the page's end passes about (offset + limit) × all ÷ trashed records, reading the
/// trash `trashed`: the cheaper wins, chosen in the statement from the per-state counts as in
/// [`deferred_page`], whose page (or the plain statement's) is the other arm. The creation and
/// update orders' indexes hold the state, so their walk reads index entries, not rows: a row
/// read through the partial index costs about 16 of them (0.85 µs against 0.06 µs, from the
/// SQL bench's pages), and the trash is read only when that is still cheaper. Without a limit,
/// the whole trash is read through the index.
fn trash_page(ns: &str, filter: &RecordFilter, now: i64) -> Option<(String, Vec<SqlValue>)> {
    if filter.soft_deleted != SoftDeleted::Only || filter.names_records() || filter.expired_only {
        return None;
    }
    let order = order_clause(filter);
    let trash = " FROM vaultstore_records AS r INDEXED BY vaultstore_records_deleted \
        WHERE r.ns = ?1 AND r.soft_deleted_at IS NOT NULL";
    let Some(limit) = filter.limit else {
        let offset = i64::try_from(filter.offset).unwrap_or(i64::MAX);
        let sql = format!("SELECT {RECORD_COLUMNS}{trash}{order} LIMIT -1 OFFSET ?2");
        return Some((sql, vec![ns.into(), SqlValue::Integer(offset)]));
    };
    let trashed = format!("({})", counted(SoftDeleted::Only));
    let row_cost = if index_holds_state(filter.order_by) {
        16
    } else {
        1
    };
    let few = format!(
        "{trashed} * {trashed} * {row_cost} <= (?2 + ?3) * ({})",
        counted(SoftDeleted::Include)
    );
    let walk = |limit: &str| match deferred_rowids(ns, filter, now, limit) {
        Some(rowids) => Some(rowids),
        None => {
            let (plain, _) = select_from(ns, filter, now)?;
            Some(rowids_page(&plain, &order, limit))
        }
    };
    let page = format!(
        "SELECT rowid FROM (SELECT r.rowid{trash}{order} LIMIT CASE WHEN {few} THEN ?2 ELSE 0 END \
         OFFSET ?3) UNION ALL SELECT rowid FROM ({})",
        walk(&format!("CASE WHEN {few} THEN 0 ELSE ?2 END"))?
    );
    Some(page_of_rowids(&page, filter, ns, limit))
}

#[cfg_attr(target_arch = "wasm32", async_trait(?Send))]
#[cfg_attr(not(target_arch = "wasm32"), async_trait)]
impl<E: SqlExecutor> Storage for SqlStorage<E> {
    async fn records_by_tokens(&self, tokens: &[String]) -> StorageResult<Vec<Option<Record>>> {
        self.lookup(KeyColumn::Token, tokens).await
    }

    async fn records_by_ids(&self, ids: &[String]) -> StorageResult<Vec<Option<Record>>> {
        self.lookup(KeyColumn::Id, ids).await
    }

    async fn records_by_tokens_and_meta(
        &self,
        tokens: &[String],
        find: MetaFind<'_>,
    ) -> StorageResult<(Vec<Option<Record>>, Vec<MetaRow>)> {
        let mut chunks = key_chunks(tokens);
        let (Some(chunk), true) = (chunks.pop(), chunks.is_empty()) else {
            // No token, or more than one parameter holds: the reads one by one.
            let records = self.lookup(KeyColumn::Token, tokens).await?;
            let rows = self
                .meta_find(find.object_type, find.key, find.value)
                .await?;
            return Ok((records, rows));
        };
        let mut found = Vec::new();
        let mut meta = Vec::new();
        for mut row in self
            .all(
                "read records and identity rows",
                &records_and_meta_statement(),
                vec![
                    self.ns.as_str().into(),
                    chunk.into(),
                    find.object_type.into(),
                    find.key.into(),
                    find.value.into(),
                ],
            )
            .await?
        {
            if row.is_empty() {
                return Err(not_ours("a row without its kind"));
            }
            let kind = text(row.remove(0), "row kind")?;
            if kind == "record" {
                found.push(record_from(row)?);
            } else {
                row.truncate(4);
                meta.push(row);
            }
        }
        Ok((
            in_order_of(KeyColumn::Token, tokens, found),
            sorted_meta(meta)?,
        ))
    }

    async fn query_records(&self, filter: &RecordFilter, now: i64) -> StorageResult<Vec<Record>> {
        let Some((sql, params)) = query_statement(&self.ns, filter, now) else {
            let named = self.named_in_chunks(filter).await?;
            return Ok(filter.apply(named, now));
        };
        self.all("query records", &sql, params)
            .await?
            .into_iter()
            .map(record_from)
            .collect()
    }

    async fn count_records(&self, filter: &RecordFilter, now: i64) -> StorageResult<u64> {
        if !filter.names_records() && !filter.expired_only {
            let sql = counted(filter.soft_deleted);
            return count_from(
                self.all("count records", &sql, vec![self.ns.as_str().into()])
                    .await?,
            );
        }
        let Some((from, params)) = select_from(&self.ns, filter, now) else {
            let named = self.named_in_chunks(filter).await?;
            return Ok(named.iter().filter(|r| filter.matches(r, now)).count() as u64);
        };
        count_from(
            self.all("count records", &format!("SELECT count(*){from}"), params)
                .await?,
        )
    }

    async fn scan_records(
        &self,
        after_id: Option<&str>,
        limit: usize,
    ) -> StorageResult<Vec<Record>> {
        let limit = SqlValue::Integer(i64::try_from(limit).unwrap_or(i64::MAX));
        let ns: SqlValue = self.ns.as_str().into();
        let rows = match after_id {
            Some(id) => {
                self.all(
                    "scan records",
                    &format!(
                        "SELECT {RECORD_COLUMNS}
                         FROM vaultstore_records AS r WHERE r.ns = ?1 AND r.id_key > ?2
                         ORDER BY r.id_key LIMIT ?3"
                    ),
                    vec![ns, sort_key(id).into_owned().into(), limit],
                )
                .await?
            }
            None => {
                self.all(
                    "scan records",
                    &format!(
                        "SELECT {RECORD_COLUMNS}
                         FROM vaultstore_records AS r WHERE r.ns = ?1 ORDER BY r.id_key LIMIT ?2"
                    ),
                    vec![ns, limit],
                )
                .await?
            }
        };
        rows.into_iter().map(record_from).collect()
    }

    async fn meta_get(&self, key: &MetaKey) -> StorageResult<Option<String>> {
        let rows = self
            .all(
                "read a meta row",
                "SELECT value FROM vaultstore_meta
                 WHERE ns = ?1 AND object_type = ?2 AND object_id = ?3 AND key = ?4",
                vec![
                    self.ns.as_str().into(),
                    key.object_type.as_str().into(),
                    key.object_id.as_str().into(),
                    key.key.as_str().into(),
                ],
            )
            .await?;
        match rows.into_iter().next().and_then(|r| r.into_iter().next()) {
            Some(v) => text(v, "meta value").map(Some),
            None => Ok(None),
        }
    }

    async fn meta_object(&self, object_type: &str, object_id: &str) -> StorageResult<Vec<MetaRow>> {
        let rows = self
            .all(
                "read meta rows",
                "SELECT object_type, object_id, key, value FROM vaultstore_meta
                 WHERE ns = ?1 AND object_type = ?2 AND object_id = ?3",
                vec![
                    self.ns.as_str().into(),
                    object_type.into(),
                    object_id.into(),
                ],
            )
            .await?;
        sorted_meta(rows)
    }

    async fn meta_find(
        &self,
        object_type: &str,
        key: &str,
        value: &str,
    ) -> StorageResult<Vec<MetaRow>> {
        let rows = self
            .all(
                "look up meta rows",
                "SELECT object_type, object_id, key, value FROM vaultstore_meta
                 WHERE ns = ?1 AND object_type = ?2 AND object_id IN (
                     SELECT object_id FROM vaultstore_meta
                     WHERE ns = ?1 AND object_type = ?2 AND key = ?3 AND value = ?4)",
                vec![
                    self.ns.as_str().into(),
                    object_type.into(),
                    key.into(),
                    value.into(),
                ],
            )
            .await?;
        sorted_meta(rows)
    }

    async fn meta_count(&self, object_type: &str) -> StorageResult<u64> {
        count_from(
            self.all(
                "count meta rows",
                "SELECT count(*) FROM vaultstore_meta WHERE ns = ?1 AND object_type = ?2",
                vec![self.ns.as_str().into(), object_type.into()],
            )
            .await?,
        )
    }

    async fn meta_all(&self) -> StorageResult<Vec<MetaRow>> {
        let rows = self
            .all(
                "read meta rows",
                "SELECT object_type, object_id, key, value FROM vaultstore_meta WHERE ns = ?1",
                vec![self.ns.as_str().into()],
            )
            .await?;
        sorted_meta(rows)
    }

    async fn records_linked_to(
        &self,
        identity_id: &str,
        after_id: Option<&str>,
        limit: usize,
    ) -> StorageResult<Vec<Record>> {
        let after = after_id.map_or(Cow::Borrowed(""), sort_key).into_owned();
        self.all(
            "read an identity's records",
            &format!(
                "SELECT {RECORD_COLUMNS} FROM vaultstore_records AS r
                 WHERE r.ns = ?1 AND r.password_id = ?2 AND r.id_key > ?3
                 ORDER BY r.id_key LIMIT ?4"
            ),
            vec![
                self.ns.as_str().into(),
                identity_id.into(),
                after.into(),
                SqlValue::Integer(i64::try_from(limit).unwrap_or(i64::MAX)),
            ],
        )
        .await?
        .into_iter()
        .map(record_from)
        .collect()
    }

    async fn changes_since(&self, after_seq: u64, limit: usize) -> StorageResult<Vec<Change>> {
        self.feed("read the changes", "seq", after_seq, limit).await
    }

    async fn dirty_changes(&self, after: u64, limit: usize) -> StorageResult<Vec<Change>> {
        self.feed("read the unsynced changes", "dirty", after, limit)
            .await
    }

    /// One statement per [`MAX_JSON_PARAM`] of keys; local meta rows are never versions, so
    /// their keys are not asked for.
    async fn versions(&self, keys: &[RowKey]) -> StorageResult<Vec<Option<Stored>>> {
        self.ensure_open()?;
        let mut found: Vec<Option<Stored>> = vec![None; keys.len()];
        let asked = keys.iter().enumerate().filter_map(|(i, key)| match key {
            RowKey::Meta(meta) if !is_replicated(meta) => None,
            _ => {
                let mut item = row_key_json(key);
                item["i"] = Json::from(i);
                Some(item)
            }
        });
        for chunk in json_chunks(asked) {
            let rows = self
                .all(
                    "read versions",
                    VERSIONS,
                    vec![self.ns.as_str().into(), chunk.into()],
                )
                .await?;
            for row in rows {
                let mut columns = row.into_iter();
                let (Some(i), Some(dirty)) = (columns.next(), columns.next()) else {
                    return Err(not_ours("a version row with the wrong number of columns"));
                };
                let i = usize::try_from(int(i, "key index")?)
                    .map_err(|_| not_ours("a version row for no key"))?;
                let dirty = opt_int(dirty, "dirty mark")?
                    .map(|d| u64::try_from(d).map_err(|_| not_ours("a negative dirty mark")))
                    .transpose()?;
                let Change { seq, row } = change_from(columns.collect())?;
                let Some(slot) = found.get_mut(i) else {
                    return Err(not_ours("a version row for no key"));
                };
                // A key holds a live row or a tombstone, never both; were both there, the
                // later write is the version.
                if slot.as_ref().is_none_or(|held| held.seq < seq) {
                    *slot = Some(Stored { seq, dirty, row });
                }
            }
        }
        Ok(found)
    }

    /// Both counts read `vaultstore_records_identity` alone (a partial index of the linked
    /// records), never a record row.
    async fn linked_count(&self, identity_id: Option<&str>) -> StorageResult<u64> {
        let rows = match identity_id {
            None => {
                self.all(
                    "count linked records",
                    LINKED_COUNT,
                    vec![self.ns.as_str().into()],
                )
                .await?
            }
            Some(identity_id) => {
                self.all(
                    "count an identity's records",
                    IDENTITY_COUNT,
                    vec![self.ns.as_str().into(), identity_id.into()],
                )
                .await?
            }
        };
        count_from(rows)
    }

    async fn apply(&self, stamp: Stamp, mut batch: Vec<WriteOp>) -> StorageResult<()> {
        self.ensure_open()?;
        if batch.is_empty() {
            return Ok(());
        }
        refuse_local_versions(&batch)?;
        let statements = plan(&self.ns, stamp, &mut batch);
        match self.executor.batch(statements).await {
            Ok(()) => Ok(()),
            Err(e) => match classify(&e.message) {
                Some(failure) => Err(self.diagnose(failure, &batch).await),
                None => Err(backend("write", e)),
            },
        }
    }

    /// One count and one batch per chunk of `limit` records: nothing of them travels to the
    /// isolate, the database finds them through its expiry index, and each batch touches at
    /// most `limit` records (with their links and identities) whatever the backlog.
    async fn purge_expired(
        &self,
        stamp: Stamp,
        purge: Purge,
        limit: usize,
        mut also: Vec<WriteOp>,
    ) -> StorageResult<Option<u64>> {
        self.ensure_open()?;
        refuse_local_versions(&also)?;
        let expired = match purge {
            Purge::SoftDelete => EXPIRED_LIVE,
            Purge::Delete => EXPIRED,
        };
        let ns = || SqlValue::from(self.ns.as_str());
        let limit = SqlValue::Integer(i64::try_from(limit).unwrap_or(i64::MAX));
        let at = stamp.at;
        let chunk = || vec![ns(), SqlValue::Integer(at), limit.clone()];
        let stamped = || {
            let mut params = chunk();
            params.push(stamp.rev.to_string().into());
            params
        };
        let counted = count_from(
            self.all("count expired records", &count_chunk(expired), chunk())
                .await?,
        )?;
        if counted == 0 {
            return Ok(Some(0));
        }
        let mut guarded = chunk();
        guarded.push(SqlValue::Integer(
            i64::try_from(counted).unwrap_or(i64::MAX),
        ));
        let mut statements = vec![Statement::new(&check_purge_count(expired), guarded)];
        match purge {
            Purge::SoftDelete => statements.push(Statement::new(PURGE_SOFT_DELETE, stamped())),
            Purge::Delete => {
                let [tomb_identities, kept, identities] = prune_identities(EXPIRED_CHUNK);
                statements.push(Statement::new(&tomb_identities, stamped()));
                statements.push(Statement::new(&kept, chunk()));
                statements.push(Statement::new(&identities, chunk()));
                statements.push(Statement::new(&tombstone_records(EXPIRED_CHUNK), stamped()));
                statements.push(Statement::new(&delete_records(EXPIRED_CHUNK), chunk()));
            }
        }
        statements.extend(plan(&self.ns, stamp, &mut also));
        match self.executor.batch(statements).await {
            Ok(()) => Ok(Some(counted)),
            Err(e) => Err(match classify(&e.message) {
                Some(Failure::RecordChanged) => {
                    StorageError::Changed("the expired records".to_owned())
                }
                _ => backend("purge expired records", e),
            }),
        }
    }

    /// An executor runs one statement or one batch at a time (D1 has no interactive
    /// transactions), so nothing can hold the database between a plan's reads and its commit:
    /// the plan's guards (the write epoch, `ExpectMeta`, the records' expected values) are
    /// checked inside the commit's transaction, and a stale plan fails there and is made again.
    async fn transaction(&self) -> StorageResult<Box<dyn WriteTransaction + '_>> {
        self.ensure_open()?;
        Ok(Box::new(Optimistic(self)))
    }

    async fn close(&self) {
        self.closed.store(true, Ordering::SeqCst);
    }
}

/// A merge never stores a local meta row (`WriteOp::PutVersion`): it would enter the change
/// feed and leave the store.
fn refuse_local_versions(batch: &[WriteOp]) -> StorageResult<()> {
    let local = batch.iter().any(|op| {
        matches!(op, WriteOp::PutVersion { row, .. } if matches!(&**row, Row::Meta { key, .. } if !is_replicated(key)))
    });
    if local {
        return Err(StorageError::Backend {
            original: Default::default(),
            name: Some("DataError".to_owned()),
            message: "a merge tried to store a local meta row; local rows are never replicated"
                .to_owned(),
        });
    }
    Ok(())
}

fn sorted_meta(rows: Vec<Vec<SqlValue>>) -> StorageResult<Vec<MetaRow>> {
    let mut rows = rows
        .into_iter()
        .map(meta_from)
        .collect::<StorageResult<Vec<_>>>()?;
    crate::sorting::sort(&mut rows);
    Ok(rows)
}

// ---------------------------------------------------------------- naming what failed

/// The first item of `items` that occurs twice.
fn first_duplicate<'a>(items: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    let mut seen = HashSet::new();
    items.into_iter().find(|item| !seen.insert(*item))
}

impl<E: SqlExecutor> SqlStorage<E> {
    /// The first of `ids` a tombstone holds (one statement; `None` also when it fails).
    async fn tombstoned_ids(&self, ids: &[String]) -> Option<String> {
        let array = Json::from(ids.to_vec()).to_string();
        let rows = self
            .all(
                "read tombstones",
                "SELECT t.k1 FROM json_each(?2) AS j
                 CROSS JOIN vaultstore_tombstones AS t ON t.ns = ?1 AND t.kind = 'record'
                     AND t.k1 = j.value AND t.k2 = '' AND t.k3 = ''",
                vec![self.ns.as_str().into(), array.into()],
            )
            .await
            .ok()?;
        let held: HashSet<String> = rows
            .into_iter()
            .filter_map(|row| row.into_iter().next())
            .filter_map(|v| text(v, "record id").ok())
            .collect();
        ids.iter().find(|id| held.contains(*id)).cloned()
    }

    /// The database names the constraint a batch broke, not the row. The batch is rolled back
    /// by now: a single candidate is the answer; among several, the first that fails against
    /// the store as it is now, else the first that conflicts with the batch itself, else the
    /// first. (Reads here that fail only cost the precision of the answer.)
    async fn diagnose(&self, failure: Failure, batch: &[WriteOp]) -> StorageError {
        match failure {
            Failure::NotEmpty => StorageError::NotEmpty,
            Failure::TokenTaken | Failure::IdTaken => {
                let keys: Vec<String> = batch
                    .iter()
                    .filter_map(|op| match (op, failure) {
                        (WriteOp::InsertRecord(r), Failure::TokenTaken) => Some(r.token.clone()),
                        (WriteOp::InsertRecord(r), _) => Some(r.id.clone()),
                        (WriteOp::PutVersion { row, .. }, Failure::TokenTaken) => match &**row {
                            Row::Record {
                                version: RecordVersion::Live(live),
                                ..
                            } => Some(live.token.clone()),
                            _ => None,
                        },
                        _ => None,
                    })
                    .collect();
                let stored = if keys.len() > 1 {
                    match failure {
                        Failure::TokenTaken => self.records_by_tokens(&keys).await,
                        _ => self.records_by_ids(&keys).await,
                    }
                    .ok()
                    .and_then(|found| {
                        keys.iter()
                            .zip(found)
                            .find(|(_, r)| r.is_some())
                            .map(|(k, _)| k.clone())
                    })
                } else {
                    None
                };
                let tombstoned = if keys.len() > 1 && failure == Failure::IdTaken {
                    self.tombstoned_ids(&keys).await
                } else {
                    None
                };
                let named = stored
                    .or(tombstoned)
                    .or_else(|| first_duplicate(keys.iter().map(String::as_str)).map(str::to_owned))
                    .or_else(|| keys.first().cloned())
                    .unwrap_or_default();
                match failure {
                    Failure::TokenTaken => StorageError::TokenTaken(named),
                    _ => StorageError::IdTaken(named),
                }
            }
            Failure::MetaTaken | Failure::UniqueValueTaken => {
                let unique = failure == Failure::UniqueValueTaken;
                let rows: Vec<&MetaRow> = batch
                    .iter()
                    .filter_map(|op| match op {
                        WriteOp::InsertMeta(row) => Some(row),
                        WriteOp::PutMeta(row) if unique => Some(row),
                        _ => None,
                    })
                    .filter(|row| !unique || is_unique_meta(&row.key))
                    .collect();
                let mut named = None;
                if rows.len() > 1 {
                    for row in &rows {
                        let taken = if unique {
                            self.meta_find(&row.key.object_type, &row.key.key, &row.value)
                                .await
                                .is_ok_and(|held| {
                                    held.iter().any(|h| {
                                        h.key.key == row.key.key
                                            && h.value == row.value
                                            && h.key.object_id != row.key.object_id
                                    })
                                })
                        } else {
                            self.meta_get(&row.key).await.is_ok_and(|v| v.is_some())
                        };
                        if taken {
                            named = Some(row.key.clone());
                            break;
                        }
                    }
                }
                let named = named
                    .or_else(|| {
                        let ids: Vec<String> = rows
                            .iter()
                            .map(|r| {
                                if unique {
                                    format!("{}\0{}\0{}", r.key.object_type, r.key.key, r.value)
                                } else {
                                    format!(
                                        "{}\0{}\0{}",
                                        r.key.object_type, r.key.object_id, r.key.key
                                    )
                                }
                            })
                            .collect();
                        let dup = first_duplicate(ids.iter().map(String::as_str))?;
                        let at = ids.iter().rposition(|i| i == dup)?;
                        rows.get(at).map(|r| r.key.clone())
                    })
                    .or_else(|| rows.first().map(|r| r.key.clone()))
                    .unwrap_or_else(|| MetaKey::new("", "", ""));
                if unique {
                    StorageError::UniqueValueTaken(named)
                } else {
                    StorageError::MetaTaken(named)
                }
            }
            Failure::RecordMissing | Failure::RecordChanged => {
                let candidates: Vec<&WriteOp> = batch
                    .iter()
                    .filter(|op| match op {
                        WriteOp::ChangeRecord { change, .. } => {
                            failure == Failure::RecordMissing
                                || matches!(
                                    change,
                                    RecordChange::Reseal { .. }
                                        | RecordChange::Update { .. }
                                        | RecordChange::SoftDelete {
                                            if_expired_at: Some(_)
                                        }
                                )
                        }
                        WriteOp::DeleteRecord { if_expired_at, .. } => {
                            failure == Failure::RecordChanged && if_expired_at.is_some()
                        }
                        WriteOp::ExpectVersion {
                            key: RowKey::Record(_),
                            ..
                        } => failure == Failure::RecordChanged,
                        _ => false,
                    })
                    .collect();
                let id_of = |op: &WriteOp| match op {
                    WriteOp::ChangeRecord { id, .. }
                    | WriteOp::DeleteRecord { id, .. }
                    | WriteOp::ExpectVersion {
                        key: RowKey::Record(id),
                        ..
                    } => id.clone(),
                    _ => String::new(),
                };
                let mut named = None;
                if candidates.len() > 1 {
                    let ids: Vec<String> = candidates.iter().map(|op| id_of(op)).collect();
                    let keys: Vec<RowKey> = ids.iter().cloned().map(RowKey::Record).collect();
                    if let (Ok(found), Ok(versions)) =
                        (self.records_by_ids(&ids).await, self.versions(&keys).await)
                    {
                        named = candidates.iter().zip(found).zip(versions).find_map(
                            |((op, record), version)| {
                                let fails = match (op, record) {
                                    (WriteOp::ExpectVersion { seq, .. }, _) => {
                                        version.map(|v| v.seq) != *seq
                                    }
                                    (WriteOp::ChangeRecord { .. }, None) => {
                                        failure == Failure::RecordMissing
                                    }
                                    (WriteOp::ChangeRecord { change, at, .. }, Some(mut r)) => {
                                        failure == Failure::RecordChanged
                                            && change.apply_to(&mut r, *at, Rev::ZERO).is_err()
                                    }
                                    (WriteOp::DeleteRecord { if_expired_at, .. }, Some(r)) => {
                                        if_expired_at.is_some_and(|now| !r.is_expired(now))
                                    }
                                    _ => false,
                                };
                                fails.then(|| id_of(op))
                            },
                        );
                    }
                }
                let named = named
                    .or_else(|| candidates.first().map(|op| id_of(op)))
                    .unwrap_or_default();
                match failure {
                    Failure::RecordMissing => StorageError::RecordMissing(named),
                    _ => StorageError::Changed(named),
                }
            }
            Failure::MetaChanged => {
                let expected: Vec<&WriteOp> = batch
                    .iter()
                    .filter(|op| {
                        matches!(
                            op,
                            WriteOp::ExpectMeta { .. }
                                | WriteOp::ExpectUnlinked { .. }
                                | WriteOp::ExpectVersion {
                                    key: RowKey::Meta(_),
                                    ..
                                }
                        )
                    })
                    .collect();
                let key_of = |op: &WriteOp| match op {
                    WriteOp::ExpectMeta { key, .. }
                    | WriteOp::ExpectVersion {
                        key: RowKey::Meta(key),
                        ..
                    } => Some(key.clone()),
                    WriteOp::ExpectUnlinked { identity_id } => {
                        Some(super::identity_tag_key(identity_id))
                    }
                    _ => None,
                };
                let mut named = None;
                if expected.len() > 1 {
                    for op in &expected {
                        let stale = match op {
                            WriteOp::ExpectMeta { key, value } => {
                                self.meta_get(key).await.is_ok_and(|now| &now != value)
                            }
                            WriteOp::ExpectVersion { key, seq } => self
                                .versions(std::slice::from_ref(key))
                                .await
                                .is_ok_and(|now| {
                                    now.into_iter().next().flatten().map(|v| v.seq) != *seq
                                }),
                            WriteOp::ExpectUnlinked { identity_id } => self
                                .records_linked_to(identity_id, None, 1)
                                .await
                                .is_ok_and(|linked| !linked.is_empty()),
                            _ => false,
                        };
                        if stale {
                            named = key_of(op);
                            break;
                        }
                    }
                }
                StorageError::MetaChanged(
                    named
                        .or_else(|| expected.first().and_then(|op| key_of(op)))
                        .unwrap_or_else(|| MetaKey::new("", "", "")),
                )
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::query::js_string_cmp;

    #[test]
    fn sort_keys_order_bytes_as_javascript_orders_strings() {
        let samples = [
            "",
            "a",
            "ab",
            "b",
            "\u{0}",
            "a\u{0}",
            "\u{7f}",
            "\u{80}",
            "é",
            "\u{d7ff}",
            "\u{e000}",
            "\u{ff5e}",
            "\u{ffff}",
            "\u{10000}",
            "\u{1f600}",
            "\u{10ffff}",
            "a\u{1f600}",
            "a\u{ff5e}",
            "tk_\u{ff5e}",
            "tk_\u{1f600}",
            "z",
            "\u{fffd}x",
        ];
        for a in samples {
            for b in samples {
                assert_eq!(
                    sort_key(a).as_bytes().cmp(sort_key(b).as_bytes()),
                    js_string_cmp(a, b),
                    "{a:?} vs {b:?}"
                );
            }
        }
        assert!(matches!(sort_key("tk_0123abc"), Cow::Borrowed(_)));
    }

    #[test]
    fn constraint_messages_name_the_failure() {
        let cases = [
            (
                "D1_ERROR: CHECK constraint failed: vaultstore_record_changed: SQLITE_CONSTRAINT",
                Some(Failure::RecordChanged),
            ),
            (
                "CHECK constraint failed: vaultstore_record_missing",
                Some(Failure::RecordMissing),
            ),
            (
                "CHECK constraint failed: vaultstore_meta_changed",
                Some(Failure::MetaChanged),
            ),
            (
                "CHECK constraint failed: vaultstore_not_empty",
                Some(Failure::NotEmpty),
            ),
            (
                "D1_ERROR: CHECK constraint failed: vaultstore_id_taken: SQLITE_CONSTRAINT",
                Some(Failure::IdTaken),
            ),
            (
                "CHECK constraint failed: vaultstore_unique_taken",
                Some(Failure::UniqueValueTaken),
            ),
            ("CHECK constraint failed: something_else", None),
            (
                "UNIQUE constraint failed: vaultstore_records.ns, vaultstore_records.token_key",
                Some(Failure::TokenTaken),
            ),
            (
                "UNIQUE constraint failed: vaultstore_records.ns, vaultstore_records.id_key",
                Some(Failure::IdTaken),
            ),
            (
                "UNIQUE constraint failed: vaultstore_meta.ns, vaultstore_meta.object_type, vaultstore_meta.key, vaultstore_meta.value",
                Some(Failure::UniqueValueTaken),
            ),
            (
                "UNIQUE constraint failed: vaultstore_meta.ns, vaultstore_meta.object_type, vaultstore_meta.object_id, vaultstore_meta.key",
                Some(Failure::MetaTaken),
            ),
            ("no such table: vaultstore_records", None),
        ];
        for (message, expected) in cases {
            assert_eq!(classify(message), expected, "{message}");
        }
    }

    #[test]
    fn json_arrays_are_cut_below_the_parameter_limit() {
        let big = "x".repeat(MAX_JSON_PARAM / 3 - 10);
        let chunks = json_chunks((0..7).map(|_| Json::from(big.as_str())));
        assert_eq!(chunks.len(), 3);
        assert!(chunks.iter().all(|c| c.len() <= MAX_JSON_PARAM));
        let back: Vec<String> = chunks
            .iter()
            .flat_map(|c| serde_json::from_str::<Vec<String>>(c).unwrap())
            .collect();
        assert_eq!(back.len(), 7);
        assert!(json_chunks(std::iter::empty()).is_empty());
    }

    fn stamp() -> Stamp {
        Stamp {
            rev: Rev::new(5, 0, 1).unwrap(),
            at: 5,
        }
    }

    /// A check's array and its write's stay in step: a chunk ends when either would outgrow the
    /// limit, and item `i` of both is the same op.
    #[test]
    fn paired_arrays_are_cut_together_when_either_is_full() {
        let big = "x".repeat(MAX_JSON_PARAM / 3 - 10);
        let pairs = json_chunk_pairs((0..7).map(|i| (Json::from(i), Json::from(big.as_str()))));
        assert_eq!(pairs.len(), 3);
        let mut seen = Vec::new();
        for (first, second) in &pairs {
            assert!(first.len() <= MAX_JSON_PARAM && second.len() <= MAX_JSON_PARAM);
            let ids: Vec<u32> = serde_json::from_str(first).unwrap();
            let values: Vec<String> = serde_json::from_str(second).unwrap();
            assert_eq!(ids.len(), values.len());
            seen.extend(ids);
        }
        assert_eq!(seen, (0..7).collect::<Vec<_>>());
    }

    /// What a user on D1 uploads: each value a batch writes, and each value it expects to
    /// replace, is bound once, not once per statement that reads the batch's array.
    #[test]
    fn a_batch_binds_each_value_once() {
        let reseal = |i: usize| WriteOp::ChangeRecord {
            id: format!("id{i}"),
            change: RecordChange::Reseal {
                expect: format!("old-value-{i}"),
                value: format!("new-value-{i}"),
                password_id: Some("p2".into()),
            },
            at: 5,
        };
        let insert = |i: usize| {
            WriteOp::InsertRecord(Box::new(Record {
                id: format!("new{i}"),
                token: format!("tk_new{i}"),
                value: format!("inserted-value-{i}"),
                created_at: 1,
                updated_at: 1,
                expires_at: None,
                soft_deleted_at: None,
                password_id: None,
                revs: RecordRevs::all(stamp().rev),
            }))
        };
        let mut batch: Vec<WriteOp> = (0..3).map(reseal).chain((0..3).map(insert)).collect();
        let statements = plan("ns", stamp(), &mut batch);
        let bound = |needle: &str| {
            statements
                .iter()
                .flat_map(|s| &s.params)
                .map(|p| match p {
                    SqlValue::Text(t) => t.matches(needle).count(),
                    _ => 0,
                })
                .sum::<usize>()
        };
        for i in 0..3 {
            assert_eq!(bound(&format!("\"old-value-{i}\"")), 1);
            assert_eq!(bound(&format!("\"new-value-{i}\"")), 1);
            assert_eq!(bound(&format!("\"inserted-value-{i}\"")), 1);
        }
        // Once encoded, the new values are in the statements only; what a failed batch's
        // diagnosis reads (ids, tokens, expected values) stays.
        for (i, op) in batch.iter().enumerate() {
            match op {
                WriteOp::ChangeRecord {
                    id,
                    change: RecordChange::Reseal { expect, value, .. },
                    ..
                } => assert!(
                    !id.is_empty() && *expect == format!("old-value-{i}") && value.is_empty()
                ),
                WriteOp::InsertRecord(r) => {
                    assert!(!r.id.is_empty() && !r.token.is_empty() && r.value.is_empty())
                }
                other => panic!("unexpected op {other:?}"),
            }
        }
    }

    #[test]
    fn runs_group_ops_of_one_kind_on_distinct_records() {
        let change = |id: &str| WriteOp::ChangeRecord {
            id: id.into(),
            change: RecordChange::Restore,
            at: 1,
        };
        let mut batch = vec![
            change("a"),
            change("b"),
            change("a"),
            WriteOp::DeleteMeta(MetaKey::new("t", "i", "k")),
            WriteOp::DeleteMeta(MetaKey::new("t", "i", "k2")),
            WriteOp::DeleteMeta(MetaKey::new("vault", "state", "writes")),
        ];
        // Two statements per group of changes (check, apply); a group of meta deletes
        // tombstones its replicated rows, then deletes them all (the state row is local).
        let statements = plan("ns", stamp(), &mut batch);
        let sqls: Vec<&str> = statements.iter().map(|s| s.sql.as_str()).collect();
        assert_eq!(
            sqls,
            [
                CHECK_CHANGES,
                APPLY_CHANGES,
                CHECK_CHANGES,
                APPLY_CHANGES,
                TOMBSTONE_META,
                DELETE_META
            ]
        );
        let tombstoned: Json = match &statements[4].params[1] {
            SqlValue::Text(array) => serde_json::from_str(array).unwrap(),
            other => panic!("{other:?}"),
        };
        assert_eq!(tombstoned.as_array().map(Vec::len), Some(2));
    }

    /// Interleaved kinds share statements when they commute, and only then.
    #[test]
    fn ops_join_their_kind_only_past_ops_they_commute_with() {
        let rec = |id: &str| {
            WriteOp::InsertRecord(Box::new(Record {
                id: id.into(),
                token: format!("tk_{id}"),
                value: "v".into(),
                created_at: 1,
                updated_at: 1,
                expires_at: None,
                soft_deleted_at: None,
                password_id: Some("p1".into()),
                revs: RecordRevs::all(stamp().rev),
            }))
        };
        let put = |t: &str, id: &str, k: &str, v: &str| WriteOp::PutMeta(MetaRow::new(t, id, k, v));
        let count = |batch: &[WriteOp]| plan("ns", stamp(), &mut batch.to_vec()).len();

        // tokensCreate: guard, epoch, then the records (tombstone check, insert).
        let mut create = vec![
            WriteOp::ExpectMeta {
                key: MetaKey::new("password_identity", "p1", "tag"),
                value: Some("t".into()),
            },
            put("vault", "state", "writes", "e"),
        ];
        for i in 0..50 {
            create.push(rec(&format!("id{i}")));
        }
        assert_eq!(count(&create), 4);

        // A rekey round: a reseal per record, then the identity's end: constant.
        let reseal = |id: &str| WriteOp::ChangeRecord {
            id: id.into(),
            change: RecordChange::Reseal {
                expect: "old".into(),
                value: "new".into(),
                password_id: Some("p1".into()),
            },
            at: 2,
        };
        let prune = WriteOp::DeleteIdentityIfUnlinked {
            identity_id: "p0".into(),
            emptied: false,
        };
        let rekey = |n: usize| {
            let mut batch = vec![WriteOp::ExpectMeta {
                key: MetaKey::new("vault", "state", "writes"),
                value: Some("e".into()),
            }];
            for i in 0..n {
                batch.push(reseal(&format!("id{i}")));
            }
            batch.push(prune.clone());
            // A replicated, unique row: insert, clear its tombstone, check its uniqueness.
            batch.push(WriteOp::InsertMeta(MetaRow::new(
                "password_identity",
                "p1",
                "tag",
                "t",
            )));
            batch.push(put("vault", "state", "writes", "e2"));
            batch
        };
        assert_eq!(count(&rekey(1)), 1 + 2 + 2 + 3 + 1);
        assert_eq!(count(&rekey(400)), 1 + 2 + 2 + 3 + 1);

        // Never past an op on the same meta row: the put after the check stays after it.
        let k = MetaKey::new("vault", "state", "k");
        let guarded = [
            put("vault", "state", "k", "1"),
            WriteOp::ExpectMeta {
                key: k.clone(),
                value: Some("1".into()),
            },
            put("vault", "state", "k", "2"),
        ];
        assert_eq!(count(&guarded), 3);
        // Never past a delete of a record (its token may be the one inserted next).
        let delete = WriteOp::DeleteRecord {
            id: "old".into(),
            if_expired_at: None,
        };
        assert_eq!(count(&[rec("a"), delete.clone(), rec("b")]), 2 + 5 + 2);
        // A purge's delete checks its condition first.
        let purge = WriteOp::DeleteRecord {
            id: "old".into(),
            if_expired_at: Some(9),
        };
        assert_eq!(count(&[purge]), 6);
        // A unique value (an identity tag) never passes a write of that kind of row.
        let tags = [
            put("password_identity", "x", "tag", "v"),
            WriteOp::DeleteMeta(MetaKey::new("password_identity", "y", "tag")),
            put("password_identity", "z", "tag", "w"),
        ];
        assert_eq!(count(&tags), 3 + 2 + 3);
        // An identity removed once unlinked reads every record's link: no write of a record
        // passes it.
        assert_eq!(count(&[reseal("a"), prune.clone(), reseal("b")]), 2 + 2 + 2);
        assert_eq!(count(&[rec("a"), prune.clone(), rec("b")]), 2 + 2 + 2);
        // Records and unrelated meta rows commute: one group each.
        assert_eq!(
            count(&[
                reseal("a"),
                put("vault", "state", "writes", "e"),
                reseal("b")
            ]),
            2 + 1
        );
        assert_eq!(
            count(&[WriteOp::ClearAll, rec("a"), WriteOp::ExpectEmpty, rec("b")]),
            4 + 2 + 1 + 2
        );
        // Merged versions of distinct rows share statements; two of one row do not.
        let version = |id: &str| WriteOp::PutVersion {
            row: Box::new(Row::Meta {
                key: MetaKey::new("vault", "settings", id),
                version: MetaVersion::Value {
                    rev: stamp().rev,
                    value: "x".into(),
                },
            }),
            dirty: false,
        };
        assert_eq!(count(&[version("a"), version("b")]), 2);
        assert_eq!(count(&[version("a"), version("a")]), 4);
    }

    /// Every statement the backend sends reads through an index: no full scan of a table, and
    /// no sort of more than the rows a query names (EXPLAIN QUERY PLAN on the real schema).
    #[cfg(not(target_arch = "wasm32"))]
    #[test]
    fn every_statement_uses_an_index() {
        let db = rusqlite::Connection::open_in_memory().unwrap();
        for sql in MIGRATIONS.iter().flat_map(|step| step.iter()) {
            db.execute(sql, []).unwrap();
        }
        let plan = |sql: &str| -> Vec<String> {
            let mut s = db.prepare(&format!("EXPLAIN QUERY PLAN {sql}")).unwrap();
            let nulls = vec![rusqlite::types::Value::Null; s.parameter_count()];
            s.query_map(rusqlite::params_from_iter(nulls), |r| r.get::<_, String>(3))
                .unwrap()
                .map(Result::unwrap)
                .collect()
        };
        let full_scan = |lines: &[String]| {
            // The JSON array, a constant row, the CTEs and a bounded subquery's own rows (a
            // purge chunk's LIMIT) are not tables.
            lines.iter().any(|l| {
                l.starts_with("SCAN ")
                    && !l.contains("VIRTUAL TABLE")
                    && !l.starts_with("SCAN (subquery-")
                    && ![
                        "SCAN CONSTANT ROW",
                        "SCAN gone",
                        "SCAN linked",
                        "SCAN pruned",
                        "SCAN unlinked",
                        "SCAN doomed",
                    ]
                    .contains(&l.as_str())
            })
        };
        let mut ordered = Vec::new();
        for order_by in OrderBy::ALL {
            for soft_deleted in [
                SoftDeleted::Exclude,
                SoftDeleted::Include,
                SoftDeleted::Only,
            ] {
                for descending in [true, false] {
                    ordered.push(RecordFilter {
                        order_by,
                        soft_deleted,
                        descending,
                        limit: Some(20),
                        ..Default::default()
                    });
                }
            }
        }
        ordered.push(RecordFilter::expired(SoftDeleted::Include, 500));
        ordered.push(RecordFilter::expired(SoftDeleted::Exclude, 500));
        for filter in &ordered {
            let (sql, _) = query_statement("ns", filter, 0).unwrap();
            let lines = plan(&sql);
            if filter.soft_deleted == SoftDeleted::Only && !filter.expired_only {
                // The trash view: one arm reads the soft-deleted records through their partial
                // index and sorts them (`trash_page`), the other walks the order's index.
                assert!(
                    !full_scan(&lines)
                        && lines
                            .iter()
                            .any(|l| l.contains("USING INDEX vaultstore_records_deleted")),
                    "{filter:?}: {lines:?}"
                );
                continue;
            }
            assert!(
                !full_scan(&lines) && !lines.iter().any(|l| l.contains("TEMP B-TREE")),
                "{filter:?}: {lines:?}"
            );
        }
        // A page past the start steps over its offset in the order's index alone (a covering
        // index: no record row read per entry skipped), then sorts only its own rows.
        let deferred = ordered[..ordered.len() - 2]
            .iter()
            .filter(|f| f.order_by != OrderBy::ExpiresAt);
        for filter in deferred {
            let deep = RecordFilter {
                offset: 500_000,
                ..filter.clone()
            };
            let (sql, _) = query_statement("ns", &deep, 0).unwrap();
            let lines = plan(&sql);
            assert!(
                !full_scan(&lines)
                    && lines
                        .iter()
                        .any(|l| l.starts_with("SEARCH r USING COVERING INDEX")),
                "{deep:?}: {lines:?}"
            );
            // The created and updated orders' indexes hold the soft-delete state: whatever
            // the vault's trash, no arm of their pages reads a row per record it steps over.
            if matches!(deep.order_by, OrderBy::CreatedAt | OrderBy::UpdatedAt) {
                assert!(
                    !lines
                        .iter()
                        .any(|l| l.contains("USING INDEX vaultstore_records_created")
                            || l.contains("USING INDEX vaultstore_records_updated")),
                    "{deep:?}: {lines:?}"
                );
            }
        }
        let expired = plan(
            &query_statement("ns", &RecordFilter::expired(SoftDeleted::Include, 500), 0)
                .unwrap()
                .0,
        );
        assert!(
            expired
                .iter()
                .any(|l| l.contains("vaultstore_records_expires (ns=? AND expires_key<?)")),
            "{expired:?}"
        );
        let named = [
            RecordFilter {
                token: Some("t".into()),
                ..Default::default()
            },
            RecordFilter {
                token_in: Some(vec!["a".into(), "b".into()]),
                ..Default::default()
            },
            RecordFilter {
                id: Some("i".into()),
                soft_deleted: SoftDeleted::Include,
                ..Default::default()
            },
            RecordFilter {
                id_in: Some(vec!["a".into()]),
                token_in: Some(vec!["b".into()]),
                ..Default::default()
            },
        ];
        for filter in &named {
            let (sql, _) = query_statement("ns", filter, 0).unwrap();
            let lines = plan(&sql);
            assert!(!full_scan(&lines), "{filter:?}: {lines:?}");
            assert!(
                lines
                    .iter()
                    .any(|l| l.starts_with("SEARCH r USING INDEX sqlite_autoindex")),
                "{filter:?}: {lines:?}"
            );
            let (from, _) = select_from("ns", filter, 0).unwrap();
            assert!(
                !full_scan(&plan(&format!("SELECT count(*){from}"))),
                "count {filter:?}"
            );
        }
        for soft_deleted in [
            SoftDeleted::Exclude,
            SoftDeleted::Include,
            SoftDeleted::Only,
        ] {
            let (from, _) = select_from(
                "ns",
                &RecordFilter {
                    soft_deleted,
                    ..Default::default()
                },
                0,
            )
            .unwrap();
            let lines = plan(&format!("SELECT count(*){from}"));
            assert!(!full_scan(&lines), "count {soft_deleted:?}: {lines:?}");
        }
        // Statements that touch named rows find each through an index on more than the
        // namespace: a plan searching on `ns` alone walks every record of the vault. (The
        // seq a write takes reads the greatest of each `(ns, seq)` index: one entry each.)
        let walks_ns = |l: &String| {
            l.ends_with("(ns=?)") && !l.starts_with("SEARCH top ") && !l.starts_with("SEARCH sf ")
        };
        let [tomb_identities, kept, identities] = prune_identities(NAMED);
        let unlinked: Vec<String> = (prune_unlinked_identity(true).into_iter())
            .map(|(sql, _)| sql)
            .collect();
        let (tomb_records, records) = (tombstone_records(NAMED), delete_records(NAMED));
        let writes = [
            CHECK_TOMBSTONED_IDS,
            INSERT_RECORDS,
            CHECK_CHANGES,
            APPLY_CHANGES,
            CHECK_DELETES,
            &tomb_identities,
            &kept,
            &identities,
            &unlinked[0],
            &unlinked[1],
            &unlinked[2],
            &tomb_records,
            &records,
            INSERT_META,
            PUT_META,
            CLEAR_META_TOMBSTONES,
            CHECK_UNIQUE_META,
            TOMBSTONE_META,
            DELETE_META,
            CHECK_META,
            PUT_RECORD_VERSIONS,
            CLEAR_RECORD_TOMBSTONES,
            PUT_RECORD_TOMBSTONES,
            DELETE_RECORD_VERSIONS,
            PUT_META_VERSIONS,
            PUT_META_TOMBSTONES,
            EXPECT_RECORD_VERSIONS,
            EXPECT_META_VERSIONS,
            CLEAN_RECORDS,
            CLEAN_META,
            CLEAN_TOMBSTONES,
            RAISE_SEQ_FLOOR,
        ];
        let lookup = format!("SELECT {RECORD_COLUMNS}{}", KeyColumn::Token.driven_by(2));
        let reads = [
            lookup.as_str(),
            VERSIONS,
            "SELECT value FROM vaultstore_meta WHERE ns = ?1 AND object_type = ?2 AND object_id = ?3 AND key = ?4",
        ];
        for sql in writes.iter().chain(&reads) {
            let lines = plan(sql);
            assert!(
                !full_scan(&lines) && !lines.iter().any(walks_ns),
                "{sql}: {lines:?}"
            );
        }
        let linked = format!(
            "SELECT {RECORD_COLUMNS} FROM vaultstore_records AS r
             WHERE r.ns = ?1 AND r.password_id = ?2 AND r.id_key > ?3 ORDER BY r.id_key LIMIT ?4"
        );
        let linked_lines = plan(&linked);
        assert!(
            linked_lines
                .iter()
                .any(|l| l
                    .contains("vaultstore_records_identity (ns=? AND password_id=? AND id_key>?)"))
                && !linked_lines.iter().any(|l| l.contains("TEMP B-TREE")),
            "{linked_lines:?}"
        );
        for column in ["seq", "dirty"] {
            let lines = plan(&feed_statement(column));
            assert!(!full_scan(&lines), "{column}: {lines:?}");
            for table in ["records", "meta", "tombstones"] {
                let index = format!("vaultstore_{table}_{column} ({column}>?)")
                    .replace(&format!("({column}>?)"), &format!("(ns=? AND {column}>?)"));
                assert!(
                    lines.iter().any(|l| l.contains(&index)),
                    "{column} {table}: {lines:?}"
                );
            }
        }
        for sql in [CHECK_EMPTY, CLEAR_RECORDS, CLEAR_TOMBSTONES, CLEAR_META] {
            assert!(!full_scan(&plan(sql)), "{sql}");
        }
        // Both link counts are answered by the identity index alone: a re-wrap's count of a
        // million records reads no record row.
        for sql in [LINKED_COUNT, IDENTITY_COUNT] {
            let lines = plan(sql);
            assert!(
                lines
                    .iter()
                    .any(|l| l.contains("COVERING INDEX vaultstore_records_identity")),
                "{sql}: {lines:?}"
            );
        }
        // A purge finds the expired records through the expiry index, never a walk of the vault.
        let purges = [
            check_purge_count(EXPIRED),
            check_purge_count(EXPIRED_LIVE),
            count_chunk(EXPIRED_LIVE),
            PURGE_SOFT_DELETE.to_owned(),
            prune_identities(EXPIRED_CHUNK)[0].clone(),
            prune_identities(EXPIRED_CHUNK)[1].clone(),
            prune_identities(EXPIRED_CHUNK)[2].clone(),
            tombstone_records(EXPIRED_CHUNK),
            delete_records(EXPIRED_CHUNK),
        ];
        for sql in &purges {
            let lines = plan(sql);
            assert!(
                !full_scan(&lines)
                    && !lines
                        .iter()
                        .any(|l| walks_ns(l) || l.contains("TEMP B-TREE FOR ORDER BY")),
                "{sql}: {lines:?}"
            );
            assert!(
                lines
                    .iter()
                    .any(|l| l.contains("vaultstore_records_expires (ns=? AND expires_key<?)")),
                "{sql}: {lines:?}"
            );
        }
    }

    /// A purge of records that all share one identity tests that identity once: the work of
    /// each statement grows with the chunk, not with its square (SQLite's own step count).
    #[cfg(not(target_arch = "wasm32"))]
    #[test]
    fn a_purge_tests_each_identity_once() {
        let db = rusqlite::Connection::open_in_memory().unwrap();
        for sql in MIGRATIONS.iter().flat_map(|step| step.iter()) {
            db.execute(sql, []).unwrap();
        }
        let n: i64 = 2_000;
        db.execute(
            "WITH RECURSIVE k(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM k WHERE i < ?1)
             INSERT INTO vaultstore_records (ns, id, token, value, created_at, updated_at,
                 expires_at, id_key, token_key, password_id)
             SELECT 'ns', printf('%032x', i), printf('tk_%d', i), 'v', 1, 1, 5,
                 printf('%032x', i), printf('tk_%d', i), 'p_1' FROM k",
            [n],
        )
        .unwrap();
        let written = Rev::new(8, 0, 1).unwrap().to_string();
        db.execute(
            "INSERT INTO vaultstore_meta (ns, object_type, object_id, key, value, rev)
             VALUES ('ns', 'password_identity', 'p_1', 'tag', 't', ?1)",
            [&written],
        )
        .unwrap();
        let steps = |sql: &str, params: &[&dyn rusqlite::ToSql]| {
            let mut statement = db.prepare(sql).unwrap();
            statement.execute(params).unwrap();
            statement.get_status(rusqlite::StatementStatus::VmStep)
        };
        let [tombstones, kept, identities] = prune_identities(EXPIRED_CHUNK);
        let rev = Rev::new(9, 0, 1).unwrap().to_string();
        // The identity goes with its last records, its version kept.
        let work = steps(&tombstones, &[&"ns", &10_i64, &n, &rev]);
        assert!(work < 200 * n as i32, "{work} steps for {n} records");
        let work = steps(&kept, &[&"ns", &10_i64, &n]);
        assert!(work < 200 * n as i32, "{work} steps for {n} records");
        let work = steps(&identities, &[&"ns", &10_i64, &n]);
        assert!(work < 200 * n as i32, "{work} steps for {n} records");
        let left: i64 = db
            .query_row(
                "SELECT count(*) FROM vaultstore_meta WHERE object_type = 'password_identity'",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(left, 0);
        let kept: String = db
            .query_row(
                "SELECT value FROM vaultstore_meta
                 WHERE object_type = 'sync' AND object_id = 'replaced' AND key = 'p_1/tag'",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(kept, format!("{written} t"));
    }
}
