//! Bulk rekey and link migration (API.md "Password identities and rekey").
//!
//! A rekey reads, seals and then commits everything in one atomic batch. Other tabs, isolates or
//! calls may write meanwhile, so the batch is guarded: it expects the write epoch it read before
//! reading any record (every batch that seals a value renews it) and the identities it relied on.
//! When a guard fails, nothing was written; the rekey reads again and seals only the records
//! whose value changed (earlier work is kept), and commits again. Writes that resolved while it
//! ran are never undone, and every value opens with the secret the outcome implies.

use super::engine::removed_by_server;
use super::identity::{Identity, TAG_KEY, expect_tag, identity_find, prune_identity, slot_rows};
use super::tokens::reseal_op;
use super::{Vault, WriteKey, new_write_epoch};
use crate::crypto::{DataKey, Envelope, MasterKey, new_identity_id, seal_value};
use crate::error::{Result, VaultError};
use crate::record::Record;
use crate::secret::Secret;
use crate::storage::{
    MetaKey, MetaRow, OWNER_KEY, Optimistic, Stamp, StorageError, WriteOp, WriteTransaction,
    identity_tag_key, object_type, scan_pages, unlinked_records, write_epoch,
};
use std::collections::HashMap;
use zeroize::Zeroizing;

/// Records scanned per page when looking for a secret's records by key check.
const SCAN_PAGE: usize = 1_000;
/// Rounds of "read, seal, commit" before a rekey that keeps meeting concurrent writers gives up.
/// Each round after the first re-seals only what changed, so the window shrinks to a round trip.
const REKEY_ATTEMPTS: usize = 16;
/// Milliseconds of work between two chances for the host to run (progress, abort, UI).
const YIELD_AFTER_MS: i64 = 8;
/// Bytes of sealed values a rekey keeps for its next round ([`Carry::sealed`]): a few hundred
/// thousand records' worth. Beyond it, a round after the first seals the rest again rather than
/// hold a second copy of a huge vault's values beside its batch, for a round that runs only when
/// a writer got in first (the copy was 29 MB of a 100,000-record rotation's 124 MB heap peak on
/// SQLite, by heaptrack, and grows with the vault).
const CARRY_BUDGET: usize = 64 << 20;

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

/// Which key a record to move is sealed with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Side {
    /// The DEK of the round's drained identity at this index ([`Drained`]): the record joins the
    /// target identity.
    Identity(usize),
    /// The old secret's master key: the record joins the target for unlinked records.
    Master,
}

/// An identity whose records a round moves to its target, and which it prunes: one of the old
/// secret's, or one of the new secret's that the server removed (see [`Vault::choose_target`]).
struct Drained {
    identity: Identity,
    /// Whether its records count as the old secret's in what the rekey returns.
    old_secret: bool,
}

/// One record to move, as read in this round.
struct Move {
    record: Record,
    side: Side,
}

/// The keys of a round: what each side is sealed with now, and what it moves to.
struct MoveKeys<'a> {
    from_identities: &'a [Drained],
    from_master: &'a DataKey,
    to_identity: Option<&'a WriteKey>,
    to_master: &'a WriteKey,
}

impl MoveKeys<'_> {
    fn of(&self, side: Side) -> Result<(&DataKey, &WriteKey)> {
        match side {
            Side::Identity(i) => self
                .from_identities
                .get(i)
                .map(|d| &d.identity.dek)
                .zip(self.to_identity),
            Side::Master => Some((self.from_master, self.to_master)),
        }
        .ok_or_else(|| VaultError::storage("a rekey planned a move without its keys"))
    }

    /// Whether a record of `side` counts as one of the old secret's.
    fn counts(&self, side: Side) -> bool {
        match side {
            Side::Identity(i) => self.from_identities.get(i).is_some_and(|d| d.old_secret),
            Side::Master => true,
        }
    }
}

/// Work that outlives one round of a rekey or a migration.
#[derive(Default)]
struct Carry {
    /// Values already sealed, by record id, up to [`CARRY_BUDGET`].
    sealed: HashMap<String, Resealed>,
    /// What `sealed` holds, in bytes (its values and ids, and the map's own room for them).
    sealed_bytes: usize,
    /// The fresh identity of a rotation, drawn once so that sealed values stay valid.
    fresh: Option<Identity>,
    /// The lock epoch when the operation began.
    lock_epoch: u64,
    /// When the operation last let the host run; `i64::MIN` until the first pause, which always
    /// yields, so an abort or timer already due is seen before anything is committed however
    /// fast the rest is.
    last_yield: i64,
    /// Planning inside a held transaction: nothing but it may be awaited, so no pauses.
    held: bool,
    /// The furthest progress reported, so that a later round never reports less.
    reported: u64,
}

/// A value sealed by a round, kept in case its commit loses to a writer: the next round reuses
/// it while the record still holds the value it replaces.
struct Resealed {
    /// SHA-256 of the value it replaces, not the value: a rotation holds one of these for every
    /// record beside its batch, which holds that value already (a million records' values twice
    /// over was a tenth of a million-record rotation's peak on SQLite).
    replaces: [u8; 32],
    sealed: String,
    /// The identity it was sealed for (`None`: a master key).
    target: Option<String>,
}

impl Carry {
    /// Keep `sealed`, the new value of `record` for `to`, for the next round while the budget
    /// allows.
    fn keep(&mut self, record: &Record, sealed: &str, to: &WriteKey) {
        let bytes = record.id.len()
            + sealed.len()
            + to.identity_id.as_ref().map_or(0, String::len)
            + std::mem::size_of::<(String, Resealed)>();
        if self.sealed_bytes.saturating_add(bytes) > CARRY_BUDGET {
            return;
        }
        self.sealed_bytes += bytes;
        self.sealed.insert(
            record.id.clone(),
            Resealed {
                replaces: value_digest(&record.value),
                sealed: sealed.to_owned(),
                target: to.identity_id.clone(),
            },
        );
    }
}

/// What a rekey read of the identities involved ([`Vault::read_candidates`]).
struct Candidates {
    /// Every object holding the old secret's tag, with all its rows.
    old_rows: Vec<MetaRow>,
    /// The identities the old secret opens.
    sources: Vec<Identity>,
    /// The identities the new secret opens.
    targets: Vec<Identity>,
    /// Which of both the server removed.
    removed: Vec<String>,
    /// The sources that another secret opens too (when there are several).
    shared: Vec<String>,
}

/// Another handle on `identity` (the copy of its DEK zeroizes on drop, as the key does).
fn copy_of(identity: &Identity) -> Identity {
    Identity {
        id: identity.id.clone(),
        slot: identity.slot.clone(),
        dek: identity.dek.clone(),
    }
}

fn value_digest(value: &str) -> [u8; 32] {
    <sha2::Sha256 as sha2::Digest>::digest(value.as_bytes()).into()
}

/// The writes of one round, applied in one atomic batch at its end: guards and record moves,
/// then `finish` (identities pruned or created once the links have moved).
#[derive(Default)]
struct Round {
    batch: Vec<WriteOp>,
    finish: Vec<WriteOp>,
    moved: u64,
    /// The round found the vault holding no unlinked record (FORMAT.md "Vault state") and so
    /// scanned none.
    no_unlinked: bool,
    /// The round keeps source identities' records where they are (their old secret's slots
    /// re-wrapped for the new secret, or left to go after the commit): what it reports moved
    /// includes the links it counted, which no record write of the batch guards.
    rewrap: bool,
    /// Slots of the old secret stay on the identity that keeps its records: the new secret
    /// already opens it through another slot, which replaces the old secret's (API.md: a rekey
    /// without rotation replaces only `old`'s slot), or sync brought the old secret a second
    /// slot there, which a re-wrap of one leaves. They go once the round has committed.
    retire_source_slot: bool,
}

impl Round {
    /// Guards that fail only for a write this round must see, in place of the write epoch,
    /// which any write renews: from its second round on, a rekey keeps losing to writers under
    /// other secrets on a backend that cannot hold the store between its reads and its commit
    /// (SQL: D1 has no interactive transactions). With identities on and no unlinked record,
    /// what a rekey moves is "every record linked to the source identity", and the batch can
    /// check that itself: no record was sealed with a master key meanwhile (the unlinked mark
    /// is still "false"), and the source identity is gone once its links moved (pruned only
    /// when no link is left: a record linked to it meanwhile fails the batch). Every record it
    /// reseals still holds the value it read (compare-and-swap), and the identities it relies on
    /// keep their tags. Where the batch cannot check what it moves (records found by key check:
    /// identities off, or unlinked records present), the write epoch stays in every round: a
    /// record written under the old secret meanwhile is, to the batch, one more new record (its
    /// key check is salted per record, so only the old key tells it apart), and a batch that
    /// committed without it would leave a write that resolved while the rekey ran sealed with
    /// the old secret after the rekey resolved, which no order of the two explains (a read of
    /// a moved record with the old secret after that write resolved shows the rekey had not
    /// happened yet). Such a rekey gives up under steady writes by any secret, and so does a
    /// re-wrap (below). Known gap: a link whose record is missing (a damaged vault) keeps the
    /// source from being pruned, so such a rotation gives up instead of finishing.
    fn guard_itself(&mut self) {
        // A re-wrap writes no record, so nothing in its batch fails when a record is linked to
        // the source identity or deleted between its reads and its commit; its count (API.md:
        // the records that now open with the new secret) would then be off. It keeps the write
        // epoch: under writes that never pause it gives up (`STORAGE`, nothing changed), and
        // its one small write is cheap to retry.
        if !self.no_unlinked || self.rewrap {
            return;
        }
        let epoch = write_epoch();
        self.batch
            .retain(|op| !matches!(op, WriteOp::ExpectMeta { key, .. } if *key == epoch));
        self.batch.insert(
            0,
            WriteOp::ExpectMeta {
                key: unlinked_records(),
                value: Some("false".into()),
            },
        );
        let mut finish = Vec::with_capacity(self.finish.len() + 1);
        for op in self.finish.drain(..) {
            let pruned = match &op {
                WriteOp::DeleteIdentityIfUnlinked { identity_id, .. } => Some(identity_id.clone()),
                _ => None,
            };
            finish.push(op);
            if let Some(id) = pruned {
                finish.push(WriteOp::ExpectMeta {
                    key: MetaKey::new(object_type::IDENTITY, &id, TAG_KEY),
                    value: None,
                });
            }
        }
        self.finish = finish;
    }

    fn into_batch(mut self) -> Vec<WriteOp> {
        // Exactly: growing a batch of a million record ops the usual way would allocate room
        // for two million (about 240 bytes each) to append a few (and the write epoch after).
        self.batch.reserve_exact(self.finish.len() + 1);
        self.batch.append(&mut self.finish);
        self.batch
    }
}

impl Vault {
    /// Move every record of `old` to `new` (API.md "Password identities and rekey"). Atomic:
    /// either every record opens with `new` afterwards, or nothing changed (also on abort).
    /// Returns how many records of `old` now open with `new`.
    ///
    /// With identities on, `old` must have an identity; its linked records move (one re-wrap
    /// when `new` has no identity), and so do records of `old` written before identities were
    /// on, found by key check when the vault may hold any. With identities off, `old`'s records
    /// sealed with its master key are found by key check; if `old` also has an identity (the
    /// vault was used with identities on before), that identity moves too, in the same write.
    pub async fn bulk_rekey(
        &self,
        old: &Secret,
        new: &Secret,
        options: &RekeyOptions<'_>,
    ) -> Result<u64> {
        self.ensure_open()?;
        self.check_policy(new)?;
        let observer = options.observer;
        let mut carry = self.carry();
        let mk_old = self.master_key(old).await?;
        let mk_new = self.master_key(new).await?;
        check_cancelled(observer)?;
        for attempt in 0..REKEY_ATTEMPTS {
            let tx = self.round_reads(attempt, &mut carry).await?;
            let mut round = self
                .plan_rekey(&*tx, &mk_old, &mk_new, options, &mut carry)
                .await?;
            if attempt > 0 {
                round.guard_itself();
            }
            check_cancelled(observer)?;
            self.check_not_locked_since(carry.lock_epoch, "the rekey")?;
            let moved = round.moved;
            let retire_source_slot = round.retire_source_slot;
            report_at_least(observer, &mut carry, moved, moved);
            let stamp = self.stamp_for(&*tx, &round.batch).await?;
            match commit_round(tx, stamp, round).await {
                Ok(()) if retire_source_slot => {
                    // A second batch, as `secretRemove` would: should it fail, every record
                    // already opens with `new` and `old` still does too, and the rekey runs again.
                    self.remove_slot(&mk_old, carry.lock_epoch, "the rekey")
                        .await?;
                    self.forget_key(old);
                    return Ok(moved);
                }
                Ok(()) => return Ok(moved),
                Err(e) if is_conflict(&e) => continue,
                Err(e) => return Err(e.into()),
            }
        }
        Err(if self.identities {
            gave_up("the rekey")
        } else {
            VaultError::storage(format!(
                "{}. Without password identities a rekey finds its records by key check and must read again after any write between its reads and its commit, whatever the write's secret: run it again when writes pause",
                gave_up_what("the rekey")
            ))
        })
    }

    /// One round of a rekey: every read it needs, through `reads`, and the batch to commit.
    async fn plan_rekey(
        &self,
        reads: &dyn WriteTransaction,
        mk_old: &MasterKey,
        mk_new: &MasterKey,
        options: &RekeyOptions<'_>,
        carry: &mut Carry,
    ) -> Result<Round> {
        let observer = options.observer;
        let mut round = Round::default();
        round.batch.push(expect_write_epoch(reads).await?);
        // Locally a secret opens at most one identity, but sync may have brought more (two
        // replicas that first used it while apart): every one of them moves, or the old secret
        // would still open some records and the new one not (SYNC.md 6).
        let candidates = self
            .read_candidates(reads, (mk_old, mk_new), carry.lock_epoch)
            .await?;
        if self.identities && candidates.sources.is_empty() {
            return Err(VaultError::IdentityNotFound);
        }
        let master_old = DataKey::from_master(mk_old);
        let mut drained = Vec::new();
        let identity_target = if candidates.sources.is_empty() {
            None
        } else {
            let (target, kept) = self.choose_target(
                candidates,
                (mk_old, mk_new),
                options,
                &mut round,
                carry,
                &mut drained,
            )?;
            // The kept sources' records stay: only how many there are is read, counted in the
            // backend's identity index, so a password change reads no record whatever the
            // vault's size.
            for kept in kept {
                round.moved += reads.linked_count(Some(&kept)).await?;
            }
            Some(target)
        };
        let mut moves = Vec::new();
        for (i, d) in drained.iter().enumerate() {
            moves.extend(
                records_linked_to(reads, &d.identity.id)
                    .await?
                    .into_iter()
                    .map(|record| Move {
                        record,
                        side: Side::Identity(i),
                    }),
            );
        }
        // Records sealed with the old master key: with identities off they stay unlinked
        // under the new one; with identities on they join the target identity.
        let master_target = match &identity_target {
            Some(target) if self.identities => target.clone(),
            _ => WriteKey::master(DataKey::from_master(mk_new)),
        };
        moves.extend(
            self.plan_unlinked_move(
                reads,
                &master_old,
                &master_target,
                observer,
                &mut round,
                carry,
            )
            .await?,
        );
        let keys = MoveKeys {
            from_identities: &drained,
            from_master: &master_old,
            to_identity: identity_target.as_ref(),
            to_master: &master_target,
        };
        self.seal_moves(moves, &keys, observer, &mut round, carry)
            .await?;
        Ok(round)
    }

    /// What a rekey reads of the identities involved, in a future of its own (boxed: the rekey's
    /// state machine keeps one pointer across it instead of this part's locals): the objects
    /// holding the old secret's tag, the identities they open (`sources`), and, when there are
    /// any, the new secret's identities, which of them all the server removed, and (when the
    /// old secret opens several) which sources another secret opens too: one lookup each.
    fn read_candidates<'a>(
        &'a self,
        reads: &'a dyn WriteTransaction,
        (mk_old, mk_new): (&'a MasterKey, &'a MasterKey),
        epoch: u64,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<Candidates>> + 'a>> {
        Box::pin(async move {
            let tag_old = self.keys.identity_tag(mk_old);
            let find = identity_find(&tag_old);
            let old_rows = reads
                .meta_find(find.object_type, find.key, find.value)
                .await?;
            self.check_key_epoch(epoch)?;
            let sources = self.identities_from(&old_rows, mk_old)?;
            let mut candidates = Candidates {
                old_rows,
                sources,
                targets: Vec::new(),
                removed: Vec::new(),
                shared: Vec::new(),
            };
            if candidates.sources.is_empty() {
                return Ok(candidates);
            }
            candidates.targets = self.find_identities_in(reads, mk_new, epoch).await?;
            let ids: Vec<&str> = candidates
                .sources
                .iter()
                .chain(&candidates.targets)
                .map(|i| i.id.as_str())
                .collect();
            candidates.removed = removed_by_server(reads, &ids).await?;
            // An identity reached only through a slot whose identity this replica removed (a
            // slot pulled from a replica that added it while this one rotated the identity
            // away, before the server, which removes such a slot, has heard of it) is removed
            // too: a rekey onto it would seal records under a key on its way out.
            for identity in candidates.sources.iter().chain(&candidates.targets) {
                if identity.slot != identity.id
                    && reads
                        .meta_get(&identity_tag_key(&identity.id))
                        .await?
                        .is_none()
                {
                    candidates.removed.push(identity.id.clone());
                }
            }
            if candidates.sources.len() > 1 {
                for source in &candidates.sources {
                    let own_is_old = candidates
                        .old_rows
                        .iter()
                        .any(|r| r.key.object_id == source.id);
                    let other = !own_is_old
                        || reads
                            .meta_find(object_type::IDENTITY, OWNER_KEY, &source.id)
                            .await?
                            .iter()
                            .any(|r| r.key.key == TAG_KEY && r.value != tag_old);
                    if other {
                        candidates.shared.push(source.id.clone());
                    }
                }
            }
            Ok(candidates)
        })
    }

    /// Plan moving the old secret's identities (`sources`) to the identity the new secret will
    /// have, and return the key records joining it are sealed with, and the ids of the sources
    /// whose records stay where they are. Which identity that is:
    /// - one the new secret already opens that is not a source, that the server has not removed:
    ///   every source's records join it (re-encrypted), and the sources go with their slots (as
    ///   a move to another identity does with one source);
    /// - else, without rotation, a source the server has not removed (one the new secret opens
    ///   already, if one is): its old secret's slot is re-wrapped for the new secret (O(1): the
    ///   DEK stays) unless the new secret has its own slot there, and so is that of every other
    ///   source the server has not removed (each keeps its records and its other secrets); the
    ///   records of the sources the server removed join it;
    /// - else (a rotation, or every candidate removed by the server) a fresh identity: every
    ///   source's records join it, and so do those of the new secret's identities, all removed
    ///   by the server, whose tag it takes.
    ///
    /// An identity the server removed while local records still used it (a rotation elsewhere;
    /// the records are stranded here; an emptied one is written again instead) is never a target:
    /// its key opens nothing on the other replicas, and moving records off it is how they are
    /// delivered (SYNC.md 7). Each identity whose records move (pushed to `drained`) is pruned
    /// in the round's `finish`, with every slot it has.
    fn choose_target(
        &self,
        Candidates {
            old_rows,
            sources,
            mut targets,
            removed,
            shared,
        }: Candidates,
        (mk_old, mk_new): (&MasterKey, &MasterKey),
        options: &RekeyOptions<'_>,
        round: &mut Round,
        carry: &mut Carry,
        drained: &mut Vec<Drained>,
    ) -> Result<(WriteKey, Vec<String>)> {
        let tag_old = self.keys.identity_tag(mk_old);
        let tag_new = self.keys.identity_tag(mk_new);
        let same_secret = tag_old == tag_new;
        // Each source must still be the old secret's when this commits (through the slot that
        // found it: its other slots may change meanwhile).
        for source in &sources {
            round.batch.push(expect_tag(&source.slot, tag_old.clone()));
        }
        let usable = |i: &Identity| !removed.contains(&i.id);
        let source_ids: Vec<String> = sources.iter().map(|s| s.id.clone()).collect();
        let is_source = |id: &str| source_ids.iter().any(|s| s == id);
        // A rotation retires every source, so its target is never one of them. Of several
        // candidates, one that other secrets open too is kept first: a drained identity's other
        // secrets stop opening its records, which move.
        let candidate = |i: &Identity| usable(i) && !(options.rotate && is_source(&i.id));
        let target_at = targets
            .iter()
            .position(|t| candidate(t) && shared.contains(&t.id))
            .or_else(|| targets.iter().position(candidate));
        // The source whose records stay where they are, if one does.
        let kept_id = match target_at {
            Some(at) if is_source(&targets[at].id) && !options.rotate => {
                Some(targets[at].id.clone())
            }
            None if !options.rotate && targets.is_empty() => sources
                .iter()
                .find(|s| usable(s) && shared.contains(&s.id))
                .or_else(|| sources.iter().find(|s| usable(s)))
                .map(|s| s.id.clone()),
            _ => None,
        };
        let mut kept = None;
        // Without rotation, every other source the server still has keeps its records too.
        let mut also_kept = Vec::new();
        let mut moving = Vec::new();
        for source in sources {
            if kept_id.as_ref() == Some(&source.id) {
                kept = Some(source);
            } else if kept_id.is_some() && usable(&source) {
                also_kept.push(source);
            } else {
                moving.push((source, true));
            }
        }
        // Whether the old secret has a slot on `identity` besides the one that found it (sync
        // brought it a second one: the secret added to it on two replicas while apart).
        let other_old_slot = |identity: &Identity| {
            old_rows.iter().any(|r| {
                r.key.object_id != identity.slot
                    && (r.key.object_id == identity.id
                        || (r.key.key == OWNER_KEY && r.value == identity.id))
            })
        };
        let target_ids: Vec<String> = targets.iter().map(|t| t.id.clone()).collect();
        let mut setup = Vec::new();
        let target = match (&kept, target_at) {
            (Some(kept), Some(at)) => {
                // The new secret already opens this source. The same secret keeps its slot;
                // the old one's goes (`remove_slot`, with every other slot of the old secret:
                // the identity's own rows become vacant when they held it).
                round.retire_source_slot = targets[at].slot != kept.slot;
                copy_of(kept)
            }
            (Some(kept), None) => {
                // O(1) whatever the record count: the DEK stays, only the old secret's slot is
                // re-wrapped (its other slots keep working).
                round.rewrap = true;
                // A second slot of the old secret on this identity goes after the commit, as
                // the old secret's slot does when the new secret had one of its own.
                round.retire_source_slot = other_old_slot(kept);
                round.batch.extend(
                    slot_rows(&kept.slot, &kept.id, mk_new, self, &kept.dek)?
                        .into_iter()
                        .map(WriteOp::PutMeta),
                );
                copy_of(kept)
            }
            (None, Some(at)) if !is_source(&targets[at].id) => {
                // Another identity the new secret opens: every source's records join it.
                let target = targets.swap_remove(at);
                round.batch.push(expect_tag(&target.slot, tag_new));
                target
            }
            _ => {
                // Rotation (or the same secret asking for a fresh key, or no identity left that
                // the server still has): a new identity and DEK, drawn once for the whole rekey
                // so that work sealed in one round stays valid. The drained identities are
                // pruned first with every slot they have, so no other secret of theirs opens the
                // moved records; that includes the new secret's own slots when they were theirs
                // (their tag is gone before the new identity inserts it).
                for target in targets {
                    if !is_source(&target.id) {
                        round.batch.push(expect_tag(&target.slot, tag_new.clone()));
                        moving.push((target, false));
                    }
                }
                if carry.fresh.is_none() {
                    carry.fresh = Some(Identity::new(new_identity_id()?, DataKey::generate()?));
                }
                let fresh = carry.fresh.as_ref().ok_or_else(|| gave_up("the rekey"))?;
                let identity = copy_of(fresh);
                setup = self.create_ops(&identity, mk_new)?;
                identity
            }
        };
        // The other sources the server still has, when a source keeps its records: a password
        // change covers each in place, its old secret's slot re-wrapped for the new secret (O(1):
        // no record is read or written). Moving their records into the kept identity instead
        // would drop every other secret they have, which cannot be wrapped anew without those
        // secrets. The new secret's tag then names several objects, as sync had left the old
        // one's (FORMAT.md "One secret, several objects"): written after the kept source's
        // checked one, so a writer that gave the new secret an identity meanwhile still fails
        // this batch. A rekey of a secret to itself leaves them as they are.
        for source in &also_kept {
            round.rewrap = true;
            if same_secret {
                continue;
            }
            if target_ids.contains(&source.id) {
                // The new secret opens it already: the old secret's slot on it goes after the
                // commit.
                round.retire_source_slot = true;
                continue;
            }
            round.retire_source_slot |= other_old_slot(source);
            round.batch.extend(
                slot_rows(&source.slot, &source.id, mk_new, self, &source.dek)?
                    .into_iter()
                    .map(WriteOp::PutSharedMeta),
            );
        }
        let mut kept: Vec<String> = kept.into_iter().map(|k| k.id).collect();
        kept.extend(also_kept.into_iter().map(|k| k.id));
        for (identity, old_secret) in moving {
            round.finish.push(prune_identity(&identity.id));
            drained.push(Drained {
                identity,
                old_secret,
            });
        }
        round.finish.append(&mut setup);
        let target = WriteKey {
            key: target.dek,
            identity_id: Some(target.id),
            guard: vec![],
            slot: None,
        };
        Ok((target, kept))
    }

    /// Plan moving the records sealed with the master key `from` (found by key check value: one
    /// HMAC each, no trial decryption) to `target`. With identities on, a vault that has never
    /// held such records (FORMAT.md "Vault state") is not scanned at all.
    async fn plan_unlinked_move(
        &self,
        reads: &dyn WriteTransaction,
        from: &DataKey,
        target: &WriteKey,
        observer: Option<&dyn RekeyObserver>,
        round: &mut Round,
        carry: &mut Carry,
    ) -> Result<Vec<Move>> {
        if self.identities && reads.meta_get(&unlinked_records()).await?.as_deref() == Some("false")
        {
            round.no_unlinked = true;
            return Ok(vec![]);
        }
        let mut moves = Vec::new();
        let mut scanned = 0u64;
        scan_pages(reads, SCAN_PAGE, async |page| {
            scanned += page.len() as u64;
            for record in page {
                // A damaged value belongs to nobody; it is left as it is.
                if let Ok(envelope) = Envelope::parse(&record.value)
                    && envelope.was_sealed_with(from)
                {
                    moves.push(Move {
                        record,
                        side: Side::Master,
                    });
                }
            }
            check_cancelled(observer)?;
            self.pause(carry).await?;
            Ok(())
        })
        .await?;
        if target.identity_id.is_some() {
            // Links are counted after the scan: a record deleted meanwhile only makes the count
            // smaller, so "no unlinked record is left" is never claimed when one is.
            let links = reads.linked_count(None).await?;
            if scanned == links + moves.len() as u64 {
                round.batch.push(WriteOp::PutMeta(MetaRow {
                    key: unlinked_records(),
                    value: "false".into(),
                }));
            }
        }
        Ok(moves)
    }

    /// Re-encrypt `moves` under their targets, reporting progress. A value sealed by an earlier
    /// round is reused while the record still holds the value it replaces.
    async fn seal_moves(
        &self,
        moves: Vec<Move>,
        keys: &MoveKeys<'_>,
        observer: Option<&dyn RekeyObserver>,
        round: &mut Round,
        carry: &mut Carry,
    ) -> Result<()> {
        let base = round.moved;
        let total = base + moves.len() as u64;
        let now = self.now();
        round.batch.reserve(moves.len());
        for (done, Move { record, side }) in moves.into_iter().enumerate() {
            // The round's stamp is ordered after every version it moves.
            self.observe(&record);
            let (from, to) = keys.of(side)?;
            let sealed = match carry.sealed.get(&record.id) {
                Some(kept)
                    if kept.target == to.identity_id
                        && kept.replaces == value_digest(&record.value) =>
                {
                    kept.sealed.clone()
                }
                _ => {
                    let plaintext = Zeroizing::new(
                        Envelope::parse(&record.value)
                            .and_then(|envelope| envelope.open(from, &record.token))
                            .map_err(|e| e.for_token(&record.token))?,
                    );
                    let sealed = seal_value(&to.key, &record.token, &plaintext)?;
                    carry.keep(&record, &sealed, to);
                    sealed
                }
            };
            round.batch.push(reseal_op(&record, sealed, to, now));
            if keys.counts(side) {
                round.moved += 1;
            }
            report_at_least(observer, carry, base + done as u64 + 1, total);
            check_cancelled(observer)?;
            if done % 16 == 15 {
                self.pause(carry).await?;
            }
        }
        Ok(())
    }

    /// Link every unlinked record that opens with `secret` to its identity (re-encrypting it
    /// under the identity's key), in one atomic batch. Returns how many moved.
    pub async fn migrate_record_links(&self, secret: &Secret) -> Result<u64> {
        self.ensure_open()?;
        if !self.identities {
            return Err(VaultError::IdentityDisabled("migrateRecordLinks"));
        }
        let mut carry = self.carry();
        let mk = self.master_key(secret).await?;
        let master = DataKey::from_master(&mk);
        for attempt in 0..REKEY_ATTEMPTS {
            let tx = self.round_reads(attempt, &mut carry).await?;
            let mut round = Round::default();
            round.batch.push(expect_write_epoch(&*tx).await?);
            let target = match self.find_identity_in(&*tx, &mk, carry.lock_epoch).await? {
                Some(identity) => WriteKey::from_identity(identity, self.keys.identity_tag(&mk)),
                None => {
                    let identity = Identity::new(new_identity_id()?, DataKey::generate()?);
                    let setup = self.create_ops(&identity, &mk)?;
                    WriteKey {
                        guard: setup,
                        key: identity.dek,
                        identity_id: Some(identity.id),
                        slot: None,
                    }
                }
            };
            let moves = self
                .plan_unlinked_move(&*tx, &master, &target, None, &mut round, &mut carry)
                .await?;
            if !moves.is_empty() {
                // Creates the identity, or checks it is still this secret's; an identity with
                // no record to hold is never created.
                round.batch.extend(target.guard.iter().cloned());
            }
            let keys = MoveKeys {
                from_identities: &[],
                from_master: &master,
                to_identity: None,
                to_master: &target,
            };
            self.seal_moves(moves, &keys, None, &mut round, &mut carry)
                .await?;
            self.check_not_locked_since(carry.lock_epoch, "the link migration")?;
            let moved = round.moved;
            match commit_round(tx, self.stamp()?, round).await {
                Ok(()) => return Ok(moved),
                Err(e) if is_conflict(&e) => continue,
                Err(e) => return Err(e.into()),
            }
        }
        Err(gave_up("the link migration"))
    }

    /// The state a rekey or migration starts with.
    fn carry(&self) -> Carry {
        Carry {
            lock_epoch: self.lock_epoch(),
            last_yield: i64::MIN,
            ..Carry::default()
        }
    }

    /// What round `attempt` reads through and commits with: the first optimistically, letting
    /// the host run (progress, abort); later ones re-plan what others changed meanwhile inside
    /// one held transaction, so other writers cannot starve them.
    async fn round_reads(
        &self,
        attempt: usize,
        carry: &mut Carry,
    ) -> Result<Box<dyn WriteTransaction + '_>> {
        carry.held = attempt > 0;
        Ok(if attempt == 0 {
            Box::new(Optimistic(&*self.storage))
        } else {
            self.storage.transaction().await?
        })
    }

    /// Let the host run if this operation has computed for a while (never inside a held
    /// transaction, which must await nothing but itself).
    async fn pause(&self, carry: &mut Carry) -> Result<()> {
        if carry.held {
            return Ok(());
        }
        let now = self.now();
        if now.saturating_sub(carry.last_yield) >= YIELD_AFTER_MS {
            self.platform.scheduler.yield_now().await;
            carry.last_yield = self.now();
            // The host ran: if it locked the vault, the keys this operation holds go unused.
            self.check_key_epoch(carry.lock_epoch)?;
        }
        Ok(())
    }
}

/// Every record sealed with the key of `identity_id`, a page at a time through `reads`.
async fn records_linked_to(
    reads: &dyn WriteTransaction,
    identity_id: &str,
) -> Result<Vec<crate::record::Record>> {
    const PAGE: usize = 1_000;
    let mut records: Vec<crate::record::Record> = Vec::new();
    loop {
        let after = records.last().map(|r| r.id.clone());
        let page = reads
            .records_linked_to(identity_id, after.as_deref(), PAGE)
            .await?;
        let full = page.len() == PAGE;
        records.extend(page);
        if !full {
            return Ok(records);
        }
    }
}

/// The write epoch as `reads` sees it now, as the guard a round's batch starts with. Read
/// before any record, so every value sealed after this read renews it and fails the guard.
async fn expect_write_epoch(reads: &dyn WriteTransaction) -> Result<WriteOp> {
    let key = write_epoch();
    let value = reads.meta_get(&key).await?;
    Ok(WriteOp::ExpectMeta { key, value })
}

/// Commit a round's batch through its transaction: with a fresh write epoch when it writes
/// anything, and as an empty commit (ending the transaction) when it only checked guards.
async fn commit_round(
    tx: Box<dyn WriteTransaction + '_>,
    stamp: Stamp,
    round: Round,
) -> std::result::Result<(), StorageError> {
    let mut batch = round.into_batch();
    if !writes(&batch) {
        return tx.commit(stamp, vec![]).await;
    }
    let epoch = new_write_epoch().map_err(|e| StorageError::Backend {
        original: Default::default(),
        name: None,
        message: e.to_string(),
    })?;
    batch.push(epoch);
    tx.commit(stamp, batch).await
}

/// Whether a batch does more than check its guards.
fn writes(batch: &[WriteOp]) -> bool {
    batch
        .iter()
        .any(|op| !matches!(op, WriteOp::ExpectMeta { .. }))
}

/// A guard of the batch failed: someone wrote meanwhile, and a new round will see it.
fn is_conflict(e: &StorageError) -> bool {
    matches!(
        e,
        StorageError::MetaChanged(_)
            | StorageError::Changed(_)
            | StorageError::RecordMissing(_)
            | StorageError::UniqueValueTaken(_)
            | StorageError::MetaTaken(_)
    )
}

fn gave_up(what: &str) -> VaultError {
    VaultError::storage(format!(
        "{}. Run it again when fewer writes are happening",
        gave_up_what(what)
    ))
}

/// What happened when `what` gave up, without the advice.
fn gave_up_what(what: &str) -> String {
    format!(
        "other writers kept changing the vault's records while {what} ran ({REKEY_ATTEMPTS} rounds); nothing was changed"
    )
}

fn check_cancelled(observer: Option<&dyn RekeyObserver>) -> Result<()> {
    if observer.is_some_and(|o| o.is_cancelled()) {
        Err(VaultError::Aborted)
    } else {
        Ok(())
    }
}

/// Report progress, never less than already reported (a later round of a rekey starts over).
fn report_at_least(observer: Option<&dyn RekeyObserver>, carry: &mut Carry, done: u64, total: u64) {
    if let Some(o) = observer
        && done >= carry.reported
    {
        carry.reported = done;
        o.progress(done, total.max(done));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::RecordRevs;

    fn record(i: usize) -> Record {
        Record {
            id: format!("id{i}"),
            token: format!("tk_{i}"),
            value: format!("vs1:old{i}"),
            created_at: 1,
            updated_at: 1,
            expires_at: None,
            soft_deleted_at: None,
            password_id: None,
            revs: RecordRevs::default(),
        }
    }

    /// A huge rotation keeps what fits in the budget for its next round and seals the rest again
    /// there (the branch a record changed meanwhile takes), instead of a second copy of the vault.
    #[test]
    fn the_carry_keeps_sealed_values_up_to_its_budget() {
        let to = WriteKey::master(DataKey::from_master(&MasterKey::from_bytes([7; 32])));
        let sealed = "x".repeat(1 << 20);
        let mut carry = Carry::default();
        for i in 0..100 {
            carry.keep(&record(i), &sealed, &to);
        }
        assert_eq!(
            carry.sealed.len(),
            63,
            "64 MiB holds 63 values of 1 MiB and their ids"
        );
        assert!(carry.sealed_bytes <= CARRY_BUDGET);
        assert!(carry.sealed.contains_key("id0") && !carry.sealed.contains_key("id63"));
        let kept = &carry.sealed["id5"];
        assert_eq!(kept.replaces, value_digest("vs1:old5"));
        assert_eq!(kept.sealed.len(), 1 << 20);

        // Small values still fit after a large one was turned away.
        carry.keep(&record(1_000), "vs1:small", &to);
        assert!(carry.sealed.contains_key("id1000"));
    }
}
