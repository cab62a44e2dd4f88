//! Record metadata operations and expiry purges (API.md "Records and queries").

use super::{MAX_ATTEMPTS, Vault, new_write_epoch};
use crate::error::{Result, VaultError};
use crate::query::{RecordFilter, RecordQuery, SoftDeleted};
use crate::record::Record;
use crate::storage::{Purge, RecordChange, StorageError, WriteOp};
use crate::token;

/// Records changed per atomic batch when purging expired ones: bounds memory and the size of
/// each IndexedDB transaction, whatever the store holds.
pub const PURGE_PAGE: usize = 500;

/// Records purged per atomic write by a backend with a set-based purge (SQL): the write's
/// statements touch at most this many records, their links and identities, so a backlog of any
/// size never makes one write that D1 stops for running too long; 10,000 expired records are
/// two writes.
pub const PURGE_CHUNK: usize = 5_000;

impl Vault {
    /// Records matching `query` (metadata only; values stay encrypted).
    pub async fn record_list(&self, query: &RecordQuery) -> Result<Vec<Record>> {
        self.ensure_open()?;
        let filter = query.validate()?;
        if filter.count_only {
            return Err(VaultError::invalid(
                "recordList cannot run a countOnly query; use recordCount",
            ));
        }
        Ok(self.storage.query_records(&filter, self.now()).await?)
    }

    /// How many records match `query`; its limit, offset and order are ignored.
    pub async fn record_count(&self, query: &RecordQuery) -> Result<u64> {
        self.ensure_open()?;
        let filter = query.validate()?;
        Ok(self.storage.count_records(&filter, self.now()).await?)
    }

    /// The record with this id, or `None` (also for soft-deleted records).
    pub async fn record_find_by_id(&self, id: &str) -> Result<Option<Record>> {
        self.ensure_open()?;
        check_id(id)?;
        Ok(visible(self.record_by_id(id).await?))
    }

    /// The record with this token, or `None` (also for soft-deleted records).
    pub async fn record_find_by_token(&self, token: &str) -> Result<Option<Record>> {
        self.ensure_open()?;
        token::check_lookup(token)?;
        Ok(visible(self.record_by_token(token).await?))
    }

    /// Delete permanently by id; a missing record is not an error.
    pub async fn record_delete_by_id(&self, id: &str) -> Result<()> {
        self.ensure_open()?;
        check_id(id)?;
        self.delete_by_id(id).await
    }

    /// Delete permanently by token; a missing record is not an error. Whether a record was
    /// deleted, as [`Vault::token_delete`].
    pub async fn record_delete_by_token(&self, token: &str) -> Result<bool> {
        self.token_delete(token).await
    }

    /// Soft-delete by id; `RECORD_NOT_FOUND` when there is no such record.
    pub async fn record_soft_delete_by_id(&self, id: &str) -> Result<()> {
        self.ensure_open()?;
        check_id(id)?;
        // Read first, so that the change is stamped after the version it replaces: another
        // instance on the store (a tab that synced) may hold it with a revision this clock has
        // not seen, and the soft delete would lose to it (SYNC.md 4). The token paths read it
        // anyway.
        if let Some(record) = self.record_by_id(id).await? {
            self.observe(&record);
        }
        self.change_by_id(
            id,
            RecordChange::SoftDelete {
                if_expired_at: None,
            },
        )
        .await
    }

    /// Soft-delete by token; `RECORD_NOT_FOUND` when there is no such record.
    pub async fn record_soft_delete_by_token(&self, token: &str) -> Result<()> {
        self.token_soft_delete(token).await
    }

    /// Soft-delete every expired record that is not soft-deleted yet; returns how many.
    pub async fn tokens_expired_soft_delete(&self) -> Result<u64> {
        self.purge_expired(Purge::SoftDelete).await
    }

    /// Delete every expired record, soft-deleted or not, with its link; returns how many.
    pub async fn tokens_expired_delete(&self) -> Result<u64> {
        self.purge_expired(Purge::Delete).await
    }

    /// Purge expired records: set-based where the backend has it (SQL), in atomic chunks of
    /// [`PURGE_CHUNK`] so that no write grows with the backlog, else a page at a time.
    async fn purge_expired(&self, purge: Purge) -> Result<u64> {
        self.ensure_open()?;
        let mut total = 0;
        let mut conflicts = 0;
        loop {
            // Deletes renew the write epoch, so a rekey planned before them notices.
            let also = match purge {
                Purge::Delete => vec![new_write_epoch()?],
                Purge::SoftDelete => vec![],
            };
            match self
                .storage
                .purge_expired(self.stamp()?, purge, PURGE_CHUNK, also)
                .await
            {
                Ok(Some(purged)) => {
                    total += purged;
                    if purged < PURGE_CHUNK as u64 {
                        return Ok(total);
                    }
                }
                Ok(None) => break,
                // Renewed or restored meanwhile: count this chunk again.
                Err(StorageError::Changed(_)) if conflicts < MAX_ATTEMPTS => conflicts += 1,
                Err(StorageError::Changed(_)) => break,
                Err(e) => return Err(e.into()),
            }
        }
        Ok(total + self.purge_expired_in_pages(purge).await?)
    }

    /// Purge expired records a page at a time, one atomic batch per page, so memory and each
    /// transaction stay bounded whatever the store holds. Each change holds only if its record is
    /// still expired when the batch commits: a renewal that lands between the query and the
    /// write fails the batch, and the page is read again, so a renewed record is never purged.
    async fn purge_expired_in_pages(&self, purge: Purge) -> Result<u64> {
        let now = self.now();
        let soft_deleted = match purge {
            Purge::SoftDelete => SoftDeleted::Exclude,
            Purge::Delete => SoftDeleted::Include,
        };
        let filter = RecordFilter::expired(soft_deleted, PURGE_PAGE);
        let mut total = 0;
        let mut conflicts = 0;
        loop {
            // A purged page leaves the result set, so the next query moves on.
            let page = self.storage.query_records(&filter, now).await?;
            let n = page.len();
            if n == 0 {
                return Ok(total);
            }
            let stamp = self.stamp_after(&page)?;
            let mut batch: Vec<WriteOp> = page
                .into_iter()
                .map(|record| match purge {
                    Purge::SoftDelete => WriteOp::ChangeRecord {
                        id: record.id,
                        change: RecordChange::SoftDelete {
                            if_expired_at: Some(now),
                        },
                        at: stamp.at,
                    },
                    Purge::Delete => WriteOp::DeleteRecord {
                        id: record.id,
                        if_expired_at: Some(now),
                    },
                })
                .collect();
            if let Purge::Delete = purge {
                batch.push(new_write_epoch()?);
            }
            match self.storage.apply(stamp, batch).await {
                Ok(()) => total += n as u64,
                // Renewed, restored or deleted meanwhile: read the page again.
                Err(StorageError::Changed(_) | StorageError::RecordMissing(_))
                    if conflicts < MAX_ATTEMPTS =>
                {
                    conflicts += 1;
                    continue;
                }
                Err(e) => return Err(e.into()),
            }
            if n < PURGE_PAGE {
                return Ok(total);
            }
        }
    }
}

fn visible(record: Option<Record>) -> Option<Record> {
    record.filter(|r| !r.is_soft_deleted())
}

fn check_id(id: &str) -> Result<()> {
    if id.is_empty() {
        Err(VaultError::invalid("id must be a non-empty string"))
    } else {
        Ok(())
    }
}
