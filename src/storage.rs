//! The `Storage` trait: what the vault needs from a backend, and nothing more.
//!
//! Two stores, as in the Go seed: **records** (one row per token, with the identity that sealed
//! its value) and **meta** (string rows keyed by `object_type`, `object_id`, `key`: vault
//! settings, password identities, vault state). Reads are plain lookups; every change goes
//! through [`Storage::apply`], which applies a whole batch atomically or not at all. Backends
//! hold no crypto and see no plaintext.
//!
//! # What a store keeps for sync (schema 2)
//! Every **replicated** row (each record, each meta row [`is_replicated`] says yes to) carries:
//! - **revisions** (`crate::sync`): a record one per register ([`crate::record::RecordRevs`]), a
//!   meta row one. A batch writes its [`Stamp`]'s revision into each register or row it changes.
//!   Rows written before schema 2 have none stored; backends read them as synthesized
//!   ([`crate::record::RecordRevs::synthesized`] from `createdAt`; [`Rev::ZERO`] for meta), so
//!   the migration stores none for them.
//! - a **sequence number** `seq`: every write of a replicated row gives it the store's next one,
//!   taken inside the batch's transaction, so seqs are unique across records, tombstones and meta
//!   and grow in commit order ([`Storage::changes_since`]: what a server sends a puller). No
//!   replicated row has seq 0: the schema-2 migration gives every row written before it a
//!   distinct seq ≥ 1 and the counter continues above them, so a feed walked from 0 holds them.
//! - a **dirty mark**: the seq of the row's last *local* write, cleared when the server has it
//!   ([`Storage::dirty_changes`]: what a client pushes). Rows a merge wrote
//!   ([`WriteOp::PutVersion`] with `dirty: false`) are not dirty.
//! - **tombstones**: a hard-deleted record, and a deleted meta row, leave a tombstone (its
//!   revision, `deletedAt`, and for records the reason) in their place, with its own seq and
//!   dirty mark, so a deletion travels like any change and a stale replica cannot resurrect the
//!   row. Tombstones are not records or meta rows: no read but the change feeds sees them.
//!
//! Local rows (`vault/state/*`, the `kdf` setting, anything of `object_type = "sync"`) carry
//! none of this and never leave the store.
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
use crate::sync::Rev;
pub use crate::sync::{Change, Row, RowKey};
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

/// What [`Storage::meta_find`] looks for: the objects of `object_type` with a row `key` =
/// `value`.
#[derive(Debug, Clone, Copy)]
pub struct MetaFind<'a> {
    pub object_type: &'a str,
    pub key: &'a str,
    pub value: &'a str,
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
/// (FORMAT.md: an identity `tag` is unique in a vault). Backends enforce this on every local
/// write ([`WriteOp::InsertMeta`], [`WriteOp::PutMeta`]), so two tabs racing to create the same
/// identity end up with one. A merge ([`WriteOp::PutVersion`]) does not: two replicas that first
/// used one password offline each created an identity with its tag, and both must be storable
/// for the replicas to converge; nor does [`WriteOp::PutSharedMeta`], which writes such a state
/// again (a snapshot import) or changes it as a whole.
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
    /// Replace the value, sealed now with the key of `password_id` (`None`: a master key), if
    /// it is still `expect` (compare-and-swap), else fail the batch with
    /// [`StorageError::Changed`]: a value sealed from a stale read never overwrites a newer one.
    /// Sets the seal revision only: a re-seal is not an edit (`crate::sync`).
    Reseal {
        expect: String,
        value: String,
        password_id: Option<String>,
    },
    /// A caller's new value (`tokenUpdate`): [`RecordChange::Reseal`] that also requires the
    /// record not to be soft-deleted when the batch commits, else [`StorageError::Changed`]. A
    /// soft delete that lands while the update derives its key must not be written over: the
    /// update would change a record the caller can no longer see, as it does without the race.
    /// Sets the value and seal revisions.
    Update {
        expect: String,
        value: String,
        password_id: Option<String>,
    },
}

impl RecordChange {
    /// Apply to `record` at time `at` under revision `rev`; `Ok(false)` when the record is left
    /// as it is. `updatedAt` becomes the greater of its old value and `at` (a max-register, so it
    /// converges under sync and never goes back with a clock).
    pub fn apply_to(&self, record: &mut Record, at: i64, rev: Rev) -> StorageResult<bool> {
        match self {
            RecordChange::Renew { expires_at } => {
                record.expires_at = *expires_at;
                record.revs.expires = rev;
            }
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
                record.revs.deleted = rev;
            }
            RecordChange::Restore => {
                if record.soft_deleted_at.is_none() {
                    return Ok(false);
                }
                record.soft_deleted_at = None;
                record.revs.deleted = rev;
            }
            RecordChange::Reseal {
                expect,
                value,
                password_id,
            } => {
                if &record.value != expect {
                    return Err(StorageError::Changed(record.id.clone()));
                }
                record.value.clone_from(value);
                record.password_id.clone_from(password_id);
                record.revs.seal = rev;
            }
            RecordChange::Update {
                expect,
                value,
                password_id,
            } => {
                if &record.value != expect || record.soft_deleted_at.is_some() {
                    return Err(StorageError::Changed(record.id.clone()));
                }
                record.value.clone_from(value);
                record.password_id.clone_from(password_id);
                record.revs.value = rev;
                record.revs.seal = rev;
            }
        }
        record.updated_at = record.updated_at.max(at);
        Ok(true)
    }
}

/// One change inside an atomic batch. Each op states its own preconditions, and every backend
/// checks them inside the transaction that applies the batch, so no read made before the batch
/// can be stale when it commits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WriteOp {
    /// Add a record, with its `passwordId` and revisions as given. Fails with
    /// [`StorageError::TokenTaken`] / [`StorageError::IdTaken`] when a record with the same token
    /// / id exists (soft-deleted ones included), or a tombstone has the id.
    InsertRecord(Box<Record>),
    /// Change one record in place, setting `updatedAt` to `at` when it changes. Fails with
    /// [`StorageError::RecordMissing`] when there is none (see [`RecordChange`] for the rest).
    ChangeRecord {
        id: String,
        change: RecordChange,
        at: i64,
    },
    /// Remove a record by id, leaving a tombstone (reason `deleted`), and the identity its
    /// `passwordId` names when no other record has it (with its slots, see [`OWNER_KEY`]; each
    /// removed meta row leaves a tombstone). Nothing happens when the record is missing. With
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
    /// Add or replace a meta row whose value rows of other objects may hold too, unchecked
    /// against [`UNIQUE_META_VALUES`]: what sync leaves a secret (FORMAT.md "One secret, several
    /// objects") is restored from a snapshot, and changed or added on each of its objects, by
    /// local writes too. A later [`WriteOp::InsertMeta`] / [`WriteOp::PutMeta`] of the value
    /// still fails.
    PutSharedMeta(MetaRow),
    /// Remove a meta row, leaving a tombstone when it is replicated; nothing happens when it is
    /// missing.
    DeleteMeta(MetaKey),
    /// Fail with [`StorageError::MetaChanged`] unless the row `key` holds `value` (`None`: the
    /// row is absent). Writes that rely on an identity check that its tag is still theirs; a
    /// rekey checks that no value was written since it read the records (see [`write_epoch`]).
    ExpectMeta { key: MetaKey, value: Option<String> },
    /// Remove every row of the identity `identity_id` unless some record's `passwordId` names
    /// it: an identity with no records left goes, in the same atomic batch that moved or removed
    /// its last record. Every identity object with a row [`OWNER_KEY`] = `identity_id` goes with
    /// it (its further secret slots). Each removed row leaves a tombstone, `emptied` as asked
    /// (FORMAT.md "Sync": a removal that records written elsewhere under the identity undo).
    DeleteIdentityIfUnlinked { identity_id: String, emptied: bool },
    /// Fail with [`StorageError::MetaChanged`] (the identity's `tag` key) when some record's
    /// `passwordId` names `identity_id`, after the batch's earlier ops. A sync server removing an
    /// identity checks it at commit: its plan read the identity's records, and a concurrent push
    /// may link a record to it meanwhile (an optimistic backend does not see that range read).
    ExpectUnlinked { identity_id: String },
    /// Store one replicated row at its own revisions, as a merge decided it or a snapshot holds
    /// it, replacing whatever the store has for its id or key (a live row, a tombstone, or
    /// nothing): a [`crate::sync::RecordVersion::Gone`] or [`crate::sync::MetaVersion::Gone`]
    /// removes the live row and stores the tombstone. No revision is stamped; the row takes the
    /// next seq, and is dirty only when `dirty` says so. A live record whose token another live
    /// record (another id) holds fails with [`StorageError::TokenTaken`]; unique meta values are
    /// not checked (see [`UNIQUE_META_VALUES`]). It never prunes: a record it removes leaves its
    /// identity's rows as they are (the replica that deleted the record pruned them, and their
    /// tombstones arrive as versions of their own). A meta row that is not replicated
    /// ([`is_replicated`]) fails the batch: a merge never stores a local row.
    PutVersion { row: Box<Row>, dirty: bool },
    /// Fail with [`StorageError::Changed`] (a record id) or [`StorageError::MetaChanged`] (a
    /// meta key) unless the store's version of `key` (live or a tombstone) still has the seq
    /// `seq` (`None`: the store has no version of it). A merge planned from
    /// [`Storage::versions`] commits only if no write touched its rows meanwhile.
    ExpectVersion { key: RowKey, seq: Option<u64> },
    /// Clear the dirty mark of `key` if it is still `dirty` (the server has that version); a row
    /// changed here since keeps its newer mark. Nothing happens when the row is gone or clean.
    MarkClean { key: RowKey, dirty: u64 },
    /// Forget the tombstone of `key` (garbage collection, FORMAT.md "Sync"): remove it and its
    /// entry in the change feed, leaving the store with no version of `key`, if it is still the
    /// tombstone at `seq` and clean. Nothing happens otherwise (a live row, a tombstone written
    /// since, a dirty one not yet pushed, nothing). The store's seqs never go back. The caller
    /// finds the tombstones in the feed ([`Storage::changes_since`] from its own cursor), so a
    /// collection costs what it reads, never a scan of the store.
    DropTombstone { key: RowKey, seq: u64 },
    /// Fail with [`StorageError::NotEmpty`] unless the store holds no records, no tombstones and
    /// no meta rows other than those of `object_type` `"vault"` or `"sync"` (snapshot import; a
    /// sync server's "is this vault empty?").
    ExpectEmpty,
    /// [`WriteOp::ExpectEmpty`] with tombstones left out: fail unless the store holds no records
    /// and no meta rows but `"vault"` and `"sync"` ones. A replica whose records were all
    /// deleted holds no record and no identity, so it may take a sync server's vault (SYNC.md 5,
    /// FORMAT.md "empty"); its tombstones name records of the vault it leaves.
    ExpectNoData,
    /// Remove every record, tombstone and meta row except sync's own rows (`object_type =
    /// "sync"`; seqs never go back), after `ExpectEmpty` (snapshot import).
    ClearAll,
}

impl WriteOp {
    /// [`WriteOp::InsertRecord`] of `record`.
    pub fn insert_record(record: Record) -> Self {
        Self::InsertRecord(Box::new(record))
    }

    /// [`WriteOp::PutVersion`] of `row`.
    pub fn put_version(row: Row, dirty: bool) -> Self {
        Self::PutVersion {
            row: Box::new(row),
            dirty,
        }
    }
}

/// A replicated row as a store holds it: the row, its seq, and its dirty mark (`None`: clean).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stored {
    pub seq: u64,
    pub dirty: Option<u64>,
    pub row: Row,
}

/// What a batch writes into every replicated register and row it changes: one revision for the
/// whole batch (all its changes happened together), and the time tombstones record as
/// `deletedAt`. Local rows ([`is_replicated`]) ignore it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stamp {
    pub rev: Rev,
    /// Milliseconds since the epoch, by the writer's clock.
    pub at: i64,
}

/// Whether a meta row is replicated by sync (and carries a revision, a seq and a dirty mark),
/// or is local to its store: the vault's state rows (`vault/state/*`), the `kdf` setting (a
/// replica takes the server's only when it joins), and sync's own bookkeeping (`sync/*/*`).
pub fn is_replicated(key: &MetaKey) -> bool {
    !(key.object_type == object_type::SYNC
        || (key.object_type == object_type::VAULT
            && (key.object_id == STATE_ID || (key.object_id == SETTINGS_ID && key.key == "kdf"))))
}

/// The local row that keeps the live version of an identity object's row `key` (a slot's
/// too) that an emptied removal replaced (FORMAT.md "Sync", `replaced`): `"<rev> <value>"`.
/// Every backend writes it with the removal when a deletion takes an identity's last record,
/// and a sync server when a push brings such a removal, so that a replica writing the identity
/// back gets its latest version, not an older one it still holds (a password change).
pub fn replaced_key(key: &MetaKey) -> MetaKey {
    MetaKey::new(
        object_type::SYNC,
        REPLACED_ID,
        &format!("{}/{}", key.object_id, key.key),
    )
}

/// The value of a [`replaced_key`] row: the live version's revision and value, `"<rev> <value>"`
/// (`crate::sync::plan::replaced_row` reads it back). Inlined: the browser engine calls it
/// once, and a call costs its download more than the `format!` it wraps.
#[inline(always)]
pub fn replaced_value(rev: crate::sync::Rev, value: &str) -> String {
    format!("{rev} {value}")
}

/// The object of the [`replaced_key`] rows.
pub const REPLACED_ID: &str = "replaced";

/// The object holding the vault settings (FORMAT.md "Vault settings").
pub const SETTINGS_ID: &str = "settings";

/// The key of the row that says an identity (or a slot) exists: its `tag`.
pub fn identity_tag_key(identity_id: &str) -> MetaKey {
    MetaKey::new(object_type::IDENTITY, identity_id, TAG_KEY)
}

/// The meta row every batch that seals a value or removes a record rewrites with a fresh random
/// tag (FORMAT.md "Vault state"). A rekey reads it before it reads any record and expects it
/// unchanged when it commits: if another tab or isolate sealed, linked or deleted a value
/// meanwhile, the rekey reads again and re-seals what changed instead of overwriting it.
///
/// It is read with [`Storage::meta_get`] and written and guarded with the meta ops, like a
/// meta row, but a backend may keep it elsewhere: the listings ([`Storage::meta_object`],
/// [`Storage::meta_all`], [`Storage::meta_count`], [`Storage::meta_find`]) need not show it.
/// IndexedDB keeps it in its seq counter's row, which every write that renews it rewrites
/// anyway, so a `tokenCreate` puts one row fewer.
pub fn write_epoch() -> MetaKey {
    MetaKey::new(object_type::VAULT, STATE_ID, WRITES_KEY)
}

/// The key of [`write_epoch`] in the vault state object.
const WRITES_KEY: &str = "writes";

/// Whether `key` is [`write_epoch`]'s, without building one to compare.
pub fn is_write_epoch(key: &MetaKey) -> bool {
    key.key == WRITES_KEY && key.object_id == STATE_ID && key.object_type == object_type::VAULT
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
    /// Schema 1 only: a record's identity link was a meta row `record/r_<id>/password_id`.
    /// Schema 2 keeps it in the record (`passwordId`); migrations and version-1 snapshots
    /// still read these rows.
    pub const RECORD: &str = "record";
    /// Sync's bookkeeping (checkpoint, server id, clock offset): local rows, never replicated.
    pub const SYNC: &str = "sync";
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
    Quota(String, crate::error::Original),
    /// Any other backend failure, with the backend's own error name when it has one.
    Backend {
        name: Option<String>,
        message: String,
        /// What the platform threw, when it threw something (JavaScript's `error.cause`).
        original: crate::error::Original,
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
            StorageError::Quota(m, _) => write!(f, "quota exceeded: {m}"),
            StorageError::Backend {
                name: Some(n),
                message,
                ..
            } => write!(f, "{n}: {message}"),
            StorageError::Backend {
                name: None,
                message,
                ..
            } => f.write_str(message),
            StorageError::Closed => f.write_str("the storage connection is closed"),
        }
    }
}

impl From<StorageError> for crate::error::VaultError {
    fn from(e: StorageError) -> Self {
        use crate::error::VaultError;
        match e {
            StorageError::Quota(message, original) => {
                VaultError::QuotaExceeded(Box::new(crate::error::StorageFailure {
                    name: None,
                    message,
                    original,
                }))
            }
            StorageError::Backend {
                name,
                message,
                original,
            } => VaultError::Storage(Box::new(crate::error::StorageFailure {
                name,
                message,
                original,
            })),
            StorageError::Closed => VaultError::Closed,
            StorageError::TokenTaken(t) => VaultError::TokenExists(t),
            other => VaultError::storage(other.to_string()),
        }
    }
}

pub type StorageResult<T> = Result<T, StorageError>;

/// The key of the row naming the object a dependent object belongs to (FORMAT.md "Password
/// identities": a further secret slot of an identity is an object of the same type with a row
/// `identity` = the identity's id). Removing an object, by [`WriteOp::DeleteIdentityIfUnlinked`]
/// or by the prune of [`WriteOp::DeleteRecord`], removes its dependents in the same batch, found
/// through the by-value index.
pub const OWNER_KEY: &str = "identity";

/// The key of an identity's (or a slot's) tag row, which a secret's lookup finds.
pub const TAG_KEY: &str = "tag";
/// The key of an identity's (or a slot's) wrapped data key; always written with its `tag`.
pub const DEK_KEY: &str = "dek";

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

    /// [`Storage::records_by_tokens`] and [`Storage::meta_find`] in one round trip: reading
    /// values with identities on needs the records and the secret's identity rows, and API.md
    /// makes `tokensRead` one round trip. The default makes two calls; a backend with a round
    /// trip worth saving (SQL: one statement; IndexedDB: one transaction) overrides it.
    async fn records_by_tokens_and_meta(
        &self,
        tokens: &[String],
        find: MetaFind<'_>,
    ) -> StorageResult<(Vec<Option<Record>>, Vec<MetaRow>)> {
        let records = self.records_by_tokens(tokens).await?;
        let rows = self
            .meta_find(find.object_type, find.key, find.value)
            .await?;
        Ok((records, rows))
    }

    /// How many meta rows have this `object_type` (does the vault have identities?).
    async fn meta_count(&self, object_type: &str) -> StorageResult<u64>;

    /// Every meta row, in key order (snapshot export; meta stays small).
    async fn meta_all(&self) -> StorageResult<Vec<MetaRow>>;

    /// Up to `limit` records whose `passwordId` is `identity_id`, in id order after `after_id`:
    /// one index range (a rekey pages through an identity's records with it).
    async fn records_linked_to(
        &self,
        identity_id: &str,
        after_id: Option<&str>,
        limit: usize,
    ) -> StorageResult<Vec<Record>>;

    /// Up to `limit` replicated rows (records, tombstones, meta rows) whose seq is greater than
    /// `after_seq`, in seq order, each with its seq: the store's change feed. Local rows never
    /// appear; a row changed twice appears once, at its latest seq.
    async fn changes_since(&self, after_seq: u64, limit: usize) -> StorageResult<Vec<Change>>;

    /// The store's version of each key (a live row or a tombstone) with its seq and dirty mark,
    /// in the order asked (`None` where it has neither), in one round trip: what a merge reads.
    async fn versions(&self, keys: &[RowKey]) -> StorageResult<Vec<Option<Stored>>>;

    /// Up to `limit` dirty rows (changed here, not yet acknowledged by a sync server) whose dirty
    /// mark is greater than `after`, in the order of their marks, each with its mark as `seq`.
    async fn dirty_changes(&self, after: u64, limit: usize) -> StorageResult<Vec<Change>>;

    /// Apply every op in order, atomically: after an error nothing of the batch is visible.
    /// Every replicated register or row the batch changes gets `stamp`'s revision, the store's
    /// next seq and a dirty mark (see the module docs).
    async fn apply(&self, stamp: Stamp, batch: Vec<WriteOp>) -> StorageResult<()>;

    /// Begin a write transaction for a write planned from reads (a rekey's later rounds): the
    /// reads made through it and its commit are one transaction where the backend can hold the
    /// store meanwhile (IndexedDB: nothing else writes until it commits), so its guards hold and
    /// it cannot starve under other writers. Where a backend cannot, the commit is an ordinary
    /// [`Storage::apply`] whose guards still refuse a stale plan. The caller must await nothing
    /// but the transaction between its first read and its commit.
    async fn transaction(&self) -> StorageResult<Box<dyn WriteTransaction + '_>>;

    /// Purge up to `limit` of the records expired at `stamp.at` (`at > expiresAt`) as `purge` says,
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
        stamp: Stamp,
        purge: Purge,
        limit: usize,
        also: Vec<WriteOp>,
    ) -> StorageResult<Option<u64>>;

    /// How many records have a `passwordId` (`identity_id` `None`: is any record sealed with a
    /// master key?), or have this one (how many records an identity's key opens: a re-wrap's
    /// count). Counted in the backend's index, without reading a record.
    async fn linked_count(&self, identity_id: Option<&str>) -> StorageResult<u64>;

    /// Release the backend. Later calls fail with [`StorageError::Closed`].
    async fn close(&self);
}

/// What an expiry purge does to each expired record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Purge {
    /// Soft-delete the expired records that are not soft-deleted yet (`softDeletedAt` becomes
    /// the purge's time, `updatedAt` at least that; the deleted revision its stamp's).
    SoftDelete,
    /// Delete every expired record, soft-deleted or not, leaving tombstones, and the
    /// identities left without any record (as [`WriteOp::DeleteRecord`] does).
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
    async fn records_linked_to(
        &self,
        identity_id: &str,
        after_id: Option<&str>,
        limit: usize,
    ) -> StorageResult<Vec<Record>>;
    /// As [`Storage::linked_count`].
    async fn linked_count(&self, identity_id: Option<&str>) -> StorageResult<u64>;
    async fn versions(&self, keys: &[RowKey]) -> StorageResult<Vec<Option<Stored>>>;
    async fn records_by_tokens(&self, tokens: &[String]) -> StorageResult<Vec<Option<Record>>>;
    /// Apply `batch` in this transaction, atomically, checking its guards, as
    /// [`Storage::apply`] does.
    async fn commit(self: Box<Self>, stamp: Stamp, batch: Vec<WriteOp>) -> StorageResult<()>;
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
    async fn records_linked_to(
        &self,
        identity_id: &str,
        after_id: Option<&str>,
        limit: usize,
    ) -> StorageResult<Vec<Record>> {
        self.0.records_linked_to(identity_id, after_id, limit).await
    }
    async fn linked_count(&self, identity_id: Option<&str>) -> StorageResult<u64> {
        self.0.linked_count(identity_id).await
    }
    async fn versions(&self, keys: &[RowKey]) -> StorageResult<Vec<Option<Stored>>> {
        self.0.versions(keys).await
    }
    async fn records_by_tokens(&self, tokens: &[String]) -> StorageResult<Vec<Option<Record>>> {
        self.0.records_by_tokens(tokens).await
    }
    async fn commit(self: Box<Self>, stamp: Stamp, batch: Vec<WriteOp>) -> StorageResult<()> {
        self.0.apply(stamp, batch).await
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
/// backend, as two tabs share one IndexedDB database). `Box<dyn Storage>`, the store a vault
/// holds, does not implement it: a call through the box then goes to the backend's own method,
/// where the delegating one was a second future per call, and every one instantiated grew the
/// browser engine (0.6 kB gzip of it).
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
            async fn records_by_tokens_and_meta(
                &self,
                tokens: &[String],
                find: MetaFind<'_>,
            ) -> StorageResult<(Vec<Option<Record>>, Vec<MetaRow>)> {
                (**self).records_by_tokens_and_meta(tokens, find).await
            }
            async fn meta_count(&self, object_type: &str) -> StorageResult<u64> {
                (**self).meta_count(object_type).await
            }
            async fn meta_all(&self) -> StorageResult<Vec<MetaRow>> {
                (**self).meta_all().await
            }
            async fn records_linked_to(
                &self,
                identity_id: &str,
                after_id: Option<&str>,
                limit: usize,
            ) -> StorageResult<Vec<Record>> {
                (**self)
                    .records_linked_to(identity_id, after_id, limit)
                    .await
            }
            async fn changes_since(
                &self,
                after_seq: u64,
                limit: usize,
            ) -> StorageResult<Vec<Change>> {
                (**self).changes_since(after_seq, limit).await
            }
            async fn dirty_changes(&self, after: u64, limit: usize) -> StorageResult<Vec<Change>> {
                (**self).dirty_changes(after, limit).await
            }
            async fn versions(&self, keys: &[RowKey]) -> StorageResult<Vec<Option<Stored>>> {
                (**self).versions(keys).await
            }
            async fn linked_count(&self, identity_id: Option<&str>) -> StorageResult<u64> {
                (**self).linked_count(identity_id).await
            }
            async fn apply(&self, stamp: Stamp, batch: Vec<WriteOp>) -> StorageResult<()> {
                (**self).apply(stamp, batch).await
            }
            async fn transaction(&self) -> StorageResult<Box<dyn WriteTransaction + '_>> {
                (**self).transaction().await
            }
            async fn purge_expired(
                &self,
                stamp: Stamp,
                purge: Purge,
                limit: usize,
                also: Vec<WriteOp>,
            ) -> StorageResult<Option<u64>> {
                (**self).purge_expired(stamp, purge, limit, also).await
            }
            async fn close(&self) {
                (**self).close().await
            }
        }
    };
}

use std::sync::Arc;
delegate_storage!(Arc);

// A batch holds one `WriteOp` per record it writes (a million for a rotation of a million-record
// vault), so the enum stays as small as its common record change: the rows that would make
// every op twice that size are boxed.
const _: () = assert!(std::mem::size_of::<WriteOp>() <= 16 * std::mem::size_of::<usize>());
