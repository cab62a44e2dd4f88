//! # vaultstore-wasm
//!
//! An encrypted token vault for browsers and edge runtimes. Hand it a secret value and a password
//! (or a 32-byte key) and get back an opaque token like `tk_7f3k…`; the token and the password give
//! the value back. Values are sealed with AES-256-GCM under keys derived with PBKDF2-HMAC-SHA256
//! (see `src/FORMAT.md`, also the docs of [`crypto`]); storage only ever sees envelopes.
//!
//! ```
//! # #[cfg(feature = "gluesql")] {
//! use vaultstore_wasm::{CreateOptions, Secret, Vault, VaultOptions};
//! use vaultstore_wasm::storage::memory::GlueMemoryStorage;
//!
//! # futures::executor::block_on(async {
//! let storage = Box::new(GlueMemoryStorage::new().unwrap());
//! let options = VaultOptions { kdf_iterations: 1_000, ..VaultOptions::default() };
//! let vault = Vault::open(storage, options).await?;
//!
//! let password = Secret::password("correct horse battery");
//! let token = vault.token_create("4111 1111 1111 1111", &password, &CreateOptions::default()).await?;
//! assert!(token.starts_with("tk_") && token.len() == 32);
//! assert_eq!(vault.token_read(&token, &password).await?, "4111 1111 1111 1111");
//!
//! let wrong = Secret::password("not the password");
//! assert_eq!(vault.token_read(&token, &wrong).await.unwrap_err().code().as_str(), "INVALID_PASSWORD");
//! # Ok::<(), vaultstore_wasm::VaultError>(())
//! # }).unwrap();
//! # }
//! ```
//!
//! Layers, each depending only on those below it: `vault` (operations, identities and rekeys
//! included) → `snapshot` → `crypto` (pure key hierarchy and envelopes) and `storage` (the [`storage::Storage`] trait
//! and its backends). The `wasm` module, when built, is the only code that knows JavaScript.

// Nothing reachable from JavaScript may panic: a panic poisons the wasm instance for every later call.
#![cfg_attr(
    not(test),
    deny(clippy::unwrap_used, clippy::expect_used, clippy::panic)
)]

pub mod crypto;
pub mod error;
mod json;
mod keycache;
pub mod platform;
pub mod policy;
pub mod query;
pub mod record;
pub mod secret;
pub mod snapshot;
mod sorting;
pub mod storage;
pub mod sync;
pub mod token;
pub mod vault;
#[cfg(all(feature = "wasm", target_arch = "wasm32"))]
pub mod wasm;

pub use error::{ErrorCode, NotFoundReason, Result, VaultError};
pub use policy::PasswordPolicy;
pub use query::{OrderBy, RecordFilter, RecordQuery};
pub use record::Record;
pub use secret::Secret;
pub use token::{is_token, is_token_valid_length};
pub use vault::{CreateOptions, Vault, VaultOptions};
pub use vault::{RekeyObserver, RekeyOptions, SyncReport, SyncTransport};

// The allocator. The IndexedDB-only engine (no `gluesql`), sized for the browser download, uses
// talc: smaller in wasm than dlmalloc (Cargo.toml), and its records live in IndexedDB, not in its
// heap. An engine with the memory backend keeps every table in the wasm heap, and there talc's
// malloc walks a size bin's free chunks one by one: once the heap is fragmented, a 10,000-record
// rotation spent 49% of its time in `Talc::malloc` (1.41 s against 0.63 s with dlmalloc, which
// also builds a 100,000-record vault in 2.20 s against 2.71 s), so those engines use dlmalloc,
// the standard library's own wasm allocator. `AssumeUnlockable` and `GrowingDlmalloc`'s unlocked
// access are sound because the engine runs single-threaded (no wasm threads are enabled). Both
// grow the heap in large steps (wasm_alloc.rs), not a page at a time as they would on their own.
#[cfg(target_arch = "wasm32")]
mod wasm_alloc;
#[cfg(all(target_arch = "wasm32", not(feature = "gluesql")))]
#[global_allocator]
static ALLOCATOR: talc::Talck<talc::locking::AssumeUnlockable, wasm_alloc::GrowingHandler> =
    talc::Talc::new(wasm_alloc::GrowingHandler::new()).lock();
#[cfg(all(target_arch = "wasm32", feature = "gluesql"))]
#[global_allocator]
static ALLOCATOR: wasm_alloc::GrowingDlmalloc = wasm_alloc::GrowingDlmalloc::new();
