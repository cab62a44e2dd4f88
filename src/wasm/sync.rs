//! Sync over JavaScript (SYNC.md "API"): the [`SyncTransport`] a replica's `sync` goes through,
//! and the request checks `syncHandle` makes before the engine reads a body.
//!
//! The TypeScript layer turns a `SyncRemote` (a URL, `{ url, headers, fetch }` or a function of a
//! `Request`) into one exchange function, `(body: string) => Promise<{ status, body, tooLarge }>`,
//! with `body` the response's bytes (`Uint8Array`) and `tooLarge` set when the body went over the
//! cap (the layer stops reading there). Everything the wire format says a client checks is
//! the engine's; this module only moves bytes, watches the caller's `AbortSignal` between
//! exchanges and keeps the failure a network call threw, for `error.cause`.

use super::convert::{self as js, JsResult, field, options};
use super::error::invalid;
use crate::error::{Result, VaultError};
use crate::sync::wire;
#[cfg(any(feature = "gluesql", feature = "sql"))]
use crate::sync::wire::WireError;
use crate::vault::{SyncReport, SyncTransport};
use async_trait::async_trait;
use js_sys::{Function, Object, Promise, Reflect, Uint8Array};
use std::cell::RefCell;
use wasm_bindgen::{JsCast, JsValue};
use wasm_bindgen_futures::JsFuture;

/// A replica's way to its server: the exchange function the TypeScript layer built.
pub struct JsTransport {
    exchange: Function,
    /// An `AbortSignal`; read through `Reflect`, so a Proxy that throws reads as "aborted".
    signal: Option<JsValue>,
    /// What the last failed exchange threw (a `TypeError` from `fetch`, say), for `error.cause`.
    failure: RefCell<Option<JsValue>>,
}

/// What `sync` was given: the transport and the optional progress listener.
pub struct SyncArgs {
    pub transport: JsTransport,
    pub on_progress: Option<Function>,
}

/// Check `sync`'s arguments: the exchange function (from the TypeScript layer) and
/// `{ signal, onProgress }`.
pub fn sync_args(exchange: JsValue, options_value: &JsValue) -> JsResult<SyncArgs> {
    let exchange = exchange
        .dyn_into::<Function>()
        .map_err(|_| invalid("the sync remote must be a URL, { url } or a function"))?;
    let o = options(options_value, "options", &["signal", "onProgress"])?;
    let on_progress = js::opt_function(field(&o, "onProgress"), "options.onProgress")?;
    let signal = js::opt_signal(field(&o, "signal"), "options.signal")?;
    Ok(SyncArgs {
        transport: JsTransport {
            exchange,
            signal,
            failure: RefCell::new(None),
        },
        on_progress,
    })
}

impl JsTransport {
    fn aborted(&self) -> bool {
        self.signal.as_ref().is_some_and(|s| {
            Reflect::get(s, &JsValue::from_str("aborted")).map_or(true, |a| a.is_truthy())
        })
    }

    /// The error a failed exchange threw, once: `error.cause` of the `STORAGE` it became.
    pub fn take_failure(&self) -> Option<JsValue> {
        self.failure.borrow_mut().take()
    }

    fn failed(&self, thrown: JsValue) -> VaultError {
        if self.aborted() {
            return VaultError::Aborted;
        }
        // The message of what was thrown is not repeated (it may quote the URL and its query);
        // the error itself is `error.cause`.
        let name = Reflect::get(&thrown, &JsValue::from_str("name"))
            .ok()
            .and_then(|n| n.as_string())
            .filter(|n| !n.is_empty() && n.len() <= 64);
        *self.failure.borrow_mut() = Some(thrown);
        // `error.cause` is set from `failure` by the binding (`sync`), not through `original`:
        // the engine may end the sync with another error than this one.
        VaultError::Storage(Box::new(crate::error::StorageFailure {
            original: Default::default(),
            name,
            message: "the sync server could not be reached (error.cause holds the failure); check the connection and sync again".into(),
        }))
    }
}

#[async_trait(?Send)]
impl SyncTransport for JsTransport {
    async fn exchange(&self, body: String) -> Result<(u16, Vec<u8>)> {
        // SYNC.md: an abort takes effect between pages; each page the engine applied is whole.
        if self.aborted() {
            return Err(VaultError::Aborted);
        }
        let called = self
            .exchange
            .call1(&JsValue::UNDEFINED, &JsValue::from_str(&body));
        drop(body);
        let answer = match called {
            Ok(value) => JsFuture::from(Promise::resolve(&value)).await,
            Err(thrown) => Err(thrown),
        };
        let answer = answer.map_err(|thrown| self.failed(thrown))?;
        let status = Reflect::get(&answer, &JsValue::from_str("status"))
            .ok()
            .and_then(|s| s.as_f64())
            .filter(|s| s.fract() == 0.0 && (100.0..=599.0).contains(s))
            .ok_or_else(|| VaultError::storage("the sync server's answer has no HTTP status"))?;
        // The TypeScript layer stops reading a body at the cap and says so with `tooLarge`.
        let too_large =
            Reflect::get(&answer, &JsValue::from_str("tooLarge")).is_ok_and(|t| t.is_truthy());
        if too_large {
            return Err(VaultError::storage(
                "the sync server's answer is larger than the protocol allows (4 MiB); check that the remote is a vaultstore sync server",
            ));
        }
        let bytes = Reflect::get(&answer, &JsValue::from_str("body"))
            .ok()
            .and_then(|b| b.dyn_into::<Uint8Array>().ok())
            .ok_or_else(|| VaultError::storage("the sync server's answer has no body"))?;
        if u64::from(bytes.length()) > wire::MAX_BODY_BYTES {
            return Err(VaultError::storage(
                "the sync server's answer is larger than the protocol allows",
            ));
        }
        Ok((status as u16, bytes.to_vec()))
    }
}

/// `{ pulled, pushed, conflicts, stranded }`.
pub fn report(r: &SyncReport) -> JsValue {
    let o = Object::new();
    js::set(&o, "pulled", &JsValue::from_f64(r.pulled as f64));
    js::set(&o, "pushed", &JsValue::from_f64(r.pushed as f64));
    js::set(&o, "conflicts", &JsValue::from_f64(r.conflicts as f64));
    js::set(&o, "stranded", &js::string_array(&r.stranded));
    o.into()
}

/// `[status, body]` of a response.
#[cfg(any(feature = "gluesql", feature = "sql"))]
pub fn answer(status: u16, body: &str) -> JsValue {
    let a = js_sys::Array::new();
    a.push(&JsValue::from_f64(f64::from(status)));
    a.push(&JsValue::from_str(body));
    a.into()
}

/// The refusal a request gets before its body is read (FORMAT.md "Sync", Transport): a method
/// other than `POST` (405), a content type other than JSON (415), a body over the cap (413), as
/// declared by `Content-Length` or as read so far; a body that could not be read (400).
/// `None` when the request may go on.
#[cfg(any(feature = "gluesql", feature = "sql"))]
pub fn refusal(
    method: &str,
    content_type: Option<&str>,
    length: Option<f64>,
    unreadable: bool,
) -> Option<WireError> {
    if method != "POST" {
        return Some(WireError::MethodNotAllowed);
    }
    if let Err(e) = wire::check_content_type(content_type) {
        return Some(e);
    }
    match length {
        // Any length over the cap, and anything that is not a byte count, is refused as large.
        Some(n) if !(n >= 0.0 && n <= wire::MAX_BODY_BYTES as f64) => {
            wire::check_body_len(wire::MAX_BODY_BYTES + 1).err()
        }
        // A client that went away mid-upload, or an app that read the body before passing the
        // request on: a bad request like any other, answered and reported, not a server failure.
        _ if unreadable => Some(WireError::Malformed(
            "the request's body could not be read: it broke off, or it was read before syncHandle (pass the request unread, or a clone())".to_owned(),
        )),
        _ => None,
    }
}
