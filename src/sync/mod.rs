//! Zero-knowledge sync (`shared/spec/SYNC.md`): the replicated model, its revisions and the
//! conflict rule, and the wire format that carries them ([`wire`], protocol 1, read with the
//! strict JSON reader [`json`]). This module is pure: no storage, no I/O, no key. The storage
//! schema and the engine build on it.
//!
//! # What sync is
//! A vault may live on several **replicas** (a browser profile's IndexedDB, a worker's D1
//! database, …). Each syncs with one **server replica**, an ordinary vault that never decrypts:
//! what travels is what a snapshot holds (envelopes, identity rows, settings, times) plus the
//! revisions below. Once every replica has synced twice with no write in between, all hold the
//! same rows, whatever order the changes arrived in, because every replica resolves every pair of
//! versions with the same function.
//!
//! # Revisions
//! Every change carries a [`Rev`] from the [`Hlc`] of the vault instance that made it: 48 bits of
//! wall time in milliseconds, a 16-bit counter, a 64-bit node id, written as 32 lowercase hex
//! digits, so the order of the strings is the order of the clock. A clock's revisions strictly
//! increase (a clock that goes back holds its last wall and counts), and a clock that has observed
//! a revision mints only greater ones, so a change is always ordered after the change it replaced.
//! The node id is random per vault instance (per open, not per database: two tabs share one
//! database), so no two changes ever carry one revision; drift correction, the one step that must
//! lower a clock ([`Hlc::restart`]), takes a new node id for the same reason. Node 0 is reserved for **synthesized**
//! revisions, `(createdAt, 0, 0)`, given to fields written before revisions existed;
//! [`Rev::ZERO`] marks defaults no replica chose (a fresh vault's settings).
//!
//! # The replicated rows
//! - A **record** is one row per id, its fields grouped into four independent registers, each with
//!   its own revision:
//!   - the sealed value: `value` (the envelope) and `passwordId` (the identity whose key sealed it;
//!     none for a master key) are **one** field, since an envelope opens only with its key. It has
//!     two revisions: `valueRev`, set when the value changes (create, update), and `sealRev`, set
//!     by every sealing (the same changes, and re-seals under another key: rekey, rotation,
//!     identity migration, which leave `valueRev` alone). It is ordered by the pair
//!     `(valueRev, sealRev)`, so a re-seal of a stale value never beats a real edit, and among
//!     re-seals of one value the latest wins;
//!   - `expiresAt` by `expiresRev` (create, renew);
//!   - `softDeletedAt` by `deletedRev` (soft delete, restore);
//!   - `updatedAt` is a max-register: a write sets it to the greater of its old value and its
//!     time, a merge keeps the greater of the two, so it converges (and no longer goes back when a
//!     clock does).
//!
//!   `token` and `createdAt` never change after the create.
//! - A **tombstone** replaces a hard-deleted record: its revision, `deletedAt` and a reason
//!   (`deleted`, or `displaced` for a record that lost its custom token, below). Record ids are
//!   random and never reused, so a tombstone is final.
//! - A **meta row** (a setting, an identity's rows, …) is a last-writer-wins register over a string
//!   value or "deleted", with one revision. Rows that must agree with each other (an identity's
//!   `tag` and wrapped `dek`) are always written together under one revision, so per-row LWW yields
//!   a consistent object; every future meta row with that need must be written the same way.
//!   Meta rows merge generically: a new kind of meta row needs no sync code.
//!
//! Local rows (vault state, the KDF setting, sync bookkeeping) are not replicated and carry no
//! revision.
//!
//! # The conflict rule
//! For two versions `a`, `b` of one record id ([`merge_record`]):
//! 1. If either is a tombstone, the result is a tombstone: the greater of the tombstones by
//!    `(rev, deletedAt, reason)`. A hard delete beats every live version, even one with a greater
//!    revision, so a stale replica never resurrects a deleted token.
//! 2. Otherwise the result is live and each register is taken, independently, from the version
//!    whose key for it is greater: the sealed value by `(valueRev, sealRev, value, passwordId)`,
//!    `expiresAt` by `(expiresRev, expiresAt)`, `softDeletedAt` by `(deletedRev, softDeletedAt)`
//!    (absent before present), and `updatedAt` is the greater of the two. A register carries its
//!    revisions with it.
//!
//! For two versions of one meta key ([`merge_meta`]): the one with the greater revision; at equal
//! revisions, "deleted" beats a value, then the greater `deletedAt` or value bytes.
//!
//! Every comparison ends on the bytes of what it compares, so each rule is the join of a total
//! order: commutative, associative and idempotent, even over forged inputs (equal revisions on
//! different bytes, which honest replicas never mint), and every replica computes the same result.
//! Immutables that differ between versions of one id (only a forgery; validation refuses them) go,
//! as one pair, to the smaller `(createdAt, token)`.
//!
//! **Custom tokens** ([`token_holder`]). Two records with different ids that claim one token (two
//! replicas created it offline) are not versions of one row, so the rule above cannot merge them:
//! the record with the smaller `(createdAt, id)` keeps the token, the other is stranded on the
//! replica that created it (see [`token_holder`] for why first creator, not greatest revision).

pub mod drift;
pub mod json;
pub mod merge;
pub mod plan;
pub mod rev;
pub mod wire;

pub use merge::{
    Change, LiveRecord, MetaVersion, RecordVersion, Row, RowKey, Side, TokenClaim, Tombstone,
    TombstoneReason, merge_identity_meta, merge_meta, merge_record, token_holder,
};
pub use rev::{ClockExhausted, Hlc, MAX_COUNTER, MAX_WALL_MS, Rev, RevParseError};
