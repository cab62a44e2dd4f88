//! Password identities (FORMAT.md "Password identities"): the tag that finds an identity from a
//! secret, and the wrapping of its data key (DEK) under a key-encryption key (KEK).

use super::aead::{self, NONCE_LEN, TAG_LEN};
use super::{
    DataKey, KdfParams, MasterKey, b64u_decode, b64u_encode, hkdf_sha256, hmac_sha256, label,
    random_bytes,
};
use crate::error::{Result, VaultError};
use zeroize::Zeroizing;

/// Identity ids are `"p_"` + 32 lowercase hex characters.
pub const IDENTITY_ID_PREFIX: &str = "p_";
const DEK_PREFIX: &str = "vs1k:";

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
    let sealed = aead::seal(
        &kek(mk, params),
        &nonce,
        dek.as_bytes(),
        dek_aad(identity_id).as_bytes(),
    );
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
        .filter(|b| b.len() == NONCE_LEN + 32 + TAG_LEN)
        .ok_or_else(damaged)?;
    let (nonce, sealed) = bytes.split_at(NONCE_LEN);
    let nonce: [u8; NONCE_LEN] = nonce.try_into().map_err(|_| damaged())?;
    // The identity was found by this secret's tag, so a GCM failure means the row is damaged,
    // not that the secret is wrong.
    let dek = aead::open(
        &kek(mk, params),
        &nonce,
        sealed,
        dek_aad(identity_id).as_bytes(),
    )
    .ok_or_else(damaged)?;
    if dek.len() != 32 {
        return Err(damaged());
    }
    Ok(DataKey::filled_by(|k| k.copy_from_slice(&dek)))
}

/// Lowercase hex, as FORMAT.md requires for ids and tags (constant-time encoder).
pub(crate) fn hex(bytes: &[u8]) -> String {
    base16ct::lower::encode_string(bytes)
}
