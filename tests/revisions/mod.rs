//! What the vault writes for sync (storage schema 2, `crate::sync` "The replicated rows"), seen
//! from outside the vault on every backend: each operation moves the revisions of exactly the
//! registers it changes, a write is ordered after the version it replaced even when another tab's
//! clock runs ahead, identity links live in the record, deletes leave tombstones in the change
//! feed, local rows never enter it, and a version-1 snapshot imports with synthesized revisions.
//! Natively on GlueSQL and SQL (SQLite) in `tests/vault_revisions.rs`; in Chromium on IndexedDB in
//! `idb_browser.rs`.
//!
//! Each case gets a function that opens a fresh store three times (connections to one database):
//! vaults run on the first two, the third reads the stored rows directly.
#![allow(dead_code)]

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use vaultstore_wasm::platform::{Clock, NoYield, Platform, RustKdf};
use vaultstore_wasm::record::{Record, RecordRevs};
use vaultstore_wasm::storage::{Change, Row, Storage};
use vaultstore_wasm::sync::{MetaVersion, RecordVersion, TombstoneReason};
use vaultstore_wasm::{CreateOptions, RekeyOptions, Secret, Vault, VaultOptions};

const PASSWORD: &str = "correct horse battery";
const OTHER: &str = "another long password";
const T0: i64 = 1_700_000_000_000;
const FROZEN: &str = include_str!("../fixtures/snapshot_v1.json");

struct TestClock(AtomicI64);

impl Clock for TestClock {
    fn now_ms(&self) -> i64 {
        self.0.load(Ordering::SeqCst)
    }
}

fn pw(p: &str) -> Secret {
    Secret::password(p)
}

async fn open(storage: Box<dyn Storage>, clock: Arc<TestClock>, identities: bool) -> Vault {
    let platform = Platform {
        clock,
        kdf: Box::new(RustKdf),
        scheduler: Box::new(NoYield),
    };
    let options = VaultOptions {
        kdf_iterations: 1_000,
        password_identity: identities,
        ..VaultOptions::default()
    };
    Vault::open_with(storage, options, platform).await.unwrap()
}

fn clock(at: i64) -> Arc<TestClock> {
    Arc::new(TestClock(AtomicI64::new(at)))
}

async fn stored(t: &dyn Storage, token: &str) -> Record {
    t.records_by_tokens(&[token.to_owned()]).await.unwrap()[0]
        .clone()
        .expect("the record is stored")
}

/// Every change in the store's feed, in seq order.
async fn feed(t: &dyn Storage) -> Vec<Change> {
    let mut all: Vec<Change> = Vec::new();
    loop {
        let after = all.last().map_or(0, |c| c.seq);
        let page = t.changes_since(after, 100).await.unwrap();
        if page.is_empty() {
            return all;
        }
        all.extend(page);
    }
}

pub async fn run_all<F, Fut>(connect: F)
where
    F: Fn(String) -> Fut,
    Fut: Future<Output = (Box<dyn Storage>, Box<dyn Storage>, Box<dyn Storage>)>,
{
    let (s, _, t) = connect("revisions-fields".into()).await;
    each_operation_moves_only_its_registers(s, &*t).await;
    let (s, u, t) = connect("revisions-tabs".into()).await;
    a_write_is_ordered_after_what_it_replaced(s, u, &*t).await;
    let (s, _, t) = connect("revisions-feed".into()).await;
    the_feed_holds_every_replicated_change_and_no_local_row(s, &*t).await;
    let (s, _, t) = connect("revisions-snapshot".into()).await;
    a_version_1_snapshot_imports_with_synthesized_revisions(s, &*t).await;
}

pub async fn each_operation_moves_only_its_registers(s: Box<dyn Storage>, t: &dyn Storage) {
    let time = clock(T0);
    let v = open(s, time.clone(), true).await;
    let token = v
        .token_create("first", &pw(PASSWORD), &CreateOptions::default())
        .await
        .unwrap();
    let created = stored(t, &token).await;
    let r0 = created.revs.value;
    assert_eq!(
        created.revs,
        RecordRevs::all(r0),
        "a create sets every register"
    );
    assert!(r0.wall_ms() as i64 >= T0 && r0.node() != 0);
    let identity = created.password_id.clone().expect("linked in the record");

    let step = |ms| time.0.fetch_add(ms, Ordering::SeqCst);
    step(10);
    v.token_update(&token, "second", &pw(PASSWORD))
        .await
        .unwrap();
    let updated = stored(t, &token).await;
    assert!(updated.revs.value > r0 && updated.revs.seal == updated.revs.value);
    assert_eq!((updated.revs.expires, updated.revs.deleted), (r0, r0));
    assert_eq!(updated.password_id.as_deref(), Some(identity.as_str()));

    step(10);
    v.token_renew(&token, Some(T0 + 1_000_000)).await.unwrap();
    let renewed = stored(t, &token).await;
    assert!(renewed.revs.expires > updated.revs.value);
    assert_eq!(
        (renewed.revs.value, renewed.revs.seal, renewed.revs.deleted),
        (updated.revs.value, updated.revs.seal, r0)
    );

    step(10);
    v.token_soft_delete(&token).await.unwrap();
    let deleted = stored(t, &token).await;
    assert!(deleted.revs.deleted > renewed.revs.expires);
    step(10);
    v.token_restore(&token).await.unwrap();
    let restored = stored(t, &token).await;
    assert!(restored.revs.deleted > deleted.revs.deleted);
    assert_eq!(restored.revs.expires, renewed.revs.expires);

    // A rotation re-seals: the seal revision moves, the value revision (the user's edit) stays.
    step(10);
    let rotate = RekeyOptions {
        rotate: true,
        ..RekeyOptions::default()
    };
    v.bulk_rekey(&pw(PASSWORD), &pw(OTHER), &rotate)
        .await
        .unwrap();
    let rotated = stored(t, &token).await;
    assert!(rotated.revs.seal > restored.revs.deleted);
    assert_eq!(
        rotated.revs.value, updated.revs.value,
        "a re-seal is not an edit"
    );
    assert_ne!(
        rotated.password_id,
        Some(identity),
        "moved to the new identity"
    );
    assert_eq!(v.token_read(&token, &pw(OTHER)).await.unwrap(), "second");

    // A password change that only re-wraps touches no record.
    step(10);
    v.bulk_rekey(&pw(OTHER), &pw(PASSWORD), &RekeyOptions::default())
        .await
        .unwrap();
    assert_eq!(stored(t, &token).await.revs, rotated.revs);
}

pub async fn a_write_is_ordered_after_what_it_replaced(
    s: Box<dyn Storage>,
    u: Box<dyn Storage>,
    t: &dyn Storage,
) {
    // Tab A's clock is an hour ahead of tab B's.
    let a = open(s, clock(T0 + 3_600_000), false).await;
    let b = open(u, clock(T0), false).await;
    let token = a
        .token_create("from a", &pw(PASSWORD), &CreateOptions::default())
        .await
        .unwrap();
    let by_a = stored(t, &token).await.revs;
    b.token_update(&token, "from b", &pw(PASSWORD))
        .await
        .unwrap();
    let by_b = stored(t, &token).await.revs;
    assert!(
        by_b.value > by_a.value,
        "B's edit replaced A's, so it must win any merge with it"
    );
    assert_ne!(by_b.value.node(), by_a.value.node(), "two tabs, two clocks");
    b.token_renew(&token, None).await.unwrap();
    assert!(stored(t, &token).await.revs.expires > by_a.expires);
}

pub async fn the_feed_holds_every_replicated_change_and_no_local_row(
    s: Box<dyn Storage>,
    t: &dyn Storage,
) {
    let v = open(s, clock(T0), true).await;
    let token = v
        .token_create("value", &pw(PASSWORD), &CreateOptions::default())
        .await
        .unwrap();
    let record = stored(t, &token).await;
    let identity = record.password_id.clone().unwrap();
    v.set_vault_setting("theme", "dark").await.unwrap();
    let before_delete = feed(t).await;
    let seqs: Vec<u64> = before_delete.iter().map(|c| c.seq).collect();
    assert!(seqs.windows(2).all(|w| w[0] < w[1]), "unique and in order");
    let has_meta = |changes: &[Change], id: &str, key: &str| {
        changes.iter().any(|c| {
            matches!(&c.row, Row::Meta { key: k, version: MetaVersion::Value { .. } }
                if k.object_id == id && k.key == key)
        })
    };
    assert!(has_meta(&before_delete, &identity, "tag"));
    assert!(has_meta(&before_delete, "settings", "theme"));
    assert!(has_meta(&before_delete, "settings", "version"));
    for c in &before_delete {
        if let Row::Meta { key, .. } = &c.row {
            assert!(
                key.object_id != "state" && key.key != "kdf" && key.object_type != "sync",
                "a local row in the feed: {key:?}"
            );
            assert_ne!(key.object_type, "record", "no link rows in schema 2");
        }
    }
    let live = before_delete.iter().find_map(|c| match &c.row {
        Row::Record {
            id,
            version: RecordVersion::Live(live),
        } if *id == record.id => Some(live.clone()),
        _ => None,
    });
    assert_eq!(live.map(|l| l.password_id), Some(Some(identity.clone())));
    // Every change here is local, so all of it waits to be pushed.
    let dirty = t.dirty_changes(0, 1_000).await.unwrap();
    assert_eq!(dirty.len(), before_delete.len());

    // A delete leaves a tombstone, and the identity it pruned leaves tombstones of its rows.
    let last = seqs.last().copied().unwrap();
    v.token_delete(&token).await.unwrap();
    let after = t.changes_since(last, 100).await.unwrap();
    assert!(after.iter().any(|c| matches!(&c.row,
        Row::Record { id, version: RecordVersion::Gone(g) } if *id == record.id && g.reason == TombstoneReason::Deleted)));
    for key in ["tag", "dek"] {
        assert!(
            after.iter().any(|c| matches!(&c.row,
                Row::Meta { key: k, version: MetaVersion::Gone { .. } } if k.object_id == identity && k.key == key)),
            "the pruned identity's {key} row leaves a tombstone"
        );
    }
    assert!(t.records_by_tokens(&[token]).await.unwrap()[0].is_none());
}

pub async fn a_version_1_snapshot_imports_with_synthesized_revisions(
    s: Box<dyn Storage>,
    t: &dyn Storage,
) {
    let platform = Platform {
        clock: clock(T0),
        kdf: Box::new(RustKdf),
        scheduler: Box::new(NoYield),
    };
    let options = VaultOptions {
        kdf_iterations: 1_000,
        password_identity: true,
        snapshot: Some(FROZEN.as_bytes().to_vec()),
        ..VaultOptions::default()
    };
    let v = Vault::open_with(s, options, platform).await.unwrap();
    let doc: serde_json::Value = serde_json::from_str(FROZEN).unwrap();
    for r in doc["records"].as_array().unwrap() {
        let token = r["token"].as_str().unwrap();
        let record = stored(t, token).await;
        let created = r["createdAt"].as_i64().unwrap();
        assert_eq!(record.revs, RecordRevs::synthesized(created));
        let link =
            doc["meta"].as_array().unwrap().iter().find(|m| {
                m["objectType"] == "record" && m["objectId"] == format!("r_{}", record.id)
            });
        assert_eq!(
            record.password_id.as_deref(),
            link.map(|m| m["value"].as_str().unwrap()),
            "the link row became the record's passwordId"
        );
    }
    // Re-exported, the snapshot has the same rows (API.md "Snapshots").
    let bytes = v.export_snapshot().await.unwrap();
    let again: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
    assert_eq!(again["records"], doc["records"]);
    assert_eq!(again["meta"], doc["meta"]);
}
