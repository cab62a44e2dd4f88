//! Opening, settings, the key cache, lock and close, and concurrent calls.
#![cfg(all(feature = "gluesql", not(target_arch = "wasm32")))]

mod common;

use std::sync::{Arc, Mutex};

use common::*;
use futures::channel::oneshot;
use futures::future::join_all;
use vaultstore_wasm::crypto::{KdfParams, MasterKey};
use vaultstore_wasm::platform::{PasswordKdf, Platform, RustKdf};
use vaultstore_wasm::storage::memory::GlueMemoryStorage;
use vaultstore_wasm::{CreateOptions, ErrorCode, RecordQuery, Vault, VaultOptions};

#[test]
fn a_new_vault_has_version_1_and_is_not_migrated() {
    run(async {
        let v = vault().await;
        assert_eq!(v.get_vault_version().await.unwrap(), "1");
        assert!(!v.is_vault_migrated().await.unwrap());
        assert_eq!(
            v.get_vault_setting("migrated").await.unwrap().as_deref(),
            Some("false")
        );
        v.mark_vault_migrated().await.unwrap();
        assert!(v.is_vault_migrated().await.unwrap());
        v.set_vault_version("2.1").await.unwrap();
        assert_eq!(v.get_vault_version().await.unwrap(), "2.1");
        v.set_vault_setting("theme", "dark").await.unwrap();
        assert_eq!(
            v.get_vault_setting("theme").await.unwrap().as_deref(),
            Some("dark")
        );
        assert_eq!(v.get_vault_setting("missing").await.unwrap(), None);
        let kdf = v.get_vault_setting("kdf").await.unwrap().unwrap();
        assert!(
            kdf.starts_with(r#"{"alg":"pbkdf2-sha256","iterations":1000,"salt":""#),
            "{kdf}"
        );
        code(
            v.set_vault_setting("kdf", "{}").await,
            ErrorCode::InvalidArgument,
        );
        code(
            v.set_vault_setting("", "x").await,
            ErrorCode::InvalidArgument,
        );
        code(v.get_vault_setting("").await, ErrorCode::InvalidArgument);
        code(v.set_vault_version("").await, ErrorCode::InvalidArgument);
    });
}

#[test]
fn kdf_iterations_are_bounded_and_kept_by_existing_vaults() {
    run(async {
        for bad in [0, 999, 10_000_001] {
            let result = Vault::open(
                Box::new(GlueMemoryStorage::new().unwrap()),
                VaultOptions {
                    kdf_iterations: bad,
                    ..options()
                },
            )
            .await;
            code(result, ErrorCode::InvalidArgument);
        }
        let v = vault().await;
        assert_eq!(v.kdf_iterations(), 1000);
        let snapshot = v.export_snapshot().await.unwrap();
        let (reopened, _) = vault_with(VaultOptions {
            kdf_iterations: 5000,
            // The default floor would be 5,000 (see the KDF floor test below).
            min_kdf_iterations: Some(1000),
            snapshot: Some(snapshot),
            ..options()
        })
        .await;
        assert_eq!(
            reopened.kdf_iterations(),
            1000,
            "an existing vault keeps its KDF parameters"
        );
        let fresh = Vault::open(
            Box::new(GlueMemoryStorage::new().unwrap()),
            VaultOptions::default(),
        )
        .await
        .unwrap();
        assert_eq!(fresh.kdf_iterations(), 600_000, "the default");
    });
}

/// The stored `kdf` row is not authenticated: anyone who can write the storage could lower the
/// iteration count so that later values are cheap to attack. `minKdfIterations` refuses that.
#[test]
fn a_weakened_or_cheap_kdf_is_refused_below_the_floor() {
    run(async {
        let storage = Arc::new(GlueMemoryStorage::new().unwrap());
        let open = |kdf_iterations: u32, min: Option<u32>| {
            let storage = storage.clone();
            async move {
                Vault::open(
                    Box::new(storage),
                    VaultOptions {
                        kdf_iterations,
                        min_kdf_iterations: min,
                        ..options()
                    },
                )
                .await
            }
        };
        // Created with 1,000 iterations on purpose (the floor defaults to kdfIterations).
        let v = open(1_000, None).await.unwrap();
        let t = v
            .token_create("v", &pw(PASSWORD), &CreateOptions::default())
            .await
            .unwrap();
        // An app that asks for 600,000 by default refuses it, and says how to open it anyway.
        let e = code(open(600_000, None).await, ErrorCode::InvalidArgument);
        let message = e.to_string();
        assert!(message.contains("1000 PBKDF2 iterations"), "{message}");
        assert!(message.contains("minKdfIterations: 1000"), "{message}");
        let reopened = open(600_000, Some(1_000)).await.unwrap();
        assert_eq!(reopened.token_read(&t, &pw(PASSWORD)).await.unwrap(), "v");
        // The same for a snapshot whose kdf row was lowered.
        let snapshot = v.export_snapshot().await.unwrap();
        let e = code(
            Vault::open(
                Box::new(GlueMemoryStorage::new().unwrap()),
                VaultOptions {
                    kdf_iterations: 200_000,
                    snapshot: Some(snapshot.clone()),
                    ..options()
                },
            )
            .await,
            ErrorCode::InvalidArgument,
        );
        assert!(
            e.to_string()
                .contains("the snapshot derives keys with 1000"),
            "{e}"
        );
        // The floor is bounded like the iteration count itself.
        for bad in [0, 999, 10_000_001] {
            code(open(1_000, Some(bad)).await, ErrorCode::InvalidArgument);
        }
        // A new vault below its own floor is the options' mistake, said so, and refused before
        // anything is written: the same store then opens with a count the floor allows.
        let fresh = Arc::new(GlueMemoryStorage::new().unwrap());
        let with = |kdf_iterations: u32| VaultOptions {
            kdf_iterations,
            min_kdf_iterations: Some(5_000),
            ..options()
        };
        let e = code(
            Vault::open(Box::new(fresh.clone()), with(1_000)).await,
            ErrorCode::InvalidArgument,
        );
        assert!(
            e.to_string()
                .contains("kdfIterations (1000) is below minKdfIterations (5000)"),
            "{e}"
        );
        Vault::open(Box::new(fresh), with(5_000))
            .await
            .expect("nothing was stored by the refused open");
    });
}

#[test]
fn two_memory_vaults_never_share_state() {
    run(async {
        let a = vault().await;
        let b = vault().await;
        let t = a
            .token_create("v", &pw(PASSWORD), &CreateOptions::default())
            .await
            .unwrap();
        assert!(!b.token_exists(&t).await.unwrap());
        assert_ne!(
            a.get_vault_setting("kdf").await.unwrap(),
            b.get_vault_setting("kdf").await.unwrap(),
            "own salts"
        );
    });
}

#[test]
fn a_password_is_derived_once_per_unlock() {
    run(async {
        let (v, clock) = vault_with(VaultOptions {
            key_cache_ttl_ms: 1_000,
            ..options()
        })
        .await;
        let t = v
            .token_create("v", &pw(PASSWORD), &CreateOptions::default())
            .await
            .unwrap();
        for _ in 0..5 {
            v.token_read(&t, &pw(PASSWORD)).await.unwrap();
        }
        assert_eq!(v.key_derivations(), 1);
        clock.advance(1_001);
        v.token_read(&t, &pw(PASSWORD)).await.unwrap();
        assert_eq!(v.key_derivations(), 2, "the TTL expired");
        v.lock();
        v.token_read(&t, &pw(PASSWORD)).await.unwrap();
        assert_eq!(v.key_derivations(), 3, "lock() wiped the cache");
        // A failed read caches nothing wrong: the right password still works afterwards.
        code(
            v.token_read(&t, &pw(OTHER)).await,
            ErrorCode::InvalidPassword,
        );
        assert_eq!(v.token_read(&t, &pw(PASSWORD)).await.unwrap(), "v");
        // Missing tokens fail before any derivation.
        let before = v.key_derivations();
        code(
            v.token_read("tk_missing", &pw("never derived pw")).await,
            ErrorCode::RecordNotFound,
        );
        assert_eq!(v.key_derivations(), before);
    });
}

#[test]
fn a_zero_ttl_never_caches() {
    run(async {
        let (v, _) = vault_with(VaultOptions {
            key_cache_ttl_ms: 0,
            ..options()
        })
        .await;
        let t = v
            .token_create("v", &pw(PASSWORD), &CreateOptions::default())
            .await
            .unwrap();
        v.token_read(&t, &pw(PASSWORD)).await.unwrap();
        v.token_read(&t, &pw(PASSWORD)).await.unwrap();
        assert_eq!(v.key_derivations(), 3);
    });
}

#[test]
fn concurrent_calls_are_safe_and_derive_once() {
    run(async {
        let v = vault().await;
        let creates = (0..100).map(|i| {
            let v = &v;
            async move {
                (
                    i,
                    v.token_create(
                        &format!("value {i}"),
                        &pw(PASSWORD),
                        &CreateOptions::default(),
                    )
                    .await,
                )
            }
        });
        let created = join_all(creates).await;
        assert_eq!(
            v.key_derivations(),
            1,
            "100 concurrent calls with one password derive once"
        );
        let reads = created.iter().map(|(i, t)| {
            let v = &v;
            let t = t.as_ref().unwrap().clone();
            async move { (*i, v.token_read(&t, &pw(PASSWORD)).await.unwrap()) }
        });
        for (i, value) in join_all(reads).await {
            assert_eq!(value, format!("value {i}"));
        }
        assert_eq!(v.record_count(&RecordQuery::default()).await.unwrap(), 100);
    });
}

#[test]
fn after_close_everything_is_closed_but_lock_and_close() {
    run(async {
        let v = vault().await;
        let t = v
            .token_create("v", &pw(PASSWORD), &CreateOptions::default())
            .await
            .unwrap();
        v.close().await;
        v.close().await;
        v.lock();
        assert!(v.is_closed());
        code(v.token_read(&t, &pw(PASSWORD)).await, ErrorCode::Closed);
        code(
            v.token_create("x", &pw(PASSWORD), &CreateOptions::default())
                .await,
            ErrorCode::Closed,
        );
        code(v.token_exists(&t).await, ErrorCode::Closed);
        code(
            v.record_list(&RecordQuery::default()).await,
            ErrorCode::Closed,
        );
        code(
            v.record_count(&RecordQuery::default()).await,
            ErrorCode::Closed,
        );
        code(v.tokens_expired_delete().await, ErrorCode::Closed);
        code(v.get_vault_version().await, ErrorCode::Closed);
        code(v.export_snapshot().await, ErrorCode::Closed);
        code(
            v.bulk_rekey(&pw(PASSWORD), &pw(OTHER), &Default::default())
                .await,
            ErrorCode::Closed,
        );
        let e = code(v.token_delete(&t).await, ErrorCode::Closed);
        assert!(e.to_string().contains("open a new Vault"), "{e}");
    });
}

/// Run `operation` and, when it reaches the identity lookup `probe` pauses, `v.lock()`.
async fn lock_during<T>(
    v: &Vault,
    probe: &Probe,
    operation: impl std::future::Future<Output = T>,
) -> T {
    let (reached, go) = probe.pause_next_find();
    let (result, ()) = futures::future::join(operation, async {
        reached.await.expect("the operation looked its identity up");
        v.lock();
        let _ = go.send(());
    })
    .await;
    result
}

/// API.md `lock()`: a read that already holds its (cached) master key when `lock()` runs does
/// not go on to use it: it rejects `ABORTED`, and the next call derives again.
#[test]
fn a_read_holding_a_key_when_lock_runs_uses_it_no_more() {
    run(async {
        let (v, _, probe) = probed_vault(VaultOptions {
            password_identity: true,
            ..options()
        })
        .await;
        let t = v
            .token_create("v", &pw(PASSWORD), &CreateOptions::default())
            .await
            .unwrap();
        assert_eq!(
            v.key_derivations(),
            1,
            "the read below finds the key cached"
        );
        let read = lock_during(&v, &probe, v.token_read(&t, &pw(PASSWORD))).await;
        let e = code(read, ErrorCode::Aborted);
        assert!(e.to_string().contains("locked"), "{e}");
        assert_eq!(v.key_derivations(), 1, "the read did not derive again");
        assert_eq!(v.token_read(&t, &pw(PASSWORD)).await.unwrap(), "v");
        assert_eq!(v.key_derivations(), 2, "the next call derives again");
        let read = lock_during(&v, &probe, v.tokens_read(&[t.as_str()], &pw(PASSWORD))).await;
        code(read, ErrorCode::Aborted);
        assert_eq!(v.key_derivations(), 2);
    });
}

/// The same for writes: a create or update holding its key when `lock()` runs seals nothing
/// with it and writes nothing.
#[test]
fn a_write_holding_a_key_when_lock_runs_writes_nothing() {
    run(async {
        let (v, _, probe) = probed_vault(VaultOptions {
            password_identity: true,
            ..options()
        })
        .await;
        let t = v
            .token_create("v", &pw(PASSWORD), &CreateOptions::default())
            .await
            .unwrap();
        let (secret, create_options) = (pw(PASSWORD), CreateOptions::default());
        let create = v.token_create("late", &secret, &create_options);
        code(lock_during(&v, &probe, create).await, ErrorCode::Aborted);
        let update = v.token_update(&t, "late", &secret);
        code(lock_during(&v, &probe, update).await, ErrorCode::Aborted);
        assert_eq!(v.record_count(&RecordQuery::default()).await.unwrap(), 1);
        assert_eq!(v.token_read(&t, &pw(PASSWORD)).await.unwrap(), "v");
    });
}

type Stop = Arc<Mutex<Option<(oneshot::Sender<()>, oneshot::Receiver<()>)>>>;

/// A KDF that stops its next derivation until the test says go.
struct PausedKdf(Stop);

#[async_trait::async_trait]
impl PasswordKdf for PausedKdf {
    async fn derive(
        &self,
        password: &str,
        params: &KdfParams,
    ) -> vaultstore_wasm::Result<MasterKey> {
        let stop = self.0.lock().unwrap().take();
        if let Some((reached, go)) = stop {
            let _ = reached.send(());
            let _ = go.await;
        }
        RustKdf.derive(password, params).await
    }
}

/// A derivation that `lock()` overtakes is thrown away and made again: the call succeeds with
/// a key derived after the lock, and the key from before is never cached.
#[test]
fn a_derivation_overtaken_by_lock_is_made_again() {
    run(async {
        let (reached, on_reached) = oneshot::channel();
        let (go, on_go) = oneshot::channel();
        let stop = Stop::default();
        let platform = Platform {
            kdf: Box::new(PausedKdf(stop.clone())),
            ..Platform::default()
        };
        let storage = Box::new(GlueMemoryStorage::new().unwrap());
        let v = Vault::open_with(storage, options(), platform)
            .await
            .unwrap();
        let t = v
            .token_create("v", &pw(PASSWORD), &CreateOptions::default())
            .await
            .unwrap();
        v.lock();
        *stop.lock().unwrap() = Some((reached, on_go));
        let (read, ()) = futures::future::join(v.token_read(&t, &pw(PASSWORD)), async {
            on_reached.await.unwrap();
            v.lock();
            let _ = go.send(());
        })
        .await;
        assert_eq!(read.unwrap(), "v");
        assert_eq!(v.key_derivations(), 3, "derived again after the lock");
    });
}
