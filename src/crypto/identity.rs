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
/// Bytes of a wrapped DEK after its prefix: nonce, DEK, GCM tag.
const WRAPPED_DEK_LEN: usize = NONCE_LEN + 32 + TAG_LEN;

/// Whether `s` is exactly `len` lowercase hex characters (FORMAT.md: ids and tags are lowercase).
pub(crate) fn is_lower_hex(s: &str, len: usize) -> bool {
    s.len() == len && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// Whether `s` has the shape of an identity id: `"p_"` + 32 lowercase hex characters.
pub(crate) fn is_identity_id(s: &str) -> bool {
    s.strip_prefix(IDENTITY_ID_PREFIX)
        .is_some_and(|hex| is_lower_hex(hex, 32))
}

/// Whether `s` has the shape [`unwrap_dek`] opens: `"vs1k:"` and the base64url of nonce (12),
/// DEK (32) and tag (16) bytes. Checked where rows arrive from outside (snapshots, sync).
pub(crate) fn is_wrapped_dek(s: &str) -> bool {
    s.strip_prefix(DEK_PREFIX)
        .and_then(b64u_decode)
        .is_some_and(|b| b.len() == WRAPPED_DEK_LEN)
}

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

/// What starts the `tag` of a vacant first slot: 128 zero bits, which an HMAC output has with
/// probability 2^-128, so no secret's tag ever reads as vacant.
const VACANT_TAG_PREFIX: &str = "00000000000000000000000000000000";

/// The `tag` and `dek` of a vacant first slot (FORMAT.md "Secret slots"): what an identity's
/// own rows hold once their secret is removed while added secrets still open it, so that no
/// secret ever moves from one object to another. The tag is unique (random after the prefix)
/// and finds no secret; the wrapped key is random bytes, as a wrap under a key thrown away
/// would be, so nothing opens it. Both keep the shape of their rows, which a sync server of an
/// earlier release checks.
pub fn vacant_slot() -> Result<(String, String)> {
    let mut bytes = [0u8; 16 + WRAPPED_DEK_LEN];
    random_bytes(&mut bytes)?;
    let (tag, dek) = bytes.split_at(16);
    Ok((
        format!("{VACANT_TAG_PREFIX}{}", hex(tag)),
        format!("{DEK_PREFIX}{}", b64u_encode(dek)),
    ))
}

/// Whether an identity `tag` is a vacant first slot's ([`vacant_slot`]).
pub fn is_vacant(tag: &str) -> bool {
    tag.starts_with(VACANT_TAG_PREFIX)
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
    super::public_random(&mut nonce)?;
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
        .filter(|b| b.len() == WRAPPED_DEK_LEN)
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
