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
//! Checks such as "is this token taken" run inside that transaction, and IndexedDB runs readwrite
//! transactions on the same stores one after the other, so two tabs cannot both take a token.

use super::{
    MetaKey, MetaRow, Storage, StorageError, StorageResult, StoredRecord, WriteOp, is_unique_meta,
    link_key, object_type,
};
use crate::query::{OrderBy, RecordFilter, SoftDeleted};
use crate::record::Record;
use async_trait::async_trait;
use futures::future::{Either, join_all, select};
use idb::request::OpenDatabaseRequest;
use idb::{
    CursorDirection, Database, DatabaseEvent, Event as _, Factory, KeyPath, KeyRange, Query,
    Request as _, Transaction, TransactionMode, TransactionResult,
};
use js_sys::{Array, Object, Reflect};
use std::cell::Cell;
use std::rc::Rc;
use wasm_bindgen::JsValue;

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
    let message = field("message").unwrap_or_else(|| format!("{error:?}"));
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

fn not_ours(what: &str) -> StorageError {
    StorageError::Backend {
        name: Some("DataError".into()),
        message: format!("IndexedDB holds {what} that vaultstore did not write"),
    }
}

// ---------------------------------------------------------------- rows <-> JS objects

fn set(o: &Object, k: &str, v: &JsValue) {
    let _ = Reflect::set(o, &JsValue::from_str(k), v);
}

fn get(o: &JsValue, k: &str) -> JsValue {
    Reflect::get(o, &JsValue::from_str(k)).unwrap_or(JsValue::UNDEFINED)
}

fn text(o: &JsValue, k: &str) -> StorageResult<String> {
    get(o, k)
        .as_string()
        .ok_or_else(|| not_ours(&format!("a row without a text {k}")))
}

fn time(o: &JsValue, k: &str) -> StorageResult<i64> {
    get(o, k)
        .as_f64()
        .filter(|n| n.is_finite())
        .map(|n| n as i64)
        .ok_or_else(|| not_ours(&format!("a row without a numeric {k}")))
}

fn opt_time(o: &JsValue, k: &str) -> StorageResult<Option<i64>> {
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
                        "could not create or upgrade IndexedDB database {name:?}: {why}"
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
                        "opening IndexedDB database {name:?} is blocked: another tab keeps an older version of it open; close other tabs of this app and retry"
                    ),
                });
            }
        };
        let stores = db.store_names();
        if !stores.iter().any(|s| s == RECORDS) || !stores.iter().any(|s| s == META) {
            db.close();
            return Err(not_ours(&format!("a database named {name:?}")));
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
        })
    }

    fn transaction(&self, mode: TransactionMode) -> StorageResult<Transaction> {
        match self.state.get() {
            Connection::ClosedByUs => return Err(StorageError::Closed),
            Connection::ClosedByVersionChange => {
                return Err(StorageError::Backend {
                    name: Some("VersionChangeError".into()),
                    message: format!(
                        "IndexedDB database {:?} was upgraded or deleted in another tab, which closed this connection; reload the page to continue",
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
struct Reader {
    records: idb::ObjectStore,
    meta: idb::ObjectStore,
}

impl Reader {
    async fn record(&self, id: &str) -> StorageResult<Option<Record>> {
        let found = self
            .records
            .get(JsValue::from_str(id))
            .done("read a record")
            .await?;
        found.as_ref().map(record_from_js).transpose()
    }

    async fn by_token(&self, token: &str) -> StorageResult<Option<Record>> {
        let index = self
            .records
            .index("token")
            .map_err(idb_error("open the token index"))?;
        let found = index
            .get(JsValue::from_str(token))
            .done("look up a token")
            .await?;
        found.as_ref().map(record_from_js).transpose()
    }

    /// Links for these records: all requests issued at once, then awaited.
    async fn with_links(&self, records: Vec<Record>) -> StorageResult<Vec<StoredRecord>> {
        let mut pending = Vec::with_capacity(records.len());
        for r in &records {
            let request = self
                .meta
                .get(meta_key_js(&link_key(&r.id)))
                .map_err(idb_error("read a record link"))?;
            pending.push(std::future::IntoFuture::into_future(request));
        }
        let links = join_all(pending).await;
        records
            .into_iter()
            .zip(links)
            .map(|(record, link)| {
                let link = link.map_err(idb_error("read a record link"))?;
                let identity_id = match link {
                    Some(row) => Some(meta_from_js(&row)?.value),
                    None => None,
                };
                Ok(StoredRecord {
                    record,
                    identity_id,
                })
            })
            .collect()
    }

    async fn object(&self, object_type: &str, object_id: &str) -> StorageResult<Vec<MetaRow>> {
        let rows = self
            .meta
            .get_all(Some(object_range(object_type, object_id)?), None)
            .done("read meta rows")
            .await?;
        rows.iter().map(meta_from_js).collect()
    }

    async fn find(&self, object_type: &str, key: &str, value: &str) -> StorageResult<Vec<MetaRow>> {
        let index = self
            .meta
            .index("by_value")
            .map_err(idb_error("open the meta index"))?;
        let rows = index
            .get_all(
                Some(Query::from(key_array(&[object_type, key, value]))),
                None,
            )
            .done("look up meta rows")
            .await?;
        rows.iter().map(meta_from_js).collect()
    }

    async fn count_value(&self, object_type: &str, key: &str, value: &str) -> StorageResult<u32> {
        let index = self
            .meta
            .index("by_value")
            .map_err(idb_error("open the meta index"))?;
        index
            .count(Some(Query::from(key_array(&[object_type, key, value]))))
            .done("count meta rows")
            .await
    }

    /// Records the filter names by token or id (point lookups), if it names any.
    async fn named(&self, filter: &RecordFilter) -> StorageResult<Option<Vec<Record>>> {
        if let Some(tokens) = filter.candidate_tokens() {
            Ok(Some(self.records_by(&tokens, Lookup::Token).await?))
        } else if let Some(ids) = filter.candidate_ids() {
            Ok(Some(self.records_by(&ids, Lookup::Id).await?))
        } else {
            Ok(None)
        }
    }

    /// The records with these tokens or ids, each once, missing ones left out: every request
    /// issued at once, then awaited (one round trip).
    async fn records_by(&self, keys: &[String], lookup: Lookup) -> StorageResult<Vec<Record>> {
        let token_index = match lookup {
            Lookup::Token => Some(
                self.records
                    .index("token")
                    .map_err(idb_error("open the token index"))?,
            ),
            Lookup::Id => None,
        };
        let mut pending = Vec::with_capacity(keys.len());
        for key in keys {
            let key = JsValue::from_str(key);
            let request = match &token_index {
                Some(index) => index.get(key),
                None => self.records.get(key),
            }
            .map_err(idb_error("read a record"))?;
            pending.push(std::future::IntoFuture::into_future(request));
        }
        let mut records: Vec<Record> = Vec::with_capacity(keys.len());
        for found in join_all(pending).await {
            if let Some(value) = found.map_err(idb_error("read a record"))? {
                let record = record_from_js(&value)?;
                if !records.iter().any(|r| r.id == record.id) {
                    records.push(record);
                }
            }
        }
        Ok(records)
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
        let tx = self.transaction(TransactionMode::ReadOnly)?;
        let (records, meta) = Self::stores(&tx)?;
        Ok(Reader { records, meta })
    }
}

#[async_trait(?Send)]
impl Storage for IdbStorage {
    async fn records_by_tokens(&self, tokens: &[String]) -> StorageResult<Vec<StoredRecord>> {
        let r = self.reader()?;
        let records = r.records_by(tokens, Lookup::Token).await?;
        r.with_links(records).await
    }

    async fn records_by_ids(&self, ids: &[String]) -> StorageResult<Vec<StoredRecord>> {
        let r = self.reader()?;
        let records = r.records_by(ids, Lookup::Id).await?;
        r.with_links(records).await
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
    ) -> StorageResult<Vec<StoredRecord>> {
        let r = self.reader()?;
        let query = match after_id {
            Some(id) => Some(range(KeyRange::lower_bound(
                &JsValue::from_str(id),
                Some(true),
            ))?),
            None => None,
        };
        let limit = u32::try_from(limit).unwrap_or(u32::MAX);
        let rows = r
            .records
            .get_all(query, Some(limit))
            .done("scan records")
            .await?;
        let records = rows
            .iter()
            .map(record_from_js)
            .collect::<StorageResult<Vec<_>>>()?;
        r.with_links(records).await
    }

    async fn meta_get(&self, key: &MetaKey) -> StorageResult<Option<String>> {
        let r = self.reader()?;
        let found = r.meta.get(meta_key_js(key)).done("read a meta row").await?;
        Ok(found
            .as_ref()
            .map(meta_from_js)
            .transpose()?
            .map(|m| m.value))
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
        let r = self.reader()?;
        let mut rows = Vec::new();
        let mut seen: Vec<String> = Vec::new();
        for found in r.find(object_type, key, value).await? {
            if !seen.contains(&found.key.object_id) {
                seen.push(found.key.object_id.clone());
                rows.extend(r.object(object_type, &found.key.object_id).await?);
            }
        }
        rows.sort();
        Ok(rows)
    }

    async fn meta_all(&self) -> StorageResult<Vec<MetaRow>> {
        let r = self.reader()?;
        let rows = r.meta.get_all(None, None).done("read meta rows").await?;
        let mut rows = rows
            .iter()
            .map(meta_from_js)
            .collect::<StorageResult<Vec<_>>>()?;
        rows.sort();
        Ok(rows)
    }

    async fn apply(&self, batch: Vec<WriteOp>) -> StorageResult<()> {
        let tx = self.transaction(TransactionMode::ReadWrite)?;
        let (records, meta) = Self::stores(&tx)?;
        let writer = Batch {
            r: Reader { records, meta },
        };
        for op in batch {
            if let Err(e) = writer.apply(op).await {
                // Nothing of the batch may remain: abort (a failed request may already have).
                let _ = tx.abort();
                return Err(e);
            }
        }
        // The commit itself can fail (a QuotaExceededError is raised here): its cause is the
        // transaction's `error`, read through a store of the same transaction.
        let store = writer.r.records.clone();
        match tx.await {
            Ok(TransactionResult::Committed) => Ok(()),
            Ok(TransactionResult::Aborted) | Err(_) => Err(match store.transaction().error() {
                Some(dom) => from_js(&dom.into(), "commit the write"),
                None => StorageError::Backend {
                    name: Some("AbortError".into()),
                    message: "IndexedDB aborted the write; nothing was changed".into(),
                },
            }),
        }
    }

    async fn close(&self) {
        if self.state.get() == Connection::Open {
            self.state.set(Connection::ClosedByUs);
        }
        // Waits for running transactions, then closes (IDBDatabase.close()).
        self.db.close();
    }
}

/// One batch's writes, inside one readwrite transaction.
struct Batch {
    r: Reader,
}

impl Batch {
    async fn apply(&self, op: WriteOp) -> StorageResult<()> {
        let records = &self.r.records;
        let meta = &self.r.meta;
        match op {
            WriteOp::InsertRecord(record) => {
                if self.r.by_token(&record.token).await?.is_some() {
                    return Err(StorageError::TokenTaken(record.token));
                }
                if self.r.record(&record.id).await?.is_some() {
                    return Err(StorageError::IdTaken(record.id));
                }
                records
                    .add(&record_to_js(&record), None)
                    .done("add a record")
                    .await?;
            }
            WriteOp::UpdateRecord {
                record,
                expect_value,
            } => {
                let current = self
                    .r
                    .record(&record.id)
                    .await?
                    .ok_or_else(|| StorageError::RecordMissing(record.id.clone()))?;
                if current.token != record.token {
                    return Err(StorageError::Backend {
                        name: None,
                        message: "a record's token cannot change".into(),
                    });
                }
                if expect_value.is_some_and(|v| v != current.value) {
                    return Err(StorageError::Changed(record.id));
                }
                records
                    .put(&record_to_js(&record), None)
                    .done("write a record")
                    .await?;
            }
            WriteOp::DeleteRecord { id } => {
                records
                    .delete(JsValue::from_str(&id))
                    .done("delete a record")
                    .await?;
            }
            WriteOp::InsertMeta(row) => {
                let exists = meta
                    .get_key(meta_key_js(&row.key))
                    .done("read a meta row")
                    .await?;
                if exists.is_some() {
                    return Err(StorageError::MetaTaken(row.key));
                }
                self.put_meta(row).await?;
            }
            WriteOp::PutMeta(row) => self.put_meta(row).await?,
            WriteOp::DeleteMeta(key) => {
                meta.delete(meta_key_js(&key))
                    .done("delete a meta row")
                    .await?;
            }
            WriteOp::DeleteObjectIfUnreferenced {
                object_type,
                object_id,
                referrer_type,
                referrer_key,
            } => {
                if self
                    .r
                    .count_value(&referrer_type, &referrer_key, &object_id)
                    .await?
                    == 0
                {
                    meta.delete(object_range(&object_type, &object_id)?)
                        .done("delete meta rows")
                        .await?;
                }
            }
            WriteOp::ExpectEmpty => {
                let n = records.count(None).done("count records").await?;
                let all = meta.count(None).done("count meta rows").await?;
                let vault_range = {
                    let lower = key_array(&[object_type::VAULT]);
                    let upper: JsValue =
                        [JsValue::from_str(object_type::VAULT), Array::new().into()]
                            .into_iter()
                            .collect::<Array>()
                            .into();
                    range(KeyRange::bound(&lower, &upper, Some(false), Some(false)))?
                };
                let settings = meta
                    .count(Some(vault_range))
                    .done("count meta rows")
                    .await?;
                if n > 0 || all > settings {
                    return Err(StorageError::NotEmpty);
                }
            }
            WriteOp::ClearAll => {
                records.clear().done("clear records").await?;
                meta.clear().done("clear meta rows").await?;
            }
        }
        Ok(())
    }

    async fn put_meta(&self, row: MetaRow) -> StorageResult<()> {
        if is_unique_meta(&row.key) {
            let holders = self
                .r
                .find(&row.key.object_type, &row.key.key, &row.value)
                .await?;
            if holders.iter().any(|h| h.key != row.key) {
                return Err(StorageError::UniqueValueTaken(row.key));
            }
        }
        self.r
            .meta
            .put(&meta_to_js(&row), None)
            .done("write a meta row")
            .await?;
        Ok(())
    }
}
