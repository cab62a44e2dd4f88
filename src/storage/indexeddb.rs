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
    LINK_KEY, MetaKey, MetaRow, Purge, Storage, StorageError, StorageResult, WriteOp,
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

/// One readwrite transaction over both stores: what [`Storage::apply`] runs a batch in, and what
/// a rekey reads and commits through (see [`Storage::transaction`]). While it is open IndexedDB
/// runs no other readwrite transaction on these stores, in any tab.
struct IdbWriteTransaction<'a> {
    storage: &'a IdbStorage,
    /// Owns the handlers `outcome` listens with: kept until the outcome is known (or, if the
    /// caller drops this without committing, handed to JavaScript so a late event finds them).
    tx: Option<Transaction>,
    outcome: Option<Outcome>,
    r: Reader,
}

impl IdbStorage {
    fn begin(&self) -> StorageResult<IdbWriteTransaction<'_>> {
        let mut tx = self.open_transaction(TransactionMode::ReadWrite)?;
        let outcome = Outcome::watch(&mut tx);
        let (records, meta) = Self::stores(&tx)?;
        Ok(IdbWriteTransaction {
            storage: self,
            tx: Some(tx),
            outcome: Some(outcome),
            r: Reader {
                records,
                meta,
                records_estimate: self.records_estimate.clone(),
            },
        })
    }
}

impl Drop for IdbWriteTransaction<'_> {
    fn drop(&mut self) {
        if let Some(mut tx) = self.tx.take() {
            // Not committed through us: IndexedDB still ends it (committing whatever was
            // written, which is nothing, as writes only happen in `commit`), and the handlers
            // must outlive that event.
            tx.forget_callbacks();
            if let Some(outcome) = self.outcome.take() {
                outcome.forget();
            }
        }
    }
}

impl IdbWriteTransaction<'_> {
    async fn commit_batch(mut self, batch: Vec<WriteOp>) -> StorageResult<()> {
        let outcome = self.outcome.take().ok_or(StorageError::Closed)?;
        let mut writer = Batch {
            r: self.r.clone(),
            rows: HashMap::new(),
            links: HashMap::new(),
            checks: Vec::new(),
            inserted: Vec::new(),
            batch_tokens: Default::default(),
            deleted: 0,
            cleared: false,
        };
        let checked = match writer.run(batch).await {
            Ok(()) => writer.verify().await,
            Err(e) => Err(e),
        };
        let failure = match checked {
            Ok(()) => {
                // Every request is issued and every check passed: ask for the commit now rather
                // than when the transaction next runs out of requests (a task later).
                let _ = writer.r.records.transaction().commit();
                outcome.settled().await.err()
            }
            Err(e) => {
                // Nothing of the batch may remain: abort (a failed request may already have),
                // and wait for the abort to finish, so the transaction's handlers outlive it.
                let _ = writer.r.records.transaction().abort();
                let cause = outcome.settled().await.err();
                // A read that failed because a write issued before it had already aborted the
                // transaction says only "AbortError"; the request that failed names the cause.
                Some(match (e, cause) {
                    (StorageError::Backend { .. }, Some(cause)) => cause,
                    (e, _) => e,
                })
            }
        };
        // The transaction has ended: its handlers may go.
        drop(self.tx.take());
        match failure {
            None => {
                let estimate = &self.storage.records_estimate;
                estimate.set(match estimate.get() {
                    Some(n) if !writer.cleared => {
                        Some((n + writer.inserted.len() as u64).saturating_sub(writer.deleted))
                    }
                    _ => None,
                });
                Ok(())
            }
            Some(e) => Err(self.storage.diagnose(e, &writer.inserted).await),
        }
    }
}

#[async_trait(?Send)]
impl WriteTransaction for IdbWriteTransaction<'_> {
    async fn records_by_ids(&self, ids: &[String]) -> StorageResult<Vec<Option<Record>>> {
        self.r.records_by(ids, Lookup::Id).await
    }
    async fn scan_records(
        &self,
        after_id: Option<&str>,
        limit: usize,
    ) -> StorageResult<Vec<Record>> {
        self.r.scan(after_id, limit).await
    }
    async fn meta_get(&self, key: &MetaKey) -> StorageResult<Option<String>> {
        self.r.meta_get(key).await
    }
    async fn meta_find(
        &self,
        object_type: &str,
        key: &str,
        value: &str,
    ) -> StorageResult<Vec<MetaRow>> {
        self.r.objects_holding(object_type, key, value).await
    }
    async fn meta_count(&self, object_type: &str) -> StorageResult<u64> {
        self.r.meta_count(object_type).await
    }
    async fn commit(self: Box<Self>, batch: Vec<WriteOp>) -> StorageResult<()> {
        (*self).commit_batch(batch).await
    }
}

impl IdbStorage {
    /// An `add` that broke a uniqueness constraint fails the whole transaction with a bare
    /// `ConstraintError`, which does not say whether the token or the id was taken. The batch is
    /// rolled back by now, so look the inserted tokens up to tell the caller which.
    async fn diagnose(&self, e: StorageError, inserted: &[(String, String)]) -> StorageError {
        let constraint =
            matches!(&e, StorageError::Backend { name: Some(n), .. } if n == "ConstraintError");
        if !constraint || inserted.is_empty() {
            return e;
        }
        let Ok(r) = self.reader() else { return e };
        let tokens: Vec<String> = inserted.iter().map(|(_, t)| t.clone()).collect();
        match r.records_by(&tokens, Lookup::Token).await {
            Ok(found) => match found.into_iter().flatten().next() {
                Some(taken) => StorageError::TokenTaken(taken.token),
                None => StorageError::IdTaken(inserted[0].0.clone()),
            },
            Err(_) => e,
        }
    }
}

/// How a readwrite transaction ended. A request that fails fires `error` (on the request, then
/// the transaction) *before* the transaction aborts, so the cause is taken from that request;
/// an abort without a failed request (a `QuotaExceededError` raised at commit) carries its cause
/// in `transaction.error`, set by the time `abort` fires.
struct Outcome {
    done: futures::channel::oneshot::Receiver<bool>,
    cause: Rc<std::cell::RefCell<Option<JsValue>>>,
    /// The `error` listener. Not idb's `on_error`: that is a once-closure, and every failed
    /// request's error bubbles to the transaction (an abort fails each pending request), so a
    /// second call threw "FnOnce called more than once" into the page. Kept until the outcome is
    /// known: `error` events all come before `abort`.
    on_error: Option<wasm_bindgen::closure::Closure<dyn FnMut(web_sys::Event)>>,
}

/// `target.error`, if the event's target has one.
fn target_error(event: &web_sys::Event) -> Option<JsValue> {
    event
        .target()
        .and_then(|target| Reflect::get(&target, &JsValue::from_str("error")).ok())
        .filter(|e| !e.is_null() && !e.is_undefined())
}

impl Outcome {
    fn watch(tx: &mut Transaction) -> Outcome {
        let (done_tx, done) = futures::channel::oneshot::channel();
        let done_tx = Rc::new(Cell::new(Some(done_tx)));
        let cause: Rc<std::cell::RefCell<Option<JsValue>>> = Rc::default();
        let finish = |committed: bool| {
            let (done_tx, cause) = (done_tx.clone(), cause.clone());
            move |event: web_sys::Event| {
                if !committed && cause.borrow().is_none() {
                    *cause.borrow_mut() = target_error(&event);
                }
                if let Some(tx) = done_tx.take() {
                    let _ = tx.send(committed);
                }
            }
        };
        tx.on_complete(finish(true));
        tx.on_abort(finish(false));
        let first = cause.clone();
        // The first error is the cause; those after it are the aborts of pending requests.
        let on_error = wasm_bindgen::closure::Closure::<dyn FnMut(web_sys::Event)>::new(
            move |event: web_sys::Event| {
                if first.borrow().is_none() {
                    *first.borrow_mut() = target_error(&event);
                }
            },
        );
        // The raw transaction, reached through one of its stores (idb hands out no reference).
        if let Ok(store) = tx.object_store(RECORDS) {
            web_sys::IdbTransaction::from(store.transaction())
                .set_onerror(Some(on_error.as_ref().unchecked_ref()));
        }
        Outcome {
            done,
            cause,
            on_error: Some(on_error),
        }
    }

    /// The transaction ends without us waiting for it: its `error` listener must outlive it.
    fn forget(mut self) {
        if let Some(listener) = self.on_error.take() {
            listener.forget();
        }
    }

    /// Wait for `complete` or `abort`.
    async fn settled(mut self) -> StorageResult<()> {
        if (&mut self.done).await.unwrap_or(false) {
            return Ok(());
        }
        Err(match self.cause.borrow_mut().take() {
            Some(error) => from_js(&error, "write"),
            None => StorageError::Backend {
                name: Some("AbortError".into()),
                message: "IndexedDB aborted the write; nothing was changed".into(),
            },
        })
    }
}

/// A precondition whose read was issued in request order and is checked once it resolves. The
/// writes after it are issued at once, without waiting: if a check fails, the transaction is
/// aborted and they never commit.
enum Check {
    /// `InsertMeta`: the key must not exist yet.
    Absent(MetaKey, StoreFuture<Option<JsValue>>),
    /// A unique value: no row other than `key` may hold it.
    Unique(MetaKey, StoreFuture<Vec<JsValue>>),
    /// `ExpectMeta`: the row must hold this value.
    Holds(MetaKey, Option<String>, StoreFuture<Option<JsValue>>),
}

type StoreFuture<T> = std::pin::Pin<Box<dyn std::future::Future<Output = Result<T, idb::Error>>>>;

fn pending<T, R>(
    request: Result<R, idb::Error>,
    doing: &'static str,
) -> StorageResult<StoreFuture<T>>
where
    R: std::future::IntoFuture<Output = Result<T, idb::Error>> + 'static,
{
    let request = request.map_err(idb_error(doing))?;
    Ok(Box::pin(std::future::IntoFuture::into_future(request)))
}

/// One batch's writes, inside one readwrite transaction. Requests run in the order they are
/// issued, so a read issued after a write sees it; only reads are awaited, so a batch of N
/// records costs a few round trips, not N.
struct Batch {
    r: Reader,
    /// The batch's view of the records it changes or deletes, by id (`None`: absent).
    rows: HashMap<String, Option<Record>>,
    /// The identity each record the batch deletes is linked to, by record id.
    links: HashMap<String, Option<String>>,
    checks: Vec<Check>,
    /// `(id, token)` of every inserted record, to tell a taken token from a taken id.
    inserted: Vec<(String, String)>,
    /// The tokens this batch inserted and did not delete again.
    batch_tokens: std::collections::HashSet<String>,
    /// Records deleted, and whether the stores were cleared: for the record count estimate.
    deleted: u64,
    cleared: bool,
}

impl Batch {
    async fn run(&mut self, batch: Vec<WriteOp>) -> StorageResult<()> {
        self.prefetch(&batch).await?;
        let mut ops = batch.into_iter().peekable();
        while let Some(op) = ops.next() {
            if let WriteOp::DeleteRecord { .. } = op {
                // A run of deletes prunes the identities they unlink once, at its end: deletes
                // only remove references, so this prunes exactly what pruning after each would.
                let mut identities = Vec::new();
                self.delete_record(op, &mut identities)?;
                while let Some(next @ WriteOp::DeleteRecord { .. }) = ops.peek().cloned() {
                    ops.next();
                    self.delete_record(next, &mut identities)?;
                }
                sorting::sort(&mut identities);
                identities.dedup();
                self.prune_identities(identities).await?;
            } else {
                self.apply(op).await?;
            }
        }
        Ok(())
    }

    /// Read, in one round trip, every record the batch changes or deletes, and the links of
    /// those it deletes.
    async fn prefetch(&mut self, batch: &[WriteOp]) -> StorageResult<()> {
        let mut ids: Vec<String> = Vec::new();
        let mut deleted: Vec<String> = Vec::new();
        for op in batch {
            match op {
                WriteOp::ChangeRecord { id, .. } => ids.push(id.clone()),
                WriteOp::DeleteRecord { id, .. } => {
                    ids.push(id.clone());
                    deleted.push(id.clone());
                }
                _ => {}
            }
        }
        for list in [&mut ids, &mut deleted] {
            sorting::sort(list);
            list.dedup();
        }
        let mut links = Vec::with_capacity(deleted.len());
        for id in &deleted {
            let request = self.r.meta.get(meta_key_js(&link_key(id)));
            links.push(request.map_err(idb_error("read a record link"))?);
        }
        let (records, links) = futures::future::join(
            self.r.records_by(&ids, Lookup::Id),
            in_order(links, "read a record link"),
        )
        .await;
        for (id, row) in ids.into_iter().zip(records?) {
            self.rows.insert(id, row);
        }
        for (id, found) in deleted.into_iter().zip(links?) {
            let identity = (!found.is_undefined())
                .then(|| meta_from_js(&found))
                .transpose()?
                .map(|m| m.value);
            self.links.insert(id, identity);
        }
        Ok(())
    }

    /// Keep the batch's view of links current when the batch itself writes one.
    fn track_link(&mut self, key: &MetaKey, value: Option<&str>) {
        if key.object_type == object_type::RECORD
            && key.key == LINK_KEY
            && let Some(id) = key.object_id.strip_prefix("r_")
            && let Some(link) = self.links.get_mut(id)
        {
            *link = value.map(str::to_owned);
        }
    }

    fn put_record(&self, record: &Record) -> StorageResult<()> {
        self.r
            .records
            .put(&record_to_js(record), None)
            .map_err(idb_error("write a record"))
            .map(drop)
    }

    async fn apply(&mut self, op: WriteOp) -> StorageResult<()> {
        let records = &self.r.records;
        let meta = &self.r.meta;
        match op {
            WriteOp::InsertRecord(record) => {
                // The primary key and the unique token index refuse a taken id or token; the
                // failure aborts the transaction and `IdbStorage::diagnose` names it. A token or
                // id this batch itself inserted is named here, as nothing of it is stored.
                if !self.batch_tokens.insert(record.token.clone()) {
                    return Err(StorageError::TokenTaken(record.token));
                }
                if matches!(self.rows.get(&record.id), Some(Some(_))) {
                    return Err(StorageError::IdTaken(record.id));
                }
                records
                    .add(&record_to_js(&record), None)
                    .map_err(idb_error("add a record"))?;
                self.inserted
                    .push((record.id.clone(), record.token.clone()));
                self.rows.insert(record.id.clone(), Some(record));
            }
            WriteOp::ChangeRecord { id, change, at } => {
                let Some(Some(record)) = self.rows.get_mut(&id) else {
                    return Err(StorageError::RecordMissing(id));
                };
                if change.apply_to(record, at)? {
                    let record = record.clone();
                    self.put_record(&record)?;
                }
            }
            WriteOp::DeleteRecord { .. } => {
                let mut identities = Vec::new();
                self.delete_record(op, &mut identities)?;
                self.prune_identities(identities).await?;
            }
            WriteOp::InsertMeta(row) => {
                let exists = pending(meta.get(meta_key_js(&row.key)), "read a meta row")?;
                self.checks.push(Check::Absent(row.key.clone(), exists));
                self.put_meta(row)?;
            }
            WriteOp::PutMeta(row) => self.put_meta(row)?,
            WriteOp::DeleteMeta(key) => {
                meta.delete(meta_key_js(&key))
                    .map_err(idb_error("delete a meta row"))?;
                self.track_link(&key, None);
            }
            WriteOp::ExpectMeta { key, value } => {
                let found = pending(meta.get(meta_key_js(&key)), "read a meta row")?;
                self.checks.push(Check::Holds(key, value, found));
            }
            WriteOp::DeleteObjectIfUnreferenced {
                object_type,
                object_id,
                referrer_type,
                referrer_key,
            } => {
                let referrers = self
                    .r
                    .by_value()?
                    .count(Some(Query::from(key_array(&[
                        &referrer_type,
                        &referrer_key,
                        &object_id,
                    ]))))
                    .done("count meta rows")
                    .await?;
                if referrers == 0 {
                    meta.delete(object_range(&object_type, &object_id)?)
                        .map_err(idb_error("delete meta rows"))?;
                }
            }
            WriteOp::ExpectEmpty => {
                let n = records.count(None).done("count records").await?;
                let all = meta.count(None).done("count meta rows").await?;
                let settings = meta
                    .count(Some(object_type_range(object_type::VAULT)?))
                    .done("count meta rows")
                    .await?;
                if n > 0 || all > settings {
                    return Err(StorageError::NotEmpty);
                }
            }
            WriteOp::ClearAll => {
                records.clear().map_err(idb_error("clear records"))?;
                meta.clear().map_err(idb_error("clear meta rows"))?;
                for row in self.rows.values_mut() {
                    *row = None;
                }
                self.batch_tokens.clear();
                self.cleared = true;
            }
        }
        Ok(())
    }

    /// Delete a prefetched record and its link; the identity the link pointed to is collected
    /// for pruning.
    fn delete_record(&mut self, op: WriteOp, identities: &mut Vec<String>) -> StorageResult<()> {
        let WriteOp::DeleteRecord { id, if_expired_at } = op else {
            return Ok(());
        };
        let Some(Some(record)) = self.rows.get(&id) else {
            return Ok(());
        };
        if if_expired_at.is_some_and(|now| !record.is_expired(now)) {
            return Err(StorageError::Changed(id));
        }
        self.r
            .records
            .delete(JsValue::from_str(&id))
            .map_err(idb_error("delete a record"))?;
        let link = link_key(&id);
        if let Some(Some(identity)) = self.links.get(&id) {
            identities.push(identity.clone());
        }
        self.r
            .meta
            .delete(meta_key_js(&link))
            .map_err(idb_error("delete a record link"))?;
        self.track_link(&link, None);
        if let Some(Some(record)) = self.rows.get(&id) {
            self.batch_tokens.remove(&record.token);
        }
        self.rows.insert(id, None);
        self.deleted += 1;
        Ok(())
    }

    /// Remove every identity of `identities` that no link refers to any more. The counts are
    /// issued after the deletes, so they see them; one round trip for all.
    async fn prune_identities(&self, identities: Vec<String>) -> StorageResult<()> {
        if identities.is_empty() {
            return Ok(());
        }
        let index = self.r.by_value()?;
        let mut counts = Vec::with_capacity(identities.len());
        for identity in &identities {
            let count = index.count(Some(Query::from(key_array(&[
                object_type::RECORD,
                LINK_KEY,
                identity,
            ]))));
            counts.push(count.map_err(idb_error("count record links"))?);
        }
        let counts = in_order(counts, "count record links").await?;
        for (identity, count) in identities.iter().zip(counts) {
            if count.as_f64() == Some(0.0) {
                self.r
                    .meta
                    .delete(object_range(object_type::IDENTITY, identity)?)
                    .map_err(idb_error("delete an identity"))?;
            }
        }
        Ok(())
    }

    fn put_meta(&mut self, row: MetaRow) -> StorageResult<()> {
        self.track_link(&row.key, Some(&row.value));
        if is_unique_meta(&row.key) {
            let holders = pending(
                self.r.by_value()?.get_all(
                    Some(Query::from(key_array(&[
                        &row.key.object_type,
                        &row.key.key,
                        &row.value,
                    ]))),
                    None,
                ),
                "look up meta rows",
            )?;
            self.checks.push(Check::Unique(row.key.clone(), holders));
        }
        self.r
            .meta
            .put(&meta_to_js(&row), None)
            .map_err(idb_error("write a meta row"))
            .map(drop)
    }

    /// Check every precondition, in the order of the ops that made them.
    async fn verify(&mut self) -> StorageResult<()> {
        let checks = std::mem::take(&mut self.checks);
        let futures = checks.into_iter().map(|check| async move {
            match check {
                Check::Absent(key, found) => {
                    match found.await.map_err(idb_error("read a meta row"))? {
                        Some(_) => Err(StorageError::MetaTaken(key)),
                        None => Ok(()),
                    }
                }
                Check::Unique(key, holders) => {
                    let holders = holders.await.map_err(idb_error("look up meta rows"))?;
                    for holder in &holders {
                        if meta_from_js(holder)?.key != key {
                            return Err(StorageError::UniqueValueTaken(key));
                        }
                    }
                    Ok(())
                }
                Check::Holds(key, value, found) => {
                    let found = found.await.map_err(idb_error("read a meta row"))?;
                    let actual = found
                        .as_ref()
                        .map(meta_from_js)
                        .transpose()?
                        .map(|m| m.value);
                    if actual == value {
                        Ok(())
                    } else {
                        Err(StorageError::MetaChanged(key))
                    }
                }
            }
        });
        join_all(futures).await.into_iter().collect()
    }
}
