//! The SQL backend's writes (FORMAT.md "SQL tables"): how a batch of [`WriteOp`]s becomes a few
//! set-based statements, each op's precondition a statement of the same batch (see `sql.rs`).
//!
//! Every statement that writes a replicated row stamps it (storage.rs "What a store keeps for
//! sync"): the batch's revision (`?3`/`?4` as each statement says), and a seq taken inside the
//! transaction: [`seq_base!`] (the store's greatest seq) plus the row's place in its statement
//! (its JSON array index + 1, or a `row_number()`), so seqs are unique and grow in commit order.
//! A local write's dirty mark is its seq.

use super::*;

/// The greatest seq the namespace `?1` has handed out: the greatest of its records', meta rows'
/// and tombstones' (each one index lookup on `(ns, seq)`), and the floor `vaultstore_seq` keeps
/// when `ClearAll` removes them (seqs never go back). A statement's rows take this plus their
/// place in the statement. An uncorrelated subquery: SQLite evaluates it once per statement,
/// and an `INSERT … SELECT` that reads its own table computes every row before writing any.
macro_rules! seq_base {
    () => {
        "(SELECT max(
            coalesce((SELECT sf.floor FROM vaultstore_seq AS sf WHERE sf.ns = ?1), 0),
            coalesce((SELECT max(top.seq) FROM vaultstore_records AS top WHERE top.ns = ?1), 0),
            coalesce((SELECT max(top.seq) FROM vaultstore_meta AS top WHERE top.ns = ?1), 0),
            coalesce((SELECT max(top.seq) FROM vaultstore_tombstones AS top WHERE top.ns = ?1), 0)))"
    };
}

/// The `seq, dirty` values of item `$j` of a `json_each`: the next seq after [`seq_base!`] by the
/// item's place, and a dirty mark equal to it when the item says `dirty` (a merge's rows:
/// `PutVersion`), else none.
macro_rules! seq_and_dirty {
    ($j:ident) => {
        concat!(
            seq_base!(),
            " + ",
            stringify!($j),
            ".key + 1,
        CASE WHEN ",
            stringify!($j),
            ".value->>'dirty' THEN ",
            seq_base!(),
            " + ",
            stringify!($j),
            ".key + 1 END"
        )
    };
}

/// The `seq, dirty` values of item `$j` of a `json_each` written locally: a local write's dirty
/// mark is its seq.
macro_rules! seq_and_local_mark {
    ($j:ident) => {
        concat!(
            seq_base!(),
            " + ",
            stringify!($j),
            ".key + 1, ",
            seq_base!(),
            " + ",
            stringify!($j),
            ".key + 1"
        )
    };
}

/// A tombstone statement's conflict clause: a key tombstoned again keeps the latest.
macro_rules! tombstone_upsert {
    () => {
        "ON CONFLICT (ns, kind, k1, k2, k3) DO UPDATE SET
        rev = excluded.rev, deleted_at = excluded.deleted_at, reason = excluded.reason,
        seq = excluded.seq, dirty = excluded.dirty"
    };
}

/// The statements of one batch: ops of one kind share statements (one JSON array each), so
/// a batch costs a handful of statements whatever the number of records (D1 counts statements
/// per invocation: 50 on the free plan, 1,000 on the paid one). A batch interleaves kinds
/// (`tokensCreate` alternates guards and inserts, a rekey reseals and identity rows), so an op
/// joins the last earlier group of its kind when it commutes with every op planned between
/// them ([`Footprint`]): the statements then leave exactly what the ops in their order would.
/// An op on a record or meta row its group already holds starts a new group, so every
/// statement sees what the ops before it left.
pub(super) fn plan(ns: &str, stamp: Stamp, batch: &mut [WriteOp]) -> Vec<Statement> {
    let runs = group(batch);
    let mut out = Vec::new();
    for run in runs {
        emit(ns, stamp, &mut pick_mut(batch, &run), &mut out);
    }
    out
}

/// The ops of `batch` at `run`'s indexes, which increase.
fn pick_mut<'a>(batch: &'a mut [WriteOp], run: &[usize]) -> Vec<&'a mut WriteOp> {
    let mut picked = Vec::with_capacity(run.len());
    let mut rest = batch;
    let mut base = 0;
    for &i in run {
        let Some((op, tail)) = i
            .checked_sub(base)
            .and_then(|skip| std::mem::take(&mut rest).get_mut(skip..))
            .and_then(<[WriteOp]>::split_first_mut)
        else {
            break;
        };
        picked.push(op);
        rest = tail;
        base = i + 1;
    }
    debug_assert_eq!(picked.len(), run.len(), "a run's indexes increase");
    picked
}

/// The runs of ops that share statements, as indexes into `batch`, in the order they run.
fn group(batch: &[WriteOp]) -> Vec<Vec<usize>> {
    let mut groups: Vec<Group<'_>> = Vec::new();
    for (i, op) in batch.iter().enumerate() {
        let foot = Footprint::of(op);
        let mut target = None;
        for (g, group) in groups.iter().enumerate().rev() {
            if group.takes(op, &foot) {
                target = Some(g);
                break;
            }
            if group.foot.conflicts(&foot) {
                break;
            }
        }
        match target {
            Some(g) => groups[g].push(i, foot),
            None => groups.push(Group {
                kind: kind(op),
                ops: vec![i],
                foot,
            }),
        }
    }
    groups.into_iter().map(|g| g.ops).collect()
}

/// Which ops share statements: `None` for those that never do.
fn kind(op: &WriteOp) -> Option<u8> {
    Some(match op {
        WriteOp::InsertRecord(_) => 0,
        WriteOp::ChangeRecord { .. } => 1,
        WriteOp::DeleteRecord { .. } => 2,
        WriteOp::InsertMeta(_) => 3,
        WriteOp::PutMeta(_) => 4,
        WriteOp::DeleteMeta(_) => 5,
        WriteOp::ExpectMeta { .. } => 6,
        WriteOp::PutVersion { row, .. } => match &**row {
            Row::Record {
                version: RecordVersion::Live(_),
                ..
            } => 7,
            Row::Record {
                version: RecordVersion::Gone(_),
                ..
            } => 8,
            Row::Meta {
                version: MetaVersion::Value { .. },
                ..
            } => 9,
            Row::Meta {
                version: MetaVersion::Gone { .. },
                ..
            } => 10,
        },
        WriteOp::ExpectVersion { .. } => 11,
        WriteOp::MarkClean { .. } => 12,
        WriteOp::DropTombstone { .. } => 13,
        WriteOp::PutSharedMeta(_) => 14,
        WriteOp::DeleteIdentityIfUnlinked { .. }
        | WriteOp::ExpectUnlinked { .. }
        | WriteOp::ExpectEmpty
        | WriteOp::ExpectNoData
        | WriteOp::ClearAll => {
            return None;
        }
    })
}

/// Ops of one kind that become the same statements (indexes into the batch).
struct Group<'a> {
    kind: Option<u8>,
    ops: Vec<usize>,
    foot: Footprint<'a>,
}

impl<'a> Group<'a> {
    /// Whether `op` may join: the same kind of op, a kind that shares statements, and no record
    /// or meta row the group already writes.
    fn takes(&self, op: &WriteOp, foot: &Footprint<'_>) -> bool {
        self.kind.is_some()
            && self.kind == kind(op)
            && self.foot.records.is_disjoint(&foot.records)
            && self.foot.meta.is_disjoint(&foot.meta)
    }

    fn push(&mut self, op: usize, foot: Footprint<'a>) {
        self.ops.push(op);
        self.foot.absorb(foot);
    }
}

/// What an op reads or writes, coarsely: two ops whose footprints do not meet give the same
/// result in either order, and so does a batch where one moves past the other. Ids and tokens
/// are borrowed from the batch: a rotation's group holds one of each per record.
#[derive(Default)]
struct Footprint<'a> {
    /// Everything (`ExpectEmpty`, `ClearAll`).
    all: bool,
    /// The ids of the records it reads or changes.
    records: HashSet<&'a str>,
    /// It reads the identity link of every record (an identity removed once no record names
    /// it): any write of a record may depend on it.
    all_records: bool,
    /// The tokens it inserts (unique in the namespace).
    tokens: HashSet<&'a str>,
    /// It removes records whose tokens it does not know (`DeleteRecord`): an insert of any
    /// token may depend on it.
    any_token: bool,
    /// Any meta row (the identities a record delete leaves without records).
    all_meta: bool,
    /// The meta rows it reads or writes, and their `(object_type, key)`.
    meta: HashSet<MetaKey>,
    meta_kinds: HashSet<(String, String)>,
    /// The `(object_type, key)` whose values must stay unique, for rows it writes there: it
    /// reads every row of that kind.
    unique_kinds: HashSet<(String, String)>,
}

impl<'a> Footprint<'a> {
    fn of(op: &'a WriteOp) -> Self {
        let mut foot = Footprint::default();
        let meta = |foot: &mut Footprint, key: &MetaKey, checks_unique: bool| {
            let kind = (key.object_type.clone(), key.key.clone());
            if checks_unique && is_unique_meta(key) {
                foot.unique_kinds.insert(kind.clone());
            }
            foot.meta_kinds.insert(kind);
            foot.meta.insert(key.clone());
        };
        match op {
            WriteOp::InsertRecord(r) => {
                foot.records.insert(&r.id);
                foot.tokens.insert(&r.token);
            }
            WriteOp::ChangeRecord { id, .. } => {
                foot.records.insert(id);
            }
            WriteOp::DeleteRecord { id, .. } => {
                foot.records.insert(id);
                foot.all_records = true;
                foot.any_token = true;
                foot.all_meta = true;
            }
            WriteOp::InsertMeta(row) | WriteOp::PutMeta(row) | WriteOp::PutSharedMeta(row) => {
                meta(&mut foot, &row.key, true)
            }
            WriteOp::DeleteMeta(key) | WriteOp::ExpectMeta { key, .. } => {
                meta(&mut foot, key, false)
            }
            WriteOp::PutVersion { row, .. } => match &**row {
                Row::Record { id, version } => {
                    foot.records.insert(id);
                    match version {
                        RecordVersion::Live(live) => {
                            foot.tokens.insert(&live.token);
                        }
                        RecordVersion::Gone(_) => foot.any_token = true,
                    }
                }
                Row::Meta { key, .. } => meta(&mut foot, key, false),
            },
            WriteOp::ExpectVersion { key, .. }
            | WriteOp::MarkClean { key, .. }
            | WriteOp::DropTombstone { key, .. } => match key {
                RowKey::Record(id) => {
                    foot.records.insert(id);
                }
                RowKey::Meta(key) => meta(&mut foot, key, false),
            },
            WriteOp::DeleteIdentityIfUnlinked { .. } => {
                foot.all_records = true;
                foot.all_meta = true;
            }
            WriteOp::ExpectUnlinked { .. } => foot.all_records = true,
            WriteOp::ExpectEmpty | WriteOp::ExpectNoData | WriteOp::ClearAll => foot.all = true,
        }
        foot
    }

    fn touches_meta(&self) -> bool {
        self.all_meta || !self.meta.is_empty()
    }

    fn touches_records(&self) -> bool {
        self.all_records || !self.records.is_empty() || !self.tokens.is_empty() || self.any_token
    }

    fn conflicts(&self, other: &Footprint<'_>) -> bool {
        self.all
            || other.all
            || !self.records.is_disjoint(&other.records)
            || (self.all_records && other.touches_records())
            || (other.all_records && self.touches_records())
            || !self.tokens.is_disjoint(&other.tokens)
            || (self.any_token && (other.any_token || !other.tokens.is_empty()))
            || (other.any_token && !self.tokens.is_empty())
            || (self.all_meta && other.touches_meta())
            || (other.all_meta && self.touches_meta())
            || !self.meta.is_disjoint(&other.meta)
            || !self.unique_kinds.is_disjoint(&other.meta_kinds)
            || !other.unique_kinds.is_disjoint(&self.meta_kinds)
    }

    fn absorb(&mut self, other: Footprint<'a>) {
        self.all |= other.all;
        self.records.extend(other.records);
        self.all_records |= other.all_records;
        self.tokens.extend(other.tokens);
        self.any_token |= other.any_token;
        self.all_meta |= other.all_meta;
        self.meta.extend(other.meta);
        self.meta_kinds.extend(other.meta_kinds);
        self.unique_kinds.extend(other.unique_kinds);
    }
}

/// What a statement binds after the namespace (`?1`) and its JSON array (`?2`).
#[derive(Clone, Copy)]
enum Extra {
    None,
    /// `?3`: the batch's revision.
    Rev,
    /// `?3`: the batch's revision; `?4`: its time.
    RevAt,
}

/// ns is always `?1`; a run's JSON array is `?2`. The new values of records move into the
/// statements as they are encoded (each is freed once in its chunk), so that a batch of a
/// million reseals (a rotation) does not also hold every new value until it commits; what the
/// ops keep is what [`super::SqlStorage::diagnose`] reads when the batch fails (ids, tokens,
/// meta rows, and the value a change expects, to name the record that no longer holds it).
fn emit(ns: &str, stamp: Stamp, run: &mut [&mut WriteOp], out: &mut Vec<Statement>) {
    let rev = stamp.rev.to_string();
    // Items are encoded as they come: a batch of a million ops (a rotation) holds its ops and
    // the encoded arrays, never a JSON tree of every op as well.
    let with_items = |out: &mut Vec<Statement>,
                      sqls: &[(&str, Extra)],
                      items: &mut dyn Iterator<Item = Json>| {
        for chunk in json_chunks(items) {
            for (sql, extra) in sqls {
                let mut params = vec![ns.into(), SqlValue::Text(chunk.clone())];
                match extra {
                    Extra::None => {}
                    Extra::Rev => params.push(rev.as_str().into()),
                    Extra::RevAt => {
                        params.push(rev.as_str().into());
                        params.push(SqlValue::Integer(stamp.at));
                    }
                }
                out.push(Statement::new(sql, params));
            }
        }
    };
    let with_array = |out: &mut Vec<Statement>, sqls: &[(&str, Extra)], items: Vec<Json>| {
        with_items(out, sqls, &mut items.into_iter())
    };
    // A check and the write it guards, each over an array of only the fields it reads.
    let with_checked = |out: &mut Vec<Statement>,
                        check: &str,
                        (write, extra): (&str, Extra),
                        items: &mut dyn Iterator<Item = (Json, Json)>| {
        for (checked, written) in json_chunk_pairs(items) {
            out.push(Statement::new(
                check,
                vec![ns.into(), SqlValue::Text(checked)],
            ));
            let mut params = vec![ns.into(), SqlValue::Text(written)];
            if let Extra::Rev = extra {
                params.push(rev.as_str().into());
            }
            out.push(Statement::new(write, params));
        }
    };
    let Some(first) = run.first().map(|op| &**op) else {
        return;
    };
    match first {
        WriteOp::InsertRecord(_) => {
            let mut items = run.iter_mut().filter_map(|op| match &mut **op {
                WriteOp::InsertRecord(r) => {
                    let value = std::mem::take(&mut r.value);
                    Some((Json::from(r.id.as_str()), record_json(r, value, true)))
                }
                _ => None,
            });
            with_checked(
                out,
                CHECK_TOMBSTONED_IDS,
                (INSERT_RECORDS, Extra::None),
                &mut items,
            );
        }
        WriteOp::ChangeRecord { .. } => {
            let mut items = run.iter_mut().filter_map(|op| match &mut **op {
                WriteOp::ChangeRecord { id, change, at } => Some(change_json(id, change, *at)),
                _ => None,
            });
            with_checked(out, CHECK_CHANGES, (APPLY_CHANGES, Extra::Rev), &mut items);
        }
        WriteOp::DeleteRecord { .. } => {
            let items = run
                .iter()
                .filter_map(|op| match op {
                    WriteOp::DeleteRecord { id, if_expired_at } => {
                        Some(json!({ "key": sort_key(id), "if_expired_at": if_expired_at }))
                    }
                    _ => None,
                })
                .collect();
            let [tomb_identities, kept, identities] = prune_identities(NAMED);
            let tomb_records = tombstone_records(NAMED);
            let records = delete_records(NAMED);
            let mut sqls = vec![
                (tomb_identities.as_str(), Extra::RevAt),
                (&kept, Extra::None),
                (&identities, Extra::None),
                (&tomb_records, Extra::RevAt),
                (&records, Extra::None),
            ];
            // Only a purge's deletes are conditional (D1 counts statements).
            let conditional = run.iter().any(|op| {
                matches!(
                    op,
                    WriteOp::DeleteRecord {
                        if_expired_at: Some(_),
                        ..
                    }
                )
            });
            if conditional {
                sqls.insert(0, (CHECK_DELETES, Extra::None));
            }
            with_array(out, &sqls, items);
        }
        WriteOp::InsertMeta(_) | WriteOp::PutMeta(_) | WriteOp::PutSharedMeta(_) => {
            let upsert = !matches!(run[0], WriteOp::InsertMeta(_));
            let shared = matches!(run[0], WriteOp::PutSharedMeta(_));
            let rows: Vec<&MetaRow> = run
                .iter()
                .filter_map(|op| match op {
                    WriteOp::InsertMeta(row)
                    | WriteOp::PutMeta(row)
                    | WriteOp::PutSharedMeta(row) => Some(row),
                    _ => None,
                })
                .collect();
            let items = rows.iter().map(|row| meta_json(row)).collect();
            with_array(
                out,
                &[(if upsert { PUT_META } else { INSERT_META }, Extra::Rev)],
                items,
            );
            let replicated: Vec<Json> = rows
                .iter()
                .filter(|row| is_replicated(&row.key))
                .map(|row| meta_json(row))
                .collect();
            with_array(out, &[(CLEAR_META_TOMBSTONES, Extra::None)], replicated);
            let unique: Vec<Json> = rows
                .iter()
                .filter(|row| !shared && is_unique_meta(&row.key))
                .map(|row| meta_json(row))
                .collect();
            with_array(out, &[(CHECK_UNIQUE_META, Extra::None)], unique);
        }
        WriteOp::DeleteMeta(_) => {
            let keys: Vec<&MetaKey> = run
                .iter()
                .filter_map(|op| match op {
                    WriteOp::DeleteMeta(key) => Some(key),
                    _ => None,
                })
                .collect();
            let replicated = keys
                .iter()
                .filter(|key| is_replicated(key))
                .map(|key| meta_key_json(key, None))
                .collect();
            with_array(out, &[(TOMBSTONE_META, Extra::RevAt)], replicated);
            let items = keys.iter().map(|key| meta_key_json(key, None)).collect();
            with_array(out, &[(DELETE_META, Extra::None)], items);
        }
        WriteOp::ExpectMeta { .. } => {
            let items = run
                .iter()
                .filter_map(|op| match op {
                    WriteOp::ExpectMeta { key, value } => {
                        Some(meta_key_json(key, value.as_deref()))
                    }
                    _ => None,
                })
                .collect();
            with_array(out, &[(CHECK_META, Extra::None)], items);
        }
        WriteOp::PutVersion { .. } => {
            let items: Vec<Json> = run
                .iter()
                .filter_map(|op| match op {
                    WriteOp::PutVersion { row, dirty } => Some(version_json(row, *dirty)),
                    _ => None,
                })
                .collect();
            let sqls: [&str; 2] = match kind(run[0]) {
                Some(7) => [PUT_RECORD_VERSIONS, CLEAR_RECORD_TOMBSTONES],
                Some(8) => [PUT_RECORD_TOMBSTONES, DELETE_RECORD_VERSIONS],
                Some(9) => [PUT_META_VERSIONS, CLEAR_META_TOMBSTONES],
                _ => [PUT_META_TOMBSTONES, DELETE_META],
            };
            with_array(
                out,
                &[(sqls[0], Extra::None), (sqls[1], Extra::None)],
                items,
            );
        }
        WriteOp::ExpectVersion { .. } | WriteOp::MarkClean { .. } => {
            let expect = matches!(run[0], WriteOp::ExpectVersion { .. });
            let (mut records, mut meta) = (Vec::new(), Vec::new());
            for op in run {
                let (key, field, n) = match op {
                    WriteOp::ExpectVersion { key, seq } => (key, "seq", *seq),
                    WriteOp::MarkClean { key, dirty } => (key, "dirty", Some(*dirty)),
                    _ => continue,
                };
                let mut item = row_key_json(key);
                item[field] = Json::from(n);
                match key {
                    RowKey::Record(_) => records.push(item),
                    RowKey::Meta(_) => meta.push(item),
                }
            }
            // Only the tables the run's keys live in (D1 counts statements).
            let (on_records, on_meta) = if expect {
                (EXPECT_RECORD_VERSIONS, EXPECT_META_VERSIONS)
            } else {
                (CLEAN_RECORDS, CLEAN_META)
            };
            if !expect {
                let all = records.iter().chain(&meta).cloned().collect();
                with_array(out, &[(CLEAN_TOMBSTONES, Extra::None)], all);
            }
            with_array(out, &[(on_records, Extra::None)], records);
            with_array(out, &[(on_meta, Extra::None)], meta);
        }
        WriteOp::DropTombstone { .. } => {
            let items = run
                .iter()
                .filter_map(|op| match op {
                    WriteOp::DropTombstone { key, seq } => {
                        let mut item = row_key_json(key);
                        item["seq"] = Json::from(*seq);
                        Some(item)
                    }
                    _ => None,
                })
                .collect();
            // The floor first: a dropped tombstone may hold the greatest seq, and seqs never go
            // back.
            out.push(Statement::new(RAISE_SEQ_FLOOR, vec![ns.into()]));
            with_array(out, &[(DROP_TOMBSTONES, Extra::None)], items);
        }
        WriteOp::DeleteIdentityIfUnlinked {
            identity_id,
            emptied,
        } => {
            for (sql, stamps) in prune_unlinked_identity(*emptied) {
                let mut params = vec![ns.into(), identity_id.as_str().into()];
                if stamps {
                    params.push(rev.as_str().into());
                    params.push(SqlValue::Integer(stamp.at));
                }
                out.push(Statement::new(&sql, params));
            }
        }
        WriteOp::ExpectUnlinked { identity_id } => out.push(Statement::new(
            CHECK_UNLINKED,
            vec![ns.into(), identity_id.as_str().into()],
        )),
        WriteOp::ExpectEmpty => out.push(Statement::new(CHECK_EMPTY, vec![ns.into()])),
        WriteOp::ExpectNoData => out.push(Statement::new(CHECK_NO_DATA, vec![ns.into()])),
        WriteOp::ClearAll => {
            for sql in [RAISE_SEQ_FLOOR, CLEAR_RECORDS, CLEAR_TOMBSTONES, CLEAR_META] {
                out.push(Statement::new(sql, vec![ns.into()]));
            }
        }
    }
}

/// A record as the insert statements read it; `dirty` only matters to `PutVersion`.
/// `r` as JSON, with `value` as its value (moved in, not copied).
fn record_json(r: &Record, value: String, dirty: bool) -> Json {
    json!({
        "id": r.id, "token": r.token, "value": value,
        "created_at": r.created_at, "updated_at": r.updated_at,
        "expires_at": r.expires_at, "soft_deleted_at": r.soft_deleted_at,
        "id_key": sort_key(&r.id), "token_key": sort_key(&r.token),
        "password_id": r.password_id,
        "value_rev": r.revs.value.to_string(), "seal_rev": r.revs.seal.to_string(),
        "expires_rev": r.revs.expires.to_string(), "deleted_rev": r.revs.deleted.to_string(),
        "dirty": dirty,
    })
}

fn version_json(row: &Row, dirty: bool) -> Json {
    match row {
        Row::Record {
            id,
            version: RecordVersion::Live(live),
        } => {
            let mut record = Record::from_live(id.clone(), live.clone());
            let value = std::mem::take(&mut record.value);
            record_json(&record, value, dirty)
        }
        Row::Record {
            id,
            version: RecordVersion::Gone(t),
        } => json!({
            "id": id, "key": sort_key(id), "rev": t.rev.to_string(), "deleted_at": t.deleted_at,
            "reason": t.reason.as_str(), "dirty": dirty,
        }),
        Row::Meta {
            key,
            version: MetaVersion::Value { rev, value },
        } => json!({
            "type": key.object_type, "id": key.object_id, "key": key.key, "value": value,
            "rev": rev.to_string(), "dirty": dirty,
        }),
        Row::Meta {
            key,
            version:
                MetaVersion::Gone {
                    rev,
                    deleted_at,
                    emptied,
                },
        } => json!({
            "type": key.object_type, "id": key.object_id, "key": key.key,
            "rev": rev.to_string(), "deleted_at": deleted_at, "dirty": dirty,
            "reason": emptied.then_some("emptied"),
        }),
    }
}

/// A change as [`CHECK_CHANGES`] reads it (what the record must still be) and as
/// [`APPLY_CHANGES`] reads it (what it becomes).
/// What the check and the write of `change` read; a new value moves into the write's JSON.
fn change_json(id: &str, change: &mut RecordChange, at: i64) -> (Json, Json) {
    let key = sort_key(id);
    match change {
        RecordChange::Renew { expires_at } => (
            json!({ "key": key, "op": "renew" }),
            json!({ "key": key, "op": "renew", "at": at, "expires_at": expires_at }),
        ),
        RecordChange::SoftDelete { if_expired_at } => (
            json!({ "key": key, "op": "soft_delete", "if_expired_at": if_expired_at }),
            json!({ "key": key, "op": "soft_delete", "at": at }),
        ),
        RecordChange::Restore => (
            json!({ "key": key, "op": "restore" }),
            json!({ "key": key, "op": "restore", "at": at }),
        ),
        RecordChange::Reseal {
            expect,
            value,
            password_id,
        } => (
            json!({ "key": key, "op": "reseal", "expect": expect }),
            json!({ "key": key, "op": "reseal", "at": at, "value": std::mem::take(value), "password_id": password_id }),
        ),
        RecordChange::Update {
            expect,
            value,
            password_id,
        } => (
            json!({ "key": key, "op": "update", "expect": expect }),
            json!({ "key": key, "op": "update", "at": at, "value": std::mem::take(value), "password_id": password_id }),
        ),
    }
}

/// The columns every insert of a whole record writes, in this order.
macro_rules! record_columns {
    () => {
        "(ns, id, token, value, created_at, updated_at, expires_at, soft_deleted_at, id_key,
        token_key, password_id, value_rev, seal_rev, expires_rev, deleted_rev, seq, dirty)"
    };
}

/// The values of [`record_columns`] up to `deleted_rev`, from a JSON record `r` (`seq` and
/// `dirty` follow, as each statement sets them).
macro_rules! record_fields {
    () => {
        "
    SELECT ?1, r.value->>'id', r.value->>'token', r.value->>'value', r.value->>'created_at',
        r.value->>'updated_at', r.value->>'expires_at', r.value->>'soft_deleted_at',
        r.value->>'id_key', r.value->>'token_key', r.value->>'password_id',
        r.value->>'value_rev', r.value->>'seal_rev', r.value->>'expires_rev',
        r.value->>'deleted_rev', "
    };
}

/// A record id is never reused: a tombstone holds it.
pub(super) const CHECK_TOMBSTONED_IDS: &str = "INSERT INTO vaultstore_guard (failed)
    SELECT 'id_taken' FROM json_each(?2) AS r
    CROSS JOIN vaultstore_tombstones AS t ON t.ns = ?1 AND t.kind = 'record'
        AND t.k1 = r.value AND t.k2 = '' AND t.k3 = ''";

pub(super) const INSERT_RECORDS: &str = concat!(
    "INSERT INTO vaultstore_records ",
    record_columns!(),
    record_fields!(),
    seq_and_local_mark!(r),
    "
    FROM json_each(?2) AS r"
);

/// `RecordChange::apply_to` in SQL, first its failures: a missing record; a reseal whose
/// expected value is gone; an update whose expected value is gone or whose record is
/// soft-deleted; a purge of a record no longer expired (`at > expiresAt`).
pub(super) const CHECK_CHANGES: &str = "INSERT INTO vaultstore_guard (failed)
    SELECT CASE WHEN r.id IS NULL THEN 'record_missing' ELSE 'record_changed' END
    FROM json_each(?2) AS c
    LEFT JOIN vaultstore_records AS r ON r.ns = ?1 AND r.id_key = c.value->>'key'
    WHERE r.id IS NULL
        OR (c.value->>'op' IN ('reseal', 'update') AND r.value IS NOT c.value->>'expect')
        OR (c.value->>'op' = 'update' AND r.soft_deleted_at IS NOT NULL)
        OR (c.value->>'if_expired_at' IS NOT NULL AND NOT (c.value->>'if_expired_at' > r.expires_key))";

/// Then the change (`?3` the batch's revision), written back over the record as an upsert on
/// its unique `(ns, id_key)`: the changed rows are found through the JSON array (a `CROSS JOIN`
/// fixes that order; with `UPDATE … FROM` the planners of some SQLite releases walk the whole
/// namespace and probe the array instead). A soft delete of a soft-deleted record and a restore
/// of a live one are not selected, so they leave it as it is, `updatedAt` and seq included.
pub(super) const APPLY_CHANGES: &str = concat!(
    "INSERT INTO vaultstore_records ",
    record_columns!(),
    "
    SELECT r.ns, r.id, r.token,
        CASE WHEN c.value->>'op' IN ('reseal', 'update') THEN c.value->>'value' ELSE r.value END,
        r.created_at,
        max(r.updated_at, c.value->>'at'),
        CASE c.value->>'op' WHEN 'renew' THEN c.value->>'expires_at' ELSE r.expires_at END,
        CASE c.value->>'op'
            WHEN 'soft_delete' THEN c.value->>'at'
            WHEN 'restore' THEN NULL
            ELSE r.soft_deleted_at END,
        r.id_key, r.token_key,
        CASE WHEN c.value->>'op' IN ('reseal', 'update') THEN c.value->>'password_id'
            ELSE r.password_id END,
        CASE c.value->>'op' WHEN 'update' THEN ?3 ELSE r.value_rev END,
        CASE WHEN c.value->>'op' IN ('reseal', 'update') THEN ?3 ELSE r.seal_rev END,
        CASE c.value->>'op' WHEN 'renew' THEN ?3 ELSE r.expires_rev END,
        CASE WHEN c.value->>'op' IN ('soft_delete', 'restore') THEN ?3 ELSE r.deleted_rev END,
        ",
    seq_and_local_mark!(c),
    "
    FROM json_each(?2) AS c
    CROSS JOIN vaultstore_records AS r ON r.ns = ?1 AND r.id_key = c.value->>'key'
    WHERE NOT (c.value->>'op' = 'soft_delete' AND r.soft_deleted_at IS NOT NULL)
        AND NOT (c.value->>'op' = 'restore' AND r.soft_deleted_at IS NULL)
    ON CONFLICT (ns, id_key) DO UPDATE SET
        value = excluded.value,
        updated_at = excluded.updated_at,
        expires_at = excluded.expires_at,
        soft_deleted_at = excluded.soft_deleted_at,
        password_id = excluded.password_id,
        value_rev = excluded.value_rev,
        seal_rev = excluded.seal_rev,
        expires_rev = excluded.expires_rev,
        deleted_rev = excluded.deleted_rev,
        seq = excluded.seq,
        dirty = excluded.dirty"
);

/// A purge never removes a record renewed meanwhile.
pub(super) const CHECK_DELETES: &str = "INSERT INTO vaultstore_guard (failed)
    SELECT 'record_changed'
    FROM json_each(?2) AS d
    CROSS JOIN vaultstore_records AS r ON r.ns = ?1 AND r.id_key = d.value->>'key'
    WHERE d.value->>'if_expired_at' IS NOT NULL AND NOT (d.value->>'if_expired_at' > r.expires_key)";

/// The records a delete takes: those a batch names in the JSON array `?2`, or every record
/// expired at `?2` (a purge), as the `FROM` and `WHERE` of a select over them as `r`; with the
/// parameters its tombstones take their revision and time from.
#[derive(Clone, Copy)]
pub(super) struct Deleted {
    from: &'static str,
    filter: &'static str,
    /// The batch's revision.
    rev: &'static str,
    /// The batch's time (`deletedAt`).
    at: &'static str,
}

/// `?3` and `?4` are the batch's revision and time.
pub(super) const NAMED: Deleted = Deleted {
    from: "json_each(?2) AS d
        CROSS JOIN vaultstore_records AS r ON r.ns = ?1 AND r.id_key = d.value->>'key'",
    filter: "true",
    rev: "?3",
    at: "?4",
};
/// A purge's chunk: the first `?3` records expired at `?2` in expiry order, through the
/// expiry index `(ns, expires_key, id_key)`. The order is total, so every statement of the
/// chunk's batch picks the same records (the records go last, after their identities). `?4`
/// is the purge's revision.
pub(super) const EXPIRED_CHUNK: Deleted = Deleted {
    from: "vaultstore_records AS r",
    filter: "r.rowid IN (SELECT e.rowid FROM vaultstore_records AS e
            WHERE e.ns = ?1 AND e.expires_key < ?2 ORDER BY e.expires_key, e.id_key LIMIT ?3)",
    rev: "?4",
    at: "?2",
};

const TOMBSTONE_UPSERT: &str = tombstone_upsert!();

/// Given a `WITH` clause ending in `doomed (object_id)`: a tombstone for every row of those
/// `password_identity` objects (stamped with `rev` and `at`), then their removal.
/// `reason`: `'emptied'` when the identities lost their last records to a deletion (FORMAT.md
/// "Sync"), `NULL` when they are retired.
fn doomed_identity_statements(with: &str, rev: &str, at: &str, reason: &str) -> [String; 2] {
    let base = seq_base!();
    let rows = "doomed CROSS JOIN vaultstore_meta AS i ON i.ns = ?1
        AND i.object_type = 'password_identity' AND i.object_id = doomed.object_id";
    [
        format!(
            "{with}
    INSERT INTO vaultstore_tombstones (ns, kind, k1, k2, k3, rev, deleted_at, reason, seq, dirty)
    SELECT ?1, 'meta', i.object_type, i.object_id, i.key, {rev}, {at}, {reason},
        {base} + row_number() OVER (), {base} + row_number() OVER ()
    FROM {rows} WHERE true
    {TOMBSTONE_UPSERT}"
        ),
        format!(
            "{with}\n    DELETE FROM vaultstore_meta WHERE rowid IN (SELECT i.rowid FROM {rows})"
        ),
    ]
}

/// Given the same `WITH` clause as [`doomed_identity_statements`], before their removal: the
/// live version of each row the emptied removal replaces, kept in its local row
/// ([`crate::storage::replaced_key`]: `sync/replaced/<objectId>/<key>` = `"<rev> <value>"`).
fn keep_replaced_statement(with: &str) -> String {
    format!(
        "{with}
    INSERT INTO vaultstore_meta (ns, object_type, object_id, key, value, rev, seq, dirty)
    SELECT ?1, 'sync', 'replaced', i.object_id || '/' || i.key, i.rev || ' ' || i.value, '', 0, NULL
    FROM doomed CROSS JOIN vaultstore_meta AS i ON i.ns = ?1
        AND i.object_type = 'password_identity' AND i.object_id = doomed.object_id
    WHERE i.rev <> ''
    ON CONFLICT (ns, object_type, object_id, key) DO UPDATE SET value = excluded.value"
    )
}

/// The identities left without records by the deleted ones go with them, and so do their
/// further secret slots (objects with a row `identity` naming them, `OWNER_KEY`; FORMAT.md
/// "Password identities"), each row leaving an emptied tombstone and its version kept
/// ([`keep_replaced_statement`]): the tombstones (with the deletion's revision and time), the
/// kept versions, the removal. Runs before the records are deleted, so it still sees them;
/// found through the identity index `(ns, password_id, id_key)`.
pub(super) fn prune_identities(deleted: Deleted) -> [String; 3] {
    let Deleted {
        from,
        filter,
        rev,
        at,
    } = deleted;
    let with = format!(
        "WITH gone (id_key, identity) AS (
        SELECT r.id_key, r.password_id FROM {from} WHERE {filter} AND r.password_id IS NOT NULL
    ),
    linked (identity) AS (
        SELECT DISTINCT identity FROM gone
    ),
    pruned (identity) AS (
        SELECT linked.identity FROM linked
        WHERE NOT EXISTS (
            SELECT 1 FROM vaultstore_records AS o
            WHERE o.ns = ?1 AND o.password_id = linked.identity
                AND o.id_key NOT IN (SELECT id_key FROM gone))
    ),
    doomed (object_id) AS (
        SELECT identity FROM pruned
        UNION ALL
        SELECT s.object_id FROM pruned
        CROSS JOIN vaultstore_meta AS s ON s.ns = ?1 AND s.object_type = 'password_identity'
            AND s.key = 'identity' AND s.value = pruned.identity
    )"
    );
    let [tombstones, removal] = doomed_identity_statements(&with, rev, at, "'emptied'");
    [tombstones, keep_replaced_statement(&with), removal]
}

/// `ExpectUnlinked`: no record may name the identity `?2` (one probe of the link index).
pub(super) const CHECK_UNLINKED: &str = "INSERT INTO vaultstore_guard (failed)
    SELECT 'meta_changed' WHERE EXISTS (
        SELECT 1 FROM vaultstore_records WHERE ns = ?1 AND password_id = ?2)";

/// `DeleteIdentityIfUnlinked`: the identity `?2` and its slots, unless a record names it, their
/// tombstones marked `emptied` (and their versions kept) if asked. Each statement with whether
/// it takes the batch's revision and time (`?3`, `?4`) too.
pub(super) fn prune_unlinked_identity(emptied: bool) -> Vec<(String, bool)> {
    let with = "WITH unlinked (identity) AS (
        SELECT ?2 WHERE NOT EXISTS (
            SELECT 1 FROM vaultstore_records AS o WHERE o.ns = ?1 AND o.password_id = ?2)
    ),
    doomed (object_id) AS (
        SELECT identity FROM unlinked
        UNION ALL
        SELECT s.object_id FROM unlinked
        CROSS JOIN vaultstore_meta AS s ON s.ns = ?1 AND s.object_type = 'password_identity'
            AND s.key = 'identity' AND s.value = unlinked.identity
    )";
    let reason = if emptied { "'emptied'" } else { "NULL" };
    let [tombstones, removal] = doomed_identity_statements(with, "?3", "?4", reason);
    let mut statements = vec![(tombstones, true)];
    if emptied {
        statements.push((keep_replaced_statement(with), false));
    }
    statements.push((removal, false));
    statements
}

pub(super) fn tombstone_records(deleted: Deleted) -> String {
    let Deleted {
        from,
        filter,
        rev,
        at,
    } = deleted;
    let base = seq_base!();
    format!(
        "INSERT INTO vaultstore_tombstones (ns, kind, k1, k2, k3, rev, deleted_at, reason, seq, dirty)
    SELECT ?1, 'record', r.id, '', '', {rev}, {at}, 'deleted',
        {base} + row_number() OVER (), {base} + row_number() OVER ()
    FROM {from} WHERE {filter}
    {TOMBSTONE_UPSERT}"
    )
}

pub(super) fn delete_records(deleted: Deleted) -> String {
    let Deleted { from, filter, .. } = deleted;
    format!(
        "DELETE FROM vaultstore_records WHERE rowid IN (SELECT r.rowid FROM {from} WHERE {filter})"
    )
}

/// A replicated row (`rep`) takes the batch's revision `?3`, a seq and a dirty mark; a local
/// row none.
macro_rules! meta_insert {
    () => {
        concat!(
            "INSERT INTO vaultstore_meta (ns, object_type, object_id, key, value, rev, seq, dirty)
    SELECT ?1, m.value->>'type', m.value->>'id', m.value->>'key', m.value->>'value',
        CASE WHEN m.value->>'rep' THEN ?3 ELSE '' END,
        CASE WHEN m.value->>'rep' THEN ",
            seq_base!(),
            " + m.key + 1 ELSE 0 END,
        CASE WHEN m.value->>'rep' THEN ",
            seq_base!(),
            " + m.key + 1 END
    FROM json_each(?2) AS m"
        )
    };
}

pub(super) const INSERT_META: &str = meta_insert!();

/// `WHERE true` keeps SQLite from reading `ON CONFLICT` as a join constraint. A replicated row
/// is always stamped (rows of one object are written together under one revision, so each
/// takes it, changed or not); a local row that already holds its value is not rewritten (D1
/// bills rows written).
pub(super) const PUT_META: &str = concat!(
    meta_insert!(),
    " WHERE true
    ON CONFLICT (ns, object_type, object_id, key) DO UPDATE SET value = excluded.value,
        rev = excluded.rev, seq = excluded.seq, dirty = excluded.dirty
    WHERE vaultstore_meta.value IS NOT excluded.value OR excluded.rev <> ''"
);

/// A meta row written again replaces its tombstone.
pub(super) const CLEAR_META_TOMBSTONES: &str = "DELETE FROM vaultstore_tombstones WHERE rowid IN (
        SELECT t.rowid FROM json_each(?2) AS j
        CROSS JOIN vaultstore_tombstones AS t ON t.ns = ?1 AND t.kind = 'meta'
            AND t.k1 = j.value->>'type' AND t.k2 = j.value->>'id' AND t.k3 = j.value->>'key')";

/// `UNIQUE_META_VALUES` on local writes, after them (so two rows of one batch count too):
/// another object holding a written value fails the batch.
pub(super) const CHECK_UNIQUE_META: &str = "INSERT INTO vaultstore_guard (failed)
    SELECT 'unique_taken' FROM json_each(?2) AS m
    WHERE EXISTS (SELECT 1 FROM vaultstore_meta AS o
        WHERE o.ns = ?1 AND o.object_type = m.value->>'type' AND o.key = m.value->>'key'
            AND o.value = m.value->>'value' AND o.object_id IS NOT m.value->>'id')";

/// A tombstone for each replicated meta row about to be deleted that exists (`?3`, `?4`: the
/// batch's revision and time).
pub(super) const TOMBSTONE_META: &str = concat!(
    "INSERT INTO vaultstore_tombstones (ns, kind, k1, k2, k3, rev, deleted_at, reason, seq, dirty)
    SELECT ?1, 'meta', m.object_type, m.object_id, m.key, ?3, ?4, NULL, ",
    seq_and_local_mark!(j),
    "
    FROM json_each(?2) AS j
    CROSS JOIN vaultstore_meta AS m ON m.ns = ?1 AND m.object_type = j.value->>'type'
        AND m.object_id = j.value->>'id' AND m.key = j.value->>'key'
    WHERE true
    ",
    tombstone_upsert!()
);

pub(super) const DELETE_META: &str = "DELETE FROM vaultstore_meta WHERE rowid IN (
        SELECT m.rowid FROM json_each(?2) AS j
        CROSS JOIN vaultstore_meta AS m ON m.ns = ?1 AND m.object_type = j.value->>'type'
            AND m.object_id = j.value->>'id' AND m.key = j.value->>'key')";

pub(super) const CHECK_META: &str = "INSERT INTO vaultstore_guard (failed)
    SELECT 'meta_changed' FROM json_each(?2) AS e
    WHERE (SELECT m.value FROM vaultstore_meta AS m
           WHERE m.ns = ?1 AND m.object_type = e.value->>'type'
               AND m.object_id = e.value->>'id' AND m.key = e.value->>'key')
        IS NOT e.value->>'value'";

/// `PutVersion` of live records: each replaces whatever its id holds, at its own revisions.
pub(super) const PUT_RECORD_VERSIONS: &str = concat!(
    "INSERT INTO vaultstore_records ",
    record_columns!(),
    record_fields!(),
    seq_and_dirty!(r),
    "
    FROM json_each(?2) AS r WHERE true
    ON CONFLICT (ns, id_key) DO UPDATE SET
        token = excluded.token, token_key = excluded.token_key, value = excluded.value,
        created_at = excluded.created_at, updated_at = excluded.updated_at,
        expires_at = excluded.expires_at, soft_deleted_at = excluded.soft_deleted_at,
        password_id = excluded.password_id, value_rev = excluded.value_rev,
        seal_rev = excluded.seal_rev, expires_rev = excluded.expires_rev,
        deleted_rev = excluded.deleted_rev, seq = excluded.seq, dirty = excluded.dirty"
);

pub(super) const CLEAR_RECORD_TOMBSTONES: &str =
    "DELETE FROM vaultstore_tombstones WHERE rowid IN (
        SELECT t.rowid FROM json_each(?2) AS j
        CROSS JOIN vaultstore_tombstones AS t ON t.ns = ?1 AND t.kind = 'record'
            AND t.k1 = j.value->>'id' AND t.k2 = '' AND t.k3 = '')";

pub(super) const PUT_RECORD_TOMBSTONES: &str = concat!(
    "INSERT INTO vaultstore_tombstones (ns, kind, k1, k2, k3, rev, deleted_at, reason, seq, dirty)
    SELECT ?1, 'record', t.value->>'id', '', '', t.value->>'rev', t.value->>'deleted_at',
        t.value->>'reason', ",
    seq_and_dirty!(t),
    "
    FROM json_each(?2) AS t WHERE true
    ",
    tombstone_upsert!()
);

pub(super) const DELETE_RECORD_VERSIONS: &str = "DELETE FROM vaultstore_records WHERE rowid IN (
        SELECT r.rowid FROM json_each(?2) AS j
        CROSS JOIN vaultstore_records AS r ON r.ns = ?1 AND r.id_key = j.value->>'key')";

pub(super) const PUT_META_VERSIONS: &str = concat!(
    "INSERT INTO vaultstore_meta (ns, object_type, object_id, key, value, rev, seq, dirty)
    SELECT ?1, m.value->>'type', m.value->>'id', m.value->>'key', m.value->>'value',
        m.value->>'rev', ",
    seq_and_dirty!(m),
    "
    FROM json_each(?2) AS m WHERE true
    ON CONFLICT (ns, object_type, object_id, key) DO UPDATE SET value = excluded.value,
        rev = excluded.rev, seq = excluded.seq, dirty = excluded.dirty"
);

pub(super) const PUT_META_TOMBSTONES: &str = concat!(
    "INSERT INTO vaultstore_tombstones (ns, kind, k1, k2, k3, rev, deleted_at, reason, seq, dirty)
    SELECT ?1, 'meta', m.value->>'type', m.value->>'id', m.value->>'key', m.value->>'rev',
        m.value->>'deleted_at', m.value->>'reason', ",
    seq_and_dirty!(m),
    "
    FROM json_each(?2) AS m WHERE true
    ",
    tombstone_upsert!()
);

/// `ExpectVersion` of records (`?2` items of [`row_key_json`] with the expected `seq`, null for
/// none): the seq of the live record, else of its tombstone, must be that one.
pub(super) const EXPECT_RECORD_VERSIONS: &str = "INSERT INTO vaultstore_guard (failed)
    SELECT 'record_changed' FROM json_each(?2) AS e
    WHERE coalesce(
        (SELECT r.seq FROM vaultstore_records AS r
         WHERE r.ns = ?1 AND r.id_key = e.value->>'key'),
        (SELECT t.seq FROM vaultstore_tombstones AS t
         WHERE t.ns = ?1 AND t.kind = 'record' AND t.k1 = e.value->>'k1' AND t.k2 = ''
             AND t.k3 = '')) IS NOT e.value->>'seq'";

/// `ExpectVersion` of meta rows, likewise. A local row (seq 0: every replicated row has a seq
/// of at least 1, the upgrade to schema 2 included) is no version.
pub(super) const EXPECT_META_VERSIONS: &str = "INSERT INTO vaultstore_guard (failed)
    SELECT 'meta_changed' FROM json_each(?2) AS e
    WHERE coalesce(
        (SELECT nullif(m.seq, 0) FROM vaultstore_meta AS m
         WHERE m.ns = ?1 AND m.object_type = e.value->>'k1' AND m.object_id = e.value->>'k2'
             AND m.key = e.value->>'k3'),
        (SELECT t.seq FROM vaultstore_tombstones AS t
         WHERE t.ns = ?1 AND t.kind = 'meta' AND t.k1 = e.value->>'k1'
             AND t.k2 = e.value->>'k2' AND t.k3 = e.value->>'k3')) IS NOT e.value->>'seq'";

/// `MarkClean` (`?2` items of [`row_key_json`] with the `dirty` mark the server has): the mark
/// goes only if it is still that one. Nothing else of the row moves, its seq included.
pub(super) const CLEAN_RECORDS: &str = "UPDATE vaultstore_records SET dirty = NULL
    WHERE rowid IN (SELECT r.rowid FROM json_each(?2) AS c
        CROSS JOIN vaultstore_records AS r ON r.ns = ?1 AND r.id_key = c.value->>'key'
        WHERE r.dirty = c.value->>'dirty')";

pub(super) const CLEAN_META: &str = "UPDATE vaultstore_meta SET dirty = NULL
    WHERE rowid IN (SELECT m.rowid FROM json_each(?2) AS c
        CROSS JOIN vaultstore_meta AS m ON m.ns = ?1 AND m.object_type = c.value->>'k1'
            AND m.object_id = c.value->>'k2' AND m.key = c.value->>'k3'
        WHERE m.dirty = c.value->>'dirty')";

pub(super) const CLEAN_TOMBSTONES: &str = "UPDATE vaultstore_tombstones SET dirty = NULL
    WHERE rowid IN (SELECT t.rowid FROM json_each(?2) AS c
        CROSS JOIN vaultstore_tombstones AS t ON t.ns = ?1 AND t.kind = c.value->>'kind'
            AND t.k1 = c.value->>'k1' AND t.k2 = c.value->>'k2' AND t.k3 = c.value->>'k3'
        WHERE t.dirty = c.value->>'dirty')";

/// `DropTombstone` (`?2` items of [`row_key_json`] with the tombstone's `seq`): each goes only
/// while it is still that clean tombstone (one lookup on the tombstones' key each).
pub(super) const DROP_TOMBSTONES: &str = "DELETE FROM vaultstore_tombstones
    WHERE rowid IN (SELECT t.rowid FROM json_each(?2) AS c
        CROSS JOIN vaultstore_tombstones AS t ON t.ns = ?1 AND t.kind = c.value->>'kind'
            AND t.k1 = c.value->>'k1' AND t.k2 = c.value->>'k2' AND t.k3 = c.value->>'k3'
        WHERE t.seq = c.value->>'seq' AND t.dirty IS NULL)";

pub(super) const CHECK_EMPTY: &str = "INSERT INTO vaultstore_guard (failed)
    SELECT 'not_empty'
    WHERE EXISTS (SELECT 1 FROM vaultstore_records WHERE ns = ?1)
        OR EXISTS (SELECT 1 FROM vaultstore_tombstones WHERE ns = ?1)
        OR EXISTS (SELECT 1 FROM vaultstore_meta
                   WHERE ns = ?1 AND object_type NOT IN ('vault', 'sync'))";

/// [`CHECK_EMPTY`] with tombstones left out (`WriteOp::ExpectNoData`).
pub(super) const CHECK_NO_DATA: &str = "INSERT INTO vaultstore_guard (failed)
    SELECT 'not_empty'
    WHERE EXISTS (SELECT 1 FROM vaultstore_records WHERE ns = ?1)
        OR EXISTS (SELECT 1 FROM vaultstore_meta
                   WHERE ns = ?1 AND object_type NOT IN ('vault', 'sync'))";

/// The records an expiry purge may take (`?1` the namespace, `?2` the purge's time), found
/// through the expiry index: every expired one for a delete, the live ones for a soft delete.
pub(super) const EXPIRED: &str = "e.ns = ?1 AND e.expires_key < ?2";
pub(super) const EXPIRED_LIVE: &str =
    "e.ns = ?1 AND e.expires_key < ?2 AND e.soft_deleted_at IS NULL";

/// How many records a chunk of at most `?3` takes.
pub(super) fn count_chunk(expired: &str) -> String {
    format!(
        "SELECT count(*) FROM (SELECT 1 FROM vaultstore_records AS e WHERE {expired}
            ORDER BY e.expires_key, e.id_key LIMIT ?3)"
    )
}

/// The chunk's batch writes only if it takes as many records as were counted (`?4`): a
/// renewal or a restore in between fails the batch, and the vault counts again.
pub(super) fn check_purge_count(expired: &str) -> String {
    format!(
        "INSERT INTO vaultstore_guard (failed) SELECT 'record_changed'
        WHERE ({}) <> ?4",
        count_chunk(expired)
    )
}

/// A soft-deleting purge's chunk (`?4` its revision), as an upsert like [`APPLY_CHANGES`].
pub(super) const PURGE_SOFT_DELETE: &str = concat!(
    "INSERT INTO vaultstore_records ",
    record_columns!(),
    "
    SELECT e.ns, e.id, e.token, e.value, e.created_at, max(e.updated_at, ?2), e.expires_at, ?2,
        e.id_key, e.token_key, e.password_id, e.value_rev, e.seal_rev, e.expires_rev, ?4,
        ",
    seq_base!(),
    " + row_number() OVER (ORDER BY e.expires_key, e.id_key),
        ",
    seq_base!(),
    " + row_number() OVER (ORDER BY e.expires_key, e.id_key)
    FROM vaultstore_records AS e
    WHERE e.ns = ?1 AND e.expires_key < ?2 AND e.soft_deleted_at IS NULL
    ORDER BY e.expires_key, e.id_key LIMIT ?3
    ON CONFLICT (ns, id_key) DO UPDATE SET
        updated_at = excluded.updated_at, soft_deleted_at = excluded.soft_deleted_at,
        deleted_rev = excluded.deleted_rev, seq = excluded.seq, dirty = excluded.dirty"
);

/// Before `ClearAll` removes the rows holding the greatest seq, the floor keeps it.
pub(super) const RAISE_SEQ_FLOOR: &str = concat!(
    "INSERT INTO vaultstore_seq (ns, floor) SELECT ?1, ",
    seq_base!(),
    " WHERE true
    ON CONFLICT (ns) DO UPDATE SET floor = max(floor, excluded.floor)"
);
pub(super) const CLEAR_RECORDS: &str = "DELETE FROM vaultstore_records WHERE ns = ?1";
pub(super) const CLEAR_TOMBSTONES: &str = "DELETE FROM vaultstore_tombstones WHERE ns = ?1";
pub(super) const CLEAR_META: &str =
    "DELETE FROM vaultstore_meta WHERE ns = ?1 AND object_type <> 'sync'";
