//! The sync wire format, protocol version 1: typed messages and their codec, for the client
//! (`encode_request`, `decode_pull_response`, `decode_push_response`, `decode_error`) and for the
//! server (`decode_request`, `encode_pull_response`, `encode_push_response`, `encode_error`).
//! Pure: no storage, no I/O, no key. Every message is checked in full when it is decoded; what
//! needs the vault's rows (a link to an unknown identity, a changed immutable) is the engine's.
//!
//! The format itself (transport, requests, rows, responses, checkpoints, errors, limits) is
//! stated once, in FORMAT.md "Sync"; the items below carry its limits as constants.
//!
//! # Versioning
//! This is protocol 1. A change of any message's shape or meaning takes a new number; a server
//! answers a number it does not speak with `400 UNSUPPORTED`, which a client reports as
//! `STORAGE` telling the user to update.

use super::json::{self, JsonError, Limits, Value};
pub use super::merge::{Change, Row};
use super::merge::{LiveRecord, MetaVersion, RecordVersion, Tombstone, TombstoneReason};
use super::rev::Rev;
use crate::crypto::{Envelope, IDENTITY_ID_PREFIX, is_identity_id, is_lower_hex, is_wrapped_dek};
use crate::json::write_str;
use crate::record::MAX_TIME_MS;
use crate::storage::{DEK_KEY, MetaKey, OWNER_KEY, STATE_ID, TAG_KEY, object_type};
use crate::token;
use std::collections::HashSet;
use std::fmt::{self, Write as _};

/// The protocol version this module speaks (`"sync"` in every message).
pub const PROTOCOL: i64 = 1;

/// The largest request or response body, in bytes.
pub const MAX_BODY_BYTES: u64 = 4 << 20;

/// The most rows of one pull response (and ids of one pull's `fetch`).
pub const MAX_PULL_ROWS: usize = 2_000;

/// The most rows of one push request.
pub const MAX_PUSH_ROWS: usize = 1_000;

/// The rows of one page, in encoded bytes: pages are cut here as well as at their row limits, so
/// a page of large values stays under [`MAX_BODY_BYTES`] with room for the rest of the message
/// (a push response may send rows back, `superseded` and `refused`, up to its own page's size).
pub const PAGE_BUDGET_BYTES: usize = 3 << 20;

/// The bytes `row` takes in a message (with its `seq` in a pull response), its separator
/// included: what a page's [`PAGE_BUDGET_BYTES`] counts.
pub fn encoded_row_len(row: &Row, seq: Option<u64>) -> usize {
    let mut out = String::new();
    write_row(&mut out, row, seq);
    out.len() + 1
}

/// The longest meta row value, in UTF-8 bytes.
pub const MAX_META_VALUE_BYTES: usize = 64 << 10;

/// The longest checkpoint `key`, in UTF-8 bytes.
pub const MAX_CHECKPOINT_KEY_BYTES: usize = 1_024;

/// The JSON limits of a body: deep enough for every message, with room for a few more levels.
const JSON_LIMITS: Limits = Limits {
    max_depth: 16,
    max_string_bytes: MAX_BODY_BYTES as usize,
    max_values: 200_000,
};

const SETTINGS_ID: &str = "settings";
const KDF_KEY: &str = "kdf";

// ---------------------------------------------------------------------------------------------
// Messages

/// How a replica describes its vault in every request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VaultInfo {
    /// The vault's `kdf` settings row, as stored (checked like one).
    pub kdf: String,
    /// No record, identity or tombstone.
    pub empty: bool,
}

/// Where a replica's last pull ended, as the server wrote it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checkpoint {
    /// `s_` and 32 lowercase hex digits.
    pub server: String,
    pub seq: u64,
    /// The key of the last row sent (opaque to the client).
    pub key: String,
    /// 32 lowercase hex digits.
    pub head: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PullRequest {
    pub vault: VaultInfo,
    pub checkpoint: Option<Checkpoint>,
    /// At least 1; the server sends at most `min(limit, MAX_PULL_ROWS)` rows.
    pub limit: u64,
    /// Record ids asked for by id.
    pub fetch: Vec<String>,
}

impl PullRequest {
    /// The most rows the answer may hold.
    pub fn page_limit(&self) -> usize {
        usize::try_from(self.limit)
            .unwrap_or(MAX_PULL_ROWS)
            .min(MAX_PULL_ROWS)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PushRequest {
    pub vault: VaultInfo,
    pub checkpoint: Option<Checkpoint>,
    pub rows: Vec<Row>,
    /// For the page's emptied removals of identity rows: the live versions they replaced on
    /// the replica (its kept versions, [`crate::storage::replaced_key`]), each older than its
    /// removal. The server keeps the later of its own and these.
    pub replaced: Vec<Row>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    Pull(PullRequest),
    Push(PushRequest),
}

/// Why a pull starts over from the beginning.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reset {
    /// The checkpoint names changes the server no longer has (wiped, restored, another store).
    Lost,
    /// The checkpoint is older than the tombstone lifetime.
    Expired,
}

impl Reset {
    pub fn as_str(self) -> &'static str {
        match self {
            Reset::Lost => "lost",
            Reset::Expired => "expired",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PullResponse {
    pub server: String,
    pub time: i64,
    pub kdf: String,
    pub reset: Option<Reset>,
    pub rows: Vec<Change>,
    pub checkpoint: Checkpoint,
    pub more: bool,
    pub remaining: u64,
    /// For the page's emptied removals of identity rows: the live versions they replaced, as
    /// the server kept them (FORMAT.md "Sync"). Sent only when not empty.
    pub replaced: Vec<Row>,
}

/// A pushed row a later version on the server beat.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Superseded {
    /// Its index in the request's `rows`.
    pub i: usize,
    pub current: Row,
}

/// Why the server will not store a pushed row (SYNC.md 7, the conflict rule's exceptions).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// Sealed under an identity the server has removed (a rotation): stranded on the client.
    RetiredKey,
    /// Its custom token is held by a record created earlier: stranded on the client.
    TokenTaken,
    /// It held its custom token first on the server, then lost it to an earlier creator.
    Displaced,
    /// The removal of an identity that live records on the server still link to.
    Referenced,
    /// A revision too far ahead of the server's clock: the client re-stamps and pushes again.
    RevInFuture,
}

impl Refusal {
    pub const ALL: [Refusal; 5] = [
        Refusal::RetiredKey,
        Refusal::TokenTaken,
        Refusal::Displaced,
        Refusal::Referenced,
        Refusal::RevInFuture,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Refusal::RetiredKey => "retired_key",
            Refusal::TokenTaken => "token_taken",
            Refusal::Displaced => "displaced",
            Refusal::Referenced => "referenced",
            Refusal::RevInFuture => "rev_in_future",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refused {
    pub i: usize,
    pub reason: Refusal,
    pub current: Option<Row>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PushResponse {
    pub server: String,
    pub time: i64,
    pub stored: u64,
    pub superseded: Vec<Superseded>,
    pub refused: Vec<Refused>,
    pub checkpoint: Option<Checkpoint>,
    /// As [`PullResponse::replaced`], for the emptied removals among the answer's current rows.
    pub replaced: Vec<Row>,
}

/// An error body as a client reads it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ErrorBody {
    pub code: String,
    pub message: String,
}

// ---------------------------------------------------------------------------------------------
// Errors

/// Every way a sync exchange fails, with its HTTP status and error code as data: the handler
/// only copies them into a response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WireError {
    /// 400 `INVALID_ARGUMENT`: not JSON, or not a message of protocol 1.
    Malformed(String),
    /// 400 `UNSUPPORTED`: another protocol version.
    UnsupportedVersion,
    /// 405 `INVALID_ARGUMENT`: a method other than `POST` (answer with `Allow: POST`).
    MethodNotAllowed,
    /// 413 `INVALID_ARGUMENT`: a body over [`MAX_BODY_BYTES`], or a page over its row limit.
    TooLarge(String),
    /// 415 `INVALID_ARGUMENT`: a content type other than JSON.
    UnsupportedMediaType,
    /// 422 `INVALID_ARGUMENT`: well-formed rows that contradict the server's vault.
    Unprocessable(String),
    /// 409 `SYNC_CONFLICT`: the replica's vault is not the server's.
    Conflict(String),
    /// 500 `STORAGE`: the server failed; the message is generic.
    Storage,
    /// 503 `STORAGE`: the server is busy; retry after a moment.
    Busy,
}

impl WireError {
    pub fn status(&self) -> u16 {
        match self {
            WireError::Malformed(_) | WireError::UnsupportedVersion => 400,
            WireError::MethodNotAllowed => 405,
            WireError::Conflict(_) => 409,
            WireError::TooLarge(_) => 413,
            WireError::UnsupportedMediaType => 415,
            WireError::Unprocessable(_) => 422,
            WireError::Storage => 500,
            WireError::Busy => 503,
        }
    }

    pub fn code(&self) -> &'static str {
        match self {
            WireError::UnsupportedVersion => "UNSUPPORTED",
            WireError::Conflict(_) => "SYNC_CONFLICT",
            WireError::Storage | WireError::Busy => "STORAGE",
            WireError::Malformed(_)
            | WireError::MethodNotAllowed
            | WireError::TooLarge(_)
            | WireError::UnsupportedMediaType
            | WireError::Unprocessable(_) => "INVALID_ARGUMENT",
        }
    }

    pub fn message(&self) -> String {
        match self {
            WireError::Malformed(m)
            | WireError::TooLarge(m)
            | WireError::Unprocessable(m)
            | WireError::Conflict(m) => m.clone(),
            WireError::UnsupportedVersion => format!(
                "this server speaks sync protocol {PROTOCOL} only; update the client (or the server)"
            ),
            WireError::MethodNotAllowed => "sync requests must use POST".to_owned(),
            WireError::UnsupportedMediaType => {
                "sync requests must have Content-Type: application/json".to_owned()
            }
            WireError::Storage => "the sync server failed to read or write its storage".to_owned(),
            WireError::Busy => "the sync server is busy; retry in a moment".to_owned(),
        }
    }
}

impl fmt::Display for WireError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}: {}", self.status(), self.code(), self.message())
    }
}

impl std::error::Error for WireError {}

/// The body cap, on a `Content-Length` before reading and on the bytes read so far.
pub fn check_body_len(len: u64) -> Result<(), WireError> {
    if len > MAX_BODY_BYTES {
        Err(WireError::TooLarge(format!(
            "a sync body is at most {} MiB",
            MAX_BODY_BYTES >> 20
        )))
    } else {
        Ok(())
    }
}

/// `application/json`, in any case, with parameters (`; charset=utf-8`) allowed.
pub fn check_content_type(value: Option<&str>) -> Result<(), WireError> {
    let media = value
        .and_then(|v| v.split(';').next())
        .map(str::trim)
        .unwrap_or_default();
    if media.eq_ignore_ascii_case("application/json") {
        Ok(())
    } else {
        Err(WireError::UnsupportedMediaType)
    }
}

fn malformed(path: &str, what: &str) -> WireError {
    if path.is_empty() {
        WireError::Malformed(format!("the body {what}"))
    } else {
        WireError::Malformed(format!("{path}: {what}"))
    }
}

// ---------------------------------------------------------------------------------------------
// Decoding

/// Decode a request body (server side).
pub fn decode_request(body: &[u8]) -> Result<Request, WireError> {
    let mut top = open_body(body)?;
    let op = string(top.take("op")?, "op")?;
    let vault = vault_info(top.take("vault")?)?;
    let checkpoint = nullable(top.take("checkpoint")?, "checkpoint", checkpoint)?;
    let request = match op.as_str() {
        "pull" => {
            // One message for every limit refused (a negative one included).
            let limit = uint(top.take("limit")?, "limit")
                .ok()
                .filter(|&n| n >= 1)
                .ok_or_else(|| malformed("limit", "must be an integer of at least 1"))?;
            let fetch = array(top.take("fetch")?, "fetch", MAX_PULL_ROWS, |v, path| {
                record_id(v, path)
            })?;
            let mut seen = HashSet::with_capacity(fetch.len());
            if let Some(i) = fetch.iter().position(|id| !seen.insert(id.as_str())) {
                return Err(malformed(&format!("fetch[{i}]"), "repeats an earlier id"));
            }
            Request::Pull(PullRequest {
                vault,
                checkpoint,
                limit,
                fetch,
            })
        }
        "push" => {
            let rows = array(top.take("rows")?, "rows", MAX_PUSH_ROWS, row)?;
            check_unique_rows(rows.iter(), "rows")?;
            let replaced = replaced_rows(&mut top, MAX_PUSH_ROWS)?;
            check_replaced_removals(&rows, &replaced)?;
            Request::Push(PushRequest {
                vault,
                checkpoint,
                rows,
                replaced,
            })
        }
        _ => return Err(malformed("op", "must be \"pull\" or \"push\"")),
    };
    top.finish()?;
    Ok(request)
}

/// Decode a pull response (client side).
pub fn decode_pull_response(body: &[u8]) -> Result<PullResponse, WireError> {
    let mut top = open_body(body)?;
    let server = server_id(top.take("server")?, "server")?;
    let time = time(top.take("time")?, "time")?;
    let kdf = kdf(top.take("kdf")?, "kdf")?;
    let reset = nullable(top.take("reset")?, "reset", |v, path| {
        match string(v, path)?.as_str() {
            "lost" => Ok(Reset::Lost),
            "expired" => Ok(Reset::Expired),
            _ => Err(malformed(path, "must be null, \"lost\" or \"expired\"")),
        }
    })?;
    let rows = array(top.take("rows")?, "rows", MAX_PULL_ROWS, |v, path| {
        let mut fields = Fields::new(v, path)?;
        let seq = uint(fields.take("seq")?, &fields.path("seq"))?;
        let row = row_fields(fields)?;
        Ok(Change { seq, row })
    })?;
    check_unique_rows(rows.iter().map(|r| &r.row), "rows")?;
    let checkpoint = checkpoint(top.take("checkpoint")?, "checkpoint")?;
    let more = boolean(top.take("more")?, "more")?;
    let remaining = uint(top.take("remaining")?, "remaining")?;
    let replaced = replaced_rows(&mut top, MAX_PULL_ROWS)?;
    top.finish()?;
    Ok(PullResponse {
        server,
        time,
        kdf,
        reset,
        rows,
        checkpoint,
        more,
        remaining,
        replaced,
    })
}

/// The optional `replaced` member of an answer: live rows of identity objects, each key once.
fn replaced_rows(top: &mut Fields, max: usize) -> Result<Vec<Row>, WireError> {
    let Ok(value) = top.take("replaced") else {
        return Ok(Vec::new());
    };
    let rows = array(value, "replaced", max, row)?;
    for (i, found) in rows.iter().enumerate() {
        if !matches!(found, Row::Meta { key, version: MetaVersion::Value { .. } }
            if key.object_type == object_type::IDENTITY)
        {
            return Err(malformed(
                &format!("replaced[{i}]"),
                "must be a live row of an identity object",
            ));
        }
    }
    check_unique_rows(rows.iter(), "replaced")?;
    Ok(rows)
}

/// A push's `replaced` rows each name an emptied removal among its rows, and are older than
/// it: a version the removal replaced.
fn check_replaced_removals(rows: &[Row], replaced: &[Row]) -> Result<(), WireError> {
    for (i, kept) in replaced.iter().enumerate() {
        let Row::Meta {
            key: kept_key,
            version: kept_version,
        } = kept
        else {
            continue; // refused by `replaced_rows`
        };
        let removal = rows.iter().find_map(|row| match row {
            Row::Meta {
                key,
                version:
                    MetaVersion::Gone {
                        rev, emptied: true, ..
                    },
            } if key == kept_key => Some(*rev),
            _ => None,
        });
        if removal.is_none_or(|removal| kept_version.rev() >= removal) {
            return Err(malformed(
                &format!("replaced[{i}]"),
                "must be older than an emptied removal of the same row in rows",
            ));
        }
    }
    Ok(())
}

/// Decode a push response (client side) to a push of `sent` rows: every index must name one of
/// them, once.
pub fn decode_push_response(body: &[u8], sent: usize) -> Result<PushResponse, WireError> {
    let mut top = open_body(body)?;
    let server = server_id(top.take("server")?, "server")?;
    let time = time(top.take("time")?, "time")?;
    let stored = uint(top.take("stored")?, "stored")?;
    let index = |v: Value, path: &str| {
        let i = uint(v, path)?;
        usize::try_from(i)
            .ok()
            .filter(|i| *i < sent)
            .ok_or_else(|| malformed(path, "is not the index of a pushed row"))
    };
    let superseded = array(
        top.take("superseded")?,
        "superseded",
        MAX_PUSH_ROWS,
        |v, path| {
            let mut fields = Fields::new(v, path)?;
            let i = index(fields.take("i")?, &fields.path("i"))?;
            let current = row(fields.take("current")?, &fields.path("current"))?;
            fields.finish()?;
            Ok(Superseded { i, current })
        },
    )?;
    let refused = array(top.take("refused")?, "refused", MAX_PUSH_ROWS, |v, path| {
        let mut fields = Fields::new(v, path)?;
        let i = index(fields.take("i")?, &fields.path("i"))?;
        let reason_path = fields.path("reason");
        let reason = string(fields.take("reason")?, &reason_path)?;
        let reason = Refusal::ALL
            .into_iter()
            .find(|r| r.as_str() == reason)
            .ok_or_else(|| malformed(&reason_path, "is not a refusal reason of protocol 1"))?;
        let current = nullable(fields.take("current")?, &fields.path("current"), row)?;
        fields.finish()?;
        Ok(Refused { i, reason, current })
    })?;
    // Every index is below `sent` (checked above): a flag per pushed row, not a set.
    let mut seen = vec![false; sent];
    for (path, i) in superseded
        .iter()
        .enumerate()
        .map(|(k, s)| (format!("superseded[{k}].i"), s.i))
        .chain(
            refused
                .iter()
                .enumerate()
                .map(|(k, r)| (format!("refused[{k}].i"), r.i)),
        )
    {
        if std::mem::replace(&mut seen[i], true) {
            return Err(malformed(&path, "names a pushed row a second time"));
        }
    }
    let checkpoint = nullable(top.take("checkpoint")?, "checkpoint", checkpoint)?;
    let replaced = replaced_rows(&mut top, MAX_PUSH_ROWS)?;
    top.finish()?;
    Ok(PushResponse {
        server,
        time,
        stored,
        superseded,
        refused,
        checkpoint,
        replaced,
    })
}

/// Read an error body (client side); `None` when the body is not one (a proxy's page, say).
/// The message is the server's: a client shows it, it does not parse it.
pub fn decode_error(body: &[u8]) -> Option<ErrorBody> {
    check_body_len(body.len() as u64).ok()?;
    let mut top = Fields::new(json::parse(body, &JSON_LIMITS).ok()?, "").ok()?;
    let mut error = Fields::new(top.take("error").ok()?, "error").ok()?;
    top.finish().ok()?;
    let code = string(error.take("code").ok()?, "").ok()?;
    let message = string(error.take("message").ok()?, "").ok()?;
    error.finish().ok()?;
    Some(ErrorBody { code, message })
}

/// Size, JSON, a top-level object, and the protocol version, in that order: a body of another
/// version is `UNSUPPORTED` whatever else it holds.
fn open_body(body: &[u8]) -> Result<Fields, WireError> {
    check_body_len(body.len() as u64)?;
    let value = json::parse(body, &JSON_LIMITS).map_err(json_error)?;
    let mut top = Fields::new(value, "")?;
    match top.take("sync")? {
        Value::Int(PROTOCOL) => Ok(top),
        Value::Int(_) => Err(WireError::UnsupportedVersion),
        _ => Err(malformed(
            "sync",
            "must be the protocol version, an integer",
        )),
    }
}

fn json_error(e: JsonError) -> WireError {
    WireError::Malformed(format!("the body is not JSON that sync accepts: {e}"))
}

/// The members of one object, taken one by one; whatever is left at the end is unknown.
struct Fields {
    path: String,
    members: Vec<(String, Value)>,
}

impl Fields {
    fn new(value: Value, path: &str) -> Result<Fields, WireError> {
        match value {
            Value::Object(members) => Ok(Fields {
                path: path.to_owned(),
                members,
            }),
            _ => Err(malformed(path, "must be an object")),
        }
    }

    fn path(&self, name: &str) -> String {
        if self.path.is_empty() {
            name.to_owned()
        } else {
            format!("{}.{name}", self.path)
        }
    }

    fn take(&mut self, name: &str) -> Result<Value, WireError> {
        match self.members.iter().position(|(key, _)| key == name) {
            Some(i) => Ok(self.members.swap_remove(i).1),
            None => Err(malformed(&self.path(name), "is missing")),
        }
    }

    /// Fails when a member was not taken. The member's name is not quoted: it is input.
    fn finish(self) -> Result<(), WireError> {
        if self.members.is_empty() {
            Ok(())
        } else {
            Err(malformed(
                &self.path,
                "has a field that sync protocol 1 does not define",
            ))
        }
    }
}

fn string(value: Value, path: &str) -> Result<String, WireError> {
    match value {
        Value::Str(s) => Ok(s),
        _ => Err(malformed(path, "must be a string")),
    }
}

fn boolean(value: Value, path: &str) -> Result<bool, WireError> {
    match value {
        Value::Bool(b) => Ok(b),
        _ => Err(malformed(path, "must be true or false")),
    }
}

fn uint(value: Value, path: &str) -> Result<u64, WireError> {
    match value {
        Value::Int(n) if n >= 0 => Ok(n.unsigned_abs()),
        _ => Err(malformed(path, "must be an integer of at least 0")),
    }
}

fn time(value: Value, path: &str) -> Result<i64, WireError> {
    match value {
        Value::Int(n) if (-MAX_TIME_MS..=MAX_TIME_MS).contains(&n) => Ok(n),
        Value::Int(_) => Err(malformed(path, "is outside the range of a JavaScript Date")),
        _ => Err(malformed(
            path,
            "must be a time, in integer milliseconds since the epoch",
        )),
    }
}

fn nullable<T>(
    value: Value,
    path: &str,
    read: impl FnOnce(Value, &str) -> Result<T, WireError>,
) -> Result<Option<T>, WireError> {
    match value {
        Value::Null => Ok(None),
        value => read(value, path).map(Some),
    }
}

fn array<T>(
    value: Value,
    path: &str,
    max: usize,
    mut read: impl FnMut(Value, &str) -> Result<T, WireError>,
) -> Result<Vec<T>, WireError> {
    let Value::Array(items) = value else {
        return Err(malformed(path, "must be an array"));
    };
    if items.len() > max {
        return Err(WireError::TooLarge(format!(
            "{path}: holds more than {max} entries; send smaller pages"
        )));
    }
    // A loop, not a `collect` into a `Result`: one instance per row type either way, and this
    // one is smaller in the IndexedDB engine.
    let mut read_items = Vec::with_capacity(items.len());
    for (i, item) in items.into_iter().enumerate() {
        read_items.push(read(item, &format!("{path}[{i}]"))?);
    }
    Ok(read_items)
}

fn hex_string(value: Value, path: &str, prefix: &str, what: &str) -> Result<String, WireError> {
    let s = string(value, path)?;
    match s.strip_prefix(prefix) {
        Some(hex) if is_lower_hex(hex, 32) => Ok(s),
        _ => Err(malformed(path, what)),
    }
}

fn record_id(value: Value, path: &str) -> Result<String, WireError> {
    hex_string(
        value,
        path,
        "",
        "a record id must be 32 lowercase hexadecimal digits",
    )
}

fn identity_id(value: Value, path: &str) -> Result<String, WireError> {
    hex_string(
        value,
        path,
        IDENTITY_ID_PREFIX,
        "an identity id must be \"p_\" and 32 lowercase hexadecimal digits",
    )
}

fn server_id(value: Value, path: &str) -> Result<String, WireError> {
    hex_string(
        value,
        path,
        "s_",
        "a server id must be \"s_\" and 32 lowercase hexadecimal digits",
    )
}

fn rev(value: Value, path: &str) -> Result<Rev, WireError> {
    let s = string(value, path)?;
    Rev::parse(&s).map_err(|e| malformed(path, &e.to_string()))
}

fn kdf(value: Value, path: &str) -> Result<String, WireError> {
    let s = string(value, path)?;
    crate::crypto::KdfParams::from_json(&s).map_err(|_| {
        malformed(
            path,
            "must be a vault's kdf settings row (FORMAT.md \"Vault settings\")",
        )
    })?;
    Ok(s)
}

fn vault_info(value: Value) -> Result<VaultInfo, WireError> {
    let mut fields = Fields::new(value, "vault")?;
    let kdf = kdf(fields.take("kdf")?, "vault.kdf")?;
    let empty = boolean(fields.take("empty")?, "vault.empty")?;
    fields.finish()?;
    Ok(VaultInfo { kdf, empty })
}

fn checkpoint(value: Value, path: &str) -> Result<Checkpoint, WireError> {
    let mut fields = Fields::new(value, path)?;
    let server = server_id(fields.take("server")?, &fields.path("server"))?;
    let seq = uint(fields.take("seq")?, &fields.path("seq"))?;
    let key_path = fields.path("key");
    let key = string(fields.take("key")?, &key_path)?;
    if key.len() > MAX_CHECKPOINT_KEY_BYTES {
        return Err(malformed(&key_path, "is longer than 1,024 bytes"));
    }
    let head_path = fields.path("head");
    let head = string(fields.take("head")?, &head_path)?;
    if !is_lower_hex(&head, 32) {
        return Err(malformed(
            &head_path,
            "must be 32 lowercase hexadecimal digits",
        ));
    }
    fields.finish()?;
    Ok(Checkpoint {
        server,
        seq,
        key,
        head,
    })
}

fn row(value: Value, path: &str) -> Result<Row, WireError> {
    row_fields(Fields::new(value, path)?)
}

fn row_fields(mut fields: Fields) -> Result<Row, WireError> {
    let t_path = fields.path("t");
    let row = match string(fields.take("t")?, &t_path)?.as_str() {
        "record" => live_record(&mut fields)?,
        "meta" => {
            let key = meta_key(&mut fields)?;
            let value_path = fields.path("value");
            let value = string(fields.take("value")?, &value_path)?;
            check_meta_value(&key, &value, &value_path)?;
            let rev = rev(fields.take("rev")?, &fields.path("rev"))?;
            Row::Meta {
                key,
                version: MetaVersion::Value { rev, value },
            }
        }
        "gone" => {
            let kind_path = fields.path("kind");
            match string(fields.take("kind")?, &kind_path)?.as_str() {
                "record" => {
                    let id = record_id(fields.take("id")?, &fields.path("id"))?;
                    let rev = rev(fields.take("rev")?, &fields.path("rev"))?;
                    let deleted_at = time(fields.take("deletedAt")?, &fields.path("deletedAt"))?;
                    let reason_path = fields.path("reason");
                    let reason = match string(fields.take("reason")?, &reason_path)?.as_str() {
                        "deleted" => TombstoneReason::Deleted,
                        "displaced" => TombstoneReason::Displaced,
                        _ => {
                            return Err(malformed(
                                &reason_path,
                                "must be \"deleted\" or \"displaced\"",
                            ));
                        }
                    };
                    Row::Record {
                        id,
                        version: RecordVersion::Gone(Tombstone {
                            rev,
                            deleted_at,
                            reason,
                        }),
                    }
                }
                "meta" => {
                    let key = meta_key(&mut fields)?;
                    let rev = rev(fields.take("rev")?, &fields.path("rev"))?;
                    let deleted_at = time(fields.take("deletedAt")?, &fields.path("deletedAt"))?;
                    // Optional, since this release: only an identity's rows can be emptied.
                    let emptied = match fields.take("reason") {
                        Err(_) => false,
                        Ok(reason) => {
                            let reason_path = fields.path("reason");
                            if string(reason, &reason_path)? != "emptied"
                                || key.object_type != object_type::IDENTITY
                            {
                                return Err(malformed(
                                    &reason_path,
                                    "must be \"emptied\", on an identity's row only",
                                ));
                            }
                            true
                        }
                    };
                    Row::Meta {
                        key,
                        version: MetaVersion::Gone {
                            rev,
                            deleted_at,
                            emptied,
                        },
                    }
                }
                _ => return Err(malformed(&kind_path, "must be \"record\" or \"meta\"")),
            }
        }
        _ => {
            return Err(malformed(
                &t_path,
                "must be \"record\", \"meta\" or \"gone\"",
            ));
        }
    };
    fields.finish()?;
    Ok(row)
}

fn live_record(fields: &mut Fields) -> Result<Row, WireError> {
    let id = record_id(fields.take("id")?, &fields.path("id"))?;
    let token_path = fields.path("token");
    let token = string(fields.take("token")?, &token_path)?;
    // The rule `tokenCreate` applies to custom tokens, so every stored token can travel. Its
    // own message is not used: the path is what locates the field.
    if token::check_custom(&token).is_err() {
        return Err(malformed(
            &token_path,
            "a token must be a non-empty string of at most 255 UTF-8 bytes",
        ));
    }
    let value_path = fields.path("value");
    let value = string(fields.take("value")?, &value_path)?;
    if !Envelope::is_well_formed(&value) {
        return Err(malformed(&value_path, "is not a well-formed vs1: envelope"));
    }
    let password_id = nullable(
        fields.take("passwordId")?,
        &fields.path("passwordId"),
        identity_id,
    )?;
    let created_at = time(fields.take("createdAt")?, &fields.path("createdAt"))?;
    let updated_at = time(fields.take("updatedAt")?, &fields.path("updatedAt"))?;
    let expires_at = nullable(fields.take("expiresAt")?, &fields.path("expiresAt"), time)?;
    let soft_deleted_at = nullable(
        fields.take("softDeletedAt")?,
        &fields.path("softDeletedAt"),
        time,
    )?;
    let mut revs = Fields::new(fields.take("rev")?, &fields.path("rev"))?;
    let value_rev = rev(revs.take("value")?, &revs.path("value"))?;
    let seal_rev = rev(revs.take("seal")?, &revs.path("seal"))?;
    let expires_rev = rev(revs.take("expires")?, &revs.path("expires"))?;
    let deleted_rev = rev(revs.take("deleted")?, &revs.path("deleted"))?;
    revs.finish()?;
    Ok(Row::Record {
        id,
        version: RecordVersion::Live(LiveRecord {
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
        }),
    })
}

/// The key of a meta row that may travel: a setting other than `kdf`, or an identity's row.
fn meta_key(fields: &mut Fields) -> Result<MetaKey, WireError> {
    let type_path = fields.path("objectType");
    let id_path = fields.path("objectId");
    let key_path = fields.path("key");
    let object_type = string(fields.take("objectType")?, &type_path)?;
    let object_id = string(fields.take("objectId")?, &id_path)?;
    let key = string(fields.take("key")?, &key_path)?;
    match object_type.as_str() {
        object_type::VAULT if object_id == STATE_ID => {
            return Err(malformed(
                &id_path,
                "vault state rows are local to a replica and never synced",
            ));
        }
        object_type::VAULT if object_id != SETTINGS_ID => {
            return Err(malformed(&id_path, "vault rows must be \"settings\""));
        }
        object_type::VAULT if key == KDF_KEY => {
            return Err(malformed(
                &key_path,
                "the kdf setting never travels as a row (it is the request's vault.kdf)",
            ));
        }
        object_type::VAULT if key.is_empty() => {
            return Err(malformed(&key_path, "a setting key must not be empty"));
        }
        object_type::VAULT => {}
        object_type::IDENTITY => {
            if !is_identity_id(&object_id) {
                return Err(malformed(
                    &id_path,
                    "an identity id must be \"p_\" and 32 lowercase hexadecimal digits",
                ));
            }
            if !matches!(key.as_str(), TAG_KEY | DEK_KEY | OWNER_KEY) {
                return Err(malformed(
                    &key_path,
                    "identity rows must be \"tag\", \"dek\" or \"identity\"",
                ));
            }
        }
        "sync" => {
            return Err(malformed(
                &type_path,
                "sync state rows are local to a replica and never synced",
            ));
        }
        object_type::RECORD => {
            return Err(malformed(
                &type_path,
                "record links travel as a record's passwordId, not as meta rows",
            ));
        }
        _ => {
            return Err(malformed(
                &type_path,
                "must be \"vault\" or \"password_identity\"",
            ));
        }
    }
    Ok(MetaKey {
        object_type,
        object_id,
        key,
    })
}

fn check_meta_value(key: &MetaKey, value: &str, path: &str) -> Result<(), WireError> {
    if value.len() > MAX_META_VALUE_BYTES {
        return Err(malformed(path, "is longer than 64 KiB"));
    }
    if key.object_type != object_type::IDENTITY {
        return Ok(());
    }
    let (ok, what) = match key.key.as_str() {
        TAG_KEY => (
            is_lower_hex(value, 64),
            "an identity tag must be 64 lowercase hexadecimal digits",
        ),
        DEK_KEY => (
            is_wrapped_dek(value),
            "an identity's dek must be a well-formed vs1k: wrapped key",
        ),
        _ => (
            is_identity_id(value),
            "a secret slot's identity must be \"p_\" and 32 lowercase hexadecimal digits",
        ),
    };
    if ok {
        Ok(())
    } else {
        Err(malformed(path, what))
    }
}

fn check_unique_rows<'a>(rows: impl Iterator<Item = &'a Row>, path: &str) -> Result<(), WireError> {
    // Owned keys: a set of them is compiled for the engine already (one copy of the set's code
    // in the browser's download, not two), and a page's keys are short.
    let mut seen: HashSet<crate::sync::RowKey> = HashSet::new();
    for (i, row) in rows.enumerate() {
        if !seen.insert(row.key()) {
            return Err(malformed(
                &format!("{path}[{i}]"),
                "is the same row as an earlier one of this page",
            ));
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Encoding: fields in the documented order, no whitespace.

/// Encode a request (client side).
pub fn encode_request(request: &Request) -> String {
    let mut out = String::new();
    let _ = write!(out, "{{\"sync\":{PROTOCOL},\"op\":");
    let (op, vault, checkpoint) = match request {
        Request::Pull(p) => ("pull", &p.vault, &p.checkpoint),
        Request::Push(p) => ("push", &p.vault, &p.checkpoint),
    };
    write_str(&mut out, op);
    out.push_str(",\"vault\":{\"kdf\":");
    write_str(&mut out, &vault.kdf);
    let _ = write!(out, ",\"empty\":{}}},\"checkpoint\":", vault.empty);
    write_opt_checkpoint(&mut out, checkpoint.as_ref());
    match request {
        Request::Pull(p) => {
            let _ = write!(out, ",\"limit\":{},\"fetch\":[", p.limit);
            for (i, id) in p.fetch.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_str(&mut out, id);
            }
            out.push(']');
        }
        Request::Push(p) => {
            out.push_str(",\"rows\":[");
            for (i, row) in p.rows.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_row(&mut out, row, None);
            }
            out.push(']');
            write_replaced(&mut out, &p.replaced);
        }
    }
    out.push('}');
    out
}

/// Encode a pull response (server side).
pub fn encode_pull_response(response: &PullResponse) -> String {
    let mut out = String::new();
    write_head(&mut out, &response.server, response.time);
    out.push_str(",\"kdf\":");
    write_str(&mut out, &response.kdf);
    out.push_str(",\"reset\":");
    match response.reset {
        Some(reset) => write_str(&mut out, reset.as_str()),
        None => out.push_str("null"),
    }
    out.push_str(",\"rows\":[");
    for (i, pulled) in response.rows.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        write_row(&mut out, &pulled.row, Some(pulled.seq));
    }
    out.push_str("],\"checkpoint\":");
    write_opt_checkpoint(&mut out, Some(&response.checkpoint));
    let _ = write!(
        out,
        ",\"more\":{},\"remaining\":{}",
        response.more, response.remaining
    );
    write_replaced(&mut out, &response.replaced);
    out.push('}');
    out
}

/// `,"replaced":[…]` when there are any.
fn write_replaced(out: &mut String, rows: &[Row]) {
    if rows.is_empty() {
        return;
    }
    out.push_str(",\"replaced\":[");
    for (i, row) in rows.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        write_row(out, row, None);
    }
    out.push(']');
}

/// Encode a push response (server side).
pub fn encode_push_response(response: &PushResponse) -> String {
    let mut out = String::new();
    write_head(&mut out, &response.server, response.time);
    let _ = write!(out, ",\"stored\":{},\"superseded\":[", response.stored);
    for (k, s) in response.superseded.iter().enumerate() {
        if k > 0 {
            out.push(',');
        }
        let _ = write!(out, "{{\"i\":{},\"current\":", s.i);
        write_row(&mut out, &s.current, None);
        out.push('}');
    }
    out.push_str("],\"refused\":[");
    for (k, r) in response.refused.iter().enumerate() {
        if k > 0 {
            out.push(',');
        }
        let _ = write!(out, "{{\"i\":{},\"reason\":", r.i);
        write_str(&mut out, r.reason.as_str());
        out.push_str(",\"current\":");
        match &r.current {
            Some(row) => write_row(&mut out, row, None),
            None => out.push_str("null"),
        }
        out.push('}');
    }
    out.push_str("],\"checkpoint\":");
    write_opt_checkpoint(&mut out, response.checkpoint.as_ref());
    write_replaced(&mut out, &response.replaced);
    out.push('}');
    out
}

/// Encode an error body (server side).
pub fn encode_error(error: &WireError) -> String {
    let mut out = String::from("{\"error\":{\"code\":");
    write_str(&mut out, error.code());
    out.push_str(",\"message\":");
    write_str(&mut out, &error.message());
    out.push_str("}}");
    out
}

fn write_head(out: &mut String, server: &str, time: i64) {
    let _ = write!(out, "{{\"sync\":{PROTOCOL},\"server\":");
    write_str(out, server);
    let _ = write!(out, ",\"time\":{time}");
}

fn write_opt_checkpoint(out: &mut String, checkpoint: Option<&Checkpoint>) {
    let Some(c) = checkpoint else {
        out.push_str("null");
        return;
    };
    out.push_str("{\"server\":");
    write_str(out, &c.server);
    let _ = write!(out, ",\"seq\":{},\"key\":", c.seq);
    write_str(out, &c.key);
    out.push_str(",\"head\":");
    write_str(out, &c.head);
    out.push('}');
}

fn write_field(out: &mut String, name: &str, value: &str) {
    let _ = write!(out, ",\"{name}\":");
    write_str(out, value);
}

fn write_time(out: &mut String, name: &str, value: Option<i64>) {
    let _ = write!(out, ",\"{name}\":");
    crate::json::write_opt_int(out, value);
}

fn write_meta_key(out: &mut String, key: &MetaKey) {
    write_field(out, "objectType", &key.object_type);
    write_field(out, "objectId", &key.object_id);
    write_field(out, "key", &key.key);
}

fn write_row(out: &mut String, row: &Row, seq: Option<u64>) {
    let t = match row {
        Row::Record {
            version: RecordVersion::Live(_),
            ..
        } => "record",
        Row::Meta {
            version: MetaVersion::Value { .. },
            ..
        } => "meta",
        _ => "gone",
    };
    let _ = write!(out, "{{\"t\":\"{t}\"");
    if let Some(seq) = seq {
        let _ = write!(out, ",\"seq\":{seq}");
    }
    match row {
        Row::Record {
            id,
            version: RecordVersion::Live(r),
        } => {
            write_field(out, "id", id);
            write_field(out, "token", &r.token);
            write_field(out, "value", &r.value);
            out.push_str(",\"passwordId\":");
            match &r.password_id {
                Some(p) => write_str(out, p),
                None => out.push_str("null"),
            }
            write_time(out, "createdAt", Some(r.created_at));
            write_time(out, "updatedAt", Some(r.updated_at));
            write_time(out, "expiresAt", r.expires_at);
            write_time(out, "softDeletedAt", r.soft_deleted_at);
            let _ = write!(
                out,
                ",\"rev\":{{\"value\":\"{}\",\"seal\":\"{}\",\"expires\":\"{}\",\"deleted\":\"{}\"}}",
                r.value_rev, r.seal_rev, r.expires_rev, r.deleted_rev
            );
        }
        Row::Record {
            id,
            version: RecordVersion::Gone(g),
        } => {
            out.push_str(",\"kind\":\"record\"");
            write_field(out, "id", id);
            let _ = write!(out, ",\"rev\":\"{}\"", g.rev);
            write_time(out, "deletedAt", Some(g.deleted_at));
            write_field(out, "reason", g.reason.as_str());
        }
        Row::Meta {
            key,
            version: MetaVersion::Value { rev, value },
        } => {
            write_meta_key(out, key);
            write_field(out, "value", value);
            let _ = write!(out, ",\"rev\":\"{rev}\"");
        }
        Row::Meta {
            key,
            version:
                MetaVersion::Gone {
                    rev,
                    deleted_at,
                    emptied,
                },
        } => {
            out.push_str(",\"kind\":\"meta\"");
            write_meta_key(out, key);
            let _ = write!(out, ",\"rev\":\"{rev}\"");
            write_time(out, "deletedAt", Some(*deleted_at));
            if *emptied {
                write_field(out, "reason", "emptied");
            }
        }
    }
    out.push('}');
}

#[cfg(test)]
mod tests {
    use super::*;

    const KDF: &str =
        r#"{"alg":"pbkdf2-sha256","iterations":1000,"salt":"AAAAAAAAAAAAAAAAAAAAAA"}"#;

    fn hex(n: u8) -> String {
        format!("{n:02x}").repeat(16)
    }

    #[test]
    fn every_error_has_its_status_and_code() {
        let table = [
            (WireError::Malformed("m".into()), 400, "INVALID_ARGUMENT"),
            (WireError::UnsupportedVersion, 400, "UNSUPPORTED"),
            (WireError::MethodNotAllowed, 405, "INVALID_ARGUMENT"),
            (WireError::Conflict("c".into()), 409, "SYNC_CONFLICT"),
            (WireError::TooLarge("t".into()), 413, "INVALID_ARGUMENT"),
            (WireError::UnsupportedMediaType, 415, "INVALID_ARGUMENT"),
            (
                WireError::Unprocessable("u".into()),
                422,
                "INVALID_ARGUMENT",
            ),
            (WireError::Storage, 500, "STORAGE"),
            (WireError::Busy, 503, "STORAGE"),
        ];
        for (error, status, code) in table {
            assert_eq!((error.status(), error.code()), (status, code), "{error:?}");
            let body = encode_error(&error);
            assert_eq!(
                decode_error(body.as_bytes()),
                Some(ErrorBody {
                    code: code.to_owned(),
                    message: error.message(),
                })
            );
        }
        assert_eq!(decode_error(b"<html>bad gateway</html>"), None);
        assert_eq!(decode_error(br#"{"error":{"code":"X"}}"#), None);
        assert_eq!(
            decode_error(br#"{"error":{"code":"X","message":"m","extra":1}}"#),
            None
        );
    }

    #[test]
    fn body_cap_and_content_type() {
        assert!(check_body_len(MAX_BODY_BYTES).is_ok());
        assert_eq!(
            check_body_len(MAX_BODY_BYTES + 1).unwrap_err().status(),
            413
        );
        assert_eq!(check_body_len(u64::MAX).unwrap_err().status(), 413);
        for ok in [
            "application/json",
            "Application/JSON; charset=utf-8",
            " application/json ",
        ] {
            assert!(check_content_type(Some(ok)).is_ok(), "{ok}");
        }
        for bad in [
            None,
            Some(""),
            Some("text/plain"),
            Some("application/jsonx"),
        ] {
            assert_eq!(
                check_content_type(bad).unwrap_err().status(),
                415,
                "{bad:?}"
            );
        }
        // A body one byte over the cap is refused before it is read as JSON.
        let over = vec![b' '; MAX_BODY_BYTES as usize + 1];
        assert_eq!(decode_request(&over).unwrap_err().status(), 413);
    }

    #[test]
    fn the_version_is_checked_before_the_shape() {
        assert_eq!(
            decode_request(br#"{"sync":2,"anything":"else"}"#),
            Err(WireError::UnsupportedVersion)
        );
        assert_eq!(
            decode_request(br#"{"sync":"1"}"#).unwrap_err().code(),
            "INVALID_ARGUMENT"
        );
    }

    #[test]
    fn push_results_must_name_pushed_rows_once() {
        let body = |superseded: &str, refused: &str| {
            format!(
                r#"{{"sync":1,"server":"s_{}","time":5,"stored":0,"superseded":[{superseded}],"refused":[{refused}],"checkpoint":null}}"#,
                hex(1)
            )
        };
        let gone = format!(
            r#"{{"t":"gone","kind":"record","id":"{}","rev":"{}","deletedAt":1,"reason":"deleted"}}"#,
            hex(2),
            hex(3)
        );
        let ok = body(
            &format!(r#"{{"i":0,"current":{gone}}}"#),
            r#"{"i":1,"reason":"token_taken","current":null}"#,
        );
        let decoded = decode_push_response(ok.as_bytes(), 2).unwrap();
        assert_eq!(decoded.superseded[0].i, 0);
        assert_eq!(decoded.refused[0].reason, Refusal::TokenTaken);
        assert_eq!(encode_push_response(&decoded), ok);
        let err = decode_push_response(ok.as_bytes(), 1).unwrap_err();
        assert_eq!(
            err.message(),
            "refused[0].i: is not the index of a pushed row"
        );
        let twice = body(
            &format!(r#"{{"i":1,"current":{gone}}}"#),
            r#"{"i":1,"reason":"referenced","current":null}"#,
        );
        assert_eq!(
            decode_push_response(twice.as_bytes(), 2)
                .unwrap_err()
                .message(),
            "refused[0].i: names a pushed row a second time"
        );
        let unknown = body("", r#"{"i":0,"reason":"nope","current":null}"#);
        assert_eq!(
            decode_push_response(unknown.as_bytes(), 1)
                .unwrap_err()
                .message(),
            "refused[0].reason: is not a refusal reason of protocol 1"
        );
    }

    #[test]
    fn pull_limit_is_clamped_and_fetch_ids_are_distinct() {
        let body = |limit: &str, fetch: &str| {
            format!(
                r#"{{"sync":1,"op":"pull","vault":{{"kdf":{},"empty":true}},"checkpoint":null,"limit":{limit},"fetch":[{fetch}]}}"#,
                serde_json::to_string(KDF).unwrap()
            )
        };
        let Request::Pull(pull) = decode_request(body("9000", "").as_bytes()).unwrap() else {
            panic!("a pull")
        };
        assert_eq!(pull.page_limit(), MAX_PULL_ROWS);
        assert_eq!(encode_request(&Request::Pull(pull)), body("9000", ""));
        assert_eq!(
            decode_request(body("0", "").as_bytes())
                .unwrap_err()
                .message(),
            "limit: must be an integer of at least 1"
        );
        assert_eq!(
            decode_request(body("-5", "").as_bytes())
                .unwrap_err()
                .message(),
            "limit: must be an integer of at least 1"
        );
        let id = format!("\"{}\"", hex(7));
        assert_eq!(
            decode_request(body("1", &format!("{id},{id}")).as_bytes())
                .unwrap_err()
                .message(),
            "fetch[1]: repeats an earlier id"
        );
    }
}
