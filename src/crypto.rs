//! Key hierarchy and value envelopes: pure and synchronous, no storage, no JavaScript. Every
//! random byte comes from the platform CSPRNG through [`getrandom`]; every key type zeroizes
//! itself on drop and prints as `<redacted>`. The format, normative (`src/FORMAT.md`):
//!
#![doc = include_str!("FORMAT.md")]

mod aead;
mod b64u;
mod envelope;
mod identity;
mod kdf;
mod keys;

pub use envelope::{Envelope, open_value, seal_value};
pub use identity::{
    IDENTITY_ID_PREFIX, identity_tag, is_vacant, new_identity_id, unwrap_dek, vacant_slot, wrap_dek,
};
pub(crate) use identity::{is_identity_id, is_lower_hex, is_wrapped_dek};
pub use kdf::{
    DEFAULT_ITERATIONS, KdfParams, MAX_ITERATIONS, MIN_ITERATIONS, SALT_LEN, check_iterations,
    derive_password_key, derive_raw_key,
};
pub use keys::{DataKey, KEY_LEN, MasterKey, RawKey};

#[cfg(test)]
mod kat;

use crate::error::{Result, VaultError};

/// Fill `buf` from the platform CSPRNG (`crypto.getRandomValues` on wasm). Keys come from here.
pub(crate) fn random_bytes(buf: &mut [u8]) -> Result<()> {
    getrandom::fill(buf)
        .map_err(|e| VaultError::storage(format!("the platform random generator failed: {e}")))
}

/// Bytes of the platform CSPRNG drawn ahead, for values that are stored in the open.
const POOL_LEN: usize = 4096;

struct Pool {
    bytes: zeroize::Zeroizing<[u8; POOL_LEN]>,
    /// Bytes before this were handed out (and wiped); the pool starts used up.
    used: usize,
}

thread_local! {
    static POOL: std::cell::RefCell<Pool> = std::cell::RefCell::new(Pool {
        bytes: zeroize::Zeroizing::new([0; POOL_LEN]),
        used: POOL_LEN,
    });
}

/// Fill `buf` with CSPRNG bytes for a value that is stored or sent in the open: an envelope's
/// nonce and salt, a record id, a token. They are drawn from the platform generator 4 KiB at a
/// time, and each byte is handed out once and wiped from the pool. A call into the platform
/// generator from wasm costs a few microseconds (in Node, `crypto.getRandomValues` through the
/// bindings), and creating a record took four: a third of `tokensCreate`'s time in Node.
/// Secrets (keys) never come from the pool ([`random_bytes`]): nothing of them waits in memory.
pub(crate) fn public_random(buf: &mut [u8]) -> Result<()> {
    if buf.len() > POOL_LEN / 4 {
        return random_bytes(buf);
    }
    POOL.with(|pool| {
        let mut pool = pool.borrow_mut();
        if pool.used + buf.len() > POOL_LEN {
            random_bytes(&mut pool.bytes[..])?;
            pool.used = 0;
        }
        let range = pool.used..pool.used + buf.len();
        buf.copy_from_slice(&pool.bytes[range.clone()]);
        zeroize::Zeroize::zeroize(&mut pool.bytes[range]);
        pool.used += buf.len();
        Ok(())
    })
}

/// Labels of FORMAT.md. ASCII, versioned, never reused for another purpose.
pub(crate) mod label {
    pub const RAW: &[u8] = b"vaultstore/v1/raw";
    pub const KCV: &[u8] = b"vaultstore/v1/kcv";
    pub const RECORD: &[u8] = b"vaultstore/v1/record";
    pub const RECORD_AAD: &str = "vaultstore/v1/record:";
    pub const IDENTITY: &[u8] = b"vaultstore/v1/identity";
    pub const KEK: &[u8] = b"vaultstore/v1/kek";
    pub const DEK_AAD: &str = "vaultstore/v1/dek:";
}

type HmacSha256 = hmac::Hmac<sha2::Sha256>;

/// HMAC-SHA256 over the concatenation of `parts`.
pub(crate) fn hmac_sha256(key: &[u8], parts: &[&[u8]]) -> [u8; 32] {
    KeyedMac::new(key).mac(parts)
}

/// HMAC-SHA256 keyed once. Keying hashes the key's two padded blocks; a MAC after that hashes
/// only its message and the outer block, two SHA-256 blocks of a short message instead of
/// four. For keys that MAC many messages: the key cache's lookup id, a data key's kcv.
/// Boxed like the key types (moving it moves a pointer); the state zeroizes on drop (hmac's
/// `zeroize` feature), as it is as secret as the key.
#[derive(Clone)]
pub(crate) struct KeyedMac(Box<HmacSha256>);

impl KeyedMac {
    pub(crate) fn new(key: &[u8]) -> Self {
        use hmac::KeyInit;
        // HMAC accepts keys of any length, so this cannot fail.
        KeyedMac(Box::new(
            <HmacSha256 as KeyInit>::new_from_slice(key).unwrap_or_else(|_| unreachable!()),
        ))
    }

    /// The MAC of the concatenation of `parts`.
    pub(crate) fn mac(&self, parts: &[&[u8]]) -> [u8; 32] {
        use hmac::Mac;
        // On the stack, not a new box: the operation's end wipes the stack (`scrub_stack`).
        let mut mac = HmacSha256::clone(&self.0);
        for part in parts {
            mac.update(part);
        }
        mac.finalize().into_bytes().into()
    }
}

/// HKDF-SHA256 with a 32-byte output.
pub(crate) fn hkdf_sha256(ikm: &[u8], salt: &[u8], info: &[u8]) -> zeroize::Zeroizing<[u8; 32]> {
    let mut okm = zeroize::Zeroizing::new([0u8; 32]);
    hkdf_into(ikm, salt, info, &mut okm);
    okm
}

/// HKDF-SHA256 writing its 32 bytes into `okm`.
pub(crate) fn hkdf_into(ikm: &[u8], salt: &[u8], info: &[u8], okm: &mut [u8; 32]) {
    // 32 bytes is far below HKDF's 255 * 32 limit, so expand cannot fail.
    hkdf::Hkdf::<sha2::Sha256>::new(Some(salt), ikm)
        .expand(info, okm)
        .unwrap_or_else(|_| unreachable!());
}

pub(crate) use b64u::{decode as b64u_decode, encode as b64u_encode};

#[cfg(test)]
mod pool_tests {
    use super::{POOL_LEN, public_random};
    use std::collections::HashSet;

    /// Nonces and salts from the pool are never handed out twice, across refills, and a draw too
    /// large for the pool still gets fresh bytes.
    #[test]
    fn pooled_bytes_are_handed_out_once() {
        let mut seen = HashSet::new();
        // 12-byte draws do not divide the pool: some straddle a refill.
        for _ in 0..(POOL_LEN / 12) * 5 {
            let mut nonce = [0u8; 12];
            public_random(&mut nonce).unwrap();
            assert!(seen.insert(nonce), "a nonce came out twice");
        }
        let (mut a, mut b) = ([0u8; POOL_LEN], [0u8; POOL_LEN]);
        public_random(&mut a).unwrap();
        public_random(&mut b).unwrap();
        assert_ne!(a, b);
        assert_ne!(a, [0u8; POOL_LEN]);
    }
}
