//! Every (rekey variant × write kind) interleaving, both orders and inside a later round, on the
//! GlueSQL backend: two vaults on one shared store, as two isolates on one database (see
//! `tests/interleaving/`).
#![cfg(all(feature = "gluesql", not(target_arch = "wasm32")))]

mod interleaving;

use std::sync::Arc;
use vaultstore_wasm::storage::Storage;
use vaultstore_wasm::storage::memory::GlueMemoryStorage;

#[test]
fn nothing_that_resolved_is_lost_whatever_the_interleaving() {
    let failures = futures::executor::block_on(interleaving::run_all(
        |_| async {
            let shared = Arc::new(GlueMemoryStorage::new().unwrap());
            (
                Box::new(shared.clone()) as Box<dyn Storage>,
                Box::new(shared.clone()) as Box<dyn Storage>,
                Box::new(shared) as Box<dyn Storage>,
            )
        },
        |_| async { Box::new(GlueMemoryStorage::new().unwrap()) as Box<dyn Storage> },
        false,
    ));
    assert!(
        failures.is_empty(),
        "{} failures:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

/// A soft delete landing inside a `tokenUpdate` is not written over (see `tests/interleaving/`).
#[test]
fn an_update_never_rewrites_a_record_soft_deleted_meanwhile() {
    let failures =
        futures::executor::block_on(interleaving::update_against_soft_delete(|_| async {
            let shared = Arc::new(GlueMemoryStorage::new().unwrap());
            (
                Box::new(shared.clone()) as Box<dyn Storage>,
                Box::new(shared.clone()) as Box<dyn Storage>,
                Box::new(shared) as Box<dyn Storage>,
            )
        }));
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// `secretAdd`/`secretRemove` racing a rotation or a re-wrap (see `tests/interleaving/`).
#[test]
fn a_slot_added_or_removed_during_a_rekey_opens_exactly_what_the_order_implies() {
    let failures = futures::executor::block_on(interleaving::slots_against_rekeys(|_| async {
        let shared = Arc::new(GlueMemoryStorage::new().unwrap());
        (
            Box::new(shared.clone()) as Box<dyn Storage>,
            Box::new(shared.clone()) as Box<dyn Storage>,
            Box::new(shared) as Box<dyn Storage>,
        )
    }));
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
