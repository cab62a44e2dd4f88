//! `unlock(secret)` (API.md "Unlocking"): derive a secret's key once and tell an app's unlock
//! screen whether the vault knows it.
//!
//! The check costs one derivation and, with the key: one identity lookup (the identity `tag` is
//! indexed, FORMAT.md "Password identities"), then, only where records sealed with a master key
//! may exist, the records' key check values (FORMAT.md "Record value envelope": one HMAC each, no
//! trial decryption), stopping at the first record that opens. Soft-deleted and expired records
//! count: they still hold values sealed with the secret.

use super::{MAX_ATTEMPTS, Vault};
use crate::crypto::{DataKey, Envelope, MasterKey};
use crate::error::{Result, VaultError};
use crate::secret::Secret;
use crate::storage::{object_type, unlinked_records, write_epoch};
use zeroize::Zeroizing;

/// Records read per page while looking for one sealed with the secret's master key.
const SCAN_PAGE: usize = 1_000;

/// What one look at the vault found for a key.
enum Check {
    /// An identity or a record opens with the key.
    Opens,
    /// The vault holds no record and no identity: nothing to check against.
    Empty,
    /// Records or identities exist, and none opens with the key.
    Refused,
}

impl Vault {
    /// Derive `secret`'s key (once; it stays cached as after any other call) and check it against
    /// the vault: `true` when an identity or a stored record (soft-deleted and expired ones
    /// included) opens with it, `false` when the vault holds nothing yet to check against, and
    /// `INVALID_PASSWORD` otherwise.
    pub async fn unlock(&self, secret: &Secret) -> Result<bool> {
        self.unlock_counted(secret).await.map(|(opens, _)| opens)
    }

    /// [`Vault::unlock`], and how many records' key checks it computed (0 when an identity
    /// answered, 1 when the first record scanned opened).
    pub async fn unlock_counted(&self, secret: &Secret) -> Result<(bool, u64)> {
        self.ensure_open()?;
        // The key and the lock epoch it belongs to: a `lock()` between the derivation and any
        // later use of the key is seen (API.md: no call uses a key derived before a lock).
        let (mk, lock_epoch) = self.unlocked(secret).await?;
        let mut checked = 0u64;
        for _ in 0..MAX_ATTEMPTS {
            // A "no" is only given for a vault nobody wrote to while it was checked: a first
            // record or identity written meanwhile (another tab, another isolate) might have
            // been missed by a scan that had passed it, or made an empty vault non-empty.
            let writes = self.storage.meta_get(&write_epoch()).await?;
            let check = self.check_key(&mk, lock_epoch, &mut checked).await?;
            self.check_not_locked_since(lock_epoch, "unlock")?;
            match check {
                Check::Opens => return Ok((true, checked)),
                _ if self.storage.meta_get(&write_epoch()).await? != writes => continue,
                Check::Empty => return Ok((false, checked)),
                Check::Refused => return Err(VaultError::InvalidPassword { tokens: vec![] }),
            }
        }
        Err(VaultError::storage(format!(
            "other writers kept changing the vault while unlock checked the secret ({MAX_ATTEMPTS} rounds); try again"
        )))
    }

    /// One look at the vault for `mk`.
    async fn check_key(&self, mk: &MasterKey, epoch: u64, checked: &mut u64) -> Result<Check> {
        // With identities off too: a vault used with them on before still holds identities.
        if self.find_identity(mk, epoch).await?.is_some() {
            return Ok(Check::Opens);
        }
        // With identities on, a vault that never held a record sealed with a master key (FORMAT.md
        // "Vault state") has nothing more to check: its records all belong to identities.
        let unlinked_possible = !self.identities
            || self.storage.meta_get(&unlinked_records()).await?.as_deref() != Some("false");
        let has_records = if unlinked_possible {
            let master = DataKey::from_master(mk);
            match self.scan_for_master(&master, epoch, checked).await? {
                Scan::Opened => return Ok(Check::Opens),
                Scan::NoneOpened { any } => any,
            }
        } else {
            !self.storage.scan_records(None, 1).await?.is_empty()
        };
        if has_records || self.storage.meta_count(object_type::IDENTITY).await? > 0 {
            Ok(Check::Refused)
        } else {
            Ok(Check::Empty)
        }
    }

    /// Look for a record sealed with `master`, a page at a time, stopping at the first that opens.
    /// The 4-byte key check picks candidates; a candidate must also decrypt, so a key check that
    /// matches by chance (2^-32 per record) never lets a wrong secret through.
    async fn scan_for_master(
        &self,
        master: &DataKey,
        epoch: u64,
        checked: &mut u64,
    ) -> Result<Scan> {
        let mut after: Option<String> = None;
        let mut any = false;
        loop {
            let page = self
                .storage
                .scan_records(after.as_deref(), SCAN_PAGE)
                .await?;
            self.check_key_epoch(epoch)?;
            let Some(last) = page.last() else {
                return Ok(Scan::NoneOpened { any });
            };
            any = true;
            after = Some(last.id.clone());
            for record in &page {
                *checked += 1;
                // A damaged value belongs to nobody: it neither opens nor stops the scan.
                let Ok(envelope) = Envelope::parse(&record.value) else {
                    continue;
                };
                if envelope.was_sealed_with(master)
                    && let Ok(plaintext) = envelope.open(master, &record.token)
                {
                    drop(Zeroizing::new(plaintext));
                    return Ok(Scan::Opened);
                }
            }
            if page.len() < SCAN_PAGE {
                return Ok(Scan::NoneOpened { any });
            }
        }
    }
}

/// What a scan for records sealed with a master key found.
enum Scan {
    Opened,
    /// No record opens; `any`: the vault holds records at all.
    NoneOpened {
        any: bool,
    },
}
