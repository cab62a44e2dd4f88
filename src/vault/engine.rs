//! Zero-knowledge sync, the engine (SYNC.md): [`Vault::sync`] on any replica and
//! [`Vault::sync_handle`] on the server replica, over the wire format of [`crate::sync::wire`]
//! and the page plans of [`crate::sync::plan`]. The server never holds a key: it merges and
//! checks rows by their revisions and shapes, and never opens a value.
//!
//! # Checkpoints and a wiped or restored server (SYNC.md 8)
//! A server store has an id (`s_` + 32 hex, a local row made on its first request): another id
//! in a checkpoint means another or an emptied store. To tell a store restored from an older
//! backup, the server keeps a **log** of local rows `sync/log/<seq>` = a random head: before it
//! answers a pull whose last row has seq `S`, it makes sure an entry exists at a seq `X ≥ S`
//! written after every row up to `X` existed, and hands out the checkpoint `(S, key = X, head)`
//! (the key also carries the collection horizon, see [`gc`]).
//! A checkpoint is honoured only while that entry still holds that head: a backup taken after the
//! entry holds every row up to `X ≥ S`, and its later writes take seqs above them, so nothing the
//! replica skipped can be reissued below its cursor; a backup taken before it lacks the entry,
//! and the replica is told `reset: "lost"`: it pulls from the start and pushes back everything it
//! holds.

use super::{Vault, kdf_key};
use crate::crypto::KdfParams;
use crate::error::{Result, VaultError};
use crate::record::Record;
use crate::storage::{
    DEK_KEY, MaybeSendSync, MetaKey, MetaRow, OWNER_KEY, RowKey, Storage, StorageError,
    StorageResult, Stored, TAG_KEY, WriteOp, WriteTransaction, object_type,
};
use crate::sync::plan::{
    Contradiction, ContradictionKind, MAX_FUTURE_MS, ReplicaView, ServerView, SlotView,
    identity_of, identity_tag_key, is_meta, kept_for_good, objects_of, plan_pull, plan_push,
    removed_identity, sealed_under, supersedes_local,
};
use crate::sync::wire::{
    self, Checkpoint, PullRequest, PullResponse, PushRequest, PushResponse, Refusal, Refused,
    Request, Superseded, VaultInfo, WireError,
};
use crate::sync::{MetaVersion, RecordVersion, Rev, Row, TombstoneReason, drift};
use async_trait::async_trait;
use futures::future::join;
use std::cell::Cell;
use std::collections::{HashMap, HashSet};

mod gc;

/// Rows a replica asks for per pull page (the server may send fewer: large values).
const PULL_PAGE: u64 = wire::MAX_PULL_ROWS as u64;
/// Rows per push page at most; pages are cut earlier at [`wire::PAGE_BUDGET_BYTES`].
const PUSH_PAGE: usize = wire::MAX_PUSH_ROWS;

/// `rows` cut into push pages: at most [`PUSH_PAGE`] rows and, past the first row of a page,
/// [`wire::PAGE_BUDGET_BYTES`] encoded bytes each. An identity object's rows (which `push`
/// sorts next to each other) go in one page: the server refuses a page that leaves an object
/// with a `tag` and no `dek` ([`ContradictionKind::IncompleteIdentity`]).
fn push_pages<T>(rows: &[(Row, T)]) -> Vec<&[(Row, T)]> {
    let mut pages = Vec::new();
    let (mut start, mut bytes) = (0, 0);
    let mut i = 0;
    while i < rows.len() {
        let len = wire::encoded_row_len(&rows[i].0, None);
        if i > start && (i - start == PUSH_PAGE || bytes + len > wire::PAGE_BUDGET_BYTES) {
            let cut = object_start(rows, start, i);
            pages.push(&rows[start..cut]);
            (start, bytes, i) = (cut, 0, cut);
            continue;
        }
        bytes += len;
        i += 1;
    }
    if start < rows.len() {
        pages.push(&rows[start..]);
    }
    pages
}

/// Where a page that would end before `rows[i]` ends instead, so as not to split an identity
/// object: at the first row of the object `rows[i]` belongs to, when rows before it in the page
/// belong to it too. (An object's few small rows never fill a page alone; if they did, `i`.)
fn object_start<T>(rows: &[(Row, T)], start: usize, i: usize) -> usize {
    let Some(object) = identity_row_object(&rows[i].0) else {
        return i;
    };
    let mut cut = i;
    while cut > start && identity_row_object(&rows[cut - 1].0) == Some(object) {
        cut -= 1;
    }
    if cut == start { i } else { cut }
}

/// The identity (or secret slot) object `row` is a row of ([`identity_of`]).
fn identity_row_object(row: &Row) -> Option<&str> {
    match row {
        Row::Meta { key, .. } => identity_of(key),
        Row::Record { .. } => None,
    }
}

/// Times a page is planned again when another writer changed what it read.
const MAX_ROUNDS: usize = 8;

/// `onProgress` (SYNC.md `SyncOptions`): called after each page pulled or pushed with the rows
/// moved so far and an estimate of the total (the server's `remaining` and the rows still to
/// push), which may grow as a sync finds more to do; last with `(done, done)`.
struct Progress<'a> {
    callback: Option<&'a dyn Fn(u64, u64)>,
    done: Cell<u64>,
}

impl Progress<'_> {
    fn advance(&self, rows: u64, left: u64) {
        let done = self.done.get().saturating_add(rows);
        self.done.set(done);
        if let Some(callback) = self.callback {
            callback(done, done.saturating_add(left));
        }
    }
}

/// How a replica reaches its sync server: one request body out, the status and body back.
#[cfg_attr(target_arch = "wasm32", async_trait(?Send))]
#[cfg_attr(not(target_arch = "wasm32"), async_trait)]
pub trait SyncTransport: MaybeSendSync {
    /// A network or server failure is `STORAGE` (with the cause in the message).
    async fn exchange(&self, body: String) -> Result<(u16, Vec<u8>)>;
}

/// What a sync did (SYNC.md `SyncReport`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SyncReport {
    /// Changes applied here from the server.
    pub pulled: u64,
    /// Changes of this replica the server accepted.
    pub pushed: u64,
    /// Changes of this replica that a later change from elsewhere superseded.
    pub conflicts: u64,
    /// Tokens kept on this replica only: refused by the server (sealed under a removed identity,
    /// or their custom token is another record's), or removed there but readable here. Every
    /// sync lists them while they are.
    pub stranded: Vec<String>,
}

fn local_key(object_id: &str, key: &str) -> MetaKey {
    MetaKey::new(object_type::SYNC, object_id, key)
}

fn server_id_key() -> MetaKey {
    local_key("state", "server")
}

fn checkpoint_key() -> MetaKey {
    local_key("state", "checkpoint")
}

fn log_head_key() -> MetaKey {
    local_key("state", "log")
}

fn log_key(seq: u64) -> MetaKey {
    local_key("log", &format!("{seq:020}"))
}

/// Present while this replica owes the server every row it holds (a first sync of a replica
/// that held rows, a server that lost what it had): until a push of them all completes.
fn owed_key() -> MetaKey {
    local_key("state", "owed")
}

/// The revision this replica's last completed sync ended at (conflict counting).
fn synced_key() -> MetaKey {
    local_key("state", "synced")
}

/// An identity row's removal pulled while local records still used the identity.
fn deferred_key(key: &MetaKey) -> MetaKey {
    local_key("deferred", &format!("{}/{}", key.object_id, key.key))
}

/// Which of `identity_ids` the server removed while local records still used them (their
/// removal is set aside here, [`deferred_key`]): keys no other replica will open again, which a
/// rekey moves records off and never onto, and writers avoid (SYNC.md 7).
pub(crate) async fn removed_by_server(
    reads: &dyn crate::storage::WriteTransaction,
    identity_ids: &[&str],
) -> crate::storage::StorageResult<Vec<String>> {
    let mut removed: Vec<String> = Vec::new();
    for (i, id) in identity_ids.iter().enumerate() {
        if identity_ids[..i].contains(id) {
            continue;
        }
        let tag = MetaKey::new(object_type::IDENTITY, id, super::identity::TAG_KEY);
        if reads.meta_get(&deferred_key(&tag)).await?.is_some() {
            removed.push((*id).to_owned());
        }
    }
    Ok(removed)
}

/// The ops that set aside the removals a plan deferred ([`deferred_key`]), planned again at
/// each sync until local records no longer use their identity.
fn set_aside(deferred: &[Row], ops: &mut Vec<WriteOp>) {
    for row in deferred {
        if let Row::Meta {
            key,
            version:
                MetaVersion::Gone {
                    rev,
                    deleted_at,
                    emptied,
                },
        } = row
        {
            let mark = if *emptied { " emptied" } else { "" };
            ops.push(WriteOp::PutMeta(MetaRow {
                key: deferred_key(key),
                value: format!("{rev} {deleted_at}{mark}"),
            }));
        }
    }
}

/// The removal a deferred row holds: `"<rev> <deletedAt>"`, and `" emptied"` for an emptied
/// one, under `<identity id>/<key>`.
fn deferred_row(row: &MetaRow) -> Option<Row> {
    let (object_id, key) = row.key.key.split_once('/')?;
    let mut parts = row.value.split(' ');
    let (rev, deleted_at) = (parts.next()?, parts.next()?);
    Some(Row::Meta {
        key: MetaKey::new(object_type::IDENTITY, object_id, key),
        version: MetaVersion::Gone {
            rev: Rev::parse(rev).ok()?,
            deleted_at: deleted_at.parse().ok()?,
            emptied: parts.next() == Some("emptied"),
        },
    })
}

fn parked_key(id: &str) -> MetaKey {
    local_key("parked", id)
}

/// The mark of a record kept on this replica only (SYNC.md `stranded`) because the server holds
/// something else for its id or its token for good: it was `displaced` there, or a pulled record
/// that keeps its custom token waits here (`parked`) while it holds the token. The pulled page or
/// push answer that strands the record writes the mark in the same atomic write, and every later
/// sync reports the record until it is gone here or the server holds it live. A report alone
/// would be lost with a sync that fails after that page, and the record is clean here: nothing
/// else would bring it up again.
fn stranded_key(id: &str) -> MetaKey {
    local_key("stranded", id)
}

/// What a sync knows of the records kept on this replica only.
struct Stranding {
    /// Drawn when the sync began: each mark it writes holds this tag and the count of marks it
    /// wrote so far, a value no other write stores, so that it clears only a mark it read or
    /// wrote. Another tab may mark the record again meanwhile (it pulled the record displaced
    /// after this sync's push of it was taken), even with a mark read by this sync; that mark
    /// must stay.
    tag: String,
    written: u32,
    /// The [`stranded_key`] marks there may be, as this sync knows them: those stored when it
    /// began, and those it wrote since (clearing a mark costs a write only where there may be
    /// one). A few at most: a record is stranded only by a token collision or a rotation it
    /// missed.
    marked: Vec<MetaRow>,
    /// Tokens the server refused this sync, or of records that still use an identity removed
    /// elsewhere: dirty rows, or deferred removals, that each sync pushes or plans again, so they
    /// need no mark (a clean row refused in a push of everything gets one: nothing sends it
    /// again).
    tokens: HashSet<String>,
}

impl Stranding {
    /// Add to a planned page's writes the marks of what it strands (`strands`), and clear those
    /// of the records it shows live on the server (`rows`).
    fn mark(&mut self, rows: &[Row], strands: &[String], ops: &mut Vec<WriteOp>) {
        for row in rows {
            if let Row::Record {
                id,
                version: RecordVersion::Live(_),
            } = row
                && self.mark_of(id).is_some()
            {
                ops.push(WriteOp::DeleteMeta(stranded_key(id)));
            }
        }
        for id in strands {
            self.written += 1;
            let mark = MetaRow {
                key: stranded_key(id),
                value: format!("{}.{}", self.tag, self.written),
            };
            self.marked.retain(|m| m.key.key != *id);
            self.marked.push(mark.clone());
            ops.push(WriteOp::PutMeta(mark));
        }
    }

    /// `id`'s mark as this sync read or wrote it.
    fn mark_of(&self, id: &str) -> Option<&MetaRow> {
        self.marked.iter().find(|m| m.key.key == id)
    }
}

/// How a pull's checkpoint stands (SYNC.md 8 and guarantee 2).
enum Standing {
    Honoured,
    /// The store lost what the checkpoint names (wiped, restored, another store).
    Lost,
    /// The store dropped tombstones or log rows the replica had not seen (it was away longer
    /// than [`gc::RETENTION_MS`]).
    Expired,
}

fn random_hex() -> Result<String> {
    let mut bytes = [0u8; 16];
    crate::crypto::random_bytes(&mut bytes)?;
    Ok(base16ct::lower::encode_string(&bytes))
}

/// A checkpoint as the replica stores it: its four fields, space-separated (none holds a space).
fn checkpoint_text(c: &Checkpoint) -> String {
    format!("{} {} {} {}", c.server, c.seq, c.key, c.head)
}

fn parse_checkpoint(text: &str) -> Option<Checkpoint> {
    let mut parts = text.split(' ');
    let checkpoint = Checkpoint {
        server: parts.next()?.to_owned(),
        seq: parts.next()?.parse().ok()?,
        key: parts.next()?.to_owned(),
        head: parts.next()?.to_owned(),
    };
    parts.next().is_none().then_some(checkpoint)
}

fn storage_failure(e: impl std::fmt::Display) -> WireError {
    // The detail stays on the server; the client is told the server failed.
    let _ = e.to_string();
    WireError::Storage
}

/// Whether `storage` holds no record and no identity: a replica that joins any vault
/// (FORMAT.md "empty"), or a server that has none to give.
async fn holds_no_data(storage: &dyn Storage) -> StorageResult<bool> {
    Ok(storage.scan_records(None, 1).await?.is_empty()
        && storage.meta_count(object_type::IDENTITY).await? == 0)
}

/// What a request asks of a server's vault (SYNC.md 5, [`Vault::server_join`]).
enum Join {
    /// The replica's vault is the server's (or the replica is empty): the server's `kdf` row.
    Same(String),
    /// The server is empty and takes the replica's vault: the ops that adopt it, checked at
    /// commit, and the setting to use once they are committed.
    Adopt {
        kdf: KdfParams,
        row: String,
        ops: Vec<WriteOp>,
    },
}

/// 409 for a replica whose vault the server, which holds another, cannot take.
fn another_vault() -> WireError {
    WireError::Conflict(
        "this replica holds another vault than the server's (another KDF salt): its keys cannot open the server's records. Sync it to its own server, or start this replica empty".into(),
    )
}

/// 422 for a pushed page that contradicts the server's vault.
fn contradiction_error(e: Contradiction) -> WireError {
    WireError::Unprocessable(match e.kind {
        ContradictionKind::UnknownIdentity => format!(
            "rows[{}].passwordId names an identity this vault does not have; send an identity's rows before the records sealed under it",
            e.row
        ),
        ContradictionKind::ChangedImmutable => format!(
            "rows[{}] gives a record this vault holds another token or createdAt, which never change; nothing of the page was stored",
            e.row
        ),
        ContradictionKind::IncompleteIdentity => format!(
            "rows[{}] would leave an identity object with a tag and no dek, or a dek and no tag, or a slot's identity row without its tag; send an object's rows in one page; nothing of the page was stored",
            e.row
        ),
    })
}

/// Push order: identity and setting rows first (records link to them), then record
/// tombstones (a deleted record frees its custom token before a record that takes it arrives:
/// after it, the server refused the new record as displaced by the one deleted, and reported it
/// stranded until the next push; seed 312), then records, then removals of meta rows (an
/// identity goes after the records that left).
fn push_rank(row: &Row) -> u8 {
    match row {
        Row::Meta {
            version: MetaVersion::Value { .. },
            ..
        } => 0,
        Row::Record {
            version: RecordVersion::Gone(_),
            ..
        } => 1,
        Row::Record {
            version: RecordVersion::Live(_),
            ..
        } => 2,
        Row::Meta {
            version: MetaVersion::Gone { .. },
            ..
        } => 3,
    }
}

/// The identity a removed meta row belongs to, when it is one of an identity's rows.
fn live_token(row: &Row) -> Option<&str> {
    match row {
        Row::Record {
            version: RecordVersion::Live(live),
            ..
        } => Some(&live.token),
        _ => None,
    }
}

impl Vault {
    // ---- the server ----

    /// Answer one sync request body (SYNC.md; the wire format is FORMAT.md "Sync"): the status
    /// and the JSON body of the response. Method, content type and size are the caller's to
    /// check first ([`wire::check_content_type`], [`wire::check_body_len`]). Needs no secret.
    pub async fn sync_handle(&self, body: &[u8]) -> (u16, String) {
        let (status, answer, _) = self.sync_handle_counted(body).await;
        (status, answer)
    }

    /// [`Vault::sync_handle`], with the rows the request moved (for `onEvent`'s `records`): those
    /// a pull sent, or those a push stored; 0 for a refused request.
    pub async fn sync_handle_counted(&self, body: &[u8]) -> (u16, String, u64) {
        match self.serve(body).await {
            Ok((body, rows)) => (200, body, rows),
            Err(e) => (e.status(), wire::encode_error(&e), 0),
        }
    }

    async fn serve(&self, body: &[u8]) -> std::result::Result<(String, u64), WireError> {
        if self.is_closed() {
            return Err(WireError::Storage);
        }
        wire::check_body_len(body.len() as u64)?;
        let request = wire::decode_request(body)?;
        let server = self.server_id().await.map_err(storage_failure)?;
        match request {
            Request::Pull(pull) => {
                let returning = pull.checkpoint.is_some();
                let kdf = self.join_on_pull(&pull.vault, returning).await?;
                let response = self.serve_pull(server, kdf, pull).await?;
                let rows = response.rows.len() as u64;
                Ok((wire::encode_pull_response(&response), rows))
            }
            Request::Push(push) => {
                let response = self.serve_push(server, push).await?;
                let rows = response.stored;
                Ok((wire::encode_push_response(&response), rows))
            }
        }
    }

    /// This store's server id, made on its first request.
    async fn server_id(&self) -> Result<String> {
        for _ in 0..MAX_ROUNDS {
            if let Some(id) = self.storage.meta_get(&server_id_key()).await? {
                return Ok(id);
            }
            let id = format!("s_{}", random_hex()?);
            let row = MetaRow {
                key: server_id_key(),
                value: id.clone(),
            };
            match self
                .storage
                .apply(self.stamp()?, vec![WriteOp::InsertMeta(row)])
                .await
            {
                Ok(()) => return Ok(id),
                Err(StorageError::MetaTaken(_)) => continue,
                Err(e) => return Err(e.into()),
            }
        }
        Err(VaultError::storage("could not create the sync server's id"))
    }

    /// SYNC.md 5 on the server: what a request from a replica with `vault` asks of this store.
    /// The same vault goes on, and an empty replica takes ours. A replica's vault is adopted
    /// only while this store holds no data (the adoption expects that, and our `kdf` row
    /// unchanged, at commit; tombstones name records of no vault in particular) and only if
    /// its iterations meet this vault's `minKdfIterations` (SYNC.md 6: a replica must not lower
    /// what guessing a password costs), otherwise it is refused: a replica with records, or an
    /// empty one `returning` (its pull carries a checkpoint: it synced with this vault's server
    /// before, this store or one that lost what it had).
    async fn server_join(
        &self,
        vault: &VaultInfo,
        returning: bool,
    ) -> std::result::Result<Join, WireError> {
        let ours = self
            .storage
            .meta_get(&kdf_key())
            .await
            .map_err(storage_failure)?
            .ok_or(WireError::Storage)?;
        let same = match (
            KdfParams::from_json(&ours),
            KdfParams::from_json(&vault.kdf),
        ) {
            (Ok(a), Ok(b)) => a == b,
            _ => false,
        };
        if same || vault.empty && !returning {
            return Ok(Join::Same(ours));
        }
        let theirs = KdfParams::from_json(&vault.kdf)
            .map_err(|_| WireError::Malformed("vault.kdf is not a valid kdf setting".into()))?;
        if vault.empty {
            // A replica whose records were all deleted still holds the vault it synced: a
            // store without data (a wiped server) takes it, rather than hand it a salt of its
            // own, for which its next records would be sealed and which their first push would
            // bind this store to, refusing every other replica of the vault. A fresh replica
            // (no checkpoint) takes ours, so that two of them that join an empty server share
            // its vault; a store with data hands its own as always.
            if theirs.iterations < self.kdf_floor
                || !holds_no_data(&*self.storage)
                    .await
                    .map_err(storage_failure)?
            {
                return Ok(Join::Same(ours));
            }
        } else if theirs.iterations < self.kdf_floor {
            return Err(WireError::Conflict(format!(
                "this replica's vault derives keys with {} PBKDF2 iterations, fewer than the server's minKdfIterations ({}): the server does not take a vault whose passwords are cheaper to guess. A vault's iterations are set when it is created: sync a vault created with enough, or open the server with a lower minKdfIterations",
                theirs.iterations, self.kdf_floor
            )));
        }
        let ops = vec![
            WriteOp::ExpectNoData,
            WriteOp::ExpectMeta {
                key: kdf_key(),
                value: Some(ours),
            },
            WriteOp::PutMeta(MetaRow {
                key: kdf_key(),
                value: vault.kdf.clone(),
            }),
        ];
        Ok(Join::Adopt {
            kdf: theirs,
            row: vault.kdf.clone(),
            ops,
        })
    }

    /// [`Vault::server_join`] for a pull: an adoption is committed on its own (the answer
    /// carries the vault the replica joined). Returns the server's `kdf` row.
    async fn join_on_pull(
        &self,
        vault: &VaultInfo,
        mut returning: bool,
    ) -> std::result::Result<String, WireError> {
        for _ in 0..MAX_ROUNDS {
            let (kdf, row, ops) = match self.server_join(vault, returning).await? {
                Join::Same(ours) => return Ok(ours),
                Join::Adopt { kdf, row, ops } => (kdf, row, ops),
            };
            let stamp = self.stamp().map_err(storage_failure)?;
            match self.storage.apply(stamp, ops).await {
                Ok(()) => {
                    self.replace_kdf(kdf, row.clone());
                    return Ok(row);
                }
                // Data came before an empty replica's vault: it takes ours after all.
                Err(StorageError::NotEmpty) if vault.empty => returning = false,
                Err(StorageError::NotEmpty) => return Err(another_vault()),
                // Another request adopted a vault meanwhile: join again.
                Err(StorageError::MetaChanged(_)) => continue,
                Err(e) => return Err(storage_failure(e)),
            }
        }
        Err(WireError::Busy)
    }

    async fn serve_pull(
        &self,
        server: String,
        kdf: String,
        request: PullRequest,
    ) -> std::result::Result<PullResponse, WireError> {
        let limit = request.page_limit();
        let mut gc = self.gc_state().await.map_err(storage_failure)?;
        let mut rounds = 0;
        let (after, reset, mut rows) = loop {
            let (after, reset) = match &request.checkpoint {
                None => (0, None),
                Some(c) => match self
                    .standing(&server, c, &gc)
                    .await
                    .map_err(storage_failure)?
                {
                    Standing::Honoured => (c.seq, None),
                    Standing::Expired => (0, Some(wire::Reset::Expired)),
                    Standing::Lost => (0, Some(wire::Reset::Lost)),
                },
            };
            let rows = self
                .storage
                .changes_since(after, limit)
                .await
                .map_err(storage_failure)?;
            // A collection between the check and the read may have dropped a tombstone this
            // page should have held: check again with what it left.
            let now = self.gc_state().await.map_err(storage_failure)?;
            let settled = now.horizon == gc.horizon;
            gc = now;
            if settled {
                break (after, reset, rows);
            }
            rounds += 1;
            if rounds == MAX_ROUNDS {
                return Err(WireError::Busy);
            }
        };
        let mut more = rows.len() == limit;
        let removals: Vec<&Row> = rows.iter().map(|c| &c.row).collect();
        let mut replaced = (self.kept_for_answer(&removals).await).map_err(storage_failure)?;
        // At least one row, then as many as fit the page's bytes (large values), each emptied
        // removal (or write-back of one) with the version it replaced.
        let mut bytes = 0;
        if let Some(fit) = rows.iter().position(|c| {
            bytes += wire::encoded_row_len(&c.row, Some(c.seq));
            if let Row::Meta { key, .. } = &c.row
                && let Some(was) = replaced.iter().find(|r| is_meta(r, key))
            {
                bytes += wire::encoded_row_len(was, None);
            }
            bytes > wire::PAGE_BUDGET_BYTES
        }) {
            rows.truncate(fit.max(1));
            more = true;
            replaced.retain(|r| rows.iter().any(|c| c.row.key() == r.key()));
        }
        let last = rows.last().map_or(after, |c| c.seq);
        // Records asked for by id (set aside by the replica while its own record held their
        // token), with their current versions.
        if !request.fetch.is_empty() {
            let keys: Vec<RowKey> = request
                .fetch
                .iter()
                .map(|id| RowKey::Record(id.clone()))
                .collect();
            let sent: HashSet<RowKey> = rows.iter().map(|c| c.row.key()).collect();
            for found in self
                .storage
                .versions(&keys)
                .await
                .map_err(storage_failure)?
                .into_iter()
                .flatten()
            {
                if sent.contains(&found.row.key()) {
                    continue;
                }
                // What does not fit is asked for again by the next pull.
                bytes += wire::encoded_row_len(&found.row, Some(found.seq));
                if bytes > wire::PAGE_BUDGET_BYTES {
                    break;
                }
                rows.push(crate::storage::Change {
                    seq: found.seq,
                    row: found.row,
                });
            }
        }
        let (mark, head) = self.log_mark(last).await.map_err(storage_failure)?;
        // One bounded step of garbage collection; a pull that read to the end of the feed
        // tells it where the store is now.
        self.collect_server((!more).then_some((last, mark)))
            .await
            .map_err(storage_failure)?;
        Ok(PullResponse {
            server: server.clone(),
            time: self.now(),
            kdf,
            reset,
            rows,
            checkpoint: Checkpoint {
                server,
                seq: last,
                key: gc::checkpoint_key_text(mark, gc.horizon),
                head,
            },
            more,
            remaining: if more { limit as u64 } else { 0 },
            replaced,
        })
    }

    /// The live versions that the emptied removals among `rows` replaced, as this store kept
    /// them ([`crate::storage::replaced_key`]: a server hands them to the replicas that pull
    /// the removals, a replica to the server with its push of them). One read per such
    /// removal: they are rows of identity objects, a few in a page that holds any.
    async fn replaced(&self, rows: &[&Row]) -> Result<Vec<Row>> {
        let mut found = Vec::new();
        for row in rows {
            if let Row::Meta {
                key,
                version: MetaVersion::Gone { emptied: true, .. },
            } = *row
                && let Some(text) = self
                    .storage
                    .meta_get(&crate::storage::replaced_key(key))
                    .await?
                && let Some(was) = crate::sync::plan::replaced_row(key, &text)
            {
                found.push(was);
            }
        }
        Ok(found)
    }

    /// A server's `replaced` for the rows it answers with: [`Self::replaced`], and for each live
    /// identity row that writes back the version this store kept with an emptied removal of it
    /// (the same value at a later revision: a replica that wrote under the identity brought it
    /// back), that version. A replica holding a change of the row made after it, not pushed
    /// yet (a password change before the deletion), keeps its change over the write-back
    /// ([`plan_pull`]). One read per live identity row: an identity's rows are few.
    async fn kept_for_answer(&self, rows: &[&Row]) -> Result<Vec<Row>> {
        let mut found = self.replaced(rows).await?;
        for row in rows {
            if let Row::Meta {
                key,
                version: MetaVersion::Value { rev, value },
            } = *row
                && key.object_type == object_type::IDENTITY
                && let Some(text) = (self.storage)
                    .meta_get(&crate::storage::replaced_key(key))
                    .await?
                && let Some(kept) = crate::sync::plan::replaced_row(key, &text)
                && matches!(&kept, Row::Meta {
                    version: MetaVersion::Value { rev: r, value: v },
                    ..
                } if r < rev && v == value)
            {
                found.push(kept);
            }
        }
        Ok(found)
    }

    /// Whether a replica's checkpoint still describes this store's history (module docs), or
    /// is older than what the store keeps ([`gc`]).
    async fn standing(
        &self,
        server: &str,
        checkpoint: &Checkpoint,
        gc: &gc::GcState,
    ) -> Result<Standing> {
        if checkpoint.server != server {
            return Ok(Standing::Lost);
        }
        let Some((mark, horizon)) = gc::parse_checkpoint_key(&checkpoint.key) else {
            return Ok(Standing::Lost);
        };
        if mark < checkpoint.seq {
            return Ok(Standing::Lost);
        }
        if self.storage.meta_get(&log_key(mark)).await?.as_deref() == Some(&checkpoint.head) {
            // Tombstones dropped since it was handed out, above its seq: it may miss some.
            if horizon < gc.horizon && checkpoint.seq < gc.horizon {
                return Ok(Standing::Expired);
            }
            return Ok(Standing::Honoured);
        }
        if mark < gc.log_floor {
            return Ok(Standing::Expired);
        }
        Ok(Standing::Lost)
    }

    /// A log entry at a seq of at least `seq`, written after every row up to it existed: the
    /// latest one when it covers `seq`, else a new one at `seq`.
    async fn log_mark(&self, seq: u64) -> Result<(u64, String)> {
        for _ in 0..MAX_ROUNDS {
            let latest = self.storage.meta_get(&log_head_key()).await?;
            if let Some((mark, head)) = latest.as_deref().and_then(|t| t.split_once(' '))
                && let Ok(mark) = mark.parse::<u64>()
                && mark >= seq
            {
                return Ok((mark, head.to_owned()));
            }
            let head = random_hex()?;
            let batch = vec![
                WriteOp::ExpectMeta {
                    key: log_head_key(),
                    value: latest,
                },
                WriteOp::PutMeta(MetaRow {
                    key: log_key(seq),
                    value: head.clone(),
                }),
                WriteOp::PutMeta(MetaRow {
                    key: log_head_key(),
                    value: format!("{seq} {head}"),
                }),
            ];
            match self.storage.apply(self.stamp()?, batch).await {
                Ok(()) => return Ok((seq, head)),
                Err(StorageError::MetaChanged(_)) => continue,
                Err(e) => return Err(e.into()),
            }
        }
        Err(VaultError::storage("the sync log kept changing"))
    }

    async fn serve_push(
        &self,
        server: String,
        request: PushRequest,
    ) -> std::result::Result<PushResponse, WireError> {
        for _ in 0..MAX_ROUNDS {
            // A replica's vault that this store adopts is adopted with the page, in its batch:
            // a page the server refuses leaves the store as it was.
            let join = self.server_join(&request.vault, false).await?;
            let tx = self.storage.transaction().await.map_err(storage_failure)?;
            let view = server_view(&*tx, &request.rows)
                .await
                .map_err(storage_failure)?;
            // The rows the server writes itself (a slot removed with its identity) must outrank
            // the versions they replace: an emptied identity's removal is ordered by revision.
            // Revisions further ahead than a push may be are refused, not observed.
            let limit = self.now().saturating_add(MAX_FUTURE_MS);
            for rev in (view.stored.values().map(|s| &s.row))
                .chain(&request.rows)
                .flat_map(crate::sync::plan::revs_of)
            {
                if i64::try_from(rev.wall_ms()).is_ok_and(|ms| ms <= limit) {
                    self.clock.observe(rev);
                }
            }
            let stamp = self.stamp().map_err(storage_failure)?;
            let plan = plan_push(&request.rows, &request.replaced, &view, stamp.rev, stamp.at)
                .map_err(contradiction_error)?;
            let (ops, adopted) = match join {
                Join::Same(_) => (plan.ops, None),
                Join::Adopt { kdf, row, mut ops } => {
                    ops.extend(plan.ops);
                    (ops, Some((kdf, row)))
                }
            };
            match tx.commit(stamp, ops).await {
                Ok(()) => {
                    if let Some((kdf, row)) = adopted {
                        self.replace_kdf(kdf, row);
                    }
                    let checkpoint = match &request.checkpoint {
                        Some(c) => self
                            .push_checkpoint(
                                &server,
                                c,
                                &request.rows,
                                &plan.superseded,
                                &plan.refused,
                            )
                            .await
                            .map_err(storage_failure)?,
                        None => None,
                    };
                    let answered: Vec<&Row> = (plan.superseded.iter().map(|s| &s.current))
                        .chain(plan.refused.iter().filter_map(|r| r.current.as_ref()))
                        .collect();
                    let replaced =
                        (self.kept_for_answer(&answered).await).map_err(storage_failure)?;
                    return Ok(PushResponse {
                        server,
                        time: self.now(),
                        stored: plan.stored,
                        superseded: plan.superseded,
                        refused: plan.refused,
                        checkpoint,
                        replaced,
                    });
                }
                Err(StorageError::NotEmpty) => return Err(another_vault()),
                Err(
                    StorageError::Changed(_)
                    | StorageError::MetaChanged(_)
                    | StorageError::TokenTaken(_),
                ) => continue,
                Err(e) => return Err(storage_failure(e)),
            }
        }
        Err(WireError::Busy)
    }

    /// After a push from a replica whose checkpoint is `c`: a checkpoint past every row
    /// written since `c`, when each of them is one the replica holds once it has read this
    /// answer (a row as it sent it, or the version `superseded` or a `referenced` refusal hands
    /// back), so it need not pull its own push back. `None` when anything else was written
    /// since (another replica's push, a record this push displaced), or `c` no longer stands.
    async fn push_checkpoint(
        &self,
        server: &str,
        c: &Checkpoint,
        rows: &[Row],
        superseded: &[Superseded],
        refused: &[Refused],
    ) -> Result<Option<Checkpoint>> {
        let gc = self.gc_state().await?;
        if !matches!(self.standing(server, c, &gc).await?, Standing::Honoured) {
            return Ok(None);
        }
        let mut held: HashMap<RowKey, &Row> = rows.iter().map(|r| (r.key(), r)).collect();
        for refused in refused {
            match (&refused.reason, &refused.current) {
                (Refusal::Referenced, Some(current)) => held.insert(current.key(), current),
                _ => held.remove(&rows[refused.i].key()),
            };
        }
        for superseded in superseded {
            held.insert(superseded.current.key(), &superseded.current);
        }
        let written = self.storage.changes_since(c.seq, held.len() + 1).await?;
        let ours = written.len() <= held.len()
            && written
                .iter()
                .all(|w| held.get(&w.row.key()).is_some_and(|row| **row == w.row));
        // A collection meanwhile may have dropped a tombstone between `c` and the last row.
        if !ours || self.gc_state().await?.horizon != gc.horizon {
            return Ok(None);
        }
        let last = written.last().map_or(c.seq, |w| w.seq);
        let (mark, head) = self.log_mark(last).await?;
        Ok(Some(Checkpoint {
            server: server.to_owned(),
            seq: last,
            key: gc::checkpoint_key_text(mark, gc.horizon),
            head,
        }))
    }

    // ---- a replica ----

    /// Sync with a server (SYNC.md): pull what it has that this replica lacks, push what this
    /// replica has that it lacks, and pull again unless the push answers said nothing else was
    /// written meanwhile (their checkpoints). Each page is
    /// applied atomically; a failed sync leaves whole pages only, and running it again goes on.
    pub async fn sync(
        &self,
        remote: &dyn SyncTransport,
        progress: Option<&dyn Fn(u64, u64)>,
    ) -> Result<SyncReport> {
        self.ensure_open()?;
        let progress = Progress {
            callback: progress,
            done: Cell::new(0),
        };
        let mut report = SyncReport::default();
        let mut stranded = Stranding {
            tag: super::random_tag()?,
            written: 0,
            marked: self
                .storage
                .meta_object(object_type::SYNC, "stranded")
                .await?,
            tokens: HashSet::new(),
        };
        let since = self
            .storage
            .meta_get(&synced_key())
            .await?
            .and_then(|text| Rev::parse(&text).ok())
            .unwrap_or(Rev::ZERO);
        // A first sync of a replica that held rows, and one after the server lost what it had,
        // push every row: the pull notes the debt (`owed_key`), the push pays it.
        self.pull_all(remote, since, &mut report, &mut stranded, &progress)
            .await?;
        let caught_up = self
            .push(remote, since, &mut report, &mut stranded, &progress)
            .await?;
        // What the push changed on the server (merges, and rows of other replicas that came
        // meanwhile), unless the server said there is nothing (its push checkpoints).
        if !caught_up
            && self
                .pull_all(remote, since, &mut report, &mut stranded, &progress)
                .await?
        {
            self.push(remote, since, &mut report, &mut stranded, &progress)
                .await?;
        }
        // After the push: while the replica owes the server every row (`owed_key`), a clean
        // tombstone past the retention may be the only copy of a deletion the server lost, and
        // the pull took the server's live version of it as superseded here.
        self.collect_replica().await?;
        let mut end = vec![WriteOp::PutMeta(MetaRow {
            key: synced_key(),
            value: self.stamp()?.rev.to_string(),
        })];
        // Every marked record still held here is reported, by whichever sync marked it (this
        // one, one that failed after marking it, another tab's); the marks of records gone
        // here (deleted by their user) go.
        let marks = self.local_ids("stranded").await?;
        if !marks.is_empty() {
            for (id, held) in marks.iter().zip(self.storage.records_by_ids(&marks).await?) {
                match held {
                    Some(record) => {
                        stranded.tokens.insert(record.token);
                    }
                    None => end.push(WriteOp::DeleteMeta(stranded_key(id))),
                }
            }
        }
        self.storage.apply(self.stamp()?, end).await?;
        progress.advance(0, 0);
        // A record this sync stranded (its push refused) may be gone by the end of it: a
        // deletion pulled afterwards wins over the edit that was refused. Only what the replica
        // still holds is reported.
        let mut stranded: Vec<String> = stranded.tokens.into_iter().collect();
        crate::sorting::sort(&mut stranded);
        let held = self.storage.records_by_tokens(&stranded).await?;
        report.stranded = stranded
            .into_iter()
            .zip(held)
            .filter_map(|(token, record)| record.map(|_| token))
            .collect();
        Ok(report)
    }

    /// What this replica tells the server about its vault.
    async fn vault_info(&self) -> Result<VaultInfo> {
        let kdf = self
            .storage
            .meta_get(&kdf_key())
            .await?
            .ok_or_else(|| VaultError::storage("the vault has no kdf setting"))?;
        let empty = holds_no_data(&*self.storage).await?;
        Ok(VaultInfo { kdf, empty })
    }

    async fn exchange(&self, remote: &dyn SyncTransport, request: &Request) -> Result<Vec<u8>> {
        let (status, body) = remote.exchange(wire::encode_request(request)).await?;
        if status == 200 {
            return Ok(body);
        }
        let detail = wire::decode_error(&body);
        if status == 409 {
            return Err(VaultError::SyncConflict(detail.map_or_else(
                || "the sync server holds another vault".to_owned(),
                |e| e.message,
            )));
        }
        Err(VaultError::storage(match detail {
            Some(e) => format!(
                "the sync server answered {status} {}: {}",
                e.code, e.message
            ),
            None => format!("the sync server answered {status}"),
        }))
    }

    /// Pull until the server has nothing more. Returns whether the server asked for everything
    /// this replica holds (it lost what it had, SYNC.md 8).
    async fn pull_all(
        &self,
        remote: &dyn SyncTransport,
        since: Rev,
        report: &mut SyncReport,
        stranded: &mut Stranding,
        progress: &Progress<'_>,
    ) -> Result<bool> {
        let mut reset = false;
        // The next page, asked for while this one was applied: (the checkpoint it continues
        // from, the answer, when it was sent and received).
        let mut ahead: Option<(String, Result<Vec<u8>>, i64, i64)> = None;
        loop {
            self.ensure_open()?;
            let stored = self.storage.meta_get(&checkpoint_key()).await?;
            let checkpoint = stored.as_deref().and_then(parse_checkpoint);
            let fetch = self.local_ids("parked").await?;
            let parked: HashSet<String> = fetch.iter().cloned().collect();
            let (body, sent_at, received_at) = match ahead.take() {
                // Asked for with exactly what this request would carry: the stored checkpoint
                // (the page before it applied here, not by another tab) and no parked records.
                Some((after, answer, sent_at, received_at))
                    if stored.as_deref() == Some(after.as_str()) && fetch.is_empty() =>
                {
                    (answer?, sent_at, received_at)
                }
                _ => {
                    let fetch = fetch.into_iter().take(wire::MAX_PULL_ROWS).collect();
                    let request = self.pull_request(checkpoint, fetch).await?;
                    let (answer, sent_at, received_at) =
                        self.timed_exchange(remote, &request).await;
                    (answer?, sent_at, received_at)
                }
            };
            let response = wire::decode_pull_response(&body).map_err(|e| {
                VaultError::storage(format!("the sync server sent a malformed response: {e}"))
            })?;
            self.join_as_replica(&response.kdf).await?;
            self.correct_clock(response.time, sent_at, received_at)
                .await?;
            match response.reset {
                Some(wire::Reset::Lost) => reset = true,
                // Only while the checkpoint the server found expired is still this store's:
                // another tab may have resynced past it meanwhile, and a resync begun now would
                // take every row that tab pulled for one the server no longer has.
                Some(wire::Reset::Expired) if !self.begin_resync(stored.as_deref()).await? => {
                    continue;
                }
                Some(wire::Reset::Expired) | None => {}
            }
            let apply = self.apply_pulled(&response, stored, &parked, since, report, stranded);
            let applied = if response.more && response.reset.is_none() && parked.is_empty() {
                // The server's answer and this page's IndexedDB or SQL writes take about as
                // long each: ask for the next page while this one is applied. A request may
                // be replayed (FORMAT.md, "Sync"), so one made for nothing costs nothing.
                let after = checkpoint_text(&response.checkpoint);
                let request = self
                    .pull_request(Some(response.checkpoint.clone()), Vec::new())
                    .await?;
                let next = self.timed_exchange(remote, &request);
                let (applied, (answer, sent_at, received_at)) = join(apply, next).await;
                ahead = Some((after, answer, sent_at, received_at));
                applied
            } else {
                apply.await
            };
            // Another tab applied this page, or a later one, first: go on from where it is (a
            // page this tab did not apply says nothing of what the store holds).
            if !applied? {
                continue;
            }
            progress.advance(response.rows.len() as u64, response.remaining);
            if !response.more {
                self.finish_resync().await?;
                self.retry_deferred(stranded).await?;
                return Ok(reset);
            }
        }
    }

    /// Commit `ops`, whose `ExpectMeta` guards hold what this call read of the sync's own rows
    /// (a checkpoint, a mark, a collection cursor): false, with nothing written, when another
    /// tab or request moved one of them meanwhile and its write stands.
    pub(super) async fn apply_unless_moved(&self, ops: Vec<WriteOp>) -> Result<bool> {
        match self.storage.apply(self.stamp()?, ops).await {
            Ok(()) => Ok(true),
            Err(StorageError::MetaChanged(_)) => Ok(false),
            Err(e) => Err(e.into()),
        }
    }

    /// The ids of the local rows `sync/<object_id>/<id>` (parked or stranded records).
    async fn local_ids(&self, object_id: &str) -> Result<Vec<String>> {
        Ok(self
            .storage
            .meta_object(object_type::SYNC, object_id)
            .await?
            .into_iter()
            .map(|row| row.key.key)
            .collect())
    }

    /// A pull of the page after `checkpoint`, with the records `fetch` asks for by id.
    async fn pull_request(
        &self,
        checkpoint: Option<Checkpoint>,
        fetch: Vec<String>,
    ) -> Result<Request> {
        Ok(Request::Pull(PullRequest {
            vault: self.vault_info().await?,
            checkpoint,
            limit: PULL_PAGE,
            fetch,
        }))
    }

    /// [`Vault::exchange`], with this replica's clock read when the request went and when its
    /// answer came (SYNC.md 4 measures the offset from their midpoint).
    async fn timed_exchange(
        &self,
        remote: &dyn SyncTransport,
        request: &Request,
    ) -> (Result<Vec<u8>>, i64, i64) {
        let sent_at = self.now();
        let answer = self.exchange(remote, request).await;
        (answer, sent_at, self.now())
    }

    /// SYNC.md 5 on a replica: an empty replica takes the server's vault.
    async fn join_as_replica(&self, server_kdf: &str) -> Result<()> {
        let theirs = KdfParams::from_json(server_kdf)
            .map_err(|e| VaultError::storage(format!("the sync server's kdf setting: {e}")))?;
        if theirs == self.kdf() {
            return Ok(());
        }
        if theirs.iterations < self.kdf_floor {
            return Err(VaultError::SyncConflict(format!(
                "the server's vault uses {} PBKDF2 iterations, below this replica's minKdfIterations ({})",
                theirs.iterations, self.kdf_floor
            )));
        }
        for _ in 0..MAX_ROUNDS {
            let ours = self.storage.meta_get(&kdf_key()).await?;
            if ours.as_deref() == Some(server_kdf) {
                // Another instance on this store (a tab) joined first.
                self.replace_kdf(theirs, server_kdf.to_owned());
                return Ok(());
            }
            // Empty as FORMAT.md says (no record, no identity): tombstones of records deleted
            // here belong to the vault this replica leaves, and go to the server like any others.
            let adopt = vec![
                WriteOp::ExpectNoData,
                WriteOp::ExpectMeta {
                    key: kdf_key(),
                    value: ours,
                },
                WriteOp::PutMeta(MetaRow {
                    key: kdf_key(),
                    value: server_kdf.to_owned(),
                }),
            ];
            match self.storage.apply(self.stamp()?, adopt).await {
                Ok(()) => {
                    self.replace_kdf(theirs, server_kdf.to_owned());
                    return Ok(());
                }
                Err(StorageError::NotEmpty) => {
                    return Err(VaultError::SyncConflict(
                        "this replica holds another vault than the server's (another KDF salt); its records cannot join it".into(),
                    ));
                }
                // Another tab joined between the read and this write (SYNC.md 9): look again.
                Err(StorageError::MetaChanged(key)) if key == kdf_key() => {}
                Err(e) => return Err(e.into()),
            }
        }
        Err(VaultError::storage(
            "could not join the sync server's vault: its kdf setting kept changing here; sync again",
        ))
    }

    async fn apply_pulled(
        &self,
        response: &PullResponse,
        checkpoint_was: Option<String>,
        parked: &HashSet<String>,
        since: Rev,
        report: &mut SyncReport,
        stranded: &mut Stranding,
    ) -> Result<bool> {
        let rows: Vec<Row> = response.rows.iter().map(|c| c.row.clone()).collect();
        let resync = self.resync_mark().await?;
        // Every row here is owed to the server from the page that moves the checkpoint past a
        // `lost` reset, or past none on a first sync of a replica that held rows (rows upgraded
        // from schema 1 carry no dirty mark; an empty replica owes nothing it pulls): a sync that
        // fails before its push still owes them at the next one.
        let owes = response.reset == Some(wire::Reset::Lost)
            || checkpoint_was.is_none() && !holds_no_data(&*self.storage).await?;
        self.observe_rows(&rows);
        // Which local record holds each pulled token is read only once a write found one taken:
        // pulled tokens are almost always new here or held by the same record, and every
        // backend refuses a token held by another record (`TokenTaken`), so the first round
        // skips a lookup per row (on IndexedDB, reading the whole store).
        let mut read_tokens = false;
        for _ in 0..MAX_ROUNDS {
            let tx = self.storage.transaction().await?;
            let mut view = replica_view(&*tx, &rows, read_tokens, self.retained_from()).await?;
            view.since = since;
            let stamp = self.stamp()?;
            let plan = plan_pull(&rows, &response.replaced, &view, stamp.rev, stamp.at);
            let mut ops = plan.ops;
            stranded.mark(&rows, &plan.stranded, &mut ops);
            if let Some((mark, _, _)) = resync {
                let touches = Self::resync_touches(&rows, &view.stored, &ops, mark);
                ops.extend(touches);
            }
            // Applied once: two tabs pulling the same page do not both apply it.
            ops.push(WriteOp::ExpectMeta {
                key: checkpoint_key(),
                value: checkpoint_was.clone(),
            });
            ops.push(WriteOp::PutMeta(MetaRow {
                key: checkpoint_key(),
                value: checkpoint_text(&response.checkpoint),
            }));
            if owes {
                ops.push(WriteOp::PutMeta(MetaRow {
                    key: owed_key(),
                    value: stamp.rev.to_string(),
                }));
            }
            for id in &plan.parked {
                ops.push(WriteOp::PutMeta(MetaRow {
                    key: parked_key(id),
                    value: String::new(),
                }));
            }
            set_aside(&plan.deferred, &mut ops);
            // Parked records that now applied (fetched, or in the feed) are no longer parked.
            for row in &rows {
                if let Row::Record { id, .. } = row
                    && parked.contains(id)
                    && !plan.parked.contains(id)
                {
                    ops.push(WriteOp::DeleteMeta(parked_key(id)));
                }
            }
            // A value, link or deletion from elsewhere: a rekey planned before it reads again.
            if plan.applied > 0 {
                ops.push(super::new_write_epoch()?);
            }
            // A record sealed with a master key: identity rekeys must scan for such records.
            if rows.iter().any(|row| {
                matches!(row, Row::Record { version: RecordVersion::Live(live), .. } if live.password_id.is_none())
            }) {
                ops.push(WriteOp::PutMeta(MetaRow {
                    key: crate::storage::unlinked_records(),
                    value: "true".into(),
                }));
            }
            match tx.commit(stamp, ops).await {
                Ok(()) => {
                    report.pulled += plan.applied;
                    report.conflicts += plan.conflicts;
                    return Ok(true);
                }
                Err(StorageError::MetaChanged(key)) if key == checkpoint_key() => {
                    // Another tab applied this page (or a later one) first.
                    return Ok(false);
                }
                Err(StorageError::TokenTaken(_)) if !read_tokens => read_tokens = true,
                Err(StorageError::Changed(_) | StorageError::MetaChanged(_)) => continue,
                Err(e) => return Err(e.into()),
            }
        }
        Err(VaultError::storage(
            "could not apply a pulled page: local writes kept changing it; sync again",
        ))
    }

    /// Push this replica's changes: its dirty rows, or every row it holds while it owes the
    /// server them all ([`owed_key`]: a first sync of a replica that held rows, a wiped or
    /// restored server), and then the mark goes, unless another tab wrote it again meanwhile
    /// (its own reset). Returns whether the server's checkpoints took this replica past every
    /// row its pushes wrote and nothing else came meanwhile (then there is nothing to pull back).
    async fn push(
        &self,
        remote: &dyn SyncTransport,
        since: Rev,
        report: &mut SyncReport,
        stranded: &mut Stranding,
        progress: &Progress<'_>,
    ) -> Result<bool> {
        let owed = self.storage.meta_get(&owed_key()).await?;
        let everything = owed.is_some();
        let mut caught_up = true;
        // (row, dirty mark when the row was dirty as read)
        let mut outgoing: Vec<(Row, Option<u64>)> = Vec::new();
        let mut after = 0;
        loop {
            let page = if everything {
                self.storage.changes_since(after, 1_000).await?
            } else {
                self.storage.dirty_changes(after, 1_000).await?
            };
            let Some(last) = page.last() else { break };
            after = last.seq;
            let full = page.len() == 1_000;
            if everything {
                let keys: Vec<RowKey> = page.iter().map(|c| c.row.key()).collect();
                let marks = self.storage.versions(&keys).await?;
                for (change, found) in page.into_iter().zip(marks) {
                    outgoing.push((change.row, found.and_then(|s| s.dirty)));
                }
            } else {
                outgoing.extend(page.into_iter().map(|c| (c.row, Some(c.seq))));
            }
            if !full {
                break;
            }
        }
        // By rank, and an identity object's rows next to each other (pages never split one).
        crate::sorting::sort_by(&mut outgoing, |(a, _), (b, _)| {
            (push_rank(a), identity_row_object(a)).cmp(&(push_rank(b), identity_row_object(b)))
        });
        let mut left = outgoing.len() as u64;
        for page in push_pages(&outgoing) {
            self.ensure_open()?;
            let rows: Vec<Row> = page.iter().map(|(row, _)| row.clone()).collect();
            let stored = self.storage.meta_get(&checkpoint_key()).await?;
            // With each emptied removal, the version it replaced here: the server hands the
            // later of its own and this one to a replica that writes the identity back (a
            // password change made here before the identity's last record went, not pushed).
            let mut replaced = self.replaced(&rows.iter().collect::<Vec<_>>()).await?;
            before_removals(&mut replaced, &rows);
            let request = Request::Push(PushRequest {
                vault: self.vault_info().await?,
                checkpoint: stored.as_deref().and_then(parse_checkpoint),
                rows: rows.clone(),
                replaced,
            });
            let body = self.exchange(remote, &request).await?;
            let response = wire::decode_push_response(&body, rows.len()).map_err(|e| {
                VaultError::storage(format!("the sync server sent a malformed response: {e}"))
            })?;
            report.pushed += response.stored;
            let mut settled: Vec<bool> = vec![true; rows.len()];
            let mut taken_back: Vec<Row> = Vec::new();
            let mut adopted: Vec<WriteOp> = Vec::new();
            for refused in &response.refused {
                settled[refused.i] = false;
                match refused.reason {
                    Refusal::RetiredKey | Refusal::TokenTaken | Refusal::Displaced => {
                        if let Some(token) = live_token(&rows[refused.i]) {
                            stranded.tokens.insert(token.to_owned());
                        }
                        // A clean row sent with everything (a wiped server) is neither pushed
                        // nor planned again: a mark keeps it reported (the simulation's seed 312,
                        // where the token's holder was deleted later in the same push, before
                        // deletions went first; a holder that reached the server after this
                        // sync's pull strands it too, and the sync may end before pulling it).
                        if let (Row::Record { id, .. }, None) = &page[refused.i] {
                            stranded.mark(&[], std::slice::from_ref(id), &mut adopted);
                        }
                    }
                    // The server keeps the identity (records elsewhere still use it): its version
                    // replaces this replica's removal whatever the revisions say, or the removal
                    // would be pushed and refused forever. Running the rotation again moves the
                    // records that kept it once they are here.
                    Refusal::Referenced => {
                        if let Some(current) = &refused.current {
                            adopted.push(WriteOp::PutVersion {
                                row: Box::new(current.clone()),
                                dirty: false,
                            });
                            report.conflicts += 1;
                        }
                    }
                    // Only a clock that jumped ahead between the pull (which corrected it and
                    // re-stamped) and this push: the row stays dirty, and the next sync
                    // corrects and re-stamps it.
                    Refusal::RevInFuture => {}
                }
            }
            for superseded in &response.superseded {
                taken_back.push(superseded.current.clone());
                if supersedes_local(&rows[superseded.i], &superseded.current, since) {
                    report.conflicts += 1;
                }
            }
            // Rows the server now has as sent: clean here, unless they changed meanwhile.
            let mut ops: Vec<WriteOp> = page
                .iter()
                .zip(&settled)
                .filter_map(|((row, dirty), settled)| match (settled, dirty) {
                    (true, Some(mark)) => Some(WriteOp::MarkClean {
                        key: row.key(),
                        dirty: *mark,
                    }),
                    _ => None,
                })
                .collect();
            ops.append(&mut adopted);
            // A marked record the server took as sent is no longer kept here only. One it
            // answered with another version keeps its mark until that version is merged. The
            // mark goes only as this sync knew it: another tab may have pulled the record
            // displaced since the server took it, and marked it again; that mark stays. It goes
            // before the record's dirty mark does: a sync that fails between the two writes
            // leaves the record dirty, and the next one pushes it again and marks it again if the
            // server's answer strands it.
            for (i, row) in rows.iter().enumerate() {
                if let Row::Record { id, .. } = row
                    && settled[i]
                    && let Some(mark) = stranded.mark_of(id)
                    && !response.superseded.iter().any(|s| s.i == i)
                {
                    let unmark = vec![
                        WriteOp::ExpectMeta {
                            key: mark.key.clone(),
                            value: Some(mark.value.clone()),
                        },
                        WriteOp::DeleteMeta(mark.key.clone()),
                    ];
                    self.apply_unless_moved(unmark).await?;
                }
            }
            if !ops.is_empty() {
                self.storage.apply(self.stamp()?, ops).await?;
            }
            if !taken_back.is_empty() {
                self.take_back(&taken_back, &response.replaced, stranded)
                    .await?;
            }
            // This replica now holds every row written since its checkpoint: move it past them
            // (unless another tab moved it meanwhile).
            caught_up &= match &response.checkpoint {
                Some(checkpoint) => {
                    let moved = vec![
                        WriteOp::ExpectMeta {
                            key: checkpoint_key(),
                            value: stored,
                        },
                        WriteOp::PutMeta(MetaRow {
                            key: checkpoint_key(),
                            value: checkpoint_text(checkpoint),
                        }),
                    ];
                    self.apply_unless_moved(moved).await?
                }
                None => false,
            };
            left -= page.len() as u64;
            progress.advance(page.len() as u64, left);
        }
        if everything {
            let paid = vec![
                WriteOp::ExpectMeta {
                    key: owed_key(),
                    value: owed,
                },
                WriteOp::DeleteMeta(owed_key()),
            ];
            self.apply_unless_moved(paid).await?;
        }
        Ok(caught_up)
    }

    /// SYNC.md 4 on a replica ([`crate::sync::drift`]): stamp later revisions with the offset
    /// measured from the server's `time`, and when this clock has run so far ahead that the
    /// server would refuse its revisions, restart it and re-stamp the unsynced rows that carry
    /// such revisions.
    async fn correct_clock(&self, server_time: i64, sent_at: i64, received_at: i64) -> Result<()> {
        self.clock
            .set_offset_ms(drift::offset_ms(server_time, sent_at, received_at));
        let above = drift::restamp_above(server_time);
        if self.clock.last_wall_ms() <= above {
            return Ok(());
        }
        self.clock.restart()?;
        self.restamp_dirty(above).await
    }

    /// Give every dirty row with a revision past `above` fresh revisions from the corrected
    /// clock, a page at a time, each page guarded on the versions it read (a local write that
    /// raced it is left for the next sync, which re-stamps it if it still needs it).
    async fn restamp_dirty(&self, above: u64) -> Result<()> {
        let mut after = 0;
        loop {
            let page = self.storage.dirty_changes(after, 1_000).await?;
            let Some(last) = page.last() else { break };
            after = last.seq;
            let full = page.len() == 1_000;
            let far: Vec<RowKey> = page
                .iter()
                .filter(|change| {
                    crate::sync::plan::revs_of(&change.row)
                        .iter()
                        .any(|rev| rev.wall_ms() > above)
                })
                .map(|change| change.row.key())
                .collect();
            if !far.is_empty() {
                let tx = self.storage.transaction().await?;
                let mut ops = Vec::new();
                for found in tx.versions(&far).await?.into_iter().flatten() {
                    let fresh = || self.clock.tick(self.now());
                    if let Some(row) = drift::restamp(&found.row, above, fresh)? {
                        ops.push(WriteOp::ExpectVersion {
                            key: row.key(),
                            seq: Some(found.seq),
                        });
                        ops.push(WriteOp::PutVersion {
                            row: Box::new(row),
                            dirty: true,
                        });
                    }
                }
                match tx.commit(self.stamp()?, ops).await {
                    Ok(()) | Err(StorageError::Changed(_) | StorageError::MetaChanged(_)) => {}
                    Err(e) => return Err(e.into()),
                }
            }
            if !full {
                break;
            }
        }
        Ok(())
    }

    /// Plan again the identity removals set aside while local records used the identity: once
    /// they have moved (a rotation's records arrived, `bulkRekey` moved a stranded write) the
    /// removal applies; while some remain, they are stranded here.
    async fn retry_deferred(&self, stranded: &mut Stranding) -> Result<()> {
        let waiting = self
            .storage
            .meta_object(object_type::SYNC, "deferred")
            .await?;
        if waiting.is_empty() {
            return Ok(());
        }
        let rows: Vec<Row> = waiting.iter().filter_map(deferred_row).collect();
        // Set aside with no answer: the server's replaced versions are not known here.
        let done = self.take_back(&rows, &[], stranded).await?;
        let settled: Vec<WriteOp> = waiting
            .iter()
            .zip(&done)
            .filter(|(_, still)| !**still)
            .map(|(row, _)| WriteOp::DeleteMeta(row.key.clone()))
            .collect();
        if !settled.is_empty() {
            self.storage.apply(self.stamp()?, settled).await?;
        }
        for row in rows
            .iter()
            .zip(&done)
            .filter(|(_, still)| **still)
            .map(|(r, _)| r)
        {
            if let Row::Meta { key, .. } = row {
                // Creates that remembered this identity would go on sealing under it without
                // reading it: they read again, and seal under another of the secret's
                // identities if it has one (`find_identity_in`).
                self.keys.forget_writes_with(&key.object_id);
                for record in self
                    .storage
                    .records_linked_to(&key.object_id, None, 1_000)
                    .await?
                {
                    stranded.tokens.insert(record.token);
                }
            }
        }
        Ok(())
    }

    /// Order this replica's clock after every revision of `rows` (from the server).
    fn observe_rows(&self, rows: &[Row]) {
        for row in rows {
            for rev in crate::sync::plan::revs_of(row) {
                self.clock.observe(rev);
            }
        }
    }

    /// Merge versions the server answered with into this replica, as a pull would, marking the
    /// records it keeps stranded (a displaced one this replica holds live) as a pull does.
    /// Returns, per row, whether it was set aside again ([`crate::sync::plan::PullPlan::deferred`]).
    async fn take_back(
        &self,
        rows: &[Row],
        replaced: &[Row],
        stranded: &mut Stranding,
    ) -> Result<Vec<bool>> {
        // A row revived here must be written after the removal it answers.
        self.observe_rows(rows);
        for _ in 0..MAX_ROUNDS {
            let tx = self.storage.transaction().await?;
            let view = replica_view(&*tx, rows, true, self.retained_from()).await?;
            let stamp = self.stamp()?;
            let plan = plan_pull(rows, replaced, &view, stamp.rev, stamp.at);
            let deferred: Vec<bool> = rows.iter().map(|r| plan.deferred.contains(r)).collect();
            let mut ops = plan.ops;
            stranded.mark(rows, &plan.stranded, &mut ops);
            // A removal the answer brings (a slot that went with its identity) waits as a
            // pulled one does; it would otherwise stay here live, and the server's feed, past
            // this replica's checkpoint, never brings it again.
            set_aside(&plan.deferred, &mut ops);
            if plan.applied > 0 {
                ops.push(super::new_write_epoch()?);
            }
            match tx.commit(stamp, ops).await {
                Ok(()) => return Ok(deferred),
                Err(StorageError::Changed(_) | StorageError::MetaChanged(_)) => continue,
                Err(e) => return Err(e.into()),
            }
        }
        Err(VaultError::storage(
            "could not apply the server's versions: local writes kept changing them; sync again",
        ))
    }
}

/// Everything the server reads to plan a pushed page, in a few round trips.
async fn server_view(tx: &dyn WriteTransaction, rows: &[Row]) -> Result<ServerView> {
    let mut view = ServerView::default();
    let mut keys: Vec<RowKey> = rows.iter().map(Row::key).collect();
    let mut identities: HashSet<&str> = HashSet::new();
    // Both the `tag` and the `dek` of every identity object the page writes (a slot's
    // `identity` row included): the plan checks that the object keeps its rows together.
    let mut objects: HashSet<&str> = HashSet::new();
    let mut tokens: Vec<String> = Vec::new();
    for row in rows {
        match row {
            Row::Record {
                version: RecordVersion::Live(live),
                ..
            } => {
                if let Some(p) = &live.password_id {
                    identities.insert(p);
                }
                tokens.push(live.token.clone());
            }
            Row::Meta { key, .. } => {
                if let Some(object) = identity_of(key) {
                    objects.insert(object);
                }
            }
            Row::Record { .. } => {}
        }
    }
    // `versions_of` reads each key once.
    keys.extend(
        identities
            .into_iter()
            .map(|p| RowKey::Meta(identity_tag_key(p)))
            .chain(objects.into_iter().flat_map(object_keys)),
    );
    if !tokens.is_empty() {
        for (token, holder) in tokens.iter().zip(tx.records_by_tokens(&tokens).await?) {
            if let Some(holder) = holder {
                keys.push(RowKey::Record(holder.id.clone()));
                view.token_holders.insert(token.clone(), holder.id);
            }
        }
    }
    view.linked = linked_to_removed(tx, rows, Vec::new()).await?;
    view.stored = versions_of(tx, keys).await?;
    // A merge may keep the stored value of a record, and with it the identity it is sealed
    // under, which the page need not name (a soft delete pushed from a replica that had not
    // seen a rotation re-seal it): its tag is read too, in a second round only then.
    let kept: Vec<RowKey> = view
        .stored
        .values()
        .filter_map(|stored| match &stored.row {
            Row::Record {
                version: RecordVersion::Live(live),
                ..
            } => live.password_id.as_deref(),
            _ => None,
        })
        .map(|p| RowKey::Meta(identity_tag_key(p)))
        .filter(|tag| !view.stored.contains_key(tag))
        .collect();
    if !kept.is_empty() {
        view.stored.extend(versions_of(tx, kept).await?);
    }
    view.slots = slot_view(tx, rows, &mut view.stored).await?;
    // The versions kept from earlier removals of the rows the page removes as emptied: the
    // plan keeps the latest. One read each, for the few identity rows of a page that has any.
    // And the `tag`s kept of each identity whose secret the page may take away, and of its
    // slots, that this store holds removed as emptied: the secrets it has should it come back.
    let mut keys: Vec<MetaKey> = rows.iter().filter_map(emptied_row).cloned().collect();
    for (owner, slots) in &view.slots.secrets {
        for object in std::iter::once(owner).chain(slots) {
            let tag = identity_tag_key(object);
            if view
                .stored
                .get(&RowKey::Meta(tag.clone()))
                .is_some_and(|s| emptied_row(&s.row).is_some())
            {
                keys.push(tag);
            }
        }
    }
    for key in keys {
        if let std::collections::hash_map::Entry::Vacant(slot) = view.kept.entry(key) {
            let kept = tx
                .meta_get(&crate::storage::replaced_key(slot.key()))
                .await?;
            slot.insert(kept);
        }
    }
    Ok(view)
}

/// The keys of an identity object's rows: its `tag`, its `dek`, and a slot's `identity`.
fn object_keys(object: &str) -> [RowKey; 3] {
    [TAG_KEY, DEK_KEY, OWNER_KEY]
        .map(|k| RowKey::Meta(MetaKey::new(object_type::IDENTITY, object, k)))
}

/// What a plan reads to remove the slots a page leaves without their identity, and to keep
/// each identity some secret ([`SlotView`]), adding the versions it needs to `stored`, which
/// holds the rows of the page's identity objects already ([`server_view`] reads them with the
/// page's keys): nothing more for a page without identity rows, and for one with them a few
/// round trips (the removed identities' slots, the slots of each identity whose secret the page
/// may take away, the `tag`s of those identities and slots, and which objects records link to,
/// asked only of one naming a removed identity).
async fn slot_view(
    tx: &dyn WriteTransaction,
    rows: &[Row],
    stored: &mut HashMap<RowKey, Stored>,
) -> Result<SlotView> {
    let mut slots = SlotView::default();
    let mut objects: Vec<String> = objects_of(rows).map(str::to_owned).collect();
    if objects.is_empty() {
        return Ok(slots);
    }
    // The slots of each identity the page removes, which go with it. A range read, which no
    // guard covers: a slot another writer commits between this read and the page's commit
    // stays (its own plan guards the identity's tag, so only that narrow interleaving).
    let mut elsewhere: Vec<String> = Vec::new();
    for identity in rows.iter().filter_map(removed_identity) {
        if slots.of_removed.contains_key(identity) {
            continue;
        }
        let found: Vec<String> = tx
            .meta_find(object_type::IDENTITY, OWNER_KEY, identity)
            .await?
            .into_iter()
            .map(|row| row.key.object_id)
            .collect();
        elsewhere.extend(found.iter().cloned());
        slots.of_removed.insert(identity.to_owned(), found);
    }
    // The page's own objects' rows were read with it; an absent one (an identity's `identity`
    // row) would be asked for again.
    read_missing(tx, elsewhere.iter().flat_map(|o| object_keys(o)), stored).await?;
    objects.append(&mut elsewhere);
    crate::sorting::sort(&mut objects);
    objects.dedup();
    // The identity each object's `identity` row names, as the page leaves it or as stored
    // (the wire decoder refuses a page that names a key twice).
    let page: HashMap<RowKey, &Row> = rows.iter().map(|row| (row.key(), row)).collect();
    let latest = |key: &RowKey| {
        page.get(key)
            .copied()
            .or_else(|| stored.get(key).map(|s| &s.row))
            .cloned()
    };
    let owners: Vec<(String, String)> = objects
        .iter()
        .filter_map(|object| {
            match latest(&RowKey::Meta(MetaKey::new(
                object_type::IDENTITY,
                object,
                OWNER_KEY,
            ))) {
                Some(Row::Meta {
                    version: MetaVersion::Value { value, .. },
                    ..
                }) => Some((object.clone(), value)),
                _ => None,
            }
        })
        .collect();
    // The identity of each object whose secret the page may take away (its `tag` removed, or
    // written vacant: a slot's identity, or the object itself), with its slots: the plan
    // checks that some secret still opens it. A page that only writes secrets reads nothing.
    for row in rows {
        let Row::Meta { key, version } = row else {
            continue;
        };
        let takes = match version {
            MetaVersion::Gone { .. } => true,
            MetaVersion::Value { value, .. } => crate::crypto::is_vacant(value),
        };
        if identity_of(key).is_none() || key.key != TAG_KEY || !takes {
            continue;
        }
        let owner_key = RowKey::Meta(MetaKey::new(
            object_type::IDENTITY,
            &key.object_id,
            OWNER_KEY,
        ));
        let mut kept_slot: Option<String> = None;
        let owner = match [
            page.get(&owner_key).copied(),
            stored.get(&owner_key).map(|s| &s.row),
        ] {
            [
                Some(Row::Meta {
                    version: MetaVersion::Value { value, .. },
                    ..
                }),
                _,
            ]
            | [
                _,
                Some(Row::Meta {
                    version: MetaVersion::Value { value, .. },
                    ..
                }),
            ] => value.clone(),
            // A slot this store holds removed as emptied names its identity in the version it
            // kept: the page takes that secret from the identity should it come back.
            [_, Some(removed)] if emptied_row(removed).is_some() => {
                let kept_key = crate::storage::replaced_key(&MetaKey::new(
                    object_type::IDENTITY,
                    &key.object_id,
                    OWNER_KEY,
                ));
                let kept = tx.meta_get(&kept_key).await?;
                match kept.as_deref().and_then(|t| t.split_once(' ')) {
                    Some((_, identity)) => {
                        kept_slot = Some(key.object_id.clone());
                        identity.to_owned()
                    }
                    None => key.object_id.clone(),
                }
            }
            _ => key.object_id.clone(),
        };
        if let Some((_, found)) = slots.secrets.iter_mut().find(|(o, _)| *o == owner) {
            found.extend(kept_slot.take().filter(|s| !found.contains(s)));
            continue;
        }
        // Its stored slots, and the page's (a slot an emptied identity's revival writes again).
        let mut found: Vec<String> = kept_slot.take().into_iter().collect();
        for (object, named) in &owners {
            if *named == owner {
                found.push(object.clone());
            }
        }
        for row in tx
            .meta_find(object_type::IDENTITY, OWNER_KEY, &owner)
            .await?
        {
            if !found.contains(&row.key.object_id) {
                found.push(row.key.object_id);
            }
        }
        slots.secrets.push((owner, found));
    }
    let tags = |owner: &str| RowKey::Meta(identity_tag_key(owner));
    let mut tagged: Vec<RowKey> = Vec::new();
    for (owner, found) in &slots.secrets {
        tagged.push(tags(owner));
        for slot in found {
            tagged.push(tags(slot));
        }
    }
    for (_, owner) in &owners {
        tagged.push(tags(owner));
    }
    read_missing(tx, tagged.into_iter(), stored).await?;
    for (object, owner) in owners {
        let tag = tags(&owner);
        let removed = page.get(&tag).is_some_and(|row| row.is_gone())
            || stored.get(&tag).is_some_and(|s| s.row.is_gone());
        if removed && !tx.records_linked_to(&object, None, 1).await?.is_empty() {
            slots.linked.insert(object);
        }
    }
    Ok(slots)
}

/// Read into `stored` the versions of those `keys` it does not hold yet.
async fn read_missing(
    tx: &dyn WriteTransaction,
    keys: impl Iterator<Item = RowKey>,
    stored: &mut HashMap<RowKey, Stored>,
) -> Result<()> {
    let missing: Vec<RowKey> = keys.filter(|k| !stored.contains_key(k)).collect();
    if !missing.is_empty() {
        stored.extend(versions_of(tx, missing).await?);
    }
    Ok(())
}

/// Everything a replica reads to plan a pulled page (the holders of its tokens only when
/// `read_tokens`), with its retention cutoff ([`ReplicaView::retained_from`]).
async fn replica_view(
    tx: &dyn WriteTransaction,
    rows: &[Row],
    read_tokens: bool,
    retained_from: i64,
) -> Result<ReplicaView> {
    let mut view = ReplicaView {
        retained_from,
        ..ReplicaView::default()
    };
    let tokens: Vec<String> = if read_tokens {
        rows.iter()
            .filter_map(live_token)
            .map(str::to_owned)
            .collect()
    } else {
        Vec::new()
    };
    if !tokens.is_empty() {
        let holders: Vec<Option<Record>> = tx.records_by_tokens(&tokens).await?;
        for (token, holder) in tokens.into_iter().zip(holders) {
            if let Some(holder) = holder {
                view.token_holders
                    .insert(token, (holder.id, holder.created_at));
            }
        }
    }
    // With the page's keys, the `identity` row of each object the page removes as emptied: a
    // slot's owner, read per object (an object's rows may come in two pages, and each must find
    // the same owner: a slot revived in part would be refused whole by the server).
    let owner_key = |object: &str| {
        RowKey::Meta(MetaKey::new(
            object_type::IDENTITY,
            object,
            crate::storage::OWNER_KEY,
        ))
    };
    let mut keys = Vec::with_capacity(rows.len());
    // The local slots of each identity the page removes (its `tag`): a slot added here that the
    // remover never saw would stay, naming a removed identity, and a writer could still seal
    // under that identity through it ([`ReplicaView::orphaned`]). A lookup only for such pages.
    let mut local_slots: Vec<(String, String)> = Vec::new();
    for row in rows {
        if let Row::Meta {
            key,
            version: MetaVersion::Gone { .. },
        } = row
            && identity_of(key).is_some()
            && key.key == TAG_KEY
        {
            for slot in tx
                .meta_find(object_type::IDENTITY, OWNER_KEY, &key.object_id)
                .await?
            {
                let entry = (slot.key.object_id, key.object_id.clone());
                if !local_slots.contains(&entry) {
                    for k in [TAG_KEY, DEK_KEY, OWNER_KEY] {
                        keys.push(RowKey::Meta(MetaKey::new(
                            object_type::IDENTITY,
                            &entry.0,
                            k,
                        )));
                    }
                    local_slots.push(entry);
                }
            }
        }
    }
    for row in rows {
        keys.push(row.key());
        if let Some(object) = removed_identity(row) {
            keys.push(owner_key(object));
        }
        // A secret slot the page writes: its other rows and its identity's `tag`, which this
        // replica may have removed ([`ReplicaView::orphaned`]).
        if let Some((slot, owner)) = slot_of(row) {
            keys.push(RowKey::Meta(identity_tag_key(slot)));
            keys.push(RowKey::Meta(MetaKey::new(
                object_type::IDENTITY,
                slot,
                DEK_KEY,
            )));
            keys.push(RowKey::Meta(identity_tag_key(owner)));
        }
    }
    view.stored = versions_of(tx, keys).await?;
    // Links are read for the slots removed here and their identities too: records under
    // either keep the slot.
    let mut also: Vec<&str> = Vec::new();
    for (slot, owner) in rows.iter().filter_map(slot_of) {
        let tag = RowKey::Meta(identity_tag_key(owner));
        if view.stored.get(&tag).is_some_and(|s| s.row.is_gone()) {
            view.orphaned.push((slot.to_owned(), owner.to_owned()));
            also.extend([slot, owner]);
        }
    }
    for (slot, owner) in &local_slots {
        if !view.orphaned.iter().any(|(s, _)| s == slot) {
            view.orphaned.push((slot.clone(), owner.clone()));
            also.extend([slot.as_str(), owner.as_str()]);
        }
    }
    for row in rows {
        let Some(object) = removed_identity(row) else {
            continue;
        };
        let Some(Stored {
            row:
                Row::Meta {
                    version: MetaVersion::Value { value: owner, .. },
                    ..
                },
            ..
        }) = view.stored.get(&owner_key(object))
        else {
            continue;
        };
        // Only a slot that goes with its identity: emptied, or removed for good with it (in
        // this page, or in an earlier one whose removal of the identity waits here), or one
        // whose identity's own `tag` is not live here (rotated away or emptied here; seed 319),
        // or is vacant (its password moved onto a slot) with no other slot left (seed 324):
        // there the slot is the last secret of records under it. One removed alone
        // (`secretRemove` elsewhere) while its identity is live here goes whatever records use
        // the identity: they open with its own secret, or another slot.
        if !view.owners.contains_key(object)
            && (emptied_row(row).is_some()
                || rows.iter().any(|r| removed_identity(r) == Some(owner))
                || !removed_by_server(tx, &[owner]).await?.is_empty()
                || match tx.meta_get(&identity_tag_key(owner)).await? {
                    None => true,
                    // Vacant, the own rows open nothing: the records open through the
                    // identity's slots, and this one waits when the page leaves no other.
                    Some(tag) => {
                        crate::crypto::is_vacant(&tag)
                            && tx
                                .meta_find(object_type::IDENTITY, OWNER_KEY, owner)
                                .await?
                                .iter()
                                .all(|slot| {
                                    let slot = Some(slot.key.object_id.as_str());
                                    rows.iter().any(|r| removed_identity(r) == slot)
                                })
                    }
                })
        {
            view.owners.insert(object.to_owned(), owner.clone());
        }
    }
    // Whether each such slot's identity stays here decides whether the slot does: its `tag`,
    // which a page that splits the identity's removal from the slot's does not carry.
    let mut identities: Vec<&str> = Vec::new();
    for owner in view.owners.values() {
        identities.push(owner);
    }
    // So do the identities of local records the page displaces, and whether the server removed
    // them in an earlier page: a copy under one removed here or there opens with no secret, and
    // is not kept stranded ([`plan_pull`]).
    for row in rows {
        if let Row::Record {
            version: RecordVersion::Gone(gone),
            ..
        } = row
            && gone.reason == TombstoneReason::Displaced
            && let Some(identity) = (view.stored.get(&row.key())).and_then(|s| sealed_under(&s.row))
        {
            identities.push(identity);
        }
    }
    view.retired = removed_by_server(tx, &identities).await?;
    let mut owner_tags = Vec::new();
    for identity in identities {
        let tag = RowKey::Meta(identity_tag_key(identity));
        if !view.stored.contains_key(&tag) {
            owner_tags.push(tag);
        }
    }
    if !owner_tags.is_empty() {
        view.stored.extend(versions_of(tx, owner_tags).await?);
    }
    also.extend(view.owners.values().map(String::as_str));
    view.linked = linked_to_removed(tx, rows, also).await?;
    Ok(view)
}

/// The slot and the identity it belongs to, when `row` is a live `identity` row of a slot.
fn slot_of(row: &Row) -> Option<(&str, &str)> {
    match row {
        Row::Meta {
            key,
            version: MetaVersion::Value { value, .. },
        } if key.key == OWNER_KEY => Some((identity_of(key)?, value)),
        _ => None,
    }
}

/// The versions a push's emptied removals replaced (`kept`, read for `rows`), each older than
/// its removal as the server requires (FORMAT.md "Sync", `replaced`). One that is not was
/// stamped by a clock that ran ahead, and its removal re-stamped since from the corrected clock
/// ("Clocks"): it goes dated just before the earliest emptied removal of its object in the
/// page, which keeps it before its removal and the object's rows alike.
fn before_removals(kept: &mut [Row], rows: &[Row]) {
    for row in kept {
        let Row::Meta {
            key,
            version: MetaVersion::Value { rev, .. },
        } = row
        else {
            continue;
        };
        let first = rows
            .iter()
            .filter_map(|r| match r {
                Row::Meta {
                    key: k,
                    version:
                        MetaVersion::Gone {
                            rev, emptied: true, ..
                        },
                } if k.object_id == key.object_id => Some(*rev),
                _ => None,
            })
            .min();
        if let Some(first) = first
            && *rev >= first
            && let Some(before) = first.predecessor()
        {
            *rev = before;
        }
    }
}

/// The key of `row` when it removes an identity's or slot's row as emptied.
fn emptied_row(row: &Row) -> Option<&MetaKey> {
    match row {
        Row::Meta {
            key,
            version: MetaVersion::Gone { emptied: true, .. },
        } => Some(key),
        _ => None,
    }
}

/// For each identity whose rows `rows` remove, and each of `owners` (the identities of slots they
/// remove): up to `rows + 1` ids of records linked to it, all
/// a plan needs to tell whether any would be left ([`crate::sync::plan`]).
async fn linked_to_removed(
    tx: &dyn WriteTransaction,
    rows: &[Row],
    also: Vec<&str>,
) -> Result<HashMap<String, Vec<String>>> {
    let removed: HashSet<&str> = rows
        .iter()
        .filter_map(removed_identity)
        .chain(also)
        .collect();
    let mut linked = HashMap::with_capacity(removed.len());
    for identity in removed {
        let ids = tx
            .records_linked_to(identity, None, rows.len() + 1)
            .await?
            .into_iter()
            .map(|r| r.id)
            .collect();
        linked.insert(identity.to_owned(), ids);
    }
    Ok(linked)
}

async fn versions_of(
    tx: &dyn WriteTransaction,
    mut keys: Vec<RowKey>,
) -> Result<HashMap<RowKey, Stored>> {
    let mut seen = HashSet::new();
    keys.retain(|k| seen.insert(k.clone()));
    let found = tx.versions(&keys).await?;
    Ok(keys
        .into_iter()
        .zip(found)
        .filter_map(|(key, stored)| stored.map(|s| (key, s)))
        .collect())
}
