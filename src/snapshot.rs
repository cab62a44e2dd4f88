//! Snapshots (FORMAT.md "Snapshot"): the whole vault as UTF-8 JSON, values still encrypted.
//!
//! Import checks everything first and then writes in one atomic batch, so a malformed snapshot
//! changes nothing.

use crate::crypto::{Envelope, KdfParams};
use crate::error::{Result, VaultError};
use crate::query::js_string_cmp;
use crate::record::{Record, check_time};
use crate::storage::{
    MetaKey, MetaRow, Storage, StorageError, WriteOp, is_unique_meta, object_type, scan_pages,
};
use crate::token;
use crate::vault::{SETTING_KDF, SETTINGS_ID};
use serde::{Deserialize, Serialize};
use std::collections::HashSet;

const FORMAT: &str = "vaultstore-snapshot";
const VERSION: u64 = 1;
/// Records read per page while exporting.
const EXPORT_PAGE: usize = 1_000;

#[derive(Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct SnapshotMeta {
    object_type: String,
    object_id: String,
    key: String,
    value: String,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct SnapshotDoc {
    format: String,
    version: u64,
    records: Vec<Record>,
    meta: Vec<SnapshotMeta>,
}

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
        let text = std::str::from_utf8(bytes).map_err(|_| malformed("it is not UTF-8 text"))?;
        // Check the header first, so another format gets a clear message, not a field error.
        let header: serde_json::Value =
            serde_json::from_str(text).map_err(|e| malformed(format!("invalid JSON ({e})")))?;
        match (
            header.get("format").and_then(|f| f.as_str()),
            header.get("version").and_then(|v| v.as_u64()),
        ) {
            (Some(FORMAT), Some(VERSION)) => {}
            (Some(FORMAT), _) => {
                return Err(VaultError::invalid(format!(
                    "snapshot version {} is not supported (this release reads version {VERSION})",
                    header
                        .get("version")
                        .map_or("(missing)".to_owned(), ToString::to_string)
                )));
            }
            _ => return Err(malformed(format!("\"format\" must be {FORMAT:?}"))),
        }
        let doc: SnapshotDoc = serde_json::from_value(header).map_err(malformed)?;

        let mut ids = HashSet::new();
        let mut tokens = HashSet::new();
        let mut records = Vec::with_capacity(doc.records.len());
        for r in doc.records {
            let at = |what: &str| format!("record {:?}: {what}", r.id);
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
                    check_time(t, name).map_err(|e| malformed(at(&e.to_string())))?;
                }
            }
            if !ids.insert(r.id.clone()) {
                return Err(malformed(at("the id appears twice")));
            }
            if !tokens.insert(r.token.clone()) {
                return Err(malformed(format!("token {:?} appears twice", r.token)));
            }
            records.push(r);
        }

        let mut keys = HashSet::new();
        let mut unique_values = HashSet::new();
        let mut meta = Vec::with_capacity(doc.meta.len());
        for m in doc.meta {
            if m.object_type.is_empty() || m.object_id.is_empty() || m.key.is_empty() {
                return Err(malformed(
                    "meta rows need a non-empty objectType, objectId and key",
                ));
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
                return Err(malformed(format!("meta row {:?} appears twice", row.key)));
            }
            if is_unique_meta(&row.key)
                && !unique_values.insert((
                    row.key.object_type.clone(),
                    row.key.key.clone(),
                    row.value.clone(),
                ))
            {
                return Err(malformed("two identities have the same tag"));
            }
            meta.push(row);
        }
        let kdf = meta
            .iter()
            .find(|m| m.key == MetaKey::new(object_type::VAULT, SETTINGS_ID, SETTING_KDF))
            .ok_or_else(|| {
                malformed("it has no vault kdf setting, so none of its values could be opened")
            })?;
        KdfParams::from_json(&kdf.value).map_err(malformed)?;
        Ok(Snapshot { records, meta })
    }

    /// Write this snapshot into `storage`, which must hold no records and no identities.
    pub async fn import(self, storage: &dyn Storage) -> Result<()> {
        let mut batch = Vec::with_capacity(2 + self.meta.len() + self.records.len());
        batch.push(WriteOp::ExpectEmpty);
        batch.push(WriteOp::ClearAll);
        batch.extend(self.meta.into_iter().map(WriteOp::InsertMeta));
        batch.extend(self.records.into_iter().map(WriteOp::InsertRecord));
        match storage.apply(batch).await {
            Err(StorageError::NotEmpty) => Err(VaultError::invalid(
                "a snapshot can only be opened into a database with no records and no identities; use a new database name",
            )),
            other => Ok(other?),
        }
    }

    /// Read the whole vault, records in pages. Rows come out in a fixed order (records by id,
    /// meta by key) so that exporting the same data twice gives the same bytes.
    pub async fn export(storage: &dyn Storage) -> Result<Self> {
        let mut records = Vec::new();
        scan_pages(storage, EXPORT_PAGE, async |page| {
            records.extend(page.into_iter().map(|s| s.record));
            Ok(())
        })
        .await?;
        records.sort_by(|a, b| js_string_cmp(&a.id, &b.id));
        let mut meta = storage.meta_all().await?;
        meta.sort();
        Ok(Snapshot { records, meta })
    }

    /// The snapshot's JSON bytes.
    pub fn to_bytes(&self) -> Vec<u8> {
        let doc = SnapshotDoc {
            format: FORMAT.to_owned(),
            version: VERSION,
            records: self.records.clone(),
            meta: self
                .meta
                .iter()
                .map(|m| SnapshotMeta {
                    object_type: m.key.object_type.clone(),
                    object_id: m.key.object_id.clone(),
                    key: m.key.key.clone(),
                    value: m.value.clone(),
                })
                .collect(),
        };
        // Strings and integers always serialize.
        serde_json::to_vec(&doc).unwrap_or_default()
    }
}
