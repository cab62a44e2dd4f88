//! Planning a page of rows from elsewhere (`sync::plan`): the server's refusals and reports for a
//! pushed page, a replica's handling of a pulled one, and the laws the engine relies on: a
//! replayed page stores nothing, and pages from several replicas converge in any order.
//!
//! The store here is a map that applies the planned ops, so the plans are checked for what they
//! would leave behind, not for their exact op lists. A longer run of the properties:
//! `PROPTEST_CASES=20000 cargo test --no-default-features --test sync_plan`.
#![cfg(not(target_arch = "wasm32"))]

use proptest::prelude::*;
use proptest::test_runner::RngSeed;
use std::collections::{BTreeMap, HashMap};
use vaultstore_wasm::storage::{MetaKey, MetaRow, Stored, WriteOp, replaced_key};
use vaultstore_wasm::sync::plan::{
    Contradiction, ContradictionKind, MAX_FUTURE_MS, PullPlan, PushPlan, ReplicaView, ServerView,
    identity_tag_key, plan_pull, plan_push,
};
use vaultstore_wasm::sync::wire::Refusal;
use vaultstore_wasm::sync::{
    LiveRecord, MetaVersion, RecordVersion, Rev, Row, RowKey, Tombstone, TombstoneReason,
};

const NOW: i64 = 1_700_000_000_000;
const P1: &str = "p_11111111111111111111111111111111";
const P2: &str = "p_22222222222222222222222222222222";
const P3: &str = "p_33333333333333333333333333333333";

fn rev(wall: i64, node: u64) -> Rev {
    Rev::new(wall as u64, 0, node).unwrap()
}

fn live(token: &str, value: &str, identity: Option<&str>, at: Rev) -> LiveRecord {
    LiveRecord {
        token: token.into(),
        created_at: 10,
        updated_at: 10,
        value: value.into(),
        password_id: identity.map(str::to_owned),
        value_rev: at,
        seal_rev: at,
        expires_at: None,
        expires_rev: at,
        soft_deleted_at: None,
        deleted_rev: at,
    }
}

fn record(id: &str, live: LiveRecord) -> Row {
    Row::Record {
        id: id.into(),
        version: RecordVersion::Live(live),
    }
}

fn gone(id: &str, at: Rev, reason: TombstoneReason) -> Row {
    Row::Record {
        id: id.into(),
        version: RecordVersion::Gone(Tombstone {
            rev: at,
            deleted_at: 5,
            reason,
        }),
    }
}

fn meta(key: MetaKey, value: &str, at: Rev) -> Row {
    Row::Meta {
        key,
        version: MetaVersion::Value {
            rev: at,
            value: value.into(),
        },
    }
}

fn meta_gone(key: MetaKey, at: Rev) -> Row {
    Row::Meta {
        key,
        version: MetaVersion::Gone {
            rev: at,
            deleted_at: 5,
            emptied: false,
        },
    }
}

/// An identity's two rows, always written together (FORMAT.md).
fn identity(id: &str, at: Rev) -> Vec<Row> {
    vec![
        meta(identity_tag_key(id), &"a".repeat(64), at),
        meta(MetaKey::new("password_identity", id, "dek"), "vs1k:x", at),
    ]
}

/// An identity's removal: both rows gone.
fn identity_gone(id: &str, at: Rev) -> Vec<Row> {
    vec![
        meta_gone(identity_tag_key(id), at),
        meta_gone(MetaKey::new("password_identity", id, "dek"), at),
    ]
}

/// A store: rows by key, each with the seq of its last write.
#[derive(Debug, Default, Clone, PartialEq)]
struct Store {
    rows: BTreeMap<RowKey, (u64, Row)>,
    seq: u64,
    /// The identities plans checked unused at commit (`ExpectUnlinked`), in order.
    unlinked_checks: Vec<String>,
    /// Local (not replicated) rows plans wrote: the versions emptied removals replaced.
    local: BTreeMap<MetaKey, String>,
}

impl Store {
    fn with(rows: &[Row]) -> Store {
        let mut store = Store::default();
        for row in rows {
            store.put(row.clone());
        }
        store
    }

    fn put(&mut self, row: Row) {
        self.seq += 1;
        self.rows.insert(row.key(), (self.seq, row));
    }

    fn stored(&self, key: &RowKey) -> Option<Stored> {
        self.rows.get(key).map(|(seq, row)| Stored {
            seq: *seq,
            dirty: None,
            row: row.clone(),
        })
    }

    /// What the engine reads for a pushed page: every row key, tag rows of linked identities,
    /// holders of claimed tokens, records linked to identities the page removes.
    fn server_view(&self, rows: &[Row]) -> ServerView {
        let mut view = ServerView::default();
        let mut keys: Vec<RowKey> = rows.iter().map(Row::key).collect();
        for row in rows {
            match row {
                Row::Record {
                    version: RecordVersion::Live(live),
                    ..
                } => {
                    if let Some(p) = &live.password_id {
                        keys.push(RowKey::Meta(identity_tag_key(p)));
                    }
                    if let Some((id, _)) = self.holder(&live.token) {
                        keys.push(RowKey::Record(id.clone()));
                        view.token_holders.insert(live.token.clone(), id);
                    }
                }
                Row::Meta { key, version } if key.object_type == "password_identity" => {
                    // Both rows of the object: the plan checks they stay together.
                    for k in ["tag", "dek"] {
                        keys.push(RowKey::Meta(MetaKey::new(
                            "password_identity",
                            &key.object_id,
                            k,
                        )));
                    }
                    if matches!(version, MetaVersion::Gone { .. }) {
                        view.linked
                            .insert(key.object_id.clone(), self.linked_to(&key.object_id));
                    }
                }
                _ => {}
            }
        }
        for key in keys {
            if let Some(stored) = self.stored(&key) {
                view.stored.insert(key, stored);
            }
        }
        // The versions kept from earlier removals of the rows the page removes as emptied.
        for row in rows {
            if let Row::Meta {
                key,
                version: MetaVersion::Gone { emptied: true, .. },
            } = row
            {
                let kept = self.local.get(&replaced_key(key)).cloned();
                view.kept.insert(key.clone(), kept);
            }
        }
        view
    }

    fn holder(&self, token: &str) -> Option<(String, i64)> {
        self.rows.values().find_map(|(_, row)| match row {
            Row::Record {
                id,
                version: RecordVersion::Live(live),
            } if live.token == token => Some((id.clone(), live.created_at)),
            _ => None,
        })
    }

    fn linked_to(&self, identity: &str) -> Vec<String> {
        self.rows
            .values()
            .filter_map(|(_, row)| match row {
                Row::Record {
                    id,
                    version: RecordVersion::Live(live),
                } if live.password_id.as_deref() == Some(identity) => Some(id.clone()),
                _ => None,
            })
            .collect()
    }

    /// Apply a plan's ops: guards must hold (nothing else writes here), puts land.
    fn apply(&mut self, ops: Vec<WriteOp>) {
        for op in ops {
            match op {
                WriteOp::ExpectVersion { key, seq } => {
                    assert_eq!(
                        self.rows.get(&key).map(|(s, _)| *s),
                        seq,
                        "guard on {key:?}"
                    )
                }
                WriteOp::PutVersion { row, .. } => self.put(*row),
                WriteOp::PutMeta(row) if row.key.object_type == "sync" => {
                    self.local.insert(row.key, row.value);
                }
                WriteOp::ExpectMeta { key, value } if key.object_type == "sync" => {
                    assert_eq!(self.local.get(&key), value.as_ref(), "guard on {key:?}")
                }
                WriteOp::ExpectUnlinked { identity_id } => {
                    self.unlinked_checks.push(identity_id.clone());
                    assert_eq!(
                        self.linked_to(&identity_id),
                        Vec::<String>::new(),
                        "a plan removed an identity records still use"
                    );
                }
                other => panic!("a plan wrote {other:?}"),
            }
        }
    }

    fn push(
        &mut self,
        rows: &[Row],
    ) -> Result<vaultstore_wasm::sync::plan::PushPlan, Contradiction> {
        self.push_replaced(rows, &[])
    }

    /// A push whose emptied removals replaced `replaced` on the replica.
    fn push_replaced(
        &mut self,
        rows: &[Row],
        replaced: &[Row],
    ) -> Result<vaultstore_wasm::sync::plan::PushPlan, Contradiction> {
        let view = self.server_view(rows);
        let mut plan = plan_push(rows, replaced, &view, rev(NOW, 99), NOW)?;
        self.apply(std::mem::take(&mut plan.ops));
        Ok(plan)
    }

    fn rows(&self) -> BTreeMap<RowKey, Row> {
        self.rows
            .iter()
            .map(|(k, (_, row))| (k.clone(), row.clone()))
            .collect()
    }
}

const R1: &str = "00000000000000000000000000000001";
const R2: &str = "00000000000000000000000000000002";

#[test]
fn a_new_row_is_stored_and_a_replay_stores_nothing() {
    let mut server = Store::default();
    let rows = [
        identity(P1, rev(100, 1)),
        vec![record(R1, live("tk_a", "vs1:a", Some(P1), rev(100, 1)))],
    ]
    .concat();
    let first = server.push(&rows).unwrap();
    assert_eq!(first.stored, 3);
    assert!(first.superseded.is_empty() && first.refused.is_empty());
    let after = server.clone();
    let replay = server.push(&rows).unwrap();
    assert_eq!(replay.stored, 0, "a replayed page stores nothing new");
    assert!(replay.superseded.is_empty() && replay.refused.is_empty());
    assert_eq!(server.rows, after.rows);
}

#[test]
fn an_older_version_is_superseded_with_the_servers() {
    let newer = record(R1, live("tk_a", "vs1:new", None, rev(200, 1)));
    let mut server = Store::with(std::slice::from_ref(&newer));
    let plan = server
        .push(&[record(R1, live("tk_a", "vs1:old", None, rev(100, 2)))])
        .unwrap();
    assert_eq!(plan.stored, 0);
    assert_eq!(plan.superseded.len(), 1);
    assert_eq!(plan.superseded[0].current, newer);
    assert_eq!(server.rows()[&RowKey::Record(R1.into())], newer);
}

#[test]
fn a_partly_newer_version_is_stored_merged_and_the_merge_reported() {
    let mut stored = live("tk_a", "vs1:value", None, rev(100, 1));
    stored.expires_at = Some(50);
    stored.expires_rev = rev(300, 1);
    let mut server = Store::with(&[record(R1, stored)]);
    let pushed = record(R1, live("tk_a", "vs1:edited", None, rev(200, 2)));
    let plan = server.push(std::slice::from_ref(&pushed)).unwrap();
    assert_eq!(plan.stored, 1);
    let Row::Record {
        version: RecordVersion::Live(merged),
        ..
    } = &server.rows()[&RowKey::Record(R1.into())]
    else {
        panic!("live")
    };
    assert_eq!(merged.value, "vs1:edited", "the newer value");
    assert_eq!(merged.expires_at, Some(50), "the newer expiry");
    assert_eq!(plan.superseded.len(), 1, "the pusher learns the merge");
}

#[test]
fn a_record_under_an_identity_the_server_never_had_is_a_bad_request() {
    let mut server = Store::default();
    let before = server.clone();
    assert_eq!(
        server
            .push(&[record(R1, live("tk_a", "vs1:a", Some(P2), rev(100, 1)))])
            .unwrap_err(),
        Contradiction {
            row: 0,
            kind: ContradictionKind::UnknownIdentity
        }
    );
    assert_eq!(server, before, "nothing stored");
}

#[test]
fn a_version_that_changes_a_records_token_or_creation_time_is_a_bad_request() {
    let stored = live("tk_a", "vs1:a", None, rev(100, 1));
    let mut server = Store::with(&[record(R1, stored.clone())]);
    let before = server.clone();
    let renamed = LiveRecord {
        token: "tk_0".into(),
        value: "vs1:b".into(),
        value_rev: rev(200, 2),
        seal_rev: rev(200, 2),
        ..stored.clone()
    };
    let older = LiveRecord {
        created_at: stored.created_at - 1,
        ..stored.clone()
    };
    for forged in [renamed.clone(), older] {
        assert_eq!(
            server
                .push(&[
                    record(R2, live("tk_b", "vs1:b", None, rev(150, 2))),
                    record(R1, forged),
                ])
                .unwrap_err(),
            Contradiction {
                row: 1,
                kind: ContradictionKind::ChangedImmutable
            }
        );
        assert_eq!(server, before, "nothing of the page stored");
    }
    // Two versions of one new record in one page, under two tokens: the second contradicts
    // the first.
    assert_eq!(
        Store::default()
            .push(&[
                record(R2, live("tk_b", "vs1:b", None, rev(150, 2))),
                record(
                    R2,
                    LiveRecord {
                        token: "tk_c".into(),
                        ..live("tk_b", "vs1:c", None, rev(160, 2))
                    }
                ),
            ])
            .unwrap_err()
            .kind,
        ContradictionKind::ChangedImmutable
    );
    // A tombstone of the record is no contradiction: a deletion wins.
    let plan = server
        .push(&[gone(R1, rev(300, 2), TombstoneReason::Deleted)])
        .unwrap();
    assert_eq!(plan.stored, 1);
}

#[test]
fn a_value_sealed_under_a_retired_identity_is_refused() {
    let mut server = Store::with(&[meta_gone(identity_tag_key(P1), rev(200, 1))]);
    let plan = server
        .push(&[record(R1, live("tk_a", "vs1:a", Some(P1), rev(300, 2)))])
        .unwrap();
    assert_eq!(plan.stored, 0);
    assert_eq!(plan.refused.len(), 1);
    assert_eq!(plan.refused[0].reason, Refusal::RetiredKey);
    assert!(!server.rows().contains_key(&RowKey::Record(R1.into())));
}

#[test]
fn the_earlier_creator_keeps_a_custom_token() {
    let mut early = live("tk_same", "vs1:early", None, rev(100, 1));
    early.created_at = 1;
    let mut late = live("tk_same", "vs1:late", None, rev(50, 2));
    late.created_at = 2;
    // The later creator arrived first: it is displaced.
    let mut server = Store::with(&[record(R2, late.clone())]);
    let plan = server.push(&[record(R1, early.clone())]).unwrap();
    assert_eq!(plan.stored, 1);
    let rows = server.rows();
    assert!(matches!(
        &rows[&RowKey::Record(R2.into())],
        Row::Record { version: RecordVersion::Gone(t), .. } if t.reason == TombstoneReason::Displaced
    ));
    assert_eq!(rows[&RowKey::Record(R1.into())], record(R1, early.clone()));
    // The later creator arriving second is refused, and told who holds the token.
    let mut server = Store::with(&[record(R1, early.clone())]);
    let plan = server.push(&[record(R2, late)]).unwrap();
    assert_eq!(plan.stored, 0);
    assert_eq!(plan.refused[0].reason, Refusal::TokenTaken);
    assert_eq!(plan.refused[0].current, Some(record(R1, early)));
}

#[test]
fn an_identity_still_in_use_is_not_removed_until_its_records_leave() {
    let linked = record(R1, live("tk_a", "vs1:a", Some(P1), rev(100, 1)));
    let mut server = Store::with(
        &[
            identity(P1, rev(100, 1)),
            identity(P2, rev(100, 1)),
            vec![linked],
        ]
        .concat(),
    );
    let removal = identity_gone(P1, rev(200, 2));
    let plan = server.push(&removal).unwrap();
    assert!(
        plan.refused.len() == 2 && plan.refused.iter().all(|r| r.reason == Refusal::Referenced)
    );
    assert_eq!(plan.stored, 0);
    // A rotation's page: the record moves to P2 first, then P1 goes.
    let moved = record(R1, live("tk_a", "vs1:b", Some(P2), rev(200, 2)));
    let plan = server.push(&[vec![moved], removal].concat()).unwrap();
    assert_eq!(plan.stored, 3);
    assert!(plan.refused.is_empty());
    // Its commit checks, after the page's writes, that no record uses P1 any more: a record
    // another push linked to P1 since this page was planned fails it, to be planned again.
    assert_eq!(server.unlinked_checks, vec![P1.to_owned()]);
}

#[test]
fn an_identity_object_keeps_its_tag_and_dek_together() {
    let [tag, dek]: [Row; 2] = identity(P1, rev(100, 1)).try_into().unwrap();
    // A new object with one of the two: the page is refused whole.
    for alone in [&tag, &dek] {
        let error = Store::default()
            .push(std::slice::from_ref(alone))
            .unwrap_err();
        assert_eq!(error.kind, ContradictionKind::IncompleteIdentity);
    }
    // A stored object may have one row rewritten (its other is stored), but not removed alone.
    let mut server = Store::with(&identity(P1, rev(100, 1)));
    let rewritten = meta(identity_tag_key(P1), &"b".repeat(64), rev(200, 2));
    assert_eq!(server.push(&[rewritten]).unwrap().stored, 1);
    let [tag_gone, _]: [Row; 2] = identity_gone(P1, rev(300, 3)).try_into().unwrap();
    let error = server.push(&[tag_gone]).unwrap_err();
    assert_eq!(error.kind, ContradictionKind::IncompleteIdentity);
    // Both rows in one page, or both removed: stored.
    assert_eq!(
        server.push(&identity_gone(P1, rev(300, 3))).unwrap().stored,
        2
    );
    assert_eq!(
        Store::default()
            .push(&identity(P2, rev(100, 1)))
            .unwrap()
            .stored,
        2
    );
}

#[test]
fn revisions_from_the_future_are_refused() {
    let mut server = Store::default();
    let ahead = NOW + MAX_FUTURE_MS + 1;
    let plan = server
        .push(&[record(R1, live("tk_a", "vs1:a", None, rev(ahead, 1)))])
        .unwrap();
    assert_eq!(plan.refused[0].reason, Refusal::RevInFuture);
    let plan = server
        .push(&[record(
            R1,
            live("tk_a", "vs1:a", None, rev(NOW + MAX_FUTURE_MS, 1)),
        )])
        .unwrap();
    assert_eq!(plan.stored, 1, "up to the limit is fine");
}

fn local(rows: &[(Row, bool)]) -> HashMap<RowKey, Stored> {
    rows.iter()
        .enumerate()
        .map(|(i, (row, dirty))| {
            (
                row.key(),
                Stored {
                    seq: i as u64 + 1,
                    dirty: dirty.then_some(i as u64 + 1),
                    row: row.clone(),
                },
            )
        })
        .collect()
}

/// [`plan_pull`] with the replica's stamp for its own removals at [`NOW`].
fn pull(rows: &[Row], view: &ReplicaView) -> PullPlan {
    plan_pull(rows, &[], view, rev(NOW, 77), NOW)
}

fn put_of(ops: &[WriteOp]) -> Vec<(Row, bool)> {
    ops.iter()
        .filter_map(|op| match op {
            WriteOp::PutVersion { row, dirty } => Some(((**row).clone(), *dirty)),
            _ => None,
        })
        .collect()
}

/// The rows a plan writes again as local writes (an identity or slot revived here).
fn shared_of(ops: &[WriteOp]) -> Vec<&MetaRow> {
    ops.iter()
        .filter_map(|op| match op {
            WriteOp::PutSharedMeta(row) => Some(row),
            _ => None,
        })
        .collect()
}

#[test]
fn a_pulled_version_that_beats_a_local_change_counts_as_a_conflict() {
    let mine = record(R1, live("tk_a", "vs1:mine", None, rev(100, 1)));
    let theirs = record(R1, live("tk_a", "vs1:theirs", None, rev(200, 2)));
    let view = ReplicaView {
        stored: local(&[(mine, true)]),
        ..ReplicaView::default()
    };
    let plan = pull(std::slice::from_ref(&theirs), &view);
    assert_eq!(plan.conflicts, 1);
    assert_eq!(
        put_of(&plan.ops),
        vec![(theirs, false)],
        "stored clean: the server has it"
    );
}

#[test]
fn a_local_change_that_partly_wins_stays_dirty() {
    let mut mine = live("tk_a", "vs1:mine", None, rev(100, 1));
    mine.expires_at = Some(9);
    mine.expires_rev = rev(300, 1);
    let theirs = record(R1, live("tk_a", "vs1:theirs", None, rev(200, 2)));
    // The last sync ended at 150: the local value (100) came from before it, the local
    // renewal (300) is a change made here since.
    let view = ReplicaView {
        stored: local(&[(record(R1, mine.clone()), true)]),
        since: rev(150, 0),
        ..ReplicaView::default()
    };
    let plan = pull(std::slice::from_ref(&theirs), &view);
    let puts = put_of(&plan.ops);
    assert_eq!(puts.len(), 1);
    assert!(
        puts[0].1,
        "the merge holds a local field the server lacks: still dirty"
    );
    assert_eq!(plan.conflicts, 0, "the local change (the renewal) survived");
    // Had the value been edited here too (after the last sync), losing it is a conflict.
    let view = ReplicaView {
        stored: local(&[(record(R1, mine), true)]),
        since: rev(50, 0),
        ..ReplicaView::default()
    };
    assert_eq!(pull(std::slice::from_ref(&theirs), &view).conflicts, 1);
}

#[test]
fn a_replica_keeps_what_the_server_displaced_or_what_a_pulled_record_would_shadow() {
    let mine = record(R1, live("tk_same", "vs1:mine", None, rev(100, 1)));
    let view = ReplicaView {
        stored: local(&[(mine, true)]),
        ..ReplicaView::default()
    };
    let plan = pull(&[gone(R1, rev(200, 9), TombstoneReason::Displaced)], &view);
    assert_eq!(plan.stranded, vec![R1.to_owned()]);
    assert!(put_of(&plan.ops).is_empty(), "the local record stays");

    let mut theirs = live("tk_same", "vs1:theirs", None, rev(50, 2));
    theirs.created_at = 1; // created before the local one (10): it keeps the token
    let view = ReplicaView {
        token_holders: HashMap::from([("tk_same".to_owned(), (R1.to_owned(), 10))]),
        ..ReplicaView::default()
    };
    let plan = pull(&[record(R2, theirs)], &view);
    assert_eq!(plan.parked, vec![R2.to_owned()]);
    assert_eq!(plan.stranded, vec![R1.to_owned()]);
    assert!(put_of(&plan.ops).is_empty());

    let view = ReplicaView {
        linked: HashMap::from([(P1.to_owned(), vec![R1.to_owned()])]),
        ..ReplicaView::default()
    };
    let plan = pull(&[meta_gone(identity_tag_key(P1), rev(200, 2))], &view);
    assert!(
        put_of(&plan.ops).is_empty(),
        "an identity local records use stays"
    );
    // A pulled rotation moves the record first; then the identity goes here too.
    let view = ReplicaView {
        stored: local(&[(
            record(R1, live("tk_a", "vs1:a", Some(P1), rev(100, 1))),
            false,
        )]),
        linked: HashMap::from([(P1.to_owned(), vec![R1.to_owned()])]),
        ..ReplicaView::default()
    };
    let moved = record(R1, live("tk_a", "vs1:b", Some(P2), rev(200, 2)));
    let plan = pull(
        &[moved, meta_gone(identity_tag_key(P1), rev(200, 2))],
        &view,
    );
    assert_eq!(
        put_of(&plan.ops).len(),
        2,
        "the record moved, so the identity may go"
    );
}

/// A displaced record whose copy here is clean and sealed under an identity removed here for
/// good opens with no secret here: the displacement applies (the replica that wrote it keeps
/// it stranded). So does one under an identity emptied here that the server removed for good,
/// in the page or in an earlier one whose removal waits here (`retired`). A record written
/// here, or under an identity only emptied here (it comes back with a write of it), or live
/// here whatever the server did (its writer, which pushed it: it opens here), stays stranded.
#[test]
fn a_displaced_clean_copy_under_an_identity_removed_here_is_applied() {
    let displaced = gone(R1, rev(200, 9), TombstoneReason::Displaced);
    let mine = record(R1, live("tk_same", "vs1:mine", Some(P1), rev(100, 1)));
    let tag = |emptied: bool| Row::Meta {
        key: identity_tag_key(P1),
        version: MetaVersion::Gone {
            rev: rev(150, 1),
            deleted_at: 5,
            emptied,
        },
    };
    let live_here = identity(P1, rev(50, 1)).into_iter().next();
    // (written here, the identity's tag here, its removal for good waiting here, in the page,
    // whether the record stays stranded)
    let cases = [
        (false, Some(tag(false)), false, false, false),
        (true, Some(tag(false)), false, false, true),
        (false, Some(tag(true)), false, false, true),
        (false, Some(tag(true)), true, false, false),
        (false, Some(tag(true)), false, true, false),
        (true, Some(tag(true)), true, true, true),
        (false, live_here.clone(), false, false, true),
        (false, live_here.clone(), true, false, true),
        (false, live_here, false, true, true),
    ];
    for (dirty, stored_tag, waiting, in_page, stranded) in cases {
        let mut rows = vec![(mine.clone(), dirty)];
        rows.extend(stored_tag.clone().map(|t| (t, false)));
        let view = ReplicaView {
            stored: local(&rows),
            retired: if waiting { vec![P1.to_owned()] } else { vec![] },
            ..ReplicaView::default()
        };
        let mut page = vec![displaced.clone()];
        if in_page {
            page.push(tag(false));
        }
        let plan = pull(&page, &view);
        let what = format!(
            "written here: {dirty}, tag here: {stored_tag:?}, waiting: {waiting}, in the page: {in_page}"
        );
        // The record's puts exactly (a removal in the page may be applied beside them).
        let records: Vec<(Row, bool)> = put_of(&plan.ops)
            .into_iter()
            .filter(|(row, _)| matches!(row, Row::Record { .. }))
            .collect();
        if stranded {
            assert_eq!(plan.stranded, vec![R1.to_owned()], "{what}");
            assert!(records.is_empty(), "{what}");
        } else {
            assert!(plan.stranded.is_empty(), "{what}");
            assert_eq!(records, vec![(displaced.clone(), false)], "{what}");
        }
        if !in_page {
            // Nothing but the record is written.
            assert_eq!(put_of(&plan.ops).len(), records.len(), "{what}");
        }
    }
}

// ---- laws ----

fn config() -> ProptestConfig {
    let mut config = ProptestConfig::default();
    if std::env::var_os("PROPTEST_RNG_SEED").is_none() {
        config.rng_seed = RngSeed::Fixed(14);
    }
    config
}

/// Versions of three record ids and two settings, from a small space of revisions so that
/// replicas often write the same row.
fn row() -> impl Strategy<Value = Row> {
    let at = (1i64..4, 1u64..4).prop_map(|(wall, node)| rev(wall, node));
    let id = prop_oneof![Just(R1), Just(R2), Just("00000000000000000000000000000003")];
    prop_oneof![
        4 => (id.clone(), prop_oneof![Just("vs1:x"), Just("vs1:y")], at.clone(), at.clone(), proptest::option::of(0i64..3))
            .prop_map(|(id, value, v, e, expires)| {
                let mut l = live(&format!("tk_{}", &id[31..]), value, None, v);
                l.expires_rev = e;
                l.expires_at = expires;
                record(id, l)
            }),
        1 => (id, at.clone()).prop_map(|(id, r)| gone(id, r, TombstoneReason::Deleted)),
        2 => (prop_oneof![Just("a"), Just("b")], prop_oneof![Just("1"), Just("2")], at.clone())
            .prop_map(|(k, v, r)| meta(MetaKey::new("vault", "settings", k), v, r)),
        1 => (prop_oneof![Just("a"), Just("b")], at).prop_map(|(k, r)| meta_gone(MetaKey::new("vault", "settings", k), r)),
    ]
}

/// One replica's page: each key at most once, as a client sends it.
fn page() -> impl Strategy<Value = Vec<Row>> {
    proptest::collection::vec(row(), 0..6).prop_map(|rows| {
        let mut seen = std::collections::HashSet::new();
        rows.into_iter().filter(|r| seen.insert(r.key())).collect()
    })
}

proptest! {
    #![proptest_config(config())]

    /// Pages from several replicas leave the server in the same state whatever order they
    /// arrive in, and pushing any of them again changes nothing.
    #[test]
    fn pages_converge_in_any_order(pages in proptest::collection::vec(page(), 1..4), seed in any::<u64>()) {
        let mut forward = Store::default();
        for p in &pages {
            forward.push(p).unwrap();
        }
        let mut order: Vec<usize> = (0..pages.len()).collect();
        let mut s = seed;
        for i in (1..order.len()).rev() {
            s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            order.swap(i, (s >> 33) as usize % (i + 1));
        }
        let mut shuffled = Store::default();
        for &i in &order {
            shuffled.push(&pages[i]).unwrap();
        }
        prop_assert_eq!(forward.rows(), shuffled.rows());
        for p in &pages {
            let again = forward.push(p).unwrap();
            prop_assert_eq!(again.stored, 0);
        }
    }

    /// A replica that pulls what the server holds ends with the server's rows, whatever it held:
    /// clean rows take the server's version, dirty ones keep only what beats it, and a dirty
    /// row that still differs stays dirty to be pushed.
    #[test]
    fn a_pull_then_a_push_converges(server_rows in page(), local_rows in page()) {
        let mut server = Store::with(&server_rows);
        let mut replica = Store::with(&local_rows);
        // Pull everything the server has.
        let pulled: Vec<Row> = server.rows().into_values().collect();
        let view = ReplicaView {
            stored: local_rows.iter().map(|r| (r.key(), replica.stored(&r.key()).map(|s| Stored { dirty: Some(s.seq), ..s }).unwrap())).collect(),
            ..ReplicaView::default()
        };
        let plan = pull(&pulled, &view);
        // Every local row starts dirty; a put says whether it still is.
        let mut dirty: BTreeMap<RowKey, bool> = local_rows.iter().map(|r| (r.key(), true)).collect();
        for (row, is_dirty) in put_of(&plan.ops) {
            dirty.insert(row.key(), is_dirty);
            replica.put(row);
        }
        let dirty: Vec<Row> = replica
            .rows()
            .into_iter()
            .filter(|(k, _)| dirty.get(k) == Some(&true))
            .map(|(_, row)| row)
            .collect();
        // Push what is still dirty; take back what the server reports.
        let report = server.push(&dirty).unwrap();
        for s in report.superseded {
            replica.put(s.current);
        }
        prop_assert_eq!(server.rows(), replica.rows());
    }
}

/// The removal of identity `id`'s rows (and of slot `slot`'s, owned by it, when given) at `at`.
fn removal(id: &str, slot: Option<&str>, at: Rev, emptied: bool) -> Vec<Row> {
    let keys = [(id, "tag"), (id, "dek")].into_iter().chain(
        slot.into_iter()
            .flat_map(|s| [(s, "tag"), (s, "dek"), (s, "identity")]),
    );
    keys.map(|(object, key)| Row::Meta {
        key: MetaKey::new("password_identity", object, key),
        version: MetaVersion::Gone {
            rev: at,
            deleted_at: 5,
            emptied,
        },
    })
    .collect()
}

/// The local rows of identity `P1` with a slot `P2`, and a record `R1` sealed under `P1`, not
/// synced yet (the view a replica plans a pulled removal of them against).
fn identity_in_use(owners: bool) -> ReplicaView {
    let mut rows: Vec<(Row, bool)> = identity(P1, rev(100, 1))
        .into_iter()
        .chain(identity(P2, rev(100, 1)))
        .map(|row| (row, false))
        .collect();
    rows.push((
        meta(
            MetaKey::new("password_identity", P2, "identity"),
            P1,
            rev(100, 1),
        ),
        false,
    ));
    ReplicaView {
        stored: local(&rows),
        linked: HashMap::from([(P1.to_owned(), vec![R1.to_owned()])]),
        owners: if owners {
            HashMap::from([(P2.to_owned(), P1.to_owned())])
        } else {
            HashMap::new()
        },
        ..ReplicaView::default()
    }
}

/// FORMAT.md "Revisions and the conflict rule": an identity emptied elsewhere (its last record
/// deleted there) while a local record still uses it is written again here, every row of it and
/// of its slot, as local writes (stamped later, dirty), and nothing of it is removed or set
/// aside; its next push delivers it with the record.
#[test]
fn a_pulled_emptied_removal_of_an_identity_in_use_here_revives_it_with_its_slot() {
    let rows = removal(P1, Some(P2), rev(200, 2), true);
    let plan = pull(&rows, &identity_in_use(true));
    assert!(put_of(&plan.ops).is_empty(), "{:?}", plan.ops);
    assert!(plan.deferred.is_empty());
    let revived: Vec<&MetaKey> = shared_of(&plan.ops)
        .into_iter()
        .map(|row| &row.key)
        .collect();
    assert_eq!(
        revived,
        rows.iter()
            .map(|r| match r {
                Row::Meta { key, .. } => key,
                Row::Record { .. } => unreachable!(),
            })
            .collect::<Vec<_>>()
    );
    assert_eq!(plan.conflicts, 0);
}

/// FORMAT.md "Revisions and the conflict rule": the server keeps the live version each emptied
/// removal replaced, and a replica that writes the identity back takes that version when it is
/// later than its own (a password change it had not pulled), as a whole object: when the server
/// kept only one of the object's rows at that revision, or kept them vacant, the replica writes
/// its own rows back.
#[test]
fn an_emptied_identity_comes_back_as_the_server_last_held_it() {
    // P1's rows as a re-wrap at 150 left them, with `tag`.
    let at_150 = |tag: &str| {
        vec![
            meta(identity_tag_key(P1), tag, rev(150, 3)),
            meta(
                MetaKey::new("password_identity", P1, "dek"),
                "vs1k:changed",
                rev(150, 3),
            ),
        ]
    };
    // The server: identity P1 re-wrapped at 150 (a password change), then emptied at 200.
    let rewrapped = at_150(&"c".repeat(64));
    let mut server = Store::with(&rewrapped);
    let emptied = removal(P1, None, rev(200, 2), true);
    server.push(&emptied).unwrap();
    let kept: Vec<(String, String)> = server
        .local
        .iter()
        .map(|(k, v)| {
            (
                format!("{}/{}/{}", k.object_type, k.object_id, k.key),
                v.clone(),
            )
        })
        .collect();
    assert_eq!(
        kept,
        vec![
            (
                format!("sync/replaced/{P1}/dek"),
                format!("{} vs1k:changed", rev(150, 3))
            ),
            (
                format!("sync/replaced/{P1}/tag"),
                format!("{} {}", rev(150, 3), "c".repeat(64))
            ),
        ]
    );
    // A replica still at P1's rows of 100 writes the server's rows back.
    let revived = |replaced: &[Row]| {
        let plan = plan_pull(
            &emptied,
            replaced,
            &identity_in_use(false),
            rev(NOW, 77),
            NOW,
        );
        (shared_of(&plan.ops).into_iter())
            .map(|row| (row.key.key.clone(), row.value.clone()))
            .collect::<Vec<_>>()
    };
    let theirs = vec![
        ("tag".to_owned(), "c".repeat(64)),
        ("dek".to_owned(), "vs1k:changed".to_owned()),
    ];
    let own = vec![
        ("tag".to_owned(), "a".repeat(64)),
        ("dek".to_owned(), "vs1k:x".to_owned()),
    ];
    assert_eq!(revived(&rewrapped), theirs);
    // No replaced version, an older one, or only half an object: its own rows.
    assert_eq!(revived(&[]), own);
    let older = identity(P1, rev(50, 3));
    assert_eq!(revived(&older), own);
    assert_eq!(revived(&rewrapped[..1]), own);
    // Nor the server's rows when they are vacant (the secret removed while an added one opened
    // the identity, which went with it): they would leave the record with no secret.
    assert_eq!(revived(&at_150(&"0".repeat(64))), own);
}

/// A replica that changed the password and then deleted the identity's last record before it
/// synced pushes the removal with the version it replaced there: the server keeps the latest
/// of that, its own and what it kept from an earlier removal, so a replica that wrote under
/// the identity brings the new password's rows back, not the old ones.
#[test]
fn a_pushed_removal_keeps_the_latest_version_it_replaced_anywhere() {
    let object = |tag: &str, at: Rev| {
        vec![
            meta(identity_tag_key(P1), tag, at),
            meta(MetaKey::new("password_identity", P1, "dek"), "vs1k:w", at),
        ]
    };
    let kept = |server: &Store| {
        let text = |key: &str| {
            let key = replaced_key(&MetaKey::new("password_identity", P1, key));
            server.local.get(&key).cloned()
        };
        (text("tag"), text("dek"))
    };
    let expect = |tag: &str, at: Rev| (Some(format!("{at} {tag}")), Some(format!("{at} vs1k:w")));
    // The server holds P1 as of 100; the replica changed the password at 150, then emptied it.
    let mut server = Store::with(&object(&"a".repeat(64), rev(100, 3)));
    let changed = object(&"c".repeat(64), rev(150, 3));
    server
        .push_replaced(&removal(P1, None, rev(200, 2), true), &changed)
        .unwrap();
    assert_eq!(kept(&server), expect(&"c".repeat(64), rev(150, 3)));
    // A later removal from a replica that held an older version keeps the kept one, unwritten.
    let plan = server
        .push_replaced(
            &removal(P1, None, rev(250, 2), true),
            &object(&"a".repeat(64), rev(100, 3)),
        )
        .unwrap();
    assert_eq!(plan.stored, 2);
    assert_eq!(kept(&server), expect(&"c".repeat(64), rev(150, 3)));
    // One that held a later one keeps that, guarding the version it read.
    let view = server.server_view(&removal(P1, None, rev(300, 2), true));
    let later = object(&"d".repeat(64), rev(180, 3));
    let plan = plan_push(
        &removal(P1, None, rev(300, 2), true),
        &later,
        &view,
        rev(NOW, 99),
        NOW,
    )
    .unwrap();
    let guarded = (plan.ops.iter())
        .filter(|op| matches!(op, WriteOp::ExpectMeta { key, value: Some(_) } if key.object_type == "sync"))
        .count();
    assert_eq!(guarded, 2, "{:?}", plan.ops);
    server.apply(plan.ops);
    assert_eq!(kept(&server), expect(&"d".repeat(64), rev(180, 3)));
    // The removal it holds, pushed back by a replica that pulled it over a later change of its
    // own (a third replica's password change): nothing stored again, the change kept.
    let plan = server
        .push_replaced(
            &removal(P1, None, rev(300, 2), true),
            &object(&"e".repeat(64), rev(190, 4)),
        )
        .unwrap();
    assert_eq!(plan.stored, 0);
    assert_eq!(kept(&server), expect(&"e".repeat(64), rev(190, 4)));
    // The same push again with an older version: the kept one stays.
    server
        .push_replaced(
            &removal(P1, None, rev(300, 2), true),
            &object(&"a".repeat(64), rev(100, 3)),
        )
        .unwrap();
    assert_eq!(kept(&server), expect(&"e".repeat(64), rev(190, 4)));
    // The server's own version wins over an older one the page carries.
    let mut server = Store::with(&object(&"c".repeat(64), rev(150, 3)));
    server
        .push_replaced(
            &removal(P1, None, rev(200, 2), true),
            &object(&"a".repeat(64), rev(120, 3)),
        )
        .unwrap();
    assert_eq!(kept(&server), expect(&"c".repeat(64), rev(150, 3)));
}

/// P1's rows vacant (its password moved onto the slot P2) as this replica holds them, with a
/// record still under P1, and the slot removed here.
fn vacant_identity_in_use() -> ReplicaView {
    let vacant = format!("{}{}", "0".repeat(32), "c".repeat(32));
    let mut rows: Vec<(Row, bool)> = vec![
        (meta(identity_tag_key(P1), &vacant, rev(150, 3)), false),
        (
            meta(
                MetaKey::new("password_identity", P1, "dek"),
                "vs1k:v",
                rev(150, 3),
            ),
            false,
        ),
    ];
    rows.extend(
        removal(P1, Some(P2), rev(120, 1), false)
            .into_iter()
            .skip(2)
            .map(|r| (r, true)),
    );
    ReplicaView {
        stored: local(&rows),
        linked: HashMap::from([(P1.to_owned(), vec![R1.to_owned()])]),
        ..ReplicaView::default()
    }
}

/// The slot P2 of P1 as the server kept it with the identity's emptied removal.
fn kept_slot(at: Rev) -> Vec<Row> {
    vec![
        meta(identity_tag_key(P2), &"b".repeat(64), at),
        meta(MetaKey::new("password_identity", P2, "dek"), "vs1k:s", at),
        meta(MetaKey::new("password_identity", P2, "identity"), P1, at),
    ]
}

/// A pulled write-back of the version the server kept with an emptied removal (another replica
/// brought the identity back with it) over a change made here after that version and not pushed
/// yet (a password change before the deletion): the change is written again, as a local write
/// stamped after the page, and the write-back is not stored. Not over a clean row, a change
/// older than the kept version, a write-back of the same version made here, or when the
/// server's answer covers only one of the object's `tag` and `dek` (its rows would mix).
#[test]
fn a_change_made_here_after_the_kept_version_beats_its_write_back() {
    let kept = identity(P1, rev(100, 3));
    let back = identity(P1, rev(300, 2));
    let mine = |at: Rev| {
        vec![
            meta(identity_tag_key(P1), &"c".repeat(64), at),
            meta(MetaKey::new("password_identity", P1, "dek"), "vs1k:c", at),
        ]
    };
    let plan = |local_rows: Vec<Row>, dirty: bool, replaced: &[Row]| {
        let rows: Vec<(Row, bool)> = local_rows.into_iter().map(|r| (r, dirty)).collect();
        let view = ReplicaView {
            stored: local(&rows),
            ..ReplicaView::default()
        };
        plan_pull(&back, replaced, &view, rev(NOW, 77), NOW)
    };
    let written = plan(mine(rev(150, 1)), true, &kept);
    assert_eq!(
        shared_of(&written.ops)
            .iter()
            .map(|row| row.value.as_str())
            .collect::<Vec<_>>(),
        [&*"c".repeat(64), "vs1k:c"],
        "{:?}",
        written.ops
    );
    assert!(put_of(&written.ops).is_empty(), "{:?}", written.ops);
    assert_eq!(written.conflicts, 0);
    let taken = |p: PullPlan| {
        assert!(shared_of(&p.ops).is_empty(), "{:?}", p.ops);
        put_of(&p.ops)
            .into_iter()
            .map(|(row, _)| row)
            .collect::<Vec<_>>()
    };
    assert_eq!(taken(plan(mine(rev(150, 1)), false, &kept)), back, "clean");
    assert_eq!(taken(plan(mine(rev(90, 1)), true, &kept)), back, "older");
    assert_eq!(
        taken(plan(mine(rev(150, 1)), true, &kept[..1])),
        back,
        "half"
    );
    assert_eq!(taken(plan(mine(rev(150, 1)), true, &[])), back, "none");
    // This replica wrote the kept version back too, earlier: nothing to keep.
    assert_eq!(
        taken(plan(identity(P1, rev(250, 1)), true, &kept)),
        back,
        "same"
    );
}

/// A pulled emptied removal that replaces a change made here and not pushed yet (a password
/// change on a replica holding no record under the identity) keeps that change in the local
/// row a deletion made here would write, and leaves the removal dirty, so that the next push
/// sends it back with the change. A clean row replaced the same way keeps nothing: the server
/// had that version already.
#[test]
fn a_pulled_emptied_removal_over_a_change_made_here_keeps_the_change_and_goes_back() {
    let page = removal(P1, None, rev(200, 2), true);
    for dirty in [true, false] {
        let rows: Vec<(Row, bool)> = identity(P1, rev(150, 1))
            .into_iter()
            .map(|row| (row, dirty))
            .collect();
        let view = ReplicaView {
            stored: local(&rows),
            ..ReplicaView::default()
        };
        let plan = pull(&page, &view);
        assert_eq!(
            put_of(&plan.ops),
            page.iter()
                .map(|row| (row.clone(), dirty))
                .collect::<Vec<_>>(),
            "the removal is applied, dirty only over a change made here"
        );
        let kept: Vec<(MetaKey, String)> = (plan.ops.iter())
            .filter_map(|op| match op {
                WriteOp::PutMeta(row) => Some((row.key.clone(), row.value.clone())),
                _ => None,
            })
            .collect();
        let expected: Vec<(MetaKey, String)> = if dirty {
            (rows.iter())
                .map(|(row, _)| match row {
                    Row::Meta {
                        key,
                        version: MetaVersion::Value { rev, value },
                    } => (replaced_key(key), format!("{rev} {value}")),
                    _ => unreachable!(),
                })
                .collect()
        } else {
            Vec::new()
        };
        assert_eq!(kept, expected, "dirty: {dirty}");
    }
}

/// A replica that writes back an identity whose rows are vacant writes back the slots the
/// server kept with it too (only they open it), over its own removal of one that the server
/// refused as the identity's last secret; not when the identity has a secret of its own, not
/// a slot it holds live (its own rows come back), and not half a slot.
#[test]
fn a_vacant_identity_comes_back_with_the_slots_the_server_kept() {
    let view = vacant_identity_in_use();
    let page: Vec<Row> = removal(P1, Some(P2), rev(200, 2), true);
    let mut replaced = vec![
        meta(
            identity_tag_key(P1),
            &format!("{}{}", "0".repeat(32), "c".repeat(32)),
            rev(150, 3),
        ),
        meta(
            MetaKey::new("password_identity", P1, "dek"),
            "vs1k:v",
            rev(150, 3),
        ),
    ];
    replaced.extend(kept_slot(rev(110, 4)));
    let written = |replaced: &[Row], view: &ReplicaView| {
        let plan = plan_pull(&page[..2], replaced, view, rev(NOW, 77), NOW);
        (shared_of(&plan.ops).into_iter())
            .map(|row| format!("{}/{}", &row.key.object_id[..4], row.key.key))
            .collect::<Vec<_>>()
    };
    assert_eq!(
        written(&replaced, &view),
        [
            "p_11/tag",
            "p_11/dek",
            "p_22/tag",
            "p_22/dek",
            "p_22/identity"
        ]
    );
    // A slot this replica never held, its removal later in the page than the identity's: its
    // rows are written back after the page's removal of them, so they stand.
    let mut never_held = vacant_identity_in_use();
    never_held
        .stored
        .retain(|key, _| matches!(key, RowKey::Meta(k) if k.object_id == P1));
    let plan = plan_pull(&page, &replaced, &never_held, rev(NOW, 77), NOW);
    for key in ["tag", "dek", "identity"] {
        let key = RowKey::Meta(MetaKey::new("password_identity", P2, key));
        let last = plan.ops.iter().rev().find(|op| match op {
            WriteOp::PutVersion { row, .. } => row.key() == key,
            WriteOp::PutSharedMeta(row) => RowKey::Meta(row.key.clone()) == key,
            _ => false,
        });
        assert!(
            matches!(last, Some(WriteOp::PutSharedMeta(_))),
            "{key:?}: {:?}",
            plan.ops
        );
    }
    // Half a slot, or a vacant one: not written.
    assert_eq!(written(&replaced[..4], &view), ["p_11/tag", "p_11/dek"]);
    let mut vacant_slot = replaced.clone();
    vacant_slot[2] = meta(
        identity_tag_key(P2),
        &format!("{}{}", "0".repeat(32), "d".repeat(32)),
        rev(110, 4),
    );
    assert_eq!(written(&vacant_slot, &view), ["p_11/tag", "p_11/dek"]);
    // An identity with a secret of its own needs no slot back.
    let own = identity_in_use(false);
    let plan = plan_pull(&page[..2], &replaced, &own, rev(NOW, 77), NOW);
    assert!(
        shared_of(&plan.ops)
            .iter()
            .all(|row| row.key.object_id == P1),
        "{:?}",
        plan.ops
    );
}

/// A page that takes an identity's last two secrets at two revisions (a `secretRemove` of one
/// slot, then a rotation whose removal of the identity the server refused as `referenced`,
/// which leaves its other slot's removal in the page): only the later taking is refused, which
/// leaves the identity a secret; the earlier removal stands. Before, both were refused, and the
/// removed secret opened the vault again (the simulation's seed 211).
#[test]
fn of_a_pages_removals_that_take_an_identitys_last_secrets_only_the_latest_is_refused() {
    let vacant = format!("{}{}", "0".repeat(32), "c".repeat(32));
    let slot = |id: &str, tag: &str| {
        vec![
            meta(identity_tag_key(id), tag, rev(100, 1)),
            meta(
                MetaKey::new("password_identity", id, "dek"),
                "vs1k:s",
                rev(100, 1),
            ),
            meta(
                MetaKey::new("password_identity", id, "identity"),
                P1,
                rev(100, 1),
            ),
        ]
    };
    let mut stored = vec![
        meta(identity_tag_key(P1), &vacant, rev(100, 1)),
        meta(
            MetaKey::new("password_identity", P1, "dek"),
            "vs1k:v",
            rev(100, 1),
        ),
    ];
    stored.extend(slot(P2, &"b".repeat(64)));
    stored.extend(slot(P3, &"d".repeat(64)));
    let server = Store::with(&stored);
    let gone = |id: &str, at: Rev| {
        ["tag", "dek", "identity"]
            .map(|k| meta_gone(MetaKey::new("password_identity", id, k), at))
            .to_vec()
    };
    let mut page = gone(P2, rev(150, 5));
    page.extend(gone(P3, rev(160, 5)));
    let mut view = server.server_view(&page);
    view.slots.secrets = vec![(P1.into(), vec![P2.into(), P3.into()])];
    for id in [P1, P2, P3] {
        let key = RowKey::Meta(identity_tag_key(id));
        view.stored
            .insert(key.clone(), server.stored(&key).unwrap());
    }
    let plan = plan_push(&page, &[], &view, rev(NOW, 99), NOW).unwrap();
    assert_eq!(plan.stored, 3, "{plan:?}");
    assert_eq!(
        plan.refused
            .iter()
            .map(|r| (r.i, r.reason))
            .collect::<Vec<_>>(),
        [3, 4, 5].map(|i| (i, Refusal::Referenced)),
    );
}

/// A replica writes back an identity emptied elsewhere, its own rows vacant (its password moved
/// onto a slot), with records it wrote under it; the slot was removed meanwhile. The server
/// refuses the identity's rows (they would bring it back with no secret), and so the records
/// too, as under a retired key: stored, they would open with nothing on every other replica,
/// the identity they name staying removed (the simulation's seed 324).
#[test]
fn records_under_an_identity_whose_write_back_is_refused_are_refused_too() {
    let vacant = format!("{}{}", "0".repeat(32), "c".repeat(32));
    let mut stored = removal(P1, None, rev(200, 2), true);
    stored.extend(
        ["tag", "dek", "identity"]
            .map(|k| meta_gone(MetaKey::new("password_identity", P2, k), rev(180, 3))),
    );
    let server = Store::with(&stored);
    let page = vec![
        meta(identity_tag_key(P1), &vacant, rev(300, 5)),
        meta(
            MetaKey::new("password_identity", P1, "dek"),
            "vs1k:x",
            rev(300, 5),
        ),
        record(R1, live("tk_a", "vs1:a", Some(P1), rev(300, 5))),
    ];
    let mut view = server.server_view(&page);
    view.slots.secrets = vec![(P1.into(), vec![P2.into()])];
    for (id, tag) in [(P1, "a".repeat(64)), (P2, "b".repeat(64))] {
        let key = identity_tag_key(id);
        view.kept
            .insert(key.clone(), Some(format!("{} {tag}", rev(110, 4))));
        if let Some(stored) = server.stored(&RowKey::Meta(key.clone())) {
            view.stored.insert(RowKey::Meta(key), stored);
        }
    }
    let plan = plan_push(&page, &[], &view, rev(NOW, 99), NOW).unwrap();
    assert_eq!(plan.stored, 0, "{plan:?}");
    let refused: Vec<(usize, Refusal)> = plan.refused.iter().map(|r| (r.i, r.reason)).collect();
    assert_eq!(
        refused,
        [
            (0, Refusal::Referenced),
            (1, Refusal::Referenced),
            (2, Refusal::RetiredKey)
        ]
    );
    let record_key = RowKey::Record(R1.into());
    assert!(
        !plan
            .ops
            .iter()
            .any(|op| matches!(op, WriteOp::PutVersion { row, .. } if row.key() == record_key)),
        "{:?}",
        plan.ops
    );
}

/// The server refuses a slot's final removal that would take the last secret of an identity it
/// holds removed as emptied (`referenced`), judging by the versions it kept: the identity may
/// come back for a record written elsewhere, vacant, and only that slot would open it. With a
/// secret of its own kept, the removal stands.
#[test]
fn a_slot_removal_that_takes_an_emptied_identitys_last_kept_secret_is_refused() {
    let vacant = format!("{}{}", "0".repeat(32), "c".repeat(32));
    let plan_for = |owner_tag: &str| {
        // Stored: P1 and its slot P2 removed as emptied.
        let server = Store::with(&removal(P1, Some(P2), rev(200, 2), true));
        let page = removal(P1, Some(P2), rev(150, 5), false)
            .into_iter()
            .skip(2)
            .collect::<Vec<_>>();
        let mut view = server.server_view(&page);
        view.slots.secrets = vec![(P1.into(), vec![P2.into()])];
        for (id, tag) in [(P1, owner_tag.to_owned()), (P2, "b".repeat(64))] {
            let key = identity_tag_key(id);
            view.kept
                .insert(key.clone(), Some(format!("{} {tag}", rev(110, 4))));
            if let Some(stored) = server.stored(&RowKey::Meta(key.clone())) {
                view.stored.insert(RowKey::Meta(key), stored);
            }
        }
        plan_push(&page, &[], &view, rev(NOW, 99), NOW).unwrap()
    };
    let refused = plan_for(&vacant);
    assert_eq!(refused.stored, 0, "{refused:?}");
    assert_eq!(refused.refused.len(), 3);
    assert!(
        refused
            .refused
            .iter()
            .all(|r| r.reason == Refusal::Referenced
                && matches!(
                    &r.current,
                    Some(Row::Meta {
                        version: MetaVersion::Gone { emptied: true, .. },
                        ..
                    })
                ))
    );
    let stands = plan_for(&"a".repeat(64));
    assert!(stands.refused.is_empty(), "{stands:?}");
}

/// A slot's emptied removal in a page that does not carry its identity's (the feed split them,/// A slot's emptied removal in a page that does not carry its identity's (the feed split them,
/// or this replica's later write of the identity beat that removal in an earlier page): the
/// identity stays live here, so the slot stays too, written again, and the identity's `tag`,
/// which decided it, is guarded. Without it the identity was left with no secret when its own
/// rows were vacant (the simulation's seed 177).
#[test]
fn a_slot_emptied_with_its_identity_stays_while_the_identity_does_here() {
    let mut view = identity_in_use(true);
    view.linked.clear();
    let slot_rows: Vec<Row> = removal(P1, Some(P2), rev(200, 2), true)
        .into_iter()
        .filter(|row| matches!(row, Row::Meta { key, .. } if key.object_id == P2))
        .collect();
    let plan = pull(&slot_rows, &view);
    assert!(put_of(&plan.ops).is_empty(), "{:?}", plan.ops);
    let written: Vec<&str> = (shared_of(&plan.ops).into_iter())
        .filter(|row| row.key.object_id == P2)
        .map(|row| row.key.key.as_str())
        .collect();
    assert_eq!(written, ["tag", "dek", "identity"]);
    let tag = RowKey::Meta(identity_tag_key(P1));
    assert!(
        plan.ops
            .iter()
            .any(|op| matches!(op, WriteOp::ExpectVersion { key, seq: Some(_) } if *key == tag)),
        "{:?}",
        plan.ops
    );
    // Once the identity is removed here too, the slot goes with it.
    let mut gone = identity_in_use(true);
    gone.linked.clear();
    for row in identity_gone(P1, rev(150, 1)) {
        gone.stored.insert(
            row.key(),
            Stored {
                seq: 9,
                dirty: None,
                row,
            },
        );
    }
    let plan = pull(&slot_rows, &gone);
    assert_eq!(put_of(&plan.ops).len(), 3, "{:?}", plan.ops);
}

/// A final removal (a rotation) of the same rows is set aside while the record uses the
/// identity (stranded until a rekey moves it), and so is the removal of its slot, which goes
/// with the identity: the record keeps opening with the slot's secret (the identity's own rows
/// may be a vacant slot). A slot removed alone (`secretRemove` elsewhere, for which the engine
/// names no owner) goes at once, whatever records use its identity.
#[test]
fn a_pulled_final_removal_of_an_identity_in_use_here_waits_with_its_slot() {
    let rows = removal(P1, Some(P2), rev(200, 2), false);
    let plan = pull(&rows, &identity_in_use(true));
    assert!(
        !plan
            .ops
            .iter()
            .any(|op| matches!(op, WriteOp::PutSharedMeta(_))),
        "{:?}",
        plan.ops
    );
    assert_eq!(plan.deferred, rows);
    assert!(put_of(&plan.ops).is_empty(), "{:?}", plan.ops);
    let alone = &rows[2..];
    let plan = pull(alone, &identity_in_use(false));
    assert!(plan.deferred.is_empty());
    assert_eq!(
        put_of(&plan.ops),
        alone.iter().map(|r| (r.clone(), false)).collect::<Vec<_>>()
    );
}

/// Slot `P2` of identity `P1`, pulled live at `at`: its three rows.
fn slot_of_p1(at: Rev) -> Vec<Row> {
    let mut rows = identity(P2, at);
    rows.push(meta(
        MetaKey::new("password_identity", P2, "identity"),
        P1,
        at,
    ));
    rows
}

/// A replica that removed identity `P1` (a rotation, `emptied` false; or its last record
/// deleted) and has not pushed the removal: the view it plans a pulled slot of `P1` against.
fn removed_here(emptied: bool) -> ReplicaView {
    let rows: Vec<(Row, bool)> = removal(P1, None, rev(150, 1), emptied)
        .into_iter()
        .map(|row| (row, true))
        .collect();
    ReplicaView {
        stored: local(&rows),
        orphaned: vec![(P2.to_owned(), P1.to_owned())],
        // The engine reads the links of both, and has an entry for each.
        linked: HashMap::from([(P1.to_owned(), vec![]), (P2.to_owned(), vec![])]),
        ..ReplicaView::default()
    }
}

/// SYNC.md 7 on a replica: a slot pulled for an identity this replica removed before the server
/// heard of it goes here at once, as it goes on the server: each row a removal at the
/// replica's stamp, as its identity went (for good or emptied), dirty so that it is pushed;
/// and the plan commits only while the identity is still removed here.
#[test]
fn a_pulled_slot_of_an_identity_removed_here_goes_as_its_identity_went() {
    for emptied in [false, true] {
        let view = removed_here(emptied);
        let plan = pull(&slot_of_p1(rev(200, 2)), &view);
        let removed: Vec<(Row, bool)> = slot_of_p1(rev(200, 2))
            .into_iter()
            .map(|row| {
                let key = match row {
                    Row::Meta { key, .. } => key,
                    Row::Record { .. } => unreachable!(),
                };
                let version = MetaVersion::Gone {
                    rev: rev(NOW, 77),
                    deleted_at: NOW,
                    emptied,
                };
                (Row::Meta { key, version }, true)
            })
            .collect();
        assert_eq!(put_of(&plan.ops), removed, "emptied: {emptied}");
        let owner_tag = RowKey::Meta(identity_tag_key(P1));
        assert!(plan.ops.contains(&WriteOp::ExpectVersion {
            seq: Some(view.stored[&owner_tag].seq),
            key: owner_tag,
        }));
        assert_eq!(plan.applied, 3);
        assert_eq!(plan.conflicts, 0);
    }
}

/// The same slot is stored as pulled when the page brings its identity back (a later write of
/// an emptied identity elsewhere), when a record, pulled or local, is sealed under its object
/// (an identity carrying a forged `identity` row: records link to identities, never to slots),
/// or when one is sealed under its identity (written elsewhere meanwhile: the server will
/// refuse this replica's removal of the identity, `referenced`, and keep the slot with it).
#[test]
fn a_pulled_slot_stays_when_its_identity_comes_back_or_is_an_identity() {
    let slot = slot_of_p1(rev(200, 2));
    let mut revived = identity(P1, rev(300, 3));
    revived.extend(slot.clone());
    let mut sealed = slot.clone();
    sealed.push(record(R1, live("tk_a", "vs1:x", Some(P2), rev(200, 2))));
    let mut owner_sealed = slot.clone();
    owner_sealed.push(record(R1, live("tk_a", "vs1:x", Some(P1), rev(200, 2))));
    let linked_here = |id: &str| {
        let mut view = removed_here(false);
        view.linked.insert(id.to_owned(), vec![R2.to_owned()]);
        view
    };
    for (case, rows, view) in [
        ("revived", revived, removed_here(true)),
        ("sealed under it", sealed, removed_here(true)),
        ("linked here", slot.clone(), linked_here(P2)),
        (
            "its identity sealing a pulled record",
            owner_sealed,
            removed_here(false),
        ),
        ("its identity linked here", slot.clone(), linked_here(P1)),
    ] {
        let plan = pull(&rows, &view);
        let stored = put_of(&plan.ops);
        for row in &slot {
            assert!(stored.contains(&(row.clone(), false)), "{case}: {stored:?}");
        }
    }
}

/// A pulled record that names the identity does not keep the slot when the merge keeps this
/// replica's re-seal of it under another identity (its rotation, later): after the page no
/// record uses the identity, and the server will accept its removal.
#[test]
fn a_pulled_record_resealed_here_under_another_identity_does_not_keep_the_slot() {
    let mut view = removed_here(false);
    let resealed = record(R1, live("tk_a", "vs1:new", Some(P3), rev(160, 1)));
    view.stored.insert(
        resealed.key(),
        Stored {
            seq: 9,
            dirty: Some(9),
            row: resealed,
        },
    );
    let mut rows = slot_of_p1(rev(200, 2));
    rows.push(record(R1, live("tk_a", "vs1:old", Some(P1), rev(120, 2))));
    let plan = pull(&rows, &view);
    let removed: Vec<RowKey> = put_of(&plan.ops)
        .into_iter()
        .filter(|(row, dirty)| *dirty && row.is_gone())
        .map(|(row, _)| row.key())
        .collect();
    assert_eq!(
        removed,
        slot_of_p1(rev(200, 2))
            .iter()
            .map(Row::key)
            .collect::<Vec<_>>()
    );
}

/// A vacant first slot's `tag` (FORMAT.md "Secret slots"): the own rows of an identity whose
/// own secret was removed while an added one still opens it.
fn vacant_tag(id: &str, at: Rev) -> Row {
    meta(
        identity_tag_key(id),
        &format!("{}{}", "0".repeat(32), "c".repeat(32)),
        at,
    )
}

/// Plan `page` on `server` with the secrets of `P1` read: its own rows and its slot `P2`.
fn push_with_secrets_of_p1(server: &mut Store, page: &[Row]) -> PushPlan {
    let mut view = server.server_view(page);
    view.slots.secrets = vec![(P1.into(), vec![P2.into()])];
    for id in [P1, P2] {
        let key = RowKey::Meta(identity_tag_key(id));
        if let Some(stored) = server.stored(&key) {
            view.stored.insert(key, stored);
        }
    }
    let mut plan = plan_push(page, &[], &view, rev(NOW, 99), NOW).unwrap();
    server.apply(std::mem::take(&mut plan.ops));
    plan
}

/// Two replicas that each removed one of the last two secrets of `P1`: the server stores the
/// first removal and refuses the second (`referenced`), answering with the rows it keeps, which
/// the replica takes back. Whichever arrives second is refused: the slot's removal after the
/// own rows went vacant, and the own rows' vacancy after the slot went.
#[test]
fn the_removal_of_an_identitys_last_secret_is_refused_with_what_to_take_back() {
    let slot = slot_of_p1(rev(100, 1));
    let vacancy = vec![
        vacant_tag(P1, rev(200, 2)),
        meta(
            MetaKey::new("password_identity", P1, "dek"),
            "vs1k:y",
            rev(200, 2),
        ),
    ];
    let slot_removal: Vec<Row> = slot
        .iter()
        .map(|row| match row {
            Row::Meta { key, .. } => meta_gone(key.clone(), rev(200, 3)),
            Row::Record { .. } => unreachable!(),
        })
        .collect();
    for (first, second) in [(&vacancy, &slot_removal), (&slot_removal, &vacancy)] {
        let mut server = Store::with(&[identity(P1, rev(100, 1)), slot.clone()].concat());
        let plan = push_with_secrets_of_p1(&mut server, first);
        assert_eq!(
            plan.stored,
            first.len() as u64,
            "one removal leaves a secret"
        );
        assert!(plan.refused.is_empty());
        let before = server.rows();
        let plan = push_with_secrets_of_p1(&mut server, second);
        assert_eq!(plan.stored, 0);
        assert_eq!(
            server.rows(),
            before,
            "nothing of the second removal is stored"
        );
        assert_eq!(plan.refused.len(), second.len());
        for (i, refused) in plan.refused.iter().enumerate() {
            assert_eq!((refused.i, refused.reason), (i, Refusal::Referenced));
            let key = second[i].key();
            assert_eq!(
                refused.current.as_ref(),
                before.get(&key),
                "what to take back"
            );
        }
    }
}

/// A local slot of an identity a pulled page removes goes with it (the remover never saw the
/// slot, so the page does not remove it, or its removal loses to a later write here: the slot
/// written again while a local record still used the identity, which the page then deletes).
/// Left, it named a removed identity, and a writer sealed under that identity through it
/// (simulation, seed 126). Its rows go at the replica's stamp, as the identity went, dirty.
#[test]
fn a_local_slot_goes_with_the_identity_a_pulled_page_removes() {
    for written_again in [false, true] {
        let mut local_rows: Vec<(Row, bool)> = identity(P1, rev(100, 1))
            .into_iter()
            .map(|row| (row, false))
            .collect();
        // The slot as stored here, at a revision past the page's removal when written again.
        let slot_at = if written_again {
            rev(300, 3)
        } else {
            rev(100, 1)
        };
        local_rows.extend(slot_of_p1(slot_at).into_iter().map(|row| (row, true)));
        let view = ReplicaView {
            stored: local(&local_rows),
            orphaned: vec![(P2.to_owned(), P1.to_owned())],
            owners: HashMap::from([(P2.to_owned(), P1.to_owned())]),
            linked: HashMap::from([(P1.to_owned(), vec![]), (P2.to_owned(), vec![])]),
            ..ReplicaView::default()
        };
        let page = if written_again {
            removal(P1, Some(P2), rev(200, 2), true)
        } else {
            removal(P1, None, rev(200, 2), true)
        };
        let plan = pull(&page, &view);
        let slot_removed: Vec<(Row, bool)> = slot_of_p1(slot_at)
            .into_iter()
            .map(|row| match row {
                Row::Meta { key, .. } => (
                    Row::Meta {
                        key,
                        version: MetaVersion::Gone {
                            rev: rev(NOW, 77),
                            deleted_at: NOW,
                            emptied: true,
                        },
                    },
                    true,
                ),
                Row::Record { .. } => unreachable!(),
            })
            .collect();
        let puts = put_of(&plan.ops);
        assert_eq!(
            puts[..2].to_vec(),
            page[..2]
                .iter()
                .map(|r| (r.clone(), false))
                .collect::<Vec<_>>()
        );
        assert_eq!(
            puts[2..].to_vec(),
            slot_removed,
            "written again: {written_again}"
        );
    }
}

/// But not when the identity stays: an emptied removal loses to a later write of the identity
/// here (a password change made after the deletion elsewhere), and so its local slot stays.
#[test]
fn a_local_slot_stays_with_an_identity_written_again_after_its_emptied_removal() {
    let mut local_rows: Vec<(Row, bool)> = identity(P1, rev(300, 3))
        .into_iter()
        .map(|row| (row, true))
        .collect();
    local_rows.extend(slot_of_p1(rev(100, 1)).into_iter().map(|row| (row, false)));
    let view = ReplicaView {
        stored: local(&local_rows),
        orphaned: vec![(P2.to_owned(), P1.to_owned())],
        linked: HashMap::from([(P1.to_owned(), vec![]), (P2.to_owned(), vec![])]),
        ..ReplicaView::default()
    };
    let plan = pull(&removal(P1, None, rev(200, 2), true), &view);
    assert!(put_of(&plan.ops).is_empty(), "{:?}", plan.ops);
}
