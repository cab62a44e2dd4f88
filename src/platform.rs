//! What the vault needs from its host runtime: a clock, a PBKDF2 implementation (WebCrypto where
//! the runtime has it) and a way to let the host's event loop run during long work.

use crate::crypto::{KdfParams, MasterKey, derive_password_key};
use crate::error::Result;
use crate::storage::MaybeSendSync;
use async_trait::async_trait;

/// Milliseconds since the epoch.
pub trait Clock: MaybeSendSync {
    fn now_ms(&self) -> i64;
}

/// The system clock (`Date.now()` on wasm, where `SystemTime` is unavailable).
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_ms(&self) -> i64 {
        #[cfg(target_arch = "wasm32")]
        {
            js_sys::Date::now() as i64
        }
        #[cfg(not(target_arch = "wasm32"))]
        {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as i64)
        }
    }
}

/// PBKDF2-HMAC-SHA256 for password master keys.
#[cfg_attr(target_arch = "wasm32", async_trait(?Send))]
#[cfg_attr(not(target_arch = "wasm32"), async_trait)]
pub trait PasswordKdf: MaybeSendSync {
    async fn derive(&self, password: &str, params: &KdfParams) -> Result<MasterKey>;
}

/// The Rust implementation: the reference, and the fallback wherever WebCrypto is missing.
#[derive(Debug, Default, Clone, Copy)]
pub struct RustKdf;

#[cfg_attr(target_arch = "wasm32", async_trait(?Send))]
#[cfg_attr(not(target_arch = "wasm32"), async_trait)]
impl PasswordKdf for RustKdf {
    async fn derive(&self, password: &str, params: &KdfParams) -> Result<MasterKey> {
        Ok(derive_password_key(password, params))
    }
}

/// Lets the host run between chunks of long work (a browser's event loop, so that an
/// `AbortSignal` can fire and the page stays responsive), and run a task later (expired keys
/// are wiped when they expire, not only on the next call). Natively there is nothing to do:
/// expired keys are still swept on every access.
#[cfg_attr(target_arch = "wasm32", async_trait(?Send))]
#[cfg_attr(not(target_arch = "wasm32"), async_trait)]
pub trait Scheduler: MaybeSendSync {
    async fn yield_now(&self);

    /// Run `task` in about `delay_ms` milliseconds, without keeping the host alive for it.
    fn after(&self, delay_ms: u64, task: Box<dyn FnOnce()>) {
        let _ = (delay_ms, task);
    }

    /// Drop every task [`Scheduler::after`] scheduled that has not run yet. A locked or closed
    /// vault has no keys left to sweep, and a pending timer keeps some hosts alive (Deno,
    /// edge-runtime) where it cannot be unreferenced.
    fn cancel_pending(&self) {}
}

#[derive(Debug, Default, Clone, Copy)]
pub struct NoYield;

#[cfg_attr(target_arch = "wasm32", async_trait(?Send))]
#[cfg_attr(not(target_arch = "wasm32"), async_trait)]
impl Scheduler for NoYield {
    async fn yield_now(&self) {}
}

/// The host services one vault uses.
pub struct Platform {
    pub clock: std::sync::Arc<dyn Clock>,
    pub kdf: Box<dyn PasswordKdf>,
    pub scheduler: Box<dyn Scheduler>,
}

impl Platform {
    /// A `'static` handle on the clock, for tasks that run later.
    pub(crate) fn clock_handle(&self) -> impl Fn() -> i64 + 'static {
        let clock = self.clock.clone();
        move || clock.now_ms()
    }
}

impl Default for Platform {
    fn default() -> Self {
        Platform {
            clock: std::sync::Arc::new(SystemClock),
            kdf: Box::new(RustKdf),
            scheduler: Box::new(NoYield),
        }
    }
}

/// Resolve after `ms` milliseconds through the host's `setTimeout`, which browsers, Node and
/// workers all have; a macrotask, so timers, events and `AbortSignal`s get their turn.
///
/// `0` resolves in a new task as soon as the tasks already due have run, through a
/// `MessageChannel` message where there is one (browsers, Node, Deno, workers): HTML clamps a
/// `setTimeout` nested five deep to 4 ms, and a rekey's yields are such a chain, so a third of a
/// long rotation's sealing in Chromium was spent waiting on the clamp. A message is as fair to
/// due timers as a timer is (React's scheduler yields the same way), and is not throttled in a
/// background tab.
#[cfg(all(feature = "wasm", target_arch = "wasm32"))]
pub(crate) async fn sleep_ms(ms: u32) {
    use js_sys::{Function, Reflect};
    use wasm_bindgen::{JsCast, JsValue};
    let global = js_sys::global();
    let get = |target: &JsValue, key: &str| Reflect::get(target, &JsValue::from_str(key)).ok();
    let function = |value: Option<JsValue>| value.and_then(|f| f.dyn_into::<Function>().ok());
    let ports = if ms == 0 {
        function(get(&global, "MessageChannel"))
            .and_then(|c| Reflect::construct(&c, &js_sys::Array::new()).ok())
            .and_then(|channel| Some((get(&channel, "port1")?, get(&channel, "port2")?)))
    } else {
        None
    };
    let set_timeout = function(get(&global, "setTimeout"));
    if ports.is_none() && set_timeout.is_none() {
        return;
    }
    let promise = js_sys::Promise::new(&mut |resolve, _reject| {
        if let Some((receiver, sender)) = &ports
            && Reflect::set(receiver, &JsValue::from_str("onmessage"), &resolve).is_ok()
            && function(get(sender, "postMessage"))
                .is_some_and(|post| post.call1(sender, &JsValue::NULL).is_ok())
        {
            return;
        }
        let sent = set_timeout.as_ref().is_some_and(|set_timeout| {
            set_timeout
                .call2(
                    &JsValue::UNDEFINED,
                    &resolve,
                    &JsValue::from_f64(f64::from(ms)),
                )
                .is_ok()
        });
        if !sent {
            // Nothing will call back: go on at once rather than wait forever.
            let _ = resolve.call0(&JsValue::UNDEFINED);
        }
    });
    let _ = wasm_bindgen_futures::JsFuture::from(promise).await;
    // A port with a listener keeps a worker (and Node) alive until it is closed.
    for port in ports.iter().flat_map(|(a, b)| [a, b]) {
        if let Some(close) = function(get(port, "close")) {
            let _ = close.call0(port);
        }
    }
}
