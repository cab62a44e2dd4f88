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
use crate::crypto::{MasterKey, identity_tag, new_identity_id};
use crate::error::{Result, VaultError};
use crate::secret::Secret;
use crate::storage::{MetaKey, MetaRow, OWNER_KEY, Optimistic, StorageError, WriteOp, object_type};

/// One slot as stored: the object holding it, its tag and its wrapped DEK.
struct StoredSlot {
    object_id: String,
    tag: String,
    dek: String,
}

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

    /// Forget `secret`'s slot. The last slot of an identity that still has records is refused,
    /// so no record is ever left without a key.
    pub async fn secret_remove(&self, secret: &Secret) -> Result<()> {
        self.ensure_open()?;
        if !self.identities {
            return Err(VaultError::IdentityDisabled("secretRemove"));
        }
        let (mk, epoch) = self.unlocked(secret).await?;
        self.remove_slot(&mk, epoch, "secretRemove", None).await?;
        self.forget_key(secret);
        Ok(())
    }

    /// Remove `mk`'s slot, in one batch planned again while other writers change the identity's
    /// rows (`what` names the call in the error when it gives up). The caller forgets the key.
    /// When the slot is the identity's own, the slot holding the tag `successor` (a rekey's
    /// target) takes its place if the identity has one ([`Vault::another_slot`]).
    pub(super) async fn remove_slot(
        &self,
        mk: &MasterKey,
        epoch: u64,
        what: &str,
        successor: Option<&str>,
    ) -> Result<()> {
        for _ in 0..MAX_ATTEMPTS {
            let batch = self.removal(mk, epoch, successor).await?;
            let stamp = self.stamp_for(&Optimistic(&*self.storage), &batch).await?;
            match self.storage.apply(stamp, batch).await {
                Ok(()) => return Ok(()),
                Err(StorageError::MetaChanged(_) | StorageError::UniqueValueTaken(_)) => continue,
                Err(e) => return Err(e.into()),
            }
        }
        Err(gave_up(what))
    }

    /// The batch removing `mk`'s slot, planned from what storage holds now. Locally a secret
    /// has one slot, but sync may have brought more (the secret first used, or added, on two
    /// replicas while apart): each goes, in the same batch, or the secret would still open
    /// what it reached through the others.
    async fn removal(
        &self,
        mk: &MasterKey,
        epoch: u64,
        successor: Option<&str>,
    ) -> Result<Vec<WriteOp>> {
        let tag = identity_tag(mk);
        let rows = self
            .storage
            .meta_find(object_type::IDENTITY, TAG_KEY, &tag)
            .await?;
        self.check_key_epoch(epoch)?;
        let mut objects: Vec<&str> = rows.iter().map(|r| r.key.object_id.as_str()).collect();
        objects.dedup();
        if objects.is_empty() {
            return Err(VaultError::IdentityNotFound);
        }
        let several = objects.len() > 1;
        let mut batch = Vec::new();
        for slot in objects {
            batch.push(expect_tag(slot, self.keys.identity_tag(mk)));
            let own: Vec<&MetaRow> = rows.iter().filter(|r| r.key.object_id == slot).collect();
            // A further slot: its rows go, nothing else changes. Records link to identities,
            // never to slots: an object records link to is an identity whatever rows sync put
            // on it (a forged `identity` row), and deleting its rows would lock them out.
            if own.iter().any(|r| r.key.key == OWNER_KEY)
                && self
                    .storage
                    .records_linked_to(slot, None, 1)
                    .await?
                    .is_empty()
            {
                batch.extend(own.into_iter().map(|r| WriteOp::DeleteMeta(r.key.clone())));
                continue;
            }
            batch.extend(
                self.own_slot_removal(slot, &tag, several, successor)
                    .await?,
            );
        }
        Ok(batch)
    }

    /// The ops removing the identity `owner`'s own slot (its own `tag` and `dek` rows), which
    /// holds the tag `tag` of the secret being removed.
    async fn own_slot_removal(
        &self,
        owner: &str,
        tag: &str,
        several: bool,
        successor: Option<&str>,
    ) -> Result<Vec<WriteOp>> {
        if let Some(other) = self.another_slot(owner, tag, successor).await? {
            // Promote another slot: its tag and dek become the identity's own (the wrap's
            // associated data is the identity's id either way), and its object goes. The tag
            // moves from one object to another, so it is written shared: sync may have given
            // that secret another object elsewhere (an identity it made on a replica that was
            // apart), which a checked write would take for a second holder, failing every
            // round.
            let mut batch = vec![
                WriteOp::ExpectMeta {
                    key: slot_key(&other.object_id, TAG_KEY),
                    value: Some(other.tag.clone()),
                },
                WriteOp::ExpectMeta {
                    key: slot_key(&other.object_id, DEK_KEY),
                    value: Some(other.dek.clone()),
                },
            ];
            for key in [TAG_KEY, DEK_KEY, OWNER_KEY] {
                batch.push(WriteOp::DeleteMeta(slot_key(&other.object_id, key)));
            }
            batch.push(WriteOp::PutSharedMeta(MetaRow::new(
                object_type::IDENTITY,
                owner,
                TAG_KEY,
                other.tag,
            )));
            batch.push(WriteOp::PutMeta(MetaRow::new(
                object_type::IDENTITY,
                owner,
                DEK_KEY,
                other.dek,
            )));
            return Ok(batch);
        }
        // The last slot: only an identity without records may go.
        let linked = self.storage.records_linked_to(owner, None, 1).await?;
        if !linked.is_empty() {
            return Err(VaultError::invalid(if several {
                "this secret opens several identities (sync brought together identities it made on devices that were apart), and for one that still has records it is the last secret, which would leave them without a key: move them first (bulkRekey to another secret), or add another secret to that identity"
            } else {
                "this is the last secret of an identity that still has records, which would be left without a key: add another secret first (secretAdd), or delete the records"
            }));
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

    /// A further slot of identity `owner`, if it has any: the one holding the tag `successor`
    /// (a rekey's target, which the user chose: promoting another would move that other
    /// secret onto the identity's own rows, out of reach of a `secretRemove` of its slot made
    /// meanwhile on another device, so the removed secret would open the vault again), else
    /// the one with the smallest object id (any would do; this one is deterministic). A slot
    /// missing its `dek` row is skipped, and so is one holding `removed` (the tag of the
    /// secret being removed, which goes too).
    async fn another_slot(
        &self,
        owner: &str,
        removed: &str,
        successor: Option<&str>,
    ) -> Result<Option<StoredSlot>> {
        let rows = self
            .storage
            .meta_find(object_type::IDENTITY, OWNER_KEY, owner)
            .await?;
        let value = |object_id: &str, key: &str| {
            rows.iter()
                .find(|r| r.key.object_id == object_id && r.key.key == key)
                .map(|r| r.value.clone())
        };
        let mut best: Option<StoredSlot> = None;
        for row in rows
            .iter()
            .filter(|r| r.key.key == TAG_KEY && r.value != removed)
        {
            let id = &row.key.object_id;
            // The successor first, then the smallest object id.
            let chosen = Some(row.value.as_str()) == successor;
            if let Some(b) = &best {
                let b_chosen = Some(b.tag.as_str()) == successor;
                if (!b_chosen, &b.object_id) <= (!chosen, id) {
                    continue;
                }
            }
            if let Some(dek) = value(id, DEK_KEY) {
                best = Some(StoredSlot {
                    object_id: id.clone(),
                    tag: row.value.clone(),
                    dek,
                });
            }
        }
        Ok(best)
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
