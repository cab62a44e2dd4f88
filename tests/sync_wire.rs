//! The sync wire format (protocol 1, `src/sync/wire.rs`) and its JSON reader (`src/sync/json.rs`)
//! against what a server meets: every valid message survives encode → decode unchanged and
//! encodes to one canonical text; the reader agrees with serde_json on random JSON texts and
//! their mutations; nothing panics on arbitrary bytes or deep nesting; a table of hostile bodies
//! gets the status, code and path each deserves, and no error message quotes the body.
//!
//! Fixed seed, 256 cases per property (a few seconds). A longer run, or another seed:
//! `PROPTEST_CASES=20000 cargo test --release --test sync_wire` (`PROPTEST_RNG_SEED=<n>` too).
#![cfg(not(target_arch = "wasm32"))]

use base64ct::{Base64UrlUnpadded, Encoding};
use proptest::prelude::*;
use proptest::test_runner::RngSeed;
use serde_json::json;
use std::collections::HashSet;
use vaultstore_wasm::crypto::{KdfParams, MAX_ITERATIONS, MIN_ITERATIONS};
use vaultstore_wasm::record::MAX_TIME_MS;
use vaultstore_wasm::storage::MetaKey;
use vaultstore_wasm::sync::json::{self as wire_json, Limits, MAX_SAFE_INTEGER, Value};
use vaultstore_wasm::sync::wire::{
    self, Change, Checkpoint, MAX_BODY_BYTES, MAX_PULL_ROWS, MAX_PUSH_ROWS, PullRequest,
    PullResponse, PushRequest, PushResponse, Refusal, Refused, Request, Reset, Row, Superseded,
    VaultInfo, WireError,
};
use vaultstore_wasm::sync::{
    LiveRecord, MAX_WALL_MS, MetaVersion, RecordVersion, Rev, Tombstone, TombstoneReason,
};

fn config() -> ProptestConfig {
    let mut config = ProptestConfig::default();
    if std::env::var_os("PROPTEST_RNG_SEED").is_none() {
        config.rng_seed = RngSeed::Fixed(14);
    }
    config
}

/// For the cheap properties (one small text per case): 4,096 cases unless `PROPTEST_CASES` says.
fn many_cases() -> ProptestConfig {
    let mut config = config();
    if std::env::var_os("PROPTEST_CASES").is_none() {
        config.cases = 4_096;
    }
    config
}

// ---------------------------------------------------------------------------------------------
// Valid messages

fn hex(len: usize) -> impl Strategy<Value = String> {
    proptest::collection::vec(0u8..16, len)
        .prop_map(|digits| digits.iter().map(|d| format!("{d:x}")).collect())
}

/// Any characters, with the ones escaping meets often: quotes, backslashes, controls, astral.
fn text(min: usize, max: usize) -> impl Strategy<Value = String> {
    let interesting = proptest::sample::select(vec![
        '"', '\\', '/', '\u{8}', '\u{c}', '\n', '\r', '\t', '\u{0}', '\u{1f}', '\u{7f}', 'a', 'é',
        '\u{2028}', '😀',
    ]);
    let c = prop_oneof![any::<char>(), interesting];
    proptest::collection::vec(c, min..max).prop_map(String::from_iter)
}

fn rev() -> impl Strategy<Value = Rev> {
    (0..=MAX_WALL_MS, any::<u16>(), any::<u64>())
        .prop_map(|(wall, counter, node)| Rev::new(wall, counter, node).unwrap())
}

fn time() -> impl Strategy<Value = i64> {
    prop_oneof![
        4 => 0i64..4_000_000_000_000,
        1 => -MAX_TIME_MS..=MAX_TIME_MS,
        1 => prop_oneof![Just(MAX_TIME_MS), Just(-MAX_TIME_MS)],
    ]
}

fn count() -> impl Strategy<Value = u64> {
    prop_oneof![0u64..5_000, Just(MAX_SAFE_INTEGER as u64)]
}

fn b64u(min: usize, max: usize) -> impl Strategy<Value = String> {
    proptest::collection::vec(any::<u8>(), min..max)
        .prop_map(|b| Base64UrlUnpadded::encode_string(&b))
}

/// A well-formed `vs1:` envelope: 32 header bytes and at least a 16-byte tag.
fn envelope() -> impl Strategy<Value = String> {
    b64u(48, 120).prop_map(|b| format!("vs1:{b}"))
}

fn identity_id() -> impl Strategy<Value = String> {
    hex(32).prop_map(|h| format!("p_{h}"))
}

fn kdf() -> impl Strategy<Value = String> {
    (MIN_ITERATIONS..=MAX_ITERATIONS, any::<[u8; 16]>())
        .prop_map(|(iterations, salt)| KdfParams { iterations, salt }.to_json())
}

fn live_record() -> impl Strategy<Value = LiveRecord> {
    (
        (text(1, 30), envelope(), proptest::option::of(identity_id())),
        (
            time(),
            time(),
            proptest::option::of(time()),
            proptest::option::of(time()),
        ),
        (rev(), rev(), rev(), rev()),
    )
        .prop_map(
            |(
                (token, value, password_id),
                (created_at, updated_at, expires_at, soft_deleted_at),
                (value_rev, seal_rev, expires_rev, deleted_rev),
            )| LiveRecord {
                token,
                created_at,
                updated_at,
                value,
                password_id,
                value_rev,
                seal_rev,
                expires_at,
                expires_rev,
                soft_deleted_at,
                deleted_rev,
            },
        )
}

/// A meta row that may travel, with a value of the right shape for its key.
fn meta_row() -> impl Strategy<Value = (MetaKey, String)> {
    let setting = (
        text(1, 12).prop_filter("kdf never travels", |k| k != "kdf"),
        text(0, 40),
    )
        .prop_map(|(key, value)| (MetaKey::new("vault", "settings", &key), value));
    let identity = (
        identity_id(),
        prop_oneof![
            hex(64).prop_map(|v| ("tag", v)),
            b64u(60, 61).prop_map(|v| ("dek", format!("vs1k:{v}"))),
            identity_id().prop_map(|v| ("identity", v)),
        ],
    )
        .prop_map(|(id, (key, value))| (MetaKey::new("password_identity", &id, key), value));
    prop_oneof![setting, identity]
}

fn row() -> impl Strategy<Value = Row> {
    prop_oneof![
        3 => (hex(32), live_record()).prop_map(|(id, r)| Row::Record { id, version: RecordVersion::Live(r) }),
        1 => (hex(32), rev(), time(), prop_oneof![Just(TombstoneReason::Deleted), Just(TombstoneReason::Displaced)])
            .prop_map(|(id, rev, deleted_at, reason)| Row::Record {
                id,
                version: RecordVersion::Gone(Tombstone { rev, deleted_at, reason }),
            }),
        2 => (meta_row(), rev()).prop_map(|((key, value), rev)| Row::Meta { key, version: MetaVersion::Value { rev, value } }),
        1 => (meta_row(), rev(), time(), any::<bool>()).prop_map(|((key, _), rev, deleted_at, emptied)| {
            // Only an identity's row can be emptied.
            let emptied = emptied && key.object_type == "password_identity";
            Row::Meta { key, version: MetaVersion::Gone { rev, deleted_at, emptied } }
        }),
    ]
}

fn row_key(row: &Row) -> String {
    match row {
        Row::Record { id, .. } => format!("record {id}"),
        Row::Meta { key, .. } => format!("meta {:?}", key),
    }
}

/// An answer's `replaced` rows: up to 3 live rows of identity objects, each key once.
fn replaced() -> impl Strategy<Value = Vec<Row>> {
    proptest::collection::vec((meta_row(), rev()), 0..4).prop_map(|rows| {
        let mut seen = std::collections::HashSet::new();
        rows.into_iter()
            .filter(|((key, _), _)| {
                key.object_type == "password_identity" && seen.insert(key.clone())
            })
            .map(|((key, value), rev)| Row::Meta {
                key,
                version: MetaVersion::Value { rev, value },
            })
            .collect()
    })
}

/// A live version of the identity row `key`, older than `removal`: one that removal replaced.
fn older_version(key: &MetaKey, removal: Rev) -> Row {
    let value = match key.key.as_str() {
        "tag" => "a".repeat(64),
        "dek" => format!("vs1k:{}", Base64UrlUnpadded::encode_string(&[7; 60])),
        _ => format!("p_{}", "e".repeat(32)),
    };
    Row::Meta {
        key: key.clone(),
        version: MetaVersion::Value {
            rev: Rev::new(removal.wall_ms() - 1, 0, 1).unwrap(),
            value,
        },
    }
}

/// Up to `max` rows, each key once (a page never holds one row twice).
fn rows(max: usize) -> impl Strategy<Value = Vec<Row>> {
    proptest::collection::vec(row(), 0..max).prop_map(|rows| {
        let mut seen = HashSet::new();
        rows.into_iter()
            .filter(|r| seen.insert(row_key(r)))
            .collect()
    })
}

fn checkpoint() -> impl Strategy<Value = Checkpoint> {
    (hex(32), count(), text(0, 40), hex(32)).prop_map(|(server, seq, key, head)| Checkpoint {
        server: format!("s_{server}"),
        seq,
        key,
        head,
    })
}

fn vault_info() -> impl Strategy<Value = VaultInfo> {
    (kdf(), any::<bool>()).prop_map(|(kdf, empty)| VaultInfo { kdf, empty })
}

fn request() -> impl Strategy<Value = Request> {
    let pull = (
        vault_info(),
        proptest::option::of(checkpoint()),
        1u64..5_000,
        proptest::collection::hash_set(hex(32), 0..4),
    )
        .prop_map(|(vault, checkpoint, limit, fetch)| {
            Request::Pull(PullRequest {
                vault,
                checkpoint,
                limit,
                fetch: fetch.into_iter().collect(),
            })
        });
    let push = (
        vault_info(),
        proptest::option::of(checkpoint()),
        rows(8),
        any::<bool>(),
    )
        .prop_map(|(vault, checkpoint, rows, with_replaced)| {
            // The versions the page's emptied removals replaced, when asked.
            let replaced = (rows.iter())
                .filter(|_| with_replaced)
                .filter_map(|row| match row {
                    Row::Meta {
                        key,
                        version:
                            MetaVersion::Gone {
                                rev, emptied: true, ..
                            },
                    } if rev.wall_ms() > 0 => Some(older_version(key, *rev)),
                    _ => None,
                })
                .collect();
            Request::Push(PushRequest {
                vault,
                checkpoint,
                rows,
                replaced,
            })
        });
    prop_oneof![pull, push]
}

fn pull_response() -> impl Strategy<Value = PullResponse> {
    (
        (hex(32), time(), kdf()),
        prop_oneof![
            Just(None),
            Just(Some(Reset::Lost)),
            Just(Some(Reset::Expired))
        ],
        (rows(8), proptest::collection::vec(count(), 8)),
        (checkpoint(), any::<bool>(), count()),
        replaced(),
    )
        .prop_map(
            |(
                (server, time, kdf),
                reset,
                (rows, seqs),
                (checkpoint, more, remaining),
                replaced,
            )| {
                PullResponse {
                    server: format!("s_{server}"),
                    time,
                    kdf,
                    reset,
                    rows: rows
                        .into_iter()
                        .zip(seqs)
                        .map(|(row, seq)| Change { seq, row })
                        .collect(),
                    checkpoint,
                    more,
                    remaining,
                    replaced,
                }
            },
        )
}

/// A push response to a push of `sent` rows, each index named at most once.
fn push_response(sent: usize) -> impl Strategy<Value = PushResponse> {
    (
        (hex(32), time(), count()),
        Just((0..sent).collect::<Vec<_>>()).prop_shuffle(),
        0..=sent,
        0..=sent,
        proptest::collection::vec(
            (
                row(),
                proptest::sample::select(Refusal::ALL.to_vec()),
                any::<bool>(),
            ),
            sent,
        ),
        (proptest::option::of(checkpoint()), replaced()),
    )
        .prop_map(
            move |(
                (server, time, stored),
                order,
                n_superseded,
                n_refused,
                details,
                (checkpoint, replaced),
            )| {
                let n_superseded = n_superseded.min(sent);
                let n_refused = n_refused.min(sent - n_superseded);
                let mut details = details.into_iter();
                let mut superseded = vec![];
                let mut refused = vec![];
                for (k, i) in order.into_iter().enumerate() {
                    let Some((current, reason, with_current)) = details.next() else {
                        break;
                    };
                    if k < n_superseded {
                        superseded.push(Superseded { i, current });
                    } else if k < n_superseded + n_refused {
                        refused.push(Refused {
                            i,
                            reason,
                            current: with_current.then_some(current),
                        });
                    }
                }
                PushResponse {
                    server: format!("s_{server}"),
                    time,
                    stored,
                    superseded,
                    refused,
                    checkpoint,
                    replaced,
                }
            },
        )
}

/// An answer's `replaced` holds live rows of identity objects, each once: a setting, a removal
/// or a row named twice is refused, and an answer without any omits the member.
#[test]
fn replaced_rows_are_live_identity_rows_each_once() {
    let tag = |rev: u64| Row::Meta {
        key: MetaKey::new("password_identity", &format!("p_{}", "a".repeat(32)), "tag"),
        version: MetaVersion::Value {
            rev: Rev::new(rev, 0, 1).unwrap(),
            value: "b".repeat(64),
        },
    };
    let response = PullResponse {
        server: format!("s_{}", "c".repeat(32)),
        time: 1,
        kdf: r#"{"alg":"pbkdf2-sha256","iterations":1000,"salt":"AAAAAAAAAAAAAAAAAAAAAA"}"#.into(),
        reset: None,
        rows: vec![],
        checkpoint: Checkpoint {
            server: format!("s_{}", "c".repeat(32)),
            seq: 0,
            key: "k".into(),
            head: "d".repeat(32),
        },
        more: false,
        remaining: 0,
        replaced: vec![],
    };
    let plain = wire::encode_pull_response(&response);
    assert!(!plain.contains("replaced"), "{plain}");
    let with = |rows: Vec<Row>| PullResponse {
        replaced: rows,
        ..response.clone()
    };
    let text = wire::encode_pull_response(&with(vec![tag(5)]));
    assert_eq!(
        wire::decode_pull_response(text.as_bytes()),
        Ok(with(vec![tag(5)]))
    );
    let setting = Row::Meta {
        key: MetaKey::new("vault", "settings", "theme"),
        version: MetaVersion::Value {
            rev: Rev::new(5, 0, 1).unwrap(),
            value: "dark".into(),
        },
    };
    let removal = Row::Meta {
        key: MetaKey::new("password_identity", &format!("p_{}", "a".repeat(32)), "tag"),
        version: MetaVersion::Gone {
            rev: Rev::new(5, 0, 1).unwrap(),
            deleted_at: 1,
            emptied: true,
        },
    };
    for (rows, what) in [
        (vec![setting], "live row of an identity object"),
        (vec![removal], "live row of an identity object"),
        (vec![tag(5), tag(6)], "same row"),
    ] {
        let text = wire::encode_pull_response(&with(rows));
        let err = wire::decode_pull_response(text.as_bytes()).unwrap_err();
        assert!(err.message().contains(what), "{err:?}");
    }
}

/// A push's `replaced` names versions its emptied removals replaced: each must be older than
/// an emptied removal of the same row in `rows`, else the request is refused; a push without
/// any omits the member.
#[test]
fn a_push_sends_only_versions_its_emptied_removals_replaced() {
    let object = format!("p_{}", "a".repeat(32));
    let tag = MetaKey::new("password_identity", &object, "tag");
    let removal = |rev: u64, emptied: bool| Row::Meta {
        key: tag.clone(),
        version: MetaVersion::Gone {
            rev: Rev::new(rev, 0, 1).unwrap(),
            deleted_at: 1,
            emptied,
        },
    };
    let push = |rows: Vec<Row>, replaced: Vec<Row>| {
        Request::Push(PushRequest {
            vault: VaultInfo {
                kdf: r#"{"alg":"pbkdf2-sha256","iterations":1000,"salt":"AAAAAAAAAAAAAAAAAAAAAA"}"#
                    .into(),
                empty: false,
            },
            checkpoint: None,
            rows,
            replaced,
        })
    };
    let plain = wire::encode_request(&push(vec![removal(10, true)], vec![]));
    assert!(!plain.contains("replaced"), "{plain}");
    let kept = older_version(&tag, Rev::new(10, 0, 1).unwrap());
    let good = push(vec![removal(10, true)], vec![kept.clone()]);
    let text = wire::encode_request(&good);
    assert_eq!(wire::decode_request(text.as_bytes()), Ok(good));
    let other = older_version(
        &MetaKey::new("password_identity", &object, "dek"),
        Rev::new(10, 0, 1).unwrap(),
    );
    for (rows, replaced) in [
        // As new as the removal, or later: not a version it replaced.
        (vec![removal(9, true)], vec![kept.clone()]),
        (vec![removal(8, true)], vec![kept.clone()]),
        // A removal that is not emptied, or none of that row.
        (vec![removal(10, false)], vec![kept.clone()]),
        (vec![removal(10, true)], vec![other]),
    ] {
        let text = wire::encode_request(&push(rows, replaced));
        let err = wire::decode_request(text.as_bytes()).unwrap_err();
        assert!(
            err.message().contains("older than an emptied removal"),
            "{err:?}"
        );
    }
}

/// The same message written another way: keys sorted, pretty-printed (serde_json's map is
/// sorted). Decoding it must give the canonical bytes back.
fn rewritten(text: &str) -> String {
    let value: serde_json::Value = serde_json::from_str(text).expect("encoders write JSON");
    serde_json::to_string_pretty(&value).unwrap()
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn requests_round_trip_canonically(request in request()) {
        let text = wire::encode_request(&request);
        prop_assert_eq!(wire::decode_request(text.as_bytes()), Ok(request.clone()));
        let again = wire::decode_request(rewritten(&text).as_bytes()).unwrap();
        prop_assert_eq!(wire::encode_request(&again), text);
    }

    #[test]
    fn pull_responses_round_trip_canonically(response in pull_response()) {
        let text = wire::encode_pull_response(&response);
        prop_assert_eq!(wire::decode_pull_response(text.as_bytes()), Ok(response.clone()));
        let again = wire::decode_pull_response(rewritten(&text).as_bytes()).unwrap();
        prop_assert_eq!(wire::encode_pull_response(&again), text);
    }

    #[test]
    fn push_responses_round_trip_canonically((sent, response) in (0usize..8).prop_flat_map(|n| (Just(n), push_response(n)))) {
        let text = wire::encode_push_response(&response);
        prop_assert_eq!(wire::decode_push_response(text.as_bytes(), sent), Ok(response.clone()));
        let again = wire::decode_push_response(rewritten(&text).as_bytes(), sent).unwrap();
        prop_assert_eq!(wire::encode_push_response(&again), text);
    }
}

// ---------------------------------------------------------------------------------------------
// The reader against serde_json

const DIFF_LIMITS: Limits = Limits {
    max_depth: 64,
    max_string_bytes: 1 << 20,
    max_values: 1 << 20,
};

fn to_serde(value: &Value) -> serde_json::Value {
    match value {
        Value::Null => serde_json::Value::Null,
        Value::Bool(b) => json!(b),
        Value::Int(n) => json!(n),
        Value::Str(s) => json!(s),
        Value::Array(items) => serde_json::Value::Array(items.iter().map(to_serde).collect()),
        Value::Object(members) => serde_json::Value::Object(
            members
                .iter()
                .map(|(k, v)| (k.clone(), to_serde(v)))
                .collect(),
        ),
    }
}

/// Numbers compared by value (serde_json may read `-0` as a float).
fn same(ours: &serde_json::Value, theirs: &serde_json::Value) -> bool {
    use serde_json::Value as J;
    match (ours, theirs) {
        (J::Number(a), J::Number(b)) => a.as_f64() == b.as_f64(),
        (J::Array(a), J::Array(b)) => {
            a.len() == b.len() && a.iter().zip(b).all(|(x, y)| same(x, y))
        }
        (J::Object(a), J::Object(b)) => {
            a.len() == b.len() && a.iter().all(|(k, v)| b.get(k).is_some_and(|w| same(v, w)))
        }
        _ => ours == theirs,
    }
}

/// Random JSON within the reader's subset: safe integers, any strings, unique keys.
fn json_value() -> impl Strategy<Value = serde_json::Value> {
    let leaf = prop_oneof![
        Just(serde_json::Value::Null),
        any::<bool>().prop_map(serde_json::Value::from),
        (-MAX_SAFE_INTEGER..=MAX_SAFE_INTEGER).prop_map(serde_json::Value::from),
        (-20i64..20).prop_map(serde_json::Value::from),
        text(0, 12).prop_map(serde_json::Value::from),
    ];
    leaf.prop_recursive(6, 64, 6, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..6).prop_map(serde_json::Value::Array),
            proptest::collection::btree_map(text(0, 6), inner, 0..6)
                .prop_map(|m| serde_json::Value::Object(m.into_iter().collect())),
        ]
    })
}

/// One mutation of a text: a byte replaced, inserted or removed, from bytes that matter to JSON.
fn mutation() -> impl Strategy<Value = (usize, u8, u8)> {
    let interesting = proptest::sample::select(
        b"{}[]:,\"\\ -+.0123456789eEtrufalsn\x00\x1f\x7f\xc3\xa9\xff\xed\xa0\x80u".to_vec(),
    );
    (any::<usize>(), 0u8..3, interesting)
}

fn mutate(mut bytes: Vec<u8>, mutations: &[(usize, u8, u8)]) -> Vec<u8> {
    for &(at, how, byte) in mutations {
        let at = if bytes.is_empty() {
            0
        } else {
            at % (bytes.len() + 1)
        };
        match how {
            0 if at < bytes.len() => bytes[at] = byte,
            1 => bytes.insert(at, byte),
            _ if at < bytes.len() => {
                bytes.remove(at);
            }
            _ => bytes.push(byte),
        }
    }
    bytes
}

/// Leaves of almost-JSON texts: valid ones, ones outside the subset, broken ones.
const LEAVES: &[&[u8]] = &[
    b"0",
    b"-0",
    b"7",
    b"-12",
    b"01",
    b"-",
    b"1.5",
    b"1.",
    b"1e3",
    b"2E-1",
    b".5",
    b"+1",
    b"9007199254740991",
    b"9007199254740992",
    b"-9007199254740991",
    b"123456789012345678901",
    b"true",
    b"false",
    b"null",
    b"tru",
    b"nul",
    b"\"\"",
    b"\"a\"",
    b"\"\\u00e9\\n\\/\"",
    b"\"\\ud83d\\ude00\"",
    b"\"\\ud800\"",
    b"\"\\udc00x\"",
    b"\"\\ud800\\u0041\"",
    b"\"\\x\"",
    b"\"\\u12",
    b"\"\\u12\"",
    b"\"\\",
    b"\"abc",
    b"\"\x01\"",
    b"\"\x7f\"",
    b"\"\xc3\xa9\"",
    b"\"\xff\"",
    b"\"\xed\xa0\x80\"",
    b"'a'",
    b"\xef\xbb\xbf1",
    b"",
    b" ",
];

/// Object keys, duplicates and broken ones included.
const KEYS: &[&[u8]] = &[b"\"a\"", b"\"b\"", b"\"\\u0061\"", b"a", b"1", b"\"c"];

/// Almost-JSON texts from a grammar that errs now and then: trailing or missing commas, broken
/// leaves, duplicate keys, missing colons, unclosed brackets, text after the value.
fn near_json() -> impl Strategy<Value = Vec<u8>> {
    let leaf = proptest::sample::select(LEAVES.to_vec()).prop_map(<[u8]>::to_vec);
    let separator = prop_oneof![8 => Just(&b","[..]), 1 => Just(&b" , "[..]), 1 => Just(&b""[..]), 1 => Just(&b",,"[..])];
    let close = |c: &'static [u8]| prop_oneof![12 => Just(c), 1 => Just(&b""[..])];
    let tree = leaf.prop_recursive(4, 32, 4, move |inner| {
        let array = (
            proptest::collection::vec(inner.clone(), 0..4),
            separator.clone(),
            proptest::bool::weighted(0.1),
            close(b"]"),
        )
            .prop_map(|(items, sep, trailing, close)| {
                let mut out = b"[".to_vec();
                out.extend(items.join(sep));
                if trailing {
                    out.push(b',');
                }
                out.extend_from_slice(close);
                out
            });
        let object = (
            proptest::collection::vec(
                (
                    proptest::sample::select(KEYS.to_vec()),
                    prop_oneof![10 => Just(&b":"[..]), 1 => Just(&b""[..])],
                    inner,
                ),
                0..4,
            ),
            separator.clone(),
            proptest::bool::weighted(0.1),
            close(b"}"),
        )
            .prop_map(|(members, sep, trailing, close)| {
                let members: Vec<Vec<u8>> = members
                    .into_iter()
                    .map(|(k, colon, v)| [k, colon, &v].concat())
                    .collect();
                let mut out = b"{".to_vec();
                out.extend(members.join(sep));
                if trailing {
                    out.push(b',');
                }
                out.extend_from_slice(close);
                out
            });
        prop_oneof![array, object]
    });
    (tree, prop_oneof![10 => Just(&b""[..]), 1 => Just(&b" \n"[..]), 1 => Just(&b" x"[..]), 1 => Just(&b"1"[..])])
        .prop_map(|(text, tail)| [text.as_slice(), tail].concat())
}

/// The differential rule: serde_json refuses → we refuse; we accept → serde_json reads the same
/// value; we call it a syntax error → serde_json refuses it too. Outside the subset (numbers that
/// are not safe integers, duplicate keys, limits) we may refuse what serde_json accepts.
fn agree(bytes: &[u8]) -> Result<(), TestCaseError> {
    let ours = wire_json::parse(bytes, &DIFF_LIMITS);
    let theirs = serde_json::from_slice::<serde_json::Value>(bytes);
    match (&ours, &theirs) {
        (Ok(a), Ok(b)) => prop_assert!(same(&to_serde(a), b), "{a:?} vs {b:?}"),
        (Ok(a), Err(e)) => prop_assert!(false, "we accepted {a:?}, serde_json refused: {e}"),
        (Err(e), Ok(_)) => prop_assert!(!e.is_syntax(), "we called valid JSON a syntax error: {e}"),
        (Err(_), Err(_)) => {}
    }
    Ok(())
}

proptest! {
    #![proptest_config(many_cases())]

    #[test]
    fn the_reader_reads_what_serde_json_writes(value in json_value(), pretty in any::<bool>()) {
        let text = if pretty { serde_json::to_string_pretty(&value) } else { serde_json::to_string(&value) }.unwrap();
        let ours = wire_json::parse(text.as_bytes(), &DIFF_LIMITS);
        prop_assert!(ours.is_ok(), "{:?}", ours);
        prop_assert!(same(&to_serde(&ours.unwrap()), &value));
    }

    #[test]
    fn the_reader_and_serde_json_agree_on_mutated_json(
        value in json_value(),
        mutations in proptest::collection::vec(mutation(), 1..4),
    ) {
        agree(&mutate(serde_json::to_vec(&value).unwrap(), &mutations))?;
    }

    #[test]
    fn the_reader_and_serde_json_agree_on_almost_json(text in near_json()) {
        agree(&text)?;
    }
}

// ---------------------------------------------------------------------------------------------
// Hostile input: never a panic, limits hold

proptest! {
    #![proptest_config(config())]

    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
        let _ = wire::decode_request(&bytes);
        let _ = wire::decode_pull_response(&bytes);
        let _ = wire::decode_push_response(&bytes, 3);
        let _ = wire::decode_error(&bytes);
        let _ = wire_json::parse(&bytes, &DIFF_LIMITS);
    }

    /// A valid body with one value replaced, removed or added: decoded again or refused with a
    /// 400/413 whose message quotes nothing of the body.
    #[test]
    fn mutated_requests_are_decoded_or_refused_without_quoting(
        request in request(),
        pick in any::<usize>(),
        how in 0u8..3,
        replacement in json_value(),
    ) {
        let mut body: serde_json::Value = serde_json::from_str(&wire::encode_request(&request)).unwrap();
        mutate_value(&mut body, pick, how, replacement);
        let text = serde_json::to_vec(&body).unwrap();
        match wire::decode_request(&text) {
            Ok(decoded) => {
                let canonical = wire::encode_request(&decoded);
                prop_assert_eq!(wire::decode_request(canonical.as_bytes()), Ok(decoded));
            }
            Err(error) => {
                prop_assert!(matches!(error.status(), 400 | 413), "{}", error);
                assert_quotes_nothing(&error, &body);
            }
        }
    }
}

/// Every path to a value inside `value`, as JSON pointers.
fn pointers(value: &serde_json::Value, at: String, out: &mut Vec<String>) {
    match value {
        serde_json::Value::Array(items) => {
            for (i, item) in items.iter().enumerate() {
                pointers(item, format!("{at}/{i}"), out);
            }
        }
        serde_json::Value::Object(members) => {
            for (k, v) in members {
                pointers(
                    v,
                    format!("{at}/{}", k.replace('~', "~0").replace('/', "~1")),
                    out,
                );
            }
        }
        _ => {}
    }
    out.push(at);
}

fn mutate_value(
    body: &mut serde_json::Value,
    pick: usize,
    how: u8,
    replacement: serde_json::Value,
) {
    let mut all = vec![];
    pointers(body, String::new(), &mut all);
    let at = &all[pick % all.len()];
    let Some(target) = body.pointer_mut(at) else {
        return;
    };
    match (how, target) {
        (0, target) => *target = replacement,
        (1, serde_json::Value::Object(members)) if !members.is_empty() => {
            let key = members.keys().nth(pick % members.len()).cloned().unwrap();
            members.remove(&key);
        }
        (_, serde_json::Value::Object(members)) => {
            members.insert("extraFieldMarker".into(), replacement);
        }
        (_, serde_json::Value::Array(items)) => items.push(replacement),
        (_, target) => *target = replacement,
    }
}

/// Words of the protocol itself, which a message may name; every other string of the body
/// (at least 4 bytes, so a digit or a short word does not match by chance) must not appear.
const VOCABULARY: &[&str] = &[
    "sync",
    "pull",
    "push",
    "vault",
    "kdf",
    "empty",
    "checkpoint",
    "limit",
    "fetch",
    "rows",
    "record",
    "meta",
    "gone",
    "kind",
    "deleted",
    "displaced",
    "settings",
    "password_identity",
    "tag",
    "dek",
    "identity",
    "state",
    "server",
    "seq",
    "key",
    "head",
    "value",
    "seal",
    "expires",
    "token",
    "objectType",
    "objectId",
    "passwordId",
    "createdAt",
    "updatedAt",
    "expiresAt",
    "softDeletedAt",
    "deletedAt",
    "reason",
    "emptied",
    "more",
    "remaining",
    "time",
    "stored",
    "superseded",
    "refused",
    "current",
    "error",
    "code",
    "message",
];

fn strings(value: &serde_json::Value, out: &mut Vec<String>) {
    match value {
        serde_json::Value::String(s) => out.push(s.clone()),
        serde_json::Value::Array(items) => items.iter().for_each(|v| strings(v, out)),
        serde_json::Value::Object(members) => {
            for (k, v) in members {
                out.push(k.clone());
                strings(v, out);
            }
        }
        _ => {}
    }
}

fn assert_quotes_nothing(error: &WireError, body: &serde_json::Value) {
    let message = error.message();
    let mut all = vec![];
    strings(body, &mut all);
    for s in all {
        if s.len() >= 4 && !VOCABULARY.contains(&s.as_str()) && !message.is_empty() {
            assert!(
                !message.contains(&s),
                "the message {message:?} quotes the body's {s:?}"
            );
        }
    }
}

#[test]
fn deep_nesting_is_refused_without_overflowing_the_stack() {
    for body in [
        "[".repeat(100_000).into_bytes(),
        "{\"a\":".repeat(100_000).into_bytes(),
        format!("{{\"sync\":1,\"op\":{}", "[".repeat(100_000)).into_bytes(),
    ] {
        let error = wire::decode_request(&body).unwrap_err();
        assert_eq!((error.status(), error.code()), (400, "INVALID_ARGUMENT"));
        assert!(error.message().contains("nested too deeply"), "{error}");
    }
}

#[test]
fn a_body_of_tiny_values_stops_at_the_value_limit() {
    // 4 MiB of `0,` is two million values: refused at the limit, not read into memory whole.
    let mut body = b"[".to_vec();
    while body.len() + 3 < MAX_BODY_BYTES as usize {
        body.extend_from_slice(b"0,");
    }
    body.extend_from_slice(b"0]");
    let error = wire::decode_request(&body).unwrap_err();
    assert_eq!(error.status(), 400);
    assert!(error.message().contains("too many values"), "{error}");
}

// ---------------------------------------------------------------------------------------------
// A table of hostile bodies

const KDF: &str = r#"{"alg":"pbkdf2-sha256","iterations":600000,"salt":"c2FsdHNhbHRzYWx0c2FsdA"}"#;
const ID: &str = "0123456789abcdef0123456789abcdef";
const PID: &str = "p_00112233445566778899aabbccddeeff";
const REV: &str = "0000018c2d5e1a2b0000a1b2c3d4e5f6";

fn rev_text() -> String {
    REV.to_owned()
}

fn envelope_text() -> String {
    format!("vs1:{}", Base64UrlUnpadded::encode_string(&[7u8; 64]))
}

fn record_row() -> serde_json::Value {
    json!({
        "t": "record", "id": ID, "token": "tk_SECRETMARKERTOKEN", "value": envelope_text(),
        "passwordId": PID, "createdAt": 1_700_000_000_000i64, "updatedAt": 1_700_000_000_001i64,
        "expiresAt": null, "softDeletedAt": null,
        "rev": {"value": rev_text(), "seal": rev_text(), "expires": rev_text(), "deleted": rev_text()},
    })
}

fn push_body(rows: Vec<serde_json::Value>) -> serde_json::Value {
    json!({"sync": 1, "op": "push", "vault": {"kdf": KDF, "empty": false}, "checkpoint": null, "rows": rows})
}

fn valid_push() -> serde_json::Value {
    push_body(vec![
        json!({"t": "meta", "objectType": "password_identity", "objectId": PID, "key": "tag",
               "value": "ab".repeat(32), "rev": rev_text()}),
        json!({"t": "meta", "objectType": "vault", "objectId": "settings", "key": "themeMarkerKey",
               "value": "SECRETMARKERSETTING", "rev": rev_text()}),
        record_row(),
        json!({"t": "gone", "kind": "record", "id": "f".repeat(32), "rev": rev_text(),
               "deletedAt": 5, "reason": "deleted"}),
    ])
}

/// `valid_push()` with `f` applied to it.
fn with(f: impl FnOnce(&mut serde_json::Value)) -> Vec<u8> {
    let mut body = valid_push();
    f(&mut body);
    serde_json::to_vec(&body).unwrap()
}

fn set(pointer: &str, value: serde_json::Value) -> impl FnOnce(&mut serde_json::Value) {
    let pointer = pointer.to_owned();
    move |body| *body.pointer_mut(&pointer).unwrap() = value
}

fn remove(pointer: &str, key: &str) -> impl FnOnce(&mut serde_json::Value) {
    let (pointer, key) = (pointer.to_owned(), key.to_owned());
    move |body| {
        body.pointer_mut(&pointer)
            .unwrap()
            .as_object_mut()
            .unwrap()
            .remove(&key);
    }
}

#[test]
fn the_valid_push_of_the_table_is_valid() {
    let Request::Push(push) = wire::decode_request(&with(|_| {})).unwrap() else {
        panic!("a push")
    };
    assert_eq!(push.rows.len(), 4);
}

#[test]
fn hostile_bodies_get_their_status_code_and_path() {
    let meta = |object_type: &str, object_id: &str, key: &str, value: &str| {
        json!({"t": "meta", "objectType": object_type, "objectId": object_id, "key": key,
               "value": value, "rev": rev_text()})
    };
    let many = |n: usize| {
        push_body(
            (0..n)
                .map(|i| {
                    let mut row = record_row();
                    row["id"] = json!(format!("{i:032x}"));
                    row
                })
                .collect(),
        )
    };
    let cases: Vec<(&str, Vec<u8>, u16, &str, &str)> = vec![
        (
            "not JSON",
            b"{\"sync\":1,SECRETMARKER".to_vec(),
            400,
            "INVALID_ARGUMENT",
            "not JSON",
        ),
        ("empty body", vec![], 400, "INVALID_ARGUMENT", "not JSON"),
        (
            "not UTF-8",
            b"{\"sync\":1,\"op\":\"\xff\"}".to_vec(),
            400,
            "INVALID_ARGUMENT",
            "UTF-8",
        ),
        (
            "a top-level array",
            b"[1]".to_vec(),
            400,
            "INVALID_ARGUMENT",
            "the body must be an object",
        ),
        (
            "duplicate keys",
            b"{\"sync\":1,\"sync\":1}".to_vec(),
            400,
            "INVALID_ARGUMENT",
            "same key twice",
        ),
        (
            "a float",
            with(set("/rows/2/createdAt", json!(1.5))),
            400,
            "INVALID_ARGUMENT",
            "integers",
        ),
        (
            "protocol 2",
            with(set("/sync", json!(2))),
            400,
            "UNSUPPORTED",
            "protocol 1",
        ),
        (
            "protocol as text",
            with(set("/sync", json!("1"))),
            400,
            "INVALID_ARGUMENT",
            "sync: must be",
        ),
        (
            "no version",
            with(remove("", "sync")),
            400,
            "INVALID_ARGUMENT",
            "sync: is missing",
        ),
        (
            "unknown op",
            with(set("/op", json!("SECRETMARKEROP"))),
            400,
            "INVALID_ARGUMENT",
            "op: must be",
        ),
        (
            "missing vault",
            with(remove("", "vault")),
            400,
            "INVALID_ARGUMENT",
            "vault: is missing",
        ),
        (
            "bad kdf",
            with(set("/vault/kdf", json!("{\"alg\":\"SECRETMARKER\"}"))),
            400,
            "INVALID_ARGUMENT",
            "vault.kdf:",
        ),
        (
            "empty as text",
            with(set("/vault/empty", json!("no"))),
            400,
            "INVALID_ARGUMENT",
            "vault.empty: must be true or false",
        ),
        (
            "extra top field",
            with(|b| {
                b["SECRETMARKERFIELD"] = json!(1);
            }),
            400,
            "INVALID_ARGUMENT",
            "the body has a field",
        ),
        (
            "extra row field",
            with(|b| {
                b["rows"][2]["SECRETMARKERFIELD"] = json!(1);
            }),
            400,
            "INVALID_ARGUMENT",
            "rows[2]: has a field",
        ),
        (
            "rows not an array",
            with(set("/rows", json!({}))),
            400,
            "INVALID_ARGUMENT",
            "rows: must be an array",
        ),
        (
            "a row not an object",
            with(set("/rows/1", json!("SECRETMARKERROW"))),
            400,
            "INVALID_ARGUMENT",
            "rows[1]: must be an object",
        ),
        (
            "unknown row type",
            with(set("/rows/0/t", json!("SECRETMARKERTYPE"))),
            400,
            "INVALID_ARGUMENT",
            "rows[0].t:",
        ),
        (
            "missing token",
            with(remove("/rows/2", "token")),
            400,
            "INVALID_ARGUMENT",
            "rows[2].token: is missing",
        ),
        (
            "empty token",
            with(set("/rows/2/token", json!(""))),
            400,
            "INVALID_ARGUMENT",
            "rows[2].token:",
        ),
        (
            "long token",
            with(set("/rows/2/token", json!("SECRETMARKER".repeat(30)))),
            400,
            "INVALID_ARGUMENT",
            "rows[2].token:",
        ),
        (
            "bad envelope",
            with(set("/rows/2/value", json!("vs1:SECRETMARKER"))),
            400,
            "INVALID_ARGUMENT",
            "rows[2].value: is not a well-formed vs1: envelope",
        ),
        (
            "plaintext value",
            with(set("/rows/2/value", json!("SECRETMARKERPLAINTEXT"))),
            400,
            "INVALID_ARGUMENT",
            "rows[2].value:",
        ),
        (
            "bad rev",
            with(set("/rows/2/rev/seal", json!("SECRETMARKERREV"))),
            400,
            "INVALID_ARGUMENT",
            "rows[2].rev.seal: a revision",
        ),
        (
            "uppercase rev",
            with(set(
                "/rows/3/rev",
                json!(rev_text().to_uppercase().replace('0', "A")),
            )),
            400,
            "INVALID_ARGUMENT",
            "rows[3].rev:",
        ),
        (
            "uppercase id",
            with(set("/rows/2/id", json!(ID.to_uppercase()))),
            400,
            "INVALID_ARGUMENT",
            "rows[2].id: a record id",
        ),
        (
            "short id",
            with(set("/rows/3/id", json!("abc123"))),
            400,
            "INVALID_ARGUMENT",
            "rows[3].id:",
        ),
        (
            "malformed link",
            with(set("/rows/2/passwordId", json!("p_SECRETMARKER"))),
            400,
            "INVALID_ARGUMENT",
            "rows[2].passwordId: an identity id",
        ),
        (
            "time past Date",
            with(set("/rows/2/expiresAt", json!(MAX_TIME_MS + 1))),
            400,
            "INVALID_ARGUMENT",
            "rows[2].expiresAt: is outside",
        ),
        (
            "time as text",
            with(set("/rows/2/createdAt", json!("SECRETMARKERTIME"))),
            400,
            "INVALID_ARGUMENT",
            "rows[2].createdAt: must be a time",
        ),
        (
            "bad tombstone reason",
            with(set("/rows/3/reason", json!("SECRETMARKERREASON"))),
            400,
            "INVALID_ARGUMENT",
            "rows[3].reason:",
        ),
        (
            "an emptied setting",
            with(|body| {
                body["rows"][3] = json!({"t": "gone", "kind": "meta", "objectType": "vault",
                    "objectId": "settings", "key": "themeMarkerKey", "rev": rev_text(),
                    "deletedAt": 5, "reason": "emptied"});
            }),
            400,
            "INVALID_ARGUMENT",
            "rows[3].reason: must be \"emptied\", on an identity's row only",
        ),
        (
            "an identity's row removed for another reason",
            with(|body| {
                body["rows"][3] = json!({"t": "gone", "kind": "meta",
                    "objectType": "password_identity", "objectId": PID, "key": "dek",
                    "rev": rev_text(), "deletedAt": 5, "reason": "SECRETMARKERREASON"});
            }),
            400,
            "INVALID_ARGUMENT",
            "rows[3].reason:",
        ),
        (
            "vault state row",
            with(set(
                "/rows/1",
                meta("vault", "state", "writes", "SECRETMARKERSTATE"),
            )),
            400,
            "INVALID_ARGUMENT",
            "rows[1].objectId: vault state rows are local",
        ),
        (
            "sync state row",
            with(set(
                "/rows/1",
                meta("sync", "state", "checkpoint", "SECRETMARKERSTATE"),
            )),
            400,
            "INVALID_ARGUMENT",
            "rows[1].objectType: sync state rows are local",
        ),
        (
            "kdf row",
            with(set("/rows/1", meta("vault", "settings", "kdf", KDF))),
            400,
            "INVALID_ARGUMENT",
            "rows[1].key: the kdf setting never travels",
        ),
        (
            "kdf tombstone",
            with(set(
                "/rows/1",
                json!({"t": "gone", "kind": "meta", "objectType": "vault", "objectId": "settings", "key": "kdf", "rev": rev_text(), "deletedAt": 1}),
            )),
            400,
            "INVALID_ARGUMENT",
            "rows[1].key: the kdf setting",
        ),
        (
            "link row",
            with(set(
                "/rows/1",
                meta("record", &format!("r_{ID}"), "password_id", PID),
            )),
            400,
            "INVALID_ARGUMENT",
            "rows[1].objectType: record links travel",
        ),
        (
            "unknown object type",
            with(set("/rows/1", meta("SECRETMARKERTYPE", "x", "y", "z"))),
            400,
            "INVALID_ARGUMENT",
            "rows[1].objectType: must be",
        ),
        (
            "bad identity id",
            with(set("/rows/0/objectId", json!("p_SECRETMARKER"))),
            400,
            "INVALID_ARGUMENT",
            "rows[0].objectId: an identity id",
        ),
        (
            "bad tag",
            with(set("/rows/0/value", json!("SECRETMARKERTAG"))),
            400,
            "INVALID_ARGUMENT",
            "rows[0].value: an identity tag",
        ),
        (
            "bad dek",
            with(set(
                "/rows/0",
                meta("password_identity", PID, "dek", "vs1k:SECRETMARKER"),
            )),
            400,
            "INVALID_ARGUMENT",
            "rows[0].value: an identity's dek",
        ),
        (
            "unknown identity key",
            with(set("/rows/0/key", json!("SECRETMARKERKEY"))),
            400,
            "INVALID_ARGUMENT",
            "rows[0].key: identity rows",
        ),
        (
            "meta value over 64 KiB",
            with(set("/rows/1/value", json!("SECRETMARKER".repeat(6_000)))),
            400,
            "INVALID_ARGUMENT",
            "rows[1].value: is longer than 64 KiB",
        ),
        (
            "the same row twice",
            with(|b| {
                let r = b["rows"][2].clone();
                b["rows"].as_array_mut().unwrap().push(r);
            }),
            400,
            "INVALID_ARGUMENT",
            "rows[4]: is the same row",
        ),
        (
            "a record and its tombstone",
            with(set("/rows/3/id", json!(ID))),
            400,
            "INVALID_ARGUMENT",
            "rows[3]: is the same row",
        ),
        (
            "too many rows",
            serde_json::to_vec(&many(MAX_PUSH_ROWS + 1)).unwrap(),
            413,
            "INVALID_ARGUMENT",
            "rows: holds more than 1000",
        ),
        (
            "body over 4 MiB",
            with(set(
                "/rows/2/token",
                json!("x".repeat(MAX_BODY_BYTES as usize)),
            )),
            413,
            "INVALID_ARGUMENT",
            "at most 4 MiB",
        ),
        (
            "pull with rows",
            with(set("/op", json!("pull"))),
            400,
            "INVALID_ARGUMENT",
            "limit: is missing",
        ),
        (
            "checkpoint of another shape",
            with(set(
                "/checkpoint",
                json!({"server": "s_SECRETMARKER", "seq": 1, "key": "", "head": ID}),
            )),
            400,
            "INVALID_ARGUMENT",
            "checkpoint.server:",
        ),
        (
            "negative checkpoint seq",
            with(set(
                "/checkpoint",
                json!({"server": format!("s_{ID}"), "seq": -1, "key": "", "head": ID}),
            )),
            400,
            "INVALID_ARGUMENT",
            "checkpoint.seq:",
        ),
        (
            "unsafe integer",
            with(set("/rows/2/createdAt", json!(9_007_199_254_740_992u64))),
            400,
            "INVALID_ARGUMENT",
            "safe range",
        ),
        (
            "lone surrogate",
            br#"{"sync":1,"op":"push\ud800"}"#.to_vec(),
            400,
            "INVALID_ARGUMENT",
            "lone surrogate",
        ),
    ];
    assert!(serde_json::to_vec(&many(MAX_PUSH_ROWS)).unwrap().len() < MAX_BODY_BYTES as usize);
    assert!(wire::decode_request(&serde_json::to_vec(&many(MAX_PUSH_ROWS)).unwrap()).is_ok());
    for (name, body, status, code, in_message) in cases {
        let error = wire::decode_request(&body).expect_err(name);
        assert_eq!(
            (error.status(), error.code()),
            (status, code),
            "{name}: {error}"
        );
        let message = error.message();
        assert!(
            message.contains(in_message),
            "{name}: {message:?} lacks {in_message:?}"
        );
        assert!(
            !message.contains("SECRETMARKER"),
            "{name}: {message:?} quotes the body"
        );
        if let Ok(body) = serde_json::from_slice::<serde_json::Value>(&body) {
            assert_quotes_nothing(&error, &body);
        }
        // The error body a handler sends is JSON a client reads back.
        let sent = wire::encode_error(&error);
        let read = wire::decode_error(sent.as_bytes()).expect(name);
        assert_eq!((read.code.as_str(), read.message), (code, message));
    }
}

#[test]
fn pull_pages_are_capped_on_both_sides() {
    let row = |i: usize| {
        let mut row = record_row();
        row["id"] = json!(format!("{i:032x}"));
        row["seq"] = json!(i);
        row
    };
    let page = |n: usize| {
        serde_json::to_vec(&json!({
            "sync": 1, "server": format!("s_{ID}"), "time": 1, "kdf": KDF, "reset": null,
            "rows": (0..n).map(row).collect::<Vec<_>>(),
            "checkpoint": {"server": format!("s_{ID}"), "seq": n, "key": "", "head": ID},
            "more": false, "remaining": 0,
        }))
        .unwrap()
    };
    assert_eq!(
        wire::decode_pull_response(&page(MAX_PULL_ROWS))
            .unwrap()
            .rows
            .len(),
        MAX_PULL_ROWS
    );
    let error = wire::decode_pull_response(&page(MAX_PULL_ROWS + 1)).unwrap_err();
    assert_eq!(
        (error.status(), error.message().as_str()),
        (
            413,
            "rows: holds more than 2000 entries; send smaller pages"
        )
    );
    let fetch = json!({"sync": 1, "op": "pull", "vault": {"kdf": KDF, "empty": true}, "checkpoint": null, "limit": 1,
        "fetch": (0..=MAX_PULL_ROWS).map(|i| format!("{i:032x}")).collect::<Vec<_>>()});
    assert_eq!(
        wire::decode_request(&serde_json::to_vec(&fetch).unwrap())
            .unwrap_err()
            .status(),
        413
    );
}
