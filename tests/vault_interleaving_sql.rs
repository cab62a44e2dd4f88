//! Every (rekey variant × write kind) interleaving, both orders and inside a later round, on the
//! SQL backend: two vaults on separate SQLite connections to one database file, as two isolates
//! on one D1 database (see `tests/interleaving/`).
#![cfg(all(feature = "sql", not(target_arch = "wasm32")))]

mod interleaving;
mod sqlite;

use sqlite::Sqlite;
use vaultstore_wasm::storage::Storage;
use vaultstore_wasm::storage::sql::SqlStorage;

async fn connection(path: &std::path::Path) -> Box<dyn Storage> {
    Box::new(
        SqlStorage::open(Sqlite::file(path), "vaultstore")
            .await
            .unwrap(),
    )
}

#[test]
fn nothing_that_resolved_is_lost_whatever_the_interleaving() {
    let dir = std::env::temp_dir().join(format!("vaultstore-interleave-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let failures = futures::executor::block_on(interleaving::run_all(
        |name| {
            let path = dir.join(format!("{name}.db"));
            async move {
                (
                    connection(&path).await,
                    connection(&path).await,
                    connection(&path).await,
                )
            }
        },
        |_| async {
            Box::new(
                SqlStorage::open(Sqlite::memory(), "vaultstore")
                    .await
                    .unwrap(),
            ) as Box<dyn Storage>
        },
        false,
    ));
    let _ = std::fs::remove_dir_all(&dir);
    assert!(
        failures.is_empty(),
        "{} failures:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

/// A soft delete landing inside a `tokenUpdate` is not written over, on two SQLite connections
/// to one file (see `tests/interleaving/`).
#[test]
fn an_update_never_rewrites_a_record_soft_deleted_meanwhile() {
    let dir = std::env::temp_dir().join(format!("vaultstore-update-race-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let failures = futures::executor::block_on(interleaving::update_against_soft_delete(|name| {
        let path = dir.join(format!("{name}.db"));
        async move {
            (
                connection(&path).await,
                connection(&path).await,
                connection(&path).await,
            )
        }
    }));
    let _ = std::fs::remove_dir_all(&dir);
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// `secretAdd`/`secretRemove` racing a rotation or a re-wrap (see `tests/interleaving/`).
#[test]
fn a_slot_added_or_removed_during_a_rekey_opens_exactly_what_the_order_implies() {
    let dir = std::env::temp_dir().join(format!("vaultstore-slot-race-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let failures = futures::executor::block_on(interleaving::slots_against_rekeys(|name| {
        let path = dir.join(format!("{name}.db"));
        async move {
            (
                connection(&path).await,
                connection(&path).await,
                connection(&path).await,
            )
        }
    }));
    let _ = std::fs::remove_dir_all(&dir);
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
