//! The IndexedDB backend's writes: the one readwrite transaction a batch runs in (and a rekey
//! reads and commits through), how each op's precondition is checked inside it, and how its
//! outcome (commit, abort, the error that caused it) is awaited. See `indexeddb.rs`.

use super::*;

/// One readwrite transaction over both stores: what [`Storage::apply`] runs a batch in, and what
/// a rekey reads and commits through (see [`Storage::transaction`]). While it is open IndexedDB
/// runs no other readwrite transaction on these stores, in any tab.
pub(super) struct IdbWriteTransaction<'a> {
    storage: &'a IdbStorage,
    /// Owns the handlers `outcome` listens with: kept until the outcome is known (or, if the
    /// caller drops this without committing, handed to JavaScript so a late event finds them).
    tx: Option<Transaction>,
    outcome: Option<Outcome>,
    r: Reader,
    /// The versions read through [`WriteTransaction::versions`] in this transaction, by key.
    /// Nothing else writes while it is open, so they are still stored when the batch begins.
    read: std::cell::RefCell<HashMap<RowKey, ReadVersion>>,
}

/// A row's version as this transaction read it: its seq (the live row's, else the
/// tombstone's; `None`: neither) and whether a tombstone was stored.
#[derive(Clone, Copy)]
struct ReadVersion {
    seq: Option<u64>,
    tombstone: bool,
}

impl IdbStorage {
    pub(super) fn begin(&self) -> StorageResult<IdbWriteTransaction<'_>> {
        let mut tx = self.open_transaction(TransactionMode::ReadWrite)?;
        let outcome = Outcome::watch(&mut tx);
        let r = self.reader_in(&tx)?;
        Ok(IdbWriteTransaction {
            storage: self,
            tx: Some(tx),
            outcome: Some(outcome),
            r,
            read: Default::default(),
        })
    }
}

impl Drop for IdbWriteTransaction<'_> {
    fn drop(&mut self) {
        if let Some(mut tx) = self.tx.take() {
            // Not committed through us: IndexedDB still ends it (committing whatever was
            // written, which is nothing, as writes only happen in `commit`), and the handlers
            // must outlive that event.
            tx.forget_callbacks();
            if let Some(outcome) = self.outcome.take() {
                outcome.forget();
            }
        }
    }
}

impl IdbWriteTransaction<'_> {
    /// Run `batch` in this transaction and commit it, reading the seq counter first.
    pub(super) async fn commit_batch(self, stamp: Stamp, batch: Vec<WriteOp>) -> StorageResult<()> {
        match self.commit_with(stamp, batch, None).await? {
            Committed::Yes => Ok(()),
            // Only a batch that assumed a counter finds it moved.
            Committed::CounterMoved => Err(StorageError::Backend {
                original: Default::default(),
                name: None,
                message: "IndexedDB batch assumed a seq counter it was not given".into(),
            }),
        }
    }

    /// Run `batch` taking the seq counter to be `assumed` (what this connection last
    /// committed) instead of waiting to read it first; it is checked with the batch's other
    /// preconditions: if another connection moved it meanwhile, nothing is written and the
    /// answer is [`Committed::CounterMoved`].
    pub(super) async fn commit_assuming(
        self,
        stamp: Stamp,
        batch: Vec<WriteOp>,
        assumed: u64,
    ) -> StorageResult<Committed> {
        self.commit_with(stamp, batch, Some(assumed)).await
    }

    async fn commit_with(
        mut self,
        stamp: Stamp,
        batch: Vec<WriteOp>,
        assumed_seq: Option<u64>,
    ) -> StorageResult<Committed> {
        let outcome = self.outcome.take().ok_or(StorageError::Closed)?;
        let mut writer = Batch {
            assumed_seq,
            counter_check: None,
            counter_moved: false,
            sole_mark: false,
            r: self.r.clone(),
            stamp,
            rows: HashMap::new(),
            checks: Vec::new(),
            inserted: Vec::new(),
            versions: Vec::new(),
            batch_tokens: HashMap::new(),
            tombstoned: Default::default(),
            record_tombstones: false,
            tombstone_ids: None,
            seq: None,
            writes: None,
            writes_changed: false,
            deleted: 0,
            tally: Some((0, 0)),
            cleared: false,
            read: self.read.take(),
            wrote: false,
        };
        let checked = match writer.run(batch).await {
            Ok(()) => writer.verify().await,
            Err(e) => Err(e),
        };
        let failure = match checked {
            // Every request is issued and every check passed. IndexedDB commits once the last
            // request is done; no explicit `commit()`: a write can still fail after the checks
            // (an `add` or `put` refused by the unique token index, a quota error), and Firefox
            // (ESR 153) then commits every other write of a transaction whose `commit()` was
            // already called, where the spec and Chromium abort it (w3c/IndexedDB#437: abort()
            // throws once committing). That was a `tokenCreateCustom` of a taken token reported
            // done, and half a batch kept.
            Ok(()) => outcome.settled().await.err(),
            Err(e) => {
                // Nothing of the batch may remain: abort (a failed request may already have),
                // and wait for the abort to finish, so the transaction's handlers outlive it.
                let _ = writer.r.records.transaction().abort();
                let cause = outcome.settled().await.err();
                // A read that failed because a write issued before it had already aborted the
                // transaction says only "AbortError"; the request that failed names the cause.
                Some(match (e, cause) {
                    (StorageError::Backend { .. }, Some(cause)) => cause,
                    (e, _) => e,
                })
            }
        };
        // The transaction has ended: its handlers may go.
        drop(self.tx.take());
        let seq_counter = &self.storage.seq_counter;
        match failure {
            None => {
                if let Some((_, last)) = writer.seq {
                    seq_counter.set(Some(last));
                }
                let tally = &self.storage.tally;
                tally.set(match (tally.get(), writer.seq, writer.tally) {
                    // The counter did not move and the batch knows it left the counts (only a
                    // `ClearAll` removes records without moving it).
                    (kept, None, Some((0, 0))) => kept,
                    (Some(before), Some((read, last)), Some(change)) if before.seq == read => {
                        before.moved(last, change)
                    }
                    _ => None,
                });
                let estimate = &self.storage.records_estimate;
                estimate.set(match estimate.get() {
                    Some(n) if !writer.cleared => {
                        Some((n + writer.inserted.len() as u64).saturating_sub(writer.deleted))
                    }
                    _ => None,
                });
                Ok(Committed::Yes)
            }
            Some(_) if writer.counter_moved => {
                seq_counter.set(None);
                Ok(Committed::CounterMoved)
            }
            Some(e) => {
                // Whatever this batch found, it did not write: the next one reads the counter.
                seq_counter.set(None);
                Err(self
                    .storage
                    .diagnose(e, &writer.inserted, &writer.versions)
                    .await)
            }
        }
    }
}

/// What became of a batch that did not fail ([`IdbWriteTransaction::commit_assuming`]).
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Committed {
    Yes,
    /// Nothing was written: the seq counter was not at the value the batch assumed (another
    /// connection, or another batch of this one, wrote first). Run it again, reading it.
    CounterMoved,
}

#[async_trait(?Send)]
impl WriteTransaction for IdbWriteTransaction<'_> {
    async fn records_by_ids(&self, ids: &[String]) -> StorageResult<Vec<Option<Record>>> {
        self.r.records_by(ids, Lookup::Id).await
    }
    async fn scan_records(
        &self,
        after_id: Option<&str>,
        limit: usize,
    ) -> StorageResult<Vec<Record>> {
        self.r.scan(after_id, limit).await
    }
    async fn meta_get(&self, key: &MetaKey) -> StorageResult<Option<String>> {
        self.r.meta_get(key).await
    }
    async fn meta_find(
        &self,
        object_type: &str,
        key: &str,
        value: &str,
    ) -> StorageResult<Vec<MetaRow>> {
        self.r.objects_holding(object_type, key, value).await
    }
    async fn meta_count(&self, object_type: &str) -> StorageResult<u64> {
        self.r.meta_count(object_type).await
    }
    async fn records_linked_to(
        &self,
        identity_id: &str,
        after_id: Option<&str>,
        limit: usize,
    ) -> StorageResult<Vec<Record>> {
        self.r.linked_to(identity_id, after_id, limit).await
    }
    async fn linked_count(&self, identity_id: Option<&str>) -> StorageResult<u64> {
        self.r.linked_count(identity_id).await
    }
    async fn versions(&self, keys: &[RowKey]) -> StorageResult<Vec<Option<Stored>>> {
        let found = self.r.raw_versions(keys).await?;
        let mut read = self.read.borrow_mut();
        // A loop, not a `collect` into a `Result` (smaller in the engine).
        let mut versions = Vec::with_capacity(keys.len());
        for (key, found) in keys.iter().zip(found) {
            let Some((live, tombstone)) = found else {
                versions.push(None);
                continue;
            };
            let stored = stored_from_js(key, &live, &tombstone)?;
            read.insert(
                key.clone(),
                ReadVersion {
                    seq: stored.as_ref().map(|s| s.seq),
                    tombstone: !tombstone.is_undefined(),
                },
            );
            versions.push(stored);
        }
        Ok(versions)
    }
    async fn records_by_tokens(&self, tokens: &[String]) -> StorageResult<Vec<Option<Record>>> {
        self.r.records_by(tokens, Lookup::Token).await
    }
    async fn commit(self: Box<Self>, stamp: Stamp, batch: Vec<WriteOp>) -> StorageResult<()> {
        // A rekey has read in this transaction already: one more read costs no extra wait.
        (*self).commit_batch(stamp, batch).await
    }
}

impl IdbStorage {
    /// An `add` or `put` that broke a uniqueness constraint fails the whole transaction with a
    /// bare `ConstraintError`, which does not say whether the token or the id was taken. The
    /// batch is rolled back by now, so look the written tokens up to tell the caller which: a
    /// merged row's token held by another id, an inserted token held by anyone, else the id.
    async fn diagnose(
        &self,
        e: StorageError,
        inserted: &[(String, String)],
        versions: &[(String, String)],
    ) -> StorageError {
        let constraint =
            matches!(&e, StorageError::Backend { name: Some(n), .. } if n == "ConstraintError");
        if !constraint || (inserted.is_empty() && versions.is_empty()) {
            return e;
        }
        let Ok(r) = self.reader() else { return e };
        let tokens: Vec<String> = versions
            .iter()
            .chain(inserted)
            .map(|(_, t)| t.clone())
            .collect();
        let Ok(found) = r.records_by(&tokens, Lookup::Token).await else {
            return e;
        };
        let Some((versions_found, inserted_found)) = found.split_at_checked(versions.len()) else {
            return e;
        };
        for ((id, _), holder) in versions.iter().zip(versions_found) {
            if let Some(holder) = holder
                && holder.id != *id
            {
                return StorageError::TokenTaken(holder.token.clone());
            }
        }
        if let Some(taken) = inserted_found.iter().flatten().next() {
            return StorageError::TokenTaken(taken.token.clone());
        }
        match inserted.first() {
            Some((id, _)) => StorageError::IdTaken(id.clone()),
            None => e,
        }
    }
}

/// How a readwrite transaction ended. A request that fails fires `error` (on the request, then
/// the transaction) *before* the transaction aborts, so the cause is taken from that request;
/// an abort without a failed request (a `QuotaExceededError` raised at commit) carries its cause
/// in `transaction.error`, set by the time `abort` fires.
struct Outcome {
    done: futures::channel::oneshot::Receiver<bool>,
    cause: Rc<std::cell::RefCell<Option<JsValue>>>,
    /// The `error` listener. Not idb's `on_error`: that is a once-closure, and every failed
    /// request's error bubbles to the transaction (an abort fails each pending request), so a
    /// second call threw "FnOnce called more than once" into the page. Kept until the outcome is
    /// known: `error` events all come before `abort`.
    on_error: Option<wasm_bindgen::closure::Closure<dyn FnMut(web_sys::Event)>>,
}

/// `target.error`, if the event's target has one.
fn target_error(event: &web_sys::Event) -> Option<JsValue> {
    event
        .target()
        .and_then(|target| Reflect::get(&target, &JsValue::from_str("error")).ok())
        .filter(|e| !e.is_null() && !e.is_undefined())
}

impl Outcome {
    fn watch(tx: &mut Transaction) -> Outcome {
        let (done_tx, done) = futures::channel::oneshot::channel();
        let done_tx = Rc::new(Cell::new(Some(done_tx)));
        let cause: Rc<std::cell::RefCell<Option<JsValue>>> = Rc::default();
        let finish = |committed: bool| {
            let (done_tx, cause) = (done_tx.clone(), cause.clone());
            move |event: web_sys::Event| {
                if !committed && cause.borrow().is_none() {
                    *cause.borrow_mut() = target_error(&event);
                }
                if let Some(tx) = done_tx.take() {
                    let _ = tx.send(committed);
                }
            }
        };
        tx.on_complete(finish(true));
        tx.on_abort(finish(false));
        let first = cause.clone();
        // The first error is the cause; those after it are the aborts of pending requests.
        let on_error = wasm_bindgen::closure::Closure::<dyn FnMut(web_sys::Event)>::new(
            move |event: web_sys::Event| {
                if first.borrow().is_none() {
                    *first.borrow_mut() = target_error(&event);
                }
            },
        );
        // The raw transaction, reached through one of its stores (idb hands out no reference).
        if let Ok(store) = tx.object_store(RECORDS) {
            web_sys::IdbTransaction::from(store.transaction())
                .set_onerror(Some(on_error.as_ref().unchecked_ref()));
        }
        Outcome {
            done,
            cause,
            on_error: Some(on_error),
        }
    }

    /// The transaction ends without us waiting for it: its `error` listener must outlive it.
    fn forget(mut self) {
        if let Some(listener) = self.on_error.take() {
            listener.forget();
        }
    }

    /// Wait for `complete` or `abort`.
    async fn settled(mut self) -> StorageResult<()> {
        if (&mut self.done).await.unwrap_or(false) {
            return Ok(());
        }
        Err(match self.cause.borrow_mut().take() {
            Some(error) => from_js(&error, "write"),
            None => StorageError::Backend {
                original: Default::default(),
                name: Some("AbortError".into()),
                message: "IndexedDB aborted the write; nothing was changed".into(),
            },
        })
    }
}

/// A precondition whose read was issued in request order and is checked once it resolves. The
/// writes after it are issued at once, without waiting: if a check fails, the transaction is
/// aborted and they never commit.
enum Check {
    /// `InsertMeta`: the key must not exist yet.
    Absent(MetaKey, StoreFuture<Option<JsValue>>),
    /// A unique value: no row other than `key` may hold it.
    Unique(MetaKey, StoreFuture<Vec<JsValue>>),
    /// `ExpectMeta`: the row must hold this value.
    Holds(MetaKey, Option<String>, StoreFuture<Option<JsValue>>),
    /// A put of the unlinked mark ([`unlinked_records`]), made only if the row does not hold
    /// its value already: almost every batch sealed with a master key sets it to the `"true"`
    /// it holds, and a put costs the browser an index update where a read issued with the
    /// batch's other reads costs no wait.
    Mark(MetaRow, StoreFuture<Option<JsValue>>),
    /// `InsertRecord`: no tombstone may have the id (record ids are never reused).
    NoTombstone(String, StoreFuture<Option<JsValue>>),
    /// `ExpectVersion`: the key's live row or tombstone must still have this seq.
    Version(
        RowKey,
        Option<u64>,
        StoreFuture<Option<JsValue>>,
        StoreFuture<Option<JsValue>>,
    ),
}

type StoreFuture<T> = std::pin::Pin<Box<dyn std::future::Future<Output = Result<T, idb::Error>>>>;

fn pending<T, R>(
    request: Result<R, idb::Error>,
    doing: &'static str,
) -> StorageResult<StoreFuture<T>>
where
    R: std::future::IntoFuture<Output = Result<T, idb::Error>> + 'static,
{
    let request = request.map_err(idb_error(doing))?;
    Ok(Box::pin(std::future::IntoFuture::into_future(request)))
}

/// One batch's writes, inside one readwrite transaction. Requests run in the order they are
/// issued, so a read issued after a write sees it; only reads are awaited, so a batch of N
/// records costs a few round trips, not N.
struct Batch {
    r: Reader,
    stamp: Stamp,
    /// The batch's view of the records it changes or deletes, by id (`None`: absent).
    rows: HashMap<String, Option<Record>>,
    checks: Vec<Check>,
    /// `(id, token)` of every inserted record, to tell a taken token from a taken id.
    inserted: Vec<(String, String)>,
    /// `(id, token)` of every live record a `PutVersion` wrote, likewise.
    versions: Vec<(String, String)>,
    /// The id holding each token this batch wrote and did not remove again.
    batch_tokens: HashMap<String, String>,
    /// The record ids this batch left a tombstone for (an insert of one fails).
    tombstoned: std::collections::HashSet<String>,
    /// Whether the store held a record tombstone when the batch began: only then do inserts
    /// look for one of their id (a vault that never deleted pays nothing).
    record_tombstones: bool,
    /// The ids of every record tombstone, when the batch read them all (no more than it
    /// inserts): its inserts check them here instead of with a request each.
    tombstone_ids: Option<js_sys::Set>,
    /// The seq counter `(as read, last given out)`, read once by a batch that writes a
    /// replicated row or the write epoch (or taken to be `assumed_seq`).
    seq: Option<(u64, u64)>,
    /// The write epoch ([`write_epoch`]) as the batch's ops so far leave it, kept in the
    /// counter's row (valid once `seq` is, but for a batch that assumes the counter, which
    /// renews it without reading it first), and whether an op changed it.
    writes: Option<String>,
    writes_changed: bool,
    /// The seq counter as this connection last committed it, if the batch may assume it is
    /// still stored rather than wait for it ([`IdbStorage::may_assume_seq`]).
    assumed_seq: Option<u64>,
    /// The read that checks an assumed counter, and whether it found the counter moved.
    counter_check: Option<(u64, StoreFuture<Option<JsValue>>)>,
    counter_moved: bool,
    /// Whether the batch's one op on the unlinked mark is its only op on that row (and nothing
    /// clears the store), so its put may wait until the checks pass ([`Check::Mark`]).
    sole_mark: bool,
    /// Records deleted, and whether the stores were cleared: for the record count estimate.
    deleted: u64,
    cleared: bool,
    /// How the batch changes the live and soft-deleted record counts (`None`: not known, as
    /// for a merge's rows, which replace what the batch did not read).
    tally: Option<(i64, i64)>,
    /// The versions the transaction read before the batch ([`IdbWriteTransaction::read`]).
    read: HashMap<RowKey, ReadVersion>,
    /// Whether an op of the batch may have written yet: until then `read` is what is stored.
    wrote: bool,
}

/// The row `counters["seq"]`: the last seq given out and the write epoch ([`write_epoch`]).
/// One row for both, because every batch that renews the epoch (each `tokenCreate`) also
/// writes the counter, and in IndexedDB what a small put costs is the request, not its row:
/// the epoch as a meta row was one more put per write (`tests/benches/idb-model.mjs`, shape
/// `epochRow`).
///
/// Stored as the seq alone while there is no epoch (as schema 2 first wrote it), else as
/// `{ seq, writes }`.
#[derive(Default)]
pub(super) struct Counter {
    pub seq: u64,
    pub writes: Option<String>,
}

impl Counter {
    /// The row as read (`None`: never written, so 0 and no epoch).
    pub(super) fn read(read: Result<Option<JsValue>, idb::Error>) -> StorageResult<Self> {
        let Some(row) = read.map_err(idb_error("read the seq counter"))? else {
            return Ok(Self::default());
        };
        let (seq, writes) = if row.is_object() {
            (get(&row, "seq"), get(&row, "writes").as_string())
        } else {
            (row, None)
        };
        let seq = seq
            .as_f64()
            .filter(|n| n.is_finite() && *n >= 0.0)
            .ok_or_else(|| not_ours("a seq counter"))?;
        Ok(Self {
            seq: seq as u64,
            writes,
        })
    }
}

/// The counter's row ([`Counter`]) holding `seq` and `writes`.
fn counter_row(seq: u64, writes: Option<&str>) -> JsValue {
    let seq = JsValue::from_f64(seq as f64);
    match writes {
        None => seq,
        Some(writes) => {
            let o = Object::new();
            set(&o, "seq", &seq);
            set(&o, "writes", &writes.into());
            o.into()
        }
    }
}

/// Whether `op` is a meta op on the write epoch, which this backend keeps in the counter's row
/// ([`Batch::apply_to_write_epoch`]).
pub(super) fn on_write_epoch(op: &WriteOp) -> bool {
    match op {
        WriteOp::InsertMeta(row) | WriteOp::PutMeta(row) | WriteOp::PutSharedMeta(row) => {
            is_write_epoch(&row.key)
        }
        WriteOp::DeleteMeta(key) | WriteOp::ExpectMeta { key, .. } => is_write_epoch(key),
        _ => false,
    }
}

/// The value of a meta row as read (`None`: absent).
async fn stored_value(found: StoreFuture<Option<JsValue>>) -> StorageResult<Option<String>> {
    let found = found.await.map_err(idb_error("read a meta row"))?;
    Ok(found
        .as_ref()
        .map(meta_from_js)
        .transpose()?
        .map(|m| m.value))
}

/// Whether `key` is named by exactly one op of `batch`, and no op clears the store: that op
/// may then be applied after the others without changing what any of them sees.
fn sole_op_on(batch: &[WriteOp], key: &MetaKey) -> bool {
    let mut ops = 0;
    for op in batch {
        match op {
            WriteOp::InsertMeta(row) | WriteOp::PutMeta(row) | WriteOp::PutSharedMeta(row)
                if row.key == *key =>
            {
                ops += 1
            }
            WriteOp::DeleteMeta(k) | WriteOp::ExpectMeta { key: k, .. } if k == key => ops += 1,
            WriteOp::ClearAll => return false,
            _ => {}
        }
    }
    ops == 1
}

/// Whether `op` may write a replicated row (and so needs the seq counter).
pub(super) fn writes_replicated(op: &WriteOp) -> bool {
    match op {
        WriteOp::InsertMeta(row) | WriteOp::PutMeta(row) | WriteOp::PutSharedMeta(row) => {
            is_replicated(&row.key)
        }
        WriteOp::DeleteMeta(key) => is_replicated(key),
        WriteOp::ExpectMeta { .. }
        | WriteOp::ExpectVersion { .. }
        | WriteOp::ExpectUnlinked { .. }
        | WriteOp::MarkClean { .. }
        | WriteOp::DropTombstone { .. }
        | WriteOp::ExpectEmpty
        | WriteOp::ExpectNoData
        | WriteOp::ClearAll => false,
        WriteOp::InsertRecord(_)
        | WriteOp::ChangeRecord { .. }
        | WriteOp::DeleteRecord { .. }
        | WriteOp::DeleteIdentityIfUnlinked { .. }
        | WriteOp::PutVersion { .. } => true,
    }
}

impl Batch {
    async fn run(&mut self, batch: Vec<WriteOp>) -> StorageResult<()> {
        self.sole_mark = sole_op_on(&batch, &unlinked_records());
        self.prefetch(&batch).await?;
        let mut ops = batch.into_iter().peekable();
        while let Some(op) = ops.next() {
            if let WriteOp::DeleteRecord { .. } = op {
                // A run of deletes prunes the identities they unlink once, at its end: deletes
                // only remove references, so this prunes exactly what pruning after each would.
                let mut identities = Vec::new();
                self.delete_record(op, &mut identities)?;
                while let Some(next @ WriteOp::DeleteRecord { .. }) = ops.peek().cloned() {
                    ops.next();
                    self.delete_record(next, &mut identities)?;
                }
                sorting::sort(&mut identities);
                identities.dedup();
                self.prune_identities(identities).await?;
                self.wrote = true;
            } else if let WriteOp::MarkClean { key, dirty } = op {
                // A run of marks (a push acknowledged) reads its rows in one round trip.
                let mut marks = vec![(key, dirty)];
                while let Some(WriteOp::MarkClean { key, dirty }) = ops.peek().cloned() {
                    ops.next();
                    marks.push((key, dirty));
                }
                self.mark_clean(marks).await?;
                self.wrote = true;
            } else {
                let check = matches!(
                    op,
                    WriteOp::ExpectVersion { .. }
                        | WriteOp::ExpectMeta { .. }
                        | WriteOp::ExpectUnlinked { .. }
                        | WriteOp::ExpectEmpty
                        | WriteOp::ExpectNoData
                );
                if on_write_epoch(&op) {
                    self.apply_to_write_epoch(&op)?;
                } else {
                    self.apply(op).await?;
                }
                if !check {
                    self.wrote = true;
                }
            }
        }
        if let Some((read, last)) = self.seq
            && (last > read || self.writes_changed)
        {
            self.r
                .counters
                .put(
                    &counter_row(last, self.writes.as_deref()),
                    Some(&JsValue::from_str(SEQ_COUNTER)),
                )
                .map_err(idb_error("write the seq counter"))?;
        }
        Ok(())
    }

    /// Read, in one round trip, every record the batch changes or deletes, the seq counter if
    /// the batch writes a replicated row or the write epoch (a `ClearAll` removes it, as it does
    /// the vault's other state rows), and if it inserts, the record tombstones' ids (or that
    /// there are more of them than it inserts).
    async fn prefetch(&mut self, batch: &[WriteOp]) -> StorageResult<()> {
        let mut ids: Vec<String> = Vec::new();
        let mut inserts = 0u32;
        for op in batch {
            match op {
                WriteOp::ChangeRecord { id, .. } | WriteOp::DeleteRecord { id, .. } => {
                    ids.push(id.clone())
                }
                WriteOp::InsertRecord(_) => inserts = inserts.saturating_add(1),
                _ => {}
            }
        }
        sorting::sort(&mut ids);
        ids.dedup();
        // Issued before the records are read, so they are done when those are.
        let counter = if batch.iter().any(|op| {
            writes_replicated(op) || on_write_epoch(op) || matches!(op, WriteOp::ClearAll)
        }) {
            let read = pending(
                self.r.counters.get(JsValue::from_str(SEQ_COUNTER)),
                "read the seq counter",
            )?;
            match self.assumed_seq {
                // Checked with the other preconditions; the writes need not wait for it. The
                // batch renews the write epoch, so what the row holds of it is not needed.
                Some(assumed) => {
                    self.seq = Some((assumed, assumed));
                    self.counter_check = Some((assumed, read));
                    None
                }
                None => Some(read),
            }
        } else {
            None
        };
        if self.assumed_seq.is_some() {
            // A few inserts each look their id up among the tombstones instead of waiting to
            // read them (`IdbStorage::may_assume_seq` admits only such batches).
            self.record_tombstones = true;
        }
        // The record tombstones' keys, up to one more than the batch inserts: all of them when
        // there are no more than that (a request per insert would cost more than reading them:
        // a getKey is about 40 us in Chromium, a key of getAllKeys about 1), else a sign to
        // look each insert's id up.
        let tombstones = if inserts > 0 && self.assumed_seq.is_none() {
            Some(pending(
                self.r.tombstones.get_all_keys(
                    Some(tombstone_kind_range("record")?),
                    Some(inserts.saturating_add(1)),
                ),
                "read the record tombstones",
            )?)
        } else {
            None
        };
        let records = self.r.records_by(&ids, Lookup::Id).await?;
        for (id, row) in ids.into_iter().zip(records) {
            self.rows.insert(id, row);
        }
        if let Some(counter) = counter {
            let counter = Counter::read(counter.await)?;
            self.seq = Some((counter.seq, counter.seq));
            self.writes = counter.writes;
        }
        if let Some(keys) = tombstones {
            let keys = keys
                .await
                .map_err(idb_error("read the record tombstones"))?;
            self.record_tombstones = !keys.is_empty();
            if keys.len() <= inserts as usize {
                let set = js_sys::Set::new(&JsValue::UNDEFINED);
                for key in keys {
                    set.add(&Reflect::get_u32(&key, 1).map_err(|_| not_ours("a tombstone key"))?);
                }
                self.tombstone_ids = Some(set);
            }
        }
        Ok(())
    }

    /// The write epoch as the batch's ops so far leave it, to change: read with the counter,
    /// which `prefetch` does for every batch with an op on it ([`on_write_epoch`]).
    fn epoch_mut(&mut self) -> StorageResult<&mut Option<String>> {
        self.epoch_read()?;
        self.writes_changed = true;
        Ok(&mut self.writes)
    }

    /// The write epoch as the batch's ops so far leave it.
    fn epoch_read(&self) -> StorageResult<&Option<String>> {
        match self.seq {
            Some(_) => Ok(&self.writes),
            None => Err(StorageError::Backend {
                original: Default::default(),
                name: None,
                message: "IndexedDB write planned without its seq counter".into(),
            }),
        }
    }

    /// A meta op on the write epoch, applied to the counter's row (where this backend keeps
    /// it) as the op would be to a meta row.
    fn apply_to_write_epoch(&mut self, op: &WriteOp) -> StorageResult<()> {
        let held = self.epoch_read()?;
        let next = match op {
            WriteOp::InsertMeta(_) if held.is_some() => {
                return Err(StorageError::MetaTaken(write_epoch()));
            }
            WriteOp::PutMeta(row) | WriteOp::InsertMeta(row) | WriteOp::PutSharedMeta(row) => {
                Some(row.value.clone())
            }
            WriteOp::ExpectMeta { value, .. } if held != value => {
                return Err(StorageError::MetaChanged(write_epoch()));
            }
            WriteOp::DeleteMeta(_) => None,
            _ => return Ok(()),
        };
        *self.epoch_mut()? = next;
        Ok(())
    }

    /// The seq (and dirty mark) of the next replicated row this batch writes.
    fn next_mark(&mut self, dirty: bool) -> StorageResult<Mark> {
        let Some((_, last)) = &mut self.seq else {
            // `prefetch` reads the counter for every batch with an op that can need it.
            return Err(StorageError::Backend {
                original: Default::default(),
                name: None,
                message: "IndexedDB write planned without its seq counter".into(),
            });
        };
        *last += 1;
        Ok(Mark { seq: *last, dirty })
    }

    fn put_record(&self, record: &Record, mark: Mark) -> StorageResult<()> {
        self.r
            .records
            .put(&record_to_js(record, mark), None)
            .map_err(idb_error("write a record"))
            .map(drop)
    }

    async fn apply(&mut self, op: WriteOp) -> StorageResult<()> {
        match op {
            WriteOp::InsertRecord(record) => {
                // The primary key and the unique token index refuse a taken id or token; the
                // failure aborts the transaction and `IdbStorage::diagnose` names it. A token or
                // id this batch itself wrote is named here, as nothing of it is stored.
                if self.batch_tokens.contains_key(&record.token) {
                    return Err(StorageError::TokenTaken(record.token));
                }
                if matches!(self.rows.get(&record.id), Some(Some(_)))
                    || self.tombstoned.contains(&record.id)
                {
                    return Err(StorageError::IdTaken(record.id));
                }
                if self.record_tombstones {
                    match &self.tombstone_ids {
                        Some(ids) if ids.has(&JsValue::from_str(&record.id)) => {
                            return Err(StorageError::IdTaken(record.id));
                        }
                        Some(_) => {}
                        None => {
                            let found = pending(
                                self.r.tombstones.get_key(record_tombstone_key(&record.id)),
                                "read a tombstone",
                            )?;
                            self.checks
                                .push(Check::NoTombstone(record.id.clone(), found));
                        }
                    }
                }
                let mark = self.next_mark(true)?;
                self.r
                    .records
                    .add(&record_to_js(&record, mark), None)
                    .map_err(idb_error("add a record"))?;
                self.count(None, Some(record.is_soft_deleted()));
                self.inserted
                    .push((record.id.clone(), record.token.clone()));
                self.batch_tokens
                    .insert(record.token.clone(), record.id.clone());
                self.rows.insert(record.id.clone(), Some(*record));
            }
            WriteOp::ChangeRecord { id, change, at } => {
                let rev = self.stamp.rev;
                let Some(Some(record)) = self.rows.get_mut(&id) else {
                    return Err(StorageError::RecordMissing(id));
                };
                let was = record.is_soft_deleted();
                if change.apply_to(record, at, rev)? {
                    let record = record.clone();
                    self.count(Some(was), Some(record.is_soft_deleted()));
                    let mark = self.next_mark(true)?;
                    self.put_record(&record, mark)?;
                }
            }
            WriteOp::DeleteRecord { .. } => {
                let mut identities = Vec::new();
                self.delete_record(op, &mut identities)?;
                self.prune_identities(identities).await?;
            }
            WriteOp::InsertMeta(row) => {
                let exists = pending(self.r.meta.get(meta_key_js(&row.key)), "read a meta row")?;
                self.checks.push(Check::Absent(row.key.clone(), exists));
                self.put_meta(row, true)?;
            }
            WriteOp::PutMeta(row) if self.sole_mark && row.key == unlinked_records() => {
                // A local row: it takes no seq, so its put may come after the counter's.
                debug_assert!(!is_replicated(&row.key));
                let stored = pending(self.r.meta.get(meta_key_js(&row.key)), "read a meta row")?;
                self.checks.push(Check::Mark(row, stored));
            }
            WriteOp::PutMeta(row) => self.put_meta(row, true)?,
            WriteOp::PutSharedMeta(row) => self.put_meta(row, false)?,
            WriteOp::DeleteMeta(key) => {
                if is_replicated(&key) {
                    // A tombstone only for a row that was there.
                    let found = self
                        .r
                        .meta
                        .get(meta_key_js(&key))
                        .done("read a meta row")
                        .await?;
                    if found.is_some() {
                        self.remove_meta_row(&key, false)?;
                    }
                } else {
                    self.remove_meta_row(&key, false)?;
                }
            }
            WriteOp::ExpectMeta { key, value } => {
                let found = pending(self.r.meta.get(meta_key_js(&key)), "read a meta row")?;
                self.checks.push(Check::Holds(key, value, found));
            }
            WriteOp::DeleteIdentityIfUnlinked {
                identity_id,
                emptied,
            } => {
                let linked = self
                    .r
                    .identity_index()?
                    .count(Some(Reader::linked_range(&identity_id, None)?))
                    .done("count linked records")
                    .await?;
                if linked == 0 {
                    self.delete_object(object_type::IDENTITY, &identity_id, emptied)
                        .await?;
                }
            }
            WriteOp::ExpectUnlinked { identity_id } => {
                let linked = self
                    .r
                    .identity_index()?
                    .count(Some(Reader::linked_range(&identity_id, None)?))
                    .done("count linked records")
                    .await?;
                if linked > 0 {
                    return Err(StorageError::MetaChanged(crate::storage::identity_tag_key(
                        &identity_id,
                    )));
                }
            }
            WriteOp::PutVersion { row, dirty } => self.put_version(*row, dirty)?,
            WriteOp::ExpectVersion { key, seq } => {
                // Planned against versions this transaction read (a pulled page): no read again.
                if !self.wrote
                    && let Some(read) = self.read.get(&key)
                {
                    if read.seq == seq {
                        return Ok(());
                    }
                    return Err(match key {
                        RowKey::Record(id) => StorageError::Changed(id),
                        RowKey::Meta(k) => StorageError::MetaChanged(k),
                    });
                }
                let gets = self.r.version_gets(&key, true, true)?;
                match gets.and_then(|(live, tombstone)| live.zip(tombstone)) {
                    Some((live, tombstone)) => {
                        let doing = "read a row's version";
                        let live = pending(Ok(live), doing)?;
                        let tombstone = pending(Ok(tombstone), doing)?;
                        self.checks.push(Check::Version(key, seq, live, tombstone));
                    }
                    // A local meta key has no version.
                    None if seq.is_none() => {}
                    None => {
                        return Err(match key {
                            RowKey::Record(id) => StorageError::Changed(id),
                            RowKey::Meta(k) => StorageError::MetaChanged(k),
                        });
                    }
                }
            }
            WriteOp::MarkClean { key, dirty } => self.mark_clean(vec![(key, dirty)]).await?,
            WriteOp::DropTombstone { key, seq } => self.drop_tombstone(key, seq).await?,
            WriteOp::ExpectEmpty | WriteOp::ExpectNoData => {
                let tombstones_count = matches!(op, WriteOp::ExpectEmpty);
                let r = &self.r;
                let requests = vec![
                    r.records.count(None),
                    r.tombstones.count(None),
                    r.meta.count(None),
                    r.meta.count(Some(object_type_range(object_type::VAULT)?)),
                    r.meta.count(Some(object_type_range(object_type::SYNC)?)),
                ]
                .into_iter()
                .collect::<Result<Vec<_>, _>>()
                .map_err(idb_error("count rows"))?;
                let counts: Vec<f64> = in_order(requests, "count rows")
                    .await?
                    .iter()
                    .map(|n| n.as_f64().unwrap_or(0.0))
                    .collect();
                if let [records, tombstones, meta, vault, sync] = counts[..]
                    && (records > 0.0
                        || (tombstones_count && tombstones > 0.0)
                        || meta > vault + sync)
                {
                    return Err(StorageError::NotEmpty);
                }
            }
            WriteOp::ClearAll => {
                self.tally = None;
                // Every vault state row goes, the write epoch too.
                *self.epoch_mut()? = None;
                let r = &self.r;
                r.records.clear().map_err(idb_error("clear records"))?;
                r.tombstones
                    .clear()
                    .map_err(idb_error("clear tombstones"))?;
                // Every meta row but sync's own: the keys below ["sync"] and above
                // ["sync", []] (arrays sort after strings).
                let sync = key_array(&[object_type::SYNC]);
                let after_sync: JsValue =
                    [JsValue::from_str(object_type::SYNC), Array::new().into()]
                        .into_iter()
                        .collect::<Array>()
                        .into();
                for query in [
                    KeyRange::upper_bound(&sync, Some(true)),
                    KeyRange::lower_bound(&after_sync, Some(false)),
                ] {
                    r.meta
                        .delete(range(query)?)
                        .map_err(idb_error("clear meta rows"))?;
                }
                for row in self.rows.values_mut() {
                    *row = None;
                }
                self.batch_tokens.clear();
                self.tombstoned.clear();
                self.record_tombstones = false;
                self.tombstone_ids = None;
                self.cleared = true;
            }
        }
        Ok(())
    }

    /// Clear the dirty mark of each `(key, mark)` whose row (live, else its tombstone) still
    /// has that mark; a row changed here since keeps its newer one. Its seq stays: the row did
    /// not change.
    async fn mark_clean(&mut self, marks: Vec<(RowKey, u64)>) -> StorageResult<()> {
        let keys: Vec<RowKey> = marks.iter().map(|(key, _)| key.clone()).collect();
        let found = self.r.raw_versions(&keys).await?;
        for ((key, mark), found) in marks.into_iter().zip(found) {
            let Some((live, tombstone)) = found else {
                continue;
            };
            let (row, store) = if !live.is_undefined() {
                let store = match key {
                    RowKey::Record(_) => &self.r.records,
                    RowKey::Meta(_) => &self.r.meta,
                };
                (live, store)
            } else if !tombstone.is_undefined() {
                (tombstone, &self.r.tombstones)
            } else {
                continue;
            };
            let current = get(&row, "dirty");
            if current.is_undefined() || seq_of(&row, "dirty")? != mark {
                continue;
            }
            let _ = Reflect::delete_property(
                row.unchecked_ref::<Object>(),
                &JsValue::from_str("dirty"),
            );
            store
                .put(&row, None)
                .map_err(idb_error("clear a dirty mark"))?;
        }
        Ok(())
    }

    /// Forget `key`'s tombstone while it is still the clean one at `seq` (its place in the feed,
    /// the stores' `seq` index, goes with it; the seq counter stays).
    async fn drop_tombstone(&mut self, key: RowKey, seq: u64) -> StorageResult<()> {
        let tombstone_key = match &key {
            RowKey::Record(id) => record_tombstone_key(id),
            RowKey::Meta(k) => meta_tombstone_key(k),
        };
        let request = self
            .r
            .tombstones
            .get(tombstone_key.clone())
            .map_err(idb_error("read a tombstone"))?;
        let found = in_order(vec![request], "read a tombstone").await?;
        let Some(row) = found.into_iter().next().filter(|row| !row.is_undefined()) else {
            return Ok(());
        };
        if seq_of(&row, "seq")? != seq || !get(&row, "dirty").is_undefined() {
            return Ok(());
        }
        self.r
            .tombstones
            .delete(Query::from(tombstone_key))
            .map_err(idb_error("drop a tombstone"))?;
        if let RowKey::Record(id) = &key {
            self.tombstoned.remove(id);
        }
        Ok(())
    }

    /// Store a row at its own revisions (a merge's or a snapshot's), replacing the live row or
    /// tombstone of its id or key.
    fn put_version(&mut self, row: Row, dirty: bool) -> StorageResult<()> {
        match row {
            Row::Record {
                id,
                version: RecordVersion::Live(live),
            } => {
                self.tally = None;
                let record = Record::from_live(id, live);
                if let Some(holder) = self.batch_tokens.get(&record.token)
                    && *holder != record.id
                {
                    return Err(StorageError::TokenTaken(record.token));
                }
                // Another stored record holding the token fails the put's unique index.
                let mark = self.next_mark(dirty)?;
                self.put_record(&record, mark)?;
                // No tombstone to delete when the transaction read none and the batch left none.
                let read = self.read.get(&RowKey::Record(record.id.clone()));
                if read.is_none_or(|r| r.tombstone) || self.tombstoned.contains(&record.id) {
                    self.r
                        .tombstones
                        .delete(Query::from(record_tombstone_key(&record.id)))
                        .map_err(idb_error("delete a tombstone"))?;
                }
                self.tombstoned.remove(&record.id);
                self.versions
                    .push((record.id.clone(), record.token.clone()));
                self.batch_tokens
                    .insert(record.token.clone(), record.id.clone());
                self.rows.insert(record.id.clone(), Some(record));
            }
            Row::Record {
                id,
                version: RecordVersion::Gone(tombstone),
            } => {
                self.tally = None;
                self.r
                    .records
                    .delete(JsValue::from_str(&id))
                    .map_err(idb_error("delete a record"))?;
                let mark = self.next_mark(dirty)?;
                self.r
                    .tombstones
                    .put(&record_tombstone_to_js(&id, &tombstone, mark), None)
                    .map_err(idb_error("write a tombstone"))?;
                self.batch_tokens.retain(|_, holder| *holder != id);
                self.tombstoned.insert(id.clone());
                self.rows.insert(id, None);
            }
            Row::Meta { key, .. } if !is_replicated(&key) => {
                return Err(StorageError::Backend {
                    original: Default::default(),
                    name: None,
                    message:
                        "a merge tried to store a local meta row; local rows are never replicated"
                            .into(),
                });
            }
            Row::Meta {
                key,
                version: MetaVersion::Value { rev, value },
            } => {
                let row = MetaRow { key, value };
                let mark = self.next_mark(dirty)?;
                self.write_meta(&versioned_meta_to_js(&row, rev, mark), Some(&row.key))?;
            }
            Row::Meta {
                key,
                version:
                    MetaVersion::Gone {
                        rev,
                        deleted_at,
                        emptied,
                    },
            } => {
                self.r
                    .meta
                    .delete(meta_key_js(&key))
                    .map_err(idb_error("delete a meta row"))?;
                let mark = self.next_mark(dirty)?;
                let tombstone = meta_tombstone_to_js(&key, rev, deleted_at, emptied, mark);
                self.r
                    .tombstones
                    .put(&tombstone, None)
                    .map_err(idb_error("write a tombstone"))?;
            }
        }
        Ok(())
    }

    /// Delete a prefetched record, leaving its tombstone; the identity it was sealed under is
    /// collected for pruning.
    fn delete_record(&mut self, op: WriteOp, identities: &mut Vec<String>) -> StorageResult<()> {
        let WriteOp::DeleteRecord { id, if_expired_at } = op else {
            return Ok(());
        };
        let Some(Some(record)) = self.rows.get(&id) else {
            return Ok(());
        };
        if if_expired_at.is_some_and(|now| !record.is_expired(now)) {
            return Err(StorageError::Changed(id));
        }
        let was = record.is_soft_deleted();
        let token = record.token.clone();
        if let Some(identity) = &record.password_id {
            identities.push(identity.clone());
        }
        self.r
            .records
            .delete(JsValue::from_str(&id))
            .map_err(idb_error("delete a record"))?;
        let tombstone = Tombstone {
            rev: self.stamp.rev,
            deleted_at: self.stamp.at,
            reason: TombstoneReason::Deleted,
        };
        let mark = self.next_mark(true)?;
        self.r
            .tombstones
            .put(&record_tombstone_to_js(&id, &tombstone, mark), None)
            .map_err(idb_error("write a tombstone"))?;
        self.batch_tokens.remove(&token);
        self.tombstoned.insert(id.clone());
        self.rows.insert(id, None);
        self.deleted += 1;
        self.count(Some(was), None);
        Ok(())
    }

    /// A record left the state `was` (soft-deleted or not; `None`: it was absent) for `now`.
    fn count(&mut self, was: Option<bool>, now: Option<bool>) {
        if let Some((live, trashed)) = &mut self.tally {
            for (state, by) in [(was, -1), (now, 1)] {
                match state {
                    Some(true) => *trashed += by,
                    Some(false) => *live += by,
                    None => {}
                }
            }
        }
    }

    /// Remove every identity of `identities` that no record is sealed under any more, as emptied
    /// (their last records were deleted, FORMAT.md "Sync"). The counts are issued after the
    /// batch's writes so far, so they see them; one round trip for all.
    async fn prune_identities(&mut self, identities: Vec<String>) -> StorageResult<()> {
        if identities.is_empty() {
            return Ok(());
        }
        let index = self.r.identity_index()?;
        let mut counts = Vec::with_capacity(identities.len());
        for identity in &identities {
            let count = index.count(Some(Reader::linked_range(identity, None)?));
            counts.push(count.map_err(idb_error("count linked records"))?);
        }
        let counts = in_order(counts, "count linked records").await?;
        for (identity, count) in identities.iter().zip(counts) {
            if count.as_f64() == Some(0.0) {
                self.delete_object(object_type::IDENTITY, identity, true)
                    .await?;
            }
        }
        Ok(())
    }

    /// Delete every row of an object and of its dependents (the objects of the same type with a
    /// row [`OWNER_KEY`] naming it: an identity's further secret slots), each replicated row
    /// leaving a tombstone (`emptied`: see [`MetaVersion::Gone`]). Read inside this transaction,
    /// so they include rows the batch wrote.
    async fn delete_object(
        &mut self,
        object_type: &str,
        object_id: &str,
        emptied: bool,
    ) -> StorageResult<()> {
        let own = pending(
            self.r
                .meta
                .get_all(Some(object_range(object_type, object_id)?), None),
            "read meta rows",
        )?;
        let dependents = self.r.find(object_type, OWNER_KEY, object_id).await?;
        let mut rows: Vec<JsValue> = own.await.map_err(idb_error("read meta rows"))?;
        let mut requests = Vec::with_capacity(dependents.len());
        for row in &dependents {
            requests.push(
                self.r
                    .meta
                    .get_all(Some(object_range(object_type, &row.key.object_id)?), None)
                    .map_err(idb_error("read meta rows"))?,
            );
        }
        for object in in_order(requests, "read meta rows").await? {
            rows.extend(Array::from(&object).iter());
        }
        for row in &rows {
            let key = meta_key_from_js(row)?;
            self.remove_meta_row(&key, emptied)?;
            // The version an emptied removal replaced stays here, for the sync server.
            // (Both as stored: a revision is its text.)
            if let (true, Some(rev), Some(value)) = (
                emptied,
                get(row, "rev").as_string(),
                get(row, "value").as_string(),
            ) {
                let kept = MetaRow {
                    key: replaced_key(&key),
                    value: rev + " " + &value,
                };
                self.write_meta(&meta_to_js(&kept), None)?;
            }
        }
        Ok(())
    }

    /// Delete the meta row `key`, leaving a tombstone when it is replicated.
    fn remove_meta_row(&mut self, key: &MetaKey, emptied: bool) -> StorageResult<()> {
        self.r
            .meta
            .delete(meta_key_js(key))
            .map_err(idb_error("delete a meta row"))?;
        if is_replicated(key) {
            let mark = self.next_mark(true)?;
            let tombstone = meta_tombstone_to_js(key, self.stamp.rev, self.stamp.at, emptied, mark);
            self.r
                .tombstones
                .put(&tombstone, None)
                .map_err(idb_error("write a tombstone"))?;
        }
        Ok(())
    }

    /// Write a meta row object; a replicated one (`replaces`) takes the place of its tombstone.
    fn write_meta(&self, row: &Object, replaces: Option<&MetaKey>) -> StorageResult<()> {
        self.r
            .meta
            .put(row, None)
            .map_err(idb_error("write a meta row"))?;
        if let Some(key) = replaces {
            self.r
                .tombstones
                .delete(Query::from(meta_tombstone_key(key)))
                .map_err(idb_error("delete a tombstone"))?;
        }
        Ok(())
    }

    /// A local write of a meta row: [`UNIQUE_META_VALUES`](super::super::UNIQUE_META_VALUES)
    /// checked when `unique` (not for [`WriteOp::PutSharedMeta`]), a replicated row stamped.
    fn put_meta(&mut self, row: MetaRow, unique: bool) -> StorageResult<()> {
        if unique && is_unique_meta(&row.key) {
            let holders = pending(
                self.r.by_value()?.get_all(
                    Some(Query::from(key_array(&[
                        &row.key.object_type,
                        &row.key.key,
                        &row.value,
                    ]))),
                    None,
                ),
                "look up meta rows",
            )?;
            self.checks.push(Check::Unique(row.key.clone(), holders));
        }
        if is_replicated(&row.key) {
            let mark = self.next_mark(true)?;
            self.write_meta(
                &versioned_meta_to_js(&row, self.stamp.rev, mark),
                Some(&row.key),
            )
        } else {
            self.write_meta(&meta_to_js(&row), None)
        }
    }

    /// Check every precondition, in the order of the ops that made them; then put the marks
    /// whose value changes ([`Check::Mark`]), while the transaction still takes requests (this
    /// runs as the last read resolves).
    async fn verify(&mut self) -> StorageResult<()> {
        // Issued first, so resolved no later than the checks below.
        if let Some((assumed, read)) = self.counter_check.take()
            && Counter::read(read.await)?.seq != assumed
        {
            self.counter_moved = true;
            return Err(StorageError::Backend {
                original: Default::default(),
                name: None,
                message: "the seq counter moved".into(),
            });
        }
        let checks = std::mem::take(&mut self.checks);
        let futures = checks.into_iter().map(|check| async move {
            match check {
                Check::Mark(row, found) => {
                    Ok((stored_value(found).await?.as_ref() != Some(&row.value)).then_some(row))
                }
                Check::Absent(key, found) => {
                    match found.await.map_err(idb_error("read a meta row"))? {
                        Some(_) => Err(StorageError::MetaTaken(key)),
                        None => Ok(None),
                    }
                }
                Check::Unique(key, holders) => {
                    let holders = holders.await.map_err(idb_error("look up meta rows"))?;
                    for holder in &holders {
                        if meta_from_js(holder)?.key != key {
                            return Err(StorageError::UniqueValueTaken(key));
                        }
                    }
                    Ok(None)
                }
                Check::NoTombstone(id, found) => {
                    match found.await.map_err(idb_error("read a tombstone"))? {
                        Some(_) => Err(StorageError::IdTaken(id)),
                        None => Ok(None),
                    }
                }
                Check::Version(key, seq, live, tombstone) => {
                    let doing = "read a row's version";
                    let live = live.await.map_err(idb_error(doing))?;
                    let tombstone = tombstone.await.map_err(idb_error(doing))?;
                    let found = match live.as_ref().or(tombstone.as_ref()) {
                        Some(row) => Some(seq_of(row, "seq")?),
                        None => None,
                    };
                    if found == seq {
                        Ok(None)
                    } else {
                        Err(match key {
                            RowKey::Record(id) => StorageError::Changed(id),
                            RowKey::Meta(k) => StorageError::MetaChanged(k),
                        })
                    }
                }
                Check::Holds(key, value, found) => {
                    if stored_value(found).await? == value {
                        Ok(None)
                    } else {
                        Err(StorageError::MetaChanged(key))
                    }
                }
            }
        });
        let marks = join_all(futures)
            .await
            .into_iter()
            .collect::<StorageResult<Vec<_>>>()?;
        for row in marks.into_iter().flatten() {
            self.put_meta(row, true)?;
        }
        Ok(())
    }
}
