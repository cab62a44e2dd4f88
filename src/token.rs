//! Tokens: `"tk_"` + lowercase Crockford base32 from the CSPRNG. They carry no timestamp and no
//! information about the value; only their length is chosen by the caller.

use crate::crypto;
use crate::error::{Result, VaultError};

/// Every generated token starts with this.
pub const TOKEN_PREFIX: &str = "tk_";
/// Shortest generated token, prefix included.
pub const MIN_TOKEN_LEN: usize = 15;
/// Longest generated token, prefix included.
pub const MAX_TOKEN_LEN: usize = 40;
/// Length of a generated token when the caller does not choose one.
pub const DEFAULT_TOKEN_LEN: usize = 32;
/// Longest custom token, in UTF-8 bytes.
pub const MAX_CUSTOM_TOKEN_BYTES: usize = 255;

/// Crockford's base32 alphabet, lowercase: no i, l, o, u, so tokens survive being read aloud.
const ALPHABET: &[u8; 32] = b"0123456789abcdefghjkmnpqrstvwxyz";

/// `isToken(s)`: starts with `"tk_"`.
pub fn is_token(s: &str) -> bool {
    s.starts_with(TOKEN_PREFIX)
}

/// `isTokenValidLength(s)`: a token whose total length, counted in UTF-16 code units as
/// JavaScript's `length` does, is 15..=40.
pub fn is_token_valid_length(s: &str) -> bool {
    is_token(s) && (MIN_TOKEN_LEN..=MAX_TOKEN_LEN).contains(&s.encode_utf16().count())
}

/// Check a requested token length (total, prefix included).
pub fn check_length(length: usize) -> Result<usize> {
    if (MIN_TOKEN_LEN..=MAX_TOKEN_LEN).contains(&length) {
        Ok(length)
    } else {
        Err(VaultError::invalid(format!(
            "token length must be from {MIN_TOKEN_LEN} to {MAX_TOKEN_LEN} (prefix \"tk_\" included)"
        )))
    }
}

/// A fresh random token of `length` characters in total.
///
/// Each character takes 5 bits of a random byte; 256 is a multiple of 32, so masking the low
/// five bits is exactly uniform and there is no modulo bias to reject.
pub fn generate(length: usize) -> Result<String> {
    let length = check_length(length)?;
    let mut bytes = [0u8; MAX_TOKEN_LEN];
    let body = &mut bytes[..length - TOKEN_PREFIX.len()];
    crypto::public_random(body)?;
    let mut token = String::with_capacity(length);
    token.push_str(TOKEN_PREFIX);
    token.extend(body.iter().map(|b| ALPHABET[usize::from(b & 0x1f)] as char));
    Ok(token)
}

/// Check a caller-chosen token: any non-empty string of at most 255 UTF-8 bytes.
pub fn check_custom(token: &str) -> Result<()> {
    if token.is_empty() {
        return Err(VaultError::invalid("token must be a non-empty string"));
    }
    if token.len() > MAX_CUSTOM_TOKEN_BYTES {
        return Err(VaultError::invalid(format!(
            "token must be at most {MAX_CUSTOM_TOKEN_BYTES} UTF-8 bytes"
        )));
    }
    Ok(())
}

/// Check a token passed to a lookup: the same rule as custom tokens, so a lookup can never
/// miss a token that could have been stored.
pub fn check_lookup(token: &str) -> Result<()> {
    check_custom(token)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    #[test]
    fn generated_tokens_have_the_requested_length_and_alphabet() {
        for length in MIN_TOKEN_LEN..=MAX_TOKEN_LEN {
            let t = generate(length).unwrap();
            assert_eq!(t.len(), length);
            assert!(is_token(&t) && is_token_valid_length(&t));
            assert!(t[3..].bytes().all(|b| ALPHABET.contains(&b)), "{t}");
        }
        assert_eq!(generate(DEFAULT_TOKEN_LEN).unwrap().len(), 32);
    }

    #[test]
    fn lengths_out_of_range_are_invalid_arguments() {
        for length in [0, 3, 14, 41, 1000] {
            assert_eq!(
                generate(length).unwrap_err().code().as_str(),
                "INVALID_ARGUMENT"
            );
        }
    }

    #[test]
    fn characters_are_uniform() {
        // 37,000 characters over 32 symbols: each expected about 1,156 times (sigma about 34).
        // A biased generator (say, a byte modulo 36 folded onto 32) pushes symbols past 15%.
        let mut counts: HashMap<char, usize> = HashMap::new();
        for _ in 0..1_000 {
            for c in generate(MAX_TOKEN_LEN).unwrap()[3..].chars() {
                *counts.entry(c).or_default() += 1;
            }
        }
        assert_eq!(counts.len(), 32);
        let total: usize = counts.values().sum();
        let expected = total as f64 / 32.0;
        for (c, n) in counts {
            let deviation = (n as f64 - expected).abs() / expected;
            assert!(
                deviation < 0.15,
                "{c} appeared {n} times, expected about {expected}"
            );
        }
    }

    #[test]
    fn is_token_rules() {
        assert!(is_token("tk_"));
        assert!(!is_token("TK_abc"));
        assert!(!is_token(""));
        assert!(!is_token_valid_length("tk_abc"));
        assert!(is_token_valid_length("tk_abcdefghjkmn")); // 15
        assert!(!is_token_valid_length(&format!("tk_{}", "a".repeat(38)))); // 41
        // JS length counts UTF-16 units: "é" is one unit but two UTF-8 bytes.
        assert!(is_token_valid_length(&format!("tk_{}", "é".repeat(12))));
    }

    #[test]
    fn custom_tokens() {
        assert!(check_custom("x").is_ok());
        assert!(check_custom(&"a".repeat(255)).is_ok());
        assert!(check_custom(&"a".repeat(256)).is_err());
        assert!(check_custom(&"é".repeat(128)).is_err()); // 256 bytes
        assert!(check_custom("").is_err());
    }
}
