//! Snapshots (FORMAT.md "Snapshot"): export, import, rejection of anything malformed, and a
//! frozen snapshot from an earlier release that every release must still open.
#![cfg(all(feature = "gluesql", not(target_arch = "wasm32")))]

mod common;

use common::*;
use serde_json::{Value, json};
use std::sync::Arc;
use vaultstore_wasm::platform::Platform;
use vaultstore_wasm::storage::memory::GlueMemoryStorage;
use vaultstore_wasm::{CreateOptions, ErrorCode, RecordQuery, Secret, Vault, VaultOptions};

const FROZEN: &str = include_str!("fixtures/snapshot_v1.json");

async fn open_snapshot(bytes: Vec<u8>) -> vaultstore_wasm::Result<Vault> {
    Vault::open(
        Box::new(GlueMemoryStorage::new().unwrap()),
        VaultOptions {
            snapshot: Some(bytes),
            ..options()
        },
    )
    .await
}

#[test]
fn the_frozen_snapshot_of_an_earlier_release_still_opens() {
    run(async {
        let v = Vault::open(
            Box::new(GlueMemoryStorage::new().unwrap()),
            VaultOptions {
                snapshot: Some(FROZEN.as_bytes().to_vec()),
                password_identity: true,
                ..options()
            },
        )
        .await
        .unwrap();
        let p = pw(PASSWORD);
        assert_eq!(
            v.token_read("tk_identityrecord000000000001", &p)
                .await
                .unwrap(),
            "linked value"
        );
        assert_eq!(
            v.token_read("tk_legacyrecord00000000000001", &pw(OTHER))
                .await
                .unwrap(),
            "unlinked value"
        );
        let e = code(
            v.token_read("tk_identityrecord000000000002", &p).await,
            ErrorCode::RecordNotFound,
        );
        assert_eq!(e.reason().unwrap().as_str(), "soft_deleted");
        v.token_restore("tk_identityrecord000000000002")
            .await
            .unwrap();
        assert_eq!(
            v.token_read("tk_identityrecord000000000002", &p)
                .await
                .unwrap(),
            "soft deleted value"
        );
        let raw = Secret::raw_key(&[7u8; 32]).unwrap();
        let e = code(
            v.token_read("tk_rawkeyrecord00000000000001", &raw).await,
            ErrorCode::RecordNotFound,
        );
        assert_eq!(e.reason().unwrap().as_str(), "expired");
        v.token_renew("tk_rawkeyrecord00000000000001", None)
            .await
            .unwrap();
        assert_eq!(
            v.token_read("tk_rawkeyrecord00000000000001", &raw)
                .await
                .unwrap(),
            "raw key value"
        );
        assert_eq!(
            v.get_vault_setting("app").await.unwrap().as_deref(),
            Some("fixture")
        );
        assert_eq!(v.kdf_iterations(), 1000);
        assert_eq!(
            v.bulk_rekey(&p, &pw("a new password!"), &Default::default())
                .await
                .unwrap(),
            2
        );
    });
}

#[test]
fn re_exporting_an_imported_vault_gives_the_same_rows() {
    run(async {
        let frozen: Value = serde_json::from_str(FROZEN).unwrap();
        let v = open_snapshot(FROZEN.as_bytes().to_vec()).await.unwrap();
        let again: Value = serde_json::from_slice(&v.export_snapshot().await.unwrap()).unwrap();
        assert_eq!(again, frozen);
        let v2 = open_snapshot(v.export_snapshot().await.unwrap())
            .await
            .unwrap();
        assert_eq!(
            v2.export_snapshot().await.unwrap(),
            v.export_snapshot().await.unwrap(),
            "byte-identical"
        );
        assert_eq!(
            v2.record_count(&RecordQuery {
                soft_deleted_include: true,
                ..Default::default()
            })
            .await
            .unwrap(),
            4
        );
    });
}

/// The first identity row with `key` of a snapshot.
fn identity_row<'a>(d: &'a mut Value, key: &str) -> &'a mut Value {
    d["meta"]
        .as_array_mut()
        .unwrap()
        .iter_mut()
        .find(|m| m["objectType"] == "password_identity" && m["key"] == key)
        .unwrap()
}

fn mutate(f: impl FnOnce(&mut Value)) -> Vec<u8> {
    let mut doc: Value = serde_json::from_str(FROZEN).unwrap();
    f(&mut doc);
    serde_json::to_vec(&doc).unwrap()
}

#[test]
fn malformed_snapshots_are_invalid_arguments() {
    run(async {
        let cases: Vec<(&str, Vec<u8>)> = vec![
            ("not JSON", b"{not json".to_vec()),
            ("not UTF-8", vec![0xff, 0xfe, 0x00]),
            ("empty", vec![]),
            ("an array", b"[]".to_vec()),
            (
                "another format",
                mutate(|d| d["format"] = json!("something-else")),
            ),
            ("another version", mutate(|d| d["version"] = json!(2))),
            ("version as a string", mutate(|d| d["version"] = json!("1"))),
            (
                "missing records",
                mutate(|d| {
                    d.as_object_mut().unwrap().remove("records");
                }),
            ),
            (
                "missing meta",
                mutate(|d| {
                    d.as_object_mut().unwrap().remove("meta");
                }),
            ),
            ("unknown field", mutate(|d| d["extra"] = json!(1))),
            (
                "missing expiresAt",
                mutate(|d| {
                    d["records"][0].as_object_mut().unwrap().remove("expiresAt");
                }),
            ),
            (
                "missing token",
                mutate(|d| {
                    d["records"][0].as_object_mut().unwrap().remove("token");
                }),
            ),
            (
                "time as a string",
                mutate(|d| d["records"][0]["createdAt"] = json!("yesterday")),
            ),
            (
                "fractional time",
                mutate(|d| d["records"][0]["createdAt"] = json!(1.5)),
            ),
            (
                "time out of range",
                mutate(|d| d["records"][0]["createdAt"] = json!(9_000_000_000_000_000i64)),
            ),
            (
                "value not an envelope",
                mutate(|d| d["records"][0]["value"] = json!("plaintext!")),
            ),
            (
                "value truncated",
                mutate(|d| d["records"][0]["value"] = json!("vs1:AAAA")),
            ),
            (
                "empty token",
                mutate(|d| d["records"][0]["token"] = json!("")),
            ),
            (
                "duplicate token",
                mutate(|d| {
                    let t = d["records"][0]["token"].clone();
                    d["records"][1]["token"] = t;
                }),
            ),
            (
                "duplicate id",
                mutate(|d| {
                    let t = d["records"][0]["id"].clone();
                    d["records"][1]["id"] = t;
                }),
            ),
            (
                "meta value not a string",
                mutate(|d| d["meta"][0]["value"] = json!(5)),
            ),
            (
                "no kdf row",
                mutate(|d| {
                    d["meta"]
                        .as_array_mut()
                        .unwrap()
                        .retain(|m| m["key"] != "kdf");
                }),
            ),
            (
                "kdf too cheap",
                mutate(|d| {
                    for m in d["meta"].as_array_mut().unwrap() {
                        if m["key"] == "kdf" {
                            m["value"] = json!(
                                r#"{"alg":"pbkdf2-sha256","iterations":10,"salt":"AAAAAAAAAAAAAAAAAAAAAA"}"#
                            );
                        }
                    }
                }),
            ),
            (
                "kdf too costly",
                mutate(|d| {
                    for m in d["meta"].as_array_mut().unwrap() {
                        if m["key"] == "kdf" {
                            m["value"] = json!(
                                r#"{"alg":"pbkdf2-sha256","iterations":99999999999,"salt":"AAAAAAAAAAAAAAAAAAAAAA"}"#
                            );
                        }
                    }
                }),
            ),
            (
                "duplicate identity tag",
                mutate(|d| {
                    let tag = d["meta"]
                        .as_array()
                        .unwrap()
                        .iter()
                        .find(|m| m["key"] == "tag")
                        .unwrap()
                        .clone();
                    let mut copy = tag.clone();
                    copy["objectId"] = json!("p_ffffffffffffffffffffffffffffffff");
                    d["meta"].as_array_mut().unwrap().push(copy);
                }),
            ),
            (
                "identity dek too short",
                mutate(|d| identity_row(d, "dek")["value"] = json!("vs1k:AAAAAAAAAAAAAAAA")),
            ),
            (
                "identity tag in uppercase",
                mutate(|d| {
                    let row = identity_row(d, "tag");
                    let upper = row["value"].as_str().unwrap().to_uppercase();
                    row["value"] = json!(upper);
                }),
            ),
        ];
        for (what, bytes) in cases {
            let e = code(open_snapshot(bytes).await, ErrorCode::InvalidArgument);
            assert!(
                e.to_string().contains("snapshot") || e.to_string().contains("kdf"),
                "{what}: {e}"
            );
        }
    });
}

#[test]
fn a_tampered_but_well_formed_value_imports_and_fails_when_read() {
    run(async {
        let bytes = mutate(|d| {
            let v = d["records"][0]["value"].as_str().unwrap().to_owned();
            let last = if v.ends_with('A') { 'B' } else { 'A' };
            d["records"][0]["value"] = json!(format!("{}{last}", &v[..v.len() - 1]));
        });
        let v = open_snapshot(bytes).await.unwrap();
        let token = "tk_identityrecord000000000001";
        let e = v.token_read(token, &pw(PASSWORD)).await.unwrap_err();
        assert!(
            matches!(
                e.code(),
                ErrorCode::DecryptionFailed | ErrorCode::InvalidPassword
            ),
            "{e}"
        );
    });
}

#[test]
fn a_snapshot_only_goes_into_an_empty_store_and_a_refusal_changes_nothing() {
    run(async {
        let shared = Arc::new(GlueMemoryStorage::new().unwrap());
        let open = |snapshot: Option<Vec<u8>>| {
            Vault::open_with(
                Box::new(shared.clone()),
                VaultOptions {
                    snapshot,
                    ..options()
                },
                Platform::default(),
            )
        };
        let v = open(None).await.unwrap();
        let t = v
            .token_create("mine", &pw(PASSWORD), &CreateOptions::default())
            .await
            .unwrap();
        let before = v.export_snapshot().await.unwrap();
        let e = code(
            open(Some(FROZEN.as_bytes().to_vec())).await,
            ErrorCode::InvalidArgument,
        );
        assert!(
            e.to_string().contains("no records and no identities"),
            "{e}"
        );
        for bad in [b"{}".to_vec(), mutate(|d| d["version"] = json!(7))] {
            code(open(Some(bad)).await, ErrorCode::InvalidArgument);
        }
        assert_eq!(v.export_snapshot().await.unwrap(), before);
        assert_eq!(v.token_read(&t, &pw(PASSWORD)).await.unwrap(), "mine");
        // Emptied by deletions, it still holds their tombstones (a deletion not yet synced), and
        // the refusal says so rather than that it holds records.
        v.token_delete(&t).await.unwrap();
        assert_eq!(v.record_count(&Default::default()).await.unwrap(), 0);
        let e = code(
            open(Some(FROZEN.as_bytes().to_vec())).await,
            ErrorCode::InvalidArgument,
        );
        assert!(e.to_string().contains("none was ever deleted"), "{e}");

        // A store with only vault settings (a vault opened, never written) takes a snapshot, and
        // the snapshot's settings (its salt) replace them.
        let fresh = Arc::new(GlueMemoryStorage::new().unwrap());
        Vault::open_with(Box::new(fresh.clone()), options(), Platform::default())
            .await
            .unwrap();
        let w = Vault::open_with(
            Box::new(fresh.clone()),
            VaultOptions {
                snapshot: Some(FROZEN.as_bytes().to_vec()),
                ..options()
            },
            Platform::default(),
        )
        .await
        .unwrap();
        assert_eq!(
            w.token_read("tk_identityrecord000000000001", &pw(PASSWORD))
                .await
                .unwrap(),
            "linked value"
        );
    });
}

#[test]
fn garbage_never_panics() {
    run(async {
        // Truncations and byte flips of a valid snapshot: each either opens or is refused cleanly.
        let base = FROZEN.as_bytes();
        let mut x: u32 = 7;
        for i in 0..300 {
            x = x.wrapping_mul(1_103_515_245).wrapping_add(12345);
            let mut bytes = base.to_vec();
            if i % 3 == 0 {
                bytes.truncate((x as usize) % base.len());
            } else {
                let at = (x as usize) % bytes.len();
                bytes[at] = (x >> 24) as u8;
            }
            match open_snapshot(bytes).await {
                Ok(v) => {
                    let _ = v
                        .token_read("tk_identityrecord000000000001", &pw(PASSWORD))
                        .await;
                }
                Err(e) => assert_eq!(e.code(), ErrorCode::InvalidArgument, "{e}"),
            }
        }
    });
}
