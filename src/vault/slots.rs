//! Several secrets for one identity (API.md "Unlocking, and several secrets for one identity";
//! FORMAT.md "Password identities"): `secretAdd` wraps an identity's data key a second time,
//! under another secret, like a LUKS key slot; `secretRemove` forgets one slot.
//!
//! An identity's own `tag` and `dek` rows are its first slot. Each further slot is an object of
//! the same type with a random id and three rows: `tag` (the added secret's tag, unique among all
//! slots of all identities, so a secret opens at most one identity, found with one lookup),
//! `dek` (the same DEK, wrapped under the added secret with the owning identity's id as
//! associated data) and `identity` (the owning identity's id). Storage removes an identity's
//! slots with it (`OWNER_KEY`), and so does a sync server when the slot and the removal were
//! made on two replicas (`crate::sync::plan::plan_push`). Both operations are one guarded
//! atomic batch, touch no record, and retry when a guard shows another writer changed the slots
//! they read.
//!
//! Tags are unique for local writes only: sync may leave a secret several objects (FORMAT.md
//! "One secret, several objects"). `secretRemove` then removes all of them in its one batch;
//! `secretAdd` adds a slot to each identity the existing secret opens, in one batch, since one
//! slot opens one identity.

use super::identity::{DEK_KEY, TAG_KEY, expect_tag, prune_identity, slot_rows};
use super::{MAX_ATTEMPTS, Vault};
use crate::crypto::{MasterKey, identity_tag, is_vacant, new_identity_id, vacant_slot};
use crate::error::{Result, VaultError};
use crate::secret::Secret;
use crate::storage::{
    MetaKey, MetaRow, OWNER_KEY, Optimistic, REPLACED_ID, Stamp, StorageError, Stored, WriteOp,
    object_type,
};
use crate::sync::{MetaVersion, Row, RowKey};

impl Vault {
    /// Wrap the data key of `existing`'s identity under `added` too (O(1): no record is read or
    /// written; one slot per identity when sync left `existing` several), so that both open
    /// the same records.
    pub async fn secret_add(&self, existing: &Secret, added: &Secret) -> Result<()> {
        self.ensure_open()?;
        if !self.identities {
            return Err(VaultError::IdentityDisabled("secretAdd"));
        }
        self.check_policy(added)?;
        let (mk_existing, epoch) = self.unlocked(existing).await?;
        let mk_added = self.master_key(added).await?;
        // A `lock()` between the two derivations: neither key may be used any more.
        self.check_key_epoch(epoch)?;
        let added_tag = identity_tag(&mk_added);
        for _ in 0..MAX_ATTEMPTS {
            let identities = self
                .find_identities_in(&Optimistic(&*self.storage), &mk_existing, epoch)
                .await?;
            if identities.is_empty() {
                return Err(VaultError::IdentityNotFound);
            }
            let taken = self
                .storage
                .meta_find(object_type::IDENTITY, TAG_KEY, &added_tag)
                .await?;
            self.check_key_epoch(epoch)?;
            if !taken.is_empty() {
                return Err(already_opens());
            }
            // A slot on every identity `existing` opens: sync may have brought it several (made
            // on replicas that were apart), and a slot on one would open only its records. The
            // first slot's tag is checked, so another writer adding the same secret meanwhile
            // fails this batch; the others share it (FORMAT.md "One secret, several objects").
            let existing_tag = self.keys.identity_tag(&mk_existing);
            let mut batch = Vec::with_capacity(4 * identities.len());
            for (i, identity) in identities.iter().enumerate() {
                batch.push(expect_tag(&identity.slot, existing_tag.clone()));
                let slot = new_identity_id()?;
                // The tag, then the dek and the `identity` row.
                let mut rows = slot_rows(&slot, &identity.id, &mk_added, self, &identity.dek)?;
                let tag = rows.remove(0);
                batch.push(if i == 0 {
                    WriteOp::InsertMeta(tag)
                } else {
                    WriteOp::PutSharedMeta(tag)
                });
                batch.extend(rows.into_iter().map(WriteOp::InsertMeta));
            }
            match self.storage.apply(self.stamp()?, batch).await {
                Ok(()) => return Ok(()),
                // The slot that found the identity changed (a rekey, a removal), or another
                // writer added the same secret first: look again.
                Err(
                    StorageError::MetaChanged(_)
                    | StorageError::UniqueValueTaken(_)
                    | StorageError::MetaTaken(_),
                ) => continue,
                Err(e) => return Err(e.into()),
            }
        }
        Err(gave_up("secretAdd"))
    }

    /// Forget `secret`'s slot. The last secret of an identity that still has records is
    /// refused, so no record is ever left without a key.
    pub async fn secret_remove(&self, secret: &Secret) -> Result<()> {
        self.ensure_open()?;
        if !self.identities {
            return Err(VaultError::IdentityDisabled("secretRemove"));
        }
        let (mk, epoch) = self.unlocked(secret).await?;
        self.remove_slot(&mk, epoch, "secretRemove").await?;
        self.forget_key(secret);
        Ok(())
    }

    /// Remove `mk`'s slot, in one batch planned again while other writers change the identity's
    /// rows (`what` names the call in the error when it gives up). The caller forgets the key.
    pub(super) async fn remove_slot(&self, mk: &MasterKey, epoch: u64, what: &str) -> Result<()> {
        let tag = identity_tag(mk);
        for _ in 0..MAX_ATTEMPTS {
            let mut batch = self.removal(&tag, epoch).await?;
            let stamp = self.stamp_for(&Optimistic(&*self.storage), &batch).await?;
            // The secret's slots that went with an identity emptied here (`emptied_slots`).
            let kept = self
                .storage
                .meta_object(object_type::SYNC, REPLACED_ID)
                .await?;
            let keys = emptied_slots(&kept, &tag);
            if !keys.is_empty() {
                end_emptied(self.storage.versions(&keys).await?, stamp, &mut batch);
            }
            match self.storage.apply(stamp, batch).await {
                Ok(()) => return Ok(()),
                Err(StorageError::MetaChanged(_) | StorageError::UniqueValueTaken(_)) => continue,
                Err(e) => return Err(e.into()),
            }
        }
        Err(gave_up(what))
    }

    /// The batch removing the slot of the secret whose identity tag is `tag`, planned from what
    /// storage holds now. Locally a secret has one slot, but sync may have brought more (the
    /// secret first used, or added, on two replicas while apart): each goes, in the same batch,
    /// or the secret would still open what it reached through the others.
    ///
    /// A secret never moves from one object to another: a further slot's rows go, and the
    /// identity's own rows, when their secret goes while added secrets still open the
    /// identity, become a vacant slot ([`vacant_slot`]). Moving another secret onto them
    /// instead would put it out of reach of a `secretRemove` of it made meanwhile on another
    /// device, which removes the object it knew: the removed secret would open the vault again.
    async fn removal(&self, tag: &str, epoch: u64) -> Result<Vec<WriteOp>> {
        let rows = self
            .storage
            .meta_find(object_type::IDENTITY, TAG_KEY, tag)
            .await?;
        self.check_key_epoch(epoch)?;
        let mut objects: Vec<&str> = rows.iter().map(|r| r.key.object_id.as_str()).collect();
        objects.dedup();
        if objects.is_empty() {
            return Err(VaultError::IdentityNotFound);
        }
        let mut batch = Vec::new();
        for slot in objects {
            // Every slot's guard goes first: a slot of the same identity (sync brought the
            // secret twice) is deleted by the identity's prune, and a guard after that would
            // fail this batch in every round (seed 320).
            batch.insert(0, expect_tag(slot, tag.to_owned()));
            let own: Vec<&MetaRow> = rows.iter().filter(|r| r.key.object_id == slot).collect();
            // A further slot, or the identity itself. Records link to identities, never to
            // slots: an object records link to is an identity whatever rows sync put on it (a
            // forged `identity` row), and deleting its rows would lock them out.
            let mut owner = slot;
            if let Some(row) = own.iter().find(|r| r.key.key == OWNER_KEY)
                && self
                    .storage
                    .records_linked_to(slot, None, 1)
                    .await?
                    .is_empty()
            {
                owner = &row.value;
            }
            let Some(kept) = self.other_secret(owner, tag).await? else {
                batch.extend(self.last_secret_removal(owner).await?);
                continue;
            };
            // Another secret opens the identity, and must still when this batch commits.
            batch.push(WriteOp::ExpectMeta {
                key: kept.key,
                value: Some(kept.value),
            });
            if owner == slot {
                let (vacant_tag, vacant_dek) = vacant_slot()?;
                batch.push(WriteOp::PutMeta(MetaRow::new(
                    object_type::IDENTITY,
                    owner,
                    TAG_KEY,
                    vacant_tag,
                )));
                batch.push(WriteOp::PutMeta(MetaRow::new(
                    object_type::IDENTITY,
                    owner,
                    DEK_KEY,
                    vacant_dek,
                )));
            } else {
                batch.extend(own.into_iter().map(|r| WriteOp::DeleteMeta(r.key.clone())));
            }
        }
        Ok(batch)
    }

    /// The `tag` row of a secret of identity `owner` other than the one with tag `removed`:
    /// its own first slot unless vacant, or a further slot (with its `dek`: one without is
    /// damaged and opens nothing).
    async fn other_secret(&self, owner: &str, removed: &str) -> Result<Option<MetaRow>> {
        let mut rows = self
            .storage
            .meta_find(object_type::IDENTITY, OWNER_KEY, owner)
            .await?;
        rows.append(
            &mut self
                .storage
                .meta_object(object_type::IDENTITY, owner)
                .await?,
        );
        let has_dek = |object: &str| {
            rows.iter()
                .any(|r| r.key.object_id == object && r.key.key == DEK_KEY)
        };
        Ok(rows
            .iter()
            .find(|r| {
                r.key.key == TAG_KEY
                    && r.value != removed
                    && !is_vacant(&r.value)
                    && has_dek(&r.key.object_id)
            })
            .cloned())
    }

    /// The ops removing the last secret of identity `owner`: only an identity without records
    /// may go, and then it goes whole.
    async fn last_secret_removal(&self, owner: &str) -> Result<Vec<WriteOp>> {
        let linked = self.storage.records_linked_to(owner, None, 1).await?;
        if !linked.is_empty() {
            // Of a secret that sync left several identities, one such identity refuses the
            // whole removal.
            return Err(VaultError::invalid(
                "this is the last secret of an identity that still has records, which would be left without a key: add another secret to it first (secretAdd), move the records to another secret (bulkRekey), or delete them",
            ));
        }
        // Pruned only while no record links to it; the identity must be gone after, so a
        // record linked to it meanwhile fails the batch and the next round refuses instead.
        // Known gap: a slot added to this identity meanwhile goes with it (the prune takes every
        // slot naming it, and no guard sees the new one). Only an identity without records gets
        // here, and no operation leaves one behind (the delete or move of its last record
        // prunes it): only a damaged vault has one.
        Ok(vec![
            prune_identity(owner),
            WriteOp::ExpectMeta {
                key: slot_key(owner, TAG_KEY),
                value: None,
            },
        ])
    }
}

fn slot_key(object_id: &str, key: &str) -> MetaKey {
    MetaKey::new(object_type::IDENTITY, object_id, key)
}

fn already_opens() -> VaultError {
    VaultError::invalid(
        "the secret to add already opens an identity of this vault (it may be the existing secret itself); remove it from that identity first (secretRemove) if it should open this one",
    )
}

fn gave_up(what: &str) -> VaultError {
    VaultError::storage(format!(
        "other writers kept changing this identity's secrets while {what} ran ({MAX_ATTEMPTS} rounds); nothing was changed, try again"
    ))
}

/// The rows of each further slot of the secret with tag `tag` that went with its identity when
/// the identity's last record was deleted here (emptied), found among the versions this store
/// `kept` of the rows emptied removals replaced ([`replaced_key`]: a slot is an object with an
/// `identity` row). A replica that wrote under the identity meanwhile brings it back with the
/// versions kept of its slots, and the removed secret would open it again, so `secretRemove`
/// removes them for good ([`end_emptied`]). An identity's own rows stay emptied: removing those
/// for good would retire the identity, and strand the records written under it elsewhere.
/// A few rows per identity ever emptied here.
///
/// [`replaced_key`]: crate::storage::replaced_key
fn emptied_slots(kept: &[MetaRow], tag: &str) -> Vec<RowKey> {
    let mut keys = Vec::new();
    for row in kept {
        if let Some(object) = row.key.key.strip_suffix("/tag")
            && row.value.split_once(' ').is_some_and(|(_, v)| v == tag)
            && kept
                .iter()
                .any(|r| r.key.key.strip_suffix("/identity") == Some(object))
        {
            for key in [TAG_KEY, DEK_KEY, OWNER_KEY] {
                keys.push(RowKey::Meta(slot_key(object, key)));
            }
        }
    }
    keys
}

/// Store each of `found` that is still an emptied removal removed for good instead, at `stamp`
/// and dirty, guarded on the tombstone it replaces (a slot written again meanwhile, with this
/// secret or another, is left alone). A final removal beats every version of its row (FORMAT.md
/// "Revisions and the conflict rule").
fn end_emptied(found: Vec<Option<Stored>>, stamp: Stamp, batch: &mut Vec<WriteOp>) {
    for stored in found {
        if let Some(Stored {
            seq,
            row:
                Row::Meta {
                    key,
                    version: MetaVersion::Gone { emptied: true, .. },
                },
            ..
        }) = stored
        {
            batch.push(WriteOp::ExpectVersion {
                key: RowKey::Meta(key.clone()),
                seq: Some(seq),
            });
            let version = MetaVersion::Gone {
                rev: stamp.rev,
                deleted_at: stamp.at,
                emptied: false,
            };
            batch.push(WriteOp::PutVersion {
                row: Box::new(Row::Meta { key, version }),
                dirty: true,
            });
        }
    }
}
