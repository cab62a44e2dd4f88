//! `unlock(secret)` (API.md "Unlocking"), written once and run on every backend: natively on
//! GlueSQL and on SQL (SQLite), in Chromium on IndexedDB.
//!
//! Each case gets a function that opens a fresh store, twice if asked (two connections to one
//! database, as two tabs or isolates), so a vault written with identities off can be unlocked
//! by one opened with them on, and the other way round.
#![allow(dead_code)]

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use vaultstore_wasm::platform::{Clock, NoYield, Platform, RustKdf};
use vaultstore_wasm::storage::{RecordChange, Stamp, Storage, WriteOp};
use vaultstore_wasm::{CreateOptions, ErrorCode, Secret, Vault, VaultError, VaultOptions};

pub const PASSWORD: &str = "correct horse battery";
pub const OTHER: &str = "another long password";
pub const THIRD: &str = "a third long password";
pub const T0: i64 = 1_700_000_000_000;

/// A clock the cases move by hand (expiry).
#[derive(Clone)]
pub struct HandClock(Arc<AtomicI64>);

impl Clock for HandClock {
    fn now_ms(&self) -> i64 {
        self.0.load(Ordering::SeqCst)
    }
}

impl HandClock {
    pub fn at(ms: i64) -> Self {
        HandClock(Arc::new(AtomicI64::new(ms)))
    }
    fn advance(&self, ms: i64) {
        self.0.fetch_add(ms, Ordering::SeqCst);
    }
}

fn pw(p: &str) -> Secret {
    Secret::password(p)
}

fn raw(fill: u8) -> Secret {
    Secret::raw_key(&[fill; 32]).unwrap()
}

pub async fn open(storage: Box<dyn Storage>, identities: bool, clock: &HandClock) -> Vault {
    let platform = Platform {
        clock: Arc::new(clock.clone()),
        kdf: Box::new(RustKdf),
        scheduler: Box::new(NoYield),
    };
    let options = VaultOptions {
        kdf_iterations: 1_000,
        password_identity: identities,
        ..VaultOptions::default()
    };
    Vault::open_with(storage, options, platform).await.unwrap()
}

/// `unlock` rejects with `INVALID_PASSWORD`, with a message that says what to do and repeats
/// no secret.
async fn refused(v: &Vault, secret: &Secret, what: &str) {
    match v.unlock(secret).await {
        Err(e) => {
            assert_eq!(e.code(), ErrorCode::InvalidPassword, "{what}: {e}");
            check_message(&e, what);
        }
        Ok(b) => panic!("{what}: expected INVALID_PASSWORD, got Ok({b})"),
    }
}

fn check_message(e: &VaultError, what: &str) {
    let m = e.to_string();
    assert!(m.len() > 30, "{what}: an actionable message: {m}");
    for secret in [PASSWORD, OTHER, THIRD] {
        assert!(
            !m.contains(secret),
            "{what}: the message repeats a password: {m}"
        );
    }
}

async fn unlocks(v: &Vault, secret: &Secret, expected: bool, what: &str) {
    match v.unlock(secret).await {
        Ok(b) => assert_eq!(b, expected, "{what}"),
        Err(e) => panic!("{what}: expected Ok({expected}), got {e}"),
    }
}

/// Run every case, with identities off and on. `connect(name)` opens two connections to one new,
/// empty store named after the case.
pub async fn run_all<F, Fut>(connect: F)
where
    F: Fn(String) -> Fut,
    Fut: Future<Output = (Box<dyn Storage>, Box<dyn Storage>)>,
{
    for identities in [false, true] {
        let on = if identities { "on" } else { "off" };
        let name = |case: &str| format!("unlock-{case}-identities-{on}");
        let clock = || HandClock::at(T0);

        let (s, _) = connect(name("empty")).await;
        an_empty_vault_has_nothing_to_check_against(open(s, identities, &clock()).await, on).await;

        let (s, _) = connect(name("right-wrong")).await;
        the_right_secret_opens_and_a_wrong_one_is_refused(open(s, identities, &clock()).await, on)
            .await;

        let (s, _) = connect(name("raw")).await;
        raw_keys_are_checked_like_passwords(open(s, identities, &clock()).await, on).await;

        let (s, _) = connect(name("cached")).await;
        the_key_stays_cached_after_unlock(open(s, identities, &clock()).await, on).await;

        let (s, _) = connect(name("trash")).await;
        soft_deleted_records_still_check_the_secret(open(s, identities, &clock()).await, on).await;

        let c = clock();
        let (s, _) = connect(name("expired")).await;
        expired_records_still_check_the_secret(open(s, identities, &c).await, &c, on).await;

        let (s, _) = connect(name("several")).await;
        every_secret_with_records_opens(open(s, identities, &clock()).await, on).await;

        let (s, _) = connect(name("cheap")).await;
        the_check_stops_at_the_first_record_that_opens(
            open(s, identities, &clock()).await,
            identities,
        )
        .await;

        let (a, b) = connect(name("switch")).await;
        records_written_with_identities_switched_the_other_way_count(
            open(a, !identities, &clock()).await,
            open(b, identities, &clock()).await,
            on,
        )
        .await;

        if !identities {
            let (a, b) = connect(name("damaged")).await;
            a_key_check_that_matches_is_confirmed_by_decryption(
                open(a, identities, &clock()).await,
                b,
            )
            .await;
        }

        if identities {
            let (a, b) = connect(name("orphan")).await;
            an_identity_without_records_still_checks_the_secret(
                open(a, identities, &clock()).await,
                b,
            )
            .await;
        }

        let (s, _) = connect(name("closed")).await;
        let v = open(s, identities, &clock()).await;
        v.close().await;
        match v.unlock(&pw(PASSWORD)).await {
            Err(e) => assert_eq!(e.code(), ErrorCode::Closed, "{e}"),
            Ok(b) => panic!("identities {on}: a closed vault answered Ok({b})"),
        }
    }
}

/// Nothing stored: `false` for any secret, as often as asked; still `false` once every record
/// is deleted for good (with identities on, the identity goes with its last record).
async fn an_empty_vault_has_nothing_to_check_against(v: Vault, on: &str) {
    unlocks(
        &v,
        &pw(PASSWORD),
        false,
        &format!("identities {on}: new vault"),
    )
    .await;
    unlocks(
        &v,
        &pw(OTHER),
        false,
        &format!("identities {on}: new vault, another password"),
    )
    .await;
    unlocks(
        &v,
        &raw(7),
        false,
        &format!("identities {on}: new vault, a raw key"),
    )
    .await;
    let token = v
        .token_create("v", &pw(PASSWORD), &CreateOptions::default())
        .await
        .unwrap();
    refused(
        &v,
        &pw(OTHER),
        &format!("identities {on}: one record of another password"),
    )
    .await;
    v.token_delete(&token).await.unwrap();
    unlocks(
        &v,
        &pw(OTHER),
        false,
        &format!("identities {on}: every record deleted"),
    )
    .await;
}

async fn the_right_secret_opens_and_a_wrong_one_is_refused(v: Vault, on: &str) {
    v.tokens_create(&["a", "b", "c"], &pw(PASSWORD), &CreateOptions::default())
        .await
        .unwrap();
    unlocks(
        &v,
        &pw(PASSWORD),
        true,
        &format!("identities {on}: right password"),
    )
    .await;
    refused(&v, &pw(OTHER), &format!("identities {on}: wrong password")).await;
    refused(
        &v,
        &raw(1),
        &format!("identities {on}: a raw key against passwords"),
    )
    .await;
    // A refusal changes nothing: the right one still opens, and so do the records.
    unlocks(
        &v,
        &pw(PASSWORD),
        true,
        &format!("identities {on}: right password again"),
    )
    .await;
}

async fn raw_keys_are_checked_like_passwords(v: Vault, on: &str) {
    let token = v
        .token_create("worker secret", &raw(1), &CreateOptions::default())
        .await
        .unwrap();
    unlocks(
        &v,
        &raw(1),
        true,
        &format!("identities {on}: right raw key"),
    )
    .await;
    refused(&v, &raw(2), &format!("identities {on}: wrong raw key")).await;
    refused(
        &v,
        &pw(PASSWORD),
        &format!("identities {on}: a password against a raw key"),
    )
    .await;
    assert_eq!(
        v.token_read(&token, &raw(1)).await.unwrap(),
        "worker secret"
    );
}

/// One derivation for `unlock`, none for the calls after it.
async fn the_key_stays_cached_after_unlock(v: Vault, on: &str) {
    let token = v
        .token_create("v", &pw(PASSWORD), &CreateOptions::default())
        .await
        .unwrap();
    v.lock();
    let before = v.key_derivations();
    unlocks(
        &v,
        &pw(PASSWORD),
        true,
        &format!("identities {on}: after lock"),
    )
    .await;
    assert_eq!(
        v.key_derivations(),
        before + 1,
        "identities {on}: unlock derives once"
    );
    assert_eq!(v.token_read(&token, &pw(PASSWORD)).await.unwrap(), "v");
    unlocks(&v, &pw(PASSWORD), true, &format!("identities {on}: again")).await;
    assert_eq!(
        v.key_derivations(),
        before + 1,
        "identities {on}: the key unlock derived is the one later calls use"
    );
    // A refused secret is derived once too, like any other call's.
    refused(&v, &pw(OTHER), &format!("identities {on}: wrong")).await;
    refused(&v, &pw(OTHER), &format!("identities {on}: wrong again")).await;
    assert_eq!(
        v.key_derivations(),
        before + 2,
        "identities {on}: one derivation per secret"
    );
}

/// The trash still holds values sealed with the secret: they check it (the demo used to let any
/// password in here).
async fn soft_deleted_records_still_check_the_secret(v: Vault, on: &str) {
    let tokens = v
        .tokens_create(&["a", "b"], &pw(PASSWORD), &CreateOptions::default())
        .await
        .unwrap();
    for t in &tokens {
        v.token_soft_delete(t).await.unwrap();
    }
    unlocks(
        &v,
        &pw(PASSWORD),
        true,
        &format!("identities {on}: all in the trash"),
    )
    .await;
    refused(
        &v,
        &pw(OTHER),
        &format!("identities {on}: wrong, all in the trash"),
    )
    .await;
}

async fn expired_records_still_check_the_secret(v: Vault, clock: &HandClock, on: &str) {
    let options = CreateOptions {
        expires_at: Some(T0 + 1_000),
        ..CreateOptions::default()
    };
    let tokens = v
        .tokens_create(&["a", "b"], &pw(PASSWORD), &options)
        .await
        .unwrap();
    clock.advance(2_000);
    // Expired indeed: reads refuse them.
    match v.token_read(&tokens[0], &pw(PASSWORD)).await {
        Err(e) => assert_eq!(e.code(), ErrorCode::RecordNotFound, "{e}"),
        Ok(_) => panic!("identities {on}: an expired record was read"),
    }
    unlocks(
        &v,
        &pw(PASSWORD),
        true,
        &format!("identities {on}: all expired"),
    )
    .await;
    refused(
        &v,
        &pw(OTHER),
        &format!("identities {on}: wrong, all expired"),
    )
    .await;
    // Soft-deleted as expired, and then both at once.
    v.tokens_expired_soft_delete().await.unwrap();
    unlocks(
        &v,
        &pw(PASSWORD),
        true,
        &format!("identities {on}: expired and in the trash"),
    )
    .await;
    refused(
        &v,
        &pw(OTHER),
        &format!("identities {on}: wrong, expired and in the trash"),
    )
    .await;
}

/// A vault shared by several secrets: each that has records opens; one without is refused.
async fn every_secret_with_records_opens(v: Vault, on: &str) {
    for secret in [pw(PASSWORD), pw(OTHER), raw(3)] {
        v.token_create("v", &secret, &CreateOptions::default())
            .await
            .unwrap();
    }
    unlocks(
        &v,
        &pw(PASSWORD),
        true,
        &format!("identities {on}: first secret"),
    )
    .await;
    unlocks(
        &v,
        &pw(OTHER),
        true,
        &format!("identities {on}: second secret"),
    )
    .await;
    unlocks(&v, &raw(3), true, &format!("identities {on}: raw secret")).await;
    refused(
        &v,
        &pw(THIRD),
        &format!("identities {on}: a secret with no record"),
    )
    .await;
}

/// Cheap: with identities on, the identity lookup answers and no record is looked at; with them
/// off, the key checks stop at the first record that opens.
async fn the_check_stops_at_the_first_record_that_opens(v: Vault, identities: bool) {
    let values: Vec<String> = (0..50).map(|i| format!("value {i}")).collect();
    let refs: Vec<&str> = values.iter().map(String::as_str).collect();
    v.tokens_create(&refs, &pw(PASSWORD), &CreateOptions::default())
        .await
        .unwrap();
    let (opens, checked) = v.unlock_counted(&pw(PASSWORD)).await.unwrap();
    assert!(opens);
    assert_eq!(
        checked,
        if identities { 0 } else { 1 },
        "identities {identities}: records whose key check was computed"
    );
}

/// Records sealed with a master key (identities off) unlock a vault opened with identities on,
/// and an identity (identities on) unlocks a vault opened with them off.
async fn records_written_with_identities_switched_the_other_way_count(
    writer: Vault,
    reader: Vault,
    on: &str,
) {
    writer
        .token_create("v", &pw(PASSWORD), &CreateOptions::default())
        .await
        .unwrap();
    unlocks(
        &reader,
        &pw(PASSWORD),
        true,
        &format!("reader with identities {on}"),
    )
    .await;
    refused(
        &reader,
        &pw(OTHER),
        &format!("reader with identities {on}, wrong"),
    )
    .await;
}

/// An identity is something to check against even with no record left (its rows outlived its
/// last link, as a storage-level delete that removed the link first leaves them).
async fn an_identity_without_records_still_checks_the_secret(v: Vault, store: Box<dyn Storage>) {
    let token = v
        .token_create("v", &pw(PASSWORD), &CreateOptions::default())
        .await
        .unwrap();
    let record = v.record_find_by_token(&token).await.unwrap().unwrap();
    store
        .apply(
            stamp(),
            vec![
                WriteOp::ChangeRecord {
                    id: record.id.clone(),
                    change: RecordChange::Reseal {
                        expect: record.value.clone(),
                        value: record.value.clone(),
                        password_id: None,
                    },
                    at: T0,
                },
                WriteOp::DeleteRecord {
                    id: record.id.clone(),
                    if_expired_at: None,
                },
            ],
        )
        .await
        .unwrap();
    assert!(store.scan_records(None, 10).await.unwrap().is_empty());
    unlocks(&v, &pw(PASSWORD), true, "an identity without records").await;
    refused(&v, &pw(OTHER), "an identity without records, wrong").await;
}

/// The 4-byte key check only picks candidates (it matches a wrong key once in 2^32 records): a
/// record must also decrypt. A damaged one (key check intact, tag broken) opens nothing, and the
/// check goes on to the next record.
async fn a_key_check_that_matches_is_confirmed_by_decryption(v: Vault, store: Box<dyn Storage>) {
    let token = v
        .token_create("v", &pw(PASSWORD), &CreateOptions::default())
        .await
        .unwrap();
    let record = v.record_find_by_token(&token).await.unwrap().unwrap();
    // A base64url character well inside the GCM tag: the key check and the length stay.
    let mut damaged = record.value.clone().into_bytes();
    let at = damaged.len() - 5;
    damaged[at] = if damaged[at] == b'A' { b'B' } else { b'A' };
    let damaged = String::from_utf8(damaged).unwrap();
    store
        .apply(
            stamp(),
            vec![WriteOp::ChangeRecord {
                id: record.id.clone(),
                change: RecordChange::Reseal {
                    expect: record.value.clone(),
                    value: damaged,
                    password_id: record.password_id.clone(),
                },
                at: T0,
            }],
        )
        .await
        .unwrap();
    match v.token_read(&token, &pw(PASSWORD)).await {
        Err(e) => assert_eq!(e.code(), ErrorCode::DecryptionFailed, "{e}"),
        Ok(_) => panic!("the damaged record opened"),
    }
    refused(&v, &pw(PASSWORD), "only a damaged record").await;
    v.token_create("w", &pw(PASSWORD), &CreateOptions::default())
        .await
        .unwrap();
    unlocks(&v, &pw(PASSWORD), true, "a damaged record and a good one").await;
}

/// A stamp for writes the tests make below the vault: a revision from a clock of its own.
fn stamp() -> Stamp {
    static CLOCK: std::sync::OnceLock<vaultstore_wasm::sync::Hlc> = std::sync::OnceLock::new();
    let clock = CLOCK.get_or_init(|| vaultstore_wasm::sync::Hlc::new().unwrap());
    Stamp {
        rev: clock.tick(T0).unwrap(),
        at: T0,
    }
}
