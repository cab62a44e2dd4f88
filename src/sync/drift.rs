//! Clock drift (SYNC.md 4): a replica whose clock is hours off still converges and does not stall
//! the others.
//!
//! A server refuses revisions more than [`MAX_FUTURE_MS`] ahead of its clock (`rev_in_future`),
//! so a replica that runs fast cannot make its changes win for hours over everyone else's. Each
//! pull response carries the server's `time`; the replica measures its offset from it as
//! Cristian's algorithm does (the server's time against the midpoint of the request's round trip)
//! and, when it is more than [`DRIFT_TOLERANCE_MS`] off, stamps later revisions with the corrected
//! clock ([`crate::sync::Hlc::set_offset_ms`]). A slow clock is thus corrected too: its offline
//! changes no longer lose to changes made earlier in real time.
//!
//! A fast clock has also already stamped changes the server would refuse. When the clock's last
//! revision is near the server's limit, the replica restarts its clock ([`Hlc::restart`]: a new
//! node id, so no revision repeats) and **re-stamps** its unsynced changes that carry such
//! revisions ([`restamp`]): each register whose revision is too far ahead gets a fresh one from
//! the corrected clock, in the order the old ones had. Re-stamping keeps every change; what it
//! gives up is only the order a fast clock claimed over changes made elsewhere, which is the
//! point. (A re-stamped change that replaced a row a replica up to 5 minutes ahead wrote may now
//! lose to that row; the sync counts it in `conflicts`.) Rows already accepted by the server are
//! never re-stamped: they were within its limit.
//!
//! [`Hlc::restart`]: crate::sync::Hlc::restart
//! [`MAX_FUTURE_MS`]: crate::sync::plan::MAX_FUTURE_MS

use super::merge::{MetaVersion, RecordVersion, Row};
use super::plan::MAX_FUTURE_MS;
use super::rev::Rev;
use std::collections::BTreeMap;

/// How far a replica's clock may be from the server's before revisions are stamped with the
/// correction: within it, the local clock is trusted (network delay alone makes the measurement
/// this uncertain, and honest clocks are well within it).
pub const DRIFT_TOLERANCE_MS: i64 = 60_000;

/// The offset to add to the local clock for revisions: the server's `server_time` against the
/// midpoint of the local times the request was sent and its answer received; `0` within
/// [`DRIFT_TOLERANCE_MS`] (and when the local clock went back during the exchange, which tells
/// nothing).
pub fn offset_ms(server_time: i64, sent_at: i64, received_at: i64) -> i64 {
    if received_at < sent_at {
        return 0;
    }
    let midpoint = sent_at.saturating_add((received_at - sent_at) / 2);
    let offset = server_time.saturating_sub(midpoint);
    if offset.saturating_abs() <= DRIFT_TOLERANCE_MS {
        0
    } else {
        offset
    }
}

/// The wall time above which a replica's revisions are re-stamped, given the server's `time`:
/// [`DRIFT_TOLERANCE_MS`] short of the server's limit, so the re-stamped rows are accepted even if
/// the push reaches the server a little later or its clock steps back a little.
pub fn restamp_above(server_time: i64) -> u64 {
    let limit = server_time
        .saturating_add(MAX_FUTURE_MS)
        .saturating_sub(DRIFT_TOLERANCE_MS);
    u64::try_from(limit).unwrap_or(0)
}

/// `row` with every revision whose wall time is above `above` replaced by a fresh one from
/// `fresh`, or `None` when it has none. Fresh revisions are drawn in the order of the revisions
/// they replace, and equal revisions get one fresh revision (a record's edit sets `valueRev` and
/// `sealRev` alike; they stay alike), so the row's own registers keep their relative order.
pub fn restamp<E>(
    row: &Row,
    above: u64,
    mut fresh: impl FnMut() -> Result<Rev, E>,
) -> Result<Option<Row>, E> {
    let far = |rev: Rev| rev.wall_ms() > above;
    let mut revs: Vec<Rev> = super::plan::revs_of(row)
        .into_iter()
        .filter(|r| far(*r))
        .collect();
    if revs.is_empty() {
        return Ok(None);
    }
    crate::sorting::sort(&mut revs);
    revs.dedup();
    let mut new: BTreeMap<Rev, Rev> = BTreeMap::new();
    for old in revs {
        new.insert(old, fresh()?);
    }
    let map = |rev: Rev| new.get(&rev).copied().unwrap_or(rev);
    let mut row = row.clone();
    match &mut row {
        Row::Record { version, .. } => match version {
            RecordVersion::Live(live) => {
                live.value_rev = map(live.value_rev);
                live.seal_rev = map(live.seal_rev);
                live.expires_rev = map(live.expires_rev);
                live.deleted_rev = map(live.deleted_rev);
            }
            RecordVersion::Gone(gone) => gone.rev = map(gone.rev),
        },
        Row::Meta { version, .. } => match version {
            MetaVersion::Value { rev, .. } | MetaVersion::Gone { rev, .. } => *rev = map(*rev),
        },
    }
    Ok(Some(row))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::MetaKey;
    use crate::sync::merge::LiveRecord;

    const HOUR: i64 = 3_600_000;

    fn rev(wall: u64, counter: u16) -> Rev {
        Rev::new(wall, counter, 7).unwrap()
    }

    #[test]
    fn offsets_within_the_tolerance_are_ignored() {
        assert_eq!(
            offset_ms(1_000_000, 1_000_000 - 50_000, 1_000_000 - 40_000),
            0
        );
        assert_eq!(
            offset_ms(1_000_000, 1_000_000 + 59_000, 1_000_000 + 61_000),
            0
        );
    }

    #[test]
    fn offsets_are_measured_from_the_midpoint_of_the_round_trip() {
        let server = 10 * HOUR;
        // The local clock runs two hours fast; the request took 400 ms.
        let sent = server + 2 * HOUR - 200;
        assert_eq!(offset_ms(server, sent, sent + 400), -2 * HOUR);
        // Three hours slow.
        let sent = server - 3 * HOUR - 100;
        assert_eq!(offset_ms(server, sent, sent + 200), 3 * HOUR);
        // A local clock that went back meanwhile measures nothing.
        assert_eq!(offset_ms(server, sent, sent - 1), 0);
        // Extremes saturate instead of overflowing.
        assert_eq!(offset_ms(i64::MAX, i64::MIN, i64::MIN), i64::MAX);
    }

    fn live(value_rev: Rev, seal_rev: Rev, expires_rev: Rev, deleted_rev: Rev) -> Row {
        Row::Record {
            id: "0".repeat(32),
            version: RecordVersion::Live(LiveRecord {
                token: "t".into(),
                created_at: 1,
                updated_at: 2,
                value: "vs1:x".into(),
                password_id: None,
                value_rev,
                seal_rev,
                expires_at: None,
                expires_rev,
                soft_deleted_at: None,
                deleted_rev,
            }),
        }
    }

    #[test]
    fn only_revisions_above_the_limit_are_replaced_in_their_order() {
        let above = restamp_above(10 * HOUR);
        assert_eq!(above, (10 * HOUR + 4 * 60_000) as u64);
        let far = (13 * HOUR) as u64;
        let near = (10 * HOUR) as u64;
        // An edit (value = seal) at two fast-clock revisions, an expiry within the limit.
        let row = live(rev(far, 1), rev(far, 1), rev(near, 0), rev(far, 0));
        let mut next = 0u16;
        let restamped = restamp(&row, above, || {
            next += 1;
            Ok::<_, ()>(Rev::new(near + 5, next, 9).unwrap())
        })
        .unwrap()
        .unwrap();
        let Row::Record {
            version: RecordVersion::Live(out),
            ..
        } = restamped
        else {
            panic!("a live record stays live");
        };
        // deleted_rev (far, 0) < value_rev (far, 1): drawn first.
        assert_eq!(out.deleted_rev, Rev::new(near + 5, 1, 9).unwrap());
        assert_eq!(out.value_rev, Rev::new(near + 5, 2, 9).unwrap());
        assert_eq!(
            out.seal_rev, out.value_rev,
            "an edit's two revisions stay one"
        );
        assert_eq!(out.expires_rev, rev(near, 0), "within the limit: kept");
        assert_eq!(out.value, "vs1:x");
    }

    #[test]
    fn rows_within_the_limit_are_left_alone() {
        let near = (10 * HOUR) as u64;
        let row = live(rev(near, 0), rev(near, 0), rev(near, 0), rev(near, 0));
        let out = restamp(&row, restamp_above(10 * HOUR), || -> Result<Rev, ()> {
            panic!("nothing to re-stamp")
        });
        assert_eq!(out, Ok(None));
        let meta = Row::Meta {
            key: MetaKey::new("vault", "settings", "k"),
            version: MetaVersion::Gone {
                rev: rev((12 * HOUR) as u64, 0),
                deleted_at: 5,
                emptied: false,
            },
        };
        let out = restamp(&meta, restamp_above(10 * HOUR), || {
            Ok::<_, ()>(rev(near, 3))
        })
        .unwrap()
        .unwrap();
        assert_eq!(
            out,
            Row::Meta {
                key: MetaKey::new("vault", "settings", "k"),
                version: MetaVersion::Gone {
                    rev: rev(near, 3),
                    deleted_at: 5,
                    emptied: false,
                }
            }
        );
    }
}
