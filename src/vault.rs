//! The vault: every operation of API.md over any [`Storage`].
//!
//! Opening, settings, key access and closing live here; token operations in `vault/tokens.rs`,
//! record queries and purges in `vault/records.rs`, `unlock` in `vault/unlock.rs`, identities in
//! `vault/identity.rs`, rekeys and link migration in `vault/rekey.rs`, snapshots in `snapshot.rs`.

mod engine;
pub(crate) mod identity;
mod records;
mod rekey;
mod slots;
pub(crate) mod tokens;
mod unlock;

pub use engine::{SyncReport, SyncTransport};
pub use rekey::{RekeyObserver, RekeyOptions};

pub use records::PURGE_CHUNK;
pub use tokens::CreateOptions;

use crate::crypto::{DEFAULT_ITERATIONS, DataKey, KdfParams, MasterKey, derive_raw_key};
use crate::error::{Result, VaultError};
use crate::keycache::KeyCache;
use crate::platform::Platform;
use crate::policy::PasswordPolicy;
use crate::record::Record;
use crate::secret::Secret;
use crate::snapshot::Snapshot;
use crate::storage::{
    MetaKey, MetaRow, Optimistic, Stamp, Storage, StorageError, WriteOp, WriteTransaction,
    is_replicated, object_type, unlinked_records, write_epoch,
};
use crate::sync::{Hlc, Rev, Row, RowKey};
use identity::Identity;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

/// The id of the vault settings object in the meta store (FORMAT.md "Vault settings").
pub(crate) const SETTINGS_ID: &str = "settings";
pub(crate) const SETTING_KDF: &str = "kdf";
pub(crate) const SETTING_VERSION: &str = "version";
pub(crate) const SETTING_MIGRATED: &str = "migrated";

/// Default time a derived key stays cached: 15 minutes.
pub const DEFAULT_KEY_CACHE_TTL_MS: u64 = 900_000;

/// The default floor for an existing vault's PBKDF2 iterations: the smaller of this and the
/// `kdf_iterations` asked for (API.md `minKdfIterations`).
pub const DEFAULT_MIN_KDF_ITERATIONS: u32 = 100_000;

/// Attempts before a write that keeps meeting concurrent writers gives up. A random token
/// collides with probability below 2^-60 per attempt; identity races settle on the second.
pub(crate) const MAX_ATTEMPTS: usize = 8;

/// How a vault is opened (API.md `VaultOptions`; the backend is chosen by the caller).
#[derive(Debug, Clone)]
pub struct VaultOptions {
    /// Group passwords into identities (instant password changes, atomic rotation).
    pub password_identity: bool,
    /// PBKDF2 iterations for a new vault; an existing vault keeps its own.
    pub kdf_iterations: u32,
    pub password_policy: PasswordPolicy,
    /// How long derived keys stay in memory; 0 = never cache.
    pub key_cache_ttl_ms: u64,
    /// Refuse an existing or imported vault whose stored PBKDF2 iteration count is lower (the
    /// `kdf` row is not authenticated: anyone who can write the storage could lower it). `None`:
    /// the smaller of [`DEFAULT_MIN_KDF_ITERATIONS`] and `kdf_iterations`.
    pub min_kdf_iterations: Option<u32>,
    /// Start from `export_snapshot` output.
    pub snapshot: Option<Vec<u8>>,
}

impl VaultOptions {
    /// The KDF floor these options set (see [`VaultOptions::min_kdf_iterations`]).
    pub fn kdf_floor(&self) -> u32 {
        self.min_kdf_iterations
            .unwrap_or_else(|| DEFAULT_MIN_KDF_ITERATIONS.min(self.kdf_iterations))
    }
}

impl Default for VaultOptions {
    fn default() -> Self {
        VaultOptions {
            password_identity: false,
            kdf_iterations: DEFAULT_ITERATIONS,
            password_policy: PasswordPolicy::default(),
            key_cache_ttl_ms: DEFAULT_KEY_CACHE_TTL_MS,
            min_kdf_iterations: None,
            snapshot: None,
        }
    }
}

/// An open vault. All methods take `&self`: concurrent calls are safe, and no lock is held
/// across an `.await`.
pub struct Vault {
    pub(crate) storage: Box<dyn Storage>,
    /// The vault's KDF settings and their stored text; replaced only when an empty replica joins
    /// a sync server's vault.
    kdf: std::sync::RwLock<(KdfParams, String)>,
    /// Whether the KDF settings are final for this instance: a value was sealed in the vault
    /// (its write epoch exists) when this instance last looked. Until then another instance on
    /// the same store (a tab) may join a sync server's vault and replace them (a join needs an
    /// empty vault, so never after), so key access reads them again first and sealing writes
    /// expect them.
    kdf_settled: AtomicBool,
    pub(crate) identities: bool,
    pub(crate) policy: PasswordPolicy,
    keys: Arc<KeyCache>,
    /// Serialises derivations so that 100 concurrent calls with one new password derive once.
    derive_lock: futures::lock::Mutex<()>,
    pub(crate) platform: Platform,
    closed: AtomicBool,
    derivations: AtomicU64,
    /// Mints the revision of every batch this instance writes (`crate::sync`, "Revisions"). Its
    /// node id is random per open, so two tabs on one database never mint the same revision.
    clock: Hlc,
    /// The lowest PBKDF2 iteration count this vault accepts from elsewhere (a sync server's).
    kdf_floor: u32,
}

impl std::fmt::Debug for Vault {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Vault")
            .field("kdf", &self.kdf())
            .field("identities", &self.identities)
            .field("closed", &self.closed.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

impl Vault {
    /// Open (or create) the vault held by `storage`, with the host services of this platform.
    pub async fn open(storage: Box<dyn Storage>, options: VaultOptions) -> Result<Self> {
        Self::open_with(storage, options, Platform::default()).await
    }

    /// Open with explicit host services (a WebCrypto KDF, a test clock, ...).
    pub async fn open_with(
        storage: Box<dyn Storage>,
        options: VaultOptions,
        platform: Platform,
    ) -> Result<Self> {
        crate::crypto::check_iterations(u64::from(options.kdf_iterations))?;
        let floor = options.kdf_floor();
        crate::crypto::check_iterations(u64::from(floor)).map_err(|_| {
            VaultError::invalid(format!(
                "minKdfIterations must be an integer from {} to {}",
                crate::crypto::MIN_ITERATIONS,
                crate::crypto::MAX_ITERATIONS
            ))
        })?;
        if let Some(bytes) = &options.snapshot {
            let snapshot = Snapshot::parse(bytes)?;
            check_kdf_floor(&snapshot.kdf()?, floor, "the snapshot")?;
            snapshot.import(&*storage).await?;
        }
        let (kdf, kdf_text) =
            load_or_create_settings(&*storage, options.kdf_iterations, floor).await?;
        check_kdf_floor(&kdf, floor, "this vault")?;
        Ok(Vault {
            storage,
            kdf: std::sync::RwLock::new((kdf, kdf_text)),
            kdf_settled: AtomicBool::new(false),
            identities: options.password_identity,
            policy: options.password_policy,
            keys: Arc::new(KeyCache::new(options.key_cache_ttl_ms)?),
            derive_lock: futures::lock::Mutex::new(()),
            platform,
            closed: AtomicBool::new(false),
            derivations: AtomicU64::new(0),
            clock: Hlc::new()?,
            kdf_floor: floor,
        })
    }

    /// Wipe every cached key from memory now. The next call with a password derives again; a
    /// derivation already running is not cached, and a rekey or migration that began before the
    /// lock stops without changing anything (`ABORTED`).
    pub fn lock(&self) {
        self.keys.clear();
        self.platform.scheduler.cancel_pending();
    }

    /// The lock epoch: multi-step operations compare it before they commit.
    pub(crate) fn lock_epoch(&self) -> u64 {
        self.keys.epoch()
    }

    /// `ABORTED` if [`Vault::lock`] ran since `epoch`: keys derived before a lock may not be used.
    pub(crate) fn check_not_locked_since(&self, epoch: u64, what: &'static str) -> Result<()> {
        if self.keys.epoch() == epoch {
            Ok(())
        } else {
            Err(VaultError::LockedDuring(what))
        }
    }

    /// Close the vault: wipes keys and releases the backend. Every later call fails with
    /// `CLOSED`; closing twice is a no-op.
    pub async fn close(&self) {
        if !self.closed.swap(true, Ordering::SeqCst) {
            self.keys.clear();
            self.platform.scheduler.cancel_pending();
            self.storage.close().await;
        }
    }

    /// Whether [`Vault::close`] was called.
    pub fn is_closed(&self) -> bool {
        self.closed.load(Ordering::SeqCst)
    }

    /// How many master keys this vault has derived (PBKDF2 or raw-key HKDF) since it opened.
    /// A diagnostic: it shows the key cache and identity rekeys at work.
    pub fn key_derivations(&self) -> u64 {
        self.derivations.load(Ordering::SeqCst)
    }

    /// The KDF iteration count this vault was created with.
    pub fn kdf_iterations(&self) -> u32 {
        self.kdf().iterations
    }

    /// The vault's KDF settings.
    pub(crate) fn kdf(&self) -> KdfParams {
        self.kdf
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .0
            .clone()
    }

    /// Until the KDF settings are final ([`Vault::kdf_settled`]): read them again, and take them
    /// if another instance on this store replaced them (it joined a sync server's vault).
    async fn refresh_kdf(&self) -> Result<()> {
        if self.kdf_settled.load(Ordering::Acquire) {
            return Ok(());
        }
        if let Some(text) = self.storage.meta_get(&kdf_key()).await?
            && self.kdf_text() != text
        {
            self.replace_kdf(stored_kdf(&text)?, text);
        }
        // Every batch that seals a value writes the write epoch (and a deleted record leaves a
        // tombstone): once it exists the store is never empty again, and no join can happen.
        if self.storage.meta_get(&write_epoch()).await?.is_some() {
            self.settle_kdf();
        }
        Ok(())
    }

    /// A batch sealed under this instance's KDF settings (and expecting them) committed: the
    /// vault holds a record now, so they are final.
    pub(crate) fn settle_kdf(&self) {
        self.kdf_settled.store(true, Ordering::Release);
    }

    fn kdf_text(&self) -> String {
        self.kdf
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .1
            .clone()
    }

    /// Take another vault's KDF settings (an empty replica joining a sync server's vault): every
    /// cached key was derived with the old salt, so they go, and derivations already running
    /// start again.
    pub(crate) fn replace_kdf(&self, kdf: KdfParams, text: String) {
        *self
            .kdf
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = (kdf, text);
        self.keys.clear();
    }

    pub(crate) fn ensure_open(&self) -> Result<()> {
        if self.is_closed() {
            Err(VaultError::Closed)
        } else {
            Ok(())
        }
    }

    pub(crate) fn now(&self) -> i64 {
        self.platform.clock.now_ms()
    }

    /// The stamp of a batch about to be written: a fresh revision, ordered after every revision
    /// of `read` (the stored versions the batch was planned from, so the change is causally after
    /// what it replaces even when another instance with a faster clock wrote them), and now.
    pub(crate) fn stamp_after<'r>(
        &self,
        read: impl IntoIterator<Item = &'r Record>,
    ) -> Result<Stamp> {
        for record in read {
            self.clock.observe(record.revs.max());
        }
        let at = self.now();
        Ok(Stamp {
            rev: self.clock.tick(at)?,
            at,
        })
    }

    /// Order this instance's next revisions after every revision of `record`, read before a
    /// write that depends on it.
    pub(crate) fn observe(&self, record: &Record) {
        self.clock.observe(record.revs.max());
    }

    /// The stamp of a batch that depends on no record's revisions.
    pub(crate) fn stamp(&self) -> Result<Stamp> {
        self.stamp_after(std::iter::empty())
    }

    /// The stamp of `batch`, ordered after the revisions the replicated meta rows it puts have
    /// now ([`meta_puts`], read through `reads`: none for most batches, one read for a setting,
    /// a re-wrap or a vacant first slot). Another instance on the same store (a tab that synced)
    /// may have stored those rows with revisions this clock has not seen, and a write stamped
    /// before them would lose to the very rows it replaces, on every replica (SYNC.md 4): a
    /// password change undone by the next sync. Boxed: the callers' futures keep a pointer
    /// across it rather than its state (0.3 kB less in the IndexedDB engine).
    pub(crate) fn stamp_for<'a>(
        &'a self,
        reads: &'a dyn WriteTransaction,
        batch: &'a [WriteOp],
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<Stamp>> + 'a>> {
        Box::pin(async move {
            let keys = meta_puts(batch);
            if !keys.is_empty() {
                for stored in reads.versions(&keys).await?.iter().flatten() {
                    if let Row::Meta { version, .. } = &stored.row {
                        self.clock.observe(version.rev());
                    }
                }
            }
            self.stamp()
        })
    }

    /// The policy applies to passwords that encrypt, never to raw keys.
    pub(crate) fn check_policy(&self, secret: &Secret) -> Result<()> {
        match secret {
            Secret::Password(p) => self.policy.check(p),
            Secret::RawKey(_) => Ok(()),
        }
    }

    /// The master key of `secret`: from the cache, or derived once (FORMAT.md "Master key").
    pub(crate) async fn master_key(&self, secret: &Secret) -> Result<MasterKey> {
        self.unlocked(secret).await.map(|(key, _)| key)
    }

    /// The master key of `secret` and the lock epoch it belongs to.
    ///
    /// API.md: after `lock()` returns, no call uses a key derived before it. Two rules keep it:
    ///
    /// - a derivation that a `lock()` overtakes is thrown away and made again (the caller still
    ///   holds the secret, and nothing was done with the key yet, so deriving again costs time
    ///   only), and it is never cached;
    /// - an operation that holds a key checks, after every `.await` and before it uses the key
    ///   again, that the epoch is still the one returned here ([`Vault::check_key_epoch`]), and
    ///   otherwise rejects `ABORTED` having changed nothing. It does not derive again: the lock
    ///   may be the user walking away, and an operation that began before it silently putting
    ///   a fresh key back in the cache would undo the lock. Writes check right before they
    ///   seal, so a write that was already sealed may still commit; it uses no key doing so.
    pub(crate) async fn unlocked(&self, secret: &Secret) -> Result<(MasterKey, u64)> {
        self.refresh_kdf().await?;
        for _ in 0..MAX_ATTEMPTS {
            let lookup = self.keys.lookup(secret, self.now());
            if let Some(key) = lookup.key {
                return Ok((key, lookup.epoch));
            }
            let _derivation = self.derive_lock.lock().await;
            // Another call may have derived it while this one waited.
            let lookup = self.keys.lookup(secret, self.now());
            if let Some(key) = lookup.key {
                return Ok((key, lookup.epoch));
            }
            let key = match secret {
                Secret::Password(p) => self.platform.kdf.derive(p, &self.kdf()).await?,
                Secret::RawKey(raw) => derive_raw_key(raw.as_bytes(), &self.kdf()),
            };
            self.derivations.fetch_add(1, Ordering::SeqCst);
            self.ensure_open()?;
            if self.keys.epoch() != lookup.epoch {
                continue;
            }
            if let Some(expires_at) = self.keys.put(lookup.id, lookup.epoch, &key, self.now()) {
                let keys = Arc::downgrade(&self.keys);
                let clock = self.platform.clock.now_ms();
                let delay = u64::try_from(expires_at.saturating_sub(clock)).unwrap_or(0);
                let now = self.platform.clock_handle();
                self.platform.scheduler.after(
                    delay,
                    Box::new(move || {
                        if let Some(keys) = keys.upgrade() {
                            // Timers may fire a little early by the wall clock: everything due
                            // by the time this one was set for is expired.
                            keys.sweep(now().max(expires_at));
                        }
                    }),
                );
            }
            return Ok((key, lookup.epoch));
        }
        Err(VaultError::LockedDuring("the key derivation"))
    }

    /// `secret`'s key if it is cached and final (the KDF settings settled), as
    /// [`Vault::unlocked`] would return it, without ever deriving.
    pub(crate) fn cached_key(&self, secret: &Secret) -> Option<(MasterKey, u64)> {
        if !self.kdf_settled.load(Ordering::Acquire) {
            return None;
        }
        let lookup = self.keys.lookup(secret, self.now());
        lookup.key.map(|key| (key, lookup.epoch))
    }

    /// Drop `secret`'s cached key (a secret removed from the vault).
    pub(crate) fn forget_key(&self, secret: &Secret) {
        self.keys.forget(secret);
    }

    /// `ABORTED` if [`Vault::lock`] ran since a key of `epoch` was obtained: an operation calls
    /// it after every `.await` before it uses such a key again (see [`Vault::unlocked`]).
    pub(crate) fn check_key_epoch(&self, epoch: u64) -> Result<()> {
        self.check_not_locked_since(epoch, "this call")
    }

    /// The key new values of `secret` are sealed with, and what to write along with them:
    /// with identities on, the secret's identity (created on first use) and the record's link.
    /// `epoch` is the lock epoch `mk` belongs to: `ABORTED` if a `lock()` ran since.
    pub(crate) async fn write_key(&self, mk: &MasterKey, epoch: u64) -> Result<WriteKey> {
        self.check_key_epoch(epoch)?;
        let mut key = if self.identities {
            let (identity, setup) = self.identity_or_create(mk, epoch).await?;
            let mut key = WriteKey::from_identity(identity, self.keys.identity_tag(mk));
            if !setup.is_empty() {
                key.guard = setup;
            }
            key
        } else {
            WriteKey::master(self.keys.master_data_key(mk))
        };
        // `mk` was derived with these settings (replacing them moves the key epoch, checked
        // above); until they are final, the batch commits only while they are still the store's.
        if !self.kdf_settled.load(Ordering::Acquire) {
            key.guard.push(WriteOp::ExpectMeta {
                key: kdf_key(),
                value: Some(self.kdf_text()),
            });
        }
        Ok(key)
    }

    /// [`Vault::write_key`] for a create: with identities on, the identity `mk`'s last create
    /// committed with, without reading it (one round trip less per create), guarded by its
    /// slot's tag *and* wrapped DEK rows, so the batch commits only while the slot still holds
    /// this secret and that DEK (a rekey, a rotation or a `secretRemove` elsewhere changes or
    /// removes them). A failed batch makes the create forget it and read it again. Until the
    /// KDF settings settle, creates read, as their guard does.
    pub(crate) async fn insert_key(&self, mk: &MasterKey, epoch: u64) -> Result<WriteKey> {
        if self.identities
            && self.kdf_settled.load(Ordering::Acquire)
            && let Some((identity, wrapped)) = self.keys.known_identity(mk, &self.kdf())
        {
            self.check_key_epoch(epoch)?;
            let dek_row = identity::wrapped_dek_key(&identity.slot);
            let mut key = WriteKey::from_identity(identity, self.keys.identity_tag(mk));
            key.guard.push(WriteOp::ExpectMeta {
                key: dek_row,
                value: Some(wrapped),
            });
            return Ok(key);
        }
        self.write_key(mk, epoch).await
    }

    pub(crate) async fn record_by_token(&self, token: &str) -> Result<Option<Record>> {
        Ok(self
            .storage
            .records_by_tokens(&[token.to_owned()])
            .await?
            .pop()
            .flatten())
    }

    pub(crate) async fn record_by_id(&self, id: &str) -> Result<Option<Record>> {
        Ok(self
            .storage
            .records_by_ids(&[id.to_owned()])
            .await?
            .pop()
            .flatten())
    }

    // ---- settings (API.md "Vault settings") ----

    /// A vault setting, or `None`.
    pub async fn get_vault_setting(&self, key: &str) -> Result<Option<String>> {
        self.ensure_open()?;
        check_setting_key(key)?;
        Ok(self
            .storage
            .meta_get(&MetaKey::new(object_type::VAULT, SETTINGS_ID, key))
            .await?)
    }

    /// Set a vault setting. `kdf` is reserved: changing it would make every value unreadable.
    pub async fn set_vault_setting(&self, key: &str, value: &str) -> Result<()> {
        self.ensure_open()?;
        check_setting_key(key)?;
        if key == SETTING_KDF {
            return Err(VaultError::invalid(
                "the \"kdf\" setting is managed by the vault and cannot be changed; changing it would make every value unreadable",
            ));
        }
        let batch = vec![WriteOp::PutMeta(MetaRow::new(
            object_type::VAULT,
            SETTINGS_ID,
            key,
            value,
        ))];
        let stamp = self.stamp_for(&Optimistic(&*self.storage), &batch).await?;
        Ok(self.storage.apply(stamp, batch).await?)
    }

    pub async fn get_vault_version(&self) -> Result<String> {
        Ok(self
            .get_vault_setting(SETTING_VERSION)
            .await?
            .unwrap_or_else(|| "1".to_owned()))
    }

    pub async fn set_vault_version(&self, version: &str) -> Result<()> {
        self.ensure_open()?;
        if version.is_empty() {
            return Err(VaultError::invalid(
                "the vault version must be a non-empty string",
            ));
        }
        self.set_vault_setting(SETTING_VERSION, version).await
    }

    pub async fn is_vault_migrated(&self) -> Result<bool> {
        Ok(self.get_vault_setting(SETTING_MIGRATED).await?.as_deref() == Some("true"))
    }

    pub async fn mark_vault_migrated(&self) -> Result<()> {
        self.set_vault_setting(SETTING_MIGRATED, "true").await
    }

    // ---- snapshots (FORMAT.md "Snapshot") ----

    /// The whole vault as snapshot JSON bytes; values stay encrypted.
    pub async fn export_snapshot(&self) -> Result<Vec<u8>> {
        self.export_snapshot_counted().await.map(|(bytes, _)| bytes)
    }

    /// The snapshot bytes and how many records they hold.
    pub async fn export_snapshot_counted(&self) -> Result<(Vec<u8>, u64)> {
        self.ensure_open()?;
        let snapshot = Snapshot::export(&*self.storage).await?;
        Ok((snapshot.to_bytes()?, snapshot.records.len() as u64))
    }
}

/// The key new values of one secret are sealed with, and the rows that must be written with them.
#[derive(Clone)]
pub(crate) struct WriteKey {
    pub key: DataKey,
    pub identity_id: Option<String>,
    /// Ops that make the batch valid only for this key: the rows creating the secret's identity
    /// on its first use, or the check that the identity's slot that found it still has this
    /// secret's tag (a rekey or `secretRemove` that committed meanwhile moved or removed it, and
    /// nothing may be sealed under it then; while the slot exists, so does its identity).
    pub guard: Vec<WriteOp>,
    /// The slot object through which the identity was found: a create that commits remembers
    /// it ([`KeyCache::remember_writes`](crate::keycache::KeyCache::remember_writes)).
    pub slot: Option<String>,
}

impl WriteKey {
    /// Sealing with the master key (identities off), as `DataKey::from_master` gives it.
    pub(crate) fn master(key: DataKey) -> Self {
        WriteKey {
            key,
            identity_id: None,
            guard: vec![],
            slot: None,
        }
    }

    /// Sealing with `identity`'s DEK, found by the secret whose identity tag is `tag`.
    pub(crate) fn from_identity(identity: Identity, tag: String) -> Self {
        let guard = vec![identity::expect_tag(&identity.slot, tag)];
        WriteKey {
            key: identity.dek,
            identity_id: Some(identity.id),
            guard,
            slot: Some(identity.slot),
        }
    }

    /// The ops a batch sealing values with this key starts with: its guard, a fresh write epoch
    /// and, for values sealed with a master key, the mark that unlinked records exist.
    pub(crate) fn batch_ops(&self) -> Result<Vec<WriteOp>> {
        let mut ops = self.guard.clone();
        ops.push(new_write_epoch()?);
        if self.identity_id.is_none() {
            ops.push(WriteOp::PutMeta(MetaRow {
                key: unlinked_records(),
                value: "true".into(),
            }));
        }
        Ok(ops)
    }
}

/// A new value for the write epoch row (see [`write_epoch`]): 16 random bytes, in hex.
pub(crate) fn new_write_epoch() -> Result<WriteOp> {
    Ok(WriteOp::PutMeta(MetaRow {
        key: write_epoch(),
        value: random_tag()?,
    }))
}

/// 16 random bytes in hex: a value no other writer stores, for a guard (`ExpectMeta`) to tell
/// its writer's row from another's. Stored in the clear, so drawn from the pool of public
/// random bytes: every write that seals a value renews the write epoch with one, and a call of
/// its own into the platform generator was about a tenth of an awaited create in Node.
pub(crate) fn random_tag() -> Result<String> {
    let mut tag = [0u8; 16];
    crate::crypto::public_random(&mut tag)?;
    Ok(base16ct::lower::encode_string(&tag))
}

/// Refuse a vault (stored or imported) whose PBKDF2 iteration count is below the floor: the
/// `kdf` row is not authenticated, so storage write access alone could weaken it.
fn check_kdf_floor(kdf: &KdfParams, floor: u32, whose: &str) -> Result<()> {
    if kdf.iterations >= floor {
        return Ok(());
    }
    Err(VaultError::invalid(format!(
        "{whose} derives keys with {} PBKDF2 iterations, fewer than minKdfIterations ({floor}); \
         someone with write access to its storage may have weakened it. If you created it with \
         {} iterations yourself, open it with {{ minKdfIterations: {} }}",
        kdf.iterations, kdf.iterations, kdf.iterations
    )))
}

fn check_setting_key(key: &str) -> Result<()> {
    if key.is_empty() {
        Err(VaultError::invalid(
            "a setting key must be a non-empty string",
        ))
    } else {
        Ok(())
    }
}

/// The key of the vault's KDF settings row (a local row: never replicated).
pub(crate) fn kdf_key() -> MetaKey {
    MetaKey::new(object_type::VAULT, SETTINGS_ID, SETTING_KDF)
}

/// The KDF settings a store holds; damaged ones are the store's fault (`STORAGE`).
fn stored_kdf(text: &str) -> Result<KdfParams> {
    KdfParams::from_json(text)
        .map_err(|e| VaultError::storage(format!("the stored vault settings are damaged: {e}")))
}

/// Read the vault's KDF settings, creating them on first open. Creation inserts the rows only if
/// absent, atomically, so two tabs opening a new vault at once end with one salt.
async fn load_or_create_settings(
    storage: &dyn Storage,
    iterations: u32,
    floor: u32,
) -> Result<(KdfParams, String)> {
    for _ in 0..3 {
        // One round trip for the whole settings object.
        let settings = storage.meta_object(object_type::VAULT, SETTINGS_ID).await?;
        let has = |key: &str| settings.iter().find(|row| row.key.key == key);
        if let Some(kdf) = has(SETTING_KDF) {
            return Ok((stored_kdf(&kdf.value)?, kdf.value.clone()));
        }
        // Refused before anything is written: a new vault below its own floor is the options'
        // mistake, not a weakened store (`check_kdf_floor`).
        if iterations < floor {
            return Err(VaultError::invalid(format!(
                "kdfIterations ({iterations}) is below minKdfIterations ({floor}) for a new vault: raise kdfIterations or lower minKdfIterations"
            )));
        }
        let params = KdfParams::generate(iterations)?;
        let text = params.to_json();
        let mut batch = vec![WriteOp::InsertMeta(MetaRow::new(
            object_type::VAULT,
            SETTINGS_ID,
            SETTING_KDF,
            text.clone(),
        ))];
        // A new vault has no record, so none is unlinked: identity rekeys need not scan.
        batch.push(WriteOp::PutMeta(MetaRow {
            key: unlinked_records(),
            value: "false".into(),
        }));
        for (key, default) in [(SETTING_VERSION, "1"), (SETTING_MIGRATED, "false")] {
            if has(key).is_none() {
                batch.push(WriteOp::InsertMeta(MetaRow::new(
                    object_type::VAULT,
                    SETTINGS_ID,
                    key,
                    default,
                )));
            }
        }
        // The defaults are no replica's choice: revision ZERO, so any setting a sync brings in
        // (the server's vault, which this replica joins) supersedes them.
        let defaults = Stamp {
            rev: Rev::ZERO,
            at: 0,
        };
        match storage.apply(defaults, batch).await {
            Ok(()) => return Ok((params, text)),
            // Another opener created the settings first: use theirs.
            Err(StorageError::MetaTaken(_)) => continue,
            Err(e) => return Err(e.into()),
        }
    }
    Err(VaultError::storage(
        "could not create the vault settings: another writer keeps changing them",
    ))
}

/// The replicated meta rows `batch` puts over whatever version they have (settings, identity and
/// slot rows): see [`Vault::stamp_for`]. Inserts are left out: they write new keys.
pub(crate) fn meta_puts(batch: &[WriteOp]) -> Vec<RowKey> {
    batch
        .iter()
        .filter_map(|op| match op {
            WriteOp::PutMeta(row) | WriteOp::PutSharedMeta(row) if is_replicated(&row.key) => {
                Some(RowKey::Meta(row.key.clone()))
            }
            _ => None,
        })
        .collect()
}
