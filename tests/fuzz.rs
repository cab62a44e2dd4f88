//! Property-based tests over everything a hostile party controls: stored envelopes, snapshots and
//! queries. Whatever the input, nothing panics (a panic traps the wasm instance for every vault
//! in the page), every failure carries the contract's code, and a refused input changes nothing.
//!
//! `npm test` runs the default number of cases; for a longer run:
//! `PROPTEST_CASES=20000 cargo test --release --test fuzz`.
#![cfg(all(feature = "gluesql", not(target_arch = "wasm32")))]

mod common;
mod conformance;

use common::*;
use proptest::prelude::*;
use serde_json::{Value, json};
use std::sync::Arc;
use vaultstore_wasm::crypto::{DataKey, Envelope, KdfParams, derive_raw_key, seal_value};
use vaultstore_wasm::query::RecordFilter;
use vaultstore_wasm::storage::memory::GlueMemoryStorage;
use vaultstore_wasm::storage::{Storage, WriteOp};
use vaultstore_wasm::{ErrorCode, RecordQuery, Vault, VaultOptions};

const FROZEN: &str = include_str!("fixtures/snapshot_v1.json");

fn key(byte: u8) -> DataKey {
    let params = KdfParams::generate(1_000).unwrap();
    DataKey::from_master(&derive_raw_key(&[byte; 32], &params))
}

/// Arbitrary JSON, a few levels deep, with the odd values that break parsers.
fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(Value::from),
        Just(json!(9_007_199_254_740_993u64)),
        ".{0,24}".prop_map(Value::from),
        Just(Value::from("vs1:AAAA")),
        Just(Value::from("p_0123456789abcdef0123456789abcdef")),
    ];
    leaf.prop_recursive(3, 24, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::from),
            prop::collection::btree_map(".{0,8}", inner, 0..4)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// Replace the node at a random path of `doc` by `with`.
fn replace_at(doc: &mut Value, mut path: Vec<usize>, with: Value) {
    let Some(step) = path.pop() else {
        *doc = with;
        return;
    };
    match doc {
        Value::Array(items) if !items.is_empty() => {
            let i = step % items.len();
            replace_at(&mut items[i], path, with)
        }
        Value::Object(map) if !map.is_empty() => {
            let k = map.keys().nth(step % map.len()).cloned().unwrap();
            replace_at(map.get_mut(&k).unwrap(), path, with)
        }
        other => *other = with,
    }
}

/// Open a vault from `bytes` on a store the test keeps, to check it afterwards.
async fn open_snapshot(
    storage: &Arc<GlueMemoryStorage>,
    bytes: Vec<u8>,
) -> vaultstore_wasm::Result<Vault> {
    Vault::open(
        Box::new(storage.clone()),
        VaultOptions {
            snapshot: Some(bytes),
            min_kdf_iterations: Some(1_000),
            ..options()
        },
    )
    .await
}

proptest! {
    #[test]
    fn any_text_parses_or_is_refused_as_damaged(text in ".{0,200}") {
        if let Err(e) = Envelope::parse(&text) {
            prop_assert_eq!(e.code(), ErrorCode::DecryptionFailed);
        }
        let prefixed = format!("vs1:{text}");
        if let Ok(envelope) = Envelope::parse(&prefixed) {
            let e = envelope.open(&key(1), "tk_x").unwrap_err();
            prop_assert!(matches!(e.code(), ErrorCode::InvalidPassword | ErrorCode::DecryptionFailed));
        }
    }

    #[test]
    fn a_changed_envelope_never_opens(
        value in ".{0,64}",
        at in any::<usize>(),
        xor in 1u8..=255,
        cut in any::<bool>(),
    ) {
        let k = key(2);
        let sealed = seal_value(&k, "tk_x", &value).unwrap();
        let body = sealed.strip_prefix("vs1:").unwrap();
        let mut bytes = base64_decode(body);
        if cut {
            bytes.truncate(at % bytes.len());
        } else {
            let i = at % bytes.len();
            bytes[i] ^= xor;
        }
        let tampered = format!("vs1:{}", base64_encode(&bytes));
        match Envelope::parse(&tampered) {
            Err(e) => prop_assert_eq!(e.code(), ErrorCode::DecryptionFailed),
            Ok(envelope) => {
                let e = envelope.open(&k, "tk_x").unwrap_err();
                prop_assert!(matches!(e.code(), ErrorCode::InvalidPassword | ErrorCode::DecryptionFailed));
            }
        }
        // The same envelope on another record (another token) does not open either.
        let e = Envelope::parse(&sealed).unwrap().open(&k, "tk_y").unwrap_err();
        prop_assert_eq!(e.code(), ErrorCode::DecryptionFailed);
    }

    #[test]
    fn arbitrary_bytes_are_never_a_snapshot(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
        run(async {
            let storage = Arc::new(GlueMemoryStorage::new().unwrap());
            let e = open_snapshot(&storage, bytes).await.unwrap_err();
            assert_eq!(e.code(), ErrorCode::InvalidArgument);
            assert_eq!(conformance::dump(&*storage).await, (vec![], vec![]), "nothing stored");
        });
    }

    #[test]
    fn a_mutated_snapshot_opens_whole_or_changes_nothing(
        path in prop::collection::vec(any::<usize>(), 1..5),
        with in json_value(),
    ) {
        let mut doc: Value = serde_json::from_str(FROZEN).unwrap();
        replace_at(&mut doc, path, with);
        let bytes = serde_json::to_vec(&doc).unwrap();
        run(async {
            let storage = Arc::new(GlueMemoryStorage::new().unwrap());
            match open_snapshot(&storage, bytes).await {
                Err(e) => {
                    assert_eq!(e.code(), ErrorCode::InvalidArgument, "{e}");
                    assert_eq!(conformance::dump(&*storage).await, (vec![], vec![]), "nothing stored");
                }
                Ok(v) => {
                    // Whatever was accepted is a consistent vault: it exports and reopens.
                    let again = v.export_snapshot().await.unwrap();
                    let copy = Arc::new(GlueMemoryStorage::new().unwrap());
                    open_snapshot(&copy, again).await.unwrap();
                }
            }
        });
    }

    #[test]
    fn any_query_is_refused_or_agrees_with_the_reference(
        id in proptest::option::of("[a-c]{0,2}"),
        token in proptest::option::of("tk_[a-c]{0,2}"),
        id_in in proptest::option::of(prop::collection::vec("[a-f0-9]{0,3}", 0..4)),
        limit in proptest::option::of(-3i64..5),
        offset in proptest::option::of(-3i64..5),
        order_by in proptest::option::of(prop_oneof![
            Just("created_at"), Just("updated_at"), Just("expires_at"), Just("token"), Just("id"), Just("nope")
        ]),
        sort_order in proptest::option::of(prop_oneof![Just("asc"), Just("desc"), Just("DESC")]),
        flags in any::<(bool, bool, bool, bool)>(),
    ) {
        let query = RecordQuery {
            id,
            token,
            id_in,
            limit,
            offset,
            order_by: order_by.map(str::to_owned),
            sort_order: sort_order.map(str::to_owned),
            soft_deleted_include: flags.0,
            soft_deleted_only: flags.1,
            expired_only: flags.2,
            count_only: flags.3,
            ..RecordQuery::default()
        };
        match query.validate() {
            Err(e) => prop_assert_eq!(e.code(), ErrorCode::InvalidArgument),
            Ok(filter) => run(async {
                let storage = GlueMemoryStorage::new().unwrap();
                let fixture = conformance::query_fixture();
                let batch = fixture.iter().cloned().map(WriteOp::insert_record).collect();
                let stamp = vaultstore_wasm::storage::Stamp {
                    rev: vaultstore_wasm::sync::Rev::ZERO,
                    at: conformance::NOW,
                };
                storage.apply(stamp, batch).await.unwrap();
                let expected = filter.apply(fixture.clone(), conformance::NOW);
                let count = RecordFilter { limit: None, offset: 0, ..filter.clone() }
                    .apply(fixture, conformance::NOW)
                    .len() as u64;
                assert_eq!(storage.query_records(&filter, conformance::NOW).await.unwrap(), expected);
                assert_eq!(storage.count_records(&filter, conformance::NOW).await.unwrap(), count);
            }),
        }
    }
}

fn base64_decode(s: &str) -> Vec<u8> {
    use base64ct::Encoding;
    base64ct::Base64UrlUnpadded::decode_vec(s).unwrap()
}

fn base64_encode(b: &[u8]) -> String {
    use base64ct::Encoding;
    base64ct::Base64UrlUnpadded::encode_string(b)
}
