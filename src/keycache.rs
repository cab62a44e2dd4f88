//! Master keys derived from secrets, kept for `keyCacheTtlMs` so a password costs one PBKDF2 per
//! unlock, not one per call. Entries are found by an HMAC of the secret under a per-vault random
//! key, so the cache holds no password, and `lock()` wipes every key at once.

use crate::crypto::{MasterKey, hmac_sha256, random_bytes};
use crate::error::Result;
use crate::secret::Secret;
use std::collections::HashMap;
use std::sync::Mutex;
use zeroize::Zeroizing;

type CacheId = [u8; 32];

struct Entry {
    key: MasterKey,
    expires_at: i64,
}

pub(crate) struct KeyCache {
    ttl_ms: u64,
    id_key: Zeroizing<[u8; 32]>,
    entries: Mutex<HashMap<CacheId, Entry>>,
}

impl KeyCache {
    pub(crate) fn new(ttl_ms: u64) -> Result<Self> {
        let mut id_key = Zeroizing::new([0u8; 32]);
        random_bytes(id_key.as_mut())?;
        Ok(KeyCache {
            ttl_ms,
            id_key,
            entries: Mutex::new(HashMap::new()),
        })
    }

    pub(crate) fn id_of(&self, secret: &Secret) -> CacheId {
        match secret {
            Secret::Password(p) => hmac_sha256(self.id_key.as_ref(), &[b"password:", p.as_bytes()]),
            Secret::RawKey(k) => hmac_sha256(self.id_key.as_ref(), &[b"raw:", k.as_ref()]),
        }
    }

    fn entries(&self) -> std::sync::MutexGuard<'_, HashMap<CacheId, Entry>> {
        // No code path panics while holding this lock; recover rather than poison the vault.
        self.entries.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(crate) fn get(&self, id: &CacheId, now: i64) -> Option<MasterKey> {
        let mut entries = self.entries();
        match entries.get(id) {
            Some(entry) if now < entry.expires_at => Some(entry.key.clone()),
            Some(_) => {
                entries.remove(id);
                None
            }
            None => None,
        }
    }

    pub(crate) fn put(&self, id: CacheId, key: &MasterKey, now: i64) {
        if self.ttl_ms == 0 {
            return;
        }
        let expires_at = now.saturating_add(i64::try_from(self.ttl_ms).unwrap_or(i64::MAX));
        let mut entries = self.entries();
        entries.retain(|_, e| now < e.expires_at);
        entries.insert(
            id,
            Entry {
                key: key.clone(),
                expires_at,
            },
        );
    }

    /// Drop (and so zeroize) every cached key.
    pub(crate) fn clear(&self) {
        self.entries().clear();
    }
}
