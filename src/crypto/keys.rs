//! 256-bit key types. They zeroize on drop, never print, and keep their bytes on the heap: moving
//! a key moves a pointer, so no stale copy of the bytes is left behind in a stack frame (in wasm,
//! the stack is part of the linear memory a dump would show).

use std::fmt;
use zeroize::{Zeroize, ZeroizeOnDrop};

/// Every key in the hierarchy is 32 bytes.
pub const KEY_LEN: usize = 32;

macro_rules! key_type {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Zeroize, ZeroizeOnDrop, Clone)]
        pub struct $name(Box<[u8; KEY_LEN]>);

        impl $name {
            /// A key written in place by `fill`, so its bytes never exist outside this box.
            pub(crate) fn filled_by(fill: impl FnOnce(&mut [u8; KEY_LEN])) -> Self {
                let mut key = Self(Box::new([0; KEY_LEN]));
                fill(&mut key.0);
                key
            }

            #[cfg(test)]
            pub(crate) fn from_bytes(bytes: [u8; KEY_LEN]) -> Self {
                Self(Box::new(bytes))
            }

            pub(crate) fn as_bytes(&self) -> &[u8; KEY_LEN] {
                &self.0
            }
        }

        /// Constant time, so comparing keys leaks nothing through timing.
        impl PartialEq for $name {
            fn eq(&self, other: &Self) -> bool {
                use subtle::ConstantTimeEq;
                self.0[..].ct_eq(&other.0[..]).into()
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
    DataKey
);

impl DataKey {
    /// With identities off, a record's data key is the master key itself (FORMAT.md).
    pub fn from_master(mk: &MasterKey) -> Self {
        Self::filled_by(|k| k.copy_from_slice(mk.as_bytes()))
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
}
