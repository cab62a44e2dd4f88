//! Master-key derivation (FORMAT.md "Master key") and the vault's `kdf` settings row.

use super::{MasterKey, hkdf_into, label};
use crate::error::{Result, VaultError};
use crate::json::{Flat, parse_flat_object};

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
        format!(
            r#"{{"alg":"{ALG}","iterations":{},"salt":"{}"}}"#,
            self.iterations,
            super::b64u_encode(&self.salt)
        )
    }

    /// Parse and check a `kdf` settings value (from storage or a snapshot): exactly the three
    /// fields, in any order; anything else is `INVALID_ARGUMENT`.
    pub fn from_json(text: &str) -> Result<Self> {
        let shape = |why: &str| {
            VaultError::invalid(format!(
                "the vault's kdf setting is not the expected JSON object ({why})"
            ))
        };
        let fields = parse_flat_object(text).map_err(|e| shape(e.0))?;
        let field = |name: &str| fields.iter().find(|(k, _)| *k == name).map(|(_, v)| v);
        if fields.len() != 3 {
            return Err(shape("it must hold exactly alg, iterations and salt"));
        }
        let (Some(Flat::Str(alg)), Some(Flat::Uint(iterations)), Some(Flat::Str(salt))) =
            (field("alg"), field("iterations"), field("salt"))
        else {
            return Err(shape("alg and salt must be strings, iterations an integer"));
        };
        if *alg != ALG {
            return Err(VaultError::invalid(format!(
                "the vault's kdf algorithm is not supported (expected \"{ALG}\")"
            )));
        }
        let iterations = check_iterations(*iterations)?;
        let salt: [u8; SALT_LEN] = super::b64u_decode(salt)
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
        pbkdf2_sha256(password.as_bytes(), &params.salt, params.iterations, out)
    })
}

/// SHA-256's initial state (FIPS 180-4, 5.3.3).
const SHA256_IV: [u32; 8] = [
    0x6a09_e667,
    0xbb67_ae85,
    0x3c6e_f372,
    0xa54f_f53a,
    0x510e_527f,
    0x9b05_688c,
    0x1f83_d9ab,
    0x5be0_cd19,
];

/// PBKDF2-HMAC-SHA256 with a 32-byte output: RFC 8018 section 5.2 with dkLen = hLen, so one
/// block. This is the `pbkdf2` crate's result (tests pin it to that crate and to RFC 7914's
/// vectors), but its loop runs on SHA-256's compression function, because where WebCrypto
/// refuses (deployed Workers above 100,000 iterations) this fallback derives every key and must
/// stay within 2x of WebCrypto: the HMAC key's inner and outer states are computed once, and
/// each iteration compresses two fixed-layout padded blocks, with no buffering, finalisation or
/// allocation. Measured in Node (wasm, SIMD, opt-level 3, 600,000 iterations): the generic
/// `pbkdf2_hmac` took 482 ms, 4.9x WebCrypto.
fn pbkdf2_sha256(password: &[u8], salt: &[u8], iterations: u32, out: &mut [u8; 32]) {
    use hmac::{KeyInit, Mac};
    use sha2::block_api::compress256;
    use zeroize::{Zeroize, Zeroizing};

    // The HMAC key block: the password, or its digest when longer than a block (RFC 2104).
    let mut key = Zeroizing::new([0u8; 64]);
    if password.len() > 64 {
        key[..32].copy_from_slice(&<sha2::Sha256 as sha2::Digest>::digest(password));
    } else {
        key[..password.len()].copy_from_slice(password);
    }
    let pad = |byte: u8| {
        let mut block = Zeroizing::new([0u8; 64]);
        for (b, k) in block.iter_mut().zip(key.iter()) {
            *b = k ^ byte;
        }
        let mut state = Zeroizing::new(SHA256_IV);
        compress256(&mut state, std::slice::from_ref(&*block));
        state
    };
    let (inner, outer) = (pad(0x36), pad(0x5c));

    // U1 = HMAC(P, S || INT(1)), through the hmac crate: the salt has any length.
    let mut mac = <hmac::Hmac<sha2::Sha256> as KeyInit>::new_from_slice(password)
        .unwrap_or_else(|_| unreachable!("HMAC takes keys of any length"));
    mac.update(salt);
    mac.update(&1u32.to_be_bytes());
    let mut u = Zeroizing::new([0u8; 32]);
    u.copy_from_slice(&mac.finalize().into_bytes());
    out.copy_from_slice(&*u);

    // U(i+1) = HMAC(P, U(i)): the inner hash covers 64 + 32 bytes, so its second (and last)
    // block is U, 0x80, zeros and the length 768 bits; the outer hash's is the inner digest,
    // padded the same way.
    let mut block = Zeroizing::new([0u8; 64]);
    block[32] = 0x80;
    block[62] = 0x03;
    for _ in 1..iterations {
        block[..32].copy_from_slice(&*u);
        let mut state = *inner;
        compress256(&mut state, std::slice::from_ref(&*block));
        for (bytes, word) in block[..32].chunks_exact_mut(4).zip(state) {
            bytes.copy_from_slice(&word.to_be_bytes());
        }
        let mut state = *outer;
        compress256(&mut state, std::slice::from_ref(&*block));
        for (bytes, word) in u.chunks_exact_mut(4).zip(state) {
            bytes.copy_from_slice(&word.to_be_bytes());
        }
        for (o, x) in out.iter_mut().zip(u.iter()) {
            *o ^= x;
        }
        state.zeroize();
    }
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
    fn the_compression_loop_is_the_reference_pbkdf2() {
        let long = "x".repeat(65);
        let exact = "y".repeat(64);
        for password in [
            "",
            "p",
            "correct horse battery",
            "ünïcødé 😀",
            &exact,
            &long,
        ] {
            for salt in [&b""[..], b"salt", &[0xa5; 16], &[7; 100]] {
                for iterations in [1, 2, 3, 64, 1000] {
                    let mut fast = [0u8; 32];
                    pbkdf2_sha256(password.as_bytes(), salt, iterations, &mut fast);
                    let mut reference = [0u8; 32];
                    pbkdf2::pbkdf2_hmac::<sha2::Sha256>(
                        password.as_bytes(),
                        salt,
                        iterations,
                        &mut reference,
                    );
                    assert_eq!(fast, reference, "{password:?} {salt:?} {iterations}");
                }
            }
        }
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
