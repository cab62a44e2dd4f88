//! Zero-knowledge sync (`shared/spec/SYNC.md`): the replicated model, its revisions and the
//! conflict rule (the latter two to come). This module is pure: no storage, no I/O, no key. The storage schema, the engine
//! and the wire format build on it.
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
//! revisions, `(updatedAt, 0, 0)`, given to fields written before revisions existed;
//! [`Rev::ZERO`] marks defaults no replica chose (a fresh vault's settings).

pub mod rev;

pub use rev::{ClockExhausted, Hlc, MAX_COUNTER, MAX_WALL_MS, Rev, RevParseError};
