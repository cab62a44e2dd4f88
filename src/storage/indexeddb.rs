//! IndexedDB backend, for browsers (feature `idb`, wasm32 only).
//!
//! Built on the `idb` crate, the layer `rexie` wraps, because rexie 0.6 hides what this backend
//! needs: the transaction's `error` after an abort (a `QuotaExceededError` raised at commit would
//! otherwise surface as a bare "aborted"), the `blocked` event, and an upgrade hook that knows the
//! old version.
//!
//! Two object stores, fixed at schema version 1 (later schemas add entries to [`MIGRATIONS`]):
//!
//! | store     | key                             | indexes |
//! |-----------|---------------------------------|---------|
//! | `records` | `id`                            | `token` (unique), `created` `[createdAt, id]`, `updated` `[updatedAt, id]`, `expires` `[expiresSort, id]`, `deleted` |
//! | `meta`    | `[objectType, objectId, key]`   | `by_value` `[objectType, key, value]`: identity tags and record links |
//!
//! `expiresSort` is `expiresAt`, or `Infinity` for "never" (null is not a valid key); `deleted` is
//! 0 or 1. Every [`Storage::apply`] is one readwrite transaction over both stores in which nothing
//! but IndexedDB is awaited; any failure aborts it, so the database is left exactly as before.
//! IndexedDB runs readwrite transactions on the same stores one after the other, so the checks a
//! batch makes inside its transaction (is this token taken, is this value still the one read) hold
//! when it commits: two tabs cannot both take a token or overwrite each other's changes.
//!
//! A batch costs a few round trips, not one per op (see [`Batch`]): the records it changes or
//! deletes are read at once, every write is issued without waiting (requests run in issue order,
//! so later reads see earlier writes), and each precondition is checked when its read resolves;
//! a failed one aborts the transaction, which takes back every write already issued. Inserts
//! rely on the primary key and the unique token index; a refused `add` aborts the transaction,
//! and its `ConstraintError` is then told apart (token or id) by a lookup.

use super::{
    LINK_KEY, MetaKey, MetaRow, OWNER_KEY, Purge, Storage, StorageError, StorageResult, WriteOp,
    WriteTransaction, is_unique_meta, link_key, object_type,
};
use crate::query::{OrderBy, RecordFilter, SoftDeleted};
use crate::record::Record;
use crate::sorting;
use async_trait::async_trait;
use futures::future::{Either, join_all, select};
use idb::request::OpenDatabaseRequest;
use idb::{
    CursorDirection, Database, DatabaseEvent, Event as _, Factory, KeyPath, KeyRange, Query,
    Request as _, Transaction, TransactionMode,
};
use js_sys::{Array, Object, Reflect};
use std::cell::Cell;
use std::collections::HashMap;
use std::rc::Rc;
use wasm_bindgen::{JsCast, JsValue};

// The readwrite transaction, a batch's checks and writes, and how its outcome is awaited.
mod write;

const RECORDS: &str = "records";
const META: &str = "meta";

/// One schema step: `MIGRATIONS[n]` upgrades a database from version `n` to `n + 1`, inside the
/// upgrade transaction. The database's version is `MIGRATIONS.len()`.
pub type Migration = fn(&Database, &Transaction) -> Result<(), idb::Error>;

/// The schema history. Never edit an entry once released; append a new one.
pub const MIGRATIONS: &[Migration] = &[create_v1];

/// How long an open may stay blocked (another connection holds an older version open and does not
/// close) before it is reported instead of waited on.
pub const BLOCKED_TIMEOUT_MS: u32 = 5_000;

fn create_v1(db: &Database, _upgrade: &Transaction) -> Result<(), idb::Error> {
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
        | E::DeleteFailed(v)
        | E::GetAllFailed(v)
        | E::GetAllKeysFailed(v)
        | E::GetFailed(v)
        | E::GetKeyFailed(v)
        | E::IndexCreateFailed(v)
        | E::IndexNotFound(v)
        | E::IndexedDbOpenFailed(v)
        | E::IndexedDbNotFound(v)
        | E::KeyRangeCreateFailed(v)
        | E::ObjectStoreCreateFailed(v)
        | E::ObjectStoreNotFound(v)
        | E::OpenCursorFailed(v)
        | E::TransactionAbortError(v)
        | E::TransactionCommitError(v)
        | E::TransactionOpenFailed(v)
        | E::UpdateFailed(v) => Some(v.clone()),
        _ => None,
    }
}

/// A DOMException (or any JS error) as a storage error, keeping its name and message.
fn from_js(error: &JsValue, doing: &str) -> StorageError {
    let field = |k: &str| {
        Reflect::get(error, &JsValue::from_str(k))
            .ok()
            .and_then(|v| v.as_string())
    };
    let name = field("name");
    let message = field("message").unwrap_or_else(|| "(no message)".to_owned());
    match name.as_deref() {
        Some("QuotaExceededError") => StorageError::Quota(format!("{doing}: {message}")),
        _ => StorageError::Backend {
            name,
            message: format!("IndexedDB refused to {doing}: {message}"),
        },
    }
}

fn idb_error(doing: &'static str) -> impl Fn(idb::Error) -> StorageError {
    move |e| match carried(&e) {
        Some(js) => from_js(&js, doing),
        None => StorageError::Backend {
            name: None,
            message: format!("IndexedDB refused to {doing}: {e}"),
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

fn record_to_js(r: &Record) -> JsValue {
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
    o.into()
}

fn record_from_js(o: &JsValue) -> StorageResult<Record> {
    Ok(Record {
        id: text(o, "id")?,
        token: text(o, "token")?,
        value: text(o, "value")?,
        created_at: time(o, "createdAt")?,
        updated_at: time(o, "updatedAt")?,
        expires_at: opt_time(o, "expiresAt")?,
        soft_deleted_at: opt_time(o, "softDeletedAt")?,
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

fn meta_to_js(row: &MetaRow) -> JsValue {
    let o = Object::new();
    set(&o, "objectType", &row.key.object_type.as_str().into());
    set(&o, "objectId", &row.key.object_id.as_str().into());
    set(&o, "key", &row.key.key.as_str().into());
    set(&o, "value", &row.value.as_str().into());
    o.into()
}

fn meta_from_js(o: &JsValue) -> StorageResult<MetaRow> {
    Ok(MetaRow {
        key: MetaKey {
            object_type: text(o, "objectType")?,
            object_id: text(o, "objectId")?,
            key: text(o, "key")?,
        },
        value: text(o, "value")?,
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
}

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
                name: Some("NotSupportedError".into()),
                message: "IndexedDB is not available in this runtime; use the memory backend"
                    .into(),
            },
        })?;
        let version = migrations.len() as u32;
        let mut request = factory
            .open(name, Some(version))
            .map_err(idb_error("open the database"))?;

        let upgrade_failure: Rc<Cell<Option<String>>> = Rc::default();
        let failure = upgrade_failure.clone();
        request.on_upgrade_needed(move |event| {
            let run = || -> Result<(), String> {
                let from = event.old_version().map_err(|e| e.to_string())? as usize;
                let db = event.database().map_err(|e| e.to_string())?;
                let request: OpenDatabaseRequest = event.target().map_err(|e| e.to_string())?;
                let upgrade = request.transaction().ok_or("no upgrade transaction")?;
                for step in migrations.iter().skip(from) {
                    step(&db, &upgrade).map_err(|e| e.to_string())?;
                }
                Ok(())
            };
            if let Err(message) = run() {
                // Aborting the upgrade fails the open request; report why.
                failure.set(Some(message));
                if let Ok(db) = event.database() {
                    db.close();
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
            Either::Left((result, _)) => result.map_err(|e| match upgrade_failure.take() {
                Some(why) => StorageError::Backend {
                    name: Some("UpgradeError".into()),
                    message: format!(
                        "could not create or upgrade IndexedDB database \"{name}\": {why}"
                    ),
                },
                None => idb_error("open the database")(e),
            })?,
            Either::Right(((), still_opening)) => {
                // Keep the request alive so a late success is closed, not leaked.
                wasm_bindgen_futures::spawn_local(async move {
                    if let Ok(db) = still_opening.await {
                        db.close();
                    }
                });
                return Err(StorageError::Backend {
                    name: Some("BlockedError".into()),
                    message: format!(
                        "opening IndexedDB database \"{name}\" is blocked: another tab keeps an older version of it open; close other tabs of this app and retry"
                    ),
                });
            }
        };
        let stores = db.store_names();
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
        })
    }

    fn open_transaction(&self, mode: TransactionMode) -> StorageResult<Transaction> {
        match self.state.get() {
            Connection::ClosedByUs => return Err(StorageError::Closed),
            Connection::ClosedByVersionChange => {
                return Err(StorageError::Backend {
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
            .transaction(&[RECORDS, META], mode)
            .map_err(idb_error("start a transaction"))
    }

    fn stores(tx: &Transaction) -> StorageResult<(idb::ObjectStore, idb::ObjectStore)> {
        let records = tx
            .object_store(RECORDS)
            .map_err(idb_error("open the records store"))?;
        let meta = tx
            .object_store(META)
            .map_err(idb_error("open the meta store"))?;
        Ok((records, meta))
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
    records_estimate: Rc<Cell<Option<u64>>>,
}

/// From this many keys on, a read may go through the store a page at a time instead of a request
/// per key: in Chromium a point read costs 20-70 µs and a row of a page about 8 µs, so reading
/// pages wins once the keys are a fifth of the store or more.
const BULK_KEYS: usize = 256;
/// Rows per page of such a read.
const BULK_PAGE: u32 = 2_000;

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
        in_order(requests, "read a record")
            .await?
            .iter()
            .map(|row| {
                (!row.is_undefined())
                    .then(|| record_from_js(row))
                    .transpose()
            })
            .collect()
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
        let mut found: HashMap<&str, Option<Record>> =
            keys.iter().map(|k| (k.as_str(), None)).collect();
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
            .map(|k| found.get(k.as_str()).cloned().flatten())
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
        self.page(after_id, limit)
            .await?
            .iter()
            .map(record_from_js)
            .collect()
    }

    async fn meta_get(&self, key: &MetaKey) -> StorageResult<Option<String>> {
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
        rows.iter().map(meta_from_js).collect()
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
        rows.iter().map(meta_from_js).collect()
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

    /// Walk the records in the filter's order through the index for it, calling `visit` on each
    /// until it returns `false`. Memory stays bounded: one record at a time.
    async fn walk(
        &self,
        filter: &RecordFilter,
        now: i64,
        mut visit: impl FnMut(Record) -> bool,
    ) -> StorageResult<()> {
        let direction = Some(if filter.descending {
            CursorDirection::Prev
        } else {
            CursorDirection::Next
        });
        // Expired means now > expiresAt: every key below [now] in the expiry index, no other.
        let expired_range = || range(KeyRange::upper_bound(&key_array_num(now), Some(true)));
        let open = match filter.order_by {
            OrderBy::Id => self.records.open_cursor(None, direction),
            OrderBy::ExpiresAt if filter.expired_only => {
                let index = self
                    .records
                    .index("expires")
                    .map_err(idb_error("open the expiry index"))?;
                index.open_cursor(Some(expired_range()?), direction)
            }
            order => {
                let name = match order {
                    OrderBy::CreatedAt => "created",
                    OrderBy::UpdatedAt => "updated",
                    OrderBy::ExpiresAt => "expires",
                    _ => "token",
                };
                let index = self
                    .records
                    .index(name)
                    .map_err(idb_error("open an ordering index"))?;
                index.open_cursor(None, direction)
            }
        };
        let cursor = open.done("open a cursor").await?;
        let Some(cursor) = cursor else { return Ok(()) };
        let mut cursor = cursor.into_managed();
        while let Some(value) = cursor.value().map_err(idb_error("read a cursor"))? {
            let record = record_from_js(&value)?;
            if filter.matches(&record, now) && !visit(record) {
                break;
            }
            cursor
                .next(None)
                .await
                .map_err(idb_error("advance a cursor"))?;
        }
        Ok(())
    }
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
        let (records, meta) = Self::stores(&tx)?;
        Ok(Reader {
            records,
            meta,
            records_estimate: self.records_estimate.clone(),
        })
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

    async fn query_records(&self, filter: &RecordFilter, now: i64) -> StorageResult<Vec<Record>> {
        let r = self.reader()?;
        if let Some(named) = r.named(filter).await? {
            return Ok(filter.apply(named, now));
        }
        let mut skip = filter.offset;
        let limit = filter.limit.unwrap_or(usize::MAX);
        let mut out = Vec::new();
        r.walk(filter, now, |record| {
            if skip > 0 {
                skip -= 1;
                return true;
            }
            out.push(record);
            out.len() < limit
        })
        .await?;
        Ok(out)
    }

    async fn count_records(&self, filter: &RecordFilter, now: i64) -> StorageResult<u64> {
        let r = self.reader()?;
        if let Some(named) = r.named(filter).await? {
            return Ok(named.iter().filter(|rec| filter.matches(rec, now)).count() as u64);
        }
        if !filter.expired_only {
            // Counted by the index, without reading a single record.
            let count = match filter.soft_deleted {
                SoftDeleted::Include => r.records.count(None),
                SoftDeleted::Exclude | SoftDeleted::Only => {
                    let flag = if filter.soft_deleted == SoftDeleted::Only {
                        1.0
                    } else {
                        0.0
                    };
                    let index = r
                        .records
                        .index("deleted")
                        .map_err(idb_error("open the deleted index"))?;
                    index.count(Some(Query::from(JsValue::from_f64(flag))))
                }
            };
            return Ok(u64::from(count.done("count records").await?));
        }
        let mut n = 0u64;
        let walk = RecordFilter {
            order_by: OrderBy::ExpiresAt,
            descending: false,
            limit: None,
            offset: 0,
            ..filter.clone()
        };
        r.walk(&walk, now, |_| {
            n += 1;
            true
        })
        .await?;
        Ok(n)
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
        let mut rows = rows
            .iter()
            .map(meta_from_js)
            .collect::<StorageResult<Vec<_>>>()?;
        sorting::sort(&mut rows);
        Ok(rows)
    }

    async fn apply(&self, batch: Vec<WriteOp>) -> StorageResult<()> {
        self.begin()?.commit_batch(batch).await
    }

    async fn transaction(&self) -> StorageResult<Box<dyn WriteTransaction + '_>> {
        Ok(Box::new(self.begin()?))
    }

    /// IndexedDB cannot change records without reading them into the page first: the
    /// vault pages through the expired records with bounded transactions instead.
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
        if self.state.get() == Connection::Open {
            self.state.set(Connection::ClosedByUs);
        }
        // Waits for running transactions, then closes (IDBDatabase.close()).
        self.db.close();
    }
}
