//! The storage conformance suite: what every `Storage` backend must do, written once.
//!
//! `storage_conformance!(native, make)` instantiates every case as a `#[test]`;
//! `storage_conformance!(wasm, make)` as a `#[wasm_bindgen_test]` (IndexedDB in Chromium).
//! `make(name)` opens an empty store under a name unique to the test.
//!
//! Query cases compare the backend against `RecordFilter::apply` over every record: the shared
//! filter is the reference, so backends that pick candidates through indexes must agree with it.
#![allow(dead_code)]

use vaultstore_wasm::query::{OrderBy, RecordFilter, SoftDeleted};
use vaultstore_wasm::record::Record;
use vaultstore_wasm::storage::{
    MetaKey, MetaRow, Purge, RecordChange, Storage, StorageError, WriteOp, link_key,
};

pub const NOW: i64 = 1_700_000_000_000;

/// A well-formed envelope; the storage never looks inside.
pub const VALUE: &str = "vs1:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA";

pub fn record(id: &str, token: &str) -> Record {
    Record {
        id: id.to_owned(),
        token: token.to_owned(),
        value: format!("{VALUE}{id}"),
        created_at: NOW,
        updated_at: NOW,
        expires_at: None,
        soft_deleted_at: None,
    }
}

pub fn meta(t: &str, id: &str, k: &str, v: &str) -> MetaRow {
    MetaRow::new(t, id, k, v)
}

fn link(record_id: &str, identity: &str) -> WriteOp {
    let key = link_key(record_id);
    WriteOp::PutMeta(MetaRow {
        key,
        value: identity.to_owned(),
    })
}

fn prune(identity: &str) -> WriteOp {
    WriteOp::DeleteObjectIfUnreferenced {
        object_type: "password_identity".into(),
        object_id: identity.into(),
        referrer_type: "record".into(),
        referrer_key: "password_id".into(),
    }
}

/// Everything a store holds, in a canonical order, to prove "nothing changed".
pub async fn dump(s: &dyn Storage) -> (Vec<Record>, Vec<MetaRow>) {
    let mut records = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let page = s.scan_records(after.as_deref(), 1000).await.unwrap();
        let Some(last) = page.last() else { break };
        after = Some(last.id.clone());
        records.extend(page);
    }
    records.sort_by(|a, b| a.id.cmp(&b.id));
    (records, s.meta_all().await.unwrap())
}

async fn get_token(s: &dyn Storage, token: &str) -> Option<Record> {
    s.records_by_tokens(&[token.to_owned()])
        .await
        .unwrap()
        .pop()
        .flatten()
}

async fn get_id(s: &dyn Storage, id: &str) -> Option<Record> {
    s.records_by_ids(&[id.to_owned()])
        .await
        .unwrap()
        .pop()
        .flatten()
}

fn change(id: &str, change: RecordChange, at: i64) -> WriteOp {
    WriteOp::ChangeRecord {
        id: id.into(),
        change,
        at,
    }
}

fn delete(id: &str) -> WriteOp {
    WriteOp::DeleteRecord {
        id: id.into(),
        if_expired_at: None,
    }
}

async fn link_of(s: &dyn Storage, id: &str) -> Option<String> {
    s.meta_get(&link_key(id)).await.unwrap()
}

// ---------------------------------------------------------------- cases

pub async fn empty_store_has_nothing(s: impl Storage) {
    assert_eq!(
        s.records_by_tokens(&["tk_a".into()]).await.unwrap(),
        vec![None]
    );
    assert_eq!(s.records_by_ids(&["a".into()]).await.unwrap(), vec![None]);
    assert!(s.records_by_ids(&[]).await.unwrap().is_empty());
    assert!(
        s.query_records(&RecordFilter::default(), NOW)
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(
        s.count_records(&RecordFilter::default(), NOW)
            .await
            .unwrap(),
        0
    );
    assert!(s.scan_records(None, 10).await.unwrap().is_empty());
    assert_eq!(
        s.meta_get(&MetaKey::new("vault", "settings", "kdf"))
            .await
            .unwrap(),
        None
    );
    assert!(s.meta_all().await.unwrap().is_empty());
    assert!(
        s.meta_find("password_identity", "tag", "x")
            .await
            .unwrap()
            .is_empty()
    );
}

pub async fn inserted_records_are_found_by_token_and_id(s: impl Storage) {
    let a = record("id-a", "tk_a");
    let mut b = record("id-b", "tk_b");
    b.expires_at = Some(NOW + 5);
    b.soft_deleted_at = Some(NOW - 5);
    s.apply(vec![
        WriteOp::InsertRecord(a.clone()),
        WriteOp::InsertRecord(b.clone()),
        link("id-b", "p_1"),
    ])
    .await
    .unwrap();
    assert_eq!(get_token(&s, "tk_a").await.unwrap(), a);
    assert_eq!(get_id(&s, "id-b").await.unwrap(), b);
    assert_eq!(link_of(&s, "id-b").await.as_deref(), Some("p_1"));
    // Batch lookups answer in the order asked, `None` for what is missing, in one call.
    let many = s
        .records_by_tokens(&["tk_b".into(), "tk_missing".into(), "tk_a".into()])
        .await
        .unwrap();
    assert_eq!(many, vec![Some(b.clone()), None, Some(a.clone())]);
    let by_ids = s
        .records_by_ids(&["id-a".into(), "nope".into()])
        .await
        .unwrap();
    assert_eq!(by_ids, vec![Some(a.clone()), None]);
    // A key asked for twice is answered twice.
    let twice = s
        .records_by_ids(&["id-b".into(), "id-b".into()])
        .await
        .unwrap();
    assert_eq!(twice, vec![Some(b.clone()), Some(b)]);
}

pub async fn duplicate_tokens_and_ids_are_refused_atomically(s: impl Storage) {
    s.apply(vec![WriteOp::InsertRecord(record("id-a", "tk_a"))])
        .await
        .unwrap();
    let before = dump(&s).await;
    let err = s
        .apply(vec![
            WriteOp::InsertRecord(record("id-new", "tk_new")),
            WriteOp::InsertRecord(record("id-x", "tk_a")),
        ])
        .await
        .unwrap_err();
    assert_eq!(err, StorageError::TokenTaken("tk_a".into()));
    assert_eq!(
        dump(&s).await,
        before,
        "the first insert of the failed batch must not be visible"
    );
    let err = s
        .apply(vec![WriteOp::InsertRecord(record("id-a", "tk_other"))])
        .await
        .unwrap_err();
    assert_eq!(err, StorageError::IdTaken("id-a".into()));
    // Two inserts of one token in the same batch.
    let err = s
        .apply(vec![
            WriteOp::InsertRecord(record("id-1", "tk_twice")),
            WriteOp::InsertRecord(record("id-2", "tk_twice")),
        ])
        .await
        .unwrap_err();
    assert_eq!(err, StorageError::TokenTaken("tk_twice".into()));
    assert_eq!(dump(&s).await, before);
    // A soft-deleted record still holds its token.
    s.apply(vec![change(
        "id-a",
        RecordChange::SoftDelete {
            if_expired_at: None,
        },
        NOW,
    )])
    .await
    .unwrap();
    let err = s
        .apply(vec![WriteOp::InsertRecord(record("id-z", "tk_a"))])
        .await
        .unwrap_err();
    assert_eq!(err, StorageError::TokenTaken("tk_a".into()));
}

pub async fn changes_patch_the_record_as_it_is(s: impl Storage) {
    let a = record("id-a", "tk_a");
    s.apply(vec![WriteOp::InsertRecord(a.clone())])
        .await
        .unwrap();
    // Each change touches its fields and updatedAt, and nothing else.
    s.apply(vec![change(
        "id-a",
        RecordChange::Renew {
            expires_at: Some(NOW + 100),
        },
        NOW + 1,
    )])
    .await
    .unwrap();
    s.apply(vec![change(
        "id-a",
        RecordChange::Reseal {
            expect: a.value.clone(),
            value: format!("{VALUE}v2"),
        },
        NOW + 2,
    )])
    .await
    .unwrap();
    let now = get_id(&s, "id-a").await.unwrap();
    assert_eq!(
        now,
        Record {
            value: format!("{VALUE}v2"),
            expires_at: Some(NOW + 100),
            updated_at: NOW + 2,
            ..a.clone()
        },
        "a reseal keeps an expiry set before it"
    );
    // Soft delete keeps its first time; restore of a live record and a second soft delete
    // change nothing (not even updatedAt).
    let soft = || {
        change(
            "id-a",
            RecordChange::SoftDelete {
                if_expired_at: None,
            },
            NOW + 3,
        )
    };
    s.apply(vec![soft()]).await.unwrap();
    s.apply(vec![change(
        "id-a",
        RecordChange::SoftDelete {
            if_expired_at: None,
        },
        NOW + 4,
    )])
    .await
    .unwrap();
    let deleted = get_id(&s, "id-a").await.unwrap();
    assert_eq!(deleted.soft_deleted_at, Some(NOW + 3));
    assert_eq!(deleted.updated_at, NOW + 3);
    s.apply(vec![change("id-a", RecordChange::Restore, NOW + 5)])
        .await
        .unwrap();
    s.apply(vec![change("id-a", RecordChange::Restore, NOW + 6)])
        .await
        .unwrap();
    let restored = get_id(&s, "id-a").await.unwrap();
    assert_eq!(restored.soft_deleted_at, None);
    assert_eq!(restored.updated_at, NOW + 5);
    assert_eq!(restored.value, format!("{VALUE}v2"));
    // Several changes of one record in one batch apply in order.
    s.apply(vec![
        change("id-a", RecordChange::Renew { expires_at: None }, NOW + 7),
        soft(),
        change(
            "id-a",
            RecordChange::Reseal {
                expect: format!("{VALUE}v2"),
                value: format!("{VALUE}v3"),
            },
            NOW + 8,
        ),
    ])
    .await
    .unwrap();
    let after = get_id(&s, "id-a").await.unwrap();
    assert_eq!(
        (
            after.expires_at,
            after.soft_deleted_at,
            after.value.as_str()
        ),
        (None, Some(NOW + 3), format!("{VALUE}v3").as_str())
    );
}

pub async fn stale_changes_fail_and_change_nothing(s: impl Storage) {
    let mut a = record("id-a", "tk_a");
    a.expires_at = Some(NOW - 10);
    s.apply(vec![WriteOp::InsertRecord(a.clone())])
        .await
        .unwrap();
    let before = dump(&s).await;
    // A reseal from a value that is no longer there.
    let err = s
        .apply(vec![
            change("id-a", RecordChange::Renew { expires_at: None }, NOW),
            change(
                "id-a",
                RecordChange::Reseal {
                    expect: format!("{VALUE}stale"),
                    value: format!("{VALUE}new"),
                },
                NOW,
            ),
        ])
        .await
        .unwrap_err();
    assert_eq!(err, StorageError::Changed("id-a".into()));
    assert_eq!(
        dump(&s).await,
        before,
        "the renewal of the failed batch is undone"
    );
    // A purge of a record that is not expired at that time.
    for op in [
        change(
            "id-a",
            RecordChange::SoftDelete {
                if_expired_at: Some(NOW - 20),
            },
            NOW,
        ),
        WriteOp::DeleteRecord {
            id: "id-a".into(),
            if_expired_at: Some(NOW - 20),
        },
    ] {
        let err = s.apply(vec![op]).await.unwrap_err();
        assert_eq!(err, StorageError::Changed("id-a".into()));
        assert_eq!(dump(&s).await, before);
    }
    // Still expired at NOW: both purges apply.
    s.apply(vec![change(
        "id-a",
        RecordChange::SoftDelete {
            if_expired_at: Some(NOW),
        },
        NOW,
    )])
    .await
    .unwrap();
    assert_eq!(get_id(&s, "id-a").await.unwrap().soft_deleted_at, Some(NOW));
    // A caller's update of a record soft-deleted since it was read, with its value unchanged
    // (`tokenUpdate` racing `tokenSoftDelete`); a reseal (a rekey) of it still applies.
    let soft_deleted = dump(&s).await;
    let err = s
        .apply(vec![change(
            "id-a",
            RecordChange::Update {
                expect: a.value.clone(),
                value: format!("{VALUE}updated"),
            },
            NOW,
        )])
        .await
        .unwrap_err();
    assert_eq!(err, StorageError::Changed("id-a".into()));
    assert_eq!(dump(&s).await, soft_deleted);
    s.apply(vec![change(
        "id-a",
        RecordChange::Reseal {
            expect: a.value.clone(),
            value: format!("{VALUE}resealed"),
        },
        NOW,
    )])
    .await
    .unwrap();
    assert_eq!(
        get_id(&s, "id-a").await.unwrap().value,
        format!("{VALUE}resealed")
    );
    s.apply(vec![WriteOp::DeleteRecord {
        id: "id-a".into(),
        if_expired_at: Some(NOW),
    }])
    .await
    .unwrap();
    assert!(get_id(&s, "id-a").await.is_none());
    // A change of a record that is gone.
    let err = s
        .apply(vec![change("id-a", RecordChange::Restore, NOW)])
        .await
        .unwrap_err();
    assert_eq!(err, StorageError::RecordMissing("id-a".into()));
}

pub async fn deletes_take_links_and_last_identities_along(s: impl Storage) {
    s.apply(vec![
        WriteOp::InsertRecord(record("id-a", "tk_a")),
        WriteOp::InsertRecord(record("id-b", "tk_b")),
        WriteOp::InsertRecord(record("id-c", "tk_c")),
        link("id-a", "p_1"),
        link("id-b", "p_1"),
        link("id-c", "p_2"),
        WriteOp::InsertMeta(meta("password_identity", "p_1", "tag", "t1")),
        WriteOp::InsertMeta(meta("password_identity", "p_1", "dek", "d1")),
        WriteOp::InsertMeta(meta("password_identity", "p_2", "tag", "t2")),
    ])
    .await
    .unwrap();
    s.apply(vec![delete("id-a"), delete("id-c")]).await.unwrap();
    assert!(get_token(&s, "tk_a").await.is_none());
    assert!(get_id(&s, "id-a").await.is_none());
    assert_eq!(link_of(&s, "id-a").await, None);
    // p_1 still has b; p_2 lost its last record and went with it.
    assert_eq!(
        s.meta_object("password_identity", "p_1")
            .await
            .unwrap()
            .len(),
        2
    );
    assert!(
        s.meta_object("password_identity", "p_2")
            .await
            .unwrap()
            .is_empty()
    );
    s.apply(vec![delete("id-b")]).await.unwrap();
    assert!(s.meta_all().await.unwrap().is_empty());
    // Deleting what is gone is not an error, and the token is free again.
    s.apply(vec![delete("id-a")]).await.unwrap();
    s.apply(vec![WriteOp::InsertRecord(record("id-b2", "tk_a"))])
        .await
        .unwrap();
}

pub async fn expected_meta_rows_guard_the_batch(s: impl Storage) {
    s.apply(vec![WriteOp::PutMeta(meta(
        "vault", "state", "writes", "e1",
    ))])
    .await
    .unwrap();
    let expect = |value: Option<&str>| WriteOp::ExpectMeta {
        key: MetaKey::new("vault", "state", "writes"),
        value: value.map(str::to_owned),
    };
    s.apply(vec![
        expect(Some("e1")),
        WriteOp::InsertRecord(record("id-a", "tk_a")),
        WriteOp::PutMeta(meta("vault", "state", "writes", "e2")),
    ])
    .await
    .unwrap();
    let before = dump(&s).await;
    for stale in [Some("e1"), None] {
        let err = s
            .apply(vec![
                WriteOp::InsertRecord(record("id-b", "tk_b")),
                expect(stale),
            ])
            .await
            .unwrap_err();
        assert_eq!(
            err,
            StorageError::MetaChanged(MetaKey::new("vault", "state", "writes"))
        );
        assert_eq!(
            dump(&s).await,
            before,
            "a failed guard leaves nothing behind"
        );
    }
    // An absent row is expected as `None`; a row written earlier in the batch is seen.
    s.apply(vec![
        WriteOp::ExpectMeta {
            key: MetaKey::new("vault", "state", "other"),
            value: None,
        },
        WriteOp::PutMeta(meta("vault", "state", "other", "x")),
        WriteOp::ExpectMeta {
            key: MetaKey::new("vault", "state", "other"),
            value: Some("x".into()),
        },
    ])
    .await
    .unwrap();
    assert_eq!(s.meta_count("vault").await.unwrap(), 2);
    assert_eq!(s.meta_count("record").await.unwrap(), 0);
}

pub async fn meta_rows_put_get_insert_delete(s: impl Storage) {
    s.apply(vec![
        WriteOp::InsertMeta(meta("vault", "settings", "kdf", "{}")),
        WriteOp::PutMeta(meta("vault", "settings", "version", "1")),
        WriteOp::PutMeta(meta("vault", "other", "x", "y")),
    ])
    .await
    .unwrap();
    let key = MetaKey::new("vault", "settings", "version");
    assert_eq!(s.meta_get(&key).await.unwrap().as_deref(), Some("1"));
    s.apply(vec![WriteOp::PutMeta(meta(
        "vault", "settings", "version", "2",
    ))])
    .await
    .unwrap();
    assert_eq!(s.meta_get(&key).await.unwrap().as_deref(), Some("2"));
    let err = s
        .apply(vec![WriteOp::InsertMeta(meta(
            "vault", "settings", "kdf", "other",
        ))])
        .await
        .unwrap_err();
    assert_eq!(
        err,
        StorageError::MetaTaken(MetaKey::new("vault", "settings", "kdf"))
    );
    let object = s.meta_object("vault", "settings").await.unwrap();
    assert_eq!(
        object,
        vec![
            meta("vault", "settings", "kdf", "{}"),
            meta("vault", "settings", "version", "2")
        ]
    );
    assert_eq!(s.meta_all().await.unwrap().len(), 3);
    s.apply(vec![
        WriteOp::DeleteMeta(key.clone()),
        WriteOp::DeleteMeta(key.clone()),
    ])
    .await
    .unwrap();
    assert_eq!(s.meta_get(&key).await.unwrap(), None);
    // Values may be empty and hold anything.
    let odd = "'; DROP TABLE meta; -- \u{0} \"[]\" é 😀";
    s.apply(vec![WriteOp::PutMeta(meta("vault", odd, odd, ""))])
        .await
        .unwrap();
    assert_eq!(
        s.meta_get(&MetaKey::new("vault", odd, odd))
            .await
            .unwrap()
            .as_deref(),
        Some("")
    );
}

pub async fn identity_tags_are_unique(s: impl Storage) {
    s.apply(vec![
        WriteOp::InsertMeta(meta("password_identity", "p_1", "tag", "t1")),
        WriteOp::InsertMeta(meta("password_identity", "p_1", "dek", "d1")),
    ])
    .await
    .unwrap();
    let before = dump(&s).await;
    let err = s
        .apply(vec![
            WriteOp::InsertMeta(meta("password_identity", "p_2", "dek", "d2")),
            WriteOp::InsertMeta(meta("password_identity", "p_2", "tag", "t1")),
        ])
        .await
        .unwrap_err();
    assert!(matches!(err, StorageError::UniqueValueTaken(_)), "{err:?}");
    assert_eq!(dump(&s).await, before);
    let err = s
        .apply(vec![WriteOp::PutMeta(meta(
            "password_identity",
            "p_3",
            "tag",
            "t1",
        ))])
        .await
        .unwrap_err();
    assert!(matches!(err, StorageError::UniqueValueTaken(_)), "{err:?}");
    // Re-putting the same row is fine; moving p_1 to a new tag frees the old one.
    s.apply(vec![WriteOp::PutMeta(meta(
        "password_identity",
        "p_1",
        "tag",
        "t1",
    ))])
    .await
    .unwrap();
    s.apply(vec![
        WriteOp::PutMeta(meta("password_identity", "p_1", "tag", "t9")),
        WriteOp::InsertMeta(meta("password_identity", "p_2", "tag", "t1")),
    ])
    .await
    .unwrap();
    // Other keys are not unique.
    s.apply(vec![WriteOp::PutMeta(meta(
        "password_identity",
        "p_2",
        "dek",
        "d1",
    ))])
    .await
    .unwrap();
}

pub async fn meta_find_returns_whole_objects(s: impl Storage) {
    s.apply(vec![
        WriteOp::InsertMeta(meta("password_identity", "p_1", "tag", "t1")),
        WriteOp::InsertMeta(meta("password_identity", "p_1", "dek", "d1")),
        WriteOp::InsertMeta(meta("password_identity", "p_2", "tag", "t2")),
        WriteOp::InsertMeta(meta("password_identity", "p_2", "dek", "d2")),
    ])
    .await
    .unwrap();
    let found = s.meta_find("password_identity", "tag", "t2").await.unwrap();
    assert_eq!(
        found,
        vec![
            meta("password_identity", "p_2", "dek", "d2"),
            meta("password_identity", "p_2", "tag", "t2")
        ]
    );
    let mut batch = Vec::new();
    for i in 0..30 {
        batch.push(WriteOp::InsertRecord(record(
            &format!("r{i:02}"),
            &format!("tk_{i:02}"),
        )));
        batch.push(link(
            &format!("r{i:02}"),
            if i % 3 == 0 { "p_1" } else { "p_2" },
        ));
    }
    s.apply(batch).await.unwrap();
    let links = s.meta_find("record", "password_id", "p_1").await.unwrap();
    assert_eq!(links.len(), 10);
    assert!(links.iter().all(|l| l.value == "p_1"
        && l.key.key == "password_id"
        && l.key.object_id.starts_with("r_r")));
    // Moving one link updates both answers.
    s.apply(vec![link("r00", "p_2")]).await.unwrap();
    assert_eq!(
        s.meta_find("record", "password_id", "p_1")
            .await
            .unwrap()
            .len(),
        9
    );
    assert_eq!(
        s.meta_find("record", "password_id", "p_2")
            .await
            .unwrap()
            .len(),
        21
    );
    assert!(
        s.meta_find("record", "password_id", "p_9")
            .await
            .unwrap()
            .is_empty()
    );
}

pub async fn meta_find_follows_values_as_rows_move(s: impl Storage) {
    let mut batch = Vec::new();
    for id in ["a", "b", "c"] {
        batch.push(WriteOp::InsertRecord(record(id, &format!("tk_{id}"))));
        batch.push(link(id, "p_1"));
    }
    s.apply(batch).await.unwrap();
    // Move the rows off p_1 one at a time, last-linked first, down to a single holder.
    s.apply(vec![link("c", "p_2")]).await.unwrap();
    s.apply(vec![link("b", "p_2")]).await.unwrap();
    let holders = s.meta_find("record", "password_id", "p_1").await.unwrap();
    assert_eq!(
        holders,
        vec![MetaRow {
            key: link_key("a"),
            value: "p_1".into()
        }]
    );
    let moved = s.meta_find("record", "password_id", "p_2").await.unwrap();
    assert_eq!(moved.len(), 2);
    s.apply(vec![WriteOp::DeleteMeta(link_key("a"))])
        .await
        .unwrap();
    assert!(
        s.meta_find("record", "password_id", "p_1")
            .await
            .unwrap()
            .is_empty()
    );
    s.apply(vec![link("a", "p_1")]).await.unwrap();
    assert_eq!(
        s.meta_find("record", "password_id", "p_1")
            .await
            .unwrap()
            .len(),
        1
    );
}

pub async fn unreferenced_identities_are_pruned_in_the_same_batch(s: impl Storage) {
    s.apply(vec![
        WriteOp::InsertMeta(meta("password_identity", "p_1", "tag", "t1")),
        WriteOp::InsertMeta(meta("password_identity", "p_1", "dek", "d1")),
        WriteOp::InsertRecord(record("a", "tk_a")),
        link("a", "p_1"),
        WriteOp::InsertRecord(record("b", "tk_b")),
        link("b", "p_1"),
    ])
    .await
    .unwrap();
    // One link left: the identity stays.
    s.apply(vec![WriteOp::DeleteMeta(link_key("a")), prune("p_1")])
        .await
        .unwrap();
    assert_eq!(
        s.meta_object("password_identity", "p_1")
            .await
            .unwrap()
            .len(),
        2
    );
    // The last link goes: so does the identity, and its tag is free again.
    s.apply(vec![
        delete("a"),
        WriteOp::DeleteMeta(link_key("b")),
        prune("p_1"),
        delete("b"),
    ])
    .await
    .unwrap();
    assert!(
        s.meta_object("password_identity", "p_1")
            .await
            .unwrap()
            .is_empty()
    );
    assert!(s.meta_all().await.unwrap().is_empty());
    s.apply(vec![WriteOp::InsertMeta(meta(
        "password_identity",
        "p_2",
        "tag",
        "t1",
    ))])
    .await
    .unwrap();
    // Pruning a missing identity is a no-op.
    s.apply(vec![prune("p_404")]).await.unwrap();
}

/// An identity's further secret slots (objects of its type with a row `identity` naming it,
/// `OWNER_KEY`) go with it, by the explicit prune and by a record delete's implicit one, in the
/// same batch; slots of other identities and rows of other types stay.
pub async fn identity_slots_go_with_their_identity(s: impl Storage) {
    let identity = |id: &str, tag: &str| {
        vec![
            WriteOp::InsertMeta(meta("password_identity", id, "tag", tag)),
            WriteOp::InsertMeta(meta("password_identity", id, "dek", &format!("d{tag}"))),
        ]
    };
    let slot = |id: &str, owner: &str, tag: &str| {
        let mut ops = identity(id, tag);
        ops.push(WriteOp::InsertMeta(meta(
            "password_identity",
            id,
            "identity",
            owner,
        )));
        ops
    };
    let mut setup = Vec::new();
    setup.extend(identity("p_1", "t1"));
    setup.extend(slot("p_1a", "p_1", "t1a"));
    setup.extend(slot("p_1b", "p_1", "t1b"));
    setup.extend(identity("p_2", "t2"));
    setup.extend(slot("p_2a", "p_2", "t2a"));
    // Same key and value, another object type: not a slot.
    setup.push(WriteOp::InsertMeta(meta("other", "x", "identity", "p_1")));
    for (id, owner) in [("a", "p_1"), ("b", "p_1"), ("c", "p_2")] {
        setup.push(WriteOp::InsertRecord(record(id, &format!("tk_{id}"))));
        setup.push(link(id, owner));
    }
    s.apply(setup).await.unwrap();
    let objects = |rows: Vec<MetaRow>| {
        let mut ids: Vec<String> = rows
            .into_iter()
            .filter(|m| m.key.object_type == "password_identity")
            .map(|m| m.key.object_id)
            .collect();
        ids.dedup();
        ids
    };
    let all = ["p_1", "p_1a", "p_1b", "p_2", "p_2a"];
    // Still referenced: the prune leaves the identity and its slots.
    s.apply(vec![prune("p_1")]).await.unwrap();
    s.apply(vec![WriteOp::DeleteMeta(link_key("a")), prune("p_1")])
        .await
        .unwrap();
    assert_eq!(objects(s.meta_all().await.unwrap()), all);
    // The last record of p_1 deleted: p_1 and exactly its slots go.
    s.apply(vec![delete("b")]).await.unwrap();
    assert_eq!(objects(s.meta_all().await.unwrap()), ["p_2", "p_2a"]);
    assert_eq!(
        s.meta_get(&MetaKey::new("other", "x", "identity"))
            .await
            .unwrap()
            .as_deref(),
        Some("p_1")
    );
    // Their tags are free again.
    s.apply(slot("p_3a", "p_3", "t1a")).await.unwrap();
    s.apply(vec![WriteOp::DeleteMeta(link_key("c")), prune("p_2")])
        .await
        .unwrap();
    assert_eq!(objects(s.meta_all().await.unwrap()), ["p_3a"]);
    // The explicit prune takes slots written earlier in the same batch.
    let mut batch = identity("p_4", "t4");
    batch.extend(slot("p_4a", "p_4", "t4a"));
    batch.push(prune("p_4"));
    s.apply(batch).await.unwrap();
    assert_eq!(objects(s.meta_all().await.unwrap()), ["p_3a"]);
    // And a purge of expired records (set-based where the backend has one).
    let mut expiring = record("e", "tk_e");
    expiring.expires_at = Some(NOW - 1);
    let mut batch = identity("p_5", "t5");
    batch.extend(slot("p_5a", "p_5", "t5a"));
    batch.push(WriteOp::InsertRecord(expiring));
    batch.push(link("e", "p_5"));
    s.apply(batch).await.unwrap();
    assert_eq!(
        objects(s.meta_all().await.unwrap()),
        ["p_3a", "p_5", "p_5a"]
    );
    if s.purge_expired(NOW, Purge::Delete, 100, vec![])
        .await
        .unwrap()
        .is_none()
    {
        s.apply(vec![WriteOp::DeleteRecord {
            id: "e".into(),
            if_expired_at: Some(NOW),
        }])
        .await
        .unwrap();
    }
    assert_eq!(objects(s.meta_all().await.unwrap()), ["p_3a"]);
}

pub async fn failed_batches_change_nothing(s: impl Storage) {
    let c = record("c", "tk_c");
    s.apply(vec![
        WriteOp::InsertRecord(record("a", "tk_a")),
        WriteOp::InsertRecord(record("b", "tk_b")),
        WriteOp::InsertRecord(c.clone()),
        WriteOp::InsertMeta(meta("password_identity", "p_1", "tag", "t1")),
        link("b", "p_1"),
        WriteOp::PutMeta(meta("vault", "settings", "version", "1")),
    ])
    .await
    .unwrap();
    let before = dump(&s).await;
    // Every kind of op, then one that fails at the very end (after `ClearAll`, so each tail
    // conflicts with something the batch itself wrote).
    let failing_tail = [
        WriteOp::InsertRecord(record("z", "tk_e")),
        WriteOp::InsertRecord(record("e", "tk_z")),
        WriteOp::InsertMeta(meta("vault", "settings", "version", "9")),
        change("missing", RecordChange::Restore, NOW),
        change(
            "e",
            RecordChange::Reseal {
                expect: "not the value".into(),
                value: format!("{VALUE}x"),
            },
            NOW,
        ),
        change("c", RecordChange::Restore, NOW),
        WriteOp::PutMeta(meta("password_identity", "p_9", "tag", "t3")),
        WriteOp::ExpectMeta {
            key: MetaKey::new("vault", "settings", "version"),
            value: Some("2".into()),
        },
        WriteOp::ExpectEmpty,
    ];
    for tail in failing_tail {
        let batch = vec![
            WriteOp::InsertRecord(record("d", "tk_d")),
            change(
                "c",
                RecordChange::Reseal {
                    expect: c.value.clone(),
                    value: format!("{VALUE}new"),
                },
                NOW + 1,
            ),
            change(
                "b",
                RecordChange::SoftDelete {
                    if_expired_at: None,
                },
                NOW + 1,
            ),
            delete("a"),
            WriteOp::DeleteMeta(link_key("b")),
            prune("p_1"),
            WriteOp::PutMeta(meta("vault", "settings", "version", "2")),
            WriteOp::PutMeta(meta("password_identity", "p_2", "tag", "t2")),
            link("d", "p_2"),
            WriteOp::ClearAll,
            WriteOp::InsertRecord(record("e", "tk_e")),
            WriteOp::PutMeta(meta("vault", "settings", "version", "3")),
            WriteOp::InsertMeta(meta("password_identity", "p_3", "tag", "t3")),
            tail.clone(),
        ];
        assert!(s.apply(batch).await.is_err(), "{tail:?} must fail");
        assert_eq!(dump(&s).await, before, "after a batch failing on {tail:?}");
        let count = s
            .count_records(
                &RecordFilter {
                    soft_deleted: SoftDeleted::Include,
                    ..Default::default()
                },
                NOW,
            )
            .await
            .unwrap();
        assert_eq!(count, 3);
        assert!(
            s.meta_find("password_identity", "tag", "t2")
                .await
                .unwrap()
                .is_empty()
        );
        assert_eq!(
            s.meta_find("password_identity", "tag", "t1")
                .await
                .unwrap()
                .len(),
            1
        );
    }
}

pub async fn expect_empty_and_clear_all(s: impl Storage) {
    s.apply(vec![WriteOp::PutMeta(meta(
        "vault", "settings", "kdf", "{}",
    ))])
    .await
    .unwrap();
    // Vault settings alone do not count as data.
    s.apply(vec![WriteOp::ExpectEmpty]).await.unwrap();
    s.apply(vec![WriteOp::InsertMeta(meta(
        "password_identity",
        "p",
        "tag",
        "t",
    ))])
    .await
    .unwrap();
    assert_eq!(
        s.apply(vec![WriteOp::ExpectEmpty]).await.unwrap_err(),
        StorageError::NotEmpty
    );
    s.apply(vec![
        WriteOp::ClearAll,
        WriteOp::InsertRecord(record("a", "tk_a")),
    ])
    .await
    .unwrap();
    assert_eq!(
        s.apply(vec![WriteOp::ExpectEmpty]).await.unwrap_err(),
        StorageError::NotEmpty
    );
    assert!(s.meta_all().await.unwrap().is_empty());
    s.apply(vec![WriteOp::ClearAll]).await.unwrap();
    assert_eq!(dump(&s).await, (vec![], vec![]));
    s.apply(vec![
        WriteOp::ExpectEmpty,
        WriteOp::InsertMeta(meta("password_identity", "p", "tag", "t")),
    ])
    .await
    .unwrap();
}

/// A varied set of records for the query cases.
pub fn query_fixture() -> Vec<Record> {
    let mut out = Vec::new();
    for i in 0..40i64 {
        let mut r = record(
            &format!("id{:02}", (i * 7) % 40),
            &format!("tk_{:02}", (i * 13) % 40),
        );
        r.created_at = NOW - 1000 + (i % 10) * 10; // ties on created_at
        r.updated_at = NOW - 500 + (i % 7);
        r.expires_at = match i % 4 {
            0 => None,
            1 => Some(NOW - 1), // expired
            2 => Some(NOW + 1000 - i),
            _ => Some(NOW), // not yet expired: expiry is now > expiresAt
        };
        if i % 5 == 0 {
            r.soft_deleted_at = Some(NOW - 10);
        }
        out.push(r);
    }
    // Strings whose UTF-16 and UTF-8 orders differ, and text that looks like SQL.
    let mut odd = record("id\u{ff5e}", "tk_\u{ff5e}");
    odd.created_at = NOW - 1000;
    out.push(odd);
    let mut odd = record("id\u{1f600}", "tk_\u{1f600}");
    odd.created_at = NOW - 1000;
    out.push(odd);
    out.push(record("id'--", "tk_' OR '1'='1"));
    out
}

pub fn query_filters() -> Vec<RecordFilter> {
    let mut filters = Vec::new();
    for order_by in [
        OrderBy::CreatedAt,
        OrderBy::UpdatedAt,
        OrderBy::ExpiresAt,
        OrderBy::Token,
        OrderBy::Id,
    ] {
        for descending in [true, false] {
            filters.push(RecordFilter {
                order_by,
                descending,
                ..Default::default()
            });
        }
    }
    for soft_deleted in [
        SoftDeleted::Exclude,
        SoftDeleted::Include,
        SoftDeleted::Only,
    ] {
        for expired_only in [false, true] {
            filters.push(RecordFilter {
                soft_deleted,
                expired_only,
                ..Default::default()
            });
        }
    }
    filters.push(RecordFilter {
        limit: Some(5),
        offset: 3,
        ..Default::default()
    });
    filters.push(RecordFilter {
        limit: Some(5),
        offset: 100,
        ..Default::default()
    });
    filters.push(RecordFilter {
        offset: 7,
        order_by: OrderBy::Token,
        descending: false,
        ..Default::default()
    });
    filters.push(RecordFilter {
        token: Some("tk_03".into()),
        soft_deleted: SoftDeleted::Include,
        ..Default::default()
    });
    filters.push(RecordFilter {
        token: Some("tk_none".into()),
        ..Default::default()
    });
    filters.push(RecordFilter {
        token_in: Some(vec![
            "tk_01".into(),
            "tk_02".into(),
            "tk_01".into(),
            "tk_x".into(),
            "tk_\u{1f600}".into(),
        ]),
        soft_deleted: SoftDeleted::Include,
        ..Default::default()
    });
    filters.push(RecordFilter {
        token_in: Some(vec![]),
        ..Default::default()
    });
    filters.push(RecordFilter {
        id: Some("id07".into()),
        ..Default::default()
    });
    filters.push(RecordFilter {
        id_in: Some(vec![
            "id01".into(),
            "id02".into(),
            "id'--".into(),
            "nope".into(),
        ]),
        order_by: OrderBy::Id,
        descending: false,
        ..Default::default()
    });
    filters.push(RecordFilter {
        id_in: Some(vec![]),
        ..Default::default()
    });
    filters.push(RecordFilter {
        id: Some("id07".into()),
        id_in: Some(vec!["id08".into()]),
        ..Default::default()
    });
    filters.push(RecordFilter {
        id_in: Some(vec!["id01".into(), "id02".into()]),
        token_in: Some(vec!["tk_01".into(), "tk_13".into(), "tk_26".into()]),
        soft_deleted: SoftDeleted::Include,
        ..Default::default()
    });
    filters.push(RecordFilter::expired(SoftDeleted::Include, 3));
    filters.push(RecordFilter::expired(SoftDeleted::Exclude, 500));
    filters
}

pub async fn queries_agree_with_the_shared_filter(s: impl Storage) {
    let all = query_fixture();
    s.apply(all.iter().cloned().map(WriteOp::InsertRecord).collect())
        .await
        .unwrap();
    for filter in query_filters() {
        let expected = filter.apply(all.clone(), NOW);
        let got = s.query_records(&filter, NOW).await.unwrap();
        assert_eq!(
            got.iter().map(|r| &r.id).collect::<Vec<_>>(),
            expected.iter().map(|r| &r.id).collect::<Vec<_>>(),
            "{filter:?}"
        );
        assert_eq!(got, expected, "{filter:?}");
        let unpaged = RecordFilter {
            limit: None,
            offset: 0,
            ..filter.clone()
        };
        let count = s.count_records(&filter, NOW).await.unwrap();
        assert_eq!(
            count as usize,
            unpaged.apply(all.clone(), NOW).len(),
            "count ignores paging: {filter:?}"
        );
    }
}

pub async fn scans_page_through_everything_once(s: impl Storage) {
    let mut batch = Vec::new();
    let mut ids = Vec::new();
    for i in 0..53 {
        let id = format!(
            "{:x}{}",
            (i * 7919) % 1000,
            if i % 2 == 0 { "\u{1f600}" } else { "\u{ff5e}" }
        );
        batch.push(WriteOp::InsertRecord(record(&id, &format!("tk_{i}"))));
        if i % 4 == 0 {
            batch.push(link(&id, "p_1"));
        }
        ids.push(id);
    }
    s.apply(batch).await.unwrap();
    let mut seen = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let page = s.scan_records(after.as_deref(), 7).await.unwrap();
        assert!(page.len() <= 7);
        let Some(last) = page.last() else { break };
        after = Some(last.id.clone());
        seen.extend(page);
    }
    let mut seen_ids: Vec<String> = seen.iter().map(|r| r.id.clone()).collect();
    seen_ids.sort();
    ids.sort();
    assert_eq!(seen_ids, ids, "every record exactly once");
    assert_eq!(s.meta_count("record").await.unwrap(), 14);
    assert_eq!(
        s.meta_find("record", "password_id", "p_1")
            .await
            .unwrap()
            .len(),
        14
    );
}

/// Reads of many keys at once (a rekey's, a large `tokensRead`'s) answer exactly as reads of
/// one key do, in the order asked, duplicates and missing keys included; so do finds with many
/// holders, and batches that change or delete many records. Backends may serve these
/// differently (IndexedDB reads the store in pages once the keys are a good part of it).
pub async fn bulk_reads_and_writes_answer_as_single_ones(s: impl Storage) {
    const N: usize = 2_500;
    let id = |i: usize| format!("id-{i:05}");
    let mut batch = Vec::new();
    for i in 0..N {
        // Tokens in an order unrelated to the ids' (7919 is prime to N).
        let record_id = id((i * 7919) % N);
        batch.push(WriteOp::InsertRecord(record(
            &record_id,
            &format!("tk_{i}"),
        )));
        batch.push(link(&record_id, if i % 4 == 0 { "p_b" } else { "p_a" }));
    }
    s.apply(batch).await.unwrap();

    let mut ids: Vec<String> = (0..N).rev().map(id).collect();
    ids.insert(100, id(42));
    ids.push("id-missing".into());
    let found = s.records_by_ids(&ids).await.unwrap();
    assert_eq!(found.len(), ids.len());
    for (wanted, got) in ids.iter().zip(&found) {
        match got {
            Some(r) => assert_eq!(&r.id, wanted),
            None => assert_eq!(wanted, "id-missing"),
        }
    }
    let mut tokens: Vec<String> = (0..N).step_by(3).map(|i| format!("tk_{i}")).collect();
    tokens.insert(7, "tk_nope".into());
    let by_token = s.records_by_tokens(&tokens).await.unwrap();
    assert_eq!(by_token.len(), tokens.len());
    for (wanted, got) in tokens.iter().zip(&by_token) {
        let expected = (wanted != "tk_nope").then_some(wanted.as_str());
        assert_eq!(got.as_ref().map(|r| r.token.as_str()), expected);
    }
    for at in [0, 7, 8, 500, tokens.len() - 1] {
        assert_eq!(
            by_token[at],
            get_token(&s, &tokens[at]).await,
            "{}",
            tokens[at]
        );
    }

    let holders = s.meta_find("record", "password_id", "p_a").await.unwrap();
    assert_eq!(holders.len(), N - N / 4);
    assert!(
        holders
            .iter()
            .all(|m| m.key.key == "password_id" && m.value == "p_a")
    );

    let mut batch = Vec::new();
    for i in 0..N / 2 {
        let renew = RecordChange::Renew {
            expires_at: Some(NOW + 1),
        };
        batch.push(change(&id(i), renew, NOW));
    }
    for i in N / 2..N / 2 + 600 {
        batch.push(delete(&id(i)));
    }
    s.apply(batch).await.unwrap();
    let (records, meta) = dump(&s).await;
    assert_eq!(records.len(), N - 600);
    assert_eq!(
        records
            .iter()
            .filter(|r| r.expires_at == Some(NOW + 1))
            .count(),
        N / 2
    );
    let links = meta
        .iter()
        .filter(|m| m.key.object_type == "record")
        .count();
    assert_eq!(links, N - 600, "a deleted record's link goes with it");
}

/// A backend's set-based expiry purge (where it has one) purges exactly the records the shared
/// filter calls expired, with their links and the identities they leave without links, and
/// writes what it is given along; at a count that no longer holds it writes nothing.
pub async fn set_based_purges_take_exactly_the_expired(s: impl Storage) {
    let mut batch = Vec::new();
    let expiring = |id: &str, expires_at: Option<i64>, soft: bool| {
        let mut r = record(id, &format!("tk_{id}"));
        r.expires_at = expires_at;
        r.soft_deleted_at = soft.then_some(NOW - 5);
        WriteOp::InsertRecord(r)
    };
    batch.push(expiring("gone-1", Some(NOW - 1), false));
    batch.push(expiring("gone-2", Some(NOW - 100), true));
    batch.push(expiring("stays-at-now", Some(NOW), false));
    batch.push(expiring("stays-later", Some(NOW + 1), false));
    batch.push(expiring("stays-never", None, false));
    for (id, identity) in [
        ("gone-1", "p_only_expired"),
        ("gone-2", "p_mixed"),
        ("stays-later", "p_mixed"),
    ] {
        batch.push(link(id, identity));
    }
    for identity in ["p_only_expired", "p_mixed"] {
        batch.push(WriteOp::PutMeta(meta(
            "password_identity",
            identity,
            "tag",
            identity,
        )));
    }
    s.apply(batch).await.unwrap();

    let Some(soft) = s
        .purge_expired(NOW, Purge::SoftDelete, 100, vec![])
        .await
        .unwrap()
    else {
        return; // no set-based purge: the vault pages through expired records instead
    };
    assert_eq!(soft, 1, "only the live expired record is soft-deleted");
    let r = get_id(&s, "gone-1").await.unwrap();
    assert_eq!((r.soft_deleted_at, r.updated_at), (Some(NOW), NOW));
    assert_eq!(
        get_id(&s, "gone-2").await.unwrap().soft_deleted_at,
        Some(NOW - 5)
    );
    assert_eq!(
        s.purge_expired(NOW, Purge::SoftDelete, 100, vec![])
            .await
            .unwrap(),
        Some(0)
    );

    // A bounded purge takes the earliest expiry first and says it may not be done.
    let epoch = WriteOp::PutMeta(meta("vault", "state", "epoch", "e2"));
    let first = s
        .purge_expired(NOW, Purge::Delete, 1, vec![epoch.clone()])
        .await
        .unwrap();
    assert_eq!(first, Some(1));
    assert!(
        get_id(&s, "gone-2").await.is_none(),
        "expired first, purged first"
    );
    assert!(get_id(&s, "gone-1").await.is_some(), "beyond the limit");
    let deleted = s
        .purge_expired(NOW, Purge::Delete, 100, vec![epoch])
        .await
        .unwrap();
    assert_eq!(deleted, Some(1), "fewer than the limit: nothing is left");
    let (records, rows) = dump(&s).await;
    let mut ids: Vec<&str> = records.iter().map(|r| r.id.as_str()).collect();
    ids.sort();
    assert_eq!(ids, ["stays-at-now", "stays-later", "stays-never"]);
    let mut objects: Vec<(&str, &str)> = rows
        .iter()
        .map(|m| (m.key.object_type.as_str(), m.key.object_id.as_str()))
        .collect();
    objects.sort();
    assert_eq!(
        objects,
        [
            ("password_identity", "p_mixed"),
            ("record", link_key("stays-later").object_id.as_str()),
            ("vault", "state")
        ],
        "the purged records' links and the identity they left alone are gone; the rest stays"
    );
    assert_eq!(
        s.purge_expired(NOW + 2, Purge::Delete, 100, vec![])
            .await
            .unwrap(),
        Some(2)
    );
    let (records, rows) = dump(&s).await;
    assert_eq!(records.len(), 1);
    assert!(
        rows.iter().all(|m| m.key.object_type == "vault"),
        "the last links went, and their identity with them"
    );
}

pub async fn odd_strings_round_trip(s: impl Storage) {
    let tokens = [
        "tk_' OR 1=1; --",
        "x",
        "tk_\"quoted\"",
        "tk_\\back\\slash",
        "tk_😀",
        "tk_\u{0}nul",
        &"z".repeat(255),
    ];
    let batch = tokens
        .iter()
        .enumerate()
        .map(|(i, t)| WriteOp::InsertRecord(record(&format!("'{i}\""), t)))
        .collect();
    s.apply(batch).await.unwrap();
    for (i, t) in tokens.iter().enumerate() {
        let found = get_token(&s, t).await.unwrap_or_else(|| panic!("{t:?}"));
        assert_eq!(found.id, format!("'{i}\""));
    }
    assert_eq!(
        s.count_records(&RecordFilter::default(), NOW)
            .await
            .unwrap(),
        tokens.len() as u64
    );
}

pub async fn closed_storage_refuses_calls(s: impl Storage) {
    s.apply(vec![WriteOp::InsertRecord(record("a", "tk_a"))])
        .await
        .unwrap();
    s.close().await;
    assert_eq!(
        s.records_by_tokens(&["tk_a".into()]).await.unwrap_err(),
        StorageError::Closed
    );
    assert_eq!(
        s.apply(vec![delete("a")]).await.unwrap_err(),
        StorageError::Closed
    );
    assert_eq!(s.meta_all().await.unwrap_err(), StorageError::Closed);
    s.close().await;
}

/// Call `$callback!(case, case, ...)` with the name of every case (after `$arg;` when one is
/// given): the one list of cases, so no harness misses one. `storage_conformance!` instantiates
/// them as native or wasm tests; tests/storage_sql_workers.rs its own way.
#[macro_export]
macro_rules! conformance_cases {
    ($callback:ident $(, $arg:path)?) => {
        $callback!(
            $($arg;)?
            empty_store_has_nothing,
            inserted_records_are_found_by_token_and_id,
            duplicate_tokens_and_ids_are_refused_atomically,
            changes_patch_the_record_as_it_is,
            stale_changes_fail_and_change_nothing,
            deletes_take_links_and_last_identities_along,
            expected_meta_rows_guard_the_batch,
            meta_rows_put_get_insert_delete,
            identity_tags_are_unique,
            meta_find_returns_whole_objects,
            meta_find_follows_values_as_rows_move,
            unreferenced_identities_are_pruned_in_the_same_batch,
            identity_slots_go_with_their_identity,
            failed_batches_change_nothing,
            expect_empty_and_clear_all,
            queries_agree_with_the_shared_filter,
            scans_page_through_everything_once,
            bulk_reads_and_writes_answer_as_single_ones,
            set_based_purges_take_exactly_the_expired,
            odd_strings_round_trip,
            closed_storage_refuses_calls,
        );
    };
}

/// Every case as a native `#[test]` on the store `$make` opens.
#[macro_export]
macro_rules! conformance_native_tests {
    ($make:path; $($case:ident,)*) => {
        $(
            #[test]
            fn $case() {
                futures::executor::block_on(async {
                    conformance::$case($make(stringify!($case)).await).await
                })
            }
        )*
    };
}

/// Every case as a `#[wasm_bindgen_test]` on the store `$make` opens.
#[macro_export]
macro_rules! conformance_wasm_tests {
    ($make:path; $($case:ident,)*) => {
        $(
            #[wasm_bindgen_test::wasm_bindgen_test]
            async fn $case() {
                conformance::$case($make(stringify!($case)).await).await
            }
        )*
    };
}

/// Instantiate every case for one backend. `$make` is an `async fn(&str) -> impl Storage`
/// returning an empty store under a name unique to the case.
#[macro_export]
macro_rules! storage_conformance {
    (native, $make:path) => {
        conformance_cases!(conformance_native_tests, $make);
    };
    (wasm, $make:path) => {
        conformance_cases!(conformance_wasm_tests, $make);
    };
}
