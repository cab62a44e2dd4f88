//! Deterministic interleavings of a rekey with every kind of write, written once and run on every
//! backend (natively on GlueSQL, in Chromium on IndexedDB).
//!
//! Two vaults share one database, as two tabs or two isolates do. One of them sees the database
//! through [`Gated`], which runs a chosen job right before that vault's next write: after every
//! read the operation made, before the write that depends on them. Every pair of (rekey variant ×
//! write kind) runs in both orders: the write lands inside the rekey (between the rekey's reads and
//! its commit), and the rekey lands inside the write. The write also lands inside the rekey's
//! second round, after a first write made the first round lose (identities on: a link migration,
//! which leaves no unlinked record, so the round checks what it moves itself; off: a bystander's
//! write); where the backend holds a later round's transaction (IndexedDB), nothing can land
//! inside it, and the write lands right before it begins. Whatever the order, nothing that
//! resolved may be lost, and every value must open with exactly the secret the outcome implies:
//!
//! - a write that lands inside the rekey comes before it: the rekey moves what the write made;
//! - a rekey that lands inside a write comes before it: the write applies to what the rekey left,
//!   or fails as it would have after the rekey (an update with the old password no longer opens).
#![allow(dead_code)]

use futures::channel::oneshot;
use std::collections::{BTreeMap, HashSet};
use std::sync::{Arc, Mutex};
use vaultstore_wasm::platform::{NoYield, Platform, RustKdf, SystemClock};
use vaultstore_wasm::query::RecordFilter;
use vaultstore_wasm::record::Record;
use vaultstore_wasm::storage::{
    Change, MetaKey, MetaRow, Purge, RowKey, Stamp, Storage, StorageResult, Stored, WriteOp,
    WriteTransaction,
};
use vaultstore_wasm::{
    CreateOptions, ErrorCode, RecordQuery, RekeyOptions, Secret, Vault, VaultError, VaultOptions,
};

pub const OLD: &str = "the old password";
pub const NEW: &str = "the new password";
pub const OTHER: &str = "a bystander's password";
/// An expiry far in the future, for renewals.
pub const LATER: i64 = 4_102_444_800_000;

/// Stops the gated vault at its next write until the test says go. The operation that lands in
/// between runs on the same thread, polled alongside (see [`interleave`]), so nothing needs to
/// be `Send`.
#[derive(Clone, Default)]
pub struct Gate {
    stop: Arc<Mutex<Option<Stop>>>,
    /// The backend's [`Storage::transaction`] holds the store until it commits (IndexedDB), so
    /// the gate stops a transaction before it begins rather than before its commit.
    held: bool,
}

/// "Reached the write" to the test, and the test's "go on".
type Stop = (oneshot::Sender<()>, oneshot::Receiver<()>);

impl Gate {
    /// A gate for a backend whose transactions hold the store (see [`Gate::held`]).
    pub fn for_held_transactions() -> Self {
        Gate {
            held: true,
            ..Gate::default()
        }
    }
    fn arm(&self) -> (oneshot::Receiver<()>, oneshot::Sender<()>) {
        let (reached, on_reached) = oneshot::channel();
        let (go, on_go) = oneshot::channel();
        *self.stop.lock().unwrap() = Some((reached, on_go));
        (on_reached, go)
    }
    fn take(&self) -> Option<Stop> {
        self.stop.lock().unwrap().take()
    }
    /// Wait here if armed: tell the test, and wait for its "go on".
    async fn wait(&self) {
        if let Some((reached, go)) = self.take() {
            let _ = reached.send(());
            let _ = go.await;
        }
    }
    fn disarm(&self) {
        self.take();
    }
}

/// Run `operation` (on the gated vault) and, right before its first write, `interloper` to
/// completion. Returns both results; the interloper's is `None` if the operation never wrote.
pub async fn interleave<A, B>(
    gate: &Gate,
    operation: impl std::future::Future<Output = A>,
    interloper: impl std::future::Future<Output = B>,
) -> (A, Option<B>) {
    let (reached, go) = gate.arm();
    let operation = async {
        let result = operation.await;
        gate.disarm();
        result
    };
    let interloper = async {
        let result = match reached.await {
            Ok(()) => Some(interloper.await),
            Err(_) => None,
        };
        let _ = go.send(());
        result
    };
    futures::future::join(operation, interloper).await
}

/// Run `operation` (on the gated vault): right before its first write, `first` to completion,
/// which makes that write lose, so the operation reads again and commits in a later round; right
/// before that round's commit (held transactions: before the round begins), `interloper` to
/// completion. Returns the three results; `first`'s is `None` if the operation never wrote, the
/// interloper's if it never wrote again.
pub async fn interleave_later<A, B, C>(
    gate: &Gate,
    operation: impl std::future::Future<Output = A>,
    first: impl std::future::Future<Output = C>,
    interloper: impl std::future::Future<Output = B>,
) -> (A, Option<C>, Option<B>) {
    let (reached, go) = gate.arm();
    let operation = async {
        let result = operation.await;
        gate.disarm();
        result
    };
    let interlopers = async {
        if reached.await.is_err() {
            return (None, None);
        }
        let first = first.await;
        // Armed again before the operation goes on, so its next write stops too.
        let (reached, go_again) = gate.arm();
        let _ = go.send(());
        let result = match reached.await {
            Ok(()) => Some(interloper.await),
            Err(_) => None,
        };
        let _ = go_again.send(());
        (Some(first), result)
    };
    let (result, (first, interloper)) = futures::future::join(operation, interlopers).await;
    (result, first, interloper)
}

/// A backend whose next `apply`, or next transaction's commit, first waits at the gate.
pub struct Gated<S> {
    pub inner: S,
    pub gate: Gate,
}

#[cfg_attr(target_arch = "wasm32", async_trait::async_trait(?Send))]
#[cfg_attr(not(target_arch = "wasm32"), async_trait::async_trait)]
impl<S: Storage> Storage for Gated<S> {
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
    async fn scan_records(&self, after: Option<&str>, limit: usize) -> StorageResult<Vec<Record>> {
        self.inner.scan_records(after, limit).await
    }
    async fn meta_get(&self, key: &MetaKey) -> StorageResult<Option<String>> {
        self.inner.meta_get(key).await
    }
    async fn meta_object(&self, t: &str, id: &str) -> StorageResult<Vec<MetaRow>> {
        self.inner.meta_object(t, id).await
    }
    async fn meta_find(&self, t: &str, key: &str, value: &str) -> StorageResult<Vec<MetaRow>> {
        self.inner.meta_find(t, key, value).await
    }
    async fn meta_count(&self, t: &str) -> StorageResult<u64> {
        self.inner.meta_count(t).await
    }
    async fn meta_all(&self) -> StorageResult<Vec<MetaRow>> {
        self.inner.meta_all().await
    }
    async fn records_linked_to(
        &self,
        identity_id: &str,
        after_id: Option<&str>,
        limit: usize,
    ) -> StorageResult<Vec<Record>> {
        self.inner
            .records_linked_to(identity_id, after_id, limit)
            .await
    }
    async fn changes_since(&self, after_seq: u64, limit: usize) -> StorageResult<Vec<Change>> {
        self.inner.changes_since(after_seq, limit).await
    }
    async fn dirty_changes(&self, after: u64, limit: usize) -> StorageResult<Vec<Change>> {
        self.inner.dirty_changes(after, limit).await
    }
    async fn versions(&self, keys: &[RowKey]) -> StorageResult<Vec<Option<Stored>>> {
        self.inner.versions(keys).await
    }
    async fn linked_count(&self, identity_id: Option<&str>) -> StorageResult<u64> {
        self.inner.linked_count(identity_id).await
    }
    async fn apply(&self, stamp: Stamp, batch: Vec<WriteOp>) -> StorageResult<()> {
        self.gate.wait().await;
        self.inner.apply(stamp, batch).await
    }
    /// The backend's own transaction, whose commit waits at the gate after every read made
    /// through it. A held transaction is exactly what nothing can interleave with: the gate
    /// stops it before it begins instead.
    async fn transaction(&self) -> StorageResult<Box<dyn WriteTransaction + '_>> {
        if self.gate.held {
            self.gate.wait().await;
            return self.inner.transaction().await;
        }
        Ok(Box::new(GatedTransaction {
            inner: self.inner.transaction().await?,
            gate: &self.gate,
        }))
    }
    /// The backend's own purge, as production runs it (SQL: set-based), past the gate when
    /// it has one. A backend without one (`None`) writes through `apply` instead, whose gate
    /// then stops it after its reads; asking it to purge nothing tells which it is.
    async fn purge_expired(
        &self,
        stamp: Stamp,
        purge: Purge,
        limit: usize,
        also: Vec<WriteOp>,
    ) -> StorageResult<Option<u64>> {
        let probe = Stamp {
            at: i64::MIN,
            ..stamp
        };
        if self
            .inner
            .purge_expired(probe, purge, limit, vec![])
            .await?
            .is_none()
        {
            return Ok(None);
        }
        self.gate.wait().await;
        self.inner.purge_expired(stamp, purge, limit, also).await
    }
    async fn close(&self) {
        self.inner.close().await
    }
}

/// A backend's transaction that does not hold the store, whose commit waits at the gate.
struct GatedTransaction<'a> {
    inner: Box<dyn WriteTransaction + 'a>,
    gate: &'a Gate,
}

#[cfg_attr(target_arch = "wasm32", async_trait::async_trait(?Send))]
#[cfg_attr(not(target_arch = "wasm32"), async_trait::async_trait)]
impl WriteTransaction for GatedTransaction<'_> {
    async fn records_by_ids(&self, ids: &[String]) -> StorageResult<Vec<Option<Record>>> {
        self.inner.records_by_ids(ids).await
    }
    async fn scan_records(&self, after: Option<&str>, limit: usize) -> StorageResult<Vec<Record>> {
        self.inner.scan_records(after, limit).await
    }
    async fn meta_get(&self, key: &MetaKey) -> StorageResult<Option<String>> {
        self.inner.meta_get(key).await
    }
    async fn meta_find(&self, t: &str, key: &str, value: &str) -> StorageResult<Vec<MetaRow>> {
        self.inner.meta_find(t, key, value).await
    }
    async fn meta_count(&self, t: &str) -> StorageResult<u64> {
        self.inner.meta_count(t).await
    }
    async fn records_linked_to(
        &self,
        identity_id: &str,
        after_id: Option<&str>,
        limit: usize,
    ) -> StorageResult<Vec<Record>> {
        self.inner
            .records_linked_to(identity_id, after_id, limit)
            .await
    }
    async fn linked_count(&self, identity_id: Option<&str>) -> StorageResult<u64> {
        self.inner.linked_count(identity_id).await
    }
    async fn versions(&self, keys: &[RowKey]) -> StorageResult<Vec<Option<Stored>>> {
        self.inner.versions(keys).await
    }
    async fn records_by_tokens(&self, tokens: &[String]) -> StorageResult<Vec<Option<Record>>> {
        self.inner.records_by_tokens(tokens).await
    }
    async fn commit(self: Box<Self>, stamp: Stamp, batch: Vec<WriteOp>) -> StorageResult<()> {
        self.gate.wait().await;
        self.inner.commit(stamp, batch).await
    }
}

/// How the rekey moves the old password's records.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rekey {
    /// Identities off: found by key check, re-encrypted under the new master key.
    KeyCheck,
    /// Identities on, the new password has none: the data key is re-wrapped.
    Rewrap,
    /// Identities on, `rotate: true`: re-encrypted under a fresh data key.
    Rotate,
    /// Identities on, the new password has an identity already: merged into it.
    Merge,
}

pub const REKEYS: [Rekey; 4] = [Rekey::KeyCheck, Rekey::Rewrap, Rekey::Rotate, Rekey::Merge];

impl Rekey {
    fn identities(self) -> bool {
        self != Rekey::KeyCheck
    }
}

/// The write that races the rekey (on `t1` unless said otherwise).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Write {
    Create,
    CreateCustom,
    CreateMany,
    CreateUnderNew,
    Update,
    Renew,
    SoftDelete,
    Restore,
    Delete,
    PurgeSoftDelete,
    PurgeDelete,
    /// Read `u`, a record written before identities were on: reading links it.
    ReadLinks,
    Migrate,
}

pub const WRITES: [Write; 13] = [
    Write::Create,
    Write::CreateCustom,
    Write::CreateMany,
    Write::CreateUnderNew,
    Write::Update,
    Write::Renew,
    Write::SoftDelete,
    Write::Restore,
    Write::Delete,
    Write::PurgeSoftDelete,
    Write::PurgeDelete,
    Write::ReadLinks,
    Write::Migrate,
];

impl Write {
    /// Writes that only exist with identities on.
    fn applies_to(self, rekey: Rekey) -> bool {
        !matches!(self, Write::ReadLinks | Write::Migrate) || rekey.identities()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Order {
    /// The write lands between the rekey's reads and its commit.
    WriteInsideRekey,
    /// The rekey lands between the write's reads and its commit.
    RekeyInsideWrite,
    /// A first write makes the rekey's first round lose; the write lands between the second
    /// round's reads and its commit (held transactions: right before the round begins).
    WriteInsideLaterRound,
}

pub const ORDERS: [Order; 3] = [
    Order::WriteInsideRekey,
    Order::RekeyInsideWrite,
    Order::WriteInsideLaterRound,
];

/// Which secret a value must open with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Key {
    Old,
    New,
    Other,
}

impl Key {
    fn secret(self) -> Secret {
        Secret::password(match self {
            Key::Old => OLD,
            Key::New => NEW,
            Key::Other => OTHER,
        })
    }
}

/// What a token must hold at the end.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Expect {
    value: String,
    key: Key,
    soft_deleted: bool,
    expires_at: Option<i64>,
}

/// What a write reports: the tokens it created or the count it returned, or its error code.
type Outcome = Result<Vec<String>, ErrorCode>;

fn options(identities: bool) -> VaultOptions {
    VaultOptions {
        kdf_iterations: 1_000,
        password_identity: identities,
        ..VaultOptions::default()
    }
}

pub async fn open(storage: Box<dyn Storage>, identities: bool) -> Vault {
    let platform = Platform {
        clock: Arc::new(SystemClock),
        kdf: Box::new(RustKdf),
        scheduler: Box::new(NoYield),
    };
    Vault::open_with(storage, options(identities), platform)
        .await
        .unwrap()
}

fn create() -> CreateOptions {
    CreateOptions::default()
}

/// Run one write on `v`.
async fn write(v: &Vault, kind: Write, tokens: &BTreeMap<&'static str, String>) -> Outcome {
    let old = Key::Old.secret();
    let t = |name: &str| tokens[name].clone();
    let code = |e: VaultError| e.code();
    match kind {
        Write::Create => v
            .token_create("created", &old, &create())
            .await
            .map(|t| vec![t]),
        Write::CreateCustom => v
            .token_create_custom("custom-token", "custom", &old, None)
            .await
            .map(|()| vec!["custom-token".to_owned()]),
        Write::CreateMany => {
            v.tokens_create(&["many 1", "many 2"], &old, &create())
                .await
        }
        Write::CreateUnderNew => v
            .token_create("under new", &Key::New.secret(), &create())
            .await
            .map(|t| vec![t]),
        Write::Update => v
            .token_update(&t("t1"), "updated", &old)
            .await
            .map(|()| vec![]),
        Write::Renew => v.token_renew(&t("t1"), Some(LATER)).await.map(|()| vec![]),
        Write::SoftDelete => v.token_soft_delete(&t("t1")).await.map(|()| vec![]),
        Write::Restore => v.token_restore(&t("t2")).await.map(|()| vec![]),
        Write::Delete => v.token_delete(&t("t1")).await.map(|_| vec![]),
        Write::PurgeSoftDelete => v
            .tokens_expired_soft_delete()
            .await
            .map(|n| vec![n.to_string()]),
        Write::PurgeDelete => v.tokens_expired_delete().await.map(|n| vec![n.to_string()]),
        Write::ReadLinks => v.token_read(&t("u"), &old).await.map(|value| vec![value]),
        Write::Migrate => v
            .migrate_record_links(&old)
            .await
            .map(|n| vec![n.to_string()]),
    }
    .map_err(code)
}

async fn rekey(v: &Vault, variant: Rekey) -> Result<u64, ErrorCode> {
    let options = RekeyOptions {
        rotate: variant == Rekey::Rotate,
        observer: None,
    };
    v.bulk_rekey(&Key::Old.secret(), &Key::New.secret(), &options)
        .await
        .map_err(|e| e.code())
}

/// The starting state, written through `setup` (a vault on the same database): returns the
/// tokens by name and what each holds.
async fn seed(
    setup: &Vault,
    plain: &Vault,
    variant: Rekey,
) -> (BTreeMap<&'static str, String>, BTreeMap<String, Expect>) {
    let now = js_now();
    let mut names = BTreeMap::new();
    let mut expect = BTreeMap::new();
    let old = Key::Old.secret();
    let mut seeded: Vec<(&'static str, String, &str, Key, Option<i64>)> = Vec::new();
    for (name, value) in [("t1", "v1"), ("t2", "v2"), ("t4", "v4")] {
        let token = setup.token_create(value, &old, &create()).await.unwrap();
        seeded.push((name, token, value, Key::Old, None));
    }
    let expired = CreateOptions {
        expires_at: Some(now - 60_000),
        ..create()
    };
    let t3 = setup.token_create("v3", &old, &expired).await.unwrap();
    seeded.push(("t3", t3, "v3", Key::Old, Some(now - 60_000)));
    let b = setup
        .token_create("vb", &Key::Other.secret(), &create())
        .await
        .unwrap();
    seeded.push(("b", b, "vb", Key::Other, None));
    if variant == Rekey::Merge {
        let n = setup
            .token_create("vn", &Key::New.secret(), &create())
            .await
            .unwrap();
        seeded.push(("n", n, "vn", Key::New, None));
    }
    if variant.identities() {
        // Written by a vault with identities off: sealed with the old master key, unlinked.
        let u = plain.token_create("vu", &old, &create()).await.unwrap();
        seeded.push(("u", u, "vu", Key::Old, None));
    }
    for (name, token, value, key, expires_at) in seeded {
        names.insert(name, token.clone());
        expect.insert(
            token,
            Expect {
                value: value.to_owned(),
                key,
                soft_deleted: false,
                expires_at,
            },
        );
    }
    setup.token_soft_delete(&names["t2"]).await.unwrap();
    expect.get_mut(&names["t2"]).unwrap().soft_deleted = true;
    (names, expect)
}

fn js_now() -> i64 {
    use vaultstore_wasm::platform::Clock;
    SystemClock.now_ms()
}

/// The state after `kind` applied to `state`, and what the write must report. `u_linked`: a
/// link migration already linked `u`.
fn after_write(
    kind: Write,
    names: &BTreeMap<&'static str, String>,
    state: &mut BTreeMap<String, Expect>,
    created: &[String],
    u_linked: bool,
) -> Outcome {
    let t1 = names["t1"].clone();
    let add = |state: &mut BTreeMap<String, Expect>, token: &String, value: &str, key| {
        state.insert(
            token.clone(),
            Expect {
                value: value.to_owned(),
                key,
                soft_deleted: false,
                expires_at: None,
            },
        );
    };
    match kind {
        Write::Create => {
            add(state, &created[0], "created", Key::Old);
            Ok(created.to_vec())
        }
        Write::CreateCustom => {
            add(state, &created[0], "custom", Key::Old);
            Ok(created.to_vec())
        }
        Write::CreateMany => {
            add(state, &created[0], "many 1", Key::Old);
            add(state, &created[1], "many 2", Key::Old);
            Ok(created.to_vec())
        }
        Write::CreateUnderNew => {
            add(state, &created[0], "under new", Key::New);
            Ok(created.to_vec())
        }
        Write::Update => {
            let record = state.get_mut(&t1).unwrap();
            if record.key == Key::Old {
                record.value = "updated".into();
                Ok(vec![])
            } else {
                Err(ErrorCode::InvalidPassword)
            }
        }
        Write::Renew => {
            state.get_mut(&t1).unwrap().expires_at = Some(LATER);
            Ok(vec![])
        }
        Write::SoftDelete => {
            state.get_mut(&t1).unwrap().soft_deleted = true;
            Ok(vec![])
        }
        Write::Restore => {
            state.get_mut(&names["t2"]).unwrap().soft_deleted = false;
            Ok(vec![])
        }
        Write::Delete => {
            state.remove(&t1);
            Ok(vec![])
        }
        Write::PurgeSoftDelete => {
            state.get_mut(&names["t3"]).unwrap().soft_deleted = true;
            Ok(vec!["1".into()])
        }
        Write::PurgeDelete => {
            state.remove(&names["t3"]);
            Ok(vec!["1".into()])
        }
        // The read sees the value either way; the link it writes changes no secret.
        Write::ReadLinks => Ok(vec!["vu".into()]),
        Write::Migrate => {
            let u = &state[&names["u"]];
            Ok(vec![
                if u.key == Key::Old && !u_linked {
                    "1"
                } else {
                    "0"
                }
                .into(),
            ])
        }
    }
}

/// The rekey's effect: every value of the old password opens with the new one. Returns how
/// many moved.
fn after_rekey(state: &mut BTreeMap<String, Expect>) -> u64 {
    let mut moved = 0;
    for record in state.values_mut() {
        if record.key == Key::Old {
            record.key = Key::New;
            moved += 1;
        }
    }
    moved
}

/// The first write of [`Order::WriteInsideLaterRound`], on `b`, which makes the rekey's first
/// round lose. Identities on: a link migration of the old password's records, after which the
/// vault holds no unlinked record (`u` moves from the master key to the old identity, opening
/// with the old password still), so the rekey's later rounds check what they move themselves.
/// Identities off: a bystander's record, whose token it returns.
async fn lose_first_round(b: &Vault, variant: Rekey) -> Result<Option<String>, String> {
    if variant.identities() {
        return match b.migrate_record_links(&Key::Old.secret()).await {
            Ok(1) => Ok(None),
            other => Err(format!("the link migration gave {other:?}, expected Ok(1)")),
        };
    }
    let token = b
        .token_create("bystander", &Key::Other.secret(), &create())
        .await
        .map_err(|e| format!("the bystander's write gave {e}"))?;
    Ok(Some(token))
}

/// Run one interleaving on a fresh database reached through two connections. `held`: the
/// backend's transactions hold the store (see [`Gate::for_held_transactions`]).
pub async fn scenario(
    connections: (Box<dyn Storage>, Box<dyn Storage>, Box<dyn Storage>),
    copy: Box<dyn Storage>,
    variant: Rekey,
    kind: Write,
    order: Order,
    held: bool,
) -> Result<(), String> {
    let here = format!("{variant:?} × {kind:?}, {order:?}");
    let gate = if held {
        Gate::for_held_transactions()
    } else {
        Gate::default()
    };
    let (a, b, plain) = connections;
    let identities = variant.identities();
    let a = open(
        Box::new(Gated {
            inner: Arc::<dyn Storage>::from(a),
            gate: gate.clone(),
        }),
        identities,
    )
    .await;
    let b = open(b, identities).await;
    let plain = open(plain, false).await;
    let (names, mut state) = seed(&b, &plain, variant).await;

    let (write_outcome, rekey_outcome) = match order {
        Order::WriteInsideRekey => {
            let (rekeyed, written) =
                interleave(&gate, rekey(&a, variant), write(&b, kind, &names)).await;
            (written, rekeyed)
        }
        Order::RekeyInsideWrite => {
            let (written, rekeyed) =
                interleave(&gate, write(&a, kind, &names), rekey(&b, variant)).await;
            let Some(rekeyed) = rekeyed else {
                return Err(format!("{here}: the write never reached storage"));
            };
            (Some(written), rekeyed)
        }
        Order::WriteInsideLaterRound => {
            let (rekeyed, first, written) = interleave_later(
                &gate,
                rekey(&a, variant),
                lose_first_round(&b, variant),
                write(&b, kind, &names),
            )
            .await;
            let bystander = match first {
                None => return Err(format!("{here}: the rekey never wrote")),
                Some(Err(e)) => return Err(format!("{here}: {e}")),
                Some(Ok(_)) if written.is_none() => {
                    return Err(format!(
                        "{here}: the rekey finished in its first round, which the first write \
                         should have made lose ({rekeyed:?})"
                    ));
                }
                Some(Ok(bystander)) => bystander,
            };
            if let Some(token) = bystander {
                state.insert(
                    token,
                    Expect {
                        value: "bystander".into(),
                        key: Key::Other,
                        soft_deleted: false,
                        expires_at: None,
                    },
                );
            }
            (written, rekeyed)
        }
    };
    let write_outcome = write_outcome.ok_or(format!("{here}: the write never finished"))?;
    let created = write_outcome.clone().unwrap_or_default();
    let u_linked = order == Order::WriteInsideLaterRound && identities;
    let (expected_write, expected_moved) = match order {
        Order::WriteInsideRekey | Order::WriteInsideLaterRound => {
            let w = after_write(kind, &names, &mut state, &created, u_linked);
            (w, after_rekey(&mut state))
        }
        Order::RekeyInsideWrite => {
            let m = after_rekey(&mut state);
            (after_write(kind, &names, &mut state, &created, u_linked), m)
        }
    };
    if write_outcome != expected_write {
        return Err(format!(
            "{here}: the write gave {write_outcome:?}, expected {expected_write:?}"
        ));
    }
    if rekey_outcome != Ok(expected_moved) {
        return Err(format!(
            "{here}: the rekey gave {rekey_outcome:?}, expected Ok({expected_moved})"
        ));
    }
    check_state(&a, copy, identities, &state)
        .await
        .map_err(|e| format!("{here}: {e}"))
}

/// Compare what the database holds with `state`: every token and its metadata, every value
/// opening with exactly its secret (checked on a copy made from a snapshot, where soft-deleted
/// and expired records are restored and renewed so they can be read), no identity left
/// without records.
async fn check_state(
    v: &Vault,
    copy: Box<dyn Storage>,
    identities: bool,
    state: &BTreeMap<String, Expect>,
) -> Result<(), String> {
    let all = RecordQuery {
        soft_deleted_include: true,
        ..RecordQuery::default()
    };
    let records = v.record_list(&all).await.map_err(|e| e.to_string())?;
    let present: BTreeMap<String, Record> =
        records.into_iter().map(|r| (r.token.clone(), r)).collect();
    let tokens: HashSet<&String> = present.keys().collect();
    let expected: HashSet<&String> = state.keys().collect();
    if tokens != expected {
        return Err(format!("tokens {tokens:?}, expected {expected:?}"));
    }
    for (token, e) in state {
        let r = &present[token];
        if r.is_soft_deleted() != e.soft_deleted || r.expires_at != e.expires_at {
            return Err(format!(
                "{token}: soft-deleted {} expires {:?}, expected {} {:?}",
                r.is_soft_deleted(),
                r.expires_at,
                e.soft_deleted,
                e.expires_at
            ));
        }
    }
    let snapshot = v.export_snapshot().await.map_err(|e| e.to_string())?;
    let doc: serde_json::Value = serde_json::from_slice(&snapshot).map_err(|e| e.to_string())?;
    let meta = doc["meta"].as_array().cloned().unwrap_or_default();
    for identity in meta.iter().filter(|m| m["key"] == "tag") {
        let id = &identity["objectId"];
        if !meta
            .iter()
            .any(|m| m["key"] == "password_id" && &m["value"] == id)
        {
            return Err(format!("identity {id} was left without records"));
        }
    }
    let copy = Vault::open(
        copy,
        VaultOptions {
            snapshot: Some(snapshot),
            min_kdf_iterations: Some(1_000),
            ..options(identities)
        },
    )
    .await
    .map_err(|e| e.to_string())?;
    for (token, e) in state {
        copy.token_restore(token).await.map_err(|e| e.to_string())?;
        copy.token_renew(token, None)
            .await
            .map_err(|e| e.to_string())?;
        match copy.token_read(token, &e.key.secret()).await {
            Ok(value) if value == e.value => {}
            other => {
                return Err(format!(
                    "{token}: reading with {:?} gave {other:?}, expected {:?}",
                    e.key, e.value
                ));
            }
        }
        for wrong in [Key::Old, Key::New, Key::Other] {
            if wrong != e.key {
                let read = copy.token_read(token, &wrong.secret()).await;
                if read.as_ref().map_err(|e| e.code()) != Err(ErrorCode::InvalidPassword) {
                    return Err(format!(
                        "{token}: reading with {wrong:?} gave {read:?}, expected INVALID_PASSWORD"
                    ));
                }
            }
        }
    }
    Ok(())
}

/// Every scenario, on databases from `fresh` (three connections to one new database) and copies
/// from `scratch`; `held`: the backend's transactions hold the store (IndexedDB). Returns every
/// failure, not just the first.
pub async fn run_all<F, Fut, G, GFut>(fresh: F, scratch: G, held: bool) -> Vec<String>
where
    F: Fn(String) -> Fut,
    Fut: std::future::Future<Output = (Box<dyn Storage>, Box<dyn Storage>, Box<dyn Storage>)>,
    G: Fn(String) -> GFut,
    GFut: std::future::Future<Output = Box<dyn Storage>>,
{
    let mut failures = Vec::new();
    let mut n = 0;
    for variant in REKEYS {
        for kind in WRITES {
            if !kind.applies_to(variant) {
                continue;
            }
            for order in ORDERS {
                n += 1;
                let name = format!("interleave-{n}-{variant:?}-{kind:?}-{order:?}");
                let connections = fresh(name.clone()).await;
                let copy = scratch(format!("{name}-copy")).await;
                if let Err(e) = scenario(connections, copy, variant, kind, order, held).await {
                    failures.push(e);
                }
            }
        }
    }
    failures
}

/// A `tokenSoftDelete` (on `b`) that lands while a `tokenUpdate` (on the gated `a`) derives its
/// key and seals: the update must fail as it does after the delete (`RECORD_NOT_FOUND`,
/// `soft_deleted`) and leave the record soft-deleted with its old value, for every key scheme.
/// Returns every failure.
pub async fn update_against_soft_delete<F, Fut>(fresh: F) -> Vec<String>
where
    F: Fn(String) -> Fut,
    Fut: std::future::Future<Output = (Box<dyn Storage>, Box<dyn Storage>, Box<dyn Storage>)>,
{
    let mut failures = Vec::new();
    for identities in [false, true] {
        let here = format!("tokenUpdate × tokenSoftDelete, identities {identities}");
        let (a, b, _) = fresh(format!("update-soft-delete-{identities}")).await;
        let gate = Gate::default();
        let a = open(
            Box::new(Gated {
                inner: Arc::<dyn Storage>::from(a),
                gate: gate.clone(),
            }),
            identities,
        )
        .await;
        let b = open(b, identities).await;
        let old = Key::Old.secret();
        let token = b.token_create("before", &old, &create()).await.unwrap();
        let (updated, deleted) = interleave(
            &gate,
            a.token_update(&token, "after", &old),
            b.token_soft_delete(&token),
        )
        .await;
        if deleted.as_ref().map(|r| r.is_ok()) != Some(true) {
            failures.push(format!("{here}: the soft delete gave {deleted:?}"));
            continue;
        }
        match &updated {
            Err(e)
                if e.code() == ErrorCode::RecordNotFound
                    && e.reason().map(|r| r.as_str()) == Some("soft_deleted") => {}
            other => failures.push(format!(
                "{here}: the update gave {other:?}, expected RECORD_NOT_FOUND (soft_deleted)"
            )),
        }
        let all = RecordQuery {
            soft_deleted_include: true,
            ..RecordQuery::default()
        };
        let records = b.record_list(&all).await.unwrap();
        if records.len() != 1 || !records[0].is_soft_deleted() {
            failures.push(format!("{here}: the record is no longer soft-deleted"));
        }
        b.token_restore(&token).await.unwrap();
        match b.token_read(&token, &old).await {
            Ok(value) if value == "before" => {}
            other => failures.push(format!(
                "{here}: the record holds {other:?}, expected the value from before the delete"
            )),
        }
    }
    failures
}

/// `secretAdd` and `secretRemove` (API.md "Unlocking, and several secrets for one identity")
/// interleaved with a rekey of the same identity, in both orders: one operation runs on the gated
/// `a`, the other lands right before its write. Whatever the order, a slot never opens records a
/// rotation moved away from it, and every secret opens exactly what the order implies. Returns
/// every failure.
pub async fn slots_against_rekeys<F, Fut>(fresh: F) -> Vec<String>
where
    F: Fn(String) -> Fut,
    Fut: std::future::Future<Output = (Box<dyn Storage>, Box<dyn Storage>, Box<dyn Storage>)>,
{
    let old = Secret::password(OLD);
    let new = Secret::password(NEW);
    let key = Secret::raw_key(&[9u8; 32]).unwrap();
    let rotate = RekeyOptions {
        rotate: true,
        ..RekeyOptions::default()
    };
    let rewrap = RekeyOptions::default();
    let mut failures = Vec::new();
    for case in 0..4 {
        let (a, b, _) = fresh(format!("slots-against-rekeys-{case}")).await;
        let gate = Gate::default();
        let a = open(
            Box::new(Gated {
                inner: Arc::<dyn Storage>::from(a),
                gate: gate.clone(),
            }),
            true,
        )
        .await;
        let b = open(b, true).await;
        let token = b.token_create("value", &old, &create()).await.unwrap();
        let v = Some("value");
        match case {
            0 => {
                let here = "secretAdd with a rotation landing inside it";
                let (added, rotated) = interleave(
                    &gate,
                    a.secret_add(&old, &key),
                    b.bulk_rekey(&old, &new, &rotate),
                )
                .await;
                if rotated.as_ref().map(|r| r.is_ok()) != Some(true) {
                    failures.push(format!("{here}: the rotation gave {rotated:?}"));
                }
                if added.as_ref().map_err(|e| e.code()) != Err(ErrorCode::IdentityNotFound) {
                    failures.push(format!(
                        "{here}: secretAdd gave {added:?}, expected IDENTITY_NOT_FOUND"
                    ));
                }
                failures.extend(
                    slot_check(
                        here,
                        &b,
                        &token,
                        &[
                            (&new, "NEW", v),
                            (&old, "OLD", None),
                            (&key, "the key", None),
                        ],
                    )
                    .await,
                );
            }
            1 => {
                let here = "a rotation with secretAdd landing inside it";
                let (rotated, added) = interleave(
                    &gate,
                    a.bulk_rekey(&old, &new, &rotate),
                    b.secret_add(&old, &key),
                )
                .await;
                if added.as_ref().map(|r| r.is_ok()) != Some(true) {
                    failures.push(format!("{here}: secretAdd gave {added:?}"));
                }
                if rotated.as_ref().map_err(|e| e.code()) != Ok(&1) {
                    failures.push(format!("{here}: the rotation gave {rotated:?}"));
                }
                failures.extend(
                    slot_check(
                        here,
                        &b,
                        &token,
                        &[
                            (&new, "NEW", v),
                            (&old, "OLD", None),
                            (&key, "the key", None),
                        ],
                    )
                    .await,
                );
            }
            2 => {
                let here = "a re-wrap with secretAdd landing inside it";
                let (moved, added) = interleave(
                    &gate,
                    a.bulk_rekey(&old, &new, &rewrap),
                    b.secret_add(&old, &key),
                )
                .await;
                if added.as_ref().map(|r| r.is_ok()) != Some(true) {
                    failures.push(format!("{here}: secretAdd gave {added:?}"));
                }
                if moved.as_ref().map_err(|e| e.code()) != Ok(&1) {
                    failures.push(format!("{here}: the re-wrap gave {moved:?}"));
                }
                failures.extend(
                    slot_check(
                        here,
                        &b,
                        &token,
                        &[(&new, "NEW", v), (&old, "OLD", None), (&key, "the key", v)],
                    )
                    .await,
                );
            }
            _ => {
                let here = "secretRemove with a re-wrap of that slot landing inside it";
                b.secret_add(&old, &key).await.unwrap();
                let (removed, moved) = interleave(
                    &gate,
                    a.secret_remove(&key),
                    b.bulk_rekey(&key, &new, &rewrap),
                )
                .await;
                if moved.as_ref().map(|r| r.is_ok()) != Some(true) {
                    failures.push(format!("{here}: the re-wrap gave {moved:?}"));
                }
                if removed.as_ref().map_err(|e| e.code()) != Err(ErrorCode::IdentityNotFound) {
                    failures.push(format!(
                        "{here}: secretRemove gave {removed:?}, expected IDENTITY_NOT_FOUND"
                    ));
                }
                failures.extend(
                    slot_check(
                        here,
                        &b,
                        &token,
                        &[(&new, "NEW", v), (&old, "OLD", v), (&key, "the key", None)],
                    )
                    .await,
                );
            }
        }
    }
    failures
}

/// What each secret gives for `token` afterwards, against what it must: its value (and unlock
/// `true`), or `None` for `INVALID_PASSWORD` from both.
async fn slot_check(
    here: &str,
    v: &Vault,
    token: &str,
    expect: &[(&Secret, &str, Option<&str>)],
) -> Vec<String> {
    let mut out = Vec::new();
    for (secret, name, value) in expect {
        let got = v.token_read(token, secret).await.map_err(|e| e.code());
        let want = value.map(str::to_owned).ok_or(ErrorCode::InvalidPassword);
        if got != want {
            out.push(format!("{here}: {name} reads {got:?}, expected {want:?}"));
        }
        let unlocked = v.unlock(secret).await.map_err(|e| e.code());
        let want = value.map(|_| true).ok_or(ErrorCode::InvalidPassword);
        if unlocked != want {
            out.push(format!(
                "{here}: {name} unlocks {unlocked:?}, expected {want:?}"
            ));
        }
    }
    out
}
