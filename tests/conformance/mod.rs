//! The storage conformance suite: what every `Storage` backend must do, written once.
//!
//! `storage_conformance!(native, make)` instantiates every case as a `#[test]`;
//! `storage_conformance!(wasm, make)` as a `#[wasm_bindgen_test]` (IndexedDB in Chromium).
//! `make(name)` opens an empty store under a name unique to the test.
//!
//! Query cases compare the backend against `RecordFilter::apply` over every record: the shared
//! filter is the reference, so backends that pick candidates through indexes must agree with it.
#![allow(dead_code)]
#![allow(clippy::disallowed_methods)] // clippy.toml's one-sort rule is for the engine's download size

use std::sync::atomic::{AtomicU64, Ordering};
use vaultstore_wasm::query::{OrderBy, RecordFilter, SoftDeleted};
use vaultstore_wasm::record::{Record, RecordRevs};
use vaultstore_wasm::storage::{
    Change, MetaFind, MetaKey, MetaRow, Purge, RecordChange, Row, RowKey, Stamp, Storage,
    StorageError, Stored, WriteOp, is_write_epoch, write_epoch,
};
use vaultstore_wasm::sync::{MetaVersion, RecordVersion, Rev, Tombstone, TombstoneReason};

pub const NOW: i64 = 1_700_000_000_000;

/// A well-formed envelope; the storage never looks inside.
pub const VALUE: &str = "vs1:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA";

/// The revisions [`record`] gives a new record: one batch created it, as a vault does.
pub fn created_rev() -> Rev {
    Rev::new(NOW as u64, 0, 1).expect("NOW fits in 48 bits")
}

pub fn record(id: &str, token: &str) -> Record {
    Record {
        id: id.to_owned(),
        token: token.to_owned(),
        value: format!("{VALUE}{id}"),
        created_at: NOW,
        updated_at: NOW,
        expires_at: None,
        soft_deleted_at: None,
        password_id: None,
        revs: RecordRevs::all(created_rev()),
    }
}

/// [`record`], sealed with the key of identity `identity`.
pub fn linked(id: &str, token: &str, identity: &str) -> Record {
    Record {
        password_id: Some(identity.to_owned()),
        ..record(id, token)
    }
}

pub fn meta(t: &str, id: &str, k: &str, v: &str) -> MetaRow {
    MetaRow::new(t, id, k, v)
}

/// Stamps minted by this suite, across every case of the process: each call's revision is
/// greater than every earlier one's, as a vault's clock mints them.
static STAMPS: AtomicU64 = AtomicU64::new(1);

/// A fresh stamp at time `at`, its revision greater than every stamp minted before.
pub fn stamp_at(at: i64) -> Stamp {
    let n = STAMPS.fetch_add(1, Ordering::SeqCst);
    Stamp {
        rev: Rev::new(NOW as u64 + 1_000 + n, 0, 0x5eed).expect("fits in 48 bits"),
        at,
    }
}

/// A fresh stamp at [`NOW`].
pub fn stamp() -> Stamp {
    stamp_at(NOW)
}

/// Apply `batch` under a fresh stamp, and return the stamp.
pub async fn write(s: &dyn Storage, batch: Vec<WriteOp>) -> Result<Stamp, StorageError> {
    let stamp = stamp();
    s.apply(stamp, batch).await.map(|()| stamp)
}

/// Re-seal `id` from `expect` to a new value under `identity` (`None`: a master key).
fn reseal(id: &str, expect: &str, value: &str, identity: Option<&str>, at: i64) -> WriteOp {
    change(
        id,
        RecordChange::Reseal {
            expect: expect.to_owned(),
            value: value.to_owned(),
            password_id: identity.map(str::to_owned),
        },
        at,
    )
}

/// Move `id`'s link to `identity`, re-sealing its current value (as [`record`] made it) as is.
async fn relink(s: &dyn Storage, id: &str, identity: Option<&str>) {
    let current = get_id(s, id).await.expect("the record exists").value;
    s.apply(stamp(), vec![reseal(id, &current, &current, identity, NOW)])
        .await
        .unwrap();
}

fn prune(identity: &str) -> WriteOp {
    WriteOp::DeleteIdentityIfUnlinked {
        identity_id: identity.into(),
        emptied: false,
    }
}

/// Everything a store holds, in a canonical order, to prove "nothing changed". The write epoch
/// is read with `meta_get` and listed as a meta row, as a backend may keep it elsewhere
/// (`write_epoch`'s docs).
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
    let mut meta = s.meta_all().await.unwrap();
    meta.retain(|m| !is_write_epoch(&m.key));
    if let Some(value) = s.meta_get(&write_epoch()).await.unwrap() {
        meta.push(MetaRow {
            key: write_epoch(),
            value,
        });
        meta.sort();
    }
    (records, meta)
}

/// A page size larger than any store here holds.
const ALL: usize = 1 << 20;

/// Every replicated row with its seq (tombstones included), then every dirty row with its mark.
pub async fn feeds(s: &dyn Storage) -> (Vec<Change>, Vec<Change>) {
    (
        s.changes_since(0, ALL).await.unwrap(),
        s.dirty_changes(0, ALL).await.unwrap(),
    )
}

/// [`dump`] and [`feeds`]: what a failed batch must leave exactly as it was.
pub async fn everything(
    s: &dyn Storage,
) -> ((Vec<Record>, Vec<MetaRow>), (Vec<Change>, Vec<Change>)) {
    (dump(s).await, feeds(s).await)
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
    get_id(s, id).await.and_then(|r| r.password_id)
}

/// Ids of every record linked to `identity`, paging through [`Storage::records_linked_to`].
async fn linked_ids(s: &dyn Storage, identity: &str) -> Vec<String> {
    linked_ids_paged(s, identity, 64).await
}

async fn linked_ids_paged(s: &dyn Storage, identity: &str, page_size: usize) -> Vec<String> {
    let mut ids: Vec<String> = Vec::new();
    let mut seen = std::collections::HashSet::new();
    let mut after: Option<String> = None;
    loop {
        let page = s
            .records_linked_to(identity, after.as_deref(), page_size)
            .await
            .unwrap();
        assert!(page.len() <= page_size);
        assert!(
            page.iter()
                .all(|r| r.password_id.as_deref() == Some(identity)),
            "only records linked to the identity"
        );
        let Some(last) = page.last() else { break };
        after = Some(last.id.clone());
        for r in page {
            // A page that repeats a record would page forever.
            assert!(seen.insert(r.id.clone()), "a record is listed twice");
            ids.push(r.id);
        }
    }
    ids
}

/// The change-feed entry of one row (`None` when it is not in the feed).
fn entry(feed: &[Change], is: impl Fn(&Row) -> bool) -> Option<&Change> {
    feed.iter().find(|c| is(&c.row))
}

fn is_record(id: &str) -> impl Fn(&Row) -> bool + '_ {
    move |row| matches!(row, Row::Record { id: i, .. } if i == id)
}

fn is_meta(key: &MetaKey) -> impl Fn(&Row) -> bool + '_ {
    move |row| matches!(row, Row::Meta { key: k, .. } if k == key)
}

/// The seq of one row in the change feed (`None`: not there).
async fn seq_of(s: &dyn Storage, is: impl Fn(&Row) -> bool) -> Option<u64> {
    let feed = s.changes_since(0, ALL).await.unwrap();
    entry(&feed, is).map(|c| c.seq)
}

/// The dirty mark of one row (`None`: clean).
async fn mark_of(s: &dyn Storage, is: impl Fn(&Row) -> bool) -> Option<u64> {
    let dirty = s.dirty_changes(0, ALL).await.unwrap();
    entry(&dirty, is).map(|c| c.seq)
}

/// The record tombstone `stamp` leaves, reason `deleted`.
fn tombstone(stamp: Stamp) -> RecordVersion {
    RecordVersion::Gone(Tombstone {
        rev: stamp.rev,
        deleted_at: stamp.at,
        reason: TombstoneReason::Deleted,
    })
}

fn gone_record(id: &str, stamp: Stamp) -> Row {
    Row::Record {
        id: id.to_owned(),
        version: tombstone(stamp),
    }
}

fn gone_meta(key: MetaKey, stamp: Stamp) -> Row {
    Row::Meta {
        key,
        version: MetaVersion::Gone {
            rev: stamp.rev,
            deleted_at: stamp.at,
            emptied: false,
        },
    }
}

/// The tombstone of an identity's row that went with the identity's last record: emptied, not
/// retired (FORMAT.md "Sync"), so another replica's records under it can bring it back.
fn emptied_meta(key: MetaKey, stamp: Stamp) -> Row {
    Row::Meta {
        key,
        version: MetaVersion::Gone {
            rev: stamp.rev,
            deleted_at: stamp.at,
            emptied: true,
        },
    }
}

/// The versions an emptied removal replaced, as the store keeps them in its local rows
/// `sync/replaced/<objectId>/<key>` (FORMAT.md "Sync"): `("<objectId>/<key>", "<rev> <value>")`.
async fn kept_versions(s: &dyn Storage) -> Vec<(String, String)> {
    let mut kept: Vec<(String, String)> = (s.meta_object("sync", "replaced").await.unwrap())
        .into_iter()
        .map(|m| (m.key.key, m.value))
        .collect();
    kept.sort();
    kept
}

/// What [`kept_versions`] holds once the rows of `objects`, written at `written`, are removed
/// as emptied: each row's version as it was.
async fn versions_of(s: &dyn Storage, objects: &[&str], written: Stamp) -> Vec<(String, String)> {
    let mut versions = Vec::new();
    for object in objects {
        for m in s.meta_object("password_identity", object).await.unwrap() {
            versions.push((
                format!("{object}/{}", m.key.key),
                format!("{} {}", written.rev, m.value),
            ));
        }
    }
    versions.sort();
    versions
}

fn live_row(r: &Record) -> Row {
    Row::Record {
        id: r.id.clone(),
        version: RecordVersion::Live(r.to_live()),
    }
}

fn meta_value(key: MetaKey, rev: Rev, value: &str) -> Row {
    Row::Meta {
        key,
        version: MetaVersion::Value {
            rev,
            value: value.to_owned(),
        },
    }
}

/// The rows of a feed, without their seqs, sorted: for "which rows are there".
fn rows_of(feed: &[Change]) -> Vec<Row> {
    let mut rows: Vec<Row> = feed.iter().map(|c| c.row.clone()).collect();
    rows.sort_by_key(|r| format!("{r:?}"));
    rows
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
    let mut b = linked("id-b", "tk_b", "p_1");
    b.expires_at = Some(NOW + 5);
    b.soft_deleted_at = Some(NOW - 5);
    s.apply(
        stamp(),
        vec![
            WriteOp::insert_record(a.clone()),
            WriteOp::insert_record(b.clone()),
        ],
    )
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
    s.apply(
        stamp(),
        vec![WriteOp::insert_record(record("id-a", "tk_a"))],
    )
    .await
    .unwrap();
    let before = dump(&s).await;
    let err = s
        .apply(
            stamp(),
            vec![
                WriteOp::insert_record(record("id-new", "tk_new")),
                WriteOp::insert_record(record("id-x", "tk_a")),
            ],
        )
        .await
        .unwrap_err();
    assert_eq!(err, StorageError::TokenTaken("tk_a".into()));
    assert_eq!(
        dump(&s).await,
        before,
        "the first insert of the failed batch must not be visible"
    );
    let err = s
        .apply(
            stamp(),
            vec![WriteOp::insert_record(record("id-a", "tk_other"))],
        )
        .await
        .unwrap_err();
    assert_eq!(err, StorageError::IdTaken("id-a".into()));
    // Two inserts of one token in the same batch.
    let err = s
        .apply(
            stamp(),
            vec![
                WriteOp::insert_record(record("id-1", "tk_twice")),
                WriteOp::insert_record(record("id-2", "tk_twice")),
            ],
        )
        .await
        .unwrap_err();
    assert_eq!(err, StorageError::TokenTaken("tk_twice".into()));
    assert_eq!(dump(&s).await, before);
    // A soft-deleted record still holds its token.
    s.apply(
        stamp(),
        vec![change(
            "id-a",
            RecordChange::SoftDelete {
                if_expired_at: None,
            },
            NOW,
        )],
    )
    .await
    .unwrap();
    let err = s
        .apply(
            stamp(),
            vec![WriteOp::insert_record(record("id-z", "tk_a"))],
        )
        .await
        .unwrap_err();
    assert_eq!(err, StorageError::TokenTaken("tk_a".into()));
}

pub async fn changes_patch_the_record_as_it_is(s: impl Storage) {
    let a = record("id-a", "tk_a");
    s.apply(stamp(), vec![WriteOp::insert_record(a.clone())])
        .await
        .unwrap();
    // Each change touches its fields, their revisions and updatedAt, and nothing else.
    let renewed = write(
        &s,
        vec![change(
            "id-a",
            RecordChange::Renew {
                expires_at: Some(NOW + 100),
            },
            NOW + 1,
        )],
    )
    .await
    .unwrap();
    let resealed = write(
        &s,
        vec![reseal(
            "id-a",
            &a.value,
            &format!("{VALUE}v2"),
            Some("p_1"),
            NOW + 2,
        )],
    )
    .await
    .unwrap();
    let now = get_id(&s, "id-a").await.unwrap();
    assert_eq!(
        now,
        Record {
            value: format!("{VALUE}v2"),
            password_id: Some("p_1".into()),
            expires_at: Some(NOW + 100),
            updated_at: NOW + 2,
            revs: RecordRevs {
                seal: resealed.rev,
                expires: renewed.rev,
                ..a.revs
            },
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
    s.apply(stamp(), vec![soft()]).await.unwrap();
    s.apply(
        stamp(),
        vec![change(
            "id-a",
            RecordChange::SoftDelete {
                if_expired_at: None,
            },
            NOW + 4,
        )],
    )
    .await
    .unwrap();
    let deleted = get_id(&s, "id-a").await.unwrap();
    assert_eq!(deleted.soft_deleted_at, Some(NOW + 3));
    assert_eq!(deleted.updated_at, NOW + 3);
    s.apply(
        stamp(),
        vec![change("id-a", RecordChange::Restore, NOW + 5)],
    )
    .await
    .unwrap();
    s.apply(
        stamp(),
        vec![change("id-a", RecordChange::Restore, NOW + 6)],
    )
    .await
    .unwrap();
    let restored = get_id(&s, "id-a").await.unwrap();
    assert_eq!(restored.soft_deleted_at, None);
    assert_eq!(restored.updated_at, NOW + 5);
    assert_eq!(restored.value, format!("{VALUE}v2"));
    // Several changes of one record in one batch apply in order.
    s.apply(
        stamp(),
        vec![
            change("id-a", RecordChange::Renew { expires_at: None }, NOW + 7),
            soft(),
            reseal(
                "id-a",
                &format!("{VALUE}v2"),
                &format!("{VALUE}v3"),
                None,
                NOW + 8,
            ),
        ],
    )
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
    assert_eq!(
        after.password_id, None,
        "a reseal under a master key unlinks"
    );
}

pub async fn stale_changes_fail_and_change_nothing(s: impl Storage) {
    let mut a = record("id-a", "tk_a");
    a.expires_at = Some(NOW - 10);
    s.apply(stamp(), vec![WriteOp::insert_record(a.clone())])
        .await
        .unwrap();
    let before = dump(&s).await;
    // A reseal from a value that is no longer there.
    let err = s
        .apply(
            stamp(),
            vec![
                change("id-a", RecordChange::Renew { expires_at: None }, NOW),
                reseal(
                    "id-a",
                    &format!("{VALUE}stale"),
                    &format!("{VALUE}new"),
                    Some("p_1"),
                    NOW,
                ),
            ],
        )
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
        let err = s.apply(stamp(), vec![op]).await.unwrap_err();
        assert_eq!(err, StorageError::Changed("id-a".into()));
        assert_eq!(dump(&s).await, before);
    }
    // Still expired at NOW: both purges apply.
    s.apply(
        stamp(),
        vec![change(
            "id-a",
            RecordChange::SoftDelete {
                if_expired_at: Some(NOW),
            },
            NOW,
        )],
    )
    .await
    .unwrap();
    assert_eq!(get_id(&s, "id-a").await.unwrap().soft_deleted_at, Some(NOW));
    // A caller's update of a record soft-deleted since it was read, with its value unchanged
    // (`tokenUpdate` racing `tokenSoftDelete`); a reseal (a rekey) of it still applies.
    let soft_deleted = dump(&s).await;
    let err = s
        .apply(
            stamp(),
            vec![change(
                "id-a",
                RecordChange::Update {
                    expect: a.value.clone(),
                    value: format!("{VALUE}updated"),
                    password_id: None,
                },
                NOW,
            )],
        )
        .await
        .unwrap_err();
    assert_eq!(err, StorageError::Changed("id-a".into()));
    assert_eq!(dump(&s).await, soft_deleted);
    s.apply(
        stamp(),
        vec![reseal(
            "id-a",
            &a.value,
            &format!("{VALUE}resealed"),
            None,
            NOW,
        )],
    )
    .await
    .unwrap();
    assert_eq!(
        get_id(&s, "id-a").await.unwrap().value,
        format!("{VALUE}resealed")
    );
    s.apply(
        stamp(),
        vec![WriteOp::DeleteRecord {
            id: "id-a".into(),
            if_expired_at: Some(NOW),
        }],
    )
    .await
    .unwrap();
    assert!(get_id(&s, "id-a").await.is_none());
    // A change of a record that is gone.
    let err = s
        .apply(stamp(), vec![change("id-a", RecordChange::Restore, NOW)])
        .await
        .unwrap_err();
    assert_eq!(err, StorageError::RecordMissing("id-a".into()));
}

pub async fn deletes_take_links_and_last_identities_along(s: impl Storage) {
    let written = write(
        &s,
        vec![
            WriteOp::insert_record(linked("id-a", "tk_a", "p_1")),
            WriteOp::insert_record(linked("id-b", "tk_b", "p_1")),
            WriteOp::insert_record(linked("id-c", "tk_c", "p_2")),
            WriteOp::InsertMeta(meta("password_identity", "p_1", "tag", "t1")),
            WriteOp::InsertMeta(meta("password_identity", "p_1", "dek", "d1")),
            WriteOp::InsertMeta(meta("password_identity", "p_2", "tag", "t2")),
        ],
    )
    .await
    .unwrap();
    let p2 = versions_of(&s, &["p_2"], written).await;
    let deleted = write(&s, vec![delete("id-a"), delete("id-c")])
        .await
        .unwrap();
    // The version the emptied removal replaced stays here (a sync server hands it to a replica
    // that writes the identity back); p_1 kept its identity.
    assert_eq!(kept_versions(&s).await, p2);
    assert!(get_token(&s, "tk_a").await.is_none());
    assert!(get_id(&s, "id-a").await.is_none());
    assert_eq!(linked_ids(&s, "p_1").await, ["id-b"]);
    assert!(linked_ids(&s, "p_2").await.is_empty());
    assert_eq!(s.linked_count(None).await.unwrap(), 1);
    // Each removed row left a tombstone at the batch's revision and time.
    let (feed, _) = feeds(&s).await;
    for id in ["id-a", "id-c"] {
        assert_eq!(
            entry(&feed, is_record(id)).map(|c| &c.row),
            Some(&gone_record(id, deleted)),
            "{id}"
        );
    }
    assert_eq!(
        entry(
            &feed,
            is_meta(&MetaKey::new("password_identity", "p_2", "tag"))
        )
        .map(|c| &c.row),
        Some(&emptied_meta(
            MetaKey::new("password_identity", "p_2", "tag"),
            deleted
        ))
    );
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
    s.apply(stamp(), vec![delete("id-b")]).await.unwrap();
    // Only the kept versions are left, p_1's now too.
    let left = s.meta_all().await.unwrap();
    assert!(left.iter().all(|m| m.key.object_type == "sync"), "{left:?}");
    assert_eq!(kept_versions(&s).await.len(), 3);
    assert_eq!(s.linked_count(None).await.unwrap(), 0);
    // Deleting what is gone is not an error and changes nothing, and the token is free again.
    let before = feeds(&s).await;
    s.apply(stamp(), vec![delete("id-a"), delete("never")])
        .await
        .unwrap();
    assert_eq!(
        feeds(&s).await,
        before,
        "deleting a tombstone leaves it as it was"
    );
    s.apply(
        stamp(),
        vec![WriteOp::insert_record(record("id-b2", "tk_a"))],
    )
    .await
    .unwrap();
}

pub async fn expected_meta_rows_guard_the_batch(s: impl Storage) {
    s.apply(
        stamp(),
        vec![WriteOp::PutMeta(meta("vault", "state", "writes", "e1"))],
    )
    .await
    .unwrap();
    let expect = |value: Option<&str>| WriteOp::ExpectMeta {
        key: MetaKey::new("vault", "state", "writes"),
        value: value.map(str::to_owned),
    };
    s.apply(
        stamp(),
        vec![
            expect(Some("e1")),
            WriteOp::insert_record(record("id-a", "tk_a")),
            WriteOp::PutMeta(meta("vault", "state", "writes", "e2")),
        ],
    )
    .await
    .unwrap();
    let before = dump(&s).await;
    for stale in [Some("e1"), None] {
        let err = s
            .apply(
                stamp(),
                vec![
                    WriteOp::insert_record(record("id-b", "tk_b")),
                    expect(stale),
                ],
            )
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
    s.apply(
        stamp(),
        vec![
            WriteOp::ExpectMeta {
                key: MetaKey::new("vault", "state", "other"),
                value: None,
            },
            WriteOp::PutMeta(meta("vault", "state", "other", "x")),
            WriteOp::ExpectMeta {
                key: MetaKey::new("vault", "state", "other"),
                value: Some("x".into()),
            },
        ],
    )
    .await
    .unwrap();
    // The write epoch is counted where it is listed (a backend may keep it elsewhere).
    let epoch_listed = s
        .meta_all()
        .await
        .unwrap()
        .iter()
        .any(|m| is_write_epoch(&m.key));
    assert_eq!(
        s.meta_count("vault").await.unwrap(),
        1 + u64::from(epoch_listed)
    );
    assert_eq!(
        s.meta_get(&MetaKey::new("vault", "state", "other"))
            .await
            .unwrap()
            .as_deref(),
        Some("x")
    );
    assert_eq!(s.meta_count("record").await.unwrap(), 0);
}

pub async fn meta_rows_put_get_insert_delete(s: impl Storage) {
    s.apply(
        stamp(),
        vec![
            WriteOp::InsertMeta(meta("vault", "settings", "kdf", "{}")),
            WriteOp::PutMeta(meta("vault", "settings", "version", "1")),
            WriteOp::PutMeta(meta("vault", "other", "x", "y")),
        ],
    )
    .await
    .unwrap();
    let key = MetaKey::new("vault", "settings", "version");
    assert_eq!(s.meta_get(&key).await.unwrap().as_deref(), Some("1"));
    s.apply(
        stamp(),
        vec![WriteOp::PutMeta(meta("vault", "settings", "version", "2"))],
    )
    .await
    .unwrap();
    assert_eq!(s.meta_get(&key).await.unwrap().as_deref(), Some("2"));
    let err = s
        .apply(
            stamp(),
            vec![WriteOp::InsertMeta(meta(
                "vault", "settings", "kdf", "other",
            ))],
        )
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
    s.apply(
        stamp(),
        vec![
            WriteOp::DeleteMeta(key.clone()),
            WriteOp::DeleteMeta(key.clone()),
        ],
    )
    .await
    .unwrap();
    assert_eq!(s.meta_get(&key).await.unwrap(), None);
    // Values may be empty and hold anything.
    let odd = "'; DROP TABLE meta; -- \u{0} \"[]\" é 😀";
    s.apply(stamp(), vec![WriteOp::PutMeta(meta("vault", odd, odd, ""))])
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
    s.apply(
        stamp(),
        vec![
            WriteOp::InsertMeta(meta("password_identity", "p_1", "tag", "t1")),
            WriteOp::InsertMeta(meta("password_identity", "p_1", "dek", "d1")),
        ],
    )
    .await
    .unwrap();
    let before = dump(&s).await;
    let err = s
        .apply(
            stamp(),
            vec![
                WriteOp::InsertMeta(meta("password_identity", "p_2", "dek", "d2")),
                WriteOp::InsertMeta(meta("password_identity", "p_2", "tag", "t1")),
            ],
        )
        .await
        .unwrap_err();
    assert!(matches!(err, StorageError::UniqueValueTaken(_)), "{err:?}");
    assert_eq!(dump(&s).await, before);
    let err = s
        .apply(
            stamp(),
            vec![WriteOp::PutMeta(meta(
                "password_identity",
                "p_3",
                "tag",
                "t1",
            ))],
        )
        .await
        .unwrap_err();
    assert!(matches!(err, StorageError::UniqueValueTaken(_)), "{err:?}");
    // Re-putting the same row is fine; moving p_1 to a new tag frees the old one.
    s.apply(
        stamp(),
        vec![WriteOp::PutMeta(meta(
            "password_identity",
            "p_1",
            "tag",
            "t1",
        ))],
    )
    .await
    .unwrap();
    s.apply(
        stamp(),
        vec![
            WriteOp::PutMeta(meta("password_identity", "p_1", "tag", "t9")),
            WriteOp::InsertMeta(meta("password_identity", "p_2", "tag", "t1")),
        ],
    )
    .await
    .unwrap();
    // Other keys are not unique.
    s.apply(
        stamp(),
        vec![WriteOp::PutMeta(meta(
            "password_identity",
            "p_2",
            "dek",
            "d1",
        ))],
    )
    .await
    .unwrap();
}

/// What sync leaves a secret that two devices first used apart (two objects with its tag) is
/// written again by a snapshot import and by changes made to all of them at once: a shared put
/// stores a tag another object holds, both are found by it, and a checked write of that tag by
/// a third object is still refused.
pub async fn shared_tags_are_stored_and_found_together(s: impl Storage) {
    s.apply(
        stamp(),
        vec![
            WriteOp::InsertMeta(meta("password_identity", "p_1", "tag", "t1")),
            WriteOp::InsertMeta(meta("password_identity", "p_1", "dek", "d1")),
            WriteOp::PutSharedMeta(meta("password_identity", "p_2", "tag", "t1")),
            WriteOp::PutSharedMeta(meta("password_identity", "p_2", "dek", "d2")),
        ],
    )
    .await
    .unwrap();
    let found = s.meta_find("password_identity", "tag", "t1").await.unwrap();
    assert_eq!(
        found,
        vec![
            meta("password_identity", "p_1", "dek", "d1"),
            meta("password_identity", "p_1", "tag", "t1"),
            meta("password_identity", "p_2", "dek", "d2"),
            meta("password_identity", "p_2", "tag", "t1"),
        ]
    );
    let before = dump(&s).await;
    for op in [
        WriteOp::InsertMeta(meta("password_identity", "p_3", "tag", "t1")),
        WriteOp::PutMeta(meta("password_identity", "p_3", "tag", "t1")),
    ] {
        let err = s.apply(stamp(), vec![op]).await.unwrap_err();
        assert!(matches!(err, StorageError::UniqueValueTaken(_)), "{err:?}");
        assert_eq!(dump(&s).await, before);
    }
    // Both move to a new tag together, the first checked (nobody else holds it), the second
    // shared, in one batch.
    s.apply(
        stamp(),
        vec![
            WriteOp::PutMeta(meta("password_identity", "p_1", "tag", "t2")),
            WriteOp::PutSharedMeta(meta("password_identity", "p_2", "tag", "t2")),
        ],
    )
    .await
    .unwrap();
    assert!(
        s.meta_find("password_identity", "tag", "t1")
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(
        s.meta_find("password_identity", "tag", "t2")
            .await
            .unwrap()
            .len(),
        4
    );
}

pub async fn meta_find_returns_whole_objects(s: impl Storage) {
    s.apply(
        stamp(),
        vec![
            WriteOp::InsertMeta(meta("password_identity", "p_1", "tag", "t1")),
            WriteOp::InsertMeta(meta("password_identity", "p_1", "dek", "d1")),
            WriteOp::InsertMeta(meta("password_identity", "p_2", "tag", "t2")),
            WriteOp::InsertMeta(meta("password_identity", "p_2", "dek", "d2")),
        ],
    )
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
        let identity = if i % 3 == 0 { "p_1" } else { "p_2" };
        batch.push(WriteOp::insert_record(linked(
            &format!("r{i:02}"),
            &format!("tk_{i:02}"),
            identity,
        )));
    }
    s.apply(stamp(), batch).await.unwrap();
    let links = s.records_linked_to("p_1", None, 100).await.unwrap();
    assert_eq!(
        links.iter().map(|r| r.id.as_str()).collect::<Vec<_>>(),
        [
            "r00", "r03", "r06", "r09", "r12", "r15", "r18", "r21", "r24", "r27"
        ],
        "whole records, in id order"
    );
    assert_eq!(links[1], linked("r03", "tk_03", "p_1"));
    // Moving one link updates both answers.
    relink(&s, "r00", Some("p_2")).await;
    assert_eq!(linked_ids(&s, "p_1").await.len(), 9);
    assert_eq!(linked_ids(&s, "p_2").await.len(), 21);
    assert!(linked_ids(&s, "p_9").await.is_empty());
    assert_eq!(s.linked_count(None).await.unwrap(), 30);
    assert_eq!(s.linked_count(Some("p_1")).await.unwrap(), 9);
    assert_eq!(s.linked_count(Some("p_2")).await.unwrap(), 21);
    assert_eq!(s.linked_count(Some("p_9")).await.unwrap(), 0);
    // Unlinking (a master key) leaves the record out of every identity's answer.
    relink(&s, "r03", None).await;
    assert_eq!(linked_ids(&s, "p_1").await.len(), 8);
    assert_eq!(s.linked_count(None).await.unwrap(), 29);
    assert_eq!(s.linked_count(Some("p_1")).await.unwrap(), 8);
    // An identity id that extends another's is a different identity, not a longer range of it.
    s.apply(
        stamp(),
        vec![WriteOp::insert_record(linked("r99", "tk_99", "p_10"))],
    )
    .await
    .unwrap();
    assert_eq!(s.linked_count(Some("p_1")).await.unwrap(), 8);
    assert_eq!(s.linked_count(Some("p_10")).await.unwrap(), 1);
    assert_eq!(linked_ids(&s, "p_1").await.len(), 8);
    // Deleting a record takes it out of its identity's count.
    s.apply(
        stamp(),
        vec![WriteOp::DeleteRecord {
            id: "r99".into(),
            if_expired_at: None,
        }],
    )
    .await
    .unwrap();
    assert_eq!(s.linked_count(Some("p_10")).await.unwrap(), 0);
}

/// Records by token and an identity's rows read together (one round trip where the backend
/// can) answer exactly as the two reads do apart: asked order, duplicates and missing tokens
/// kept, the whole slot object, nothing of another tag.
pub async fn records_and_meta_read_together_answer_as_apart(s: impl Storage) {
    let find = |tag| MetaFind {
        object_type: "password_identity",
        key: "tag",
        value: tag,
    };
    s.apply(
        stamp(),
        vec![
            WriteOp::InsertMeta(meta("password_identity", "p_1", "tag", "t1")),
            WriteOp::InsertMeta(meta("password_identity", "p_1", "dek", "d1")),
            WriteOp::InsertMeta(meta("password_identity", "p_2", "tag", "t2")),
            WriteOp::InsertMeta(meta("password_identity", "p_2", "dek", "d2")),
            WriteOp::InsertMeta(meta("password_identity", "s_3", "tag", "t3")),
            WriteOp::InsertMeta(meta("password_identity", "s_3", "dek", "d3")),
            WriteOp::InsertMeta(meta("password_identity", "s_3", "identity", "p_2")),
            WriteOp::insert_record(linked("a", "tk_a", "p_1")),
            WriteOp::insert_record(linked("b", "tk_b", "p_2")),
            WriteOp::insert_record(record("c", "tk_\u{e000}c\u{1f600}")),
            WriteOp::insert_record(record("d", "tk_😀")),
        ],
    )
    .await
    .unwrap();
    let asks: [&[&str]; 5] = [
        &["tk_b", "tk_a"],
        &[
            "tk_😀",
            "tk_missing",
            "tk_\u{e000}c\u{1f600}",
            "tk_a",
            "tk_😀",
        ],
        &["tk_missing"],
        &["tk_a"],
        &[],
    ];
    for ask in asks {
        let tokens: Vec<String> = ask.iter().map(|t| (*t).to_owned()).collect();
        for tag in ["t1", "t2", "t3", "nobody's"] {
            let together = s
                .records_by_tokens_and_meta(&tokens, find(tag))
                .await
                .unwrap();
            let apart = (
                s.records_by_tokens(&tokens).await.unwrap(),
                s.meta_find("password_identity", "tag", tag).await.unwrap(),
            );
            assert_eq!(together, apart, "{ask:?}, tag {tag}");
        }
    }
    let (records, rows) = s
        .records_by_tokens_and_meta(&["tk_b".into(), "tk_none".into()], find("t3"))
        .await
        .unwrap();
    assert_eq!(records, vec![Some(linked("b", "tk_b", "p_2")), None]);
    assert_eq!(
        rows,
        vec![
            meta("password_identity", "s_3", "dek", "d3"),
            meta("password_identity", "s_3", "identity", "p_2"),
            meta("password_identity", "s_3", "tag", "t3"),
        ],
        "the slot holding the tag, whole"
    );
}

/// The by-value lookups follow meta rows and record links as they move, down to none and back.
pub async fn meta_find_follows_values_as_rows_move(s: impl Storage) {
    let mut batch = Vec::new();
    for id in ["a", "b", "c"] {
        batch.push(WriteOp::insert_record(linked(
            id,
            &format!("tk_{id}"),
            "p_1",
        )));
        batch.push(WriteOp::PutMeta(meta(
            "password_identity",
            id,
            "identity",
            "p_1",
        )));
    }
    s.apply(stamp(), batch).await.unwrap();
    // Move the rows off p_1 one at a time, last-linked first, down to a single holder.
    for id in ["c", "b"] {
        relink(&s, id, Some("p_2")).await;
        s.apply(
            stamp(),
            vec![WriteOp::PutMeta(meta(
                "password_identity",
                id,
                "identity",
                "p_2",
            ))],
        )
        .await
        .unwrap();
    }
    let holders = s
        .meta_find("password_identity", "identity", "p_1")
        .await
        .unwrap();
    assert_eq!(
        holders,
        vec![meta("password_identity", "a", "identity", "p_1")]
    );
    assert_eq!(linked_ids(&s, "p_1").await, ["a"]);
    let moved = s
        .meta_find("password_identity", "identity", "p_2")
        .await
        .unwrap();
    assert_eq!(moved.len(), 2);
    assert_eq!(linked_ids(&s, "p_2").await, ["b", "c"]);
    s.apply(
        stamp(),
        vec![WriteOp::DeleteMeta(MetaKey::new(
            "password_identity",
            "a",
            "identity",
        ))],
    )
    .await
    .unwrap();
    relink(&s, "a", None).await;
    assert!(
        s.meta_find("password_identity", "identity", "p_1")
            .await
            .unwrap()
            .is_empty()
    );
    assert!(linked_ids(&s, "p_1").await.is_empty());
    s.apply(
        stamp(),
        vec![WriteOp::PutMeta(meta(
            "password_identity",
            "a",
            "identity",
            "p_1",
        ))],
    )
    .await
    .unwrap();
    relink(&s, "a", Some("p_1")).await;
    assert_eq!(
        s.meta_find("password_identity", "identity", "p_1")
            .await
            .unwrap()
            .len(),
        1
    );
    assert_eq!(linked_ids(&s, "p_1").await, ["a"]);
}

pub async fn unreferenced_identities_are_pruned_in_the_same_batch(s: impl Storage) {
    s.apply(
        stamp(),
        vec![
            WriteOp::InsertMeta(meta("password_identity", "p_1", "tag", "t1")),
            WriteOp::InsertMeta(meta("password_identity", "p_1", "dek", "d1")),
            WriteOp::insert_record(linked("a", "tk_a", "p_1")),
            WriteOp::insert_record(linked("b", "tk_b", "p_1")),
        ],
    )
    .await
    .unwrap();
    let value = |id: &str| format!("{VALUE}{id}");
    // One link left: the identity stays.
    s.apply(
        stamp(),
        vec![
            reseal("a", &value("a"), &value("a"), Some("p_2"), NOW),
            prune("p_1"),
        ],
    )
    .await
    .unwrap();
    assert_eq!(
        s.meta_object("password_identity", "p_1")
            .await
            .unwrap()
            .len(),
        2
    );
    // The last link goes: so does the identity, in the same batch, leaving tombstones; its
    // tag is free again.
    let pruned = write(
        &s,
        vec![
            delete("a"),
            reseal("b", &value("b"), &value("b"), None, NOW),
            prune("p_1"),
            delete("b"),
        ],
    )
    .await
    .unwrap();
    assert!(
        s.meta_object("password_identity", "p_1")
            .await
            .unwrap()
            .is_empty()
    );
    assert!(s.meta_all().await.unwrap().is_empty());
    let (feed, _) = feeds(&s).await;
    for key in ["tag", "dek"] {
        let key = MetaKey::new("password_identity", "p_1", key);
        assert_eq!(
            entry(&feed, is_meta(&key)).map(|c| c.row.clone()),
            Some(gone_meta(key, pruned))
        );
    }
    s.apply(
        stamp(),
        vec![WriteOp::InsertMeta(meta(
            "password_identity",
            "p_2",
            "tag",
            "t1",
        ))],
    )
    .await
    .unwrap();
    // Pruning a missing identity is a no-op.
    s.apply(stamp(), vec![prune("p_404")]).await.unwrap();
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
        setup.push(WriteOp::insert_record(linked(
            id,
            &format!("tk_{id}"),
            owner,
        )));
    }
    s.apply(stamp(), setup).await.unwrap();
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
    s.apply(stamp(), vec![prune("p_1")]).await.unwrap();
    let unlink = |id: &str| {
        let value = format!("{VALUE}{id}");
        reseal(id, &value, &value, None, NOW)
    };
    s.apply(stamp(), vec![unlink("a"), prune("p_1")])
        .await
        .unwrap();
    assert_eq!(objects(s.meta_all().await.unwrap()), all);
    // The last record of p_1 deleted: p_1 and exactly its slots go.
    s.apply(stamp(), vec![delete("b")]).await.unwrap();
    assert_eq!(objects(s.meta_all().await.unwrap()), ["p_2", "p_2a"]);
    assert_eq!(
        s.meta_get(&MetaKey::new("other", "x", "identity"))
            .await
            .unwrap()
            .as_deref(),
        Some("p_1")
    );
    // Their tags are free again.
    s.apply(stamp(), slot("p_3a", "p_3", "t1a")).await.unwrap();
    s.apply(stamp(), vec![unlink("c"), prune("p_2")])
        .await
        .unwrap();
    assert_eq!(objects(s.meta_all().await.unwrap()), ["p_3a"]);
    // The explicit prune takes slots written earlier in the same batch.
    let mut batch = identity("p_4", "t4");
    batch.extend(slot("p_4a", "p_4", "t4a"));
    batch.push(prune("p_4"));
    s.apply(stamp(), batch).await.unwrap();
    assert_eq!(objects(s.meta_all().await.unwrap()), ["p_3a"]);
    // And a purge of expired records (set-based where the backend has one).
    let mut expiring = linked("e", "tk_e", "p_5");
    expiring.expires_at = Some(NOW - 1);
    let mut batch = identity("p_5", "t5");
    batch.extend(slot("p_5a", "p_5", "t5a"));
    batch.push(WriteOp::insert_record(expiring));
    let written = write(&s, batch).await.unwrap();
    assert_eq!(
        objects(s.meta_all().await.unwrap()),
        ["p_3a", "p_5", "p_5a"]
    );
    let mut p5 = versions_of(&s, &["p_5", "p_5a"], written).await;
    p5.extend(kept_versions(&s).await);
    p5.sort();
    if s.purge_expired(stamp_at(NOW), Purge::Delete, 100, vec![])
        .await
        .unwrap()
        .is_none()
    {
        s.apply(
            stamp(),
            vec![WriteOp::DeleteRecord {
                id: "e".into(),
                if_expired_at: Some(NOW),
            }],
        )
        .await
        .unwrap();
    }
    assert_eq!(objects(s.meta_all().await.unwrap()), ["p_3a"]);
    // The purge emptied p_5: its versions and its slot's are kept too.
    assert_eq!(kept_versions(&s).await, p5);
}

pub async fn failed_batches_change_nothing(s: impl Storage) {
    let c = record("c", "tk_c");
    s.apply(
        stamp(),
        vec![
            WriteOp::insert_record(record("a", "tk_a")),
            WriteOp::insert_record(linked("b", "tk_b", "p_1")),
            WriteOp::insert_record(c.clone()),
            WriteOp::insert_record(record("t", "tk_t")),
            WriteOp::InsertMeta(meta("password_identity", "p_1", "tag", "t1")),
            WriteOp::PutMeta(meta("vault", "settings", "version", "1")),
            WriteOp::PutMeta(meta("vault", "settings", "gone", "1")),
        ],
    )
    .await
    .unwrap();
    // A record tombstone, a meta tombstone, and a dirty row made clean by a merge.
    s.apply(
        stamp(),
        vec![
            delete("t"),
            WriteOp::DeleteMeta(MetaKey::new("vault", "settings", "gone")),
            WriteOp::PutVersion {
                row: Box::new(live_row(&record("a", "tk_a"))),
                dirty: false,
            },
        ],
    )
    .await
    .unwrap();
    let before = everything(&s).await;
    // Every kind of op, then one that fails at the very end (after `ClearAll`, so each tail
    // conflicts with something the batch itself wrote).
    let failing_tail = [
        WriteOp::insert_record(record("z", "tk_e")),
        WriteOp::insert_record(record("e", "tk_z")),
        WriteOp::InsertMeta(meta("vault", "settings", "version", "9")),
        change("missing", RecordChange::Restore, NOW),
        reseal("e", "not the value", &format!("{VALUE}x"), None, NOW),
        change("c", RecordChange::Restore, NOW),
        WriteOp::PutVersion {
            row: Box::new(live_row(&record("y", "tk_e"))),
            dirty: true,
        },
        WriteOp::PutMeta(meta("password_identity", "p_9", "tag", "t3")),
        WriteOp::ExpectMeta {
            key: MetaKey::new("vault", "settings", "version"),
            value: Some("2".into()),
        },
        WriteOp::ExpectEmpty,
    ];
    for tail in failing_tail {
        let batch = vec![
            WriteOp::insert_record(record("d", "tk_d")),
            reseal("c", &c.value, &format!("{VALUE}new"), Some("p_2"), NOW + 1),
            change(
                "b",
                RecordChange::SoftDelete {
                    if_expired_at: None,
                },
                NOW + 1,
            ),
            delete("a"),
            reseal(
                "b",
                &format!("{VALUE}b"),
                &format!("{VALUE}b"),
                None,
                NOW + 1,
            ),
            prune("p_1"),
            WriteOp::PutMeta(meta("vault", "settings", "version", "2")),
            WriteOp::PutMeta(meta("vault", "settings", "gone", "back")),
            WriteOp::PutMeta(meta("vault", "state", "local", "x")),
            WriteOp::PutMeta(meta("password_identity", "p_2", "tag", "t2")),
            WriteOp::insert_record(linked("d2", "tk_d2", "p_2")),
            WriteOp::PutVersion {
                row: Box::new(gone_record("t", stamp())),
                dirty: true,
            },
            WriteOp::PutVersion {
                row: Box::new(live_row(&record("f", "tk_f"))),
                dirty: true,
            },
            WriteOp::PutVersion {
                row: Box::new(gone_meta(
                    MetaKey::new("vault", "settings", "version"),
                    stamp(),
                )),
                dirty: false,
            },
            WriteOp::PutVersion {
                row: Box::new(meta_value(
                    MetaKey::new("password_identity", "p_1", "tag"),
                    stamp().rev,
                    "t1",
                )),
                dirty: true,
            },
            WriteOp::ClearAll,
            WriteOp::insert_record(record("e", "tk_e")),
            WriteOp::PutMeta(meta("vault", "settings", "version", "3")),
            WriteOp::InsertMeta(meta("password_identity", "p_3", "tag", "t3")),
            tail.clone(),
        ];
        assert!(s.apply(stamp(), batch).await.is_err(), "{tail:?} must fail");
        assert_eq!(
            everything(&s).await,
            before,
            "after a batch failing on {tail:?}"
        );
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
        assert_eq!(linked_ids(&s, "p_1").await, ["b"]);
        assert!(linked_ids(&s, "p_2").await.is_empty());
        assert_eq!(s.linked_count(None).await.unwrap(), 1);
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
    let refused = |op: WriteOp| {
        let s = &s;
        async move {
            assert_eq!(
                s.apply(stamp(), vec![op]).await.unwrap_err(),
                StorageError::NotEmpty
            );
        }
    };
    // Records and identities are data to both checks.
    let not_empty = || async {
        refused(WriteOp::ExpectEmpty).await;
        refused(WriteOp::ExpectNoData).await;
    };
    let checkpoint = meta("sync", "state", "checkpoint", "42");
    s.apply(
        stamp(),
        vec![
            WriteOp::PutMeta(meta("vault", "settings", "kdf", "{}")),
            WriteOp::PutMeta(meta("vault", "settings", "version", "1")),
            WriteOp::PutMeta(meta("vault", "state", "writes", "e1")),
            WriteOp::PutMeta(checkpoint.clone()),
        ],
    )
    .await
    .unwrap();
    // Vault settings, vault state and sync's own rows do not count as data.
    s.apply(stamp(), vec![WriteOp::ExpectEmpty]).await.unwrap();
    s.apply(stamp(), vec![WriteOp::ExpectNoData]).await.unwrap();
    s.apply(
        stamp(),
        vec![WriteOp::InsertMeta(meta(
            "password_identity",
            "p",
            "tag",
            "t",
        ))],
    )
    .await
    .unwrap();
    not_empty().await;
    // Every other row goes, and sync's stay.
    s.apply(
        stamp(),
        vec![
            WriteOp::ClearAll,
            WriteOp::insert_record(record("a", "tk_a")),
        ],
    )
    .await
    .unwrap();
    not_empty().await;
    assert_eq!(s.meta_all().await.unwrap(), vec![checkpoint.clone()]);
    assert_eq!(
        s.meta_get(&write_epoch()).await.unwrap(),
        None,
        "the write epoch goes too"
    );
    // A tombstone alone is data to `ExpectEmpty` (importing over it could resurrect what it
    // deleted), not to `ExpectNoData` (a replica whose records were all deleted may join).
    s.apply(stamp(), vec![delete("a")]).await.unwrap();
    assert_eq!(dump(&s).await, (vec![], vec![checkpoint.clone()]));
    let only_tombstones = || async {
        refused(WriteOp::ExpectEmpty).await;
        s.apply(stamp(), vec![WriteOp::ExpectNoData]).await.unwrap();
    };
    only_tombstones().await;
    s.apply(stamp(), vec![WriteOp::ClearAll]).await.unwrap();
    assert_eq!(dump(&s).await, (vec![], vec![checkpoint.clone()]));
    assert_eq!(
        feeds(&s).await,
        (vec![], vec![]),
        "tombstones are cleared too"
    );
    s.apply(stamp(), vec![WriteOp::ExpectEmpty]).await.unwrap();
    // So is a meta tombstone, and a tombstone a merge stored.
    s.apply(
        stamp(),
        vec![
            WriteOp::PutMeta(meta("vault", "settings", "policy", "x")),
            WriteOp::DeleteMeta(MetaKey::new("vault", "settings", "policy")),
        ],
    )
    .await
    .unwrap();
    only_tombstones().await;
    s.apply(stamp(), vec![WriteOp::ClearAll]).await.unwrap();
    s.apply(
        stamp(),
        vec![WriteOp::PutVersion {
            row: Box::new(gone_record("z", stamp())),
            dirty: false,
        }],
    )
    .await
    .unwrap();
    only_tombstones().await;
    s.apply(stamp(), vec![WriteOp::ClearAll]).await.unwrap();
    assert_eq!(dump(&s).await, (vec![], vec![checkpoint]));
    s.apply(
        stamp(),
        vec![
            WriteOp::ExpectEmpty,
            WriteOp::InsertMeta(meta("password_identity", "p", "tag", "t")),
        ],
    )
    .await
    .unwrap();
    // A record id cleared away, tombstone and all, can be stored again (a snapshot import).
    s.apply(stamp(), vec![WriteOp::insert_record(record("a", "tk_a"))])
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
    for order_by in OrderBy::ALL {
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

/// The [`query_fixture`] records, inserted in one batch.
async fn insert_fixture(s: &dyn Storage) -> Vec<Record> {
    let all = query_fixture();
    s.apply(
        stamp(),
        all.iter().cloned().map(WriteOp::insert_record).collect(),
    )
    .await
    .unwrap();
    all
}

pub async fn queries_agree_with_the_shared_filter(s: impl Storage) {
    let all = insert_fixture(&s).await;
    for filter in query_filters() {
        assert_query_agrees(&s, &all, &filter, "inserting the fixture").await;
    }
}

/// `filter`'s page and count from `s` are what the shared filter makes of `all` (every record
/// the store holds): the same records in the same order, and a count that ignores paging.
async fn assert_query_agrees(s: &dyn Storage, all: &[Record], filter: &RecordFilter, step: &str) {
    let expected = filter.apply(all.to_vec(), NOW);
    let got = s.query_records(filter, NOW).await.unwrap();
    assert_eq!(
        got.iter().map(|r| &r.id).collect::<Vec<_>>(),
        expected.iter().map(|r| &r.id).collect::<Vec<_>>(),
        "after {step}: {filter:?}"
    );
    assert_eq!(got, expected, "after {step}: {filter:?}");
    let unpaged = RecordFilter {
        limit: None,
        offset: 0,
        ..filter.clone()
    };
    assert_eq!(
        s.count_records(filter, NOW).await.unwrap() as usize,
        unpaged.apply(all.to_vec(), NOW).len(),
        "count after {step} ignores paging: {filter:?}"
    );
}

/// Every listing's shape: each order, both directions, each soft-deleted state.
fn listing_shapes() -> Vec<(OrderBy, bool, SoftDeleted)> {
    let states = [
        SoftDeleted::Exclude,
        SoftDeleted::Include,
        SoftDeleted::Only,
    ];
    OrderBy::ALL
        .into_iter()
        .flat_map(|order_by| [true, false].map(|descending| (order_by, descending)))
        .flat_map(|(order_by, descending)| states.map(|state| (order_by, descending, state)))
        .collect()
}

/// Pages in every order and soft-deleted state, with offsets that cross soft-deleted rows, and
/// the counts of each state: what backends serve from indexes or counters must agree with the
/// shared filter over every record the store holds (read by scanning, which uses neither).
async fn listings_agree(s: &dyn Storage, step: &str) {
    let (all, _) = dump(s).await;
    let mut filters = query_filters();
    for (order_by, descending, soft_deleted) in listing_shapes() {
        for (offset, limit, expired_only) in [
            (0, Some(4), false),
            (5, Some(3), false),
            (17, None, false),
            // Past the middle, with records after the page: SQL steps to it from the far end.
            (26, Some(4), false),
            (30, Some(30), false),
            (1, Some(2), true),
            // The last expired records: a page that must stop where the unexpired ones start.
            (8, Some(5), true),
        ] {
            filters.push(RecordFilter {
                order_by,
                descending,
                soft_deleted,
                offset,
                limit,
                expired_only,
                ..Default::default()
            });
        }
    }
    for filter in &filters {
        assert_query_agrees(s, &all, filter, step).await;
    }
    // Then again backwards, after a write that moves no record: a page after the one before may
    // start where that one ended (IndexedDB keeps such a bookmark while the seq counter, which
    // every replicated row's write moves, stands still), so each page is also asked for where
    // none can help: each shape's deepest page first, when no page of that shape is bookmarked.
    s.apply(
        stamp(),
        vec![WriteOp::PutMeta(meta("vault", "settings", "listed", step))],
    )
    .await
    .unwrap();
    for filter in filters.iter().rev() {
        assert_query_agrees(s, &all, filter, step).await;
    }
}

/// The page after one already read answers as the store is when it is read, whatever was
/// written in between: a backend that starts a page where the one before it ended (IndexedDB
/// keeps such a bookmark) must notice a write that moved the records before it. In every order,
/// direction and soft-deleted state, a record of the first page is deleted, soft-deleted or
/// restored, or a record sorting beside one is inserted, between that page and the next ones.
pub async fn a_listing_paged_on_answers_as_the_store_is_after_writes_in_between(s: impl Storage) {
    insert_fixture(&s).await;
    for (shape, (order_by, descending, soft_deleted)) in (0..).zip(listing_shapes()) {
        let page = |offset, limit| RecordFilter {
            order_by,
            descending,
            soft_deleted,
            offset,
            limit,
            ..Default::default()
        };
        let step = format!("{order_by:?} descending {descending} {soft_deleted:?}");
        let first = s.query_records(&page(0, Some(3)), NOW).await.unwrap();
        let [_, beside, moved] = &first[..] else {
            panic!("{step}: the fixture fills a page of 3, got {first:?}");
        };
        let (all, _) = dump(&s).await;
        assert_query_agrees(&s, &all, &page(0, Some(3)), &step).await;
        assert_query_agrees(&s, &all, &page(3, Some(3)), &step).await;
        let at = NOW + 100 + shape;
        let ops = match shape % 3 {
            0 => vec![delete(&moved.id)],
            1 if moved.soft_deleted_at.is_some() => {
                vec![change(&moved.id, RecordChange::Restore, at)]
            }
            1 => vec![change(
                &moved.id,
                RecordChange::SoftDelete {
                    if_expired_at: None,
                },
                at,
            )],
            // Ties on the order's column break on the id (or token), and "x~n"
            // sorts after x: the twin lands beside it, before the pages that follow.
            _ => {
                let mut twin = beside.clone();
                twin.id.push_str(&format!("~{shape}"));
                twin.token.push_str(&format!("~{shape}"));
                vec![WriteOp::insert_record(twin)]
            }
        };
        write(&s, ops).await.unwrap();
        let step = format!("{step}, after write {}", shape % 3);
        let (all, _) = dump(&s).await;
        assert_query_agrees(&s, &all, &page(6, Some(3)), &step).await;
        assert_query_agrees(&s, &all, &page(9, None), &step).await;
    }
}

/// Listings and counts follow every kind of write: soft deletes and restores, deletes, renewals
/// into and out of expiry, re-seals (a rekey), a merge's versions (sync), a batch that failed
/// and was rolled back, and clearing the store.
pub async fn listings_and_counts_follow_every_write(s: impl Storage) {
    let all = insert_fixture(&s).await;
    listings_agree(&s, "insert").await;
    let soft = |id: &str, at: i64| {
        change(
            id,
            RecordChange::SoftDelete {
                if_expired_at: None,
            },
            at,
        )
    };
    write(
        &s,
        vec![
            soft("id01", NOW + 5),
            soft("id02", NOW + 6),
            soft("id03", NOW + 7),
        ],
    )
    .await
    .unwrap();
    assert_eq!(
        s.count_records(&RecordFilter::default(), NOW)
            .await
            .unwrap(),
        // 43 records, 8 of them soft-deleted by the fixture, 3 more here.
        43 - 8 - 3
    );
    listings_agree(&s, "soft delete").await;
    // id00 and id35 were soft-deleted by the fixture.
    write(
        &s,
        vec![
            change("id00", RecordChange::Restore, NOW + 8),
            change("id02", RecordChange::Restore, NOW + 9),
        ],
    )
    .await
    .unwrap();
    listings_agree(&s, "restore").await;
    write(
        &s,
        vec![delete("id04"), delete("id35"), delete("id\u{1f600}")],
    )
    .await
    .unwrap();
    listings_agree(&s, "delete").await;
    let renew = |id: &str, expires_at: Option<i64>| {
        change(id, RecordChange::Renew { expires_at }, NOW + 10)
    };
    write(
        &s,
        vec![
            renew("id05", Some(NOW - 100)),
            renew("id06", None),
            renew("id07", Some(NOW + 1)),
        ],
    )
    .await
    .unwrap();
    listings_agree(&s, "renew").await;
    let id08 = get_id(&s, "id08").await.unwrap();
    let id09 = get_id(&s, "id09").await.unwrap();
    write(
        &s,
        vec![
            reseal(
                "id08",
                &id08.value,
                &format!("{VALUE}rekeyed8"),
                Some("p_1"),
                NOW + 20,
            ),
            reseal(
                "id09",
                &id09.value,
                &format!("{VALUE}rekeyed9"),
                None,
                NOW + 21,
            ),
        ],
    )
    .await
    .unwrap();
    listings_agree(&s, "rekey").await;
    // A merge: a new record, one changed under its id (another token, soft-deleted, expired),
    // one live again over its tombstone, and one gone.
    let mut arrived = record("id_new", "tk_new");
    arrived.created_at = NOW - 2000;
    let mut changed = get_id(&s, "id10").await.unwrap();
    changed.token = "tk_10_moved".into();
    changed.soft_deleted_at = Some(NOW - 1);
    changed.expires_at = Some(NOW - 50);
    changed.updated_at = NOW + 30;
    let mut back = record("id04", "tk_back");
    back.created_at = NOW - 3;
    let gone = stamp();
    s.apply(
        stamp(),
        vec![
            WriteOp::PutVersion {
                row: Box::new(live_row(&arrived)),
                dirty: false,
            },
            WriteOp::PutVersion {
                row: Box::new(live_row(&changed)),
                dirty: false,
            },
            WriteOp::PutVersion {
                row: Box::new(live_row(&back)),
                dirty: false,
            },
            WriteOp::PutVersion {
                row: Box::new(gone_record("id11", gone)),
                dirty: false,
            },
        ],
    )
    .await
    .unwrap();
    listings_agree(&s, "sync apply").await;
    // Every kind of write, then a failure: the batch leaves listings and counts as they were.
    let before = everything(&s).await;
    let id12 = get_id(&s, "id12").await.unwrap();
    let failed = s
        .apply(
            stamp(),
            vec![
                WriteOp::insert_record(record("id_failed", "tk_failed")),
                soft("id13", NOW + 40),
                change("id01", RecordChange::Restore, NOW + 40),
                delete("id14"),
                renew("id15", Some(NOW - 7)),
                reseal(
                    "id12",
                    &id12.value,
                    &format!("{VALUE}x"),
                    Some("p_2"),
                    NOW + 40,
                ),
                WriteOp::PutVersion {
                    row: Box::new(live_row(&record("id16", "tk_16_moved"))),
                    dirty: true,
                },
                WriteOp::PutVersion {
                    row: Box::new(gone_record("id17", stamp())),
                    dirty: true,
                },
                WriteOp::insert_record(record("id_dup", "tk_new")),
            ],
        )
        .await;
    assert!(
        matches!(failed, Err(StorageError::TokenTaken(_))),
        "{failed:?}"
    );
    assert_eq!(everything(&s).await, before);
    listings_agree(&s, "a failed batch").await;
    write(&s, vec![WriteOp::ClearAll]).await.unwrap();
    listings_agree(&s, "clear all").await;
    for soft_deleted in [
        SoftDeleted::Exclude,
        SoftDeleted::Include,
        SoftDeleted::Only,
    ] {
        let filter = RecordFilter {
            soft_deleted,
            ..Default::default()
        };
        assert_eq!(s.count_records(&filter, NOW).await.unwrap(), 0);
        assert!(s.query_records(&filter, NOW).await.unwrap().is_empty());
    }
    // A store without soft-deleted records (backends may page live records through the
    // order's own index then), and one without live ones.
    let live: Vec<Record> = all
        .iter()
        .cloned()
        .map(|r| Record {
            soft_deleted_at: None,
            ..r
        })
        .collect();
    write(&s, live.into_iter().map(WriteOp::insert_record).collect())
        .await
        .unwrap();
    listings_agree(&s, "only live records").await;
    let ids: Vec<String> = all.iter().map(|r| r.id.clone()).collect();
    write(&s, ids.iter().map(|id| soft(id, NOW + 50)).collect())
        .await
        .unwrap();
    listings_agree(&s, "only soft-deleted records").await;
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
        let r = match i % 4 {
            0 => linked(&id, &format!("tk_{i}"), "p_1"),
            1 => linked(&id, &format!("tk_{i}"), "p_0"),
            _ => record(&id, &format!("tk_{i}")),
        };
        batch.push(WriteOp::insert_record(r));
        ids.push(id);
    }
    s.apply(stamp(), batch).await.unwrap();
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
    // An identity's records page the same way (in the backend's id order), each exactly once.
    let mut linked: Vec<String> = linked_ids_paged(&s, "p_1", 3).await;
    linked.sort();
    let mut expected: Vec<String> = ids
        .iter()
        .filter(|id| link_of_sync(&seen, id) == Some("p_1"))
        .cloned()
        .collect();
    expected.sort();
    assert_eq!(linked.len(), 14);
    assert_eq!(linked, expected);
    assert!(
        s.records_linked_to("p_1", None, 0)
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(
        s.records_linked_to("p_1", None, usize::MAX)
            .await
            .unwrap()
            .len(),
        14
    );
    assert_eq!(s.linked_count(None).await.unwrap(), 14 + 13);
    assert_eq!(s.meta_count("record").await.unwrap(), 0, "no link rows");
}

fn link_of_sync<'a>(records: &'a [Record], id: &str) -> Option<&'a str> {
    records
        .iter()
        .find(|r| r.id == id)
        .and_then(|r| r.password_id.as_deref())
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
        let identity = if i % 4 == 0 { "p_b" } else { "p_a" };
        batch.push(WriteOp::insert_record(linked(
            &record_id,
            &format!("tk_{i}"),
            identity,
        )));
    }
    s.apply(stamp(), batch).await.unwrap();

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

    let holders = s.records_linked_to("p_a", None, N).await.unwrap();
    assert_eq!(holders.len(), N - N / 4);
    assert!(
        holders
            .iter()
            .all(|r| r.password_id.as_deref() == Some("p_a"))
    );
    assert_eq!(s.linked_count(None).await.unwrap(), N as u64);

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
    s.apply(stamp(), batch).await.unwrap();
    let (records, _) = dump(&s).await;
    assert_eq!(records.len(), N - 600);
    assert_eq!(
        records
            .iter()
            .filter(|r| r.expires_at == Some(NOW + 1))
            .count(),
        N / 2
    );
    assert_eq!(
        s.linked_count(None).await.unwrap(),
        (N - 600) as u64,
        "a deleted record's link goes with it"
    );
    assert_eq!(
        linked_ids(&s, "p_a").await.len() + linked_ids(&s, "p_b").await.len(),
        N - 600
    );
    // Every change and every tombstone is in the feed once.
    let (feed, dirty) = feeds(&s).await;
    assert_eq!(feed.len(), N);
    assert_eq!(dirty.len(), N);
    let gone = feed
        .iter()
        .filter(|c| {
            matches!(
                c.row,
                Row::Record {
                    version: RecordVersion::Gone(_),
                    ..
                }
            )
        })
        .count();
    assert_eq!(gone, 600);
}

/// A backend's set-based expiry purge (where it has one) purges exactly the records the shared
/// filter calls expired, with their links and the identities they leave without links, and
/// writes what it is given along; at a count that no longer holds it writes nothing.
pub async fn set_based_purges_take_exactly_the_expired(s: impl Storage) {
    let mut batch = Vec::new();
    let links = [
        ("gone-1", "p_only_expired"),
        ("gone-2", "p_mixed"),
        ("stays-later", "p_mixed"),
    ];
    let expiring = |id: &str, expires_at: Option<i64>, soft: bool| {
        let mut r = record(id, &format!("tk_{id}"));
        r.password_id = links
            .iter()
            .find(|(l, _)| *l == id)
            .map(|(_, identity)| identity.to_string());
        r.expires_at = expires_at;
        r.soft_deleted_at = soft.then_some(NOW - 5);
        WriteOp::insert_record(r)
    };
    batch.push(expiring("gone-1", Some(NOW - 1), false));
    batch.push(expiring("gone-2", Some(NOW - 100), true));
    batch.push(expiring("stays-at-now", Some(NOW), false));
    batch.push(expiring("stays-later", Some(NOW + 1), false));
    batch.push(expiring("stays-never", None, false));
    for identity in ["p_only_expired", "p_mixed"] {
        batch.push(WriteOp::PutMeta(meta(
            "password_identity",
            identity,
            "tag",
            identity,
        )));
    }
    s.apply(stamp(), batch).await.unwrap();

    let soft_stamp = stamp_at(NOW);
    let Some(soft) = s
        .purge_expired(soft_stamp, Purge::SoftDelete, 100, vec![])
        .await
        .unwrap()
    else {
        return; // no set-based purge: the vault pages through expired records instead
    };
    assert_eq!(soft, 1, "only the live expired record is soft-deleted");
    let r = get_id(&s, "gone-1").await.unwrap();
    assert_eq!((r.soft_deleted_at, r.updated_at), (Some(NOW), NOW));
    assert_eq!(
        r.revs,
        RecordRevs {
            deleted: soft_stamp.rev,
            ..RecordRevs::all(created_rev())
        },
        "a purge stamps the deleted register only"
    );
    assert_eq!(
        mark_of(&s, is_record("gone-1")).await,
        seq_of(&s, is_record("gone-1")).await
    );
    assert_eq!(
        get_id(&s, "gone-2").await.unwrap().soft_deleted_at,
        Some(NOW - 5)
    );
    assert_eq!(
        s.purge_expired(stamp_at(NOW), Purge::SoftDelete, 100, vec![])
            .await
            .unwrap(),
        Some(0)
    );

    // A bounded purge takes the earliest expiry first and says it may not be done.
    let epoch = WriteOp::PutMeta(meta("vault", "state", "epoch", "e2"));
    let first_stamp = stamp_at(NOW);
    let first = s
        .purge_expired(first_stamp, Purge::Delete, 1, vec![epoch.clone()])
        .await
        .unwrap();
    assert_eq!(first, Some(1));
    assert_eq!(
        entry(&feeds(&s).await.0, is_record("gone-2")).map(|c| c.row.clone()),
        Some(gone_record("gone-2", first_stamp)),
        "a purged record leaves a tombstone"
    );
    assert!(
        get_id(&s, "gone-2").await.is_none(),
        "expired first, purged first"
    );
    assert!(get_id(&s, "gone-1").await.is_some(), "beyond the limit");
    let deleted = s
        .purge_expired(stamp_at(NOW), Purge::Delete, 100, vec![epoch])
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
            ("sync", "replaced"),
            ("vault", "state")
        ],
        "the identity the purged records left alone is gone (its version kept); the rest stays"
    );
    assert_eq!(linked_ids(&s, "p_mixed").await, ["stays-later"]);
    assert!(linked_ids(&s, "p_only_expired").await.is_empty());
    assert_eq!(
        s.purge_expired(stamp_at(NOW + 2), Purge::Delete, 100, vec![])
            .await
            .unwrap(),
        Some(2)
    );
    let (records, rows) = dump(&s).await;
    assert_eq!(records.len(), 1);
    assert!(
        (rows.iter()).all(|m| m.key.object_type == "vault" || m.key.object_type == "sync"),
        "the last links went, and their identity with them (its version kept)"
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
        .map(|(i, t)| WriteOp::insert_record(record(&format!("'{i}\""), t)))
        .collect();
    s.apply(stamp(), batch).await.unwrap();
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

// ------------------------------------------------ schema 2: revisions, seqs, dirty marks

/// What a change must have done to a record, given its batch's revision.
type Expect = Box<dyn Fn(&mut Record, Rev)>;

/// The record's row and its seq after each write, for "what did this write touch".
async fn state_of(s: &dyn Storage, id: &str) -> (Record, Option<u64>) {
    (
        get_id(s, id).await.expect("the record exists"),
        seq_of(s, is_record(id)).await,
    )
}

/// InsertRecord stores the revisions it is given, whatever they are; every other write stamps
/// exactly the registers it changes, with its batch's revision, and `updatedAt` only grows.
pub async fn writes_stamp_exactly_the_registers_they_change(s: impl Storage) {
    let a = record("a", "tk_a");
    // A record as a schema-1 store or a version-1 snapshot holds it: synthesized revisions.
    let old = Record {
        created_at: NOW - 10_000,
        updated_at: NOW - 5_000,
        revs: RecordRevs::synthesized(NOW - 10_000),
        ..linked("old", "tk_old", "p_1")
    };
    // A record a merge assembled: each register from another change.
    let mixed = Record {
        revs: RecordRevs {
            value: Rev::new(NOW as u64 - 4, 1, 9).unwrap(),
            seal: Rev::new(NOW as u64 - 3, 2, 9).unwrap(),
            expires: Rev::new(NOW as u64 - 2, 3, 9).unwrap(),
            deleted: Rev::new(NOW as u64 - 1, 4, 9).unwrap(),
        },
        ..record("mixed", "tk_mixed")
    };
    s.apply(
        stamp(),
        vec![
            WriteOp::insert_record(a.clone()),
            WriteOp::insert_record(old.clone()),
            WriteOp::insert_record(mixed.clone()),
        ],
    )
    .await
    .unwrap();
    assert_eq!(get_id(&s, "a").await.unwrap(), a);
    assert_eq!(
        get_id(&s, "old").await.unwrap(),
        old,
        "synthesized revisions read back"
    );
    assert_eq!(get_id(&s, "mixed").await.unwrap(), mixed);
    assert_eq!(get_token(&s, "tk_mixed").await.unwrap(), mixed);
    assert_eq!(s.scan_records(None, 10).await.unwrap().len(), 3);

    // Each change, then exactly what it must have changed.
    let v2 = format!("{VALUE}v2");
    let v3 = format!("{VALUE}v3");
    let cases: Vec<(RecordChange, Expect)> = vec![
        (
            RecordChange::Renew {
                expires_at: Some(NOW + 9),
            },
            Box::new(|r, rev| {
                r.expires_at = Some(NOW + 9);
                r.revs.expires = rev;
            }),
        ),
        (
            RecordChange::SoftDelete {
                if_expired_at: None,
            },
            Box::new(|r, rev| {
                r.soft_deleted_at = Some(NOW + 1);
                r.revs.deleted = rev;
            }),
        ),
        (
            RecordChange::Restore,
            Box::new(|r, rev| {
                r.soft_deleted_at = None;
                r.revs.deleted = rev;
            }),
        ),
        (
            RecordChange::Reseal {
                expect: a.value.clone(),
                value: v2.clone(),
                password_id: Some("p_2".into()),
            },
            Box::new({
                let v2 = v2.clone();
                move |r, rev| {
                    r.value = v2.clone();
                    r.password_id = Some("p_2".into());
                    r.revs.seal = rev;
                }
            }),
        ),
        (
            RecordChange::Update {
                expect: v2.clone(),
                value: v3.clone(),
                password_id: None,
            },
            Box::new({
                let v3 = v3.clone();
                move |r, rev| {
                    r.value = v3.clone();
                    r.password_id = None;
                    r.revs.value = rev;
                    r.revs.seal = rev;
                }
            }),
        ),
    ];
    let mut last_seq = seq_of(&s, is_record("a")).await.expect("a is in the feed");
    for (change_, expect) in cases {
        let (mut expected, _) = state_of(&s, "a").await;
        let st = write(&s, vec![change("a", change_.clone(), NOW + 1)])
            .await
            .unwrap();
        expect(&mut expected, st.rev);
        expected.updated_at = NOW + 1;
        let (now, seq) = state_of(&s, "a").await;
        assert_eq!(now, expected, "{change_:?}");
        let seq = seq.expect("a changed record is in the feed");
        assert!(seq > last_seq, "{change_:?} takes a new seq");
        last_seq = seq;
    }

    // Changes that change nothing (a restore of a live record, a second soft delete) stamp
    // nothing, take no seq and mark nothing dirty.
    let soft_delete = |at: i64| {
        change(
            "a",
            RecordChange::SoftDelete {
                if_expired_at: None,
            },
            at,
        )
    };
    for (setup, no_op) in [
        (None, change("a", RecordChange::Restore, NOW + 50)),
        (Some(soft_delete(NOW + 60)), soft_delete(NOW + 70)),
    ] {
        if let Some(setup) = setup {
            s.apply(stamp(), vec![setup]).await.unwrap();
        }
        let (before, seq) = state_of(&s, "a").await;
        let feeds_before = feeds(&s).await;
        s.apply(stamp(), vec![no_op.clone()]).await.unwrap();
        assert_eq!(
            state_of(&s, "a").await.0,
            before,
            "{no_op:?} stamps nothing"
        );
        assert_eq!(
            feeds(&s).await,
            feeds_before,
            "{no_op:?} takes no seq and no mark"
        );
        assert_eq!(
            s.changes_since(seq.unwrap(), 10).await.unwrap(),
            vec![],
            "nothing after the last real change"
        );
    }
    assert_eq!(
        get_id(&s, "a").await.unwrap().soft_deleted_at,
        Some(NOW + 60)
    );

    // updatedAt is a max-register: a change made with an earlier clock keeps the later time.
    let (before, _) = state_of(&s, "mixed").await;
    let st = write(
        &s,
        vec![change(
            "mixed",
            RecordChange::Renew { expires_at: None },
            NOW - 1_000,
        )],
    )
    .await
    .unwrap();
    let (after, _) = state_of(&s, "mixed").await;
    assert_eq!(
        after.updated_at, before.updated_at,
        "updatedAt never goes back"
    );
    assert_eq!(after.revs.expires, st.rev);
    assert_eq!(
        (after.revs.value, after.revs.seal, after.revs.deleted),
        (mixed.revs.value, mixed.revs.seal, mixed.revs.deleted),
        "the other registers keep their own revisions"
    );
    // A synthesized record's untouched registers stay synthesized.
    let st = write(
        &s,
        vec![change(
            "old",
            RecordChange::SoftDelete {
                if_expired_at: None,
            },
            NOW,
        )],
    )
    .await
    .unwrap();
    let (after, _) = state_of(&s, "old").await;
    assert_eq!(
        after.revs,
        RecordRevs {
            deleted: st.rev,
            ..RecordRevs::synthesized(NOW - 10_000)
        }
    );
    assert_eq!(after.updated_at, NOW);
}

/// Replicated meta rows carry the revision of the batch that last wrote them; a put writes it
/// even when the value is unchanged (rows written together, like an identity's `tag` and
/// `dek`, must keep one revision). Local rows never reach the feeds.
pub async fn meta_rows_carry_their_writers_revision(s: impl Storage) {
    let tag = MetaKey::new("password_identity", "p_1", "tag");
    let dek = MetaKey::new("password_identity", "p_1", "dek");
    let version = MetaKey::new("vault", "settings", "version");
    let first = write(
        &s,
        vec![
            WriteOp::InsertMeta(meta("password_identity", "p_1", "tag", "t1")),
            WriteOp::InsertMeta(meta("password_identity", "p_1", "dek", "d1")),
            WriteOp::PutMeta(meta("vault", "settings", "version", "1")),
            WriteOp::PutMeta(meta("vault", "settings", "kdf", "{}")),
            WriteOp::PutMeta(meta("vault", "state", "writes", "e1")),
            WriteOp::PutMeta(meta("sync", "state", "checkpoint", "7")),
        ],
    )
    .await
    .unwrap();
    let (feed, dirty) = feeds(&s).await;
    assert_eq!(
        rows_of(&feed),
        rows_of(&[
            Change {
                seq: 0,
                row: meta_value(tag.clone(), first.rev, "t1")
            },
            Change {
                seq: 0,
                row: meta_value(dek.clone(), first.rev, "d1")
            },
            Change {
                seq: 0,
                row: meta_value(version.clone(), first.rev, "1")
            },
        ]),
        "replicated rows only: not the kdf setting, vault state or sync's rows"
    );
    assert_eq!(rows_of(&dirty), rows_of(&feed));
    // Rewriting the object under a new revision, one value unchanged: both rows take it.
    let second = write(
        &s,
        vec![
            WriteOp::PutMeta(meta("password_identity", "p_1", "tag", "t1")),
            WriteOp::PutMeta(meta("password_identity", "p_1", "dek", "d2")),
        ],
    )
    .await
    .unwrap();
    let (feed, _) = feeds(&s).await;
    assert_eq!(
        entry(&feed, is_meta(&tag)).map(|c| c.row.clone()),
        Some(meta_value(tag.clone(), second.rev, "t1"))
    );
    assert_eq!(
        entry(&feed, is_meta(&dek)).map(|c| c.row.clone()),
        Some(meta_value(dek.clone(), second.rev, "d2"))
    );
    // A batch of local rows only adds nothing to either feed.
    let before = feeds(&s).await;
    s.apply(
        stamp(),
        vec![
            WriteOp::PutMeta(meta("vault", "state", "writes", "e2")),
            WriteOp::PutMeta(meta("vault", "state", "unlinked", "false")),
            WriteOp::PutMeta(meta("sync", "state", "checkpoint", "8")),
            WriteOp::DeleteMeta(MetaKey::new("sync", "state", "checkpoint")),
            WriteOp::DeleteMeta(MetaKey::new("vault", "settings", "kdf")),
        ],
    )
    .await
    .unwrap();
    assert_eq!(feeds(&s).await, before, "local rows carry nothing");
    assert_eq!(
        s.meta_get(&MetaKey::new("vault", "settings", "kdf"))
            .await
            .unwrap(),
        None
    );
}

/// Seqs are unique across records, tombstones and meta rows, and grow in commit order; the
/// feed pages in seq order and holds each row once, at its latest seq; a failed batch takes
/// no seq and leaves no trace.
pub async fn seqs_grow_in_commit_order(s: impl Storage) {
    let m = MetaKey::new("vault", "settings", "version");
    s.apply(
        stamp(),
        vec![
            WriteOp::insert_record(record("a", "tk_a")),
            WriteOp::insert_record(record("b", "tk_b")),
            WriteOp::PutMeta(meta("vault", "settings", "version", "1")),
            WriteOp::insert_record(record("c", "tk_c")),
        ],
    )
    .await
    .unwrap();
    let (first, _) = feeds(&s).await;
    assert_eq!(first.len(), 4);
    let first_max = first.iter().map(|c| c.seq).max().unwrap();
    assert!(first.iter().all(|c| c.seq > 0), "a written row has a seq");
    s.apply(
        stamp(),
        vec![change(
            "a",
            RecordChange::Renew {
                expires_at: Some(NOW + 1),
            },
            NOW,
        )],
    )
    .await
    .unwrap();
    s.apply(stamp(), vec![delete("b"), WriteOp::DeleteMeta(m.clone())])
        .await
        .unwrap();
    let (feed, dirty) = feeds(&s).await;
    // Unique and in seq order.
    let seqs: Vec<u64> = feed.iter().map(|c| c.seq).collect();
    assert!(seqs.windows(2).all(|w| w[0] < w[1]), "{seqs:?}");
    assert_eq!(feed.len(), 4, "a row changed twice appears once");
    // Commit order: c untouched since the first batch, then a, then b's and m's tombstones.
    let seq = |is: &dyn Fn(&Row) -> bool| entry(&feed, is).unwrap().seq;
    let (a, b, c, mm) = (
        seq(&is_record("a")),
        seq(&is_record("b")),
        seq(&is_record("c")),
        seq(&is_meta(&m)),
    );
    assert!(
        c <= first_max && a > first_max && b > a && mm > a,
        "{feed:?}"
    );
    assert_eq!(feed[0].row, live_row(&record("c", "tk_c")));
    assert!(matches!(
        &feed[2..],
        [
            Change {
                row: Row::Record {
                    version: RecordVersion::Gone(_),
                    ..
                },
                ..
            },
            Change {
                row: Row::Meta {
                    version: MetaVersion::Gone { .. },
                    ..
                },
                ..
            },
        ] | [
            Change {
                row: Row::Meta {
                    version: MetaVersion::Gone { .. },
                    ..
                },
                ..
            },
            Change {
                row: Row::Record {
                    version: RecordVersion::Gone(_),
                    ..
                },
                ..
            },
        ]
    ));
    // Paging: `after` is exclusive, `limit` bounds the page, the pages make the feed.
    let mut paged = Vec::new();
    let mut after = 0;
    loop {
        let page = s.changes_since(after, 1).await.unwrap();
        assert!(page.len() <= 1);
        assert!(page.iter().all(|c| c.seq > after), "after is exclusive");
        let Some(last) = page.last() else { break };
        after = last.seq;
        paged.extend(page);
    }
    assert_eq!(paged, feed);
    assert_eq!(s.changes_since(a, 100).await.unwrap(), feed[2..].to_vec());
    assert!(
        s.changes_since(*seqs.last().unwrap(), 100)
            .await
            .unwrap()
            .is_empty()
    );
    // Limits at the edges: 0 is an empty page (not "no limit"), and the largest is no limit.
    assert!(s.changes_since(0, 0).await.unwrap().is_empty());
    assert!(s.dirty_changes(0, 0).await.unwrap().is_empty());
    assert_eq!(s.changes_since(0, usize::MAX).await.unwrap(), feed);
    assert_eq!(s.dirty_changes(0, usize::MAX).await.unwrap(), dirty);
    // Every row here was written locally: dirty at its seq.
    assert_eq!(dirty, feed);

    // A failed batch takes no seq: the next write's seq follows the last as a write's seq
    // follows the one before when nothing fails between them.
    write(&s, vec![WriteOp::insert_record(record("d", "tk_d"))])
        .await
        .unwrap();
    let d = seq_of(&s, is_record("d")).await.unwrap();
    write(&s, vec![WriteOp::insert_record(record("e", "tk_e"))])
        .await
        .unwrap();
    let e = seq_of(&s, is_record("e")).await.unwrap();
    let before = everything(&s).await;
    let err = s
        .apply(
            stamp(),
            vec![
                WriteOp::insert_record(record("f", "tk_f")),
                change("a", RecordChange::Renew { expires_at: None }, NOW),
                delete("c"),
                WriteOp::PutMeta(meta("vault", "settings", "version", "2")),
                WriteOp::PutVersion {
                    row: Box::new(live_row(&record("g", "tk_g"))),
                    dirty: true,
                },
                WriteOp::insert_record(record("h", "tk_a")),
            ],
        )
        .await
        .unwrap_err();
    assert_eq!(err, StorageError::TokenTaken("tk_a".into()));
    assert_eq!(
        everything(&s).await,
        before,
        "a failed batch leaves no trace"
    );
    write(&s, vec![WriteOp::insert_record(record("i", "tk_i"))])
        .await
        .unwrap();
    let i = seq_of(&s, is_record("i")).await.unwrap();
    assert_eq!(i - e, e - d, "the failed batch took no seq");
}

/// Deleting a record, purging it, deleting a replicated meta row and pruning an identity (with
/// its slots) each leave a tombstone with the batch's revision and time, seen only by the
/// feeds. A record id never comes back; a meta key does, and the row replaces its tombstone.
pub async fn tombstones_record_every_deletion(s: impl Storage) {
    let mut batch = vec![
        WriteOp::insert_record(linked("a", "tk_a", "p_1")),
        WriteOp::insert_record(record("b", "tk_b")),
        WriteOp::PutMeta(meta("password_identity", "p_1", "tag", "t1")),
        WriteOp::PutMeta(meta("password_identity", "p_1a", "tag", "t1a")),
        WriteOp::PutMeta(meta("password_identity", "p_1a", "identity", "p_1")),
        WriteOp::PutMeta(meta("vault", "settings", "policy", "x")),
        WriteOp::PutMeta(meta("vault", "state", "writes", "e1")),
    ];
    let mut expiring = record("x", "tk_x");
    expiring.expires_at = Some(NOW - 1);
    batch.push(WriteOp::insert_record(expiring));
    s.apply(stamp(), batch).await.unwrap();

    let deleted = write(&s, vec![delete("a")]).await.unwrap();
    let (feed, _) = feeds(&s).await;
    let slot_rows = [
        MetaKey::new("password_identity", "p_1", "tag"),
        MetaKey::new("password_identity", "p_1a", "tag"),
        MetaKey::new("password_identity", "p_1a", "identity"),
    ];
    assert_eq!(
        entry(&feed, is_record("a")).map(|c| c.row.clone()),
        Some(gone_record("a", deleted))
    );
    for key in &slot_rows {
        assert_eq!(
            entry(&feed, is_meta(key)).map(|c| c.row.clone()),
            Some(emptied_meta(key.clone(), deleted)),
            "the identity and its slot went with their last record: {key:?}"
        );
    }
    // A tombstone is no record: no read but the feeds sees it.
    assert_eq!(get_id(&s, "a").await, None);
    assert_eq!(get_token(&s, "tk_a").await, None);
    let all = RecordFilter {
        soft_deleted: SoftDeleted::Include,
        ..Default::default()
    };
    assert_eq!(s.count_records(&all, NOW).await.unwrap(), 2);
    assert_eq!(s.query_records(&all, NOW).await.unwrap().len(), 2);
    assert_eq!(s.scan_records(None, 10).await.unwrap().len(), 2);
    assert_eq!(
        s.query_records(
            &RecordFilter {
                id: Some("a".into()),
                soft_deleted: SoftDeleted::Include,
                ..Default::default()
            },
            NOW
        )
        .await
        .unwrap(),
        vec![]
    );
    // The id is taken for good (its token is free for another record).
    assert_eq!(
        s.apply(stamp(), vec![WriteOp::insert_record(record("a", "tk_new"))])
            .await
            .unwrap_err(),
        StorageError::IdTaken("a".into())
    );
    s.apply(stamp(), vec![WriteOp::insert_record(record("a2", "tk_a"))])
        .await
        .unwrap();

    // A purge, set-based or paged.
    let purged = stamp_at(NOW);
    if s.purge_expired(purged, Purge::Delete, 10, vec![])
        .await
        .unwrap()
        .is_none()
    {
        s.apply(
            purged,
            vec![WriteOp::DeleteRecord {
                id: "x".into(),
                if_expired_at: Some(NOW),
            }],
        )
        .await
        .unwrap();
    }
    assert_eq!(
        entry(&feeds(&s).await.0, is_record("x")).map(|c| c.row.clone()),
        Some(gone_record("x", purged))
    );

    // A replicated meta row leaves one; a local row does not.
    let policy = MetaKey::new("vault", "settings", "policy");
    let dropped = stamp_at(NOW + 5);
    s.apply(
        dropped,
        vec![
            WriteOp::DeleteMeta(policy.clone()),
            WriteOp::DeleteMeta(MetaKey::new("vault", "state", "writes")),
        ],
    )
    .await
    .unwrap();
    let (feed, dirty) = feeds(&s).await;
    let tombstone_change = entry(&feed, is_meta(&policy)).cloned().unwrap();
    assert_eq!(tombstone_change.row, gone_meta(policy.clone(), dropped));
    assert_eq!(
        entry(&dirty, is_meta(&policy)),
        Some(&tombstone_change),
        "a local deletion is dirty, like any local write"
    );
    assert!(
        !feed
            .iter()
            .any(|c| matches!(&c.row, Row::Meta { key, .. } if key.object_type != "password_identity" && key != &policy)),
        "{feed:?}"
    );
    assert_eq!(s.meta_get(&policy).await.unwrap(), None);
    // Deleting it again changes nothing.
    let before = feeds(&s).await;
    s.apply(stamp(), vec![WriteOp::DeleteMeta(policy.clone())])
        .await
        .unwrap();
    assert_eq!(feeds(&s).await, before);
    // A meta key can be written again: the row replaces its tombstone.
    let revived = write(
        &s,
        vec![WriteOp::PutMeta(meta("vault", "settings", "policy", "y"))],
    )
    .await
    .unwrap();
    let (feed, _) = feeds(&s).await;
    let rows: Vec<&Row> = feed
        .iter()
        .filter(|c| is_meta(&policy)(&c.row))
        .map(|c| &c.row)
        .collect();
    assert_eq!(rows, [&meta_value(policy.clone(), revived.rev, "y")]);
    assert!(tombstone_change.seq < entry(&feed, is_meta(&policy)).unwrap().seq);
    s.apply(
        stamp(),
        vec![WriteOp::InsertMeta(meta(
            "password_identity",
            "p_1",
            "tag",
            "t1",
        ))],
    )
    .await
    .unwrap();
    assert_eq!(
        s.meta_find("password_identity", "tag", "t1").await.unwrap(),
        vec![meta("password_identity", "p_1", "tag", "t1")]
    );
}

/// An insert of a tombstoned id fails its whole batch, whatever the batch's size against the
/// tombstones' count (IndexedDB reads every tombstone's id once for a batch that inserts at
/// least as many records as there are tombstones, and looks each insert's id up otherwise).
pub async fn inserts_of_a_tombstoned_id_fail_in_batches_of_any_size(s: impl Storage) {
    let ids: Vec<String> = (0..20).map(|i| format!("t{i}")).collect();
    let inserts = |ids: &[String], prefix: &str| -> Vec<WriteOp> {
        ids.iter()
            .map(|id| WriteOp::insert_record(record(id, &format!("tk_{prefix}{id}"))))
            .collect()
    };
    write(&s, inserts(&ids, "")).await.unwrap();
    write(&s, ids[..19].iter().map(|id| delete(id)).collect())
        .await
        .unwrap();
    let before = everything(&s).await;
    let fresh = |n: usize, prefix: &str| -> Vec<String> {
        (0..n).map(|i| format!("{prefix}{i}")).collect()
    };
    // 20 inserts, 19 tombstones; 17 inserts (more than a batch that assumes the seq counter
    // holds), 19 tombstones; a single insert.
    for (mut batch, taken) in [
        (fresh(19, "n"), "t5"),
        (fresh(16, "m"), "t7"),
        (Vec::new(), "t3"),
    ] {
        batch.insert(batch.len() / 2, taken.to_owned());
        assert_eq!(
            write(&s, inserts(&batch, "x")).await.unwrap_err(),
            StorageError::IdTaken(taken.into()),
            "a batch of {} inserts",
            batch.len()
        );
        assert_eq!(
            everything(&s).await,
            before,
            "nothing of the batch was written"
        );
    }
    // Fresh ids in batches of either size are stored.
    write(&s, inserts(&fresh(20, "n"), "y")).await.unwrap();
    write(&s, inserts(&fresh(1, "m"), "y")).await.unwrap();
    assert_eq!(
        s.count_records(&RecordFilter::default(), NOW)
            .await
            .unwrap(),
        22
    );
}

/// A local write marks its rows dirty at their new seq; `dirty_changes` pages them in mark
/// order; a merge's write is dirty only when it says so.
pub async fn dirty_marks_follow_local_writes(s: impl Storage) {
    let tag = MetaKey::new("password_identity", "p_1", "tag");
    s.apply(
        stamp(),
        vec![
            WriteOp::insert_record(record("a", "tk_a")),
            WriteOp::insert_record(record("b", "tk_b")),
            WriteOp::insert_record(record("c", "tk_c")),
            WriteOp::PutMeta(meta("password_identity", "p_1", "tag", "t1")),
        ],
    )
    .await
    .unwrap();
    s.apply(stamp(), vec![change("a", RecordChange::Restore, NOW)])
        .await
        .unwrap();
    s.apply(
        stamp(),
        vec![change(
            "a",
            RecordChange::Renew {
                expires_at: Some(NOW + 1),
            },
            NOW,
        )],
    )
    .await
    .unwrap();
    let (feed, dirty) = feeds(&s).await;
    assert_eq!(
        dirty, feed,
        "every local write is dirty, marked with its seq"
    );
    assert_eq!(dirty.len(), 4);
    assert_eq!(
        dirty.last().unwrap().row,
        live_row(&get_id(&s, "a").await.unwrap())
    );
    // Paging by mark.
    let first_two = s.dirty_changes(0, 2).await.unwrap();
    assert_eq!(first_two, dirty[..2].to_vec());
    assert_eq!(
        s.dirty_changes(first_two[1].seq, 10).await.unwrap(),
        dirty[2..].to_vec()
    );
    assert!(s.dirty_changes(dirty[3].seq, 10).await.unwrap().is_empty());

    // A merge's write: dirty:false leaves (or makes) the row clean, at a new seq.
    let b = get_id(&s, "b").await.unwrap();
    let merged_b = Record {
        expires_at: Some(NOW + 7),
        updated_at: NOW + 7,
        revs: RecordRevs {
            expires: Rev::new(NOW as u64 + 7, 0, 3).unwrap(),
            ..b.revs
        },
        ..b.clone()
    };
    s.apply(
        stamp(),
        vec![WriteOp::PutVersion {
            row: Box::new(live_row(&merged_b)),
            dirty: false,
        }],
    )
    .await
    .unwrap();
    assert_eq!(get_id(&s, "b").await.unwrap(), merged_b, "stored as given");
    assert_eq!(mark_of(&s, is_record("b")).await, None, "clean");
    let b_seq = seq_of(&s, is_record("b")).await.unwrap();
    assert!(b_seq > dirty[3].seq, "a merge's write takes a seq too");
    // dirty:true: dirty at its new seq.
    let merged_tag = meta_value(tag.clone(), Rev::new(NOW as u64 + 8, 0, 3).unwrap(), "t1");
    s.apply(
        stamp(),
        vec![WriteOp::PutVersion {
            row: Box::new(merged_tag.clone()),
            dirty: true,
        }],
    )
    .await
    .unwrap();
    let tag_seq = seq_of(&s, is_meta(&tag)).await.unwrap();
    assert!(tag_seq > b_seq);
    assert_eq!(mark_of(&s, is_meta(&tag)).await, Some(tag_seq));
    let (feed, dirty) = feeds(&s).await;
    assert_eq!(
        entry(&feed, is_meta(&tag)).map(|c| &c.row),
        Some(&merged_tag),
        "a merge's write stamps nothing: the row keeps its own revision"
    );
    assert_eq!(
        dirty.iter().map(|c| c.seq).collect::<Vec<_>>(),
        {
            let mut marks: Vec<u64> = dirty.iter().map(|c| c.seq).collect();
            marks.sort();
            marks
        },
        "in mark order"
    );
    assert!(entry(&dirty, is_record("b")).is_none());
    // A local write of the clean row makes it dirty again.
    s.apply(
        stamp(),
        vec![change(
            "b",
            RecordChange::Renew { expires_at: None },
            NOW + 9,
        )],
    )
    .await
    .unwrap();
    assert_eq!(
        mark_of(&s, is_record("b")).await,
        seq_of(&s, is_record("b")).await
    );
    // A local row is never dirty.
    s.apply(
        stamp(),
        vec![WriteOp::PutMeta(meta("vault", "state", "writes", "e"))],
    )
    .await
    .unwrap();
    assert!(
        s.dirty_changes(0, 100)
            .await
            .unwrap()
            .iter()
            .all(|c| !matches!(&c.row, Row::Meta { key, .. } if key.object_type == "vault"))
    );
}

/// `PutVersion` stores a row as a merge decided it, over whatever the store has for its id or
/// key, stamping nothing and pruning nothing.
pub async fn put_version_stores_what_a_merge_decided(s: impl Storage) {
    let rev = |n: u64| Rev::new(NOW as u64 - 100 + n, 0, 4).unwrap();
    let put = |row: Row| WriteOp::put_version(row, false);
    s.apply(
        stamp(),
        vec![
            WriteOp::insert_record(linked("a", "tk_a", "p_1")),
            WriteOp::insert_record(record("b", "tk_b")),
            WriteOp::insert_record(record("dead", "tk_dead")),
            WriteOp::PutMeta(meta("password_identity", "p_1", "tag", "t1")),
            WriteOp::PutMeta(meta("vault", "settings", "policy", "x")),
        ],
    )
    .await
    .unwrap();
    s.apply(stamp(), vec![delete("dead")]).await.unwrap();

    // A live record over nothing, over a live one (even with older revisions: the store does
    // not merge), and over a tombstone (the merge decided).
    let new = Record {
        revs: RecordRevs::all(rev(1)),
        ..linked("new", "tk_new", "p_2")
    };
    let b = Record {
        value: format!("{VALUE}merged"),
        password_id: Some("p_2".into()),
        revs: RecordRevs::all(rev(2)),
        updated_at: NOW + 3,
        ..record("b", "tk_b")
    };
    let dead = Record {
        revs: RecordRevs::all(rev(3)),
        ..record("dead", "tk_dead")
    };
    s.apply(
        stamp(),
        vec![put(live_row(&new)), put(live_row(&b)), put(live_row(&dead))],
    )
    .await
    .unwrap();
    for r in [&new, &b, &dead] {
        assert_eq!(get_id(&s, &r.id).await.as_ref(), Some(r));
        assert_eq!(get_token(&s, &r.token).await.as_ref(), Some(r));
    }
    let (feed, dirty) = feeds(&s).await;
    let dead_rows: Vec<&Row> = feed
        .iter()
        .filter(|c| is_record("dead")(&c.row))
        .map(|c| &c.row)
        .collect();
    assert_eq!(dead_rows, [&live_row(&dead)], "the tombstone is replaced");
    for id in ["new", "b", "dead"] {
        assert!(entry(&dirty, is_record(id)).is_none(), "dirty: false");
    }
    let mut p2 = linked_ids(&s, "p_2").await;
    p2.sort();
    assert_eq!(p2, ["b", "new"]);
    assert_eq!(s.linked_count(None).await.unwrap(), 3);

    // A tombstone over a live record removes it and prunes nothing: the identity's own rows
    // travel as their own versions.
    let gone = stamp_at(NOW + 4);
    s.apply(
        stamp(),
        vec![
            put(gone_record("a", gone)),
            put(gone_record("never-here", gone)),
        ],
    )
    .await
    .unwrap();
    assert_eq!(get_id(&s, "a").await, None);
    assert_eq!(get_token(&s, "tk_a").await, None);
    assert!(linked_ids(&s, "p_1").await.is_empty());
    assert_eq!(
        s.meta_get(&MetaKey::new("password_identity", "p_1", "tag"))
            .await
            .unwrap()
            .as_deref(),
        Some("t1"),
        "PutVersion never prunes"
    );
    let (feed, dirty) = feeds(&s).await;
    for id in ["a", "never-here"] {
        assert_eq!(
            entry(&feed, is_record(id)).map(|c| c.row.clone()),
            Some(gone_record(id, gone))
        );
        assert!(entry(&dirty, is_record(id)).is_none(), "dirty: false");
    }
    // dirty: true marks a tombstone at its seq.
    s.apply(
        stamp(),
        vec![WriteOp::PutVersion {
            row: Box::new(gone_record("elsewhere", gone)),
            dirty: true,
        }],
    )
    .await
    .unwrap();
    assert!(mark_of(&s, is_record("elsewhere")).await.is_some());
    assert_eq!(
        mark_of(&s, is_record("elsewhere")).await,
        seq_of(&s, is_record("elsewhere")).await
    );
    // The id stays taken; the token is free.
    assert_eq!(
        s.apply(
            stamp(),
            vec![WriteOp::insert_record(record("never-here", "tk_z"))]
        )
        .await
        .unwrap_err(),
        StorageError::IdTaken("never-here".into())
    );

    // A live record whose token another live record holds is refused, and nothing is written.
    let before = everything(&s).await;
    let thief = Record {
        revs: RecordRevs::all(rev(5)),
        ..record("thief", "tk_b")
    };
    let err = s
        .apply(
            stamp(),
            vec![put(live_row(&record("ok", "tk_ok"))), put(live_row(&thief))],
        )
        .await
        .unwrap_err();
    assert_eq!(err, StorageError::TokenTaken("tk_b".into()));
    assert_eq!(everything(&s).await, before);
    // Once its holder is gone, the token can be taken.
    s.apply(
        stamp(),
        vec![put(gone_record("b", gone)), put(live_row(&thief))],
    )
    .await
    .unwrap();
    assert_eq!(get_token(&s, "tk_b").await.as_ref(), Some(&thief));
    // A version of one id under another token (validation refuses these; the store must still
    // stay whole): the old token is free, the new one finds the record.
    let renamed = Record {
        token: "tk_renamed".into(),
        ..thief.clone()
    };
    s.apply(stamp(), vec![put(live_row(&renamed))])
        .await
        .unwrap();
    assert_eq!(get_token(&s, "tk_b").await, None);
    assert_eq!(get_token(&s, "tk_renamed").await, Some(renamed.clone()));
    assert_eq!(get_id(&s, "thief").await, Some(renamed));
    // A displaced record's tombstone keeps its reason.
    let displaced = Row::Record {
        id: "thief".into(),
        version: RecordVersion::Gone(Tombstone {
            rev: rev(12),
            deleted_at: NOW + 12,
            reason: TombstoneReason::Displaced,
        }),
    };
    s.apply(stamp(), vec![put(displaced.clone())])
        .await
        .unwrap();
    assert_eq!(get_token(&s, "tk_renamed").await, None);
    assert_eq!(
        entry(&feeds(&s).await.0, is_record("thief")).map(|c| &c.row),
        Some(&displaced)
    );

    // Meta rows: a value at its own revision, over a row, a tombstone or nothing; a deletion.
    let policy = MetaKey::new("vault", "settings", "policy");
    let fresh = MetaKey::new("vault", "settings", "fresh");
    s.apply(
        stamp(),
        vec![
            put(meta_value(policy.clone(), rev(6), "merged")),
            put(meta_value(fresh.clone(), rev(7), "f")),
        ],
    )
    .await
    .unwrap();
    assert_eq!(
        s.meta_get(&policy).await.unwrap().as_deref(),
        Some("merged")
    );
    let (feed, _) = feeds(&s).await;
    assert_eq!(
        entry(&feed, is_meta(&policy)).map(|c| c.row.clone()),
        Some(meta_value(policy.clone(), rev(6), "merged"))
    );
    let meta_gone = stamp_at(NOW + 8);
    s.apply(stamp(), vec![put(gone_meta(policy.clone(), meta_gone))])
        .await
        .unwrap();
    assert_eq!(s.meta_get(&policy).await.unwrap(), None);
    assert_eq!(
        entry(&feeds(&s).await.0, is_meta(&policy)).map(|c| c.row.clone()),
        Some(gone_meta(policy.clone(), meta_gone))
    );
    assert_eq!(mark_of(&s, is_meta(&policy)).await, None, "dirty: false");
    // An identity's row removed as emptied keeps the mark, in the feeds and in `versions`.
    let tag = MetaKey::new("password_identity", "p_gone", "tag");
    let emptied = emptied_meta(tag.clone(), meta_gone);
    s.apply(
        stamp(),
        vec![WriteOp::PutVersion {
            row: Box::new(emptied.clone()),
            dirty: true,
        }],
    )
    .await
    .unwrap();
    let (feed, dirty) = feeds(&s).await;
    assert_eq!(entry(&feed, is_meta(&tag)).map(|c| &c.row), Some(&emptied));
    assert_eq!(entry(&dirty, is_meta(&tag)).map(|c| &c.row), Some(&emptied));
    let stored = s.versions(&[RowKey::Meta(tag.clone())]).await.unwrap();
    assert_eq!(stored[0].as_ref().map(|v| &v.row), Some(&emptied));
    s.apply(
        stamp(),
        vec![put(meta_value(policy.clone(), rev(9), "back"))],
    )
    .await
    .unwrap();
    assert_eq!(s.meta_get(&policy).await.unwrap().as_deref(), Some("back"));
    // Local rows never come from a merge.
    let before = everything(&s).await;
    for key in [
        MetaKey::new("vault", "state", "writes"),
        MetaKey::new("vault", "settings", "kdf"),
        MetaKey::new("sync", "state", "checkpoint"),
    ] {
        for row in [
            meta_value(key.clone(), rev(11), "x"),
            gone_meta(key.clone(), meta_gone),
        ] {
            assert!(
                s.apply(stamp(), vec![put(row.clone())]).await.is_err(),
                "{row:?}"
            );
        }
    }
    assert_eq!(everything(&s).await, before);
    let (feed, _) = feeds(&s).await;
    assert_eq!(feed.iter().filter(|c| is_meta(&policy)(&c.row)).count(), 1);

    // Two identities with one tag (two replicas that first used one password offline): a merge
    // stores both; a local write still may not add a third.
    s.apply(
        stamp(),
        vec![
            put(meta_value(
                MetaKey::new("password_identity", "p_9", "tag"),
                rev(10),
                "t1",
            )),
            put(meta_value(
                MetaKey::new("password_identity", "p_9", "dek"),
                rev(10),
                "d9",
            )),
        ],
    )
    .await
    .unwrap();
    assert_eq!(
        s.meta_find("password_identity", "tag", "t1").await.unwrap(),
        vec![
            meta("password_identity", "p_1", "tag", "t1"),
            meta("password_identity", "p_9", "dek", "d9"),
            meta("password_identity", "p_9", "tag", "t1"),
        ]
    );
    for op in [
        WriteOp::PutMeta(meta("password_identity", "p_3", "tag", "t1")),
        WriteOp::InsertMeta(meta("password_identity", "p_3", "tag", "t1")),
    ] {
        assert!(matches!(
            s.apply(stamp(), vec![op]).await.unwrap_err(),
            StorageError::UniqueValueTaken(_)
        ));
    }
}

/// `DeleteIdentityIfUnlinked` keeps an identity some record (soft-deleted ones included) is
/// sealed with, and removes one no record is, with its slots, atomically with the batch.
pub async fn identities_go_only_when_unlinked(s: impl Storage) {
    let identity = |id: &str| {
        vec![
            WriteOp::PutMeta(meta("password_identity", id, "tag", &format!("t{id}"))),
            WriteOp::PutMeta(meta("password_identity", id, "dek", &format!("d{id}"))),
            WriteOp::PutMeta(meta(
                "password_identity",
                &format!("{id}s"),
                "tag",
                &format!("t{id}s"),
            )),
            WriteOp::PutMeta(meta("password_identity", &format!("{id}s"), "identity", id)),
        ]
    };
    let mut batch = identity("p_1");
    batch.extend(identity("p_2"));
    batch.push(WriteOp::insert_record(linked("a", "tk_a", "p_1")));
    batch.push(WriteOp::insert_record(linked("b", "tk_b", "p_2")));
    s.apply(stamp(), batch).await.unwrap();
    let count = |id: &str| {
        let s = &s;
        let id = id.to_owned();
        async move {
            s.meta_object("password_identity", &id).await.unwrap().len()
                + s.meta_object("password_identity", &format!("{id}s"))
                    .await
                    .unwrap()
                    .len()
        }
    };
    // Soft-deleted, still sealed with it: kept.
    s.apply(
        stamp(),
        vec![
            change(
                "a",
                RecordChange::SoftDelete {
                    if_expired_at: None,
                },
                NOW,
            ),
            prune("p_1"),
        ],
    )
    .await
    .unwrap();
    assert_eq!(count("p_1").await, 4);
    // Moved off in a batch that then fails: the identity stays, and so does the link.
    let a_value = format!("{VALUE}a");
    let before = everything(&s).await;
    assert!(
        s.apply(
            stamp(),
            vec![
                reseal("a", &a_value, &a_value, Some("p_2"), NOW),
                prune("p_1"),
                WriteOp::insert_record(record("z", "tk_b")),
            ],
        )
        .await
        .is_err()
    );
    assert_eq!(everything(&s).await, before);
    assert_eq!(count("p_1").await, 4);
    // Moved off and pruned in one batch: gone, slots and all; p_2 stays.
    let moved = write(
        &s,
        vec![
            reseal("a", &a_value, &a_value, Some("p_2"), NOW),
            prune("p_1"),
            prune("p_2"),
        ],
    )
    .await
    .unwrap();
    assert_eq!(count("p_1").await, 0);
    assert_eq!(count("p_2").await, 4);
    // The removed meta rows in the feed: key, revision, time and emptied mark, by key.
    let removed = |feed: Vec<Change>| {
        let mut gone: Vec<(MetaKey, Rev, i64, bool)> = feed
            .into_iter()
            .filter_map(|c| match c.row {
                Row::Meta {
                    key,
                    version:
                        MetaVersion::Gone {
                            rev,
                            deleted_at,
                            emptied,
                        },
                } => Some((key, rev, deleted_at, emptied)),
                _ => None,
            })
            .collect();
        gone.sort();
        gone
    };
    let gone = removed(feeds(&s).await.0);
    for (_, rev, deleted_at, emptied) in &gone {
        // Moved away: the identity is retired, not emptied, and no version is kept.
        assert_eq!((*rev, *deleted_at, *emptied), (moved.rev, moved.at, false));
    }
    assert_eq!(kept_versions(&s).await, []);
    let keys: Vec<MetaKey> = gone.into_iter().map(|(key, ..)| key).collect();
    assert_eq!(
        keys,
        [
            MetaKey::new("password_identity", "p_1", "dek"),
            MetaKey::new("password_identity", "p_1", "tag"),
            MetaKey::new("password_identity", "p_1s", "identity"),
            MetaKey::new("password_identity", "p_1s", "tag"),
        ]
    );
    let mut p2 = linked_ids(&s, "p_2").await;
    p2.sort();
    assert_eq!(p2, ["a", "b"]);
    assert_eq!(s.linked_count(None).await.unwrap(), 2);
    // Asked to, the removal is an emptied one (a pulled page that moved the identity's last
    // records elsewhere): every tombstone says so.
    let written = write(&s, identity("p_6")).await.unwrap();
    let p6_versions = versions_of(&s, &["p_6", "p_6s"], written).await;
    let emptied = write(
        &s,
        vec![WriteOp::DeleteIdentityIfUnlinked {
            identity_id: "p_6".into(),
            emptied: true,
        }],
    )
    .await
    .unwrap();
    assert_eq!(count("p_6").await, 0);
    let gone: Vec<(MetaKey, Rev, i64, bool)> = removed(feeds(&s).await.0)
        .into_iter()
        .filter(|(_, rev, ..)| *rev == emptied.rev)
        .collect();
    let p6 = |object: &str, key: &str| {
        (
            MetaKey::new("password_identity", object, key),
            emptied.rev,
            emptied.at,
            true,
        )
    };
    assert_eq!(
        gone,
        [
            p6("p_6", "dek"),
            p6("p_6", "tag"),
            p6("p_6s", "identity"),
            p6("p_6s", "tag")
        ]
    );
    assert_eq!(kept_versions(&s).await, p6_versions);
}

/// A write transaction reads what the store holds, and its commit is an atomic batch like
/// `apply`'s: stamped with its stamp, given seqs and dirty marks, all or nothing.
pub async fn transactions_read_and_commit_like_apply(s: impl Storage) {
    let epoch = MetaKey::new("vault", "state", "writes");
    s.apply(
        stamp(),
        vec![
            WriteOp::insert_record(linked("a", "tk_a", "p_1")),
            WriteOp::insert_record(linked("b", "tk_b", "p_1")),
            WriteOp::insert_record(record("c", "tk_c")),
            WriteOp::PutMeta(meta("password_identity", "p_1", "tag", "t1")),
            WriteOp::PutMeta(meta("vault", "state", "writes", "e1")),
        ],
    )
    .await
    .unwrap();
    let before = everything(&s).await;
    {
        let tx = s.transaction().await.unwrap();
        let found = tx
            .records_by_ids(&["b".into(), "nope".into(), "a".into()])
            .await
            .unwrap();
        assert_eq!(
            found,
            vec![
                Some(linked("b", "tk_b", "p_1")),
                None,
                Some(linked("a", "tk_a", "p_1"))
            ]
        );
        assert_eq!(
            tx.scan_records(Some("a"), 1).await.unwrap(),
            [linked("b", "tk_b", "p_1")]
        );
        assert_eq!(tx.meta_get(&epoch).await.unwrap().as_deref(), Some("e1"));
        assert_eq!(
            tx.meta_find("password_identity", "tag", "t1")
                .await
                .unwrap(),
            [meta("password_identity", "p_1", "tag", "t1")]
        );
        assert_eq!(tx.meta_count("password_identity").await.unwrap(), 1);
        assert_eq!(
            tx.records_linked_to("p_1", Some("a"), 10).await.unwrap(),
            [linked("b", "tk_b", "p_1")]
        );
        assert_eq!(tx.linked_count(None).await.unwrap(), 2);
        // Dropped without a commit: nothing is written.
    }
    assert_eq!(everything(&s).await, before);

    // A commit whose guard went stale writes nothing.
    let tx = s.transaction().await.unwrap();
    let value = tx.records_by_ids(&["a".into()]).await.unwrap()[0]
        .clone()
        .unwrap()
        .value;
    let err = tx
        .commit(
            stamp(),
            vec![
                reseal("a", &value, &format!("{VALUE}new"), Some("p_2"), NOW + 1),
                prune("p_1"),
                WriteOp::ExpectMeta {
                    key: epoch.clone(),
                    value: Some("e0".into()),
                },
            ],
        )
        .await
        .unwrap_err();
    assert_eq!(err, StorageError::MetaChanged(epoch.clone()));
    assert_eq!(everything(&s).await, before);

    // A commit that holds: stamped like `apply`, atomically.
    let tx = s.transaction().await.unwrap();
    let current = tx.meta_get(&epoch).await.unwrap();
    let committed = stamp();
    tx.commit(
        committed,
        vec![
            WriteOp::ExpectMeta {
                key: epoch.clone(),
                value: current,
            },
            reseal("a", &value, &format!("{VALUE}new"), Some("p_2"), NOW + 1),
            reseal(
                "b",
                &format!("{VALUE}b"),
                &format!("{VALUE}b2"),
                Some("p_2"),
                NOW + 1,
            ),
            prune("p_1"),
            WriteOp::PutMeta(meta("vault", "state", "writes", "e2")),
        ],
    )
    .await
    .unwrap();
    let a = get_id(&s, "a").await.unwrap();
    assert_eq!(
        (a.value.as_str(), a.password_id.as_deref(), a.revs.seal),
        (format!("{VALUE}new").as_str(), Some("p_2"), committed.rev)
    );
    assert_eq!(
        a.revs.value,
        created_rev(),
        "a re-seal leaves the value's revision"
    );
    assert!(
        s.meta_object("password_identity", "p_1")
            .await
            .unwrap()
            .is_empty()
    );
    let (feed, dirty) = feeds(&s).await;
    assert_eq!(
        entry(&feed, is_record("a")).map(|c| &c.row),
        Some(&live_row(&a))
    );
    assert_eq!(
        entry(
            &feed,
            is_meta(&MetaKey::new("password_identity", "p_1", "tag"))
        )
        .map(|c| c.row.clone()),
        Some(gone_meta(
            MetaKey::new("password_identity", "p_1", "tag"),
            committed
        ))
    );
    assert_eq!(dirty, feed, "every change here is local");
    let mut p2 = linked_ids(&s, "p_2").await;
    p2.sort();
    assert_eq!(p2, ["a", "b"]);
}

fn rec_key(id: &str) -> RowKey {
    RowKey::Record(id.to_owned())
}

fn meta_key(key: &MetaKey) -> RowKey {
    RowKey::Meta(key.clone())
}

/// What `versions` must answer for `key`, from the two feeds: the row and seq of its entry in
/// the change feed, and its mark in the dirty feed.
fn stored_in_feeds(feed: &[Change], dirty: &[Change], key: &RowKey) -> Option<Stored> {
    let c = feed.iter().find(|c| &c.row.key() == key)?;
    Some(Stored {
        seq: c.seq,
        dirty: dirty.iter().find(|d| &d.row.key() == key).map(|d| d.seq),
        row: c.row.clone(),
    })
}

/// `versions` answers each key, in the order asked, with the store's live row or tombstone,
/// its seq and its dirty mark, in one call, through a transaction too; local rows are not
/// versions. Every row of the change feed reads back at its feed seq (≥ 1), so a full push
/// or a first pull, which walk the feed from 0, see every replicated row.
pub async fn versions_answer_each_key_with_its_row_seq_and_mark(s: impl Storage) {
    let tag = MetaKey::new("password_identity", "p_1", "tag");
    let policy = MetaKey::new("vault", "settings", "policy");
    let old = MetaKey::new("vault", "settings", "old");
    let state = MetaKey::new("vault", "state", "writes");
    let kdf = MetaKey::new("vault", "settings", "kdf");
    let checkpoint = MetaKey::new("sync", "state", "checkpoint");
    let first = write(
        &s,
        vec![
            WriteOp::insert_record(linked("a", "tk_a", "p_1")),
            WriteOp::insert_record(record("b", "tk_b")),
            WriteOp::insert_record(record("dead", "tk_dead")),
            WriteOp::PutMeta(meta("password_identity", "p_1", "tag", "t1")),
            WriteOp::PutMeta(meta("vault", "settings", "policy", "x")),
            WriteOp::PutMeta(meta("vault", "settings", "old", "y")),
            WriteOp::PutMeta(meta("vault", "state", "writes", "e1")),
            WriteOp::PutMeta(meta("vault", "settings", "kdf", "k")),
            WriteOp::PutMeta(meta("sync", "state", "checkpoint", "c")),
        ],
    )
    .await
    .unwrap();
    let deleted = write(
        &s,
        vec![
            delete("dead"),
            WriteOp::DeleteMeta(old.clone()),
            change(
                "b",
                RecordChange::SoftDelete {
                    if_expired_at: None,
                },
                NOW + 1,
            ),
        ],
    )
    .await
    .unwrap();
    let merged_policy = meta_value(policy.clone(), Rev::new(NOW as u64 + 5, 0, 4).unwrap(), "m");
    s.apply(
        stamp(),
        vec![WriteOp::PutVersion {
            row: Box::new(merged_policy.clone()),
            dirty: false,
        }],
    )
    .await
    .unwrap();

    let keys = vec![
        rec_key("b"),
        rec_key("nope"),
        meta_key(&policy),
        rec_key("dead"),
        meta_key(&tag),
        meta_key(&old),
        rec_key("a"),
        meta_key(&MetaKey::new("vault", "settings", "never")),
        meta_key(&state),
        meta_key(&kdf),
        meta_key(&checkpoint),
        rec_key("b"),
    ];
    let found = s.versions(&keys).await.unwrap();
    assert_eq!(found.len(), keys.len(), "one answer per key asked");
    let (feed, dirty) = feeds(&s).await;
    let expected: Vec<Option<Stored>> = keys
        .iter()
        .map(|k| stored_in_feeds(&feed, &dirty, k))
        .collect();
    assert_eq!(found, expected, "each key's feed entry, in the order asked");
    // What those are, spelled out.
    let b = get_id(&s, "b").await.unwrap();
    assert!(b.soft_deleted_at.is_some());
    let row = |i: usize| found[i].as_ref().map(|v| &v.row);
    assert_eq!(row(0), Some(&live_row(&b)), "a soft-deleted record is live");
    assert_eq!(found[11], found[0], "a key asked twice is answered twice");
    assert_eq!(found[1], None, "no row, no tombstone");
    assert_eq!(row(2), Some(&merged_policy));
    assert_eq!(
        found[2].as_ref().unwrap().dirty,
        None,
        "a merge's write is clean"
    );
    assert_eq!(row(3), Some(&gone_record("dead", deleted)), "a tombstone");
    let dead = found[3].as_ref().unwrap();
    assert_eq!(dead.dirty, Some(dead.seq), "a local deletion is dirty");
    assert_eq!(row(4), Some(&meta_value(tag.clone(), first.rev, "t1")));
    assert_eq!(
        row(5),
        Some(&gone_meta(old.clone(), deleted)),
        "a meta tombstone"
    );
    assert_eq!(row(6), Some(&live_row(&get_id(&s, "a").await.unwrap())));
    assert_eq!(found[7], None);
    assert_eq!(
        found[8..11],
        [None, None, None],
        "local rows are not versions"
    );
    assert!(s.versions(&[]).await.unwrap().is_empty());

    // Every row of the feed reads back at its feed seq: nothing replicated is at seq 0.
    let every: Vec<RowKey> = feed.iter().map(|c| c.row.key()).collect();
    assert_eq!(every.len(), 6, "4 live rows, 2 tombstones: {every:?}");
    let all = s.versions(&every).await.unwrap();
    for (c, v) in feed.iter().zip(&all) {
        let v = v.as_ref().expect("a feed row has a version");
        assert!(
            v.seq >= 1 && v.seq == c.seq && v.row == c.row,
            "{c:?} {v:?}"
        );
    }

    // A write moves the version: a new seq, dirty at it.
    let a_before = found[6].clone().unwrap();
    s.apply(
        stamp(),
        vec![change(
            "a",
            RecordChange::Renew {
                expires_at: Some(NOW + 9),
            },
            NOW,
        )],
    )
    .await
    .unwrap();
    let a_after = s
        .versions(&[rec_key("a")])
        .await
        .unwrap()
        .remove(0)
        .unwrap();
    assert!(a_after.seq > a_before.seq);
    assert_eq!(a_after.dirty, Some(a_after.seq));
    assert_eq!(a_after.row, live_row(&get_id(&s, "a").await.unwrap()));

    // Through a transaction: the same answers, and records by token.
    let expected = s.versions(&keys).await.unwrap();
    let tokens = vec!["tk_b".to_owned(), "tk_none".to_owned(), "tk_a".to_owned()];
    let by_token = s.records_by_tokens(&tokens).await.unwrap();
    assert!(by_token[0].is_some() && by_token[1].is_none() && by_token[2].is_some());
    let tx = s.transaction().await.unwrap();
    assert_eq!(tx.versions(&keys).await.unwrap(), expected);
    assert_eq!(tx.records_by_tokens(&tokens).await.unwrap(), by_token);
}

/// A page of a sync pull reads many versions in a transaction and commits against them: with
/// many keys (a good part of the store, where a backend may read the store's keys instead of
/// each row) every answer is the one a single read gives; a batch's checks against what the
/// transaction read pass or fail as they would against the store; and a live row stored over a
/// tombstone leaves no tombstone behind, while one stored where nothing was needs none.
pub async fn versions_of_a_page_answer_and_guard_as_single_reads(s: impl Storage) {
    let id = |i: usize| format!("v-{i:03}");
    let inserts: Vec<WriteOp> = (0..300)
        .map(|i| WriteOp::insert_record(record(&id(i), &format!("tk_v{i}"))))
        .collect();
    s.apply(stamp(), inserts).await.unwrap();
    // Every other one of the first hundred deleted: tombstones among live rows.
    s.apply(
        stamp(),
        (0..100).step_by(2).map(|i| delete(&id(i))).collect(),
    )
    .await
    .unwrap();
    let mut keys: Vec<RowKey> = (0..300).map(|i| rec_key(&id(i))).collect();
    keys.extend((0..200).map(|i| rec_key(&format!("w-{i:03}"))));
    keys.push(meta_key(&MetaKey::new("vault", "settings", "nothing")));

    // Outside a transaction first: an IndexedDB transaction ends once it waits on anything else.
    let outside = s.versions(&keys).await.unwrap();
    let sample = (0..keys.len()).step_by(7).chain(keys.len() - 3..keys.len());
    for i in sample {
        let single = s
            .versions(std::slice::from_ref(&keys[i]))
            .await
            .unwrap()
            .remove(0);
        assert_eq!(outside[i], single, "{:?}", keys[i]);
    }
    assert!(matches!(
        &outside[0].as_ref().unwrap().row,
        Row::Record {
            version: RecordVersion::Gone(_),
            ..
        }
    ));
    assert!(matches!(
        &outside[1].as_ref().unwrap().row,
        Row::Record {
            version: RecordVersion::Live(_),
            ..
        }
    ));
    assert_eq!(outside[300], None);
    let tx = s.transaction().await.unwrap();
    let read = tx.versions(&keys).await.unwrap();
    assert_eq!(read, outside, "in a transaction as outside");

    // A pulled page: every key checked against what was read, then new rows, and two deleted
    // records stored live again (a merge decided so).
    let mut batch: Vec<WriteOp> = keys
        .iter()
        .zip(&read)
        .map(|(key, found)| WriteOp::ExpectVersion {
            key: key.clone(),
            seq: found.as_ref().map(|v| v.seq),
        })
        .collect();
    let fresh: Vec<Record> = (0..10)
        .map(|i| record(&format!("w-{i:03}"), &format!("tk_w{i}")))
        .collect();
    let back: Vec<Record> = [0, 2]
        .iter()
        .map(|&i| record(&id(i), &format!("tk_v{i}")))
        .collect();
    for r in fresh.iter().chain(&back) {
        batch.push(WriteOp::PutVersion {
            row: Box::new(live_row(r)),
            dirty: false,
        });
    }
    tx.commit(stamp(), batch).await.unwrap();
    let (feed, _) = feeds(&s).await;
    for r in fresh.iter().chain(&back) {
        let entries: Vec<&Row> = feed
            .iter()
            .map(|c| &c.row)
            .filter(|row| row.key() == rec_key(&r.id))
            .collect();
        assert_eq!(
            entries,
            [&live_row(r)],
            "{}: one live row, no tombstone left",
            r.id
        );
        assert_eq!(get_id(&s, &r.id).await.as_ref(), Some(r));
    }
    assert_eq!(
        feed.iter().filter(|c| c.row.is_gone()).count(),
        48,
        "the other tombstones stay"
    );

    // A check that fails against what the transaction read fails the batch: nothing written.
    let tx = s.transaction().await.unwrap();
    let read = tx.versions(&keys).await.unwrap();
    let stale = read[1].as_ref().unwrap().seq - 1;
    let batch = vec![
        WriteOp::ExpectVersion {
            key: keys[3].clone(),
            seq: read[3].as_ref().map(|v| v.seq),
        },
        WriteOp::ExpectVersion {
            key: keys[1].clone(),
            seq: Some(stale),
        },
        WriteOp::PutVersion {
            row: Box::new(live_row(&record("w-100", "tk_w100"))),
            dirty: false,
        },
    ];
    assert_eq!(
        tx.commit(stamp(), batch).await,
        Err(StorageError::Changed(id(1)))
    );
    assert_eq!(get_id(&s, "w-100").await, None);
}

/// `ExpectVersion` lets a batch commit only while each key's version (live or tombstone) still
/// has the seq the plan read (`None`: no version at all); otherwise it fails with `Changed` /
/// `MetaChanged` and nothing of the batch is written, whatever op comes first.
pub async fn expected_versions_guard_the_batch(s: impl Storage) {
    let policy = MetaKey::new("vault", "settings", "policy");
    let old = MetaKey::new("vault", "settings", "old");
    let never = MetaKey::new("vault", "settings", "never");
    s.apply(
        stamp(),
        vec![
            WriteOp::insert_record(record("a", "tk_a")),
            WriteOp::insert_record(record("dead", "tk_dead")),
            WriteOp::PutMeta(meta("vault", "settings", "policy", "x")),
            WriteOp::PutMeta(meta("vault", "settings", "old", "y")),
        ],
    )
    .await
    .unwrap();
    s.apply(
        stamp(),
        vec![delete("dead"), WriteOp::DeleteMeta(old.clone())],
    )
    .await
    .unwrap();
    let keys = vec![
        rec_key("a"),
        rec_key("dead"),
        meta_key(&policy),
        meta_key(&old),
        rec_key("none"),
        meta_key(&never),
    ];
    let seqs: Vec<Option<u64>> = s
        .versions(&keys)
        .await
        .unwrap()
        .into_iter()
        .map(|v| v.map(|v| v.seq))
        .collect();
    assert!(seqs[..4].iter().all(Option::is_some) && seqs[4..] == [None, None]);
    let seq = |i: usize| seqs[i].unwrap();
    let expect = |key: &RowKey, seq: Option<u64>| WriteOp::ExpectVersion {
        key: key.clone(),
        seq,
    };

    // Every version as read: the batch commits.
    let mut batch: Vec<WriteOp> = keys.iter().zip(&seqs).map(|(k, q)| expect(k, *q)).collect();
    batch.push(change(
        "a",
        RecordChange::Renew {
            expires_at: Some(NOW + 10),
        },
        NOW,
    ));
    s.apply(stamp(), batch).await.unwrap();
    assert_eq!(get_id(&s, "a").await.unwrap().expires_at, Some(NOW + 10));

    // Anything else fails the batch, before or after its writes, and writes nothing.
    let before = everything(&s).await;
    let stale = [
        (expect(&keys[0], Some(seq(0))), "a record written since"),
        (expect(&keys[0], None), "a live record is a version"),
        (expect(&keys[1], Some(seq(1) + 1_000)), "another seq"),
        (expect(&keys[1], None), "a tombstone is a version"),
        (expect(&keys[4], Some(seq(2))), "no version of an absent id"),
        (expect(&keys[2], None), "a live meta row is a version"),
        (expect(&keys[2], Some(seq(3))), "another row's seq"),
        (expect(&keys[3], None), "a meta tombstone is a version"),
        (
            expect(&keys[5], Some(seq(3))),
            "no version of an absent key",
        ),
    ];
    for (op, why) in stale {
        let WriteOp::ExpectVersion { key, .. } = &op else {
            unreachable!()
        };
        let wanted = match key {
            RowKey::Record(id) => StorageError::Changed(id.clone()),
            RowKey::Meta(key) => StorageError::MetaChanged(key.clone()),
        };
        let writes = || {
            vec![
                WriteOp::PutMeta(meta("vault", "settings", "policy", "z")),
                WriteOp::insert_record(record("n", "tk_n")),
                delete("a"),
            ]
        };
        let mut first = vec![op.clone()];
        first.extend(writes());
        let mut last = writes();
        last.push(op.clone());
        for batch in [first, last] {
            assert_eq!(s.apply(stamp(), batch).await.unwrap_err(), wanted, "{why}");
            assert_eq!(everything(&s).await, before, "{why}: nothing written");
        }
    }

    // A merge over a tombstone moves its seq: a plan that read the tombstone is stale.
    s.apply(
        stamp(),
        vec![WriteOp::PutVersion {
            row: Box::new(live_row(&record("dead", "tk_dead"))),
            dirty: false,
        }],
    )
    .await
    .unwrap();
    assert_eq!(
        s.apply(stamp(), vec![expect(&keys[1], Some(seq(1)))])
            .await
            .unwrap_err(),
        StorageError::Changed("dead".into())
    );

    // Through a transaction: planned from its reads, committed under their guards.
    let tx = s.transaction().await.unwrap();
    let read = tx
        .versions(&[rec_key("dead")])
        .await
        .unwrap()
        .remove(0)
        .unwrap();
    tx.commit(
        stamp(),
        vec![
            expect(&rec_key("dead"), Some(read.seq)),
            WriteOp::PutVersion {
                row: Box::new(gone_record("dead", stamp())),
                dirty: false,
            },
        ],
    )
    .await
    .unwrap();
    assert_eq!(get_id(&s, "dead").await, None);
    let before = everything(&s).await;
    let tx = s.transaction().await.unwrap();
    let err = tx
        .commit(
            stamp(),
            vec![
                WriteOp::PutMeta(meta("vault", "settings", "policy", "z")),
                expect(&rec_key("dead"), Some(read.seq)),
            ],
        )
        .await
        .unwrap_err();
    assert_eq!(err, StorageError::Changed("dead".into()));
    assert_eq!(everything(&s).await, before);
}

/// A put of the unlinked mark (the row every batch sealed with a master key sets) lands where
/// the batch puts it: whether or not the row already holds its value, before the batch's later
/// ops on it, and not at all when the batch fails. (IndexedDB puts it only when it changes.)
pub async fn the_unlinked_mark_lands_as_the_batch_puts_it(s: impl Storage) {
    let key = || MetaKey::new("vault", "state", "unlinked");
    let mark = |v: &str| WriteOp::PutMeta(meta("vault", "state", "unlinked", v));
    // A write sealed with a master key: a record and the mark.
    let marked =
        |id: &str, token: &str| vec![WriteOp::insert_record(record(id, token)), mark("true")];
    let held = async || s.meta_get(&key()).await.unwrap();
    // Absent, then set with a record; then set to what it holds.
    for (id, token) in [("a", "tk_a"), ("b", "tk_b")] {
        s.apply(stamp(), marked(id, token)).await.unwrap();
        assert_eq!(held().await.as_deref(), Some("true"));
        assert!(get_id(&s, id).await.is_some());
    }
    // Cleared (a rekey that found no unlinked record), then set again by the next write.
    s.apply(stamp(), vec![mark("false")]).await.unwrap();
    assert_eq!(held().await.as_deref(), Some("false"));
    s.apply(stamp(), marked("c", "tk_c")).await.unwrap();
    assert_eq!(held().await.as_deref(), Some("true"));
    // A failed batch leaves it as it was.
    s.apply(stamp(), vec![mark("false")]).await.unwrap();
    let failed = s.apply(stamp(), marked("d", "tk_a")).await;
    assert_eq!(failed.unwrap_err(), StorageError::TokenTaken("tk_a".into()));
    assert_eq!(held().await.as_deref(), Some("false"));
    // Later ops of the batch see the put.
    s.apply(
        stamp(),
        vec![
            mark("true"),
            WriteOp::ExpectMeta {
                key: key(),
                value: Some("true".into()),
            },
        ],
    )
    .await
    .unwrap();
    s.apply(
        stamp(),
        vec![
            WriteOp::ExpectMeta {
                key: key(),
                value: Some("true".into()),
            },
            mark("false"),
            WriteOp::insert_record(record("e", "tk_e")),
        ],
    )
    .await
    .unwrap();
    assert_eq!(held().await.as_deref(), Some("false"));
    s.apply(stamp(), vec![mark("true"), WriteOp::DeleteMeta(key())])
        .await
        .unwrap();
    assert_eq!(held().await, None);
}

/// `ExpectUnlinked` fails the whole batch while any record (soft-deleted ones included) is sealed
/// with the identity, counting the batch's own earlier writes, and passes once none is.
pub async fn unlinked_expectations_guard_the_batch(s: impl Storage) {
    s.apply(
        stamp(),
        vec![
            WriteOp::PutMeta(meta("password_identity", "p_1", "tag", "t1")),
            WriteOp::PutMeta(meta("password_identity", "p_2", "tag", "t2")),
            WriteOp::insert_record(linked("a", "tk_a", "p_1")),
        ],
    )
    .await
    .unwrap();
    let expect = |id: &str| WriteOp::ExpectUnlinked {
        identity_id: id.to_owned(),
    };
    let setting = || WriteOp::PutMeta(meta("vault", "settings", "policy", "x"));
    let before = everything(&s).await;
    let failed = s.apply(stamp(), vec![setting(), expect("p_1")]).await;
    assert_eq!(
        failed.unwrap_err(),
        StorageError::MetaChanged(MetaKey::new("password_identity", "p_1", "tag"))
    );
    assert!(
        everything(&s).await == before,
        "a failed batch changed rows"
    );
    // Soft-deleted, still sealed with it: still linked.
    s.apply(
        stamp(),
        vec![change(
            "a",
            RecordChange::SoftDelete {
                if_expired_at: None,
            },
            NOW,
        )],
    )
    .await
    .unwrap();
    assert!(s.apply(stamp(), vec![expect("p_1")]).await.is_err());
    // An identity no record uses, and one whose last record the batch itself moves away.
    s.apply(stamp(), vec![setting(), expect("p_2")])
        .await
        .unwrap();
    let mut moved = linked("a", "tk_a", "p_2");
    moved.revs = RecordRevs::all(stamp().rev);
    s.apply(
        stamp(),
        vec![
            WriteOp::PutVersion {
                row: Box::new(live_row(&moved)),
                dirty: false,
            },
            expect("p_1"),
        ],
    )
    .await
    .unwrap();
    // And a record the batch links to it fails it.
    let mut back = linked("a", "tk_a", "p_1");
    back.revs = RecordRevs::all(stamp().rev);
    let before = everything(&s).await;
    assert!(
        s.apply(
            stamp(),
            vec![
                WriteOp::PutVersion {
                    row: Box::new(live_row(&back)),
                    dirty: false,
                },
                expect("p_1"),
            ],
        )
        .await
        .is_err()
    );
    assert!(
        everything(&s).await == before,
        "a failed batch changed rows"
    );
}

/// `MarkClean` clears a row's (or tombstone's) dirty mark only while it is still the mark the
/// push sent; a row written since keeps its newer mark. Being acknowledged is not a change: the
/// row, its seq and the change feed stay as they are. Anything else is left alone.
pub async fn mark_clean_clears_only_the_mark_it_names(s: impl Storage) {
    let tag = MetaKey::new("password_identity", "p_1", "tag");
    let policy = MetaKey::new("vault", "settings", "policy");
    let old = MetaKey::new("vault", "settings", "old");
    let state = MetaKey::new("vault", "state", "writes");
    s.apply(
        stamp(),
        vec![
            WriteOp::insert_record(linked("a", "tk_a", "p_1")),
            WriteOp::insert_record(record("b", "tk_b")),
            WriteOp::insert_record(record("dead", "tk_dead")),
            WriteOp::PutMeta(meta("password_identity", "p_1", "tag", "t1")),
            WriteOp::PutMeta(meta("vault", "settings", "policy", "x")),
            WriteOp::PutMeta(meta("vault", "settings", "old", "y")),
            WriteOp::PutMeta(meta("vault", "state", "writes", "e1")),
        ],
    )
    .await
    .unwrap();
    s.apply(
        stamp(),
        vec![delete("dead"), WriteOp::DeleteMeta(old.clone())],
    )
    .await
    .unwrap();
    let keys = vec![
        rec_key("a"),
        rec_key("b"),
        rec_key("dead"),
        meta_key(&tag),
        meta_key(&policy),
        meta_key(&old),
    ];
    let read: Vec<Stored> = s
        .versions(&keys)
        .await
        .unwrap()
        .into_iter()
        .map(Option::unwrap)
        .collect();
    for v in &read {
        assert_eq!(v.dirty, Some(v.seq), "written here: dirty");
    }
    // b changes while the push is in flight.
    s.apply(
        stamp(),
        vec![change(
            "b",
            RecordChange::Renew { expires_at: None },
            NOW + 2,
        )],
    )
    .await
    .unwrap();
    let b_now = s
        .versions(&[rec_key("b")])
        .await
        .unwrap()
        .remove(0)
        .unwrap();
    assert!(b_now.seq > read[1].seq);
    let (dump_before, (feed_before, _)) = everything(&s).await;

    let acks: Vec<WriteOp> = keys
        .iter()
        .zip(&read)
        .map(|(key, v)| WriteOp::MarkClean {
            key: key.clone(),
            dirty: v.dirty.unwrap(),
        })
        .collect();
    s.apply(stamp(), acks.clone()).await.unwrap();
    let after: Vec<Stored> = s
        .versions(&keys)
        .await
        .unwrap()
        .into_iter()
        .map(Option::unwrap)
        .collect();
    for ((key, was), now) in keys.iter().zip(&read).zip(&after) {
        if *key == rec_key("b") {
            assert_eq!(now, &b_now, "changed since it was sent: still dirty");
        } else {
            let clean = Stored {
                dirty: None,
                ..was.clone()
            };
            assert_eq!(now, &clean, "{key:?}: clean, same row, same seq");
        }
    }
    let (dump_after, (feed_after, dirty_after)) = everything(&s).await;
    assert_eq!(dump_after, dump_before, "no row changes");
    assert_eq!(feed_after, feed_before, "the change feed is as it was");
    assert_eq!(
        dirty_after,
        [Change {
            seq: b_now.dirty.unwrap(),
            row: b_now.row.clone()
        }],
        "only b is left to push"
    );

    // Again, or for what is not there, or a mark that is another row's: nothing happens.
    let before = everything(&s).await;
    let mut noops = acks;
    noops.extend([
        WriteOp::MarkClean {
            key: rec_key("none"),
            dirty: b_now.seq,
        },
        WriteOp::MarkClean {
            key: meta_key(&state),
            dirty: b_now.seq,
        },
        WriteOp::MarkClean {
            key: rec_key("a"),
            dirty: b_now.dirty.unwrap(),
        },
        WriteOp::MarkClean {
            key: meta_key(&policy),
            dirty: b_now.dirty.unwrap(),
        },
    ]);
    s.apply(stamp(), noops).await.unwrap();
    assert_eq!(everything(&s).await, before);

    // In a batch that fails, undone.
    let err = s
        .apply(
            stamp(),
            vec![
                WriteOp::MarkClean {
                    key: rec_key("b"),
                    dirty: b_now.dirty.unwrap(),
                },
                WriteOp::insert_record(record("z", "tk_a")),
            ],
        )
        .await
        .unwrap_err();
    assert_eq!(err, StorageError::TokenTaken("tk_a".into()));
    assert_eq!(everything(&s).await, before);
    s.apply(
        stamp(),
        vec![WriteOp::MarkClean {
            key: rec_key("b"),
            dirty: b_now.dirty.unwrap(),
        }],
    )
    .await
    .unwrap();
    assert!(s.dirty_changes(0, ALL).await.unwrap().is_empty());

    // A clean row written here again is dirty again, at its new seq.
    s.apply(
        stamp(),
        vec![WriteOp::PutMeta(meta("vault", "settings", "policy", "x2"))],
    )
    .await
    .unwrap();
    let policy_now = s
        .versions(&[meta_key(&policy)])
        .await
        .unwrap()
        .remove(0)
        .unwrap();
    assert!(policy_now.seq > read[4].seq);
    assert_eq!(policy_now.dirty, Some(policy_now.seq));
    assert_eq!(
        s.dirty_changes(0, ALL).await.unwrap(),
        [Change {
            seq: policy_now.seq,
            row: policy_now.row
        }]
    );
}

pub async fn closed_storage_refuses_calls(s: impl Storage) {
    s.apply(stamp(), vec![WriteOp::insert_record(record("a", "tk_a"))])
        .await
        .unwrap();
    s.close().await;
    assert_eq!(
        s.records_by_tokens(&["tk_a".into()]).await.unwrap_err(),
        StorageError::Closed
    );
    assert_eq!(
        s.apply(stamp(), vec![delete("a")]).await.unwrap_err(),
        StorageError::Closed
    );
    assert_eq!(s.meta_all().await.unwrap_err(), StorageError::Closed);
    let find = MetaFind {
        object_type: "password_identity",
        key: "tag",
        value: "t",
    };
    assert_eq!(
        s.records_by_tokens_and_meta(&["tk_a".into()], find)
            .await
            .unwrap_err(),
        StorageError::Closed
    );
    assert_eq!(
        s.versions(&[RowKey::Record("a".into())]).await.unwrap_err(),
        StorageError::Closed
    );
    s.close().await;
}

/// `DropTombstone` (garbage collection) forgets a tombstone, and its place in the change feed,
/// only while it is the clean tombstone at the seq named: a dirty one (not pushed yet), one
/// written again since, a live row or nothing stays as it is. The id is then free again, and
/// the store's seqs never go back, even when the dropped tombstone held the greatest.
pub async fn drop_tombstone_forgets_only_a_clean_tombstone_at_its_seq(s: impl Storage) {
    let old = MetaKey::new("vault", "settings", "old");
    s.apply(
        stamp(),
        vec![
            WriteOp::insert_record(record("a", "tk_a")),
            WriteOp::insert_record(record("b", "tk_b")),
            WriteOp::insert_record(record("c", "tk_c")),
            WriteOp::insert_record(record("live", "tk_live")),
            WriteOp::PutMeta(meta("vault", "settings", "old", "y")),
        ],
    )
    .await
    .unwrap();
    s.apply(
        stamp(),
        vec![delete("a"), delete("b"), WriteOp::DeleteMeta(old.clone())],
    )
    .await
    .unwrap();
    // c last: its tombstone holds the greatest seq of the store.
    s.apply(stamp(), vec![delete("c")]).await.unwrap();
    let keys = [
        rec_key("a"),
        rec_key("b"),
        rec_key("c"),
        meta_key(&old),
        rec_key("live"),
    ];
    let read: Vec<Stored> = s
        .versions(&keys)
        .await
        .unwrap()
        .into_iter()
        .map(Option::unwrap)
        .collect();
    let top = read.iter().map(|v| v.seq).max().unwrap();
    assert_eq!(read[2].seq, top);
    let drops = |which: &[usize]| -> Vec<WriteOp> {
        which
            .iter()
            .map(|&i| WriteOp::DropTombstone {
                key: keys[i].clone(),
                seq: read[i].seq,
            })
            .collect()
    };

    // Dirty (not pushed yet): kept.
    let before = everything(&s).await;
    s.apply(stamp(), drops(&[0, 1, 2, 3])).await.unwrap();
    assert_eq!(
        everything(&s).await,
        before,
        "a dirty tombstone is never dropped"
    );

    // Pushed: a, c and the meta row's tombstone are clean; b stays dirty.
    let acks = [0, 2, 3]
        .iter()
        .map(|&i| WriteOp::MarkClean {
            key: keys[i].clone(),
            dirty: read[i].dirty.unwrap(),
        })
        .collect();
    s.apply(stamp(), acks).await.unwrap();

    // Another seq, a live row, nothing at all: nothing happens.
    let before = everything(&s).await;
    let mut noops = drops(&[4]);
    noops.extend([
        WriteOp::DropTombstone {
            key: rec_key("a"),
            seq: read[0].seq + 100,
        },
        WriteOp::DropTombstone {
            key: rec_key("none"),
            seq: read[0].seq,
        },
    ]);
    s.apply(stamp(), noops).await.unwrap();
    assert_eq!(everything(&s).await, before);

    // In a batch that fails, undone.
    let err = s
        .apply(
            stamp(),
            [
                drops(&[0, 2, 3]),
                vec![WriteOp::insert_record(record("z", "tk_live"))],
            ]
            .concat(),
        )
        .await
        .unwrap_err();
    assert_eq!(err, StorageError::TokenTaken("tk_live".into()));
    assert_eq!(everything(&s).await, before);

    s.apply(stamp(), drops(&[0, 1, 2, 3])).await.unwrap();
    let after = s.versions(&keys).await.unwrap();
    assert_eq!(after[0], None, "a: forgotten");
    assert_eq!(after[1].as_ref(), Some(&read[1]), "b: dirty, kept");
    assert_eq!(after[2], None, "c: forgotten");
    assert_eq!(after[3], None, "the meta row's tombstone: forgotten");
    assert_eq!(after[4].as_ref(), Some(&read[4]), "live: kept");
    let (feed, dirty) = feeds(&s).await;
    let fed: Vec<RowKey> = feed.iter().map(|c| c.row.key()).collect();
    assert_eq!(
        fed,
        vec![rec_key("live"), rec_key("b")],
        "the feed forgets them too"
    );
    let to_push: Vec<RowKey> = dirty.iter().map(|c| c.row.key()).collect();
    assert_eq!(
        to_push,
        vec![rec_key("live"), rec_key("b")],
        "still to push as before"
    );

    // The id is free again, and the seqs go on above the dropped greatest one.
    s.apply(stamp(), vec![WriteOp::insert_record(record("c", "tk_c2"))])
        .await
        .unwrap();
    let again = s
        .versions(&[rec_key("c")])
        .await
        .unwrap()
        .remove(0)
        .unwrap();
    assert!(again.seq > top, "seq {} after a dropped {top}", again.seq);
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
            shared_tags_are_stored_and_found_together,
            meta_find_returns_whole_objects,
            meta_find_follows_values_as_rows_move,
            records_and_meta_read_together_answer_as_apart,
            unreferenced_identities_are_pruned_in_the_same_batch,
            identity_slots_go_with_their_identity,
            failed_batches_change_nothing,
            expect_empty_and_clear_all,
            queries_agree_with_the_shared_filter,
            listings_and_counts_follow_every_write,
            a_listing_paged_on_answers_as_the_store_is_after_writes_in_between,
            scans_page_through_everything_once,
            bulk_reads_and_writes_answer_as_single_ones,
            set_based_purges_take_exactly_the_expired,
            odd_strings_round_trip,
            writes_stamp_exactly_the_registers_they_change,
            meta_rows_carry_their_writers_revision,
            seqs_grow_in_commit_order,
            tombstones_record_every_deletion,
            inserts_of_a_tombstoned_id_fail_in_batches_of_any_size,
            dirty_marks_follow_local_writes,
            put_version_stores_what_a_merge_decided,
            identities_go_only_when_unlinked,
            transactions_read_and_commit_like_apply,
            versions_answer_each_key_with_its_row_seq_and_mark,
            versions_of_a_page_answer_and_guard_as_single_reads,
            expected_versions_guard_the_batch,
            mark_clean_clears_only_the_mark_it_names,
            unlinked_expectations_guard_the_batch,
            the_unlinked_mark_lands_as_the_batch_puts_it,
            drop_tombstone_forgets_only_a_clean_tombstone_at_its_seq,
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
