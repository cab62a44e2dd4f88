//! Helpers shared by the native vault tests.
#![allow(dead_code)]

use async_trait::async_trait;
use futures::channel::oneshot;
use futures::future::BoxFuture;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use vaultstore_wasm::platform::{Clock, Platform};
use vaultstore_wasm::query::RecordFilter;
use vaultstore_wasm::record::Record;
use vaultstore_wasm::storage::memory::GlueMemoryStorage;
use vaultstore_wasm::storage::{
    Change, MetaFind, MetaKey, MetaRow, Optimistic, Purge, Row, RowKey, Stamp, Storage,
    StorageError, StorageResult, Stored, WriteOp, WriteTransaction,
};
use vaultstore_wasm::{ErrorCode, Result, Secret, SyncTransport, Vault, VaultError, VaultOptions};

pub const PASSWORD: &str = "correct horse battery";
pub const OTHER: &str = "another long password";

pub fn pw(p: &str) -> Secret {
    Secret::password(p)
}

/// Cheap KDF settings: these tests are not about KDF cost.
pub fn options() -> VaultOptions {
    VaultOptions {
        kdf_iterations: 1_000,
        ..VaultOptions::default()
    }
}

pub fn run<T>(f: impl std::future::Future<Output = T>) -> T {
    futures::executor::block_on(f)
}

/// A clock the test moves by hand.
#[derive(Clone)]
pub struct TestClock(pub Arc<AtomicI64>);

impl TestClock {
    pub fn new(at: i64) -> Self {
        TestClock(Arc::new(AtomicI64::new(at)))
    }
    pub fn set(&self, at: i64) {
        self.0.store(at, Ordering::SeqCst);
    }
    pub fn advance(&self, ms: i64) {
        self.0.fetch_add(ms, Ordering::SeqCst);
    }
}

impl Clock for TestClock {
    fn now_ms(&self) -> i64 {
        self.0.load(Ordering::SeqCst)
    }
}

pub const T0: i64 = 1_700_000_000_000;

/// Every replicated row a store holds, by key (a walk of its change feed), for comparing
/// replicas (SYNC.md 1).
pub async fn replicated(store: &dyn Storage) -> BTreeMap<RowKey, Row> {
    let mut rows = BTreeMap::new();
    let mut after = 0;
    loop {
        let page: Vec<Change> = store.changes_since(after, 500).await.unwrap();
        let Some(last) = page.last() else {
            return rows;
        };
        after = last.seq;
        for change in page {
            rows.insert(change.row.key(), change.row);
        }
    }
}

/// Wraps a backend; can be told to fail the next batch writes, to pause at the next identity
/// lookup, or to run a job (another vault writing, a `lock()`) before the next record scan, and
/// counts round trips.
#[derive(Clone)]
pub struct Probe {
    pub fail_writes: Arc<AtomicBool>,
    pub batches: Arc<AtomicUsize>,
    pub reads: Arc<AtomicUsize>,
    pause_find: Arc<Mutex<Option<Pause>>>,
    before_scan: Arc<Mutex<Option<BoxFuture<'static, ()>>>>,
}

/// "Reached the lookup" to the test, and the test's "go on".
type Pause = (oneshot::Sender<()>, oneshot::Receiver<()>);

impl Probe {
    pub fn new() -> Self {
        Probe {
            fail_writes: Arc::default(),
            batches: Arc::default(),
            reads: Arc::default(),
            pause_find: Arc::default(),
            before_scan: Arc::default(),
        }
    }

    /// Run `job` to completion right before the next `scan_records`, then answer it.
    pub fn before_next_scan(&self, job: impl std::future::Future<Output = ()> + Send + 'static) {
        *self.before_scan.lock().unwrap() = Some(Box::pin(job));
    }

    /// Stop the next `meta_find` (an identity lookup, made while the operation holds its master
    /// key) until the test says go: returns the "reached" receiver and the "go" sender.
    pub fn pause_next_find(&self) -> (oneshot::Receiver<()>, oneshot::Sender<()>) {
        let (reached, on_reached) = oneshot::channel();
        let (go, on_go) = oneshot::channel();
        *self.pause_find.lock().unwrap() = Some((reached, on_go));
        (on_reached, go)
    }
}

pub struct ProbedStorage<S> {
    pub inner: S,
    pub probe: Probe,
}

impl<S> ProbedStorage<S> {
    fn read(&self) {
        self.probe.reads.fetch_add(1, Ordering::SeqCst);
    }
}

#[async_trait]
impl<S: Storage> Storage for ProbedStorage<S> {
    async fn records_by_tokens(&self, tokens: &[String]) -> StorageResult<Vec<Option<Record>>> {
        self.read();
        self.inner.records_by_tokens(tokens).await
    }
    async fn records_by_ids(&self, ids: &[String]) -> StorageResult<Vec<Option<Record>>> {
        self.read();
        self.inner.records_by_ids(ids).await
    }
    async fn query_records(&self, filter: &RecordFilter, now: i64) -> StorageResult<Vec<Record>> {
        self.read();
        self.inner.query_records(filter, now).await
    }
    async fn count_records(&self, filter: &RecordFilter, now: i64) -> StorageResult<u64> {
        self.read();
        self.inner.count_records(filter, now).await
    }
    async fn scan_records(
        &self,
        after_id: Option<&str>,
        limit: usize,
    ) -> StorageResult<Vec<Record>> {
        self.read();
        let job = self.probe.before_scan.lock().unwrap().take();
        if let Some(job) = job {
            job.await;
        }
        self.inner.scan_records(after_id, limit).await
    }
    async fn meta_get(&self, key: &MetaKey) -> StorageResult<Option<String>> {
        self.read();
        self.inner.meta_get(key).await
    }
    async fn meta_object(&self, object_type: &str, object_id: &str) -> StorageResult<Vec<MetaRow>> {
        self.read();
        self.inner.meta_object(object_type, object_id).await
    }
    async fn meta_find(
        &self,
        object_type: &str,
        key: &str,
        value: &str,
    ) -> StorageResult<Vec<MetaRow>> {
        self.read();
        let stop = self.probe.pause_find.lock().unwrap().take();
        if let Some((reached, go)) = stop {
            let _ = reached.send(());
            let _ = go.await;
        }
        self.inner.meta_find(object_type, key, value).await
    }
    async fn records_by_tokens_and_meta(
        &self,
        tokens: &[String],
        find: MetaFind<'_>,
    ) -> StorageResult<(Vec<Option<Record>>, Vec<MetaRow>)> {
        self.read();
        let stop = self.probe.pause_find.lock().unwrap().take();
        if let Some((reached, go)) = stop {
            let _ = reached.send(());
            let _ = go.await;
        }
        self.inner.records_by_tokens_and_meta(tokens, find).await
    }
    async fn meta_count(&self, object_type: &str) -> StorageResult<u64> {
        self.read();
        self.inner.meta_count(object_type).await
    }
    async fn meta_all(&self) -> StorageResult<Vec<MetaRow>> {
        self.read();
        self.inner.meta_all().await
    }
    async fn records_linked_to(
        &self,
        identity_id: &str,
        after_id: Option<&str>,
        limit: usize,
    ) -> StorageResult<Vec<Record>> {
        self.read();
        self.inner
            .records_linked_to(identity_id, after_id, limit)
            .await
    }
    async fn changes_since(&self, after_seq: u64, limit: usize) -> StorageResult<Vec<Change>> {
        self.read();
        self.inner.changes_since(after_seq, limit).await
    }
    async fn dirty_changes(&self, after: u64, limit: usize) -> StorageResult<Vec<Change>> {
        self.read();
        self.inner.dirty_changes(after, limit).await
    }
    async fn versions(&self, keys: &[RowKey]) -> StorageResult<Vec<Option<Stored>>> {
        self.read();
        self.inner.versions(keys).await
    }
    async fn linked_count(&self, identity_id: Option<&str>) -> StorageResult<u64> {
        self.read();
        self.inner.linked_count(identity_id).await
    }
    async fn apply(&self, stamp: Stamp, batch: Vec<WriteOp>) -> StorageResult<()> {
        self.probe.batches.fetch_add(1, Ordering::SeqCst);
        if self.probe.fail_writes.load(Ordering::SeqCst) {
            return Err(StorageError::Backend {
                original: Default::default(),
                name: Some("InjectedFailure".into()),
                message: "the test failed this write".into(),
            });
        }
        self.inner.apply(stamp, batch).await
    }
    async fn transaction(&self) -> StorageResult<Box<dyn WriteTransaction + '_>> {
        // Through `apply`, so the probe sees (and can fail) the commit.
        Ok(Box::new(Optimistic(self)))
    }
    async fn purge_expired(
        &self,
        stamp: Stamp,
        purge: Purge,
        limit: usize,
        also: Vec<WriteOp>,
    ) -> StorageResult<Option<u64>> {
        self.inner.purge_expired(stamp, purge, limit, also).await
    }
    async fn close(&self) {
        self.inner.close().await
    }
}

/// A vault on a fresh GlueSQL store, with a test clock.
pub async fn vault_with(options: VaultOptions) -> (Vault, TestClock) {
    let (vault, clock, _) = probed_vault(options).await;
    (vault, clock)
}

pub async fn vault() -> Vault {
    vault_with(options()).await.0
}

pub async fn identity_vault() -> Vault {
    vault_with(VaultOptions {
        password_identity: true,
        ..options()
    })
    .await
    .0
}

/// A vault whose storage the test can watch and break.
pub async fn probed_vault(options: VaultOptions) -> (Vault, TestClock, Probe) {
    let clock = TestClock::new(T0);
    let probe = Probe::new();
    let storage = ProbedStorage {
        inner: GlueMemoryStorage::new().unwrap(),
        probe: probe.clone(),
    };
    let platform = Platform {
        clock: Arc::new(clock.clone()),
        ..Platform::default()
    };
    let vault = Vault::open_with(Box::new(storage), options, platform)
        .await
        .unwrap();
    (vault, clock, probe)
}

/// Assert an error's code, and return it for more checks.
#[track_caller]
pub fn code<T: std::fmt::Debug>(result: Result<T>, expected: ErrorCode) -> VaultError {
    match result {
        Err(e) => {
            assert_eq!(e.code(), expected, "{e}");
            e
        }
        Ok(v) => panic!("expected {expected}, got Ok({v:?})"),
    }
}

/// Give the executor one turn: two futures joined with this inside interleave at this point
/// (two tabs' or two replicas' syncs, each request answered a turn later).
pub async fn yield_once() {
    let mut yielded = false;
    std::future::poll_fn(|cx| {
        if yielded {
            return std::task::Poll::Ready(());
        }
        yielded = true;
        cx.waker().wake_by_ref();
        std::task::Poll::Pending
    })
    .await
}

/// A sync transport that answers each request a turn later: two syncs over one interleave at
/// every request (a push landing between another replica's pull and push).
pub struct Turns<'a, T>(pub &'a T);

#[async_trait]
impl<T: SyncTransport + Sync> SyncTransport for Turns<'_, T> {
    async fn exchange(&self, body: String) -> Result<(u16, Vec<u8>)> {
        yield_once().await;
        self.0.exchange(body).await
    }
}
