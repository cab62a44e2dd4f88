//! Garbage collection of tombstones and of the server's checkpoint log, and the `expired` reset
//! (SYNC.md guarantee 2; FORMAT.md "Sync", "Retention").
//!
//! # The server
//! A local row `sync/state/gc` = `"<cursor> <horizon> <log floor> <time> <seq> <mark>"`:
//! - a **candidate** `(time, seq, mark)`: at the server's `time`, every row of the store had a seq
//!   of at most `seq` and the log head was `mark` (taken when a pull reached the end of the feed).
//!   Once [`RETENTION_MS`] has passed since `time`, it is ripe: tombstones up to `seq` are older
//!   than the retention, and every log row below `mark` stopped being handed out before `time`.
//! - the **cursor**: the feed is collected up to it; each pull answered while a candidate is
//!   ripe reads one page of the feed after it ([`GC_PAGE`] rows) and drops the clean tombstones
//!   in it up to the candidate's `seq`, so the work per request is bounded and each row of the
//!   feed is read once per retention period, never the whole store per request.
//!   The tombstones of identity rows and of displaced records are kept
//!   ([`crate::sync::plan::kept_for_good`]).
//! - the **horizon**: the greatest seq of a tombstone dropped. Checkpoints carry the horizon the
//!   server had when it handed them out (`key` = `"<mark>.<horizon>"`): one whose seq is below the
//!   horizon, handed out before it rose, may have missed a dropped tombstone, and is answered
//!   with `reset: "expired"`.
//! - the **log floor**: log rows below it are pruned (up to [`GC_PAGE`] per request, once the
//!   feed is collected up to the candidate's `seq`); a checkpoint whose log row is gone and whose
//!   `mark` is below the floor is `expired` too (not `lost`: the store was not restored).
//!
//! # A replica
//! Told `expired`, it pulls everything again with `sync/state/resync` = `"<mark> <cursor>"` (and
//! `" identities"` in the walk's second pass), `mark` the greatest local seq when the resync
//! began. Each pulled page rewrites, in the same atomic write,
//! every clean local row it brings at `mark` or below that the merge left alone (its seq moves
//! above `mark`: "seen"). When a pull ends with nothing more, every clean row still at `mark` or
//! below was not on the server: deleted elsewhere, its tombstone gone. It is forgotten without
//! being sent (page by page, the cursor saved with each page, so an interrupted sync goes on
//! where it stopped); identity rows in a second pass, where one that local records still use is
//! kept and marked dirty instead (it goes back to the server ahead of them; if the server
//! removed it, the tombstones it keeps for identities supersede it, and those records are
//! stranded). Dirty rows stay and are pushed. A replica also drops its own clean tombstones
//! older than the retention (by their `deletedAt`), a page at the end of each sync, but for
//! those the server keeps for good.

use super::*;

/// How long tombstones, and the server's checkpoint log, are kept (90 days): a replica that has
/// not synced for longer is told `expired` and resyncs in full by itself.
pub const RETENTION_MS: i64 = 90 * 24 * 60 * 60 * 1000;

/// Rows of the feed one collection step reads (one per pull answered, one per replica sync).
const GC_PAGE: usize = 500;

fn gc_key() -> MetaKey {
    local_key("state", "gc")
}

/// A replica's collection cursor (its own key: a store is never both, but the formats differ).
fn replica_gc_key() -> MetaKey {
    local_key("state", "tombstones")
}

/// The second pass of a resync's forgetting walk (identity rows), as its row says it.
const IDENTITY_PASS: &str = "identities";

fn resync_key() -> MetaKey {
    local_key("state", "resync")
}

/// The server's collection state (module docs).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(super) struct GcState {
    cursor: u64,
    pub(super) horizon: u64,
    pub(super) log_floor: u64,
    /// `(time, seq, mark)`.
    candidate: Option<(i64, u64, u64)>,
}

impl GcState {
    fn parse(text: &str) -> Option<Self> {
        let parts: Vec<&str> = text.split(' ').collect();
        let [cursor, horizon, log_floor, time, seq, mark] = parts[..] else {
            return None;
        };
        let time: i64 = time.parse().ok()?;
        Some(Self {
            cursor: cursor.parse().ok()?,
            horizon: horizon.parse().ok()?,
            log_floor: log_floor.parse().ok()?,
            candidate: (time > 0).then_some((time, seq.parse().ok()?, mark.parse().ok()?)),
        })
    }

    fn text(&self) -> String {
        let (time, seq, mark) = self.candidate.unwrap_or((0, 0, 0));
        format!(
            "{} {} {} {time} {seq} {mark}",
            self.cursor, self.horizon, self.log_floor
        )
    }
}

/// A checkpoint's `key`: the log mark and the horizon when it was handed out.
pub(super) fn checkpoint_key_text(mark: u64, horizon: u64) -> String {
    format!("{mark}.{horizon}")
}

/// `(mark, horizon)` of a checkpoint key; a key without a horizon predates collection (0).
pub(super) fn parse_checkpoint_key(key: &str) -> Option<(u64, u64)> {
    match key.split_once('.') {
        Some((mark, horizon)) => Some((mark.parse().ok()?, horizon.parse().ok()?)),
        None => Some((key.parse().ok()?, 0)),
    }
}

impl Vault {
    // ---- the server ----

    pub(super) async fn gc_state(&self) -> Result<GcState> {
        Ok(self
            .storage
            .meta_get(&gc_key())
            .await?
            .as_deref()
            .and_then(GcState::parse)
            .unwrap_or_default())
    }

    /// One bounded step of the server's collection, when a pull is answered. `end`: the store's
    /// last seq and log mark, when this pull read to the end of the feed (a new candidate).
    /// Best effort: another request that changed the state meanwhile wins, and this one skips.
    pub(super) async fn collect_server(&self, end: Option<(u64, u64)>) -> Result<()> {
        let text = self.storage.meta_get(&gc_key()).await?;
        let mut state = text.as_deref().and_then(GcState::parse).unwrap_or_default();
        let now = self.now();
        let mut ops = Vec::new();
        match state.candidate {
            Some((time, seq, mark)) if now.saturating_sub(time) >= RETENTION_MS => {
                if state.cursor < seq {
                    let page = self.storage.changes_since(state.cursor, GC_PAGE).await?;
                    let full = page.len() == GC_PAGE;
                    let mut reached = !full;
                    for change in page {
                        if change.seq > seq {
                            reached = true;
                            break;
                        }
                        if change.row.is_gone() && !kept_for_good(&change.row) {
                            state.horizon = state.horizon.max(change.seq);
                            ops.push(WriteOp::DropTombstone {
                                key: change.row.key(),
                                seq: change.seq,
                            });
                        }
                        state.cursor = change.seq;
                    }
                    if reached {
                        state.cursor = seq;
                    }
                } else {
                    let old: Vec<MetaRow> = self
                        .storage
                        .meta_object(object_type::SYNC, "log")
                        .await?
                        .into_iter()
                        .filter(|row| row.key.key.parse::<u64>().is_ok_and(|x| x < mark))
                        .take(GC_PAGE + 1)
                        .collect();
                    let done = old.len() <= GC_PAGE;
                    ops.extend(
                        old.into_iter()
                            .take(GC_PAGE)
                            .map(|row| WriteOp::DeleteMeta(row.key)),
                    );
                    if done {
                        state.log_floor = state.log_floor.max(mark);
                        state.candidate = end.map(|(seq, mark)| (now, seq, mark));
                    }
                }
            }
            Some(_) => return Ok(()),
            None => match end {
                Some((seq, mark)) => state.candidate = Some((now, seq, mark)),
                None => return Ok(()),
            },
        }
        self.commit_step(ops, gc_key(), text, state.text()).await
    }

    // ---- a replica ----

    /// While a resync is under way: the local seq it began at, the forgetting walk's cursor,
    /// and whether the walk is in its second pass (identity rows).
    pub(super) async fn resync_mark(&self) -> Result<Option<(u64, u64, bool)>> {
        Ok(self
            .storage
            .meta_get(&resync_key())
            .await?
            .and_then(|text| {
                let mut parts = text.split(' ');
                let mark = parts.next()?.parse().ok()?;
                let cursor = parts.next()?.parse().ok()?;
                Some((mark, cursor, parts.next() == Some(IDENTITY_PASS)))
            }))
    }

    /// The server said `expired` to a pull from `checkpoint_was`: remember the greatest local
    /// seq (once: a resync interrupted and told again keeps its first mark, the rows above it
    /// were pulled since), and start the forgetting walk from the beginning. Returns false, and
    /// begins nothing, when the store's checkpoint is no longer `checkpoint_was` (another tab
    /// pulled meanwhile, and may have resynced to the end already).
    pub(super) async fn begin_resync(&self, checkpoint_was: Option<&str>) -> Result<bool> {
        let mark = match self.resync_mark().await? {
            Some((mark, _, _)) => mark,
            None => {
                let mut last = 0;
                loop {
                    let page = self.storage.changes_since(last, 1_000).await?;
                    let Some(end) = page.last() else { break };
                    last = end.seq;
                    if page.len() < 1_000 {
                        break;
                    }
                }
                last
            }
        };
        let ops = vec![
            WriteOp::ExpectMeta {
                key: checkpoint_key(),
                value: checkpoint_was.map(str::to_owned),
            },
            WriteOp::PutMeta(MetaRow {
                key: resync_key(),
                value: format!("{mark} 0"),
            }),
        ];
        self.apply_unless_moved(ops).await
    }

    /// The writes that mark the pulled rows a merge left alone as seen by a resync: each clean
    /// local version at `mark` or below is written again as it is (it moves above `mark`).
    pub(super) fn resync_touches(
        rows: &[Row],
        stored: &HashMap<RowKey, Stored>,
        planned: &[WriteOp],
        mark: u64,
    ) -> Vec<WriteOp> {
        let written: HashSet<RowKey> = planned
            .iter()
            .filter_map(|op| match op {
                WriteOp::PutVersion { row, .. } => Some(row.key()),
                // A row the page writes again here (an emptied identity revived).
                WriteOp::PutSharedMeta(row) => Some(RowKey::Meta(row.key.clone())),
                _ => None,
            })
            .collect();
        let mut seen = HashSet::new();
        rows.iter()
            .map(Row::key)
            .filter(|key| !written.contains(key) && seen.insert(key.clone()))
            .filter_map(|key| stored.get(&key))
            .filter(|s| s.dirty.is_none() && s.seq <= mark)
            .map(|s| WriteOp::PutVersion {
                row: Box::new(s.row.clone()),
                dirty: false,
            })
            .collect()
    }

    /// After a resync's full pull: forget every clean local row the server no longer has (module
    /// docs), a page per write, the cursor saved with each. Two passes: records and other rows
    /// first, then identity rows, so an identity is kept when local records not yet pushed
    /// still use it (it goes back to the server with them, or their push would name an
    /// identity the server does not have).
    pub(super) async fn finish_resync(&self) -> Result<()> {
        let Some((mark, mut cursor, mut identities)) = self.resync_mark().await? else {
            return Ok(());
        };
        let mut raced = 0;
        loop {
            self.ensure_open()?;
            let page: Vec<crate::storage::Change> = self
                .storage
                .changes_since(cursor, GC_PAGE)
                .await?
                .into_iter()
                .filter(|c| c.seq <= mark)
                .collect();
            let Some(last) = page.last().map(|c| c.seq) else {
                if identities {
                    break;
                }
                identities = true;
                cursor = 0;
                continue;
            };
            let keys: Vec<RowKey> = page.iter().map(|c| c.row.key()).collect();
            let found = self.storage.versions(&keys).await?;
            let stamp = self.stamp()?;
            let mut ops = Vec::new();
            // Per owner: whether records use it (a few owners a page: a list, not a map).
            let mut used: Vec<(String, bool)> = Vec::new();
            for (change, stored) in page.iter().zip(found) {
                let Some(stored) = stored else { continue };
                if stored.dirty.is_some() || stored.seq != change.seq || stored.row.is_gone() {
                    continue;
                }
                let key = change.row.key();
                let identity = match &key {
                    RowKey::Meta(k) if k.object_type == object_type::IDENTITY => Some(k),
                    _ => None,
                };
                let mut keep = false;
                match identity {
                    Some(_) if !identities => continue,
                    None if identities => continue,
                    Some(k) => {
                        // A further secret slot belongs to the identity its owner row names.
                        let owner = self
                            .storage
                            .meta_get(&MetaKey::new(
                                object_type::IDENTITY,
                                &k.object_id,
                                crate::storage::OWNER_KEY,
                            ))
                            .await?
                            .unwrap_or_else(|| k.object_id.clone());
                        keep = match used.iter().find(|(o, _)| *o == owner) {
                            Some((_, used)) => *used,
                            None => {
                                let linked = !self
                                    .storage
                                    .records_linked_to(&owner, None, 1)
                                    .await?
                                    .is_empty();
                                used.push((owner, linked));
                                linked
                            }
                        };
                    }
                    None => {}
                }
                ops.push(WriteOp::ExpectVersion {
                    key: key.clone(),
                    seq: Some(stored.seq),
                });
                ops.push(WriteOp::PutVersion {
                    row: Box::new(if keep {
                        stored.row
                    } else {
                        forgotten(key, stamp)
                    }),
                    dirty: keep,
                });
            }
            let next = if identities {
                format!("{mark} {last} {IDENTITY_PASS}")
            } else {
                format!("{mark} {last}")
            };
            ops.push(WriteOp::PutMeta(MetaRow {
                key: resync_key(),
                value: next,
            }));
            match self.storage.apply(stamp, ops).await {
                // A local write raced the walk: read the page again.
                Err(StorageError::Changed(_) | StorageError::MetaChanged(_))
                    if raced < MAX_ROUNDS =>
                {
                    raced += 1;
                    continue;
                }
                other => other?,
            }
            cursor = last;
        }
        // The rows forgotten are tombstones here now (clean, never sent): drop them too, so
        // nothing of them is left.
        self.collect_forgotten(mark).await?;
        self.storage
            .apply(self.stamp()?, vec![WriteOp::DeleteMeta(resync_key())])
            .await?;
        Ok(())
    }

    /// Drop the clean tombstones a resync's walk left above `mark` (its own), page by page.
    async fn collect_forgotten(&self, mark: u64) -> Result<()> {
        let mut after = mark;
        loop {
            let page = self.storage.changes_since(after, GC_PAGE).await?;
            let Some(last) = page.last().map(|c| c.seq) else {
                return Ok(());
            };
            let drops: Vec<WriteOp> = page
                .iter()
                .filter(|c| {
                    matches!(&c.row, Row::Record { version: RecordVersion::Gone(t), .. } if t.reason == crate::sync::TombstoneReason::Deleted && t.deleted_at == FORGOTTEN_AT)
                        || matches!(&c.row, Row::Meta { version: MetaVersion::Gone { deleted_at, .. }, .. } if *deleted_at == FORGOTTEN_AT)
                })
                .map(|c| WriteOp::DropTombstone {
                    key: c.row.key(),
                    seq: c.seq,
                })
                .collect();
            if !drops.is_empty() {
                self.storage.apply(self.stamp()?, drops).await?;
            }
            if page.len() < GC_PAGE {
                return Ok(());
            }
            after = last;
        }
    }

    /// Clean tombstones here with a `deletedAt` before this time are past the retention: the
    /// replica's collection drops them, and until it does a pulled version of their key merges
    /// as if they were gone ([`crate::sync::plan::ReplicaView::retained_from`]).
    pub(super) fn retained_from(&self) -> i64 {
        self.now().saturating_sub(RETENTION_MS)
    }

    /// One bounded step of a replica's collection: its clean tombstones older than the
    /// retention by their `deletedAt`, from a cursor in `sync/state/gc` that stops at the first
    /// one too young or not yet pushed.
    pub(super) async fn collect_replica(&self) -> Result<()> {
        let text = self.storage.meta_get(&replica_gc_key()).await?;
        let cursor: u64 = text.as_deref().and_then(|t| t.parse().ok()).unwrap_or(0);
        let page = self.storage.changes_since(cursor, GC_PAGE).await?;
        let gone: Vec<RowKey> = page
            .iter()
            .filter(|c| c.row.is_gone())
            .map(|c| c.row.key())
            .collect();
        let mut dirty: HashSet<RowKey> = HashSet::new();
        if !gone.is_empty() {
            for (key, stored) in gone.iter().zip(self.storage.versions(&gone).await?) {
                if stored.is_some_and(|s| s.dirty.is_some()) {
                    dirty.insert(key.clone());
                }
            }
        }
        let before = self.retained_from();
        let mut next = cursor;
        let mut ops = Vec::new();
        for change in &page {
            if let Some(at) = change.row.deleted_at() {
                if at >= before || dirty.contains(&change.row.key()) {
                    break;
                }
                // Kept here as on the server: a server that loses what it had gets them back
                // from its replicas, and a removed secret stays removed.
                if kept_for_good(&change.row) {
                    next = change.seq;
                    continue;
                }
                ops.push(WriteOp::DropTombstone {
                    key: change.row.key(),
                    seq: change.seq,
                });
            }
            next = change.seq;
        }
        if next == cursor {
            return Ok(());
        }
        self.commit_step(ops, replica_gc_key(), text, next.to_string())
            .await
    }

    /// Commit one collection step's `ops` with its state row `key` moved from `was` to `now`,
    /// best effort: another request that moved the state meanwhile wins, and this step's work
    /// is left for a later one.
    async fn commit_step(
        &self,
        mut ops: Vec<WriteOp>,
        key: MetaKey,
        was: Option<String>,
        now: String,
    ) -> Result<()> {
        ops.push(WriteOp::ExpectMeta {
            key: key.clone(),
            value: was,
        });
        ops.push(WriteOp::PutMeta(MetaRow { key, value: now }));
        self.apply_unless_moved(ops).await.map(|_| ())
    }
}

/// The `deletedAt` of the tombstones a resync leaves for the rows it forgets (the epoch): they
/// are dropped at once, and told apart from tombstones of real deletions by it.
const FORGOTTEN_AT: i64 = 0;

/// A clean row the server no longer has, as a tombstone that removes it here.
fn forgotten(key: RowKey, stamp: crate::storage::Stamp) -> Row {
    match key {
        RowKey::Record(id) => Row::Record {
            id,
            version: RecordVersion::Gone(crate::sync::Tombstone {
                rev: stamp.rev,
                deleted_at: FORGOTTEN_AT,
                reason: crate::sync::TombstoneReason::Deleted,
            }),
        },
        RowKey::Meta(key) => Row::Meta {
            key,
            version: MetaVersion::Gone {
                rev: stamp.rev,
                deleted_at: FORGOTTEN_AT,
                emptied: false,
            },
        },
    }
}
