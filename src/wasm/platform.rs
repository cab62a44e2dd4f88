//! Host services from JavaScript: WebCrypto PBKDF2, a clock-free yield to the event loop, and
//! rekey progress / `AbortSignal` cancellation.

use crate::crypto::{KdfParams, MasterKey, derive_password_key};
use crate::error::Result;
use crate::platform::{PasswordKdf, Scheduler};
use crate::vault::RekeyObserver;
use async_trait::async_trait;
use js_sys::{Array, Function, Object, Promise, Reflect, Uint8Array};
use std::cell::{Cell, RefCell};
use std::rc::Rc;
use wasm_bindgen::closure::Closure;
use wasm_bindgen::{JsCast, JsValue};
use wasm_bindgen_futures::JsFuture;

fn get(target: &JsValue, key: &str) -> Option<JsValue> {
    Reflect::get(target, &JsValue::from_str(key))
        .ok()
        .filter(|v| !v.is_undefined() && !v.is_null())
}

/// PBKDF2 through `crypto.subtle` where the runtime has it (2-6x faster than wasm), with the
/// Rust implementation as the fallback whenever WebCrypto is missing or refuses (Cloudflare
/// Workers reject more than 100,000 iterations). The derived bits arrive in a JavaScript
/// `ArrayBuffer`; they are copied into wasm memory and the buffer is zero-filled at once.
#[derive(Debug, Default, Clone, Copy)]
pub struct WebCryptoKdf;

impl WebCryptoKdf {
    /// Derive with WebCrypto only; `None` when the runtime cannot.
    pub async fn derive_webcrypto(password: &str, params: &KdfParams) -> Option<MasterKey> {
        let subtle = get(&js_sys::global(), "crypto").and_then(|c| get(&c, "subtle"))?;
        let import_key: Function = get(&subtle, "importKey")?.dyn_into().ok()?;
        let derive_bits: Function = get(&subtle, "deriveBits")?.dyn_into().ok()?;

        let password_bytes = Uint8Array::from(password.as_bytes());
        let usages: Array = [JsValue::from_str("deriveBits")].into_iter().collect();
        let args: Array = [
            JsValue::from_str("raw"),
            password_bytes.clone().into(),
            JsValue::from_str("PBKDF2"),
            JsValue::FALSE,
            usages.into(),
        ]
        .into_iter()
        .collect();
        let imported = import_key
            .apply(&subtle, &args)
            .ok()?
            .dyn_into::<Promise>()
            .ok();
        let key = match imported {
            Some(p) => JsFuture::from(p).await.ok(),
            None => None,
        };
        password_bytes.fill(0, 0, password_bytes.length());
        let key = key?;

        let algorithm = Object::new();
        let salt = Uint8Array::from(&params.salt[..]);
        for (k, v) in [
            ("name", JsValue::from_str("PBKDF2")),
            ("hash", JsValue::from_str("SHA-256")),
            ("salt", salt.into()),
            (
                "iterations",
                JsValue::from_f64(f64::from(params.iterations)),
            ),
        ] {
            Reflect::set(&algorithm, &JsValue::from_str(k), &v).ok()?;
        }
        let args: Array = [algorithm.into(), key, JsValue::from_f64(256.0)]
            .into_iter()
            .collect();
        let promise: Promise = derive_bits.apply(&subtle, &args).ok()?.dyn_into().ok()?;
        let buffer = JsFuture::from(promise).await.ok()?;
        let view = Uint8Array::new(&buffer);
        if view.length() != 32 {
            return None;
        }
        let key = MasterKey::filled_by(|k| view.copy_to(k));
        view.fill(0, 0, 32);
        Some(key)
    }
}

#[async_trait(?Send)]
impl PasswordKdf for WebCryptoKdf {
    async fn derive(&self, password: &str, params: &KdfParams) -> Result<MasterKey> {
        match Self::derive_webcrypto(password, params).await {
            Some(key) => Ok(key),
            None => Ok(derive_password_key(password, params)),
        }
    }
}

/// Yields to the host's event loop with a new task ([`crate::platform::sleep_ms`]`(0)`), so
/// timers, `AbortSignal`s and rendering get their turn during a long rekey; runs key-cache
/// sweeps on a timer.
#[derive(Default)]
pub struct TimerScheduler {
    /// Timers set and not yet fired, by a sequence number, with their callbacks: dropping a
    /// callback frees it, which a cleared timer would otherwise never do.
    pending: Rc<RefCell<Vec<Timer>>>,
    next: Cell<u64>,
}

/// A timer's sequence number, its id from `setTimeout`, and its callback.
type Timer = (u64, JsValue, Closure<dyn FnMut()>);

impl std::fmt::Debug for TimerScheduler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TimerScheduler")
    }
}

/// `setTimeout` allows at most 2^31 - 1 ms; a later sweep is simply done sooner.
const MAX_TIMER_MS: u64 = 0x7fff_ffff;

#[async_trait(?Send)]
impl Scheduler for TimerScheduler {
    async fn yield_now(&self) {
        crate::platform::sleep_ms(0).await;
    }

    fn after(&self, delay_ms: u64, task: Box<dyn FnOnce()>) {
        let global = js_sys::global();
        let Some(set_timeout) =
            get(&global, "setTimeout").and_then(|f| f.dyn_into::<Function>().ok())
        else {
            return;
        };
        let seq = self.next.get();
        self.next.set(seq + 1);
        let pending = Rc::downgrade(&self.pending);
        let mut task = Some(task);
        let callback = Closure::<dyn FnMut()>::new(move || {
            // Out of the list first; the callback itself is freed once this call returns
            // (wasm-bindgen defers freeing a closure that is running).
            let entry = pending.upgrade().and_then(|pending| {
                let mut pending = pending.borrow_mut();
                let at = pending.iter().position(|(s, _, _)| *s == seq)?;
                Some(pending.remove(at))
            });
            if let Some(task) = task.take() {
                task();
            }
            drop(entry);
        });
        let delay = JsValue::from_f64(delay_ms.min(MAX_TIMER_MS) as f64);
        let Ok(timer) = set_timeout.call2(&JsValue::UNDEFINED, callback.as_ref(), &delay) else {
            return;
        };
        // A sweep is no reason to keep a process alive: Node and Bun return a timer object
        // with `unref`, Deno a number that `Deno.unrefTimer` takes.
        if let Some(unref) = get(&timer, "unref").and_then(|f| f.dyn_into::<Function>().ok()) {
            let _ = unref.call0(&timer);
        } else if let Some(deno) = get(&global, "Deno")
            && let Some(unref) =
                get(&deno, "unrefTimer").and_then(|f| f.dyn_into::<Function>().ok())
        {
            let _ = unref.call1(&deno, &timer);
        }
        self.pending.borrow_mut().push((seq, timer, callback));
    }

    fn cancel_pending(&self) {
        let timers = std::mem::take(&mut *self.pending.borrow_mut());
        let clear =
            get(&js_sys::global(), "clearTimeout").and_then(|f| f.dyn_into::<Function>().ok());
        for (_, timer, callback) in timers {
            let cleared = clear
                .as_ref()
                .is_some_and(|clear| clear.call1(&JsValue::UNDEFINED, &timer).is_ok());
            if !cleared {
                // The timer will still fire, so its callback must stay callable (the key it
                // would sweep is gone already); a cleared one can never run and is freed.
                callback.forget();
            }
        }
    }
}

/// Milliseconds from `performance.now()` where the host has it (sub-millisecond in browsers and
/// Node), else `Date.now()`: for event durations, never for stored times.
pub fn now_ms() -> f64 {
    get(&js_sys::global(), "performance")
        .and_then(|p| {
            let now = get(&p, "now")?.dyn_into::<Function>().ok()?;
            now.call0(&p).ok()?.as_f64()
        })
        .unwrap_or_else(js_sys::Date::now)
}

/// `onProgress` and `signal` of `bulkRekey`.
pub struct JsRekeyObserver {
    pub on_progress: Option<Function>,
    /// An `AbortSignal`; read through `Reflect`, so a Proxy that throws reads as "aborted".
    pub signal: Option<JsValue>,
}

impl RekeyObserver for JsRekeyObserver {
    fn progress(&self, done: u64, total: u64) {
        if let Some(f) = &self.on_progress {
            // A throwing progress callback must not break the rekey; its error is dropped.
            let _ = f.call2(
                &JsValue::UNDEFINED,
                &JsValue::from_f64(done as f64),
                &JsValue::from_f64(total as f64),
            );
        }
    }

    fn is_cancelled(&self) -> bool {
        self.signal.as_ref().is_some_and(|s| {
            Reflect::get(s, &JsValue::from_str("aborted"))
                .map_or(true, |aborted| aborted.is_truthy())
        })
    }
}
