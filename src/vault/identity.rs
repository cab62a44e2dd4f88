//! Password identities (FORMAT.md "Password identities"): finding a secret's identity and
//! creating one.
//!
//! With identities on, each secret maps (by its tag) to an identity holding a random data key
//! (DEK) wrapped under the secret. Records are sealed with the DEK and linked to the identity, so
//! changing a password re-wraps one DEK instead of re-encrypting every record (`rekey.rs`).

use super::Vault;
use crate::crypto::{DataKey, MasterKey, identity_tag, new_identity_id, wrap_dek};
use crate::error::{Result, VaultError};
pub(crate) use crate::storage::{DEK_KEY, TAG_KEY};
use crate::storage::{
    MetaFind, MetaKey, MetaRow, OWNER_KEY, Optimistic, WriteOp, WriteTransaction, object_type,
};

/// An identity, unlocked.
pub(crate) struct Identity {
    /// The identity's id: what record links name.
    pub id: String,
    /// The object holding the secret's slot that found it (its `tag` and `dek`): `id` for the
    /// identity's first slot, else a slot object with a row `identity` = `id` (FORMAT.md
    /// "Password identities"). Writes that rely on the identity expect this slot's tag.
    pub slot: String,
    pub dek: DataKey,
}

impl Identity {
    /// An identity found through (or created with) its first slot.
    pub(crate) fn new(id: String, dek: DataKey) -> Self {
        Identity {
            slot: id.clone(),
            id,
            dek,
        }
    }
}

/// The rows of a slot of identity `owner` held by object `slot` (`owner` itself for its first
/// slot): its `tag` and `dek`, the DEK wrapped with the owner's id as associated data, so a
/// slot's rows cannot be moved to another identity; and for a further slot its `identity` row.
/// A slot's rows are always written together, all of them (a re-wrap too), so they carry one
/// revision: an emptied identity's removal (FORMAT.md "Sync") is ordered with them by revision,
/// and a write that outranks it must leave no row of the object removed.
pub(super) fn slot_rows(
    slot: &str,
    owner: &str,
    mk: &MasterKey,
    vault: &Vault,
    dek: &DataKey,
) -> Result<Vec<MetaRow>> {
    let mut rows = vec![
        MetaRow::new(object_type::IDENTITY, slot, TAG_KEY, identity_tag(mk)),
        MetaRow::new(
            object_type::IDENTITY,
            slot,
            DEK_KEY,
            wrap_dek(mk, &vault.kdf(), owner, dek)?,
        ),
    ];
    if slot != owner {
        rows.push(MetaRow::new(object_type::IDENTITY, slot, OWNER_KEY, owner));
    }
    Ok(rows)
}

/// Where the identity of a secret with identity tag `tag` is found: every slot object holding
/// the tag, with all its rows.
pub(crate) fn identity_find(tag: &str) -> MetaFind<'_> {
    MetaFind {
        object_type: object_type::IDENTITY,
        key: TAG_KEY,
        value: tag,
    }
}

/// The key of the row holding the identity DEK wrapped for slot object `slot`'s secret.
pub(crate) fn wrapped_dek_key(slot: &str) -> MetaKey {
    MetaKey::new(object_type::IDENTITY, slot, DEK_KEY)
}

/// Fail the batch unless slot object `slot` still has `tag` (a secret's identity tag).
pub(super) fn expect_tag(slot: &str, tag: String) -> WriteOp {
    WriteOp::ExpectMeta {
        key: MetaKey::new(object_type::IDENTITY, slot, TAG_KEY),
        value: Some(tag),
    }
}

impl Vault {
    /// The identity of `mk`, if it has one: one tag computation and one storage lookup.
    /// `epoch` is the lock epoch `mk` belongs to: `ABORTED` if a `lock()` ran during the lookup,
    /// before the key unwraps anything (see [`Vault::unlocked`]).
    pub(crate) async fn find_identity(
        &self,
        mk: &MasterKey,
        epoch: u64,
    ) -> Result<Option<Identity>> {
        self.find_identity_in(&Optimistic(&*self.storage), mk, epoch)
            .await
    }

    /// [`Vault::find_identity`], read through `reads`: the identity writers seal under. Of
    /// several (brought by sync), the canonical one that the server has not removed: a value
    /// sealed under a removed one would be stranded here.
    pub(super) async fn find_identity_in(
        &self,
        reads: &dyn WriteTransaction,
        mk: &MasterKey,
        epoch: u64,
    ) -> Result<Option<Identity>> {
        let mut found = self.find_identities_in(reads, mk, epoch).await?;
        if found.len() > 1 {
            let ids: Vec<&str> = found.iter().map(|i| i.id.as_str()).collect();
            let removed = super::engine::removed_by_server(reads, &ids).await?;
            if let Some(at) = found.iter().position(|i| !removed.contains(&i.id)) {
                return Ok(Some(found.swap_remove(at)));
            }
        }
        Ok(found.into_iter().next())
    }

    /// Every identity `mk` opens, the canonical one (the smallest id) first. Locally a secret
    /// opens at most one: storage keeps tags unique. Sync may bring a second: two replicas that
    /// first used one password while apart each made an identity for it, and both must stay
    /// readable (SYNC.md 3). Writers seal under the first; readers try each; a record rewritten
    /// moves to the first.
    pub(crate) async fn find_identities_in(
        &self,
        reads: &dyn WriteTransaction,
        mk: &MasterKey,
        epoch: u64,
    ) -> Result<Vec<Identity>> {
        let tag = self.keys.identity_tag(mk);
        let find = identity_find(&tag);
        let rows = reads
            .meta_find(find.object_type, find.key, find.value)
            .await?;
        self.check_key_epoch(epoch)?;
        self.identities_from(&rows, mk)
    }

    /// The identities the rows of [`identity_find`] hold, unwrapped with `mk`, as
    /// [`Vault::find_identities_in`] returns them.
    pub(crate) fn identities_from(
        &self,
        rows: &[MetaRow],
        mk: &MasterKey,
    ) -> Result<Vec<Identity>> {
        let mut slots: Vec<&str> = rows.iter().map(|r| r.key.object_id.as_str()).collect();
        slots.dedup();
        let mut found: Vec<Identity> = Vec::with_capacity(slots.len());
        // A damaged object (no data key row, or one this key does not open) fails the lookup
        // only when no other object of the tag opens: sync may bring one that a bad client
        // forged, with this tag under another id, and it must not lock the secret out of the
        // identities that do open (SYNC.md "Validation"; the server cannot check a wrap).
        let mut damaged: Option<VaultError> = None;
        for slot in slots {
            let object = rows.iter().filter(|r| r.key.object_id == slot);
            // A further slot names its identity; the first slot is the identity's own object.
            let mut id = object
                .clone()
                .find(|r| r.key.key == OWNER_KEY)
                .map_or_else(|| slot.to_owned(), |r| r.value.clone());
            let opened = object
                .clone()
                .find(|r| r.key.key == DEK_KEY)
                .ok_or_else(|| {
                    VaultError::storage(format!(
                        "identity {id} has no data key row; the vault is damaged"
                    ))
                })
                .and_then(|wrapped| {
                    let kdf = self.kdf();
                    self.keys
                        .unwrap_dek(mk, &kdf, &id, &wrapped.value)
                        .or_else(|e| {
                            // An identity's own object has no `identity` row; one pushed onto it
                            // (forged: the server cannot tell) names an id its key was not
                            // wrapped for. Under the object's own id it opens, as the identity.
                            if id == slot {
                                return Err(e);
                            }
                            let dek = self
                                .keys
                                .unwrap_dek(mk, &kdf, slot, &wrapped.value)
                                .map_err(|_| e)?;
                            id = slot.to_owned();
                            Ok(dek)
                        })
                });
            let dek = match opened {
                Ok(dek) => dek,
                Err(e) => {
                    damaged.get_or_insert(e);
                    continue;
                }
            };
            if !found.iter().any(|known| known.id == id) {
                found.push(Identity {
                    id,
                    slot: slot.to_owned(),
                    dek,
                });
            }
        }
        if let Some(e) = damaged
            && found.is_empty()
        {
            return Err(e);
        }
        crate::sorting::sort_by(&mut found, |a, b| a.id.cmp(&b.id));
        Ok(found)
    }

    /// The identity of `mk`, or a new one with the rows that create it. Creation inserts the tag
    /// row, which storage keeps unique: if another writer creates the identity first, the batch
    /// fails with `UniqueValueTaken` and the caller looks again.
    pub(crate) async fn identity_or_create(
        &self,
        mk: &MasterKey,
        epoch: u64,
    ) -> Result<(Identity, Vec<WriteOp>)> {
        if let Some(identity) = self.find_identity(mk, epoch).await? {
            return Ok((identity, vec![]));
        }
        let identity = Identity::new(new_identity_id()?, DataKey::generate()?);
        let setup = self.create_ops(&identity, mk)?;
        Ok((identity, setup))
    }

    pub(super) fn create_ops(&self, identity: &Identity, mk: &MasterKey) -> Result<Vec<WriteOp>> {
        Ok(
            slot_rows(&identity.slot, &identity.id, mk, self, &identity.dek)?
                .into_iter()
                .map(WriteOp::InsertMeta)
                .collect(),
        )
    }
}

/// Remove an identity once no record is sealed with its key, in the same batch, with its further
/// secret slots (storage removes the objects naming it in a row `identity`).
pub(crate) fn prune_identity(identity_id: &str) -> WriteOp {
    WriteOp::DeleteIdentityIfUnlinked {
        identity_id: identity_id.to_owned(),
        emptied: false,
    }
}
