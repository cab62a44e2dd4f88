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
#[cfg(all(feature = "wasm", target_arch = "wasm32"))]
pub(crate) async fn sleep_ms(ms: u32) {
    use wasm_bindgen::{JsCast, JsValue};
    let set_timeout = js_sys::Reflect::get(&js_sys::global(), &JsValue::from_str("setTimeout"))
        .ok()
        .and_then(|f| f.dyn_into::<js_sys::Function>().ok());
    let Some(set_timeout) = set_timeout else {
        return;
    };
    let promise = js_sys::Promise::new(&mut |resolve, _reject| {
        let _ = set_timeout.call2(
            &JsValue::UNDEFINED,
            &resolve,
            &JsValue::from_f64(f64::from(ms)),
        );
    });
    let _ = wasm_bindgen_futures::JsFuture::from(promise).await;
}
