//! AES-256-GCM with a 12-byte nonce and associated data: the one sealing primitive under both the
//! record envelope and the wrapped data key (FORMAT.md "Record value envelope", "Password
//! identities"). Callers frame the bytes; this module owns the cipher, so there is one place
//! where a tag is checked and where a plaintext buffer is wiped.

use aes_gcm::Nonce;
use aes_gcm::aead::{Aead, KeyInit, Payload};
use zeroize::Zeroizing;

pub(crate) const NONCE_LEN: usize = 12;
pub(crate) const TAG_LEN: usize = 16;

fn cipher(key: &[u8; 32]) -> aes_gcm::Aes256Gcm {
    aes_gcm::Aes256Gcm::new(key.into())
}

/// `ciphertext || tag` of `msg` under `key` and `nonce`, authenticating `aad`.
pub(crate) fn seal(key: &[u8; 32], nonce: &[u8; NONCE_LEN], msg: &[u8], aad: &[u8]) -> Vec<u8> {
    // GCM fails only above 2^36 bytes; values are bounded far below that in memory.
    cipher(key)
        .encrypt(&Nonce::from(*nonce), Payload { msg, aad })
        .unwrap_or_else(|_| unreachable!())
}

/// The plaintext of `sealed` (`ciphertext || tag`), wiped on drop; `None` when the tag does not
/// verify (a wrong key, or bytes that were damaged or tampered with). The tag comparison is
/// aes-gcm's, in constant time.
pub(crate) fn open(
    key: &[u8; 32],
    nonce: &[u8; NONCE_LEN],
    sealed: &[u8],
    aad: &[u8],
) -> Option<Zeroizing<Vec<u8>>> {
    cipher(key)
        .decrypt(&Nonce::from(*nonce), Payload { msg: sealed, aad })
        .ok()
        .map(Zeroizing::new)
}
