//! A randomized simulation of sync (issue 14, SYNC.md): a server and two or three replicas, each an
//! ordinary `Vault` on a real backend (the server on GlueSQL memory or SQLite, across cases; the
//! replicas on GlueSQL memory, the second one on SQLite), all joined to one vault first. Then
//! random operations on random replicas: create, custom create (3 tokens, so they collide),
//! update, renew, soft delete, restore, delete, purge of expired records (hard and soft), a
//! setting, a password change (identities on: a re-wrap), a rotation, a secret added to the
//! password's identity (identities on: a slot, `secretAdd`) and one of those removed
//! (`secretRemove`, on a replica that may not have it yet; through rotations, a password may be
//! removed too, leaving its identity's own rows vacant) or, through rotations, made the
//! password (`bulkRekey` to it), time passing (seconds, or
//! months: past the 90-day retention, so the server collects tombstones, replicas drop their
//! own, and a replica whose checkpoint the collection passed resyncs), and syncs at
//! random with faults on the wire: a request lost (the server never saw it), a response lost (the
//! server acted, the replica saw an error), a request delivered twice, and old requests replayed
//! later (a late duplicate: reordering; never across the retention); two replicas syncing
//! at once, their requests interleaved one by one (a push landing between another replica's
//! pull and push); two tabs of one replica (two `Vault`s on its store) syncing at once the
//! same way (SYNC.md 9); one tab writing while the other syncs (after the sync's first to
//! fourth request: between a pull and the page it applies, a push and the marks it clears); and
//! the server's database backed up (an SQLite server's file) and lost, the server coming back
//! restored from the last backup, or empty (SYNC.md 8; not through rotations, below).
//! Replicas that do not sync for a while are partitioned. Each replica has its own clock, hours
//! behind the server's or up to 4 minutes ahead (see "Clocks").
//!
//! **Healing:** every replica syncs, twice, in turn, and none may fail; then again, in turn,
//! until a pass moves no row (at most 6 passes: SYNC.md 1 promises convergence after two, but
//! a record stranded because its custom token was taken is pushed only on the sync after the
//! one that brought the holder's deletion, so the others see it one pass later). The last pass's
//! `stranded` of each replica must list exactly the live records it holds otherwise than the
//! server (what SYNC.md calls kept on this replica only, reported on every sync while so, not only by
//! the sync that stranded it, which may have failed afterwards). Records any sync reported
//! `stranded` (while healing or before) that their replica still holds otherwise than the server
//! are checked readable there, then deleted there by the "user" (the engine keeps them until the
//! user acts, SYNC.md 2 and 7), and healing runs again. Such a record must hold a custom token
//! unless some operation of the case retired a key for good (a rotation with identities on, a
//! `secretRemove`, a password changed to an added secret): a deletion that empties an identity
//! retires none, and a value written under it elsewhere meanwhile is delivered, not stranded.
//!
//! **The oracle** (what is checked after healing; nothing else is claimed):
//! 1. Convergence: every replica's replicated rows (a `changes_since(0)` walk, by key) equal the
//!    server's, byte for byte, but for tombstones older than the retention (which each side
//!    drops on its own schedule; the server keeps identity and displaced-record ones for good).
//! 2. No deleted record back: every record id that any replica ever held as a tombstone (a delete,
//!    a purge, a pulled delete) is not live on the server (so, by 1, nowhere), unless some replica
//!    still held it live when months passed: a replica's edit of its copy may then come back
//!    after the server dropped the tombstone, as SYNC.md 2 allows (its fields are not checked
//!    against 3: the copy carries the revisions it had); or when the server was lost while a
//!    replica (or the backup it came back from) held it live and none held its tombstone within
//!    the retention, or when months passed after a loss while the server held it live (the
//!    replica's clean tombstone ages out before its push): the deletion was lost with the
//!    server.
//! 3. Nothing resolved lost, and the conflict rule: every record id whose creation resolved and
//!    that was never deleted is live on the server; for each live record and each field (value,
//!    `expiresAt`, `softDeletedAt`), the server's revision is the greatest revision any replica
//!    was seen to hold for that field, and the field's content is what that write wrote. The same
//!    for each setting this simulation writes.
//! 4. Secrets: every readable live record opens on every replica (keys dropped first, `lock()`)
//!    with exactly the password its history implies, and gives the plaintext of the write its
//!    value revision names. Identities off, that password is the one the write of its seal
//!    revision used (a create, an update, or the rekey that re-sealed it); identities on (one
//!    identity in the default run), the one the write of the converged revision of the identity's
//!    `tag` row set, and every other password ever set is `INVALID_PASSWORD` on every replica.
//!    Through rotations (below) only "some secret of the history, the same everywhere" (a
//!    password, or an added secret no `secretRemove` removed: a password change may lose to a
//!    concurrent change that left the identity's own rows vacant, an added secret opening it;
//!    or a removed one that the server kept as the identity's last secret); that
//!    run then moves every secret of the history to one last password on A (`consolidate`) and
//!    heals again: the last password opens every readable record everywhere, with its value,
//!    and no other secret opens anything (a rekey covers every identity sync left a secret:
//!    without that, the check fails within 200 cases).
//!    Every secret a `secretAdd` added opens alike on every replica (the strict run: it opens the
//!    vault), and no live slot names an identity the server does not hold (a slot goes with its
//!    identity; without that, the through-rotations run fails in a few cases of 200). One that
//!    a `secretRemove` removed on some replica opens nothing anywhere: the removal is final,
//!    unless the server refused it because the identity's other secrets were removed meanwhile
//!    (two replicas each removed one of its last two): then it alone opens that identity's
//!    records. (Counting a refused removal as done fails this within 50 cases.)
//! 5. Zero knowledge: no value written and no password appears in the server's store: every
//!    column of every table of the SQLite server, or, on GlueSQL, its snapshot and its rows.
//!
//! **Clocks:** each replica's clock is hours behind the server's, on time, minutes ahead or hours
//! ahead. The server refuses revisions more than `MAX_FUTURE_MS` (5 minutes) ahead of its clock;
//! a sync corrects a replica's clock from the server's time and re-stamps its unsynced writes
//! that carry revisions past that limit (SYNC.md 4, `src/sync/drift.rs`). The oracle follows the
//! re-stamps (`History::restamped`: the same content under a new revision is the same write)
//! and ignores revisions no server could store (past the limit now, or replaced on their replica
//! by a sync: once months pass, the limit has moved past them). `SYNC_SIM_AHEAD_MS=<ms>` puts
//! replica A that far ahead in every case.
//!
//! **Three runs.** With identities off; with identities on and the vault's first identity kept
//! alive (its first record is never deleted or expired, rotations become password changes), where
//! the strict oracle of 4 holds; and with identities on through rotations and prunes
//! (`replicas_converge_through_rotations`), where a rotation can be refused (`referenced`: a
//! record from another replica still uses the old identity) and replicas that made an identity
//! for one password while apart hold two with one tag, so several passwords of the history may
//! open records and 4 checks "some password of the history, the same on every replica". That
//! run found three engine faults, each now a test in `tests/sync_engine.rs`
//! (`a_rotation_after_a_write_under_the_old_identity_reached_the_server_converges`,
//! `two_replicas_that_make_the_first_identity_offline_both_stay_readable`) or fixed with the
//! deferred identity removals of `src/vault/engine.rs`. Months passing (`Away`) found two more,
//! both the server collecting a tombstone that does not mean "deleted": a rotated-out
//! identity's, after which a replica holding a record stranded under it was refused whole
//! (`422`) on every sync (`a_record_stranded_under_a_retired_key_still_syncs_after_two_retentions`),
//! and a displaced record's, which its replica, back after the retention, forgot as deleted
//! elsewhere (`a_record_displaced_while_its_replica_was_away_is_kept_stranded_after_the_retention`).
//! More cases found another: a push whose merge kept the server's value named an identity the
//! server had not read (`a_soft_delete_from_a_replica_that_missed_a_rotation_merges_with_the_resealed_value`).
//! Seeds 23 and 59 found two in how a replica takes back the versions its push was answered with:
//! it set aside the removal of an identity whose last record the same answer removed (it had
//! planned the identity's rows first), and kept it for good
//! (`a_push_answered_with_the_removal_of_the_identity_of_its_last_record_drops_the_identity`); and
//! it did not report a displaced record it keeps as stranded
//! (`a_displaced_record_is_reported_stranded_by_the_answer_to_its_push`). And cases they saved
//! found a third: a record that came back after the server collected its tombstone lost, on the
//! replica that had deleted it, to that replica's own tombstone, past the retention
//! (`a_record_brought_back_after_the_retention_reaches_the_replica_that_deleted_it`).
//! Checking that the last sync's `stranded` is exactly what each replica alone holds found that a
//! record a pull stranded was reported only by that sync
//! (`a_record_stranded_by_a_sync_that_then_failed_is_reported_by_the_next_ones`). Two tabs
//! syncing at once (`SyncTabs`) found that a tab told `expired` for a checkpoint the other tab had
//! already resynced past began a resync of its own, and forgot every row the other had pulled
//! (`two_tabs_back_after_the_retention_resync_once_and_forget_only_what_was_deleted`).
//! Seed 32 found that a replica which rotated an identity away kept a slot of it that its pull
//! brought, because the pulled version of a record named the identity although the merge kept
//! the replica's re-seal, and sealed a write with the added secret under the retired key
//! (`a_slot_whose_identity_no_merged_record_uses_goes_before_a_write_can_use_it`).
//!
//! Seeds 41 and 105 found that `secretRemove` of an identity's own secret moved an added secret
//! onto the identity's own rows, out of reach of a removal of that secret made meanwhile on
//! another replica, so the removed secret opened the vault again
//! (`removing_the_own_secret_while_another_device_removes_an_added_one_keeps_both_removals`):
//! the own rows become vacant now, and the server refuses the removal that would take an
//! identity's last secret (`removing_the_last_two_secrets_on_two_devices_keeps_the_one_removed_later`).
//! Seed 41 then found that refusal taking an emptied identity's revival for a removal
//! (`an_emptied_identity_comes_back_with_a_vacant_first_slot_and_its_added_secret`), and seeds
//! 41, 106 and 107 a record stranded under an identity whose own rows were vacant, opening with
//! no secret, because the removal of its added secret's slot did not wait with the identity's
//! (`a_record_stranded_under_a_vacant_first_slot_still_opens_with_the_added_secret`); seed 109,
//! that wait lost when the removal came in a push's answer
//! (`a_slot_removal_in_the_answer_to_a_push_waits_as_a_pulled_one_does`). Seed 177 found an
//! identity whose own rows a replica had made vacant (its password removed, an added secret
//! opening it) kept there over the removal that emptied it, while the slot that opened it went
//! with that removal: its records opened with no secret
//! (`a_slot_emptied_with_its_identity_stays_where_a_later_write_keeps_the_identity`). Seed 211
//! found a secret removed before a rotation that the server refused coming back with the
//! rotation's removals (`a_removed_secret_stays_removed_when_a_rotation_after_it_is_refused`).
//! Seed 217 found a replica keeping stranded a pulled copy of a displaced record under an
//! identity it had removed, which opened there with no secret
//! (`a_displaced_copy_under_an_identity_removed_here_is_not_kept_stranded`). Seed 232 found the
//! oracle too narrow: a removal the server refused stays refused when a later password change
//! gives the identity another secret again, and the oracle now learns of a refusal when the
//! remover takes the slot back
//! (`a_refused_removal_stays_refused_after_a_later_password_change`).
//!
//! Losing the server (`ServerBackup`, `ServerLost`) found, within 300 cases, that a wiped
//! server first reached by a replica whose records were all deleted handed it a salt of its own,
//! and so became another vault that refused every other replica
//! (`a_wiped_server_reached_first_by_a_replica_with_no_records_stays_the_vault`), and that a
//! replica whose push after a `lost` reset failed owed the server nothing at its next sync
//! (`a_replica_whose_push_to_a_wiped_server_failed_still_pushes_everything`); seed 304, that
//! replicas dropped a removed secret's tombstones after the retention, and a replica that was
//! away pushed the secret back to the lost server
//! (`a_secret_removed_before_the_server_is_lost_stays_removed_after_the_retention`). A deletion only
//! the lost server still held comes back from a replica that holds the record (its other
//! replicas had dropped their tombstones 90 days after the deletion): 2 allows it. Through
//! rotations, a lost server can take a rotation back (a replica that wrote under the old key,
//! stranded, or never heard of the rotation, pushes the old identity's records first, and the
//! rotation's removal is then refused as `referenced`); that run leaves `ServerLost` out.
//!
//! Fixed seed, 16 cases per test (some 12 s in debug). Each run's outcome still depends on the
//! random ids and clock node ids the engine draws (a tie between two records' `createdAt` goes
//! by id), so a long run at a new seed may find what the same seed passed before. Proptest saves
//! each failure it shrinks in `tests/sync_sim.proptest-regressions` (ignored by git) and replays
//! it first on every later run here. A longer run, or another seed:
//! `SYNC_SIM_CASES=2000 cargo test --release --test sync_sim` (`PROPTEST_CASES` works too;
//! `PROPTEST_RNG_SEED=<n>` picks the seed; `SYNC_SIM_OPS=<n>` allows cases of up to `n` operations
//! instead of 40).
#![cfg(all(feature = "gluesql", feature = "sql", not(target_arch = "wasm32")))]

mod common;
mod sqlite;

use async_trait::async_trait;
use common::{TestClock, Turns, replicated};
use futures::executor::block_on;
use proptest::prelude::*;
use proptest::test_runner::RngSeed;
use sqlite::Sqlite;
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use vaultstore_wasm::platform::{Clock, Platform};
use vaultstore_wasm::storage::memory::GlueMemoryStorage;
use vaultstore_wasm::storage::sql::SqlStorage;
use vaultstore_wasm::storage::{MetaKey, Row, RowKey, Storage, object_type};
use vaultstore_wasm::sync::drift::restamp_above;
use vaultstore_wasm::sync::plan::{MAX_FUTURE_MS, revs_of};
use vaultstore_wasm::sync::{LiveRecord, MetaVersion, RecordVersion, Rev};
use vaultstore_wasm::{
    CreateOptions, ErrorCode, RekeyOptions, Result, Secret, SyncReport, SyncTransport, Vault,
    VaultError, VaultOptions,
};

const T0: i64 = 1_700_000_000_000;
const HOUR: i64 = 3_600_000;
const DAY: i64 = 24 * HOUR;
const CUSTOM: [&str; 3] = ["card-4242", "card-1881", "card-0007"];
const SETTINGS: [&str; 2] = ["simTheme", "simLocale"];
/// How long a server keeps tombstones and replicas their clean ones (FORMAT.md "Retention").
const RETENTION_DAYS: i64 = 90;

fn config() -> ProptestConfig {
    let cases = std::env::var("SYNC_SIM_CASES")
        .or_else(|_| std::env::var("PROPTEST_CASES"))
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(16);
    let mut config = ProptestConfig::with_cases(cases);
    if std::env::var_os("PROPTEST_RNG_SEED").is_none() {
        config.rng_seed = RngSeed::Fixed(14);
    }
    config.max_shrink_iters = 256;
    config
}

/// Whether to print each step of a case as it runs (`SYNC_SIM_TRACE`).
fn trace() -> bool {
    std::env::var_os("SYNC_SIM_TRACE").is_some()
}

/// The bound on a case's operations: 40, or `SYNC_SIM_OPS` (a long run with longer histories).
fn max_ops() -> usize {
    std::env::var("SYNC_SIM_OPS")
        .ok()
        .and_then(|n| n.parse().ok())
        .filter(|&n| n > 5)
        .unwrap_or(40)
}

thread_local! {
    /// Set by `replicas_converge_through_rotations` (see the module docs, "Three runs").
    static WIDE: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Whether this run goes through rotations and prunes of the first identity.
fn known_bugs() -> bool {
    WIDE.with(std::cell::Cell::get)
}

// ---- the nodes and the wire ----

struct Node {
    name: &'static str,
    vault: Vault,
    /// A second `Vault` on the same store, with its own clock state and caches: another tab of
    /// the same browser profile (SYNC.md 9). It only syncs ([`Op::SyncTabs`]).
    tab: Vault,
    store: Arc<dyn Storage>,
    clock: TestClock,
    sqlite: Option<Arc<Sqlite>>,
}

async fn node(name: &'static str, sqlite: bool, identities: bool, clock: TestClock) -> Node {
    if sqlite {
        node_on(name, Arc::new(Sqlite::memory()), identities, clock).await
    } else {
        let store = Arc::new(GlueMemoryStorage::new().unwrap());
        vaults(name, store, None, identities, clock).await
    }
}

/// A node on the SQLite database `db` (its tables made or upgraded as `Vault::open` would).
async fn node_on(name: &'static str, db: Arc<Sqlite>, identities: bool, clock: TestClock) -> Node {
    let store = Arc::new(SqlStorage::open(db.clone(), "vaultstore").await.unwrap());
    vaults(name, store, Some(db), identities, clock).await
}

/// A node on `store`: its vault and a second tab.
async fn vaults(
    name: &'static str,
    store: Arc<dyn Storage>,
    db: Option<Arc<Sqlite>>,
    identities: bool,
    clock: TestClock,
) -> Node {
    let options = VaultOptions {
        kdf_iterations: 1_000,
        password_identity: identities,
        ..VaultOptions::default()
    };
    let platform = || Platform {
        clock: Arc::new(clock.clone()),
        ..Platform::default()
    };
    let vault = Vault::open_with(Box::new(store.clone()), options.clone(), platform())
        .await
        .unwrap();
    let tab = Vault::open_with(Box::new(store.clone()), options, platform())
        .await
        .unwrap();
    Node {
        name,
        vault,
        tab,
        store,
        clock,
        sqlite: db,
    }
}

/// What the wire does to the next exchanges of one sync.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fault {
    None,
    /// The `n`th request never reaches the server.
    Drop(usize),
    /// The `n`th exchange reaches the server, its response is lost.
    Lose(usize),
    /// The `n`th request reaches the server twice (the replica sees the second answer).
    Duplicate(usize),
}

/// In process: each request goes to the server's `sync_handle`; every body is kept for replays.
struct Wire {
    /// The server now: [`Op::ServerLost`] replaces it.
    server: Mutex<Arc<Node>>,
    server_clock: TestClock,
    /// What a lost server comes back as: a copy of the last [`Op::ServerBackup`] of an SQLite
    /// server (a file in `dir`), or an empty store.
    backup: Mutex<Option<std::path::PathBuf>>,
    dir: std::path::PathBuf,
    fault: Mutex<Fault>,
    count: AtomicUsize,
    sent: Mutex<Vec<String>>,
}

#[async_trait]
impl SyncTransport for Wire {
    async fn exchange(&self, body: String) -> Result<(u16, Vec<u8>)> {
        let server = self.server();
        let n = self.count.fetch_add(1, Ordering::SeqCst);
        self.sent.lock().unwrap().push(body.clone());
        let fault = *self.fault.lock().unwrap();
        if fault == Fault::Drop(n) {
            return Err(VaultError::Storage(Box::new(
                vaultstore_wasm::error::StorageFailure {
                    original: Default::default(),
                    name: None,
                    message: "the request was not sent".into(),
                },
            )));
        }
        let (mut status, mut response) = server.vault.sync_handle(body.as_bytes()).await;
        match fault {
            Fault::Lose(at) if at == n => {
                return Err(VaultError::Storage(Box::new(
                    vaultstore_wasm::error::StorageFailure {
                        original: Default::default(),
                        name: None,
                        message: "the connection dropped".into(),
                    },
                )));
            }
            Fault::Duplicate(at) if at == n => {
                (status, response) = server.vault.sync_handle(body.as_bytes()).await;
            }
            _ => {}
        }
        Ok((status, response.into_bytes()))
    }
}

impl Drop for Wire {
    fn drop(&mut self) {
        // The backups and restored databases (Linux lets an open file go).
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

impl Wire {
    fn server(&self) -> Arc<Node> {
        self.server.lock().unwrap().clone()
    }

    async fn sync(&self, node: &Node, fault: Fault) -> Result<SyncReport> {
        *self.fault.lock().unwrap() = fault;
        self.count.store(0, Ordering::SeqCst);
        let result = node.vault.sync(self, None).await;
        *self.fault.lock().unwrap() = Fault::None;
        result
    }

    /// A sync of `node` that tells `history` which of its writes the sync re-stamped (a clock
    /// hours ahead, SYNC.md 4): the same content under a new revision.
    async fn sync_noting(
        &self,
        node: &Node,
        fault: Fault,
        history: &mut History,
    ) -> Result<SyncReport> {
        let above = restamp_above(self.server_clock.now_ms());
        let far = far_dirty_rows(node, above).await;
        let result = self.sync(node, fault).await;
        if !far.is_empty() {
            history.restamped(node, &far, above).await;
        }
        result
    }
}

/// `node`'s dirty rows with a revision a sync now would re-stamp.
async fn far_dirty_rows(node: &Node, above: u64) -> Vec<Row> {
    let mut rows = Vec::new();
    let mut after = 0;
    loop {
        let page = node.store.dirty_changes(after, 500).await.unwrap();
        let Some(last) = page.last() else {
            return rows;
        };
        after = last.seq;
        rows.extend(
            page.into_iter()
                .map(|c| c.row)
                .filter(|row| revs_of(row).iter().any(|r| r.wall_ms() > above)),
        );
    }
}

/// Give `to` what `map` knew of `from` (a write's content, now under a re-stamped revision).
fn alias<T: Clone + PartialEq + std::fmt::Debug>(
    map: &mut HashMap<String, BTreeMap<Rev, T>>,
    id: &str,
    from: Rev,
    to: Rev,
) {
    if let Some(content) = map.get(id).and_then(|revs| revs.get(&from)).cloned() {
        note(map, id, to, content);
    }
}

// ---- the operations ----

#[derive(Debug, Clone, Copy)]
enum Expiry {
    Never,
    /// A day before the simulation starts: expired everywhere, purgeable.
    Past,
    /// A month after.
    Future,
}

impl Expiry {
    fn at(self) -> Option<i64> {
        match self {
            Expiry::Never => None,
            Expiry::Past => Some(T0 - DAY),
            Expiry::Future => Some(T0 + 30 * DAY),
        }
    }
}

#[derive(Debug, Clone)]
enum Op {
    Create(usize, Expiry),
    CreateCustom(usize, usize, Expiry),
    Update(usize, usize),
    Renew(usize, usize, Expiry),
    SoftDelete(usize, usize),
    Restore(usize, usize),
    Delete(usize, usize),
    Purge(usize, bool),
    Setting(usize, usize),
    Password(usize),
    Rotate(usize),
    /// Identities on: a new secret for the identity this replica's password opens (a slot).
    SecretAdd(usize),
    /// Identities on: this replica forgets one of the secrets `secretAdd` added (the pick, of
    /// those in the history), wherever sync put it.
    SecretRemove(usize, usize),
    /// The through-rotations run only: this replica's password changed to one of the secrets
    /// `secretAdd` added (the pick), which then is a password of the history.
    PasswordToSlot(usize, usize),
    /// Every clock moves on by this many milliseconds.
    Tick(i64),
    /// Every clock moves on by this many days, more than the 90-day retention: the server
    /// collects the tombstones it noted before (on its pulls after this), replicas drop their
    /// old clean tombstones, and a replica whose checkpoint is past the collector's horizon is
    /// told `expired` and resyncs (SYNC.md 2, FORMAT.md "Retention").
    Away(i64),
    Sync(usize, Fault),
    /// Two replicas sync at once, their requests interleaved one by one (two devices, or a
    /// push that lands between another replica's pull and push).
    SyncPair(usize, usize),
    /// Two tabs of one replica sync at once, their requests interleaved one by one: each
    /// page applies once, and neither loses nor duplicates anything (SYNC.md 9).
    SyncTabs(usize),
    /// A write on a replica (the boxed op, any of the local writes above) made by one tab while
    /// another tab of that replica syncs, after the sync's `n`th request went out: between a
    /// pull and the page it applies, between a push and the dirty marks it clears.
    WriteDuringSync(Box<Op>, usize),
    /// A request sent earlier (by any replica) reaches the server again, late.
    Replay(usize),
    /// The server's database is backed up: an SQLite server's, as a copy of its file (a memory
    /// server's has no file, and nothing happens).
    ServerBackup,
    /// The server's database is lost, and the server comes back restored from the last backup,
    /// or empty without one (SYNC.md 8). The replicas find out on their next pull.
    ServerLost,
}

fn expiry() -> impl Strategy<Value = Expiry> {
    prop_oneof![
        4 => Just(Expiry::Never),
        1 => Just(Expiry::Past),
        2 => Just(Expiry::Future),
    ]
}

fn fault() -> impl Strategy<Value = Fault> {
    prop_oneof![
        2 => Just(Fault::None),
        1 => (0usize..3).prop_map(Fault::Drop),
        1 => (0usize..3).prop_map(Fault::Lose),
        1 => (0usize..3).prop_map(Fault::Duplicate),
    ]
}

/// The operations that write on one replica.
fn write_op() -> impl Strategy<Value = Op> {
    let r = 0usize..3;
    let pick = 0usize..64;
    prop_oneof![
        4 => (r.clone(), expiry()).prop_map(|(r, e)| Op::Create(r, e)),
        3 => (r.clone(), 0..CUSTOM.len(), expiry()).prop_map(|(r, t, e)| Op::CreateCustom(r, t, e)),
        4 => (r.clone(), pick.clone()).prop_map(|(r, p)| Op::Update(r, p)),
        2 => (r.clone(), pick.clone(), expiry()).prop_map(|(r, p, e)| Op::Renew(r, p, e)),
        2 => (r.clone(), pick.clone()).prop_map(|(r, p)| Op::SoftDelete(r, p)),
        2 => (r.clone(), pick.clone()).prop_map(|(r, p)| Op::Restore(r, p)),
        2 => (r.clone(), pick.clone()).prop_map(|(r, p)| Op::Delete(r, p)),
        1 => (r.clone(), any::<bool>()).prop_map(|(r, hard)| Op::Purge(r, hard)),
        1 => (r.clone(), 0..SETTINGS.len()).prop_map(|(r, k)| Op::Setting(r, k)),
        1 => r.clone().prop_map(Op::Password),
        1 => r.clone().prop_map(Op::SecretAdd),
        1 => (r.clone(), pick.clone()).prop_map(|(r, p)| Op::SecretRemove(r, p)),
        1 => (r.clone(), pick.clone()).prop_map(|(r, p)| Op::PasswordToSlot(r, p)),
        1 => r.prop_map(Op::Rotate),
    ]
}

fn op() -> impl Strategy<Value = Op> {
    let r = 0usize..3;
    prop_oneof![
        25 => write_op(),
        2 => (write_op(), 0usize..4).prop_map(|(w, n)| Op::WriteDuringSync(Box::new(w), n)),
        1 => (1i64..120_000).prop_map(Op::Tick),
        1 => (RETENTION_DAYS + 1..2 * RETENTION_DAYS).prop_map(Op::Away),
        2 => (r.clone(), r.clone()).prop_map(|(a, b)| Op::SyncPair(a, b)),
        1 => r.clone().prop_map(Op::SyncTabs),
        8 => (r, fault()).prop_map(|(r, f)| Op::Sync(r, f)),
        1 => (0usize..1_000).prop_map(Op::Replay),
        1 => Just(Op::ServerBackup),
        1 => Just(Op::ServerLost),
    ]
}

/// A replica's clock: hours behind the server's, on time, a little ahead, or hours ahead.
fn skew() -> impl Strategy<Value = i64> {
    prop_oneof![
        Just(-5 * HOUR),
        Just(-2 * HOUR),
        Just(0i64),
        Just(90_000i64),
        Just(4 * 60_000i64),
        Just(3 * HOUR),
    ]
}

#[derive(Debug, Clone)]
struct Case {
    sqlite_server: bool,
    replicas: usize,
    skews: Vec<i64>,
    ops: Vec<Op>,
}

fn case() -> impl Strategy<Value = Case> {
    (
        any::<bool>(),
        2usize..=3,
        proptest::collection::vec(skew(), 3),
        proptest::collection::vec(op(), 5..max_ops()),
    )
        .prop_map(|(sqlite_server, replicas, skews, ops)| Case {
            sqlite_server,
            replicas,
            skews,
            ops,
        })
}

// ---- what the simulation knows (the oracle's record) ----

#[derive(Default)]
struct History {
    identities: bool,
    /// Every password ever set, oldest first.
    passwords: Vec<String>,
    /// Every token any create returned.
    tokens: Vec<String>,
    /// Every plaintext written.
    plaintexts: Vec<String>,
    /// Per record id: the plaintext each value revision wrote.
    values: HashMap<String, BTreeMap<Rev, String>>,
    /// Per record id: what each `expiresAt` / `softDeletedAt` revision set.
    expires: HashMap<String, BTreeMap<Rev, Option<i64>>>,
    soft: HashMap<String, BTreeMap<Rev, Option<i64>>>,
    /// Record ids some replica held a tombstone of.
    deleted: HashSet<String>,
    /// Deleted record ids (above) that some replica still held live when the clocks moved past
    /// the retention ([`Op::Away`]): the server may have dropped the tombstone since, and a
    /// replica's edit of its copy then brings the record back, as SYNC.md 2 allows ("dirty rows
    /// win over a deletion whose tombstone is gone"). The oracle lets only these come back.
    may_return: HashSet<String>,
    /// Whether the server was lost ([`Op::ServerLost`]) in this case.
    server_lost: bool,
    /// Revisions past the server's limit that a sync replaced on their replica (re-stamped, or
    /// lost to another write): no server stores them. [`latest`] also ignores revisions past
    /// the limit now, but after an [`Op::Away`] the limit has moved past them.
    void: HashSet<Rev>,
    /// Per setting: the value each revision set.
    settings: HashMap<String, BTreeMap<Rev, String>>,
    /// Identities off: per record id, the password each seal revision sealed the value with.
    seals: HashMap<String, BTreeMap<Rev, String>>,
    /// Identities on: the vault's identity, and the password each revision of its `tag` row
    /// wraps its key for.
    identity: Option<String>,
    tags: HashMap<String, BTreeMap<Rev, String>>,
    /// Identities on: every secret a `secretAdd` added (a slot of the identity it opened).
    slots: Vec<String>,
    /// Identities on: every added secret a `secretRemove` removed on some replica. Its removal
    /// is final (FORMAT.md "Revisions and the conflict rule"): after healing it opens nothing
    /// anywhere, whatever the others did meanwhile.
    removed: Vec<String>,
    /// (replica, secret) of every `secretRemove` that replica made of a secret in `removed`.
    removed_on: Vec<(usize, String)>,
    /// Secrets of `removed` that opened their remover again after one of its syncs, while no
    /// other secret of the history opened what they opened there: the server refused the
    /// removal, which would have left an identity with no secret (SYNC.md 6), and the replica
    /// took the slot back. A refused removal stays refused: a later write elsewhere that gives
    /// the identity another secret again (a password change that loses no race) does not
    /// remove the slot after all.
    refused: Vec<String>,
    /// (replica, record id) of every record a sync of that replica reported stranded.
    stranded: Vec<(usize, String)>,
    /// Whether some operation retired a key for good (a rotation with identities on, a
    /// `secretRemove`, a password changed to an added secret): only then may a record with a
    /// random token be stranded. A deletion that empties an identity retires nothing (the
    /// replica that wrote under it meanwhile brings it back), nor does a password change.
    retired: bool,
    next: usize,
}

fn note<T: PartialEq + std::fmt::Debug>(
    map: &mut HashMap<String, BTreeMap<Rev, T>>,
    id: &str,
    rev: Rev,
    value: T,
) {
    let revs = map.entry(id.to_owned()).or_default();
    if let Some(seen) = revs.get(&rev) {
        assert_eq!(
            seen, &value,
            "{id}: one revision {rev:?} names two contents"
        );
    } else {
        revs.insert(rev, value);
    }
}

impl History {
    /// Whether `token` is the first record, which keeps the vault's identity alive while the
    /// strict oracle holds (module docs, "Three runs"): never deleted, never expired.
    fn anchored(&self, token: &str) -> bool {
        self.identities && !known_bugs() && token == self.tokens[0]
    }

    fn fresh(&mut self, what: &str) -> String {
        self.next += 1;
        format!("{what}-{}-{:08x}", self.next, rand_u32())
    }

    /// Record every field revision and tombstone a replica holds (after one of its own ops).
    async fn observe(&mut self, node: &Node) {
        for (key, row) in replicated(&*node.store).await {
            match (key, row) {
                (
                    RowKey::Record(id),
                    Row::Record {
                        version: RecordVersion::Live(live),
                        ..
                    },
                ) => {
                    note(&mut self.expires, &id, live.expires_rev, live.expires_at);
                    note(&mut self.soft, &id, live.deleted_rev, live.soft_deleted_at);
                }
                (RowKey::Record(id), _) => {
                    self.deleted.insert(id);
                }
                (
                    RowKey::Meta(key),
                    Row::Meta {
                        version: MetaVersion::Value { rev, value },
                        ..
                    },
                ) if SETTINGS.contains(&key.key.as_str()) => {
                    note(&mut self.settings, &key.key, rev, value);
                }
                _ => {}
            }
        }
    }

    /// After a sync that may have re-stamped `far` (rows of `node` with revisions past `above`):
    /// a register that now holds the same content under a revision within the limit is the
    /// same write, re-stamped; what the history knew of the old revision holds for the new one.
    /// (A re-stamped write that then lost to another is simply gone from `node`: [`latest`]
    /// ignores revisions no server could have stored.)
    async fn restamped(&mut self, node: &Node, far: &[Row], above: u64) {
        let keys: Vec<RowKey> = far.iter().map(Row::key).collect();
        let now = node.store.versions(&keys).await.unwrap();
        let moved = |old: Rev, new: Rev| old.wall_ms() > above && new.wall_ms() <= above;
        for (old, new) in far.iter().zip(&now) {
            let held: Vec<Rev> = new.iter().flat_map(|n| revs_of(&n.row)).collect();
            self.void.extend(
                revs_of(old)
                    .into_iter()
                    .filter(|rev| rev.wall_ms() > above && !held.contains(rev)),
            );
        }
        for (old, new) in far.iter().zip(now) {
            let Some(new) = new else { continue };
            match (old, new.row) {
                (
                    Row::Record {
                        id,
                        version: RecordVersion::Live(a),
                    },
                    Row::Record {
                        version: RecordVersion::Live(b),
                        ..
                    },
                ) => {
                    if a.value == b.value && moved(a.value_rev, b.value_rev) {
                        alias(&mut self.values, id, a.value_rev, b.value_rev);
                    }
                    if a.value == b.value && moved(a.seal_rev, b.seal_rev) {
                        alias(&mut self.seals, id, a.seal_rev, b.seal_rev);
                    }
                    if a.expires_at == b.expires_at && moved(a.expires_rev, b.expires_rev) {
                        alias(&mut self.expires, id, a.expires_rev, b.expires_rev);
                    }
                    if a.soft_deleted_at == b.soft_deleted_at && moved(a.deleted_rev, b.deleted_rev)
                    {
                        alias(&mut self.soft, id, a.deleted_rev, b.deleted_rev);
                    }
                }
                (
                    Row::Meta {
                        key,
                        version: MetaVersion::Value { rev: a, value: x },
                    },
                    Row::Meta {
                        version: MetaVersion::Value { rev: b, value: y },
                        ..
                    },
                ) if *x == y && moved(*a, b) => {
                    if SETTINGS.contains(&key.key.as_str()) {
                        alias(&mut self.settings, &key.key, *a, b);
                    } else if key.object_type == object_type::IDENTITY && key.key == "tag" {
                        alias(&mut self.tags, &key.object_id, *a, b);
                    }
                }
                _ => {}
            }
        }
    }

    /// A sync run beside another (`beside`, for the message), where no fault is tolerated:
    /// remember what it reported stranded.
    async fn synced_beside(
        &mut self,
        i: usize,
        node: &Node,
        result: Result<SyncReport>,
        beside: &str,
    ) {
        if trace() {
            eprintln!("  -> {} ({beside}): {result:?}", node.name);
        }
        match result {
            Ok(report) => self.synced(i, node, &report).await,
            Err(e) => panic!("sync of {} {beside}: {:?}: {e}", node.name, e.code()),
        }
    }

    /// After a successful sync of replica `i`: remember the records it reported stranded, and
    /// the removals of its secrets the server refused.
    async fn synced(&mut self, i: usize, node: &Node, report: &SyncReport) {
        self.stranded(i, node, report).await;
        self.refusals(i, node).await;
    }

    /// A secret `i` removed that opens there again came back with the sync (nothing else
    /// writes a slot back): the server refused its removal, which FORMAT.md ("Secret slots")
    /// allows only for the last secret of an identity, so no other secret of the history may
    /// open what it opens there.
    async fn refusals(&mut self, i: usize, node: &Node) {
        let pending: Vec<String> = (self.removed_on.iter())
            .filter(|(remover, secret)| *remover == i && !self.refused.contains(secret))
            .map(|(_, secret)| secret.clone())
            .collect();
        if pending.is_empty() {
            return;
        }
        let tokens: Vec<String> = replicated(&*node.store)
            .await
            .into_values()
            .filter_map(|row| match row {
                Row::Record {
                    version: RecordVersion::Live(r),
                    ..
                } if readable(r.soft_deleted_at, r.expires_at, node) => Some(r.token),
                _ => None,
            })
            .collect();
        for secret in pending {
            if self.refused.contains(&secret) {
                continue;
            }
            node.vault.lock();
            let opens = node.vault.unlock(&Secret::password(secret.as_str())).await;
            node.vault.lock();
            if matches!(opens, Ok(true)) && sole_opener(node, &secret, &tokens, self).await {
                if trace() {
                    eprintln!(
                        "  {}: the server refused the removal of {secret}",
                        node.name
                    );
                }
                self.refused.push(secret);
            }
        }
    }

    /// Remember the records a sync reported stranded.
    async fn stranded(&mut self, i: usize, node: &Node, report: &SyncReport) {
        for token in &report.stranded {
            let held = node
                .store
                .records_by_tokens(std::slice::from_ref(token))
                .await
                .unwrap()
                .pop()
                .flatten()
                .unwrap_or_else(|| panic!("{}: stranded {token} is not kept there", node.name));
            if !self.stranded.contains(&(i, held.id.clone())) {
                self.stranded.push((i, held.id));
            }
        }
    }

    /// Record the plaintext the live record holding `token` on `node` was just given.
    async fn wrote(&mut self, node: &Node, token: &str, plaintext: &str, password: &str) {
        let record = node
            .vault
            .record_find_by_token(token)
            .await
            .unwrap()
            .expect("the record just written");
        let found = node
            .store
            .versions(&[RowKey::Record(record.id.clone())])
            .await
            .unwrap()
            .pop()
            .flatten()
            .expect("its row");
        let Row::Record {
            version: RecordVersion::Live(live),
            ..
        } = found.row
        else {
            panic!("{}: the record just written is not live", node.name);
        };
        note(
            &mut self.values,
            &record.id,
            live.value_rev,
            plaintext.to_owned(),
        );
        if !self.identities {
            note(
                &mut self.seals,
                &record.id,
                live.seal_rev,
                password.to_owned(),
            );
        }
        if self.identities && self.identity.is_none() {
            self.identity = live.password_id.clone();
            self.rewrapped(node, password).await;
        }
    }

    /// After `password` was set on `node`: what sealed with it there now.
    async fn rewrapped(&mut self, node: &Node, password: &str) {
        for (key, row) in replicated(&*node.store).await {
            match (key, row) {
                (
                    RowKey::Record(id),
                    Row::Record {
                        version: RecordVersion::Live(live),
                        ..
                    },
                ) if !self.identities => {
                    // Re-sealed by the rekey: a seal revision not seen before.
                    let seals = self.seals.entry(id).or_default();
                    seals
                        .entry(live.seal_rev)
                        .or_insert_with(|| password.to_owned());
                }
                (
                    RowKey::Meta(key),
                    Row::Meta {
                        version: MetaVersion::Value { rev, .. },
                        ..
                    },
                ) if key.object_type == object_type::IDENTITY
                    && Some(&key.object_id) == self.identity.as_ref()
                    && key.key == "tag" =>
                {
                    let tags = self.tags.entry(key.object_id).or_default();
                    tags.entry(rev).or_insert_with(|| password.to_owned());
                }
                _ => {}
            }
        }
    }

    /// The password the history implies for a live record: identities on, the one the winning
    /// re-wrap of the vault's identity set; off, the one its winning seal used.
    fn implied(&self, rows: &BTreeMap<RowKey, Row>, id: &str, record: &LiveRecord) -> String {
        if !self.identities {
            return self
                .seals
                .get(id)
                .and_then(|s| s.get(&record.seal_rev))
                .cloned()
                .unwrap_or_else(|| {
                    panic!(
                        "{id}: seal revision {:?} was never seen written",
                        record.seal_rev
                    )
                });
        }
        let identity = self.identity.as_ref().expect("the vault's identity");
        assert_eq!(
            record.password_id.as_ref(),
            Some(identity),
            "{id} is sealed under another identity than the vault's only one"
        );
        let key = RowKey::Meta(MetaKey::new(object_type::IDENTITY, identity, "tag"));
        let Some(Row::Meta {
            version: MetaVersion::Value { rev, .. },
            ..
        }) = rows.get(&key)
        else {
            panic!("the vault's identity is gone from the server");
        };
        self.tags[identity]
            .get(rev)
            .cloned()
            .unwrap_or_else(|| panic!("the identity's tag revision {rev:?} was never seen written"))
    }
}

fn rand_u32() -> u32 {
    let mut bytes = [0u8; 4];
    getrandom::fill(&mut bytes).unwrap();
    u32::from_le_bytes(bytes)
}

/// The password that opens this replica's vault now, newest first; the newest when nothing
/// answers (an empty vault).
async fn secret_for(node: &Node, history: &History) -> String {
    node.vault.lock();
    for p in history.passwords.iter().rev() {
        if let Ok(true) = node.vault.unlock(&Secret::password(p.as_str())).await {
            return p.clone();
        }
    }
    history.passwords.last().unwrap().clone()
}

/// A local op may refuse (the token is gone here, taken, the secret does not open it…); it may
/// not fail otherwise.
fn tolerated<T>(what: &str, node: &Node, result: Result<T>) -> Option<T> {
    match result {
        Ok(v) => Some(v),
        Err(e)
            if matches!(
                e.code(),
                ErrorCode::RecordNotFound
                    | ErrorCode::TokenExists
                    | ErrorCode::InvalidPassword
                    | ErrorCode::IdentityNotFound
            ) =>
        {
            if trace() {
                eprintln!("  {what} on {}: {:?}", node.name, e.code());
            }
            None
        }
        Err(e) => panic!("{what} on {}: unexpected {:?}: {e}", node.name, e.code()),
    }
}

/// The replica an operation writes on or syncs, if it is one replica's.
fn replica_of(op: &Op) -> Option<usize> {
    match op {
        Op::Create(r, _)
        | Op::CreateCustom(r, _, _)
        | Op::Update(r, _)
        | Op::Renew(r, _, _)
        | Op::SoftDelete(r, _)
        | Op::Restore(r, _)
        | Op::Delete(r, _)
        | Op::Purge(r, _)
        | Op::Setting(r, _)
        | Op::Password(r)
        | Op::Rotate(r)
        | Op::SecretAdd(r)
        | Op::SecretRemove(r, _)
        | Op::PasswordToSlot(r, _)
        | Op::Sync(r, _) => Some(*r),
        Op::Tick(_)
        | Op::Away(_)
        | Op::Replay(_)
        | Op::SyncPair(..)
        | Op::SyncTabs(_)
        | Op::WriteDuringSync(..)
        | Op::ServerBackup
        | Op::ServerLost => None,
    }
}

async fn run_op(op: &Op, nodes: &[Node], wire: &Wire, history: &mut History) {
    if trace() {
        eprintln!("op {op:?}");
    }
    let n = nodes.len();
    let pick = |p: usize| -> Option<String> {
        (!history.tokens.is_empty()).then(|| history.tokens[p % history.tokens.len()].clone())
    };
    let target = replica_of(op).map(|r| &nodes[r % n]);
    match (op, target) {
        (Op::Create(_, e), Some(node)) => {
            let secret = secret_for(node, history).await;
            let value = history.fresh("plain");
            let options = CreateOptions {
                expires_at: e.at(),
                ..CreateOptions::default()
            };
            let created = node
                .vault
                .token_create(&value, &Secret::password(secret.as_str()), &options)
                .await;
            if let Some(token) = tolerated("create", node, created) {
                history.plaintexts.push(value.clone());
                history.wrote(node, &token, &value, &secret).await;
                history.tokens.push(token);
            }
        }
        (Op::CreateCustom(_, t, e), Some(node)) => {
            let secret = secret_for(node, history).await;
            let value = history.fresh("plain");
            let created = node
                .vault
                .token_create_custom(
                    CUSTOM[*t],
                    &value,
                    &Secret::password(secret.as_str()),
                    e.at(),
                )
                .await;
            if tolerated("custom create", node, created).is_some() {
                history.plaintexts.push(value.clone());
                history.wrote(node, CUSTOM[*t], &value, &secret).await;
                history.tokens.push(CUSTOM[*t].to_owned());
            }
        }
        (Op::Update(_, p), Some(node)) => {
            let Some(token) = pick(*p) else { return };
            let secret = secret_for(node, history).await;
            let value = history.fresh("plain");
            let updated = node
                .vault
                .token_update(&token, &value, &Secret::password(secret.as_str()))
                .await;
            if tolerated("update", node, updated).is_some() {
                history.plaintexts.push(value.clone());
                history.wrote(node, &token, &value, &secret).await;
            }
        }
        (Op::Renew(_, p, e), Some(node)) => {
            let Some(token) = pick(*p) else { return };
            // Never an expiry for the anchor: a month ahead is past once months pass.
            if history.anchored(&token) && !matches!(e, Expiry::Never) {
                return;
            }
            tolerated("renew", node, node.vault.token_renew(&token, e.at()).await);
        }
        (Op::SoftDelete(_, p), Some(node)) => {
            let Some(token) = pick(*p) else { return };
            tolerated(
                "soft delete",
                node,
                node.vault.token_soft_delete(&token).await,
            );
        }
        (Op::Restore(_, p), Some(node)) => {
            let Some(token) = pick(*p) else { return };
            tolerated("restore", node, node.vault.token_restore(&token).await);
        }
        (Op::Delete(_, p), Some(node)) => {
            let Some(token) = pick(*p) else { return };
            if history.anchored(&token) {
                // The first record keeps the vault's identity alive (module docs, "Three runs").
                return;
            }
            tolerated("delete", node, node.vault.token_delete(&token).await);
        }
        (Op::Purge(_, hard), Some(node)) => {
            let purged = if *hard {
                node.vault.tokens_expired_delete().await
            } else {
                node.vault.tokens_expired_soft_delete().await
            };
            tolerated("purge", node, purged);
        }
        (Op::Setting(_, k), Some(node)) => {
            let value = history.fresh("setting");
            tolerated(
                "setting",
                node,
                node.vault.set_vault_setting(SETTINGS[*k], &value).await,
            );
        }
        (Op::Password(_) | Op::Rotate(_), Some(node)) => {
            let old = secret_for(node, history).await;
            let new = history.fresh("password");
            let options = RekeyOptions {
                rotate: matches!(op, Op::Rotate(_)) && (!history.identities || known_bugs()),
                ..RekeyOptions::default()
            };
            let rekeyed = node
                .vault
                .bulk_rekey(
                    &Secret::password(old.as_str()),
                    &Secret::password(new.as_str()),
                    &options,
                )
                .await;
            if tolerated("rekey", node, rekeyed).is_some() {
                history.retired |= options.rotate && history.identities;
                history.rewrapped(node, &new).await;
                history.passwords.push(new);
            }
        }
        (Op::SecretAdd(_), Some(node)) => {
            if !history.identities {
                return;
            }
            let existing = secret_for(node, history).await;
            let added = history.fresh("slot");
            let result = node
                .vault
                .secret_add(
                    &Secret::password(existing.as_str()),
                    &Secret::password(added.as_str()),
                )
                .await;
            if tolerated("secretAdd", node, result).is_some() {
                history.slots.push(added);
            }
        }
        (Op::SecretRemove(r, p), Some(node)) => {
            // Through rotations, a password too: its identity's own rows become vacant while
            // added secrets open it.
            let mut pool = history.slots.clone();
            if known_bugs() {
                pool.extend(history.passwords.iter().cloned());
            }
            if pool.is_empty() {
                return;
            }
            let secret = pool[p % pool.len()].clone();
            let result = node
                .vault
                .secret_remove(&Secret::password(secret.as_str()))
                .await;
            // Refused when it is the last secret of an identity with records (a password now,
            // or what sync left it), and then nothing changed.
            if matches!(&result, Err(e) if e.code() == ErrorCode::InvalidArgument) {
                return;
            }
            if tolerated("secretRemove", node, result).is_some() {
                history.retired = true;
                if !history.passwords.contains(&secret) {
                    if !history.removed.contains(&secret) {
                        history.removed.push(secret.clone());
                    }
                    // Removed again: a refusal of an earlier removal says nothing of this one.
                    history.refused.retain(|s| *s != secret);
                    history.removed_on.push((r % n, secret));
                }
            }
        }
        (Op::PasswordToSlot(_, p), Some(node)) => {
            // The strict oracle's model (one identity whose tag revisions name passwords) leaves
            // this out; through rotations, every secret only has to open alike everywhere.
            if !history.identities || !known_bugs() || history.slots.is_empty() {
                return;
            }
            let old = secret_for(node, history).await;
            let new = history.slots[p % history.slots.len()].clone();
            if old == new {
                return;
            }
            let rekeyed = node
                .vault
                .bulk_rekey(
                    &Secret::password(old.as_str()),
                    &Secret::password(new.as_str()),
                    &RekeyOptions::default(),
                )
                .await;
            if tolerated("rekey to an added secret", node, rekeyed).is_some() {
                history.retired = true;
                if trace() {
                    eprintln!("  {} now opens with {new}", node.name);
                }
                // A password now: what removed it before no longer says what it opens.
                history.removed.retain(|s| *s != new);
                history.removed_on.retain(|(_, s)| *s != new);
                history.refused.retain(|s| *s != new);
                if !history.passwords.contains(&new) {
                    history.passwords.push(new);
                }
            }
        }
        (Op::Sync(r, fault), Some(node)) => {
            let result = wire.sync_noting(node, *fault, history).await;
            if trace() {
                eprintln!("  -> {result:?}");
            }
            match result {
                Ok(report) => history.synced(r % n, node, &report).await,
                Err(e) if e.code() == ErrorCode::Storage && *fault != Fault::None => {}
                Err(e) => panic!("sync of {} ({fault:?}): {:?}: {e}", node.name, e.code()),
            }
            return;
        }
        (Op::SyncPair(a, b), _) if a % n != b % n => {
            let pair = [a % n, b % n];
            let above = restamp_above(wire.server_clock.now_ms());
            let mut far = Vec::new();
            for &i in &pair {
                far.push(far_dirty_rows(&nodes[i], above).await);
            }
            let turns = Turns(wire);
            let (first, second) = futures::future::join(
                nodes[pair[0]].vault.sync(&turns, None),
                nodes[pair[1]].vault.sync(&turns, None),
            )
            .await;
            for ((i, far), result) in pair.into_iter().zip(far).zip([first, second]) {
                let node = &nodes[i];
                if !far.is_empty() {
                    history.restamped(node, &far, above).await;
                }
                history
                    .synced_beside(i, node, result, "alongside another")
                    .await;
                history.observe(node).await;
            }
            return;
        }
        (Op::SyncPair(..), _) => return,
        (Op::WriteDuringSync(write, after), _) => {
            let i = replica_of(write).unwrap_or(0) % n;
            let node = &nodes[i];
            // A clock too far ahead: the sync would re-stamp a write made during it, and the
            // oracle follows re-stamps only of rows read before the sync. One after the other.
            let ahead = node.clock.now_ms() > wire.server_clock.now_ms() + MAX_FUTURE_MS;
            if ahead {
                Box::pin(run_op(write, nodes, wire, history)).await;
            }
            let above = restamp_above(wire.server_clock.now_ms());
            let far = far_dirty_rows(node, above).await;
            let turns = Turns(wire);
            let sync = node.tab.sync(&turns, None);
            let result = if ahead {
                sync.await
            } else {
                let write = async {
                    for _ in 0..*after {
                        common::yield_once().await;
                    }
                    Box::pin(run_op(write, nodes, wire, history)).await;
                };
                futures::future::join(sync, write).await.0
            };
            if !far.is_empty() {
                history.restamped(node, &far, above).await;
            }
            // The write may have come after the sync ended, and deleted a record the sync
            // reported stranded.
            let result = match result {
                Ok(mut report) => {
                    let held = node.store.records_by_tokens(&report.stranded).await;
                    let mut held = held.unwrap().into_iter();
                    report.stranded.retain(|_| held.next().flatten().is_some());
                    Ok(report)
                }
                failed => failed,
            };
            history
                .synced_beside(i, node, result, "while its other tab wrote")
                .await;
            history.observe(node).await;
            return;
        }
        (Op::SyncTabs(r), _) => {
            let i = r % n;
            let node = &nodes[i];
            let above = restamp_above(wire.server_clock.now_ms());
            let far = far_dirty_rows(node, above).await;
            let turns = Turns(wire);
            let (first, second) =
                futures::future::join(node.vault.sync(&turns, None), node.tab.sync(&turns, None))
                    .await;
            if !far.is_empty() {
                history.restamped(node, &far, above).await;
            }
            for result in [first, second] {
                history
                    .synced_beside(i, node, result, "alongside its tab")
                    .await;
            }
            history.observe(node).await;
            return;
        }
        (Op::Tick(ms), _) => {
            for node in nodes {
                node.clock.advance(*ms);
            }
            wire.server_clock.advance(*ms);
            return;
        }
        (Op::Away(days), _) => {
            // A server that lost what it had may hold a record live whose deletion only a
            // replica's clean tombstone still knows, not pushed back yet: once months pass,
            // that tombstone is dropped (and merges as gone) before it is.
            let server = wire.server();
            let stores = nodes.iter().map(|n| &*n.store);
            let stores = stores.chain(history.server_lost.then_some(&*server.store));
            for store in stores {
                for (key, row) in replicated(store).await {
                    if let (
                        RowKey::Record(id),
                        Row::Record {
                            version: RecordVersion::Live(_),
                            ..
                        },
                    ) = (key, row)
                        && history.deleted.contains(&id)
                    {
                        history.may_return.insert(id);
                    }
                }
            }
            for node in nodes {
                node.clock.advance(days * DAY);
            }
            wire.server_clock.advance(days * DAY);
            // A server is not restored from a backup older than the retention: the replicas
            // have dropped the tombstones of what was deleted since, and it would come back.
            *wire.backup.lock().unwrap() = None;
            // A late duplicate arrives within the retention, not after it: a request replayed
            // from before could carry a record whose tombstone the server has dropped since.
            wire.sent.lock().unwrap().clear();
            return;
        }
        (Op::Replay(i), _) => {
            let body = {
                let sent = wire.sent.lock().unwrap();
                if sent.is_empty() {
                    return;
                }
                sent[i % sent.len()].clone()
            };
            let (status, response) = wire.server().vault.sync_handle(body.as_bytes()).await;
            assert_eq!(status, 200, "a replayed request: {response}");
            return;
        }
        (Op::ServerBackup, _) => {
            if let Some(db) = &wire.server().sqlite {
                let path = wire.dir.join(format!("{}.db", history.fresh("backup")));
                db.with(|c| c.execute_batch(&format!("VACUUM INTO '{}'", path.display())))
                    .unwrap();
                *wire.backup.lock().unwrap() = Some(path);
            }
            return;
        }
        // Not through rotations: there a lost server can take a rotation back (a known gap,
        // README "A wiped or restored server"), and the stricter runs check the rest.
        (Op::ServerLost, _) if known_bugs() => {}
        (Op::ServerLost, _) => {
            let clock = wire.server_clock.clone();
            let backup = wire.backup.lock().unwrap().clone();
            let server = match backup {
                Some(path) => {
                    // A copy: the same backup may be restored again later.
                    let copy = wire.dir.join(format!("{}.db", history.fresh("restored")));
                    std::fs::copy(&path, &copy).unwrap();
                    let db = Arc::new(Sqlite::file(&copy));
                    node_on("server", db, history.identities, clock).await
                }
                None => {
                    let sqlite = wire.server().sqlite.is_some();
                    node("server", sqlite, history.identities, clock).await
                }
            };
            if trace() {
                eprintln!(
                    "  the server comes back with {} rows",
                    replicated(&*server.store).await.len()
                );
            }
            // A deletion only the lost server still held (its replicas had dropped their
            // tombstones, as they do 90 days after `deletedAt`, at once for one pushed that
            // late) is lost with it: a replica, or the backup, that holds the record live
            // brings it back. A tombstone within the retention goes back with its replica.
            let mut live = HashSet::new();
            let mut gone = HashSet::new();
            for (store, now) in nodes
                .iter()
                .map(|n| (&*n.store, n.clock.now_ms()))
                .chain([(&*server.store, server.clock.now_ms())])
            {
                for (key, row) in replicated(store).await {
                    match (key, row) {
                        (
                            RowKey::Record(id),
                            Row::Record {
                                version: RecordVersion::Live(_),
                                ..
                            },
                        ) => {
                            live.insert(id);
                        }
                        (
                            RowKey::Record(id),
                            Row::Record {
                                version: RecordVersion::Gone(t),
                                ..
                            },
                        ) if t.deleted_at > now - RETENTION_DAYS * DAY => {
                            gone.insert(id);
                        }
                        _ => {}
                    }
                }
            }
            for id in &history.deleted {
                if live.contains(id) && !gone.contains(id) {
                    history.may_return.insert(id.clone());
                }
            }
            *wire.server.lock().unwrap() = Arc::new(server);
            history.server_lost = true;
            // Requests sent to the server that was lost are not replayed to the new one.
            wire.sent.lock().unwrap().clear();
            return;
        }
        _ => unreachable!(),
    }
    if let Some(node) = target {
        history.observe(node).await;
    }
}

// ---- healing and the checks ----

/// Every replica syncs, twice, in turn, without a fault. Then each record any sync reported
/// `stranded` (now or while the operations ran) that its replica still holds otherwise than the
/// server is checked readable there and deleted there, as its user would, and healing starts over.
async fn heal(nodes: &[Node], server: &Node, wire: &Wire, history: &mut History) {
    for _round in 0..4 {
        // Twice in turn, then on while a pass still moves rows (a record stranded because its
        // custom token was taken may push only once a later pass brought the holder's deletion).
        let mut pass = 0;
        let mut last: Vec<Vec<String>> = vec![Vec::new(); nodes.len()];
        loop {
            pass += 1;
            let mut moved = false;
            for (i, node) in nodes.iter().enumerate() {
                let report = wire
                    .sync_noting(node, Fault::None, history)
                    .await
                    .unwrap_or_else(|e| panic!("healing sync of {}: {e}", node.name));
                if trace() {
                    eprintln!("heal: {} {report:?}", node.name);
                }
                moved |= report.pulled > 0 || report.pushed > 0;
                history.synced(i, node, &report).await;
                last[i] = report.stranded;
            }
            if pass >= 2 && !moved {
                break;
            }
            assert!(pass < 6, "syncing kept moving rows after {pass} passes");
        }
        // `stranded` is what a replica keeps only there, on every sync while it does: not only
        // on the sync that stranded it, which may have failed after doing so.
        let on_server = replicated(&*server.store).await;
        for (node, reported) in nodes.iter().zip(&last) {
            let kept: BTreeSet<String> = replicated(&*node.store)
                .await
                .into_iter()
                .filter_map(|(key, row)| match &row {
                    Row::Record {
                        version: RecordVersion::Live(live),
                        ..
                    } if on_server.get(&key) != Some(&row) => Some(live.token.clone()),
                    _ => None,
                })
                .collect();
            assert_eq!(
                reported.iter().cloned().collect::<BTreeSet<String>>(),
                kept,
                "{}: the last sync's stranded list is not what only this replica holds",
                node.name
            );
        }
        let mut pending = Vec::new();
        for (i, id) in &history.stranded {
            let key = [RowKey::Record(id.clone())];
            let here = nodes[*i]
                .store
                .versions(&key)
                .await
                .unwrap()
                .pop()
                .flatten();
            let there = server.store.versions(&key).await.unwrap().pop().flatten();
            if let Some(here) = here
                && matches!(
                    here.row,
                    Row::Record {
                        version: RecordVersion::Live(_),
                        ..
                    }
                )
                && there.map(|s| s.row) != Some(here.row.clone())
            {
                pending.push((*i, id.clone(), here.row));
            }
        }
        if pending.is_empty() {
            return;
        }
        for (i, id, row) in pending {
            let node = &nodes[i];
            let Row::Record {
                version: RecordVersion::Live(record),
                ..
            } = row
            else {
                unreachable!()
            };
            assert!(
                history.retired || CUSTOM.contains(&record.token.as_str()),
                "{}: {} is stranded, but no key was retired and its token is random",
                node.name,
                record.token
            );
            // The rows of both sides, to tell why the record is stranded.
            if trace() {
                eprintln!("  stranded {id} on {}: {record:?}", node.name);
                for (k, v) in replicated(&*node.store).await {
                    eprintln!("  {} {k:?} = {v:?}", node.name);
                }
                for (k, v) in replicated(&*server.store).await {
                    eprintln!("  server {k:?} = {v:?}");
                }
            }
            if readable(record.soft_deleted_at, record.expires_at, node) {
                assert!(
                    opens_with_any(node, &record.token, history).await.is_some(),
                    "{}: stranded {} does not open with any password",
                    node.name,
                    record.token
                );
            }
            node.vault.record_delete_by_id(&id).await.unwrap();
            history.observe(node).await;
        }
    }
    panic!("healing did not end: records kept being stranded");
}

/// Whether `token_read` may give a record's value (not soft-deleted, not expired here).
fn readable(soft_deleted_at: Option<i64>, expires_at: Option<i64>, node: &Node) -> bool {
    use vaultstore_wasm::platform::Clock;
    soft_deleted_at.is_none() && expires_at.is_none_or(|at| at > node.clock.now_ms())
}

/// The newest password of the history that opens `token` here (keys dropped first), and what it
/// gives.
async fn opens_with_any(node: &Node, token: &str, history: &History) -> Option<(String, String)> {
    // A password, or a secret `secretAdd` added and no `secretRemove` removed: a password change
    // may lose to a concurrent change that removed it while an added secret also opened the
    // identity. Last, a removed one: the server refuses a removal that would leave an identity
    // without a secret (two replicas each removed one of its last two), and the secret stays;
    // the secrets check below holds it to that.
    let (kept, removed): (Vec<&String>, Vec<&String>) = history
        .slots
        .iter()
        .partition(|s| !history.removed.contains(s));
    for p in history.passwords.iter().rev().chain(kept).chain(removed) {
        node.vault.lock();
        if let Ok(value) = node
            .vault
            .token_read(token, &Secret::password(p.as_str()))
            .await
        {
            return Some((p.clone(), value));
        }
    }
    None
}

/// Whether `secret` opens only records no other secret of the history opens (on `node`, of the
/// server's live `tokens`): what a removal refused as an identity's last secret leaves.
async fn sole_opener(node: &Node, secret: &str, tokens: &[String], history: &History) -> bool {
    for token in tokens {
        node.vault.lock();
        if node
            .vault
            .token_read(token, &Secret::password(secret))
            .await
            .is_err()
        {
            continue;
        }
        for other in history.passwords.iter().chain(&history.slots) {
            node.vault.lock();
            if other != secret
                && node
                    .vault
                    .token_read(token, &Secret::password(other.as_str()))
                    .await
                    .is_ok()
            {
                return false;
            }
        }
    }
    true
}

/// `rows` without the tombstones older than the retention at `now` (server time; with a margin
/// for the replicas' clocks): a replica drops its own clean ones by age, the server those its
/// collector noted 90 days before, so after an [`Op::Away`] either may still hold one the other
/// has dropped. Both hold no such record; SYNC.md 1 compares records, identities and settings.
fn unexpired(rows: &BTreeMap<RowKey, Row>, now: i64) -> BTreeMap<RowKey, Row> {
    let before = now - RETENTION_DAYS * DAY + 6 * HOUR;
    rows.iter()
        .filter(|(_, row)| {
            let deleted_at = match row {
                Row::Record {
                    version: RecordVersion::Gone(tombstone),
                    ..
                } => tombstone.deleted_at,
                Row::Meta {
                    version: MetaVersion::Gone { deleted_at, .. },
                    ..
                } => *deleted_at,
                _ => return true,
            };
            deleted_at >= before
        })
        .map(|(k, row)| (k.clone(), row.clone()))
        .collect()
}

/// The content the greatest revision of `revs` wrote, checked against the server's revision.
/// Revisions past `limit` (a clock hours ahead) no server stored: their writes were re-stamped
/// (see [`History::restamped`]) and count under their new revisions.
fn latest<'a, T>(
    revs: Option<&'a BTreeMap<Rev, T>>,
    at: Rev,
    what: &str,
    (limit, void): (u64, &HashSet<Rev>),
) -> &'a T {
    let revs = revs.unwrap_or_else(|| panic!("{what}: no write of it was seen"));
    let (max, content) = revs
        .iter()
        .rfind(|(rev, _)| rev.wall_ms() <= limit && !void.contains(rev))
        .unwrap_or_else(|| panic!("{what}: every write seen is dated past the server's limit"));
    assert_eq!(
        *max, at,
        "{what}: the server holds revision {at:?}, the latest write seen was {max:?} (lost, or from nowhere)"
    );
    content
}

async fn check(nodes: &[Node], server: &Node, history: &History) {
    let limit = u64::try_from(server.clock.now_ms() + MAX_FUTURE_MS).unwrap();
    let storable = (limit, &history.void);
    // 1. Convergence.
    let rows = replicated(&*server.store).await;
    let kept = unexpired(&rows, server.clock.now_ms());
    for node in nodes {
        let theirs = unexpired(&replicated(&*node.store).await, server.clock.now_ms());
        if theirs != kept {
            let rows = &kept;
            let differ: Vec<&RowKey> = rows
                .keys()
                .chain(theirs.keys())
                .filter(|k| rows.get(k) != theirs.get(k))
                .collect();
            let detail: Vec<String> = differ
                .iter()
                .map(|k| format!("{k:?}: server {:?} / here {:?}", rows.get(k), theirs.get(k)))
                .collect();
            panic!("{} differs from the server: {detail:#?}", node.name);
        }
    }
    // 2 and 3.
    let mut live: HashMap<String, LiveRecord> = HashMap::new();
    for row in rows.values() {
        match row {
            Row::Record {
                id,
                version: RecordVersion::Live(record),
            } => {
                let returned = history.deleted.contains(id);
                assert!(
                    !returned || history.may_return.contains(id),
                    "record {id} ({}) was deleted and is live again",
                    record.token
                );
                live.insert(id.clone(), record.clone());
                if returned {
                    // The replica that kept it wrote it back as it held it, with the revisions
                    // it had; what others wrote to it before it was deleted is gone with it.
                    continue;
                }
                let value = latest(history.values.get(id), record.value_rev, "value", storable);
                let _ = value;
                assert_eq!(
                    latest(
                        history.expires.get(id),
                        record.expires_rev,
                        "expiresAt",
                        storable
                    ),
                    &record.expires_at,
                    "{id}: expiresAt"
                );
                assert_eq!(
                    latest(
                        history.soft.get(id),
                        record.deleted_rev,
                        "softDeletedAt",
                        storable
                    ),
                    &record.soft_deleted_at,
                    "{id}: softDeletedAt"
                );
            }
            Row::Meta {
                key,
                version: MetaVersion::Value { rev, value },
            } if SETTINGS.contains(&key.key.as_str()) => {
                assert_eq!(
                    latest(history.settings.get(&key.key), *rev, &key.key, storable),
                    value
                );
            }
            _ => {}
        }
    }
    for id in history.values.keys() {
        assert!(
            history.deleted.contains(id) || live.contains_key(id),
            "record {id} was created, never deleted, and is not on the server"
        );
    }
    for key in history.settings.keys() {
        assert!(
            rows.keys()
                .any(|k| matches!(k, RowKey::Meta(m) if &m.key == key)),
            "setting {key} was set and is not on the server"
        );
    }
    // 4. Secrets.
    for (id, record) in &live {
        let expected = &history.values[id][&record.value_rev];
        let exact = !known_bugs();
        let password = if exact {
            history.implied(&rows, id, record)
        } else {
            String::new()
        };
        let mut opened_with: Option<String> = None;
        for node in nodes {
            if !readable(record.soft_deleted_at, record.expires_at, node) {
                continue;
            }
            let p = match &opened_with {
                Some(p) => p.clone(),
                None if exact => password.clone(),
                None => {
                    opens_with_any(node, &record.token, history)
                        .await
                        .unwrap_or_else(|| {
                            panic!("{}: {} opens with no password", node.name, record.token)
                        })
                        .0
                }
            };
            node.vault.lock();
            let value = node
                .vault
                .token_read(&record.token, &Secret::password(p.as_str()))
                .await
                .unwrap_or_else(|e| panic!("{}: {} with {p}: {e}", node.name, record.token));
            assert_eq!(&value, expected, "{}: {}", node.name, record.token);
            opened_with = Some(p);
        }
    }
    // With identities on, the vault has one password, the one the history implies; every
    // other password ever set is refused on every replica.
    if history.identities && !known_bugs() {
        let identity = history.identity.as_ref().expect("the vault's identity");
        let tag = RowKey::Meta(MetaKey::new(object_type::IDENTITY, identity, "tag"));
        let Some(Row::Meta {
            version: MetaVersion::Value { rev, .. },
            ..
        }) = rows.get(&tag)
        else {
            panic!("the vault's identity is gone from the server");
        };
        let current = &history.tags[identity][rev];
        for node in nodes {
            for p in &history.passwords {
                node.vault.lock();
                let unlocked = node.vault.unlock(&Secret::password(p.as_str())).await;
                if p == current {
                    assert!(
                        matches!(unlocked, Ok(true)),
                        "{}: {p}: {unlocked:?}",
                        node.name
                    );
                } else {
                    assert_eq!(
                        unlocked.map_err(|e| e.code()),
                        Err(ErrorCode::InvalidPassword),
                        "{}: an old password, {p}",
                        node.name
                    );
                }
            }
        }
    }
    // Secret slots: each goes with its identity (SYNC.md 7), so no live slot names an identity
    // the server no longer holds, and an added secret opens the same on every replica: its
    // identity (always, in the strict run, whose identity is never removed), or nothing.
    // Without the server removing a slot whose identity another replica removed, the
    // through-rotations run fails here in a few cases of 200.
    for row in rows.values() {
        if let Row::Meta {
            key,
            version: MetaVersion::Value { value: owner, .. },
        } = row
            && key.object_type == object_type::IDENTITY
            && key.key == "identity"
        {
            let tag = RowKey::Meta(MetaKey::new(object_type::IDENTITY, owner, "tag"));
            assert!(
                matches!(
                    rows.get(&tag),
                    Some(Row::Meta {
                        version: MetaVersion::Value { .. },
                        ..
                    })
                ),
                "the slot {} names the identity {owner}, which the server does not hold",
                key.object_id
            );
        }
    }
    let tokens: Vec<String> = live
        .values()
        .filter(|r| readable(r.soft_deleted_at, r.expires_at, &nodes[0]))
        .map(|r| r.token.clone())
        .collect();
    for secret in &history.slots {
        let mut outcomes = Vec::new();
        for node in nodes {
            node.vault.lock();
            let unlocked = node.vault.unlock(&Secret::password(secret.as_str())).await;
            outcomes.push(unlocked.map_err(|e| e.code()));
        }
        assert!(
            outcomes.iter().all(|o| o == &outcomes[0]),
            "{secret} opens differently on the replicas: {outcomes:?}"
        );
        if history.removed.contains(secret) {
            // Removed on one replica: gone everywhere, whatever the others did meanwhile
            // (`false`: the vault holds nothing any more to check a secret against), unless the
            // server refused the removal because another replica had removed the identity's
            // other secrets meanwhile: then it alone opened that identity's records when its
            // remover took it back (`refused`), and may open them along with a secret a later
            // password change gave the identity again; or it alone opens them now.
            assert!(
                matches!(outcomes[0], Ok(false) | Err(ErrorCode::InvalidPassword))
                    || history.refused.contains(secret)
                    || sole_opener(&nodes[0], secret, &tokens, history).await,
                "{secret} was removed and still opens the vault: {outcomes:?}"
            );
        } else if history.identities && !known_bugs() {
            assert_eq!(outcomes[0], Ok(true), "{secret} no longer opens the vault");
        } else {
            // `false`: the vault holds nothing any more to check a secret against.
            assert!(
                matches!(
                    outcomes[0],
                    Ok(true | false) | Err(ErrorCode::InvalidPassword)
                ),
                "{secret}: {outcomes:?}"
            );
        }
    }
    // 5. Zero knowledge.
    let dump = match &server.sqlite {
        Some(db) => db.with(dump_sqlite),
        None => {
            let snapshot = server.vault.export_snapshot().await.unwrap();
            format!("{}{rows:?}", String::from_utf8_lossy(&snapshot))
        }
    };
    assert!(dump.len() > 100, "the dump holds the server's rows");
    for secret in history
        .plaintexts
        .iter()
        .chain(&history.passwords)
        .chain(&history.slots)
    {
        assert!(
            !dump.contains(secret.as_str()),
            "the server's store holds {secret} in plaintext"
        );
    }
}

/// Every column of every table, as text.
fn dump_sqlite(conn: &rusqlite::Connection) -> String {
    use rusqlite::types::ValueRef;
    let tables: Vec<String> = conn
        .prepare("SELECT name FROM sqlite_master WHERE type = 'table'")
        .unwrap()
        .query_map([], |row| row.get(0))
        .unwrap()
        .map(|t| t.unwrap())
        .collect();
    let mut out = String::new();
    for table in tables {
        let mut statement = conn.prepare(&format!("SELECT * FROM \"{table}\"")).unwrap();
        let columns = statement.column_count();
        let mut rows = statement.query([]).unwrap();
        while let Some(row) = rows.next().unwrap() {
            for i in 0..columns {
                match row.get_ref(i).unwrap() {
                    ValueRef::Text(t) | ValueRef::Blob(t) => {
                        out.push_str(&String::from_utf8_lossy(t));
                    }
                    other => out.push_str(&format!("{other:?}")),
                }
                out.push('\t');
            }
            out.push('\n');
        }
    }
    out
}

// ---- the simulation ----

async fn simulate(case: Case, identities: bool) {
    let ahead: i64 = std::env::var("SYNC_SIM_AHEAD_MS")
        .ok()
        .and_then(|ms| ms.parse().ok())
        .unwrap_or(0);
    let server_clock = TestClock::new(T0);
    let server = node(
        "server",
        case.sqlite_server,
        identities,
        server_clock.clone(),
    )
    .await;
    let mut nodes = Vec::new();
    for (i, name) in ["A", "B", "C"].into_iter().enumerate().take(case.replicas) {
        let skew = if i == 0 && ahead != 0 {
            ahead
        } else {
            case.skews[i]
        };
        nodes.push(node(name, i == 1, identities, TestClock::new(T0 + skew)).await);
    }
    let dir = std::env::temp_dir().join(format!(
        "vaultstore-sync-sim-{}-{:08x}",
        std::process::id(),
        rand_u32()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    let wire = Wire {
        server: Mutex::new(Arc::new(server)),
        server_clock,
        backup: Mutex::new(None),
        dir,
        fault: Mutex::new(Fault::None),
        count: AtomicUsize::new(0),
        sent: Mutex::new(Vec::new()),
    };
    let mut history = History {
        identities,
        ..History::default()
    };
    let first = history.fresh("password");
    history.passwords.push(first);
    // One vault: A makes it, the others join it before they write.
    run_op(&Op::Create(0, Expiry::Never), &nodes, &wire, &mut history).await;
    for node in &nodes {
        wire.sync_noting(node, Fault::None, &mut history)
            .await
            .unwrap();
    }
    for op in &case.ops {
        run_op(op, &nodes, &wire, &mut history).await;
    }
    let server = wire.server();
    heal(&nodes, &server, &wire, &mut history).await;
    check(&nodes, &server, &history).await;
    if identities && known_bugs() {
        consolidate(&nodes, &server, &wire, &mut history).await;
    }
}

/// The through-rotations run ends with its user moving everything to one last password: on A,
/// a `bulkRekey` from each secret of the history that still opens something, then healing.
/// Replicas that made an identity for one password while apart leave it two, and a rekey must
/// move every one (SYNC.md 6: the new secret opens everything, the old one is refused), so that
/// afterwards the last password opens every readable record on every replica, with the value it
/// had, and every other secret of the history opens nothing. (A rekey moved only one of them:
/// the other's records kept opening with the old password alone.)
async fn consolidate(nodes: &[Node], server: &Node, wire: &Wire, history: &mut History) {
    let a = &nodes[0];
    let mut expected = Vec::new();
    for row in replicated(&*server.store).await.into_values() {
        if let Row::Record {
            version: RecordVersion::Live(record),
            ..
        } = row
            && readable(record.soft_deleted_at, record.expires_at, a)
        {
            let (_, value) = opens_with_any(a, &record.token, history)
                .await
                .unwrap_or_else(|| panic!("A: {} opens with no password", record.token));
            expected.push((record.token, value));
        }
    }
    let last = history.fresh("password");
    let secrets: Vec<String> = history
        .passwords
        .iter()
        .chain(&history.slots)
        .cloned()
        .collect();
    for secret in &secrets {
        a.vault.lock();
        if let Ok(true) = a.vault.unlock(&Secret::password(secret.as_str())).await {
            a.vault
                .bulk_rekey(
                    &Secret::password(secret.as_str()),
                    &Secret::password(last.as_str()),
                    &RekeyOptions::default(),
                )
                .await
                .unwrap_or_else(|e| panic!("A: rekey of {secret}: {e}"));
        }
    }
    history.passwords.push(last.clone());
    heal(nodes, server, wire, history).await;
    for node in nodes {
        for (token, value) in &expected {
            node.vault.lock();
            let read = node
                .vault
                .token_read(token, &Secret::password(last.as_str()))
                .await
                .unwrap_or_else(|e| panic!("{}: {token} with the last password: {e}", node.name));
            assert_eq!(&read, value, "{}: {token}", node.name);
        }
        for secret in &secrets {
            node.vault.lock();
            let unlocked = node.vault.unlock(&Secret::password(secret.as_str())).await;
            // `false`: the vault holds no record and no identity, so nothing opens.
            assert!(
                matches!(&unlocked, Ok(false))
                    || matches!(&unlocked, Err(e) if e.code() == ErrorCode::InvalidPassword),
                "{}: {secret} still opens something after every secret moved to the last: {unlocked:?}",
                node.name
            );
        }
    }
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn replicas_converge_with_identities_off(case in case()) {
        block_on(simulate(case, false));
    }

    #[test]
    fn replicas_converge_with_identities_on(case in case()) {
        block_on(simulate(case, true));
    }

    #[test]
    fn replicas_converge_through_rotations(case in case()) {
        WIDE.with(|wide| wide.set(true));
        block_on(simulate(case, true));
    }
}

/// Found by the through-rotations run (seed 21, 1,000 cases): A rotates its password away and,
/// before hearing of a secret B added to the old identity, pulls that slot (its first pull went
/// through, its push was dropped), then changes its password to that secret. The slot named an
/// identity A had removed, and the rekey took it for the new secret's identity: it moved A's
/// records back onto the key A's rotation had retired, and after the sync they were stranded and
/// opened with no secret. An identity reached only through a slot whose identity this replica
/// removed now counts as removed, as one the server removed does.
#[test]
fn a_rekey_never_moves_records_onto_a_slot_of_an_identity_rotated_away_here() {
    WIDE.with(|wide| wide.set(true));
    let case = Case {
        sqlite_server: false,
        replicas: 3,
        skews: vec![-5 * HOUR, -5 * HOUR, -5 * HOUR],
        ops: vec![
            Op::Rotate(0),
            Op::SecretAdd(1),
            Op::WriteDuringSync(Box::new(Op::CreateCustom(2, 0, Expiry::Never)), 0),
            Op::SyncTabs(1),
            Op::Sync(0, Fault::Drop(1)),
            Op::PasswordToSlot(0, 0),
            Op::Rotate(2),
            Op::SyncTabs(2),
        ],
    };
    block_on(simulate(case, true));
}

/// Found by the through-rotations run (seed 177, 3,000 cases): A adds a secret to the identity
/// (a slot, pushed), then removes the password, which leaves the identity's own rows vacant
/// (the slot opens it), and does not sync; C deletes the identity's last record, which removes
/// the identity and its slot as emptied. A's vacant rows are the later write and keep the
/// identity, but the slot's removal stood: the identity came back with no secret, and B's
/// record under it opened with none. A slot emptied with its identity now stays, written
/// again, where the identity does.
#[test]
fn a_slot_emptied_with_its_identity_stays_where_a_later_write_keeps_the_identity() {
    WIDE.with(|w| w.set(true));
    let case = Case {
        sqlite_server: false,
        replicas: 3,
        skews: vec![-5 * HOUR, -5 * HOUR, 3 * HOUR],
        ops: vec![
            Op::WriteDuringSync(Box::new(Op::SecretAdd(0)), 0),
            Op::SecretRemove(0, 1),
            Op::WriteDuringSync(Box::new(Op::Delete(2, 0)), 0),
            Op::Tick(1),
            Op::Create(0, Expiry::Never),
            Op::Create(1, Expiry::Never),
        ],
    };
    block_on(simulate(case, true));
}

/// Found by the through-rotations run (seed 196, 3,000 cases; it failed before this session's
/// changes too): B adds a secret to the identity (a slot); A moves its password onto that
/// secret (the identity's own rows go vacant: the slot opens it), while B removes the secret
/// and writes a record under the identity, offline. A deletes the identity's last records it
/// holds (an emptied removal, the slot's with it) and syncs first. B's removal of the slot
/// then reached a server that held the identity removed, so nothing checked that it took the
/// identity's last secret; B brought the identity back for its record, vacant, and no secret
/// opened it. The server now refuses that removal (`referenced`: the secrets of an emptied
/// identity are the versions it kept), and B writes the slot back from them with the identity.
#[test]
fn a_slot_removed_while_its_identity_went_empty_comes_back_when_it_was_the_last_secret() {
    WIDE.with(|w| w.set(true));
    let case = Case {
        sqlite_server: false,
        replicas: 2,
        skews: vec![-5 * HOUR, -5 * HOUR, -5 * HOUR],
        ops: vec![
            Op::SecretAdd(1),
            Op::SyncPair(0, 1),
            Op::CreateCustom(0, 2, Expiry::Never),
            Op::SyncTabs(0),
            Op::PasswordToSlot(0, 0),
            Op::SecretRemove(1, 8),
            Op::Delete(0, 8),
            Op::CreateCustom(1, 2, Expiry::Never),
            Op::SyncTabs(0),
            Op::Delete(0, 1),
            Op::SyncPair(0, 1),
        ],
    };
    block_on(simulate(case, true));
}

/// Found by the through-rotations run (seed 211, 3,000 cases, A three hours ahead; it fails
/// without the clock too, and before this session's changes): A and B each add a secret to
/// the identity (slots 4 and 5), B moves its password onto slot 5 (the identity's own rows go
/// vacant), they sync, and B removes slot 4 and then rotates, while A writes a record under
/// the identity and syncs first. The server refuses B's removal of the identity (`referenced`:
/// A's record uses it), and then its last-secret rule refused every removal of B's page that
/// took a secret, slot 4's as well as the rotation's removal of slot 5: slot 4, removed, opened
/// the vault again. Only the page's latest taking goes back now, which is enough to leave the
/// identity a secret.
#[test]
fn a_removed_secret_stays_removed_when_a_rotation_after_it_is_refused() {
    WIDE.with(|w| w.set(true));
    let case = Case {
        sqlite_server: false,
        replicas: 2,
        skews: vec![-5 * HOUR, -5 * HOUR, -5 * HOUR],
        ops: vec![
            Op::Create(0, Expiry::Never),
            Op::SecretAdd(0),
            Op::SecretAdd(1),
            Op::PasswordToSlot(1, 1),
            Op::SyncPair(2, 1),
            Op::SecretRemove(1, 20),
            Op::WriteDuringSync(Box::new(Op::Create(0, Expiry::Never)), 0),
            Op::Rotate(1),
        ],
    };
    block_on(simulate(case, true));
}

/// Found by the through-rotations run at seed 217 (1,000 cases): A and B each rotate identity
/// I0 away, C creates a custom token under I0 and syncs (I0 is still live on the server), then
/// A and B sync at once. B pulled C's record while its own removal of I0 waited to go; A's
/// older record took the token and displaced C's, and B kept its clean copy stranded, as it
/// keeps any record the server displaces. Under an identity B removed for good, that copy
/// opened with no secret. B now applies the displacement to such a copy; C, its writer, keeps
/// it stranded.
#[test]
fn a_displaced_copy_under_an_identity_removed_here_is_not_kept_stranded() {
    WIDE.with(|w| w.set(true));
    let case = Case {
        sqlite_server: false,
        replicas: 3,
        skews: vec![-5 * HOUR, 0, -2 * HOUR],
        ops: vec![
            Op::Create(0, Expiry::Never),
            Op::Create(0, Expiry::Never),
            Op::CreateCustom(0, 1, Expiry::Never),
            Op::Rotate(0),
            Op::Rotate(1),
            Op::CreateCustom(2, 1, Expiry::Never),
            Op::Sync(2, Fault::None),
            Op::SyncPair(0, 1),
        ],
    };
    block_on(simulate(case, true));
}

/// Found by the through-rotations run (seed 32, 1,000 cases): A adds a secret to the identity
/// (a slot) and soft-deletes a record, and its push reaches the server; B rotates the identity
/// away meanwhile, then, while one of its tabs syncs (its pull brings the slot and the record,
/// still under the old identity as A sent it), writes with the newest secret of the history,
/// the added one. The slot named an identity B had removed, and the record's pulled version
/// named it too, which kept the slot (records under the identity keep it), although B's merge
/// kept B's re-seal of that record under the new identity. B's value was sealed under the
/// retired key and stranded; it opened with no secret. A slot now stays only for the records
/// the page leaves under its identity, as merged.
#[test]
fn a_slot_whose_identity_no_merged_record_uses_goes_before_a_write_can_use_it() {
    WIDE.with(|wide| wide.set(true));
    let case = Case {
        sqlite_server: false,
        replicas: 2,
        skews: vec![-5 * HOUR, -5 * HOUR, -5 * HOUR],
        ops: vec![
            Op::SecretAdd(0),
            Op::SoftDelete(0, 0),
            Op::Sync(2, Fault::Lose(1)),
            Op::Rotate(1),
            Op::PasswordToSlot(0, 0),
            Op::WriteDuringSync(Box::new(Op::Create(1, Expiry::Never)), 1),
        ],
    };
    block_on(simulate(case, true));
}

/// Found by the through-rotations run (seed 109, 1,000 cases) once a slot's removal waits with
/// its identity's: C rotates the identity away and syncs; A adds a secret to it during a sync
/// and writes two records under it. A's push is answered with the records refused (the key is
/// retired: stranded) and the slot removed (it went with its identity), and that removal waits
/// on A while the records use the identity, but only a pulled page stored the wait: the slot
/// stayed live on A for good, removed on the server, after the user deleted the records.
#[test]
fn a_slot_removal_in_the_answer_to_a_push_waits_as_a_pulled_one_does() {
    WIDE.with(|w| w.set(true));
    let case = Case {
        sqlite_server: false,
        replicas: 3,
        skews: vec![3 * HOUR, -5 * HOUR, -5 * HOUR],
        ops: vec![
            Op::Update(0, 0),
            Op::Rotate(2),
            Op::SyncTabs(2),
            Op::WriteDuringSync(Box::new(Op::SecretAdd(0)), 0),
            Op::Create(0, Expiry::Never),
            Op::Create(0, Expiry::Never),
            Op::Delete(1, 39),
        ],
    };
    block_on(simulate(case, true));
}

/// Found by the through-rotations run (seed 126, 2,000 cases; it failed before this session's
/// changes too): B adds a secret to the identity (a slot) while A deletes the identity's last
/// record it holds (an emptied removal). The two sync side by side: B's push of the slot is
/// answered with its removal (it went with the identity), which B writes back again while its
/// own copy of that record still uses the identity; then B's pull brings the record's deletion
/// and the identity's removal. The identity went on B, but the slot stayed: its removal in the
/// page lost to B's later write, and nothing removed a local slot of an identity a page
/// removes. A write on B then sealed under the removed identity through the slot, and B wrote
/// the slot again at every sync, for ever, the record stranded. Such a slot now goes with its
/// identity as the page leaves both.
#[test]
fn a_local_slot_goes_with_the_identity_a_pulled_page_removes() {
    WIDE.with(|w| w.set(true));
    let case = Case {
        sqlite_server: false,
        replicas: 2,
        skews: vec![-5 * HOUR, -5 * HOUR, -5 * HOUR],
        ops: vec![
            Op::SecretAdd(1),
            Op::Delete(2, 0),
            Op::CreateCustom(0, 0, Expiry::Never),
            Op::SyncPair(0, 1),
            Op::WriteDuringSync(Box::new(Op::PasswordToSlot(0, 0)), 0),
            Op::Create(1, Expiry::Never),
        ],
    };
    block_on(simulate(case, true));
}

/// Found by the all-runs simulation (seed 232, 1,500 cases of up to 70 operations; it failed
/// before the last sessions' changes too): B adds a secret to the identity; A removes the
/// password (the identity's own rows made vacant: the added secret opens it), and B, not knowing,
/// removes the added secret. The server refuses B's removal, which reached it second and would
/// have left the identity no secret, and B takes the slot back (FORMAT.md "Secret slots"). C then
/// changes the password it still opened with, a write later than A's removal, so the identity's
/// own rows open again with C's new password. The slot stays along with it: a refused removal
/// stays refused. The oracle held a removed secret to opening nothing, or alone, at the end;
/// it now learns of the refusal when the remover takes the slot back.
#[test]
fn a_refused_removal_stays_refused_after_a_later_password_change() {
    WIDE.with(|w| w.set(true));
    let case = Case {
        sqlite_server: false,
        replicas: 3,
        skews: vec![-5 * HOUR; 3],
        ops: vec![
            Op::SecretAdd(1),
            Op::Sync(1, Fault::None),
            Op::WriteDuringSync(Box::new(Op::Update(0, 0)), 0),
            Op::SecretRemove(0, 31),
            Op::Create(0, Expiry::Never),
            Op::Create(0, Expiry::Never),
            Op::SecretRemove(1, 4),
            Op::CreateCustom(2, 0, Expiry::Future),
            Op::Tick(1000),
            Op::Password(2),
        ],
    };
    block_on(simulate(case, true));
}

/// Found by the first run with the server lost (300 cases): the server's database is deleted,
/// and A, whose only record was deleted, syncs first. The empty server gave the empty replica
/// its own new salt, A sealed its next records for that vault, and their push bound the server
/// to it: B, holding the vault A had left, was refused (`SYNC_CONFLICT`) for good. A server
/// without data now answers an empty replica with that replica's own vault, and adopts the
/// vault of the first replica with records even when it holds tombstones.
#[test]
fn a_wiped_server_reached_first_by_a_replica_with_no_records_stays_the_vault() {
    let case = Case {
        sqlite_server: false,
        replicas: 2,
        skews: vec![-5 * HOUR; 3],
        ops: vec![
            Op::ServerLost,
            Op::Delete(2, 0),
            Op::SyncTabs(0),
            Op::Create(0, Expiry::Never),
            Op::Create(0, Expiry::Never),
        ],
    };
    block_on(simulate(case, false));
}

/// Found by the same run: the server's database is deleted; B's next sync pulls (told `lost`)
/// and its push of everything is lost on the way. The pull had moved B's checkpoint to the new
/// server, so B's next sync pushed only its new record, and the server refused it (`422`: an
/// identity it never had), on every sync. A replica now owes the server every row from the
/// page that says `lost` until a push of them all completes.
#[test]
fn a_replica_whose_push_to_a_wiped_server_failed_still_pushes_everything() {
    let case = Case {
        sqlite_server: false,
        replicas: 2,
        skews: vec![-5 * HOUR; 3],
        ops: vec![
            Op::ServerLost,
            Op::Sync(1, Fault::Drop(1)),
            Op::Create(1, Expiry::Never),
            Op::Sync(1, Fault::None),
            Op::Create(0, Expiry::Never),
        ],
    };
    block_on(simulate(case, true));
}

/// Found by the identities-on run with the server lost (seed 304, 1,000 cases): C adds a secret
/// and syncs; A removes it and syncs with B; C stays away. Months pass, and A and B drop the
/// slot's tombstone, as replicas dropped every clean tombstone 90 days after the deletion
/// (the server keeps an identity's for good). The server's database is then deleted: C pushes
/// back the slot it still held, live, and nothing pushed the removal, so the removed secret
/// opened the vault again everywhere. Replicas now keep the tombstones the server keeps for
/// good, and push them back with the rest; C syncs first here, so A and B pull C's slot before
/// they push, and their tombstone must win that merge too (it no longer counts as gone after
/// the retention).
#[test]
fn a_secret_removed_before_the_server_is_lost_stays_removed_after_the_retention() {
    let case = Case {
        sqlite_server: false,
        replicas: 3,
        skews: vec![-5 * HOUR; 3],
        ops: vec![
            Op::SecretAdd(2),
            Op::Sync(2, Fault::None),
            Op::WriteDuringSync(Box::new(Op::Update(0, 0)), 0),
            Op::SecretRemove(0, 0),
            Op::SyncPair(0, 1),
            Op::Create(0, Expiry::Never),
            Op::Away(91),
            Op::ServerLost,
            Op::Sync(2, Fault::None),
        ],
    };
    block_on(simulate(case, true));
}

/// Found by seed 310 (identities off): B deletes a record and pushes the deletion; the server is
/// lost, and A, which never pulled the deletion, pushes the record back to the empty one. B's
/// next pull starts over (`lost`), keeps its tombstone over the record, and owes the server
/// every row; its push fails. Months later, B's collection dropped the tombstone, clean and past
/// the retention, before the push that pays the debt, and B's checkpoint was already past the
/// server's live record: B held neither while A and the server held it live. The collection
/// now runs after the push.
#[test]
fn a_deletion_owed_to_a_wiped_server_is_pushed_before_its_tombstone_is_collected() {
    let case = Case {
        sqlite_server: false,
        replicas: 2,
        skews: vec![-5 * HOUR, -5 * HOUR, -5 * HOUR],
        ops: vec![
            Op::Create(0, Expiry::Never),
            Op::Delete(1, 8),
            Op::SyncTabs(1),
            Op::ServerLost,
            Op::Create(0, Expiry::Never),
            Op::Create(0, Expiry::Never),
            Op::SyncTabs(2),
            Op::Create(0, Expiry::Never),
            Op::Sync(1, Fault::Drop(1)),
            Op::Away(91),
        ],
    };
    block_on(simulate(case, false));
}

/// Found by the through-rotations run (seed 313, 3,000 cases; it failed before this session's
/// changes too): B rotates the identity away (a removal for good) and writes a record with a
/// custom token; C deletes the identity's last record (an emptied removal, here only); A writes
/// a record with the same token under the old identity. C pulls A's record, then its
/// displacement by B's earlier one, and the server's removal of the identity for good. C kept
/// its clean copy stranded, as under an identity it had only emptied, and set the removal aside
/// while the copy used the identity: the copy opened with no secret on C, for good. The
/// displacement now applies to a clean copy under an identity the server removed for good, in
/// the page or in a removal waiting here; A, its writer, keeps it stranded.
#[test]
fn a_displaced_copy_under_an_identity_the_server_retired_is_not_kept_stranded() {
    WIDE.with(|w| w.set(true));
    let case = Case {
        sqlite_server: false,
        replicas: 3,
        skews: vec![3 * HOUR, -5 * HOUR, -5 * HOUR],
        ops: vec![
            Op::Rotate(1),
            Op::Delete(2, 0),
            Op::CreateCustom(1, 0, Expiry::Never),
            Op::WriteDuringSync(Box::new(Op::CreateCustom(0, 0, Expiry::Never)), 0),
            Op::SyncPair(1, 2),
            Op::Create(0, Expiry::Never),
            Op::Create(0, Expiry::Never),
        ],
    };
    block_on(simulate(case, true));
}

/// Found by the through-rotations run (seed 316, 6,000 cases) while the case above was being
/// fixed: A writes a record with a custom token and pushes it; C, having rotated the identity
/// away, writes one with the same token earlier by the rule, and pushes the rotation with it.
/// A then pulls the displacement of its own record with the identity's removal for good: its
/// copy is clean (pushed) but its writer's, under an identity live here, and stays stranded;
/// a first version of that fix applied the displacement to every clean copy under an identity
/// the server removed, and the write was lost everywhere.
#[test]
fn a_writer_keeps_its_pushed_record_stranded_when_the_server_displaces_it_with_a_rotation() {
    WIDE.with(|w| w.set(true));
    let case = Case {
        sqlite_server: false,
        replicas: 3,
        skews: vec![4 * 60_000, -5 * HOUR, -5 * HOUR],
        ops: vec![
            Op::CreateCustom(0, 0, Expiry::Never),
            Op::Rotate(2),
            Op::Sync(0, Fault::None),
            Op::Renew(0, 0, Expiry::Never),
            Op::CreateCustom(2, 0, Expiry::Never),
            Op::Purge(0, false),
            Op::Update(2, 0),
        ],
    };
    block_on(simulate(case, true));
}

/// Found by the through-rotations run (seed 319, 2,000 cases of up to 60 operations; it failed
/// before this session too): A adds a secret to the identity (a slot) and updates a record;
/// B rotates the identity away, then pulls A's slot and update (whose record, still under the
/// old identity, wins), so the slot stays on B for that record. B then writes with the added
/// secret, which opens only that slot: the record is sealed under the identity B rotated away,
/// and stranded. The server's removal of the slot (it went with the identity) then reached B as
/// a slot removed alone, which goes whatever records use it: B's record opened with nothing. A
/// slot whose identity's own `tag` is not live here now waits with the records under it, as
/// one that went with its identity does.
#[test]
fn a_slot_whose_identity_was_rotated_away_here_waits_with_the_records_it_opens() {
    WIDE.with(|w| w.set(true));
    let case = Case {
        sqlite_server: false,
        replicas: 2,
        skews: vec![-5 * HOUR, -5 * HOUR, -5 * HOUR],
        ops: vec![
            Op::SecretAdd(0),
            Op::Rotate(1),
            Op::Update(2, 0),
            Op::Sync(0, Fault::None),
            Op::Sync(1, Fault::Lose(1)),
            Op::Delete(0, 0),
            Op::Create(0, Expiry::Never),
            Op::PasswordToSlot(0, 0),
            Op::Create(1, Expiry::Future),
        ],
    };
    block_on(simulate(case, true));
}

/// Found by the through-rotations run (seed 320, 3,000 cases; it failed before this session
/// too): C moves its password onto a secret A added to the identity, and sync then brings C
/// that secret's slot as well, so the secret opens the identity through two objects, as the
/// identity's last secret. Once the identity's last record is deleted, C removes the secret:
/// the removal prunes the identity, slots and all, for the first object, and the second
/// object's guard, after it in the batch, then failed every round ("other writers kept
/// changing this identity's secrets"). Every slot's guard now comes first.
#[test]
fn a_secret_on_two_objects_of_an_identity_can_be_removed_as_its_last() {
    WIDE.with(|w| w.set(true));
    let case = Case {
        sqlite_server: false,
        replicas: 3,
        skews: vec![-5 * HOUR, -5 * HOUR, -5 * HOUR],
        ops: vec![
            Op::SecretAdd(0),
            Op::PasswordToSlot(2, 0),
            Op::Delete(1, 0),
            Op::WriteDuringSync(Box::new(Op::SecretRemove(0, 0)), 1),
            Op::SyncPair(1, 2),
            Op::SecretRemove(2, 2),
        ],
    };
    block_on(simulate(case, true));
}

/// Found by the through-rotations run (seed 324, 3,000 cases of up to 60 operations; it failed
/// before this session too): A adds a secret to the identity, and B rotates the identity away,
/// the removal of its own rows refused (C wrote under it) and that of A's slot taken. A, which
/// has not heard, moves its password onto the added secret (its own rows vacant) and writes
/// under it; C's purge then empties the identity. A pulled the slot's removal and applied it,
/// its identity's own rows being live, though vacant: its records opened with nothing. And the
/// server, refusing A's write-back of the identity (its last secret gone), still stored A's
/// records under it, which opened with nothing anywhere. Now the slot waits on A while it is
/// the last secret of records there, and the server refuses such records as under a retired
/// key: they stay stranded on A until the user's rekey moves them.
#[test]
fn records_written_through_the_last_slot_of_an_identity_emptied_elsewhere_stay_stranded() {
    WIDE.with(|w| w.set(true));
    let case = Case {
        sqlite_server: false,
        replicas: 3,
        skews: vec![-5 * HOUR, -5 * HOUR, -5 * HOUR],
        ops: vec![
            Op::SecretAdd(0),
            Op::Create(1, Expiry::Never),
            Op::Create(2, Expiry::Past),
            Op::SyncTabs(0),
            Op::Rotate(1),
            Op::SyncPair(2, 1),
            Op::Create(0, Expiry::Never),
            Op::PasswordToSlot(0, 0),
            Op::Create(0, Expiry::Never),
            Op::Create(0, Expiry::Never),
            Op::Purge(2, true),
            Op::SyncTabs(2),
            Op::SyncPair(1, 2),
        ],
    };
    block_on(simulate(case, true));
}
