//! # vaultstore-wasm
//!
//! An encrypted token vault for browsers and edge runtimes. This first layer is the key hierarchy
//! and the `vs1:` envelope of `src/FORMAT.md`.

// Nothing reachable from JavaScript may panic: a panic poisons the wasm instance for every later call.
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used, clippy::panic))]

pub mod crypto;
pub mod error;

pub use error::{ErrorCode, NotFoundReason, Result, VaultError};
