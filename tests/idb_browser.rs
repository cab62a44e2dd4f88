//! The vault on IndexedDB, in headless Chromium: atomicity of rekeys, several connections on one
//! database, other tabs upgrading or blocking, schema migrations, and what lands on disk.
#![cfg(all(target_arch = "wasm32", feature = "idb"))]

use std::cell::Cell;
use std::rc::Rc;
use vaultstore_wasm::platform::{Platform, RustKdf, SystemClock};
use vaultstore_wasm::storage::indexeddb::{IdbStorage, MIGRATIONS, Migration};
use vaultstore_wasm::storage::{Storage, StorageError};
use vaultstore_wasm::{
    CreateOptions, ErrorCode, RekeyObserver, RekeyOptions, Secret, Vault, VaultOptions,
};
use wasm_bindgen::JsValue;
use wasm_bindgen_test::{wasm_bindgen_test, wasm_bindgen_test_configure};

wasm_bindgen_test_configure!(run_in_browser);

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
        clock: Box::new(SystemClock),
        kdf: Box::new(RustKdf),
        scheduler,
    };
    Vault::open_with(Box::new(storage), options, platform)
        .await
        .unwrap()
}

type Job = std::pin::Pin<Box<dyn std::future::Future<Output = ()>>>;

/// A scheduler that, the first time the vault yields, runs a job to completion: another tab's
/// write, landing deterministically in the middle of a rekey.
#[derive(Clone, Default)]
struct Interleave(Rc<std::cell::RefCell<Option<Job>>>);

#[async_trait::async_trait(?Send)]
impl vaultstore_wasm::platform::Scheduler for Interleave {
    async fn yield_now(&self) {
        let job = self.0.borrow_mut().take();
        if let Some(job) = job {
            job.await;
        }
    }
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
async fn a_rekey_whose_commit_fails_mid_transaction_changes_nothing() {
    // Another tab updates one record while this one re-encrypts: the compare-and-swap of that
    // record fails inside the IndexedDB transaction after earlier records were already written
    // in it, and the abort must take those writes back.
    let name = unique("failed-commit");
    let interleave = Interleave::default();
    let v = vault_with(&name, false, Box::new(interleave.clone())).await;
    let other_tab = Rc::new(vault_on(&name, false).await);
    let values: Vec<String> = (0..200).map(|i| format!("value {i}")).collect();
    let refs: Vec<&str> = values.iter().map(String::as_str).collect();
    let tokens = v
        .tokens_create(&refs, &pw(PASSWORD), &CreateOptions::default())
        .await
        .unwrap();
    // The record the other tab touches is the last the rekey writes (it scans in id order).
    let query = vaultstore_wasm::RecordQuery {
        order_by: Some("id".into()),
        sort_order: Some("asc".into()),
        ..Default::default()
    };
    let last = v.record_list(&query).await.unwrap().pop().unwrap().token;
    let before = state(&v).await;
    {
        let (tab, token) = (other_tab.clone(), last.clone());
        *interleave.0.borrow_mut() = Some(Box::pin(async move {
            tab.token_update(
                &token,
                "changed by the other tab",
                &Secret::password(PASSWORD),
            )
            .await
            .unwrap();
        }));
    }
    let e = v
        .bulk_rekey(
            &pw(PASSWORD),
            &pw("new password!!"),
            &RekeyOptions::default(),
        )
        .await
        .unwrap_err();
    assert_eq!(e.code(), ErrorCode::Storage, "{e}");
    assert!(e.to_string().contains("run the rekey again"), "{e}");
    assert!(
        interleave.0.borrow().is_none(),
        "the other tab's write ran mid-rekey"
    );
    // Everything is as before, but for the other tab's one update.
    assert_eq!(
        v.token_read(&last, &pw(PASSWORD)).await.unwrap(),
        "changed by the other tab"
    );
    for t in tokens.iter().filter(|t| **t != last) {
        assert!(
            v.token_read(t, &pw(PASSWORD)).await.is_ok(),
            "{t} still opens with the old password"
        );
    }
    let after: serde_json::Value = serde_json::from_slice(&state(&v).await).unwrap();
    let before: serde_json::Value = serde_json::from_slice(&before).unwrap();
    let changed = after["records"]
        .as_array()
        .unwrap()
        .iter()
        .zip(before["records"].as_array().unwrap())
        .filter(|(a, b)| a != b)
        .count();
    assert_eq!(changed, 1, "only the other tab's record differs");
    assert_eq!(after["meta"], before["meta"]);
    // Run again: it goes through now.
    assert_eq!(
        v.bulk_rekey(
            &pw(PASSWORD),
            &pw("new password!!"),
            &RekeyOptions::default()
        )
        .await
        .unwrap(),
        200
    );
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
                assert_eq!(e.code(), ErrorCode::TokenExists);
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
    // "Another tab" asks for version 2: this connection must let go, not block it.
    let other = raw_open(&name, 2).await;
    let e = storage.meta_all().await.unwrap_err();
    match &e {
        StorageError::Backend {
            name: Some(n),
            message,
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

fn noop_v2(_: &idb::Database, _: &idb::Transaction) -> Result<(), idb::Error> {
    Ok(())
}

static WITH_V2: [Migration; 2] = [MIGRATIONS[0], noop_v2];

#[wasm_bindgen_test]
async fn a_blocked_upgrade_is_reported_not_waited_on() {
    let name = unique("blocked");
    drop(IdbStorage::open(&name).await.unwrap());
    // A connection that ignores versionchange (not ours) holds version 1 open.
    let holder = raw_open(&name, 1).await;
    let started = js_sys::Date::now();
    let e = IdbStorage::open_with(&name, &WITH_V2, 300)
        .await
        .unwrap_err();
    let waited = js_sys::Date::now() - started;
    match e {
        StorageError::Backend {
            name: Some(n),
            message,
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
    thread_local!(static RAN_V2: Cell<bool> = const { Cell::new(false) });
    fn add_index_v2(_: &idb::Database, upgrade: &idb::Transaction) -> Result<(), idb::Error> {
        // A later schema adds an index to an existing store, inside the upgrade transaction.
        let records = upgrade.object_store("records")?;
        records.create_index("value_len", idb::KeyPath::new_single("value"), None)?;
        RAN_V2.with(|r| r.set(true));
        Ok(())
    }
    static V2: [Migration; 2] = [MIGRATIONS[0], add_index_v2];
    let storage = IdbStorage::open_with(&name, &V2, 1_000).await.unwrap();
    ran.set(RAN_V2.with(Cell::get));
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
    let db = raw_open(&name, 1).await;
    let tx = db
        .transaction(&["records", "meta"], idb::TransactionMode::ReadOnly)
        .unwrap();
    let mut dump = String::new();
    for store in ["records", "meta"] {
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
