//! Snapshots (FORMAT.md "Snapshot"): the whole vault as UTF-8 JSON, values still encrypted.
//!
//! Every engine writes snapshots (with `crate::json`); reading one needs serde_json and is
//! compiled in with the `snapshot-import` feature only, which the browser's IndexedDB engine
//! leaves out for its download budget (the browser entry opens snapshots with the full engine).
//!
//! A snapshot may come from anywhere, so parsing is bounded and strict: at most
//! [`MAX_SNAPSHOT_BYTES`], read straight into its typed rows (never into a generic JSON tree,
//! whose size a hostile document could multiply), every row checked (record shapes, identity
//! ids, tags and wrapped keys, links that point at records and identities the snapshot has), and
//! errors that name what is wrong without echoing what the snapshot holds. Import checks
//! everything first and then writes in one atomic batch, so a malformed snapshot changes nothing.

use crate::crypto::KdfParams;
use crate::error::{Result, VaultError};
use crate::json::{write_opt_int, write_str};
use crate::query::js_string_cmp;
use crate::record::Record;
use crate::sorting;
use crate::storage::{
    MetaKey, MetaRow, Optimistic, STATE_ID, Stamp, Storage, StorageError, WriteOp, is_unique_meta,
    object_type, scan_pages, unlinked_records,
};
use crate::sync::Rev;
use crate::vault::{SETTING_KDF, SETTINGS_ID};

/// The `key` of a version-1 snapshot's record link rows (`record/r_<id>/password_id`).
const LINK_KEY: &str = "password_id";

const FORMAT: &str = "vaultstore-snapshot";
const VERSION: i64 = 1;
/// Records read per page while exporting.
const EXPORT_PAGE: usize = 1_000;
/// The largest snapshot accepted or produced: 64 MiB, about 200,000 records of short values.
/// Parsing needs a few times its size in memory, and a WebAssembly instance has at most 4 GiB
/// (browsers often grant less); past this, persist with IndexedDB or the SQL backend instead.
pub const MAX_SNAPSHOT_BYTES: usize = 64 * 1024 * 1024;

/// A checked snapshot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Snapshot {
    pub records: Vec<Record>,
    pub meta: Vec<MetaRow>,
}

fn malformed(detail: impl std::fmt::Display) -> VaultError {
    VaultError::invalid(format!("the snapshot is malformed: {detail}"))
}

impl Snapshot {
    /// Parse and check snapshot bytes. Everything wrong is `INVALID_ARGUMENT`.
    pub fn parse(bytes: &[u8]) -> Result<Self> {
        check_size(bytes.len())?;
        #[cfg(feature = "snapshot-import")]
        return import::parse(bytes);
        #[cfg(not(feature = "snapshot-import"))]
        Err(VaultError::invalid(
            "this engine cannot open snapshots (it is the browser's IndexedDB engine, built without snapshot-import); open the vault through the package's entry, which opens snapshots with the full engine",
        ))
    }

    /// The vault's KDF parameters.
    pub fn kdf(&self) -> Result<KdfParams> {
        let kdf = self
            .meta
            .iter()
            .find(|m| m.key == MetaKey::new(object_type::VAULT, SETTINGS_ID, SETTING_KDF))
            .ok_or_else(|| {
                malformed("it has no vault kdf setting, so none of its values could be opened")
            })?;
        KdfParams::from_json(&kdf.value).map_err(malformed)
    }

    /// Write this snapshot into `storage`, which must hold no records, no identities and no
    /// tombstones (API.md says "no records and no identities"; a tombstone may be a deletion
    /// not yet synced, which clearing it for the import would lose, so a store that ever
    /// deleted a record is refused too, and the message says so).
    pub async fn import(self, storage: &dyn Storage) -> Result<()> {
        let all_linked = self.records.iter().all(|r| r.password_id.is_some());
        let mut batch = Vec::with_capacity(3 + self.meta.len() + self.records.len());
        batch.push(WriteOp::ExpectEmpty);
        batch.push(WriteOp::ClearAll);
        // Tags may repeat among the snapshot's own objects, as sync leaves them (FORMAT.md "One
        // secret, several objects"); the store is empty, so no other row holds one.
        batch.extend(self.meta.into_iter().map(|row| {
            if is_unique_meta(&row.key) {
                WriteOp::PutSharedMeta(row)
            } else {
                WriteOp::InsertMeta(row)
            }
        }));
        batch.extend(
            self.records
                .into_iter()
                .map(|r| WriteOp::InsertRecord(Box::new(r))),
        );
        batch.push(WriteOp::PutMeta(MetaRow {
            key: unlinked_records(),
            value: (!all_linked).to_string(),
        }));
        // Rows keep the revisions the snapshot gives them (version 1: synthesized from their
        // creation), so a restored backup never outranks changes made elsewhere since.
        let stamp = Stamp {
            rev: Rev::ZERO,
            at: 0,
        };
        match storage.apply(stamp, batch).await {
            Err(StorageError::NotEmpty) => Err(VaultError::invalid(
                "a snapshot can only be opened into a database with no records and no identities, where none was ever deleted; use a new database name",
            )),
            other => Ok(other?),
        }
    }

    /// Read the whole vault, records in pages. Rows come out in a fixed order (records by id,
    /// meta by key) so that exporting the same data twice gives the same bytes. The vault's
    /// internal state rows (FORMAT.md "Vault state") stay behind: they describe this store.
    pub async fn export(storage: &dyn Storage) -> Result<Self> {
        let mut records = Vec::new();
        scan_pages(&Optimistic(storage), EXPORT_PAGE, async |page| {
            records.extend(page);
            Ok(())
        })
        .await?;
        sorting::sort_by(&mut records, |a, b| js_string_cmp(&a.id, &b.id));
        let mut meta = storage.meta_all().await?;
        meta.retain(|m| {
            !(m.key.object_type == object_type::SYNC
                || (m.key.object_type == object_type::VAULT && m.key.object_id == STATE_ID))
        });
        sorting::sort(&mut meta);
        Ok(Snapshot { records, meta })
    }

    /// The snapshot's JSON bytes; `INVALID_ARGUMENT` past [`MAX_SNAPSHOT_BYTES`], which no
    /// release could import again. Compact JSON, fields in FORMAT.md's order.
    pub fn to_bytes(&self) -> Result<Vec<u8>> {
        let mut out = String::with_capacity(64 + 300 * self.records.len() + 80 * self.meta.len());
        out.push_str(r#"{"format":"#);
        write_str(&mut out, FORMAT);
        out.push_str(r#","version":"#);
        write_opt_int(&mut out, Some(VERSION));
        out.push_str(r#","records":["#);
        for (i, r) in self.records.iter().enumerate() {
            out.push_str(if i == 0 { "{" } else { ",{" });
            for (name, text) in [("id", &r.id), ("token", &r.token), ("value", &r.value)] {
                out.push('"');
                out.push_str(name);
                out.push_str("\":");
                write_str(&mut out, text);
                out.push(',');
            }
            for (name, time) in [
                ("createdAt", Some(r.created_at)),
                ("updatedAt", Some(r.updated_at)),
                ("expiresAt", r.expires_at),
                ("softDeletedAt", r.soft_deleted_at),
            ] {
                out.push('"');
                out.push_str(name);
                out.push_str("\":");
                write_opt_int(&mut out, time);
                out.push(',');
            }
            out.pop();
            out.push('}');
        }
        out.push_str(r#"],"meta":["#);
        // Version 1 keeps each record's identity link as a meta row (FORMAT.md "Snapshot").
        let mut meta: Vec<&MetaRow> = self.meta.iter().collect();
        let links: Vec<MetaRow> = self
            .records
            .iter()
            .filter_map(|r| {
                let identity = r.password_id.as_ref()?;
                Some(MetaRow::new(
                    object_type::RECORD,
                    &format!("r_{}", r.id),
                    LINK_KEY,
                    identity.as_str(),
                ))
            })
            .collect();
        meta.extend(links.iter());
        sorting::sort(&mut meta);
        for (i, m) in meta.iter().enumerate() {
            out.push_str(if i == 0 { "{" } else { ",{" });
            for (name, text) in [
                ("objectType", &m.key.object_type),
                ("objectId", &m.key.object_id),
                ("key", &m.key.key),
                ("value", &m.value),
            ] {
                out.push('"');
                out.push_str(name);
                out.push_str("\":");
                write_str(&mut out, text);
                out.push(',');
            }
            out.pop();
            out.push('}');
        }
        out.push_str("]}");
        check_size(out.len()).map_err(|_| {
            VaultError::invalid(format!(
                "the vault is too large for a snapshot ({} MiB, the limit is {} MiB); keep it in IndexedDB or the SQL backend instead",
                out.len() >> 20,
                MAX_SNAPSHOT_BYTES >> 20
            ))
        })?;
        Ok(out.into_bytes())
    }
}

fn check_size(len: usize) -> Result<()> {
    if len > MAX_SNAPSHOT_BYTES {
        Err(malformed(format!(
            "it is larger than {} MiB",
            MAX_SNAPSHOT_BYTES >> 20
        )))
    } else {
        Ok(())
    }
}

/// Reading snapshots: serde_json, strictly (see the module docs).
#[cfg(feature = "snapshot-import")]
mod import {
    use super::{FORMAT, LINK_KEY, Snapshot, VERSION, malformed};
    use crate::crypto::{Envelope, is_identity_id, is_lower_hex, is_wrapped_dek};
    use crate::error::{Result, VaultError};
    use crate::record::{Record, RecordRevs, check_time};
    use crate::storage::{MetaKey, MetaRow, OWNER_KEY, object_type};
    use crate::token;
    use crate::vault::SETTINGS_ID;
    use serde::Deserialize;
    use serde::de::{self, Deserializer, IgnoredAny, Visitor};
    use std::collections::{HashMap, HashSet};

    #[derive(Deserialize)]
    #[serde(rename_all = "camelCase", deny_unknown_fields)]
    struct SnapshotMeta {
        object_type: String,
        object_id: String,
        key: String,
        value: String,
    }

    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct SnapshotDoc {
        // Checked through `Header` before this is parsed.
        #[serde(rename = "format")]
        _format: IgnoredAny,
        #[serde(rename = "version")]
        _version: IgnoredAny,
        records: Vec<Record>,
        meta: Vec<SnapshotMeta>,
    }

    /// `format` and `version`, read first so another format gets a clear message, not a field
    /// error; every other field is skipped without being kept.
    #[derive(Deserialize)]
    struct Header {
        #[serde(default)]
        format: Loose<String>,
        #[serde(default)]
        version: Loose<i64>,
    }

    /// A field that is read when it has the expected type and skipped (streamed past, never
    /// buffered) when it does not.
    #[derive(Default)]
    enum Loose<T> {
        #[default]
        Missing,
        Is(T),
        Other,
    }

    impl<'de, T: Deserialize<'de>> Deserialize<'de> for Loose<T> {
        fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
            struct Lenient<T>(std::marker::PhantomData<T>);
            impl<'de, T: Deserialize<'de>> Visitor<'de> for Lenient<T> {
                type Value = Loose<T>;
                fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                    f.write_str("any value")
                }
                fn visit_str<E: de::Error>(self, v: &str) -> std::result::Result<Self::Value, E> {
                    Ok(T::deserialize(de::value::StrDeserializer::<E>::new(v))
                        .map_or(Loose::Other, Loose::Is))
                }
                fn visit_u64<E: de::Error>(self, v: u64) -> std::result::Result<Self::Value, E> {
                    Ok(T::deserialize(de::value::U64Deserializer::<E>::new(v))
                        .map_or(Loose::Other, Loose::Is))
                }
                fn visit_i64<E>(self, _: i64) -> std::result::Result<Self::Value, E> {
                    Ok(Loose::Other)
                }
                fn visit_f64<E>(self, _: f64) -> std::result::Result<Self::Value, E> {
                    Ok(Loose::Other)
                }
                fn visit_bool<E>(self, _: bool) -> std::result::Result<Self::Value, E> {
                    Ok(Loose::Other)
                }
                fn visit_unit<E>(self) -> std::result::Result<Self::Value, E> {
                    Ok(Loose::Other)
                }
                fn visit_seq<A: de::SeqAccess<'de>>(
                    self,
                    mut seq: A,
                ) -> std::result::Result<Self::Value, A::Error> {
                    while seq.next_element::<IgnoredAny>()?.is_some() {}
                    Ok(Loose::Other)
                }
                fn visit_map<A: de::MapAccess<'de>>(
                    self,
                    mut map: A,
                ) -> std::result::Result<Self::Value, A::Error> {
                    while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
                    Ok(Loose::Other)
                }
            }
            d.deserialize_any(Lenient(std::marker::PhantomData))
        }
    }

    /// What a JSON error says, without the input it quotes: serde's messages cite the offending
    /// value ("invalid type: integer 4111…"), and a snapshot's content must never reach an error.
    pub(crate) fn describe_json_error(e: &serde_json::Error) -> String {
        use serde_json::error::Category;
        let at = format!("line {}, column {}", e.line(), e.column());
        match e.classify() {
            Category::Io | Category::Syntax => format!("it is not valid JSON (at {at})"),
            Category::Eof => "the JSON ends too early".to_owned(),
            // serde's own message is not used: it quotes the offending value.
            Category::Data => format!(
                "a field is missing or unknown, or has the wrong type or an out-of-range value (at {at})"
            ),
        }
    }

    /// [`Snapshot::parse`], after the size check.
    pub(super) fn parse(bytes: &[u8]) -> Result<Snapshot> {
        let text = std::str::from_utf8(bytes).map_err(|_| malformed("it is not UTF-8 text"))?;
        let header: Header =
            serde_json::from_str(text).map_err(|e| malformed(describe_json_error(&e)))?;
        match (&header.format, &header.version) {
            (Loose::Is(f), Loose::Is(VERSION)) if f == FORMAT => {}
            (Loose::Is(f), Loose::Is(v)) if f == FORMAT => {
                return Err(VaultError::invalid(format!(
                    "snapshot version {v} is not supported (this release reads version {VERSION})"
                )));
            }
            (Loose::Is(f), _) if f == FORMAT => {
                return Err(malformed("\"version\" must be the number 1"));
            }
            _ => return Err(malformed(format!("\"format\" must be \"{FORMAT}\""))),
        }
        let doc: SnapshotDoc =
            serde_json::from_str(text).map_err(|e| malformed(describe_json_error(&e)))?;
        let mut records = check_records(doc.records)?;
        let (meta, links) = check_meta(doc.meta, &records)?;
        for record in &mut records {
            record.password_id = links.get(&record.id).cloned();
            record.revs = RecordRevs::synthesized(record.created_at);
        }
        Ok(Snapshot { records, meta })
    }

    fn check_records(records: Vec<Record>) -> Result<Vec<Record>> {
        let mut ids = HashSet::with_capacity(records.len());
        let mut tokens = HashSet::with_capacity(records.len());
        for (i, r) in records.iter().enumerate() {
            let at = |what: &str| format!("record #{i}: {what}");
            if r.id.is_empty() || r.id.len() > token::MAX_CUSTOM_TOKEN_BYTES {
                return Err(malformed(at(
                    "the id must be a non-empty string of at most 255 bytes",
                )));
            }
            token::check_custom(&r.token).map_err(|e| malformed(at(&e.to_string())))?;
            if !Envelope::is_well_formed(&r.value) {
                return Err(malformed(at(
                    "the value is not a well-formed vs1: envelope",
                )));
            }
            for (name, time) in [
                ("createdAt", Some(r.created_at)),
                ("updatedAt", Some(r.updated_at)),
                ("expiresAt", r.expires_at),
                ("softDeletedAt", r.soft_deleted_at),
            ] {
                if let Some(t) = time {
                    check_time(t, name).map_err(|_| {
                        malformed(at(&format!(
                            "{name} is outside the range of a JavaScript Date"
                        )))
                    })?;
                }
            }
            if !ids.insert(r.id.as_str()) {
                return Err(malformed(at("its id appears twice")));
            }
            if !tokens.insert(r.token.as_str()) {
                return Err(malformed(at("its token appears twice")));
            }
        }
        Ok(records)
    }

    /// The checked meta rows, without the record links, and the links (record id → identity).
    fn check_meta(
        rows: Vec<SnapshotMeta>,
        records: &[Record],
    ) -> Result<(Vec<MetaRow>, HashMap<String, String>)> {
        let record_ids: HashSet<&str> = records.iter().map(|r| r.id.as_str()).collect();
        let mut keys = HashSet::with_capacity(rows.len());
        // Each identity object's rows (tag, dek, and the identity a further slot belongs to), to
        // check it has both keys and that links and slots point at an identity's first slot.
        let mut identities: HashMap<String, (bool, bool, Option<String>)> = HashMap::new();
        let mut links = Vec::new();
        let mut meta = Vec::with_capacity(rows.len());
        for (i, m) in rows.into_iter().enumerate() {
            let at = |what: &str| malformed(format!("meta row #{i}: {what}"));
            match m.object_type.as_str() {
                object_type::VAULT => {
                    if m.object_id != SETTINGS_ID || m.key.is_empty() {
                        return Err(at(
                            "vault rows must be settings (objectId \"settings\") with a non-empty key",
                        ));
                    }
                }
                object_type::IDENTITY => {
                    if !is_identity_id(&m.object_id) {
                        return Err(at(
                            "an identity id must be \"p_\" and 32 lowercase hex digits",
                        ));
                    }
                    let entry = identities.entry(m.object_id.clone()).or_default();
                    match m.key.as_str() {
                        "tag" if is_lower_hex(&m.value, 64) => entry.0 = true,
                        "dek" if is_wrapped_dek(&m.value) => entry.1 = true,
                        OWNER_KEY if is_identity_id(&m.value) => entry.2 = Some(m.value.clone()),
                        "tag" => return Err(at("an identity tag must be 64 lowercase hex digits")),
                        "dek" => {
                            return Err(at("an identity's dek is not a well-formed vs1k: key"));
                        }
                        OWNER_KEY => {
                            return Err(at(
                                "a secret slot's identity must be \"p_\" and 32 lowercase hex digits",
                            ));
                        }
                        _ => {
                            return Err(at(
                                "identity rows must be \"tag\", \"dek\" or (for a further secret slot) \"identity\"",
                            ));
                        }
                    }
                }
                object_type::RECORD => {
                    let linked = m.object_id.strip_prefix("r_").unwrap_or_default();
                    if m.key != LINK_KEY || !record_ids.contains(linked) {
                        return Err(at(
                            "a record link must be \"r_\" and the id of a record in the snapshot, with key \"password_id\"",
                        ));
                    }
                    links.push((i, linked.to_owned(), m.value.clone()));
                }
                _ => {
                    return Err(at(
                        "objectType must be \"vault\", \"password_identity\" or \"record\"",
                    ));
                }
            }
            let row = MetaRow {
                key: MetaKey {
                    object_type: m.object_type,
                    object_id: m.object_id,
                    key: m.key,
                },
                value: m.value,
            };
            if !keys.insert(row.key.clone()) {
                return Err(at("the same row appears twice"));
            }
            if row.key.object_type == object_type::RECORD {
                continue;
            }
            // Two objects with one tag are what sync leaves a secret that two devices first
            // used while apart (FORMAT.md "One secret, several objects"); such a vault's
            // snapshot must restore (its import writes them with `PutSharedMeta`).
            meta.push(row);
        }
        if identities.values().any(|(tag, dek, _)| !(tag & dek)) {
            return Err(malformed("an identity lacks its tag or its dek row"));
        }
        // An identity's own object, not one of its further slots.
        let is_identity = |id: &str| {
            identities
                .get(id)
                .is_some_and(|(_, _, owner)| owner.is_none())
        };
        if identities
            .values()
            .any(|(_, _, owner)| owner.as_deref().is_some_and(|o| !is_identity(o)))
        {
            return Err(malformed(
                "a secret slot names an identity the snapshot does not have (or another slot)",
            ));
        }
        let mut linked = HashMap::with_capacity(links.len());
        for (i, record_id, identity) in links {
            if !is_identity(&identity) {
                return Err(malformed(format!(
                    "meta row #{i}: the record link points at an identity the snapshot does not have"
                )));
            }
            linked.insert(record_id, identity);
        }
        let snapshot = Snapshot {
            records: vec![],
            meta,
        };
        snapshot.kdf()?;
        Ok((snapshot.meta, linked))
    }
}

#[cfg(all(test, feature = "snapshot-import"))]
mod tests {
    use super::*;

    fn sample() -> Snapshot {
        let record = |id: &str, token: &str, expires_at| Record {
            id: id.into(),
            token: token.into(),
            value: format!("vs1:{}", "A".repeat(64)),
            created_at: 1,
            updated_at: -2,
            expires_at,
            soft_deleted_at: None,
            password_id: None,
            revs: crate::record::RecordRevs::synthesized(1),
        };
        Snapshot {
            records: vec![
                record("a", "tk_a", None),
                record(
                    "b\"\\\n\u{1}",
                    "tk_\u{7f}ünï 😀",
                    Some(8_640_000_000_000_000),
                ),
            ],
            meta: vec![
                MetaRow::new(
                    "vault",
                    "settings",
                    "kdf",
                    KdfParams::generate(1000).unwrap().to_json(),
                ),
                MetaRow::new("vault", "settings", "note", "a \"quoted\"\t value"),
            ],
        }
    }

    #[test]
    fn the_bytes_are_what_serde_json_wrote_for_earlier_releases() {
        let one = Snapshot {
            records: vec![Record {
                id: "i".into(),
                token: "t\"".into(),
                value: "v".into(),
                created_at: 1,
                updated_at: 2,
                expires_at: None,
                soft_deleted_at: Some(3),
                password_id: None,
                revs: crate::record::RecordRevs::default(),
            }],
            meta: vec![MetaRow::new("vault", "settings", "k", "v\n")],
        };
        assert_eq!(
            String::from_utf8(one.to_bytes().unwrap()).unwrap(),
            r#"{"format":"vaultstore-snapshot","version":1,"records":[{"id":"i","token":"t\"","value":"v","createdAt":1,"updatedAt":2,"expiresAt":null,"softDeletedAt":3}],"meta":[{"objectType":"vault","objectId":"settings","key":"k","value":"v\n"}]}"#
        );
        let empty = Snapshot {
            records: vec![],
            meta: vec![],
        };
        assert_eq!(
            empty.to_bytes().unwrap(),
            br#"{"format":"vaultstore-snapshot","version":1,"records":[],"meta":[]}"#
        );
    }

    #[test]
    fn what_is_written_reads_back_the_same() {
        let snapshot = sample();
        let bytes = snapshot.to_bytes().unwrap();
        let value: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(value["records"][1]["id"], "b\"\\\n\u{1}");
        assert_eq!(value["records"][1]["token"], "tk_\u{7f}ünï 😀");
        assert_eq!(value["records"][1]["expiresAt"], 8_640_000_000_000_000i64);
        assert_eq!(Snapshot::parse(&bytes).unwrap(), snapshot);
    }
}
