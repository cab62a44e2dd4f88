//! `unlock(secret)` natively, on the GlueSQL memory backend and on the SQL backend over SQLite
//! (the cases are in `tests/unlock/`; Chromium runs them on IndexedDB in `idb_browser.rs`).
#![cfg(all(feature = "gluesql", feature = "sql", not(target_arch = "wasm32")))]

mod sqlite;
mod unlock;

use sqlite::Sqlite;
use std::sync::Arc;
use vaultstore_wasm::Secret;
use vaultstore_wasm::query::RecordFilter;
use vaultstore_wasm::record::Record;
use vaultstore_wasm::storage::memory::GlueMemoryStorage;
use vaultstore_wasm::storage::sql::SqlStorage;
use vaultstore_wasm::storage::{
    MetaKey, MetaRow, Optimistic, Purge, Storage, StorageResult, WriteOp, WriteTransaction,
};

#[test]
fn unlock_on_the_memory_backend() {
    futures::executor::block_on(unlock::run_all(|_| async {
        let shared = Arc::new(GlueMemoryStorage::new().unwrap());
        (
            Box::new(shared.clone()) as Box<dyn Storage>,
            Box::new(shared) as Box<dyn Storage>,
        )
    }));
}

#[test]
fn unlock_on_the_sql_backend() {
    futures::executor::block_on(unlock::run_all(|_| async {
        let db = Arc::new(Sqlite::memory());
        let connect = || async {
            Box::new(SqlStorage::open(db.clone(), "vaultstore").await.unwrap()) as Box<dyn Storage>
        };
        (connect().await, connect().await)
    }));
}

/// A store that runs a job (another vault writing, a `lock()`) right before the first record
/// scan made through it, then answers as the store does.
struct JobBeforeScan {
    inner: Arc<GlueMemoryStorage>,
    job: std::sync::Mutex<Option<futures::future::BoxFuture<'static, ()>>>,
}

#[async_trait::async_trait]
impl Storage for JobBeforeScan {
    async fn records_by_tokens(&self, tokens: &[String]) -> StorageResult<Vec<Option<Record>>> {
        self.inner.records_by_tokens(tokens).await
    }
    async fn records_by_ids(&self, ids: &[String]) -> StorageResult<Vec<Option<Record>>> {
        self.inner.records_by_ids(ids).await
    }
    async fn query_records(&self, filter: &RecordFilter, now: i64) -> StorageResult<Vec<Record>> {
        self.inner.query_records(filter, now).await
    }
    async fn count_records(&self, filter: &RecordFilter, now: i64) -> StorageResult<u64> {
        self.inner.count_records(filter, now).await
    }
    async fn scan_records(
        &self,
        after_id: Option<&str>,
        limit: usize,
    ) -> StorageResult<Vec<Record>> {
        let job = self.job.lock().unwrap().take();
        if let Some(job) = job {
            job.await;
        }
        self.inner.scan_records(after_id, limit).await
    }
    async fn meta_get(&self, key: &MetaKey) -> StorageResult<Option<String>> {
        self.inner.meta_get(key).await
    }
    async fn meta_object(&self, object_type: &str, object_id: &str) -> StorageResult<Vec<MetaRow>> {
        self.inner.meta_object(object_type, object_id).await
    }
    async fn meta_find(
        &self,
        object_type: &str,
        key: &str,
        value: &str,
    ) -> StorageResult<Vec<MetaRow>> {
        self.inner.meta_find(object_type, key, value).await
    }
    async fn meta_count(&self, object_type: &str) -> StorageResult<u64> {
        self.inner.meta_count(object_type).await
    }
    async fn meta_all(&self) -> StorageResult<Vec<MetaRow>> {
        self.inner.meta_all().await
    }
    async fn apply(&self, batch: Vec<WriteOp>) -> StorageResult<()> {
        self.inner.apply(batch).await
    }
    async fn transaction(&self) -> StorageResult<Box<dyn WriteTransaction + '_>> {
        Ok(Box::new(Optimistic(self)))
    }
    async fn purge_expired(
        &self,
        at: i64,
        purge: Purge,
        limit: usize,
        also: Vec<WriteOp>,
    ) -> StorageResult<Option<u64>> {
        self.inner.purge_expired(at, purge, limit, also).await
    }
    async fn close(&self) {
        self.inner.close().await
    }
}

/// With identities on, a vault that never held an unlinked record is not scanned: unlock looks
/// up the secret's identity, then whether any record exists. Another tab creating the secret's
/// first record between the two must not make unlock refuse the secret that just got a record:
/// a "no" is only given when nobody wrote meanwhile, so unlock looks again and finds it.
#[test]
fn a_first_record_written_while_unlock_looks_is_not_refused() {
    futures::executor::block_on(async {
        let shared = Arc::new(GlueMemoryStorage::new().unwrap());
        let clock = unlock::HandClock::at(unlock::T0);
        let writer = Arc::new(unlock::open(Box::new(shared.clone()), true, &clock).await);
        let job = {
            let writer = writer.clone();
            Box::pin(async move {
                writer
                    .token_create(
                        "another tab",
                        &Secret::password(unlock::PASSWORD),
                        &Default::default(),
                    )
                    .await
                    .unwrap();
            }) as futures::future::BoxFuture<'static, ()>
        };
        let storage = JobBeforeScan {
            inner: shared,
            job: std::sync::Mutex::new(Some(job)),
        };
        let reader = unlock::open(Box::new(storage), true, &clock).await;
        assert_eq!(
            reader
                .unlock(&Secret::password(unlock::PASSWORD))
                .await
                .map_err(|e| e.to_string()),
            Ok(true)
        );
    });
}

/// API.md: after `lock()` returns, no call uses a key derived before it. A lock that lands while
/// unlock checks the key makes it reject `ABORTED`, and the key is not cached: the next call
/// derives again.
#[test]
fn a_lock_during_unlock_aborts_it() {
    futures::executor::block_on(async {
        let shared = Arc::new(GlueMemoryStorage::new().unwrap());
        let clock = unlock::HandClock::at(unlock::T0);
        let writer = unlock::open(Box::new(shared.clone()), false, &clock).await;
        writer
            .token_create(
                "v",
                &Secret::password(unlock::PASSWORD),
                &Default::default(),
            )
            .await
            .unwrap();
        let reader_cell: Arc<std::sync::OnceLock<std::sync::Weak<vaultstore_wasm::Vault>>> =
            Arc::default();
        let job = {
            let cell = reader_cell.clone();
            Box::pin(async move {
                if let Some(reader) = cell.get().and_then(std::sync::Weak::upgrade) {
                    reader.lock();
                }
            }) as futures::future::BoxFuture<'static, ()>
        };
        let storage = JobBeforeScan {
            inner: shared,
            job: std::sync::Mutex::new(Some(job)),
        };
        let reader = Arc::new(unlock::open(Box::new(storage), false, &clock).await);
        reader_cell.set(Arc::downgrade(&reader)).unwrap();
        let secret = Secret::password(unlock::PASSWORD);
        match reader.unlock(&secret).await {
            Err(e) => assert_eq!(e.code(), vaultstore_wasm::ErrorCode::Aborted, "{e}"),
            Ok(b) => panic!("a lock during unlock: expected ABORTED, got Ok({b})"),
        }
        let derived = reader.key_derivations();
        assert_eq!(
            reader.unlock(&secret).await.map_err(|e| e.to_string()),
            Ok(true)
        );
        assert_eq!(
            reader.key_derivations(),
            derived + 1,
            "the key derived before the lock was not kept"
        );
    });
}
