//! Known-answer tests: published vectors for the primitives, and the frozen `vs1:` vectors of
//! `tests/fixtures/envelope_v1.json` for the whole format.

use super::*;
use crate::error::ErrorCode;
use serde_json::Value;

fn unhex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

fn arr<const N: usize>(s: &str) -> [u8; N] {
    unhex(s).try_into().unwrap()
}

/// PBKDF2-HMAC-SHA256: RFC 7914 section 11 (first 32 bytes) and the widely used RFC 6070-style set.
#[test]
fn pbkdf2_hmac_sha256_published_vectors() {
    let vectors: &[(&str, &[u8], u32, &str)] = &[
        (
            "password",
            b"salt",
            1,
            "120fb6cffcf8b32c43e7225256c4f837a86548c92ccc35480805987cb70be17b",
        ),
        (
            "password",
            b"salt",
            2,
            "ae4d0c95af6b46d32d0adff928f06dd02a303f8ef3c251dfd6e2d85a95474c43",
        ),
        (
            "password",
            b"salt",
            4096,
            "c5e478d59288c841aa530db6845c4c8d962893a001ce4e11a4963873aa98134a",
        ),
        (
            "passwd",
            b"salt",
            1,
            "55ac046e56e3089fec1691c22544b605f94185216dde0465e68b9d57c20dacbc",
        ),
        (
            "Password",
            b"NaCl",
            80000,
            "4ddcd8f60b98be21830cee5ef22701f9641a4418d04c0414aeff08876b34ab56",
        ),
    ];
    for (password, salt, iterations, expected) in vectors {
        let mut out = [0u8; 32];
        pbkdf2::pbkdf2_hmac::<sha2::Sha256>(password.as_bytes(), salt, *iterations, &mut out);
        assert_eq!(identity::hex(&out), *expected, "{password} {iterations}");
    }
    // The vault's own entry point, with a 16-byte salt as vaults use.
    let params = KdfParams {
        iterations: 1000,
        salt: *b"vaultstore-salt!",
    };
    assert_eq!(
        identity::hex(derive_password_key("correct horse battery", &params).as_bytes()),
        "b3ae019a92a9863475b70415feca229ae85cd2351ee4967754b622cffd0486f7"
    );
}

/// HKDF-SHA256: RFC 5869 test case 1 (first 32 bytes of OKM; HKDF output is a prefix stream).
#[test]
fn hkdf_sha256_rfc5869() {
    let okm = hkdf_sha256(
        &unhex(&"0b".repeat(22)),
        &unhex("000102030405060708090a0b0c"),
        &unhex("f0f1f2f3f4f5f6f7f8f9"),
    );
    assert_eq!(
        identity::hex(okm.as_ref()),
        "3cb25f25faacd57a90434f64d0362f2a2d2d0a90cf1a5a4c5db02d56ecc4c5bf"
    );
}

/// AES-256-GCM: McGrew & Viega test cases 14 and 16, through the one sealing primitive the
/// envelope and the wrapped data key use; opening gives the plaintext back, and a flipped tag bit
/// does not open.
#[test]
fn aes_256_gcm_published_vectors() {
    let tc14 = aead::seal(&[0u8; 32], &[0u8; 12], &[0u8; 16], b"");
    assert_eq!(
        identity::hex(&tc14),
        "cea7403d4d606b6e074ec5d3baf39d18d0d1c8a799996bf0265b98b5d48ab919"
    );
    let key: [u8; 32] = arr(&"feffe9928665731c6d6a8f9467308308".repeat(2));
    let nonce = arr::<12>("cafebabefacedbaddecaf888");
    let plaintext = unhex(
        "d9313225f88406e5a55909c5aff5269a86a7a9531534f7da2e4c303d8a318a721c3c0c95956809532fcf0e2449a6b525b16aedf5aa0de657ba637b39",
    );
    let aad = unhex("feedfacedeadbeeffeedfacedeadbeefabaddad2");
    let mut tc16 = aead::seal(&key, &nonce, &plaintext, &aad);
    assert_eq!(
        identity::hex(&tc16),
        "522dc1f099567d07f47f37a32a84427d643a8cdcbfe5c0c97598a2bd2555d1aa8cb08e48590dbb3da7b08b1056828838c5f61e6393ba7a0abcc9f66276fc6ece0f4e1768cddf8853bb2d551b"
    );
    assert_eq!(
        aead::open(&key, &nonce, &tc16, &aad).as_deref(),
        Some(&plaintext)
    );
    *tc16.last_mut().unwrap() ^= 1;
    assert!(aead::open(&key, &nonce, &tc16, &aad).is_none());
}

fn fixtures() -> Value {
    serde_json::from_str(include_str!("../../tests/fixtures/envelope_v1.json")).unwrap()
}

fn vault_params(f: &Value) -> KdfParams {
    let salt: [u8; 16] = f["vault"]["salt"]
        .as_str()
        .unwrap()
        .as_bytes()
        .try_into()
        .unwrap();
    KdfParams {
        iterations: f["vault"]["iterations"].as_u64().unwrap() as u32,
        salt,
    }
}

fn check_envelope(case: &Value, key: &DataKey) {
    let (token, plaintext, expected) = (
        case["token"].as_str().unwrap(),
        case["plaintext"].as_str().unwrap(),
        case["envelope"].as_str().unwrap(),
    );
    let sealed = envelope::seal_value_with(
        key,
        token,
        plaintext,
        arr(case["rsalt"].as_str().unwrap()),
        arr(case["nonce"].as_str().unwrap()),
    );
    assert_eq!(sealed, expected, "sealing must produce the frozen bytes");
    assert_eq!(
        open_value(key, token, expected).unwrap(),
        plaintext,
        "the frozen bytes must open"
    );
}

#[test]
fn frozen_password_envelope() {
    let f = fixtures();
    let case = &f["password"];
    let mk = derive_password_key(case["password"].as_str().unwrap(), &vault_params(&f));
    assert_eq!(
        identity::hex(mk.as_bytes()),
        case["masterKey"].as_str().unwrap()
    );
    check_envelope(case, &DataKey::from_master(&mk));
}

#[test]
fn frozen_raw_key_envelope() {
    let f = fixtures();
    let case = &f["rawKey"];
    let mk = derive_raw_key(&arr(case["rawKey"].as_str().unwrap()), &vault_params(&f));
    assert_eq!(
        identity::hex(mk.as_bytes()),
        case["masterKey"].as_str().unwrap()
    );
    check_envelope(case, &DataKey::from_master(&mk));
}

#[test]
fn frozen_identity_tag_wrapped_dek_and_envelope() {
    let f = fixtures();
    let case = &f["identity"];
    let params = vault_params(&f);
    let mk = derive_password_key(case["password"].as_str().unwrap(), &params);
    assert_eq!(identity_tag(&mk), case["tag"].as_str().unwrap());
    let id = case["identityId"].as_str().unwrap();
    let dek = DataKey::from_bytes(arr(case["dek"].as_str().unwrap()));
    let wrapped = identity::wrap_dek_with(
        &mk,
        &params,
        id,
        &dek,
        arr(case["dekNonce"].as_str().unwrap()),
    );
    assert_eq!(wrapped, case["wrappedDek"].as_str().unwrap());
    let unwrapped = unwrap_dek(&mk, &params, id, &wrapped).unwrap();
    assert_eq!(unwrapped.as_bytes(), dek.as_bytes());
    // The wrapping is bound to the identity id.
    assert!(unwrap_dek(&mk, &params, "p_ffffffffffffffffffffffffffffffff", &wrapped).is_err());
    check_envelope(case, &dek);
}

#[test]
fn a_wrong_key_is_invalid_password_and_tampering_is_decryption_failed() {
    let f = fixtures();
    let case = &f["password"];
    let mk = derive_password_key(case["password"].as_str().unwrap(), &vault_params(&f));
    let key = DataKey::from_master(&mk);
    let (token, env) = (
        case["token"].as_str().unwrap(),
        case["envelope"].as_str().unwrap(),
    );
    let wrong = DataKey::from_bytes([0x42; 32]);
    assert_eq!(
        open_value(&wrong, token, env).unwrap_err().code(),
        ErrorCode::InvalidPassword
    );
    // The token is bound as associated data: the value does not open under another token.
    assert_eq!(
        open_value(&key, "tk_other", env).unwrap_err().code(),
        ErrorCode::DecryptionFailed
    );
    // Flip each byte of the body in turn: every change is caught.
    let body = b64u_decode(&env[4..]).unwrap();
    for i in 0..body.len() {
        let mut bad = body.clone();
        bad[i] ^= 0x01;
        let text = format!("vs1:{}", b64u_encode(&bad));
        let code = open_value(&key, token, &text).unwrap_err().code();
        // kcv and rsalt (bytes 0..20) feed the key check, so a change there reads as a wrong
        // key; a change to nonce, ciphertext or tag is caught by GCM.
        let expected = if i < 20 {
            ErrorCode::InvalidPassword
        } else {
            ErrorCode::DecryptionFailed
        };
        assert_eq!(code, expected, "byte {i}");
    }
}

#[test]
fn malformed_envelopes_are_decryption_failed_never_panics() {
    let key = DataKey::from_bytes([1; 32]);
    let mut cases: Vec<String> = vec![
        String::new(),
        "vs1:".into(),
        "vs2:AAAA".into(),
        "vs1:!!!!".into(),
        "vs1:AAAA".into(),
        format!("vs1:{}", "A".repeat(63)),
        format!("vs1:{}=", "A".repeat(64)),
        "VS1:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA".into(),
        "plaintext that was never encrypted".into(),
    ];
    // Pseudo-random garbage of every length up to 200 (a fixed LCG keeps it reproducible).
    let mut x: u32 = 12345;
    for len in 0..200 {
        let s: String = (0..len)
            .map(|_| {
                x = x.wrapping_mul(1_103_515_245).wrapping_add(12345);
                char::from_u32(32 + (x >> 16) % 95).unwrap()
            })
            .collect();
        cases.push(format!("vs1:{s}"));
        cases.push(s);
    }
    for text in cases {
        let err = open_value(&key, "tk_x", &text).unwrap_err();
        assert!(
            matches!(
                err.code(),
                ErrorCode::DecryptionFailed | ErrorCode::InvalidPassword
            ),
            "{text:?}"
        );
        if !text.starts_with("vs1:") {
            assert_eq!(err.code(), ErrorCode::DecryptionFailed);
        }
    }
}

#[test]
fn every_seal_uses_fresh_randomness() {
    let key = DataKey::from_bytes([1; 32]);
    let a = seal_value(&key, "tk_x", "same").unwrap();
    let b = seal_value(&key, "tk_x", "same").unwrap();
    assert_ne!(a, b, "rsalt and nonce are fresh on every write");
    assert_eq!(open_value(&key, "tk_x", &a).unwrap(), "same");
}
