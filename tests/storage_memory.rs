//! The storage conformance suite on the GlueSQL in-memory backend.
#![cfg(all(feature = "gluesql", not(target_arch = "wasm32")))]

mod conformance;

use vaultstore_wasm::storage::memory::GlueMemoryStorage;

async fn memory(_name: &str) -> GlueMemoryStorage {
    GlueMemoryStorage::new().expect("GlueSQL opens an empty in-memory database")
}

storage_conformance!(native, memory);
