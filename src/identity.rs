//! Password identities (FORMAT.md "Password identities"), bulk rekey and link migration.
//!
//! With identities on, each secret maps (by its tag) to an identity holding a random data key
//! (DEK) wrapped under the secret. Records are sealed with the DEK and linked to the identity, so
//! changing a password re-wraps one DEK instead of re-encrypting every record.

use crate::crypto::{
    DataKey, Envelope, MasterKey, identity_tag, new_identity_id, seal_value, unwrap_dek, wrap_dek,
};
use crate::error::{Result, VaultError};
use crate::secret::Secret;
use crate::storage::{
    LINK_KEY, MetaRow, StorageError, StoredRecord, WriteOp, object_type, scan_pages,
};
use crate::vault::Vault;
use crate::vault::tokens::{link_row, prune_identity};
use zeroize::Zeroizing;

const TAG_KEY: &str = "tag";
const DEK_KEY: &str = "dek";

/// Records scanned per page when looking for a secret's records by key check.
const SCAN_PAGE: usize = 500;
/// Records re-encrypted between two chances for the host to run (progress, abort, UI).
const YIELD_EVERY: usize = 64;

/// The writes of one rekey, applied in one atomic batch at the end.
#[derive(Default)]
struct RekeyPlan {
    batch: Vec<WriteOp>,
    moved: u64,
}

fn cancelled(observer: Option<&dyn RekeyObserver>) -> bool {
    observer.is_some_and(|o| o.is_cancelled())
}

/// An identity, unlocked.
pub(crate) struct Identity {
    pub id: String,
    pub dek: DataKey,
}

/// Reports progress of a rekey and lets the caller cancel it before it commits.
pub trait RekeyObserver {
    /// `done` of `total` records processed.
    fn progress(&self, done: u64, total: u64);
    /// Checked between records and right before the commit; `true` aborts with `ABORTED`.
    fn is_cancelled(&self) -> bool;
}

/// Options of [`Vault::bulk_rekey`].
#[derive(Default)]
pub struct RekeyOptions<'a> {
    /// Re-encrypt under a fresh data key even when a re-wrap would do.
    pub rotate: bool,
    pub observer: Option<&'a dyn RekeyObserver>,
}

fn identity_rows(id: &str, mk: &MasterKey, vault: &Vault, dek: &DataKey) -> Result<[MetaRow; 2]> {
    Ok([
        MetaRow::new(object_type::IDENTITY, id, TAG_KEY, identity_tag(mk)),
        MetaRow::new(
            object_type::IDENTITY,
            id,
            DEK_KEY,
            wrap_dek(mk, &vault.kdf, id, dek)?,
        ),
    ])
}

impl Vault {
    /// The identity of `mk`, if it has one: one tag computation and one storage lookup.
    pub(crate) async fn find_identity(&self, mk: &MasterKey) -> Result<Option<Identity>> {
        let rows = self
            .storage
            .meta_find(object_type::IDENTITY, TAG_KEY, &identity_tag(mk))
            .await?;
        let Some(id) = rows.first().map(|r| r.key.object_id.clone()) else {
            return Ok(None);
        };
        let wrapped = rows.iter().find(|r| r.key.key == DEK_KEY).ok_or_else(|| {
            VaultError::storage(format!(
                "identity {id} has no data key row; the vault is damaged"
            ))
        })?;
        let dek = unwrap_dek(mk, &self.kdf, &id, &wrapped.value)?;
        Ok(Some(Identity { id, dek }))
    }

    /// The identity of `mk`, or a new one with the rows that create it. Creation inserts the tag
    /// row, which storage keeps unique: if another writer creates the identity first, the batch
    /// fails with `UniqueValueTaken` and the caller looks again.
    pub(crate) async fn identity_or_create(
        &self,
        mk: &MasterKey,
    ) -> Result<(Identity, Vec<WriteOp>)> {
        if let Some(identity) = self.find_identity(mk).await? {
            return Ok((identity, vec![]));
        }
        self.new_identity(mk)
    }

    fn new_identity(&self, mk: &MasterKey) -> Result<(Identity, Vec<WriteOp>)> {
        let identity = Identity {
            id: new_identity_id()?,
            dek: DataKey::generate()?,
        };
        let setup = identity_rows(&identity.id, mk, self, &identity.dek)?
            .into_iter()
            .map(WriteOp::InsertMeta)
            .collect();
        Ok((identity, setup))
    }

    /// Move every record of `old` to `new` (API.md "Password identities and rekey"). Atomic:
    /// either every record opens with `new` afterwards, or nothing changed (also on abort).
    /// Returns how many records of `old` now open with `new`.
    ///
    /// With identities on, `old` must have an identity, and only its records move (one re-wrap
    /// when `new` has no identity). With identities off, `old`'s records sealed with its master
    /// key are found by key check; if `old` also has an identity (the vault was used with
    /// identities on before), that identity moves too, in the same atomic write, so no record of
    /// `old` is left behind.
    pub async fn bulk_rekey(
        &self,
        old: &Secret,
        new: &Secret,
        options: &RekeyOptions<'_>,
    ) -> Result<u64> {
        self.ensure_open()?;
        self.check_policy(new)?;
        let observer = options.observer;
        let mk_old = self.master_key(old).await?;
        let mk_new = self.master_key(new).await?;
        if cancelled(observer) {
            return Err(VaultError::Aborted);
        }
        let source = self.find_identity(&mk_old).await?;
        if self.identities && source.is_none() {
            return Err(VaultError::IdentityNotFound);
        }
        let mut plan = RekeyPlan::default();
        if let Some(source) = source {
            self.plan_identity_move(source, &mk_new, options, &mut plan)
                .await?;
        }
        if !self.identities {
            self.plan_key_check_move(&mk_old, &mk_new, observer, &mut plan)
                .await?;
        }
        if cancelled(observer) {
            return Err(VaultError::Aborted);
        }
        if !plan.batch.is_empty() {
            self.apply_rekey(plan.batch).await?;
        }
        Ok(plan.moved)
    }

    /// The writes that move `source`'s records to the identity of `mk_new`: a re-wrap of the DEK
    /// when that secret has no identity (O(1)), else re-encryption and relinking.
    async fn plan_identity_move(
        &self,
        source: Identity,
        mk_new: &MasterKey,
        options: &RekeyOptions<'_>,
        plan: &mut RekeyPlan,
    ) -> Result<()> {
        let observer = options.observer;
        let existing = self.find_identity(mk_new).await?;
        let links = self
            .storage
            .meta_find(object_type::RECORD, LINK_KEY, &source.id)
            .await?;
        let linked = links.len() as u64;

        let (target, setup) = match existing {
            Some(same) if same.id == source.id && !options.rotate => {
                // The new secret already opens this identity: nothing to move.
                report(observer, linked, linked);
                plan.moved += linked;
                return Ok(());
            }
            Some(other) if other.id != source.id => (other, vec![]),
            None if !options.rotate => {
                // O(1) whatever the record count: the DEK stays, only its wrapping changes.
                plan.batch.extend(
                    identity_rows(&source.id, mk_new, self, &source.dek)?
                        .into_iter()
                        .map(WriteOp::PutMeta),
                );
                report(observer, linked, linked);
                plan.moved += linked;
                return Ok(());
            }
            // Rotation (or the same secret asking for a fresh key): a new identity and DEK.
            _ => self.new_identity(mk_new)?,
        };

        let ids: Vec<String> = links
            .iter()
            .filter_map(|row| row.key.object_id.strip_prefix("r_").map(str::to_owned))
            .collect();
        let records = self.storage.records_by_ids(&ids).await?;
        let total = records.len() as u64;
        let now = self.now();
        for (done, stored) in records.iter().enumerate() {
            let record = &stored.record;
            let plaintext = Zeroizing::new(
                Envelope::parse(&record.value)?
                    .open(&source.dek, &record.token)
                    .map_err(|e| e.for_token(&record.token))?,
            );
            let mut moved = record.clone();
            moved.value = seal_value(&target.dek, &record.token, &plaintext)?;
            moved.updated_at = now;
            plan.batch.push(WriteOp::UpdateRecord {
                record: moved,
                expect_value: Some(record.value.clone()),
            });
            plan.batch
                .push(WriteOp::PutMeta(link_row(&record.id, &target.id)));
            self.checkpoint(observer, done + 1, total).await?;
        }
        // The source identity goes once no link points at it; its tag row must be gone before
        // a rotated identity of the same secret inserts the same tag.
        plan.batch.push(prune_identity(&source.id));
        plan.batch.extend(setup);
        plan.moved += total;
        Ok(())
    }

    /// The writes that move the unlinked records sealed with `mk_old`, found by key check value
    /// (one HMAC each, no trial decryption), to `mk_new`.
    async fn plan_key_check_move(
        &self,
        mk_old: &MasterKey,
        mk_new: &MasterKey,
        observer: Option<&dyn RekeyObserver>,
        plan: &mut RekeyPlan,
    ) -> Result<()> {
        let old_key = DataKey::from_master(mk_old);
        let new_key = DataKey::from_master(mk_new);
        let found = self.unlinked_records_of(&old_key, observer).await?;
        let total = found.len() as u64;
        let now = self.now();
        for (done, (record, envelope)) in found.into_iter().enumerate() {
            let plaintext = Zeroizing::new(
                envelope
                    .open(&old_key, &record.token)
                    .map_err(|e| e.for_token(&record.token))?,
            );
            let mut moved = record.clone();
            moved.value = seal_value(&new_key, &record.token, &plaintext)?;
            moved.updated_at = now;
            plan.batch.push(WriteOp::UpdateRecord {
                record: moved,
                expect_value: Some(record.value),
            });
            self.checkpoint(observer, done + 1, total).await?;
        }
        plan.moved += total;
        Ok(())
    }

    /// Link every unlinked record that opens with `secret` to its identity (re-encrypting it
    /// under the identity's key), in one atomic batch. Returns how many moved.
    pub async fn migrate_record_links(&self, secret: &Secret) -> Result<u64> {
        self.ensure_open()?;
        if !self.identities {
            return Err(VaultError::IdentityDisabled("migrateRecordLinks"));
        }
        let mk = self.master_key(secret).await?;
        let key = DataKey::from_master(&mk);
        let mut opened = Vec::new();
        for (record, envelope) in self.unlinked_records_of(&key, None).await? {
            let plaintext = envelope
                .open(&key, &record.token)
                .map_err(|e| e.for_token(&record.token))?;
            opened.push((
                StoredRecord {
                    record,
                    identity_id: None,
                },
                Zeroizing::new(plaintext),
            ));
        }
        if opened.is_empty() {
            return Ok(0);
        }
        self.relink(&mk, &opened).await.map(|n| n as u64)
    }

    /// Every record without an identity link whose key check value matches `key`, scanned in
    /// pages so memory stays bounded by the matches, not the store.
    async fn unlinked_records_of(
        &self,
        key: &DataKey,
        observer: Option<&dyn RekeyObserver>,
    ) -> Result<Vec<(crate::record::Record, Envelope)>> {
        let mut found = Vec::new();
        scan_pages(&*self.storage, SCAN_PAGE, async |page| {
            for stored in page {
                if stored.identity_id.is_some() {
                    continue;
                }
                // A damaged value belongs to nobody; it is left as it is.
                if let Ok(envelope) = Envelope::parse(&stored.record.value)
                    && envelope.was_sealed_with(key)
                {
                    found.push((stored.record, envelope));
                }
            }
            if cancelled(observer) {
                return Err(VaultError::Aborted);
            }
            self.platform.scheduler.yield_now().await;
            Ok(())
        })
        .await?;
        Ok(found)
    }

    /// Report progress, honour cancellation, and let the host run now and then.
    async fn checkpoint(
        &self,
        observer: Option<&dyn RekeyObserver>,
        done: usize,
        total: u64,
    ) -> Result<()> {
        report(observer, done as u64, total);
        if cancelled(observer) {
            return Err(VaultError::Aborted);
        }
        if done % YIELD_EVERY == 0 {
            self.platform.scheduler.yield_now().await;
        }
        Ok(())
    }

    async fn apply_rekey(&self, batch: Vec<WriteOp>) -> Result<()> {
        match self.storage.apply(batch).await {
            Err(StorageError::Changed(id)) => Err(VaultError::storage(format!(
                "record {id} changed while the rekey ran; nothing was changed, run the rekey again"
            ))),
            Err(StorageError::UniqueValueTaken(_)) => Err(VaultError::storage(
                "another writer linked records to these identities while the rekey ran; nothing was changed, run the rekey again",
            )),
            other => Ok(other?),
        }
    }
}

fn report(observer: Option<&dyn RekeyObserver>, done: u64, total: u64) {
    if let Some(o) = observer {
        o.progress(done, total);
    }
}
