//! The `Storage` trait: what the vault needs from a backend, and nothing more.
//!
//! Two stores, as in the Go seed: **records** (one row per token) and **meta** (string rows keyed
//! by `object_type`, `object_id`, `key`: vault settings, password identities, record links).
//! Reads are plain lookups; every change goes through [`Storage::apply`], which applies a whole
//! batch atomically or not at all. Backends hold no crypto and see no plaintext.
//!
//! Every backend must pass the storage conformance suite in `tests/conformance/`.

#[cfg(all(feature = "idb", target_arch = "wasm32"))]
pub mod indexeddb;
#[cfg(feature = "gluesql")]
pub mod memory;
#[cfg(feature = "sql")]
pub mod sql;

use crate::query::RecordFilter;
use crate::record::Record;
use async_trait::async_trait;
use std::fmt;

/// `Send + Sync` outside wasm, nothing on wasm, where IndexedDB handles are `!Send` and there is
/// one thread anyway (the `SendOutsideWasm` pattern of matrix-rust-sdk).
#[cfg(not(target_arch = "wasm32"))]
pub trait MaybeSendSync: Send + Sync {}
#[cfg(not(target_arch = "wasm32"))]
impl<T: Send + Sync + ?Sized> MaybeSendSync for T {}
#[cfg(target_arch = "wasm32")]
pub trait MaybeSendSync {}
#[cfg(target_arch = "wasm32")]
impl<T: ?Sized> MaybeSendSync for T {}

/// The key of a meta row.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct MetaKey {
    pub object_type: String,
    pub object_id: String,
    pub key: String,
}

impl MetaKey {
    pub fn new(object_type: &str, object_id: &str, key: &str) -> Self {
        MetaKey {
            object_type: object_type.to_owned(),
            object_id: object_id.to_owned(),
            key: key.to_owned(),
        }
    }
}

/// One meta row.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct MetaRow {
    pub key: MetaKey,
    pub value: String,
}

impl MetaRow {
    pub fn new(object_type: &str, object_id: &str, key: &str, value: impl Into<String>) -> Self {
        MetaRow {
            key: MetaKey::new(object_type, object_id, key),
            value: value.into(),
        }
    }
}

/// Meta rows whose value must be unique among rows of the same `object_type` and `key`
/// (FORMAT.md: an identity `tag` is unique in a vault). Backends enforce this on every write, so
/// two tabs racing to create the same identity end up with one.
pub const UNIQUE_META_VALUES: &[(&str, &str)] = &[("password_identity", "tag")];

/// Whether `key` names a row whose value must be unique (see [`UNIQUE_META_VALUES`]).
pub fn is_unique_meta(key: &MetaKey) -> bool {
    UNIQUE_META_VALUES
        .iter()
        .any(|(t, k)| key.object_type == *t && key.key == *k)
}

/// A change to one record's metadata or value. The backend applies it to the record as it is
/// inside the batch's transaction, so a change never carries stale copies of the other fields:
/// a renewal that commits while a rekey runs keeps the rekey's value, and the rekey keeps it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RecordChange {
    /// Set the expiry (`None`: never expires).
    Renew { expires_at: Option<i64> },
    /// Soft-delete; a record already soft-deleted keeps its first time and is left unchanged.
    /// With `if_expired_at`, only a record still expired at that time (`at > expiresAt`) is
    /// changed; a record renewed meanwhile fails the batch with [`StorageError::Changed`].
    SoftDelete { if_expired_at: Option<i64> },
    /// Undo a soft delete; a live record is left unchanged.
    Restore,
    /// Replace the value if it is still `expect` (compare-and-swap), else fail the batch with
    /// [`StorageError::Changed`]: a value sealed from a stale read never overwrites a newer one.
    Reseal { expect: String, value: String },
    /// A caller's new value (`tokenUpdate`): [`RecordChange::Reseal`] that also requires the
    /// record not to be soft-deleted when the batch commits, else [`StorageError::Changed`]. A
    /// soft delete that lands while the update derives its key must not be written over: the
    /// update would change a record the caller can no longer see, as it does without the race.
    Update { expect: String, value: String },
}

impl RecordChange {
    /// Apply to `record` at time `at`; `Ok(false)` when the record is left as it is.
    pub fn apply_to(&self, record: &mut Record, at: i64) -> StorageResult<bool> {
        match self {
            RecordChange::Renew { expires_at } => record.expires_at = *expires_at,
            RecordChange::SoftDelete { if_expired_at } => {
                if let Some(now) = if_expired_at
                    && !record.is_expired(*now)
                {
                    return Err(StorageError::Changed(record.id.clone()));
                }
                if record.soft_deleted_at.is_some() {
                    return Ok(false);
                }
                record.soft_deleted_at = Some(at);
            }
            RecordChange::Restore => {
                if record.soft_deleted_at.is_none() {
                    return Ok(false);
                }
                record.soft_deleted_at = None;
            }
            RecordChange::Reseal { expect, value } => {
                if &record.value != expect {
                    return Err(StorageError::Changed(record.id.clone()));
                }
                record.value.clone_from(value);
            }
            RecordChange::Update { expect, value } => {
                if &record.value != expect || record.soft_deleted_at.is_some() {
                    return Err(StorageError::Changed(record.id.clone()));
                }
                record.value.clone_from(value);
            }
        }
        record.updated_at = at;
        Ok(true)
    }
}

/// One change inside an atomic batch. Each op states its own preconditions, and every backend
/// checks them inside the transaction that applies the batch, so no read made before the batch
/// can be stale when it commits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WriteOp {
    /// Add a record. Fails with [`StorageError::TokenTaken`] / [`StorageError::IdTaken`] when a
    /// record with the same token / id exists (soft-deleted ones included).
    InsertRecord(Record),
    /// Change one record in place, setting `updatedAt` to `at` when it changes. Fails with
    /// [`StorageError::RecordMissing`] when there is none (see [`RecordChange`] for the rest).
    ChangeRecord {
        id: String,
        change: RecordChange,
        at: i64,
    },
    /// Remove a record by id together with its identity link, and the identity the link pointed
    /// to when no other link refers to it (with its slots, see [`OWNER_KEY`]). Nothing happens when the record is missing. With
    /// `if_expired_at`, a record that is not expired at that time fails the batch with
    /// [`StorageError::Changed`] (a purge never removes a record renewed meanwhile).
    DeleteRecord {
        id: String,
        if_expired_at: Option<i64>,
    },
    /// Add a meta row; fails with [`StorageError::MetaTaken`] when the key exists, or with
    /// [`StorageError::UniqueValueTaken`] (see [`UNIQUE_META_VALUES`]).
    InsertMeta(MetaRow),
    /// Add or replace a meta row ([`UNIQUE_META_VALUES`] still hold).
    PutMeta(MetaRow),
    /// Remove a meta row; nothing happens when it is missing.
    DeleteMeta(MetaKey),
    /// Fail with [`StorageError::MetaChanged`] unless the row `key` holds `value` (`None`: the
    /// row is absent). Writes that rely on an identity check that its tag is still theirs; a
    /// rekey checks that no value was written since it read the records (see [`write_epoch`]).
    ExpectMeta { key: MetaKey, value: Option<String> },
    /// Remove every row of the object `(object_type, object_id)` unless some meta row of type
    /// `referrer_type` with key `referrer_key` has the value `object_id`: an identity with no
    /// record links left goes, in the same atomic batch that removed its last link. Every object
    /// of the same `object_type` with a row [`OWNER_KEY`] = `object_id` goes with it (an
    /// identity's further secret slots).
    DeleteObjectIfUnreferenced {
        object_type: String,
        object_id: String,
        referrer_type: String,
        referrer_key: String,
    },
    /// Fail with [`StorageError::NotEmpty`] unless the store holds no records and no meta rows
    /// other than those of `object_type = "vault"` (snapshot import).
    ExpectEmpty,
    /// Remove every record and every meta row (snapshot import, after `ExpectEmpty`).
    ClearAll,
}

/// The meta row every batch that seals a value or removes a record rewrites with a fresh random
/// tag (FORMAT.md "Vault state"). A rekey reads it before it reads any record and expects it
/// unchanged when it commits: if another tab or isolate sealed, linked or deleted a value
/// meanwhile, the rekey reads again and re-seals what changed instead of overwriting it.
pub fn write_epoch() -> MetaKey {
    MetaKey::new(object_type::VAULT, STATE_ID, "writes")
}

/// Whether records without an identity link may exist (FORMAT.md "Vault state"): `"false"` only
/// when none do. Writes sealed with a master key set it; a rekey that finds none clears it, so a
/// vault that has always used identities never scans its records on a password change.
pub fn unlinked_records() -> MetaKey {
    MetaKey::new(object_type::VAULT, STATE_ID, "unlinked")
}

/// The object holding the vault's internal state rows (never exported in snapshots).
pub const STATE_ID: &str = "state";

/// Object types of the meta store (FORMAT.md).
pub mod object_type {
    pub const VAULT: &str = "vault";
    pub const IDENTITY: &str = "password_identity";
    pub const RECORD: &str = "record";
}

/// A backend failure, or a precondition of a batch that did not hold.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StorageError {
    TokenTaken(String),
    IdTaken(String),
    MetaTaken(MetaKey),
    UniqueValueTaken(MetaKey),
    RecordMissing(String),
    /// A record changed since the caller read it ([`RecordChange::Reseal`] and
    /// [`RecordChange::Update`], conditional purges).
    Changed(String),
    /// A meta row does not hold what [`WriteOp::ExpectMeta`] expected.
    MetaChanged(MetaKey),
    NotEmpty,
    /// The platform refused to store more (IndexedDB `QuotaExceededError`).
    Quota(String),
    /// Any other backend failure, with the backend's own error name when it has one.
    Backend {
        name: Option<String>,
        message: String,
    },
    Closed,
}

impl fmt::Display for StorageError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            // No token, id or key is quoted: they may be what a caller passed (API.md "Errors").
            StorageError::TokenTaken(_) => f.write_str("the token is already stored"),
            StorageError::IdTaken(_) => f.write_str("the record id is already stored"),
            StorageError::MetaTaken(k) => {
                write!(f, "a {}/{} meta row already exists", k.object_type, k.key)
            }
            StorageError::UniqueValueTaken(k) => write!(
                f,
                "another {}/{} row has the same value",
                k.object_type, k.key
            ),
            StorageError::RecordMissing(_) => f.write_str("the record no longer exists"),
            StorageError::Changed(_) => {
                f.write_str("the record was changed by another writer meanwhile; retry")
            }
            StorageError::MetaChanged(k) => write!(
                f,
                "a {}/{} meta row was changed by another writer meanwhile; retry",
                k.object_type, k.key
            ),
            StorageError::NotEmpty => write!(f, "the store already holds records or identities"),
            StorageError::Quota(m) => write!(f, "quota exceeded: {m}"),
            StorageError::Backend {
                name: Some(n),
                message,
            } => write!(f, "{n}: {message}"),
            StorageError::Backend {
                name: None,
                message,
            } => f.write_str(message),
            StorageError::Closed => f.write_str("the storage connection is closed"),
        }
    }
}

impl From<StorageError> for crate::error::VaultError {
    fn from(e: StorageError) -> Self {
        use crate::error::VaultError;
        match e {
            StorageError::Quota(m) => VaultError::QuotaExceeded(m),
            StorageError::Backend { name, message } => VaultError::Storage { name, message },
            StorageError::Closed => VaultError::Closed,
            StorageError::TokenTaken(t) => VaultError::TokenExists(t),
            other => VaultError::storage(other.to_string()),
        }
    }
}

pub type StorageResult<T> = Result<T, StorageError>;

/// The meta key of a record's identity link (FORMAT.md "Record links").
pub fn link_key(record_id: &str) -> MetaKey {
    MetaKey::new(object_type::RECORD, &format!("r_{record_id}"), LINK_KEY)
}

/// The `key` column of record link rows.
pub const LINK_KEY: &str = "password_id";

/// The key of the row naming the object a dependent object belongs to (FORMAT.md "Password
/// identities": a further secret slot of an identity is an object of the same type with a row
/// `identity` = the identity's id). Removing an object, by [`WriteOp::DeleteObjectIfUnreferenced`]
/// or by the prune of [`WriteOp::DeleteRecord`], removes its dependents in the same batch, found
/// through the by-value index.
pub const OWNER_KEY: &str = "identity";

/// A storage backend. See the module docs; each method is one round trip to the backend.
#[cfg_attr(target_arch = "wasm32", async_trait(?Send))]
#[cfg_attr(not(target_arch = "wasm32"), async_trait)]
pub trait Storage: MaybeSendSync {
    /// The record of each token, in the order asked (`None` where there is none), in one round
    /// trip. Links are not read: the vault tells which key sealed a value by its key check.
    async fn records_by_tokens(&self, tokens: &[String]) -> StorageResult<Vec<Option<Record>>>;

    /// The record of each id, in the order asked (`None` where there is none), in one round trip.
    async fn records_by_ids(&self, ids: &[String]) -> StorageResult<Vec<Option<Record>>>;

    /// Records matching `filter` at time `now`, in its order, paged by its limit and offset.
    async fn query_records(&self, filter: &RecordFilter, now: i64) -> StorageResult<Vec<Record>>;

    /// How many records match `filter` at `now`, ignoring its limit, offset and order, without
    /// materialising them where the backend can avoid it.
    async fn count_records(&self, filter: &RecordFilter, now: i64) -> StorageResult<u64>;

    /// Up to `limit` records in the backend's own id order, starting after `after_id`: a full
    /// scan in bounded memory (rekey by key check, link migration, snapshot export).
    async fn scan_records(
        &self,
        after_id: Option<&str>,
        limit: usize,
    ) -> StorageResult<Vec<Record>>;

    /// The value of one meta row.
    async fn meta_get(&self, key: &MetaKey) -> StorageResult<Option<String>>;

    /// Every row of one object, e.g. all settings, or one identity's `tag` and `dek`.
    async fn meta_object(&self, object_type: &str, object_id: &str) -> StorageResult<Vec<MetaRow>>;

    /// Every row of every object of `object_type` that has a row `key` = `value`, in one round
    /// trip: an identity's `tag` and `dek` from its tag, or the link rows of an identity's
    /// records. Backends index this lookup.
    async fn meta_find(
        &self,
        object_type: &str,
        key: &str,
        value: &str,
    ) -> StorageResult<Vec<MetaRow>>;

    /// How many meta rows have this `object_type` (record links: is any record unlinked?).
    async fn meta_count(&self, object_type: &str) -> StorageResult<u64>;

    /// Every meta row, in key order (snapshot export; meta stays small).
    async fn meta_all(&self) -> StorageResult<Vec<MetaRow>>;

    /// Apply every op in order, atomically: after an error nothing of the batch is visible.
    async fn apply(&self, batch: Vec<WriteOp>) -> StorageResult<()>;

    /// Begin a write transaction for a write planned from reads (a rekey's later rounds): the
    /// reads made through it and its commit are one transaction where the backend can hold the
    /// store meanwhile (IndexedDB: nothing else writes until it commits), so its guards hold and
    /// it cannot starve under other writers. Where a backend cannot, the commit is an ordinary
    /// [`Storage::apply`] whose guards still refuse a stale plan. The caller must await nothing
    /// but the transaction between its first read and its commit.
    async fn transaction(&self) -> StorageResult<Box<dyn WriteTransaction + '_>>;

    /// Purge up to `limit` of the records expired at `at` (`at > expiresAt`) as `purge` says,
    /// the first in expiry order, together with `also` (the write epoch), in one atomic write,
    /// and say how many were purged: fewer than `limit` means none is left. The vault calls it
    /// again until then, so each write stays bounded (D1 stops a statement that runs too long).
    /// A count that changes between reading it and writing (a renewal, a restore) fails with
    /// [`StorageError::Changed`] and nothing is written.
    ///
    /// `Ok(None)` says the backend has no set-based purge (it would have to read the records
    /// anyway), and the vault pages through the expired records with [`Storage::apply`]
    /// instead. Every backend and every wrapper must answer for itself: a wrapper that does not
    /// forward this silently turns the set-based purge off.
    async fn purge_expired(
        &self,
        at: i64,
        purge: Purge,
        limit: usize,
        also: Vec<WriteOp>,
    ) -> StorageResult<Option<u64>>;

    /// Release the backend. Later calls fail with [`StorageError::Closed`].
    async fn close(&self);
}

/// What an expiry purge does to each expired record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Purge {
    /// Soft-delete the expired records that are not soft-deleted yet (`softDeletedAt` and
    /// `updatedAt` become the purge's time).
    SoftDelete,
    /// Delete every expired record, soft-deleted or not, with its link, and the identities
    /// left without any link.
    Delete,
}

/// The reads a multi-step write plans with, and its commit (see [`Storage::transaction`]).
#[cfg_attr(target_arch = "wasm32", async_trait(?Send))]
#[cfg_attr(not(target_arch = "wasm32"), async_trait)]
pub trait WriteTransaction: MaybeSendSync {
    async fn records_by_ids(&self, ids: &[String]) -> StorageResult<Vec<Option<Record>>>;
    async fn scan_records(
        &self,
        after_id: Option<&str>,
        limit: usize,
    ) -> StorageResult<Vec<Record>>;
    async fn meta_get(&self, key: &MetaKey) -> StorageResult<Option<String>>;
    async fn meta_find(
        &self,
        object_type: &str,
        key: &str,
        value: &str,
    ) -> StorageResult<Vec<MetaRow>>;
    async fn meta_count(&self, object_type: &str) -> StorageResult<u64>;
    /// Apply `batch` in this transaction, atomically, checking its guards.
    async fn commit(self: Box<Self>, batch: Vec<WriteOp>) -> StorageResult<()>;
}

/// A write "transaction" made of ordinary calls: reads go to the store as they come, and the
/// commit is one [`Storage::apply`], whose guards refuse a plan that went stale meanwhile. The
/// GlueSQL backend answers every call without yielding, so nothing can run between its reads
/// and its commit anyway.
pub struct Optimistic<'a>(pub &'a dyn Storage);

#[cfg_attr(target_arch = "wasm32", async_trait(?Send))]
#[cfg_attr(not(target_arch = "wasm32"), async_trait)]
impl WriteTransaction for Optimistic<'_> {
    async fn records_by_ids(&self, ids: &[String]) -> StorageResult<Vec<Option<Record>>> {
        self.0.records_by_ids(ids).await
    }
    async fn scan_records(
        &self,
        after_id: Option<&str>,
        limit: usize,
    ) -> StorageResult<Vec<Record>> {
        self.0.scan_records(after_id, limit).await
    }
    async fn meta_get(&self, key: &MetaKey) -> StorageResult<Option<String>> {
        self.0.meta_get(key).await
    }
    async fn meta_find(
        &self,
        object_type: &str,
        key: &str,
        value: &str,
    ) -> StorageResult<Vec<MetaRow>> {
        self.0.meta_find(object_type, key, value).await
    }
    async fn meta_count(&self, object_type: &str) -> StorageResult<u64> {
        self.0.meta_count(object_type).await
    }
    async fn commit(self: Box<Self>, batch: Vec<WriteOp>) -> StorageResult<()> {
        self.0.apply(batch).await
    }
}

/// Every record, a page at a time in the backend's id order. `visit` sees each page in turn, so
/// memory stays bounded by one page plus whatever `visit` keeps.
pub(crate) async fn scan_pages(
    storage: &dyn WriteTransaction,
    page_size: usize,
    mut visit: impl AsyncFnMut(Vec<Record>) -> crate::error::Result<()>,
) -> crate::error::Result<()> {
    let mut after: Option<String> = None;
    loop {
        let page = storage.scan_records(after.as_deref(), page_size).await?;
        let Some(last) = page.last() else {
            return Ok(());
        };
        after = Some(last.id.clone());
        let full = page.len() == page_size;
        visit(page).await?;
        if !full {
            return Ok(());
        }
    }
}

/// Delegates the trait through a pointer: `Arc<S>` is a shared store (several vaults on one
/// backend, as two tabs share one IndexedDB database), `Box<dyn Storage>` a chosen one.
macro_rules! delegate_storage {
    ($pointer:ident) => {
        #[cfg_attr(target_arch = "wasm32", async_trait(?Send))]
        #[cfg_attr(not(target_arch = "wasm32"), async_trait)]
        impl<S: Storage + ?Sized> Storage for $pointer<S> {
            async fn records_by_tokens(
                &self,
                tokens: &[String],
            ) -> StorageResult<Vec<Option<Record>>> {
                (**self).records_by_tokens(tokens).await
            }
            async fn records_by_ids(&self, ids: &[String]) -> StorageResult<Vec<Option<Record>>> {
                (**self).records_by_ids(ids).await
            }
            async fn query_records(
                &self,
                filter: &RecordFilter,
                now: i64,
            ) -> StorageResult<Vec<Record>> {
                (**self).query_records(filter, now).await
            }
            async fn count_records(&self, filter: &RecordFilter, now: i64) -> StorageResult<u64> {
                (**self).count_records(filter, now).await
            }
            async fn scan_records(
                &self,
                after_id: Option<&str>,
                limit: usize,
            ) -> StorageResult<Vec<Record>> {
                (**self).scan_records(after_id, limit).await
            }
            async fn meta_get(&self, key: &MetaKey) -> StorageResult<Option<String>> {
                (**self).meta_get(key).await
            }
            async fn meta_object(
                &self,
                object_type: &str,
                object_id: &str,
            ) -> StorageResult<Vec<MetaRow>> {
                (**self).meta_object(object_type, object_id).await
            }
            async fn meta_find(
                &self,
                object_type: &str,
                key: &str,
                value: &str,
            ) -> StorageResult<Vec<MetaRow>> {
                (**self).meta_find(object_type, key, value).await
            }
            async fn meta_count(&self, object_type: &str) -> StorageResult<u64> {
                (**self).meta_count(object_type).await
            }
            async fn meta_all(&self) -> StorageResult<Vec<MetaRow>> {
                (**self).meta_all().await
            }
            async fn apply(&self, batch: Vec<WriteOp>) -> StorageResult<()> {
                (**self).apply(batch).await
            }
            async fn transaction(&self) -> StorageResult<Box<dyn WriteTransaction + '_>> {
                (**self).transaction().await
            }
            async fn purge_expired(
                &self,
                at: i64,
                purge: Purge,
                limit: usize,
                also: Vec<WriteOp>,
            ) -> StorageResult<Option<u64>> {
                (**self).purge_expired(at, purge, limit, also).await
            }
            async fn close(&self) {
                (**self).close().await
            }
        }
    };
}

use std::sync::Arc;
delegate_storage!(Arc);
delegate_storage!(Box);
