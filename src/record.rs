//! The record model. A record's `value` is always a `vs1:` envelope, never plaintext.

use crate::crypto;
use crate::error::Result;

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
}

impl Record {
    /// API.md: a token is expired when `now > expiresAt`.
    pub fn is_expired(&self, now: i64) -> bool {
        self.expires_at.is_some_and(|at| now > at)
    }

    pub fn is_soft_deleted(&self) -> bool {
        self.soft_deleted_at.is_some()
    }
}

/// A new record id: 32 lowercase hex characters from the CSPRNG.
pub fn new_record_id() -> Result<String> {
    let mut bytes = [0u8; 16];
    crypto::random_bytes(&mut bytes)?;
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
