//! 256-bit key types. They zeroize on drop, never print, and keep their bytes on the heap: moving
//! a key moves a pointer, so no stale copy of the bytes is left behind in a stack frame (in wasm,
//! the stack is part of the linear memory a dump would show).

use super::KeyedMac;
use std::cell::OnceCell;
use std::fmt;
use zeroize::{Zeroize, ZeroizeOnDrop};

/// Every key in the hierarchy is 32 bytes.
pub const KEY_LEN: usize = 32;

/// A key type: its bytes, and optionally one cell of something derived from them (filled on
/// first use, emptied with the bytes; what it holds zeroizes itself on drop).
macro_rules! key_type {
    ($(#[$doc:meta])* $name:ident $(, $derived:ident: $derived_ty:ty)?) => {
        $(#[$doc])*
        #[derive(Clone)]
        pub struct $name {
            bytes: Box<[u8; KEY_LEN]>,
            $($derived: $derived_ty,)?
        }

        impl $name {
            /// A key written in place by `fill`, so its bytes never exist outside this box.
            pub(crate) fn filled_by(fill: impl FnOnce(&mut [u8; KEY_LEN])) -> Self {
                let mut key = Self {
                    bytes: Box::new([0; KEY_LEN]),
                    $($derived: <$derived_ty>::default(),)?
                };
                fill(&mut key.bytes);
                key
            }

            #[cfg(test)]
            pub(crate) fn from_bytes(bytes: [u8; KEY_LEN]) -> Self {
                Self::filled_by(|k| *k = bytes)
            }

            pub(crate) fn as_bytes(&self) -> &[u8; KEY_LEN] {
                &self.bytes
            }
        }

        impl Zeroize for $name {
            fn zeroize(&mut self) {
                self.bytes.zeroize();
                $(self.$derived = <$derived_ty>::default();)?
            }
        }

        impl Drop for $name {
            fn drop(&mut self) {
                self.bytes.zeroize();
            }
        }

        impl ZeroizeOnDrop for $name {}

        /// Constant time, so comparing keys leaks nothing through timing.
        impl PartialEq for $name {
            fn eq(&self, other: &Self) -> bool {
                use subtle::ConstantTimeEq;
                self.bytes[..].ct_eq(&other.bytes[..]).into()
            }
        }

        impl Eq for $name {}

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, concat!(stringify!($name), "(<redacted>)"))
            }
        }
    };
}

key_type!(
    /// A caller's raw 256-bit key (API.md "Secrets"), copied from JavaScript straight into its
    /// box, so no copy of it lives in a stack frame or moves with a future.
    RawKey
);
key_type!(
    /// MK: derived from a password (PBKDF2) or a raw key (HKDF). FORMAT.md "Master key".
    MasterKey
);
key_type!(
    /// K: the key a record's envelope is made with: MK, or an identity's DEK. FORMAT.md "Data key".
    /// It also keeps its kcv MAC (an HMAC under K, FORMAT.md "Record value envelope"), keyed
    /// on first use and cloned with the key: a batch keys it once, not once per record, and a
    /// key the key cache keeps is keyed once per unlock.
    DataKey,
    kcv: OnceCell<KeyedMac>
);

impl DataKey {
    /// With identities off, a record's data key is the master key itself (FORMAT.md).
    pub fn from_master(mk: &MasterKey) -> Self {
        Self::filled_by(|k| k.copy_from_slice(mk.as_bytes()))
    }

    /// HMAC-SHA256 under this key, keyed once.
    pub(crate) fn kcv_mac(&self) -> &KeyedMac {
        self.kcv.get_or_init(|| KeyedMac::new(self.as_bytes()))
    }

    /// A fresh random DEK for a new identity or a rotation.
    pub(crate) fn generate() -> crate::error::Result<Self> {
        let mut result = Ok(());
        let key = Self::filled_by(|k| result = super::random_bytes(k));
        result.map(|()| key)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_never_print_their_bytes() {
        let k = MasterKey::from_bytes([0xab; KEY_LEN]);
        let shown = format!("{k:?}");
        assert_eq!(shown, "MasterKey(<redacted>)");
        assert!(!shown.to_lowercase().contains("ab"));
        let d = DataKey::from_master(&k);
        assert_eq!(format!("{d:?}"), "DataKey(<redacted>)");
        let r = RawKey::from_bytes([0xab; KEY_LEN]);
        assert_eq!(format!("{r:?}"), "RawKey(<redacted>)");
    }

    #[test]
    fn zeroize_wipes_the_bytes() {
        let mut k = DataKey::from_bytes([7; KEY_LEN]);
        k.zeroize();
        assert_eq!(k.as_bytes(), &[0u8; KEY_LEN]);
    }

    /// The kept kcv MAC is the key's HMAC, travels with clones, and goes with the bytes: a
    /// zeroized key keeps no state keyed by what it was.
    #[test]
    fn the_kept_kcv_mac_is_the_keys_and_is_wiped_with_it() {
        let message: &[&[u8]] = &[b"vaultstore/v1/kcv", &[1; 16]];
        let mut k = DataKey::from_bytes([7; KEY_LEN]);
        let expected = super::super::hmac_sha256(&[7; KEY_LEN], message);
        assert_eq!(k.kcv_mac().mac(message), expected);
        assert_eq!(k.clone().kcv_mac().mac(message), expected);
        k.zeroize();
        assert_eq!(
            k.kcv_mac().mac(message),
            super::super::hmac_sha256(&[0; KEY_LEN], message)
        );
    }
}
