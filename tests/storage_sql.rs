//! The storage conformance suite on the SQL backend, natively over SQLite (rusqlite), and what
//! only this backend has: namespaces, the schema, index use, and writers on separate connections.
#![cfg(all(feature = "sql", not(target_arch = "wasm32")))]

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
    use vaultstore_wasm::storage::{Storage, StorageError, WriteOp};
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
        block_on(a.apply(vec![WriteOp::InsertRecord(record("id-1", "tk_same"))])).unwrap();
        // The same token and id in another namespace are another record.
        block_on(b.apply(vec![WriteOp::InsertRecord(record("id-1", "tk_same"))])).unwrap();
        block_on(b.apply(vec![WriteOp::ClearAll])).unwrap();
        assert_eq!(block_on(dump(&b)), (vec![], vec![]));
        assert_eq!(block_on(dump(&a)).0, vec![record("id-1", "tk_same")]);
        assert_eq!(
            block_on(a.apply(vec![WriteOp::ExpectEmpty])).unwrap_err(),
            StorageError::NotEmpty
        );
        block_on(b.apply(vec![WriteOp::ExpectEmpty])).unwrap();
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
                "vaultstore_guard",
                "vaultstore_meta",
                "vaultstore_records",
                "vaultstore_schema"
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
            matches!(&err, StorageError::Backend { name: Some(n), message } if n == "VersionError" && message.contains("newer release")),
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
}
