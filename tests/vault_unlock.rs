//! `unlock(secret)` natively, on the GlueSQL memory backend and on the SQL backend over SQLite
//! (the cases are in `tests/unlock/`; Chromium runs them on IndexedDB in `idb_browser.rs`).
#![cfg(all(feature = "gluesql", feature = "sql", not(target_arch = "wasm32")))]

mod common;
mod sqlite;
mod unlock;

use common::{Probe, ProbedStorage};
use sqlite::Sqlite;
use std::sync::Arc;
use vaultstore_wasm::Secret;
use vaultstore_wasm::storage::Storage;
use vaultstore_wasm::storage::memory::GlueMemoryStorage;
use vaultstore_wasm::storage::sql::SqlStorage;

#[test]
fn unlock_on_the_memory_backend() {
    futures::executor::block_on(unlock::run_all(|_| async {
        let shared = Arc::new(GlueMemoryStorage::new().unwrap());
        (
            Box::new(shared.clone()) as Box<dyn Storage>,
            Box::new(shared) as Box<dyn Storage>,
        )
    }));
}

#[test]
fn unlock_on_the_sql_backend() {
    futures::executor::block_on(unlock::run_all(|_| async {
        let db = Arc::new(Sqlite::memory());
        let connect = || async {
            Box::new(SqlStorage::open(db.clone(), "vaultstore").await.unwrap()) as Box<dyn Storage>
        };
        (connect().await, connect().await)
    }));
}

/// With identities on, a vault that never held an unlinked record is not scanned: unlock looks
/// up the secret's identity, then whether any record exists. Another tab creating the secret's
/// first record between the two must not make unlock refuse the secret that just got a record:
/// a "no" is only given when nobody wrote meanwhile, so unlock looks again and finds it.
#[test]
fn a_first_record_written_while_unlock_looks_is_not_refused() {
    futures::executor::block_on(async {
        let shared = Arc::new(GlueMemoryStorage::new().unwrap());
        let clock = unlock::HandClock::at(unlock::T0);
        let writer = Arc::new(unlock::open(Box::new(shared.clone()), true, &clock).await);
        let probe = Probe::new();
        probe.before_next_scan({
            let writer = writer.clone();
            async move {
                writer
                    .token_create(
                        "another tab",
                        &Secret::password(unlock::PASSWORD),
                        &Default::default(),
                    )
                    .await
                    .unwrap();
            }
        });
        let storage = ProbedStorage {
            inner: shared,
            probe,
        };
        let reader = unlock::open(Box::new(storage), true, &clock).await;
        assert_eq!(
            reader
                .unlock(&Secret::password(unlock::PASSWORD))
                .await
                .map_err(|e| e.to_string()),
            Ok(true)
        );
    });
}

/// API.md: after `lock()` returns, no call uses a key derived before it. A lock that lands while
/// unlock checks the key makes it reject `ABORTED`, and the key is not cached: the next call
/// derives again.
#[test]
fn a_lock_during_unlock_aborts_it() {
    futures::executor::block_on(async {
        let shared = Arc::new(GlueMemoryStorage::new().unwrap());
        let clock = unlock::HandClock::at(unlock::T0);
        let writer = unlock::open(Box::new(shared.clone()), false, &clock).await;
        writer
            .token_create(
                "v",
                &Secret::password(unlock::PASSWORD),
                &Default::default(),
            )
            .await
            .unwrap();
        let reader_cell: Arc<std::sync::OnceLock<std::sync::Weak<vaultstore_wasm::Vault>>> =
            Arc::default();
        let probe = Probe::new();
        probe.before_next_scan({
            let cell = reader_cell.clone();
            async move {
                if let Some(reader) = cell.get().and_then(std::sync::Weak::upgrade) {
                    reader.lock();
                }
            }
        });
        let storage = ProbedStorage {
            inner: shared,
            probe,
        };
        let reader = Arc::new(unlock::open(Box::new(storage), false, &clock).await);
        reader_cell.set(Arc::downgrade(&reader)).unwrap();
        let secret = Secret::password(unlock::PASSWORD);
        match reader.unlock(&secret).await {
            Err(e) => assert_eq!(e.code(), vaultstore_wasm::ErrorCode::Aborted, "{e}"),
            Ok(b) => panic!("a lock during unlock: expected ABORTED, got Ok({b})"),
        }
        let derived = reader.key_derivations();
        assert_eq!(
            reader.unlock(&secret).await.map_err(|e| e.to_string()),
            Ok(true)
        );
        assert_eq!(
            reader.key_derivations(),
            derived + 1,
            "the key derived before the lock was not kept"
        );
    });
}
