//! IndexedDB backend, for browsers (feature `idb`, wasm32 only).
//!
//! Built on the `idb` crate, the layer `rexie` wraps, because rexie 0.6 hides what this backend
//! needs: the transaction's `error` after an abort (a `QuotaExceededError` raised at commit would
//! otherwise surface as a bare "aborted"), the `blocked` event, and an upgrade hook that knows the
//! old version.
//!
//! Four object stores at schema version 2 ([`MIGRATIONS`]; FORMAT.md "IndexedDB stores"):
//!
//! | store        | key                           | indexes |
//! |--------------|-------------------------------|---------|
//! | `records`    | `id`                          | `token` (unique), `created` `[createdAt, id]`, `updated` `[updatedAt, id]`, `expires` `[expiresSort, id]`, `deleted`, `identity` `[passwordId, id]`, `seq`, `dirty` |
//! | `meta`       | `[objectType, objectId, key]` | `by_value` `[objectType, key, value]` (identity tags, slot owners), `seq`, `dirty` |
//! | `tombstones` | `key`: `["record", id]` or `["meta", objectType, objectId, key]` | `seq`, `dirty` |
//! | `counters`   | out of line: `"seq"`          | |
//!
//! `expiresSort` is `expiresAt`, or `Infinity` for "never" (null is not a valid key); `deleted` is
//! 0 or 1. A record's `passwordId` (absent: sealed with a master key) puts it in the sparse
//! `identity` index. Replicated rows carry their revisions (`valueRev`, `sealRev`, `expiresRev`,
//! `deletedRev` on records, `rev` on meta rows and tombstones: 32 hex digits; absent on rows
//! written by schema 1, read as synthesized / [`Rev::ZERO`]), a `seq` (the upgrade gives every
//! schema-1 row one) and a `dirty` mark (present only while dirty); the `seq` and `dirty`
//! indexes hold only the rows that have them, so local meta rows and clean rows stay out of the
//! change feeds. `counters["seq"]` is the last seq given out (with the write epoch, see
//! `write::Counter`): every batch that writes a replicated row reads it and writes it back in
//! its own readwrite transaction, so seqs are unique across the three stores and grow in commit
//! order; a `ClearAll` leaves it (but for the epoch), so they never go back. A sync merge reads
//! each key's live row, else its tombstone ([`Storage::versions`]), and guards its commit on
//! their seqs (`ExpectVersion`); `MarkClean` removes a dirty mark the server acknowledged,
//! leaving the seq.
//!
//! Every [`Storage::apply`] is one readwrite transaction over every store in which nothing but
//! IndexedDB is awaited; any failure aborts it, so the database is left exactly as before.
//! IndexedDB runs readwrite transactions on the same stores one after the other, so the checks a
//! batch makes inside its transaction (is this token taken, is this value still the one read) hold
//! when it commits: two tabs cannot both take a token or overwrite each other's changes.
//!
//! A batch costs a few round trips, not one per op (see `write::Batch`): the records it changes or
//! deletes and the seq counter are read at once, every write is issued without waiting (requests
//! run in issue order, so later reads see earlier writes), and each precondition is checked when
//! its read resolves; a failed one aborts the transaction, which takes back every write already
//! issued. Inserts rely on the primary key and the unique token index; a refused `add` aborts the
//! transaction, and its `ConstraintError` is then told apart (token or id) by a lookup.

use super::{
    Change, MetaFind, MetaKey, MetaRow, OWNER_KEY, Purge, Row, RowKey, Stamp, Storage,
    StorageError, StorageResult, Stored, WriteOp, WriteTransaction, is_replicated, is_unique_meta,
    is_write_epoch, object_type, replaced_key, unlinked_records, write_epoch,
};
use crate::query::{OrderBy, RecordFilter, SoftDeleted, js_string_cmp};
use crate::record::{Record, RecordRevs};
use crate::sorting;
use crate::sync::{MetaVersion, RecordVersion, Rev, Tombstone, TombstoneReason};
use async_trait::async_trait;
use futures::future::{Either, join_all, select};
use idb::request::{GetStoreRequest, OpenDatabaseRequest};
use idb::{
    CursorDirection, Database, DatabaseEvent, Event as _, Factory, KeyPath, KeyRange, Query,
    Request as _, Transaction, TransactionMode,
};
use js_sys::{Array, Object, Reflect};
use std::cell::{Cell, RefCell};
use std::cmp::Ordering;
use std::collections::HashMap;
use std::rc::Rc;
use wasm_bindgen::{JsCast, JsValue};

// The readwrite transaction, a batch's checks and writes, and how its outcome is awaited.
mod write;
use write::Committed;

const RECORDS: &str = "records";
const META: &str = "meta";
const TOMBSTONES: &str = "tombstones";
const COUNTERS: &str = "counters";
/// Every store, as each transaction scopes them.
const STORES: [&str; 4] = [RECORDS, META, TOMBSTONES, COUNTERS];
/// The key of the last seq given out, in [`COUNTERS`].
const SEQ_COUNTER: &str = "seq";
/// Schema 1's identity link: a meta row `record/r_<id>/password_id` (moved into the record).
const LINK_KEY: &str = "password_id";

/// What a migration step returns: a future driven inside the upgrade transaction, which stays
/// alive as long as each awaited request issues the next one.
pub type MigrationFuture<'a> =
    std::pin::Pin<Box<dyn std::future::Future<Output = StorageResult<()>> + 'a>>;

/// One schema step: `MIGRATIONS[n]` upgrades a database from version `n` to `n + 1`, inside the
/// upgrade transaction; an error aborts the whole upgrade, leaving the database at the version it
/// had. The database's version is `MIGRATIONS.len()`.
pub type Migration = for<'a> fn(&'a Database, &'a Transaction) -> MigrationFuture<'a>;

/// The schema history. Never edit an entry once released; append a new one.
pub const MIGRATIONS: &[Migration] = &[create_v1, upgrade_v2];

/// How long an open may stay blocked (another connection holds an older version open and does not
/// close) before it is reported instead of waited on.
pub const BLOCKED_TIMEOUT_MS: u32 = 5_000;

fn create_v1<'a>(db: &'a Database, _upgrade: &'a Transaction) -> MigrationFuture<'a> {
    Box::pin(async move { create_v1_stores(db).map_err(idb_error("create the stores")) })
}

fn create_v1_stores(db: &Database) -> Result<(), idb::Error> {
    let mut params = idb::ObjectStoreParams::new();
    params.key_path(Some(KeyPath::new_single("id")));
    let records = db.create_object_store(RECORDS, params)?;
    let mut unique = idb::IndexParams::new();
    unique.unique(true);
    records.create_index("token", KeyPath::new_single("token"), Some(unique))?;
    records.create_index("created", KeyPath::new_array(["createdAt", "id"]), None)?;
    records.create_index("updated", KeyPath::new_array(["updatedAt", "id"]), None)?;
    records.create_index("expires", KeyPath::new_array(["expiresSort", "id"]), None)?;
    records.create_index("deleted", KeyPath::new_single("deleted"), None)?;

    let mut params = idb::ObjectStoreParams::new();
    params.key_path(Some(KeyPath::new_array(["objectType", "objectId", "key"])));
    let meta = db.create_object_store(META, params)?;
    meta.create_index(
        "by_value",
        KeyPath::new_array(["objectType", "key", "value"]),
        None,
    )?;
    Ok(())
}

/// Schema 2 (sync, issue 14; the link in the record, issue 16): the new indexes and stores, then
/// one pass over the rows written by schema 1: each record takes its identity link (whose row
/// goes) and a seq, each replicated meta row a seq, from 1 in key order, and the counter
/// continues above them, so a feed walked from 0 holds every row. The write epoch's meta row
/// goes: the epoch is kept in the counter's row now ([`write::Counter`]), and the next write
/// sets it there (no rekey can span the upgrade, which closes every other connection first).
/// Revisions are not written: rows without them read as synthesized.
fn upgrade_v2<'a>(db: &'a Database, upgrade: &'a Transaction) -> MigrationFuture<'a> {
    Box::pin(async move {
        let (records, meta, counters) =
            add_v2_stores(db, upgrade).map_err(idb_error("add the schema-2 stores"))?;
        let mut seq = 0;
        number_records(&records, &meta, &mut seq).await?;
        // Built once over the rewritten rows (and over meta without its link rows) rather than
        // kept up by every put: the upgrade takes about half the time.
        add_v2_indexes(&records, &meta).map_err(idb_error("add the schema-2 indexes"))?;
        number_meta(&meta, &mut seq).await?;
        meta.delete(meta_key_js(&write_epoch()))
            .map_err(idb_error("delete the write epoch row"))?;
        if seq > 0 {
            counters
                .put(
                    &JsValue::from_f64(seq as f64),
                    Some(&JsValue::from_str(SEQ_COUNTER)),
                )
                .map_err(idb_error("write the seq counter"))?;
        }
        Ok(())
    })
}

fn add_v2_stores(
    db: &Database,
    upgrade: &Transaction,
) -> Result<(idb::ObjectStore, idb::ObjectStore, idb::ObjectStore), idb::Error> {
    let records = upgrade.object_store(RECORDS)?;
    let meta = upgrade.object_store(META)?;
    let mut params = idb::ObjectStoreParams::new();
    params.key_path(Some(KeyPath::new_single("key")));
    let tombstones = db.create_object_store(TOMBSTONES, params)?;
    tombstones.create_index("seq", KeyPath::new_single("seq"), None)?;
    tombstones.create_index("dirty", KeyPath::new_single("dirty"), None)?;
    let counters = db.create_object_store(COUNTERS, idb::ObjectStoreParams::new())?;
    Ok((records, meta, counters))
}

fn add_v2_indexes(records: &idb::ObjectStore, meta: &idb::ObjectStore) -> Result<(), idb::Error> {
    records.create_index("identity", KeyPath::new_array(["passwordId", "id"]), None)?;
    for store in [records, meta] {
        store.create_index("seq", KeyPath::new_single("seq"), None)?;
        store.create_index("dirty", KeyPath::new_single("dirty"), None)?;
    }
    Ok(())
}

/// Rows the upgrade reads per round trip.
const UPGRADE_PAGE: u32 = 2_000;

/// Above every schema-1 link key of the records up to `id` (`None`: of every record). Link rows
/// are `["record", "r_" + id, "password_id"]`, so they sort as their records' ids do, and an
/// array sorts after every string.
fn link_bound(id: Option<&str>) -> JsValue {
    let mut parts = vec![JsValue::from_str(object_type::RECORD)];
    if let Some(id) = id {
        parts.push(JsValue::from_str(&format!("r_{id}")));
    }
    parts.push(Array::new().into());
    parts.into_iter().collect::<Array>().into()
}

/// Every record, a page at a time in id order, rewritten once with a seq and, if a link row
/// names its identity, that identity as `passwordId`. Each page reads the link rows of the id
/// range it covers (up to the end after the last page) and deletes that range in one request,
/// so every link row goes, a link to a missing record too (schema 1 kept nothing but links
/// under `objectType = "record"`). A link that is not a string is not vaultstore's, and fails
/// the upgrade.
async fn number_records(
    records: &idb::ObjectStore,
    meta: &idb::ObjectStore,
    seq: &mut u64,
) -> StorageResult<()> {
    let mut after: Option<String> = None;
    loop {
        let query = match &after {
            Some(id) => Some(range(KeyRange::lower_bound(
                &JsValue::from_str(id),
                Some(true),
            ))?),
            None => None,
        };
        let page = records
            .get_all(query, Some(UPGRADE_PAGE))
            .done("read records")
            .await?;
        let full = page.len() == UPGRADE_PAGE as usize;
        let last = match page.last() {
            Some(row) if full => Some(text(row, "id")?),
            _ => None,
        };
        let lower = match &after {
            Some(id) => link_bound(Some(id)),
            None => key_array(&[object_type::RECORD]),
        };
        let upper = link_bound(last.as_deref());
        let links = meta
            .get_all(
                Some(range(KeyRange::bound(
                    &lower,
                    &upper,
                    Some(false),
                    Some(false),
                ))?),
                None,
            )
            .done("read record links")
            .await?;
        // Strings to strings: the type other maps of this engine have (its code once in the
        // download). A link whose value is not a string is not this package's.
        let mut identities: HashMap<String, String> = HashMap::new();
        for row in &links {
            let key = meta_key_from_js(row)?;
            let Some(id) = key.object_id.strip_prefix("r_") else {
                continue;
            };
            if key.key != LINK_KEY {
                continue;
            }
            let identity = get(row, "value")
                .as_string()
                .ok_or_else(|| not_ours("a record link"))?;
            identities.insert(id.to_owned(), identity);
        }
        if !links.is_empty() {
            meta.delete(range(KeyRange::bound(
                &lower,
                &upper,
                Some(false),
                Some(false),
            ))?)
            .map_err(idb_error("delete record links"))?;
        }
        for row in &page {
            let record = row
                .dyn_ref::<Object>()
                .ok_or_else(|| not_ours("a record"))?;
            if let Some(identity) = identities.get(&text(row, "id")?) {
                set(record, "passwordId", &JsValue::from_str(identity));
            }
            *seq += 1;
            set(record, "seq", &JsValue::from_f64(*seq as f64));
            records
                .put(record, None)
                .map_err(idb_error("write a record"))?;
        }
        match last {
            Some(id) => after = Some(id),
            None => return Ok(()),
        }
    }
}

/// Every replicated meta row, a page at a time in key order, rewritten with a seq (the link rows
/// are gone by now: their deletes were issued before these reads).
async fn number_meta(meta: &idb::ObjectStore, seq: &mut u64) -> StorageResult<()> {
    let mut after: Option<JsValue> = None;
    loop {
        let query = match &after {
            Some(key) => Some(range(KeyRange::lower_bound(key, Some(true)))?),
            None => None,
        };
        let page = meta
            .get_all(query, Some(UPGRADE_PAGE))
            .done("read meta rows")
            .await?;
        for row in &page {
            if !is_replicated(&meta_key_from_js(row)?) {
                continue;
            }
            let object = row
                .dyn_ref::<Object>()
                .ok_or_else(|| not_ours("a meta row"))?;
            *seq += 1;
            set(object, "seq", &JsValue::from_f64(*seq as f64));
            meta.put(object, None)
                .map_err(idb_error("write a meta row"))?;
        }
        match page.last() {
            Some(last) if page.len() == UPGRADE_PAGE as usize => {
                after = Some(meta_key_js(&meta_key_from_js(last)?));
            }
            _ => return Ok(()),
        }
    }
}

// ---------------------------------------------------------------- errors

/// The JavaScript error an `idb::Error` carries, when it carries one.
fn carried(e: &idb::Error) -> Option<JsValue> {
    use idb::Error as E;
    match e {
        E::DomException(d) => Some(d.clone().into()),
        E::AddFailed(v)
        | E::ClearFailed(v)
        | E::CountFailed(v)
        | E::CursorAdvanceFailed(v)
        | E::CursorContinueFailed(v)
        | E::CursorKeyNotFound(v)
        | E::CursorPrimaryKeyNotFound(v)
        | E::CursorValueNotFound(v)
        | E::DeleteFailed(v)
        | E::GetAllFailed(v)
        | E::GetAllKeysFailed(v)
        | E::GetFailed(v)
        | E::GetKeyFailed(v)
        | E::IndexCreateFailed(v)
        | E::IndexDeleteFailed(v)
        | E::IndexNotFound(v)
        | E::IndexedDbDeleteFailed(v)
        | E::IndexedDbOpenFailed(v)
        | E::IndexedDbNotFound(v)
        | E::KeyPathNotFound(v)
        | E::KeyRangeBoundNotFound(v)
        | E::KeyRangeCreateFailed(v)
        | E::KeyRangeIncludesFailed(v)
        | E::ObjectStoreCreateFailed(v)
        | E::ObjectStoreDeleteFailed(v)
        | E::ObjectStoreNotFound(v)
        | E::OpenCursorFailed(v)
        | E::OpenKeyCursorFailed(v)
        | E::RequestErrorNotFound(v)
        | E::RequestResultNotFound(v)
        | E::TransactionAbortError(v)
        | E::TransactionCommitError(v)
        | E::TransactionModeNotFound(v)
        | E::TransactionOpenFailed(v)
        | E::UpdateFailed(v) => Some(v.clone()),
        _ => None,
    }
}

/// What an `idb::Error` says: its JavaScript error's name and message, or what went wrong in
/// the idb crate itself. Not the crate's own `Display`, whose message for each of its fifty
/// variants cost about 4 kB of the browser download.
fn idb_message(e: &idb::Error) -> String {
    use idb::Error as E;
    if let Some(js) = carried(e) {
        let (name, message) = js_name_message(&js);
        return format!("{}: {message}", name.as_deref().unwrap_or("Error"));
    }
    match e {
        E::UnexpectedJsType(expected, _) => format!("a value that is not a {expected}"),
        E::CursorFinished => "the cursor is finished".into(),
        E::TransactionNotFound => "a request without its transaction".into(),
        _ => "an unexpected state of an IndexedDB request, event or cursor".into(),
    }
}

/// The `name` and `message` of a JavaScript error.
fn js_name_message(error: &JsValue) -> (Option<String>, String) {
    let field = |k: &str| {
        Reflect::get(error, &JsValue::from_str(k))
            .ok()
            .and_then(|v| v.as_string())
    };
    let message = field("message").unwrap_or_else(|| "(no message)".to_owned());
    (field("name"), message)
}

/// A DOMException (or any JS error) as a storage error, keeping its name and message.
fn from_js(error: &JsValue, doing: &str) -> StorageError {
    let (name, message) = js_name_message(error);
    match name.as_deref() {
        Some("QuotaExceededError") => StorageError::Quota(
            format!("{doing}: {message}"),
            crate::error::Original::thrown(error),
        ),
        _ => StorageError::Backend {
            original: crate::error::Original::thrown(error),
            name,
            message: format!("IndexedDB refused to {doing}: {message}"),
        },
    }
}

fn idb_error(doing: &'static str) -> impl Fn(idb::Error) -> StorageError {
    move |e| match carried(&e) {
        Some(js) => from_js(&js, doing),
        None => StorageError::Backend {
            original: Default::default(),
            name: None,
            message: format!("IndexedDB refused to {doing}: {}", idb_message(&e)),
        },
    }
}

/// An IndexedDB request, issued and awaited, with what was being done named in any error
/// (issuing and completing fail with the same kind of DOMException, so one label serves both).
trait Request<T> {
    async fn done(self, doing: &'static str) -> StorageResult<T>;
}

impl<R, T> Request<T> for Result<R, idb::Error>
where
    R: std::future::IntoFuture<Output = Result<T, idb::Error>>,
{
    async fn done(self, doing: &'static str) -> StorageResult<T> {
        self.map_err(idb_error(doing))?
            .await
            .map_err(idb_error(doing))
    }
}

/// A settled request's result as JavaScript holds it (`request.result`).
trait RequestResult {
    fn into_js(self) -> JsValue;
}

impl RequestResult for Option<JsValue> {
    fn into_js(self) -> JsValue {
        self.unwrap_or(JsValue::UNDEFINED)
    }
}

impl RequestResult for u32 {
    fn into_js(self) -> JsValue {
        JsValue::from_f64(f64::from(self))
    }
}

impl RequestResult for Vec<JsValue> {
    fn into_js(self) -> JsValue {
        self.into_iter().collect::<Array>().into()
    }
}

/// The results (`request.result`) of requests issued together in one transaction, in order,
/// with one listener for them all: IndexedDB completes a transaction's requests in the order
/// they were made, so once the last is done every result is in. Awaiting each instead costs two
/// closures and a wake-up per request.
async fn in_order<R, T>(mut requests: Vec<R>, doing: &'static str) -> StorageResult<Vec<JsValue>>
where
    R: idb::Request + std::future::IntoFuture<Output = Result<T, idb::Error>>,
    T: RequestResult,
{
    let Some(last) = requests.pop() else {
        return Ok(Vec::new());
    };
    let last = std::future::IntoFuture::into_future(last)
        .await
        .map_err(idb_error(doing))?;
    let mut results = Vec::with_capacity(requests.len() + 1);
    for request in &requests {
        results.push(idb::Request::result(request).map_err(idb_error(doing))?);
    }
    results.push(last.into_js());
    Ok(results)
}

fn not_ours(what: &str) -> StorageError {
    StorageError::Backend {
        original: Default::default(),
        name: Some("DataError".into()),
        message: format!("IndexedDB holds {what} that vaultstore did not write"),
    }
}

// ---------------------------------------------------------------- rows <-> JS objects

thread_local! {
    /// Row field names as JavaScript strings, made once: a Rust string sent to JavaScript is
    /// decoded every time, and rows are read and written a field at a time (a tenth of a bulk
    /// read's time went to decoding these names).
    static NAMES: std::cell::RefCell<Vec<(&'static str, JsValue)>> =
        const { std::cell::RefCell::new(Vec::new()) };
}

/// `f` with the JavaScript string for the field name `k`.
fn with_name<R>(k: &'static str, f: impl FnOnce(&JsValue) -> R) -> R {
    NAMES.with(|names| {
        let mut names = names.borrow_mut();
        let at = match names.iter().position(|(name, _)| *name == k) {
            Some(at) => at,
            None => {
                names.push((k, JsValue::from_str(k)));
                names.len() - 1
            }
        };
        f(&names[at].1)
    })
}

fn set(o: &Object, k: &'static str, v: &JsValue) {
    with_name(k, |k| {
        let _ = Reflect::set(o, k, v);
    });
}

fn get(o: &JsValue, k: &'static str) -> JsValue {
    with_name(k, |k| Reflect::get(o, k).unwrap_or(JsValue::UNDEFINED))
}

fn text(o: &JsValue, k: &'static str) -> StorageResult<String> {
    get(o, k)
        .as_string()
        .ok_or_else(|| not_ours(&format!("a row without a text {k}")))
}

fn time(o: &JsValue, k: &'static str) -> StorageResult<i64> {
    get(o, k)
        .as_f64()
        .filter(|n| n.is_finite())
        .map(|n| n as i64)
        .ok_or_else(|| not_ours(&format!("a row without a numeric {k}")))
}

fn opt_time(o: &JsValue, k: &'static str) -> StorageResult<Option<i64>> {
    let v = get(o, k);
    if v.is_null() || v.is_undefined() {
        Ok(None)
    } else {
        time(o, k).map(Some)
    }
}

/// What a write gives a replicated row besides its revisions: the store's next seq, and whether
/// the row is dirty (its dirty mark is then that seq).
#[derive(Debug, Clone, Copy)]
struct Mark {
    seq: u64,
    dirty: bool,
}

fn set_mark(o: &Object, mark: Mark) {
    let seq = JsValue::from_f64(mark.seq as f64);
    set(o, "seq", &seq);
    if mark.dirty {
        set(o, "dirty", &seq);
    }
}

fn rev_js(rev: Rev) -> JsValue {
    JsValue::from_str(&rev.to_string())
}

/// A stored revision; `None` when the row has none (written by schema 1).
fn opt_rev(o: &JsValue, k: &'static str) -> StorageResult<Option<Rev>> {
    let v = get(o, k);
    if v.is_undefined() {
        return Ok(None);
    }
    v.as_string()
        .and_then(|t| Rev::parse(&t).ok())
        .map(Some)
        .ok_or_else(|| not_ours(&format!("a row with a malformed {k}")))
}

/// A stored seq or dirty mark (absent: 0, a row untouched since schema 1).
fn seq_of(o: &JsValue, k: &'static str) -> StorageResult<u64> {
    let v = get(o, k);
    if v.is_undefined() {
        return Ok(0);
    }
    v.as_f64()
        .filter(|n| n.is_finite() && *n >= 0.0)
        .map(|n| n as u64)
        .ok_or_else(|| not_ours(&format!("a row with a malformed {k}")))
}

fn record_to_js(r: &Record, mark: Mark) -> JsValue {
    let o = Object::new();
    let num = |n: i64| JsValue::from_f64(n as f64);
    let opt = |n: Option<i64>| n.map_or(JsValue::NULL, num);
    set(&o, "id", &r.id.as_str().into());
    set(&o, "token", &r.token.as_str().into());
    set(&o, "value", &r.value.as_str().into());
    set(&o, "createdAt", &num(r.created_at));
    set(&o, "updatedAt", &num(r.updated_at));
    set(&o, "expiresAt", &opt(r.expires_at));
    set(&o, "softDeletedAt", &opt(r.soft_deleted_at));
    set(
        &o,
        "expiresSort",
        &r.expires_at.map_or(JsValue::from_f64(f64::INFINITY), num),
    );
    set(
        &o,
        "deleted",
        &JsValue::from_f64(if r.soft_deleted_at.is_some() {
            1.0
        } else {
            0.0
        }),
    );
    if let Some(identity) = &r.password_id {
        set(&o, "passwordId", &identity.as_str().into());
    }
    // A batch writes one revision into every register it sets: one JavaScript string for all.
    let value_rev = rev_js(r.revs.value);
    for (k, rev) in [
        ("sealRev", r.revs.seal),
        ("expiresRev", r.revs.expires),
        ("deletedRev", r.revs.deleted),
    ] {
        if rev == r.revs.value {
            set(&o, k, &value_rev);
        } else {
            set(&o, k, &rev_js(rev));
        }
    }
    set(&o, "valueRev", &value_rev);
    set_mark(&o, mark);
    o.into()
}

fn record_from_js(o: &JsValue) -> StorageResult<Record> {
    let created_at = time(o, "createdAt")?;
    let synthesized = Rev::synthesized(created_at);
    let password_id = get(o, "passwordId");
    Ok(Record {
        id: text(o, "id")?,
        token: text(o, "token")?,
        value: text(o, "value")?,
        created_at,
        updated_at: time(o, "updatedAt")?,
        expires_at: opt_time(o, "expiresAt")?,
        soft_deleted_at: opt_time(o, "softDeletedAt")?,
        password_id: if password_id.is_undefined() {
            None
        } else {
            Some(text(o, "passwordId")?)
        },
        revs: RecordRevs {
            value: opt_rev(o, "valueRev")?.unwrap_or(synthesized),
            seal: opt_rev(o, "sealRev")?.unwrap_or(synthesized),
            expires: opt_rev(o, "expiresRev")?.unwrap_or(synthesized),
            deleted: opt_rev(o, "deletedRev")?.unwrap_or(synthesized),
        },
    })
}

fn key_array(parts: &[&str]) -> JsValue {
    parts
        .iter()
        .map(|p| JsValue::from_str(p))
        .collect::<Array>()
        .into()
}

fn meta_key_js(k: &MetaKey) -> JsValue {
    key_array(&[&k.object_type, &k.object_id, &k.key])
}

/// A local meta row (see [`is_replicated`]): no revision, seq or dirty mark.
fn meta_to_js(row: &MetaRow) -> Object {
    let o = Object::new();
    set(&o, "objectType", &row.key.object_type.as_str().into());
    set(&o, "objectId", &row.key.object_id.as_str().into());
    set(&o, "key", &row.key.key.as_str().into());
    set(&o, "value", &row.value.as_str().into());
    o
}

/// A replicated meta row, at revision `rev`.
fn versioned_meta_to_js(row: &MetaRow, rev: Rev, mark: Mark) -> Object {
    let o = meta_to_js(row);
    set(&o, "rev", &rev_js(rev));
    set_mark(&o, mark);
    o
}

fn meta_key_from_js(o: &JsValue) -> StorageResult<MetaKey> {
    Ok(MetaKey {
        object_type: text(o, "objectType")?,
        object_id: text(o, "objectId")?,
        key: text(o, "key")?,
    })
}

/// Each of `rows` read with `from`, in one loop: a `collect` into a `Result` costs more code in
/// the engine, once per call site's iterator type.
fn all_from_js<T>(
    rows: impl IntoIterator<Item = JsValue>,
    from: fn(&JsValue) -> StorageResult<T>,
) -> StorageResult<Vec<T>> {
    let mut read = Vec::new();
    for row in rows {
        read.push(from(&row)?);
    }
    Ok(read)
}

fn meta_from_js(o: &JsValue) -> StorageResult<MetaRow> {
    Ok(MetaRow {
        key: meta_key_from_js(o)?,
        value: text(o, "value")?,
    })
}

/// The tombstone key of a record id or of a meta key (see the module docs).
fn record_tombstone_key(id: &str) -> JsValue {
    key_array(&["record", id])
}

fn meta_tombstone_key(k: &MetaKey) -> JsValue {
    key_array(&["meta", &k.object_type, &k.object_id, &k.key])
}

/// Every key `[kind, *]` of the tombstones store.
fn tombstone_kind_range(kind: &str) -> StorageResult<Query> {
    let upper: JsValue = [JsValue::from_str(kind), Array::new().into()]
        .into_iter()
        .collect::<Array>()
        .into();
    range(KeyRange::bound(
        &key_array(&[kind]),
        &upper,
        Some(false),
        Some(false),
    ))
}

fn tombstone_to_js(key: JsValue, rev: Rev, deleted_at: i64, mark: Mark) -> Object {
    let o = Object::new();
    set(&o, "key", &key);
    set(&o, "rev", &rev_js(rev));
    set(&o, "deletedAt", &JsValue::from_f64(deleted_at as f64));
    set_mark(&o, mark);
    o
}

/// A meta row's tombstone; an emptied identity's row carries `reason: "emptied"`.
fn meta_tombstone_to_js(
    key: &MetaKey,
    rev: Rev,
    deleted_at: i64,
    emptied: bool,
    mark: Mark,
) -> Object {
    let o = tombstone_to_js(meta_tombstone_key(key), rev, deleted_at, mark);
    if emptied {
        set(&o, "reason", &"emptied".into());
    }
    o
}

fn record_tombstone_to_js(id: &str, t: &Tombstone, mark: Mark) -> JsValue {
    let o = tombstone_to_js(record_tombstone_key(id), t.rev, t.deleted_at, mark);
    set(&o, "reason", &t.reason.as_str().into());
    o.into()
}

/// The row a tombstone stands for.
fn tombstone_from_js(o: &JsValue) -> StorageResult<Row> {
    let malformed = || not_ours("a tombstone with a malformed key");
    let mut key: Vec<String> = Vec::new();
    for part in get(o, "key")
        .dyn_into::<Array>()
        .map_err(|_| malformed())?
        .iter()
    {
        key.push(part.as_string().ok_or_else(malformed)?);
    }
    let rev = opt_rev(o, "rev")?.ok_or_else(|| not_ours("a tombstone without a revision"))?;
    let deleted_at = time(o, "deletedAt")?;
    match key.as_slice() {
        [kind, id] if kind == "record" => {
            let reason = match text(o, "reason")?.as_str() {
                "deleted" => TombstoneReason::Deleted,
                "displaced" => TombstoneReason::Displaced,
                _ => return Err(not_ours("a tombstone with an unknown reason")),
            };
            Ok(Row::Record {
                id: id.clone(),
                version: RecordVersion::Gone(Tombstone {
                    rev,
                    deleted_at,
                    reason,
                }),
            })
        }
        [kind, object_type, object_id, k] if kind == "meta" => Ok(Row::Meta {
            key: MetaKey::new(object_type, object_id, k),
            version: MetaVersion::Gone {
                rev,
                deleted_at,
                emptied: get(o, "reason").as_string().as_deref() == Some("emptied"),
            },
        }),
        _ => Err(not_ours("a tombstone with a malformed key")),
    }
}

/// A key's version from its live row or, when there is none, its tombstone (each `undefined`
/// when absent).
fn stored_from_js(
    key: &RowKey,
    live: &JsValue,
    tombstone: &JsValue,
) -> StorageResult<Option<Stored>> {
    let (row, found) = if !live.is_undefined() {
        let row = match key {
            RowKey::Record(_) => {
                let record = record_from_js(live)?;
                Row::Record {
                    id: record.id.clone(),
                    version: RecordVersion::Live(record.to_live()),
                }
            }
            RowKey::Meta(_) => meta_change_from_js(live)?,
        };
        (row, live)
    } else if !tombstone.is_undefined() {
        (tombstone_from_js(tombstone)?, tombstone)
    } else {
        return Ok(None);
    };
    let dirty = get(found, "dirty");
    Ok(Some(Stored {
        seq: seq_of(found, "seq")?,
        dirty: if dirty.is_undefined() {
            None
        } else {
            Some(seq_of(found, "dirty")?)
        },
        row,
    }))
}

/// A replicated meta row as the change feeds carry it.
fn meta_change_from_js(o: &JsValue) -> StorageResult<Row> {
    let row = meta_from_js(o)?;
    Ok(Row::Meta {
        key: row.key,
        version: MetaVersion::Value {
            rev: opt_rev(o, "rev")?.unwrap_or(Rev::ZERO),
            value: row.value,
        },
    })
}

fn range(r: Result<KeyRange, idb::Error>) -> StorageResult<Query> {
    r.map(Query::from).map_err(idb_error("build a key range"))
}

/// Every key of the object `[object_type, object_id, *]`: arrays sort after strings in IndexedDB
/// key order, so `[t, id, []]` bounds every `[t, id, key]` from above.
fn object_range(object_type: &str, object_id: &str) -> StorageResult<Query> {
    let lower = key_array(&[object_type, object_id]);
    let upper: JsValue = [
        JsValue::from_str(object_type),
        JsValue::from_str(object_id),
        Array::new().into(),
    ]
    .into_iter()
    .collect::<Array>()
    .into();
    range(KeyRange::bound(&lower, &upper, Some(false), Some(false)))
}

/// Every key `[object_type, *, *]` (arrays sort after strings, as in [`object_range`]).
fn object_type_range(object_type: &str) -> StorageResult<Query> {
    let lower = key_array(&[object_type]);
    let upper: JsValue = [JsValue::from_str(object_type), Array::new().into()]
        .into_iter()
        .collect::<Array>()
        .into();
    range(KeyRange::bound(&lower, &upper, Some(false), Some(false)))
}

// ---------------------------------------------------------------- the backend

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Connection {
    Open,
    ClosedByUs,
    /// Another tab upgraded or deleted the database; the browser asked us to let go.
    ClosedByVersionChange,
}

/// The IndexedDB backend. One instance is one connection; several (tabs, or several `Vault`s in
/// one page) may share a database.
pub struct IdbStorage {
    name: String,
    db: Database,
    state: Rc<Cell<Connection>>,
    /// About how many records the store holds: counted once, when a bulk read first needs it,
    /// then kept up by this connection's commits (other tabs' writes make it drift, which only
    /// makes a bulk read choose the slower of two correct ways).
    records_estimate: Rc<Cell<Option<u64>>>,
    /// The seq counter as this connection's last batch left it (`None`: not known, e.g. after
    /// a failed batch). A small batch assumes it instead of waiting to read it first.
    seq_counter: Rc<Cell<Option<u64>>>,
    /// Where this connection's last listing pages ended (see [`Bookmark`]), all at one seq.
    bookmarks: Rc<RefCell<Vec<Bookmark>>>,
    /// How many live and soft-deleted records the store holds, as this connection last counted
    /// them and kept them up with its own batches (see [`Tally`]).
    tally: Rc<Cell<Option<Tally>>>,
}

/// How many live and soft-deleted records the store holds at seq counter `seq`. IndexedDB
/// counts by walking what it counts (`recordCount()` of 20,000 records: about 90 ms), so a
/// connection counts once and then moves the tally with each batch it commits, which knows
/// what it inserted, deleted, soft-deleted and restored. Every write of a record moves the seq
/// counter, in any tab (but `ClearAll`, which a batch tallies as not known), so a tally is
/// current exactly while the counter is at its `seq`: another tab's write, or a batch whose
/// change is not known (a merge's rows, a `ClearAll`), means counting again.
#[derive(Clone, Copy, Debug)]
struct Tally {
    seq: u64,
    live: u64,
    trashed: u64,
}

impl Tally {
    /// How many records `state` admits.
    fn of(self, state: SoftDeleted) -> u64 {
        match state {
            SoftDeleted::Include => self.live + self.trashed,
            SoftDeleted::Exclude => self.live,
            SoftDeleted::Only => self.trashed,
        }
    }

    /// This tally after a batch that moved the counter to `seq` and the counts by `change`.
    fn moved(self, seq: u64, (live, trashed): (i64, i64)) -> Option<Tally> {
        Some(Tally {
            seq,
            live: self.live.checked_add_signed(live)?,
            trashed: self.trashed.checked_add_signed(trashed)?,
        })
    }
}

/// Where a listing page ended, so that a later page of the same listing further on starts
/// there instead of stepping over every record before it again: IndexedDB's `advance` is linear
/// in its count (a page at offset 10,000 of 20,000 records took about 30 times the first one),
/// so paging on through a vault, as a list that loads more on scroll does, cost the square of
/// its length. A connection keeps the ends of its last [`BOOKMARKS`] pages, so that going back
/// a page also starts from the end of the one before it.
#[derive(Clone)]
struct Bookmark {
    /// The listing: its order, direction and soft-deleted state. One filtered on expiry
    /// depends on the time and takes none.
    shape: (OrderBy, bool, SoftDeleted),
    /// The cursor key of the page's last record: its key in the order's index (unique in each:
    /// the token, or `[time, id]`) or its id.
    key: JsValue,
    /// How many records the listing admits up to and including that one.
    through: usize,
    /// The seq counter when the page was read. Every write of a record takes a new seq, in this
    /// tab or another (records are replicated rows), so while the counter is unchanged every
    /// record is where it was. `ClearAll` takes none, but leaves no record to be misplaced, and
    /// every record written after it takes a new seq.
    seq: u64,
}

/// How many page ends a connection keeps ([`Bookmark`]), the oldest dropped first: enough for a
/// pager's "previous" to find the end of the page before the one it goes back to.
const BOOKMARKS: usize = 32;

/// Up to this many soft-deleted records, a page of them reads them all through their index
/// (one request, about as fast as walking the listing past a few dozen records) rather than
/// count the live records to choose.
const FEW_TRASHED: u32 = 500;

/// At most this many inserts in a batch that assumes the seq counter: each looks its id up
/// among the tombstones, where a larger batch reads them once (or learns there are more than
/// it inserts) and waits for that.
const ASSUMING_INSERTS: usize = 16;

impl std::fmt::Debug for IdbStorage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IdbStorage")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

impl IdbStorage {
    /// Open (creating or upgrading) the database `name` at the current schema.
    pub async fn open(name: &str) -> StorageResult<Self> {
        Self::open_with(name, MIGRATIONS, BLOCKED_TIMEOUT_MS).await
    }

    /// Open with an explicit schema history and blocked timeout (tests simulate later releases).
    pub async fn open_with(
        name: &str,
        migrations: &'static [Migration],
        blocked_timeout_ms: u32,
    ) -> StorageResult<Self> {
        let factory = Factory::new().map_err(|e| match carried(&e) {
            Some(js) => from_js(&js, "open (IndexedDB is unavailable here)"),
            None => StorageError::Backend {
                original: Default::default(),
                name: Some("NotSupportedError".into()),
                message: "IndexedDB is not available in this runtime; use the memory backend"
                    .into(),
            },
        })?;
        let version = migrations.len() as u32;
        let mut request = factory
            .open(name, Some(version))
            .map_err(idb_error("open the database"))?;

        let upgrade_failure: Rc<Cell<Option<StorageError>>> = Rc::default();
        let failure = upgrade_failure.clone();
        let upgrade_error = {
            let name = name.to_owned();
            move |why: &dyn std::fmt::Display| StorageError::Backend {
                original: Default::default(),
                name: Some("UpgradeError".into()),
                message: format!(
                    "could not create or upgrade IndexedDB database \"{name}\": {why}"
                ),
            }
        };
        request.on_upgrade_needed(move |event| {
            let start = || -> Result<(usize, Database, Transaction), String> {
                let from = event.old_version().map_err(|e| idb_message(&e))? as usize;
                let db = event.database().map_err(|e| idb_message(&e))?;
                let request: OpenDatabaseRequest = event.target().map_err(|e| idb_message(&e))?;
                let upgrade = request.transaction().ok_or("no upgrade transaction")?;
                Ok((from, db, upgrade))
            };
            match start() {
                Ok((from, db, upgrade)) => {
                    let stores = db.store_names();
                    if from > 0
                        && !(stores.iter().any(|s| s == RECORDS)
                            && stores.iter().any(|s| s == META))
                    {
                        // Someone else's database: refuse it untouched, as a current one is.
                        failure.set(Some(not_ours(
                            "a database of the name given in options.name",
                        )));
                        let _ = upgrade.abort();
                        return;
                    }
                    // The steps run as a task started now, in a microtask of this event, while
                    // the upgrade transaction is active; each awaited request keeps it so.
                    wasm_bindgen_futures::spawn_local(async move {
                        let mut outcome = Ok(());
                        for step in migrations.iter().skip(from) {
                            outcome = step(&db, &upgrade).await;
                            if outcome.is_err() {
                                break;
                            }
                        }
                        if let Err(e) = outcome {
                            // Aborting the upgrade fails the open request (a request that
                            // failed has aborted it already); report why.
                            failure.set(Some(upgrade_error(&e)));
                            let _ = upgrade.abort();
                        }
                    })
                }
                Err(message) => {
                    failure.set(Some(upgrade_error(&message)));
                    if let Ok(db) = event.database() {
                        db.close();
                    }
                }
            }
        });
        let (blocked_tx, blocked_rx) = futures::channel::oneshot::channel::<()>();
        request.on_blocked(move |_| {
            let _ = blocked_tx.send(());
        });

        let opening = std::future::IntoFuture::into_future(request);
        let blocked = async move {
            if blocked_rx.await.is_ok() {
                crate::platform::sleep_ms(blocked_timeout_ms).await;
            } else {
                futures::future::pending::<()>().await;
            }
        };
        let mut db = match select(Box::pin(opening), Box::pin(blocked)).await {
            Either::Left((result, _)) => result.map_err(|e| {
                upgrade_failure
                    .take()
                    .unwrap_or_else(|| idb_error("open the database")(e))
            })?,
            Either::Right(((), still_opening)) => {
                // Keep the request alive so a late success is closed, not leaked.
                wasm_bindgen_futures::spawn_local(async move {
                    if let Ok(db) = still_opening.await {
                        db.close();
                    }
                });
                return Err(StorageError::Backend {
                    original: Default::default(),
                    name: Some("BlockedError".into()),
                    message: format!(
                        "opening IndexedDB database \"{name}\" is blocked: another tab keeps an older version of it open; close other tabs of this app and retry"
                    ),
                });
            }
        };
        let stores = db.store_names();
        // Only the schema-1 stores: a database opened at an earlier schema (tests build one)
        // fails its transactions instead, with the browser's NotFoundError.
        if !stores.iter().any(|s| s == RECORDS) || !stores.iter().any(|s| s == META) {
            db.close();
            return Err(not_ours("a database of the name given in options.name"));
        }
        let state = Rc::new(Cell::new(Connection::Open));
        let on_change = state.clone();
        db.on_version_change(move |event| {
            // Let the other tab's upgrade or delete proceed; this connection is done.
            on_change.set(Connection::ClosedByVersionChange);
            if let Ok(db) = event.database() {
                db.close();
            }
        });
        Ok(IdbStorage {
            name: name.to_owned(),
            db,
            state,
            records_estimate: Rc::default(),
            seq_counter: Rc::default(),
            bookmarks: Rc::default(),
            tally: Rc::default(),
        })
    }

    /// The seq counter `batch` may assume rather than wait for: the one this connection last
    /// committed, for a small batch of inserts and meta rows, which would otherwise wait for
    /// nothing else before writing (it reads no record first). A batch is one IndexedDB
    /// transaction, so the wait it saves is a round trip to the browser's storage process on
    /// every `tokenCreate`. Only such batches: when the counter has moved (another tab, or a
    /// batch of this connection begun before the last one committed), the batch's requests
    /// are issued for nothing and it runs again, which a page of pulled rows must not pay.
    ///
    /// And only a batch that renews the write epoch (a `tokenCreate`'s does) and does nothing
    /// else with it: the epoch is kept in the counter's row, which the batch writes back whole,
    /// so it must not depend on what the row holds of it. The check then needs only the seq:
    /// another connection's write of the epoch alone, which leaves the seq where it was, comes
    /// before this batch's renewal, as it would had this batch read the row.
    fn may_assume_seq(&self, batch: &[WriteOp]) -> Option<u64> {
        let assumed = self.seq_counter.get()?;
        let mut inserts = 0;
        let mut renews_epoch = false;
        for op in batch {
            match op {
                WriteOp::InsertRecord(_) => inserts += 1,
                WriteOp::PutMeta(row) if is_write_epoch(&row.key) => renews_epoch = true,
                op if write::on_write_epoch(op) => return None,
                WriteOp::InsertMeta(_)
                | WriteOp::PutMeta(_)
                | WriteOp::PutSharedMeta(_)
                | WriteOp::DeleteMeta(_)
                | WriteOp::ExpectMeta { .. } => {}
                _ => return None,
            }
        }
        (renews_epoch && inserts <= ASSUMING_INSERTS && batch.iter().any(write::writes_replicated))
            .then_some(assumed)
    }

    fn open_transaction(&self, mode: TransactionMode) -> StorageResult<Transaction> {
        match self.state.get() {
            Connection::ClosedByUs => return Err(StorageError::Closed),
            Connection::ClosedByVersionChange => {
                return Err(StorageError::Backend {
                    original: Default::default(),
                    name: Some("VersionChangeError".into()),
                    message: format!(
                        "IndexedDB database \"{}\" was upgraded or deleted in another tab, which closed this connection; reload the page to continue",
                        self.name
                    ),
                });
            }
            Connection::Open => {}
        }
        self.db
            .transaction(&STORES, mode)
            .map_err(idb_error("start a transaction"))
    }

    /// A reader over the stores of `tx`.
    fn reader_in(&self, tx: &Transaction) -> StorageResult<Reader> {
        let store =
            |name: &str, doing: &'static str| tx.object_store(name).map_err(idb_error(doing));
        Ok(Reader {
            records: store(RECORDS, "open the records store")?,
            meta: store(META, "open the meta store")?,
            tombstones: store(TOMBSTONES, "open the tombstones store")?,
            counters: store(COUNTERS, "open the counters store")?,
            records_estimate: self.records_estimate.clone(),
        })
    }
}

/// How `Reader::records_by` finds records.
#[derive(Clone, Copy)]
enum Lookup {
    Token,
    Id,
}

/// Reads in one transaction.
#[derive(Clone)]
struct Reader {
    records: idb::ObjectStore,
    meta: idb::ObjectStore,
    tombstones: idb::ObjectStore,
    counters: idb::ObjectStore,
    records_estimate: Rc<Cell<Option<u64>>>,
}

/// From this many keys on, a read may go through the store a page at a time instead of a request
/// per key: in Chromium a point read costs 20-70 µs and a row of a page about 8 µs, so reading
/// pages wins once the keys are a fifth of the store or more.
const BULK_KEYS: usize = 256;
/// Rows per page of such a read.
const BULK_PAGE: u32 = 2_000;

/// Which record ids a store holds, live and as tombstones ([`Reader::record_presence`]).
struct Presence {
    live: js_sys::Set,
    /// `None`: not read (too many); every id may have one.
    tombstones: Option<js_sys::Set>,
}

impl Presence {
    /// Whether `id` may have a live row, and a tombstone.
    fn of(&self, id: &str) -> (bool, bool) {
        let id = JsValue::from_str(id);
        (
            self.live.has(&id),
            self.tombstones.as_ref().is_none_or(|t| t.has(&id)),
        )
    }
}

impl Reader {
    /// The record of each token or id, in order, in one round trip: every request issued at
    /// once, or, for many keys that are a good part of the store, the store read in pages.
    async fn records_by(
        &self,
        keys: &[String],
        lookup: Lookup,
    ) -> StorageResult<Vec<Option<Record>>> {
        if self.worth_scanning(keys.len()).await? {
            return self.records_by_scan(keys, lookup).await;
        }
        let token_index = match lookup {
            Lookup::Token => Some(
                self.records
                    .index("token")
                    .map_err(idb_error("open the token index"))?,
            ),
            Lookup::Id => None,
        };
        let mut requests = Vec::with_capacity(keys.len());
        for key in keys {
            let key = JsValue::from_str(key);
            let request = match &token_index {
                Some(index) => index.get(key),
                None => self.records.get(key),
            }
            .map_err(idb_error("read a record"))?;
            requests.push(request);
        }
        all_from_js(in_order(requests, "read a record").await?, |row| {
            (!row.is_undefined())
                .then(|| record_from_js(row))
                .transpose()
        })
    }

    /// Whether `keys` rows are worth reading by going through every record (or every record
    /// link, of which there is at most one per record) rather than one by one.
    async fn worth_scanning(&self, keys: usize) -> StorageResult<bool> {
        if keys < BULK_KEYS {
            return Ok(false);
        }
        let total = match self.records_estimate.get() {
            Some(n) => n,
            None => {
                let n = u64::from(self.records.count(None).done("count records").await?);
                self.records_estimate.set(Some(n));
                n
            }
        };
        Ok(keys as u64 * 5 >= total)
    }

    /// [`Reader::records_by`] for many keys: the store a page at a time, keeping the wanted rows.
    async fn records_by_scan(
        &self,
        keys: &[String],
        lookup: Lookup,
    ) -> StorageResult<Vec<Option<Record>>> {
        let field = match lookup {
            Lookup::Token => "token",
            Lookup::Id => "id",
        };
        // Keyed by owned strings: the batch's map of records has this type already (one
        // instantiation of the map's code in the download, not two).
        let mut found: HashMap<String, Option<Record>> =
            keys.iter().map(|k| (k.clone(), None)).collect();
        let mut after: Option<String> = None;
        loop {
            let page = self.page(after.as_deref(), BULK_PAGE).await?;
            let rows = page.len() as u32;
            for row in &page {
                if let Some(slot) = found.get_mut(text(row, field)?.as_str()) {
                    *slot = Some(record_from_js(row)?);
                }
            }
            match page.last() {
                Some(last) if rows == BULK_PAGE => after = Some(text(last, "id")?),
                _ => break,
            }
        }
        Ok(keys
            .iter()
            .map(|k| found.get(k).cloned().flatten())
            .collect())
    }

    /// Up to `limit` raw record rows in id order, after `after_id`.
    async fn page(&self, after_id: Option<&str>, limit: u32) -> StorageResult<Vec<JsValue>> {
        let query = match after_id {
            Some(id) => Some(range(KeyRange::lower_bound(
                &JsValue::from_str(id),
                Some(true),
            ))?),
            None => None,
        };
        self.records
            .get_all(query, Some(limit))
            .done("scan records")
            .await
    }

    async fn scan(&self, after_id: Option<&str>, limit: usize) -> StorageResult<Vec<Record>> {
        let limit = u32::try_from(limit).unwrap_or(u32::MAX);
        all_from_js(self.page(after_id, limit).await?, record_from_js)
    }

    async fn meta_get(&self, key: &MetaKey) -> StorageResult<Option<String>> {
        if is_write_epoch(key) {
            return Ok(self.counter().await?.writes);
        }
        let found = self
            .meta
            .get(meta_key_js(key))
            .done("read a meta row")
            .await?;
        Ok(found
            .as_ref()
            .map(meta_from_js)
            .transpose()?
            .map(|m| m.value))
    }

    /// The seq counter's row (the last seq given out, the write epoch).
    async fn counter(&self) -> StorageResult<write::Counter> {
        write::Counter::read(
            self.counters
                .get(JsValue::from_str(SEQ_COUNTER))
                .map_err(idb_error("read the seq counter"))?
                .await,
        )
    }

    async fn meta_count(&self, object_type: &str) -> StorageResult<u64> {
        let count = self
            .meta
            .count(Some(object_type_range(object_type)?))
            .done("count meta rows")
            .await?;
        Ok(u64::from(count))
    }

    /// Every row of every object of `object_type` holding `key` = `value`.
    async fn objects_holding(
        &self,
        object_type: &str,
        key: &str,
        value: &str,
    ) -> StorageResult<Vec<MetaRow>> {
        let mut holders: Vec<String> = self
            .find(object_type, key, value)
            .await?
            .into_iter()
            .map(|row| row.key.object_id)
            .collect();
        holders.dedup();
        let mut rows = Vec::new();
        if self.worth_scanning(holders.len()).await? {
            // Many holders (a rekey's record links): every row of the type in one read.
            let holders: std::collections::HashSet<&str> =
                holders.iter().map(String::as_str).collect();
            let all = self
                .meta
                .get_all(Some(object_type_range(object_type)?), None)
                .done("read meta rows")
                .await?;
            for row in all.iter() {
                if holders.contains(text(row, "objectId")?.as_str()) {
                    rows.push(meta_from_js(row)?);
                }
            }
        } else {
            let mut requests = Vec::with_capacity(holders.len());
            for id in &holders {
                requests.push(
                    self.meta
                        .get_all(Some(object_range(object_type, id)?), None)
                        .map_err(idb_error("read meta rows"))?,
                );
            }
            for object in in_order(requests, "read meta rows").await? {
                for row in Array::from(&object).iter() {
                    rows.push(meta_from_js(&row)?);
                }
            }
        }
        sorting::sort(&mut rows);
        Ok(rows)
    }

    async fn object(&self, object_type: &str, object_id: &str) -> StorageResult<Vec<MetaRow>> {
        let rows = self
            .meta
            .get_all(Some(object_range(object_type, object_id)?), None)
            .done("read meta rows")
            .await?;
        all_from_js(rows, meta_from_js)
    }

    fn by_value(&self) -> StorageResult<idb::Index> {
        self.meta
            .index("by_value")
            .map_err(idb_error("open the meta index"))
    }

    async fn find(&self, object_type: &str, key: &str, value: &str) -> StorageResult<Vec<MetaRow>> {
        let rows = self
            .by_value()?
            .get_all(
                Some(Query::from(key_array(&[object_type, key, value]))),
                None,
            )
            .done("look up meta rows")
            .await?;
        all_from_js(rows, meta_from_js)
    }

    /// Records the filter names by token or id (point lookups), if it names any.
    async fn named(&self, filter: &RecordFilter) -> StorageResult<Option<Vec<Record>>> {
        let found = if let Some(tokens) = filter.candidate_tokens() {
            self.records_by(&tokens, Lookup::Token).await?
        } else if let Some(ids) = filter.candidate_ids() {
            self.records_by(&ids, Lookup::Id).await?
        } else {
            return Ok(None);
        };
        Ok(Some(found.into_iter().flatten().collect()))
    }
}

impl Reader {
    /// A page of `filter` (which names no ids or tokens), read through the index of its order.
    /// When every record in that index (or range of it) is one the filter admits (it includes
    /// soft-deleted records, or the store holds none of the state it leaves out, and
    /// `expiredOnly` only with the expiry order), the offset is one `advance` of a key cursor
    /// over index entries and `limit` records are read from the key it reaches. With
    /// soft-deleted records beside live ones, the soft-deleted are read through their own
    /// index: for a page of live records that skips at least as many, to count them out of a
    /// few advances ([`skip_live`]); for a page of soft-deleted records, as the page itself
    /// (sorted here) when there are few of them ([`FEW_TRASHED`]) or that reads fewer records
    /// than walking the order past the live ones.
    /// Any other page reads and tests each record, in order, until it is full.
    /// A page at or after the end of one of this connection's last pages of the same listing
    /// starts after the last record of the nearest one ([`Bookmark`]) while the seq counter
    /// shows no write since, so the offset before it costs nothing: paging on, or back, costs
    /// each page, not its offset. A page past the middle of a listing whose length the
    /// connection's [`Tally`] knows at this seq (after a `recordCount`, kept by its own writes)
    /// is stepped to from the listing's far end: a pager's last page costs what its first does.
    async fn list(
        &self,
        filter: &RecordFilter,
        now: i64,
        last_pages: Option<&RefCell<Vec<Bookmark>>>,
        tally: Option<Tally>,
    ) -> StorageResult<Vec<Record>> {
        let by_expiry = filter.expired_only && filter.order_by == OrderBy::ExpiresAt;
        // The trash view: a few soft-deleted records are read through their own index, without
        // counting the live ones (a count is linear in what it counts).
        let mut trashed = None;
        if filter.soft_deleted == SoftDeleted::Only && !filter.expired_only {
            let count = self.count_state(SoftDeleted::Only).await?;
            if count <= FEW_TRASHED || filter.limit.is_none() {
                return Ok(filter.apply(self.trash().await?, now));
            }
            trashed = Some(count);
        }
        // A page of a listing that does not depend on the time may start after a bookmark: the
        // furthest one of its listing at or before its offset.
        let last_pages = last_pages.filter(|_| !filter.expired_only);
        let shape = (filter.order_by, filter.descending, filter.soft_deleted);
        let bookmark = last_pages.and_then(|pages| {
            pages
                .borrow()
                .iter()
                .filter(|b| b.shape == shape && b.through <= filter.offset)
                .max_by_key(|b| b.through)
                .cloned()
        });
        let counter = match last_pages {
            // Issued now, answered while the state is counted.
            Some(_) => Some(std::future::IntoFuture::into_future(
                self.counters
                    .get(JsValue::from_str(SEQ_COUNTER))
                    .map_err(idb_error("read the seq counter"))?,
            )),
            None => None,
        };
        // How many records are of the soft-deleted state the filter leaves out. For a page of
        // soft-deleted records that is the live ones, a walk of all of them to count, which the
        // connection's tally answers while it is current at the seq read here.
        let counted = match filter.soft_deleted {
            SoftDeleted::Only => None,
            state => Some(self.left_out(state).await?),
        };
        let seq = match counter {
            Some(counter) => Some(write::Counter::read(counter.await)?.seq),
            None => None,
        };
        let left_out = match (counted, tally.filter(|t| Some(t.seq) == seq)) {
            (Some(n), _) => n,
            (None, Some(t)) => u32::try_from(t.of(SoftDeleted::Exclude)).unwrap_or(u32::MAX),
            (None, None) => self.left_out(filter.soft_deleted).await?,
        };
        let exact = (!filter.expired_only || by_expiry) && left_out == 0;
        let bookmark = bookmark.filter(|b| Some(b.seq) == seq);
        // How many records the listing holds, when the connection's tally says so at this seq
        // (read in this transaction): a page past the middle is then found from the far end.
        let listed = match (tally, seq) {
            (Some(t), Some(seq)) if exact && !filter.expired_only && t.seq == seq => {
                Some(usize::try_from(t.of(filter.soft_deleted)).unwrap_or(usize::MAX))
            }
            _ => None,
        };
        if listed.is_some_and(|n| filter.offset >= n) {
            return Ok(Vec::new());
        }
        // Soft-deleted records beside live ones, read through their own index when that costs
        // less than walking the order past the records the filter leaves out (`Self::trash`).
        let trash_in_order = match (
            exact || filter.expired_only || bookmark.is_some(),
            filter.soft_deleted,
        ) {
            (false, SoftDeleted::Only) => {
                // Walking the order to fill the page visits about (offset + limit) × all ÷
                // trashed records, reading the trash `trashed` of them: the fewer wins.
                let trashed = u64::from(trashed.unwrap_or(0));
                let end = filter.offset.saturating_add(filter.limit.unwrap_or(0)) as u64;
                if trashed * trashed <= end.saturating_mul(trashed + u64::from(left_out)) {
                    return Ok(filter.apply(self.trash().await?, now));
                }
                None
            }
            // Each record before the offset would be read; the trash's, once.
            (false, SoftDeleted::Exclude) if left_out as usize <= filter.offset => {
                let mut trash = self.trash().await?;
                sorting::sort_by(&mut trash, |a, b| filter.compare(a, b));
                Some(trash)
            }
            _ => None,
        };
        let (index, query) = order_source(filter.order_by, by_expiry.then_some(now))?;
        let direction = if filter.descending {
            CursorDirection::Prev
        } else {
            CursorDirection::Next
        };
        let mut skip = filter.offset;
        let query = match &bookmark {
            // The records after the bookmarked one, in the listing's direction.
            Some(b) => {
                skip -= b.through;
                Some(range(if filter.descending {
                    KeyRange::upper_bound(&b.key, Some(true))
                } else {
                    KeyRange::lower_bound(&b.key, Some(true))
                })?)
            }
            None => query,
        };
        let index = match index {
            None => None,
            Some(name) => Some(
                self.records
                    .index(name)
                    .map_err(idb_error("open a listing index"))?,
            ),
        };
        let mut out = Vec::new();
        let mut query = query;
        // The steps from the listing's far end to the page's first record, when fewer than
        // from its start (or bookmark).
        let from_end = listed
            .and_then(|n| n.checked_sub(filter.offset + 1))
            .filter(|back| *back < skip);
        if (exact && skip > 0) || trash_in_order.is_some() {
            // The offset is stepped over on a key cursor, which reads no record: on an on-disk
            // Chromium profile, `advance(10_000)` over the `created` index takes about 51 ms
            // on a key cursor and 116 ms on a value cursor (over the store: 7 and 24 ms). The
            // page then starts at the key reached, which is unique in every listing index.
            let (key_query, key_direction, steps) = match from_end {
                // The whole index: `exact` without `expiredOnly` has no range.
                Some(back) => (
                    None,
                    if filter.descending {
                        CursorDirection::Next
                    } else {
                        CursorDirection::Prev
                    },
                    back,
                ),
                None => (query.clone(), direction, skip),
            };
            let open = match &index {
                None => self.records.open_key_cursor(key_query, Some(key_direction)),
                Some(index) => index.open_key_cursor(key_query, Some(key_direction)),
            };
            let Some(keys) = open.done("open a key cursor").await? else {
                return Ok(out);
            };
            let mut keys = keys.into_managed();
            match &trash_in_order {
                Some(trash) => skip_live(&mut keys, filter, trash, steps).await?,
                // `advance(0)` throws; the far end's first key is the page's.
                None if steps == 0 => {}
                None => keys
                    .advance(u32::try_from(steps).unwrap_or(u32::MAX))
                    .await
                    .map_err(idb_error("skip a page's offset"))?,
            }
            // An offset past the end finishes the cursor: an empty page.
            let Some(key) = keys.key().map_err(idb_error("read a key cursor"))? else {
                return Ok(out);
            };
            query = Some(range(match (filter.descending, by_expiry) {
                (true, _) => KeyRange::upper_bound(&key, Some(false)),
                // Still below the expiry order's bound, now.
                (false, true) => {
                    KeyRange::bound(&key, &key_array_num(now), Some(false), Some(true))
                }
                (false, false) => KeyRange::lower_bound(&key, Some(false)),
            })?);
            skip = 0;
        }
        let open = match &index {
            None => self.records.open_cursor(query, Some(direction)),
            Some(index) => index.open_cursor(query, Some(direction)),
        };
        let limit = filter.limit.unwrap_or(usize::MAX);
        let Some(cursor) = open.done("open a cursor").await? else {
            return Ok(out);
        };
        let mut cursor = cursor.into_managed();
        let mut last_key = None;
        while out.len() < limit
            && let Some(value) = cursor.value().map_err(idb_error("read a cursor"))?
        {
            let record = record_from_js(&value)?;
            if exact || filter.matches(&record, now) {
                if skip > 0 {
                    skip -= 1;
                } else {
                    out.push(record);
                    if out.len() == limit {
                        last_key = cursor.key().map_err(idb_error("read a cursor"))?;
                    }
                }
            }
            if out.len() < limit {
                cursor
                    .next(None)
                    .await
                    .map_err(idb_error("advance a cursor"))?;
            }
        }
        if let (Some(last_pages), Some(seq), Some(key)) = (last_pages, seq, last_key) {
            let mut pages = last_pages.borrow_mut();
            let through = filter.offset.saturating_add(out.len());
            // Bookmarks of another seq no longer say where anything is; one of this page's end
            // is replaced.
            pages.retain(|b| b.seq == seq && (b.shape, b.through) != (shape, through));
            if pages.len() >= BOOKMARKS {
                pages.remove(0);
            }
            pages.push(Bookmark {
                shape,
                key,
                through,
                seq,
            });
        }
        Ok(out)
    }

    /// Whether every record is of the soft-deleted state `state` admits (always, for both).
    async fn holds_only(&self, state: SoftDeleted) -> StorageResult<bool> {
        Ok(self.left_out(state).await? == 0)
    }

    /// How many records `state` admits: from the connection's tally while the seq counter
    /// shows it current, else counted by the indexes (without reading a single record) and
    /// tallied.
    async fn tallied(&self, tally: &Cell<Option<Tally>>, state: SoftDeleted) -> StorageResult<u64> {
        let seq = self.counter().await?.seq;
        let current = match tally.get() {
            Some(t) if t.seq == seq => t,
            _ => {
                let trashed = u64::from(self.count_state(SoftDeleted::Only).await?);
                let all = u64::from(self.count_state(SoftDeleted::Include).await?);
                let t = Tally {
                    seq,
                    live: all.saturating_sub(trashed),
                    trashed,
                };
                tally.set(Some(t));
                t
            }
        };
        Ok(current.of(state))
    }

    /// How many records are of the soft-deleted state `state` leaves out (none, for both): one
    /// count of the `deleted` index.
    async fn left_out(&self, state: SoftDeleted) -> StorageResult<u32> {
        match state {
            SoftDeleted::Include => Ok(0),
            SoftDeleted::Exclude => self.count_state(SoftDeleted::Only).await,
            SoftDeleted::Only => self.count_state(SoftDeleted::Exclude).await,
        }
    }

    /// Every soft-deleted record, in one request on the `deleted` index.
    async fn trash(&self) -> StorageResult<Vec<Record>> {
        let rows = self
            .records
            .index("deleted")
            .map_err(idb_error("open the deleted index"))?
            .get_all(Some(Query::from(JsValue::from_f64(1.0))), None)
            .done("read the soft-deleted records")
            .await?;
        all_from_js(rows, record_from_js)
    }

    /// How many records `state` admits, counted by the `deleted` index (or the store).
    async fn count_state(&self, state: SoftDeleted) -> StorageResult<u32> {
        let count = match state {
            SoftDeleted::Include => self.records.count(None),
            _ => self
                .records
                .index("deleted")
                .map_err(idb_error("open the deleted index"))?
                .count(Some(Query::from(JsValue::from_f64(f64::from(u8::from(
                    state == SoftDeleted::Only,
                )))))),
        };
        count.done("count records").await
    }

    fn identity_index(&self) -> StorageResult<idb::Index> {
        self.records
            .index("identity")
            .map_err(idb_error("open the identity index"))
    }

    /// Every key of the `identity` index `[identity_id, *]` (after `after_id`, if given).
    fn linked_range(identity_id: &str, after_id: Option<&str>) -> StorageResult<Query> {
        let upper: JsValue = [JsValue::from_str(identity_id), Array::new().into()]
            .into_iter()
            .collect::<Array>()
            .into();
        let lower = match after_id {
            Some(id) => key_array(&[identity_id, id]),
            None => key_array(&[identity_id]),
        };
        range(KeyRange::bound(
            &lower,
            &upper,
            Some(after_id.is_some()),
            Some(false),
        ))
    }

    async fn linked_to(
        &self,
        identity_id: &str,
        after_id: Option<&str>,
        limit: usize,
    ) -> StorageResult<Vec<Record>> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        let limit = u32::try_from(limit).unwrap_or(u32::MAX);
        let rows = self
            .identity_index()?
            .get_all(
                Some(Self::linked_range(identity_id, after_id)?),
                Some(limit),
            )
            .done("read an identity's records")
            .await?;
        all_from_js(rows, record_from_js)
    }

    async fn linked_count(&self, identity_id: Option<&str>) -> StorageResult<u64> {
        let range = identity_id
            .map(|id| Self::linked_range(id, None))
            .transpose()?;
        let n = self
            .identity_index()?
            .count(range)
            .done("count linked records")
            .await?;
        Ok(u64::from(n))
    }

    /// The live row and the tombstone of each key, requested at once, in key order: two
    /// requests per key (`undefined` where there is none). A local meta key has no version, so
    /// neither is read.
    /// The reads of `key`'s live row and of its tombstone, each only if asked for (`live`,
    /// `tombstone`); `None` for a local meta key, which has no version.
    fn version_gets(
        &self,
        key: &RowKey,
        live: bool,
        tombstone: bool,
    ) -> StorageResult<Option<(Option<GetStoreRequest>, Option<GetStoreRequest>)>> {
        let doing = "read a row's version";
        let (store, row_key, tombstone_key) = match key {
            RowKey::Meta(k) if !is_replicated(k) => return Ok(None),
            RowKey::Record(id) => (
                &self.records,
                JsValue::from_str(id),
                record_tombstone_key(id),
            ),
            RowKey::Meta(k) => (&self.meta, meta_key_js(k), meta_tombstone_key(k)),
        };
        let live = live
            .then(|| store.get(row_key).map_err(idb_error(doing)))
            .transpose()?;
        let tombstone = tombstone
            .then(|| self.tombstones.get(tombstone_key).map_err(idb_error(doing)))
            .transpose()?;
        Ok(Some((live, tombstone)))
    }

    /// The version of each key (see [`Storage::versions`]), in one round trip.
    async fn versions(&self, keys: &[RowKey]) -> StorageResult<Vec<Option<Stored>>> {
        // A loop, not a `collect` into a `Result` (smaller in the engine).
        let mut versions = Vec::with_capacity(keys.len());
        for (found, key) in self.raw_versions(keys).await?.iter().zip(keys) {
            versions.push(match found {
                Some((live, tombstone)) => stored_from_js(key, live, tombstone)?,
                None => None,
            });
        }
        Ok(versions)
    }

    /// The live row and the tombstone of each key as stored (`undefined` where there is none),
    /// in one round trip, or two when many record keys are a good part of the store (see
    /// [`Reader::record_presence`]); `None` for a local meta key, which has no version.
    async fn raw_versions(
        &self,
        keys: &[RowKey],
    ) -> StorageResult<Vec<Option<(JsValue, JsValue)>>> {
        let doing = "read a row's version";
        let presence = self.record_presence(keys).await?;
        let mut requests = Vec::with_capacity(2 * keys.len());
        // Per key: where its live row's and its tombstone's results are in `requests`, if read.
        let mut slots = Vec::with_capacity(keys.len());
        for key in keys {
            let (live, tombstone) = match (key, &presence) {
                (RowKey::Record(id), Some(p)) => p.of(id),
                _ => (true, true),
            };
            let Some((live, tombstone)) = self.version_gets(key, live, tombstone)? else {
                slots.push(None);
                continue;
            };
            let mut slot = |request: Option<GetStoreRequest>| {
                request.map(|request| {
                    requests.push(request);
                    requests.len() - 1
                })
            };
            let live = slot(live);
            let tombstone = slot(tombstone);
            slots.push(Some((live, tombstone)));
        }
        let found = in_order(requests, doing).await?;
        let at = |i: Option<usize>| i.map_or(JsValue::UNDEFINED, |i| found[i].clone());
        Ok(slots
            .into_iter()
            .map(|slot| slot.map(|(live, tombstone)| (at(live), at(tombstone))))
            .collect())
    }

    /// For many record keys that are a good part of the store (a pulled page of a first sync):
    /// which ids have a live row and which a tombstone, read from the stores' keys, so only
    /// those are read row by row. A point read costs 20-70 µs in Chromium and a key of a
    /// `getAllKeys` about a microsecond. `None`: read every key.
    async fn record_presence(&self, keys: &[RowKey]) -> StorageResult<Option<Presence>> {
        let ids = keys
            .iter()
            .filter(|k| matches!(k, RowKey::Record(_)))
            .count();
        if !self.worth_scanning(ids).await? {
            return Ok(None);
        }
        let doing = "read the stored record ids";
        let range = tombstone_kind_range("record")?;
        let live = self
            .records
            .get_all_keys(None, None)
            .map_err(idb_error(doing))?;
        let tombstones = self
            .tombstones
            .count(Some(range))
            .done("count tombstones")
            .await?;
        // JavaScript sets: the ids stay JavaScript strings, and the engine carries no hash set
        // code for them.
        let live = js_sys::Set::new(&idb::Request::result(&live).map_err(idb_error(doing))?);
        // Tombstones are collected after their retention, so there are few; when there are
        // many, each absent id's is read instead.
        let tombstones = if tombstones as usize <= 5 * ids {
            let set = js_sys::Set::new(&JsValue::UNDEFINED);
            if tombstones > 0 {
                let keys = self
                    .tombstones
                    .get_all_keys(Some(tombstone_kind_range("record")?), None)
                    .done(doing)
                    .await?;
                for key in keys {
                    set.add(&Reflect::get_u32(&key, 1).map_err(|_| not_ours("a tombstone key"))?);
                }
            }
            Some(set)
        } else {
            None
        };
        Ok(Some(Presence { live, tombstones }))
    }

    /// Up to `limit` replicated rows of all three stores whose `mark` (`seq` or `dirty`) is
    /// greater than `after`, in mark order: each store's index read at once, then merged.
    async fn feed(
        &self,
        mark: &'static str,
        after: u64,
        limit: usize,
    ) -> StorageResult<Vec<Change>> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        let count = u32::try_from(limit).unwrap_or(u32::MAX);
        let mut requests = Vec::with_capacity(3);
        for store in [&self.records, &self.meta, &self.tombstones] {
            let above = range(KeyRange::lower_bound(
                &JsValue::from_f64(after as f64),
                Some(true),
            ))?;
            let index = store
                .index(mark)
                .map_err(idb_error("open a change index"))?;
            requests.push(
                index
                    .get_all(Some(above), Some(count))
                    .map_err(idb_error("read changes"))?,
            );
        }
        let stores = in_order(requests, "read changes").await?;
        let mut changes = Vec::new();
        for (n, rows) in stores.iter().enumerate() {
            for row in Array::from(rows).iter() {
                let changed = match n {
                    0 => {
                        let record = record_from_js(&row)?;
                        Row::Record {
                            id: record.id.clone(),
                            version: RecordVersion::Live(record.to_live()),
                        }
                    }
                    1 => match meta_change_from_js(&row)? {
                        // Local rows carry no seq; one that did would still not be replicated.
                        Row::Meta { key, .. } if !is_replicated(&key) => continue,
                        meta => meta,
                    },
                    _ => tombstone_from_js(&row)?,
                };
                changes.push(Change {
                    seq: seq_of(&row, mark)?,
                    row: changed,
                });
            }
        }
        sorting::sort_by_key(&mut changes, |c| c.seq);
        changes.truncate(limit);
        Ok(changes)
    }
}

/// Step `keys`, at the first key of `filter`'s order, to its `offset`-th live record (or a
/// soft-deleted one just before it): `advance` over the index entries before it, then over as
/// many more as there were soft-deleted records among them (`trash`, in the listing's order,
/// tells how many, by where each sorts against the key reached), and so on until the live ones
/// before it are `offset`: a few advances of a key cursor, not a read of every record before it.
async fn skip_live(
    keys: &mut idb::ManagedKeyCursor,
    filter: &RecordFilter,
    trash: &[Record],
    offset: usize,
) -> StorageResult<()> {
    // The cursor's place in the order, soft-deleted records included.
    let mut at = 0usize;
    while let Some(key) = keys.key().map_err(idb_error("read a key cursor"))? {
        let key = IndexKey::read(&key, filter.order_by)?;
        // The soft-deleted records listed before the key: below it, or above it when descending.
        let after = if filter.descending {
            Ordering::Less
        } else {
            Ordering::Greater
        };
        let trash_before = trash.partition_point(|t| key.cmp_record(t) == after);
        let live_before = at.saturating_sub(trash_before);
        // Landing on a soft-deleted record is fine: the page leaves it out as it reads.
        if live_before >= offset {
            break;
        }
        let step = offset - live_before;
        keys.advance(u32::try_from(step).unwrap_or(u32::MAX))
            .await
            .map_err(idb_error("skip a page's offset"))?;
        at = at.saturating_add(step);
    }
    Ok(())
}

/// A key of a listing index (`[time, id]` for the time orders, the token) or of the store (the
/// id), read from a key cursor to tell where it sorts against records it did not read.
struct IndexKey {
    order: OrderBy,
    time: Option<f64>,
    text: String,
}

impl IndexKey {
    fn read(key: &JsValue, order: OrderBy) -> StorageResult<Self> {
        let (time, text) = match order {
            OrderBy::Token | OrderBy::Id => (None, key.as_string()),
            OrderBy::CreatedAt | OrderBy::UpdatedAt | OrderBy::ExpiresAt => {
                match key.dyn_ref::<Array>().filter(|a| a.length() == 2) {
                    Some(pair) => (pair.get(0).as_f64(), pair.get(1).as_string()),
                    None => (None, None),
                }
            }
        };
        match (time, text) {
            (time, Some(text))
                if time.is_some() || matches!(order, OrderBy::Token | OrderBy::Id) =>
            {
                Ok(Self { order, time, text })
            }
            _ => Err(not_ours("listing index key")),
        }
    }

    /// Where this key sorts against `r`'s in its index, as IndexedDB orders keys: numbers,
    /// then strings by UTF-16 code units (no expiry sorts as +infinity).
    fn cmp_record(&self, r: &Record) -> Ordering {
        let time = match self.order {
            OrderBy::CreatedAt => r.created_at as f64,
            OrderBy::UpdatedAt => r.updated_at as f64,
            OrderBy::ExpiresAt => r.expires_at.map_or(f64::INFINITY, |t| t as f64),
            OrderBy::Token => return js_string_cmp(&self.text, &r.token),
            OrderBy::Id => return js_string_cmp(&self.text, &r.id),
        };
        // `read` gives every time order's key its time.
        self.time
            .unwrap_or(f64::NAN)
            .total_cmp(&time)
            .then_with(|| js_string_cmp(&self.text, &r.id))
    }
}

/// The index that orders the records by `order` (`None`: the store itself, in id order),
/// and with `expired_before` (the expiry order only) the range of the records expired then:
/// expired means now > expiresAt, every key below [now] in the expiry index.
fn order_source(
    order: OrderBy,
    expired_before: Option<i64>,
) -> StorageResult<(Option<&'static str>, Option<Query>)> {
    let name = match order {
        OrderBy::Id => None,
        OrderBy::CreatedAt => Some("created"),
        OrderBy::UpdatedAt => Some("updated"),
        OrderBy::ExpiresAt => Some("expires"),
        OrderBy::Token => Some("token"),
    };
    let query = match expired_before {
        Some(now) => Some(range(KeyRange::upper_bound(
            &key_array_num(now),
            Some(true),
        ))?),
        None => None,
    };
    Ok((name, query))
}

fn key_array_num(n: i64) -> JsValue {
    [JsValue::from_f64(n as f64)]
        .into_iter()
        .collect::<Array>()
        .into()
}

impl IdbStorage {
    fn reader(&self) -> StorageResult<Reader> {
        let tx = self.open_transaction(TransactionMode::ReadOnly)?;
        self.reader_in(&tx)
    }
}

#[async_trait(?Send)]
impl Storage for IdbStorage {
    async fn records_by_tokens(&self, tokens: &[String]) -> StorageResult<Vec<Option<Record>>> {
        self.reader()?.records_by(tokens, Lookup::Token).await
    }

    async fn records_by_ids(&self, ids: &[String]) -> StorageResult<Vec<Option<Record>>> {
        self.reader()?.records_by(ids, Lookup::Id).await
    }

    /// One transaction, both reads' requests in flight together.
    async fn records_by_tokens_and_meta(
        &self,
        tokens: &[String],
        find: MetaFind<'_>,
    ) -> StorageResult<(Vec<Option<Record>>, Vec<MetaRow>)> {
        let r = self.reader()?;
        let (records, rows) = futures::future::join(
            r.records_by(tokens, Lookup::Token),
            r.objects_holding(find.object_type, find.key, find.value),
        )
        .await;
        Ok((records?, rows?))
    }

    async fn query_records(&self, filter: &RecordFilter, now: i64) -> StorageResult<Vec<Record>> {
        let r = self.reader()?;
        if let Some(named) = r.named(filter).await? {
            return Ok(filter.apply(named, now));
        }
        r.list(filter, now, Some(&self.bookmarks), self.tally.get())
            .await
    }

    async fn count_records(&self, filter: &RecordFilter, now: i64) -> StorageResult<u64> {
        let r = self.reader()?;
        if let Some(named) = r.named(filter).await? {
            return Ok(named.iter().filter(|rec| filter.matches(rec, now)).count() as u64);
        }
        if !filter.expired_only {
            return r.tallied(&self.tally, filter.soft_deleted).await;
        }
        // Expired ones: the expiry index's range, counted there when every record is of the
        // filter's state; else the expired records, read.
        if r.holds_only(filter.soft_deleted).await? {
            let (index, query) = order_source(OrderBy::ExpiresAt, Some(now))?;
            let count = r
                .records
                .index(index.unwrap_or("expires"))
                .map_err(idb_error("open the expiry index"))?
                .count(query)
                .done("count expired records")
                .await?;
            return Ok(u64::from(count));
        }
        let expired = RecordFilter {
            order_by: OrderBy::ExpiresAt,
            descending: false,
            limit: None,
            offset: 0,
            ..filter.clone()
        };
        Ok(r.list(&expired, now, None, None).await?.len() as u64)
    }

    async fn scan_records(
        &self,
        after_id: Option<&str>,
        limit: usize,
    ) -> StorageResult<Vec<Record>> {
        self.reader()?.scan(after_id, limit).await
    }

    async fn meta_get(&self, key: &MetaKey) -> StorageResult<Option<String>> {
        self.reader()?.meta_get(key).await
    }

    async fn meta_object(&self, object_type: &str, object_id: &str) -> StorageResult<Vec<MetaRow>> {
        self.reader()?.object(object_type, object_id).await
    }

    async fn meta_find(
        &self,
        object_type: &str,
        key: &str,
        value: &str,
    ) -> StorageResult<Vec<MetaRow>> {
        self.reader()?
            .objects_holding(object_type, key, value)
            .await
    }

    async fn meta_count(&self, object_type: &str) -> StorageResult<u64> {
        self.reader()?.meta_count(object_type).await
    }

    async fn meta_all(&self) -> StorageResult<Vec<MetaRow>> {
        let r = self.reader()?;
        let rows = r.meta.get_all(None, None).done("read meta rows").await?;
        let mut rows = all_from_js(rows, meta_from_js)?;
        sorting::sort(&mut rows);
        Ok(rows)
    }

    async fn records_linked_to(
        &self,
        identity_id: &str,
        after_id: Option<&str>,
        limit: usize,
    ) -> StorageResult<Vec<Record>> {
        self.reader()?.linked_to(identity_id, after_id, limit).await
    }

    async fn changes_since(&self, after_seq: u64, limit: usize) -> StorageResult<Vec<Change>> {
        self.reader()?.feed("seq", after_seq, limit).await
    }

    async fn dirty_changes(&self, after: u64, limit: usize) -> StorageResult<Vec<Change>> {
        self.reader()?.feed("dirty", after, limit).await
    }

    async fn versions(&self, keys: &[RowKey]) -> StorageResult<Vec<Option<Stored>>> {
        self.reader()?.versions(keys).await
    }

    async fn linked_count(&self, identity_id: Option<&str>) -> StorageResult<u64> {
        self.reader()?.linked_count(identity_id).await
    }

    async fn apply(&self, stamp: Stamp, batch: Vec<WriteOp>) -> StorageResult<()> {
        if let Some(assumed) = self.may_assume_seq(&batch) {
            // A copy, to run again should the counter have moved: only small batches get here.
            match self
                .begin()?
                .commit_assuming(stamp, batch.clone(), assumed)
                .await?
            {
                Committed::Yes => return Ok(()),
                Committed::CounterMoved => {}
            }
        }
        self.begin()?.commit_batch(stamp, batch).await
    }

    async fn transaction(&self) -> StorageResult<Box<dyn WriteTransaction + '_>> {
        Ok(Box::new(self.begin()?))
    }

    /// IndexedDB cannot change records without reading them into the page first: the
    /// vault pages through the expired records with bounded transactions instead.
    async fn purge_expired(
        &self,
        _stamp: Stamp,
        _purge: Purge,
        _limit: usize,
        _also: Vec<WriteOp>,
    ) -> StorageResult<Option<u64>> {
        Ok(None)
    }

    async fn close(&self) {
        if self.state.get() == Connection::Open {
            self.state.set(Connection::ClosedByUs);
        }
        // Waits for running transactions, then closes (IDBDatabase.close()).
        self.db.close();
    }
}
