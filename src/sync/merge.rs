//! The conflict rule (SYNC.md 2): one pure function per kind of row, the same on every replica and
//! on the server, so the order changes arrive in never matters. The rule itself is stated in the
//! docs of [`crate::sync`]; this module is its implementation.
//!
//! Every merge here is the join of a total order (per field for live records), so it is
//! commutative, associative and idempotent by construction, forged inputs included: a tie on
//! revisions with different bytes (which honest replicas never mint, since a revision is unique
//! to one change) is broken on the bytes instead of by argument order. `tests/sync_merge.rs`
//! proves the laws over random versions.

use super::rev::Rev;
use crate::storage::MetaKey;
use std::cmp::Ordering;

/// One version of a live record, as replicas exchange it. The id is not here: a merge only ever
/// sees two versions of one id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LiveRecord {
    /// Immutable; a server refuses a push that changes it under a known id
    /// ([`crate::sync::plan::plan_push`], `422`), so a merge sees two only among forgeries.
    pub token: String,
    /// Immutable, like `token`.
    pub created_at: i64,
    /// A max-register: the latest time any replica changed the record.
    pub updated_at: i64,
    /// The `vs1:` envelope. One field with `password_id`: an envelope opens only with its key.
    pub value: String,
    /// The identity whose key sealed `value`; `None` for a master key.
    pub password_id: Option<String>,
    /// Set by a change of the value (create, update).
    pub value_rev: Rev,
    /// Set by every sealing of the value: changes of it, and re-seals under another key (rekey,
    /// rotation, identity migration) that leave `value_rev` alone.
    pub seal_rev: Rev,
    pub expires_at: Option<i64>,
    pub expires_rev: Rev,
    pub soft_deleted_at: Option<i64>,
    pub deleted_rev: Rev,
}

impl LiveRecord {
    /// The greatest revision of any field: what a replica observes before a write that depends
    /// on this version, so the write is ordered after all of it.
    pub fn max_rev(&self) -> Rev {
        self.value_rev
            .max(self.seal_rev)
            .max(self.expires_rev)
            .max(self.deleted_rev)
    }
}

/// Why a record is gone for good.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum TombstoneReason {
    /// Hard-deleted (`delete`, a purge).
    Deleted,
    /// Lost its custom token to an earlier creator ([`token_holder`]); kept, stranded, on the
    /// replica that created it. Declared after `Deleted`, so the order of variants is the order
    /// of their wire strings ("deleted" < "displaced"), the bytes a forged tie is broken on.
    Displaced,
}

impl TombstoneReason {
    pub fn as_str(self) -> &'static str {
        match self {
            TombstoneReason::Deleted => "deleted",
            TombstoneReason::Displaced => "displaced",
        }
    }
}

/// What is left of a record after it is gone: enough to win against every version of it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Tombstone {
    pub rev: Rev,
    pub deleted_at: i64,
    pub reason: TombstoneReason,
}

/// A record as a replica holds it: live, or a tombstone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RecordVersion {
    Live(LiveRecord),
    Gone(Tombstone),
}

impl RecordVersion {
    pub fn max_rev(&self) -> Rev {
        match self {
            RecordVersion::Live(live) => live.max_rev(),
            RecordVersion::Gone(tombstone) => tombstone.rev,
        }
    }
}

/// The conflict rule for two versions of one record: a tombstone beats every live version (the
/// greater tombstone by `(rev, deletedAt, reason)` among two); between live versions, each field
/// goes its own way, to the greater revision.
pub fn merge_record(a: &RecordVersion, b: &RecordVersion) -> RecordVersion {
    match (a, b) {
        (RecordVersion::Gone(x), RecordVersion::Gone(y)) => RecordVersion::Gone(*x.max(y)),
        (RecordVersion::Gone(gone), RecordVersion::Live(_))
        | (RecordVersion::Live(_), RecordVersion::Gone(gone)) => RecordVersion::Gone(*gone),
        (RecordVersion::Live(x), RecordVersion::Live(y)) => RecordVersion::Live(merge_live(x, y)),
    }
}

/// Per field, the greater of the field's key; a key ends with the field's bytes, so it is a total
/// order and a tie can only be two equal fields.
fn merge_live(a: &LiveRecord, b: &LiveRecord) -> LiveRecord {
    // Immutables never differ between honest versions of one id; if forged ones do, the pair
    // created earliest wins, as one field, so the result is still one of the inputs' pairs.
    let (token, created_at) = match (a.created_at, &a.token).cmp(&(b.created_at, &b.token)) {
        Ordering::Greater => (&b.token, b.created_at),
        _ => (&a.token, a.created_at),
    };
    let sealed = if (a.value_rev, a.seal_rev, &a.value, &a.password_id)
        >= (b.value_rev, b.seal_rev, &b.value, &b.password_id)
    {
        a
    } else {
        b
    };
    let expiry = if (a.expires_rev, a.expires_at) >= (b.expires_rev, b.expires_at) {
        a
    } else {
        b
    };
    let deletion = if (a.deleted_rev, a.soft_deleted_at) >= (b.deleted_rev, b.soft_deleted_at) {
        a
    } else {
        b
    };
    LiveRecord {
        token: token.clone(),
        created_at,
        updated_at: a.updated_at.max(b.updated_at),
        value: sealed.value.clone(),
        password_id: sealed.password_id.clone(),
        value_rev: sealed.value_rev,
        seal_rev: sealed.seal_rev,
        expires_at: expiry.expires_at,
        expires_rev: expiry.expires_rev,
        soft_deleted_at: deletion.soft_deleted_at,
        deleted_rev: deletion.deleted_rev,
    }
}

/// One version of a meta row (a setting, an identity row, …): a last-writer-wins register whose
/// value may be "deleted". The key is not here: a merge only ever sees two versions of one key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MetaVersion {
    Value {
        rev: Rev,
        value: String,
    },
    Gone {
        rev: Rev,
        deleted_at: i64,
        /// An identity's (or a slot's) row removed only because the identity's last record was
        /// hard-deleted, not retired (a rotation, a rekey, `secretRemove`): a replica that
        /// still holds records sealed under it revives it by writing its rows again
        /// ([`merge_identity_meta`]). Always `false` for other rows.
        emptied: bool,
    },
}

impl MetaVersion {
    pub fn rev(&self) -> Rev {
        match self {
            MetaVersion::Value { rev, .. } | MetaVersion::Gone { rev, .. } => *rev,
        }
    }
}

/// The conflict rule for two versions of one meta row: the greater revision wins, a deletion
/// like any value. At equal revisions (forged), a deletion beats a value, then the greater bytes.
pub fn merge_meta(a: &MetaVersion, b: &MetaVersion) -> MetaVersion {
    if meta_order(a, b) == Ordering::Less {
        b.clone()
    } else {
        a.clone()
    }
}

/// The conflict rule for two versions of an identity's (or a secret slot's) row: a removal is
/// final, as a record's hard delete is (SYNC.md 2): it beats every live version, the greater
/// revision deciding only between two of a kind. Per-row last-writer-wins let a write racing a
/// removal bring one row of the object back: a password change (or a `secretRemove` leaving a
/// first slot vacant) made on one replica while another rotated the identity away revived the retired
/// key with no record, so new values could be sealed under it, and a re-wrap of a slot that
/// another replica removed left a slot without its `identity` row, which no secret could open.
/// Objects get fresh random ids, so a removal never blocks an object made later.
///
/// The exception is an **emptied** identity (`emptied`): removed only because its last record
/// was deleted, which retires no key. A value written meanwhile under it on another replica
/// must not be stranded for that, so such a removal is an ordinary last-writer-wins version: the
/// replica holding records under the identity writes its rows again, later, and they win. A final
/// removal beats an emptied one, so a retired key stays retired.
pub fn merge_identity_meta(a: &MetaVersion, b: &MetaVersion) -> MetaVersion {
    use MetaVersion::Gone;
    let retired = |v: &MetaVersion| matches!(v, Gone { emptied: false, .. });
    match (a, b) {
        _ if retired(a) && !retired(b) => a.clone(),
        _ if retired(b) && !retired(a) => b.clone(),
        _ => merge_meta(a, b),
    }
}

fn meta_order(a: &MetaVersion, b: &MetaVersion) -> Ordering {
    use MetaVersion::{Gone, Value};
    a.rev().cmp(&b.rev()).then_with(|| match (a, b) {
        (Value { value: x, .. }, Value { value: y, .. }) => x.cmp(y),
        // At equal revisions (forged), a final removal beats an emptied one.
        (
            Gone {
                deleted_at: x,
                emptied: e,
                ..
            },
            Gone {
                deleted_at: y,
                emptied: f,
                ..
            },
        ) => f.cmp(e).then(x.cmp(y)),
        (Value { .. }, Gone { .. }) => Ordering::Less,
        (Gone { .. }, Value { .. }) => Ordering::Greater,
    })
}

/// A live record's claim on a custom token, for two different records that hold the same one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TokenClaim<'a> {
    pub id: &'a str,
    pub created_at: i64,
}

/// One of the two arguments of a comparison.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    A,
    B,
}

impl Side {
    pub fn other(self) -> Side {
        match self {
            Side::A => Side::B,
            Side::B => Side::A,
        }
    }
}

/// Which of two records created offline with one custom token keeps it: the first creator, the
/// smaller `(createdAt, id)`. The other side's record is **stranded**: the server refuses it
/// (`token_taken`) or, when it arrived first, replaces it with a [`TombstoneReason::Displaced`]
/// tombstone; on the replica that created it, it stays live, readable and listed in `stranded`.
///
/// SYNC.md says "one record wins by the same rule", that is by the greater revision. Taken
/// literally, a device offline for a week would, on its return, displace a token that every
/// other replica has resolved and used for that week, and the values those apps stored would
/// vanish everywhere but in a report. The same rule read soundly is the one `tokenCreate`
/// already applies locally (`TOKEN_EXISTS`: whoever holds a token keeps it): the earliest claim
/// wins. `createdAt` is the closest every replica can agree on to "held it first"; the id, random
/// and unique, makes the order total. It is one comparator, so the spec owner can swap it.
pub fn token_holder(a: TokenClaim<'_>, b: TokenClaim<'_>) -> Side {
    if (b.created_at, b.id) < (a.created_at, a.id) {
        Side::B
    } else {
        Side::A
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rev(wall: u64, node: u64) -> Rev {
        Rev::new(wall, 0, node).unwrap()
    }

    fn live(value: &str, at: u64) -> LiveRecord {
        LiveRecord {
            token: "tk_custom".into(),
            created_at: 1,
            updated_at: at as i64,
            value: value.into(),
            password_id: None,
            value_rev: rev(at, 1),
            seal_rev: rev(at, 1),
            expires_at: None,
            expires_rev: rev(at, 1),
            soft_deleted_at: None,
            deleted_rev: rev(at, 1),
        }
    }

    #[test]
    fn a_stale_reseal_loses_to_a_real_edit_made_earlier() {
        // A edits at 10; B, not having seen it, re-seals the old value under a new key at 12.
        let edit = live("vs1:edited", 10);
        let mut reseal = live("vs1:old-value-new-key", 5);
        reseal.seal_rev = rev(12, 2);
        reseal.password_id = Some("p_new".into());
        for merged in [merge_live(&edit, &reseal), merge_live(&reseal, &edit)] {
            assert_eq!(merged.value, "vs1:edited");
            assert_eq!(merged.password_id, None);
            assert_eq!(
                (merged.value_rev, merged.seal_rev),
                (rev(10, 1), rev(10, 1))
            );
        }
    }

    #[test]
    fn tombstone_beats_a_later_live_change() {
        let gone = RecordVersion::Gone(Tombstone {
            rev: rev(5, 1),
            deleted_at: 5,
            reason: TombstoneReason::Deleted,
        });
        let edited = RecordVersion::Live(live("vs1:later", 99));
        assert_eq!(merge_record(&edited, &gone), gone);
        assert_eq!(merge_record(&gone, &edited), gone);
    }

    #[test]
    fn first_creator_keeps_a_custom_token() {
        let early = TokenClaim {
            id: "ffff",
            created_at: 1,
        };
        let late = TokenClaim {
            id: "0000",
            created_at: 2,
        };
        assert_eq!(token_holder(early, late), Side::A);
        assert_eq!(token_holder(late, early), Side::B);
        let same_time = TokenClaim {
            id: "0001",
            created_at: 1,
        };
        assert_eq!(token_holder(early, same_time), Side::B);
        assert_eq!(token_holder(early, same_time).other(), Side::A);
    }

    #[test]
    fn reason_order_is_wire_string_order() {
        assert!(TombstoneReason::Deleted < TombstoneReason::Displaced);
        assert!(TombstoneReason::Deleted.as_str() < TombstoneReason::Displaced.as_str());
    }
}

/// One replicated row, as a store holds it and as replicas exchange it: a record (live or a
/// tombstone) or a meta row (a value or deleted).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Row {
    Record { id: String, version: RecordVersion },
    Meta { key: MetaKey, version: MetaVersion },
}

impl Row {
    /// A tombstone's `deletedAt`; `None` for a live row.
    pub fn deleted_at(&self) -> Option<i64> {
        match self {
            Row::Record {
                version: RecordVersion::Gone(t),
                ..
            } => Some(t.deleted_at),
            Row::Meta {
                version: MetaVersion::Gone { deleted_at, .. },
                ..
            } => Some(*deleted_at),
            _ => None,
        }
    }

    /// Whether this is a tombstone (a record or meta row deleted for good).
    pub fn is_gone(&self) -> bool {
        matches!(
            self,
            Row::Record {
                version: RecordVersion::Gone(_),
                ..
            } | Row::Meta {
                version: MetaVersion::Gone { .. },
                ..
            }
        )
    }

    /// What identifies this row in its store.
    pub fn key(&self) -> RowKey {
        match self {
            Row::Record { id, .. } => RowKey::Record(id.clone()),
            Row::Meta { key, .. } => RowKey::Meta(key.clone()),
        }
    }
}

/// What identifies a replicated row in a store: a record id (live or a tombstone) or a meta key.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum RowKey {
    Record(String),
    Meta(MetaKey),
}

/// A row with the sequence number its store gave it when it last changed there (the store's
/// change feed, [`crate::storage::Storage::changes_since`]; the server's sync cursor).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    pub seq: u64,
    pub row: Row,
}
