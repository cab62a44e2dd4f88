//! The storage conformance suite on the SQL backend, natively over SQLite (rusqlite), and what
//! only this backend has: namespaces, the schema, index use, and writers on separate connections.
#![cfg(all(feature = "sql", not(target_arch = "wasm32")))]
#![allow(clippy::disallowed_methods)] // clippy.toml's one-sort rule is for the engine's download size

mod conformance;
mod sqlite;

use sqlite::Sqlite;
use vaultstore_wasm::storage::sql::SqlStorage;

async fn sql(_name: &str) -> SqlStorage<Sqlite> {
    SqlStorage::open(Sqlite::memory(), "vaultstore")
        .await
        .expect("the SQL backend creates its tables")
}

storage_conformance!(native, sql);

/// What only the SQL backend has: namespaces, the schema and its version, and writers on
/// separate connections to one database.
mod sql_only {
    use super::sqlite::Sqlite;
    use std::sync::Arc;
    use vaultstore_wasm::storage::sql::{SCHEMA_VERSION, SqlStorage};
    use vaultstore_wasm::storage::{Stamp, Storage, StorageError, WriteOp};
    use vaultstore_wasm::sync::Rev;
    use vaultstore_wasm::{CreateOptions, ErrorCode, Secret, Vault, VaultOptions};

    use super::conformance::{dump, record};

    fn temp_db(case: &str) -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!("vaultstore-sql-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(format!("{case}.db"));
        let _ = std::fs::remove_file(&path);
        path
    }

    fn block_on<T>(f: impl std::future::Future<Output = T>) -> T {
        futures::executor::block_on(f)
    }

    fn stamp() -> Stamp {
        Stamp {
            rev: Rev::new(1, 0, 1).unwrap(),
            at: 1,
        }
    }

    fn options() -> VaultOptions {
        VaultOptions {
            kdf_iterations: 1_000,
            ..VaultOptions::default()
        }
    }

    #[test]
    fn namespaces_share_a_database_and_nothing_else() {
        let db = Arc::new(Sqlite::memory());
        let a = block_on(SqlStorage::open(db.clone(), "a")).unwrap();
        let b = block_on(SqlStorage::open(db.clone(), "b")).unwrap();
        block_on(a.apply(
            stamp(),
            vec![WriteOp::insert_record(record("id-1", "tk_same"))],
        ))
        .unwrap();
        // The same token and id in another namespace are another record.
        block_on(b.apply(
            stamp(),
            vec![WriteOp::insert_record(record("id-1", "tk_same"))],
        ))
        .unwrap();
        block_on(b.apply(stamp(), vec![WriteOp::ClearAll])).unwrap();
        assert_eq!(block_on(dump(&b)), (vec![], vec![]));
        assert_eq!(block_on(dump(&a)).0, vec![record("id-1", "tk_same")]);
        assert_eq!(
            block_on(a.apply(stamp(), vec![WriteOp::ExpectEmpty])).unwrap_err(),
            StorageError::NotEmpty
        );
        block_on(b.apply(stamp(), vec![WriteOp::ExpectEmpty])).unwrap();
    }

    #[test]
    fn the_schema_is_created_once_with_its_version_and_vaultstore_names() {
        let db = Arc::new(Sqlite::memory());
        let s = block_on(SqlStorage::open(db.clone(), "vaultstore")).unwrap();
        assert_eq!(block_on(s.schema_version()).unwrap(), SCHEMA_VERSION);
        // Opening again finds the version row and runs no DDL: the table count is unchanged.
        let objects = || {
            db.with(|c| {
                let mut st = c
                    .prepare("SELECT type, name FROM sqlite_master WHERE name NOT LIKE 'sqlite_%' ORDER BY name")
                    .unwrap();
                st.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)))
                    .unwrap()
                    .map(Result::unwrap)
                    .collect::<Vec<_>>()
            })
        };
        let before = objects();
        assert!(
            before
                .iter()
                .all(|(_, name)| name.starts_with("vaultstore_")),
            "{before:?}"
        );
        let tables: Vec<&str> = before
            .iter()
            .filter(|(t, _)| t == "table")
            .map(|(_, n)| n.as_str())
            .collect();
        assert_eq!(
            tables,
            [
                "vaultstore_counts",
                "vaultstore_guard",
                "vaultstore_meta",
                "vaultstore_records",
                "vaultstore_schema",
                "vaultstore_seq",
                "vaultstore_tombstones"
            ]
        );
        block_on(SqlStorage::open(db.clone(), "other")).unwrap();
        assert_eq!(objects(), before);
        // A database written by a newer release is refused, not damaged.
        db.with(|c| {
            c.execute("UPDATE vaultstore_schema SET version = 99", [])
                .unwrap()
        });
        let err = block_on(SqlStorage::open(db.clone(), "vaultstore")).unwrap_err();
        assert!(
            matches!(&err, StorageError::Backend { name: Some(n), message, .. } if n == "VersionError" && message.contains("newer release")),
            "{err:?}"
        );
    }

    #[test]
    fn two_isolates_opening_a_new_database_agree_on_one_salt() {
        let path = temp_db("salt");
        let open = |path: std::path::PathBuf| {
            std::thread::spawn(move || {
                block_on(async {
                    let storage = SqlStorage::open(Sqlite::file(&path), "vaultstore")
                        .await
                        .unwrap();
                    Vault::open(Box::new(storage), options()).await.unwrap()
                })
            })
        };
        let (a, b) = (open(path.clone()), open(path.clone()));
        let (a, b) = (a.join().unwrap(), b.join().unwrap());
        let password = Secret::password("correct horse battery");
        let token =
            block_on(a.token_create("one salt", &password, &CreateOptions::default())).unwrap();
        assert_eq!(
            block_on(b.token_read(&token, &password)).unwrap(),
            "one salt"
        );
    }

    #[test]
    fn concurrent_writers_on_separate_connections_lose_nothing_and_never_both_win() {
        let path = temp_db("writers");
        block_on(async {
            let s = SqlStorage::open(Sqlite::file(&path), "vaultstore")
                .await
                .unwrap();
            Vault::open(Box::new(s), options()).await.unwrap();
        });
        let password = Secret::password("correct horse battery");
        let handles: Vec<_> = (0..6)
            .map(|i| {
                let path = path.clone();
                std::thread::spawn(move || {
                    let password = Secret::password("correct horse battery");
                    block_on(async {
                        let s = SqlStorage::open(Sqlite::file(&path), "vaultstore")
                            .await
                            .unwrap();
                        let v = Vault::open(Box::new(s), options()).await.unwrap();
                        let custom = v
                            .token_create_custom(
                                "tk_contested",
                                &format!("writer {i}"),
                                &password,
                                None,
                            )
                            .await
                            .map_err(|e| e.code());
                        let mut tokens = Vec::new();
                        for n in 0..25 {
                            tokens.push(
                                v.token_create(
                                    &format!("{i}/{n}"),
                                    &password,
                                    &CreateOptions::default(),
                                )
                                .await
                                .unwrap(),
                            );
                        }
                        (custom, tokens)
                    })
                })
            })
            .collect();
        let results: Vec<_> = handles.into_iter().map(|h| h.join().unwrap()).collect();
        let wins = results.iter().filter(|(c, _)| c.is_ok()).count();
        assert_eq!(wins, 1, "exactly one writer takes the custom token");
        assert!(
            results
                .iter()
                .all(|(c, _)| c.is_ok() || *c == Err(ErrorCode::TokenExists))
        );
        let s = block_on(SqlStorage::open(Sqlite::file(&path), "vaultstore")).unwrap();
        let v = block_on(Vault::open(Box::new(s), options())).unwrap();
        for (i, (_, tokens)) in results.iter().enumerate() {
            let refs: Vec<&str> = tokens.iter().map(String::as_str).collect();
            let read: std::collections::HashMap<String, String> =
                block_on(v.tokens_read(&refs, &password))
                    .unwrap()
                    .into_iter()
                    .collect();
            assert_eq!(read.len(), 25);
            for (n, t) in tokens.iter().enumerate() {
                assert_eq!(read[t], format!("{i}/{n}"));
            }
        }
    }

    /// What a vault costs its database: statements sent (each counts against D1's limit per
    /// invocation), batches, and rows that travel back to the isolate.
    mod costs {
        use std::sync::atomic::AtomicI64;
        use vaultstore_wasm::Secret;
        use vaultstore_wasm::platform::Clock;

        const T0: i64 = 1_700_000_000_000;

        fn pw(p: &str) -> Secret {
            Secret::password(p)
        }

        /// A clock the test moves by hand.
        #[derive(Clone)]
        pub struct TestClock(Arc<AtomicI64>);

        impl TestClock {
            fn new(at: i64) -> Self {
                TestClock(Arc::new(AtomicI64::new(at)))
            }
            fn advance(&self, ms: i64) {
                self.0.fetch_add(ms, Ordering::SeqCst);
            }
        }

        impl Clock for TestClock {
            fn now_ms(&self) -> i64 {
                self.0.load(Ordering::SeqCst)
            }
        }
        use super::super::sqlite::Sqlite;
        use super::options;
        use async_trait::async_trait;
        use std::sync::Arc;
        use std::sync::atomic::{AtomicUsize, Ordering};
        use vaultstore_wasm::platform::Platform;
        use vaultstore_wasm::storage::sql::{
            SqlError, SqlExecutor, SqlStorage, SqlValue, Statement,
        };
        use vaultstore_wasm::vault::PURGE_CHUNK;
        use vaultstore_wasm::{CreateOptions, ErrorCode, RekeyOptions, Vault, VaultOptions};

        #[derive(Clone, Default)]
        pub struct Counter {
            pub statements: Arc<AtomicUsize>,
            pub batches: Arc<AtomicUsize>,
            pub rows: Arc<AtomicUsize>,
            /// Read round trips (`all` calls), also counted in `statements`.
            pub reads: Arc<AtomicUsize>,
            /// Records each batch removed (the bound a chunked purge keeps).
            pub removed: Arc<std::sync::Mutex<Vec<usize>>>,
        }

        impl Counter {
            pub fn take(&self) -> (usize, usize, usize) {
                (
                    self.statements.swap(0, Ordering::SeqCst),
                    self.batches.swap(0, Ordering::SeqCst),
                    self.rows.swap(0, Ordering::SeqCst),
                )
            }
        }

        pub struct Counted {
            pub db: Arc<Sqlite>,
            pub counter: Counter,
        }

        #[async_trait]
        impl SqlExecutor for Counted {
            async fn all(
                &self,
                sql: &str,
                params: &[SqlValue],
            ) -> Result<Vec<Vec<SqlValue>>, SqlError> {
                self.counter.statements.fetch_add(1, Ordering::SeqCst);
                self.counter.reads.fetch_add(1, Ordering::SeqCst);
                let rows = self.db.all(sql, params).await?;
                self.counter.rows.fetch_add(rows.len(), Ordering::SeqCst);
                Ok(rows)
            }
            async fn batch(&self, statements: Vec<Statement>) -> Result<(), SqlError> {
                self.counter
                    .statements
                    .fetch_add(statements.len(), Ordering::SeqCst);
                self.counter.batches.fetch_add(1, Ordering::SeqCst);
                let count = || {
                    self.db.with(|c| {
                        c.query_row("SELECT count(*) FROM vaultstore_records", [], |r| {
                            r.get::<_, i64>(0)
                        })
                        .unwrap_or(0)
                    })
                };
                let before = count();
                self.db.batch(statements).await?;
                let gone = usize::try_from(before - count()).unwrap_or(0);
                self.counter.removed.lock().unwrap().push(gone);
                Ok(())
            }
        }

        pub async fn counted_vault(
            identities: bool,
            clock: &TestClock,
        ) -> (Vault, Counter, Arc<Sqlite>) {
            let db = Arc::new(Sqlite::memory());
            let counter = Counter::default();
            let storage = SqlStorage::open(
                Counted {
                    db: db.clone(),
                    counter: counter.clone(),
                },
                "vaultstore",
            )
            .await
            .unwrap();
            let platform = Platform {
                clock: Arc::new(clock.clone()),
                ..Platform::default()
            };
            // Shared as several vaults share one store (`Arc`): the forwarding impl is part of
            // what is measured (it used to drop the set-based purge, and the vault paged).
            let vault = Vault::open_with(
                Box::new(Arc::new(storage)),
                VaultOptions {
                    password_identity: identities,
                    ..options()
                },
                platform,
            )
            .await
            .unwrap();
            (vault, counter, db)
        }

        fn values(n: usize) -> Vec<String> {
            (0..n).map(|i| format!("value {i}")).collect()
        }

        /// With identities on, `tokensCreate` used to send a record insert and a link write per
        /// value (802 statements for 400 values) and a rotation three per record (1,204): past
        /// D1's 50 (free) or 1,000 (paid) statements per invocation. Grouped by kind, both cost
        /// the same few statements whatever the count.
        #[test]
        fn creating_and_rotating_cost_the_same_statements_whatever_the_count() {
            super::block_on(async {
                let mut costs = Vec::new();
                for n in [1, 40, 400] {
                    let clock = TestClock::new(T0);
                    let (vault, counter, _) = counted_vault(true, &clock).await;
                    let (old, new) = (pw("the old password"), pw("the new password"));
                    // The identity exists before the measured calls (its creation is a write of
                    // its own, once per secret).
                    vault
                        .token_create("first", &old, &CreateOptions::default())
                        .await
                        .unwrap();
                    let values = values(n);
                    let refs: Vec<&str> = values.iter().map(String::as_str).collect();
                    counter.take();
                    let tokens = vault
                        .tokens_create(&refs, &old, &CreateOptions::default())
                        .await
                        .unwrap();
                    let created = counter.take();
                    let rotate = RekeyOptions {
                        rotate: true,
                        observer: None,
                    };
                    assert_eq!(
                        vault.bulk_rekey(&old, &new, &rotate).await.unwrap(),
                        n as u64 + 1
                    );
                    let rotated = counter.take();
                    // Every value moved and opens with the new secret only.
                    let read = vault
                        .tokens_read(&tokens.iter().map(String::as_str).collect::<Vec<_>>(), &new)
                        .await
                        .unwrap();
                    assert_eq!(read.len(), n);
                    for (i, (token, value)) in read.iter().enumerate() {
                        assert_eq!((token, value), (&tokens[i], &values[i]));
                    }
                    assert!(vault.token_read(&tokens[0], &old).await.is_err());
                    costs.push((n, created, rotated));
                }
                let (_, created_1, rotated_1) = costs[0];
                for &(n, created, rotated) in &costs {
                    assert_eq!(
                        (created.0, created.1),
                        (created_1.0, created_1.1),
                        "tokensCreate({n}) costs as many statements and batches as of one: {costs:?}"
                    );
                    assert_eq!(
                        (rotated.0, rotated.1),
                        (rotated_1.0, rotated_1.1),
                        "rotating {n} records costs as many statements and batches as one: {costs:?}"
                    );
                }
                assert!(created_1.0 <= 6 && rotated_1.0 <= 16, "{costs:?}");
            });
        }

        /// API.md: `tokensRead` is one storage round trip. With identities on it needs the
        /// secret's identity rows too, and used to read them in a second statement; now it
        /// does only while the key is not cached yet.
        #[test]
        fn reading_and_updating_values_is_one_read_with_identities_on_or_off() {
            super::block_on(async {
                for identities in [false, true] {
                    let clock = TestClock::new(T0);
                    let (vault, counter, _) = counted_vault(identities, &clock).await;
                    let secret = pw("the password");
                    let values = values(30);
                    let refs: Vec<&str> = values.iter().map(String::as_str).collect();
                    let tokens = vault
                        .tokens_create(&refs, &secret, &CreateOptions::default())
                        .await
                        .unwrap();
                    let asked: Vec<&str> = tokens.iter().map(String::as_str).collect();
                    counter.take();
                    let read = vault.tokens_read(&asked, &secret).await.unwrap();
                    assert_eq!(
                        read.iter().map(|(_, v)| v.as_str()).collect::<Vec<_>>(),
                        refs,
                        "identities {identities}"
                    );
                    // The records, and the identity's `tag` and `dek` rows.
                    let rows = if identities { 32 } else { 30 };
                    assert_eq!(
                        counter.take(),
                        (1, 0, rows),
                        "identities {identities}: tokensRead is one statement"
                    );
                    assert_eq!(
                        vault.token_read(&tokens[7], &secret).await.unwrap(),
                        values[7]
                    );
                    let (statements, batches, _) = counter.take();
                    assert_eq!(
                        (statements, batches),
                        (1, 0),
                        "identities {identities}: tokenRead is one statement"
                    );
                    // A missing token among them is still reported by name, before anything
                    // is opened, and a wrong password still fails on the values.
                    let e = vault
                        .tokens_read(&[asked[0], "tk_missing0000000"], &secret)
                        .await
                        .unwrap_err();
                    assert_eq!(
                        (e.code(), e.tokens().unwrap()),
                        (
                            ErrorCode::RecordNotFound,
                            &["tk_missing0000000".to_owned()][..]
                        )
                    );
                    let e = vault
                        .tokens_read(&asked[..2], &pw("not the password"))
                        .await
                        .unwrap_err();
                    assert_eq!(
                        e.code(),
                        ErrorCode::InvalidPassword,
                        "identities {identities}"
                    );
                    assert_eq!(e.tokens().unwrap().len(), 2);
                    // An update reads the record and the identity rows in one round trip too.
                    counter.reads.swap(0, Ordering::SeqCst);
                    vault
                        .token_update(&tokens[3], "updated", &secret)
                        .await
                        .unwrap();
                    assert_eq!(
                        (counter.reads.swap(0, Ordering::SeqCst), counter.take().1),
                        (1, 1),
                        "identities {identities}: tokenUpdate is one read and one batch"
                    );
                    assert_eq!(
                        vault.token_read(&tokens[3], &secret).await.unwrap(),
                        "updated"
                    );
                    // A key not cached is derived after the records are read (a missing token
                    // costs no derivation): then the identity rows take a second statement.
                    vault.lock();
                    counter.take();
                    assert_eq!(vault.tokens_read(&asked, &secret).await.unwrap().len(), 30);
                    let cold = if identities { 2 } else { 1 };
                    assert_eq!(
                        counter.take().0,
                        cold,
                        "identities {identities}, after lock()"
                    );
                }
            });
        }

        /// The set-based purge is what a vault on SQL runs: one count and one batch per
        /// chunk, and no expired record travels to the isolate. Through a shared store
        /// (`Arc<SqlStorage>`) the vault used to miss it, and read and rewrite the records a
        /// page of 500 at a time.
        #[test]
        fn a_purge_of_many_expired_records_is_a_few_statements_and_reads_no_record() {
            super::block_on(async {
                for identities in [false, true] {
                    let clock = TestClock::new(T0);
                    let (vault, counter, _) = counted_vault(identities, &clock).await;
                    let secret = pw("the password");
                    let values = values(1_200);
                    let refs: Vec<&str> = values.iter().map(String::as_str).collect();
                    let expiring = CreateOptions {
                        expires_at: Some(T0 + 1_000),
                        ..CreateOptions::default()
                    };
                    vault
                        .tokens_create(&refs, &secret, &expiring)
                        .await
                        .unwrap();
                    let kept = vault
                        .token_create("kept", &secret, &CreateOptions::default())
                        .await
                        .unwrap();
                    clock.advance(2_000);
                    counter.take();
                    assert_eq!(vault.tokens_expired_soft_delete().await.unwrap(), 1_200);
                    let (statements, batches, rows) = counter.take();
                    assert_eq!(batches, 1, "identities {identities}: one write");
                    assert!(
                        statements <= 3 && rows <= 1,
                        "identities {identities}: {statements} statements, {rows} rows read"
                    );
                    assert_eq!(vault.tokens_expired_delete().await.unwrap(), 1_200);
                    let (statements, batches, rows) = counter.take();
                    assert_eq!(batches, 1, "identities {identities}: one write");
                    // (One of them keeps the emptied identities' versions, for sync.)
                    assert!(
                        statements <= 8 && rows <= 1,
                        "identities {identities}: {statements} statements, {rows} rows read"
                    );
                    assert_eq!(vault.token_read(&kept, &secret).await.unwrap(), "kept");
                    assert_eq!(vault.record_count(&Default::default()).await.unwrap(), 1);
                }
            });
        }

        /// A backlog larger than a chunk is purged in bounded atomic writes, each touching at
        /// most `PURGE_CHUNK` records, until none is left; the count is the sum.
        #[test]
        fn a_large_backlog_is_purged_in_bounded_chunks() {
            super::block_on(async {
                let clock = TestClock::new(T0);
                let (vault, counter, db) = counted_vault(true, &clock).await;
                let secret = pw("the password");
                let n = 2 * PURGE_CHUNK + 7;
                let values = values(n);
                let refs: Vec<&str> = values.iter().map(String::as_str).collect();
                let expiring = CreateOptions {
                    expires_at: Some(T0 + 1_000),
                    ..CreateOptions::default()
                };
                vault
                    .tokens_create(&refs, &secret, &expiring)
                    .await
                    .unwrap();
                clock.advance(2_000);
                counter.take();
                assert_eq!(vault.tokens_expired_delete().await.unwrap(), n as u64);
                let (_, batches, rows) = counter.take();
                assert_eq!(batches, 3, "{n} records in chunks of {PURGE_CHUNK}");
                assert!(rows <= 3, "one count per chunk: {rows} rows read");
                let removed = std::mem::take(&mut *counter.removed.lock().unwrap());
                assert_eq!(removed[removed.len() - 3..], [PURGE_CHUNK, PURGE_CHUNK, 7]);
                assert_eq!(vault.record_count(&Default::default()).await.unwrap(), 0);
                let _ = db;
            });
        }

        const OLD: &str = "the old password";
        const NEW: &str = "the new password";
        const OTHER: &str = "a bystander's password";

        /// The vault that writes meanwhile, and the secrets it writes under before the rekeying
        /// vault's batches, in turn (`None`: no write); the last entry holds for every later
        /// batch.
        type Writer = (Arc<Vault>, Vec<Option<&'static str>>);

        /// What the writer wrote: token, value and secret.
        type Written = Vec<(String, String, &'static str)>;

        /// An executor that, before each batch of its vault, lets another vault on the same
        /// database write: a worker's other isolates writing steadily while a rekey runs.
        struct Interrupting {
            db: Arc<Sqlite>,
            writer: Arc<std::sync::Mutex<Option<Writer>>>,
            written: Arc<std::sync::Mutex<Written>>,
        }

        #[async_trait]
        impl SqlExecutor for Interrupting {
            async fn all(
                &self,
                sql: &str,
                params: &[SqlValue],
            ) -> Result<Vec<Vec<SqlValue>>, SqlError> {
                self.db.all(sql, params).await
            }
            async fn batch(&self, statements: Vec<Statement>) -> Result<(), SqlError> {
                let next = self
                    .writer
                    .lock()
                    .unwrap()
                    .as_mut()
                    .and_then(|(vault, script)| {
                        let secret = if script.len() > 1 {
                            script.remove(0)
                        } else {
                            script.first().copied().flatten()
                        };
                        secret.map(|secret| (vault.clone(), secret))
                    });
                if let Some((vault, secret)) = next {
                    let value = format!("written meanwhile {}", self.written.lock().unwrap().len());
                    let token = vault
                        .token_create(&value, &pw(secret), &CreateOptions::default())
                        .await
                        .unwrap();
                    self.written.lock().unwrap().push((token, value, secret));
                }
                self.db.batch(statements).await
            }
        }

        /// What [`rekey_while_writing`] leaves to check.
        struct Rekeyed {
            result: Result<u64, vaultstore_wasm::VaultError>,
            vault: Vault,
            other: Arc<Vault>,
            tokens: Vec<String>,
            values: Vec<String>,
            written: Written,
        }

        /// Create 30 records under the old password on SQLite, then rekey them to the new one
        /// while a second vault on the same database writes before the rekeying vault's batches
        /// as `script` says.
        async fn rekey_while_writing(
            identities: bool,
            rotate: bool,
            script: Vec<Option<&'static str>>,
        ) -> Rekeyed {
            let db = Arc::new(Sqlite::memory());
            let open = |executor: Box<dyn SqlExecutor>| async move {
                let storage = SqlStorage::open(executor, "vaultstore").await.unwrap();
                Vault::open(
                    Box::new(storage),
                    VaultOptions {
                        password_identity: identities,
                        ..options()
                    },
                )
                .await
                .unwrap()
            };
            let writer = Arc::new(std::sync::Mutex::new(None));
            let written = Arc::new(std::sync::Mutex::new(Vec::new()));
            let vault = open(Box::new(Interrupting {
                db: db.clone(),
                writer: writer.clone(),
                written: written.clone(),
            }))
            .await;
            let other = Arc::new(open(Box::new(db.clone())).await);
            let values = values(30);
            let refs: Vec<&str> = values.iter().map(String::as_str).collect();
            let tokens = vault
                .tokens_create(&refs, &pw(OLD), &CreateOptions::default())
                .await
                .unwrap();
            *writer.lock().unwrap() = Some((other.clone(), script));
            let options = RekeyOptions {
                rotate,
                observer: None,
            };
            let result = vault.bulk_rekey(&pw(OLD), &pw(NEW), &options).await;
            *writer.lock().unwrap() = None;
            let written = written.lock().unwrap().clone();
            Rekeyed {
                result,
                vault,
                other,
                tokens,
                values,
                written,
            }
        }

        /// A rekey on SQL re-plans when a write lands between its reads and its commit. With a
        /// writer that writes before every commit it used to give up after 16 rounds whatever
        /// the writer's secret; now a rotation's round that lost checks in its own batch exactly
        /// what it moves, and finishes while others write under other secrets. Writes under the
        /// old secret itself still stop it, and so do any writes for a re-wrap (a password
        /// change, which writes no record and must count exactly), with `STORAGE` and nothing
        /// changed.
        #[test]
        fn a_rotation_finishes_under_steady_writes_by_other_secrets() {
            super::block_on(async {
                for (rotate, writer_secret, finishes) in [
                    // A re-wrap keeps the write epoch, so that its count stays exact
                    // (`Round::guard_itself`): it gives up under writes that never pause.
                    (false, OTHER, false),
                    (true, OTHER, true),
                    (true, NEW, true),
                    (true, OLD, false),
                ] {
                    let case = format!("rotate {rotate}, writes under {writer_secret:?}");
                    let Rekeyed {
                        result,
                        vault,
                        other,
                        tokens,
                        values,
                        written,
                    } = rekey_while_writing(true, rotate, vec![Some(writer_secret)]).await;
                    assert!(written.len() >= 2, "{case}: a write landed in every round");
                    let refs: Vec<&str> = tokens.iter().map(String::as_str).collect();
                    if finishes {
                        assert_eq!(result.unwrap(), 30, "{case}");
                        let read = vault.tokens_read(&refs, &pw(NEW)).await.unwrap();
                        let read: Vec<&str> = read.iter().map(|(_, v)| v.as_str()).collect();
                        assert_eq!(read, refs_of(&values), "{case}");
                        assert!(
                            vault.token_read(&tokens[0], &pw(OLD)).await.is_err(),
                            "{case}"
                        );
                    } else {
                        let e = result.unwrap_err();
                        assert_eq!(e.code(), vaultstore_wasm::ErrorCode::Storage, "{case}: {e}");
                        assert!(e.to_string().contains("kept changing"), "{case}: {e}");
                        let read = vault.tokens_read(&refs, &pw(OLD)).await.unwrap();
                        assert_eq!(read.len(), 30, "{case}: nothing changed");
                    }
                    // Whatever the outcome, every write that resolved opens with its secret.
                    for (token, value, secret) in &written {
                        // (Under the old secret when the rekey gave up: nothing moved.)
                        assert_eq!(
                            &other.token_read(token, &pw(secret)).await.unwrap(),
                            value,
                            "{case}"
                        );
                    }
                }
            });
        }

        /// With identities off (the example worker's rotation) a rekey finds the old secret's
        /// records by key check, and the batch cannot tell a record written under the old
        /// secret meanwhile from any other new record: the key check is salted per record, so
        /// only the old key finds it. Committing without it would leave a value that was
        /// written, and resolved, while the rekey ran still sealed with the old secret, after
        /// the rekey resolved; so every round expects the write epoch, and a write under the
        /// old secret that lands inside any round, a later one too, is moved (or nothing
        /// changes). The price: under steady writes by any secret it gives up, with `STORAGE`
        /// and a message that says why and what to do.
        #[test]
        fn a_rekey_without_identities_moves_every_write_of_the_old_secret_or_changes_nothing() {
            super::block_on(async {
                for (identities, rotate, script, moved) in [
                    // A bystander's write makes the first round lose; one under the old secret
                    // lands inside the second round; the third moves it with the rest.
                    (false, false, vec![Some(OTHER), Some(OLD), None], Some(31)),
                    (true, true, vec![Some(OTHER), Some(OLD), None], Some(31)),
                    // Steady writes, under another secret or the new one: every round loses.
                    (false, false, vec![Some(OTHER)], None),
                    (false, false, vec![Some(NEW)], None),
                ] {
                    let case = format!("identities {identities}, rotate {rotate}, {script:?}");
                    let Rekeyed {
                        result,
                        vault,
                        other,
                        tokens,
                        values,
                        written,
                    } = rekey_while_writing(identities, rotate, script).await;
                    let refs: Vec<&str> = tokens.iter().map(String::as_str).collect();
                    match moved {
                        Some(moved) => {
                            assert_eq!(written.len(), 2, "{case}: two rounds lost");
                            assert_eq!(result.unwrap(), moved, "{case}");
                            let read = vault.tokens_read(&refs, &pw(NEW)).await.unwrap();
                            let read: Vec<&str> = read.iter().map(|(_, v)| v.as_str()).collect();
                            assert_eq!(read, refs_of(&values), "{case}");
                            for (token, value, secret) in &written {
                                // The write under the old secret moved with the rest.
                                let now = if *secret == OLD { NEW } else { secret };
                                let read = other.token_read(token, &pw(now)).await;
                                assert_eq!(read.as_ref().ok(), Some(value), "{case}: {secret}");
                                if *secret == OLD {
                                    let stale = other.token_read(token, &pw(OLD)).await;
                                    assert!(stale.is_err(), "{case}: still opens with the old");
                                }
                            }
                        }
                        None => {
                            assert!(written.len() >= 16, "{case}: a write in every round");
                            let e = result.unwrap_err();
                            assert_eq!(
                                e.code(),
                                vaultstore_wasm::ErrorCode::Storage,
                                "{case}: {e}"
                            );
                            let message = e.to_string();
                            for says in ["kept changing", "nothing was changed", "key check"] {
                                assert!(message.contains(says), "{case}: {message}");
                            }
                            let read = vault.tokens_read(&refs, &pw(OLD)).await.unwrap();
                            assert_eq!(read.len(), 30, "{case}: nothing changed");
                            for (token, value, secret) in &written {
                                let read = other.token_read(token, &pw(secret)).await;
                                assert_eq!(read.as_ref().ok(), Some(value), "{case}");
                            }
                        }
                    }
                }
            });
        }

        fn refs_of(values: &[String]) -> Vec<&str> {
            values.iter().map(String::as_str).collect()
        }
    }
}

/// Schema 1 → 2 on a database written by the release before (`tests/fixtures/sql_v1.sql`, see
/// its header for what it holds and how it was made).
mod migration {
    use super::sqlite::Sqlite;
    use async_trait::async_trait;
    use std::collections::BTreeMap;
    use std::sync::Arc;
    use vaultstore_wasm::platform::{Clock, Platform};
    use vaultstore_wasm::query::{RecordFilter, SoftDeleted};
    use vaultstore_wasm::record::RecordRevs;
    use vaultstore_wasm::storage::sql::{
        SqlError, SqlExecutor, SqlStorage, SqlValue, Statement, sort_key,
    };
    use vaultstore_wasm::storage::{MetaKey, MetaRow, Row, Stamp, Storage, StorageError, WriteOp};
    use vaultstore_wasm::sync::{RecordVersion, Rev};
    use vaultstore_wasm::{
        CreateOptions, ErrorCode, RekeyOptions, Secret, SyncTransport, Vault, VaultOptions,
    };

    const FIXTURE: &str = include_str!("fixtures/sql_v1.sql");
    const T0: i64 = 1_700_000_000_000;
    const ALPHA: [&str; 2] = [
        "tk_r935men7zweh9fqaxdz9njvxkv608",
        "tk_514nnwgh0b9dffvmvskgchkvvx2q2",
    ];
    const SOFT_DELETED: &str = "tk_9hwq1cfycz1k31cnqh6ztvs3xfza0";
    const CUSTOM: &str = "tk_fixture_custom";
    const BRAVO: &str = "tk_xkjrfw81qtrkawa1jgdrmtwgf7kfx";
    const RAW: &str = "tk_9veyw3mcq6k25pgvgn5mm037m6h24";
    const OTHER: &str = "tk_zk2f7rhsyg2wgj79v4njsmky1ttb1";
    /// A record id no generator makes (a snapshot may carry one): its `id_key` is not the id.
    const ODD_ID: &str = "odd\u{ff5e}id";

    fn block_on<T>(f: impl std::future::Future<Output = T>) -> T {
        futures::executor::block_on(f)
    }

    /// The fixture, plus two rows written by hand as schema 1 would hold them: a record without
    /// a link, and a linked record whose id has a character at or above U+E000.
    fn load_v1(db: &Sqlite) {
        db.with(|c| {
            c.execute_batch(FIXTURE).unwrap();
            let insert = "INSERT INTO vaultstore_records
                (ns, id, token, value, created_at, updated_at, id_key, token_key)
                VALUES ('vaultstore', ?1, ?2, 'vs1:by-hand', 5, 6, ?3, ?2)";
            c.execute(insert, ["0123456789abcdef0123456789abcdef", "tk_unlinked_by_hand", "0123456789abcdef0123456789abcdef"])
                .unwrap();
            c.execute(insert, [ODD_ID, "tk_odd_id_by_hand", &sort_key(ODD_ID)])
                .unwrap();
            c.execute(
                "INSERT INTO vaultstore_meta VALUES ('vaultstore', 'record', ?1, 'password_id', 'p_0b0cff0d37ace17aa306707e0e8e6072')",
                [format!("r_{ODD_ID}")],
            )
            .unwrap();
        });
    }

    /// `(ns, record id) → identity` of every link row, and of every record with none.
    fn links(db: &Sqlite) -> BTreeMap<(String, String), Option<String>> {
        db.with(|c| {
            let mut st = c
                .prepare(
                    "SELECT r.ns, r.id, l.value FROM vaultstore_records AS r
                     LEFT JOIN vaultstore_meta AS l ON l.ns = r.ns AND l.object_type = 'record'
                         AND l.object_id = 'r_' || r.id AND l.key = 'password_id'",
                )
                .unwrap();
            st.query_map([], |r| Ok(((r.get(0)?, r.get(1)?), r.get(2)?)))
                .unwrap()
                .map(Result::unwrap)
                .collect()
        })
    }

    fn count(db: &Sqlite, sql: &str) -> i64 {
        db.with(|c| c.query_row(sql, [], |r| r.get(0)).unwrap())
    }

    fn version(db: &Sqlite) -> i64 {
        count(db, "SELECT version FROM vaultstore_schema")
    }

    struct Fixed;
    impl Clock for Fixed {
        fn now_ms(&self) -> i64 {
            T0 + 3_600_000
        }
    }

    async fn vault(db: Arc<Sqlite>, ns: &str) -> Vault {
        let storage = SqlStorage::open(db, ns).await.unwrap();
        Vault::open_with(
            Box::new(storage),
            VaultOptions {
                password_identity: true,
                kdf_iterations: 1_000,
                ..VaultOptions::default()
            },
            Platform {
                clock: Arc::new(Fixed),
                ..Platform::default()
            },
        )
        .await
        .unwrap()
    }

    #[test]
    fn links_move_into_their_records_and_nothing_else_is_rewritten() {
        let db = Arc::new(Sqlite::memory());
        load_v1(&db);
        let before = links(&db);
        assert_eq!(before.len(), 9);
        assert_eq!(before.values().filter(|l| l.is_none()).count(), 1);
        let storage = block_on(SqlStorage::open(db.clone(), "vaultstore")).unwrap();
        assert_eq!(version(&db), 2);
        assert_eq!(
            count(
                &db,
                "SELECT count(*) FROM vaultstore_meta WHERE object_type = 'record'"
            ),
            0,
            "no link row is left, in any namespace"
        );
        let after: BTreeMap<(String, String), Option<String>> = db.with(|c| {
            let mut st = c
                .prepare("SELECT ns, id, password_id FROM vaultstore_records")
                .unwrap();
            st.query_map([], |r| Ok(((r.get(0)?, r.get(1)?), r.get(2)?)))
                .unwrap()
                .map(Result::unwrap)
                .collect()
        });
        assert_eq!(after, before);
        // No revision or dirty mark was written: rows read as written before revisions.
        assert_eq!(
            count(
                &db,
                "SELECT count(*) FROM vaultstore_records
                 WHERE value_rev <> '' OR seal_rev <> '' OR expires_rev <> '' OR deleted_rev <> ''
                     OR dirty IS NOT NULL"
            ),
            0
        );
        assert_eq!(
            count(
                &db,
                "SELECT count(*) FROM vaultstore_meta WHERE rev <> '' OR dirty IS NOT NULL"
            ),
            0
        );
        // Every replicated row has a seq of its own, at least 1, in every namespace: a full
        // push or a first pull (the feed from 0) carries all of it. Local rows have none.
        let seqs: Vec<(String, String, String, String, i64)> = db.with(|c| {
            let mut st = c
                .prepare(
                    "SELECT ns, 'record', id, '', seq FROM vaultstore_records
                     UNION ALL SELECT ns, object_type, object_id, key, seq FROM vaultstore_meta",
                )
                .unwrap();
            st.query_map([], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?))
            })
            .unwrap()
            .map(Result::unwrap)
            .collect()
        });
        let local = |t: &str, id: &str, k: &str| {
            t == "sync" || (t == "vault" && (id == "state" || (id == "settings" && k == "kdf")))
        };
        let mut replicated: Vec<(String, i64)> = Vec::new();
        for (ns, t, id, k, seq) in &seqs {
            if local(t, id, k) {
                assert_eq!(*seq, 0, "a local row has no seq: {t}/{id}/{k}");
            } else {
                assert!(*seq >= 1, "{ns} {t}/{id}/{k} has seq {seq}");
                replicated.push((ns.clone(), *seq));
            }
        }
        assert!(seqs.iter().any(|(_, t, id, k, _)| local(t, id, k)));
        let distinct: std::collections::BTreeSet<&(String, i64)> = replicated.iter().collect();
        assert_eq!(distinct.len(), replicated.len(), "seqs are distinct");
        let ours: Vec<i64> = replicated
            .iter()
            .filter(|(ns, _)| ns == "vaultstore")
            .map(|(_, seq)| *seq)
            .collect();
        let feed = block_on(storage.changes_since(0, 1_000)).unwrap();
        assert_eq!(
            feed.len(),
            ours.len(),
            "the feed from 0 holds every replicated row"
        );
        let mut fed: Vec<i64> = feed.iter().map(|c| c.seq as i64).collect();
        let mut ours_sorted = ours.clone();
        ours_sorted.sort();
        fed.sort();
        assert_eq!(fed, ours_sorted);
        assert!(feed.iter().any(|c| matches!(&c.row, Row::Meta { key, .. }
            if key.object_type == "password_identity")));
        assert!(feed.iter().all(|c| match &c.row {
            Row::Meta { key, .. } => key.object_type != "record",
            Row::Record { version, .. } => matches!(version, RecordVersion::Live(_)),
        }));
        // The next write goes above every backfilled seq.
        block_on(storage.apply(
            Stamp {
                rev: Rev::new(2_000_000_000_000, 0, 1).unwrap(),
                at: T0,
            },
            vec![WriteOp::PutMeta(MetaRow::new(
                "vault", "settings", "upgraded", "yes",
            ))],
        ))
        .unwrap();
        let next = block_on(storage.changes_since(0, 1_000)).unwrap();
        assert_eq!(next.len(), feed.len() + 1);
        let top = next.last().unwrap();
        assert!(top.seq as i64 > *ours_sorted.last().unwrap());
        assert!(matches!(&top.row, Row::Meta { key, .. } if key.key == "upgraded"));
        let read = block_on(
            storage.records_by_tokens(&[BRAVO.to_owned(), "tk_odd_id_by_hand".to_owned()]),
        )
        .unwrap();
        let bravo = read[0].clone().unwrap();
        assert_eq!(bravo.revs, RecordRevs::synthesized(bravo.created_at));
        assert_eq!(
            bravo.password_id.as_deref(),
            Some("p_6b4800c91d219e935edff5afff1b93dc")
        );
        let odd = read[1].clone().unwrap();
        assert_eq!(odd.id, ODD_ID);
        assert_eq!(
            odd.password_id.as_deref(),
            Some("p_0b0cff0d37ace17aa306707e0e8e6072")
        );
        assert_eq!(
            block_on(storage.dirty_changes(0, 100)).unwrap().len(),
            1,
            "the backfill dirties nothing: only the write above is to push"
        );
        assert_eq!(block_on(storage.linked_count(None)).unwrap(), 7);
        let linked =
            block_on(storage.records_linked_to("p_771430443c4e3b7671e99a2884ca8f88", None, 10))
                .unwrap();
        let mut tokens: Vec<&str> = linked.iter().map(|r| r.token.as_str()).collect();
        tokens.sort();
        let mut expected = vec![ALPHA[0], ALPHA[1], SOFT_DELETED, CUSTOM];
        expected.sort();
        assert_eq!(tokens, expected);
        // The unique index on tags is gone: the check moved into local writes.
        assert_eq!(
            count(
                &db,
                "SELECT count(*) FROM sqlite_master WHERE name = 'vaultstore_meta_unique_tag'"
            ),
            0
        );
        // The maintained counts start as the records the upgrade found, in each namespace and
        // soft-deleted state, and `recordCount` answers from them.
        let real = "SELECT group_concat(ns || ':' || d || ':' || n, ' ') FROM (SELECT ns, \
            soft_deleted_at IS NOT NULL AS d, count(*) AS n FROM vaultstore_records \
            GROUP BY 1, 2 ORDER BY 1, 2)";
        let kept = "SELECT group_concat(ns || ':' || deleted || ':' || n, ' ') FROM \
            (SELECT * FROM vaultstore_counts WHERE n > 0 ORDER BY ns, deleted)";
        let as_text =
            |sql: &str| db.with(|c| c.query_row(sql, [], |r| r.get::<_, String>(0)).unwrap());
        assert_eq!(as_text(kept), as_text(real));
        assert!(
            as_text(kept).contains("vaultstore:1:"),
            "the fixture has soft-deleted records"
        );
        for (filter, sql) in [
            (SoftDeleted::Exclude, "soft_deleted_at IS NULL"),
            (SoftDeleted::Only, "soft_deleted_at IS NOT NULL"),
            (SoftDeleted::Include, "1"),
        ] {
            let filter = RecordFilter {
                soft_deleted: filter,
                ..RecordFilter::default()
            };
            assert_eq!(
                block_on(storage.count_records(&filter, T0)).unwrap() as i64,
                count(
                    &db,
                    &format!(
                        "SELECT count(*) FROM vaultstore_records WHERE ns = 'vaultstore' AND {sql}"
                    )
                ),
                "{filter:?}"
            );
        }
    }

    #[test]
    fn a_migrated_vault_reads_rekeys_and_feeds_only_new_changes() {
        let db = Arc::new(Sqlite::memory());
        load_v1(&db);
        block_on(async {
            let v = vault(db.clone(), "vaultstore").await;
            let alpha = Secret::password("fixture password alpha");
            let bravo = Secret::password("fixture password bravo");
            let charlie = Secret::password("fixture password charlie");
            let raw = Secret::raw_key(&[7u8; 32]).unwrap();
            let mut want = ALPHA.to_vec();
            want.push(CUSTOM);
            let read: BTreeMap<String, String> = v
                .tokens_read(&want, &alpha)
                .await
                .unwrap()
                .into_iter()
                .collect();
            assert_eq!(read[ALPHA[0]], "alpha one");
            assert_eq!(read[ALPHA[1]], "alpha two");
            assert_eq!(read[CUSTOM], "alpha custom");
            assert_eq!(v.token_read(BRAVO, &bravo).await.unwrap(), "bravo one");
            assert_eq!(v.token_read(BRAVO, &charlie).await.unwrap(), "bravo one");
            assert_eq!(v.token_read(RAW, &raw).await.unwrap(), "raw one");
            assert_eq!(
                v.token_read(BRAVO, &alpha).await.unwrap_err().code(),
                ErrorCode::InvalidPassword
            );
            let other = vault(db.clone(), "other").await;
            assert_eq!(
                other.token_read(OTHER, &alpha).await.unwrap(),
                "other alpha"
            );

            // After what the migration numbered, a write is the only change.
            let storage = SqlStorage::open(db.clone(), "vaultstore").await.unwrap();
            let backfilled = storage.changes_since(0, 1_000).await.unwrap();
            assert!(!backfilled.is_empty());
            let since = backfilled.iter().map(|c| c.seq).max().unwrap();
            assert_eq!(storage.dirty_changes(0, 100).await.unwrap(), vec![]);
            let new = v
                .token_create("after the migration", &bravo, &CreateOptions::default())
                .await
                .unwrap();
            let changes = storage.changes_since(since, 100).await.unwrap();
            assert_eq!(changes.len(), 1, "{changes:?}");
            let Row::Record {
                version: RecordVersion::Live(live),
                ..
            } = &changes[0].row
            else {
                panic!("{changes:?}");
            };
            assert_eq!(live.token, new);
            assert_eq!(
                live.password_id.as_deref(),
                Some("p_6b4800c91d219e935edff5afff1b93dc")
            );
            assert!(changes[0].seq > 0);
            assert_eq!(storage.dirty_changes(0, 100).await.unwrap(), changes);
            assert_eq!(
                storage.changes_since(changes[0].seq, 100).await.unwrap(),
                vec![]
            );

            // A password change moves alpha's records, found through their moved links.
            let delta = Secret::password("fixture password delta");
            let moved = v
                .bulk_rekey(&alpha, &delta, &RekeyOptions::default())
                .await
                .unwrap();
            assert_eq!(moved, 4);
            let read: BTreeMap<String, String> = v
                .tokens_read(&want, &delta)
                .await
                .unwrap()
                .into_iter()
                .collect();
            assert_eq!(read[CUSTOM], "alpha custom");
            assert!(v.token_read(ALPHA[0], &alpha).await.is_err());
            // With no identity of its own, `new` takes over alpha's: one re-wrap, new tag.
            let tag = storage
                .meta_get(&MetaKey::new(
                    "password_identity",
                    "p_771430443c4e3b7671e99a2884ca8f88",
                    "tag",
                ))
                .await
                .unwrap();
            assert!(
                tag.is_some_and(|t| !t.starts_with("6a02580274bbb8b1")),
                "alpha's identity is re-wrapped for delta"
            );
            // The other namespace keeps alpha.
            assert_eq!(
                other.token_read(OTHER, &alpha).await.unwrap(),
                "other alpha"
            );
        });
    }

    /// A sync server in process: the request goes straight to its `sync_handle`.
    struct Direct<'a>(&'a Vault);

    #[async_trait]
    impl SyncTransport for Direct<'_> {
        async fn exchange(&self, body: String) -> vaultstore_wasm::Result<(u16, Vec<u8>)> {
            let (status, body) = self.0.sync_handle(body.as_bytes()).await;
            Ok((status, body.into_bytes()))
        }
    }

    /// The schema-1 fixture without the rows written by hand, which hold no envelope (a server
    /// refuses them).
    fn v1_to_sync() -> Arc<Sqlite> {
        let db = Arc::new(Sqlite::memory());
        load_v1(&db);
        db.with(|c| {
            c.execute(
                "DELETE FROM vaultstore_records WHERE value = 'vs1:by-hand'",
                [],
            )
            .unwrap()
        });
        db
    }

    /// A vault upgraded from schema 1 syncs whole: its first push (the feed from seq 0) carries
    /// every replicated row it had before the upgrade, so an empty replica joining the server
    /// opens every token with the secrets that sealed it.
    #[test]
    fn a_migrated_vault_syncs_every_row_it_held_to_an_empty_server() {
        let db = v1_to_sync();
        block_on(async {
            let upgraded = vault(db.clone(), "vaultstore").await;
            let held = SqlStorage::open(db.clone(), "vaultstore")
                .await
                .unwrap()
                .changes_since(0, 1_000)
                .await
                .unwrap();
            let server_db = Arc::new(Sqlite::memory());
            let server = vault(server_db.clone(), "vaultstore").await;
            let report = upgraded.sync(&Direct(&server), None).await.unwrap();
            assert_eq!(held.len(), 18, "6 records, 12 replicated meta rows");
            // The server's own new vault already holds `vault/settings/{version,migrated}` as
            // sent (same value, the zero revision): those two change nothing there.
            assert_eq!(report.pushed, 16, "{report:?}");
            let on_server = SqlStorage::open(server_db, "vaultstore")
                .await
                .unwrap()
                .changes_since(0, 1_000)
                .await
                .unwrap();
            let keys = |feed: &[vaultstore_wasm::storage::Change]| {
                let mut keys: Vec<_> = feed.iter().map(|c| c.row.key()).collect();
                keys.sort();
                keys
            };
            assert_eq!(keys(&on_server), keys(&held), "the server has every row");

            let joined = vault(Arc::new(Sqlite::memory()), "vaultstore").await;
            joined.sync(&Direct(&server), None).await.unwrap();
            let alpha = Secret::password("fixture password alpha");
            let mut want = ALPHA.to_vec();
            want.push(CUSTOM);
            let read: BTreeMap<String, String> = joined
                .tokens_read(&want, &alpha)
                .await
                .unwrap()
                .into_iter()
                .collect();
            assert_eq!(read[ALPHA[0]], "alpha one");
            assert_eq!(read[CUSTOM], "alpha custom");
            let bravo = Secret::password("fixture password bravo");
            assert_eq!(joined.token_read(BRAVO, &bravo).await.unwrap(), "bravo one");
            let charlie = Secret::password("fixture password charlie");
            assert_eq!(
                joined.token_read(BRAVO, &charlie).await.unwrap(),
                "bravo one"
            );
            let raw = Secret::raw_key(&[7u8; 32]).unwrap();
            assert_eq!(joined.token_read(RAW, &raw).await.unwrap(), "raw one");
        });
    }

    /// [`Direct`], but the next push never reaches the server (the connection dropped).
    struct LosesAPush<'a>(&'a Vault, std::sync::atomic::AtomicBool);

    #[async_trait]
    impl SyncTransport for LosesAPush<'_> {
        async fn exchange(&self, body: String) -> vaultstore_wasm::Result<(u16, Vec<u8>)> {
            if body.contains(r#""op":"push""#)
                && self.1.swap(false, std::sync::atomic::Ordering::SeqCst)
            {
                return Err(vaultstore_wasm::VaultError::Storage(Box::new(
                    vaultstore_wasm::error::StorageFailure {
                        original: Default::default(),
                        name: None,
                        message: "the connection dropped".into(),
                    },
                )));
            }
            Direct(self.0).exchange(body).await
        }
    }

    /// The same vault's first sync loses its push, after the pull that moved its checkpoint.
    /// Its migrated rows carry no dirty mark, so the next sync pushed only what changed since,
    /// and the server never had them; it now owes the server every row until a push of them
    /// all completes.
    #[test]
    fn a_migrated_vault_whose_first_push_is_lost_pushes_every_row_at_the_next_sync() {
        let db = v1_to_sync();
        block_on(async {
            let upgraded = vault(db.clone(), "vaultstore").await;
            let server_db = Arc::new(Sqlite::memory());
            let server = vault(server_db.clone(), "vaultstore").await;
            let lossy = LosesAPush(&server, std::sync::atomic::AtomicBool::new(true));
            upgraded
                .sync(&lossy, None)
                .await
                .expect_err("the push never reached the server");
            let report = upgraded.sync(&lossy, None).await.unwrap();
            assert_eq!(report.pushed, 16, "{report:?}");
            let feed = |db: Arc<Sqlite>| async move {
                let storage = SqlStorage::open(db, "vaultstore").await.unwrap();
                let mut keys: Vec<_> = (storage.changes_since(0, 1_000).await.unwrap())
                    .iter()
                    .map(|c| c.row.key())
                    .collect();
                keys.sort();
                keys
            };
            assert_eq!(
                feed(server_db).await,
                feed(db.clone()).await,
                "the server has every row"
            );
            // Paid: no later sync pushes everything again.
            let owed = SqlStorage::open(db, "vaultstore")
                .await
                .unwrap()
                .meta_get(&MetaKey::new("sync", "state", "owed"))
                .await
                .unwrap();
            assert_eq!(owed, None);
        });
    }

    /// Runs every batch, then fails it at the end: the database rolls all of it back.
    struct FailsAtTheEnd(Arc<Sqlite>);

    #[async_trait]
    impl SqlExecutor for FailsAtTheEnd {
        async fn all(
            &self,
            sql: &str,
            params: &[SqlValue],
        ) -> Result<Vec<Vec<SqlValue>>, SqlError> {
            self.0.all(sql, params).await
        }
        async fn batch(&self, mut statements: Vec<Statement>) -> Result<(), SqlError> {
            statements.push(Statement {
                sql: "INSERT INTO vaultstore_no_such_table VALUES (1)".into(),
                params: vec![],
            });
            self.0.batch(statements).await
        }
    }

    #[test]
    fn a_failed_migration_leaves_schema_1_as_it_was() {
        let db = Arc::new(Sqlite::memory());
        load_v1(&db);
        let schema = || {
            count(&db, "SELECT count(*) FROM sqlite_master")
                + 1000
                    * count(
                        &db,
                        "SELECT count(*) FROM pragma_table_info('vaultstore_records')",
                    )
        };
        let (links_before, schema_before) = (links(&db), schema());
        let err = block_on(SqlStorage::open(FailsAtTheEnd(db.clone()), "vaultstore")).unwrap_err();
        assert!(
            matches!(&err, StorageError::Backend { message, .. } if message.contains("upgrade the vaultstore tables")),
            "{err:?}"
        );
        assert_eq!(version(&db), 1);
        assert_eq!(schema(), schema_before);
        assert_eq!(links(&db), links_before);
        assert_eq!(
            count(
                &db,
                "SELECT count(*) FROM vaultstore_meta WHERE object_type = 'record'"
            ),
            9 - 1
        );
        // The next open migrates.
        block_on(SqlStorage::open(db.clone(), "vaultstore")).unwrap();
        assert_eq!(version(&db), 2);
    }

    #[test]
    fn isolates_opening_a_schema_1_database_at_once_all_succeed() {
        let dir =
            std::env::temp_dir().join(format!("vaultstore-sql-migrate-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("v1.db");
        let _ = std::fs::remove_file(&path);
        load_v1(&Sqlite::file(&path));
        let expected = links(&Sqlite::file(&path));
        let openers: Vec<_> = (0..4)
            .map(|_| {
                let path = path.clone();
                std::thread::spawn(move || {
                    block_on(SqlStorage::open(Sqlite::file(&path), "vaultstore")).map(drop)
                })
            })
            .collect();
        for opener in openers {
            opener.join().unwrap().unwrap();
        }
        let db = Sqlite::file(&path);
        assert_eq!(version(&db), 2);
        let after: BTreeMap<(String, String), Option<String>> = db.with(|c| {
            let mut st = c
                .prepare("SELECT ns, id, password_id FROM vaultstore_records")
                .unwrap();
            st.query_map([], |r| Ok(((r.get(0)?, r.get(1)?), r.get(2)?)))
                .unwrap()
                .map(Result::unwrap)
                .collect()
        });
        assert_eq!(after, expected);
        let _ = std::fs::remove_dir_all(&dir);
    }
}

/// Where this backend keeps the seq counter: one above the greatest seq a row holds, and a floor
/// for when `ClearAll` removes those rows (FORMAT.md "SQL tables").
mod seqs {
    use super::sqlite::Sqlite;
    use vaultstore_wasm::record::{Record, RecordRevs};
    use vaultstore_wasm::storage::sql::SqlStorage;
    use vaultstore_wasm::storage::{
        MetaKey, MetaRow, RowKey, Stamp, Storage, StorageError, WriteOp,
    };
    use vaultstore_wasm::sync::Rev;

    fn stamp(at: u64) -> Stamp {
        Stamp {
            rev: Rev::new(at, 0, 7).unwrap(),
            at: at as i64,
        }
    }

    fn record(id: &str) -> Record {
        Record {
            id: id.into(),
            token: format!("tk_{id}"),
            value: "vs1:x".into(),
            created_at: 1,
            updated_at: 1,
            expires_at: None,
            soft_deleted_at: None,
            password_id: None,
            revs: RecordRevs::all(stamp(1).rev),
        }
    }

    #[test]
    fn seqs_are_unique_across_tables_and_never_go_back_after_a_clear() {
        futures::executor::block_on(async {
            let s = SqlStorage::open(Sqlite::memory(), "vaultstore")
                .await
                .unwrap();
            s.apply(
                stamp(2),
                vec![
                    WriteOp::insert_record(record("a")),
                    WriteOp::PutMeta(MetaRow::new("vault", "settings", "theme", "dark")),
                    WriteOp::insert_record(record("b")),
                    WriteOp::PutMeta(MetaRow::new("vault", "state", "writes", "e")),
                ],
            )
            .await
            .unwrap();
            s.apply(
                stamp(3),
                vec![
                    WriteOp::DeleteRecord {
                        id: "a".into(),
                        if_expired_at: None,
                    },
                    WriteOp::DeleteMeta(MetaKey::new("vault", "settings", "theme")),
                ],
            )
            .await
            .unwrap();
            let seqs: Vec<u64> = s
                .changes_since(0, 100)
                .await
                .unwrap()
                .iter()
                .map(|c| c.seq)
                .collect();
            // b, a's tombstone, the theme's tombstone; the state row (local) has none.
            assert_eq!(seqs.len(), 3, "{seqs:?}");
            assert!(seqs.windows(2).all(|w| w[0] < w[1]), "{seqs:?}");
            let last = *seqs.last().unwrap();
            s.apply(stamp(4), vec![WriteOp::ExpectEmpty])
                .await
                .unwrap_err();
            s.apply(stamp(4), vec![WriteOp::ClearAll]).await.unwrap();
            assert_eq!(s.changes_since(0, 100).await.unwrap(), vec![]);
            s.apply(stamp(5), vec![WriteOp::insert_record(record("c"))])
                .await
                .unwrap();
            let after = s.changes_since(0, 100).await.unwrap();
            assert_eq!(after.len(), 1);
            assert!(after[0].seq > last, "{} after {last}", after[0].seq);
            // A puller that saw `last` before the clear still gets the new row.
            assert_eq!(s.changes_since(last, 100).await.unwrap(), after);
        });
    }

    /// A local row keeps seq 0 here; it is no version: `versions` answers `None` for it, and
    /// `ExpectVersion` of it holds for `None` only, as for a key the store does not have.
    #[test]
    fn a_local_row_is_no_version() {
        futures::executor::block_on(async {
            let s = SqlStorage::open(Sqlite::memory(), "vaultstore")
                .await
                .unwrap();
            let state = MetaKey::new("vault", "state", "writes");
            s.apply(
                stamp(2),
                vec![WriteOp::PutMeta(MetaRow::new(
                    "vault", "state", "writes", "e",
                ))],
            )
            .await
            .unwrap();
            let key = RowKey::Meta(state.clone());
            assert_eq!(
                s.versions(std::slice::from_ref(&key)).await.unwrap(),
                vec![None]
            );
            s.apply(
                stamp(3),
                vec![WriteOp::ExpectVersion {
                    key: key.clone(),
                    seq: None,
                }],
            )
            .await
            .unwrap();
            assert_eq!(
                s.apply(stamp(3), vec![WriteOp::ExpectVersion { key, seq: Some(0) }])
                    .await
                    .unwrap_err(),
                StorageError::MetaChanged(state)
            );
        });
    }

    /// The database names only the guard that failed; among several `ExpectVersion`s of a
    /// batch, the error names the key whose version moved.
    #[test]
    fn the_stale_version_among_several_is_named() {
        futures::executor::block_on(async {
            let s = SqlStorage::open(Sqlite::memory(), "vaultstore")
                .await
                .unwrap();
            s.apply(
                stamp(2),
                vec![
                    WriteOp::insert_record(record("a")),
                    WriteOp::insert_record(record("b")),
                    WriteOp::PutMeta(MetaRow::new("vault", "settings", "x", "1")),
                    WriteOp::PutMeta(MetaRow::new("vault", "settings", "y", "1")),
                ],
            )
            .await
            .unwrap();
            let (x, y) = (
                MetaKey::new("vault", "settings", "x"),
                MetaKey::new("vault", "settings", "y"),
            );
            let keys = [
                RowKey::Record("a".into()),
                RowKey::Record("b".into()),
                RowKey::Meta(x.clone()),
                RowKey::Meta(y.clone()),
            ];
            let read: Vec<Option<u64>> = s
                .versions(&keys)
                .await
                .unwrap()
                .into_iter()
                .map(|v| v.map(|v| v.seq))
                .collect();
            s.apply(
                stamp(3),
                vec![
                    WriteOp::DeleteRecord {
                        id: "b".into(),
                        if_expired_at: None,
                    },
                    WriteOp::PutMeta(MetaRow::new("vault", "settings", "y", "2")),
                ],
            )
            .await
            .unwrap();
            let expect = |ks: &[usize]| -> Vec<WriteOp> {
                ks.iter()
                    .map(|&i| WriteOp::ExpectVersion {
                        key: keys[i].clone(),
                        seq: read[i],
                    })
                    .collect()
            };
            assert_eq!(
                s.apply(stamp(4), expect(&[0, 1])).await.unwrap_err(),
                StorageError::Changed("b".into())
            );
            assert_eq!(
                s.apply(stamp(4), expect(&[2, 3])).await.unwrap_err(),
                StorageError::MetaChanged(y)
            );
        });
    }
}
