//! Revisions and the hybrid logical clock that mints them (the module docs of [`crate::sync`] say
//! where each revision lives and how the conflict rule uses it).
//!
//! A [`Rev`] is 128 bits written as 32 lowercase hex digits: 48 bits of wall time in milliseconds
//! since the epoch, a 16-bit counter, a 64-bit node id. The width is fixed and the fields are most
//! significant first, so the order of the text (Rust `str`, SQL `<` on TEXT, IndexedDB keys) is
//! the order of the bytes is the order of the clock, `(wall, counter, node)`: a backend can compare
//! and index revisions as plain strings.

use crate::error::{Result, VaultError};
use std::fmt;
use std::str::FromStr;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Mutex, MutexGuard};

/// The greatest wall time a revision holds: 2^48 − 1 ms, in the year 10889. A clock (or an offset)
/// beyond it saturates there instead of wrapping.
pub const MAX_WALL_MS: u64 = (1 << 48) - 1;

/// The greatest counter: ticks past it within one millisecond advance the wall by 1 ms.
pub const MAX_COUNTER: u16 = u16::MAX;

/// Hex digits of a revision's text form.
pub const REV_LEN: usize = 32;

/// One revision of the hybrid logical clock: `(wall ms, counter, node id)`, ordered in that order.
#[derive(Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Rev(u128);

impl Rev {
    /// The revision before every other: rows whose value is a default no replica chose (the
    /// settings a fresh vault writes), so any real change, local or pulled, supersedes them.
    pub const ZERO: Rev = Rev(0);

    /// `None` when `wall_ms` exceeds [`MAX_WALL_MS`].
    pub fn new(wall_ms: u64, counter: u16, node: u64) -> Option<Rev> {
        (wall_ms <= MAX_WALL_MS).then_some(Rev::pack(wall_ms, counter, node))
    }

    /// The revision of a field written before revisions existed (a schema-1 row, a version-1
    /// snapshot): the record's `createdAt`, counter 0, node 0. `createdAt` never changes, so the
    /// revision is the same whenever and wherever it is read: two replicas built from one
    /// snapshot give every such field the same revision and have nothing to resolve, and a later
    /// write to one field of the row leaves the others' revisions as they were. Node 0 is never a
    /// live clock's ([`Hlc::new`]), so a synthesized revision never equals a real change's. Times
    /// outside `0..=MAX_WALL_MS` (a snapshot may carry any date) saturate.
    pub fn synthesized(created_at_ms: i64) -> Rev {
        Rev::pack(clamp_wall(created_at_ms), 0, 0)
    }

    /// `wall_ms` must be at most [`MAX_WALL_MS`]: more would spill past the 128 bits.
    const fn pack(wall_ms: u64, counter: u16, node: u64) -> Rev {
        Rev((wall_ms as u128) << 80 | (counter as u128) << 64 | node as u128)
    }

    pub fn wall_ms(self) -> u64 {
        (self.0 >> 80) as u64
    }

    /// The revision just before this one (`None` for [`Rev::ZERO`]): a version dated to come
    /// right before a change it must precede.
    pub fn predecessor(self) -> Option<Rev> {
        self.0.checked_sub(1).map(Rev)
    }

    pub fn counter(self) -> u16 {
        (self.0 >> 64) as u16
    }

    pub fn node(self) -> u64 {
        self.0 as u64
    }

    /// Strict: exactly [`REV_LEN`] lowercase hex digits, nothing around them. Every other spelling
    /// of the same number is refused, so equal revisions are always equal strings.
    pub fn parse(text: &str) -> std::result::Result<Rev, RevParseError> {
        let bytes = text.as_bytes();
        if bytes.len() != REV_LEN || !bytes.iter().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
            return Err(RevParseError);
        }
        // Checked above: 32 hex digits fit in 128 bits, so this cannot fail.
        u128::from_str_radix(text, 16)
            .map(Rev)
            .map_err(|_| RevParseError)
    }
}

impl fmt::Display for Rev {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:032x}", self.0)
    }
}

impl fmt::Debug for Rev {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Rev({self})")
    }
}

impl FromStr for Rev {
    type Err = RevParseError;

    fn from_str(text: &str) -> std::result::Result<Rev, RevParseError> {
        Rev::parse(text)
    }
}

/// A revision that is not 32 lowercase hex digits. Its message names no input: callers prefix
/// the field's path (`rows[3].rev: …`), which is all a sender needs to find it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RevParseError;

impl fmt::Display for RevParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a revision must be exactly 32 lowercase hexadecimal digits")
    }
}

impl std::error::Error for RevParseError {}

impl From<RevParseError> for VaultError {
    fn from(error: RevParseError) -> Self {
        VaultError::invalid(error.to_string())
    }
}

/// The clock reached [`MAX_WALL_MS`] with its counter spent: no greater revision exists. Only a
/// revision from the year 10889 can bring a clock there (a forged row it observed); refusing the
/// write is the one answer that keeps every revision this clock mints unique and increasing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClockExhausted;

impl fmt::Display for ClockExhausted {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(
            "the vault's clock has reached its last possible revision (year 10889), which only \
             a forged revision from a snapshot or a sync server can cause; nothing was written",
        )
    }
}

impl std::error::Error for ClockExhausted {}

impl From<ClockExhausted> for VaultError {
    fn from(error: ClockExhausted) -> Self {
        VaultError::storage(error.to_string())
    }
}

/// A hybrid logical clock (Kulkarni et al.; Evolu's `Timestamp`): the greatest of the physical
/// clock and every revision it minted or observed, plus a counter for changes within one
/// millisecond. One per open vault, shared by its concurrent calls, hence `&self` everywhere.
pub struct Hlc {
    state: Mutex<State>,
    /// Added to the physical clock before it enters a revision (drift correction, SYNC.md 4).
    offset_ms: AtomicI64,
}

/// Under one lock, so that [`Hlc::restart`] changes the node and the floor together.
#[derive(Debug)]
struct State {
    /// `(wall, counter)` of the greatest revision minted or observed.
    last: (u64, u16),
    node: u64,
}

impl Hlc {
    /// A clock with a fresh random node id. The id is per instance and never persisted: two tabs
    /// share one IndexedDB database, and a per-database id would let their two in-memory clocks
    /// mint equal revisions for different changes. Never 0, the node of synthesized revisions.
    pub fn new() -> Result<Hlc> {
        Ok(Hlc::with_node(random_node()?))
    }

    /// A clock with a chosen node id, for tests that need reproducible revisions.
    pub fn with_node(node: u64) -> Hlc {
        Hlc {
            state: Mutex::new(State { last: (0, 0), node }),
            offset_ms: AtomicI64::new(0),
        }
    }

    pub fn node(&self) -> u64 {
        self.state().node
    }

    /// The wall time of the greatest revision minted or observed: how far ahead this clock has
    /// run (drift correction compares it with a server's time).
    pub fn last_wall_ms(&self) -> u64 {
        self.state().last.0
    }

    /// A revision greater than every revision this clock minted or observed before: the wall is
    /// the greater of the last one and `now_ms + offset` (clamped to `0..=MAX_WALL_MS`), so a
    /// clock that goes back never makes revisions go back; within one millisecond the counter
    /// counts, and past [`MAX_COUNTER`] the wall moves 1 ms ahead of the physical clock (it comes
    /// back once the physical clock passes it).
    pub fn tick(&self, now_ms: i64) -> std::result::Result<Rev, ClockExhausted> {
        let physical = clamp_wall(now_ms.saturating_add(self.offset_ms()));
        let mut state = self.state();
        let (wall, counter) = state.last;
        let next = if physical > wall {
            (physical, 0)
        } else if counter < MAX_COUNTER {
            (wall, counter + 1)
        } else if wall < MAX_WALL_MS {
            (wall + 1, 0)
        } else {
            return Err(ClockExhausted);
        };
        state.last = next;
        // `next.0 <= MAX_WALL_MS` by every branch above.
        Ok(Rev::pack(next.0, next.1, state.node))
    }

    /// The receive rule: after observing `rev`, every [`Hlc::tick`] is greater than it, whatever
    /// the physical clock says. The vault observes every pulled row and, before a write that
    /// depends on a read, the revisions of what it read, so a change is always ordered after the
    /// change it replaces. Observing mints nothing, so it needs no physical time: the next tick
    /// reads it (hence no `now_ms` here, unlike the textbook rule, which mints on receipt).
    pub fn observe(&self, rev: Rev) {
        let mut state = self.state();
        let seen = (rev.wall_ms(), rev.counter());
        if seen > state.last {
            state.last = seen;
        }
    }

    /// Milliseconds added to the physical clock for revisions only (expiry and `createdAt` keep
    /// the local clock): set from the server's time when the local clock is off (SYNC.md 4).
    /// Lowering the offset never lowers revisions by itself: the wall still never goes back
    /// (see [`Hlc::restart`]).
    pub fn set_offset_ms(&self, offset_ms: i64) {
        self.offset_ms.store(offset_ms, Ordering::Relaxed);
    }

    pub fn offset_ms(&self) -> i64 {
        self.offset_ms.load(Ordering::Relaxed)
    }

    /// Forget every revision minted or observed and go on under a fresh random node id, as a
    /// newly opened vault does. For drift correction only: a clock that ran hours ahead keeps
    /// minting from the future wall of its last revision even once its offset is corrected, and
    /// the server refuses those. Lowering the floor alone would let this node mint a revision it
    /// already minted for another change, the one thing that must never happen (a tie between
    /// different changes); a new node id cannot repeat one. Revisions minted afterwards may be
    /// smaller than earlier ones: the caller re-stamps, in the same step, every local change that
    /// still carries a revision above the corrected clock (its unsynced rows), or those would
    /// beat the changes that follow them.
    pub fn restart(&self) -> Result<()> {
        let node = random_node()?;
        *self.state() = State { last: (0, 0), node };
        Ok(())
    }

    fn state(&self) -> MutexGuard<'_, State> {
        // Nothing panics while holding this lock; should anything ever, the state is still a
        // valid floor, so recover it rather than poison every later write of the vault.
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl fmt::Debug for Hlc {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = self.state();
        f.debug_struct("Hlc")
            .field("node", &format_args!("{:016x}", state.node))
            .field("last", &state.last)
            .field("offset_ms", &self.offset_ms())
            .finish()
    }
}

fn random_node() -> Result<u64> {
    loop {
        let mut bytes = [0u8; 8];
        crate::crypto::random_bytes(&mut bytes)?;
        let node = u64::from_be_bytes(bytes);
        if node != 0 {
            return Ok(node);
        }
    }
}

fn clamp_wall(ms: i64) -> u64 {
    (ms.max(0) as u64).min(MAX_WALL_MS)
}

#[cfg(test)]
mod tests {
    use super::*;

    const NODE: u64 = 0x0123_4567_89ab_cdef;

    #[test]
    fn the_predecessor_is_the_revision_just_before() {
        let rev = Rev::new(9, 3, NODE).unwrap();
        assert_eq!(rev.predecessor(), Rev::new(9, 3, NODE - 1));
        // Past a node and a counter of 0: the greatest of the wall time before.
        let first = Rev::new(9, 0, 0).unwrap();
        let before = first.predecessor().unwrap();
        assert_eq!(before, Rev::new(8, u16::MAX, u64::MAX).unwrap());
        assert!(before < first);
        assert_eq!(Rev::ZERO.predecessor(), None);
    }

    #[test]
    fn text_is_wall_counter_node_in_fixed_width() {
        let rev = Rev::new(0x0001_8c2f_5a10, 0x0007, NODE).unwrap();
        assert_eq!(rev.to_string(), "00018c2f5a1000070123456789abcdef");
        assert_eq!(Rev::ZERO.to_string(), "0".repeat(32));
        assert_eq!(
            Rev::new(MAX_WALL_MS, MAX_COUNTER, u64::MAX)
                .unwrap()
                .to_string(),
            "f".repeat(32)
        );
        assert_eq!(Rev::new(MAX_WALL_MS + 1, 0, 0), None);
    }

    #[test]
    fn parse_refuses_without_quoting_the_input() {
        let secret = "4111111111111111411111111111111X";
        let message = Rev::parse(secret).unwrap_err().to_string();
        assert!(!message.contains(secret) && !message.contains("4111"));
        let error: VaultError = Rev::parse(secret).unwrap_err().into();
        assert_eq!(error.code().as_str(), "INVALID_ARGUMENT");
        // `from_str_radix` alone would take a sign; the strict check must not.
        assert!(Rev::parse("+0000000000000000000000000000001").is_err());
    }

    #[test]
    fn counter_overflow_advances_the_wall_by_one_millisecond() {
        let clock = Hlc::with_node(NODE);
        clock.observe(Rev::new(1_000, MAX_COUNTER - 1, 0).unwrap());
        let a = clock.tick(1_000).unwrap();
        assert_eq!((a.wall_ms(), a.counter()), (1_000, MAX_COUNTER));
        let b = clock.tick(1_000).unwrap();
        assert_eq!((b.wall_ms(), b.counter(), b.node()), (1_001, 0, NODE));
        // Once the physical clock passes the advanced wall, it leads again.
        let c = clock.tick(5_000).unwrap();
        assert_eq!((c.wall_ms(), c.counter()), (5_000, 0));
    }

    #[test]
    fn wall_saturates_at_48_bits_then_the_clock_refuses() {
        let clock = Hlc::with_node(NODE);
        let a = clock.tick(i64::MAX).unwrap();
        assert_eq!((a.wall_ms(), a.counter()), (MAX_WALL_MS, 0));
        clock.set_offset_ms(i64::MAX);
        let b = clock.tick(i64::MAX).unwrap();
        assert_eq!((b.wall_ms(), b.counter()), (MAX_WALL_MS, 1));

        clock.observe(Rev::new(MAX_WALL_MS, MAX_COUNTER - 1, 0).unwrap());
        let last = clock.tick(0).unwrap();
        assert_eq!((last.wall_ms(), last.counter()), (MAX_WALL_MS, MAX_COUNTER));
        assert_eq!(clock.tick(0), Err(ClockExhausted));
        assert_eq!(clock.tick(i64::MAX), Err(ClockExhausted));
        let error: VaultError = ClockExhausted.into();
        assert_eq!(error.code().as_str(), "STORAGE");
    }

    #[test]
    fn negative_now_and_offset_count_from_zero() {
        let clock = Hlc::with_node(NODE);
        // A fresh clock starts at (0, 0), which it never mints: its first tick at time 0 counts.
        let a = clock.tick(-5).unwrap();
        assert_eq!((a.wall_ms(), a.counter()), (0, 1));
        let b = clock.tick(i64::MIN).unwrap();
        assert_eq!((b.wall_ms(), b.counter()), (0, 2));
        clock.set_offset_ms(i64::MIN);
        let c = clock.tick(i64::MAX).unwrap();
        assert_eq!((c.wall_ms(), c.counter()), (0, 3));
    }

    #[test]
    fn offset_moves_the_wall_and_never_back() {
        let clock = Hlc::with_node(NODE);
        clock.set_offset_ms(3_600_000);
        assert_eq!(clock.tick(1_000).unwrap().wall_ms(), 3_601_000);
        clock.set_offset_ms(-3_600_000);
        let after = clock.tick(2_000).unwrap();
        assert_eq!((after.wall_ms(), after.counter()), (3_601_000, 1));
    }

    #[test]
    fn synthesized_revisions_are_node_zero_and_saturate() {
        let rev = Rev::synthesized(1_700_000_000_000);
        assert_eq!(
            (rev.wall_ms(), rev.counter(), rev.node()),
            (1_700_000_000_000, 0, 0)
        );
        assert_eq!(Rev::synthesized(-1), Rev::ZERO);
        assert_eq!(Rev::synthesized(i64::MAX).wall_ms(), MAX_WALL_MS);
    }

    #[test]
    fn random_nodes_are_nonzero_and_differ() {
        let a = Hlc::new().unwrap();
        let b = Hlc::new().unwrap();
        assert_ne!(a.node(), 0);
        assert_ne!(a.node(), b.node());
    }

    #[test]
    fn restart_lowers_the_floor_under_a_new_node() {
        let clock = Hlc::with_node(NODE);
        let ahead = clock.tick(1_700_000_000_000 + 3 * 3_600_000).unwrap();
        clock.set_offset_ms(-3 * 3_600_000);
        // The offset alone cannot bring revisions back from the future...
        assert!(clock.tick(1_700_000_000_000 + 3 * 3_600_000 + 1).unwrap() > ahead);
        // ...a restart does, and no revision after it can equal one before it.
        clock.restart().unwrap();
        assert_ne!(clock.node(), NODE);
        let corrected = clock.tick(1_700_000_000_000 + 3 * 3_600_000 + 2).unwrap();
        assert_eq!(corrected.wall_ms(), 1_700_000_000_002);
        assert_eq!(corrected.node(), clock.node());
        assert_eq!(clock.offset_ms(), -3 * 3_600_000);
    }

    #[test]
    fn a_poisoned_lock_is_recovered() {
        let clock = std::sync::Arc::new(Hlc::with_node(NODE));
        let first = clock.tick(10).unwrap();
        let holder = clock.clone();
        let _ = std::thread::spawn(move || {
            let _guard = holder.state.lock().unwrap();
            panic!("poison the clock's lock");
        })
        .join();
        assert!(clock.state.is_poisoned());
        assert!(clock.tick(10).unwrap() > first);
    }
}
