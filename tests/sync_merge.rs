//! The laws sync's convergence rests on (SYNC.md 1 and 2), over random versions: the conflict rule
//! is commutative, associative and idempotent for records and meta rows, a tombstone absorbs, each
//! field follows its own revision; the hybrid logical clock only moves forward; a revision's text
//! has one spelling and sorts as the clock does.
//!
//! Revisions are drawn from a tiny space (a few walls, counters and nodes) so that equal revisions
//! on different bytes (forgeries, or bugs) come up in most cases.
//!
//! Fixed seed, 256 cases per law (about a second). A longer run, or another seed:
//! `PROPTEST_CASES=100000 cargo test --release --test sync_merge` (`PROPTEST_RNG_SEED=<n>` too).
#![cfg(not(target_arch = "wasm32"))]
#![allow(clippy::disallowed_methods)] // clippy.toml's one-sort rule is for the engine's download size

use proptest::prelude::*;
use proptest::test_runner::RngSeed;
use std::sync::Arc;
use vaultstore_wasm::sync::{
    Hlc, LiveRecord, MAX_COUNTER, MAX_WALL_MS, MetaVersion, RecordVersion, Rev, Side, TokenClaim,
    Tombstone, TombstoneReason, merge_identity_meta, merge_meta, merge_record, token_holder,
};

fn config() -> ProptestConfig {
    let mut config = ProptestConfig::default();
    if std::env::var_os("PROPTEST_RNG_SEED").is_none() {
        config.rng_seed = RngSeed::Fixed(14);
    }
    config
}

/// A revision from a space small enough that two fields often tie (a quarter of pairs for one
/// field, a sixteenth for the sealed value's two), and now and then any revision.
fn tight_rev() -> impl Strategy<Value = Rev> {
    prop_oneof![
        8 => (1u64..3, 1u64..3).prop_map(|(wall, node)| Rev::new(wall, 0, node).unwrap()),
        1 => any_rev(),
    ]
}

/// Any revision at all.
fn any_rev() -> impl Strategy<Value = Rev> {
    (0..=MAX_WALL_MS, any::<u16>(), any::<u64>())
        .prop_map(|(wall, counter, node)| Rev::new(wall, counter, node).unwrap())
}

fn small_time() -> impl Strategy<Value = i64> {
    0i64..3
}

fn live() -> impl Strategy<Value = LiveRecord> {
    (
        (
            prop_oneof![Just("tk_a"), Just("tk_b")],
            small_time(),
            small_time(),
        ),
        (
            prop_oneof![Just("vs1:x"), Just("vs1:y"), Just("vs1:z")],
            prop_oneof![Just(None), Just(Some("p_1")), Just(Some("p_2"))],
            tight_rev(),
            tight_rev(),
        ),
        (proptest::option::of(small_time()), tight_rev()),
        (proptest::option::of(small_time()), tight_rev()),
    )
        .prop_map(
            |(
                (token, created_at, updated_at),
                (value, password_id, value_rev, seal_rev),
                (expires_at, expires_rev),
                (soft_deleted_at, deleted_rev),
            )| LiveRecord {
                token: token.into(),
                created_at,
                updated_at,
                value: value.into(),
                password_id: password_id.map(Into::into),
                value_rev,
                seal_rev,
                expires_at,
                expires_rev,
                soft_deleted_at,
                deleted_rev,
            },
        )
}

fn tombstone() -> impl Strategy<Value = Tombstone> {
    (
        tight_rev(),
        small_time(),
        prop_oneof![
            Just(TombstoneReason::Deleted),
            Just(TombstoneReason::Displaced)
        ],
    )
        .prop_map(|(rev, deleted_at, reason)| Tombstone {
            rev,
            deleted_at,
            reason,
        })
}

fn record() -> impl Strategy<Value = RecordVersion> {
    prop_oneof![
        3 => live().prop_map(RecordVersion::Live),
        1 => tombstone().prop_map(RecordVersion::Gone),
    ]
}

fn meta() -> impl Strategy<Value = MetaVersion> {
    prop_oneof![
        (tight_rev(), prop_oneof![Just("a"), Just("b"), Just("")]).prop_map(|(rev, value)| {
            MetaVersion::Value {
                rev,
                value: value.into(),
            }
        }),
        (tight_rev(), small_time(), any::<bool>()).prop_map(|(rev, deleted_at, emptied)| {
            MetaVersion::Gone {
                rev,
                deleted_at,
                emptied,
            }
        }),
    ]
}

fn live_of(version: RecordVersion) -> LiveRecord {
    match version {
        RecordVersion::Live(live) => live,
        RecordVersion::Gone(_) => panic!("two live versions merged into a tombstone"),
    }
}

/// The fields of the sealed-value register, revisions included.
fn sealed(r: &LiveRecord) -> (&str, Option<&str>, Rev, Rev) {
    (&r.value, r.password_id.as_deref(), r.value_rev, r.seal_rev)
}

/// One step a vault instance's clock can see.
#[derive(Debug, Clone)]
enum ClockStep {
    Tick(i64),
    Observe(Rev),
    Offset(i64),
    Restart,
}

fn clock_step() -> impl Strategy<Value = ClockStep> {
    let now = prop_oneof![
        4 => 1_700_000_000_000i64..1_700_000_000_050, // a busy millisecond range
        1 => any::<i64>(),                            // anything, negative and beyond 2^48 included
        1 => Just(0i64),
    ];
    prop_oneof![
        6 => now.prop_map(ClockStep::Tick),
        // Below the last wall, so no sequence this short can spend the clock (that edge is a unit test).
        2 => (0..MAX_WALL_MS, any::<u16>(), any::<u64>())
            .prop_map(|(w, c, n)| ClockStep::Observe(Rev::new(w, c, n).unwrap())),
        1 => prop_oneof![any::<i64>(), -7_200_000i64..7_200_000].prop_map(ClockStep::Offset),
        1 => Just(ClockStep::Restart),
    ]
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn record_merge_is_commutative(a in record(), b in record()) {
        prop_assert_eq!(merge_record(&a, &b), merge_record(&b, &a));
    }

    #[test]
    fn record_merge_is_associative(a in record(), b in record(), c in record()) {
        prop_assert_eq!(
            merge_record(&merge_record(&a, &b), &c),
            merge_record(&a, &merge_record(&b, &c))
        );
    }

    #[test]
    fn record_merge_is_idempotent(a in record(), b in record()) {
        prop_assert_eq!(merge_record(&a, &a), a.clone());
        // Receiving a version again (a replayed page) changes nothing.
        let once = merge_record(&a, &b);
        prop_assert_eq!(merge_record(&once, &b), once.clone());
    }

    #[test]
    fn record_merge_is_order_free_over_many(versions in proptest::collection::vec(record(), 1..7), seed in any::<u64>()) {
        let mut shuffled = versions.clone();
        // A deterministic shuffle driven by the case's own seed.
        let mut state = seed | 1;
        for i in (1..shuffled.len()).rev() {
            state ^= state << 13; state ^= state >> 7; state ^= state << 17;
            shuffled.swap(i, (state % (i as u64 + 1)) as usize);
        }
        let fold = |list: &[RecordVersion]| {
            list[1..].iter().fold(list[0].clone(), |acc, v| merge_record(&acc, v))
        };
        prop_assert_eq!(fold(&versions), fold(&shuffled));
    }

    /// Absorption, exactly: for every tombstone `t` and every version `v`, `merge(t, v)` is a
    /// tombstone; it is `t` itself when `v` is live (whatever `v`'s revisions, greater included)
    /// or a tombstone not greater than `t` by (rev, deletedAt, reason); otherwise it is `v`. So a
    /// record once deleted anywhere stays deleted everywhere.
    #[test]
    fn a_tombstone_absorbs_every_live_version_and_every_lesser_tombstone(t in tombstone(), v in record()) {
        let gone = RecordVersion::Gone(t);
        let merged = merge_record(&gone, &v);
        let expected = match &v {
            RecordVersion::Live(_) => t,
            RecordVersion::Gone(u) if *u <= t => t,
            RecordVersion::Gone(u) => *u,
        };
        prop_assert_eq!(merged, RecordVersion::Gone(expected));
    }

    #[test]
    fn any_history_with_a_deletion_ends_deleted(
        before in proptest::collection::vec(record(), 0..4),
        t in tombstone(),
        after in proptest::collection::vec(live(), 0..4),
    ) {
        let mut history = before;
        history.push(RecordVersion::Gone(t));
        history.extend(after.into_iter().map(RecordVersion::Live));
        let merged = history[1..].iter().fold(history[0].clone(), |acc, v| merge_record(&acc, v));
        prop_assert!(matches!(merged, RecordVersion::Gone(_)), "{:?}", merged);
    }

    /// SYNC.md 2: per field, the greater revision wins, and a field's value travels with its
    /// revisions (no mixing of one version's envelope with another's key or revision).
    #[test]
    fn each_field_goes_to_its_greater_revision(a in live(), b in live()) {
        let m = live_of(merge_record(&RecordVersion::Live(a.clone()), &RecordVersion::Live(b.clone())));
        prop_assert!(sealed(&m) == sealed(&a) || sealed(&m) == sealed(&b));
        prop_assert_eq!((m.value_rev, m.seal_rev), (a.value_rev, a.seal_rev).max((b.value_rev, b.seal_rev)));
        if (a.value_rev, a.seal_rev) != (b.value_rev, b.seal_rev) {
            let winner = if (a.value_rev, a.seal_rev) > (b.value_rev, b.seal_rev) { &a } else { &b };
            prop_assert_eq!(sealed(&m), sealed(winner));
        }
        prop_assert!((m.expires_at, m.expires_rev) == (a.expires_at, a.expires_rev)
            || (m.expires_at, m.expires_rev) == (b.expires_at, b.expires_rev));
        prop_assert_eq!(m.expires_rev, a.expires_rev.max(b.expires_rev));
        if a.expires_rev != b.expires_rev {
            let winner = if a.expires_rev > b.expires_rev { &a } else { &b };
            prop_assert_eq!(m.expires_at, winner.expires_at);
        }
        prop_assert!((m.soft_deleted_at, m.deleted_rev) == (a.soft_deleted_at, a.deleted_rev)
            || (m.soft_deleted_at, m.deleted_rev) == (b.soft_deleted_at, b.deleted_rev));
        prop_assert_eq!(m.deleted_rev, a.deleted_rev.max(b.deleted_rev));
        if a.deleted_rev != b.deleted_rev {
            let winner = if a.deleted_rev > b.deleted_rev { &a } else { &b };
            prop_assert_eq!(m.soft_deleted_at, winner.soft_deleted_at);
        }
        prop_assert_eq!(m.updated_at, a.updated_at.max(b.updated_at));
    }

    /// Registers merge independently: changing only one side's expiry (a renew nobody else saw)
    /// changes nothing in the merge but the expiry; the same for its soft deletion and for its
    /// sealed value (an edit or re-seal). Token and times never follow any of them.
    #[test]
    fn fields_merge_independently(
        a in live(), b in live(),
        expiry in (proptest::option::of(small_time()), tight_rev()),
        deletion in (proptest::option::of(small_time()), tight_rev()),
        seal in (prop_oneof![Just("vs1:x"), Just("vs1:w")], prop_oneof![Just(None), Just(Some("p_1"))], tight_rev(), tight_rev()),
    ) {
        let merge = |x: &LiveRecord| live_of(merge_record(&RecordVersion::Live(x.clone()), &RecordVersion::Live(b.clone())));
        let base = merge(&a);
        let expiry_of = |r: &LiveRecord| (r.expires_at, r.expires_rev);
        let deletion_of = |r: &LiveRecord| (r.soft_deleted_at, r.deleted_rev);
        let rest_of = |r: &LiveRecord| (r.token.clone(), r.created_at, r.updated_at);

        let mut renewed = a.clone();
        (renewed.expires_at, renewed.expires_rev) = expiry;
        let m = merge(&renewed);
        prop_assert_eq!(sealed(&m), sealed(&base));
        prop_assert_eq!(deletion_of(&m), deletion_of(&base));
        prop_assert_eq!(rest_of(&m), rest_of(&base));

        let mut trashed = a.clone();
        (trashed.soft_deleted_at, trashed.deleted_rev) = deletion;
        let m = merge(&trashed);
        prop_assert_eq!(sealed(&m), sealed(&base));
        prop_assert_eq!(expiry_of(&m), expiry_of(&base));
        prop_assert_eq!(rest_of(&m), rest_of(&base));

        let mut resealed = a.clone();
        let (value, password_id, value_rev, seal_rev) = seal;
        (resealed.value, resealed.password_id) = (value.into(), password_id.map(Into::into));
        (resealed.value_rev, resealed.seal_rev) = (value_rev, seal_rev);
        let m = merge(&resealed);
        prop_assert_eq!(expiry_of(&m), expiry_of(&base));
        prop_assert_eq!(deletion_of(&m), deletion_of(&base));
        prop_assert_eq!(rest_of(&m), rest_of(&base));
    }

    #[test]
    fn meta_merge_is_commutative(a in meta(), b in meta()) {
        prop_assert_eq!(merge_meta(&a, &b), merge_meta(&b, &a));
    }

    #[test]
    fn meta_merge_is_associative(a in meta(), b in meta(), c in meta()) {
        prop_assert_eq!(merge_meta(&merge_meta(&a, &b), &c), merge_meta(&a, &merge_meta(&b, &c)));
    }

    #[test]
    fn meta_merge_is_idempotent(a in meta(), b in meta()) {
        prop_assert_eq!(merge_meta(&a, &a), a.clone());
        let once = merge_meta(&a, &b);
        prop_assert_eq!(merge_meta(&once, &b), once.clone());
    }

    #[test]
    fn identity_merge_is_commutative_associative_and_idempotent(a in meta(), b in meta(), c in meta()) {
        let m = merge_identity_meta;
        prop_assert_eq!(m(&a, &b), m(&b, &a));
        prop_assert_eq!(m(&m(&a, &b), &c), m(&a, &m(&b, &c)));
        prop_assert_eq!(m(&a, &a), a.clone());
        prop_assert_eq!(m(&m(&a, &b), &b), m(&a, &b));
    }

    /// An identity's removal is final: it beats a live version, and an emptied removal,
    /// whatever the revisions; between two of a kind the greater revision wins, as for any meta
    /// row. An emptied removal (its last record deleted) is one more version: a later write
    /// of the row beats it.
    #[test]
    fn an_identity_rows_removal_beats_every_live_version(a in meta(), b in meta()) {
        let merged = merge_identity_meta(&a, &b);
        let retired = |v: &MetaVersion| matches!(v, MetaVersion::Gone { emptied: false, .. });
        match (retired(&a), retired(&b)) {
            (true, false) => prop_assert_eq!(merged, a),
            (false, true) => prop_assert_eq!(merged, b),
            _ => prop_assert_eq!(merged, merge_meta(&a, &b)),
        }
    }

    #[test]
    fn meta_greater_revision_wins_deletions_included(a in meta(), b in meta()) {
        let merged = merge_meta(&a, &b);
        prop_assert!(merged == a || merged == b);
        if a.rev() != b.rev() {
            prop_assert_eq!(merged, if a.rev() > b.rev() { a } else { b });
        }
    }

    #[test]
    fn first_creator_keeps_a_custom_token_in_any_order(
        claims in proptest::collection::btree_map("[0-9a-f]{4}", 0i64..3, 2..6),
    ) {
        let claims: Vec<TokenClaim> = claims.iter().map(|(id, at)| TokenClaim { id, created_at: *at }).collect();
        let earliest = claims.iter().min_by_key(|c| (c.created_at, c.id)).unwrap();
        for order in [claims.clone(), claims.iter().rev().copied().collect()] {
            let holder = order[1..].iter().fold(order[0], |held, c| match token_holder(held, *c) {
                Side::A => held,
                Side::B => *c,
            });
            prop_assert_eq!(holder, *earliest);
        }
    }

    /// Every revision a clock mints is greater than all it minted and all it observed since it
    /// started (or restarted), whatever the physical clock does (backwards, negative, beyond
    /// 2^48 ms) and whatever offset drift correction sets; and no two revisions it ever mints,
    /// across restarts, are equal.
    #[test]
    fn ticks_strictly_increase_past_everything_seen(steps in proptest::collection::vec(clock_step(), 1..80)) {
        let clock = Hlc::with_node(7);
        let mut floor: Option<Rev> = None;
        let mut minted = std::collections::BTreeSet::new();
        for step in steps {
            match step {
                ClockStep::Tick(now) => {
                    let rev = clock.tick(now).expect("a clock far from 2^48 ms is never spent");
                    prop_assert_eq!(rev.node(), clock.node());
                    if let Some(floor) = floor {
                        prop_assert!(rev > floor, "{:?} after {:?}", rev, floor);
                    }
                    prop_assert!(minted.insert(rev), "{:?} minted twice", rev);
                    floor = Some(rev);
                }
                ClockStep::Observe(rev) => {
                    clock.observe(rev);
                    floor = floor.max(Some(rev));
                }
                ClockStep::Offset(offset) => clock.set_offset_ms(offset),
                ClockStep::Restart => {
                    clock.restart().unwrap();
                    floor = None;
                }
            }
        }
    }

    #[test]
    fn observe_then_tick_is_after_the_observed(observed in any_rev(), now in any::<i64>(), node in any::<u64>()) {
        prop_assume!((observed.wall_ms(), observed.counter()) != (MAX_WALL_MS, MAX_COUNTER));
        let clock = Hlc::with_node(node);
        clock.observe(observed);
        let rev = clock.tick(now).unwrap();
        prop_assert!(rev > observed);
        // ... and no later than the physical clock lets it be: the observed time, plus one
        // millisecond if its counter was spent.
        let physical = now.clamp(0, MAX_WALL_MS as i64) as u64;
        prop_assert!(rev.wall_ms() <= physical.max(observed.wall_ms() + 1));
    }

    #[test]
    fn text_order_is_clock_order(a in any_rev(), b in any_rev()) {
        let by_text = a.to_string().cmp(&b.to_string());
        prop_assert_eq!(by_text, a.cmp(&b));
        prop_assert_eq!(a.to_string().as_bytes().cmp(b.to_string().as_bytes()), a.cmp(&b));
        prop_assert_eq!(
            by_text,
            (a.wall_ms(), a.counter(), a.node()).cmp(&(b.wall_ms(), b.counter(), b.node()))
        );
    }

    #[test]
    fn text_round_trips_in_one_spelling(rev in any_rev()) {
        let text = rev.to_string();
        prop_assert_eq!(text.len(), 32);
        prop_assert!(text.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)));
        prop_assert_eq!(Rev::parse(&text), Ok(rev));
        prop_assert_eq!(text.parse::<Rev>(), Ok(rev));
        prop_assert_eq!(Rev::new(rev.wall_ms(), rev.counter(), rev.node()), Some(rev));
    }

    #[test]
    fn parse_refuses_every_other_spelling(
        rev in any_rev(),
        at in 0usize..32,
        upper in "[A-F]",
        extra in "[0-9a-f]",
        junk in prop_oneof![Just(" ".to_string()), "[g-zG-Z+\\-_.:x]", "[^\\x00-\\x7f]", Just("\u{0}".to_string())],
    ) {
        let text = rev.to_string();
        let with = |i: usize, s: &str| format!("{}{}{}", &text[..i], s, &text[i + 1..]);
        let uppercase = with(at, &upper);
        let short = format!("{}{}", &text[..at], &text[at + 1..]);
        let long = format!("{}{}{}", &text[..at], extra, &text[at..]);
        let non_hex = with(at, &junk);
        let padded = format!("{junk}{text}");
        for bad in [uppercase, short, long, non_hex, padded, text.to_uppercase(), format!("0x{}", &text[2..])] {
            if bad == text {
                continue; // `to_uppercase` of an all-digit revision
            }
            prop_assert!(Rev::parse(&bad).is_err(), "accepted {:?}", bad);
        }
    }
}

#[test]
fn concurrent_ticks_on_one_clock_are_all_distinct() {
    let clock = Arc::new(Hlc::with_node(3));
    let threads: Vec<_> = (0..4)
        .map(|_| {
            let clock = clock.clone();
            std::thread::spawn(move || {
                (0..2_000)
                    .map(|_| clock.tick(1_000).unwrap())
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    let mut all: Vec<Rev> = threads
        .into_iter()
        .flat_map(|t| t.join().unwrap())
        .collect();
    let count = all.len();
    all.sort();
    all.dedup();
    assert_eq!(all.len(), count);
}

#[test]
fn two_clocks_never_mint_one_revision() {
    let (a, b) = (Hlc::new().unwrap(), Hlc::new().unwrap());
    for now in [5, 5, 4, 6, 6] {
        assert_ne!(a.tick(now).unwrap(), b.tick(now).unwrap());
    }
}

#[test]
fn replicas_of_one_snapshot_synthesize_equal_revisions() {
    // A schema-1 row read on two replicas: equal, so merging them is a no-op.
    let row = |rev| LiveRecord {
        token: "tk_x".into(),
        created_at: 1_000,
        updated_at: 2_000,
        value: "vs1:x".into(),
        password_id: None,
        value_rev: rev,
        seal_rev: rev,
        expires_at: None,
        expires_rev: rev,
        soft_deleted_at: None,
        deleted_rev: rev,
    };
    let here = RecordVersion::Live(row(Rev::synthesized(2_000)));
    let there = RecordVersion::Live(row(Rev::synthesized(2_000)));
    assert_eq!(merge_record(&here, &there), here);
    // And any real change after it wins.
    let clock = Hlc::with_node(1);
    assert!(clock.tick(0).unwrap() < Rev::synthesized(2_000));
    clock.observe(Rev::synthesized(2_000));
    assert!(clock.tick(0).unwrap() > Rev::synthesized(2_000));
}
