//! Master-key derivation (FORMAT.md "Master key") and the vault's `kdf` settings row.

use super::{MasterKey, hkdf_into, label};
use crate::error::{Result, VaultError};
use serde::{Deserialize, Serialize};

/// Fewest PBKDF2 iterations a vault may use. Below this a password is too cheap to guess.
pub const MIN_ITERATIONS: u32 = 1_000;
/// Most PBKDF2 iterations a vault may use: bounds the work a hostile snapshot can demand.
pub const MAX_ITERATIONS: u32 = 10_000_000;
/// OWASP's 2023 recommendation for PBKDF2-HMAC-SHA256.
pub const DEFAULT_ITERATIONS: u32 = 600_000;
/// Length of the vault salt.
pub const SALT_LEN: usize = 16;

const ALG: &str = "pbkdf2-sha256";

/// The KDF parameters of one vault, fixed when it is created.
#[derive(Clone, PartialEq, Eq)]
pub struct KdfParams {
    pub iterations: u32,
    pub salt: [u8; SALT_LEN],
}

impl std::fmt::Debug for KdfParams {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KdfParams")
            .field("iterations", &self.iterations)
            .finish_non_exhaustive()
    }
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct KdfRow {
    alg: String,
    iterations: u64,
    salt: String,
}

impl KdfParams {
    /// Parameters for a new vault: a fresh random salt and the given iteration count.
    pub fn generate(iterations: u32) -> Result<Self> {
        check_iterations(u64::from(iterations))?;
        let mut salt = [0u8; SALT_LEN];
        super::random_bytes(&mut salt)?;
        Ok(Self { iterations, salt })
    }

    /// The `kdf` settings value: `{"alg":"pbkdf2-sha256","iterations":N,"salt":"<b64u>"}`.
    pub fn to_json(&self) -> String {
        let row = KdfRow {
            alg: ALG.to_owned(),
            iterations: u64::from(self.iterations),
            salt: super::b64u_encode(&self.salt),
        };
        // Serializing a struct of strings and integers cannot fail.
        serde_json::to_string(&row).unwrap_or_else(|_| unreachable!())
    }

    /// Parse and check a `kdf` settings value (from storage or a snapshot).
    pub fn from_json(text: &str) -> Result<Self> {
        let row: KdfRow = serde_json::from_str(text).map_err(|e| {
            VaultError::invalid(format!(
                "the vault's kdf setting is not JSON of the expected shape: {}",
                crate::snapshot::describe_json_error(&e)
            ))
        })?;
        if row.alg != ALG {
            return Err(VaultError::invalid(format!(
                "the vault's kdf algorithm {:?} is not supported (expected {ALG:?})",
                row.alg
            )));
        }
        let iterations = check_iterations(row.iterations)?;
        let salt: [u8; SALT_LEN] = super::b64u_decode(&row.salt)
            .and_then(|s| s.try_into().ok())
            .ok_or_else(|| {
                VaultError::invalid(
                    "the vault's kdf salt must be 16 bytes of base64url without padding",
                )
            })?;
        Ok(Self { iterations, salt })
    }
}

/// Iteration counts outside `MIN_ITERATIONS..=MAX_ITERATIONS` are `INVALID_ARGUMENT`.
pub fn check_iterations(n: u64) -> Result<u32> {
    if (u64::from(MIN_ITERATIONS)..=u64::from(MAX_ITERATIONS)).contains(&n) {
        Ok(n as u32)
    } else {
        Err(VaultError::invalid(format!(
            "kdfIterations must be an integer from {MIN_ITERATIONS} to {MAX_ITERATIONS}"
        )))
    }
}

/// `MK = PBKDF2-HMAC-SHA256(UTF-8(P), salt, N, 32)`; no Unicode normalisation.
pub fn derive_password_key(password: &str, params: &KdfParams) -> MasterKey {
    MasterKey::filled_by(|out| {
        pbkdf2::pbkdf2_hmac::<sha2::Sha256>(
            password.as_bytes(),
            &params.salt,
            params.iterations,
            out,
        )
    })
}

/// `MK = HKDF-SHA256(ikm = R, salt = vault salt, info = "vaultstore/v1/raw")`.
pub fn derive_raw_key(raw: &[u8; 32], params: &KdfParams) -> MasterKey {
    MasterKey::filled_by(|out| hkdf_into(raw, &params.salt, label::RAW, out))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kdf_row_round_trips_and_is_the_documented_shape() {
        let p = KdfParams {
            iterations: 1000,
            salt: [1; 16],
        };
        let json = p.to_json();
        assert_eq!(
            json,
            r#"{"alg":"pbkdf2-sha256","iterations":1000,"salt":"AQEBAQEBAQEBAQEBAQEBAQ"}"#
        );
        assert_eq!(KdfParams::from_json(&json).unwrap(), p);
    }

    #[test]
    fn kdf_rows_out_of_bounds_or_malformed_are_rejected() {
        for bad in [
            r#"{"alg":"pbkdf2-sha256","iterations":999,"salt":"AQEBAQEBAQEBAQEBAQEBAQ"}"#,
            r#"{"alg":"pbkdf2-sha256","iterations":10000001,"salt":"AQEBAQEBAQEBAQEBAQEBAQ"}"#,
            r#"{"alg":"pbkdf2-sha256","iterations":-5,"salt":"AQEBAQEBAQEBAQEBAQEBAQ"}"#,
            r#"{"alg":"argon2","iterations":1000,"salt":"AQEBAQEBAQEBAQEBAQEBAQ"}"#,
            r#"{"alg":"pbkdf2-sha256","iterations":1000,"salt":"AQEB"}"#,
            r#"{"alg":"pbkdf2-sha256","iterations":1000}"#,
            "not json",
        ] {
            let e = KdfParams::from_json(bad).unwrap_err();
            assert_eq!(e.code().as_str(), "INVALID_ARGUMENT", "{bad}");
        }
        assert!(KdfParams::generate(999).is_err());
        assert!(KdfParams::generate(10_000_001).is_err());
        let a = KdfParams::generate(1000).unwrap();
        let b = KdfParams::generate(1000).unwrap();
        assert_ne!(a.salt, b.salt, "salts come from the CSPRNG");
    }
}
