//! What the vault writes for sync, natively on the GlueSQL memory backend and on the SQL backend
//! over SQLite (the cases are in `tests/revisions/`; Chromium runs them on IndexedDB in
//! `idb_browser.rs`).
#![cfg(all(feature = "gluesql", feature = "sql", not(target_arch = "wasm32")))]

mod revisions;
mod sqlite;

use sqlite::Sqlite;
use std::sync::Arc;
use vaultstore_wasm::storage::Storage;
use vaultstore_wasm::storage::memory::GlueMemoryStorage;
use vaultstore_wasm::storage::sql::SqlStorage;

#[test]
fn revisions_on_the_memory_backend() {
    futures::executor::block_on(revisions::run_all(|_| async {
        let shared = Arc::new(GlueMemoryStorage::new().unwrap());
        (
            Box::new(shared.clone()) as Box<dyn Storage>,
            Box::new(shared.clone()) as Box<dyn Storage>,
            Box::new(shared) as Box<dyn Storage>,
        )
    }));
}

#[test]
fn revisions_on_the_sql_backend() {
    futures::executor::block_on(revisions::run_all(|_| async {
        let db = Arc::new(Sqlite::memory());
        let connect = || async {
            Box::new(SqlStorage::open(db.clone(), "vaultstore").await.unwrap()) as Box<dyn Storage>
        };
        (connect().await, connect().await, connect().await)
    }));
}
