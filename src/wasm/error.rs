//! `VaultError` → a JavaScript `Error` carrying `name`, `code`, `reason`, `tokens` and `cause`.
//! The TypeScript layer gives it the `VaultError` prototype, so `instanceof` works in every entry.

use super::convert::set;
use crate::error::VaultError;
use js_sys::{Array, Error};
use wasm_bindgen::JsValue;

/// The JavaScript form of a vault error.
pub fn to_js(error: &VaultError) -> JsValue {
    let js: JsValue = Error::new(&error.to_string()).into();
    set(&js, "name", &JsValue::from_str("VaultError"));
    set(&js, "code", &JsValue::from_str(error.code().as_str()));
    if let Some(reason) = error.reason() {
        set(&js, "reason", &JsValue::from_str(reason.as_str()));
    }
    if let Some(tokens) = error.tokens() {
        let list: Array = tokens.iter().map(|t| JsValue::from_str(t)).collect();
        set(&js, "tokens", &list);
    }
    if let VaultError::Storage(failure) | VaultError::QuotaExceeded(failure) = error {
        if let Some(thrown) = failure.original.value() {
            // The platform's own error, as it was thrown (API.md: `cause` keeps the original).
            set(&js, "cause", thrown);
        } else if let Some(name) = error.cause_name() {
            // A failure the package found itself: an Error named for it, with its message.
            let cause: JsValue = Error::new(&failure.message).into();
            set(&cause, "name", &JsValue::from_str(name));
            set(&js, "cause", &cause);
        }
    }
    js
}

/// Shorthand for the `Err` side of every binding.
pub fn err(error: VaultError) -> JsValue {
    to_js(&error)
}

/// An `INVALID_ARGUMENT` error for a value of the wrong type.
pub fn invalid(message: impl Into<String>) -> JsValue {
    to_js(&VaultError::invalid(message))
}
