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
}

impl IdbStorage {
    pub(super) fn begin(&self) -> StorageResult<IdbWriteTransaction<'_>> {
        let mut tx = self.open_transaction(TransactionMode::ReadWrite)?;
        let outcome = Outcome::watch(&mut tx);
        let (records, meta) = Self::stores(&tx)?;
        Ok(IdbWriteTransaction {
            storage: self,
            tx: Some(tx),
            outcome: Some(outcome),
            r: Reader {
                records,
                meta,
                records_estimate: self.records_estimate.clone(),
            },
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
    pub(super) async fn commit_batch(mut self, batch: Vec<WriteOp>) -> StorageResult<()> {
        let outcome = self.outcome.take().ok_or(StorageError::Closed)?;
        let mut writer = Batch {
            r: self.r.clone(),
            rows: HashMap::new(),
            links: HashMap::new(),
            checks: Vec::new(),
            inserted: Vec::new(),
            batch_tokens: Default::default(),
            deleted: 0,
            cleared: false,
        };
        let checked = match writer.run(batch).await {
            Ok(()) => writer.verify().await,
            Err(e) => Err(e),
        };
        let failure = match checked {
            Ok(()) => {
                // Every request is issued and every check passed: ask for the commit now rather
                // than when the transaction next runs out of requests (a task later).
                let _ = writer.r.records.transaction().commit();
                outcome.settled().await.err()
            }
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
        match failure {
            None => {
                let estimate = &self.storage.records_estimate;
                estimate.set(match estimate.get() {
                    Some(n) if !writer.cleared => {
                        Some((n + writer.inserted.len() as u64).saturating_sub(writer.deleted))
                    }
                    _ => None,
                });
                Ok(())
            }
            Some(e) => Err(self.storage.diagnose(e, &writer.inserted).await),
        }
    }
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
    async fn commit(self: Box<Self>, batch: Vec<WriteOp>) -> StorageResult<()> {
        (*self).commit_batch(batch).await
    }
}

impl IdbStorage {
    /// An `add` that broke a uniqueness constraint fails the whole transaction with a bare
    /// `ConstraintError`, which does not say whether the token or the id was taken. The batch is
    /// rolled back by now, so look the inserted tokens up to tell the caller which.
    async fn diagnose(&self, e: StorageError, inserted: &[(String, String)]) -> StorageError {
        let constraint =
            matches!(&e, StorageError::Backend { name: Some(n), .. } if n == "ConstraintError");
        if !constraint || inserted.is_empty() {
            return e;
        }
        let Ok(r) = self.reader() else { return e };
        let tokens: Vec<String> = inserted.iter().map(|(_, t)| t.clone()).collect();
        match r.records_by(&tokens, Lookup::Token).await {
            Ok(found) => match found.into_iter().flatten().next() {
                Some(taken) => StorageError::TokenTaken(taken.token),
                None => StorageError::IdTaken(inserted[0].0.clone()),
            },
            Err(_) => e,
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
    /// The batch's view of the records it changes or deletes, by id (`None`: absent).
    rows: HashMap<String, Option<Record>>,
    /// The identity each record the batch deletes is linked to, by record id.
    links: HashMap<String, Option<String>>,
    checks: Vec<Check>,
    /// `(id, token)` of every inserted record, to tell a taken token from a taken id.
    inserted: Vec<(String, String)>,
    /// The tokens this batch inserted and did not delete again.
    batch_tokens: std::collections::HashSet<String>,
    /// Records deleted, and whether the stores were cleared: for the record count estimate.
    deleted: u64,
    cleared: bool,
}

impl Batch {
    async fn run(&mut self, batch: Vec<WriteOp>) -> StorageResult<()> {
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
            } else {
                self.apply(op).await?;
            }
        }
        Ok(())
    }

    /// Read, in one round trip, every record the batch changes or deletes, and the links of
    /// those it deletes.
    async fn prefetch(&mut self, batch: &[WriteOp]) -> StorageResult<()> {
        let mut ids: Vec<String> = Vec::new();
        let mut deleted: Vec<String> = Vec::new();
        for op in batch {
            match op {
                WriteOp::ChangeRecord { id, .. } => ids.push(id.clone()),
                WriteOp::DeleteRecord { id, .. } => {
                    ids.push(id.clone());
                    deleted.push(id.clone());
                }
                _ => {}
            }
        }
        for list in [&mut ids, &mut deleted] {
            sorting::sort(list);
            list.dedup();
        }
        let mut links = Vec::with_capacity(deleted.len());
        for id in &deleted {
            let request = self.r.meta.get(meta_key_js(&link_key(id)));
            links.push(request.map_err(idb_error("read a record link"))?);
        }
        let (records, links) = futures::future::join(
            self.r.records_by(&ids, Lookup::Id),
            in_order(links, "read a record link"),
        )
        .await;
        for (id, row) in ids.into_iter().zip(records?) {
            self.rows.insert(id, row);
        }
        for (id, found) in deleted.into_iter().zip(links?) {
            let identity = (!found.is_undefined())
                .then(|| meta_from_js(&found))
                .transpose()?
                .map(|m| m.value);
            self.links.insert(id, identity);
        }
        Ok(())
    }

    /// Keep the batch's view of links current when the batch itself writes one.
    fn track_link(&mut self, key: &MetaKey, value: Option<&str>) {
        if key.object_type == object_type::RECORD
            && key.key == LINK_KEY
            && let Some(id) = key.object_id.strip_prefix("r_")
            && let Some(link) = self.links.get_mut(id)
        {
            *link = value.map(str::to_owned);
        }
    }

    fn put_record(&self, record: &Record) -> StorageResult<()> {
        self.r
            .records
            .put(&record_to_js(record), None)
            .map_err(idb_error("write a record"))
            .map(drop)
    }

    async fn apply(&mut self, op: WriteOp) -> StorageResult<()> {
        let records = &self.r.records;
        let meta = &self.r.meta;
        match op {
            WriteOp::InsertRecord(record) => {
                // The primary key and the unique token index refuse a taken id or token; the
                // failure aborts the transaction and `IdbStorage::diagnose` names it. A token or
                // id this batch itself inserted is named here, as nothing of it is stored.
                if !self.batch_tokens.insert(record.token.clone()) {
                    return Err(StorageError::TokenTaken(record.token));
                }
                if matches!(self.rows.get(&record.id), Some(Some(_))) {
                    return Err(StorageError::IdTaken(record.id));
                }
                records
                    .add(&record_to_js(&record), None)
                    .map_err(idb_error("add a record"))?;
                self.inserted
                    .push((record.id.clone(), record.token.clone()));
                self.rows.insert(record.id.clone(), Some(record));
            }
            WriteOp::ChangeRecord { id, change, at } => {
                let Some(Some(record)) = self.rows.get_mut(&id) else {
                    return Err(StorageError::RecordMissing(id));
                };
                if change.apply_to(record, at)? {
                    let record = record.clone();
                    self.put_record(&record)?;
                }
            }
            WriteOp::DeleteRecord { .. } => {
                let mut identities = Vec::new();
                self.delete_record(op, &mut identities)?;
                self.prune_identities(identities).await?;
            }
            WriteOp::InsertMeta(row) => {
                let exists = pending(meta.get(meta_key_js(&row.key)), "read a meta row")?;
                self.checks.push(Check::Absent(row.key.clone(), exists));
                self.put_meta(row)?;
            }
            WriteOp::PutMeta(row) => self.put_meta(row)?,
            WriteOp::DeleteMeta(key) => {
                meta.delete(meta_key_js(&key))
                    .map_err(idb_error("delete a meta row"))?;
                self.track_link(&key, None);
            }
            WriteOp::ExpectMeta { key, value } => {
                let found = pending(meta.get(meta_key_js(&key)), "read a meta row")?;
                self.checks.push(Check::Holds(key, value, found));
            }
            WriteOp::DeleteObjectIfUnreferenced {
                object_type,
                object_id,
                referrer_type,
                referrer_key,
            } => {
                let referrers = self
                    .r
                    .by_value()?
                    .count(Some(Query::from(key_array(&[
                        &referrer_type,
                        &referrer_key,
                        &object_id,
                    ]))))
                    .done("count meta rows")
                    .await?;
                if referrers == 0 {
                    self.delete_object(&object_type, &object_id).await?;
                }
            }
            WriteOp::ExpectEmpty => {
                let n = records.count(None).done("count records").await?;
                let all = meta.count(None).done("count meta rows").await?;
                let settings = meta
                    .count(Some(object_type_range(object_type::VAULT)?))
                    .done("count meta rows")
                    .await?;
                if n > 0 || all > settings {
                    return Err(StorageError::NotEmpty);
                }
            }
            WriteOp::ClearAll => {
                records.clear().map_err(idb_error("clear records"))?;
                meta.clear().map_err(idb_error("clear meta rows"))?;
                for row in self.rows.values_mut() {
                    *row = None;
                }
                self.batch_tokens.clear();
                self.cleared = true;
            }
        }
        Ok(())
    }

    /// Delete a prefetched record and its link; the identity the link pointed to is collected
    /// for pruning.
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
        self.r
            .records
            .delete(JsValue::from_str(&id))
            .map_err(idb_error("delete a record"))?;
        let link = link_key(&id);
        if let Some(Some(identity)) = self.links.get(&id) {
            identities.push(identity.clone());
        }
        self.r
            .meta
            .delete(meta_key_js(&link))
            .map_err(idb_error("delete a record link"))?;
        self.track_link(&link, None);
        if let Some(Some(record)) = self.rows.get(&id) {
            self.batch_tokens.remove(&record.token);
        }
        self.rows.insert(id, None);
        self.deleted += 1;
        Ok(())
    }

    /// Remove every identity of `identities` that no link refers to any more. The counts are
    /// issued after the deletes, so they see them; one round trip for all.
    async fn prune_identities(&self, identities: Vec<String>) -> StorageResult<()> {
        if identities.is_empty() {
            return Ok(());
        }
        let index = self.r.by_value()?;
        let mut counts = Vec::with_capacity(identities.len());
        for identity in &identities {
            let count = index.count(Some(Query::from(key_array(&[
                object_type::RECORD,
                LINK_KEY,
                identity,
            ]))));
            counts.push(count.map_err(idb_error("count record links"))?);
        }
        let counts = in_order(counts, "count record links").await?;
        for (identity, count) in identities.iter().zip(counts) {
            if count.as_f64() == Some(0.0) {
                self.delete_object(object_type::IDENTITY, identity).await?;
            }
        }
        Ok(())
    }

    /// Delete every row of an object and of its dependents: the objects of the same type with a
    /// row [`OWNER_KEY`] naming it (an identity's further secret slots), found through the
    /// by-value index inside this transaction, so they include rows the batch wrote before.
    async fn delete_object(&self, object_type: &str, object_id: &str) -> StorageResult<()> {
        let dependents = self.r.find(object_type, OWNER_KEY, object_id).await?;
        self.r
            .meta
            .delete(object_range(object_type, object_id)?)
            .map_err(idb_error("delete meta rows"))?;
        for row in dependents {
            self.r
                .meta
                .delete(object_range(object_type, &row.key.object_id)?)
                .map_err(idb_error("delete meta rows"))?;
        }
        Ok(())
    }

    fn put_meta(&mut self, row: MetaRow) -> StorageResult<()> {
        self.track_link(&row.key, Some(&row.value));
        if is_unique_meta(&row.key) {
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
        self.r
            .meta
            .put(&meta_to_js(&row), None)
            .map_err(idb_error("write a meta row"))
            .map(drop)
    }

    /// Check every precondition, in the order of the ops that made them.
    async fn verify(&mut self) -> StorageResult<()> {
        let checks = std::mem::take(&mut self.checks);
        let futures = checks.into_iter().map(|check| async move {
            match check {
                Check::Absent(key, found) => {
                    match found.await.map_err(idb_error("read a meta row"))? {
                        Some(_) => Err(StorageError::MetaTaken(key)),
                        None => Ok(()),
                    }
                }
                Check::Unique(key, holders) => {
                    let holders = holders.await.map_err(idb_error("look up meta rows"))?;
                    for holder in &holders {
                        if meta_from_js(holder)?.key != key {
                            return Err(StorageError::UniqueValueTaken(key));
                        }
                    }
                    Ok(())
                }
                Check::Holds(key, value, found) => {
                    let found = found.await.map_err(idb_error("read a meta row"))?;
                    let actual = found
                        .as_ref()
                        .map(meta_from_js)
                        .transpose()?
                        .map(|m| m.value);
                    if actual == value {
                        Ok(())
                    } else {
                        Err(StorageError::MetaChanged(key))
                    }
                }
            }
        });
        join_all(futures).await.into_iter().collect()
    }
}
