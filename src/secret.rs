//! What callers unlock records with: a password or a raw 256-bit key (API.md "Secrets").

use crate::error::{Result, VaultError};
use zeroize::Zeroizing;

/// A password (PBKDF2) or a raw 32-byte key (HKDF). Wiped from memory when dropped.
pub enum Secret {
    Password(Zeroizing<String>),
    RawKey(Zeroizing<[u8; 32]>),
}

impl Secret {
    pub fn password(password: &str) -> Self {
        Secret::Password(Zeroizing::new(password.to_owned()))
    }

    /// A raw key must be exactly 32 bytes; anything else is `INVALID_ARGUMENT`.
    pub fn raw_key(bytes: &[u8]) -> Result<Self> {
        let key: [u8; 32] = bytes.try_into().map_err(|_| {
            VaultError::invalid("a raw key must be a Uint8Array of exactly 32 bytes")
        })?;
        Ok(Secret::RawKey(Zeroizing::new(key)))
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
