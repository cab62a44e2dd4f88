//! The storage conformance suite on the IndexedDB backend, in headless Chromium.
#![cfg(all(target_arch = "wasm32", feature = "idb"))]

mod conformance;

use vaultstore_wasm::storage::indexeddb::IdbStorage;
use wasm_bindgen_test::wasm_bindgen_test_configure;

wasm_bindgen_test_configure!(run_in_browser);

/// A fresh database per test: the case name plus a random suffix.
async fn idb(case: &str) -> IdbStorage {
    let name = format!("conformance-{case}-{}", js_sys::Math::random());
    IdbStorage::open(&name)
        .await
        .expect("IndexedDB opens in Chromium")
}

storage_conformance!(wasm, idb);
