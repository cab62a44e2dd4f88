//! The storage conformance suite on the IndexedDB backend, in headless Chromium.
#![cfg(all(target_arch = "wasm32", feature = "idb"))]
#![allow(clippy::disallowed_methods)] // clippy.toml's one-sort rule is for the engine's download size

mod conformance;

use vaultstore_wasm::storage::indexeddb::IdbStorage;
use wasm_bindgen_test::wasm_bindgen_test_configure;

wasm_bindgen_test_configure!(run_in_browser);

/// A fresh database per test: the case name plus a random suffix.
async fn idb(case: &str) -> IdbStorage {
    let name = format!("conformance-{case}-{}", js_sys::Math::random());
    IdbStorage::open(&name)
        .await
        .expect("IndexedDB opens in Chromium")
}

storage_conformance!(wasm, idb);

// ---------------------------------------------------------------- what a merge reads and guards

use conformance::{meta, record, stamp};
use vaultstore_wasm::storage::{
    MetaKey, RecordChange, Row, RowKey, Storage, StorageError, Stored, WriteOp,
};
use vaultstore_wasm::sync::{MetaVersion, RecordVersion};
use wasm_bindgen_test::wasm_bindgen_test;

async fn version(s: &IdbStorage, key: &RowKey) -> Option<Stored> {
    s.versions(std::slice::from_ref(key))
        .await
        .unwrap()
        .remove(0)
}

#[wasm_bindgen_test]
async fn versions_answer_live_rows_tombstones_and_nothing_with_seq_and_mark() {
    let s = idb("versions").await;
    let setting = MetaKey::new("vault", "settings", "policy");
    let local = MetaKey::new("vault", "state", "writes");
    s.apply(
        stamp(),
        vec![
            WriteOp::insert_record(record("a", "tk_a")),
            WriteOp::insert_record(record("b", "tk_b")),
            WriteOp::PutMeta(meta("vault", "settings", "policy", "p")),
            WriteOp::PutMeta(meta("vault", "state", "writes", "w")),
        ],
    )
    .await
    .unwrap();
    s.apply(
        stamp(),
        vec![WriteOp::DeleteRecord {
            id: "b".into(),
            if_expired_at: None,
        }],
    )
    .await
    .unwrap();
    let keys = [
        RowKey::Record("a".into()),
        RowKey::Record("b".into()),
        RowKey::Record("missing".into()),
        RowKey::Meta(setting.clone()),
        RowKey::Meta(local),
    ];
    let found = s.versions(&keys).await.unwrap();
    assert_eq!(found.len(), 5);
    let a = found[0].as_ref().expect("a live record");
    assert_eq!((a.seq, a.dirty), (1, Some(1)));
    assert!(matches!(
        &a.row,
        Row::Record { id, version: RecordVersion::Live(live) } if id == "a" && live.token == "tk_a"
    ));
    let b = found[1].as_ref().expect("b's tombstone");
    assert_eq!((b.seq, b.dirty), (4, Some(4)));
    assert!(matches!(
        &b.row,
        Row::Record { id, version: RecordVersion::Gone(_) } if id == "b"
    ));
    assert_eq!(found[2], None);
    let policy = found[3].as_ref().expect("a replicated meta row");
    assert_eq!(policy.seq, 3);
    assert!(matches!(
        &policy.row,
        Row::Meta { key, version: MetaVersion::Value { value, .. } }
            if *key == setting && value == "p"
    ));
    assert_eq!(found[4], None, "a local row has no version");
}

#[wasm_bindgen_test]
async fn expect_version_refuses_a_batch_planned_from_a_stale_read() {
    let s = idb("expect-version").await;
    s.apply(stamp(), vec![WriteOp::insert_record(record("a", "tk_a"))])
        .await
        .unwrap();
    let key = RowKey::Record("a".into());
    let seen = version(&s, &key).await.map(|v| v.seq);
    assert_eq!(seen, Some(1));
    // Another write lands between the read and the commit: the plan is refused, whole.
    s.apply(
        stamp(),
        vec![WriteOp::ChangeRecord {
            id: "a".into(),
            change: RecordChange::Renew {
                expires_at: Some(5),
            },
            at: conformance::NOW,
        }],
    )
    .await
    .unwrap();
    let plan = |seq| {
        vec![
            WriteOp::ExpectVersion {
                key: key.clone(),
                seq,
            },
            WriteOp::PutMeta(meta("vault", "settings", "merged", "yes")),
        ]
    };
    assert_eq!(
        s.apply(stamp(), plan(seen)).await.unwrap_err(),
        StorageError::Changed("a".into())
    );
    assert_eq!(
        s.meta_get(&MetaKey::new("vault", "settings", "merged"))
            .await
            .unwrap(),
        None
    );
    s.apply(stamp(), plan(Some(2))).await.unwrap();
    // A key the store has no version of: None holds until a row or a tombstone appears.
    let other = RowKey::Meta(MetaKey::new("vault", "settings", "new"));
    let expect_none = || {
        vec![WriteOp::ExpectVersion {
            key: other.clone(),
            seq: None,
        }]
    };
    s.apply(stamp(), expect_none()).await.unwrap();
    s.apply(
        stamp(),
        vec![
            WriteOp::PutMeta(meta("vault", "settings", "new", "x")),
            WriteOp::DeleteMeta(MetaKey::new("vault", "settings", "new")),
        ],
    )
    .await
    .unwrap();
    assert_eq!(
        s.apply(stamp(), expect_none()).await.unwrap_err(),
        StorageError::MetaChanged(MetaKey::new("vault", "settings", "new"))
    );
}

#[wasm_bindgen_test]
async fn mark_clean_clears_only_the_acknowledged_mark() {
    let s = idb("mark-clean").await;
    s.apply(
        stamp(),
        vec![
            WriteOp::insert_record(record("a", "tk_a")),
            WriteOp::insert_record(record("b", "tk_b")),
            WriteOp::insert_record(record("c", "tk_c")),
            WriteOp::PutMeta(meta("vault", "settings", "policy", "p")),
        ],
    )
    .await
    .unwrap();
    s.apply(
        stamp(),
        vec![WriteOp::DeleteRecord {
            id: "c".into(),
            if_expired_at: None,
        }],
    )
    .await
    .unwrap();
    // b changes after the push read it at mark 2: its acknowledgement must not clear the newer
    // change's mark.
    s.apply(
        stamp(),
        vec![WriteOp::ChangeRecord {
            id: "b".into(),
            change: RecordChange::Renew {
                expires_at: Some(7),
            },
            at: conformance::NOW,
        }],
    )
    .await
    .unwrap();
    let policy = RowKey::Meta(MetaKey::new("vault", "settings", "policy"));
    let marks = [
        (RowKey::Record("a".into()), 1),
        (RowKey::Record("b".into()), 2),
        (RowKey::Record("c".into()), 5),
        (policy.clone(), 4),
        (RowKey::Record("gone-for-good".into()), 9),
    ];
    s.apply(
        stamp(),
        marks
            .iter()
            .map(|(key, dirty)| WriteOp::MarkClean {
                key: key.clone(),
                dirty: *dirty,
            })
            .collect(),
    )
    .await
    .unwrap();
    let after: Vec<Option<(u64, Option<u64>)>> = s
        .versions(&marks.iter().map(|(k, _)| k.clone()).collect::<Vec<_>>())
        .await
        .unwrap()
        .into_iter()
        .map(|v| v.map(|v| (v.seq, v.dirty)))
        .collect();
    assert_eq!(
        after,
        [
            Some((1, None)),
            Some((6, Some(6))),
            Some((5, None)),
            Some((4, None)),
            None
        ]
    );
    let dirty: Vec<u64> = s
        .dirty_changes(0, 100)
        .await
        .unwrap()
        .iter()
        .map(|c| c.seq)
        .collect();
    assert_eq!(dirty, [6]);
}

// ---------------------------------------------------------------- the seq counter a batch assumes

/// A small batch takes the seq counter to be where its connection last left it rather than
/// wait to read it (one round trip less per `tokenCreate`), and checks it before committing.
/// Another connection (a tab) or another batch of the same one may have moved it meanwhile:
/// the batch must then run again, or two changes share a seq and a replica pulling the feed
/// skips one of them.
#[wasm_bindgen_test]
async fn batches_of_two_connections_and_concurrent_batches_of_one_each_take_their_own_seq() {
    let name = format!("conformance-assumed-seq-{}", js_sys::Math::random());
    let a = IdbStorage::open(&name).await.unwrap();
    let b = IdbStorage::open(&name).await.unwrap();
    let insert = |i: usize| {
        vec![WriteOp::insert_record(record(
            &format!("r{i}"),
            &format!("tk_{i}"),
        ))]
    };
    // In turn: each connection's counter is stale at its next batch.
    for i in 0..6 {
        let s = if i % 2 == 0 { &a } else { &b };
        s.apply(stamp(), insert(i)).await.unwrap();
    }
    // At once, on one connection: both assume the same counter; IndexedDB runs one first.
    let both = futures::future::join(a.apply(stamp(), insert(6)), a.apply(stamp(), insert(7)));
    let (x, y) = both.await;
    x.unwrap();
    y.unwrap();
    b.apply(stamp(), insert(8)).await.unwrap();
    a.apply(stamp(), insert(9)).await.unwrap();

    let feed = b.changes_since(0, 100).await.unwrap();
    let seqs: Vec<u64> = feed.iter().map(|c| c.seq).collect();
    assert_eq!(
        seqs,
        (1..=10).collect::<Vec<u64>>(),
        "one seq per change, none shared"
    );
    let mut ids: Vec<String> = feed
        .iter()
        .map(|c| match c.row.key() {
            RowKey::Record(id) => id,
            other => panic!("only records were written, found {other:?}"),
        })
        .collect();
    ids.sort();
    let mut expected: Vec<String> = (0..10).map(|i| format!("r{i}")).collect();
    expected.sort();
    assert_eq!(ids, expected);
    a.close().await;
    b.close().await;
}

/// The write epoch lives in the seq counter's row here, which a small batch writes back from
/// what its connection last committed without waiting to read it. Another connection that
/// renewed the epoch without moving the seq (a batch of no replicated row) has changed that
/// row all the same: the batch must see it and keep the other's epoch, or a rekey planned
/// after that write would not notice the writes after it.
#[wasm_bindgen_test]
async fn a_batch_that_assumes_the_counter_keeps_another_connections_write_epoch() {
    let name = format!("conformance-assumed-epoch-{}", js_sys::Math::random());
    let a = IdbStorage::open(&name).await.unwrap();
    let b = IdbStorage::open(&name).await.unwrap();
    let epoch = vaultstore_wasm::storage::write_epoch();
    a.apply(
        stamp(),
        vec![
            WriteOp::insert_record(record("r0", "tk_0")),
            WriteOp::PutMeta(meta("vault", "state", "writes", "a1")),
        ],
    )
    .await
    .unwrap();
    b.apply(
        stamp(),
        vec![WriteOp::PutMeta(meta("vault", "state", "writes", "b1"))],
    )
    .await
    .unwrap();
    // A replicated row and nothing on the epoch: written back from the counter `a` last
    // committed, without reading it, this batch would lose `b`'s epoch.
    a.apply(
        stamp(),
        vec![WriteOp::PutMeta(meta("vault", "settings", "policy", "p"))],
    )
    .await
    .unwrap();
    for s in [&a, &b] {
        assert_eq!(s.meta_get(&epoch).await.unwrap().as_deref(), Some("b1"));
    }
    // And a guard on it sees what the other connection wrote. Its batch renews the epoch too,
    // but cannot be written without reading the row: the first one below runs while `a` holds
    // a counter it could assume (from the batch above), so assuming it would test the guard
    // against an epoch not read.
    let guarded = |value: &str, id: &str, renewed: &str| {
        vec![
            WriteOp::ExpectMeta {
                key: epoch.clone(),
                value: Some(value.into()),
            },
            WriteOp::insert_record(record(id, &format!("tk_{id}"))),
            WriteOp::PutMeta(meta("vault", "state", "writes", renewed)),
        ]
    };
    a.apply(stamp(), guarded("b1", "r1", "a2")).await.unwrap();
    assert_eq!(b.meta_get(&epoch).await.unwrap().as_deref(), Some("a2"));
    assert_eq!(
        a.apply(stamp(), guarded("a1", "r2", "a3"))
            .await
            .unwrap_err(),
        StorageError::MetaChanged(epoch.clone())
    );
    a.apply(stamp(), guarded("a2", "r2", "a3")).await.unwrap();
    assert_eq!(b.meta_get(&epoch).await.unwrap().as_deref(), Some("a3"));
    a.close().await;
    b.close().await;
}

// ---------------------------------------------------------------- pages that start at a bookmark

/// A connection starts a listing's next page where its last page ended (`advance` over the
/// records before it is linear in their count), and trusts that place only while the seq
/// counter is where it was. Paging on through the whole listing gives it exactly, page by
/// page, forwards and back; a write by another connection (another tab) between two pages is
/// seen by the next.
/// Counts likewise: a connection tallies them once and moves the tally with its own batches,
/// while another connection's write makes it count again.
#[wasm_bindgen_test]
async fn pages_and_counts_after_another_connections_write_answer_as_the_store_is() {
    use vaultstore_wasm::query::{OrderBy, RecordFilter, SoftDeleted};
    let name = format!("conformance-bookmark-{}", js_sys::Math::random());
    let a = IdbStorage::open(&name).await.unwrap();
    let b = IdbStorage::open(&name).await.unwrap();
    let records: Vec<_> = (0..50)
        .map(|i| {
            let mut r = record(&format!("r{i:02}"), &format!("tk_{i:02}"));
            r.created_at = conformance::NOW - 1000 + i;
            if i % 7 == 3 {
                r.soft_deleted_at = Some(conformance::NOW);
            }
            r
        })
        .collect();
    let batch = records
        .iter()
        .cloned()
        .map(WriteOp::insert_record)
        .collect();
    a.apply(stamp(), batch).await.unwrap();
    for soft_deleted in [SoftDeleted::Exclude, SoftDeleted::Include] {
        let page = |offset| RecordFilter {
            order_by: OrderBy::CreatedAt,
            soft_deleted,
            offset,
            limit: Some(4),
            ..Default::default()
        };
        let whole = RecordFilter {
            limit: None,
            ..page(0)
        };
        let ids = |rs: Vec<vaultstore_wasm::record::Record>| -> Vec<String> {
            rs.into_iter().map(|r| r.id).collect()
        };
        let expected = ids(a.query_records(&whole, conformance::NOW).await.unwrap());
        let mut paged = Vec::new();
        for offset in (0..expected.len() + 4).step_by(4) {
            paged.extend(ids(a
                .query_records(&page(offset), conformance::NOW)
                .await
                .unwrap()));
        }
        assert_eq!(
            paged, expected,
            "{soft_deleted:?}: page by page, the whole listing"
        );
        // And back, each page starting from the end of the one before it.
        let mut back = Vec::new();
        for offset in (0..expected.len()).step_by(4).rev() {
            let mut earlier = ids(a
                .query_records(&page(offset), conformance::NOW)
                .await
                .unwrap());
            earlier.append(&mut back);
            back = earlier;
        }
        assert_eq!(back, expected, "{soft_deleted:?}: page by page backwards");

        // The other connection deletes the newest record (the first in this order) between
        // two pages of this one: the second page moves up by one.
        a.query_records(&page(0), conformance::NOW).await.unwrap();
        let newest = expected[0].clone();
        b.apply(
            stamp(),
            vec![WriteOp::DeleteRecord {
                id: newest,
                if_expired_at: None,
            }],
        )
        .await
        .unwrap();
        assert_eq!(
            ids(a.query_records(&page(4), conformance::NOW).await.unwrap()),
            expected[5..9],
            "{soft_deleted:?}: the page after another tab's delete"
        );
    }
    // Counts: a connection tallies them once, moves the tally with its own batches and counts
    // again after another connection's write; each answer is checked against a connection that
    // counts afresh, and against what the write did.
    let fresh = || async {
        let c = IdbStorage::open(&name).await.unwrap();
        let n = counts(&c).await;
        c.close().await;
        n
    };
    let before = counts(&a).await;
    assert_eq!(before, fresh().await, "counted");
    let soft_delete = |id: &str| WriteOp::ChangeRecord {
        id: id.into(),
        change: RecordChange::SoftDelete {
            if_expired_at: None,
        },
        at: conformance::NOW,
    };
    let steps: Vec<(&IdbStorage, Vec<WriteOp>, [i64; 3], &str)> = vec![
        (
            &b,
            vec![WriteOp::insert_record(record("other", "tk_other"))],
            [1, 1, 0],
            "another connection's insert",
        ),
        (
            &a,
            vec![soft_delete("r11")],
            [-1, 0, 1],
            "its own soft delete",
        ),
        (
            &a,
            vec![
                WriteOp::insert_record(record("new1", "tk_new1")),
                WriteOp::insert_record(record("new2", "tk_new2")),
                soft_delete("new2"),
                WriteOp::ChangeRecord {
                    id: "r11".into(),
                    change: RecordChange::Restore,
                    at: conformance::NOW,
                },
            ],
            [2, 2, 0],
            "its own inserts, soft delete and restore",
        ),
        (
            &a,
            vec![WriteOp::DeleteRecord {
                id: "new2".into(),
                if_expired_at: None,
            }],
            [0, -1, -1],
            "its own delete",
        ),
        (
            &b,
            vec![soft_delete("r21")],
            [-1, 0, 1],
            "another connection's soft delete",
        ),
    ];
    let mut expected = before;
    for (writer, batch, change, step) in steps {
        writer.apply(stamp(), batch).await.unwrap();
        for (n, by) in expected.iter_mut().zip(change) {
            *n = n.checked_add_signed(by).unwrap();
        }
        assert_eq!(counts(&a).await, expected, "after {step}");
        assert_eq!(fresh().await, expected, "after {step}, counted afresh");
    }
    // Once a listing's length is counted, a page past its middle is stepped to from its far end;
    // another connection's insert, sorting first, then moves that page by one, and the next read
    // must not trust the length counted before it.
    let tail = |offset| RecordFilter {
        order_by: OrderBy::CreatedAt,
        soft_deleted: SoftDeleted::Include,
        offset,
        limit: Some(4),
        ..Default::default()
    };
    let whole = RecordFilter {
        limit: None,
        ..tail(0)
    };
    counts(&a).await;
    let before = ids_of(&a, &whole).await;
    let offset = before.len() - 3;
    assert_eq!(
        ids_of(&a, &tail(offset)).await,
        before[offset..],
        "the last page, counted"
    );
    // The newest record: first in this listing, newest first.
    let mut first = record("first", "tk_first");
    first.created_at = conformance::NOW + 5000;
    b.apply(stamp(), vec![WriteOp::insert_record(first)])
        .await
        .unwrap();
    let after = ids_of(&b, &whole).await;
    assert_eq!(after[0], "first");
    assert_eq!(
        ids_of(&a, &tail(offset)).await,
        after[offset..offset + 4],
        "the page past the middle after another connection's insert"
    );
    a.close().await;
    b.close().await;
}

/// The live, all and soft-deleted record counts `s` gives.
/// The ids of `filter`'s page, as `s` lists them now.
async fn ids_of(s: &IdbStorage, filter: &vaultstore_wasm::query::RecordFilter) -> Vec<String> {
    let page = s.query_records(filter, conformance::NOW).await.unwrap();
    page.into_iter().map(|r| r.id).collect()
}

async fn counts(s: &IdbStorage) -> [u64; 3] {
    use vaultstore_wasm::query::{RecordFilter, SoftDeleted};
    let mut n = [0; 3];
    for (i, soft_deleted) in [
        SoftDeleted::Exclude,
        SoftDeleted::Include,
        SoftDeleted::Only,
    ]
    .into_iter()
    .enumerate()
    {
        let filter = RecordFilter {
            soft_deleted,
            ..Default::default()
        };
        n[i] = s.count_records(&filter, conformance::NOW).await.unwrap();
    }
    n
}

/// A trash of more soft-deleted records than a page reads at once (`FEW_TRASHED`, 500) is paged
/// through the order's index; whether that index holds live records too, the connection's
/// tally answers while it is current, and another connection's write makes it count again.
#[wasm_bindgen_test]
async fn a_large_trash_pages_as_the_store_is_after_another_connections_write() {
    use vaultstore_wasm::query::{OrderBy, RecordFilter, SoftDeleted};
    let name = format!("conformance-trash-{}", js_sys::Math::random());
    let a = IdbStorage::open(&name).await.unwrap();
    let b = IdbStorage::open(&name).await.unwrap();
    let trash: Vec<WriteOp> = (0..520)
        .map(|i| {
            let mut r = record(&format!("t{i:03}"), &format!("tk_t{i:03}"));
            r.created_at = conformance::NOW - 10_000 + i;
            r.soft_deleted_at = Some(conformance::NOW);
            WriteOp::insert_record(r)
        })
        .collect();
    a.apply(stamp(), trash).await.unwrap();
    let page = RecordFilter {
        order_by: OrderBy::CreatedAt,
        soft_deleted: SoftDeleted::Only,
        offset: 10,
        limit: Some(5),
        ..Default::default()
    };
    // Counted: no live record, so the page is the order's index stepped over.
    assert_eq!(counts(&a).await, [0, 520, 520]);
    let newest_first: Vec<String> = (505..510).rev().map(|i| format!("t{i:03}")).collect();
    assert_eq!(ids_of(&a, &page).await, newest_first, "the trash, counted");
    // Another connection writes a live record, the newest: the index holds it now, the page
    // does not.
    let mut live = record("live", "tk_live");
    live.created_at = conformance::NOW;
    b.apply(stamp(), vec![WriteOp::insert_record(live)])
        .await
        .unwrap();
    assert_eq!(
        ids_of(&a, &page).await,
        newest_first,
        "the trash after another connection's live record"
    );
    a.close().await;
    b.close().await;
}
