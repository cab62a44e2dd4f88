//! Several secrets for one identity (API.md "Unlocking, and several secrets for one identity";
//! FORMAT.md "Password identities"), written once and run on every backend: natively on GlueSQL
//! and on SQL (SQLite) in `tests/vault_slots.rs`, in Chromium on IndexedDB in `idb_browser.rs`.
//!
//! Each case gets a function that opens a fresh store twice (two connections to one database):
//! the vault runs on the first, the second looks at (or damages) the stored rows directly.
#![allow(dead_code)]
#![allow(clippy::disallowed_methods)] // clippy.toml's one-sort rule is for the engine's download size

use std::collections::BTreeSet;
use std::future::Future;
use std::sync::Arc;
use vaultstore_wasm::platform::{Clock, NoYield, Platform, RustKdf};
use vaultstore_wasm::storage::{MetaRow, Storage, WriteOp};
use vaultstore_wasm::{
    CreateOptions, ErrorCode, RekeyOptions, Secret, Vault, VaultError, VaultOptions,
};

pub const PASSWORD: &str = "correct horse battery";
pub const OTHER: &str = "another long password";
pub const THIRD: &str = "a third long password";
pub const FOURTH: &str = "a fourth long password";
const FROZEN: &str = include_str!("../fixtures/snapshot_v1.json");

struct FixedClock;

impl Clock for FixedClock {
    fn now_ms(&self) -> i64 {
        1_700_000_000_000
    }
}

fn pw(p: &str) -> Secret {
    Secret::password(p)
}

fn raw(fill: u8) -> Secret {
    Secret::raw_key(&[fill; 32]).unwrap()
}

fn platform() -> Platform {
    Platform {
        clock: Arc::new(FixedClock),
        kdf: Box::new(RustKdf),
        scheduler: Box::new(NoYield),
    }
}

fn options(identities: bool) -> VaultOptions {
    VaultOptions {
        kdf_iterations: 1_000,
        password_identity: identities,
        ..VaultOptions::default()
    }
}

pub async fn open(storage: Box<dyn Storage>, identities: bool) -> Vault {
    Vault::open_with(storage, options(identities), platform())
        .await
        .unwrap()
}

/// `result` is the error `expected`, with a message that says something and repeats no secret.
fn fails<T: std::fmt::Debug>(
    result: vaultstore_wasm::Result<T>,
    expected: ErrorCode,
    what: &str,
) -> VaultError {
    match result {
        Err(e) => {
            assert_eq!(e.code(), expected, "{what}: {e}");
            let m = e.to_string();
            assert!(m.len() > 30, "{what}: an actionable message: {m}");
            for secret in [PASSWORD, OTHER, THIRD, FOURTH, "short"] {
                assert!(
                    !m.contains(secret),
                    "{what}: the message repeats a secret: {m}"
                );
            }
            e
        }
        Ok(v) => panic!("{what}: expected {expected}, got Ok({v:?})"),
    }
}

async fn create(v: &Vault, secret: &Secret, values: &[&str]) -> Vec<String> {
    v.tokens_create(values, secret, &CreateOptions::default())
        .await
        .unwrap()
}

/// Every token reads back its value with `secret`.
async fn all_open(v: &Vault, secret: &Secret, tokens: &[String], values: &[&str], what: &str) {
    for (token, value) in tokens.iter().zip(values) {
        assert_eq!(
            v.token_read(token, secret).await.map_err(|e| e.to_string()),
            Ok((*value).to_owned()),
            "{what}"
        );
    }
}

/// `secret` opens nothing any more: unlock and every read refuse it.
async fn opens_nothing(v: &Vault, secret: &Secret, tokens: &[String], what: &str) {
    fails(v.unlock(secret).await, ErrorCode::InvalidPassword, what);
    for token in tokens {
        fails(
            v.token_read(token, secret).await,
            ErrorCode::InvalidPassword,
            what,
        );
    }
}

async fn identity_rows(s: &dyn Storage) -> Vec<MetaRow> {
    s.meta_all()
        .await
        .unwrap()
        .into_iter()
        .filter(|m| m.key.object_type == "password_identity")
        .collect()
}

/// The identity objects stored: (first slots, further slots).
async fn objects(s: &dyn Storage) -> (BTreeSet<String>, BTreeSet<String>) {
    let rows = identity_rows(s).await;
    let slots: BTreeSet<String> = rows
        .iter()
        .filter(|m| m.key.key == "identity")
        .map(|m| m.key.object_id.clone())
        .collect();
    let firsts = rows
        .iter()
        .map(|m| m.key.object_id.clone())
        .filter(|id| !slots.contains(id))
        .collect();
    (firsts, slots)
}

/// Every record's (token, value envelope), sorted: "no record was rewritten" means this.
async fn record_values(s: &dyn Storage) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = s
        .scan_records(None, 10_000)
        .await
        .unwrap()
        .into_iter()
        .map(|r| (r.token, r.value))
        .collect();
    out.sort();
    out
}

async fn links(s: &dyn Storage) -> BTreeSet<String> {
    s.scan_records(None, 10_000)
        .await
        .unwrap()
        .into_iter()
        .filter_map(|r| r.password_id)
        .collect()
}

pub async fn run_all<F, Fut>(connect: F)
where
    F: Fn(String) -> Fut,
    Fut: Future<Output = (Box<dyn Storage>, Box<dyn Storage>)>,
{
    let (s, t) = connect("slots-add".into()).await;
    an_added_secret_opens_every_record_and_none_is_rewritten(open(s, true).await, &*t).await;
    let (s, _) = connect("slots-errors".into()).await;
    adding_and_removing_refuse_what_the_contract_refuses(open(s, true).await).await;
    let (s, _) = connect("slots-off".into()).await;
    identities_off_refuse_slots(open(s, false).await).await;
    let (s, t) = connect("slots-remove".into()).await;
    removing_a_further_slot_forgets_only_it(open(s, true).await, &*t).await;
    let (s, t) = connect("slots-vacant".into()).await;
    removing_the_first_slot_leaves_it_vacant(open(s, true).await, &*t).await;
    let (s, t) = connect("slots-last".into()).await;
    the_last_secret_of_an_identity_with_records_stays(open(s, true).await, &*t).await;
    let (s, t) = connect("slots-rewrap".into()).await;
    a_rekey_without_rotation_replaces_only_its_slot(open(s, true).await, &*t).await;
    let (s, t) = connect("slots-rotate".into()).await;
    a_rotation_removes_every_other_slot(open(s, true).await, &*t).await;
    let (s, t) = connect("slots-rotate-to-slot".into()).await;
    a_rotation_to_another_slot_leaves_only_it(open(s, true).await, &*t).await;
    let (s, t) = connect("slots-tampered".into()).await;
    a_tampered_slot_fails_alone(open(s, true).await, &*t).await;
    let (s, t) = connect("slots-deleted".into()).await;
    deleting_the_last_record_removes_every_slot(open(s, true).await, &*t).await;
    let (s, _) = connect("slots-snapshot-out".into()).await;
    let (u, _) = connect("slots-snapshot-in".into()).await;
    let (w, _) = connect("slots-snapshot-bad".into()).await;
    snapshots_carry_slots(open(s, true).await, u, w).await;
    let (s, _) = connect("slots-frozen".into()).await;
    a_vault_written_before_slots_takes_them(s).await;
}

const VALUES: [&str; 3] = ["first", "second", "third"];

pub async fn an_added_secret_opens_every_record_and_none_is_rewritten(v: Vault, t: &dyn Storage) {
    let p = pw(PASSWORD);
    let key = raw(7);
    let tokens = create(&v, &p, &VALUES).await;
    let before = record_values(t).await;
    let (firsts, _) = objects(t).await;
    v.secret_add(&p, &key).await.unwrap();
    assert_eq!(record_values(t).await, before, "secretAdd rewrote a record");
    let (after, slots) = objects(t).await;
    assert_eq!(after, firsts, "the identity itself is unchanged");
    assert_eq!(slots.len(), 1, "one slot object");
    // The slot names the identity; links still point at the identity, never at the slot.
    assert_eq!(links(t).await, firsts);
    all_open(&v, &key, &tokens, &VALUES, "the added raw key").await;
    all_open(&v, &p, &tokens, &VALUES, "the existing password").await;
    assert_eq!(v.unlock(&key).await.map_err(|e| e.to_string()), Ok(true));
    // Records written with either secret after the add open with the other.
    let by_key = create(&v, &key, &["by key"]).await;
    all_open(
        &v,
        &p,
        &by_key,
        &["by key"],
        "a record written with the added key",
    )
    .await;
    v.token_update(&tokens[0], "updated", &key).await.unwrap();
    all_open(
        &v,
        &p,
        &tokens[..1],
        &["updated"],
        "a record updated with the added key",
    )
    .await;
    assert_eq!(links(t).await, firsts, "new records join the same identity");
    // A password added too: three secrets, one identity.
    v.secret_add(&key, &pw(OTHER)).await.unwrap();
    all_open(
        &v,
        &pw(OTHER),
        &by_key,
        &["by key"],
        "a password added with the key",
    )
    .await;
    assert_eq!(objects(t).await.1.len(), 2);
}

pub async fn adding_and_removing_refuse_what_the_contract_refuses(v: Vault) {
    let p = pw(PASSWORD);
    let tokens = create(&v, &p, &VALUES).await;
    let other_tokens = create(&v, &pw(OTHER), &["other's"]).await;
    fails(
        v.secret_add(&pw(THIRD), &raw(1)).await,
        ErrorCode::IdentityNotFound,
        "an unknown existing secret",
    );
    fails(
        v.secret_add(&p, &p).await,
        ErrorCode::InvalidArgument,
        "adding the existing secret to itself",
    );
    fails(
        v.secret_add(&p, &pw(OTHER)).await,
        ErrorCode::InvalidArgument,
        "adding a secret that opens another identity",
    );
    fails(
        v.secret_add(&p, &pw("short")).await,
        ErrorCode::PasswordPolicy,
        "adding a password the policy refuses",
    );
    v.secret_add(&p, &raw(1)).await.unwrap();
    fails(
        v.secret_add(&p, &raw(1)).await,
        ErrorCode::InvalidArgument,
        "adding the same secret twice",
    );
    fails(
        v.secret_add(&pw(OTHER), &raw(1)).await,
        ErrorCode::InvalidArgument,
        "adding a slot of one identity to another",
    );
    fails(
        v.secret_remove(&pw(THIRD)).await,
        ErrorCode::IdentityNotFound,
        "removing an unknown secret",
    );
    // Nothing of the refused calls changed what opens what.
    all_open(&v, &p, &tokens, &VALUES, "after refused calls").await;
    all_open(&v, &raw(1), &tokens, &VALUES, "the one slot added").await;
    all_open(
        &v,
        &pw(OTHER),
        &other_tokens,
        &["other's"],
        "the other identity",
    )
    .await;
    fails(
        v.token_read(&other_tokens[0], &raw(1)).await,
        ErrorCode::InvalidPassword,
        "a slot of one identity opens nothing of another",
    );
}

pub async fn identities_off_refuse_slots(v: Vault) {
    create(&v, &pw(PASSWORD), &VALUES).await;
    fails(
        v.secret_add(&pw(PASSWORD), &raw(1)).await,
        ErrorCode::IdentityDisabled,
        "secretAdd with identities off",
    );
    fails(
        v.secret_remove(&pw(PASSWORD)).await,
        ErrorCode::IdentityDisabled,
        "secretRemove with identities off",
    );
}

pub async fn removing_a_further_slot_forgets_only_it(v: Vault, t: &dyn Storage) {
    let p = pw(PASSWORD);
    let tokens = create(&v, &p, &VALUES).await;
    let before = identity_rows(t).await;
    v.secret_add(&p, &pw(OTHER)).await.unwrap();
    all_open(&v, &pw(OTHER), &tokens, &VALUES, "before the removal").await;
    let derived = v.key_derivations();
    v.secret_remove(&pw(OTHER)).await.unwrap();
    assert_eq!(
        identity_rows(t).await,
        before,
        "exactly the slot's rows went"
    );
    // Its key left the cache: checking it again derives it again.
    fails(
        v.unlock(&pw(OTHER)).await,
        ErrorCode::InvalidPassword,
        "the removed secret",
    );
    assert_eq!(
        v.key_derivations(),
        derived + 1,
        "the removed secret's key stayed cached"
    );
    opens_nothing(&v, &pw(OTHER), &tokens, "the removed secret").await;
    all_open(&v, &p, &tokens, &VALUES, "the remaining secret").await;
    fails(
        v.secret_remove(&pw(OTHER)).await,
        ErrorCode::IdentityNotFound,
        "removing it again",
    );
}

pub async fn removing_the_first_slot_leaves_it_vacant(v: Vault, t: &dyn Storage) {
    let p = pw(PASSWORD);
    let tokens = create(&v, &p, &VALUES).await;
    let (firsts, _) = objects(t).await;
    v.secret_add(&p, &pw(OTHER)).await.unwrap();
    v.secret_add(&p, &raw(3)).await.unwrap();
    let (_, slots) = objects(t).await;
    let slot_rows: Vec<MetaRow> = identity_rows(t)
        .await
        .into_iter()
        .filter(|m| slots.contains(&m.key.object_id))
        .collect();
    let records = record_values(t).await;
    v.secret_remove(&p).await.unwrap();
    opens_nothing(&v, &p, &tokens, "the removed first secret").await;
    all_open(&v, &pw(OTHER), &tokens, &VALUES, "an added secret").await;
    all_open(&v, &raw(3), &tokens, &VALUES, "another added secret").await;
    // No secret moved: both slots are as they were, and the identity's own rows (its id
    // unchanged, so the links too) hold a vacant slot: a fresh tag that no secret has, and a
    // key wrapped under none.
    let rows = identity_rows(t).await;
    let after: Vec<MetaRow> = rows
        .iter()
        .filter(|m| slots.contains(&m.key.object_id))
        .cloned()
        .collect();
    assert_eq!(after, slot_rows, "the added secrets' slots are untouched");
    assert_eq!(objects(t).await, (firsts.clone(), slots.clone()));
    let own_tag = rows
        .iter()
        .find(|m| firsts.contains(&m.key.object_id) && m.key.key == "tag")
        .expect("the identity keeps its own rows");
    assert!(
        own_tag.value.starts_with(&"0".repeat(32)) && own_tag.value.len() == 64,
        "a vacant tag: {}",
        own_tag.value
    );
    assert_eq!(links(t).await, firsts);
    assert_eq!(record_values(t).await, records, "no record was rewritten");
    // A further slot goes as usual; the last secret stays: the vacant first slot opens nothing.
    v.secret_remove(&pw(OTHER)).await.unwrap();
    opens_nothing(&v, &pw(OTHER), &tokens, "the second removed secret").await;
    all_open(&v, &raw(3), &tokens, &VALUES, "the last secret").await;
    assert_eq!(objects(t).await.0, firsts);
    assert_eq!(objects(t).await.1.len(), 1);
    let e = fails(
        v.secret_remove(&raw(3)).await,
        ErrorCode::InvalidArgument,
        "removing the last secret beside a vacant first slot",
    );
    assert!(e.to_string().contains("secretAdd"), "says what to do: {e}");
    all_open(
        &v,
        &raw(3),
        &tokens,
        &VALUES,
        "the refused removal's secret",
    )
    .await;
}

pub async fn the_last_secret_of_an_identity_with_records_stays(v: Vault, t: &dyn Storage) {
    let p = pw(PASSWORD);
    let tokens = create(&v, &p, &VALUES).await;
    let before = (record_values(t).await, t.meta_all().await.unwrap());
    let e = fails(
        v.secret_remove(&p).await,
        ErrorCode::InvalidArgument,
        "removing the last secret of an identity with records",
    );
    assert!(e.to_string().contains("secretAdd"), "says what to do: {e}");
    assert_eq!(
        (record_values(t).await, t.meta_all().await.unwrap()),
        before,
        "nothing changed"
    );
    all_open(&v, &p, &tokens, &VALUES, "after the refusal").await;
    // Soft-deleted records still belong to it.
    for token in &tokens {
        v.token_soft_delete(token).await.unwrap();
    }
    fails(
        v.secret_remove(&p).await,
        ErrorCode::InvalidArgument,
        "removing the last secret of an identity with soft-deleted records",
    );
    // An identity no record links to any more (only a damaged vault or a race leaves one: a
    // delete prunes it with its last record) goes with its last secret.
    let ids: Vec<String> = t
        .scan_records(None, 100)
        .await
        .unwrap()
        .into_iter()
        .map(|r| r.id)
        .collect();
    let records = t.records_by_ids(&ids).await.unwrap();
    let unlink: Vec<WriteOp> = records
        .into_iter()
        .flatten()
        .map(|r| WriteOp::ChangeRecord {
            id: r.id,
            change: vaultstore_wasm::storage::RecordChange::Reseal {
                expect: r.value.clone(),
                value: r.value,
                password_id: None,
            },
            at: 1,
        })
        .collect();
    t.apply(stamp(), unlink).await.unwrap();
    v.secret_remove(&p).await.unwrap();
    assert!(identity_rows(t).await.is_empty(), "the identity went");
    fails(
        v.secret_remove(&p).await,
        ErrorCode::IdentityNotFound,
        "a secret whose identity is gone",
    );
}

pub async fn a_rekey_without_rotation_replaces_only_its_slot(v: Vault, t: &dyn Storage) {
    let p = pw(PASSWORD);
    let tokens = create(&v, &p, &VALUES).await;
    v.secret_add(&p, &pw(OTHER)).await.unwrap();
    let records = record_values(t).await;
    let shape = objects(t).await;
    assert_eq!(
        v.bulk_rekey(&pw(OTHER), &pw(THIRD), &RekeyOptions::default())
            .await
            .map_err(|e| e.to_string()),
        Ok(3)
    );
    assert_eq!(
        record_values(t).await,
        records,
        "a re-wrap rewrites no record"
    );
    assert_eq!(
        objects(t).await,
        shape,
        "the same objects: the slot was re-wrapped in place"
    );
    all_open(&v, &pw(THIRD), &tokens, &VALUES, "the slot's new secret").await;
    all_open(&v, &p, &tokens, &VALUES, "the other secret keeps working").await;
    opens_nothing(&v, &pw(OTHER), &tokens, "the slot's old secret").await;
    fails(
        v.bulk_rekey(&pw(OTHER), &pw(FOURTH), &RekeyOptions::default())
            .await,
        ErrorCode::IdentityNotFound,
        "a rekey from the replaced secret",
    );
    // The first slot likewise: the further slot keeps working.
    v.bulk_rekey(&p, &pw(FOURTH), &RekeyOptions::default())
        .await
        .unwrap();
    all_open(
        &v,
        &pw(FOURTH),
        &tokens,
        &VALUES,
        "the first slot's new secret",
    )
    .await;
    all_open(
        &v,
        &pw(THIRD),
        &tokens,
        &VALUES,
        "the further slot after it",
    )
    .await;
    opens_nothing(&v, &p, &tokens, "the first slot's old secret").await;
    // A rekey to the same secret changes nothing.
    let shape = objects(t).await;
    assert_eq!(
        v.bulk_rekey(&pw(THIRD), &pw(THIRD), &RekeyOptions::default())
            .await
            .map_err(|e| e.to_string()),
        Ok(3)
    );
    assert_eq!(objects(t).await, shape, "a rekey to itself keeps its slot");
    all_open(&v, &pw(THIRD), &tokens, &VALUES, "the same secret").await;
    // A rekey to a secret that is already another slot of the identity moves no record, and
    // the old secret's slot goes: it was replaced, as a password change means.
    assert_eq!(
        v.bulk_rekey(&pw(FOURTH), &pw(THIRD), &RekeyOptions::default())
            .await
            .map_err(|e| e.to_string()),
        Ok(3)
    );
    assert_eq!(record_values(t).await, records, "no record is rewritten");
    all_open(
        &v,
        &pw(THIRD),
        &tokens,
        &VALUES,
        "the secret it was rekeyed to",
    )
    .await;
    opens_nothing(&v, &pw(FOURTH), &tokens, "the replaced secret").await;
    fails(
        v.bulk_rekey(&pw(FOURTH), &pw(THIRD), &RekeyOptions::default())
            .await,
        ErrorCode::IdentityNotFound,
        "a rekey from the replaced secret",
    );
}

pub async fn a_rotation_removes_every_other_slot(v: Vault, t: &dyn Storage) {
    let p = pw(PASSWORD);
    let tokens = create(&v, &p, &VALUES).await;
    v.secret_add(&p, &pw(OTHER)).await.unwrap();
    v.secret_add(&p, &raw(5)).await.unwrap();
    let records = record_values(t).await;
    let rotate = RekeyOptions {
        rotate: true,
        ..RekeyOptions::default()
    };
    assert_eq!(
        v.bulk_rekey(&p, &pw(THIRD), &rotate)
            .await
            .map_err(|e| e.to_string()),
        Ok(3)
    );
    assert!(
        record_values(t)
            .await
            .iter()
            .zip(&records)
            .all(|(a, b)| a.1 != b.1),
        "a rotation re-encrypts every record"
    );
    all_open(
        &v,
        &pw(THIRD),
        &tokens,
        &VALUES,
        "the rotation's new secret",
    )
    .await;
    opens_nothing(&v, &p, &tokens, "the rotated-from secret").await;
    opens_nothing(&v, &pw(OTHER), &tokens, "another slot of the old identity").await;
    opens_nothing(&v, &raw(5), &tokens, "another slot of the old identity").await;
    let (firsts, slots) = objects(t).await;
    assert_eq!(firsts.len(), 1);
    assert!(
        slots.is_empty(),
        "the old identity's slots went with it: {slots:?}"
    );
    assert_eq!(links(t).await, firsts);
    // A rotation to a secret of another identity removes the old slots too.
    v.secret_add(&pw(THIRD), &pw(OTHER)).await.unwrap();
    let theirs = create(&v, &pw(FOURTH), &["theirs"]).await;
    v.bulk_rekey(&pw(THIRD), &pw(FOURTH), &RekeyOptions::default())
        .await
        .unwrap();
    all_open(
        &v,
        &pw(FOURTH),
        &tokens,
        &VALUES,
        "moved to the other identity",
    )
    .await;
    all_open(&v, &pw(FOURTH), &theirs, &["theirs"], "its own record").await;
    opens_nothing(&v, &pw(OTHER), &tokens, "a slot of the moved-from identity").await;
    assert!(objects(t).await.1.is_empty());
}

pub async fn a_rotation_to_another_slot_leaves_only_it(v: Vault, t: &dyn Storage) {
    let p = pw(PASSWORD);
    let tokens = create(&v, &p, &VALUES).await;
    v.secret_add(&p, &pw(OTHER)).await.unwrap();
    v.secret_add(&p, &raw(5)).await.unwrap();
    let (old, _) = objects(t).await;
    let rotate = RekeyOptions {
        rotate: true,
        ..RekeyOptions::default()
    };
    assert_eq!(
        v.bulk_rekey(&p, &pw(OTHER), &rotate)
            .await
            .map_err(|e| e.to_string()),
        Ok(3)
    );
    all_open(&v, &pw(OTHER), &tokens, &VALUES, "the rotation's target").await;
    opens_nothing(&v, &p, &tokens, "the rotated-from secret").await;
    opens_nothing(&v, &raw(5), &tokens, "a third slot of the old identity").await;
    let (firsts, slots) = objects(t).await;
    assert_eq!(firsts.len(), 1);
    assert!(firsts.is_disjoint(&old), "a fresh identity");
    assert!(slots.is_empty(), "no slot is left: {slots:?}");
    assert_eq!(links(t).await, firsts);
}

pub async fn a_tampered_slot_fails_alone(v: Vault, t: &dyn Storage) {
    let p = pw(PASSWORD);
    let tokens = create(&v, &p, &VALUES).await;
    v.secret_add(&p, &pw(OTHER)).await.unwrap();
    v.secret_add(&p, &raw(2)).await.unwrap();
    // Damage the OTHER slot's wrapped key: flip one character of its ciphertext.
    let slots = objects(t).await.1;
    let mut damaged = None;
    for slot in &slots {
        let rows = t.meta_object("password_identity", slot).await.unwrap();
        let dek = rows.iter().find(|r| r.key.key == "dek").unwrap().clone();
        let mut tampered = dek.value.clone().into_bytes();
        let i = tampered.len() - 5;
        tampered[i] = if tampered[i] == b'A' { b'B' } else { b'A' };
        let row = MetaRow {
            key: dek.key.clone(),
            value: String::from_utf8(tampered).unwrap(),
        };
        t.apply(stamp(), vec![WriteOp::PutMeta(row)]).await.unwrap();
        // Which secret this slot was: the one that now fails.
        if v.unlock(&pw(OTHER)).await.is_err() {
            damaged = Some(slot.clone());
            break;
        }
        t.apply(stamp(), vec![WriteOp::PutMeta(dek)]).await.unwrap();
    }
    assert!(damaged.is_some(), "one slot is OTHER's");
    fails(
        v.unlock(&pw(OTHER)).await,
        ErrorCode::DecryptionFailed,
        "unlock through the damaged slot",
    );
    fails(
        v.token_read(&tokens[0], &pw(OTHER)).await,
        ErrorCode::DecryptionFailed,
        "a read through the damaged slot",
    );
    all_open(&v, &p, &tokens, &VALUES, "the first slot still opens").await;
    all_open(&v, &raw(2), &tokens, &VALUES, "the other slot still opens").await;
}

pub async fn deleting_the_last_record_removes_every_slot(v: Vault, t: &dyn Storage) {
    let p = pw(PASSWORD);
    let tokens = create(&v, &p, &VALUES).await;
    let kept = create(&v, &pw(THIRD), &["kept"]).await;
    v.secret_add(&p, &pw(OTHER)).await.unwrap();
    v.secret_add(&pw(THIRD), &raw(4)).await.unwrap();
    for token in &tokens[..2] {
        v.token_delete(token).await.unwrap();
    }
    assert_eq!(
        objects(t).await.1.len(),
        2,
        "a record is left: the slots stay"
    );
    v.token_delete(&tokens[2]).await.unwrap();
    let (firsts, slots) = objects(t).await;
    assert_eq!(firsts.len(), 1, "only the other identity is left");
    assert_eq!(slots.len(), 1, "with its own slot, and only it");
    all_open(&v, &raw(4), &kept, &["kept"], "the other identity's slot").await;
    fails(
        v.secret_remove(&pw(OTHER)).await,
        ErrorCode::IdentityNotFound,
        "a slot of the pruned identity",
    );
    // The removed slot's secret is free again: it can join another identity.
    v.secret_add(&pw(THIRD), &pw(OTHER)).await.unwrap();
    all_open(
        &v,
        &pw(OTHER),
        &kept,
        &["kept"],
        "the freed secret, added again",
    )
    .await;
}

pub async fn snapshots_carry_slots(v: Vault, into: Box<dyn Storage>, bad: Box<dyn Storage>) {
    let p = pw(PASSWORD);
    let tokens = create(&v, &p, &VALUES).await;
    v.secret_add(&p, &raw(6)).await.unwrap();
    let bytes = v.export_snapshot().await.unwrap();
    let w = Vault::open_with(
        into,
        VaultOptions {
            snapshot: Some(bytes.clone()),
            ..options(true)
        },
        platform(),
    )
    .await
    .unwrap();
    all_open(&w, &raw(6), &tokens, &VALUES, "a slot imported").await;
    all_open(&w, &p, &tokens, &VALUES, "the first slot imported").await;
    w.secret_remove(&raw(6)).await.unwrap();
    opens_nothing(&w, &raw(6), &tokens, "removed after the import").await;
    // A record link pointing at a slot object is refused, and nothing is imported.
    let mut doc: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
    let slot = doc["meta"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["key"] == "identity")
        .map(|m| m["objectId"].clone())
        .unwrap();
    for m in doc["meta"].as_array_mut().unwrap() {
        if m["objectType"] == "record" {
            m["value"] = slot.clone();
        }
    }
    let e = Vault::open_with(
        bad,
        VaultOptions {
            snapshot: Some(serde_json::to_vec(&doc).unwrap()),
            ..options(true)
        },
        platform(),
    )
    .await
    .expect_err("a link to a slot is refused");
    assert_eq!(e.code(), ErrorCode::InvalidArgument, "{e}");
}

pub async fn a_vault_written_before_slots_takes_them(s: Box<dyn Storage>) {
    let v = Vault::open_with(
        s,
        VaultOptions {
            snapshot: Some(FROZEN.as_bytes().to_vec()),
            min_kdf_iterations: Some(1_000),
            ..options(true)
        },
        platform(),
    )
    .await
    .unwrap();
    let token = ["tk_identityrecord000000000001".to_owned()];
    all_open(
        &v,
        &pw(PASSWORD),
        &token,
        &["linked value"],
        "the frozen vault",
    )
    .await;
    v.secret_add(&pw(PASSWORD), &raw(8)).await.unwrap();
    all_open(&v, &raw(8), &token, &["linked value"], "a slot added to it").await;
    v.secret_remove(&pw(PASSWORD)).await.unwrap();
    all_open(
        &v,
        &raw(8),
        &token,
        &["linked value"],
        "the frozen vault's first slot vacant",
    )
    .await;
}

/// A stamp for writes the tests make below the vault: a revision from a clock of its own.
fn stamp() -> vaultstore_wasm::storage::Stamp {
    static CLOCK: std::sync::OnceLock<vaultstore_wasm::sync::Hlc> = std::sync::OnceLock::new();
    let clock = CLOCK.get_or_init(|| vaultstore_wasm::sync::Hlc::new().unwrap());
    vaultstore_wasm::storage::Stamp {
        rev: clock.tick(1).unwrap(),
        at: 1,
    }
}
