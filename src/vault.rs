//! The vault: every operation of API.md over any [`Storage`].
//!
//! Opening, settings, key access and closing live here; token operations in `vault/tokens.rs`,
//! record queries and purges in `vault/records.rs`, identities and rekey in `identity.rs`,
//! snapshots in `snapshot.rs`.

mod records;
pub(crate) mod tokens;

pub use tokens::CreateOptions;

use crate::crypto::{DEFAULT_ITERATIONS, DataKey, KdfParams, MasterKey, derive_raw_key};
use crate::error::{Result, VaultError};
use crate::identity::Identity;
use crate::keycache::KeyCache;
use crate::platform::Platform;
use crate::policy::PasswordPolicy;
use crate::secret::Secret;
use crate::snapshot::Snapshot;
use crate::storage::{MetaKey, MetaRow, Storage, StorageError, StoredRecord, WriteOp, object_type};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

/// The id of the vault settings object in the meta store (FORMAT.md "Vault settings").
pub(crate) const SETTINGS_ID: &str = "settings";
pub(crate) const SETTING_KDF: &str = "kdf";
pub(crate) const SETTING_VERSION: &str = "version";
pub(crate) const SETTING_MIGRATED: &str = "migrated";

/// Default time a derived key stays cached: 15 minutes.
pub const DEFAULT_KEY_CACHE_TTL_MS: u64 = 900_000;

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
    /// Start from `export_snapshot` output.
    pub snapshot: Option<Vec<u8>>,
}

impl Default for VaultOptions {
    fn default() -> Self {
        VaultOptions {
            password_identity: false,
            kdf_iterations: DEFAULT_ITERATIONS,
            password_policy: PasswordPolicy::default(),
            key_cache_ttl_ms: DEFAULT_KEY_CACHE_TTL_MS,
            snapshot: None,
        }
    }
}

/// An open vault. All methods take `&self`: concurrent calls are safe, and no lock is held
/// across an `.await`.
pub struct Vault {
    pub(crate) storage: Box<dyn Storage>,
    pub(crate) kdf: KdfParams,
    pub(crate) identities: bool,
    pub(crate) policy: PasswordPolicy,
    keys: KeyCache,
    /// Serialises derivations so that 100 concurrent calls with one new password derive once.
    derive_lock: futures::lock::Mutex<()>,
    pub(crate) platform: Platform,
    closed: AtomicBool,
    derivations: AtomicU64,
}

impl std::fmt::Debug for Vault {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Vault")
            .field("kdf", &self.kdf)
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
        if let Some(bytes) = &options.snapshot {
            Snapshot::parse(bytes)?.import(&*storage).await?;
        }
        let kdf = load_or_create_settings(&*storage, options.kdf_iterations).await?;
        Ok(Vault {
            storage,
            kdf,
            identities: options.password_identity,
            policy: options.password_policy,
            keys: KeyCache::new(options.key_cache_ttl_ms)?,
            derive_lock: futures::lock::Mutex::new(()),
            platform,
            closed: AtomicBool::new(false),
            derivations: AtomicU64::new(0),
        })
    }

    /// Wipe every cached key from memory now. The next call with a password derives again.
    pub fn lock(&self) {
        self.keys.clear();
    }

    /// Close the vault: wipes keys and releases the backend. Every later call fails with
    /// `CLOSED`; closing twice is a no-op.
    pub async fn close(&self) {
        if !self.closed.swap(true, Ordering::SeqCst) {
            self.keys.clear();
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
        self.kdf.iterations
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

    /// The policy applies to passwords that encrypt, never to raw keys.
    pub(crate) fn check_policy(&self, secret: &Secret) -> Result<()> {
        match secret {
            Secret::Password(p) => self.policy.check(p),
            Secret::RawKey(_) => Ok(()),
        }
    }

    /// The master key of `secret`: from the cache, or derived once (FORMAT.md "Master key").
    pub(crate) async fn master_key(&self, secret: &Secret) -> Result<MasterKey> {
        let id = self.keys.id_of(secret);
        if let Some(key) = self.keys.get(&id, self.now()) {
            return Ok(key);
        }
        let _derivation = self.derive_lock.lock().await;
        // Another call may have derived it while this one waited.
        if let Some(key) = self.keys.get(&id, self.now()) {
            return Ok(key);
        }
        let key = match secret {
            Secret::Password(p) => self.platform.kdf.derive(p, &self.kdf).await?,
            Secret::RawKey(raw) => derive_raw_key(raw, &self.kdf),
        };
        self.derivations.fetch_add(1, Ordering::SeqCst);
        self.ensure_open()?;
        self.keys.put(id, &key, self.now());
        Ok(key)
    }

    /// The key new values of `secret` are sealed with, and what to write along with them:
    /// with identities on, the secret's identity (created on first use) and the record's link.
    pub(crate) async fn write_key(&self, mk: &MasterKey) -> Result<WriteKey> {
        if self.identities {
            let (identity, setup) = self.identity_or_create(mk).await?;
            Ok(WriteKey {
                setup,
                ..WriteKey::from_identity(identity)
            })
        } else {
            Ok(WriteKey {
                key: DataKey::from_master(mk),
                identity_id: None,
                setup: vec![],
            })
        }
    }

    pub(crate) async fn record_by_token(&self, token: &str) -> Result<Option<StoredRecord>> {
        Ok(self
            .storage
            .records_by_tokens(&[token.to_owned()])
            .await?
            .pop())
    }

    pub(crate) async fn record_by_id(&self, id: &str) -> Result<Option<StoredRecord>> {
        Ok(self.storage.records_by_ids(&[id.to_owned()]).await?.pop())
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
        let row = MetaRow::new(object_type::VAULT, SETTINGS_ID, key, value);
        Ok(self.storage.apply(vec![WriteOp::PutMeta(row)]).await?)
    }

    pub async fn get_vault_version(&self) -> Result<String> {
        Ok(self
            .get_vault_setting(SETTING_VERSION)
            .await?
            .unwrap_or_else(|| "1".to_owned()))
    }

    pub async fn set_vault_version(&self, version: &str) -> Result<()> {
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
        self.ensure_open()?;
        Snapshot::export(&*self.storage).await.map(|s| s.to_bytes())
    }
}

/// The key and extra writes for sealing new values of one secret.
pub(crate) struct WriteKey {
    pub key: DataKey,
    pub identity_id: Option<String>,
    /// Rows creating the identity, when this write is its first use.
    pub setup: Vec<WriteOp>,
}

impl WriteKey {
    pub(crate) fn from_identity(identity: Identity) -> Self {
        WriteKey {
            key: identity.dek,
            identity_id: Some(identity.id),
            setup: vec![],
        }
    }
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

/// Read the vault's KDF settings, creating them on first open. Creation inserts the rows only if
/// absent, atomically, so two tabs opening a new vault at once end with one salt.
async fn load_or_create_settings(storage: &dyn Storage, iterations: u32) -> Result<KdfParams> {
    for _ in 0..3 {
        // One round trip for the whole settings object.
        let settings = storage.meta_object(object_type::VAULT, SETTINGS_ID).await?;
        let has = |key: &str| settings.iter().find(|row| row.key.key == key);
        if let Some(kdf) = has(SETTING_KDF) {
            return KdfParams::from_json(&kdf.value).map_err(|e| {
                VaultError::storage(format!("the stored vault settings are damaged: {e}"))
            });
        }
        let params = KdfParams::generate(iterations)?;
        let mut batch = vec![WriteOp::InsertMeta(MetaRow::new(
            object_type::VAULT,
            SETTINGS_ID,
            SETTING_KDF,
            params.to_json(),
        ))];
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
        match storage.apply(batch).await {
            Ok(()) => return Ok(params),
            // Another opener created the settings first: use theirs.
            Err(StorageError::MetaTaken(_)) => continue,
            Err(e) => return Err(e.into()),
        }
    }
    Err(VaultError::storage(
        "could not create the vault settings: another writer keeps changing them",
    ))
}
