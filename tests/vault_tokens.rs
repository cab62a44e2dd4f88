//! Token operations of API.md, with every error code they can give.
#![cfg(all(feature = "gluesql", not(target_arch = "wasm32")))]

mod common;

use common::*;
use vaultstore_wasm::{
    CreateOptions, ErrorCode, NotFoundReason, PasswordPolicy, Secret, VaultOptions,
};

fn opts(length: Option<usize>, expires_at: Option<i64>) -> CreateOptions {
    CreateOptions { length, expires_at }
}

#[test]
fn create_and_read_round_trip() {
    run(async {
        let v = vault().await;
        let token = v
            .token_create("secret value", &pw(PASSWORD), &CreateOptions::default())
            .await
            .unwrap();
        assert!(token.starts_with("tk_") && token.len() == 32, "{token}");
        assert_eq!(
            v.token_read(&token, &pw(PASSWORD)).await.unwrap(),
            "secret value"
        );
        for length in [15, 40] {
            let t = v
                .token_create("x", &pw(PASSWORD), &opts(Some(length), None))
                .await
                .unwrap();
            assert_eq!(t.len(), length);
        }
        // Empty values and any Unicode round-trip.
        for value in ["", "😀 ünïcødé \u{0} \n", &"x".repeat(100_000)] {
            let t = v
                .token_create(value, &pw(PASSWORD), &CreateOptions::default())
                .await
                .unwrap();
            assert_eq!(v.token_read(&t, &pw(PASSWORD)).await.unwrap(), value);
        }
    });
}

#[test]
fn stored_values_are_envelopes_never_plaintext() {
    run(async {
        let v = vault().await;
        let token = v
            .token_create(
                "PLAINTEXT-MARKER-123",
                &pw(PASSWORD),
                &CreateOptions::default(),
            )
            .await
            .unwrap();
        let record = v.record_find_by_token(&token).await.unwrap().unwrap();
        assert!(record.value.starts_with("vs1:"));
        let snapshot = String::from_utf8(v.export_snapshot().await.unwrap()).unwrap();
        assert!(
            !snapshot.contains("PLAINTEXT-MARKER"),
            "no plaintext in storage or snapshots"
        );
        assert!(!snapshot.contains(PASSWORD));
    });
}

#[test]
fn bad_lengths_and_times_are_invalid_arguments() {
    run(async {
        let v = vault().await;
        for length in [0, 14, 41, 1000] {
            code(
                v.token_create("x", &pw(PASSWORD), &opts(Some(length), None))
                    .await,
                ErrorCode::InvalidArgument,
            );
        }
        code(
            v.token_create("x", &pw(PASSWORD), &opts(None, Some(i64::MAX)))
                .await,
            ErrorCode::InvalidArgument,
        );
        code(
            v.tokens_create(&["a"], &pw(PASSWORD), &opts(Some(3), None))
                .await,
            ErrorCode::InvalidArgument,
        );
        code(
            v.token_read("", &pw(PASSWORD)).await,
            ErrorCode::InvalidArgument,
        );
        code(v.token_exists("").await, ErrorCode::InvalidArgument);
        code(v.token_renew("", None).await, ErrorCode::InvalidArgument);
        code(v.token_delete("").await, ErrorCode::InvalidArgument);
        code(
            v.token_create_custom("", "v", &pw(PASSWORD), None).await,
            ErrorCode::InvalidArgument,
        );
        code(
            v.token_create_custom(&"a".repeat(256), "v", &pw(PASSWORD), None)
                .await,
            ErrorCode::InvalidArgument,
        );
        code(
            Secret::raw_key(&[0u8; 31]).map(drop),
            ErrorCode::InvalidArgument,
        );
        code(
            Secret::raw_key(&[0u8; 33]).map(drop),
            ErrorCode::InvalidArgument,
        );
    });
}

#[test]
fn read_errors_say_why() {
    run(async {
        let (v, clock) = vault_with(options()).await;
        let e = code(
            v.token_read("tk_missing", &pw(PASSWORD)).await,
            ErrorCode::RecordNotFound,
        );
        assert_eq!(e.reason(), Some(NotFoundReason::Missing));
        assert_eq!(e.tokens(), Some(&["tk_missing".to_owned()][..]));

        let t = v
            .token_create("v", &pw(PASSWORD), &CreateOptions::default())
            .await
            .unwrap();
        let e = code(
            v.token_read(&t, &pw(OTHER)).await,
            ErrorCode::InvalidPassword,
        );
        // API.md "Errors": the token is data in `tokens`, never quoted in the message.
        assert!(!e.to_string().contains(&t), "{e}");
        assert_eq!(e.tokens(), Some(&[t.clone()][..]));

        v.token_soft_delete(&t).await.unwrap();
        let e = code(
            v.token_read(&t, &pw(PASSWORD)).await,
            ErrorCode::RecordNotFound,
        );
        assert_eq!(e.reason(), Some(NotFoundReason::SoftDeleted));

        let expiring = v
            .token_create("v", &pw(PASSWORD), &opts(None, Some(T0 + 1000)))
            .await
            .unwrap();
        clock.set(T0 + 1000);
        assert_eq!(
            v.token_read(&expiring, &pw(PASSWORD)).await.unwrap(),
            "v",
            "expired only when now > expiresAt"
        );
        clock.set(T0 + 1001);
        let e = code(
            v.token_read(&expiring, &pw(PASSWORD)).await,
            ErrorCode::RecordNotFound,
        );
        assert_eq!(e.reason(), Some(NotFoundReason::Expired));
    });
}

#[test]
fn tampered_values_are_decryption_failed() {
    run(async {
        let v = vault().await;
        let t = v
            .token_create("v", &pw(PASSWORD), &CreateOptions::default())
            .await
            .unwrap();
        let other = v
            .token_create("w", &pw(PASSWORD), &CreateOptions::default())
            .await
            .unwrap();
        // Swap the two envelopes in a snapshot: each value is bound to its token.
        let text = String::from_utf8(v.export_snapshot().await.unwrap()).unwrap();
        let mut doc: serde_json::Value = serde_json::from_str(&text).unwrap();
        let records = doc["records"].as_array_mut().unwrap();
        let a = records[0]["value"].clone();
        records[0]["value"] = records[1]["value"].clone();
        records[1]["value"] = a;
        let swapped = serde_json::to_vec(&doc).unwrap();
        let (w, _) = vault_with(VaultOptions {
            snapshot: Some(swapped),
            ..options()
        })
        .await;
        code(
            w.token_read(&t, &pw(PASSWORD)).await,
            ErrorCode::DecryptionFailed,
        );
        let e = code(
            w.tokens_read(&[&t, &other], &pw(PASSWORD)).await,
            ErrorCode::DecryptionFailed,
        );
        assert_eq!(e.tokens().unwrap().len(), 2);
        // The vault keeps working after the failure.
        let fresh = w
            .token_create("still fine", &pw(PASSWORD), &CreateOptions::default())
            .await
            .unwrap();
        assert_eq!(
            w.token_read(&fresh, &pw(PASSWORD)).await.unwrap(),
            "still fine"
        );
    });
}

#[test]
fn batch_create_is_one_write_and_batch_read_one_round_trip() {
    run(async {
        let (v, _, probe) = probed_vault(options()).await;
        let values: Vec<String> = (0..50).map(|i| format!("value {i}")).collect();
        let refs: Vec<&str> = values.iter().map(String::as_str).collect();
        let before = probe.batches.load(std::sync::atomic::Ordering::SeqCst);
        let tokens = v
            .tokens_create(&refs, &pw(PASSWORD), &CreateOptions::default())
            .await
            .unwrap();
        assert_eq!(
            probe.batches.load(std::sync::atomic::Ordering::SeqCst) - before,
            1,
            "one write"
        );
        assert_eq!(tokens.len(), 50);
        let unique: std::collections::HashSet<_> = tokens.iter().collect();
        assert_eq!(unique.len(), 50);
        let token_refs: Vec<&str> = tokens.iter().map(String::as_str).collect();
        let reads = probe.reads.load(std::sync::atomic::Ordering::SeqCst);
        let read = v.tokens_read(&token_refs, &pw(PASSWORD)).await.unwrap();
        assert_eq!(
            probe.reads.load(std::sync::atomic::Ordering::SeqCst) - reads,
            1,
            "one storage round trip"
        );
        assert_eq!(read.len(), 50);
        for (i, (token, value)) in read.iter().enumerate() {
            assert_eq!((token, value), (&tokens[i], &values[i]));
        }
        assert_eq!(
            v.tokens_create(&[], &pw(PASSWORD), &CreateOptions::default())
                .await
                .unwrap(),
            Vec::<String>::new()
        );
    });
}

#[test]
fn batch_create_is_all_or_nothing() {
    run(async {
        let (v, _, probe) = probed_vault(options()).await;
        probe
            .fail_writes
            .store(true, std::sync::atomic::Ordering::SeqCst);
        code(
            v.tokens_create(&["a", "b", "c"], &pw(PASSWORD), &CreateOptions::default())
                .await,
            ErrorCode::Storage,
        );
        probe
            .fail_writes
            .store(false, std::sync::atomic::Ordering::SeqCst);
        assert_eq!(v.record_count(&Default::default()).await.unwrap(), 0);
    });
}

#[test]
fn batch_read_reports_every_missing_token_before_decryption_failures() {
    run(async {
        let (v, clock) = vault_with(options()).await;
        let a = v
            .token_create("a", &pw(PASSWORD), &CreateOptions::default())
            .await
            .unwrap();
        let b = v
            .token_create("b", &pw(OTHER), &CreateOptions::default())
            .await
            .unwrap();
        let gone = v
            .token_create("g", &pw(PASSWORD), &CreateOptions::default())
            .await
            .unwrap();
        v.token_soft_delete(&gone).await.unwrap();
        let old = v
            .token_create("o", &pw(PASSWORD), &opts(None, Some(T0 + 5)))
            .await
            .unwrap();

        let e = code(
            v.tokens_read(&[&a, "tk_nope1", &b, &gone, "tk_nope2"], &pw(PASSWORD))
                .await,
            ErrorCode::RecordNotFound,
        );
        assert_eq!(e.reason(), Some(NotFoundReason::Missing));
        assert_eq!(e.tokens().unwrap(), ["tk_nope1", "tk_nope2", gone.as_str()]);
        let e = code(
            v.tokens_read(&[&a, &gone], &pw(PASSWORD)).await,
            ErrorCode::RecordNotFound,
        );
        assert_eq!(e.reason(), Some(NotFoundReason::SoftDeleted));

        let e = code(
            v.tokens_read(&[&a, &b], &pw(PASSWORD)).await,
            ErrorCode::InvalidPassword,
        );
        assert_eq!(e.tokens().unwrap(), [b.as_str()]);

        clock.advance(10);
        // Expired tokens are left out; duplicates appear once.
        let read = v.tokens_read(&[&a, &old, &a], &pw(PASSWORD)).await.unwrap();
        assert_eq!(read, vec![(a.clone(), "a".to_owned())]);
        assert!(v.tokens_read(&[], &pw(PASSWORD)).await.unwrap().is_empty());

        let map = v
            .tokens_read_to_resolved_map(
                &[
                    ("card".into(), a.clone()),
                    ("old".into(), old.clone()),
                    ("again".into(), a.clone()),
                ],
                &pw(PASSWORD),
            )
            .await
            .unwrap();
        assert_eq!(
            map,
            vec![
                ("card".to_owned(), "a".to_owned()),
                ("again".to_owned(), "a".to_owned())
            ]
        );
        code(
            v.tokens_read_to_resolved_map(&[("k".into(), "tk_missing".into())], &pw(PASSWORD))
                .await,
            ErrorCode::RecordNotFound,
        );
    });
}

#[test]
fn custom_tokens() {
    run(async {
        let v = vault().await;
        v.token_create_custom("order-42", "v1", &pw(PASSWORD), None)
            .await
            .unwrap();
        assert_eq!(v.token_read("order-42", &pw(PASSWORD)).await.unwrap(), "v1");
        let e = code(
            v.token_create_custom("order-42", "v2", &pw(PASSWORD), None)
                .await,
            ErrorCode::TokenExists,
        );
        assert!(!e.to_string().contains("order-42"), "{e}");
        assert_eq!(e.tokens(), Some(&["order-42".to_owned()][..]));
        v.token_soft_delete("order-42").await.unwrap();
        code(
            v.token_create_custom("order-42", "v2", &pw(PASSWORD), None)
                .await,
            ErrorCode::TokenExists,
        );
        v.token_create_custom(&"é".repeat(127), "v", &pw(PASSWORD), Some(T0 + 10))
            .await
            .unwrap();
        assert_eq!(
            v.token_read("order-42", &pw(PASSWORD))
                .await
                .unwrap_err()
                .reason(),
            Some(NotFoundReason::SoftDeleted)
        );
    });
}

#[test]
fn update_keeps_expiry_and_needs_the_stored_secret() {
    run(async {
        let (v, clock) = vault_with(options()).await;
        let t = v
            .token_create("one", &pw(PASSWORD), &opts(None, Some(T0 + 100)))
            .await
            .unwrap();
        clock.advance(5);
        v.token_update(&t, "two", &pw(PASSWORD)).await.unwrap();
        assert_eq!(v.token_read(&t, &pw(PASSWORD)).await.unwrap(), "two");
        let r = v.record_find_by_token(&t).await.unwrap().unwrap();
        assert_eq!(
            (r.expires_at, r.created_at, r.updated_at),
            (Some(T0 + 100), T0, T0 + 5)
        );
        code(
            v.token_update(&t, "three", &pw(OTHER)).await,
            ErrorCode::InvalidPassword,
        );
        assert_eq!(
            v.token_read(&t, &pw(PASSWORD)).await.unwrap(),
            "two",
            "a refused update changes nothing"
        );

        let e = code(
            v.token_update("tk_missing", "x", &pw(PASSWORD)).await,
            ErrorCode::RecordNotFound,
        );
        assert_eq!(e.reason(), Some(NotFoundReason::Missing));
        v.token_soft_delete(&t).await.unwrap();
        let e = code(
            v.token_update(&t, "x", &pw(PASSWORD)).await,
            ErrorCode::RecordNotFound,
        );
        assert_eq!(e.reason(), Some(NotFoundReason::SoftDeleted));
        code(
            v.token_upsert(
                Some(t.as_str()),
                "x",
                &pw(PASSWORD),
                &CreateOptions::default(),
            )
            .await,
            ErrorCode::RecordNotFound,
        );

        // Expired records can still be updated.
        let e2 = v
            .token_create("e", &pw(PASSWORD), &opts(None, Some(T0)))
            .await
            .unwrap();
        clock.advance(100);
        v.token_update(&e2, "still updatable", &pw(PASSWORD))
            .await
            .unwrap();
    });
}

#[test]
fn upsert_creates_or_updates() {
    run(async {
        let v = vault().await;
        let created = v
            .token_upsert(None, "a", &pw(PASSWORD), &opts(Some(20), None))
            .await
            .unwrap();
        assert_eq!(created.len(), 20);
        let also_created = v
            .token_upsert(Some(""), "b", &pw(PASSWORD), &CreateOptions::default())
            .await
            .unwrap();
        assert_ne!(created, also_created);
        let same = v
            .token_upsert(
                Some(&created),
                "c",
                &pw(PASSWORD),
                &CreateOptions::default(),
            )
            .await
            .unwrap();
        assert_eq!(same, created);
        assert_eq!(v.token_read(&created, &pw(PASSWORD)).await.unwrap(), "c");
        let e = code(
            v.token_upsert(
                Some("tk_missing"),
                "x",
                &pw(PASSWORD),
                &CreateOptions::default(),
            )
            .await,
            ErrorCode::RecordNotFound,
        );
        assert_eq!(e.reason(), Some(NotFoundReason::Missing));
        // Bad options are refused on the update path too, and the value stays.
        for bad in [opts(Some(5), None), opts(None, Some(i64::MAX))] {
            code(
                v.token_upsert(Some(&created), "d", &pw(PASSWORD), &bad)
                    .await,
                ErrorCode::InvalidArgument,
            );
        }
        assert_eq!(v.token_read(&created, &pw(PASSWORD)).await.unwrap(), "c");
    });
}

#[test]
fn exists_renew_soft_delete_restore_delete() {
    run(async {
        let (v, clock) = vault_with(options()).await;
        let t = v
            .token_create("v", &pw(PASSWORD), &opts(None, Some(T0 + 10)))
            .await
            .unwrap();
        assert!(v.token_exists(&t).await.unwrap());
        assert!(!v.token_exists("tk_missing").await.unwrap());
        clock.advance(20);
        assert!(
            v.token_exists(&t).await.unwrap(),
            "expired but not purged still exists"
        );
        v.token_renew(&t, Some(T0 + 100)).await.unwrap();
        assert_eq!(v.token_read(&t, &pw(PASSWORD)).await.unwrap(), "v");
        v.token_renew(&t, None).await.unwrap();
        assert_eq!(
            v.record_find_by_token(&t)
                .await
                .unwrap()
                .unwrap()
                .expires_at,
            None
        );
        code(
            v.token_renew("tk_missing", None).await,
            ErrorCode::RecordNotFound,
        );

        v.token_soft_delete(&t).await.unwrap();
        assert!(!v.token_exists(&t).await.unwrap());
        let first = v
            .record_list(&vaultstore_wasm::RecordQuery {
                soft_deleted_only: true,
                ..Default::default()
            })
            .await
            .unwrap();
        clock.advance(5);
        v.token_soft_delete(&t).await.unwrap();
        let second = v
            .record_list(&vaultstore_wasm::RecordQuery {
                soft_deleted_only: true,
                ..Default::default()
            })
            .await
            .unwrap();
        assert_eq!(first, second, "soft-deleting twice keeps the first time");
        code(
            v.token_soft_delete("tk_missing").await,
            ErrorCode::RecordNotFound,
        );

        v.token_restore(&t).await.unwrap();
        assert!(v.token_exists(&t).await.unwrap());
        v.token_restore(&t).await.unwrap(); // live: resolves
        code(
            v.token_restore("tk_missing").await,
            ErrorCode::RecordNotFound,
        );

        v.token_delete(&t).await.unwrap();
        assert!(!v.token_exists(&t).await.unwrap());
        v.token_delete(&t).await.unwrap(); // idempotent
        code(
            v.token_read(&t, &pw(PASSWORD)).await,
            ErrorCode::RecordNotFound,
        );
    });
}

#[test]
fn raw_keys_work_without_the_policy() {
    run(async {
        let v = vault().await;
        let key = Secret::raw_key(&[7u8; 32]).unwrap();
        let t = v
            .token_create("raw", &key, &CreateOptions::default())
            .await
            .unwrap();
        assert_eq!(
            v.token_read(&t, &Secret::raw_key(&[7u8; 32]).unwrap())
                .await
                .unwrap(),
            "raw"
        );
        code(
            v.token_read(&t, &Secret::raw_key(&[8u8; 32]).unwrap())
                .await,
            ErrorCode::InvalidPassword,
        );
        // A password made of the same bytes is a different secret.
        code(
            v.token_read(&t, &pw(&String::from_utf8(vec![7u8; 32]).unwrap()))
                .await,
            ErrorCode::InvalidPassword,
        );
    });
}

#[test]
fn the_policy_guards_passwords_that_encrypt_only() {
    run(async {
        let strict = PasswordPolicy {
            min_length: 8,
            require_uppercase: true,
            require_numbers: true,
            require_symbols: true,
            ..PasswordPolicy::default()
        };
        let v = vault().await;
        let t = v
            .token_create("v", &pw("weak but long enough"), &CreateOptions::default())
            .await
            .unwrap();
        let snapshot = v.export_snapshot().await.unwrap();
        let (v, _) = vault_with(VaultOptions {
            password_policy: strict,
            snapshot: Some(snapshot),
            ..options()
        })
        .await;
        // Reading with a password the new policy would refuse still works.
        assert_eq!(
            v.token_read(&t, &pw("weak but long enough")).await.unwrap(),
            "v"
        );
        for call in [
            v.token_create("x", &pw("weak but long enough"), &CreateOptions::default())
                .await
                .map(drop),
            v.tokens_create(&["x"], &pw("weak"), &CreateOptions::default())
                .await
                .map(drop),
            v.token_create_custom("c", "x", &pw("Sh0rt!"), None).await,
            v.token_update(&t, "x", &pw("weak but long enough")).await,
            v.token_upsert(None, "x", &pw("nouppercase1!"), &CreateOptions::default())
                .await
                .map(drop),
        ] {
            code(call, ErrorCode::PasswordPolicy);
        }
        let good = v
            .token_create("x", &pw("Str0ng!pass"), &CreateOptions::default())
            .await
            .unwrap();
        assert_eq!(v.token_read(&good, &pw("Str0ng!pass")).await.unwrap(), "x");
        // The empty password: refused unless allowEmpty; reading with "" is never a policy error.
        code(
            v.token_create("x", &pw(""), &CreateOptions::default())
                .await,
            ErrorCode::PasswordPolicy,
        );
        code(v.token_read(&t, &pw("")).await, ErrorCode::InvalidPassword);
        let lax = PasswordPolicy {
            allow_empty: true,
            ..PasswordPolicy::default()
        };
        let (v, _) = vault_with(VaultOptions {
            password_policy: lax,
            ..options()
        })
        .await;
        let e = v
            .token_create("empty pw", &pw(""), &CreateOptions::default())
            .await
            .unwrap();
        assert_eq!(v.token_read(&e, &pw("")).await.unwrap(), "empty pw");
        code(
            v.token_create("x", &pw("short"), &CreateOptions::default())
                .await,
            ErrorCode::PasswordPolicy,
        );
    });
}
