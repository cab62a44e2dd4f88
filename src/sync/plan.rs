//! Applying rows from elsewhere to a store, planned as pure functions: what a server does with a
//! pushed page ([`plan_push`]) and what a replica does with a pulled one ([`plan_pull`]). The
//! engine reads the store's versions of every key a page touches (one round trip), asks the
//! planner, and commits the ops it returns in one atomic batch whose guards
//! ([`WriteOp::ExpectVersion`]) refuse the plan if anything it read changed meanwhile.
//!
//! Both sides merge with the one conflict rule of [`crate::sync`]; what differs is who keeps the
//! invariants that per-row merging cannot:
//! - **The server** refuses what would break its vault (SYNC.md "Validation", 7): a record sealed
//!   under an identity it has removed (`retired_key`), a second live record for one custom token
//!   ([`token_holder`]: the earlier creator keeps it, the other is refused, `token_taken`, or
//!   displaced by a tombstone when it arrived first), the removal of an identity that live records
//!   still use (`referenced`), and revisions dated in the future (`rev_in_future`). A link to an
//!   identity it has never had is a malformed request (`422`): the client sends identities first.
//!   So is a page that leaves an identity object with a `tag` and no `dek`, or a `dek` and no
//!   `tag` (FORMAT.md: they are always written together; the pusher never splits an object
//!   across pages). And a secret slot goes with its identity: one whose identity the server has
//!   removed, or removes with this page, is removed too (FORMAT.md "A slot goes with its
//!   identity").
//! - **A replica** never loses what it holds: a pulled row that would remove or shadow a local
//!   record its user can still read (a `displaced` tombstone of it, a pulled record that takes
//!   its custom token, an identity removal while local records still use the identity) is set
//!   aside, and the local record is reported as stranded until the user moves or deletes it.

use super::merge::{
    MetaVersion, RecordVersion, Row, RowKey, Side, TokenClaim, Tombstone, TombstoneReason,
    merge_identity_meta, merge_meta, merge_record, token_holder,
};
use super::rev::Rev;
use super::wire::{Refusal, Refused, Superseded};
use crate::crypto::is_vacant;
use crate::storage::{DEK_KEY, MetaKey, MetaRow, OWNER_KEY, Stored, TAG_KEY, WriteOp, object_type};
pub use crate::storage::{replaced_key, replaced_value};
use std::collections::{HashMap, HashSet};

/// How far ahead of the server's clock a revision may be dated: 5 minutes. A replica whose
/// clock runs further ahead corrects its revisions from the server's time and pushes again
/// (SYNC.md 4), so one fast clock cannot drag every replica's revisions into the future.
pub const MAX_FUTURE_MS: i64 = 5 * 60 * 1000;

pub use crate::storage::identity_tag_key;

/// What the server holds around a pushed page, read before planning.
#[derive(Debug, Default)]
pub struct ServerView {
    /// The store's version of every key the plan reads: each row's key, the tag row of each
    /// identity a live record of the page names, and each record holding a token the page claims.
    pub stored: HashMap<RowKey, Stored>,
    /// Record (by id) holding each token claimed by a live record of the page, live or
    /// soft-deleted; their versions are in `stored`.
    pub token_holders: HashMap<String, String>,
    /// For each identity the page removes: up to `rows + 1` ids of records linked to it.
    pub linked: HashMap<String, Vec<String>>,
    /// The secret slots the page may leave without their identity.
    pub slots: SlotView,
    /// For each row the page removes as emptied, and the `tag` of each object of
    /// [`SlotView::secrets`] this store holds removed as emptied: the version it kept of the row
    /// ([`replaced_key`], its text; `None` when it kept none).
    pub kept: HashMap<MetaKey, Option<String>>,
}

/// What a plan reads to remove the secret slots whose identity is removed (FORMAT.md "A slot
/// goes with its identity"). The view's `stored` holds the versions of these slots' rows, of
/// the rows of every identity object the page carries, and of the `tag` of each identity those
/// objects' `identity` rows name.
#[derive(Debug, Default)]
pub struct SlotView {
    /// For each identity the page removes: the object ids of its secret slots.
    pub of_removed: HashMap<String, Vec<String>>,
    /// Objects with an `identity` row naming a removed identity that stored records link to:
    /// identities, not slots (a forged `identity` row on one), which no slot removal takes.
    pub linked: HashSet<String>,
    /// Each identity whose secret the page may take away (a `tag` of its own, or of a slot naming
    /// it, removed or written vacant), with the object ids of its slots, stored or in the page:
    /// the secrets the page must leave it.
    pub secrets: Vec<(String, Vec<String>)>,
}

/// The ops and the report of a pushed page.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct PushPlan {
    pub ops: Vec<WriteOp>,
    pub stored: u64,
    pub superseded: Vec<Superseded>,
    pub refused: Vec<Refused>,
}

/// A pushed page that contradicts the server's vault (`422`): nothing of it is stored. Only a
/// buggy or forged client sends one; an honest replica's rows never do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Contradiction {
    /// The index of the first such row in the page.
    pub row: usize,
    pub kind: ContradictionKind,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ContradictionKind {
    /// The row's `passwordId` names an identity the server has never had.
    UnknownIdentity,
    /// A live version of a record the server holds live with another token or `createdAt`,
    /// which never change: merged, it would move the record to another token, and its value,
    /// bound to the token it was sealed for, would no longer open.
    ChangedImmutable,
    /// An identity (or secret slot) object left with a live `tag` and no live `dek`, or the
    /// other way round (a secret would find an object it cannot open, or a key no tag finds),
    /// or a slot's `identity` row written or removed apart from its `tag`.
    IncompleteIdentity,
}

/// The state of the page as planned so far: the store's rows with the page's changes applied.
struct View<'a> {
    rows: HashMap<RowKey, Option<Row>>,
    stored: &'a HashMap<RowKey, Stored>,
}

impl<'a> View<'a> {
    fn new(stored: &'a HashMap<RowKey, Stored>) -> Self {
        View {
            rows: HashMap::new(),
            stored,
        }
    }

    fn get(&self, key: &RowKey) -> Option<&Row> {
        match self.rows.get(key) {
            Some(planned) => planned.as_ref(),
            None => self.stored.get(key).map(|s| &s.row),
        }
    }

    fn set(&mut self, row: Row) {
        self.rows.insert(row.key(), Some(row));
    }
}

/// Merge two versions of one row (the same key).
pub fn merge_rows(a: &Row, b: &Row) -> Row {
    match (a, b) {
        (Row::Record { id, version: x }, Row::Record { version: y, .. }) => Row::Record {
            id: id.clone(),
            version: merge_record(x, y),
        },
        (Row::Meta { key, version: x }, Row::Meta { version: y, .. }) => Row::Meta {
            key: key.clone(),
            version: if key.object_type == object_type::IDENTITY {
                merge_identity_meta(x, y)
            } else {
                merge_meta(x, y)
            },
        },
        // Keys name one kind of row, so two versions of one key are of one kind.
        _ => b.clone(),
    }
}

/// Every revision a row carries.
pub fn revs_of(row: &Row) -> Vec<Rev> {
    match row {
        Row::Record {
            version: RecordVersion::Live(live),
            ..
        } => vec![
            live.value_rev,
            live.seal_rev,
            live.expires_rev,
            live.deleted_rev,
        ],
        Row::Record {
            version: RecordVersion::Gone(gone),
            ..
        } => vec![gone.rev],
        Row::Meta { version, .. } => vec![version.rev()],
    }
}

/// The identity whose key sealed a row's value, when it is a live record sealed under one.
pub(crate) fn sealed_under(row: &Row) -> Option<&str> {
    match row {
        Row::Record {
            version: RecordVersion::Live(live),
            ..
        } => live.password_id.as_deref(),
        _ => None,
    }
}

/// The identity (or secret slot) object a meta row belongs to when it is one of its rows
/// (`tag`, `dek`, a slot's `identity`: the wire admits no other key of the type).
pub fn identity_of(key: &MetaKey) -> Option<&str> {
    (key.object_type == object_type::IDENTITY).then_some(key.object_id.as_str())
}

/// The identity (or slot) objects whose rows a page carries (once per row).
pub fn objects_of(rows: &[Row]) -> impl Iterator<Item = &str> {
    rows.iter().filter_map(|row| match row {
        Row::Meta { key, .. } => identity_of(key),
        Row::Record { .. } => None,
    })
}

/// The identity whose row (its `tag`, `dek` or a slot) `row` removes, if it removes one.
pub fn removed_identity(row: &Row) -> Option<&str> {
    match row {
        Row::Meta {
            key,
            version: MetaVersion::Gone { .. },
        } => identity_of(key),
        _ => None,
    }
}

/// Plan a pushed page on the server. `stamp` is the server's revision for the tombstones it
/// writes itself (a displaced record), `now` its clock.
pub fn plan_push(
    rows: &[Row],
    replaced: &[Row],
    view: &ServerView,
    stamp: Rev,
    now: i64,
) -> Result<PushPlan, Contradiction> {
    let mut plan = PushPlan::default();
    let mut state = View::new(&view.stored);
    // Every version read is expected unchanged at commit.
    let mut guarded: HashSet<RowKey> = HashSet::new();
    let mut guard = |key: &RowKey, ops: &mut Vec<WriteOp>| {
        if guarded.insert(key.clone()) {
            ops.push(WriteOp::ExpectVersion {
                key: key.clone(),
                seq: view.stored.get(key).map(|s| s.seq),
            });
        }
    };
    // Who holds each claimed token as the page goes: (id, createdAt).
    let mut holders: HashMap<String, (String, i64)> = HashMap::new();
    for (token, id) in &view.token_holders {
        if let Some(Row::Record {
            version: RecordVersion::Live(live),
            ..
        }) = view.stored.get(&RowKey::Record(id.clone())).map(|s| &s.row)
        {
            holders.insert(token.clone(), (id.clone(), live.created_at));
        }
    }
    // Records linked to each identity the page may remove, as the page goes.
    let mut linked = link_sets(&view.linked, rows.len());
    // Identities whose rows the page removes.
    let mut removed: std::collections::BTreeSet<String> = std::collections::BTreeSet::new();
    let limit = now.saturating_add(MAX_FUTURE_MS);
    for (i, row) in rows.iter().enumerate() {
        let key = row.key();
        guard(&key, &mut plan.ops);
        let current = state.get(&key).cloned();
        if let (
            Some(Row::Record {
                version: RecordVersion::Live(held),
                ..
            }),
            Row::Record {
                version: RecordVersion::Live(pushed),
                ..
            },
        ) = (&current, row)
            && (&held.token, held.created_at) != (&pushed.token, pushed.created_at)
        {
            return Err(Contradiction {
                row: i,
                kind: ContradictionKind::ChangedImmutable,
            });
        }
        if revs_of(row)
            .iter()
            .any(|rev| i64::try_from(rev.wall_ms()).unwrap_or(i64::MAX) > limit)
        {
            plan.refused.push(Refused {
                i,
                reason: Refusal::RevInFuture,
                current,
            });
            continue;
        }
        let merged = match &current {
            Some(current) => merge_rows(current, row),
            None => row.clone(),
        };
        if current.as_ref() == Some(&merged) {
            // A replay, or a version the server's beats in every field.
            if current.as_ref() != Some(row) {
                plan.superseded.push(Superseded { i, current: merged });
            }
            continue;
        }
        // Invariants of the result.
        if let Some(identity) = sealed_under(&merged) {
            let tag = RowKey::Meta(identity_tag_key(identity));
            guard(&tag, &mut plan.ops);
            match state.get(&tag) {
                Some(found) if !found.is_gone() => {}
                Some(_) => {
                    plan.refused.push(Refused {
                        i,
                        reason: Refusal::RetiredKey,
                        current,
                    });
                    continue;
                }
                None => {
                    return Err(Contradiction {
                        row: i,
                        kind: ContradictionKind::UnknownIdentity,
                    });
                }
            }
        }
        if let Row::Record {
            id,
            version: RecordVersion::Live(live),
        } = &merged
        {
            if let Some((holder, created_at)) = holders.get(&live.token).cloned()
                && holder != *id
            {
                let holder_key = RowKey::Record(holder.clone());
                guard(&holder_key, &mut plan.ops);
                let theirs = TokenClaim {
                    id: &holder,
                    created_at,
                };
                let ours = TokenClaim {
                    id,
                    created_at: live.created_at,
                };
                if token_holder(theirs, ours) == Side::A {
                    plan.refused.push(Refused {
                        i,
                        reason: Refusal::TokenTaken,
                        current: state.get(&holder_key).cloned(),
                    });
                    continue;
                }
                // The page's record was created first: the holder is displaced.
                let displaced = Row::Record {
                    id: holder.clone(),
                    version: RecordVersion::Gone(Tombstone {
                        rev: stamp,
                        deleted_at: now,
                        reason: TombstoneReason::Displaced,
                    }),
                };
                forget_link(&mut linked, state.get(&holder_key), &holder);
                state.set(displaced.clone());
                plan.ops.push(WriteOp::PutVersion {
                    row: Box::new(displaced),
                    dirty: false,
                });
            }
            holders.insert(live.token.clone(), (id.clone(), live.created_at));
        }
        if let Some(identity) = removed_identity(&merged)
            && let Some((ids, more)) = linked.get(identity)
            && (*more || !ids.is_empty())
        {
            plan.refused.push(Refused {
                i,
                reason: Refusal::Referenced,
                current,
            });
            continue;
        }
        // Track links as records move, and tokens as records go: one deleted earlier in the
        // page frees its token for a record after it (replicas push deletions first). A live
        // record is its token's only holder (one that displaced it made it a tombstone).
        if let Row::Record { id, version } = &merged {
            if let (
                RecordVersion::Gone(_),
                Some(Row::Record {
                    version: RecordVersion::Live(was),
                    ..
                }),
            ) = (version, &current)
            {
                holders.remove(&was.token);
            }
            forget_link(&mut linked, current.as_ref(), id);
            if let Some(identity) = sealed_under(&merged)
                && let Some((ids, _)) = linked.get_mut(identity)
            {
                ids.insert(id.clone());
            }
        }
        if &merged != row {
            plan.superseded.push(Superseded {
                i,
                current: merged.clone(),
            });
        }
        plan.stored += 1;
        if let Some(identity) = removed_identity(&merged) {
            removed.insert(identity.to_owned());
        }
        state.set(merged.clone());
        plan.ops.push(WriteOp::PutVersion {
            row: Box::new(merged),
            dirty: false,
        });
    }
    // A page never takes the last secret of a live identity away (API.md: `secretRemove` keeps
    // an identity's last one): two replicas that each removed one of its last two secrets would
    // lock its records out together. The later removal (the rows of each object whose secret
    // the page took: a removed slot, own rows made vacant) is refused, `referenced`, and its
    // replica takes the secret back from the answer's current rows. Rows that take no secret
    // away stand: an emptied identity written again may bring its slots in the next page.
    //
    // An identity removed as emptied may come back (records elsewhere still use it) with the
    // versions this store kept of it and its slots ([`replaced_key`]): those are its secrets
    // then, and an emptied removal in the page keeps the one it removes. Without this, a slot
    // removed on one replica while another moved the password onto it (the own rows vacant) and
    // deleted the identity's last record came back with the identity, no secret opening either
    // (the simulation's seed 196).
    for (owner, slots) in &view.slots.secrets {
        let secret = |row: Option<&Row>| {
            matches!(row, Some(Row::Meta {
                version: MetaVersion::Value { value, .. },
                ..
            }) if !is_vacant(value))
        };
        let emptied = |row: Option<&Row>| {
            matches!(
                row,
                Some(Row::Meta {
                    version: MetaVersion::Gone { emptied: true, .. },
                    ..
                })
            )
        };
        let kept = |tag: &RowKey| {
            let RowKey::Meta(key) = tag else { return false };
            let text = view.kept.get(key).and_then(Option::as_deref);
            secret(text.and_then(|text| replaced_row(key, text)).as_ref())
        };
        let mut opens = false;
        let mut taken: Vec<&str> = Vec::new();
        for object in std::iter::once(owner).chain(slots) {
            let tag = RowKey::Meta(identity_tag_key(object));
            guard(&tag, &mut plan.ops);
            let (now, was) = (state.get(&tag), view.stored.get(&tag).map(|s| &s.row));
            if secret(now) || (emptied(now) && (kept(&tag) || secret(was))) {
                opens = true;
            } else if secret(was) || (emptied(was) && kept(&tag)) {
                taken.push(object);
            }
        }
        let owner_now = state.get(&RowKey::Meta(identity_tag_key(owner)));
        if opens || (owner_now.is_none_or(Row::is_gone) && !emptied(owner_now)) {
            continue;
        }
        // Only the page's latest taking goes back, which restores a secret: one the page made
        // earlier left the identity another secret when it was made. (A `secretRemove` and
        // then a rotation, on one replica, whose removal of the identity the server refused
        // as `referenced` because another replica wrote under it: the rotation's removal of
        // the remaining slot goes back, not the earlier removal. Before, both did, and the
        // removed secret opened the vault again: the simulation's seed 211.)
        let taken_at = |object: &str| match state.get(&RowKey::Meta(identity_tag_key(object))) {
            Some(Row::Meta { version, .. }) => Some(version.rev()),
            _ => None,
        };
        let latest = taken.iter().map(|object| taken_at(object)).max().flatten();
        taken.retain(|object| taken_at(object) == latest);
        for (i, row) in rows.iter().enumerate() {
            if let RowKey::Meta(meta) = row.key()
                && identity_of(&meta).is_some_and(|o| taken.contains(&o))
            {
                retract(&mut plan, &mut state, view, i, Refusal::Referenced, row);
            }
        }
        // Records the page sealed under an identity whose rows it was to bring back, and no
        // longer does: the identity stays removed here, and they would open with nothing
        // anywhere but on their replica (the simulation's seed 324: an emptied identity
        // written back with its own rows vacant, its one slot removed meanwhile). They are
        // refused as under a retired key, stranded there until a rekey moves them.
        if state
            .get(&RowKey::Meta(identity_tag_key(owner)))
            .is_none_or(Row::is_gone)
        {
            for (i, row) in rows.iter().enumerate() {
                if let Some(planned @ Row::Record { .. }) = state.get(&row.key())
                    && sealed_under(planned) == Some(owner.as_str())
                {
                    retract(&mut plan, &mut state, view, i, Refusal::RetiredKey, row);
                }
            }
        }
    }
    // A slot the page leaves without its identity goes too, and a replica that pushed one takes
    // the removal back as its rows' current version.
    let (checked, orphans) = orphaned_slots(rows, &view.slots, &mut state, stamp, now);
    for key in &checked {
        guard(key, &mut plan.ops);
    }
    replace_writes(&mut plan.ops, &orphans);
    let index: HashMap<RowKey, usize> = if orphans.is_empty() {
        HashMap::new()
    } else {
        rows.iter()
            .enumerate()
            .map(|(i, row)| (row.key(), i))
            .collect()
    };
    for gone in orphans {
        // A row refused (a revision in the future) is answered as refused only.
        if let Some(&i) = index.get(&gone.key())
            && !plan.refused.iter().any(|r| r.i == i)
        {
            plan.superseded.retain(|s| s.i != i);
            plan.superseded.push(Superseded {
                i,
                current: gone.clone(),
            });
        }
        plan.ops.push(WriteOp::PutVersion {
            row: Box::new(gone),
            dirty: false,
        });
    }
    crate::sorting::sort_by_key(&mut plan.superseded, |s| s.i);
    keep_replaced(rows, replaced, view, &mut plan.ops);
    // Every identity object the page touched keeps its `tag` and `dek` together, as the page
    // leaves them (the server view read both rows of each), and a slot's `identity` row is
    // written and removed with them: alone, its removal would leave the slot reading as an
    // identity its key was not wrapped for.
    for (i, row) in rows.iter().enumerate() {
        if let Row::Meta { key, .. } = row
            && let Some(object) = identity_of(key)
        {
            let live = |k: &str| {
                state
                    .get(&RowKey::Meta(MetaKey::new(
                        object_type::IDENTITY,
                        object,
                        k,
                    )))
                    .is_some_and(|row| !row.is_gone())
            };
            let owner_alone = key.key == OWNER_KEY && live(OWNER_KEY) != live(TAG_KEY);
            if live(TAG_KEY) != live(DEK_KEY) || owner_alone {
                return Err(Contradiction {
                    row: i,
                    kind: ContradictionKind::IncompleteIdentity,
                });
            }
        }
    }
    // The page's view of the identity's records came from a range read, which an optimistic
    // backend does not guard: a push that links a record to it meanwhile fails this batch, and
    // the page is planned again (then refused as `referenced`).
    plan.ops.extend(
        removed
            .into_iter()
            .map(|identity_id| WriteOp::ExpectUnlinked { identity_id }),
    );
    Ok(plan)
}

/// Take the write `plan` made of page row `i` (`row`) back out, if it made one, and answer the
/// row as refused for `reason`, with the server's version before the page.
fn retract(
    plan: &mut PushPlan,
    state: &mut View,
    view: &ServerView,
    i: usize,
    reason: Refusal,
    row: &Row,
) {
    let key = row.key();
    let written = |op: &WriteOp| matches!(op, WriteOp::PutVersion { row, .. } if row.key() == key);
    if !plan.ops.iter().any(written) {
        return;
    }
    plan.ops.retain(|op| !written(op));
    plan.stored -= 1;
    plan.superseded.retain(|s| s.i != i);
    state.rows.remove(&key);
    plan.refused.push(Refused {
        i,
        reason,
        current: view.stored.get(&key).map(|s| s.row.clone()),
    });
}

/// SYNC.md 7: a secret slot goes with its identity. A secret added on one replica while another
/// rotated the identity away (or deleted its last record) would otherwise be left as an orphan
/// whose secret opens the retired key, and stranded whatever a device wrote under it. Whichever
/// order the two arrive in, the removal wins: every slot among the page's identity objects and
/// the slots of the identities it removes whose identity `state` (the store as the page leaves
/// it) holds removed is removed too, in `state`, at revision `stamp` and time `now`. Records
/// link to identities, never to slots: an object they link to (stored, or in the page) is an
/// identity carrying a forged `identity` row, and stays. Returns the keys the decision read (to
/// guard) and the removals (to write).
fn orphaned_slots(
    rows: &[Row],
    slots: &SlotView,
    state: &mut View,
    stamp: Rev,
    now: i64,
) -> (Vec<RowKey>, Vec<Row>) {
    let mut objects: Vec<&str> = slots
        .of_removed
        .values()
        .flatten()
        .map(String::as_str)
        .chain(objects_of(rows))
        .collect();
    crate::sorting::sort(&mut objects);
    objects.dedup();
    let sealed: HashSet<&str> = rows.iter().filter_map(sealed_under).collect();
    let (mut checked, mut removed) = (Vec::new(), Vec::new());
    for object in objects {
        let owner_key = RowKey::Meta(MetaKey::new(object_type::IDENTITY, object, OWNER_KEY));
        let Some(Row::Meta {
            version: MetaVersion::Value { value: owner, .. },
            ..
        }) = state.get(&owner_key)
        else {
            continue;
        };
        let owner_tag = RowKey::Meta(identity_tag_key(owner));
        // A slot goes as its identity went: for good, or emptied (revived with it).
        let (orphan, emptied) = match state.get(&owner_tag) {
            Some(Row::Meta {
                version: MetaVersion::Gone { emptied, .. },
                ..
            }) => (true, *emptied),
            _ => (false, false),
        };
        checked.push(owner_tag);
        let linked = slots.linked.contains(object) || sealed.contains(object);
        if linked || !orphan {
            continue;
        }
        for k in [TAG_KEY, DEK_KEY, OWNER_KEY] {
            let key = MetaKey::new(object_type::IDENTITY, object, k);
            let row_key = RowKey::Meta(key.clone());
            let live = state.get(&row_key).is_some_and(|row| !row.is_gone());
            checked.push(row_key);
            if !live {
                continue;
            }
            let gone = Row::Meta {
                key,
                version: MetaVersion::Gone {
                    rev: stamp,
                    deleted_at: now,
                    emptied,
                },
            };
            state.set(gone.clone());
            removed.push(gone);
        }
    }
    (checked, removed)
}

/// Drop from `ops` the writes of the keys `removals` write instead.
fn replace_writes(ops: &mut Vec<WriteOp>, removals: &[Row]) {
    if removals.is_empty() {
        return;
    }
    let keys: HashSet<RowKey> = removals.iter().map(Row::key).collect();
    ops.retain(|op| !matches!(op, WriteOp::PutVersion { row, .. } if keys.contains(&row.key())));
}

/// Records linked to each identity a page may remove, as sets the plan updates while records
/// move, each with whether the store held more than the page could move (`ids` holds up to
/// `rows + 1` of them).
fn link_sets(
    linked: &HashMap<String, Vec<String>>,
    rows: usize,
) -> HashMap<String, (HashSet<String>, bool)> {
    linked
        .iter()
        .map(|(identity, ids)| {
            let more = ids.len() > rows;
            (identity.clone(), (ids.iter().cloned().collect(), more))
        })
        .collect()
}

/// A record no longer linked where it was.
fn forget_link(linked: &mut HashMap<String, (HashSet<String>, bool)>, was: Option<&Row>, id: &str) {
    if let Some(identity) = was.and_then(sealed_under)
        && let Some((ids, _)) = linked.get_mut(identity)
    {
        ids.remove(id);
    }
}

/// What a replica holds around a pulled page, read before planning.
#[derive(Debug, Default)]
pub struct ReplicaView {
    /// The replica's version of each pulled row's key, and of the `identity` row of each object
    /// the page removes as emptied.
    pub stored: HashMap<RowKey, Stored>,
    /// The local record (id, createdAt) holding each token claimed by a pulled live record.
    pub token_holders: HashMap<String, (String, i64)>,
    /// For each identity the page removes: up to `rows + 1` ids of local records linked to it.
    /// The owners of the slots in [`ReplicaView::owners`] count as removed by the page.
    pub linked: HashMap<String, Vec<String>>,
    /// The identity each secret slot the page removes with its identity belongs to (emptied,
    /// or removed for good in the page or in an earlier one whose removal waits here, or whose
    /// own rows are removed here), as this
    /// replica holds the slot (its live `identity` row): the slot is revived with its identity,
    /// or waits with it while local records use it, so that they keep opening with its
    /// secret (a first slot may be vacant) until a rekey moves them ([`plan_pull`]).
    pub owners: HashMap<String, String>,
    /// The secret slots whose live `identity` row the page carries and whose identity this
    /// replica has removed (its `tag` is a tombstone in `stored`, which holds the slot's other
    /// rows too), and the local slots of each identity whose `tag` the page removes, each with
    /// that identity; `linked` holds the links of both (an entry for each,
    /// empty when no record links to it, so the plan follows the records the page moves onto
    /// them). They go here as they do on the server, unless records use either
    /// ([`plan_pull`]).
    pub orphaned: Vec<(String, String)>,
    /// Of the identities of local records the page displaces (and of the slots' `owners`),
    /// those the server removed in an earlier page, whose removal waits here while local
    /// records use them. This replica may hold them only emptied, but no replica opens them
    /// again: a copy under one opens with no secret here once the records are gone
    /// ([`plan_pull`]), as under one the page removes for good.
    pub retired: Vec<String>,
    /// The revision this replica's last sync ended at: registers with later revisions were
    /// changed here since, so losing one is a conflict ([`supersedes_local`]).
    pub since: Rev,
    /// Clean local tombstones deleted before this time are past the retention: the server may
    /// have collected its copy, and this replica drops them at its next collection. A pulled
    /// version of such a key merges as if the tombstone were gone already (0: none is).
    pub retained_from: i64,
}

/// Whether `row` is a tombstone a store keeps for good, because what it tells a replica that
/// missed it is not "deleted":
/// - an identity's row (its `tag`, `dek` or a slot). A replica may hold records sealed under a
///   removed identity for as long as its user leaves them stranded (written after a rotation it
///   had not seen; SYNC.md 7), and pushes them with its other dirty rows, with the identity's
///   rows when a resync brings them back. With the tombstones the server refuses those records
///   as `retired_key` and the rows as superseded, months later as on the day: a retired key
///   stays retired. Without them the records name an identity the server never had, and every
///   push of that replica is refused whole (`422`), for good.
/// - a record `displaced` by an earlier creator of its custom token. The replica that created
///   it keeps it, stranded, once it pulls this tombstone (SYNC.md 2); a replica that comes back
///   after the retention and finds no tombstone forgets it as deleted elsewhere, and the write
///   that created it would be lost everywhere.
///
/// A replica keeps them too: a server that lost what it had (wiped, or restored from a backup
/// older than them) gets them back with everything else its replicas push, so a removed secret
/// or a retired key does not come back from a replica that held the identity live all along.
///
/// A few rows per identity ever removed, one per token collision.
pub(crate) fn kept_for_good(row: &Row) -> bool {
    match row {
        Row::Meta { key, .. } => key.object_type == object_type::IDENTITY,
        Row::Record {
            version: RecordVersion::Gone(tombstone),
            ..
        } => tombstone.reason == crate::sync::TombstoneReason::Displaced,
        Row::Record { .. } => false,
    }
}

/// Whether `stored` is a tombstone this replica keeps only until its next collection (see
/// [`ReplicaView::retained_from`]).
fn past_retention(stored: &Stored, retained_from: i64) -> bool {
    stored.dirty.is_none()
        && !kept_for_good(&stored.row)
        && stored.row.deleted_at().is_some_and(|at| at < retained_from)
}

/// The version a [`replaced_key`] row holds ([`replaced_value`]), as the live row of `key` it was.
pub fn replaced_row(key: &MetaKey, text: &str) -> Option<Row> {
    let (rev, value) = text.split_once(' ')?;
    Some(Row::Meta {
        key: key.clone(),
        version: MetaVersion::Value {
            rev: Rev::parse(rev).ok()?,
            value: value.to_owned(),
        },
    })
}

/// On the server, for each emptied removal of an identity's row that `ops` store, or that the
/// page pushes back as this store holds it (with the change it replaced on the replica): keep the live
/// version it replaced ([`replaced_key`]), the latest of the stored one, one the page carries
/// (a slot removed with its identity as it arrives), the one the pushing replica's removal
/// replaced there (`replaced`: a password change it made before the identity's last record
/// went, which never reached this store) and one kept from an earlier removal. A replica that
/// wrote under the identity meanwhile brings the identity back ([`plan_pull`]); with an older
/// version of its rows than this, it brings this one back instead, so the change stands and
/// the old password stays retired.
fn keep_replaced(rows: &[Row], replaced: &[Row], view: &ServerView, ops: &mut Vec<WriteOp>) {
    let mut kept = Vec::new();
    let written = ops.iter().filter_map(|op| match op {
        WriteOp::PutVersion { row, .. } => Some(&**row),
        _ => None,
    });
    // A removal this store holds already, pushed back by a replica that pulled it over a change
    // of its own (a password change on a replica holding no record under the identity): the
    // change it kept still counts.
    let held = rows
        .iter()
        .filter(|row| view.stored.get(&row.key()).is_some_and(|s| s.row == **row));
    for row in written.chain(held) {
        let Row::Meta {
            key,
            version: MetaVersion::Gone { emptied: true, .. },
        } = row
        else {
            continue;
        };
        let stored = view.stored.get(&RowKey::Meta(key.clone()));
        let earlier = view.kept.get(key);
        let earlier_row = earlier
            .and_then(Option::as_deref)
            .and_then(|text| replaced_row(key, text));
        let live = (stored.map(|s| &s.row).into_iter())
            .chain(rows.iter().chain(replaced).filter(|r| is_meta(r, key)))
            .chain(earlier_row.as_ref())
            .filter_map(|r| match r {
                Row::Meta {
                    version: MetaVersion::Value { rev, value },
                    ..
                } => Some((*rev, value)),
                _ => None,
            })
            .max_by_key(|(rev, _)| *rev);
        let Some((rev, value)) = live else {
            continue;
        };
        let text = replaced_value(rev, value);
        // A version read is expected unchanged at commit (another push may keep a later one).
        match earlier {
            Some(Some(was)) if *was == text => continue,
            Some(was) => kept.push(WriteOp::ExpectMeta {
                key: replaced_key(key),
                value: was.clone(),
            }),
            None => {}
        }
        kept.push(WriteOp::PutMeta(MetaRow {
            key: replaced_key(key),
            value: text,
        }));
    }
    ops.extend(kept);
}

/// The value a replica writes back for its row `key` (revision `rev`, `value`) of an identity
/// that a pulled page removes as emptied while local records still use it: the server's
/// replaced version when that one is later and the server kept the object's `tag` and `dek`
/// at its revision (an object's rows are written together, so one is never mixed with
/// another's), else its own. Not a vacant one (a secret removed while an added one opened the
/// object): the added secret went with the identity, and only rows this replica holds come
/// back, so that version would leave the records it writes back for with no secret.
fn revived_value<'a>(key: &MetaKey, rev: Rev, value: &'a str, replaced: &'a [Row]) -> &'a str {
    match kept_version(replaced, key) {
        Some((later, theirs))
            if later > rev
                && kept_object_tag(replaced, &key.object_id, later)
                    .is_some_and(|t| !is_vacant(t)) =>
        {
            theirs
        }
        _ => value,
    }
}

/// The `tag` the server kept of identity object `object` at revision `at`, when it kept the
/// object's `tag` and `dek` both at that revision (`replaced`): a whole object, whose rows are
/// never mixed with another version's.
fn kept_object_tag<'a>(replaced: &'a [Row], object: &str, at: Rev) -> Option<&'a str> {
    let kept = |k: &str| kept_version(replaced, &MetaKey::new(object_type::IDENTITY, object, k));
    match (kept(TAG_KEY), kept(DEK_KEY)) {
        (Some((tag_at, tag)), Some((dek_at, _))) if tag_at == at && dek_at == at => Some(tag),
        _ => None,
    }
}

/// With the vacant rows of `identity` that a replica writes back (only its slots open it): each
/// slot of it that the server kept with its emptied removal (`replaced`: a whole object at one
/// revision, not vacant) and this replica does not hold live, written back too (a slot added
/// elsewhere, or one whose removal here the server refused as the identity's last secret).
fn revive_slots(identity: &str, replaced: &[Row], view: &ReplicaView, writes: &mut Vec<WriteOp>) {
    for row in replaced {
        let Row::Meta {
            key: owner,
            version: MetaVersion::Value { rev, value },
        } = row
        else {
            continue;
        };
        if owner.key != OWNER_KEY || value != identity {
            continue;
        }
        let mut slot = Vec::new();
        for k in [TAG_KEY, DEK_KEY, OWNER_KEY] {
            let key = MetaKey::new(object_type::IDENTITY, &owner.object_id, k);
            let Some((at, value)) = kept_version(replaced, &key) else {
                break;
            };
            let held =
                (view.stored.get(&RowKey::Meta(key.clone()))).is_some_and(|s| !s.row.is_gone());
            if at != *rev || held || (k == TAG_KEY && is_vacant(value)) {
                break;
            }
            slot.push(WriteOp::PutSharedMeta(MetaRow {
                key,
                value: value.to_owned(),
            }));
        }
        if slot.len() == 3 {
            writes.append(&mut slot);
        }
    }
}

/// The live version of `key` among the server's `replaced` rows: its revision and value.
fn kept_version<'a>(replaced: &'a [Row], key: &MetaKey) -> Option<(Rev, &'a str)> {
    replaced.iter().find_map(|row| match row {
        Row::Meta {
            key: k,
            version: MetaVersion::Value { rev, value },
        } if k == key => Some((*rev, value.as_str())),
        _ => None,
    })
}

/// The ops and the report of a pulled page.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct PullPlan {
    pub ops: Vec<WriteOp>,
    /// Rows that changed the replica.
    pub applied: u64,
    /// Local changes not yet on the server that a pulled version beat.
    pub conflicts: u64,
    /// Pulled records set aside because a local record holds their token (fetched again by id
    /// once it is gone).
    pub parked: Vec<String>,
    /// Local records kept although the server removed or displaced them, or whose token a
    /// pulled record claims: the ids of the records stranded here.
    pub stranded: Vec<String>,
    /// Removals of identity rows set aside while local records still use the identity: the
    /// replica keeps them and plans them again once those records have moved (or are gone).
    pub deferred: Vec<Row>,
}

/// Whether `merged` drops a change made here since the revision `since` (the end of this
/// replica's last sync) from the local version `local`: a register of `local` with a later
/// revision that `merged` does not keep, or any such change when `merged` removes the row. A
/// register `merged` takes from elsewhere that was not changed here (an older one) is no
/// conflict: it is what sync is for.
pub fn supersedes_local(local: &Row, merged: &Row, since: Rev) -> bool {
    match (local, merged) {
        (
            Row::Record {
                version: RecordVersion::Live(mine),
                ..
            },
            Row::Record {
                version: RecordVersion::Live(result),
                ..
            },
        ) => {
            let sealed = |l: &super::LiveRecord| {
                (
                    l.value_rev,
                    l.seal_rev,
                    l.value.clone(),
                    l.password_id.clone(),
                )
            };
            (mine.seal_rev > since && sealed(mine) != sealed(result))
                || (mine.expires_rev > since
                    && (mine.expires_rev, mine.expires_at)
                        != (result.expires_rev, result.expires_at))
                || (mine.deleted_rev > since
                    && (mine.deleted_rev, mine.soft_deleted_at)
                        != (result.deleted_rev, result.soft_deleted_at))
        }
        (
            Row::Record {
                version: RecordVersion::Live(mine),
                ..
            },
            Row::Record {
                version: RecordVersion::Gone(_),
                ..
            },
        ) => mine.max_rev() > since,
        (
            Row::Meta { version: mine, .. },
            Row::Meta {
                version: result, ..
            },
        ) => mine.rev() > since && mine != result,
        _ => false,
    }
}

/// Whether local records still use the identity whose row (or whose slot's row) `key` is, as
/// the page has moved records so far.
fn still_used(
    key: &MetaKey,
    view: &ReplicaView,
    linked: &HashMap<String, (HashSet<String>, bool)>,
) -> bool {
    let identity = owning_identity(view, &key.object_id);
    linked
        .get(identity)
        .is_some_and(|(ids, more)| *more || !ids.is_empty())
}

/// The identity whose records decide about `object`'s rows: its owner for a slot that goes
/// with its identity ([`ReplicaView::owners`]), else the object itself.
fn owning_identity<'a>(view: &'a ReplicaView, object: &'a str) -> &'a str {
    view.owners.get(object).map_or(object, String::as_str)
}

/// Whether `key` is a row of a secret slot removed as emptied with its identity while that
/// identity stays live here, as the page leaves it: a later write of the identity made here
/// beats the emptied removal (a secret removed from it while the slot opened it, say). The
/// slot's removal was only its identity's, so the slot stays too, written again; without it
/// the identity would come back with no secret, and its records would open with none.
/// A `tag` the page does not carry is guarded (in `checks`): the decision read it.
fn owner_stays(key: &MetaKey, rows: &[Row], view: &ReplicaView, checks: &mut Vec<WriteOp>) -> bool {
    let Some(owner) = view.owners.get(&key.object_id) else {
        return false;
    };
    let tag_key = identity_tag_key(owner);
    let tag = RowKey::Meta(tag_key.clone());
    let stored = view.stored.get(&tag);
    let kept = stored
        .filter(|s| !past_retention(s, view.retained_from))
        .map(|s| &s.row);
    let stays = left_by_page(kept, rows, &tag_key).is_some_and(|row| !row.is_gone());
    if !rows.iter().any(|row| is_meta(row, &tag_key))
        && !(checks.iter())
            .any(|op| matches!(op, WriteOp::ExpectVersion { key, .. } if *key == tag))
    {
        checks.push(WriteOp::ExpectVersion {
            key: tag,
            seq: stored.map(|s| s.seq),
        });
    }
    stays
}

/// Whether `row` is a version of meta row `key`.
pub(crate) fn is_meta(row: &Row, key: &MetaKey) -> bool {
    matches!(row, Row::Meta { key: k, .. } if k == key)
}

/// Meta row `key` as the page leaves it on a replica: its `stored` version merged with the
/// page's, either one alone, or `None` when there is neither.
fn left_by_page(stored: Option<&Row>, rows: &[Row], key: &MetaKey) -> Option<Row> {
    match (stored, rows.iter().find(|row| is_meta(row, key))) {
        (Some(stored), Some(pulled)) => Some(merge_rows(stored, pulled)),
        (Some(row), None) | (None, Some(row)) => Some(row.clone()),
        (None, None) => None,
    }
}

/// SYNC.md 7 on a replica: a secret slot goes with its identity. A slot added elsewhere can
/// reach a replica that removed its identity before the server heard of the removal (its
/// sync pulled the slot, then its push was lost); the server removes such a slot once it
/// does, but here its secret would meanwhile open the removed key, and a value written with it
/// would be sealed under that key and stranded (or, with the record pushed ahead of the
/// removal, would keep the retired key alive). So the slot goes here too, at `stamp`, as its
/// identity went (for good, or emptied), and the removal is pushed. So does a local slot of an
/// identity the page removes (a slot added here, which the remover never saw). Returns the removals of the
/// rows of [`ReplicaView::orphaned`] that the page would leave live, and adds to `guards` the
/// keys the decision read. `linked` holds the records linked to each slot and identity as the
/// page leaves them.
fn orphaned_here(
    rows: &[Row],
    view: &ReplicaView,
    linked: &HashMap<String, (HashSet<String>, bool)>,
    stamp: Rev,
    now: i64,
    guards: &mut Vec<WriteOp>,
) -> Vec<Row> {
    let mut removals = Vec::new();
    for (slot, owner) in &view.orphaned {
        let owner_tag = identity_tag_key(owner);
        let stored_tag = view.stored.get(&RowKey::Meta(owner_tag.clone()));
        // The identity as the page leaves it: removed here, or by the page (a local slot its
        // remover never saw). An emptied one that the page writes again later (a write of it
        // elsewhere) is back, and the slot stays; a final removal beats any such write.
        let Some(merged) = left_by_page(stored_tag.map(|s| &s.row), rows, &owner_tag) else {
            continue;
        };
        let Row::Meta {
            version: MetaVersion::Gone { emptied, .. },
            ..
        } = merged
        else {
            continue;
        };
        // Records under the slot, as the page leaves them, make it an identity (with a forged
        // `identity` row); records under the identity (written elsewhere meanwhile, and not
        // moved off it here) will keep it: the server refuses this replica's removal of it
        // (`referenced`), and the slot stays with it.
        let used = [slot, owner].into_iter().any(|id| {
            linked
                .get(id)
                .is_some_and(|(ids, more)| *more || !ids.is_empty())
        });
        if used {
            continue;
        }
        guards.push(WriteOp::ExpectVersion {
            key: RowKey::Meta(owner_tag),
            seq: stored_tag.map(|s| s.seq),
        });
        for k in [TAG_KEY, DEK_KEY, OWNER_KEY] {
            let key = MetaKey::new(object_type::IDENTITY, slot, k);
            let row_key = RowKey::Meta(key.clone());
            let stored = view.stored.get(&row_key);
            // As the page leaves it: a pulled removal may lose to a later write here (the slot
            // written again for records that then left the identity).
            let live =
                left_by_page(stored.map(|s| &s.row), rows, &key).is_some_and(|r| !r.is_gone());
            if live {
                guards.push(WriteOp::ExpectVersion {
                    key: row_key,
                    seq: stored.map(|s| s.seq),
                });
                let version = MetaVersion::Gone {
                    rev: stamp,
                    deleted_at: now,
                    emptied,
                };
                removals.push(Row::Meta { key, version });
            }
        }
    }
    removals
}

/// Plan a pulled page on a replica. `stamp` is the replica's revision for the removals it
/// writes itself (a slot whose identity it removed, [`orphaned_here`]), `now` its clock.
/// `replaced` holds what the server's answer says the page's emptied removals replaced there
/// ([`replaced_key`]): the version of an identity this replica writes back when that one is
/// later than its own ([`revived_value`]). Live meta rows, a few: found by a walk.
///
/// `rows` hold one row per key (the wire decoder refuses a page that names a key twice). The plan's checks (the version each row was
/// planned against) come before its writes: a backend that read those versions in the same
/// transaction can answer them from that read (IndexedDB does).
pub fn plan_pull(
    rows: &[Row],
    replaced: &[Row],
    view: &ReplicaView,
    stamp: Rev,
    now: i64,
) -> PullPlan {
    let mut plan = PullPlan::default();
    let mut writes = Vec::with_capacity(rows.len());
    // Slots written back with a vacant identity: after the page's writes of their rows.
    let mut revived = Vec::new();
    // Local records linked to each identity the page removes, and to each slot of
    // [`ReplicaView::orphaned`] and its identity, as the page moves records.
    let mut linked = link_sets(&view.linked, rows.len());
    // Identity removals are planned after the page's other rows: whether local records still use
    // the identity depends on the records this page moves or removes, wherever they are in it (a
    // push's answer lists the identity's rows first, as the push sent them).
    let (removals, others): (Vec<&Row>, Vec<&Row>) =
        rows.iter().partition(|r| removed_identity(r).is_some());
    // The identities whose rows the plan removes, found unused by the records read: checked
    // again at commit, after the page's writes.
    let mut unlinked: Vec<String> = Vec::new();
    // The identities local records were linked to before the page moved or removed them.
    let mut vacated: Vec<&str> = Vec::new();
    for row in others.into_iter().chain(removals) {
        let key = row.key();
        let current = view.stored.get(&key);
        plan.ops.push(WriteOp::ExpectVersion {
            key: key.clone(),
            seq: current.map(|s| s.seq),
        });
        // A tombstone past the retention stands for nothing the server still holds: it may have
        // collected its copy, and then taken the record back from a replica that held it live
        // all along (SYNC.md 2). Merged with it, that version would lose here and nowhere else.
        let merged = match current.filter(|c| !past_retention(c, view.retained_from)) {
            Some(current) => merge_rows(&current.row, row),
            None => row.clone(),
        };
        let dirty = current.is_some_and(|c| c.dirty.is_some());
        // Emptied elsewhere (its last record deleted there) while records written here still use
        // it: nothing was retired, so this replica writes the row again, at a revision after the
        // removal's, and the records go to the server with it instead of being stranded.
        if let (
            Row::Meta {
                key,
                version: MetaVersion::Gone { emptied: true, .. },
            },
            Some(Stored {
                row:
                    Row::Meta {
                        version: MetaVersion::Value { rev, value },
                        ..
                    },
                ..
            }),
        ) = (&merged, current)
            && (still_used(key, view, &linked) || owner_stays(key, rows, view, &mut plan.ops))
        {
            let value = revived_value(key, *rev, value, replaced);
            if key.key == TAG_KEY && is_vacant(value) {
                revive_slots(&key.object_id, replaced, view, &mut revived);
            }
            writes.push(WriteOp::PutSharedMeta(MetaRow {
                key: key.clone(),
                value: value.to_owned(),
            }));
            continue;
        }
        // A write-back of the version the server kept with an emptied removal (another replica
        // brought the identity back) over a change made here after that version and not pushed
        // yet (a password change before the deletion): the change is the later one, and is
        // written again, at a revision after the write-back's. Only when the server says so of
        // the object's `tag` and `dek` alike (one version kept of both), so its rows never mix,
        // and not for a write-back of that version made here too (the same value).
        if let (
            Row::Meta {
                key,
                version: MetaVersion::Value { value: back, .. },
            },
            Some(Stored {
                dirty: Some(_),
                row:
                    Row::Meta {
                        version: MetaVersion::Value { rev, value },
                        ..
                    },
                ..
            }),
        ) = (&merged, current)
            // The local value differs from the merge's: the pulled write-back won.
            && value != back
            && kept_version(replaced, key).is_some_and(|(kept, was)| {
                kept < *rev
                    && was == back
                    && kept_object_tag(replaced, &key.object_id, kept).is_some()
            })
        {
            writes.push(WriteOp::PutSharedMeta(MetaRow {
                key: key.clone(),
                value: value.clone(),
            }));
            continue;
        }
        if let Some(current) = current {
            if dirty && supersedes_local(&current.row, &merged, view.since) {
                plan.conflicts += 1;
            }
            if merged == current.row {
                continue;
            }
        }
        match (&merged, current.map(|c| &c.row)) {
            // The server displaced a record this replica holds: keep it here, stranded. Not a
            // clean copy under an identity removed here, for good, or as emptied when the server
            // removed it too (for good in the page, or in an earlier page whose removal waits
            // here: `retired`): pulled from the replica that wrote it, which keeps it stranded,
            // it would open with no secret here. (Its writer may hold it clean too, pushed, but
            // under an identity live there: a removal waiting there leaves its rows.) Those
            // removals stand, so the decision needs no guard at commit.
            (
                Row::Record {
                    id,
                    version:
                        RecordVersion::Gone(Tombstone {
                            reason: TombstoneReason::Displaced,
                            ..
                        }),
                },
                Some(
                    was @ Row::Record {
                        version: RecordVersion::Live(_),
                        ..
                    },
                ),
            ) if dirty
                || !sealed_under(was).is_some_and(|identity| {
                    let tag = identity_tag_key(identity);
                    let for_good = |row: &Row| {
                        matches!(row, Row::Meta {
                            key,
                            version: MetaVersion::Gone { emptied: false, .. },
                        } if *key == tag)
                    };
                    view.stored
                        .get(&RowKey::Meta(tag.clone()))
                        .is_some_and(|s| {
                            s.row.is_gone()
                                && (for_good(&s.row)
                                    || view.retired.iter().any(|r| r == identity)
                                    || rows.iter().any(for_good))
                        })
                }) =>
            {
                plan.stranded.push(id.clone());
                continue;
            }
            // A pulled record whose token another local record holds: the local one stays (it is
            // the user's) and the pulled one waits. When the pulled one keeps the token by the
            // rule, the local one is stranded; otherwise the server will displace the pulled one
            // once the local one reaches it.
            (
                Row::Record {
                    id,
                    version: RecordVersion::Live(live),
                },
                _,
            ) if view
                .token_holders
                .get(&live.token)
                .is_some_and(|(holder, _)| holder != id) =>
            {
                if let Some((holder, created_at)) = view.token_holders.get(&live.token) {
                    let local = TokenClaim {
                        id: holder,
                        created_at: *created_at,
                    };
                    let pulled = TokenClaim {
                        id,
                        created_at: live.created_at,
                    };
                    if token_holder(local, pulled) == Side::B {
                        plan.stranded.push(holder.clone());
                    }
                }
                plan.parked.push(id.clone());
                continue;
            }
            // An identity removed elsewhere that local records still use (records the page does
            // not move: written here under it and not synced yet): kept until they move.
            (Row::Meta { key, .. }, _)
                if removed_identity(&merged).is_some() && still_used(key, view, &linked) =>
            {
                plan.deferred.push(row.clone());
                continue;
            }
            _ => {}
        }
        if let Row::Record { id, .. } = &merged {
            if let Some(was) = current.and_then(|c| sealed_under(&c.row))
                && sealed_under(&merged) != Some(was)
                && !vacated.contains(&was)
            {
                vacated.push(was);
            }
            forget_link(&mut linked, current.map(|c| &c.row), id);
            if let Some(identity) = sealed_under(&merged)
                && let Some((ids, _)) = linked.get_mut(identity)
            {
                ids.insert(id.clone());
            }
        }
        if let Some(object) = removed_identity(&merged) {
            let identity = owning_identity(view, object);
            if !unlinked.iter().any(|u| u == identity) {
                unlinked.push(identity.to_owned());
            }
        }
        plan.applied += 1;
        // A change made here that a pulled emptied removal replaces (a password change on a
        // replica holding no record under the identity, while its last record went elsewhere):
        // kept, as a deletion made here keeps what it replaces, and the removal pushed back
        // with it, so that the server keeps it too and the identity comes back with it.
        let kept = match (current, &merged) {
            (
                Some(Stored {
                    dirty: Some(_),
                    row:
                        Row::Meta {
                            version: MetaVersion::Value { rev, value },
                            ..
                        },
                    ..
                }),
                Row::Meta {
                    key,
                    version: MetaVersion::Gone { emptied: true, .. },
                },
            ) => {
                writes.push(WriteOp::PutMeta(MetaRow {
                    key: replaced_key(key),
                    value: replaced_value(*rev, value),
                }));
                true
            }
            _ => false,
        };
        writes.push(WriteOp::PutVersion {
            dirty: kept || dirty && merged != *row,
            row: Box::new(merged),
        });
    }
    // Slots whose identity this replica removed go, unless the page's records use them.
    if !view.orphaned.is_empty() {
        let orphans = orphaned_here(rows, view, &linked, stamp, now, &mut plan.ops);
        replace_writes(&mut writes, &orphans);
        for row in orphans {
            writes.push(WriteOp::PutVersion {
                row: Box::new(row),
                dirty: true,
            });
        }
    }
    writes.append(&mut revived);
    plan.ops.extend(writes);
    // Which records use an identity was a range read, which an optimistic backend (SQL: two
    // processes on one database) does not guard: a record written under the identity meanwhile
    // fails the commit, and the page is planned again, keeping the identity for it.
    plan.ops.extend(
        unlinked
            .into_iter()
            .map(|identity_id| WriteOp::ExpectUnlinked { identity_id }),
    );
    // API.md: an identity goes when its last record is deleted or moved. A page can move the
    // last records of an identity of this replica's onto another, which the replica that moved
    // them never knew: two devices that rotated one key at once each made a new identity, and
    // the records follow the later rotation. The identity left without records goes here, as
    // emptied (its tombstones pushed like a local deletion's), unless records still use it at
    // commit. Not when the page carries rows of its own: those say what became of it.
    for identity in vacated {
        if objects_of(rows).all(|object| object != identity) {
            plan.ops.push(WriteOp::DeleteIdentityIfUnlinked {
                identity_id: identity.to_owned(),
                emptied: true,
            });
        }
    }
    plan
}
