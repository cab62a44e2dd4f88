//! The JavaScript bindings: the only code that knows JavaScript exists. The public API is the
//! TypeScript layer in `js/`, which wraps these classes; see API.md for the contract.

mod convert;
mod error;
pub mod platform;
mod query;
#[cfg(feature = "sql")]
pub mod sql;
mod sync;
mod vault;

pub use query::JsRecordQuery;
pub use vault::JsVault;

use std::cell::RefCell;
use wasm_bindgen::prelude::*;

thread_local! {
    static LAST_PANIC: RefCell<Option<String>> = const { RefCell::new(None) };
}

/// Record a panic's message before the instance traps, so the TypeScript layer can turn the trap
/// into a clear error and refuse further calls, instead of leaving a silently poisoned instance.
pub(crate) fn install_panic_hook() {
    use std::sync::Once;
    static HOOK: Once = Once::new();
    HOOK.call_once(|| {
        std::panic::set_hook(Box::new(|info| {
            let message = info.to_string();
            web_sys::console::error_1(&JsValue::from_str(&format!(
                "vaultstore-wasm panicked: {message}"
            )));
            LAST_PANIC.with(|p| *p.borrow_mut() = Some(message));
        }));
    });
}

/// How much of the stack below an operation's frame [`scrub_stack`] overwrites: more than the
/// deepest the vault's crypto goes.
const SCRUBBED_STACK: usize = 32 * 1024;

/// Overwrite the stack below the caller with zeros. Key and password bytes are wiped where they
/// are dropped (`zeroize`), but the moves of hash and cipher states leave stale copies in stack
/// frames, and in WebAssembly the stack is part of the linear memory a dump shows. Called when an
/// operation completes and on `lock()`; one `memory.fill`, about a microsecond.
#[inline(never)]
pub(crate) fn scrub_stack() {
    let mut stack = [0u8; SCRUBBED_STACK];
    // The zeros must really be written: `black_box` may read them.
    std::hint::black_box(&mut stack);
}

/// The message of the panic that stopped this instance, if one did.
#[wasm_bindgen(js_name = lastPanic)]
pub fn last_panic() -> Option<String> {
    LAST_PANIC.with(|p| p.borrow().clone())
}

/// `isToken(s)`: a string that starts with `"tk_"`. Anything else, strings or not, is `false`.
#[wasm_bindgen(js_name = isToken)]
pub fn is_token(#[wasm_bindgen(unchecked_param_type = "unknown")] value: JsValue) -> bool {
    value
        .as_string()
        .is_some_and(|s| crate::token::is_token(&s))
}

/// `isTokenValidLength(s)`: `isToken(s)` and a total length (in UTF-16 units) of 15..=40.
#[wasm_bindgen(js_name = isTokenValidLength)]
pub fn is_token_valid_length(
    #[wasm_bindgen(unchecked_param_type = "unknown")] value: JsValue,
) -> bool {
    value
        .as_string()
        .is_some_and(|s| crate::token::is_token_valid_length(&s))
}

// The option and result types of the signatures above are written once, in the TypeScript layer
// (js/types.ts, shipped as dist/types.d.ts next to dist/wasm/).
#[wasm_bindgen(typescript_custom_section)]
const TS_TYPES: &str = r#"import type {
    CreateOptions, CustomCreateOptions, OrderBy, QueryInit, RekeyOptions, Secret, SortOrder, SyncOptions, SyncReport, Time,
    VaultOptions, VaultRecord,
} from "../types.js";"#;
