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

/// One change inside an atomic batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WriteOp {
    /// Add a record. Fails with [`StorageError::TokenTaken`] / [`StorageError::IdTaken`] when a
    /// record with the same token / id exists (soft-deleted ones included).
    InsertRecord(Record),
    /// Replace the record with the same id (its token must not change). Fails with
    /// [`StorageError::RecordMissing`] when there is none, and with [`StorageError::Changed`] when
    /// `expect_value` is set and the stored value differs (compare-and-swap, so a rekey never
    /// overwrites a value another tab changed meanwhile).
    UpdateRecord {
        record: Record,
        expect_value: Option<String>,
    },
    /// Remove a record by id; nothing happens when it is missing.
    DeleteRecord { id: String },
    /// Add a meta row; fails with [`StorageError::MetaTaken`] when the key exists, or with
    /// [`StorageError::UniqueValueTaken`] (see [`UNIQUE_META_VALUES`]).
    InsertMeta(MetaRow),
    /// Add or replace a meta row ([`UNIQUE_META_VALUES`] still hold).
    PutMeta(MetaRow),
    /// Remove a meta row; nothing happens when it is missing.
    DeleteMeta(MetaKey),
    /// Remove every row of the object `(object_type, object_id)` unless some meta row of type
    /// `referrer_type` with key `referrer_key` has the value `object_id`: an identity with no
    /// record links left goes, in the same atomic batch that removed its last link.
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
    Changed(String),
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
            StorageError::TokenTaken(t) => write!(f, "token {t:?} is already stored"),
            StorageError::IdTaken(id) => write!(f, "record id {id:?} is already stored"),
            StorageError::MetaTaken(k) => write!(f, "meta row {k:?} already exists"),
            StorageError::UniqueValueTaken(k) => write!(
                f,
                "another {}/{} row has the same value",
                k.object_type, k.key
            ),
            StorageError::RecordMissing(id) => write!(f, "record {id:?} no longer exists"),
            StorageError::Changed(id) => write!(
                f,
                "record {id:?} was changed by another writer meanwhile; retry"
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

/// A record together with the identity it is linked to (`record` / `r_<id>` / `password_id`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredRecord {
    pub record: Record,
    pub identity_id: Option<String>,
}

/// The meta key of a record's identity link (FORMAT.md "Record links").
pub fn link_key(record_id: &str) -> MetaKey {
    MetaKey::new(object_type::RECORD, &format!("r_{record_id}"), LINK_KEY)
}

/// The `key` column of record link rows.
pub const LINK_KEY: &str = "password_id";

/// A storage backend. See the module docs; each method is one round trip to the backend.
#[cfg_attr(target_arch = "wasm32", async_trait(?Send))]
#[cfg_attr(not(target_arch = "wasm32"), async_trait)]
pub trait Storage: MaybeSendSync {
    /// Records with these tokens, each with its identity link, in one round trip. Tokens that do
    /// not exist are simply absent from the result; order is unspecified.
    async fn records_by_tokens(&self, tokens: &[String]) -> StorageResult<Vec<StoredRecord>>;

    /// Records with these ids, each with its identity link, in one round trip. Ids that do not
    /// exist are absent from the result; order is unspecified.
    async fn records_by_ids(&self, ids: &[String]) -> StorageResult<Vec<StoredRecord>>;

    /// Records matching `filter` at time `now`, in its order, paged by its limit and offset.
    async fn query_records(&self, filter: &RecordFilter, now: i64) -> StorageResult<Vec<Record>>;

    /// How many records match `filter` at `now`, ignoring its limit, offset and order, without
    /// materialising them where the backend can avoid it.
    async fn count_records(&self, filter: &RecordFilter, now: i64) -> StorageResult<u64>;

    /// Up to `limit` records, with links, in the backend's own id order, starting after `after_id`:
    /// a full scan in bounded memory (rekey by key check, link migration, snapshot export).
    async fn scan_records(
        &self,
        after_id: Option<&str>,
        limit: usize,
    ) -> StorageResult<Vec<StoredRecord>>;

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

    /// Every meta row, in key order (snapshot export; meta stays small).
    async fn meta_all(&self) -> StorageResult<Vec<MetaRow>>;

    /// Apply every op in order, atomically: after an error nothing of the batch is visible.
    async fn apply(&self, batch: Vec<WriteOp>) -> StorageResult<()>;

    /// Release the backend. Later calls fail with [`StorageError::Closed`].
    async fn close(&self);
}

/// Every record, with its link, a page at a time in the backend's id order. `visit` sees each
/// page in turn, so memory stays bounded by one page plus whatever `visit` keeps.
pub(crate) async fn scan_pages(
    storage: &dyn Storage,
    page_size: usize,
    mut visit: impl AsyncFnMut(Vec<StoredRecord>) -> crate::error::Result<()>,
) -> crate::error::Result<()> {
    let mut after: Option<String> = None;
    loop {
        let page = storage.scan_records(after.as_deref(), page_size).await?;
        let Some(last) = page.last() else {
            return Ok(());
        };
        after = Some(last.record.id.clone());
        let full = page.len() == page_size;
        visit(page).await?;
        if !full {
            return Ok(());
        }
    }
}

/// A shared store: several vaults on one backend (as two tabs share one IndexedDB database).
#[cfg_attr(target_arch = "wasm32", async_trait(?Send))]
#[cfg_attr(not(target_arch = "wasm32"), async_trait)]
impl<S: Storage + ?Sized> Storage for std::sync::Arc<S> {
    async fn records_by_tokens(&self, tokens: &[String]) -> StorageResult<Vec<StoredRecord>> {
        (**self).records_by_tokens(tokens).await
    }
    async fn records_by_ids(&self, ids: &[String]) -> StorageResult<Vec<StoredRecord>> {
        (**self).records_by_ids(ids).await
    }
    async fn query_records(&self, filter: &RecordFilter, now: i64) -> StorageResult<Vec<Record>> {
        (**self).query_records(filter, now).await
    }
    async fn count_records(&self, filter: &RecordFilter, now: i64) -> StorageResult<u64> {
        (**self).count_records(filter, now).await
    }
    async fn scan_records(
        &self,
        after_id: Option<&str>,
        limit: usize,
    ) -> StorageResult<Vec<StoredRecord>> {
        (**self).scan_records(after_id, limit).await
    }
    async fn meta_get(&self, key: &MetaKey) -> StorageResult<Option<String>> {
        (**self).meta_get(key).await
    }
    async fn meta_object(&self, object_type: &str, object_id: &str) -> StorageResult<Vec<MetaRow>> {
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
    async fn meta_all(&self) -> StorageResult<Vec<MetaRow>> {
        (**self).meta_all().await
    }
    async fn apply(&self, batch: Vec<WriteOp>) -> StorageResult<()> {
        (**self).apply(batch).await
    }
    async fn close(&self) {
        (**self).close().await
    }
}
