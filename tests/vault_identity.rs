//! Password identities, bulk rekey and link migration (API.md "Password identities and rekey").
//! Every rekey is atomic: a failed write or a cancellation leaves every record, link and identity
//! byte-identical.
#![cfg(all(feature = "gluesql", not(target_arch = "wasm32")))]
#![allow(clippy::disallowed_methods)] // clippy.toml's one-sort rule is for the engine's download size

mod common;

use common::*;
use std::cell::Cell;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use vaultstore_wasm::platform::Platform;
use vaultstore_wasm::storage::memory::GlueMemoryStorage;
use vaultstore_wasm::storage::{MetaRow, RecordChange, Stamp, Storage, WriteOp};
use vaultstore_wasm::sync::Rev;
use vaultstore_wasm::{CreateOptions, ErrorCode, RekeyObserver, RekeyOptions, Vault, VaultOptions};

type Rows = (Vec<(String, String)>, Vec<MetaRow>);

/// Every record's (token, value envelope) and every meta row: "nothing changed" means this.
async fn state(v: &Vault) -> Rows {
    let snapshot: serde_json::Value =
        serde_json::from_slice(&v.export_snapshot().await.unwrap()).unwrap();
    let mut records: Vec<(String, String)> = snapshot["records"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["token"].as_str().unwrap().to_owned(),
                r["value"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    records.sort();
    let meta = snapshot["meta"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            MetaRow::new(
                m["objectType"].as_str().unwrap(),
                m["objectId"].as_str().unwrap(),
                m["key"].as_str().unwrap(),
                m["value"].as_str().unwrap(),
            )
        })
        .collect();
    (records, meta)
}

fn identities(rows: &Rows) -> Vec<String> {
    let mut ids: Vec<String> = rows
        .1
        .iter()
        .filter(|m| m.key.object_type == "password_identity")
        .map(|m| m.key.object_id.clone())
        .collect();
    ids.dedup();
    ids
}

fn links(rows: &Rows) -> Vec<&MetaRow> {
    rows.1
        .iter()
        .filter(|m| m.key.object_type == "record")
        .collect()
}

async fn create_many(v: &Vault, password: &str, n: usize) -> Vec<String> {
    let values: Vec<String> = (0..n).map(|i| format!("{password} #{i}")).collect();
    let refs: Vec<&str> = values.iter().map(String::as_str).collect();
    v.tokens_create(&refs, &pw(password), &CreateOptions::default())
        .await
        .unwrap()
}

#[test]
fn records_are_linked_to_one_identity_per_secret() {
    run(async {
        let v = identity_vault().await;
        let a = create_many(&v, PASSWORD, 3).await;
        let b = v
            .token_create("other", &pw(OTHER), &CreateOptions::default())
            .await
            .unwrap();
        let rows = state(&v).await;
        let ids = identities(&rows);
        assert_eq!(ids.len(), 2);
        assert!(ids.iter().all(|id| {
            id.len() == 34
                && id.starts_with("p_")
                && id[2..]
                    .chars()
                    .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase())
        }));
        assert_eq!(links(&rows).len(), 4);
        assert!(
            rows.1
                .iter()
                .any(|m| m.key.key == "dek" && m.value.starts_with("vs1k:"))
        );
        assert!(
            rows.1
                .iter()
                .any(|m| m.key.key == "tag" && m.value.len() == 64)
        );
        assert_eq!(
            v.token_read(&a[0], &pw(PASSWORD)).await.unwrap(),
            format!("{PASSWORD} #0")
        );
        code(
            v.token_read(&b, &pw(PASSWORD)).await,
            ErrorCode::InvalidPassword,
        );
        code(
            v.token_read(&a[1], &pw("a third password")).await,
            ErrorCode::InvalidPassword,
        );
    });
}

#[test]
fn rekey_to_a_new_secret_rewraps_without_touching_any_value() {
    run(async {
        let (v, clock, probe) = probed_vault(VaultOptions {
            password_identity: true,
            ..options()
        })
        .await;
        let tokens = create_many(&v, PASSWORD, 20).await;
        let other = v
            .token_create("untouched", &pw(OTHER), &CreateOptions::default())
            .await
            .unwrap();
        v.token_soft_delete(&tokens[0]).await.unwrap();
        v.token_renew(&tokens[1], Some(T0)).await.unwrap();
        clock.advance(10); // tokens[1] is now expired
        let before = state(&v).await;
        let batches = probe.batches.load(Ordering::SeqCst);
        let moved = v
            .bulk_rekey(
                &pw(PASSWORD),
                &pw("brand new password"),
                &RekeyOptions::default(),
            )
            .await
            .unwrap();
        assert_eq!(moved, 20, "soft-deleted and expired records count");
        assert_eq!(
            probe.batches.load(Ordering::SeqCst) - batches,
            1,
            "one small write"
        );
        let after = state(&v).await;
        assert_eq!(before.0, after.0, "every record value is byte-identical");
        assert_eq!(identities(&before), identities(&after));
        let changed: Vec<_> = after.1.iter().filter(|m| !before.1.contains(m)).collect();
        assert_eq!(
            changed.len(),
            2,
            "only the identity's tag and dek rows change: {changed:?}"
        );
        assert_eq!(
            v.token_read(&tokens[5], &pw("brand new password"))
                .await
                .unwrap(),
            format!("{PASSWORD} #5")
        );
        code(
            v.token_read(&tokens[5], &pw(PASSWORD)).await,
            ErrorCode::InvalidPassword,
        );
        assert_eq!(v.token_read(&other, &pw(OTHER)).await.unwrap(), "untouched");
        // The old password no longer has an identity.
        code(
            v.bulk_rekey(
                &pw(PASSWORD),
                &pw("whatever else"),
                &RekeyOptions::default(),
            )
            .await,
            ErrorCode::IdentityNotFound,
        );
    });
}

#[test]
fn rekey_of_ten_thousand_records_derives_exactly_two_keys() {
    run(async {
        let v = identity_vault().await;
        create_many(&v, PASSWORD, 10_000).await;
        v.lock();
        let before = v.key_derivations();
        let moved = v
            .bulk_rekey(
                &pw(PASSWORD),
                &pw("brand new password"),
                &RekeyOptions::default(),
            )
            .await
            .unwrap();
        assert_eq!(moved, 10_000);
        assert_eq!(
            v.key_derivations() - before,
            2,
            "one derivation per secret, none per record"
        );
    });
}

#[test]
fn rotate_re_encrypts_under_a_fresh_data_key() {
    run(async {
        let v = identity_vault().await;
        let tokens = create_many(&v, PASSWORD, 5).await;
        let other = v
            .token_create("bystander", &pw(OTHER), &CreateOptions::default())
            .await
            .unwrap();
        let before = state(&v).await;
        let moved = v
            .bulk_rekey(
                &pw(PASSWORD),
                &pw("rotated password"),
                &RekeyOptions {
                    rotate: true,
                    observer: None,
                },
            )
            .await
            .unwrap();
        assert_eq!(moved, 5);
        let after = state(&v).await;
        for token in &tokens {
            let old = before.0.iter().find(|(t, _)| t == token).unwrap();
            let new = after.0.iter().find(|(t, _)| t == token).unwrap();
            assert_ne!(old.1, new.1, "re-encrypted");
            assert!(v.token_read(token, &pw("rotated password")).await.is_ok());
        }
        assert_eq!(
            identities(&after).len(),
            2,
            "the old identity is gone, a new one holds the records"
        );
        assert!(
            identities(&after)
                .iter()
                .any(|id| !identities(&before).contains(id))
        );
        assert_eq!(v.token_read(&other, &pw(OTHER)).await.unwrap(), "bystander");
        // Rotating a secret onto itself gives a fresh key and the same password keeps working.
        v.bulk_rekey(
            &pw(OTHER),
            &pw(OTHER),
            &RekeyOptions {
                rotate: true,
                observer: None,
            },
        )
        .await
        .unwrap();
        assert_eq!(v.token_read(&other, &pw(OTHER)).await.unwrap(), "bystander");
        assert_ne!(state(&v).await.0, after.0);
    });
}

#[test]
fn rekey_onto_a_secret_with_an_identity_merges_them() {
    run(async {
        let v = identity_vault().await;
        let mine = create_many(&v, PASSWORD, 4).await;
        let theirs = create_many(&v, OTHER, 2).await;
        assert_eq!(
            v.bulk_rekey(&pw(PASSWORD), &pw(OTHER), &RekeyOptions::default())
                .await
                .unwrap(),
            4
        );
        let rows = state(&v).await;
        assert_eq!(
            identities(&rows).len(),
            1,
            "the emptied identity was removed"
        );
        for t in mine.iter().chain(&theirs) {
            assert!(v.token_read(t, &pw(OTHER)).await.is_ok());
        }
        // Same secret on both sides: nothing to move.
        assert_eq!(
            v.bulk_rekey(&pw(OTHER), &pw(OTHER), &RekeyOptions::default())
                .await
                .unwrap(),
            6
        );
        assert_eq!(state(&v).await, rows);
    });
}

#[test]
fn rekey_errors() {
    run(async {
        let v = identity_vault().await;
        create_many(&v, PASSWORD, 1).await;
        code(
            v.bulk_rekey(
                &pw("unknown password"),
                &pw(OTHER),
                &RekeyOptions::default(),
            )
            .await,
            ErrorCode::IdentityNotFound,
        );
        code(
            v.bulk_rekey(&pw(PASSWORD), &pw("short"), &RekeyOptions::default())
                .await,
            ErrorCode::PasswordPolicy,
        );
        let off = vault().await;
        create_many(&off, PASSWORD, 1).await;
        assert_eq!(
            off.bulk_rekey(
                &pw("unknown password"),
                &pw(OTHER),
                &RekeyOptions::default()
            )
            .await
            .unwrap(),
            0
        );
        code(
            off.migrate_record_links(&pw(PASSWORD)).await,
            ErrorCode::IdentityDisabled,
        );
    });
}

#[test]
fn rekey_with_identities_off_finds_records_by_key_check() {
    run(async {
        let v = vault().await;
        let mine = create_many(&v, PASSWORD, 30).await;
        let theirs = create_many(&v, OTHER, 10).await;
        let before = state(&v).await;
        assert_eq!(
            v.bulk_rekey(
                &pw(PASSWORD),
                &pw("third password"),
                &RekeyOptions::default()
            )
            .await
            .unwrap(),
            30
        );
        let after = state(&v).await;
        for t in &theirs {
            let find = |rows: &Rows| rows.0.iter().find(|(x, _)| x == t).cloned();
            assert_eq!(
                find(&before),
                find(&after),
                "records of other passwords are not touched"
            );
            assert!(v.token_read(t, &pw(OTHER)).await.is_ok());
        }
        for t in &mine {
            assert!(v.token_read(t, &pw("third password")).await.is_ok());
            code(
                v.token_read(t, &pw(PASSWORD)).await,
                ErrorCode::InvalidPassword,
            );
        }
        // A raw key can take over from a password.
        let key = vaultstore_wasm::Secret::raw_key(&[3u8; 32]).unwrap();
        assert_eq!(
            v.bulk_rekey(&pw("third password"), &key, &RekeyOptions::default())
                .await
                .unwrap(),
            30
        );
        assert!(v.token_read(&mine[0], &key).await.is_ok());
    });
}

/// Cancels after `after` progress reports and records every report.
struct CancelAfter {
    after: u64,
    reports: Cell<Vec<(u64, u64)>>,
}

impl RekeyObserver for CancelAfter {
    fn progress(&self, done: u64, total: u64) {
        let mut r = self.reports.take();
        r.push((done, total));
        self.reports.set(r);
    }
    fn is_cancelled(&self) -> bool {
        let r = self.reports.take();
        let n = r.len() as u64;
        self.reports.set(r);
        n >= self.after
    }
}

#[test]
fn progress_is_reported_and_cancellation_changes_nothing() {
    run(async {
        for (identities_on, rotate) in [(true, true), (true, false), (false, false)] {
            let v = if identities_on {
                identity_vault().await
            } else {
                vault().await
            };
            let tokens = create_many(&v, PASSWORD, 40).await;
            let before = state(&v).await;

            let observer = CancelAfter {
                after: u64::MAX,
                reports: Cell::new(vec![]),
            };
            let options = RekeyOptions {
                rotate,
                observer: Some(&observer),
            };
            // Cancel part-way (or, for the O(1) re-wrap, right before the commit).
            let cancelling = CancelAfter {
                after: if rotate || !identities_on { 25 } else { 0 },
                reports: Cell::new(vec![]),
            };
            let e = code(
                v.bulk_rekey(
                    &pw(PASSWORD),
                    &pw("new password!"),
                    &RekeyOptions {
                        rotate,
                        observer: Some(&cancelling),
                    },
                )
                .await,
                ErrorCode::Aborted,
            );
            assert!(e.to_string().contains("nothing was changed"));
            assert_eq!(
                state(&v).await,
                before,
                "identities {identities_on}, rotate {rotate}: aborted rekey changed something"
            );
            assert!(v.token_read(&tokens[0], &pw(PASSWORD)).await.is_ok());

            assert_eq!(
                v.bulk_rekey(&pw(PASSWORD), &pw("new password!"), &options)
                    .await
                    .unwrap(),
                40
            );
            let reports = observer.reports.take();
            assert_eq!(reports.last(), Some(&(40, 40)));
            assert!(
                reports.windows(2).all(|w| w[0].0 <= w[1].0),
                "progress never goes back"
            );
        }
    });
}

#[test]
fn a_failed_write_leaves_every_record_link_and_identity_as_it_was() {
    run(async {
        for (identities_on, rotate, merge) in [
            (true, false, false),
            (true, true, false),
            (true, false, true),
            (false, false, false),
        ] {
            let (v, _, probe) = probed_vault(VaultOptions {
                password_identity: identities_on,
                ..options()
            })
            .await;
            let tokens = create_many(&v, PASSWORD, 25).await;
            if merge {
                create_many(&v, OTHER, 3).await;
            }
            let before = state(&v).await;
            probe.fail_writes.store(true, Ordering::SeqCst);
            let target = if merge { OTHER } else { "new password!" };
            let e = code(
                v.bulk_rekey(
                    &pw(PASSWORD),
                    &pw(target),
                    &RekeyOptions {
                        rotate,
                        observer: None,
                    },
                )
                .await,
                ErrorCode::Storage,
            );
            assert!(
                e.to_string().contains("InjectedFailure"),
                "the cause survives: {e}"
            );
            probe.fail_writes.store(false, Ordering::SeqCst);
            assert_eq!(
                state(&v).await,
                before,
                "identities {identities_on}, rotate {rotate}, merge {merge}"
            );
            assert_eq!(
                v.token_read(&tokens[3], &pw(PASSWORD)).await.unwrap(),
                format!("{PASSWORD} #3")
            );
            code(
                v.token_read(&tokens[3], &pw(target)).await,
                ErrorCode::InvalidPassword,
            );
        }
    });
}

#[test]
fn identities_go_with_their_last_record() {
    run(async {
        let v = identity_vault().await;
        let tokens = create_many(&v, PASSWORD, 2).await;
        v.token_soft_delete(&tokens[0]).await.unwrap();
        v.token_soft_delete(&tokens[1]).await.unwrap();
        assert_eq!(
            identities(&state(&v).await).len(),
            1,
            "a soft delete keeps the identity"
        );
        v.token_delete(&tokens[0]).await.unwrap();
        let rows = state(&v).await;
        assert_eq!(
            (identities(&rows).len(), links(&rows).len()),
            (1, 1),
            "the link went with its record"
        );
        let id = v
            .record_list(&vaultstore_wasm::RecordQuery {
                soft_deleted_include: true,
                ..Default::default()
            })
            .await
            .unwrap()[0]
            .id
            .clone();
        v.record_delete_by_id(&id).await.unwrap();
        let rows = state(&v).await;
        assert!(
            identities(&rows).is_empty() && links(&rows).is_empty(),
            "{rows:?}"
        );
        // Expiry purges prune identities too.
        let (v, clock) = vault_with(VaultOptions {
            password_identity: true,
            ..options()
        })
        .await;
        v.tokens_create(
            &["a", "b"],
            &pw(PASSWORD),
            &CreateOptions {
                length: None,
                expires_at: Some(T0),
            },
        )
        .await
        .unwrap();
        clock.advance(1);
        assert_eq!(v.tokens_expired_delete().await.unwrap(), 2);
        let rows = state(&v).await;
        assert!(
            identities(&rows).is_empty() && links(&rows).is_empty(),
            "{rows:?}"
        );
    });
}

#[test]
fn concurrent_first_uses_of_a_secret_create_one_identity() {
    run(async {
        let v = identity_vault().await;
        let creates = (0..20).map(|i| {
            let v = &v;
            async move {
                v.token_create(&i.to_string(), &pw(PASSWORD), &CreateOptions::default())
                    .await
                    .unwrap()
            }
        });
        let tokens = futures::future::join_all(creates).await;
        assert_eq!(identities(&state(&v).await).len(), 1);
        for t in tokens {
            assert!(v.token_read(&t, &pw(PASSWORD)).await.is_ok());
        }
    });
}

/// A vault with identities on over `shared`, which other vaults (tabs) and the test also use.
async fn on_store(shared: &Arc<GlueMemoryStorage>) -> Vault {
    Vault::open_with(
        Box::new(shared.clone()),
        VaultOptions {
            password_identity: true,
            ..options()
        },
        Platform::default(),
    )
    .await
    .unwrap()
}

#[test]
fn two_vaults_on_one_store_share_identities() {
    run(async {
        let shared = Arc::new(GlueMemoryStorage::new().unwrap());
        let (a, b) = (on_store(&shared).await, on_store(&shared).await);
        let ta = a
            .token_create("from a", &pw(PASSWORD), &CreateOptions::default())
            .await
            .unwrap();
        let tb = b
            .token_create("from b", &pw(PASSWORD), &CreateOptions::default())
            .await
            .unwrap();
        assert_eq!(identities(&state(&a).await).len(), 1);
        // A rekey in one is seen at once by the other: the old password stops working there too.
        a.bulk_rekey(&pw(PASSWORD), &pw(OTHER), &RekeyOptions::default())
            .await
            .unwrap();
        code(
            b.token_read(&ta, &pw(PASSWORD)).await,
            ErrorCode::InvalidPassword,
        );
        assert_eq!(b.token_read(&tb, &pw(OTHER)).await.unwrap(), "from b");
    });
}

/// A create seals with the identity its key last committed with, without reading it: no read
/// at all once the key and its identity are cached.
#[test]
fn creates_after_the_first_read_nothing() {
    run(async {
        let (v, _, probe) = probed_vault(VaultOptions {
            password_identity: true,
            ..options()
        })
        .await;
        let mut tokens = Vec::new();
        let mut reads = Vec::new();
        for i in 0..4 {
            let before = probe.reads.load(Ordering::SeqCst);
            tokens.push(
                v.token_create(&format!("v{i}"), &pw(PASSWORD), &CreateOptions::default())
                    .await
                    .unwrap(),
            );
            reads.push(probe.reads.load(Ordering::SeqCst) - before);
        }
        // The first creates the identity (and reads the settings); the second finds it; from
        // the third on, the batch's guards stand in for the read.
        assert_eq!(&reads[2..], [0, 0], "{reads:?}");
        assert!(reads[1] >= 1, "{reads:?}");
        assert_eq!(identities(&state(&v).await).len(), 1);
        for (i, t) in tokens.iter().enumerate() {
            assert_eq!(
                v.token_read(t, &pw(PASSWORD)).await.unwrap(),
                format!("v{i}")
            );
        }
    });
}

/// Another vault on the same store rotates, re-wraps or damages the identity a create
/// remembers: the create's guards fail, it reads again, and its value opens with the secret
/// it was created with, and only with it.
#[test]
fn a_remembered_identity_is_used_only_while_its_slot_is_unchanged() {
    run(async {
        let shared = Arc::new(GlueMemoryStorage::new().unwrap());
        let (a, b) = (on_store(&shared).await, on_store(&shared).await);
        const THIRD: &str = "a third long password";
        let warm = |secret: &'static str| {
            let a = &a;
            async move {
                for _ in 0..3 {
                    a.token_create("warm", &pw(secret), &CreateOptions::default())
                        .await
                        .unwrap();
                }
            }
        };
        // A create with `secret` after the change elsewhere: its value opens with `secret` and
        // not with `moved_to`, and the value made before the change opens with `moved_to`.
        let create_after = |secret: &'static str, moved_to: &'static str, before: String| {
            let a = &a;
            async move {
                let value = format!("made with {secret} after the change");
                let made = a
                    .token_create(&value, &pw(secret), &CreateOptions::default())
                    .await
                    .unwrap();
                assert_eq!(a.token_read(&made, &pw(secret)).await.unwrap(), value);
                code(
                    a.token_read(&made, &pw(moved_to)).await,
                    ErrorCode::InvalidPassword,
                );
                assert_eq!(
                    a.token_read(&before, &pw(moved_to)).await.unwrap(),
                    "before"
                );
            }
        };
        let rotate = RekeyOptions {
            rotate: true,
            observer: None,
        };

        // A rotation elsewhere: PASSWORD's identity is pruned with its slot.
        warm(PASSWORD).await;
        let before = a
            .token_create("before", &pw(PASSWORD), &CreateOptions::default())
            .await
            .unwrap();
        b.bulk_rekey(&pw(PASSWORD), &pw(OTHER), &rotate)
            .await
            .unwrap();
        create_after(PASSWORD, OTHER, before.clone()).await;

        // A re-wrap elsewhere: OTHER's slot now holds THIRD's tag.
        warm(OTHER).await;
        b.bulk_rekey(&pw(OTHER), &pw(THIRD), &RekeyOptions::default())
            .await
            .unwrap();
        create_after(OTHER, THIRD, before).await;

        // The tag unchanged but the wrapped DEK row replaced (no operation does this; storage
        // tampered with): the DEK guard fails the cached create, and the read finds the damage.
        warm(THIRD).await;
        let all = shared.meta_all().await.unwrap();
        let dek_rows: Vec<MetaRow> = all
            .into_iter()
            .filter(|r| r.key.object_type == "password_identity" && r.key.key == "dek")
            .collect();
        let count = a.record_count(&Default::default()).await.unwrap();
        let mut tampered = Vec::new();
        for row in &dek_rows {
            let mut bad = row.value.clone();
            let last = bad.pop().unwrap();
            bad.push(if last == 'A' { 'B' } else { 'A' });
            tampered.push(WriteOp::PutMeta(MetaRow {
                key: row.key.clone(),
                value: bad,
            }));
        }
        let stamp = Stamp {
            rev: Rev::new(4_000_000_000_000, 0, 1).unwrap(),
            at: 4_000_000_000_000,
        };
        shared.apply(stamp, tampered).await.unwrap();
        code(
            a.token_create("sealed under what?", &pw(THIRD), &CreateOptions::default())
                .await,
            ErrorCode::DecryptionFailed,
        );
        assert_eq!(
            a.record_count(&Default::default()).await.unwrap(),
            count,
            "nothing was written"
        );
    });
}

#[test]
fn migration_links_records_made_before_identities() {
    run(async {
        let legacy = vault().await;
        let mine = create_many(&legacy, PASSWORD, 6).await;
        let theirs = create_many(&legacy, OTHER, 2).await;
        let snapshot = legacy.export_snapshot().await.unwrap();
        let (v, _) = vault_with(VaultOptions {
            password_identity: true,
            snapshot: Some(snapshot),
            ..options()
        })
        .await;
        assert!(links(&state(&v).await).is_empty());
        // Reading links on access (and re-encrypts under the identity key).
        let before = state(&v).await;
        assert_eq!(
            v.token_read(&mine[0], &pw(PASSWORD)).await.unwrap(),
            format!("{PASSWORD} #0")
        );
        let after = state(&v).await;
        assert_eq!(links(&after).len(), 1);
        assert_ne!(
            before.0.iter().find(|(t, _)| t == &mine[0]),
            after.0.iter().find(|(t, _)| t == &mine[0])
        );
        assert_eq!(v.migrate_record_links(&pw(PASSWORD)).await.unwrap(), 5);
        assert_eq!(
            v.migrate_record_links(&pw(PASSWORD)).await.unwrap(),
            0,
            "nothing left to link"
        );
        assert_eq!(links(&state(&v).await).len(), 6);
        // Now the O(1) rekey covers them all; the other password's records are untouched.
        assert_eq!(
            v.bulk_rekey(
                &pw(PASSWORD),
                &pw("third password"),
                &RekeyOptions::default()
            )
            .await
            .unwrap(),
            6
        );
        for t in &mine {
            assert!(v.token_read(t, &pw("third password")).await.is_ok());
        }
        assert_eq!(
            v.token_read(&theirs[1], &pw(OTHER)).await.unwrap(),
            format!("{OTHER} #1")
        );
        // A vault reopened without identities still reads linked records.
        let snapshot = v.export_snapshot().await.unwrap();
        let (off, _) = vault_with(VaultOptions {
            snapshot: Some(snapshot),
            ..options()
        })
        .await;
        assert!(
            off.token_read(&mine[2], &pw("third password"))
                .await
                .is_ok()
        );
        off.token_update(&mine[2], "updated", &pw("third password"))
            .await
            .unwrap();
        assert_eq!(
            off.token_read(&mine[2], &pw("third password"))
                .await
                .unwrap(),
            "updated"
        );
    });
}

#[test]
fn identity_rows_are_checked_not_trusted() {
    run(async {
        let v = identity_vault().await;
        let t = v
            .token_create("v", &pw(PASSWORD), &CreateOptions::default())
            .await
            .unwrap();
        let mut doc: serde_json::Value =
            serde_json::from_slice(&v.export_snapshot().await.unwrap()).unwrap();
        for m in doc["meta"].as_array_mut().unwrap() {
            if m["key"] == "dek" {
                let s = m["value"].as_str().unwrap().to_owned();
                let flipped = if s.ends_with('A') {
                    format!("{}B", &s[..s.len() - 1])
                } else {
                    format!("{}A", &s[..s.len() - 1])
                };
                m["value"] = serde_json::Value::String(flipped);
            }
        }
        let (w, _) = vault_with(VaultOptions {
            password_identity: true,
            snapshot: Some(serde_json::to_vec(&doc).unwrap()),
            ..options()
        })
        .await;
        let e = code(
            w.token_read(&t, &pw(PASSWORD)).await,
            ErrorCode::DecryptionFailed,
        );
        // The damaged ciphertext is the identity's key, not the record's value.
        assert!(e.to_string().contains("a key stored in this vault"), "{e}");
    });
}

/// A value that is not an envelope at all can only come from storage tampered with (snapshot
/// imports and sync refuse one); a rotation reading it names its record.
#[test]
fn a_rotation_names_the_record_whose_value_is_malformed() {
    run(async {
        let shared = Arc::new(GlueMemoryStorage::new().unwrap());
        let v = on_store(&shared).await;
        let tokens = create_many(&v, PASSWORD, 3).await;
        let record = shared.records_by_tokens(&tokens[1..2]).await.unwrap()[0]
            .clone()
            .unwrap();
        let tampered = WriteOp::ChangeRecord {
            id: record.id.clone(),
            change: RecordChange::Reseal {
                expect: record.value.clone(),
                value: "not an envelope".into(),
                password_id: record.password_id.clone(),
            },
            at: record.updated_at,
        };
        let stamp = Stamp {
            rev: Rev::new(u64::try_from(record.updated_at).unwrap() + 1, 0, 1).unwrap(),
            at: record.updated_at,
        };
        shared.apply(stamp, vec![tampered]).await.unwrap();
        let rotate = RekeyOptions {
            rotate: true,
            observer: None,
        };
        let e = code(
            v.bulk_rekey(&pw(PASSWORD), &pw(OTHER), &rotate).await,
            ErrorCode::DecryptionFailed,
        );
        assert_eq!(e.tokens().unwrap(), &tokens[1..2], "{e}");
        assert!(e.to_string().contains("the record"), "{e}");
        // Nothing moved: the intact values still open with the old secret only.
        assert_eq!(
            v.token_read(&tokens[0], &pw(PASSWORD)).await.unwrap(),
            format!("{PASSWORD} #0")
        );
        code(
            v.token_read(&tokens[0], &pw(OTHER)).await,
            ErrorCode::InvalidPassword,
        );
    });
}

#[allow(dead_code)]
fn storage_is_object_safe(_: &dyn Storage) {}

#[test]
fn rekey_with_identities_off_also_moves_the_secrets_identity() {
    run(async {
        // Records of one password, some linked (written with identities on), some not.
        let with_ids = identity_vault().await;
        let linked = create_many(&with_ids, PASSWORD, 3).await;
        let snapshot = with_ids.export_snapshot().await.unwrap();
        let (v, _) = vault_with(VaultOptions {
            snapshot: Some(snapshot),
            ..options()
        })
        .await;
        let unlinked = create_many(&v, PASSWORD, 2).await;
        let theirs = create_many(&v, OTHER, 1).await;
        assert_eq!(
            v.bulk_rekey(
                &pw(PASSWORD),
                &pw("third password"),
                &RekeyOptions::default()
            )
            .await
            .unwrap(),
            5
        );
        for t in linked.iter().chain(&unlinked) {
            assert!(v.token_read(t, &pw("third password")).await.is_ok(), "{t}");
            code(
                v.token_read(t, &pw(PASSWORD)).await,
                ErrorCode::InvalidPassword,
            );
        }
        assert!(v.token_read(&theirs[0], &pw(OTHER)).await.is_ok());
        // One atomic write for both kinds: an abort part-way leaves all five where they were.
        let restore = v.export_snapshot().await.unwrap();
        let (w, _) = vault_with(VaultOptions {
            snapshot: Some(restore),
            ..options()
        })
        .await;
        let before = state(&w).await;
        let cancel = CancelAfter {
            after: 4,
            reports: Cell::new(vec![]),
        };
        code(
            w.bulk_rekey(
                &pw("third password"),
                &pw("fourth password"),
                &RekeyOptions {
                    rotate: true,
                    observer: Some(&cancel),
                },
            )
            .await,
            ErrorCode::Aborted,
        );
        assert_eq!(state(&w).await, before);
    });
}

/// Issue 7: with identities on, a rekey must not leave the old password's records that predate
/// identities behind, and a vault that never had any must not pay for looking.
#[test]
fn rekey_moves_records_from_before_identities_and_skips_the_scan_when_there_are_none() {
    run(async {
        let legacy = vault().await;
        let old_unlinked = create_many(&legacy, PASSWORD, 3).await;
        let bystander = create_many(&legacy, OTHER, 1).await;
        let (v, _, probe) = probed_vault(VaultOptions {
            password_identity: true,
            snapshot: Some(legacy.export_snapshot().await.unwrap()),
            min_kdf_iterations: Some(1_000),
            ..options()
        })
        .await;
        let linked = create_many(&v, PASSWORD, 2).await;
        assert_eq!(
            links(&state(&v).await).len(),
            2,
            "only the new records are linked"
        );
        // One atomic write moves the linked and the unlinked records of the old password.
        assert_eq!(
            v.bulk_rekey(
                &pw(PASSWORD),
                &pw("a new password"),
                &RekeyOptions::default()
            )
            .await
            .unwrap(),
            5
        );
        for t in old_unlinked.iter().chain(&linked) {
            assert!(v.token_read(t, &pw("a new password")).await.is_ok(), "{t}");
            assert_eq!(
                code(
                    v.token_read(t, &pw(PASSWORD)).await,
                    ErrorCode::InvalidPassword
                )
                .tokens(),
                Some(&[t.clone()][..])
            );
        }
        assert_eq!(
            v.token_read(&bystander[0], &pw(OTHER)).await.unwrap(),
            format!("{OTHER} #0")
        );
        // The bystander is still unlinked, so the next rekey scans again.
        let scans = |probe: &Probe| probe.reads.load(Ordering::SeqCst);
        let before = scans(&probe);
        v.bulk_rekey(
            &pw("a new password"),
            &pw("a newer password"),
            &RekeyOptions::default(),
        )
        .await
        .unwrap();
        let scanned = scans(&probe) - before;
        // Once every record is linked, a rekey is a handful of reads whatever the record count.
        v.migrate_record_links(&pw(OTHER)).await.unwrap();
        create_many(&v, "a newer password", 300).await;
        let before = scans(&probe);
        assert_eq!(
            v.bulk_rekey(
                &pw("a newer password"),
                &pw("the newest password"),
                &RekeyOptions::default()
            )
            .await
            .unwrap(),
            305
        );
        let reads = scans(&probe) - before;
        assert!(
            reads < scanned,
            "a re-wrap of an all-linked vault reads less ({reads}) than one that scans ({scanned})"
        );
        assert_eq!(
            reads, 7,
            "epoch, two identities, whether sync found the old one removed on the server, the links, the vault state, the revisions of the rows the re-wrap replaces"
        );
    });
}
