//! Sync end to end in Rust (SYNC.md): replicas and a server, each an ordinary `Vault` on a real
//! backend, talking through `sync_handle` in process. Each case states the guarantee it checks.
#![cfg(all(feature = "gluesql", feature = "sql", not(target_arch = "wasm32")))]
#![allow(clippy::disallowed_methods)] // clippy.toml's one-sort rule is for the engine's download size

mod common;
mod interleaving;
mod sqlite;

use async_trait::async_trait;
use common::{T0, TestClock, Turns, replicated};
use futures::executor::block_on;
use sqlite::Sqlite;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use vaultstore_wasm::platform::Platform;
use vaultstore_wasm::storage::memory::GlueMemoryStorage;
use vaultstore_wasm::storage::sql::SqlStorage;
use vaultstore_wasm::storage::{OWNER_KEY, Row, Storage};
use vaultstore_wasm::sync::MetaVersion;
use vaultstore_wasm::{
    CreateOptions, ErrorCode, RekeyOptions, Result, Secret, SyncReport, SyncTransport, Vault,
    VaultError, VaultOptions,
};

const PASSWORD: &str = "correct horse battery";
const NEW: &str = "a brand new password";

fn pw(p: &str) -> Secret {
    Secret::password(p)
}

fn options(identities: bool) -> VaultOptions {
    VaultOptions {
        kdf_iterations: 1_000,
        password_identity: identities,
        ..VaultOptions::default()
    }
}

/// A replica or server: the vault and a second handle on its store to look at the rows.
struct Node {
    vault: Vault,
    store: Arc<dyn Storage>,
}

async fn memory(identities: bool) -> Node {
    let store: Arc<dyn Storage> = Arc::new(GlueMemoryStorage::new().unwrap());
    Node {
        vault: Vault::open(Box::new(store.clone()), options(identities))
            .await
            .unwrap(),
        store,
    }
}

async fn sqlite(identities: bool) -> Node {
    let db = Arc::new(Sqlite::memory());
    let store: Arc<dyn Storage> = Arc::new(SqlStorage::open(db, "vaultstore").await.unwrap());
    Node {
        vault: Vault::open(Box::new(store.clone()), options(identities))
            .await
            .unwrap(),
        store,
    }
}

/// A memory node whose clock the test sets (SYNC.md 4).
async fn clocked(identities: bool, clock: &TestClock) -> Node {
    timed_on(
        clock,
        Arc::new(GlueMemoryStorage::new().unwrap()),
        identities,
    )
    .await
}

/// In process: the request goes straight to the server's `sync_handle`. It can be told to lose
/// the next response (the server acted, the replica never hears).
struct Wire<'a> {
    server: &'a Vault,
    drop_next_response: AtomicBool,
    requests: AtomicUsize,
}

fn wire(server: &Node) -> Wire<'_> {
    Wire {
        server: &server.vault,
        drop_next_response: AtomicBool::new(false),
        requests: AtomicUsize::new(0),
    }
}

#[async_trait]
impl SyncTransport for Wire<'_> {
    async fn exchange(&self, body: String) -> Result<(u16, Vec<u8>)> {
        self.requests.fetch_add(1, Ordering::SeqCst);
        let (status, body) = self.server.sync_handle(body.as_bytes()).await;
        // A replica reads at most this much of an answer (js/vault.ts readCapped).
        assert!(
            body.len() as u64 <= vaultstore_wasm::sync::wire::MAX_BODY_BYTES,
            "the server answered {} bytes, over the body cap",
            body.len()
        );
        if self.drop_next_response.swap(false, Ordering::SeqCst) {
            return Err(connection_dropped());
        }
        Ok((status, body.into_bytes()))
    }
}

/// What a transport reports when a request or its answer is lost.
fn connection_dropped() -> VaultError {
    VaultError::Storage(Box::new(vaultstore_wasm::error::StorageFailure {
        original: Default::default(),
        name: None,
        message: "the connection dropped".into(),
    }))
}

async fn sync(node: &Node, remote: &Wire<'_>) -> SyncReport {
    node.vault.sync(remote, None).await.unwrap()
}

async fn create(node: &Node, value: &str, secret: &str) -> String {
    node.vault
        .token_create(value, &pw(secret), &CreateOptions::default())
        .await
        .unwrap()
}

/// A rotation on `node` from [`PASSWORD`] to [`NEW`]: a new identity and key, the old one removed.
async fn rotate_to_new(node: &Node) {
    rotate_to(node, NEW).await;
}

/// A rotation from [`PASSWORD`] to `to` on `node`.
async fn rotate_to(node: &Node, to: &str) {
    let rotate = RekeyOptions {
        rotate: true,
        ..RekeyOptions::default()
    };
    node.vault
        .bulk_rekey(&pw(PASSWORD), &pw(to), &rotate)
        .await
        .unwrap();
}

/// Every value created on `node` in one batch, under [`PASSWORD`]: their tokens, in order.
async fn create_all(node: &Node, values: &[String]) -> Vec<String> {
    let refs: Vec<&str> = values.iter().map(String::as_str).collect();
    node.vault
        .tokens_create(&refs, &pw(PASSWORD), &CreateOptions::default())
        .await
        .unwrap()
}

async fn converged(nodes: &[&Node]) {
    let first = replicated(&*nodes[0].store).await;
    for node in &nodes[1..] {
        assert_eq!(replicated(&*node.store).await, first, "replicas differ");
    }
}

#[test]
fn a_value_created_on_one_replica_opens_on_another() {
    block_on(async {
        let server = sqlite(true).await;
        let (a, b) = (memory(true).await, memory(true).await);
        let remote = wire(&server);
        let token = create(&a, "the secret value", PASSWORD).await;
        let pushed = sync(&a, &remote).await;
        assert!(
            pushed.pushed >= 3,
            "the record and its identity's rows: {pushed:?}"
        );
        // B is empty: it joins the server's vault (its salt) and gets everything.
        let pulled = sync(&b, &remote).await;
        assert!(pulled.pulled >= 3, "{pulled:?}");
        assert_eq!(
            b.vault.token_read(&token, &pw(PASSWORD)).await.unwrap(),
            "the secret value"
        );
        sync(&a, &remote).await;
        converged(&[&a, &b, &server]).await;
    });
}

#[test]
fn offline_edits_resolve_by_the_rule_and_the_loser_is_counted() {
    block_on(async {
        let server = memory(false).await;
        let (a, b) = (memory(false).await, memory(false).await);
        let remote = wire(&server);
        let token = create(&a, "v1", PASSWORD).await;
        sync(&a, &remote).await;
        sync(&b, &remote).await;
        // Both edit offline; B's edit is the later one.
        a.vault
            .token_update(&token, "from a", &pw(PASSWORD))
            .await
            .unwrap();
        std::thread::sleep(std::time::Duration::from_millis(5));
        b.vault
            .token_update(&token, "from b", &pw(PASSWORD))
            .await
            .unwrap();
        a.vault
            .token_renew(&token, Some(4_000_000_000_000))
            .await
            .unwrap();
        sync(&b, &remote).await;
        let report = sync(&a, &remote).await;
        assert_eq!(
            report.conflicts, 1,
            "A's value lost to B's later one: {report:?}"
        );
        sync(&b, &remote).await;
        for node in [&a, &b] {
            assert_eq!(
                node.vault.token_read(&token, &pw(PASSWORD)).await.unwrap(),
                "from b"
            );
            let record = node
                .vault
                .record_find_by_token(&token)
                .await
                .unwrap()
                .unwrap();
            assert_eq!(
                record.expires_at,
                Some(4_000_000_000_000),
                "A's renewal kept"
            );
        }
        converged(&[&a, &b, &server]).await;
    });
}

#[test]
fn a_deleted_token_never_comes_back() {
    block_on(async {
        let server = memory(false).await;
        let (a, b) = (memory(false).await, memory(false).await);
        let remote = wire(&server);
        let token = create(&a, "v", PASSWORD).await;
        sync(&a, &remote).await;
        sync(&b, &remote).await;
        a.vault.token_delete(&token).await.unwrap();
        // B edits the record offline after A deleted it.
        b.vault
            .token_update(&token, "stale edit", &pw(PASSWORD))
            .await
            .unwrap();
        sync(&a, &remote).await;
        sync(&b, &remote).await;
        sync(&a, &remote).await;
        for node in [&a, &b] {
            assert_eq!(
                node.vault
                    .token_read(&token, &pw(PASSWORD))
                    .await
                    .unwrap_err()
                    .code(),
                ErrorCode::RecordNotFound
            );
        }
        converged(&[&a, &b, &server]).await;
    });
}

#[test]
fn a_password_change_reaches_the_other_replicas() {
    block_on(async {
        let server = sqlite(true).await;
        let (a, b) = (memory(true).await, memory(true).await);
        let remote = wire(&server);
        let token = create(&a, "v", PASSWORD).await;
        sync(&a, &remote).await;
        sync(&b, &remote).await;
        a.vault
            .bulk_rekey(&pw(PASSWORD), &pw(NEW), &RekeyOptions::default())
            .await
            .unwrap();
        sync(&a, &remote).await;
        sync(&b, &remote).await;
        b.vault.lock();
        assert_eq!(b.vault.token_read(&token, &pw(NEW)).await.unwrap(), "v");
        assert_eq!(
            b.vault
                .token_read(&token, &pw(PASSWORD))
                .await
                .unwrap_err()
                .code(),
            ErrorCode::InvalidPassword
        );
        converged(&[&a, &b, &server]).await;
    });
}

#[test]
fn a_write_under_a_rotated_key_is_stranded_then_moved_and_delivered() {
    block_on(async {
        let server = sqlite(true).await;
        let (a, b) = (memory(true).await, memory(true).await);
        let remote = wire(&server);
        create(&a, "first", PASSWORD).await;
        sync(&a, &remote).await;
        sync(&b, &remote).await;
        rotate_to_new(&a).await;
        sync(&a, &remote).await;
        // B has not synced: it writes under the old identity.
        let offline = create(&b, "written offline", PASSWORD).await;
        let report = sync(&b, &remote).await;
        assert_eq!(report.stranded, vec![offline.clone()], "{report:?}");
        assert_eq!(
            b.vault.token_read(&offline, &pw(PASSWORD)).await.unwrap(),
            "written offline",
            "still readable here with the old secret"
        );
        b.vault
            .bulk_rekey(&pw(PASSWORD), &pw(NEW), &RekeyOptions::default())
            .await
            .unwrap();
        let report = sync(&b, &remote).await;
        assert!(report.stranded.is_empty(), "{report:?}");
        sync(&a, &remote).await;
        assert_eq!(
            a.vault.token_read(&offline, &pw(NEW)).await.unwrap(),
            "written offline"
        );
        converged(&[&a, &b, &server]).await;
    });
}

/// A replica that missed a rotation soft-deletes a record the rotation re-sealed: its push names
/// only the old identity, and the merge keeps the server's value, sealed under the new one. The
/// server reads that identity too (it answered `422`, "an identity this vault does not have",
/// to a change that names none, and the replica could not sync until it pulled first).
#[test]
fn a_soft_delete_from_a_replica_that_missed_a_rotation_merges_with_the_resealed_value() {
    block_on(async {
        let server = memory(true).await;
        let (a, b) = (memory(true).await, memory(true).await);
        let remote = wire(&server);
        let token = create(&a, "kept", PASSWORD).await;
        sync(&a, &remote).await;
        sync(&b, &remote).await;
        rotate_to_new(&b).await;
        a.vault.token_soft_delete(&token).await.unwrap();
        // Both sync at once, each request a turn later: B pulls, A pulls, B pushes the
        // rotation, A pushes its soft delete (of the value it has, under the old identity).
        let turns = Turns(&remote);
        let (b_report, a_report) =
            futures::future::join(b.vault.sync(&turns, None), a.vault.sync(&turns, None)).await;
        b_report.unwrap();
        let report = a_report.unwrap();
        assert!(report.stranded.is_empty(), "{report:?}");
        sync(&b, &remote).await;
        for node in [&a, &b] {
            node.vault.token_restore(&token).await.unwrap();
            assert_eq!(
                node.vault.token_read(&token, &pw(NEW)).await.unwrap(),
                "kept"
            );
        }
        for node in [&a, &b, &a] {
            sync(node, &remote).await;
        }
        converged(&[&a, &b, &server]).await;
    });
}

/// A replica's edit is stranded (written under a key a rotation retired), and in the same sync
/// a deletion of that record, pushed meanwhile by another replica, is pulled: the deletion wins
/// and the record is gone, so the report must not list it (an app would show an entry it cannot
/// open). Found by the simulation (seed 3, through rotations).
#[test]
fn a_stranded_record_that_a_pulled_deletion_removed_is_not_reported() {
    block_on(async {
        let server = memory(true).await;
        let (a, b) = (memory(true).await, memory(true).await);
        let remote = wire(&server);
        let token = create(&a, "first", PASSWORD).await;
        sync(&a, &remote).await;
        sync(&b, &remote).await;
        rotate_to_new(&a).await;
        b.vault
            .token_update(&token, "edited under the old key", &pw(PASSWORD))
            .await
            .unwrap();
        let turns = Turns(&remote);
        let (first, second) =
            futures::future::join(a.vault.sync(&turns, None), b.vault.sync(&turns, None)).await;
        first.unwrap();
        assert_eq!(second.unwrap().stranded, vec![token.clone()]);
        a.vault.token_delete(&token).await.unwrap();
        // A pushes the deletion between B's push (its edit refused again) and B's pull.
        let (first, second) =
            futures::future::join(a.vault.sync(&turns, None), b.vault.sync(&turns, None)).await;
        first.unwrap();
        let report = second.unwrap();
        assert!(gone(&b, &token).await, "the deletion won");
        assert_eq!(report.stranded, Vec::<String>::new(), "{report:?}");
    });
}

/// A replica pushes a password change (the identity's rows) and an edit of the identity's only
/// record, and the server answers with another replica's later deletion of that record, which
/// took the identity with it. The replica must drop the identity too. The answer lists the
/// identity's rows before the record (a push sends identities first), and the replica planned
/// the identity's removal while its copy of the record still used it: it set the removal aside
/// until the record moved, but a push's answer, unlike a pull, did not keep what it set aside,
/// and the identity stayed here, live and clean, for good. Found by the simulation (seed 23,
/// through rotations).
#[test]
fn a_push_answered_with_the_removal_of_the_identity_of_its_last_record_drops_the_identity() {
    block_on(async {
        let clock = TestClock::new(T0);
        let server = clocked(true, &clock).await;
        let (a, c) = (clocked(true, &clock).await, clocked(true, &clock).await);
        let remote = wire(&server);
        let token = create(&a, "only", PASSWORD).await;
        sync(&a, &remote).await;
        sync(&c, &remote).await;
        a.vault
            .bulk_rekey(&pw(PASSWORD), &pw(NEW), &RekeyOptions::default())
            .await
            .unwrap();
        a.vault
            .token_update(&token, "edited", &pw(NEW))
            .await
            .unwrap();
        clock.advance(1_000);
        c.vault.token_delete(&token).await.unwrap();
        // Each request a turn later: C pulls, A pulls (nothing new), C pushes its deletion, A
        // pushes, and the server answers A with C's versions of all three rows.
        let turns = Turns(&remote);
        let (c_report, a_report) =
            futures::future::join(c.vault.sync(&turns, None), a.vault.sync(&turns, None)).await;
        c_report.unwrap();
        let report = a_report.unwrap();
        assert_eq!((report.pushed, report.conflicts), (0, 3), "{report:?}");
        assert!(gone(&a, &token).await, "the deletion won");
        for node in [&a, &c, &a] {
            sync(node, &remote).await;
        }
        converged(&[&a, &c, &server]).await;
    });
}

#[test]
fn a_wiped_server_is_repaired_by_its_replicas() {
    block_on(async {
        let server = memory(false).await;
        let (a, b) = (memory(false).await, memory(false).await);
        let remote = wire(&server);
        let from_a = create(&a, "a", PASSWORD).await;
        sync(&a, &remote).await;
        // B joins the vault before it writes (a replica that writes first is another vault).
        sync(&b, &remote).await;
        let from_b = create(&b, "b", PASSWORD).await;
        sync(&b, &remote).await;
        sync(&a, &remote).await;
        // The server's database is deleted and comes back empty.
        let wiped = memory(false).await;
        let remote = wire(&wiped);
        sync(&a, &remote).await;
        sync(&b, &remote).await;
        sync(&a, &remote).await;
        for token in [&from_a, &from_b] {
            assert!(
                wiped
                    .vault
                    .record_find_by_token(token)
                    .await
                    .unwrap()
                    .is_some(),
                "the server has every record a replica held"
            );
        }
        converged(&[&a, &b, &wiped]).await;
    });
}

/// A replica that deleted a record and gave its custom token to another pushes the deletion
/// first, and the server frees the token for a record later in the same page. The deletion used
/// to go after the new record, which the server refused as displaced by the deleted one: the
/// sync reported it stranded, and only the next push stored it. After a wiped server, which a
/// replica refills with everything it holds, the record was clean and nothing pushed it again:
/// it stayed on its replica only (the simulation's seed 312).
#[test]
fn a_record_taking_the_token_of_one_deleted_in_the_same_push_is_stored_at_once() {
    async fn holder(node: &Node, token: &str) -> Option<String> {
        let record = node.vault.record_find_by_token(token).await.unwrap();
        record.map(|r| r.id)
    }
    block_on(async {
        let (server, a, b) = joined_empty().await;
        let remote = wire(&server);
        b.vault
            .token_create_custom("card-0007", "first", &pw(PASSWORD), None)
            .await
            .unwrap();
        // The first claim on the token is the earlier one (`createdAt`, then the id).
        std::thread::sleep(std::time::Duration::from_millis(5));
        sync(&b, &remote).await;
        sync(&a, &remote).await;
        // A deletes the record and gives its token to another; B never hears of it.
        assert!(a.vault.token_delete("card-0007").await.unwrap());
        a.vault
            .token_create_custom("card-0007", "second", &pw(PASSWORD), None)
            .await
            .unwrap();
        let held = |report: &SyncReport| report.stranded.contains(&"card-0007".to_owned());
        let first = sync(&a, &remote).await;
        assert!(!held(&first), "one push stores both: {first:?}");
        let second_id = holder(&a, "card-0007").await;
        assert!(second_id.is_some());
        assert_eq!(holder(&server, "card-0007").await, second_id);
        // The server's database is lost; B reaches the empty one first, with the first record.
        let wiped = memory(true).await;
        let remote = wire(&wiped);
        sync(&b, &remote).await;
        let refill = sync(&a, &remote).await;
        assert!(!held(&refill), "the deletion frees the token: {refill:?}");
        assert_eq!(holder(&wiped, "card-0007").await, second_id);
        sync(&b, &remote).await;
        a.vault.lock();
        assert_eq!(
            b.vault
                .token_read("card-0007", &pw(PASSWORD))
                .await
                .unwrap(),
            "second"
        );
        converged(&[&a, &b, &wiped]).await;
    });
}

/// A wiped server that another replica reaches first, with an earlier record of a custom token
/// it created while apart, keeps that record: a replica whose record of the token the server
/// held before it was lost finds its record stranded, reported on every sync and readable there
/// (SYNC.md 2 and 8).
#[test]
fn a_record_whose_token_a_wiped_server_gave_to_an_earlier_claim_stays_stranded() {
    block_on(async {
        let (server, a, b) = joined_empty().await;
        let remote = wire(&server);
        // B claims the token first, while apart; A claims it later and syncs.
        b.vault
            .token_create_custom("card-0007", "B's, earlier", &pw(PASSWORD), None)
            .await
            .unwrap();
        std::thread::sleep(std::time::Duration::from_millis(5));
        a.vault
            .token_create_custom("card-0007", "A's, later", &pw(PASSWORD), None)
            .await
            .unwrap();
        let stored = sync(&a, &remote).await;
        let held = |report: &SyncReport| report.stranded.contains(&"card-0007".to_owned());
        assert!(!held(&stored), "{stored:?}");
        // The server's database is lost; B reaches the empty one first, with its record.
        let wiped = memory(true).await;
        let remote = wire(&wiped);
        sync(&b, &remote).await;
        let first = sync(&a, &remote).await;
        let again = sync(&a, &remote).await;
        assert!(held(&first), "A's record is refused: {first:?}");
        assert!(
            held(&again),
            "and still reported on the next sync: {again:?}"
        );
        a.vault.lock();
        assert_eq!(
            a.vault
                .token_read("card-0007", &pw(PASSWORD))
                .await
                .unwrap(),
            "A's, later"
        );
        assert_eq!(
            wiped
                .vault
                .token_read("card-0007", &pw(PASSWORD))
                .await
                .unwrap(),
            "B's, earlier"
        );
    });
}

#[test]
fn a_lost_response_is_harmless() {
    block_on(async {
        let server = memory(false).await;
        let a = memory(false).await;
        let remote = wire(&server);
        let token = create(&a, "v", PASSWORD).await;
        remote.drop_next_response.store(true, Ordering::SeqCst);
        assert!(a.vault.sync(&remote, None).await.is_err());
        sync(&a, &remote).await;
        sync(&a, &remote).await;
        assert!(
            server
                .vault
                .record_find_by_token(&token)
                .await
                .unwrap()
                .is_some()
        );
        converged(&[&a, &server]).await;
    });
}

#[test]
fn another_vault_is_refused_and_nothing_changes() {
    block_on(async {
        let server = memory(false).await;
        let (a, stranger) = (memory(false).await, memory(false).await);
        let remote = wire(&server);
        create(&a, "v", PASSWORD).await;
        sync(&a, &remote).await;
        create(&stranger, "mine", PASSWORD).await;
        let before = replicated(&*server.store).await;
        let error = stranger.vault.sync(&remote, None).await.unwrap_err();
        assert_eq!(error.code(), ErrorCode::SyncConflict);
        assert_eq!(replicated(&*server.store).await, before);
    });
}

#[test]
fn a_replica_whose_records_were_all_deleted_joins_another_vault() {
    block_on(async {
        let server = sqlite(true).await;
        let (a, emptied) = (memory(true).await, memory(true).await);
        let remote = wire(&server);
        let token = create(&a, "on the server", PASSWORD).await;
        sync(&a, &remote).await;
        // Its own vault (another salt) once held a record and an identity: now it holds
        // tombstones only, no record and no identity (FORMAT.md "empty"), so it joins.
        let gone = create(&emptied, "deleted here", PASSWORD).await;
        emptied.vault.token_delete(&gone).await.unwrap();
        sync(&emptied, &remote).await;
        assert_eq!(
            emptied
                .vault
                .token_read(&token, &pw(PASSWORD))
                .await
                .unwrap(),
            "on the server"
        );
        let mine = create(&emptied, "made after joining", PASSWORD).await;
        sync(&emptied, &remote).await;
        sync(&a, &remote).await;
        assert_eq!(
            a.vault.token_read(&mine, &pw(PASSWORD)).await.unwrap(),
            "made after joining"
        );
        sync(&emptied, &remote).await;
        converged(&[&a, &emptied, &server]).await;
    });
}

/// A memory node opened with its own KDF cost and floor.
async fn memory_kdf(kdf_iterations: u32, floor: u32) -> Node {
    let store: Arc<dyn Storage> = Arc::new(GlueMemoryStorage::new().unwrap());
    let vault = Vault::open(
        Box::new(store.clone()),
        VaultOptions {
            kdf_iterations,
            min_kdf_iterations: Some(floor),
            ..options(false)
        },
    )
    .await
    .unwrap();
    Node { vault, store }
}

async fn kdf_row(node: &Node) -> Option<String> {
    node.store
        .meta_get(&MetaKey::new("vault", "settings", "kdf"))
        .await
        .unwrap()
}

/// SYNC.md 6 on the server: `minKdfIterations` applies to what a sync brings in. An empty
/// server with a floor does not adopt a replica's cheaper vault (which would also leave it
/// unable to open its own store), and an empty replica still joins it.
#[test]
fn an_empty_server_refuses_a_vault_below_its_kdf_floor() {
    block_on(async {
        let server = memory_kdf(5_000, 5_000).await;
        let remote = wire(&server);
        let cheap = memory_kdf(1_000, 1_000).await;
        create(&cheap, "v", PASSWORD).await;
        let kdf = kdf_row(&server).await;
        let rows = replicated(&*server.store).await;
        let error = cheap.vault.sync(&remote, None).await.unwrap_err();
        assert_eq!(error.code(), ErrorCode::SyncConflict);
        assert!(
            error.to_string().contains("minKdfIterations (5000)"),
            "{error}"
        );
        assert_eq!(kdf_row(&server).await, kdf, "the server kept its own vault");
        assert_eq!(replicated(&*server.store).await, rows);
        Vault::open(
            Box::new(server.store.clone()),
            VaultOptions {
                kdf_iterations: 5_000,
                ..options(false)
            },
        )
        .await
        .expect("the server still opens its own store under its floor");

        let newcomer = memory_kdf(1_000, 1_000).await;
        sync(&newcomer, &remote).await;
        assert_eq!(
            kdf_row(&newcomer).await,
            kdf,
            "an empty replica takes the server's"
        );
        let token = create(&newcomer, "joined", PASSWORD).await;
        sync(&newcomer, &remote).await;
        assert!(
            replicated(&*server.store)
                .await
                .keys()
                .any(|k| matches!(k, vaultstore_wasm::storage::RowKey::Record(_)))
        );
        let opened = memory_kdf(1_000, 1_000).await;
        sync(&opened, &remote).await;
        assert_eq!(
            opened
                .vault
                .token_read(&token, &pw(PASSWORD))
                .await
                .unwrap(),
            "joined"
        );
    });
}

/// Records the push bodies a replica sends.
struct Recording<'a> {
    inner: Wire<'a>,
    pushes: std::sync::Mutex<Vec<String>>,
}

#[async_trait]
impl SyncTransport for Recording<'_> {
    async fn exchange(&self, body: String) -> Result<(u16, Vec<u8>)> {
        if body.starts_with(r#"{"sync":1,"op":"push""#) {
            self.pushes.lock().unwrap().push(body.clone());
        }
        self.inner.exchange(body).await
    }
}

/// A push body with `field` of its first record row set to `value` (a forgery).
fn with_record_field(push: &str, field: &str, value: serde_json::Value) -> serde_json::Value {
    let mut forged: serde_json::Value = serde_json::from_str(push).unwrap();
    let record = forged["rows"]
        .as_array_mut()
        .unwrap()
        .iter_mut()
        .find(|row| row["t"] == "record")
        .unwrap();
    record[field] = value;
    forged
}

/// An empty server adopts a replica's vault with the replica's first push, in the same batch:
/// a push it refuses (here a record forged to name an identity the vault never had) leaves it
/// as it was, still free to take another vault; the same push unforged is taken whole.
#[test]
fn a_refused_first_push_leaves_an_empty_server_as_it_was() {
    block_on(async { refused_first_push(memory(false).await).await });
}

#[test]
fn a_refused_first_push_leaves_an_empty_sqlite_server_as_it_was() {
    block_on(async { refused_first_push(sqlite(false).await).await });
}

async fn refused_first_push(server: Node) {
    let a = memory(false).await;
    create(&a, "v", PASSWORD).await;
    let elsewhere = memory(false).await;
    let recording = Recording {
        inner: wire(&elsewhere),
        pushes: Default::default(),
    };
    a.vault.sync(&recording, None).await.unwrap();
    let push = recording.pushes.lock().unwrap()[0].clone();
    let forged = with_record_field(&push, "passwordId", format!("p_{}", "0".repeat(32)).into());

    let kdf = kdf_row(&server).await;
    let rows = replicated(&*server.store).await;
    assert_ne!(kdf, kdf_row(&a).await, "two vaults, two salts");
    let (status, body) = server
        .vault
        .sync_handle(forged.to_string().as_bytes())
        .await;
    assert_eq!(status, 422, "{body}");
    assert_eq!(
        kdf_row(&server).await,
        kdf,
        "the refused push adopted nothing"
    );
    assert_eq!(replicated(&*server.store).await, rows);

    let (status, body) = server.vault.sync_handle(push.as_bytes()).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        kdf_row(&server).await,
        kdf_row(&a).await,
        "adopted with the page"
    );
    assert_eq!(
        replicated(&*server.store).await,
        replicated(&*a.store).await
    );
}

/// A push of `a`'s first page whose identity rows are copied under another object id, keeping
/// those `keep` says (a forgery).
async fn forged_identity_push(a: &Node, keep: impl Fn(&serde_json::Value) -> bool) -> String {
    let elsewhere = memory(true).await;
    let recording = Recording {
        inner: wire(&elsewhere),
        pushes: Default::default(),
    };
    a.vault.sync(&recording, None).await.unwrap();
    let push = recording.pushes.lock().unwrap()[0].clone();
    let mut forged: serde_json::Value = serde_json::from_str(&push).unwrap();
    let forged_id = format!("p_{}", "f".repeat(32));
    let rows: Vec<serde_json::Value> = forged["rows"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|row| row["objectType"] == "password_identity" && keep(row))
        .map(|row| {
            let mut row = row.clone();
            row["objectId"] = forged_id.clone().into();
            row
        })
        .collect();
    forged["rows"] = rows.into();
    forged.to_string()
}

/// FORMAT.md: an identity's `tag` and `dek` are always written together. A push that would leave
/// an object with one and not the other is refused whole (`422`), and nothing is stored; an
/// honest replica never sends one, its pages never splitting an object (below).
#[test]
fn a_push_that_leaves_an_identity_object_incomplete_is_refused() {
    block_on(async {
        for kept in ["tag", "dek"] {
            let server = memory(true).await;
            let a = memory(true).await;
            create(&a, "v", PASSWORD).await;
            let forged = forged_identity_push(&a, |row| row["key"] == kept).await;
            sync(&a, &wire(&server)).await;
            let before = replicated(&*server.store).await;
            let (status, body) = server.vault.sync_handle(forged.as_bytes()).await;
            assert_eq!(status, 422, "{kept} alone: {body}");
            assert!(body.contains("identity object"), "{body}");
            assert_eq!(replicated(&*server.store).await, before, "{kept} alone");
        }
    });
}

/// Identity objects around a push page's boundary go whole into one page or the next: with
/// settings (sorted first) numbered so that the 1,000-row boundary falls at each place among an
/// identity's and its three secret slots' rows in turn, every push is stored.
#[test]
fn push_pages_never_split_an_identity_object() {
    block_on(async {
        for settings in 986..=999 {
            let server = memory(true).await;
            let a = memory(true).await;
            create(&a, "v", PASSWORD).await;
            for i in 0..settings {
                a.vault
                    .set_vault_setting(&format!("k{i:04}"), "v")
                    .await
                    .unwrap();
            }
            for i in 0..3 {
                a.vault
                    .secret_add(&pw(PASSWORD), &pw(&format!("another secret number {i}")))
                    .await
                    .unwrap();
            }
            let remote = wire(&server);
            let pushed = a.vault.sync(&remote, None).await;
            assert!(pushed.is_ok(), "{settings} settings: {pushed:?}");
            let b = memory(true).await;
            sync(&b, &remote).await;
            converged(&[&a, &b, &server]).await;
        }
    });
}

/// The server cannot check that an identity's wrapped key opens (it holds no key), so a bad
/// client can push an identity object that carries a real identity's tag, and its `dek`, copied
/// under another id (where the `dek` opens nothing: its associated data names the first id).
/// Found by an audit of SYNC.md: after one sync every replica answered `DECRYPTION_FAILED` to
/// the right password. A damaged object is now skipped when another of the secret's objects
/// opens, so the replicas keep reading, writing and unlocking.
#[test]
fn a_forged_identity_object_with_a_real_tag_locks_no_one_out() {
    block_on(async {
        for forgery in ["copied dek"] {
            let server = memory(true).await;
            let a = memory(true).await;
            let token = create(&a, "before", PASSWORD).await;
            let forged = forged_identity_push(&a, |_| true).await;
            sync(&a, &wire(&server)).await;
            let (status, body) = server.vault.sync_handle(forged.as_bytes()).await;
            assert_eq!(status, 200, "{forgery}: {body}");

            let b = memory(true).await;
            let remote = wire(&server);
            sync(&a, &remote).await;
            sync(&b, &remote).await;
            for node in [&a, &b] {
                node.vault.lock();
                assert!(node.vault.unlock(&pw(PASSWORD)).await.unwrap(), "{forgery}");
                assert_eq!(
                    node.vault.token_read(&token, &pw(PASSWORD)).await.unwrap(),
                    "before",
                    "{forgery}"
                );
            }
            let after = create(&b, "after", PASSWORD).await;
            sync(&b, &remote).await;
            sync(&a, &remote).await;
            assert_eq!(
                a.vault.token_read(&after, &pw(PASSWORD)).await.unwrap(),
                "after",
                "{forgery}"
            );
            // Another secret still finds nothing to open, and the wrong one is still refused.
            assert_eq!(
                a.vault
                    .token_read(&token, &pw("another password entirely"))
                    .await
                    .unwrap_err()
                    .code(),
                ErrorCode::InvalidPassword
            );
        }
    });
}

/// A replica holding a record (its token returned) under [`PASSWORD`], whose identity has a
/// second secret ([`NEW`]), synced to `server`; with its push, and the slot's `identity` row in it.
async fn synced_slot(server: &Node) -> (Node, String, serde_json::Value, serde_json::Value) {
    let a = memory(true).await;
    let token = create(&a, "v", PASSWORD).await;
    a.vault.secret_add(&pw(PASSWORD), &pw(NEW)).await.unwrap();
    let recording = Recording {
        inner: wire(server),
        pushes: Default::default(),
    };
    a.vault.sync(&recording, None).await.unwrap();
    let push: serde_json::Value =
        serde_json::from_str(&recording.pushes.lock().unwrap()[0]).unwrap();
    let slot_owner = push["rows"]
        .as_array()
        .unwrap()
        .iter()
        .find(|row| row["key"] == "identity")
        .expect("the slot's identity row")
        .clone();
    (a, token, push, slot_owner)
}

/// Found by a re-audit of SYNC.md: one forged row, an `identity` row put onto a real
/// identity's own object (as if it were a slot of another), was stored, and then every replica
/// answered DECRYPTION_FAILED to the identity's secret: its key was looked up under the named
/// id. Readers now fall back to the object's own id. And a slot's `identity` row removed alone
/// (which left the slot reading as an identity its key was not wrapped for) is refused.
#[test]
fn a_forged_identity_row_locks_no_one_out_and_a_slot_keeps_its_identity_row() {
    block_on(async {
        let server = memory(true).await;
        let (a, token, push, slot_owner) = synced_slot(&server).await;
        let identity = slot_owner["value"].as_str().unwrap();
        let slot = slot_owner["objectId"].as_str().unwrap();
        let send = |rows: serde_json::Value| {
            let mut forged = push.clone();
            forged["rows"] = rows;
            forged["checkpoint"] = serde_json::Value::Null;
            forged.to_string()
        };
        // The slot's identity row removed alone: refused, nothing stored.
        let before = replicated(&*server.store).await;
        let lone_removal = send(serde_json::json!([{
            "t": "gone", "kind": "meta", "objectType": "password_identity", "objectId": slot,
            "key": "identity", "rev": slot_owner["rev"],
            "deletedAt": 1,
        }]));
        let (status, body) = server.vault.sync_handle(lone_removal.as_bytes()).await;
        assert_eq!(status, 422, "{body}");
        assert_eq!(replicated(&*server.store).await, before);
        // An identity row put onto the identity itself: stored (the server cannot tell it from
        // a slot's), and harmless.
        let mut onto_identity = slot_owner.clone();
        onto_identity["objectId"] = identity.into();
        onto_identity["value"] = format!("p_{}", "e".repeat(32)).into();
        let (status, body) = server
            .vault
            .sync_handle(send(serde_json::json!([onto_identity])).as_bytes())
            .await;
        assert_eq!(status, 200, "{body}");
        let remote = wire(&server);
        let fresh = memory(true).await;
        sync(&a, &remote).await;
        sync(&fresh, &remote).await;
        for node in [&a, &fresh] {
            for secret in [PASSWORD, NEW] {
                node.vault.lock();
                assert!(node.vault.unlock(&pw(secret)).await.unwrap(), "{secret}");
                assert_eq!(
                    node.vault.token_read(&token, &pw(secret)).await.unwrap(),
                    "v"
                );
            }
        }
        let made = create(&fresh, "after", PASSWORD).await;
        sync(&fresh, &remote).await;
        sync(&a, &remote).await;
        assert_eq!(a.vault.token_read(&made, &pw(NEW)).await.unwrap(), "after");
    });
}

/// A password that is not [`PASSWORD`] or [`NEW`].
const THIRD: &str = "a third password entirely";
const FOURTH: &str = "a fourth secret";
const FIFTH: &str = "and a fifth one";

/// On each of `nodes`, after a lock: `record` opens with `opener`, and every secret of
/// `closed` is INVALID_PASSWORD (it opens neither a record nor an identity).
async fn opens_only(nodes: &[&Node], record: (&str, &str), opener: &str, closed: &[&str]) {
    for node in nodes {
        node.vault.lock();
        assert_eq!(
            node.vault.token_read(record.0, &pw(opener)).await.unwrap(),
            record.1
        );
        for secret in closed {
            assert_eq!(
                node.vault.unlock(&pw(secret)).await.unwrap_err().code(),
                ErrorCode::InvalidPassword,
                "{secret} opens nothing"
            );
        }
    }
}

/// On each of `nodes`, after a lock: every `(token, value)` of `records` reads `value` with
/// each secret of `secrets` (`context` names the case in a failure).
async fn opens_with(nodes: &[&Node], records: &[(&str, &str)], secrets: &[&str], context: &str) {
    for node in nodes {
        for (token, value) in records {
            for secret in secrets {
                node.vault.lock();
                assert_eq!(
                    node.vault.token_read(token, &pw(secret)).await.unwrap(),
                    *value,
                    "{context} {secret}"
                );
            }
        }
    }
}

/// Both replicas synced, then an identity operation on each while apart, then syncs until
/// they agree; returns the two replicas, a fresh one synced after, and the records' tokens.
async fn race(
    setup_slot: bool,
    on_a: impl AsyncFnOnce(&Node),
    on_b: impl AsyncFnOnce(&Node),
) -> (Node, Node, Node, Vec<String>) {
    let server = memory(true).await;
    let (a, b) = (memory(true).await, memory(true).await);
    let remote = wire(&server);
    let tokens = create_all(&a, &["one".into(), "two".into()]).await;
    if setup_slot {
        a.vault.secret_add(&pw(PASSWORD), &pw(NEW)).await.unwrap();
    }
    sync(&a, &remote).await;
    sync(&b, &remote).await;
    on_a(&a).await;
    on_b(&b).await;
    for node in [&a, &b, &a, &b] {
        sync(node, &remote).await;
    }
    converged(&[&a, &b, &server]).await;
    let fresh = memory(true).await;
    sync(&fresh, &remote).await;
    (a, b, fresh, tokens)
}

/// Found by a re-audit of SYNC.md: a password change made on one replica while another rotated
/// the identity away revived the retired identity (its rows merged per row, the later write
/// winning over the removal): the old key opened again, with no record, and values sealed
/// under it were stored. An identity's removal is final now, as a record's hard delete is.
#[test]
fn a_rotation_keeps_the_old_key_retired_against_a_concurrent_password_change() {
    block_on(async {
        let (a, b, fresh, tokens) = race(
            false,
            async |a| rotate_to_new(a).await,
            async |b| {
                b.vault
                    .bulk_rekey(&pw(PASSWORD), &pw(THIRD), &RekeyOptions::default())
                    .await
                    .unwrap();
            },
        )
        .await;
        opens_only(
            &[&a, &b, &fresh],
            (&tokens[0], "one"),
            NEW,
            &[PASSWORD, THIRD],
        )
        .await;
    });
}

/// Found by the same re-audit: a slot removed on one replica while another changed that
/// slot's secret merged into a slot without its `identity` row, which the new secret found
/// and could not open (DECRYPTION_FAILED for good, on every replica). The removal wins now:
/// the new secret opens nothing, and the identity's own secret everything.
#[test]
fn a_slot_removed_on_one_replica_while_another_changes_its_secret_stays_removed() {
    block_on(async {
        let (a, b, fresh, tokens) = race(
            true,
            async |a| a.vault.secret_remove(&pw(NEW)).await.unwrap(),
            async |b| {
                b.vault
                    .bulk_rekey(&pw(NEW), &pw(THIRD), &RekeyOptions::default())
                    .await
                    .unwrap();
            },
        )
        .await;
        opens_only(
            &[&a, &b, &fresh],
            (&tokens[1], "two"),
            PASSWORD,
            &[NEW, THIRD],
        )
        .await;
    });
}

/// Found by the re-audit of SYNC.md, and left open until now: a secret added on one replica
/// while another rotated its identity away survived as an orphan slot, its `identity` row
/// naming the removed identity. Its secret opened the retired key, which opens no record, and a
/// device writing under it was stranded. The rotation wins now, in either order the two reach
/// the server: the slot goes with the identity it belonged to, and the added secret opens
/// nothing, on every replica.
#[test]
fn a_secret_added_on_one_replica_while_another_rotates_its_identity_goes_with_it() {
    block_on(async {
        let add = async |node: &Node| {
            node.vault
                .secret_add(&pw(PASSWORD), &pw(NEW))
                .await
                .unwrap()
        };
        let rotate = async |node: &Node| rotate_to(node, THIRD).await;
        // `race` syncs A first: the slot reaches the server before the rotation, then after it.
        for (first, (a, b, fresh, tokens)) in [
            ("the slot", race(false, add, rotate).await),
            ("the rotation", race(false, rotate, add).await),
        ] {
            opens_only(
                &[&a, &b, &fresh],
                (&tokens[0], "one"),
                THIRD,
                &[PASSWORD, NEW],
            )
            .await;
            // `race` checked that the replicas and the server agree: none holds a live slot.
            let live_slots = replicated(&*fresh.store)
                .await
                .into_values()
                .filter(|row| match row {
                    Row::Meta {
                        key,
                        version: MetaVersion::Value { .. },
                    } => key.key == OWNER_KEY,
                    _ => false,
                })
                .count();
            assert_eq!(live_slots, 0, "{first} synced first");
        }
    });
}

/// A transport that loses every push: the request on its way (`reaches`: false, the server never
/// sees it) or its answer (the server acted).
struct LosePush<'a> {
    inner: &'a Wire<'a>,
    reaches: bool,
}

#[async_trait]
impl SyncTransport for LosePush<'_> {
    async fn exchange(&self, body: String) -> Result<(u16, Vec<u8>)> {
        if body.starts_with(r#"{"sync":1,"op":"push""#) {
            if self.reaches {
                self.inner.exchange(body).await?;
            }
            return Err(connection_dropped());
        }
        self.inner.exchange(body).await
    }
}

/// A slot can reach a replica that rotated its identity away before the server heard of the
/// rotation (the replica's sync pulled the slot, then its push was lost). The server removes such
/// a slot once it does; the replica removed nothing, so its added secret still opened the
/// retired key there, and a value written with it meanwhile was sealed under that key and
/// stranded. The replica removes the slot as it pulls it now, as the server would: the value
/// gets an identity of its own and reaches every replica, and the rotation still wins.
#[test]
fn a_slot_pulled_for_an_identity_rotated_away_here_goes_at_once() {
    block_on(async {
        for reaches in [false, true] {
            let server = memory(true).await;
            let (a, b) = (memory(true).await, memory(true).await);
            let remote = wire(&server);
            let tokens = create_all(&a, &["one".into()]).await;
            sync(&a, &remote).await;
            sync(&b, &remote).await;
            rotate_to(&a, THIRD).await;
            b.vault.secret_add(&pw(PASSWORD), &pw(NEW)).await.unwrap();
            sync(&b, &remote).await;
            let lossy = LosePush {
                inner: &remote,
                reaches,
            };
            assert!(a.vault.sync(&lossy, None).await.is_err());
            let written = create(&a, "written with the added secret", NEW).await;
            for node in [&a, &b, &a, &b] {
                let report = sync(node, &remote).await;
                assert!(
                    report.stranded.is_empty(),
                    "push reaches: {reaches} {report:?}"
                );
            }
            converged(&[&a, &b, &server]).await;
            let fresh = memory(true).await;
            sync(&fresh, &remote).await;
            opens_only(&[&a, &b, &fresh], (&tokens[0], "one"), THIRD, &[PASSWORD]).await;
            let context = format!("push reaches: {reaches}");
            opens_with(
                &[&a, &b, &fresh],
                &[(&written, "written with the added secret")],
                &[NEW],
                &context,
            )
            .await;
        }
    });
}

/// Found by the simulation (through rotations, seed 37): a password change to a secret added
/// to the identity promoted a slot onto the identity's own rows (the old password's slot
/// went), the slot with the smallest object id, not necessarily the target's. Another device
/// that meanwhile removed that other secret removed its slot object only, and the secret went
/// on opening the vault through the identity's own rows. No secret moves now (the own rows
/// become vacant): a concurrent removal of any other added secret stays final.
#[test]
fn a_password_change_to_an_added_secret_keeps_a_concurrent_removal_of_another_final() {
    block_on(async {
        for (target, other) in [(NEW, THIRD), (THIRD, NEW)] {
            let server = memory(true).await;
            let (a, b, token, _) = two_added_secrets(&server).await;
            // A makes one added secret its password while B forgets the other.
            a.vault
                .bulk_rekey(&pw(PASSWORD), &pw(target), &RekeyOptions::default())
                .await
                .unwrap();
            b.vault.secret_remove(&pw(other)).await.unwrap();
            let fresh = settle_race(&server, &a, &b).await;
            opens_only(
                &[&a, &b, &fresh],
                (&token, "one"),
                target,
                &[PASSWORD, other],
            )
            .await;
        }
    });
}

/// Found by the simulation (through rotations, seed 105): `secretRemove` of an identity's own
/// secret moved an added secret onto the identity's own rows (the slot with the smallest object
/// id), out of reach of a `secretRemove` of that secret made meanwhile on another device, which
/// removed the slot object it knew: the removed secret opened the vault again, on every device.
/// Now the own rows become a vacant slot and no secret moves, so with a third secret left both
/// removals stand. B removes the added secret whose slot the old code promoted.
#[test]
fn removing_the_own_secret_while_another_device_removes_an_added_one_keeps_both_removals() {
    block_on(async {
        let server = memory(true).await;
        let (a, b, token, by_slot) = two_added_secrets(&server).await;
        let (removed, kept) = (by_slot[0], by_slot[1]);
        a.vault.secret_remove(&pw(PASSWORD)).await.unwrap();
        b.vault.secret_remove(&pw(removed)).await.unwrap();
        let fresh = settle_race(&server, &a, &b).await;
        opens_only(
            &[&a, &b, &fresh],
            (&token, "one"),
            kept,
            &[PASSWORD, removed],
        )
        .await;
    });
}

/// Two replicas joined to `server`, both holding one record ("one", its token returned) under
/// `PASSWORD` with `NEW` and `THIRD` added to its identity (returned in the order of their
/// slots' object ids).
async fn two_added_secrets(server: &Node) -> (Node, Node, String, Vec<&'static str>) {
    let (a, b) = (memory(true).await, memory(true).await);
    let remote = wire(server);
    let token = create_all(&a, &["one".into()]).await.remove(0);
    let mut slots = Vec::new();
    for added in [NEW, THIRD] {
        let before = slot_ids(&a).await;
        a.vault.secret_add(&pw(PASSWORD), &pw(added)).await.unwrap();
        let slot = slot_ids(&a).await.difference(&before).next().cloned();
        slots.push((slot.expect("a new slot"), added));
    }
    slots.sort();
    sync(&a, &remote).await;
    sync(&b, &remote).await;
    (a, b, token, slots.into_iter().map(|(_, s)| s).collect())
}

/// Sync `a` and `b` (changed while apart) until they agree with `server`; returns a fresh
/// replica synced after them.
async fn settle_race(server: &Node, a: &Node, b: &Node) -> Node {
    let remote = wire(server);
    for node in [a, b, a, b] {
        sync(node, &remote).await;
    }
    converged(&[a, b, server]).await;
    let fresh = memory(true).await;
    sync(&fresh, &remote).await;
    fresh
}

/// The object ids of the secret slots `node` stores.
async fn slot_ids(node: &Node) -> std::collections::BTreeSet<String> {
    replicated(&*node.store)
        .await
        .into_keys()
        .filter_map(|key| match key {
            vaultstore_wasm::sync::RowKey::Meta(meta) if meta.key == OWNER_KEY => {
                Some(meta.object_id)
            }
            _ => None,
        })
        .collect()
}

/// Two devices that each remove one of an identity's last two secrets would together leave its
/// records without a key. The server refuses whichever removal reaches it second
/// (`referenced`), and that device takes its secret back from the answer: the records open
/// everywhere with the secret the later removal named, and the earlier removal stands.
#[test]
fn removing_the_last_two_secrets_on_two_devices_keeps_the_one_removed_later() {
    block_on(async {
        for a_first in [true, false] {
            let server = memory(true).await;
            let (a, b) = (memory(true).await, memory(true).await);
            let remote = wire(&server);
            let tokens = create_all(&a, &["one".into()]).await;
            a.vault.secret_add(&pw(PASSWORD), &pw(NEW)).await.unwrap();
            sync(&a, &remote).await;
            sync(&b, &remote).await;
            // A forgets the password (its own rows become vacant), B the added secret.
            a.vault.secret_remove(&pw(PASSWORD)).await.unwrap();
            b.vault.secret_remove(&pw(NEW)).await.unwrap();
            let (first, second) = if a_first { (&a, &b) } else { (&b, &a) };
            sync(first, &remote).await;
            let refused = sync(second, &remote).await;
            // Taken back: the slot's three rows on B, the own `tag` and `dek` on A.
            let rows = if a_first { 3 } else { 2 };
            assert_eq!(refused.conflicts, rows, "{refused:?}");
            for node in [&a, &b] {
                sync(node, &remote).await;
            }
            converged(&[&a, &b, &server]).await;
            let fresh = memory(true).await;
            sync(&fresh, &remote).await;
            let (opener, closed) = if a_first {
                (NEW, PASSWORD)
            } else {
                (PASSWORD, NEW)
            };
            opens_only(&[&a, &b, &fresh], (&tokens[0], "one"), opener, &[closed]).await;
        }
    });
}

/// The server removes a slot whose identity is gone, but records link to identities, never to
/// slots: an `identity` row forged onto a live identity, naming a retired one, removes nothing,
/// and the identity's records keep opening.
#[test]
fn an_identity_row_forged_onto_an_identity_naming_a_retired_one_removes_nothing() {
    block_on(async {
        let server = memory(true).await;
        let (a, token, push, slot_owner) = synced_slot(&server).await;
        let retired = slot_owner["value"].as_str().unwrap().to_owned();
        // A rotation retires the identity (and its slot), and makes another.
        rotate_to(&a, THIRD).await;
        let remote = wire(&server);
        sync(&a, &remote).await;
        let current = replicated(&*server.store)
            .await
            .into_values()
            .find_map(|row| match row {
                Row::Record {
                    version: vaultstore_wasm::sync::RecordVersion::Live(live),
                    ..
                } => live.password_id,
                _ => None,
            })
            .expect("the record's identity");
        assert_ne!(current, retired);
        let mut forged_row = slot_owner;
        forged_row["objectId"] = current.into();
        let mut forged = push;
        forged["rows"] = serde_json::json!([forged_row]);
        forged["checkpoint"] = serde_json::Value::Null;
        let (status, body) = server
            .vault
            .sync_handle(forged.to_string().as_bytes())
            .await;
        assert_eq!(status, 200, "{body}");
        let fresh = memory(true).await;
        sync(&a, &remote).await;
        sync(&fresh, &remote).await;
        opens_only(&[&a, &fresh], (&token, "v"), THIRD, &[PASSWORD, NEW]).await;
    });
}

/// A live record's token and `createdAt` never change: a push that gives a record the server
/// holds another one is refused whole, and the record keeps opening everywhere.
#[test]
fn a_push_that_renames_a_record_is_refused() {
    block_on(async {
        let server = memory(false).await;
        let a = memory(false).await;
        let token = create(&a, "v", PASSWORD).await;
        let remote = wire(&server);
        sync(&a, &remote).await;
        let b = memory(false).await;
        sync(&b, &remote).await;
        b.vault
            .token_update(&token, "x", &pw(PASSWORD))
            .await
            .unwrap();
        let recording = Recording {
            inner: wire(&server),
            pushes: Default::default(),
        };
        b.vault.sync(&recording, None).await.unwrap();
        let before = replicated(&*server.store).await;
        // B's push of the update, sent again with the record renamed, then with its creation
        // time moved.
        let push = recording.pushes.lock().unwrap()[0].clone();
        for (field, forged_value) in [
            ("token", serde_json::Value::from("tk_forged")),
            ("createdAt", serde_json::Value::from(1)),
        ] {
            let forged = with_record_field(&push, field, forged_value);
            let (status, body) = server
                .vault
                .sync_handle(forged.to_string().as_bytes())
                .await;
            assert_eq!(status, 422, "{field}: {body}");
            assert!(body.contains("never change"), "{body}");
            assert_eq!(replicated(&*server.store).await, before, "{field}");
        }
        sync(&a, &remote).await;
        assert_eq!(
            a.vault.token_read(&token, &pw(PASSWORD)).await.unwrap(),
            "x"
        );
    });
}

#[test]
fn hostile_requests_get_a_json_error_and_change_nothing() {
    block_on(async {
        let server = memory(false).await;
        let a = memory(false).await;
        create(&a, "v", PASSWORD).await;
        sync(&a, &wire(&server)).await;
        let before = replicated(&*server.store).await;
        for body in [
            "not json".to_owned(),
            "{}".to_owned(),
            r#"{"sync":2,"op":"pull"}"#.to_owned(),
            r#"{"sync":1,"op":"push","vault":{"kdf":"x","empty":false},"checkpoint":null,"rows":[{"t":"record"}]}"#.to_owned(),
            "[".repeat(100_000),
        ] {
            let (status, response) = server.vault.sync_handle(body.as_bytes()).await;
            assert!((400..500).contains(&status), "{status} for {body:.40}");
            let parsed: serde_json::Value = serde_json::from_str(&response).unwrap();
            assert!(parsed["error"]["code"].is_string());
        }
        assert_eq!(replicated(&*server.store).await, before);
    });
}

/// Found by `tests/sync_sim.rs` (fixed): a rotation whose removal of the old identity reaches the
/// server after another replica stored a record sealed under that identity. The server refuses
/// the removal (`referenced`, it keeps the identity) and answers with its live version; the
/// rotating replica used to merge that answer as a pull would, where its own newer tombstone won,
/// and pushed the removal again at every sync, for good (SYNC.md 1). It now takes the server's
/// version, and everyone converges on the identity kept.
#[test]
fn a_rotation_after_a_write_under_the_old_identity_reached_the_server_converges() {
    block_on(async {
        let server = memory(true).await;
        let (a, b) = (memory(true).await, memory(true).await);
        let remote = wire(&server);
        create(&a, "first", PASSWORD).await;
        sync(&a, &remote).await;
        sync(&b, &remote).await;
        // A writes under the identity B is about to rotate away, and syncs first.
        let from_a = create(&a, "written by a", PASSWORD).await;
        rotate_to_new(&b).await;
        sync(&a, &remote).await;
        for _ in 0..3 {
            sync(&b, &remote).await;
            sync(&a, &remote).await;
        }
        // A's write is not lost: readable on A with the secret it was written with.
        a.vault.lock();
        assert_eq!(
            a.vault.token_read(&from_a, &pw(PASSWORD)).await.unwrap(),
            "written by a"
        );
        converged(&[&a, &b, &server]).await;
    });
}

/// Found by `tests/sync_sim.rs` (fixed; identities on): two replicas that each make an
/// identity for one password while apart (the vault had none for it yet: a new vault, or its
/// identity was pruned with its last record) converge on two identities with the same `tag`
/// (tags are unique only for local writes, not for `PutVersion`), and then the records sealed
/// under one of them answer `INVALID_PASSWORD` to the right password on every replica: the
/// password finds one identity by its tag and never tries the other (SYNC.md 3, 6).
#[test]
fn two_replicas_that_make_the_first_identity_offline_both_stay_readable() {
    block_on(async {
        let (server, a, b, [from_a, from_b]) = two_identities_of(PASSWORD).await;
        settle(&server, &[&a, &b]).await;
        let records = [
            (from_a.as_str(), "written by a"),
            (from_b.as_str(), "written by b"),
        ];
        opens_with(&[&a, &b], &records, &[PASSWORD], "").await;
    });
}

/// A server and two replicas that joined its vault while it was empty (no identity yet).
async fn joined_empty() -> (Node, Node, Node) {
    let server = memory(true).await;
    let (a, b) = (memory(true).await, memory(true).await);
    let remote = wire(&server);
    sync(&a, &remote).await;
    sync(&b, &remote).await;
    (server, a, b)
}

/// Two replicas that join one empty vault and each first use `first` while apart, each making
/// an identity for it; after they sync, `first` opens two identities everywhere. Returns the
/// server, the replicas, and the token each wrote.
async fn two_identities_of(first: &str) -> (Node, Node, Node, [String; 2]) {
    let (server, a, b) = joined_empty().await;
    let remote = wire(&server);
    let from_a = create(&a, "written by a", first).await;
    let from_b = create(&b, "written by b", first).await;
    for node in [&a, &b, &a] {
        sync(node, &remote).await;
    }
    (server, a, b, [from_a, from_b])
}

/// Sync `nodes` in turn, twice, then check they agree.
async fn settle(server: &Node, nodes: &[&Node]) {
    let remote = wire(server);
    for _ in 0..2 {
        for node in nodes {
            sync(node, &remote).await;
        }
    }
    let mut all = vec![server];
    all.extend_from_slice(nodes);
    converged(&all).await;
}

/// Found by an audit of SYNC.md 6 and 7 with identities sync made: a password change or a
/// rotation moved only the canonical identity of the old secret, so the other's records kept
/// opening with the old password and not with the new one, on every replica.
#[test]
fn a_password_change_or_rotation_covers_every_identity_of_the_old_secret() {
    block_on(async {
        for rotate in [false, true] {
            let (server, a, b, tokens) = two_identities_of(PASSWORD).await;
            let options = RekeyOptions {
                rotate,
                ..RekeyOptions::default()
            };
            let moved = a
                .vault
                .bulk_rekey(&pw(PASSWORD), &pw(NEW), &options)
                .await
                .unwrap();
            assert_eq!(moved, 2, "rotate: {rotate}");
            settle(&server, &[&a, &b]).await;
            let fresh = memory(true).await;
            sync(&fresh, &wire(&server)).await;
            for (token, value) in tokens.iter().zip(["written by a", "written by b"]) {
                opens_only(&[&a, &b, &fresh], (token, value), NEW, &[PASSWORD]).await;
            }
        }
    });
}

/// `secretAdd` wraps one identity's key: of a secret that sync left with two identities, the
/// added secret opened only one identity's records. Each gets a slot for it now.
#[test]
fn a_secret_added_to_a_secret_with_two_identities_opens_every_record() {
    block_on(async {
        let (server, a, b, tokens) = two_identities_of(PASSWORD).await;
        a.vault.secret_add(&pw(PASSWORD), &pw(NEW)).await.unwrap();
        settle(&server, &[&a, &b]).await;
        let records: Vec<(&str, &str)> = tokens
            .iter()
            .map(String::as_str)
            .zip(["written by a", "written by b"])
            .collect();
        opens_with(&[&a, &b], &records, &[PASSWORD, NEW], "").await;
    });
}

/// The identity `token`'s live record is sealed under, as `node` stores it.
async fn identity_of(node: &Node, token: &str) -> String {
    replicated(&*node.store)
        .await
        .into_values()
        .find_map(|row| match row {
            Row::Record {
                version: vaultstore_wasm::sync::RecordVersion::Live(live),
                ..
            } if live.token == token => live.password_id,
            _ => None,
        })
        .expect("a live record with an identity")
}

/// A secret added to both identities of a password (a slot on each) and then removed on the
/// replica that had meanwhile deleted the last record of one of them, which took that slot away
/// as emptied: the removal found only the other slot. When a record the other replica wrote
/// under the emptied identity brought it back, the slot came back with it, and the removed
/// secret opened the vault again (the simulation's seed 306). The removal now reaches the
/// emptied slot too, for good.
#[test]
fn a_removed_secret_stays_removed_when_the_identity_it_was_emptied_with_comes_back() {
    block_on(async {
        let (server, a, b, tokens) = two_identities_of(PASSWORD).await;
        b.vault.secret_add(&pw(PASSWORD), &pw(NEW)).await.unwrap();
        settle(&server, &[&a, &b]).await;
        // a writes under one of the two identities; b, not knowing, deletes that identity's
        // only other record, then removes the added secret.
        let later = create(&a, "written by a later", PASSWORD).await;
        let identity = identity_of(&a, &later).await;
        let mut emptied = None;
        for token in &tokens {
            if identity_of(&b, token).await == identity {
                emptied = Some(token);
            }
        }
        assert!(b.vault.token_delete(emptied.unwrap()).await.unwrap());
        b.vault.secret_remove(&pw(NEW)).await.unwrap();
        settle(&server, &[&b, &a]).await;
        let kept = tokens.iter().find(|t| Some(*t) != emptied).unwrap();
        let value = |t: &String| {
            if t == &tokens[0] {
                "written by a"
            } else {
                "written by b"
            }
        };
        for (token, value) in [(&later, "written by a later"), (kept, value(kept))] {
            opens_only(&[&a, &b], (token.as_str(), value), PASSWORD, &[NEW]).await;
        }
    });
}

/// A secret added to an identity on one replica (a slot) and first used on another while apart
/// (an identity of its own, with a record) opens both after sync. `secretRemove` of it deleted
/// the rows of every object holding its tag as if all were slots, the other identity's own key
/// rows too, locking its record out until a sync brought them back. It is refused now, as the
/// last secret of an identity with records, and a rekey to another secret moves that record.
#[test]
fn a_secret_that_opens_two_identities_is_removed_without_locking_a_record_out() {
    block_on(async {
        let (server, a, b) = joined_empty().await;
        let from_a = create(&a, "under the password", PASSWORD).await;
        a.vault.secret_add(&pw(PASSWORD), &pw(THIRD)).await.unwrap();
        let from_b = create(&b, "under the third secret", THIRD).await;
        settle(&server, &[&a, &b]).await;
        let refused = a.vault.secret_remove(&pw(THIRD)).await.unwrap_err();
        assert_eq!(refused.code(), ErrorCode::InvalidArgument, "{refused}");
        a.vault.lock();
        assert_eq!(
            a.vault.token_read(&from_b, &pw(THIRD)).await.unwrap(),
            "under the third secret",
            "nothing changed"
        );
        // The remedy the message names: every record of the third secret under the password.
        assert_eq!(
            a.vault
                .bulk_rekey(&pw(THIRD), &pw(PASSWORD), &RekeyOptions::default())
                .await
                .unwrap(),
            2
        );
        settle(&server, &[&a, &b]).await;
        opens_only(
            &[&a, &b],
            (&from_a, "under the password"),
            PASSWORD,
            &[THIRD],
        )
        .await;
        opens_only(
            &[&a, &b],
            (&from_b, "under the third secret"),
            PASSWORD,
            &[THIRD],
        )
        .await;
    });
}

/// A creates the password's only record, A and B sync, and A deletes it and syncs: its identity
/// is emptied on the server, and B still holds it. Returns the deleted record's token.
async fn emptied_on_a(server: &Node, a: &Node, b: &Node) -> String {
    let remote = wire(server);
    let first = create(a, "first", PASSWORD).await;
    sync(a, &remote).await;
    sync(b, &remote).await;
    a.vault.token_delete(&first).await.unwrap();
    sync(a, &remote).await;
    first
}

/// A revived identity is an ordinary one: a password change on the replica that revived it
/// re-wraps it (one identity, no record re-encrypted), and after the sync the new password opens
/// the value everywhere and the old one nothing.
#[test]
fn a_password_change_after_reviving_an_emptied_identity_reaches_every_replica() {
    block_on(async {
        let (server, a, b) = (memory(true).await, memory(true).await, memory(true).await);
        let remote = wire(&server);
        emptied_on_a(&server, &a, &b).await;
        let offline = create(&b, "written offline", PASSWORD).await;
        assert!(sync(&b, &remote).await.stranded.is_empty());
        let before = sealed_values(&b, std::slice::from_ref(&offline)).await;
        assert_eq!(
            b.vault
                .bulk_rekey(&pw(PASSWORD), &pw(THIRD), &RekeyOptions::default())
                .await
                .unwrap(),
            1
        );
        // A re-wrap: the value was not sealed again.
        assert_eq!(
            sealed_values(&b, std::slice::from_ref(&offline)).await,
            before
        );
        settle(&server, &[&a, &b]).await;
        opens_only(&[&a, &b], (&offline, "written offline"), THIRD, &[PASSWORD]).await;
    });
}

/// A password change that reached the server before the password's last record was deleted
/// stands against a replica that wrote under the old password meanwhile: that replica brings the
/// identity back for its value (it is not stranded), but with the server's version of the
/// identity's rows, the changed password's, not its own older ones. Before, it wrote its own
/// rows back, and the old password opened everything again while the new one opened nothing.
///
/// The same holds when the change never reached the server before the deletion did: made on
/// the deleting replica in the same offline stretch (it pushes the removal with the version it
/// replaced there), or on the server's own vault (which keeps that version itself).
#[test]
fn a_password_change_before_the_last_record_went_stands_when_a_stale_replica_brings_it_back() {
    block_on(async {
        for sqlite_server in [false, true] {
            for (changer, synced_between) in [("a", true), ("a", false), ("server", false)] {
                let server = if sqlite_server {
                    sqlite(true).await
                } else {
                    memory(true).await
                };
                let (a, b) = (memory(true).await, memory(true).await);
                let remote = wire(&server);
                let first = create(&a, "first", PASSWORD).await;
                sync(&a, &remote).await;
                sync(&b, &remote).await;
                let deleter = if changer == "a" { &a } else { &server };
                deleter
                    .vault
                    .bulk_rekey(&pw(PASSWORD), &pw(THIRD), &RekeyOptions::default())
                    .await
                    .unwrap();
                if synced_between {
                    sync(&a, &remote).await;
                }
                deleter.vault.token_delete(&first).await.unwrap();
                if changer == "a" {
                    sync(&a, &remote).await;
                }
                let offline = create(&b, "written offline", PASSWORD).await;
                let report = sync(&b, &remote).await;
                assert!(report.stranded.is_empty(), "{report:?}");
                settle(&server, &[&a, &b]).await;
                let nodes = [&a, &b, &server];
                opens_only(&nodes, (&offline, "written offline"), THIRD, &[PASSWORD]).await;
                let fresh = memory(true).await;
                sync(&fresh, &remote).await;
                opens_only(&[&fresh], (&offline, "written offline"), THIRD, &[PASSWORD]).await;
            }
        }
    });
}

/// As above, with the password changed on a third replica C, a second before the deletion. If
/// C syncs first, the pulled removal replaces its change there: C keeps the version it
/// replaced, as a deletion made there would, and pushes the removal back with it; the server
/// keeps it, and the stale replica brings the identity back with it. If the stale replica syncs
/// first, it brings the identity back with the old password's rows, at a revision after C's
/// change; the server answers C's pull of them with the version they write back, which is
/// older than C's change, so C writes its change again, after them. Before, the change was lost
/// either way: the old password opened the stale replica's value everywhere, and the new one
/// opened nothing.
#[test]
fn a_password_change_on_a_third_replica_stands_whichever_replica_syncs_first() {
    block_on(async {
        for (sqlite_server, third_first) in
            [(false, true), (true, true), (false, false), (true, false)]
        {
            let clock = TestClock::new(T0);
            let server = if sqlite_server {
                let db = Arc::new(Sqlite::memory());
                let store = SqlStorage::open(db, "vaultstore").await.unwrap();
                timed_on(&clock, Arc::new(store), true).await
            } else {
                clocked(true, &clock).await
            };
            let (a, b, c) = (
                clocked(true, &clock).await,
                clocked(true, &clock).await,
                clocked(true, &clock).await,
            );
            let remote = wire(&server);
            let first = create(&a, "first", PASSWORD).await;
            for node in [&a, &b, &c] {
                sync(node, &remote).await;
            }
            c.vault
                .bulk_rekey(&pw(PASSWORD), &pw(THIRD), &RekeyOptions::default())
                .await
                .unwrap();
            clock.advance(1_000);
            a.vault.token_delete(&first).await.unwrap();
            sync(&a, &remote).await;
            let offline = create(&b, "written offline", PASSWORD).await;
            if third_first {
                let report = sync(&c, &remote).await;
                // The removal replaced the change there (its `tag` and `dek` rows).
                assert_eq!(report.conflicts, 2, "{report:?}");
            }
            let report = sync(&b, &remote).await;
            assert!(report.stranded.is_empty(), "{report:?}");
            if !third_first {
                clock.advance(1_000);
                let report = sync(&c, &remote).await;
                assert_eq!(report.conflicts, 0, "the change stands: {report:?}");
            }
            settle(&server, &[&a, &b, &c]).await;
            let nodes = [&a, &b, &c, &server];
            opens_only(&nodes, (&offline, "written offline"), THIRD, &[PASSWORD]).await;
        }
    });
}

/// As above, with the deleting device's clock three hours ahead when it deletes the last record,
/// and hours or minutes ahead when it changes the password: its sync corrects the clock and
/// re-stamps the removal, which may then come before the version it replaced. That version goes
/// to the server dated just before the removal (the server takes only older ones); before, it
/// was not sent, and the old password came back with the stale device's value.
#[test]
fn a_password_change_stands_when_the_deleting_device_ran_hours_ahead() {
    block_on(async {
        for kept_far in [true, false] {
            let clocks = [TestClock::new(T0), TestClock::new(T0), TestClock::new(T0)];
            let server = clocked(true, &clocks[0]).await;
            let (a, b) = (
                clocked(true, &clocks[1]).await,
                clocked(true, &clocks[2]).await,
            );
            let remote = wire(&server);
            let first = create(&a, "first", PASSWORD).await;
            sync(&a, &remote).await;
            sync(&b, &remote).await;
            // The change hours ahead with the deletion, or minutes ahead (within the server's
            // limit, not re-stamped: the removal's fresh revision must still come after it).
            clocks[1].advance(if kept_far { 3 * HOUR } else { 4 * 60_000 });
            a.vault
                .bulk_rekey(&pw(PASSWORD), &pw(THIRD), &RekeyOptions::default())
                .await
                .unwrap();
            clocks[1].advance(if kept_far { 60_000 } else { 3 * HOUR });
            a.vault.token_delete(&first).await.unwrap();
            for clock in &clocks {
                clock.advance(60_000);
            }
            sync(&a, &remote).await;
            assert!(
                latest_wall(&*server.store).await <= T0 + 3 * 60_000 + 5 * 60_000,
                "nothing on the server is dated hours ahead"
            );
            let offline = create(&b, "written offline", PASSWORD).await;
            let report = sync(&b, &remote).await;
            assert!(report.stranded.is_empty(), "{report:?}");
            settle(&server, &[&a, &b]).await;
            let nodes = [&a, &b, &server];
            opens_only(&nodes, (&offline, "written offline"), THIRD, &[PASSWORD]).await;
        }
    });
}

/// The sealed values of `tokens` on `node`, as stored./// The sealed values of `tokens` on `node`, as stored.
async fn sealed_values(node: &Node, tokens: &[String]) -> Vec<String> {
    node.store
        .records_by_tokens(tokens)
        .await
        .unwrap()
        .into_iter()
        .map(|r| r.expect("the record").value)
        .collect()
}

/// A secret that sync left two identities, one of which another secret opens too (added to it
/// on one replica, first used on the other while apart). `secretAdd` and a password change of it
/// used to make the identities one first, re-encrypting the records of the other under the one
/// kept, which could drop the other secrets of the one merged away. Both now cover each
/// identity in place: every secret opens what it opened before, the added or new one opens
/// everything the old one did, and no record is re-encrypted (API.md: O(1)).
#[test]
fn a_secret_added_or_changed_on_two_identities_covers_each_in_place() {
    block_on(async {
        for round in 0..3 {
            let (server, a, b) = joined_empty().await;
            let from_a = create(&a, "under the password", PASSWORD).await;
            a.vault.secret_add(&pw(PASSWORD), &pw(THIRD)).await.unwrap();
            let from_b = create(&b, "under the third secret", THIRD).await;
            settle(&server, &[&a, &b]).await;
            let tokens = [from_a.clone(), from_b.clone()];
            let sealed = sealed_values(&a, &tokens).await;
            let (add, change) = (round % 2 == 0, round > 0);
            if add {
                a.vault.secret_add(&pw(THIRD), &pw(NEW)).await.unwrap();
            }
            if change {
                let moved = a
                    .vault
                    .bulk_rekey(&pw(THIRD), &pw(FOURTH), &RekeyOptions::default())
                    .await
                    .unwrap();
                assert_eq!(moved, 2, "round {round}");
            }
            settle(&server, &[&a, &b]).await;
            let context = format!("round {round}");
            let mut opening = vec![if change { FOURTH } else { THIRD }];
            if add {
                opening.push(NEW);
            }
            let records = [
                (from_a.as_str(), "under the password"),
                (from_b.as_str(), "under the third secret"),
            ];
            opens_with(&[&a, &b], &records, &opening, &context).await;
            // The password opens what it opened, and nothing more.
            opens_with(&[&a, &b], &records[..1], &[PASSWORD], &context).await;
            for node in [&a, &b] {
                node.vault.lock();
                let refused = node.vault.token_read(&from_b, &pw(PASSWORD)).await;
                assert_eq!(
                    refused.unwrap_err().code(),
                    ErrorCode::InvalidPassword,
                    "{context}"
                );
                if change {
                    node.vault.lock();
                    let old = node.vault.unlock(&pw(THIRD)).await;
                    assert_eq!(old.unwrap_err().code(), ErrorCode::InvalidPassword);
                }
            }
            assert_eq!(sealed_values(&b, &tokens).await, sealed, "{context}");
        }
    });
}

/// Two devices each first use the password while apart, and each adds another secret of its
/// own to the identity it made. A password change moved one identity's records into the
/// other, and that identity's other secret stopped opening them (a documented gap, as the
/// rekey cannot wrap a key for a secret it does not hold). Each identity is re-wrapped in place
/// now, and a secret added after opens both.
#[test]
fn a_password_change_keeps_the_other_secrets_of_every_identity_of_the_old_one() {
    block_on(async {
        let (server, a, b) = joined_empty().await;
        let from_a = create(&a, "written by a", PASSWORD).await;
        a.vault.secret_add(&pw(PASSWORD), &pw(THIRD)).await.unwrap();
        let from_b = create(&b, "written by b", PASSWORD).await;
        b.vault
            .secret_add(&pw(PASSWORD), &pw(FOURTH))
            .await
            .unwrap();
        settle(&server, &[&a, &b]).await;
        let tokens = [from_a.clone(), from_b.clone()];
        let sealed = sealed_values(&a, &tokens).await;
        let moved = a
            .vault
            .bulk_rekey(&pw(PASSWORD), &pw(NEW), &RekeyOptions::default())
            .await
            .unwrap();
        assert_eq!(moved, 2);
        a.vault.secret_add(&pw(NEW), &pw(FIFTH)).await.unwrap();
        settle(&server, &[&a, &b]).await;
        let fresh = memory(true).await;
        sync(&fresh, &wire(&server)).await;
        let nodes = [&a, &b, &fresh];
        let records = [
            (from_a.as_str(), "written by a"),
            (from_b.as_str(), "written by b"),
        ];
        opens_with(&nodes, &records, &[NEW, FIFTH], "").await;
        opens_only(&nodes, records[0], THIRD, &[PASSWORD]).await;
        opens_only(&nodes, records[1], FOURTH, &[PASSWORD]).await;
        assert_eq!(sealed_values(&fresh, &tokens).await, sealed);
    });
}

/// The same secret added to one identity on two replicas while apart leaves two slots of it.
/// A password change re-wrapped one of them, and the old secret kept opening the identity
/// through the other.
#[test]
fn a_password_change_retires_every_slot_of_the_old_secret() {
    block_on(async {
        let server = memory(true).await;
        let (a, b) = (memory(true).await, memory(true).await);
        let remote = wire(&server);
        let token = create(&a, "v", PASSWORD).await;
        sync(&a, &remote).await;
        sync(&b, &remote).await;
        for node in [&a, &b] {
            node.vault
                .secret_add(&pw(PASSWORD), &pw(THIRD))
                .await
                .unwrap();
        }
        settle(&server, &[&a, &b]).await;
        a.vault
            .bulk_rekey(&pw(THIRD), &pw(NEW), &RekeyOptions::default())
            .await
            .unwrap();
        settle(&server, &[&a, &b]).await;
        opens_only(&[&a, &b], (&token, "v"), NEW, &[THIRD]).await;
        opens_only(&[&a, &b], (&token, "v"), PASSWORD, &[THIRD]).await;
    });
}

/// With identities on, deleting a password's last record removes its identity, which retires
/// no key. A replica that wrote under that password meanwhile held a value under an identity the
/// server had removed: it was stranded (SYNC.md 3), and so were its later writes there, until
/// its user ran `bulkRekey(password, password)`. The removal now says it only emptied the
/// identity: that replica writes the identity's rows again, after the removal, and the next
/// sync delivers them with the values, whichever order the replicas sync in, also when the
/// deleting replica has made a new identity for the password meanwhile.
#[test]
fn a_value_written_under_an_identity_emptied_elsewhere_is_delivered_by_the_next_sync() {
    block_on(async {
        for a_uses_it_again in [false, true] {
            let (server, a, b) = (memory(true).await, memory(true).await, memory(true).await);
            let remote = wire(&server);
            let first = emptied_on_a(&server, &a, &b).await;
            let mut records = vec![];
            if a_uses_it_again {
                let again = create(&a, "a again", PASSWORD).await;
                sync(&a, &remote).await;
                records.push((again, "a again"));
            }
            let offline = create(&b, "written offline", PASSWORD).await;
            let report = sync(&b, &remote).await;
            assert!(report.stranded.is_empty(), "{report:?}");
            let later = create(&b, "written after", PASSWORD).await;
            let report = sync(&b, &remote).await;
            assert!(report.stranded.is_empty(), "{report:?}");
            records.extend([(offline, "written offline"), (later, "written after")]);
            settle(&server, &[&a, &b]).await;
            for (token, value) in &records {
                opens_only(&[&a, &b], (token.as_str(), value), PASSWORD, &[NEW]).await;
            }
            assert!(gone(&a, &first).await && gone(&b, &first).await);
        }
    });
}

/// A secret added to the identity ([`VaultOptions`] slots) comes back with it: the replica
/// that revives an emptied identity writes its slots again too, so a value written there opens
/// with either secret everywhere. A rotation still retires the key for good: what a replica
/// wrote under a rotated-away identity stays stranded (see
/// `a_write_under_a_rotated_key_is_stranded_then_moved_and_delivered`).
#[test]
fn an_emptied_identity_comes_back_with_its_added_secrets() {
    block_on(async {
        let server = sqlite(true).await;
        let (a, b) = (memory(true).await, sqlite(true).await);
        let remote = wire(&server);
        let first = create(&a, "first", PASSWORD).await;
        a.vault.secret_add(&pw(PASSWORD), &pw(NEW)).await.unwrap();
        sync(&a, &remote).await;
        sync(&b, &remote).await;
        a.vault.token_delete(&first).await.unwrap();
        sync(&a, &remote).await;
        let offline = create(&b, "written offline", NEW).await;
        let report = sync(&b, &remote).await;
        assert!(report.stranded.is_empty(), "{report:?}");
        settle(&server, &[&a, &b]).await;
        opens_with(
            &[&a, &b],
            &[(&offline, "written offline")],
            &[PASSWORD, NEW],
            "revived with its slot:",
        )
        .await;
    });
}

const HOUR: i64 = 3_600_000;

/// The greatest wall time of any revision a store holds.
async fn latest_wall(store: &dyn Storage) -> i64 {
    use vaultstore_wasm::sync::{MetaVersion, RecordVersion};
    let mut latest = 0;
    for row in replicated(store).await.into_values() {
        let rev = match row {
            Row::Record {
                version: RecordVersion::Live(live),
                ..
            } => live.max_rev(),
            Row::Record {
                version: RecordVersion::Gone(gone),
                ..
            } => gone.rev,
            Row::Meta { version, .. } => match version {
                MetaVersion::Value { rev, .. } | MetaVersion::Gone { rev, .. } => rev,
            },
        };
        latest = latest.max(rev.wall_ms() as i64);
    }
    latest
}

#[test]
fn a_replica_hours_ahead_converges_and_does_not_stall_the_others() {
    block_on(async {
        let (server_clock, a_clock, b_clock) =
            (TestClock::new(T0), TestClock::new(T0), TestClock::new(T0));
        let server = clocked(false, &server_clock).await;
        let (a, b) = (
            clocked(false, &a_clock).await,
            clocked(false, &b_clock).await,
        );
        let remote = wire(&server);
        let shared = create(&b, "v1", PASSWORD).await;
        sync(&b, &remote).await;
        sync(&a, &remote).await;
        // A's clock jumps three hours ahead; offline, it edits and creates with it.
        a_clock.advance(3 * HOUR);
        a.vault
            .token_update(&shared, "from a, offline", &pw(PASSWORD))
            .await
            .unwrap();
        let mine = create(&a, "made on a", PASSWORD).await;
        // The server would refuse those revisions (more than 5 minutes ahead of it): the sync
        // corrects A's clock and re-stamps them, and they are delivered.
        for clock in [&server_clock, &b_clock] {
            clock.advance(60_000);
        }
        a_clock.advance(60_000);
        let report = sync(&a, &remote).await;
        assert_eq!(report.stranded, Vec::<String>::new());
        assert!(
            report.pushed >= 2,
            "the edit and the new record: {report:?}"
        );
        assert!(
            latest_wall(&*server.store).await <= T0 + 60_000 + 5 * 60_000,
            "nothing on the server is dated hours ahead"
        );
        sync(&b, &remote).await;
        assert_eq!(
            b.vault.token_read(&shared, &pw(PASSWORD)).await.unwrap(),
            "from a, offline"
        );
        assert_eq!(
            b.vault.token_read(&mine, &pw(PASSWORD)).await.unwrap(),
            "made on a"
        );
        // B edits a minute later in real time: its edit wins, now and not hours from now.
        for clock in [&server_clock, &b_clock, &a_clock] {
            clock.advance(60_000);
        }
        b.vault
            .token_update(&shared, "from b, later", &pw(PASSWORD))
            .await
            .unwrap();
        sync(&b, &remote).await;
        sync(&a, &remote).await;
        for node in [&a, &b] {
            assert_eq!(
                node.vault.token_read(&shared, &pw(PASSWORD)).await.unwrap(),
                "from b, later"
            );
        }
        // A's later writes are stamped with the corrected clock.
        a.vault
            .token_update(&mine, "again from a", &pw(PASSWORD))
            .await
            .unwrap();
        assert!(sync(&a, &remote).await.pushed >= 1);
        sync(&b, &remote).await;
        converged(&[&a, &b, &server]).await;
        assert!(latest_wall(&*server.store).await <= T0 + 2 * 60_000 + 60_000);
    });
}

#[test]
fn a_replica_hours_behind_is_corrected_and_its_later_write_wins() {
    block_on(async {
        let (server_clock, b_clock) = (TestClock::new(T0), TestClock::new(T0));
        let a_clock = TestClock::new(T0 - 5 * HOUR);
        let server = clocked(false, &server_clock).await;
        let (a, b) = (
            clocked(false, &a_clock).await,
            clocked(false, &b_clock).await,
        );
        let remote = wire(&server);
        let shared = create(&b, "v1", PASSWORD).await;
        sync(&b, &remote).await;
        sync(&a, &remote).await;
        // B edits, then A, a minute later in real time; neither has seen the other's edit.
        for clock in [&server_clock, &a_clock, &b_clock] {
            clock.advance(60_000);
        }
        b.vault
            .token_update(&shared, "from b", &pw(PASSWORD))
            .await
            .unwrap();
        for clock in [&server_clock, &a_clock, &b_clock] {
            clock.advance(60_000);
        }
        a.vault
            .token_update(&shared, "from a, later", &pw(PASSWORD))
            .await
            .unwrap();
        sync(&b, &remote).await;
        let report = sync(&a, &remote).await;
        assert_eq!(report.conflicts, 0, "A's later edit is not superseded");
        sync(&b, &remote).await;
        for node in [&a, &b] {
            assert_eq!(
                node.vault.token_read(&shared, &pw(PASSWORD)).await.unwrap(),
                "from a, later"
            );
        }
        converged(&[&a, &b, &server]).await;
    });
}

#[test]
fn a_tab_opened_before_another_tab_joined_uses_the_joined_vault() {
    for identities in [false, true] {
        block_on(async {
            let server = memory(identities).await;
            let x = memory(identities).await;
            let remote = wire(&server);
            let theirs = create(&x, "from x", PASSWORD).await;
            sync(&x, &remote).await;
            // Two tabs on one empty store; the second has already used the password (its key
            // is cached, derived with the store's first salt) when the first joins.
            let tab1 = memory(identities).await;
            let tab2 = Vault::open(Box::new(tab1.store.clone()), options(identities))
                .await
                .unwrap();
            assert!(
                tab2.token_read("tk_nothing_here", &pw(PASSWORD))
                    .await
                    .is_err()
            );
            sync(&tab1, &remote).await;
            assert_eq!(
                tab2.token_read(&theirs, &pw(PASSWORD)).await.unwrap(),
                "from x",
                "identities {identities}"
            );
            let mine = tab2
                .token_create("from tab 2", &pw(PASSWORD), &CreateOptions::default())
                .await
                .unwrap();
            sync(&tab1, &remote).await;
            sync(&x, &remote).await;
            for vault in [&x.vault, &tab1.vault, &tab2] {
                assert_eq!(
                    vault.token_read(&mine, &pw(PASSWORD)).await.unwrap(),
                    "from tab 2"
                );
            }
            // Its own sync goes on (it does not take the store for another vault's).
            tab2.sync(&remote, None).await.unwrap();
        });
    }
}

#[test]
fn a_first_sync_sends_back_nothing_it_pulled() {
    block_on(async {
        let server = memory(false).await;
        let (a, b) = (memory(false).await, memory(false).await);
        let remote = wire(&server);
        let values: Vec<String> = (0..1_500).map(|i| format!("value {i}")).collect();
        create_all(&a, &values).await;
        sync(&a, &remote).await;
        // B pulls the 1,500 records in one page; its push carries only its own default settings
        // (one page, where the 1,500 records would take two), and the server's answer says
        // nothing else was written, so B does not pull again.
        let before = remote.requests.load(Ordering::SeqCst);
        let report = sync(&b, &remote).await;
        assert!(report.pulled >= 1_500, "{report:?}");
        assert_eq!(remote.requests.load(Ordering::SeqCst) - before, 2);
        converged(&[&a, &b, &server]).await;
    });
}

#[test]
fn large_values_travel_in_pages_under_the_body_cap() {
    block_on(async {
        let server = sqlite(false).await;
        let (a, b) = (memory(false).await, memory(false).await);
        let remote = wire(&server);
        // 40 values of 150 kB: 8 MB of envelopes, twice the 4 MiB a body may hold.
        let values: Vec<String> = (0..40)
            .map(|i| format!("{i:03}{}", "x".repeat(150_000)))
            .collect();
        let tokens = create_all(&a, &values).await;
        let report = sync(&a, &remote).await;
        assert!(report.pushed >= 40, "{report:?}");
        let before = remote.requests.load(Ordering::SeqCst);
        let report = sync(&b, &remote).await;
        assert!(report.pulled >= 40, "{report:?}");
        assert!(
            remote.requests.load(Ordering::SeqCst) - before >= 4,
            "at least three pull pages of at most 3 MiB, then the pull after the push"
        );
        let token_refs: Vec<&str> = tokens.iter().map(String::as_str).collect();
        let read = b
            .vault
            .tokens_read(&token_refs, &pw(PASSWORD))
            .await
            .unwrap();
        assert_eq!(read.len(), 40);
        let read: std::collections::HashMap<String, String> = read.into_iter().collect();
        for (token, value) in tokens.iter().zip(&values) {
            assert_eq!(read.get(token), Some(value));
        }
        converged(&[&a, &b, &server]).await;
    });
}

#[test]
fn progress_is_reported_page_by_page() {
    block_on(async {
        let server = memory(false).await;
        let (a, b) = (memory(false).await, memory(false).await);
        let remote = wire(&server);
        let values: Vec<String> = (0..2_500).map(|i| format!("value {i}")).collect();
        create_all(&a, &values).await;
        let calls = std::sync::Mutex::new(Vec::new());
        let listen = |done: u64, total: u64| calls.lock().unwrap().push((done, total));
        let report = a.vault.sync(&remote, Some(&listen)).await.unwrap();
        let pushed = std::mem::take(&mut *calls.lock().unwrap());
        // 2,500 records and a setting or two go up in 1,000-row pages: a call per page, pulled
        // or pushed, and one at the end.
        let requests = remote.requests.load(Ordering::SeqCst);
        assert!(requests >= 4, "a pull and three push pages at least");
        assert_eq!(pushed.len(), requests + 1, "{pushed:?}");
        assert!(
            pushed.windows(2).all(|w| w[0].0 <= w[1].0),
            "done never goes back: {pushed:?}"
        );
        assert!(
            pushed.iter().all(|(done, total)| done <= total),
            "{pushed:?}"
        );
        assert_eq!(
            pushed.last().map(|c| c.0 == c.1),
            Some(true),
            "ends at done = total"
        );
        assert!(report.pushed >= 2_500);
        // B pulls them in pages of 2,000.
        b.vault.sync(&remote, Some(&listen)).await.unwrap();
        let pulled = calls.into_inner().unwrap();
        let first = pulled[0];
        assert_eq!(first.0, 2_000, "the first page: {pulled:?}");
        assert!(first.1 > first.0, "more to come: {pulled:?}");
        assert!(pulled.last().unwrap().0 >= 2_500, "{pulled:?}");
    });
}

// ---- garbage collection and the `expired` reset (SYNC.md guarantee 2) ----

use vaultstore_wasm::storage::MetaKey;

/// The retention (FORMAT.md "Sync") and a day more.
const AWAY: i64 = (90 + 1) * 24 * 60 * 60 * 1000;

/// A node on its own store whose clock the test moves.
async fn timed(clock: &TestClock) -> Node {
    timed_on(clock, Arc::new(GlueMemoryStorage::new().unwrap()), false).await
}

/// A node on SQLite (the server as deployed on D1, a Durable Object or libSQL), with password
/// identities (their rows go through the resync's second pass).
async fn timed_sql(clock: &TestClock) -> Node {
    let db = Arc::new(Sqlite::memory());
    timed_on(
        clock,
        Arc::new(SqlStorage::open(db, "vaultstore").await.unwrap()),
        true,
    )
    .await
}

async fn timed_on(clock: &TestClock, store: Arc<dyn Storage>, identities: bool) -> Node {
    let platform = Platform {
        clock: Arc::new(clock.clone()),
        ..Platform::default()
    };
    Node {
        vault: Vault::open_with(Box::new(store.clone()), options(identities), platform)
            .await
            .unwrap(),
        store,
    }
}

/// In process like [`Wire`], asking for pull pages of `page` rows (so a pull takes several),
/// and failing request `fail_at` (counted from 1) as a dropped connection would.
struct Paged<'a> {
    server: &'a Vault,
    page: u64,
    fail_at: usize,
    requests: AtomicUsize,
}

fn paged(server: &Node, page: u64, fail_at: usize) -> Paged<'_> {
    Paged {
        server: &server.vault,
        page,
        fail_at,
        requests: AtomicUsize::new(0),
    }
}

#[async_trait]
impl SyncTransport for Paged<'_> {
    async fn exchange(&self, body: String) -> Result<(u16, Vec<u8>)> {
        let n = self.requests.fetch_add(1, Ordering::SeqCst) + 1;
        if n == self.fail_at {
            return Err(VaultError::Storage(Box::new(
                vaultstore_wasm::error::StorageFailure {
                    original: Default::default(),
                    name: None,
                    message: "the connection dropped".into(),
                },
            )));
        }
        // A replica asks for pages of 2,000 rows.
        let body = body.replace("\"limit\":2000,", &format!("\"limit\":{},", self.page));
        let (status, body) = self.server.sync_handle(body.as_bytes()).await;
        Ok((status, body.into_bytes()))
    }
}

async fn tombstones(store: &dyn Storage) -> usize {
    replicated(store)
        .await
        .values()
        .filter(|row| {
            matches!(
                row,
                Row::Record {
                    version: vaultstore_wasm::sync::RecordVersion::Gone(_),
                    ..
                }
            )
        })
        .count()
}

async fn meta_tombstones(store: &dyn Storage) -> usize {
    replicated(store)
        .await
        .into_values()
        .filter(|row| {
            matches!(
                row,
                Row::Meta {
                    version: vaultstore_wasm::sync::MetaVersion::Gone { .. },
                    ..
                }
            )
        })
        .count()
}

async fn log_rows(store: &dyn Storage) -> usize {
    store.meta_object("sync", "log").await.unwrap().len()
}

async fn gone(node: &Node, token: &str) -> bool {
    node.vault
        .record_find_by_token(token)
        .await
        .unwrap()
        .is_none()
}

/// Four records everywhere; then A deletes two and B, offline, edits a third. A keeps syncing
/// while B stays away for two retentions. Returns the tokens.
async fn away_too_long(clock: &TestClock, server: &Node, a: &Node, b: &Node) -> Vec<String> {
    let remote = wire(server);
    let mut tokens = Vec::new();
    for v in ["one", "two", "three", "four"] {
        tokens.push(create(a, v, PASSWORD).await);
    }
    sync(a, &remote).await;
    sync(b, &remote).await;
    a.vault.token_delete(&tokens[0]).await.unwrap();
    a.vault.token_delete(&tokens[1]).await.unwrap();
    b.vault
        .token_update(&tokens[2], "edited while away", &pw(PASSWORD))
        .await
        .unwrap();
    sync(a, &remote).await;
    assert_eq!(tombstones(&*server.store).await, 2);
    let logs = log_rows(&*server.store).await;
    // A syncs now and then (each pull of the server does a bounded step of its collection).
    for _ in 0..2 {
        clock.advance(AWAY);
        create(a, "meanwhile", PASSWORD).await;
        sync(a, &remote).await;
        sync(a, &remote).await;
    }
    assert_eq!(
        tombstones(&*server.store).await,
        0,
        "the server dropped the tombstones older than the retention"
    );
    assert!(
        log_rows(&*server.store).await < logs + 4,
        "the server pruned its old log rows"
    );
    assert_eq!(
        tombstones(&*a.store).await,
        0,
        "A dropped its own pushed tombstones once older than the retention"
    );
    tokens
}

#[test]
fn a_replica_away_longer_than_the_retention_resyncs_and_forgets_what_was_deleted() {
    block_on(away_then_back(false));
}

#[test]
fn a_replica_away_longer_than_the_retention_resyncs_on_sqlite() {
    block_on(away_then_back(true));
}

async fn away_then_back(on_sql: bool) {
    let clock = TestClock::new(common::T0);
    let server = if on_sql {
        timed_sql(&clock).await
    } else {
        timed(&clock).await
    };
    let b = if on_sql {
        timed_sql(&clock).await
    } else {
        timed(&clock).await
    };
    let a = timed_on(&clock, Arc::new(GlueMemoryStorage::new().unwrap()), on_sql).await;
    let tokens = away_too_long(&clock, &server, &a, &b).await;
    let remote = wire(&server);
    sync(&b, &remote).await;
    sync(&a, &remote).await;
    for node in [&a, &b, &server] {
        assert!(gone(node, &tokens[0]).await && gone(node, &tokens[1]).await);
        assert!(!gone(node, &tokens[3]).await);
    }
    assert_eq!(
        a.vault.token_read(&tokens[2], &pw(PASSWORD)).await.unwrap(),
        "edited while away",
        "B's edit was delivered"
    );
    converged(&[&a, &b, &server]).await;
    // Nothing is left of the resync: the next sync is an ordinary one.
    let report = sync(&b, &remote).await;
    assert_eq!((report.pulled, report.pushed), (0, 0));
}

/// Two tabs of a replica away longer than the retention sync at once, their requests in turns:
/// both are told `expired`. One resyncs to the end and finishes; the other, whose answers were
/// for the checkpoint the first had already moved past, began its own resync then, marking every
/// row the first had just pulled as not seen, and forgot them all: the replica held nothing, and
/// its checkpoint said it was up to date. Found by the simulation's `SyncTabs` (seed 5).
#[test]
fn two_tabs_back_after_the_retention_resync_once_and_forget_only_what_was_deleted() {
    block_on(async {
        let clock = TestClock::new(common::T0);
        let (server, a, b) = (
            timed(&clock).await,
            timed(&clock).await,
            timed(&clock).await,
        );
        let tokens = away_too_long(&clock, &server, &a, &b).await;
        let tab = timed_on(&clock, b.store.clone(), false).await;
        let turns = Turns(&wire(&server));
        let (one, two) =
            futures::future::join(b.vault.sync(&turns, None), tab.vault.sync(&turns, None)).await;
        one.unwrap();
        two.unwrap();
        let remote = wire(&server);
        sync(&b, &remote).await;
        sync(&a, &remote).await;
        for node in [&a, &b, &server] {
            assert!(gone(node, &tokens[0]).await && gone(node, &tokens[1]).await);
            assert!(!gone(node, &tokens[3]).await, "kept on every replica");
        }
        assert_eq!(
            a.vault.token_read(&tokens[2], &pw(PASSWORD)).await.unwrap(),
            "edited while away",
            "B's edit was delivered"
        );
        converged(&[&a, &b, &server]).await;
    });
}

/// A server on SQLite and replicas A and B (memory, identities on) on `clock`, joined to one
/// vault by A's record "first" under [`PASSWORD`], synced to both; returns them and its token.
async fn joined_on_sql(clock: &TestClock) -> (Node, Node, Node, String) {
    let server = timed_sql(clock).await;
    let a = timed_on(clock, Arc::new(GlueMemoryStorage::new().unwrap()), true).await;
    let b = timed_on(clock, Arc::new(GlueMemoryStorage::new().unwrap()), true).await;
    let remote = wire(&server);
    let first = create(&a, "first", PASSWORD).await;
    sync(&a, &remote).await;
    sync(&b, &remote).await;
    (server, a, b, first)
}

/// Two retentions pass while A writes under [`NEW`] and syncs now and then, so the server
/// collects what is older than the retention.
async fn two_retentions_on_a(clock: &TestClock, a: &Node, remote: &Wire<'_>) {
    for _ in 0..2 {
        clock.advance(AWAY);
        create(a, "meanwhile", NEW).await;
        sync(a, remote).await;
        sync(a, remote).await;
    }
}

/// A record written under a key a rotation retired stays on its replica, stranded, until its user
/// moves it (SYNC.md 7): for months, maybe. The server keeps the retired identity's tag
/// tombstone through its collection, so that replica's pushes are still answered `retired_key`
/// for that record, not refused whole as naming an identity the server never had (found by the
/// simulation's `Away`: the replica could never sync again).
#[test]
fn a_record_stranded_under_a_retired_key_still_syncs_after_two_retentions() {
    block_on(async {
        let clock = TestClock::new(common::T0);
        let (server, a, b, _) = joined_on_sql(&clock).await;
        let remote = wire(&server);
        rotate_to_new(&a).await;
        sync(&a, &remote).await;
        let offline = create(&b, "written offline", PASSWORD).await;
        assert_eq!(sync(&b, &remote).await.stranded, vec![offline.clone()]);
        let doomed = create(&a, "deleted", NEW).await;
        sync(&a, &remote).await;
        a.vault.token_delete(&doomed).await.unwrap();
        sync(&a, &remote).await;
        assert_eq!(tombstones(&*server.store).await, 1);
        let identity = meta_tombstones(&*server.store).await;
        assert!(
            identity > 1,
            "the old identity's rows are tombstones on the server"
        );
        two_retentions_on_a(&clock, &a, &remote).await;
        assert_eq!(tombstones(&*server.store).await, 0, "collected");
        assert_eq!(
            meta_tombstones(&*server.store).await,
            identity,
            "but for the retired identity's"
        );
        let report = sync(&b, &remote).await;
        assert_eq!(report.stranded, vec![offline.clone()], "{report:?}");
        assert_eq!(
            b.vault.token_read(&offline, &pw(PASSWORD)).await.unwrap(),
            "written offline"
        );
        b.vault
            .bulk_rekey(&pw(PASSWORD), &pw(NEW), &RekeyOptions::default())
            .await
            .unwrap();
        assert!(sync(&b, &remote).await.stranded.is_empty());
        sync(&a, &remote).await;
        assert_eq!(
            a.vault.token_read(&offline, &pw(NEW)).await.unwrap(),
            "written offline"
        );
    });
}

/// A replica away for two retentions wrote under an identity that another replica emptied
/// meanwhile (it deleted the identity's last record). Its first sync back is a resync, which
/// marks the pulled rows the merge left alone as seen by writing them again, clean: that wrote
/// back, clean and at their old revision, the identity rows the same page had just revived, so
/// they were never pushed, and the value was stranded for good. Found by the simulation's check
/// that only a retired key strands a record with a random token.
#[test]
fn a_replica_back_after_the_retention_revives_an_identity_emptied_meanwhile() {
    block_on(async {
        let clock = TestClock::new(common::T0);
        let (server, a, b, first) = joined_on_sql(&clock).await;
        let remote = wire(&server);
        let offline = create(&b, "written offline", PASSWORD).await;
        a.vault.token_delete(&first).await.unwrap();
        sync(&a, &remote).await;
        two_retentions_on_a(&clock, &a, &remote).await;
        assert_eq!(tombstones(&*server.store).await, 0, "collected");
        let report = sync(&b, &remote).await;
        assert!(report.stranded.is_empty(), "{report:?}");
        assert!(sync(&b, &remote).await.stranded.is_empty());
        sync(&a, &remote).await;
        converged(&[&a, &b, &server]).await;
        opens_only(&[&a, &b], (&offline, "written offline"), PASSWORD, &[]).await;
    });
}

/// A server, and replicas A and B joined to it, that then create the custom token `card-4242`
/// offline a second apart, with the values "created first" and "created second": A first when
/// `a_first`, else B. The earlier claim keeps the token on the server (`token_holder`).
async fn one_token_claimed_twice(clock: &TestClock, a_first: bool) -> (Node, Node, Node) {
    let server = timed(clock).await;
    let (a, b) = (timed(clock).await, timed(clock).await);
    let remote = wire(&server);
    create(&a, "joined", PASSWORD).await;
    sync(&a, &remote).await;
    sync(&b, &remote).await;
    let order = if a_first { [&a, &b] } else { [&b, &a] };
    for (node, value) in order.into_iter().zip(["created first", "created second"]) {
        node.vault
            .token_create_custom("card-4242", value, &pw(PASSWORD), None)
            .await
            .unwrap();
        clock.advance(1_000);
    }
    (server, a, b)
}

/// Two replicas create the same custom token offline; the later creator's record reached the
/// server first, and is displaced there when the earlier one's arrives. Its replica, away for
/// months meanwhile, learns of it only after the retention: the server keeps the `displaced`
/// tombstone through its collection, so that replica keeps its record, stranded and readable,
/// instead of forgetting it in its resync as deleted elsewhere (the write would be lost on every
/// replica). Found by the simulation (`Away`, another seed).
#[test]
fn a_record_displaced_while_its_replica_was_away_is_kept_stranded_after_the_retention() {
    block_on(async {
        let clock = TestClock::new(common::T0);
        let (server, a, b) = one_token_claimed_twice(&clock, true).await;
        let remote = wire(&server);
        sync(&b, &remote).await;
        clock.advance(AWAY);
        // A's record displaces B's on the server; its pull notes where the feed ends.
        sync(&a, &remote).await;
        sync(&a, &remote).await;
        clock.advance(AWAY);
        create(&a, "meanwhile", PASSWORD).await;
        sync(&a, &remote).await;
        sync(&a, &remote).await;
        assert!(
            log_rows(&*server.store).await < 4,
            "the server collected what is older than the retention"
        );
        let report = sync(&b, &remote).await;
        card_stranded_here(&b, &report, "created second").await;
        sync(&a, &remote).await;
        assert_eq!(
            a.vault
                .token_read("card-4242", &pw(PASSWORD))
                .await
                .unwrap(),
            "created first"
        );
    });
}

/// Forwards every request; the answer to the `at`-th one (from 1) is lost on its way back, after
/// the server acted on the request.
struct LoseAnswer<'a> {
    wire: &'a Wire<'a>,
    at: usize,
    seen: AtomicUsize,
}

#[async_trait]
impl SyncTransport for LoseAnswer<'_> {
    async fn exchange(&self, body: String) -> Result<(u16, Vec<u8>)> {
        let answer = self.wire.exchange(body).await;
        if self.seen.fetch_add(1, Ordering::SeqCst) + 1 == self.at {
            return Err(VaultError::Storage(Box::new(
                vaultstore_wasm::error::StorageFailure {
                    original: Default::default(),
                    name: None,
                    message: "the connection dropped".into(),
                },
            )));
        }
        answer
    }
}

/// A sync of `node` whose push's answer is lost (its second request: a pull, then the push).
async fn sync_losing_the_push_answer(node: &Node, remote: &Wire<'_>) {
    let lossy = LoseAnswer {
        wire: remote,
        at: 2,
        seen: AtomicUsize::new(0),
    };
    assert!(
        node.vault.sync(&lossy, None).await.is_err(),
        "the push's answer was lost"
    );
}

/// `report` lists exactly `card-4242` as stranded, and `node` still reads `value` from it.
async fn card_stranded_here(node: &Node, report: &SyncReport, value: &str) {
    assert_eq!(report.stranded, vec!["card-4242".to_owned()], "{report:?}");
    assert_eq!(
        node.vault
            .token_read("card-4242", &pw(PASSWORD))
            .await
            .unwrap(),
        value,
        "kept where it was written"
    );
}

/// A replica edits its record while another replica's earlier record with the same custom token
/// displaces it on the server. The replica's next sync applies the pulled page that says so, then
/// loses its push's answer: the sync fails, and its report with it. The other record is deleted
/// meanwhile, so no later pull claims the token again. The next sync pushes the edit again and
/// the server answers with the displaced tombstone; that answer must report the record stranded,
/// as a pull does, or the user never hears that it is kept only here. Found by the simulation
/// (seed 59).
#[test]
fn a_displaced_record_is_reported_stranded_by_the_answer_to_its_push() {
    block_on(async {
        let clock = TestClock::new(common::T0);
        let (server, a, b) = one_token_claimed_twice(&clock, false).await;
        let remote = wire(&server);
        sync(&a, &remote).await;
        a.vault
            .token_update("card-4242", "edited here", &pw(PASSWORD))
            .await
            .unwrap();
        clock.advance(1_000);
        // B's earlier record displaces A's on the server, with a revision after A's edit.
        sync(&b, &remote).await;
        sync_losing_the_push_answer(&a, &remote).await;
        // B deletes its record: no pulled record claims the token any more, and only the push's
        // answer can tell A that its record stays displaced.
        b.vault.token_delete("card-4242").await.unwrap();
        sync(&b, &remote).await;
        let report = sync(&a, &remote).await;
        card_stranded_here(&a, &report, "edited here").await;
    });
}

/// A replica's clean record is displaced on the server by another replica's earlier one with the
/// same custom token. The replica's next sync applies the pulled page that says so, and then
/// fails (its push's answer is lost): the report that named the record goes with it. The record
/// is still kept only here, so every later sync reports it (SYNC.md: `stranded` lists the tokens
/// kept on this replica only), until its user deletes it. Before, only the sync whose pull
/// stranded a clean record reported it: one failure there and the user never heard of it.
#[test]
fn a_record_stranded_by_a_sync_that_then_failed_is_reported_by_the_next_ones() {
    block_on(async {
        let clock = TestClock::new(common::T0);
        let (server, a, b) = one_token_claimed_twice(&clock, false).await;
        let remote = wire(&server);
        sync(&a, &remote).await;
        // B's earlier record displaces A's, which is clean on A. Then B deletes its record, so
        // no pulled record claims the token on A again (a pull waiting for one reports the
        // record that holds it here on each sync).
        sync(&b, &remote).await;
        b.vault.token_delete("card-4242").await.unwrap();
        sync(&b, &remote).await;
        create(&a, "something to push", PASSWORD).await;
        sync_losing_the_push_answer(&a, &remote).await;
        for _ in 0..2 {
            let report = sync(&a, &remote).await;
            card_stranded_here(&a, &report, "created second").await;
        }
        a.vault.token_delete("card-4242").await.unwrap();
        let report = sync(&a, &remote).await;
        assert!(report.stranded.is_empty(), "{report:?}");
        assert!(
            a.store
                .meta_object("sync", "stranded")
                .await
                .unwrap()
                .is_empty(),
            "nothing is left of the mark once its record is gone"
        );
        sync(&b, &remote).await;
        converged(&[&server, &a, &b]).await;
    });
}

/// A server and three replicas on `clock`, which joined one vault by syncing a record `value`
/// the first one created (its token last).
async fn three_joined(clock: &TestClock, value: &str) -> (Node, Node, Node, Node, String) {
    let server = timed(clock).await;
    let (a, b, c) = (timed(clock).await, timed(clock).await, timed(clock).await);
    let token = create(&a, value, PASSWORD).await;
    for node in [&a, &b, &c] {
        sync(node, &wire(&server)).await;
    }
    (server, a, b, c, token)
}

/// A replica that held a record live while months passed brings it back after another
/// replica deleted it, once the server has collected the tombstone (SYNC.md 2 allows that: the
/// server no longer knows of the deletion). The deleting replica, which had not synced for as
/// long, still held its clean tombstone, past the retention and with a later revision than the
/// record that came back: merged with it, the record lost there and nowhere else, and once the
/// replica dropped its tombstone it held nothing where the server and the other replicas held the
/// record, for good. Found by the simulation (the default seed, with cases that seeds 47 and 59
/// had saved).
#[test]
fn a_record_brought_back_after_the_retention_reaches_the_replica_that_deleted_it() {
    block_on(async {
        let clock = TestClock::new(common::T0);
        let (server, a, b, c, token) = three_joined(&clock, "kept").await;
        let remote = wire(&server);
        a.vault
            .token_update(&token, "edited offline", &pw(PASSWORD))
            .await
            .unwrap();
        clock.advance(1_000);
        c.vault.token_delete(&token).await.unwrap();
        sync(&c, &remote).await;
        // B's syncs, months apart, let the server collect what is older than the retention.
        for _ in 0..2 {
            clock.advance(AWAY);
            sync(&b, &remote).await;
            sync(&b, &remote).await;
        }
        sync(&a, &remote).await;
        assert!(!gone(&server, &token).await, "A's copy came back");
        let report = sync(&c, &remote).await;
        assert_eq!(report.pulled, 1, "{report:?}");
        assert_eq!(
            c.vault.token_read(&token, &pw(PASSWORD)).await.unwrap(),
            "edited offline"
        );
        for node in [&a, &b, &c] {
            sync(node, &remote).await;
        }
        converged(&[&a, &b, &c, &server]).await;
    });
}

#[test]
fn an_interrupted_resync_still_forgets_what_was_deleted() {
    block_on(async {
        let clock = TestClock::new(common::T0);
        let server = timed(&clock).await;
        let (a, b) = (timed(&clock).await, timed(&clock).await);
        let tokens = away_too_long(&clock, &server, &a, &b).await;
        // Pages of two rows; the connection drops after the first two pages of the resync.
        let flaky = paged(&server, 2, 3);
        assert!(b.vault.sync(&flaky, None).await.is_err());
        assert!(!gone(&b, &tokens[0]).await, "not forgotten mid-way");
        let steady = Paged {
            fail_at: 0,
            ..flaky
        };
        b.vault.sync(&steady, None).await.unwrap();
        sync(&a, &wire(&server)).await;
        for node in [&a, &b, &server] {
            assert!(gone(node, &tokens[0]).await && gone(node, &tokens[1]).await);
        }
        assert_eq!(
            a.vault.token_read(&tokens[2], &pw(PASSWORD)).await.unwrap(),
            "edited while away",
            "B's edit was delivered"
        );
        converged(&[&a, &b, &server]).await;
        assert_eq!(
            b.store
                .meta_get(&MetaKey::new("sync", "state", "resync"))
                .await
                .unwrap(),
            None,
            "the resync is over"
        );
    });
}

#[test]
fn a_tombstone_dropped_while_a_replica_pages_through_is_not_missed() {
    block_on(async {
        let clock = TestClock::new(common::T0);
        let server = timed(&clock).await;
        let (a, b) = (timed(&clock).await, timed(&clock).await);
        let remote = wire(&server);
        let doomed = create(&a, "doomed", PASSWORD).await;
        sync(&a, &remote).await;
        sync(&b, &remote).await;
        // Rows B has not pulled yet, then the deletion after them (a push sends deletions
        // first: the deletion goes in a push of its own).
        for v in ["x", "y", "z"] {
            create(&a, v, PASSWORD).await;
        }
        sync(&a, &remote).await;
        a.vault.token_delete(&doomed).await.unwrap();
        sync(&a, &remote).await;
        // One retention later the server notes where its feed ends; one more, and it collects.
        clock.advance(AWAY);
        sync(&a, &remote).await;
        sync(&a, &remote).await;
        clock.advance(AWAY);
        // B pulls one page of two rows (the collection runs as the server answers it and drops
        // the tombstone further on), then the connection drops.
        let flaky = paged(&server, 2, 2);
        assert!(b.vault.sync(&flaky, None).await.is_err());
        assert_eq!(tombstones(&*server.store).await, 0);
        assert!(!gone(&b, &doomed).await);
        sync(&b, &remote).await;
        assert!(
            gone(&b, &doomed).await,
            "B was told to resync, and forgot it"
        );
        sync(&a, &remote).await;
        converged(&[&a, &b, &server]).await;
    });
}

/// An offline edit of a record deleted elsewhere, whose identity went with it: once the record's
/// tombstone is collected the edit wins over the deletion, as any unsent change does, and the
/// identity comes back with it. The server keeps identity tombstones for good, but this one
/// says the identity was emptied, not retired: the replica writes it again. It used to stay
/// stranded on its replica until a `bulkRekey` there moved it.
#[test]
fn an_offline_edit_under_an_identity_emptied_meanwhile_comes_back_with_it() {
    block_on(async {
        let clock = TestClock::new(common::T0);
        let node = |c: &TestClock| {
            let c = c.clone();
            async move { timed_on(&c, Arc::new(GlueMemoryStorage::new().unwrap()), true).await }
        };
        let (server, a, b) = (node(&clock).await, node(&clock).await, node(&clock).await);
        let remote = wire(&server);
        let kept = create(&a, "kept", PASSWORD).await;
        // Its own identity (another password): deleting its only record removes the identity.
        let edited = create(&a, "under the second password", NEW).await;
        sync(&a, &remote).await;
        sync(&b, &remote).await;
        a.vault.token_delete(&edited).await.unwrap();
        b.vault
            .token_update(&edited, "edited while away", &pw(NEW))
            .await
            .unwrap();
        sync(&a, &remote).await;
        for _ in 0..2 {
            clock.advance(AWAY);
            sync(&a, &remote).await;
            sync(&a, &remote).await;
        }
        assert_eq!(tombstones(&*server.store).await, 0);
        assert!(
            meta_tombstones(&*server.store).await > 0,
            "the identity's are kept"
        );
        // B resyncs: its edit goes up with the identity it wrote again.
        let report = sync(&b, &remote).await;
        assert!(report.stranded.is_empty(), "{report:?}");
        for node in [&a, &b, &a] {
            sync(node, &remote).await;
        }
        converged(&[&a, &b, &server]).await;
        assert!(!gone(&a, &kept).await);
        opens_only(&[&a, &b], (&edited, "edited while away"), NEW, &[]).await;
    });
}

/// A transport whose every answer comes a turn later: two syncs running at once interleave at
/// each request, as two tabs' do in a browser.
struct Slow<'a>(Wire<'a>);

#[async_trait]
impl SyncTransport for Slow<'_> {
    async fn exchange(&self, body: String) -> Result<(u16, Vec<u8>)> {
        common::yield_once().await;
        self.0.exchange(body).await
    }
}

#[test]
fn two_tabs_pulling_a_vault_of_many_pages_at_once_end_with_every_record_once() {
    block_on(async {
        let server = memory(false).await;
        let a = memory(false).await;
        let values: Vec<String> = (0..5_000).map(|i| format!("value {i}")).collect();
        let tokens = create_all(&a, &values).await;
        sync(&a, &wire(&server)).await;
        // Two tabs on one empty store pull the three pages at once: each asks for the next
        // page while it applies one, and the other tab applies pages under it.
        let tab1 = memory(false).await;
        let tab2 = Vault::open(Box::new(tab1.store.clone()), options(false))
            .await
            .unwrap();
        let slow = Slow(wire(&server));
        let (one, two) =
            futures::future::join(tab1.vault.sync(&slow, None), tab2.sync(&slow, None)).await;
        let (one, two) = (one.unwrap(), two.unwrap());
        assert!(one.pulled + two.pulled >= 5_000, "{one:?} {two:?}");
        let asked: Vec<&str> = tokens.iter().map(String::as_str).collect();
        let expected: Vec<(String, String)> = tokens.iter().cloned().zip(values).collect();
        for tab in [&tab1.vault, &tab2] {
            let mut read = tab.tokens_read(&asked, &pw(PASSWORD)).await.unwrap();
            read.sort();
            let mut want = expected.clone();
            want.sort();
            assert_eq!(read, want);
        }
        // Nothing was missed or left half done: a later sync has nothing to pull.
        let again = tab1.vault.sync(&wire(&server), None).await.unwrap();
        assert_eq!(again.pulled, 0, "{again:?}");
        converged(&[&a, &tab1, &server]).await;
    });
}

/// Holds a replica's push until `open`, so another replica can write in between: before it
/// reaches the server, or (`hold_answer`) once the server acted on it, before the replica hears.
struct Gated<'a> {
    inner: Wire<'a>,
    hold_answer: bool,
    push_waiting: AtomicBool,
    open: AtomicBool,
}

fn gated(server: &Node, hold_answer: bool) -> Gated<'_> {
    Gated {
        inner: wire(server),
        hold_answer,
        push_waiting: AtomicBool::new(false),
        open: AtomicBool::new(false),
    }
}

/// Waits (in `block_on`, by waking itself) until `flag` is set.
async fn until(flag: &AtomicBool) {
    std::future::poll_fn(|cx| {
        if flag.load(Ordering::SeqCst) {
            return std::task::Poll::Ready(());
        }
        cx.waker().wake_by_ref();
        std::task::Poll::Pending
    })
    .await
}

#[async_trait]
impl SyncTransport for Gated<'_> {
    async fn exchange(&self, body: String) -> Result<(u16, Vec<u8>)> {
        if !body.starts_with(r#"{"sync":1,"op":"push""#) {
            return self.inner.exchange(body).await;
        }
        let answer = if self.hold_answer {
            Some(self.inner.exchange(body.clone()).await)
        } else {
            None
        };
        self.push_waiting.store(true, Ordering::SeqCst);
        until(&self.open).await;
        match answer {
            Some(answer) => answer,
            None => self.inner.exchange(body).await,
        }
    }
}

#[test]
fn a_push_answer_skips_the_pull_back_only_when_nothing_else_was_written() {
    block_on(async {
        let server = memory(false).await;
        let (a, b) = (memory(false).await, memory(false).await);
        let remote = wire(&server);
        let token = create(&a, "first", PASSWORD).await;
        sync(&a, &remote).await;
        sync(&b, &remote).await;

        // B writes between A's pull and A's push: A's push answer carries no checkpoint, so A
        // pulls again and has B's record at the end of this very sync.
        a.vault
            .token_update(&token, "second", &pw(PASSWORD))
            .await
            .unwrap();
        let gated = gated(&server, false);
        let meanwhile = async {
            until(&gated.push_waiting).await;
            let theirs = create(&b, "from b", PASSWORD).await;
            sync(&b, &remote).await;
            gated.open.store(true, Ordering::SeqCst);
            theirs
        };
        let (report, theirs) = futures::future::join(a.vault.sync(&gated, None), meanwhile).await;
        report.unwrap();
        assert_eq!(
            a.vault.token_read(&theirs, &pw(PASSWORD)).await.unwrap(),
            "from b",
            "B's record, written while A's push was on its way, came in the same sync"
        );
        assert_eq!(
            gated.inner.requests.load(Ordering::SeqCst),
            3,
            "pull, push, pull"
        );

        // Nobody else writes: A's next change goes up in a pull and a push, B gets it.
        a.vault
            .token_update(&token, "third", &pw(PASSWORD))
            .await
            .unwrap();
        let before = remote.requests.load(Ordering::SeqCst);
        sync(&a, &remote).await;
        assert_eq!(
            remote.requests.load(Ordering::SeqCst) - before,
            2,
            "pull, push"
        );
        // A's checkpoint is past its own push: its next sync pulls nothing back.
        let again = sync(&a, &remote).await;
        assert_eq!(again.pulled, 0, "{again:?}");
        sync(&b, &remote).await;
        assert_eq!(
            b.vault.token_read(&token, &pw(PASSWORD)).await.unwrap(),
            "third"
        );
        converged(&[&a, &b, &server]).await;
    });
}

/// A replica's record, stranded here while another replica's earlier record held its custom
/// token, is pushed once that one is deleted, and the server takes it. While that push's answer
/// is on its way, a third replica's record with the same token, created earlier still, displaces
/// it on the server, and the replica's other tab pulls that: it marks the record stranded again,
/// then the third replica deletes its record. The answer then lands in the first tab, which
/// cleared the mark it had read at the start, and with it the other tab's new one: the record,
/// displaced on the server and held here only, was never reported again (the mark that said so
/// was gone, and no pulled record claims its token any more). A mark now carries a value of its
/// own, and the answer clears only the mark it read.
#[test]
fn a_mark_set_by_another_tab_while_a_push_was_answered_is_kept() {
    block_on(async {
        let clock = TestClock::new(common::T0);
        let (server, a, b, c, _) = three_joined(&clock, "joined").await;
        let remote = wire(&server);
        for (node, value) in [(&b, "b, first"), (&c, "c, second"), (&a, "a, third")] {
            node.vault
                .token_create_custom("card-4242", value, &pw(PASSWORD), None)
                .await
                .unwrap();
            clock.advance(1_000);
        }
        sync(&b, &remote).await;
        // A pulls B's record, which keeps the token by the rule: A's is stranded (marked) and
        // B's parked. A's push never leaves.
        let no_push = paged(&server, 2_000, 2);
        assert!(a.vault.sync(&no_push, None).await.is_err());
        assert!(
            !a.store
                .meta_object("sync", "stranded")
                .await
                .unwrap()
                .is_empty()
        );
        b.vault.token_delete("card-4242").await.unwrap();
        sync(&b, &remote).await;

        let tab = timed_on(&clock, a.store.clone(), false).await;
        let held = gated(&server, true);
        let meanwhile = async {
            until(&held.push_waiting).await;
            // The server took A's record; C's, created before it, displaces it there.
            sync(&c, &remote).await;
            let other_tab = sync(&tab, &remote).await;
            assert_eq!(
                other_tab.stranded,
                vec!["card-4242".to_owned()],
                "{other_tab:?}"
            );
            c.vault.token_delete("card-4242").await.unwrap();
            sync(&c, &remote).await;
            held.open.store(true, Ordering::SeqCst);
        };
        let (report, ()) = futures::future::join(a.vault.sync(&held, None), meanwhile).await;
        card_stranded_here(&a, &report.unwrap(), "a, third").await;
        let report = sync(&a, &remote).await;
        card_stranded_here(&a, &report, "a, third").await;
    });
}

/// Found by a review of what sync leaves behind: a vault where one password has two identities
/// (two devices first used it apart) exported a snapshot that no store would take back ("two
/// identities have the same tag"), so its backup could not be restored. It now restores, on
/// every backend, opens as the vault did, and exports the same bytes again (API.md).
#[test]
fn a_vault_whose_password_has_two_identities_restores_from_its_snapshot() {
    block_on(async {
        let (_server, a, _b, tokens) = two_identities_of(PASSWORD).await;
        let bytes = a.vault.export_snapshot().await.unwrap();
        let stores: [Arc<dyn Storage>; 2] = [
            Arc::new(GlueMemoryStorage::new().unwrap()),
            Arc::new(
                SqlStorage::open(Arc::new(Sqlite::memory()), "vaultstore")
                    .await
                    .unwrap(),
            ),
        ];
        for store in stores {
            let restored = Vault::open(
                Box::new(store),
                VaultOptions {
                    snapshot: Some(bytes.clone()),
                    ..options(true)
                },
            )
            .await
            .unwrap_or_else(|e| panic!("{:?}: {e}", e.code()));
            for (token, value) in tokens.iter().zip(["written by a", "written by b"]) {
                assert_eq!(
                    restored.token_read(token, &pw(PASSWORD)).await.unwrap(),
                    value
                );
            }
            assert_eq!(restored.export_snapshot().await.unwrap(), bytes);
        }
    });
}

/// A password with another secret added to its identity, that secret also first used on a
/// replica that was apart (an identity of its own): removing the password promoted the other
/// secret's slot to the identity's own rows (before first slots became vacant instead). That
/// write took the secret's identity elsewhere for a second holder of its tag, and every round
/// failed: `secretRemove` gave up with a `STORAGE` error saying other writers kept changing the
/// identity, which none were. The removal must still succeed, and the secret open both.
#[test]
fn removing_a_password_whose_other_secret_sync_gave_an_identity_of_its_own() {
    block_on(async {
        let (server, a, b) = joined_empty().await;
        let from_a = create(&a, "under the password", PASSWORD).await;
        a.vault.secret_add(&pw(PASSWORD), &pw(THIRD)).await.unwrap();
        let from_b = create(&b, "under the third secret", THIRD).await;
        settle(&server, &[&a, &b]).await;
        a.vault.secret_remove(&pw(PASSWORD)).await.unwrap();
        settle(&server, &[&a, &b]).await;
        let records = [
            (from_a.as_str(), "under the password"),
            (from_b.as_str(), "under the third secret"),
        ];
        opens_with(&[&a, &b], &records, &[THIRD], "").await;
        opens_only(&[&a, &b], records[0], THIRD, &[PASSWORD]).await;
    });
}

/// The password has two identities (two devices first used it apart), and a secret added to one
/// of them. A password change to that secret re-wraps the password's slot on the other identity
/// for it, and the password's own slot on the first goes (vacant now; it was a promotion of the
/// secret's slot, a second write of the secret's tag beside the one the re-wrap made). The
/// secret then opens both identities' records, and the password nothing.
#[test]
fn a_password_change_to_a_secret_added_to_one_of_its_identities_covers_both() {
    block_on(async {
        let (server, c, d) = joined_empty().await;
        let from_c = create(&c, "written by c", PASSWORD).await;
        c.vault.secret_add(&pw(PASSWORD), &pw(THIRD)).await.unwrap();
        let from_d = create(&d, "written by d", PASSWORD).await;
        settle(&server, &[&c, &d]).await;
        let moved = c
            .vault
            .bulk_rekey(&pw(PASSWORD), &pw(THIRD), &RekeyOptions::default())
            .await
            .unwrap();
        assert_eq!(moved, 2);
        settle(&server, &[&c, &d]).await;
        opens_only(&[&c, &d], (&from_c, "written by c"), THIRD, &[PASSWORD]).await;
        opens_only(&[&c, &d], (&from_d, "written by d"), THIRD, &[PASSWORD]).await;
    });
}

/// A server, an on-time device B, and two tabs of a device whose clock runs 30 s slow: `syncing`
/// has just pulled a record (`token`, "v" under [`PASSWORD`]) and the setting `theme` = "dark"
/// that B wrote; `writing` has not synced, and its clock has seen none of their revisions. A
/// second later by every clock.
struct SlowTabs {
    server: Node,
    b: Node,
    syncing: Node,
    writing: Node,
    token: String,
}

async fn slow_tabs() -> SlowTabs {
    let (server_clock, b_clock) = (TestClock::new(T0), TestClock::new(T0));
    let a_clock = TestClock::new(T0 - 30_000);
    let server = clocked(true, &server_clock).await;
    let b = clocked(true, &b_clock).await;
    let store: Arc<dyn Storage> = Arc::new(GlueMemoryStorage::new().unwrap());
    let syncing = timed_on(&a_clock, store.clone(), true).await;
    let remote = wire(&server);
    sync(&b, &remote).await;
    sync(&syncing, &remote).await;
    let writing = timed_on(&a_clock, store, true).await;
    let token = create(&b, "v", PASSWORD).await;
    b.vault.set_vault_setting("theme", "dark").await.unwrap();
    sync(&b, &remote).await;
    sync(&syncing, &remote).await;
    for clock in [&server_clock, &b_clock, &a_clock] {
        clock.advance(1_000);
    }
    SlowTabs {
        server,
        b,
        syncing,
        writing,
        token,
    }
}

/// Two tabs of one device whose clock runs 30 s slow (within the drift tolerance, so no sync
/// corrects it): one syncs, the other changes the password, and a setting, right after the
/// syncing tab pulled the rows they replace from an on-time device. The writing tab's clock had
/// seen none of those rows' revisions, so its changes were stamped before them: the server kept
/// the rows they replaced: the password change was undone on every device, and the setting
/// lost, with no conflict reported. Found by the sync simulation (a slow device's tab that had
/// not synced changing the password after its other tab pulled a rotation). A write to a meta
/// row is now ordered after the row it replaces.
#[test]
fn a_change_in_one_tab_outranks_the_rows_another_tab_pulled() {
    block_on(async {
        // Each change on its own: either one would order the tab's clock after both rows.
        for password in [true, false] {
            let SlowTabs {
                server,
                b,
                syncing,
                writing,
                token,
            } = slow_tabs().await;
            let remote = wire(&server);
            if password {
                writing
                    .vault
                    .bulk_rekey(&pw(PASSWORD), &pw(NEW), &RekeyOptions::default())
                    .await
                    .unwrap();
            } else {
                writing
                    .vault
                    .set_vault_setting("theme", "light")
                    .await
                    .unwrap();
            }
            let report = sync(&syncing, &remote).await;
            assert_eq!(report.conflicts, 0, "{report:?}");
            settle(&server, &[&syncing, &b]).await;
            if password {
                opens_only(&[&syncing, &b], (&token, "v"), NEW, &[PASSWORD]).await;
            } else {
                for node in [&syncing, &b] {
                    let theme = node.vault.get_vault_setting("theme").await.unwrap();
                    assert_eq!(theme.as_deref(), Some("light"));
                }
            }
        }
    });
}

/// The same for a record changed by id without reading it first (`recordSoftDeleteById`): its
/// soft delete was stamped before the revision the record had from the on-time device, lost
/// to it, and the record came back live everywhere.
#[test]
fn a_soft_delete_by_id_in_one_tab_outranks_the_version_another_tab_pulled() {
    block_on(async {
        let SlowTabs {
            server,
            b,
            syncing,
            writing,
            token,
        } = slow_tabs().await;
        let id = writing
            .vault
            .record_find_by_token(&token)
            .await
            .unwrap()
            .expect("pulled")
            .id;
        writing.vault.record_soft_delete_by_id(&id).await.unwrap();
        settle(&server, &[&syncing, &b]).await;
        for node in [&syncing, &b] {
            let stored = node.store.records_by_ids(std::slice::from_ref(&id)).await;
            let record = stored.unwrap().pop().flatten().expect("kept, in the trash");
            assert!(record.soft_deleted_at.is_some(), "{record:?}");
            assert_eq!(node.vault.record_find_by_id(&id).await.unwrap(), None);
        }
    });
}

/// Found by the simulation (through rotations, seed 41) while first slots became vacant: A
/// deletes the identity's last record it holds (an emptied removal, with the slot) while B,
/// which wrote a record under the identity, changed its password to the added secret (its own
/// rows vacant). B writes the identity again with its slot (nothing was retired), and the
/// server first took that revival for a removal of the last secret and refused it; B took the
/// removal back and wrote the slot again at every sync, for ever. A revival takes no secret
/// away: it stands, and the added secret opens B's record everywhere.
#[test]
fn an_emptied_identity_comes_back_with_a_vacant_first_slot_and_its_added_secret() {
    block_on(async {
        let server = memory(true).await;
        let (a, b) = (memory(true).await, memory(true).await);
        let remote = wire(&server);
        let first = create_all(&a, &["zero".into()]).await.remove(0);
        a.vault.secret_add(&pw(PASSWORD), &pw(NEW)).await.unwrap();
        sync(&a, &remote).await;
        sync(&b, &remote).await;
        let written = create(&b, "one", PASSWORD).await;
        a.vault.token_delete(&first).await.unwrap();
        b.vault
            .bulk_rekey(&pw(PASSWORD), &pw(NEW), &RekeyOptions::default())
            .await
            .unwrap();
        sync(&a, &remote).await;
        let revived = sync(&b, &remote).await;
        assert_eq!(revived.conflicts, 0, "{revived:?}");
        sync(&a, &remote).await;
        for node in [&a, &b] {
            assert_eq!(sync(node, &remote).await.pushed, 0, "settled");
        }
        converged(&[&a, &b, &server]).await;
        opens_only(&[&a, &b], (&written, "one"), NEW, &[PASSWORD]).await;
    });
}

/// Found by the simulation (through rotations, seeds 41, 106, 107) once first slots became
/// vacant: B adds a secret and makes it its password (its own rows vacant) while A rotates the
/// identity away, then B writes with that secret, under the identity. B's record is stranded
/// (`retired_key`) and the identity's removal waits on B while the record uses it, but the
/// removal of the added secret's slot, which goes with the identity, applied at once: the
/// record opened with no secret at all. The slot now waits with its identity, so the record
/// keeps opening with the secret B wrote it with, and a rekey on B moves it to A's key.
#[test]
fn a_record_stranded_under_a_vacant_first_slot_still_opens_with_the_added_secret() {
    block_on(async {
        let (server, a, b) = joined_empty().await;
        let remote = wire(&server);
        let first = create(&a, "first", PASSWORD).await;
        settle(&server, &[&a, &b]).await;
        rotate_to_new(&a).await;
        b.vault.secret_add(&pw(PASSWORD), &pw(THIRD)).await.unwrap();
        b.vault
            .bulk_rekey(&pw(PASSWORD), &pw(THIRD), &RekeyOptions::default())
            .await
            .unwrap();
        let written = create(&b, "written on b", THIRD).await;
        sync(&a, &remote).await;
        let report = sync(&b, &remote).await;
        assert_eq!(report.stranded, vec![written.clone()], "{report:?}");
        for _ in 0..2 {
            b.vault.lock();
            assert_eq!(
                b.vault.token_read(&written, &pw(THIRD)).await.unwrap(),
                "written on b"
            );
            assert!(sync(&b, &remote).await.stranded.contains(&written));
        }
        b.vault
            .bulk_rekey(&pw(THIRD), &pw(NEW), &RekeyOptions::default())
            .await
            .unwrap();
        settle(&server, &[&a, &b]).await;
        opens_with(
            &[&a, &b],
            &[(&first, "first"), (&written, "written on b")],
            &[NEW],
            "after the rekey",
        )
        .await;
        opens_only(
            &[&a, &b],
            (&written, "written on b"),
            NEW,
            &[PASSWORD, THIRD],
        )
        .await;
    });
}

/// SYNC.md 3 and the SQL backend's "same atomicity, across isolates and processes": a replica on
/// SQL plans a pulled page from reads that its commit does not hold. Here the page removes an
/// identity as emptied (its last record deleted elsewhere), and another connection to the same
/// database writes a record under that identity between the plan's reads and its commit. The
/// commit must not remove the identity from under the new record: it fails, and the page is
/// planned again, keeping the identity for the record, which then reaches the other device.
#[test]
fn a_record_written_under_an_identity_while_a_pulled_page_removes_it_keeps_it() {
    let dir = std::env::temp_dir().join(format!("vaultstore-sync-race-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("replica.db");
    let _ = std::fs::remove_file(&path);
    block_on(async {
        let server = memory(true).await;
        let a = memory(true).await;
        let remote = wire(&server);
        let connection = || async {
            SqlStorage::open(Sqlite::file(&path), "vaultstore")
                .await
                .unwrap()
        };
        let gate = interleaving::Gate::default();
        let b = Vault::open(
            Box::new(interleaving::Gated {
                inner: connection().await,
                gate: gate.clone(),
            }),
            options(true),
        )
        .await
        .unwrap();
        let other = Vault::open(Box::new(connection().await), options(true))
            .await
            .unwrap();
        let first = create(&a, "first", PASSWORD).await;
        sync(&a, &remote).await;
        b.sync(&remote, None).await.unwrap();
        a.vault.token_delete(&first).await.unwrap();
        sync(&a, &remote).await;

        let (synced, written) = interleaving::interleave(
            &gate,
            b.sync(&remote, None),
            other.token_create("second", &pw(PASSWORD), &CreateOptions::default()),
        )
        .await;
        synced.unwrap();
        let second = written
            .expect("the sync wrote the pulled page")
            .expect("the record was written under the identity the page removes");
        assert_eq!(
            other.token_read(&second, &pw(PASSWORD)).await.unwrap(),
            "second",
            "the record keeps its identity on the replica"
        );
        b.sync(&remote, None).await.unwrap();
        sync(&a, &remote).await;
        opens_with(
            &[&a],
            &[(&second, "second")],
            &[PASSWORD],
            "and reaches the other device with it",
        )
        .await;
        assert_eq!(
            a.vault
                .token_read(&first, &pw(PASSWORD))
                .await
                .unwrap_err()
                .code(),
            ErrorCode::RecordNotFound,
            "the deletion stands"
        );
    });
    let _ = std::fs::remove_dir_all(&dir);
}

/// API.md: an identity goes when its last record is moved. Two devices that rotate one key at
/// once each make a new identity, and every record follows whichever rotation is later (SYNC.md
/// 2): the other new identity is left without records on the device that made it, and goes
/// there, removal pushed. Its secret then opens nothing anywhere (`unlock` refuses it rather
/// than finding an empty identity), and the later rotation's secret opens everything.
///
/// Whichever way the later rotation's records reach the earlier one's device: in a pulled page,
/// or in the answer to its own push (the later rotation pushed between its pull and its push,
/// each request a turn later).
#[test]
fn the_identity_of_a_rotation_that_lost_to_a_concurrent_one_goes_with_its_records() {
    for in_push_answer in [false, true] {
        rotations_at_once(in_push_answer);
    }
}

fn rotations_at_once(in_push_answer: bool) {
    block_on(async {
        let server = memory(true).await;
        let remote = wire(&server);
        let (a, b) = (memory(true).await, memory(true).await);
        let first = create(&a, "first", PASSWORD).await;
        let second = create(&a, "second", PASSWORD).await;
        settle(&server, &[&a, &b]).await;
        rotate_to(&a, NEW).await;
        // Later than a's rotation by its revisions' wall time.
        std::thread::sleep(std::time::Duration::from_millis(5));
        rotate_to(&b, THIRD).await;
        if in_push_answer {
            // b pulls, a pulls, b pushes its rotation, a pushes its own: the answer holds b's.
            let turns = Turns(&remote);
            let (b_report, a_report) =
                futures::future::join(b.vault.sync(&turns, None), a.vault.sync(&turns, None)).await;
            b_report.unwrap();
            let report = a_report.unwrap();
            assert!(report.stranded.is_empty(), "{report:?}");
            a.vault.lock();
            assert_eq!(
                a.vault.unlock(&pw(NEW)).await.unwrap_err().code(),
                ErrorCode::InvalidPassword,
                "gone on a within the sync that brought the later rotation"
            );
        }
        settle(&server, &[&a, &b]).await;
        let fresh = memory(true).await;
        sync(&fresh, &remote).await;
        fresh.vault.lock();
        let (winner, loser) = match fresh.vault.token_read(&first, &pw(NEW)).await {
            Ok(_) => (NEW, THIRD),
            Err(_) => (THIRD, NEW),
        };
        opens_with(
            &[&a, &b, &fresh],
            &[(&first, "first"), (&second, "second")],
            &[winner],
            "the later rotation",
        )
        .await;
        for node in [&a, &b, &fresh] {
            node.vault.lock();
            assert_eq!(
                node.vault.unlock(&pw(loser)).await.unwrap_err().code(),
                ErrorCode::InvalidPassword,
                "the earlier rotation's secret opens nothing"
            );
            node.vault.lock();
            assert_eq!(
                node.vault.unlock(&pw(PASSWORD)).await.unwrap_err().code(),
                ErrorCode::InvalidPassword
            );
        }
    });
}

/// The same, with a record written under the earlier rotation's identity on a third device
/// before the later rotation reached it: the removal is an emptied one, which records written
/// elsewhere undo (SYNC.md 3), so that record keeps its identity and opens with its secret on
/// every device, while the rotated records follow the later rotation.
#[test]
fn a_record_written_under_the_identity_of_a_rotation_that_lost_keeps_it() {
    block_on(async {
        let server = memory(true).await;
        let remote = wire(&server);
        let (a, b, c) = (memory(true).await, memory(true).await, memory(true).await);
        let first = create(&a, "first", PASSWORD).await;
        settle(&server, &[&a, &b, &c]).await;
        rotate_to(&a, NEW).await;
        sync(&a, &remote).await;
        sync(&c, &remote).await;
        let written = create(&c, "written on c", NEW).await;
        // Later than a's rotation by its revisions' wall time.
        std::thread::sleep(std::time::Duration::from_millis(5));
        rotate_to(&b, THIRD).await;
        sync(&b, &remote).await;
        sync(&a, &remote).await;
        settle(&server, &[&a, &b, &c]).await;
        let fresh = memory(true).await;
        sync(&fresh, &remote).await;
        opens_with(
            &[&a, &b, &c, &fresh],
            &[(&first, "first")],
            &[THIRD],
            "the later rotation",
        )
        .await;
        opens_with(
            &[&a, &b, &c, &fresh],
            &[(&written, "written on c")],
            &[NEW],
            "the record written under the earlier one",
        )
        .await;
        for node in [&a, &b, &c, &fresh] {
            node.vault.lock();
            assert_eq!(
                node.vault.unlock(&pw(PASSWORD)).await.unwrap_err().code(),
                ErrorCode::InvalidPassword
            );
        }
    });
}
