//! Master keys derived from secrets, kept for `keyCacheTtlMs` so a password costs one PBKDF2 per
//! unlock, not one per call. Entries are found by an HMAC of the secret under a random key of
//! this cache, so the cache holds no password.
//!
//! `lock()` ([`KeyCache::clear`]) wipes every key *and* replaces that HMAC key: the lookup ids
//! of the old entries would otherwise let anyone holding a memory dump test password guesses at
//! HMAC speed, skipping PBKDF2. It also starts a new epoch: a derivation that began before the
//! lock is never cached after it, and an operation that began before it can tell it happened.
//! Expired entries are swept on every access and, where the host has timers, when they expire.

use crate::crypto::{MasterKey, hmac_sha256, random_bytes};
use crate::error::Result;
use crate::secret::Secret;
use std::sync::Mutex;
use zeroize::Zeroizing;

/// The lookup id of a secret: HMAC-SHA256 under the cache's current key.
pub(crate) type CacheId = Zeroizing<[u8; 32]>;

struct Entry {
    id: CacheId,
    key: MasterKey,
    expires_at: i64,
}

struct State {
    id_key: Zeroizing<[u8; 32]>,
    /// A `Vec`, not a map: a handful of entries, and growing a hash table copies its entries
    /// around the heap without wiping the old buckets.
    entries: Vec<Entry>,
    epoch: u64,
}

pub(crate) struct KeyCache {
    ttl_ms: u64,
    state: Mutex<State>,
}

/// What [`KeyCache::lookup`] returns: the key if cached, and in any case the id to store a
/// derived key under and the epoch the derivation belongs to.
pub(crate) struct Lookup {
    pub key: Option<MasterKey>,
    pub id: CacheId,
    pub epoch: u64,
}

/// The lookup id of `secret` under the cache's current id key.
fn lookup_id(state: &State, secret: &Secret) -> CacheId {
    Zeroizing::new(match secret {
        Secret::Password(p) => hmac_sha256(state.id_key.as_ref(), &[b"password:", p.as_bytes()]),
        Secret::RawKey(k) => hmac_sha256(state.id_key.as_ref(), &[b"raw:", k.as_bytes()]),
    })
}

fn new_id_key() -> Result<Zeroizing<[u8; 32]>> {
    let mut id_key = Zeroizing::new([0u8; 32]);
    random_bytes(id_key.as_mut())?;
    Ok(id_key)
}

impl KeyCache {
    pub(crate) fn new(ttl_ms: u64) -> Result<Self> {
        Ok(KeyCache {
            ttl_ms,
            state: Mutex::new(State {
                id_key: new_id_key()?,
                entries: Vec::new(),
                epoch: 0,
            }),
        })
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        // No code path panics while holding this lock; recover rather than poison the vault.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The cached key of `secret` at time `now`, sweeping expired entries first.
    pub(crate) fn lookup(&self, secret: &Secret, now: i64) -> Lookup {
        let mut state = self.state();
        state.entries.retain(|e| now < e.expires_at);
        let id = lookup_id(&state, secret);
        let key = state
            .entries
            .iter()
            .find(|e| *e.id == *id)
            .map(|e| e.key.clone());
        Lookup {
            key,
            id,
            epoch: state.epoch,
        }
    }

    /// Cache `key` under `id`, unless the cache was cleared since `epoch` (the key was derived
    /// before a `lock()`) or caching is off. Returns the time the entry expires, if cached.
    pub(crate) fn put(&self, id: CacheId, epoch: u64, key: &MasterKey, now: i64) -> Option<i64> {
        let mut state = self.state();
        if self.ttl_ms == 0 || state.epoch != epoch {
            return None;
        }
        state.entries.retain(|e| now < e.expires_at && *e.id != *id);
        let expires_at = now.saturating_add(i64::try_from(self.ttl_ms).unwrap_or(i64::MAX));
        state.entries.push(Entry {
            id,
            key: key.clone(),
            expires_at,
        });
        Some(expires_at)
    }

    /// Drop (and so zeroize) the cached key of `secret`, if any: a secret removed from the
    /// vault (`secretRemove`) leaves no key behind.
    pub(crate) fn forget(&self, secret: &Secret) {
        let mut state = self.state();
        let id = lookup_id(&state, secret);
        state.entries.retain(|e| *e.id != *id);
    }

    /// Drop expired entries (a timer calls this when one expires).
    pub(crate) fn sweep(&self, now: i64) {
        self.state().entries.retain(|e| now < e.expires_at);
    }

    /// The current epoch: it changes on every [`KeyCache::clear`].
    pub(crate) fn epoch(&self) -> u64 {
        self.state().epoch
    }

    /// Drop (and so zeroize) every cached key, replace the id key, and start a new epoch.
    pub(crate) fn clear(&self) {
        let mut state = self.state();
        state.entries.clear();
        state.entries.shrink_to_fit();
        state.epoch += 1;
        // If the CSPRNG failed here, keeping the old id key is all that is possible; the entries
        // it identified are gone either way.
        if let Ok(fresh) = new_id_key() {
            state.id_key = fresh;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(byte: u8) -> MasterKey {
        MasterKey::from_bytes([byte; 32])
    }

    #[test]
    fn entries_expire_and_are_swept() {
        let cache = KeyCache::new(1_000).unwrap();
        let pw = Secret::password("a password");
        let l = cache.lookup(&pw, 0);
        assert!(l.key.is_none());
        assert_eq!(cache.put(l.id, l.epoch, &key(1), 0), Some(1_000));
        assert!(cache.lookup(&pw, 999).key.is_some());
        assert!(cache.lookup(&pw, 1_000).key.is_none());
        assert!(cache.state().entries.is_empty(), "the lookup swept it");
    }

    #[test]
    fn a_key_derived_before_a_lock_is_not_cached_after_it() {
        let cache = KeyCache::new(1_000).unwrap();
        let pw = Secret::password("a password");
        let before = cache.lookup(&pw, 0);
        cache.clear();
        assert_eq!(cache.put(before.id, before.epoch, &key(1), 0), None);
        assert!(cache.lookup(&pw, 0).key.is_none());
    }

    #[test]
    fn lock_replaces_the_lookup_key() {
        let cache = KeyCache::new(1_000).unwrap();
        let pw = Secret::password("a password");
        let before = cache.lookup(&pw, 0).id;
        cache.clear();
        let after = cache.lookup(&pw, 0).id;
        assert_ne!(
            *before, *after,
            "old lookup ids must not match after lock()"
        );
    }

    #[test]
    fn ttl_zero_never_caches() {
        let cache = KeyCache::new(0).unwrap();
        let pw = Secret::password("a password");
        let l = cache.lookup(&pw, 0);
        assert_eq!(cache.put(l.id, l.epoch, &key(1), 0), None);
    }
}
