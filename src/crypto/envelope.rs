//! The `vs1:` record value envelope (FORMAT.md "Record value envelope").
//!
//! ```text
//! value = "vs1:" || b64u( kcv[4] || rsalt[16] || nonce[12] || ciphertext || tag[16] )
//! ```

use super::aead::{self, NONCE_LEN, TAG_LEN};
use super::{DataKey, b64u_decode, b64u_encode, hkdf_sha256, label, public_random};
use crate::error::{Result, VaultError};
use subtle::ConstantTimeEq;

const PREFIX: &str = "vs1:";
const KCV_LEN: usize = 4;
const RSALT_LEN: usize = 16;
const HEADER_LEN: usize = KCV_LEN + RSALT_LEN + NONCE_LEN;

/// A parsed, well-formed envelope. Parsing checks shape only, never keys.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Envelope {
    kcv: [u8; KCV_LEN],
    rsalt: [u8; RSALT_LEN],
    nonce: [u8; NONCE_LEN],
    sealed: Vec<u8>,
}

impl Envelope {
    /// Parse `vs1:` text. Anything else is `DECRYPTION_FAILED` (the stored value is damaged).
    pub fn parse(text: &str) -> Result<Self> {
        let malformed = || VaultError::DecryptionFailed { tokens: vec![] };
        let body = text.strip_prefix(PREFIX).ok_or_else(malformed)?;
        let bytes = b64u_decode(body).ok_or_else(malformed)?;
        if bytes.len() < HEADER_LEN + TAG_LEN {
            return Err(malformed());
        }
        let (header, sealed) = bytes.split_at(HEADER_LEN);
        let mut env = Envelope {
            kcv: [0; KCV_LEN],
            rsalt: [0; RSALT_LEN],
            nonce: [0; NONCE_LEN],
            sealed: sealed.to_vec(),
        };
        env.kcv.copy_from_slice(&header[..KCV_LEN]);
        env.rsalt
            .copy_from_slice(&header[KCV_LEN..KCV_LEN + RSALT_LEN]);
        env.nonce.copy_from_slice(&header[KCV_LEN + RSALT_LEN..]);
        Ok(env)
    }

    /// True when `text` is a well-formed `vs1:` envelope (snapshot validation).
    pub fn is_well_formed(text: &str) -> bool {
        Self::parse(text).is_ok()
    }

    /// Whether this envelope was made with `key`, by its key check value, in constant time.
    /// This is how a rekey finds the records of a password without trial decryption.
    pub fn was_sealed_with(&self, key: &DataKey) -> bool {
        kcv(key, &self.rsalt).ct_eq(&self.kcv).into()
    }

    /// Decrypt. `INVALID_PASSWORD` when the kcv differs, `DECRYPTION_FAILED` when GCM rejects it.
    pub fn open(&self, key: &DataKey, token: &str) -> Result<String> {
        if !self.was_sealed_with(key) {
            return Err(VaultError::InvalidPassword { tokens: vec![] });
        }
        self.open_matched(key, token)
    }

    /// Decrypt with a key whose kcv this envelope was just found to hold ([`Self::was_sealed_with`],
    /// as a batch read picks each record's key): the check is not made twice. Only the kcv
    /// check is skipped; GCM still authenticates, so any other key is `DECRYPTION_FAILED`.
    pub(crate) fn open_matched(&self, key: &DataKey, token: &str) -> Result<String> {
        let rk = hkdf_sha256(key.as_bytes(), &self.rsalt, label::RECORD);
        let aad = record_aad(token);
        let plaintext = aead::open(&rk, &self.nonce, &self.sealed, aad.as_bytes())
            .ok_or(VaultError::DecryptionFailed { tokens: vec![] })?;
        // The plaintext was UTF-8 when sealed and GCM authenticated it, so this only fails for
        // a forged envelope that also forged the tag, which GCM already rejects.
        String::from_utf8(plaintext.to_vec())
            .map_err(|_| VaultError::DecryptionFailed { tokens: vec![] })
    }
}

fn kcv(key: &DataKey, rsalt: &[u8; RSALT_LEN]) -> [u8; KCV_LEN] {
    let mac = key.kcv_mac().mac(&[label::KCV, rsalt]);
    let mut out = [0u8; KCV_LEN];
    out.copy_from_slice(&mac[..KCV_LEN]);
    out
}

fn record_aad(token: &str) -> String {
    format!("{}{token}", label::RECORD_AAD)
}

/// Seal `plaintext` for the record `token` under `key`, with a fresh rsalt and nonce.
pub fn seal_value(key: &DataKey, token: &str, plaintext: &str) -> Result<String> {
    let mut rsalt = [0u8; RSALT_LEN];
    let mut nonce = [0u8; NONCE_LEN];
    public_random(&mut rsalt)?;
    public_random(&mut nonce)?;
    Ok(seal_value_with(key, token, plaintext, rsalt, nonce))
}

/// Seal with caller-chosen rsalt and nonce. Only the frozen test vectors may call this:
/// reusing a nonce under one key breaks GCM.
pub(crate) fn seal_value_with(
    key: &DataKey,
    token: &str,
    plaintext: &str,
    rsalt: [u8; RSALT_LEN],
    nonce: [u8; NONCE_LEN],
) -> String {
    let rk = hkdf_sha256(key.as_bytes(), &rsalt, label::RECORD);
    let sealed = aead::seal(
        &rk,
        &nonce,
        plaintext.as_bytes(),
        record_aad(token).as_bytes(),
    );
    let mut bytes = Vec::with_capacity(HEADER_LEN + sealed.len());
    bytes.extend_from_slice(&kcv(key, &rsalt));
    bytes.extend_from_slice(&rsalt);
    bytes.extend_from_slice(&nonce);
    bytes.extend_from_slice(&sealed);
    format!("{PREFIX}{}", b64u_encode(&bytes))
}

/// Parse and open in one step.
pub fn open_value(key: &DataKey, token: &str, text: &str) -> Result<String> {
    Envelope::parse(text)?.open(key, token)
}
