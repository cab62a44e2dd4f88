//! Password identities (FORMAT.md "Password identities"): the tag that finds an identity from a
//! secret, and the wrapping of its data key (DEK) under a key-encryption key (KEK).

use super::{
    DataKey, KdfParams, MasterKey, b64u_decode, b64u_encode, hkdf_sha256, hmac_sha256, label,
    random_bytes,
};
use crate::error::{Result, VaultError};
use aes_gcm::Nonce;
use aes_gcm::aead::{Aead, Payload};
use zeroize::Zeroizing;

/// Identity ids are `"p_"` + 32 lowercase hex characters.
pub const IDENTITY_ID_PREFIX: &str = "p_";
const DEK_PREFIX: &str = "vs1k:";
const NONCE_LEN: usize = 12;

/// `hex(HMAC-SHA256(MK, "vaultstore/v1/identity"))`: one HMAC finds a secret's identity.
pub fn identity_tag(mk: &MasterKey) -> String {
    hex(&hmac_sha256(mk.as_bytes(), &[label::IDENTITY]))
}

/// A fresh identity id from the CSPRNG.
pub fn new_identity_id() -> Result<String> {
    let mut bytes = [0u8; 16];
    random_bytes(&mut bytes)?;
    Ok(format!("{IDENTITY_ID_PREFIX}{}", hex(&bytes)))
}

fn kek(mk: &MasterKey, params: &KdfParams) -> Zeroizing<[u8; 32]> {
    hkdf_sha256(mk.as_bytes(), &params.salt, label::KEK)
}

fn dek_aad(identity_id: &str) -> String {
    format!("{}{identity_id}", label::DEK_AAD)
}

/// `"vs1k:" || b64u(nonce || AES-256-GCM(KEK, nonce, DEK, aad = "vaultstore/v1/dek:" + ID))`.
pub fn wrap_dek(
    mk: &MasterKey,
    params: &KdfParams,
    identity_id: &str,
    dek: &DataKey,
) -> Result<String> {
    let mut nonce = [0u8; NONCE_LEN];
    random_bytes(&mut nonce)?;
    Ok(wrap_dek_with(mk, params, identity_id, dek, nonce))
}

/// Wrap with a caller-chosen nonce: frozen test vectors only.
pub(crate) fn wrap_dek_with(
    mk: &MasterKey,
    params: &KdfParams,
    identity_id: &str,
    dek: &DataKey,
    nonce: [u8; NONCE_LEN],
) -> String {
    let kek = kek(mk, params);
    let aad = dek_aad(identity_id);
    let sealed = super::gcm(&kek)
        .encrypt(
            &Nonce::from(nonce),
            Payload {
                msg: dek.as_bytes(),
                aad: aad.as_bytes(),
            },
        )
        .unwrap_or_else(|_| unreachable!());
    let mut bytes = nonce.to_vec();
    bytes.extend_from_slice(&sealed);
    format!("{DEK_PREFIX}{}", b64u_encode(&bytes))
}

/// Unwrap an identity's DEK. A wrong secret is `INVALID_PASSWORD`; a damaged row is
/// `DECRYPTION_FAILED`.
pub fn unwrap_dek(
    mk: &MasterKey,
    params: &KdfParams,
    identity_id: &str,
    wrapped: &str,
) -> Result<DataKey> {
    let damaged = || VaultError::DecryptionFailed { tokens: vec![] };
    let bytes = wrapped
        .strip_prefix(DEK_PREFIX)
        .and_then(b64u_decode)
        .filter(|b| b.len() == NONCE_LEN + 32 + 16)
        .ok_or_else(damaged)?;
    let (nonce, sealed) = bytes.split_at(NONCE_LEN);
    let nonce: [u8; NONCE_LEN] = nonce.try_into().map_err(|_| damaged())?;
    let kek = kek(mk, params);
    let aad = dek_aad(identity_id);
    let dek = Zeroizing::new(
        super::gcm(&kek)
            .decrypt(
                &Nonce::from(nonce),
                Payload {
                    msg: sealed,
                    aad: aad.as_bytes(),
                },
            )
            // The identity was found by this secret's tag, so a GCM failure means the row is
            // damaged, not that the secret is wrong.
            .map_err(|_| damaged())?,
    );
    if dek.len() != 32 {
        return Err(damaged());
    }
    Ok(DataKey::filled_by(|k| k.copy_from_slice(&dek)))
}

/// Lowercase hex, as FORMAT.md requires for ids and tags (constant-time encoder).
pub(crate) fn hex(bytes: &[u8]) -> String {
    base16ct::lower::encode_string(bytes)
}
