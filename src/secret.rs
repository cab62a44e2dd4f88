//! What callers unlock records with: a password or a raw 256-bit key (API.md "Secrets").

use crate::crypto::{KEY_LEN, RawKey};
use crate::error::{Result, VaultError};
use zeroize::Zeroizing;

/// A password (PBKDF2) or a raw 32-byte key (HKDF). Wiped from memory when dropped.
///
/// Both variants keep their bytes in one heap allocation that is wiped on drop: moving a
/// `Secret` (into a future, across an `.await`) moves a pointer, never the bytes, so no stale
/// copy of a key is left in a stack frame or a future's state after `lock()`.
pub enum Secret {
    Password(Zeroizing<String>),
    RawKey(RawKey),
}

impl Secret {
    pub fn password(password: &str) -> Self {
        Secret::Password(Zeroizing::new(password.to_owned()))
    }

    /// A raw key must be exactly 32 bytes; anything else is `INVALID_ARGUMENT`.
    pub fn raw_key(bytes: &[u8]) -> Result<Self> {
        if bytes.len() != KEY_LEN {
            return Err(VaultError::invalid(
                "a raw key must be a Uint8Array of exactly 32 bytes",
            ));
        }
        Ok(Self::raw_key_filled_by(|k| k.copy_from_slice(bytes)))
    }

    /// A raw key written in place by `fill` (the JavaScript binding copies a `Uint8Array`
    /// straight into the key's box).
    pub(crate) fn raw_key_filled_by(fill: impl FnOnce(&mut [u8; KEY_LEN])) -> Self {
        Secret::RawKey(RawKey::filled_by(fill))
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Secret::Password(_) => f.write_str("Secret::Password(<redacted>)"),
            Secret::RawKey(_) => f.write_str("Secret::RawKey(<redacted>)"),
        }
    }
}
