//! Master keys derived from secrets, kept for `keyCacheTtlMs` so a password costs one PBKDF2 per
//! unlock, not one per call. Entries are found by an HMAC of the secret under a random key of
//! this cache, so the cache holds no password.
//!
//! `lock()` ([`KeyCache::clear`]) wipes every key *and* replaces that HMAC key: the lookup ids
//! of the old entries would otherwise let anyone holding a memory dump test password guesses at
//! HMAC speed, skipping PBKDF2. It also starts a new epoch: a derivation that began before the
//! lock is never cached after it, and an operation that began before it can tell it happened.
//! Expired entries are swept on every access and, where the host has timers, when they expire.
//!
//! Each entry also keeps what its key always derives the same way ([`Derived`]): its identity
//! tag and the identity DEK it last unwrapped. With identities on, every call found its identity
//! by computing the tag (an HMAC) and unwrapping the DEK (an HKDF and an AES-GCM open) again:
//! about two fifths of the SHA-256 a `tokenRead` ran, and one of its two AES-GCM opens. They go
//! with the key: on `lock()`, on expiry, on `forget`. The identity rows are still read on every
//! call that opens values, so a password changed or removed elsewhere stops opening anything at
//! once. Creates are the exception ([`KeyCache::known_identity`]): they seal with the identity
//! their key last wrote with, without reading it, and their batch commits only while that
//! identity's slot rows (its tag and wrapped DEK) are still the ones this cache holds; when
//! another writer changed them, the batch fails, the create forgets the identity and reads it.

use crate::crypto::{DataKey, KdfParams, KeyedMac, MasterKey, SALT_LEN, random_bytes};
use crate::error::Result;
use crate::secret::Secret;
use crate::vault::identity::Identity;
use std::sync::Mutex;
use zeroize::Zeroizing;

/// The lookup id of a secret: HMAC-SHA256 under the cache's current key.
pub(crate) type CacheId = Zeroizing<[u8; 32]>;

struct Entry {
    id: CacheId,
    key: MasterKey,
    expires_at: i64,
    derived: Derived,
}

/// What a cached master key derived, each a pure function of the key and what it is keyed by
/// here, so a later call may use it instead of deriving it again.
#[derive(Default)]
struct Derived {
    /// `DataKey::from_master(key)`, with its kcv MAC keyed.
    master: Option<DataKey>,
    /// `identity_tag(key)`.
    tag: Option<String>,
    /// The last `unwrap_dek(key, params, identity_id, wrapped)`: a secret opens one identity
    /// (rarely two, SYNC.md 3, whose DEKs then take turns here), and a re-wrap elsewhere
    /// changes the wrapped row.
    dek: Option<Unwrapped>,
    /// The identity id and slot object of the last create's committed batch, when its DEK is
    /// the one `dek` holds.
    writes_with: Option<(String, String)>,
}

struct Unwrapped {
    identity_id: String,
    wrapped: String,
    salt: [u8; SALT_LEN],
    dek: DataKey,
}

struct State {
    id_mac: KeyedMac,
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
        Secret::Password(p) => state.id_mac.mac(&[b"password:", p.as_bytes()]),
        Secret::RawKey(k) => state.id_mac.mac(&[b"raw:", k.as_bytes()]),
    })
}

/// What the cached entry of `key` derived, if `key` is cached (found by the key itself,
/// compared in constant time: callers hold the key, not the secret).
fn derived<'s>(state: &'s mut State, key: &MasterKey) -> Option<&'s mut Derived> {
    let entry = state.entries.iter_mut().find(|e| e.key == *key)?;
    Some(&mut entry.derived)
}

/// The HMAC of lookup ids, under a fresh random key. Only the keyed state is kept: every call
/// with a secret computes an id, and keying costs as much as the MAC.
fn new_id_mac() -> Result<KeyedMac> {
    let mut id_key = Zeroizing::new([0u8; 32]);
    random_bytes(id_key.as_mut())?;
    Ok(KeyedMac::new(id_key.as_ref()))
}

impl KeyCache {
    pub(crate) fn new(ttl_ms: u64) -> Result<Self> {
        Ok(KeyCache {
            ttl_ms,
            state: Mutex::new(State {
                id_mac: new_id_mac()?,
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
            derived: Derived::default(),
        });
        Some(expires_at)
    }

    /// `DataKey::from_master(key)`, its kcv MAC keyed once per cached key (identities off, each
    /// record's data key is the master key).
    pub(crate) fn master_data_key(&self, key: &MasterKey) -> DataKey {
        if let Some(master) = derived(&mut self.state(), key).and_then(|d| d.master.clone()) {
            return master;
        }
        let master = DataKey::from_master(key);
        master.kcv_mac();
        if let Some(d) = derived(&mut self.state(), key) {
            d.master = Some(master.clone());
        }
        master
    }

    /// `identity_tag(key)`, computed once per cached key.
    pub(crate) fn identity_tag(&self, key: &MasterKey) -> String {
        if let Some(tag) = derived(&mut self.state(), key).and_then(|d| d.tag.clone()) {
            return tag;
        }
        let tag = crate::crypto::identity_tag(key);
        if let Some(d) = derived(&mut self.state(), key) {
            d.tag = Some(tag.clone());
        }
        tag
    }

    /// `unwrap_dek(key, params, identity_id, wrapped)`, unwrapped once per cached key and
    /// wrapped row: a row re-wrapped meanwhile is another row, and is unwrapped again.
    pub(crate) fn unwrap_dek(
        &self,
        key: &MasterKey,
        params: &KdfParams,
        identity_id: &str,
        wrapped: &str,
    ) -> Result<DataKey> {
        let same = |u: &Unwrapped| {
            u.identity_id == identity_id && u.wrapped == wrapped && u.salt == params.salt
        };
        if let Some(d) = derived(&mut self.state(), key)
            && let Some(kept) = d.dek.as_ref().filter(|u| same(u))
        {
            return Ok(kept.dek.clone());
        }
        let dek = crate::crypto::unwrap_dek(key, params, identity_id, wrapped)?;
        // Keyed before it is kept, so every copy handed out later carries it.
        dek.kcv_mac();
        if let Some(d) = derived(&mut self.state(), key) {
            d.dek = Some(Unwrapped {
                identity_id: identity_id.to_owned(),
                wrapped: wrapped.to_owned(),
                salt: params.salt,
                dek: dek.clone(),
            });
        }
        Ok(dek)
    }

    /// The identity `key`'s last create committed with ([`KeyCache::remember_writes`]), with
    /// its DEK as unwrapped from the row `wrapped` (returned second) under KDF `params`: what a
    /// create may seal with without reading the identity, guarded by that row and the tag.
    pub(crate) fn known_identity(
        &self,
        key: &MasterKey,
        params: &KdfParams,
    ) -> Option<(Identity, String)> {
        let mut state = self.state();
        let d = derived(&mut state, key)?;
        let (id, slot) = d.writes_with.as_ref()?;
        let u = d
            .dek
            .as_ref()
            .filter(|u| u.identity_id == *id && u.salt == params.salt)?;
        let identity = Identity {
            id: id.clone(),
            slot: slot.clone(),
            dek: u.dek.clone(),
        };
        Some((identity, u.wrapped.clone()))
    }

    /// A create sealed with identity `identity_id`, found through `slot`, committed.
    pub(crate) fn remember_writes(&self, key: &MasterKey, identity_id: &str, slot: &str) {
        if let Some(d) = derived(&mut self.state(), key) {
            d.writes_with = Some((identity_id.to_owned(), slot.to_owned()));
        }
    }

    /// A create's batch failed: the next one reads the identity again.
    pub(crate) fn forget_writes(&self, key: &MasterKey) {
        if let Some(d) = derived(&mut self.state(), key) {
            d.writes_with = None;
        }
    }

    /// Creates of every key that remembered identity `identity_id` read it again: sync found
    /// it removed on the server.
    pub(crate) fn forget_writes_with(&self, identity_id: &str) {
        for entry in &mut self.state().entries {
            if entry
                .derived
                .writes_with
                .as_ref()
                .is_some_and(|(id, _)| id == identity_id)
            {
                entry.derived.writes_with = None;
            }
        }
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
        if let Ok(fresh) = new_id_mac() {
            state.id_mac = fresh;
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

    /// A kept DEK answers only for the row it was unwrapped from: a damaged or replaced row is
    /// unwrapped (and refused) again, and `lock()` drops every DEK with its key.
    #[test]
    fn unwrapped_deks_are_kept_per_row_and_go_with_the_key() {
        let cache = KeyCache::new(1_000).unwrap();
        let pw = Secret::password("a password");
        let l = cache.lookup(&pw, 0);
        let mk = key(1);
        cache.put(l.id, l.epoch, &mk, 0).unwrap();
        let params = KdfParams {
            iterations: 1_000,
            salt: [7; SALT_LEN],
        };
        let dek = DataKey::from_bytes([9; 32]);
        let row = crate::crypto::wrap_dek(&mk, &params, "id1", &dek).unwrap();
        assert!(cache.unwrap_dek(&mk, &params, "id1", &row).unwrap() == dek);
        assert!(derived(&mut cache.state(), &mk).is_some_and(|d| d.dek.is_some()));
        // The same row again is the kept DEK; another row of the same identity is unwrapped.
        assert!(cache.unwrap_dek(&mk, &params, "id1", &row).unwrap() == dek);
        let mut damaged = row.clone();
        damaged.pop();
        damaged.push(if row.ends_with('A') { 'B' } else { 'A' });
        assert!(cache.unwrap_dek(&mk, &params, "id1", &damaged).is_err());
        // Bound to its identity id, as the row is (its associated data).
        assert!(cache.unwrap_dek(&mk, &params, "id2", &row).is_err());
        assert_eq!(cache.identity_tag(&mk), crate::crypto::identity_tag(&mk));
        cache.clear();
        assert!(derived(&mut cache.state(), &mk).is_none());
        // A key that is not cached keeps nothing, and still unwraps.
        assert!(cache.unwrap_dek(&mk, &params, "id1", &row).unwrap() == dek);
        assert!(cache.state().entries.is_empty());
    }

    #[test]
    fn ttl_zero_never_caches() {
        let cache = KeyCache::new(0).unwrap();
        let pw = Secret::password("a password");
        let l = cache.lookup(&pw, 0);
        assert_eq!(cache.put(l.id, l.epoch, &key(1), 0), None);
    }
}
