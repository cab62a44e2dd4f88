//! The record model. A record's `value` is always a `vs1:` envelope, never plaintext.

use crate::crypto;
use crate::error::Result;
use crate::sync::{LiveRecord, Rev};

/// One stored token. Times are milliseconds since the epoch. The serde form is the snapshot's
/// (FORMAT.md "Snapshot"): `deserialize_with` makes the `null`-able fields required, so a
/// snapshot that leaves one out is malformed rather than "never expires".
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(
    feature = "snapshot-import",
    derive(serde::Deserialize),
    serde(rename_all = "camelCase", deny_unknown_fields)
)]
pub struct Record {
    pub id: String,
    pub token: String,
    /// The `vs1:` envelope of the value.
    pub value: String,
    pub created_at: i64,
    pub updated_at: i64,
    #[cfg_attr(
        feature = "snapshot-import",
        serde(deserialize_with = "serde::Deserialize::deserialize")
    )]
    pub expires_at: Option<i64>,
    #[cfg_attr(
        feature = "snapshot-import",
        serde(deserialize_with = "serde::Deserialize::deserialize")
    )]
    pub soft_deleted_at: Option<i64>,
    /// The identity whose key sealed `value` (FORMAT.md "Password identities"); `None` for a
    /// master key. One field with `value` for sync: an envelope opens only with its key.
    #[cfg_attr(feature = "snapshot-import", serde(skip))]
    pub password_id: Option<String>,
    /// The revision of each independently merged field (`crate::sync`, "The replicated rows").
    /// [`crate::storage::WriteOp::InsertRecord`] stores them as given; every other write sets the
    /// revisions of the fields it changes to its batch's [`crate::storage::Stamp`].
    #[cfg_attr(feature = "snapshot-import", serde(skip))]
    pub revs: RecordRevs,
}

/// The revisions of a record's four registers (`crate::sync`, "The replicated rows").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RecordRevs {
    /// The value's last change (create, update).
    pub value: Rev,
    /// The value's last sealing: its changes, and re-seals under another key.
    pub seal: Rev,
    pub expires: Rev,
    pub deleted: Rev,
}

impl RecordRevs {
    /// Every register at one revision: a record created by one batch.
    pub fn all(rev: Rev) -> RecordRevs {
        RecordRevs {
            value: rev,
            seal: rev,
            expires: rev,
            deleted: rev,
        }
    }

    /// The revisions of a record written before revisions existed ([`Rev::synthesized`]).
    pub fn synthesized(created_at: i64) -> RecordRevs {
        RecordRevs::all(Rev::synthesized(created_at))
    }

    /// The greatest of the four: what a write that depends on this version observes first.
    pub fn max(&self) -> Rev {
        self.value
            .max(self.seal)
            .max(self.expires)
            .max(self.deleted)
    }
}

impl Record {
    /// API.md: a token is expired when `now > expiresAt`.
    pub fn is_expired(&self, now: i64) -> bool {
        self.expires_at.is_some_and(|at| now > at)
    }

    pub fn is_soft_deleted(&self) -> bool {
        self.soft_deleted_at.is_some()
    }

    /// This record as sync exchanges and merges it.
    pub fn to_live(&self) -> LiveRecord {
        LiveRecord {
            token: self.token.clone(),
            created_at: self.created_at,
            updated_at: self.updated_at,
            value: self.value.clone(),
            password_id: self.password_id.clone(),
            value_rev: self.revs.value,
            seal_rev: self.revs.seal,
            expires_at: self.expires_at,
            expires_rev: self.revs.expires,
            soft_deleted_at: self.soft_deleted_at,
            deleted_rev: self.revs.deleted,
        }
    }

    /// The record `id` holds as `live`.
    pub fn from_live(id: String, live: LiveRecord) -> Record {
        Record {
            id,
            token: live.token,
            value: live.value,
            created_at: live.created_at,
            updated_at: live.updated_at,
            expires_at: live.expires_at,
            soft_deleted_at: live.soft_deleted_at,
            password_id: live.password_id,
            revs: RecordRevs {
                value: live.value_rev,
                seal: live.seal_rev,
                expires: live.expires_rev,
                deleted: live.deleted_rev,
            },
        }
    }
}

/// A new record id: 32 lowercase hex characters from the CSPRNG.
pub fn new_record_id() -> Result<String> {
    let mut bytes = [0u8; 16];
    crypto::public_random(&mut bytes)?;
    Ok(base16ct::lower::encode_string(&bytes))
}

/// The largest time JavaScript's `Date` can hold, in ms (ECMA-262 21.4.1.1).
pub const MAX_TIME_MS: i64 = 8_640_000_000_000_000;

/// Check a time given by a caller: within the range of a JavaScript `Date`.
pub fn check_time(ms: i64, what: &str) -> Result<i64> {
    if (-MAX_TIME_MS..=MAX_TIME_MS).contains(&ms) {
        Ok(ms)
    } else {
        Err(crate::error::VaultError::invalid(format!(
            "{what} must be a time within the range of a JavaScript Date"
        )))
    }
}
