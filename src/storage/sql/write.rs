//! The SQL backend's writes (FORMAT.md "SQL tables"): how a batch of [`WriteOp`]s becomes a few
//! set-based statements, each op's precondition a statement of the same batch (see `sql.rs`).

use super::*;

/// The statements of one batch: ops of one kind share statements (one JSON array each), so
/// a batch costs a handful of statements whatever the number of records (D1 counts statements
/// per invocation: 50 on the free plan, 1,000 on the paid one). A batch interleaves kinds
/// (`tokensCreate` alternates a record insert and its link, a rekey a reseal and its link), so
/// an op joins the last earlier group of its kind when it commutes with every op planned
/// between them ([`Footprint`]): the statements then leave exactly what the ops in their order
/// would. An op on a record its group already holds starts a new group, so every statement
/// sees what the ops before it left.
pub(super) fn plan(ns: &str, batch: &[WriteOp]) -> Vec<Statement> {
    let mut groups: Vec<Group<'_>> = Vec::new();
    for op in batch {
        let foot = Footprint::of(op);
        let mut target = None;
        for (i, group) in groups.iter().enumerate().rev() {
            if group.takes(op, &foot) {
                target = Some(i);
                break;
            }
            if group.foot.conflicts(&foot) {
                break;
            }
        }
        match target {
            Some(i) => groups[i].push(op, foot),
            None => groups.push(Group {
                ops: vec![op],
                foot,
            }),
        }
    }
    let mut out = Vec::new();
    for group in &groups {
        emit(ns, &group.ops, &mut out);
    }
    out
}

/// Ops of one kind that become the same statements.
struct Group<'a> {
    ops: Vec<&'a WriteOp>,
    foot: Footprint,
}

impl<'a> Group<'a> {
    /// Whether `op` may join: the same kind of op, a kind that shares statements, and no record
    /// the group already changes.
    fn takes(&self, op: &WriteOp, foot: &Footprint) -> bool {
        let first = self.ops[0];
        let groups = matches!(
            first,
            WriteOp::InsertRecord(_)
                | WriteOp::ChangeRecord { .. }
                | WriteOp::DeleteRecord { .. }
                | WriteOp::InsertMeta(_)
                | WriteOp::PutMeta(_)
                | WriteOp::DeleteMeta(_)
                | WriteOp::ExpectMeta { .. }
        );
        groups
            && std::mem::discriminant(first) == std::mem::discriminant(op)
            && self.foot.records.is_disjoint(&foot.records)
    }

    fn push(&mut self, op: &'a WriteOp, foot: Footprint) {
        self.ops.push(op);
        self.foot.absorb(foot);
    }
}

/// What an op reads or writes, coarsely: two ops whose footprints do not meet give the same
/// result in either order, and so does a batch where one moves past the other.
#[derive(Default)]
struct Footprint {
    /// Everything (`ExpectEmpty`, `ClearAll`).
    all: bool,
    /// The ids of the records it reads or changes.
    records: HashSet<String>,
    /// The tokens it inserts (unique in the namespace).
    tokens: HashSet<String>,
    /// It removes records whose tokens it does not know (`DeleteRecord`): an insert of any
    /// token may depend on it.
    any_token: bool,
    /// Any meta row (a delete of a record's link and of the identities it leaves, an identity
    /// removed once unreferenced).
    all_meta: bool,
    /// The meta rows it reads or writes, and their `(object_type, key)`.
    meta: HashSet<MetaKey>,
    meta_kinds: HashSet<(String, String)>,
    /// The `(object_type, key)` whose values must stay unique, for rows it writes there: it
    /// reads every row of that kind.
    unique_kinds: HashSet<(String, String)>,
}

impl Footprint {
    fn of(op: &WriteOp) -> Self {
        let mut foot = Footprint::default();
        let meta = |foot: &mut Footprint, key: &MetaKey, writes: bool| {
            let kind = (key.object_type.clone(), key.key.clone());
            if writes && is_unique_meta(key) {
                foot.unique_kinds.insert(kind.clone());
            }
            foot.meta_kinds.insert(kind);
            foot.meta.insert(key.clone());
        };
        match op {
            WriteOp::InsertRecord(r) => {
                foot.records.insert(r.id.clone());
                foot.tokens.insert(r.token.clone());
            }
            WriteOp::ChangeRecord { id, .. } => {
                foot.records.insert(id.clone());
            }
            WriteOp::DeleteRecord { id, .. } => {
                foot.records.insert(id.clone());
                foot.any_token = true;
                foot.all_meta = true;
            }
            WriteOp::InsertMeta(row) | WriteOp::PutMeta(row) => meta(&mut foot, &row.key, true),
            WriteOp::DeleteMeta(key) | WriteOp::ExpectMeta { key, .. } => {
                meta(&mut foot, key, false)
            }
            WriteOp::DeleteObjectIfUnreferenced { .. } => foot.all_meta = true,
            WriteOp::ExpectEmpty | WriteOp::ClearAll => foot.all = true,
        }
        foot
    }

    fn touches_meta(&self) -> bool {
        self.all_meta || !self.meta.is_empty()
    }

    fn conflicts(&self, other: &Footprint) -> bool {
        self.all
            || other.all
            || !self.records.is_disjoint(&other.records)
            || !self.tokens.is_disjoint(&other.tokens)
            || (self.any_token && (other.any_token || !other.tokens.is_empty()))
            || (other.any_token && !self.tokens.is_empty())
            || (self.all_meta && other.touches_meta())
            || (other.all_meta && self.touches_meta())
            || !self.meta.is_disjoint(&other.meta)
            || !self.unique_kinds.is_disjoint(&other.meta_kinds)
            || !other.unique_kinds.is_disjoint(&self.meta_kinds)
    }

    fn absorb(&mut self, other: Footprint) {
        self.all |= other.all;
        self.records.extend(other.records);
        self.tokens.extend(other.tokens);
        self.any_token |= other.any_token;
        self.all_meta |= other.all_meta;
        self.meta.extend(other.meta);
        self.meta_kinds.extend(other.meta_kinds);
        self.unique_kinds.extend(other.unique_kinds);
    }
}

/// ns is always `?1`; a run's JSON array is `?2`.
fn emit(ns: &str, run: &[&WriteOp], out: &mut Vec<Statement>) {
    let with_array = |out: &mut Vec<Statement>, sqls: &[&str], items: Vec<Json>| {
        for chunk in json_chunks(items) {
            for sql in sqls {
                out.push(Statement::new(
                    sql,
                    vec![ns.into(), SqlValue::Text(chunk.clone())],
                ));
            }
        }
    };
    match run[0] {
        WriteOp::InsertRecord(_) => {
            let items = run
                .iter()
                .filter_map(|op| match op {
                    WriteOp::InsertRecord(r) => Some(json!({
                        "id": r.id, "token": r.token, "value": r.value,
                        "created_at": r.created_at, "updated_at": r.updated_at,
                        "expires_at": r.expires_at, "soft_deleted_at": r.soft_deleted_at,
                        "id_key": sort_key(&r.id), "token_key": sort_key(&r.token),
                    })),
                    _ => None,
                })
                .collect();
            with_array(out, &[INSERT_RECORDS], items);
        }
        WriteOp::ChangeRecord { .. } => {
            let items = run
                .iter()
                .filter_map(|op| match op {
                    WriteOp::ChangeRecord { id, change, at } => Some(change_json(id, change, *at)),
                    _ => None,
                })
                .collect();
            with_array(out, &[CHECK_CHANGES, APPLY_CHANGES], items);
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
            let identities = delete_last_identities(NAMED);
            let links = delete_links(NAMED);
            let records = delete_records(NAMED);
            with_array(out, &[CHECK_DELETES, &identities, &links, &records], items);
        }
        WriteOp::InsertMeta(_) | WriteOp::PutMeta(_) => {
            let upsert = matches!(run[0], WriteOp::PutMeta(_));
            let items = run
                .iter()
                .filter_map(|op| match op {
                    WriteOp::InsertMeta(row) | WriteOp::PutMeta(row) => Some(meta_json(row)),
                    _ => None,
                })
                .collect();
            with_array(out, &[if upsert { PUT_META } else { INSERT_META }], items);
        }
        WriteOp::DeleteMeta(_) => {
            let items = run
                .iter()
                .filter_map(|op| match op {
                    WriteOp::DeleteMeta(key) => Some(meta_key_json(key, None)),
                    _ => None,
                })
                .collect();
            with_array(out, &[DELETE_META], items);
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
            with_array(out, &[CHECK_META], items);
        }
        WriteOp::DeleteObjectIfUnreferenced {
            object_type,
            object_id,
            referrer_type,
            referrer_key,
        } => out.push(Statement::new(
            DELETE_UNREFERENCED,
            vec![
                ns.into(),
                object_type.as_str().into(),
                object_id.as_str().into(),
                referrer_type.as_str().into(),
                referrer_key.as_str().into(),
            ],
        )),
        WriteOp::ExpectEmpty => out.push(Statement::new(CHECK_EMPTY, vec![ns.into()])),
        WriteOp::ClearAll => {
            out.push(Statement::new(CLEAR_RECORDS, vec![ns.into()]));
            out.push(Statement::new(CLEAR_META, vec![ns.into()]));
        }
    }
}

fn change_json(id: &str, change: &RecordChange, at: i64) -> Json {
    let key = sort_key(id);
    match change {
        RecordChange::Renew { expires_at } => {
            json!({ "key": key, "op": "renew", "at": at, "expires_at": expires_at })
        }
        RecordChange::SoftDelete { if_expired_at } => {
            json!({ "key": key, "op": "soft_delete", "at": at, "if_expired_at": if_expired_at })
        }
        RecordChange::Restore => json!({ "key": key, "op": "restore", "at": at }),
        RecordChange::Reseal { expect, value } => {
            json!({ "key": key, "op": "reseal", "at": at, "expect": expect, "value": value })
        }
        RecordChange::Update { expect, value } => {
            json!({ "key": key, "op": "update", "at": at, "expect": expect, "value": value })
        }
    }
}

pub(super) const INSERT_RECORDS: &str = "INSERT INTO vaultstore_records
    (ns, id, token, value, created_at, updated_at, expires_at, soft_deleted_at, id_key, token_key)
    SELECT ?1, r.value->>'id', r.value->>'token', r.value->>'value', r.value->>'created_at',
        r.value->>'updated_at', r.value->>'expires_at', r.value->>'soft_deleted_at',
        r.value->>'id_key', r.value->>'token_key'
    FROM json_each(?2) AS r";

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

/// Then the change, written back over the record as an upsert on its unique `(ns, id_key)`: the
/// changed rows are found through the JSON array (a `CROSS JOIN` fixes that order; with
/// `UPDATE … FROM` the planners of some SQLite releases walk the whole namespace and probe the
/// array instead). A soft delete of a soft-deleted record and a restore of a live one are not
/// selected, so they leave it as it is, `updatedAt` included.
pub(super) const APPLY_CHANGES: &str = "INSERT INTO vaultstore_records
    (ns, id, token, value, created_at, updated_at, expires_at, soft_deleted_at, id_key, token_key)
    SELECT r.ns, r.id, r.token,
        CASE WHEN c.value->>'op' IN ('reseal', 'update') THEN c.value->>'value' ELSE r.value END,
        r.created_at,
        c.value->>'at',
        CASE c.value->>'op' WHEN 'renew' THEN c.value->>'expires_at' ELSE r.expires_at END,
        CASE c.value->>'op'
            WHEN 'soft_delete' THEN c.value->>'at'
            WHEN 'restore' THEN NULL
            ELSE r.soft_deleted_at END,
        r.id_key, r.token_key
    FROM json_each(?2) AS c
    CROSS JOIN vaultstore_records AS r ON r.ns = ?1 AND r.id_key = c.value->>'key'
    WHERE NOT (c.value->>'op' = 'soft_delete' AND r.soft_deleted_at IS NOT NULL)
        AND NOT (c.value->>'op' = 'restore' AND r.soft_deleted_at IS NULL)
    ON CONFLICT (ns, id_key) DO UPDATE SET
        value = excluded.value,
        updated_at = excluded.updated_at,
        expires_at = excluded.expires_at,
        soft_deleted_at = excluded.soft_deleted_at";

/// A purge never removes a record renewed meanwhile.
pub(super) const CHECK_DELETES: &str = "INSERT INTO vaultstore_guard (failed)
    SELECT 'record_changed'
    FROM json_each(?2) AS d
    CROSS JOIN vaultstore_records AS r ON r.ns = ?1 AND r.id_key = d.value->>'key'
    WHERE d.value->>'if_expired_at' IS NOT NULL AND NOT (d.value->>'if_expired_at' > r.expires_key)";

/// The records a delete takes: those a batch names in the JSON array `?2`, or every record
/// expired at `?2` (a purge), as the `FROM` and `WHERE` of a select over them as `r`.
#[derive(Clone, Copy)]
pub(super) struct Deleted {
    from: &'static str,
    filter: &'static str,
}

pub(super) const NAMED: Deleted = Deleted {
    from: "json_each(?2) AS d
        CROSS JOIN vaultstore_records AS r ON r.ns = ?1 AND r.id_key = d.value->>'key'",
    filter: "true",
};
/// A purge's chunk: the first `?3` records expired at `?2` in expiry order, through the
/// expiry index `(ns, expires_key, id_key)`. The order is total, so every statement of the
/// chunk's batch picks the same records (the records go last, after their links).
pub(super) const EXPIRED_CHUNK: Deleted = Deleted {
    from: "vaultstore_records AS r",
    filter: "r.rowid IN (SELECT e.rowid FROM vaultstore_records AS e
            WHERE e.ns = ?1 AND e.expires_key < ?2 ORDER BY e.expires_key, e.id_key LIMIT ?3)",
};

/// The identities whose every remaining link belongs to a deleted record go with them, and so
/// do their further secret slots (objects with a row `identity` naming them, `OWNER_KEY`;
/// FORMAT.md "Password identities"). Runs before the links are deleted, so it still sees them.
pub(super) fn delete_last_identities(deleted: Deleted) -> String {
    let Deleted { from, filter } = deleted;
    format!(
        "WITH gone (link) AS (
        SELECT 'r_' || r.id FROM {from} WHERE {filter}
    ),
    linked (identity) AS (
        SELECT DISTINCT l.value FROM gone
        CROSS JOIN vaultstore_meta AS l ON l.ns = ?1 AND l.object_type = 'record'
            AND l.object_id = gone.link AND l.key = 'password_id'
    ),
    pruned (identity) AS (
        SELECT linked.identity FROM linked
        WHERE NOT EXISTS (
            SELECT 1 FROM vaultstore_meta AS o
            WHERE o.ns = ?1 AND o.object_type = 'record' AND o.key = 'password_id'
                AND o.value = linked.identity AND o.object_id NOT IN (SELECT link FROM gone))
    ),
    doomed (object_id) AS (
        SELECT identity FROM pruned
        UNION ALL
        SELECT s.object_id FROM pruned
        CROSS JOIN vaultstore_meta AS s ON s.ns = ?1 AND s.object_type = 'password_identity'
            AND s.key = 'identity' AND s.value = pruned.identity
    )
    DELETE FROM vaultstore_meta WHERE rowid IN (
        SELECT i.rowid FROM doomed
        CROSS JOIN vaultstore_meta AS i ON i.ns = ?1 AND i.object_type = 'password_identity'
            AND i.object_id = doomed.object_id)"
    )
}

pub(super) fn delete_links(deleted: Deleted) -> String {
    let Deleted { from, filter } = deleted;
    format!(
        "DELETE FROM vaultstore_meta WHERE rowid IN (
        SELECT l.rowid FROM {from}
        CROSS JOIN vaultstore_meta AS l ON l.ns = ?1 AND l.object_type = 'record'
            AND l.object_id = 'r_' || r.id AND l.key = 'password_id'
        WHERE {filter})"
    )
}

pub(super) fn delete_records(deleted: Deleted) -> String {
    let Deleted { from, filter } = deleted;
    format!(
        "DELETE FROM vaultstore_records WHERE rowid IN (SELECT r.rowid FROM {from} WHERE {filter})"
    )
}

pub(super) const INSERT_META: &str =
    "INSERT INTO vaultstore_meta (ns, object_type, object_id, key, value)
    SELECT ?1, m.value->>'type', m.value->>'id', m.value->>'key', m.value->>'value'
    FROM json_each(?2) AS m";

/// `WHERE true` keeps SQLite from reading `ON CONFLICT` as a join constraint; a row that
/// already holds its value is not rewritten (D1 bills rows written).
pub(super) const PUT_META: &str =
    "INSERT INTO vaultstore_meta (ns, object_type, object_id, key, value)
    SELECT ?1, m.value->>'type', m.value->>'id', m.value->>'key', m.value->>'value'
    FROM json_each(?2) AS m WHERE true
    ON CONFLICT (ns, object_type, object_id, key) DO UPDATE SET value = excluded.value
    WHERE vaultstore_meta.value IS NOT excluded.value";

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

/// The object `?3` and its dependents (objects of its type with a row `identity` naming it,
/// `OWNER_KEY`: an identity's further secret slots), unless a referrer names it.
pub(super) const DELETE_UNREFERENCED: &str = "DELETE FROM vaultstore_meta
    WHERE ns = ?1 AND object_type = ?2
        AND object_id IN (SELECT ?3 UNION ALL
                          SELECT s.object_id FROM vaultstore_meta AS s
                          WHERE s.ns = ?1 AND s.object_type = ?2 AND s.key = 'identity'
                              AND s.value = ?3)
        AND NOT EXISTS (SELECT 1 FROM vaultstore_meta AS r
                        WHERE r.ns = ?1 AND r.object_type = ?4 AND r.key = ?5 AND r.value = ?3)";

pub(super) const CHECK_EMPTY: &str = "INSERT INTO vaultstore_guard (failed)
    SELECT 'not_empty'
    WHERE EXISTS (SELECT 1 FROM vaultstore_records WHERE ns = ?1)
        OR EXISTS (SELECT 1 FROM vaultstore_meta WHERE ns = ?1 AND object_type <> 'vault')";

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

pub(super) const PURGE_SOFT_DELETE: &str =
    "UPDATE vaultstore_records AS r SET soft_deleted_at = ?2, updated_at = ?2
    WHERE r.rowid IN (SELECT e.rowid FROM vaultstore_records AS e
        WHERE e.ns = ?1 AND e.expires_key < ?2 AND e.soft_deleted_at IS NULL
        ORDER BY e.expires_key, e.id_key LIMIT ?3)";

pub(super) const CLEAR_RECORDS: &str = "DELETE FROM vaultstore_records WHERE ns = ?1";
pub(super) const CLEAR_META: &str = "DELETE FROM vaultstore_meta WHERE ns = ?1";
