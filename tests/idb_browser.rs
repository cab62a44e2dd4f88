//! The vault on IndexedDB, in headless Chromium: atomicity of rekeys, several connections on one
//! database, other tabs upgrading or blocking, schema migrations, and what lands on disk.
#![cfg(all(target_arch = "wasm32", feature = "idb"))]
#![allow(clippy::disallowed_methods)] // clippy.toml's one-sort rule is for the engine's download size

use std::cell::Cell;
use std::rc::Rc;
use vaultstore_wasm::platform::{Platform, RustKdf, SystemClock};
use vaultstore_wasm::record::RecordRevs;
use vaultstore_wasm::storage::indexeddb::{IdbStorage, MIGRATIONS, Migration, MigrationFuture};
use vaultstore_wasm::storage::{MetaKey, MetaRow, Row, Stamp, Storage, StorageError, WriteOp};
use vaultstore_wasm::sync::{MetaVersion, RecordVersion, Rev};
use vaultstore_wasm::{
    CreateOptions, ErrorCode, RekeyObserver, RekeyOptions, Secret, Vault, VaultOptions,
};
use wasm_bindgen::JsValue;
use wasm_bindgen_test::{wasm_bindgen_test, wasm_bindgen_test_configure};

wasm_bindgen_test_configure!(run_in_browser);

mod interleaving;
mod revisions;
mod slots;
mod unlock;

use interleaving::{Gate, Gated, interleave};

const PASSWORD: &str = "correct horse battery";

fn unique(name: &str) -> String {
    format!("{name}-{}", js_sys::Math::random())
}

fn pw(p: &str) -> Secret {
    Secret::password(p)
}

async fn vault_on(name: &str, identities: bool) -> Vault {
    vault_with(name, identities, Box::new(Yield)).await
}

async fn vault_with(
    name: &str,
    identities: bool,
    scheduler: Box<dyn vaultstore_wasm::platform::Scheduler>,
) -> Vault {
    let storage = IdbStorage::open(name).await.unwrap();
    let options = VaultOptions {
        kdf_iterations: 1000,
        password_identity: identities,
        ..VaultOptions::default()
    };
    let platform = Platform {
        clock: std::sync::Arc::new(SystemClock),
        kdf: Box::new(RustKdf),
        scheduler,
    };
    Vault::open_with(Box::new(storage), options, platform)
        .await
        .unwrap()
}

/// Lets other tasks (a "second tab" writing) run while a rekey works.
struct Yield;

#[async_trait::async_trait(?Send)]
impl vaultstore_wasm::platform::Scheduler for Yield {
    async fn yield_now(&self) {
        let p = js_sys::Promise::new(&mut |resolve, _| {
            web_sys_set_timeout(&resolve);
        });
        let _ = wasm_bindgen_futures::JsFuture::from(p).await;
    }
}

fn web_sys_set_timeout(f: &js_sys::Function) {
    let set_timeout: js_sys::Function =
        js_sys::Reflect::get(&js_sys::global(), &"setTimeout".into())
            .unwrap()
            .into();
    set_timeout
        .call2(&JsValue::UNDEFINED, f, &JsValue::from_f64(0.0))
        .unwrap();
}

/// Every record (token, value) and meta row, via an export: "nothing changed" means this.
async fn state(v: &Vault) -> Vec<u8> {
    v.export_snapshot().await.unwrap()
}

struct CancelAt {
    at: u64,
    seen: Cell<u64>,
}

impl RekeyObserver for CancelAt {
    fn progress(&self, done: u64, _total: u64) {
        self.seen.set(done);
    }
    fn is_cancelled(&self) -> bool {
        self.seen.get() >= self.at
    }
}

#[wasm_bindgen_test]
async fn an_aborted_rekey_leaves_every_value_and_link_byte_identical() {
    for (identities, rotate) in [(true, true), (true, false), (false, false)] {
        let name = unique("aborted-rekey");
        let v = vault_on(&name, identities).await;
        let values: Vec<String> = (0..150).map(|i| format!("value {i}")).collect();
        let refs: Vec<&str> = values.iter().map(String::as_str).collect();
        let tokens = v
            .tokens_create(&refs, &pw(PASSWORD), &CreateOptions::default())
            .await
            .unwrap();
        let before = state(&v).await;
        let cancel = CancelAt {
            at: if rotate || !identities { 100 } else { 0 },
            seen: Cell::new(0),
        };
        let e = v
            .bulk_rekey(
                &pw(PASSWORD),
                &pw("new password!!"),
                &RekeyOptions {
                    rotate,
                    observer: Some(&cancel),
                },
            )
            .await
            .unwrap_err();
        assert_eq!(e.code(), ErrorCode::Aborted);
        assert_eq!(
            state(&v).await,
            before,
            "identities {identities}, rotate {rotate}"
        );
        // A second connection (a fresh one, as after a reload) sees the same.
        let again = vault_on(&name, identities).await;
        assert_eq!(state(&again).await, before);
        assert_eq!(
            again.token_read(&tokens[149], &pw(PASSWORD)).await.unwrap(),
            "value 149"
        );
    }
}

#[wasm_bindgen_test]
async fn a_rekey_that_meets_another_tabs_write_finishes_and_keeps_it() {
    // Another tab updates one record after this one read it for the rekey and before the rekey
    // commits. The rekey's guarded commit fails inside its IndexedDB transaction (after 400
    // writes were issued in it), nothing of it remains, and the rekey reads again, re-seals just
    // that record and commits: the other tab's value is kept, under the new password.
    let name = unique("meets-a-write");
    let gate = Gate::default();
    let storage = IdbStorage::open(&name).await.unwrap();
    let v = interleaving::open(
        Box::new(Gated {
            inner: storage,
            gate: gate.clone(),
        }),
        false,
    )
    .await;
    let other_tab = vault_on(&name, false).await;
    let values: Vec<String> = (0..200).map(|i| format!("value {i}")).collect();
    let refs: Vec<&str> = values.iter().map(String::as_str).collect();
    let tokens = v
        .tokens_create(&refs, &pw(PASSWORD), &CreateOptions::default())
        .await
        .unwrap();
    let touched = tokens[137].clone();
    let (moved, updated) = interleave(
        &gate,
        v.bulk_rekey(
            &pw(PASSWORD),
            &pw("new password!!"),
            &RekeyOptions::default(),
        ),
        other_tab.token_update(&touched, "changed by the other tab", &pw(PASSWORD)),
    )
    .await;
    assert_eq!(updated, Some(Ok(())), "the other tab's write ran mid-rekey");
    assert_eq!(moved.unwrap(), 200);
    let new = pw("new password!!");
    assert_eq!(
        v.token_read(&touched, &new).await.unwrap(),
        "changed by the other tab"
    );
    for (t, value) in tokens.iter().zip(&values).filter(|(t, _)| **t != touched) {
        assert_eq!(&v.token_read(t, &new).await.unwrap(), value);
        assert_eq!(
            v.token_read(t, &pw(PASSWORD)).await.unwrap_err().code(),
            ErrorCode::InvalidPassword
        );
    }
}

/// Every (rekey variant × write kind) interleaving, both orders and inside a later round, on
/// IndexedDB: three connections to one database play the tabs (see `tests/interleaving/`).
#[wasm_bindgen_test]
async fn nothing_that_resolved_is_lost_whatever_the_interleaving() {
    let failures = interleaving::run_all(
        |name| async move {
            let name = unique(&name);
            let connect =
                || async { Box::new(IdbStorage::open(&name).await.unwrap()) as Box<dyn Storage> };
            (connect().await, connect().await, connect().await)
        },
        |name| async move {
            Box::new(IdbStorage::open(&unique(&name)).await.unwrap()) as Box<dyn Storage>
        },
        true,
    )
    .await;
    assert!(
        failures.is_empty(),
        "{} failures:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

/// `unlock(secret)` on IndexedDB: every case of `tests/unlock/`, identities off and on; the
/// cases that switch identities use two connections to one database.
#[wasm_bindgen_test]
async fn unlock_checks_the_secret_against_what_is_stored() {
    unlock::run_all(|name| async move {
        let name = unique(&name);
        let connect =
            || async { Box::new(IdbStorage::open(&name).await.unwrap()) as Box<dyn Storage> };
        (connect().await, connect().await)
    })
    .await;
}

/// A soft delete landing inside a `tokenUpdate` is not written over (see `tests/interleaving/`).
#[wasm_bindgen_test]
async fn an_update_never_rewrites_a_record_soft_deleted_meanwhile() {
    let failures = interleaving::update_against_soft_delete(|name| async move {
        let name = unique(&name);
        let connect =
            || async { Box::new(IdbStorage::open(&name).await.unwrap()) as Box<dyn Storage> };
        (connect().await, connect().await, connect().await)
    })
    .await;
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// `secretAdd`/`secretRemove` racing a rotation or a re-wrap (see `tests/interleaving/`).
#[wasm_bindgen_test]
async fn a_slot_added_or_removed_during_a_rekey_opens_exactly_what_the_order_implies() {
    let failures = interleaving::slots_against_rekeys(|name| async move {
        let name = unique(&name);
        let connect =
            || async { Box::new(IdbStorage::open(&name).await.unwrap()) as Box<dyn Storage> };
        (connect().await, connect().await, connect().await)
    })
    .await;
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// What the vault writes for sync on IndexedDB: every case of `tests/revisions/`.
#[wasm_bindgen_test]
async fn revisions_seqs_and_tombstones_as_the_vault_writes_them() {
    revisions::run_all(|name| async move {
        let name = unique(&name);
        let connect =
            || async { Box::new(IdbStorage::open(&name).await.unwrap()) as Box<dyn Storage> };
        (connect().await, connect().await, connect().await)
    })
    .await;
}

/// Several secrets for one identity on IndexedDB: every case of `tests/slots/`.
#[wasm_bindgen_test]
async fn slots_add_remove_rekey_and_rotate() {
    slots::run_all(|name| async move {
        let name = unique(&name);
        let connect =
            || async { Box::new(IdbStorage::open(&name).await.unwrap()) as Box<dyn Storage> };
        (connect().await, connect().await)
    })
    .await;
}

#[wasm_bindgen_test]
async fn two_connections_opening_a_new_vault_at_once_agree_on_one_salt() {
    let name = unique("two-tabs");
    let (a, b) = futures::future::join(vault_on(&name, true), vault_on(&name, true)).await;
    assert_eq!(
        a.get_vault_setting("kdf").await.unwrap(),
        b.get_vault_setting("kdf").await.unwrap()
    );
    // Concurrent writes from both, including the first use of one password: one identity.
    let names: Vec<String> = (0..50).map(|i| format!("tok-{i}")).collect();
    let secret = Secret::password(PASSWORD);
    let writes_a = names
        .iter()
        .map(|t| a.token_create_custom(t, "a", &secret, None));
    let writes_b = names
        .iter()
        .map(|t| b.token_create_custom(t, "b", &secret, None));
    let (ra, rb) = futures::future::join(
        futures::future::join_all(writes_a),
        futures::future::join_all(writes_b),
    )
    .await;
    for (x, y) in ra.iter().zip(&rb) {
        assert!(
            x.is_ok() != y.is_ok(),
            "each custom token is taken exactly once"
        );
        for r in [x, y] {
            if let Err(e) = r {
                assert_eq!(e.code(), ErrorCode::TokenExists, "{e}");
            }
        }
    }
    let snapshot: serde_json::Value =
        serde_json::from_slice(&a.export_snapshot().await.unwrap()).unwrap();
    let identities = snapshot["meta"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|m| m["key"] == "tag")
        .count();
    assert_eq!(identities, 1);
    assert_eq!(a.record_count(&Default::default()).await.unwrap(), 50);
}

/// A write refused by IndexedDB itself (here the unique token index) after the batch's own checks
/// passed must fail the whole transaction. Firefox commits the rest of a transaction whose
/// `commit()` was called before such a write failed: the vault once answered these creates as
/// done, kept the first value, and stored the refused batch's counter and write epoch.
#[wasm_bindgen_test]
async fn a_custom_token_taken_on_any_connection_is_refused_and_nothing_is_written() {
    let name = unique("taken");
    let (a, b) = (vault_on(&name, true).await, vault_on(&name, true).await);
    let secret = Secret::password(PASSWORD);
    a.token_create_custom("tok-taken", "first", &secret, None)
        .await
        .unwrap();
    let before = raw_dump(&name).await;
    for (vault, value) in [(&a, "same tab"), (&b, "other tab")] {
        let refused = vault
            .token_create_custom("tok-taken", value, &secret, None)
            .await
            .unwrap_err();
        assert_eq!(refused.code(), ErrorCode::TokenExists, "{refused}");
        assert_eq!(
            raw_dump(&name).await,
            before,
            "{value}: nothing of it is stored"
        );
    }
    assert_eq!(a.token_read("tok-taken", &secret).await.unwrap(), "first");
}

async fn raw_open(name: &str, version: u32) -> idb::Database {
    idb::Factory::new()
        .unwrap()
        .open(name, Some(version))
        .unwrap()
        .await
        .unwrap()
}

#[wasm_bindgen_test]
async fn another_tab_upgrading_closes_this_connection_and_calls_report_storage() {
    let name = unique("versionchange");
    let storage = IdbStorage::open(&name).await.unwrap();
    // "Another tab" asks for the next version: this connection must let go, not block it.
    let other = raw_open(&name, MIGRATIONS.len() as u32 + 1).await;
    let e = storage.meta_all().await.unwrap_err();
    match &e {
        StorageError::Backend {
            name: Some(n),
            message,
            ..
        } => {
            assert_eq!(n, "VersionChangeError");
            assert!(message.contains("reload"), "{message}");
        }
        other => panic!("expected a VersionChangeError, got {other:?}"),
    }
    let vault_error: vaultstore_wasm::VaultError = e.into();
    assert_eq!(vault_error.code(), ErrorCode::Storage);
    assert_eq!(vault_error.cause_name(), Some("VersionChangeError"));
    other.close();
}

fn noop_v3<'a>(_: &'a idb::Database, _: &'a idb::Transaction) -> MigrationFuture<'a> {
    Box::pin(async { Ok(()) })
}

static WITH_V3: [Migration; 3] = [MIGRATIONS[0], MIGRATIONS[1], noop_v3];

#[wasm_bindgen_test]
async fn a_blocked_upgrade_is_reported_not_waited_on() {
    let name = unique("blocked");
    drop(IdbStorage::open(&name).await.unwrap());
    // A connection that ignores versionchange (not ours) holds the current version open.
    let holder = raw_open(&name, MIGRATIONS.len() as u32).await;
    let started = js_sys::Date::now();
    let e = IdbStorage::open_with(&name, &WITH_V3, 300)
        .await
        .unwrap_err();
    let waited = js_sys::Date::now() - started;
    match e {
        StorageError::Backend {
            name: Some(n),
            message,
            ..
        } => {
            assert_eq!(n, "BlockedError");
            assert!(message.contains("close other tabs"), "{message}");
        }
        other => panic!("expected BlockedError, got {other:?}"),
    }
    assert!(
        waited < 5_000.0,
        "reported after the timeout, not waited on ({waited} ms)"
    );
    holder.close();
}

#[wasm_bindgen_test]
async fn migrations_run_from_the_stored_version_and_keep_data() {
    let name = unique("migrate");
    let v = vault_on(&name, false).await;
    let t = v
        .token_create("kept", &pw(PASSWORD), &CreateOptions::default())
        .await
        .unwrap();
    v.close().await;
    let ran = Rc::new(Cell::new(false));
    thread_local!(static RAN_V3: Cell<bool> = const { Cell::new(false) });
    fn add_index_v3<'a>(
        _: &'a idb::Database,
        upgrade: &'a idb::Transaction,
    ) -> MigrationFuture<'a> {
        Box::pin(async move {
            // A later schema adds an index to an existing store, inside the upgrade transaction.
            let records = upgrade.object_store("records").unwrap();
            records
                .create_index("value_len", idb::KeyPath::new_single("value"), None)
                .unwrap();
            RAN_V3.with(|r| r.set(true));
            Ok(())
        })
    }
    static V3: [Migration; 3] = [MIGRATIONS[0], MIGRATIONS[1], add_index_v3];
    let storage = IdbStorage::open_with(&name, &V3, 1_000).await.unwrap();
    ran.set(RAN_V3.with(Cell::get));
    assert!(ran.get(), "only the missing step ran, on the existing data");
    let options = VaultOptions {
        kdf_iterations: 1000,
        ..VaultOptions::default()
    };
    let v = Vault::open(Box::new(storage), options).await.unwrap();
    assert_eq!(v.token_read(&t, &pw(PASSWORD)).await.unwrap(), "kept");
    // An older release meeting the newer database refuses clearly.
    let e = IdbStorage::open(&name).await.unwrap_err();
    match e {
        StorageError::Backend { name: Some(n), .. } => assert_eq!(n, "VersionError"),
        other => panic!("expected VersionError, got {other:?}"),
    }
}

#[wasm_bindgen_test]
async fn a_database_vaultstore_did_not_create_is_refused() {
    let name = unique("foreign");
    raw_open(&name, 1).await.close();
    let e = IdbStorage::open(&name).await.unwrap_err();
    assert!(
        matches!(e, StorageError::Backend { ref name, .. } if name.as_deref() == Some("DataError")),
        "{e:?}"
    );
}

#[wasm_bindgen_test]
async fn nothing_stored_in_indexeddb_holds_plaintext_or_keys() {
    let name = unique("no-plaintext");
    let v = vault_on(&name, true).await;
    let secrets = [
        "PLAINTEXT-CARD-4111-1111",
        "PLAINTEXT-EMAIL@example.com",
        "ünïcødé-PLAINTEXT-😀",
    ];
    let t = v
        .tokens_create(&secrets, &pw(PASSWORD), &CreateOptions::default())
        .await
        .unwrap();
    v.token_update(&t[0], "PLAINTEXT-UPDATED-VALUE", &pw(PASSWORD))
        .await
        .unwrap();
    v.bulk_rekey(
        &pw(PASSWORD),
        &pw("PASSWORD-AFTER-REKEY"),
        &RekeyOptions {
            rotate: true,
            observer: None,
        },
    )
    .await
    .unwrap();
    // Read every row of every store, raw.
    let db = raw_open(&name, MIGRATIONS.len() as u32).await;
    let stores = ["records", "meta", "tombstones", "counters"];
    let tx = db
        .transaction(&stores, idb::TransactionMode::ReadOnly)
        .unwrap();
    let mut dump = String::new();
    for store in stores {
        let rows = tx
            .object_store(store)
            .unwrap()
            .get_all(None, None)
            .unwrap()
            .await
            .unwrap();
        for row in rows {
            dump.push_str(&js_sys::JSON::stringify(&row).unwrap().as_string().unwrap());
        }
    }
    assert!(
        dump.contains("vs1:") && dump.contains("vs1k:"),
        "the dump holds the encrypted rows"
    );
    for needle in [
        "PLAINTEXT",
        "ünïcødé",
        PASSWORD,
        "PASSWORD-AFTER-REKEY",
        "correct horse",
    ] {
        assert!(!dump.contains(needle), "{needle:?} found in IndexedDB");
    }
    db.close();
}

// ---------------------------------------------------------------- schema 1 -> 2

const V1_TIME: i64 = 1_690_000_000_000;

/// A schema-1 record row, as release 1 wrote it.
fn v1_record(id: &str, created_at: i64) -> JsValue {
    let row = js_sys::JSON::parse(&format!(
        r#"{{"id":"{id}","token":"tk_{id}","value":"vs1:value-of-{id}","createdAt":{created_at},
            "updatedAt":{},"expiresAt":null,"softDeletedAt":null,"deleted":0}}"#,
        created_at + 5
    ))
    .unwrap();
    js_sys::Reflect::set(&row, &"expiresSort".into(), &f64::INFINITY.into()).unwrap();
    row
}

fn v1_meta(object_type: &str, object_id: &str, key: &str, value: JsValue) -> JsValue {
    let row = js_sys::Object::new();
    for (k, v) in [
        ("objectType", JsValue::from_str(object_type)),
        ("objectId", object_id.into()),
        ("key", key.into()),
        ("value", value),
    ] {
        js_sys::Reflect::set(&row, &k.into(), &v).unwrap();
    }
    row.into()
}

/// A version-1 database as release 1 left it: records r1, r2 sealed under identity p_a (which
/// has a further slot p_s), r3 under a master key, r4 under p_b; a link to a record that is gone;
/// `link_r2` is the value of r2's link row. Its write epoch is `"epoch-v1"`.
async fn v1_database(name: &str, link_r2: JsValue) {
    IdbStorage::open_with(name, &MIGRATIONS[..1], 1_000)
        .await
        .unwrap()
        .close()
        .await;
    let db = raw_open(name, 1).await;
    let tx = db
        .transaction(&["records", "meta"], idb::TransactionMode::ReadWrite)
        .unwrap();
    let records = tx.object_store("records").unwrap();
    for (i, id) in ["r1", "r2", "r3", "r4"].iter().enumerate() {
        records
            .add(&v1_record(id, V1_TIME + i as i64), None)
            .unwrap()
            .await
            .unwrap();
    }
    let meta = tx.object_store("meta").unwrap();
    let rows = [
        v1_meta("vault", "settings", "version", "1".into()),
        v1_meta("vault", "state", "writes", "epoch-v1".into()),
        v1_meta("password_identity", "p_a", "tag", "tag-a".into()),
        v1_meta("password_identity", "p_a", "dek", "vs1k:dek-a".into()),
        v1_meta("password_identity", "p_s", "identity", "p_a".into()),
        v1_meta("password_identity", "p_s", "dek", "vs1k:dek-s".into()),
        v1_meta("password_identity", "p_b", "tag", "tag-b".into()),
        v1_meta("password_identity", "p_b", "dek", "vs1k:dek-b".into()),
        v1_meta("record", "r_r1", "password_id", "p_a".into()),
        v1_meta("record", "r_r2", "password_id", link_r2),
        v1_meta("record", "r_r4", "password_id", "p_b".into()),
        v1_meta("record", "r_r9", "password_id", "p_a".into()),
    ];
    for row in rows {
        meta.add(&row, None).unwrap().await.unwrap();
    }
    tx.commit().unwrap().await.unwrap();
    db.close();
}

/// Every row of every store of a database, raw, as JSON; and its version.
async fn raw_dump(name: &str) -> (u32, Vec<String>) {
    let db = idb::Factory::new()
        .unwrap()
        .open(name, None)
        .unwrap()
        .await
        .unwrap();
    let version = db.version().unwrap();
    let stores = db.store_names();
    let mut rows = Vec::new();
    let tx = db
        .transaction(&stores, idb::TransactionMode::ReadOnly)
        .unwrap();
    for store in &stores {
        for row in tx
            .object_store(store)
            .unwrap()
            .get_all(None, None)
            .unwrap()
            .await
            .unwrap()
        {
            let json = js_sys::JSON::stringify(&row).unwrap().as_string().unwrap();
            rows.push(format!("{store}: {json}"));
        }
    }
    db.close();
    (version, rows)
}

#[wasm_bindgen_test]
async fn a_version_1_database_moves_its_links_into_the_records_and_numbers_its_rows() {
    let name = unique("upgrade-v1");
    v1_database(&name, "p_a".into()).await;

    let storage = IdbStorage::open(&name).await.unwrap();
    let ids: Vec<String> = ["r1", "r2", "r3", "r4"].map(String::from).to_vec();
    let records: Vec<_> = storage
        .records_by_ids(&ids)
        .await
        .unwrap()
        .into_iter()
        .map(Option::unwrap)
        .collect();
    let links: Vec<Option<&str>> = records.iter().map(|r| r.password_id.as_deref()).collect();
    assert_eq!(links, [Some("p_a"), Some("p_a"), None, Some("p_b")]);
    for (i, r) in records.iter().enumerate() {
        assert_eq!(r.created_at, V1_TIME + i as i64);
        assert_eq!(r.updated_at, V1_TIME + i as i64 + 5);
        assert_eq!(r.value, format!("vs1:value-of-{}", r.id));
        assert_eq!(r.revs, RecordRevs::synthesized(r.created_at), "{}", r.id);
    }
    // The identity index replaces the link rows; no link row is left.
    let of_a = storage.records_linked_to("p_a", None, 10).await.unwrap();
    assert_eq!(
        of_a.iter().map(|r| r.id.as_str()).collect::<Vec<_>>(),
        ["r1", "r2"]
    );
    assert_eq!(storage.linked_count(None).await.unwrap(), 3);
    assert_eq!(storage.meta_count("record").await.unwrap(), 0);
    // The write epoch's row went: schema 2 keeps the epoch in the seq counter's row, which
    // holds none until a write sets one.
    assert_eq!(storage.meta_all().await.unwrap().len(), 7);
    let epoch = vaultstore_wasm::storage::write_epoch();
    assert_eq!(storage.meta_get(&epoch).await.unwrap(), None);
    // Every row has a seq (a sync walking the feed from 0 sees them all), none is dirty, and no
    // revision was written: the feed carries the synthesized ones.
    let feed = storage.changes_since(0, 100).await.unwrap();
    let seqs: Vec<u64> = feed.iter().map(|c| c.seq).collect();
    assert_eq!(seqs, (1..=11).collect::<Vec<u64>>());
    let fed_records: Vec<&str> = feed
        .iter()
        .filter_map(|c| match &c.row {
            Row::Record {
                id,
                version: RecordVersion::Live(live),
            } => {
                assert_eq!(live.max_rev(), Rev::synthesized(live.created_at));
                Some(id.as_str())
            }
            _ => None,
        })
        .collect();
    assert_eq!(fed_records, ["r1", "r2", "r3", "r4"]);
    for change in &feed[4..] {
        assert!(
            matches!(&change.row, Row::Meta { version: MetaVersion::Value { rev, .. }, .. } if *rev == Rev::ZERO),
            "{change:?}"
        );
    }
    assert_eq!(storage.dirty_changes(0, 100).await.unwrap(), vec![]);
    storage.close().await;
    assert_eq!(raw_dump(&name).await.0, 2);

    // The upgraded store writes schema 2 above those seqs: deleting p_b's last record prunes
    // p_b, and the feed has the record's tombstone and the identity's, at seqs 12, 13, 14.
    let storage = IdbStorage::open(&name).await.unwrap();
    let rev = Rev::new(1_800_000_000_000, 0, 7).unwrap();
    let stamp = Stamp {
        rev,
        at: 1_800_000_000_000,
    };
    storage
        .apply(
            stamp,
            vec![WriteOp::PutMeta(MetaRow {
                key: epoch.clone(),
                value: "e2".into(),
            })],
        )
        .await
        .unwrap();
    storage
        .apply(
            stamp,
            vec![WriteOp::DeleteRecord {
                id: "r4".into(),
                if_expired_at: None,
            }],
        )
        .await
        .unwrap();
    assert_eq!(
        storage
            .meta_object("password_identity", "p_b")
            .await
            .unwrap(),
        Vec::<MetaRow>::new()
    );
    let changes = storage.changes_since(11, 100).await.unwrap();
    let seqs: Vec<u64> = changes.iter().map(|c| c.seq).collect();
    assert_eq!(seqs, [12, 13, 14]);
    // A batch that moved the counter and not the epoch kept it.
    assert_eq!(
        storage.meta_get(&epoch).await.unwrap().as_deref(),
        Some("e2")
    );
    assert!(matches!(
        &changes[0].row,
        Row::Record { id, version: RecordVersion::Gone(t) } if id == "r4" && t.rev == rev
    ));
    let gone_meta: Vec<MetaKey> = changes[1..]
        .iter()
        .map(|c| match &c.row {
            Row::Meta {
                key,
                version: MetaVersion::Gone { rev: r, .. },
            } if *r == rev => key.clone(),
            other => panic!("expected a meta tombstone, got {other:?}"),
        })
        .collect();
    let mut expected = vec![
        MetaKey::new("password_identity", "p_b", "dek"),
        MetaKey::new("password_identity", "p_b", "tag"),
    ];
    let mut gone_sorted = gone_meta.clone();
    gone_sorted.sort();
    expected.sort();
    assert_eq!(gone_sorted, expected);
    assert_eq!(storage.dirty_changes(0, 100).await.unwrap(), changes);
}

/// A migration step that runs schema 2's, then fails: the whole upgrade must go.
fn v2_then_fail<'a>(db: &'a idb::Database, upgrade: &'a idb::Transaction) -> MigrationFuture<'a> {
    Box::pin(async move {
        (MIGRATIONS[1])(db, upgrade).await?;
        Err(StorageError::Backend {
            original: Default::default(),
            name: None,
            message: "the step after the link move failed".into(),
        })
    })
}

static FAILS_AFTER_V2: [Migration; 2] = [MIGRATIONS[0], v2_then_fail];

#[wasm_bindgen_test]
async fn an_upgrade_that_fails_leaves_the_version_1_database_as_it_was() {
    // Midway through the link move (r1's link moved, r2's is not vaultstore's), and after all of
    // it: the open fails with UpgradeError and the database is still version 1, byte for byte.
    for (case, link_r2, migrations) in [
        ("midway", JsValue::from_f64(42.0), MIGRATIONS),
        ("after", JsValue::from_str("p_a"), &FAILS_AFTER_V2[..]),
    ] {
        let name = unique(&format!("failed-upgrade-{case}"));
        v1_database(&name, link_r2).await;
        let before = raw_dump(&name).await;
        assert_eq!(before.0, 1);
        let e = IdbStorage::open_with(&name, migrations, 1_000)
            .await
            .unwrap_err();
        match &e {
            StorageError::Backend {
                name: Some(n),
                message,
                ..
            } => {
                assert_eq!(n, "UpgradeError", "{case}");
                assert!(message.contains("could not create or upgrade"), "{message}");
            }
            other => panic!("{case}: expected UpgradeError, got {other:?}"),
        }
        assert_eq!(raw_dump(&name).await, before, "{case}");
    }
}

#[wasm_bindgen_test]
async fn a_fresh_database_is_created_at_schema_2() {
    let name = unique("fresh-v2");
    let storage = IdbStorage::open(&name).await.unwrap();
    storage.close().await;
    let db = raw_open(&name, MIGRATIONS.len() as u32).await;
    let mut stores = db.store_names();
    stores.sort();
    assert_eq!(stores, ["counters", "meta", "records", "tombstones"]);
    db.close();
}

// ---------------------------------------------------------------- the seq counter

fn v2_record(id: &str) -> vaultstore_wasm::record::Record {
    vaultstore_wasm::record::Record {
        id: id.to_owned(),
        token: format!("tk_{id}"),
        value: format!("vs1:value-of-{id}"),
        created_at: V1_TIME,
        updated_at: V1_TIME,
        expires_at: None,
        soft_deleted_at: None,
        password_id: None,
        revs: RecordRevs::synthesized(V1_TIME),
    }
}

fn stamp_at(wall: u64) -> Stamp {
    Stamp {
        rev: Rev::new(wall, 0, 9).unwrap(),
        at: wall as i64,
    }
}

async fn all_seqs(s: &dyn Storage) -> Vec<u64> {
    s.changes_since(0, 10_000)
        .await
        .unwrap()
        .iter()
        .map(|c| c.seq)
        .collect()
}

#[wasm_bindgen_test]
async fn seqs_from_two_connections_are_unique_and_never_go_back() {
    // Two tabs writing at once: each batch reads and advances the counter in its own readwrite
    // transaction, so no seq is given twice and none is skipped.
    let name = unique("seq-counter");
    let a = IdbStorage::open(&name).await.unwrap();
    let b = IdbStorage::open(&name).await.unwrap();
    let batches = (0..40).map(|i| {
        let (s, id) = if i % 2 == 0 { (&a, "a") } else { (&b, "b") };
        s.apply(
            stamp_at(1_800_000_000_000 + i),
            vec![
                WriteOp::insert_record(v2_record(&format!("{id}{i}"))),
                WriteOp::PutMeta(MetaRow::new("vault", "settings", &format!("s{i}"), "x")),
            ],
        )
    });
    for result in futures::future::join_all(batches).await {
        result.unwrap();
    }
    let seqs = all_seqs(&a).await;
    assert_eq!(seqs, (1..=80).collect::<Vec<u64>>());
    // A snapshot import clears every store but keeps the counter: a puller that has seen seq 80
    // must still see what is written next.
    a.apply(stamp_at(1_900_000_000_000), vec![WriteOp::ClearAll])
        .await
        .unwrap();
    assert_eq!(all_seqs(&b).await, Vec::<u64>::new());
    b.apply(
        stamp_at(1_900_000_000_001),
        vec![WriteOp::insert_record(v2_record("after"))],
    )
    .await
    .unwrap();
    assert_eq!(all_seqs(&a).await, [81]);
}

#[wasm_bindgen_test]
async fn a_version_1_database_with_more_links_than_a_page_moves_every_one() {
    // The upgrade reads 2,000 records per round trip, with the link rows of their ids: 2,310
    // records (2,100 linked) take two pages, the second starting after the first's last id.
    let name = unique("upgrade-pages");
    IdbStorage::open_with(&name, &MIGRATIONS[..1], 1_000)
        .await
        .unwrap()
        .close()
        .await;
    let db = raw_open(&name, 1).await;
    let tx = db
        .transaction(&["records", "meta"], idb::TransactionMode::ReadWrite)
        .unwrap();
    let records = tx.object_store("records").unwrap();
    let meta = tx.object_store("meta").unwrap();
    let mut linked = 0;
    for i in 0..2_310 {
        let id = format!("r{i:05}");
        records.add(&v1_record(&id, V1_TIME), None).unwrap();
        if i % 11 != 10 {
            let identity = format!("p_{}", i % 3);
            meta.add(
                &v1_meta("record", &format!("r_{id}"), "password_id", identity.into()),
                None,
            )
            .unwrap();
            linked += 1;
        }
    }
    tx.commit().unwrap().await.unwrap();
    db.close();
    assert_eq!(linked, 2_100);

    let storage = IdbStorage::open(&name).await.unwrap();
    assert_eq!(storage.meta_count("record").await.unwrap(), 0);
    assert_eq!(storage.linked_count(None).await.unwrap(), 2_100);
    // Both pages of records were numbered, once each.
    let seqs: Vec<u64> = storage
        .changes_since(0, 10_000)
        .await
        .unwrap()
        .iter()
        .map(|c| c.seq)
        .collect();
    assert_eq!(seqs, (1..=2_310).collect::<Vec<u64>>());
    let of_p1 = storage.records_linked_to("p_1", None, 5_000).await.unwrap();
    let expected: Vec<String> = (0..2_310)
        .filter(|i| i % 11 != 10 && i % 3 == 1)
        .map(|i| format!("r{i:05}"))
        .collect();
    assert_eq!(
        of_p1.iter().map(|r| r.id.clone()).collect::<Vec<_>>(),
        expected
    );
    // Paging through one identity's records, as a rekey does.
    let page = storage
        .records_linked_to("p_1", Some(&expected[99]), 50)
        .await
        .unwrap();
    assert_eq!(
        page.iter().map(|r| r.id.as_str()).collect::<Vec<_>>(),
        expected[100..150]
    );
}
